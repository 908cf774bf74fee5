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


def load_model(path, allow_custom_code: bool = False):
    """Load a Keras / QKeras model with fabformer's custom layers registered (refusing files whose
    loading would run their own code unless ``allow_custom_code``), or a PyTorch ``torch.export``
    archive (``.pt2``: an ATen graph and tensors, never pickled code) as a
    :class:`~fabformer.frontend.pytorch.TorchModel`."""
    if str(path).endswith(".pt2"):
        from fabformer.frontend.pytorch import TorchModel, load_torch_model
        return TorchModel(load_torch_model(path), Path(path).stem)
    from fabformer.frontend import load_keras_model
    return load_keras_model(path, allow_custom_code=allow_custom_code)


def add_custom_code_argument(parser) -> None:
    parser.add_argument("--allow-custom-code", action="store_true",
                        help="load model files whose Lambda layers or custom classes run their own Python code "
                             "(only for files you trust)")


def source_model(graph, graph_path=None, explicit=None):
    """``(path, note)`` of the Keras model to compare ``graph`` with: ``explicit`` (--model) as given,
    else the graph's ``meta.source_model`` only when the file's SHA-256 matches the one recorded at
    conversion (a note says why not, otherwise)."""
    from fabformer.apps.data import file_digest
    if explicit:
        return Path(explicit), None
    rel = graph.meta.get("source_model")
    if not rel:
        return None, None
    p = Path(rel)
    if not p.is_absolute() and graph_path is not None:
        q = Path(graph_path).resolve().parent / rel
        p = q if q.exists() or not p.exists() else p
    want = graph.meta.get("source_model_sha256")
    if not p.is_file():
        return None, f"source model {rel!r} not found; give --model"
    if not want:
        return None, f"source model {rel!r} has no recorded SHA-256 in the graph; give --model to compare with it"
    if file_digest(p) != want:
        return None, f"source model {str(p)!r} is not the file the graph was converted from (SHA-256 differs); ignored"
    return p, None


PARALLELISM_HELP = ("multipliers per matmul-like node: an integer for every node, node=int,node=int, or a JSON "
                    "object {\"node\": int, ...} (nodes not named keep their default; a layer norm or softmax "
                    "node named takes that many lanes, else as many as keep up with the matmul-like nodes)")


def parse_parallelism(text):
    """``None``/``default``, an integer, ``node=int,node=int`` or a JSON object ``{node: int}``
    (the names are checked against the graph when the design is made)."""
    from fabformer.errors import FabformerError
    if text is None or text == "default":
        return None
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    if text.startswith("{"):
        try:
            out = json.loads(text)
        except json.JSONDecodeError as e:
            raise FabformerError(f"cannot parse --parallelism {text!r} as JSON ({e.msg} at character {e.pos}); "
                                 f"write an integer, node=int,node=int or {{\"node\": int}}") from None
        if not isinstance(out, dict):
            raise FabformerError(f"--parallelism {text!r}: a JSON value must be an object {{\"node\": int}}")
        return out
    out = {}
    for part in text.split(","):
        name, sep, val = part.rpartition("=")
        if not sep or not name or not val.strip().isdigit():
            raise FabformerError(f"cannot parse --parallelism {text!r}; write an integer (multipliers per "
                                 f"matmul-like node), node=int,node=int or {{\"node\": int}}")
        out[name.strip()] = int(val)
    return out


def parse_seeds(text: str):
    """argparse type of ``--seed``: ``N`` (one seed), ``A,B,C`` or ``A-B`` (several, tried in turn)."""
    import argparse
    parts = []
    for part in str(text).split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
            raise argparse.ArgumentTypeError(f"{text!r}: write a seed (2), a list (1,2,3) or a range (1-4)")
        parts += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    if len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: a seed is given twice")
    return parts[0] if len(parts) == 1 else parts


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--samples 0`` and ``--samples -5`` are refused)."""
    import argparse
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {v}")
    return v


def add_data_argument(parser, what: str = "inputs") -> None:
    parser.add_argument("--data", metavar="FILE",
                        help=f"{what}: an .npz with x (and optionally y, integer labels) or an .npy of x "
                             f"(default: the digits test split for the shipped example)")
