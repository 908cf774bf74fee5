"""Golden model: accuracy of the non-linear units over wide ranges, IR checks, persistence."""
import json

import numpy as np
import pytest

import fabformer
from fabformer import tables
from fabformer.errors import FabformerError, GraphError
from fabformer.fixed import FixedType, Overflow, Rounding
from fabformer.ir import Dense, Graph, LayerNorm, Quantize, Relu, Softmax
from fabformer.apps.testing import OP_KINDS, encoder_graph, op_graph, random_inputs

WIDE = FixedType(20, 10, True, Rounding.RND, Overflow.SAT)  # +-512, lsb 2**-10


def _softmax_graph(recip_bits=8):
    g = Graph("sm")
    g.add_input("x", (4, 16))
    g.add(Quantize("q", ("x",), "xq"), WIDE)
    g.add(Softmax("sm", ("xq",), "y", exp_table=tables.exp_table(WIDE.frac, 17, 10),
                  recip_table=tables.recip_table(recip_bits, 17), recip_bits=recip_bits),
          FixedType(16, 15, False, Rounding.RND, Overflow.SAT))
    g.outputs = ["y"]
    return g.verify()


@pytest.mark.parametrize("log2_scale", range(-8, 9))
def test_softmax_accurate_over_whole_range(log2_scale):
    """|golden - exact softmax(x_q)| <= 0.01 for inputs of magnitude 2**-8 .. 2**8.

    Bound: exp-table bin half-width 2**(shift-1-frac) (0.0078 here) + reciprocal table
    2**-(R+1) (0.002) + sum/exp rounding L*2**-16 + output rounding 2**-16."""
    g = _softmax_graph()
    x = np.random.default_rng(log2_scale + 100).uniform(-1, 1, (300, 4, 16)) * 2.0 ** log2_scale
    out, tr = g.predict(x, trace=True)
    xq = tr["xq"] * 2.0 ** -WIDE.frac
    e = np.exp(xq - xq.max(-1, keepdims=True))
    ref = e / e.sum(-1, keepdims=True)
    assert np.abs(out - ref).max() <= 0.01
    assert np.allclose(out.sum(-1), 1.0, atol=0.03)


def _ln_graph(gamma):
    n = gamma.shape[0]
    gt = FixedType(16, 10)
    g = Graph("ln")
    g.add_input("x", (4, n))
    g.add(Quantize("q", ("x",), "xq"), WIDE)
    g.add(LayerNorm("ln", ("xq",), "y", gamma=np.round(gamma * np.sqrt(n) * 2 ** 10), gamma_type=gt,
                    beta=np.arange(n) - n // 2, beta_type=FixedType(16, 10), eps=1,
                    invsqrt_table=tables.invsqrt_table(8, 17), invsqrt_bits=8,
                    norm_type=FixedType(18, 16, True, Rounding.RND, Overflow.SAT)),
          FixedType(16, 10, True, Rounding.RND, Overflow.SAT))
    g.outputs = ["y"]
    return g.verify()


@pytest.mark.parametrize("log2_var", range(-8, 9, 2))
def test_layernorm_accurate_over_whole_variance_range(log2_var):
    """|golden - exact layer norm(x_q)| <= 0.01 * max|gamma| + 2 output LSBs for variances 2**-8 .. 2**8.

    Bound: inverse-sqrt table midpoint 2**-(R+2) relative, times |x_hat| <= sqrt(N-1) ~ 4,
    plus the rounding of z (2**-17) and of the output (2**-11)."""
    rng = np.random.default_rng(log2_var + 50)
    gamma = rng.uniform(0.5, 2.0, 16)
    g = _ln_graph(gamma)
    sd = 2.0 ** (log2_var / 2)
    x = rng.standard_normal((300, 4, 16)) * sd + rng.uniform(-100, 100, (300, 4, 1))
    out, tr = g.predict(x, trace=True)
    xq = tr["xq"] * 2.0 ** -WIDE.frac
    mu, var = xq.mean(-1, keepdims=True), xq.var(-1, keepdims=True)
    n = g.node("ln")
    beta = n.beta * 2.0 ** -10
    eps = n.eps * 2.0 ** (-2 * WIDE.frac) / 16 ** 3
    gq = n.gamma * 2.0 ** -10 / 4
    ref = (xq - mu) / np.sqrt(var + eps) * gq + beta  # exact layer norm with the graph's own constants
    assert np.allclose(g.predict(xq, mode="float"), ref)
    assert np.abs(out - ref).max() <= 0.01 * gamma.max() + 2 * 2 ** -10


@pytest.mark.parametrize("kind", OP_KINDS)
def test_every_op_runs_batched_like_per_sample(kind):
    g = op_graph(kind)
    x = random_inputs(g, 16)
    whole = g.predict(x)
    single = np.concatenate([g.predict(x[i:i + 1]) for i in range(16)])
    assert np.array_equal(whole, single)


def test_save_load_predict_identical_bits(tmp_path):
    g = encoder_graph(sparsity=0.5)
    x = random_inputs(g, 64, scale=1.0)
    p1 = g.save(tmp_path / "a.json")
    g2 = fabformer.load(p1)
    p2 = g2.save(tmp_path / "b.json")
    assert p1.read_bytes() == p2.read_bytes()
    _, t1 = g.predict(x, trace=True)
    _, t2 = g2.predict(x, trace=True)
    assert all(np.array_equal(t1[k], t2[k]) for k in t1)


def test_trace_gives_integers_and_float_mode_differs_slightly():
    g = encoder_graph()
    x = random_inputs(g, 8, scale=0.5)
    out, tr = g.predict(x, trace=True)
    assert set(tr) >= {n.output for n in g.nodes}
    assert all(v.dtype == np.int64 for k, v in tr.items() if k != "x")
    f = g.predict(x, mode="float")
    assert f.shape == out.shape and not np.array_equal(f, out)
    with pytest.raises(FabformerError, match="predict mode must be 'int' or 'float', not 'fp16'"):
        g.predict(x, mode="fp16")
    with pytest.raises(FabformerError, match=r"input 'x' expects shape \(batch, 8, 8\), got \(3, 4\)"):
        g.predict(np.zeros((3, 4)))


def test_graph_is_immutable_once_verified():
    g = encoder_graph()
    assert g.frozen
    with pytest.raises(FabformerError, match="graph 'encoder' is immutable once verified"):
        g.add(Relu("r", ("logits",), "r"), g.type_of("logits"))
    with pytest.raises(FabformerError, match="immutable once verified"):
        g.outputs = ["xq"]
    with pytest.raises(TypeError):
        g.meta["x"] = 1
    with pytest.raises(AttributeError):
        g.nodes.append(g.nodes[0])
    g2 = g.with_meta(source="test")
    assert g2.meta["source"] == "test" and "source" not in g.meta and g2.frozen
    assert g.edit().frozen is False


def test_verifier_reports_every_problem_at_once():
    g = encoder_graph().edit()
    bad = g.node("embed")
    g.replace(bad, Dense(bad.name, ("nowhere",), bad.output, weight=bad.weight, weight_type=bad.weight_type,
                         bias=bad.bias, bias_type=bad.bias_type))
    g.outputs.append("ghost")
    q = g.node("q")
    g.replace(q, Dense(q.name, q.inputs, q.output, weight=q.weight * 1000, weight_type=q.weight_type,
                       bias=q.bias, bias_type=q.bias_type))
    with pytest.raises(GraphError) as e:
        g.verify()
    msg = str(e.value)
    assert "embed: input(s) ['nowhere'] not produced before this node" in msg
    assert "graph output 'ghost' is never produced" in msg
    assert "q: weight mantissas outside fixed<8,2,TRN,WRAP>" in msg
    assert "3 problems" in msg


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(FabformerError, match="does not exist"):
        fabformer.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(FabformerError, match="not a fabformer graph file"):
        fabformer.load(tmp_path / "x.json")
    d = encoder_graph().to_dict()
    d["nodes"][1]["kind"] = "conv2d"
    (tmp_path / "y.json").write_text(json.dumps(d))
    with pytest.raises(FabformerError, match="unknown op kind 'conv2d'; valid kinds: add, dense"):
        fabformer.load(tmp_path / "y.json")


def test_constants_must_be_integers():
    with pytest.raises(FabformerError, match="constants must be integer mantissas, not 0.5"):
        Dense("d", ("x",), "y", weight=np.array([[0.5]]), weight_type=FixedType(8, 7), bias=np.zeros(1),
              bias_type=FixedType(8, 7))
