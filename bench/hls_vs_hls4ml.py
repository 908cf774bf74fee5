"""Benchmark (not a test): fabformer golden and HLS C-simulation vs hls4ml 1.3.0's C-simulation.

    .venv/bin/python bench/hls_vs_hls4ml.py [--repeat 5] [--tile 10] [--out DIR]

Two models, every path measured in this one run on the same inputs (the digits test split
repeated ``--tile`` times), best of ``--repeat`` timed calls each, one batched call per path:

1. the feed-forward QKeras model of ``bench/ff_model.py`` (8x8 -> 16 -> 16 -> 10), which
   hls4ml converts whole: fabformer golden (``Graph.predict``: the NumPy plan or the C
   kernel, whichever ``fabformer.plan`` times faster; and the array-API specification both
   must equal), fabformer's C-simulation (native integers, and the
   ap_fixed build that synthesis uses), and hls4ml's C-simulation (Vitis backend,
   io_parallel, ``config_from_keras_model(granularity="name")``);
2. the digits Transformer (``examples/digits/model_q8.h5``): fabformer golden and C-sim of
   the whole model; hls4ml cannot take Keras ``MultiHeadAttention`` from a QKeras model,
   so its column runs the layers after attention (``ln1`` ... ``head``) fed with the QKeras
   model's own ``res1`` activations.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def best_rate(fn, x, repeat):
    fn(x[:16])  # warm-up (first-call work: plans, library loading)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def _table(title, rows, ref):
    print(f"\n### {title}\n")
    print("| path | samples/s | x hls4ml | generate+compile s | accuracy | equal to golden |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, sps, build_s, acc, exact in rows:
        b = "-" if build_s is None else f"{build_s:.1f}"
        r = f"{sps / ref:.1f}x" if ref else "-"
        print(f"| {name} | {sps:,.0f} | {r} | {b} | {100 * acc:.2f} % | {exact} |")


def _hls4ml(model, work, name):
    import hls4ml
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    t0 = time.perf_counter()
    hm = hls4ml.converters.convert_from_keras_model(model, hls_config=cfg, output_dir=str(work / name),
                                                    backend="Vitis", io_type="io_parallel")
    hm.compile()
    return hm, time.perf_counter() - t0


def ff_section(d, x, y, repeat, work):
    import fabformer
    import fabformer.hls as fhls
    from ff_model import ff_model
    model = ff_model(d.x_train, d.y_train)
    rows = []
    t0 = time.perf_counter()
    g = fabformer.convert(model, calibration=d.x_train)
    conv_s = time.perf_counter() - t0
    want = g.predict(x, trace=True)[1][g.outputs[0]]
    acc = lambda o: float(np.mean(np.argmax(np.asarray(o).reshape(len(x), -1), -1) == y))
    from fabformer.plan import plan_for
    plan_for(g).build_kernel()  # as after a few calls
    sps = best_rate(g.predict, x, repeat)
    rows.append((f"fabformer golden (predict: {plan_for(g).large or 'plan'})", sps, conv_s, acc(g.predict(x)),
                 "(is golden)"))
    spec = lambda v: fabformer.golden.run(g, v, fast=False)
    sps = best_rate(spec, x, repeat)
    rows.append(("fabformer golden, array-API specification (fast=False)", sps, None, acc(spec(x)),
                 bool(np.array_equal(spec(x), g.predict(x)))))
    for native in (True, False):
        t0 = time.perf_counter()
        prj = fhls.write(g, work / f"ff_{'native' if native else 'ap'}", {"name": f"ff_{int(native)}"},
                         tb_inputs=x[:16])
        prj.compile(native=native)
        build_s = time.perf_counter() - t0
        sps = best_rate(prj.predict, x, repeat)
        label = "native integers" if native else "ap_fixed types"
        rows.append((f"fabformer HLS C-sim, {label}", sps, build_s, acc(prj.predict(x)),
                     bool(np.array_equal(prj.predict(x, raw=True), want))))
    ref = None
    try:
        hm, build_s = _hls4ml(model, work, "ff_hls4ml")
        xc = np.ascontiguousarray(x)
        sps = best_rate(lambda v: hm.predict(np.ascontiguousarray(v)), xc, repeat)
        ref = sps
        o = np.asarray(hm.predict(xc)).reshape(len(x), -1)
        rows.append(("hls4ml 1.3.0 C-sim", sps, build_s, acc(o), "no (own precisions): argmax agreement "
                     f"{100 * np.mean(np.argmax(o, -1) == np.argmax(g.predict(x), -1)):.2f} %"))
    except Exception as e:  # the benchmark still reports our rows
        rows.append((f"hls4ml 1.3.0 C-sim: failed ({type(e).__name__}: {str(e).splitlines()[0][:100]})",
                     0.0, None, 0.0, "-"))
    return rows, ref


def digits_section(d, x, y, repeat, work):
    import fabformer
    import fabformer.hls as fhls
    from fabformer.apps.common import load_model
    model = load_model(ROOT / "examples" / "digits" / "model_q8.h5")
    rows = []
    acc = lambda o: float(np.mean(np.argmax(np.asarray(o).reshape(len(x), -1), -1) == y))
    t0 = time.perf_counter()
    g = fabformer.convert(model, calibration=d.x_train)
    conv_s = time.perf_counter() - t0
    want = g.predict(x, trace=True)[1][g.outputs[0]]
    from fabformer.plan import plan_for
    plan_for(g).build_kernel()  # as after a few calls
    sps = best_rate(g.predict, x, repeat)
    rows.append((f"fabformer golden (predict: {plan_for(g).large or 'plan'}), whole model", sps, conv_s,
                 acc(g.predict(x)), "(is golden)"))
    t0 = time.perf_counter()
    prj = fhls.write(g, work / "digits", tb_inputs=x[:16])
    prj.compile()
    build_s = time.perf_counter() - t0
    sps = best_rate(prj.predict, x, repeat)
    rows.append(("fabformer HLS C-sim (native integers), whole model", sps, build_s, acc(prj.predict(x)),
                 bool(np.array_equal(prj.predict(x, raw=True), want))))
    ref = None
    try:
        import tensorflow as tf
        res1 = model.get_layer("res1").output
        inp = tf.keras.Input(shape=tuple(res1.shape[1:]), name="res1_in")
        h, ln1 = inp, None
        for nm in ["ln1", "ff1", "ff2", "ff2_q", "res2", "ln2", "flatten", "head"]:
            layer = model.get_layer(nm)
            h = layer([ln1, h]) if nm == "res2" else layer(h)
            if nm == "ln1":
                ln1 = h
        tail = tf.keras.Model(inp, h)
        feed = np.ascontiguousarray(tf.keras.Model(model.input, res1).predict(x, verbose=0))
        hm, build_s = _hls4ml(tail, work, "digits_hls4ml")
        sps = best_rate(lambda v: hm.predict(np.ascontiguousarray(v)), feed, repeat)
        ref = sps
        rows.append(("hls4ml 1.3.0 C-sim, after attention only", sps, build_s,
                     acc(np.asarray(hm.predict(feed))), "no (part of the model, own precisions)"))
    except Exception as e:
        rows.append((f"hls4ml 1.3.0 C-sim: failed ({type(e).__name__}: {str(e).splitlines()[0][:100]})",
                     0.0, None, 0.0, "-"))
    return rows, ref


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tile", type=int, default=10, help="inputs: the test split repeated this many times")
    ap.add_argument("--out", help="work folder (default: a temporary folder)")
    args = ap.parse_args(argv)
    from fabformer.apps.data import digits
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fab_bench_"))
    d = digits()
    x = np.concatenate([d.x_test] * args.tile)
    y = np.concatenate([d.y_test] * args.tile)
    ff, ff_ref = ff_section(d, x, y, args.repeat, work)
    dg, dg_ref = digits_section(d, x, y, args.repeat, work)
    print(f"{len(x)} inputs (digits test split x {args.tile}), best of {args.repeat} batched calls per path, "
          f"{os.cpu_count()} CPU cores")
    _table("Feed-forward QKeras model, 8x8 -> 16 -> 16 -> 10 (all paths run the whole model)", ff, ff_ref)
    _table("Digits Transformer (hls4ml: the layers after attention only)", dg, dg_ref)
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
