"""The ``fabformer`` command line.

Core commands live here; each backend adds its own through a plugin module
that defines ``register(subparsers)`` (and optionally ``demo(ctx) -> (name, dict)`` with
an integer ``DEMO_ORDER`` to add a step to ``fabformer demo``, ``DEMO_TITLE`` for its
progress line and ``DEMO_STEP``, the name it returns, for its summary row when it fails).

Every command runs inside :func:`fabformer.apps.console.capture` (library logs, warnings and
tool output to ``fabformer.log`` in its output folder; ``--verbose``: to stderr) with a
:class:`~fabformer.apps.console.Console` for progress (silent under ``--json``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
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
    from fabformer.apps.console import current
    cfg = ConvertConfig.from_file(args.config) if args.config else None
    with current().step(f"load {model_path.name}"):
        model = load_model(model_path, args.allow_custom_code)
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
    with current().step("convert: range analysis, fixed-point types"):
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


NEXT_COMMANDS = [
    ("fabformer convert MODEL.h5 -o my.graph.json --data my_data.npz",
     "your Keras/QKeras model to a graph (my_data.npz: inputs x, labels y)"),
    ("fabformer eval my.graph.json --data my_data.npz", "accuracy of the source model, float graph and golden"),
    ("fabformer hls my.graph.json -o out/my-hls --csim --data my_data.npz",
     "Vitis HLS project, C-simulated against golden"),
    ("fabformer sim my.graph.json -o out/my-rtl --data my_data.npz", "Verilog, simulated in Verilator against golden"),
    ("fabformer build my.graph.json --board ulx3s-85f -o out/my-board --json > out/my-board.json",
     "bitstream and its figures"),
    ("fabformer report my.graph.json --data my_data.npz --board-json out/my-board.json -o out/my-report",
     "accuracy, speed and size side by side, with that board"),
]


def _demo_graph(args, out: Path, con):
    """(graph, model, model_path, summary row) of the demo: the shipped example, or ``--graph``."""
    from fabformer import convert
    from fabformer.apps.data import DIGITS_SOURCE, digits, file_digest
    if args.graph:
        from fabformer.ir import load
        g = load(args.graph)
        gpath = g.save(out / f"{g.name}.graph.json")
        return g, None, None, _row("graph", "ok", f"{len(g.nodes)} nodes, {g.macs():,} MACs", gpath)
    model_path = EXAMPLE_DIR / "model_q8.h5"
    with con.step(f"convert the example QKeras model {model_path.name}") as s:
        model = load_model(model_path)
        g = convert(model, calibration=digits().x_train)
        g = g.with_meta(source_model=str(model_path), source_model_sha256=file_digest(model_path),
                        calibration_source=f"{DIGITS_SOURCE} (train split)")
        gpath = g.save(out / "digits.graph.json")
        s.done(f"{len(g.nodes)} nodes, {g.macs():,} MACs")
    return g, model, model_path, _row("convert", "ok", f"{len(g.nodes)} nodes, {g.macs():,} MACs", gpath)


def _row(step: str, status: str, figure: str, files) -> dict:
    return {"step": step, "status": status, "figure": figure, "files": None if files is None else str(files)}


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def _demo_row(name: str, step: dict, out: Path) -> dict:
    """One line of the demo's summary for a plugin's step result."""
    folder = {"hls": out / "hls", "rtl": out / "rtl", "board": out / "board", "report": out / "report"}.get(
        name, out / name)
    if "error" in step:
        return _row(name, "failed", str(step["error"]).splitlines()[0][:100], folder)
    if name == "hls":
        how = "build cached" if step.get("compile_cached") else f"compiled in {step.get('compile_seconds')} s"
        ok = "bit exact" if step.get("bit_exact") else f"{step.get('mismatches')} samples MISMATCH"
        return _row(name, "ok" if step.get("bit_exact") else "mismatch",
                    f"C-sim {ok} on {step.get('samples')} samples ({how})", folder)
    if name == "rtl":
        ok = "bit exact" if step.get("bit_exact") else f"{step.get('mismatches')} samples MISMATCH"
        return _row(name, "ok" if step.get("bit_exact") else "mismatch",
                    f"{ok} on {step.get('samples')} samples; latency {step.get('latency_cycles')} cycles, "
                    f"II {step.get('ii_cycles')} cycles", step.get("verilog") or folder)
    if name == "board":
        res = step.get("resources") or {}
        used = {k: (v.get("used") if isinstance(v, dict) else v) for k, v in res.items()}
        clock, fmax = (f"{v:g}" if isinstance(v, (int, float)) else "?" for v in (step.get("clock_mhz"),
                                                                                   step.get("fmax_mhz")))
        parts = [f"{clock} MHz clock (Fmax {fmax} MHz)"] + \
            [f"{used[k]:,} {k.upper()}s" for k in ("lut", "dsp") if used.get(k) is not None]
        return _row(name, "ok", ", ".join(parts), step.get("bitstream") or folder)
    if name == "report":
        acc = step.get("accuracy") or {}
        shown = [f"{k} {_pct(acc[k])}" for k in ("keras", "pytorch", "golden", "csim", "rtl") if acc.get(k) is not None]
        return _row(name, "ok", "accuracy " + ", ".join(shown) if shown else "", step.get("html") or folder)
    return _row(name, "ok", "", folder)


def _print_summary(rows: list[dict], log) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    con = Console(file=sys.stdout, highlight=False, soft_wrap=False,
                  width=None if sys.stdout.isatty() else 140)
    t = Table(title="fabformer demo: summary", title_justify="left")
    for h in ("step", "status", "key figure", "files"):
        t.add_column(h, overflow="fold")
    for r in rows:
        st = r["status"]
        t.add_row(Text(r["step"]), Text(st, style="green" if st == "ok" else "red"), Text(r["figure"]),
                  Text(r["files"] or ""))
    con.print(t)
    if log:
        con.print(f"library logs and warnings: {log}", markup=False)
    con.print("Next, on your own model:", markup=False)
    for cmd, what in NEXT_COMMANDS:
        con.print(f"  {cmd}", markup=False)
        con.print(f"      {what}", style="dim", markup=False)


def cmd_demo(args) -> int:
    from fabformer.apps.console import current
    from fabformer.outdir import prepare_dir
    con = current()
    out = prepare_dir(Path(args.output))
    if getattr(args, "log_file", None):
        con.print(f"log of libraries and tools: {args.log_file}", style="dim")
    g, model, model_path, first = _demo_graph(args, out, con)
    rows = [first]
    if not args.json:
        print(g.summary())
    from fabformer.apps.data import data_for
    data = data_for(g)
    with con.step(f"evaluate: golden and float graph on the {data.source}") as s:
        ev = evaluate(g, data, model)
        figure = ", ".join(f"{k} {_pct(v)}" for k, v in ev["accuracy"].items()) or \
            f"golden vs float argmax agreement {_pct(ev['agreement']['golden_vs_float'])} (no labels)"
        s.done(figure)
    res = {"graph": first["files"], **ev}
    rows.append(_row("evaluate", "ok", figure, None))
    if not args.json:
        print(_eval_text(ev))
    ctx = {"graph": g, "graph_path": Path(first["files"]), "model": model, "model_path": model_path, "out": out,
           "json": args.json, "quick": args.quick}
    for mod in sorted((m for m in _plugins() if hasattr(m, "demo")), key=lambda m: getattr(m, "DEMO_ORDER", 100)):
        short = mod.__name__.split(".")[-1].removeprefix("cli_")
        try:
            with con.step(getattr(mod, "DEMO_TITLE", short)):
                name, step = mod.demo(ctx)
        except FabformerError as e:  # one failing backend step does not hide the others
            name, step = getattr(mod, "DEMO_STEP", short), {"error": str(e)}
            print(f"fabformer demo: {name} step failed: {e}", file=sys.stderr)
        res[name] = step
        ctx[name] = step
        rows.append(_demo_row(name, step, out))
    res["summary"] = rows
    log = getattr(args, "log_file", None)
    if args.json:
        print(json.dumps(res, indent=1, sort_keys=True, default=str))
    else:
        _print_summary(rows, log)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


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
    e = sub.add_parser("eval", help="accuracy and agreement of the source model (Keras or PyTorch), float graph "
                                    "and golden on a data set")
    e.add_argument("graph")
    e.add_argument("--model", help="Keras or PyTorch (.pt2) model to compare with (default: the graph's source "
                                   "model, if unchanged)")
    add_data_argument(e)
    add_custom_code_argument(e)
    e.add_argument("--samples", type=positive_int, help="first N samples")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)
    d = sub.add_parser("demo", help="the whole pipeline on the shipped digits example")
    d.add_argument("-o", "--output", default="out/demo")
    d.add_argument("--quick", action="store_true", help="fewer samples in the slow steps")
    d.add_argument("--graph", help="a graph file to run instead of the shipped digits example (on random inputs "
                   "unless it was made from the example)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
    for mod in _plugins():
        mod.register(sub)
    for sp in sub.choices.values():
        sp.add_argument("--verbose", action="store_true",
                        help="show library logs and third-party warnings here instead of in the log file")
    return p


FILE_OUTPUT = {"convert"}  # commands whose -o is a file, not a folder


def _log_file(args) -> Path:
    """The command's log: ``fabformer.log`` in its output folder (prepared here, so a foreign folder
    is refused before anything runs), else one in the temporary folder."""
    from fabformer.outdir import LOG, prepare_dir
    if getattr(args, "output", None) and args.command not in FILE_OUTPUT:
        return prepare_dir(args.output) / LOG
    import tempfile
    return Path(tempfile.gettempdir()) / f"fabformer-{os.getuid() if hasattr(os, 'getuid') else 0}" / \
        f"{args.command}.log"


def main(argv=None) -> int:
    from fabformer.apps.console import Console, capture, using
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = False  # progress goes to stderr; with --json, stdout holds the JSON object alone
    log = None
    try:
        log = None if args.verbose else _log_file(args)
        args.log_file = log
        with capture(log, verbose=args.verbose), using(Console(quiet=quiet)):
            return args.func(args)
    except FabformerError as e:
        print(f"fabformer {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:  # the demo names its log first and in its summary
        if log is not None and not quiet and args.command != "demo" and log.is_file() and log.stat().st_size:
            print(f"log of libraries and tools: {log}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
