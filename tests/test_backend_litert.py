"""The ``litert`` backend: Session(graph, backend="litert") answers like backend="cpu"."""
import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
onnx = pytest.importorskip("onnx")

import edgeinfer  # noqa: E402
from edgeinfer import BackendUnavailableError, Graph, Node, Session, UnsupportedOpError, ValueInfo  # noqa: E402
from edgeinfer.backends import available_backends, get_backend  # noqa: E402
from models import model_path  # noqa: E402
from test_tflite_export import conv_chain  # noqa: E402


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEINFER_CACHE", str(tmp_path / "cache"))


def close(a, b, tol=1e-4):
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    assert float(np.max(np.abs(a - b))) <= tol * max(1.0, float(np.max(np.abs(b))))


def test_registered_and_available():
    ok, why = available_backends()["litert"]
    assert ok, why
    assert get_backend("litert").NAME == "litert"


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_session_matches_cpu_backend(tmp_path, threads):
    g = edgeinfer.load(conv_chain(tmp_path / "chain.onnx"))
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = Session(g).run({"x": x})
    got = Session(g, backend="litert", threads=threads).run({"x": x})
    assert list(got) == list(want)
    close(got["y"], want["y"])


def test_rank4_output_and_nchw_option(tmp_path):
    """A rank-4 NCHW output: the model keeps NHWC inside, the session answers NCHW."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = Graph(inputs=[ValueInfo("x", "float32", (1, 3, 8, 8))], outputs=[ValueInfo("y", "float32", (1, 4, 8, 8))],
              nodes=[Node("Conv", ("x", "w"), ("c",), {"pads": [1, 1, 1, 1]}), Node("Sigmoid", ("c",), ("y",))],
              constants={"w": w}, opset={"": 21})
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = Session(g).run({"x": x})["y"]
    for options in ({}, {"nchw_inputs": True}, {"reference": True}):
        close(Session(g, backend="litert", options=options).run({"x": x})["y"], want)


def test_symbolic_dims_compile_per_shape(tmp_path):
    g = Graph(inputs=[ValueInfo("x", "float32", ("n", 5))], outputs=[ValueInfo("y", "float32", ("n", 5))],
              nodes=[Node("Softmax", ("x",), ("y",), {"axis": -1})], opset={"": 21})
    sess = Session(g, backend="litert")
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 5)).astype(np.float32)
        close(sess.run({"x": x})["y"], Session(g).run({"x": x})["y"])


def test_cache_reuses_the_exported_file(tmp_path):
    from edgeinfer.backends import litert

    g = edgeinfer.load(conv_chain(tmp_path / "chain.onnx"))
    Session(g, backend="litert")
    files = sorted(litert.cache_dir().glob("*.tflite"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    Session(g, backend="litert", threads=2)  # threads do not change the file
    assert sorted(litert.cache_dir().glob("*.tflite")) == files and files[0].stat().st_mtime_ns == stamp
    g2 = g.copy()
    g2.constants = dict(g.constants, b1=g.constants["b1"] + 1)
    Session(g2, backend="litert")
    assert len(list(litert.cache_dir().glob("*.tflite"))) == 2


def test_reference_kernels_agree(tmp_path):
    g = edgeinfer.load(conv_chain(tmp_path / "chain.onnx"))
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ref = Session(g, backend="litert", options={"reference": True}).run({"x": x})["y"]
    fast = Session(g, backend="litert").run({"x": x})["y"]
    close(ref, fast, 1e-5)


# LiteRT's Delegate.__del__ fails on a delegate that never loaded (its own bug): ignore that
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_missing_delegate_is_a_clear_error(tmp_path):
    g = edgeinfer.load(conv_chain(tmp_path / "chain.onnx"))
    for lib in (str(tmp_path / "libnope_delegate.so"), "libnope_delegate.so"):
        with pytest.raises(BackendUnavailableError, match="libnope_delegate.so"):
            Session(g, backend="litert", options={"delegate": lib})
    bad = tmp_path / "libbroken.so"
    bad.write_bytes(b"not a shared library")
    with pytest.raises(BackendUnavailableError, match="libbroken.so"):
        Session(g, backend="litert", options={"delegate": str(bad), "delegate_options": {"x": "1"}})


def test_unsupported_ops_refused_by_session():
    g = Graph(inputs=[ValueInfo("x", "float32", (2, 3))], outputs=[ValueInfo("y", "float32", (2, 3))],
              nodes=[Node("Hardmax", ("x",), ("y",))], opset={"": 21})
    assert get_backend("litert").unsupported(g) == ["Hardmax"]
    with pytest.raises(UnsupportedOpError, match="Hardmax"):
        Session(g, backend="litert")


def test_int_output_and_overridable_default(tmp_path):
    g = Graph(inputs=[ValueInfo("x", "float32", (2, 6)), ValueInfo("bias", "float32", (6,))],
              outputs=[ValueInfo("i", "int64", (2,)), ValueInfo("s", "float32", (2, 6))],
              nodes=[Node("Add", ("x", "bias"), ("s",)), Node("ArgMax", ("s",), ("i",), {"axis": 1, "keepdims": 0})],
              constants={"bias": np.linspace(-1, 1, 6).astype(np.float32)}, opset={"": 21})
    x = np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)
    want = Session(g).run({"x": x})
    got = Session(g, backend="litert").run({"x": x})
    np.testing.assert_array_equal(got["i"], want["i"])
    close(got["s"], want["s"])
    b = np.zeros(6, np.float32)
    got = Session(g, backend="litert").run({"x": x, "bias": b})
    close(got["s"], Session(g).run({"x": x, "bias": b})["s"])


@pytest.mark.parametrize("name,shape", [("ppocr_rec", (1, 3, 48, 320)), ("ppocr_cls", (1, 3, 48, 192))])
def test_ppocr_session_matches_cpu(name, shape):
    g = edgeinfer.load(model_path(name))
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    want = Session(g).run({"x": x})
    got = Session(g, backend="litert", threads=1).run({"x": x})
    assert list(got) == list(want)
    for k in want:
        close(got[k], want[k], 1e-3)


def test_zero_d_inputs_and_outputs_stay_zero_d():
    """A scalar feed (a run-time Clip bound) and a scalar result keep rank 0 through LiteRT."""
    g = Graph(inputs=[ValueInfo("x", "float32", (2, 3)), ValueInfo("lo", "float32", ())],
              outputs=[ValueInfo("y", "float32", (2, 3)), ValueInfo("m", "float32", ())],
              nodes=[Node("Clip", ("x", "lo"), ("y",)), Node("ReduceMax", ("y",), ("m",), {"keepdims": 0})],
              opset={"": 21})
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3) - 2, "lo": np.array(0.5, np.float32)}
    got = Session(g, backend="litert").run(feeds)
    want = Session(g).run(feeds)
    assert got["m"].shape == () and got["y"].shape == (2, 3)
    close(got["y"], want["y"])
    close(got["m"], want["m"])
