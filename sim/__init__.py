"""fabformer.sim: cocotb simulation of generated RTL against the golden model.

``result = run(design, x, simulator="verilator"|"icarus")`` builds the design
once per simulator (cached) and returns outputs, latency, II and mismatches;
``fabformer.sim.bulk.run(design, x)`` streams a whole data set through a Verilator
C++ testbench that checks every output inside the simulator;
``simulate(graph, out_dir, x)`` does generation, simulation and the summary in one call.
"""
from .api import SimResult, golden_io, run, run_many
from .simulate import simulate

__all__ = ["run", "run_many", "SimResult", "golden_io", "simulate"]
