"""The PyTorch reference paths on a GPU: the example encoders on CUDA through PyTorch, the float graph
and the golden model on CUDA tensors (``fabformer.apps.report.torch_backend``), golden bit-equality.

    python bench/torch_gpu.py prepare DIR    # here: weights (.npz), CPU outputs, graph JSONs
    python3 bench/torch_gpu.py measure DIR   # on the GPU machine (its own PyTorch); JSON to $OUT or DIR

The weights travel as NumPy arrays and the models are rebuilt from ``examples/torch/train.py``, so the
GPU machine's PyTorch need not read archives of a newer PyTorch.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("encoder_post", "encoder_pre")
sys.path.insert(0, str(ROOT / "examples" / "torch"))


def prepare(dir_: Path) -> None:
    import fabformer
    from fabformer.apps.data import digits
    from fabformer.frontend.pytorch import TorchModel, load_torch_model
    d = digits()
    dir_.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        ep = load_torch_model(ROOT / "examples" / "torch" / f"{name}.pt2")
        np.savez(dir_ / f"{name}_state.npz", **{k: v.detach().numpy() for k, v in ep.state_dict.items()})
        m = TorchModel(ep, name, device="cpu")
        np.save(dir_ / f"{name}_cpu_out.npy", m.predict(d.x_test))
        g = fabformer.convert(m, calibration=d.x_train)
        g.save(dir_ / f"{name}.graph.json")
        np.save(dir_ / f"{name}_golden_cpu.npy", g.predict(d.x_test))


def _time(fn, x, reps=5):
    import torch
    fn(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def measure(dir_: Path) -> dict:
    import torch
    import fabformer
    from fabformer.apps import report
    from fabformer.apps.data import digits
    from fabformer.frontend.pytorch import torch_predict
    from train import Encoder
    out = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "numpy": np.__version__}
    d = digits()
    be_t = report.torch_backend()
    try:
        be_c = report.backend("gpu")  # CuPy where installed
    except Exception as e:  # noqa: BLE001 - the reason is the result
        be_c, out["cupy_error"] = None, str(e)
    for name in NAMES:
        r = {}
        m = Encoder(name == "encoder_pre")
        sd = np.load(dir_ / f"{name}_state.npz")
        m.load_state_dict({k: torch.as_tensor(sd[k]) for k in sd.files})
        m.eval()
        gpu_out = torch_predict(m, d.x_test, device="cuda")
        cpu_out = torch_predict(m, d.x_test, device="cpu")
        r["torch_cuda_vs_cpu_argmax_agreement"] = float(np.mean(gpu_out.argmax(1) == cpu_out.argmax(1)))
        r["torch_cuda_vs_cpu_max_abs_diff"] = float(np.abs(gpu_out - cpu_out).max())
        r["torch_cuda_accuracy"] = float(np.mean(gpu_out.argmax(1) == d.y_test))
        m.cuda()
        xb = torch.as_tensor(np.tile(d.x_test, (23, 1, 1))[:10000], dtype=torch.float32, device="cuda")
        with torch.no_grad():
            r["torch_cuda_samples_per_s_batch10000"] = round(10000 / _time(lambda v: m(v), xb))
        g = fabformer.load(dir_ / f"{name}.graph.json")
        gold = g.predict(d.x_test)
        r["golden_cpu_equals_the_preparing_machine"] = bool(np.array_equal(gold, np.load(dir_ / f"{name}_golden_cpu.npy")))
        r["golden_torch_cuda_bit_equal_cpu"] = bool(np.array_equal(be_t.predict(g, d.x_test), gold))
        r["float_torch_cuda_vs_cpu_max_abs_diff"] = float(
            np.abs(be_t.predict(g, d.x_test, mode="float") - g.predict(d.x_test, mode="float")).max())
        r["golden_vs_torch_argmax_agreement"] = float(np.mean(gold.argmax(1) == cpu_out.argmax(1)))
        xg = torch.as_tensor(np.tile(d.x_test, (223, 1, 1))[:100000], device="cuda")
        with torch.device("cuda"):
            r["golden_torch_cuda_samples_per_s_batch100000"] = round(100000 / _time(lambda v: g.predict(v), xg, 3))
            r["float_torch_cuda_samples_per_s_batch100000"] = round(
                100000 / _time(lambda v: g.predict(v, mode="float"), xg, 3))
        if be_c is not None:
            r["golden_cupy_bit_equal_cpu"] = bool(np.array_equal(be_c.predict(g, d.x_test), gold))
        out[name] = r
        print(json.dumps({name: r}, indent=1), flush=True)
    Path(os.environ.get("OUT", dir_), "gpu.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    what, where = sys.argv[1], Path(sys.argv[2])
    prepare(where) if what == "prepare" else measure(where)
