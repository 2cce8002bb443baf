"""The OCR text-line data and metric layer (tests/ocr_lines.py) and fp32 PP-OCRv4 rec accuracy
on it, on the cpu backend and in ONNX Runtime."""
import numpy as np
import pytest

pytest.importorskip("PIL")
onnx = pytest.importorskip("onnx")

import edgeinfer  # noqa: E402
from models import model_path  # noqa: E402
from ocr_lines import (  # noqa: E402
    BLANK, FONTS, batch, char_accuracy, charset, ctc_decode, edit_distance, evaluate, make_lines,
    preprocess, render_line,
)

N_ACCURACY = 60


@pytest.fixture(scope="module")
def rec():
    return model_path("ppocr_rec")


@pytest.fixture(scope="module")
def chars(rec):
    return charset(rec)


@pytest.fixture(scope="module")
def test_lines():
    return make_lines(N_ACCURACY, split="test")


@pytest.fixture(scope="module")
def cpu_report(rec, chars, test_lines):
    sess = edgeinfer.Session(str(rec), threads=1)
    name, out = sess.inputs[0].name, sess.outputs[0].name
    return evaluate(lambda x: sess.run({name: x})[out], test_lines, chars)


# --- charset and decoding ------------------------------------------------------------------

def test_charset_matches_output_width(rec, chars):
    sess = edgeinfer.Session(str(rec), threads=1)
    x = preprocess(make_lines(1, split="test")[0][1])
    logits = sess.run({sess.inputs[0].name: x})[sess.outputs[0].name]
    assert logits.shape[-1] == len(chars) == 6625
    assert chars[0] == BLANK and chars[-1] == " "
    assert len(set(chars)) == len(chars), "a character appears twice: decoding would be ambiguous"
    assert all(ch in chars for ch in "AZaz09.,:;!?$%&()/-'\"#@+")


def _tiny_rec(path, table, classes):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, classes])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, classes])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "rec", [x], [y])
    model = onnx.helper.make_model(graph)
    onnx.helper.set_model_props(model, {"character": "\n".join(table)})
    onnx.save(model, path)
    return path


def test_charset_space_convention_and_mismatch(tmp_path):
    assert charset(_tiny_rec(tmp_path / "with_space.onnx", "ab", 4)) == [BLANK, "a", "b", " "]
    assert charset(_tiny_rec(tmp_path / "no_space.onnx", "ab", 3)) == [BLANK, "a", "b"]
    with pytest.raises(ValueError, match=r"bad\.onnx.*7 classes.*2 \+ blank"):
        charset(_tiny_rec(tmp_path / "bad.onnx", "ab", 7))


def test_ctc_decode_hand_made_logits():
    chars = [BLANK, "a", "b", " "]
    steps = [0, 1, 1, 0, 1, 2, 2, 3, 3, 0, 2, 0]  # repeats collapse, a blank separates "a" "a"
    logits = np.full((len(steps), len(chars)), -5.0, np.float32)
    logits[np.arange(len(steps)), steps] = 3.0
    assert ctc_decode(logits, chars) == "aab b"
    assert ctc_decode(logits[None], chars) == "aab b"
    assert ctc_decode(np.zeros((0, 4), np.float32), chars) == ""
    with pytest.raises(ValueError, match="5 classes, charset has 4"):
        ctc_decode(np.zeros((3, 5), np.float32), chars)


@pytest.mark.parametrize("a, b, d", [
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("abc", "", 3),
    ("abc", "abc", 0), ("USD 1.50", "UsD1.50", 2), (" ROOM", "ROOM", 1), ("ab", "ba", 2),
])
def test_edit_distance(a, b, d):
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_char_accuracy():
    assert char_accuracy(["abd", "xyz"], ["abc", "xyz"]) == pytest.approx(1 - 1 / 6)
    assert char_accuracy(["hello"], ["hello"]) == 1.0
    with pytest.raises(ValueError):
        char_accuracy(["a"], ["a", "b"])


# --- data --------------------------------------------------------------------------------

def test_splits_disjoint_deterministic_and_in_charset(chars):
    calib, test = make_lines(150, split="calib"), make_lines(150, split="test")
    calib_texts, test_texts = [t for t, _ in calib], [t for t, _ in test]
    assert not set(calib_texts) & set(test_texts)
    assert len(set(calib_texts)) == len(set(test_texts)) == 150
    again = make_lines(150, split="test")
    assert [t for t, _ in again] == test_texts
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(again, test))
    prefix = make_lines(20, split="test")
    assert all(t == u and np.array_equal(a, b) for (t, a), (u, b) in zip(prefix, test))
    assert make_lines(5, split="test", seed=1)[0][0] != test_texts[0]
    alphabet = set(chars)
    for text in calib_texts + test_texts:
        assert 4 <= len(text) <= 30 and text == text.strip()
        assert set(text) <= alphabet, text
    assert any(ch.isdigit() for t in test_texts for ch in t)
    assert any(ch.isupper() for t in test_texts for ch in t)
    with pytest.raises(ValueError, match="split"):
        make_lines(1, split="train")


def test_images_are_sane():
    for text, img in make_lines(40, split="calib", seed=3):
        h, w, c = img.shape
        assert img.dtype == np.uint8 and c == 3
        assert 24 <= h <= 80 and w >= h, (text, img.shape)
        grey = img.mean(-1)
        assert grey.max() - grey.min() > 80, f"{text!r}: no contrast"
        # the background dominates the border: text stays inside the margins
        border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        assert np.abs(border - np.median(border)).mean() < 25, text


def test_render_line_deterministic_and_checks_glyphs():
    a = render_line("Total: $12.50", font=FONTS[0], size=32, rng=np.random.default_rng(7))
    b = render_line("Total: $12.50", font=FONTS[0], size=32, rng=np.random.default_rng(7))
    c = render_line("Total: $12.50", font=FONTS[0], size=32, rng=np.random.default_rng(8))
    assert np.array_equal(a, b) and not (a.shape == c.shape and np.array_equal(a, c))
    wide = render_line("Total: $12.50", font=FONTS[0], size=40, rng=np.random.default_rng(7))
    assert wide.shape[1] > a.shape[1]
    with pytest.raises(ValueError, match="no glyph"):
        render_line("abc\u4e2d", font="DejaVuSans", size=32, rng=np.random.default_rng(0))


def test_preprocess_and_batch_shapes():
    lines = make_lines(6, split="test")
    imgs = [img for _, img in lines]
    x = preprocess(imgs[0])
    assert x.shape == (1, 3, 48, 320) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    used = int(np.ceil(48 * imgs[0].shape[1] / imgs[0].shape[0]))
    if used < 320:
        assert not x[..., used:].any(), "padding must be zeros"
    long = np.full((40, 2000, 3), 255, np.uint8)
    assert preprocess(long).shape == (1, 3, 48, 320)  # squeezed to the cap
    assert batch([long, imgs[0]], width=320).shape == (2, 3, 48, 320)
    wide = batch([long, imgs[0]])  # PaddleOCR: keep the aspect, pad to the widest
    assert wide.shape == (2, 3, 48, 2400)
    assert wide[1, :, :, :min(used, 2400)].any() and not wide[1, :, :, used:].any()
    assert batch(imgs[:1]).shape[3] >= 320


# --- the fp32 model on rendered lines ------------------------------------------------------

def test_fp32_rec_accuracy_cpu_backend(cpu_report):
    r = cpu_report
    assert r["n"] == N_ACCURACY
    assert r["char_accuracy"] >= 0.97, r
    assert r["line_accuracy"] >= 0.6, r
    assert len(r["worst"]) <= 5


def test_fp32_rec_accuracy_matches_onnxruntime(rec, chars, test_lines, cpu_report):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(rec), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    r = evaluate(lambda x: sess.run(None, {name: x})[0], test_lines, chars)
    assert r["char_accuracy"] >= 0.97, r
    assert abs(r["char_accuracy"] - cpu_report["char_accuracy"]) <= 0.005, (r, cpu_report)
