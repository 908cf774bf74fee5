"""Resource-shared row functions: one element per cycle through a few multipliers.

:class:`SerialLayerNorm` computes golden ``layernorm`` bit for bit with three
multipliers (``d*d``, ``d*t``, ``z*gamma``) instead of three per element, and
:class:`SerialSoftmax` golden ``softmax`` with one exponent table and one multiplier.

Both are free-running pipelines with a fixed schedule per row.  A row is admitted
(its input beat taken) only when a place in the output queue is reserved for it and
the previous row was admitted at least ``row_ii`` cycles before; after that nothing
stalls, so every register is loaded at a fixed cycle after the row's admission and the
consumer's ``ready`` reaches only the output queue.  A row passes:

* a row reduction (layer norm: sum; softmax: maximum) as a tree registered every level;
* **A**: one element per cycle from a shift register (no wide multiplexer) through a few
  registered stages into an accumulator (layer norm: squared deviations ``(N*x - S)**2``;
  softmax: exponents ``exp(max - x)`` from a synchronous table);
* **P**: the row scalar: leading one, normalising shift, table index, synchronous table
  read (layer norm: inverse square root; softmax: reciprocal), each registered;
* **B**: one element per cycle (the per-element values of A come through a delay line)
  through a registered product, rounding, shift and saturation (layer norm twice: ``d*t``
  then ``z*gamma + beta``) into a shift register that holds the output row, which enters
  the output queue with its last element.

Row latency and II are constants of the row length (:meth:`_SerialRow.plan`).
"""
from __future__ import annotations

import math

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib.memory import Memory

from .. import ir
from .arith import (KEEP_FF, clip, dsp_cells, leading_one, mul_stages, signed_bits, overflow, pack, shape_of, shift_amount, shift_round,
                    shift_split, unpack)
from .arith import dsp_mul as _mul, stage as _r
from .blocks import Block, _out_queue, row_shape

__all__ = ["SerialLayerNorm", "SerialSoftmax"]


def _times(v, c: int):
    """``v * c`` for a positive constant ``c`` as shifted adds (no multiplier cell)."""
    terms = [v << k for k in range(c.bit_length()) if (c >> k) & 1]
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _select_bits(values) -> int:
    """Signed width of :func:`_const_select`'s value."""
    return max(max(int(v).bit_length() for v in values) + 1, 2)


def _const_select(m, values, idx, name):
    w = _select_bits(values)
    out = Signal(signed(w), name=name)
    m.d.comb += out.eq(Array(Const(int(v), signed(w)) for v in values)[idx])
    return out


def _hold(m, en, value, name, shape=None):
    """A register loaded with ``value`` when ``en`` (a row's scheduled cycle), held otherwise."""
    value = Value.cast(value)
    r = Signal(shape if shape is not None else value.shape(), name=name)
    with m.If(en):
        m.d.sync += r.eq(value)
    return r


def _delay(m, value, cycles: int, name):
    """``value`` as it was ``cycles`` cycles ago: registers, or a ring memory (distributed
    RAM) with one free-running pointer for longer delays."""
    value = Value.cast(value)
    if cycles <= 3:
        for k in range(cycles):
            value = _r(m, value, f"{name}{k}")
        return value
    mem = Memory(shape=value.shape(), depth=cycles, init=[])
    m.submodules[name] = mem
    ptr = Signal(range(cycles), name=f"{name}_ptr")
    wp, rp = mem.write_port(), mem.read_port(domain="comb")
    m.d.comb += [wp.addr.eq(ptr), wp.data.eq(value), wp.en.eq(1), rp.addr.eq(ptr)]
    m.d.sync += ptr.eq(Mux(ptr == cycles - 1, 0, ptr + 1))
    return rp.data


def _lane_names(lanes: int):
    """``name(base, lane)``: signal names of one lane (the base alone with a single lane)."""
    return (lambda base, l: base) if lanes == 1 else (lambda base, l: f"{base}_l{l}")


def tree_levels(n: int) -> int:
    """Levels of a pairwise reduction tree over ``n`` values."""
    return max(n - 1, 0).bit_length()


def _tree(m, xs, combine, name):
    """A pairwise reduction of ``xs``, every level registered (``tree_levels`` cycles)."""
    level, k = list(xs), 0
    while len(level) > 1:
        nxt = [combine(a, b) for a, b in zip(level[0::2], level[1::2])] + ([level[-1]] if len(level) % 2 else [])
        level = [_r(m, v, f"{name}{k}_{j}") for j, v in enumerate(nxt)]
        k += 1
    return level[0]


def _shift_parts(m, s, rounding, name):
    """The run-time shift ``s`` of :func:`~fabformer.rtl.arith.shift_var` decoded into
    registers: right shift, left shift and the rounding term (a function of the value shifted).
    The rounding term's parts that depend on the shift alone (half an output step, and that
    less one) are registers too: rounding is a bit select and one add (:func:`_add_rounding`)."""
    pos_c, neg_c = shift_split(m, s, f"{name}_rc", f"{name}_lc")
    pos_r, neg_r = _r(m, pos_c, f"{name}_r"), _r(m, neg_c, f"{name}_l")
    from fabformer.fixed import Rounding
    r = Rounding(rounding)
    half = (Const(1, 1) << pos_c) >> 1  # 0 when the shift is 0
    if r in (Rounding.RND, Rounding.RND_CONV):
        half_r = _r(m, half, f"{name}_half")
    if r is Rounding.RND:
        return pos_r, neg_r, lambda v: half_r
    if r is Rounding.RND_CONV:  # ties to even: half - 1, plus the kept part's lowest bit (nothing when pos == 0)
        less_r = _r(m, Mux(pos_c > 0, half - 1, 0), f"{name}_half1", half.shape())
        return pos_r, neg_r, lambda v: Mux((v >> pos_r)[0], half_r, less_r)
    return pos_r, neg_r, lambda v: Const(0, 1)


def round_stages(rounding) -> int:
    """Cycles of :func:`_add_rounding`: ties to even picks its term from a bit the run-time shift
    selects (a multiplexer tree), in a stage before the add's carry chain; the others add at once."""
    from fabformer.fixed import Rounding
    return 2 if Rounding(rounding) is Rounding.RND_CONV else 1


def _add_rounding(m, v, rnd, rounding, carried, name):
    """``v + rnd(v)`` registered in :func:`round_stages` cycles (``rnd``: :func:`_shift_parts`'
    rounding term); ``carried`` (values that travel beside ``v``) delayed as many cycles.
    Returns (the sum, the carried values)."""
    if round_stages(rounding) == 2:
        inc = _r(m, rnd(v), f"{name}_inc")
        v = _r(m, v, f"{name}_p")
        carried = [_r(m, c, f"{name}_c{k}") for k, c in enumerate(carried)]
        out = _r(m, v + inc, f"{name}_v")
    else:
        out = _r(m, v + rnd(v), f"{name}_v")
    return out, [_r(m, c, f"{name}_d{k}") for k, c in enumerate(carried)]


class _SerialRow(Block):
    """A row function that takes one row every ``row_ii`` cycles; subclasses give
    ``elaborate`` and the stage counts ``E`` (A: element to accumulator input), ``DELAYED``
    (A: element to the value B reuses) and ``B`` (B: element to output value)."""

    P = 7  # P: capture, leading one, shift tables, normalising shift (coarse, fine), table index, table read
    E = DELAYED = B = 0
    per_lane = 1  # multipliers of one lane

    def __init__(self, name, op, g: ir.Graph, lanes: int = 1):
        xt, out_t = g.type_of(op.inputs[0]), g.type_of(op.output)
        rows, cols = row_shape(g.tensors[op.inputs[0]].shape)
        self.op, self.g, self.rows, self.N = op, g, rows, cols
        super().__init__(name, [(xt, rows, cols)], (out_t, rows, cols))
        self.lanes = lanes

    @property
    def lanes(self) -> int:
        """Elements A and B take per cycle (each lane its own multipliers and tables)."""
        return self._lanes

    @lanes.setter
    def lanes(self, v: int):
        if v < 1 or self.N % v:
            raise ValueError(f"{self.name}: {v} lanes do not divide a row of {self.N}")
        self._lanes = v

    @property
    def multipliers(self) -> int:
        return self.per_lane * self.lanes

    def plan(self) -> dict:
        """The fixed schedule of a row, in cycles after its admission (cycle 0)."""
        N, M, L = self.N, tree_levels(self.N), self.lanes
        n = N // L                     # cycles a row takes in A and in B (``lanes`` elements a cycle)
        gap = max(n, M + 1)
        load_a = 1 + M                 # the row reduction is in its register: A loads the row
        a0 = load_a + 1                # elements jL .. jL + L - 1 leave A's shift register in cycle a0 + j
        cap = a0 + self.E + tree_levels(L) + n  # the accumulator holds the whole row (after the lanes' sum)
        b_load = cap + self.P          # the table entry is read: B loads the row's scalars
        b0 = b_load + 1                # elements jL .. enter B in cycle b0 + j
        write = b0 + self.B + n - 1    # the last output elements: the row enters the output queue
        lat = write + 1
        return {"gap": gap, "load_a": load_a, "a0": a0, "cap": cap, "b_load": b_load, "b0": b0,
                "delay": b0 - (a0 + self.DELAYED), "write": write, "latency": lat,
                "queue": max(2, -(-(lat + 1) // gap))}

    @property
    def row_ii(self) -> int:
        return self.plan()["gap"]

    @property
    def row_latency(self) -> int:
        return self.plan()["latency"]

    def row_times(self, ins):
        from .blocks import issue_times
        return [t + self.row_latency for t in issue_times(ins[0], self.row_ii)]

    def timing(self, first, last):
        lat = self.row_latency
        return first + lat, max(last + lat, first + (self.rows - 1) * self.row_ii + lat)

    @property
    def ii(self):
        return self.rows * self.row_ii

    def _frame(self, m):
        """Admission, the row's schedule pulses, the input register and the output side.
        Returns ``(plan, pulse, x0, out)``: ``pulse(k)`` is high ``k`` cycles after the row's
        admission, ``x0`` the admitted row's elements (held ``row_ii`` cycles), ``out(ys, en)``
        puts an output row into the queue."""
        pl = self.plan()
        xt = self.in_specs[0][0]
        gap, rows_q = pl["gap"], pl["queue"]
        reserved = Signal(range(rows_q + 1), name="reserved")
        gap_cnt = Signal(range(max(gap, 2)), name="gap_cnt")
        admit = Signal(name="admit")
        # ready is a register, loaded with its own function of the next reserved count and gap
        # (the same value every cycle as ready computed from them): the producer's handshake,
        # which enables its row-wide registers, starts at a flip-flop; a kept copy of it admits
        # the row here (the two are placed each beside its own users)
        ready_r = Signal(init=1, name="ready_r")
        ready_l = Signal(init=1, name="ready_l", attrs={KEEP_FF: 1})
        reserved_next = Signal.like(reserved, name="reserved_next")
        gap_next = Signal.like(gap_cnt, name="gap_next")
        m.d.comb += [self.i.ready.eq(ready_r), admit.eq(self.i.valid & ready_l),
                     reserved_next.eq(reserved + admit - (self.o.valid & self.o.ready)),
                     gap_next.eq(Mux(admit, gap - 1, Mux(gap_cnt != 0, gap_cnt - 1, 0)) if gap > 1 else 0)]
        ready_next = (reserved_next != rows_q) & (gap_next == 0)
        m.d.sync += [reserved.eq(reserved_next), gap_cnt.eq(gap_next), ready_r.eq(ready_next), ready_l.eq(ready_next)]
        pulses = [admit]

        def pulse(k):
            while len(pulses) <= k:
                pulses.append(_r(m, pulses[-1], f"at{len(pulses)}"))
            return pulses[k]

        x0 = [_hold(m, admit, v, f"x0_{j}") for j, v in enumerate(unpack(self.i.payload, self.N, xt))]

        def out(ys):  # each cycle the lanes' next elements (lane l: element jL + l)
            N, L = self.N, len(ys)
            buf = [Signal(ys[0].shape(), name=f"y_buf{j}") for j in range(N - L)]
            m.d.sync += [b.eq(n) for b, n in zip(buf, [*buf[L:], *ys])]
            _out_queue(m, pulse(pl["write"] - 1), pack([*buf, *ys]), self.o, rows_q - 1)  # written at pulse(write)
        return pl, pulse, x0, out

    def _issue(self, m, pulse, pl, values, name):
        """A's shift register: loaded with ``values`` at the row's ``load_a`` cycle; its first
        ``lanes`` elements are elements ``jL .. jL + L - 1`` of the row in cycle ``a0 + j``."""
        L = self.lanes
        regs = [Signal(Value.cast(v).shape(), name=f"{name}{j}") for j, v in enumerate(values)]
        with m.If(pulse(pl["load_a"])):
            m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
        with m.Else():
            m.d.sync += [r.eq(n) for r, n in zip(regs[:-L], regs[L:])]
        return regs[:L]


def _rom(m, table, idx, name):
    """The table's entry at ``idx`` (already clipped), one cycle later (synchronous read)."""
    mem = Memory(shape=shape_of(table.out_type), depth=table.size, init=[int(v) for v in table.values])
    m.submodules[name] = mem
    port = mem.read_port(domain="sync")
    m.d.comb += port.addr.eq(idx)
    return port.data


def _index(m, table, src, name):
    """The table index of ``src`` (``clip((src >> shift) - offset, 0, size - 1)``), registered."""
    return _r(m, clip((src >> table.shift) - table.offset, 0, table.size - 1), name, range(table.size))


def _scalar(m, pl, pulse, value, width, norm, n_shape, table, others: dict, name):
    """P: capture the accumulated ``value`` (``width`` bits) at the row's ``cap`` cycle; then
    its leading one ``p``; the normalising shift ``norm(p)``; the normalised value (``n_shape``);
    its table index; the table entry; each registered (``_SerialRow.P`` cycles; the normalising
    shift in two stages, by the shift's multiple of 8 and then by the rest).  ``others``:
    name -> fn(p) -> int, further shifts, registered to arrive with the entry.
    Returns (entry, {name: shift})."""
    c = _hold(m, pulse(pl["cap"]), value, f"{name}_v", unsigned(width))
    lo = _r(m, leading_one(m, c, width, name=f"{name}_lop"), f"{name}_p")
    c2 = _r(m, c, f"{name}_v2")
    nsh = _r(m, shift_amount(m, lo, {pv: norm(pv) for pv in range(width)}, f"{name}_nsht"), f"{name}_nsh")
    c3 = _r(m, c2, f"{name}_v3")
    # the shift (right when positive, left when negative; the value is non-negative, so a right
    # shift by a + b is one by a then one by b) in two registered stages
    pos, neg = shift_split(m, nsh, f"{name}_r3", f"{name}_l3")

    def coarse(v):
        return Cat(Const(0, 3), v[3:]) if len(v) > 3 else Const(0, 1)
    c4 = _r(m, (c3 >> coarse(pos)) << coarse(neg), f"{name}_v4")
    pos4, neg4 = _r(m, pos[:3], f"{name}_r4"), _r(m, neg[:3], f"{name}_l4")
    n = _r(m, (c4 >> pos4) << neg4, f"{name}_n", n_shape)
    entry = _rom(m, table, _index(m, table, n, f"{name}_idx"), f"{name}_rom")
    outs = {}
    for k, fn in others.items():
        v = shift_amount(m, lo, {pv: fn(pv) for pv in range(width)}, f"{name}_{k}t")
        for st in range(_SerialRow.P - 2):
            v = _r(m, v, f"{name}_{k}{st}")
        outs[k] = v
    return entry, outs


class SerialLayerNorm(_SerialRow):
    """Golden ``layernorm`` with 3 multipliers: row sum tree; A: ``d = N*x - S`` and
    ``d*d`` registered into the variance sum; P: inverse square root; B: ``z = rq(d*t)``,
    ``y = rq(z*gamma + beta)``, every stage registered (``B`` cycles).  II ``row_ii`` cycles per row."""

    kind = "layernorm"
    per_lane = 3
    DELAYED = 1  # B reuses d

    @property
    def E(self):  # d; d*d (arith.dsp_mul); the sum takes it
        w = self.op.d_type(self.g).width
        return 1 + mul_stages(w, w)

    @property
    def B(self):  # operands; d*t; rounding (round_stages); shift; saturate z; z*gamma; + beta, rounding
        return 4 + round_stages(self.op.norm_type.rounding) + self._dt_stages + self._zg_stages

    @property
    def other_dsp_cells(self) -> int:  # per lane: d*d, d*t, z*gamma
        d = signed_bits(shape_of(self.op.d_type(self.g)))
        t = signed_bits(shape_of(self.op.invsqrt_table.out_type))
        z, gm = signed_bits(shape_of(self.op.norm_type)), _select_bits(self.op.gamma)
        return self.lanes * (dsp_cells(d, d) + dsp_cells(d, t) + dsp_cells(z, gm))

    @property
    def _dt_stages(self):
        return mul_stages(signed_bits(shape_of(self.op.d_type(self.g))), signed_bits(shape_of(self.op.invsqrt_table.out_type)))

    @property
    def _zg_stages(self):
        return mul_stages(signed_bits(shape_of(self.op.norm_type)), _select_bits(self.op.gamma))

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

        pl, pulse, x0, out = self._frame(m)
        L, n = self.lanes, N // self.lanes
        nm = _lane_names(L)
        # row sum, then A: one squared deviation per lane and cycle into the variance sum
        S = _hold(m, pulse(pl["load_a"]), _tree(m, x0, lambda a, b: a + b, "sum"), "a_S", s_shape)
        xs = self._issue(m, pulse, pl, x0, "a_x")
        ds = [_r(m, _times(x, N) - S, nm("a_d", l), signed(dt.width)) for l, x in enumerate(xs)]
        sq = _tree(m, [_mul(m, d, d, nm("a_sq", l), unsigned(2 * dt.width)) for l, d in enumerate(ds)],
                   lambda a, b: a + b, "a_sqsum")
        Q = Signal(unsigned(qt.width), name="a_Q")
        first = pulse(pl["a0"] + self.E + tree_levels(L))
        m.d.sync += Q.eq(Mux(first, sq, Q + sq))
        # P: inverse square root of the variance and the output shift
        t, sh = _scalar(m, pl, pulse, Q + op.eps, qt.width, sh_of, unsigned(R + 3), op.invsqrt_table,
                        {"zsh": lambda pv: Ft + (R + sh_of(pv)) // 2 - nt.frac}, "p")
        b_t = _hold(m, pulse(pl["b_load"]), t, "b_t")
        b_zsh = _hold(m, pulse(pl["b_load"]), sh["zsh"], "b_zsh")
        # B: one element per lane and cycle (lane l: elements jL + l)
        j = Signal(range(max(n, 2)), name="b_j")
        with m.If(pulse(pl["b_load"])):
            m.d.sync += j.eq(0)
        with m.Elif(j != n - 1):
            m.d.sync += j.eq(j + 1)
        ys = []
        for l, d in enumerate(ds):
            def r(v, base, shape=None):
                return _r(m, v, nm(base, l), shape)
            d1 = r(_delay(m, d, pl["delay"], nm("d_delay", l)), "b1_d")
            t1, zsh1 = r(b_t, "b1_t"), r(b_zsh, "b1_zsh")
            g1 = r(_const_select(m, [int(v) for v in op.gamma[l::L]], j, nm("gamma", l)), "b1_g")
            be1 = r(_const_select(m, [int(v) << bshift for v in op.beta[l::L]], j, nm("beta", l)), "b1_b")
            assert mul_stages(signed_bits(d1), signed_bits(t1)) == self._dt_stages
            prod2 = _mul(m, d1, t1, nm("b2_dt", l), None)
            for k in range(self._dt_stages - 1):  # the product's second stage: the others wait a cycle
                zsh1, g1, be1 = r(zsh1, f"b1_zsh_{k}"), r(g1, f"b1_g_{k}"), r(be1, f"b1_b_{k}")
            pos2, neg2, rnd = _shift_parts(m, zsh1, nt.rounding, nm("b2_zsh", l))
            g2, be2 = r(g1, "b2_g"), r(be1, "b2_b")
            v3, (pos3, neg3, g3, be3) = _add_rounding(m, prod2, rnd, nt.rounding, [pos2, neg2, g2, be2], nm("b3", l))
            sh4 = r((v3 >> pos3) << neg3, "b4_v")
            g4, be4 = r(g3, "b4_g"), r(be3, "b4_b")
            z5 = r(overflow(sh4, nt), "b5_z", shape_of(nt))
            g5, be5 = r(g4, "b5_g"), r(be4, "b5_b")
            zg6 = _mul(m, z5, g5, nm("b6_zg", l))
            assert mul_stages(signed_bits(z5), signed_bits(g5)) == self._zg_stages
            be6 = be5
            for k in range(self._zg_stages):
                be6 = r(be6, f"b6_b{k}")
            w7 = r(shift_round(zg6 + be6, f - out_t.frac, out_t.rounding), "b7_y")
            y = Signal(shape_of(out_t), name=nm("y", l))
            m.d.comb += y.eq(overflow(w7, out_t))
            ys.append(y)
        out(ys)
        return m


class SerialSoftmax(_SerialRow):
    """Golden ``softmax`` with one exponent table and one multiplier: row maximum tree; A:
    ``max - x``, the table index and the exponent (a synchronous table, then a register) into the
    row sum; P: reciprocal; B: ``y = rq(e*r)``, every stage registered (``B`` cycles).  II ``row_ii`` cycles
    per row."""

    kind = "softmax"
    per_lane = 1
    E = 4        # max - x, table index, table read, exponent register; the sum takes it
    DELAYED = 4  # B reuses the exponent

    @property
    def B(self):  # operands; e*r (arith.dsp_mul); rounding (round_stages); shift
        return 2 + round_stages(self.out_spec[0].rounding) + self._er_stages

    @property
    def other_dsp_cells(self) -> int:  # per lane: e*r
        return self.lanes * dsp_cells(signed_bits(shape_of(self.op.exp_table.out_type)),
                                      signed_bits(shape_of(self.op.recip_table.out_type)))

    @property
    def _er_stages(self):
        return mul_stages(signed_bits(shape_of(self.op.exp_table.out_type)), signed_bits(shape_of(self.op.recip_table.out_type)))

    def elaborate(self, platform):
        m = Module()
        op, g, N = self.op, self.g, self.N
        xt, _, _ = self.in_specs[0]
        out_t = self.out_spec[0]
        sw = op.sum_type(g).width
        R = op.recip_bits
        Fr = op.recip_table.out_type.frac

        pl, pulse, x0, out = self._frame(m)
        L = self.lanes
        nm = _lane_names(L)
        mx = _hold(m, pulse(pl["load_a"]), _tree(m, x0, lambda a, b: Mux(b > a, b, a), "max"), "a_mx",
                   shape_of(xt))
        es = []
        for l, x in enumerate(self._issue(m, pulse, pl, x0, "a_x")):
            d = _r(m, mx - x, nm("a_d", l), signed(xt.width + 1))
            es.append(_r(m, _rom(m, op.exp_table, _index(m, op.exp_table, d, nm("a_idx", l)), nm("exp_rom", l)),
                         nm("a_e", l)))
        e = _tree(m, es, lambda a, b: a + b, "a_esum")
        s = Signal(unsigned(sw), name="a_s")
        first = pulse(pl["a0"] + self.E + tree_levels(L))
        m.d.sync += s.eq(Mux(first, e, s + e))
        r, sh = _scalar(m, pl, pulse, s, sw, lambda pv: pv - R, unsigned(R + 2), op.recip_table,
                        {"osh": lambda pv: Fr + pv - out_t.frac}, "p")
        b_r = _hold(m, pulse(pl["b_load"]), r, "b_r")
        b_osh = _hold(m, pulse(pl["b_load"]), sh["osh"], "b_osh")
        ys = []
        for l, e in enumerate(es):
            e1 = _r(m, _delay(m, e, pl["delay"], nm("e_delay", l)), nm("b1_e", l))
            r1, osh1 = _r(m, b_r, nm("b1_r", l)), _r(m, b_osh, nm("b1_osh", l))
            prod2 = _mul(m, e1, r1, nm("b2_er", l))
            assert mul_stages(signed_bits(e1), signed_bits(r1)) == self._er_stages
            for k in range(self._er_stages - 1):  # the product's further stages: the shift waits
                osh1 = _r(m, osh1, nm(f"b1_osh_{k}", l))
            pos2, neg2, rnd = _shift_parts(m, osh1, out_t.rounding, nm("b2_osh", l))
            v3, (pos3, neg3) = _add_rounding(m, prod2, rnd, out_t.rounding, [pos2, neg2], nm("b3", l))
            sh4 = _r(m, (v3 >> pos3) << neg3, nm("b4_v", l))
            y = Signal(shape_of(out_t), name=nm("y", l))
            m.d.comb += y.eq(overflow(sh4, out_t))
            ys.append(y)
        out(ys)
        return m
