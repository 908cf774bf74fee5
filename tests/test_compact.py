"""The compact architecture: compiler, program semantics and RTL simulation against golden.

The program's semantics (``Program.execute``) equal golden on every op kind with SAT and WRAP
output types; the engine simulates bit-exact with random stalls in Verilator and Icarus on two
chained graphs that hold every op kind (one with saturating, one with wrapping types), and the
simulated latency and II equal the analytic ones.  One build per simulator serves both graphs.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from fabformer import FabformerError, ir, registry, tables, vectors
from fabformer.apps import testing
from fabformer.fixed import FixedType, Overflow, Rounding
from fabformer.rtl import ARCHITECTURES, DesignSet, generate
from fabformer.rtl.compact import compile_graph
from fabformer.sim import run_many

KINDS = [k for k in registry.kinds_of("rtl.compact") if k != "quantize"]  # the kinds the compact engine runs



def _dense_maker(rng):
    """dense(name, x, out, k, n): a Dense node of random 8-bit weights and 12-bit biases from ``rng``."""
    return lambda nm, x, o, k, n: ir.Dense(nm, (x,), o, weight=rng.integers(-128, 128, (k, n)),
                                           weight_type=FixedType(8, 6), bias=rng.integers(-200, 200, n),
                                           bias_type=FixedType(12, 8))

def _t(width, frac, ov, signed=True, rnd=Rounding.RND):
    return FixedType(width, frac, signed, rnd, ov)


def chain_graph(overflow: Overflow, seed: int = 0, heads_width: int = 8, rnd=Rounding.RND) -> ir.Graph:
    """Every op kind after the quantize node in one graph, every output type with ``overflow``
    (narrow enough that it happens); ``heads_width`` 8 lets split/merge/flatten be views, 4 makes
    them copies."""
    rng = np.random.default_rng(seed)
    ov = overflow
    _t = lambda w, f, o, signed=True: FixedType(w, f, signed, rnd, o)  # noqa: E731  (every type rounds with rnd)
    T, H = 4, 2
    D = heads_width
    F = H * D
    g = ir.Graph(f"chain_{ov.value.lower()}_{D}" + ("" if rnd is Rounding.RND else f"_{rnd.value.lower()}"))
    g.add_input("x", (T, 8))
    g.add(ir.Quantize("quant", ("x",), "xq"), testing.IN_T)
    dense = _dense_maker(rng)
    g.add(dense("d1", "xq", "h", 8, F), _t(10, 5, ov))
    g.add(ir.SplitHeads("split", ("h",), "hs", heads=H), _t(10, 5, ov))
    g.add(ir.MatMul("qk", ("hs", "hs"), "s", transpose_b=True, scale=round(2 ** 12 / math.sqrt(D)), scale_frac=12),
          _t(10, 4, ov))
    g.add(ir.Softmax("sm", ("s",), "p", exp_table=tables.exp_table(4), recip_table=tables.recip_table()),
          _t(10, 9, ov, signed=False))
    g.add(ir.MatMul("av", ("p", "hs"), "c"), _t(10, 5, ov))
    g.add(ir.MergeHeads("merge", ("c",), "cm"), _t(10, 5, ov))
    g.add(ir.Add("res", ("h", "cm"), "r"), _t(8, 4, ov))
    g.add(ir.LayerNorm("ln", ("r",), "n", gamma=rng.integers(-500, 500, F), gamma_type=FixedType(10, 6),
                       beta=rng.integers(-300, 300, F), beta_type=FixedType(10, 6), eps=1,
                       invsqrt_table=tables.invsqrt_table(), norm_type=_t(16, 14, ov)), _t(10, 5, ov))
    g.add(ir.Relu("relu", ("n",), "nr"), _t(6, 4, ov, signed=False))
    g.add(ir.Lookup("gelu", ("r",), "rg", table=tables.function_table("gelu", _t(8, 4, ov), _t(10, 6, ov))),
          _t(10, 6, ov))
    g.add(ir.Requantize("rq", ("rg",), "rr"), _t(6, 3, ov))
    g.add(ir.Add("mix", ("rr", "nr"), "m"), _t(8, 4, ov))
    g.add(ir.GlobalAvgPool("pool", ("m",), "pl"), _t(10, 6, ov))  # scale 1: a plain sum
    g.add(ir.Flatten("flat", ("m",), "f"), _t(8, 4, ov))
    g.add(dense("head", "f", "y", T * F, 6), _t(12, 5, ov))
    g.add(ir.Relu("outr", ("y",), "o"), _t(9, 4, ov))
    g.outputs = ["o"]
    return g.verify()


def _chain_with_pool(overflow, heads_width=8, rnd=Rounding.RND):
    """The chain graph whose output also depends on the pool (a dense over it, added)."""
    g = chain_graph(overflow, heads_width=heads_width, rnd=rnd).edit()
    rng = np.random.default_rng(5)
    F = g.tensors["pl"].shape[0]
    g.add(ir.Dense("pd", ("pl",), "pdo", weight=rng.integers(-128, 128, (F, 6)), weight_type=FixedType(8, 6),
                   bias=rng.integers(-50, 50, 6), bias_type=FixedType(12, 8)), _t(9, 4, overflow, rnd=rnd))
    g.add(ir.Add("fin", ("o", "pdo"), "fo"), _t(9, 4, overflow, rnd=rnd))
    g.outputs = ["fo"]
    return g.verify()


def fusion_graph(seed: int = 1) -> ir.Graph:
    """The write-back fusions and their fallbacks: Q.K^T whose K is a dense's output only read
    (split into heads as a view) as the transposed operand (the dense writes it transposed); a
    dense + relu of the same scale, both saturating, the relu's range narrower (one saturation to
    [0, 255]); a dense + relu on wrapping types, and one whose relu changes the scale (separate
    relus)."""
    rng = np.random.default_rng(seed)
    T, H, D = 4, 2, 8
    F = H * D
    g = ir.Graph("fusions")
    g.add_input("x", (T, 8))
    g.add(ir.Quantize("quant", ("x",), "xq"), testing.IN_T)
    dense = _dense_maker(rng)
    sat, wrap = Overflow.SAT, Overflow.WRAP
    g.add(dense("dq", "xq", "q", 8, F), _t(10, 5, sat))
    g.add(dense("dk", "xq", "k", 8, F), _t(10, 4, sat))
    g.add(ir.SplitHeads("qsplit", ("q",), "qs", heads=H), _t(10, 5, sat))
    g.add(ir.SplitHeads("ksplit", ("k",), "ks", heads=H), _t(10, 4, sat))
    g.add(ir.MatMul("qk", ("qs", "ks"), "s", transpose_b=True, scale=round(2 ** 12 / math.sqrt(D)), scale_frac=12),
          _t(10, 4, sat))
    g.add(ir.Softmax("sm", ("s",), "p", exp_table=tables.exp_table(4), recip_table=tables.recip_table()),
          _t(10, 9, sat, signed=False))
    g.add(ir.MatMul("av", ("p", "qs"), "c"), _t(10, 5, sat))
    g.add(ir.MergeHeads("merge", ("c",), "cm"), _t(10, 5, sat))
    g.add(dense("f1", "cm", "a1", F, 2 * F), _t(10, 5, sat))
    g.add(ir.Relu("r1", ("a1",), "b1"), _t(8, 5, sat, signed=False))  # fused: [0, 255]
    g.add(dense("f2", "b1", "a2", 2 * F, F), _t(9, 5, wrap))
    g.add(ir.Relu("r2", ("a2",), "b2"), _t(8, 5, wrap))  # wrapping: separate
    g.add(dense("f3", "b2", "a3", F, F), _t(10, 5, sat))
    g.add(ir.Relu("r3", ("a3",), "b3"), _t(8, 4, sat, signed=False))  # the scale changes: separate
    g.add(dense("f4", "b3", "y", F, 6), _t(12, 5, sat))
    g.outputs = ["y"]
    return g.verify()


GRAPHS = {"sat": lambda: _chain_with_pool(Overflow.SAT), "wrap": lambda: _chain_with_pool(Overflow.WRAP),
          "sat_copies": lambda: _chain_with_pool(Overflow.SAT, heads_width=4),
          "ties_even": lambda: _chain_with_pool(Overflow.WRAP, rnd=Rounding.RND_CONV),
          "fusions": fusion_graph}


def test_chain_graph_has_every_op_kind():
    g = GRAPHS["sat"]()
    assert {n.kind for n in g.nodes} == set(registry.kinds_of("rtl.compact"))
    for kind in set(ir.OPS) - set(registry.kinds_of("rtl.compact")):  # the rest say why
        assert isinstance(registry.find(kind, "rtl.compact"), registry.Unsupported)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("overflow", [Overflow.SAT, Overflow.WRAP])
def test_program_semantics_equal_golden(kind, overflow):
    """The compiled program run in Python (the instruction semantics the engine implements)."""
    g = testing.op_graph(kind, overflow=overflow)
    p = compile_graph(g)
    x = testing.random_inputs(g, 30, seed=3)
    xin, yexp = vectors.golden_io(g, x)
    for i in range(len(x)):
        np.testing.assert_array_equal(p.execute(xin[i]), yexp[i])


@pytest.mark.parametrize("which", sorted(GRAPHS))
def test_program_semantics_chain(which):
    g = GRAPHS[which]()
    p = compile_graph(g)
    x = testing.random_inputs(g, 30, seed=4)
    xin, yexp = vectors.golden_io(g, x)
    assert np.count_nonzero(yexp) > 0
    for i in range(len(x)):
        np.testing.assert_array_equal(p.execute(xin[i]), yexp[i])


def test_views_and_copies():
    """Aligned heads are views (no instruction); unaligned ones are copies."""
    ops = lambda p: [i.op for i in p.instrs]
    aligned = compile_graph(GRAPHS["sat"]())
    unaligned = compile_graph(GRAPHS["sat_copies"]())
    assert "hs" in aligned.views and "c" in aligned.views and "f" in aligned.views
    assert ops(aligned).count("copy") == 1  # only the transposed operand of Q.K^T
    assert ops(unaligned).count("copy") == 3  # split, transpose, merge (the flattened rows are whole words)
    assert set(unaligned.views) == {"f"}


@pytest.mark.parametrize("lanes", [4, 8])
def test_write_back_fusions(lanes):
    """A dense writes its relu's output (one saturation) or Q.K^T's transposed operand itself when
    that equals golden; otherwise the relu and the transposed copy stay instructions."""
    p = compile_graph(GRAPHS["fusions"](), lanes)
    ins = {i.node: i for i in p.instrs if i.unit == "mac"}
    ops = [(i.op, i.node) for i in p.instrs]
    assert ("relu", "r1") not in ops and ins["f1"].f["rqlo"] == 0 and ins["f1"].f["rqhi"] == 255
    assert p.views["a1"] == ("b1", "fused") and ins["f1"].f["obase"] == p.places["b1"].base
    assert ("relu", "r2") in ops and ("relu", "r3") in ops  # wrapping types; a relu that changes the scale
    assert ins["f2"].f["rqlo"] == -256 and ins["f3"].f["rqhi"] == 511
    assert "copy" not in [i.op for i in p.instrs]  # K written transposed by its dense
    tmp = p.temps["qk"]
    assert ins["dk"].f["ocs"] == p.places[tmp].pitch and ins["dk"].f["osm"] == 1
    assert ins["dk"].f["obase"] == p.places[tmp].base and ins["dq"].f["ocs"] == 1
    # fallbacks: the chain graph's Q.K^T reads one split tensor as both operands (a copy transposes
    # it), its relus follow a layer norm or change the scale
    c = compile_graph(GRAPHS["sat"](), lanes)
    assert [i.op for i in c.instrs].count("copy") == 1 and [i.op for i in c.instrs].count("relu") == 2
    assert not c.fused_relu and not c.transposed


def test_memory_reuse_and_listing():
    p = compile_graph(testing.encoder_graph())
    total = sum(pl.size for t, pl in p.places.items() if t not in p.views) // p.L
    assert p.dm_words < total  # freed tensors' space is reused
    for t, pl in p.places.items():  # tensors live at the same time never overlap
        if t in p.views:
            continue
        for u, ql in p.places.items():
            if u == t or u in p.views:
                continue
            (s1, e1), (s2, e2) = p.lifetimes.get(t, (0, 0)), p.lifetimes.get(u, (0, 0))
            if max(s1, s2) <= min(e1, e2) and t in p.lifetimes and u in p.lifetimes:
                assert pl.base + pl.size <= ql.base or ql.base + ql.size <= pl.base, (t, u)
    text = generate(testing.encoder_graph(), arch="compact").listing()
    assert "mac  dense" in text and "row  softmax" in text and "MAC-array utilization" in text


def test_deterministic_verilog():
    g = testing.op_graph("softmax")
    assert generate(g, arch="compact").verilog() == generate(g, arch="compact").verilog()


def test_errors():
    g = testing.op_graph("dense")
    assert "compact" in ARCHITECTURES
    with pytest.raises(FabformerError, match=r"parallelism=4 is a dataflow setting \(valid: None\)"):
        generate(g, arch="compact", parallelism=4)
    with pytest.raises(FabformerError, match="compact lanes must be a power of two, not 3"):
        generate(g, arch="compact", lanes=3)
    with pytest.raises(FabformerError, match=r"unknown RTL architecture 'tiny'; valid: compact, dataflow"):
        generate(g, arch="tiny")


@pytest.fixture(scope="module")
def design_set():
    return DesignSet([generate(GRAPHS[k](), arch="compact", **OPTIONS.get(k, {})) for k in sorted(GRAPHS)],
                     name="compact_tests")


# three members with the multiplies in logic and the row unit's on the MAC lanes; two of them as the
# iCE40 UP5K build makes it (4 lanes, the other 4 DSPs for a row unit multiply)
OPTIONS = {"ties_even": {"row_multipliers": "lut"}, "wrap": {"row_multipliers": "lut", "lanes": 4, "dsps": 8},
           "fusions": {"row_multipliers": "lut", "lanes": 4, "dsps": 8}}


def _check(member, r):
    assert r.mismatches == 0, "\n".join(r.mismatch_report[:10])
    np.testing.assert_array_equal(r.raw, r.expected_raw)
    assert r.latency_cycles == member.latency_cycles, "analytic latency"
    assert r.ii_cycles == member.ii_cycles, "analytic II"


@pytest.mark.parametrize("simulator,samples", [("verilator", 25), ("icarus", 3)])
def test_engine_bit_exact(design_set, simulator, samples):
    pairs = [(m, testing.random_inputs(m.graph, samples, seed=11 + i)) for i, m in enumerate(design_set.members)]
    res = run_many(pairs, simulator=simulator, timing_samples=2)
    for (m, _), r in zip(pairs, res):
        _check(m, r)
        assert r.samples == samples


def test_short_rows_bit_exact():
    """Softmax over 1 and 2 tokens and layer norm over 2 features: pass 2 shorter than the per-row
    normalisation that runs beside its first issues, the next row's passes right behind it."""
    cases = [("softmax", {"tokens": 1}), ("softmax", {"tokens": 2}), ("layernorm", {"features": 2, "tokens": 3})]
    members = []
    for kind, kw in cases:
        g = testing.op_graph(kind, **kw).with_(name=f"short_{kind}_{'_'.join(str(v) for v in kw.values())}")
        members += [generate(g, arch="compact"), generate(g, arch="compact", row_multipliers="lut", lanes=4, dsps=8)]
    ds = DesignSet(members, name="compact_short_rows")
    pairs = [(m, testing.random_inputs(m.graph, 8, seed=21 + i)) for i, m in enumerate(ds.members)]
    for (m, _), r in zip(pairs, run_many(pairs, simulator="verilator", timing_samples=2)):
        _check(m, r)


def test_cli_sim_compact(tmp_path, capsys):
    import json
    from fabformer.apps.cli import main
    gpath = testing.op_graph("relu").save(tmp_path / "relu.graph.json")
    rc = main(["sim", str(gpath), "-o", str(tmp_path / "out"), "--simulator", "icarus", "--samples", "2",
               "--arch", "compact", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["arch"] == "compact" and res["bit_exact"] and res["samples"] == 2
    assert res["latency_cycles"] == res["latency_cycles_analytic"]
    assert "mac  " not in (tmp_path / "out" / "program.lst").read_text()  # relu: one row instruction
    assert "row  relu" in (tmp_path / "out" / "program.lst").read_text()


def test_build_arch_errors(tmp_path):
    from fabformer.boards.build import build_arch
    g = testing.op_graph("relu")
    with pytest.raises(FabformerError, match=r"unknown architecture 'tiny' for build; valid: auto, dataflow, compact"):
        build_arch(g, "icebreaker", tmp_path / "b", arch="tiny")
    with pytest.raises(FabformerError, match=r"--parallelism 2 is a dataflow setting"):
        build_arch(g, "icebreaker", tmp_path / "b", arch="compact", parallelism=2)



def test_dataflow_rounds_ties_to_even_in_every_block():
    """The same every-op chain with ties-to-even (QKeras) types through the dataflow architecture:
    the pipelined row functions' run-time shifts round like golden too."""
    g = GRAPHS["ties_even"]()
    d = generate(g)
    r = run_many([(d, testing.random_inputs(g, 6, seed=3))], simulator="icarus")[0]
    _check(d, r)


def test_build_auto_picks_compact_on_icebreaker(monkeypatch, tmp_path, capsys):
    """``fabformer build --board icebreaker`` (no --arch): when dataflow does not fit, the compact
    design is built and the report says why; on the UP5K (8 DSPs) it has 4 MAC lanes, the row
    unit's multiplies on the lanes and the other DSPs (the flow is stubbed: no synthesis)."""
    pytest.importorskip("fabformer.boards")
    import fabformer.boards.build as B
    from fabformer.apps.cli import main
    seen = []

    def fake_build(graph, board, out, *, design=None, **kw):
        seen.append(design)
        if design is None:
            err = FabformerError("the design does not fit icebreaker (iCE40UP5K) even at the smallest parallelism "
                                 "tried (2 multipliers): FF 9000 > 5280. needed/available: FF 9000/5280")
            err.attempts = [{}]
            raise err
        return {"board": board, "ok": True}

    monkeypatch.setattr(B, "build", fake_build)
    monkeypatch.setattr(B, "_write_report", lambda out, rep: None)
    monkeypatch.setattr(B, "report_markdown", lambda rep: "report")
    gpath = GRAPHS["sat"]().save(tmp_path / "g.graph.json")
    assert main(["build", str(gpath), "--board", "icebreaker", "-o", str(tmp_path / "b"), "--json"]) == 0
    cap = capsys.readouterr()
    assert "architecture auto: picked compact, because dataflow does not fit: the design does not fit icebreaker" \
        in cap.err
    out = cap.out  # --json: stdout is the report alone
    assert out.lstrip().startswith("{")
    d = seen[1]
    assert seen[0] is None and d.arch == "compact" and d.lanes == 4 and d.row_multipliers == "lut" and d.dsps == 8
    rep = json.loads(out[out.index("{"):])
    assert rep["arch"] == "compact" and rep["arch_note"].startswith("architecture auto: picked compact")


@pytest.mark.skipif(not (shutil.which("iverilog") or shutil.which("verilator")), reason="needs a simulator")
def test_uart_shell_reads_the_compact_output_it_holds(tmp_path):
    """Through the UART shell: the compact engine holds its output row until its next sample, so the
    shell sends it without an output memory; bit-exact, the shell's cycle count is the analytic latency."""
    pytest.importorskip("fabformer.boards")
    from fabformer.boards.shell import UARTShell
    from fabformer.boards.simshell import simulate_shell
    from fabformer.vectors import golden_io
    g = GRAPHS["sat"]()  # one output row
    d = generate(g, arch="compact", row_multipliers="lut", lanes=4, dsps=8)
    assert d.out_rows == 1 and UARTShell.for_design(d, divisor=4).holds_output
    x = testing.random_inputs(g, 3, seed=5)
    r = simulate_shell(d, g, x, tmp_path, divisor=4)
    _, yg = golden_io(g, x)
    np.testing.assert_array_equal(r["outputs"], yg.reshape(r["outputs"].shape))
    assert r["bit_exact"] and r["cycles"] == [d.latency_cycles] * 3
