"""Amaranth expressions for the fixed-point arithmetic of :mod:`fabformer.fixed`.

Every helper builds combinational logic that equals the golden integer function
bit for bit: :func:`requantize` (constant shift), :func:`requantize_var` (a
shift picked at run time from a small set, used by softmax and layer norm),
:func:`lookup` (a table ROM) and :func:`leading_one`.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib.memory import Memory

from ..fixed import FixedType, Overflow, Rounding

__all__ = ["shape_of", "requantize", "requantize_var", "shift_split", "shift_var", "shift_amount", "lookup", "lookup_sync", "leading_one", "unpack", "pack", "clip",
           "stage", "mul_stages", "signed_bits", "dsp_mul", "saturate", "DSP_BITS", "KEEP_FF"]


def shape_of(t: FixedType):
    """The Amaranth shape of a mantissa of type ``t``."""
    return signed(t.width) if t.signed else unsigned(t.width)


def unpack(value, n: int, t: FixedType) -> list:
    """Split a flat row of ``n`` elements of type ``t`` into element values."""
    v = value.as_value() if hasattr(value, "as_value") else value
    w = t.width
    out = []
    for j in range(n):
        e = v[j * w:(j + 1) * w]
        out.append(e.as_signed() if t.signed else e)
    return out


def pack(elems) -> "Cat":
    return Cat(*elems)


def clip(v, lo: int, hi: int):
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def shift_round(v, s: int, rounding: Rounding):
    if s <= 0:
        return v << (-s) if s < 0 else v
    if Rounding(rounding) is Rounding.RND:
        v = v + (1 << (s - 1))
    elif Rounding(rounding) is Rounding.RND_CONV:  # ties to even: half - 1, plus the kept part's lowest bit
        v = v + ((1 << (s - 1)) - 1) + (v >> s)[0]
    return v >> s


def overflow(v, t: FixedType):
    if t.overflow is Overflow.SAT:
        return saturate(v, t.width, t.signed)
    return v  # assigning to a signal of t's width keeps the low bits: two's-complement wrap


def saturate(v, w: int, to_signed: bool):
    """``clip(v, min, max)`` of a ``w``-bit signed or unsigned range, from the bits above the
    range alone (``v`` is in range when they all equal its sign): OR/AND trees of the high bits,
    no comparison carry chain."""
    v = Value.cast(v)
    W, sg = v.shape().width, v.shape().signed
    lo = -(1 << (w - 1)) if to_signed else 0
    hi = (1 << (w - 1)) - 1 if to_signed else (1 << w) - 1
    keep = w - 1 if to_signed else w  # the bits below this carry the value in range
    if not sg:
        return v if W <= keep else Mux(v[keep:].any(), hi, v)
    if to_signed and W <= w:
        return v
    sign = v[W - 1]
    if W - 1 <= keep:  # signed into a wider unsigned range: only negatives clip
        return Mux(sign, lo, v)
    high = v[keep:W - 1]  # between the value bits and the sign bit
    over = ~sign & high.any()
    under = (sign & ~high.all()) if to_signed else sign
    return Mux(under, lo, Mux(over, hi, v))


def requantize(m, v, from_frac: int, t: FixedType, name: str = "rq"):
    """A signal of ``shape_of(t)`` holding ``fixed.requantize(v, from_frac, t)``."""
    out = Signal(shape_of(t), name=name)
    m.d.comb += out.eq(overflow(shift_round(v, from_frac - t.frac, t.rounding), t))
    return out


def shift_amount(m, sel, shifts: dict, name: str = "sh"):
    """A small signed signal holding ``shifts[sel]`` (a run-time pick from a table of ints)."""
    lo, hi = min(shifts.values()), max(shifts.values())
    out = Signal(range(min(lo, 0), max(hi, 0) + 1), name=name)
    with m.Switch(sel):
        for key, v in shifts.items():
            with m.Case(key):
                m.d.comb += out.eq(v)
    return out


def shift_split(m, s, right: str, left: str):
    """A run-time signed shift ``s`` (right when positive) as two unsigned amounts: (``s`` when
    positive else 0, ``-s`` when negative else 0), comb signals named ``right`` and ``left``."""
    smin = s.shape().signed and -(1 << (s.shape().width - 1)) or 0
    smax = (1 << (s.shape().width - (1 if s.shape().signed else 0))) - 1
    pos = Signal(range(0, max(smax, 0) + 1), name=right)
    neg = Signal(range(0, max(-smin, 0) + 1), name=left)
    m.d.comb += [pos.eq(Mux(s > 0, s, 0)), neg.eq(Mux(s < 0, -s, 0))]
    return pos, neg


def shift_var(m, v, s, rounding: Rounding = Rounding.TRN, name: str = "shv"):
    """``v * 2**-s`` for a run-time signed shift ``s`` (a barrel shifter), with the
    rounding of :func:`fabformer.fixed.shift_round` when ``s > 0``."""
    pos, neg = shift_split(m, s, name + "_r", name + "_l")
    if Rounding(rounding) is Rounding.RND:
        v = v + ((Const(1, 1) << pos) >> 1)
    elif Rounding(rounding) is Rounding.RND_CONV:  # ties to even (nothing added when pos == 0)
        odd = Signal(name=name + "_odd")
        m.d.comb += odd.eq((v >> pos)[0])
        v = v + Mux(pos > 0, (((Const(1, 1) << pos) >> 1) - 1) + odd, 0)
    return (v >> pos) << neg


def requantize_var(m, v, s, t: FixedType, name: str = "rqv"):
    """``requantize(v, t.frac + s, t)`` for a run-time shift ``s`` (see :func:`shift_amount`)."""
    out = Signal(shape_of(t), name=name)
    m.d.comb += out.eq(overflow(shift_var(m, v, s, t.rounding, name=name + "_s"), t))
    return out


def lookup(m, table, src, name: str = "lut"):
    """The table ROM read combinationally: ``values[clip((src >> shift) - offset, 0, size-1)]``."""
    idx = Signal(range(table.size), name=name + "_idx")
    m.d.comb += idx.eq(clip((src >> table.shift) - table.offset, 0, table.size - 1))
    out = Signal(shape_of(table.out_type), name=name)
    init = [int(v) for v in table.values]
    mem = Memory(shape=shape_of(table.out_type), depth=table.size, init=init)
    m.submodules[name + "_rom"] = mem
    port = mem.read_port(domain="comb")
    m.d.comb += [port.addr.eq(idx), out.eq(port.data)]
    return out


def lookup_sync(m, table, src, name: str = "lut"):
    """The table ROM with a synchronous read port (block RAM where it fits): the entry for
    ``src`` appears one cycle after ``src`` is presented."""
    idx = Signal(range(table.size), name=name + "_idx")
    m.d.comb += idx.eq(clip((src >> table.shift) - table.offset, 0, table.size - 1))
    mem = Memory(shape=shape_of(table.out_type), depth=table.size, init=[int(v) for v in table.values])
    m.submodules[name + "_rom"] = mem
    port = mem.read_port(domain="sync")
    m.d.comb += port.addr.eq(idx)
    return port.data


def leading_one(m, v, width: int, name: str = "lop"):
    """Position of the highest set bit of the non-negative ``v`` (0 when ``v == 0``): a tree
    over halves (the upper half's position when it has a set bit), logarithmic depth."""
    pw = max(width - 1, 1).bit_length()

    def rec(lo, n):  # (any bit set, position) of v[lo:lo + n]
        if n == 1:
            return v[lo], Const(lo, unsigned(pw))
        h = n // 2
        a_lo, p_lo = rec(lo, h)
        a_hi, p_hi = rec(lo + h, n - h)
        return a_lo | a_hi, Mux(a_hi, p_hi, p_lo)
    p = Signal(range(max(width, 2)), name=name)
    m.d.comb += p.eq(rec(0, width)[1] if width > 1 else 0)
    return p


# A signal attribute the board flows turn into ``keep`` on the flip-flop that drives the signal,
# so synthesis does not merge it with an identical one (a per-DSP copy of a shared operand:
# each copy is placed beside its own DSP).
KEEP_FF = "fabformer_keep_ff"


def stage(m, value, name, shape=None, keep=False, reset_less=False):
    """``value`` in a free-running register (one pipeline stage); full width unless ``shape``;
    ``keep``: never merged with an identical register by synthesis (:data:`KEEP_FF`);
    ``reset_less``: a data register whose value is never used without a valid flag beside it
    (no reset logic in front of it, no fan-out of the reset to it)."""
    value = Value.cast(value)
    r = Signal(shape if shape is not None else value.shape(), name=name, attrs={KEEP_FF: 1} if keep else {},
               reset_less=reset_less)
    m.d.sync += r.eq(value)
    return r


DSP_BITS = 18  # a signed product of operands up to this wide fits one DSP cell (ECP5 MULT18X18D)
_LO = DSP_BITS - 1  # the low piece of a wider operand: this many bits, unsigned


def signed_bits(v) -> int:
    """Bits of ``v`` (a value or a shape) as a signed number: an unsigned value needs one more."""
    s = v if isinstance(v, Shape) else Value.cast(v).shape()
    return s.width + (0 if s.signed else 1)


def mul_stages(wa: int, wb: int) -> int:
    """Register stages of :func:`dsp_mul` for operand widths ``wa`` and ``wb`` (bits of the
    signed value: an unsigned operand counts one bit more): the operands' copies, the
    products, the products' copies, and the pieces' sum when an operand is wider than a DSP."""
    return 3 if max(wa, wb) <= DSP_BITS else 4


def dsp_cells(wa: int, wb: int) -> int:
    """DSP cells of :func:`dsp_mul` for operands of ``wa`` and ``wb`` signed bits: one per pair of
    pieces (an operand wider than a DSP is split into pieces of ``_LO`` bits and the rest)."""
    def pieces(w):
        return 1 if w <= DSP_BITS else 1 + pieces(w - _LO)
    return pieces(wa) * pieces(wb)


def _pieces(v):
    """``v`` as (piece, shift) pairs of at most ``DSP_BITS`` signed bits: the low ``_LO`` bits
    unsigned and the rest (recursively) with the value's sign (constants as constants)."""
    w, sg = v.shape().width, v.shape().signed
    if w + (0 if sg else 1) <= DSP_BITS:
        return [(v, 0)]
    if isinstance(v, Const):
        lo, hi = Const(v.value & ((1 << _LO) - 1), unsigned(_LO)), Const(v.value >> _LO, (signed if sg else unsigned)(w - _LO))
    else:
        lo, hi = v[:_LO], (v[_LO:].as_signed() if sg else v[_LO:])
    return [(lo, 0)] + [(p, sh + _LO) for p, sh in _pieces(hi)]


def dsp_mul(m, a, b, name, shape=None):
    """``a * b`` on DSP cells, each with a register cycle of its own on both sides: per DSP a
    copy of its operands (pieces of at most ``DSP_BITS`` bits; ``keep``, so synthesis does not
    merge the copies: on ECP5 the flow makes them the DSP's input registers), the product in
    a register (the DSP's output register), and the product's copy in the fabric.  A DSP that
    placement puts far from its logic then has one cycle for the route in and one for the
    route out.  When an operand is wider than a DSP, the copies of the partial products are
    summed, shifted, in one more stage (no cascade of DSPs and wide carry chains between two
    registers).  A constant operand is not copied.  :func:`mul_stages` cycles."""
    a, b = Value.cast(a), Value.cast(b)
    parts = []
    for i, (pa, sa) in enumerate(_pieces(a)):
        for j, (pb, sb) in enumerate(_pieces(b)):
            ca = stage(m, pa, f"{name}_a{i}_{j}", keep=True, reset_less=True)
            cb = pb if isinstance(pb, Const) else stage(m, pb, f"{name}_b{i}_{j}", keep=True, reset_less=True)
            p = stage(m, ca * cb, f"{name}_p{i}_{j}", reset_less=True)
            parts.append((p, sa + sb))
    assert mul_stages(signed_bits(a), signed_bits(b)) == (3 if len(parts) == 1 else 4)
    if len(parts) == 1:
        return stage(m, parts[0][0], name, shape, reset_less=True)
    parts = [(stage(m, p, f"{p.name}_c", reset_less=True), sh) for p, sh in parts]
    total = parts[0][0] << parts[0][1]
    for p, sh in parts[1:]:
        total = total + (p << sh)
    return stage(m, total, name, shape, reset_less=True)


def logic_product_halves(m, a, b, name):
    """``a * b`` built in logic (no DSP cell), in the register stages of an engine's DSP product:
    ``b`` recoded in radix-4 Booth digits (-2..2, from overlapping bit triples), each partial
    product ``0``, ``a`` or ``2a`` inverted where the digit is negative (its +1 added as a bit beside
    the others), summed as two halves by balanced adder trees, each half in a register now; the
    caller's next register takes the halves' sum, which equals ``a * b``.  For the multipliers a
    design has beyond the device's DSPs (``generate(..., dsps=N)``); on ECP5 an 8 x 8-bit one
    maps to about 120 logic cells (partial products of every bit of ``b``: about 190)."""
    a, b = Value.cast(a), Value.cast(b)
    wa = signed_bits(a)
    wbs = signed_bits(b)
    digits = (wbs + 1) // 2
    ext = Cat(b, *([b[-1]] if b.shape().signed else [Const(0, 1)]) * (2 * digits - b.shape().width))
    bits = Cat(Const(0, 1), ext)  # bit -1 (0), then b sign-extended to 2 * digits bits
    terms, negs = [], []
    for k in range(digits):
        b0, b1, b2 = bits[2 * k], bits[2 * k + 1], bits[2 * k + 2]
        one = b1 ^ b0
        two = (b2 & ~b1 & ~b0) | (~b2 & b1 & b0)
        mag = Signal(signed(wa + 1), name=f"{name}_mag{k}")
        m.d.comb += mag.eq(Mux(one, a, Mux(two, a << 1, 0)))
        pp = Signal(signed(wa + 1), name=f"{name}_pp{k}")
        m.d.comb += pp.eq(Mux(b2, ~mag, mag))
        terms.append(pp << (2 * k))
        negs += [b2, Const(0, 1)]

    def tree(ts):
        while len(ts) > 1:
            ts = [x + y for x, y in zip(ts[0::2], ts[1::2])] + ([ts[-1]] if len(ts) % 2 else [])
        return ts[0]

    h = (len(terms) + 1) // 2
    halves = [tree(terms[:h]) + Cat(*negs)] + ([tree(terms[h:])] if terms[h:] else [])
    return [stage(m, v, f"{name}_{k}", reset_less=True) for k, v in enumerate(halves)]
