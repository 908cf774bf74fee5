"""Train the digits example: the float teacher, then compress it into the 8-bit student.

    python examples/digits/train.py            # writes model_float.h5, then model_q8.h5 here

``model_q8.h5`` (the model the demo and the tests use) is made by ``fabformer compress``
(through compress_example.py): distilled from the teacher, 50 % pruned, 8-bit QKeras.
``--twin`` also trains a plain QKeras 8-bit twin from scratch, for comparison.

The data: scikit-learn digits as 8 tokens x 8 features (fabformer.apps.data.digits).
The architecture: Dense(16) -> MultiHeadAttention(2 heads, key_dim 8) -> Add ->
LayerNorm -> Dense(32, ReLU) -> Dense(16) -> Add -> LayerNorm -> Flatten -> Dense(10).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent


def build(quantized: bool, bits: int = 8, d_model: int = 16, heads: int = 2, key_dim: int = 8, ff: int = 32):
    import tensorflow as tf
    from tensorflow import keras
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    L = keras.layers
    inp = keras.Input((8, 8), name="pixels")

    def dense(n, name, relu=False):
        if not quantized:
            return L.Dense(n, activation="relu" if relu else None, name=name)
        q = quantized_bits(bits, 0, alpha=1)
        act = quantized_relu(bits, 3) if relu else None
        return QDense(n, kernel_quantizer=q, bias_quantizer=quantized_bits(bits, 2, alpha=1), activation=act, name=name)

    def qact(x, name):
        return QActivation(quantized_bits(bits, 3, alpha=1), name=name)(x) if quantized else x

    x = QActivation(quantized_bits(bits, 0, alpha=1), name="input_q")(inp) if quantized else inp
    h = qact(dense(d_model, "embed")(x), "embed_q")
    a = L.MultiHeadAttention(heads, key_dim, name="mha")(h, h)
    h = L.LayerNormalization(name="ln1")(L.Add(name="res1")([h, a]))
    f = dense(ff, "ff1", relu=True)(h)
    f = qact(dense(d_model, "ff2")(f), "ff2_q")
    h = L.LayerNormalization(name="ln2")(L.Add(name="res2")([h, f]))
    out = dense(10, "head")(L.Flatten(name="flatten")(h))
    return keras.Model(inp, out, name="digits_q%d" % bits if quantized else "digits_float")


def train(model, data, epochs: int, seed: int = 0):
    import tensorflow as tf
    from tensorflow import keras
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model.evaluate(data.x_test, data.y_test, verbose=0)[1]


def main(argv=None):
    import sys
    sys.path.insert(0, str(HERE))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("-o", "--out", default=str(HERE))
    p.add_argument("--twin", action="store_true", help="also train a plain QKeras twin (model_q8_twin.h5)")
    args = p.parse_args(argv)
    import tensorflow as tf
    from fabformer.apps.data import digits
    tf.keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    data = digits()
    out = Path(args.out)
    fm = build(False)
    print("float accuracy", train(fm, data, args.epochs))
    fm.save(out / "model_float.h5")
    if args.twin:
        qm = build(True)
        print("q8 twin accuracy", train(qm, data, args.epochs))
        qm.save(out / "model_q8_twin.h5")
    import compress_example  # the example's student: distilled, pruned, quantized
    compress_example.main([])


if __name__ == "__main__":
    main()
