"""Custom Keras layers of the compressed students (registered for loading by
:func:`fabformer.frontend.custom_objects`).

The students are built from layers the converter already understands: QKeras
``QDense`` / ``QActivation`` for the dense parts, and Keras
``MultiHeadAttention`` / ``LayerNormalization`` kept in float inside the QKeras
model (the converter quantizes their weights to ``weight_bits`` and their
activations by range analysis).  So no custom layer is needed today and this
registry is empty; a quantized attention or layer-norm layer of our own goes
here, together with its converter support.
"""
from __future__ import annotations

CUSTOM_OBJECTS: dict = {}
