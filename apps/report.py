"""The hardware-vs-software report: accuracy, agreement, per-layer error, speed and size.

Every path runs the same :class:`~fabformer.ir.Graph` on the digits test split:

========== ===============================================================
keras      the float Keras model on CPU (TensorFlow)
pytorch    the float PyTorch model (in place of ``keras`` for a PyTorch model): CUDA where present, else CPU
float      ``graph.predict(x, mode="float")`` on CPU (NumPy)
golden     ``graph.predict(x)``: the bit-exact golden model on CPU (NumPy)
float_gpu  the float graph on a GPU (CuPy through ``array-api-compat``)
golden_gpu the golden model on a GPU: must equal ``golden`` bit for bit
csim       HLS C-simulation (``fabformer.hls``; g++)
rtl        RTL simulation of ``fabformer.rtl.generate(graph)`` (``fabformer.sim``; Verilator)
========== ===============================================================

A path that cannot run here (no TensorFlow, no GPU, no Verilator, a backend
not installed) is listed as ``unavailable: <reason>``; it is never replaced by
another path.  :func:`make_report` writes ``report.md``, a self-contained
``report.html`` (plots inlined as base64 PNG) and ``report.json``.
"""
from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fabformer.apps.console import current
from fabformer.errors import FabformerError
from fabformer.requant import requantize_weights

PATH_ORDER = ["keras", "pytorch", "float", "golden", "float_gpu", "golden_gpu", "csim", "rtl"]
PATH_LABEL = {
    "keras": "Keras float model, CPU (TensorFlow)",
    "pytorch": "PyTorch float model (PyTorch)",
    "float": "float graph, CPU (NumPy)",
    "golden": "golden bit-exact model, CPU (NumPy)",
    "float_gpu": "float graph, GPU",
    "golden_gpu": "golden bit-exact model, GPU",
    "csim": "HLS C-simulation (g++)",
    "rtl": "RTL simulation (Verilator)",
}
DEVICES = ("cpu", "gpu")
NOMINAL_CLOCK_MHZ = 100.0
SWEEP_BITS = tuple(range(2, 11))


# -- array back ends: one code path for NumPy and a GPU array library ------------------------
@dataclass
class Backend:
    """Where ``graph.predict`` runs: ``to_device``/``to_host`` move arrays, ``sync`` waits."""

    device: str
    name: str
    library: str
    to_device: object
    to_host: object
    sync: object

    context: object = None  # entered around each predict (PyTorch: its device, where constants are made)

    def predict(self, graph, x, mode: str = "int", trace: bool = False):
        """``graph.predict`` on this device; returns host (NumPy) arrays."""
        with self.context() if self.context else _nullcontext():
            out = graph.predict(self.to_device(np.ascontiguousarray(x, dtype=np.float64)), mode=mode, trace=trace)
        self.sync()
        if trace:
            y, env = out
            return self.to_host(y), {k: self.to_host(v) for k, v in env.items()}
        return self.to_host(out)


def _noop():
    return None


def backend(device: str) -> Backend:
    """The array back end for ``--device``: ``cpu`` is NumPy, ``gpu`` is CuPy on GPU 0 (PyTorch's
    CUDA tensors where CuPy is not installed).

    Both go through the same array-API code in :mod:`fabformer.golden`."""
    if device not in DEVICES:
        raise FabformerError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cpu":
        return Backend("cpu", "CPU (NumPy)", f"numpy {np.__version__}", np.asarray, np.asarray, _noop)
    reason = gpu_unavailable_reason()
    if reason:
        raise FabformerError(f"--device gpu: no usable GPU ({reason}); use --device cpu")
    if _gpu_library() == "torch":  # PyTorch where CuPy is absent
        return torch_backend()
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return Backend("gpu", f"GPU 0: {name}", f"cupy {cupy.__version__}", cupy.asarray, cupy.asnumpy,
                   lambda: cupy.cuda.Device().synchronize())


def torch_backend() -> Backend:
    """The GPU back end through PyTorch: the same array-API code on CUDA tensors (constants are made
    on the GPU inside ``torch.device("cuda")``)."""
    import torch
    return Backend("gpu", f"GPU 0: {torch.cuda.get_device_name(0)}", f"torch {torch.__version__}",
                   lambda a: torch.as_tensor(a, device="cuda"), lambda t: t.detach().cpu().numpy(),
                   torch.cuda.synchronize, lambda: torch.device("cuda"))


def _gpu_library() -> str:
    """The GPU array library: CuPy where it is installed, else PyTorch."""
    import importlib.util
    if importlib.util.find_spec("cupy") is None and importlib.util.find_spec("torch") is not None:
        return "torch"
    return "cupy"


def _nullcontext():
    import contextlib
    return contextlib.nullcontext()


def gpu_unavailable_reason() -> str | None:
    """None when a GPU back end works here, else why not (for messages and the report)."""
    try:
        import array_api_compat  # noqa: F401  (golden finds the array namespace through it)
    except ImportError:
        return "array-api-compat is not installed"
    if _gpu_library() == "torch":
        import torch
        return None if torch.cuda.is_available() else "PyTorch sees no CUDA device (and CuPy is not installed)"
    try:
        import cupy
    except ImportError:
        return "neither CuPy nor PyTorch is installed"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        return f"CUDA reports no device ({type(e).__name__}: {e})"
    return None if n > 0 else "CUDA reports 0 devices"


# -- timing ---------------------------------------------------------------------------
def time_call(fn, x, min_seconds: float = 0.2, min_reps: int = 3, max_reps: int = 1000) -> dict:
    """Time ``fn(x)`` (after one warm-up call): the median seconds per call and per sample."""
    fn(x)
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    n = len(x)
    return {"batch": n, "reps": len(times), "seconds_per_call": med, "latency_s": med / n,
            "samples_per_s": n / med}


def time_path(fn, x, big_batch: int, min_seconds: float = 0.2) -> dict:
    """Batch-1 and large-batch timings of one path."""
    big = x[:big_batch] if len(x) >= big_batch else np.concatenate([x] * math.ceil(big_batch / len(x)))[:big_batch]
    return {"batch1": time_call(fn, x[:1], min_seconds), "large": time_call(fn, big, min_seconds)}


# -- paths ----------------------------------------------------------------------------
@dataclass
class PathResult:
    name: str
    status: str = "ok"
    outputs: np.ndarray | None = None
    timing: dict | None = None
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _accuracy(out, y) -> float:
    return float(np.mean(np.argmax(out, -1) == y[: len(out)]))


def _keras_path(model, x, timing, big_batch, min_seconds, name="keras"):
    """The source model's path, named by its framework (``keras`` or ``pytorch``)."""
    r = PathResult(name)
    if model is None:
        r.status = (f"unavailable: no {'PyTorch' if name == 'pytorch' else 'Keras'} model (give --model or a graph "
                    f"with meta source_model)")
        return r
    r.outputs = np.asarray(model.predict(x, verbose=0, batch_size=512), dtype=np.float64)
    if getattr(model, "program", None) is not None:  # a PyTorch model (TorchModel): where it ran
        r.info = {"model": f"PyTorch {model.name}", "device": model.device}
    if timing:
        r.timing = time_path(lambda v: model(v, training=False), x.astype(np.float32), big_batch, min_seconds)
    return r


def _graph_path(name, graph, x, be: Backend, mode, timing, big_batch, min_seconds):
    r = PathResult(name, info={"device": be.name, "library": be.library})
    r.outputs = np.asarray(be.predict(graph, x, mode=mode), dtype=np.float64)
    if timing:
        r.timing = time_path(lambda v: be.predict(graph, v, mode=mode), x, big_batch, min_seconds)
    return r


def _csim_path(graph, x, out_dir, timing, big_batch, min_seconds):
    r = PathResult("csim")
    try:
        from fabformer import hls
        write = hls.write
    except (ImportError, AttributeError) as e:
        r.status = f"unavailable: fabformer.hls is not installed ({e})"
        return r
    try:
        prj = write(graph, Path(out_dir) / "hls")
        prj.compile()
    except Exception as e:  # a compiler failure: shown, never hidden
        if isinstance(e, FabformerError) and "not installed" in str(e):
            r.status = f"unavailable: {str(e).splitlines()[0]}"
            return r
        r.status = f"failed: HLS C-simulation build: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return r
    r.outputs = np.asarray(prj.predict(x), dtype=np.float64)
    r.info = {"project": str(prj.path), "compile_seconds": getattr(prj, "compile_seconds", None)}
    if timing:
        r.timing = time_path(prj.predict, x, big_batch, min_seconds)
    return r


def _design(graph):
    """The generated RTL design (for cycle counts), or (None, reason)."""
    try:
        from fabformer import rtl
        return rtl.generate(graph), None
    except (ImportError, AttributeError) as e:
        return None, f"fabformer.rtl is not installed ({e})"
    except FabformerError as e:
        return None, f"RTL generation failed: {str(e).splitlines()[0]}"


def _rtl_path(graph, design, design_err, x, n):
    r = PathResult("rtl")
    if design is None:
        r.status = f"unavailable: {design_err}"
        return r
    try:
        from fabformer import sim
        run = sim.run
    except (ImportError, AttributeError) as e:
        r.status = f"unavailable: fabformer.sim.run is not installed ({e})"
        return r
    try:
        res = run(design, x[:n], simulator="verilator")
    except ImportError as e:
        r.status = f"unavailable: RTL simulation needs {e.name or e}"
        return r
    except Exception as e:  # a simulator build or run failure: shown, never hidden
        r.status = f"failed: RTL simulation: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return r
    r.outputs = np.asarray(res.outputs, dtype=np.float64).reshape(n, -1)
    r.info = {"samples": n, "latency_cycles": getattr(res, "latency_cycles", None),
              "ii_cycles": getattr(res, "ii_cycles", None), "mismatches": getattr(res, "mismatches", None),
              "simulated_cycles": getattr(res, "cycles", None), "sim_wall_s": getattr(res, "wall_s", None)}
    return r


# -- analyses -------------------------------------------------------------------------
def agreement(results: dict) -> list[dict]:
    """Every pair of paths with outputs, over the samples both ran."""
    names = [n for n in PATH_ORDER if n in results and results[n].ok]
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            oa, ob = results[a].outputs, results[b].outputs
            n = min(len(oa), len(ob))
            d = np.abs(oa[:n].reshape(n, -1) - ob[:n].reshape(n, -1))
            rows.append({"a": a, "b": b, "samples": n,
                         "argmax": float(np.mean(np.argmax(oa[:n], -1) == np.argmax(ob[:n], -1))),
                         "max_abs_dlogit": float(d.max()), "mean_abs_dlogit": float(d.mean()),
                         "bit_exact": bool(np.array_equal(oa[:n], ob[:n]))})
    return rows


def layer_trace(graph, x) -> list[dict]:
    """Float graph vs golden, tensor by tensor: where quantization error enters."""
    _, gi = graph.predict(x, trace=True)
    _, fl = graph.predict(x, mode="float", trace=True)
    rows = []
    for n in graph.nodes:
        t = graph.type_of(n.output)
        if t is None:
            continue
        g = np.asarray(gi[n.output], dtype=np.float64) * 2.0 ** -t.frac
        f = np.asarray(fl[n.output], dtype=np.float64)
        d = np.abs(g - f)
        scale = float(np.sqrt(np.mean(f * f)))
        rms = float(np.sqrt(np.mean(d * d)))
        rows.append({"layer": n.name, "kind": n.kind, "tensor": n.output, "type": str(t),
                     "max_abs_err": float(d.max()), "mean_abs_err": float(d.mean()), "rms_err": rms,
                     "rel_rms_err": rms / scale if scale > 0 else 0.0,
                     "saturated": _saturated(np.asarray(gi[n.output]), t)})
    return rows


def _saturated(v, t) -> float:
    """Share of values at the type's limits (for an unsigned type only the top one: 0 is not a clip)."""
    hit = v == t.max_int
    if t.signed:
        hit = hit | (v == t.min_int)
    return float(np.mean(hit))


def bit_sweep(graph, x, y, float_model=None, calibration=None, bits=SWEEP_BITS, float_model_name=None) -> dict:
    """Golden and float-graph accuracy against weight bit width.

    With ``float_model`` (a float Keras model) each width is a fresh conversion with
    ``weight_bits=b``; without it the graph's Dense weights are re-quantized."""
    rows = []
    if float_model is not None:
        from fabformer import convert
        method = (f"re-converted the float Keras model {float_model_name or getattr(float_model, 'name', '')} "
                  "with weight_bits=b (activations by range analysis)")
        for b in bits:
            g = convert(float_model, config={"weight_bits": b}, calibration=calibration)
            rows.append({"bits": b, "golden": _accuracy(g.predict(x), y),
                         "float": _accuracy(g.predict(x, mode="float"), y)})
    else:
        method = ("re-quantized the graph's Dense weights to b bits (round half up, saturate, integer bits kept; "
                  "a bias finer than the new product is rounded to it; activation types kept; widths at or above "
                  "the graph's own leave its weights unchanged)")
        for b in bits:
            g = requantize_weights(graph, b)
            rows.append({"bits": b, "golden": _accuracy(g.predict(x), y),
                         "float": _accuracy(g.predict(x, mode="float"), y)})
    short = "float Keras model re-converted" if float_model is not None else "graph's Dense weights re-quantized"
    return {"method": method, "short": short, "rows": rows}


RESOURCE_KINDS = ("lut", "ff", "dsp", "bram")


def board_figures(board: dict, source: str = "board figures") -> dict:
    """The board figures the report uses, from the output of ``fabformer build --json`` as it is
    (resources as ``{kind: {used, available, percent}}``) or from a plain dict (``board``,
    ``clock_mhz``, ``fmax_mhz``, ``resources {kind: count}``, ``latency_cycles``, ``ii_cycles``).

    Returns ``{board, clock_mhz, fmax_mhz, timing_met, latency_cycles, ii_cycles, multipliers,
    bitstream, resources {kind: used}, available {kind: count}}`` (keys absent when not given)."""
    if not isinstance(board, dict):
        raise FabformerError(f"{source}: expected a JSON object (the output of `fabformer build --json`), "
                             f"not {type(board).__name__}")
    out: dict = {}
    for k in ("board", "bitstream"):
        if board.get(k) is not None:
            out[k] = str(board[k])
    for k in ("clock_mhz", "fmax_mhz", "latency_cycles", "ii_cycles", "multipliers"):
        v = board.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise FabformerError(f"{source}: field {k!r} must be a positive number, not {v!r}")
        out[k] = v
    if board.get("timing_met") is not None:
        out["timing_met"] = bool(board["timing_met"])
    res = board.get("resources") or {}
    if not isinstance(res, dict):
        raise FabformerError(f"{source}: field 'resources' must be an object with keys among "
                             f"{', '.join(RESOURCE_KINDS)}, not {res!r}")
    used, avail = {}, {k: int(v) for k, v in (board.get("available") or {}).items() if k in RESOURCE_KINDS}
    for k, v in res.items():
        if k not in RESOURCE_KINDS:
            raise FabformerError(f"{source}: unknown resource {k!r} in 'resources'; valid: {', '.join(RESOURCE_KINDS)}")
        if isinstance(v, dict):
            if v.get("used") is not None:
                used[k] = int(v["used"])
            if v.get("available") is not None:
                avail[k] = int(v["available"])
        elif v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FabformerError(f"{source}: resource {k!r} must be a count or "
                                     f"{{used, available}}, not {v!r}")
            used[k] = int(v)
    out["resources"], out["available"] = used, avail
    if not (out.get("clock_mhz") or out.get("fmax_mhz") or used):
        raise FabformerError(f"{source}: no board figures found; give the output of `fabformer build --json` "
                             f"(or at least one of clock_mhz, fmax_mhz, resources)")
    return out


def fpga_figures(design, rtl_info: dict | None, board: dict | None) -> dict:
    """Cycles, clock, latency, throughput and resources of the FPGA row.

    With a board build (``board``: see :func:`board_figures`) the row is that build: its design's
    cycles (the RTL simulation's when it simulated the same design), at the clock the bitstream
    runs at; without one, the default design's cycles (RTL simulation, else analytic) at a
    nominal clock."""
    f: dict = {}
    if design is not None:
        f.update({"multipliers": design.multipliers, "macs": design.macs,
                  "latency_cycles": design.latency_cycles, "ii_cycles": design.ii_cycles,
                  "cycles_from": "analytic (fabformer.rtl design)"})
    simulated = bool(rtl_info and rtl_info.get("latency_cycles"))
    if simulated:
        f.update({"latency_cycles": rtl_info["latency_cycles"], "ii_cycles": rtl_info.get("ii_cycles"),
                  "cycles_from": "RTL simulation (Verilator)"})
    b = board_figures(board) if board else {}
    name = b.get("board", "board")
    same = design is not None and b.get("multipliers") == design.multipliers
    if b.get("latency_cycles") and not (simulated and same):
        f.update({"latency_cycles": b["latency_cycles"], "ii_cycles": b.get("ii_cycles"),
                  "multipliers": b.get("multipliers", f.get("multipliers")),
                  "cycles_from": f"the {name} build's design ({b.get('multipliers', '?')} multipliers; analytic)"})
    elif b.get("latency_cycles") and simulated:
        f["cycles_from"] = f"RTL simulation (Verilator) of the {name} build's design"
    if b.get("clock_mhz"):
        fm = b.get("fmax_mhz")
        f.update({"clock_mhz": float(b["clock_mhz"]), "fmax_mhz": fm,
                  "clock_from": f"the {name} build's clock" + (f"; Fmax {fm:g} MHz" if fm else "")
                  + ("" if b.get("timing_met", True) else ", timing NOT met")})
    elif b.get("fmax_mhz"):
        f.update({"clock_mhz": float(b["fmax_mhz"]), "fmax_mhz": b["fmax_mhz"],
                  "clock_from": f"Fmax of the {name} build"})
    else:
        f.update({"clock_mhz": NOMINAL_CLOCK_MHZ, "clock_from": f"nominal {NOMINAL_CLOCK_MHZ:g} MHz (no board build)"})
    if f.get("latency_cycles"):
        f["latency_s"] = f["latency_cycles"] / (f["clock_mhz"] * 1e6)
    if f.get("ii_cycles"):
        f["samples_per_s"] = f["clock_mhz"] * 1e6 / f["ii_cycles"]
    f["resources"] = dict(b.get("resources", {}))
    if b.get("available"):
        f["available"] = dict(b["available"])
    for k in ("board", "bitstream"):
        if b.get(k):
            f[k] = b[k]
    return f


# -- collection -----------------------------------------------------------------------
def collect(graph, x, y, *, model=None, device: str = "cpu", out_dir=None, rtl_samples: int = 20,
            paths=None, timing: bool = True, big_batch: int = 256, min_seconds: float = 0.2,
            sweep: bool = True, sweep_model=None, sweep_model_name=None, calibration=None,
            board: dict | None = None, data_source: str = "digits test split") -> dict:
    """Run every path and every analysis; returns the report's data (JSON-ready, no arrays).
    Without labels (``y`` None) accuracies are None and the bit-width sweep is skipped; the
    agreement matrix and the per-layer error need no labels."""
    be = backend(device)  # raises early and clearly for --device gpu without a GPU
    want = set(paths) if paths else set(PATH_ORDER)
    unknown = want - set(PATH_ORDER)
    if unknown:
        raise FabformerError(f"unknown report path(s) {', '.join(sorted(unknown))}; valid: {', '.join(PATH_ORDER)}")
    x = np.asarray(x, dtype=np.float64)
    y = None if y is None else np.asarray(y)
    if y is None:
        sweep = False
    cpu = backend("cpu")
    res: dict[str, PathResult] = {}
    con = current()

    def step(name, run):
        with con.step(f"{name}: {PATH_LABEL[name]}" + (", timed" if timing and name != "rtl" else "")) as s:
            r = res[name] = run()
            s.done(f"accuracy {_pct(_accuracy(r.outputs, y))}" if r.ok else r.status)

    if want & {"keras", "pytorch"}:  # the source model, named by its framework
        from fabformer.apps.evaluate import framework
        src = framework(model, graph)
        step(src, lambda: _keras_path(model, x, timing, big_batch, min_seconds, src))
    if "float" in want:
        step("float", lambda: _graph_path("float", graph, x, cpu, "float", timing, big_batch, min_seconds))
    if "golden" in want:
        step("golden", lambda: _graph_path("golden", graph, x, cpu, "int", timing, big_batch, min_seconds))
    for name, mode in (("float_gpu", "float"), ("golden_gpu", "int")):
        if name in want and device == "gpu":
            step(name, lambda: _graph_path(name, graph, x, be, mode, timing, big_batch, min_seconds))
    if "csim" in want:
        if out_dir is None:
            res["csim"] = PathResult("csim", "unavailable: no output folder for the HLS project")
        else:
            step("csim", lambda: _csim_path(graph, x, out_dir, timing, big_batch, min_seconds))
    design, derr = _design(graph)  # analytic cycles for the FPGA figures even without simulation
    if "rtl" in want:
        step("rtl", lambda: _rtl_path(graph, design, derr, x, min(rtl_samples, len(x))))

    paths_out = {}
    for name in PATH_ORDER:
        if name not in res:
            continue
        r = res[name]
        d = {"label": PATH_LABEL[name], "status": r.status, **r.info}
        if r.ok:
            d.update({"accuracy": None if y is None else _accuracy(r.outputs, y), "samples": int(len(r.outputs))})
        else:
            d["accuracy"] = None
        if r.timing:
            d["timing"] = r.timing
        paths_out[name] = d
    agree = agreement(res)
    fpga = fpga_figures(design, res["rtl"].info if "rtl" in res and res["rtl"].ok else None, board)
    data = {
        "graph": graph.name, "samples": int(len(x)), "data": data_source, "labels": y is not None,
        "device": be.name,
        "paths": paths_out, "agreement": agree,
        "layers": layer_trace(graph, x[: min(len(x), 200)]),
        "size": {**graph.weight_stats(), "macs": graph.macs(), **fpga.get("resources", {})},
        "fpga": fpga,
    }
    if "golden" in res and "golden_gpu" in res and res["golden"].ok and res["golden_gpu"].ok:
        data["gpu_bit_exact"] = bool(np.array_equal(res["golden"].outputs, res["golden_gpu"].outputs))
    if sweep:
        with con.step(f"accuracy vs weight bit width ({SWEEP_BITS[0]} to {SWEEP_BITS[-1]} bits)"):
            data["sweep"] = bit_sweep(graph, x, y, sweep_model, calibration, float_model_name=sweep_model_name)
    return data


# -- rendering ------------------------------------------------------------------------
def _pct(v):
    return "—" if v is None else f"{100 * v:.2f} %"


def _si_time(s):
    if s is None:
        return "—"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _rate(v):
    return "—" if v is None else f"{v:,.0f}"


def tables(data: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """The report's tables as (heading, note, header, rows): rendered to Markdown and HTML alike."""
    out = []
    rows = []
    for name, p in data["paths"].items():
        rows.append([name, p["label"], _pct(p.get("accuracy")), str(p.get("samples", "—")), p["status"]])
    out.append(("Accuracy", f"{data.get('data', 'digits test split')}, {data['samples']} samples (RTL on a subset)"
                + ("." if data.get("labels", True) else "; no labels: accuracy not available, see agreement."),
                ["path", "what", "accuracy", "samples", "status"], rows))
    rows = [[r["a"], r["b"], str(r["samples"]), _pct(r["argmax"]), f"{r['max_abs_dlogit']:.6g}",
             f"{r['mean_abs_dlogit']:.6g}", "yes" if r["bit_exact"] else "no"] for r in data["agreement"]]
    out.append(("Agreement", "every pair of paths that ran, over the samples both ran.",
                ["a", "b", "samples", "argmax agreement", "max |Δlogit|", "mean |Δlogit|", "bit-exact"], rows))
    rows = [[r["layer"], r["kind"], r["type"], f"{r['max_abs_err']:.4g}", f"{r['mean_abs_err']:.4g}",
             f"{100 * r['rel_rms_err']:.3g} %", f"{100 * r['saturated']:.2g} %"] for r in data["layers"]]
    out.append(("Per-layer error", "golden (dequantized) minus float graph, tensor by tensor; relative = RMS error / RMS value.",
                ["layer", "kind", "type", "max |err|", "mean |err|", "relative RMS", "saturated"], rows))
    rows = []
    for name, p in data["paths"].items():
        t = p.get("timing")
        if t:
            rows.append([name, p.get("device", "CPU"), _si_time(t["batch1"]["latency_s"]),
                         _rate(t["batch1"]["samples_per_s"]), str(t["large"]["batch"]),
                         _si_time(t["large"]["latency_s"]), _rate(t["large"]["samples_per_s"])])
    f = data["fpga"]
    if f.get("latency_s"):
        rows.append(["fpga", f"{f.get('board', 'FPGA')} at {f['clock_mhz']:g} MHz ({f['clock_from']})",
                     f"{_si_time(f['latency_s'])} ({f['latency_cycles']} cycles)", "—", "stream",
                     f"{_si_time(1 / f['samples_per_s'])} (II {f['ii_cycles']} cycles)" if f.get("samples_per_s") else "—",
                     _rate(f.get("samples_per_s"))])
    out.append(("Speed", "median wall time per call; latency per sample; FPGA cycles from "
                + f.get("cycles_from", "—") + ".",
                ["path", "where", "batch-1 latency", "batch-1 samples/s", "large batch", "per-sample", "samples/s"],
                rows))
    s = data["size"]
    avail = f.get("available") or {}

    def _size(k):
        v = f"{s[k]:,}"
        if avail.get(k):
            v += f" of {avail[k]:,} ({100 * s[k] / avail[k]:.1f} %)"
        return v
    rows = [[k, _size(k)] for k in ("params", "nonzero", "bits", "macs", "lut", "ff", "dsp", "bram") if k in s]
    if f.get("multipliers"):
        rows.append(["multipliers (RTL)", f"{f['multipliers']:,}"])
    if f.get("fmax_mhz"):
        rows.append(["clock / Fmax (MHz)", f"{f['clock_mhz']:g} / {f['fmax_mhz']:g}"])
    note = (f"LUT/FF/DSP/BRAM from the {f.get('board', 'board')} build (nextpnr, after place and route)"
            + (f"; bitstream {f['bitstream']}." if f.get("bitstream") else ".")) if f.get("resources") else \
        "LUT/FF/DSP/BRAM: no board figures given (fabformer build, then report --board-json)."
    out.append(("Size", note, ["quantity", "value"], rows))
    if data.get("sweep"):
        rows = [[str(r["bits"]), _pct(r["golden"]), _pct(r["float"])] for r in data["sweep"]["rows"]]
        out.append(("Accuracy vs weight bit width", data["sweep"]["method"] + ".",
                    ["weight bits", "golden", "float graph"], rows))
    return out


def plots(data: dict, out_dir: Path) -> dict:
    """PNG plots; returns {name: path}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    meta = {"Software": None}
    files = {}

    def save(fig, name):
        p = out_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(p, dpi=110, metadata=meta)
        plt.close(fig)
        files[name] = p

    ok = [(n, p) for n, p in data["paths"].items() if p.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [n for n, _ in ok]
    accs = [100 * p["accuracy"] for _, p in ok]
    bars = ax.bar(names, accs, color=["#4c72b0" if "gpu" not in n else "#55a868" for n in names])
    for b, a in zip(bars, accs):
        ax.text(b.get_x() + b.get_width() / 2, a + 0.5, f"{a:.1f}", ha="center", va="bottom", fontsize=8)
    lo = max(0.0, min(accs + [100]) - 10)
    ax.set_ylim(lo, 101)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Accuracy per path (digits test split, {data['samples']} samples)")
    ax.grid(axis="y", alpha=0.3)
    save(fig, "accuracy")

    lab, b1, big = [], [], []
    for n, p in data["paths"].items():
        if p.get("timing"):
            lab.append(n)
            b1.append(p["timing"]["batch1"]["latency_s"])
            big.append(p["timing"]["large"]["latency_s"])
    f = data["fpga"]
    if f.get("latency_s"):
        lab.append("fpga")
        b1.append(f["latency_s"])
        big.append(1 / f["samples_per_s"] if f.get("samples_per_s") else f["latency_s"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(lab), 2) + 1.4))
    yy = np.arange(len(lab))
    ax.barh(yy - 0.2, b1, 0.4, label="batch 1: latency per sample", color="#c44e52")
    ax.barh(yy + 0.2, big, 0.4, label="large batch: time per sample (FPGA: II / clock)", color="#4c72b0")
    ax.set_yticks(yy, lab)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("seconds per sample (log scale)")
    ax.set_title("Latency per path" + (f" (FPGA at {f['clock_mhz']:g} MHz)" if f.get("latency_s") else ""))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3, which="both")
    save(fig, "latency")

    L = data["layers"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    xs = np.arange(len(L))
    ax.plot(xs, [max(r["rel_rms_err"], 1e-9) * 100 for r in L], "o-", label="relative RMS error (%)")
    ax.plot(xs, [max(r["max_abs_err"], 1e-9) for r in L], "s--", alpha=0.7, label="max |error| (absolute)")
    ax.set_yscale("log")
    ax.set_xticks(xs, [r["layer"] for r in L], rotation=60, ha="right", fontsize=7)
    ax.set_title("Per-layer error: golden vs float graph")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    save(fig, "layer_error")

    if data.get("sweep"):
        S = data["sweep"]["rows"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot([r["bits"] for r in S], [100 * r["golden"] for r in S], "o-", label="golden (bit-exact)")
        ax.plot([r["bits"] for r in S], [100 * r["float"] for r in S], "s--", label="float graph")
        src = "pytorch" if "pytorch" in data["paths"] else "keras"
        k = data["paths"].get(src, {}).get("accuracy")
        if k is not None:
            ax.axhline(100 * k, color="gray", ls=":", label=f"{src} path (the report's model)")
        ax.set_xlabel("weight bits")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"Accuracy vs weight bit width ({data['sweep'].get('short', '')})", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "bit_sweep")
    return files


def _summary_lines(data: dict) -> list[str]:
    lines = [f"Graph `{data['graph']}`, digits test split ({data['samples']} samples), device {data['device']}."]
    hw = [r for r in data["agreement"] if {r["a"], r["b"]} <= {"golden", "golden_gpu", "csim", "rtl"}]
    for r in hw:
        lines.append(f"{r['a']} vs {r['b']}: argmax agreement {_pct(r['argmax'])}, max |Δlogit| "
                     f"{r['max_abs_dlogit']:.3g} over {r['samples']} samples"
                     + (" (bit-exact)." if r["bit_exact"] else " (NOT bit-exact)."))
    f = data.get("fpga", {})
    if f.get("board"):
        res = ", ".join(f"{f['resources'][k]:,} {k.upper()}" for k in RESOURCE_KINDS if k in f.get("resources", {}))
        lines.append(f"FPGA: the {f['board']} build at {f['clock_mhz']:g} MHz"
                     + (f" (Fmax {f['fmax_mhz']:g} MHz)" if f.get("fmax_mhz") else "")
                     + (f": latency {_si_time(f['latency_s'])}" if f.get("latency_s") else "")
                     + (f", {_rate(f['samples_per_s'])} samples/s" if f.get("samples_per_s") else "")
                     + (f"; {res}" if res else "") + ".")
    for n, p in data["paths"].items():
        if not p["status"] == "ok":
            lines.append(f"{n}: {p['status']}.")
    return lines


def render_markdown(data: dict, images: dict) -> str:
    out = [f"# fabformer report: {data['graph']}", ""]
    out += [f"- {s}" for s in _summary_lines(data)] + [""]
    for head, note, hdr, rows in tables(data):
        out += [f"## {head}", "", note, "", "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows] + [""]
    out += ["## Plots", ""]
    out += [f"![{k}]({Path(p).name})" for k, p in images.items()] + [""]
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px;"
        "font-size:13px;text-align:left}th{background:#eee}img{max-width:100%;display:block;margin:1em 0}"
        ".note{color:#555;font-size:13px}")


def render_html(data: dict, images: dict) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>fabformer report: {e(data['graph'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>fabformer report: {e(data['graph'])}</h1><ul>"]
    out += [f"<li>{e(s)}</li>" for s in _summary_lines(data)] + ["</ul>"]
    for i, (head, note, hdr, rows) in enumerate(tables(data)):
        out.append(f"<h2>{e(head)}</h2><p class=\"note\">{e(note)}</p>")
        out.append(f'<table id="t{i}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in hdr) + "</tr></thead><tbody>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        out.append("</tbody></table>")
    out.append("<h2>Plots</h2>")
    for k, p in images.items():
        b64 = base64.b64encode(Path(p).read_bytes()).decode()
        out.append(f'<img alt="{e(k)}" id="plot-{e(k)}" src="data:image/png;base64,{b64}">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write(data: dict, out_dir) -> dict:
    """Write plots, report.md, report.html and report.json into ``out_dir`` (a folder fabformer creates)."""
    from fabformer.outdir import prepare_dir
    out_dir = prepare_dir(out_dir)
    with current().step("plots and report files"):
        images = plots(data, out_dir)
        (out_dir / "report.md").write_text(render_markdown(data, images))
        (out_dir / "report.html").write_text(render_html(data, images))
    data = {**data, "html": str(out_dir / "report.html"), "md": str(out_dir / "report.md"),
            "json": str(out_dir / "report.json"), "plots": {k: str(v) for k, v in images.items()}}
    (out_dir / "report.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def make_report(graph, out_dir, *, model=None, samples: int | None = None, device: str = "cpu", data=None,
                **kw) -> dict:
    """Run every path on ``data`` (:class:`fabformer.apps.data.Data`; default: the digits test split
    of the shipped example), first ``samples``, and write the report."""
    from fabformer.apps.data import data_for, digits, is_digits_example
    d = (data or data_for(graph, None, None, need="labels")).head(samples)
    x, y = d.x, d.y
    if is_digits_example(graph):
        kw.setdefault("calibration", digits().x_train)
    else:
        kw.setdefault("calibration", x)
    be = backend(device)  # clear error before any slow work
    del be
    out_dir = Path(out_dir)
    from fabformer.outdir import prepare_dir
    prepare_dir(out_dir)
    data = collect(graph, x, y, model=model, device=device, out_dir=out_dir, data_source=d.source, **kw)
    return write(data, out_dir)
