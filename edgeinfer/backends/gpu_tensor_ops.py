"""Data-movement kernels of the ``gpu`` backend (see :mod:`.gpu_kernels`): Reshape family,
Transpose, Concat/Split/Slice, Gather, Pad/Tile/Expand, DepthToSpace, Einsum and Resize.

Shapes are static here (the backend compiles per input shape and folds every shape
computation), so Reshape-like ops take their target shape from the inferred output type and
index arguments (Slice starts, Split sizes, Pad widths, Resize scales) must be constants:
they become Python slices and device index arrays when the kernel is built.
"""
from __future__ import annotations

import numpy as np

from ..kernels.resize import _axis_sampler, _given, _resize_axes, output_geometry
from .gpu_kernels import GpuContext, gpu_kernel, work_dtype


def _const(ctx: GpuContext, i: int, what: str) -> np.ndarray:
    v = ctx.const(i)
    if v is None:
        raise ctx.fail(f"input {i} ({what}, '{ctx.node.inputs[i]}') must be a constant on the gpu backend")
    return np.asarray(v)


@gpu_kernel("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape_op(ctx: GpuContext, **attrs):
    out = ctx.out_shape(0)
    for i in range(1, len(ctx.node.inputs)):
        if ctx.has_input(i):
            _const(ctx, i, "shape or axes")  # the output type already holds their effect
    return lambda x, *_: x.reshape(out)


@gpu_kernel("Expand")
def expand_op(ctx: GpuContext):
    xp = ctx.xp
    out = ctx.out_shape(0)
    _const(ctx, 1, "shape")
    return lambda x, _s=None: xp.broadcast_to(x, out)


@gpu_kernel("Transpose")
def transpose_op(ctx: GpuContext, perm):
    xp = ctx.xp
    rank = len(ctx.shape(0))
    perm = tuple(range(rank))[::-1] if perm is None else tuple(int(p) % rank for p in perm)
    return lambda x: xp.transpose(x, perm)


@gpu_kernel("Concat")
def concat_op(ctx: GpuContext, axis):
    xp = ctx.xp
    ax = axis % len(ctx.out_shape(0))
    return lambda *xs: xp.concatenate([x for x in xs if x is not None and x.size], axis=ax) if any(
        x is not None and x.size for x in xs) else xp.zeros(ctx.out_shape(0), ctx.out_dtype(0))


@gpu_kernel("Split")
def split_op(ctx: GpuContext, axis, num_outputs):
    shape = ctx.shape(0)
    ax = axis % len(shape)
    sizes = [ctx.out_shape(i)[ax] for i in range(len(ctx.node.outputs))]
    if ctx.has_input(1):
        _const(ctx, 1, "split")
    bounds = np.cumsum([0] + sizes)
    pieces = [tuple(slice(None) if d != ax else slice(int(a), int(b)) for d in range(len(shape)))
              for a, b in zip(bounds[:-1], bounds[1:])]
    return lambda x, _s=None: tuple(x[p] for p in pieces)


def slice_index(shape, starts, ends, axes, steps) -> tuple:
    """The Python index of an ONNX Slice (clamping as the spec says, negative steps included)."""
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    index = [slice(None)] * rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        d = shape[a]
        s, e = int(s), int(e)
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
            index[a] = slice(s, e, st)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
            index[a] = slice(s, None if e < 0 else e, st)
    return tuple(index)


@gpu_kernel("Slice")
def slice_op(ctx: GpuContext):
    shape = ctx.shape(0)
    starts = _const(ctx, 1, "starts").reshape(-1)
    ends = _const(ctx, 2, "ends").reshape(-1)
    axes = _const(ctx, 3, "axes").reshape(-1) if ctx.has_input(3) else None
    steps = _const(ctx, 4, "steps").reshape(-1) if ctx.has_input(4) else None
    index = slice_index(shape, starts, ends, axes, steps)
    return lambda x, *_: x[index]


@gpu_kernel("Gather")
def gather_op(ctx: GpuContext, axis):
    xp = ctx.xp
    shape = ctx.shape(0)
    ax = axis % len(shape)
    n = shape[ax]
    idx = ctx.const(1)
    out = ctx.out_shape(0)
    if idx is not None:
        fixed = np.where(idx < 0, idx + n, idx).astype(np.int64)
        if fixed.size and (fixed.min() < 0 or fixed.max() >= n):
            raise ctx.fail(f"indices out of range [-{n}, {n - 1}]")
        dev = ctx.upload(fixed)
        return lambda x, _i=None: xp.take(x, dev, axis=ax).reshape(out)

    def gather(x, i):
        i = xp.where(i < 0, i + n, i)
        return xp.take(x, i, axis=ax).reshape(out)

    return gather


@gpu_kernel("GatherElements")
def gather_elements_op(ctx: GpuContext, axis):
    xp = ctx.xp
    ax = axis % len(ctx.shape(0))
    n = ctx.shape(0)[ax]
    return lambda x, i: xp.take_along_axis(x, xp.where(i < 0, i + n, i), axis=ax)


@gpu_kernel("Pad")
def pad_op(ctx: GpuContext, mode):
    xp = ctx.xp
    shape = ctx.shape(0)
    rank = len(shape)
    pads = [int(p) for p in _const(ctx, 1, "pads").reshape(-1)]
    value = ctx.const(2) if ctx.has_input(2) else None
    axes = [int(a) % rank for a in _const(ctx, 3, "axes").reshape(-1)] if ctx.has_input(3) else list(range(rank))
    k = len(axes)
    width = [(0, 0)] * rank
    for j, a in enumerate(axes):
        width[a] = (pads[j], pads[k + j])
    if any(b < 0 or e < 0 for b, e in width):
        crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for (b, e), d in zip(width, shape))
        width = [(max(b, 0), max(e, 0)) for b, e in width]
    else:
        crop = None
    fill = 0 if value is None or np.asarray(value).size == 0 else np.asarray(value).reshape(-1)[0].item()
    np_mode = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}.get(mode)
    if np_mode is None:
        raise ctx.fail(f"Pad mode '{mode}' is not supported on the gpu backend")

    def pad(x, *_):
        if crop is not None:
            x = x[crop]
        if np_mode == "constant":
            return xp.pad(x, width, mode="constant", constant_values=fill)
        return xp.pad(x, width, mode=np_mode)

    return pad


@gpu_kernel("Tile")
def tile_op(ctx: GpuContext):
    xp = ctx.xp
    reps = tuple(int(r) for r in _const(ctx, 1, "repeats").reshape(-1))
    return lambda x, _r=None: xp.tile(x, reps)


@gpu_kernel("DepthToSpace", "SpaceToDepth")
def depth_space_op(ctx: GpuContext, blocksize, mode="DCR"):
    xp = ctx.xp
    n, c, h, w = ctx.shape(0)
    b = blocksize
    out = ctx.out_shape(0)
    if ctx.node.op_type == "SpaceToDepth":
        return lambda x: xp.transpose(x.reshape(n, c, h // b, b, w // b, b), (0, 3, 5, 1, 2, 4)).reshape(out)
    if mode == "DCR":
        return lambda x: xp.transpose(x.reshape(n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2)).reshape(out)
    return lambda x: xp.transpose(x.reshape(n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3)).reshape(out)


@gpu_kernel("Einsum")
def einsum_op(ctx: GpuContext, equation):
    xp = ctx.xp
    eq = equation.decode() if isinstance(equation, bytes) else equation
    out_dt = ctx.out_dtype(0)
    return lambda *xs: xp.einsum(eq, *xs).astype(out_dt, copy=False)


@gpu_kernel("Shape", "Size")
def shape_op(ctx: GpuContext, **attrs):
    # folded away whenever the input shape is static, which it always is here; kept so a
    # graph compiled without folding still runs
    from ..shape_inference import _shape_value

    value = _shape_value(ctx.node, attrs, ctx.inputs[0])
    if value is None:
        raise ctx.fail("needs a static input shape")
    dev = ctx.upload(value)
    return lambda x: dev


# ------------------------------------------------------------------------------ Resize
@gpu_kernel("Resize")
def resize_op(ctx: GpuContext, **attrs):
    """Separable per-axis gathers and weighted sums, with the cpu backend's sampling plan
    (:mod:`edgeinfer.kernels.resize`: same coordinates, so the same pixels are picked)."""
    xp = ctx.xp
    shape = ctx.shape(0)
    roi = ctx.const(1) if ctx.has_input(1) else None
    scales = ctx.const(2) if ctx.has_input(2) else None
    sizes = ctx.const(3) if ctx.has_input(3) else None
    for i, v in ((1, roi), (2, scales), (3, sizes)):
        if ctx.has_input(i) and v is None:
            raise ctx.fail(f"input {i} ('{ctx.node.inputs[i]}') must be a constant on the gpu backend")
    if _given(scales) and _given(sizes):
        raise ctx.fail("only one of the 'scales' and 'sizes' inputs may be given")
    axes = _resize_axes(len(shape), attrs["axes"], ctx.fail)
    out, factor, width = output_geometry(tuple(shape), axes, scales, sizes, attrs["keep_aspect_ratio_policy"],
                                         ctx.fail)
    starts, ends = [0.0] * len(shape), [1.0] * len(shape)
    if _given(roi):
        r = np.asarray(roi, np.float32).reshape(-1)
        for i, a in enumerate(axes):
            starts[a], ends[a] = r[i], r[len(axes) + i]
    coord_mode = attrs["coordinate_transformation_mode"]
    work = work_dtype(ctx.dtype(0)) if ctx.dtype(0).kind == "f" else np.dtype(np.float32)
    steps = []  # (axis, repeat, index (out, taps) device, weights (taps, out) device or None, outside)
    for a in axes:
        if out[a] == shape[a] and factor[a] == 1 and coord_mode != "tf_crop_and_resize":
            continue
        if shape[a] == 0 or out[a] == 0:
            continue
        s = _axis_sampler(attrs, a, shape[a], out[a], factor[a], width[a], starts[a], ends[a])
        bshape = (-1,) + (1,) * (len(shape) - a - 1)
        idx = [ctx.upload(np.ascontiguousarray(s.index[:, t])) for t in range(s.index.shape[1])]
        wts = None if s.weight is None else [ctx.upload(s.weight[:, t].reshape(bshape), work)
                                             for t in range(s.weight.shape[1])]
        outside = None if s.outside is None else ctx.upload(s.outside.reshape(bshape))
        steps.append((a, s.repeat, idx, wts, outside))
    extrapolation = float(attrs["extrapolation_value"])
    dt = ctx.dtype(0)
    interpolate = any(st[3] is not None for st in steps)

    def resize(x, *_):
        y = x.astype(work) if interpolate and x.dtype != work else x
        for a, rep, idx, wts, outside in steps:
            if wts is None:
                y = xp.repeat(y, rep, axis=a) if rep else xp.take(y, idx[0], axis=a)
            else:
                acc = None
                for i, w in zip(idx, wts):
                    term = xp.take(y, i, axis=a) * w
                    acc = term if acc is None else acc + term
                y = acc
            if outside is not None:
                y = xp.where(outside, y.dtype.type(extrapolation), y)
        if y.dtype != dt:
            if dt.kind in "iu":
                info = np.iinfo(dt)
                y = xp.clip(xp.rint(y), info.min, info.max)
            y = y.astype(dt)
        return y if y is not x else x.copy()

    return resize
