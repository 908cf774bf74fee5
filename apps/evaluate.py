"""Accuracy, agreement and error of a graph (golden and float) and its Keras model on a data set."""
from __future__ import annotations

import numpy as np


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
        k_out = np.asarray(model.predict(x, verbose=0, batch_size=512))
        if k_out.shape != g_out.shape:
            from fabformer.errors import FabformerError
            raise FabformerError(f"the Keras model's output shape {k_out.shape[1:]} differs from the graph's "
                                 f"{g_out.shape[1:]}: it is not the graph's model (give the right --model)")
        if y is not None:
            res["accuracy"]["keras"] = float(np.mean(np.argmax(k_out, -1) == y))
        res["agreement"]["golden_vs_keras"] = float(np.mean(np.argmax(g_out, -1) == np.argmax(k_out, -1)))
        res["agreement"]["float_vs_keras"] = float(np.mean(np.argmax(f_out, -1) == np.argmax(k_out, -1)))
        res["max_abs_error"]["golden_vs_keras"] = float(np.max(np.abs(g_out - k_out))) if len(x) else 0.0
    return res
