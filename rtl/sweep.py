"""Small graphs for the matmul-engine sweep, the pruning check and the row-chained dense."""
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


def flat_dense_graph(rows: int = 4, cols: int = 8, n: int = 6, seed: int = 0) -> Graph:
    """``x[rows, cols] -> quantize -> flatten -> dense(rows*cols -> n)``: the dense takes the
    flattened tensor row by row (a chained group of jobs), the flatten is a wire."""
    from ..ir import Flatten
    rng = np.random.default_rng(seed)
    wt = FixedType(8, 6)
    w = rng.integers(wt.min_int, wt.max_int + 1, (rows * cols, n))
    w[rng.random(w.shape) < 0.3] = 0
    g = Graph(f"flat_dense{rows}x{cols}")
    g.add_input("x", (rows, cols))
    g.add(Quantize("quant", ("x",), "xq"), IN_T)
    g.add(Flatten("flatten", ("xq",), "flat"), IN_T)
    g.add(Dense("head", ("flat",), "y", weight=w, weight_type=wt, bias=rng.integers(-200, 200, n),
                bias_type=FixedType(12, 8)), OUT_T)
    g.outputs = ["y"]
    return g.verify()
