"""Static int8 on real models with real data: PP-OCRv4 rec (rendered text lines, character
accuracy) and PP-OCRv4 det (rendered pages, binarized probability maps), on the cpu backend and
in the runtimes that fuse QDQ into integer kernels. The full measurement, with speed, is
benchmarks/quantize_ocr.py; this keeps it honest in CI with fewer lines and pages."""
import json

import numpy as np
import pytest

pytest.importorskip("PIL")

import edgeinfer  # noqa: E402
from edgeinfer.converters.quantize import quantize  # noqa: E402
from models import model_path  # noqa: E402
from ocr_lines import batch, charset, evaluate, make_lines  # noqa: E402


@pytest.fixture(scope="module")
def rec():
    src = model_path("ppocr_rec")
    g = edgeinfer.load(src)
    lines = make_lines(24, split="calib")
    order = sorted(range(len(lines)), key=lambda i: lines[i][1].shape[1] / lines[i][1].shape[0])
    feeds = [{"x": batch([lines[i][1] for i in order[s:s + 8]])} for s in range(0, len(order), 8)]
    return g, quantize(g, feeds, method="mse"), charset(src)


def _accuracy(graph, chars, lines, backend="cpu"):
    sess = edgeinfer.Session(graph, backend=backend, threads=1)
    return evaluate(lambda x: sess.run({"x": x})[sess.outputs[0].name], lines, chars)["char_accuracy"]


def test_rec_int8_graph_and_size(rec, tmp_path):
    g, q, _ = rec
    ops = q.op_histogram()
    info = json.loads(q.metadata["edgeinfer.quantization"])
    layers = info["layers"]
    # every Conv and MatMul with a constant weight, plus the attention MatMuls, reads int8
    assert len(layers) == 51 and all(x["precision"] == "int8" for x in layers), layers
    assert info["equalized_pairs"] == 3 and info["smoothed_sites"] >= 1
    assert ops["QuantizeLinear"] == len({n.inputs[0] for n in q.nodes if n.op_type == "QuantizeLinear"})
    assert "BatchNormalization" not in ops
    for suffix in (".onnx", ".eim"):
        edgeinfer.save(q, tmp_path / f"q{suffix}")
        assert (tmp_path / f"q{suffix}").stat().st_size <= 3.2e6, suffix  # the limit
    assert edgeinfer.load(tmp_path / "q.eim").op_histogram() == ops


def test_rec_int8_reads_text_almost_like_fp32(rec):
    g, q, chars = rec
    lines = make_lines(40, split="test")
    fp32 = _accuracy(g, chars, lines)
    assert fp32 >= 0.98
    for backend in ("cpu", "ort", "openvino"):
        assert _accuracy(q, chars, lines, backend) >= fp32 - 0.01, backend


def test_det_int8_maps_agree_with_fp32():
    from ocr_pages import binary_iou, calib_pages, det_inputs, test_pages

    g = edgeinfer.load(model_path("ppocr_det"))
    name = g.inputs[0].name
    q = quantize(g, [{name: x} for x in det_inputs(calib_pages(4))], method="mse")
    assert all(x["precision"] == "int8" for x in json.loads(q.metadata["edgeinfer.quantization"])["layers"])
    xs = det_inputs(test_pages(2))
    ref = edgeinfer.Session(g, threads=1)
    for backend in ("cpu", "openvino"):
        sess = edgeinfer.Session(q, backend=backend, threads=1)
        ious = [binary_iou(ref.run({name: x})[ref.outputs[0].name], sess.run({name: x})[sess.outputs[0].name])
                for x in xs]
        assert min(ious) >= 0.93 and np.mean(ious) >= 0.95, (backend, ious)
