"""A compiled C kernel of a graph for the golden model's small batches.

At a batch of one sample the NumPy plan (``fabformer.plan``) spends its time in the
per-call cost of a hundred small NumPy calls, not in arithmetic.  For graphs the plan
runs entirely in fast steps (so every intermediate integer is proved below 2**52), this
module writes the same integer semantics as one C function over int64 (one loop nest
per op, constants inlined), compiles it once with the system C compiler into a cached
shared library (named by the digest of its source) and calls it through ctypes.

It is an accelerator, never a requirement: without a C compiler, or for a graph the
plan cannot prove, the plan runs.  ``tests/test_plan.py`` checks kernel == specification
on every op kind, both overflow and rounding modes, random and edge inputs.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .fixed import FixedType, Overflow, Rounding

CFLAGS = ["-O3", "-fPIC", "-shared", "-fwrapv", "-std=c99"]  # ISO C: no FMA contraction


def cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"fabformer-golden-{os.getuid() if hasattr(os, 'getuid') else 0}"


def compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _arr(name, values, ctype="int64_t"):
    vals = ", ".join(str(int(v)) + (".0" if ctype == "double" else "")
                     for v in np.asarray(values).reshape(-1))
    return f"static const {ctype} {name}[{max(1, np.asarray(values).size)}] = {{{vals or '0'}}};"


def _nan_int() -> str:
    """C literal of what NumPy's float64 -> int64 conversion gives for NaN on this machine (the
    specification's ``quantize`` relies on it; x86: the most negative int64)."""
    with np.errstate(invalid="ignore"):
        v = int(np.array([np.nan]).astype(np.int64)[0])
    return "(-9223372036854775807LL - 1)" if v == -(1 << 63) else f"{v}LL"


def _rq(v: str, s: int, t: FixedType) -> str:
    """C expression: requantize int64 expression ``v`` (at frac t.frac + s) to ``t``."""
    if s > 0:
        e = f"(({v}) + {1 << (s - 1)}LL) >> {s}" if t.rounding is Rounding.RND else f"({v}) >> {s}"
    elif s < 0:
        e = f"({v}) * {1 << -s}LL"
    else:
        e = f"({v})"
    return _ov(e, t)


def _ov(e: str, t: FixedType) -> str:
    if t.overflow is Overflow.SAT:
        return f"sat({e}, {t.min_int}LL, {t.max_int}LL)"
    mask = (1 << t.width) - 1
    if t.signed:
        half = 1 << (t.width - 1)
        return f"((({e}) + {half}LL) & {mask}LL) - {half}LL"
    return f"(({e}) & {mask}LL)"


def _rq_var(v: str, s: str, t: FixedType) -> str:
    """Requantize with a run-time shift ``s`` (C int expression)."""
    rnd = 1 if t.rounding is Rounding.RND else 0
    return _ov(f"shr({v}, {s}, {rnd})", t)


def _idx(src: str, table) -> str:
    return f"clipi(({src} >> {table.shift}) - {table.offset}LL, {table.size - 1})"


class _Emit:
    def __init__(self, g):
        self.g = g
        self.lines: list[str] = []
        self.consts: list[str] = []
        self.var = {}
        self.k = 0
        self.decl: list[str] = []  # one heap block per call (no static state: calls may run in threads)
        self.used = 0

    def size(self, t):
        return self.g.tensors[t].size

    def shape(self, t):
        return tuple(self.g.tensors[t].shape)

    def buf(self, t):
        if t not in self.var:
            self.k += 1
            v = f"t{self.k}"
            self.var[t] = v
            self.decl.append(f"    int64_t *{v} = mem + {self.used};")
            self.used += self.size(t)
        return self.var[t]

    def const(self, base, values, ctype="int64_t"):
        self.k += 1
        name = f"{base}{self.k}"
        self.consts.append(_arr(name, values, ctype))
        return name


def _node(e: _Emit, n):
    g = e.g
    L = e.lines
    kind = n.kind
    t = g.type_of(n.output)
    if kind in ("flatten",):
        e.var[n.output] = e.var[n.inputs[0]]
        return
    x = e.var[n.inputs[0]]
    y = e.buf(n.output)
    if kind == "quantize":
        sc = 2.0 ** t.frac
        half = " + 0.5" if t.rounding is Rounding.RND else ""
        L.append(f"    for (int i = 0; i < {e.size(n.output)}; i++) {{")
        L.append(f"        double s = floor(xs[i] * {sc!r}{half});")
        L.append(f"        int64_t m = isnan(s) ? {_nan_int()} : (int64_t)(s < -4611686018427387904.0 ? "
                 "-4611686018427387904.0 : (s > 4611686018427387904.0 ? 4611686018427387904.0 : s));")
        L.append(f"        {y}[i] = {_ov('m', t)};")
        L.append("    }")
    elif kind == "dense":
        # double accumulators: every partial sum is an integer the plan proved below 2**52,
        # so float64 sums are exact in any order; the j-inner loop vectorizes
        xt = g.type_of(n.inputs[0])
        k, m = n.weight.shape
        rows = e.size(n.inputs[0]) // k
        f = xt.frac + n.weight_type.frac
        wt = e.const("w", n.weight, "double")
        bs = e.const("b", [int(b) << (f - n.bias_type.frac) for b in n.bias.tolist()], "double")
        L.append(f"    for (int r = 0; r < {rows}; r++) {{")
        L.append(f"        double acc[{m}]; const int64_t *a = {x} + r * {k};")
        L.append(f"        for (int j = 0; j < {m}; j++) acc[j] = {bs}[j];")
        L.append(f"        for (int q = 0; q < {k}; q++) {{ const double av = (double)a[q]; const double *w = {wt} + q * {m};")
        L.append(f"            if (av != 0.0) for (int j = 0; j < {m}; j++) acc[j] += av * w[j]; }}")
        L.append(f"        for (int j = 0; j < {m}; j++) {{ const int64_t v = (int64_t)acc[j]; "
                 f"{y}[r * {m} + j] = {_rq('v', f - t.frac, t)}; }}")
        L.append("    }")
    elif kind == "matmul":
        b = e.var[n.inputs[1]]
        at, bt = g.type_of(n.inputs[0]), g.type_of(n.inputs[1])
        H, M, K = e.shape(n.inputs[0])
        N = e.shape(n.output)[2]
        src = f"(h * {N} + j) * {K} + q" if n.transpose_b else f"(h * {K} + q) * {N} + j"
        s = at.frac + bt.frac + n.scale_frac - t.frac
        L.append("    {")
        L.append(f"    double bd[{H * K * N}];  /* b as [h][q][j] doubles (transposed where asked) */")
        L.append(f"    for (int h = 0; h < {H}; h++) for (int q = 0; q < {K}; q++) for (int j = 0; j < {N}; j++) "
                 f"bd[(h * {K} + q) * {N} + j] = (double){b}[{src}];")
        L.append(f"    for (int h = 0; h < {H}; h++) for (int i = 0; i < {M}; i++) {{")
        L.append(f"        double acc[{N}]; for (int j = 0; j < {N}; j++) acc[j] = 0.0;")
        L.append(f"        for (int q = 0; q < {K}; q++) {{ const double av = (double){x}[(h * {M} + i) * {K} + q]; "
                 f"const double *w = bd + (h * {K} + q) * {N};")
        L.append(f"            for (int j = 0; j < {N}; j++) acc[j] += av * w[j]; }}")
        L.append(f"        for (int j = 0; j < {N}; j++) {{ const int64_t v = (int64_t)acc[j]; "
                 f"{y}[(h * {M} + i) * {N} + j] = {_rq(f'v * {int(n.scale)}LL', s, t)}; }}")
        L.append("    }")
        L.append("    }")
    elif kind == "split_heads":
        T, HD = e.shape(n.inputs[0])
        H = n.heads
        D = HD // H
        L.append(f"    for (int h = 0; h < {H}; h++) for (int i = 0; i < {T}; i++) for (int d = 0; d < {D}; d++) "
                 f"{y}[(h * {T} + i) * {D} + d] = {x}[i * {HD} + h * {D} + d];")
    elif kind == "merge_heads":
        H, T, D = e.shape(n.inputs[0])
        L.append(f"    for (int h = 0; h < {H}; h++) for (int i = 0; i < {T}; i++) for (int d = 0; d < {D}; d++) "
                 f"{y}[i * {H * D} + h * {D} + d] = {x}[(h * {T} + i) * {D} + d];")
    elif kind == "add":
        b = e.var[n.inputs[1]]
        at, bt = g.type_of(n.inputs[0]), g.type_of(n.inputs[1])
        f = max(at.frac, bt.frac)
        v = f"({x}[i] * {1 << (f - at.frac)}LL) + ({b}[i] * {1 << (f - bt.frac)}LL)"
        L.append(f"    for (int i = 0; i < {e.size(n.output)}; i++) {y}[i] = {_rq(v, f - t.frac, t)};")
    elif kind in ("relu", "requantize"):
        xt = g.type_of(n.inputs[0])
        v = f"({x}[i] > 0 ? {x}[i] : 0)" if kind == "relu" else f"{x}[i]"
        L.append(f"    for (int i = 0; i < {e.size(n.output)}; i++) {y}[i] = {_rq(v, xt.frac - t.frac, t)};")
    elif kind == "lookup":
        tab = e.const("tab", n.table.values)
        L.append(f"    for (int i = 0; i < {e.size(n.output)}; i++) {y}[i] = {tab}[{_idx(f'{x}[i]', n.table)}];")
    elif kind == "global_avg_pool":
        T, D = e.shape(n.inputs[0])
        xt = g.type_of(n.inputs[0])
        L.append(f"    for (int d = 0; d < {D}; d++) {{")
        L.append(f"        int64_t s = 0; for (int i = 0; i < {T}; i++) s += {x}[i * {D} + d];")
        L.append(f"        {y}[d] = {_rq(f's * {int(n.scale)}LL', xt.frac + n.scale_frac - t.frac, t)};")
        L.append("    }")
    elif kind == "softmax":
        Ln = e.shape(n.inputs[0])[-1]
        rows = e.size(n.inputs[0]) // Ln
        et, rt = e.const("exp", n.exp_table.values), e.const("rcp", n.recip_table.values)
        R, Fr = n.recip_bits, n.recip_table.out_type.frac
        L.append(f"    for (int r = 0; r < {rows}; r++) {{")
        L.append(f"        const int64_t *a = {x} + r * {Ln}; int64_t *o = {y} + r * {Ln}; int64_t e[{Ln}];")
        L.append(f"        int64_t mx = a[0]; for (int i = 1; i < {Ln}; i++) if (a[i] > mx) mx = a[i];")
        L.append(f"        int64_t s = 0; for (int i = 0; i < {Ln}; i++) "
                 f"{{ e[i] = {et}[{_idx('(mx - a[i])', n.exp_table)}]; s += e[i]; }}")
        L.append("        int p = lead(s);")
        L.append(f"        int64_t nm = p > {R} ? s >> (p - {R}) : s << ({R} - p);")
        L.append(f"        int64_t rc = {rt}[{_idx('nm', n.recip_table)}];")
        L.append(f"        for (int i = 0; i < {Ln}; i++) o[i] = {_rq_var('e[i] * rc', f'{Fr} + p - {t.frac}', t)};")
        L.append("    }")
    elif kind == "layernorm":
        N = e.shape(n.inputs[0])[-1]
        rows = e.size(n.inputs[0]) // N
        zt = n.norm_type
        tab = e.const("isq", n.invsqrt_table.values)
        R, Ft = n.invsqrt_bits, n.invsqrt_table.out_type.frac
        f = zt.frac + n.gamma_type.frac
        gm = e.const("gam", n.gamma)
        bt = e.const("bet", [int(b) << (f - n.beta_type.frac) for b in n.beta.tolist()])
        L.append(f"    for (int r = 0; r < {rows}; r++) {{")
        L.append(f"        const int64_t *a = {x} + r * {N}; int64_t *o = {y} + r * {N}; int64_t d[{N}];")
        L.append(f"        int64_t S = 0; for (int i = 0; i < {N}; i++) S += a[i];")
        L.append(f"        int64_t q = {int(n.eps)}LL; for (int i = 0; i < {N}; i++) "
                 f"{{ d[i] = {N}LL * a[i] - S; q += d[i] * d[i]; }}")
        L.append(f"        int sh = (lead(q) - {R}) & ~1;")
        L.append("        int64_t qn = sh >= 0 ? q >> sh : q << -sh;")
        L.append(f"        int64_t tt = {tab}[{_idx('qn', n.invsqrt_table)}];")
        L.append(f"        int zs = {Ft} + (({R} + sh) >> 1) - {zt.frac};")
        L.append(f"        for (int i = 0; i < {N}; i++) {{")
        L.append(f"            int64_t z = {_rq_var('d[i] * tt', 'zs', zt)};")
        L.append(f"            o[i] = {_rq(f'z * {gm}[i] + {bt}[i]', f - t.frac, t)};")
        L.append("        }")
        L.append("    }")
    else:
        raise KeyError(kind)


PRELUDE = """#include <math.h>
#include <stdint.h>
#include <stdlib.h>
static inline int64_t sat(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline int64_t clipi(int64_t v, int64_t hi) { return v < 0 ? 0 : (v > hi ? hi : v); }
static inline int lead(int64_t v) { return v > 0 ? 63 - __builtin_clzll((uint64_t)v) : 0; }
static inline int64_t shr(int64_t v, int s, int rnd) {
    if (s > 0) return (rnd ? v + (1LL << (s - 1)) : v) >> s;
    return s < 0 ? v * (1LL << -s) : v;
}
"""


def source(g) -> str:
    """The C source of ``g``'s kernel: ``int fab_golden(int n, const double *x, int64_t *y)``."""
    e = _Emit(g)
    (inp,) = g.inputs
    e.var[inp] = "xs"
    for n in g.nodes:
        _node(e, n)
    outs = list(g.outputs)
    in_size = g.tensors[inp].size
    total = sum(e.size(o) for o in outs)
    body = [f"    const double *xs = x + (int64_t)s * {in_size};", f"    int64_t *ys = y + (int64_t)s * {total};"]
    off = 0
    tail = []
    for o in outs:
        tail.append(f"    for (int i = 0; i < {e.size(o)}; i++) ys[{off} + i] = {e.var[o]}[i];")
        off += e.size(o)
    return (PRELUDE + "\n".join(e.consts) + "\n\nint fab_golden(int n, const double *x, int64_t *y) {\n"
            + f"    int64_t *mem = (int64_t *)malloc({max(1, e.used)} * sizeof(int64_t));\n"
            + "    if (!mem) return 1;\n" + "\n".join(e.decl) + "\n    for (int s = 0; s < n; s++) {\n"
            + "\n".join("    " + ln for ln in body + e.lines + tail) + "\n    }\n    free(mem);\n    return 0;\n}\n")


class Kernel:
    """A loaded kernel: ``run(x)`` gives the output mantissas (float64 arrays, as the plan does)."""

    def __init__(self, g, lib: Path):
        self._lib = ctypes.CDLL(str(lib))
        self._fn = self._lib.fab_golden
        self._fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self._fn.restype = ctypes.c_int
        self.outs = [(tuple(g.tensors[o].shape), g.tensors[o].size) for o in g.outputs]
        self.total = sum(s for _, s in self.outs)
        self.path = lib

    def __call__(self, x):
        n = x.shape[0]
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        y = np.empty((n, self.total), dtype=np.int64)
        if self._fn(n, x.__array_interface__["data"][0], y.__array_interface__["data"][0]):
            raise MemoryError("the golden kernel could not allocate its tensors")
        if len(self.outs) == 1:
            return [y.reshape((n,) + self.outs[0][0])]
        res, o = [], 0
        for shape, size in self.outs:
            res.append(y[:, o:o + size].reshape((n,) + shape))
            o += size
        return res


def build(g) -> Kernel | None:
    """Compile (or load from the cache) the kernel of ``g``; None without a C compiler."""
    cc = compiler()
    if cc is None:
        return None
    src = source(g)
    digest = hashlib.sha256((src + " ".join(CFLAGS) + cc).encode()).hexdigest()[:16]
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    lib = d / f"golden_{digest}.so"
    if not lib.is_file():
        c = d / f"golden_{digest}.c"
        c.write_text(src)
        tmp = Path(str(lib) + f".{os.getpid()}.tmp")
        r = subprocess.run([cc, *CFLAGS, str(c), "-o", str(tmp), "-lm"], capture_output=True, text=True)
        if r.returncode != 0:
            tmp.unlink(missing_ok=True)
            return None
        os.replace(tmp, lib)
    return Kernel(g, lib)


def supported(g, plan) -> bool:
    """The kernel mirrors the specification where the plan proved every op (int64 never overflows)."""
    return plan.all_fast and all(n.kind in _KINDS for n in g.nodes) and len(g.inputs) == 1


_KINDS = {"quantize", "dense", "matmul", "split_heads", "merge_heads", "add", "relu", "requantize", "lookup",
          "global_avg_pool", "softmax", "layernorm", "flatten"}
