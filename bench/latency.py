"""Whole-model latency against its MAC bound over the balanced parallelism settings the
board fit chooses from (``fabformer.boards.build.parallelism_candidates``): multipliers,
analytic latency and II, MAC bound (MACs / multipliers), latency / MAC bound, and the
latency Verilator measures on the same design (it must equal the analytic one).

Beside them the barrier floor (``Design.phase_floor_cycles``): the sum over barrier phases
(attention's scores wait for the last key) of each phase's slowest block's II, the latency
this split of multipliers cannot beat even if no block added a delay of its own; and the
least such floor over every split of the same multipliers (``phase_floor_best_cycles``).
Latency - floor is what the blocks' own delays (row times, pipelines) add.

Then the chain floor (``Design.chain_floor_cycles``), the stronger bound of a design whose
blocks pass whole rows: a block starts on a row when the row has arrived and spends II / rows
on each, so each block on the path adds at least one row's work; only the pipelines, forks and
queues are left out.  Its least value over every real split of the same multipliers
(``chain_floor_best_cycles``, a convex program) is what no setting of that many multipliers
can beat in this architecture, however the multipliers are spread and however short the
pipelines.

    .venv/bin/python bench/latency.py [--graph G.graph.json] [--samples 3] [--no-sim] [--json out.json]
    .venv/bin/python bench/latency.py --frontier [--graph G.graph.json]
    .venv/bin/python bench/latency.py --search latency|chain [--starts 4] [--graph G.graph.json]

``--search latency|chain`` (analytic only): a local search over all settings (single and paired
option steps from two fixed and ``--starts`` random settings) for the least latency, or chain
floor, over the MAC bound; a line per start.

``--frontier`` (analytic only): settings chosen for latency, not balance.  From one multiplier
per node, each step takes the move that cuts the latency the most per added multiplier (a node
to its next parallelism option, or a layer norm / softmax to its next lane count, any divisor of its
row: past the II's need more lanes still shorten its row time); a line per step
with its latency / MAC bound, and the least ratio seen.  A greedy search: it shows how low the
ratio goes in this architecture, not a proof that no setting goes lower.

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
    ap.add_argument("--frontier", action="store_true", help="greedy latency-first settings (analytic)")
    ap.add_argument("--search", choices=["latency", "chain"],
                    help="local search for the least latency (or chain floor) / MAC bound (analytic)")
    ap.add_argument("--starts", type=int, default=4, help="--search: random starting settings beside the two fixed ones")
    ap.add_argument("--seed", type=int, default=0, help="--search: seed of the random starts")
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
    if a.frontier:
        return frontier(g)
    if a.search:
        return search(g, a.search, a.starts, a.seed)
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
               "chain_floor_cycles": round(d.chain_floor_cycles, 1),
               "chain_floor_over_bound": round(d.chain_floor_cycles / d.mac_bound_cycles, 2),
               "best_chain_floor_over_bound": round(d.chain_floor_best_cycles / d.mac_bound_cycles, 2),
               "token_major_tensors": len(d.orders)}
        if r is not None:
            row.update(simulated_latency=r.latency_cycles, simulated_ii=r.ii_cycles, bit_exact=bool(r.bit_exact))
        rows.append(row)
    print(f"\n{g.name}: {g.macs():,} MACs\n")
    cols = ["multipliers", "latency_cycles", "simulated_latency", "ii_cycles", "simulated_ii", "mac_bound_cycles",
            "latency_over_bound", "floor_cycles", "floor_over_bound", "best_floor_over_bound", "chain_floor_cycles",
            "chain_floor_over_bound", "best_chain_floor_over_bound", "bit_exact"]
    cols = [c for c in cols if any(c in r for r in rows)]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(" ---: " for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(f"{r.get(c, '')}" for c in cols) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def setting_options(g):
    """``(parallelism options of each matmul-like node, lane options of each layer norm /
    softmax: any divisor of its row)``."""
    from fabformer.boards.build import row_lane_options
    from fabformer.rtl import mac_nodes, parallelism_options
    opts = {n.name: sorted({o[2] for o in parallelism_options(g, n)}) for n in mac_nodes(g)}
    rows = {k: [lanes for _, lanes in v] for k, v in row_lane_options(g, every=True).items()}
    return opts, rows


def frontier(g) -> int:
    """Greedy latency-first settings of ``g``: print a row per step and the least latency / bound."""
    from fabformer.rtl import generate
    opts, rows = setting_options(g)
    cur = {k: 1 for k in opts}
    d = generate(g, parallelism=cur)
    print(f"\n{g.name}: {g.macs():,} MACs; greedy latency-first settings\n")
    print("| multipliers | latency | II | MAC bound | latency / bound | setting |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    best = None
    while True:
        r = d.latency_cycles / d.mac_bound_cycles
        best = min(best or (r, d.multipliers), (r, d.multipliers))
        print(f"| {d.multipliers} | {d.latency_cycles:,} | {d.ii_cycles:,} | {d.mac_bound_cycles:,.1f} | {r:.2f} | "
              f"{json.dumps(cur, sort_keys=True)} |", flush=True)
        step = None
        for k in list(opts) + list(rows):
            choices = opts.get(k) or rows[k]
            now = cur.get(k, d.lanes.get(k, 1))
            up = [v for v in choices if v > now]
            if not up:
                continue
            trial = generate(g, parallelism={**cur, k: up[0]})
            added = trial.multipliers - d.multipliers
            if added <= 0:
                continue
            gain = (d.latency_cycles - trial.latency_cycles) / added
            if gain > 0 and (step is None or gain > step[0]):
                step = (gain, {**cur, k: up[0]}, trial)
        if step is None:
            break
        _, cur, d = step
    print(f"\nleast latency / MAC bound on this path: {best[0]:.2f} at {best[1]} multipliers")
    return 0


def search(g, objective: str, starts: int, seed: int) -> int:
    """Local search for the least ``objective`` / MAC bound over settings of ``g`` (every node
    and row function at one of its options): from one multiplier per node, 4 per node (or
    fewer where that is not an option) and ``starts`` random settings, move to the best
    neighbour (one node's option one step up or down, or two nodes' each one step) while it
    lowers the ratio.  ``objective``: ``latency`` (the analytic latency) or ``chain`` (the
    chain floor: no pipeline delay).  Prints each start's local minimum."""
    import random
    from fabformer.rtl import generate
    opts, rows = setting_options(g)
    choices = {**opts, **rows}
    keys = list(choices)
    memo = {}

    def ratio(s):
        k = tuple(sorted(s.items()))
        if k not in memo:
            d = generate(g, parallelism=dict(s))
            v = d.latency_cycles if objective == "latency" else d.chain_floor_cycles
            memo[k] = (v / d.mac_bound_cycles, d.multipliers, d.latency_cycles, round(d.chain_floor_cycles, 1))
        return memo[k]

    def steps(s, key):
        i = choices[key].index(s[key])
        return [choices[key][j] for j in (i - 1, i + 1) if 0 <= j < len(choices[key])]

    def neighbours(s):
        for a in keys:
            for va in steps(s, a):
                t = {**s, a: va}
                yield t
                for b in keys[keys.index(a) + 1:]:
                    for vb in steps(s, b):
                        yield {**t, b: vb}

    rng = random.Random(seed)
    first = [{k: 1 for k in keys}, {k: max(v for v in choices[k] if v <= 4) for k in keys}]
    print(f"\n{g.name}: {g.macs():,} MACs; local search for the least {objective} / MAC bound\n")
    print("| start | multipliers | latency | chain floor | ratio | setting |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    best = None
    for n, cur in enumerate(first + [{k: rng.choice(v[:5]) for k, v in choices.items()} for _ in range(starts)]):
        val = ratio(cur)
        while True:
            t = min(neighbours(cur), key=lambda s: ratio(s)[0])
            if ratio(t)[0] >= val[0] - 1e-9:
                break
            cur, val = t, ratio(t)
        print(f"| {n} | {val[1]} | {val[2]:,} | {val[3]:,} | {val[0]:.3f} | {json.dumps(cur, sort_keys=True)} |", flush=True)
        best = min(best or val, val)
    print(f"\nleast {objective} / MAC bound found: {best[0]:.3f} at {best[1]} multipliers ({len(memo):,} settings evaluated)")
    return 0


if __name__ == "__main__":
    main()
