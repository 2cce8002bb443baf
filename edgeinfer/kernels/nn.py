"""Dense layers and normalizations: Gemm, MatMul, Einsum, Det, the Softmax family and the
Batch/Instance/Layer/Group/MeanVariance normalizations.

Gemm and MatMul kernels write their product straight into a preallocated output (``out=``)
and apply bias and scale in place; :mod:`.fused` reuses :func:`build_gemm` and
:func:`build_matmul` with an activation. Normalizations compute their statistics in float32
(or the ``stash_type``) whatever the input precision, as ONNX specifies.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .registry import REQUIRED, OpContext, kernel, shape_rule, writes_out
from .shapes import broadcast_dims, broadcast_shapes, normalize_axis
from .sparse import bind_sparse, csr_matmul

GEMM_ATTRS = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
_GEMM_COPY_MAX_BYTES = 8 << 20

# ONNX TensorProto codes accepted as stash_type
_STASH_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}


def _float_compute(dtype: np.dtype) -> np.dtype:
    """Precision for arithmetic on ``dtype``: float16 gets float32 (numpy has no fp16 BLAS)."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def _finish(y: np.ndarray, dtype: np.dtype, out: np.ndarray | None) -> np.ndarray:
    """Return ``y`` as ``dtype``, in ``out`` when one was given."""
    if out is not None:
        if y is not out:
            np.copyto(out, y, casting="unsafe")
        return out
    y = np.asarray(y)  # matmul of two vectors gives a numpy scalar
    return y if y.dtype == dtype else y.astype(dtype)


# ------------------------------------------------------------------------------- Gemm
@shape_rule("Gemm")
def gemm_shape(ctx: OpContext, alpha, beta, transA, transB):
    a, b = ctx.inputs[0], ctx.inputs[1]
    for name, t in (("A", a), ("B", b)):
        if t.shape is not None and len(t.shape) != 2:
            raise ctx.error(f"{name} must be 2-D, found shape {list(t.shape)}")
    # the output is always 2-D, even when an operand's rank is unknown
    m, ka = ((a.shape[1], a.shape[0]) if transA else tuple(a.shape)) if a.shape is not None else (None, None)
    kb, n = ((b.shape[1], b.shape[0]) if transB else tuple(b.shape)) if b.shape is not None else (None, None)
    if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
        raise ctx.error(f"inner dims differ: A {list(a.shape)} (transA={transA}) and "
                        f"B {list(b.shape)} (transB={transB})")
    c = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    if c is not None and c.shape is not None:
        if len(c.shape) > 2:
            raise ctx.error(f"C must have rank <= 2, found shape {list(c.shape)}")
        for want, have in zip((m, n)[2 - len(c.shape):], c.shape):
            if have != 1 and isinstance(have, int) and isinstance(want, int) and have != want:
                raise ctx.error(f"C of shape {list(c.shape)} does not broadcast to ({m}, {n})")
    return [TensorType(a.dtype, (m, n))]


def build_gemm(ctx: OpContext, attrs: dict, activation: Callable | None = None) -> Callable:
    """Kernel of Gemm and FusedGemm: ``fn(a, b, c=None, out=None)``."""
    alpha, beta = float(attrs["alpha"]), float(attrs["beta"])
    trans_a, trans_b = bool(attrs["transA"]), bool(attrs["transB"])
    b_const = ctx.values[1] if len(ctx.values) > 1 else None
    c_const = ctx.values[2] if len(ctx.values) > 2 else None
    dtype = np.dtype(ctx.inputs[0].dtype) if ctx.inputs[0] is not None else None
    floating = dtype is not None and dtype.kind == "f"
    cdt = _float_compute(dtype) if floating else dtype
    # fold alpha into a constant B, and beta into a constant C, once
    b_ready = None
    alpha_folded = False
    if b_const is not None and floating:
        bm = b_const.T if trans_b else b_const
        if alpha != 1.0:
            bm = (bm.astype(np.float64) * alpha).astype(cdt)
            alpha_folded = True
        # Large transposed weights stay a view that BLAS reads through its transpose flag:
        # a contiguous copy is ~25% faster for batch 1 but doubles the resident weights and
        # costs ~1 s to make on a VGG-sized FC layer. Batches > 1 multiply it the other way
        # round, at full speed (gemm_fn).
        b_ready = bm.astype(cdt, copy=False)
        if not b_ready.flags.c_contiguous and b_ready.nbytes <= _GEMM_COPY_MAX_BYTES:
            b_ready = np.ascontiguousarray(b_ready)
    # a mostly-zero constant weight at a small static batch: CSR (measured rule, .sparse)
    sparse_b = None
    if b_ready is not None and not trans_a and ctx.inputs[0].shape is not None:
        sparse_b = bind_sparse(b_ready, ctx.inputs[0].shape[0])
    c_ready = None
    if c_const is not None and floating:
        c_ready = (c_const.astype(np.float64) * beta).astype(cdt) if beta != 1.0 else c_const.astype(cdt)

    @writes_out
    def gemm_fn(a, b, c=None, out=None):
        am = a.T if trans_a else a
        if b is b_const and b_ready is not None:
            bm, scale = b_ready, 1.0 if alpha_folded else alpha
        else:
            bm, scale = (b.T if trans_b else b), alpha
        if a.dtype.kind != "f":  # integer Gemm: exact product, then the float scale factors
            y = np.matmul(am, bm)
            if scale != 1.0 or (c is not None and beta != 1.0):
                y = y * scale + (0 if c is None else beta * c)
            elif c is not None:
                y = y + c
            return _finish(np.asarray(y).astype(a.dtype, copy=False), a.dtype, out)
        work = _float_compute(a.dtype)
        direct = out is not None and out.dtype == work
        if sparse_b is not None and bm is b_ready and a.dtype == work:
            y = csr_matmul(am, sparse_b)
        elif bm is b_ready and not bm.flags.c_contiguous and am.shape[0] > 1:
            # the big weight kept transposed (see above): (B @ A^T)^T reads it in its own row
            # order, as fast as a contiguous copy would be (the view costs 60% more at M=20)
            t = np.matmul(bm.T, am.astype(work, copy=False).T)
            y = out if direct else np.empty((am.shape[0], bm.shape[1]), work)
            np.copyto(y, t.T)
        else:
            y = np.matmul(am.astype(work, copy=False), bm.astype(work, copy=False), out=out if direct else None)
        if scale != 1.0:
            y *= scale
        if c is not None:
            if c is c_const and c_ready is not None:
                y += c_ready
            else:
                y += c.astype(work, copy=False) * beta if beta != 1.0 else c
        if activation is not None:
            activation(y)
        return _finish(y, a.dtype, out)

    return gemm_fn


@kernel("Gemm", attrs=GEMM_ATTRS)
def gemm(ctx: OpContext, **attrs):
    return build_gemm(ctx, attrs)


# ----------------------------------------------------------------------------- MatMul
def matmul_type(ctx: OpContext) -> TensorType:
    a, b = ctx.inputs[0], ctx.inputs[1]
    if a.shape is None or b.shape is None:
        return TensorType(a.dtype, None)
    if not a.shape or not b.shape:
        raise ctx.error(f"MatMul inputs must have rank >= 1, found {list(a.shape)} and {list(b.shape)}")
    sa = (1,) + tuple(a.shape) if len(a.shape) == 1 else tuple(a.shape)
    sb = tuple(b.shape) + (1,) if len(b.shape) == 1 else tuple(b.shape)
    ka, kb = sa[-1], sb[-2]
    if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
        raise ctx.error(f"inner dims differ: A {list(a.shape)} and B {list(b.shape)}")
    batch = broadcast_shapes([sa[:-2], sb[:-2]], ctx.node)
    out = tuple(batch) + ((sa[-2],) if len(a.shape) > 1 else ()) + ((sb[-1],) if len(b.shape) > 1 else ())
    return TensorType(a.dtype, out)


@shape_rule("MatMul")
def matmul_shape(ctx: OpContext):
    return [matmul_type(ctx)]


def build_matmul(ctx: OpContext, activation: Callable | None = None, bias_input: int | None = None) -> Callable:
    """Kernel of MatMul and FusedMatMul: ``fn(a, b, [bias,] out=None)``; bias broadcasts."""
    label = ctx.node.label
    # the usual case, float32/float64 operands of one dtype: matmul straight into ``out``
    # (no astype calls, no work-dtype lookup); anything else takes the general path
    plain = {np.dtype(np.float32), np.dtype(np.float64)}

    def product(a, b, out):
        dt = a.dtype
        if dt is b.dtype and dt in plain and (out is None or out.dtype is dt):
            try:
                return np.matmul(a, b, out=out)
            except ValueError:
                pass  # reported below with the node
        work = _float_compute(a.dtype) if a.dtype.kind == "f" else a.dtype
        direct = out is not None and out.dtype == work
        try:
            y = np.matmul(a.astype(work, copy=False), b.astype(work, copy=False), out=out if direct else None)
        except ValueError as e:
            raise KernelError(f"{label}: cannot multiply shapes {list(a.shape)} and {list(b.shape)}: {e}") from e
        return y

    if bias_input is None and activation is None:
        @writes_out
        def matmul_fn(a, b, out=None):
            y = product(a, b, out)
            if y is out:
                return out
            return _finish(y, a.dtype, out)

        return matmul_fn

    @writes_out
    def fused_matmul_fn(a, b, bias=None, out=None):
        y = product(a, b, out)
        if bias is not None:
            y += bias
        if activation is not None:
            activation(y)
        return _finish(y, a.dtype, out)

    return fused_matmul_fn


@kernel("MatMul")
def matmul(ctx: OpContext):
    return build_matmul(ctx)


# ------------------------------------------------------------------------------ Einsum
def _einsum_output_shape(ctx: OpContext, equation: str, shapes: list):
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ctx.error(f"equation '{equation}' has {len(terms)} operands but the node has {len(shapes)} inputs")
    if any(s is None for s in shapes):
        return None
    dims: dict[str, object] = {}
    counts: dict[str, int] = {}
    ellipsis_shapes = []
    for term, shape in zip(terms, shapes):
        letters = term.replace("...", "")
        if "..." in term:
            head, _, tail = term.partition("...")
            n_ell = len(shape) - len(letters)
            if n_ell < 0:
                raise ctx.error(f"operand '{term}' has more subscripts than its rank {len(shape)}")
            ellipsis_shapes.append(tuple(shape[len(head):len(head) + n_ell]))
            own = tuple(shape[:len(head)]) + tuple(shape[len(head) + n_ell:])
        else:
            if len(letters) != len(shape):
                raise ctx.error(f"operand '{term}' has {len(letters)} subscripts but rank {len(shape)}")
            own = tuple(shape)
        for ch, d in zip(letters, own):
            if not ch.isalpha():
                raise ctx.error(f"equation '{equation}' has an invalid subscript '{ch}'")
            dims[ch] = broadcast_dims(dims[ch], d, ctx.node) if ch in dims else d
            counts[ch] = counts.get(ch, 0) + 1
    ell = broadcast_shapes(ellipsis_shapes, ctx.node) if ellipsis_shapes else ()
    if not arrow:
        rhs = ("..." if ellipsis_shapes else "") + "".join(sorted(ch for ch, c in counts.items() if c == 1))
    out: list = []
    head, has_ell, tail = rhs.partition("...")
    for ch in head + tail:
        if ch not in dims:
            raise ctx.error(f"output subscript '{ch}' of '{equation}' does not appear in any input")
    out = [dims[ch] for ch in head] + (list(ell) if has_ell else []) + [dims[ch] for ch in tail]
    return tuple(out)


@shape_rule("Einsum")
def einsum_shape(ctx: OpContext, equation: str):
    shapes = [t.shape if t is not None else None for t in ctx.inputs]
    return [TensorType(ctx.inputs[0].dtype, _einsum_output_shape(ctx, equation, shapes))]


@kernel("Einsum", attrs={"equation": REQUIRED})
def einsum(ctx: OpContext, equation: str):
    eq = equation.replace(" ", "")
    paths: dict[tuple, list] = {}

    def path_for(arrays) -> list:
        key = tuple(a.shape for a in arrays)
        p = paths.get(key)
        if p is None:
            # the contraction order is searched once per shape, not per call
            p = paths[key] = np.einsum_path(eq, *arrays, optimize="optimal")[0]
        return p

    static = [ctx.static_shape(i) for i in range(len(ctx.inputs))]
    if all(s is not None for s in static) and static:
        dummies = [np.empty(s, np.dtype(t.dtype)) for s, t in zip(static, ctx.inputs)]
        path_for(dummies)

    def einsum_fn(*arrays):
        y = np.asarray(np.einsum(eq, *arrays, optimize=path_for(arrays)), dtype=arrays[0].dtype)
        # einsum returns views for pure relabelings ("ij->ji", "ii->i"); kernels never alias inputs
        if any(np.may_share_memory(y, a) for a in arrays):
            y = y.copy()
        return y

    return einsum_fn


# --------------------------------------------------------------------------------- Det
@shape_rule("Det")
def det_shape(ctx: OpContext):
    x = ctx.inputs[0]
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    if len(x.shape) < 2:
        raise ctx.error(f"input must have rank >= 2, found shape {list(x.shape)}")
    a, b = x.shape[-2:]
    if isinstance(a, int) and isinstance(b, int) and a != b:
        raise ctx.error(f"input matrices must be square, found shape {list(x.shape)}")
    return [TensorType(x.dtype, tuple(x.shape[:-2]))]


@kernel("Det")
def det(ctx: OpContext):
    return lambda x: np.asarray(np.linalg.det(x), dtype=x.dtype)


# ------------------------------------------------------------------- Softmax family
def _same_as_input_with_axis(ctx: OpContext, axis: int):
    x = ctx.inputs[0]
    if x.shape is not None:
        normalize_axis(axis, max(len(x.shape), 1), ctx.node)
    return [x]


for _op in ("Softmax", "LogSoftmax", "Hardmax"):
    shape_rule(_op)(_same_as_input_with_axis)


def _axis_of(x: np.ndarray, axis: int) -> int:
    return axis + x.ndim if axis < 0 else axis


@kernel("Softmax", attrs={"axis": -1})
def softmax(ctx: OpContext, axis: int):
    @writes_out
    def softmax_fn(x, out=None):
        ax = _axis_of(x, axis)
        y = np.subtract(x, x.max(axis=ax, keepdims=True), out=out)
        np.exp(y, out=y)
        if ax == y.ndim - 1 and y.dtype in (np.float32, np.float64) and y.flags.c_contiguous and y.size:
            # the row sums as one matrix-vector product: BLAS beats numpy's reduction on rows
            totals = y.reshape(-1, y.shape[-1]) @ np.ones(y.shape[-1], y.dtype)
            y *= np.reciprocal(totals).reshape(y.shape[:-1] + (1,))
        else:
            y /= y.sum(axis=ax, keepdims=True)
        return y

    return softmax_fn


@kernel("LogSoftmax", attrs={"axis": -1})
def log_softmax(ctx: OpContext, axis: int):
    @writes_out
    def log_softmax_fn(x, out=None):
        ax = _axis_of(x, axis)
        y = np.subtract(x, x.max(axis=ax, keepdims=True), out=out)
        y -= np.log(np.exp(y).sum(axis=ax, keepdims=True))
        return y

    return log_softmax_fn


@kernel("Hardmax", attrs={"axis": -1})
def hardmax(ctx: OpContext, axis: int):
    @writes_out
    def hardmax_fn(x, out=None):
        ax = _axis_of(x, axis)
        y = np.zeros_like(x) if out is None else out
        if out is not None:
            y.fill(0)
        if x.size:
            np.put_along_axis(y, np.argmax(x, axis=ax, keepdims=True), 1, axis=ax)
        return y

    return hardmax_fn


# ------------------------------------------------------------------- normalizations
def _channel_shape(ndim: int) -> tuple:
    return (-1,) + (1,) * max(ndim - 2, 0)


@shape_rule("BatchNormalization")
def batch_norm_shape(ctx: OpContext, epsilon, momentum, training_mode):
    if training_mode not in (0, 1):
        raise ctx.error(f"attribute training_mode must be 0 or 1, found {training_mode}")
    if not training_mode and len([o for o in ctx.node.outputs if o]) > 1:
        raise ctx.error("running_mean/running_var outputs exist only with training_mode=1")
    if len(ctx.node.outputs) > 3:
        raise ctx.error(f"expects at most 3 outputs (Y, running_mean, running_var), found {len(ctx.node.outputs)}")
    x = ctx.inputs[0]
    if x.shape is not None and len(x.shape) < 2:
        raise ctx.error(f"input must have rank >= 2 (N, C, ...), found shape {list(x.shape)}")
    channels = x.shape[1] if x.shape is not None else None
    stats = ctx.inputs[3] if len(ctx.inputs) > 3 and ctx.inputs[3] is not None else x
    return [x] + [TensorType(stats.dtype, (channels,))] * (len(ctx.node.outputs) - 1)


@kernel("BatchNormalization", attrs={"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0})
def batch_norm(ctx: OpContext, epsilon: float, momentum: float, training_mode: int):
    eps = float(epsilon)
    if training_mode:
        return _batch_norm_training(len(ctx.node.outputs), eps, float(momentum))

    def fold(scale, bias, mean, var, dtype):
        k = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        return k.astype(dtype), (bias.astype(np.float64) - mean.astype(np.float64) * k).astype(dtype)

    consts = ctx.values[1:5]
    folded = None
    if all(v is not None for v in consts) and ctx.inputs[0] is not None:
        folded = fold(*consts, _float_compute(np.dtype(ctx.inputs[0].dtype)))

    @writes_out
    def batch_norm_fn(x, scale, bias, mean, var, out=None):
        work = _float_compute(x.dtype)
        if folded is not None and scale is consts[0] and bias is consts[1] and mean is consts[2] and var is consts[3]:
            k, b = folded
        else:
            k, b = fold(scale, bias, mean, var, work)
        shape = _channel_shape(x.ndim)
        direct = out is not None and out.dtype == work
        y = np.multiply(x, k.reshape(shape), out=out if direct else None, dtype=work)
        y += b.reshape(shape)
        return _finish(y, x.dtype, out)

    return batch_norm_fn


def _batch_norm_training(n_outputs: int, eps: float, momentum: float) -> Callable:
    """Training-mode BatchNormalization: normalize with the batch's own statistics (population
    variance, computed in float32 at least) and blend them into the running ones."""

    def batch_norm_training_fn(x, scale, bias, mean, var):
        work = _float_compute(x.dtype)
        axes = (0,) + tuple(range(2, x.ndim))
        y = x.astype(work)  # a copy: it becomes the output
        batch_mean = y.mean(axis=axes, keepdims=True)
        y -= batch_mean
        batch_var = np.mean(np.square(y), axis=axes, keepdims=True)
        shape = _channel_shape(x.ndim)
        y *= scale.astype(work, copy=False).reshape(shape) / np.sqrt(batch_var + eps)
        y += bias.astype(work, copy=False).reshape(shape)
        batch_mean, batch_var = batch_mean.reshape(-1), batch_var.reshape(-1)
        running_mean = mean * momentum + batch_mean.astype(mean.dtype) * (1 - momentum)
        running_var = var * momentum + batch_var.astype(var.dtype) * (1 - momentum)
        outs = (_finish(y, x.dtype, None), running_mean.astype(mean.dtype), running_var.astype(var.dtype))
        return outs[0] if n_outputs == 1 else outs[:n_outputs]

    return batch_norm_training_fn


def _normalize_rows(x: np.ndarray, eps: float) -> np.ndarray:
    """``x`` normalized over its last axis (a new array): the row sums are matrix-vector
    products, which BLAS does several times faster than numpy's reductions on short rows."""
    d = x.shape[-1]
    rows = x.reshape(-1, d)
    mean = rows @ np.full(d, 1.0 / d, x.dtype)
    centered = rows - mean[:, None]
    var = np.einsum("ij,ij->i", centered, centered)
    var *= 1.0 / d
    var += eps
    inv_std = np.sqrt(var, out=var)
    np.reciprocal(inv_std, out=inv_std)
    centered *= inv_std[:, None]
    return centered.reshape(x.shape)


def _normalize(x: np.ndarray, axes: tuple, eps: float, work) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalized x, mean, 1/std) over ``axes``, computed in ``work`` precision."""
    xw = x.astype(work, copy=False)
    mean = xw.mean(axis=axes, keepdims=True)
    centered = xw - mean
    var = np.mean(np.square(centered), axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    centered *= inv_std
    return centered, mean, inv_std


@shape_rule("InstanceNormalization")
def instance_norm_shape(ctx: OpContext, epsilon):
    x = ctx.inputs[0]
    if x.shape is not None and len(x.shape) < 3:
        raise ctx.error(f"input must have rank >= 3 (N, C, spatial...), found shape {list(x.shape)}")
    return [x]


@kernel("InstanceNormalization", attrs={"epsilon": 1e-5})
def instance_norm(ctx: OpContext, epsilon: float):
    @writes_out
    def instance_norm_fn(x, scale, bias, out=None):
        y, _, _ = _normalize(x, tuple(range(2, x.ndim)), float(epsilon), _float_compute(x.dtype))
        shape = _channel_shape(x.ndim)
        y *= scale.reshape(shape)
        y += bias.reshape(shape)
        return _finish(y, x.dtype, out)

    return instance_norm_fn


def _stash_dtype(ctx: OpContext, stash_type: int):
    if int(stash_type) not in _STASH_TYPES:
        raise ctx.error(f"stash_type {stash_type} is not supported (use 1 = float32, 10 = float16, 11 = float64)")
    return np.dtype(_STASH_TYPES[int(stash_type)])


@shape_rule("LayerNormalization")
def layer_norm_shape(ctx: OpContext, axis, epsilon, stash_type):
    x = ctx.inputs[0]
    stash = _stash_dtype(ctx, stash_type).name
    n_out = len(ctx.node.outputs)
    if x.shape is None:
        return [x] + [TensorType(stash, None)] * (n_out - 1)
    ax = normalize_axis(axis, len(x.shape), ctx.node)
    stat = tuple(x.shape[:ax]) + (1,) * (len(x.shape) - ax)
    return ([x] + [TensorType(stash, stat)] * 2)[:n_out]


@kernel("LayerNormalization", attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1})
def layer_norm(ctx: OpContext, axis: int, epsilon: float, stash_type: int):
    stash = _stash_dtype(ctx, stash_type)
    n_out = len(ctx.node.outputs)
    eps = float(epsilon)

    def normalized(x, scale, bias):
        ax = _axis_of(x, axis)
        if ax == x.ndim - 1 and x.dtype == stash and x.dtype in (np.float32, np.float64) and x.size:
            y = _normalize_rows(x, eps)
            mean = inv_std = None  # only the single-output form takes this path
        else:
            y, mean, inv_std = _normalize(x, tuple(range(ax, x.ndim)), eps, stash)
        y *= scale
        if bias is not None:
            y += bias
        return y, mean, inv_std

    if n_out > 1:
        def layer_norm_stats_fn(x, scale, bias=None):
            ax = _axis_of(x, axis)
            y, mean, inv_std = _normalize(x, tuple(range(ax, x.ndim)), eps, stash)
            y *= scale
            if bias is not None:
                y += bias
            return (y.astype(x.dtype, copy=False), mean, inv_std)[:n_out]

        return layer_norm_stats_fn

    @writes_out
    def layer_norm_fn(x, scale, bias=None, out=None):
        return _finish(normalized(x, scale, bias)[0], x.dtype, out)

    return layer_norm_fn


@shape_rule("GroupNormalization")
def group_norm_shape(ctx: OpContext, epsilon, num_groups, stash_type):
    x = ctx.inputs[0]
    _stash_dtype(ctx, stash_type)
    if x.shape is not None:
        if len(x.shape) < 3:
            raise ctx.error(f"input must have rank >= 3 (N, C, spatial...), found shape {list(x.shape)}")
        c = x.shape[1]
        if isinstance(c, int) and (num_groups < 1 or c % num_groups):
            raise ctx.error(f"{c} channels are not divisible into num_groups={num_groups}")
    return [x]


@kernel("GroupNormalization", attrs={"epsilon": 1e-5, "num_groups": REQUIRED, "stash_type": 1})
def group_norm(ctx: OpContext, epsilon: float, num_groups: int, stash_type: int):
    stash = _stash_dtype(ctx, stash_type)
    groups = int(num_groups)
    label = ctx.node.label

    @writes_out
    def group_norm_fn(x, scale, bias, out=None):
        n, c = x.shape[:2]
        if groups < 1 or c % groups:
            raise KernelError(f"{label}: {c} channels are not divisible into num_groups={groups}")
        y, _, _ = _normalize(x.reshape(n, groups, -1), (2,), float(epsilon), stash)
        y = y.reshape(x.shape)
        shape = _channel_shape(x.ndim)
        y *= scale.reshape(shape)
        y += bias.reshape(shape)
        return _finish(y, x.dtype, out)

    return group_norm_fn


@shape_rule("MeanVarianceNormalization")
def mvn_shape(ctx: OpContext, axes):
    x = ctx.inputs[0]
    if x.shape is not None:
        for a in axes:
            normalize_axis(a, len(x.shape), ctx.node)
    return [x]


@kernel("MeanVarianceNormalization", attrs={"axes": [0, 2, 3]})
def mean_variance_norm(ctx: OpContext, axes):
    @writes_out
    def mvn_fn(x, out=None):
        ax = tuple(sorted({_axis_of(x, int(a)) for a in axes}))
        xw = x.astype(_float_compute(x.dtype), copy=False)
        centered = xw - xw.mean(axis=ax, keepdims=True)
        std = np.sqrt(np.mean(np.square(centered), axis=ax, keepdims=True))
        centered /= std + 1e-9  # ONNX adds epsilon 1e-9 to the standard deviation
        return _finish(centered, x.dtype, out)

    return mvn_fn
