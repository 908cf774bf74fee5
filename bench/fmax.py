"""Fmax of generated designs out of context (no board shell, no I/O buffers): yosys +
nextpnr on ECP5 (LFE5U-85F) or iCE40 (UP5K, HX8K), to iterate on a block's critical path
in seconds to minutes instead of a whole-model board build.

    .venv/bin/python bench/fmax.py --op dense:2 matmul:2 softmax layernorm [--family ice40]
    .venv/bin/python bench/fmax.py --graph out/digits.graph.json --parallelism 4

Prints one line per design: Fmax (MHz, nextpnr) and LUT/FF/DSP/BRAM; with ``--seed 1-3``
(ECP5) each design is placed once per seed and ``fmax_mhz`` is the median of their Fmax.  ``--json`` writes the rows.
nextpnr-ice40 has no out-of-context mode (every port of the design would need a pin), so on
iCE40 the design is measured inside the UART shell on the bare part (``part:iCE40UP5K``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTS = {"ecp5": ("NEXTPNR_ECP5", ["--85k", "--package", "CABGA381"]),
         "ice40": ("NEXTPNR_ICE40", ["--up5k", "--package", "sg48"]),
         "ice40-hx8k": ("NEXTPNR_ICE40", ["--hx8k", "--package", "ct256"])}


def measure_in_shell(graph, design, part: str, workdir: Path, clock_mhz: float) -> dict:
    """Fmax of ``design`` inside the UART shell on a bare ``part`` (``part:iCE40UP5K``): for a
    family whose nextpnr has no out-of-context mode (the design's ports would need pins)."""
    from fabformer.boards.build import build
    from fabformer.errors import FabformerError
    t0 = time.time()
    try:
        r = build(graph, part, workdir, design=design, clock_mhz=clock_mhz)
    except FabformerError as e:
        a = getattr(e, "attempts", [{}])[-1]
        return {"family": part, "error": str(e)[:300], "fmax_mhz": a.get("fmax_mhz"), "nextpnr": a.get("used"),
                "seconds": round(time.time() - t0, 1)}
    return {"family": part, "fmax_mhz": r["fmax_mhz"], "in_shell": True, "seconds": round(time.time() - t0, 1),
            "nextpnr": {k: v["used"] for k, v in r["resources"].items()}}


def measure(design, family: str = "ecp5", workdir: Path | None = None, seed: int = 1, pnr: bool = True) -> dict:
    """Synthesize (and place and route, out of context) ``design``; returns Fmax and resources."""
    from fabformer.boards.flow import (after_synthesis, find_tool, parse_nextpnr_report, router_opts, synth_commands,
                                       yosys_counts)
    fam = "ecp5" if family == "ecp5" else "ice40"
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory()
        workdir = Path(tmp.name)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(design.rtlil("top"))
    opts = "-dsp" if fam == "ice40" else ""
    script = ["read_rtlil top.il", *synth_commands(fam, opts), "tee -q -o top.stat.json stat -json",
              "write_json top.json"]
    (workdir / "top.ys").write_text("\n".join(script) + "\n")
    t0 = time.time()
    res = {"family": family}
    r = subprocess.run([find_tool("YOSYS"), "-q", "-l", "yosys.log", "top.ys"], cwd=workdir,
                       capture_output=True, text=True)
    res["synth_s"] = round(time.time() - t0, 1)
    if r.returncode:
        res["error"] = (r.stderr or r.stdout)[-2000:]
        return res
    res["yosys"] = yosys_counts(json.loads((workdir / "top.stat.json").read_text()), fam)
    if not pnr:
        return res
    res["dsp_registers"] = after_synthesis(fam, workdir)
    var, dev = PARTS[family]
    t1 = time.time()
    cmd = [find_tool(var), *dev, "--json", "top.json", "--out-of-context", "--report", "top.report.json",
           "--timing-allow-fail", "--seed", str(seed), "--freq", "100", "-l", "pnr.log", "-q",
           *router_opts(fam).split()]
    if fam == "ice40":
        cmd.remove("--out-of-context")  # nextpnr-ice40 has no such mode: I/O of the top are pins
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    res["pnr_s"] = round(time.time() - t1, 1)
    rep = workdir / "top.report.json"
    if r.returncode or not rep.exists():
        res["error"] = (r.stderr or r.stdout)[-2000:] or (workdir / "pnr.log").read_text()[-2000:]
        return res
    used, fmax = parse_nextpnr_report(rep, fam)
    res["nextpnr"] = used
    res["fmax_mhz"] = round(min(fmax.values()), 2) if fmax else None
    if tmp is not None:
        tmp.cleanup()
    return res


def node_graph(g, name: str):
    """Node ``name`` of ``g`` alone: each of its inputs a graph input in its own type (a quantize
    node per input, as the hardware takes them), the node with its own constants and types."""
    import dataclasses
    from fabformer import ir
    op = g.node(name)
    sub = ir.Graph(f"{g.name}_{name}".replace("/", "_"))
    ins = []
    for k, t in enumerate(op.inputs):
        sub.add_input(f"in{k}", tuple(g.tensors[t].shape))
        sub.add(ir.Quantize(f"q{k}", (f"in{k}",), f"x{k}"), g.type_of(t))
        ins.append(f"x{k}")
    sub.add(dataclasses.replace(op, inputs=tuple(ins), output="y"), g.type_of(op.output))
    sub.outputs = ["y"]
    sub.verify()
    return sub


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--op", nargs="*", default=[], help="op graph kinds, each optionally KIND:PARALLELISM")
    ap.add_argument("--graph", help="a graph JSON (the whole model)")
    ap.add_argument("--parallelism", default=None, help="N, or a JSON object {node: N}")
    ap.add_argument("--node", nargs="*", default=[],
                    help="with --graph: measure these nodes alone (each fed from its own quantized inputs)")
    ap.add_argument("--family", default="ecp5", choices=sorted(PARTS))
    ap.add_argument("--no-pnr", action="store_true", help="synthesis only")
    ap.add_argument("--keep", help="keep the build folders under this folder")
    ap.add_argument("--seed", default="1", help="nextpnr seed, or seeds (1,2,3 or 1-3): each design is placed "
                                                "with each, and the row gives every Fmax and their median")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from fabformer import ir
    from fabformer.apps import testing
    from fabformer.apps.common import parse_seeds
    from fabformer.boards.flow import check_seeds
    from fabformer.rtl import generate
    jobs = []
    for spec in a.op:
        kind, _, p = spec.partition(":")
        jobs.append((spec, testing.op_graph(kind), int(p) if p else None))
    if a.graph:
        par = a.parallelism
        par = None if par is None else json.loads(par) if par.strip().startswith("{") else int(par)
        g = ir.load(a.graph)
        if a.node:
            for name in a.node:
                sub = node_graph(g, name)
                jobs.append((f"{Path(a.graph).stem}:{name}".replace("/", "_"), sub,
                             par.get(name) if isinstance(par, dict) else par))
        else:
            jobs.append((Path(a.graph).stem, g, par))
    rows = []
    for label, g, p in jobs:
        d = generate(g, parallelism=p)
        wd = Path(a.keep) / label.replace(":", "_") if a.keep else None
        if a.family.startswith("ice40") and not a.no_pnr:  # no out-of-context mode: inside the UART shell
            part = "part:iCE40HX8K" if a.family == "ice40-hx8k" else "part:iCE40UP5K"
            r = measure_in_shell(g, d, part, wd or Path(tempfile.mkdtemp()) / "b", 12.0)
        else:
            seeds = check_seeds(parse_seeds(a.seed))
            runs = [measure(d, a.family, wd if len(seeds) == 1 or wd is None else wd / f"seed{s}", seed=s,
                            pnr=not a.no_pnr) for s in seeds]
            r = runs[0]
            if len(seeds) > 1:
                by_seed = {s: x.get("fmax_mhz") for s, x in zip(seeds, runs)}
                got = sorted(v for v in by_seed.values() if v is not None)
                r.update(fmax_by_seed=by_seed, fmax_mhz=got[len(got) // 2] if got else None)
        r.update(design=label, latency=d.latency_cycles, ii=d.ii_cycles, multipliers=d.multipliers)
        rows.append(r)
        print(json.dumps(r), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
