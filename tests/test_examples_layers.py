"""The shipped Transformer examples users write (text classifier with token + position
embeddings, jet tagger with a padding mask, causal model): argmax agreement with Keras, and
golden = C-simulation = RTL (Verilator and Icarus) bit for bit."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import fabformer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["text", "jets", "causal"]


def _module(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def examples():
    from fabformer.frontend import load_keras_model
    out = {}
    for name in EXAMPLES:
        path = ROOT / "examples" / name / "model.h5"
        if not path.is_file():
            pytest.skip(f"no trained model {path.name} in examples/{name}")
        mod = _module(name)
        model = load_keras_model(path)
        cal, _ = mod.make_data(500, seed=0)
        x, y = mod.make_data(1000, seed=2)
        out[name] = (model, fabformer.convert(model, calibration=cal), x, y)
    return out


@pytest.mark.parametrize("name", EXAMPLES)
def test_argmax_agreement_with_keras(examples, name):
    model, g, x, y = examples[name]
    k, gy = model.predict(x, verbose=0), g.predict(x)
    agree = np.mean(k.argmax(-1) == gy.argmax(-1))
    acc = np.mean(gy.argmax(-1) == y)
    assert agree >= 0.995, f"{name}: argmax agreement {agree:.4f}"
    assert acc >= 0.8, f"{name}: golden accuracy {acc:.4f}"


def _slice(x, n):
    return [v[:n] for v in x] if isinstance(x, list) else x[:n]


@pytest.mark.parametrize("name", EXAMPLES)
def test_csim_bit_exact(examples, name, tmp_path):
    hls = pytest.importorskip("fabformer.hls")
    _, g, x, _ = examples[name]
    p = hls.write(g, tmp_path / name)
    p.compile()
    xs = _slice(x, 200)
    np.testing.assert_array_equal(p.predict(xs, raw=True), np.asarray(g.predict(xs, trace=True)[1][g.outputs[0]]))


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_rtl_bit_exact(examples, simulator):
    from fabformer.rtl import DesignSet, generate
    from fabformer.sim import run_many
    ds = DesignSet([generate(examples[n][1]) for n in EXAMPLES], name="layers_examples")
    n = 3 if simulator == "verilator" else 1
    rs = run_many([(m, _slice(examples[name][2], n)) for m, name in zip(ds.members, EXAMPLES)], simulator=simulator)
    for name, r, m in zip(EXAMPLES, rs, ds.members):
        assert r.mismatches == 0, f"{name}: " + "\n".join(r.mismatch_report[:10])
        np.testing.assert_array_equal(r.raw, r.expected_raw)
        assert r.latency_cycles == m.latency_cycles, name
    # a mask between scores and softmax reads the row index: such attention keeps the head-major order
    kinds = {name: {n.kind for n in examples[name][1].nodes} for name in EXAMPLES}
    assert {"causal_fill", "merge_heads"} <= kinds["causal"] and ds.designs[EXAMPLES.index("causal")].orders == {}
