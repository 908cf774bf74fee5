"""``fabformer sim``: generate the RTL of a graph, simulate it (cocotb, or a Verilator stream) against golden."""
from __future__ import annotations

from pathlib import Path

from fabformer.apps.common import PARALLELISM_HELP, add_data_argument, parse_parallelism
from fabformer.errors import FabformerError

DEMO_ORDER = 30
DEMO_STEP = "rtl"
DEMO_TITLE = "RTL: Verilog, Verilator simulation vs golden"


def inputs_for(graph, samples, data=None):
    """``--data``, the digits test split for the shipped example, else random inputs; ``samples``
    is a count or ``"all"`` (the whole data set)."""
    from fabformer.apps.data import data_for, is_digits_example
    if samples == "all" and data is None and not is_digits_example(graph):
        raise FabformerError(f"--samples all needs a data set: give --data FILE (graph {graph.name!r} is not the "
                             f"shipped digits example), or a number of random samples")
    d = data_for(graph, data, None if samples == "all" else samples)
    return d.x, d.source



def parse_samples(text):
    """argparse type: ``all`` or a positive integer."""
    import argparse
    if str(text) == "all":
        return "all"
    if str(text).isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'all', not {text!r}")


def _text(r: dict) -> str:
    return (f"{r['graph']} on {r['simulator']} ({r['mode']}): {r['samples']} samples ({r['inputs']}), "
            f"{'bit-exact' if r['bit_exact'] else str(r['mismatches']) + ' MISMATCHES'}\n"
            f"latency {r['latency_cycles']} cycles (analytic {r['latency_cycles_analytic']}), "
            f"II {r['ii_cycles']:.1f} cycles (analytic {r['ii_cycles_analytic']}), "
            f"{r['multipliers']} multipliers, MAC bound {r['mac_bound_cycles']:.1f} cycles; "
            f"{r['simulated_cycles']} cycles simulated in {r['simulation_seconds']} s\n"
            f"Verilog: {r['verilog']}")


def cmd_sim(args) -> int:
    from fabformer.apps.common import emit
    from fabformer.ir import load
    from fabformer.apps.console import current
    from fabformer.sim import simulate
    g = load(args.graph)
    samples = args.samples
    mode = args.mode or ("stream" if samples == "all" and args.simulator == "verilator" else "cocotb")
    x, source = inputs_for(g, samples, args.data)
    with current().step(f"RTL simulation: Verilog, {args.simulator} build, {samples} samples ({mode})"):
        r = simulate(g, args.output, x, args.simulator, parse_parallelism(args.parallelism), args.waves, mode=mode,
                     source=source, progress=_progress, arch=args.arch)
    text = _text(r)
    if args.listing and r.get("listing"):
        text += "\n" + Path(r["listing"]).read_text().rstrip() + f"\nlisting: {r['listing']}"
    emit(args, r, text)
    return 0 if r["bit_exact"] else 1


def register(sub) -> None:
    p = sub.add_parser("sim", help="generate RTL (Amaranth) and simulate it in cocotb against golden")
    p.add_argument("graph")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--samples", default=20, type=parse_samples,
                   help="number of samples (default 20), or 'all' (the whole data set; default mode stream)")
    add_data_argument(p, "inputs (default: the digits test split for the shipped example, else random inputs)")
    p.add_argument("--mode", choices=["cocotb", "stream"],
                   help="cocotb: cocotb testbench with random stalls; stream: Verilator C++ testbench streaming "
                        "the inputs from files, every output checked in the simulator (default: stream for "
                        "--samples all on Verilator, else cocotb)")
    p.add_argument("--parallelism", help=PARALLELISM_HELP)
    p.add_argument("--waves", action="store_true", help="record waveforms (FST)")
    from fabformer.rtl import ARCHITECTURES
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="dataflow",
                   help="RTL architecture: " + "; ".join(f"{k}: {v[1]}" for k, v in sorted(ARCHITECTURES.items())))
    p.add_argument("--listing", action="store_true", help="print the program listing (compact architecture)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sim)


def _progress(msg: str) -> None:
    """The simulator's progress messages: the running step's phase (see fabformer.apps.console)."""
    from fabformer.apps.console import current
    current().note(msg)


def demo(ctx) -> tuple[str, dict]:
    from fabformer.sim import simulate
    x, source = inputs_for(ctx["graph"], 5 if ctx.get("quick") else 20)
    r = simulate(ctx["graph"], Path(ctx["out"]) / "rtl", x, "verilator", source=source, progress=_progress)
    if not ctx.get("json"):
        print(_text(r))
    r = {k: v for k, v in r.items() if k != "blocks"}
    return "rtl", r
