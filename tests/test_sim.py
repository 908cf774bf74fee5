"""RTL simulation in cocotb against golden: every op kind (Verilator and Icarus, random
stalls on both sides), the whole example model, and the matmul-engine parallelism sweep.

Builds are few on purpose (Verilator compile time dominates): one design set holds all
op graphs and the sweep designs, so one Verilator and one Icarus build serve them all.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from fabformer import FabformerError
from fabformer.apps import testing
from fabformer.rtl import DesignSet, generate
from fabformer.rtl.blocks import mac_depth
from fabformer.rtl.sweep import dense_graph, flat_dense_graph
from fabformer.sim import run, run_many

ROOT = Path(__file__).resolve().parent.parent
KINDS = [k for k in testing.OP_KINDS if k != "quantize"]
SWEEP = [1, 2, 4, 8, 16]
MATMUL_PAR = [1, 2, 8, 16]  # (lanes, products) = (1, 1), (2, 1), (4, 2), (4, 4) for 4x4 heads
FLAT_PAR = [1, 12]  # flatten -> dense, rows chained: one lane / 12 multipliers (one step a row)
# multipliers built in logic beyond a DSP budget: (graph, parallelism, dsps)
LOGIC = [("dense", 4, 1), ("matmul", 8, 3), ("flat_dense", 12, 0)]
LANES = [("layernorm", 2), ("layernorm", 8), ("softmax", 2), ("softmax", 4)]  # row functions' lanes


def _logic_graph(which):
    return {"dense": lambda: dense_graph(16, 16, rows=16), "matmul": lambda: testing.op_graph("matmul"),
            "flat_dense": flat_dense_graph}[which]()


@pytest.fixture(scope="module")
def design_set():
    designs = [generate(testing.op_graph(k)) for k in KINDS]
    designs += [generate(dense_graph(16, 16, rows=16), parallelism=p) for p in SWEEP]
    designs += [generate(testing.op_graph("matmul"), parallelism=p) for p in MATMUL_PAR]
    designs += [generate(flat_dense_graph(), parallelism=p) for p in FLAT_PAR]
    designs += [generate(_logic_graph(w), parallelism=p, dsps=d) for w, p, d in LOGIC]
    designs += [generate(testing.op_graph(k), parallelism={"op": lanes}) for k, lanes in LANES]
    return DesignSet(designs, name="rtl_tests")


def _pairs(ds, op_samples, sweep_samples):
    n, s = len(KINDS), len(SWEEP)
    pairs = [(m, testing.random_inputs(m.graph, op_samples, seed=i)) for i, m in enumerate(ds.members[:n])]
    pairs += [(m, testing.random_inputs(m.graph, sweep_samples, seed=99)) for m in ds.members[n:n + s]]
    pairs += [(m, testing.random_inputs(m.graph, op_samples, seed=7)) for m in ds.members[n + s:]]
    return pairs


@pytest.fixture(scope="module")
def verilator_results(design_set):
    return run_many(_pairs(design_set, 20, 2), simulator="verilator")


@pytest.fixture(scope="module")
def icarus_results(design_set):
    pairs = _pairs(design_set, 3, 0)
    return run_many(pairs[:len(KINDS)] + pairs[-len(LANES):], simulator="icarus")


def _check_op(kind, member, r):
    assert r.mismatches == 0, "\n".join(r.mismatch_report[:10])
    assert r.bit_exact
    np.testing.assert_array_equal(r.raw, r.expected_raw)
    assert r.latency_cycles == member.latency_cycles, "analytic latency formula"
    # double-buffered blocks and analytically sized fork FIFOs: the design repeats at the
    # II of its slowest block, which design.ii_cycles states
    assert r.ii_cycles == member.ii_cycles, "analytic II formula"


@pytest.mark.parametrize("kind", KINDS)
def test_op_kind_verilator(kind, design_set, verilator_results):
    i = KINDS.index(kind)
    _check_op(kind, design_set.members[i], verilator_results[i])
    assert verilator_results[i].samples == 20


@pytest.mark.parametrize("kind", KINDS)
def test_op_kind_icarus(kind, design_set, icarus_results):
    i = KINDS.index(kind)
    _check_op(kind, design_set.members[i], icarus_results[i])


@pytest.mark.parametrize("p", SWEEP)
def test_parallelism_sweep(p, design_set, verilator_results):
    """16 rows x (16x16) dense: cycles within 10% of MACs/multipliers plus the fixed depth."""
    i = len(KINDS) + SWEEP.index(p)
    m, r = design_set.members[i], verilator_results[i]
    assert r.bit_exact
    assert m.multipliers == p
    bound = m.macs / m.multipliers
    depth = 1 + mac_depth(1)  # the engine's pipeline and its output register
    assert r.latency_cycles == bound + depth
    assert abs(r.latency_cycles - (bound + depth)) <= 0.1 * bound, (r.latency_cycles, bound)
    assert abs(r.ii_cycles - bound) <= 0.1 * bound, (r.ii_cycles, bound)


@pytest.mark.parametrize("p", MATMUL_PAR)
def test_matmul_parallelism(p, design_set, verilator_results):
    """Both matmul forms (b transposed and not) with their operand memories split over
    lanes or products: bit-exact, latency and II as stated."""
    i = len(KINDS) + len(SWEEP) + MATMUL_PAR.index(p)
    m = design_set.members[i]
    _check_op("matmul", m, verilator_results[i])
    assert m.multipliers == 2 * min(p, 16)


@pytest.mark.parametrize("p", FLAT_PAR)
def test_flatten_dense_takes_rows_as_they_come(p, design_set, verilator_results):
    """A dense over a flattened tensor works on each input row as it arrives (the flatten is a
    wire): bit-exact under stalls; the output leaves one pipeline depth after the last row's
    work, not after a whole-tensor buffer and the whole product."""
    i = len(KINDS) + len(SWEEP) + len(MATMUL_PAR) + FLAT_PAR.index(p)
    m = design_set.members[i]
    _check_op("dense", m, verilator_results[i])
    kinds = [b["kind"] for b in m.blocks]
    assert kinds == ["flatten", "dense"] and m.blocks[0]["latency"] == 3  # input rows 0..3 pass through
    steps = 8 * 6 // m.multipliers  # one row's share: 8 inputs x 6 outputs
    assert m.latency_cycles == 4 * steps + 1 + mac_depth(1 if p == 1 else 2)


@pytest.mark.parametrize("which, p, dsps", LOGIC)
def test_multipliers_beyond_the_dsps_built_in_logic(which, p, dsps, design_set, verilator_results):
    """``generate(..., dsps=N)``: the engines' multipliers beyond N are built in logic (dense,
    both matmuls of the matmul graph, a row-chained flatten -> dense with none on DSPs):
    bit-exact under stalls, with the cycles of the same design on DSPs."""
    i = len(KINDS) + len(SWEEP) + len(MATMUL_PAR) + len(FLAT_PAR) + [w for w, _, _ in LOGIC].index(which)
    m = design_set.members[i]
    _check_op("matmul" if which == "matmul" else "dense", m, verilator_results[i])
    on_dsps = generate(_logic_graph(which), parallelism=p)
    assert sum(m.logic.values()) == on_dsps.multipliers - dsps > 0
    assert (m.latency_cycles, m.ii_cycles, m.multipliers) == (on_dsps.latency_cycles, on_dsps.ii_cycles,
                                                              on_dsps.multipliers)


@pytest.mark.parametrize("kind, lanes", LANES)
def test_row_function_lanes(kind, lanes, design_set, verilator_results, icarus_results):
    """Layer norm and softmax with several elements a cycle (each lane its multipliers): bit-exact
    under stalls on both simulators, the analytic latency and II as simulated, the II lower than one
    lane's where the row time binds it."""
    k = LANES.index((kind, lanes))
    i = len(design_set.members) - len(LANES) + k
    m = design_set.members[i]
    _check_op(kind, m, verilator_results[i])
    _check_op(kind, m, icarus_results[len(KINDS) + k])
    one = generate(testing.op_graph(kind))
    own = {"layernorm": 3, "softmax": 1}[kind]
    assert m.lanes == {"op": lanes} and m.multipliers == one.multipliers + own * (lanes - 1)
    assert m.latency_cycles < one.latency_cycles
    if kind == "layernorm":
        assert m.ii_cycles < one.ii_cycles


def _example():
    model = ROOT / "examples" / "digits" / "model_q8.h5"
    if model.is_file():
        try:
            import fabformer
            from fabformer.apps.data import digits
            from fabformer.frontend import load_keras_model
            d = digits()
            g = fabformer.convert(load_keras_model(model), calibration=d.x_train)
            return g, d.x_test[:200]
        except ImportError:
            pass
    g = testing.encoder_graph()
    return g, testing.random_inputs(g, 200, seed=3)


@pytest.mark.parametrize("which", ["example", "encoder", "encoder_lanes_logic"])
def test_whole_model_verilator(which):
    """The digits example (200 samples) and the random-weight test encoder, once more with its
    row functions in lanes and 54 of its multipliers in logic: bit-exact, the measured latency and
    II equal the analytic ones (II = the slowest block's II)."""
    if which == "example":
        g, x = _example()
    else:
        g = testing.encoder_graph()
        x = testing.random_inputs(g, 20, seed=5)
    if which == "encoder_lanes_logic":
        d = generate(g, parallelism={"ln1": 2, "ln2": 4, "softmax": 2}, dsps=100)
        assert d.lanes == {"ln1": 2, "ln2": 4, "softmax": 2} and sum(d.logic.values()) == 54
    else:
        d = generate(g)
    r = run(d, x, simulator="verilator", timing_samples=6)
    assert r.samples == len(x) and (which != "example" or r.samples >= 200)
    assert r.mismatches == 0, "\n".join(r.mismatch_report[:10])
    np.testing.assert_array_equal(r.outputs, g.predict(x))
    assert r.latency_cycles == d.latency_cycles
    assert r.ii_cycles == d.ii_cycles == max(b["ii"] for b in d.blocks)
    # whole-model latency beside its multiplier bound
    assert d.latency_cycles >= d.mac_bound_cycles


def test_sim_errors(design_set):
    with pytest.raises(FabformerError, match="unknown simulator 'modelsim'; valid: verilator, icarus"):
        run(design_set.members[0], np.zeros((1, 4, 8)), simulator="modelsim")
    with pytest.raises(FabformerError, match="expects shape"):
        run(design_set.members[0], np.zeros((1, 3, 3)), simulator="icarus")


def test_cli_sim_json(tmp_path, capsys):
    from fabformer.apps.cli import main
    gpath = testing.op_graph("relu").save(tmp_path / "relu.graph.json")
    rc = main(["sim", str(gpath), "-o", str(tmp_path / "out"), "--simulator", "icarus", "--samples", "4",
               "--parallelism", "2", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0
    for key in ("samples", "bit_exact", "mismatches", "latency_cycles", "ii_cycles", "multipliers",
                "mac_bound_cycles"):
        assert key in res
    assert res["samples"] == 4 and res["bit_exact"] and res["mismatches"] == 0
    assert (tmp_path / "out" / "top.v").is_file() and (tmp_path / "out" / "sim.json").is_file()
    rc = main(["sim", str(gpath), "-o", str(tmp_path / "out2"), "--parallelism", "x=y=", "--json"])
    assert rc == 2
    assert "cannot parse --parallelism" in capsys.readouterr().err


def test_scoreboard_reports_tensor_index_expected_actual():
    from fabformer.fixed import FixedType
    from fabformer.sim.scoreboard import Scoreboard, pack_rows, unpack_rows
    t = FixedType(6, 2)
    exp = np.array([[[1, -2, 3], [-32, 31, 0]], [[5, 6, -7], [8, 9, 10]]])  # 2 samples x [2, 3]
    rows = pack_rows(exp, t, 3)
    np.testing.assert_array_equal(unpack_rows(rows, t, 3).reshape(exp.shape), exp)
    sb = Scoreboard("y", rows, t, 3, 2, (2, 3))
    bad = exp.copy()
    bad[1, 1, 2] = -1
    for r in pack_rows(bad, t, 3):
        sb.check(r)
    assert sb.complete and len(sb.mismatches) == 1
    assert str(sb.mismatches[0]) == "tensor 'y' sample 1 index (1, 2): expected 10, got -1"


# -- the Verilator stream mode (fabformer.sim.bulk): whole data sets, checked in the simulator
@pytest.fixture(scope="module")
def stream_results(design_set):
    from fabformer.sim import bulk
    out = {}
    for m in design_set.members[:len(KINDS)]:
        x = testing.random_inputs(m.graph, 40, seed=m.select)
        out[m.graph.name] = (bulk.run(m, x), bulk.run(m, x, valid_prob=0.6, ready_prob=0.5, seed=m.select))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_stream_every_op_bit_exact(stream_results, design_set, kind):
    """Every op kind through the stream testbench (one build of the design set, widest
    payloads above 64 bits): full rate with the analytic latency and II, and under stalls."""
    k = KINDS.index(kind)
    m = design_set.members[k]
    full, stalled = stream_results[m.graph.name]
    for r in (full, stalled):
        assert r.samples == 40 and r.bit_exact and r.mismatches == 0, r.mismatch_report[:3]
        np.testing.assert_array_equal(r.raw, r.expected_raw)
    assert full.latency_cycles == m.latency_cycles
    assert full.ii_cycles == pytest.approx(m.ii_cycles, abs=0.5)


def test_stream_stalls_happen(stream_results):
    """The stalled runs really were stalled (more cycles for most designs, never fewer)."""
    slower = [s.cycles > f.cycles for f, s in stream_results.values()]
    assert all(s.cycles >= f.cycles for f, s in stream_results.values())
    assert sum(slower) >= len(slower) // 2


def test_stream_reports_mismatches_found_in_the_simulator(design_set, monkeypatch):
    """A wrong expectation (one value changed) fails inside the simulator, with the tensor,
    sample, index, expected and actual value; the build is a cache hit (no recompilation)."""
    from fabformer.sim import bulk
    m = design_set.members[KINDS.index("dense")]
    exe = bulk.build(m)
    mtime = exe.stat().st_mtime
    real = bulk.golden_io

    def wrong(design, x):
        xin, y = real(design, x)
        y = y.copy()
        y[2, 1, 3] += 1
        return xin, y
    monkeypatch.setattr(bulk, "golden_io", wrong)
    r = bulk.run(m, testing.random_inputs(m.graph, 5))
    assert r.mismatches == 1 and not r.bit_exact
    assert r.mismatch_report[0].startswith(f"tensor {m.out_tensor!r} sample 2 index (1, 3): expected ")
    assert bulk.build(m) == exe and exe.stat().st_mtime == mtime
    with pytest.raises(FabformerError, match=r"valid_prob must be in \(0, 1\], not 0"):
        bulk.run(m, testing.random_inputs(m.graph, 5), valid_prob=0)


def test_cli_sim_stream(tmp_path, capsys):
    from fabformer.apps.cli import main
    gpath = testing.classifier_graph().save(tmp_path / "c.graph.json")
    rc = main(["sim", str(gpath), "-o", str(tmp_path / "out"), "--mode", "stream", "--samples", "300", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["mode"] == "stream" and res["samples"] == 300 and res["bit_exact"]
    assert res["latency_cycles"] == res["latency_cycles_analytic"] and res["ii_cycles"] == res["ii_cycles_analytic"]
    rc = main(["sim", str(gpath), "-o", str(tmp_path / "o2"), "--samples", "all"])
    assert rc == 2 and "--samples all needs a data set" in capsys.readouterr().err
    rc = main(["sim", str(gpath), "-o", str(tmp_path / "o3"), "--mode", "stream", "--simulator", "icarus"])
    assert rc == 2 and "runs on Verilator only" in capsys.readouterr().err


def test_the_simulation_cache_keeps_the_most_recently_used_builds(tmp_path, monkeypatch):
    """runner.prune_cache: beyond ``keep`` builds, the least recently used (their stamps' times)
    go, except those used within the grace time; folders without a stamp are never touched."""
    import os
    import time
    from fabformer.errors import FabformerError
    from fabformer.sim.runner import prune_cache
    now = time.time()
    for name, age in (("a", 60), ("b", 120), ("c", 1800), ("d", 7200), ("e", 14400)):
        d = tmp_path / f"model-verilator-{name}"
        d.mkdir()
        (d / "fabformer.stamp").write_text("digest")
        os.utime(d / "fabformer.stamp", (now - age, now - age))
    (tmp_path / "verilator-runtime-abc").mkdir()  # shared objects: no stamp, never removed
    removed = prune_cache(tmp_path, keep=1)  # b and c are beyond it but used within the hour
    assert [d.name for d in removed] == ["model-verilator-d", "model-verilator-e"]
    assert sorted(d.name for d in tmp_path.iterdir()) == [
        "model-verilator-a", "model-verilator-b", "model-verilator-c", "verilator-runtime-abc"]
    monkeypatch.setenv("FABFORMER_SIM_CACHE_BUILDS", "1")
    assert [d.name for d in prune_cache(tmp_path, grace_s=0)] == ["model-verilator-b", "model-verilator-c"]
    monkeypatch.setenv("FABFORMER_SIM_CACHE_BUILDS", "many")
    with pytest.raises(FabformerError, match="FABFORMER_SIM_CACHE_BUILDS='many': give a whole number"):
        prune_cache(tmp_path)


def test_a_build_waits_for_another_process_building_the_same_design(tmp_path):
    """runner.build_lock: while one process checks and builds a design's folder, another that
    needs the same folder waits (parallel test workers, two sweeps), then finds its stamp."""
    import threading
    import time
    from fabformer.sim.runner import build_lock
    build_dir = tmp_path / "model-verilator-0123"
    order, held = [], threading.Event()

    def first():
        with build_lock(build_dir):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    with build_lock(build_dir):
        order.append("second in")
    t.join()
    assert order == ["first done", "second in"]
    assert (build_dir / "fabformer.lock").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [build_dir.name]
