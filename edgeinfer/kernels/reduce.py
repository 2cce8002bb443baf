"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare and ArgMax/ArgMin.

A Reduce* op is a row of :data:`_REDUCE`: ``reduce(x, axes, keepdims) -> array`` with numpy
``axis`` semantics. The shared rule handles ONNX's axes *input* (optional; a compile-time
constant gives exact shapes), ``keepdims`` and ``noop_with_empty_axes``: with empty axes and
the flag set the reduction runs over ``axis=()``, which numpy treats as "reduce nothing", so
the composite ops still apply their elementwise steps (ReduceL1 gives ``|x|``, ReduceLogSum
``log(x)``) exactly as ONNX specifies.

Precision: float16 accumulates in float32 and rounds once; other types accumulate in their
own type (integer sums wrap as in C). An empty reduction gives the identity of the operation
(0 for sums, 1 for products, the lowest value for Max, -inf for LogSum/LogSumExp).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .elementwise import BOOL, NUMERIC, deliver, ieee_errors
from .registry import OpContext, kernel, shape_rule, writes_out
from .shapes import normalize_axis
from .tensor import const_ints, check_index_input, vector_length


def _acc(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float32) if x.dtype == np.float16 else x.dtype


def _lowest(dtype: np.dtype):
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind == "b":
        return False
    return np.iinfo(dtype).min


def _highest(dtype: np.dtype):
    if dtype.kind == "f":
        return np.inf
    if dtype.kind == "b":
        return True
    return np.iinfo(dtype).max


def _sum(x, axes, keepdims):
    return np.sum(x, axis=axes, keepdims=keepdims, dtype=_acc(x))


def _mean(x, axes, keepdims):
    with ieee_errors():  # empty mean is nan, as 0/0
        return np.mean(x, axis=axes, keepdims=keepdims, dtype=_acc(x) if x.dtype.kind == "f" else np.float64)


def _max(x, axes, keepdims):
    return np.max(x, axis=axes, keepdims=keepdims, initial=_lowest(x.dtype))


def _min(x, axes, keepdims):
    return np.min(x, axis=axes, keepdims=keepdims, initial=_highest(x.dtype))


def _prod(x, axes, keepdims):
    return np.prod(x, axis=axes, keepdims=keepdims, dtype=_acc(x))


def _l1(x, axes, keepdims):
    return _sum(np.abs(x), axes, keepdims)


def _square(x):
    x = x.astype(_acc(x), copy=False)
    return x * x


def _sum_square(x, axes, keepdims):
    return _sum(_square(x), axes, keepdims)


def _l2(x, axes, keepdims):
    return np.sqrt(_sum_square(x, axes, keepdims))


def _log_sum(x, axes, keepdims):
    with ieee_errors():
        return np.log(_sum(x, axes, keepdims))


def _log_sum_exp(x, axes, keepdims):
    x = x.astype(_acc(x), copy=False)
    # shift by the max so exp never overflows; a non-finite max (all -inf, or inf) shifts by 0
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    m[~np.isfinite(m)] = 0
    with ieee_errors():
        s = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True))
    s += m
    return s if keepdims else np.squeeze(s, axis=axes)


# op -> (reduce, accepted dtypes)
_REDUCE: dict[str, tuple[Callable, frozenset]] = {
    "ReduceSum": (_sum, NUMERIC),
    "ReduceMean": (_mean, NUMERIC),
    "ReduceMax": (_max, NUMERIC | BOOL),
    "ReduceMin": (_min, NUMERIC | BOOL),
    "ReduceProd": (_prod, NUMERIC),
    "ReduceL1": (_l1, NUMERIC),
    "ReduceL2": (_l2, NUMERIC),
    "ReduceLogSum": (_log_sum, NUMERIC),
    "ReduceLogSumExp": (_log_sum_exp, NUMERIC),
    "ReduceSumSquare": (_sum_square, NUMERIC),
}
_REDUCE_ATTRS = {"keepdims": 1, "noop_with_empty_axes": 0}


def _reduced_shape(shape: tuple, axes: list[int], keepdims: int) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_shape(accepts: frozenset):
    def infer(ctx: OpContext, keepdims, noop_with_empty_axes) -> list[TensorType]:
        x = ctx.inputs[0]
        if x.dtype not in accepts:
            raise ctx.error(f"input '{ctx.node.inputs[0]}' has dtype {x.dtype}; {ctx.node.op_type} accepts {', '.join(sorted(accepts))}")
        axes: list[int] | None = []
        if ctx.has_input(1):
            check_index_input(ctx, 1, "axes")
            axes = const_ints(ctx, 1)
            n = vector_length(ctx.inputs[1])
            if axes is None and n == 0:
                axes = []
        if x.shape is None:
            return [TensorType(x.dtype, None)]
        rank = len(x.shape)
        if axes is None:  # unknown axes: only the rank may be known
            if keepdims:
                return [TensorType(x.dtype, (None,) * rank)]
            n = vector_length(ctx.inputs[1])
            return [TensorType(x.dtype, None if n is None else (None,) * (rank - n))]
        if not axes:
            if noop_with_empty_axes:
                return [x]
            axes = list(range(rank))
        picked = [normalize_axis(a, rank, ctx.node) for a in axes]
        if len(set(picked)) != len(picked):
            raise ctx.error(f"axes {axes} repeat an axis (rank {rank})")
        return [TensorType(x.dtype, _reduced_shape(x.shape, picked, keepdims))]

    return infer


def _reduce_kernel(reduce: Callable):
    def build(ctx: OpContext, keepdims, noop_with_empty_axes):
        label = ctx.node.label

        @writes_out
        def reduce_fn(x, axes=None, out=None):
            if axes is None or axes.size == 0:
                picked = () if noop_with_empty_axes else None
            else:
                picked = tuple(int(a) + x.ndim if a < 0 else int(a) for a in axes)
                if any(not 0 <= a < x.ndim for a in picked) or len(set(picked)) != len(picked):
                    raise KernelError(f"{label}: axes {axes.tolist()} do not fit input shape {list(x.shape)}")
            y = np.asarray(reduce(x, picked, bool(keepdims)))
            if out is not None:
                return deliver(y, out)
            return y if y.dtype == x.dtype else y.astype(x.dtype)

        return reduce_fn

    return build


for _op, (_fn, _accepts) in _REDUCE.items():
    shape_rule(_op)(_reduce_shape(_accepts))
    kernel(_op, attrs=dict(_REDUCE_ATTRS))(_reduce_kernel(_fn))


# ------------------------------------------------------------------ ArgMax/ArgMin
def _arg_shape(ctx: OpContext, axis, keepdims, select_last_index) -> list[TensorType]:
    x = ctx.inputs[0]
    if x.dtype not in NUMERIC:
        raise ctx.error(f"input '{ctx.node.inputs[0]}' has dtype {x.dtype}; {ctx.node.op_type} accepts numeric types")
    if x.shape is None:
        return [TensorType("int64", None)]
    a = normalize_axis(axis, len(x.shape), ctx.node)
    return [TensorType("int64", _reduced_shape(x.shape, [a], keepdims))]


def _arg_kernel(arg: Callable):
    def build(ctx: OpContext, axis, keepdims, select_last_index):
        label = ctx.node.label

        @writes_out
        def arg_fn(x, out=None):
            a = axis + x.ndim if axis < 0 else axis
            n = x.shape[a]
            if n == 0:
                raise KernelError(f"{label}: cannot take {arg.__name__} over an empty axis {a} (shape {list(x.shape)})")
            if select_last_index:
                # the first hit in the flipped axis is the last one in the original
                idx = arg(np.flip(x, a), axis=a, keepdims=bool(keepdims))
                idx = (n - 1) - idx
            else:
                idx = arg(x, axis=a, keepdims=bool(keepdims))
            return deliver(np.asarray(idx, dtype=np.int64), out)

        return arg_fn

    return build


for _op, _fn in (("ArgMax", np.argmax), ("ArgMin", np.argmin)):
    shape_rule(_op)(_arg_shape)
    kernel(_op, attrs={"axis": 0, "keepdims": 1, "select_last_index": 0})(_arg_kernel(_fn))
