"""The PyTorch sequence examples (``examples/torch/train_sequences.py``): a text classifier with token and
positional ``nn.Embedding`` and a padding mask, and a causal model: argmax agreement with PyTorch, and
golden = C-simulation = RTL (Verilator) bit for bit."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import fabformer  # noqa: E402
from fabformer.frontend import pytorch as ft  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["text", "causal"]


def _module():
    spec = importlib.util.spec_from_file_location("example_torch_sequences",
                                                  ROOT / "examples" / "torch" / "train_sequences.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def examples():
    mod = _module()
    out = {}
    for name in EXAMPLES:
        path = ROOT / "examples" / "torch" / f"{name}.pt2"
        if not path.is_file():
            pytest.skip(f"no trained model {path.name} in examples/torch")
        model = ft.TorchModel(ft.load_torch_model(path), name, device="cpu")
        cal, _ = mod.MAKE[name](500, seed=0)
        x, y = mod.MAKE[name](1000, seed=2)
        out[name] = (model, fabformer.convert(model, calibration=cal), x, y)
    return out


def test_the_masks_map_to_their_ir_ops(examples):
    kinds = {name: [n.kind for n in examples[name][1].nodes] for name in EXAMPLES}
    assert kinds["text"][:3] == ["quantize", "embedding", "add_const"]
    assert "mask_fill" in kinds["text"] and "masked_avg_pool" in kinds["text"]
    assert "causal_fill" in kinds["causal"] and "mask_fill" not in kinds["causal"]
    t = examples["text"][1].type_of("input/q")  # token ids: whole numbers up to the vocabulary, saturating
    assert (t.width, t.frac, t.signed, t.overflow.value) == (5, 0, False, "SAT")


@pytest.mark.parametrize("name", EXAMPLES)
def test_argmax_agreement_with_pytorch(examples, name):
    model, g, x, y = examples[name]
    ref, gy = model.predict(x), g.predict(x)
    agree = np.mean(ref.argmax(-1) == gy.argmax(-1))
    assert agree >= 0.995, f"{name}: argmax agreement {agree:.4f}"
    assert np.mean(ref.argmax(-1) == y) >= 0.97 and np.mean(gy.argmax(-1) == y) >= 0.97


@pytest.mark.parametrize("name", EXAMPLES)
def test_csim_bit_exact(examples, name, tmp_path):
    hls = pytest.importorskip("fabformer.hls")
    _, g, x, _ = examples[name]
    p = hls.write(g, tmp_path / name)
    p.compile()
    xs = x[:200]
    np.testing.assert_array_equal(p.predict(xs, raw=True), np.asarray(g.predict(xs, trace=True)[1][g.outputs[0]]))


def test_rtl_bit_exact(examples):
    from fabformer.rtl import DesignSet, generate
    from fabformer.sim import run_many
    ds = DesignSet([generate(examples[n][1]) for n in EXAMPLES], name="torch_sequences")
    rs = run_many([(m, examples[name][2][:3]) for m, name in zip(ds.members, EXAMPLES)], simulator="verilator")
    for name, r in zip(EXAMPLES, rs):
        assert r.mismatches == 0, f"{name}: " + "\n".join(r.mismatch_report[:10])
        np.testing.assert_array_equal(r.raw, r.expected_raw)
