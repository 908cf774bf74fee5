"""HLS backend: C-simulation (g++) equals the golden model bit for bit."""
from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fabformer import FabformerError
from fabformer.apps import testing
from fabformer.fixed import Overflow

hls = pytest.importorskip("fabformer.hls")
try:
    hls.ap_types_dir()
except FabformerError as e:  # pragma: no cover
    pytest.skip(str(e), allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
OVERFLOWS = [Overflow.SAT, Overflow.WRAP]


def _build_all(base, native):
    prjs = {}
    for kind in testing.OP_KINDS:
        for ov in OVERFLOWS:
            g = testing.op_graph(kind, overflow=ov)
            prjs[kind, ov] = hls.write(g, base / f"{kind}_{ov.value}", {"name": f"op_{kind}_{ov.value.lower()}"})
    g = testing.encoder_graph()
    prjs["encoder"] = hls.write(g, base / "encoder")
    hls.compile_together(list(prjs.values()), base / "build", native=native)
    return prjs


@pytest.fixture(scope="module", params=["native", "ap_types"])
def built(request, tmp_path_factory):
    """Every op graph (saturating and wrapping) and the encoder, compiled in one g++ run: on
    native integers (fabformer's C-simulation) and on the ap_int / ap_fixed types (synthesis)."""
    return _build_all(tmp_path_factory.mktemp("hls"), request.param == "native")


def _check(prj, x):
    g = prj.graph
    _, env = g.predict(x, trace=True)
    want = np.asarray(env[g.outputs[0]])
    got = prj.predict(x, raw=True)
    assert got.shape == want.shape
    bad = np.argwhere(got != want)
    assert len(bad) == 0, (f"{g.name}: {len(bad)} mismatching values; first at {tuple(bad[0])}: "
                           f"golden {want[tuple(bad[0])]}, C-sim {got[tuple(bad[0])]}")
    np.testing.assert_array_equal(prj.predict(x), g.predict(x))  # dequantized, same shape
    return got


@pytest.mark.parametrize("kind", testing.OP_KINDS)
def test_op_bit_exact(built, kind):
    x = testing.random_inputs(testing.op_graph(kind), 1000, seed=7)
    sat = _check(built[kind, Overflow.SAT], x)
    wrap = _check(built[kind, Overflow.WRAP], x)
    if kind in ("matmul", "add", "relu", "requantize"):
        # the inputs overflow these outputs: saturation and wrap must both have happened
        assert np.any(sat != wrap)


def test_encoder_bit_exact(built):
    prj = built["encoder"]
    for scale in (1.0, 4.0):
        _check(prj, testing.random_inputs(prj.graph, 300, seed=3, scale=scale))


def test_two_writes_byte_identical(tmp_path):
    g = testing.encoder_graph(seed=1)
    a = hls.write(g, tmp_path / "a", {"reuse_factor": 2, "layer_reuse": {"head": 4}})
    b = hls.write(g, tmp_path / "b", {"reuse_factor": 2, "layer_reuse": {"head": 4}})
    files = sorted(p.relative_to(a.path) for p in a.path.rglob("*") if p.is_file())
    assert Path("firmware/parameters.h") in files and Path("build_prj.tcl") in files
    assert sorted(p.relative_to(b.path) for p in b.path.rglob("*") if p.is_file()) == files
    _, mismatch, errors = filecmp.cmpfiles(a.path, b.path, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    text = (a.path / "firmware" / "parameters.h").read_text()
    assert "static const int reuse = 4;" in text and "static const int reuse = 2;" in text
    assert "set_part xcu250-figd2104-2L-e" in (a.path / "build_prj.tcl").read_text()


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("not fabformer's")
    with pytest.raises(FabformerError, match="refusing to write into .* was not created by fabformer"):
        hls.write(testing.op_graph("relu"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_bad_config_lists_valid_keys():
    with pytest.raises(FabformerError, match=r"unknown HLS config key\(s\) reuse; valid keys: part"):
        hls.HLSConfig.from_dict({"reuse": 2})
    with pytest.raises(FabformerError, match="layer_reuse names unknown node"):
        hls.write(testing.op_graph("relu"), "/nonexistent-never-written", {"layer_reuse": {"nope": 2}})


def test_compile_error_shows_file_and_line(tmp_path):
    prj = hls.write(testing.op_graph("relu"), tmp_path / "p")
    top = prj.path / "firmware" / f"{prj.top}.cpp"
    lines = top.read_text().splitlines()
    lines.insert(3, "this is not C++;")
    top.write_text("\n".join(lines) + "\n")
    with pytest.raises(FabformerError) as e:
        prj.compile()
    msg = str(e.value)
    assert f"{prj.top}.cpp:4: error:" in msg and "this is not C++;" in msg


def test_relative_output_folder_compiles(tmp_path, monkeypatch):
    """``fabformer demo -o out/demo`` writes the project under a relative path: C-simulation
    still compiles and equals golden (g++ runs inside the project folder)."""
    monkeypatch.chdir(tmp_path)
    g = testing.op_graph("relu")
    prj = hls.write(g, Path("rel") / "p")
    prj.compile()
    x = testing.random_inputs(g, 4, seed=1)
    np.testing.assert_array_equal(prj.predict(x), g.predict(x))


def test_testbench_checks_bit_for_bit(built, tmp_path):
    """The Vitis testbench itself: g++-built, reads tb_data, passes; a corrupted golden file fails."""
    prj = built["dense", Overflow.WRAP]
    exe = tmp_path / "tb"
    subprocess.run(["g++", "-std=c++17", "-O1", "-w", f"-I{hls.ap_types_dir()}", f"-I{prj.path / 'firmware'}",
                    f"-I{prj.path}", str(prj.path / f"{prj.top}_test.cpp"), str(prj.path / "firmware" / f"{prj.top}.cpp"),
                    "-o", str(exe)], check=True)
    r = subprocess.run([str(exe), str(prj.path / "tb_data")], capture_output=True, text=True)
    assert r.returncode == 0 and "16 samples, 0 mismatching" in r.stdout, r.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tb_input.dat").write_text((prj.path / "tb_data" / "tb_input.dat").read_text())
    rows = (prj.path / "tb_data" / "tb_output_golden.dat").read_text().splitlines()
    vals = rows[2].split()
    vals[5] = str(int(vals[5]) + 1)
    rows[2] = " ".join(vals)
    (bad / "tb_output_golden.dat").write_text("\n".join(rows) + "\n")
    r = subprocess.run([str(exe), str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "sample 2: y[5] expected" in r.stdout, r.stdout


@pytest.mark.skipif(not (ROOT / "examples" / "digits" / "model_q8.h5").is_file(), reason="no example model")
def test_digits_csim_bit_exact(tmp_path):
    fabformer = pytest.importorskip("fabformer")
    from fabformer.apps.cli import load_model
    from fabformer.apps.data import digits
    d = digits()
    g = fabformer.convert(load_model(ROOT / "examples" / "digits" / "model_q8.h5"), calibration=d.x_train)
    r = hls.csim(g, tmp_path / "digits", d.x_test)
    assert r["samples"] == 450 == len(d.x_test)
    assert r["bit_exact"] and r["mismatches"] == 0, r
