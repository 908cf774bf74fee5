"""Row-wise functions (pipelined) for :class:`~fabformer.rtl.blocks.RowMap` blocks.

Softmax and layer norm have their own resource-shared blocks (:mod:`.serial`), which
reuse the adder and comparator trees here.  Each ``make_<kind>(op, g)`` returns ``fn(m, xs) -> ys`` that maps the elements
of one input row to the elements of one output row exactly as the golden
function in :mod:`fabformer.golden` does (see the op docstrings in
:mod:`fabformer.ir`).
"""
from __future__ import annotations

from amaranth.hdl import Mux, Signal

from .. import ir
from .arith import lookup, requantize


def adder_tree(m, xs, shape, name):
    """Sum of ``xs`` as a balanced adder tree (depth log2 of the row length)."""
    level = list(xs)
    while len(level) > 1:
        nxt = [a + b for a, b in zip(level[0::2], level[1::2])]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    s = Signal(shape, name=name)
    m.d.comb += s.eq(level[0])
    return s


def make_relu(op: ir.Relu, g):
    xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)

    def fn(m, xs, pipe):
        return [requantize(m, Mux(x > 0, x, 0), xt.frac, out_t, name=f"y{j}") for j, x in enumerate(xs)]
    return fn


def make_requantize(op: ir.Requantize, g):
    xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)

    def fn(m, xs, pipe):
        return [requantize(m, x, xt.frac, out_t, name=f"y{j}") for j, x in enumerate(xs)]
    return fn


def make_lookup(op: ir.Lookup, g):
    def fn(m, xs, pipe):
        return [lookup(m, op.table, x, name=f"y{j}") for j, x in enumerate(xs)]
    return fn


def max_tree(m, xs, shape, name):
    """Maximum of ``xs`` as a balanced comparator tree (depth log2 of the row length)."""
    level = list(xs)
    k = 0
    while len(level) > 1:
        nxt = []
        for a, b in zip(level[0::2], level[1::2]):
            s = Signal(shape, name=f"{name}{k}")
            m.d.comb += s.eq(Mux(b > a, b, a))
            nxt.append(s)
            k += 1
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]

