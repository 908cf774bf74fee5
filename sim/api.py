"""``fabformer.sim.run``: simulate a generated design on inputs and compare with golden."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fabformer import vectors
from fabformer.errors import FabformerError
from ..fixed import dequantize
from . import runner
from .scoreboard import pack_rows, unpack_rows


@dataclass
class SimResult:
    outputs: np.ndarray            # dequantized, same shape as graph.predict(x)
    raw: np.ndarray                # integer mantissas
    expected_raw: np.ndarray
    latency_cycles: int            # first input beat to last output beat of a sample (no stalls)
    ii_cycles: float               # cycles between samples in steady state (no stalls)
    mismatches: int
    mismatch_report: list = field(default_factory=list)
    simulator: str = ""
    samples: int = 0
    cycles: int = 0                # simulated cycles over all phases
    wall_s: float = 0.0
    build_dir: str = ""

    @property
    def bit_exact(self) -> bool:
        return self.mismatches == 0

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.wall_s if self.wall_s else 0.0


def golden_io(design, x):
    """(input mantissas, output mantissas) of the hardware part of ``design`` for float inputs ``x``."""
    return vectors.golden_io(design.graph, x, design.out_tensor)


def run(design, x, simulator: str = "verilator", waves: bool = False, build_dir=None, stalls: bool = True,
        timing_samples: int = 3, seed: int = 0) -> SimResult:
    """Simulate ``design`` on float inputs ``x`` (a batch) and compare with golden.

    First ``timing_samples`` samples run back to back without stalls (for latency and
    II); then all samples run with random valid gaps and ready back-pressure
    (``stalls=True``).  Outputs are taken from the stalled phase when it runs.
    """
    return run_many([(design, x)], simulator, waves=waves, build_dir=build_dir, stalls=stalls,
                    timing_samples=timing_samples, seed=seed)[0]


def run_many(pairs, simulator: str = "verilator", waves: bool = False, build_dir=None, stalls: bool = True,
             timing_samples: int = 3, seed: int = 0) -> list[SimResult]:
    """:func:`run` for several ``(design, x)`` pairs sharing one build (members of one
    :class:`fabformer.rtl.DesignSet`, or the same design) in one simulator launch."""
    import time
    runner.check_simulator(simulator)
    pairs = list(pairs)
    design0 = pairs[0][0]
    jobs, metas = [], []
    for k, (design, x) in enumerate(pairs):
        if design is not design0 and getattr(design, "design_set", None) is not \
                getattr(design0, "design_set", object()):
            raise FabformerError("run_many needs designs that share one build (members of one DesignSet)")
        job, meta = _job(design, x, stalls, timing_samples, seed + 13 * k)
        jobs.append(job)
        metas.append(meta)
    bdir = runner.build(design0, simulator, build_dir=build_dir, waves=waves)
    with tempfile.TemporaryDirectory(dir=bdir) as tmp:
        job_path = Path(tmp) / "job.json"
        res_path = Path(tmp) / "results.json"
        job_path.write_text(json.dumps({"jobs": jobs, "results": str(res_path)}))
        t0 = time.perf_counter()
        runner.test(simulator, bdir, job_path, waves=waves)
        wall = time.perf_counter() - t0
        if waves:  # Verilator writes dump.fst where the test runs; keep it beside the build
            import shutil
            for f in Path(tmp).glob("*.fst"):
                shutil.copy(f, bdir / f.name)
        if not res_path.is_file():
            log = job_path.with_suffix(".log")
            tail = log.read_text()[-3000:] if log.is_file() else ""
            raise FabformerError(f"the {simulator} simulation did not finish; log tail:\n{tail}")
        res = json.loads(res_path.read_text())["jobs"]
    total = sum(ph["cycles"] for r in res for ph in r["phases"])
    out = []
    for (design, _), meta, r in zip(pairs, metas, res):
        sr = _collect(design, meta, r["phases"], simulator)
        sr.wall_s = wall * sr.cycles / max(total, 1)
        sr.build_dir = str(bdir)
        out.append(sr)
    return out


def _job(design, x, stalls, timing_samples, seed):
    g = design.graph
    if len(g.inputs) == 1:
        x = np.asarray(x, dtype=np.float64)
        if x.shape == tuple(g.tensors[g.inputs[0]].shape):
            x = x[None]
    xin, yexp = golden_io(design, x)
    n = int(xin.shape[0])
    if n < 1:
        raise FabformerError("sim.run needs at least one input sample")
    phases = [{"samples": min(n, max(1, timing_samples)), "valid_prob": 1.0, "ready_prob": 1.0, "seed": seed}]
    if stalls:
        phases.append({"samples": n, "valid_prob": 0.7, "ready_prob": 0.6, "seed": seed + 7})
    per_sample = design.latency_cycles + 10 * design.in_rows + 10 * design.out_rows
    job = {
        "select": getattr(design, "select", None),
        "in_rows": design.in_rows, "out_rows": design.out_rows, "out_cols": design.out_cols,
        "out_type": design.out_type.to_dict(), "out_tensor": design.out_tensor,
        "out_shape": list(g.tensors[design.out_tensor].shape),
        "inputs": pack_rows(xin, design.in_type, design.in_cols),
        "expected": pack_rows(yexp, design.out_type, design.out_cols),
        "phases": phases, "max_cycles": 20 * (per_sample + n * (design.ii_cycles + 50)) + 10000,
    }
    return job, {"phases": phases, "yexp": yexp, "n": n}


def _collect(design, meta, res, simulator) -> SimResult:
    phases, yexp, n = meta["phases"], meta["yexp"], meta["n"]
    name = design.graph.name
    for k, ph in enumerate(res):
        if ph["timeout"]:
            raise FabformerError(f"the {simulator} simulation of {name!r} stalled in phase {k} after "
                                 f"{len(ph['rows'])} of {phases[k]['samples'] * design.out_rows} output rows "
                                 f"(deadlock or far slower than the analytic II {design.ii_cycles})")
    t0 = res[0]
    rps = design.out_rows
    lat = t0["out_cycles"][rps - 1] - t0["in_cycles"][0]
    ends = [t0["out_cycles"][(s + 1) * rps - 1] for s in range(phases[0]["samples"])]
    ii = float(np.mean(np.diff(ends))) if len(ends) > 1 else float(lat + 1)
    final = res[-1]
    raw = unpack_rows(final["rows"], design.out_type, design.out_cols).reshape(yexp.shape)
    mism = int(np.count_nonzero(raw != yexp))
    for ph, ph_s in zip(res[:-1], phases[:-1]):
        got = unpack_rows(ph["rows"], design.out_type, design.out_cols).reshape(-1)
        mism += int(np.count_nonzero(got != yexp[:ph_s["samples"]].reshape(-1)))
    report = [m for ph in res for m in ph["mismatches"]]
    return SimResult(outputs=dequantize(raw, design.out_type.frac), raw=raw, expected_raw=yexp,
                     latency_cycles=int(lat), ii_cycles=ii, mismatches=mism, mismatch_report=report,
                     simulator=simulator, samples=n, cycles=int(sum(ph["cycles"] for ph in res)))
