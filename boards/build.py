"""``build(graph, board, out)``: a fitted design, the shell, a bitstream (or a Vivado plan), a report.

Fitting: the matmul-like nodes share a multiplier budget in proportion to their
MACs (so no block is much slower than the others); budgets are tried from the
board's DSP count downwards, each through synthesis and place-and-route, until
one fits the LUT/FF/DSP/BRAM of the device.  If even one multiplier per node does
not fit, :class:`FabformerError` says what was needed and what is available,
and the output folder holds no bitstream and no report claiming success.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from ..errors import FabformerError
from ..outdir import prepare_dir
from .platforms import RESOURCE_KINDS, get_target
from .shell import UARTShell
from .top import BoardTop
from . import flow

DEFAULT_BAUD = 115200
FAILED = "FAILED.txt"


def parallelism_candidates(graph, dsp: int, max_candidates: int = 6) -> list[dict]:
    """Per-node parallelism settings from most to fewest multipliers (``{node: int}``)."""
    from ..rtl.generate import MAC_KINDS, default_parallelism
    nodes = [n for n in graph.nodes if n.kind in MAC_KINDS]
    if not nodes:
        return [{}]
    macs = {n.name: max(n.macs(graph), 1) for n in nodes}
    cap = {n.name: default_parallelism(n, graph) for n in nodes}
    total = sum(macs.values())
    out, seen = [], set()
    budget = max(dsp, len(nodes))
    while True:
        par = {k: max(1, min(cap[k], math.floor(budget * macs[k] / total))) for k in macs}
        key = tuple(sorted(par.items()))
        if key not in seen:
            seen.add(key)
            out.append(par)
        if budget <= 1:
            break
        budget //= 2
    ones = {k: 1 for k in macs}
    if tuple(sorted(ones.items())) not in seen:
        out.append(ones)
    if len(out) > max_candidates:  # keep the largest few and the smallest
        out = out[:max_candidates - 1] + out[-1:]
    return out


def _resources(used: dict, available: dict) -> dict:
    res = {}
    for k in RESOURCE_KINDS:
        u, a = used.get(k), available.get(k)
        res[k] = {"used": u, "available": a,
                  "percent": None if u is None or not a else round(100.0 * u / a, 1)}
    return res


def _over(used: dict, available: dict) -> list[str]:
    return [f"{k.upper()} {used[k]} > {available[k]}" for k in RESOURCE_KINDS
            if used.get(k) is not None and available.get(k) is not None and used[k] > available[k]]


def build(graph, board: str, out, *, clock_mhz: float | None = None, parallelism=None, baud: int = DEFAULT_BAUD,
          design=None, max_tries: int = 4, seed: int = 1) -> dict:
    """Build ``graph`` (or a ready ``design``) for ``board`` into folder ``out``; return the report dict."""
    target = get_target(board, clock_mhz)
    board_clock = getattr(target, "default_clk_frequency", None)
    if board_clock is not None:
        board_mhz = board_clock / 1e6
        if clock_mhz is not None and abs(clock_mhz - board_mhz) > 1e-6:
            raise FabformerError(
                f"board {board!r} runs from its {board_mhz:g} MHz oscillator; --clock {clock_mhz:g} would need a "
                f"PLL, which fabformer does not generate yet; valid --clock for this board: {board_mhz:g}")
        clock_mhz = board_mhz
    else:
        clock_mhz = target.clock_mhz
    out = prepare_dir(out, clean=True)
    if design is not None:
        candidates = [None]
    elif parallelism is not None:
        candidates = [parallelism]
    else:
        cands = parallelism_candidates(graph, target.available["dsp"])
        candidates = cands if len(cands) <= max_tries else cands[:max_tries - 1] + cands[-1:]
    divisor = max(4, round(clock_mhz * 1e6 / baud))
    if target.open_flow:
        return _open_flow(graph, target, out, clock_mhz, candidates, design, divisor, baud, seed)
    return _vivado(graph, target, out, clock_mhz, candidates, design, divisor, baud)


def _design(graph, par):
    from ..rtl import generate
    return generate(graph, parallelism=par)


def _open_flow(graph, target, out, clock_mhz, candidates, design, divisor, baud, seed):
    attempts = []
    for i, par in enumerate(candidates):
        d = design if design is not None else _design(graph, par)
        bdir = out / "build" / f"try{i}"
        shell = UARTShell.for_design(d, divisor=divisor)
        if hasattr(target, "default_clk_frequency"):
            r = flow.board_build(target, BoardTop(shell), bdir, clock_mhz=clock_mhz, seed=seed)
        else:
            r = flow.part_build(target, shell, bdir, clock_mhz=clock_mhz, seed=seed)
        used = r["nextpnr"] or r["yosys"] or {}
        over = _over(used, target.available)
        attempt = {"parallelism": d.parallelism if hasattr(d, "parallelism") else par,
                   "multipliers": d.multipliers, "used": used, "fmax_mhz": r["fmax_mhz"],
                   "routed": r["ok"], "over": over}
        attempts.append(attempt)
        if r["ok"] and not over:
            return _finish(out, target, d, clock_mhz, r, attempts, baud, bdir)
    _fail(out, target, clock_mhz, attempts)


def _fail(out, target, clock_mhz, attempts):
    last = attempts[-1]
    needed = ", ".join(f"{k.upper()} {last['used'].get(k)}/{target.available[k]}" for k in RESOURCE_KINDS
                       if last["used"].get(k) is not None)
    why = "; ".join(last["over"]) if last["over"] else "place and route failed (see build/ logs)"
    msg = (f"the design does not fit {target.board} ({target.device if hasattr(target, 'device') else ''}) "
           f"even at the smallest parallelism tried ({last['multipliers']} multipliers): {why}. "
           f"needed/available: {needed}. Tried {len(attempts)} setting(s); choose a larger board "
           f"(e.g. ulx3s-85f) or a smaller model")
    (out / FAILED).write_text(msg + "\n\n" + json.dumps(attempts, indent=1, sort_keys=True, default=str) + "\n")
    raise FabformerError(msg)


def _timing(d, clock_mhz):
    lat = int(d.latency_cycles)
    ii = max(int(d.ii_cycles), 1)
    return {"latency_cycles": lat, "latency_ns": round(lat * 1000.0 / clock_mhz, 3), "ii_cycles": ii,
            "throughput_inferences_per_s": round(clock_mhz * 1e6 / ii, 1)}


def _finish(out, target, d, clock_mhz, r, attempts, baud, bdir):
    ext = r["bitstream"].suffix
    bit = out / f"{target.board.replace(':', '_')}{ext}"
    shutil.copyfile(r["bitstream"], bit)
    fmax = r["fmax_mhz"]
    rep = {"board": target.board, "family": target.family, "bitstream": str(bit),
           "fmax_mhz": None if fmax is None else round(fmax, 2), "clock_mhz": clock_mhz,
           "timing_met": fmax is not None and fmax >= clock_mhz,
           "resources": _resources(r["nextpnr"] or r["yosys"], target.available),
           "parallelism": getattr(d, "parallelism", None), "multipliers": d.multipliers, "macs": d.macs,
           **_timing(d, clock_mhz), "uart": {"baud": baud, "divisor": max(4, round(clock_mhz * 1e6 / baud))},
           "attempts": attempts, "build_dir": str(bdir)}
    if not rep["timing_met"]:
        (out / FAILED).write_text(f"timing not met: nextpnr Fmax {fmax} MHz < requested {clock_mhz} MHz\n")
        bit.unlink()
        raise FabformerError(f"{target.board}: nextpnr reaches {fmax:.1f} MHz, below the requested "
                             f"{clock_mhz:g} MHz; ask for a lower --clock (at most {math.floor(fmax)} MHz)")
    _write_report(out, rep)
    return rep


def _vivado(graph, target, out, clock_mhz, candidates, design, divisor, baud):
    d = None
    for par in candidates:
        d = design if design is not None else _design(graph, par)
        if d.multipliers <= target.available["dsp"]:
            break
    else:
        msg = (f"the design does not fit {target.board} ({target.device}): DSP {d.multipliers} > "
               f"{target.available['dsp']} even at the smallest parallelism tried "
               f"({d.multipliers} multipliers); needed/available: DSP {d.multipliers}/{target.available['dsp']}; "
               f"choose fewer multipliers (--parallelism) or a larger board (e.g. arty-a7-100)")
        (out / FAILED).write_text(msg + "\n")
        raise FabformerError(msg)
    proj = out / "vivado"
    files = flow.xilinx_plan(target, BoardTop(UARTShell.for_design(d, divisor=divisor)), proj)
    hls_note = "fabformer.hls.project.write(graph, DIR) / `fabformer hls`"
    hls_dir = None
    if graph is not None:
        try:
            from ..hls.project import write as hls_write
            hls_dir = out / "hls"
            hls_write(graph, hls_dir)
        except Exception as e:  # the HLS project is a companion; its absence must not hide the RTL plan
            hls_note += f" (not written here: {type(e).__name__}: {e})"
            hls_dir = None
    tcl = [str(p) for p in files if p.suffix == ".tcl"]
    (proj / "README.md").write_text(
        f"# Vivado project for {target.board} ({target.device}{target.package}-{target.speed})\n\n"
        "Generated by fabformer from the amaranth build plan; not built here (no Vivado).\n\n"
        "Build: `sh build_top.sh` with Vivado on PATH (it runs `vivado -mode batch -source top.tcl`).\n"
        f"Clock: {clock_mhz:g} MHz board oscillator; UART {baud} baud (divisor {divisor}).\n\n"
        f"Vitis HLS project of the same graph: {'../hls/' if hls_dir else hls_note}\n")
    rep = {"board": target.board, "family": target.family, "bitstream": None, "fmax_mhz": None,
           "clock_mhz": clock_mhz, "timing_met": None,
           "resources": _resources({"dsp": d.multipliers}, target.available),
           "resources_note": "DSP is the design's multiplier count; the rest is known after a Vivado run",
           "parallelism": getattr(d, "parallelism", None), "multipliers": d.multipliers, "macs": d.macs,
           **_timing(d, clock_mhz), "uart": {"baud": baud, "divisor": divisor},
           "vivado_project": str(proj), "tcl": tcl, "hls_project": str(hls_dir) if hls_dir else None}
    _write_report(out, rep)
    return rep


def _write_report(out: Path, rep: dict) -> None:
    (out / "report.json").write_text(json.dumps(rep, indent=1, sort_keys=True, default=str) + "\n")
    (out / "report.md").write_text(report_markdown(rep))


def report_markdown(rep: dict) -> str:
    def f(v, unit=""):
        return "n/a" if v is None else f"{v}{unit}"
    rows = [f"# {rep['board']} ({rep['family']})", "",
            f"- bitstream: {f(rep['bitstream'])}",
            f"- clock: {rep['clock_mhz']:g} MHz requested; Fmax (nextpnr): {f(rep['fmax_mhz'], ' MHz')}",
            f"- latency: {rep['latency_cycles']} cycles = {rep['latency_ns']} ns; "
            f"throughput: {rep['throughput_inferences_per_s']} inferences/s (II {rep['ii_cycles']} cycles)",
            f"- multipliers: {rep['multipliers']} for {rep['macs']} MACs/inference", "",
            "| resource | used | available | % |", "| --- | ---: | ---: | ---: |"]
    for k, v in rep["resources"].items():
        rows.append(f"| {k.upper()} | {f(v['used'])} | {f(v['available'])} | {f(v['percent'])} |")
    return "\n".join(rows) + "\n"
