"""``build(graph, board, out)``: a fitted design, the shell, a bitstream (or a Vivado plan), a report.

Fitting: first the setting that fills the board's DSPs (:func:`fill_parallelism`: the
DSPs the row functions and scale multiplies need set aside, :func:`other_dsps`); then,
for a target II, every matmul-like node gets the fewest multipliers that reach it
(:func:`parallelism_candidates`): settings with about half the multipliers each, down
to one per node.

Clock: ECP5 and iCE40 boards run the model and the UART shell from a PLL
(:mod:`.pll`): at ``--clock``, or first at the board's ``pll_target_mhz`` and, when
nextpnr's Fmax falls short, once more at the PLL output nearest to 95 % of that Fmax (on
iCE40, which has no near-miss re-route, up to twice: :func:`clock_retries`).

Each try is synthesized first: one that yosys already shows too big for the device's
LUT/FF/DSP/BRAM is not placed (over on DSPs only: the DSPs synthesis put outside the
matmul-like multipliers are now known, and a setting filling the DSPs left is tried
next); one that places but misses the clock moves on to the next, smaller one.
If none fits, :class:`FabformerError` says what was needed and what is available
(or the best Fmax reached), and the output folder holds ``FAILED.txt`` with every
try, no bitstream and no report claiming success.
"""
from __future__ import annotations

import json
import math
import numbers
import shutil
import sys
from pathlib import Path

from ..errors import FabformerError
from ..outdir import prepare_dir
from .platforms import RESOURCE_KINDS, get_target
from .shell import UARTShell, shell_cycles
from .top import BoardTop
from . import flow

DEFAULT_BAUD = 115200
FAILED = "FAILED.txt"
CLOCK_MARGIN = 0.95  # a clock chosen from nextpnr's Fmax stays this far below it
HALF = 0.55  # each next fitting candidate has at most about half the multipliers of the one before
PLL_FAMILIES = ("ecp5", "ice40")


def clock_retries(family: str) -> int:
    """Builds of one setting at clocks chosen from nextpnr's Fmax after its first build misses the
    board's PLL target: one where the flow re-routes a near miss with ``--tmg-ripup``
    (:data:`flow.RIPUP_FAMILIES`), two elsewhere.  Placement moves the Fmax with the clock asked
    for: the test classifier on the iCEBreaker routed at 38.26 MHz against 48 and at 35.96 against
    the 36 MHz chosen from that, 40 kHz short; a setting of fewer multipliers then came first."""
    return 1 if family in flow.RIPUP_FAMILIES else 2


def parallelism_candidates(graph, dsp: int, max_candidates: int = 6) -> list[dict]:
    """Per-node parallelism settings (``{node: int}``), most promising first.

    Each setting is balanced: the targets are the IIs of the node with the most MACs (its
    options, several products per column included), none below the II of the blocks that have
    no parallelism (nor below the least II layer norm and softmax reach with lanes: more
    multipliers would buy no throughput), and for a
    target every node gets the fewest multipliers that reach it (so no block idles waiting for a
    slower one).  The first setting is the fastest one whose multipliers fit the ``dsp``
    budget; each next one has at most about half the multipliers (``HALF``), down to one per node.
    """
    from fabformer.rtl import generate, mac_nodes, parallelism_options
    nodes = mac_nodes(graph)
    if not nodes:
        return [{}]
    opts = {n.name: parallelism_options(graph, n) for n in nodes}
    # the blocks without a parallelism take the same II at every setting, layer norm and softmax
    # theirs at the most lanes that still lower it: a target below that buys multipliers and no throughput
    most = {k: v[-1][1] for k, v in row_lane_options(graph).items()}
    macs = {n.name for n in nodes}
    fixed = max((b["ii"] for b in generate(graph, parallelism={**{n.name: 1 for n in nodes}, **most}).blocks
                 if b["name"] not in macs), default=0)
    # the node of the most MACs sets the II of a balanced setting: its options are the targets
    biggest = max(nodes, key=lambda n: n.macs(graph)).name
    targets = sorted({o[1] for o in opts[biggest]})
    settings = {}
    for target in [t for t in targets if t >= fixed] or targets[-1:]:
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
        if last is None or mults <= last * HALF or par == fitting[-1][0]:
            out.append(dict(par))
            last = mults
    if len(out) > max_candidates:  # keep the largest few and the smallest
        out = out[:max_candidates - 1] + out[-1:]
    return out


def row_lane_options(graph, every: bool = False) -> dict:
    """``{node: [(DSP cells beyond one lane's, lanes), ...]}`` for each layer norm and softmax: the
    lane counts that divide its row, up to the most that still lower its II (``every``: all of
    them; past the II's need more lanes still shorten the row's latency)."""
    from fabformer.rtl import make_block
    from fabformer.rtl.generate import LANED, row_lanes
    out = {}
    for n in graph.nodes:
        if n.kind not in LANED:
            continue
        blk = make_block(n, graph, None)
        blk._MustUse__silence = True
        most = blk.N if every else row_lanes(blk, 0)
        blk.lanes = 1
        one = int(blk.other_dsp_cells)
        out[n.name] = []
        for count in [v for v in range(1, most + 1) if blk.N % v == 0]:
            blk.lanes = count
            out[n.name].append((int(blk.other_dsp_cells) - one, count))
    return out


def other_dsps(graph, parallelism=None) -> int:
    """DSP cells a design uses beyond its matmul-like multipliers, estimated before synthesis: the
    row functions' products (layer norm 3, softmax 1, per lane; a product of operands wider than a
    DSP takes several) and each matmul's scale multiply per output column (none for a scale of 1),
    at ``parallelism`` (its lanes for the row functions; default: one lane each)."""
    from fabformer.rtl import generate, make_block
    d = generate(graph, parallelism=parallelism)
    lanes = d.lanes if parallelism is not None else {}
    extra = 0
    for n in d._nodes:
        blk = make_block(n, graph, d.parallelism.get(n.name), d.orders, lanes=lanes.get(n.name, 1))
        blk._MustUse__silence = True
        extra += int(blk.other_dsp_cells)
    return extra


def _mac_multipliers(graph, par: dict) -> int:
    from fabformer.rtl import generate, mac_nodes
    d = generate(graph, parallelism=par)
    names = {n.name for n in mac_nodes(graph)}
    return sum(b["multipliers"] for b in d.blocks if b["name"] in names)


def fill_parallelism(graph, dsp: int, start: dict | None = None, lanes: bool = True) -> dict:
    """A setting that uses the DSP budget: from the fastest balanced setting whose multipliers fit
    ``dsp`` (or ``start``), upgrade one node at a time to its next parallelism option, taking the
    upgrade that cuts the design's latency plus II the most per added multiplier while the total
    stays within ``dsp``.  A layer norm or softmax may take more lanes too (each lane's DSP cells
    count against ``dsp`` beyond its first lane's, which ``other_dsps`` sets aside): a lane halves
    the cycles a row spends in it, which shortens the chain of row-streaming blocks a sample
    passes (``lanes=False``: no lane moves)."""
    from fabformer.rtl import generate, mac_nodes, parallelism_options
    nodes = mac_nodes(graph)
    if not nodes:
        return {}
    opts = {n.name: parallelism_options(graph, n) for n in nodes}
    lane_opts = row_lane_options(graph)

    def mults(p):
        eng = sum(next(o[0] for o in opts[k] if o[2] == v) if any(o[2] == v for o in opts[k]) else v
                  for k, v in p.items() if k in opts)
        return eng + sum(next(c for c, v in lane_opts[k] if v == p[k]) for k in p if k in lane_opts)

    if start is None:
        cands = parallelism_candidates(graph, dsp)
        start = next((c for c in cands if mults(c) <= dsp), cands[-1])
    par = dict(start)
    # the lanes generate gives the row functions at the start (keeping up with the engines):
    # a move adds lanes from there
    auto = generate(graph, parallelism=par).lanes
    lanes_now = {k: par.get(k, auto.get(k, 1)) for k in lane_opts}

    costs: dict = {}

    def cost(p):  # the two climbs below try many of the same settings: each is generated once
        key = tuple(sorted(p.items()))
        if key not in costs:
            d = generate(graph, parallelism=p)
            costs[key] = d.latency_cycles + d.ii_cycles
        return costs[key]

    def upgraded(p, names):
        out = dict(p)
        for name in names:
            if name in lane_opts:
                cur = out.get(name, lanes_now[name])
                up = [v for _, v in lane_opts[name] if v > cur]
                if not up:
                    return None
                out[name] = up[0]
                continue
            up = [o for o in opts[name] if o[2] > p[name]]
            if not up:
                return None
            out[name] = up[0][2]
        return out

    def climb(par, with_lanes):
        base = cost(par)
        while True:
            best = best_move(par, base, with_lanes)
            if best is None:
                return par, base
            _, par, base = best

    def best_move(par, base, with_lanes):
        # moves: one node to its next option, or every node of one II at once (parallel branches
        # such as query, key and value only gain together), or a row function to more lanes
        ii_of = {k: next((o[1] for o in opts[k] if o[2] == v), None) for k, v in par.items() if k in opts}
        moves = ([[k] for k in opts] + [[k for k in opts if ii_of[k] == ii] for ii in sorted(set(ii_of.values()))]
                 + [[k] for k in lane_opts if with_lanes])
        best = None
        for names in moves:
            trial = upgraded(par, names)
            if trial is None or trial == par or mults(trial) > dsp:
                continue
            c = cost(trial)
            gain = (base - c) / max(mults(trial) - mults(par), 1)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, trial, c)
        return best

    # the climb is greedy: lanes, cheap per multiplier, can lead it to a worse end, so it runs
    # with and without lane moves and keeps the better (without, on a tie)
    plain, plain_cost = climb(dict(par), False)
    laned, laned_cost = climb(dict(par), True) if lane_opts and lanes else (plain, plain_cost)
    return laned if laned_cost < plain_cost else plain


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
          design=None, max_tries: int = 4, seed=1, pnr_minutes: float | None = None,
          logic_multipliers: int | None = None) -> dict:
    """Build ``graph`` (or a ready ``design``) for ``board`` into folder ``out``; return the report dict.
    ``seed``: nextpnr's placement seed, or a sequence of seeds that each try places with in turn
    until one meets the clock (the report's ``nextpnr_seeds`` lists them with their Fmax).
    ``pnr_minutes``: the time limit of one place and route (open flow; default none): a run
    stopped there counts as not routed and the next seed is tried.
    ``logic_multipliers``: the fit may build up to this many matmul-like multipliers in logic
    beyond the device's DSPs (open flow; default none): it fills DSPs plus that many, and the one
    setting it chose is built with the excess in logic (radix-4 Booth multipliers, the same cycles)."""
    if logic_multipliers is not None:
        if isinstance(logic_multipliers, bool) or not isinstance(logic_multipliers, numbers.Integral) \
                or logic_multipliers < 0:
            raise FabformerError(f"--logic-multipliers must be a whole number >= 0, not {logic_multipliers!r}")
        if design is not None or parallelism is not None:
            raise FabformerError(
                f"--logic-multipliers {logic_multipliers} sets how far the fit may go beyond the DSPs; with "
                "--parallelism the chosen setting's multipliers beyond the DSPs are built in logic already "
                "(give one of the two)")
    pnr = flow.PnrOptions.of(seed, pnr_minutes)
    target = get_target(board, clock_mhz)
    if logic_multipliers and not target.open_flow:
        raise FabformerError(f"--logic-multipliers applies to the open flow's boards (ECP5, iCE40); "
                             f"{board} is built by Vivado, which maps multipliers itself")
    clock = _clock_plan(target, board, clock_mhz)
    clock_mhz = clock["mhz"]
    out = prepare_dir(out, clean=True)
    if design is not None:
        candidates = [None]
    elif parallelism is not None:
        candidates = [parallelism]
    elif logic_multipliers:
        # one setting: the DSPs (less those the rest of the design needs) and up to that many more
        candidates = [fill_parallelism(graph, target.available["dsp"] - other_dsps(graph) + int(logic_multipliers))]
    else:
        cands = parallelism_candidates(graph, target.available["dsp"])
        # first the setting that fills the DSPs (those the design needs besides the matmul-like
        # multipliers set aside), then the balanced ones with fewer multipliers
        filled = fill_parallelism(graph, target.available["dsp"] - other_dsps(graph))
        if filled and filled not in cands:
            n = _mac_multipliers(graph, filled)
            cands = [filled] + [c for c in cands if _mac_multipliers(graph, c) < n]
        candidates = cands if len(cands) <= max_tries else cands[:max_tries - 1] + cands[-1:]
    divisor = max(4, round(clock_mhz * 1e6 / baud))
    if target.open_flow:
        return _open_flow(graph, target, out, clock, candidates, design, baud, pnr)
    return _vivado(graph, target, out, clock_mhz, candidates, design, divisor, baud)


def _clock_plan(target, board, clock_mhz) -> dict:
    """The clock of the first build: ``{"mhz", "pll", "auto", "oscillator_mhz"}``.  A board of a
    PLL family runs from a PLL: at ``--clock`` (the nearest PLL output not above it), or, without
    ``--clock``, first at the board's ``pll_target_mhz`` and then at a clock chosen from nextpnr's
    Fmax (:func:`_clock_from_fmax`).  Other boards run from their oscillator; part targets at
    ``--clock``."""
    board_clock = getattr(target, "default_clk_frequency", None)
    if board_clock is None:
        return {"mhz": target.clock_mhz, "pll": None, "auto": False, "oscillator_mhz": None}
    osc = board_clock / 1e6
    has_pll = target.family in PLL_FAMILIES and target.open_flow
    if clock_mhz is None:
        if not (has_pll and target.pll_target_mhz):
            return {"mhz": osc, "pll": None, "auto": False, "oscillator_mhz": osc}
        clock_mhz, auto = target.pll_target_mhz, True
    else:
        auto = False
        if abs(clock_mhz - osc) < 1e-6:
            return {"mhz": osc, "pll": None, "auto": False, "oscillator_mhz": osc}
        if not has_pll:
            raise FabformerError(
                f"board {board!r} runs from its {osc:g} MHz oscillator; --clock {clock_mhz:g} would need a PLL, "
                f"which fabformer makes for {' and '.join(PLL_FAMILIES)} boards only; valid --clock for this "
                f"board: {osc:g}")
    from .pll import pll_setting
    pll = pll_setting(target.family, osc, clock_mhz)
    return {"mhz": pll.out_mhz, "pll": pll, "auto": auto, "oscillator_mhz": osc}


def _clock_from_fmax(target, clock: dict, fmax: float) -> dict | None:
    """A lower clock for a design that routed below ``clock``: the PLL output nearest to
    ``CLOCK_MARGIN`` x Fmax from below, not below the board oscillator (None: no such clock)."""
    from .pll import pll_setting
    want = fmax * CLOCK_MARGIN
    osc = clock["oscillator_mhz"]
    if osc is None or want < osc:
        return None
    pll = pll_setting(target.family, osc, want)
    if pll.out_mhz < osc or pll.out_mhz >= clock["mhz"]:
        return {**clock, "mhz": osc, "pll": None} if fmax >= osc and osc < clock["mhz"] else None
    return {**clock, "mhz": pll.out_mhz, "pll": pll}


def _design(graph, par, dsps=None):
    from ..rtl import generate
    return generate(graph, parallelism=par, dsps=dsps)


def _engine_dsps(d) -> int:
    """The matmul-like engines' multipliers of design ``d`` that are on DSPs."""
    return (sum(b["multipliers"] for b in d.blocks if b["kind"] in ("dense", "matmul"))
            - sum(getattr(d, "logic", {}).values()))


def _open_flow(graph, target, out, clock, candidates, design, baud, pnr):
    """Try the candidates in order: a synthesis too big for the device skips place and route,
    a routed design below the clock moves on to the next (smaller) candidate, except that with
    a clock of the board's choosing it is first built again at a clock chosen from its Fmax."""
    attempts = []
    first_clock = clock
    extra_dsp = 0  # DSPs that synthesis puts outside the matmul-like blocks (seen in a try)
    refilled = False
    # a setting the user chose keeps its multipliers: those beyond the device's DSPs are built
    # in logic (first by the estimate of the other DSPs, then by what synthesis saw)
    in_logic = design is None and len(candidates) == 1 and candidates[0] is not None
    other_seen = 0
    candidates = list(candidates)
    retries = clock_retries(target.family)
    i = -1
    while i + 1 < len(candidates):
        i += 1
        par = candidates[i]
        other = (other_seen or other_dsps(graph, par)) if in_logic else 0
        dsps = max(0, target.available["dsp"] - other) if in_logic else None
        d = design if design is not None else _design(graph, par, dsps)
        if extra_dsp and i < len(candidates) - 1 and d.multipliers + extra_dsp > target.available["dsp"]:
            attempts.append({"parallelism": d.parallelism, "multipliers": d.multipliers,
                             "latency_cycles": int(d.latency_cycles), "skipped": (
                                 f"{d.multipliers} multipliers + {extra_dsp} other DSPs seen in an earlier try "
                                 f"> {target.available['dsp']} DSPs"), "used": {}, "over": ["DSP (estimated)"],
                             "skipped_pnr": True, "routed": False, "fmax_mhz": None, "used_by": "estimate"})
            continue
        for again in range(1 + retries):
            bdir = out / "build" / (f"try{i}" if again == 0 else f"try{i}_at_{clock['mhz']:.2f}mhz")
            r, attempt = _try(target, d, par, clock, bdir, baud, pnr)
            attempts.append(attempt)
            used = r["nextpnr"] or r["yosys"] or r.get("estimate") or {}
            if used.get("dsp") is not None and r.get("yosys"):
                if in_logic and attempt["over"] and all(o.startswith("DSP") for o in attempt["over"]):
                    # the DSPs synthesis put outside the engines' multipliers on DSPs
                    seen = int(r["yosys"]["dsp"]) - _engine_dsps(d)
                    if seen > other:
                        other_seen = seen  # the same setting again, more of its multipliers in logic
                        candidates.insert(i + 1, par)
                        break
                extra_dsp = max(extra_dsp, int(r["yosys"]["dsp"]) - int(d.multipliers))
                if (design is None and not refilled and attempt["over"]
                        and all(o.startswith("DSP") for o in attempt["over"])):
                    refilled = True  # fill the DSPs again, now that synthesis told what else needs them
                    rows = {b["name"] for b in d.blocks if b["multipliers"] and b["name"] not in (par or {})}
                    own = sum(b["multipliers"] for b in d.blocks if b["name"] in rows)
                    refill = fill_parallelism(graph, target.available["dsp"] - extra_dsp - own)
                    if refill and refill not in candidates[i + 1:]:
                        candidates.insert(i + 1, refill)
            if r["ok"] and not attempt["over"] and attempt["timing_met"]:
                return _finish(out, target, d, clock, r, attempts, baud, bdir, pnr)
            lower = (_clock_from_fmax(target, clock, r["fmax_mhz"])
                     if clock["auto"] and r["ok"] and not attempt["over"] and r["fmax_mhz"] else None)
            if lower is None or again == retries:
                break
            clock = lower  # the same setting again, at a clock nextpnr's Fmax allows
        clock = first_clock
    _fail(out, target, first_clock, attempts)


def _try(target, d, par, clock, bdir, baud, pnr):
    """One build of design ``d`` at ``clock``: (flow result, attempt record)."""
    clock_mhz = clock["mhz"]
    shell = UARTShell.for_design(d, divisor=max(4, round(clock_mhz * 1e6 / baud)))
    if hasattr(target, "default_clk_frequency"):  # an amaranth platform prepares once: a fresh one a try
        r = flow.board_build(type(target)(), BoardTop(shell, pll=clock["pll"]), bdir, clock_mhz=clock_mhz, pnr=pnr)
    else:
        r = flow.part_build(target, shell, bdir, clock_mhz=clock_mhz, pnr=pnr)
    used = r["nextpnr"] or r["yosys"] or r.get("estimate") or {}
    fmax = r["fmax_mhz"]
    attempt = {"parallelism": d.parallelism if hasattr(d, "parallelism") else par,
               "multipliers": d.multipliers, "logic_multipliers": sum(getattr(d, "logic", {}).values()),
               "latency_cycles": int(d.latency_cycles),
               "used": used, "used_by": ("nextpnr (packed; no legal placement)" if r["nextpnr"] and not r["ok"]
                                         and fmax is None else "nextpnr") if r["nextpnr"] else "yosys" if r["yosys"] else
               "flip-flop bits before synthesis" if r.get("estimate") else None,
               "fmax_mhz": None if fmax is None else round(fmax, 2), "clock_mhz": round(clock_mhz, 4),
               "routed": r["ok"], "skipped_pnr": bool(r.get("skipped_pnr")), "over": _over(used, target.available),
               "timing_met": fmax is not None and fmax >= clock_mhz, "seconds": r.get("seconds"),
               "seeds": r.get("seeds_tried"), "build_dir": str(bdir)}
    return r, attempt


def _best_of(attempt: dict) -> str:
    seeds = attempt.get("seeds") or []
    return f" (best of seeds {', '.join(str(t['seed']) for t in seeds)})" if len(seeds) > 1 else ""


def _timed_out(attempt) -> bool:
    """Every place and route of the attempt was stopped at the ``--pnr-minutes`` limit."""
    return bool(attempt.get("seeds")) and all(t.get("timed_out") for t in attempt["seeds"])


def _fail(out, target, clock, attempts):
    clock_mhz = clock["mhz"]
    last = attempts[-1]
    device = getattr(target, "device", "")
    needed = ", ".join(f"{k.upper()} {last['used'].get(k)}/{target.available[k]}" for k in RESOURCE_KINDS
                       if last["used"].get(k) is not None)
    tried = "; ".join(f"{a['multipliers']} multipliers: " + (
        ", ".join(a["over"]) + (f" (from {a['used_by']}, not placed)" if a["skipped_pnr"] else
                                f" (from {a['used_by']})" if not a["routed"] else "") if a["over"]
        else f"Fmax {a['fmax_mhz']} MHz{_best_of(a)} < {a.get('clock_mhz', clock_mhz):g} MHz"
        if a["routed"] or a["fmax_mhz"] is not None
        else "place and route stopped at its time limit" if _timed_out(a) else "place and route failed")
        for a in attempts)
    if last["over"] or not last["routed"] and last["fmax_mhz"] is None:
        why = ("; ".join(last["over"]) if last["over"] else
               "place and route stopped at its time limit (--pnr-minutes) before it finished" if _timed_out(last)
               else "place and route failed (see build/ logs)")
        msg = (f"the design does not fit {target.board} ({device}) even at the smallest parallelism tried "
               f"({last['multipliers']} multipliers): {why}. needed/available: {needed}. "
               f"Tried {len(attempts)} setting(s) [{tried}].{_where(target, last)} "
               + ("Choose a larger board (e.g. ulx3s-85f) or a smaller model" if target.board != "ulx3s-85f"
                  else "Choose a smaller model (fewer or narrower layers), or a larger FPGA"))
    else:
        best = max((a["fmax_mhz"] for a in attempts if a["fmax_mhz"] is not None), default=None)
        msg = (f"{target.board} ({device}): the design fits but nextpnr reaches at most {best} MHz, below the "
               f"board's {clock_mhz:g} MHz clock. Tried {len(attempts)} setting(s) [{tried}]; "
               + (f"the board runs from its oscillator ({target.family} boards get no PLL), so use a part: "
                  f"target with --clock {math.floor(best)} or less"
                  if best and hasattr(target, "default_clk_frequency") and target.family not in PLL_FAMILIES
                  else f"ask for a lower --clock ({_reachable_clock(target, clock, best)})" if best
                  else "ask for a lower --clock"))
    (out / FAILED).write_text(msg + "\n\n" + json.dumps(attempts, indent=1, sort_keys=True, default=str) + "\n")
    err = FabformerError(msg)
    err.attempts = attempts  # what each try used and reached, for callers that record it (explore)
    raise err


def _reachable_clock(target, clock: dict, fmax: float) -> str:
    """What ``--clock`` to ask for after a build routed at ``fmax`` below its clock: on a PLL
    board the PLL's highest output at or below ``fmax`` (and the value that selects it), else
    the whole MHz below ``fmax``."""
    osc = clock.get("oscillator_mhz")
    if clock.get("pll") is not None and osc:
        from .pll import pll_setting
        try:
            out = pll_setting(target.family, osc, fmax).out_mhz
        except FabformerError:
            out = None
        if out is not None and out >= osc:
            ask = min(math.ceil(out * 100) / 100, fmax)
            return f"--clock {ask:g} gives the PLL's {out:.6g} MHz, its highest output at or below {fmax:g} MHz"
    return f"at most {math.floor(fmax)} MHz"


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


def _finish(out, target, d, clock, r, attempts, baud, bdir, pnr):
    clock_mhz = round(clock["mhz"], 4)
    ext = r["bitstream"].suffix
    bit = out / f"{target.board.replace(':', '_')}{ext}"
    shutil.copyfile(r["bitstream"], bit)
    fmax = r["fmax_mhz"]
    rep = {"board": target.board, "family": target.family, "bitstream": str(bit),
           "fmax_mhz": None if fmax is None else round(fmax, 2), "clock_mhz": clock_mhz,
           "timing_met": fmax is not None and fmax >= clock_mhz,
           "clock_source": "pll" if clock["pll"] else "oscillator" if clock["oscillator_mhz"] else "port",
           "clock_chosen_by": ("nextpnr Fmax" if clock["auto"] and len(attempts) > 1 and attempts[-1].get("clock_mhz")
                               != attempts[-2].get("clock_mhz") else "board target" if clock["auto"] else "--clock"
                               if clock["pll"] or not clock["oscillator_mhz"] else "board oscillator"),
           "pll": clock["pll"].as_dict() if clock["pll"] else None,
           "resources": _resources(r["nextpnr"] or r["yosys"], target.available),
           "parallelism": getattr(d, "parallelism", None), "multipliers": d.multipliers, "macs": d.macs,
           "logic_multipliers": sum(getattr(d, "logic", {}).values()),
           **_timing(d, clock_mhz, max(4, round(clock_mhz * 1e6 / baud)), baud),
           "dsp_registers": r.get("dsp_registers"), "nextpnr_seed": r.get("seed", pnr.seeds[0]),
           "nextpnr_tmg_ripup": bool(r.get("tmg_ripup")), "nextpnr_seeds": r.get("seeds_tried"),
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
            f"- clock: {rep['clock_mhz']:g} MHz ({_clock_words(rep)}); Fmax (nextpnr): {f(rep['fmax_mhz'], ' MHz')}"
            + _seed_words(rep),
            f"- latency: {rep['latency_cycles']} cycles = {rep['latency_ns']} ns; "
            f"throughput: {rep['throughput_inferences_per_s']} inferences/s (II {rep['ii_cycles']} cycles)",
            f"- multipliers: {rep['multipliers']} for {rep['macs']} MACs/inference"
            + (f" ({rep['logic_multipliers']} of them built in logic, beyond the DSPs)"
               if rep.get("logic_multipliers") else ""), *_uart_rows(rep), "",
            "| resource | used | available | % |", "| --- | ---: | ---: | ---: |"]
    for k, v in rep["resources"].items():
        rows.append(f"| {k.upper()} | {f(v['used'])} | {f(v['available'])} | {f(v['percent'])} |")
    return "\n".join(rows) + "\n"


def _seed_words(rep: dict) -> str:
    seeds = rep.get("nextpnr_seeds") or []
    if rep.get("nextpnr_seed") is None:
        return ""
    words = f", placement seed {rep['nextpnr_seed']}" + (" routed with --tmg-ripup" if rep.get("nextpnr_tmg_ripup") else "")
    return words + (f" (tried: {flow.seed_summary(seeds)})" if len(seeds) > 1 else "")


def _clock_words(rep: dict) -> str:
    src = rep.get("clock_source")
    if src == "pll":
        p = rep.get("pll") or {}
        return (f"from a PLL on the {p.get('in_mhz', 0):g} MHz oscillator, chosen by "
                f"{rep.get('clock_chosen_by', '--clock')}")
    if src == "oscillator":
        return "the board oscillator"
    return "requested" if src is None else "the clock port's constraint"


def _uart_rows(rep: dict) -> list[str]:
    u = rep.get("uart")
    if not u or "shell_cycles" not in u:
        return []
    sc = u["shell_cycles"]
    return [f"- through the UART shell ({u['baud']} baud): {sc['total']} cycles a sample = receive "
            f"{sc['receive']} + compute {sc['compute']} + send {sc['send']}; {u['samples_per_s']} samples/s "
            f"(the shell reports the model's {sc['reported']} cycles)"]


# -- architecture choice (fabformer build --arch) ------------------------------------------------
ARCH_CHOICES = ("auto", "dataflow", "compact")


def build_arch(graph, board: str, out, *, arch: str = "auto", **kw) -> dict:
    """:func:`build` in RTL architecture ``arch``: ``dataflow`` (fitted parallelism), ``compact`` (one
    MAC array and a sequencer; its program listing beside the report), or ``auto``: dataflow when it
    fits ``board``, else compact (the report's ``arch_note`` says why)."""
    if arch not in ARCH_CHOICES:
        raise FabformerError(f"unknown architecture {arch!r} for build; valid: {', '.join(ARCH_CHOICES)}")
    note = ""
    if arch == "auto":
        try:
            rep = build(graph, board, out, **kw)
            rep["arch"], rep["arch_note"] = "dataflow", "architecture auto: dataflow fits"
            return rep
        except FabformerError as e:
            if not getattr(e, "attempts", None):
                raise
            why = str(e).split(". needed/available")[0]
            note = f"architecture auto: picked compact, because dataflow does not fit: {why}"
            print(note, file=sys.stderr, flush=True)  # progress channel: stdout keeps --json alone
            arch = "compact"
    if arch == "dataflow":
        rep = build(graph, board, out, **kw)
        rep["arch"] = "dataflow"
        return rep
    from ..rtl import generate
    if kw.get("parallelism") is not None:
        raise FabformerError(f"--parallelism {kw['parallelism']} is a dataflow setting; the compact architecture "
                             f"has one MAC array (valid with --arch compact: no --parallelism)")
    kw.pop("parallelism", None)
    if kw.pop("logic_multipliers", None) and not note:
        raise FabformerError("--logic-multipliers is a dataflow setting; the compact architecture has one MAC "
                             "array (valid with --arch compact: no --logic-multipliers)")
    # on a device of few DSPs (the UP5K's 8): half of them are the MAC lanes, the other half and the
    # idle lanes take the row unit's multiplies, the write-back's scale multiplies by constants
    dsp = get_target(board).available["dsp"]
    if dsp <= 16:
        lanes = 1 << max((dsp // 2).bit_length() - 1, 0)
        design = generate(graph, arch="compact", row_multipliers="lut", lanes=lanes, dsps=dsp)
    else:
        design = generate(graph, arch="compact", row_multipliers="dsp")
    rep = build(graph, board, out, design=design, **kw)
    listing = Path(out) / "program.lst"
    listing.write_text(design.listing())
    rep.update(arch="compact", listing=str(listing), arch_note=note or "architecture compact",
               mac_utilization=round(design.mac_utilization, 4))
    _write_report(Path(out), rep)  # the report names the architecture
    return rep
