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
from ..fixed import FixedType, Overflow, Rounding, add_type, bits_for, quantize_float
from ..ir import (MAX_TENSOR_BITS, Add, Concat, Dense, Flatten, GlobalAvgPool, GlobalMaxPool, Graph, LayerNorm,
                  Lookup, MatMul, MergeHeads, Quantize, Relu, Requantize, Reshape, Scale, Softmax, SplitHeads,
                  AddConst, CausalFill, Embedding, MaskedAvgPool, MaskFill)
from ..requant import weight_type
from .config import ConvertConfig
from .handlers import Handler, Handlers

HANDLERS = Handlers("keras")  # one handler per Keras layer class (registered below)
ACTIVATIONS = ["linear", "relu", *tables.ACTIVATIONS, "softmax"]
PROVISIONAL = FixedType(16, 8, True, Rounding.RND, Overflow.SAT)
# ops whose output is one requantization of an exact value: a following quantizer folds into them
_FOLDABLE = (Dense, MatMul, Add, LayerNorm, GlobalAvgPool, Quantize, Requantize, Scale)


# -- QKeras quantizers --------------------------------------------------------------
def quantizer_type(q, where: str, problems: list) -> FixedType | None:
    """FixedType of a QKeras ``quantized_bits`` / ``quantized_relu`` (``integer`` excludes the sign).

    QKeras rounds with ``tf.round`` (ties to even): the type rounds ``RND_CONV``."""
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
        return FixedType(bits, bits - integer, False, Rounding.RND_CONV, Overflow.SAT)
    if getattr(q, "symmetric", 0):
        problems.append(f"{where}: symmetric quantized_bits is not supported; use symmetric=0")
        return None
    signed = bool(q.keep_negative)
    return FixedType(bits, bits - integer - (1 if signed else 0), signed, Rounding.RND_CONV, Overflow.SAT)


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
def _is_ref(v) -> bool:
    """A Keras tensor reference ``[layer name, node index, tensor index]`` in a call's arguments."""
    return (isinstance(v, (list, tuple)) and len(v) == 3 and isinstance(v[0], str)
            and isinstance(v[1], int) and isinstance(v[2], int))


class _Layer:
    """One layer call: the layer, its input tensors (Keras layer names) and call arguments.

    ``args`` lists the positional operands in order, each ``("tensor", name)`` or
    ``("const", value)`` (TF ops written with Python operators, ``x + y``, ``2.0 * x``)."""

    def __init__(self, layer, inbound, name=None):
        self.layer = layer
        self.name = name or layer.name
        self.cls = type(layer).__name__
        self.n_calls = len(inbound)
        self.args, self.kwargs = [], {}
        if inbound and inbound[0] and isinstance(inbound[0][0], str):  # a TF op: one flat call entry
            first, kw = inbound[0], dict(inbound[0][3]) if len(inbound[0]) > 3 else {}
            self.args.append(("const", first[2]) if first[0] == "_CONSTANT_VALUE" else ("tensor", first[0]))
            y = kw.pop("y", None) if "y" in kw else None
            if y is not None:
                self.args.append(("tensor", y[0]) if _is_ref(y) else ("const", y))
            kw.pop("name", None)
            self.kwargs = kw
        elif inbound:
            self.args = [("tensor", n[0]) for n in inbound[0]]
            self.kwargs = inbound[0][0][3] if len(inbound[0][0]) > 3 else {}
        self.inputs = [v for k, v in self.args if k == "tensor"]
        for k, v in self.kwargs.items():  # tensors passed by keyword (attention masks, ...)
            if _is_ref(v) and v[0] not in self.inputs:
                self.inputs.append(v[0])


def _walk(model) -> list[_Layer]:
    cfg = model.get_config()
    if "layers" not in cfg:
        raise ConversionError([f"model {model.name!r} ({type(model).__name__}): a subclassed Keras model is not "
                               f"supported; write it as a functional or Sequential model"])
    seq = [l for l in cfg["layers"]]
    if not any(l.get("inbound_nodes") for l in seq):  # Sequential: chain the layers
        out, prev = [], None
        for i, l in enumerate(model.layers):
            inbound = [[[prev, 0, 0, {}]]] if prev else []
            out.extend(_inline(_Layer(l, inbound)))
            prev = l.name
        if not isinstance(model.layers[0], _input_layer_cls()):
            shape = model.input_shape
            out.insert(0, _FakeInput(shape))
            out[1].inputs = ["input"]
            out[1].args = [("tensor", "input")]
        return out
    by_name = {l.name: l for l in model.layers}
    out = []
    for l in seq:
        out.extend(_inline(_Layer(by_name[l["name"]], l.get("inbound_nodes") or [])))
    return out


def _inline(L: _Layer) -> list:
    """A nested Sequential sub-model becomes its layers, chained, then an alias under its name."""
    if L.cls != "Sequential" or L.layer is None:
        return [L]
    out, prev = [], L.inputs[0] if L.inputs else None
    for sub in L.layer.layers:
        S = _Layer(sub, [[[prev, 0, 0, {}]]] if prev else [])
        out.extend(_inline(S))
        prev = sub.name
    alias = _Alias(L.name, prev)
    alias.n_calls = L.n_calls
    return out + [alias]


class _Alias:
    """The name of an inlined sub-model: its output is its last layer's."""

    cls = "_Alias"

    def __init__(self, name, src):
        self.name, self.inputs, self.args, self.kwargs, self.n_calls, self.layer = name, [src], [("tensor", src)], {}, 1, None


def _input_layer_cls():
    from tensorflow import keras
    return keras.layers.InputLayer


class _FakeInput:
    def __init__(self, shape):
        self.name, self.cls, self.inputs, self.kwargs, self.n_calls = "input", "InputLayer", [], {}, 0
        self.args = []
        self.shape = shape
        self.layer = None


_SHAPE_OPS = ("compat.v1.shape", "shape", "shape_v2")


def _mark_constants(layers) -> None:
    """A layer whose every input is a constant (or the static shape of a tensor) is a constant:
    ``tf.range(tf.shape(x)[1])``, an ``Embedding`` over it (a positional table).  The converter
    evaluates it once (``L.const``)."""
    const = set()
    for L in layers:
        fn = L.layer.get_config().get("function") if L.cls == "TFOpLambda" else None
        L.const = bool(fn in _SHAPE_OPS or (L.inputs and all(i in const for i in L.inputs)
                                             and L.cls in ("TFOpLambda", "SlicingOpLambda", "Embedding")))
        if L.const:
            const.add(L.name)


def _handler(L):
    return _CONST if getattr(L, "const", False) else HANDLERS.get(L.cls)


def _check(layers: list[_Layer]) -> list[str]:
    """Every problem of the model at once."""
    _mark_constants(layers)
    p = []
    for L in layers:
        where = f"layer {L.name!r} ({L.cls})"
        h = _handler(L)
        if h is None:
            mod = type(L.layer).__module__ if L.layer is not None else ""
            custom = not mod.startswith(("keras", "tensorflow", "tf_keras", "qkeras"))
            hint = ("; a subclassed (custom) layer cannot be converted: write it as functional layers" if custom
                    else "")
            p.append(f"{where}: layer type not supported{hint}; supported: "
                     f"{', '.join(c for c in HANDLERS.supported if not c.startswith('_'))}")
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


class GraphBuilder:
    """What every frontend's builder shares: the graph, the config, the calibration ranges and
    the activation type of each (layer, role) (a config override, else from the range)."""

    def __init__(self, cfg: ConvertConfig, ranges: dict | None, name: str):
        self.cfg = cfg
        self.ranges = ranges
        self.g = Graph(name)
        self.tensor_of = {}  # source layer / node name -> graph tensor
        self.roles = {}  # (layer, role) -> tensor
        self.problems = []

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


class _Builder(GraphBuilder):
    def __init__(self, layers, cfg: ConvertConfig, ranges: dict | None, name: str):
        super().__init__(cfg, ranges, name)
        self.layers = layers
        self.consumers = _consumers(layers)
        self.output_layers = None  # the model's output layers, in order (default: the last layer)

    def inp(self, L, i=0):
        return self.tensor_of[L.inputs[i]]

    def qtype(self, tensor):
        return self.g.type_of(tensor)

    # layers ------------------------------------------------------------------
    def build(self) -> Graph:
        for L in self.layers:
            _handler(L).build(self, L)
        self.g.outputs = [self.tensor_of[name] for name in (self.output_layers or [self.layers[-1].name])]
        return self.g

    # element-wise and layout helpers of the Transformers users write -----------------
    def _exact_or_act(self, L, role, name, t: FixedType):
        """``t`` (an exact type: nothing rounds) when it fits a tensor, else the activation type."""
        if role == "output" or t.width > MAX_TENSOR_BITS:
            return self.act_type(L.name, role, name)
        return t.with_(rounding=self.cfg.rounding, overflow=self.cfg.overflow)

    def add_all(self, L, ts: list) -> str:
        """Sum of two or more tensors: exact partial sums, one requantization at the end; constant
        operands (a positional table, ``x + 1.0``) are summed and added by one ``add_const``."""
        consts = [t.value for t in ts if isinstance(t, _Const)]
        ts = [t for t in ts if not isinstance(t, _Const)]
        if not ts:
            return _Const(sum(consts))
        if consts:
            if len(ts) == 1:
                return self.add_const(L, L.name, ts[0], sum(consts))
            ts = ts[:-1] + [self.add_const(L, f"{L.name}/const", ts[-1], sum(consts), exact=True)]
        acc = ts[0]
        for k, t in enumerate(ts[1:], start=1):
            last = k == len(ts) - 1
            name = L.name if last else f"{L.name}/sum{k}"
            role = "output" if last else f"sum{k}"
            ty = self._exact_or_act(L, role, name, add_type(self.qtype(acc), self.qtype(t)))
            acc = self.add(Add(name, (acc, t), name), ty)
        return acc

    def add_const(self, L, name, src: str, c, exact: bool = False) -> str:
        """``src + c`` for a constant ``c`` broadcast to ``src``'s shape (constant at ``bias_bits``)."""
        shape = tuple(self.g.tensors[src].shape)
        c = np.asarray(c, dtype=np.float64)
        try:
            c = np.broadcast_to(c.reshape(c.shape[1:]) if c.ndim > len(shape) and c.shape[0] == 1 else c, shape)
        except ValueError:
            self.problems.append(f"layer {L.name!r}: constant of shape {c.shape} does not broadcast to {shape}")
            c = np.zeros(shape)
        ct = self.cfg.layers.get(L.name, {}).get("const") or weight_type(c, self.cfg.bias_bits)
        self.roles[(L.name, "const")] = name
        t = (self._exact_or_act(L, "sum_const", name, add_type(self.qtype(src), ct)) if exact
             else self.act_type(L.name, "output", name))
        return self.add(AddConst(name, (src,), name, const=quantize_float(c, ct), const_type=ct), t)

    def subtract(self, L, a: str, b: str) -> str:
        if isinstance(b, _Const):
            return self.add_all(L, [a, _Const(-b.value)])
        if isinstance(a, _Const):
            return self.add_all(L, [self.scale(L, b, -1.0, name=f"{L.name}/neg"), a])
        bt = self.qtype(b)
        nb = self.add(Scale(f"{L.name}/neg", (b,), f"{L.name}/neg", scale=-1),
                      FixedType(bt.width + 1, bt.frac, True, self.cfg.rounding, self.cfg.overflow))
        return self.add(Add(L.name, (a, nb), L.name), self.act_type(L.name, "output", L.name))

    def scale(self, L, src: str, c: float, name: str | None = None) -> str:
        """``src * c`` for a constant ``c``: exact when ``c`` is a short binary fraction."""
        if isinstance(src, _Const):
            return _Const(src.value * c)
        if c == 0:
            self.problems.append(f"layer {L.name!r}: multiplying by 0 is not supported")
            c = 1.0
        frac = next((f for f in range(0, 17) if float(c) * 2 ** f == round(float(c) * 2 ** f)
                     and abs(round(float(c) * 2 ** f)) < 2 ** 16), None)
        if frac is None:
            frac = 15 - math.floor(math.log2(abs(c)))
        sc = int(round(float(c) * 2 ** frac))
        if name is not None:  # an inner negation (of a subtraction): exact with one more bit
            xt = self.qtype(src)
            return self.add(Scale(name, (src,), name, scale=-1),
                            FixedType(xt.width + 1, xt.frac, True, self.cfg.rounding, self.cfg.overflow))
        if sc == -1 and frac == 0:  # negation: exact with one more bit
            xt = self.qtype(src)
            t = FixedType(xt.width + 1, xt.frac, True, self.cfg.rounding, self.cfg.overflow)
            if L.name in self.cfg.layers or t.width > MAX_TENSOR_BITS:
                t = self.act_type(L.name, "output", L.name)
            else:
                self.roles[(L.name, "output")] = L.name
        else:
            t = self.act_type(L.name, "output", L.name)
        return self.add(Scale(L.name, (src,), L.name, scale=sc, scale_frac=frac), t)

    def concat(self, L, ts: list) -> str:
        """Last-axis concatenation of two or more tensors (exact: the widest type holds every part)."""
        acc = ts[0]
        for k, t in enumerate(ts[1:], start=1):
            a, b = self.qtype(acc), self.qtype(t)
            signed = a.signed or b.signed
            frac = max(a.frac, b.frac)
            ints = max(x.integer + (1 if signed and not x.signed else 0) for x in (a, b))
            exact = FixedType(max(ints + frac, 2), frac, signed)
            last = k == len(ts) - 1
            name = L.name if last else f"{L.name}/cat{k}"
            if exact.width <= MAX_TENSOR_BITS and L.name not in self.cfg.layers:
                ty = exact.with_(rounding=self.cfg.rounding, overflow=self.cfg.overflow)
                if last:
                    self.roles[(L.name, "output")] = name
            else:
                ty = self.act_type(L.name, "output" if last else f"cat{k}", name)
            acc = self.add(Concat(name, (acc, t), name), ty)
        return acc

    def key_mask(self, L, ref: str, want: int) -> str | None:
        """The ``[T]`` key mask behind a Keras mask tensor (``m[:, None, :]``, ``tf.expand_dims(m, 1)`` or
        ``m`` itself); a problem (naming the layer) when it is something else."""
        v = self.tensor_of.get(ref)
        t = v.tensor if isinstance(v, _MaskView) else v
        if not isinstance(t, str) or tuple(self.g.tensors[t].shape) != (want,):
            self.problems.append(f"layer {L.name!r}: the mask {ref!r} must be a padding mask of {want} entries "
                                 f"(a model input m of shape ({want},), passed as m[:, None, :] to "
                                 f"MultiHeadAttention or as mask=m to GlobalAveragePooling1D)")
            return None
        return t

    def mask_scores(self, L, scores: str, mask_ref, causal: bool) -> str:
        """Scores with masked entries at a value so far below every score that the softmax gives them 0."""
        h, tq, tk = self.g.tensors[scores].shape
        st = self.qtype(scores)
        ints = math.ceil(math.log2(abs(st.min_value) + 16)) + 1
        frac = min(st.frac, MAX_TENSOR_BITS - ints)
        t = FixedType(ints + frac, frac, True, self.cfg.rounding, Overflow.SAT)
        name = f"{L.name}/masked"
        if mask_ref is None:
            return self.add(CausalFill(name, (scores,), name), t)
        m = self.key_mask(L, mask_ref, tk)
        if m is None:
            return scores
        return self.add(MaskFill(name, (scores, m), name, causal=causal), t)

    def pool(self, L, src: str, kind: str, keepdims: bool) -> str:
        steps = self.g.tensors[src].shape[0]
        name = f"{L.name}/pool" if keepdims else L.name
        if kind == "max":  # the maximum is one of the values: the input type holds it exactly
            out = self.add(GlobalMaxPool(name, (src,), name), self.qtype(src))
        else:
            out = self.add(GlobalAvgPool(name, (src,), name, scale=round(2 ** 16 / steps), scale_frac=16),
                           self.act_type(L.name, "output", name))
        if keepdims:
            out = self.reshape(L.name, out, (1,) + tuple(self.g.tensors[out].shape))
        return out

    def reshape(self, name: str, src: str, shape) -> str:
        return self.add(Reshape(name, (src,), name, shape=tuple(int(s) for s in shape)), self.qtype(src))

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
        dtype = str(getattr(L.layer, "dtype", "float32") or "float32") if L.layer is not None else "float32"
        vocab = [C.layer.input_dim for C in bld.layers if C.cls == "Embedding" and L.name in C.inputs
                 and not getattr(C, "const", False)]
        if "int" in dtype or vocab:  # token ids / integer masks: whole numbers, saturating
            hi = max(vocab) - 1 if vocab else (1 << (bld.cfg.activation_bits - 1)) - 1
            t = FixedType(max(bits_for(0, hi), 1), 0, False, Rounding.RND_CONV, Overflow.SAT)
            bld.roles[(L.name, "output")] = L.name + "/q"
            if L.name in bld.cfg.layers and "output" in bld.cfg.layers[L.name]:
                t = bld.cfg.layers[L.name]["output"]
        else:
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
        if kw.get("return_attention_scores") not in (None, False):
            p.append(f"{where}: return_attention_scores is not supported")
        if kw.get("attention_mask") is not None and not _is_ref(kw.get("attention_mask")):
            p.append(f"{where}: attention_mask must be a model tensor (a padding mask input m as m[:, None, :])")
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
        mask = L.kwargs.get("attention_mask")
        causal = bool(L.kwargs.get("use_causal_mask", False))
        if mask is not None or causal:
            scores = bld.mask_scores(L, scores, mask[0] if mask is not None else None, causal)
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
        if len(L.inputs) < 2:
            return [f"{where}: Add needs at least two inputs, got {len(L.inputs)}"]
        return []

    def build(self, bld, L):
        bld.tensor_of[L.name] = bld.add_all(L, [bld.tensor_of[i] for i in L.inputs])


@HANDLERS.register
class _SubtractHandler(Handler):
    classes = ("Subtract",)

    def build(self, bld, L):
        bld.tensor_of[L.name] = bld.subtract(L, bld.inp(L, 0), bld.inp(L, 1))


@HANDLERS.register
class _ConcatenateHandler(Handler):
    classes = ("Concatenate",)

    def check(self, L, where):
        rank = len(L.layer.output_shape) - 1
        if L.layer.axis not in (-1, rank):
            return [f"{where}: concatenation on axis {L.layer.axis} not supported; only the last axis (-1)"]
        return []

    def build(self, bld, L):
        bld.tensor_of[L.name] = bld.concat(L, [bld.tensor_of[i] for i in L.inputs])


@HANDLERS.register
class _ReshapeHandler(Handler):
    classes = ("Reshape",)

    def check(self, L, where):
        shape = tuple(L.layer.output_shape[1:])
        if len(shape) not in (1, 2) or any(s is None for s in shape):
            return [f"{where}: reshape to {shape} not supported; a fixed 1-D or 2-D shape"]
        return []

    def build(self, bld, L):
        bld.tensor_of[L.name] = bld.reshape(L.name, bld.inp(L), tuple(L.layer.output_shape[1:]))


@HANDLERS.register
class _AliasHandler(Handler):
    classes = ("_Alias",)  # an inlined nested Sequential: its name stands for its last layer

    def build(self, bld, L):
        bld.tensor_of[L.name] = bld.inp(L)


_TF_OPS = {  # TFOpLambda function -> what it becomes
    "__operators__.add": "add", "math.add": "add", "math.subtract": "subtract", "math.multiply": "multiply",
    "math.truediv": "divide", "math.divide": "divide", "math.negative": "negative", "nn.relu": "relu",
    "math.reduce_mean": "mean", "math.reduce_max": "max", "concat": "concat",
    "expand_dims": "mask_view", "cast": "cast",
}


@HANDLERS.register
class _TFOpLambdaHandler(Handler):
    """TF ops on Keras tensors (Python operators and ``tf.math``): ``x + y``, ``x - y``, ``c * x``,
    ``x / c``, ``-x``, ``tf.nn.relu``, ``tf.reduce_mean/max(x, axis=1)``, ``tf.concat(.., axis=-1)``."""

    classes = ("TFOpLambda",)

    def check(self, L, where):
        fn = L.layer.get_config().get("function")
        what = _TF_OPS.get(fn)
        if what is None:
            return [f"{where}: TF op {fn!r} not supported; supported: {', '.join(sorted(_TF_OPS))}"]
        consts = [v for k, v in L.args if k == "const"]
        tensors = [v for k, v in L.args if k == "tensor"]
        if what in ("add", "subtract") and len(L.args) != 2:
            return [f"{where}: {fn} needs two operands"]
        if what in ("multiply", "divide"):
            if len(tensors) != 1 or len(consts) != 1 or np.ndim(consts[0]) != 0:
                return [f"{where}: {fn} is supported by a scalar constant only (x * c, x / c), "
                        f"got {len(tensors)} tensor(s) and constants {consts}"]
            if what == "divide" and (L.args[0][0] != "tensor" or float(consts[0]) == 0):
                return [f"{where}: only x / c with a non-zero constant c is supported"]
        if what in ("mean", "max"):
            axis = L.kwargs.get("axis")
            rank = len(L.layer.input_shape) - 1 if isinstance(L.layer.input_shape, tuple) else None
            if axis not in (1, [1], -2) or rank != 2:
                return [f"{where}: {fn} over axis {axis!r} not supported; only over the tokens (axis=1) of "
                        f"[batch, tokens, features]"]
        if what == "mask_view" and L.kwargs.get("axis") != 1:
            return [f"{where}: tf.expand_dims is supported on a padding mask with axis=1 only"]
        if what == "cast" and str(L.kwargs.get("dtype")) not in ("<dtype: 'bool'>", "<dtype: 'float32'>", "bool",
                                                                 "float32"):
            return [f"{where}: tf.cast to {L.kwargs.get('dtype')} not supported; to bool or float32 (masks)"]
        if what == "concat" and L.kwargs.get("axis") not in (-1, len(L.layer.output_shape) - 1):
            return [f"{where}: tf.concat on axis {L.kwargs.get('axis')!r} not supported; only the last axis"]
        return []

    def build(self, bld, L):
        what = _TF_OPS[L.layer.get_config()["function"]]
        ts = [bld.tensor_of[v] for k, v in L.args if k == "tensor"]
        consts = [v for k, v in L.args if k == "const"]
        if what in ("add", "subtract"):
            ops = [bld.tensor_of[v] if k == "tensor" else _Const(np.asarray(v, dtype=np.float64)) for k, v in L.args]
            out = bld.add_all(L, ops) if what == "add" else bld.subtract(L, ops[0], ops[1])
        elif what in ("multiply", "divide", "negative"):
            c = -1.0 if what == "negative" else float(consts[0])
            out = bld.scale(L, ts[0], 1.0 / c if what == "divide" else c)
        elif what == "relu":
            return bld.activation(L, ts[0], "relu")
        elif what == "mask_view":
            out = _MaskView(ts[0])
        elif what == "cast":  # masks: a cast keeps which entries are nonzero
            out = ts[0]
        elif what in ("mean", "max"):
            out = bld.pool(L, ts[0], what, bool(L.kwargs.get("keepdims", False)))
        else:  # concat: tf.concat([a, b, ...], axis=-1) lists its tensors as the first argument
            refs = L.kwargs.get("values") or []
            out = bld.concat(L, ts if len(ts) > 1 else [bld.tensor_of[r[0]] for r in refs if _is_ref(r)] or ts)
        bld.tensor_of[L.name] = out


@HANDLERS.register
class _FlattenHandler(Handler):
    classes = ("Flatten",)

    def build(self, bld, L):
        src = bld.inp(L)
        bld.tensor_of[L.name] = bld.add(Flatten(L.name, (src,), L.name), bld.qtype(src))


@HANDLERS.register
class _GlobalPooling1DHandler(Handler):
    classes = ("GlobalAveragePooling1D", "GlobalMaxPooling1D")

    def check(self, L, where):
        if getattr(L.layer, "data_format", "channels_last") != "channels_last":
            return [f"{where}: data_format={L.layer.data_format!r} not supported; only channels_last"]
        if L.cls == "GlobalMaxPooling1D" and L.kwargs.get("mask") is not None:
            return [f"{where}: a masked max pool is not supported; use GlobalAveragePooling1D()(x, mask=m)"]
        return []

    def build(self, bld, L):
        kind = "max" if L.cls == "GlobalMaxPooling1D" else "mean"
        mask = L.kwargs.get("mask")
        if mask is not None and kind == "mean":  # the mean over kept (mask != 0) tokens
            src = bld.inp(L)
            steps = bld.g.tensors[src].shape[0]
            m = bld.key_mask(L, mask[0], steps)
            if m is not None:
                name = f"{L.name}/pool" if getattr(L.layer, "keepdims", False) else L.name
                recip = [0] + [round(2 ** 16 / c) for c in range(1, steps + 1)]
                out = bld.add(MaskedAvgPool(name, (src, m), name, recip=recip, scale_frac=16),
                              bld.act_type(L.name, "output", name))
                if getattr(L.layer, "keepdims", False):
                    out = bld.reshape(L.name, out, (1,) + tuple(bld.g.tensors[out].shape))
                bld.tensor_of[L.name] = out
            return
        bld.tensor_of[L.name] = bld.pool(L, bld.inp(L), kind, bool(getattr(L.layer, "keepdims", False)))


@HANDLERS.register
class _DropoutHandler(Handler):
    classes = ("Dropout",)

    def build(self, bld, L):
        bld.tensor_of[L.name] = bld.inp(L)


class _MaskView:
    """A padding mask ``m [T]`` seen as ``[1, T]`` (``m[:, None, :]``): only masks consume it."""

    def __init__(self, tensor):
        self.tensor = tensor


def _is_mask_view_spec(spec) -> bool:
    full = {"start": None, "stop": None, "step": None}
    return isinstance(spec, (list, tuple)) and len(spec) == 3 and spec[0] == full and spec[1] is None and spec[2] == full


@HANDLERS.register
class _SlicingOpLambdaHandler(Handler):
    """``m[:, None, :]``: a padding mask made ready for MultiHeadAttention(attention_mask=...)."""

    classes = ("SlicingOpLambda",)

    def check(self, L, where):
        if not _is_mask_view_spec(L.kwargs.get("slice_spec")):
            return [f"{where}: slicing a tensor is not supported, except m[:, None, :] of a padding mask "
                    f"m given to MultiHeadAttention(attention_mask=...)"]
        return []

    def build(self, bld, L):
        bld.tensor_of[L.name] = _MaskView(bld.inp(L))


class _Const:
    """A value the converter computed (no model input reaches it): e.g. a positional table."""

    def __init__(self, value):
        self.value = np.asarray(value, dtype=np.float64)


class _ConstHandler(Handler):
    """Evaluates a constant layer (see :func:`_mark_constants`) once, with TensorFlow."""

    def build(self, bld, L):
        vals = {n: bld.tensor_of[n].value for n in L.inputs if isinstance(bld.tensor_of.get(n), _Const)}
        try:
            if L.cls == "Embedding":
                ids = np.clip(vals[L.inputs[0]].astype(np.int64), 0, L.layer.input_dim - 1)
                v = np.take(L.layer.embeddings.numpy(), ids, axis=0)
            elif L.layer.get_config().get("function") in _SHAPE_OPS if L.cls == "TFOpLambda" else False:
                shape = L.layer.input_shape if not isinstance(L.layer.input_shape, list) else L.layer.input_shape[0]
                v = np.array([1 if s is None else int(s) for s in shape])
            else:
                args = [vals[v] if k == "tensor" else v for k, v in L.args]
                kw = {k: (vals[v[0]] if _is_ref(v) else v) for k, v in L.kwargs.items()}
                v = L.layer(*args, **kw)
                v = np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float64)
        except Exception as e:  # noqa: BLE001 - TensorFlow raises many kinds; the user reads which layer
            bld.problems.append(f"layer {L.name!r} ({L.cls}): cannot evaluate this constant ({type(e).__name__}: {e})")
            v = np.zeros(1)
        bld.tensor_of[L.name] = _Const(v)


_CONST = _ConstHandler()


@HANDLERS.register
class _EmbeddingHandler(Handler):
    """Token ids (an integer model input) -> table rows; the table keeps ``weight_bits``."""

    classes = ("Embedding",)

    def check(self, L, where):
        p = []
        if getattr(L.layer, "mask_zero", False):
            p.append(f"{where}: mask_zero=True (an implicit mask) is not supported; pass the padding mask as a "
                     f"second model input and give it to MultiHeadAttention(attention_mask=...)")
        shape = L.layer.input_shape
        if not isinstance(shape, tuple) or len(shape) != 2 or shape[1] is None:
            p.append(f"{where}: ids must be a fixed-length sequence [batch, tokens], got {shape}")
        return p

    def build(self, bld, L):
        src = bld.inp(L)
        table = L.layer.embeddings.numpy()
        ov = bld.cfg.layers.get(L.name, {})
        tt = ov.get("table") or weight_type(table, bld.cfg.weight_bits)
        bld.roles[(L.name, "table")] = L.name
        out_t = ov.get("output") or tt.with_(rounding=bld.cfg.rounding, overflow=bld.cfg.overflow)  # exact
        bld.roles[(L.name, "output")] = L.name
        bld.tensor_of[L.name] = bld.add(Embedding(L.name, (src,), L.name, table=quantize_float(table, tt),
                                                  table_type=tt), out_t)


SUPPORTED = HANDLERS.supported  # Keras layer classes the converter takes
# TF ops (TFOpLambda / SlicingOpLambda functions) a model file may name: the converted ones and the
# constants it evaluates (the safe loader reads this list before Keras deserializes anything)
SAFE_TF_OPS = frozenset(_TF_OPS) | frozenset(_SHAPE_OPS) | {"range", "__operators__.getitem"}


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
        calibration = _default_calibration(g0)
    if len(g0.inputs) > 1:  # a list (one array per input, in order) or a dict by input name
        from ..errors import FabformerError
        from ..vectors import as_batches
        try:
            calibration = as_batches(g0, calibration)
        except FabformerError as e:
            raise ConversionError([f"calibration data: {e}"]) from None
        n_cal = int(calibration[0].shape[0])
    else:
        if isinstance(calibration, dict) and list(calibration) == list(g0.inputs):
            calibration = calibration[g0.inputs[0]]
        calibration = np.asarray(calibration, dtype=np.float64)
        if tuple(calibration.shape[1:]) != tuple(shape):
            raise ConversionError([f"calibration data has shape {calibration.shape}; expected (n, {', '.join(map(str, shape))})"])
        n_cal = int(len(calibration))
    _, env = g0.predict(calibration, trace=True, mode="float")
    ranges = {k: float(np.max(np.abs(v))) if np.size(v) else 0.0 for k, v in env.items()}
    b = _Builder(layers, cfg, ranges, model.name)
    b.output_layers = outputs
    g = b.build()
    if b.problems:
        raise ConversionError(b.problems)
    g.meta = {"source": model.name, "calibration_samples": n_cal,
              "keras_layers": {L.name: L.cls for L in layers}}
    if guess:
        g.meta["calibration_source"] = "none: 256 standard-normal samples (ranges are a guess)"
    return g.verify()


def _default_calibration(g0):
    """256 standard-normal samples per float input; integer inputs (ids, masks) get whole numbers over
    their type's range."""
    rng = np.random.default_rng(0)
    out = []
    for name in g0.inputs:
        shape = (256,) + tuple(g0.tensors[name].shape)
        q = [n for n in g0.nodes if isinstance(n, Quantize) and n.inputs[0] == name]
        t = g0.type_of(q[0].output)
        out.append(rng.integers(t.min_int, t.max_int + 1, shape).astype(np.float64) if t.frac == 0 and not t.signed
                   else rng.standard_normal(shape))
    return out[0] if len(out) == 1 else out


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
