"""The ``fabformer`` command line.

Core commands live here; each backend adds its own through a plugin module
that defines ``register(subparsers)`` (and optionally ``demo(ctx) -> dict`` with
an integer ``DEMO_ORDER`` to add a step to ``fabformer demo``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from fabformer.apps.common import EXAMPLE_DIR, emit, load_model
from fabformer.apps.evaluate import evaluate
from fabformer.errors import FabformerError

PLUGINS = [
    "fabformer.apps.cli_hls",
    "fabformer.apps.cli_sim",
    "fabformer.apps.cli_boards",
    "fabformer.apps.cli_compress",
    "fabformer.apps.cli_report",
    "fabformer.apps.cli_explore",
]


UNAVAILABLE: dict = {}  # plugin module -> why it is not available here


def _plugins():
    mods = []
    for name in PLUGINS:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            missing = e.name or ""
            if missing.startswith("fabformer") and not (name == missing or name.startswith(missing + ".")):
                raise  # a broken fabformer module is a bug, not a missing extra
            UNAVAILABLE[name] = f"needs the Python package {missing!r} (pip install 'fabformer[all]')"
    return mods






def _eval_text(r: dict) -> str:
    rows = [f"digits test split: {r['samples']} samples"]
    for k, v in r["accuracy"].items():
        rows.append(f"  accuracy {k:<8} {100 * v:6.2f} %")
    for k, v in r["agreement"].items():
        rows.append(f"  agreement {k:<16} {100 * v:6.2f} %")
    return "\n".join(rows)


def cmd_convert(args) -> int:
    from fabformer import convert
    from fabformer.frontend.config import ConvertConfig
    from fabformer.apps.data import digits
    model = load_model(args.model)
    cfg = ConvertConfig.from_file(args.config) if args.config else None
    g = convert(model, config=cfg, calibration=digits().x_train)
    g.save(args.output)
    emit(args, {"graph": str(args.output), "nodes": len(g.nodes), "macs": g.macs(), **g.weight_stats()},
         g.summary() + f"\nwrote {args.output}")
    return 0


def cmd_eval(args) -> int:
    from fabformer.ir import load
    g = load(args.graph)
    model_path = args.model or g.meta.get("source_model")
    model = None
    if model_path:
        p = Path(model_path)
        if not p.is_absolute() and not p.exists():
            p = Path(args.graph).resolve().parent / model_path
        model = load_model(p)
    r = evaluate(g, model, args.samples)
    emit(args, r, _eval_text(r))
    return 0


def cmd_demo(args) -> int:
    from fabformer import convert
    from fabformer.apps.data import digits
    out = Path(args.output)
    from fabformer.outdir import prepare_dir
    prepare_dir(out)
    model_path = EXAMPLE_DIR / "model_q8.h5"
    model = load_model(model_path)
    g = convert(model, calibration=digits().x_train)
    g = g.with_meta(source_model=str(model_path))
    gpath = g.save(out / "digits.graph.json")
    if not args.json:
        print(g.summary())
    res = {"graph": str(gpath), **evaluate(g, model)}
    if not args.json:
        print(_eval_text(res))
    ctx = {"graph": g, "graph_path": gpath, "model": model, "model_path": model_path, "out": out,
           "json": args.json, "quick": args.quick}
    for mod in sorted((m for m in _plugins() if hasattr(m, "demo")), key=lambda m: getattr(m, "DEMO_ORDER", 100)):
        try:
            name, step = mod.demo(ctx)
        except FabformerError as e:  # one failing backend step does not hide the others
            name, step = mod.__name__.split(".")[-2 if mod.__name__.endswith(".cli") else -1], {"error": str(e)}
            print(f"fabformer demo: {name} step failed: {e}", file=sys.stderr)
        res[name] = step
        ctx[name] = step
    if args.json:
        print(json.dumps(res, indent=1, sort_keys=True, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fabformer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert a Keras/QKeras model (.h5) to a graph file")
    c.add_argument("model")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--config", help="JSON precision config (see README)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_convert)
    e = sub.add_parser("eval", help="accuracy of Keras, float graph and golden on the digits test split")
    e.add_argument("graph")
    e.add_argument("--model", help="Keras model to compare with (default: the graph's source model)")
    e.add_argument("--samples", type=int)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)
    d = sub.add_parser("demo", help="the whole pipeline on the shipped digits example")
    d.add_argument("-o", "--output", default="out/demo")
    d.add_argument("--quick", action="store_true", help="fewer samples in the slow steps")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
    for mod in _plugins():
        mod.register(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FabformerError as e:
        print(f"fabformer {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
