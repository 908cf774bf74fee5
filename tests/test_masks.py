"""Attention masks (padding mask from a model input, causal) and masked mean pooling: random masks,
fully masked rows included, golden properties, C-simulation and RTL bit for bit."""
import numpy as np
import pytest

from fabformer.apps import testing


def _inputs(g, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, (n,) + g.tensors["x"].shape)
    m = (rng.random((n,) + g.tensors["mask"].shape) < 0.6).astype(float)
    m[::4] = 0.0  # every fourth sample: every key masked (fully masked rows, an empty mean)
    m[1::4, 0] = 1.0  # and ones with exactly one kept key
    m[1::4, 1:] = 0.0
    return [x, m]


@pytest.fixture(scope="module", params=[False, True], ids=["padding", "padding+causal"])
def graph(request):
    return testing.masked_attention_graph(causal=request.param)


def test_masked_entries_are_excluded_exactly(graph):
    x, m = _inputs(graph, 64, seed=1)
    _, env = graph.predict([x, m], trace=True)
    probs = np.asarray(env["probs"])  # [n, H, T, T]
    T = m.shape[1]
    keep = (m[:, None, None, :] != 0) & np.ones((1, 1, T, 1), bool)
    if graph.node("mask_fill").causal:
        keep = keep & np.tril(np.ones((T, T), bool))
    full = ~keep.any(-1)  # rows with every key masked
    assert full.any() and (~full).any()
    keep_h = np.broadcast_to(keep, probs.shape)
    full_h = np.broadcast_to(full[..., None], probs.shape)
    assert np.any(~keep_h & ~full_h) and np.all(probs[~keep_h & ~full_h] == 0)  # masked: exactly 0
    kept_rows = probs.sum(-1)[~full.repeat(probs.shape[1], 1)] * 2.0 ** -11
    assert np.all(np.abs(kept_rows - 1) < 0.02)
    # a fully masked row is uniform (as Keras: every score equally -inf-like)
    fr = probs[full.repeat(probs.shape[1], 1)]
    assert np.all(fr == fr[:, :1])


def test_masked_mean_matches_the_definition(graph):
    x, m = _inputs(graph, 64, seed=2)
    _, env = graph.predict([x, m], trace=True)
    ctx, pooled = np.asarray(env["ctxm"]), np.asarray(env["pooled"])
    n = graph.node("pool")
    c = (m != 0).sum(1)
    s = (ctx * (m != 0)[:, :, None]).sum(1)
    from fabformer.fixed import requantize
    want = requantize(s * n.recip[c][:, None], graph.type_of("ctxm").frac + n.scale_frac, graph.type_of("pooled"))
    np.testing.assert_array_equal(pooled, want)
    assert np.all(pooled[c == 0] == 0)


def test_csim_bit_exact(graph, tmp_path):
    hls = pytest.importorskip("fabformer.hls")
    p = hls.write(graph, tmp_path / "p")
    p.compile()
    x = _inputs(graph, 100, seed=3)
    np.testing.assert_array_equal(p.predict(x, raw=True), np.asarray(graph.predict(x, trace=True)[1]["logits"]))


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_rtl_bit_exact(graph, simulator):
    from fabformer.rtl import generate
    from fabformer.sim import run
    d = generate(graph)
    r = run(d, _inputs(graph, 8 if simulator == "verilator" else 4, seed=4), simulator=simulator)
    assert r.mismatches == 0, "\n".join(r.mismatch_report[:10])
    np.testing.assert_array_equal(r.raw, r.expected_raw)
