"""The ``openvino`` backend: Session(graph, backend="openvino") answers like backend="cpu", at f32
unless asked otherwise."""
import numpy as np
import pytest

ov = pytest.importorskip("openvino")
pytest.importorskip("onnx")

import edgeinfer  # noqa: E402
from backend_cases import (SMALL_GRAPHS, assert_like_cpu, compare_with_cpu, internal_op_graph, matmul_256,  # noqa: E402
                           overridable_default, relative_error, rng_normal, run_threads)
from edgeinfer import (BackendUnavailableError, EdgeInferError, Graph, InputError, Node, Session,  # noqa: E402
                       UnsupportedOpError, ValueInfo)
from edgeinfer.backends import available_backends, get_backend  # noqa: E402
from models import light_input, light_model, model_path, wheel_model_feeds, wheel_model_path  # noqa: E402

VERSION = ov.__version__.split("-")[0]


def test_registered_and_available():
    ok, why = available_backends()["openvino"]
    assert ok and VERSION in why and "CPU" in why, why
    assert get_backend("openvino").NAME == "openvino"


def test_cli_lists_the_backend():
    from click.testing import CliRunner

    from edgeinfer.cli import cli

    out = CliRunner().invoke(cli, ["backends"]).output
    line = next(ln for ln in out.splitlines() if ln.startswith("openvino "))
    assert "available" in line and VERSION in line, out


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_small_graphs_match_cpu(name):
    """Names, dtypes (int64, bool, int32 outputs stay so) and shapes (a scalar) as the cpu's."""
    graph, feeds = SMALL_GRAPHS[name]()
    compare_with_cpu(graph, feeds, "openvino")


def test_light_model_matches_cpu():
    # densenet121 ends in a Conv, so its outputs vary (the light models' softmax outputs are all
    # 1/1000). Not squeezenet: its constant weights drive the logits to ~1e12, where float32
    # rounding differences of any two runtimes change the softmax completely.
    graph = edgeinfer.load(light_model("densenet121")[0])
    compare_with_cpu(graph, {graph.inputs[0].name: light_input(graph.inputs[0].shape)}, "openvino")


def test_ppocr_cls_two_image_sizes():
    """Symbolic batch, height and width: one static-shape compile per shape signature."""
    graph = edgeinfer.load(model_path("ppocr_cls"))
    sess, ref = Session(graph, backend="openvino", threads=1), Session(graph, threads=1)
    for k, shape in enumerate([(1, 3, 48, 192), (2, 3, 48, 160), (1, 3, 48, 192)]):
        feeds = {"x": np.random.default_rng(k).uniform(-1, 1, shape).astype(np.float32)}
        assert_like_cpu(sess.run(feeds), ref.run(feeds))
    assert len(sess._plans) == 2
    shapes = sorted(tuple(exe.compiled.inputs[0].get_shape()) for exe in sess._plans.values())
    assert shapes == [(1, 3, 48, 192), (2, 3, 48, 160)]


def test_control_flow_model_matches_cpu():
    """Silero VAD v5 (op18 export): an If node choosing the sample-rate branch."""
    graph = edgeinfer.load(wheel_model_path("silero_vad_ifless"))
    compare_with_cpu(graph, wheel_model_feeds("silero_vad_ifless", 0), "openvino")


def test_overridable_default_input():
    sess = Session(overridable_default(), backend="openvino")
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(sess.run({"x": x})["y"][0], [2, 3, 4])
    np.testing.assert_array_equal(sess.run({"x": x, "bias": np.zeros(3, np.float32)})["y"][0], [1, 1, 1])


def test_precision_is_f32_by_default():
    """bf16 (OpenVINO's own default on AVX512-BF16/AMX CPUs) errs by ~3e-3 relative here."""
    graph, x, exact = matmul_256()
    sess = Session(graph, backend="openvino", threads=1)
    assert relative_error(sess.run({"x": x})["y"], exact) < 1e-4
    exe = next(iter(sess._plans.values()))
    assert str(exe.compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")


def test_bf16_on_request():
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16 arithmetic")
    graph, x, exact = matmul_256()
    got = Session(graph, backend="openvino", threads=1, options={"precision": "bf16"}).run({"x": x})["y"]
    assert relative_error(got, exact) > 1e-3


@pytest.mark.parametrize("options", [{"performance_hint": "THROUGHPUT"}, {"performance_hint": "latency"},
                                     {"device": "AUTO:CPU"}, {"config": {"ENABLE_CPU_PINNING": False}}])
def test_options_pass_through(options):
    graph, feeds = SMALL_GRAPHS["conv_block"]()
    compare_with_cpu(graph, feeds, "openvino", options, threads=2)


def test_threads_and_streams_reach_openvino():
    graph, _ = SMALL_GRAPHS["int_outputs"]()
    exe = next(iter(Session(graph, backend="openvino", threads=2)._plans.values()))
    assert exe.compiled.get_property("INFERENCE_NUM_THREADS") == 2
    assert exe.compiled.get_property("NUM_STREAMS") == 1


def test_missing_device_names_the_available_ones():
    have = ov.Core().available_devices
    absent = next((d for d in ("GPU", "NPU") if not any(h.split(".")[0] == d for h in have)), None)
    if absent is None:
        pytest.skip("this machine has a GPU and an NPU")
    graph, _ = SMALL_GRAPHS["int_outputs"]()
    with pytest.raises(BackendUnavailableError, match=rf"'{absent}'.*available devices: \[.*'CPU'"):
        Session(graph, backend="openvino", options={"device": absent})
    with pytest.raises(BackendUnavailableError, match=rf"'{absent}'"):
        Session(graph, backend="openvino", options={"device": f"AUTO:{absent},CPU"})


@pytest.mark.parametrize("options, error, match", [
    ({"precision": "int8"}, InputError, "precision.*one of.*'int8'"),
    ({"performance_hint": "FAST"}, InputError, "performance_hint.*one of.*'FAST'"),
    ({"devices": "CPU"}, InputError, "no option.*'devices'.*'device'"),
    ({"config": {"NO_SUCH_PROPERTY": 1}}, EdgeInferError, "could not compile.*NO_SUCH_PROPERTY"),
])
def test_bad_options_are_named(options, error, match):
    graph, _ = SMALL_GRAPHS["int_outputs"]()
    with pytest.raises(error, match=match):
        Session(graph, backend="openvino", options=options)


def test_runs_from_four_threads_at_once():
    graph, _ = SMALL_GRAPHS["conv_block"]()
    sess, ref = Session(graph, backend="openvino", threads=1), Session(graph, threads=1)
    feeds = [{"x": rng_normal((2, 3, 16, 16), 30 + k)} for k in range(4)]
    for f, got in zip(feeds, run_threads(sess, feeds)):
        assert_like_cpu(got, ref.run(f))


def test_unsupported_ops_are_listed_before_compiling():
    with pytest.raises(UnsupportedOpError, match="edgeinfer::FusedGelu"):
        Session(internal_op_graph(), backend="openvino")
    assert get_backend("openvino").unsupported(_det_graph()) == ["Det"]


def test_conversion_failures_list_the_ops(monkeypatch):
    """An op the static list misses is still reported as UnsupportedOpError, naming it."""
    from edgeinfer.backends import openvino as backend

    monkeypatch.setattr(backend, "NO_CONVERSION", {})
    with pytest.raises(UnsupportedOpError, match="cannot convert 1 operator type.*Det") as e:
        Session(_det_graph(), backend="openvino")
    assert e.value.ops == ["Det"]


def _det_graph() -> Graph:
    return Graph(inputs=[ValueInfo("x", "float32", (2, 3, 3))], outputs=[ValueInfo("d", "float32", (2,))],
                 nodes=[Node("Det", ("x",), ("d",))], opset={"": 21})
