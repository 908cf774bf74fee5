"""Full-model bitstream builds (not tests): the digits example (or the tiny encoder when the
example is absent) for every open-flow board, plus the Arty plans.

    .venv/bin/python bench/boards.py [-o out/bench_boards] [--boards ulx3s-85f icebreaker ...]

Prints one JSON line per board (resources, Fmax vs clock, latency, throughput, build
seconds) and writes them to OUT/results.json; the numbers go into bench/README.md.  While a
board builds, its steps and the tools' phases (as ``fabformer build`` shows them) go to stderr.
"""
import argparse
import json
import time
from pathlib import Path

from fabformer.errors import FabformerError
from fabformer.outdir import prepare_dir
from fabformer.apps.common import parse_seeds

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits" / "model_q8.h5"


def example_graph():
    if EXAMPLE.exists():
        from fabformer import convert
        from fabformer.apps.cli import load_model
        from fabformer.apps.data import digits
        return convert(load_model(EXAMPLE), calibration=digits().x_train), "digits example"
    from fabformer.apps.testing import encoder_graph
    return encoder_graph(), "testing.encoder_graph()"


def rtl_state() -> dict:
    """Which RTL the numbers come from: the last commit and a digest of rtl/*.py as they are now."""
    import hashlib
    import subprocess
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for f in sorted((root / "rtl").glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=root, capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "rtl"], cwd=root, capture_output=True,
                                    text=True).stdout.strip())
    except OSError:
        commit, dirty = None, None
    return {"commit": commit, "rtl_uncommitted_changes": dirty, "rtl_digest": h.hexdigest()[:12]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", default="out/bench_boards")
    ap.add_argument("--boards", nargs="+", default=["ulx3s-85f", "icebreaker", "arty-a7-35", "arty-a7-100"])
    ap.add_argument("--parallelism", help="multipliers per matmul-like node: N, or a JSON object {node: N} "
                                          "(default: fitted)")
    ap.add_argument("--clock", type=float, help="MHz (default: the board's choice; a PLL for ECP5/iCE40 boards)")
    ap.add_argument("--seed", type=parse_seeds, default=1, help="nextpnr's placement seed, or seeds tried in turn (1,2,3 or 1-4)")
    ap.add_argument("--pnr-minutes", type=float, help="time limit of one place and route (default none)")
    ap.add_argument("--logic-multipliers", type=int, help="the fit may build up to N multipliers in logic "
                                                          "beyond the DSPs (default none)")
    args = ap.parse_args()
    par = args.parallelism
    par = None if par is None else json.loads(par) if par.strip().startswith("{") else int(par)
    from fabformer.apps.console import Console, using
    from fabformer.boards.build import build
    out = prepare_dir(args.output)
    g, source = example_graph()
    state = rtl_state()
    results = []
    for b in args.boards:
        t = time.time()
        try:
            with using(Console()) as con, con.step(f"build {b}"):  # progress on stderr
                rep = build(g, b, out / b, parallelism=par, clock_mhz=args.clock, seed=args.seed,
                            pnr_minutes=args.pnr_minutes, logic_multipliers=args.logic_multipliers)
            row = {k: rep.get(k) for k in ("board", "bitstream", "fmax_mhz", "clock_mhz", "clock_source", "pll",
                                           "clock_chosen_by", "resources",
                                           "multipliers", "logic_multipliers", "parallelism", "latency_cycles", "latency_ns",
                                           "ii_cycles", "throughput_inferences_per_s", "uart", "attempts")}
        except FabformerError as e:
            row = {"board": b, "error": str(e)}
        row.update(source=source, seconds=round(time.time() - t, 1), rtl=state)
        print(json.dumps(row, sort_keys=True), flush=True)
        results.append(row)
    path = out / "results.json"  # rows of boards not built this time are kept
    old = json.loads(path.read_text()) if path.exists() else []
    done = {r["board"] for r in results}
    results = [r for r in old if r.get("board") not in done] + results
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
