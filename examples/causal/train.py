"""Causal sequence model: each step's output may look at the steps before it only
(``MultiHeadAttention(use_causal_mask=True)``).  Task: at every step, is the running sum of the
first feature so far positive?  Trains in about a minute on sequences this script makes and writes
``model.h5`` here.

    python examples/causal/train.py
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
T, F, D = 8, 2, 16


def make_data(n: int, seed: int = 0):
    """(sequences [n, T, F], labels [n, T])."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, F))
    return x, (np.cumsum(x[:, :, 0], 1) > 0).astype(np.int64)


def build():
    from tensorflow import keras
    x_in = keras.Input((T, F), name="sequence")
    h = keras.layers.Dense(D, name="embed")(x_in)
    a = keras.layers.MultiHeadAttention(2, 8, name="attention")(h, h, use_causal_mask=True)
    h = keras.layers.LayerNormalization(name="norm1")(h + a)
    f = keras.layers.Dense(D, activation="relu", name="ff")(h)
    h = keras.layers.LayerNormalization(name="norm2")(h + f)
    return keras.Model(x_in, keras.layers.Dense(2, name="logits")(h), name="causal_model")


def main():
    from tensorflow import keras
    keras.utils.set_random_seed(0)
    x, y = make_data(6000, seed=0)
    xt, yt = make_data(1000, seed=1)
    m = build()
    m.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    m.fit(x, y, epochs=12, batch_size=64, verbose=2, validation_data=(xt, yt))
    print("test accuracy", m.evaluate(xt, yt, verbose=0)[1])
    m.save(HERE / "model.h5")


if __name__ == "__main__":
    main()
