"""TFLite import: real models from PyPI wheels run on the cpu backend and match LiteRT.

Float models must agree within 1e-3 of the output's scale; quantized outputs within one
quantization step. LiteRT runs the original file (default resolver, one thread), edgeinfer
the imported graph.
"""
from __future__ import annotations

import numpy as np
import pytest

import edgeinfer
from edgeinfer.errors import EdgeInferError, ModelFormatError, UnsupportedOpError

import models

litert = pytest.importorskip("ai_edge_litert.interpreter")

# shapes for inputs whose signature has -1 dims
DYNAMIC_SHAPES = {"oww_tfl_melspectrogram": [(1, 1280)], "oww_tfl_embedding": [(1, 76, 32, 1)]}


def _feeds(details, name: str, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k, d in enumerate(details):
        shape = DYNAMIC_SHAPES.get(name, [None] * len(details))[k] or tuple(int(v) for v in d["shape"])
        dtype = np.dtype(d["dtype"])
        if dtype.kind == "f":
            out.append(rng.uniform(-1, 1, shape).astype(dtype))
        elif dtype == np.bool_:
            out.append(rng.integers(0, 2, shape).astype(bool))
        else:
            info = np.iinfo(dtype)
            out.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype))
    return out


def litert_run(path, feeds: list[np.ndarray]) -> tuple[list[dict], list[np.ndarray]]:
    interp = litert.Interpreter(model_path=str(path), num_threads=1)
    for d, x in zip(interp.get_input_details(), feeds):
        if tuple(d["shape"]) != x.shape:
            interp.resize_tensor_input(d["index"], x.shape)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), feeds):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    details = interp.get_output_details()
    return details, [interp.get_tensor(d["index"]).copy() for d in details]


def _input_details(path) -> list[dict]:
    return litert.Interpreter(model_path=str(path)).get_input_details()


@pytest.mark.parametrize("name", sorted(models.TFLITE_MODELS))
def test_real_model_matches_litert(name):
    path = models.tflite_model_path(name)
    graph = edgeinfer.load(path)
    in_details = _input_details(path)
    assert [v.dtype for v in graph.inputs] == [np.dtype(d["dtype"]).name for d in in_details]
    feeds = _feeds(in_details, name)
    out_details, expected = litert_run(path, feeds)
    sess = edgeinfer.Session(graph, threads=1)
    got = sess.run({v.name: x for v, x in zip(graph.inputs, feeds)})
    assert len(got) == len(expected)
    for v, d, want in zip(graph.outputs, out_details, expected):
        have = got[v.name]
        assert have.shape == want.shape, (v.name, have.shape, want.shape)
        assert have.dtype == want.dtype, (v.name, have.dtype, want.dtype)
        if want.dtype.kind == "f":
            scale = max(float(np.abs(want).max()), 1e-6)
            err = float(np.abs(have.astype(np.float64) - want).max()) / scale
            assert err <= 1e-3, f"{name} output {v.name}: error {err:.2e} of scale {scale:.3g}"
        else:  # quantized: one quantization step
            step = np.abs(have.astype(np.int64) - want.astype(np.int64)).max()
            assert step <= 1, f"{name} output {v.name}: off by {step} quantization steps"


def test_signature_keeps_nhwc_and_names():
    path = models.tflite_model_path("fd_short_range")
    graph = edgeinfer.load(path)
    details = _input_details(path)
    assert [v.name for v in graph.inputs] == [d["name"] for d in details]
    assert graph.inputs[0].shape == (1, 128, 128, 3)


def test_transposes_cancel_between_convolutions():
    graph = edgeinfer.load(models.tflite_model_path("fd_short_range"))
    hist = graph.op_histogram()
    assert hist.get("Conv", 0) > 20
    # one Transpose into the network and one per output branch, not two per conv
    assert hist.get("Transpose", 0) <= 1 + 2 * len(graph.outputs), hist


def test_quantized_model_keeps_qdq():
    graph = edgeinfer.load(models.tflite_model_path("mww_okay_nabu"))
    hist = graph.op_histogram()
    assert hist.get("DequantizeLinear", 0) > 0 and hist.get("QuantizeLinear", 0) > 0
    assert graph.inputs[0].dtype == "int8"


def test_unsupported_custom_ops_are_listed(tmp_path):
    path = models._member_path("mediapipe", "0.10.14",
                               "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite")
    with pytest.raises(UnsupportedOpError) as e:
        edgeinfer.load(path)
    for op in ("Landmarks2TransformMatrix", "TransformLandmarks", "TransformTensorBilinear"):
        assert op in str(e.value)


def test_truncated_file_is_a_format_error(tmp_path):
    data = models.tflite_model_path("fd_short_range").read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFormatError):
        edgeinfer.load(bad)
    tiny = tmp_path / "tiny.tflite"
    tiny.write_bytes(b"\x18\x00\x00\x00TFL3")
    with pytest.raises(EdgeInferError):
        edgeinfer.load(tiny)
