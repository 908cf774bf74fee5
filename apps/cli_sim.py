"""``fabformer sim``: generate the RTL of a graph, simulate it (cocotb, or a Verilator stream) against golden."""
from __future__ import annotations

from pathlib import Path

from fabformer.errors import FabformerError

DEMO_ORDER = 30


def parse_parallelism(text):
    """``None``/``default``, an integer, or ``node=int,node=int``."""
    if text is None or text == "default":
        return None
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    out = {}
    for part in text.split(","):
        name, sep, val = part.rpartition("=")
        if not sep or not name or not val.strip().isdigit():
            raise FabformerError(f"cannot parse --parallelism {text!r}; write an integer (multipliers per "
                                 f"matmul-like block) or node=int,node=int")
        out[name.strip()] = int(val)
    return out


def inputs_for(graph, samples):
    """The digits test split when the graph takes 8x8 digits, else random inputs;
    ``samples`` is a count or ``"all"`` (the whole split)."""
    from fabformer.apps.testing import random_inputs
    shape = tuple(graph.tensors[graph.inputs[0]].shape)
    if shape == (8, 8):
        from fabformer.apps.data import digits
        x = digits().x_test
        if samples == "all":
            return x, "digits test split"
        if samples <= len(x):
            return x[:samples], "digits test split"
    elif samples == "all":
        raise FabformerError(f"--samples all needs a data set, and graph {graph.name!r} takes inputs of shape "
                             f"{shape} (the digits split is 8x8); give a number of random samples")
    return random_inputs(graph, samples), "random inputs"


def parse_samples(text):
    """``all`` or a positive integer."""
    if str(text) == "all":
        return "all"
    if str(text).isdigit() and int(text) >= 1:
        return int(text)
    raise FabformerError(f"--samples must be a positive integer or 'all', not {text!r}")


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
    from fabformer.sim import simulate
    g = load(args.graph)
    samples = parse_samples(args.samples)
    mode = args.mode or ("stream" if samples == "all" and args.simulator == "verilator" else "cocotb")
    x, source = inputs_for(g, samples)
    r = simulate(g, args.output, x, args.simulator, parse_parallelism(args.parallelism), args.waves, mode=mode,
                 source=source, progress=_progress)
    emit(args, r, _text(r))
    return 0 if r["bit_exact"] else 1


def register(sub) -> None:
    p = sub.add_parser("sim", help="generate RTL (Amaranth) and simulate it in cocotb against golden")
    p.add_argument("graph")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--samples", default="20",
                   help="number of samples, or 'all' (the whole digits test split; default mode stream)")
    p.add_argument("--mode", choices=["cocotb", "stream"],
                   help="cocotb: cocotb testbench with random stalls; stream: Verilator C++ testbench streaming "
                        "the inputs from files, every output checked in the simulator (default: stream for "
                        "--samples all on Verilator, else cocotb)")
    p.add_argument("--parallelism", help="multipliers per matmul-like block: an integer or node=int,...")
    p.add_argument("--waves", action="store_true", help="record waveforms (FST)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sim)


def _progress(msg: str) -> None:
    import sys
    print(msg, file=sys.stderr, flush=True)


def demo(ctx) -> tuple[str, dict]:
    from fabformer.sim import simulate
    x, source = inputs_for(ctx["graph"], 5 if ctx.get("quick") else 20)
    r = simulate(ctx["graph"], Path(ctx["out"]) / "rtl", x, "verilator", source=source)
    if not ctx.get("json"):
        print(_text(r))
    r = {k: v for k, v in r.items() if k != "blocks"}
    return "rtl", r
