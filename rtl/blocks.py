"""Amaranth blocks, one per IR op kind, joined by ``lib.stream`` valid/ready streams.

A stream beat carries one row (the last-axis vector) of a tensor as a
``data.ArrayLayout`` of mantissas.  Each block states its timing analytically
(:meth:`Block.timing`): given when its inputs' first and last rows arrive, when
its output's first and last rows leave, and how many cycles it is busy per
sample (its initiation interval).  The simulation checks these numbers.
"""
from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Array, Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import ir
from ..errors import FabformerError
from ..fixed import FixedType
from .arith import KEEP_FF, dsp_cells, dsp_mul, logic_product_halves, mul_stages, signed_bits, overflow, pack, requantize, shape_of, shift_round, stage, unpack

__all__ = ["mac_depth", "scale_stages", "queue_rows", "Block", "Pipe", "RowMap", "AddBlock", "MacEngine", "DenseBlock", "Wire", "MatMulBlock", "ReshapeBlock",
           "PoolBlock", "Fork", "row_shape", "row_layout", "mac_split"]


def row_shape(shape) -> tuple[int, int]:
    """(rows, cols) of a tensor streamed one last-axis row per beat."""
    shape = tuple(shape)
    if not shape:
        return 1, 1
    return int(np.prod(shape[:-1])) if len(shape) > 1 else 1, int(shape[-1])


def row_layout(t: FixedType, cols: int):
    return data.ArrayLayout(shape_of(t), cols)


def mac_split(k: int, n: int, parallelism: int) -> tuple[int, int]:
    """Multipliers (``pn`` output lanes x ``pk`` products per lane) for a ``k x n`` product
    with at most ``parallelism`` multipliers: ``pn`` divides ``n`` and ``pk`` divides ``k``."""
    p = max(1, int(parallelism))
    pn = max(d for d in range(1, n + 1) if n % d == 0 and d <= p)
    pk = max(d for d in range(1, k + 1) if k % d == 0 and d <= max(1, p // pn))
    return pn, pk


def issue_times(ready: list, gap: int) -> list:
    """Cycles at which jobs start: job ``r`` when its input is ready, at most one every ``gap``."""
    out = []
    for t in ready:
        out.append(t if not out else max(t, out[-1] + gap))
    return out


class Block(wiring.Component):
    """Base of all blocks: ``i`` (or ``a``/``b``) input streams and an ``o`` output stream."""

    kind = "block"

    def __init__(self, name: str, ins: list, out: tuple):
        self.name = name
        self.in_specs = ins  # [(type, rows, cols)]
        self.out_spec = out
        members = {}
        names = ["i"] if len(ins) == 1 else ["a", "b"]
        for nm, (t, rows, cols) in zip(names, ins):
            members[nm] = In(stream.Signature(row_layout(t, cols)))
        t, rows, cols = out
        members["o"] = Out(stream.Signature(row_layout(t, cols)))
        self.port_names = names
        super().__init__(members)

    # analytic timing -----------------------------------------------------------
    multipliers = 0
    logic_multipliers = 0  # of ``multipliers``, those built in logic (set by ``generate(..., dsps=N)``)

    @property
    def other_dsp_cells(self) -> int:
        """DSP cells of the block's multiplies outside a MAC engine's multipliers (the row
        functions' products, a matmul's scale), as synthesis maps :func:`arith.dsp_mul`."""
        return 0

    def timing(self, first: int, last: int) -> tuple[int, int]:
        """(first output beat, last output beat) cycles given first/last input beat cycles."""
        raise NotImplementedError

    def row_times(self, ins: list) -> list:
        """The analytic model row by row: the cycle of each output row's beat, given the
        cycles of each input port's rows (every consumer ready).  This default serves blocks
        of one output row (it comes at :meth:`timing`'s last beat) and blocks that pass each
        row on after a fixed delay (row ``r`` of every port in, row ``r`` out; a port of one
        row is held for all of them); other blocks override it."""
        first, last = max(t[0] for t in ins), max(t[-1] for t in ins)
        rows = self.out_spec[1]
        if rows == 1:
            return [self.timing(first, last)[1]]
        delay = self.timing(0, 0)[0]
        if any(len(t) not in (1, rows) for t in ins) or self.timing(0, rows)[1] != rows + delay:
            raise NotImplementedError(f"{type(self).__name__} needs its own row_times")
        return [max(t[r] if len(t) > 1 else t[0] for t in ins) + delay for r in range(rows)]

    @property
    def ii(self) -> int:
        raise NotImplementedError

    def info(self) -> dict:
        f, l = self.timing(0, self.in_specs[0][1] - 1)
        return {"name": self.name, "kind": self.kind, "multipliers": self.multipliers,
                "logic_multipliers": self.logic_multipliers, "latency": l, "ii": self.ii}


def _payload_cols(layout, width: int) -> int:
    """The columns of a row payload (an array layout), or 1 where it is not one or does not split."""
    cols = layout.length if isinstance(layout, data.ArrayLayout) else 1
    return cols if cols > 1 and width % cols == 0 else 1


def _column_outputs(m, o, can, valid, ys, name: str = "o") -> list:
    """The output register of a row pipeline that advances on ``can`` (``~o.valid | o.ready``):
    ``o.valid`` takes ``valid`` and column ``j`` of the payload takes ``ys[j]``.  Each column's
    enable is its own LUT of a kept copy of ``o.valid`` and the consumer's ``ready`` (the same
    value as ``can``), so no single net enables the whole row's registers.  Returns the column
    enables (for the stages before the output register)."""
    with m.If(can):
        m.d.sync += o.valid.eq(valid)
    out = o.payload.as_value()
    w = len(out) // len(ys)
    enables = []
    for j, y in enumerate(ys):
        vk = Signal(name=f"{name}_valid_{j}", attrs={KEEP_FF: 1})
        en = Signal(name=f"{name}_en_{j}")
        with m.If(can):
            m.d.sync += vk.eq(valid)
        m.d.comb += en.eq(~vk | o.ready)
        with m.If(en):
            m.d.sync += out[j * w:(j + 1) * w].eq(y)
        enables.append(en)
    return enables


def skid(m, port, name: str):
    """A one-row skid buffer in front of a consumer of ``port`` (a stream input): ``port.ready`` is
    a register (the buffer is empty), so a consumer whose acceptance depends on its own
    consumer's ``ready`` does not pass that ready on to its producer: the chains of ``ready``
    through several blocks end here.  Returns ``(valid, payload, take)``: the row offered (the
    buffered one first) and the signal the consumer drives when it takes it.  No cycle is
    added: a row offered while the consumer takes it passes straight through, and a row
    arriving while it does not waits in the buffer instead of in its producer."""
    full = Signal(name=f"{name}_full")
    src = port.payload.as_value()
    width = len(src)
    cols = _payload_cols(port.payload.shape(), width)
    sw = width // cols
    # the buffer's enable and the payload select take, per column, their own kept copy of ``full``:
    # the one register drove every bit's select (a 100 MHz build routed an add's skid ``full``
    # with 8.6 ns)
    copies = [full] if cols == 1 else [Signal(name=f"{name}_full_{k}", attrs={KEEP_FF: 1}) for k in range(cols)]
    buf = Signal(width, name=f"{name}_buf")
    valid = Signal(name=f"{name}_valid")
    payload = Signal(width, name=f"{name}_row")
    take = Signal(name=f"{name}_take")
    full_next = Signal(name=f"{name}_full_next")
    m.d.comb += [port.ready.eq(~full), valid.eq(full | port.valid), full_next.eq(~take & (full | port.valid))]
    m.d.sync += [c.eq(full_next) for c in ([full] if cols == 1 else [full, *copies])]
    parts = []
    for k, c in enumerate(copies):
        sl = slice(k * sw, (k + 1) * sw)
        # the buffer copies the offered row whenever it is empty (its enable is the register
        # ``full``, not the consumer's ``take``: that would reach every payload bit); only
        # ``full`` decides whether the copy is kept
        with m.If(~c):
            m.d.sync += buf[sl].eq(src[sl])
        parts.append(Mux(c, buf[sl], src[sl]))
    m.d.comb += payload.eq(Cat(*parts))
    return valid, payload, take


class Pipe:
    """Pipeline registers for a :class:`RowMap` function: ``stage(*groups)`` registers every
    value of every group (lists of values) under the pipeline's enable and returns the
    registered lists.  Every value that lives past a stage must go through it."""

    def __init__(self, m, en):
        self.m, self.en, self.stages = m, en, 0

    def stage(self, *groups):
        from amaranth.hdl import Value
        out = []
        for g in groups:
            regs = []
            for k, v in enumerate(g):
                v = Value.cast(v)
                r = Signal(v.shape(), name=f"p{self.stages}_{len(out)}_{k}")
                with self.m.If(self.en):
                    self.m.d.sync += r.eq(v)
                regs.append(r)
            out.append(regs)
        self.stages += 1
        return out


class RowMap(Block):
    """A row-wise function in ``fn.stages`` pipeline stages followed by one output register
    (latency ``stages + 1``, II 1 row).  The whole pipeline advances while the output
    register is free or read (one enable): bit-exact under any stall pattern."""

    def __init__(self, name, kind, fn, in_t, out_t, rows, in_cols, out_cols):
        self.kind = kind
        self.fn = fn  # fn(m, elems, pipe) -> list of output element values
        self.stages = int(getattr(fn, "stages", 0))
        super().__init__(name, [(in_t, rows, in_cols)], (out_t, rows, out_cols))

    def timing(self, first, last):
        return first + self.stages + 1, last + self.stages + 1

    @property
    def ii(self):
        return self.in_specs[0][1]

    def elaborate(self, platform):
        m = Module()
        in_t, _, in_cols = self.in_specs[0]
        can = Signal()
        m.d.comb += can.eq(~self.o.valid | self.o.ready)
        pipe = Pipe(m, can)
        i_valid, i_row, i_take = skid(m, self.i, "in")
        xs = unpack(i_row, in_cols, in_t)
        ys = self.fn(m, xs, pipe)
        assert pipe.stages == self.stages, (self.kind, pipe.stages, self.stages)
        valid = i_valid
        for k in range(self.stages):
            v = Signal(name=f"valid{k}")
            with m.If(can):
                m.d.sync += v.eq(valid)
            valid = v
        m.d.comb += i_take.eq(can & i_valid)
        if self.stages == 0 and len(ys) > 1:
            _column_outputs(m, self.o, can, valid, ys)
        else:
            with m.If(can):
                m.d.sync += self.o.valid.eq(valid)
                m.d.sync += self.o.payload.as_value().eq(pack(ys))
        return m


class AddBlock(Block):
    """Element-wise sum of two streams (golden ``add``); consumes one beat of each at once.
    Two stages under one enable (the output register free or read): the exact sums, then
    their rounding and saturation into the output register (no add, round and clip carry
    chains in one cycle).  Each input comes through a :func:`skid` buffer, so ``ready`` is
    a register and the consumer's ``ready`` stops here."""

    kind = "add"

    def __init__(self, name, a_t, b_t, out_t, rows, cols):
        super().__init__(name, [(a_t, rows, cols), (b_t, rows, cols)], (out_t, rows, cols))

    def timing(self, first, last):
        return first + 2, last + 2

    @property
    def ii(self):
        return self.in_specs[0][1]

    def elaborate(self, platform):
        m = Module()
        (at, _, cols), (bt, _, _) = self.in_specs
        out_t = self.out_spec[0]
        f = max(at.frac, bt.frac)
        can = Signal(name="can")
        m.d.comb += can.eq(~self.o.valid | self.o.ready)
        va, pa, ta = skid(m, self.a, "a")
        vb, pb, tb = skid(m, self.b, "b")
        take = Signal(name="take")
        m.d.comb += [take.eq(can & va & vb), ta.eq(take), tb.eq(take)]
        xa, xb = unpack(pa, cols, at), unpack(pb, cols, bt)
        sums = [(p << (f - at.frac)) + (q << (f - bt.frac)) for p, q in zip(xa, xb)]
        s1 = [Signal(Value.cast(v).shape(), name=f"sum{j}", reset_less=True) for j, v in enumerate(sums)]
        v1 = Signal(name="valid1")
        ys = [requantize(m, v, f, out_t, name=f"y{j}") for j, v in enumerate(s1)]
        # both stages advance together; each column's registers on its own enable (_column_outputs)
        with m.If(can):
            m.d.sync += v1.eq(take)
        for r, v, en in zip(s1, sums, _column_outputs(m, self.o, can, v1, ys)):
            with m.If(en):
                m.d.sync += r.eq(v)
        return m


# -- multiply-accumulate engine -------------------------------------------------------
def tree_stages(pk: int) -> int:
    """Pipeline stages of the adder tree that sums ``pk`` products (two adder levels a stage)."""
    levels = max(pk - 1, 0).bit_length()
    return (levels + 1) // 2


def scale_stages(acc_width: int, scale) -> int:
    """Register stages of a matmul's scale multiply: :func:`~fabformer.rtl.arith.dsp_mul` of
    the ``acc_width``-bit sums by the constant ``scale`` (the sums' copies, the products, their
    copies and, for sums wider than a DSP, the pieces' sum); 0 without a scale or with a scale of 1."""
    if scale is None or int(scale) == 1:
        return 0
    return mul_stages(acc_width, signed_bits(Const(int(scale))))


def mac_depth(pk: int, scale_stages: int = 0) -> int:
    """Cycles a job's row spends in the engine's pipeline after its last step, beyond the
    one output-register cycle: the step's operand/weight register, each multiplier's own two
    copies of them (one on the way, one beside its DSP: the DSP's input registers on ECP5),
    the product, the product's copy at the accumulator's width, the adder-tree stages, the
    accumulator, the scale multiply's stages (matmul: :func:`scale_stages`) and the
    requantizer's rounding register (its saturation goes into the output register)."""
    return 7 + tree_stages(pk) + scale_stages


def queue_rows(steps: int, pk: int, scale_stages: int = 0) -> int:
    """Rows the engine's output queue holds (its register included): a job starts only with a
    place reserved for its row, so the pipeline never stalls; this many places keep a job
    starting every ``steps`` cycles while the consumer takes each row when it appears."""
    lat = steps + 1 + mac_depth(pk, scale_stages)
    return max(2, -(-(lat + 1) // steps))


class MacEngine(Elaboratable):
    """Computes one output row ``y[n] = rq(sum_k x[k] * W[k, n] + bias[n])`` per job with
    ``pn * pk`` multipliers in ``steps = (K/pk) * (N/pn)`` cycles.

    A job is accepted (``start & ready``) together with its ``x`` elements and a
    head index; the next job is accepted during the last step of the current one,
    so a job starts every ``steps`` cycles.  Each step passes a free-running pipeline:
    the step's operands and weights are registered (no multiplexer before a multiplier),
    the products are registered, summed in an adder tree registered every two levels,
    accumulated, (matmul) scaled and registered, rounded and registered, saturated into an
    output queue; the row leaves ``steps + 1 + mac_depth`` cycles after its job started.
    A job starts only when its row has a place reserved in the queue (``queue_rows``), so
    the consumer's ``ready`` never reaches the pipeline.
    ``x`` rotates by ``pk`` elements a step (the step's operands are always its first
    ``pk``: no wide multiplexer).  ``weight(m, eng, i, j)`` returns the weight (value or int)
    feeding lane ``i``, product ``j``: with ``weight_stage=0`` the current step's (the engine
    registers it), with ``weight_stage=1`` the previous cycle's step's, already in a register
    (a synchronous read port addressed by the step registers themselves, so no next-step
    logic comes before the memory).  ``eng.state`` holds the step registers (``head``, ``kb``,
    ``nb``, ``cnt``) and ``eng.next`` their values in the next cycle, so weights can come from
    synchronous (block RAM) read ports addressed one cycle ahead.  ``bias(b, i)`` is an int
    (already shifted to the accumulator frac) or None;
    ``scale`` an int the sums are multiplied by before they are requantized from ``frac``
    fraction bits to ``out_t``.
    """

    def __init__(self, k, n, pn, pk, x_t, acc_width, out_t, heads, weight, bias, frac, const_weights=None,
                 scale=None, chain=1, weight_stage=0, logic=0):
        self.k, self.n, self.pn, self.pk = k, n, pn, pk
        # the last ``logic`` multipliers (lane by lane) are built in logic, not on DSP cells
        # (:func:`logic_product_halves`: the same register stages, so the same cycles)
        self.logic = logic
        self.weight_stage = weight_stage
        self.KB, self.NB = k // pk, n // pn
        self.steps = self.KB * self.NB
        self.x_t, self.out_t, self.heads = x_t, out_t, heads
        self.acc_width = acc_width
        self.weight, self.bias, self.frac, self.scale = weight, bias, frac, scale
        self.const_weights = const_weights  # full [k, n] int array when steps == 1 (zero -> no multiplier)
        self.scale_stages = scale_stages(acc_width, scale)
        self.depth = mac_depth(pk, self.scale_stages)
        self.queue = queue_rows(self.steps, pk, self.scale_stages)
        # chain > 1: a group of ``chain`` jobs (head 0 .. chain-1, in order) sums into one output row
        # (a flattened input arriving row by row); each job adds its x to the group's running sums
        self.chain = chain
        self.start = Signal()
        self.ready = Signal()
        self.x = [Signal(shape_of(x_t), name=f"x_in{j}") for j in range(k)]
        self.head = Signal(range(max(heads, 2)))
        self.o = stream.Signature(row_layout(out_t, n)).create(path=("eng_o",))
        self.busy = Signal()
        self.done = Signal()  # the current job's last step runs this cycle (its weights are read now)
        self.multipliers = 0
        # step registers and their values in the next cycle (driven by elaborate)
        self.state = {"head": Signal.like(self.head, name="head_reg"), "kb": Signal(range(max(self.KB, 2)), name="kb"),
                      "nb": Signal(range(max(self.NB, 2)), name="nb"), "cnt": Signal(range(max(self.steps, 2)), name="cnt")}
        if chain > 1:  # the step within the whole group (weights of all its jobs in order)
            self.state["gcnt"] = Signal(range(max(self.steps * chain, 2)), name="gcnt")
        self.next = {k: Signal.like(v, name=f"next_{k}") for k, v in self.state.items()}

    def elaborate(self, platform):
        m = Module()
        KB, NB, pn, pk, K = self.KB, self.NB, self.pn, self.pk, self.k
        x_reg = [Signal(shape_of(self.x_t), name=f"x{j}") for j in range(K)]
        head, kb, nb, cnt = (self.state[k] for k in ("head", "kb", "nb", "cnt"))
        aw = self.acc_width
        # the step's position flags are registers (kept equal to kb == KB - 1 and that and
        # nb == NB - 1, from the step registers' next values): they fan out across the engine to
        # its next-step logic and weight read addresses, which they reach straight from a flip-flop
        last_k = Signal(name="last_k", init=int(KB == 1))
        last = Signal(name="last", init=int(KB == 1 and NB == 1))
        advance = self.busy
        m.d.comb += self.done.eq(advance & last)
        # places reserved in the output queue: a job reserves one when it starts, a row read frees one
        reserved = Signal(range(self.queue + 1), name="reserved")
        group_first = (self.head == 0) if self.chain > 1 else Const(1, 1)
        take = Signal(name="take")
        pop = self.o.valid & self.o.ready
        m.d.comb += take.eq(self.start & self.ready)
        reserved_next = Signal.like(reserved, name="reserved_next")
        m.d.comb += reserved_next.eq(reserved + (take & group_first) - pop)
        m.d.sync += reserved.eq(reserved_next)
        nxt = self.next
        if self.chain > 1:  # a group's first job needs a place: ready follows the head of the job offered
            m.d.comb += self.ready.eq(((reserved != self.queue) | ~group_first) & (~self.busy | last))
        else:
            # ready is a register holding (a place free) & (idle or in the last step), computed from
            # the next values of the registers it is a function of: the producer's FIFO read enable,
            # which fans out to its row-wide output register, starts at a flip-flop
            ready_r = Signal(name="ready_r", init=1)
            busy_next = take | (self.busy & ~last)
            last_next = (nxt["kb"] == KB - 1) & (nxt["nb"] == NB - 1)
            m.d.sync += ready_r.eq((reserved_next != self.queue) & (~busy_next | last_next))
            m.d.comb += self.ready.eq(ready_r)
        # the step registers are 0 whenever the engine is idle (a job's last step clears them), so a
        # job taken needs no clear, and the consumer's handshake (``start``, from the producer's valid
        # in another block) stays out of the weight memories' read addresses; ``head`` and ``x`` load
        # whenever a job could be taken (idle, or the last step), which holds the taken job's values
        can_take = Signal(name="can_take")
        m.d.comb += can_take.eq(~self.busy | last)
        m.d.comb += [
            nxt["head"].eq(Mux(can_take, self.head, head)),
            nxt["kb"].eq(Mux(advance & last_k, 0, Mux(advance, kb + 1, kb))),
            nxt["nb"].eq(Mux(advance & last, 0, Mux(advance & last_k, nb + 1, nb))),
            nxt["cnt"].eq(Mux(advance & last, 0, Mux(advance, cnt + 1, cnt))),
        ]
        m.d.sync += [last_k.eq(nxt["kb"] == KB - 1), last.eq((nxt["kb"] == KB - 1) & (nxt["nb"] == NB - 1))]
        m.d.sync += [head.eq(nxt["head"]), kb.eq(nxt["kb"]), nb.eq(nxt["nb"]), cnt.eq(nxt["cnt"]),
                     self.busy.eq(take | (self.busy & ~last))]
        if self.chain > 1:
            gcnt = self.state["gcnt"]
            # 0 between groups: cleared by the group's last step
            m.d.comb += nxt["gcnt"].eq(Mux(advance & last & (head == self.chain - 1), 0,
                                           Mux(advance, gcnt + 1, gcnt)))
            m.d.sync += gcnt.eq(nxt["gcnt"])
        # x: loaded with the job, then rotated by pk each step (its first pk are the step's operands)
        with m.If(can_take):
            m.d.sync += [r.eq(x) for r, x in zip(x_reg, self.x)]
        if KB > 1:
            with m.Elif(advance):
                m.d.sync += [x_reg[j].eq(x_reg[(j + pk) % K]) for j in range(K)]

        def reg(value, name, shape=None, data=False):
            # data=True: a pipeline data register (no reset: its valid flag travels beside it)
            return stage(m, value, name, shape, reset_less=data)

        # stage 1: the step's operands, weights and tags
        v1 = reg(advance, "v1")
        first1, lastk1, nb1 = reg(kb == 0, "first1"), reg(last_k, "lastk1"), reg(nb, "nb1")
        gfirst1 = reg(head == 0 if self.chain > 1 else 1, "gfirst1")  # the group's first job: start from the bias
        last1 = reg(last & (head == self.chain - 1) if self.chain > 1 else last, "last1")  # the row is complete
        x1 = [reg(x_reg[j], f"x1_{j}", data=True) for j in range(pk)]
        mults = 0
        prods = []
        in_logic = pn * pk - self.logic  # the index of the first multiplier built in logic
        for i in range(pn):
            terms = []
            for j in range(pk):
                if self.const_weights is not None:
                    w = int(self.const_weights[j, i])
                    if w == 0:
                        continue  # pruned weight: no multiplier
                    w1 = Const(w)
                else:
                    # the weight (in its stage-1 register), then its copy beside the DSP
                    w1 = self.weight(m, self, i, j)
                    if not self.weight_stage:
                        w1 = stage(m, w1, f"w1_{i}_{j}", reset_less=True)
                    w1 = stage(m, stage(m, w1, f"wf{i}_{j}", reset_less=True), f"wd{i}_{j}", reset_less=True)
                # each multiplier's own two copies of the shared operand (kept apart from the
                # other lanes' copies): one on the way, one beside its DSP wherever placement puts
                # it, so a route across the die has two cycles; the product is registered beside
                # the DSP too, then copied at the accumulator's width next to the adder tree
                xf = stage(m, x1[j], f"xf{i}_{j}", keep=True, reset_less=True)
                xd = stage(m, xf, f"xd{i}_{j}", keep=True, reset_less=True)
                if self.const_weights is None and i * pk + j >= in_logic:
                    halves = logic_product_halves(m, xd, w1, f"p{i}_{j}")
                    terms.append(halves[0] + halves[1] if len(halves) > 1 else halves[0])
                else:
                    terms.append(stage(m, xd * w1, f"p{i}_{j}", reset_less=True))
                mults += 1
            prods.append(terms)
        self.multipliers = mults
        # stage 2: products; then the adder tree, registered every two levels
        tags = [v1, first1, lastk1, last1, nb1, gfirst1]
        # the tags travel beside the data: operand copies (two), products, product copies, then
        # one stage per adder-tree stage; their last stage is one kept copy per lane, so each
        # lane's accumulator multiplexers and enables have their own (a 124-multiplier build
        # routed at 76.73 MHz on the head's one 'first' register -> its accumulators' select, 5.8 ns)
        suffixes = ["f", "d", "p", "2", *[str(3 + s) for s in range(tree_stages(pk))]]
        for suffix in suffixes[:-1]:
            tags = [reg(t, f"{t.name[:-1]}{suffix}") for t in tags]
        used = [True, True, NB > 1 or self.chain > 1, True, NB > 1 or self.chain > 1, self.chain > 1]  # v first lk last nb gfirst
        lanes = [[stage(m, t, f"{t.name[:-1]}{suffixes[-1]}_{i}", keep=True) if u else None
                  for t, u in zip(tags, used)] for i in range(pn)]
        level = [[reg(t, f"prod{i}_{j}", signed(aw), data=True) for j, t in enumerate(terms)] for i, terms in enumerate(prods)]
        for s in range(tree_stages(pk)):
            nxt_level = []
            for i, terms in enumerate(level):
                for _ in range(2):
                    if len(terms) > 1:
                        terms = [a + b for a, b in zip(terms[0::2], terms[1::2])] + ([terms[-1]] if len(terms) % 2 else [])
                nxt_level.append([reg(t, f"tree{s}_{i}_{j}", signed(aw), data=True) for j, t in enumerate(terms)])
            level = nxt_level
        # accumulator stage
        acc = [Signal(signed(aw), name=f"acc{i}") for i in range(pn)]
        res = [Signal(signed(aw), name=f"res{n}") for n in range(self.n)]
        outw = [Signal(signed(aw), name=f"sum{n}") for n in range(self.n)]
        q = []
        for i in range(pn):
            v, first, lk, lst, nbt, gfirst = lanes[i]
            partial = level[i][0] if level[i] else Const(0, signed(aw))
            if self.bias is not None:
                bvals = [int(self.bias(b, i)) for b in range(NB)]
                b0 = Const(bvals[0], signed(aw)) if NB == 1 else Array(Const(bv, signed(aw)) for bv in bvals)[nbt]
            else:
                b0 = Const(0, signed(aw))
            if self.chain > 1:  # a later job of a group goes on from the group's sums so far
                kept = res[i] if NB == 1 else Array(res[b * pn + i] for b in range(NB))[nbt]
                b0 = Mux(gfirst, b0, kept)
            new = Signal(signed(aw), name=f"new{i}")
            m.d.comb += new.eq(Mux(first, b0, acc[i]) + partial)
            q.append(new)
            with m.If(v):
                m.d.sync += acc[i].eq(new)
                if NB > 1 or self.chain > 1:
                    with m.If(lk):
                        with m.Switch(nbt):
                            for b in range(NB if self.chain > 1 else NB - 1):
                                with m.Case(b):
                                    m.d.sync += res[b * pn + i].eq(new)
        sum_valid = Signal(name="sum_valid")
        v, _, _, lst, _, _ = lanes[0]
        m.d.sync += sum_valid.eq(v & lst)
        for n, (o, x) in enumerate(zip(outw, [*res[:(NB - 1) * pn], *q])):
            v, _, _, lst, _, _ = lanes[n % pn]  # the lane that computes this output column
            with m.If(v & lst):
                m.d.sync += o.eq(x)
        if self.scale_stages:
            sums = [dsp_mul(m, s, Const(int(self.scale)), f"scaled{j}") for j, s in enumerate(outw)]
            for k in range(self.scale_stages):
                sum_valid = reg(sum_valid, f"scaled_valid{k}")
        else:
            sums = outw
        # requantize in two registered halves: shift and round, then saturate
        t = self.out_t
        rounded = [reg(shift_round(s, self.frac - t.frac, t.rounding), f"rounded{j}", data=True) for j, s in enumerate(sums)]
        ys = []
        for j, r in enumerate(rounded):
            y = Signal(shape_of(t), name=f"q{j}")
            m.d.comb += y.eq(overflow(r, t))
            ys.append(y)
        ys = Cat(*ys)
        _out_queue(m, sum_valid, ys, self.o, self.queue - 1)  # written with the rounded row, a cycle later
        return m


def _out_queue(m, w_en_before, w_data, o, depth: int):
    """The block's output as a first-in first-out queue of ``depth + 1`` rows: ``o.payload`` is
    the oldest row (an asynchronous memory read; a register for a one-row queue), ``o.valid``
    says that the queue holds one.  A row is written whenever it comes, one cycle after
    ``w_en_before`` (the write enable is a register of it: the caller's ``w_data`` is the row a
    cycle after ``w_en_before``): its producer reserved the place, so no handshake reaches the
    enables of the row-wide storage, and the consumer's take moves only the read pointer.  A row
    written at one edge is offered from the next, as from an output register: the cycles are
    those of an output register with a ``depth``-row queue in front of it.  Each column slice of
    the storage takes its own kept register of ``w_en_before`` as its write enable (one register
    that drove every slice's enables and pointer was routed with 10.8 ns at 100 MHz)."""
    w_en = stage(m, w_en_before, "q_wen")
    cap = depth + 1
    count = Signal(range(cap + 1), name="q_count")
    count_next = Signal(range(cap + 1), name="q_count_next")
    pop = Signal(name="q_pop")
    m.d.comb += [pop.eq(o.valid & o.ready), count_next.eq(count + w_en - pop)]
    m.d.sync += [count.eq(count_next), o.valid.eq(count_next != 0)]
    if cap == 1:
        row = Signal(len(w_data), name="q_row", reset_less=True)
        with m.If(w_en):
            m.d.sync += row.eq(w_data)
        m.d.comb += o.payload.as_value().eq(row)
        return
    cols = _payload_cols(o.payload.shape(), len(w_data))
    if cols > 1:
        w_en = [stage(m, w_en_before, f"q_wen_{k}", keep=True) for k in range(cols)]
    m.d.comb += o.payload.as_value().eq(row_ring(m, "out_queue", cap, w_data, w_en, w_en, pop, prefix="q", slices=cols))


def row_ring(m, name: str, places: int, w_data, w_en, w_move, r_move, prefix: str, slices: int = 1):
    """A ring of ``places`` rows (``len(w_data)`` bits each) in memories read asynchronously:
    the place at the write pointer is written when ``w_en`` and the pointer moves on ``w_move``;
    the read pointer moves on ``r_move`` (``w_en`` and ``w_move`` may be lists, one per slice).
    Returns the row at the read pointer.  The row is
    stored in ``slices`` equal column slices (submodule ``name``, then ``name_1``, ...), each
    with its own kept copies of the two pointers: no pointer register drives the address of a
    whole row's storage (a net that spread across the die)."""
    width = len(w_data)
    if width % slices:
        raise ValueError(f"row_ring: {width} bits do not split into {slices} slices")
    sw = width // slices

    def step(p):
        return Mux(p == places - 1, 0, p + 1)
    out = []
    for k in range(slices):
        mem = Memory(shape=unsigned(sw), depth=places, init=[])
        m.submodules[name if k == 0 else f"{name}_{k}"] = mem
        wp_, rp_ = mem.write_port(), mem.read_port(domain="comb")
        sfx = "" if k == 0 else f"_{k}"
        keep = {KEEP_FF: 1} if slices > 1 else {}
        wptr = Signal(range(places), name=f"{prefix}_wptr{sfx}", attrs=keep)
        rptr = Signal(range(places), name=f"{prefix}_rptr{sfx}", attrs=keep)
        en = w_en[k] if isinstance(w_en, (list, tuple)) else w_en
        mv = w_move[k] if isinstance(w_move, (list, tuple)) else w_move
        m.d.comb += [wp_.addr.eq(wptr), wp_.data.eq(w_data[k * sw:(k + 1) * sw]), wp_.en.eq(en), rp_.addr.eq(rptr)]
        with m.If(mv):
            m.d.sync += wptr.eq(step(wptr))
        with m.If(r_move):
            m.d.sync += rptr.eq(step(rptr))
        out.append(rp_.data)
    return Cat(*out)


def _rom_word(m, name, words: list[list[int]], t: FixedType, addr):
    """A ROM of packed weight words with a synchronous read port (block RAM where the
    synthesis tool sees fit): the word at ``addr`` appears one cycle later.  Returns the
    element values of the read word."""
    per = len(words[0])
    w = t.width
    init = [sum((int(v) & ((1 << w) - 1)) << (w * e) for e, v in enumerate(word)) for word in words]
    mem = Memory(shape=unsigned(w * per), depth=len(words), init=init)
    m.submodules[name] = mem
    port = mem.read_port(domain="sync")
    m.d.comb += port.addr.eq(addr)
    return unpack(port.data, per, t)


class DenseBlock(Block):
    """Dense layer over the last axis; weights in ROM (constants when fully unrolled).

    ``flat_rows``: the dense of a flattened tensor, fed with the tensor's rows as they come
    (``flat_rows`` rows of ``K / flat_rows``): each row is one job of a chained group that
    adds its share of the products to the output row's sums, so the layer works while its
    input is still arriving instead of after a flatten has buffered it whole."""

    kind = "dense"

    def __init__(self, name, op: ir.Dense, g: ir.Graph, parallelism: int, flat_rows: int = 0):
        xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
        rows, k = row_shape(g.tensors[op.inputs[0]].shape)
        n = int(op.weight.shape[1])
        self.chain = 1
        if flat_rows:
            if rows != 1 or k % flat_rows:
                raise FabformerError(f"{name}: a dense over a flattened tensor needs one input row of a multiple "
                                     f"of {flat_rows} elements, not {rows} x {k}")
            self.chain, rows, k = flat_rows, 1, k // flat_rows
        self.op, self.rows = op, rows
        self.pn, self.pk = mac_split(k, n, parallelism)
        self.steps = (k // self.pk) * (n // self.pn)
        self.const = self.steps == 1 and self.chain == 1
        self.multipliers = int(np.count_nonzero(op.weight)) if self.const else self.pn * self.pk
        self.acc_frac = op.acc_frac(g)
        self.acc_width = op.acc_type(g).width + 1
        self.x_t = xt
        super().__init__(name, [(xt, rows * self.chain, k)], (out_t, rows, n))

    @property
    def depth(self) -> int:
        """Cycles from a job's start to its row on ``o``: the steps, the pipeline and the output register."""
        return self.steps + 1 + mac_depth(self.pk)

    def row_times(self, ins):
        out = [s + self.depth for s in issue_times(ins[0], self.steps)]
        return out[self.chain - 1::self.chain]

    def timing(self, first, last):
        d = self.depth
        jobs = self.rows * self.chain
        end = max(last + d, first + (jobs - 1) * self.steps + d)
        return (end if self.chain > 1 else first + d), end

    @property
    def ii(self):
        return self.rows * self.chain * self.steps

    def elaborate(self, platform):
        m = Module()
        op, pn, pk, C = self.op, self.pn, self.pk, self.chain
        k = op.weight.shape[0] // C
        n = op.weight.shape[1]
        KB, NB = k // pk, n // pn
        out_t = self.out_spec[0]
        W = op.weight
        shift = self.acc_frac - op.bias_type.frac
        words = None
        if not self.const:
            words = [[W[c * k + kb * pk + j, nb * pn + i] for i in range(pn) for j in range(pk)]
                     for c in range(C) for nb in range(NB) for kb in range(KB)]
        wvals = {}

        def weight(mm, eng, i, j):
            if "w" not in wvals:  # addressed by the step counter: the word of the step of a cycle ago
                wvals["w"] = _rom_word(mm, "weights", words, op.weight_type, eng.state["gcnt" if C > 1 else "cnt"])
            return wvals["w"][i * pk + j]

        eng = MacEngine(k, n, pn, pk, self.x_t, self.acc_width, out_t, C, weight,
                        lambda b, i: int(op.bias[b * pn + i]) << shift, self.acc_frac,
                        const_weights=W if self.const else None, chain=C, weight_stage=1,
                        logic=self.logic_multipliers)
        m.submodules.engine = eng
        xs = unpack(self.i.payload, k, self.x_t)
        m.d.comb += [eng.start.eq(self.i.valid), self.i.ready.eq(eng.ready)]
        m.d.comb += [a.eq(b) for a, b in zip(eng.x, xs)]
        if C > 1:  # the job's place in its group: the input row's index
            row = Signal(range(C), name="row")
            m.d.comb += eng.head.eq(row)
            with m.If(eng.start & eng.ready):
                m.d.sync += row.eq(Mux(row == C - 1, 0, row + 1))
        wiring.connect(m, eng.o, wiring.flipped(self.o))
        return m


class Wire(Block):
    """A reshape that the consumer does itself (a flatten feeding a row-chained dense): the
    rows pass through unchanged, no cycle, no logic."""

    kind = "wire"

    def __init__(self, name, kind, t, rows, cols):
        self.kind = kind
        super().__init__(name, [(t, rows, cols)], (t, rows, cols))

    def timing(self, first, last):
        return first, last

    @property
    def ii(self):
        return self.in_specs[0][1]

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload), self.i.ready.eq(self.o.ready)]
        return m


class MatMulBlock(Block):
    """Batched (per-head) matrix product of two streamed tensors.  Both operands are
    buffered in memories (block or distributed RAM) of two banks each (ping-pong): the
    next sample's operands load into the other bank while each row of ``a`` runs through
    a :class:`MacEngine` whose weights are ``b``; a row's job starts once ``b`` is whole
    and that row of ``a`` is written (``a`` streams in: attention's ``A·V`` works on each
    probability row as the softmax emits it).  ``a`` is one memory of rows;
    ``b`` is split over ``R`` memories by row (``R`` = the lanes that need different rows
    of ``b`` in one step), so every step reads one word from each.  Reads are
    synchronous and addressed one cycle ahead.  A bank's ``a`` half is free once its
    last row is issued, its ``b`` half once the last row's job has read its weights."""

    kind = "matmul"

    def __init__(self, name, op: ir.MatMul, g: ir.Graph, parallelism: int, a_order=None):
        at, bt, out_t = (g.type_of(op.inputs[0]), g.type_of(op.inputs[1]), g.type_of(op.output))
        h, mm, k = g.tensors[op.inputs[0]].shape
        # the head of the a row at each stream position (rows of a come in a_order; the
        # output rows leave in the same order)
        self.a_heads = [r // mm for r in (a_order or range(h * mm))]
        bs = g.tensors[op.inputs[1]].shape
        n = int(g.tensors[op.output].shape[2])
        self.op, self.h, self.m, self.k, self.n = op, h, mm, k, n
        self.a_rows, self.b_rows, self.b_cols = h * mm, bs[0] * bs[1], bs[2]
        self.pn, self.pk = mac_split(k, n, parallelism)
        self.steps = (k // self.pk) * (n // self.pn)
        self.multipliers = self.pn * self.pk
        self.acc_width = op.acc_type(g).width + 1
        self.frac = at.frac + bt.frac + op.scale_frac
        super().__init__(name, [(at, h * mm, k), (bt, self.b_rows, self.b_cols)], (out_t, h * mm, n))

    def timing(self, first, last):
        out = self.row_times([[first] + [last] * (self.a_rows - 1), [last]])
        return out[0], out[-1]

    def row_times(self, ins):
        # the job of a's row r issues once b is whole and row r is written (each visible the
        # cycle after its write), at most one job every ``steps`` cycles
        b_done = ins[1][-1]
        d = self.steps + 1 + mac_depth(self.pk, scale_stages(self.acc_width, self.op.scale))
        return [s + d for s in issue_times([max(b_done, t) + 1 for t in ins[0]], self.steps)]

    @property
    def other_dsp_cells(self) -> int:
        if not scale_stages(self.acc_width, self.op.scale):
            return 0
        return self.n * dsp_cells(self.acc_width, signed_bits(Const(int(self.op.scale))))

    @property
    def ii(self):
        # a bank of b is busy from its first row written to the last job's last step:
        # b_rows + a_rows * steps + 1 cycles for two samples (it binds when steps is 1)
        work = self.a_rows * self.steps
        loop = self.b_rows + work + 1
        return max(self.a_rows, self.b_rows, work, loop // 2 if loop % 2 == 0 else loop / 2)

    def elaborate(self, platform):
        m = Module()
        op, pn, pk, K, N, H = self.op, self.pn, self.pk, self.k, self.n, self.h
        (at, ar, _), (bt, br, bc) = self.in_specs
        out_t = self.out_spec[0]
        KB, NB = K // pk, N // pn
        # b's rows are indexed by k (b is H x K x N) or by n (transposed: H x N x K); the
        # lanes of one step need R = pk (resp. pn) different rows: row r lives in memory
        # r % R at address bank * (br / R) + r // R
        R = pn if op.transpose_b else pk
        per_bank = br // R
        a_mem = Memory(shape=unsigned(at.width * K), depth=2 * ar, init=[])
        b_mems = [Memory(shape=unsigned(bt.width * bc), depth=2 * per_bank, init=[]) for _ in range(R)]
        m.submodules.a_mem = a_mem
        for r, mem in enumerate(b_mems):
            m.submodules[f"b_mem{r}"] = mem
        a_wp = a_mem.write_port()
        b_wps = [mem.write_port() for mem in b_mems]
        a_full, b_full = Signal(2), Signal(2)   # bank holds a whole operand
        b_drain = Signal(2)                     # bank's last job issued, its weights still in use
        a_clr, b_clr, a_set, b_set = Signal(2), Signal(2), Signal(2), Signal(2)
        d_set, d_clr = Signal(2), Signal(2)
        # load each operand into its write bank; the bank flips when it is full
        loading = {}
        for port, wps, full, rows, nm, st in ((self.a, [a_wp], a_full, ar, "a", a_set),
                                              (self.b, b_wps, b_full, br, "b", b_set)):
            wb = Signal(name=f"{nm}_wbank")
            cnt = Signal(range(max(rows, 2)), name=f"{nm}_cnt")
            loading[nm] = (wb, cnt)
            nw = len(wps)
            sel = Signal(range(max(nw, 2)), name=f"{nm}_sel")      # == cnt % nw
            addr = Signal(range(max(rows // nw, 2)), name=f"{nm}_addr")  # == cnt // nw
            free = ~full.bit_select(wb, 1)
            write = port.valid & free
            m.d.comb += port.ready.eq(free)
            for z, wp in enumerate(wps):
                m.d.comb += [wp.addr.eq(addr + Mux(wb, rows // nw, 0)), wp.data.eq(port.payload.as_value()),
                             wp.en.eq(write & (sel == z))]
            with m.If(write):
                with m.If(cnt == rows - 1):
                    m.d.sync += [cnt.eq(0), sel.eq(0), addr.eq(0), wb.eq(~wb)]
                    m.d.comb += st.eq(Mux(wb, 2, 1))
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(sel == nw - 1):
                        m.d.sync += [sel.eq(0), addr.eq(addr + 1)]
                    with m.Else():
                        m.d.sync += sel.eq(sel + 1)

        def weight(mm, eng, i, j):
            if op.transpose_b:   # lane i: row n = nb * pn + i; product j: column k = kb * pk + j
                elems = [b_words[i][kb * pk + j] for kb in range(KB)]
            else:                # product j: row k = kb * pk + j; lane i: column n = nb * pn + i
                elems = [b_words[j][nb * pn + i] for nb in range(NB)]
            if len(elems) == 1:
                return elems[0]
            if i not in lane_sel:  # each lane's own copy of the block index (a register equal to
                # blk_now, kept apart from the others: one select net per lane, not one for all)
                sel = Signal.like(blk_now, name=f"blk_sel{i}", attrs={KEEP_FF: 1})
                mm.d.sync += sel.eq(nx[sel_key])  # blk_now's next value
                lane_sel[i] = sel
            return Array(elems)[lane_sel[i]]

        lane_sel = {}

        eng = MacEngine(K, N, pn, pk, at, self.acc_width, out_t, 2 * H, weight, None, self.frac,
                        scale=int(op.scale), logic=self.logic_multipliers)
        m.submodules.engine = eng
        # eng head = bank * H + head index: a job reads the bank it was issued from; each b
        # memory is read one cycle ahead at the next step's word
        nx, st = eng.next, eng.state
        addr_key, sel_key = ("nb", "kb") if op.transpose_b else ("kb", "nb")
        blk_next, blk_now = nx[addr_key], st[sel_key]
        nblk = NB if op.transpose_b else KB
        b_words = []
        for mem, wp in zip(b_mems, b_wps):
            rp = mem.read_port(transparent_for=(wp,))
            m.d.comb += rp.addr.eq(nx["head"] * nblk + blk_next)
            b_words.append(unpack(rp.data, bc, bt))
        rb = Signal()  # compute bank
        r_cnt = Signal(range(max(ar, 2)))
        # a row's job issues once b is whole and that row of a is written (a streams in)
        a_wb, a_cnt = loading["a"]
        a_row_in = a_full.bit_select(rb, 1) | ((a_wb == rb) & (a_cnt > r_cnt))
        issuing = a_row_in & b_full.bit_select(rb, 1) & ~b_drain.bit_select(rb, 1)
        issue = issuing & eng.ready
        wrap = r_cnt == ar - 1
        # the a row of the next cycle's (r_cnt, rb), read one cycle ahead
        a_rp = a_mem.read_port(transparent_for=(a_wp,))
        nxt_row = Mux(issue & ~wrap, r_cnt + 1, Mux(issue, 0, r_cnt))
        nxt_bank = Mux(issue & wrap, ~rb, rb)
        m.d.comb += a_rp.addr.eq(nxt_row + Mux(nxt_bank, ar, 0))
        # the head of row r_cnt, kept in a register beside r_cnt (no table in the address path)
        heads = self.a_heads
        cur_head = Signal(range(max(H, 2)), name="a_head", init=heads[0])
        m.d.comb += [eng.start.eq(issuing), eng.head.eq(rb * H + cur_head)]
        m.d.comb += [x.eq(e) for x, e in zip(eng.x, unpack(a_rp.data, K, at))]
        with m.If(eng.done):
            m.d.comb += [d_clr.eq(b_drain), b_clr.eq(b_drain)]
        with m.If(issue):
            with m.If(wrap):
                m.d.sync += [r_cnt.eq(0), rb.eq(~rb), cur_head.eq(heads[0])]
                m.d.comb += [a_clr.eq(Mux(rb, 2, 1)), d_set.eq(Mux(rb, 2, 1))]
            with m.Else():
                m.d.sync += [r_cnt.eq(r_cnt + 1), cur_head.eq(_const_table(heads[1:] + heads[:1], r_cnt))]
        m.d.sync += [a_full.eq((a_full & ~a_clr) | a_set), b_full.eq((b_full & ~b_clr) | b_set),
                     b_drain.eq((b_drain & ~d_clr) | d_set)]
        wiring.connect(m, eng.o, wiring.flipped(self.o))
        return m


def reshape_groups(index, in_cols: int):
    """The memory plan of a reshape: each output row is the same sequence of groups
    (``(length)``, consecutive output positions), and group ``g`` of output row ``r``
    is ``length`` consecutive columns of one input row.  Returns ``(lengths, src)`` with
    ``src[r][g] = (input row, first column)``, or None when the map has no such plan."""
    lengths, src = None, []
    for row in index:
        groups, p = [], 0
        while p < len(row):
            r0, c0 = divmod(row[p], in_cols)
            n = 1
            while p + n < len(row) and row[p + n] == row[p] + n and (row[p] + n) // in_cols == r0:
                n += 1
            groups.append((n, r0, c0))
            p += n
        ls = [n for n, _, _ in groups]
        if lengths is None:
            lengths = ls
        elif ls != lengths:
            return None
        src.append([(r0, c0) for _, r0, c0 in groups])
    return lengths, src


class ReshapeBlock(Block):
    """Emits a tensor in another row order / row length (``split_heads``, ``merge_heads``,
    ``flatten``): ``out_row[r][c] = in_flat[index[r][c]]``.

    Input rows are written whole into memories, one memory per group of an output row
    (:func:`reshape_groups`): an output row reads one word of each memory and picks its
    columns.  Two banks (ping-pong) per memory: the next tensor loads while this one is
    emitted.  An output row leaves as soon as the last input row it reads is written
    (:attr:`needs`), so a consumer starts on the first rows while the rest arrive.  Reads
    are synchronous; the read word is the output register."""

    def __init__(self, name, kind, t, in_rows, in_cols, out_rows, out_cols, index):
        self.kind = kind
        self.index = index
        plan = reshape_groups(index, in_cols)
        if plan is None:
            raise FabformerError(f"{name}: {kind} has an element order the RTL reshape cannot buffer "
                                 "(output rows must be the same sequence of input-row slices)")
        self.lengths, self.src = plan
        super().__init__(name, [(t, in_rows, in_cols)], (t, out_rows, out_cols))

    @property
    def needs(self) -> list:
        """The last input row each output row reads: row ``r`` leaves once that row is written."""
        return [max(r0 for r0, _ in groups) for groups in self.src]

    def row_times(self, ins):
        out = []
        for need in self.needs:  # written in cycle t, readable in t + 1, on ``o`` in t + 2
            out.append(max(ins[0][need] + 2, out[-1] + 1) if out else ins[0][need] + 2)
        return out

    def timing(self, first, last):
        out = self.row_times([[first] * (self.in_specs[0][1] - 1) + [last]])
        return out[0], out[-1]

    @property
    def ii(self):
        return max(self.in_specs[0][1], self.out_spec[1])

    def elaborate(self, platform):
        m = Module()
        t, ir_, ic = self.in_specs[0]
        _, orows, oc = self.out_spec
        G = len(self.lengths)
        # memory g stores the input rows that group g of some output row reads, in order
        stored = [sorted({self.src[r][g][0] for r in range(orows)}) for g in range(G)]
        addr_of = [{row: a for a, row in enumerate(rows)} for rows in stored]
        mems = [Memory(shape=unsigned(t.width * ic), depth=2 * len(rows), init=[]) for rows in stored]
        full = Signal(2)
        wb, rb = Signal(), Signal()
        in_cnt = Signal(range(max(ir_, 2)))
        out_cnt = Signal(range(max(orows, 2)))
        cur = Signal(range(max(orows, 2)))  # output row in the read registers
        free = ~full.bit_select(wb, 1)
        f_set, f_clr = Signal(2), Signal(2)
        m.d.comb += self.i.ready.eq(free)
        write = self.i.valid & free
        can = ~self.o.valid | self.o.ready
        # the output row's last input row is written: the bank is full, or it is being
        # written (this sample) and the count of rows written is past that row
        arrived, reading = Signal(), Signal()
        needs = self.needs
        if all(nd == ir_ - 1 for nd in needs):
            m.d.comb += arrived.eq(0)
        else:
            # the row count that lets the current output row go (a register kept with out_cnt,
            # so no table lookup sits between the counters and the read enable)
            need = Signal(range(ir_ + 1), name="need", init=needs[0] + 1)
            nxt_need = [nd + 1 for nd in needs[1:]] + [needs[0] + 1]  # after output row r: row r + 1's
            with m.If(reading):
                m.d.sync += need.eq(_const_table(nxt_need, out_cnt))
            m.d.comb += arrived.eq((wb == rb) & (in_cnt >= need))
        m.d.comb += reading.eq(can & (full.bit_select(rb, 1) | arrived))
        parts = []
        for g, (mem, rows) in enumerate(zip(mems, stored)):
            m.submodules[f"mem{g}"] = mem
            wp = mem.write_port()
            n = len(rows)
            # input row -> address in this memory (or not stored here)
            waddr = [addr_of[g].get(r, 0) for r in range(ir_)]
            wen = [int(r in addr_of[g]) for r in range(ir_)]
            m.d.comb += [wp.data.eq(self.i.payload.as_value()),
                         wp.addr.eq(_const_table(waddr, in_cnt) + Mux(wb, n, 0)),
                         wp.en.eq(write & _const_table(wen, in_cnt))]
            rp = mem.read_port()
            raddr = [addr_of[g][self.src[r][g][0]] for r in range(orows)]
            m.d.comb += [rp.addr.eq(_const_table(raddr, out_cnt) + Mux(rb, n, 0)), rp.en.eq(can)]
            words = unpack(rp.data, ic, t)
            starts = sorted({self.src[r][g][1] for r in range(orows)})
            slices = [Cat(*words[c0:c0 + self.lengths[g]]) for c0 in starts]
            if len(slices) == 1:
                parts.append(slices[0])
            else:
                which = [starts.index(self.src[r][g][1]) for r in range(orows)]
                parts.append(Array(slices)[_const_table(which, cur)])
        m.d.comb += self.o.payload.as_value().eq(Cat(*parts))
        _bank_counter(m, write, in_cnt, ir_, wb, f_set)
        with m.If(can):
            m.d.sync += [self.o.valid.eq(full.bit_select(rb, 1) | arrived), cur.eq(out_cnt)]
        _bank_counter(m, reading, out_cnt, orows, rb, f_clr)
        m.d.sync += full.eq((full & ~f_clr) | f_set)
        return m


def _bank_counter(m, step, cnt, n: int, bank, flag):
    """On ``step``: count rows ``0..n-1``; the last one flips ``bank`` and raises the bank's
    bit of ``flag`` (one-hot, combinational) for that cycle."""
    with m.If(step):
        with m.If(cnt == n - 1):
            m.d.sync += [cnt.eq(0), bank.eq(~bank)]
            m.d.comb += flag.eq(Mux(bank, 2, 1))
        with m.Else():
            m.d.sync += cnt.eq(cnt + 1)


def _const_table(values: list[int], index):
    """``values[index]`` for a constant table (a constant when all entries agree)."""
    if len(set(values)) == 1:
        return Const(values[0], range(max(values[0] + 1, 2)))
    return Array(Const(v, range(max(max(values) + 1, 2))) for v in values)[index]


class PoolBlock(Block):
    """Global average pool over rows: running column sums, one output row per sample."""

    kind = "global_avg_pool"

    def __init__(self, name, op: ir.GlobalAvgPool, g: ir.Graph):
        xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
        rows, cols = row_shape(g.tensors[op.inputs[0]].shape)
        self.op = op
        self.acc_width = xt.width + max(1, math.ceil(math.log2(rows))) + 1
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
        acc = [Signal(signed(self.acc_width), name=f"s{j}") for j in range(cols)]
        cnt = Signal(range(max(rows, 2)))
        xs = unpack(self.i.payload, cols, xt)
        ys = [requantize(m, (a + x) * self.op.scale, xt.frac + self.op.scale_frac, out_t, name=f"y{j}")
              for j, (a, x) in enumerate(zip(acc, xs))]
        can = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(can)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & can):
            with m.If(cnt == rows - 1):
                m.d.sync += [cnt.eq(0), self.o.valid.eq(1), self.o.payload.as_value().eq(pack(ys))]
                m.d.sync += [a.eq(0) for a in acc]
            with m.Else():
                m.d.sync += cnt.eq(cnt + 1)
                m.d.sync += [a.eq(a + x) for a, x in zip(acc, xs)]
        return m


class RowFifo(Elaboratable):
    """A first-in first-out queue of ``depth`` rows with the ports and the cycle behaviour of
    ``amaranth.lib.fifo.SyncFIFOBuffered`` (a row written into an empty queue is readable two
    cycles later; ``w_rdy`` while fewer than ``depth - 1`` rows wait behind the one offered),
    whose row-wide storage sees no handshake: it is written in every cycle at the write
    pointer (``w_en`` only moves the pointer) and ``r_data`` is its asynchronous read at the
    read pointer (the consumer's ``r_en`` only moves the pointer).  The offered row stays in
    its place; the storage has one place more than the rows held, so the place the write
    pointer shows is always free."""

    def __init__(self, *, width: int, depth: int, slices: int = 1):
        if depth < 2:
            raise ValueError(f"RowFifo depth must be at least 2, not {depth}")
        self.width, self.depth, self.slices = width, depth, slices
        self.w_data, self.w_en, self.w_rdy = Signal(width), Signal(), Signal()
        self.r_data, self.r_en, self.r_rdy = Signal(width), Signal(), Signal()
        self.level = Signal(range(depth + 1))

    def elaborate(self, platform):
        m = Module()
        held = self.depth - 1  # rows waiting behind the offered one
        level = Signal(range(held + 1), name="inner_level")
        level_next = Signal.like(level, name="level_next")
        # w_rdy is a register loaded with (next level != held): the same value in every cycle as
        # (level != held), but the producer's take (which moves every slice's write pointer) starts
        # at a flip-flop instead of behind the level's compare
        w_rdy = Signal(init=1, name="w_rdy_r")
        m.d.comb += [self.w_rdy.eq(w_rdy), self.level.eq(level + self.r_rdy)]
        do_write = w_rdy & self.w_en
        do_read = (level != 0) & (~self.r_rdy | self.r_en)  # a waiting row becomes the offered one
        m.d.comb += self.r_data.eq(row_ring(m, "storage", self.depth + 1, self.w_data, 1, do_write,
                                            self.r_rdy & self.r_en, prefix="fifo", slices=self.slices))
        with m.If(do_read):
            m.d.sync += self.r_rdy.eq(1)
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        m.d.comb += level_next.eq(level + do_write - do_read)
        m.d.sync += [level.eq(level_next), w_rdy.eq(level_next != held)]
        return m


class Fork(wiring.Component):
    """One stream to several consumers, each behind its own FIFO (``depth`` rows, or a list
    of depths, one per consumer), so a consumer that lags does not stall the others.  The input
    comes through a :func:`skid` buffer: its ``ready`` is a register, not the AND of the FIFOs'
    levels (which reached the producer's output-register enable, a net of every payload bit).
    The FIFOs are :class:`RowFifo`: their storage has no write enable for the handshake to reach."""

    def __init__(self, t: FixedType, cols: int, n: int, depth):
        self.t, self.cols, self.n = t, cols, n
        self.depth = list(depth) if isinstance(depth, (list, tuple)) else [int(depth)] * n
        members = {"i": In(stream.Signature(row_layout(t, cols)))}
        for j in range(n):
            members[f"o{j}"] = Out(stream.Signature(row_layout(t, cols)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        w = self.t.width * self.cols
        fifos = []
        for j in range(self.n):
            f = RowFifo(width=w, depth=self.depth[j], slices=self.cols)
            m.submodules[f"fifo{j}"] = f
            fifos.append(f)
        all_rdy = Signal()
        m.d.comb += all_rdy.eq(sum_and([f.w_rdy for f in fifos]))
        valid, row, take = skid(m, self.i, "in")
        m.d.comb += take.eq(valid & all_rdy)
        for j, f in enumerate(fifos):
            o = getattr(self, f"o{j}")
            m.d.comb += [f.w_data.eq(row), f.w_en.eq(take),
                         o.valid.eq(f.r_rdy), o.payload.as_value().eq(f.r_data), f.r_en.eq(o.ready)]
        return m


def sum_and(xs):
    v = xs[0]
    for x in xs[1:]:
        v = v & x
    return v
