"""``fabformer build GRAPH --board NAME -o DIR``: a bitstream (or Vivado project) with its report."""
from __future__ import annotations

from pathlib import Path

DEMO_ORDER = 40
DEMO_BOARD = "ulx3s-85f"
DEMO_STEP = "board"
DEMO_TITLE = (f"board: {DEMO_BOARD} bitstream (synthesis, place and route: about 20 min), then the "
              f"iCEBreaker's (compact architecture at 12 MHz: about 2 min; not with --quick)")


def register(sub) -> None:
    from fabformer.apps.common import PARALLELISM_HELP, parse_seeds
    from fabformer.boards.platforms import BOARDS, PART_DEVICES
    b = sub.add_parser("build", help="bitstream (open flow) or Vivado project for a board, with a report")
    b.add_argument("graph", help="graph file (.graph.json)")
    b.add_argument("--board", required=True,
                   help=f"one of {', '.join(BOARDS)}, or part:DEVICE with DEVICE one of {', '.join(PART_DEVICES)}")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--clock", type=float, help="clock in MHz (default: the board's oscillator)")
    b.add_argument("--parallelism", help=PARALLELISM_HELP + "; default: fitted to the device")
    b.add_argument("--logic-multipliers", type=int, metavar="N",
                   help="open flow: the fit may build up to N matmul-like multipliers in logic beyond the "
                        "device's DSPs (radix-4 Booth, same cycles; an 8x8-bit one is about 120 ECP5 logic "
                        "cells); default none")
    b.add_argument("--baud", type=int, default=115200)
    b.add_argument("--seed", type=parse_seeds, default=1, metavar="SEED[,SEED...]",
                   help="nextpnr's placement seed (open flow; the routed Fmax varies with it: one digits "
                        "netlist on the ULX3S-85F routed at 56.97 MHz with seed 2 and 79.81 MHz with seed 1); several (1,2,3 or 1-4): each try places with them in turn until one meets the clock")
    b.add_argument("--pnr-minutes", type=float, metavar="MIN",
                   help="time limit of one place and route (open flow; default none): a run stopped there counts "
                        "as not routed and the next seed is tried (one digits seed's router did not converge in 26 min)")
    b.add_argument("--arch", choices=["auto", "dataflow", "compact"], default="auto",
                   help="RTL architecture (default auto: dataflow when it fits the device, else compact)")
    b.add_argument("--listing", action="store_true", help="print the program listing (compact architecture)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_build)


def _text(rep: dict) -> str:
    from fabformer.boards.build import report_markdown
    return report_markdown(rep)


def cmd_build(args) -> int:
    from fabformer.apps.common import emit, parse_parallelism
    from fabformer.ir import load
    from fabformer.apps.console import current
    from fabformer.boards.build import build_arch
    g = load(args.graph)
    with current().step(f"build for {args.board}: synthesis, place and route"):
        rep = build_arch(g, args.board, args.output, arch=args.arch, clock_mhz=args.clock,
                         parallelism=parse_parallelism(args.parallelism), baud=args.baud, seed=args.seed,
                         pnr_minutes=args.pnr_minutes, logic_multipliers=args.logic_multipliers)
    text = (rep.get("arch_note", "") + "\n" if rep.get("arch_note") else "") + _text(rep)
    if args.listing and rep.get("listing"):
        text += "\n" + Path(rep["listing"]).read_text().rstrip()
    emit(args, rep, text + f"\nwrote {Path(args.output) / 'report.md'}")
    return 0


def demo(ctx) -> tuple[str, dict]:
    """The example's bitstream for one open-flow board (ULX3S-85F), fitted as ``fabformer build``
    does (the digits model: the fastest setting is over on DSPs after synthesis, the next one is
    placed and routed; about 20 minutes on 2 cores)."""
    from fabformer.boards.build import build
    out = Path(ctx["out"]) / "board"
    rep = build(ctx["graph"], DEMO_BOARD, out)
    if not ctx.get("json"):
        print(_text(rep))
    keep = ("board", "bitstream", "fmax_mhz", "clock_mhz", "resources", "latency_cycles", "latency_ns",
            "throughput_inferences_per_s", "ii_cycles", "timing_met", "multipliers")
    step = {k: rep[k] for k in keep}
    if not ctx.get("quick"):  # the small board: the compact architecture, at the board's 12 MHz oscillator
        from fabformer.boards.build import build_arch
        from fabformer.errors import FabformerError
        try:
            ice = build_arch(ctx["graph"], "icebreaker", Path(ctx["out"]) / "icebreaker", arch="auto", clock_mhz=12)
            if not ctx.get("json"):
                print(_text(ice))
            step["icebreaker"] = {k: ice[k] for k in keep if k in ice}
        except FabformerError as e:  # the ULX3S bitstream stands; say why the small board has none
            step["icebreaker"] = {"error": str(e)}
            print(f"fabformer demo: icebreaker build failed: {e}")
    return "board", step
