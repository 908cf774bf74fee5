"""Whole-model latency against its MAC bound over the balanced parallelism settings the
board fit chooses from (``fabformer.boards.build.parallelism_candidates``): multipliers,
analytic latency and II, MAC bound (MACs / multipliers), latency / MAC bound, and the
latency Verilator measures on the same design (it must equal the analytic one).

Beside them the barrier floor (``Design.phase_floor_cycles``): the sum over barrier phases
(attention's scores wait for the last key) of each phase's slowest block's II, the latency
this split of multipliers cannot beat even if no block added a delay of its own; and the
least such floor over every split of the same multipliers (``phase_floor_best_cycles``).
Latency - floor is what the blocks' own delays (row times, pipelines) add.

    .venv/bin/python bench/latency.py [--graph G.graph.json] [--samples 3] [--no-sim] [--json out.json]

Default graph: the shipped digits example (``examples/digits/model_q8.h5``), else the
random-weight test encoder.  The designs of all settings share one Verilator build.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graph")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--no-sim", action="store_true", help="analytic numbers only")
    ap.add_argument("--json")
    ap.add_argument("--log", default="out/latency_sim.log", help="where the simulator's own log lines go")
    a = ap.parse_args(argv)
    from fabformer import ir
    from fabformer.apps import testing
    from fabformer.boards.build import parallelism_candidates
    from fabformer.rtl import DesignSet, generate
    if a.graph:
        g, x = ir.load(a.graph), None
    else:
        from rtl import example
        g, x = example()
    if x is None:
        x = testing.random_inputs(g, a.samples, seed=1)
    settings = parallelism_candidates(g, 10 ** 6, max_candidates=12)
    designs = [generate(g, parallelism=p) for p in settings]
    sims = [None] * len(designs)
    if not a.no_sim:
        from fabformer.sim import run_many
        t0 = time.time()
        print(f"simulating {len(designs)} settings x {a.samples} samples (one Verilator build) ...", file=sys.stderr)
        from fabformer.apps.console import capture
        ds = DesignSet(designs, name="latency_bench")
        with capture(Path(a.log)):  # Verilator's and cocotb's log lines go to the log file, not here
            sims = run_many([(m, x[:a.samples]) for m in ds.members], simulator="verilator")
        print(f"  done in {time.time() - t0:.0f} s", file=sys.stderr)
    rows = []
    for d, r in zip(designs, sims):
        row = {"multipliers": d.multipliers, "latency_cycles": d.latency_cycles, "ii_cycles": d.ii_cycles,
               "mac_bound_cycles": round(d.mac_bound_cycles, 1),
               "latency_over_bound": round(d.latency_cycles / d.mac_bound_cycles, 2),
               "floor_cycles": d.phase_floor_cycles,
               "floor_over_bound": round(d.phase_floor_cycles / d.mac_bound_cycles, 2),
               "best_floor_over_bound": round(d.phase_floor_best_cycles / d.mac_bound_cycles, 2),
               "token_major_tensors": len(d.orders)}
        if r is not None:
            row.update(simulated_latency=r.latency_cycles, simulated_ii=r.ii_cycles, bit_exact=bool(r.bit_exact))
        rows.append(row)
    print(f"\n{g.name}: {g.macs():,} MACs\n")
    cols = ["multipliers", "latency_cycles", "simulated_latency", "ii_cycles", "simulated_ii", "mac_bound_cycles",
            "latency_over_bound", "floor_cycles", "floor_over_bound", "best_floor_over_bound", "bit_exact"]
    cols = [c for c in cols if any(c in r for r in rows)]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(" ---: " for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(f"{r.get(c, '')}" for c in cols) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
