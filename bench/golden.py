"""Golden-model throughput: bit-exact samples/s on the digits example (a benchmark, not a test).

    .venv/bin/python bench/golden.py [--samples 10000] [--repeat 5]

Prints one table: batch size, samples/s of the bit-exact golden model and of the
same graph in float (NumPy, this machine's CPU), and the Keras model for scale.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    from fabformer.apps.data import digits
    from fabformer.frontend import load_keras_model
    from pathlib import Path
    d = digits()
    model = load_keras_model(Path(__file__).resolve().parent.parent / "examples/digits/model_q8.h5")
    g = fabformer.convert(model, calibration=d.x_train)
    reps = -(-args.samples // len(d.x_test))
    x = np.concatenate([d.x_test] * reps)[: args.samples]
    rows = []
    for batch in (1, 64, args.samples):
        xb = x[: max(batch, 1) * (200 if batch == 1 else 1)] if batch < 64 else x
        if batch == 1:
            one = lambda xs: [g.predict(xs[i:i + 1]) for i in range(len(xs))]
            rows.append(("golden", 1, best_rate(one, x[:300], 1)))
            continue
        chunks = lambda f: (lambda xs: [f(xs[i:i + batch]) for i in range(0, len(xs), batch)])
        rows.append(("golden", batch, best_rate(chunks(g.predict), x, args.repeat)))
        rows.append(("float graph", batch, best_rate(chunks(lambda v: g.predict(v, mode="float")), x, args.repeat)))
    rows.append(("keras (TF, CPU)", args.samples, best_rate(lambda v: model.predict(v, batch_size=1024, verbose=0), x, 2)))
    # bit-exactness of the batched run against per-sample runs on a slice
    exact = all(np.array_equal(g.predict(x[i:i + 1]), g.predict(x[:50])[i:i + 1]) for i in range(50))
    print(f"golden model throughput, {args.samples} digits samples, {os.cpu_count()} CPU cores")
    print(f"{'path':<18}{'batch':>8}{'samples/s':>14}")
    for name, b, r in rows:
        print(f"{name:<18}{b:>8}{r:>14,.0f}")
    print(f"batched == per-sample bits: {exact}")


if __name__ == "__main__":
    main()
