"""The Transformers users write: Python operators and TF ops on Keras tensors, nested Sequential
sub-models, Add of several inputs, Concatenate, GlobalMaxPooling1D, keepdims, Reshape."""
import numpy as np
import pytest

import fabformer
from fabformer.errors import ConversionError


def _keras():
    from tensorflow import keras
    return keras


def _operators_model():
    import tensorflow as tf
    keras = _keras()
    keras.utils.set_random_seed(1)
    x = keras.Input((6, 8), name="x")
    d = keras.layers.Dense(8, name="d")(x)
    y = x + d
    y = y - d * 0.5
    y = -y / 4.0
    y = 2.0 * y
    z = keras.layers.Add(name="add3")([x, d, y])
    c = keras.layers.Concatenate(name="cat")([x, z])
    inner = keras.Sequential([keras.layers.Dense(8, activation="relu", name="in1"),
                              keras.layers.Dense(8, name="in2")], name="inner")
    c = tf.nn.relu(inner(c))
    p1 = keras.layers.GlobalMaxPooling1D(name="gmp")(c)
    p2 = keras.layers.Flatten(name="flat")(keras.layers.GlobalAveragePooling1D(keepdims=True, name="gap")(c))
    p3 = tf.reduce_mean(c, axis=1)
    o = keras.layers.Concatenate(name="cat2")([p1, p2, p3])
    o = keras.layers.Reshape((3, 8), name="resh")(o)
    o = keras.layers.Flatten(name="flat2")(o)
    return keras.Model(x, keras.layers.Dense(4, name="head")(o), name="operators")


def test_python_operators_tf_ops_and_nested_sequential():
    m = _operators_model()
    x = np.random.default_rng(0).normal(size=(500, 6, 8))
    g = fabformer.convert(m, calibration=x)
    kinds = [n.kind for n in g.nodes]
    for k in ("scale", "concat", "global_max_pool", "reshape", "global_avg_pool"):
        assert k in kinds, k
    assert kinds.count("add") == 4  # x + d, x - d, and the 3-input Add as two exact partial sums
    assert {"in1", "in2"} <= {n.name.split("/")[0] for n in g.nodes}  # the sub-model is inlined
    k, y = m.predict(x, verbose=0), g.predict(x)
    assert y.shape == k.shape
    assert np.abs(k - y).max() < 0.03 * np.abs(k).max()
    assert np.mean(k.argmax(1) == y.argmax(1)) >= 0.99


def test_exact_parts_are_exact():
    """Max pooling, concatenation and negation of quantized values lose nothing: golden == QKeras."""
    import tensorflow as tf
    from qkeras import QActivation, quantized_bits
    keras = _keras()
    x = keras.Input((5, 4), name="x")
    a = QActivation(quantized_bits(6, 2, alpha=1), name="qa")(x)
    b = QActivation(quantized_bits(8, 1, alpha=1), name="qb")(x)
    c = keras.layers.Concatenate(name="cat")([a, -b])
    y = keras.layers.GlobalMaxPooling1D(keepdims=True, name="gmp")(c)
    m = keras.Model(x, y)
    # on a 2**-10 grid: the shared input's quantize type (16 bits) holds it exactly, so each quantizer
    # rounds once, as QKeras does (a value rounded twice could become a tie)
    xs = (np.round(np.random.default_rng(2).uniform(-6, 6, (300, 5, 4)) * 1024) / 1024).astype(np.float32)
    g = fabformer.convert(m, calibration=xs)
    assert g.predict(xs).shape == (300, 1, 8)
    np.testing.assert_array_equal(g.predict(xs), m.predict(xs, verbose=0))


def test_subclassed_layer_is_refused_with_the_hint():
    keras = _keras()

    class MyBlock(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x = keras.Input((4, 8), name="x")
    m = keras.Model(x, keras.layers.Dense(3)(MyBlock(name="mine")(x)))
    with pytest.raises(ConversionError, match=r"layer 'mine' \(MyBlock\): layer type not supported; a subclassed "
                                              r"\(custom\) layer cannot be converted: write it as functional layers"):
        fabformer.convert(m)


def test_unsupported_tf_ops_are_named():
    import tensorflow as tf
    keras = _keras()
    x = keras.Input((4, 8), name="x")
    y = tf.math.exp(x) + 1.0
    y = keras.layers.Dense(3)(x * x)
    m = keras.Model(x, y)
    with pytest.raises(ConversionError) as e:
        fabformer.convert(m)
    msg = str(e.value)
    assert "TF op 'math.multiply'" not in msg and "math.multiply is supported by a scalar constant only" in msg
    m2 = keras.Model(x, keras.layers.Dense(3)(tf.math.exp(x) + 1.0))
    with pytest.raises(ConversionError) as e:
        fabformer.convert(m2)
    msg = str(e.value)
    assert "TF op 'math.exp' not supported; supported: " in msg and "(1 problem)" in msg  # x + 1.0 converts


def _text_model(maxlen=10, vocab=50, d=16):
    import tensorflow as tf
    keras = _keras()
    keras.utils.set_random_seed(0)
    ids = keras.Input((maxlen,), dtype="int32", name="ids")
    tok = keras.layers.Embedding(vocab, d, name="tok", embeddings_initializer="uniform")(ids)
    # a positional table evaluated at model build (a constant) and one over tf.range(tf.shape(ids)[-1])
    pos = keras.layers.Embedding(maxlen, d, name="pos", embeddings_initializer="uniform")(tf.range(0, maxlen))
    x = tok + pos
    x = x + keras.layers.Embedding(maxlen, d, name="pos2", embeddings_initializer="uniform")(
        tf.range(tf.shape(ids)[-1]))
    a = keras.layers.MultiHeadAttention(2, 8, name="mha")(x, x)
    x = keras.layers.LayerNormalization(name="ln")(x + a)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(ids, keras.layers.Dense(2, name="head")(x), name="text")


def test_token_and_position_embeddings():
    m = _text_model()
    x = np.random.default_rng(0).integers(0, 50, (300, 10))
    g = fabformer.convert(m, calibration=x)
    kinds = [n.kind for n in g.nodes]
    assert kinds[:4] == ["quantize", "embedding", "add_const", "add_const"]
    assert str(g.type_of("ids/q")) == "ufixed<6,6,RND_CONV,SAT>"  # ids 0..49
    k, y = m.predict(x, verbose=0), g.predict(x)
    assert np.abs(k - y).max() < 0.02 * np.abs(k).max()
    assert np.mean(k.argmax(1) == y.argmax(1)) >= 0.99
    # ids beyond the vocabulary take the nearest row (Keras would fail); never a crash
    far = g.predict(np.full((1, 10), 1000.0))
    np.testing.assert_array_equal(far, g.predict(np.full((1, 10), 49.0)))


def test_embedding_mask_zero_is_refused_with_the_way_out():
    keras = _keras()
    ids = keras.Input((6,), dtype="int32", name="ids")
    e = keras.layers.Embedding(20, 4, mask_zero=True, name="emb")(ids)
    m = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(e)))
    with pytest.raises(ConversionError, match=r"mask_zero=True \(an implicit mask\) is not supported; pass the "
                                              r"padding mask as a second model input"):
        fabformer.convert(m)


def test_attention_mask_from_a_second_input_and_masked_mean():
    keras = _keras()
    T, F, D = 6, 3, 8
    keras.utils.set_random_seed(3)
    x_in, m_in = keras.Input((T, F), name="constituents"), keras.Input((T,), name="mask")
    h = keras.layers.Dense(D, name="embed")(x_in)
    a = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h, attention_mask=m_in[:, None, :])
    h = keras.layers.LayerNormalization(name="ln")(h + a)
    p = keras.layers.GlobalAveragePooling1D(name="pool")(h, mask=m_in)
    m = keras.Model([x_in, m_in], keras.layers.Dense(3, name="head")(p))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, T, F))
    mask = (rng.random((300, T)) < 0.6).astype("float32")
    mask[:, 0] = 1  # Keras divides by the mask's sum: keep one token (fabformer gives 0 for an empty mean)
    g = fabformer.convert(m, calibration=[x, mask])
    assert [n.kind for n in g.nodes if n.kind in ("mask_fill", "masked_avg_pool")] == ["mask_fill", "masked_avg_pool"]
    k, y = m.predict([x, mask], verbose=0), g.predict({"constituents": x, "mask": mask})
    assert np.abs(k - y).max() < 0.03 * np.abs(k).max()
    assert np.mean(k.argmax(1) == y.argmax(1)) >= 0.99
    # padded constituents do not matter: changing them leaves the output bit for bit
    x2 = np.where(mask[..., None] == 0, rng.normal(size=x.shape) * 3, x)
    np.testing.assert_array_equal(g.predict([x2, mask]), y)


def test_causal_mask():
    keras = _keras()
    keras.utils.set_random_seed(4)
    x_in = keras.Input((6, 3), name="seq")
    h = keras.layers.Dense(8, name="embed")(x_in)
    a = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h, use_causal_mask=True)
    h = keras.layers.LayerNormalization(name="ln")(h + a)
    m = keras.Model(x_in, keras.layers.Dense(3, name="head")(h))
    x = np.random.default_rng(1).normal(size=(300, 6, 3))
    g = fabformer.convert(m, calibration=x)
    assert "causal_fill" in [n.kind for n in g.nodes]
    k, y = m.predict(x, verbose=0), g.predict(x)
    assert np.abs(k - y).max() < 0.03 * np.abs(k).max()
    # token t's output depends on tokens <= t only: changing the last token changes only the last row
    x2 = x.copy()
    x2[:, -1] += 1.0
    y2 = g.predict(x2)
    np.testing.assert_array_equal(y2[:, :-1], y[:, :-1])
    assert np.any(y2[:, -1] != y[:, -1])
