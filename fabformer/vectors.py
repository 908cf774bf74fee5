"""Test vectors for the hardware paths: random inputs, and the golden model's
hardware-side input and output mantissas.

The hardware (HLS top, RTL, the board shell) starts after the graph's quantize
node: its input is that node's output mantissas and its output the graph
output's mantissas.  One definition, used by the RTL simulation, the board shell
and the host driver.
"""
from __future__ import annotations

import numpy as np

from .errors import FabformerError

__all__ = ["as_batch", "random_inputs", "golden_io", "hardware_input"]


def as_batch(graph, x, xp=None):
    """The one input check of every path (golden, C-simulation, RTL simulation, boards).

    ``x``: an array (NumPy, or a GPU array with ``xp`` its namespace), a Python list, or one
    sample without the batch axis; any real dtype.  Returns a float64 array
    ``(batch, *input shape)`` (a batch may be empty).  A wrong shape, a non-numeric value, or
    NaN/inf (no fixed-point value represents them) raises :class:`FabformerError` naming the
    input and, for NaN/inf, the first sample that has one.
    """
    (name,) = graph.inputs
    shape = tuple(graph.tensors[name].shape)
    if xp is None or isinstance(x, (list, tuple)):
        xp = np
    try:
        x = xp.asarray(x, dtype=xp.float64)
    except (TypeError, ValueError) as e:
        raise FabformerError(f"input {name!r} must be numbers of shape (batch, {', '.join(map(str, shape))}): "
                             f"{e}") from None
    if tuple(x.shape[1:]) != shape:
        if tuple(x.shape) == shape:
            x = xp.reshape(x, (1,) + shape)
        elif tuple(x.shape) == (0,):  # an empty list
            x = xp.reshape(x, (0,) + shape)
        else:
            raise FabformerError(f"input {name!r} expects shape (batch, {', '.join(map(str, shape))}), "
                                 f"got {tuple(x.shape)}")
    bad = ~xp.isfinite(x)
    if bool(xp.any(bad)):
        per_sample = xp.any(xp.reshape(bad, (x.shape[0], -1)), axis=1)
        first = int(np.argmax(np.asarray(per_sample if xp is np else per_sample.get()
                                         if hasattr(per_sample, "get") else per_sample)))
        raise FabformerError(f"input {name!r} sample {first} holds NaN or inf; fixed-point hardware has no "
                             f"such values (replace them before inference)")
    return x


def random_inputs(g, n: int, seed: int = 0, scale: float = 4.0) -> np.ndarray:
    """Inputs spread over (and beyond) the input type's range, so saturation happens."""
    rng = np.random.default_rng(seed)
    shape = g.tensors[g.inputs[0]].shape
    return rng.uniform(-scale, scale, (n,) + tuple(shape))


def hardware_input(graph) -> str:
    """The tensor the hardware reads: the output of the quantize node on the graph input."""
    q = [n for n in graph.nodes if n.kind == "quantize" and n.inputs[0] == graph.inputs[0]]
    if not q:
        raise FabformerError(f"graph {graph.name!r} has no quantize node on its input {graph.inputs[0]!r}")
    return q[0].output


def golden_io(graph, x, out_tensor: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input mantissas, output mantissas) of the hardware part of ``graph`` for float inputs ``x``."""
    _, trace = graph.predict(np.asarray(x), trace=True)
    return np.asarray(trace[hardware_input(graph)]), np.asarray(trace[out_tensor or graph.outputs[0]])
