"""Where an iCE40 build's logic cells go, from its synthesized netlist (``build/try*/top.json``).

An iCE40 logic cell holds one LUT4 and one flip-flop fed by that LUT only: a flip-flop fed by another
flip-flop, a block RAM, a DSP or a LUT with other loads takes a cell of its own ("lone").  Prints the
flip-flops paired and lone, the lone ones by register, and the LUTs by the nearest register (or RAM,
DSP, pin) they feed (each LUT counted once, for the register a breadth-first walk back from every
register reaches first).

    python bench/ice40_cells.py out/ice5/build/try0/top.json [--top 30]
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys


def _group(name: str) -> str:
    name = re.sub(r"\[\d+\]", "", name)
    name = re.sub(r"_SB_.*", "", name)
    name = re.sub(r"\$.*", "", name)
    return re.sub(r"\d+$", "#", name)


def analyse(netlist: dict) -> dict:
    mod = next(m for m in netlist["modules"].values() if m.get("attributes", {}).get("top"))
    driver, fanout, names = {}, collections.Counter(), {}
    for n, c in mod["cells"].items():
        for p, bits in c["connections"].items():
            if c["port_directions"].get(p) == "output":
                for b in bits:
                    driver[b] = n
            else:
                for b in bits:
                    fanout[b] += 1
    for n, x in mod["netnames"].items():  # the netlist's order: the last visible name of a bit
        for b in x["bits"]:
            if b not in names or not x.get("hide_name", 0):
                names[b] = (n, x.get("hide_name", 0))
    pair = lone = 0
    lone_by = collections.Counter()
    owner, queue = {}, collections.deque()
    for n, c in mod["cells"].items():
        t = c["type"]
        if t.startswith("SB_DFF"):
            group = _group(names.get(c["connections"]["Q"][0], ("?", 1))[0])
            d = c["connections"]["D"][0]
            if isinstance(d, int):
                src = driver.get(d)
                if src is not None and mod["cells"][src]["type"] == "SB_LUT4" and fanout[d] == 1:
                    pair += 1
                else:
                    lone += 1
                    lone_by[group] += 1
        elif t in ("SB_MAC16", "SB_RAM40_4K", "SB_IO", "SB_SPRAM256KA"):
            group = f"{t}:{_group(n)}"
        else:
            continue
        for p, bits in c["connections"].items():
            if c["port_directions"].get(p) == "input":
                queue.extend((driver[b], group) for b in bits if isinstance(b, int) and b in driver)
    while queue:
        n, group = queue.popleft()
        c = mod["cells"][n]
        if c["type"] not in ("SB_LUT4", "SB_CARRY") or n in owner:
            continue
        owner[n] = group
        for p, bits in c["connections"].items():
            if c["port_directions"].get(p) == "input":
                queue.extend((driver[b], group) for b in bits if isinstance(b, int) and b in driver)
    luts = collections.Counter(g for n, g in owner.items() if mod["cells"][n]["type"] == "SB_LUT4")
    n_luts = sum(1 for c in mod["cells"].values() if c["type"] == "SB_LUT4")
    return {"luts": n_luts, "ff_paired": pair, "ff_lone": lone, "lone_by": lone_by, "luts_by": luts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netlist", help="a build's synthesized netlist (build/try*/top.json)")
    ap.add_argument("--top", type=int, default=30, help="rows of each table")
    args = ap.parse_args(argv)
    with open(args.netlist) as f:
        r = analyse(json.load(f))
    print(f"{r['luts']} LUT4, flip-flops: {r['ff_paired']} paired with their LUT, {r['ff_lone']} lone; "
          f"at least {r['luts'] + r['ff_lone']} logic cells before carry-chain legalisation")
    print("\nlone flip-flops by register:")
    for k, v in r["lone_by"].most_common(args.top):
        print(f"  {v:6d}  {k}")
    print("\nLUTs by the nearest register they feed:")
    for k, v in r["luts_by"].most_common(args.top):
        print(f"  {v:6d}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
