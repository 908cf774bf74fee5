"""fabformer.rtl: Amaranth hardware for a fixed-point graph.

``design = generate(graph, parallelism=None)`` builds one block per node after
the Quantize node, joined by valid/ready streams; ``design.top`` is the
Amaranth component and ``design.write_verilog(dir)`` writes Verilog.
"""
from .generate import (ARCH, Design, DesignSet, Top, block, cell_counts, default_parallelism, generate, mac_nodes,
                       make_block, parallelism_options, run_yosys, yosys_reemit)

__all__ = ["generate", "Design", "DesignSet", "cell_counts", "Top", "run_yosys", "yosys_reemit", "ARCH", "block",
           "make_block", "mac_nodes", "default_parallelism", "parallelism_options"]
