"""What every command-line module shares: printing a result, loading a model, the example folder."""
from __future__ import annotations

import json
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "digits"


def emit(args, result: dict, text: str) -> None:
    """Print ``result`` as one JSON object with --json, else the human text."""
    if getattr(args, "json", False):
        print(json.dumps(result, indent=1, sort_keys=True, default=str))
    else:
        print(text)


def load_model(path):
    """Load a Keras / QKeras model with fabformer's custom layers registered, or a PyTorch
    ``torch.export`` archive (``.pt2``) as a :class:`~fabformer.frontend.pytorch.TorchModel`."""
    if str(path).endswith(".pt2"):
        from pathlib import Path
        from fabformer.frontend.pytorch import TorchModel, load_torch_model
        return TorchModel(load_torch_model(path), Path(path).stem)
    from fabformer.frontend import load_keras_model
    return load_keras_model(path)
