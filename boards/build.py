"""``build(graph, board, out)``: a fitted design, the shell, a bitstream (or a Vivado plan), a report.

Fitting: for a target II every matmul-like node gets the fewest multipliers that
reach it (:func:`parallelism_candidates`); the fastest such setting whose
multipliers fit the board's DSP count is tried first, then settings with about
half the multipliers each, down to one per node.  Each try is synthesized first:
one that yosys already shows too big for the device's LUT/FF/DSP/BRAM is not
placed; one that places but misses the clock moves on to the next, smaller one.
If none fits, :class:`FabformerError` says what was needed and what is available
(or the best Fmax reached), and the output folder holds ``FAILED.txt`` with every
try, no bitstream and no report claiming success.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from ..errors import FabformerError
from ..outdir import prepare_dir
from .platforms import RESOURCE_KINDS, get_target
from .shell import UARTShell, shell_cycles
from .top import BoardTop
from . import flow

DEFAULT_BAUD = 115200
FAILED = "FAILED.txt"


def parallelism_candidates(graph, dsp: int, max_candidates: int = 6) -> list[dict]:
    """Per-node parallelism settings (``{node: int}``), most promising first.

    Each setting is balanced: for a target II every node gets the fewest
    multipliers that reach it (so no block idles waiting for a slower one).  The
    first setting is the fastest one whose multipliers fit the ``dsp`` budget;
    the next ones roughly halve the multipliers, down to one per node.
    """
    from fabformer.rtl import mac_nodes, parallelism_options
    nodes = mac_nodes(graph)
    if not nodes:
        return [{}]
    opts = {n.name: parallelism_options(graph, n) for n in nodes}
    settings = {}
    for target in sorted({o[1] for v in opts.values() for o in v}):
        par, mults = {}, 0
        for name, v in opts.items():
            ok = [o for o in v if o[1] <= target] or [max(v, key=lambda o: o[0])]
            m, _, p = min(ok)
            par[name], mults = p, mults + m
        settings[tuple(sorted(par.items()))] = mults
    ranked = sorted(settings.items(), key=lambda kv: -kv[1])
    fitting = [kv for kv in ranked if kv[1] <= dsp] or ranked[-1:]
    out, last = [], None
    for par, mults in fitting:
        if last is None or mults <= last / 2 or par == fitting[-1][0]:
            out.append(dict(par))
            last = mults
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
    return flow.over_budget({k: used.get(k) for k in RESOURCE_KINDS}, available)


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
    """Try the candidates in order: a synthesis too big for the device skips place and route,
    a routed design below the clock moves on to the next (smaller) candidate."""
    attempts = []
    extra_dsp = 0  # DSPs that synthesis puts outside the matmul-like blocks (seen in a try)
    for i, par in enumerate(candidates):
        d = design if design is not None else _design(graph, par)
        if extra_dsp and i < len(candidates) - 1 and d.multipliers + extra_dsp > target.available["dsp"]:
            attempts.append({"parallelism": d.parallelism, "multipliers": d.multipliers,
                             "latency_cycles": int(d.latency_cycles), "skipped": (
                                 f"{d.multipliers} multipliers + {extra_dsp} other DSPs seen in an earlier try "
                                 f"> {target.available['dsp']} DSPs"), "used": {}, "over": ["DSP (estimated)"],
                             "skipped_pnr": True, "routed": False, "fmax_mhz": None, "used_by": "estimate"})
            continue
        bdir = out / "build" / f"try{i}"
        shell = UARTShell.for_design(d, divisor=divisor)
        if hasattr(target, "default_clk_frequency"):  # an amaranth platform prepares once: a fresh one a try
            r = flow.board_build(type(target)(), BoardTop(shell), bdir, clock_mhz=clock_mhz, seed=seed)
        else:
            r = flow.part_build(target, shell, bdir, clock_mhz=clock_mhz, seed=seed)
        used = r["nextpnr"] or r["yosys"] or r.get("estimate") or {}
        over = _over(used, target.available)
        fmax = r["fmax_mhz"]
        timing_met = fmax is not None and fmax >= clock_mhz
        attempt = {"parallelism": d.parallelism if hasattr(d, "parallelism") else par,
                   "multipliers": d.multipliers, "latency_cycles": int(d.latency_cycles),
                   "used": used, "used_by": "nextpnr" if r["nextpnr"] else "yosys" if r["yosys"] else
                   "flip-flop bits before synthesis" if r.get("estimate") else None,
                   "fmax_mhz": None if fmax is None else round(fmax, 2),
                   "routed": r["ok"], "skipped_pnr": bool(r.get("skipped_pnr")), "over": over,
                   "timing_met": timing_met, "seconds": r.get("seconds"), "build_dir": str(bdir)}
        attempts.append(attempt)
        if used.get("dsp") is not None and r.get("yosys"):
            extra_dsp = max(extra_dsp, int(r["yosys"]["dsp"]) - int(d.multipliers))
        if r["ok"] and not over and timing_met:
            return _finish(out, target, d, clock_mhz, r, attempts, baud, bdir)
    _fail(out, target, clock_mhz, attempts)


def _fail(out, target, clock_mhz, attempts):
    last = attempts[-1]
    device = getattr(target, "device", "")
    needed = ", ".join(f"{k.upper()} {last['used'].get(k)}/{target.available[k]}" for k in RESOURCE_KINDS
                       if last["used"].get(k) is not None)
    tried = "; ".join(f"{a['multipliers']} multipliers: " + (
        ", ".join(a["over"]) + (f" (from {a['used_by']}, not placed)" if a["skipped_pnr"] else "") if a["over"]
        else f"Fmax {a['fmax_mhz']} MHz < {clock_mhz:g} MHz" if a["routed"] or a["fmax_mhz"] is not None
        else "place and route failed") for a in attempts)
    if last["over"] or not last["routed"] and last["fmax_mhz"] is None:
        why = "; ".join(last["over"]) if last["over"] else "place and route failed (see build/ logs)"
        msg = (f"the design does not fit {target.board} ({device}) even at the smallest parallelism tried "
               f"({last['multipliers']} multipliers): {why}. needed/available: {needed}. "
               f"Tried {len(attempts)} setting(s) [{tried}].{_where(target, last)} "
               + ("Choose a larger board (e.g. ulx3s-85f) or a smaller model" if target.board != "ulx3s-85f"
                  else "Choose a smaller model (fewer or narrower layers), or a larger FPGA"))
    else:
        best = max((a["fmax_mhz"] for a in attempts if a["fmax_mhz"] is not None), default=None)
        msg = (f"{target.board} ({device}): the design fits but nextpnr reaches at most {best} MHz, below the "
               f"board's {clock_mhz:g} MHz clock. Tried {len(attempts)} setting(s) [{tried}]; "
               + (f"the board runs from its oscillator (fabformer makes no PLL), so use a part: target "
                  f"with --clock {math.floor(best)} or less" if best and hasattr(target, "default_clk_frequency")
                  else f"ask for a lower --clock (at most {math.floor(best)} MHz)" if best
                  else "ask for a lower --clock"))
    (out / FAILED).write_text(msg + "\n\n" + json.dumps(attempts, indent=1, sort_keys=True, default=str) + "\n")
    err = FabformerError(msg)
    err.attempts = attempts  # what each try used and reached, for callers that record it (explore)
    raise err


def _where(target, attempt, n: int = 4) -> str:
    """Which blocks hold the flip-flops and multipliers of a design that does not fit (before mapping)."""
    bdir = attempt.get("build_dir")
    rows = flow.block_breakdown(Path(bdir), target.family) if bdir else []
    if not rows:
        return ""
    ff = sorted(rows, key=lambda r: -r["ff_bits"])[:n]
    mul = sorted((r for r in rows if r["multipliers"]), key=lambda r: -r["multipliers"])[:n]
    text = (f" Flip-flop bits by block (before mapping): {sum(r['ff_bits'] for r in rows)} in all, most in "
            + ", ".join(f"{r['block']} {r['ff_bits']}" for r in ff) + ".")
    if mul:
        text += (f" Multiplier cells: {sum(r['multipliers'] for r in rows)} in all (the parallelism sets only the "
                 f"matmul-like ones), most in " + ", ".join(f"{r['block']} {r['multipliers']}" for r in mul) + ".")
    return text


def _timing(d, clock_mhz, divisor=None, baud=None):
    """The model's latency/throughput, and (with ``divisor``) one sample's cycles through the UART shell."""
    lat = int(d.latency_cycles)
    ii = max(d.ii_cycles, 1)
    t = {"latency_cycles": lat, "latency_ns": round(lat * 1000.0 / clock_mhz, 3), "ii_cycles": ii,
         "throughput_inferences_per_s": round(clock_mhz * 1e6 / ii, 1)}
    if divisor is not None:
        sc = shell_cycles(lat, in_rows=d.in_rows, in_cols=d.in_cols, in_width=d.in_type.width,
                          out_rows=d.out_rows, out_cols=d.out_cols, out_width=d.out_type.width, divisor=divisor)
        t["uart"] = {"baud": baud, "divisor": divisor, "shell_cycles": sc,
                     "samples_per_s": round(clock_mhz * 1e6 / sc["total"], 1)}
    return t


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
           **_timing(d, clock_mhz, max(4, round(clock_mhz * 1e6 / baud)), baud),
           "attempts": attempts, "build_dir": str(bdir)}
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
           **_timing(d, clock_mhz, divisor, baud),
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
            f"- multipliers: {rep['multipliers']} for {rep['macs']} MACs/inference", *_uart_rows(rep), "",
            "| resource | used | available | % |", "| --- | ---: | ---: | ---: |"]
    for k, v in rep["resources"].items():
        rows.append(f"| {k.upper()} | {f(v['used'])} | {f(v['available'])} | {f(v['percent'])} |")
    return "\n".join(rows) + "\n"


def _uart_rows(rep: dict) -> list[str]:
    u = rep.get("uart")
    if not u or "shell_cycles" not in u:
        return []
    sc = u["shell_cycles"]
    return [f"- through the UART shell ({u['baud']} baud): {sc['total']} cycles a sample = receive "
            f"{sc['receive']} + compute {sc['compute']} + send {sc['send']}; {u['samples_per_s']} samples/s "
            f"(the shell reports the model's {sc['reported']} cycles)"]
