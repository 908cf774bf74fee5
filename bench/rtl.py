"""RTL benchmark: cycles, II, multiplier bound and utilization per block and for the
model; the matmul-engine parallelism sweep; Verilator vs Icarus simulated cycles/s.

    .venv/bin/python bench/rtl.py [--samples N] [--icarus-samples N] [--fmax] [--json out.json]

``--fmax`` also places and routes the single-op designs of the softmax and layer-norm op
graphs (fabformer.apps.testing.op_graph) for the bare ECP5 part LFE5U-85F with the boards flow
(yowasp yosys + nextpnr, several minutes each) and reports their Fmax.

Uses the shipped digits example when examples/digits/model_q8.h5 exists, else the
random-weight encoder of fabformer.apps.testing.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def example():
    model = ROOT / "examples" / "digits" / "model_q8.h5"
    if model.is_file():
        import fabformer
        from fabformer.apps.data import digits
        from fabformer.frontend import load_keras_model
        d = digits()
        return fabformer.convert(load_keras_model(model), calibration=d.x_train), d.x_test
    from fabformer.apps import testing
    g = testing.encoder_graph()
    return g, testing.random_inputs(g, 1000)


def block_table(g, d) -> list[dict]:
    rows = []
    for b in d.blocks:
        n = g.node(b["name"])
        macs = n.macs(g) if n.kind in ("dense", "matmul") else 0
        bound = macs / b["multipliers"] if b["multipliers"] else None
        util = macs / (b["multipliers"] * b["ii"]) if b["multipliers"] else None
        rows.append({**b, "macs": macs, "bound": bound, "utilization": util})
    return rows


def sweep(samples=2):
    from fabformer.apps import testing
    from fabformer.rtl import DesignSet, generate
    from fabformer.rtl.sweep import dense_graph
    ps = [1, 2, 4, 8, 16, 32, 64]
    ds = DesignSet([generate(dense_graph(16, 16, rows=16), parallelism=p) for p in ps], name="bench_sweep")
    from fabformer.sim import run_many
    rs = run_many([(m, testing.random_inputs(m.graph, samples)) for m in ds.members], stalls=False)
    out = []
    for p, m, r in zip(ps, ds.members, rs):
        out.append({"multipliers": m.multipliers, "bound": m.macs / m.multipliers, "latency": r.latency_cycles,
                    "ii": r.ii_cycles, "bit_exact": r.bit_exact,
                    "over_bound": r.ii_cycles / (m.macs / m.multipliers) - 1})
    return out


def fmax(kinds=("softmax", "layernorm"), part="part:LFE5U-85F"):
    """Fmax (MHz, nextpnr) of the single-op design of each op graph in ``kinds``."""
    import tempfile
    from fabformer.apps import testing
    from fabformer.boards.build import build
    from fabformer.rtl import generate
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in kinds:
            g = testing.op_graph(k)
            r = build(g, part, Path(tmp) / k, design=generate(g))
            out[k] = {"fmax_mhz": r["fmax_mhz"], "lut": r["resources"]["lut"]["used"],
                      "ff": r["resources"]["ff"]["used"], "dsp": r["resources"]["dsp"]["used"]}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--icarus-samples", type=int, default=10)
    ap.add_argument("--fmax", action="store_true", help="also measure the Fmax of softmax / layer norm (slow)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from fabformer.rtl import generate
    from fabformer.sim import run
    g, x = example()
    d = generate(g)
    res = {"graph": g.name, "multipliers": d.multipliers, "macs": d.macs, "mac_bound_cycles": d.mac_bound_cycles,
           "latency_analytic": d.latency_cycles, "ii_analytic": d.ii_cycles, "blocks": block_table(g, d)}
    for sim, n in (("verilator", a.samples), ("icarus", a.icarus_samples)):
        t = time.perf_counter()
        r = run(d, x[:n], simulator=sim)
        res[sim] = {"samples": n, "bit_exact": r.bit_exact, "mismatches": r.mismatches,
                    "latency_cycles": r.latency_cycles, "ii_cycles": r.ii_cycles, "simulated_cycles": r.cycles,
                    "cycles_per_second": round(r.cycles_per_second), "total_s_incl_build": round(time.perf_counter() - t, 1)}
    res["sweep"] = sweep()

    print(f"## {g.name}: {d.multipliers} multipliers, {d.macs} MACs/sample, "
          f"MAC bound {d.mac_bound_cycles:.0f} cycles")
    print("\n| block | kind | multipliers | latency | II | MAC bound | utilization |\n|---|---|---:|---:|---:|---:|---:|")
    for b in res["blocks"]:
        print(f"| {b['name']} | {b['kind']} | {b['multipliers']} | {b['latency']} | {b['ii']} | "
              f"{'' if b['bound'] is None else round(b['bound'])} | "
              f"{'' if b['utilization'] is None else format(b['utilization'], '.0%')} |")
    print("\n| simulator | samples | bit-exact | latency (analytic) | II (analytic) | simulated cycles/s |\n|---|---:|---|---:|---:|---:|")
    for sim in ("verilator", "icarus"):
        s = res[sim]
        print(f"| {sim} | {s['samples']} | {s['bit_exact']} | {s['latency_cycles']} ({d.latency_cycles}) | "
              f"{s['ii_cycles']:.1f} ({d.ii_cycles}) | {s['cycles_per_second']} |")
    print("\n| multipliers | MAC bound | latency | II | II over bound |\n|---:|---:|---:|---:|---:|")
    for s in res["sweep"]:
        print(f"| {s['multipliers']} | {s['bound']:.0f} | {s['latency']} | {s['ii']:.1f} | {s['over_bound']:+.1%} |")
    if a.fmax:
        res["fmax"] = fmax()
        print("\n| op graph | Fmax (MHz, LFE5U-85F) | LUT | FF | DSP |\n|---|---:|---:|---:|---:|")
        for k, v in res["fmax"].items():
            print(f"| {k} | {v['fmax_mhz']} | {v['lut']} | {v['ff']} | {v['dsp']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
