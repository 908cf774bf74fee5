"""The bit-exact golden model: the specification every backend must equal.

One integer function per op kind (``GOLDEN``) and one float function
(``FLOAT``), vectorised over the batch axis, written against the array API so
the same code runs on NumPy and on a GPU array library (CuPy, PyTorch through
``array-api-compat``).  Integer matrix products go through float64 BLAS when
every partial sum is provably below 2**53 (exact), else through int64.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import FabformerError
from .fixed import FixedType, dequantize, quantize_float, requantize, _xp
from . import ir, registry
from .vectors import as_batch

registry.declare("golden", "the bit-exact golden model (fabformer.golden)")
registry.declare("float", "the same graph in float (fabformer.golden, predict mode='float')")
GOLDEN = registry.view("golden")  # {kind: function}, read-only
FLOAT = registry.view("float")


def golden(kind):
    """Register the integer semantics of op kind ``kind`` (IR class or kind name)."""
    return registry.implements(kind, "golden")


def floating(kind):
    """Register the float semantics of op kind ``kind`` (IR class or kind name)."""
    return registry.implements(kind, "float")


# -- helpers ---------------------------------------------------------------------
def int_matmul(a, b, bound: int):
    """Exact integer ``a @ b``; ``bound`` bounds every partial sum's magnitude."""
    xp = _xp(a)
    if bound < 2 ** 53:
        r = xp.matmul(xp.astype(a, xp.float64), xp.astype(b, xp.float64))
        return xp.astype(r, xp.int64)
    return xp.matmul(a, b)


def _bound(ta: FixedType, tb: FixedType, k: int) -> int:
    return k * max(abs(ta.min_int), ta.max_int) * max(abs(tb.min_int), tb.max_int)


def ilog2(v):
    """Leading-one position of positive integers (exact for all int64)."""
    xp = _xp(v)
    p = xp.astype(xp.floor(xp.log2(xp.astype(v, xp.float64))), xp.int64)
    p = xp.where((v >> p) == 0, p - 1, p)
    p = xp.where((v >> (p + 1)) > 0, p + 1, p)
    return p


def lookup(table: ir.Table, src, xp):
    vals = xp.asarray(table.values)
    idx = table.index(src)
    return xp.reshape(xp.take(vals, xp.reshape(idx, (-1,))), idx.shape)


def _shift_var(v, sh, xp):
    """``v >> sh`` for sh >= 0, ``v << -sh`` for sh < 0 (per element)."""
    return (v >> xp.where(sh > 0, sh, 0)) << xp.where(sh < 0, -sh, 0)


# -- integer semantics (see the op docstrings in fabformer.ir) -------------------------
@golden("quantize")
def _g_quantize(n, g, xs, xp):
    return quantize_float(xs[0], g.type_of(n.output))


@golden("dense")
def _g_dense(n, g, xs, xp):
    x = xs[0]
    xt, out_t = g.type_of(n.inputs[0]), g.type_of(n.output)
    k, m = n.weight.shape
    w = xp.asarray(n.weight)
    acc = int_matmul(xp.reshape(x, (-1, k)), w, _bound(xt, n.weight_type, k))
    acc = xp.reshape(acc, tuple(x.shape[:-1]) + (m,))
    f = xt.frac + n.weight_type.frac
    acc = acc + (xp.asarray(n.bias) << (f - n.bias_type.frac))
    return requantize(acc, f, out_t)


@golden("matmul")
def _g_matmul(n, g, xs, xp):
    a, b = xs
    at, bt = g.type_of(n.inputs[0]), g.type_of(n.inputs[1])
    if n.transpose_b:
        b = xp.permute_dims(b, (0, 1, 3, 2))
    acc = int_matmul(a, b, _bound(at, bt, a.shape[-1]))
    return requantize(acc * n.scale, at.frac + bt.frac + n.scale_frac, g.type_of(n.output))


@golden("split_heads")
def _g_split(n, g, xs, xp):
    x = xs[0]
    b, t, hd = x.shape
    return xp.permute_dims(xp.reshape(x, (b, t, n.heads, hd // n.heads)), (0, 2, 1, 3))


@golden("merge_heads")
def _g_merge(n, g, xs, xp):
    x = xs[0]
    b, h, t, d = x.shape
    return xp.reshape(xp.permute_dims(x, (0, 2, 1, 3)), (b, t, h * d))


@golden("add")
def _g_add(n, g, xs, xp):
    at, bt = g.type_of(n.inputs[0]), g.type_of(n.inputs[1])
    f = max(at.frac, bt.frac)
    s = (xs[0] << (f - at.frac)) + (xs[1] << (f - bt.frac))
    return requantize(s, f, g.type_of(n.output))


@golden("relu")
def _g_relu(n, g, xs, xp):
    x = xs[0]
    return requantize(xp.where(x > 0, x, 0), g.type_of(n.inputs[0]).frac, g.type_of(n.output))


@golden("lookup")
def _g_lookup(n, g, xs, xp):
    return lookup(n.table, xs[0], xp)


@golden("softmax")
def _g_softmax(n, g, xs, xp):
    x = xs[0]
    d = xp.max(x, axis=-1, keepdims=True) - x
    e = lookup(n.exp_table, d, xp)
    s = xp.sum(e, axis=-1, keepdims=True)
    p = ilog2(s)
    r = lookup(n.recip_table, _shift_var(s, p - n.recip_bits, xp), xp)
    return requantize(e * r, n.recip_table.out_type.frac + p, g.type_of(n.output))


@golden("layernorm")
def _g_layernorm(n, g, xs, xp):
    x = xs[0]
    N = x.shape[-1]
    d = N * x - xp.sum(x, axis=-1, keepdims=True)
    q = xp.sum(d * d, axis=-1, keepdims=True) + n.eps
    R = n.invsqrt_bits
    sh = ilog2(q) - R
    sh = sh - (sh % 2)
    t = lookup(n.invsqrt_table, _shift_var(q, sh, xp), xp)
    z = requantize(d * t, n.invsqrt_table.out_type.frac + (R + sh) // 2, n.norm_type)
    f = n.norm_type.frac + n.gamma_type.frac
    y = z * xp.asarray(n.gamma) + (xp.asarray(n.beta) << (f - n.beta_type.frac))
    return requantize(y, f, g.type_of(n.output))


@golden("flatten")
def _g_flatten(n, g, xs, xp):
    return xp.reshape(xs[0], (xs[0].shape[0], -1))


@golden("global_avg_pool")
def _g_gap(n, g, xs, xp):
    s = xp.sum(xs[0], axis=1) * n.scale
    return requantize(s, g.type_of(n.inputs[0]).frac + n.scale_frac, g.type_of(n.output))


@golden("requantize")
def _g_requantize(n, g, xs, xp):
    return requantize(xs[0], g.type_of(n.inputs[0]).frac, g.type_of(n.output))


# -- float semantics: same graph, dequantized constants, exact functions ---------------
def _deq(a, t: FixedType):
    return np.asarray(a, dtype=np.float64) * 2.0 ** -t.frac


@floating("quantize")
def _f_quantize(n, g, xs, xp):
    return xp.astype(xs[0], xp.float64)


@floating("dense")
def _f_dense(n, g, xs, xp):
    return xp.matmul(xs[0], xp.asarray(_deq(n.weight, n.weight_type))) + xp.asarray(_deq(n.bias, n.bias_type))


@floating("matmul")
def _f_matmul(n, g, xs, xp):
    a, b = xs
    if n.transpose_b:
        b = xp.permute_dims(b, (0, 1, 3, 2))
    return xp.matmul(a, b) * (n.scale * 2.0 ** -n.scale_frac)


@floating("add")
def _f_add(n, g, xs, xp):
    return xs[0] + xs[1]


@floating("relu")
def _f_relu(n, g, xs, xp):
    return xp.where(xs[0] > 0, xs[0], 0.0)


@floating("lookup")
def _f_lookup(n, g, xs, xp):
    from .tables import FLOAT_FUNCTIONS
    x = xs[0]
    if isinstance(x, np.ndarray):
        return FLOAT_FUNCTIONS[n.table.function](x)
    # a GPU array: the float functions (erf, ...) are NumPy/SciPy ones, so evaluate on the host
    from array_api_compat import device, to_device
    y = FLOAT_FUNCTIONS[n.table.function](np.asarray(to_device(x, "cpu")))
    return xp.asarray(y, device=device(x))


@floating("softmax")
def _f_softmax(n, g, xs, xp):
    x = xs[0]
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


@floating("layernorm")
def _f_layernorm(n, g, xs, xp):
    x = xs[0]
    N = x.shape[-1]
    xf = g.type_of(n.inputs[0]).frac
    eps = n.eps * 2.0 ** (-2 * xf) / N ** 3
    mu = xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    gamma = xp.asarray(_deq(n.gamma, n.gamma_type) / math.sqrt(N))
    return (x - mu) / xp.sqrt(var + eps) * gamma + xp.asarray(_deq(n.beta, n.beta_type))


@floating("global_avg_pool")
def _f_gap(n, g, xs, xp):
    return xp.mean(xs[0], axis=1)


@floating("requantize")
def _f_requantize(n, g, xs, xp):
    return xs[0]


for _k in ("split_heads", "merge_heads", "flatten"):  # no arithmetic: float = integer
    floating(_k)(GOLDEN[_k])


# -- interpreter -------------------------------------------------------------------
CHUNK = 1024  # samples per pass: keeps the working set in cache


def _run_nodes(g, x, table, xp, keep=None):
    env = {g.inputs[0]: x}
    last_use = {}
    for k, n in enumerate(g.nodes):
        for i in n.inputs:
            last_use[i] = k
    for k, n in enumerate(g.nodes):
        env[n.output] = table[n.kind](n, g, [env[i] for i in n.inputs], xp)
        if keep is not None:  # free what no later node reads
            for i in n.inputs:
                if last_use[i] == k and i not in keep:
                    del env[i]
    return env


def run(g, x, trace: bool = False, mode: str = "int", fast: bool = True):
    """Run graph ``g`` on inputs ``x`` (batch first; one sample without the batch axis is
    taken as a batch of one).  ``mode="int"``: the bit-exact integer model; ``"float"``:
    the same graph in float.  With NumPy inputs the integer model runs the graph's
    precomputed plan (``fabformer.plan``: the same integers, faster), or, for a graph called
    often, its compiled C kernel (``fabformer.kernel``; see ``Plan.kernel_for``);
    ``fast=False`` runs the op functions above, the specification, as they are."""
    if mode not in ("int", "float"):
        raise FabformerError(f"predict mode must be 'int' or 'float', not {mode!r}")
    # the one input check (shape, single sample, lists, dtypes, NaN/inf) of every path
    x = as_batch(g, x, None if isinstance(x, (list, tuple, np.ndarray)) else _xp(x))
    if fast and mode == "int" and type(x) is np.ndarray:
        from .plan import plan_for
        plan = plan_for(g)
        if not trace:
            k = plan.kernel_for(x)
            if k is not None:
                outs = [dequantize(m, f) for m, (_, f) in zip(k(x), plan.outputs)]
                return outs[0] if len(outs) == 1 else outs
        if trace or x.shape[0] <= PLAN_CHUNK:
            return plan.run(x, trace)
        parts = [plan.run(x[i:i + PLAN_CHUNK]) for i in range(0, x.shape[0], PLAN_CHUNK)]
        if len(g.outputs) == 1:
            return np.concatenate(parts, axis=0)
        return [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(g.outputs))]
    table = GOLDEN if mode == "int" else FLOAT
    xp = _xp(x)
    for n in g.nodes:
        registry.get(n, "golden" if mode == "int" else "float")  # a clear error for an op kind without one
    if trace or x.shape[0] <= CHUNK or not isinstance(x, np.ndarray):  # GPUs want one big batch
        env = _run_nodes(g, x, table, xp)
    else:  # samples are independent: run cache-sized chunks (same bits, faster)
        parts = [_run_nodes(g, x[i:i + CHUNK], table, xp, keep=g.outputs) for i in range(0, x.shape[0], CHUNK)]
        env = {o: xp.concat([p[o] for p in parts], axis=0) for o in g.outputs}
    if mode == "int":
        outs = [dequantize(env[o], g.type_of(o).frac) for o in g.outputs]
    else:
        outs = [env[o] for o in g.outputs]
    out = outs[0] if len(outs) == 1 else outs
    return (out, env) if trace else out


PLAN_CHUNK = 256  # samples per pass of the plan (NumPy only; measured faster than 1,024 and whole batches)


registry.set_interpreter(run)
