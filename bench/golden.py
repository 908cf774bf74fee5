"""Golden-model throughput: bit-exact samples/s on the digits example (a benchmark, not a test).

    .venv/bin/python bench/golden.py [--samples 10000] [--repeat 5]

Prints one table from one run: batch size, samples/s of the bit-exact golden model
(``Graph.predict``: the precomputed NumPy plan or the compiled C kernel, whichever
``fabformer.plan`` picks; the kernel is built before timing, as it is after a few calls;
and the array-API specification both must equal, ``fabformer.golden.run(..., fast=False)``),
of the same graph in float
(NumPy, this machine's CPU) and of the Keras model for scale; the golden/float ratio per
batch size.  Batch 1 is ``predict`` called once per sample (best of --repeat passes over
300 samples).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np


def best_rate(fn, x, repeat):
    fn(x[: min(len(x), 64)])
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    import fabformer
    from fabformer import golden
    from fabformer.apps.data import digits
    from fabformer.frontend import load_keras_model
    from pathlib import Path
    d = digits()
    model = load_keras_model(Path(__file__).resolve().parent.parent / "examples/digits/model_q8.h5")
    g = fabformer.convert(model, calibration=d.x_train)
    reps = -(-args.samples // len(d.x_test))
    x = np.concatenate([d.x_test] * reps)[: args.samples]
    from fabformer.plan import plan_for
    plan = plan_for(g)
    plan.build_kernel()
    paths = [("golden (predict)", g.predict), ("golden (specification)", lambda v: golden.run(g, v, fast=False)),
             ("float graph", lambda v: g.predict(v, mode="float"))]
    rows = []
    for batch in (1, 64, args.samples):
        xs = x[:300] if batch == 1 else x
        rates = {}
        for name, f in paths:
            each = (lambda f: lambda v: [f(v[i:i + batch]) for i in range(0, len(v), batch)])(f)
            rates[name] = best_rate(each, xs, args.repeat)
            rows.append((name, batch, rates[name], None))
        rows[-3] = rows[-3][:3] + (rates["golden (predict)"] / rates["float graph"],)
    rows.append(("keras (TF, CPU)", args.samples,
                 best_rate(lambda v: model.predict(v, batch_size=1024, verbose=0), x, 2), None))
    # bits: plan == specification on every tensor; batched == per-sample
    _, e1 = golden.run(g, x[:2000], trace=True)
    _, e2 = golden.run(g, x[:2000], trace=True, fast=False)
    same = all(np.array_equal(np.asarray(e1[k]), np.asarray(e2[k])) for k in e2)
    exact = all(np.array_equal(g.predict(x[i:i + 1]), g.predict(x[:50])[i:i + 1]) for i in range(50))
    print(f"golden model throughput, {args.samples} digits samples, {os.cpu_count()} CPU cores, "
          f"best of {args.repeat}")
    print("| path | batch | samples/s | golden (predict) / float graph |")
    print("| --- | ---: | ---: | ---: |")
    for name, b, r, ratio in rows:
        print(f"| {name} | {b} | {r:,.0f} | {'' if ratio is None else f'{ratio:.2f}x'} |")
    print(f"\nplan == specification on every tensor (2,000 samples): {same}; batched == per-sample bits: {exact}; "
          f"C kernel: {plan.kernel_state}, batches above 16 run on the {plan.large or 'plan'}")


if __name__ == "__main__":
    main()
