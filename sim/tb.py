"""The cocotb testbench: reset, then for each phase drive the input rows with the
driver, collect output rows with the monitor and check them with the scoreboard.

It reads its job (packed input rows, expected rows, stall probabilities) from the
JSON file named by ``FABFORMER_SIM_JOB`` and writes what it saw to the job's
``results`` path, so one build serves any number of input sets.
"""
from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from ..fixed import FixedType
from .scoreboard import Scoreboard
from .stream import StreamDriver, StreamMonitor


@cocotb.test()
async def stream_test(dut):
    spec = json.loads(open(os.environ["FABFORMER_SIM_JOB"]).read())
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    out = []
    for job in spec["jobs"]:
        out.append(await run_job(dut, job))
    with open(spec["results"], "w") as f:
        json.dump({"jobs": out}, f)


async def run_job(dut, job):
    """Reset, select the design (a design set's ``sel``), run every phase of ``job``."""
    t = FixedType.from_dict(job["out_type"])
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    if job.get("select") is not None:
        dut.sel.value = job["select"]
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    results = []
    cycle = 0
    for ph in job["phases"]:
        n = ph["samples"]
        drv = StreamDriver(dut, "i", ph["valid_prob"], seed=ph["seed"])
        mon = StreamMonitor(dut, "o", ph["ready_prob"], seed=ph["seed"] + 1)
        drv.load(job["inputs"][: n * job["in_rows"]])
        want = n * job["out_rows"]
        sb = Scoreboard(job["out_tensor"], job["expected"][:want], t, job["out_cols"], job["out_rows"],
                        job["out_shape"])
        start = cycle
        timeout = False
        while not (drv.done and len(mon.rows) >= want):
            if cycle - start > job["max_cycles"]:
                timeout = True
                break
            await FallingEdge(dut.clk)
            drv.drive()
            mon.drive()
            await ReadOnly()
            drv.sample(cycle)
            if mon.sample(cycle):
                for mm in sb.check(mon.rows[-1])[:5]:
                    if len(sb.mismatches) <= 10:
                        dut._log.error("mismatch: %s", mm)
            cycle += 1
        await FallingEdge(dut.clk)
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        for _ in range(2):
            await FallingEdge(dut.clk)
            cycle += 1
        results.append({"rows": mon.rows, "in_cycles": drv.fired, "out_cycles": mon.fired, "timeout": timeout,
                        "cycles": cycle - start,
                        "mismatches": [str(x) for x in sb.mismatches[:20]], "n_mismatches": len(sb.mismatches)})
        if timeout:
            break
    return {"phases": results}
