"""The bundled example: the digits CNN and its test set ship with the package and work."""
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

import edgeinfer

EXAMPLES = files("edgeinfer") / "examples"
MODEL = Path(str(EXAMPLES / "digits_cnn.onnx"))
DATA = Path(str(EXAMPLES / "digits_test.npz"))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def test_set():
    with np.load(DATA) as d:
        return d["images"], d["labels"]


def test_bundled_files_are_small_and_well_formed(test_set):
    assert MODEL.is_file() and DATA.is_file()
    assert 4_000 < MODEL.stat().st_size < 200_000
    assert DATA.stat().st_size < 200_000
    images, labels = test_set
    assert images.dtype == np.float32 and images.shape == (450, 1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (450,)
    assert images.min() >= 0.0 and images.max() <= 1.0  # load_digits pixels / 16
    assert set(np.unique(labels)) == set(range(10))


def test_onnx_model_is_valid_and_documented():
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(MODEL))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert {"description", "dataset", "test_accuracy", "reproduce"} <= set(meta)
    assert "/ 16.0" in meta["description"]
    assert float(meta["test_accuracy"]) >= 0.95
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" in ops  # kept on purpose: exercises Conv+BN folding


def test_loads_with_symbolic_batch():
    graph = edgeinfer.load(MODEL)
    (inp,) = graph.required_inputs()
    assert inp.name == "image" and inp.dtype == "float32"
    assert inp.shape == ("N", 1, 8, 8)
    assert [(v.name, v.dtype) for v in graph.outputs] == [("logits", "float32")]
    assert tuple(graph.outputs[0].shape) in {("N", 10), (None, 10)}


def test_accuracy_through_session(test_set):
    images, labels = test_set
    sess = edgeinfer.Session(MODEL, backend="cpu", threads=1)
    logits = sess.run({"image": images})["logits"]
    assert logits.shape == (450, 10) and logits.dtype == np.float32
    assert float((logits.argmax(1) == labels).mean()) >= 0.95
    # a single image through the same session (a new shape signature) agrees with the batch
    one = sess.run({"image": images[:1]})["logits"]
    np.testing.assert_allclose(one, logits[:1], rtol=1e-5, atol=1e-5)


def test_matches_onnxruntime(test_set):
    ort = pytest.importorskip("onnxruntime")
    images, _ = test_set
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(str(MODEL), so, providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]
    ours = edgeinfer.Session(MODEL).run({"image": images})["logits"]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    assert (ours.argmax(1) == ref.argmax(1)).all()


@pytest.mark.slow
def test_training_script_reproduces_the_model(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    assert train_digits.main(["--out-dir", str(tmp_path)]) == 0
    with np.load(tmp_path / "digits_test.npz") as new, np.load(DATA) as old:
        np.testing.assert_array_equal(new["labels"], old["labels"])
        np.testing.assert_array_equal(new["images"], old["images"])
    sess = edgeinfer.Session(tmp_path / "digits_cnn.onnx")
    with np.load(DATA) as d:
        acc = (sess.run({"image": d["images"]})["logits"].argmax(1) == d["labels"]).mean()
    assert acc >= 0.95
