"""The compression pipeline: teacher -> student -> distilled -> [low-rank] -> pruned -> quantized -> golden.

Stages (each row of the stage table):

- ``teacher``: the given Keras classifier, float.
- ``student``: the encoder template trained on the hard labels alone (the baseline).
- ``distilled``: the same student (same initial weights) trained on
  ``alpha * CE(labels) + (1 - alpha) * T**2 * KL(softmax(teacher/T) || softmax(student/T))``.
- ``low-rank`` (``low_rank=r``): each Dense kernel with ``r < min(in, out)`` and fewer
  parameters as two factors becomes two Dense layers (truncated SVD), fine-tuned.
- ``pruned``: tensorflow-model-optimization ``prune_low_magnitude`` on the Dense
  layers, ``PolynomialDecay`` from 0 to the target over the first two thirds of the
  fine-tuning, wrappers stripped.  Scope ``layer``: every Dense kernel to the
  target; ``global``: one magnitude threshold over all of them.  The attention
  projections (inside Keras MultiHeadAttention) are not pruned.
- ``quantized``: the QKeras twin (QDense, quantized activations), weights copied,
  quantization-aware fine-tuning with the pruning masks held fixed.
- ``golden``: ``fabformer.convert`` of the quantized student, run by the golden model.

``sparsity`` in the result is measured on the converted graph: the fraction of
zero integer weights over all its Dense weight matrices (attention projections included).
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from ...errors import FabformerError
from .template import DENSE_LAYERS, StudentSpec, build_student, copy_weights

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: layer types a teacher may contain (feed-forward layers over a (tokens, features) input)
TEACHER_LAYERS = sorted([
    "InputLayer", "Dense", "QDense", "QActivation", "Activation", "ReLU", "Softmax", "LeakyReLU", "ELU",
    "MultiHeadAttention", "LayerNormalization", "BatchNormalization", "Add", "Subtract", "Multiply",
    "Average", "Concatenate", "Flatten", "Reshape", "Permute", "GlobalAveragePooling1D",
    "GlobalMaxPooling1D", "AveragePooling1D", "MaxPooling1D", "Conv1D", "QConv1D", "Dropout",
    "EinsumDense", "TFOpLambda", "SlicingOpLambda"])
SCOPES = ("layer", "global")


@dataclass
class CompressConfig:
    sparsity: float = 0.5        #: target fraction of zero weights in the pruned Dense kernels
    bits: int = 8                #: weight and activation bits of the quantized student (biases max(bits, 8))
    low_rank: int | None = None  #: rank of the truncated-SVD factorization of Dense kernels (None: off)
    epochs: int = 80             #: epochs of the student baseline and of distillation
    finetune_epochs: int = 30    #: epochs of low-rank, pruning and QAT fine-tuning (each)
    temperature: float = 4.0     #: distillation temperature T
    alpha: float = 0.2           #: weight of the hard-label loss (1 - alpha: distillation loss)
    scope: str = "layer"         #: pruning scope: "layer" or "global"
    seed: int = 0
    batch_size: int = 32
    learning_rate: float = 3e-3
    progress: bool = True        #: progress bars on stderr

    def __post_init__(self):
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
            raise FabformerError(f"sparsity must be a number in [0, 1), not {s!r}")
        b = self.bits
        if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 16:
            raise FabformerError(f"bits must be an integer in 2..16, not {b!r}")
        r = self.low_rank
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise FabformerError(f"low_rank must be a positive integer (or None to skip), not {r!r}")
        for k in ("epochs", "finetune_epochs", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if k == "batch_size" else 0):
                raise FabformerError(f"{k} must be a non-negative integer, not {v!r}")
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise FabformerError(f"temperature must be a number > 0, not {self.temperature!r}")
        if not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise FabformerError(f"alpha must be a number in [0, 1], not {self.alpha!r}")
        if self.scope not in SCOPES:
            raise FabformerError(f"pruning scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")


@dataclass
class Stage:
    name: str
    params: int
    nonzero: int
    bits: int
    size_bits: int
    accuracy: float


@dataclass
class CompressResult:
    student: object                   #: the quantized QKeras student (keras.Model)
    graph: object                     #: its converted Graph
    teacher_accuracy: float
    golden_accuracy: float
    sparsity: float                   #: zero fraction of the converted graph's Dense weights
    stages: list = field(default_factory=list)
    spec: StudentSpec | None = None
    config: CompressConfig | None = None

    def to_dict(self, model_path=None) -> dict:
        return {"model": None if model_path is None else str(model_path),
                "teacher_accuracy": self.teacher_accuracy, "golden_accuracy": self.golden_accuracy,
                "sparsity": self.sparsity, "student": str(self.spec),
                "config": {k: v for k, v in asdict(self.config).items() if k != "progress"},
                "stages": [asdict(s) for s in self.stages]}

    def table(self) -> str:
        head = f"| {'stage':<10} | {'params':>7} | {'non-zero':>8} | {'bits':>4} | {'size (bits)':>11} | {'accuracy':>8} |"
        rows = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
        for s in self.stages:
            rows.append(f"| {s.name:<10} | {s.params:>7} | {s.nonzero:>8} | {s.bits:>4} | {s.size_bits:>11} | "
                        f"{100 * s.accuracy:>7.2f}% |")
        return "\n".join(rows)


def parse_student(text: str) -> StudentSpec:
    """``"d_model=16,heads=2,ff=32"`` (``key_dim=`` optional) -> :class:`StudentSpec`."""
    valid = ("d_model", "heads", "ff", "key_dim")
    kw = {}
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        k, eq, v = part.partition("=")
        k = k.strip()
        if not eq or k not in valid:
            raise FabformerError(f"student: bad item {part!r}; expected key=value with keys {', '.join(valid)}")
        try:
            kw[k] = int(v)
        except ValueError:
            raise FabformerError(f"student: {k} must be an integer, not {v.strip()!r}") from None
    missing = [k for k in valid[:3] if k not in kw]
    if missing:
        raise FabformerError(f"student: missing {', '.join(missing)}; e.g. d_model=16,heads=2,ff=32")
    return StudentSpec(**kw)


# -- teacher ---------------------------------------------------------------------------
def check_teacher(teacher, input_shape, classes: int) -> None:
    problems = []
    for lay in teacher.layers:
        cls = type(lay).__name__
        if cls not in TEACHER_LAYERS:
            problems.append(f"layer {lay.name!r} ({cls}) is not supported in a teacher")
    if problems:
        raise FabformerError("teacher model has unsupported layers:\n" + "\n".join(f"  - {p}" for p in problems)
                             + f"\nsupported layer types: {', '.join(TEACHER_LAYERS)}")
    ishape = tuple(teacher.input_shape[1:]) if not isinstance(teacher.input_shape, list) else None
    if ishape != tuple(input_shape):
        raise FabformerError(f"teacher input shape {teacher.input_shape} does not match the data "
                             f"(None, {', '.join(map(str, input_shape))})")
    oshape = teacher.output_shape
    if isinstance(oshape, list) or tuple(oshape[1:]) != (classes,):
        raise FabformerError(f"teacher output shape {oshape} does not match the {classes} classes (None, {classes})")


def teacher_outputs_probabilities(teacher, x) -> bool:
    """True when the teacher ends in a softmax (by its last layer, else by its outputs)."""
    last = teacher.layers[-1]
    if type(last).__name__ == "Softmax":
        return True
    act = getattr(last, "activation", None)
    if getattr(act, "__name__", None) == "softmax":
        return True
    if act is not None and getattr(act, "__name__", None) not in (None, "linear"):
        return False
    p = np.asarray(teacher.predict(x[:64], verbose=0))
    return bool(np.all(p >= 0) and np.allclose(p.sum(-1), 1.0, atol=1e-3))


def teacher_logits(teacher, x, probabilities: bool) -> np.ndarray:
    out = np.asarray(teacher.predict(x, verbose=0, batch_size=512), dtype=np.float64)
    return np.log(np.clip(out, 1e-7, 1.0)) if probabilities else out


# -- training helpers ------------------------------------------------------------------
def _kd_loss(classes: int, temperature: float, alpha: float):
    import tensorflow as tf
    T = float(temperature)

    def loss(y, s):
        hard, t = y[:, :classes], y[:, classes:]
        ce = tf.keras.losses.categorical_crossentropy(hard, s, from_logits=True)
        pt = tf.nn.softmax(t / T)
        kl = tf.reduce_sum(pt * (tf.math.log(pt + 1e-12) - tf.nn.log_softmax(s / T)), axis=-1)
        return alpha * ce + (1.0 - alpha) * T * T * kl
    return loss


class _Progress:
    """A rich progress bar per training stage (on stderr), or nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def callback(self, title: str, epochs: int):
        from tensorflow import keras
        enabled = self.enabled

        class CB(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if enabled:
                    from rich.console import Console
                    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
                    self.p = Progress(TextColumn(f"{title:<10}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                                      console=Console(file=sys.stderr), transient=False)
                    self.p.start()
                    self.t = self.p.add_task(title, total=epochs, loss="-")

            def on_epoch_end(self, epoch, logs=None):
                if enabled:
                    self.p.update(self.t, advance=1, loss=f"{(logs or {}).get('loss', float('nan')):.4f}")

            def on_train_end(self, logs=None):
                if enabled:
                    self.p.stop()
        return CB()


def _fit(model, x, y, loss, epochs, cfg: CompressConfig, progress: _Progress, title: str, callbacks=()):
    from tensorflow import keras
    if epochs <= 0:
        return model
    model.compile(keras.optimizers.Adam(cfg.learning_rate), loss)
    model.fit(x, y, epochs=epochs, batch_size=cfg.batch_size, shuffle=True, verbose=0,
              callbacks=[*callbacks, progress.callback(title, epochs)])
    return model


def _accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=512), -1) == y))


def _keras_stats(model, bits: int | None = None):
    """params, non-zeros (of the quantized values for QKeras layers), size in bits."""
    params = nonzero = size = 0
    for lay in model.layers:
        ws = lay.get_weights()
        qs = []
        if hasattr(lay, "kernel_quantizer_internal"):
            qs = [lay.kernel_quantizer_internal, getattr(lay, "bias_quantizer_internal", None)]
        for i, w in enumerate(ws):
            q = qs[i] if i < len(qs) else None
            v = np.asarray(q(w.astype(np.float32))) if q is not None else w
            params += w.size
            nonzero += int(np.count_nonzero(v))
            width = 32 if q is None else int(q.bits)
            size += w.size * width
    return params, nonzero, size


def _stage(name, model, x, y, bits=32) -> Stage:
    p, nz, size = _keras_stats(model)
    return Stage(name, int(p), int(nz), int(bits), int(size), _accuracy(model, x, y))


# -- stages ----------------------------------------------------------------------------
def low_rank_factorize(model, spec: StudentSpec, rank: int, input_shape, classes):
    """Replace Dense kernels by rank-``rank`` truncated-SVD factors where that saves parameters."""
    ranks = {}
    for nm in DENSE_LAYERS:
        k = model.get_layer(nm).kernel.numpy()
        n_in, n_out = k.shape
        if rank < min(n_in, n_out) and rank * (n_in + n_out) < n_in * n_out:
            ranks[nm] = rank
    if not ranks:
        raise FabformerError(f"low_rank={rank} saves no parameters in any Dense layer of student {spec}; "
                             f"choose a rank below the smaller side of a kernel")
    new = build_student(spec, input_shape, classes, ranks=ranks, name="student_lowrank")
    for lay in new.layers:
        if not lay.weights or lay.name.endswith("_lr"):
            continue
        if lay.name in ranks:
            k, b = model.get_layer(lay.name).get_weights()
            u, s, vt = np.linalg.svd(k, full_matrices=False)
            r = ranks[lay.name]
            root = np.sqrt(s[:r])
            new.get_layer(lay.name + "_lr").set_weights([u[:, :r] * root])
            lay.set_weights([root[:, None] * vt[:r], b])
        else:
            lay.set_weights(model.get_layer(lay.name).get_weights())
    return new, ranks


def _prune_targets(model, names, sparsity: float, scope: str) -> dict:
    if scope == "layer":
        return {n: sparsity for n in names}
    mags = np.concatenate([np.abs(model.get_layer(n).kernel.numpy()).ravel() for n in names])
    thr = np.quantile(mags, sparsity) if sparsity > 0 else -1.0
    return {n: float(min(0.99, np.mean(np.abs(model.get_layer(n).kernel.numpy()) <= thr))) for n in names}


def prune(model, x, y, loss, cfg: CompressConfig, progress: _Progress):
    """tfmot magnitude pruning of the Dense layers; returns (stripped model, {layer: mask})."""
    import tensorflow_model_optimization as tfmot
    from tensorflow import keras
    sp = tfmot.sparsity.keras
    names = [l.name for l in model.layers if type(l).__name__ == "Dense"]
    targets = _prune_targets(model, names, cfg.sparsity, cfg.scope)
    steps = math.ceil(len(x) / cfg.batch_size)
    epochs = max(1, cfg.finetune_epochs)
    ramp = max(1, (2 * epochs) // 3)
    freq = max(1, steps // 2)
    end = ramp * steps // freq * freq

    def wrap(layer):
        if layer.name in targets and targets[layer.name] > 0:
            sched = sp.PolynomialDecay(0.0, targets[layer.name], begin_step=0, end_step=max(end, freq),
                                       frequency=freq)
            return sp.prune_low_magnitude(layer, pruning_schedule=sched)
        return layer

    pm = keras.models.clone_model(model, clone_function=wrap)
    _fit(pm, x, y, loss, epochs, cfg, progress, "pruning", callbacks=[sp.UpdatePruningStep()])
    stripped = sp.strip_pruning(pm)
    masks = {n: (stripped.get_layer(n).kernel.numpy() != 0) for n in names}
    # tfmot cannot wrap MultiHeadAttention (its projections are built on first call): prune its
    # query/key/value/output kernels by magnitude in one shot, then fine-tune with every mask held
    att = [f"{l.name}/{p}" for l in stripped.layers if type(l).__name__ == "MultiHeadAttention"
           for p in ATTENTION_PROJECTIONS]
    if att and cfg.sparsity > 0:
        for key, target in _prune_targets_vars(stripped, att, cfg.sparsity, cfg.scope).items():
            k = _kernel(stripped, key)
            w = k.numpy()
            thr = np.quantile(np.abs(w), target)
            masks[key] = np.abs(w) > thr
            k.assign(w * masks[key])
        _fit(stripped, x, y, loss, epochs, cfg, progress, "pruning attention", callbacks=[_mask_keeper(masks)])
    return stripped, masks


ATTENTION_PROJECTIONS = ("query", "key", "value", "output")


def _kernel(model, key: str):
    """The kernel variable of a Dense layer (``name``) or of an attention projection (``mha/query``)."""
    if "/" not in key:
        return model.get_layer(key).kernel
    layer, part = key.split("/", 1)
    sub = "_output_dense" if part == "output" else f"_{part}_dense"
    return getattr(model.get_layer(layer), sub).kernel


def _prune_targets_vars(model, keys, sparsity: float, scope: str) -> dict:
    if scope == "layer":
        return {k: sparsity for k in keys}
    mags = np.concatenate([np.abs(_kernel(model, k).numpy()).ravel() for k in keys])
    thr = np.quantile(mags, sparsity)
    return {k: float(min(0.99, np.mean(np.abs(_kernel(model, k).numpy()) <= thr))) for k in keys}


def _mask_keeper(masks: dict):
    from tensorflow import keras

    class KeepMasks(keras.callbacks.Callback):
        def _apply(self):
            for n, m in masks.items():
                k = _kernel(self.model, n)
                k.assign(k.numpy() * m)

        def on_train_begin(self, logs=None):
            self._apply()

        def on_train_batch_end(self, batch, logs=None):
            self._apply()
    return KeepMasks()


def graph_sparsity(graph) -> float:
    """Fraction of zero integer weights over all Dense weight matrices of a converted graph."""
    from ...ir import Dense
    ws = [n.weight for n in graph.nodes if isinstance(n, Dense)]
    total = sum(w.size for w in ws)
    return float(sum(int(np.sum(w == 0)) for w in ws) / total) if total else 0.0


def compress(teacher, spec: StudentSpec, cfg: CompressConfig | None = None, data=None) -> CompressResult:
    """Distill, prune and quantize: ``teacher`` (keras.Model) into the template ``spec``.

    ``data``: a split with ``x_train, y_train, x_test, y_test`` (the command line passes
    the digits example's)."""
    import tensorflow as tf
    from tensorflow import keras
    from ... import convert
    cfg = cfg or CompressConfig()
    if data is None:
        raise FabformerError("compress needs data: a split with x_train, y_train, x_test, y_test "
                             "(for example fabformer.apps.data.digits())")
    xtr, ytr, xte, yte = data.x_train, data.y_train, data.x_test, data.y_test
    input_shape = tuple(xtr.shape[1:])
    classes = int(max(ytr.max(), yte.max()) + 1)
    check_teacher(teacher, input_shape, classes)
    probs = teacher_outputs_probabilities(teacher, xtr)
    student_probe = build_student(spec, input_shape, classes)
    if student_probe.count_params() > teacher.count_params():
        raise FabformerError(f"student {spec} has {student_probe.count_params()} parameters, more than the "
                             f"teacher's {teacher.count_params()}; choose a smaller d_model, heads or ff")
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    progress = _Progress(cfg.progress)
    stages = []
    t_acc = _accuracy(teacher, xte, yte)
    p, nz, size = _keras_stats(teacher)
    stages.append(Stage("teacher", p, nz, 32, size, t_acc))

    onehot = np.eye(classes)[ytr]
    y_kd = np.concatenate([onehot, teacher_logits(teacher, xtr, probs)], axis=1).astype(np.float32)
    kd = _kd_loss(classes, cfg.temperature, cfg.alpha)
    hard = _kd_loss(classes, 1.0, 1.0)

    keras.utils.set_random_seed(cfg.seed)
    base = build_student(spec, input_shape, classes)
    init = base.get_weights()
    _fit(base, xtr, y_kd, hard, cfg.epochs, cfg, progress, "student")
    stages.append(_stage("student", base, xte, yte))

    keras.utils.set_random_seed(cfg.seed)
    dist = build_student(spec, input_shape, classes, name="distilled")
    dist.set_weights(init)
    _fit(dist, xtr, y_kd, kd, cfg.epochs, cfg, progress, "distilled")
    stages.append(_stage("distilled", dist, xte, yte))

    ranks = {}
    if cfg.low_rank:
        dist, ranks = low_rank_factorize(dist, spec, cfg.low_rank, input_shape, classes)
        _fit(dist, xtr, y_kd, kd, cfg.finetune_epochs, cfg, progress, "low-rank")
        stages.append(_stage("low-rank", dist, xte, yte))

    keras.utils.set_random_seed(cfg.seed + 1)
    pruned, masks = prune(dist, xtr, y_kd, kd, cfg, progress)
    stages.append(_stage("pruned", pruned, xte, yte))

    keras.utils.set_random_seed(cfg.seed + 2)
    q = build_student(spec, input_shape, classes, bits=cfg.bits, ranks=ranks,
                      name=f"student_q{cfg.bits}")
    copy_weights(pruned, q)
    _fit(q, xtr, y_kd, kd, cfg.finetune_epochs, cfg, progress, "quantized", callbacks=[_mask_keeper(masks)])
    stages.append(_stage("quantized", q, xte, yte, cfg.bits))

    g = convert(q, calibration=xtr)
    g_out = g.predict(xte)
    g_acc = float(np.mean(np.argmax(g_out, -1) == yte))
    ws = g.weight_stats()
    stages.append(Stage("golden", ws["params"], ws["nonzero"], cfg.bits, ws["bits"], g_acc))
    return CompressResult(q, g, t_acc, g_acc, graph_sparsity(g), stages, spec, cfg)
