"""The cpu backend's compiler: folding, fusion and the lifetime buffer plan keep results exact."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import edgeinfer
from edgeinfer import KernelError, Session
from edgeinfer.backends import cpu
from edgeinfer.graph import Graph, Node, ValueInfo

SHAPE = (4, 4)
NUMPY = {
    "Relu": lambda a: np.maximum(a, 0),
    "Neg": lambda a: -a,
    "Transpose": lambda a: a.T,
    "Reshape": lambda a: a.reshape(SHAPE),
    "Add": np.add,
    "Mul": np.multiply,
    "Sub": np.subtract,
}
UNARY = ["Relu", "Neg", "Transpose", "Reshape"]
BINARY = ["Add", "Mul", "Sub"]


@st.composite
def random_dag(draw):
    n_nodes = draw(st.integers(1, 14))
    names = ["x0", "x1"]
    nodes = []
    for k in range(n_nodes):
        if draw(st.booleans()):
            op = draw(st.sampled_from(UNARY))
            ins = [draw(st.sampled_from(names))]
        else:
            op = draw(st.sampled_from(BINARY))
            ins = [draw(st.sampled_from(names)), draw(st.sampled_from(names))]
        attrs = {"perm": [1, 0]} if op == "Transpose" else {}
        if op == "Reshape":
            ins.append("shape")
        out = f"t{k}"
        nodes.append(Node(op, ins, [out], attrs, name=f"n{k}"))
        names.append(out)
    n_out = draw(st.integers(1, min(3, n_nodes)))
    outs = draw(st.lists(st.sampled_from(names[2:]), min_size=n_out, max_size=n_out, unique=True))
    return nodes, outs


def interpret(nodes, feeds):
    env = dict(feeds)
    for n in nodes:
        args = [env[i] for i in n.inputs if i != "shape"]
        env[n.outputs[0]] = NUMPY[n.op_type](*args)
    return env


@settings(max_examples=60, deadline=None)
@given(random_dag())
def test_buffer_plan_matches_plain_numpy(dag):
    nodes, outs = dag
    g = Graph(
        inputs=[ValueInfo("x0", "float32", SHAPE), ValueInfo("x1", "float32", SHAPE)],
        outputs=[ValueInfo(o, "float32", None) for o in outs],
        nodes=nodes,
        constants={"shape": np.array(SHAPE, np.int64)},
    )
    sess = Session(g)
    rng = np.random.default_rng(0)
    results = []
    for _ in range(2):
        feeds = {k: rng.standard_normal(SHAPE).astype(np.float32) for k in ("x0", "x1")}
        got = sess.run(feeds)
        want = interpret(nodes, feeds)
        for o in outs:
            np.testing.assert_allclose(got[o], want[o], rtol=1e-6)
        results.append((got, {o: want[o] for o in outs}))
    # outputs of the first run must not change when the arena is reused by the second
    for o in outs:
        np.testing.assert_allclose(results[0][0][o], results[0][1][o], rtol=1e-6)


def test_arena_reuses_blocks():
    # a chain of 10 elementwise ops needs only a couple of blocks, not 10
    nodes = [Node("Relu" if k % 2 else "Neg", [f"t{k-1}" if k else "x"], [f"t{k}"]) for k in range(10)]
    g = Graph(inputs=[ValueInfo("x", "float32", (64, 64))], outputs=[ValueInfo("t9", "float32", None)], nodes=nodes)
    exe = cpu.compile(g, {"x": (64, 64)})
    assert 1 <= len(exe.plan.block_sizes) <= 2
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    want = x
    for k in range(10):
        want = np.maximum(want, 0) if k % 2 else -want
    np.testing.assert_array_equal(exe.run({"x": x})["t9"], want)


def test_constant_subgraphs_are_folded_away():
    g = Graph(
        inputs=[ValueInfo("x", "float32", ("N", 6))],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[
            Node("Shape", ["x"], ["s"]),
            Node("Gather", ["s", "one"], ["d1"], {"axis": 0}),
            Node("Unsqueeze", ["d1", "zero"], ["d1v"]),
            Node("Concat", ["minus1", "d1v"], ["newshape"], {"axis": 0}),
            Node("Reshape", ["x", "newshape"], ["r"]),
            Node("Relu", ["r"], ["y"]),
        ],
        constants={
            "one": np.array(1, np.int64),
            "zero": np.array([0], np.int64),
            "minus1": np.array([-1], np.int64),
        },
    )
    exe = cpu.compile(g, {"x": (2, 6)})
    assert [n.op_type for n in exe.graph.nodes] == ["Reshape", "Relu"]
    x = np.arange(12, dtype=np.float32).reshape(2, 6) - 6
    np.testing.assert_array_equal(exe.run({"x": x})["y"], np.maximum(x, 0))


def test_conv_bn_relu_is_fused_and_exact():
    rng = np.random.default_rng(3)
    c = 8
    consts = {
        "w": rng.standard_normal((c, 3, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(c).astype(np.float32),
        "s": rng.uniform(0.5, 2, c).astype(np.float32),
        "bb": rng.standard_normal(c).astype(np.float32),
        "m": rng.standard_normal(c).astype(np.float32),
        "v": rng.uniform(0.5, 2, c).astype(np.float32),
    }
    g = Graph(
        inputs=[ValueInfo("x", "float32", (1, 3, 10, 10))],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[
            Node("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}),
            Node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["bn"], {"epsilon": 1e-5}),
            Node("Relu", ["bn"], ["y"]),
        ],
        constants=consts,
    )
    fused = cpu.compile(g, {"x": (1, 3, 10, 10)})
    plain = cpu.compile(g, {"x": (1, 3, 10, 10)}, options={"optimize": False})
    assert [n.op_type for n in fused.graph.nodes] == ["FusedConv"]
    assert [n.op_type for n in plain.graph.nodes] == ["Conv", "BatchNormalization", "Relu"]
    x = rng.standard_normal((1, 3, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(fused.run({"x": x})["y"], plain.run({"x": x})["y"], rtol=1e-4, atol=1e-5)


def test_kernel_failure_names_the_node():
    g = Graph(
        inputs=[ValueInfo("x", "float32", (3,)), ValueInfo("i", "int64", (1,))],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[Node("Gather", ["x", "i"], ["y"], {"axis": 0}, name="pick")],
    )
    with pytest.raises(KernelError, match="pick"):
        Session(g).run({"x": np.zeros(3, np.float32), "i": np.array([7], np.int64)})


def test_compile_restores_numpys_huge_page_setting_even_across_threads():
    """Compiling allocates its constants with small pages; numpy's own setting comes back after,
    also when compiles overlap in several threads or one fails."""
    import threading

    switch = cpu._hugepage_switch()
    if switch is None:
        pytest.skip("this numpy has no huge-page switch")
    before = switch(True)
    try:
        seen = []
        g = Graph(inputs=[ValueInfo("x", "float32", (2,))], outputs=[ValueInfo("y", "float32", None)],
                  nodes=[Node("Relu", ["x"], ["y"])])

        def work():
            with cpu._small_pages():
                seen.append(switch(False))  # reads the setting inside: small pages
                cpu.compile(g, {"x": (2,)})

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [False] * 6
        with pytest.raises(KernelError):
            Session(Graph(inputs=[ValueInfo("x", "float32", (3,)), ValueInfo("i", "int64", (1,))],
                          outputs=[ValueInfo("y", "float32", None)],
                          nodes=[Node("Gather", ["x", "i"], ["y"], {"axis": 0})])
                    ).run({"x": np.zeros(3, np.float32), "i": np.array([7], np.int64)})
        assert switch(True) is True  # restored to what it was before any compile
    finally:
        switch(before)
