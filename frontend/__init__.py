"""fabformer.frontend: Keras / QKeras import (and, in ``compress``, distillation, pruning, quantization)."""
from __future__ import annotations

import os

from ..errors import FabformerError
from .config import ConvertConfig
from .keras import convert, SUPPORTED

__all__ = ["convert", "ConvertConfig", "load_keras_model", "custom_objects", "SUPPORTED"]


def custom_objects() -> dict:
    """QKeras layers plus fabformer's own quantized layers, for loading saved models."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from qkeras.utils import _add_supported_quantized_objects
    objs: dict = {}
    _add_supported_quantized_objects(objs)
    try:
        from .compress import layers as _layers
        objs.update(getattr(_layers, "CUSTOM_OBJECTS", {}))
    except ModuleNotFoundError as e:
        if e.name and not e.name.startswith("fabformer.frontend.compress"):
            raise
    return objs


def load_keras_model(path):
    """Load a saved Keras / QKeras model (.h5 or SavedModel folder) with fabformer's layers registered."""
    from pathlib import Path
    p = Path(path)
    if not p.exists():
        raise FabformerError(f"model file {str(p)!r} does not exist")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tensorflow import keras
    try:
        return keras.models.load_model(p, custom_objects=custom_objects(), compile=False)
    except (OSError, ValueError) as e:
        raise FabformerError(f"cannot load Keras model {str(p)!r}: {e}") from None
