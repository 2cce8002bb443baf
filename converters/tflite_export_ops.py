"""The TFLite exporter's converters of elementwise, softmax, shape, reduction, normalization and
quantization-boundary ops (see :mod:`.tflite_export`).

Each converter is one function per op family, registered with :func:`~.tflite_export_state.converts`
in :data:`CONVERTERS` by ONNX op type, with its :data:`CHECKS` entry where a mapping exists only
under conditions; it writes through the :class:`~.tflite_export_state.Context` of the export.
Convolution, pooling, Gemm/MatMul, Resize and DepthToSpace/SpaceToDepth are in
:mod:`.tflite_export_nn`. ``CONVERTERS``, ``CHECKS``, ``Context``, ``QConst``, ``QInfo`` and
``TFL_DTYPES`` are re-exported from :mod:`.tflite_export_state` (the exporter reads them here).
"""
from __future__ import annotations

import numpy as np

from edgeinfer.errors import ExportError
from edgeinfer.graph import Graph, Node

from .tflite_export_state import (
    BINARY, CHECKS, CONVERTERS, NHWC, OP, TFL_DTYPES, Context, QConst, QInfo, _clip_bounds, _const_inputs,
    _qparam, attrs_of, converts, drop_axes, ident, inv, phys, reshape_layout, reshape_target, tfl,
)

__all__ = ["CHECKS", "CONVERTERS", "Context", "QConst", "QInfo", "TFL_DTYPES"]


# ------------------------------------------------------------------ elementwise
UNARY = {
    "Relu": OP.RELU, "Sigmoid": OP.LOGISTIC, "Tanh": OP.TANH, "Exp": OP.EXP, "Log": OP.LOG, "Sqrt": OP.SQRT,
    "Abs": OP.ABS, "Neg": OP.NEG, "Floor": OP.FLOOR, "Ceil": OP.CEIL, "Round": OP.ROUND, "Sin": OP.SIN,
    "Cos": OP.COS, "Elu": OP.ELU, "HardSwish": OP.HARD_SWISH, "Not": OP.LOGICAL_NOT, "Sign": OP.SIGN,
}
# int8 output parameters LiteRT's kernels require
_FIXED_QPARAMS = {"Sigmoid": (1 / 256, -128), "Tanh": (1 / 128, 0), "Softmax": (1 / 256, -128)}


@converts(*UNARY, check=None)
def unary(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    if n.op_type == "Elu" and abs(attrs_of(n)["alpha"] - 1.0) > 1e-7:
        raise ExportError(f"{n.label}: ELU with alpha != 1 has no TFLite form")
    idx = cx.get(x)
    t = cx.tensors[idx]
    out = cx.out(n.outputs[0], t.shape, cx.perm(x), fixed=_FIXED_QPARAMS.get(n.op_type))
    cx.emit(UNARY[n.op_type], [idx], [out])


def _elu_check(node, g, types):
    a = node.attrs.get("alpha", 1.0)
    return None if abs(a - 1.0) < 1e-7 else f"alpha={a} (LiteRT's ELU has alpha 1)"


CHECKS["Elu"] = _elu_check


@converts("Identity", "Dropout")
def identity(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    if x in cx.consts:
        cx.consts[n.outputs[0]] = cx.consts[x]
        return
    idx = cx.get(x)
    cx.alias(n.outputs[0], idx, cx.perm(x))
_BINARY_OPTIONS = {OP.ADD: tfl.AddOptionsT, OP.SUB: tfl.SubOptionsT, OP.MUL: tfl.MulOptionsT, OP.DIV: tfl.DivOptionsT}


def _mod_check(node, g, types):
    return "fmod=1 (LiteRT has only floor modulo)" if node.attrs.get("fmod", 0) else None


CHECKS["Mod"] = _mod_check


@converts(*BINARY)
def binary(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    rank = len(cx.shape(out_name))
    ins = [i for i in n.inputs if i]
    if n.op_type == "Pow" and cx.is_const(ins[1]) and not cx.qmode:
        e = cx.const(ins[1])
        if e.size == 1 and float(e.reshape(-1)[0]) in (1.0, 2.0, 0.5) and cx.shape(ins[0]) == cx.shape(out_name):
            v = float(e.reshape(-1)[0])
            x = cx.get(ins[0])
            t = cx.tensors[x]
            if v == 1.0:
                cx.alias(out_name, x, cx.perm(ins[0]))
                return
            out = cx.out(out_name, t.shape, cx.perm(ins[0]))
            if v == 2.0:
                cx.emit(OP.MUL, [x, x], [out], tfl.MulOptionsT())
            else:
                cx.emit(OP.SQRT, [x], [out])
            return
    perm = cx.common_perm(ins, rank)
    code = BINARY[n.op_type]
    acc = cx.operand(ins[0], rank, perm)
    for k, other in enumerate(ins[1:]):
        b = cx.operand(other, rank, perm)
        last = k == len(ins) - 2
        shape = phys(cx.shape(out_name), perm)
        opts = _BINARY_OPTIONS.get(code)
        if last:
            dtype = "bool" if code in (OP.EQUAL, OP.GREATER, OP.GREATER_EQUAL, OP.LESS, OP.LESS_EQUAL) else None
            out = cx.out(out_name, shape, perm, dtype=dtype)
        else:
            out = cx.new(shape, cx.dtype(out_name), f"{out_name}_part{k}")
        cx.emit(code, [acc, b], [out], opts() if opts else None)
        acc = out


@converts("Mean")
def variadic_mean(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    rank = len(cx.shape(out_name))
    perm = cx.common_perm(n.inputs, rank)
    acc = cx.operand(n.inputs[0], rank, perm)
    shape = phys(cx.shape(out_name), perm)
    for k, other in enumerate(n.inputs[1:]):
        nxt = cx.new(shape, cx.dtype(out_name), f"{out_name}_sum{k}")
        cx.emit(OP.ADD, [acc, cx.operand(other, rank, perm)], [nxt], tfl.AddOptionsT())
        acc = nxt
    out = cx.out(out_name, shape, perm)
    cx.emit(OP.MUL, [acc, cx.scalar(1.0 / len(n.inputs))], [out], tfl.MulOptionsT())


@converts("Where")
def where(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    rank = len(cx.shape(out_name))
    perm = cx.common_perm(n.inputs, rank)
    ins = [cx.operand(i, rank, perm) for i in n.inputs]
    cx.emit(OP.SELECT_V2, ins, [cx.out(out_name, phys(cx.shape(out_name), perm), perm)])


@converts("Reciprocal")
def reciprocal(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    out = cx.out(n.outputs[0], cx.tensors[x].shape, cx.perm(n.inputs[0]))
    cx.emit(OP.DIV, [cx.scalar(1.0), x], [out], tfl.DivOptionsT())


@converts("LeakyRelu")
def leaky_relu(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    out = cx.out(n.outputs[0], cx.tensors[x].shape, cx.perm(n.inputs[0]))
    cx.emit(OP.LEAKY_RELU, [x], [out], tfl.LeakyReluOptionsT(alpha=float(attrs_of(n)["alpha"])))


@converts("Gelu")
def gelu(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    out = cx.out(n.outputs[0], cx.tensors[x].shape, cx.perm(n.inputs[0]))
    cx.emit(OP.GELU, [x], [out], tfl.GeluOptionsT(approximate=attrs_of(n)["approximate"] == "tanh"))


def _clip_check(node: Node, g: Graph, types) -> str | None:
    """Constant bounds, or bounds computed at run time that are one value each (a Clip whose
    min/max come from the graph: MAXIMUM/MINIMUM with a broadcast scalar)."""
    for p in (1, 2):
        name = node.inputs[p] if len(node.inputs) > p else ""
        if name and name not in g.constants:
            t = types.get(name)
            if t is None or t.shape is None or any(not isinstance(d, int) for d in t.shape) or \
                    int(np.prod(t.shape, dtype=np.int64)) != 1:
                return f"input {p} ('{name}') must be a constant or one value at the export shapes"
    return None


@converts("Clip", check=_clip_check)
def clip(cx: Context, n: Node) -> None:
    dynamic = [p for p in (1, 2) if len(n.inputs) > p and n.inputs[p] and n.inputs[p] not in cx.consts]
    if dynamic:
        _clip_dynamic(cx, n)
        return
    lo, hi = _clip_bounds(cx, n)
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    perm = cx.perm(n.inputs[0])
    named = {(0.0, 6.0): OP.RELU6, (0.0, None): OP.RELU, (-1.0, 1.0): OP.RELU_N1_TO_1, (0.0, 1.0): OP.RELU_0_TO_1}
    code = named.get((lo, hi))
    if code is not None and (code != OP.RELU_0_TO_1 or not cx.qmode):
        cx.emit(code, [x], [cx.out(n.outputs[0], t.shape, perm)])
        return
    if cx.qmode:
        raise ExportError(f"{n.label}: a quantized Clip({lo}, {hi}) has no int8 TFLite form")
    cur = x
    if lo is not None:
        nxt = cx.new(t.shape, t.dtype, n.outputs[0] + "_lo") if hi is not None else cx.out(n.outputs[0], t.shape, perm)
        cx.emit(OP.MAXIMUM, [cur, cx.scalar(lo, t.dtype)], [nxt])
        cur = nxt
    if hi is not None:
        cx.emit(OP.MINIMUM, [cur, cx.scalar(hi, t.dtype)], [cx.out(n.outputs[0], t.shape, perm)])
    if lo is None and hi is None:
        cx.alias(n.outputs[0], x, perm)


def _clip_dynamic(cx: Context, n: Node) -> None:
    if cx.qmode:
        raise ExportError(f"{n.label}: a quantized Clip with bounds computed at run time has no int8 TFLite form")
    rank = len(cx.shape(n.inputs[0]))
    perm = cx.common_perm(n.inputs[:1], rank)
    x = cx.operand(n.inputs[0], rank, perm)
    t = cx.tensors[x]
    bounds = [(p, code) for p, code in ((1, OP.MAXIMUM), (2, OP.MINIMUM)) if len(n.inputs) > p and n.inputs[p]]
    cur = x
    for k, (p, code) in enumerate(bounds):
        name = n.inputs[p]
        if name in cx.consts:
            b = cx.scalar(float(cx.consts[name].reshape(-1)[0]), t.dtype)
        else:
            b = cx.operand(name, rank, perm)  # one value, broadcast against x
        last = k == len(bounds) - 1
        nxt = cx.out(n.outputs[0], t.shape, perm) if last else cx.new(t.shape, t.dtype, n.outputs[0] + "_lo")
        cx.emit(code, [cur, b], [nxt])
        cur = nxt


@converts("HardSigmoid")
def hard_sigmoid(cx: Context, n: Node) -> None:
    a = attrs_of(n)
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    perm = cx.perm(n.inputs[0])
    scaled = cx.new(t.shape, t.dtype, n.outputs[0] + "_scaled")
    cx.emit(OP.MUL, [x, cx.scalar(a["alpha"])], [scaled], tfl.MulOptionsT())
    shifted = cx.new(t.shape, t.dtype, n.outputs[0] + "_shifted")
    cx.emit(OP.ADD, [scaled, cx.scalar(a["beta"])], [shifted], tfl.AddOptionsT())
    # min(relu(y), 1) == relu(min(y, 1)); in this order the RELU fuses into the ADD
    rel = cx.new(t.shape, t.dtype, n.outputs[0] + "_relu")
    cx.emit(OP.RELU, [shifted], [rel])
    cx.emit(OP.MINIMUM, [rel, cx.scalar(1.0)], [cx.out(n.outputs[0], t.shape, perm)])


@converts("Softplus")
def softplus(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    e = cx.new(t.shape, t.dtype, n.outputs[0] + "_exp")
    cx.emit(OP.EXP, [x], [e])
    s = cx.new(t.shape, t.dtype, n.outputs[0] + "_1p")
    cx.emit(OP.ADD, [e, cx.scalar(1.0)], [s], tfl.AddOptionsT())
    cx.emit(OP.LOG, [s], [cx.out(n.outputs[0], t.shape, cx.perm(n.inputs[0]))])


# Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): erf(x) = sign(x) (1 - poly(t) e^{-x^2}), t = 1 / (1 + p|x|)
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@converts("Erf")
def erf(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    shape, f = t.shape, t.dtype
    name = n.outputs[0]

    def op(code, ins, tag, opts=None):
        o = cx.new(shape, f, f"{name}_{tag}")
        cx.emit(code, ins, [o], opts)
        return o

    ax = op(OP.ABS, [x], "abs")
    den = op(OP.ADD, [op(OP.MUL, [ax, cx.scalar(_ERF_P)], "px", tfl.MulOptionsT()), cx.scalar(1.0)], "den",
             tfl.AddOptionsT())
    tt = op(OP.DIV, [cx.scalar(1.0), den], "t", tfl.DivOptionsT())
    poly = op(OP.MUL, [tt, cx.scalar(_ERF_A[4])], "p4", tfl.MulOptionsT())
    for k, a in enumerate(reversed(_ERF_A[:4])):
        poly = op(OP.ADD, [poly, cx.scalar(a)], f"a{k}", tfl.AddOptionsT())
        poly = op(OP.MUL, [poly, tt], f"m{k}", tfl.MulOptionsT())
    sq = op(OP.MUL, [x, x], "sq", tfl.MulOptionsT())
    ex = op(OP.EXP, [op(OP.NEG, [sq], "nsq")], "exp")
    one_minus = op(OP.SUB, [cx.scalar(1.0), op(OP.MUL, [poly, ex], "pe", tfl.MulOptionsT())], "om", tfl.SubOptionsT())
    sign = op(OP.SIGN, [x], "sign")
    cx.emit(OP.MUL, [sign, one_minus], [cx.out(name, shape, cx.perm(n.inputs[0]))], tfl.MulOptionsT())


@converts("Cast")
def cast(cx: Context, n: Node) -> None:
    to = attrs_of(n)["to"]
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    if to == t.dtype:
        cx.alias(n.outputs[0], x, cx.perm(n.inputs[0]))
        return
    out = cx.out(n.outputs[0], t.shape, cx.perm(n.inputs[0]), dtype=to)
    cx.emit(OP.CAST, [x], [out], tfl.CastOptionsT(inDataType=TFL_DTYPES[t.dtype], outDataType=TFL_DTYPES[to]))


def _cast_check(node, g, types):
    to = node.attrs.get("to")
    return None if to in TFL_DTYPES else f"cast to {to}"


CHECKS["Cast"] = _cast_check


# ------------------------------------------------------------------ softmax
def _last_axis_layout(perm, axis) -> tuple:
    return tuple(a for a in perm if a != axis) + (axis,)


@converts("Softmax", "LogSoftmax")
def softmax(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    axis = attrs_of(n)["axis"] % rank
    perm = cx.perm(x)
    if inv(perm)[axis] != rank - 1:
        perm = _last_axis_layout(perm, axis)
    idx = cx.get(x, perm, why=f"{n.op_type} works on the last axis")
    shape = cx.tensors[idx].shape
    if n.op_type == "Softmax":
        out = cx.out(n.outputs[0], shape, perm, fixed=_FIXED_QPARAMS["Softmax"])
        cx.emit(OP.SOFTMAX, [idx], [out], tfl.SoftmaxOptionsT(beta=1.0))
    else:
        cx.emit(OP.LOG_SOFTMAX, [idx], [cx.out(n.outputs[0], shape, perm)], tfl.LogSoftmaxOptionsT())


# ------------------------------------------------------------------ shape ops
def _static_out(node, g, types) -> str | None:
    for o in node.outputs:
        t = types.get(o)
        if o and (t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape)):
            return f"output '{o}' has no static shape at the export input shapes"
    return None


def _reshape_check(node, g, types):
    return _static_out(node, g, types)


@converts("Reshape", "Flatten", "Squeeze", "Unsqueeze", check=_reshape_check)
def reshape(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    in_shape, out_shape = cx.shape(x), cx.shape(out_name)
    if x in cx.consts and not cx.qmode:
        cx.consts[out_name] = cx.consts[x].reshape(out_shape)
        return
    perm = cx.perm(x)
    q = reshape_layout(in_shape, perm, out_shape)
    if q is None and _flatten_into_weights(cx, n, in_shape, perm, out_shape):
        return
    if q is None:
        # reorder the input once: either close to its layout or to the logical order,
        # whichever leaves fewer transposes for the readers of the result
        options = []
        for cand in (reshape_target(in_shape, perm, out_shape), ident(len(in_shape))):
            cq = reshape_layout(in_shape, cand, out_shape)
            if cq is not None:
                options.append((cx.transposes_downstream(out_name, cq), len(options), cand, cq))
        _, _, perm, q = min(options)
    idx = cx.get(x, perm, why=f"{n.op_type} to {list(out_shape)} merges or splits dims in logical order")
    new_shape = phys(out_shape, q)
    if new_shape == cx.tensors[idx].shape and len(new_shape) == len(cx.tensors[idx].shape):
        cx.alias(out_name, idx, q)
        return
    out = cx.out(out_name, new_shape, q, same_as=idx)
    cx.emit(OP.RESHAPE, [idx, cx.i32(new_shape)], [out], tfl.ReshapeOptionsT(newShape=new_shape))


def _flatten_into_weights(cx: Context, n: Node, in_shape, perm, out_shape) -> bool:
    """A flatten to [N, K] read only by fully connected layers with constant weights: flatten
    the physical order and permute the weights' K columns instead of the data."""
    out_name = n.outputs[0]
    if len(out_shape) != 2 or perm[0] != 0 or out_shape[0] != in_shape[0] or out_name in cx._graph_outputs:
        return False
    users = cx.consumers.get(out_name, [])
    for u in users:
        if u.op_type == "Gemm" and u.inputs[0] == out_name and not u.attrs.get("transA", 0):
            w = u.inputs[1]
        elif u.op_type == "MatMul" and u.inputs[0] == out_name:
            w = u.inputs[1]
        else:
            return False
        if not (w in cx.consts or w in cx.q.consts) or u.inputs[1] == out_name:
            return False
    if not users:
        return False
    rest = [a - 1 for a in perm[1:]]
    cols = np.arange(int(np.prod(in_shape[1:])), dtype=np.int64).reshape(in_shape[1:]).transpose(rest).reshape(-1)
    idx = cx.get(n.inputs[0])
    shape = [int(d) for d in out_shape]
    out = cx.out(out_name, shape, (0, 1), same_as=idx)
    cx.emit(OP.RESHAPE, [idx, cx.i32(shape)], [out], tfl.ReshapeOptionsT(newShape=shape))
    for qo in [out_name] + [u.outputs[0] for u in cx.consumers.get(out_name, []) if u.op_type == "QuantizeLinear"]:
        cx.col_perm[qo] = cols
    return True


@converts("Transpose")
def transpose(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    t = attrs_of(n)["perm"] or list(range(rank))[::-1]
    t = [a % rank for a in t]
    if x in cx.consts and not cx.qmode:
        cx.consts[n.outputs[0]] = cx.consts[x].transpose(t)
        return
    p = cx.perm(x)
    it = inv(t)
    absorbed = tuple(it[a] for a in p)
    if absorbed != ident(rank):
        # relabelling is free here but may cost transposes further on; writing the TRANSPOSE
        # now costs one and leaves the logical order
        later = cx.transposes_downstream(n.outputs[0], absorbed)
        if later > 1 + cx.transposes_downstream(n.outputs[0], ident(rank)):
            src = cx.get(x, tuple(t), why=f"writing the Transpose saves {later - 1} later one(s)")
            cx.alias(n.outputs[0], src, ident(rank))
            return
    cx.alias(n.outputs[0], cx.get(x), absorbed)


@converts("Concat")
def concat(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    rank = len(cx.shape(out_name))
    axis = attrs_of(n)["axis"] % rank
    ins = [i for i in n.inputs if i and int(np.prod(cx.shape(i))) > 0]
    perm = cx.common_perm(ins, rank)
    idxs = [cx.get(i, perm, why="Concat inputs share one layout") for i in ins]
    shape = phys(cx.shape(out_name), perm)
    out = cx.out(out_name, shape, perm)
    if cx.qmode:
        o = cx.tensors[out]
        idxs = [cx.requantized(i, o.scale, o.zero_point) for i in idxs]
    cx.emit(OP.CONCATENATION, idxs, [out], tfl.ConcatenationOptionsT(axis=inv(perm)[axis]))


@converts("Split", check=_const_inputs(1))
def split(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    axis = attrs_of(n)["axis"] % rank
    perm = cx.perm(x)
    idx = cx.get(x)
    sizes = [cx.shape(o)[axis] for o in n.outputs]
    outs = [cx.out(o, phys(cx.shape(o), perm), perm, same_as=idx) for o in n.outputs]
    cx.emit(OP.SPLIT_V, [idx, cx.i32(sizes), cx.constant(np.array(inv(perm)[axis], np.int32))], outs,
            tfl.SplitVOptionsT(numSplits=len(outs)))


@converts("Slice", check=_const_inputs(1, 2, 3, 4))
def slice_(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    shape = cx.shape(x)
    rank = len(shape)
    starts, ends = cx.const(n.inputs[1]).tolist(), cx.const(n.inputs[2]).tolist()
    axes = cx.const(n.inputs[3]).tolist() if len(n.inputs) > 3 and n.inputs[3] else list(range(len(starts)))
    steps = cx.const(n.inputs[4]).tolist() if len(n.inputs) > 4 and n.inputs[4] else [1] * len(starts)
    spec = {a % rank: slice(int(s), int(e), int(st)) for s, e, a, st in zip(starts, ends, axes, steps)}
    if x in cx.consts and not cx.qmode:
        cx.consts[out_name] = cx.consts[x][tuple(spec.get(a, slice(None)) for a in range(rank))]
        return
    perm = cx.perm(x)
    begin, end, stride, end_mask = [], [], [], 0
    for i, a in enumerate(perm):
        b, e, s = spec.get(a, slice(None)).indices(shape[a])
        if s < 0 and e < 0:
            end_mask |= 1 << i
            e = 0
        begin.append(b), end.append(e), stride.append(s)
    idx = cx.get(x)
    out = cx.out(out_name, phys(cx.shape(out_name), perm), perm, same_as=idx)
    cx.emit(OP.STRIDED_SLICE, [idx, cx.i32(begin), cx.i32(end), cx.i32(stride)], [out],
            tfl.StridedSliceOptionsT(endMask=end_mask))


@converts("Gather")
def gather(cx: Context, n: Node) -> None:
    x, ind, out_name = n.inputs[0], n.inputs[1], n.outputs[0]
    rank = cx.rank(x)
    axis = attrs_of(n)["axis"] % rank
    if x in cx.consts and ind in cx.consts and not cx.qmode:
        cx.consts[out_name] = np.take(cx.consts[x], cx.consts[ind], axis=axis)
        return
    k = len(cx.shape(ind))
    perm = cx.perm(x) if x not in cx.consts else ident(rank)
    idx = cx.get(x, perm)
    if ind in cx.consts:
        v = cx.consts[ind].astype(np.int64)
        v = np.where(v < 0, v + cx.shape(x)[axis], v).astype(np.int32)
        ii = cx.constant(v, ind)
    else:
        ii = cx.get(ind, ident(k), why="Gather indices are read in logical order")
    out_perm = []
    for a in perm:
        if a == axis:
            out_perm.extend(range(axis, axis + k))
        else:
            out_perm.append(a if a < axis else a + k - 1)
    out_perm = tuple(out_perm)
    out = cx.out(out_name, phys(cx.shape(out_name), out_perm), out_perm, same_as=idx)
    cx.emit(OP.GATHER, [idx, ii], [out], tfl.GatherOptionsT(axis=inv(perm)[axis]))


@converts("Expand", check=_const_inputs(1))
def expand(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    shape = cx.shape(out_name)
    rank = len(shape)
    perm = cx.common_perm([n.inputs[0]], rank)
    x = cx.operand(n.inputs[0], rank, perm)
    target = phys(shape, perm)
    if cx.tensors[x].shape == target:
        cx.alias(out_name, x, perm)
        return
    cx.emit(OP.BROADCAST_TO, [x, cx.i32(target)], [cx.out(out_name, target, perm)])


@converts("Tile", check=_const_inputs(1))
def tile(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    perm = cx.perm(x)
    reps = cx.const(n.inputs[1]).tolist()
    idx = cx.get(x)
    cx.emit(OP.TILE, [idx, cx.i32([reps[a] for a in perm])],
            [cx.out(n.outputs[0], phys(cx.shape(n.outputs[0]), perm), perm)])


@converts("Pad", check=_const_inputs(1, 2, 3))
def pad(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    rank = cx.rank(x)
    a = attrs_of(n)
    pads = cx.const(n.inputs[1]).astype(np.int64).tolist()
    axes = cx.const(n.inputs[3]).tolist() if len(n.inputs) > 3 and n.inputs[3] else list(range(rank))
    full = [[0, 0] for _ in range(rank)]
    for k, ax in enumerate(axes):
        full[ax % rank] = [pads[k], pads[k + len(axes)]]
    if any(p < 0 for pr in full for p in pr):
        raise ExportError(f"{n.label}: negative pads (cropping) are not supported")
    perm = cx.perm(x)
    idx = cx.get(x)
    paddings = cx.constant(np.array([full[ax] for ax in perm], np.int32), "paddings")
    out = cx.out(out_name, phys(cx.shape(out_name), perm), perm, same_as=idx)
    mode = a["mode"]
    if mode == "reflect":
        cx.emit(OP.MIRROR_PAD, [idx, paddings], [out], tfl.MirrorPadOptionsT(mode=tfl.MirrorPadMode.REFLECT))
        return
    value = cx.const(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else None
    if value is None or float(value.reshape(-1)[0]) == 0.0:
        cx.emit(OP.PAD, [idx, paddings], [out], tfl.PadOptionsT())
    else:
        cx.emit(OP.PADV2, [idx, paddings, cx.scalar(value.reshape(-1)[0], cx.tensors[idx].dtype)], [out],
                tfl.PadV2OptionsT())


def _pad_check(node, g, types):
    why = _const_inputs(1, 2, 3)(node, g, types)
    if why:
        return why
    mode = node.attrs.get("mode", "constant")
    return None if mode in ("constant", "reflect") else f"mode '{mode}'"


CHECKS["Pad"] = _pad_check


# ------------------------------------------------------------------ reductions
REDUCE = {"ReduceMean": OP.MEAN, "ReduceSum": OP.SUM, "ReduceMax": OP.REDUCE_MAX, "ReduceMin": OP.REDUCE_MIN,
          "ReduceProd": OP.REDUCE_PROD, "ReduceL2": OP.SUM, "ReduceSumSquare": OP.SUM}


def _reduce_axes(cx: Context, n: Node, rank: int) -> list[int]:
    a = attrs_of(n)
    axes = a.get("axes")
    if len(n.inputs) > 1 and n.inputs[1]:
        axes = cx.const(n.inputs[1]).tolist()
    if not axes:
        return [] if a.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted({int(ax) % rank for ax in axes})


@converts(*REDUCE, check=_const_inputs(1))
def reduce(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    rank = cx.rank(x)
    axes = _reduce_axes(cx, n, rank)
    keep = bool(attrs_of(n)["keepdims"])
    perm = cx.perm(x)
    idx = cx.get(x)
    if not axes:
        cx.alias(out_name, idx, perm)
        return
    out_perm = perm if keep else drop_axes(perm, axes)
    shape = phys(cx.shape(out_name), out_perm)
    src = idx
    if n.op_type in ("ReduceL2", "ReduceSumSquare"):
        src = cx.new(cx.tensors[idx].shape, cx.tensors[idx].dtype, out_name + "_sq")
        cx.emit(OP.MUL, [idx, idx], [src], tfl.MulOptionsT())
    phys_axes = sorted(inv(perm)[ax] for ax in axes)
    if n.op_type == "ReduceL2":
        mid = cx.new(shape, cx.tensors[idx].dtype, out_name + "_sum")
        cx.emit(OP.SUM, [src, cx.i32(phys_axes)], [mid], tfl.ReducerOptionsT(keepDims=keep))
        cx.emit(OP.SQRT, [mid], [cx.out(out_name, shape, out_perm)])
        return
    out = cx.out(out_name, shape, out_perm, same_as=idx if n.op_type in ("ReduceMax", "ReduceMin") else None)
    cx.emit(REDUCE[n.op_type], [src, cx.i32(phys_axes)], [out], tfl.ReducerOptionsT(keepDims=keep))


@converts("GlobalAveragePool", "GlobalMaxPool")
def global_pool(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    layout = NHWC if rank == 4 else (0,) + tuple(range(2, rank)) + (1,)
    idx = cx.get(x, layout, why=f"{n.op_type} pools the spatial axes of a channels-last tensor")
    shape = phys(cx.shape(n.outputs[0]), layout)
    code = OP.MEAN if n.op_type == "GlobalAveragePool" else OP.REDUCE_MAX
    out = cx.out(n.outputs[0], shape, layout, same_as=idx if code == OP.REDUCE_MAX else None)
    cx.emit(code, [idx, cx.i32(list(range(1, rank - 1)))], [out], tfl.ReducerOptionsT(keepDims=True))


@converts("ArgMax", "ArgMin")
def argmax(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    rank = cx.rank(x)
    a = attrs_of(n)
    axis = a["axis"] % rank
    perm = cx.perm(x)
    idx = cx.get(x)
    dropped = drop_axes(perm, [axis])
    flat = phys([d for i, d in enumerate(cx.shape(x)) if i != axis], dropped)
    code, opts = ((OP.ARG_MAX, tfl.ArgMaxOptionsT) if n.op_type == "ArgMax" else (OP.ARG_MIN, tfl.ArgMinOptionsT))
    if a["keepdims"]:
        mid = cx.new(flat, "int64", out_name + "_flat")
        cx.emit(code, [idx, cx.constant(np.array([inv(perm)[axis]], np.int32))], [mid],
                opts(outputType=tfl.TensorType.INT64))
        shape = phys(cx.shape(out_name), perm)
        cx.emit(OP.RESHAPE, [mid, cx.i32(shape)], [cx.out(out_name, shape, perm, dtype="int64")],
                tfl.ReshapeOptionsT(newShape=shape))
    else:
        cx.emit(code, [idx, cx.constant(np.array([inv(perm)[axis]], np.int32))],
                [cx.out(out_name, flat, dropped, dtype="int64")], opts(outputType=tfl.TensorType.INT64))


def _argmax_check(node, g, types):
    return "select_last_index=1" if node.attrs.get("select_last_index", 0) else None


CHECKS["ArgMax"] = CHECKS["ArgMin"] = _argmax_check


# ------------------------------------------------------------------ normalization
def _channel_vector(v: np.ndarray, rank: int, perm) -> np.ndarray:
    """A per-channel (axis 1) vector as a rank-``rank`` constant in layout ``perm``."""
    shape = [1] * rank
    shape[1] = v.size
    return np.ascontiguousarray(v.astype(np.float32).reshape(shape).transpose(perm))


@converts("BatchNormalization", check=_const_inputs(1, 2, 3, 4))
def batch_norm(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    scale, bias, mean, var = (cx.const(i).astype(np.float64) for i in n.inputs[1:5])
    k = scale / np.sqrt(var + attrs_of(n)["epsilon"])
    perm = cx.perm(x)
    idx = cx.get(x)
    shape = cx.tensors[idx].shape
    mid = cx.new(shape, "float32", n.outputs[0] + "_scaled")
    cx.emit(OP.MUL, [idx, cx.constant(_channel_vector(k, rank, perm), "bn_scale")], [mid], tfl.MulOptionsT())
    cx.emit(OP.ADD, [mid, cx.constant(_channel_vector(bias - mean * k, rank, perm), "bn_shift")],
            [cx.out(n.outputs[0], shape, perm)], tfl.AddOptionsT())


def _normalize(cx: Context, name: str, idx: int, phys_axes: list[int], eps: float) -> int:
    """(x - mean) / sqrt(var + eps) over ``phys_axes``, as primitive ops; returns the result."""
    t = cx.tensors[idx]
    red = [1 if i in phys_axes else d for i, d in enumerate(t.shape)]

    def op(code, ins, shape, tag, opts=None):
        o = cx.new(shape, "float32", f"{name}_{tag}")
        cx.emit(code, ins, [o], opts)
        return o

    axes = cx.i32(phys_axes)
    mean = op(OP.MEAN, [idx, axes], red, "mean", tfl.ReducerOptionsT(keepDims=True))
    centered = op(OP.SUB, [idx, mean], t.shape, "centered", tfl.SubOptionsT())
    sq = op(OP.MUL, [centered, centered], t.shape, "sq", tfl.MulOptionsT())
    var = op(OP.MEAN, [sq, axes], red, "var", tfl.ReducerOptionsT(keepDims=True))
    rstd = op(OP.RSQRT, [op(OP.ADD, [var, cx.scalar(eps)], red, "var_eps", tfl.AddOptionsT())], red, "rstd")
    return op(OP.MUL, [centered, rstd], t.shape, "normed", tfl.MulOptionsT())


@converts("InstanceNormalization", check=_const_inputs(1, 2))
def instance_norm(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    layout = (0,) + tuple(range(2, rank)) + (1,)
    idx = cx.get(x, layout, why="InstanceNormalization normalizes the spatial axes of a channels-last tensor")
    normed = _normalize(cx, n.outputs[0], idx, list(range(1, rank - 1)), attrs_of(n)["epsilon"])
    shape = cx.tensors[idx].shape
    scaled = cx.new(shape, "float32", n.outputs[0] + "_scaled")
    cx.emit(OP.MUL, [normed, cx.constant(_channel_vector(cx.const(n.inputs[1]), rank, layout))], [scaled],
            tfl.MulOptionsT())
    cx.emit(OP.ADD, [scaled, cx.constant(_channel_vector(cx.const(n.inputs[2]), rank, layout))],
            [cx.out(n.outputs[0], shape, layout)], tfl.AddOptionsT())


@converts("LayerNormalization", check=_const_inputs(1, 2))
def layer_norm(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    shape = cx.shape(x)
    rank = len(shape)
    a = attrs_of(n)
    axis = a["axis"] % rank
    perm = cx.perm(x)
    idx = cx.get(x)
    normed = _normalize(cx, n.outputs[0], idx, sorted(inv(perm)[ax] for ax in range(axis, rank)), a["epsilon"])
    cur = normed
    full = (1,) * axis + tuple(shape[axis:])
    pshape = cx.tensors[idx].shape
    extra = [i for i in n.inputs[1:3] if i]
    for k, (name, code, opts) in enumerate(zip(extra, (OP.MUL, OP.ADD), (tfl.MulOptionsT, tfl.AddOptionsT))):
        v = np.broadcast_to(cx.const(name).astype(np.float32), shape[axis:]).reshape(full).transpose(perm)
        last = k == len(extra) - 1
        o = cx.out(n.outputs[0], pshape, perm) if last else cx.new(pshape, "float32", n.outputs[0] + "_scaled")
        cx.emit(code, [cur, cx.constant(np.ascontiguousarray(v), name)], [o], opts())
        cur = o
    if not extra:
        cx.alias(n.outputs[0], normed, perm)


@converts("LRN")
def lrn(cx: Context, n: Node) -> None:
    a = attrs_of(n)
    size = int(a["size"])
    idx = cx.get(n.inputs[0], NHWC, why="LRN normalizes across channels, the last axis in TFLite")
    out = cx.out(n.outputs[0], cx.tensors[idx].shape, NHWC)
    cx.emit(OP.LOCAL_RESPONSE_NORMALIZATION, [idx], [out], tfl.LocalResponseNormalizationOptionsT(
        radius=(size - 1) // 2, bias=float(a["bias"]), alpha=float(a["alpha"]) / size, beta=float(a["beta"])))


def _lrn_check(node, g, types):
    size = node.attrs.get("size", 1)
    t = types.get(node.inputs[0])
    if t is None or t.shape is None or len(t.shape) != 4:
        return "only rank-4 LRN"
    return None if size % 2 == 1 else f"even size {size} (LiteRT's window is symmetric)"


CHECKS["LRN"] = _lrn_check


# ------------------------------------------------------------------ quantization boundaries
def _quantize_check(node, g, types):
    s = g.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
    if s is None or s.size != 1 or node.attrs.get("block_size", 0):
        return "only per-tensor activation quantization with a constant scale"
    zp = g.constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if zp is not None and zp.dtype not in (np.int8, np.uint8):
        return f"{zp.dtype} activations (LiteRT's quantized kernels take int8)"
    return None


@converts("QuantizeLinear", check=_quantize_check)
def quantize_linear(cx: Context, n: Node) -> None:
    _, scale, zp, zdt = cx.q.q_params[n.outputs[0]]
    s, z = _qparam(scale, zp, zdt)
    x = n.inputs[0]
    idx = cx.get(x)
    t = cx.tensors[idx]
    out = cx.new(t.shape, "int8", n.outputs[0])
    cx.tensors[out].scale, cx.tensors[out].zero_point = s, z
    cx.where[n.outputs[0]] = (out, cx.perm(x))
    cx.emit(OP.QUANTIZE, [idx], [out], tfl.QuantizeOptionsT())


def _dequantize_check(node, g, types):
    if node.inputs[0] in g.constants:
        return None
    s = g.constants.get(node.inputs[1])
    return None if s is not None and s.size == 1 else "per-axis quantized activations"


@converts("DequantizeLinear", check=_dequantize_check)
def dequantize_linear(cx: Context, n: Node) -> None:
    raise ExportError(f"{n.label}: per-axis quantized activations have no TFLite form")
