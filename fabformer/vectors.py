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

__all__ = ["random_inputs", "golden_io", "hardware_input"]


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
