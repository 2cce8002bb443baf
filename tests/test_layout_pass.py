"""The layout pass (converters/layout.py): Transposes move through layout-neutral ops and cancel,
and the graph computes the same values under the same names."""
from __future__ import annotations

import numpy as np
import pytest

import edgeinfer
from edgeinfer.graph import Graph, Node, ValueInfo

from edgeinfer.converters.layout import compose, inverse, sink_transposes

RNG = np.random.default_rng(0)
NCHW, NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _same(g: Graph, feeds: dict) -> Graph:
    g.validate()
    out = sink_transposes(g)
    out.validate()
    want = edgeinfer.Session(g).run(feeds)
    have = edgeinfer.Session(out).run(feeds)
    assert list(have) == list(want)
    for k in want:
        assert have[k].shape == want[k].shape
        np.testing.assert_allclose(have[k], want[k], rtol=1e-5, atol=1e-5)
    return out


def _transposes(g: Graph) -> int:
    return sum(1 for n in g.nodes if n.op_type == "Transpose")


def _wrapped_conv_chain(tail: list[Node], extra_consts: dict, outputs: list[ValueInfo]) -> Graph:
    nodes = [
        Node("Transpose", ("x",), ("a",), {"perm": NCHW}),
        Node("Conv", ("a", "W1"), ("b",), {"pads": [1, 1, 1, 1]}),
        Node("Transpose", ("b",), ("c",), {"perm": NHWC}),
        Node("Add", ("c", "bias"), ("d",)),
        Node("Relu", ("d",), ("e",)),
        Node("Transpose", ("e",), ("f",), {"perm": NCHW}),
        Node("Conv", ("f", "W2"), ("g",)),
        Node("Transpose", ("g",), ("h",), {"perm": NHWC}),
    ] + tail
    consts = {"W1": _f32(8, 3, 3, 3), "W2": _f32(4, 8, 1, 1), "bias": _f32(8)} | extra_consts
    return Graph(inputs=[ValueInfo("x", "float32", (1, 12, 10, 3))], outputs=outputs, nodes=nodes, constants=consts)


def test_permutation_helpers():
    assert compose(tuple(NCHW), tuple(NHWC)) == (0, 1, 2, 3)
    assert inverse((0, 3, 1, 2)) == (0, 2, 3, 1)


def test_conv_chain_keeps_one_transpose_at_each_end():
    g = _wrapped_conv_chain([Node("Sigmoid", ("h",), ("y",))], {}, [ValueInfo("y", "float32", None)])
    out = _same(g, {"x": _f32(1, 12, 10, 3)})
    assert _transposes(g) == 4 and _transposes(out) == 2
    assert out.outputs[0].name == "y"


def test_axis_ops_are_renumbered():
    tail = [
        Node("Pad", ("h", "pads"), ("p",)),
        Node("Concat", ("p", "p"), ("q",), {"axis": 3}),
        Node("Softmax", ("q",), ("s",), {"axis": -1}),
        Node("ReduceMean", ("s", "axes"), ("y",), {"keepdims": 0}),
    ]
    consts = {"pads": np.array([0, 1, 2, 0, 0, 2, 1, 0], np.int64), "axes": np.array([1], np.int64)}
    g = _wrapped_conv_chain(tail, consts, [ValueInfo("y", "float32", None)])
    out = _same(g, {"x": _f32(1, 12, 10, 3)})
    assert _transposes(out) == 2


def test_shared_tensor_is_materialised_once_and_outputs_keep_names():
    tail = [Node("Relu", ("h",), ("y1",)), Node("Reshape", ("h", "shape"), ("y2",)), Node("Flatten", ("h",), ("y3",))]
    g = _wrapped_conv_chain(tail, {"shape": np.array([1, -1], np.int64)},
                            [ValueInfo(n, "float32", None) for n in ("y1", "y2", "y3", "e")])
    out = _same(g, {"x": _f32(1, 12, 10, 3)})
    # h is read in NHWC order by Reshape and Flatten: one Transpose serves both
    assert sum(1 for n in out.nodes if n.op_type == "Transpose" and n.outputs == ("h",)) == 1


def test_per_axis_dequantize_follows_the_layout():
    w = RNG.integers(-100, 100, (1, 4, 5, 8)).astype(np.int8)
    g = Graph(inputs=[ValueInfo("x", "float32", (1, 8, 4, 5))], outputs=[ValueInfo("y", "float32", None)],
              nodes=[Node("Transpose", ("x",), ("t",), {"perm": NHWC}),
                     Node("QuantizeLinear", ("t", "s", "z"), ("q",), {"axis": 3}),
                     Node("DequantizeLinear", ("q", "s", "z"), ("d",), {"axis": 3}),
                     Node("Add", ("d", "w"), ("a",)),
                     Node("Transpose", ("a",), ("y",), {"perm": NCHW})],
              constants={"s": np.linspace(0.01, 0.05, 8).astype(np.float32), "z": np.zeros(8, np.int8),
                         "w": w.astype(np.float32)})
    out = _same(g, {"x": _f32(1, 8, 4, 5)})
    assert _transposes(out) == 0


@pytest.mark.parametrize("op", ["Add", "Mul"])
def test_runtime_operand_in_another_layout_stops_the_move(op):
    g = Graph(inputs=[ValueInfo("x", "float32", (1, 2, 3, 4)), ValueInfo("z", "float32", (1, 3, 4, 2))],
              outputs=[ValueInfo("y", "float32", None)],
              nodes=[Node("Transpose", ("x",), ("t",), {"perm": NHWC}), Node(op, ("t", "z"), ("y",))])
    out = _same(g, {"x": _f32(1, 2, 3, 4), "z": _f32(1, 3, 4, 2)})
    assert _transposes(out) == 1
