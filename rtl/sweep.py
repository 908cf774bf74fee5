"""Small graphs for the matmul-engine sweep and the pruning check."""
from __future__ import annotations

import numpy as np

from ..fixed import FixedType, Overflow, Rounding
from ..ir import Dense, Graph, Quantize

IN_T = FixedType(8, 5, rounding=Rounding.RND, overflow=Overflow.SAT)
OUT_T = FixedType(12, 5, rounding=Rounding.RND, overflow=Overflow.SAT)


def dense_graph(k: int = 16, n: int = 16, rows: int = 16, sparsity: float = 0.0, seed: int = 0) -> Graph:
    """``x[rows, k] -> quantize -> dense(k -> n)``; ``sparsity`` is the exact fraction of zero weights."""
    rng = np.random.default_rng(seed)
    wt = FixedType(8, 6)
    w = rng.integers(1, wt.max_int + 1, (k, n)) * rng.choice([-1, 1], (k, n))
    zeros = int(round(sparsity * k * n))
    if zeros:
        flat = w.reshape(-1)
        flat[rng.permutation(k * n)[:zeros]] = 0
    g = Graph(f"dense{k}x{n}_s{int(sparsity * 100)}")
    g.add_input("x", (rows, k))
    g.add(Quantize("quant", ("x",), "xq"), IN_T)
    g.add(Dense("dense", ("xq",), "y", weight=w, weight_type=wt, bias=rng.integers(-200, 200, n),
                bias_type=FixedType(12, 8)), OUT_T)
    g.outputs = ["y"]
    return g.verify()
