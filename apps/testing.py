"""Small graphs for backend tests: one graph per op kind and a whole tiny encoder.

Every backend test runs these through golden and its own path on the same
random inputs; inputs are drawn wide enough that saturation and wrap happen.
"""
from __future__ import annotations

import math

import numpy as np

from fabformer import ir, registry, tables
from fabformer.fixed import FixedType, Rounding, Overflow
from fabformer.vectors import random_inputs  # noqa: F401  (tests and benches take it from here too)
from fabformer.ir import (Add, Dense, Flatten, GlobalAvgPool, Graph, LayerNorm, Lookup, MatMul, MergeHeads,
                 Quantize, Relu, Requantize, Softmax, SplitHeads)

IN_T = FixedType(8, 5, rounding=Rounding.RND, overflow=Overflow.SAT)


def _act(width=12, frac=6, overflow=Overflow.SAT, rounding=Rounding.RND, signed=True):
    return FixedType(width, frac, signed, rounding, overflow)


def _dense(name, x, out, k, n, rng, sparsity=0.0, wt=FixedType(8, 6)):
    w = rng.integers(wt.min_int, wt.max_int + 1, (k, n))
    if sparsity:
        w[rng.random((k, n)) < sparsity] = 0
    b = rng.integers(-200, 200, n)
    return Dense(name, (x,), out, weight=w, weight_type=wt, bias=b, bias_type=FixedType(12, 8))


registry.declare("example", "test graphs (fabformer.apps.testing): input -> quantize -> one op of the kind")


def example(kind):
    """Register the test-graph builder of op kind ``kind``: ``fn(g, rng, overflow, features) -> output tensor``
    adds the op (and what it needs) after ``xq``, the quantized ``[tokens, features]`` input."""
    return registry.implements(kind, "example")


def op_graph(kind: str, seed: int = 0, overflow: Overflow = Overflow.SAT, tokens: int = 4,
             features: int = 8) -> Graph:
    """A graph ``input -> quantize -> <one op of kind> -> output``, random constants."""
    build = registry.get(kind, "example")
    rng = np.random.default_rng(seed)
    g = Graph(f"op_{kind}")
    g.add_input("x", (tokens, features))
    g.add(Quantize("quant", ("x",), "xq"), IN_T)
    g.outputs = [build(g, rng, overflow, features)]
    return g.verify()


OP_KINDS = list(ir.OPS)  # every op kind has a test graph (tests/test_registry.py checks it)


@example(ir.Quantize)
def _ex_quantize(g, rng, overflow, features):
    return "xq"


@example(ir.Dense)
def _ex_dense(g, rng, overflow, features):
    return g.add(_dense("op", "xq", "y", features, 6, rng, sparsity=0.3), _act(10, 4, overflow, rounding=Rounding.RND_CONV))


@example(ir.Relu)
def _ex_relu(g, rng, overflow, features):
    return g.add(Relu("op", ("xq",), "y"), _act(6, 4, overflow, signed=False))


@example(ir.Add)
def _ex_add(g, rng, overflow, features):
    g.add(_dense("d", "xq", "h", features, features, rng), _act(10, 5))
    return g.add(Add("op", ("xq", "h"), "y"), _act(8, 4, overflow))


@example(ir.Requantize)
def _ex_requantize(g, rng, overflow, features):
    return g.add(Requantize("op", ("xq",), "y"), _act(6, 3, overflow, rounding=Rounding.RND_CONV))


@example(ir.Lookup)
def _ex_lookup(g, rng, overflow, features):
    return g.add(Lookup("op", ("xq",), "y", table=tables.function_table("gelu", IN_T, _act(10, 6))), _act(10, 6))


@example(ir.Flatten)
def _ex_flatten(g, rng, overflow, features):
    return g.add(Flatten("op", ("xq",), "y"), IN_T)


@example(ir.GlobalAvgPool)
def _ex_gap(g, rng, overflow, features):
    tokens = g.tensors["xq"].shape[0]
    return g.add(GlobalAvgPool("op", ("xq",), "y", scale=round(2 ** 12 / tokens), scale_frac=12),
                 _act(10, 6, overflow, rounding=Rounding.RND_CONV))


@example(ir.SplitHeads)
def _ex_split(g, rng, overflow, features):
    return g.add(SplitHeads("split", ("xq",), "hs", heads=2), IN_T)


@example(ir.MergeHeads)
def _ex_merge(g, rng, overflow, features):
    _ex_split(g, rng, overflow, features)
    return g.add(MergeHeads("op", ("hs",), "y"), IN_T)


@example(ir.MatMul)
def _ex_matmul(g, rng, overflow, features):
    _ex_split(g, rng, overflow, features)
    d = features // 2
    g.add(MatMul("op", ("hs", "hs"), "y", transpose_b=True, scale=round(2 ** 12 / math.sqrt(d)),
                 scale_frac=12), _act(10, 4, overflow))
    return g.add(MatMul("op2", ("y", "hs"), "y2"), _act(12, 5, overflow))


@example(ir.Softmax)
def _ex_softmax(g, rng, overflow, features):
    _ex_split(g, rng, overflow, features)
    g.add(MatMul("qk", ("hs", "hs"), "s", transpose_b=True, scale=1, scale_frac=0), _act(12, 6))
    return g.add(Softmax("op", ("s",), "y", exp_table=tables.exp_table(6), recip_table=tables.recip_table()),
                 FixedType(10, 9, signed=False, rounding=Rounding.RND_CONV, overflow=Overflow.SAT))


@example(ir.LayerNorm)
def _ex_layernorm(g, rng, overflow, features):
    gt, bt = FixedType(10, 6), FixedType(10, 6)
    return g.add(LayerNorm("op", ("xq",), "y", gamma=rng.integers(-500, 500, features), gamma_type=gt,
                           beta=rng.integers(-300, 300, features), beta_type=bt, eps=1,
                           invsqrt_table=tables.invsqrt_table(), norm_type=_act(16, 14, rounding=Rounding.RND_CONV)), _act(10, 5, overflow))


def encoder_graph(seed: int = 0, tokens: int = 8, features: int = 8, d_model: int = 16, heads: int = 2,
                  ff: int = 32, classes: int = 10, sparsity: float = 0.0) -> Graph:
    """A whole tiny encoder with random weights, shaped like the digits example."""
    rng = np.random.default_rng(seed)
    g = Graph("encoder")
    g.add_input("x", (tokens, features))
    A = _act(16, 10)
    g.add(Quantize("quant", ("x",), "xq"), FixedType(8, 7, rounding=Rounding.RND, overflow=Overflow.SAT))
    g.add(_dense("embed", "xq", "h0", features, d_model, rng, sparsity), A)
    for nm in ("q", "k", "v"):
        g.add(_dense(nm, "h0", nm, d_model, d_model, rng, sparsity), A)
        g.add(SplitHeads(nm + "_split", (nm,), nm + "h", heads=heads), A)
    dk = d_model // heads
    g.add(MatMul("qk", ("qh", "kh"), "scores", transpose_b=True, scale=round(2 ** 15 / math.sqrt(dk)),
                 scale_frac=15), A)
    g.add(Softmax("softmax", ("scores",), "probs", exp_table=tables.exp_table(A.frac),
                  recip_table=tables.recip_table()), FixedType(16, 15, False, Rounding.RND, Overflow.SAT))
    g.add(MatMul("av", ("probs", "vh"), "ctx"), A)
    g.add(MergeHeads("merge", ("ctx",), "ctxm"), A)
    g.add(_dense("o", "ctxm", "attn", d_model, d_model, rng, sparsity), A)
    g.add(Add("res1", ("h0", "attn"), "r1"), A)
    gt = FixedType(12, 8)
    ln = lambda nm, x, o: LayerNorm(nm, (x,), o, gamma=rng.integers(400, 1200, d_model), gamma_type=gt,
                                    beta=rng.integers(-200, 200, d_model), beta_type=gt, eps=1,
                                    invsqrt_table=tables.invsqrt_table(), norm_type=_act(18, 16))
    g.add(ln("ln1", "r1", "n1"), A)
    g.add(_dense("ff1", "n1", "f1", d_model, ff, rng, sparsity), _act(17, 10))
    g.add(Relu("relu", ("f1",), "f1r"), FixedType(16, 10, False, Rounding.RND, Overflow.SAT))
    g.add(_dense("ff2", "f1r", "f2", ff, d_model, rng, sparsity), A)
    g.add(Lookup("gelu", ("f2",), "f2g", table=tables.function_table("gelu", A, A)), A)
    g.add(Add("res2", ("n1", "f2g"), "r2"), A)
    g.add(ln("ln2", "r2", "n2"), A)
    g.add(Flatten("flatten", ("n2",), "flat"), A)
    g.add(_dense("head", "flat", "logits", tokens * d_model, classes, rng, sparsity), A)
    g.outputs = ["logits"]
    return g.verify()




def classifier_graph(seed: int = 0, tokens: int = 4, features: int = 8, hidden: int = 6, classes: int = 4) -> Graph:
    """A tiny classifier (dense, relu, flatten, dense): small enough for sweeps in tests."""
    rng = np.random.default_rng(seed)
    g = Graph("classifier")
    g.add_input("x", (tokens, features))
    g.add(Quantize("quant", ("x",), "xq"), IN_T)
    g.add(_dense("d1", "xq", "h", features, hidden, rng), _act(10, 5))
    g.add(Relu("relu", ("h",), "hr"), _act(9, 5, signed=False))
    g.add(Flatten("flatten", ("hr",), "flat"), _act(9, 5, signed=False))
    g.add(_dense("d2", "flat", "logits", tokens * hidden, classes, rng), _act(12, 5))
    g.outputs = ["logits"]
    return g.verify()


@example(ir.Scale)
def _ex_scale(g, rng, overflow, features):
    g.add(ir.Scale("neg", ("xq",), "xn", scale=-1), _act(9, 5))
    return g.add(ir.Scale("op", ("xn",), "y", scale=-23, scale_frac=4), _act(8, 3, overflow, rounding=Rounding.RND_CONV))


@example(ir.GlobalMaxPool)
def _ex_gmp(g, rng, overflow, features):
    return g.add(ir.GlobalMaxPool("op", ("xq",), "y"), _act(6, 3, overflow, rounding=Rounding.RND_CONV))


@example(ir.Concat)
def _ex_concat(g, rng, overflow, features):
    g.add(_dense("d", "xq", "h", features, 3, rng), _act(10, 6))
    return g.add(ir.Concat("op", ("xq", "h"), "y"), _act(7, 4, overflow))


@example(ir.Reshape)
def _ex_reshape(g, rng, overflow, features):
    tokens = g.tensors["xq"].shape[0]
    g.add(ir.Reshape("r1", ("xq",), "r", shape=(tokens * features // 2, 2)), IN_T)
    g.add(ir.GlobalMaxPool("pool", ("r",), "p"), IN_T)
    return g.add(ir.Reshape("op", ("p",), "y", shape=(1, 2)), IN_T)


def multi_input_graph(seed: int = 0, tokens: int = 4, features: int = 8, extra: int = 3, classes: int = 5) -> Graph:
    """Two inputs: features ``x [tokens, features]`` and small integers ``z [extra]`` (ids, masks)."""
    rng = np.random.default_rng(seed)
    g = Graph("two_inputs")
    g.add_input("x", (tokens, features))
    g.add(Quantize("quant", ("x",), "xq"), IN_T)
    g.add(_dense("d1", "xq", "h", features, features, rng), _act(10, 5))
    g.add_input("z", (extra,))
    g.add(Quantize("quant_z", ("z",), "zq"), FixedType(3, 0, False, Rounding.RND, Overflow.SAT))
    g.add(ir.GlobalMaxPool("pool", ("h",), "p"), _act(10, 5))
    g.add(ir.Concat("cat", ("p", "zq"), "c"), _act(10, 5))
    g.add(_dense("head", "c", "logits", features + extra, classes, rng), _act(12, 5))
    g.outputs = ["logits"]
    return g.verify()


@example(ir.AddConst)
def _ex_add_const(g, rng, overflow, features):
    shape = g.tensors["xq"].shape
    ct = FixedType(9, 7)
    return g.add(ir.AddConst("op", ("xq",), "y", const=rng.integers(ct.min_int, ct.max_int + 1, shape),
                             const_type=ct), _act(7, 3, overflow, rounding=Rounding.RND_CONV))


@example(ir.Embedding)
def _ex_embedding(g, rng, overflow, features):
    tokens = g.tensors["xq"].shape[0]
    g.add(Flatten("flat", ("xq",), "ids_f"), IN_T)  # [tokens * features] ids at frac 5: x >> 5 in [-4, 3]
    tt = FixedType(10, 6)
    g.add(ir.Embedding("op", ("ids_f",), "e", table=rng.integers(tt.min_int, tt.max_int + 1, (3, 5)), table_type=tt),
          _act(8, 4, overflow, rounding=Rounding.RND_CONV))
    return g.add(ir.GlobalMaxPool("pool", ("e",), "y"), _act(8, 4, overflow))


def _ex_mask(g, rng, name="m"):
    """A key mask [tokens] from the input (ready before the scores): zero where a max lands in [0, 2)."""
    t, f = g.tensors["xq"].shape
    g.add(ir.Reshape(name + "_r", ("xq",), name + "_t", shape=(f, t)), IN_T)
    g.add(ir.GlobalMaxPool(name + "_p", (name + "_t",), name + "_pf"), IN_T)
    return g.add(Requantize(name, (name + "_pf",), name), FixedType(3, -1, True, Rounding.TRN, Overflow.SAT))


def _ex_scores(g, rng):
    _ex_split(g, rng, None, None)
    return g.add(MatMul("qk", ("hs", "hs"), "s", transpose_b=True, scale=1, scale_frac=0), _act(12, 6))


@example(ir.MaskFill)
def _ex_mask_fill(g, rng, overflow, features):
    s, m = _ex_scores(g, rng), _ex_mask(g, rng)
    g.add(ir.MaskFill("op", (s, m), "y0", causal=False), _act(14, 6, overflow, rounding=Rounding.RND_CONV))
    return g.add(ir.MaskFill("op2", ("y0", m), "y", causal=True), _act(14, 6, overflow))


@example(ir.CausalFill)
def _ex_causal_fill(g, rng, overflow, features):
    s = _ex_scores(g, rng)
    g.add(ir.CausalFill("op", (s,), "y0"), _act(14, 5, overflow, rounding=Rounding.RND_CONV))
    return g.add(Softmax("sm", ("y0",), "y", exp_table=tables.exp_table(5), recip_table=tables.recip_table()),
                 FixedType(10, 9, False, Rounding.RND, Overflow.SAT))


@example(ir.MaskedAvgPool)
def _ex_masked_avg_pool(g, rng, overflow, features):
    m = _ex_mask(g, rng)
    tokens = g.tensors["xq"].shape[0]
    g.add(_dense("d", "xq", "h", features, features, rng), _act(10, 5))  # slower than the mask
    recip = [0] + [round(2 ** 12 / c) for c in range(1, tokens + 1)]
    return g.add(ir.MaskedAvgPool("op", ("h", m), "y", recip=recip, scale_frac=12),
                 _act(10, 6, overflow, rounding=Rounding.RND_CONV))


def masked_attention_graph(seed: int = 0, tokens: int = 6, features: int = 4, heads: int = 2, causal: bool = False,
                           classes: int = 3) -> Graph:
    """Features ``x [tokens, features]`` and a 0/1 key mask ``mask [tokens]``: masked self-attention
    (padding, and causal when asked), then the mean over kept tokens."""
    rng = np.random.default_rng(seed)
    g = Graph("masked_attention")
    g.add_input("x", (tokens, features))
    g.add(Quantize("quant", ("x",), "xq"), IN_T)
    g.add_input("mask", (tokens,))
    g.add(Quantize("quant_m", ("mask",), "mq"), FixedType(1, 0, False, Rounding.RND, Overflow.SAT))
    A = _act(14, 8)
    for nm in ("q", "k", "v"):
        g.add(_dense(nm, "xq", nm, features, features, rng), A)
        g.add(SplitHeads(nm + "_split", (nm,), nm + "h", heads=heads), A)
    g.add(MatMul("qk", ("qh", "kh"), "scores", transpose_b=True, scale=round(2 ** 12 / math.sqrt(features // heads)),
                 scale_frac=12), _act(12, 6))
    g.add(ir.MaskFill("mask_fill", ("scores", "mq"), "masked", causal=causal), _act(14, 6))
    g.add(Softmax("softmax", ("masked",), "probs", exp_table=tables.exp_table(6), recip_table=tables.recip_table()),
          FixedType(12, 11, False, Rounding.RND, Overflow.SAT))
    g.add(MatMul("av", ("probs", "vh"), "ctx"), A)
    g.add(MergeHeads("merge", ("ctx",), "ctxm"), A)
    recip = [0] + [round(2 ** 12 / c) for c in range(1, tokens + 1)]
    g.add(ir.MaskedAvgPool("pool", ("ctxm", "mq"), "pooled", recip=recip, scale_frac=12), A)
    g.add(_dense("head", "pooled", "logits", features, classes, rng), _act(12, 6))
    g.outputs = ["logits"]
    return g.verify()
