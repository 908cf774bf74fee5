"""fabformer compress: each stage on a tiny teacher/student and a small slice of digits."""
import numpy as np
import pytest

from fabformer.errors import FabformerError


@pytest.fixture(scope="module")
def small(digits):
    from fabformer.apps.data import Split
    return Split(digits.x_train[:160], digits.y_train[:160], digits.x_test[:96], digits.y_test[:96])


def _teacher(kind="logits"):
    from tensorflow import keras
    keras.utils.set_random_seed(1)
    L = keras.layers
    inp = keras.Input((8, 8))
    x = L.Dense(16, activation="relu")(L.Flatten()(inp))
    if kind == "conv":
        x = L.Conv2D(2, 3)(L.Reshape((8, 8, 1))(inp))
        x = L.Dense(10)(L.Flatten()(x))
    elif kind == "lstm":
        x = L.Dense(10)(L.LSTM(8)(inp))
    else:
        x = L.Dense(10, activation="softmax" if kind == "probs" else None)(x)
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def teacher(small):
    from tensorflow import keras
    t = _teacher()
    t.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    t.fit(small.x_train, small.y_train, epochs=5, verbose=0)
    return t


TINY = dict(d_model=4, heads=1, ff=4)


@pytest.fixture(scope="module")
def result(teacher, small):
    from fabformer.frontend.compress import CompressConfig, StudentSpec, compress
    cfg = CompressConfig(sparsity=0.5, bits=6, low_rank=2, epochs=1, finetune_epochs=1, progress=False,
                         batch_size=32)
    return compress(teacher, StudentSpec(**TINY), cfg, small)


def test_stage_table(result, small):
    names = [s.name for s in result.stages]
    assert names == ["teacher", "student", "distilled", "low-rank", "pruned", "quantized", "golden"]
    st = {s.name: s for s in result.stages}
    assert st["low-rank"].params < st["distilled"].params  # factorization saved parameters
    assert st["pruned"].nonzero <= st["pruned"].params - (st["pruned"].params - st["low-rank"].nonzero) - 1
    assert st["quantized"].bits == 6 and st["golden"].size_bits == result.graph.weight_stats()["bits"]
    # golden accuracy really is the graph's accuracy on the test split
    g = np.argmax(result.graph.predict(small.x_test), -1)
    assert result.golden_accuracy == pytest.approx(np.mean(g == small.y_test))
    d = result.to_dict("m.h5")
    assert set(d) >= {"model", "teacher_accuracy", "golden_accuracy", "sparsity", "stages"}
    assert set(d["stages"][0]) >= {"name", "params", "nonzero", "bits", "accuracy"}


def test_sparsity_equals_zero_integer_weights_of_graph(result):
    from fabformer.ir import Dense
    ws = [n.weight for n in result.graph.nodes if isinstance(n, Dense)]
    zeros = sum(int((w == 0).sum()) for w in ws)
    assert result.sparsity == zeros / sum(w.size for w in ws)
    assert result.sparsity > 0.2


def test_pruned_dense_kernels_stay_sparse_through_qat(result):
    for lay in result.student.layers:
        if type(lay).__name__ == "QDense":
            k = np.asarray(lay.kernel_quantizer_internal(lay.kernel.numpy()))
            assert np.mean(k == 0) >= 0.45, lay.name


def test_saved_student_converts_with_plain_loader(result, small, tmp_path):
    import fabformer
    from fabformer.frontend import load_keras_model
    p = tmp_path / "s.h5"
    result.student.save(p)
    g = fabformer.convert(load_keras_model(p), calibration=small.x_train)
    x = small.x_test[:16]
    assert np.array_equal(g.predict(x), result.graph.predict(x))


def test_teacher_probabilities_detected(small):
    from fabformer.frontend.compress.pipeline import teacher_logits, teacher_outputs_probabilities
    tp, tl = _teacher("probs"), _teacher("logits")
    assert teacher_outputs_probabilities(tp, small.x_train)
    assert not teacher_outputs_probabilities(tl, small.x_train)
    p = tp.predict(small.x_train[:4], verbose=0)
    z = teacher_logits(tp, small.x_train[:4], True)
    e = np.exp(z)
    assert np.allclose(e / e.sum(-1, keepdims=True), p, atol=1e-5)


def test_kd_loss():
    import tensorflow as tf
    from fabformer.frontend.compress.pipeline import _kd_loss
    rng = np.random.default_rng(0)
    s = rng.standard_normal((5, 3)).astype(np.float32)
    t = rng.standard_normal((5, 3)).astype(np.float32)
    y = np.concatenate([np.eye(3)[[0, 1, 2, 0, 1]], t], 1).astype(np.float32)
    ce = tf.keras.losses.categorical_crossentropy(y[:, :3], s, from_logits=True).numpy()
    assert np.allclose(_kd_loss(3, 2.0, 1.0)(y, s).numpy(), ce, atol=1e-6)
    y_same = np.concatenate([y[:, :3], s], 1)
    assert np.allclose(_kd_loss(3, 2.0, 0.0)(y_same, s).numpy(), 0, atol=1e-5)  # KL(p||p) = 0
    assert np.all(_kd_loss(3, 2.0, 0.0)(y, s).numpy() > 0)


def test_low_rank_is_truncated_svd():
    from fabformer.frontend.compress import StudentSpec, build_student
    from fabformer.frontend.compress.pipeline import low_rank_factorize
    spec = StudentSpec(**TINY)
    m = build_student(spec)
    new, ranks = low_rank_factorize(m, spec, 2, (8, 8), 10)
    assert ranks == {"embed": 2, "head": 2}  # ff1, ff2 (4x4): rank 2 saves nothing
    k = m.get_layer("head").kernel.numpy()
    u, s, vt = np.linalg.svd(k, full_matrices=False)
    prod = new.get_layer("head_lr").kernel.numpy() @ new.get_layer("head").kernel.numpy()
    assert np.allclose(prod, (u[:, :2] * s[:2]) @ vt[:2], atol=1e-5)
    with pytest.raises(FabformerError, match="low_rank=8 saves no parameters"):
        low_rank_factorize(m, spec, 8, (8, 8), 10)


def test_global_scope_hits_target_overall():
    from fabformer.frontend.compress import StudentSpec, build_student
    from fabformer.frontend.compress.pipeline import _prune_targets
    m = build_student(StudentSpec(**TINY))
    names = ["embed", "ff1", "ff2", "head"]
    t = _prune_targets(m, names, 0.6, "global")
    sizes = {n: m.get_layer(n).kernel.numpy().size for n in names}
    overall = sum(t[n] * sizes[n] for n in names) / sum(sizes.values())
    assert overall == pytest.approx(0.6, abs=0.01)
    assert len(set(round(v, 3) for v in t.values())) > 1  # not the same per layer
    assert _prune_targets(m, names, 0.6, "layer") == {n: 0.6 for n in names}


@pytest.mark.parametrize("kw, msg", [
    (dict(sparsity=1.0), r"sparsity must be a number in \[0, 1\), not 1.0"),
    (dict(sparsity=-0.1), r"sparsity must be a number in \[0, 1\), not -0.1"),
    (dict(bits=1), r"bits must be an integer in 2..16, not 1"),
    (dict(scope="row"), r"pruning scope must be one of layer, global, not 'row'"),
    (dict(alpha=2.0), r"alpha must be a number in \[0, 1\], not 2.0"),
    (dict(low_rank=0), r"low_rank must be a positive integer"),
])
def test_bad_config(kw, msg):
    from fabformer.frontend.compress import CompressConfig
    with pytest.raises(FabformerError, match=msg):
        CompressConfig(**kw)


@pytest.mark.parametrize("text, msg", [
    ("d_model=16,heads=2", "student: missing ff"),
    ("d_model=16,heads=2,ff=x", "student: ff must be an integer, not 'x'"),
    ("width=3,heads=2,ff=4,d_model=8", "student: bad item 'width=3'"),
    ("d_model=15,heads=2,ff=4", "d_model=15 is not divisible by heads=2"),
])
def test_bad_student(text, msg):
    from fabformer.frontend.compress import parse_student
    with pytest.raises(FabformerError, match=msg):
        parse_student(text)


def test_student_bigger_than_teacher(teacher, small):
    from fabformer.frontend.compress import CompressConfig, StudentSpec, compress
    with pytest.raises(FabformerError, match=r"student d_model=64,heads=2,ff=64 has \d+ parameters, more than "
                                             r"the teacher's 1210"):
        compress(teacher, StudentSpec(64, 2, 64), CompressConfig(progress=False), small)


@pytest.mark.parametrize("kind, cls", [("conv", "Conv2D"), ("lstm", "LSTM")])
def test_unsupported_teacher(kind, cls, small):
    from fabformer.frontend.compress import CompressConfig, StudentSpec, compress
    with pytest.raises(FabformerError, match=rf"teacher model has unsupported layers:\n  - layer '\w+' \({cls}\)"):
        compress(_teacher(kind), StudentSpec(**TINY), CompressConfig(progress=False), small)


def test_cli_bad_arguments(capsys, tmp_path):
    from fabformer.apps.cli import main
    rc = main(["compress", "--teacher", "x.h5", "--student", "d_model=4,heads=1,ff=4", "--sparsity", "1.5",
               "-o", str(tmp_path / "o")])
    assert rc == 2
    assert "fabformer compress: error: sparsity must be a number in [0, 1), not 1.5" in capsys.readouterr().err
    rc = main(["compress", "--teacher", str(tmp_path / "none.h5"), "--student", "d_model=4,heads=1,ff=4",
               "-o", str(tmp_path / "o")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
