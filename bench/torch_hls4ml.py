"""What hls4ml 1.3.0's PyTorch frontend converts of the PyTorch examples (fabformer converts all three).

    python bench/torch_hls4ml.py [--json out.json]

Each model of ``examples/torch/train.py`` (untrained: conversion does not depend on the weights) and
a lone ``nn.MultiheadAttention`` go through ``hls4ml.converters.convert_from_pytorch_model``; the
result is "converted" or hls4ml's error.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import torch
    import hls4ml
    sys.path.insert(0, str(ROOT / "examples" / "torch"))
    from train import Encoder, brevitas_model
    cases = [("encoder_post (nn.TransformerEncoderLayer, post-norm)", lambda: Encoder(False), (8, 8)),
             ("encoder_pre (nn.TransformerEncoder, pre-norm)", lambda: Encoder(True), (8, 8)),
             ("brevitas_q8 (QuantIdentity, QuantLinear, QuantReLU)", brevitas_model, (8, 8)),
             ("nn.MultiheadAttention alone", lambda: torch.nn.MultiheadAttention(16, 2, batch_first=True), (8, 16))]
    out = {"hls4ml": hls4ml.__version__, "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make, shape) in enumerate(cases):
            m = make().eval()
            try:
                cfg = hls4ml.utils.config_from_pytorch_model(m, shape, granularity="name", backend="Vitis")
                hls4ml.converters.convert_from_pytorch_model(m, hls_config=cfg, output_dir=f"{tmp}/{i}",
                                                             backend="Vitis")
                r = "converted"
            except Exception as e:  # hls4ml's own refusal is the result
                r = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            out["models"][name] = r
            print(f"{name}: {r}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
