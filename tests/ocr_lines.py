"""Rendered text lines and character accuracy for PP-OCR text recognition models.

The data and metric layer for measuring a rec model (PP-OCRv4 rec from ``tests/models.py``)
before and after compression: a Pillow text-line renderer over the DejaVu fonts, a
calibration split and a test split that never share a text, PaddleOCR's rec preprocessing,
greedy CTC decoding with the model's own ``character`` table, and character accuracy.

    # tests/ on sys.path, as conftest.py and the benchmarks arrange
    from models import model_path
    from ocr_lines import charset, evaluate, make_lines

    path = model_path("ppocr_rec")
    sess = edgeinfer.Session(str(path), threads=1)
    x_name, y_name = sess.inputs[0].name, sess.outputs[0].name
    report = evaluate(lambda x: sess.run({x_name: x})[y_name], make_lines(300, split="test"),
                      charset(path))   # fp32 PP-OCRv4 rec: char_accuracy 0.992

Images are RGB uint8 (H, W, 3); ``preprocess`` flips them to BGR because PaddleOCR feeds
OpenCV's BGR images to its models.
"""
from __future__ import annotations

import functools
import math
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
# Sans, Serif, Mono, Condensed; regular / bold / oblique (Serif calls its oblique "Italic").
FONTS = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique",
    "DejaVuSansCondensed", "DejaVuSansCondensed-Bold", "DejaVuSansCondensed-Oblique",
)
BLANK = ""  # CTC blank, index 0 of every charset; the empty string so that joins drop it
SPLITS = ("calib", "test")

# Characters the generator may use; each is also checked against the model's charset and
# the font (see _drawable). PP-OCR's Chinese table also holds full-width punctuation, which
# the model may emit for ASCII glyphs: that is part of what the accuracy measures.
_PUNCT = ".,:;!?-'\"()/&%#+@"
_WORDS = (
    "the of and to in is for on with as by at from that this are was be it or an not have "
    "new data time year price order total page item name date code model text line file "
    "report value number city street road north south east west house water light power "
    "market energy system service network account payment invoice customer address phone "
    "email office public school health window garden coffee bread apple orange green blue "
    "black white small large quick brown fox jumps over lazy dog morning evening winter "
    "summer spring autumn monday friday sunday january march april june october december "
    "hotel airport station ticket train flight gate seat room floor level open closed "
    "exit entrance warning danger caution please thank you welcome hello world river "
    "mountain island village museum library bank store market sale discount free member "
    "card credit cash change receipt balance amount tax net gross weight height length "
    "width volume speed distance battery camera screen keyboard mouse printer paper"
).split()
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_CONS, _VOWELS = "bcdfghjklmnprstvwz", "aeiou"


def charset(model_path) -> list[str]:
    """The rec model's alphabet, index-aligned with its output's last axis.

    Index 0 is the CTC blank (``BLANK``), then the newline-separated ``character`` metadata
    entries, then a space when the output is one wider (PaddleOCR's ``use_space_char``).

    Raises:
        ValueError: the model has no ``character`` metadata, or its output width does not
            match the table with or without the trailing space.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    name = Path(model_path).name
    if "character" not in meta:
        raise ValueError(f"{name}: no 'character' metadata key; keys present: {sorted(meta)}")
    table = meta["character"].split("\n")
    if table and table[-1] == "":  # tolerate a trailing newline
        table = table[:-1]
    dim = model.graph.output[0].type.tensor_type.shape.dim[-1]
    width = dim.dim_value if dim.HasField("dim_value") else None
    chars = [BLANK] + table
    if width == len(chars) + 1:
        chars.append(" ")
    if width != len(chars):
        raise ValueError(f"{name}: output '{model.graph.output[0].name}' has {width} classes but the "
                         f"'character' table gives {len(table)} + blank (+ space) = {len(chars)}")
    return chars


# --- text --------------------------------------------------------------------------------

def _pseudo_word(rng) -> str:
    return "".join(rng.choice(list(_CONS)) + rng.choice(list(_VOWELS)) for _ in range(rng.integers(1, 4)))


def _token(rng) -> str:
    kind = rng.choice(["word", "word", "word", "pseudo", "number", "date", "price", "code", "punct"],
                      p=[.22, .12, .12, .14, .12, .08, .08, .08, .04])
    if kind in ("word", "pseudo"):
        w = str(rng.choice(_WORDS)) if kind == "word" else _pseudo_word(rng)
        case = rng.random()
        w = w.upper() if case < 0.15 else w.capitalize() if case < 0.45 else w
        if rng.random() < 0.2:
            w += str(rng.choice(list(".,:;!?")))
        return w
    if kind == "number":
        n = int(rng.integers(0, 10 ** int(rng.integers(1, 7))))
        return f"{n:,}" if rng.random() < 0.3 else str(n)
    if kind == "date":
        y, m, d = int(rng.integers(1950, 2040)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        style = rng.integers(0, 4)
        return [f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{_MONTHS[m - 1]} {d}, {y}", f"{d}.{m}.{y}"][style]
    if kind == "price":
        v = rng.integers(0, 100000) / 100
        return str(rng.choice(["$", "", "USD "])) + f"{v:.2f}" + ("%" if rng.random() < 0.05 else "")
    if kind == "code":
        letters = "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ")) for _ in range(rng.integers(1, 4)))
        digits = "".join(rng.choice(list("0123456789")) for _ in range(rng.integers(2, 6)))
        return str(rng.choice([f"{letters}-{digits}", f"{letters}{digits}", f"#{digits}", f"{digits}/{letters}"]))
    a = str(rng.choice(_WORDS))
    return str(rng.choice([f"({a})", f'"{a}"', f"{a}'s", f"{a}/{rng.choice(_WORDS)}", f"{a}&co", f"@{a}", "+", "-"]))


def _text(rng) -> str:
    """A 4-30 character line of space-separated tokens."""
    limit = int(rng.integers(4, 31))
    text = _token(rng)
    while len(text) < limit:
        nxt = _token(rng)
        if len(text) + 1 + len(nxt) > 30:
            break
        text += " " + nxt
    if len(text) > 30:
        text = text[:30].rstrip()
    while len(text) < 4:
        text += str(rng.integers(0, 10))
    return text


def _split_of(text: str) -> str:
    """Which split may hold ``text``: a stable hash decides, so the splits can never share a
    text however many lines either one has (disjoint seeds alone cannot promise that)."""
    return SPLITS[zlib.crc32(text.encode()) & 1]


# --- rendering -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _font(font: str, size: int):
    from PIL import ImageFont

    path = Path(font) if "/" in font else FONT_DIR / f"{font}.ttf"
    return ImageFont.truetype(str(path), size)


@functools.lru_cache(maxsize=4096)
def _drawable(font: str, ch: str) -> bool:
    """Whether ``font`` has a glyph for ``ch``: its mask differs from the missing-glyph box."""
    if ch == " ":
        return True
    f = _font(font, 32)
    missing = f.getmask("\U0010fffd")
    m = f.getmask(ch)
    return m.size != missing.size or bytes(m) != bytes(missing)


def render_line(text: str, *, font: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one text line as an RGB uint8 (H, W, 3) image, deterministic for ``rng``'s state.

    Args:
        text: what to draw; every character must have a glyph in ``font``.
        font: a name from ``FONTS`` or a path to a TTF.
        size: font size in pixels.
        rng: the only source of randomness (colours, margins, jitter, blur, noise).
    """
    from PIL import Image, ImageDraw, ImageFilter

    missing = [ch for ch in text if not _drawable(font, ch)]
    if missing:
        raise ValueError(f"font {font} has no glyph for {missing!r} in {text!r}")
    f = _font(font, size)
    jitter = max(1.0, size * 0.04)
    pad = size
    width = int(math.ceil(f.getlength(text))) + 2 * pad
    canvas = Image.new("L", (width, 3 * size), 0)
    draw = ImageDraw.Draw(canvas)
    baseline = pad + f.getmetrics()[0]
    for i, ch in enumerate(text):  # per glyph, at the whole-string advance so kerning holds
        if ch != " ":
            dy = float(rng.uniform(-jitter, jitter))
            draw.text((pad + f.getlength(text[:i]), baseline + dy), ch, fill=255, font=f, anchor="ls")
    ink = np.asarray(canvas)
    cap = np.asarray(_cap_box(f, canvas.size, baseline))  # at least cap height to baseline
    cols = np.flatnonzero(ink.any(0))
    rows = np.flatnonzero(ink.any(1) | cap.any(1))
    mt, mb, ml, mr = (int(v) for v in rng.integers(4, 11, 4))
    box = ink[max(rows[0] - mt, 0):rows[-1] + 1 + mb, max(cols[0] - ml, 0):cols[-1] + 1 + mr]
    alpha = box.astype(np.float32)[..., None] / 255.0

    fg, bg = _colours(rng)
    img = bg * (1 - alpha) + fg * alpha
    if rng.random() < 0.3:
        img = np.asarray(Image.fromarray(img.astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.9)))), np.float32)
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(2, 8), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _cap_box(f, size, baseline):
    from PIL import Image, ImageDraw

    im = Image.new("L", size, 0)
    ImageDraw.Draw(im).text((size[0] // 2, baseline), "H", fill=255, font=f, anchor="ls")
    return im


def _colours(rng) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) RGB, dark on light 85% of the time, luminance apart >= 110."""
    luma = np.array([0.299, 0.587, 0.114])
    while True:
        dark = rng.uniform(0, 90, 3) + rng.uniform(-20, 20)
        light = rng.uniform(170, 255, 3)
        if abs(float(luma @ (light - dark))) >= 110:
            break
    dark, light = np.clip(dark, 0, 255), np.clip(light, 0, 255)
    return (dark, light) if rng.random() < 0.85 else (light, dark)


def make_lines(n: int, *, split: str, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``n`` distinct (text, image) lines of one split; identical for identical arguments.

    The splits draw from disjoint seed streams and keep only texts whose hash assigns them
    to that split, so ``calib`` and ``test`` never share a text. A shorter call returns a
    prefix of a longer one with the same seed.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split), 0x0C12])
    lines, seen = [], set()
    while len(lines) < n:
        text = _text(rng)
        font = str(rng.choice(FONTS))
        if text in seen or _split_of(text) != split or not all(_drawable(font, ch) for ch in text):
            continue
        seen.add(text)
        lines.append((text, render_line(text, font=font, size=int(rng.integers(28, 41)), rng=rng)))
    return lines


# --- model input and output -----------------------------------------------------------------

def _resized(img: np.ndarray, height: int, width: int | None) -> np.ndarray:
    """PaddleOCR ``resize_norm_img``: keep aspect to ``height``, squeeze to ``width`` if wider,
    BGR, (x/255 - 0.5)/0.5, channels first."""
    from PIL import Image

    h, w = img.shape[:2]
    new_w = max(1, int(math.ceil(height * w / h)))
    if width is not None:
        new_w = min(new_w, width)
    im = np.asarray(Image.fromarray(img).resize((new_w, height), Image.BILINEAR), np.float32)
    x = (im[..., ::-1] / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(img: np.ndarray, height: int = 48, width: int = 320) -> np.ndarray:
    """One line as float32 (1, 3, height, width): resized, normalised, zero-padded on the right.

    A line wider than ``width`` at this height is squeezed to ``width`` (a fixed input shape,
    e.g. for calibration); ``batch(..., width=None)`` keeps the aspect as PaddleOCR does.
    """
    x = _resized(img, height, width)
    out = np.zeros((1, 3, height, width), np.float32)
    out[0, :, :, :x.shape[2]] = x
    return out


def batch(imgs: Sequence[np.ndarray], height: int = 48, width: int | None = None,
          min_width: int = 320) -> np.ndarray:
    """Lines as float32 (N, 3, height, W), each resized like ``preprocess`` and zero-padded on
    the right to the widest one (at least ``min_width``).

    ``width=None`` is PaddleOCR's own batching (``predict_rec``): a long line keeps its aspect
    and widens the batch instead of being squeezed to 320, which is what its ~0.993 character
    accuracy assumes; ``width=320`` squeezes long lines and gives fixed-shape batches.
    """
    xs = [_resized(im, height, width) for im in imgs]
    out = np.zeros((len(xs), 3, height, max(min_width, *(x.shape[2] for x in xs))), np.float32)
    for i, x in enumerate(xs):
        out[i, :, :, :x.shape[2]] = x
    return out


def ctc_decode(logits: np.ndarray, chars: Sequence[str]) -> str:
    """Greedy CTC on (T, C) or (1, T, C) scores: argmax per step, collapse repeats, drop blank."""
    logits = np.asarray(logits)
    if logits.ndim == 3:
        if logits.shape[0] != 1:
            raise ValueError(f"ctc_decode takes one line, got logits of shape {logits.shape}")
        logits = logits[0]
    if logits.shape[-1] != len(chars):
        raise ValueError(f"logits have {logits.shape[-1]} classes, charset has {len(chars)}")
    ids = logits.argmax(-1)
    keep = np.ones(len(ids), bool)
    keep[1:] = ids[1:] != ids[:-1]
    return "".join(chars[i] for i in ids[keep & (ids != 0)])


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(preds: Sequence[str], truths: Sequence[str]) -> float:
    """1 - sum(edit distance) / sum(len(truth)); can go below 0 for wild predictions."""
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} truths")
    total = sum(len(t) for t in truths)
    return 1.0 - sum(edit_distance(p, t) for p, t in zip(preds, truths)) / max(total, 1)


def evaluate(run: Callable[[np.ndarray], np.ndarray], lines: Sequence[tuple[str, np.ndarray]],
             chars: Sequence[str], batch_size: int = 8, width: int | None = None) -> dict:
    """Recognise ``lines`` with ``run(x) -> logits`` (N, T, C) and score them.

    Lines go in batches of similar aspect ratio, as PaddleOCR does, so padding stays small;
    ``width`` is passed to ``batch`` (None: PaddleOCR's uncapped widths).

    Returns:
        ``{"char_accuracy", "line_accuracy", "n", "worst"}``; ``worst`` holds the 5
        (truth, prediction) pairs with the largest edit distance.
    """
    order = sorted(range(len(lines)), key=lambda i: lines[i][1].shape[1] / lines[i][1].shape[0])
    preds = [""] * len(lines)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        out = run(batch([lines[i][1] for i in idx], width=width))
        if isinstance(out, dict):
            out = next(iter(out.values()))
        out = np.asarray(out)
        for k, i in enumerate(idx):
            preds[i] = ctc_decode(out[k], chars)
    truths = [t for t, _ in lines]
    dists = [edit_distance(p, t) for p, t in zip(preds, truths)]
    worst = sorted(range(len(lines)), key=lambda i: (-dists[i], i))[:5]
    return {
        "char_accuracy": 1.0 - sum(dists) / max(sum(len(t) for t in truths), 1),
        "line_accuracy": sum(d == 0 for d in dists) / max(len(lines), 1),
        "n": len(lines),
        "worst": [(truths[i], preds[i]) for i in worst if dists[i] > 0],
    }
