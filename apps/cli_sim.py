"""``fabformer sim``: generate the RTL of a graph, simulate it in cocotb and compare with golden."""
from __future__ import annotations

import json
from pathlib import Path

from fabformer.apps.common import add_data_argument, positive_int
from fabformer.errors import FabformerError

DEMO_ORDER = 30
DEMO_STEP = "rtl"
DEMO_TITLE = "RTL: Verilog, Verilator simulation vs golden"


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


def inputs_for(graph, samples: int, data=None):
    """``--data``, the digits test split for the shipped example, else random inputs."""
    from fabformer.apps.data import data_for
    d = data_for(graph, data, samples)
    return d.x, d.source


def simulate(graph, out_dir, simulator="verilator", samples=20, parallelism=None, waves=False, data=None) -> dict:
    from fabformer.outdir import prepare_dir
    from fabformer.rtl import generate
    from fabformer.sim.api import run
    if samples < 1:
        raise FabformerError(f"--samples must be at least 1, not {samples}")
    out = prepare_dir(out_dir)
    design = generate(graph, parallelism)
    vpath = design.write_verilog(out, "top")
    x, source = inputs_for(graph, samples, data)
    r = run(design, x, simulator=simulator, waves=waves)
    res = {
        "graph": graph.name, "simulator": simulator, "samples": r.samples, "inputs": source,
        "bit_exact": r.bit_exact, "mismatches": r.mismatches, "first_mismatches": r.mismatch_report[:5],
        "latency_cycles": r.latency_cycles, "latency_cycles_analytic": design.latency_cycles,
        "ii_cycles": r.ii_cycles, "ii_cycles_analytic": design.ii_cycles,
        "multipliers": design.multipliers, "macs": design.macs,
        "mac_bound_cycles": design.mac_bound_cycles,
        "simulated_cycles": r.cycles, "cycles_per_second": round(r.cycles_per_second, 1),
        "verilog": str(vpath), "blocks": design.blocks,
    }
    if waves:
        import shutil
        found = sorted(Path(r.build_dir).glob("*.fst"))
        if found:
            shutil.copy(found[0], out / "waves.fst")
            res["waves"] = str(out / "waves.fst")
        else:
            res["waves"] = None
    (out / "sim.json").write_text(json.dumps(res, indent=1, sort_keys=True, default=str) + "\n")
    return res


def _text(r: dict) -> str:
    return (f"{r['graph']} on {r['simulator']}: {r['samples']} samples ({r['inputs']}), "
            f"{'bit-exact' if r['bit_exact'] else str(r['mismatches']) + ' MISMATCHES'}\n"
            f"latency {r['latency_cycles']} cycles (analytic {r['latency_cycles_analytic']}), "
            f"II {r['ii_cycles']:.1f} cycles (analytic {r['ii_cycles_analytic']}), "
            f"{r['multipliers']} multipliers, MAC bound {r['mac_bound_cycles']:.1f} cycles\n"
            f"Verilog: {r['verilog']}")


def cmd_sim(args) -> int:
    from fabformer.apps.common import emit
    from fabformer.ir import load
    from fabformer.apps.console import current
    g = load(args.graph)
    with current().step(f"RTL simulation: Verilog, {args.simulator} build, {args.samples} samples"):
        r = simulate(g, args.output, args.simulator, args.samples, parse_parallelism(args.parallelism), args.waves,
                     args.data)
    emit(args, r, _text(r))
    return 0 if r["bit_exact"] else 1


def register(sub) -> None:
    p = sub.add_parser("sim", help="generate RTL (Amaranth) and simulate it in cocotb against golden")
    p.add_argument("graph")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--samples", type=positive_int, default=20, help="samples simulated (default 20)")
    add_data_argument(p, "inputs (default: the digits test split for the shipped example, else random inputs)")
    p.add_argument("--parallelism", help="multipliers per matmul-like block: an integer or node=int,...")
    p.add_argument("--waves", action="store_true", help="record waveforms (FST)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sim)


def demo(ctx) -> tuple[str, dict]:
    n = 5 if ctx.get("quick") else 20
    r = simulate(ctx["graph"], Path(ctx["out"]) / "rtl", "verilator", n)
    if not ctx.get("json"):
        print(_text(r))
    r = {k: v for k, v in r.items() if k != "blocks"}
    return "rtl", r
