"""Post-training re-quantization of a graph's weights to another bit width."""
from __future__ import annotations

import math

import numpy as np

from .errors import FabformerError
from .fixed import FixedType, Overflow, Rounding, quantize_float
from .ir import Dense, Graph


def weight_type(values: np.ndarray, bits: int) -> FixedType:
    """Weight type (used by the converter and by re-quantization): ``bits`` wide, signed, with
    the most fraction bits that still hold max |w| (round to nearest)."""
    m = float(np.max(np.abs(values))) if np.size(values) else 0.0
    frac = bits - 1 if m == 0 else bits - 1 - (math.floor(math.log2(m)) + 1)
    while True:
        t = FixedType(bits, frac, True, Rounding.RND, Overflow.SAT)
        if round(m * 2.0 ** frac) <= t.max_int:
            return t
        frac -= 1


def requantize_weights(graph: Graph, bits: int) -> Graph:
    """A copy of ``graph`` whose Dense weights are re-quantized to ``bits`` (per-tensor scale,
    round to nearest); biases are re-rounded only where the new product grid is coarser."""
    if not isinstance(bits, int) or bits < 2 or bits > 16:
        raise FabformerError(f"weight bits must be an integer in 2..16, not {bits!r}")
    g = graph.edit()
    for n in list(g.nodes):
        if not isinstance(n, Dense):
            continue
        w = n.weight * 2.0 ** -n.weight_type.frac
        wt = weight_type(w, bits)
        bt, b = n.bias_type, n.bias
        pf = g.type_of(n.inputs[0]).frac + wt.frac
        if bt.frac > pf:
            nb = bt.with_(frac=pf, width=max(2, bt.width - (bt.frac - pf)), rounding=Rounding.RND,
                          overflow=Overflow.SAT)
            b, bt = quantize_float(b * 2.0 ** -bt.frac, nb), nb
        g.replace(n, Dense(n.name, n.inputs, n.output, weight=quantize_float(w, wt), weight_type=wt,
                           bias=b, bias_type=bt))
    g.meta = {**g.meta, "weight_bits": bits}
    return g.verify()
