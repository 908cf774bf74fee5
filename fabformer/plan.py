"""A precomputed plan of a graph for the golden model on NumPy: the same integers, faster.

``fabformer.golden`` (one array-API function per op kind) is the specification.  This
module compiles a graph once into a list of NumPy steps that compute the very same
integer mantissas, held in float64 arrays.  A float64 holds every integer of magnitude
below 2**53 exactly, and sums, products and power-of-two scalings of such integers are
exact as long as every result stays below that bound; so each op here is a BLAS
product or a few fused element-wise calls, with the requantization's shift folded into
the constants (``floor(v * 2**-s + 1/2)`` is round-half-up of ``v >> s``), the table
indices precomputed over the input's whole range, and saturation skipped where the
input's range provably fits.

For every op the plan first proves, from the value ranges the types (and the actual
weights) allow, that no intermediate reaches 2**52; an op that cannot be proved, an op
kind it does not know, or a rounding/overflow mode it does not handle runs the
specification's function instead (on int64), so the plan never changes a result, it
only skips work.  ``tests/test_golden.py`` checks plan == specification on every op
kind, both overflow modes and both rounding modes, on random and edge inputs.

The plan is built once per graph and cached beside it (keyed by the graph object, dropped
with it; the graph itself is untouched, so it pickles and copies as before); it is rebuilt
when the graph's nodes or tensors change (``Graph.replace``, ``Graph.retype``, ...).
"""
from __future__ import annotations

import numpy as np

import math
import operator
import threading
import weakref

from .fixed import NUMPY, FixedType, Overflow, Rounding, dequantize

_clip = NUMPY.clip  # the clip ufunc itself (np.clip adds a Python wrapper's cost per call)
_max = np.maximum.reduce
_sum = np.add.reduce
LIMIT = 1 << 52      # every intermediate integer of a fast step stays below this magnitude
MAX_TABLE = 1 << 20  # largest precomputed (range-extended) lookup table
KERNEL_ENABLED = True  # compile a C kernel (fabformer.kernel) for graphs called often
KERNEL_AFTER = 8       # ... after this many calls of the graph
TUNE_SAMPLES = 256     # the chunk on which the kernel and the plan are timed for larger batches
KERNEL_BATCH = 16      # batches up to this size use the kernel once it is built

__all__ = ["Plan", "plan_for"]


_PLANS: dict = {}  # id(graph) -> plan; not stored on the graph, so graphs pickle and copy as before


def plan_for(g) -> "Plan":
    """The cached plan of ``g`` (rebuilt when the graph's nodes or tensors changed)."""
    p = _PLANS.get(id(g))
    if p is None or p._graph_ref() is not g or not p.matches(g):
        p = Plan(g)
        if id(g) not in _PLANS:
            weakref.finalize(g, _PLANS.pop, id(g), None)
        _PLANS[id(g)] = p
    return p


def _same(a, b) -> bool:
    """The same objects in the same order (identity; C-level loops: cheap per call)."""
    return len(a) == len(b) and all(map(operator.is_, a, b))


# -- value ranges ------------------------------------------------------------------
def _trange(t: FixedType):
    return (t.min_int, t.max_int)


def _mag(r):
    return max(abs(r[0]), abs(r[1]))


def _fits(r, t: FixedType) -> bool:
    return t.min_int <= r[0] and r[1] <= t.max_int


class _Finish:
    """``y = overflow(floor(u))`` where ``u = v * 2**-s (+ 1/2 when rounding up)`` has been
    computed; ``r`` is the range of ``v >> s`` rounded (before overflow)."""

    def __init__(self, s: int, t: FixedType, r):
        self.floor = s > 0
        self.t = t
        self.clip = None
        self.wrap = None
        if not _fits(r, t):
            if t.overflow is Overflow.SAT:
                self.clip = (float(t.min_int), float(t.max_int))
            else:
                self.wrap = (float(1 << t.width), float(1 << (t.width - 1)) if t.signed else 0.0)

    def __call__(self, u):
        if self.floor:
            np.floor(u, out=u)
        if self.clip is not None:
            _clip(u, self.clip[0], self.clip[1], out=u)
        elif self.wrap is not None:
            m, half = self.wrap
            if half:
                u += half
                np.mod(u, m, out=u)
                u -= half
            else:
                np.mod(u, m, out=u)
        return u


def _rnd_half(s: int, t: FixedType) -> float:
    return 0.5 if (s > 0 and t.rounding is Rounding.RND) else 0.0


def _shifted_range(r, s: int, t: FixedType):
    """Range of ``requantize``'s rounded value (before overflow) for ``v`` in ``r``."""
    if s <= 0:
        return (r[0] << -s, r[1] << -s)
    h = (1 << (s - 1)) if t.rounding is Rounding.RND else 0
    return ((r[0] + h) >> s, (r[1] + h) >> s)


def _exact(r, s: int) -> bool:
    """True when ``v`` in ``r``, shifted by ``s`` and rounded, stays below LIMIT throughout."""
    m = _mag(r)
    return m * (1 << max(0, -s)) + (1 << max(0, s)) < LIMIT


def _ok_type(t: FixedType | None) -> bool:
    return (t is not None and t.width <= 52 and t.rounding in (Rounding.TRN, Rounding.RND)
            and t.overflow in (Overflow.SAT, Overflow.WRAP))


class _Table:
    """A table extended over every index its source can take: ``ext[src_shifted - lo]``."""

    def __init__(self, table, r):
        sh = table.shift
        lo, hi = r[0] >> sh, r[1] >> sh
        self.ok = hi - lo + 1 <= MAX_TABLE
        if not self.ok:
            return
        idx = np.clip(np.arange(lo, hi + 1, dtype=np.int64) - table.offset, 0, table.size - 1)
        self.ext = table.values[idx].astype(np.float64)
        self.scale = 2.0 ** -sh
        self.lo = float(lo)
        vals = self.ext
        self.range = (int(vals.min()), int(vals.max()))

    def __call__(self, src):
        """``table[clip((src >> shift) - offset, 0, size - 1)]`` for float integers ``src`` in range."""
        u = src * self.scale if self.scale != 1.0 else src
        if self.lo:
            u = u - self.lo
        # u >= 0 and floor(u) is the index: truncation toward zero is floor here
        return np.take(self.ext, u.astype(np.intp))


# -- fast steps, one builder per op kind ----------------------------------------------
# A builder gets (node, graph, input ranges) and returns (fn, output range) or None when
# the op cannot be proved exact here (then the specification's function runs).
BUILDERS: dict = {}


def builder(kind):
    def deco(fn):
        BUILDERS[kind] = fn
        return fn
    return deco


@builder("quantize")
def _b_quantize(n, g, rs):
    t = g.type_of(n.output)
    if not _ok_type(t):
        return None
    scale = 2.0 ** t.frac
    half = 0.5 if t.rounding is Rounding.RND else 0.0
    lim = 2.0 ** 62
    sat = t.overflow is Overflow.SAT
    lo, hi = float(t.min_int), float(t.max_int)
    m, wh = float(1 << t.width), (float(1 << (t.width - 1)) if t.signed else 0.0)

    def fn(x):
        u = x * scale
        if half:
            u += half
        np.floor(u, out=u)
        _clip(u, lo, hi, out=u) if sat else _clip(u, -lim, lim, out=u)
        if math.isnan(_sum(u, axis=None)):  # finite after the clip unless NaN: the specification decides
            return None
        if sat:
            return u
        np.mod(u, m, out=u)  # exact (fmod) and in [0, m)
        if wh:
            u += wh
            np.mod(u, m, out=u)
            u -= wh
        return u
    return fn, _trange(t)


@builder("dense")
def _b_dense(n, g, rs):
    xt, t = g.type_of(n.inputs[0]), g.type_of(n.output)
    if not _ok_type(t):
        return None
    k, m = n.weight.shape
    f = xt.frac + n.weight_type.frac
    bsh = f - n.bias_type.frac
    if bsh < 0:
        return None
    b = [int(v) << bsh for v in n.bias.tolist()]
    xr = rs[0]
    # range of each output column: positive weights times the input's ends, negative ones
    # times the other ends, plus the bias (Python integers: no overflow)
    pos = np.where(n.weight > 0, n.weight, 0).sum(0).tolist()
    neg = np.where(n.weight < 0, n.weight, 0).sum(0).tolist()
    lo = min(p * xr[0] + q * xr[1] + bj for p, q, bj in zip(pos, neg, b))
    hi = max(p * xr[1] + q * xr[0] + bj for p, q, bj in zip(pos, neg, b))
    partial = _mag(xr) * int(np.abs(n.weight).sum(0).max()) + max(abs(v) for v in b)
    s = f - t.frac
    if not _exact((-partial, partial), s):
        return None
    sc = 2.0 ** -s
    wf = np.ascontiguousarray(n.weight.astype(np.float64) * sc)
    bf = (np.asarray(b, dtype=np.float64) + (_rnd_half(s, t) / sc)) * sc
    fin = _Finish(s, t, _shifted_range((lo, hi), s, t))

    def fn(x):
        shape = x.shape
        y = np.matmul(x.reshape(-1, k), wf)
        y += bf
        return fin(y).reshape(shape[:-1] + (m,))
    return fn, _out_range(fin, _shifted_range((lo, hi), s, t))


def _out_range(fin: _Finish, r):
    t = fin.t
    if fin.clip is not None:
        return (max(r[0], t.min_int), min(r[1], t.max_int))
    if fin.wrap is not None:
        return _trange(t)
    return r


@builder("matmul")
def _b_matmul(n, g, rs):
    at, bt, t = g.type_of(n.inputs[0]), g.type_of(n.inputs[1]), g.type_of(n.output)
    if not _ok_type(t):
        return None
    k = g.tensors[n.inputs[0]].shape[-1]
    ar, br = rs
    prods = [ar[0] * br[0], ar[0] * br[1], ar[1] * br[0], ar[1] * br[1]]
    acc = (k * min(prods), k * max(prods))
    sc = int(n.scale)
    v = (min(acc[0] * sc, acc[1] * sc), max(acc[0] * sc, acc[1] * sc))
    s = at.frac + bt.frac + n.scale_frac - t.frac
    if not _exact(v, s):
        return None
    c = sc * 2.0 ** -s
    half = _rnd_half(s, t)
    r = _shifted_range(v, s, t)
    fin = _Finish(s, t, r)
    tb = bool(n.transpose_b)

    def fn(a, b):
        if tb:
            b = np.swapaxes(b, -1, -2)
        y = np.matmul(a, b)
        if c != 1.0:
            y *= c
        if half:
            y += half
        return fin(y)
    return fn, _out_range(fin, r)


def _layout(n, g, rs):
    """Head split / merge and flatten move mantissas: NumPy views, as the specification does."""
    if n.kind == "split_heads":
        h = n.heads

        def fn(x):
            b, t, hd = x.shape
            return x.reshape(b, t, h, hd // h).transpose(0, 2, 1, 3)
    elif n.kind == "merge_heads":
        def fn(x):
            b, h, t, d = x.shape
            return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)
    else:
        def fn(x):
            return x.reshape(x.shape[0], -1)
    return fn, rs[0]


for _k in ("split_heads", "merge_heads", "flatten"):
    BUILDERS[_k] = _layout


@builder("add")
def _b_add(n, g, rs):
    at, bt, t = g.type_of(n.inputs[0]), g.type_of(n.inputs[1]), g.type_of(n.output)
    if not _ok_type(t):
        return None
    f = max(at.frac, bt.frac)
    sa, sb = f - at.frac, f - bt.frac
    v = ((rs[0][0] << sa) + (rs[1][0] << sb), (rs[0][1] << sa) + (rs[1][1] << sb))
    s = f - t.frac
    if not _exact(v, s):
        return None
    ca, cb = 2.0 ** (sa - s), 2.0 ** (sb - s)
    half = _rnd_half(s, t)
    r = _shifted_range(v, s, t)
    fin = _Finish(s, t, r)

    def fn(a, b):
        y = a * ca if ca != 1.0 else a.copy()
        y += b * cb if cb != 1.0 else b
        if half:
            y += half
        return fin(y)
    return fn, _out_range(fin, r)


def _scale_step(n, g, rs, relu: bool):
    xt, t = g.type_of(n.inputs[0]), g.type_of(n.output)
    if not _ok_type(t):
        return None
    v = (max(rs[0][0], 0), max(rs[0][1], 0)) if relu else rs[0]
    s = xt.frac - t.frac
    if not _exact(v, s):
        return None
    c = 2.0 ** -s
    half = _rnd_half(s, t)
    r = _shifted_range(v, s, t)
    fin = _Finish(s, t, r)

    def fn(x):
        y = np.maximum(x, 0.0) if relu else x.copy()
        if c != 1.0:
            y *= c
        if half:
            y += half
        return fin(y)
    return fn, _out_range(fin, r)


@builder("relu")
def _b_relu(n, g, rs):
    return _scale_step(n, g, rs, relu=True)


@builder("requantize")
def _b_requantize(n, g, rs):
    return _scale_step(n, g, rs, relu=False)


@builder("lookup")
def _b_lookup(n, g, rs):
    tab = _Table(n.table, rs[0])
    if not tab.ok:
        return None
    return tab, tab.range


@builder("global_avg_pool")
def _b_gap(n, g, rs):
    xt, t = g.type_of(n.inputs[0]), g.type_of(n.output)
    if not _ok_type(t):
        return None
    T = g.tensors[n.inputs[0]].shape[0]
    sc = int(n.scale)
    a = (T * rs[0][0] * sc, T * rs[0][1] * sc)
    v = (min(a), max(a))
    partial = T * _mag(rs[0]) * abs(sc)
    s = xt.frac + n.scale_frac - t.frac
    if not _exact((-partial, partial), s):
        return None
    c = sc * 2.0 ** -s
    half = _rnd_half(s, t)
    r = _shifted_range(v, s, t)
    fin = _Finish(s, t, r)

    def fn(x):
        y = _sum(x, axis=1)
        y *= c
        if half:
            y += half
        return fin(y)
    return fn, _out_range(fin, r)


@builder("softmax")
def _b_softmax(n, g, rs):
    t = g.type_of(n.output)
    if not _ok_type(t):
        return None
    L = g.tensors[n.inputs[0]].shape[-1]
    xr = rs[0]
    etab = _Table(n.exp_table, (0, xr[1] - xr[0]))
    if not etab.ok:
        return None
    e0 = int(n.exp_table.values[int(np.clip((0 >> n.exp_table.shift) - n.exp_table.offset, 0,
                                            n.exp_table.size - 1))])
    emax = max(abs(etab.range[0]), abs(etab.range[1]))
    if e0 <= 0 or etab.range[0] < 0 or L * emax >= LIMIT:
        return None  # the row sum must be positive (its leading one defines the shift)
    R = n.recip_bits
    rt = n.recip_table
    # s >> (p - R) lies in [2**R, 2**(R+1)): extend the reciprocal table over that range
    rtab = _Table(rt, (1 << R, (1 << (R + 1)) - 1))
    if not rtab.ok or rtab.range[0] < 0:
        return None
    Fr = rt.out_type.frac
    pmax = (L * emax).bit_length() - 1
    pmin = max(e0.bit_length() - 1, 0)
    prod = emax * rtab.range[1]
    # requantize(e * r, Fr + p, t): shift Fr + p - t.frac for p in [pmin, pmax]
    s_lo, s_hi = Fr + pmin - t.frac, Fr + pmax - t.frac
    if not (_exact((0, prod), s_lo) and _exact((0, prod), s_hi)):
        return None
    half = 0.5 if t.rounding is Rounding.RND else 0.0  # adding 1/2 to an integer then flooring is a no-op
    r = (0, max(_shifted_range((0, prod), s_lo, t)[1], _shifted_range((0, prod), s_hi, t)[1]))
    fin = _Finish(1, t, r)
    c = t.frac - Fr + 1  # ldexp exponent = -(Fr + p - t.frac), p = frexp exponent - 1

    def fn(x):
        d = _max(x, axis=-1, keepdims=True) - x
        e = etab(d)
        s = _sum(e, axis=-1, keepdims=True)
        _, ex = np.frexp(s)                       # s = m * 2**ex, m in [0.5, 1): leading one at ex - 1
        nrm = np.ldexp(s, R + 1 - ex)             # s * 2**(R - p), exact; floor gives s >> (p - R)
        np.floor(nrm, out=nrm)
        rc = rtab(nrm)
        y = e * rc
        y = np.ldexp(y, c - ex)
        if half:
            y += half
        return fin(y)
    return fn, _out_range(fin, r)


@builder("layernorm")
def _b_layernorm(n, g, rs):
    t, zt = g.type_of(n.output), n.norm_type
    if not (_ok_type(t) and _ok_type(zt)) or int(n.eps) < 1:
        return None
    N = g.tensors[n.inputs[0]].shape[-1]
    xm = _mag(rs[0])
    dmax = 2 * N * xm
    qmax = N * dmax * dmax + int(n.eps)
    if qmax >= LIMIT:
        return None
    R = n.invsqrt_bits
    tab = n.invsqrt_table
    # q >> sh with sh = floor_even(p - R) lies in [2**R, 2**(R+2)) for q >= 1
    itab = _Table(tab, (1 << R, (1 << (R + 2)) - 1))
    if not itab.ok or itab.range[0] < 0:
        return None
    Ft = tab.out_type.frac
    tmax = itab.range[1]
    dt = dmax * tmax
    pmax = qmax.bit_length() - 1
    sh_lo = (0 - R) - ((0 - R) % 2)
    sh_hi = (pmax - R) - ((pmax - R) % 2)
    zs_lo, zs_hi = Ft + (R + sh_lo) // 2 - zt.frac, Ft + (R + sh_hi) // 2 - zt.frac
    if not (_exact((-dt, dt), zs_lo) and _exact((-dt, dt), zs_hi)):
        return None
    zhalf = 0.5 if zt.rounding is Rounding.RND else 0.0
    zr = (min(_shifted_range((-dt, dt), zs_lo, zt)[0], _shifted_range((-dt, dt), zs_hi, zt)[0]),
          max(_shifted_range((-dt, dt), zs_lo, zt)[1], _shifted_range((-dt, dt), zs_hi, zt)[1]))
    zfin = _Finish(1, zt, zr)
    zr = _out_range(zfin, zr)
    f = zt.frac + n.gamma_type.frac
    bsh = f - n.beta_type.frac
    if bsh < 0:
        return None
    gam = [int(v) for v in n.gamma.tolist()]
    bet = [int(v) << bsh for v in n.beta.tolist()]
    lo = min(min(gv * zr[0], gv * zr[1]) + bv for gv, bv in zip(gam, bet))
    hi = max(max(gv * zr[0], gv * zr[1]) + bv for gv, bv in zip(gam, bet))
    s = f - t.frac
    if not _exact((lo, hi), s):
        return None
    sc = 2.0 ** -s
    gf = np.asarray(gam, dtype=np.float64) * sc
    bf = (np.asarray(bet, dtype=np.float64) + _rnd_half(s, t) / sc) * sc
    r = _shifted_range((lo, hi), s, t)
    fin = _Finish(s, t, r)
    eps = float(n.eps)
    # per leading-one exponent ex of q (frexp: q = m * 2**ex, leading one p = ex - 1):
    # sh = floor_even(p - R); q >> sh = floor(q * 2**-sh); z = (d * t) >> (Ft + (R + sh) // 2 - norm.frac)
    exs = np.arange(0, pmax + 3)
    shs = (exs - 1 - R) - ((exs - 1 - R) % 2)
    qscale = np.ldexp(1.0, -shs)
    zscale = np.ldexp(1.0, -(Ft + (R + shs) // 2 - zt.frac))

    def fn(x):
        d = x * N
        d -= _sum(x, axis=-1, keepdims=True)
        q = np.einsum("...i,...i->...", d, d)[..., None]
        q += eps
        ex = np.frexp(q)[1]
        qn = q * np.take(qscale, ex)
        np.floor(qn, out=qn)
        z = d * itab(qn)
        z *= np.take(zscale, ex)
        if zhalf:
            z += zhalf
        z = zfin(z)
        z *= gf
        z += bf
        return fin(z)
    return fn, _out_range(fin, r)


# -- the plan ------------------------------------------------------------------------
# op kinds whose output always lies in its declared type's range (they end in requantize)
_REQUANTIZING = {"quantize", "dense", "matmul", "add", "relu", "softmax", "layernorm", "global_avg_pool",
                 "requantize"}
_LAYOUT = {"split_heads", "merge_heads", "flatten"}


class Plan:
    """A graph compiled to NumPy steps; ``run(x)`` equals ``fabformer.golden.run(g, x)``."""

    def matches(self, g) -> bool:
        """True while ``g`` has the nodes, tensors, inputs and outputs this plan was built from."""
        return (_same(self._nodes, g.nodes) and _same(self._tensors, tuple(g.tensors.values()))
                and self._io == (tuple(g.inputs), tuple(g.outputs)))

    def __init__(self, g):
        from .golden import GOLDEN
        from .errors import FabformerError
        self._nodes = tuple(g.nodes)
        self._tensors = tuple(g.tensors.values())
        self._io = (tuple(g.inputs), tuple(g.outputs))
        (inp,) = g.inputs
        self.input = inp
        self.in_shape = tuple(g.tensors[inp].shape)
        names = [inp] + [n.output for n in g.nodes]
        slot = {nm: i for i, nm in enumerate(dict.fromkeys(names))}
        self.slots = list(slot)
        ranges = {}      # tensor -> (lo, hi) of its integer mantissas, where known and below LIMIT
        ints = set()     # tensors held as int64 (made by the specification's functions)
        self.steps = []
        self.fast = {}   # node name -> True where a fast step runs it
        last_use = {}
        for k, n in enumerate(g.nodes):
            for i in n.inputs:
                last_use[i] = k
        for k, n in enumerate(g.nodes):
            if n.kind not in GOLDEN:
                raise FabformerError(f"{n.name}: no int golden implementation for op kind {n.kind!r}")
            spec = GOLDEN[n.kind]
            built = None
            b = BUILDERS.get(n.kind)
            if b is not None and (n.kind == "quantize" or all(i in ranges for i in n.inputs)):
                built = b(n, g, [ranges.get(i) for i in n.inputs])
            if built is not None:
                fn, r = built
                self.fast[n.name] = True
                if n.kind == "quantize":
                    fn = _with_spec_fallback(fn, n, g, spec)
                elif n.kind in _LAYOUT:
                    if n.inputs[0] in ints:
                        ints.add(n.output)
                elif any(i in ints for i in n.inputs):
                    fn = _float_inputs(fn)
            else:
                self.fast[n.name] = False
                fn = _spec_step(n, g, spec)
                ints.add(n.output)
                t = g.type_of(n.output)
                r = None
                if n.kind in _REQUANTIZING and _ok_type(t):
                    r = _trange(t)
                elif n.kind == "lookup" and n.table.out_type.width <= 52:
                    r = (int(n.table.values.min()), int(n.table.values.max()))
                elif n.kind in _LAYOUT:
                    r = ranges.get(n.inputs[0])
            if r is not None:
                ranges[n.output] = r
            dead = tuple(slot[i] for i in dict.fromkeys(n.inputs) if last_use[i] == k)
            self.steps.append((fn, tuple(slot[i] for i in n.inputs), slot[n.output], dead))
        self.outputs = [(slot[o], g.type_of(o).frac) for o in g.outputs]
        self.keep = frozenset(slot[o] for o in g.outputs)
        self._graph_ref = weakref.ref(g)
        self.kernel = None          # the compiled C kernel (fabformer.kernel), once built
        self.kernel_state = "idle"  # idle | building | ready | unavailable
        self.calls = 0
        self.large = None           # "kernel" or "plan" for batches above KERNEL_BATCH, once timed

    # -- the compiled kernel for small batches ----------------------------------------
    def build_kernel(self):
        """Compile (or load from the cache) the C kernel now; returns it, or None where the
        graph is not fully proved or no C compiler exists."""
        from . import kernel
        g = self._graph_ref()
        k = None
        if g is not None and kernel.supported(g, self):
            try:
                k = kernel.build(g)
            except OSError:
                k = None
        self.kernel = k
        self.kernel_state = "ready" if k is not None else "unavailable"
        return k

    def kernel_for(self, x):
        """The kernel to run batch ``x`` with, or None for the plan.  The kernel is built in a
        background thread after ``KERNEL_AFTER`` calls (the plan serves until it is ready; both
        give the same bits); it then takes batches up to ``KERNEL_BATCH``, and larger ones when
        a timing of both on one chunk (done once per plan) says it is faster."""
        if self.kernel_state == "ready":
            n = x.shape[0]
            if n <= KERNEL_BATCH:
                return self.kernel
            if self.large is None and n >= TUNE_SAMPLES:
                self.large = self._tune(x[:TUNE_SAMPLES])
            return self.kernel if self.large == "kernel" else None
        if self.kernel_state == "idle" and KERNEL_ENABLED:
            self.calls += 1
            if self.calls >= KERNEL_AFTER:
                self.kernel_state = "building"
                threading.Thread(target=self.build_kernel, daemon=True, name="fabformer-golden-kernel").start()
        return None

    def _tune(self, x):
        import time
        best = {"plan": float("inf"), "kernel": float("inf")}
        for _ in range(4):  # interleaved, best of four each: robust to a busy machine's bursts
            for name, fn in (("plan", self.run), ("kernel", self.kernel)):
                t0 = time.perf_counter()
                fn(x)
                best[name] = min(best[name], time.perf_counter() - t0)
        return "kernel" if best["kernel"] < best["plan"] else "plan"

    @property
    def all_fast(self) -> bool:
        return all(self.fast.values())

    def run_env(self, x, trace: bool):
        vals = [None] * len(self.slots)
        vals[0] = x
        keep = self.keep
        for fn, ins, out, dead in self.steps:
            vals[out] = fn(*[vals[i] for i in ins])
            if not trace:
                for d in dead:
                    if d not in keep:
                        vals[d] = None
        return vals

    def run(self, x, trace: bool = False):
        """Outputs (dequantized) of float64 inputs ``x`` (batch first); with ``trace`` also
        ``{tensor: int64 mantissas}`` (the graph input as given)."""
        vals = self.run_env(x, trace)
        outs = [dequantize(vals[s], f) for s, f in self.outputs]
        out = outs[0] if len(outs) == 1 else outs
        if not trace:
            return out
        env = {nm: (v if i == 0 or v.dtype == np.int64 else v.astype(np.int64))
               for i, (nm, v) in enumerate(zip(self.slots, vals))}
        return out, env


def _spec_step(n, g, spec):
    if n.kind == "quantize":
        return lambda x: spec(n, g, [x], NUMPY)

    def fn(*xs):
        return spec(n, g, [x if x.dtype == np.int64 else x.astype(np.int64) for x in xs], NUMPY)
    return fn


def _float_inputs(fast):
    def fn(*xs):
        return fast(*[x if x.dtype == np.float64 else x.astype(np.float64) for x in xs])
    return fn


def _with_spec_fallback(fast, n, g, spec):
    def fn(x):
        y = fast(x)
        return spec(n, g, [x], NUMPY).astype(np.float64) if y is None else y
    return fn
