"""Row-wise functions (pipelined) for :class:`~fabformer.rtl.blocks.RowMap` blocks.

Each ``make_<kind>(op, g)`` returns ``fn(m, xs) -> ys`` that maps the elements
of one input row to the elements of one output row exactly as the golden
function in :mod:`fabformer.golden` does (see the op docstrings in
:mod:`fabformer.ir`).
"""
from __future__ import annotations

import math

from amaranth.hdl import Mux, Signal, signed, unsigned

from .. import ir
from ..fixed import FixedType
from .arith import leading_one, lookup, requantize, requantize_var, shape_of, shift_amount, shift_var


def _sum(m, xs, shape, name):
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


def _max_tree(m, xs, shape, name):
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


def make_softmax(op: ir.Softmax, g):
    """Seven pipeline stages: input register (the producer's requantization ends there) |
    row max | exp lookups | sum | leading one and normalising shift | reciprocal lookup |
    products; then the variable requantizing shift."""
    xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
    sw = op.sum_type(g).width
    R = op.recip_bits
    Fr = op.recip_table.out_type.frac

    def fn(m, xs, pipe):
        (xs,) = pipe.stage(xs)
        mx = _max_tree(m, xs, shape_of(xt), "mx")
        xs, (mx,) = pipe.stage(xs, [mx])
        es = []
        for j, x in enumerate(xs):
            d = Signal(signed(xt.width + 1), name=f"d{j}")
            m.d.comb += d.eq(mx - x)
            es.append(lookup(m, op.exp_table, d, name=f"e{j}"))
        (es,) = pipe.stage(es)
        s = _sum(m, es, unsigned(sw), "s")
        es, (s,) = pipe.stage(es, [s])
        p = leading_one(m, s, sw, name="p")
        n = Signal(unsigned(R + 2), name="n")
        m.d.comb += n.eq(shift_var(m, s, shift_amount(m, p, {pv: pv - R for pv in range(sw)}, "nsh"), name="ns"))
        osh = shift_amount(m, p, {pv: Fr + pv - out_t.frac for pv in range(sw)}, "osh")
        es, (n, osh) = pipe.stage(es, [n, osh])
        r = lookup(m, op.recip_table, n, name="r")
        es, (r, osh) = pipe.stage(es, [r, osh])
        prods, (osh,) = pipe.stage([e * r for e in es], [osh])
        return [requantize_var(m, v, osh, out_t, name=f"y{j}") for j, v in enumerate(prods)]
    fn.stages = 7
    return fn


def make_layernorm(op: ir.LayerNorm, g):
    """Eight pipeline stages: row sum | deviations | squares | variance sum | leading one
    and normalising shift | inverse-square-root lookup | products | normalising shift;
    then gamma, beta and the output requantization."""
    xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
    N = op.n(g)
    dt, qt = op.d_type(g), op.q_type(g)
    R = op.invsqrt_bits
    Ft = op.invsqrt_table.out_type.frac
    nt = op.norm_type
    f = nt.frac + op.gamma_type.frac
    bshift = f - op.beta_type.frac

    def sh_of(pv):
        sh = pv - R
        return sh - (sh % 2)

    def fn(m, xs, pipe):
        S = _sum(m, xs, signed(xt.width + math.ceil(math.log2(max(N, 2))) + 1), "S")
        xs, (S,) = pipe.stage(xs, [S])
        ds = []
        for j, x in enumerate(xs):
            d = Signal(signed(dt.width), name=f"d{j}")
            m.d.comb += d.eq(x * N - S)
            ds.append(d)
        (ds,) = pipe.stage(ds)
        sq = []
        for j, d in enumerate(ds):
            s2 = Signal(unsigned(2 * dt.width), name=f"sq{j}")
            m.d.comb += s2.eq(d * d)
            sq.append(s2)
        ds, sq = pipe.stage(ds, sq)
        Q = Signal(unsigned(qt.width), name="Q")
        m.d.comb += Q.eq(_sum(m, sq, unsigned(qt.width), "sq_sum") + op.eps)
        ds, (Q,) = pipe.stage(ds, [Q])
        p = leading_one(m, Q, qt.width, name="p")
        n = Signal(unsigned(R + 3), name="n")
        m.d.comb += n.eq(shift_var(m, Q, shift_amount(m, p, {pv: sh_of(pv) for pv in range(qt.width)}, "nsh"),
                                   name="ns"))
        zsh = shift_amount(m, p, {pv: Ft + (R + sh_of(pv)) // 2 - nt.frac for pv in range(qt.width)}, "zsh")
        ds, (n, zsh) = pipe.stage(ds, [n, zsh])
        t = lookup(m, op.invsqrt_table, n, name="t")
        ds, (t, zsh) = pipe.stage(ds, [t, zsh])
        prods, (zsh,) = pipe.stage([d * t for d in ds], [zsh])
        zs = [requantize_var(m, v, zsh, nt, name=f"z{j}") for j, v in enumerate(prods)]
        (zs,) = pipe.stage(zs)
        ys = []
        for j, z in enumerate(zs):
            y = z * int(op.gamma[j]) + (int(op.beta[j]) << bshift)
            ys.append(requantize(m, y, f, out_t, name=f"y{j}"))
        return ys
    fn.stages = 8
    return fn


ROW_FUNCTIONS = {
    "relu": make_relu,
    "requantize": make_requantize,
    "lookup": make_lookup,
    "softmax": make_softmax,
    "layernorm": make_layernorm,
}
