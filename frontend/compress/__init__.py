"""fabformer.frontend.compress: teacher -> distilled, pruned, quantized student.

``compress(teacher, StudentSpec(...), CompressConfig(...), data)`` runs the stages
(student baseline, distillation, optional low-rank factorization, magnitude
pruning, quantization-aware training, conversion to the golden model) and
returns a :class:`CompressResult` with the stage table.  ``fabformer compress``
is the command line for it.
"""
from __future__ import annotations

from .pipeline import CompressConfig, CompressResult, Stage, compress, parse_student
from .template import StudentSpec, build_student

__all__ = ["compress", "CompressConfig", "CompressResult", "Stage", "StudentSpec", "build_student",
           "parse_student"]
