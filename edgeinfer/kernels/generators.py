"""Operators that generate tensors from shapes and scalars rather than rearranging an input:
Shape, Size, ConstantOfShape, Range, EyeLike, and Trilu (a triangular mask of its input).

Shape and Size of a fully known shape are folded by shape inference itself; the kernels here
serve dynamic shapes. ConstantOfShape and Range give exact output shapes when their inputs
are compile-time constants and ``None`` dims otherwise.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as _dt
from ..errors import KernelError
from ..graph import TensorType
from .elementwise import deliver
from .registry import OpContext, kernel, shape_rule, writes_out
from .shapes import num_elements
from .tensor import check_index_input, const_ints, rank_of, vector_length


# --------------------------------------------------------------------- Shape, Size
@shape_rule("Shape")
def shape_shape(ctx: OpContext, start, end) -> list[TensorType]:
    r = rank_of(ctx)
    if r is None:
        return [TensorType("int64", (None,))]
    return [TensorType("int64", (len(range(r)[slice(start, end)]),))]


@kernel("Shape", attrs={"start": 0, "end": None})
def shape(ctx: OpContext, start, end):
    # python slicing clamps exactly as ONNX specifies for start/end
    return lambda x: np.array(x.shape[start:end], dtype=np.int64)


@shape_rule("Size")
def size_shape(ctx: OpContext) -> list[TensorType]:
    return [TensorType("int64", ())]


@kernel("Size")
def size(ctx: OpContext):
    return lambda x: np.array(x.size, dtype=np.int64)


# ---------------------------------------------------------------- ConstantOfShape
def _fill_value(ctx: OpContext, value) -> np.ndarray:
    if value is None:
        return np.zeros((), np.float32)
    v = np.asarray(value)
    if v.size != 1:
        raise ctx.error(f"attribute value must hold one element, found shape {list(v.shape)}")
    return v.reshape(())


@shape_rule("ConstantOfShape")
def constant_of_shape_shape(ctx: OpContext, value) -> list[TensorType]:
    dtype = _dt.from_numpy(_fill_value(ctx, value).dtype)
    check_index_input(ctx, 0, "shape")
    dims = const_ints(ctx, 0)
    if dims is None:
        n = vector_length(ctx.inputs[0])
        return [TensorType(dtype, None if n is None else (None,) * n)]
    if any(d < 0 for d in dims):
        raise ctx.error(f"shape {dims} has a negative dim")
    return [TensorType(dtype, tuple(dims))]


@kernel("ConstantOfShape", attrs={"value": None})
def constant_of_shape(ctx: OpContext, value):
    fill = _fill_value(ctx, value)

    @writes_out
    def constant_of_shape_fn(shape, out=None):
        if out is None:
            return np.full(tuple(int(d) for d in shape), fill, dtype=fill.dtype)
        out.fill(fill)
        return out

    return constant_of_shape_fn


# -------------------------------------------------------------------------- Range
def range_length(start, limit, delta) -> int:
    if delta == 0:
        raise ValueError("delta is 0")
    if isinstance(start, (int, np.integer)) and isinstance(delta, (int, np.integer)):
        return max(0, -(-(int(limit) - int(start)) // int(delta)))
    return max(0, int(np.ceil((float(limit) - float(start)) / float(delta))))


@shape_rule("Range")
def range_shape(ctx: OpContext, stash_type) -> list[TensorType]:
    ts = ctx.inputs[:3]
    if len({t.dtype for t in ts}) > 1:
        raise ctx.error(f"start, limit and delta must share one dtype, found {[t.dtype for t in ts]}")
    for i, t in enumerate(ts):
        if t.shape is None:
            continue
        if len(t.shape) > 1 or num_elements(t.shape) not in (1, None):
            raise ctx.error(f"input {i} '{ctx.node.inputs[i]}' must be a scalar, found shape {list(t.shape)}")
    vals = [ctx.values[i] if i < len(ctx.values) else None for i in range(3)]
    if any(v is None for v in vals):
        return [TensorType(ts[0].dtype, (None,))]
    try:
        n = range_length(*(np.asarray(v).reshape(-1)[0] for v in vals))
    except ValueError as e:
        raise ctx.error(str(e)) from None
    return [TensorType(ts[0].dtype, (n,))]


@kernel("Range", attrs={"stash_type": 1})
def range_(ctx: OpContext, stash_type):
    label = ctx.node.label

    def range_fn(start, limit, delta):
        s, l_, d = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
        try:
            n = range_length(s, l_, d)
        except ValueError as e:
            raise KernelError(f"{label}: {e}") from None
        dtype = np.asarray(start).dtype
        # float16 computes in float32 (stash_type), everything else in its own type
        work = np.dtype(np.float32) if dtype == np.float16 else dtype
        y = np.arange(n, dtype=work)
        y *= np.asarray(d, work)
        y += np.asarray(s, work)
        return y.astype(dtype, copy=False)

    return range_fn


# -------------------------------------------------------------------- EyeLike, Trilu
@shape_rule("EyeLike")
def eye_like_shape(ctx: OpContext, dtype, k) -> list[TensorType]:
    x = ctx.inputs[0]
    if x.shape is not None and len(x.shape) != 2:
        raise ctx.error(f"input must be 2-D, found shape {list(x.shape)}")
    out = x.dtype if dtype is None else dtype
    if out not in _dt.DTYPES or out == "string":
        raise ctx.error(f"attribute dtype {dtype!r} is not a numeric IR dtype")
    return [TensorType(out, x.shape)]


@kernel("EyeLike", attrs={"dtype": None, "k": 0})
def eye_like(ctx: OpContext, dtype, k):
    np_dtype = _dt.to_numpy(ctx.outputs[0].dtype)

    @writes_out
    def eye_like_fn(x, out=None):
        return deliver(np.eye(x.shape[0], x.shape[1], k=k, dtype=np_dtype), out)

    return eye_like_fn


@shape_rule("Trilu")
def trilu_shape(ctx: OpContext, upper) -> list[TensorType]:
    x = ctx.inputs[0]
    if x.shape is not None and len(x.shape) < 2:
        raise ctx.error(f"input must have rank >= 2, found shape {list(x.shape)}")
    if ctx.has_input(1):
        check_index_input(ctx, 1, "k", ranks=(0,))
    return [x]


@kernel("Trilu", attrs={"upper": 1})
def trilu(ctx: OpContext, upper):
    band = np.triu if upper else np.tril

    def trilu_fn(x, k=None):
        return band(x, 0 if k is None else int(k))

    return trilu_fn
