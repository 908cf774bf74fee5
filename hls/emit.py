"""One emitter per IR op kind: the config struct, constants and call of its C++ kernel.

Vendor spellings (``ap_fixed``, ``AP_RND``, ``AP_SAT``) live only here and in the
C++ headers.  Every width comes from the IR's bit-growth functions
(``fabformer.fixed``) or an op's own ``acc_type`` / ``q_type`` methods.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fabformer import ir, registry
from fabformer.fixed import FixedType, accum_type, add_type, mul_type

registry.declare("hls", "the HLS C++ backend (fabformer.hls): one kernel header call per node")
EMITTERS = registry.view("hls")  # {kind: emitter}, read-only


def emitter(kind):
    """Register the emitter ``fn(op, graph, ctx) -> Emitted`` of op kind ``kind`` (its kernel
    lives in one of the ``include/fab_*.h`` headers)."""
    return registry.implements(kind, "hls")


def ctype(t: FixedType) -> str:
    """``fab::fixed_t<W,I,AP_RND,AP_SAT>`` spelling of a type: ``ap_fixed`` in synthesis and the
    Vitis testbench, a native-integer mantissa in fabformer's C-simulation (``fab_common.h``)."""
    base = "fab::fixed_t" if t.signed else "fab::ufixed_t"
    return f"{base}<{t.width},{t.integer},AP_{t.rounding.value},AP_{t.overflow.value}>"


def mtype(t: FixedType) -> str:
    """The mantissa (integer) type of a fixed-point type."""
    return f"fab::{'int' if t.signed else 'uint'}_t<{t.width}>"


def sint(width: int) -> str:
    return f"fab::int_t<{width}>"


def uint(width: int) -> str:
    return f"fab::uint_t<{width}>"


@dataclass
class Const:
    name: str
    ctype: str
    values: np.ndarray
    partition: int = 0  # cyclic ARRAY_PARTITION factor in the top (0: none, -1: complete)


@dataclass
class Emitted:
    """What the top level needs for one node."""

    fields: list  # (kind, name, value): kind "type" or "const"
    kernel: str  # fab::<kernel>
    consts: list = field(default_factory=list)


def _cdiv(a, b):
    return -(-a // b)


def _rows(shape) -> int:
    return int(np.prod(shape[:-1])) if len(shape) > 1 else 1


def _table_fields(prefix, table):
    return [("const", f"{prefix}_shift", table.shift), ("const_ll", f"{prefix}_offset", table.offset),
            ("const", f"{prefix}_size", table.size)]


@emitter(ir.Quantize)
def _quantize(n, g, ctx):
    """No kernel: the generated top level converts the float input (``ap_fixed`` assignment
    with the quantize node's rounding and overflow)."""
    return None


@emitter("dense")
def _dense(n, g, ctx):
    xs = g.tensors[n.inputs[0]].shape
    k, m = n.weight.shape
    rows = _rows(xs)
    reuse = ctx.reuse(n.name)
    f = n.acc_frac(g)
    mults = max(1, _cdiv(k * m, reuse))
    fl = [("type", "weight_t", mtype(n.weight_type)), ("type", "bias_t", mtype(n.bias_type)),
          ("type", "acc_t", sint(n.acc_type(g).width)),
          ("const", "rows", rows), ("const", "n_in", k), ("const", "n_out", m),
          ("const", "bias_shift", f - n.bias_type.frac), ("const", "out_shift", f - g.type_of(n.output).frac),
          ("const", "reuse", reuse), ("const", "multipliers", mults)]
    part = -1 if reuse == 1 else _cdiv(k * m, reuse)
    return Emitted(fl, "dense", [Const("w", mtype(n.weight_type), n.weight, part),
                                 Const("b", mtype(n.bias_type), n.bias, -1 if reuse == 1 else 0)])


@emitter("matmul")
def _matmul(n, g, ctx):
    h, mm, k = g.tensors[n.inputs[0]].shape
    nn = g.tensors[n.output].shape[2]
    at, bt = g.type_of(n.inputs[0]), g.type_of(n.inputs[1])
    reuse = ctx.reuse(n.name)
    st = n.scaled_type(g)
    fl = [("type", "acc_t", sint(n.acc_type(g).width)), ("type", "scaled_t", sint(st.width)),
          ("const", "heads", h), ("const", "m", mm), ("const", "k", k), ("const", "n", nn),
          ("const", "transpose_b", int(bool(n.transpose_b))), ("const_ll", "scale", int(n.scale)),
          ("const", "out_shift", at.frac + bt.frac + n.scale_frac - g.type_of(n.output).frac),
          ("const", "reuse", reuse), ("const", "multipliers", max(1, _cdiv(k * nn, reuse)))]
    return Emitted(fl, "matmul")


@emitter("split_heads")
def _split(n, g, ctx):
    t, hd = g.tensors[n.inputs[0]].shape
    return Emitted([("const", "heads", n.heads), ("const", "tokens", t), ("const", "depth", hd // n.heads)],
                   "split_heads")


@emitter("merge_heads")
def _merge(n, g, ctx):
    h, t, d = g.tensors[n.inputs[0]].shape
    return Emitted([("const", "heads", h), ("const", "tokens", t), ("const", "depth", d)], "merge_heads")


@emitter("flatten")
def _flatten(n, g, ctx):
    return Emitted([("const", "size", g.tensors[n.inputs[0]].size)], "flatten")


@emitter("add")
def _add(n, g, ctx):
    at, bt = g.type_of(n.inputs[0]), g.type_of(n.inputs[1])
    f = max(at.frac, bt.frac)
    st = add_type(at, bt)
    return Emitted([("type", "sum_t", sint(st.width + 1)), ("const", "size", g.tensors[n.output].size),
                    ("const", "a_shift", f - at.frac), ("const", "b_shift", f - bt.frac),
                    ("const", "out_shift", f - g.type_of(n.output).frac), ("const", "reuse", ctx.reuse(n.name))],
                   "add")


@emitter("relu")
def _relu(n, g, ctx):
    return Emitted([("const", "size", g.tensors[n.output].size),
                    ("const", "out_shift", g.type_of(n.inputs[0]).frac - g.type_of(n.output).frac),
                    ("const", "reuse", ctx.reuse(n.name))], "relu")


@emitter("requantize")
def _requantize(n, g, ctx):
    return Emitted([("const", "size", g.tensors[n.output].size),
                    ("const", "out_shift", g.type_of(n.inputs[0]).frac - g.type_of(n.output).frac),
                    ("const", "reuse", ctx.reuse(n.name))], "requantize")


@emitter("lookup")
def _lookup(n, g, ctx):
    tt = n.table.out_type
    return Emitted([("type", "table_t", mtype(tt)), ("const", "size", g.tensors[n.output].size),
                    *_table_fields("table", n.table), ("const", "reuse", ctx.reuse(n.name))],
                   "lookup", [Const("table", mtype(tt), n.table.values)])


@emitter("global_avg_pool")
def _gap(n, g, ctx):
    t, d = g.tensors[n.inputs[0]].shape
    xt = g.type_of(n.inputs[0])
    st = accum_type(xt, t)
    sc = FixedType(max(2, int(abs(n.scale)).bit_length() + 1), 0)
    return Emitted([("type", "sum_t", sint(st.width + 1)), ("type", "scaled_t", sint(mul_type(st, sc).width + 1)),
                    ("const", "tokens", t), ("const", "depth", d), ("const_ll", "scale", int(n.scale)),
                    ("const", "out_shift", xt.frac + n.scale_frac - g.type_of(n.output).frac),
                    ("const", "reuse", ctx.reuse(n.name))], "global_avg_pool")


@emitter("softmax")
def _softmax(n, g, ctx):
    shape = g.tensors[n.inputs[0]].shape
    L = int(shape[-1])
    xt, ot = g.type_of(n.inputs[0]), g.type_of(n.output)
    et, rt = n.exp_table.out_type, n.recip_table.out_type
    st = n.sum_type(g)
    E, Fr, R = et.frac, rt.frac, n.recip_bits
    # p = leading one of s lies in [E, st.width - 1] (the maximum contributes exp(0) = 2**E)
    lo_shift = Fr + E - ot.frac
    hi_shift = Fr + st.width - 1 - ot.frac
    fl = [("type", "diff_t", sint(xt.width + 2)), ("type", "exp_t", mtype(et)),
          ("type", "sum_t", uint(max(st.width, R + 2))), ("type", "recip_t", mtype(rt)),
          ("type", "prod_t", uint(et.width + rt.width)),
          ("const", "rows", _rows(shape)), ("const", "len", L), ("const", "recip_bits", R),
          *_table_fields("exp", n.exp_table), *_table_fields("recip", n.recip_table),
          ("const", "recip_frac", Fr), ("const", "max_left", max(0, -lo_shift)),
          ("const", "max_right", max(0, hi_shift)), ("const", "reuse", ctx.reuse(n.name))]
    return Emitted(fl, "softmax", [Const("exp_table", mtype(et), n.exp_table.values),
                                   Const("recip_table", mtype(rt), n.recip_table.values)])


@emitter("layernorm")
def _layernorm(n, g, ctx):
    shape = g.tensors[n.inputs[0]].shape
    N = n.n(g)
    xt, ot, zt = g.type_of(n.inputs[0]), g.type_of(n.output), n.norm_type
    dt, qt = n.d_type(g), n.q_type(g)
    tt = n.invsqrt_table.out_type
    R, Ft = n.invsqrt_bits, tt.frac
    f = zt.frac + n.gamma_type.frac
    yt = add_type(mul_type(zt, n.gamma_type), n.beta_type)
    # sh = floor_even(p - R) with p in [0, q.width - 1]: (R + sh) / 2 in [0, (q.width - 1) / 2]
    lo_shift = Ft - zt.frac
    hi_shift = Ft + (qt.width - 1) // 2 + 1 - zt.frac
    fl = [("type", "norm_t", ctype(zt)),
          ("type", "sum_t", sint(accum_type(xt, N).width + 1)), ("type", "d_t", sint(dt.width)),
          ("type", "q_t", uint(max(qt.width, R + 3))), ("type", "table_t", mtype(tt)),
          ("type", "dt_t", sint(dt.width + tt.width + 1)),
          ("type", "gamma_t", mtype(n.gamma_type)), ("type", "beta_t", mtype(n.beta_type)),
          ("type", "y_t", sint(yt.width + 1)),
          ("const", "rows", _rows(shape)), ("const", "n", N), ("const_ll", "eps", int(n.eps)),
          ("const", "invsqrt_bits", R), *_table_fields("table", n.invsqrt_table), ("const", "table_frac", Ft),
          ("const", "beta_shift", f - n.beta_type.frac), ("const", "out_shift", f - ot.frac),
          ("const", "max_left", max(0, -lo_shift)), ("const", "max_right", max(0, hi_shift)),
          ("const", "reuse", ctx.reuse(n.name))]
    return Emitted(fl, "layernorm", [Const("gamma", mtype(n.gamma_type), n.gamma, -1),
                                     Const("beta", mtype(n.beta_type), n.beta, -1),
                                     Const("invsqrt_table", mtype(tt), n.invsqrt_table.values)])
