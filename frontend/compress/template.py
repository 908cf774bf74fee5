"""fabformer's encoder template, the shape every student takes.

    input -> Dense(d_model) -> MultiHeadAttention(heads, key_dim) -> Add -> LayerNorm
          -> Dense(ff, ReLU) -> Dense(d_model) -> Add -> LayerNorm -> Flatten -> Dense(classes)

Float (``bits=None``) or QKeras (``bits=b``): QDense with ``quantized_bits(b, 0)``
kernels, ``max(b, 8)``-bit biases, quantized input / embedding / feed-forward
activations.  Attention and layer norm stay Keras float layers in both; the
converter gives them fixed-point types (weights ``weight_bits``, activations by
range analysis).  ``ranks={"ff1": r}`` replaces a Dense by two (``ff1_lr``:
rank r, no bias; then ``ff1``), for low-rank factorization.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ...errors import FabformerError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: the Dense layers of the template (the ones pruned, quantized and factorized)
DENSE_LAYERS = ("embed", "ff1", "ff2", "head")


@dataclass(frozen=True)
class StudentSpec:
    d_model: int = 16
    heads: int = 2
    ff: int = 32
    key_dim: int | None = None  # default d_model // heads

    def __post_init__(self):
        for k in ("d_model", "heads", "ff"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise FabformerError(f"student {k} must be a positive integer, not {v!r}")
        if self.key_dim is None and self.d_model % self.heads:
            raise FabformerError(f"student d_model={self.d_model} is not divisible by heads={self.heads}; "
                                 f"choose heads dividing d_model or give key_dim")
        if self.key_dim is not None and (not isinstance(self.key_dim, int) or self.key_dim < 1):
            raise FabformerError(f"student key_dim must be a positive integer, not {self.key_dim!r}")

    @property
    def kd(self) -> int:
        return self.key_dim or self.d_model // self.heads

    def __str__(self):
        return f"d_model={self.d_model},heads={self.heads},ff={self.ff}" + (
            f",key_dim={self.key_dim}" if self.key_dim else "")


def act_integer(bits: int, relu: bool = False) -> int:
    """Integer bits of the activation quantizers: 3 at 8 bits, fewer when narrower."""
    return max(0, min(3, bits - (2 if relu else 3)))


def build_student(spec: StudentSpec, input_shape=(8, 8), classes: int = 10, bits: int | None = None,
                  ranks: dict | None = None, name: str | None = None):
    from tensorflow import keras
    L = keras.layers
    ranks = ranks or {}
    quant = bits is not None
    if quant:
        from qkeras import QActivation, QDense, quantized_bits, quantized_relu
        kq = lambda: quantized_bits(bits, 0, alpha=1)  # noqa: E731
        bq = lambda: quantized_bits(max(bits, 8), 2, alpha=1)  # noqa: E731

    def dense(x, n, nm, relu=False):
        r = ranks.get(nm)
        if r:
            x = (QDense(r, kernel_quantizer=kq(), use_bias=False, name=nm + "_lr") if quant
                 else L.Dense(r, use_bias=False, name=nm + "_lr"))(x)
        if not quant:
            return L.Dense(n, activation="relu" if relu else None, name=nm)(x)
        act = quantized_relu(bits, act_integer(bits, True)) if relu else None
        return QDense(n, kernel_quantizer=kq(), bias_quantizer=bq(), activation=act, name=nm)(x)

    def qact(x, nm, integer=None):
        if not quant:
            return x
        return QActivation(quantized_bits(bits, act_integer(bits) if integer is None else integer, alpha=1),
                           name=nm)(x)

    inp = keras.Input(tuple(input_shape), name="pixels")
    x = qact(inp, "input_q", 0)
    h = qact(dense(x, spec.d_model, "embed"), "embed_q")
    a = L.MultiHeadAttention(spec.heads, spec.kd, name="mha")(h, h)
    h = L.LayerNormalization(name="ln1")(L.Add(name="res1")([h, a]))
    f = dense(h, spec.ff, "ff1", relu=True)
    f = qact(dense(f, spec.d_model, "ff2"), "ff2_q")
    h = L.LayerNormalization(name="ln2")(L.Add(name="res2")([h, f]))
    out = dense(L.Flatten(name="flatten")(h), classes, "head")
    return keras.Model(inp, out, name=name or ("student_q%d" % bits if quant else "student"))


def copy_weights(src, dst) -> None:
    """Copy weights layer by layer (by name) between float and QKeras twins."""
    for lay in dst.layers:
        if not lay.weights:
            continue
        lay.set_weights(src.get_layer(lay.name).get_weights())
