"""The compact architecture on the digits example: program listing, analytic cycles and MAC-array
utilization, and the Verilator simulation of the test split (random stalls) against golden.

    python bench/compact.py [--bits 8|4] [--samples 450] [--simulator verilator] [--listing out.lst]
                            [--row-multipliers dsp|lut] [--lanes 8] [--dsps N]
    python bench/compact.py --row-multipliers lut --lanes 4 --dsps 8   # the iCEBreaker build's engine
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def digits_graph(bits: int = 8):
    import fabformer
    from fabformer.apps.data import digits
    from fabformer.frontend import load_keras_model
    from fabformer.requant import requantize_weights
    d = digits()
    g = fabformer.convert(load_keras_model(ROOT / "examples" / "digits" / "model_q8.h5"), calibration=d.x_train)
    if bits != 8:
        g = requantize_weights(g, bits)
    return g, d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--samples", type=int, default=450)
    ap.add_argument("--simulator", default="verilator")
    ap.add_argument("--listing", default=None)
    ap.add_argument("--row-multipliers", choices=("dsp", "lut"), default="dsp",
                    help="lut: the multiplies in logic and the row unit's on the MAC lanes (the iCE40 build's engine)")
    ap.add_argument("--lanes", type=int, default=8, help="MAC lanes (the iCE40 UP5K build: 4)")
    ap.add_argument("--dsps", type=int, default=None, help="the device's DSPs (the iCE40 UP5K: 8)")
    ap.add_argument("--log", default="out/compact_sim.log", help="where the simulator's own log lines go")
    args = ap.parse_args(argv)
    from fabformer.rtl import generate
    from fabformer.sim import run
    g, d = digits_graph(args.bits)
    des = generate(g, arch="compact", row_multipliers=args.row_multipliers, lanes=args.lanes,
                   dsps=args.dsps)
    if args.listing:
        Path(args.listing).write_text(des.listing())
    print(f"digits {args.bits}-bit, compact ({args.row_multipliers} row multipliers): {des.macs} MACs, {des.multipliers} lanes, latency {des.latency_cycles} "
          f"cycles, II {des.ii_cycles}, MAC-array utilization {100 * des.mac_utilization:.1f} % "
          f"(MAC instructions {des.program.mac_cycles()} cycles)", flush=True)
    x = d.x_test[:args.samples]
    t0 = time.perf_counter()
    from fabformer.apps.console import capture
    log = Path(args.log)
    print(f"simulating {len(x)} samples ({args.simulator}; its log: {log}) ...", flush=True)
    with capture(log):  # the simulator's and cocotb's log lines go to the log file, not here
        r = run(des, x, simulator=args.simulator, timing_samples=3)
    print(f"{args.simulator}: {r.samples} samples with random stalls, mismatches {r.mismatches}, "
          f"latency {r.latency_cycles} (analytic {des.latency_cycles}), II {r.ii_cycles} (analytic {des.ii_cycles}), "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    ok = r.mismatches == 0 and r.latency_cycles == des.latency_cycles and r.ii_cycles == des.ii_cycles
    acc = float(np.mean(np.argmax(r.outputs, axis=-1) == d.y_test[:len(x)]))
    print(f"accuracy of the simulated hardware on the {len(x)} samples: {100 * acc:.2f} %")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
