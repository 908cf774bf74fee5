"""Golden equals QKeras bit for bit on QKeras' own quantizers (ties round to even, ``RND_CONV``).

Random Dense + quantized_bits / quantized_relu models at 4, 6 and 8 bits (alpha=1), and single
quantizers on inputs that hold every rounding tie of their grid.  Inputs are float32 values
(Keras computes in float32); every comparison is on integer mantissas, with no tolerance.
"""
import numpy as np
import pytest

import fabformer

qkeras = pytest.importorskip("qkeras")


def _keras():
    from tensorflow import keras
    return keras


def _mantissas(y, frac):
    m = np.asarray(y, dtype=np.float64) * 2.0 ** frac
    assert np.all(m == np.round(m)), "QKeras output is not on the quantizer's grid"
    return m.astype(np.int64)


def _dense_model(bits, relu, seed, n_in=16, n_out=16):
    keras = _keras()
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu
    keras.utils.set_random_seed(seed)
    x = keras.Input((n_in,), name="x")
    h = QActivation(quantized_bits(bits, 2, alpha=1), name="xq")(x)
    h = QDense(n_out, kernel_quantizer=quantized_bits(bits, 0, alpha=1),
               bias_quantizer=quantized_bits(bits, 0, alpha=1),
               kernel_initializer=keras.initializers.RandomUniform(-1, 1),
               bias_initializer=keras.initializers.RandomUniform(-1, 1), name="dense")(h)
    act = quantized_relu(bits, 1) if relu else quantized_bits(bits, 1, alpha=1)
    y = QActivation(act, name="act")(h)
    return keras.Model(x, y, name=f"qdense_{bits}")


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("relu", [False, True])
def test_dense_matches_qkeras(bits, relu):
    m = _dense_model(bits, relu, seed=bits)
    rng = np.random.default_rng(bits)
    x = rng.uniform(-4, 4, (100, 16)).astype(np.float32)  # 1,600 outputs
    g = fabformer.convert(m, calibration=x)
    out_t = g.type_of(g.outputs[0])
    assert out_t.rounding.value == "RND_CONV"
    want = _mantissas(m.predict(x, verbose=0), out_t.frac)
    _, env = g.predict(x, trace=True)
    got = np.asarray(env[g.outputs[0]])
    assert want.size == 1600
    bad = int(np.sum(got != want))
    assert bad == 0, f"{bad} of {want.size} outputs differ from QKeras"
    # the test is sensitive: rounding ties up instead of to even changes some outputs
    assert _ties_up_differ(g, x, want)


def _ties_up_differ(g, x, want):
    """The same graph with every RND_CONV type rounding ties up differs from QKeras somewhere."""
    d = g.edit()
    for name, t in list(d.tensors.items()):
        if t.type is not None and t.type.rounding.value == "RND_CONV":
            d.retype(name, t.type.with_(rounding="RND"))
    d = d.verify()
    _, env = d.predict(x, trace=True)
    return bool(np.any(np.asarray(env[d.outputs[0]]) != want))


QUANTIZERS = [("quantized_bits", dict(bits=4, integer=0)), ("quantized_bits", dict(bits=6, integer=0)),
              ("quantized_bits", dict(bits=8, integer=0)), ("quantized_bits", dict(bits=8, integer=3)),
              ("quantized_bits", dict(bits=6, integer=2, keep_negative=False)),
              ("quantized_bits", dict(bits=4, integer=2)), ("quantized_bits", dict(bits=10, integer=5)),
              ("quantized_relu", dict(bits=4, integer=0)), ("quantized_relu", dict(bits=6, integer=2)),
              ("quantized_relu", dict(bits=8, integer=0)), ("quantized_relu", dict(bits=8, integer=4))]


@pytest.mark.parametrize("name, kw", QUANTIZERS, ids=[f"{n}_{kw['bits']}_{kw['integer']}" for n, kw in QUANTIZERS])
def test_quantizer_matches_qkeras(name, kw):
    keras = _keras()
    import qkeras as qk
    q = getattr(qk, name)(**kw, **({"alpha": 1} if name == "quantized_bits" else {}))
    x_in = keras.Input((64,), name="x")
    m = keras.Model(x_in, qk.QActivation(q, name="q")(x_in), name="quantizer")
    g = fabformer.convert(m)
    t = g.type_of(g.outputs[0])
    # every tie (k + 1/2 LSBs) over and beyond the range, plus random values
    lsb = 2.0 ** -t.frac
    ties = (np.arange(-(2 ** (t.width + 1)), 2 ** (t.width + 1)) + 0.5) * lsb
    rnd = np.random.default_rng(kw["bits"]).uniform(-2 * 2 ** kw["integer"], 2 * 2 ** kw["integer"], 4096)
    x = np.concatenate([ties, rnd]).astype(np.float32)
    x = np.resize(x, (-(-x.size // 64), 64)).astype(np.float32)
    want = _mantissas(m.predict(x, verbose=0), t.frac)
    _, env = g.predict(x, trace=True)
    got = np.asarray(env[g.outputs[0]])
    bad = int(np.sum(got != want))
    assert bad == 0, f"{name}({kw}): {bad} of {want.size} values differ from QKeras"
    assert _ties_up_differ(g, x, want)
