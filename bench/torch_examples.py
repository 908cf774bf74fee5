"""The PyTorch examples through every path: PyTorch vs float graph vs golden on the digits test
split (the sequence examples ``text`` and ``causal``: 1,000 samples their script makes, seed 2,
calibrated on 500 of seed 0, as in ``tests/test_torch_examples.py``), golden vs C-simulation (g++)
and RTL simulation bit for bit, Brevitas' quantized forward vs golden bit for bit where the model is
fully quantized.

    python bench/torch_examples.py [--csim-samples 450] [--rtl-samples 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["encoder_post", "encoder_pre", "brevitas_q8", "text", "causal"]
SEQUENCES = ("text", "causal")  # trained by examples/torch/train_sequences.py on data it makes


def _data(name: str):
    """(calibration, test inputs, test labels) of an example."""
    if name in SEQUENCES:
        import importlib.util
        spec = importlib.util.spec_from_file_location("torch_sequences", ROOT / "examples" / "torch" /
                                                      "train_sequences.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        cal, _ = mod.MAKE[name](500, seed=0)
        x, y = mod.MAKE[name](1000, seed=2)
        return cal, x, y
    from fabformer.apps.data import digits
    d = digits()
    return d.x_train, d.x_test, d.y_test


def one(name: str, csim_samples: int, rtl_samples: int, work: Path) -> dict:
    import fabformer
    from fabformer.apps.common import load_model
    cal, x_test, y = _data(name)
    model = load_model(ROOT / "examples" / "torch" / f"{name}.pt2")
    t = time.time()
    g = fabformer.convert(model, calibration=cal)
    r = {"model": f"examples/torch/{name}.pt2", "convert_s": round(time.time() - t, 1),
         "nodes": len(g.nodes), "macs": g.macs(), "float_units": list(g.meta["float_units"])}
    ref = model.predict(x_test)
    gi = g.predict(x_test)
    gf = g.predict(x_test, mode="float")
    r["accuracy"] = {k: float(np.mean(v.argmax(-1) == y)) for k, v in (("torch", ref), ("float", gf), ("golden", gi))}
    r["agreement_golden_vs_torch"] = float(np.mean(gi.argmax(-1) == ref.argmax(-1)))
    r["max_abs_dlogit_golden_vs_torch"] = float(np.max(np.abs(gi - ref)))
    if not g.meta["float_units"]:
        r["golden_equals_torch_bit_exact"] = bool(np.array_equal(gi, ref))
    if csim_samples:
        import fabformer.hls
        x = x_test[:csim_samples]
        t = time.time()
        prj = fabformer.hls.write(g, work / f"{name}_hls")
        prj.compile()
        cs = prj.predict(x, raw=True)
        _, env = g.predict(x, trace=True)
        r["csim"] = {"samples": len(x), "bit_exact": bool(np.array_equal(cs, np.asarray(env[g.outputs[0]]))),
                     "seconds": round(time.time() - t, 1)}
    if rtl_samples:
        import fabformer.rtl
        import fabformer.sim
        t = time.time()
        s = fabformer.sim.run(fabformer.rtl.generate(g), x_test[:rtl_samples], build_dir=work / f"{name}_sim")
        r["rtl"] = {"samples": rtl_samples, "bit_exact": bool(s.bit_exact), "latency_cycles": s.latency_cycles,
                    "ii_cycles": s.ii_cycles, "seconds": round(time.time() - t, 1)}
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csim-samples", type=int, default=450)
    ap.add_argument("--rtl-samples", type=int, default=5)
    ap.add_argument("--models", default=",".join(EXAMPLES))
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            out[name] = one(name, a.csim_samples, a.rtl_samples, Path(tmp))
            print(json.dumps({name: out[name]}, indent=1), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
