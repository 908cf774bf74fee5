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
    rows = [f"{r['data']}: {r['samples']} samples" + ("" if r["labels"] else " (no labels: agreement and error only)")]
    for k, v in r["accuracy"].items():
        rows.append(f"  accuracy {k:<8} {100 * v:6.2f} %")
    for k, v in r["agreement"].items():
        rows.append(f"  agreement {k:<16} {100 * v:6.2f} %")
    for k, v in r.get("max_abs_error", {}).items():
        rows.append(f"  max |error| {k:<14} {v:.4g}")
    if r.get("note"):
        rows.append(f"  note: {r['note']}")
    return "\n".join(rows)


def _is_example_model(path) -> bool:
    try:
        return Path(path).resolve().parent == EXAMPLE_DIR.resolve()
    except OSError:
        return False


def cmd_convert(args) -> int:
    import os
    from fabformer import convert
    from fabformer.apps.data import DIGITS_SOURCE, digits, file_digest, load_data
    from fabformer.frontend.config import ConvertConfig
    model_path, out = Path(args.model), Path(args.output)
    if out.exists() and model_path.exists() and out.resolve() == model_path.resolve():
        raise FabformerError(f"convert -o {str(out)!r} would write over its input model; choose another path")
    model = load_model(model_path, args.allow_custom_code)
    cfg = ConvertConfig.from_file(args.config) if args.config else None
    if args.data:
        data = load_data(args.data)
        calib, source = data.x, f"file {data.source}"
    elif _is_example_model(model_path):
        calib = digits().x_train
        source = f"{DIGITS_SOURCE} (train split, {len(calib)} samples)"
    else:
        calib, source = None, None
        print("fabformer convert: warning: no --data: layer ranges without a quantizer come from 256 standard-normal "
              "samples, a guess that saturates inputs off unit scale; give --data FILE with real inputs",
              file=sys.stderr)
    g = convert(model, config=cfg, calibration=calib)
    meta = {"source_model_sha256": file_digest(model_path)}
    try:
        meta["source_model"] = os.path.relpath(model_path.resolve(), out.resolve().parent)
    except ValueError:  # another drive
        meta["source_model"] = str(model_path.resolve())
    if source:
        meta["calibration_source"] = source
    g = g.with_meta(**meta)
    g.save(out)
    emit(args, {"graph": str(out), "nodes": len(g.nodes), "macs": g.macs(), **g.weight_stats(),
                "calibration_source": g.meta.get("calibration_source")},
         g.summary() + f"\ncalibration: {g.meta.get('calibration_source')}\nwrote {out}")
    return 0


def cmd_eval(args) -> int:
    from fabformer.apps.common import source_model
    from fabformer.apps.data import data_for
    from fabformer.ir import load
    g = load(args.graph)
    data = data_for(g, args.data, args.samples, need="labels" if not args.data else "inputs")
    model_path, note = source_model(g, args.graph, args.model)
    model = load_model(model_path, args.allow_custom_code) if model_path else None
    r = evaluate(g, data, model)
    if note:
        r["note"] = note
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
    from fabformer.apps.data import DIGITS_SOURCE, file_digest
    g = g.with_meta(source_model=str(model_path), source_model_sha256=file_digest(model_path),
                    calibration_source=f"{DIGITS_SOURCE} (train split)")
    gpath = g.save(out / "digits.graph.json")
    if not args.json:
        print(g.summary())
    from fabformer.apps.data import data_for
    res = {"graph": str(gpath), **evaluate(g, data_for(g), model)}
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
    from fabformer import __version__
    from fabformer.apps.common import add_custom_code_argument, add_data_argument, positive_int
    p = argparse.ArgumentParser(prog="fabformer", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"fabformer {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert a Keras/QKeras model (.h5, .keras) to a graph file")
    c.add_argument("model")
    c.add_argument("-o", "--output", required=True, help="graph file (new, or a graph file fabformer wrote)")
    c.add_argument("--config", help="JSON precision config (see README)")
    add_data_argument(c, "calibration inputs for layer ranges")
    add_custom_code_argument(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_convert)
    e = sub.add_parser("eval", help="accuracy and agreement of Keras, float graph and golden on a data set")
    e.add_argument("graph")
    e.add_argument("--model", help="Keras model to compare with (default: the graph's source model, if unchanged)")
    add_data_argument(e)
    add_custom_code_argument(e)
    e.add_argument("--samples", type=positive_int, help="first N samples")
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
