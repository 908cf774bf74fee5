"""RTL generator: contract, errors, determinism, lint and pruning (no simulation)."""
import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from fabformer import FabformerError
from fabformer.apps import testing
from fabformer.fixed import FixedType
from fabformer.rtl import cell_counts, generate
from fabformer.rtl.blocks import mac_depth, mac_split
from fabformer.rtl.sweep import dense_graph


def test_generate_contract():
    g = testing.encoder_graph()
    d = generate(g)
    assert (d.in_rows, d.in_cols, d.out_rows, d.out_cols) == (8, 8, 1, 10)
    assert d.in_type == g.type_of("xq") and d.out_type == g.type_of("logits")
    assert d.macs == g.macs() and d.multipliers == sum(b["multipliers"] for b in d.blocks)
    assert [b["name"] for b in d.blocks] == [n.name for n in g.nodes[1:]]
    assert d.latency_cycles > d.ii_cycles > 0
    sig = d.top.signature
    assert sig.members["i"].signature.members["payload"].shape == data.ArrayLayout(signed(8), 8)
    assert sig.members["o"].signature.members["payload"].shape == data.ArrayLayout(signed(16), 10)


def test_unsigned_element_shape():
    d = generate(testing.op_graph("relu"))
    assert d.top.signature.members["o"].signature.members["payload"].shape == data.ArrayLayout(unsigned(6), 8)


@pytest.mark.parametrize("p, msg", [
    (0, "positive number of multipliers"),
    ({"nope": 2}, r"unknown matmul-like or row-function node\(s\) \['nope'\]; valid: d$"),
    ({"d": -1}, "must be a positive integer"),
    ("fast", "must be None, a positive integer or a dict"),
])
def test_parallelism_errors(p, msg):
    with pytest.raises(FabformerError, match=msg):
        generate(testing.op_graph("add"), parallelism=p)


def test_graph_errors():
    with pytest.raises(FabformerError, match="no hardware after its quantize node"):
        generate(testing.op_graph("quantize"))


@pytest.mark.parametrize("k, n, p, split", [(16, 16, 1, (1, 1)), (16, 16, 4, (4, 1)), (16, 16, 16, (16, 1)),
                                            (16, 16, 64, (16, 4)), (16, 10, 4, (2, 2)), (8, 6, 48, (6, 8))])
def test_mac_split(k, n, p, split):
    assert mac_split(k, n, p) == split


@pytest.mark.parametrize("p", [1, 4, 16, 256])
def test_dense_analytic_timing(p):
    d = generate(dense_graph(16, 16, rows=16), parallelism=p)
    (b,) = d.blocks
    assert b["multipliers"] == min(p, 256)
    assert b["ii"] == 16 * 256 // min(p, 256)
    # the steps, then the engine's pipeline (operands, products, adder tree, accumulator,
    # rounding) and the output register
    pk = mac_split(16, 16, p)[1]
    assert d.latency_cycles == b["ii"] + 1 + mac_depth(pk)
    assert mac_depth(pk) == {1: 7, 4: 7, 16: 7, 256: 9}[p]  # 16 products a lane: 2 tree stages


def test_verilog_deterministic_and_outdir(tmp_path):
    d = generate(testing.op_graph("softmax"))
    p1 = d.write_verilog(tmp_path / "a")
    p2 = generate(testing.op_graph("softmax")).write_verilog(tmp_path / "b")
    assert p1.read_bytes() == p2.read_bytes()
    assert "module top" in p1.read_text()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FabformerError, match="refusing to write"):
        d.write_verilog(foreign)
    ic = d.write_verilog(tmp_path / "c", icarus=True).read_text()
    assert "module top" in ic and "initial" not in ic.split("module top")[0]


def test_verilator_lint(tmp_path):
    """-Wall lint of every block kind (one design set holds all op graphs); only the
    explained waivers in fabformer.sim.runner.LINT_WAIVERS are accepted."""
    from fabformer.rtl import DesignSet
    from fabformer.sim.runner import LINT_WAIVERS, lint
    kinds = [k for k in testing.OP_KINDS if k != "quantize"]
    ds = DesignSet([generate(testing.op_graph(k)) for k in kinds])
    path = tmp_path / "top.v"
    path.write_text(ds.verilog("top"))
    problems, counts = lint(path)
    assert problems == [], "\n".join(problems[:20])
    assert counts, "lint must have run (Amaranth output always raises some waived warnings)"
    assert set(counts) <= set(LINT_WAIVERS)
    assert len(LINT_WAIVERS) <= 8


def test_lint_reports_real_problems(tmp_path):
    from fabformer.sim.runner import lint
    path = tmp_path / "top.v"
    path.write_text("module top(input clk, output [3:0] y);\n  assign y = z;\nendmodule\n")
    problems, counts = lint(path)
    assert problems


def test_pruned_dense_uses_fewer_multipliers():
    """Fully unrolled: zero weights generate no multiplier (yosys $mul cell count)."""
    full = generate(dense_graph(16, 16, rows=2, sparsity=0.0), parallelism=256)
    half = generate(dense_graph(16, 16, rows=2, sparsity=0.5), parallelism=256)
    m_full = cell_counts(full).get("$mul", 0)
    m_half = cell_counts(half).get("$mul", 0)
    assert m_full > 128
    assert m_half <= 0.55 * m_full, (m_half, m_full)
    assert half.multipliers == 128 and full.multipliers == 256


@pytest.mark.parametrize("sa, sb", [(signed(8), signed(8)), (unsigned(8), signed(8)), (signed(16), signed(8)),
                                     (signed(9), unsigned(7)), (signed(16), signed(16)), (signed(5), signed(1))])
def test_logic_product_is_exact(sa, sb):
    """The multiplier built in logic (radix-4 Booth digits of b, two registered halves, their sum in
    the next register) equals a * b: every pair where both have at most 8 bits, else the extremes and
    2,000 random pairs."""
    import itertools
    from amaranth.hdl import Elaboratable, Module, Signal
    from amaranth.sim import Simulator
    from fabformer.rtl.arith import logic_product_halves

    def span(s):
        return (-(1 << (s.width - 1)), 1 << (s.width - 1)) if s.signed else (0, 1 << s.width)

    class Mul(Elaboratable):
        def __init__(self):
            self.a, self.b = Signal(sa), Signal(sb)
            self.y = Signal(signed(sa.width + sb.width + 1))

        def elaborate(self, platform):
            m = Module()
            h = logic_product_halves(m, self.a, self.b, "p")
            m.d.sync += self.y.eq(sum(h[1:], h[0]))
            return m

    (alo, ahi), (blo, bhi) = span(sa), span(sb)
    if sa.width <= 8 and sb.width <= 8:
        pairs = list(itertools.product(range(alo, ahi), range(blo, bhi)))
    else:
        rng = np.random.default_rng(0)
        pairs = list(itertools.product((alo, alo + 1, -1, 0, 1, ahi - 1), (blo, blo + 1, -1, 0, 1, bhi - 1)))
        pairs = [(x, y) for x, y in pairs if alo <= x < ahi and blo <= y < bhi]
        pairs += list(zip(rng.integers(alo, ahi, 2000).tolist(), rng.integers(blo, bhi, 2000).tolist()))
    dut = Mul()
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    bad = []

    async def bench(ctx):
        for k in range(len(pairs) + 1):  # after the k-th tick the sum register holds pair k - 1's product
            if k < len(pairs):
                ctx.set(dut.a, pairs[k][0])
                ctx.set(dut.b, pairs[k][1])
            await ctx.tick()
            if k >= 1:
                x, y = pairs[k - 1]
                if ctx.get(dut.y) != x * y:
                    bad.append((x, y, ctx.get(dut.y)))
    sim.add_testbench(bench)
    sim.run()
    assert not bad, bad[:5]


def test_dsp_budget_moves_the_narrowest_multipliers_into_logic():
    """``dsps=N``: yosys sees N multiplies in the engines (the rest are adder trees); the excess is
    taken from the narrowest operands first; the RTL without a budget is unchanged."""
    g = testing.op_graph("matmul")  # two matmuls: a 8x8-bit one ('op') and a wider one ('op2')
    free = generate(g, parallelism=8)
    assert free.logic == {} and generate(g, parallelism=8, dsps=100).logic == {}
    assert generate(g, parallelism=8, dsps=None).rtlil() == free.rtlil()
    d = generate(g, parallelism=8, dsps=11)
    assert d.logic == {"op": 5}
    assert [b["logic_multipliers"] for b in d.blocks if b["kind"] == "matmul"] == [5, 0]
    assert cell_counts(d).get("$mul", 0) == 11 and cell_counts(free).get("$mul", 0) == 16
    assert generate(g, parallelism=8, dsps=0).logic == {"op": 8, "op2": 8}
    for bad in (-1, 2.5, True, "8"):
        with pytest.raises(FabformerError, match="dsps must be a number of DSP cells"):
            generate(g, parallelism=8, dsps=bad)


def test_row_function_lanes_keep_up_with_the_engines():
    """Without a setting of their own, layer norm and softmax take the fewest lanes that bring
    their II within the slowest MAC engine's; a parallelism entry sets them (it must divide the row)."""
    g = testing.encoder_graph()
    slow, fast = generate(g, parallelism=32), generate(g, parallelism=64)
    assert slow.lanes == {} and fast.lanes == {"softmax": 2, "ln1": 2, "ln2": 2}
    engines = max(b["ii"] for b in fast.blocks if b["kind"] in ("dense", "matmul"))
    assert fast.ii_cycles == engines == 64
    ln = testing.op_graph("layernorm")
    assert generate(ln, parallelism={"op": 1}).rtlil() == generate(ln).rtlil()
    assert generate(ln, parallelism={"op": 2}).multipliers == 6
    with pytest.raises(FabformerError, match=r"parallelism of 'op' \(lanes of a row function\) must divide its "
                                             r"row of 8 elements, not 3; valid: 1, 2, 4, 8"):
        generate(ln, parallelism={"op": 3})


@pytest.mark.parametrize("kind, own", [("layernorm", 3), ("softmax", 1)])
def test_row_functions_share_multipliers(kind, own):
    """Layer norm and softmax run one element per cycle through 3 and 1 multipliers
    (yosys $mul cells), whatever the row length; II N cycles a row."""
    d = generate(testing.op_graph(kind))
    b = d.blocks[-1]
    assert b["kind"] == kind and b["multipliers"] == own
    assert cell_counts(d).get("$mul", 0) == d.multipliers
    g = testing.op_graph(kind)
    rows, n = int(np.prod(g.tensors[g.nodes[-1].inputs[0]].shape[:-1])), g.tensors[g.nodes[-1].inputs[0]].shape[-1]
    assert b["ii"] == rows * n


def test_attention_streams_token_major(monkeypatch):
    """split_heads -> scores -> softmax -> context -> merge_heads carries rows token-major, so
    the layer after attention starts on token 0 while later tokens are still in attention: the
    analytic latency (equal to simulation in test_sim) drops against the head-major order."""
    import importlib
    gen = importlib.import_module("fabformer.rtl.generate")
    g = testing.encoder_graph()
    d = generate(g)
    perm = [0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15]  # 2 heads x 8 tokens
    assert d.orders == {t: perm for t in ("qh", "scores", "probs", "ctx")}
    monkeypatch.setattr(gen, "head_interleaving", lambda graph: {})
    plain = generate(g)
    assert plain.orders == {} and d.latency_cycles < plain.latency_cycles
    assert d.digest() != plain.digest()



@pytest.mark.parametrize("par", [None, 1, 4])
def test_barrier_phases_and_floor(par):
    """The scores wait for the last key and the context for the last value: attention starts a
    second phase; the dense before it and a flatten -> dense after it (one output row, taken row
    by row) do not.  The floor is at most the latency, at least the least floor of any split."""
    g = testing.encoder_graph()
    d = generate(g, parallelism=par)
    assert {n: d.phases[n] for n in ("embed", "q", "k", "v", "k_split")} == dict.fromkeys(("embed", "q", "k", "v", "k_split"), 0)
    assert {n: d.phases[n] for n in ("qk", "softmax", "av", "o", "ln2", "head")} == dict.fromkeys(("qk", "softmax", "av", "o", "ln2", "head"), 1)
    ii = {b["name"]: b["ii"] for b in d.blocks}
    first = max(ii[n] for n, k in d.phases.items() if k == 0)
    second = max(ii[n] for n, k in d.phases.items() if k == 1)
    assert d.phase_floor_cycles == first + second <= d.latency_cycles
    assert d.phase_floor_best_cycles <= d.phase_floor_cycles
    a = sum(n.macs(g) for n in g.nodes if d.phases.get(n.name) == 0)
    assert d.phase_floor_best_cycles == pytest.approx((a ** 0.5 + (d.macs - a) ** 0.5) ** 2 / d.multipliers)


def test_chain_floor():
    """The chain floor: one dense by hand (its II after the first row arrives, one row's work
    after the last); the encoder at every parallelism: no higher than the analytic latency
    (the head counts its flattened input's rows: a one-row tensor there would put it above),
    no lower than each phase's slowest block in turn (the first phase's barrier tensors
    come from its slowest blocks here), and the best split no higher than this one's or than
    the split in proportion to MACs, and here no lower than the barrier floor's best split."""
    from fabformer.rtl.generate import chain_floor
    g = testing.op_graph("dense", tokens=4)
    d = generate(g, parallelism=1)
    (ii,) = [b["ii"] for b in d.blocks]
    first, last = d._in_rows[d.in_tensor]
    assert d.chain_floor_cycles == max(last + ii / 4, first + ii) < d.latency_cycles
    g = testing.encoder_graph()
    for par in (None, 1, 2, 4, 8):
        d = generate(g, parallelism=par)
        assert d.phase_floor_cycles <= d.chain_floor_cycles <= d.latency_cycles
        assert d.chain_floor_best_cycles <= d.chain_floor_cycles + 1e-6
        macs = {n.name: n.macs(g) for n in d._nodes}
        share = {k: v * d.multipliers / d.macs for k, v in macs.items() if v}
        prop = {**{b["name"]: b["ii"] for b in d.blocks}, **{k: macs[k] / m for k, m in share.items()}}
        assert d.chain_floor_best_cycles <= chain_floor(d, prop) + 1e-6
        assert d.chain_floor_best_cycles >= d.phase_floor_best_cycles - 1e-6


def test_latency_search_ends_at_a_local_minimum(capsys):
    """bench/latency.py --search: each start's line names a setting whose printed ratio is the
    design's own (chain floor or latency over the MAC bound), and no single option step of any
    node lowers it."""
    import importlib.util
    import json as _json
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("latency_bench", Path(__file__).resolve().parent.parent / "bench" / "latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    g = testing.classifier_graph()
    opts, rows = bench.setting_options(g)
    choices = {**opts, **rows}
    for objective in ("chain", "latency"):
        bench.search(g, objective, starts=1, seed=0)
        lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ") and ln.endswith("} |")]
        assert len(lines) == 3
        for ln in lines:
            cells = [c.strip() for c in ln.strip("|").split("|")]
            setting = _json.loads(cells[-1])

            def ratio(s):
                d = generate(g, parallelism=s)
                return (d.chain_floor_cycles if objective == "chain" else d.latency_cycles) / d.mac_bound_cycles

            r = ratio(setting)
            assert f"{r:.3f}" == cells[4]
            for k, vs in choices.items():
                i = vs.index(setting[k])
                for j in (i - 1, i + 1):
                    if 0 <= j < len(vs):
                        assert ratio({**setting, k: vs[j]}) >= r - 1e-9


def test_saturate_equals_clip_exhaustively():
    # the bit-test saturation every requantizer uses equals clip(v, min, max) of the range, for
    # every value of every small signed/unsigned input width into every small signed/unsigned range
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator
    from fabformer.rtl.arith import clip, saturate
    checked = 0
    for W in range(1, 7):
        for sg in (False, True):
            for w in range(1, 6):
                for to_signed in (False, True):
                    m = Module()
                    v = Signal(signed(W) if sg else unsigned(W))
                    lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if to_signed else (0, (1 << w) - 1)
                    a, b = Signal(signed(max(W, w) + 2)), Signal(signed(max(W, w) + 2))
                    m.d.comb += [a.eq(saturate(v, w, to_signed)), b.eq(clip(v, lo, hi))]
                    vals = range(-(1 << (W - 1)), 1 << (W - 1)) if sg else range(1 << W)
                    bad = []

                    async def tb(ctx, vals=vals, v=v, a=a, b=b, bad=bad):
                        for x in vals:
                            ctx.set(v, x)
                            if ctx.get(a) != ctx.get(b):
                                bad.append((x, ctx.get(a), ctx.get(b)))
                    sim = Simulator(m)
                    sim.add_testbench(tb)
                    sim.run()
                    assert not bad, (W, sg, w, to_signed, bad[:3])
                    checked += len(vals)
    assert checked == 2520


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_row_fifo_behaves_as_sync_fifo_buffered(depth):
    # the fork's queue (its storage written every cycle, no write enable) against amaranth's
    # SyncFIFOBuffered, cycle by cycle under random writes and reads: the same ready flags, level and rows
    import random
    from amaranth.hdl import Module
    from amaranth.lib.fifo import SyncFIFOBuffered
    from amaranth.sim import Simulator
    from fabformer.rtl.blocks import RowFifo
    m = Module()
    a, b = RowFifo(width=8, depth=depth), SyncFIFOBuffered(width=8, depth=depth)
    m.submodules.a, m.submodules.b = a, b
    rnd = random.Random(depth)
    seen = {"cycles": 0, "reads": 0, "full": 0}

    async def tb(ctx):
        for _ in range(600):
            we, re, d = rnd.random() < 0.6, rnd.random() < 0.5, rnd.randrange(256)
            for f in (a, b):
                ctx.set(f.w_en, we)
                ctx.set(f.r_en, re)
                ctx.set(f.w_data, d)
            got = [(ctx.get(f.w_rdy), ctx.get(f.r_rdy), ctx.get(f.level)) for f in (a, b)]
            assert got[0] == got[1], got
            if got[0][1]:
                assert ctx.get(a.r_data) == ctx.get(b.r_data)
                seen["reads"] += re
            seen["full"] += not got[0][0]
            seen["cycles"] += 1
            await ctx.tick()
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen["cycles"] == 600 and seen["reads"] > 100 and seen["full"] > 10
