"""The feed-forward QKeras model the speed benchmarks share: 8x8 digits -> 16 -> 16 -> 10.

Flatten, then three QDense layers (8-bit weights and biases, ``quantized_relu(8, 3)``
activations between them), trained for a few epochs on the digits training split with
fixed seeds.  Small enough that hls4ml converts all of it.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def ff_model(x_train, y_train, epochs: int = 30, seed: int = 0):
    import numpy as np
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu
    tf.keras.utils.set_random_seed(seed)
    q = lambda: quantized_bits(8, 2, alpha=1)
    inp = tf.keras.Input(shape=(8, 8), name="pixels")
    h = tf.keras.layers.Flatten(name="flatten")(inp)
    h = QActivation(quantized_bits(8, 3, alpha=1), name="in_q")(h)
    for i, n in enumerate((16, 16)):
        h = QDense(n, kernel_quantizer=q(), bias_quantizer=q(), name=f"fc{i + 1}")(h)
        h = QActivation(quantized_relu(8, 3), name=f"relu{i + 1}")(h)
    out = QDense(10, kernel_quantizer=q(), bias_quantizer=q(), name="logits")(h)
    m = tf.keras.Model(inp, out, name="ff_q8")
    m.compile(optimizer=tf.keras.optimizers.Adam(3e-3),
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    m.fit(np.asarray(x_train), np.asarray(y_train), epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    return m
