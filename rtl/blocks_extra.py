"""Dataflow blocks of the ops of the Transformers users write: scale by a constant, max
pooling over tokens, last-axis concatenation and reshape.  Each equals its golden function
(see the op docstrings in :mod:`fabformer.ir`) bit for bit."""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .. import ir
from .arith import pack, requantize, unpack
from .blocks import Block, RowFifo, RowMap, Wire, row_shape
from .generate import _reshape, block

__all__ = ["MaxPoolBlock", "ConcatBlock", "InputSplit", "SPLIT_DELAY"]

SPLIT_DELAY = 2  # a row written into an input's FIFO is readable two edges later


def make_scale(op: ir.Scale, g):
    xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)

    def fn(m, xs, pipe):
        return [requantize(m, x * op.scale, xt.frac + op.scale_frac, out_t, name=f"y{j}") for j, x in enumerate(xs)]
    return fn


@block(ir.Scale)
def _scale_block(n, g, parallelism):
    rows, cols = row_shape(g.tensors[n.inputs[0]].shape)
    return RowMap(n.name, n.kind, make_scale(n, g), g.type_of(n.inputs[0]), g.type_of(n.output), rows, cols, cols)


class MaxPoolBlock(Block):
    """Global max pool over rows: running column maxima, one output row per sample."""

    kind = "global_max_pool"

    def __init__(self, name, op: ir.GlobalMaxPool, g: ir.Graph):
        xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
        rows, cols = row_shape(g.tensors[op.inputs[0]].shape)
        super().__init__(name, [(xt, rows, cols)], (out_t, 1, cols))

    def timing(self, first, last):
        return last + 1, last + 1

    @property
    def ii(self):
        return self.in_specs[0][1]

    def elaborate(self, platform):
        m = Module()
        xt, rows, cols = self.in_specs[0]
        out_t = self.out_spec[0]
        from .arith import shape_of
        best = [Signal(shape_of(xt), name=f"m{j}") for j in range(cols)]
        cnt = Signal(range(max(rows, 2)))
        xs = unpack(self.i.payload, cols, xt)
        # the first row of a sample starts the maxima afresh
        cur = [Mux((cnt == 0) | (x > b), x, b) for b, x in zip(best, xs)]
        ys = [requantize(m, c, xt.frac, out_t, name=f"y{j}") for j, c in enumerate(cur)]
        can = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(can)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & can):
            m.d.sync += [b.eq(c) for b, c in zip(best, cur)]
            with m.If(cnt == rows - 1):
                m.d.sync += [cnt.eq(0), self.o.valid.eq(1), self.o.payload.as_value().eq(pack(ys))]
            with m.Else():
                m.d.sync += cnt.eq(cnt + 1)
        return m


@block(ir.GlobalMaxPool)
def _gmp_block(n, g, parallelism):
    return MaxPoolBlock(n.name, n, g)


class ConcatBlock(Block):
    """Last-axis concatenation of two streams with the same rows; one beat of each at once."""

    kind = "concat"

    def __init__(self, name, a_t, b_t, out_t, rows, ca, cb):
        super().__init__(name, [(a_t, rows, ca), (b_t, rows, cb)], (out_t, rows, ca + cb))

    def timing(self, first, last):
        return first + 1, last + 1

    @property
    def ii(self):
        return self.in_specs[0][1]

    def elaborate(self, platform):
        m = Module()
        (at, _, ca), (bt, _, cb) = self.in_specs
        out_t = self.out_spec[0]
        ys = [requantize(m, x, at.frac, out_t, name=f"ya{j}") for j, x in enumerate(unpack(self.a.payload, ca, at))]
        ys += [requantize(m, x, bt.frac, out_t, name=f"yb{j}") for j, x in enumerate(unpack(self.b.payload, cb, bt))]
        can = ~self.o.valid | self.o.ready
        both = self.a.valid & self.b.valid
        m.d.comb += [self.a.ready.eq(can & both), self.b.ready.eq(can & both)]
        with m.If(can):
            m.d.sync += self.o.valid.eq(both)
            with m.If(both):
                m.d.sync += self.o.payload.as_value().eq(pack(ys))
        return m


@block(ir.Concat)
def _concat_block(n, g, parallelism):
    (ra, ca), (_, cb) = (row_shape(g.tensors[i].shape) for i in n.inputs)
    return ConcatBlock(n.name, g.type_of(n.inputs[0]), g.type_of(n.inputs[1]), g.type_of(n.output), ra, ca, cb)


_reshape_rows = _reshape(lambda op, g: [list(range(int(r) * int(c), int(r) * int(c) + int(c)))
                                        for r, c in [(r, row_shape(op.shape)[1]) for r in range(row_shape(op.shape)[0])]])


@block(ir.Reshape)
def _reshape_block(n, g, parallelism):
    src, dst = row_shape(g.tensors[n.inputs[0]].shape), row_shape(g.tensors[n.output].shape)
    if src == dst:
        return Wire(n.name, "reshape", g.type_of(n.inputs[0]), *src)  # the rows stay: wires, no cycle
    return _reshape_rows(n, g, parallelism)


class InputSplit(wiring.Component):
    """Several graph inputs on one input stream (:func:`fabformer.vectors.input_frame`): a sample
    is input 0's rows, then input 1's, ... in a common type; each row goes, shifted back to its
    input's type (exact), to that input's own FIFO (deep enough for a whole sample's rows, so an
    input that waits for another never blocks the stream)."""

    def __init__(self, common, parts, cols: int):
        from amaranth.lib import stream
        from .blocks import row_layout
        self.common, self.parts, self.cols = common, parts, cols
        members = {"i": In(stream.Signature(row_layout(common, cols)))}
        for k, (_, rows, c, t) in enumerate(parts):
            members[f"o{k}"] = Out(stream.Signature(row_layout(t, c)))
        super().__init__(members)

    def elaborate(self, platform):
        from amaranth.hdl import Cat
        m = Module()
        total = sum(p[1] for p in self.parts)
        row = Signal(range(max(total, 2)))
        xs = unpack(self.i.payload, self.cols, self.common)
        start = 0
        readies = []
        for k, (_, rows, c, t) in enumerate(self.parts):
            f = RowFifo(width=t.width * c, depth=rows + 2, slices=c)
            m.submodules[f"fifo{k}"] = f
            here = Signal(name=f"here{k}")
            m.d.comb += here.eq((row >= start) & (row < start + rows))
            sh = self.common.frac - t.frac
            m.d.comb += [f.w_data.eq(Cat(*[(x >> sh)[:t.width] for x in xs[:c]])), f.w_en.eq(self.i.valid & here)]
            readies.append(here & f.w_rdy)
            o = getattr(self, f"o{k}")
            m.d.comb += [o.valid.eq(f.r_rdy), o.payload.as_value().eq(f.r_data), f.r_en.eq(o.ready)]
            start += rows
        rdy = readies[0]
        for r in readies[1:]:
            rdy = rdy | r
        m.d.comb += self.i.ready.eq(rdy)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += row.eq(Mux(row == total - 1, 0, row + 1))
        return m


class AddConstBlock(Block):
    """``x + c`` with a constant row per input row (a row counter picks it)."""

    kind = "add_const"

    def __init__(self, name, op: ir.AddConst, g: ir.Graph):
        xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
        rows, cols = row_shape(g.tensors[op.inputs[0]].shape)
        self.op = op
        self.consts = [[int(v) for v in r] for r in op.const.reshape(rows, cols)]
        super().__init__(name, [(xt, rows, cols)], (out_t, rows, cols))

    def timing(self, first, last):
        return first + 1, last + 1

    @property
    def ii(self):
        return self.in_specs[0][1]

    def elaborate(self, platform):
        from amaranth.hdl import Array, Const
        from .arith import shape_of
        m = Module()
        xt, rows, cols = self.in_specs[0]
        ct, out_t = self.op.const_type, self.out_spec[0]
        f = max(xt.frac, ct.frac)
        cnt = Signal(range(max(rows, 2)))
        xs = unpack(self.i.payload, cols, xt)
        ys = []
        for j, x in enumerate(xs):
            col = [r[j] for r in self.consts]
            if len(set(col)) == 1:
                c = Const(col[0], shape_of(ct))
            else:
                c = Array(Const(v, shape_of(ct)) for v in col)[cnt]
            ys.append(requantize(m, (x << (f - xt.frac)) + (c << (f - ct.frac)), f, out_t, name=f"y{j}"))
        can = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(can)
        with m.If(can):
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += [self.o.payload.as_value().eq(pack(ys)), cnt.eq(Mux(cnt == rows - 1, 0, cnt + 1))]
        return m


@block(ir.AddConst)
def _add_const_block(n, g, parallelism):
    return AddConstBlock(n.name, n, g)


class EmbeddingBlock(Block):
    """Token ids (one row of ``T`` ids) -> ``T`` rows of the table (a ROM read per row)."""

    kind = "embedding"

    def __init__(self, name, op: ir.Embedding, g: ir.Graph):
        xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
        rows, tokens = row_shape(g.tensors[op.inputs[0]].shape)
        self.op = op
        self.tokens = tokens
        super().__init__(name, [(xt, rows, tokens)], (out_t, rows * tokens, int(op.table.shape[1])))

    def timing(self, first, last):
        return last + 2, last + 1 + self.tokens

    def row_times(self, ins):
        return [ins[0][-1] + 2 + r for r in range(self.out_spec[1])]

    @property
    def ii(self):
        return self.tokens + 1

    def elaborate(self, platform):
        from amaranth.hdl import Array, Cat, unsigned
        from amaranth.lib.memory import Memory
        from .arith import clip, shape_of
        m = Module()
        xt, _, T = self.in_specs[0]
        out_t, _, D = self.out_spec
        tt = self.op.table_type
        V = int(self.op.table.shape[0])
        mask = (1 << tt.width) - 1
        words = [sum((int(v) & mask) << (k * tt.width) for k, v in enumerate(row)) for row in self.op.table]
        rom = Memory(shape=unsigned(tt.width * D), depth=V, init=words)
        m.submodules.rom = rom
        rp = rom.read_port(domain="comb")
        ids = [Signal(range(V), name=f"id{t}") for t in range(T)]
        busy = Signal()
        t = Signal(range(max(T, 2)))
        xs = unpack(self.i.payload, T, xt)
        m.d.comb += rp.addr.eq(Array(ids)[t])
        elems = unpack(rp.data, D, tt)
        ys = [requantize(m, e, tt.frac, out_t, name=f"y{j}") for j, e in enumerate(elems)]
        can = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(~busy)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & ~busy):
            m.d.sync += [busy.eq(1), t.eq(0)]
            m.d.sync += [r.eq(clip(x >> xt.frac, 0, V - 1)) for r, x in zip(ids, xs)]
        with m.If(busy & can):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.as_value().eq(pack(ys))]
            with m.If(t == T - 1):
                m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += t.eq(t + 1)
        return m


@block(ir.Embedding)
def _embedding_block(n, g, parallelism):
    return EmbeddingBlock(n.name, n, g)


class MaskFillBlock(Block):
    """Attention mask on score rows (``H * Tq`` rows of ``Tk``): the key mask row (input ``b``, one per
    sample) is held while the sample's score rows pass; a masked entry becomes ``out.min_int``."""

    kind = "mask_fill"

    def __init__(self, name, op, g: ir.Graph):
        xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
        h, tq, tk = g.tensors[op.inputs[0]].shape
        self.op, self.tq = op, tq
        self.has_mask = isinstance(op, ir.MaskFill)
        self.causal = (not self.has_mask) or op.causal
        ins = [(xt, h * tq, tk)]
        if self.has_mask:
            ins.append((g.type_of(op.inputs[1]), 1, tk))
        super().__init__(name, ins, (out_t, h * tq, tk))

    def timing(self, first, last):
        return first + 1, last + 1

    @property
    def ii(self):
        return self.in_specs[0][1]

    def elaborate(self, platform):
        m = Module()
        xt, rows, tk = self.in_specs[0]
        out_t = self.out_spec[0]
        xin = self.a if self.has_mask else self.i
        cnt = Signal(range(max(rows, 2)))
        qi = Signal(range(max(self.tq, 2)))  # query index of the current row
        keep = [Signal(name=f"k{j}") for j in range(tk)]
        have = Signal()
        if self.has_mask:
            mt = self.in_specs[1][0]
            ms = unpack(self.b.payload, tk, mt)
            m.d.comb += self.b.ready.eq(~have)
            with m.If(self.b.valid & ~have):
                m.d.sync += [have.eq(1)] + [k.eq(v != 0) for k, v in zip(keep, ms)]
        else:
            m.d.comb += have.eq(1)
            m.d.comb += [k.eq(1) for k in keep]
        xs = unpack(xin.payload, tk, xt)
        ys = []
        for j, x in enumerate(xs):
            kept = keep[j] & (qi >= j) if self.causal else keep[j]
            v = requantize(m, x, xt.frac, out_t, name=f"v{j}")
            ys.append(Mux(kept, v, out_t.min_int))
        can = ~self.o.valid | self.o.ready
        go = xin.valid & have & can
        m.d.comb += xin.ready.eq(have & can)
        with m.If(can):
            m.d.sync += self.o.valid.eq(xin.valid & have)
        with m.If(go):
            m.d.sync += [self.o.payload.as_value().eq(pack(ys)), qi.eq(Mux(qi == self.tq - 1, 0, qi + 1))]
            with m.If(cnt == rows - 1):
                m.d.sync += cnt.eq(0)
                if self.has_mask:
                    m.d.sync += have.eq(0)
            with m.Else():
                m.d.sync += cnt.eq(cnt + 1)
        return m


@block(ir.MaskFill)
def _mask_fill_block(n, g, parallelism):
    return MaskFillBlock(n.name, n, g)


@block(ir.CausalFill)
def _causal_fill_block(n, g, parallelism):
    return MaskFillBlock(n.name, n, g)


class MaskedPoolBlock(Block):
    """Mean over kept rows: the mask row (input ``b``) is held; running sums of kept rows and their
    count; the last row multiplies by ``recip[count]``."""

    kind = "masked_avg_pool"

    def __init__(self, name, op: ir.MaskedAvgPool, g: ir.Graph):
        xt, mt, out_t = g.type_of(op.inputs[0]), g.type_of(op.inputs[1]), g.type_of(op.output)
        rows, cols = row_shape(g.tensors[op.inputs[0]].shape)
        self.op = op
        self.acc_width = xt.width + max(1, (rows - 1).bit_length()) + 1
        super().__init__(name, [(xt, rows, cols), (mt, 1, rows)], (out_t, 1, cols))

    def timing(self, first, last):
        return last + 1, last + 1

    @property
    def ii(self):
        return self.in_specs[0][1]

    def elaborate(self, platform):
        from amaranth.hdl import Array, Const, signed
        m = Module()
        (xt, rows, cols), (mt, _, _) = self.in_specs
        out_t = self.out_spec[0]
        keep = [Signal(name=f"k{t}") for t in range(rows)]
        have = Signal()
        ms = unpack(self.b.payload, rows, mt)
        m.d.comb += self.b.ready.eq(~have)
        with m.If(self.b.valid & ~have):
            m.d.sync += [have.eq(1)] + [k.eq(v != 0) for k, v in zip(keep, ms)]
        acc = [Signal(signed(self.acc_width), name=f"s{j}") for j in range(cols)]
        n = Signal(range(rows + 1))
        cnt = Signal(range(max(rows, 2)))
        kt = Array(keep)[cnt]
        xs = unpack(self.a.payload, cols, xt)
        rmax = int(self.op.recip.max())
        rec = Array(Const(int(v), range(max(rmax + 1, 2))) for v in self.op.recip)[n + kt]
        ys = [requantize(m, (a + Mux(kt, x, 0)) * rec, xt.frac + self.op.scale_frac, out_t, name=f"y{j}")
              for j, (a, x) in enumerate(zip(acc, xs))]
        can = ~self.o.valid | self.o.ready
        m.d.comb += self.a.ready.eq(have & can)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.a.valid & have & can):
            with m.If(cnt == rows - 1):
                m.d.sync += [cnt.eq(0), n.eq(0), have.eq(0), self.o.valid.eq(1),
                             self.o.payload.as_value().eq(pack(ys))]
                m.d.sync += [a.eq(0) for a in acc]
            with m.Else():
                m.d.sync += [cnt.eq(cnt + 1), n.eq(n + kt)]
                m.d.sync += [a.eq(a + Mux(kt, x, 0)) for a, x in zip(acc, xs)]
        return m


@block(ir.MaskedAvgPool)
def _masked_pool_block(n, g, parallelism):
    return MaskedPoolBlock(n.name, n, g)
