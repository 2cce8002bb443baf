"""The ``ort`` backend: Session(graph, backend="ort") answers like backend="cpu"."""
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import edgeinfer  # noqa: E402
from backend_cases import (SMALL_GRAPHS, assert_like_cpu, compare_with_cpu, internal_op_graph, matmul_256,  # noqa: E402
                           overridable_default, relative_error, rng_normal, run_threads)
from edgeinfer import (BackendUnavailableError, EdgeInferError, Graph, InputError, Node,  # noqa: E402
                       Session, UnsupportedOpError, ValueInfo)
from edgeinfer.backends import available_backends, get_backend  # noqa: E402
from models import light_input, light_model, model_path, wheel_model_feeds, wheel_model_path  # noqa: E402


def test_registered_and_available():
    ok, why = available_backends()["ort"]
    assert ok and ort.__version__ in why, why
    assert get_backend("ort").NAME == "ort"


def test_cli_lists_the_backend():
    from click.testing import CliRunner

    from edgeinfer.cli import cli

    out = CliRunner().invoke(cli, ["backends"]).output
    line = next(ln for ln in out.splitlines() if ln.startswith("ort "))
    assert "available" in line and ort.__version__ in line, out


def test_import_edgeinfer_stays_numpy_only():
    code = ("import sys, edgeinfer, edgeinfer.backends.ort, edgeinfer.backends.openvino; "
            "print([m for m in ('onnxruntime', 'openvino', 'onnx') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_small_graphs_match_cpu(name):
    graph, feeds = SMALL_GRAPHS[name]()
    compare_with_cpu(graph, feeds, "ort")


@pytest.mark.parametrize("name", ["squeezenet", "densenet121"])
def test_light_models_match_cpu(name):
    graph = edgeinfer.load(light_model(name)[0])
    x = light_input(graph.inputs[0].shape)
    compare_with_cpu(graph, {graph.inputs[0].name: x}, "ort")


def test_ppocr_cls_two_image_sizes():
    """Symbolic batch, height and width: the session compiles once per shape signature."""
    graph = edgeinfer.load(model_path("ppocr_cls"))
    sess, ref = Session(graph, backend="ort", threads=1), Session(graph, threads=1)
    for k, shape in enumerate([(1, 3, 48, 192), (2, 3, 48, 160)]):
        feeds = {"x": np.random.default_rng(k).uniform(-1, 1, shape).astype(np.float32)}
        assert_like_cpu(sess.run(feeds), ref.run(feeds))
    assert len(sess._plans) == 2


@pytest.mark.parametrize("name", ["silero_vad_ifless", "oww_silero_vad_v4"])
def test_control_flow_models_match_cpu(name):
    """Models with If subgraphs (silero v5 op18: one If; v4: If around LSTMs)."""
    graph = edgeinfer.load(wheel_model_path(name))
    if name == "oww_silero_vad_v4":
        feeds = {"input": rng_normal((1, 1536), 0) * 0.1, "sr": np.array(16000, np.int64),
                 "h": np.zeros((2, 1, 64), np.float32), "c": np.zeros((2, 1, 64), np.float32)}
    else:
        feeds = wheel_model_feeds(name, 0)
    compare_with_cpu(graph, feeds, "ort")


def test_silero_vad_v6_exports():
    graph = edgeinfer.load(wheel_model_path("silero_vad"))
    compare_with_cpu(graph, wheel_model_feeds("silero_vad", 0), "ort")


def test_symbolic_dims_compile_per_shape():
    graph, _ = SMALL_GRAPHS["layer_norm_gelu"]()
    sess, ref = Session(graph, backend="ort", threads=1), Session(graph, threads=1)
    for t in (1, 7, 7, 3):
        x = rng_normal((1, t, 16), t)
        assert_like_cpu(sess.run({"x": x}), ref.run({"x": x}))
    assert len(sess._plans) == 3


def test_overridable_default_input():
    sess = Session(overridable_default(), backend="ort")
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(sess.run({"x": x})["y"][0], [2, 3, 4])
    np.testing.assert_array_equal(sess.run({"x": x, "bias": np.zeros(3, np.float32)})["y"][0], [1, 1, 1])


def test_precision_is_f32():
    graph, x, exact = matmul_256()
    assert relative_error(Session(graph, backend="ort", threads=1).run({"x": x})["y"], exact) < 1e-4


@pytest.mark.parametrize("threads", [None, 1, 2])
@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_threads_and_optimization_levels(threads, level):
    graph, feeds = SMALL_GRAPHS["conv_block"]()
    compare_with_cpu(graph, feeds, "ort", {"graph_optimization_level": level}, threads=threads)


def test_session_and_provider_options_pass_through():
    graph, feeds = SMALL_GRAPHS["int_outputs"]()  # static shapes: compiled when the session is made
    options = {"providers": "CPUExecutionProvider",
               "provider_options": {"CPUExecutionProvider": {"arena_extend_strategy": "kSameAsRequested"}},
               "session_options": {"enable_mem_pattern": False, "session.intra_op.allow_spinning": "0"}}
    sess = Session(graph, backend="ort", threads=1, options=options)
    exe = next(iter(sess._plans.values()))
    assert exe.providers == ["CPUExecutionProvider"]
    assert exe.session.get_session_options().enable_mem_pattern is False
    assert_like_cpu(sess.run(feeds), Session(graph).run(feeds))


def test_missing_provider_names_the_available_ones():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    graph, _ = SMALL_GRAPHS["int_outputs"]()
    with pytest.raises(BackendUnavailableError, match=r"CUDAExecutionProvider.*available: \[.*CPUExecutionProvider"):
        Session(graph, backend="ort", options={"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]})


@pytest.mark.parametrize("options, match", [
    ({"provider": ["CPUExecutionProvider"]}, "no option.*'provider'.*providers"),
    ({"graph_optimization_level": "max"}, "graph_optimization_level.*one of.*'max'"),
    ({"session_options": {"no_such_attribute": 1}}, "no_such_attribute.*intra_op_num_threads"),
    ({"provider_options": [{}, {}]}, "one dict per provider"),
])
def test_bad_options_are_named(options, match):
    graph, _ = SMALL_GRAPHS["int_outputs"]()
    with pytest.raises(InputError, match=match):
        Session(graph, backend="ort", options=options)


def test_runs_from_four_threads_at_once():
    graph, _ = SMALL_GRAPHS["conv_block"]()
    sess, ref = Session(graph, backend="ort", threads=1), Session(graph, threads=1)
    feeds = [{"x": rng_normal((2, 3, 16, 16), 20 + k)} for k in range(4)]
    for f, got in zip(feeds, run_threads(sess, feeds)):
        assert_like_cpu(got, ref.run(f))


def test_unsupported_ops_are_listed_before_compiling():
    with pytest.raises(UnsupportedOpError, match="edgeinfer::FusedGelu") as e:
        Session(internal_op_graph(), backend="ort")
    assert e.value.ops == ["edgeinfer::FusedGelu"]
    g = Graph(inputs=[ValueInfo("png", "uint8", ("n",))], outputs=[ValueInfo("img", "uint8", None)],
              nodes=[Node("ImageDecoder", ("png",), ("img",))], opset={"": 21})
    assert get_backend("ort").unsupported(g) == ["ImageDecoder"]


def test_ort_rejection_is_an_edgeinfer_error():
    """ORT has no int16 Max kernel: the op type passes ``unsupported``, loading fails, named."""
    g = Graph(inputs=[ValueInfo("a", "int16", (3,)), ValueInfo("b", "int16", (3,))],
              outputs=[ValueInfo("m", "int16", (3,))], nodes=[Node("Max", ("a", "b"), ("m",))], opset={"": 21})
    assert get_backend("ort").unsupported(g) == []
    with pytest.raises(EdgeInferError, match="ONNX Runtime could not load.*Max"):
        Session(g, backend="ort")


def test_large_weights_go_through_a_temporary_file(monkeypatch, tmp_path):
    """Over protobuf's 2 GiB the model is written with external data to a temporary folder
    (simulated with a lower threshold), which is gone once the session is open."""
    from edgeinfer.converters import onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 0)
    monkeypatch.setattr(onnx_export, "EXTERNAL_MIN_TENSOR_BYTES", 16)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    graph, feeds = SMALL_GRAPHS["conv_block"]()
    compare_with_cpu(graph, feeds, "ort")
    assert list(tmp_path.iterdir()) == []
