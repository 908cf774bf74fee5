"""``fabformer report``: the hardware-vs-software report (plugin of :mod:`fabformer.apps.cli`)."""
from __future__ import annotations

import json
from pathlib import Path

from fabformer.errors import FabformerError

DEMO_ORDER = 90
DEMO_STEP = "report"
DEMO_TITLE = "report: every path side by side"


def _resolve(path, graph_path):
    p = Path(path)
    if not p.is_absolute() and not p.exists() and graph_path is not None:
        q = Path(graph_path).resolve().parent / p
        if q.exists():
            return q
    return p


def _load_model(path, allow_custom_code=False):
    """(model, None) or (None, reason): a missing TensorFlow makes the keras path unavailable."""
    from fabformer.apps.common import load_model
    try:
        return load_model(path, allow_custom_code), None
    except ImportError as e:
        return None, f"cannot load the Keras model: {e}"


def _float_model_for(model_path):
    """The float Keras model for the bit-width sweep: ``model_float.h5`` beside the source model."""
    if model_path is None:
        return None
    cand = Path(model_path).parent / "model_float.h5"
    return cand if cand.is_file() else None


def _text(r: dict) -> str:
    rows = [f"report: {r['html']}"]
    for name, p in r["paths"].items():
        acc = "—" if p.get("accuracy") is None else f"{100 * p['accuracy']:6.2f} %"
        n = f"{p['samples']} samples" if p.get("samples") else ""
        rows.append(f"  {name:<11} {acc:>9} {n:>12}  {p['status']}")
    for a in r["agreement"]:
        if a["a"] == "golden" or a["b"] == "golden":
            rows.append(f"  {a['a']} vs {a['b']}: argmax {100 * a['argmax']:.2f} %, "
                        f"max |Δlogit| {a['max_abs_dlogit']:.4g}")
    return "\n".join(rows)


def run_report(graph, out, *, model=None, model_path=None, samples=None, rtl_samples=20, device="cpu", board=None,
               sweep=True, quick=False, paths=None, data=None, allow_custom_code=False) -> dict:
    from fabformer.apps.report import make_report
    why = None
    if model is None and model_path is not None:
        model, why = _load_model(model_path, allow_custom_code)
    sweep_model = None
    fm = _float_model_for(model_path) if sweep else None
    if fm is not None:
        sweep_model, _ = _load_model(fm)
    r = make_report(graph, out, model=model, samples=samples, data=data, device=device, rtl_samples=rtl_samples,
                    board=board, sweep=sweep, sweep_model=sweep_model,
                    sweep_model_name=Path(fm).name if sweep_model is not None else None,
                    min_seconds=0.05 if quick else 0.2, paths=paths)
    for src in ("keras", "pytorch"):
        if why and src in r["paths"]:
            r["paths"][src]["status"] = f"unavailable: {why}"
    return r


def cmd_report(args) -> int:
    from fabformer.ir import load
    g = load(args.graph)
    from fabformer.apps.common import source_model
    from fabformer.apps.data import data_for
    if args.model and not Path(args.model).exists():
        raise FabformerError(f"Keras model {args.model!r} (--model) does not exist")
    model_path, note = source_model(g, args.graph, args.model)
    if note:
        import sys
        print(f"fabformer report: note: {note}", file=sys.stderr)
    data = data_for(g, args.data, args.samples, need="labels" if not args.data else "inputs")
    board = None
    if args.board_json:
        try:
            board = json.loads(Path(args.board_json).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FabformerError(f"cannot read --board-json {args.board_json!r}: {e}") from None
        from fabformer.apps.report import board_figures
        board = board_figures(board, source=f"--board-json {args.board_json}")
    r = run_report(g, args.output, model_path=model_path, data=data, rtl_samples=args.rtl_samples,
                   allow_custom_code=args.allow_custom_code,
                   device=args.device, board=board, sweep=not args.no_sweep,
                   paths=[v.strip() for v in args.paths.split(",")] if args.paths else None)
    from fabformer.apps.common import emit
    emit(args, r, _text(r))
    return 0


def register(sub) -> None:
    from fabformer.apps.common import add_custom_code_argument, add_data_argument, positive_int
    p = sub.add_parser("report", help="hardware vs software report: accuracy, agreement, speed, size (md, html, json)")
    p.add_argument("graph")
    p.add_argument("--model", help="Keras model (default: the graph's source model)")
    p.add_argument("--samples", type=positive_int, help="first N samples of the data (default: all)")
    add_data_argument(p)
    add_custom_code_argument(p)
    p.add_argument("--rtl-samples", type=positive_int, default=20, help="samples for RTL simulation (default 20)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="also run float and golden on a GPU")
    p.add_argument("--board-json", help="the output of `fabformer build ... --json` (or its report.json); "
                   "or board figures as JSON: board, clock_mhz, fmax_mhz, resources {lut, ff, dsp, bram}")
    p.add_argument("--paths", help="comma-separated subset of keras,float,golden,float_gpu,golden_gpu,csim,rtl "
                   "(default: all; the GPU ones need --device gpu)")
    p.add_argument("--no-sweep", action="store_true", help="skip accuracy vs weight bit width")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--json", action="store_true", help="print report.json")
    p.set_defaults(func=cmd_report)


def _board_from_ctx(ctx):
    """The demo's board step result (a ``build`` report), when that step built something."""
    b = ctx.get("board")
    if not isinstance(b, dict) or "error" in b:
        return None
    return b


def demo(ctx):
    from fabformer.apps.report import gpu_unavailable_reason
    device = "gpu" if gpu_unavailable_reason() is None else "cpu"
    r = run_report(ctx["graph"], Path(ctx["out"]) / "report", model=ctx.get("model"),
                   model_path=ctx.get("model_path"),
                   rtl_samples=10 if ctx.get("quick") else 50, device=device, board=_board_from_ctx(ctx),
                   quick=bool(ctx.get("quick")))
    if not ctx.get("json"):
        print(_text(r))
    return "report", {"html": r["html"], "json": r["json"], "device": device,
                      "accuracy": {k: v.get("accuracy") for k, v in r["paths"].items()}}
