"""Fixed-point types and the integer arithmetic every backend reproduces.

A value of type ``FixedType(width, frac, signed, rounding, overflow)`` is stored
as an integer mantissa ``m`` and means ``m * 2**-frac``.  ``rounding`` says what
happens to bits dropped on the right when a value is requantized to this type:

* ``TRN``: truncate toward minus infinity (floor);
* ``RND``: round to nearest, ties toward plus infinity (``floor(v + 1/2)``).

``overflow`` says what happens to values outside the representable range:

* ``WRAP``: keep the low ``width`` bits (two's complement when signed);
* ``SAT``: clamp to the smallest / largest representable value.

These are exactly the modes ``AP_TRN``, ``AP_RND``, ``AP_WRAP`` and ``AP_SAT`` of
a Vitis ``ap_fixed<width, width - frac>`` (``ap_ufixed`` when unsigned).  Bit
growth of multiply, add and accumulate is defined here, once, and every
backend asks these functions instead of guessing widths.
"""
from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

import numpy as np

from .errors import FabformerError

__all__ = [
    "Rounding", "Overflow", "FixedType", "mul_type", "add_type", "accum_type",
    "shift_round", "apply_overflow", "requantize", "quantize_float", "bits_for",
]


class Rounding(str, enum.Enum):
    TRN = "TRN"
    RND = "RND"


class Overflow(str, enum.Enum):
    WRAP = "WRAP"
    SAT = "SAT"


_TYPE_RE = re.compile(
    r"^\s*(u?)fixed\s*<\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(TRN|RND)\s*)?(?:,\s*(WRAP|SAT)\s*)?>\s*$"
)


@dataclass(frozen=True)
class FixedType:
    """A signed or unsigned fixed-point type; value = mantissa * 2**-frac."""

    width: int
    frac: int
    signed: bool = True
    rounding: Rounding = Rounding.TRN
    overflow: Overflow = Overflow.WRAP

    def __post_init__(self):
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 1:
            raise FabformerError(f"FixedType width must be a positive integer, not {self.width!r}")
        if self.signed and self.width < 2:
            raise FabformerError(f"a signed FixedType needs width >= 2, not {self.width!r}")
        if not isinstance(self.frac, int) or isinstance(self.frac, bool):
            raise FabformerError(f"FixedType frac must be an integer, not {self.frac!r}")
        if self.width > 128:
            raise FabformerError(f"FixedType width {self.width} is above the maximum of 128 bits")
        for name, enum_cls in (("rounding", Rounding), ("overflow", Overflow)):
            try:
                object.__setattr__(self, name, enum_cls(getattr(self, name)))
            except ValueError:
                raise FabformerError(f"FixedType {name} must be one of {', '.join(e.value for e in enum_cls)}, "
                                     f"not {getattr(self, name)!r}") from None

    # -- range ---------------------------------------------------------------
    @property
    def integer(self) -> int:
        """Integer bits including the sign bit (the ``I`` of ``ap_fixed<W, I>``)."""
        return self.width - self.frac

    @property
    def min_int(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    @property
    def min_value(self) -> float:
        return self.min_int * self.lsb

    @property
    def max_value(self) -> float:
        return self.max_int * self.lsb

    def with_(self, **kw) -> "FixedType":
        d = dict(width=self.width, frac=self.frac, signed=self.signed,
                 rounding=self.rounding, overflow=self.overflow)
        d.update(kw)
        return FixedType(**d)

    # -- text ----------------------------------------------------------------
    def __str__(self) -> str:
        return (f"{'' if self.signed else 'u'}fixed<{self.width},{self.integer},"
                f"{self.rounding.value},{self.overflow.value}>")

    @classmethod
    def parse(cls, text: str) -> "FixedType":
        """Parse ``fixed<W,I>`` / ``ufixed<W,I,RND,SAT>`` (``I`` = integer bits incl. sign)."""
        if isinstance(text, FixedType):
            return text
        m = _TYPE_RE.match(str(text))
        if not m:
            raise FabformerError(
                f"cannot parse fixed-point type {text!r}; write fixed<W,I> or ufixed<W,I>, "
                f"optionally followed by ,TRN|RND and ,WRAP|SAT (I = integer bits including sign)")
        u, w, i, r, o = m.groups()
        w, i = int(w), int(i)
        return cls(w, w - i, signed=not u, rounding=r or "TRN", overflow=o or "WRAP")

    def to_dict(self) -> dict:
        return {"width": self.width, "frac": self.frac, "signed": self.signed,
                "rounding": self.rounding.value, "overflow": self.overflow.value}

    @classmethod
    def from_dict(cls, d: dict, where: str = "type") -> "FixedType":
        """A type from its :meth:`to_dict` form, checked strictly (``where`` names it in errors)."""
        keys = ("width", "frac", "signed", "rounding", "overflow")
        if not isinstance(d, dict):
            raise FabformerError(f"{where}: a fixed-point type is an object with keys {', '.join(keys)}, not {d!r}")
        missing = [k for k in keys if k not in d]
        if missing:
            raise FabformerError(f"{where}: fixed-point type lacks {', '.join(missing)}; keys: {', '.join(keys)}")
        for k in ("width", "frac"):
            if not isinstance(d[k], int) or isinstance(d[k], bool):
                raise FabformerError(f"{where}: {k} must be an integer, not {d[k]!r}")
        if not isinstance(d["signed"], bool):
            raise FabformerError(f"{where}: signed must be true or false, not {d['signed']!r}")
        try:
            return cls(d["width"], d["frac"], d["signed"], d["rounding"], d["overflow"])
        except FabformerError as e:
            raise FabformerError(f"{where}: {e}") from None


# -- bit growth ---------------------------------------------------------------
def mul_type(a: FixedType, b: FixedType) -> FixedType:
    """Exact type of a product: widths add, fracs add."""
    signed = a.signed or b.signed
    return FixedType(a.width + b.width, a.frac + b.frac, signed)


def add_type(a: FixedType, b: FixedType) -> FixedType:
    """Exact type of a sum: align fracs, one more integer bit than the wider operand."""
    frac = max(a.frac, b.frac)
    signed = a.signed or b.signed
    ia = a.integer + (1 if signed and not a.signed else 0)
    ib = b.integer + (1 if signed and not b.signed else 0)
    return FixedType(max(ia, ib) + 1 + frac, frac, signed)


def accum_type(t: FixedType, n: int) -> FixedType:
    """Exact type of a sum of ``n`` values of type ``t``: ceil(log2(n)) more bits."""
    if n < 1:
        raise FabformerError(f"cannot accumulate over n={n} terms")
    return FixedType(t.width + max(0, math.ceil(math.log2(n))), t.frac, t.signed)


def bits_for(lo: int, hi: int, signed: bool | None = None) -> int:
    """Smallest width whose integer range holds [lo, hi]."""
    if signed is None:
        signed = lo < 0
    w = 1
    while True:
        t_lo = -(1 << (w - 1)) if signed else 0
        t_hi = (1 << (w - 1)) - 1 if signed else (1 << w) - 1
        if t_lo <= lo and hi <= t_hi and (w >= 2 or not signed):
            return w
        w += 1


# -- integer operations (array API; NumPy and GPU libraries alike) -------------
class _NumPy:
    """NumPy through the array-API names golden uses, without the wrapper's per-call cost."""

    int64, float64 = np.int64, np.float64
    permute_dims = staticmethod(np.transpose)
    clip = staticmethod(np.core.umath.clip)
    concat = staticmethod(np.concatenate)

    @staticmethod
    def astype(a, dtype):
        return a.astype(dtype, copy=False)

    def __getattr__(self, name):
        return getattr(np, name)


NUMPY = _NumPy()


def _xp(x):
    if isinstance(x, (np.ndarray, np.generic, int, float)):
        return NUMPY
    from array_api_compat import array_namespace
    return array_namespace(x)


def shift_round(v, shift, rounding: Rounding):
    """``v * 2**-shift`` rounded per ``rounding``; ``shift`` may be an int or an array
    (broadcast against ``v``), positive (drop bits) or negative (append zero bits)."""
    xp = _xp(v)
    rnd = Rounding(rounding) is Rounding.RND
    if isinstance(shift, (int, np.integer)):
        s = int(shift)
        if s <= 0:
            return v << (-s) if s < 0 else v
        if rnd:
            v = v + (1 << (s - 1))
        return v >> s
    pos = xp.where(shift > 0, shift, 0)
    neg = xp.where(shift < 0, -shift, 0)
    if rnd:
        v = v + xp.where(pos > 0, xp.ones_like(pos) << xp.where(pos > 0, pos - 1, 0), 0)
    v = v >> pos
    return v << neg if bool(xp.any(neg > 0)) else v


def apply_overflow(v, t: FixedType):
    xp = _xp(v)
    if t.overflow is Overflow.SAT:
        return xp.clip(v, t.min_int, t.max_int)
    mask = (1 << t.width) - 1
    if t.signed:
        half = 1 << (t.width - 1)
        return ((v + half) & mask) - half
    return v & mask


def requantize(v, from_frac, t: FixedType):
    """Integer mantissa ``v`` at ``from_frac`` (int or per-element array) -> type ``t``."""
    return apply_overflow(shift_round(v, from_frac - t.frac, t.rounding), t)


def quantize_float(x, t: FixedType):
    """Real values -> mantissas of ``t`` (exact in float64: scaling by 2**frac is exact)."""
    xp = _xp(x)
    s = xp.asarray(x, dtype=xp.float64) * (2.0 ** t.frac)
    if t.rounding is Rounding.RND:
        s = s + 0.5
    s = xp.floor(s)
    lim = 2.0 ** 62
    s = xp.clip(s, -lim, lim)
    return apply_overflow(xp.astype(s, xp.int64), t)


def dequantize(v, frac: int):
    xp = _xp(v)
    return xp.astype(v, xp.float64) * (2.0 ** -frac)
