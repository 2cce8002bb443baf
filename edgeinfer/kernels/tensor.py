"""Shape and layout operators: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split,
Slice, Expand, Tile, Pad, DepthToSpace and SpaceToDepth. (Indexing ops - Gather*, Scatter*,
TopK... - are in :mod:`.indexing`; Shape, Size, ConstantOfShape, Range, EyeLike and Trilu in
:mod:`.generators`.)

Shape rules read shape-like inputs (Reshape's shape, Slice's starts, Expand's shape...) from
``ctx.values`` when they are compile-time constants and give ``None`` dims where a value is
unknown; symbolic dims survive where the result is certain (Reshape ``[0, -1]`` of
``("N", 3, 4)`` is ``("N", 12)``). The same arithmetic (:func:`reshape_dims`,
:func:`slice_bounds`, :func:`split_sizes`) runs in the kernels on concrete shapes, so a shape
rule and its kernel cannot disagree.

Reshape, Flatten, Squeeze, Unsqueeze, Slice, Split and Transpose return numpy views (no copy);
they register with ``aliases=True``. Concat, Expand and Pad are ``writes_out``.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import numpy as np

from ..errors import KernelError
from ..graph import Dim, TensorType
from .elementwise import deliver
from .registry import REQUIRED, OpContext, kernel, shape_rule, writes_out
from .shapes import broadcast_shapes, normalize_axis, num_elements

INT_INDEX = frozenset({"int32", "int64"})


# ------------------------------------------------------------------------ helpers
def const_ints(ctx: OpContext, i: int) -> list[int] | None:
    """Input ``i``'s compile-time value as a flat list of ints, or ``None`` when unknown."""
    if not ctx.has_input(i) or i >= len(ctx.values) or ctx.values[i] is None:
        return None
    return [int(v) for v in np.asarray(ctx.values[i]).reshape(-1)]


def check_index_input(ctx: OpContext, i: int, what: str, dtypes=frozenset({"int64"}), ranks=(1,)) -> TensorType:
    """Input ``i`` (a shape, axes or sizes tensor) must have one of ``dtypes`` and ``ranks``."""
    t = ctx.inputs[i]
    if t.dtype not in dtypes:
        raise ctx.error(f"{what} '{ctx.node.inputs[i]}' must be {' or '.join(sorted(dtypes))}, found {t.dtype}")
    if t.shape is not None and len(t.shape) not in ranks:
        raise ctx.error(f"{what} '{ctx.node.inputs[i]}' must have rank {' or '.join(map(str, ranks))}, found shape {list(t.shape)}")
    return t


def vector_length(t: TensorType) -> int | None:
    """Length of a 1-D tensor when known."""
    if t is None or t.shape is None or len(t.shape) != 1 or not isinstance(t.shape[0], int):
        return None
    return t.shape[0]


def dim_product(dims: Sequence[Dim]) -> Dim:
    """Product of dims: an int when all are known, the symbol when one symbol times 1s."""
    known = num_elements([d for d in dims if isinstance(d, int)])
    unknown = [d for d in dims if not isinstance(d, int)]
    if not unknown:
        return known
    if len(unknown) == 1 and known == 1 and isinstance(unknown[0], str):
        return unknown[0]
    return None


def rank_of(ctx: OpContext, i: int = 0) -> int | None:
    """Rank of input ``i`` when known."""
    t = ctx.inputs[i]
    return None if t is None or t.shape is None else len(t.shape)


def _axes(ctx: OpContext, axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    out = [normalize_axis(a, rank, ctx.node) for a in axes]
    if len(set(out)) != len(out):
        raise ctx.error(f"{what} {list(axes)} repeat an axis (rank {rank})")
    return out


def _fail(label: str, message: str) -> KernelError:
    return KernelError(f"{label}: {message}")


# ------------------------------------------------------------------------ Reshape
def reshape_dims(in_shape: Sequence[Dim] | None, target: Sequence[int], allowzero: int) -> tuple:
    """ONNX Reshape's output shape (0 copies the input dim unless ``allowzero``, -1 infers).

    Works on symbolic input dims; raises ValueError with the reason for an invalid target.
    """
    if sum(1 for t in target if t == -1) > 1:
        raise ValueError(f"shape {list(target)} has more than one -1")
    if any(t < -1 for t in target):
        raise ValueError(f"shape {list(target)} has a negative dim other than -1")
    if allowzero and 0 in target and -1 in target:
        raise ValueError(f"shape {list(target)} has both 0 and -1, which allowzero=1 makes ambiguous")
    out: list[Dim] = []
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            if in_shape is None:
                out.append(None)
            elif i >= len(in_shape):
                raise ValueError(f"shape {list(target)} copies dim {i} (0) but the input has rank {len(in_shape)}")
            else:
                out.append(in_shape[i])
        else:
            out.append(t)
    if in_shape is None:
        return tuple(None if d == -1 else d for d in out)
    rest = [d for d in out if d != -1]
    in_syms, out_syms = Counter(d for d in in_shape if not isinstance(d, int)), Counter(d for d in rest if not isinstance(d, int))
    certain = None not in in_syms and None not in out_syms and in_syms == out_syms
    in_known = num_elements([d for d in in_shape if isinstance(d, int)])
    out_known = num_elements([d for d in rest if isinstance(d, int)])
    if -1 in out:
        inferred: Dim = None
        if certain:
            if out_known == 0 or in_known % out_known:
                raise ValueError(f"cannot reshape {list(in_shape)} to {list(target)}: the sizes do not divide")
            inferred = in_known // out_known
        out = [inferred if d == -1 else d for d in out]
    elif certain and in_known != out_known:
        raise ValueError(f"cannot reshape {list(in_shape)} ({in_known} elements) to {list(out)} ({out_known} elements)")
    return tuple(out)


@shape_rule("Reshape")
def reshape_shape(ctx: OpContext, allowzero) -> list[TensorType]:
    x = ctx.inputs[0]
    s = check_index_input(ctx, 1, "shape")
    target = const_ints(ctx, 1)
    if target is None:
        n = vector_length(s)
        return [TensorType(x.dtype, None if n is None else (None,) * n)]
    try:
        return [TensorType(x.dtype, reshape_dims(x.shape, target, allowzero))]
    except ValueError as e:
        raise ctx.error(str(e)) from None


def with_static_shape(ctx: OpContext, general: Callable) -> Callable:
    """``general`` for a view-making op (Reshape family), preceded by a fast path for the
    compiled case: the static input shape and constant shape/axes inputs give a fixed output
    shape, so the call is one ``reshape`` (these ops are many and cheap, so per-call shape
    arithmetic is most of their cost)."""
    in_shape, out_shape = ctx.static_shape(0), ctx.static_out_shape(0)
    consts = list(ctx.values[1:])
    if in_shape is None or out_shape is None or any(
            v is None and ctx.has_input(i + 1) for i, v in enumerate(consts)):
        return general

    def static_fn(x, *rest):
        if x.shape == in_shape and all(r is c for r, c in zip(rest, consts)):
            return x.reshape(out_shape)
        return general(x, *rest)

    return static_fn


@kernel("Reshape", attrs={"allowzero": 0}, aliases=True)
def reshape(ctx: OpContext, allowzero):
    label = ctx.node.label

    def reshape_fn(x, shape):
        try:
            return x.reshape(reshape_dims(x.shape, [int(v) for v in shape], allowzero))
        except ValueError as e:
            raise _fail(label, str(e)) from None

    const = ctx.values[1]
    target = None if const is None else [int(v) for v in const.reshape(-1)]
    if ctx.static_shape(0) is None and target is not None and 0 not in target \
            and target.count(-1) <= 1 and all(t >= -1 for t in target):
        # a constant target without 0 means what numpy's reshape means (-1 inferred), so an
        # input of unknown shape needs no per-call shape arithmetic; an invalid reshape
        # goes the general way for its message
        target = tuple(target)

        def const_target_fn(x, shape):
            if shape is const:
                try:
                    return x.reshape(target)
                except ValueError:
                    pass
            return reshape_fn(x, shape)

        return const_target_fn
    return with_static_shape(ctx, reshape_fn)


# ------------------------------------------------------------------------ Flatten
@shape_rule("Flatten")
def flatten_shape(ctx: OpContext, axis) -> list[TensorType]:
    x = ctx.inputs[0]
    if x.shape is None:
        return [TensorType(x.dtype, (None, None))]
    # axis is in [-r, r]: a negative one counts from the end like any axis, r means "all"
    a = normalize_axis(axis, len(x.shape), ctx.node, allow_end=axis >= 0)
    return [TensorType(x.dtype, (dim_product(x.shape[:a]), dim_product(x.shape[a:])))]


@kernel("Flatten", attrs={"axis": 1}, aliases=True)
def flatten(ctx: OpContext, axis):
    def flatten_fn(x):
        a = axis + x.ndim if axis < 0 else axis
        return x.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), int(np.prod(x.shape[a:], dtype=np.int64)))

    return with_static_shape(ctx, flatten_fn)


# --------------------------------------------------------------- Squeeze/Unsqueeze
@shape_rule("Squeeze")
def squeeze_shape(ctx: OpContext) -> list[TensorType]:
    x = ctx.inputs[0]
    if ctx.has_input(1):
        check_index_input(ctx, 1, "axes", ranks=(0, 1))  # ORT accepts a scalar too
        axes = const_ints(ctx, 1)
        n = vector_length(ctx.inputs[1])
        if axes is None and n != 0:
            r = rank_of(ctx)
            return [TensorType(x.dtype, None if n is None or r is None else (None,) * (r - n))]
        axes = axes or None  # empty axes squeeze every 1, as when absent (ONNX Runtime reads it so)
    else:
        axes = None
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    if axes is None:
        if not all(isinstance(d, int) for d in x.shape):
            return [TensorType(x.dtype, None)]  # a symbolic dim may or may not be 1
        return [TensorType(x.dtype, tuple(d for d in x.shape if d != 1))]
    axes = _axes(ctx, axes, len(x.shape))
    for a in axes:
        if isinstance(x.shape[a], int) and x.shape[a] != 1:
            raise ctx.error(f"cannot squeeze axis {a} of size {x.shape[a]} (input shape {list(x.shape)})")
    return [TensorType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))]


@kernel("Squeeze", aliases=True)
def squeeze(ctx: OpContext):
    label = ctx.node.label

    def squeeze_fn(x, axes=None):
        if axes is None or axes.size == 0:
            return x.reshape(tuple(d for d in x.shape if d != 1))
        axes = np.reshape(axes, -1)
        picked = {int(a) + x.ndim if a < 0 else int(a) for a in axes}
        if any(not 0 <= a < x.ndim or x.shape[a] != 1 for a in picked):
            raise _fail(label, f"cannot squeeze axes {[int(a) for a in axes]} of shape {list(x.shape)}")
        return x.reshape(tuple(d for i, d in enumerate(x.shape) if i not in picked))

    return with_static_shape(ctx, squeeze_fn)


def unsqueeze_dims(shape: Sequence[Dim], axes: Sequence[int]) -> tuple:
    rank = len(shape) + len(axes)
    picked = set()
    for a in axes:
        n = a + rank if a < 0 else a
        if not 0 <= n < rank or n in picked:
            raise ValueError(f"axes {list(axes)} are out of range or repeated for output rank {rank}")
        picked.add(n)
    it = iter(shape)
    return tuple(1 if i in picked else next(it) for i in range(rank))


@shape_rule("Unsqueeze")
def unsqueeze_shape(ctx: OpContext) -> list[TensorType]:
    x = ctx.inputs[0]
    check_index_input(ctx, 1, "axes", ranks=(0, 1))  # ORT accepts a scalar too
    axes = const_ints(ctx, 1)
    if x.shape is None or axes is None:
        n, r = vector_length(ctx.inputs[1]), rank_of(ctx)
        return [TensorType(x.dtype, None if n is None or r is None else (None,) * (r + n))]
    try:
        return [TensorType(x.dtype, unsqueeze_dims(x.shape, axes))]
    except ValueError as e:
        raise ctx.error(str(e)) from None


@kernel("Unsqueeze", aliases=True)
def unsqueeze(ctx: OpContext):
    label = ctx.node.label

    def unsqueeze_fn(x, axes):
        try:
            return x.reshape(unsqueeze_dims(x.shape, [int(a) for a in np.reshape(axes, -1)]))
        except ValueError as e:
            raise _fail(label, str(e)) from None

    return with_static_shape(ctx, unsqueeze_fn)


# ---------------------------------------------------------------------- Transpose
def _perm(ctx: OpContext, perm, rank: int) -> list[int]:
    if perm is None:
        return list(range(rank))[::-1]
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(rank)):
        raise ctx.error(f"perm {perm} is not a permutation of the {rank} axes")
    return perm


@shape_rule("Transpose")
def transpose_shape(ctx: OpContext, perm) -> list[TensorType]:
    x = ctx.inputs[0]
    if x.shape is None:
        return [TensorType(x.dtype, None if perm is None else (None,) * len(perm))]
    p = _perm(ctx, perm, len(x.shape))
    return [TensorType(x.dtype, tuple(x.shape[i] for i in p))]


@kernel("Transpose", attrs={"perm": None}, aliases=True)
def transpose(ctx: OpContext, perm):
    axes = None if perm is None else tuple(int(p) for p in perm)

    # A view, not a copy: most consumers take any strides (GEMMs read a transposed operand
    # through BLAS's transpose flag; a Reshape copies only if it must), and a copy inside a
    # Loop body can repeat hundreds of times on loop-invariant tensors.
    def transpose_fn(x):
        return np.transpose(x, axes)

    return transpose_fn


# ------------------------------------------------------------------------- Concat
@shape_rule("Concat")
def concat_shape(ctx: OpContext, axis) -> list[TensorType]:
    ts = [t for t in ctx.inputs if t is not None]
    if not ts:
        raise ctx.error("needs at least one input")
    if len({t.dtype for t in ts}) > 1:
        raise ctx.error(f"inputs must share one dtype, found {[t.dtype for t in ts]}")
    shapes = [t.shape for t in ts if t.shape is not None]
    if not shapes:
        return [TensorType(ts[0].dtype, None)]
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ctx.error(f"inputs must share one rank, found shapes {[list(s) for s in shapes]}")
    a = normalize_axis(axis, rank, ctx.node)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[i] for s in shapes]
        if i == a:
            out.append(sum(dims) if len(shapes) == len(ts) and all(isinstance(d, int) for d in dims) else None)
            continue
        known = {d for d in dims if isinstance(d, int)}
        if len(known) > 1:
            raise ctx.error(f"inputs differ on axis {i}: shapes {[list(s) for s in shapes]} (concat axis {a})")
        out.append(known.pop() if known else (dims[0] if len(set(dims)) == 1 else None))
    return [TensorType(ts[0].dtype, tuple(out))]


@kernel("Concat", attrs={"axis": REQUIRED})
def concat(ctx: OpContext, axis):
    @writes_out
    def concat_fn(*xs, out=None):
        return np.concatenate(xs, axis=axis, out=out)

    return concat_fn


# -------------------------------------------------------------------------- Split
def split_sizes(dim: int, n_outputs: int, sizes: Sequence[int] | None, num_outputs) -> list[int]:
    """Sizes of Split's outputs along the axis; ValueError with the reason when invalid."""
    if sizes is not None:
        if len(sizes) != n_outputs or any(s < 0 for s in sizes) or sum(sizes) != dim:
            raise ValueError(f"split sizes {list(sizes)} do not cut a dim of {dim} into {n_outputs} outputs")
        return list(sizes)
    n = num_outputs if num_outputs is not None else n_outputs
    chunk = -(-dim // n)  # ceil: the last chunk is the smaller one when dim does not divide
    if num_outputs is None and dim % n:
        raise ValueError(f"a dim of {dim} does not split evenly into {n} outputs")
    out = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    if out[-1] < 0 or (out[-1] == 0 and dim):
        raise ValueError(f"a dim of {dim} cannot be split into {n} outputs of size {chunk}")
    return out


@shape_rule("Split")
def split_shape(ctx: OpContext, axis, num_outputs) -> list[TensorType]:
    x = ctx.inputs[0]
    n = len(ctx.node.outputs)
    if num_outputs is not None and num_outputs != n:
        raise ctx.error(f"num_outputs is {num_outputs} but the node has {n} outputs")
    if ctx.has_input(1):
        check_index_input(ctx, 1, "split")
        if num_outputs is not None:
            raise ctx.error("give either the split input or num_outputs, not both")
    if x.shape is None:
        return [TensorType(x.dtype, None)] * n
    a = normalize_axis(axis, len(x.shape), ctx.node)
    sizes = const_ints(ctx, 1)
    dim = x.shape[a]
    if ctx.has_input(1) and sizes is None:
        dims: list[Dim] = [None] * n
    elif isinstance(dim, int):
        try:
            dims = split_sizes(dim, n, sizes, num_outputs)
        except ValueError as e:
            raise ctx.error(str(e)) from None
    else:
        dims = list(sizes) if sizes is not None else [None] * n
    return [TensorType(x.dtype, x.shape[:a] + (d,) + x.shape[a + 1:]) for d in dims]


@kernel("Split", attrs={"axis": 0, "num_outputs": None}, aliases=True)
def split(ctx: OpContext, axis, num_outputs):
    label, n = ctx.node.label, len(ctx.node.outputs)

    def split_fn(x, sizes=None):
        a = axis + x.ndim if axis < 0 else axis
        try:
            parts = split_sizes(x.shape[a], n, None if sizes is None else [int(s) for s in sizes], num_outputs)
        except ValueError as e:
            raise _fail(label, str(e)) from None
        lead = (slice(None),) * a
        bounds = np.cumsum([0] + parts)
        return tuple(x[lead + (slice(int(b), int(e)),)] for b, e in zip(bounds[:-1], bounds[1:]))

    in_shape = ctx.static_shape(0)
    sizes_const = ctx.values[1] if ctx.has_input(1) else None
    if in_shape is None or (ctx.has_input(1) and sizes_const is None):
        return split_fn
    # static input shape and split sizes: the slices are fixed, each call only takes views
    a = normalize_axis(axis, len(in_shape), ctx.node)
    try:
        parts = split_sizes(in_shape[a], n, None if sizes_const is None else [int(v) for v in sizes_const], num_outputs)
    except ValueError:  # the run-time path reports it with the node
        return split_fn
    ends = np.cumsum(parts).tolist()
    index = [(slice(None),) * a + (slice(e - p, e),) for p, e in zip(parts, ends)]

    def static_split_fn(x, sizes=None):
        if x.shape == in_shape and sizes is sizes_const:
            return tuple([x[i] for i in index])
        return split_fn(x, sizes)

    return static_split_fn


# -------------------------------------------------------------------------- Slice
_INT64_MAX = (1 << 63) - 1


def slice_bounds(dim: int, start: int, end: int, step: int) -> tuple[slice, int]:
    """ONNX's clamping of one axis' start/end (INT64_MAX ends included): the python slice
    and the resulting length.

    One deviation, taken from ONNX Runtime: an end of INT64_MAX with a negative step means
    "through the first element" (the spec's clamp would make it dim-1, an empty slice), which
    is what exporters writing INT64_MAX for "no end" mean.
    """
    if step < 0 and end == _INT64_MAX:
        end = -dim - 1
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        length = max(0, -(-(end - start) // step))
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        length = max(0, -(-(start - end) // -step))
    if length == 0:
        return slice(0, 0), 0
    return slice(start, None if end < 0 else end, step), length


def _slice_params(ctx: OpContext, rank: int):
    """(starts, ends, axes, steps) from constants, or None when any is unknown."""
    starts, ends = const_ints(ctx, 1), const_ints(ctx, 2)
    axes = const_ints(ctx, 3) if ctx.has_input(3) else list(range(len(starts or ends or [])))
    steps = const_ints(ctx, 4) if ctx.has_input(4) else [1] * len(axes or [])
    if starts is None or ends is None or axes is None or steps is None:
        return None
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.error(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    if 0 in steps:
        raise ctx.error(f"steps {steps} contain 0")
    return starts, ends, _axes(ctx, axes, rank), steps


@shape_rule("Slice")
def slice_shape(ctx: OpContext) -> list[TensorType]:
    x = ctx.inputs[0]
    for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
        if ctx.has_input(i):
            check_index_input(ctx, i, what, INT_INDEX)
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    params = _slice_params(ctx, len(x.shape))
    if params is None:
        axes = const_ints(ctx, 3) if ctx.has_input(3) else None
        if axes is None:
            return [TensorType(x.dtype, (None,) * len(x.shape))]
        touched = set(_axes(ctx, axes, len(x.shape)))
        return [TensorType(x.dtype, tuple(None if i in touched else d for i, d in enumerate(x.shape)))]
    out = list(x.shape)
    for start, end, a, step in zip(*params):
        d = out[a]
        if isinstance(d, int):
            out[a] = slice_bounds(d, start, end, step)[1]
        elif not (start == 0 and step == 1 and end >= _INT64_MAX):
            out[a] = None  # keeps a symbol only for the whole axis
    return [TensorType(x.dtype, tuple(out))]


@kernel("Slice", aliases=True)
def slice_(ctx: OpContext):
    def slice_fn(x, starts, ends, axes=None, steps=None):
        return x[_slice_index(x.shape, starts, ends, axes, steps)]

    in_shape = ctx.static_shape(0)
    consts = list(ctx.values[1:5]) + [None] * (5 - len(ctx.values))
    if in_shape is None or ctx.values[1] is None or ctx.values[2] is None or any(
            consts[i] is None and ctx.has_input(i + 1) for i in range(4)):
        return slice_fn
    # the bounds are constants and the data shape static: one precomputed index
    try:
        index = _slice_index(in_shape, *consts)
    except Exception:  # an invalid constant: the run-time path reports it with the node
        return slice_fn
    c_starts, c_ends, c_axes, c_steps = consts

    def static_slice_fn(x, starts, ends, axes=None, steps=None):
        if x.shape == in_shape and starts is c_starts and ends is c_ends and axes is c_axes and steps is c_steps:
            return x[index]
        return slice_fn(x, starts, ends, axes, steps)

    return static_slice_fn


def _slice_index(shape: tuple, starts, ends, axes=None, steps=None) -> tuple:
    """The basic index of ONNX Slice on an array of ``shape``."""
    # tolist(): Python ints at once instead of one numpy scalar conversion per value
    starts, ends = starts.tolist(), ends.tolist()
    n, rank = len(starts), len(shape)
    axes = range(n) if axes is None else [a + rank if a < 0 else a for a in axes.tolist()]
    steps = [1] * n if steps is None else steps.tolist()
    index = [slice(None)] * rank
    for start, end, a, step in zip(starts, ends, axes, steps):
        index[a] = slice_bounds(shape[a], start, end, step)[0]
    return tuple(index)


# ------------------------------------------------------------------ Expand / Tile
@shape_rule("Expand")
def expand_shape(ctx: OpContext) -> list[TensorType]:
    x = ctx.inputs[0]
    check_index_input(ctx, 1, "shape")
    target = const_ints(ctx, 1)
    if target is None or x.shape is None:
        n, r = vector_length(ctx.inputs[1]), rank_of(ctx)
        return [TensorType(x.dtype, None if n is None or r is None else (None,) * max(n, r))]
    if any(t < 0 for t in target):
        raise ctx.error(f"shape {target} has a negative dim")
    return [TensorType(x.dtype, broadcast_shapes([x.shape, tuple(target)], ctx.node))]


@kernel("Expand")
def expand(ctx: OpContext):
    label = ctx.node.label

    @writes_out
    def expand_fn(x, shape, out=None):
        if out is None:
            out = np.empty(_broadcast_pair(label, x.shape, tuple(shape.tolist())), x.dtype)
        np.copyto(out, x)
        return out

    return expand_fn


def _broadcast_pair(label: str, a: tuple, b: tuple) -> tuple:
    """Multidirectional broadcast of two concrete shapes (np.broadcast_shapes costs ~3 us)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise _fail(label, f"shape {list(b)} does not broadcast with the input shape {list(a)}")
        out.append(y if x == 1 else x)
    return tuple(out)


@shape_rule("Tile")
def tile_shape(ctx: OpContext) -> list[TensorType]:
    x = ctx.inputs[0]
    check_index_input(ctx, 1, "repeats")
    reps = const_ints(ctx, 1)
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    if reps is None:
        return [TensorType(x.dtype, (None,) * len(x.shape))]
    if len(reps) != len(x.shape) or any(r < 0 for r in reps):
        raise ctx.error(f"repeats {reps} must be {len(x.shape)} non-negative values (input shape {list(x.shape)})")
    return [TensorType(x.dtype, tuple(d * r if isinstance(d, int) else (d if r == 1 else None) for d, r in zip(x.shape, reps)))]


@kernel("Tile")
def tile(ctx: OpContext):
    label = ctx.node.label

    def tile_fn(x, repeats):
        if len(repeats) != x.ndim:
            raise _fail(label, f"repeats {repeats.tolist()} must have one value per axis of shape {list(x.shape)}")
        return np.tile(x, tuple(int(r) for r in repeats))

    return tile_fn


# ---------------------------------------------------------------------------- Pad
_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _full_pads(pads: Sequence[int], axes: Sequence[int] | None, rank: int) -> tuple[list[int], list[int]]:
    axes = list(range(rank)) if axes is None else [a + rank if a < 0 else a for a in axes]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads {list(pads)} must hold 2 values per padded axis ({len(axes)} axes)")
    begin, end = [0] * rank, [0] * rank
    for j, a in enumerate(axes):
        if not 0 <= a < rank:
            raise ValueError(f"pad axis {a} is out of range for rank {rank}")
        begin[a], end[a] = pads[j], pads[j + len(axes)]
    return begin, end


@shape_rule("Pad")
def pad_shape(ctx: OpContext, mode) -> list[TensorType]:
    x = ctx.inputs[0]
    if mode not in _PAD_MODES:
        raise ctx.error(f"mode '{mode}' is not one of {', '.join(_PAD_MODES)}")
    check_index_input(ctx, 1, "pads")
    if ctx.has_input(3):
        check_index_input(ctx, 3, "axes", INT_INDEX)
    if ctx.has_input(2) and ctx.inputs[2].dtype != x.dtype:
        raise ctx.error(f"constant_value has dtype {ctx.inputs[2].dtype}, the data {x.dtype}")
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    pads = const_ints(ctx, 1)
    axes = const_ints(ctx, 3) if ctx.has_input(3) else None
    if pads is None or (ctx.has_input(3) and axes is None):
        return [TensorType(x.dtype, (None,) * len(x.shape))]
    try:
        begin, end = _full_pads(pads, axes, len(x.shape))
    except ValueError as e:
        raise ctx.error(str(e)) from None
    out = []
    for d, b, e in zip(x.shape, begin, end):
        if isinstance(d, int):
            if d + b + e < 0:
                raise ctx.error(f"pads {pads} crop more than the whole dim of size {d}")
            out.append(d + b + e)
        else:
            out.append(d if b == e == 0 else None)
    return [TensorType(x.dtype, tuple(out))]


@kernel("Pad", attrs={"mode": "constant"})
def pad(ctx: OpContext, mode):
    label = ctx.node.label

    @writes_out
    def pad_fn(x, pads, constant_value=None, axes=None, out=None):
        try:
            begin, end = _full_pads([int(p) for p in pads], None if axes is None else [int(a) for a in axes], x.ndim)
        except ValueError as e:
            raise _fail(label, str(e)) from None
        # negative pads crop first; what is left pads with non-negative widths
        x = x[tuple(slice(max(-b, 0), d + min(e, 0)) for d, b, e in zip(x.shape, begin, end))]
        widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
        if mode == "constant":
            if out is None:
                out = np.empty(tuple(d + b + e for d, (b, e) in zip(x.shape, widths)), x.dtype)
            empty = constant_value is None or constant_value.size == 0
            out.fill(0 if empty else constant_value.reshape(-1)[0])
            out[tuple(slice(b, b + d) for d, (b, _) in zip(x.shape, widths))] = x
            return out
        if x.size == 0 and any(b or e for b, e in widths):
            raise _fail(label, f"mode '{mode}' cannot pad an empty tensor of shape {list(x.shape)}")
        return deliver(np.pad(x, widths, mode=mode), out)

    in_shape = ctx.static_shape(0)
    c_pads, c_axes = ctx.values[1], ctx.values[3] if len(ctx.values) > 3 else None
    if mode == "constant" or in_shape is None or c_pads is None or (ctx.has_input(3) and c_axes is None) \
            or 0 in in_shape:
        return pad_fn
    try:
        begin, end = _full_pads([int(p) for p in c_pads], None if c_axes is None else [int(a) for a in c_axes],
                                len(in_shape))
    except ValueError:  # reported at run time
        return pad_fn
    # reflect/edge/wrap only remap indices, axis by axis as np.pad works: the map of each
    # padded axis is np.pad of an arange, computed once; a call is one take per padded axis
    takes = []
    try:
        for a, (d, b, e) in enumerate(zip(in_shape, begin, end)):
            if b or e:
                src = np.arange(d)[max(-b, 0):d + min(e, 0)]
                takes.append((a, np.pad(src, (max(b, 0), max(e, 0)), mode=mode)))
    except ValueError:  # e.g. cropped to nothing, then padded: reported at run time
        return pad_fn

    @writes_out
    def static_pad_fn(x, pads, constant_value=None, axes=None, out=None):
        if x.shape != in_shape or pads is not c_pads or axes is not c_axes:
            return pad_fn(x, pads, constant_value, axes, out=out)
        if not takes:
            return x.copy() if out is None else deliver(x, out)
        for k, (a, idx) in enumerate(takes):
            x = np.take(x, idx, axis=a, out=out if k == len(takes) - 1 else None, mode="clip")
        return x

    return static_pad_fn


# ------------------------------------------------------- DepthToSpace, SpaceToDepth
def _block_check(ctx: OpContext, blocksize, mode, to_space: bool) -> TensorType:
    x = ctx.inputs[0]
    if mode not in ("DCR", "CRD"):
        raise ctx.error(f"mode '{mode}' is not DCR or CRD")
    if not isinstance(blocksize, int) or blocksize < 1:
        raise ctx.error(f"blocksize must be a positive integer, found {blocksize!r}")
    if x.shape is not None and len(x.shape) != 4:
        raise ctx.error(f"input must be 4-D (N, C, H, W), found shape {list(x.shape)}")
    if x.shape is None:
        return TensorType(x.dtype, (None,) * 4)
    n, c, h, w = x.shape
    b2 = blocksize * blocksize

    def scaled(d, f):
        return d * f if isinstance(d, int) else None

    if to_space:
        if isinstance(c, int) and c % b2:
            raise ctx.error(f"channels {c} are not a multiple of blocksize^2 = {b2}")
        return TensorType(x.dtype, (n, c // b2 if isinstance(c, int) else None, scaled(h, blocksize), scaled(w, blocksize)))
    for d in (h, w):
        if isinstance(d, int) and d % blocksize:
            raise ctx.error(f"spatial dims {h}x{w} are not multiples of blocksize {blocksize}")
    return TensorType(
        x.dtype, (n, scaled(c, b2), h // blocksize if isinstance(h, int) else None, w // blocksize if isinstance(w, int) else None)
    )


@shape_rule("DepthToSpace")
def depth_to_space_shape(ctx: OpContext, blocksize, mode) -> list[TensorType]:
    return [_block_check(ctx, blocksize, mode, True)]


@kernel("DepthToSpace", attrs={"blocksize": REQUIRED, "mode": "DCR"})
def depth_to_space(ctx: OpContext, blocksize, mode):
    b = blocksize

    @writes_out
    def depth_to_space_fn(x, out=None):
        n, c, h, w = x.shape
        if mode == "DCR":
            y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        return deliver(y.reshape(n, c // (b * b), h * b, w * b), out)

    return depth_to_space_fn


@shape_rule("SpaceToDepth")
def space_to_depth_shape(ctx: OpContext, blocksize, mode) -> list[TensorType]:
    return [_block_check(ctx, blocksize, mode, False)]


@kernel("SpaceToDepth", attrs={"blocksize": REQUIRED, "mode": "DCR"})
def space_to_depth(ctx: OpContext, blocksize, mode):
    b = blocksize

    @writes_out
    def space_to_depth_fn(x, out=None):
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // b, b, w // b, b)
        y = y.transpose(0, 3, 5, 1, 2, 4) if mode == "DCR" else y.transpose(0, 1, 3, 5, 2, 4)
        return deliver(y.reshape(n, c * b * b, h // b, w // b), out)

    return space_to_depth_fn
