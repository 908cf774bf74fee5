"""Scaling of the dataflow RTL: a two-block encoder at sequence 8/16/32 x d_model 16/32/64.

    .venv/bin/python bench/scaling.py [--setting full|fit] [--dsp 156] [--parallelism N] [--synth]
                                      [--synth-dir DIR] [--json out/scaling.json]

For each size: the analytic latency and II (cycles), multipliers, MAC bound (MACs /
multipliers) and their ratios; with ``--synth`` also LUT/FF/DSP/BRAM from yosys
``synth_ecp5`` (the open flow's script, no place and route).  ``--setting full`` (the
default) is one multiplier per output column of every matmul-like block; ``fit`` is the
board fit's first choice for ``--dsp`` multipliers (the ULX3S-85F's 156 by default): the
fastest balanced setting within them, else the smallest (one multiplier per node).

``--synth-dir DIR`` writes each design's ``top.il`` and yosys script ``top.ys`` into
``DIR/<setting>_<sequence>x<d_model>/`` and reads the counts from a ``top.stat.json``
found there, so the slow syntheses can run elsewhere (one yosys per design, in parallel:
``yosys -q -l yosys.log top.ys`` in each folder) and the table is printed from their
results; with ``--synth`` as well, the designs lacking a result are synthesized here.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np


def encoder(tokens: int, d_model: int, blocks: int = 2, heads: int = 2, seed: int = 0):
    """``blocks`` encoder layers (attention, layer norm, feed-forward 2 x d_model, layer norm)
    after an embedding, then flatten and a 10-class head; random weights."""
    from fabformer import tables
    from fabformer.apps.testing import _act, _dense
    from fabformer.fixed import FixedType, Overflow, Rounding
    from fabformer.ir import (Add, Flatten, Graph, LayerNorm, MatMul, MergeHeads, Quantize, Relu, Softmax,
                              SplitHeads)
    rng = np.random.default_rng(seed)
    g = Graph(f"encoder{blocks}x{tokens}x{d_model}")
    features = 8
    g.add_input("x", (tokens, features))
    A = _act(16, 10)
    g.add(Quantize("quant", ("x",), "xq"), FixedType(8, 7, rounding=Rounding.RND, overflow=Overflow.SAT))
    h = g.add(_dense("embed", "xq", "h0", features, d_model, rng), A)
    gt = FixedType(12, 8)
    dk = d_model // heads
    for b in range(blocks):
        p = f"b{b}_"
        for nm in ("q", "k", "v"):
            g.add(_dense(p + nm, h, p + nm, d_model, d_model, rng), A)
            g.add(SplitHeads(p + nm + "_split", (p + nm,), p + nm + "h", heads=heads), A)
        g.add(MatMul(p + "qk", (p + "qh", p + "kh"), p + "scores", transpose_b=True,
                     scale=round(2 ** 15 / math.sqrt(dk)), scale_frac=15), A)
        g.add(Softmax(p + "softmax", (p + "scores",), p + "probs", exp_table=tables.exp_table(A.frac),
                      recip_table=tables.recip_table()), FixedType(16, 15, False, Rounding.RND, Overflow.SAT))
        g.add(MatMul(p + "av", (p + "probs", p + "vh"), p + "ctx"), A)
        g.add(MergeHeads(p + "merge", (p + "ctx",), p + "ctxm"), A)
        g.add(_dense(p + "o", p + "ctxm", p + "attn", d_model, d_model, rng), A)
        g.add(Add(p + "res1", (h, p + "attn"), p + "r1"), A)

        def ln(nm, x, o):
            return LayerNorm(nm, (x,), o, gamma=rng.integers(400, 1200, d_model), gamma_type=gt,
                             beta=rng.integers(-200, 200, d_model), beta_type=gt, eps=1,
                             invsqrt_table=tables.invsqrt_table(), norm_type=_act(18, 16))
        g.add(ln(p + "ln1", p + "r1", p + "n1"), A)
        g.add(_dense(p + "ff1", p + "n1", p + "f1", d_model, 2 * d_model, rng), _act(17, 10))
        g.add(Relu(p + "relu", (p + "f1",), p + "f1r"), FixedType(16, 10, False, Rounding.RND, Overflow.SAT))
        g.add(_dense(p + "ff2", p + "f1r", p + "f2", 2 * d_model, d_model, rng), A)
        g.add(Add(p + "res2", (p + "n1", p + "f2"), p + "r2"), A)
        h = g.add(ln(p + "ln2", p + "r2", p + "n2"), A)
    g.add(Flatten("flatten", (h,), "flat"), A)
    g.add(_dense("head", "flat", "logits", tokens * d_model, 10, rng), A)
    g.outputs = ["logits"]
    return g.verify()


def split_blocks(rtlil: str) -> dict:
    """``{block: RTLIL text}``: each direct child of the design's ``top`` module with the modules
    under it, for a synthesis per block (the top module itself only wires the blocks together)."""
    mods, pending, cur, name = {}, [], None, None
    for line in rtlil.splitlines(keepends=True):
        if cur is None:
            if line.startswith("module "):
                name, cur = line.split()[1], [a for a in pending if a.strip() != "attribute \\top 1"] + [line]
                pending = []
            elif line.startswith("attribute "):
                pending.append(line)
            continue
        cur.append(line)
        if line.rstrip("\n") == "end":
            mods[name], cur = "".join(cur), None
    children = sorted(n for n in mods if n.startswith("\\top.") and n.count(".") == 1)
    return {c[len("\\top."):]: "".join(t for n, t in mods.items() if n == c or n.startswith(c + "."))
            for c in children}


def block_synth_counts(folder) -> dict | None:
    """LUT/FF/DSP/BRAM summed over ``folder/blocks/*.stat.json`` (None unless every block has one)."""
    from fabformer.boards.flow import yosys_counts
    scripts = sorted(folder.glob("blocks/*.ys"))
    stats = [f.with_suffix(".stat.json") for f in scripts]
    if not scripts or not all(f.exists() for f in stats):
        return None
    total: dict = {}
    for f in stats:
        for k, v in yosys_counts(json.loads(f.read_text()), "ecp5").items():
            total[k] = total.get(k, 0) + v
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--d-model", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--parallelism", type=int, default=None)
    ap.add_argument("--setting", choices=("full", "fit"), default="full")
    ap.add_argument("--dsp", type=int, default=156, help="multipliers the fit may use (--setting fit)")
    ap.add_argument("--synth", action="store_true", help="also yosys synth_ecp5 each design (slow)")
    ap.add_argument("--synth-dir", help="per-design folders: top.il + top.ys written, top.stat.json read")
    ap.add_argument("--split-blocks", action="store_true",
                    help="with --synth-dir: also blocks/<block>.il + .ys, one synthesis per block (in parallel "
                         "elsewhere); the table sums their blocks/<block>.stat.json where top.stat.json is missing")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from pathlib import Path
    from fabformer.boards.build import parallelism_candidates
    from fabformer.boards.flow import synth_commands, yosys_counts
    from fabformer.rtl import generate
    synth_cols = a.synth or a.synth_dir
    rows = []
    print("| sequence | d_model | MACs | multipliers | MAC bound | latency | latency / bound | II | II / bound |"
          + (" LUT | FF | DSP | BRAM | synth s |" if synth_cols else ""))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|---:|" if synth_cols else ""))
    for t in a.tokens:
        for dm in a.d_model:
            g = encoder(t, dm)
            par = a.parallelism
            if par is None and a.setting == "fit":
                par = parallelism_candidates(g, a.dsp)[0]
            d = generate(g, parallelism=par)
            bound = d.macs / d.multipliers
            row = {"tokens": t, "d_model": dm, "macs": d.macs, "multipliers": d.multipliers,
                   "mac_bound": round(bound, 1), "latency": d.latency_cycles, "ii": d.ii_cycles,
                   "latency_over_bound": round(d.latency_cycles / bound, 2), "ii_over_bound": round(d.ii_cycles / bound, 2)}
            line = (f"| {t} | {dm} | {d.macs:,} | {d.multipliers} | {bound:,.1f} | {d.latency_cycles:,} | "
                    f"{row['latency_over_bound']} | {d.ii_cycles:,} | {row['ii_over_bound']} |")
            y, secs = None, None
            if a.synth_dir:
                w = Path(a.synth_dir) / f"{a.setting}_{t}x{dm}"
                w.mkdir(parents=True, exist_ok=True)
                if not (w / "top.il").exists():
                    (w / "top.il").write_text(d.rtlil("top"))
                    (w / "top.ys").write_text("\n".join(["read_rtlil top.il", *synth_commands("ecp5", ""),
                                                         "tee -q -o top.stat.json stat -json"]) + "\n")
                if a.split_blocks and not (w / "blocks").exists():
                    (w / "blocks").mkdir()
                    for blk, text in split_blocks((w / "top.il").read_text()).items():
                        (w / "blocks" / f"{blk}.il").write_text(text)
                        (w / "blocks" / f"{blk}.ys").write_text("\n".join(
                            [f"read_rtlil {blk}.il", *synth_commands("ecp5", "", top=f"top.{blk}"),
                             f"tee -q -o {blk}.stat.json stat -json"]) + "\n")
                if (w / "top.stat.json").exists():
                    y = yosys_counts(json.loads((w / "top.stat.json").read_text()), "ecp5")
                elif a.split_blocks:
                    y = block_synth_counts(w)
                    if y is not None:
                        y["from"] = "sum of per-block syntheses"
            if a.synth and y is None:
                sys.path.insert(0, str(Path(__file__).resolve().parent))
                from fmax import measure
                t0 = time.time()
                y = measure(d, "ecp5", pnr=False).get("yosys")
                secs = round(time.time() - t0, 1)
            if synth_cols:
                row["synth"], row["synth_s"] = y, secs
                y = y or {}
                line += (f" {y.get('lut', 'not run')} | {y.get('ff', '')} | {y.get('dsp', '')} | {y.get('bram', '')} | "
                         f"{secs if secs is not None else ''} |")
            rows.append(row)
            print(line, flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
