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

__all__ = ["as_batch", "as_batches", "flat_batch", "random_inputs", "golden_io", "hardware_input",
           "hardware_inputs", "input_frame"]


def as_batches(graph, x, xp=None) -> list:
    """:func:`as_batch` for every graph input: a list of float64 arrays, one per input in
    ``graph.inputs`` order, with the same number of samples.

    A graph with several inputs takes a list (or tuple) with one array per input in that order,
    or a dict by input name; a graph with one input takes what :func:`as_batch` takes."""
    names = list(graph.inputs)
    if len(names) == 1:
        if isinstance(x, dict):
            if set(x) != set(names):
                raise FabformerError(f"inputs given by name must be exactly {names}, got {sorted(x)}")
            x = x[names[0]]
        return [_one_batch(graph, names[0], x, xp)]
    if isinstance(x, dict):
        if set(x) != set(names):
            missing, extra = sorted(set(names) - set(x)), sorted(set(x) - set(names))
            raise FabformerError(f"inputs by name: the model's inputs are {names}; missing {missing}, "
                                 f"unknown {extra}")
        parts = [x[n] for n in names]
    elif isinstance(x, (list, tuple)) and len(x) == len(names):
        parts = list(x)
    else:
        raise FabformerError(f"the model has {len(names)} inputs {names}: give a list of {len(names)} arrays in "
                             f"that order, or a dict by input name")
    out = [_one_batch(graph, n, v, xp if not isinstance(v, (list, tuple)) else None) for n, v in zip(names, parts)]
    sizes = {int(v.shape[0]) for v in out}
    if len(sizes) > 1:
        raise FabformerError(f"the inputs {names} hold different numbers of samples: "
                             f"{[int(v.shape[0]) for v in out]}")
    return out


def flat_batch(graph, x) -> np.ndarray:
    """Every input of each sample flattened and joined in ``graph.inputs`` order: ``(batch, total)``
    (the C-simulation's and the testbench's input vectors)."""
    xs = as_batches(graph, x)
    n = xs[0].shape[0]
    return np.concatenate([np.asarray(v).reshape(n, int(np.prod(v.shape[1:]))) for v in xs], axis=1)


def as_batch(graph, x, xp=None):
    """The one input check of every path (golden, C-simulation, RTL simulation, boards).

    ``x``: an array (NumPy, or a GPU array with ``xp`` its namespace), a Python list, or one
    sample without the batch axis; any real dtype.  Returns a float64 array
    ``(batch, *input shape)`` (a batch may be empty).  A wrong shape, a non-numeric value, or
    NaN/inf (no fixed-point value represents them) raises :class:`FabformerError` naming the
    input and, for NaN/inf, the first sample that has one.
    """
    if len(graph.inputs) != 1:
        return as_batches(graph, x, xp)
    return _one_batch(graph, graph.inputs[0], x, xp)


def _one_batch(graph, name, x, xp=None):
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
        first = int(xp.argmax(per_sample))  # the first sample with one
        raise FabformerError(f"input {name!r} sample {first} holds NaN or inf; fixed-point hardware has no "
                             f"such values (replace them before inference)")
    return x


def random_inputs(g, n: int, seed: int = 0, scale: float = 4.0):
    """Inputs spread over (and beyond) the input type's range, so saturation happens (a list, one
    array per input, when the graph has several: integer inputs get integers over their type's
    range and beyond)."""
    rng = np.random.default_rng(seed)
    out = []
    for name in g.inputs:
        shape = (n,) + tuple(g.tensors[name].shape)
        q = [op for op in g.nodes if op.kind == "quantize" and op.inputs[0] == name]
        t = g.type_of(q[0].output) if q else None
        if t is not None and t.frac <= 0:  # integers (token ids, 0/1 masks): whole numbers
            out.append(rng.integers(t.min_int - 1, t.max_int + 2, shape).astype(np.float64))
        else:
            out.append(rng.uniform(-scale, scale, shape))
    return out[0] if len(out) == 1 else out


def hardware_inputs(graph) -> list[str]:
    """The tensors the hardware reads, one per graph input (its quantize node's output), in order."""
    out = []
    for name in graph.inputs:
        q = [n for n in graph.nodes if n.kind == "quantize" and n.inputs[0] == name]
        if not q:
            raise FabformerError(f"graph {graph.name!r} has no quantize node on its input {name!r}")
        out.append(q[0].output)
    return out


def input_frame(graph):
    """How several inputs travel on the hardware's one input stream: a sample is every input's rows
    (last-axis rows), one input after the other in ``graph.inputs`` order, each element shifted
    to a common type that holds every input exactly (the widest integer part, the largest frac),
    rows padded with zeros to the widest row.  Returns ``(common type, [(tensor, rows, cols, type)])``."""
    from .fixed import FixedType
    parts = []
    for t in hardware_inputs(graph):
        shape = tuple(graph.tensors[t].shape)
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        parts.append((t, rows, int(shape[-1]) if shape else 1, graph.type_of(t)))
    types = [p[3] for p in parts]
    if len(parts) == 1:
        return types[0], parts
    signed = any(t.signed for t in types)
    frac = max(t.frac for t in types)
    ints = max(t.integer + (1 if signed and not t.signed else 0) for t in types)
    return FixedType(max(ints + frac, 2), frac, signed), parts


def hardware_input(graph) -> str:
    """The tensor the hardware reads: the output of the quantize node on the graph input."""
    q = [n for n in graph.nodes if n.kind == "quantize" and n.inputs[0] == graph.inputs[0]]
    if not q:
        raise FabformerError(f"graph {graph.name!r} has no quantize node on its input {graph.inputs[0]!r}")
    return q[0].output


def golden_io(graph, x, out_tensor: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input mantissas, output mantissas) of the hardware part of ``graph`` for float inputs ``x``."""
    if len(graph.inputs) == 1:
        _, trace = graph.predict(np.asarray(x), trace=True)
        return np.asarray(trace[hardware_input(graph)]), np.asarray(trace[out_tensor or graph.outputs[0]])
    _, trace = graph.predict(x, trace=True)
    common, parts = input_frame(graph)
    cols = max(p[2] for p in parts)
    rows = []
    for t, r, c, ty in parts:
        m = np.asarray(trace[t]).reshape(-1, r, c) << (common.frac - ty.frac)
        rows.append(np.pad(m, ((0, 0), (0, 0), (0, cols - c))))
    return np.concatenate(rows, axis=1), np.asarray(trace[out_tensor or graph.outputs[0]])
