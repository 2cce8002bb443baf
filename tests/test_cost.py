"""MAC counts of hand-built graphs against the per-op formulas in edgeinfer.cost."""
import numpy as np
import pytest

from edgeinfer.cost import count_macs, format_bytes, format_count, summarize
from edgeinfer.graph import Graph, Node, ValueInfo
from edgeinfer.kernels import is_supported


def one_node(op, x_shape, consts, attrs=None, domain="", extra_inputs=(), opset=21):
    """A graph ``y = op(x, *consts)``; consts are (name, array) in input order."""
    names = ["x"] + [name for name, _ in consts] + list(extra_inputs)
    return Graph(
        inputs=[ValueInfo("x", "float32", x_shape)],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[Node(op, names, ["y"], dict(attrs or {}), name="n0", domain=domain)],
        constants={name: arr for name, arr in consts},
        opset={"": opset, **({domain: 1} if domain else {})},
    )


def w(*shape):
    return np.zeros(shape, np.float32)


def test_conv3x3_64_to_64_on_56x56():
    g = one_node("Conv", (1, 64, 56, 56), [("w", w(64, 64, 3, 3)), ("b", w(64))], {"pads": [1, 1, 1, 1]})
    cost = count_macs(g)
    assert cost["total_macs"] == 64 * 64 * 9 * 56 * 56
    assert cost["nodes"][0]["output_shape"] == [1, 64, 56, 56]
    assert cost["total_element_ops"] == 64 * 56 * 56  # the bias add
    assert cost["assumed"] == {} and cost["unknown"] == []


def test_depthwise_conv_counts_one_input_channel_per_output():
    g = one_node("Conv", (1, 32, 28, 28), [("w", w(32, 1, 3, 3))], {"pads": [1, 1, 1, 1], "group": 32})
    assert count_macs(g)["total_macs"] == 32 * 28 * 28 * 9


def test_grouped_strided_conv():
    # 64 -> 128 channels in 4 groups, stride 2: each output sees 16 input channels
    attrs = {"pads": [1, 1, 1, 1], "group": 4, "strides": [2, 2]}
    g = one_node("Conv", (2, 64, 16, 16), [("w", w(128, 16, 3, 3))], attrs)
    assert count_macs(g)["total_macs"] == 2 * 128 * 8 * 8 * 16 * 9


def test_conv_transpose_scatters_each_input_element():
    g = one_node("ConvTranspose", (1, 16, 8, 8), [("w", w(16, 8, 4, 4))], {"strides": [2, 2], "pads": [1, 1, 1, 1]})
    cost = count_macs(g)
    assert cost["nodes"][0]["output_shape"] == [1, 8, 16, 16]
    assert cost["total_macs"] == 16 * 8 * 8 * 8 * 4 * 4


@pytest.mark.parametrize("trans_a", [0, 1])
def test_gemm(trans_a):
    a_shape = (256, 8) if trans_a else (8, 256)
    g = one_node("Gemm", a_shape, [("b", w(10, 256)), ("c", w(10))], {"transA": trans_a, "transB": 1})
    cost = count_macs(g)
    assert cost["total_macs"] == 8 * 10 * 256
    assert cost["total_element_ops"] == 8 * 10  # bias


def test_matmul_batched_and_broadcast():
    g = one_node("MatMul", (2, 3, 4, 5), [("b", w(5, 6))])
    assert count_macs(g)["total_macs"] == 2 * 3 * 4 * 6 * 5
    g = one_node("MatMul", (2, 1, 4, 5), [("b", w(3, 5, 6))])
    assert count_macs(g)["total_macs"] == 2 * 3 * 4 * 6 * 5
    g = one_node("MatMul", (7, 5), [("b", w(5))])  # matrix @ vector
    assert count_macs(g)["total_macs"] == 7 * 5


def test_symbolic_batch_is_taken_as_one_and_reported():
    g = one_node("Conv", ("N", 3, 32, 32), [("w", w(16, 3, 3, 3))], {"pads": [1, 1, 1, 1]})
    cost = count_macs(g)
    assert cost["assumed"] == {"x": [1, 3, 32, 32]}
    one = cost["total_macs"]
    assert one == 16 * 32 * 32 * 27
    assert count_macs(g, {"x": (4, 3, 32, 32)})["total_macs"] == 4 * one


def test_elementwise_and_pooling_count_element_ops_not_macs():
    g = Graph(
        inputs=[ValueInfo("x", "float32", (1, 8, 16, 16))],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[
            Node("Relu", ["x"], ["r"], name="relu"),
            Node("MaxPool", ["r"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2]}, name="pool"),
            Node("GlobalAveragePool", ["p"], ["y"], name="gap"),
        ],
        opset={"": 21},
    )
    cost = count_macs(g)
    assert cost["total_macs"] == 0
    by_name = {n["name"]: n["element_ops"] for n in cost["nodes"]}
    assert by_name == {"relu": 8 * 16 * 16, "pool": 8 * 8 * 8 * 4, "gap": 8 * 8 * 8}


@pytest.mark.skipif(not is_supported("FusedConv", "edgeinfer"), reason="no FusedConv kernel registered")
def test_fused_conv_counts_like_conv_plus_epilogue():
    attrs = {"pads": [1, 1, 1, 1], "activation": "Relu", "activation_params": []}
    g = one_node("FusedConv", (1, 8, 10, 10), [("w", w(8, 8, 3, 3)), ("b", w(8))], attrs, domain="edgeinfer")
    cost = count_macs(g)
    assert cost["total_macs"] == 8 * 10 * 10 * 8 * 9
    assert cost["total_element_ops"] == 2 * 8 * 10 * 10  # bias + activation


def test_unsupported_op_is_reported_not_fatal():
    g = Graph(
        inputs=[ValueInfo("x", "float32", (1, 4))],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[Node("NoSuchOp", ["x"], ["t"], name="odd"), Node("MatMul", ["t", "m"], ["y"], name="mm")],
        constants={"m": w(4, 3)},
        opset={"": 21},
    )
    cost = count_macs(g)
    assert any("odd" in e for e in cost["shape_errors"])
    assert cost["total_macs"] == 0 and any("mm" in u for u in cost["unknown"])


def test_summarize():
    g = one_node("Conv", ("N", 64, 56, 56), [("w", w(64, 64, 3, 3)), ("b", w(64))], {"pads": [1, 1, 1, 1]})
    s = summarize(g)
    assert s["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 64, 56, 56]}]
    assert s["params"] == 64 * 64 * 9 + 64
    assert s["weight_bytes"] == 4 * s["params"]
    assert s["op_histogram"] == {"Conv": 1}
    assert s["macs"] == 64 * 64 * 9 * 56 * 56
    assert s["macs_by_op"] == {"Conv": s["macs"]}
    assert s["assumed"] == {"x": [1, 64, 56, 56]}


def test_human_units():
    assert format_count(25600) == "25.6 K"
    assert format_count(64 * 64 * 9 * 56 * 56) == "116 M"
    assert format_count(3_000_000_000) == "3 G"
    assert format_count(12) == "12"
    assert format_bytes(16859) == "16.5 KiB"
    assert format_bytes(100) == "100 B"
