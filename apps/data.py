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
