"""fabformer.frontend: Keras / QKeras import (and, in ``compress``, distillation, pruning, quantization)."""
from __future__ import annotations

import os

from ..errors import FabformerError
from .config import ConvertConfig
from .keras import convert, SUPPORTED

__all__ = ["convert", "ConvertConfig", "load_keras_model", "inspect_keras_file", "custom_objects", "SUPPORTED"]


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


def _known_classes() -> set:
    """Class names a model file may name without running foreign code: Keras' own layers,
    models, initializers, regularizers and constraints, QKeras', fabformer's."""
    from tensorflow import keras
    known = set(custom_objects())
    for mod in (keras.layers, keras.initializers, keras.regularizers, keras.constraints, keras.optimizers):
        known.update(n for n in dir(mod) if n[:1].isupper())
    known.update({"Functional", "Sequential", "Model", "Clip", "QInitializer"})
    return known - {"Lambda"}


def _model_config(p) -> dict | None:
    """The architecture a model file declares, read as JSON without deserializing anything."""
    import json
    import zipfile
    if p.is_file() and p.suffix in (".h5", ".hdf5"):
        import h5py
        with h5py.File(p, "r") as f:
            raw = f.attrs.get("model_config")
        if raw is None:
            raise FabformerError(f"model file {str(p)!r} holds weights only (no model_config); save the whole model")
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if p.is_file() and p.suffix == ".keras":
        with zipfile.ZipFile(p) as z:
            return json.loads(z.read("config.json"))
    return None


def inspect_keras_file(path) -> list[str]:
    """Every class in a model file's architecture that would run code not from Keras, QKeras or
    fabformer when the file is loaded (``Lambda`` layers, unregistered custom classes and
    functions); read before Keras deserializes anything."""
    from pathlib import Path
    p = Path(path)
    cfg = _model_config(p)
    if cfg is None:
        return [f"{str(p)!r} is not an .h5 or .keras file, so its architecture cannot be inspected before "
                f"loading (a SavedModel folder may hold code); save it as .h5 or .keras"]
    known = _known_classes()
    found = []

    def walk(o, where):
        if isinstance(o, dict):
            cls = o.get("class_name")
            name = (o.get("config") or {}).get("name") if isinstance(o.get("config"), dict) else None
            here = f"{where} > {name}" if name else where
            if cls == "Lambda":
                found.append(f"layer {name!r}: a Lambda layer holds Python code, which fabformer does not run "
                             f"(write it as standard layers or operators)")
            elif cls == "function":
                mod = str(o.get("module", ""))
                if not mod.startswith(("keras.", "tensorflow.", "qkeras.")):
                    found.append(f"{here}: custom function {o.get('config')!r} from module {mod!r}")
            elif isinstance(cls, str) and cls not in known and not str(o.get("module", "")).startswith(
                    ("keras.", "tensorflow.", "qkeras.")):
                found.append(f"{here}: class {cls!r} is not a Keras, QKeras or fabformer class (custom code)")
            for v in o.values():
                walk(v, here)
        elif isinstance(o, list):
            for v in o:
                walk(v, where)
    walk(cfg, "model")
    return found


def load_keras_model(path, allow_custom_code: bool = False):
    """Load a saved Keras / QKeras model (.h5 or .keras) with fabformer's layers registered.

    The file's architecture is read first: a ``Lambda`` layer or a class that is not Keras',
    QKeras' or fabformer's would run code from the file, so it is refused before Keras
    deserializes anything, unless ``allow_custom_code=True`` (``--allow-custom-code``).
    """
    from pathlib import Path
    p = Path(path)
    if not p.exists():
        raise FabformerError(f"model file {str(p)!r} does not exist")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not allow_custom_code:
        try:
            found = inspect_keras_file(p)
        except (OSError, ValueError, KeyError) as e:
            raise FabformerError(f"cannot read the architecture of {str(p)!r}: {e}") from None
        if found:
            raise FabformerError(f"refusing to load {str(p)!r}: loading it would run code from the file:\n  - "
                                 + "\n  - ".join(found) + "\nopt in with --allow-custom-code "
                                 "(load_keras_model(path, allow_custom_code=True)) only for files you trust")
    from tensorflow import keras
    try:
        return keras.models.load_model(p, custom_objects=custom_objects(), compile=False)
    except (OSError, ValueError) as e:
        raise FabformerError(f"cannot load Keras model {str(p)!r}: {e}") from None
