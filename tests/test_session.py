"""Session: feeds checked before kernels, dynamic shapes, overridable inputs, threads."""
import threading

import numpy as np
import pytest

import edgeinfer
from edgeinfer import BackendUnavailableError, InputError, Session, UnsupportedOpError
from edgeinfer.graph import Graph, Node, ValueInfo


def conv_graph():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    g = Graph(
        inputs=[ValueInfo("x", "float32", ("N", 3, "H", "W")), ValueInfo("scale", "float32", (1,))],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[
            Node("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}, name="conv"),
            Node("Relu", ["c"], ["r"], name="relu"),
            Node("Mul", ["r", "scale"], ["y"], name="mul"),
        ],
        constants={"w": w, "b": b, "scale": np.array([2.0], np.float32)},
        opset={"": 21},
    )
    return g, w, b


def reference(x, w, b, scale=2.0):
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd), np.float64)
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i : i + h, j : j + wd], w[:, :, i, j])
    out += b.reshape(1, -1, 1, 1)
    return np.maximum(out, 0) * scale


def test_inputs_hide_overridable_defaults():
    g, _, _ = conv_graph()
    s = Session(g)
    assert [v.name for v in s.inputs] == ["x"]
    assert [v.name for v in s.overridable_inputs] == ["scale"]
    assert s.outputs[0].name == "y"


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 5, 7), (1, 3, 8, 8)])
def test_dynamic_shapes_and_plan_cache(shape):
    g, w, b = conv_graph()
    s = Session(g)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    y = s.run({"x": x})["y"]
    np.testing.assert_allclose(y, reference(x, w, b), rtol=1e-4, atol=1e-5)
    s.run({"x": np.zeros((3, 3, 4, 4), np.float32)})
    assert len(s._plans) == 2


def test_overridable_input_can_be_fed():
    g, w, b = conv_graph()
    s = Session(g)
    x = np.ones((1, 3, 4, 4), np.float32)
    y3 = s.run({"x": x, "scale": np.array([3.0], np.float32)})["y"]
    np.testing.assert_allclose(y3, reference(x, w, b, 3.0), rtol=1e-4, atol=1e-5)
    y2 = s.run({"x": x})["y"]
    np.testing.assert_allclose(y2, reference(x, w, b, 2.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({"x": np.zeros((1, 3, 4, 4), np.float64)}, r"input 'x' expects dtype float32, got float64"),
        ({"x": np.zeros((1, 4, 4, 4), np.float32)}, r"input 'x' has mismatch on dim 1: expected 3, got 4"),
        ({"x": np.zeros((3, 4, 4), np.float32)}, r"input 'x' expects rank 4"),
        ({}, r"missing input\(s\) \['x'\]"),
        ({"x": np.zeros((1, 3, 4, 4), np.float32), "z": np.zeros(1)}, r"unknown input name\(s\) \['z'\]"),
        ([1, 2], r"feeds must be a dict"),
    ],
)
def test_bad_feeds_name_the_problem(feeds, message):
    g, _, _ = conv_graph()
    with pytest.raises(InputError, match=message):
        Session(g).run(feeds)


def test_symbolic_dims_must_agree_across_inputs():
    g = Graph(
        inputs=[ValueInfo("a", "float32", ("N", 2)), ValueInfo("b", "float32", ("N", 2))],
        outputs=[ValueInfo("c", "float32", ("N", 2))],
        nodes=[Node("Add", ["a", "b"], ["c"])],
    )
    s = Session(g)
    with pytest.raises(InputError, match=r"input 'b' dim 0 \('N'\) is 3, but input 'a' set 'N' = 2"):
        s.run({"a": np.zeros((2, 2), np.float32), "b": np.zeros((3, 2), np.float32)})


def test_unknown_output_name():
    g, _, _ = conv_graph()
    with pytest.raises(InputError, match="unknown output"):
        Session(g).run({"x": np.zeros((1, 3, 4, 4), np.float32)}, output_names=["nope"])


def test_unknown_backend_and_threads():
    g, _, _ = conv_graph()
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tpu9000'"):
        Session(g, backend="tpu9000")
    with pytest.raises(InputError, match="threads"):
        Session(g, threads=0)


def test_unsupported_op_listed():
    g = Graph(
        inputs=[ValueInfo("a", "float32", (2,))],
        outputs=[ValueInfo("c", "float32", (2,))],
        nodes=[Node("FancyOp", ["a"], ["b"]), Node("OtherOp", ["b"], ["c"], domain="acme")],
    )
    with pytest.raises(UnsupportedOpError, match="FancyOp, acme::OtherOp") as e:
        Session(g)
    assert e.value.ops == ["FancyOp", "acme::OtherOp"]


def test_session_is_thread_safe():
    g, w, b = conv_graph()
    s = Session(g, threads=1)
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((2, 3, 6, 6)).astype(np.float32) for _ in range(8)]
    want = [reference(x, w, b) for x in xs]
    errors = []

    def worker(k):
        try:
            for _ in range(20):
                y = s.run({"x": xs[k]})["y"]
                np.testing.assert_allclose(y, want[k], rtol=1e-4, atol=1e-5)
        except Exception as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_outputs_are_not_overwritten_by_later_runs():
    g, w, b = conv_graph()
    s = Session(g)
    x1 = np.ones((1, 3, 4, 4), np.float32)
    y1 = s.run({"x": x1})["y"]
    keep = y1.copy()
    s.run({"x": -x1})
    np.testing.assert_array_equal(y1, keep)


def test_load_rejects_missing_file(tmp_path):
    with pytest.raises(edgeinfer.ModelFormatError, match="does not exist"):
        edgeinfer.load(tmp_path / "nope.onnx")
