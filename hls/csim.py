"""``fabformer.hls.csim``: write, compile and C-simulate a graph's project on given inputs, compare with golden."""
from __future__ import annotations

import time

import numpy as np

from .project import write


def csim(graph, out_dir, x, config=None, native: bool = True) -> dict:
    """Write the HLS project of ``graph`` into ``out_dir``, compile it, run it on the float
    inputs ``x`` (batch first) and compare every output mantissa with the golden model.

    Returns ``{"project", "samples", "bit_exact", "mismatches" (samples with any differing
    output), "compile_seconds", "write_seconds", "csim_seconds", "samples_per_second"}`` and,
    when they differ, ``"first_mismatch": {"tensor", "sample", "index", "expected", "actual"}``.
    ``native`` as in :meth:`HLSProject.compile`.
    """
    x = np.asarray(x, dtype=np.float64)
    t0 = time.perf_counter()
    prj = write(graph, out_dir, config, tb_inputs=x[:64])
    gen_s = time.perf_counter() - t0
    prj.compile(native=native)
    _, env = graph.predict(x, trace=True)
    t0 = time.perf_counter()
    got = prj.predict(x, raw=True)
    sim_s = time.perf_counter() - t0
    outs = got if isinstance(got, list) else [got]
    n = len(x)
    bad = np.zeros(n, dtype=bool)
    first = None
    for name, o in zip(graph.outputs, outs):
        want = np.asarray(env[name]).reshape(n, -1)
        diff = o.reshape(n, -1) != want
        bad |= diff.any(axis=1)
        if first is None and diff.any():
            s, i = map(int, np.argwhere(diff)[0])
            first = {"tensor": name, "sample": s, "index": i, "expected": int(want[s, i]),
                     "actual": int(o.reshape(n, -1)[s, i])}
    res = {"project": str(prj.path), "samples": int(n), "bit_exact": not bad.any(),
           "mismatches": int(bad.sum()), "compile_seconds": round(prj.compile_seconds, 2),
           "compile_cached": prj.compile_cached,
           "write_seconds": round(gen_s, 3), "csim_seconds": round(sim_s, 4),
           "samples_per_second": round(n / sim_s, 1) if sim_s > 0 else None}
    if first:
        res["first_mismatch"] = first
    return res
