"""The IR: validation errors name the node, topological sort, pruning, histograms."""
import numpy as np
import pytest

from edgeinfer import GraphError
from edgeinfer.graph import MAX_SUBGRAPH_DEPTH, Graph, Node, ValueInfo, toposort_nodes


def small_graph():
    return Graph(
        inputs=[ValueInfo("x", "float32", ("N", 3))],
        outputs=[ValueInfo("y", "float32", ("N", 3))],
        nodes=[Node("Relu", ["x"], ["r"], name="relu"), Node("Add", ["r", "b"], ["y"], name="add")],
        constants={"b": np.ones(3, np.float32)},
        opset={"": 21},
    )


def test_valid_graph_passes_and_reports_types():
    g = small_graph()
    g.validate()
    assert g.required_inputs()[0].name == "x"
    assert g.tensor_type("b").shape == (3,)
    assert g.op_histogram() == {"Add": 1, "Relu": 1}
    assert g.param_count() == 3


def test_undefined_input_names_node():
    g = small_graph()
    g.nodes[1] = Node("Add", ["r", "missing"], ["y"], name="add")
    with pytest.raises(GraphError, match=r"Add node 'add' reads 'missing'"):
        g.validate()


def test_node_order_is_checked():
    g = small_graph()
    g.nodes.reverse()
    with pytest.raises(GraphError, match="reads 'r'"):
        g.validate()
    g.toposort()
    g.validate()
    assert [n.op_type for n in g.nodes] == ["Relu", "Add"]


def test_duplicate_output_rejected():
    g = small_graph()
    g.nodes.append(Node("Relu", ["x"], ["r"], name="again"))
    with pytest.raises(GraphError, match="'again' writes 'r'"):
        g.validate()


def test_unproduced_output_rejected():
    g = small_graph()
    g.outputs.append(ValueInfo("ghost", "float32", None))
    with pytest.raises(GraphError, match="output 'ghost'"):
        g.validate()


def test_cycle_detected_by_toposort():
    nodes = [Node("Relu", ["b"], ["a"], name="n1"), Node("Relu", ["a"], ["b"], name="n2")]
    with pytest.raises(GraphError, match="cycle"):
        toposort_nodes(nodes, {"x"})


def test_bad_dtype_and_dim_rejected():
    g = small_graph()
    g.inputs[0] = ValueInfo("x", "float99", (1,))
    with pytest.raises(GraphError, match="unknown dtype 'float99'"):
        g.validate()
    g.inputs[0] = ValueInfo("x", "float32", (-3,))
    with pytest.raises(GraphError, match="invalid dim -3"):
        g.validate()


def test_subgraph_depth_capped():
    body = Graph(outputs=[ValueInfo("v", "float32", ())], constants={"v": np.zeros((), np.float32)})
    for _ in range(MAX_SUBGRAPH_DEPTH + 2):
        body = Graph(
            outputs=[ValueInfo("o", "float32", ())],
            nodes=[Node("If", ["c"], ["o"], {"then_branch": body, "else_branch": body}, name="if")],
            constants={"c": np.array(True)},
        )
    with pytest.raises(GraphError, match="nested"):
        body.validate()


def test_subgraph_reads_outer_scope():
    inner = Graph(outputs=[ValueInfo("o", "float32", None)], nodes=[Node("Identity", ["x"], ["o"])])
    g = Graph(
        inputs=[ValueInfo("x", "float32", (2,)), ValueInfo("c", "bool", ())],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[Node("If", ["c"], ["y"], {"then_branch": inner, "else_branch": inner})],
    )
    g.validate()
    assert "x" in g.consumers()
    assert sum(1 for _ in g.walk_nodes()) == 3


def test_remove_unused_drops_dead_nodes_and_constants():
    g = small_graph()
    g.nodes.append(Node("Neg", ["c"], ["dead"], name="dead"))
    g.constants["c"] = np.zeros(2, np.float32)
    g.remove_unused()
    assert [n.name for n in g.nodes] == ["relu", "add"]
    assert "c" not in g.constants


def test_unique_name():
    g = small_graph()
    assert g.unique_name("r") == "r_1"
    assert g.unique_name("fresh") == "fresh"
