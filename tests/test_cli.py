"""The core CLI: convert, eval, errors."""
import json
import subprocess
import sys

import pytest

from conftest import EXAMPLE

from fabformer.apps.cli import main


def test_convert_then_eval_json(tmp_path, capsys):
    g = tmp_path / "digits.graph.json"
    assert main(["convert", str(EXAMPLE / "model_q8.h5"), "-o", str(g), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nodes"] == 22 and g.is_file()
    assert main(["eval", str(g), "--model", str(EXAMPLE / "model_q8.h5"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["samples"] == 450
    assert set(r["accuracy"]) == {"keras", "float", "golden"}
    assert abs(r["accuracy"]["golden"] - r["accuracy"]["keras"]) <= 0.005
    assert r["agreement"]["golden_vs_keras"] >= 0.995


def test_cli_errors_are_one_line_not_tracebacks(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fabformer.apps.cli", "eval", str(tmp_path / "nope.json")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "fabformer eval: error: graph file" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_output_folder_guard(tmp_path):
    from fabformer.errors import FabformerError
    from fabformer.outdir import prepare_dir
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FabformerError, match="refusing to write into .*not created by fabformer"):
        prepare_dir(foreign)
    ours = prepare_dir(tmp_path / "ours")
    (ours / "a.txt").write_text("x")
    prepare_dir(ours, clean=True)
    assert not (ours / "a.txt").exists() and (foreign / "thesis.tex").read_text() == "precious"
