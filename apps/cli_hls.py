"""``fabformer hls``: write a Vitis HLS project for a graph, optionally C-simulate it."""
from __future__ import annotations

from fabformer.apps.common import add_data_argument, positive_int

DEMO_ORDER = 20
DEMO_STEP = "hls"
DEMO_TITLE = "HLS: C++ project, g++ C-simulation vs golden"


def register(sub) -> None:
    p = sub.add_parser("hls", help="write a Vitis HLS C++ project for a graph (and C-simulate it)")
    p.add_argument("graph", help="graph file (from fabformer convert)")
    p.add_argument("-o", "--output", required=True, help="project folder (new, or one fabformer made)")
    p.add_argument("--config", help="JSON HLS config (keys of fabformer.hls.HLSConfig)")
    p.add_argument("--csim", action="store_true",
                   help="compile with g++ and check bit for bit against golden (on --data, the digits test split "
                        "for the shipped example, else random inputs)")
    add_data_argument(p, "inputs for --csim")
    p.add_argument("--samples", type=positive_int, help="samples used by --csim (default: all of --data; 20 random)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_hls)


def _text(r: dict) -> str:
    if "samples" not in r:
        return f"wrote HLS project {r['project']}"
    s = (f"wrote HLS project {r['project']}\nC-simulation on {r['samples']} samples ({r['inputs']}): "
         f"{'bit exact' if r['bit_exact'] else 'NOT bit exact'} ({r['mismatches']} mismatching samples), "
         + (f"compiled in {r['compile_seconds']} s" if not r.get("compile_cached") else "build reused from the cache"))
    if r.get("first_mismatch"):
        f = r["first_mismatch"]
        s += (f"\nfirst mismatch: {f['tensor']} sample {f['sample']} index {f['index']}: "
              f"expected {f['expected']}, got {f['actual']}")
    return s


def _csim(graph, out, config=None, samples=None, data=None) -> dict:
    from fabformer.apps.data import data_for
    from fabformer.hls import csim
    d = data_for(graph, data, samples)
    return {**csim(graph, out, d.x, config), "inputs": d.source}


def cmd_hls(args) -> int:
    from fabformer.apps.common import emit
    from fabformer.hls import HLSConfig, write
    from fabformer.ir import load
    g = load(args.graph)
    cfg = HLSConfig.from_file(args.config) if args.config else None
    if args.csim:
        from fabformer.apps.console import current
        with current().step("HLS project, g++ build, C-simulation"):
            r = _csim(g, args.output, cfg, args.samples, args.data)
    else:
        r = {"project": str(write(g, args.output, cfg).path)}
    emit(args, r, _text(r))
    return 0 if r.get("bit_exact", True) else 1


def demo(ctx):
    r = _csim(ctx["graph"], ctx["out"] / "hls", samples=100 if ctx.get("quick") else None)
    if not ctx.get("json"):
        print(_text(r))
    return "hls", {k: r[k] for k in ("samples", "bit_exact", "mismatches", "compile_seconds", "compile_cached")}
