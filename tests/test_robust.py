"""Any user's model and data through every command; never silently wrong, never destructive."""
from __future__ import annotations

import copy
import json
import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fabformer  # noqa: E402
from fabformer import FabformerError, ir  # noqa: E402
from fabformer.apps import testing  # noqa: E402
from fabformer.apps.cli import main  # noqa: E402


def _keras():
    from tensorflow import keras
    return keras


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


# -- three models that are not the digits example ----------------------------------------------
def _mlp(keras):  # 1-D input of 12 features, float
    inp = keras.Input((12,), name="features")
    h = keras.layers.Dense(10, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="logits")(h), name="mlp")


def _qkeras_seq(keras):  # a (5, 6) sequence, QKeras quantizers, layer norm, pooling
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu
    inp = keras.Input((5, 6), name="tokens")
    h = QDense(8, kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(8, 2, alpha=1),
               name="qd")(inp)
    h = QActivation(quantized_relu(8, 3), name="qrelu")(h)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(inp, keras.layers.Dense(4, name="out")(h), name="qseq")


def _attention(keras):  # an (8, 8) input that is not the digits example: attention, residual, softmax head
    inp = keras.Input((8, 8), name="x")
    a = keras.layers.MultiHeadAttention(2, 4, name="mha")(inp, inp)
    h = keras.layers.Add(name="res")([inp, a])
    h = keras.layers.Flatten(name="flat")(h)
    return keras.Model(inp, keras.layers.Dense(5, name="head")(h), name="attn")


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    keras = _keras()
    keras.utils.set_random_seed(0)
    d = tmp_path_factory.mktemp("user_models")
    out = []
    for make, scale in ((_mlp, 3.0), (_qkeras_seq, 2.0), (_attention, 1.0)):
        m = make(keras)
        shape = m.input_shape[1:]
        x = np.random.default_rng(1).uniform(-scale, scale, (64,) + tuple(shape))
        y = np.argmax(m.predict(x, verbose=0), -1)
        m.save(d / f"{m.name}.h5")
        np.savez(d / f"{m.name}.npz", x=x, y=y)
        np.save(d / f"{m.name}_x.npy", x[:16])
        out.append((m.name, d / f"{m.name}.h5", d / f"{m.name}.npz", d / f"{m.name}_x.npy"))
    return out


def test_three_user_models_through_every_command(user_models, tmp_path, capsys):
    """convert, eval, hls --csim, sim, report and explore with --data on models that are not the
    digits example (1-D input, a (5, 6) QKeras sequence, an (8, 8) attention model)."""
    for name, h5, npz, npy in user_models:
        g = tmp_path / f"{name}.graph.json"
        code, out, err = _run(capsys, "convert", h5, "-o", g, "--data", npz, "--json")
        assert code == 0, err
        conv = json.loads(out)
        assert conv["calibration_source"].startswith(f"file {name}.npz (sha256 ")
        code, out, err = _run(capsys, "eval", g, "--data", npz, "--json")
        assert code == 0, err
        ev = json.loads(out)
        assert ev["samples"] == 64 and ev["labels"] and ev["data"].startswith(f"{name}.npz")
        assert ev["agreement"]["golden_vs_keras"] >= 0.85, (name, ev)  # the source model, found by its SHA-256
        assert ev["accuracy"]["keras"] == 1.0  # the labels are the Keras model's own argmax
        code, out, err = _run(capsys, "eval", g, "--data", npy, "--json")  # no labels: agreement only
        ev = json.loads(out)
        assert code == 0 and ev["accuracy"] == {} and not ev["labels"] and ev["samples"] == 16
        code, out, err = _run(capsys, "hls", g, "-o", tmp_path / f"{name}_hls", "--csim", "--data", npy, "--json")
        r = json.loads(out)
        assert code == 0 and r["bit_exact"] and r["samples"] == 16 and r["inputs"].startswith(f"{name}_x.npy")
        code, out, err = _run(capsys, "sim", g, "-o", tmp_path / f"{name}_rtl", "--data", npz, "--samples", 3,
                              "--simulator", "icarus", "--json")
        r = json.loads(out)
        assert code == 0 and r["bit_exact"] and r["samples"] == 3 and r["inputs"].startswith(f"{name}.npz")
        code, out, err = _run(capsys, "report", g, "-o", tmp_path / f"{name}_report", "--data", npz,
                              "--paths", "keras,float,golden", "--no-sweep", "--json")
        assert code == 0, err
        rep = json.loads(out)
        assert rep["paths"]["golden"]["samples"] == 64 and rep["paths"]["keras"]["accuracy"] == 1.0
        code, out, err = _run(capsys, "explore", g, "-o", tmp_path / f"{name}_explore", "--data", npz, "--bits", 8,
                              "--parallelism", 1, "--sim-samples", 0, "--family", "none", "--workers", 1, "--json")
        assert code == 0, err
        assert json.loads(out)["points"][0]["accuracy"] is not None


def test_commands_need_data_for_a_model_that_is_not_the_example(user_models, tmp_path, capsys):
    name, h5, npz, _ = user_models[0]
    g = tmp_path / "g.json"
    code, out, err = _run(capsys, "convert", h5, "-o", g)
    assert code == 0
    assert "warning: no --data: layer ranges without a quantizer come from 256 standard-normal samples" in err
    assert ir.load(g).meta["calibration_source"].startswith("none: 256 standard-normal samples")
    code, out, err = _run(capsys, "eval", g)
    assert code == 2 and "was not made from the shipped digits example: give your data with --data FILE" in err
    code, out, err = _run(capsys, "eval", g, "--data", tmp_path / "missing.npz")
    assert code == 2 and "--data" in err and "does not exist" in err
    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.zeros((3, 12)))
    code, out, err = _run(capsys, "eval", g, "--data", bad)
    assert code == 2 and "has arrays ['inputs']; it needs 'x'" in err
    np.savez(bad, x=np.zeros((3, 7)))
    code, out, err = _run(capsys, "eval", g, "--data", bad)
    assert code == 2 and "input 'features' expects shape (batch, 12), got (3, 7)" in err
    np.savez(bad, x=np.zeros((3, 12)), y=np.array([0.5, 1, 2]))
    code, out, err = _run(capsys, "eval", g, "--data", bad)
    assert code == 2 and "y must be 3 integer class labels" in err
    for argv in (("eval", g, "--samples", 0), ("sim", g, "-o", tmp_path / "s", "--samples", -5)):
        with pytest.raises(SystemExit) as e:
            main(list(map(str, argv)))
        assert e.value.code == 2
        assert "must be a whole number >= 1" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"fabformer {fabformer.__version__}"


# -- safe files ------------------------------------------------------------------------------
def test_lambda_and_custom_classes_are_refused_before_their_code_runs(tmp_path, capsys):
    keras = _keras()
    marker = tmp_path / "ran.txt"
    inp = keras.Input((4,))
    h = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    keras.Model(inp, keras.layers.Dense(2)(h)).save(tmp_path / "lam.h5")

    class Sneaky(keras.layers.Layer):
        def call(self, x):
            return x
    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(2)(Sneaky(name="sneaky")(inp))).save(tmp_path / "custom.h5")
    from fabformer.frontend import load_keras_model
    with pytest.raises(FabformerError, match=r"(?s)refusing to load .*lam\.h5.*layer 'double': a Lambda layer "
                                             r"holds Python code.*--allow-custom-code"):
        load_keras_model(tmp_path / "lam.h5")
    with pytest.raises(FabformerError, match=r"(?s)sneaky: class 'Sneaky' is not a Keras, QKeras or fabformer class"):
        load_keras_model(tmp_path / "custom.h5")
    code, out, err = _run(capsys, "convert", tmp_path / "lam.h5", "-o", tmp_path / "g.json")
    assert code == 2 and "a Lambda layer holds Python code" in err and not (tmp_path / "g.json").exists()
    assert not marker.exists()
    m = load_keras_model(tmp_path / "lam.h5", allow_custom_code=True)  # the user opted in
    assert m.layers[1].name == "double"


def test_writers_never_overwrite_foreign_files(user_models, tmp_path, capsys):
    name, h5, npz, _ = user_models[0]
    before = h5.read_bytes()
    code, out, err = _run(capsys, "convert", h5, "-o", h5, "--data", npz)
    assert code == 2 and "would write over its input model" in err and h5.read_bytes() == before
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}\n')
    code, out, err = _run(capsys, "convert", h5, "-o", notes, "--data", npz)
    assert code == 2 and "refusing to overwrite" in err and notes.read_text() == '{"mine": true}\n'
    g = tmp_path / "g.json"
    assert _run(capsys, "convert", h5, "-o", g, "--data", npz)[0] == 0
    assert _run(capsys, "convert", h5, "-o", g, "--data", npz)[0] == 0  # its own graph file: replaced
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("user data")
    from fabformer import rtl, sim
    graph = testing.op_graph("relu")
    with pytest.raises(FabformerError, match="refusing to write into .*was not created by fabformer"):
        sim.run(rtl.generate(graph), testing.random_inputs(graph, 2), build_dir=folder, simulator="icarus")
    assert [p.name for p in folder.iterdir()] == ["keep.txt"] and (folder / "keep.txt").read_text() == "user data"
    for cmd in (("hls", g, "-o", folder), ("sim", g, "-o", folder, "--data", npz), ("report", g, "-o", folder,
                                                                                     "--data", npz)):
        code, out, err = _run(capsys, *cmd)
        assert code == 2 and "refusing to write into" in err, cmd
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


def test_source_model_is_used_only_when_its_digest_matches(user_models, tmp_path, capsys):
    name, h5, npz, _ = user_models[0]
    model = tmp_path / "m.h5"
    model.write_bytes(h5.read_bytes())
    g = tmp_path / "g.json"
    assert _run(capsys, "convert", model, "-o", g, "--data", npz)[0] == 0
    code, out, err = _run(capsys, "eval", g, "--data", npz, "--json")
    assert "golden_vs_keras" in json.loads(out)["agreement"]
    keras = _keras()
    other = _mlp(keras)
    other.save(model)  # the file the graph names is now another model
    code, out, err = _run(capsys, "eval", g, "--data", npz, "--json")
    r = json.loads(out)
    assert code == 0 and "golden_vs_keras" not in r["agreement"]
    assert "is not the file the graph was converted from (SHA-256 differs); ignored" in r["note"]


# -- never silently wrong ---------------------------------------------------------------------
def test_options_the_converter_does_not_implement_are_refused():
    keras = _keras()
    from qkeras import QActivation, quantized_relu
    inp = keras.Input((4,))
    h = keras.layers.Dense(8, activation=keras.layers.LeakyReLU(0.1), name="leaky")(inp)
    h = QActivation(quantized_relu(8, 3, use_sigmoid=1), name="sig")(h)
    m = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    with pytest.raises(fabformer.ConversionError) as e:
        fabformer.convert(m, calibration=np.zeros((4, 4)))
    msg = str(e.value)
    assert "layer 'leaky' (Dense): activation LeakyReLU (a layer or object, not a named function) is not supported" \
        in msg
    assert "sets use_sigmoid=1: the sigmoid variant of quantized_relu is not implemented" in msg


def test_two_output_model_gives_two_graph_outputs():
    keras = _keras()
    inp = keras.Input((6,))
    h = keras.layers.Dense(5, activation="relu", name="h")(inp)
    a = keras.layers.Dense(3, name="a")(h)
    b = keras.layers.Dense(2, name="b")(h)
    m = keras.Model(inp, [b, a])
    x = np.random.default_rng(0).uniform(-1, 1, (50, 6))
    g = fabformer.convert(m, calibration=x)
    assert list(g.outputs) == ["b", "a"]
    outs, k = g.predict(x), m.predict(x, verbose=0)
    assert [o.shape for o in outs] == [(50, 2), (50, 3)]
    assert all(np.max(np.abs(o - kk)) < 0.1 for o, kk in zip(outs, k))


def test_unsigned_quantized_bits_clamps_in_float_mode_too():
    keras = _keras()
    from qkeras import QActivation, quantized_bits
    inp = keras.Input((6,))
    h = keras.layers.Dense(4, name="d")(inp)
    m = keras.Model(inp, QActivation(quantized_bits(8, 3, keep_negative=False, alpha=1), name="q")(h))
    x = np.random.default_rng(0).uniform(-2, 2, (200, 6))
    g = fabformer.convert(m, calibration=x)
    f, gi = g.predict(x, mode="float"), g.predict(x)
    assert f.min() >= 0 and gi.min() >= 0 and (m.predict(x, verbose=0) >= 0).all()


def test_convert_without_calibration_warns_and_records_it():
    keras = _keras()
    inp = keras.Input((3,))
    m = keras.Model(inp, keras.layers.Dense(2)(inp))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        g = fabformer.convert(m)
    assert any("without calibration data" in str(x.message) for x in w)
    assert g.meta["calibration_source"].startswith("none: 256 standard-normal samples")


# -- malformed files give errors, never tracebacks ---------------------------------------------
def _bad_graph_dicts():
    d = testing.op_graph("dense").to_dict()
    short = copy.deepcopy(d)
    short["nodes"][1]["weight"]["data"] = short["nodes"][1]["weight"]["data"][:-3]
    missing = copy.deepcopy(d)
    del missing["nodes"][1]["bias_type"]
    half = copy.deepcopy(d)
    half["nodes"][1]["weight"]["data"][0] = 0.5
    signed = copy.deepcopy(d)
    signed["tensors"][1]["type"]["signed"] = "no"
    out_float = copy.deepcopy(d)
    out_float["outputs"] = ["x"]
    return [
        (short, r"node 1 'op' \(dense\) field 'weight': 45 values for shape \[8, 6\] \(48 expected\)"),
        (missing, r"node 1 'op' \(dense\): missing field\(s\) bias_type; a dense node has name, inputs"),
        (half, r"field 'weight': constants must be integer mantissas, not 0.5"),
        (signed, r"tensor 'xq': signed must be true or false, not 'no'"),
        (out_float, r"graph output 'x' is a float graph input; an output must be a fixed-point tensor"),
        ([1, 2], r"not a fabformer graph file \(a JSON object with format: fabformer-graph expected, got list\)"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_malformed_graph_files_are_named_errors(case, tmp_path, capsys):
    d, pattern = _bad_graph_dicts()[case]
    p = tmp_path / "bad.graph.json"
    p.write_text(json.dumps(d))
    with pytest.raises(FabformerError, match=pattern):
        ir.load(p)
    code, out, err = _run(capsys, "eval", p, "--data", tmp_path / "none.npz")
    assert code == 2 and err.startswith("fabformer eval: error:") and "Traceback" not in err


def test_malformed_configs_are_named_errors(tmp_path, capsys):
    g = tmp_path / "g.json"
    testing.op_graph("relu").save(g)
    cfg = tmp_path / "hls.json"
    cfg.write_text("{not json")
    code, out, err = _run(capsys, "hls", g, "-o", tmp_path / "h", "--config", cfg)
    assert code == 2 and "HLS config file" in err and "is not valid JSON" in err
    cfg.write_text("[1]")
    code, out, err = _run(capsys, "hls", g, "-o", tmp_path / "h", "--config", cfg)
    assert code == 2 and "an HLS config is a JSON object with keys part" in err
    from fabformer.frontend.config import ConvertConfig
    with pytest.raises(FabformerError, match=r"config range_margin must be a number >= 1, not nan"):
        ConvertConfig.from_dict({"range_margin": float("nan")})
    with pytest.raises(FabformerError, match=r"a precision config is a JSON object"):
        ConvertConfig.from_dict([1])


def test_hls_write_compile_predict_chain(tmp_path):
    from fabformer import hls
    g = testing.op_graph("relu")
    x = testing.random_inputs(g, 5)
    assert np.array_equal(hls.write(g, tmp_path / "h").compile().predict(x), g.predict(x))


def test_parallelism_option_forms_and_errors(tmp_path, capsys):
    from fabformer.apps.common import parse_parallelism
    per_node = {"mha/query": 16, "ff1": 8}
    assert parse_parallelism("4") == 4 and parse_parallelism(None) is None
    assert parse_parallelism("mha/query=16,ff1=8") == per_node
    assert parse_parallelism(json.dumps(per_node)) == per_node
    for bad, says in (("{mha: 3}", "as JSON"), ("[1, 2]", "cannot parse"), ("ff1=x", "cannot parse")):
        with pytest.raises(FabformerError, match=says):
            parse_parallelism(bad)
    # the build command takes per-node settings too, and names an unknown node with the valid ones
    g = testing.encoder_graph()
    gp = tmp_path / "enc.graph.json"
    g.save(gp)
    code, out, err = _run(capsys, "build", gp, "--board", "part:iCE40HX1K", "-o", tmp_path / "b",
                          "--parallelism", '{"nope": 2}')
    assert code != 0 and "nope" in err and "valid:" in err and "Traceback" not in err
    assert not (tmp_path / "b" / "build").exists()
