"""Text classifier written as Keras functional layers: token + position embeddings added with ``+``,
one encoder block with ``x + attn`` residuals, mean pooling.  Trains in about a minute on sequences
this script makes (nothing downloads) and writes ``model.h5`` here.

    python examples/text/train.py

Task: ids 1..5 are "positive" words, 6..10 "negative", 11..29 filler, 0 padding at the end; the label
says whether positive words outnumber negative ones.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
MAXLEN, VOCAB, D = 12, 30, 16


def make_data(n: int, seed: int = 0):
    """(ids [n, MAXLEN] as floats, labels [n])."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(11, VOCAB, (n, MAXLEN))
    k = rng.integers(1, 6, n)  # number of sentiment words
    for i in range(n):
        pos = rng.choice(MAXLEN, k[i], replace=False)
        ids[i, pos] = rng.integers(1, 11, k[i])
        ids[i, MAXLEN - rng.integers(0, 3):] = 0  # some padding at the end
    p, q = ((ids >= 1) & (ids <= 5)).sum(1), ((ids >= 6) & (ids <= 10)).sum(1)
    keep = p != q
    return ids[keep].astype(np.float64), (p > q)[keep].astype(np.int64)


def build():
    import tensorflow as tf
    from tensorflow import keras
    ids = keras.Input((MAXLEN,), dtype="int32", name="ids")
    tok = keras.layers.Embedding(VOCAB, D, name="token_embedding")(ids)
    pos = keras.layers.Embedding(MAXLEN, D, name="position_embedding")(tf.range(tf.shape(ids)[-1]))
    x = tok + pos
    a = keras.layers.MultiHeadAttention(2, 8, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm1")(x + a)
    f = keras.layers.Dense(32, activation="relu", name="ff1")(x)
    f = keras.layers.Dense(D, name="ff2")(f)
    x = keras.layers.LayerNormalization(name="norm2")(x + f)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(ids, keras.layers.Dense(2, name="logits")(x), name="text_classifier")


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
