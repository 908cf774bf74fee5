"""fabformer.sim: cocotb simulation of generated RTL against the golden model.

``result = run(design, x, simulator="verilator"|"icarus")`` builds the design
once per simulator (cached) and returns outputs, latency, II and mismatches.
"""
from .api import SimResult, golden_io, run, run_many

__all__ = ["run", "run_many", "SimResult", "golden_io"]
