"""Round trips through TFLite and the per-tensor check mode.

* ``.tflite -> .onnx``: BlazeFace and the other face-detection models run in ONNX Runtime and
  match LiteRT on the original.
* ONNX -> TFLite -> ONNX and TFLite -> ONNX -> TFLite keep the outputs (and the signature:
  the importer reads the layouts the exporter recorded).
* ``edgeinfer convert --check`` compares every shared tensor and names the first op that
  diverges.
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import edgeinfer
from edgeinfer.cli import cli

import models

litert = pytest.importorskip("ai_edge_litert.interpreter")
ort = pytest.importorskip("onnxruntime")

from test_tflite_import import _feeds, _input_details, litert_run  # noqa: E402


def _ort(path, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max()) / max(float(np.abs(a).max()), 1e-6)


@pytest.mark.parametrize("name", ["fd_short_range", "fd_back", "fd_full_range", "fd_full_range_sparse",
                                  "fd_face_landmark", "fd_iris_landmark", "mp_selfie_segmentation"])
def test_tflite_to_onnx_runs_in_onnxruntime(name, tmp_path):
    src = models.tflite_model_path(name)
    feeds = _feeds(_input_details(src), name)
    _, want = litert_run(src, feeds)
    onnx_path = tmp_path / "m.onnx"
    graph = edgeinfer.load(src)
    edgeinfer.save(graph, onnx_path)
    got = _ort(onnx_path, {v.name: x for v, x in zip(graph.inputs, feeds)})
    for w, g in zip(want, got):
        assert g.shape == w.shape
        assert _rel(w, g) <= 1e-3


@pytest.mark.parametrize("name", ["ppocr_cls", "ppocr_rec"])
def test_onnx_to_tflite_to_onnx(name, tmp_path):
    from edgeinfer.converters.tflite_export import export_tflite

    shape = {"ppocr_cls": (1, 3, 48, 192), "ppocr_rec": (1, 3, 48, 320)}[name]
    src = models.model_path(name)
    graph = edgeinfer.load(src)
    export_tflite(graph, tmp_path / "m.tflite", input_shapes={"x": shape})
    back = edgeinfer.load(tmp_path / "m.tflite")
    assert [v.name for v in back.inputs] == ["x"] and back.inputs[0].shape == shape  # NCHW again
    edgeinfer.save(back, tmp_path / "back.onnx")
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    want = _ort(src, {"x": x})
    got = _ort(tmp_path / "back.onnx", {"x": x})
    for w, g in zip(want, got):
        assert g.shape == w.shape and _rel(w, g) <= 1e-3


@pytest.mark.parametrize("name", ["fd_short_range", "mp_selfie_segmentation", "mp_palm_detection_lite"])
def test_tflite_to_onnx_to_tflite(name, tmp_path):
    from edgeinfer.converters.tflite_export import export_tflite

    src = models.tflite_model_path(name)
    feeds = _feeds(_input_details(src), name)
    _, want = litert_run(src, feeds)
    edgeinfer.save(edgeinfer.load(src), tmp_path / "m.onnx")
    report = export_tflite(edgeinfer.load(tmp_path / "m.onnx"), tmp_path / "back.tflite")
    assert report.transposes == 0  # the NHWC model comes back without a single transpose
    assert all(p == sorted(p) for p in report.inputs.values())  # and with its NHWC signature
    _, got = litert_run(tmp_path / "back.tflite", feeds)
    for w, g in zip(want, got):
        assert g.shape == w.shape and _rel(w, g) <= 1e-3


def test_check_mode_passes_a_faithful_conversion(tmp_path):
    src = models.tflite_model_path("fd_short_range")
    result = CliRunner().invoke(cli, ["convert", str(src), str(tmp_path / "m.onnx"), "--check"])
    assert result.exit_code == 0, result.output
    assert "no tensor diverges" in result.output


def test_check_mode_names_the_first_diverging_op(tmp_path):
    import onnx
    from onnx import numpy_helper

    src = models.tflite_model_path("fd_short_range")
    edgeinfer.save(edgeinfer.load(src), tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    # corrupt the bias of one convolution in the middle of the network
    convs = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    victim = convs[len(convs) // 2]
    inits = {t.name: t for t in model.graph.initializer}
    bias = numpy_helper.to_array(inits[victim.input[2]]).copy()
    bias += 0.5 * (np.abs(bias).max() + 1)
    inits[victim.input[2]].CopyFrom(numpy_helper.from_array(bias, victim.input[2]))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    from edgeinfer.converters.check import check_conversion

    report = check_conversion(src, tmp_path / "bad.onnx")
    bad = report.first_divergence
    assert bad is not None
    # the first diverging tensor is the corrupted conv's output or the op right after it
    downstream = {victim.output[0]} | {o for n in model.graph.node if victim.output[0] in n.input for o in n.output}
    assert bad.name in downstream or bad.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RELU"), report.summary()
    assert "first divergence" in report.summary()
