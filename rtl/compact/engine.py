"""The compact engine in Amaranth: a sequencer, one MAC array, one row unit, RAMs and ROMs.

It runs a :class:`~.program.Program` once per sample:

* **load**: input rows (the quantize node's mantissas) go into the data memory, one
  ``L``-element word per cycle;
* **run**: for each instruction, two fetch cycles (the instruction ROM is logic, its
  fields registered), then the instruction's loop (one issue per cycle), then a drain
  until its last write;
* **store**: output rows are read back and sent on ``o`` (one row every ``words + 2`` cycles).

The MAC array (``L`` lanes): issue (address) → operands → products → accumulators; a
finished tile's sums go to a write-back buffer that a one-element-per-cycle write-back
(bias add or scale multiply, requantization, write) empties while the next tile
accumulates.  The row unit: issue → read → pre-op (shifted sum, relu, deviation,
reductions, table address) → table data, first multiply → normalising requantization →
second multiply → requantization → write.  Both share the requantizer, the wide
multiplier, the table ROM and the data memory's write port (one instruction runs at
a time).  All run-time parameters (shifts, rounding, range, table ranges) are
instruction fields: one datapath, golden's integer rules.

With ``row_multipliers="lut"`` (a device of few DSPs: the iCE40 UP5K) no multiply but the lanes'
is a ``*``: the row unit's multiplies run on the MAC lanes' multipliers, idle during row
instructions (16-bit limbs, summed after the lanes' product registers: the same one-cycle
latency), or on the device's DSPs beyond the lanes (``dsps``), else in logic; the write-back's
scale multiplies by the program's few constants (shifts and adds).
"""
from __future__ import annotations

import math

import numpy as np

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fabformer.fixed import FixedType
from ..arith import leading_one, unpack
from ..blocks import row_layout
from .program import LN_H2_DRAIN, MAC_DRAIN, P_CYCLES, PASSES, ROW_DRAIN, ROW_OPS, SUM_WAIT, WB_DEPTH, Program

__all__ = ["CompactTop", "Widths"]


def _sbits(lo: int, hi: int) -> int:
    """Signed width holding [lo, hi]."""
    w = 2
    while not (-(1 << (w - 1)) <= lo and hi < (1 << (w - 1))):
        w += 1
    return w


def _tree(level):
    level = list(level)
    while len(level) > 1:
        nxt = [x + y for x, y in zip(level[0::2], level[1::2])]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def pipe_mul(m, a, b, name: str, dsp: bool, groups: int = 4):
    """``a * b`` (signed), valid one cycle after ``a`` and ``b``: with ``dsp`` a registered ``*``;
    else shifted partial products summed in ``groups`` registered adder trees and one final sum
    (logic only: synthesis leaves the DSPs to the MAC array, the iCE40 UP5K's 8); ``b`` should be
    the narrower operand."""
    wa, wb = a.shape().width, b.shape().width
    out = Signal(signed(wa + wb), name=name)
    if dsp:
        m.d.sync += out.eq(a * b)
        return out
    terms = [Mux(b[i], a << i, 0) for i in range(wb - 1)]
    terms.append(Mux(b[wb - 1], -(a << (wb - 1)), 0))  # the sign bit weighs -2**(wb-1)
    k = -(-len(terms) // groups)
    parts = []
    for gi in range(0, len(terms), k):
        p = Signal(signed(wa + wb), name=f"{name}_g{gi // k}")
        m.d.sync += p.eq(_tree(terms[gi:gi + k]))
        parts.append(p)
    m.d.comb += out.eq(_tree(parts))
    return out


# instruction fields read only while an instruction that sets them runs (the others' 0 is never
# read): one value over the instructions that set it makes the field a constant.  Not here: the
# fields every row instruction reads (ua, ub, rqsh: a copy's 0 is read).
ONLY_WHERE_SET = frozenset(
    ["G", "M", "T", "K", "Nlast", "aone", "abuf", "arl", "brom", "asg", "asm", "bsg", "bsk", "osg", "osm", "ocs",
     "wbmode", "scale", "cbase", "n1", "n2", "N", "ash", "bsh", "R", "eps", "zc0",
     "zrnd", "zsat", "zlo", "zhi", "zmask", "zhalf", "h2", "Km1", "Tm1", "Mm1", "Gm1", "Pm1", "Nm1", "n1m1",
     "n2m1"] +
    [f"t{i}{k}" for i in (1, 2) for k in ("base", "shift", "off", "size", "uns", "hi", "rb", "lr", "hr")])


MAX_CONST_SCALES = 4  # distinct matmul scales the write-back multiplies by as constants


def const_mul(m, a, c: int, name: str):
    """``a * c`` for a constant ``c``: its canonical signed digits' shifted copies of ``a``
    summed in an adder tree (logic, never a DSP), registered: valid one cycle after ``a``."""
    wa = a.shape().width
    out = Signal(signed(wa + max(abs(c), 1).bit_length() + 1), name=name)
    terms, k, x = [], 0, c
    while x:
        if x & 1:
            d = 2 - (x & 3)  # +1 or -1
            terms.append((a << k) if d > 0 else -(a << k))
            x -= d
        x >>= 1
        k += 1
    m.d.sync += out.eq(_tree(terms) if terms else 0)
    return out


def _limbs(x):
    """``x`` (signed) as limbs of at most 16 signed bits: [(limb, shift)]; every limb but the top one
    is 15 bits, unsigned (a positive 16-bit signed value)."""
    w = x.shape().width
    n = max(1, -(-(w - 1) // 15))
    out = []
    for i in range(n):
        lo = 15 * i
        out.append((x[lo:].as_signed() if i == n - 1 else Cat(x[lo:lo + 15], Const(0, 1)).as_signed(), lo))
    return out


def _acc_range(ins, node, g) -> tuple[int, int]:
    """The least and greatest sum a MAC instruction's accumulator takes (0 included)."""
    f = ins.f

    def rng(t):
        return (t.min_int, t.max_int)

    if ins.op == "dense":
        xlo, xhi = rng(g.type_of(node.inputs[0]))
        w = np.asarray(node.weight, dtype=object)
        lo = (np.minimum(w * xlo, w * xhi)).sum(axis=0)
        hi = (np.maximum(w * xlo, w * xhi)).sum(axis=0)
        return min(0, int(lo.min())), max(0, int(hi.max()))
    if ins.op == "matmul":
        (alo, ahi), (blo, bhi) = (rng(g.type_of(t)) for t in node.inputs)
    elif ins.op == "pool":  # ones times x
        (alo, ahi), (blo, bhi) = (1, 1), rng(g.type_of(node.inputs[0]))
    else:
        raise ValueError(f"no accumulator range for a MAC instruction {ins.op!r}")
    corners = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
    return min(0, f["K"] * min(corners)), max(0, f["K"] * max(corners))


def _clog2(n: int) -> int:
    return max(0, math.ceil(math.log2(max(n, 1))))


class Widths:
    """Datapath widths of one program (all signed unless named otherwise)."""

    def __init__(self, prog: Program, row_multipliers: str = "dsp"):
        g, L = prog.g, prog.L
        self.row_dsp = row_multipliers == "dsp"
        types = [g.type_of(t) for t in prog.places if t in g.tensors] + [g.type_of(prog.in_tensor)]
        self.dw = max(t.width for t in types)  # data-memory lane: a mantissa's raw bits
        self.dv = self.dw + 1  # a lane's value (signed or unsigned per operand)
        ws = [n.weight_type.width for n in prog.nodes if n.kind == "dense"]
        self.ww = max(ws) if ws else 2
        tabs = [n.table for n in prog.nodes if n.kind == "lookup"] + \
               [t for n in prog.nodes if n.kind == "softmax" for t in (n.exp_table, n.recip_table)] + \
               [n.invsqrt_table for n in prog.nodes if n.kind == "layernorm"]
        # a table entry's raw bits: what its values need (read back signed or unsigned per table)
        self.tws = max([_sbits(int(t.values.min()), int(t.values.max())) if t.out_type.signed
                        else max(int(t.values.max()).bit_length(), 1) for t in tabs] + [2])
        self.tw = self.tws + 1
        self.per = 1  # table entries per ROM word (weights and tables share one ROM)
        while 2 * self.per * self.tws <= L * self.ww:
            self.per *= 2
        self.romw = max(L * self.ww, self.per * self.tws)
        self.tword0 = len(prog.wrom)
        self.romd = self.tword0 + -(-len(prog.trom) // self.per)
        # lane multipliers: a's raw bits times b's value; an unsigned full-width a adds b << dw
        self.acorr = any(f.get("ua") and not f["aone"] for f in [i.f for i in prog.instrs if i.unit == "mac"])
        bdm = [g.type_of(n.inputs[1] if n.kind == "matmul" else n.inputs[0]) for n in prog.nodes
               if n.kind in ("matmul", "global_avg_pool")]
        self.bv = max([self.ww] + [t.width + (0 if t.signed else 1) for t in bdm])
        self.karow = max([i.f["K"] for i in prog.instrs if i.unit == "mac" and i.f["abuf"]] + [1])
        c0 = [a for a, _ in prog.crom]
        c1 = [b for _, b in prog.crom]
        self.c0w, self.c1w = _sbits(min(c0), max(c0)), _sbits(min(c1), max(c1))
        gam = [a for i in prog.instrs if i.op == "layernorm" for a, _ in prog.crom[i.f["cbase"]:i.f["cbase"] + i.f["N"]]]
        self.gw = _sbits(min(gam + [0]), max(gam + [0]))  # layer norm's gammas
        macs = [i.f for i in prog.instrs if i.unit == "mac"] or [{"K": 1, "aone": 1, "brom": 1, "scale": 1, "abuf": 0}]
        # the accumulators: wide enough for every MAC instruction's sums (two's complement wraps in
        # between: only the tile's sum must fit), from its operands' types and the weights
        nodes = {n.name: n for n in prog.nodes}
        self.aw = max([_sbits(*_acc_range(i, nodes[i.node], g)) for i in prog.instrs if i.unit == "mac"] + [2])
        self.scw = _sbits(0, max(max(f["scale"] for f in macs), 1))
        rows = [i.f for i in prog.instrs if i.unit == "row"]
        self.nmax = max([f["N"] for f in rows] + [2])
        lns = [n for n in prog.nodes if n.kind == "layernorm"]
        sms = [n for n in prog.nodes if n.kind == "softmax"]
        self.dvw = max([n.d_type(g).width for n in lns] + [2])  # N*x - S
        # the write-back's scale multiply: by constants (shifts and adds) when the program has few
        # scales and the multiplies are logic, else on the row unit's wide multiplier M1
        self.scales = sorted({f["scale"] for f in macs if f.get("wbmode")})
        self.const_scales = not self.row_dsp and len(self.scales) <= MAX_CONST_SCALES
        self.m1a = max(self.tw, self.dvw) if self.const_scales else max(self.aw, self.tw, self.dvw)
        self.m1b = max(self.tw, self.dvw) if self.const_scales else max(self.scw, self.tw, self.dvw)
        self.sw = max([g.type_of(n.inputs[0]).width + _clog2(n.n(g)) + 1 for n in lns] + [2])  # row sum
        self.rw = max([n.q_type(g).width + 1 for n in lns] + [n.sum_type(g).width + 1 for n in sms] + [2])
        sm_sh = [i.f["rqsh"] + self.rw for i in prog.instrs if i.op == "softmax"]
        zs = [i.f["zhi"] for i in prog.instrs if "zhi" in i.f] or [1]
        self.zw = _sbits(-max(zs) - 1, max(zs))
        # the row unit's values: the pre-op's (shifted sums), M1's products, table data; after y = z*g + b
        adds = [i.f for i in prog.instrs if i.op == "add"]
        sh = max([max(a["ash"], a["bsh"]) for a in adds] + [0])
        self.prew = max(self.dv + sh + 2, self.dvw + 1, self.dv + 1)
        self.rv = max(self.prew, self.m1a + self.m1b, self.tw + 1)
        self.r6 = max(self.rv, self.zw + self.c0w + 1, self.c1w + 1) + 1
        # softmax / layer norm: the normalised sum's width; layer norm's z shift zc0 + (p - R) // 2 (even)
        nrm = [i.f for i in prog.instrs if i.op in ("softmax", "layernorm")]
        self.nw = max([f["R"] + 2 for f in nrm] + [2])
        lns_f = [f for f in nrm if "zc0" in f]
        self.zl = max([0] + [-(f["zc0"] + ((-f["R"] - 1) >> 1)) for f in lns_f])
        self.zr = max([1] + [f["zc0"] + ((self.rw - f["R"]) >> 1) for f in lns_f])
        # the common requantizer's input: the write-back's bias sum or scale product, the row unit's value
        sc_w = max([self.aw + max(abs(s), 1).bit_length() + 1 for s in self.scales] + [0]) if self.const_scales \
            else self.aw + self.scw
        self.vw = max(max(self.aw, self.c0w) + 1, sc_w, self.r6)
        shs = [i.f.get("rqsh", 0) for i in prog.instrs] + [0]
        self.lshift = max(0, -min(shs))
        self.rshift = max(shs + sm_sh + [24])  # softmax adds the leading-one position; layer norm's z
        # layer norm's pass 2 at half rate (field h2): its z requantization on the common requantizer
        self.share_z = any(i.f.get("h2") for i in prog.instrs if i.op == "layernorm")
        if self.share_z and not all(i.f.get("h2") for i in prog.instrs if i.op == "layernorm"):
            raise ValueError("layer norm's z on the common requantizer needs every layer norm at half rate (h2)")
        if self.share_z:
            self.lshift, self.rshift = max(self.lshift, self.zl), max(self.rshift, self.zr)
        self.rqw = self.vw + self.lshift + 1
        # instruction fields in a block RAM rather than logic (a device of few LUTs): two 16-bit wide
        self.field_ram_bits = 0 if self.row_dsp else 32
        self.aaw = max((prog.dm_words * L - 1).bit_length(), 1) + 1  # element addresses (signed slack)


class CompactTop(wiring.Component):
    """``i`` takes input rows, ``o`` gives output rows (as the dataflow ``Top``)."""

    def __init__(self, design, peek: bool = False):
        self._design = design
        self._peek = peek
        members = {
            "i": In(stream.Signature(row_layout(design.in_type, design.in_cols))),
            "o": Out(stream.Signature(row_layout(design.out_type, design.out_cols))),
        }
        if peek:  # between samples (waiting for input) the data memory's read port reads word peek_addr
            prog = design.program
            members["peek_addr"] = In(range(max(prog.dm_words, 2)))
            members["peek_data"] = Out(prog.L * design.widths.dw)
        super().__init__(members)

    def elaborate(self, platform):
        d = self._design
        prog: Program = d.program
        W = d.widths
        L = prog.L
        lg = _clog2(L)
        m = Module()

        # -- fields: the instruction ROM (logic) into registers ------------------------------
        # a table's range as the engine reads it: the source clamped to [off, hi] (hi = off + size - 1),
        # plus rb = base - off + the table ROM's first entry (its word index and entry from one sum)
        fds = []
        for ins in prog.instrs:
            fd = dict(ins.f)
            for t in ("t1", "t2"):
                if t + "base" in fd:
                    base, size = fd.pop(t + "base"), fd.pop(t + "size")
                    fd[t + "hi"] = fd[t + "off"] + size - 1
                    fd[t + "rb"] = base - fd[t + "off"] + W.tword0 * W.per
                    fd[t + "lr"], fd[t + "hr"] = fd[t + "off"] + fd[t + "rb"], fd[t + "hi"] + fd[t + "rb"]
            # loop bounds less one (compared with counters: no subtraction on the path)
            for k in ("K", "T", "M", "G", "N", "n1", "n2"):
                if k in fd:
                    fd[k + "m1"] = fd[k] - 1
            if ins.unit == "mac":
                fd["Pm1"] = max(fd["K"], L) - 1
            fds.append(fd)
        names = sorted({k for fd in fds for k in fd})
        f = {}
        for k in list(names):
            vals = [fd.get(k, 0) for fd in fds]
            used = [fd[k] for fd in fds if k in fd]
            if k in ONLY_WHERE_SET and len(set(used)) == 1:  # one value wherever it is read: a constant
                vals = used
            if len(set(vals)) == 1:  # the same in every instruction: a constant, no register
                f[k] = Const(vals[0], signed(_sbits(vals[0], vals[0])))
                names.remove(k)
            else:
                f[k] = Signal(signed(_sbits(min(vals), max(vals))), name=f"f_{k}")
        for k in ("rqsh", "rqrnd", "rqsat", "rqlo", "rqhi", "rqmask", "rqhalf", "eps", "zc0", "R", "ash", "bsh", "scale", "cbase", "t1rb", "t1shift", "t1off", "t1hi", "t1lr", "t1hr",
                  "t2rb", "t2shift", "t2off", "t2hi", "t2lr", "t2hr", "zrnd", "zsat", "zlo", "zhi", "zmask", "zhalf",
                  "aone", "brom", "wbmode", "Nlast", "asg", "asm", "bsg", "bsk", "osg", "osm", "ocs", "G", "M", "T", "K",
                  "abase", "bbase", "obase", "n1", "n2", "N", "Km1", "Tm1", "Mm1", "Gm1", "Pm1",
                  "Nm1", "n1m1", "n2m1", "as1", "as2", "asc", "bbase", "bs1", "bs2", "bsc",
                  "dbase", "ds1", "ds2", "dsc", "ua", "ub", "abuf", "arl", "t1uns", "t2uns", "h2"):
            if k not in f:
                f[k] = Const(0, signed(2))
        is_row = Signal(name="is_row")
        npc = len(prog.instrs)
        pc = Signal(range(npc + 1), name="pc")
        # the widest fields in a block RAM (read like the registers: the word of pc, one cycle later)
        in_ram, ram_w = [], 0
        for k in sorted(names, key=lambda k: (-f[k].shape().width, k)):
            if ram_w + f[k].shape().width <= W.field_ram_bits:
                in_ram.append(k)
                ram_w += f[k].shape().width
        if in_ram:
            def fword(fd):
                v, o = 0, 0
                for k in in_ram:
                    w = f[k].shape().width
                    v |= (fd.get(k, 0) & ((1 << w) - 1)) << o
                    o += w
                return v
            m.submodules.fram = fram = Memory(shape=unsigned(ram_w), depth=npc + 1, attrs={"rom_style": "block"},
                                              init=[fword(fd) for fd in fds] + [fword(fds[-1])])
            rpf = fram.read_port(domain="sync")
            m.d.comb += rpf.addr.eq(pc)
            o = 0
            for k in in_ram:
                w = f[k].shape().width
                m.d.comb += f[k].eq(rpf.data[o:o + w].as_signed())
                o += w
        op_is = {k: Signal(name=f"op_{k}") for k in ROW_OPS}  # the row op decoded at the fetch (registered)
        with m.Switch(pc):
            for i, ins in enumerate(prog.instrs):
                with m.Case(i):
                    m.d.sync += is_row.eq(ins.unit == "row")
                    m.d.sync += [op_is[k].eq(ins.unit == "row" and ins.op == k) for k in ROW_OPS]
                    m.d.sync += [f[k].eq(fds[i].get(k, 0)) for k in names if k not in in_ram]
        multi = Signal(name="multi")
        m.d.comb += multi.eq(op_is["softmax"] | op_is["layernorm"])

        def field_shift(x, k):
            """``x << f[k]``: a multiplexer over the shifts the program uses (few), else a shifter."""
            vals = sorted({i.f[k] for i in prog.instrs if k in i.f} | {0})
            if len(vals) > 4 or isinstance(f[k], Const):
                return x << f[k][:4].as_unsigned()
            out = x << vals[0]
            for v in vals[1:]:
                out = Mux(f[k] == v, x << v, out)
            return out

        # -- memories -------------------------------------------------------------------------
        dw = W.dw
        # no word is read in the cycle it is written (live tensors are distinct whole words; the shell
        # peeks between samples): synthesis need not keep the read's old value on a collision
        dm = Memory(shape=unsigned(L * dw), depth=max(prog.dm_words, 2), init=[], attrs={"no_rw_check": 1})
        m.submodules.dm = dm
        rpa = dm.read_port(domain="sync")  # one read port: a block RAM of the width of a word
        wp = dm.write_port(granularity=dw)
        dv = W.dv

        def lanes(word, width=dw):
            return [word[j * width:(j + 1) * width].as_signed() for j in range(L)]

        def value(raw, uns, name):
            """A lane's raw bits as a value: unsigned (zero-extended) when ``uns``, else signed."""
            v = Signal(signed(raw.shape().width + 1), name=name)
            m.d.comb += v.eq(Mux(uns, raw.as_unsigned(), raw.as_signed()))
            return v

        def pack_w(row, width):
            v = 0
            for j, x in enumerate(row):
                v |= (int(x) & ((1 << width) - 1)) << (j * width)
            return v

        tab_words = [prog.trom[k:k + W.per] for k in range(0, len(prog.trom), W.per)]
        rom = Memory(shape=unsigned(W.romw), depth=W.romd,
                     init=[pack_w(r, W.ww) for r in prog.wrom] + [pack_w(r, W.tws) for r in tab_words])
        m.submodules.rom = rom  # weights, then the tables (W.per entries a word)
        rpw = rom.read_port(domain="sync")
        cw = W.c0w + W.c1w
        crom = Memory(shape=unsigned(cw), depth=len(prog.crom),
                      init=[(a & ((1 << W.c0w) - 1)) | ((b & ((1 << W.c1w) - 1)) << W.c0w) for a, b in prog.crom])
        m.submodules.crom = crom
        rpc = crom.read_port(domain="sync")
        c_g = rpc.data[:W.c0w].as_signed()
        c_b = rpc.data[W.c0w:].as_signed()

        # -- shared pieces: wide multiplier M1, requantizer, table index -------------------------
        m1a = Signal(signed(W.m1a), name="m1a")
        m1b = Signal(signed(W.m1b), name="m1b")
        # The row unit's multiplies run on the MAC lanes' multipliers (idle during row instructions)
        # when their 16-bit limb products fit in the lanes: the lanes' products register one cycle
        # after the operands, as a registered multiply would; else they are their own multipliers.
        lane_ops = [(Signal(signed(16), name=f"lane_ra{j}"), Signal(signed(16), name=f"lane_rb{j}")) for j in range(L)]
        lane_sums = []  # (product signal, [(lane, shift)]): assigned once the lanes' products exist
        lanes_free = list(range(L)) if not W.row_dsp and W.const_scales else []
        spare_dsp = [max((d.dsps or 0) - L, 0) if not W.row_dsp else 0]

        def row_mul(a, b, name):
            la, lb = _limbs(a), _limbs(b)
            if len(la) * len(lb) > len(lanes_free):
                if len(la) * len(lb) <= spare_dsp[0]:  # on the DSPs beyond the lanes
                    spare_dsp[0] -= len(la) * len(lb)
                    return pipe_mul(m, a, b, name, True)
                return pipe_mul(m, a, b, name, W.row_dsp)
            out = Signal(signed(a.shape().width + b.shape().width), name=name)
            parts = []
            for xa, sa in la:
                for xb, sb in lb:
                    j = lanes_free.pop(0)
                    m.d.comb += [lane_ops[j][0].eq(xa), lane_ops[j][1].eq(xb)]
                    parts.append((j, sa + sb))
            lane_sums.append((out, parts))
            return out

        m1p = row_mul(m1a, m1b, "m1p")  # one cycle after its operands
        # M2: layer norm's z * gamma; with the scales and gammas in 16 bits and the DSPs beyond the lanes
        # enough for the wide operand's 16-bit limbs, also the write-back's scale product (one DSP a limb)
        scale_m2 = W.const_scales and W.scw <= 16 and W.gw <= 16 and any(sc != 0 for sc in W.scales) and \
            len(_limbs(Signal(signed(max(W.zw, W.aw))))) <= spare_dsp[0]
        if scale_m2:
            m2a = Signal(signed(16), name="m2a")  # layer norm's gamma, or the scale
            m2b = Signal(signed(max(W.zw, W.aw)), name="m2b")  # z, or the accumulator's sum
            m2p = Signal(signed(16 + m2b.shape().width), name="m2p")
            m2_parts = []  # the limbs' products summed, then registered (their flip-flops pair with the sum's LUTs)
            for xb, sb in _limbs(m2b):
                m2_parts.append((m2a * xb) << sb)
                spare_dsp[0] -= 1
            m.d.sync += m2p.eq(_tree(m2_parts))
        else:
            m2a = Signal(signed(W.c0w), name="m2a")  # layer norm's gamma
            m2b = Signal(signed(W.zw), name="m2b")  # z
            m2p = row_mul(m2a, m2b, "m2p")

        rq_v = Signal(signed(W.vw), name="rq_v")
        rq_sh = Signal(signed(_sbits(-W.lshift, W.rshift + W.lshift)), name="rq_sh")
        rq_byp = Signal(name="rq_byp")
        rq_ok = Signal(name="rq_ok")
        rq_dst = Signal(signed(W.aaw), name="rq_dst")

        def requant(v, sh, rnd, sat, lo, hi, mask, half, width, name, lshift=W.lshift, rshift=W.rshift, keep=None,
                    biased=False, pipe=False):
            """golden's requantization of ``v`` by a run-time shift ``sh`` in [-lshift, rshift]
            (right when positive): one funnel shifter, t = floor(v * 2 / 2**sh); its lowest bit
            is the rounding bit, the bits shifted out below it the sticky bit (ties to even).  With
            ``pipe`` the shifter's t and sticky bit are registered: the result one cycle after ``v``
            and ``sh``, from the rounding fields of that cycle (rnd, sat, lo, hi, mask, half)."""
            vwid = v.shape().width
            x = Cat(Const(0, lshift + 1), v).as_signed()  # v * 2**(lshift + 1)
            s_ = Signal(range(rshift + lshift + 1), name=name + "_s")
            m.d.comb += s_.eq(sh if biased else sh + lshift)  # biased: sh + lshift given
            # the shifter's stages (shift by 2**k when bit k of s_ is set) OR the bits each drops into
            # the sticky bit: the bits of x below s_ (those below lshift + 1 are zero)
            y, st = x, Const(0, 1)
            for k in range(s_.shape().width):
                st = st | (s_[k] & y[:min(1 << k, y.shape().width)].any())
                y = Mux(s_[k], y >> (1 << k), y)
            t = Signal(signed(vwid + lshift + 1), name=name + "_t")
            sticky = Signal(name=name + "_sticky")
            if pipe:
                m.d.sync += [t.eq(y), sticky.eq(st)]
            else:
                m.d.comb += [t.eq(y), sticky.eq(st)]
            q = t[1:].as_signed()  # floor(v / 2**sh), or v << -sh
            inc = Signal(name=name + "_inc")
            m.d.comb += inc.eq(Mux(rnd == 1, t[0], Mux(rnd == 2, t[0] & (sticky | q[0]), 0)))
            out = Signal(signed(width), name=name + "_out")
            if keep is None:
                v1 = Signal(signed(width), name=name + "_v1")
                m.d.comb += v1.eq(q + inc)
                wrapped = Signal(signed(width), name=name + "_wrap")
                m.d.comb += wrapped.eq(((v1 + half) & mask) - half)
                m.d.comb += out.eq(Mux(sat, Mux(v1 < lo, lo, Mux(v1 > hi, hi, v1)), wrapped))
                return out
            # only the low ``keep`` bits of the result are read: q's low kw bits and whether q fits
            # them (else it saturates by its sign); the wrap reads low bits only
            kw = max(keep, lo.shape().width, hi.shape().width, mask.shape().width, half.shape().width) + 1
            top = q[kw - 1:]
            ovf = Signal(name=name + "_ovf")
            m.d.comb += ovf.eq(top.any() & ~top.all())
            v1 = Signal(signed(kw + 1), name=name + "_v1")
            m.d.comb += v1.eq(q[:kw].as_signed() + inc)
            wrapped = Signal(signed(kw + 1), name=name + "_wrap")
            m.d.comb += wrapped.eq(((v1 + half) & mask) - half)
            satd = Mux(ovf, Mux(q[-1], lo, hi), Mux(v1 < lo, lo, Mux(v1 > hi, hi, v1)))
            m.d.comb += out.eq(Mux(sat, satd, wrapped))
            return out

        # the common requantizer in two stages: RA (operand select, shifter, sticky bit) and RB (rounding
        # add, saturation), then the write; what RB reads of RA's cycle is registered beside its t
        z_on = Signal(name="rq_z")  # the requantizer takes layer norm's z (shared: pass 2 at half rate)
        z_on_b = Signal(name="rq_z_b")
        rb_byp, rb_ok = Signal(name="rq_byp_b"), Signal(name="rq_ok_b")
        rb_v = Signal(signed(dw), name="rq_v_b")  # a copy's or lookup's value (written as it is)
        rb_dst = Signal(signed(W.aaw), name="rq_dst_b")
        m.d.sync += [z_on_b.eq(z_on), rb_byp.eq(rq_byp), rb_ok.eq(rq_ok), rb_v.eq(rq_v[:dw]), rb_dst.eq(rq_dst)]
        rq_par = [Mux(z_on_b, f["z" + k], f["rq" + k]) if W.share_z else f["rq" + k]
                  for k in ("rnd", "sat", "lo", "hi", "mask", "half")]
        rq_out = requant(rq_v, rq_sh, *rq_par, W.rqw, "rqf", keep=max(dw, W.zw if W.share_z else 0), biased=True,
                         pipe=True)
        out_v = Signal(signed(dw), name="out_v")
        out_ok = Signal(name="out_ok")
        out_dst = Signal(signed(W.aaw), name="out_dst")
        m.d.sync += [out_v.eq(Mux(rb_byp, rb_v, rq_out)), out_ok.eq(rb_ok), out_dst.eq(rb_dst)]

        tsrc = Signal(signed(max(W.nw + 1, dv + 2)), name="tsrc")
        tsel2 = Signal(name="tsel2")
        t_sh = Mux(tsel2, f["t2shift"], f["t1shift"])
        t_off = Mux(tsel2, f["t2off"], f["t1off"])
        t_hi = Mux(tsel2, f["t2hi"], f["t1hi"])
        t_rb = Mux(tsel2, f["t2rb"], f["t1rb"])
        t_lr = Mux(tsel2, f["t2lr"], f["t1lr"])  # the first entry, and the last
        t_hr = Mux(tsel2, f["t2hr"], f["t1hr"])
        t_raw = Signal(signed(tsrc.shape().width + 1), name="t_raw")
        m.d.comb += t_raw.eq(tsrc >> t_sh[:6].as_unsigned())
        # the ROM entry: clamp(src >> shift - off, 0, size - 1) + base, after the table ROM's first word
        t_idx = Signal(signed(max(tsrc.shape().width, _sbits(0, W.romd * W.per)) + 2), name="t_idx")
        m.d.comb += t_idx.eq(Mux(t_raw < t_off, t_lr, Mux(t_raw > t_hi, t_hr, t_raw + t_rb)))  # add beside compares
        lp = _clog2(W.per)
        t_word = Signal(range(W.romd + 1), name="t_word")
        m.d.comb += t_word.eq(t_idx >> lp)
        t_sel = Signal(range(max(W.per, 2)), name="t_sel")
        t_uns = Signal(name="t_uns")
        m.d.sync += [t_sel.eq(t_idx[:lp] if lp else 0), t_uns.eq(Mux(tsel2, f["t2uns"][0], f["t1uns"][0]))]
        t_ent = Signal(W.tws, name="t_ent")
        with m.Switch(t_sel):
            for k in range(W.per):
                with m.Case(k):
                    m.d.comb += t_ent.eq(rpw.data[k * W.tws:(k + 1) * W.tws])
        tdat = value(t_ent, t_uns, "tdat")

        # -- the sequencer ----------------------------------------------------------------------
        in_rows, out_rows = d.in_rows, d.out_rows
        ip, op_ = prog.in_place, prog.out_place
        nwi, nwo = ip.pitch // L, op_.pitch // L
        state = Signal(range(6), name="state")
        LOAD, FETCH0, FETCH1, RUN, DRAIN, STORE = range(6)
        cnt = Signal(range(max(in_rows, out_rows, 2) + 1), name="rowcnt")
        wcnt = Signal(range(max(nwi, nwo, 1) + 2), name="wcnt")
        drain = Signal(range(max(L + MAC_DRAIN + WB_DEPTH, ROW_DRAIN + LN_H2_DRAIN) + 2), name="drain")
        wr_addr_ld = Signal(range(max(prog.dm_words, 2)), name="ld_addr")
        ld_buf = Signal(len(self.i.payload.as_value()), name="ld_buf")

        # load -----------------------------------------------------------------------------------
        in_t = d.in_type
        ld_words = []
        for src in (self.i.payload.as_value(), ld_buf):
            elems = unpack(src, d.in_cols, in_t)
            ld_words.append([Cat(*[_ext(m, elems[w * L + j] if w * L + j < d.in_cols else Const(0, signed(2)), dw,
                                        f"ld{len(ld_words)}_{w}_{j}") for j in range(L)]) for w in range(nwi)])
        ld_wsel = Signal(range(max(nwi, 2)), name="ld_wsel")
        ld_more = Signal(name="ld_more")
        m.d.comb += self.i.ready.eq((state == LOAD) & ~ld_more)

        # write port arbitration: load, or the common write stage
        with m.If((state == LOAD) & self.i.valid & self.i.ready):
            m.d.comb += [wp.addr.eq(ip.base // L + cnt * nwi), wp.data.eq(ld_words[0][0]), wp.en.eq((1 << L) - 1)]
            m.d.sync += [ld_buf.eq(self.i.payload.as_value()), cnt.eq(cnt + 1)]
            if nwi > 1:
                m.d.sync += [ld_more.eq(1), ld_wsel.eq(1), wr_addr_ld.eq(ip.base // L + cnt * nwi + 1)]
            else:
                with m.If(cnt == in_rows - 1):
                    m.d.sync += [state.eq(FETCH0), pc.eq(0), cnt.eq(0)]
        with m.Elif(ld_more):
            m.d.comb += [wp.addr.eq(wr_addr_ld), wp.en.eq((1 << L) - 1)]
            with m.Switch(ld_wsel):
                for w in range(1, nwi):
                    with m.Case(w):
                        m.d.comb += wp.data.eq(ld_words[1][w])
            m.d.sync += [ld_wsel.eq(ld_wsel + 1), wr_addr_ld.eq(wr_addr_ld + 1)]
            with m.If(ld_wsel == nwi - 1):
                m.d.sync += ld_more.eq(0)
                with m.If(cnt == in_rows):
                    m.d.sync += [state.eq(FETCH0), pc.eq(0), cnt.eq(0)]
        with m.Elif(out_ok):
            m.d.comb += [wp.addr.eq(out_dst >> lg), wp.data.eq(Cat(*([out_v] * L))),
                         wp.en.eq(Const(1, L) << out_dst[:lg] if lg else 1)]

        # fetch --------------------------------------------------------------------------------------
        run_done = Signal(name="run_done")
        drain_len = Signal.like(drain, name="drain_len")
        with m.If(state == FETCH0):
            with m.If(pc == npc):
                m.d.sync += [state.eq(STORE), cnt.eq(0), wcnt.eq(0)]
            with m.Else():
                m.d.sync += state.eq(FETCH1)
        with m.If(state == FETCH1):
            m.d.sync += state.eq(RUN)
        with m.If((state == RUN) & run_done):
            m.d.sync += [state.eq(DRAIN), drain.eq(drain_len)]
        with m.If(state == DRAIN):
            m.d.sync += drain.eq(drain - 1)
            with m.If(drain == 1):
                m.d.sync += [state.eq(FETCH0), pc.eq(pc + 1)]
        setup = Signal(name="setup")
        m.d.comb += setup.eq(state == FETCH1)
        running = Signal(name="running")
        m.d.comb += running.eq(state == RUN)

        # -- MAC array --------------------------------------------------------------------------------
        aw = W.aaw
        g_ = Signal(range(max(max([i.f.get("G", 1) for i in prog.instrs] + [1]), 2) + 1), name="mac_g")
        mac_f = [i.f for i in prog.instrs if i.unit == "mac"] or [{"M": 1, "T": 1, "K": 1}]
        mm = Signal(range(max(f_["M"] for f_ in mac_f) + 1), name="mac_m")
        t_ = Signal(range(max(f_["T"] for f_ in mac_f) + 1), name="mac_t")
        s_ = Signal(range(max(max(f_["K"], L) for f_ in mac_f) + 1), name="mac_s")
        Ag, Am, Ae = (Signal(signed(aw), name=n) for n in ("Ag", "Am", "Ae"))
        bwid = max(len(prog.wrom).bit_length(), aw) + 1
        Bg, Bt, Bk = (Signal(signed(bwid), name=n) for n in ("Bg", "Bt", "Bk"))
        mac_on = Signal(name="mac_on")
        m.d.comb += mac_on.eq(running & ~is_row)
        ldp = Signal(name="mac_load")  # loading the a row (matmul) before a row's tiles
        rl = Signal(range(max(-(-W.karow // L), 1) + 1), name="mac_rl")
        mac_run = Signal(name="mac_run")
        m.d.comb += mac_run.eq(mac_on & ~ldp)
        issue = Signal(name="mac_issue")
        m.d.comb += issue.eq(mac_run & (s_ < f["K"]))
        with m.If(mac_on & ldp):
            m.d.sync += rl.eq(rl + 1)
            with m.If(rl == f["arl"] - 1):
                m.d.sync += ldp.eq(0)
        last_t, last_m, last_g = (Signal(name=n) for n in ("last_t", "last_m", "last_g"))
        m.d.comb += [last_t.eq(t_ == f["Tm1"]), last_m.eq(mm == f["Mm1"]), last_g.eq(g_ == f["Gm1"])]
        with m.If(setup & ~is_row):
            m.d.sync += [g_.eq(0), mm.eq(0), t_.eq(0), s_.eq(0), Ag.eq(f["abase"]), Am.eq(f["abase"]),
                         Ae.eq(f["abase"]), Bg.eq(f["bbase"]), Bt.eq(f["bbase"]), Bk.eq(f["bbase"]),
                         ldp.eq(f["arl"] > 0), rl.eq(0)]
        with m.If(mac_run):
            m.d.sync += [s_.eq(s_ + 1), Ae.eq(Ae + 1), Bk.eq(Bk + f["bsk"])]
            with m.If(s_ == f["Pm1"]):
                m.d.sync += [s_.eq(0), t_.eq(t_ + 1), Ae.eq(Am), Bt.eq(Bt + 1), Bk.eq(Bt + 1)]
                with m.If(last_t):
                    m.d.sync += [t_.eq(0), mm.eq(mm + 1), Am.eq(Am + f["asm"]), Ae.eq(Am + f["asm"]),
                                 Bt.eq(Bg), Bk.eq(Bg), ldp.eq(f["arl"] > 0), rl.eq(0)]
                    with m.If(last_m):
                        m.d.sync += [mm.eq(0), g_.eq(g_ + 1), Ag.eq(Ag + f["asg"]), Am.eq(Ag + f["asg"]),
                                     Ae.eq(Ag + f["asg"]), Bg.eq(Bg + f["bsg"]), Bt.eq(Bg + f["bsg"]),
                                     Bk.eq(Bg + f["bsg"])]
        mac_done = Signal(name="mac_done")
        m.d.comb += mac_done.eq(mac_run & (s_ == f["Pm1"]) & last_t & last_m & last_g)

        # the a row of a matmul: ceil(K/L) words into a ring of element registers (its rows start on a
        # word); the ring turns one element a product, so its element 0 is the one the product takes
        nwa = -(-W.karow // L)
        arow = [Signal(signed(dw), name=f"arow{k}") for k in range(W.karow)]
        a_ks = sorted({i.f["K"] for i in prog.instrs if i.unit == "mac" and i.f["abuf"]})
        ld_v = Signal(name="ld_v")
        ld_i = Signal.like(rl, name="ld_i")
        m.d.sync += [ld_v.eq(mac_on & ldp), ld_i.eq(rl)]
        a_turn = Signal(name="arow_turn")
        a_arls = {i.f["arl"] for i in prog.instrs if i.unit == "mac" and i.f["abuf"]}
        if W.karow == nwa * L and a_arls == {nwa}:  # every row fills the ring: its words shift in
            with m.If(ld_v):
                m.d.sync += [arow[k].eq(arow[k + L]) for k in range(W.karow - L)]
                m.d.sync += [arow[W.karow - L + j].eq(rpa.data[j * dw:(j + 1) * dw]) for j in range(L)]
        else:
            with m.If(ld_v):
                with m.Switch(ld_i):
                    for w in range(nwa):
                        with m.Case(w):
                            m.d.sync += [arow[w * L + j].eq(rpa.data[j * dw:(j + 1) * dw])
                                         for j in range(L) if w * L + j < W.karow]
        with m.If(a_turn & ~ld_v):
            for k in range(W.karow):
                wrap = [kk for kk in a_ks if kk - 1 == k and kk < W.karow]  # a shorter row's last element
                nxt = arow[(k + 1) % W.karow]
                if wrap:
                    nxt = Mux(f["K"] == wrap[0], arow[0], nxt)
                m.d.sync += arow[k].eq(nxt)
        # issue -> operands
        q0 = {k: Signal(name=f"q0_{k}") for k in ("v", "first", "last")}
        q0_k = Signal(range(max(W.karow, 2)), name="q0_k")
        m.d.sync += q0_k.eq(s_)
        q0_lane = Signal(range(L), name="q0_lane")
        m.d.sync += [q0["v"].eq(issue), q0["first"].eq(s_ == 0), q0["last"].eq(s_ == f["Km1"]),
                     q0_lane.eq(Ae[:lg] if lg else 0)]
        bw = W.bv
        q1_a = Signal(signed(dw), name="q1_a")  # a's raw bits as signed; q1_ca: an unsigned a's top bit
        q1_ca = Signal(name="q1_ca")
        q1_b = [Signal(signed(bw), name=f"q1_b{j}") for j in range(L)]
        q1 = {k: Signal(name=f"q1_{k}") for k in ("v", "first", "last")}
        a_lanes = lanes(rpa.data)
        a_raw = Signal(signed(dw), name="a_raw")
        m.d.comb += a_turn.eq(q0["v"] & f["abuf"][0])
        with m.If(f["abuf"][0]):
            m.d.comb += a_raw.eq(arow[0])
        with m.Else():
            with m.Switch(q0_lane):
                for j in range(L):
                    with m.Case(j):
                        m.d.comb += a_raw.eq(a_lanes[j])
        m.d.sync += [q1_a.eq(Mux(f["aone"][0], 1, a_raw)),
                     q1_ca.eq((f["ua"][0] & a_raw[dw - 1] & ~f["aone"][0]) if W.acorr else 0)]
        wl = lanes(rpw.data, W.ww)
        for j, b in enumerate(q1_b):
            bv = value(a_lanes[j], f["ub"][0], f"b_val{j}")
            m.d.sync += b.eq(Mux(f["brom"][0], wl[j], bv))
        m.d.sync += [q1[k].eq(q0[k]) for k in q1]
        q2_p = [Signal(signed(max(dw + bw + 1, 33 if lane_sums else 0)), name=f"q2_p{j}") for j in range(L)]
        q2 = {k: Signal(name=f"q2_{k}") for k in ("v", "first", "last")}
        for j, (p, b) in enumerate(zip(q2_p, q1_b)):
            lane_row = any(j == jj for _, parts in lane_sums for jj, _ in parts)
            if lane_row:  # a row instruction's multiply on this lane
                prod = Mux(is_row, lane_ops[j][0], q1_a) * Mux(is_row, lane_ops[j][1], b)
            else:
                prod = q1_a * b
            if W.acorr:  # an unsigned a with its top bit set is its raw bits as signed + 2**dw
                ca = (q1_ca & ~is_row) if lane_row else q1_ca
                prod = Cat(prod[:dw], prod[dw:].as_signed() + Mux(ca, b, 0)).as_signed()
            m.d.sync += p.eq(prod)
        for out, parts in lane_sums:
            m.d.comb += out.eq(_tree([q2_p[j] << sh for j, sh in parts]))
        m.d.sync += [q2[k].eq(q1[k]) for k in q2]
        acc = [Signal(signed(W.aw), name=f"acc{j}") for j in range(L)]
        wbuf = [Signal(signed(W.aw), name=f"wbuf{j}") for j in range(L)]
        nxt = [Mux(q2["first"], 0, a) + p for a, p in zip(acc, q2_p)]
        wb_on = Signal(name="wb_on")
        wb_j = Signal(range(L + 1), name="wb_j")
        # the tile written back: its output and constant addresses generated at the write-back, in the
        # issue's tile order, advanced after its last element (no address pipeline)
        wb_ot, wb_om, wb_og = (Signal(signed(aw), name=n) for n in ("wb_ot", "wb_om", "wb_og"))
        wb_ct = Signal(signed(max(len(prog.crom).bit_length() + 1, 2) + 1), name="wb_ct")
        wb_t, wb_m = Signal.like(t_, name="wb_t"), Signal.like(mm, name="wb_m")
        wb_nl = Signal(range(L + 1), name="wb_nl")
        m.d.comb += wb_nl.eq(Mux(wb_t == f["Tm1"], f["Nlast"], L))
        # a column stride (field ocs, a dense writing its output transposed): the element's address
        # advances by it (wb_oe), the tile's by L times it; else the element's address is wb_ot + wb_j
        strided = not isinstance(f["ocs"], Const) or f["ocs"].value != 1
        wb_oe = Signal(signed(aw), name="wb_oe")
        ot_step = (f["ocs"] << lg) if strided else L

        def oe(v):
            return [wb_oe.eq(v)] if strided else []
        with m.If(setup & ~is_row):
            m.d.sync += [wb_ot.eq(f["obase"]), wb_om.eq(f["obase"]), wb_og.eq(f["obase"]), wb_ct.eq(f["cbase"]),
                         wb_t.eq(0), wb_m.eq(0)] + oe(f["obase"])
        with m.If(wb_on):
            m.d.sync += [wb_j.eq(wb_j + 1)] + oe(wb_oe + f["ocs"])
            with m.If(wb_j == wb_nl - 1):
                m.d.sync += [wb_on.eq(0), wb_t.eq(wb_t + 1), wb_ot.eq(wb_ot + ot_step), wb_ct.eq(wb_ct + L)] + \
                    oe(wb_ot + ot_step)
                with m.If(wb_t == f["Tm1"]):
                    m.d.sync += [wb_t.eq(0), wb_m.eq(wb_m + 1), wb_om.eq(wb_om + f["osm"]),
                                 wb_ot.eq(wb_om + f["osm"]), wb_ct.eq(f["cbase"])] + oe(wb_om + f["osm"])
                    with m.If(wb_m == f["Mm1"]):
                        m.d.sync += [wb_m.eq(0), wb_og.eq(wb_og + f["osg"]), wb_om.eq(wb_og + f["osg"]),
                                     wb_ot.eq(wb_og + f["osg"])] + oe(wb_og + f["osg"])
        with m.If(q2["v"]):
            m.d.sync += [a.eq(x) for a, x in zip(acc, nxt)]
        # a finished tile's sums: the accumulators into the write-back buffer the cycle after its last
        # product (the next tile's first product goes into the accumulators meanwhile)
        q3_cap = Signal(name="q3_cap")
        m.d.sync += q3_cap.eq(q2["v"] & q2["last"])
        with m.If(q3_cap):
            m.d.sync += [b.eq(a) for b, a in zip(wbuf, acc)]
            m.d.sync += [wb_on.eq(1), wb_j.eq(0)]
        # write-back: W0 select (and constant read), W1 bias add or scale multiply
        w0_sel = Signal(signed(W.aw), name="w0_sel")
        w0_ok = Signal(name="w0_ok")
        w0_dst = Signal(signed(aw), name="w0_dst")
        # the buffer shifts one lane a cycle towards lane 0, the one written back (no lane multiplexer)
        with m.If(wb_on & ~q3_cap):
            m.d.sync += [wbuf[j].eq(wbuf[j + 1]) for j in range(L - 1)]
        sel = wbuf[0]
        m.d.sync += [w0_sel.eq(sel), w0_ok.eq(wb_on), w0_dst.eq(wb_oe if strided else wb_ot + wb_j)]
        w1_v = Signal(signed(W.vw), name="w1_v")
        w1_ok = Signal(name="w1_ok")
        w1_dst = Signal(signed(aw), name="w1_dst")
        w0b_v = Signal(signed(W.vw), name="w0b_v")  # the bias sum, beside the scale product's cycle
        w0b_ok = Signal(name="w0b_ok")
        w0b_dst = Signal(signed(aw), name="w0b_dst")
        m.d.sync += [w0b_v.eq(w0_sel + c_g), w0b_ok.eq(w0_ok), w0b_dst.eq(w0_dst)]
        if scale_m2:  # the scale product on M2 (idle during MAC instructions)
            with m.If(~is_row):
                m.d.comb += [m2a.eq(f["scale"]), m2b.eq(w0_sel)]
            sc_p = m2p
        elif W.const_scales:  # the scale product, one multiply by a constant per scale of the program
            sc_p = Const(0, signed(2))
            for sc in W.scales:
                sc_p = Mux(f["scale"] == sc, const_mul(m, w0_sel, sc, f"scale_p{sc}"), sc_p)
        else:
            sc_p = m1p
        m.d.sync += [w1_v.eq(Mux(f["wbmode"][0], sc_p, w0b_v)), w1_ok.eq(w0b_ok), w1_dst.eq(w0b_dst)]

        # -- row unit -------------------------------------------------------------------------------
        row_f = [i.f for i in prog.instrs if i.unit == "row"] or [{"n1": 1, "n2": 1, "N": 1}]
        i1 = Signal(range(max(f_["n1"] for f_ in row_f) + 1), name="row_i1")
        i2 = Signal(range(max(f_["n2"] for f_ in row_f) + 1), name="row_i2")
        c_ = Signal(range(max(f_["N"] for f_ in row_f) + 1), name="row_c")
        pss = Signal(2, name="row_pass")
        rph = Signal(2, name="row_phase")  # 0 issue, 1 wait, 2 normalise
        wcnt_r = Signal(8, name="row_wait")
        X = {}
        for x in "ab":
            X[x] = [Signal(signed(aw + 1), name=f"{x}{k}") for k in ("1", "2", "e")]
        row_run = Signal(name="row_run")
        m.d.comb += row_run.eq(running & is_row)
        r_issue = Signal(name="r_issue")  # a read this cycle
        m.d.comb += r_issue.eq(row_run & (rph == 0))
        half = Signal(name="row_half")  # add: a's read (0), then b's (1) through the one port
        slow = Signal(name="row_slow")  # an element every other cycle: add; layer norm's pass 2 with h2
        m.d.comb += slow.eq(op_is["add"] | (op_is["layernorm"] & f["h2"][0] & (pss == 2)))
        with m.If(r_issue & slow):
            m.d.sync += half.eq(~half)
        r_step = Signal(name="r_step")  # an element issued
        m.d.comb += r_step.eq(r_issue & (~slow | half))
        lastpass = Signal(2, name="lastpass")
        m.d.comb += lastpass.eq(Mux(multi, 2, 0))
        c_last = Signal(name="c_last")
        row_last = Signal(name="row_last")
        m.d.comb += [c_last.eq(c_ == f["Nm1"]), row_last.eq((i2 == f["n2m1"]) & (i1 == f["n1m1"]))]
        with m.If(setup & is_row):
            m.d.sync += [i1.eq(0), i2.eq(0), c_.eq(0), pss.eq(0), rph.eq(0), half.eq(0)]
            m.d.sync += [s.eq(f[f"{x}base"]) for x in "ab" for s in X[x]]
        with m.If(r_step):
            m.d.sync += c_.eq(c_ + 1)
            m.d.sync += [X[x][2].eq(X[x][2] + f[f"{x}sc"]) for x in "ab"]
            with m.If(c_last):
                m.d.sync += c_.eq(0)
                m.d.sync += [X[x][2].eq(X[x][1]) for x in "ab"]  # the same row again (next pass)
                with m.If(multi):  # pass 0 -> 1 at once; 1 -> wait for the row's sum, normalise; 2 -> next row
                    with m.Switch(pss):
                        with m.Case(0):
                            m.d.sync += pss.eq(1)
                        with m.Case(1):
                            m.d.sync += [rph.eq(1), wcnt_r.eq(Mux(op_is["softmax"], SUM_WAIT["softmax"], SUM_WAIT["layernorm"]) - 1)]
                        with m.Case(2):
                            m.d.sync += pss.eq(0)
                with m.If(pss == lastpass):  # next row
                    m.d.sync += [i2.eq(i2 + 1)] + [X[x][1].eq(X[x][1] + f[f"{x}s2"]) for x in "ab"] + \
                                [X[x][2].eq(X[x][1] + f[f"{x}s2"]) for x in "ab"]
                    with m.If(i2 == f["n2m1"]):
                        m.d.sync += [i2.eq(0), i1.eq(i1 + 1)] + \
                                    [X[x][0].eq(X[x][0] + f[f"{x}s1"]) for x in "ab"] + \
                                    [X[x][1].eq(X[x][0] + f[f"{x}s1"]) for x in "ab"] + \
                                    [X[x][2].eq(X[x][0] + f[f"{x}s1"]) for x in "ab"]
        # the normalisation: step 0 (the leading one) in the phase rph 2, the P_CYCLES cycles between the
        # sum and pass 2; steps 1 (shift), 2 (table read) and 3 (reciprocal / inverse square root, z's
        # shift) beside pass 2's first issues, whose elements read them from their S3 (rr) and S4 (z) on
        assert P_CYCLES == 1
        p_cnt = Signal(2, name="p_cnt")  # the step; 0 idle after step 3
        with m.If(row_run & (rph == 1)):
            m.d.sync += wcnt_r.eq(wcnt_r - 1)
            with m.If(wcnt_r == 0):
                m.d.sync += rph.eq(2)
        in_p = Signal(name="in_p")  # step 0
        m.d.comb += in_p.eq(row_run & (rph == 2))
        with m.If(in_p):
            m.d.sync += [rph.eq(0), pss.eq(2), p_cnt.eq(1)]
        with m.Elif(p_cnt != 0):
            m.d.sync += p_cnt.eq(p_cnt + 1)
        # the instruction is done after its last issue; its drain covers the pipeline
        m.d.comb += run_done.eq(Mux(is_row, r_step & c_last & (pss == lastpass) & row_last, mac_done))
        m.d.comb += drain_len.eq(Mux(is_row, ROW_DRAIN + Mux(op_is["layernorm"] & f["h2"][0], LN_H2_DRAIN, 0),
                                     MAC_DRAIN + L + WB_DEPTH))

        # the destination addresses, generated at the write stage (no address pipeline): the elements of
        # the last pass are written in their issue order
        Xd = [Signal(signed(aw + 1), name=f"d{k}") for k in ("1", "2", "e")]
        wr_c = Signal.like(c_, name="wr_c")
        wr_i2 = Signal.like(i2, name="wr_i2")
        row_wr = Signal(name="row_wr")
        with m.If(setup & is_row):
            m.d.sync += [wr_c.eq(0), wr_i2.eq(0)] + [x.eq(f["dbase"]) for x in Xd]
        with m.If(row_wr):
            m.d.sync += [wr_c.eq(wr_c + 1), Xd[2].eq(Xd[2] + f["dsc"])]
            with m.If(wr_c == f["Nm1"]):
                m.d.sync += [wr_c.eq(0), wr_i2.eq(wr_i2 + 1), Xd[1].eq(Xd[1] + f["ds2"]), Xd[2].eq(Xd[1] + f["ds2"])]
                with m.If(wr_i2 == f["n2m1"]):
                    m.d.sync += [wr_i2.eq(0), Xd[0].eq(Xd[0] + f["ds1"]), Xd[1].eq(Xd[0] + f["ds1"]),
                                 Xd[2].eq(Xd[0] + f["ds1"])]

        # the element pipeline: S0 issue -> S1 read -> S2 pre-op -> S3 table/multiply -> S4 z -> S5 y
        def tag(name, src):
            s = Signal.like(src, name=name)
            m.d.sync += s.eq(src)
            return s
        s0_wr = Signal(name="s0_wr")
        m.d.comb += s0_wr.eq(r_step & (pss == lastpass))
        s0_first = Signal(name="s0_first")
        m.d.comb += s0_first.eq(c_ == 0)
        s1_h0 = tag("s1_h0", r_issue & op_is["add"] & ~half)
        s1 = dict(v=tag("s1_v", r_step), wr=tag("s1_wr", s0_wr), first=tag("s1_first", s0_first),
                  pss=tag("s1_pss", pss),
                  la=tag("s1_la", X["a"][2][:lg] if lg else Const(0, 1)),
                  lb=tag("s1_lb", X["b"][2][:lg] if lg else Const(0, 1)))
        xa_raw = Signal(signed(dw), name="s1_xa_raw")
        xb_raw = Signal(signed(dw), name="s1_xb_raw")
        with m.Switch(s1["la"]):
            for j in range(L):
                with m.Case(j):
                    m.d.comb += xa_raw.eq(a_lanes[j])
        with m.Switch(s1["lb"]):
            for j in range(L):
                with m.Case(j):
                    m.d.comb += xb_raw.eq(a_lanes[j])
        xa_hold = Signal(signed(dw), name="s1_xa_hold")
        with m.If(s1_h0):
            m.d.sync += xa_hold.eq(xa_raw)
        xa = value(Mux(op_is["add"], xa_hold, xa_raw), f["ua"][0], "s1_xa")
        xb = value(xb_raw, f["ub"][0], "s1_xb")
        s2 = {k: tag("s2_" + k, v) for k, v in s1.items() if k not in ("la", "lb")}
        s2_xa, s2_xb = tag("s2_xa", xa), tag("s2_xb", xb)
        # S2: pre-op and the first reductions
        mx = Signal(signed(dv), name="row_max")
        Ssum = Signal(signed(W.sw), name="row_S")
        dev = Signal(signed(W.dvw), name="s2_dev")
        ln_n = {i.f["N"] for i in prog.instrs if i.op == "layernorm"}
        nf = Const(ln_n.pop(), unsigned(16)) if len(ln_n) == 1 else f["N"].as_unsigned()  # N, as layer norm reads it
        nx = s2_xa * nf if W.row_dsp else _tree(Mux(nf[i], s2_xa << i, 0) for i in range(nf.shape().width))
        m.d.comb += dev.eq(nx - Ssum)
        pre = Signal(signed(W.prew), name="s2_pre")
        with m.If(op_is["add"]):
            m.d.comb += pre.eq(field_shift(s2_xa, "ash") + field_shift(s2_xb, "bsh"))
        with m.Elif(op_is["relu"]):
            m.d.comb += pre.eq(Mux(s2_xa > 0, s2_xa, 0))
        with m.Elif(op_is["layernorm"]):
            m.d.comb += pre.eq(dev)
        with m.Else():
            m.d.comb += pre.eq(s2_xa)
        # softmax's row maximum; its next value (forwarded) gives S1 the table source max - x, registered
        mx_nx = Signal.like(mx, name="row_max_nx")
        m.d.comb += mx_nx.eq(Mux(s2["v"] & (s2["pss"] == 0) & (s2["first"] | (s2_xa > mx)), s2_xa, mx))
        s2_d = tag("s2_d", mx_nx - xa)
        with m.If(s2["v"] & (s2["pss"] == 0)):
            with m.If(op_is["softmax"]):
                m.d.sync += mx.eq(mx_nx)
            with m.If(op_is["layernorm"]):
                m.d.sync += Ssum.eq(Mux(s2["first"], 0, Ssum) + s2_xa)
        p_src = Signal(signed(W.nw + 1), name="p_n")
        p_tab = Signal(name="p_tab")  # the normalisation's table read (no element is at S2 then): p_cnt == 2
        m.d.sync += p_tab.eq(p_cnt == 1)
        m.d.comb += [tsel2.eq(p_tab), tsrc.eq(Mux(p_tab, p_src, Mux(op_is["softmax"], s2_d, s2_xa)))]
        s3 = {k: tag("s3_" + k, v) for k, v in s2.items()}
        s3_pre = tag("s3_pre", pre)
        # S3: table data; the row sum of exponents; the wide multiply
        red = Signal(unsigned(W.rw), name="row_red")  # sum of exponents / sum of squares
        rr = Signal(signed(W.tw), name="row_r")  # reciprocal / inverse square root
        with m.If(is_row):
            m.d.comb += [m1a.eq(Mux(op_is["softmax"], tdat, s3_pre)),
                         m1b.eq(Mux(op_is["layernorm"] & (s3["pss"] == 1), s3_pre, rr))]
        if not W.const_scales:
            with m.Else():
                m.d.comb += [m1a.eq(w0_sel), m1b.eq(f["scale"])]
        s3b = {k: tag("s3b_" + k, v) for k, v in s3.items()}  # the product's cycle
        s3b_v = tag("s3b_v", Mux(op_is["lookup"], tdat, s3_pre))
        s4 = {k: tag("s4_" + k, v) for k, v in s3b.items()}
        s4_v = Signal(signed(W.rv), name="s4_val")
        m.d.sync += s4_v.eq(Mux(multi, m1p, s3b_v))
        # S4: layer norm's sum of squares; z = rq(d * t)
        # the row's reduction, one adder: softmax's sum of exponents (S3), layer norm's sum of squares (S4)
        red_sm = s3["v"] & (s3["pss"] == 1) & op_is["softmax"]
        red_ln = s4["v"] & (s4["pss"] == 1) & op_is["layernorm"]
        with m.If(red_sm | red_ln):
            m.d.sync += red.eq(Mux(Mux(op_is["softmax"], s3["first"], s4["first"]),
                                   Mux(op_is["softmax"], 0, f["eps"]), red) + Mux(op_is["softmax"], tdat, s4_v))
        zsh = Signal(signed(_sbits(-W.zl, W.zr)), name="row_zsh")
        s5_v = Signal(signed(W.rv), name="s5_val")
        if W.share_z:
            # z on the common requantizer (two stages), in the cycles between pass 2's writes: its RA at
            # S4, its RB at S4b (into s5_v), then S5 and S5x (z held) before the multiply, so that a y's
            # RA (S6) falls in the other cycles (an odd number of cycles after a z's); layer norm's
            # elements take S4b and S5x (ROW_DRAIN + 2), the other ops go S4 -> S5 -> S5b
            ln = op_is["layernorm"]
            m.d.sync += z_on.eq(ln & s3b["v"] & (s3b["pss"] == 2))  # = s4's, registered
            z = rq_out[:W.zw].as_signed()  # z's bits at S4b (layer norm reads s5's low zw bits)
            s4b = {k: tag("s4b_" + k, v) for k, v in s4.items()}
            s5 = {k: tag("s5_" + k, Mux(ln, s4b[k], v)) for k, v in s4.items()}
            m.d.sync += s5_v.eq(Mux(ln, z, s4_v))
            s5x = {k: tag("s5x_" + k, v) for k, v in s5.items()}
            zv = tag("s5x_z", s5_v[:W.zw].as_signed())
            col_v = s5["v"]  # layer norm's gamma and beta: the constant ROM read at S5, its data at S5x
            s5b_src = {k: Mux(ln, s5x[k], v) for k, v in s5.items()}
        else:
            z = requant(s4_v, zsh, f["zrnd"], f["zsat"], f["zlo"], f["zhi"], f["zmask"], f["zhalf"], W.rv + W.zl + 1,
                        "rqz", lshift=W.zl, rshift=W.zr, keep=W.zw)
            s5 = {k: tag("s5_" + k, v) for k, v in s4.items()}
            m.d.sync += s5_v.eq(Mux(op_is["layernorm"], z, s4_v))
            zv = s5_v[:W.zw].as_signed()
            col_v = s4["v"]  # layer norm's gamma and beta: the constant ROM read at S4, its data at S5
            s5b_src = s5
        s4_col = Signal.like(c_, name="row_col")  # the element's column: every pass issues columns 0 .. N-1
        with m.If(setup & is_row):
            m.d.sync += s4_col.eq(0)
        with m.Elif(col_v):
            m.d.sync += s4_col.eq(Mux(s4_col == f["Nm1"], 0, s4_col + 1))
        s5_g, s5_b = c_g, c_b
        # S5 (S5x): y = z * gamma + beta
        if scale_m2:
            with m.If(is_row):
                m.d.comb += [m2a.eq(s5_g[:16].as_signed()), m2b.eq(zv)]
        else:
            m.d.comb += [m2a.eq(s5_g), m2b.eq(zv)]
        # the product's cycle; s5b_v carries the other ops' values: pre-op, table data, softmax's e * r
        s5b_v = tag("s5b_v", s5_v[:max(W.prew, 2 * W.tw, W.tw + 1)].as_signed())
        s5b_b = tag("s5b_b", s5_b)
        s6_v = Signal(signed(W.r6), name="s6_val")
        m.d.sync += s6_v.eq(Mux(op_is["layernorm"], m2p + s5b_b, s5b_v))
        s5b = {k: tag("s5b_" + k, v) for k, v in s5b_src.items()}
        s6 = {k: tag("s6_" + k, v) for k, v in s5b.items()}
        # P: leading one, normalising shift, reciprocal / inverse square root
        p_r = Signal(range(W.rw + 1), name="row_p")
        lop = leading_one(m, red, W.rw, name="row_lop")
        sh_r = Signal(signed(_clog2(W.rw) + 3), name="row_sh")
        n_r = Signal(unsigned(W.nw), name="row_n")  # the normalised sum: below 2**(R + 2)
        sh0 = Signal(signed(_clog2(W.rw) + 3), name="row_sh0")
        m.d.comb += sh0.eq(p_r - f["R"])
        sh1 = Signal.like(sh0, name="row_sh1")
        m.d.comb += sh1.eq(Mux(op_is["layernorm"], sh0 & ~1, sh0))
        m.d.comb += p_src.eq(n_r)
        # the normalising shift s = p - R (even for layer norm) as one right shift of red * 2**kn by
        # s + kn >= 0 (kn >= R, even), biased at step 0: step 1 is the shifter alone
        kn = max([i.f["R"] for i in prog.instrs if i.op in ("softmax", "layernorm")] + [0])
        kn += kn % 2
        shb = Signal(range(W.rw + kn + 1), name="row_shb")
        sh0b = Signal(signed(_clog2(W.rw + kn) + 3), name="row_sh0b")
        m.d.comb += sh0b.eq(lop - f["R"] + kn)
        with m.If(in_p):
            m.d.sync += [p_r.eq(lop), shb.eq(Mux(op_is["layernorm"], sh0b & ~1, sh0b))]
        with m.Else():
            with m.Switch(p_cnt):
                with m.Case(1):
                    m.d.sync += [n_r.eq(Cat(Const(0, kn), red) >> shb), sh_r.eq(sh1)]
                with m.Case(3):
                    m.d.sync += [rr.eq(tdat), zsh.eq(f["zc0"] + (sh_r >> 1))]

        m.d.comb += row_wr.eq(is_row & s6["v"] & s6["wr"])

        # -- the common requantize-and-write stage --------------------------------------------------
        # the shifts, biased by lshift, registered (their operands hold for many cycles before a use:
        # the instruction's field from its fetch, softmax's p and layer norm's z shift from the
        # normalising phase): no adder before the shifter
        sh_ins = Signal.like(rq_sh, name="rq_sh_ins")
        byp_ins = Signal(name="rq_byp_ins")  # the instruction's ops written without requantization
        m.d.sync += byp_ins.eq(op_is["copy"] | op_is["lookup"])
        sh_z = Signal.like(rq_sh, name="rq_sh_z")
        m.d.sync += [sh_ins.eq(f["rqsh"] + W.lshift + Mux(op_is["softmax"], p_r, 0)), sh_z.eq(zsh + W.lshift)]
        with m.If(z_on):
            m.d.comb += [rq_v.eq(s4_v), rq_sh.eq(sh_z), rq_byp.eq(0), rq_ok.eq(0)]
        with m.Elif(is_row):
            m.d.comb += [rq_v.eq(s6_v), rq_sh.eq(sh_ins),
                         rq_byp.eq(byp_ins), rq_ok.eq(row_wr),
                         rq_dst.eq(Xd[2])]
        with m.Else():
            m.d.comb += [rq_v.eq(w1_v), rq_sh.eq(sh_ins), rq_byp.eq(0), rq_ok.eq(w1_ok), rq_dst.eq(w1_dst)]

        # -- read-port addresses ------------------------------------------------------------------
        st_rd = Signal(name="st_rd")
        st_addr = Signal(range(max(prog.dm_words, 2)), name="st_addr")
        with m.If(st_rd):
            m.d.comb += rpa.addr.eq(st_addr)
        if self._peek:
            with m.Elif(state == LOAD):
                m.d.comb += rpa.addr.eq(self.peek_addr)
        with m.Elif(is_row):
            m.d.comb += rpa.addr.eq(Mux(op_is["add"] & half, X["b"][2], X["a"][2]) >> lg)
        with m.Elif(ldp):
            m.d.comb += rpa.addr.eq((Am >> lg) + rl)
        with m.Elif(f["brom"][0]):
            m.d.comb += rpa.addr.eq(Ae >> lg)
        with m.Else():
            m.d.comb += rpa.addr.eq(Bk)
        m.d.comb += [rpw.addr.eq(Mux(is_row, t_word, Bk)), rpc.addr.eq(Mux(is_row, f["cbase"] + s4_col, wb_ct + wb_j))]

        if self._peek:
            m.d.comb += self.peek_data.eq(rpa.data)

        # -- store ------------------------------------------------------------------------------------
        out_t = d.out_type
        obuf = [Signal(signed(dw), name=f"ob{j}") for j in range(nwo * L)]
        st_phase = Signal(2, name="st_phase")  # 0 read words, 1 last data, 2 present
        st_cap = Signal(name="st_cap")
        st_capw = Signal(range(max(nwo, 2)), name="st_capw")
        m.d.comb += st_rd.eq((state == STORE) & (st_phase == 0))
        m.d.comb += st_addr.eq(op_.base // L + cnt * nwo + wcnt)
        with m.If(st_cap):
            with m.Switch(st_capw):
                for w in range(nwo):
                    with m.Case(w):
                        m.d.sync += [obuf[w * L + j].eq(a_lanes[j]) for j in range(L)]
        m.d.sync += [st_cap.eq(st_rd), st_capw.eq(wcnt)]
        with m.If(state == STORE):
            with m.If(st_phase == 0):
                m.d.sync += wcnt.eq(wcnt + 1)
                with m.If(wcnt == nwo - 1):
                    m.d.sync += [st_phase.eq(1), wcnt.eq(0)]
            with m.If(st_phase == 1):
                m.d.sync += st_phase.eq(2)
            with m.If(st_phase == 2):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.d.sync += [st_phase.eq(0), cnt.eq(cnt + 1)]
                    with m.If(cnt == out_rows - 1):
                        m.d.sync += [state.eq(LOAD), cnt.eq(0)]
        m.d.comb += self.o.payload.as_value().eq(Cat(*[obuf[j][:out_t.width] for j in range(d.out_cols)]))
        return m


def _ext(m, x, width, name):
    s = Signal(signed(width), name=name)
    m.d.comb += s.eq(x)
    return s
