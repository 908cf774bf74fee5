"""Builders of the lookup tables that live in the IR.

Each table is computed once here, in float64, and stored as integer mantissas;
golden, C++ and RTL all read the same integers.  Where a table index drops
low bits (``shift > 0``), the entry holds the function at the centre of its
bin, which halves the worst-case error.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import FabformerError
from .fixed import FixedType, Rounding, Overflow, quantize_float
from .ir import Table

FLOAT_FUNCTIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "exp": np.exp,
}
#: element-wise functions a model's activation may name; each becomes a ``Lookup`` over a
#: :func:`function_table` (a new table activation: its float function above and its name here)
ACTIVATIONS = ("gelu", "sigmoid", "tanh")


def _erf(x):
    from scipy.special import erf  # scipy comes with scikit-learn
    return erf(x)


def _unsigned(width: int, frac: int) -> FixedType:
    return FixedType(width, frac, signed=False, rounding=Rounding.RND, overflow=Overflow.SAT)


def exp_table(x_frac: int, out_bits: int = 16, max_index_bits: int = 10) -> Table:
    """``exp(-d)`` for ``d >= 0`` given as a mantissa at ``x_frac``; unsigned output
    with ``out_bits - 1`` fraction bits (1.0 representable).  The table extends
    until exp(-d) rounds to 0, so every larger ``d`` (clipped) is exact too."""
    e_frac = out_bits - 1
    d_max = (e_frac + 1) * math.log(2.0)  # exp(-d_max) < 2**-(e_frac+1): rounds to 0
    steps = math.ceil(d_max * 2.0 ** x_frac) + 1
    shift = max(0, math.ceil(math.log2(steps / (1 << max_index_bits))))
    size = -(-steps // (1 << shift)) + 1
    centre = ((1 << shift) - 1) / 2.0
    d = (np.arange(size) * (1 << shift) + centre) * 2.0 ** -x_frac
    out_t = _unsigned(out_bits, e_frac)
    vals = quantize_float(np.exp(-d), out_t)
    return Table("exp", shift, 0, out_t, vals)


def recip_table(bits: int = 8, out_bits: int = 16) -> Table:
    """``2**bits / n`` for ``n`` in ``[2**bits, 2**(bits+1))`` (bin centres), in (0.5, 1]."""
    out_t = _unsigned(out_bits, out_bits - 1)
    n = (1 << bits) + np.arange(1 << bits) + 0.5
    return Table("reciprocal", 0, 1 << bits, out_t, quantize_float((1 << bits) / n, out_t))


def invsqrt_table(bits: int = 8, out_bits: int = 16) -> Table:
    """``1/sqrt(n / 2**bits)`` for ``n`` in ``[2**bits, 2**(bits+2))`` (bin centres), in (0.5, 1]."""
    if bits % 2:
        raise FabformerError(f"invsqrt table index bits must be even, not {bits}")
    out_t = _unsigned(out_bits, out_bits - 1)
    n = (1 << bits) + np.arange(3 << bits) + 0.5
    return Table("invsqrt", 0, 1 << bits, out_t, quantize_float(1.0 / np.sqrt(n / (1 << bits)), out_t))


def function_table(function: str, in_type: FixedType, out_type: FixedType, max_index_bits: int = 10) -> Table:
    """An element-wise function over the *whole* range of ``in_type``."""
    if function not in FLOAT_FUNCTIONS:
        raise FabformerError(f"no table function {function!r}; valid: {', '.join(sorted(FLOAT_FUNCTIONS))}")
    shift = max(0, in_type.width - max_index_bits)
    offset = in_type.min_int >> shift
    size = (in_type.max_int >> shift) - offset + 1
    centre = ((1 << shift) - 1) / 2.0
    x = ((offset + np.arange(size)) * (1 << shift) + centre) * 2.0 ** -in_type.frac
    return Table(function, shift, offset, out_type, quantize_float(FLOAT_FUNCTIONS[function](x), out_type))
