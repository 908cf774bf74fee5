"""A model larger than the dataflow fit of the ULX3S-85F: a two-block encoder, 32 tokens x 64 wide
(random weights), built for the compact architecture.

    python bench/compact_encoder.py -o out/enc32x64.graph.json      # writes the graph, prints its listing summary
    fabformer sim out/enc32x64.graph.json -o out/enc-sim --arch compact --samples 20
    fabformer build out/enc32x64.graph.json --board ulx3s-85f --arch compact -o out/enc-ulx3s
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np


def encoder(tokens: int = 32, features: int = 16, d_model: int = 64, heads: int = 2, ff: int = 128,
            classes: int = 10, blocks: int = 2, seed: int = 0):
    from fabformer import ir, tables
    from fabformer.fixed import FixedType, Overflow, Rounding
    rng = np.random.default_rng(seed)
    A = FixedType(16, 10, True, Rounding.RND, Overflow.SAT)
    wt = FixedType(8, 7, True, Rounding.RND, Overflow.SAT)

    def dense(name, x, out, k, n, t=A):
        w = np.clip(np.round(rng.normal(0, 128 / math.sqrt(k), (k, n))), -128, 127).astype(np.int64)
        return g.add(ir.Dense(name, (x,), out, weight=w, weight_type=wt, bias=rng.integers(-64, 64, n),
                              bias_type=FixedType(8, 7)), t)
    g = ir.Graph(f"encoder{blocks}x{tokens}x{d_model}")
    g.add_input("x", (tokens, features))
    g.add(ir.Quantize("quant", ("x",), "xq"), FixedType(8, 5, True, Rounding.RND, Overflow.SAT))
    h = dense("embed", "xq", "h0", features, d_model)
    dk = d_model // heads
    for b in range(blocks):
        p = f"b{b}/"
        for nm in ("q", "k", "v"):
            dense(p + nm, h, p + nm, d_model, d_model)
            g.add(ir.SplitHeads(p + nm + "_split", (p + nm,), p + nm + "h", heads=heads), A)
        g.add(ir.MatMul(p + "qk", (p + "qh", p + "kh"), p + "scores", transpose_b=True,
                        scale=round(2 ** 15 / math.sqrt(dk)), scale_frac=15), A)
        g.add(ir.Softmax(p + "softmax", (p + "scores",), p + "probs", exp_table=tables.exp_table(A.frac),
                         recip_table=tables.recip_table()), FixedType(16, 15, False, Rounding.RND, Overflow.SAT))
        g.add(ir.MatMul(p + "av", (p + "probs", p + "vh"), p + "ctx"), A)
        g.add(ir.MergeHeads(p + "merge", (p + "ctx",), p + "ctxm"), A)
        dense(p + "o", p + "ctxm", p + "attn", d_model, d_model)
        g.add(ir.Add(p + "res1", (h, p + "attn"), p + "r1"), A)
        ln = lambda nm, x, o: ir.LayerNorm(nm, (x,), o, gamma=rng.integers(400, 1200, d_model),
                                           gamma_type=FixedType(12, 8), beta=rng.integers(-200, 200, d_model),
                                           beta_type=FixedType(12, 8), eps=1, invsqrt_table=tables.invsqrt_table(),
                                           norm_type=FixedType(18, 16, True, Rounding.RND, Overflow.SAT))
        g.add(ln(p + "ln1", p + "r1", p + "n1"), A)
        dense(p + "ff1", p + "n1", p + "f1", d_model, ff)
        g.add(ir.Relu(p + "relu", (p + "f1",), p + "f1r"), FixedType(16, 10, False, Rounding.RND, Overflow.SAT))
        dense(p + "ff2", p + "f1r", p + "f2", ff, d_model)
        g.add(ir.Add(p + "res2", (p + "n1", p + "f2"), p + "r2"), A)
        g.add(ln(p + "ln2", p + "r2", p + "n2"), A)
        h = p + "n2"
    g.add(ir.GlobalAvgPool("pool", (h,), "pooled", scale=round(2 ** 12 / tokens), scale_frac=12), A)
    dense("head", "pooled", "logits", d_model, classes)
    g.outputs = ["logits"]
    return g.verify()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)
    from fabformer.rtl import generate
    g = encoder()
    g.save(args.output)
    d = generate(g, arch="compact")
    print(f"{g.name}: {len(g.nodes)} nodes, {g.macs()} MACs/sample, weights {g.weight_stats()['params']}; compact: "
          f"{len(d.program.instrs)} instructions, data memory {d.program.dm_words} words, weight ROM "
          f"{len(d.program.wrom)} words, latency {d.latency_cycles} cycles, MAC-array utilization "
          f"{100 * d.mac_utilization:.1f} %; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
