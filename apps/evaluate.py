"""Accuracy and agreement of a graph (golden and float) and its Keras model on a data set."""
from __future__ import annotations

from fabformer.apps.data import digits


def evaluate(graph, model=None, samples: int | None = None) -> dict:
    """Accuracy of the Keras model, the float graph and the golden model on the digits test split."""
    import numpy as np
    d = digits()
    x, y = d.x_test, d.y_test
    if samples:
        x, y = x[:samples], y[:samples]
    g_out = graph.predict(x)
    f_out = graph.predict(x, mode="float")
    res = {"samples": int(len(y)), "accuracy": {
        "float": float(np.mean(np.argmax(f_out, -1) == y)),
        "golden": float(np.mean(np.argmax(g_out, -1) == y))}, "agreement": {}}
    if model is not None:
        k_out = np.asarray(model.predict(x, verbose=0, batch_size=512))
        res["accuracy"]["keras"] = float(np.mean(np.argmax(k_out, -1) == y))
        res["agreement"]["golden_vs_keras"] = float(np.mean(np.argmax(g_out, -1) == np.argmax(k_out, -1)))
        res["agreement"]["float_vs_keras"] = float(np.mean(np.argmax(f_out, -1) == np.argmax(k_out, -1)))
    return res
