"""Keras 2 / QKeras models -> fixed-point :class:`~fabformer.ir.Graph`.

Conversion runs twice over the model: first with provisional activation types
to run the graph in float over the calibration data (range analysis), then
with final types.  QKeras quantizers give their exact precision; everything
else gets ``config.activation_bits`` with the integer part from the ranges.
A QKeras activation that follows an op with a single consumer is folded into
that op's output type, so the accumulator is rounded once, as QKeras does.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .. import tables
from ..errors import ConversionError
from ..fixed import FixedType, Overflow, Rounding, quantize_float
from ..ir import (Add, Dense, Flatten, GlobalAvgPool, Graph, LayerNorm, Lookup, MatMul, MergeHeads,
                  Quantize, Relu, Requantize, Softmax, SplitHeads)
from ..requant import weight_type
from .config import ConvertConfig
from .handlers import Handler, Handlers

HANDLERS = Handlers("keras")  # one handler per Keras layer class (registered below)
ACTIVATIONS = ["linear", "relu", *tables.ACTIVATIONS, "softmax"]
PROVISIONAL = FixedType(16, 8, True, Rounding.RND, Overflow.SAT)
# ops whose output is one requantization of an exact value: a following quantizer folds into them
_FOLDABLE = (Dense, MatMul, Add, LayerNorm, GlobalAvgPool, Quantize, Requantize)


# -- QKeras quantizers --------------------------------------------------------------
def quantizer_type(q, where: str, problems: list) -> FixedType | None:
    """FixedType of a QKeras ``quantized_bits`` / ``quantized_relu`` (``integer`` excludes the sign)."""
    name = type(q).__name__
    if name not in ("quantized_bits", "quantized_relu"):
        problems.append(f"{where}: quantizer {q} is not supported; supported: quantized_bits, quantized_relu")
        return None
    alpha = getattr(q, "alpha", None)
    if alpha not in (None, 1, 1.0):
        problems.append(f"{where}: quantizer {q} uses alpha={alpha!r}; only alpha=1 (no scaling) is supported")
        return None
    bits, integer = int(q.bits), int(q.integer)
    # options whose arithmetic the converter does not reproduce exactly: refused, never ignored
    for attr, ok, why in (("use_stochastic_rounding", (None, False, 0), "stochastic rounding has no fixed-point "
                                                                         "equivalent at inference"),
                          ("use_sigmoid", (None, False, 0), "the sigmoid variant of quantized_relu is not implemented"),
                          ("relu_upper_bound", (None,), "an upper bound other than the type's range is not "
                                                        "implemented"),
                          ("scale_axis", (None,), "per-axis scales are not implemented"),
                          ("post_training_scale", (None,), "post-training scales are not implemented")):
        v = getattr(q, attr, None)
        if hasattr(v, "numpy"):
            v = v.numpy()
        if v not in ok and not (isinstance(v, (int, float)) and v in ok):
            problems.append(f"{where}: quantizer {q} sets {attr}={v!r}: {why}")
            return None
    if name == "quantized_relu":
        if getattr(q, "negative_slope", 0.0):
            problems.append(f"{where}: quantized_relu with negative_slope is not supported")
            return None
        return FixedType(bits, bits - integer, False, Rounding.RND, Overflow.SAT)
    if getattr(q, "symmetric", 0):
        problems.append(f"{where}: symmetric quantized_bits is not supported; use symmetric=0")
        return None
    signed = bool(q.keep_negative)
    return FixedType(bits, bits - integer - (1 if signed else 0), signed, Rounding.RND, Overflow.SAT)


def _mantissas(values: np.ndarray, t: FixedType, where: str, problems: list) -> np.ndarray:
    m = np.asarray(values, dtype=np.float64) * 2.0 ** t.frac
    r = np.round(m)
    if not np.all(np.abs(m - r) < 1e-6):
        problems.append(f"{where}: quantized values are not multiples of 2**-{t.frac}")
    return np.clip(r, t.min_int, t.max_int).astype(np.int64)


def _range_type(max_abs: float, bits: int, signed: bool, cfg: ConvertConfig) -> FixedType:
    m = max(float(max_abs), 2.0 ** -bits) * cfg.range_margin
    ibits = max(math.floor(math.log2(m)) + 1, 1 - bits + (1 if signed else 0))
    ibits += 1 if signed else 0
    return cfg.act(bits, bits - ibits, signed)


# -- the model walk ---------------------------------------------------------------
class _Layer:
    def __init__(self, layer, inbound):
        self.layer = layer
        self.name = layer.name
        self.cls = type(layer).__name__
        self.inputs = [n[0] for n in inbound[0]] if inbound else []
        self.kwargs = inbound[0][0][3] if inbound and len(inbound[0][0]) > 3 else {}
        self.n_calls = len(inbound)


def _walk(model) -> list[_Layer]:
    cfg = model.get_config()
    if "layers" not in cfg:
        raise ConversionError([f"model {model.name!r}: only functional or Sequential Keras models are supported"])
    seq = [l for l in cfg["layers"]]
    if not any(l.get("inbound_nodes") for l in seq):  # Sequential: chain the layers
        out, prev = [], None
        for i, l in enumerate(model.layers):
            inbound = [[[prev, 0, 0, {}]]] if prev else []
            out.append(_Layer(l, inbound))
            prev = l.name
        if not isinstance(model.layers[0], _input_layer_cls()):
            shape = model.input_shape
            out.insert(0, _FakeInput(shape))
            out[1].inputs = ["input"]
        return out
    by_name = {l.name: l for l in model.layers}
    return [_Layer(by_name[l["name"]], l.get("inbound_nodes") or []) for l in seq]


def _input_layer_cls():
    from tensorflow import keras
    return keras.layers.InputLayer


class _FakeInput:
    def __init__(self, shape):
        self.name, self.cls, self.inputs, self.kwargs, self.n_calls = "input", "InputLayer", [], {}, 0
        self.shape = shape
        self.layer = None


def _check(layers: list[_Layer]) -> list[str]:
    """Every problem of the model at once."""
    p = []
    for L in layers:
        where = f"layer {L.name!r} ({L.cls})"
        h = HANDLERS.get(L.cls)
        if h is None:
            p.append(f"{where}: layer type not supported; supported: {', '.join(HANDLERS.supported)}")
            continue
        if L.n_calls > 1:
            p.append(f"{where}: a layer called more than once (shared weights) is not supported")
        p.extend(h.check(L, where))
    return p


def _consumers(layers):
    c = {}
    for L in layers:
        for i in L.inputs:
            c[i] = c.get(i, 0) + 1
    return c


class _Builder:
    def __init__(self, layers, cfg: ConvertConfig, ranges: dict | None, name: str):
        self.layers = layers
        self.cfg = cfg
        self.ranges = ranges
        self.g = Graph(name)
        self.tensor_of = {}  # keras layer name -> graph tensor
        self.roles = {}  # (layer, role) -> tensor
        self.consumers = _consumers(layers)
        self.problems = []
        self.output_layers = None  # the model's output layers, in order (default: the last layer)

    # types --------------------------------------------------------------------
    def act_type(self, layer: str, role: str, tensor: str, signed: bool = True, bits: int | None = None):
        self.roles[(layer, role)] = tensor
        ov = self.cfg.layers.get(layer, {}).get(role)
        if ov is not None:
            return ov
        if self.ranges is None:
            return PROVISIONAL if signed else PROVISIONAL.with_(signed=False)
        return _range_type(self.ranges.get(tensor, 1.0), bits or self.cfg.activation_bits, signed, self.cfg)

    def add(self, op, t):
        return self.g.add(op, t)

    def inp(self, L, i=0):
        return self.tensor_of[L.inputs[i]]

    def qtype(self, tensor):
        return self.g.type_of(tensor)

    # layers ------------------------------------------------------------------
    def build(self) -> Graph:
        for L in self.layers:
            HANDLERS.get(L.cls).build(self, L)
        self.g.outputs = [self.tensor_of[name] for name in (self.output_layers or [self.layers[-1].name])]
        return self.g

    def fold_or_requantize(self, L, src: str, t: FixedType, relu: bool):
        """Apply a quantizer of type ``t`` (relu: unsigned) to tensor ``src`` for layer ``L``."""
        prod = self.g.producer(src)
        single = sum(1 for n in self.g.nodes if src in n.inputs) == 0 and self._single_use(src)
        if relu:
            if single and isinstance(prod, _FOLDABLE):
                # round the accumulator once, straight to the relu's frac; the sign bit saturates negatives
                self.g.retype(src, FixedType(t.width + 1, t.frac, True, t.rounding, Overflow.SAT))
            out = self.add(Relu(L.name, (src,), L.name), t)
        elif single and isinstance(prod, _FOLDABLE):
            self.g.retype(src, t)
            out = src
        else:
            out = self.add(Requantize(L.name, (src,), L.name), t)
        self.tensor_of[L.name] = out

    def _single_use(self, tensor):
        owners = [k for k, v in self.tensor_of.items() if v == tensor]
        return sum(self.consumers.get(o, 0) for o in owners) <= 1

    def activation(self, L, src, name, out_name=None):
        out_name = out_name or L.name
        if name in ("linear", None):
            self.tensor_of[L.name] = src
        elif name == "relu":
            t = self.act_type(L.name, "output", out_name, signed=False)
            self.tensor_of[L.name] = self.add(Relu(out_name, (src,), out_name), t)
        elif name in tables.ACTIVATIONS:
            t = self.act_type(L.name, "output", out_name)
            tab = tables.function_table(name, self.qtype(src), t, self.cfg.table_index_bits)
            self.tensor_of[L.name] = self.add(Lookup(out_name, (src,), out_name, table=tab), t)
        elif name == "softmax":
            self.tensor_of[L.name] = self.softmax(L.name, out_name, src)
        else:
            self.problems.append(f"layer {L.name!r}: activation {name!r} not supported; supported: {', '.join(ACTIVATIONS)}")

    def softmax(self, layer, name, src):
        c = self.cfg
        t = self.cfg.layers.get(layer, {}).get("probs") or FixedType(
            c.softmax_bits, c.softmax_bits - 1, False, Rounding.RND, Overflow.SAT)
        self.roles[(layer, "probs")] = name
        op = Softmax(name, (src,), name, exp_table=tables.exp_table(self.qtype(src).frac, c.exp_bits, c.table_index_bits),
                     recip_table=tables.recip_table(c.recip_bits, c.recip_out_bits), recip_bits=c.recip_bits)
        return self.add(op, t)

    def dense(self, L, name, src, kernel, bias, wt=None, bt=None):
        """Emit a Dense op from float kernel/bias (quantized here unless wt/bt are given)."""
        c = self.cfg
        xt = self.qtype(src)
        where = f"layer {L.name!r}"
        if wt is not None:  # a quantizer's values: exact multiples of its LSB
            w = _mantissas(kernel, wt, where, self.problems)
        else:
            wt = self.cfg.layers.get(L.name, {}).get(_role(name, "weight")) or weight_type(kernel, c.weight_bits)
            self.roles[(L.name, _role(name, "weight"))] = name
            w = quantize_float(kernel, wt)
        if bias is None:
            bias = np.zeros(kernel.shape[1])
        if bt is None:
            bt = self.cfg.layers.get(L.name, {}).get(_role(name, "bias")) or weight_type(bias, c.bias_bits)
            self.roles[(L.name, _role(name, "bias"))] = name
            b = quantize_float(bias, bt)
        else:
            b = _mantissas(bias, bt, where, self.problems)
        pf = xt.frac + wt.frac
        if bt.frac > pf:  # bias finer than the product: round it to the product's grid
            b = quantize_float(b * 2.0 ** -bt.frac, bt.with_(frac=pf, width=max(2, bt.width - (bt.frac - pf))))
            bt = bt.with_(frac=pf, width=max(2, bt.width - (bt.frac - pf)))
        return Dense(name, (src,), name, weight=w, weight_type=wt, bias=b, bias_type=bt)

# -- one handler per Keras layer class: its check and its build -------------------------
@HANDLERS.register
class _InputHandler(Handler):
    classes = ("InputLayer",)

    def check(self, L, where):
        if L.layer is None:
            return []
        shape = L.layer.get_config()["batch_input_shape"][1:]
        if len(shape) not in (1, 2) or any(s is None for s in shape):
            return [f"{where}: input shape {tuple(shape)} not supported; fixed (tokens, features) or (features,)"]
        return []

    def build(self, bld, L):
        shape = L.shape[1:] if isinstance(L, _FakeInput) else L.layer.get_config()["batch_input_shape"][1:]
        x = bld.g.add_input(L.name, shape)
        t = bld.act_type(L.name, "output", L.name + "/q")
        bld.tensor_of[L.name] = bld.add(Quantize(L.name + "/quantize", (x,), L.name + "/q"), t)


@HANDLERS.register
class _DenseHandler(Handler):
    classes = ("Dense", "QDense")

    def check(self, L, where):
        p = []
        lay = L.layer
        act = getattr(lay, "activation", None)
        an = getattr(act, "__name__", None)
        if act is not None and an is None and not (L.cls == "QDense" and type(act).__name__.startswith("quantized")):
            p.append(f"{where}: activation {type(act).__name__} (a layer or object, not a named function) is not "
                     f"supported; supported: {', '.join(ACTIVATIONS)} (or a separate layer)")
        if L.cls != "QDense" or an is not None:
            if an is not None and an not in ACTIVATIONS:
                p.append(f"{where}: activation {an!r} not supported; supported: {', '.join(ACTIVATIONS)}")
        if L.cls == "QDense":
            for what, q in (("kernel", lay.kernel_quantizer_internal), ("bias", lay.bias_quantizer_internal)):
                if q is not None:
                    quantizer_type(q, f"{where} {what}", p)
            act = lay.activation
            if act is not None and getattr(act, "__name__", None) is None:
                quantizer_type(act, f"{where} activation", p)
        if len(lay.input_shape) > 3:
            p.append(f"{where}: Dense over a {len(lay.input_shape) - 1}-D input not supported (1-D or 2-D)")
        return p

    def build(self, bld, L):
        lay = L.layer
        src = bld.inp(L)
        kernel = lay.kernel.numpy()
        bias = lay.bias.numpy() if lay.use_bias else None
        wt = bt = None
        act = lay.activation
        if L.cls == "QDense":
            where = f"layer {L.name!r} (QDense)"
            kq, bq = lay.kernel_quantizer_internal, lay.bias_quantizer_internal
            if kq is not None:
                wt = quantizer_type(kq, where + " kernel", bld.problems)
                if wt is None:
                    return
                kernel = np.asarray(kq(kernel.astype(np.float32)))
                kernel = _mantissas(kernel, wt, where, bld.problems) * 2.0 ** -wt.frac
            if bq is not None and bias is not None:
                bt = quantizer_type(bq, where + " bias", bld.problems)
                if bt is None:
                    return
                bias = np.asarray(bq(bias.astype(np.float32)))
        op = bld.dense(L, L.name, src, kernel, bias, wt, bt)
        aname = getattr(act, "__name__", None)
        qact = act is not None and aname is None and type(act).__name__.startswith("quantized")
        if qact:
            t = quantizer_type(act, f"layer {L.name!r} activation", bld.problems)
            if t is None:
                return
            is_relu = type(act).__name__ == "quantized_relu"
            pre = FixedType(t.width + 1, t.frac, True, t.rounding, Overflow.SAT) if is_relu else t
            bld.roles[(L.name, "output")] = L.name
            if is_relu:
                d = bld.add(replace(op, output=L.name + "/acc"), pre)
                bld.tensor_of[L.name] = bld.add(Relu(L.name + "/relu", (d,), L.name), t)
            else:
                bld.tensor_of[L.name] = bld.add(op, t)
            return
        if aname in (None, "linear"):
            bld.tensor_of[L.name] = bld.add(op, bld.act_type(L.name, "output", L.name))
            return
        pre = L.name + "/pre"
        d = bld.add(replace(op, name=pre, output=pre),
                     bld.act_type(L.name, "pre_activation", pre))
        bld.activation(L, d, aname, L.name)


@HANDLERS.register
class _QActivationHandler(Handler):
    classes = ("QActivation",)

    def check(self, L, where):
        p = []
        q = L.layer.quantizer
        if not isinstance(q, str) and q is not None:
            quantizer_type(q, where, p)
        return p

    def build(self, bld, L):
        src = bld.inp(L)
        q = L.layer.quantizer
        if isinstance(q, str) or q is None:
            return bld.activation(L, src, str(q or "linear").split("(")[0])
        t = quantizer_type(q, f"layer {L.name!r} (QActivation)", bld.problems)
        if t is None:
            return
        if L.name in bld.cfg.layers and "output" in bld.cfg.layers[L.name]:
            bld.problems.append(f"layer {L.name!r}: has a quantizer; a config override would change the model")
        # an unsigned quantized_bits (keep_negative=False) clamps negatives like a relu: a Relu node, so the
        # float graph clamps them too
        bld.fold_or_requantize(L, src, t, relu=type(q).__name__ == "quantized_relu" or not t.signed)


@HANDLERS.register
class _ActivationHandler(Handler):
    classes = ("Activation",)

    def check(self, L, where):
        act = getattr(L.layer, "activation", None)
        an = getattr(act, "__name__", None)
        if an is None:
            return [f"{where}: activation {type(act).__name__} (a layer or object, not a named function) is not "
                    f"supported; supported: {', '.join(ACTIVATIONS)}"]
        if an not in ACTIVATIONS:
            return [f"{where}: activation {an!r} not supported; supported: {', '.join(ACTIVATIONS)}"]
        return []

    def build(self, bld, L):
        bld.activation(L, bld.inp(L), L.layer.activation.__name__)


@HANDLERS.register
class _ReLUHandler(Handler):
    classes = ("ReLU",)

    def check(self, L, where):
        lay = L.layer
        if lay.max_value is not None or float(lay.negative_slope) != 0 or float(lay.threshold) != 0:
            return [f"{where}: only plain ReLU is supported (no max_value, slope or threshold)"]
        return []

    def build(self, bld, L):
        bld.activation(L, bld.inp(L), "relu")


@HANDLERS.register
class _MultiHeadAttentionHandler(Handler):
    classes = ("MultiHeadAttention",)

    def check(self, L, where):
        p = []
        lay = L.layer
        kw = dict(L.kwargs)
        for bad in ("attention_mask", "use_causal_mask", "return_attention_scores"):
            if kw.get(bad) not in (None, False):
                p.append(f"{where}: {bad} is not supported (no masks, no returned scores)")
        q = L.inputs[0] if L.inputs else None
        v = kw.get("value", [q])[0] if isinstance(kw.get("value"), list) else q
        k = kw.get("key", [v])[0] if isinstance(kw.get("key"), list) else v
        if not (q == v == k):
            p.append(f"{where}: cross-attention (query {q!r}, key {k!r}, value {v!r}) is not supported; "
                     f"only self-attention mha(x, x)")
        if tuple(lay._attention_axes or ()) not in ((1,),):
            p.append(f"{where}: attention_axes={lay._attention_axes} not supported; attend over the sequence axis")
        if lay._output_shape is not None:
            p.append(f"{where}: output_shape is not supported")
        return p

    def build(self, bld, L):
        lay = L.layer
        src = bld.inp(L)
        nm = L.name
        heads, dk = lay._num_heads, lay._key_dim
        dv = lay._value_dim or dk
        hs = {}
        for part, dense, width in (("query", lay._query_dense, dk), ("key", lay._key_dense, dk),
                                   ("value", lay._value_dense, dv)):
            kernel = dense.kernel.numpy().reshape(-1, heads * width)
            bias = dense.bias.numpy().reshape(-1) if lay._use_bias else None
            t_name = f"{nm}/{part}"
            op = bld.dense(L, t_name, src, kernel, bias)
            x = bld.add(op, bld.act_type(nm, part, t_name))
            hs[part] = bld.add(SplitHeads(f"{nm}/{part}_split", (x,), f"{nm}/{part}_heads", heads=heads),
                                bld.qtype(x))
        sf = 16
        scores = f"{nm}/scores"
        bld.add(MatMul(scores, (hs["query"], hs["key"]), scores, transpose_b=True,
                        scale=round(2 ** sf / math.sqrt(dk)), scale_frac=sf), bld.act_type(nm, "scores", scores))
        probs = bld.softmax(nm, f"{nm}/probs", scores)
        ctx = f"{nm}/context"
        bld.add(MatMul(ctx, (probs, hs["value"]), ctx), bld.act_type(nm, "context", ctx))
        merged = bld.add(MergeHeads(f"{nm}/merge", (ctx,), f"{nm}/merged"), bld.qtype(ctx))
        od = lay._output_dense
        op = bld.dense(L, nm, merged, od.kernel.numpy().reshape(heads * dv, -1),
                         od.bias.numpy() if lay._use_bias else None)
        bld.tensor_of[nm] = bld.add(op, bld.act_type(nm, "output", nm))


@HANDLERS.register
class _LayerNormalizationHandler(Handler):
    classes = ("LayerNormalization",)

    def check(self, L, where):
        lay = L.layer
        axis = list(lay.axis) if isinstance(lay.axis, (list, tuple)) else [lay.axis]
        rank = len(lay.input_shape)
        if [a % rank for a in axis] != [rank - 1]:
            return [f"{where}: normalisation over axis {lay.axis} not supported; only the last axis"]
        return []

    def build(self, bld, L):
        lay = L.layer
        c = bld.cfg
        src = bld.inp(L)
        xt = bld.qtype(src)
        n = bld.g.tensors[src].shape[-1]
        gamma = lay.gamma.numpy() if lay.scale else np.ones(n)
        beta = lay.beta.numpy() if lay.center else np.zeros(n)
        ov = bld.cfg.layers.get(L.name, {})
        norm_t = ov.get("norm") or c.act(c.norm_bits, c.norm_bits - 2)
        g_eff = gamma * math.sqrt(n)
        gt = ov.get("gamma") or weight_type(g_eff, c.bias_bits)
        bt = ov.get("beta") or weight_type(beta, c.bias_bits)
        if bt.frac > norm_t.frac + gt.frac:
            bt = bt.with_(frac=norm_t.frac + gt.frac)
        for r in ("norm", "gamma", "beta"):
            bld.roles[(L.name, r)] = L.name
        eps = max(1, round(float(lay.epsilon) * n ** 3 * 2.0 ** (2 * xt.frac)))
        t = bld.act_type(L.name, "output", L.name)
        op = LayerNorm(L.name, (src,), L.name, gamma=quantize_float(g_eff, gt), gamma_type=gt,
                       beta=quantize_float(beta, bt), beta_type=bt, eps=eps,
                       invsqrt_table=tables.invsqrt_table(c.invsqrt_bits, c.recip_out_bits),
                       invsqrt_bits=c.invsqrt_bits, norm_type=norm_t)
        bld.tensor_of[L.name] = bld.add(op, t)


@HANDLERS.register
class _AddHandler(Handler):
    classes = ("Add",)

    def check(self, L, where):
        if len(L.inputs) != 2:
            return [f"{where}: Add of {len(L.inputs)} inputs not supported; only two"]
        return []

    def build(self, bld, L):
        a, b = bld.inp(L, 0), bld.inp(L, 1)
        t = bld.act_type(L.name, "output", L.name)
        bld.tensor_of[L.name] = bld.add(Add(L.name, (a, b), L.name), t)


@HANDLERS.register
class _FlattenHandler(Handler):
    classes = ("Flatten",)

    def build(self, bld, L):
        src = bld.inp(L)
        bld.tensor_of[L.name] = bld.add(Flatten(L.name, (src,), L.name), bld.qtype(src))


@HANDLERS.register
class _GlobalAveragePooling1DHandler(Handler):
    classes = ("GlobalAveragePooling1D",)

    def check(self, L, where):
        if getattr(L.layer, "keepdims", False):
            return [f"{where}: keepdims=True not supported"]
        return []

    def build(self, bld, L):
        src = bld.inp(L)
        steps = bld.g.tensors[src].shape[0]
        t = bld.act_type(L.name, "output", L.name)
        bld.tensor_of[L.name] = bld.add(GlobalAvgPool(L.name, (src,), L.name, scale=round(2 ** 16 / steps),
                                                        scale_frac=16), t)


@HANDLERS.register
class _DropoutHandler(Handler):
    classes = ("Dropout",)

    def build(self, bld, L):
        bld.tensor_of[L.name] = bld.inp(L)


SUPPORTED = HANDLERS.supported  # Keras layer classes the converter takes


def _role(name: str, what: str) -> str:
    part = name.split("/", 1)[1] if "/" in name else ""
    return f"{part}_{what}" if part else what


def convert(model, config=None, calibration=None) -> Graph:
    """Convert a Keras 2 / QKeras model to a verified :class:`Graph`.

    ``config``: :class:`ConvertConfig`, a dict of its keys, or None for defaults.
    ``calibration``: input samples for range analysis of layers without a quantizer
    (default: 256 standard-normal samples; pass real data for accurate defaults).
    """
    cfg = config if isinstance(config, ConvertConfig) else ConvertConfig.from_dict(config)
    layers = _walk(model)
    problems = _check(layers)
    outputs = _output_layers(model)
    if problems:
        raise ConversionError(problems)
    first = _Builder(layers, cfg, None, model.name)
    first.output_layers = outputs
    g0 = first.build()
    if first.problems:
        raise ConversionError(first.problems)
    _check_overrides(cfg, first.roles, layers)
    shape = g0.tensors[g0.inputs[0]].shape
    guess = calibration is None
    if guess:
        import warnings
        warnings.warn("convert() without calibration data: ranges of layers without a quantizer come from 256 "
                      "standard-normal samples, a guess that saturates inputs off unit scale; pass calibration=X "
                      "(real inputs)", stacklevel=2)
        calibration = np.random.default_rng(0).standard_normal((256,) + tuple(shape))
    calibration = np.asarray(calibration, dtype=np.float64)
    if tuple(calibration.shape[1:]) != tuple(shape):
        raise ConversionError([f"calibration data has shape {calibration.shape}; expected (n, {', '.join(map(str, shape))})"])
    _, env = g0.predict(calibration, trace=True, mode="float")
    ranges = {k: float(np.max(np.abs(v))) if np.size(v) else 0.0 for k, v in env.items()}
    b = _Builder(layers, cfg, ranges, model.name)
    b.output_layers = outputs
    g = b.build()
    if b.problems:
        raise ConversionError(b.problems)
    g.meta = {"source": model.name, "calibration_samples": int(len(calibration)),
              "keras_layers": {L.name: L.cls for L in layers}}
    if guess:
        g.meta["calibration_source"] = "none: 256 standard-normal samples (ranges are a guess)"
    return g.verify()


def _output_layers(model) -> list[str] | None:
    """The model's output layers in order (a functional model may have several, not always last)."""
    cfg = model.get_config()
    outs = cfg.get("output_layers")
    if not outs:
        return None
    if isinstance(outs[0], str):  # a single output written as [name, node, tensor]
        outs = [outs]
    return [o[0] for o in outs]


def _check_overrides(cfg: ConvertConfig, roles: dict, layers) -> None:
    valid_layers = sorted({l for l, _ in roles})
    p = []
    for lname, rs in cfg.layers.items():
        if lname not in valid_layers:
            p.append(f"config layers: unknown layer {lname!r}; layers with configurable types: {', '.join(valid_layers)}")
            continue
        valid_roles = sorted({r for l, r in roles if l == lname})
        for r in rs:
            if r not in valid_roles:
                p.append(f"config layers[{lname!r}]: unknown role {r!r}; valid roles: {', '.join(valid_roles)}")
    if p:
        from ..errors import ConfigError
        raise ConfigError("\n".join(p))
