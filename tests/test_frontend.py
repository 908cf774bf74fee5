"""Keras / QKeras import: the example's accuracy, determinism, every supported layer, every bad input."""
import numpy as np
import pytest

import fabformer
from fabformer.errors import ConfigError, ConversionError
from fabformer.frontend import ConvertConfig


def test_example_golden_matches_qkeras(q8_model, example_graph, digits):
    k = q8_model.predict(digits.x_test, verbose=0)
    y = example_graph.predict(digits.x_test)
    assert len(digits.y_test) == 450
    acc_k = np.mean(k.argmax(1) == digits.y_test)
    acc_g = np.mean(y.argmax(1) == digits.y_test)
    assert abs(acc_g - acc_k) <= 0.005
    assert np.mean(k.argmax(1) == y.argmax(1)) >= 0.995


def test_example_uses_the_quantizers_precision(example_graph):
    g = example_graph
    assert str(g.type_of("pixels/q")) == "fixed<8,1,RND,SAT>"  # quantized_bits(8, 0): integer excludes sign
    assert str(g.type_of("embed")) == "fixed<8,4,RND,SAT>"  # folded QActivation quantized_bits(8, 3)
    assert str(g.type_of("ff1")) == "ufixed<8,3,RND,SAT>"  # quantized_relu(8, 3)
    d = g.node("embed")
    assert d.weight_type.width == 8 and d.weight_type.frac == 7


def test_convert_twice_gives_identical_files(q8_model, digits, tmp_path):
    a = fabformer.convert(q8_model, calibration=digits.x_train).save(tmp_path / "a.json")
    b = fabformer.convert(q8_model, calibration=digits.x_train).save(tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    assert str(tmp_path) not in a.read_text()


def _keras():
    from tensorflow import keras
    return keras


def test_float_model_with_every_supported_layer_converts():
    keras = _keras()
    L = keras.layers
    keras.utils.set_random_seed(1)
    inp = keras.Input((6, 4))
    h = L.Dense(8, activation="gelu")(inp)
    h = L.Dropout(0.1)(h)
    a = L.MultiHeadAttention(2, 4)(h, h)
    h = L.LayerNormalization()(L.Add()([h, a]))
    h = L.ReLU()(L.Dense(8)(h))
    h = L.Activation("relu")(h)
    p = L.GlobalAveragePooling1D()(h)
    f = L.Dense(3)(L.Flatten()(h))
    out = L.Activation("softmax")(L.Add()([L.Dense(3)(p), f]))
    m = keras.Model(inp, out)
    x = np.random.default_rng(0).uniform(-1, 1, (300, 6, 4))
    g = fabformer.convert(m, calibration=x)
    kinds = {n.kind for n in g.nodes}
    assert kinds >= {"quantize", "dense", "lookup", "split_heads", "matmul", "softmax", "merge_heads", "add",
                     "layernorm", "relu", "global_avg_pool", "flatten"}
    k = m.predict(x, verbose=0)
    y = g.predict(x)
    assert np.mean(k.argmax(1) == y.argmax(1)) >= 0.9
    assert np.abs(k - y).max() < 0.1


def test_sequential_model_converts():
    keras = _keras()
    m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    g = fabformer.convert(m, calibration=np.random.default_rng(0).uniform(-1, 1, (100, 5)))
    assert [n.kind for n in g.nodes] == ["quantize", "dense", "relu", "dense"]


def test_every_unsupported_layer_is_reported_at_once():
    keras = _keras()
    L = keras.layers
    inp = keras.Input((8, 8))
    h = L.Conv1D(4, 3, name="conv")(inp)
    h = L.LSTM(4, return_sequences=True, name="lstm")(h)
    h = L.Dense(4, activation="selu", name="dense_selu")(h)
    m = keras.Model(inp, L.Flatten()(h))
    with pytest.raises(ConversionError) as e:
        fabformer.convert(m)
    msg = str(e.value)
    assert "3 problems" in msg
    assert "layer 'conv' (Conv1D): layer type not supported; supported: InputLayer, Dense" in msg
    assert "layer 'lstm' (LSTM): layer type not supported" in msg
    assert ("layer 'dense_selu' (Dense): activation 'selu' not supported; supported: linear, relu, gelu, sigmoid, "
            "tanh, softmax") in msg


@pytest.mark.parametrize("act", ["gelu", "sigmoid", "tanh"])
def test_table_activations_match_keras(act):
    keras = _keras()
    L = keras.layers
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8))
    h = L.Dense(16, activation=act, name="hidden")(inp)
    m = keras.Model(inp, L.Dense(4, name="out")(L.Flatten()(h)))
    x = np.random.default_rng(0).uniform(-2, 2, (400, 8, 8))
    g = fabformer.convert(m, calibration=x)
    assert any(n.kind == "lookup" and n.table.function == act for n in g.nodes)
    k = m.predict(x, verbose=0)
    assert np.mean(np.argmax(g.predict(x), -1) == np.argmax(k, -1)) >= 0.97
    assert np.max(np.abs(g.predict(x, mode="float") - k)) < 0.05  # only the 8-bit weights differ


def test_attention_masks_and_cross_attention_are_refused():
    keras = _keras()
    L = keras.layers
    inp = keras.Input((4, 4))
    other = L.Dense(4, name="other")(inp)
    a = L.MultiHeadAttention(1, 4, name="cross")(inp, other)
    b = L.MultiHeadAttention(1, 4, name="causal")(inp, inp, use_causal_mask=True)
    m = keras.Model(inp, L.Add()([a, b]))
    with pytest.raises(ConversionError) as e:
        fabformer.convert(m)
    msg = str(e.value)
    assert "layer 'cross' (MultiHeadAttention): cross-attention (query 'input_" in msg
    assert "layer 'causal' (MultiHeadAttention): use_causal_mask is not supported" in msg


def test_unsupported_quantizer_is_named():
    from qkeras import QDense, quantized_bits, quantized_po2
    keras = _keras()
    inp = keras.Input((4,))
    m = keras.Model(inp, QDense(2, kernel_quantizer=quantized_po2(4), bias_quantizer=quantized_bits(8, 0, alpha=1),
                                name="qd")(inp))
    with pytest.raises(ConversionError, match=r"layer 'qd' \(QDense\) kernel: quantizer quantized_po2.* not supported"):
        fabformer.convert(m)
    m2 = keras.Model(inp, QDense(2, kernel_quantizer=quantized_bits(8, 0, alpha="auto_po2"), name="qa")(inp))
    with pytest.raises(ConversionError, match=r"uses alpha='auto_po2'; only alpha=1"):
        fabformer.convert(m2)


def test_config_rejects_unknown_keys_layers_and_roles(q8_model, digits):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) 'activation_width'; valid keys: activation_bits"):
        ConvertConfig.from_dict({"activation_width": 8})
    with pytest.raises(ConfigError, match=r"config softmax_bits must be an integer in 2..32, not 1"):
        ConvertConfig(softmax_bits=1)
    with pytest.raises(ConfigError, match=r"config layers\['ln1'\]\['output'\]: cannot parse fixed-point type"):
        ConvertConfig(layers={"ln1": {"output": "float32"}})
    with pytest.raises(ConfigError, match=r"unknown layer 'ln3'; layers with configurable types: .*ln1, ln2"):
        fabformer.convert(q8_model, config={"layers": {"ln3": {"output": "fixed<16,4>"}}}, calibration=digits.x_train[:50])
    with pytest.raises(ConfigError, match=r"config layers\['mha'\]: unknown role 'prob'; valid roles: .*probs"):
        fabformer.convert(q8_model, config={"layers": {"mha": {"prob": "ufixed<16,1>"}}}, calibration=digits.x_train[:50])


def test_config_override_and_defaults_are_accurate(q8_model, digits):
    g = fabformer.convert(q8_model, config={"layers": {"ln1": {"output": "fixed<12,4,RND,SAT>"}}},
                          calibration=digits.x_train)
    assert str(g.type_of("ln1")) == "fixed<12,4,RND,SAT>"
    y = g.predict(digits.x_test)
    assert np.mean(y.argmax(1) == digits.y_test) > 0.95
    # a narrow default still gives a usable model: the integer bits come from range analysis
    g8 = fabformer.convert(q8_model, config={"activation_bits": 10}, calibration=digits.x_train)
    assert np.mean(g8.predict(digits.x_test).argmax(1) == digits.y_test) > 0.9
