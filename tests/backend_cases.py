"""Differential cases shared by the tests of the backends that run exported ONNX (``ort``,
``openvino``): small graphs built with the IR, and the check that a backend answers like the
``cpu`` backend (same names, dtypes and shapes; values within 1e-4 of the output's scale)."""
from __future__ import annotations

import numpy as np

from edgeinfer import Graph, Node, Session, ValueInfo

OPSET = {"": 21}


def assert_like_cpu(got: dict, want: dict, tol: float = 1e-4) -> None:
    assert list(got) == list(want), (list(got), list(want))
    for name, w in want.items():
        g = got[name]
        assert isinstance(g, np.ndarray), (name, type(g))
        assert g.dtype == w.dtype and g.shape == w.shape, (name, g.dtype, w.dtype, g.shape, w.shape)
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
            err = float(np.max(np.abs(g.astype(np.float64) - w))) if w.size else 0.0
            assert err <= tol * scale, f"{name}: max abs error {err} > {tol} * {scale}"


def compare_with_cpu(graph: Graph, feeds: dict, backend: str, options: dict | None = None, threads: int | None = 1,
                     tol: float = 1e-4) -> dict:
    want = Session(graph, threads=1).run(feeds)
    got = Session(graph, backend=backend, threads=threads, options=options).run(feeds)
    assert_like_cpu(got, want, tol)
    return got


def rng_normal(shape, seed=0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def conv_block() -> tuple[Graph, dict]:
    """Conv + bias + Relu + MaxPool + global pool + Gemm, symbolic batch."""
    w = rng_normal((8, 3, 3, 3), 1) * 0.3
    b = rng_normal((8,), 2)
    fc = rng_normal((5, 8), 3)
    g = Graph(inputs=[ValueInfo("x", "float32", ("n", 3, 16, 16))], outputs=[ValueInfo("y", "float32", ("n", 5))],
              nodes=[Node("Conv", ("x", "w", "b"), ("c",), {"pads": [1, 1, 1, 1]}),
                     Node("Relu", ("c",), ("r",)),
                     Node("MaxPool", ("r",), ("p",), {"kernel_shape": [2, 2], "strides": [2, 2]}),
                     Node("GlobalAveragePool", ("p",), ("gp",)),
                     Node("Flatten", ("gp",), ("f",)),
                     Node("Gemm", ("f", "fc"), ("y",), {"transB": 1})],
              constants={"w": w, "b": b, "fc": fc}, opset=OPSET)
    return g, {"x": rng_normal((2, 3, 16, 16), 4)}


def int_outputs() -> tuple[Graph, dict]:
    """TopK (float values + int64 indices), ArgMax (int64), Shape, Greater (bool), Cast to int32."""
    g = Graph(inputs=[ValueInfo("x", "float32", (3, 7))],
              outputs=[ValueInfo("vals", "float32", (3, 2)), ValueInfo("idx", "int64", (3, 2)),
                       ValueInfo("am", "int64", (3,)), ValueInfo("shape", "int64", (2,)),
                       ValueInfo("pos", "bool", (3, 7)), ValueInfo("q", "int32", (3, 7))],
              nodes=[Node("TopK", ("x", "k"), ("vals", "idx"), {"axis": -1}),
                     Node("ArgMax", ("x",), ("am",), {"axis": 1, "keepdims": 0}),
                     Node("Shape", ("x",), ("shape",)),
                     Node("Greater", ("x", "zero"), ("pos",)),
                     Node("Mul", ("x", "ten"), ("x10",)),
                     Node("Floor", ("x10",), ("fl",)),
                     Node("Cast", ("fl",), ("q",), {"to": "int32"})],
              constants={"k": np.array([2], np.int64), "zero": np.array(0, np.float32),
                         "ten": np.array(10, np.float32)}, opset=OPSET)
    return g, {"x": rng_normal((3, 7), 5)}


def gather_reduce() -> tuple[Graph, dict]:
    """An int64 feed (Gather indices), a scalar output (ReduceSum over all axes), Softmax."""
    table = rng_normal((10, 4), 6)
    g = Graph(inputs=[ValueInfo("ids", "int64", ("b", "t"))],
              outputs=[ValueInfo("emb", "float32", ("b", "t", 4)), ValueInfo("total", "float32", ()),
                       ValueInfo("probs", "float32", ("b", "t", 4))],
              nodes=[Node("Gather", ("table", "ids"), ("emb",), {"axis": 0}),
                     Node("ReduceSum", ("emb",), ("total",), {"keepdims": 0}),
                     Node("Softmax", ("emb",), ("probs",), {"axis": -1})],
              constants={"table": table}, opset=OPSET)
    return g, {"ids": np.array([[1, 9, 3], [0, 0, 7]], np.int64)}


def layer_norm_gelu() -> tuple[Graph, dict]:
    """LayerNormalization + Gelu + residual MatMul, symbolic sequence length."""
    w = rng_normal((16, 16), 7) * 0.25
    g = Graph(inputs=[ValueInfo("x", "float32", (1, "t", 16))], outputs=[ValueInfo("y", "float32", (1, "t", 16))],
              nodes=[Node("LayerNormalization", ("x", "gamma", "beta"), ("ln",), {"axis": -1, "epsilon": 1e-5}),
                     Node("MatMul", ("ln", "w"), ("mm",)),
                     Node("Gelu", ("mm",), ("ge",)),
                     Node("Add", ("ge", "x"), ("y",))],
              constants={"gamma": rng_normal((16,), 8), "beta": rng_normal((16,), 9), "w": w}, opset=OPSET)
    return g, {"x": rng_normal((1, 5, 16), 10)}


SMALL_GRAPHS = {"conv_block": conv_block, "int_outputs": int_outputs, "gather_reduce": gather_reduce,
                "layer_norm_gelu": layer_norm_gelu}


def matmul_256() -> tuple[Graph, np.ndarray, np.ndarray]:
    """A 256x256 MatMul of random data: f32 is within 1e-5 of float64, bf16 is off by ~1e-2."""
    w = rng_normal((256, 256), 11)
    g = Graph(inputs=[ValueInfo("x", "float32", (256, 256))], outputs=[ValueInfo("y", "float32", (256, 256))],
              nodes=[Node("MatMul", ("x", "w"), ("y",))], constants={"w": w}, opset=OPSET)
    x = rng_normal((256, 256), 12)
    return g, x, x.astype(np.float64) @ w.astype(np.float64)


def relative_error(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.max(np.abs(got - exact)) / np.max(np.abs(exact)))


def overridable_default() -> Graph:
    """An input with a constant default (an ONNX initializer listed as an input)."""
    return Graph(inputs=[ValueInfo("x", "float32", (2, 3)), ValueInfo("bias", "float32", (3,))],
                 outputs=[ValueInfo("y", "float32", (2, 3))],
                 nodes=[Node("Add", ("x", "bias"), ("y",))],
                 constants={"bias": np.array([1, 2, 3], np.float32)}, opset=OPSET)


def internal_op_graph() -> Graph:
    """A node of the cpu backend's internal domain, which no exporter writes."""
    return Graph(inputs=[ValueInfo("x", "float32", (1, 4))], outputs=[ValueInfo("y", "float32", (1, 4))],
                 nodes=[Node("FusedGelu", ("x",), ("y",), domain="edgeinfer")], opset=dict(OPSET, edgeinfer=1))


def run_threads(sess: Session, feeds_list: list[dict], repeats: int = 5) -> list[dict]:
    """Run every feed set from its own thread, all at once, ``repeats`` times each; the last
    result of each thread (after checking all of its results agree)."""
    import threading

    results: list = [None] * len(feeds_list)
    errors: list = []
    start = threading.Barrier(len(feeds_list))

    def work(k):
        try:
            start.wait()
            outs = [sess.run(feeds_list[k]) for _ in range(repeats)]
            for o in outs[1:]:
                for name in o:
                    np.testing.assert_array_equal(o[name], outs[0][name])
            results[k] = outs[-1]
        except BaseException as e:  # reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(feeds_list))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
