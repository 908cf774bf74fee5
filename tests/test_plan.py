"""The golden model's precomputed plan (fabformer.plan) equals the specification
(the array-API op functions in fabformer.golden, ``fast=False``) bit for bit: every op
kind, saturating and wrapping overflow, round-half-up and truncating requantization,
random and edge inputs, every intermediate tensor."""
import numpy as np
import pytest

from fabformer import golden
from fabformer.fixed import FixedType, Overflow, Rounding
from fabformer.ir import Dense, Quantize
from fabformer.plan import plan_for
from fabformer.apps.testing import OP_KINDS, classifier_graph, encoder_graph, op_graph, random_inputs


def _with_rounding(g, rounding):
    tables = {n.output for n in g.nodes if n.kind == "lookup"}  # a table's type is its own
    for name, t in list(g.tensors.items()):
        if t.type is not None and name not in tables:
            g.retype(name, t.type.with_(rounding=rounding))
    return g.verify()


def _edge_inputs(g, n=64, seed=1):
    """Exact ties (k + 1/2 LSB), the type's ends and just past them, zeros, huge values, inf."""
    shape = tuple(g.tensors[g.inputs[0]].shape)
    t = g.type_of([nd for nd in g.nodes if nd.kind == "quantize"][0].output)
    rng = np.random.default_rng(seed)
    lsb = 2.0 ** -t.frac
    pool = np.concatenate([
        (rng.integers(t.min_int - 4, t.max_int + 4, 200) + 0.5) * lsb,
        np.array([t.min_value, t.max_value, t.min_value - lsb, t.max_value + lsb, 0.0, -0.0, lsb / 2,
                  -lsb / 2, 1e300, -1e300, np.inf, -np.inf]),
    ])
    x = rng.choice(pool, (n,) + shape)
    x[0] = 0.0
    x[1] = t.max_value
    x[2] = t.min_value
    x[3] = np.inf
    x[4] = -np.inf
    return x


def _assert_equal(g, x, need_fast=True):
    out_s, env_s = golden.run(g, x, trace=True, fast=False)
    out_f, env_f = golden.run(g, x, trace=True)
    assert set(env_s) == set(env_f)
    for k in env_s:
        a, b = np.asarray(env_s[k]), np.asarray(env_f[k])
        assert a.dtype == b.dtype and a.shape == b.shape, k
        bad = np.argwhere(a != b) if k != g.inputs[0] else []
        assert len(bad) == 0, f"tensor {k!r} index {tuple(bad[0])}: spec {a[tuple(bad[0])]}, plan {b[tuple(bad[0])]}"
    assert np.array_equal(out_s, out_f)
    assert np.array_equal(golden.run(g, x), out_s)  # the untraced (chunked, buffer-freeing) path too
    if need_fast:  # the fast steps ran (else this test would only compare the spec with itself)
        slow = [k for k, v in plan_for(g).fast.items() if not v]
        assert not slow, f"nodes run by the specification instead of fast steps: {slow}"


@pytest.mark.parametrize("rounding", [Rounding.RND, Rounding.TRN])
@pytest.mark.parametrize("overflow", [Overflow.SAT, Overflow.WRAP])
@pytest.mark.parametrize("kind", OP_KINDS)
def test_plan_equals_spec_every_op(kind, overflow, rounding):
    g = _with_rounding(op_graph(kind, seed=3, overflow=overflow), rounding)
    for scale in (1.0, 8.0, 1e3):
        _assert_equal(g, random_inputs(g, 300, seed=int(scale), scale=scale))
    _assert_equal(g, _edge_inputs(g))


@pytest.mark.parametrize("overflow", [Overflow.SAT, Overflow.WRAP])
def test_plan_equals_spec_whole_models(overflow, example_graph, digits):
    g = encoder_graph(seed=2)
    _assert_equal(g, random_inputs(g, 2000, seed=5))  # > one chunk
    _assert_equal(g, _edge_inputs(g))
    _assert_equal(example_graph, digits.x_test)
    c = classifier_graph()
    for nd in c.nodes:
        if nd.kind != "quantize":
            c.retype(nd.output, c.type_of(nd.output).with_(overflow=overflow))
    _assert_equal(c.verify(), random_inputs(c, 500, scale=20.0))


def test_plan_nan_inputs_follow_spec():
    g = op_graph("dense")
    x = random_inputs(g, 20)
    x[3, 1, 2] = np.nan
    with np.errstate(invalid="ignore"):
        _assert_equal(g, x)


def test_plan_falls_back_where_it_cannot_prove_exactness():
    """A 60-bit accumulator cannot be proved below 2**52: that node runs the specification,
    its consumers still run fast steps, and the bits are the same."""
    g = op_graph("add")
    d = g.node("d")
    big = FixedType(48, 36)
    g.replace(d, Dense(d.name, d.inputs, d.output, weight=d.weight * 0 + (1 << 46), weight_type=big,
                       bias=d.bias, bias_type=d.bias_type))
    g.verify()
    p = plan_for(g)
    assert p.fast == {"quant": True, "d": False, "op": True}
    _assert_equal(g, random_inputs(g, 200), need_fast=False)


def test_plan_rebuilt_when_graph_changes():
    g = op_graph("relu")
    x = random_inputs(g, 50)
    p1 = plan_for(g)
    assert plan_for(g) is p1
    before = g.predict(x)
    g.retype("y", g.type_of("y").with_(frac=2))
    assert plan_for(g) is not p1
    assert not np.array_equal(g.predict(x), before)
    _assert_equal(g, x)
    q = g.node("quant")
    g.replace(q, Quantize(q.name, q.inputs, q.output))
    assert plan_for(g) is not p1


# -- the compiled C kernel (fabformer.kernel) for small batches -------------------------------
kernel = pytest.importorskip("fabformer.kernel")
needs_cc = pytest.mark.skipif(kernel.compiler() is None, reason="no C compiler")


def _kernel_equal(g, x):
    p = plan_for(g)
    k = p.build_kernel()
    assert k is not None and p.kernel_state == "ready"
    _, env = golden.run(g, x, trace=True, fast=False)
    got = k(np.asarray(x, dtype=np.float64))
    for name, m in zip(g.outputs, got):
        want = np.asarray(env[name])
        bad = np.argwhere(m != want)
        assert len(bad) == 0, f"{name} index {tuple(bad[0])}: spec {want[tuple(bad[0])]}, kernel {m[tuple(bad[0])]}"
    # and through golden.run (small batches take the kernel once it is ready)
    for i in range(3):
        assert np.array_equal(golden.run(g, x[i:i + 1]), golden.run(g, x[i:i + 1], fast=False))


@needs_cc
@pytest.mark.parametrize("rounding", [Rounding.RND, Rounding.TRN])
@pytest.mark.parametrize("overflow", [Overflow.SAT, Overflow.WRAP])
@pytest.mark.parametrize("kind", OP_KINDS)
def test_kernel_equals_spec_every_op(kind, overflow, rounding):
    g = _with_rounding(op_graph(kind, seed=4, overflow=overflow), rounding)
    x = np.concatenate([random_inputs(g, 200, seed=1, scale=8.0), random_inputs(g, 100, seed=2, scale=1e3),
                        _edge_inputs(g)])
    x[7, 0, 0] = np.nan
    with np.errstate(invalid="ignore"):
        _kernel_equal(g, x)


@needs_cc
def test_kernel_whole_models(example_graph, digits):
    _kernel_equal(example_graph, digits.x_test)
    g = encoder_graph(seed=3)
    _kernel_equal(g, np.concatenate([random_inputs(g, 300, seed=4), _edge_inputs(g)]))


@needs_cc
def test_kernel_built_in_the_background_after_calls():
    import fabformer.plan as plan_mod
    g = op_graph("softmax", seed=9)
    x = random_inputs(g, 40, seed=3)
    p = plan_for(g)
    assert p.kernel_state == "idle"
    ref = golden.run(g, x, fast=False)
    outs = [golden.run(g, x[i:i + 1]) for i in range(plan_mod.KERNEL_AFTER + 2)]
    import time
    for _ in range(600):
        if p.kernel_state != "building":
            break
        time.sleep(0.1)
    assert p.kernel_state == "ready"
    outs += [golden.run(g, x[i:i + 1]) for i in range(len(outs), len(x))]
    assert np.array_equal(np.concatenate(outs), ref)
    # a large batch: the kernel and the plan are timed once on one chunk; same bits either way
    big = random_inputs(g, plan_mod.TUNE_SAMPLES + 100, seed=5)
    assert np.array_equal(golden.run(g, big), golden.run(g, big, fast=False))
    assert p.large in ("kernel", "plan")


def test_kernel_not_used_where_the_plan_cannot_prove():
    g = op_graph("add")
    d = g.node("d")
    g.replace(d, Dense(d.name, d.inputs, d.output, weight=d.weight * 0 + (1 << 46), weight_type=FixedType(48, 36),
                       bias=d.bias, bias_type=d.bias_type))
    p = plan_for(g.verify())
    assert p.build_kernel() is None and p.kernel_state == "unavailable"
    x = random_inputs(g, 20)
    assert np.array_equal(golden.run(g, x[:1]), golden.run(g, x[:1], fast=False))


def test_graph_with_a_plan_still_pickles_and_copies():
    """The plan (closures, a loaded C library) lives beside the graph, not on it: process
    pools and Ray can still send a graph that has been run."""
    import copy
    import pickle
    g = encoder_graph(seed=5)
    x = random_inputs(g, 30)
    y = g.predict(x)
    plan_for(g).build_kernel()
    g2 = pickle.loads(pickle.dumps(g))
    g3 = copy.deepcopy(g)
    assert np.array_equal(g2.predict(x), y) and np.array_equal(g3.predict(x), y)
    assert plan_for(g2) is not plan_for(g)
