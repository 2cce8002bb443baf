"""Sequence and optional ops: SequenceEmpty/Construct/Insert/At/Erase/Length, SplitToSequence,
ConcatFromSequence, Optional, OptionalHasElement, OptionalGetElement.

A sequence value is a Python list of arrays (type ``sequence(T)``), an optional value is
``None`` or its element (type ``optional(T)``); see :mod:`edgeinfer.dtypes`. Kernels never
mutate a list they receive: inserting or erasing builds a new list, so values stay immutable
as ONNX requires. SequenceMap runs a subgraph and lives with the control-flow ops.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as _dt
from ..errors import KernelError
from ..graph import TensorType
from .registry import REQUIRED, OpContext, kernel, shape_rule
from .shapes import normalize_axis


def _seq_elem(ctx: OpContext, i: int) -> str:
    t = ctx.inputs[i]
    if not _dt.is_sequence(t.dtype):
        raise ctx.error(f"input {i} '{ctx.node.inputs[i]}' must be a sequence, found {t.dtype}")
    return _dt.element_type(t.dtype)


def _position(ctx: OpContext, pos, length: int, allow_end: bool) -> int:
    p = int(np.asarray(pos).reshape(-1)[0]) if pos is not None else length
    hi = length if allow_end else length - 1
    if not -length <= p <= hi:
        raise KernelError(f"{ctx.node.label}: position {p} is out of range for a sequence of length {length}")
    return p + length if p < 0 else p


# ------------------------------------------------------------------ SequenceEmpty
@shape_rule("SequenceEmpty")
def sequence_empty_shape(ctx: OpContext, dtype):
    return [TensorType(_dt.sequence_of(dtype or "float32"), None)]


@kernel("SequenceEmpty", attrs={"dtype": None})
def sequence_empty(ctx: OpContext, dtype):
    return lambda: []


# -------------------------------------------------------------- SequenceConstruct
@shape_rule("SequenceConstruct")
def sequence_construct_shape(ctx: OpContext):
    if not ctx.inputs:
        raise ctx.error("needs at least one input")
    dts = {t.dtype for t in ctx.inputs}
    if len(dts) > 1:
        raise ctx.error(f"inputs must share one dtype, found {sorted(dts)}")
    shapes = {t.shape for t in ctx.inputs}
    return [TensorType(_dt.sequence_of(ctx.inputs[0].dtype), shapes.pop() if len(shapes) == 1 else None)]


@kernel("SequenceConstruct")
def sequence_construct(ctx: OpContext):
    return lambda *xs: list(xs)


# ---------------------------------------------------------------- SequenceInsert
@shape_rule("SequenceInsert")
def sequence_insert_shape(ctx: OpContext):
    elem = _seq_elem(ctx, 0)
    if ctx.inputs[1].dtype != elem and elem != "undefined":
        raise ctx.error(f"tensor dtype {ctx.inputs[1].dtype} differs from the sequence's {elem}")
    return [TensorType(_dt.sequence_of(ctx.inputs[1].dtype), None)]


@kernel("SequenceInsert")
def sequence_insert(ctx: OpContext):
    def sequence_insert_fn(seq, x, pos=None):
        p = _position(ctx, pos, len(seq), allow_end=True)
        return seq[:p] + [x] + seq[p:]

    return sequence_insert_fn


# -------------------------------------------------------------------- SequenceAt
@shape_rule("SequenceAt")
def sequence_at_shape(ctx: OpContext):
    return [TensorType(_seq_elem(ctx, 0), ctx.inputs[0].shape)]


@kernel("SequenceAt")
def sequence_at(ctx: OpContext):
    def sequence_at_fn(seq, pos):
        return seq[_position(ctx, pos, len(seq), allow_end=False)]

    return sequence_at_fn


# ----------------------------------------------------------------- SequenceErase
@shape_rule("SequenceErase")
def sequence_erase_shape(ctx: OpContext):
    _seq_elem(ctx, 0)
    return [ctx.inputs[0]]


@kernel("SequenceErase")
def sequence_erase(ctx: OpContext):
    def sequence_erase_fn(seq, pos=None):
        p = _position(ctx, pos, len(seq), allow_end=False) if pos is not None else len(seq) - 1
        if not seq:
            raise KernelError(f"{ctx.node.label}: cannot erase from an empty sequence")
        return seq[:p] + seq[p + 1:]

    return sequence_erase_fn


# ---------------------------------------------------------------- SequenceLength
@shape_rule("SequenceLength")
def sequence_length_shape(ctx: OpContext):
    _seq_elem(ctx, 0)
    return [TensorType("int64", ())]


@kernel("SequenceLength")
def sequence_length(ctx: OpContext):
    return lambda seq: np.array(len(seq), dtype=np.int64)


# -------------------------------------------------------------- SplitToSequence
@shape_rule("SplitToSequence")
def split_to_sequence_shape(ctx: OpContext, axis, keepdims):
    x = ctx.inputs[0]
    if x.shape is not None:
        normalize_axis(axis, len(x.shape), ctx.node)
    return [TensorType(_dt.sequence_of(x.dtype), None)]


@kernel("SplitToSequence", attrs={"axis": 0, "keepdims": 1})
def split_to_sequence(ctx: OpContext, axis, keepdims):
    def split_to_sequence_fn(x, split=None):
        ax = normalize_axis(axis, x.ndim, ctx.node)
        n = x.shape[ax]
        if split is None:
            parts = [np.take(x, [i], axis=ax) for i in range(n)]
            return [np.squeeze(p, axis=ax) for p in parts] if not keepdims else parts
        split = np.asarray(split).astype(np.int64)
        if split.ndim == 0:
            size = int(split)
            if size <= 0:
                raise KernelError(f"{ctx.node.label}: split size must be positive, got {size}")
            bounds = list(range(size, n, size))
        else:
            if int(split.sum()) != n or (split < 0).any():
                raise KernelError(f"{ctx.node.label}: split {split.tolist()} does not add up to dim {n} of axis {ax}")
            bounds = np.cumsum(split)[:-1].tolist()
        return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=ax)]

    return split_to_sequence_fn


# ------------------------------------------------------------ ConcatFromSequence
@shape_rule("ConcatFromSequence")
def concat_from_sequence_shape(ctx: OpContext, axis, new_axis):
    elem = _seq_elem(ctx, 0)
    shape = ctx.inputs[0].shape
    if shape is not None:
        rank = len(shape) + (1 if new_axis else 0)
        ax = normalize_axis(axis, rank, ctx.node)
        shape = tuple(None if i == ax else d for i, d in enumerate(
            shape if not new_axis else shape[:ax] + (None,) + shape[ax:]))
    return [TensorType(elem, shape)]


@kernel("ConcatFromSequence", attrs={"axis": REQUIRED, "new_axis": 0})
def concat_from_sequence(ctx: OpContext, axis, new_axis):
    def concat_from_sequence_fn(seq):
        if not seq:
            raise KernelError(f"{ctx.node.label}: cannot concatenate an empty sequence")
        if new_axis:
            return np.stack(seq, axis=normalize_axis(axis, seq[0].ndim + 1, ctx.node))
        return np.concatenate(seq, axis=normalize_axis(axis, seq[0].ndim, ctx.node))

    return concat_from_sequence_fn


# ---------------------------------------------------------------------- Optional
@shape_rule("Optional")
def optional_shape(ctx: OpContext, type):
    if ctx.inputs and ctx.inputs[0] is not None:
        return [TensorType(_dt.optional_of(ctx.inputs[0].dtype), ctx.inputs[0].shape)]
    if type is None:
        raise ctx.error("an Optional without input needs the 'type' attribute")
    return [TensorType(_dt.optional_of(type), None)]


@kernel("Optional", attrs={"type": None})
def optional(ctx: OpContext, type):
    return lambda x=None: x


@shape_rule("OptionalHasElement")
def optional_has_element_shape(ctx: OpContext):
    return [TensorType("bool", ())]


@kernel("OptionalHasElement")
def optional_has_element(ctx: OpContext):
    return lambda x=None: np.array(x is not None)


@shape_rule("OptionalGetElement")
def optional_get_element_shape(ctx: OpContext):
    t = ctx.inputs[0]
    if _dt.is_optional(t.dtype):
        return [TensorType(_dt.element_type(t.dtype), t.shape)]
    return [t]


@kernel("OptionalGetElement")
def optional_get_element(ctx: OpContext):
    def optional_get_element_fn(x):
        if x is None:
            raise KernelError(f"{ctx.node.label}: the optional input '{ctx.node.inputs[0]}' is empty")
        return x

    return optional_get_element_fn
