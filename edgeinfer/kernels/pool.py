"""Pooling and local normalization: MaxPool, AveragePool, LpPool, their Global forms, LRN and
MaxUnpool.

Windowed pools share :class:`~.conv.Window` with Conv. Each kernel plans per concrete input
shape (at compile time when static, lazily and cached otherwise) and then runs one whole-array
step per kernel tap on strided slices of the padded input: a loop over ``prod(kernel_shape)``
taps, never over pixels or channels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .conv import Window, int_list, pad_spatial, scratch
from .registry import REQUIRED, OpContext, kernel, shape_rule, writes_out

_WINDOW_ATTRS = {
    "auto_pad": "NOTSET",
    "ceil_mode": 0,
    "dilations": None,
    "kernel_shape": REQUIRED,
    "pads": None,
    "strides": None,
}
MAXPOOL_ATTRS = {**_WINDOW_ATTRS, "storage_order": 0}
AVERAGEPOOL_ATTRS = {**_WINDOW_ATTRS, "count_include_pad": 0}
LPPOOL_ATTRS = {**_WINDOW_ATTRS, "p": 2}


# ------------------------------------------------------------------------------ geometry
def pool_window(ctx: OpContext, attrs: dict, n: int) -> Window:
    if n < 1:
        raise ctx.error(f"input must have rank >= 3 (N, C, spatial...), found rank {n + 2}")
    kernel_shape = int_list(ctx, "kernel_shape", attrs["kernel_shape"], n, 1, 1)
    return Window.from_attrs(ctx, kernel_shape, attrs.get("strides"), attrs.get("dilations"), attrs.get("pads"),
                             attrs.get("auto_pad", "NOTSET"), attrs.get("ceil_mode", 0))


def _pool_type(ctx: OpContext, attrs: dict) -> TensorType:
    x = ctx.inputs[0]
    if x is None:
        raise ctx.error("input X is missing")
    if x.shape is None:
        return TensorType(x.dtype, None)
    win = pool_window(ctx, attrs, len(x.shape) - 2)
    spatial = tuple(win.out_dim(i, d) for i, d in enumerate(x.shape[2:]))
    if any(isinstance(o, int) and o < 1 for o in spatial):
        raise ctx.error(f"input spatial shape {list(x.shape[2:])} is too small for kernel {list(win.kernel)}: "
                        f"output would be {list(spatial)}")
    return TensorType(x.dtype, tuple(x.shape[:2]) + spatial)


@dataclass
class _PoolPlan:
    out_shape: tuple[int, ...]
    begins: tuple[int, ...]
    alloc_ends: tuple[int, ...]  # padding the taps actually reach at the end (ceil_mode may add)
    taps: list
    win: Window
    real_ends: tuple[int, ...]
    passes: list | None = None  # separable reduction passes, built on first use


def _plan(ctx: OpContext, attrs: dict, shape: tuple[int, ...]) -> _PoolPlan:
    fail = lambda msg: KernelError(f"{ctx.node.label}: {msg}")  # noqa: E731
    if len(shape) < 3:
        raise fail(f"input must have rank >= 3 (N, C, spatial...), found shape {list(shape)}")
    win = pool_window(ctx, attrs, len(shape) - 2)
    outs, begins, ends = win.resolve(tuple(shape[2:]), fail)
    alloc = tuple(max(0, (o - 1) * s + win.extent(i) - d - b)
                  for i, (o, s, d, b) in enumerate(zip(outs, win.strides, shape[2:], begins)))
    return _PoolPlan(tuple(shape[:2]) + outs, begins, alloc, win.tap_slices(outs), win, ends)


def _planner(ctx: OpContext, attrs: dict, extra=None):
    """A function shape -> (plan, extra(plan)) caching by shape, pre-filled for a static input."""
    cache: dict[tuple, tuple] = {}

    def get(shape: tuple):
        hit = cache.get(shape)
        if hit is None:
            p = _plan(ctx, attrs, shape)
            hit = cache[shape] = (p, extra(p, shape) if extra else None)
        return hit

    static = ctx.static_shape(0)
    if static is not None:
        get(static)
    elif ctx.inputs[0] is not None and ctx.inputs[0].shape is not None:
        pool_window(ctx, attrs, len(ctx.inputs[0].shape) - 2)  # validate attributes now
    return get


def _axis_positions(p: _PoolPlan, axis: int) -> np.ndarray:
    """(taps along axis, outputs along axis) input coordinates each window tap reads."""
    w = p.win
    o = np.arange(p.out_shape[2 + axis]) * w.strides[axis] - p.begins[axis]
    return np.arange(w.kernel[axis])[:, None] * w.dilations[axis] + o[None, :]


def _window_counts(p: _PoolPlan, shape: tuple[int, ...], include_pad: bool) -> np.ndarray:
    """Number of window taps averaged at each output position, shaped (1, 1, *outs)."""
    counts = None
    for axis, d in enumerate(shape[2:]):
        pos = _axis_positions(p, axis)
        lo, hi = (-p.begins[axis], d + p.real_ends[axis]) if include_pad else (0, d)
        c = ((pos >= lo) & (pos < hi)).sum(axis=0)
        counts = c if counts is None else np.multiply.outer(counts, c)
    # a window lying wholly in the padding averages nothing: give it 0, not 0/0
    return np.maximum(counts, 1).reshape((1, 1) + counts.shape)


def _lowest(dtype: np.dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


@dataclass
class _AxisPass:
    """One axis of a separable window reduction, precomputed for one input shape.

    Each tap touches only the outputs whose input position falls inside the unpadded input,
    so padding (the identity of the reduction) needs no padded copy of the input. ``first``
    is a tap covering every output: it is copied instead of reduced into an identity fill.
    """

    shape: tuple[int, ...]  # result shape
    first: tuple | None  # full index into the input, or None
    taps: list[tuple[tuple, tuple]]  # (index into the result, index into the input)
    # stride-1 size-preserving last axis: (tap shifts, [(column, source columns)] at the borders)
    flat: tuple[list[int], list[tuple[int, list[int]]]] | None = None
    # the first tap reduced with the widest other one in a single op instead of copied first
    # (one pass fewer): (result index, first-tap input index, other input index), and the
    # copies of the first tap to the outputs the other one does not reach
    pair: tuple[tuple, tuple, tuple] | None = None
    rest: list[tuple[tuple, tuple]] = field(default_factory=list)


def _axis_pass(shape: tuple[int, ...], a: int, w: Window, begin: int, o: int, axis: int) -> _AxisPass:
    k, s, dl, d = w.kernel[a], w.strides[a], w.dilations[a], shape[axis]
    head = (slice(None),) * axis
    reads = []
    for t in range(k):
        first = t * dl - begin  # input position read for output 0
        lo = max(0, -(first // s) if first < 0 else 0)
        hi = min(o, (d - 1 - first) // s + 1) if d - 1 - first >= 0 else 0
        if hi > lo:
            p0 = first + lo * s
            reads.append((lo, hi, slice(p0, p0 + (hi - lo - 1) * s + 1, s)))
    full = next((r for r in reads if r[0] == 0 and r[1] == o), None)
    others = [r for r in reads if full is None or r != full]
    pair, rest = None, []
    if full is not None and others:
        widest = max(others, key=lambda r: r[1] - r[0])
        others.remove(widest)
        lo, hi, src = widest

        def first_over(a: int, b: int) -> slice:
            start = full[2].start + a * s
            return slice(start, start + (b - a - 1) * s + 1, s)

        pair = (head + (slice(lo, hi),), head + (first_over(lo, hi),), head + (src,))
        rest = [(head + (slice(a, b),), head + (first_over(a, b),)) for a, b in ((0, lo), (hi, o)) if b > a]
    taps = [(head + (slice(lo, hi),), head + (src,)) for lo, hi, src in others]
    out_shape = shape[:axis] + (o,) + shape[axis + 1:]
    flat = None
    if axis == len(shape) - 1 and s == 1 and o == d:
        deltas = [t * dl - begin for t in range(k)]
        left, right = max(0, -min(deltas)), max(0, max(deltas))
        borders = [(c, [c + dt for dt in deltas if 0 <= c + dt < d])
                   for c in sorted(set(range(min(d, left))) | set(range(max(0, d - right), d)))]
        flat = (deltas, borders)
    return _AxisPass(out_shape, None if full is None else head + (full[2],), taps, flat, pair, rest)


# Rows shorter than this make numpy's per-row loop overhead dominate a pass over an NCHW
# tensor (a 7x7 image costs 10x the arithmetic); with enough channels such pools run on a
# channels-last copy instead, whose rows are C values long.
_CHANNELS_LAST_MAX_WIDTH = 16
_CHANNELS_LAST_MIN_CHANNELS = 32


def _axis_passes(p: _PoolPlan, shape: tuple[int, ...]) -> tuple[bool, list[_AxisPass]]:
    """(channels last?, the per-axis passes) of ``p``, cached on the plan (one input shape)."""
    if p.passes is None:
        last = (len(shape) == 4 and shape[-1] < _CHANNELS_LAST_MAX_WIDTH
                and shape[1] >= _CHANNELS_LAST_MIN_CHANNELS)
        passes = []
        cur = (shape[0],) + tuple(shape[2:]) + (shape[1],) if last else tuple(shape)
        for a in range(p.win.n):
            ap = _axis_pass(cur, a, p.win, p.begins[a], p.out_shape[2 + a], 1 + a if last else 2 + a)
            passes.append(ap)
            cur = ap.shape
        p.passes = (last, passes)
    return p.passes


def _run_any_pass(y: np.ndarray, ap: _AxisPass, op: np.ufunc, identity, dest: np.ndarray) -> np.ndarray:
    if ap.flat is not None and y.flags.c_contiguous and dest.flags.c_contiguous:
        return _run_flat_pass(y, ap, op, identity, dest)
    return _run_pass(y, ap, op, identity, dest)


def _run_pass(y: np.ndarray, ap: _AxisPass, op: np.ufunc, identity, acc: np.ndarray) -> np.ndarray:
    if ap.pair is not None:
        dst, a, b = ap.pair
        op(y[a], y[b], out=acc[dst])
        for dst, src in ap.rest:
            np.copyto(acc[dst], y[src])
    elif ap.first is not None:
        np.copyto(acc, y[ap.first])
    else:
        acc.fill(identity)
    for dst, src in ap.taps:
        d = acc[dst]
        op(d, y[src], out=d)
    return acc


def _run_flat_pass(y: np.ndarray, ap: _AxisPass, op: np.ufunc, identity, acc: np.ndarray) -> np.ndarray:
    """Stride-1, size-preserving window reduction along the last axis, on flattened arrays.

    Short rows make numpy pay per row for every partial-row slice (4x the cost of the
    arithmetic on 112-wide rows), so each tap runs once over the flattened tensor, shifted by
    its offset; the few border columns, which that shift fills from the neighbouring row,
    are then recomputed exactly.
    """
    deltas, borders = ap.flat
    yf, af = y.reshape(-1), acc.reshape(-1)
    size = yf.size
    if 0 in deltas:
        np.copyto(af, yf)
    else:
        af.fill(identity)
    for delta in deltas:
        if 0 < delta < size:
            op(af[:size - delta], yf[delta:], out=af[:size - delta])
        elif delta < 0 and -delta < size:
            op(af[-delta:], yf[:size + delta], out=af[-delta:])
    for c, sources in borders:
        column = acc[..., c]
        if not sources:
            column.fill(identity)
            continue
        np.copyto(column, y[..., sources[0]])
        for src in sources[1:]:
            op(column, y[..., src], out=column)
    return acc


def _separable_reduce(x: np.ndarray, p: _PoolPlan, op: np.ufunc, identity, out: np.ndarray | None) -> np.ndarray:
    """Reduce each box window of ``x`` (implicitly padded with ``identity``) with ``op``.

    Box windows separate, so ``sum(k)`` taps replace ``prod(k)``; reducing the outer axes
    first keeps the bulk of the work on contiguous rows. The last axis writes ``out``.
    """
    channels_last, passes = _axis_passes(p, x.shape)
    # intermediate results live in the reusable per-thread workspace (see conv.scratch)
    specs = [(ap.shape, x.dtype) for ap in passes[:-1]]
    if channels_last:
        specs += [((x.shape[0],) + x.shape[2:] + (x.shape[1],), x.dtype), (passes[-1].shape, x.dtype)]
    temps = scratch(*specs)
    y = x
    if channels_last:
        y = temps[-2]
        np.copyto(y, x.transpose(0, 2, 3, 1))
    last = len(passes) - 1
    for a, ap in enumerate(passes):
        dest = temps[a] if a < last else (temps[-1] if channels_last else out)
        if dest is None:
            dest = np.empty(ap.shape, y.dtype)
        y = _run_any_pass(y, ap, op, identity, dest)
    if channels_last:
        result = out if out is not None else np.empty(p.out_shape, x.dtype)
        np.copyto(result, y.transpose(0, 3, 1, 2))
        return result
    return y


# ---------------------------------------------------------------------------- MaxPool
@shape_rule("MaxPool")
def max_pool_shape(ctx: OpContext, **attrs):
    y = _pool_type(ctx, attrs)
    if len(ctx.node.outputs) > 1:
        return [y, TensorType("int64", y.shape)]
    return [y]


def _tap_indices(p: _PoolPlan, shape: tuple[int, ...], storage_order: int) -> list[np.ndarray]:
    """For each tap, the flat (row- or column-major) spatial input index at every output."""
    spatial = shape[2:]
    n = len(spatial)
    if storage_order:
        steps = [int(np.prod(spatial[:i])) for i in range(n)]
    else:
        steps = [int(np.prod(spatial[i + 1:])) for i in range(n)]
    per_axis = [_axis_positions(p, a) * steps[a] for a in range(n)]
    result = []
    for tap in np.ndindex(*p.win.kernel):
        idx = np.zeros((), np.int64)
        for a in range(n):
            idx = np.add.outer(idx, per_axis[a][tap[a]]) if a else per_axis[a][tap[a]].astype(np.int64)
        result.append(idx)
    return result


@kernel("MaxPool", attrs=MAXPOOL_ATTRS)
def max_pool(ctx: OpContext, **attrs):
    with_indices = len(ctx.node.outputs) > 1 and bool(ctx.node.outputs[1])
    order = int(attrs["storage_order"])
    if order not in (0, 1):
        raise ctx.error(f"storage_order must be 0 or 1, found {order}")
    plan_for = _planner(ctx, attrs, (lambda p, s: _tap_indices(p, s, order)) if with_indices else None)
    head = (slice(None), slice(None))

    def pooled(x, out=None):
        p, tap_idx = plan_for(x.shape)
        if not with_indices:
            return _separable_reduce(x, p, np.maximum, _lowest(x.dtype), out)
        xp = pad_spatial(x, p.begins, p.alloc_ends, _lowest(x.dtype))
        y = np.empty(p.out_shape, x.dtype)
        np.copyto(y, xp[head + p.taps[0]])
        idx = np.empty(p.out_shape, np.int64)
        idx[...] = tap_idx[0]
        for sl, ti in zip(p.taps[1:], tap_idx[1:]):
            v = xp[head + sl]
            better = v > y  # strict: the first maximum in row-major tap order wins
            np.copyto(y, v, where=better)
            np.copyto(idx, np.broadcast_to(ti, idx.shape), where=better)
        plane = int(np.prod(x.shape[2:]))
        idx += (np.arange(x.shape[0] * x.shape[1], dtype=np.int64) * plane).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
        return y, idx

    return pooled if with_indices else writes_out(pooled)


# ------------------------------------------------------------------ Average and Lp pools
@shape_rule("AveragePool")
def average_pool_shape(ctx: OpContext, **attrs):
    return [_pool_type(ctx, attrs)]


@kernel("AveragePool", attrs=AVERAGEPOOL_ATTRS)
def average_pool(ctx: OpContext, **attrs):
    include_pad = bool(attrs["count_include_pad"])
    dtype = np.dtype(ctx.inputs[0].dtype)
    work = np.dtype(np.float32) if dtype == np.float16 else dtype  # float16 sums drift

    def reciprocal_counts(p: _PoolPlan, shape: tuple):
        inv = 1.0 / _window_counts(p, shape, include_pad)
        # a python scalar when uniform: multiplying by it is twice as fast as by an array
        return float(inv.flat[0]) if np.all(inv == inv.flat[0]) else inv.astype(work)

    plan_for = _planner(ctx, attrs, reciprocal_counts)

    @writes_out
    def average(x, out=None):
        p, inv_count = plan_for(x.shape)
        direct = out if out is not None and out.dtype == work else None
        y = _separable_reduce(x.astype(work, copy=False), p, np.add, 0, direct)
        y *= inv_count
        if out is not None and y is not out:
            np.copyto(out, y, casting="unsafe")
            return out
        return y.astype(x.dtype, copy=False)

    return average


@shape_rule("LpPool")
def lp_pool_shape(ctx: OpContext, **attrs):
    return [_pool_type(ctx, attrs)]


def _lp_power(x: np.ndarray, p: int) -> np.ndarray:
    return np.square(x) if p == 2 else np.abs(x) ** p


def _lp_root(y: np.ndarray, p: int) -> None:
    if p == 2:
        np.sqrt(y, out=y)
    elif p != 1:
        np.power(y, 1.0 / p, out=y)


@kernel("LpPool", attrs=LPPOOL_ATTRS)
def lp_pool(ctx: OpContext, **attrs):
    power = int(attrs["p"])
    if power < 1:
        raise ctx.error(f"p must be >= 1, found {power}")
    plan_for = _planner(ctx, attrs)

    @writes_out
    def lp(x, out=None):
        p, _ = plan_for(x.shape)
        y = _separable_reduce(_lp_power(x, power), p, np.add, 0, out)
        _lp_root(y, power)
        return y

    return lp


# -------------------------------------------------------------------------- Global pools
def _global_type(ctx: OpContext) -> list[TensorType]:
    x = ctx.inputs[0]
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    if len(x.shape) < 3:
        raise ctx.error(f"input must have rank >= 3 (N, C, spatial...), found shape {list(x.shape)}")
    return [TensorType(x.dtype, tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2))]


@shape_rule("GlobalAveragePool")
def global_average_pool_shape(ctx: OpContext):
    return _global_type(ctx)


@shape_rule("GlobalMaxPool")
def global_max_pool_shape(ctx: OpContext):
    return _global_type(ctx)


@shape_rule("GlobalLpPool")
def global_lp_pool_shape(ctx: OpContext, p: int):
    return _global_type(ctx)


def _spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def spatial_mean(x: np.ndarray, dtype=None) -> np.ndarray:
    """(N, C) means over the spatial axes of a float array, as one BLAS matrix-vector product:
    3-6x faster than ``np.mean`` on the short rows of small feature maps."""
    n, c = x.shape[:2]
    rows = x.reshape(n * c, -1)
    work = np.dtype(dtype or x.dtype)
    if rows.dtype != work:
        rows = rows.astype(work)
    hw = rows.shape[1]
    if hw == 0:
        return np.full((n, c), np.nan, work)
    y = rows @ np.full(hw, 1.0 / hw, work)
    return y.reshape(n, c)


@kernel("GlobalAveragePool")
def global_average_pool(ctx: OpContext):
    @writes_out
    def gap(x, out=None):
        axes = _spatial_axes(x)
        if x.dtype in (np.float32, np.float64) and x.ndim >= 3:
            y = spatial_mean(x).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
            if out is None:
                return y
            np.copyto(out, y)
            return out
        if x.dtype != np.float16:
            return np.mean(x, axis=axes, keepdims=True, out=out)
        # float16 sums are accumulated in float32 so large images neither overflow nor drift
        y = np.mean(x, axis=axes, keepdims=True, dtype=np.float32)
        if out is None:
            return y.astype(x.dtype)
        np.copyto(out, y, casting="unsafe")
        return out

    return gap


@kernel("GlobalMaxPool")
def global_max_pool(ctx: OpContext):
    @writes_out
    def gmp(x, out=None):
        return np.max(x, axis=_spatial_axes(x), keepdims=True, out=out)

    return gmp


@kernel("GlobalLpPool", attrs={"p": 2})
def global_lp_pool(ctx: OpContext, p: int):
    power = int(p)
    if power < 1:
        raise ctx.error(f"p must be >= 1, found {power}")

    @writes_out
    def glp(x, out=None):
        y = np.sum(_lp_power(x, power), axis=_spatial_axes(x), keepdims=True, out=out)
        _lp_root(y, power)
        return y

    return glp


# ----------------------------------------------------------------------------------- LRN
@shape_rule("LRN")
def lrn_shape(ctx: OpContext, **attrs):
    x = ctx.inputs[0]
    if x.shape is not None and len(x.shape) < 3:
        raise ctx.error(f"input must have rank >= 3 (N, C, spatial...), found shape {list(x.shape)}")
    return [x]


@kernel("LRN", attrs={"alpha": 0.0001, "beta": 0.75, "bias": 1.0, "size": REQUIRED})
def lrn(ctx: OpContext, alpha: float, beta: float, bias: float, size: int):
    size = int(size)
    if size < 1:
        raise ctx.error(f"size must be >= 1, found {size}")
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    scale = float(alpha) / size

    @writes_out
    def lrn_fn(x, out=None):
        sq = np.square(x)
        c = x.shape[1]
        padded = np.zeros((x.shape[0], c + size - 1) + x.shape[2:], x.dtype)
        padded[:, before:before + c] = sq
        acc = padded[:, 0:c].copy()
        for t in range(1, size):  # a window sum over channels: one add per window tap
            acc += padded[:, t:t + c]
        acc *= scale
        acc += bias
        np.power(acc, beta, out=acc)
        return np.divide(x, acc, out=out)

    return lrn_fn


# ----------------------------------------------------------------------------- MaxUnpool
def _unpool_default_spatial(ctx: OpContext, attrs: dict, spatial) -> tuple:
    n = len(spatial)
    kernel_shape = int_list(ctx, "kernel_shape", attrs["kernel_shape"], n, 1, 1)
    strides = int_list(ctx, "strides", attrs.get("strides"), n, 1, 1)
    pads = int_list(ctx, "pads", attrs.get("pads"), 2 * n, 0, 0)
    return tuple(
        (d - 1) * s + k - pads[i] - pads[n + i] if isinstance(d, int) else None
        for i, (d, s, k) in enumerate(zip(spatial, strides, kernel_shape))
    )


@shape_rule("MaxUnpool")
def max_unpool_shape(ctx: OpContext, **attrs):
    x = ctx.inputs[0]
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    if len(x.shape) < 3:
        raise ctx.error(f"input must have rank >= 3 (N, C, spatial...), found shape {list(x.shape)}")
    default = _unpool_default_spatial(ctx, attrs, x.shape[2:])
    if ctx.has_input(2):
        shape = ctx.values[2] if len(ctx.values) > 2 else None
        if shape is None:
            return [TensorType(x.dtype, (None,) * len(x.shape))]
        shape = tuple(int(v) for v in np.asarray(shape).reshape(-1))
        if len(shape) != len(x.shape):
            raise ctx.error(f"output_shape {list(shape)} must have rank {len(x.shape)}")
        return [TensorType(x.dtype, shape)]
    return [TensorType(x.dtype, tuple(x.shape[:2]) + default)]


@kernel("MaxUnpool", attrs={"kernel_shape": REQUIRED, "pads": None, "strides": None})
def max_unpool(ctx: OpContext, **attrs):
    label = ctx.node.label
    if ctx.inputs[0] is not None and ctx.inputs[0].shape is not None:
        _unpool_default_spatial(ctx, attrs, ctx.inputs[0].shape[2:])  # validates attributes

    def unpool(x, indices, output_shape=None):
        if indices.shape != x.shape:
            raise KernelError(f"{label}: indices shape {list(indices.shape)} != input shape {list(x.shape)}")
        # The spec is ambiguous here. The indices are read as flat positions in MaxPool's input,
        # whose shape output_shape gives (it exists to settle that shape, which kernel, strides
        # and pads leave open), so they are scattered straight into a tensor of that shape, as
        # ONNX Runtime (onnxruntime#2193, after onnx/onnx#2398) and PyTorch do. The ONNX
        # reference and its case test_maxunpool_export_with_output_shape instead unravel them in
        # the default shape and pad at the end, which misplaces real MaxPool indices whenever
        # output_shape differs from the default; that case is not followed.
        if output_shape is not None:
            shape = tuple(int(v) for v in np.asarray(output_shape).reshape(-1))
            if len(shape) != x.ndim or any(d < 0 for d in shape):
                raise KernelError(f"{label}: output_shape {list(shape)} must hold {x.ndim} non-negative sizes")
        else:
            shape = tuple(x.shape[:2]) + _unpool_default_spatial(ctx, attrs, x.shape[2:])
        y = np.zeros(shape, x.dtype)
        flat = indices.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= y.size):
            raise KernelError(f"{label}: an index is outside the output of shape {list(shape)} ({y.size} elements)")
        y.reshape(-1)[flat] = x.reshape(-1)
        return y

    return unpool

