"""Design-space sweep wall time: 1 and 2 local workers, and local Ray (a benchmark, not a test).

    .venv/bin/python bench/explore.py [--bits 4,6,8] [--parallelism 1,2,4,8] [--sim-samples 1] [--family ice40]

Runs the same sweep of the digits example three times (each into a fresh folder, so
nothing is cached), checks that the three give identical points, and prints a table.
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
    p.add_argument("--family", default="ice40")
    args = p.parse_args(argv)
    from fabformer.explore import LocalExecutor, RayExecutor, explore
    from fabformer.explore_cli import load_source
    g = load_source(Path(__file__).resolve().parent.parent / "examples/digits/model_q8.h5")
    bits = [int(b) for b in args.bits.split(",")]
    par = [int(v) for v in args.parallelism.split(",")]
    fam = None if args.family == "none" else args.family
    rows, results = [], []
    tmp = Path(tempfile.mkdtemp(prefix="fab-explore-"))
    for name, ex in (("local, 1 worker", LocalExecutor(1)), ("local, 2 workers", LocalExecutor(2)),
                     ("Ray (local), 2 CPUs", RayExecutor(workers=2))):
        t = time.perf_counter()
        rep = explore(g, bits, par, tmp / name.split(",")[0].replace(" ", "_") / str(len(rows)), executor=ex,
                      family=fam, sim_samples=args.sim_samples, progress=False)
        rows.append((name, time.perf_counter() - t, rep))
        results.append([{k: v for k, v in pt.items() if k not in ("seconds", "cached")} for pt in rep["points"]])
    shutil.rmtree(tmp, ignore_errors=True)
    n = len(bits) * len(par)
    print(f"digits example, {n} points (bits {args.bits} x parallelism {args.parallelism}), "
          f"sim samples/point {args.sim_samples}, synthesis {fam}, {os.cpu_count()} cores")
    print(f"{'executor':<22}{'wall s':>9}{'s/point':>9}{'failed':>8}")
    for name, dt, rep in rows:
        print(f"{name:<22}{dt:>9.1f}{dt / n:>9.1f}{sum(1 for q in rep['points'] if q['error']):>8}")
    print(f"identical points across executors: {all(r == results[0] for r in results)}")
    rep = rows[0][2]
    print("\nPareto front (bits, multipliers/block, accuracy, latency cycles, II, LUTs, DSPs):")
    for i in rep["pareto"]:
        q = rep["points"][i]
        print(f"  {q['bits']}, {q['parallelism']}, {100 * q['accuracy']:.2f} %, {q['latency_cycles']}, "
              f"{q['ii_cycles']}, {q['luts']}, {q['dsps']}")


if __name__ == "__main__":
    main()
