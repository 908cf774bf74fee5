"""The fixed-point graph IR: the contract every backend implements.

A :class:`Graph` is an ordered list of small, immutable op dataclasses joined by
named tensors.  Each tensor has a shape (without the batch axis) and a
:class:`~fabformer.fixed.FixedType`.  Constants are integer mantissa arrays;
non-linear functions are :class:`Table` objects with integer contents.  Each
op's docstring states its exact integer semantics; the golden model
(``fabformer.golden``), the C++ kernels (``fabformer.hls``) and the Amaranth
blocks (``fabformer.rtl``) implement exactly that.

Shorthand in the docstrings: ``x.f`` is the frac of ``x``'s type, ``rq(v, f, T)``
is :func:`fabformer.fixed.requantize` (shift from frac ``f`` to ``T.frac`` with
``T``'s rounding, then ``T``'s overflow), ``>>`` is an arithmetic (floor) shift.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from . import registry
from .errors import FabformerError, GraphError
from .fixed import FixedType, accum_type, add_type, mul_type

__all__ = [
    "Tensor", "Table", "Op", "Quantize", "Dense", "MatMul", "SplitHeads", "MergeHeads",
    "Add", "Relu", "Lookup", "Softmax", "LayerNorm", "Flatten", "GlobalAvgPool",
    "Requantize", "Graph", "OPS", "load", "is_graph_file", "ilog2_bound",
]

FORMAT_VERSION = 1
MAX_TENSOR_BITS = 32  # widest tensor element
MAX_ACC_BITS = 62  # widest intermediate (exact in int64)


def _int_array(a, where: str = "constant") -> np.ndarray:
    try:
        a = np.asarray(a)
    except ValueError as e:  # ragged nested lists
        raise FabformerError(f"{where}: not a rectangular array of integers ({e})") from None
    if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
        raise FabformerError(f"{where}: constants must be integer mantissas, got {a.dtype} values")
    if a.dtype.kind == "f":
        if a.size and not (np.all(np.isfinite(a)) and np.all(np.floor(a) == a)):
            bad = a.reshape(-1)[~(np.isfinite(a.reshape(-1)) & (np.floor(a.reshape(-1)) == a.reshape(-1)))][0]
            raise FabformerError(f"{where}: constants must be integer mantissas, not {bad!r}")
        if a.size and np.max(np.abs(a)) >= 2.0 ** 63:
            raise FabformerError(f"{where}: constant mantissas must fit in 64 bits")
    return np.ascontiguousarray(a.astype(np.int64))


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple
    type: FixedType | None  # None only for the float graph input

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True, eq=False)
class Table:
    """A lookup table: ``out = values[clip((src >> shift) - offset, 0, size - 1)]``.

    ``src`` is an integer the owning op defines (its docstring says which);
    ``[offset << shift, (offset + size) << shift)`` is the input range the table
    resolves; values of ``out_type`` are integer mantissas.
    """

    function: str
    shift: int
    offset: int
    out_type: FixedType
    values: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "values", _int_array(self.values))
        self.values.setflags(write=False)

    @property
    def size(self) -> int:
        return int(self.values.shape[0])

    def index(self, src):
        from .fixed import _xp
        xp = _xp(src)
        return xp.clip((src >> self.shift) - self.offset, 0, self.size - 1)

    def to_dict(self):
        return {"function": self.function, "shift": self.shift, "offset": self.offset,
                "out_type": self.out_type.to_dict(), "values": self.values.tolist()}

    @classmethod
    def from_dict(cls, d, where: str = "table"):
        keys = ("function", "shift", "offset", "out_type", "values")
        if not isinstance(d, dict) or any(k not in d for k in keys):
            raise FabformerError(f"{where}: a table is an object with keys {', '.join(keys)}")
        for k in ("shift", "offset"):
            if not isinstance(d[k], int) or isinstance(d[k], bool):
                raise FabformerError(f"{where}: {k} must be an integer, not {d[k]!r}")
        return cls(str(d["function"]), d["shift"], d["offset"], FixedType.from_dict(d["out_type"], f"{where} out_type"),
                   _int_array(d["values"], f"{where} values"))

    def problems(self, where: str) -> list[str]:
        p = []
        if self.values.ndim != 1 or self.size < 1:
            p.append(f"{where}: table {self.function} must be a non-empty 1-D array")
        elif self.values.min() < self.out_type.min_int or self.values.max() > self.out_type.max_int:
            p.append(f"{where}: table {self.function} values outside {self.out_type}")
        if self.shift < 0:
            p.append(f"{where}: table {self.function} shift {self.shift} must be >= 0")
        return p


def ilog2_bound(hi: int) -> int:
    """Largest possible leading-one position of a positive integer <= hi."""
    return max(int(hi).bit_length() - 1, 0)


# ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Op:
    """Base op: a name, named input tensors and one named output tensor."""

    kind: ClassVar[str] = "op"
    n_inputs: ClassVar[int] = 1
    mac_array: ClassVar[bool] = False  # matmul-like: hardware gives it a multiplier array (parallelism)
    name: str
    inputs: tuple
    output: str

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))

    def out_shape(self, shapes: list[tuple]) -> tuple:
        return shapes[0]

    def problems(self, g: "Graph") -> list[str]:
        return []

    def macs(self, g: "Graph") -> int:
        """Multiply-accumulates per sample (0 for ops without a multiplier array)."""
        return 0

    def constants(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), np.ndarray)}

    # serialisation ---------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = {"shape": list(v.shape), "data": v.reshape(-1).tolist()}
            elif isinstance(v, FixedType):
                v = {"fixed": v.to_dict()}
            elif isinstance(v, Table):
                v = {"table": v.to_dict()}
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    @staticmethod
    def from_dict(d: dict, where: str = "node") -> "Op":
        """An op from its :meth:`to_dict` form, every field checked (``where`` names it in errors)."""
        if not isinstance(d, dict):
            raise FabformerError(f"{where}: a node is an object with a kind and its fields, not {d!r}")
        cls = OPS.get(d.get("kind"))
        if cls is None:
            raise FabformerError(f"{where}: unknown op kind {d.get('kind')!r}; valid kinds: {', '.join(sorted(OPS))}")
        if isinstance(d.get("name"), str):
            where = f"{where} {d['name']!r} ({cls.kind})"
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in d]
        if missing:
            raise FabformerError(f"{where}: missing field(s) {', '.join(missing)}; a {cls.kind} node has "
                                 f"{', '.join(names)}")
        unknown = sorted(set(d) - set(names) - {"kind"})
        if unknown:
            raise FabformerError(f"{where}: unknown field(s) {', '.join(unknown)}; a {cls.kind} node has "
                                 f"{', '.join(names)}")
        kw = {}
        for f in fields(cls):
            v = d[f.name]
            at = f"{where} field {f.name!r}"
            if isinstance(v, dict) and "data" in v:
                shape = v.get("shape")
                if not isinstance(shape, list) or not all(isinstance(k, int) and k >= 0 for k in shape):
                    raise FabformerError(f"{at}: shape must be a list of sizes, not {shape!r}")
                arr = _int_array(v["data"], at).reshape(-1)
                if arr.size != int(np.prod(shape)):
                    raise FabformerError(f"{at}: {arr.size} values for shape {shape} "
                                         f"({int(np.prod(shape))} expected)")
                v = arr.reshape(shape)
            elif isinstance(v, dict) and "fixed" in v:
                v = FixedType.from_dict(v["fixed"], at)
            elif isinstance(v, dict) and "table" in v:
                v = Table.from_dict(v["table"], at)
            elif f.name in ("name", "output") and not isinstance(v, str):
                raise FabformerError(f"{at}: must be a string, not {v!r}")
            elif f.name == "inputs" and not (isinstance(v, list) and all(isinstance(i, str) for i in v)):
                raise FabformerError(f"{at}: must be a list of tensor names, not {v!r}")
            elif isinstance(v, dict):
                raise FabformerError(f"{at}: unexpected object {v!r}")
            kw[f.name] = v
        try:
            return cls(**kw)
        except FabformerError as e:
            raise FabformerError(f"{where}: {e}") from None


@registry.op_kind
@dataclass(frozen=True, eq=False)
class Quantize(Op):
    """Float graph input -> fixed point: ``out = overflow(round(x * 2**out.f))``
    with ``out``'s rounding (floor, or floor(v + 1/2)) and overflow."""

    kind: ClassVar[str] = "quantize"


@registry.op_kind
@dataclass(frozen=True, eq=False)
class Dense(Op):
    """Dense layer over the last axis (any leading axes, e.g. a token sequence).

    ``acc[..., n] = sum_k x[..., k] * weight[k, n] + (bias[n] << (x.f + weight_type.frac - bias_type.frac))``
    computed exactly in :meth:`acc_type`; ``out = rq(acc, x.f + weight_type.frac, out)``.
    """

    kind: ClassVar[str] = "dense"
    mac_array: ClassVar[bool] = True
    weight: np.ndarray = None
    weight_type: FixedType = None
    bias: np.ndarray = None
    bias_type: FixedType = None

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "weight", _int_array(self.weight))
        object.__setattr__(self, "bias", _int_array(self.bias))

    def out_shape(self, shapes):
        return tuple(shapes[0][:-1]) + (int(self.weight.shape[1]),)

    def acc_frac(self, g) -> int:
        return g.type_of(self.inputs[0]).frac + self.weight_type.frac

    def acc_type(self, g) -> FixedType:
        xt = g.type_of(self.inputs[0])
        k = int(self.weight.shape[0])
        prod = accum_type(mul_type(xt, self.weight_type), k)
        return add_type(prod, self.bias_type)

    def macs(self, g):
        rows = int(np.prod(g.tensors[self.inputs[0]].shape[:-1]))
        return rows * int(self.weight.size)

    def problems(self, g):
        p = []
        if self.weight.ndim != 2:
            p.append(f"{self.name}: weight must be 2-D [in, out], got shape {self.weight.shape}")
            return p
        xs = g.tensors[self.inputs[0]].shape
        if xs[-1] != self.weight.shape[0]:
            p.append(f"{self.name}: input has {xs[-1]} features, weight expects {self.weight.shape[0]}")
        if self.bias.shape != (self.weight.shape[1],):
            p.append(f"{self.name}: bias shape {self.bias.shape} != ({self.weight.shape[1]},)")
        for arr, t, what in ((self.weight, self.weight_type, "weight"), (self.bias, self.bias_type, "bias")):
            if arr.size and (arr.min() < t.min_int or arr.max() > t.max_int):
                p.append(f"{self.name}: {what} mantissas outside {t}")
        xt = g.type_of(self.inputs[0])
        if xt is not None and self.acc_type(g).width > MAX_ACC_BITS:
            p.append(f"{self.name}: accumulator {self.acc_type(g)} is wider than {MAX_ACC_BITS} bits")
        if xt is not None and self.bias_type.frac > xt.frac + self.weight_type.frac:
            p.append(f"{self.name}: bias frac {self.bias_type.frac} exceeds the product frac "
                     f"{xt.frac + self.weight_type.frac}")
        return p


@registry.op_kind
@dataclass(frozen=True, eq=False)
class MatMul(Op):
    """Batched matrix product for attention, one matrix per head (axis 0).

    ``a: [H, M, K]``, ``b: [H, K, N]`` (or ``[H, N, K]`` when ``transpose_b``).
    ``acc[h, m, n] = sum_k a[h, m, k] * b[h, k, n]`` (exact);
    ``out = rq(acc * scale, a.f + b.f + scale_frac, out)`` — ``scale`` is an integer
    mantissa (``1/sqrt(key_dim)`` for Q·Kᵀ, 1 for A·V).
    """

    kind: ClassVar[str] = "matmul"
    n_inputs: ClassVar[int] = 2
    mac_array: ClassVar[bool] = True
    transpose_b: bool = False
    scale: int = 1
    scale_frac: int = 0

    def out_shape(self, shapes):
        a, b = shapes
        n = b[1] if self.transpose_b else b[2]
        return (a[0], a[1], n)

    def k(self, g) -> int:
        return int(g.tensors[self.inputs[0]].shape[2])

    def acc_type(self, g) -> FixedType:
        at, bt = g.type_of(self.inputs[0]), g.type_of(self.inputs[1])
        return accum_type(mul_type(at, bt), self.k(g))

    def scaled_type(self, g) -> FixedType:
        s = FixedType(max(2, int(abs(self.scale)).bit_length() + 1), self.scale_frac)
        return mul_type(self.acc_type(g), s)

    def macs(self, g):
        h, m, k = g.tensors[self.inputs[0]].shape
        n = g.tensors[self.output].shape[2]
        return h * m * k * n

    def problems(self, g):
        a, b = (g.tensors[i].shape for i in self.inputs)
        if len(a) != 3 or len(b) != 3:
            return [f"{self.name}: operands must be 3-D [heads, rows, cols], got {a} and {b}"]
        kb = b[2] if self.transpose_b else b[1]
        p = []
        if a[0] != b[0] or a[2] != kb:
            p.append(f"{self.name}: shapes {a} and {b} (transpose_b={self.transpose_b}) do not multiply")
        if self.scale <= 0:
            p.append(f"{self.name}: scale mantissa must be positive, got {self.scale}")
        elif self.scaled_type(g).width > MAX_ACC_BITS:
            p.append(f"{self.name}: scaled accumulator {self.scaled_type(g)} is wider than {MAX_ACC_BITS} bits")
        return p


@registry.op_kind
@dataclass(frozen=True, eq=False)
class SplitHeads(Op):
    """``[T, H*D] -> [H, T, D]``: ``out[h, t, d] = x[t, h*D + d]`` (no arithmetic)."""

    kind: ClassVar[str] = "split_heads"
    heads: int = 1

    def out_shape(self, shapes):
        t, hd = shapes[0]
        return (self.heads, t, hd // self.heads)

    def problems(self, g):
        s = g.tensors[self.inputs[0]].shape
        if len(s) != 2 or s[1] % self.heads:
            return [f"{self.name}: input shape {s} cannot split into {self.heads} heads"]
        return []


@registry.op_kind
@dataclass(frozen=True, eq=False)
class MergeHeads(Op):
    """``[H, T, D] -> [T, H*D]``: ``out[t, h*D + d] = x[h, t, d]`` (no arithmetic)."""

    kind: ClassVar[str] = "merge_heads"

    def out_shape(self, shapes):
        h, t, d = shapes[0]
        return (t, h * d)


@registry.op_kind
@dataclass(frozen=True, eq=False)
class Add(Op):
    """Element-wise sum: ``F = max(a.f, b.f)``, ``out = rq((a << (F - a.f)) + (b << (F - b.f)), F, out)``."""

    kind: ClassVar[str] = "add"
    n_inputs: ClassVar[int] = 2

    def problems(self, g):
        a, b = (g.tensors[i].shape for i in self.inputs)
        return [] if a == b else [f"{self.name}: operand shapes differ: {a} vs {b}"]


@registry.op_kind
@dataclass(frozen=True, eq=False)
class Relu(Op):
    """``out = rq(max(x, 0), x.f, out)``."""

    kind: ClassVar[str] = "relu"


@registry.op_kind
@dataclass(frozen=True, eq=False)
class Lookup(Op):
    """Element-wise function by table (GELU, sigmoid, …): ``out = table[x]`` with
    ``src = x`` (the mantissa), i.e. ``values[clip((x >> shift) - offset, 0, size-1)]``.
    ``out``'s type equals ``table.out_type``."""

    kind: ClassVar[str] = "lookup"
    table: Table = None

    def problems(self, g):
        p = self.table.problems(self.name)
        if g.type_of(self.output) != self.table.out_type:
            p.append(f"{self.name}: output type {g.type_of(self.output)} != table type {self.table.out_type}")
        return p


@registry.op_kind
@dataclass(frozen=True, eq=False)
class Softmax(Op):
    """Softmax over the last axis (length ``L``), accurate for any input range.

    1. ``d = max(x) - x >= 0`` (mantissas at ``x.f``); ``e = exp_table[src=d]``,
       an unsigned ``exp_table.out_type`` (``E = exp_table.out_type.frac``) holding ``exp(-d)``.
    2. ``s = sum(e)`` (exact; ``s >= 2**E`` because the maximum contributes ``exp(0) = 1``).
    3. ``p = leading-one position of s``; ``n = s >> (p - R)`` if ``p >= R`` else ``s << (R - p)``
       with ``R = recip_bits``, so ``n`` is in ``[2**R, 2**(R+1))``;
       ``r = recip_table[src=n]`` (``recip_table.offset = 2**R``) holds ``2**R / n`` at
       ``recip_table.out_type.frac = Fr``.
    4. ``out = rq(e * r, Fr + p, out)`` (a per-row shift), since ``1/s ≈ r * 2**-(Fr + p - E)``.
    """

    kind: ClassVar[str] = "softmax"
    exp_table: Table = None
    recip_table: Table = None
    recip_bits: int = 8

    def problems(self, g):
        p = self.exp_table.problems(self.name) + self.recip_table.problems(self.name)
        if self.exp_table.out_type.signed or self.recip_table.out_type.signed:
            p.append(f"{self.name}: exp and reciprocal tables must be unsigned")
        if self.recip_table.offset != 1 << self.recip_bits or self.recip_table.size != 1 << self.recip_bits:
            p.append(f"{self.name}: reciprocal table must cover [2**{self.recip_bits}, 2**{self.recip_bits + 1})")
        return p

    def sum_type(self, g) -> FixedType:
        n = int(g.tensors[self.inputs[0]].shape[-1])
        return accum_type(self.exp_table.out_type, n)


@registry.op_kind
@dataclass(frozen=True, eq=False)
class LayerNorm(Op):
    """Layer normalisation over the last axis (``N`` features), accurate for any variance.

    With ``S = sum(x)`` and ``d_i = N*x_i - S`` (exact, frac ``x.f``; ``d = N(x - mean)``):

    1. ``Q = sum(d_i**2) + eps`` (exact, frac ``2 x.f``; ``Q = N**3 (var + epsilon)``, ``eps >= 1``).
    2. ``p`` = leading-one position of ``Q``; ``sh = p - R`` rounded down to an even number
       (``R = invsqrt_bits``, even); ``n = Q >> sh`` (``Q << -sh`` if ``sh < 0``), in ``[2**R, 2**(R+2))``;
       ``t = invsqrt_table[src=n]`` (``offset = 2**R``) holds ``1/sqrt(n / 2**R)`` at frac ``Ft``.
    3. ``z_i = rq(d_i * t, Ft + (R + sh)/2, norm_type)``: ``z = (x - mean) / (sqrt(var + epsilon) sqrt(N))``.
    4. ``out = rq(z * gamma + (beta << (norm.f + gamma.f - beta.f)), norm.f + gamma.f, out)``;
       ``gamma`` holds ``γ·sqrt(N)`` so that ``out = γ (x - mean)/sqrt(var + ε) + β``.
    """

    kind: ClassVar[str] = "layernorm"
    gamma: np.ndarray = None
    gamma_type: FixedType = None
    beta: np.ndarray = None
    beta_type: FixedType = None
    eps: int = 1
    invsqrt_table: Table = None
    invsqrt_bits: int = 8
    norm_type: FixedType = None

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "gamma", _int_array(self.gamma))
        object.__setattr__(self, "beta", _int_array(self.beta))

    def n(self, g) -> int:
        return int(g.tensors[self.inputs[0]].shape[-1])

    def d_type(self, g) -> FixedType:
        xt = g.type_of(self.inputs[0])
        n = self.n(g)
        return FixedType(xt.width + max(1, math.ceil(math.log2(n))) + 1, xt.frac)

    def q_type(self, g) -> FixedType:
        d = self.d_type(g)
        return FixedType(2 * d.width + math.ceil(math.log2(self.n(g))) + 1, 2 * d.frac, signed=False)

    def macs(self, g):
        rows = int(np.prod(g.tensors[self.inputs[0]].shape[:-1]))
        return rows * self.n(g) * 3  # d*d, d*t, z*gamma

    def problems(self, g):
        p = self.invsqrt_table.problems(self.name)
        n = self.n(g)
        if self.gamma.shape != (n,) or self.beta.shape != (n,):
            p.append(f"{self.name}: gamma/beta must have shape ({n},)")
        if self.invsqrt_bits % 2:
            p.append(f"{self.name}: invsqrt_bits must be even, got {self.invsqrt_bits}")
        if self.eps < 1:
            p.append(f"{self.name}: eps mantissa must be >= 1 (avoids 1/sqrt(0)), got {self.eps}")
        if self.invsqrt_table.offset != 1 << self.invsqrt_bits or self.invsqrt_table.size != 3 << self.invsqrt_bits:
            p.append(f"{self.name}: invsqrt table must cover [2**R, 2**(R+2))")
        if self.q_type(g).width > MAX_ACC_BITS:
            p.append(f"{self.name}: input type {g.type_of(self.inputs[0])} too wide for layer norm "
                     f"(sum of squares needs {self.q_type(g).width} bits, maximum 62)")
        return p


@registry.op_kind
@dataclass(frozen=True, eq=False)
class Flatten(Op):
    """``[T, D] -> [T*D]`` in row-major order (no arithmetic)."""

    kind: ClassVar[str] = "flatten"

    def out_shape(self, shapes):
        return (int(np.prod(shapes[0])),)


@registry.op_kind
@dataclass(frozen=True, eq=False)
class GlobalAvgPool(Op):
    """Mean over axis 0 of ``[T, D]``: ``out = rq(sum_t x[t] * scale, x.f + scale_frac, out)``
    where ``scale * 2**-scale_frac ≈ 1/T``."""

    kind: ClassVar[str] = "global_avg_pool"
    scale: int = 1
    scale_frac: int = 0

    def out_shape(self, shapes):
        return tuple(shapes[0][1:])


@registry.op_kind
@dataclass(frozen=True, eq=False)
class Requantize(Op):
    """``out = rq(x, x.f, out)``."""

    kind: ClassVar[str] = "requantize"


OPS: dict[str, type[Op]] = registry.op_kinds()  # every op kind above, by its ``kind``


# ------------------------------------------------------------------------------
@dataclass
class Graph:
    """An ordered list of ops joined by named, typed tensors.

    A graph is built (``add_input``, ``add``, ``outputs``) and then verified;
    :meth:`verify` freezes it: from then on it is immutable (its containers are
    read-only and setting an attribute raises).  A changed graph is a new one:
    :meth:`with_` / :meth:`with_meta` return a verified copy, :meth:`edit` a
    mutable draft copy to build on.
    """

    name: str
    tensors: dict = field(default_factory=dict)
    nodes: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "_frozen", False)
        self.tensors, self.nodes = dict(self.tensors), list(self.nodes)
        self.inputs, self.outputs, self.meta = list(self.inputs), list(self.outputs), dict(self.meta)

    def __setattr__(self, key, value):
        if getattr(self, "_frozen", False):
            raise FabformerError(f"graph {self.name!r} is immutable once verified (cannot set {key!r}); "
                                 f"make a changed copy with graph.with_(...), graph.with_meta(...) or graph.edit()")
        object.__setattr__(self, key, value)

    def _building(self, what: str) -> None:
        if self._frozen:
            raise FabformerError(f"graph {self.name!r} is immutable once verified (cannot {what}); "
                                 f"build on a draft copy: graph.edit()")

    @property
    def frozen(self) -> bool:
        return self._frozen

    def _freeze(self) -> None:
        from types import MappingProxyType
        for k, v in (("tensors", MappingProxyType(dict(self.tensors))), ("nodes", tuple(self.nodes)),
                     ("inputs", tuple(self.inputs)), ("outputs", tuple(self.outputs)),
                     ("meta", MappingProxyType(dict(self.meta)))):
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_frozen", True)

    def edit(self) -> "Graph":
        """A mutable draft copy (same ops, tensors and meta) to change and verify."""
        return Graph(self.name, dict(self.tensors), list(self.nodes), list(self.inputs), list(self.outputs),
                     dict(self.meta))

    def with_(self, **changes) -> "Graph":
        """A verified copy with some fields changed (``name``, ``tensors``, ``nodes``, ``inputs``,
        ``outputs``, ``meta``)."""
        valid = ("name", "tensors", "nodes", "inputs", "outputs", "meta")
        bad = sorted(set(changes) - set(valid))
        if bad:
            raise FabformerError(f"graph fields {bad} do not exist; valid: {', '.join(valid)}")
        d = self.edit()
        for k, v in changes.items():
            object.__setattr__(d, k, v)
        d.__post_init__()
        return d.verify()

    def with_meta(self, **meta) -> "Graph":
        """A verified copy whose ``meta`` has these keys added or changed."""
        return self.with_(meta={**self.meta, **meta})

    # building ----------------------------------------------------------------
    def add_input(self, name: str, shape) -> str:
        self._building("add an input")
        self.tensors[name] = Tensor(name, tuple(int(s) for s in shape), None)
        self.inputs.append(name)
        return name

    def add(self, op: Op, out_type: FixedType | None) -> str:
        self._building(f"add node {op.name!r}")
        shapes = [self.tensors[i].shape for i in op.inputs]
        self.tensors[op.output] = Tensor(op.output, tuple(int(s) for s in op.out_shape(shapes)), out_type)
        self.nodes.append(op)
        return op.output

    def type_of(self, name: str) -> FixedType | None:
        return self.tensors[name].type

    def node(self, name: str) -> Op:
        for n in self.nodes:
            if n.name == name:
                return n
        raise FabformerError(f"no node named {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    def producer(self, tensor: str) -> Op | None:
        for n in self.nodes:
            if n.output == tensor:
                return n
        return None

    def replace(self, old: Op, new: Op) -> None:
        self._building(f"replace node {old.name!r}")
        self.nodes[self.nodes.index(old)] = new

    def retype(self, tensor: str, t: FixedType) -> None:
        self._building(f"retype tensor {tensor!r}")
        self.tensors[tensor] = Tensor(tensor, self.tensors[tensor].shape, t)

    # checking ----------------------------------------------------------------
    def problems(self) -> list[str]:
        p = []
        known = set(self.inputs)
        names = set()
        for i in self.inputs:
            if i not in self.tensors:
                p.append(f"graph input {i!r} has no tensor")
        for n in self.nodes:
            if n.name in names:
                p.append(f"duplicate node name {n.name!r}")
            names.add(n.name)
            if n.kind not in OPS:
                p.append(f"{n.name}: unknown op kind {n.kind!r}")
            if len(n.inputs) != n.n_inputs:
                p.append(f"{n.name}: {n.kind} takes {n.n_inputs} input(s), got {len(n.inputs)}")
            missing = [i for i in n.inputs if i not in known]
            if missing:
                p.append(f"{n.name}: input(s) {missing} not produced before this node")
                known.add(n.output)  # report the cause once, not again at every consumer
                continue
            if n.output in known:
                p.append(f"{n.name}: tensor {n.output!r} is produced twice")
            known.add(n.output)
            t = self.tensors.get(n.output)
            if t is None:
                p.append(f"{n.name}: output tensor {n.output!r} not declared")
                continue
            if t.type is None:
                p.append(f"{n.name}: output tensor {n.output!r} has no fixed-point type")
            elif t.type.width > MAX_TENSOR_BITS:
                p.append(f"{n.name}: output type {t.type} is wider than {MAX_TENSOR_BITS} bits")
            for i in n.inputs:
                if isinstance(n, Quantize):
                    if i not in self.inputs:
                        p.append(f"{n.name}: quantize must read a graph input, not {i!r}")
                elif self.tensors[i].type is None:
                    p.append(f"{n.name}: input {i!r} is float; insert a quantize node")
            try:
                local = n.problems(self)
            except Exception as e:  # a malformed op must still be reported, not crash
                local = [f"{n.name}: malformed {n.kind} op ({type(e).__name__}: {e})"]
            p.extend(local)
            if not local:
                try:
                    exp = tuple(int(s) for s in n.out_shape([self.tensors[i].shape for i in n.inputs]))
                    if exp != t.shape:
                        p.append(f"{n.name}: output shape {t.shape} != expected {exp}")
                except Exception as e:
                    p.append(f"{n.name}: cannot infer output shape ({e})")
        for o in self.outputs:
            if o not in known:
                p.append(f"graph output {o!r} is never produced")
            elif o in self.tensors and self.tensors[o].type is None:
                p.append(f"graph output {o!r} is a float graph input; an output must be a fixed-point tensor")
        if not self.outputs:
            p.append("graph has no outputs")
        return p

    def verify(self) -> "Graph":
        """Raise :class:`GraphError` with every problem; else freeze the graph and return it."""
        p = self.problems()
        if p:
            raise GraphError(p)
        if not self._frozen:
            self._freeze()
        return self

    # analysis ----------------------------------------------------------------
    def macs(self) -> int:
        return sum(n.macs(self) for n in self.nodes)

    def weight_stats(self) -> dict:
        params = nonzero = bits = 0
        for n in self.nodes:
            if isinstance(n, Dense):
                for a, t in ((n.weight, n.weight_type), (n.bias, n.bias_type)):
                    params += a.size
                    nonzero += int(np.count_nonzero(a))
                    bits += a.size * t.width
            elif isinstance(n, LayerNorm):
                for a, t in ((n.gamma, n.gamma_type), (n.beta, n.beta_type)):
                    params += a.size
                    nonzero += int(np.count_nonzero(a))
                    bits += a.size * t.width
        return {"params": params, "nonzero": nonzero, "bits": bits}

    def summary(self) -> str:
        rows = [f"graph {self.name}: {len(self.nodes)} nodes, {self.macs()} MACs/sample"]
        for n in self.nodes:
            t = self.tensors[n.output]
            rows.append(f"  {n.name:<28} {n.kind:<16} {str(t.shape):<14} {t.type}")
        return "\n".join(rows)

    # execution ---------------------------------------------------------------
    def predict(self, x, trace: bool = False, mode: str = "int"):
        """Run the golden model (``mode="int"``) or the same graph in float
        (``mode="float"``).  Returns dequantized outputs; with ``trace=True``
        returns ``(outputs, {tensor: array})`` (integers in int mode)."""
        return registry.interpreter()(self, x, trace=trace, mode=mode)

    # persistence -------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": "fabformer-graph", "version": FORMAT_VERSION, "name": self.name,
            "inputs": list(self.inputs), "outputs": list(self.outputs), "meta": dict(self.meta),
            "tensors": [{"name": t.name, "shape": list(t.shape),
                         "type": t.type.to_dict() if t.type else None} for t in self.tensors.values()],
            "nodes": [n.to_dict() for n in self.nodes],
        }

    def save(self, path) -> Path:
        """Write the graph as JSON; an existing file is replaced only if it is a fabformer graph file."""
        path = Path(path)
        self.verify()
        if path.exists():
            if path.is_dir():
                raise FabformerError(f"cannot save the graph to {str(path)!r}: it is a folder")
            if not is_graph_file(path):
                raise FabformerError(f"refusing to overwrite {str(path)!r}: it exists and is not a fabformer graph "
                                     f"file; choose a new path")
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> "Graph":
        if not isinstance(d, dict):
            raise FabformerError(f"not a fabformer graph file (a JSON object with format: fabformer-graph expected, "
                                 f"got {type(d).__name__})")
        if d.get("format") != "fabformer-graph":
            raise FabformerError("not a fabformer graph file (missing format: fabformer-graph)")
        if d.get("version") != FORMAT_VERSION:
            raise FabformerError(f"graph file version {d.get('version')!r} is not supported; "
                                 f"this fabformer reads version {FORMAT_VERSION}")
        for k, kind in (("name", str), ("inputs", list), ("outputs", list), ("tensors", list), ("nodes", list)):
            if not isinstance(d.get(k), kind):
                raise FabformerError(f"graph file: field {k!r} must be a {'string' if kind is str else 'list'}, "
                                     f"not {d.get(k)!r}")
        for k in ("inputs", "outputs"):
            if not all(isinstance(v, str) for v in d[k]):
                raise FabformerError(f"graph file: {k} must be tensor names, not {d[k]!r}")
        if not isinstance(d.get("meta", {}), dict):
            raise FabformerError(f"graph file: meta must be an object, not {d.get('meta')!r}")
        g = cls(d["name"], inputs=list(d["inputs"]), outputs=list(d["outputs"]), meta=d.get("meta", {}))
        for k, t in enumerate(d["tensors"]):
            where = f"tensor {k}"
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or "shape" not in t or "type" not in t:
                raise FabformerError(f"graph file: {where} must be an object with name, shape and type, not {t!r}")
            where = f"tensor {t['name']!r}"
            if not isinstance(t["shape"], list) or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                           for s in t["shape"]):
                raise FabformerError(f"graph file: {where}: shape must be a list of positive sizes, not {t['shape']!r}")
            g.tensors[t["name"]] = Tensor(t["name"], tuple(t["shape"]),
                                          FixedType.from_dict(t["type"], where) if t["type"] is not None else None)
        g.nodes = [Op.from_dict(n, f"graph file: node {k}") for k, n in enumerate(d["nodes"])]
        return g.verify()


def is_graph_file(path) -> bool:
    """Whether ``path`` is a file fabformer wrote with :meth:`Graph.save`."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
        return b'"format": "fabformer-graph"' in head and head.lstrip()[:1] == b"{"
    except OSError:
        return False


def load(path) -> Graph:
    """Load a graph saved with :meth:`Graph.save`."""
    path = Path(path)
    if not path.is_file():
        raise FabformerError(f"graph file {str(path)!r} does not exist")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FabformerError(f"graph file {str(path)!r} is not valid JSON: {e}") from None
    try:
        return Graph.from_dict(d)
    except GraphError:
        raise
    except FabformerError as e:
        raise FabformerError(f"graph file {str(path)!r}: {e}") from None
