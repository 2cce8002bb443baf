"""The rendered-page data and metric layer for text detection (tests/ocr_pages.py) and fp32
PP-OCRv4 det on it, on the cpu backend and in ONNX Runtime."""
import numpy as np
import pytest

pytest.importorskip("PIL")

import edgeinfer  # noqa: E402
from models import model_path  # noqa: E402
from ocr_pages import (  # noqa: E402
    binary_iou, calib_pages, db_kernel, det_input_size, det_preprocess, page_seeds, render_page,
    resize_linear, test_pages, text_coverage,
)

N_PAGES = 4


@pytest.fixture(scope="module")
def det():
    return model_path("ppocr_det")


@pytest.fixture(scope="module")
def cpu(det):
    return edgeinfer.Session(str(det), backend="cpu", threads=1)


@pytest.fixture(scope="module")
def mapped(cpu):
    """(image, boxes, model input, cpu probability map) of the first test pages."""
    name, out = cpu.inputs[0].name, cpu.outputs[0].name
    rows = []
    for image, boxes in test_pages(N_PAGES):
        x = det_preprocess(image)
        rows.append((image, boxes, x, cpu.run({name: x})[out]))
    return rows


# --- pages ------------------------------------------------------------------------------------

def test_render_page_is_deterministic_per_seed():
    a, boxes_a = render_page(3)
    b, boxes_b = render_page(3)
    c, boxes_c = render_page(4)
    assert np.array_equal(a, b) and np.array_equal(boxes_a, boxes_b)
    assert not np.array_equal(a, c)
    assert boxes_a.shape != boxes_c.shape or not np.array_equal(boxes_a, boxes_c)


@pytest.mark.parametrize("seed,height,width", [(0, 640, 640), (1, 640, 640), (5, 800, 480), (6, 480, 900)])
def test_pages_hold_words_where_the_boxes_say(seed, height, width):
    image, boxes = render_page(seed, width=width, height=height)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert boxes.dtype == np.float32 and boxes.ndim == 3 and boxes.shape[1:] == (4, 2)
    assert len(boxes) >= 10
    assert boxes[..., 0].min() >= -1 and boxes[..., 0].max() <= width + 1
    assert boxes[..., 1].min() >= -1 and boxes[..., 1].max() <= height + 1
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    for quad in boxes:
        side_a, side_b = np.hypot(*(quad[1] - quad[0])), np.hypot(*(quad[3] - quad[0]))
        assert side_a >= 2 and side_b >= 2, quad  # a lone "-" is 4 px high at 12 px
        (x0, y0), (x1, y1) = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
        crop = luma[max(y0, 0):y1, max(x0, 0):x1]
        # glyph strokes against the paper: a box on blank paper would have a std of a few levels
        assert crop.std() > 20, (quad, crop.std())
    mean = luma.mean()
    assert 150 < mean < 250, "pages are light documents"


def test_splits_never_share_a_seed():
    calib, test = page_seeds(100, "calib"), page_seeds(100, "test")
    assert len(set(calib)) == len(set(test)) == 100 and not set(calib) & set(test)
    assert page_seeds(3, "test") == test[:3]  # a shorter split is a prefix of a longer one
    assert np.array_equal(calib_pages(2)[1][0], render_page(calib[1])[0])
    assert np.array_equal(test_pages(1)[0][0], render_page(test[0])[0])
    with pytest.raises(ValueError, match="split"):
        page_seeds(1, "train")


# --- preprocessing ------------------------------------------------------------------------------

@pytest.mark.parametrize("hw,limit,kind,expected", [
    ((640, 640), 736, "min", (736, 736)),
    ((800, 600), 736, "min", (992, 736)),    # 981.3 -> int 981 -> 30.7 * 32 -> 992
    ((500, 900), 736, "min", (736, 1312)),   # 1324.8 -> 1324 -> 41.4 * 32 -> 1312
    ((1000, 800), 736, "min", (992, 800)),   # "min" never scales down, only rounds to 32
    ((1000, 800), 960, "max", (960, 768)),
])
def test_det_input_size_follows_rapidocr(hw, limit, kind, expected):
    assert det_input_size(*hw, limit_side_len=limit, limit_type=kind) == expected


def test_det_input_size_rejects_unknown_limit_type():
    with pytest.raises(ValueError, match="limit_type"):
        det_input_size(100, 100, limit_type="mean")


# Reference outputs of cv2.resize(src, (w, h)) (INTER_LINEAR), opencv-python-headless 4.10.
CV2_CASES = [
    ([[0, 255]], (1, 4), [[0, 64, 191, 255]]),
    ([[241, 160, 175, 229, 148, 198, 213, 57, 14], [76, 72, 223, 233, 1, 127, 210, 33, 204],
      [30, 119, 209, 77, 87, 71, 184, 65, 253], [113, 122, 129, 149, 141, 130, 254, 206, 202],
      [179, 159, 87, 253, 119, 55, 216, 41, 219], [156, 29, 11, 113, 9, 36, 131, 248, 119]],
     (4, 5),
     [[175, 196, 111, 206, 57], [68, 193, 66, 169, 167], [130, 130, 136, 218, 189], [122, 54, 37, 130, 165]]),
    ([[125, 0, 158, 212, 169, 39], [136, 68, 247, 225, 47, 130], [240, 216, 181, 163, 10, 189],
      [121, 23, 62, 138, 186, 129], [156, 223, 175, 92, 164, 153]],
     (5, 8),
     [[125, 47, 59, 165, 205, 185, 120, 39], [136, 94, 135, 244, 228, 114, 78, 130],
      [240, 225, 203, 179, 165, 67, 77, 189], [121, 60, 38, 72, 129, 168, 165, 129],
      [156, 198, 205, 165, 102, 137, 160, 153]]),
]


@pytest.mark.parametrize("src,size,expected", CV2_CASES)
def test_resize_linear_matches_opencv(src, size, expected):
    img = np.array(src, np.uint8)[..., None].repeat(3, -1)
    out = resize_linear(img, *size)
    assert out.dtype == np.uint8 and out.shape == (*size, 3)
    assert np.array_equal(out[..., 1], np.array(expected, np.uint8))


def test_resize_linear_keeps_same_size_and_constants():
    img = render_page(2, width=320, height=256)[0]
    assert np.array_equal(resize_linear(img, 256, 320), img)
    flat = np.full((50, 70, 3), 173, np.uint8)
    assert np.all(resize_linear(flat, 96, 128) == 173) and np.all(resize_linear(flat, 20, 30) == 173)


def test_det_preprocess_is_bgr_scaled_to_minus_one_one():
    x = det_preprocess(render_page(0)[0])
    assert x.dtype == np.float32 and x.shape == (1, 3, 736, 736) and x.flags.c_contiguous
    assert -1.0 <= x.min() and x.max() <= 1.0
    red = np.zeros((64, 96, 3), np.uint8)
    red[..., 0] = 255
    y = det_preprocess(red)
    assert y.shape == (1, 3, 736, 1088)  # 96 * 11.5 = 1104 -> 34.5 -> 34 (round half to even) * 32
    assert np.all(y[0, 2] == 1.0) and np.all(y[0, 0] == -1.0) and np.all(y[0, 1] == -1.0)
    grey = det_preprocess(np.full((736, 736, 3), 128, np.uint8))
    assert np.allclose(grey, (128 / 255 - 0.5) / 0.5, atol=1e-7)
    with pytest.raises(ValueError, match="uint8"):
        det_preprocess(np.zeros((64, 64), np.uint8))


# --- metrics -----------------------------------------------------------------------------------

def test_binary_iou():
    a = np.zeros((1, 1, 4, 4), np.float32)
    assert binary_iou(a, a) == 1.0  # both empty
    b = a.copy()
    b[..., :2, :] = 0.9
    assert binary_iou(b, b) == 1.0 and binary_iou(a, b) == 0.0
    c = a.copy()
    c[..., :, :2] = 0.9
    assert binary_iou(b, c) == pytest.approx(4 / 12)
    assert binary_iou(b[0, 0], c[0, 0]) == pytest.approx(4 / 12)  # (H, W) maps too
    at = np.full((4, 4), 0.3, np.float32)
    assert binary_iou(at, a[0, 0]) == 1.0, "DBPostProcess binarizes pred > thresh: 0.3 is background"
    assert binary_iou(at, a[0, 0], threshold=0.2) == 0.0
    with pytest.raises(ValueError, match="shape"):
        binary_iou(a, np.zeros((1, 1, 4, 8), np.float32))


def test_db_kernel_shrinks_like_paddleocr():
    long_word = np.array([[0, 0], [100, 0], [100, 10], [0, 10]], np.float64)
    k = db_kernel(long_word)
    d = 100 * 10 * (1 - 0.16) / 220  # A (1 - r^2) / L
    assert np.allclose(k, [[d, d], [100 - d, d], [100 - d, 10 - d], [d, 10 - d]])
    rotated = long_word @ np.array([[0.8, 0.6], [-0.6, 0.8]]).T
    assert np.allclose(db_kernel(rotated), k @ np.array([[0.8, 0.6], [-0.6, 0.8]]).T)


# --- fp32 PP-OCRv4 det on the pages --------------------------------------------------------

def test_det_model_io(cpu, mapped):
    (inp,), (out,) = cpu.inputs, cpu.outputs
    assert inp.name == "x" and inp.shape[1] == 3 and len(inp.shape) == 4
    assert out.name == "sigmoid_0.tmp_0"
    prob = mapped[0][3]
    assert prob.shape == (1, 1, 736, 736) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_fp32_det_finds_the_drawn_text(mapped):
    # Measured on test pages 0-7 and calib pages 0-7: words_found 0.94-1.0, kernel_recall
    # 0.91-0.97, box_recall 0.40-0.48 (DB marks the shrunk kernel, not the ink box), outside 0.
    for image, boxes, _, prob in mapped:
        cov = text_coverage(prob, boxes, image.shape[:2])
        assert cov["words_found"] >= 0.9, cov
        assert cov["kernel_recall"] >= 0.85, cov
        assert 0.3 <= cov["box_recall"] <= 0.7, cov
        assert cov["outside"] <= 0.02, cov


def test_coverage_tells_pages_apart(mapped):
    """The measure is not vacuous: another page's boxes, or an empty map, score low."""
    for i, (image, _, _, prob) in enumerate(mapped):
        others = mapped[(i + 1) % len(mapped)][1]
        cov = text_coverage(prob, others, image.shape[:2])
        assert cov["words_found"] < 0.5 and cov["kernel_recall"] < 0.5, cov
    image, boxes, _, prob = mapped[0]
    empty = text_coverage(np.zeros_like(prob), boxes, image.shape[:2])
    assert empty["words_found"] == empty["kernel_recall"] == empty["outside"] == 0.0


def test_cpu_and_ort_maps_agree(det, mapped):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(det), so, providers=["CPUExecutionProvider"])
    for _, _, x, prob in mapped:
        ref = sess.run(None, {"x": x})[0]
        assert binary_iou(prob, ref) >= 0.99
        assert np.abs(prob - ref).max() < 1e-3
