"""The whole digits test split through the RTL: Verilator stream mode, build included (a benchmark).

    .venv/bin/python bench/rtl_stream.py [--cached] [--samples N] [--json out.json]

Generates the Verilog of the shipped digits model (default parallelism), builds the
Verilator stream simulator in a fresh folder (``--cached``: the usual digest-named cache
folder, a hit when built before) and streams the 450 test samples through it; every
output row is checked against golden inside the simulator.  Prints one table: generate,
build and simulation seconds, simulated cycles/s, latency and II against the analytic
ones, and bit-exactness; then the same samples again on the cached build.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cached", action="store_true", help="use the digest-named build cache (no fresh build)")
    ap.add_argument("--samples", type=int, help="first N test samples (default: all 450)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from rtl import example
    from fabformer.rtl import generate
    from fabformer.sim import bulk
    t_all = time.perf_counter()
    g, x = example()
    if a.samples:
        x = x[:a.samples]
    t0 = time.perf_counter()
    d = generate(g)
    d.verilog("top")
    gen_s = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory(prefix="fab_stream_") as tmp:
        bdir = None if a.cached else Path(tmp) / "build"
        t0 = time.perf_counter()
        bulk.build(d, bdir, progress=bulk._progress)
        build_s = time.perf_counter() - t0
        for label in ("first run (after the build)", "second run (cached build)"):
            t0 = time.perf_counter()
            r = bulk.run(d, x, build_dir=bdir)
            rows.append((label, r, time.perf_counter() - t0))
    total = time.perf_counter() - t_all
    first = rows[0]
    res = {"graph": g.name, "samples": first[1].samples, "generate_s": round(gen_s, 1), "build_s": round(build_s, 1),
           "total_s_incl_convert_generate_build_first_run": round(total - rows[1][2], 1),
           "runs": [{"run": lb, "seconds_incl_golden_and_files": round(s, 2), "simulator_seconds": round(r.wall_s, 2),
                     "simulated_cycles": r.cycles, "cycles_per_second": round(r.cycles_per_second),
                     "latency": r.latency_cycles, "ii": r.ii_cycles, "bit_exact": r.bit_exact,
                     "mismatches": r.mismatches} for lb, r, s in rows]}
    print(f"{g.name}: {res['samples']} samples through the RTL (Verilator stream mode), "
          f"latency analytic {d.latency_cycles}, II analytic {d.ii_cycles}\n")
    print(f"generate Verilog {gen_s:.1f} s; Verilator build {build_s:.1f} s"
          f"{' (cache)' if a.cached else ' (fresh folder)'}; "
          f"convert + generate + build + first run {res['total_s_incl_convert_generate_build_first_run']} s\n")
    print("| run | s (incl. golden, files) | simulator s | simulated cycles | cycles/s | latency | II | bit-exact |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for lb, r, s in rows:
        print(f"| {lb} | {s:.2f} | {r.wall_s:.2f} | {r.cycles:,} | {r.cycles_per_second:,.0f} | {r.latency_cycles} | "
              f"{r.ii_cycles:.1f} | {r.bit_exact} ({r.mismatches} mismatches) |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
