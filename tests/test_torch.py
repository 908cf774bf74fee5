"""The PyTorch frontend: every mapped module and function, Brevitas bit for bit, the one error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fabformer  # noqa: E402
from fabformer import ConversionError, FabformerError  # noqa: E402
from fabformer.frontend import pytorch as ft  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "torch"
T, F = 4, 6  # tokens, features of the small test models
# wide weights: the float graph then follows PyTorch closely, so a wrong mapping shows
WIDE = {"weight_bits": 16, "bias_bits": 20}


def _x(n=96, seed=0, shape=(T, F)):
    return np.random.default_rng(seed).standard_normal((n,) + shape)


def _close(model, x, graph=None, tol=2e-3, config=None):
    g = graph or fabformer.convert(model, config=config or WIDE, calibration=x)
    ref = ft.torch_predict(model, x)
    flt = g.predict(x, mode="float")
    assert flt.shape == ref.shape
    assert np.max(np.abs(flt - ref)) < tol, np.max(np.abs(flt - ref))
    gold = g.predict(x)
    assert np.max(np.abs(gold - ref)) < 0.05 * max(1.0, np.max(np.abs(ref)))
    return g


class _Encoder(nn.Module):
    def __init__(self, norm_first, act, stack=False, pool=False):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(F, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation=act, batch_first=True,
                                           norm_first=norm_first)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False) if stack else layer
        self.pool = pool
        self.flat = nn.Flatten()
        self.head = nn.Linear(8 if pool else 8 * T, 5)

    def forward(self, x):
        h = self.enc(self.embed(x))
        return self.head(h.mean(dim=1) if self.pool else self.flat(h))


@pytest.mark.parametrize("norm_first,act,stack,pool", [(False, "relu", False, False), (True, "gelu", True, True),
                                                       (True, "relu", False, False), (False, "gelu", True, True)])
def test_transformer_encoder_layer_and_encoder(norm_first, act, stack, pool):
    g = _close(_Encoder(norm_first, act, stack, pool), _x())
    kinds = [n.kind for n in g.nodes]
    assert kinds.count("layernorm") == (2 * (2 if stack else 1))
    assert ("lookup" in kinds) == (act == "gelu") and ("relu" in kinds) == (act == "relu")
    assert ("global_avg_pool" in kinds) == pool and ("flatten" in kinds) != pool
    first_ln = kinds.index("layernorm")
    assert (first_ln < kinds.index("softmax")) == norm_first  # pre-norm: the norm comes before attention


class _Parts(nn.Module):
    """nn.MultiheadAttention called directly (need_weights left at its default), GELU tanh, ReLU,
    LayerNorm, Dropout, a residual ``+`` and a Linear on a 1-D (per sample) input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.mha = nn.MultiheadAttention(F, 3, batch_first=True)
        self.norm = nn.LayerNorm(F, eps=1e-3)
        self.ff = nn.Linear(F, 12)
        self.act = nn.GELU(approximate="tanh")
        self.drop = nn.Dropout(0.2)
        self.back = nn.Linear(12, F)
        self.relu = nn.ReLU()
        self.flat = nn.Flatten()
        self.head = nn.Linear(T * F, 3)

    def forward(self, x):
        a, _ = self.mha(x, x, x)
        h = self.norm(x + self.drop(a))
        h = h + self.back(self.act(self.ff(h)))
        return self.head(self.relu(self.flat(h)))


def test_modules_mha_gelu_tanh_relu_layernorm_dropout_add_linear():
    g = _close(_Parts(), _x(seed=2))
    lookups = [n for n in g.nodes if n.kind == "lookup"]
    assert [n.table.function for n in lookups] == ["gelu_tanh"]
    assert g.node("mha/query_split").heads == 3
    assert not any("drop" in n.name for n in g.nodes)
    assert g.meta["torch_units"]["mha"] == "MultiheadAttention"


def test_gelu_exact_and_tanh_tables_differ():
    from fabformer.tables import FLOAT_FUNCTIONS
    x = np.linspace(-4, 4, 101)
    d = np.abs(FLOAT_FUNCTIONS["gelu"](x) - FLOAT_FUNCTIONS["gelu_tanh"](x))
    assert 1e-5 < d.max() < 1e-2
    assert np.allclose(FLOAT_FUNCTIONS["gelu_tanh"](x), nn.GELU(approximate="tanh")(torch.as_tensor(x)).numpy())


class _Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, F)
        self.conv = nn.Conv1d(T, T, 3, padding=1)
        self.mha = nn.MultiheadAttention(F, 2, batch_first=True, add_bias_kv=True)
        self.lin = nn.Linear(F, 2)

    def forward(self, x):
        h = self.conv(x) * 2.0
        a, _ = self.mha(h, h, h, need_weights=False)
        return self.lin(torch.tanh(a)).transpose(1, 2)


def test_every_unsupported_module_and_function_in_one_error():
    with pytest.raises(ConversionError) as e:
        fabformer.convert(_Unsupported(), calibration=_x(8))
    msg = str(e.value)
    assert "function aten.conv1d in module 'conv' (Conv1d): function not supported; supported: aten.linear" in msg
    assert "function aten.mul in the model: mul is supported only in the masked mean over the sequence" in msg
    assert "module 'mha' (MultiheadAttention): operations cat" in msg and "add_bias_kv, add_zero_attn" in msg
    assert "function aten.tanh in the model: function not supported" in msg
    assert "function aten.transpose in the model: function not supported" in msg
    assert len(e.value.problems) >= 5


def test_embedding_of_computed_ids_and_max_norm_are_refused():
    class Emb(nn.Module):
        def __init__(self, max_norm=None):
            super().__init__()
            self.emb = nn.Embedding(16, 4, max_norm=max_norm)
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(self.emb(x if max_norm_ids else x.long()))

    max_norm_ids = False
    with pytest.raises(ConversionError, match=r"module 'emb' \(Embedding\): the ids must be the model's input "
                                              r"\(integer token ids"):
        fabformer.convert(Emb(), calibration=np.zeros((4, 3)))
    max_norm_ids = True
    with pytest.raises(ConversionError, match=r"module 'emb' \(Embedding\): max_norm=1.0 is not supported .*valid: "
                                              r"max_norm=None"):
        fabformer.convert(Emb(1.0), calibration=np.zeros((4, 3), np.int64))


def test_batch_first_false_and_cross_attention_are_refused():
    class SeqFirst(nn.Module):
        def __init__(self, cross):
            super().__init__()
            self.cross = cross
            self.mha = nn.MultiheadAttention(F, 2, batch_first=not cross)
            self.q = nn.Linear(F, F)

        def forward(self, x):
            a, _ = self.mha(self.q(x), x, x) if self.cross else self.mha(x, x, x)
            return a

    m = SeqFirst(False)
    m.mha.batch_first = False
    with pytest.raises(ConversionError, match=r"attends over an axis of length 64, not the sequence"):
        fabformer.convert(m, calibration=_x(8))
    with pytest.raises(ConversionError, match=r"2 distinct inputs; only self-attention"):
        fabformer.convert(SeqFirst(True), calibration=_x(8))


def test_mean_other_than_the_sequence_is_refused():
    class M(nn.Module):
        def forward(self, x):
            return x.mean(dim=2)

    with pytest.raises(ConversionError, match=r"only the mean over the sequence: x.mean\(dim=1\)"):
        fabformer.convert(M(), calibration=_x(8))


def test_module_needs_calibration_and_config_roles_are_checked():
    m = _Encoder(False, "relu")
    with pytest.raises(FabformerError, match="needs calibration data"):
        fabformer.convert(m)
    with pytest.raises(fabformer.ConfigError, match=r"unknown layer 'nope'"):
        fabformer.convert(m, config={"layers": {"nope": {"output": "fixed<16,4>"}}}, calibration=_x(16))
    g = fabformer.convert(m, config={"layers": {"enc.norm1": {"output": "fixed<12,3>"}}}, calibration=_x(16))
    assert str(g.type_of("enc.norm1")) == "fixed<12,3,TRN,WRAP>"


# -- Brevitas -----------------------------------------------------------------------
qnn = pytest.importorskip("brevitas.nn")


def _brevitas(rounding="floor", act=None, seed=0, **act_kw):
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8BiasPerTensorFloatInternalScaling,
                                Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint)
    from brevitas.quant.base import PerTensorPoTScaling8bit

    class Bias(PerTensorPoTScaling8bit, Int8BiasPerTensorFloatInternalScaling):
        pass

    r = dict(float_to_int_impl_type=rounding) if rounding != "round" else {}  # "round": Brevitas' default
    lin = dict(weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Bias)
    torch.manual_seed(seed)
    m = nn.Sequential(qnn.QuantIdentity(act_quant=act or Int8ActPerTensorFixedPoint, **r, **act_kw),
                      qnn.QuantLinear(F, 8, **lin), qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, **r),
                      nn.Flatten(), qnn.QuantLinear(8 * T, 5, **lin),
                      qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, **r))
    m.train()
    with torch.no_grad():
        for i in range(3):  # runtime statistics initialise the activation scales
            m(torch.as_tensor(_x(32, seed=i), dtype=torch.float32))
    return m.eval()


@pytest.mark.parametrize("rounding,mode", [("floor", "TRN"), ("round", "RND_CONV")])
def test_brevitas_quant_identity_linear_relu_bit_exact(rounding, mode):
    m = _brevitas(rounding)
    x = _x(300, seed=5) * 2
    g = fabformer.convert(m, calibration=x[:100])
    assert g.meta["float_units"] == []
    ref = ft.torch_predict(m, x)
    assert np.array_equal(g.predict(x), ref)  # Brevitas' own quantized forward, bit for bit
    t = g.type_of("input/q")
    assert (t.width, t.signed, t.rounding.value, t.overflow.value) == (8, True, mode, "SAT")
    assert [n.kind for n in g.nodes] == ["quantize", "dense", "relu", "flatten", "dense"]
    assert g.type_of("2").width == 8 and not g.type_of("2").signed


def test_brevitas_ceil_rounding_and_non_power_of_two_scales_are_refused():
    from brevitas.quant import Int8WeightPerTensorFloat
    with pytest.raises(ConversionError, match=r"module '0' \(QuantIdentity\): rounding ceil is not in the IR "
                                              r"\(it rounds with floor, half up or half to even\)"):
        fabformer.convert(_brevitas("ceil"), calibration=_x(32))
    m = _brevitas()
    m[1] = qnn.QuantLinear(F, 8, weight_quant=Int8WeightPerTensorFloat, bias=False)
    with pytest.raises(ConversionError, match=r"module '1' \(QuantLinear\) weight: values are not integers times one "
                                              r"power of two \(a scale that is not a power of two"):
        fabformer.convert(m, calibration=_x(32))


def test_brevitas_float_weights_are_refused():
    m = nn.Sequential(qnn.QuantLinear(F, 3, weight_quant=None, bias=False))
    with pytest.raises(ConversionError, match=r"module '0' \(QuantLinear\) weight: not quantized"):
        fabformer.convert(m, calibration=_x(8))


# -- files and the command line ------------------------------------------------------
def test_pt2_only_and_round_trip(tmp_path):
    m = _Encoder(True, "gelu")
    x = _x(64)
    ep = ft.export(m, x)
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    loaded = ft.load_torch_model(tmp_path / "m.pt2")
    g1 = fabformer.convert(loaded, calibration=x)
    g2 = fabformer.convert(m, calibration=x)
    assert json.dumps(g1.to_dict()["nodes"]) == json.dumps(g2.to_dict()["nodes"])
    # batches of the exported 64, the last one padded; eager PyTorch takes its fused kernels (float32 ulps)
    np.testing.assert_allclose(ft.torch_predict(loaded, x[:70]), ft.torch_predict(m, x[:70]), atol=1e-5)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    with pytest.raises(FabformerError, match=r"torch.export archives \(.pt2\), not '.pt'"):
        ft.load_torch_model(tmp_path / "m.pt")
    with pytest.raises(FabformerError, match="does not exist"):
        ft.load_torch_model(tmp_path / "nope.pt2")


def test_cli_convert_and_eval_pt2(tmp_path, capsys):
    from fabformer.apps.cli import main
    out = tmp_path / "g.json"
    assert main(["convert", str(EXAMPLES / "encoder_post.pt2"), "-o", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--model", str(EXAMPLES / "encoder_post.pt2"), "--samples", "100", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["agreement"]["golden_vs_pytorch"] >= 0.99 and "golden_vs_keras" not in r["agreement"]


@pytest.mark.parametrize("name", ["encoder_post", "encoder_pre", "brevitas_q8"])
def test_examples_agree_with_pytorch(name):
    from fabformer.apps.data import digits
    d = digits()
    model = ft.TorchModel(ft.load_torch_model(EXAMPLES / f"{name}.pt2"), name, device="cpu")
    g = fabformer.convert(model, calibration=d.x_train)
    ref = model.predict(d.x_test)
    gold = g.predict(d.x_test)
    assert np.mean(gold.argmax(1) == ref.argmax(1)) >= 0.995
    assert np.mean(ref.argmax(1) == d.y_test) >= 0.95
    if name == "brevitas_q8":
        assert g.meta["float_units"] == [] and np.array_equal(gold, ref)


def test_compress_is_keras_only(tmp_path, capsys):
    from fabformer.apps.cli import main
    rc = main(["compress", "--teacher", str(EXAMPLES / "encoder_post.pt2"), "--student", "d_model=16,heads=2,ff=32",
               "-o", str(tmp_path / "s")])
    assert rc == 2
    assert "compress takes Keras teachers only" in capsys.readouterr().err


@pytest.mark.parametrize("rounding", ["floor", "round"])
def test_brevitas_graph_csim_bit_exact(tmp_path, rounding):
    """Brevitas' exact types (floor and ties-to-even rounding) through g++ C-simulation."""
    hls = pytest.importorskip("fabformer.hls")
    m = _brevitas(rounding, seed=3)
    x = _x(200, seed=6) * 2
    g = fabformer.convert(m, calibration=x)
    assert np.array_equal(g.predict(x), ft.torch_predict(m, x))
    prj = hls.write(g, tmp_path / "hls")
    prj.compile()
    _, env = g.predict(x, trace=True)
    assert np.array_equal(prj.predict(x, raw=True), np.asarray(env[g.outputs[0]]))


def test_report_names_the_source_framework():
    from fabformer.apps.data import digits
    from fabformer.apps.report import collect
    d = digits()
    model = ft.TorchModel(ft.load_torch_model(EXAMPLES / "encoder_post.pt2"), "encoder_post", device="cpu")
    g = fabformer.convert(model, calibration=d.x_train)
    r = collect(g, d.x_test[:64], d.y_test[:64], model=model, paths=["keras", "golden"], timing=False, sweep=False)
    assert set(r["paths"]) == {"pytorch", "golden"}
    assert r["paths"]["pytorch"]["label"].startswith("PyTorch") and r["paths"]["pytorch"]["accuracy"] >= 0.9
    r = collect(g, d.x_test[:8], d.y_test[:8], model=None, paths=["pytorch"], timing=False, sweep=False)
    assert r["paths"]["pytorch"]["status"].startswith("unavailable: no PyTorch model")
