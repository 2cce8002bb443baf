"""SmoothQuant rebalancing, cross-layer equalization and bias correction (converters/quantize_tuning.py,
converters/quantize.py): float results unchanged, quantization error smaller."""
import numpy as np
import pytest

import edgeinfer
from edgeinfer.converters.quantize import calibrate, equalization_pairs, equalize_channels, prepare, quantize, quantize_static
from edgeinfer.converters.quantize_tuning import channel_stats, correct_bias, smooth_matmuls, smoothable
from edgeinfer.graph import Graph, Node, ValueInfo


def _layernorm_matmul(decomposed: bool, seed: int = 0) -> tuple[Graph, list[dict]]:
    """x -> LayerNorm (gamma with two loud channels) -> MatMul(W) -> y, and feeds."""
    rng = np.random.default_rng(seed)
    c, d = 64, 32
    gamma = np.ones(c, np.float32)
    gamma[[3, 40]] = 40.0  # outlier channels, as in transformer LayerNorm outputs
    beta = rng.normal(0, 0.1, c).astype(np.float32)
    w = rng.normal(0, 0.2, (c, d)).astype(np.float32)
    consts = {"gamma": gamma, "beta": beta, "w": w}
    if decomposed:
        consts["axes"] = np.array([-1], np.int64)
        nodes = [Node("ReduceMean", ("x", "axes"), ("mu",)), Node("Sub", ("x", "mu"), ("xc",)),
                 Node("Mul", ("xc", "xc"), ("sq",)), Node("ReduceMean", ("sq", "axes"), ("var",)),
                 Node("Add", ("var", "eps"), ("ve",)), Node("Sqrt", ("ve",), ("sd",)), Node("Div", ("xc", "sd"), ("xn",)),
                 Node("Mul", ("xn", "gamma"), ("scaled",)), Node("Add", ("scaled", "beta"), ("ln",)),
                 Node("MatMul", ("ln", "w"), ("y",), name="mm")]
        consts["eps"] = np.array(1e-5, np.float32)
    else:
        nodes = [Node("LayerNormalization", ("x", "gamma", "beta"), ("ln",), {"axis": -1}),
                 Node("MatMul", ("ln", "w"), ("y",), name="mm")]
    g = Graph(inputs=[ValueInfo("x", "float32", (4, 10, c))], outputs=[ValueInfo("y", "float32", (4, 10, d))],
              nodes=nodes, constants=consts, opset={"": 21})
    feeds = [{"x": rng.normal(0, 1, (4, 10, c)).astype(np.float32)} for _ in range(6)]
    return g, feeds


def _error(g_ref, g_q, feeds):
    a = np.concatenate([edgeinfer.Session(g_ref).run(f)["y"].ravel() for f in feeds])
    b = np.concatenate([edgeinfer.Session(g_q).run(f)["y"].ravel() for f in feeds])
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(a ** 2)))


@pytest.mark.parametrize("decomposed", [False, True])
def test_smoothquant_keeps_float_results_and_cuts_the_int8_error(decomposed):
    g, feeds = _layernorm_matmul(decomposed)
    g = prepare(g)
    assert len(smoothable(g)) == 1
    s, n = smooth_matmuls(g, feeds)
    assert n == 1
    for f in feeds:  # nothing changes in float
        np.testing.assert_allclose(edgeinfer.Session(s).run(f)["y"], edgeinfer.Session(g).run(f)["y"],
                                   rtol=1e-4, atol=1e-4)
    spread = lambda graph: (lambda a: a.max() / np.median(a))(  # noqa: E731
        channel_stats(graph, {"ln": ("last", 64)}, feeds)["ln"]["amax"])
    assert spread(s) < spread(g) / 3  # the loud channels are tamed
    plain = quantize_static(g, calibrate(g, feeds))
    smoothed = quantize_static(s, calibrate(s, feeds))
    assert _error(g, smoothed, feeds) < 0.5 * _error(g, plain, feeds)


def test_smoothquant_leaves_a_layernorm_with_other_readers_alone():
    g, _ = _layernorm_matmul(False)
    g.nodes.append(Node("Relu", ("ln",), ("r",)))
    g.outputs.append(ValueInfo("r", "float32", None))
    assert smoothable(g) == []


def _conv_pair(seed=0):
    """conv (16 channels of very different scales) -> depthwise conv: the PP-OCRv4 rec stem."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1, (16, 3, 3, 3)).astype(np.float32) * np.logspace(-2, 1, 16, dtype=np.float32)[:, None, None, None]
    w2 = rng.normal(0, 1, (16, 1, 3, 3)).astype(np.float32)
    g = Graph(inputs=[ValueInfo("x", "float32", (2, 3, 16, 16))], outputs=[ValueInfo("y", "float32", None)],
              nodes=[Node("Conv", ("x", "w1", "b1"), ("a",), {"pads": [1, 1, 1, 1]}, name="c1"),
                     Node("Conv", ("a", "w2", "b2"), ("y",), {"pads": [1, 1, 1, 1], "group": 16}, name="c2")],
              constants={"w1": w1, "b1": rng.normal(0, 0.1, 16).astype(np.float32), "w2": w2,
                         "b2": np.zeros(16, np.float32)}, opset={"": 21})
    feeds = [{"x": rng.normal(0, 1, (2, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    return g, feeds


def test_equalization_of_a_conv_and_its_depthwise_consumer():
    g, feeds = _conv_pair()
    pairs = equalization_pairs(g)
    assert [(p.producer.name, p.consumer.name, p.depthwise) for p in pairs] == [("c1", "c2", True)]
    e, n = equalize_channels(g, feeds)
    assert n == 1
    for f in feeds:
        np.testing.assert_allclose(edgeinfer.Session(e).run(f)["y"], edgeinfer.Session(g).run(f)["y"], rtol=1e-4, atol=1e-4)
    amax = channel_stats(e, {"a": ("first", 16)}, feeds)["a"]["amax"]
    assert amax.min() > 0.9 * amax.max()  # every channel now spans the one per-tensor range
    assert _error(g, quantize_static(e, calibrate(e, feeds)), feeds) < 0.5 * _error(g, quantize_static(g, calibrate(g, feeds)), feeds)


def test_bias_correction_removes_the_mean_shift():
    g, feeds = _conv_pair(1)
    # a LeakyRelu after the second conv: a layer writing a graph output (a head) is not corrected
    g.nodes[-1] = g.nodes[-1].replace(outputs=("z",))
    g.nodes.append(Node("LeakyRelu", ("z",), ("y",), {"alpha": 0.5}))
    q = quantize_static(g, calibrate(g, feeds))
    before = {k: v.copy() for k, v in q.constants.items()}
    fixed, n = correct_bias(g, q, feeds)
    assert n == 2

    def shift(graph):  # mean output error per channel
        a = np.stack([edgeinfer.Session(graph).run(f)["y"] for f in feeds]).mean(axis=(0, 1, 3, 4))
        b = np.stack([edgeinfer.Session(g).run(f)["y"] for f in feeds]).mean(axis=(0, 1, 3, 4))
        return np.abs(a - b).max()

    assert shift(fixed) < 0.5 * shift(q)
    g.nodes = g.nodes[:-1]
    g.nodes[-1] = g.nodes[-1].replace(outputs=("y",))
    assert correct_bias(g, quantize_static(g, calibrate(g, feeds)), feeds)[1] == 1  # c2 writes y: left alone
    assert all(np.array_equal(before[k], q.constants[k]) for k in before)  # q is left as it was
    assert any(not np.array_equal(q.constants[k], fixed.constants[k]) for k in before if k in fixed.constants)


def test_quantize_records_what_the_repairs_did():
    import json

    g, feeds = _layernorm_matmul(True)
    q = quantize(g, feeds, method="mse", bias_correction=True)
    info = json.loads(q.metadata["edgeinfer.quantization"])
    assert info["smoothed_sites"] == 1 and info["equalized_pairs"] == 0
    q = quantize(g, feeds, smooth=None)
    assert json.loads(q.metadata["edgeinfer.quantization"])["smoothed_sites"] == 0


def test_auto_activations_choose_symmetric_int8_for_symmetric_ranges_and_run_everywhere():
    g, feeds = _layernorm_matmul(False)
    q = quantize(g, feeds, activations="auto", method="minmax")
    zps = [q.constants[n.inputs[2]] for n in q.nodes if n.op_type == "QuantizeLinear"]
    assert [(z.dtype, int(z)) for z in zps] == [(np.dtype(np.int8), 0)]  # the LayerNorm output: symmetric
    relu, feeds2 = _conv_pair()
    q2 = quantize(relu, feeds2, activations="auto", method="minmax")
    # the image input is symmetric; the conv output (before the depthwise conv) is lopsided after its bias
    kinds = {n.inputs[0]: q2.constants[n.inputs[2]].dtype for n in q2.nodes if n.op_type == "QuantizeLinear"}
    assert kinds["x"] == np.int8
    ref = edgeinfer.Session(g).run(feeds[0])["y"]
    for backend in ("cpu", "ort", "openvino", "litert"):
        got = edgeinfer.Session(q, backend=backend).run(feeds[0])["y"]
        assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max(), backend
