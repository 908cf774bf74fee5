"""The PyTorch frontend's token embeddings, positional tables and attention masks: every mapped form
against PyTorch, and every refused form with its message."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fabformer  # noqa: E402
from fabformer import ConversionError  # noqa: E402
from fabformer.frontend import pytorch as ft  # noqa: E402

T, V, D = 6, 20, 8
WIDE = {"weight_bits": 16, "bias_bits": 20}


def _ids(n=200, seed=0, pad=0, vocab=V):
    """Token ids with 0..2 padding tokens (``pad``) at the end; never all padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (n, T))
    ids[ids == pad] = (pad + 1) % vocab
    for i in range(n):
        ids[i, T - rng.integers(0, 3):] = pad
    return ids.astype(np.int64)


def _close(model, x, tol=2e-3, config=None):
    g = fabformer.convert(model, config=config or WIDE, calibration=x)
    ref = ft.torch_predict(model, x)
    flt = g.predict(x, mode="float")
    assert flt.shape == ref.shape
    assert np.max(np.abs(flt - ref)) < tol, np.max(np.abs(flt - ref))
    gold = g.predict(x)
    assert np.max(np.abs(gold - ref)) < 0.05 * max(1.0, np.max(np.abs(ref)))
    assert np.mean(gold.argmax(-1) == ref.argmax(-1)) >= 0.97
    return g


class _Text(nn.Module):
    """Token + positional embeddings, an encoder with a padding mask, a masked mean."""

    def __init__(self, pad=0, pos="embedding", stack=False, norm_first=False, mha=None, clamp=True, nested=False):
        super().__init__()
        torch.manual_seed(0)
        self.padv, self.posk, self.mha_kind, self.clamp = pad, pos, mha, clamp
        self.tok = nn.Embedding(V, D, padding_idx=pad)
        if pos == "embedding":
            self.pos = nn.Embedding(T, D)
        elif pos == "parameter":
            self.pos = nn.Parameter(torch.randn(1, T, D) * 0.5)
        if mha is not None:
            self.mha = nn.MultiheadAttention(D, 2, batch_first=True)
        else:
            layer = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.1, batch_first=True, norm_first=norm_first)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=nested) if stack else layer
        self.head = nn.Linear(D, 3)

    def forward(self, ids):
        pad = ids == self.padv
        h = self.tok(ids)
        if self.posk == "embedding":
            h = h + self.pos(torch.arange(ids.shape[1]))
        elif self.posk == "parameter":
            h = h + self.pos
        elif self.posk == "number":
            h = h + 0.25
        if self.mha_kind is not None:
            a, _ = self.mha(h, h, h, key_padding_mask=pad, need_weights=self.mha_kind == "weights")
            h = h + a
        else:
            h = self.enc(h, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        n = keep.sum(1).clamp(min=1) if self.clamp else keep.sum(1)
        return self.head((h * keep).sum(1) / n)


@pytest.mark.parametrize("pad,pos,stack,norm_first", [(0, "embedding", False, False), (3, "parameter", True, True),
                                                      (0, "number", True, False)])
def test_embeddings_positional_tables_padding_mask_masked_mean(pad, pos, stack, norm_first):
    g = _close(_Text(pad, pos, stack, norm_first), _ids(pad=pad))
    kinds = [n.kind for n in g.nodes]
    emb = kinds.index("embedding")
    assert kinds[emb + 1] == "add_const"  # the positional table
    assert kinds.count("add_const") == (2 if pad else 1)  # and ids - PAD for the keep mask
    assert kinds.count("mask_fill") == (2 if stack else 1) and kinds.count("masked_avg_pool") == 1
    fill = next(n for n in g.nodes if n.kind == "mask_fill")
    assert not fill.causal
    # the keep mask: the ids themselves for PAD 0, else ids - PAD (exact)
    assert fill.inputs[1] == ("input/q" if pad == 0 else f"input/keep{pad}")
    t = g.type_of("input/q")
    assert (t.width, t.frac, t.signed) == (5, 0, False)  # ids 0..19
    assert g.meta["torch_units"]["tok"] == "Embedding"


def test_encoder_fast_path_is_not_traced():
    """PyTorch's fused encoder (nested tensors, _transformer_encoder_layer_fwd) runs in eager eval mode only;
    torch.export traces the decomposed layers, also under no_grad with enable_nested_tensor=True."""
    m = _Text(stack=True, nested=True).eval()
    x = _ids(seed=4)
    with torch.no_grad():
        ep = ft.export(m, x)
    assert not {str(n.target) for n in ep.graph.nodes} & {"aten._transformer_encoder_layer_fwd.default",
                                                          "aten._nested_tensor_from_mask.default"}
    g = _close(m, x)
    assert [n.kind for n in g.nodes].count("mask_fill") == 2


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_key_padding_mask(need_weights):
    """need_weights=True takes PyTorch's bmm path (the mask added by baddbmm), False its SDPA path."""
    g = _close(_Text(mha="weights" if need_weights else "sdpa", clamp=False), _ids(seed=1))
    assert [n.kind for n in g.nodes].count("mask_fill") == 1


def test_all_padding_sample_gives_zero_mean_as_clamped_pytorch():
    m = _Text()
    x = _ids(64)
    g = fabformer.convert(m, config=WIDE, calibration=x)
    x1 = x[:2].copy()
    x1[0] = 0  # every token padding: PyTorch's attention gives NaN there, the clamped mean 0 * NaN
    _, env = g.predict(x1, trace=True)
    pool = next(n for n in g.nodes if n.kind == "masked_avg_pool")
    assert np.all(np.asarray(env[pool.output])[0] == 0)


class _Causal(nn.Module):
    def __init__(self, how, pad_too=False):
        super().__init__()
        torch.manual_seed(2)
        self.how, self.pad_too = how, pad_too
        self.tok = nn.Embedding(V, D)
        self.mha = nn.MultiheadAttention(D, 2, batch_first=True)
        self.enc = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True, activation="gelu")
        self.head = nn.Linear(D, 2)

    def forward(self, ids):
        h = self.tok(ids)
        pad = (ids == 0) if self.pad_too else None
        if self.how == "is_causal":
            m = nn.Transformer.generate_square_subsequent_mask(T)
            h = self.enc(h, src_mask=m, is_causal=True, src_key_padding_mask=pad)
        elif self.how == "float_mask":  # the same constant, without the is_causal hint
            h = self.enc(h, src_mask=nn.Transformer.generate_square_subsequent_mask(T), src_key_padding_mask=pad)
        else:  # a boolean upper-triangular attn_mask given to nn.MultiheadAttention
            mask = torch.ones(T, T, dtype=torch.bool).triu(1)
            h = h + self.mha(h, h, h, attn_mask=mask, key_padding_mask=pad, need_weights=False)[0]
        return self.head(h)


@pytest.mark.parametrize("how,pad_too", [("is_causal", False), ("float_mask", True), ("bool_mask", False),
                                         ("bool_mask", True)])
def test_causal_masks(how, pad_too):
    x = _ids(seed=3)
    x[:, 0] = np.maximum(x[:, 0], 1)  # the first token is never padding (causal rows keep a key)
    g = _close(_Causal(how, pad_too), x)
    kinds = [n.kind for n in g.nodes]
    if pad_too:
        assert "mask_fill" in kinds and "causal_fill" not in kinds
        assert next(n for n in g.nodes if n.kind == "mask_fill").causal
    else:
        assert "causal_fill" in kinds and "mask_fill" not in kinds


# -- refused forms ----------------------------------------------------------------------
class _Bad(nn.Module):
    def __init__(self, how):
        super().__init__()
        torch.manual_seed(0)
        self.how = how
        self.tok = nn.Embedding(V, D)
        self.mha = nn.MultiheadAttention(D, 2, batch_first=True)
        self.head = nn.Linear(D, 2)

    def forward(self, ids):
        h = self.tok(ids)
        kw = {}
        if self.how == "lower":
            kw["attn_mask"] = torch.ones(T, T, dtype=torch.bool).tril(-1)
        elif self.how == "bias":
            kw["attn_mask"] = torch.arange(T * T, dtype=torch.float32).reshape(T, T) / 10
        elif self.how == "inverted":
            kw["key_padding_mask"] = ids != 0
        elif self.how == "mask_as_data":
            h = h + (ids == 0).unsqueeze(-1).float().expand(-1, -1, D)
        elif self.how == "sum2":
            return self.head((h * (ids != 0).unsqueeze(-1).float()).sum(2, keepdim=True).expand(-1, -1, D).mean(1))
        elif self.how == "clamp2":
            keep = (ids != 0).unsqueeze(-1).float()
            return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=2))
        elif self.how == "pad_out_of_range":
            kw["key_padding_mask"] = ids == 40
        h = self.mha(h, h, h, need_weights=False, **kw)[0]
        return self.head(h.mean(1))


@pytest.mark.parametrize("how,message", [
    ("lower", r"module 'mha' \(MultiheadAttention\): the attention mask \(from a constant\) is neither a key "
              r"padding mask .* nor a causal mask"),
    ("bias", r"module 'mha' \(MultiheadAttention\): the attention mask adds values other than 0 and -inf"),
    ("inverted", r"the attention mask \(from the padding mask ids != 0\) is neither a key padding mask"),
    ("mask_as_data", r"function aten.add in the model: takes the padding mask .*goes to attention"),
    ("sum2", r"function aten.sum in the model: sum over dims \[2\] \(keepdim=True\) not supported"),
    ("clamp2", r"only keep.sum\(1\).clamp\(min=c\) with 0 < c <= 1 is supported"),
    ("pad_out_of_range", r"function aten.eq in the model: PAD 40 is not a token id; valid: 0..31"),
])
def test_refused_masks_name_the_module_value_and_valid_forms(how, message):
    with pytest.raises(ConversionError, match=message):
        fabformer.convert(_Bad(how), calibration=_ids(64))


def test_masks_from_float_features_and_positional_tables_of_another_shape_are_refused():
    class FloatMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, D)
            self.mha = nn.MultiheadAttention(D, 2, batch_first=True)

        def forward(self, x):
            h = self.lin(x)
            return self.mha(h, h, h, key_padding_mask=x[:, :, 0] == 0, need_weights=False)[0]

    with pytest.raises(ConversionError, match=r"comparison eq\(.*\) not supported; a padding mask is ids == PAD"):
        fabformer.convert(FloatMask(), calibration=np.random.default_rng(0).standard_normal((16, T, 4)))

    class WrongPos(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(V, D)
            self.bias = nn.Parameter(torch.zeros(ft.EXPORT_BATCH, 1, 1))  # one value per sample of the batch

        def forward(self, ids):
            return (self.tok(ids) + self.bias).mean(1)

    with pytest.raises(ConversionError, match=r"function aten.add in the model: the constant of shape \(64, 1, 1\) "
                                              r"does not broadcast to one sample \(6, 8\)"):
        fabformer.convert(WrongPos(), calibration=_ids(16))


def test_a_separate_mask_input_is_refused_with_the_pytorch_way():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(V, D)
            self.mha = nn.MultiheadAttention(D, 2, batch_first=True)

        def forward(self, ids, pad):
            h = self.tok(ids)
            return self.mha(h, h, h, key_padding_mask=pad, need_weights=False)[0]

    ids = torch.as_tensor(_ids(8))
    ep = torch.export.export(TwoInputs().eval(), (ids, ids == 0))
    with pytest.raises(ConversionError, match=r"the model takes 2 inputs; .* \(a padding mask is computed inside "
                                              r"the model from the ids: ids == PAD\)"):
        fabformer.convert(ep, calibration=_ids(8))


def test_nonzero_pad_and_causal_padding_mask_csim_and_rtl_bit_exact(tmp_path):
    """PAD 3 (the keep mask is ids - 3, an add_const) and a causal + padding mask (mask_fill causal) through
    C-simulation and the RTL (Verilator), bit for bit with golden."""
    hls = pytest.importorskip("fabformer.hls")
    from fabformer.rtl import DesignSet, generate
    from fabformer.sim import run_many
    x_text = _ids(64, seed=5, pad=3)
    x_causal = _ids(64, seed=6)
    x_causal[:, 0] = np.maximum(x_causal[:, 0], 1)
    graphs = [fabformer.convert(_Text(3, "parameter"), calibration=x_text),
              fabformer.convert(_Causal("float_mask", pad_too=True), calibration=x_causal)]
    for k, (g, x) in enumerate(zip(graphs, (x_text, x_causal))):
        p = hls.write(g, tmp_path / f"hls{k}")
        p.compile()
        want = np.asarray(g.predict(x[:32], trace=True)[1][g.outputs[0]])
        np.testing.assert_array_equal(p.predict(x[:32], raw=True), want)
    ds = DesignSet([generate(g) for g in graphs], name="torch_masks")
    for r in run_many([(m, x[:2]) for m, x in zip(ds.members, (x_text, x_causal))], simulator="verilator"):
        assert r.mismatches == 0, "\n".join(r.mismatch_report[:10])
        np.testing.assert_array_equal(r.raw, r.expected_raw)


def test_data_unsqueeze_is_listed_with_the_other_problems():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return torch.tanh(self.lin(x).unsqueeze(1))

    with pytest.raises(ConversionError) as e:
        fabformer.convert(M(), calibration=np.zeros((8, 4)))
    msg = str(e.value)
    assert "function aten.unsqueeze in the model: supported on a padding mask only" in msg
    assert "function aten.tanh in the model: function not supported" in msg
