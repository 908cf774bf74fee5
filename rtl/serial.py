"""Resource-shared row functions: one element per cycle through a few multipliers.

:class:`SerialLayerNorm` computes golden ``layernorm`` bit for bit with three
multipliers (``d*d``, ``d*t``, ``z*gamma``) instead of three per element.  A row
passes three elastic stages, each holding its own copy of the row:

* **A** (``N`` cycles): the row sum ``S`` is taken when the row is accepted, then one
  deviation ``d = N*x - S`` per cycle is squared into the variance sum ``Q``;
* **P** (2 cycles): leading one of ``Q + eps``, the normalising shift, the
  inverse-square-root lookup ``t`` (a synchronous ROM) and the output shift;
* **B** (``N`` cycles): one element per cycle into a 3-stage pipeline (``d``;
  ``z = rq(d*t)``; ``y = rq(z*gamma + beta)``) that fills the output row, registered on
  ``o`` with the last element.  The row's ``t`` and shifts travel with its elements, so
  the next row starts right after the last element of this one.

Each stage hands its row on when the next stage is free or finishing, so a row
enters every ``N`` cycles and leaves ``2N + 5`` cycles after it entered.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

from amaranth.hdl import Array, Const, Module, Signal, Value, signed, unsigned

from .. import ir
from .arith import leading_one, lookup, lookup_sync, pack, requantize, requantize_var, shape_of, shift_amount, shift_var, unpack
from .blocks import Block, row_shape
from .rowfns import adder_tree, max_tree

__all__ = ["SerialLayerNorm", "SerialSoftmax"]


def _times(v, c: int):
    """``v * c`` for a positive constant ``c`` as shifted adds (no multiplier cell)."""
    terms = [v << k for k in range(c.bit_length()) if (c >> k) & 1]
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _select(m, values, idx, shape, name):
    """``values[idx]`` as a signal (a mux: arithmetic on an ``Array`` proxy would be
    built once per element)."""
    out = Signal(shape, name=name)
    m.d.comb += out.eq(Array(values)[idx])
    return out


def _const_select(m, values, idx, name):
    w = max(max(int(v).bit_length() for v in values) + 1, 2)
    return _select(m, [Const(int(v), signed(w)) for v in values], idx, signed(w), name)


def _reg(m, en, value, name):
    """``value`` registered under the pipeline enable ``en`` (one element-pipeline stage)."""
    value = Value.cast(value)
    r = Signal(value.shape(), name=name)
    with m.If(en):
        m.d.sync += r.eq(value)
    return r


def _collect(m, en, valid, idx, last, y, y_buf, o):
    """The last stage of a row's element pipeline: element ``idx`` goes into ``y_buf``; the
    row's last element registers the whole row on ``o``."""
    with m.If(o.valid & o.ready):
        m.d.sync += o.valid.eq(0)
    with m.If(en & valid):
        with m.If(last):
            m.d.sync += [o.valid.eq(1), o.payload.as_value().eq(pack([*y_buf, y]))]
        with m.Else():
            with m.Switch(idx):
                for j in range(len(y_buf)):
                    with m.Case(j):
                        m.d.sync += y_buf[j].eq(y)


class _SerialRow(Block):
    """A row function that takes one row every ``N`` cycles (``N`` = row length);
    subclasses give ``elaborate``."""

    def __init__(self, name, op, g: ir.Graph):
        xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
        rows, cols = row_shape(g.tensors[op.inputs[0]].shape)
        self.op, self.g, self.rows, self.N = op, g, rows, cols
        super().__init__(name, [(xt, rows, cols)], (out_t, rows, cols))

    @property
    def row_ii(self) -> int:
        return max(self.N, 1)

    def _control(self, m):
        """The stage control both row functions share: A counts ``N`` elements of a row, P
        holds it two cycles (its table read is synchronous), B issues ``N`` elements into an
        element pipeline that advances with ``en`` (the output register free or read).
        Returns the control signals; the caller drives ``a_take`` (A starts a row) and moves
        its data under ``a_take``, ``a_step``, ``p_take``, ``b_take`` and ``b_step``."""
        N = self.N
        c = SimpleNamespace(
            a_cnt=Signal(range(max(N, 2)), name="a_cnt"), a_busy=Signal(name="a_busy"),
            a_last=Signal(name="a_last"), a_take=Signal(name="a_take"),
            p_full=Signal(name="p_full"), p_done=Signal(name="p_done"),
            b_cnt=Signal(range(max(N, 2)), name="b_cnt"), b_busy=Signal(name="b_busy"),
            b_last=Signal(name="b_last"), en=Signal(name="en"),
            b_take=Signal(name="b_take"), p_take=Signal(name="p_take"), a_free=Signal(name="a_free"))
        m.d.comb += [c.en.eq(~self.o.valid | self.o.ready),
                     c.a_last.eq(c.a_busy & (c.a_cnt == N - 1)),
                     c.b_last.eq(c.b_busy & (c.b_cnt == N - 1)),
                     c.b_take.eq(c.p_full & c.p_done & (~c.b_busy | (c.b_last & c.en))),
                     c.p_take.eq(c.a_last & (~c.p_full | c.b_take)),
                     c.a_free.eq(~c.a_busy | c.p_take)]
        c.a_step = c.a_busy & ~c.a_last  # A takes one more element
        c.b_step = c.b_busy & c.en       # B issues one element
        with m.If(c.a_step):
            m.d.sync += c.a_cnt.eq(c.a_cnt + 1)
        with m.If(c.p_take):
            m.d.sync += c.a_busy.eq(0)
        with m.If(c.a_take):
            m.d.sync += [c.a_busy.eq(1), c.a_cnt.eq(0)]
        m.d.sync += c.p_done.eq(c.p_full & ~c.b_take)  # P's table entry is read in its first cycle
        with m.If(c.b_take):
            m.d.sync += c.p_full.eq(0)
        with m.If(c.p_take):
            m.d.sync += [c.p_full.eq(1), c.p_done.eq(0)]
        with m.If(c.b_step):
            m.d.sync += c.b_cnt.eq(c.b_cnt + 1)
            with m.If(c.b_last):
                m.d.sync += c.b_busy.eq(0)
        with m.If(c.b_take):
            m.d.sync += [c.b_busy.eq(1), c.b_cnt.eq(0)]
        return c

    @property
    def row_latency(self) -> int:
        """Both row functions: an entry cycle, ``N`` cycles of stage A, 2 of P, ``N`` of B's
        issue and its pipeline's tail (layer norm: 2 more stages; softmax: 1 stage after its
        input register)."""
        return 2 * self.N + 5

    def timing(self, first, last):
        lat = self.row_latency
        return first + lat, max(last + lat, first + (self.rows - 1) * self.row_ii + lat)

    @property
    def ii(self):
        return self.rows * self.row_ii


class SerialLayerNorm(_SerialRow):
    """Golden ``layernorm`` with 3 multipliers: II ``N`` cycles per row, latency ``2N + 5``."""

    kind = "layernorm"
    multipliers = 3

    def elaborate(self, platform):
        m = Module()
        op, g, N = self.op, self.g, self.N
        xt, _, _ = self.in_specs[0]
        out_t = self.out_spec[0]
        dt, qt = op.d_type(g), op.q_type(g)
        R = op.invsqrt_bits
        Ft = op.invsqrt_table.out_type.frac
        nt = op.norm_type
        f = nt.frac + op.gamma_type.frac
        bshift = f - op.beta_type.frac
        s_shape = signed(xt.width + math.ceil(math.log2(max(N, 2))) + 1)

        def sh_of(pv):
            sh = pv - R
            return sh - (sh % 2)

        def deviation(xs, S, idx, name):
            d = Signal(signed(dt.width), name=name)
            x = _select(m, xs, idx, shape_of(xt), name + "_x")
            m.d.comb += d.eq(_times(x, N) - S)
            return d

        c = self._control(m)
        # stage A: row sum on entry, then one squared deviation per cycle ----------
        a_x = [Signal(shape_of(xt), name=f"a_x{j}") for j in range(N)]
        a_S = Signal(s_shape, name="a_S")
        a_Q = Signal(unsigned(qt.width), name="a_Q")
        # stage P: normalising shift and inverse square root --------------------------
        p_x = [Signal(shape_of(xt), name=f"p_x{j}") for j in range(N)]
        p_S = Signal(s_shape, name="p_S")
        p_Q = Signal(unsigned(qt.width), name="p_Q")
        # stage B: one output element per cycle ----------------------------------------
        b_x = [Signal(shape_of(xt), name=f"b_x{j}") for j in range(N)]
        b_S = Signal(s_shape, name="b_S")
        b_t = Signal(shape_of(op.invsqrt_table.out_type), name="b_t")
        y_buf = [Signal(shape_of(out_t), name=f"y_buf{j}") for j in range(N - 1)]
        m.d.comb += [c.a_take.eq(self.i.valid & c.a_free), self.i.ready.eq(c.a_free)]

        # A
        xs = unpack(self.i.payload, N, xt)
        S_in = adder_tree(m, xs, s_shape, "S_in")
        a_d = deviation(a_x, a_S, c.a_cnt, "a_d")
        a_sq = Signal(unsigned(2 * dt.width), name="a_sq")
        m.d.comb += a_sq.eq(a_d * a_d)
        a_new = Signal(unsigned(qt.width), name="a_new")
        m.d.comb += a_new.eq(a_Q + a_sq)
        with m.If(c.a_step):
            m.d.sync += a_Q.eq(a_new)
        with m.If(c.p_take):
            m.d.sync += [p_Q.eq(a_new + op.eps), p_S.eq(a_S)] + [p.eq(a) for p, a in zip(p_x, a_x)]
        with m.If(c.a_take):
            m.d.sync += [a_Q.eq(0), a_S.eq(S_in)] + [a.eq(x) for a, x in zip(a_x, xs)]

        # P
        p = leading_one(m, p_Q, qt.width, name="p")
        n = Signal(unsigned(R + 3), name="n")
        m.d.comb += n.eq(shift_var(m, p_Q, shift_amount(m, p, {pv: sh_of(pv) for pv in range(qt.width)}, "nsh"),
                                   name="ns"))
        zsh = shift_amount(m, p, {pv: Ft + (R + sh_of(pv)) // 2 - nt.frac for pv in range(qt.width)}, "zsh")
        t = lookup_sync(m, op.invsqrt_table, n, name="t")
        b_zsh = Signal(zsh.shape(), name="b_zsh")

        # B: issue one element per cycle; stage 1 deviation, 2 z = rq(d*t), 3 y = rq(z*gamma + beta)
        en = c.en
        gam = _const_select(m, [int(v) for v in op.gamma], c.b_cnt, "gamma")
        bet = _const_select(m, [int(v) << bshift for v in op.beta], c.b_cnt, "beta")
        s1 = {k: _reg(m, en, v, f"s1_{k}") for k, v in (
            ("v", c.b_busy), ("i", c.b_cnt), ("l", c.b_last), ("d", deviation(b_x, b_S, c.b_cnt, "b_d")),
            ("t", b_t), ("zsh", b_zsh), ("g", gam), ("b", bet))}
        z = requantize_var(m, s1["d"] * s1["t"], s1["zsh"], nt, name="z")
        s2 = {k: _reg(m, en, s1[k] if k != "z" else z, f"s2_{k}") for k in ("v", "i", "l", "z", "g", "b")}
        y = requantize(m, s2["z"] * s2["g"] + s2["b"], f, out_t, name="y")
        _collect(m, en, s2["v"], s2["i"], s2["l"], y, y_buf, self.o)
        with m.If(c.b_take):
            m.d.sync += [b_t.eq(t), b_zsh.eq(zsh), b_S.eq(p_S)] + [b.eq(x) for b, x in zip(b_x, p_x)]
        return m


class SerialSoftmax(_SerialRow):
    """Golden ``softmax`` with one exponent table and one multiplier.  Stages: an input
    register; **A** (``N`` cycles) row max on entry, then one exponent lookup per cycle into the row sum; **P**
    (2 cycles) leading one, normalising shift, reciprocal lookup (a synchronous ROM) and
    output shift; **B** (``N`` cycles) one element per cycle into a 2-stage pipeline (``e``
    and the row's ``r``; ``y = rq(e*r)``), the row registered on ``o`` with the last one.
    II ``N`` cycles per row, latency ``2N + 5``."""

    kind = "softmax"
    multipliers = 1

    def elaborate(self, platform):
        m = Module()
        op, g, N = self.op, self.g, self.N
        xt, _, _ = self.in_specs[0]
        out_t = self.out_spec[0]
        sw = op.sum_type(g).width
        R = op.recip_bits
        Fr = op.recip_table.out_type.frac
        et = op.exp_table.out_type

        c = self._control(m)
        a_x = [Signal(shape_of(xt), name=f"a_x{j}") for j in range(N)]
        a_mx = Signal(shape_of(xt), name="a_mx")
        a_e = [Signal(shape_of(et), name=f"a_e{j}") for j in range(N - 1)]
        a_s = Signal(unsigned(sw), name="a_s")
        p_e = [Signal(shape_of(et), name=f"p_e{j}") for j in range(N)]
        p_s = Signal(unsigned(sw), name="p_s")
        b_e = [Signal(shape_of(et), name=f"b_e{j}") for j in range(N)]
        b_r = Signal(shape_of(op.recip_table.out_type), name="b_r")
        y_buf = [Signal(shape_of(out_t), name=f"y_buf{j}") for j in range(N - 1)]

        # input register (the row max is taken from it, not from the producer's output logic)
        q_x = [Signal(shape_of(xt), name=f"q_x{j}") for j in range(N)]
        q_full = Signal(name="q_full")
        m.d.comb += c.a_take.eq(q_full & c.a_free)
        q_free = ~q_full | c.a_take
        m.d.comb += self.i.ready.eq(q_free)
        with m.If(c.a_take):
            m.d.sync += q_full.eq(0)
        with m.If(self.i.valid & q_free):
            m.d.sync += [q_full.eq(1)] + [q.eq(v) for q, v in zip(q_x, unpack(self.i.payload, N, xt))]

        # A: max on entry, then one exponent per cycle into the sum
        mx_in = max_tree(m, q_x, shape_of(xt), "mx_in")
        x = _select(m, a_x, c.a_cnt, shape_of(xt), "a_xsel")
        d = Signal(signed(xt.width + 1), name="d")
        m.d.comb += d.eq(a_mx - x)
        e = lookup(m, op.exp_table, d, name="e")
        s = Signal(unsigned(sw), name="s")
        m.d.comb += s.eq(a_s + e)
        with m.If(c.a_step):
            m.d.sync += a_s.eq(s)
            with m.Switch(c.a_cnt):
                for j in range(N - 1):
                    with m.Case(j):
                        m.d.sync += a_e[j].eq(e)
        with m.If(c.p_take):
            m.d.sync += [p_s.eq(s)] + [pe.eq(v) for pe, v in zip(p_e, [*a_e, e])]
        with m.If(c.a_take):
            m.d.sync += [a_s.eq(0), a_mx.eq(mx_in)] + [a.eq(v) for a, v in zip(a_x, q_x)]

        # P: normalising shift, reciprocal, output shift
        p = leading_one(m, p_s, sw, name="p")
        n = Signal(unsigned(R + 2), name="n")
        m.d.comb += n.eq(shift_var(m, p_s, shift_amount(m, p, {pv: pv - R for pv in range(sw)}, "nsh"), name="ns"))
        osh = shift_amount(m, p, {pv: Fr + pv - out_t.frac for pv in range(sw)}, "osh")
        r = lookup_sync(m, op.recip_table, n, name="r")
        b_osh = Signal(osh.shape(), name="b_osh")

        # B: issue one element per cycle; stage 1 e and the row's r, stage 2 y = rq(e*r)
        en = c.en
        s1 = {k: _reg(m, en, v, f"s1_{k}") for k, v in (
            ("v", c.b_busy), ("i", c.b_cnt), ("l", c.b_last), ("e", _select(m, b_e, c.b_cnt, shape_of(et), "eb")),
            ("r", b_r), ("osh", b_osh))}
        y = requantize_var(m, s1["e"] * s1["r"], s1["osh"], out_t, name="y")
        _collect(m, en, s1["v"], s1["i"], s1["l"], y, y_buf, self.o)
        with m.If(c.b_take):
            m.d.sync += [b_r.eq(r), b_osh.eq(osh)] + [b.eq(v) for b, v in zip(b_e, p_e)]
        return m
