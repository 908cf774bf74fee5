"""The hardware-vs-software report (fabformer.apps.report, ``fabformer report``)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fabformer import FabformerError
from fabformer.apps import report, testing
from fabformer.apps.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graph():
    return testing.encoder_graph(seed=3)


def _fake_sim(monkeypatch, calls):
    """Stand-in for fabformer.sim.run (Verilator takes minutes): returns the golden outputs, so this
    tests the report's plumbing of the rtl path, not the hardware (tests/test_sim*.py do that)."""
    sim = pytest.importorskip("fabformer.sim")

    def run(design, x, simulator="verilator"):
        calls.append((simulator, len(x)))
        return SimpleNamespace(outputs=design.graph.predict(x), latency_cycles=design.latency_cycles + 1,
                               ii_cycles=design.ii_cycles, mismatches=0, cycles=1000, wall_s=0.1)
    monkeypatch.setattr(sim, "run", run, raising=False)


def _fake_gpu(monkeypatch):
    """The GPU back end's code path (Backend.predict through the array API) on NumPy."""
    real = report.backend

    def backend(device):
        be = real("cpu")
        if device == "gpu":
            be.device, be.name = "gpu", "fake GPU (NumPy)"
        return be
    monkeypatch.setattr(report, "backend", backend)


@pytest.fixture(scope="module")
def full(graph, tmp_path_factory):
    """One report on 40 digits samples with every path that runs here (csim compiles once)."""
    mp = pytest.MonkeyPatch()
    calls = []
    try:
        _fake_sim(mp, calls)
        _fake_gpu(mp)
        out = tmp_path_factory.mktemp("rep") / "report"
        r = report.make_report(graph, out, samples=40, device="gpu", rtl_samples=7, min_seconds=0.01,
                               big_batch=32, board={"board": "testboard", "fmax_mhz": 50.0,
                                                    "resources": {"lut": 1234, "ff": 567, "dsp": 8, "bram": 2}})
    finally:
        mp.undo()
    return r, out, calls


def _pair(r, a, b):
    (row,) = [x for x in r["agreement"] if {x["a"], x["b"]} == {a, b}]
    return row


def test_files_and_json_fields(full):
    r, out, _ = full
    for f in ("report.md", "report.html", "report.json", "accuracy.png", "latency.png", "layer_error.png",
              "bit_sweep.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["html"] == str(out / "report.html")
    assert set(on_disk["paths"]) == {"keras", "float", "golden", "float_gpu", "golden_gpu", "csim", "rtl"}
    for row in on_disk["agreement"]:
        assert {"a", "b", "argmax", "max_abs_dlogit", "mean_abs_dlogit"} <= set(row)
    assert on_disk["paths"]["keras"]["status"].startswith("unavailable: no Keras model")
    assert on_disk["paths"]["keras"]["accuracy"] is None


def test_accuracy_matches_the_golden_model(full, graph):
    from fabformer.apps.data import digits
    r, _, _ = full
    d = digits()
    want = float(np.mean(np.argmax(graph.predict(d.x_test[:40]), -1) == d.y_test[:40]))
    assert r["paths"]["golden"]["accuracy"] == want
    assert r["paths"]["golden"]["samples"] == 40


def test_hardware_paths_agree_bit_for_bit(full):
    r, _, calls = full
    if r["paths"]["csim"]["status"] != "ok":
        pytest.skip(r["paths"]["csim"]["status"])
    for a, b in (("golden", "csim"), ("golden", "golden_gpu"), ("golden", "rtl")):
        row = _pair(r, a, b)
        assert row["argmax"] == 1.0 and row["max_abs_dlogit"] == 0.0 and row["bit_exact"], row
    assert _pair(r, "golden", "rtl")["samples"] == 7 and calls == [("verilator", 7)]
    assert r["gpu_bit_exact"] is True
    # float vs golden do differ: the table is measured, not assumed
    assert _pair(r, "float", "golden")["max_abs_dlogit"] > 0


def test_fpga_figures_and_size(full, graph):
    r, _, _ = full
    f = r["fpga"]
    assert f["cycles_from"].startswith("RTL simulation")
    assert f["clock_mhz"] == 50.0 and f["latency_s"] == pytest.approx(f["latency_cycles"] / 50e6)
    assert f["samples_per_s"] == pytest.approx(50e6 / f["ii_cycles"])
    assert r["size"]["params"] == graph.weight_stats()["params"] and r["size"]["lut"] == 1234
    for name in ("float", "golden", "float_gpu", "golden_gpu"):
        t = r["paths"][name]["timing"]
        assert t["batch1"]["batch"] == 1 and t["large"]["batch"] == 32 and t["large"]["samples_per_s"] > 0


def test_layer_trace_and_sweep(full, graph):
    r, _, _ = full
    assert [x["layer"] for x in r["layers"]] == [n.name for n in graph.nodes]
    assert all(x["max_abs_err"] >= x["mean_abs_err"] >= 0 for x in r["layers"])
    assert [x["bits"] for x in r["sweep"]["rows"]] == list(report.SWEEP_BITS)
    assert "re-quantized" in r["sweep"]["method"]


def test_markdown_and_html_show_tables_and_inlined_images(full):
    r, out, _ = full
    md = (out / "report.md").read_text()
    assert "## Agreement" in md and "| golden | csim |" in md
    page = (out / "report.html").read_text()
    assert page.count("<table") == 6 and page.count('src="data:image/png;base64,') == 4
    assert "http://" not in page and "https://" not in page


def test_agreement_numbers():
    a = report.PathResult("golden", outputs=np.array([[0.0, 1.0], [2.0, 0.5], [0.0, 0.0]]))
    b = report.PathResult("csim", outputs=np.array([[0.0, 1.25], [0.0, 0.5]]))
    (row,) = report.agreement({"golden": a, "csim": b})
    assert row["samples"] == 2 and row["argmax"] == 0.5
    assert row["max_abs_dlogit"] == 2.0 and row["mean_abs_dlogit"] == pytest.approx(2.25 / 4)
    assert not row["bit_exact"]


def test_requantized_weights_are_narrower_and_valid(graph):
    g4 = report.requantize_weights(graph, 4)
    dense = [n for n in g4.nodes if n.kind == "dense"]
    assert dense and all(n.weight_type.width == 4 for n in dense)
    assert all(abs(int(n.weight.max())) <= 7 and int(n.weight.min()) >= -8 for n in dense)
    x = testing.random_inputs(graph, 5)
    assert not np.array_equal(g4.predict(x), graph.predict(x))
    from fabformer import requant
    assert report.requantize_weights is requant.requantize_weights  # one rule for the report and explore


def test_cpu_backend_is_the_array_api_path(graph):
    be = report.backend("cpu")
    x = testing.random_inputs(graph, 6)
    y, env = be.predict(graph, x, trace=True)
    assert np.array_equal(y, graph.predict(x))
    assert set(env) >= {n.output for n in graph.nodes}
    assert np.array_equal(be.predict(graph, x, mode="float"), graph.predict(x, mode="float"))


def test_device_gpu_without_gpu_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "gpu_unavailable_reason", lambda: "CuPy is not installed")
    with pytest.raises(FabformerError, match=r"--device gpu: no usable GPU \(CuPy is not installed\); use --device cpu"):
        report.make_report(testing.encoder_graph(), tmp_path / "r", samples=5, device="gpu")
    assert not (tmp_path / "r").exists()
    with pytest.raises(FabformerError, match="device must be one of cpu, gpu, not 'tpu'"):
        report.backend("tpu")


def test_unknown_path_is_rejected(graph):
    with pytest.raises(FabformerError, match=r"unknown report path\(s\) gold; valid: keras, pytorch, float, golden"):
        report.collect(graph, np.zeros((2, 8, 8)), np.zeros(2), paths=["gold"])


def test_cli_json(tmp_path, capsys, graph):
    gpath = graph.save(tmp_path / "g.json")
    rc = main(["report", str(gpath), "--samples", "12", "--paths", "float,golden", "--no-sweep",
               "-o", str(tmp_path / "out"), "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["paths"]) == {"float", "golden"} and r["html"].endswith("report.html")
    assert r["agreement"][0]["a"] == "float" and r["agreement"][0]["b"] == "golden"
    assert "sweep" not in r


def test_cli_gpu_error_message(tmp_path, capsys, graph, monkeypatch):
    monkeypatch.setattr(report, "gpu_unavailable_reason", lambda: "CUDA reports 0 devices")
    gpath = graph.save(tmp_path / "g.json")
    rc = main(["report", str(gpath), "--device", "gpu", "-o", str(tmp_path / "out")])
    assert rc == 2
    assert "no usable GPU (CUDA reports 0 devices); use --device cpu" in capsys.readouterr().err


def _check_html():
    spec = importlib.util.spec_from_file_location("check_html", ROOT / "bench" / "check_html.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed")
def test_html_loads_in_headless_chromium(full, tmp_path):
    _, out, _ = full
    chk = _check_html()
    res = chk.check(out / "report.html")
    assert res["ok"], res["problems"]
    assert res["tables"] == 6 and len(res["images"]) == 4 and all(i["width"] > 100 for i in res["images"])
    # the check can fail: a page whose image does not decode
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head></head><body><table><tbody><tr><td>1</td></tr></tbody></table>'
                   '<img alt="x" src="data:image/png;base64,AAAA"></body></html>')
    res = chk.check(bad)
    assert not res["ok"] and "image x did not decode" in res["problems"]
