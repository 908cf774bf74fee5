"""``fabformer hls``: write a Vitis HLS project for a graph, optionally C-simulate it."""
from __future__ import annotations

DEMO_ORDER = 20


def register(sub) -> None:
    p = sub.add_parser("hls", help="write a Vitis HLS C++ project for a graph (and C-simulate it)")
    p.add_argument("graph", help="graph file (from fabformer convert)")
    p.add_argument("-o", "--output", required=True, help="project folder (new, or one fabformer made)")
    p.add_argument("--config", help="JSON HLS config (keys of fabformer.hls.HLSConfig)")
    p.add_argument("--csim", action="store_true",
                   help="compile with g++ and check bit for bit against golden on the digits test split")
    p.add_argument("--samples", type=int, help="test samples used by --csim (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_hls)


def _digits_test(samples=None):
    """The inputs ``--csim`` checks: the digits test split (the first ``samples``)."""
    from fabformer.apps.data import digits
    x = digits().x_test
    return x[:samples] if samples else x


def _text(r: dict) -> str:
    if "samples" not in r:
        return f"wrote HLS project {r['project']}"
    s = (f"wrote HLS project {r['project']}\nC-simulation on {r['samples']} digits test samples: "
         f"{'bit exact' if r['bit_exact'] else 'NOT bit exact'} ({r['mismatches']} mismatching samples), "
         f"compiled in {r['compile_seconds']} s")
    if r.get("first_mismatch"):
        f = r["first_mismatch"]
        s += (f"\nfirst mismatch: {f['tensor']} sample {f['sample']} index {f['index']}: "
              f"expected {f['expected']}, got {f['actual']}")
    return s


def cmd_hls(args) -> int:
    from fabformer.apps.common import emit
    from fabformer.ir import load
    from fabformer.hls import HLSConfig, csim, write
    g = load(args.graph)
    cfg = HLSConfig.from_file(args.config) if args.config else None
    if args.csim:
        r = csim(g, args.output, _digits_test(args.samples), cfg)
    else:
        r = {"project": str(write(g, args.output, cfg).path)}
    emit(args, r, _text(r))
    return 0 if r.get("bit_exact", True) else 1


def demo(ctx):
    from fabformer.hls import csim
    r = csim(ctx["graph"], ctx["out"] / "hls", _digits_test(100 if ctx.get("quick") else None))
    if not ctx.get("json"):
        print(_text(r))
    return "hls", {k: r[k] for k in ("samples", "bit_exact", "mismatches", "compile_seconds")}
