"""Names from a user's model never break the generated C++ or Verilog, and inputs of
every form behave the same on every path."""
from __future__ import annotations

import numpy as np
import pytest

from fabformer import FabformerError
from fabformer.apps import testing
from fabformer.fixed import FixedType, Overflow, Rounding
from fabformer.ir import Add, Graph, Quantize, Relu
from fabformer.names import Namer, sanitize

ADVERSARIAL = ["Foo", "foo", "x.y", "x-y", "class", "int", "module", "main", "naïve", "名前", "mha/query",
               "mha_query", "2x", "__init", "t_x", "N_X", "fab"]


def test_namer_gives_unique_case_insensitive_identifiers():
    namer = Namer()
    ids = [namer(n) for n in ADVERSARIAL]
    assert len({i.lower() for i in ids}) == len(ids)
    assert all(i.replace("_", "a").isalnum() and i.isascii() and not i[0].isdigit() for i in ids)
    assert namer("Foo") == ids[0]  # stable
    assert sanitize("class") == "class_" and sanitize("mha/query") == "mha_query" and sanitize("2x") == "n_2x"


def _adversarial_graph(model_name: str) -> Graph:
    t = FixedType(8, 4, rounding=Rounding.RND, overflow=Overflow.SAT)
    g = Graph(model_name)
    g.add_input("main", (2, 4))
    prev = g.add(Quantize("INT", ("main",), "class"), t)
    for k, name in enumerate(ADVERSARIAL[5:]):
        prev = g.add(Relu(name, (prev,), f"{name}:{k}" if k % 2 else name.upper() + "/out"), t.with_(signed=False))
        t = t.with_(signed=False)
    g.add(Add("Foo", (prev, prev), "foo"), t.with_(width=9))
    g.add(Relu("x.y", ("foo",), "x-y"), t)
    g.outputs = ["x-y"]
    return g.verify()


@pytest.mark.parametrize("model_name", ["class", "int", "main"])
def test_adversarial_names_compile_in_cpp_and_elaborate_in_amaranth(tmp_path, model_name):
    from fabformer import hls, rtl
    g = _adversarial_graph(model_name)
    prj = hls.write(g, tmp_path / "hls")
    prj.compile()
    x = testing.random_inputs(g, 50, seed=2)
    assert np.array_equal(prj.predict(x, raw=True), np.asarray(g.predict(x, trace=True)[1]["x-y"]))
    text = rtl.generate(g).verilog("top")
    assert "module top" in text


def test_inputs_of_every_form_are_one_behaviour(tmp_path):
    from fabformer import hls
    g = testing.op_graph("dense")
    prj = hls.write(g, tmp_path / "hls")
    prj.compile()
    one = np.linspace(-2, 2, 32).reshape(4, 8)
    for x in (one, one.tolist(), one[None], one.astype(np.float32)[None], np.zeros((0, 4, 8)), []):
        assert np.array_equal(g.predict(x), prj.predict(x)), type(x)
    ints = np.arange(32, dtype=np.int8).reshape(1, 4, 8) % 5
    assert np.array_equal(g.predict(ints), prj.predict(ints))
    bad = np.zeros((3, 4, 8))
    bad[1, 2, 3] = np.inf
    for path in (g.predict, prj.predict):
        with pytest.raises(FabformerError, match=r"input 'x' sample 1 holds NaN or inf"):
            path(bad)
        with pytest.raises(FabformerError, match=r"input 'x' expects shape \(batch, 4, 8\), got \(3, 8\)"):
            path(np.zeros((3, 8)))
