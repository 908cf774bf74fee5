"""fabformer.hls: a Vitis HLS C++ project per graph, bit-exact with the golden model in C-simulation.

``prj = fabformer.hls.write(graph, out_dir)``; ``prj.compile()``; ``prj.predict(x)``;
or all of it and the comparison with golden: ``fabformer.hls.csim(graph, out_dir, x)``.
The C++ kernels (``include/*.h``) compute on integer mantissas exactly as
``fabformer.golden`` does; the generated top level only wires them together.
"""
from .config import HLSConfig
from .csim import csim
from .project import HLSProject, ap_types_dir, compile_together, write

__all__ = ["HLSConfig", "HLSProject", "write", "compile_together", "ap_types_dir", "csim"]
