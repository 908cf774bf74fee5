"""Design-space sweep wall time: 1 and 2 local workers, and local Ray (a benchmark, not a test).

    .venv/bin/python bench/explore.py [--bits 4,6,8] [--parallelism 1,2,4,8] [--sim-samples 1] [--family ecp5]
                                      [--executors 1,2,ray]

Runs the same sweep of the digits example once per executor (each into a fresh folder, so
nothing is cached): every point re-quantizes, measures golden accuracy on the 450 test
samples, checks the analytic latency with an Icarus simulation of ``--sim-samples``
samples (bit-exact against golden) and synthesizes the model with yosys for ``--family``
(ECP5 by default: the digits model's board is the ULX3S-85F).  Checks that the executors
give identical points and prints the tables.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", default="4,6,8")
    p.add_argument("--parallelism", default="1,2,4,8")
    p.add_argument("--sim-samples", type=int, default=1)
    p.add_argument("--family", default="ecp5")
    p.add_argument("--executors", default="1,2,ray", help="any of 1 (one local worker), 2 (two), ray")
    p.add_argument("--json", help="keep each executor's points and wall time here (merged across runs, so the "
                                  "executors can run at different times and still be compared)")
    args = p.parse_args(argv)
    from fabformer.apps.explore import LocalExecutor, RayExecutor, explore
    from fabformer.apps.explore import load_source
    g = load_source(Path(__file__).resolve().parent.parent / "examples/digits/model_q8.h5")
    bits = [int(b) for b in args.bits.split(",")]
    par = [int(v) for v in args.parallelism.split(",")]
    fam = None if args.family == "none" else args.family
    rows, results = [], []
    tmp = Path(tempfile.mkdtemp(prefix="fab-explore-"))
    chosen = args.executors.split(",")
    execs = [(n, e) for k, n, e in (("1", "local, 1 worker", lambda: LocalExecutor(1)),
                                      ("2", "local, 2 workers", lambda: LocalExecutor(2)),
                                      ("ray", "Ray (local), 2 CPUs", lambda: RayExecutor(workers=2))) if k in chosen]
    for name, make in execs:
        ex = make()
        t = time.perf_counter()
        rep = explore(g, bits, par, tmp / name.split(",")[0].replace(" ", "_") / str(len(rows)), executor=ex,
                      family=fam, sim_samples=args.sim_samples, progress=False)
        rows.append((name, time.perf_counter() - t, rep))
        results.append([{k: v for k, v in pt.items() if k not in ("seconds", "cached")} for pt in rep["points"]])
    shutil.rmtree(tmp, ignore_errors=True)
    n = len(bits) * len(par)
    if args.json:
        import json
        jp = Path(args.json)
        kept = json.loads(jp.read_text()) if jp.exists() else {}
        setting = f"{args.bits}|{args.parallelism}|{args.sim_samples}|{fam}"
        kept = {k: v for k, v in kept.items() if v["setting"] == setting}
        for (name, dt, rep), pts in zip(rows, results):
            kept[name] = {"setting": setting, "wall_s": dt, "report": rep, "points": pts}
        jp.write_text(json.dumps(kept, indent=1, sort_keys=True, default=str) + "\n")
        rows = [(name, v["wall_s"], v["report"]) for name, v in kept.items()]
        results = [v["points"] for v in kept.values()]
    print(f"digits example, {n} points (bits {args.bits} x parallelism {args.parallelism}), "
          f"sim samples/point {args.sim_samples}, synthesis {fam}, {os.cpu_count()} cores")
    print(f"{'executor':<22}{'wall s':>9}{'s/point':>9}{'failed':>8}")
    for name, dt, rep in rows:
        print(f"{name:<22}{dt:>9.1f}{dt / n:>9.1f}{sum(1 for q in rep['points'] if q['error']):>8}")
    print(f"identical points across executors: {all(r == results[0] for r in results)}")
    rep = rows[0][2]
    print(f"\npoints ({rows[0][0]}; * = Pareto front):")
    print("| bits | par | accuracy % | latency (sim) | II | multipliers | LUTs | FFs | DSPs | BRAMs | s | error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, q in enumerate(rep["points"]):
        acc = f"{100 * q['accuracy']:.2f}" if q["accuracy"] is not None else "-"
        star = "*" if i in rep["pareto"] else ""
        print(f"| {q['bits']}{star} | {q['parallelism']} | {acc} | {q['latency_cycles']} ({q['sim_latency_cycles']}"
              f"{', bit-exact' if q['sim_bit_exact'] else ''}) | {q['ii_cycles']} | {q['multipliers']} | {q['luts']} | "
              f"{q['ffs']} | {q['dsps']} | {q['brams']} | {q['seconds']} | {q['error'] or ''} |")


if __name__ == "__main__":
    main()
