"""Indexing operators: Gather, GatherElements, GatherND, ScatterElements, ScatterND, NonZero,
Compress, OneHot, TopK, CumSum and ReverseSequence.

Indices are range-checked at run time against ONNX's ``[-s, s-1]`` before numpy sees them:
numpy would wrap a negative index silently and report a too-large one without naming the
node. A failing check raises :class:`~edgeinfer.errors.KernelError` naming the node, the axis,
its size and the offending index. Outputs whose size depends on data (NonZero, Compress)
have ``None`` dims unless the deciding input is a compile-time constant.
"""
from __future__ import annotations

import numpy as np

from ..errors import KernelError
from ..graph import Dim, TensorType
from .registry import OpContext, kernel, shape_rule, writes_out
from .shapes import normalize_axis, num_elements
from .tensor import INT_INDEX, check_index_input, const_ints

_REDUCTIONS = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def checked_indices(label: str, idx: np.ndarray, size: int, what: str) -> np.ndarray:
    """``idx`` with negatives made positive; KernelError naming the node when out of range."""
    if idx.size == 0:
        return idx.astype(np.int64, copy=False)
    if idx.size == 1:  # one index (a decoder step): item() is far cheaper than min and max
        lo = hi = idx.item()
    else:
        lo, hi = int(idx.min()), int(idx.max())
    if lo < -size or hi >= size:
        bad = lo if lo < -size else hi
        raise KernelError(f"{label}: index {bad} is out of range for {what} of size {size} (valid: {-size}..{size - 1})")
    if lo < 0:
        return np.where(idx < 0, idx + size, idx)
    return idx


def _index_dtype(ctx: OpContext, i: int, what: str = "indices") -> TensorType:
    t = ctx.inputs[i]
    if t.dtype not in INT_INDEX:
        raise ctx.error(f"{what} '{ctx.node.inputs[i]}' must be int32 or int64, found {t.dtype}")
    return t


_GRIDS: dict[tuple, tuple] = {}


def _grid(shape: tuple, axis: int, idx: np.ndarray) -> tuple:
    """An advanced index that picks ``idx`` along ``axis`` and the identity elsewhere."""
    # the sparse identity grids depend on the shape only; a model has few shapes
    key = (shape, axis)
    base = _GRIDS.get(key)
    if base is None:
        base = tuple(np.indices(shape, sparse=True))
        if len(_GRIDS) < 256:
            _GRIDS[key] = base
    grid = list(base)
    grid[axis] = idx
    return tuple(grid)


# --------------------------------------------------------------------------- Gather
@shape_rule("Gather")
def gather_shape(ctx: OpContext, axis) -> list[TensorType]:
    data, idx = ctx.inputs[0], _index_dtype(ctx, 1)
    if data.shape is None or idx.shape is None:
        return [TensorType(data.dtype, None)]
    a = normalize_axis(axis, len(data.shape), ctx.node)
    return [TensorType(data.dtype, data.shape[:a] + tuple(idx.shape) + data.shape[a + 1:])]


@kernel("Gather", attrs={"axis": 0})
def gather(ctx: OpContext, axis):
    label = ctx.node.label

    @writes_out
    def gather_fn(data, indices, out=None):
        a = axis + data.ndim if axis < 0 else axis
        idx = checked_indices(label, indices, data.shape[a], f"axis {a} of data shape {list(data.shape)}")
        # in range and non-negative now, so 'clip' is exact and avoids take's 'raise' buffering
        return np.take(data, idx, axis=a, out=out, mode="clip")

    in_shape, const = ctx.static_shape(0), ctx.values[1]
    if in_shape is None or const is None:
        return gather_fn
    # constant indices into data of a static shape: checked once
    a = normalize_axis(axis, len(in_shape), ctx.node)
    try:
        idx = checked_indices(label, const, in_shape[a], f"axis {a} of data shape {list(in_shape)}")
    except KernelError:  # reported at run time, as without the fast path
        return gather_fn

    @writes_out
    def const_gather_fn(data, indices, out=None):
        if indices is const and data.shape == in_shape:
            return np.take(data, idx, axis=a, out=out, mode="clip")
        return gather_fn(data, indices, out=out)

    return const_gather_fn


@shape_rule("GatherElements")
def gather_elements_shape(ctx: OpContext, axis) -> list[TensorType]:
    data, idx = ctx.inputs[0], _index_dtype(ctx, 1)
    if data.shape is not None:
        normalize_axis(axis, len(data.shape), ctx.node)
        if idx.shape is not None and len(idx.shape) != len(data.shape):
            raise ctx.error(f"indices rank {len(idx.shape)} differs from data rank {len(data.shape)}")
    return [TensorType(data.dtype, idx.shape)]


@kernel("GatherElements", attrs={"axis": 0})
def gather_elements(ctx: OpContext, axis):
    label = ctx.node.label

    def gather_elements_fn(data, indices):
        a = axis + data.ndim if axis < 0 else axis
        idx = checked_indices(label, indices, data.shape[a], f"axis {a} of data shape {list(data.shape)}")
        return data[_grid(idx.shape, a, idx)]

    return gather_elements_fn


def _nd_index(label: str, data_shape: tuple, indices: np.ndarray, b: int) -> tuple:
    """GatherND/ScatterND index tuple over ``data`` reshaped to (batch, *rest)."""
    k = indices.shape[-1]
    if k > len(data_shape) - b:
        raise KernelError(f"{label}: indices address {k} dims but data shape {list(data_shape)} has {len(data_shape) - b} after batch dims")
    batch = int(np.prod(data_shape[:b], dtype=np.int64))
    flat = indices.reshape(batch, -1, k)
    cols = [checked_indices(label, flat[..., j], data_shape[b + j], f"axis {b + j} of data shape {list(data_shape)}") for j in range(k)]
    return (np.arange(batch).reshape(batch, 1), *cols)


@shape_rule("GatherND")
def gather_nd_shape(ctx: OpContext, batch_dims) -> list[TensorType]:
    data, idx = ctx.inputs[0], ctx.inputs[1]
    if idx.dtype != "int64":
        raise ctx.error(f"indices '{ctx.node.inputs[1]}' must be int64, found {idx.dtype}")
    if data.shape is None or idx.shape is None:
        return [TensorType(data.dtype, None)]
    k = idx.shape[-1] if idx.shape else None
    if not idx.shape or batch_dims >= min(len(data.shape), len(idx.shape)) or batch_dims < 0:
        raise ctx.error(f"batch_dims {batch_dims} does not fit data {list(data.shape)} and indices {list(idx.shape)}")
    if not isinstance(k, int):
        return [TensorType(data.dtype, None)]
    if k > len(data.shape) - batch_dims:
        raise ctx.error(f"indices last dim {k} exceeds data rank {len(data.shape)} minus batch_dims {batch_dims}")
    return [TensorType(data.dtype, tuple(idx.shape[:-1]) + tuple(data.shape[batch_dims + k:]))]


@kernel("GatherND", attrs={"batch_dims": 0})
def gather_nd(ctx: OpContext, batch_dims):
    label, b = ctx.node.label, batch_dims

    def gather_nd_fn(data, indices):
        k = indices.shape[-1]
        flat = data.reshape((int(np.prod(data.shape[:b], dtype=np.int64)),) + data.shape[b:])
        got = flat[_nd_index(label, data.shape, indices, b)]
        return got.reshape(indices.shape[:-1] + data.shape[b + k:])

    return gather_nd_fn


# -------------------------------------------------------------------------- Scatter
def _check_reduction(ctx: OpContext, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ctx.error(f"reduction '{reduction}' is not one of {', '.join(_REDUCTIONS)}")
    if ctx.inputs[2].dtype != ctx.inputs[0].dtype:
        raise ctx.error(f"updates dtype {ctx.inputs[2].dtype} differs from data dtype {ctx.inputs[0].dtype}")


@shape_rule("ScatterElements")
def scatter_elements_shape(ctx: OpContext, axis, reduction) -> list[TensorType]:
    data, idx, upd = ctx.inputs[0], _index_dtype(ctx, 1), ctx.inputs[2]
    _check_reduction(ctx, reduction)
    if data.shape is not None:
        normalize_axis(axis, len(data.shape), ctx.node)
    if idx.shape is not None and upd.shape is not None and len(idx.shape) == len(upd.shape):
        if any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(idx.shape, upd.shape)):
            raise ctx.error(f"indices shape {list(idx.shape)} differs from updates shape {list(upd.shape)}")
    return [data]


@kernel("ScatterElements", attrs={"axis": 0, "reduction": "none"})
def scatter_elements(ctx: OpContext, axis, reduction):
    label, ufunc = ctx.node.label, _REDUCTIONS[reduction]

    @writes_out
    def scatter_elements_fn(data, indices, updates, out=None):
        a = axis + data.ndim if axis < 0 else axis
        idx = checked_indices(label, indices, data.shape[a], f"axis {a} of data shape {list(data.shape)}")
        y = data.copy() if out is None else _copy_into(out, data)
        where = _grid(idx.shape, a, idx)
        if ufunc is None:
            y[where] = updates  # duplicates: the last update wins, as in ONNX Runtime
        else:
            ufunc.at(y, where, updates)
        return y

    return scatter_elements_fn


def _copy_into(out: np.ndarray, data: np.ndarray) -> np.ndarray:
    np.copyto(out, data)
    return out


@shape_rule("ScatterND")
def scatter_nd_shape(ctx: OpContext, reduction) -> list[TensorType]:
    data, idx, upd = ctx.inputs[0], ctx.inputs[1], ctx.inputs[2]
    _check_reduction(ctx, reduction)
    if idx.dtype != "int64":
        raise ctx.error(f"indices '{ctx.node.inputs[1]}' must be int64, found {idx.dtype}")
    if data.shape is not None and idx.shape is not None and upd.shape is not None and idx.shape:
        k = idx.shape[-1]
        if isinstance(k, int):
            if k > len(data.shape):
                raise ctx.error(f"indices last dim {k} exceeds data rank {len(data.shape)}")
            want = tuple(idx.shape[:-1]) + tuple(data.shape[k:])
            if len(want) != len(upd.shape) or any(
                isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(want, upd.shape)
            ):
                raise ctx.error(f"updates shape {list(upd.shape)} should be {list(want)}")
    return [data]


@kernel("ScatterND", attrs={"reduction": "none"})
def scatter_nd(ctx: OpContext, reduction):
    label, ufunc = ctx.node.label, _REDUCTIONS[reduction]

    @writes_out
    def scatter_nd_fn(data, indices, updates, out=None):
        k = indices.shape[-1]
        y = data.copy() if out is None else _copy_into(out, data)
        flat = y.reshape((1,) + data.shape)  # a view: one batch, as GatherND with batch_dims=0
        where = _nd_index(label, data.shape, indices, 0)
        upd = updates.reshape((1, -1) + data.shape[k:])
        if ufunc is None:
            flat[where] = upd
        else:
            ufunc.at(flat, where, upd)
        return y

    return scatter_nd_fn


# ------------------------------------------------------------------ NonZero, Compress
@shape_rule("NonZero")
def non_zero_shape(ctx: OpContext) -> list[TensorType]:
    x = ctx.inputs[0]
    rank = None if x.shape is None else max(len(x.shape), 1)
    return [TensorType("int64", (rank, None))]


@kernel("NonZero")
def non_zero(ctx: OpContext):
    # a scalar counts as a 1-element vector, as in ONNX Runtime
    return lambda x: np.array(np.nonzero(np.atleast_1d(x)), dtype=np.int64).reshape(max(x.ndim, 1), -1)


@shape_rule("Compress")
def compress_shape(ctx: OpContext, axis) -> list[TensorType]:
    x, cond = ctx.inputs[0], ctx.inputs[1]
    if cond.dtype != "bool":
        raise ctx.error(f"condition '{ctx.node.inputs[1]}' must be bool, found {cond.dtype}")
    if cond.shape is not None and len(cond.shape) != 1:
        raise ctx.error(f"condition must be 1-D, found shape {list(cond.shape)}")
    c = ctx.values[1] if len(ctx.values) > 1 else None
    if x.shape is None:
        return [TensorType(x.dtype, None if axis is not None else (None,))]
    a = None if axis is None else normalize_axis(axis, len(x.shape), ctx.node)
    n = num_elements(x.shape) if a is None else x.shape[a]
    # a condition shorter than the axis selects among its first slices only
    count = None if c is None else int(np.count_nonzero(np.asarray(c)[:n] if isinstance(n, int) else c))
    if a is None:
        return [TensorType(x.dtype, (count,))]
    return [TensorType(x.dtype, x.shape[:a] + (count,) + x.shape[a + 1:])]


@kernel("Compress", attrs={"axis": None})
def compress(ctx: OpContext, axis):
    label = ctx.node.label

    def compress_fn(x, condition):
        n = x.size if axis is None else x.shape[axis]
        if condition.shape[0] > n and condition[n:].any():
            raise KernelError(f"{label}: condition of length {condition.shape[0]} selects beyond the {n} slices")
        return np.compress(condition[:n], x, axis=axis)

    return compress_fn


# ------------------------------------------------------------------------- OneHot
@shape_rule("OneHot")
def one_hot_shape(ctx: OpContext, axis) -> list[TensorType]:
    idx, values = ctx.inputs[0], ctx.inputs[2]
    if values.shape is not None and (len(values.shape) != 1 or values.shape[0] not in (2, None) and isinstance(values.shape[0], int)):
        raise ctx.error(f"values must have shape [2] (off, on), found {list(values.shape)}")
    depth = const_ints(ctx, 1)
    d: Dim = None if depth is None else depth[0]
    if d is not None and d < 1:
        raise ctx.error(f"depth must be positive, found {d}")
    if idx.shape is None:
        return [TensorType(values.dtype, None)]
    a = normalize_axis(axis, len(idx.shape) + 1, ctx.node)
    return [TensorType(values.dtype, idx.shape[:a] + (d,) + idx.shape[a:])]


@kernel("OneHot", attrs={"axis": -1})
def one_hot(ctx: OpContext, axis):
    const_depth = ctx.values[1]
    d_const = None if const_depth is None else int(const_depth.reshape(-1)[0])
    positions = None if d_const is None or d_const < 1 else np.arange(d_const)

    def one_hot_fn(indices, depth, values):
        if depth is const_depth and positions is not None:
            d, ar = d_const, positions
        else:
            d = int(np.asarray(depth).reshape(-1)[0])
            ar = np.arange(d)
        idx = indices.astype(np.int64)  # float indices truncate, as in ONNX Runtime
        idx = np.where(idx < 0, idx + d, idx)  # out-of-range rows stay all "off"
        hot = idx[..., None] == ar
        y = np.where(hot, values[1], values[0])
        a = axis + y.ndim if axis < 0 else axis
        return y if a == y.ndim - 1 else np.moveaxis(y, -1, a)

    return one_hot_fn


# --------------------------------------------------------------------------- TopK
@shape_rule("TopK")
def top_k_shape(ctx: OpContext, axis, largest, sorted) -> list[TensorType]:
    x = ctx.inputs[0]
    check_index_input(ctx, 1, "K")
    k = const_ints(ctx, 1)
    if x.shape is None:
        return [TensorType(x.dtype, None), TensorType("int64", None)]
    a = normalize_axis(axis, len(x.shape), ctx.node)
    d: Dim = None
    if k is not None:
        if len(k) != 1 or k[0] < 0:
            raise ctx.error(f"K must hold one non-negative value, found {k}")
        d = k[0]
        if isinstance(x.shape[a], int) and d > x.shape[a]:
            raise ctx.error(f"K={d} exceeds axis {a} of size {x.shape[a]}")
    shape = x.shape[:a] + (d,) + x.shape[a + 1:]
    return [TensorType(x.dtype, shape), TensorType("int64", shape)]


@kernel("TopK", attrs={"axis": -1, "largest": 1, "sorted": 1})
def top_k(ctx: OpContext, axis, largest, sorted):
    label = ctx.node.label

    def top_k_fn(x, k):
        a = axis + x.ndim if axis < 0 else axis
        kk, n = int(k.reshape(-1)[0]), x.shape[a]
        if not 0 <= kk <= n:
            raise KernelError(f"{label}: K={kk} is out of range for axis {a} of size {n}")
        if largest:
            # a stable ascending sort of the reversed axis, read backwards, orders values
            # descending with ties by ascending index (ONNX's tie-break) for every dtype
            order = np.argsort(np.flip(x, a), axis=a, kind="stable")
            idx = (n - 1) - np.flip(order, a).take(np.arange(kk), axis=a)
        else:
            idx = np.argsort(x, axis=a, kind="stable").take(np.arange(kk), axis=a)
        return np.take_along_axis(x, idx, axis=a), idx.astype(np.int64, copy=False)

    return top_k_fn


# ------------------------------------------------------------------------- CumSum
@shape_rule("CumSum")
def cum_sum_shape(ctx: OpContext, exclusive, reverse) -> list[TensorType]:
    x = ctx.inputs[0]
    check_index_input(ctx, 1, "axis", INT_INDEX, ranks=(0, 1))
    a = const_ints(ctx, 1)
    if a is not None and x.shape is not None:
        normalize_axis(a[0], len(x.shape), ctx.node)
    return [x]


@kernel("CumSum", attrs={"exclusive": 0, "reverse": 0})
def cum_sum(ctx: OpContext, exclusive, reverse):
    @writes_out
    def cum_sum_fn(x, axis, out=None):
        a = int(np.asarray(axis).reshape(-1)[0])
        a = a + x.ndim if a < 0 else a
        src = np.flip(x, a) if reverse else x
        y = np.empty_like(x) if out is None else out
        dst = np.flip(y, a) if reverse else y  # a view: writing it fills y in reverse
        if exclusive:
            lead = (slice(None),) * a
            dst[lead + (slice(0, 1),)] = 0
            np.cumsum(src[lead + (slice(0, -1),)], axis=a, dtype=x.dtype, out=dst[lead + (slice(1, None),)])
        else:
            np.cumsum(src, axis=a, dtype=x.dtype, out=dst)
        return y

    return cum_sum_fn


# ---------------------------------------------------------------- ReverseSequence
@shape_rule("ReverseSequence")
def reverse_sequence_shape(ctx: OpContext, batch_axis, time_axis) -> list[TensorType]:
    x = ctx.inputs[0]
    check_index_input(ctx, 1, "sequence_lens")
    if {batch_axis, time_axis} != {0, 1}:
        raise ctx.error(f"batch_axis {batch_axis} and time_axis {time_axis} must be 0 and 1 in some order")
    if x.shape is not None and len(x.shape) < 2:
        raise ctx.error(f"input must have rank >= 2, found shape {list(x.shape)}")
    return [x]


@kernel("ReverseSequence", attrs={"batch_axis": 1, "time_axis": 0})
def reverse_sequence(ctx: OpContext, batch_axis, time_axis):
    label = ctx.node.label

    def reverse_sequence_fn(x, sequence_lens):
        steps, batch = x.shape[time_axis], x.shape[batch_axis]
        lens = sequence_lens.astype(np.int64).reshape(-1)
        if lens.shape[0] != batch or (lens.size and (lens.min() < 0 or lens.max() > steps)):
            raise KernelError(f"{label}: sequence_lens {lens.tolist()} do not fit {batch} sequences of {steps} steps")
        t = np.arange(steps)[:, None]  # (time, batch): where each output step reads from
        src = np.where(t < lens[None, :], lens[None, :] - 1 - t, t)
        if time_axis == 1:
            src = src.T
        src = src.reshape(src.shape + (1,) * (x.ndim - 2))
        return np.take_along_axis(x, src, axis=time_axis)

    return reverse_sequence_fn
