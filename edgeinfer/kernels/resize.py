"""Resize (ONNX opset 19+): nearest, linear and cubic interpolation, separable per axis.

For each resized axis a plan holds gather indices and weights, shaped ``(out, taps)``, computed
once per input shape (at compile time when the shape and the scales/sizes are constants). The
kernel then does, per axis, ``taps`` gathers (``np.take``) and multiply-adds; nearest is one
gather, or ``np.repeat`` for an integer upsampling factor; a short axis is interpolated with one
GEMM against a dense weight matrix instead. Coordinates are computed in float32 in the same
order as ONNX Runtime, so ties in nearest rounding fall the same way.

Three deliberate differences from ONNX Runtime, all following the ONNX spec and its conformance
cases: output sizes are ``floor(in * scale)`` computed in float64 (ONNX Runtime uses float32, so
``700 * 0.45`` gives 315 there and 314 here, as ONNX shape inference says);
``tf_crop_and_resize`` crops an axis whose scale is 1 (ONNX Runtime copies it); and
``length_resized`` in the coordinate formulas (align_corners, tf_crop_and_resize,
pytorch_half_pixel) is the *unfloored* target length ``in * scale`` when scales are given, as
the ONNX maintainers confirmed (onnx/onnx#2462: downsampling [1, 2, 3, 4] by 0.6 with
align_corners gives [1, 3.142857], not ONNX Runtime's [1, 4]). With sizes it is the size, or
``in * scale`` for the common scale of a keep_aspect_ratio_policy other than stretch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .registry import OpContext, kernel, shape_rule, writes_out

RESIZE_ATTRS = {
    "antialias": 0,
    "axes": None,
    "coordinate_transformation_mode": "half_pixel",
    "cubic_coeff_a": -0.75,
    "exclude_outside": 0,
    "extrapolation_value": 0.0,
    "keep_aspect_ratio_policy": "stretch",
    "mode": "nearest",
    "nearest_mode": "round_prefer_floor",
}
_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_POLICIES = ("stretch", "not_larger", "not_smaller")
_F32 = np.float32


def _check_attrs(ctx: OpContext, attrs: dict) -> None:
    for key, allowed in (("mode", ("nearest", "linear", "cubic")), ("coordinate_transformation_mode", _COORD_MODES),
                         ("nearest_mode", _NEAREST_MODES), ("keep_aspect_ratio_policy", _POLICIES)):
        if attrs[key] not in allowed:
            raise ctx.error(f"{key} '{attrs[key]}' is not one of {list(allowed)}")


def _given(a) -> bool:
    """Whether an optional input array is present (ONNX also writes 'missing' as an empty tensor)."""
    return a is not None and np.asarray(a).size > 0


def _resize_axes(rank: int, axes, fail) -> list[int]:
    if axes is None:
        return list(range(rank))
    out = []
    for a in axes:
        a = int(a)
        if not -rank <= a < rank:
            raise fail(f"axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise fail(f"axes {list(axes)} has duplicates")
    return out


def output_geometry(shape: tuple, axes: list[int], scales, sizes, policy: str, fail):
    """(output shape, per-axis float32 scale, per-axis target length) for concrete scales or
    sizes (symbols pass). The target length is ``in * scale`` before flooring (see the module
    docstring); None where the input length is symbolic."""
    out = list(shape)
    factor = [_F32(1.0)] * len(shape)
    width = [float(d) if isinstance(d, int) else None for d in shape]
    if _given(scales):
        scales = np.asarray(scales, np.float32).reshape(-1)
        if scales.size != len(axes):
            raise fail(f"scales has {scales.size} values, expected {len(axes)} (one per resized axis)")
        if np.any(scales <= 0):
            raise fail(f"scales must be positive, found {scales.tolist()}")
        for a, s in zip(axes, scales):
            factor[a] = _F32(s)
            if isinstance(shape[a], int):
                out[a] = int(np.floor(np.float64(shape[a]) * np.float64(s)))
                width[a] = float(_F32(shape[a]) * _F32(s))  # float32, like the coordinates
            else:
                out[a] = None
        return tuple(out), factor, width
    if not _given(sizes):
        raise fail("one of the 'scales' and 'sizes' inputs must be given")
    sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
    if len(sizes) != len(axes):
        raise fail(f"sizes has {len(sizes)} values, expected {len(axes)} (one per resized axis)")
    if any(s < 0 for s in sizes):
        raise fail(f"sizes must be non-negative, found {sizes}")
    known = all(isinstance(shape[a], int) for a in axes)
    if policy != "stretch" and known:
        ratios = [_F32(s) / _F32(shape[a]) for a, s in zip(axes, sizes)]
        common = min(ratios) if policy == "not_larger" else max(ratios)
        for a in axes:
            factor[a] = common
            width[a] = float(common * _F32(shape[a]))
            out[a] = int(np.floor(np.float64(common) * shape[a] + 0.5))  # round half up
        return tuple(out), factor, width
    for a, s in zip(axes, sizes):
        out[a] = s if policy == "stretch" else None
        width[a] = float(s) if policy == "stretch" else None
        if isinstance(shape[a], int) and shape[a] > 0:
            factor[a] = _F32(s) / _F32(shape[a])
    return tuple(out), factor, width


# ------------------------------------------------------------------------ shape rule
@shape_rule("Resize")
def resize_shape(ctx: OpContext, **attrs):
    _check_attrs(ctx, attrs)
    x = ctx.inputs[0]
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    rank = len(x.shape)
    axes = _resize_axes(rank, attrs["axes"], ctx.error)
    values = list(ctx.values) + [None] * (4 - len(ctx.values))
    scales = values[2] if ctx.has_input(2) else None
    sizes = values[3] if ctx.has_input(3) else None
    scales_unknown = ctx.has_input(2) and scales is None
    sizes_unknown = ctx.has_input(3) and sizes is None
    if scales_unknown or sizes_unknown:
        if not (_given(scales) or _given(sizes)):
            return [TensorType(x.dtype, tuple(None if i in axes else d for i, d in enumerate(x.shape)))]
    if _given(scales) and _given(sizes):
        raise ctx.error("only one of the 'scales' and 'sizes' inputs may be given")
    out, _, _ = output_geometry(tuple(x.shape), axes, scales, sizes, attrs["keep_aspect_ratio_policy"], ctx.error)
    return [TensorType(x.dtype, out)]


# ---------------------------------------------------------------- per-axis sampling
def _source_coords(mode: str, out_len: int, in_len: int, scale, width: float, roi_start, roi_end) -> np.ndarray:
    """float32 input coordinate of every output index along one axis (``width``: the unfloored
    target length, ``length_resized`` of the spec)."""
    x = np.arange(out_len, dtype=_F32)
    scale = _F32(scale)
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel":
        return (x + _F32(0.5)) / scale - _F32(0.5)
    if mode == "pytorch_half_pixel":
        return (x + _F32(0.5)) / scale - _F32(0.5) if width > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return np.zeros_like(x) if width == 1 else x * _F32(in_len - 1) / _F32(width - 1)
    if mode == "half_pixel_symmetric":
        adjustment = _F32(out_len) / (scale * _F32(in_len))
        offset = _F32(in_len) / _F32(2) * (_F32(1) - adjustment)
        return offset + (x + _F32(0.5)) / scale - _F32(0.5)
    # tf_crop_and_resize
    start, end = _F32(roi_start), _F32(roi_end)
    if width != 1:
        return start * _F32(in_len - 1) + x * (end - start) * _F32(in_len - 1) / _F32(width - 1)
    return np.full_like(x, _F32(0.5) * (start + end) * _F32(in_len - 1))


def _cubic_filter(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    a = _F32(a)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t < 1, near, np.where(t < 2, far, _F32(0))).astype(_F32)


def _linear_filter(t: np.ndarray) -> np.ndarray:
    return np.maximum(_F32(1) - np.abs(t), _F32(0)).astype(_F32)


@dataclass
class _AxisSampler:
    """Gather indices (out, taps) and weights (out, taps) (None: plain gather) for one axis."""

    axis: int
    index: np.ndarray
    weight: np.ndarray | None
    outside: np.ndarray | None  # output positions that take extrapolation_value
    repeat: int = 0  # > 0 when the gather is np.repeat by this factor
    dense: np.ndarray | None = None  # (out, in) float32 weights, when one GEMM is cheaper


def _nearest_index(coords: np.ndarray, rule: str) -> np.ndarray:
    if rule == "round_prefer_floor":
        return np.ceil(coords - _F32(0.5))
    if rule == "round_prefer_ceil":
        return np.floor(coords + _F32(0.5))
    return np.floor(coords) if rule == "floor" else np.ceil(coords)


def _axis_sampler(attrs: dict, axis: int, in_len: int, out_len: int, scale, width, roi_start,
                  roi_end) -> _AxisSampler:
    mode, coord_mode = attrs["mode"], attrs["coordinate_transformation_mode"]
    coords = _source_coords(coord_mode, out_len, in_len, scale, width, roi_start, roi_end)
    outside = None
    if coord_mode == "tf_crop_and_resize":
        outside = (coords < 0) | (coords > _F32(in_len - 1))
        outside = outside if outside.any() else None
    last = in_len - 1
    if mode == "nearest":
        idx = np.clip(_nearest_index(coords, attrs["nearest_mode"]), 0, last).astype(np.int64)
        factor = out_len // in_len if in_len and out_len % in_len == 0 else 0
        rep = factor if factor > 1 and np.array_equal(idx, np.repeat(np.arange(in_len), factor)) else 0
        return _AxisSampler(axis, idx[:, None], None, outside, rep)
    if attrs["antialias"]:
        return _antialias_sampler(attrs, axis, in_len, coords, scale, outside)
    if mode == "linear":
        c = coords if coord_mode == "tf_crop_and_resize" else np.clip(coords, _F32(0), _F32(last))
        i0 = np.clip(np.trunc(c), 0, last).astype(np.int64)
        i1 = np.minimum(i0 + 1, last)
        d0, d1 = np.abs(c - i0.astype(_F32)), np.abs(c - i1.astype(_F32))
        same = i0 == i1
        d0[same], d1[same] = 0.5, 0.5
        return _AxisSampler(axis, np.stack([i0, i1], 1), np.stack([d1, d0], 1).astype(_F32), outside)
    # cubic: 4 taps around floor(coord), edge-replicated, or dropped and renormalized
    base = np.floor(coords)
    ratio = coords - base
    offsets = np.arange(-1, 3)
    raw = base.astype(np.int64)[:, None] + offsets[None, :]
    w = _cubic_filter(ratio[:, None] - offsets[None, :].astype(_F32), attrs["cubic_coeff_a"])
    if attrs["exclude_outside"]:
        w = np.where((raw >= 0) & (raw <= last), w, _F32(0))
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, _F32(1), total)
    return _AxisSampler(axis, np.clip(raw, 0, last), w.astype(_F32), outside)


def _antialias_sampler(attrs, axis, in_len, coords, scale, outside) -> _AxisSampler:
    # When downsampling the filter is stretched by 1/scale so every input pixel contributes
    # (a low-pass before sampling). Taps outside the input are replicated from the edge, or
    # dropped with exclude_outside; the weights are then renormalized.
    cubic = attrs["mode"] == "cubic"
    support_size = 4.0 if cubic else 2.0
    inv = _F32(1) / _F32(scale)
    support = _F32(support_size * 0.5) * inv if inv >= 1 else _F32(support_size * 0.5)
    stretch = _F32(1) / inv if inv >= 1 else _F32(1)
    width = int(np.ceil(support)) * 2 + 1
    if inv == 1:
        coords = np.arange(coords.shape[0], dtype=_F32)
    center = coords + _F32(0.5)
    lo = np.floor(center - support + _F32(0.5)).astype(np.int64)
    hi = lo + np.clip(np.floor(center + support + _F32(0.5)).astype(np.int64) - lo, 0, width)
    pos = lo[:, None] + np.arange(width)[None, :]
    valid = pos < hi[:, None]
    if attrs["exclude_outside"]:
        valid &= (pos >= 0) & (pos < in_len)
    t = (pos.astype(_F32) - center[:, None] + _F32(0.5)) * stretch
    w = _cubic_filter(t, attrs["cubic_coeff_a"]) if cubic else _linear_filter(t)
    w = np.where(valid, w, _F32(0))
    total = w.sum(axis=1, keepdims=True)
    w = w / np.where(total == 0, _F32(1), total)
    return _AxisSampler(axis, np.clip(pos, 0, in_len - 1), w.astype(_F32), outside)


# An axis is interpolated with one GEMM against a dense (out, in) weight matrix when the input
# is short enough that the extra multiply-adds cost less than per-tap gathers do.
_DENSE_MAX_INPUT_PER_TAP = 32


def _dense_matrix(s: _AxisSampler, in_len: int) -> np.ndarray | None:
    taps = s.index.shape[1]
    if s.weight is None or in_len > _DENSE_MAX_INPUT_PER_TAP * taps:
        return None
    m = np.zeros((s.index.shape[0], in_len), np.float64)
    rows = np.repeat(np.arange(s.index.shape[0]), taps)
    np.add.at(m, (rows, s.index.reshape(-1)), s.weight.reshape(-1).astype(np.float64))
    return m.astype(_F32)


def _apply_axis(y: np.ndarray, s: _AxisSampler) -> np.ndarray:
    if s.weight is None:
        if s.repeat:
            return np.repeat(y, s.repeat, axis=s.axis)
        return np.take(y, s.index[:, 0], axis=s.axis)
    if s.dense is not None and y.dtype == _F32:
        if s.axis == y.ndim - 1:
            return np.matmul(y, s.dense.T)
        lead, tail = y.shape[:s.axis], y.shape[s.axis + 1:]
        rows = y.reshape((-1, y.shape[s.axis], int(np.prod(tail))))
        return np.matmul(s.dense, rows).reshape(lead + (s.dense.shape[0],) + tail)
    bshape = (-1,) + (1,) * (y.ndim - s.axis - 1)
    acc = None
    for t in range(s.index.shape[1]):
        if not s.weight[:, t].any():
            continue
        term = np.take(y, s.index[:, t], axis=s.axis)
        term *= s.weight[:, t].reshape(bshape)
        if acc is None:
            acc = term
        else:
            acc += term
    return acc


# --------------------------------------------------------------------------- kernel
@kernel("Resize", attrs=RESIZE_ATTRS)
def resize(ctx: OpContext, **attrs):
    _check_attrs(ctx, attrs)
    label = ctx.node.label
    fail = lambda msg: KernelError(f"{label}: {msg}")  # noqa: E731
    policy = attrs["keep_aspect_ratio_policy"]
    coord_mode = attrs["coordinate_transformation_mode"]
    extrapolation = float(attrs["extrapolation_value"])
    plans: dict[tuple, tuple] = {}

    def make_plan(shape: tuple, roi, scales, sizes):
        if _given(scales) and _given(sizes):
            raise fail("only one of the 'scales' and 'sizes' inputs may be given")
        axes = _resize_axes(len(shape), attrs["axes"], fail)
        out, factor, width = output_geometry(shape, axes, scales, sizes, policy, fail)
        starts, ends = [0.0] * len(shape), [1.0] * len(shape)
        if _given(roi):
            r = np.asarray(roi, np.float32).reshape(-1)
            if r.size != 2 * len(axes):
                raise fail(f"roi has {r.size} values, expected {2 * len(axes)}")
            for i, a in enumerate(axes):
                starts[a], ends[a] = r[i], r[len(axes) + i]
        samplers = []
        for a in axes:
            if out[a] == shape[a] and factor[a] == 1 and coord_mode != "tf_crop_and_resize":
                continue  # identity along this axis
            if shape[a] == 0 or out[a] == 0:
                continue
            sampler = _axis_sampler(attrs, a, shape[a], out[a], factor[a], width[a], starts[a], ends[a])
            sampler.dense = _dense_matrix(sampler, shape[a])
            samplers.append(sampler)
        # shrink early: axes that reduce the tensor the most go first; among equals the innermost
        # axis (whose gathers are element-wise, not row copies) works on the smaller tensor
        samplers.sort(key=lambda s: (s.index.shape[0] / max(shape[s.axis], 1), -s.axis))
        return tuple(out), samplers

    def key_of(a):
        return None if a is None else (np.asarray(a).dtype.str, np.asarray(a).tobytes())

    vals = list(ctx.values) + [None] * (4 - len(ctx.values))
    static = ctx.static_shape(0)
    if static is not None and all(vals[i] is not None or not ctx.has_input(i) for i in (1, 2, 3)):
        key = (static, key_of(vals[1]), key_of(vals[2]), key_of(vals[3]))
        plans[key] = make_plan(static, vals[1], vals[2], vals[3])

    @writes_out
    def resize_fn(x, roi=None, scales=None, sizes=None, out=None):
        key = (x.shape, key_of(roi), key_of(scales), key_of(sizes))
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = make_plan(x.shape, roi, scales, sizes)
        out_shape, samplers = plan
        if 0 in out_shape:
            return np.zeros(out_shape, x.dtype) if out is None else out
        interpolate = any(s.weight is not None for s in samplers)
        # float16, bfloat16, float8 and integers interpolate in float32 and round back once
        y = x.astype(_F32) if interpolate and x.dtype not in (np.float32, np.float64) else x
        for s in samplers:
            y = _apply_axis(y, s)
        for s in samplers:
            if s.outside is not None:
                y[(slice(None),) * s.axis + (s.outside,)] = extrapolation
        if y.dtype != x.dtype:
            if x.dtype.kind in "iu":
                info = np.iinfo(x.dtype)
                y = np.clip(np.rint(y), info.min, info.max)
            y = y.astype(x.dtype)
        if out is not None:
            np.copyto(out, y)
            return out
        return y if y is not x else x.copy()

    return resize_fn
