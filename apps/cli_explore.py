"""``fabformer explore``: the design-space sweep from the command line."""
from __future__ import annotations

from pathlib import Path


def _ints(text: str) -> list[int]:
    from fabformer.errors import FabformerError
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FabformerError(f"expected a comma-separated list of integers, not {text!r}") from None


def register(sub) -> None:
    from fabformer.apps.common import add_custom_code_argument, add_data_argument
    p = sub.add_parser("explore", help="sweep weight bits x parallelism: accuracy, latency, resources, Pareto front")
    p.add_argument("source", help="a graph file (.json) or a Keras/QKeras model (.h5)")
    p.add_argument("--bits", default="4,6,8", help="weight bit widths, e.g. 4,6,8")
    p.add_argument("--parallelism", default="1,2,4,8", help="multipliers per matmul-like block, e.g. 1,2,4,8")
    p.add_argument("--board", help="an open-flow board or part: adds Fmax from nextpnr (slow)")
    p.add_argument("--family", default="auto",
                   help="yosys synthesis family for resources: ice40, ecp5, none (default: the board's, else ice40)")
    p.add_argument("--sim-samples", type=int, default=1, help="samples simulated per point to check latency (0: off)")
    p.add_argument("--simulator", default="icarus", help="simulator of that check: icarus (compiles in seconds) or verilator")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    g.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="run on Ray (local, or a cluster address)")
    add_data_argument(p, "inputs for accuracy (with y) or agreement with the unswept graph (without y); a "
                         "model source is calibrated on them too")
    add_custom_code_argument(p)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explore)




def cmd_explore(args) -> int:
    from fabformer.apps.common import emit
    from fabformer.apps.explore import LocalExecutor, RayExecutor, explore
    from fabformer.apps.data import load_data
    from fabformer.apps.explore import load_source
    g = load_source(args.source, args.data, args.allow_custom_code)
    d = load_data(args.data, g) if args.data else None
    ex = RayExecutor(args.ray or None) if args.ray is not None else LocalExecutor(args.workers)
    fam = None if args.family == "none" else args.family
    rep = explore(g, _ints(args.bits), _ints(args.parallelism), args.output, board=args.board, family=fam,
                  x=None if d is None else d.x, y=None if d is None else d.y,
                  executor=ex, sim_samples=args.sim_samples, simulator=args.simulator, progress=not args.json)
    rows = [f"{'bits':>4} {'par':>4} {'acc %':>7} {'latency':>8} {'II':>6} {'LUTs':>6} {'DSPs':>5}  error"]
    for i, p in enumerate(rep["points"]):
        mark = "*" if i in rep["pareto"] else " "
        acc = f"{100 * p['accuracy']:.2f}" if p["accuracy"] is not None else "-"
        rows.append(f"{p['bits']:>4} {p['parallelism']:>4} {acc:>7} {str(p['latency_cycles']):>8} "
                    f"{str(p['ii_cycles']):>6} {str(p['luts']):>6} {str(p['dsps']):>5}{mark} {p['error'] or ''}")
    emit(args, rep, "\n".join(rows) + f"\n* = Pareto front; wrote {rep['json']}")
    return 0
