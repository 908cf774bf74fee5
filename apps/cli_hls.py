"""``fabformer hls``: write a Vitis HLS project for a graph, optionally C-simulate it."""
from __future__ import annotations

import time

DEMO_ORDER = 20
DEMO_STEP = "hls"
DEMO_TITLE = "HLS: C++ project, g++ C-simulation vs golden"


from fabformer.apps.common import add_data_argument, positive_int


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


def csim(graph, out, config=None, samples=None, data=None) -> dict:
    """Write, compile and C-simulate ``graph`` on ``data`` (see :func:`fabformer.apps.data.data_for`);
    compare with golden."""
    import numpy as np
    from fabformer.apps.data import data_for
    from fabformer.hls.project import write
    d = data_for(graph, data, samples)
    x = d.x
    t0 = time.perf_counter()
    prj = write(graph, out, config, tb_inputs=x[:64])
    gen_s = time.perf_counter() - t0
    prj.compile()
    _, env = graph.predict(x, trace=True)
    got = prj.predict(x, raw=True)
    outs = got if isinstance(got, list) else [got]
    bad = np.zeros(len(x), dtype=bool)
    first = None
    for name, o in zip(graph.outputs, outs):
        diff = (o != np.asarray(env[name])).reshape(len(x), -1)
        bad |= diff.any(axis=1)
        if first is None and diff.any():
            s, i = map(int, np.argwhere(diff)[0])
            first = {"tensor": name, "sample": s, "index": i,
                     "expected": int(np.asarray(env[name]).reshape(len(x), -1)[s, i]),
                     "actual": int(o.reshape(len(x), -1)[s, i])}
    res = {"project": str(prj.path), "samples": int(len(x)), "inputs": d.source, "bit_exact": not bad.any(),
           "mismatches": int(bad.sum()), "compile_seconds": round(prj.compile_seconds, 2),
           "compile_cached": bool(getattr(prj, "compile_cached", False)),
           "write_seconds": round(gen_s, 3)}
    if first:
        res["first_mismatch"] = first
    return res


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


def cmd_hls(args) -> int:
    from fabformer.apps.common import emit
    from fabformer.ir import load
    from fabformer.hls.config import HLSConfig
    from fabformer.hls.project import write
    g = load(args.graph)
    cfg = HLSConfig.from_file(args.config) if args.config else None
    if args.csim:
        from fabformer.apps.console import current
        with current().step("HLS project, g++ build, C-simulation"):
            r = csim(g, args.output, cfg, args.samples, args.data)
    else:
        r = {"project": str(write(g, args.output, cfg).path)}
    emit(args, r, _text(r))
    return 0 if r.get("bit_exact", True) else 1


def demo(ctx):
    r = csim(ctx["graph"], ctx["out"] / "hls", samples=100 if ctx.get("quick") else None)
    if not ctx.get("json"):
        print(_text(r))
    return "hls", {k: r[k] for k in ("samples", "bit_exact", "mismatches", "compile_seconds", "compile_cached")}
