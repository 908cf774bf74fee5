"""GPU benchmark of the golden and float graph: bit-equality with the CPU and speed.

    python bench/gpu.py --graph out/demo/digits.graph.json [--many 200000] [--json OUT.json]

Runs the same array-API code as ``fabformer report --device gpu`` (CuPy through
array-api-compat).  Checks, on the digits test split and on ``--many`` extra
inputs (random ones spread past the input range, so saturation happens, and
noisy digits), that the GPU golden equals the CPU golden bit for bit, on the
outputs and on every intermediate tensor; the same on fabformer.apps.testing's
encoder graph (which has a GELU lookup); then times float and golden on CPU
and GPU at batch 1 and at large batches.  Without a GPU it stops with the reason.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

try:
    import fabformer  # noqa: F401
except ImportError:  # run from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fabformer import ir  # noqa: E402
from fabformer.apps import testing  # noqa: E402
from fabformer.apps.report import backend, gpu_unavailable_reason, time_call  # noqa: E402


def inputs(g, x_digits, n, seed=0):
    """``n`` inputs: half random over (and past) the input range, half noisy digits."""
    rng = np.random.default_rng(seed)
    half = n // 2
    a = testing.random_inputs(g, half, seed=seed, scale=2.0)
    idx = rng.integers(0, len(x_digits), n - half)
    b = x_digits[idx] + rng.normal(0, 0.1, (n - half,) + x_digits.shape[1:])
    return np.concatenate([a, b])


def compare(g, cpu, gpu, x, chunk=50_000, trace=False):
    """(equal outputs, equal intermediate tensors, samples, first mismatching tensor)."""
    eq_out = eq_all = True
    first = None
    for s in range(0, len(x), chunk):
        xc = x[s:s + chunk]
        if trace:
            yc, tc = cpu.predict(g, xc, trace=True)
            yg, tg = gpu.predict(g, xc, trace=True)
            for n in g.nodes:
                if not np.array_equal(tc[n.output], tg[n.output]):
                    eq_all = False
                    first = first or n.name
        else:
            yc, yg = cpu.predict(g, xc), gpu.predict(g, xc)
        eq_out &= bool(np.array_equal(yc, yg))
    return {"samples": int(len(x)), "outputs_equal": eq_out,
            **({"all_tensors_equal": eq_all, "first_mismatch": first} if trace else {})}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graph", required=True)
    p.add_argument("--many", type=int, default=200_000, help="extra inputs for the bit-equality check")
    p.add_argument("--batches", default="1,450,65536", help="batch sizes to time")
    p.add_argument("--seconds", type=float, default=0.5, help="minimum seconds per timing")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--golden-chunk", type=int, help="set fabformer.golden.CHUNK (samples per pass) for this run")
    a = p.parse_args(argv)
    if a.golden_chunk:
        from fabformer import golden
        golden.CHUNK = a.golden_chunk
    why = gpu_unavailable_reason()
    if why:
        print(f"no GPU: {why}", file=sys.stderr)
        return 2
    g = ir.load(a.graph)
    cpu, gpu = backend("cpu"), backend("gpu")
    from fabformer.apps.data import digits
    d = digits()
    res = {"gpu": gpu.name, "gpu_library": gpu.library, "cpu": platform.processor() or platform.machine(),
           "cpu_cores": os.cpu_count(), "numpy": np.__version__, "graph": g.name, "macs": g.macs(),
           "golden_chunk": getattr(__import__("fabformer.golden").golden, "CHUNK", None)}
    print(f"{gpu.name} ({gpu.library}); CPU numpy {np.__version__}, {os.cpu_count()} cores", flush=True)

    t0 = time.perf_counter()
    eq = {"digits_test": compare(g, cpu, gpu, d.x_test, trace=True),
          "many": compare(g, cpu, gpu, inputs(g, d.x_test, a.many), trace=False)}
    enc = testing.encoder_graph()
    eq["encoder_graph_random"] = compare(enc, cpu, gpu, testing.random_inputs(enc, 20_000, seed=1), trace=True)
    f_cpu, f_gpu = cpu.predict(g, d.x_test, mode="float"), gpu.predict(g, d.x_test, mode="float")
    eq["float_digits_max_abs_diff"] = float(np.max(np.abs(f_cpu - f_gpu)))
    fe_cpu = cpu.predict(enc, testing.random_inputs(enc, 1000), mode="float")
    fe_gpu = gpu.predict(enc, testing.random_inputs(enc, 1000), mode="float")
    eq["float_encoder_max_abs_diff"] = float(np.max(np.abs(fe_cpu - fe_gpu)))
    g_cpu = cpu.predict(g, d.x_test)
    res["accuracy"] = {"golden": float(np.mean(np.argmax(g_cpu, -1) == d.y_test)),
                       "float": float(np.mean(np.argmax(f_cpu, -1) == d.y_test)),
                       "golden_gpu": float(np.mean(np.argmax(gpu.predict(g, d.x_test), -1) == d.y_test)),
                       "float_gpu": float(np.mean(np.argmax(f_gpu, -1) == d.y_test))}
    res["bit_equality"] = eq
    res["bit_equality_seconds"] = time.perf_counter() - t0
    print(json.dumps(eq, indent=1), flush=True)

    timing = []
    big = inputs(g, d.x_test, max(int(b) for b in a.batches.split(",")), seed=2)
    for b in (int(v) for v in a.batches.split(",")):
        for be in (cpu, gpu):
            for mode in ("float", "int"):
                t = time_call(lambda v: be.predict(g, v, mode=mode), big[:b], a.seconds)
                row = {"device": be.device, "mode": "golden" if mode == "int" else "float", **t}
                timing.append(row)
                print(f"{row['device']:>4} {row['mode']:<6} batch {b:>6}: {t['seconds_per_call'] * 1e3:9.3f} ms/call "
                      f"{t['samples_per_s']:12,.0f} samples/s", flush=True)
    res["timing"] = timing
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    ok = all(v["outputs_equal"] and v.get("all_tensors_equal", True)
             for v in eq.values() if isinstance(v, dict))
    print("GPU golden == CPU golden bit for bit:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
