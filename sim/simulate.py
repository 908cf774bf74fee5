"""``fabformer.sim.simulate``: generate a graph's RTL, simulate it on given inputs, compare with golden."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from fabformer.errors import FabformerError

MODES = ("cocotb", "stream")


def simulate(graph, out_dir, x, simulator: str = "verilator", parallelism=None, waves: bool = False,
             mode: str = "cocotb", source: str = "given inputs", progress=None) -> dict:
    """Generate the RTL of ``graph`` (Verilog written to ``out_dir``), simulate it on the float
    inputs ``x`` (batch first) and compare every output with the golden model.

    ``mode="cocotb"``: the cocotb testbench (Verilator or Icarus): a back-to-back timing
    phase, then every sample under random valid gaps and ready back-pressure.
    ``mode="stream"``: Verilator only; the C++ testbench streams the whole batch from files
    and checks every output row inside the simulator (``fabformer.sim.bulk``); for data sets.
    ``source`` names the inputs in the result.  Writes ``sim.json`` into ``out_dir`` and
    returns the same dict.
    """
    from fabformer.outdir import prepare_dir
    from fabformer.rtl import generate
    from .api import run
    from .runner import check_simulator
    if mode not in MODES:
        raise FabformerError(f"unknown simulation mode {mode!r}; valid: {', '.join(MODES)}")
    check_simulator(simulator)
    if mode == "stream" and simulator != "verilator":
        raise FabformerError(f"simulation mode 'stream' runs on Verilator only, not {simulator!r}; "
                             f"use --simulator verilator or --mode cocotb")
    if mode == "stream" and waves:
        raise FabformerError("waveforms (--waves) are recorded in mode 'cocotb' only")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == len(graph.tensors[graph.inputs[0]].shape):
        x = x[None]
    if len(x) < 1:
        raise FabformerError("simulate needs at least one input sample, got 0")
    out = prepare_dir(out_dir)
    design = generate(graph, parallelism)
    vpath = design.write_verilog(out, "top")
    if mode == "stream":
        from .bulk import run as run_stream
        r = run_stream(design, x, progress=progress)
    else:
        r = run(design, x, simulator=simulator, waves=waves)
    res = {
        "graph": graph.name, "simulator": simulator, "mode": mode, "samples": r.samples, "inputs": source,
        "bit_exact": r.bit_exact, "mismatches": r.mismatches, "first_mismatches": r.mismatch_report[:5],
        "latency_cycles": r.latency_cycles, "latency_cycles_analytic": design.latency_cycles,
        "ii_cycles": r.ii_cycles, "ii_cycles_analytic": design.ii_cycles,
        "multipliers": design.multipliers, "macs": design.macs,
        "mac_bound_cycles": design.mac_bound_cycles,
        "simulated_cycles": r.cycles, "cycles_per_second": round(r.cycles_per_second, 1),
        "simulation_seconds": round(r.wall_s, 3),
        "verilog": str(vpath), "blocks": design.blocks,
    }
    if waves:
        found = sorted(Path(r.build_dir).glob("*.fst"))
        if found:
            shutil.copy(found[0], out / "waves.fst")
            res["waves"] = str(out / "waves.fst")
        else:
            res["waves"] = None
    (out / "sim.json").write_text(json.dumps(res, indent=1, sort_keys=True, default=str) + "\n")
    return res
