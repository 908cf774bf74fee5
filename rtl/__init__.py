"""fabformer.rtl: Amaranth hardware for a fixed-point graph.

``design = generate(graph, parallelism=None, arch="dataflow")`` builds the
hardware in one of the registered architectures (``ARCHITECTURES``).  The
dataflow architecture has one block per node after the quantize node, joined by
valid/ready streams; ``design.top`` is the Amaranth component and
``design.write_verilog(dir)`` writes Verilog.
"""
from .generate import (ARCH, ARCHITECTURES, Design, DesignSet, Top, architecture, block, cell_counts,
                       default_parallelism, generate, generate_dataflow, mac_nodes, make_block, parallelism_options,
                       run_yosys, yosys_reemit)

__all__ = ["generate", "generate_dataflow", "architecture", "ARCHITECTURES", "Design", "DesignSet", "cell_counts",
           "Top", "run_yosys", "yosys_reemit", "ARCH", "block", "make_block", "mac_nodes", "default_parallelism",
           "parallelism_options"]
from . import blocks_extra  # noqa: E402,F401  (registers the blocks of scale, max pool, concat, reshape)
from . import compact  # noqa: E402,F401  (registers the compact architecture)
