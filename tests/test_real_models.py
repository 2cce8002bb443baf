"""Real models end to end: the cpu backend against ONNX Runtime and stored references,
and lossless round trips through .eim and back to ONNX.

Models: the 9 ONNX "light" CNNs shipped inside the onnx wheel and PP-OCRv4 det/rec + the
PP-OCR direction classifier from rapidocr-onnxruntime (downloaded once, see models.py).
"""
import numpy as np
import pytest

import edgeinfer
from edgeinfer import Session
from models import LIGHT_MODELS, light_input, light_model, model_path

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

PPOCR_SHAPES = {"ppocr_det": (1, 3, 640, 640), "ppocr_rec": (1, 3, 48, 320), "ppocr_cls": (1, 3, 48, 192)}


def close_enough(got, want):
    """The issue's bar: max abs error <= 1e-3 * max(1, max |reference|)."""
    bound = 1e-3 * max(1.0, float(np.max(np.abs(want))))
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    assert got.shape == want.shape, (got.shape, want.shape)
    assert err <= bound, f"max abs error {err:.3g} > {bound:.3g}"
    return err


def ort_run(model, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    data = model if isinstance(model, bytes) else open(model, "rb").read()
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def feeds_for(name):
    if name in PPOCR_SHAPES:
        path = model_path(name)
        x = np.random.default_rng(0).uniform(-1, 1, PPOCR_SHAPES[name]).astype(np.float32)
        return path, {"x": x}
    path, _ = light_model(name)
    graph = edgeinfer.load(path)
    inp = graph.required_inputs()[0]
    return path, {inp.name: light_input(tuple(d if isinstance(d, int) else 1 for d in inp.shape))}


ALL = LIGHT_MODELS + list(PPOCR_SHAPES)
_cache = {}


def cpu_result(name):
    if name not in _cache:
        path, feeds = feeds_for(name)
        graph = edgeinfer.load(path)
        out = Session(graph).run(feeds)
        _cache[name] = (path, feeds, graph, out)
    return _cache[name]


@pytest.mark.parametrize("name", ALL)
def test_cpu_matches_onnxruntime(name):
    path, feeds, graph, out = cpu_result(name)
    want = ort_run(str(path), feeds)
    for (oname, got), ref in zip(out.items(), want):
        close_enough(got, ref)


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_match_stored_reference(name):
    path, feeds, graph, out = cpu_result(name)
    _, ref_path = light_model(name)
    ref = onnx.numpy_helper.to_array(onnx.load_tensor(str(ref_path)))
    close_enough(next(iter(out.values())), ref)


@pytest.mark.parametrize("name", ALL)
def test_eim_round_trip_is_bit_identical(name, tmp_path):
    path, feeds, graph, out = cpu_result(name)
    target = tmp_path / "model.eim"
    edgeinfer.save(graph, target)
    again = Session(edgeinfer.load(target)).run(feeds)
    assert list(again) == list(out)
    for k in out:
        assert again[k].dtype == out[k].dtype
        np.testing.assert_array_equal(again[k], out[k])


@pytest.mark.parametrize("name", ALL)
def test_onnx_round_trip_passes_checker_and_runs_in_ort(name, tmp_path):
    from edgeinfer.converters.onnx_export import export_onnx

    path, feeds, graph, out = cpu_result(name)
    target = tmp_path / "model.onnx"
    proto = export_onnx(graph, target)
    onnx.checker.check_model(proto, full_check=True)
    got = ort_run(target.read_bytes(), feeds)
    want = ort_run(str(path), feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(w).max())))
