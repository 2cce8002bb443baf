"""Operators without a larger family: the RMS and Lp normalizations, the Swish and SwiGLU
activations, CumProd, Unique, CenterCropPad, Col2Im, BitCast, TensorScatter and the random
generators Bernoulli and RandomUniformLike.

Floating-point kernels compute in float32 at least: float16 inputs are widened with
:func:`widen_float` and the result rounded once with :func:`narrow_float`. bfloat16 never
reaches them: :func:`~.registry.build_kernel` runs them in float32 and rounds the outputs.

Random ops draw from numpy's PCG64 generator, created once per node from ``seed`` (so a session
with a seed replays the same sequence) or from fresh OS entropy without one. ONNX leaves the
generator to the implementation, so values never match another runtime's draw for draw.
"""
from __future__ import annotations

import struct

import numpy as np

from .. import dtypes as _dt
from ..errors import GraphError, KernelError
from ..graph import TensorType
from .elementwise import ANY, FLOATS, NUMERIC, bind_elementwise, check_input_dtypes, register_elementwise
from .registry import REQUIRED, OpContext, kernel, shape_rule
from .shapes import normalize_axis, num_elements
from .tensor import INT_INDEX, check_index_input, const_ints


# ------------------------------------------------------------------------ helpers
def widen_float(x: np.ndarray) -> np.ndarray:
    """A float array as float32 (float16, bfloat16), or float64 when it is float64; no copy
    when it already is."""
    return x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)


def narrow_float(y, dtype: str) -> np.ndarray:
    """A float result rounded once to IR dtype ``dtype``."""
    return np.asarray(y).astype(_dt.to_numpy(dtype), copy=False)


def _dtype_attr(ctx: OpContext, name: str, value) -> str:
    try:
        _dt.to_numpy(value)
    except GraphError:
        raise ctx.error(f"attribute '{name}' is {value!r}, which is not an IR dtype") from None
    return value


def _axis_input(x: np.ndarray, axis: np.ndarray, label: str) -> int:
    a = int(np.asarray(axis).reshape(-1)[0])
    if not -x.ndim <= a < max(x.ndim, 1):
        raise KernelError(f"{label}: axis {a} is out of range for input of shape {list(x.shape)}")
    return a % max(x.ndim, 1)


def _rng(seed) -> np.random.Generator:
    if seed is None:
        return np.random.default_rng()
    # ONNX seeds are floats: their exact bit pattern seeds the generator
    return np.random.default_rng(int.from_bytes(struct.pack("<d", float(seed)), "little"))


# -------------------------------------------------------------- RMSNormalization
_STASH = {1: np.float32, 10: np.float16, 11: np.float64}


@shape_rule("RMSNormalization")
def rms_norm_shape(ctx: OpContext, axis, epsilon, stash_type) -> list[TensorType]:
    check_input_dtypes(ctx, FLOATS)
    if int(stash_type) not in _STASH:
        raise ctx.error(f"stash_type {stash_type} is not supported (use 1 = float32, 10 = float16, 11 = float64)")
    x, scale = ctx.inputs[0], ctx.inputs[1]
    if x.shape is not None:
        ax = normalize_axis(axis, len(x.shape), ctx.node)
        if scale.shape is not None and len(scale.shape) > len(x.shape) - ax:
            raise ctx.error(f"scale of shape {list(scale.shape)} does not broadcast to the normalized "
                            f"dims {list(x.shape[ax:])} of X")
    return [TensorType(scale.dtype, x.shape)]


@kernel("RMSNormalization", attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1})
def rms_norm(ctx: OpContext, axis: int, epsilon: float, stash_type: int):
    stash = np.dtype(_STASH[int(stash_type)])
    out_dtype = ctx.outputs[0].dtype
    eps = float(epsilon)
    label = ctx.node.label

    def rms_norm_fn(x, scale):
        ax = axis + x.ndim if axis < 0 else axis
        if not 0 <= ax < x.ndim:
            raise KernelError(f"{label}: axis {axis} is out of range for X of shape {list(x.shape)}")
        xs = x.astype(stash, copy=False)
        mean_square = np.mean(np.square(xs), axis=tuple(range(ax, x.ndim)), keepdims=True)
        y = xs / np.sqrt(mean_square + eps)
        y *= widen_float(scale)
        return narrow_float(y, out_dtype)

    return rms_norm_fn


# --------------------------------------------------------------- LpNormalization
@shape_rule("LpNormalization")
def lp_norm_shape(ctx: OpContext, axis, p) -> list[TensorType]:
    check_input_dtypes(ctx, FLOATS)
    if p not in (1, 2):
        raise ctx.error(f"attribute p must be 1 or 2, found {p}")
    x = ctx.inputs[0]
    if x.shape is not None:
        normalize_axis(axis, len(x.shape), ctx.node)
    return [x]


@kernel("LpNormalization", attrs={"axis": -1, "p": 2})
def lp_norm(ctx: OpContext, axis: int, p: int):
    dtype = ctx.inputs[0].dtype

    def lp_norm_fn(x):
        xw = widen_float(x)
        if p == 1:
            norm = np.sum(np.abs(xw), axis=axis, keepdims=True)
        else:
            norm = np.sqrt(np.sum(np.square(xw), axis=axis, keepdims=True))
        # an all-zero slice has norm 0: ONNX defines its output as 0, not 0/0
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(norm == 0, 0, xw / norm)
        return narrow_float(y, dtype)

    return lp_norm_fn


# ------------------------------------------------------------------ Swish, SwiGLU
def _swish(x: np.ndarray, alpha: float) -> np.ndarray:
    # with e = exp(-|z|) <= 1 (no overflow), sigmoid(z) is 1/(1+e) for z >= 0 and e/(1+e)
    # below; the second form keeps full relative precision in the far negative tail
    z = np.multiply(x, alpha)
    e = np.abs(z)
    np.negative(e, out=e)
    np.exp(e, out=e)
    s = np.add(e, 1)
    np.reciprocal(s, out=s)
    np.multiply(s, e, out=e)
    np.copyto(s, e, where=z < 0)
    s *= x
    return s


def _make_swish(alpha: float):
    def compute(x, out=None):
        y = _swish(x, float(alpha))
        if out is None:
            return y
        np.copyto(out, y, casting="unsafe")
        return out

    return compute


register_elementwise("Swish", accepts=FLOATS, attrs={"alpha": 1.0}, make=_make_swish, wide_half=True)


@shape_rule("SwiGLU")
def swiglu_shape(ctx: OpContext, alpha) -> list[TensorType]:
    check_input_dtypes(ctx, FLOATS, same=(0, 1))
    a, b = ctx.inputs[0], ctx.inputs[1]
    if a.shape is not None and b.shape is not None:
        clash = len(a.shape) != len(b.shape) or any(
            isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a.shape, b.shape))
        if clash:
            raise ctx.error(f"gate A {list(a.shape)} and value B {list(b.shape)} must have the same shape "
                            "(SwiGLU does not broadcast)")
    return [a if a.shape is not None else b]


@kernel("SwiGLU", attrs={"alpha": 1.0})
def swiglu(ctx: OpContext, alpha: float):
    label = ctx.node.label

    def compute(a, b, out=None):
        if a.shape != b.shape:
            raise KernelError(f"{label}: gate A {list(a.shape)} and value B {list(b.shape)} must have the same shape")
        y = _swish(a, float(alpha))
        return np.multiply(y, b, out=out, casting="unsafe")

    return bind_elementwise(ctx, compute, wide_half=True)


# ------------------------------------------------------------------------ CumProd
@shape_rule("CumProd")
def cum_prod_shape(ctx: OpContext, exclusive, reverse) -> list[TensorType]:
    check_input_dtypes(ctx, NUMERIC, free=(1,))
    check_index_input(ctx, 1, "axis", INT_INDEX, ranks=(0, 1))
    x = ctx.inputs[0]
    a = const_ints(ctx, 1)
    if a is not None and x.shape is not None:
        normalize_axis(a[0], len(x.shape), ctx.node)
    return [x]


@kernel("CumProd", attrs={"exclusive": 0, "reverse": 0})
def cum_prod(ctx: OpContext, exclusive: int, reverse: int):
    label = ctx.node.label

    def cum_prod_fn(x, axis):
        a = _axis_input(x, axis, label)
        src = np.flip(x, a) if reverse else x
        if exclusive:
            # shift by one along the axis, the vacated first slot holding the identity 1
            ones = np.ones_like(src.take([0], axis=a)) if src.shape[a] else src.take([], axis=a)
            src = np.concatenate([ones, src.take(np.arange(src.shape[a] - 1), axis=a)], axis=a)
        y = np.cumprod(src, axis=a, dtype=src.dtype)
        if reverse:
            y = np.flip(y, a)
        return np.ascontiguousarray(y)

    return cum_prod_fn


# ------------------------------------------------------------------------- Unique
@shape_rule("Unique")
def unique_shape(ctx: OpContext, axis, sorted) -> list[TensorType]:
    x = ctx.inputs[0]
    n_out = len(ctx.node.outputs)
    if n_out > 4:
        raise ctx.error(f"expects at most 4 outputs (Y, indices, inverse_indices, counts), found {n_out}")
    if axis is None:  # unique values of the flattened input
        y_shape, n = (None,), None if x.shape is None else num_elements(x.shape)
    elif x.shape is None:
        y_shape, n = None, None
    else:  # unique slices along the axis
        a = normalize_axis(axis, len(x.shape), ctx.node)
        y_shape, n = tuple(x.shape[:a]) + (None,) + tuple(x.shape[a + 1:]), x.shape[a]
    types = [TensorType(x.dtype, y_shape), TensorType("int64", (None,)),
             TensorType("int64", (n if isinstance(n, int) else None,)), TensorType("int64", (None,))]
    return types[:n_out]


@kernel("Unique", attrs={"axis": None, "sorted": 1})
def unique(ctx: OpContext, axis, sorted):
    n_out = len(ctx.node.outputs)
    label = ctx.node.label

    def unique_fn(x):
        if axis is None:
            src, a = x.reshape(-1), 0
            keys = src
        else:
            if not -x.ndim <= axis < x.ndim:
                raise KernelError(f"{label}: axis {axis} is out of range for input of shape {list(x.shape)}")
            a, src = axis % x.ndim, x
            # each slice along the axis becomes a row of dense value ranks: rows then compare
            # lexicographically in value order whatever the dtype (strings included)
            _, ranks = np.unique(x.reshape(-1), return_inverse=True)
            keys = np.moveaxis(ranks.reshape(x.shape), a, 0).reshape(x.shape[a], -1)
        n = keys.shape[0]
        if axis is not None and keys.shape[1] == 0:  # empty slices are all equal
            first = np.zeros(min(n, 1), np.int64)
            inverse, counts = np.zeros(n, np.int64), np.full(min(n, 1), n, np.int64)
        else:
            _, first, inverse, counts = np.unique(
                keys, return_index=True, return_inverse=True, return_counts=True,
                axis=None if axis is None else 0)
        if not sorted:  # order of first occurrence instead of value order
            order = np.argsort(first, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            first, counts, inverse = first[order], counts[order], rank[inverse.reshape(-1)]
        y = np.take(src, first, axis=a)
        outs = (y, first.astype(np.int64), inverse.reshape(-1).astype(np.int64), counts.astype(np.int64))
        return outs[0] if n_out == 1 else outs[:n_out]

    return unique_fn


# ------------------------------------------------------------------ CenterCropPad
def _crop_pad_axes(ctx: OpContext, axes, rank: int) -> list[int]:
    if axes is None:
        return list(range(rank))
    out = [normalize_axis(a, rank, ctx.node) for a in axes]
    if len(set(out)) != len(out):
        raise ctx.error(f"axes {list(axes)} repeat an axis (rank {rank})")
    return out


@shape_rule("CenterCropPad")
def center_crop_pad_shape(ctx: OpContext, axes) -> list[TensorType]:
    x = ctx.inputs[0]
    check_index_input(ctx, 1, "shape", INT_INDEX)
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    ax = _crop_pad_axes(ctx, axes, len(x.shape))
    sizes = const_ints(ctx, 1)
    n = ctx.inputs[1].shape[0] if ctx.inputs[1].shape is not None else None
    if isinstance(n, int) and n != len(ax):
        raise ctx.error(f"shape '{ctx.node.inputs[1]}' has {n} values for {len(ax)} axes {ax}")
    if sizes is not None and any(s < 0 for s in sizes):
        raise ctx.error(f"shape {sizes} has a negative size")
    out = list(x.shape)
    for i, a in enumerate(ax):
        out[a] = sizes[i] if sizes is not None else None
    return [TensorType(x.dtype, tuple(out))]


@kernel("CenterCropPad", attrs={"axes": None})
def center_crop_pad(ctx: OpContext, axes):
    label = ctx.node.label

    def center_crop_pad_fn(x, shape):
        ax = _crop_pad_axes(ctx, axes, x.ndim)
        sizes = [int(s) for s in np.asarray(shape).reshape(-1)]
        if len(sizes) != len(ax) or any(s < 0 for s in sizes):
            raise KernelError(f"{label}: shape {sizes} does not give a size >= 0 for each of the axes {ax}")
        out_shape = list(x.shape)
        src, dst = [slice(None)] * x.ndim, [slice(None)] * x.ndim
        for a, want in zip(ax, sizes):
            have = x.shape[a]
            out_shape[a] = want
            if have >= want:  # crop: the window starts half the excess in, rounded down
                start = (have - want) // 2
                src[a] = slice(start, start + want)
            else:  # pad: the odd extra pixel goes to the end
                start = (want - have) // 2
                dst[a] = slice(start, start + have)
        y = np.zeros(out_shape, x.dtype) if x.dtype != object else np.full(out_shape, "", object)
        y[tuple(dst)] = x[tuple(src)]
        return y

    return center_crop_pad_fn


# ------------------------------------------------------------------------- Col2Im
def _col2im_attrs(ctx_error, n: int, strides, pads, dilations):
    strides = [1] * n if strides is None else [int(s) for s in strides]
    dilations = [1] * n if dilations is None else [int(d) for d in dilations]
    pads = [0] * (2 * n) if pads is None else [int(p) for p in pads]
    if len(strides) != n or len(dilations) != n or len(pads) != 2 * n:
        raise ctx_error(f"{n} spatial dims need {n} strides and dilations and {2 * n} pads, found "
                        f"strides={strides}, dilations={dilations}, pads={pads}")
    if min(strides + dilations, default=1) < 1 or min(pads, default=0) < 0:
        raise ctx_error(f"strides and dilations must be >= 1 and pads >= 0, found strides={strides}, "
                        f"dilations={dilations}, pads={pads}")
    return strides, pads, dilations


def _block_counts(image, block, strides, pads, dilations) -> list[int]:
    n = len(image)
    return [(image[i] + pads[i] + pads[i + n] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1
            for i in range(n)]


@shape_rule("Col2Im")
def col2im_shape(ctx: OpContext, strides, pads, dilations) -> list[TensorType]:
    x = ctx.inputs[0]
    check_input_dtypes(ctx, NUMERIC, free=(1, 2))
    check_index_input(ctx, 1, "image_shape")
    check_index_input(ctx, 2, "block_shape")
    if x.shape is not None and len(x.shape) != 3:
        raise ctx.error(f"input must have rank 3 (N, C * prod(block_shape), L), found shape {list(x.shape)}")
    image, block = const_ints(ctx, 1), const_ints(ctx, 2)
    if image is None or block is None:
        n = next((len(v) for v in (image, block) if v is not None), None)
        spatial = (None,) * n if n is not None else None
        return [TensorType(x.dtype, None if spatial is None else (x.shape[0] if x.shape else None, None) + spatial)]
    if len(image) != len(block):
        raise ctx.error(f"image_shape {image} and block_shape {block} must have the same length")
    if min(block + image, default=1) < 1:
        raise ctx.error(f"image_shape {image} and block_shape {block} must be positive")
    attrs = _col2im_attrs(ctx.error, len(image), strides, pads, dilations)
    counts = _block_counts(image, block, *attrs)
    if min(counts, default=1) < 1:
        raise ctx.error(f"blocks {block} do not fit image {image} with strides/pads/dilations {list(attrs)}")
    n, c = (x.shape[0], x.shape[1]) if x.shape is not None else (None, None)
    k = int(np.prod(block))
    if isinstance(c, int):
        if c % k:
            raise ctx.error(f"input dim 1 ({c}) is not a multiple of prod(block_shape) = {k}")
        c //= k
    length = x.shape[2] if x.shape is not None else None
    if isinstance(length, int) and length != int(np.prod(counts)):
        raise ctx.error(f"input has {length} blocks but image {image} holds {int(np.prod(counts))} "
                        f"({' x '.join(map(str, counts))}) blocks of {block}")
    return [TensorType(x.dtype, (n, c if isinstance(c, int) else None) + tuple(image))]


@kernel("Col2Im", attrs={"strides": None, "pads": None, "dilations": None})
def col2im(ctx: OpContext, strides, pads, dilations):
    label = ctx.node.label
    dtype = ctx.inputs[0].dtype
    half = dtype == "float16"  # sums of overlapping blocks are taken in float32

    def error(message: str) -> KernelError:
        return KernelError(f"{label}: {message}")

    def col2im_fn(x, image_shape, block_shape):
        image = [int(v) for v in image_shape.reshape(-1)]
        block = [int(v) for v in block_shape.reshape(-1)]
        nd = len(image)
        st, pd, dl = _col2im_attrs(error, nd, strides, pads, dilations)
        counts = _block_counts(image, block, st, pd, dl)
        k = int(np.prod(block))
        if len(block) != nd or x.ndim != 3 or x.shape[1] % k or x.shape[2] != int(np.prod(counts)):
            raise error(f"input of shape {list(x.shape)} does not hold blocks {block} of image {image} "
                        f"({int(np.prod(counts))} blocks per channel)")
        n, c = x.shape[0], x.shape[1] // k
        cols = (widen_float(x) if half else x).reshape((n, c) + tuple(block) + tuple(counts))
        padded = np.zeros((n, c) + tuple(image[i] + pd[i] + pd[i + nd] for i in range(nd)), cols.dtype)
        # one strided, non-overlapping add per kernel offset: the blocks it touches are distinct
        for offset in np.ndindex(*block):
            window = tuple(slice(o * d, o * d + s * (m - 1) + 1, s) for o, d, s, m in zip(offset, dl, st, counts))
            padded[(slice(None), slice(None)) + window] += cols[(slice(None), slice(None)) + offset]
        crop = tuple(slice(pd[i], pd[i] + image[i]) for i in range(nd))
        y = np.ascontiguousarray(padded[(slice(None), slice(None)) + crop])
        return narrow_float(y, dtype) if half else y

    return col2im_fn


# ------------------------------------------------------------------------ BitCast
_SUB_BYTE_BITS = {"int4": 4, "uint4": 4, "float4e2m1": 4, "int2": 2, "uint2": 2}


def _bits(dtype: str) -> int:
    return _SUB_BYTE_BITS.get(dtype) or _dt.to_numpy(dtype).itemsize * 8


@shape_rule("BitCast")
def bitcast_shape(ctx: OpContext, to) -> list[TensorType]:
    x = ctx.inputs[0]
    to = _dtype_attr(ctx, "to", to)
    if "string" in (x.dtype, to):
        raise ctx.error(f"cannot bit-cast {x.dtype} to {to}: strings have no fixed bit width")
    if _bits(x.dtype) != _bits(to):
        raise ctx.error(f"cannot bit-cast {x.dtype} ({_bits(x.dtype)} bits) to {to} ({_bits(to)} bits): "
                        "the widths must match")
    return [TensorType(to, x.shape)]


@kernel("BitCast", attrs={"to": REQUIRED}, aliases=True)
def bitcast(ctx: OpContext, to):
    target = _dt.to_numpy(to)
    # numpy views reinterpret the bytes in place; ONNX's little-endian order is numpy's on
    # every platform edgeinfer runs on
    return lambda x: x.view(target)


# ------------------------------------------------------------------ TensorScatter
@shape_rule("TensorScatter")
def tensor_scatter_shape(ctx: OpContext, axis, mode) -> list[TensorType]:
    past, update = ctx.inputs[0], ctx.inputs[1]
    check_input_dtypes(ctx, ANY, same=(0, 1), free=(2,))
    if mode not in ("linear", "circular"):
        raise ctx.error(f"attribute mode must be 'linear' or 'circular', found {mode!r}")
    if ctx.has_input(2):
        check_index_input(ctx, 2, "write_indices")
    if past.shape is not None:
        a = normalize_axis(axis, len(past.shape), ctx.node)
        if a == 0:
            raise ctx.error("axis must not be 0, the batch dim")
        if update.shape is not None:
            if len(update.shape) != len(past.shape):
                raise ctx.error(f"update {list(update.shape)} and past_cache {list(past.shape)} differ in rank")
            for i, (u, p) in enumerate(zip(update.shape, past.shape)):
                if isinstance(u, int) and isinstance(p, int) and (u > p if i == a else u != p):
                    raise ctx.error(f"update {list(update.shape)} does not fit past_cache {list(past.shape)} "
                                    f"(only dim {a}, the sequence, may be shorter)")
    return [past]


@kernel("TensorScatter", attrs={"axis": -2, "mode": "linear"})
def tensor_scatter(ctx: OpContext, axis: int, mode: str):
    label = ctx.node.label

    def tensor_scatter_fn(past, update, write_indices=None):
        a = axis + past.ndim if axis < 0 else axis
        batch, seq, max_seq = past.shape[0], update.shape[a], past.shape[a]
        starts = np.zeros(batch, np.int64) if write_indices is None else write_indices.astype(np.int64).reshape(-1)
        if starts.shape[0] != batch:
            raise KernelError(f"{label}: write_indices has {starts.shape[0]} values for a batch of {batch}")
        pos = starts[:, None] + np.arange(seq)  # (batch, sequence): where each update row lands
        if mode == "circular":
            pos %= max_seq
        elif pos.size and (pos.min() < 0 or pos.max() >= max_seq):
            raise KernelError(f"{label}: write_indices {starts.tolist()} plus {seq} updates run past the "
                              f"{max_seq} cache slots (mode='linear')")
        shape = [1] * past.ndim
        shape[0], shape[a] = batch, seq
        index = np.broadcast_to(pos.reshape(shape), update.shape)
        present = past.copy()
        np.put_along_axis(present, index, update, axis=a)
        return present

    return tensor_scatter_fn


# ---------------------------------------------------------------- random generators
_BERNOULLI_OUT = NUMERIC | {"bool"}


@shape_rule("Bernoulli")
def bernoulli_shape(ctx: OpContext, dtype, seed) -> list[TensorType]:
    check_input_dtypes(ctx, FLOATS)
    out = ctx.inputs[0].dtype if dtype is None else _dtype_attr(ctx, "dtype", dtype)
    if out not in _BERNOULLI_OUT:
        raise ctx.error(f"attribute dtype {out} is not numeric or bool")
    return [TensorType(out, ctx.inputs[0].shape)]


@kernel("Bernoulli", attrs={"dtype": None, "seed": None})
def bernoulli(ctx: OpContext, dtype, seed):
    rng = _rng(seed)
    out = _dt.to_numpy(ctx.outputs[0].dtype)

    def bernoulli_fn(p):
        return (rng.random(p.shape) < p).astype(out)

    return bernoulli_fn


@shape_rule("RandomUniformLike")
def random_uniform_like_shape(ctx: OpContext, dtype, high, low, seed) -> list[TensorType]:
    x = ctx.inputs[0]
    out = x.dtype if dtype is None else _dtype_attr(ctx, "dtype", dtype)
    if out not in FLOATS:
        raise ctx.error(f"output dtype {out} is not a float type; set attribute dtype"
                        + ("" if dtype is None else f" to one of {', '.join(sorted(FLOATS))}"))
    if float(low) > float(high):
        raise ctx.error(f"low {low} is above high {high}")
    return [TensorType(out, x.shape)]


@kernel("RandomUniformLike", attrs={"dtype": None, "high": 1.0, "low": 0.0, "seed": None})
def random_uniform_like(ctx: OpContext, dtype, high, low, seed):
    rng = _rng(seed)
    out_dtype = ctx.outputs[0].dtype
    lo, hi = float(low), float(high)
    return lambda x: narrow_float(rng.uniform(lo, hi, x.shape), out_dtype)

