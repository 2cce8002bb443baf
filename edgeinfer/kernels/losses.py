"""Loss operators: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both pick, for every sample position, minus the log-probability of its target class out of
an ``(N, C, d1, ..., dk)`` tensor, weight it by ``weight[target]`` when a weight is given,
zero it where the target equals ``ignore_index``, and reduce: ``none`` keeps the
``(N, d1, ..., dk)`` losses, ``sum`` adds them, ``mean`` divides that sum by the total weight
of the samples that count (their number when there is no weight), so ignored samples leave
the mean alone. SoftmaxCrossEntropyLoss first takes the log-softmax of its scores over the
class axis and can return it as a second output.

Arithmetic runs in float32 at least (float64 stays float64); the results are rounded once to
the input's dtype (bfloat16 is widened and rounded by :func:`~.registry.build_kernel`).
"""
from __future__ import annotations

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .elementwise import FLOATS, check_input_dtypes
from .misc import narrow_float, widen_float
from .registry import OpContext, kernel, shape_rule
from .tensor import INT_INDEX

_REDUCTIONS = ("none", "sum", "mean")
_ATTRS = {"ignore_index": None, "reduction": "mean"}


# ------------------------------------------------------------------- shared parts
def _loss_types(ctx: OpContext, reduction: str, what: str) -> TensorType:
    """Check a loss node's inputs and attributes; the type of its loss output."""
    if reduction not in _REDUCTIONS:
        raise ctx.error(f"attribute reduction must be one of {', '.join(_REDUCTIONS)}, found {reduction!r}")
    check_input_dtypes(ctx, FLOATS, same=(0, 2), free=(1,))
    x, target = ctx.inputs[0], ctx.inputs[1]
    if target.dtype not in INT_INDEX:
        raise ctx.error(f"target '{ctx.node.inputs[1]}' must be int32 or int64, found {target.dtype}")
    if x.shape is not None and len(x.shape) < 2:
        raise ctx.error(f"{what} must have rank >= 2 (N, C, d1, ..., dk), found shape {list(x.shape)}")
    if x.shape is not None and target.shape is not None:
        want = (x.shape[0],) + tuple(x.shape[2:])
        if len(target.shape) != len(want) or any(
            isinstance(t, int) and isinstance(w, int) and t != w for t, w in zip(target.shape, want)
        ):
            raise ctx.error(f"target of shape {list(target.shape)} does not match {what} {list(x.shape)}: "
                            f"expected (N, d1, ..., dk) = {list(want)}")
    w = ctx.inputs[2] if len(ctx.inputs) > 2 and ctx.has_input(2) else None
    if w is not None and w.shape is not None:
        c = x.shape[1] if x.shape is not None else None
        if len(w.shape) != 1 or (isinstance(c, int) and isinstance(w.shape[0], int) and w.shape[0] != c):
            raise ctx.error(f"weight must be a vector of C = {c} class weights, found shape {list(w.shape)}")
    if reduction != "none":
        return TensorType(x.dtype, ())
    if target.shape is not None:
        return TensorType(x.dtype, tuple(target.shape))
    return TensorType(x.dtype, None if x.shape is None else (x.shape[0],) + tuple(x.shape[2:]))


def _negative_log_likelihood(log_prob, target, weight, reduction, ignore_index, label):
    """The reduced loss, in ``log_prob``'s (float32 or float64) precision."""
    _check_rank(log_prob, label)
    n, c = log_prob.shape[:2]
    if target.shape != (n,) + log_prob.shape[2:]:
        raise KernelError(f"{label}: target of shape {list(target.shape)} does not match input "
                          f"{list(log_prob.shape)}: expected {[n] + list(log_prob.shape[2:])}")
    target = target.astype(np.int64, copy=False)
    counted = None if ignore_index is None else target != ignore_index
    classes = target if counted is None else np.where(counted, target, 0)
    if classes.size and (classes.min() < 0 or classes.max() >= c):
        bad = classes[(classes < 0) | (classes >= c)].reshape(-1)[0]
        extra = "" if ignore_index is None else f" and is not ignore_index {ignore_index}"
        raise KernelError(f"{label}: target value {bad} is outside the {c} classes [0, {c}){extra}")
    loss = -np.take_along_axis(log_prob, classes[:, None], axis=1)[:, 0]
    w = None if weight is None else weight[classes]
    if counted is not None:
        w = counted.astype(log_prob.dtype) if w is None else np.where(counted, w, 0)
    if w is not None:
        loss *= w
    if reduction == "none":
        return loss
    total = loss.sum(dtype=log_prob.dtype)
    if reduction == "sum":
        return total
    with np.errstate(invalid="ignore", divide="ignore"):  # every sample ignored: 0 / 0 = NaN
        return total / (loss.size if w is None else w.sum(dtype=log_prob.dtype))


def _check_rank(x: np.ndarray, label: str) -> None:
    if x.ndim < 2:
        raise KernelError(f"{label}: input must have rank >= 2 (N, C, d1, ..., dk), found shape {list(x.shape)}")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


# ---------------------------------------------------------- NegativeLogLikelihoodLoss
@shape_rule("NegativeLogLikelihoodLoss")
def nll_loss_shape(ctx: OpContext, ignore_index, reduction) -> list[TensorType]:
    return [_loss_types(ctx, reduction, "input")]


@kernel("NegativeLogLikelihoodLoss", attrs=_ATTRS)
def nll_loss(ctx: OpContext, ignore_index, reduction: str):
    dtype, label = ctx.inputs[0].dtype, ctx.node.label

    def nll_loss_fn(x, target, weight=None):
        w = None if weight is None else widen_float(weight)
        loss = _negative_log_likelihood(widen_float(x), target, w, reduction, ignore_index, label)
        return narrow_float(loss, dtype)

    return nll_loss_fn


# ------------------------------------------------------------ SoftmaxCrossEntropyLoss
@shape_rule("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_shape(ctx: OpContext, ignore_index, reduction) -> list[TensorType]:
    n_out = len(ctx.node.outputs)
    if n_out > 2:
        raise ctx.error(f"expects at most 2 outputs (output, log_prob), found {n_out}")
    loss = _loss_types(ctx, reduction, "scores")
    return [loss, ctx.inputs[0]][:n_out]


@kernel("SoftmaxCrossEntropyLoss", attrs=_ATTRS)
def softmax_cross_entropy(ctx: OpContext, ignore_index, reduction: str):
    dtype, label = ctx.inputs[0].dtype, ctx.node.label
    n_out = len(ctx.node.outputs)

    def softmax_cross_entropy_fn(scores, labels, weights=None):
        _check_rank(scores, label)
        log_prob = _log_softmax(widen_float(scores))
        w = None if weights is None else widen_float(weights)
        loss = narrow_float(_negative_log_likelihood(log_prob, labels, w, reduction, ignore_index, label), dtype)
        return (loss, narrow_float(log_prob, dtype)) if n_out == 2 else loss

    return softmax_cross_entropy_fn
