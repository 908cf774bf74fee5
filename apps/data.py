"""The example data set: scikit-learn's bundled digits as 8 tokens x 8 features.

No download: the digits ship inside scikit-learn.  Test split: 25 %, stratified,
seed 0 (450 samples).  Pixels (0..16) are scaled to [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float64)  # [1797, 8, 8]: 8 tokens (rows) x 8 features
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return Split(xtr, ytr, xte, yte)


# -- the user's data: --data FILE ------------------------------------------------------
DIGITS_SOURCE = "digits example"  # the calibration source of graphs made from the shipped example


@dataclass(frozen=True)
class Data:
    """Inputs (``x``), optional integer labels (``y``) and where they came from."""

    x: np.ndarray
    y: np.ndarray | None
    source: str

    def head(self, samples: int | None) -> "Data":
        if not samples:
            return self
        return Data(self.x[:samples], None if self.y is None else self.y[:samples], self.source)

    def __len__(self) -> int:
        return int(len(self.x))


def file_digest(path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_data(path, graph=None) -> Data:
    """``--data FILE``: an ``.npz`` with ``x`` (and optionally ``y``, integer labels) or an ``.npy``
    holding ``x``.  Arrays are read without pickle.  With ``graph``, ``x`` is checked against its
    input (shape, no NaN/inf) and labels against the sample count."""
    from pathlib import Path
    from fabformer.errors import FabformerError
    p = Path(path)
    if not p.is_file():
        raise FabformerError(f"--data {str(p)!r} does not exist")
    try:
        if p.suffix == ".npy":
            x, y = np.load(p, allow_pickle=False), None
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = sorted(z.files)
                if "x" not in keys:
                    raise FabformerError(f"--data {str(p)!r} has arrays {keys}; it needs 'x' (inputs) and "
                                         f"optionally 'y' (integer labels)")
                extra = sorted(set(keys) - {"x", "y"})
                if extra:
                    raise FabformerError(f"--data {str(p)!r}: unknown array(s) {extra}; valid: x, y")
                x, y = z["x"], (z["y"] if "y" in keys else None)
        else:
            raise FabformerError(f"--data {str(p)!r}: unknown file type {p.suffix!r}; valid: .npz (x, optional y), "
                                 f".npy (x)")
    except FabformerError:
        raise
    except (OSError, ValueError) as e:
        raise FabformerError(f"--data {str(p)!r} cannot be read as NumPy arrays without pickle: {e}") from None
    if x.dtype.kind not in "biuf":
        raise FabformerError(f"--data {str(p)!r}: x holds {x.dtype} values; inputs must be numbers")
    if graph is not None:
        from fabformer.vectors import as_batch
        x = np.asarray(as_batch(graph, x))
    if y is not None:
        y = np.asarray(y)
        if y.dtype.kind not in "iu" or y.ndim != 1 or len(y) != len(x):
            raise FabformerError(f"--data {str(p)!r}: y must be {len(x)} integer class labels (one per sample), "
                                 f"got {y.dtype} of shape {y.shape}")
    if len(x) == 0:
        raise FabformerError(f"--data {str(p)!r} holds no samples")
    return Data(np.asarray(x, dtype=np.float64), y, f"{p.name} (sha256 {file_digest(p)[:12]})")


def is_digits_example(graph) -> bool:
    """Whether ``graph`` was made from the shipped digits example (its calibration source
    says so; older graph files without one: the example's 8x8 input and 10 outputs)."""
    src = graph.meta.get("calibration_source")
    if src is not None:
        return str(src).startswith(DIGITS_SOURCE)
    shape = tuple(graph.tensors[graph.inputs[0]].shape)
    outs = [graph.tensors[o].shape for o in graph.outputs]
    return shape == (8, 8) and outs == [(10,)]


def data_for(graph, path=None, samples: int | None = None, *, need: str = "inputs") -> Data:
    """The data a command evaluates ``graph`` on: ``--data`` when given, else the digits test split
    for the shipped example.  ``need="inputs"``: other graphs get random inputs over the input
    type's range (hardware checks); ``need="labels"``: other graphs must give ``--data``."""
    from fabformer.errors import FabformerError
    if path is not None:
        d = load_data(path, graph)
    elif is_digits_example(graph):
        s = digits()
        d = Data(s.x_test, s.y_test, "digits test split")
    elif need == "inputs":
        from fabformer.vectors import random_inputs
        d = Data(random_inputs(graph, samples or 20), None, "random inputs")
    else:
        raise FabformerError(f"graph {graph.name!r} was not made from the shipped digits example: give your data "
                             f"with --data FILE (.npz with x and optionally y, or .npy)")
    return d.head(samples)
