"""Accuracy, agreement and error of a graph (golden and float) and its source model (Keras or PyTorch) on a
data set.  The source model's entries are named by its framework: ``keras`` or ``pytorch``."""
from __future__ import annotations

import numpy as np


def framework(model=None, graph=None) -> str:
    """``"pytorch"`` for a PyTorch model (or, without a model, a graph the PyTorch frontend made), else
    ``"keras"``: the name of the source model's column in evaluations and reports."""
    from fabformer.frontend.pytorch import is_torch_model
    if model is not None:
        return "pytorch" if is_torch_model(model) else "keras"
    meta = getattr(graph, "meta", None) or {}
    return "pytorch" if meta.get("frontend") == "torch" else "keras"


def evaluate(graph, data, model=None) -> dict:
    """``data``: :class:`fabformer.apps.data.Data`.  Accuracy needs labels; agreement (argmax) and the
    largest absolute output difference are given with or without them."""
    x, y = data.x, data.y
    g_out = np.asarray(graph.predict(x))
    f_out = np.asarray(graph.predict(x, mode="float"))
    res = {"data": data.source, "samples": int(len(x)), "labels": y is not None, "accuracy": {},
           "agreement": {"golden_vs_float": float(np.mean(np.argmax(g_out, -1) == np.argmax(f_out, -1)))},
           "max_abs_error": {"golden_vs_float": float(np.max(np.abs(g_out - f_out))) if len(x) else 0.0}}
    if y is not None:
        res["accuracy"]["float"] = float(np.mean(np.argmax(f_out, -1) == y))
        res["accuracy"]["golden"] = float(np.mean(np.argmax(g_out, -1) == y))
    if model is not None:
        fw = framework(model)
        k_out = np.asarray(model.predict(x, verbose=0, batch_size=512))
        if k_out.shape != g_out.shape:
            from fabformer.errors import FabformerError
            raise FabformerError(f"the {'PyTorch' if fw == 'pytorch' else 'Keras'} model's output shape "
                                 f"{k_out.shape[1:]} differs from the graph's "
                                 f"{g_out.shape[1:]}: it is not the graph's model (give the right --model)")
        if y is not None:
            res["accuracy"][fw] = float(np.mean(np.argmax(k_out, -1) == y))
        res["agreement"][f"golden_vs_{fw}"] = float(np.mean(np.argmax(g_out, -1) == np.argmax(k_out, -1)))
        res["agreement"][f"float_vs_{fw}"] = float(np.mean(np.argmax(f_out, -1) == np.argmax(k_out, -1)))
        res["max_abs_error"][f"golden_vs_{fw}"] = float(np.max(np.abs(g_out - k_out))) if len(x) else 0.0
    return res
