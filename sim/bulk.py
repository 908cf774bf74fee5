"""Whole data sets through the RTL: a Verilator build with a C++ testbench (``tb_stream.cpp``)
that streams input rows from a file, checks every output row against the golden rows
inside the simulator, and writes what it saw back to files.

No Python runs per cycle, so a data set of thousands of samples takes seconds; the
cocotb testbench (:func:`fabformer.sim.run`) stays for handshake checks under random
stalls, which this mode can also apply (``valid_prob``, ``ready_prob``).  Builds are
cached by the digest of the Verilog, the testbench and the build flags.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fabformer.errors import FabformerError
from ..fixed import dequantize
from . import runner
from .api import SimResult, golden_io
from .scoreboard import Mismatch, pack_rows, unpack_rows

TB_SOURCE = Path(__file__).resolve().parent / "tb_stream.cpp"
EXE = "Vstream"
# C++ optimisation of the verilated model: -O1 for the per-cycle code (the digits model at
# -O0 throughout simulated ~10x slower: 4.7k against 45k cycles/s on a loaded machine),
# -O0 for the one-time construction code (OPT_SLOW), which only costs build time.
CXX_OPT = "-O1"
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-UNOPTFLAT", "--x-assign", "fast",
                  "--x-initial", "fast", "--noassert"]
# Verilator's runtime objects depend only on Verilator and the flags: compiled once per
# (installation, flags), then copied into each new build folder (make skips them).
RUNTIME = ("verilated", "verilated_threads")


def _words(bits: int) -> int:
    return (bits + 31) // 32


def _to_words(rows: list[int], bits: int) -> np.ndarray:
    n = _words(bits)
    return np.frombuffer(b"".join(int(r).to_bytes(4 * n, "little") for r in rows), dtype="<u4")


def _from_words(words: np.ndarray, bits: int) -> list[int]:
    n = _words(bits)
    raw = np.ascontiguousarray(words, dtype="<u4").reshape(-1, n).tobytes()
    return [int.from_bytes(raw[i * 4 * n:(i + 1) * 4 * n], "little") for i in range(len(raw) // (4 * n))]


def _port_bits(design) -> tuple[int, int]:
    """Payload widths of the top's input and output streams (a design set's: its widest member's)."""
    ds = getattr(design, "design_set", None)
    designs = ds.designs if ds is not None else [design]
    return (max(d.in_type.width * d.in_cols for d in designs), max(d.out_type.width * d.out_cols for d in designs))


_VERILOG: dict = {}  # id(design) -> (weak reference, Verilog text): Amaranth takes seconds per conversion


def verilog_of(design) -> str:
    """The design's Verilog (top module ``top``), converted once per design object."""
    import weakref
    hit = _VERILOG.get(id(design))
    if hit is not None and hit[0]() is design:
        return hit[1]
    text = design.verilog(runner.TOPLEVEL)
    if id(design) not in _VERILOG:
        weakref.finalize(design, _VERILOG.pop, id(design), None)
    _VERILOG[id(design)] = (weakref.ref(design), text)
    return text


def build(design, build_dir=None, progress=None) -> Path:
    """Build (or reuse) the streaming simulator of ``design``; returns the executable.

    The build folder is named by the digest of the Verilog, ``tb_stream.cpp`` and the
    flags: an unchanged design is a cache hit (no Verilator, no compiler)."""
    text = verilog_of(design)
    in_w, out_w = _port_bits(design)
    has_sel = getattr(design, "select", None) is not None
    defines = [f"-DIN_W={in_w}", f"-DOUT_W={out_w}"] + (["-DHAS_SEL"] if has_sel else [])
    tb = TB_SOURCE.read_text()
    key = "\n".join([text, tb, " ".join(VERILATOR_ARGS), " ".join(defines), CXX_OPT, "slow -O0"])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    if build_dir is None:
        name = getattr(design, "build_name", design.graph.name)
        build_dir = runner.default_build_root() / f"{name}-stream-{digest}"
    build_dir = Path(build_dir).resolve()
    with runner.build_lock(build_dir):
        return _build(text, tb, defines, digest, build_dir, progress)


def _build(text: str, tb: str, defines: list, digest: str, build_dir: Path, progress) -> Path:
    exe = build_dir / "obj" / EXE
    stamp = build_dir / "fabformer.stamp"
    if stamp.is_file() and stamp.read_text() == digest and exe.is_file():
        stamp.touch()  # used now: the cache removes the least recently used (runner.prune_cache)
        return exe
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "top.v").write_text(text)
    (build_dir / "tb_stream.cpp").write_text(tb)
    runner.verilator_setup(build_dir.parent / "bin")
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", jobs, "--top-module", runner.TOPLEVEL, *VERILATOR_ARGS,
           "-CFLAGS", " ".join(defines), "-Mdir", "obj", "-o", EXE,
           "-MAKEFLAGS", f"OPT_FAST={CXX_OPT} OPT_SLOW=-O0 OPT_GLOBAL={CXX_OPT} CFG_CXXFLAGS_PCH_I=-include",
           "top.v", "tb_stream.cpp"]
    rt_dir = build_dir.parent / ("stream-runtime-" + hashlib.sha256(
        (os.environ.get("VERILATOR_ROOT", "") + CXX_OPT + " ".join(VERILATOR_ARGS)).encode()).hexdigest()[:12])
    obj = build_dir / "obj"
    obj.mkdir(exist_ok=True)
    _copy_objects(rt_dir, obj)
    if progress:
        progress(f"building the Verilator stream simulator in {build_dir} (cached by the Verilog's digest)")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=build_dir, capture_output=True, text=True)
    (build_dir / "build.log").write_text(" ".join(cmd) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0 or not exe.is_file():
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-20:])
        raise FabformerError(f"the Verilator stream build in {build_dir} failed (exit {r.returncode}); "
                             f"log tail:\n{tail}")
    if not rt_dir.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=build_dir.parent))
        _copy_objects(obj, tmp)
        try:
            tmp.rename(rt_dir)
        except OSError:
            pass
    stamp.write_text(digest)
    (build_dir / "build_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    if build_dir.parent == runner.default_build_root().resolve():
        runner.prune_cache(build_dir.parent)
    return exe


def _copy_objects(src: Path, dst: Path) -> None:
    import shutil
    for stem in RUNTIME:
        for ext in (".o", ".d"):
            f = src / (stem + ext)
            if f.is_file():
                shutil.copy2(f, dst / f.name)


def run(design, x, valid_prob: float = 1.0, ready_prob: float = 1.0, seed: int = 0, build_dir=None,
        progress=None) -> SimResult:
    """Stream float inputs ``x`` (a batch) through ``design`` in the Verilator testbench and
    check every output row against golden inside the simulator.

    ``valid_prob`` / ``ready_prob`` < 1 insert random input gaps and output back-pressure
    (seeded); at 1.0 (default) the stream runs at full rate, and latency (sample 0) and II
    (mean spacing of sample ends) are measured on the whole set."""
    for nm, p in (("valid_prob", valid_prob), ("ready_prob", ready_prob)):
        if not (isinstance(p, (int, float)) and 0.0 < p <= 1.0):
            raise FabformerError(f"{nm} must be in (0, 1], not {p!r}")
    x = np.asarray(x, dtype=np.float64)
    g = design.graph
    if x.shape == tuple(g.tensors[g.inputs[0]].shape):
        x = x[None]
    xin, yexp = golden_io(design, x)
    n = int(xin.shape[0])
    if n < 1:
        raise FabformerError("the stream simulation needs at least one input sample")
    exe = build(design, build_dir, progress)
    in_w, out_w = _port_bits(design)
    in_rows = pack_rows(xin, design.in_type, design.in_cols)
    exp_rows = pack_rows(yexp, design.out_type, design.out_cols)
    n_in, n_out = len(in_rows), len(exp_rows)
    stall = 1.0 / (valid_prob * ready_prob)
    max_cycles = int(20 * stall * (design.latency_cycles + 10 * design.in_rows + n * (design.ii_cycles + 50))) + 10000
    with tempfile.TemporaryDirectory(dir=exe.parent.parent) as tmp:
        tmp = Path(tmp)
        _to_words(in_rows, in_w).tofile(tmp / "in.bin")
        _to_words(exp_rows, out_w).tofile(tmp / "expected.bin")
        args = [str(exe), str(tmp / "in.bin"), str(tmp / "expected.bin"), str(tmp / "out.bin"),
                str(tmp / "result.json"), str(n_in), str(n_out), repr(float(valid_prob)), repr(float(ready_prob)),
                str(int(seed)), str(max_cycles), str(getattr(design, "select", None) or 0)]
        if progress:
            progress(f"streaming {n} samples ({n_in} input rows) through {exe.parent.parent.name}")
        t0 = time.perf_counter()
        r = subprocess.run(args, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if not (tmp / "result.json").is_file():
            raise FabformerError(f"the Verilator stream simulation exited with {r.returncode} and wrote no "
                                 f"result: {(r.stdout + r.stderr)[-2000:]}")
        res = json.loads((tmp / "result.json").read_text())
        blob = np.fromfile(tmp / "out.bin", dtype=np.uint8)
    ow = _words(out_w)
    got_words = blob[: 4 * ow * n_out].view("<u4")
    out_cycles = blob[4 * ow * n_out:].view("<u8")
    if res["timeout"]:
        raise FabformerError(f"the Verilator stream simulation of {g.name!r} stalled after {res['out_rows']} of "
                             f"{n_out} output rows in {res['cycles']} cycles (deadlock or far slower than the "
                             f"analytic II {design.ii_cycles})")
    raw = unpack_rows(_from_words(got_words, out_w), design.out_type, design.out_cols).reshape(yexp.shape)
    mism = int(np.count_nonzero(raw != yexp))
    if (mism == 0) != (res["mismatched_rows"] == 0):
        raise FabformerError(f"the stream testbench counted {res['mismatched_rows']} mismatching rows but its "
                             f"output file has {mism} mismatching values: the two checks disagree")
    report = []
    rps = design.out_rows
    shape = tuple(g.tensors[design.out_tensor].shape)
    for m in res["first_mismatches"]:
        k = m["row"]
        e = unpack_rows([int(m["expected"], 16)], design.out_type, design.out_cols)[0]
        a = unpack_rows([int(m["actual"], 16)], design.out_type, design.out_cols)[0]
        s, rr = divmod(k, rps)
        for j in np.nonzero(e != a)[0].tolist():
            idx = tuple(int(i) for i in np.unravel_index(rr * design.out_cols + j, shape)) if shape else ()
            report.append(str(Mismatch(design.out_tensor, s, idx, int(e[j]), int(a[j]))))
    ends = out_cycles[rps - 1::rps].astype(np.int64)
    lat = int(ends[0]) - int(res["first_in_cycle"])
    ii = float(np.mean(np.diff(ends))) if len(ends) > 1 else float(lat + 1)
    return SimResult(outputs=dequantize(raw, design.out_type.frac), raw=raw, expected_raw=yexp,
                     latency_cycles=lat, ii_cycles=ii, mismatches=mism, mismatch_report=report[:20],
                     simulator="verilator-stream", samples=n, cycles=int(res["cycles"]), wall_s=wall,
                     build_dir=str(exe.parent.parent))


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
