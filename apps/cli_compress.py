"""``fabformer compress``: distill, prune and quantize a teacher into the encoder template."""
from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    c = subparsers.add_parser("compress", help="distill, prune and quantize a Keras teacher into a hardware-ready "
                                               "QKeras student (digits data)")
    c.add_argument("--teacher", required=True, help="Keras classifier (.h5) over the same inputs and classes")
    c.add_argument("--student", required=True, help="template sizes, e.g. d_model=16,heads=2,ff=32[,key_dim=8]")
    c.add_argument("--sparsity", type=float, default=0.5, help="target zero fraction of Dense kernels, in [0, 1)")
    c.add_argument("--bits", type=int, default=8, help="weight / activation bits (>= 2)")
    c.add_argument("--low-rank", type=int, default=None, help="truncated-SVD rank of Dense kernels (off by default)")
    c.add_argument("--epochs", type=int, default=80, help="epochs of the baseline and of distillation")
    c.add_argument("--finetune-epochs", type=int, default=30, help="epochs of each fine-tuning stage")
    c.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T")
    c.add_argument("--alpha", type=float, default=0.2, help="weight of the hard-label loss, in [0, 1]")
    c.add_argument("--scope", default="layer", help="pruning scope: layer or global")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("-o", "--output", required=True, help="output folder (student .h5, graph, stage table)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--allow-custom-code", action="store_true",
                   help="load a teacher file whose Lambda layers or custom classes run their own code")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compress)


def cmd_compress(args) -> int:
    from fabformer.apps.common import emit, load_model
    from fabformer.outdir import prepare_dir
    from fabformer.frontend.compress.pipeline import CompressConfig, compress, parse_student
    spec = parse_student(args.student)
    cfg = CompressConfig(sparsity=args.sparsity, bits=args.bits, low_rank=args.low_rank, epochs=args.epochs,
                         finetune_epochs=args.finetune_epochs, temperature=args.temperature, alpha=args.alpha,
                         scope=args.scope, seed=args.seed, progress=not args.quiet)
    teacher = load_model(args.teacher, args.allow_custom_code)
    out = prepare_dir(Path(args.output))
    from fabformer.apps.data import digits
    r = compress(teacher, spec, cfg, digits())
    model_path = out / f"student_q{cfg.bits}.h5"
    r.student.save(model_path)
    r.graph = r.graph.with_meta(source_model=model_path.name)
    gpath = r.graph.save(out / "student.graph.json")
    res = r.to_dict(model_path)
    res["graph"] = str(gpath)
    (out / "stages.json").write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    text = (r.table() + f"\nteacher {100 * r.teacher_accuracy:.2f} %, golden {100 * r.golden_accuracy:.2f} %, "
            f"sparsity of the hardware's Dense weights {100 * r.sparsity:.2f} %\nwrote {model_path} and {gpath}")
    emit(args, res, text)
    return 0
