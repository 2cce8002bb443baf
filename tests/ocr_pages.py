"""Rendered document pages and probability-map agreement for PP-OCR text detection models.

The data and metric layer for measuring a DB text detector (PP-OCRv4 det from
``tests/models.py``) before and after compression: a Pillow page renderer (headings,
paragraphs, tables, inverse banners, rotated lines and text-free "photos" on textured paper,
in the DejaVu fonts of ``ocr_lines``) that also returns every drawn word's box, RapidOCR's det
preprocessing, and the two measures a quantized detector is judged by: the binary IoU of its
probability map with the fp32 one, and how much of the drawn text the map covers.

    # tests/ on sys.path, as conftest.py and the benchmarks arrange
    from models import model_path
    from ocr_pages import binary_iou, det_preprocess, test_pages

    sess = edgeinfer.Session(str(model_path("ppocr_det")), backend="cpu")
    image, boxes = test_pages(1)[0]
    prob = sess.run({"x": det_preprocess(image)})["sigmoid_0.tmp_0"]   # (1, 1, 736, 736)

Images are RGB uint8 (H, W, 3), like ``ocr_lines``; ``det_preprocess`` flips them to BGR
because RapidOCR's ``LoadImage`` hands OpenCV's BGR order to the model.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ocr_lines import FONTS, _drawable, _font, _token

# RapidOCR 1.4.4 config.yaml, section Det: the resize rule and DBPostProcess's binarization.
DET_LIMIT_SIDE_LEN = 736
DET_LIMIT_TYPE = "min"
DET_THRESH = 0.3
SPLITS = ("calib", "test")

_BOLD = tuple(f for f in FONTS if "Bold" in f)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# --- det preprocessing (RapidOCR 1.4.4) -----------------------------------------------------

def det_input_size(height: int, width: int, limit_side_len: int = DET_LIMIT_SIDE_LEN,
                   limit_type: str = DET_LIMIT_TYPE) -> tuple[int, int]:
    """(height, width) the det model sees for an image of ``height`` x ``width``.

    ``rapidocr_onnxruntime/ch_ppocr_det/utils.py``, ``DetPreProcess.resize``: with
    ``limit_type="min"`` (the default config) the short side is scaled up to
    ``limit_side_len`` when shorter and never scaled down; ``"max"`` caps the long side. Each
    side is then truncated to an int and rounded to the nearest multiple of 32 (Python's
    ``round``: halves go to even), because the DB network down- and upsamples by 32.
    """
    if limit_type == "max":
        ratio = limit_side_len / max(height, width) if max(height, width) > limit_side_len else 1.0
    elif limit_type == "min":
        ratio = limit_side_len / min(height, width) if min(height, width) < limit_side_len else 1.0
    else:
        raise ValueError(f"limit_type must be 'min' or 'max', got {limit_type!r}")
    h, w = (int(round(int(side * ratio) / 32) * 32) for side in (height, width))
    if h <= 0 or w <= 0:
        raise ValueError(f"image of {height}x{width} resizes to {h}x{w} for the det model")
    return h, w


def _linear_taps(src: int, dst: int, coef_bits: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR source indices and fixed-point weights along one axis.

    Half-pixel centres computed in float32, taps clamped at the borders (weight 1 on the
    edge pixel), weights rounded to ``coef_bits`` bits as OpenCV's 8-bit path does.
    """
    f = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    frac = f - i0.astype(np.float32)
    low, high = i0 < 0, i0 >= src - 1
    i0[low], frac[low] = 0, 0
    i0[high], frac[high] = src - 1, 0
    one = np.float32(1 << coef_bits)
    w1 = np.rint(frac * one).astype(np.int64)
    w0 = np.rint((np.float32(1) - frac) * one).astype(np.int64)
    return i0, np.minimum(i0 + 1, src - 1), w0, w1


def resize_linear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(img, (width, height))`` (INTER_LINEAR) for uint8 (H, W, C), in numpy.

    OpenCV is not a dependency, so this follows its 8-bit fixed-point arithmetic: 11-bit
    horizontal weights into int32 rows, then the SIMD vertical pass (``VResizeLinearVec_32s8u``:
    rows >> 4, high half of the product with 11-bit weights, rounded >> 2). Against
    opencv-python-headless 4.10 on x86 it agrees exactly except on the first and last output
    rows of an upscale, where ~13% of those rows' values differ by 1 (0.04% of a 640 -> 736 page).
    """
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"resize_linear takes uint8 (H, W, C) images, got {img.dtype} {img.shape}")
    y0, y1, b0, b1 = _linear_taps(img.shape[0], height)
    x0, x1, a0, a1 = _linear_taps(img.shape[1], width)
    src = img.astype(np.int64)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]
    out = ((((rows[y0] >> 4) * b0[:, None, None]) >> 16)
           + (((rows[y1] >> 4) * b1[:, None, None]) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def det_preprocess(image: np.ndarray, limit_side_len: int = DET_LIMIT_SIDE_LEN,
                   limit_type: str = DET_LIMIT_TYPE) -> np.ndarray:
    """An RGB uint8 (H, W, 3) page as the float32 (1, 3, H', W') input of PP-OCR det.

    What ``rapidocr_onnxruntime`` 1.4.4 does before its det model:

    - ``utils/load_image.py``, ``LoadImage.convert_img``: a file or PIL image is converted
      RGB -> BGR (OpenCV order), so the model's channel 0 is blue;
    - ``main.py``, ``RapidOCR.preprocess``: pages whose sides lie in [30, 2000] (ours) are
      left alone, and ``maybe_add_letterbox`` pads only lines lower than 30 px or wider than
      8:1;
    - ``ch_ppocr_det/text_detect.py``, ``TextDetector.get_preprocess`` with config.yaml's
      ``limit_side_len: 736``, ``limit_type: min``; then ``ch_ppocr_det/utils.py``,
      ``DetPreProcess``: ``resize`` (see ``det_input_size``; ``cv2.resize`` bilinear, see
      ``resize_linear``), ``normalize`` ``(x * (1/255) - 0.5) / 0.5`` per channel (the
      product in float32, the rest in float64 against numpy mean/std arrays), ``permute`` to
      CHW, a batch axis, float32.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"det_preprocess takes an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    h, w = det_input_size(image.shape[0], image.shape[1], limit_side_len, limit_type)
    bgr = np.ascontiguousarray(image[..., ::-1])
    resized = resize_linear(bgr, h, w)
    x = (resized.astype(np.float32) * (1 / 255.0) - np.array([0.5] * 3)) / np.array([0.5] * 3)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


# --- metrics --------------------------------------------------------------------------------

def _plane(prob: np.ndarray) -> np.ndarray:
    p = np.asarray(prob)
    while p.ndim > 2 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 2:
        raise ValueError(f"expected a (H, W) or (1, 1, H, W) probability map, got shape {np.shape(prob)}")
    return p


def binary_iou(prob_a: np.ndarray, prob_b: np.ndarray, threshold: float = DET_THRESH) -> float:
    """IoU of two probability maps binarized as DBPostProcess does (``pred > threshold``).

    Two empty maps agree perfectly (1.0): a page without text must not count as a failure.
    """
    a, b = _plane(prob_a), _plane(prob_b)
    if a.shape != b.shape:
        raise ValueError(f"probability maps differ in shape: {a.shape} vs {b.shape}")
    a, b = a > threshold, b > threshold
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def _offset_quad(quad: np.ndarray, margin: float) -> np.ndarray:
    """``quad`` (4, 2), clockwise from its top-left, moved ``margin`` pixels outwards on every
    side along its own axes (inwards when negative), so a rotated word stays rotated."""
    along, across = quad[1] - quad[0], quad[3] - quad[0]
    u = along / max(float(np.hypot(*along)), 1e-9) * margin
    v = across / max(float(np.hypot(*across)), 1e-9) * margin
    return quad + np.array([-u - v, u - v, u + v, -u + v])


def db_kernel(quad: np.ndarray, ratio: float = 0.4) -> np.ndarray:
    """The shrunk quad a DB detector is trained to mark for the text box ``quad``.

    PaddleOCR's ``MakeShrinkMap`` moves each side in by ``D = A (1 - r^2) / L`` (area,
    perimeter, ``shrink_ratio`` 0.4), and DBPostProcess ``unclip``s by ``A * 1.6 / L`` to get the
    box back; on a long word that leaves the middle ~16% of its height, on a square ~58%.
    """
    q = np.asarray(quad, np.float64)
    a, b = float(np.hypot(*(q[1] - q[0]))), float(np.hypot(*(q[3] - q[0])))
    d = a * b * (1 - ratio ** 2) / max(2 * (a + b), 1e-9)
    return _offset_quad(q, -min(d, 0.49 * min(a, b)))


def box_mask(boxes: np.ndarray, shape: tuple[int, int], scale: tuple[float, float] = (1.0, 1.0),
             grow: float = 0.0) -> np.ndarray:
    """Boolean (H, W) mask of the quads ``boxes`` (N, 4, 2) (x, y), scaled by (sy, sx).

    ``grow`` moves every side of a quad out by that fraction of the quad's short side.
    """
    from PIL import Image, ImageDraw

    canvas = Image.new("1", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for quad in np.asarray(boxes, np.float64).reshape(-1, 4, 2):
        if grow:
            quad = _offset_quad(quad, grow * min(np.hypot(*(quad[1] - quad[0])), np.hypot(*(quad[3] - quad[0]))))
        draw.polygon([tuple(p) for p in quad * np.array([scale[1], scale[0]])], fill=1)
    return np.asarray(canvas, bool)


def text_coverage(prob: np.ndarray, boxes: np.ndarray, image_shape: tuple[int, int],
                  threshold: float = DET_THRESH, found: float = 0.5, grow: float = 0.75) -> dict:
    """How the binarized map of one page lines up with the words drawn on it.

    Args:
        prob: the det output for the page, (1, 1, H', W') or (H', W').
        boxes: the page's word quads from ``render_page``, in page pixels.
        image_shape: (H, W) of the page, to scale ``boxes`` to the map.
        threshold: binarization, ``pred > threshold``.
        found: a word counts as found when this fraction of its ``db_kernel`` is marked.
        grow: marked pixels beyond this fraction of a word's height from every word are
            "outside" (DB joins the words of a line, so the gaps between them are not).

    Returns:
        ``{"words_found", "kernel_recall", "box_recall", "outside"}``: the fraction of words
        found; of kernel pixels marked; of whole (ink-tight) word-box pixels marked, which
        stays near 0.45 for a good detector because DB marks the shrunk kernel, not the box;
        and of marked pixels outside.
    """
    from PIL import Image, ImageDraw

    p = _plane(prob) > threshold
    scale = np.array([p.shape[1] / image_shape[1], p.shape[0] / image_shape[0]])
    kernels = [db_kernel(q * scale) for q in np.asarray(boxes, np.float64).reshape(-1, 4, 2)]
    hits = []
    for k in kernels:  # each word on its own small canvas, so overlaps cannot hide a miss
        x0, y0 = np.floor(k.min(0)).astype(int)
        x1, y1 = np.ceil(k.max(0)).astype(int) + 1
        canvas = Image.new("1", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(canvas).polygon([tuple(v) for v in k - (x0, y0)], fill=1)
        mask = np.zeros(p.shape, bool)
        xs, ys = slice(max(x0, 0), min(x1, p.shape[1])), slice(max(y0, 0), min(y1, p.shape[0]))
        mask[ys, xs] = np.asarray(canvas, bool)[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        n = int(np.count_nonzero(mask))
        hits.append(np.count_nonzero(p & mask) / n if n else 0.0)
    kernel = box_mask(np.array(kernels).reshape(-1, 4, 2), p.shape) if kernels else np.zeros(p.shape, bool)
    words = box_mask(boxes, p.shape, (scale[1], scale[0]))
    near = box_mask(boxes, p.shape, (scale[1], scale[0]), grow=grow)
    marked = int(np.count_nonzero(p))
    return {
        "words_found": float(np.mean(np.array(hits) >= found)) if hits else 1.0,
        "kernel_recall": float(np.count_nonzero(p & kernel) / max(np.count_nonzero(kernel), 1)),
        "box_recall": float(np.count_nonzero(p & words) / max(np.count_nonzero(words), 1)),
        "outside": float(np.count_nonzero(p & ~near) / marked) if marked else 0.0,
    }


# --- page rendering -------------------------------------------------------------------------

def _ink(rng, bg: np.ndarray) -> np.ndarray:
    """A text colour at least 110 luma levels from ``bg``: mostly near-black, sometimes an ink
    colour (blue, red, green), lighter than ``bg`` when ``bg`` is dark."""
    for _ in range(100):
        if float(_LUMA @ bg) < 128:
            c = rng.uniform(200, 255, 3)
        elif rng.random() < 0.7:
            c = rng.uniform(0, 60, 3)
        else:
            c = rng.uniform(0, 90, 3)
            c[rng.integers(0, 3)] = rng.uniform(90, 200)
        if abs(float(_LUMA @ (c - bg))) >= 110:
            return c.astype(np.float32)
    return np.zeros(3, np.float32) if float(_LUMA @ bg) >= 128 else np.full(3, 255, np.float32)


def _smooth_noise(rng, h: int, w: int, cells: tuple[int, int], channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    from PIL import Image

    grid = rng.uniform(-1, 1, (cells[0], cells[1], channels)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(grid[..., c])).resize((w, h), Image.BICUBIC))
              for c in range(channels)]
    return np.clip(np.stack(planes, -1), -1, 1)


def _paper(rng, h: int, w: int) -> np.ndarray:
    """Light paper, float32 (h, w, 3): a white or tinted base, uneven shading, grain and
    sometimes faint horizontal fibres."""
    base = rng.uniform(215, 252) + rng.uniform(-8, 8, 3)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    img = img + rng.uniform(3, 14) * _smooth_noise(rng, h, w, (4, 4))
    img = img + rng.uniform(1, 5) * rng.standard_normal((h, w, 1)).astype(np.float32)
    if rng.random() < 0.4:
        fibres = _smooth_noise(rng, h, w, (h // 2, 6))
        img = img + rng.uniform(2, 6) * fibres
    return img


def _photo(rng, page: np.ndarray, y: int, x: int, h: int, w: int) -> None:
    """A text-free picture: smooth colour fields, a few blobs and a frame, no glyphs."""
    from PIL import Image, ImageDraw

    region = 128 + 90 * _smooth_noise(rng, h, w, (3, 4), 3) + rng.uniform(-40, 40, 3)
    blobs = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(blobs)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(h, w)
        draw.ellipse((cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r), fill=int(rng.integers(60, 200)))
    alpha = np.asarray(blobs, np.float32)[..., None] / 255.0
    region = region * (1 - alpha) + rng.uniform(0, 255, 3) * alpha
    region += 4 * rng.standard_normal((h, w, 1))
    page[y:y + h, x:x + w] = region
    frame = rng.uniform(20, 90)
    page[y:y + 2, x:x + w] = page[y + h - 2:y + h, x:x + w] = frame
    page[y:y + h, x:x + 2] = page[y:y + h, x + w - 2:x + w] = frame


def _fill(rng, font: str, size: int, max_width: float, max_tokens: int = 40) -> str:
    """Tokens from ``ocr_lines`` joined by spaces up to ``max_width`` pixels (at least one)."""
    f = _font(font, size)
    text = ""
    for _ in range(max_tokens):
        tok = _token(rng)
        if not all(_drawable(font, ch) for ch in tok):
            continue
        cand = f"{text} {tok}" if text else tok
        if f.getlength(cand) > max_width:
            break
        text = cand
    return text


def _draw_text(page: np.ndarray, text: str, font: str, size: int, x: float, top: float,
               colour: np.ndarray, angle: float = 0.0) -> list[np.ndarray]:
    """Draw one line with its ascent box's top-left at (x, top), rotated ``angle`` degrees
    counter-clockwise about that box's centre; returns each word's ink quad (4, 2) in page
    coordinates, clockwise from the word's top-left."""
    from PIL import Image, ImageDraw

    f = _font(font, size)
    ascent, descent = f.getmetrics()
    pad = size
    cw, ch = int(math.ceil(f.getlength(text))) + 2 * pad, ascent + descent + 2 * pad
    canvas = Image.new("L", (cw, ch), 0)
    draw = ImageDraw.Draw(canvas)
    quads, start = [], 0
    for word in text.split(" "):
        if word:
            wx = pad + f.getlength(text[:start])  # whole-string advance, so kerning holds
            draw.text((wx, pad + ascent), word, fill=255, font=f, anchor="ls")
            l, t, r, b = f.getbbox(word, anchor="ls")
            quads.append(np.array([[wx + l, pad + ascent + t], [wx + r, pad + ascent + t],
                                   [wx + r, pad + ascent + b], [wx + l, pad + ascent + b]], np.float64))
        start += len(word) + 1
    centre = np.array([cw / 2, ch / 2])
    if angle:
        canvas = canvas.rotate(angle, resample=Image.BICUBIC, expand=True)
        # PIL turns counter-clockwise on screen (y down) and keeps the centre at the centre.
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        rot = np.array([[c, s], [-s, c]])
        new_centre = np.array([canvas.size[0] / 2, canvas.size[1] / 2])
        quads = [(q - centre) @ rot.T + new_centre for q in quads]
    # Where the canvas lands: the unrotated line's box centre stays where it was asked to be.
    ox = x - pad + cw / 2 - canvas.size[0] / 2
    oy = top - pad + ch / 2 - canvas.size[1] / 2
    ix, iy = int(round(ox)), int(round(oy))
    alpha = np.asarray(canvas, np.float32)[..., None] / 255.0
    y0, x0 = max(iy, 0), max(ix, 0)
    y1, x1 = min(iy + alpha.shape[0], page.shape[0]), min(ix + alpha.shape[1], page.shape[1])
    a = alpha[y0 - iy:y1 - iy, x0 - ix:x1 - ix]
    page[y0:y1, x0:x1] = page[y0:y1, x0:x1] * (1 - a) + colour * a
    return [q + np.array([ix, iy]) for q in quads]


def _line_height(font: str, size: int) -> int:
    ascent, descent = _font(font, size).getmetrics()
    return ascent + descent


def render_page(seed: int, width: int = 640, height: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """A document-like page and the boxes of every word drawn on it; identical per seed.

    Blocks are stacked top to bottom until the page is full: headings (24-40 px, often bold),
    paragraphs (12-22 px, ragged right, indented or not), ruled tables with a shaded header
    row, inverse banners (light text on a dark band), single lines rotated by 3-25 degrees
    either way, and text-free "photos" as distractors, on light paper with shading, grain and
    fibres. Fonts are the DejaVu family of ``ocr_lines.FONTS``; text is its English words,
    pseudo-words, numbers, dates, prices and codes.

    Returns:
        ``(image, boxes)``: RGB uint8 (height, width, 3), and float32 (N, 4, 2) word quads of
        (x, y) page coordinates, clockwise from the word's top-left, tight around the ink
        (from the font's bounding box of the word).
    """
    if width < 200 or height < 200:
        raise ValueError(f"pages must be at least 200x200 to hold a block, got {width}x{height}")
    rng = np.random.default_rng([seed, 0xD0C9A6E])
    page = _paper(rng, height, width)
    paper = page.mean(axis=(0, 1))
    margin = int(width * rng.uniform(0.04, 0.08))
    left, right = margin, width - margin
    quads: list[np.ndarray] = []
    y = int(height * rng.uniform(0.03, 0.07))
    kinds = ("heading", "paragraph", "table", "banner", "rotated", "photo")
    weights = np.array([0.15, 0.4, 0.12, 0.1, 0.13, 0.1])
    first = True
    while True:
        kind = "heading" if first and rng.random() < 0.7 else str(rng.choice(kinds, p=weights))
        first = False
        gap = int(rng.integers(8, 24))
        if kind == "heading":
            font = str(rng.choice(_BOLD if rng.random() < 0.7 else FONTS))
            size = int(rng.integers(24, 41))
            lh = _line_height(font, size)
            if y + lh > height - margin:
                break
            text = _fill(rng, font, size, (right - left) * rng.uniform(0.4, 1.0), max_tokens=5)
            x = left if rng.random() < 0.6 else left + (right - left - _font(font, size).getlength(text)) / 2
            quads += _draw_text(page, text, font, size, x, y, _ink(rng, paper))
            y += lh + gap
        elif kind == "paragraph":
            font, size = str(rng.choice(FONTS)), int(rng.integers(12, 23))
            lh, spacing = _line_height(font, size), rng.uniform(1.15, 1.7)
            n = int(rng.integers(2, 7))
            x0 = left + int(rng.integers(0, max(1, (right - left) // 5)))
            w = (right - x0) * rng.uniform(0.6, 1.0)
            colour = _ink(rng, paper)
            if y + lh > height - margin:
                break
            for i in range(n):
                if y + lh > height - margin:
                    break
                indent = size * 2 if i == 0 and rng.random() < 0.4 else 0
                frac = rng.uniform(0.3, 0.9) if i == n - 1 else rng.uniform(0.9, 1.0)
                text = _fill(rng, font, size, (w - indent) * frac)
                quads += _draw_text(page, text, font, size, x0 + indent, y, colour)
                y += int(lh * spacing)
            y += gap
        elif kind == "table":
            font, size = str(rng.choice(FONTS)), int(rng.integers(12, 19))
            lh = _line_height(font, size)
            row_h = lh + int(rng.integers(6, 14))
            rows, cols = int(rng.integers(3, 7)), int(rng.integers(2, 5))
            if y + rows * row_h + 2 > height - margin:
                rows = (height - margin - y - 2) // row_h
            if rows < 2:
                break
            xs = np.linspace(left, right, cols + 1).astype(int)
            ys = y + row_h * np.arange(rows + 1)
            rule = rng.uniform(20, 110)
            page[ys[0]:ys[1], left:right] -= rng.uniform(15, 50)  # shaded header row
            for yy in ys:
                page[yy:yy + 1 + int(rng.integers(0, 2)), left:right] = rule
            for xx in xs:
                page[ys[0]:ys[-1] + 1, xx:xx + 1] = rule
            colour = _ink(rng, paper - 50)
            for r in range(rows):
                cell_font = str(rng.choice(_BOLD)) if r == 0 else font
                for c in range(cols):
                    if r > 0 and rng.random() < 0.1:
                        continue  # an empty cell
                    pad = int(rng.integers(4, 9))
                    text = _fill(rng, cell_font, size, (xs[c + 1] - xs[c] - 2 * pad) * rng.uniform(0.5, 1.0),
                                 max_tokens=3)
                    if text:
                        quads += _draw_text(page, text, cell_font, size, xs[c] + pad,
                                            ys[r] + (row_h - lh) / 2, colour)
            y = int(ys[-1]) + gap + 2
        elif kind == "banner":
            font, size = str(rng.choice(FONTS)), int(rng.integers(16, 29))
            lh = _line_height(font, size)
            band = lh + int(rng.integers(10, 24))
            if y + band > height - margin:
                break
            fill = rng.uniform(0, 110, 3)
            fill[rng.integers(0, 3)] = rng.uniform(40, 160)
            page[y:y + band, left:right] = fill + 3 * rng.standard_normal((band, right - left, 1))
            pad = int(rng.integers(6, 20))
            text = _fill(rng, font, size, (right - left - 2 * pad) * rng.uniform(0.4, 0.95), max_tokens=6)
            quads += _draw_text(page, text, font, size, left + pad, y + (band - lh) / 2, _ink(rng, fill))
            y += band + gap
        elif kind == "rotated":
            font, size = str(rng.choice(FONTS)), int(rng.integers(16, 33))
            angle = float(rng.uniform(3, 25) * rng.choice([-1, 1]))
            lh = _line_height(font, size)
            text = _fill(rng, font, size, (right - left) * rng.uniform(0.3, 0.7), max_tokens=5)
            length = _font(font, size).getlength(text)
            t = math.radians(abs(angle))
            span_h = length * math.sin(t) + lh * math.cos(t)
            span_w = length * math.cos(t) + lh * math.sin(t)
            if y + span_h + 4 > height - margin or span_w > right - left:
                break
            cx = left + span_w / 2 + rng.uniform(0, right - left - span_w)
            cy = y + span_h / 2 + 2
            quads += _draw_text(page, text, font, size, cx - length / 2, cy - lh / 2, _ink(rng, paper), angle)
            y += int(math.ceil(span_h)) + gap + 4
        else:  # photo
            h = int(height * rng.uniform(0.12, 0.3))
            w = int((right - left) * rng.uniform(0.4, 1.0))
            if y + h > height - margin:
                break
            _photo(rng, page, y, left + int(rng.integers(0, right - left - w + 1)), h, w)
            y += h + gap
    image = np.clip(np.rint(page), 0, 255).astype(np.uint8)
    boxes = np.array(quads, np.float32).reshape(-1, 4, 2)
    return image, boxes


# --- splits ---------------------------------------------------------------------------------

def pages(n: int, seed0: int = 0, step: int = 1, width: int = 640,
          height: int = 640) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` pages of seeds ``seed0, seed0 + step, ...``: (image, boxes) as ``render_page``."""
    return [render_page(seed0 + i * step, width, height) for i in range(n)]


def page_seeds(n: int, split: str) -> list[int]:
    """The first ``n`` seeds of a split: even for ``calib``, odd for ``test``, so the splits
    never share a page however many of either are drawn."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return list(range(SPLITS.index(split), 2 * n, 2))


def calib_pages(n: int, width: int = 640, height: int = 640) -> list[tuple[np.ndarray, np.ndarray]]:
    """Calibration pages (seeds ``page_seeds(n, "calib")``)."""
    return pages(n, 0, 2, width, height)


def test_pages(n: int, width: int = 640, height: int = 640) -> list[tuple[np.ndarray, np.ndarray]]:
    """Test pages (seeds ``page_seeds(n, "test")``)."""
    return pages(n, 1, 2, width, height)


test_pages.__test__ = False  # a data helper: keep pytest from collecting it by its name


def det_inputs(page_list: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """``det_preprocess`` of each page's image, e.g. as calibration feeds."""
    return [det_preprocess(image) for image, _ in page_list]
