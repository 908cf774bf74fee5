"""Several model inputs (features, token ids, masks) through golden, C-simulation and RTL."""
import numpy as np
import pytest

from fabformer import FabformerError
from fabformer.apps import testing
from fabformer.vectors import golden_io, input_frame


@pytest.fixture(scope="module")
def graph():
    return testing.multi_input_graph()


def test_predict_takes_a_list_or_a_dict(graph):
    x = testing.random_inputs(graph, 20, seed=1)
    assert isinstance(x, list) and x[0].shape == (20, 4, 8) and x[1].shape == (20, 3)
    y = graph.predict(x)
    np.testing.assert_array_equal(y, graph.predict({"z": x[1], "x": x[0]}))
    np.testing.assert_array_equal(y[:1], graph.predict([x[0][0], x[1][0]]))  # one sample
    with pytest.raises(FabformerError, match=r"the model has 2 inputs \['x', 'z'\]: give a list of 2 arrays"):
        graph.predict(x[0])
    with pytest.raises(FabformerError, match=r"missing \['z'\], unknown \['mask'\]"):
        graph.predict({"x": x[0], "mask": x[1]})
    with pytest.raises(FabformerError, match=r"input 'z' expects shape \(batch, 3\), got \(20, 4\)"):
        graph.predict([x[0], np.zeros((20, 4))])
    with pytest.raises(FabformerError, match="different numbers of samples: \\[20, 19\\]"):
        graph.predict([x[0], x[1][:19]])


def test_input_frame_is_exact(graph):
    x = testing.random_inputs(graph, 5, seed=2)
    common, parts = input_frame(graph)
    xin, _ = golden_io(graph, x)
    assert xin.shape == (5, 4 + 1, 8)
    _, env = graph.predict(x, trace=True)
    np.testing.assert_array_equal(xin[:, :4, :] >> (common.frac - graph.type_of("xq").frac), env["xq"])
    np.testing.assert_array_equal(xin[:, 4, :3] >> common.frac, env["zq"])
    assert np.all(xin[:, 4, 3:] == 0)


def test_csim_bit_exact(graph, tmp_path):
    hls = pytest.importorskip("fabformer.hls")
    p = hls.write(graph, tmp_path / "p")
    p.compile()
    x = testing.random_inputs(graph, 200, seed=3)
    want = np.asarray(graph.predict(x, trace=True)[1][graph.outputs[0]])
    np.testing.assert_array_equal(p.predict(x, raw=True), want)
    np.testing.assert_array_equal(p.predict({"x": x[0], "z": x[1]}), graph.predict(x))
    tb = (p.path / "tb_data" / "tb_input.dat").read_text().splitlines()[0].split()
    assert len(tb) == 4 * 8 + 3


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_rtl_bit_exact(graph, simulator):
    from fabformer.rtl import generate
    from fabformer.sim import run
    d = generate(graph)
    x = testing.random_inputs(graph, 12 if simulator == "verilator" else 4, seed=4)
    r = run(d, x, simulator=simulator)
    assert r.mismatches == 0, "\n".join(r.mismatch_report[:10])
    np.testing.assert_array_equal(r.raw, r.expected_raw)
    assert r.latency_cycles == d.latency_cycles and r.ii_cycles == d.ii_cycles
