"""Compress the digits teacher into the example student with ``fabformer compress``'s API.

    python examples/digits/compress_example.py              # writes model_q8.h5 here (the example's model), prints the stage table
    python examples/digits/compress_example.py --bits 4     # the 4-bit run (table only, no file)

Teacher: model_float.h5 (float encoder, train.py).  Student: the encoder template
(d_model=16, heads=2, ff=32), distilled (T=4, alpha=0.2), 50 % magnitude-pruned
(Dense layers, per layer), quantization-aware trained to 8 bits, then converted
and checked by the golden model.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--student", default="d_model=16,heads=2,ff=32")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--finetune-epochs", type=int, default=20)
    p.add_argument("--save", action="store_true", help="write model_q<bits>.h5 even when bits != 8")
    args = p.parse_args(argv)
    from fabformer.frontend import load_keras_model
    from fabformer.frontend.compress import CompressConfig, compress, parse_student
    teacher = load_keras_model(HERE / "model_float.h5")
    cfg = CompressConfig(sparsity=args.sparsity, bits=args.bits, epochs=args.epochs,
                         finetune_epochs=args.finetune_epochs)
    from fabformer.apps.data import digits
    r = compress(teacher, parse_student(args.student), cfg, digits())
    path = None
    if args.bits == 8 or args.save:
        path = HERE / f"model_q{args.bits}.h5"
        r.student.save(path)
    print(r.table())
    print(json.dumps(r.to_dict(path.name if path else None), indent=1))


if __name__ == "__main__":
    main()
