"""Detection and spatial-sampling ops: NonMaxSuppression, RoiAlign, GridSample, AffineGrid and
DeformConv.

The samplers share one shape of computation: per spatial axis, a few integer taps with float
weights (bilinear: 2, bicubic: 4, nearest: 1), a Python loop over the tap *combinations*
(at most 4**r) and, inside it, one whole-array gather and multiply-add over every sample,
channel and batch item. NonMaxSuppression is greedy and so sequential in the boxes it keeps,
but each kept box is compared with all remaining candidates of its class in one vector step.

Arithmetic runs in float32 (float64 for float64 inputs) and is rounded to the input type once
(integers truncate, as the GridSample spec's "cast to integer" says).

Where the spec is silent the choices follow ONNX Runtime and the ONNX conformance cases:
RoiAlign's max mode takes the largest weighted bilinear corner of each sample (not the max of
interpolated values); a RoiAlign sample more than one pixel outside the map reads 0; and
GridSample follows PyTorch's grid_sample, with bicubic padding applied to each tap. One
deliberate difference: AffineGrid puts the lone pixel of a size-1 axis at 0 with
align_corners=1, as PyTorch's affine_grid does (the ONNX function body divides by zero there,
ONNX Runtime gives 1).
"""
from __future__ import annotations

import itertools
from typing import Callable, NamedTuple

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .conv import Window, conv_window
from .registry import OpContext, kernel, shape_rule

_INT64 = "int64"
# Rows gathered per step of RoiAlign: bounds its temporary (taps x channels) arrays.
_GATHER_BLOCK = 1 << 21


def _runtime_fail(ctx: OpContext) -> Callable[[str], Exception]:
    label = ctx.node.label
    return lambda msg: KernelError(f"{label}: {msg}")


def _work_dtype(*dtypes: np.dtype) -> np.dtype:
    """float64 when an input is float64, complex128 for complex data, float32 otherwise."""
    if any(np.dtype(d).kind == "c" for d in dtypes):
        return np.dtype(np.complex128)
    return np.dtype(np.float64) if any(np.dtype(d) == np.float64 for d in dtypes) else np.dtype(np.float32)


def _to_dtype(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``y`` (computed in float) as ``dtype``; integers truncate like ONNX Cast, within range."""
    if y.dtype == dtype:
        return y
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        y = np.clip(np.nan_to_num(y.real if y.dtype.kind == "c" else y), info.min, info.max)
    elif dtype.kind == "b":
        return y != 0
    return y.astype(dtype)


def _scalar(a, name: str, default, cast, fail):
    """An optional scalar input (shape [] or [1]) as a Python number."""
    if a is None or np.asarray(a).size == 0:
        return default
    a = np.asarray(a)
    if a.size != 1:
        raise fail(f"input '{name}' must be a scalar, found shape {list(a.shape)}")
    return cast(a.reshape(-1)[0])


def _check_rank(ctx: OpContext, i: int, name: str, ranks) -> tuple | None:
    t = ctx.inputs[i] if i < len(ctx.inputs) else None
    if t is None or t.shape is None:
        return None
    if len(t.shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ctx.error(f"input '{name}' must have rank {want}, found shape {list(t.shape)}")
    return tuple(t.shape)


def _same_dim(ctx: OpContext, what: str, a, b) -> None:
    if isinstance(a, int) and isinstance(b, int) and a != b:
        raise ctx.error(f"{what}: {a} != {b}")


# -------------------------------------------------------------------- NonMaxSuppression
@shape_rule("NonMaxSuppression")
def nms_shape(ctx: OpContext, center_point_box):
    if center_point_box not in (0, 1):
        raise ctx.error(f"center_point_box must be 0 or 1, found {center_point_box}")
    boxes = _check_rank(ctx, 0, "boxes", (3,))
    scores = _check_rank(ctx, 1, "scores", (3,))
    if boxes is not None:
        _same_dim(ctx, "boxes must have 4 coordinates per box (last dim)", boxes[2], 4)
    if boxes is not None and scores is not None:
        _same_dim(ctx, "boxes and scores disagree on num_batches", boxes[0], scores[0])
        _same_dim(ctx, "boxes and scores disagree on the number of boxes", boxes[1], scores[2])
    return [TensorType(_INT64, (None, 3))]


def _box_corners(boxes: np.ndarray, center: bool):
    """(y1, x1, y2, x2) of boxes [..., 4]: corner boxes are put in order (y1 <= y2, x1 <= x2);
    centre boxes are taken as given (a negative width or height makes an empty box)."""
    if center:
        xc, yc, w, h = np.moveaxis(boxes, -1, 0)
        half_w, half_h = w / 2, h / 2
        return yc - half_h, xc - half_w, yc + half_h, xc + half_w
    a, b, c, d = np.moveaxis(boxes, -1, 0)  # any diagonal pair of corners
    return np.minimum(a, c), np.minimum(b, d), np.maximum(a, c), np.maximum(b, d)


def _overlaps(a: np.ndarray, a_area: np.ndarray, b: np.ndarray, b_area: np.ndarray, iou_threshold: float):
    """(len(a), len(b)) bool: IoU of boxes (y1, x1, y2, x2) strictly above the threshold.
    Degenerate (zero-area) and disjoint boxes never overlap. The arithmetic is ONNX
    Runtime's, so an IoU that equals the threshold compares the same way."""
    a, a_area = a[:, None, :], a_area[:, None]
    inter_h = np.maximum(np.minimum(a[..., 2], b[:, 2]) - np.maximum(a[..., 0], b[:, 0]), 0)
    inter_w = np.maximum(np.minimum(a[..., 3], b[:, 3]) - np.maximum(a[..., 1], b[:, 1]), 0)
    inter = inter_h * inter_w
    union = a_area + b_area - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return (inter > 0) & (union > 0) & (a_area > 0) & (b_area > 0) & (iou > iou_threshold)


# NonMaxSuppression examines candidates in blocks, growing from the first size up to the cap.
_NMS_FIRST_BLOCK, _NMS_MAX_BLOCK = 16, 1024


def _greedy_nms(boxes: np.ndarray, area: np.ndarray, iou_threshold: float, limit: int) -> list[int]:
    """Positions kept from candidates sorted best first: a candidate is kept unless a box
    kept before it overlaps it. Candidates are checked a block at a time, in two vector
    steps (against the boxes kept so far, and against each other); the Python loop only
    walks the block, reading the precomputed overlaps of the boxes it keeps."""
    n = boxes.shape[0]
    kept: list[int] = []
    start, block = 0, _NMS_FIRST_BLOCK
    while start < n and len(kept) < limit:
        end = min(n, start + block)
        cand = slice(start, end)
        alive = np.ones(end - start, bool)
        if kept:
            k = np.array(kept)
            alive &= ~_overlaps(boxes[cand], area[cand], boxes[k], area[k], iou_threshold).any(axis=1)
        within = _overlaps(boxes[cand], area[cand], boxes[cand], area[cand], iou_threshold)
        for i in range(end - start):
            if alive[i]:
                kept.append(start + i)
                if len(kept) == limit:
                    break
                alive &= ~within[i]  # (its own and earlier entries are no longer read)
        start, block = end, min(2 * block, _NMS_MAX_BLOCK)
    return kept


@kernel("NonMaxSuppression", attrs={"center_point_box": 0})
def non_max_suppression(ctx: OpContext, center_point_box):
    fail = _runtime_fail(ctx)
    center = bool(center_point_box)

    def nms_fn(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None, score_threshold=None):
        if boxes.ndim != 3 or boxes.shape[2] != 4:
            raise fail(f"boxes must have shape [num_batches, num_boxes, 4], found {list(boxes.shape)}")
        if scores.ndim != 3 or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
            raise fail(f"scores of shape {list(scores.shape)} do not match boxes {list(boxes.shape)}: "
                       f"expected [{boxes.shape[0]}, num_classes, {boxes.shape[1]}]")
        limit = _scalar(max_output_boxes_per_class, "max_output_boxes_per_class", 0, int, fail)
        iou_thr = _scalar(iou_threshold, "iou_threshold", 0.0, float, fail)
        score_thr = _scalar(score_threshold, "score_threshold", None, float, fail)
        if not 0.0 <= iou_thr <= 1.0:
            raise fail(f"iou_threshold must be in [0, 1], found {iou_thr}")
        selected = []
        if limit > 0:
            work = _work_dtype(boxes.dtype, scores.dtype)
            corners = np.stack(_box_corners(boxes.astype(work, copy=False), center), axis=-1)
            area = (corners[..., 2] - corners[..., 0]) * (corners[..., 3] - corners[..., 1])
            for b in range(scores.shape[0]):
                for c in range(scores.shape[1]):
                    s = scores[b, c].astype(work, copy=False)
                    cand = np.arange(s.size) if score_thr is None else np.flatnonzero(s > work.type(score_thr))
                    # best score first; equal scores keep the lower box index first
                    order = cand[np.argsort(-s[cand], kind="stable")]
                    for i in _greedy_nms(corners[b, order], area[b, order], iou_thr, limit):
                        selected.append((b, c, int(order[i])))
        return np.array(selected, np.int64).reshape(-1, 3)

    return nms_fn


# ------------------------------------------------------------------------------ RoiAlign
ROI_ALIGN_ATTRS = {
    "coordinate_transformation_mode": "half_pixel",
    "mode": "avg",
    "output_height": 1,
    "output_width": 1,
    "sampling_ratio": 0,
    "spatial_scale": 1.0,
}


def _check_roi_attrs(ctx: OpContext, attrs: dict) -> None:
    if attrs["mode"] not in ("avg", "max"):
        raise ctx.error(f"mode '{attrs['mode']}' is not one of ['avg', 'max']")
    if attrs["coordinate_transformation_mode"] not in ("half_pixel", "output_half_pixel"):
        raise ctx.error(f"coordinate_transformation_mode '{attrs['coordinate_transformation_mode']}' is not one of "
                        f"['half_pixel', 'output_half_pixel']")
    for key in ("output_height", "output_width"):
        if int(attrs[key]) < 1:
            raise ctx.error(f"{key} must be >= 1, found {attrs[key]}")
    if int(attrs["sampling_ratio"]) < 0:
        raise ctx.error(f"sampling_ratio must be >= 0, found {attrs['sampling_ratio']}")


@shape_rule("RoiAlign")
def roi_align_shape(ctx: OpContext, **attrs):
    _check_roi_attrs(ctx, attrs)
    x = _check_rank(ctx, 0, "X", (4,))
    rois = _check_rank(ctx, 1, "rois", (2,))
    idx = _check_rank(ctx, 2, "batch_indices", (1,))
    if rois is not None:
        _same_dim(ctx, "rois must have 4 coordinates per RoI (last dim)", rois[1], 4)
    r = rois[0] if rois is not None else (idx[0] if idx is not None else None)
    if rois is not None and idx is not None:
        _same_dim(ctx, "rois and batch_indices disagree on the number of RoIs", rois[0], idx[0])
    c = x[1] if x is not None else None
    return [TensorType(ctx.inputs[0].dtype, (r, c, int(attrs["output_height"]), int(attrs["output_width"])))]


def _roi_axis_taps(coord: np.ndarray, size: int):
    """Bilinear taps of RoiAlign sample coordinates along one axis: (low, high, w_low, w_high).

    A sample more than one pixel outside the map weighs 0; one within [-1, 0) reads the
    first pixel; one at or past the last pixel reads the last (Mask R-CNN's rule)."""
    valid = (coord >= -1.0) & (coord <= size)
    c = np.maximum(coord, 0)
    low = np.floor(c).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    frac = np.where(at_end, 0, c - low).astype(coord.dtype)
    return low, high, (1 - frac) * valid, frac * valid


@kernel("RoiAlign", attrs=ROI_ALIGN_ATTRS)
def roi_align(ctx: OpContext, **attrs):
    _check_roi_attrs(ctx, attrs)
    fail = _runtime_fail(ctx)
    out_h, out_w = int(attrs["output_height"]), int(attrs["output_width"])
    ratio = int(attrs["sampling_ratio"])
    half_pixel = attrs["coordinate_transformation_mode"] == "half_pixel"
    use_max = attrs["mode"] == "max"

    def roi_align_fn(x, rois, batch_indices):
        if x.ndim != 4:
            raise fail(f"X must be 4-D (N, C, H, W), found shape {list(x.shape)}")
        if rois.ndim != 2 or rois.shape[1] != 4 or batch_indices.shape != (rois.shape[0],):
            raise fail(f"rois {list(rois.shape)} and batch_indices {list(batch_indices.shape)} must have shapes "
                       f"[num_rois, 4] and [num_rois]")
        n, c, h, w = x.shape
        work = _work_dtype(x.dtype, rois.dtype)
        bidx = batch_indices.astype(np.int64)
        if bidx.size and (bidx.min() < 0 or bidx.max() >= n):
            raise fail(f"batch_indices must be in [0, {n}), found {bidx.min()}..{bidx.max()}")
        y = np.zeros((rois.shape[0], out_h, out_w, c), work)
        if y.size == 0 or h == 0 or w == 0:
            return _to_dtype(y.transpose(0, 3, 1, 2), x.dtype)
        scale = work.type(attrs["spatial_scale"])
        shift = work.type(0.5 if half_pixel else 0.0)
        r = rois.astype(work)
        if not np.isfinite(r).all():
            raise fail("rois must be finite")
        x0, y0 = r[:, 0] * scale - shift, r[:, 1] * scale - shift
        roi_w, roi_h = r[:, 2] * scale - shift - x0, r[:, 3] * scale - shift - y0
        if not half_pixel:  # the legacy mode forces every RoI to at least 1x1 pixel
            roi_w, roi_h = np.maximum(roi_w, 1), np.maximum(roi_h, 1)
        bin_h, bin_w = roi_h / work.type(out_h), roi_w / work.type(out_w)
        grid_h = np.full(r.shape[0], ratio) if ratio else np.maximum(np.ceil(roi_h / out_h), 0).astype(np.int64)
        grid_w = np.full(r.shape[0], ratio) if ratio else np.maximum(np.ceil(roi_w / out_w), 0).astype(np.int64)
        # pixels as rows of channels: every bilinear tap is one contiguous row gather
        rows = np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=work).reshape(n * h * w, c)
        # RoIs with the same sampling grid are computed together, in blocks of bounded size
        # (whole RoIs, or for a huge grid, bands of its sample rows)
        for gh, gw in sorted(set(zip(grid_h.tolist(), grid_w.tolist()))):
            if gh == 0 or gw == 0:
                continue  # an empty RoI pools to 0
            members = np.flatnonzero((grid_h == gh) & (grid_w == gw))
            per_grid_row = out_h * out_w * gw * c
            band = min(gh, max(1, _GATHER_BLOCK // per_grid_row))
            step = max(1, _GATHER_BLOCK // (per_grid_row * band))
            for start in range(0, members.size, step):
                sel = members[start:start + step]
                acc = None
                for g0 in range(0, gh, band):
                    part = _roi_block(rows, bidx[sel] * (h * w), _RoiAxis(y0[sel], bin_h[sel], out_h, gh, h),
                                      _RoiAxis(x0[sel], bin_w[sel], out_w, gw, w), range(g0, min(gh, g0 + band)),
                                      use_max, work)
                    acc = part if acc is None else (np.maximum(acc, part) if use_max else acc + part)
                y[sel] = acc if use_max else acc / work.type(gh * gw)
        return _to_dtype(y.transpose(0, 3, 1, 2), x.dtype)

    return roi_align_fn


class _RoiAxis(NamedTuple):
    """One axis of a block of RoIs: per-RoI start and bin size, output bins, samples per bin
    and the feature map's size."""

    start: np.ndarray
    bin_size: np.ndarray
    bins: int
    grid: int
    size: int

    def samples(self, which, work) -> np.ndarray:
        """Coordinates (rois, bins, len(which)) of samples ``which`` of each bin's grid (their
        centres); the arithmetic order is ONNX Runtime's."""
        b = np.arange(self.bins, dtype=work)[None, :, None]
        g = np.asarray(which, dtype=work)[None, None, :] + work.type(0.5)
        size = self.bin_size[:, None, None]
        return self.start[:, None, None] + b * size + g * size / work.type(self.grid)


def _roi_block(rows, base, yaxis: _RoiAxis, xaxis: _RoiAxis, grid_rows, use_max: bool, work) -> np.ndarray:
    """Sum (avg mode) or max of the samples in rows ``grid_rows`` of the sampling grid, as
    (rois, out_h, out_w, C), for RoIs sharing one sampling grid."""
    ys = yaxis.samples(grid_rows, work)  # (k, out_h, rows)
    xs = xaxis.samples(range(xaxis.grid), work)  # (k, out_w, gw)
    ylo, yhi, wy_lo, wy_hi = _roi_axis_taps(ys, yaxis.size)
    xlo, xhi, wx_lo, wx_hi = _roi_axis_taps(xs, xaxis.size)
    width = xaxis.size
    k, out_h, gh = ys.shape
    out_w, gw = xs.shape[1:]
    expand_y = (k, out_h, gh, 1, 1)
    expand_x = (k, 1, 1, out_w, gw)
    acc = None
    for yi, wy in ((ylo, wy_lo), (yhi, wy_hi)):
        for xi, wx in ((xlo, wx_lo), (xhi, wx_hi)):
            index = base.reshape(-1, 1, 1, 1, 1) + yi.reshape(expand_y) * width + xi.reshape(expand_x)
            weight = wy.reshape(expand_y) * wx.reshape(expand_x)
            term = rows[index] * weight[..., None]  # (k, out_h, gh, out_w, gw, C)
            if acc is None:
                acc = term
            elif use_max:
                # max mode takes, per sample, the largest *weighted* corner, not the max of the
                # interpolated value (what ONNX Runtime and the ONNX conformance cases do),
                # then the largest sample
                np.maximum(acc, term, out=acc)
            else:
                acc += term
    return acc.max(axis=(2, 4)) if use_max else acc.sum(axis=(2, 4))


# ---------------------------------------------------------------------------- GridSample
GRID_SAMPLE_ATTRS = {"align_corners": 0, "mode": "linear", "padding_mode": "zeros"}
# opset 16 names first, opset 20 names second
_GRID_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic", "cubic": "cubic"}
_PADDING_MODES = ("zeros", "border", "reflection")
_CUBIC_A = -0.75  # PyTorch's bicubic coefficient, which GridSample follows


def _check_grid_attrs(ctx: OpContext, attrs: dict) -> str:
    if attrs["mode"] not in _GRID_MODES:
        raise ctx.error(f"mode '{attrs['mode']}' is not one of {list(_GRID_MODES)}")
    if attrs["padding_mode"] not in _PADDING_MODES:
        raise ctx.error(f"padding_mode '{attrs['padding_mode']}' is not one of {list(_PADDING_MODES)}")
    if attrs["align_corners"] not in (0, 1):
        raise ctx.error(f"align_corners must be 0 or 1, found {attrs['align_corners']}")
    return _GRID_MODES[attrs["mode"]]


@shape_rule("GridSample")
def grid_sample_shape(ctx: OpContext, **attrs):
    mode = _check_grid_attrs(ctx, attrs)
    x, grid = ctx.inputs[0], ctx.inputs[1]
    if mode != "nearest" and x.dtype in ("string", "bool"):
        raise ctx.error(f"{mode} interpolation needs numeric X, found dtype {x.dtype}")
    if grid.dtype not in ("float16", "bfloat16", "float32", "float64"):
        raise ctx.error(f"grid must be a float tensor, found dtype {grid.dtype}")
    xs, gs = x.shape, grid.shape
    if xs is not None and len(xs) < 3:
        raise ctx.error(f"X must have rank >= 3 (N, C, spatial...), found shape {list(xs)}")
    if gs is None:
        return [TensorType(x.dtype, None if xs is None else (xs[0], xs[1]) + (None,) * (len(xs) - 2))]
    if len(gs) < 3:
        raise ctx.error(f"grid must have rank >= 3 (N, spatial..., r), found shape {list(gs)}")
    if xs is not None:
        if len(gs) != len(xs):
            raise ctx.error(f"grid {list(gs)} must have the rank of X {list(xs)}")
        _same_dim(ctx, "grid's last dim must equal the number of spatial axes of X", gs[-1], len(xs) - 2)
        _same_dim(ctx, "X and grid disagree on the batch size", xs[0], gs[0])
    elif isinstance(gs[-1], int) and gs[-1] != len(gs) - 2:
        raise ctx.error(f"grid's last dim {gs[-1]} must equal its number of spatial axes {len(gs) - 2}")
    n = xs[0] if xs is not None and isinstance(xs[0], int) else gs[0]
    return [TensorType(x.dtype, (n, None if xs is None else xs[1]) + tuple(gs[1:-1]))]


def _reflect(coord: np.ndarray, twice_low: int, twice_high: int) -> np.ndarray:
    """Reflect coordinates into [twice_low / 2, twice_high / 2], bouncing off both ends."""
    if twice_low == twice_high:
        return np.zeros_like(coord)
    low = twice_low / 2
    span = (twice_high - twice_low) / 2
    c = np.abs(coord - low)
    extra = np.fmod(c, span)
    flips = np.floor(c / span)
    return np.where(flips % 2 == 0, extra + low, span - extra + low).astype(coord.dtype)


def _apply_padding(coord: np.ndarray, size: int, padding: str, align: bool) -> np.ndarray:
    """Map (possibly out-of-range) pixel coordinates as the padding mode says; zeros keeps them
    (out-of-range taps read 0 later)."""
    if padding == "border":
        return np.clip(coord, 0, size - 1)
    if padding == "reflection":
        c = _reflect(coord, 0, 2 * (size - 1)) if align else _reflect(coord, -1, 2 * size - 1)
        return np.clip(c, 0, size - 1)
    return coord


def _cubic_weights(t: np.ndarray) -> list[np.ndarray]:
    """Weights of the taps at offsets -1, 0, 1, 2 for fractional position ``t``."""
    a = _CUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _grid_axis_taps(coord, size: int, mode: str, padding: str, align: bool):
    """Taps of one spatial axis as [(index, weight, inside)]: indices clipped into range,
    weight None for nearest, and ``inside`` False where a tap falls outside the input (only
    possible with zeros padding), which then reads 0."""
    if mode == "cubic":
        # the taps, not the coordinate, are padded: clipping first would move the stencil
        base = np.floor(coord)
        t = coord - base
        taps = []
        for off, wt in zip((-1, 0, 1, 2), _cubic_weights(t)):
            pos = _apply_padding(base + off, size, padding, align)
            taps.append((pos, wt))
    else:
        coord = _apply_padding(coord, size, padding, align)
        if mode == "nearest":
            taps = [(np.rint(coord), None)]  # halfway rounds to even, as the spec says
        else:
            low = np.floor(coord)
            frac = coord - low
            taps = [(low, 1 - frac), (low + 1, frac)]
    out = []
    for pos, wt in taps:
        inside = (pos >= 0) & (pos <= size - 1)
        index = np.clip(np.nan_to_num(pos), 0, max(size - 1, 0)).astype(np.int64)
        out.append((index, wt, inside))
    return out


@kernel("GridSample", attrs=GRID_SAMPLE_ATTRS)
def grid_sample(ctx: OpContext, **attrs):
    mode = _check_grid_attrs(ctx, attrs)
    padding, align = attrs["padding_mode"], bool(attrs["align_corners"])
    fail = _runtime_fail(ctx)

    def grid_sample_fn(x, grid):
        r = x.ndim - 2
        if r < 1 or grid.ndim != x.ndim or grid.shape[-1] != r or grid.shape[0] != x.shape[0]:
            raise fail(f"grid of shape {list(grid.shape)} does not fit X of shape {list(x.shape)}: expected "
                       f"[{x.shape[0]}, out spatial ({r} axes)..., {r}]")
        n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
        out_spatial = grid.shape[1:-1]
        points = int(np.prod(out_spatial, dtype=np.int64))
        work = _work_dtype(x.dtype, grid.dtype)
        coord_dtype = np.float64 if work == np.float64 or grid.dtype == np.float64 else np.float32
        g = grid.reshape(n, points, r).astype(coord_dtype)
        size_total = int(np.prod(spatial, dtype=np.int64))
        if n * c * points == 0:
            return np.zeros((n, c) + out_spatial, x.dtype)
        if size_total == 0:
            return _to_dtype(np.zeros((n, c) + out_spatial, work), x.dtype)
        per_axis = []
        for axis, size in enumerate(spatial):
            # the grid lists coordinates innermost axis first (x, y, z)
            u = g[..., r - 1 - axis]
            pix = (u + 1) / 2 * (size - 1) if align else ((u + 1) * size - 1) / 2
            per_axis.append(_grid_axis_taps(pix, size, mode, padding, align))
        strides = [int(np.prod(spatial[i + 1:], dtype=np.int64)) for i in range(r)]
        rows = x.reshape(n, c, size_total).transpose(0, 2, 1).reshape(n * size_total, c)
        base = (np.arange(n, dtype=np.int64) * size_total)[:, None]
        if mode == "nearest":  # one tap: a plain gather, for any dtype
            index = sum(taps[0][0] * s for taps, s in zip(per_axis, strides))
            inside = np.logical_and.reduce([taps[0][2] for taps in per_axis])
            y = rows[base + index]  # (n, points, c)
            if not inside.all():
                y[~inside] = np.zeros((), x.dtype) if x.dtype != object else ""
            return np.ascontiguousarray(y.transpose(0, 2, 1)).reshape((n, c) + out_spatial)
        if rows.dtype != work:
            rows = rows.astype(work)
        acc = np.zeros((n, points, c), work)
        for combo in itertools.product(*per_axis):
            index = base + sum(t[0] * s for t, s in zip(combo, strides))
            weight = combo[0][1] * combo[0][2]
            for t in combo[1:]:
                weight = weight * t[1] * t[2]
            acc += rows[index] * weight[..., None].astype(work, copy=False)
        y = acc.transpose(0, 2, 1).reshape((n, c) + out_spatial)
        return _to_dtype(y, x.dtype)

    return grid_sample_fn


# ---------------------------------------------------------------------------- AffineGrid
@shape_rule("AffineGrid")
def affine_grid_shape(ctx: OpContext, align_corners):
    theta, size = ctx.inputs[0], ctx.inputs[1]
    if theta.dtype not in ("float16", "bfloat16", "float32", "float64"):
        raise ctx.error(f"theta must be a float tensor, found dtype {theta.dtype}")
    ts = _check_rank(ctx, 0, "theta", (3,))
    _check_rank(ctx, 1, "size", (1,))
    r = None
    if ts is not None and isinstance(ts[1], int):
        if (ts[1], ts[2]) not in ((2, 3), (3, 4)):
            raise ctx.error(f"theta must have shape [N, 2, 3] (2-D) or [N, 3, 4] (3-D), found {list(ts)}")
        r = ts[1]
    elif size.shape is not None and isinstance(size.shape[0], int):
        r = size.shape[0] - 2
    value = ctx.values[1] if len(ctx.values) > 1 else None
    if value is not None:
        dims = [int(v) for v in np.asarray(value).reshape(-1)]
        if len(dims) not in (4, 5) or (r is not None and len(dims) != r + 2):
            raise ctx.error(f"size {dims} must be [N, C, H, W] for 2-D theta or [N, C, D, H, W] for 3-D")
        if ts is not None:
            _same_dim(ctx, "theta and size disagree on the batch size", ts[0], dims[0])
        return [TensorType(theta.dtype, (dims[0],) + tuple(dims[2:]) + (len(dims) - 2,))]
    if r is None:
        return [TensorType(theta.dtype, None)]
    return [TensorType(theta.dtype, (ts[0] if ts is not None else None,) + (None,) * r + (r,))]


def _linspace_unit(steps: int, align: bool, dtype) -> np.ndarray:
    """Pixel centres along one axis in [-1, 1] coordinates (0 for a single pixel)."""
    if steps <= 1:
        return np.zeros(max(steps, 0), dtype)
    pos = np.linspace(-1.0, 1.0, steps, dtype=np.float64)
    if not align:
        pos = pos * (steps - 1) / steps
    return pos.astype(dtype)


@kernel("AffineGrid", attrs={"align_corners": 0})
def affine_grid(ctx: OpContext, align_corners):
    fail = _runtime_fail(ctx)
    align = bool(align_corners)

    def affine_grid_fn(theta, size):
        dims = [int(v) for v in np.asarray(size).reshape(-1)]
        r = len(dims) - 2
        if r not in (2, 3) or theta.shape != (dims[0], r, r + 1):
            raise fail(f"theta of shape {list(theta.shape)} does not fit size {dims}: expected [{dims[0] if dims else 'N'}, "
                       f"2, 3] with size [N, C, H, W] or [N, 3, 4] with size [N, C, D, H, W]")
        if any(d < 0 for d in dims):
            raise fail(f"size {dims} has a negative dim")
        work = _work_dtype(theta.dtype)
        spatial = dims[2:]
        # homogeneous base positions (x, y[, z], 1) with x varying fastest (the last axis)
        axes = [_linspace_unit(d, align, work) for d in spatial]
        mesh = np.meshgrid(*axes, indexing="ij")
        base = np.stack([m.reshape(-1) for m in reversed(mesh)] + [np.ones(mesh[0].size, work)], axis=1)
        grid = np.matmul(base[None], theta.astype(work).transpose(0, 2, 1))  # (N, points, r)
        return _to_dtype(grid.reshape([dims[0]] + spatial + [r]), theta.dtype)

    return affine_grid_fn


# ---------------------------------------------------------------------------- DeformConv
DEFORM_CONV_ATTRS = {"dilations": None, "group": 1, "kernel_shape": None, "offset_group": 1, "pads": None,
                     "strides": None}
_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _deform_window(ctx: OpContext, attrs: dict, n: int, w_shape):
    if int(attrs["offset_group"]) < 1:
        raise ctx.error(f"offset_group must be >= 1, found {attrs['offset_group']}")
    return conv_window(ctx, attrs, n, w_shape)


@shape_rule("DeformConv")
def deform_conv_shape(ctx: OpContext, **attrs):
    x, w = ctx.inputs[0], ctx.inputs[1]
    if x.dtype not in _FLOATS:
        raise ctx.error(f"input X has dtype {x.dtype}; DeformConv takes {', '.join(_FLOATS)}")
    xs, ws = x.shape, w.shape
    n = len(xs) - 2 if xs is not None else (len(ws) - 2 if ws is not None else None)
    if n is None:
        return [TensorType(x.dtype, None)]
    win, known = _deform_window(ctx, attrs, n, ws)
    group, offset_group = int(attrs["group"]), int(attrs["offset_group"])
    if xs is None:
        return [TensorType(x.dtype, None)]
    if len(xs) < 3 or (ws is not None and len(ws) != len(xs)):
        raise ctx.error(f"X {list(xs)} and W {list(ws) if ws else None} must have the same rank >= 3")
    ch, m = xs[1], (ws[0] if ws is not None else None)
    if isinstance(ch, int):
        if ws is not None and isinstance(ws[1], int) and ch != ws[1] * group:
            raise ctx.error(f"X has {ch} channels but W {list(ws)} with group {group} expects {ws[1] * group}")
        if ch % offset_group:
            raise ctx.error(f"X's {ch} channels are not divisible by offset_group {offset_group}")
    if isinstance(m, int) and m % group:
        raise ctx.error(f"{m} output channels are not divisible by group {group}")
    spatial = tuple(win.out_dim(i, d) if known else None for i, d in enumerate(xs[2:]))
    if any(isinstance(o, int) and o < 1 for o in spatial):
        raise ctx.error(f"input spatial shape {list(xs[2:])} is too small for kernel {list(win.kernel)}")
    off = _check_rank(ctx, 2, "offset", (len(xs),))
    if off is not None and known:
        taps = int(np.prod(win.kernel))
        _same_dim(ctx, f"offset must have offset_group * {taps} taps * {n} = {offset_group * taps * n} channels",
                  off[1], offset_group * taps * n)
        for i, (a, b) in enumerate(zip(off[2:], spatial)):
            _same_dim(ctx, f"offset spatial dim {i} must equal the output's", a, b)
    return [TensorType(x.dtype, (xs[0], m) + spatial)]


@kernel("DeformConv", attrs=DEFORM_CONV_ATTRS)
def deform_conv(ctx: OpContext, **attrs):
    fail = _runtime_fail(ctx)
    group, offset_group = int(attrs["group"]), int(attrs["offset_group"])
    windows: dict[tuple, Window] = {}  # by weight shape

    def deform_conv_fn(x, w, offset, b=None, mask=None):
        nsp = x.ndim - 2
        if nsp < 1 or w.ndim != x.ndim:
            raise fail(f"X {list(x.shape)} and W {list(w.shape)} must have the same rank >= 3")
        win = windows.get(w.shape)
        if win is None:
            win = windows[w.shape] = _deform_window(ctx, attrs, nsp, w.shape)[0]
        outs, begins, _ = win.resolve(tuple(x.shape[2:]), fail)
        n, ch = x.shape[:2]
        m = w.shape[0]
        if ch != w.shape[1] * group or m % group or ch % offset_group:
            raise fail(f"X has {ch} channels, W {list(w.shape)}: need C = W.shape[1] * group ({group}), "
                       f"W.shape[0] divisible by group and C divisible by offset_group ({offset_group})")
        taps = int(np.prod(win.kernel))
        points = int(np.prod(outs))
        want = (n, offset_group * taps * nsp) + outs
        if offset.shape != want:
            raise fail(f"offset has shape {list(offset.shape)}, expected {list(want)}")
        if mask is not None and mask.shape != (n, offset_group * taps) + outs:
            raise fail(f"mask has shape {list(mask.shape)}, expected {[n, offset_group * taps, *outs]}")
        if b is not None and b.shape != (m,):
            raise fail(f"B has shape {list(b.shape)}, expected [{m}]")
        work = _work_dtype(x.dtype)
        cols = _deform_columns(x.astype(work, copy=False), offset.astype(work, copy=False),
                               None if mask is None else mask.astype(work, copy=False), win, begins, outs, offset_group)
        # cols (N, C, taps, P) -> per conv group one GEMM against W as (M/g, C/g * taps)
        cols = cols.reshape(n, group, (ch // group) * taps, points)
        wg = w.astype(work, copy=False).reshape(group, m // group, (ch // group) * taps)
        y = np.matmul(wg[None], cols).reshape((n, m) + outs)
        if b is not None:
            y += b.astype(work).reshape((1, m) + (1,) * nsp)
        return _to_dtype(y, x.dtype)

    return deform_conv_fn


def _deform_columns(x, offset, mask, win, begins, outs, offset_group: int) -> np.ndarray:
    """Bilinearly sampled input (N, C, taps, P) at the offset kernel positions (0 outside)."""
    n, ch = x.shape[:2]
    spatial = x.shape[2:]
    nsp = len(spatial)
    taps = int(np.prod(win.kernel))
    points = int(np.prod(outs))
    size_total = int(np.prod(spatial))
    strides = [int(np.prod(spatial[i + 1:])) for i in range(nsp)]
    # regular (undeformed) positions per axis: (taps, P)
    grids = np.meshgrid(*[np.arange(o) for o in outs], indexing="ij")
    tap_idx = np.meshgrid(*[np.arange(k) for k in win.kernel], indexing="ij")
    regular = [
        (tap_idx[a].reshape(-1, 1) * win.dilations[a] + grids[a].reshape(1, -1) * win.strides[a] - begins[a])
        for a in range(nsp)
    ]
    offset = offset.reshape(n, offset_group, taps, nsp, points)
    mask = None if mask is None else mask.reshape(n, offset_group, 1, taps * points)
    per_group = ch // offset_group
    flat = x.reshape(n, offset_group, per_group, size_total)
    cols = np.zeros((n, offset_group, per_group, taps * points), x.dtype)
    for g in range(offset_group):
        per_axis = []
        for a in range(nsp):
            pos = (regular[a][None] + offset[:, g, :, a]).reshape(n, 1, taps * points)
            # far outside (or NaN) reads zeros either way; clipping keeps the int cast in range
            pos = np.clip(np.nan_to_num(pos, nan=-2.0), -2, spatial[a] + 1)
            low = np.floor(pos)
            frac = pos - low
            low = low.astype(np.int64)
            per_axis.append([(low, 1 - frac), (low + 1, frac)])
        src = flat[:, g]
        for combo in itertools.product(*per_axis):
            inside = np.logical_and.reduce([(i >= 0) & (i < d) for (i, _), d in zip(combo, spatial)])
            index = sum(np.clip(i, 0, d - 1) * s for (i, _), d, s in zip(combo, spatial, strides))
            weight = np.where(inside, np.prod([wt for _, wt in combo], axis=0), 0)
            if mask is not None:
                weight = weight * mask[:, g]
            cols[:, g] += np.take_along_axis(src, index, axis=2) * weight
    return cols.reshape(n, ch, taps, points)
