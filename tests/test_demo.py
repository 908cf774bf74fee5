"""What a new user sees: ``fabformer demo`` (progress, summary, no library chatter) and the report
that takes a ``fabformer build --json`` as it is.

The open flow's tools (minutes to hours on a real model) are replaced by a stand-in that runs two
short commands through the flow's own runner, so the progress hook and the log capture are the real
ones; everything else (graph, C-simulation, Verilator, report) runs for real on a tiny graph."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fabformer.boards.flow")

# A stand-in for fabformer.boards.flow.board_build: it chatters the way the real tools and libraries
# do (a tool's INFO line on stdout and stderr, a Python logging INFO record, a Python warning) and
# returns the figures of a routed design.
FAKE_FLOW = r'''
import logging, os, warnings
from pathlib import Path
from fabformer.boards import flow

FIGURES = {"lut": 1234, "ff": 567, "dsp": 16, "bram": 2}
FMAX = 61.5


def fake_board_build(platform, top, build_dir, *, clock_mhz, pnr=None):
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "build.log"
    (build_dir / "top.rpt").write_text("2.40. Executing ABC pass (technology mapping using ABC).\n")
    flow._run(["sh", "-c", "echo INFO:yosys: chatter of a tool; sleep 1.5"], build_dir, dict(os.environ), log,
              "synthesis")
    (build_dir / "top.tim").write_text("Info: Packing constants..\nInfo: Running router2...\n")
    flow._run(["sh", "-c", "echo INFO:nextpnr: chatter of a tool >&2; sleep 1.5"], build_dir, dict(os.environ),
              log, "place and route")
    os.system("echo INFO:tool: a subprocess writing to the inherited descriptors; echo INFO:tool: again >&2")
    logging.getLogger("Verilator").info("Running command make -C some/build/folder")
    warnings.warn("serialize() of a third-party library is deprecated", UserWarning)
    (build_dir / "top.bit").write_bytes(b"\0" * 16)
    return {"ok": True, "bitstream": build_dir / "top.bit", "yosys": dict(FIGURES), "nextpnr": dict(FIGURES),
            "fmax_mhz": FMAX, "fmax_by_clock": {"clk": FMAX}, "skipped_pnr": False, "seconds": {}}


flow.board_build = fake_board_build
'''


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory):
    from fabformer.apps.testing import classifier_graph
    g = classifier_graph(tokens=8, features=8, classes=10)  # takes 8x8 digits, 16 multipliers
    return g.save(tmp_path_factory.mktemp("g") / "small.graph.json")


def _cli(tmp_path, *argv):
    driver = tmp_path / "driver.py"
    driver.write_text(FAKE_FLOW + "\nimport sys\nfrom fabformer.apps.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, str(driver), *argv], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)


def test_demo_shows_progress_and_summary_and_no_library_chatter(tmp_path, small_graph):
    out = tmp_path / "demo"
    r = _cli(tmp_path, "demo", "--graph", str(small_graph), "--quick", "-o", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    # progress (stderr): every long step, and the tools' own stages with their phases
    for line in ("✓ HLS: C++ project", "✓ RTL: Verilog, Verilator", "✓ board: ulx3s-85f bitstream",
                 "✓ synthesis (try0)", "✓ place and route (try0)",
                 "✓ golden: golden bit-exact model", "✓ plots and report files",
                 f"log of libraries and tools: {out / 'fabformer.log'}"):
        assert line in r.stderr, (line, r.stderr)
    # the summary (stdout): every step, its status, its key figure, its files; then what to try next
    assert "fabformer demo: summary" in r.stdout
    rows = {ln.split("│")[1].strip(): ln for ln in r.stdout.splitlines() if ln.count("│") >= 5}
    for step in ("graph", "evaluate", "hls", "rtl", "board", "report"):
        assert step in rows and "│ ok " in rows[step], (step, r.stdout)
    clock = json.loads((out / "board" / "report.json").read_text())["clock_mhz"]  # from the PLL, below the Fmax
    assert 0 < clock <= 61.5
    assert f"{clock:g} MHz clock (Fmax 61.5 MHz), 1,234 LUTs, 16 DSPs" in rows["board"]
    assert "report.html" in r.stdout and "fabformer convert MODEL.h5" in r.stdout
    # the chatter went to the log, not to the terminal
    for text in ("INFO:", "INFO ", "Warning", "serialize()", "Running command"):
        assert text not in r.stdout and text not in r.stderr, text
    log = (out / "fabformer.log").read_text()
    for text in ("INFO:tool: a subprocess", "INFO:tool: again", "Running command make", "serialize() of a third"):
        assert text in log, text
    tools = (out / "board" / "build" / "try0" / "build.log").read_text()  # the flow keeps its tools' output
    assert "INFO:yosys: chatter" in tools and "INFO:nextpnr: chatter" in tools
    # the report used the board the demo built
    rep = json.loads((out / "report" / "report.json").read_text())
    assert rep["fpga"]["clock_mhz"] == clock and rep["fpga"]["board"] == "ulx3s-85f"
    assert rep["size"]["lut"] == 1234 and rep["size"]["dsp"] == 16


def test_report_from_build_json_shows_the_boards_clock_and_resources(tmp_path, small_graph):
    b = _cli(tmp_path, "build", str(small_graph), "--board", "ulx3s-85f", "-o", str(tmp_path / "b"), "--json",
             "--verbose")
    assert b.returncode == 0, b.stderr
    # --json: stdout is the JSON object alone, the progress on stderr; --verbose: the chatter is on stderr,
    # no log file
    assert "✓" not in b.stdout and "✓ build for ulx3s-85f" in b.stderr and "INFO:" not in b.stdout
    assert "serialize() of a third" in b.stderr and "Running command make" in b.stderr
    assert "INFO:tool: a subprocess" in b.stderr and not (tmp_path / "b" / "fabformer.log").exists()
    (tmp_path / "build.json").write_text(b.stdout)  # the output of build --json, as it is
    assert json.loads(b.stdout)["resources"]["lut"] == {"used": 1234, "available": 83640, "percent": 1.5}
    r = _cli(tmp_path, "report", str(small_graph), "--board-json", str(tmp_path / "build.json"), "--paths",
             "golden", "--no-sweep", "--samples", "30", "-o", str(tmp_path / "r"), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    f = rep["fpga"]
    clock = json.loads(b.stdout)["clock_mhz"]  # the clock the build runs at (its PLL, below the Fmax)
    assert 0 < clock <= 61.5
    assert f["clock_mhz"] == clock and f["fmax_mhz"] == 61.5 and f["board"] == "ulx3s-85f"
    assert f["resources"] == {"lut": 1234, "ff": 567, "dsp": 16, "bram": 2}
    assert f["latency_s"] == pytest.approx(f["latency_cycles"] / (clock * 1e6))
    md = Path(rep["md"]).read_text()
    assert f"ulx3s-85f at {clock:g} MHz (the ulx3s-85f build's clock; Fmax 61.5 MHz)" in md
    assert "| lut | 1,234 of 83,640 (1.5 %) |" in md and "| dsp | 16 of 156 (10.3 %) |" in md
    assert "no board build" not in md and "no board figures" not in md
    assert f"- FPGA: the ulx3s-85f build at {clock:g} MHz (Fmax 61.5 MHz): latency " in md
    assert "samples/s; 1,234 LUT, 567 FF, 16 DSP, 2 BRAM." in md


def test_board_json_errors_name_the_field(tmp_path):
    from fabformer.apps.report import board_figures
    from fabformer.errors import FabformerError
    with pytest.raises(FabformerError, match=r"field 'clock_mhz' must be a positive number, not 'fast'"):
        board_figures({"clock_mhz": "fast"})
    with pytest.raises(FabformerError, match=r"unknown resource 'luts' in 'resources'; valid: lut, ff, dsp, bram"):
        board_figures({"resources": {"luts": 3}})
    assert board_figures({"fmax_mhz": 50.0, "resources": {"lut": 7}})["resources"] == {"lut": 7}


def test_flow_reports_each_tool_run_and_its_phase(tmp_path):
    from fabformer.boards import flow
    assert flow._phase(tmp_path / "none.rpt", "synthesis") is None
    (tmp_path / "top.rpt").write_text("2.3. Executing PROC pass.\n2.47. Executing ABC pass (technology mapping).\n")
    assert flow._phase(tmp_path / "top.rpt", "synthesis") == "ABC pass"
    (tmp_path / "top.rpt").write_text("1. Executing RTLIL frontend.\nInput filename: top.il\n")
    assert flow._phase(tmp_path / "top.rpt", "synthesis") == "RTLIL frontend"
    (tmp_path / "top.tim").write_text("Info: Packing IOs..\nInfo: Running main analytical placer.\n")
    assert flow._phase(tmp_path / "top.tim", "place and route") == "placing"
    with open(tmp_path / "top.tim", "a") as f:
        f.write("Info:     at iteration #1, type ALL: wirelen solved = 1\n"
                "Info:     at iteration #12, type ALL: wirelen solved = 2\n")
    assert flow._phase(tmp_path / "top.tim", "place and route") == "placing, iteration 12"
    (tmp_path / "top.tim").write_text("Info: Packing IOs..\nInfo: Running main analytical placer.\n")
    events = []
    prev = flow.on_progress(lambda *e: events.append(e[:3]))
    try:
        code = flow._run(["sh", "-c", "sleep 1.2; echo 'Info: Running router2...' >> top.tim; sleep 1.3; exit 3"],
                         tmp_path, None, tmp_path / "build.log", "place and route")
    finally:
        flow.on_progress(prev)
    assert code == 3
    assert events[0] == ("place and route", None, False) and events[-1] == ("place and route", 3, True)
    phases = [e[1] for e in events[1:-1]]
    assert "placing" in phases and phases[-1] == "routing", events
    events.clear()
    flow.on_progress(lambda *e: events.append(e))
    try:
        flow._tell_over(flow.over_budget({"lut": 10, "dsp": 170}, {"lut": 100, "dsp": 156}), tmp_path)
        flow._tell_over(flow.over_budget({"lut": 10, "dsp": 15}, {"lut": 100, "dsp": 156}), tmp_path)  # fits
    finally:
        flow.on_progress(prev)
    assert events == [("note", "too big for the device after synthesis (DSP 170 > 156): not placed", True, tmp_path)]


def test_console_without_a_terminal_prints_steps_phases_and_failures(monkeypatch):
    import io
    from fabformer.apps import console
    monkeypatch.setattr(console, "PHASE_S", 0.0)
    buf = io.StringIO()
    con = console.Console(file=buf, terminal=False)
    with con.step("board") as s:
        con.tool_progress("synthesis", None, False, "build/try0")
        con.tool_progress("synthesis", "ABC pass", False, "build/try0")
        con.tool_progress("synthesis", 1, True, "build/try0")
        con.tool_progress("note", "too big", True, "build/try0")
        s.done("25 MHz")
    with pytest.raises(ValueError), con.step("report"):
        raise ValueError("boom")
    lines = buf.getvalue().splitlines()
    assert lines[0] == "… board" and lines[1] == "  … synthesis (try0)"
    assert lines[2].startswith("    synthesis (try0): ABC pass (")
    assert lines[3].startswith("  ✗ synthesis (try0) [") and lines[4] == "  try0: too big"
    assert lines[5].startswith("✓ board — 25 MHz [")
    assert lines[6] == "… report" and lines[7].startswith("✗ report [")
    monkeypatch.setattr(console, "HEARTBEAT_S", 1.0)
    with con.step("place") as s:
        s.update("routing")
        time.sleep(2.5)
    beats = [ln for ln in buf.getvalue().splitlines()[8:] if "still running" in ln]
    assert beats and beats[0].startswith("  place: still running (routing, "), buf.getvalue()
    quiet = io.StringIO()
    with console.Console(file=quiet, quiet=True).step("x"):
        pass
    assert quiet.getvalue() == ""

