"""TFLite converters for the layout-sensitive and weight-carrying ops: Conv, ConvTranspose,
pooling, Gemm/MatMul, Resize, DepthToSpace/SpaceToDepth (see :mod:`.tflite_export_ops`).

ONNX pads are explicit; TFLite has SAME and VALID. A Conv or pool whose pads equal what TF's
SAME computes (``total = max((ceil(in/s) - 1) * s + k_eff - in, 0)``, ``before = total // 2``)
uses SAME; other pads become a PAD (PADV2 with the lowest value before a max pool) and VALID.
An average pool whose divisor LiteRT cannot reproduce (count_include_pad, ceil_mode) is a
zero PAD, a VALID average and a MUL by the constant ratio of divisors.
Rank-3 (1-D) Conv and pools run as 2-D ones over a unit height.
"""
from __future__ import annotations

import math

import numpy as np

from edgeinfer.errors import ExportError
from edgeinfer.graph import Node

from .tflite_export_ops import _last_axis_layout
from .tflite_export_state import (
    NHWC, NWC, OP, Context, _const_inputs, attrs_of, converts, ident, inv, phys, tfl,
)

PADDING = tfl.Padding


# ------------------------------------------------------------------ geometry
def _spatial_attrs(a: dict, nspatial: int, kernel) -> tuple[list, list, list, list]:
    """strides, dilations, pads_begin, pads_end for ``nspatial`` dims (pads before auto_pad)."""
    strides = list(a.get("strides") or [1] * nspatial)
    dil = list(a.get("dilations") or [1] * nspatial)
    pads = list(a.get("pads") or [0] * (2 * nspatial))
    return strides, dil, pads[:nspatial], pads[nspatial:]


def _auto_pads(auto: str, in_sizes, kernel, strides, dil):
    begin, end = [], []
    for n, k, s, d in zip(in_sizes, kernel, strides, dil):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        begin.append(lo)
        end.append(total - lo)
    return begin, end


def _same_matches(in_sizes, out_sizes, kernel, strides, dil, begin, end_eff) -> bool:
    for n, o, k, s, d, b, e in zip(in_sizes, out_sizes, kernel, strides, dil, begin, end_eff):
        out_tf = math.ceil(n / s)
        total = max((out_tf - 1) * s + (k - 1) * d + 1 - n, 0)
        if o != out_tf or b != total // 2 or e != total - total // 2:
            return False
    return True


def _to_2d(cx: Context, x: str, why: str) -> tuple[int, bool]:
    """Tensor index of ``x`` as physical [N, H, W, C] (rank-3 inputs get a unit height)."""
    if cx.rank(x) == 4:
        return cx.get(x, NHWC, why=why), False
    idx = cx.get(x, NWC, why=why)
    t = cx.tensors[idx]
    shape = [t.shape[0], 1, t.shape[1], t.shape[2]]
    key = (x, "as2d")
    if key not in cx.views:
        out = cx.new(shape, t.dtype, x + "_2d", like=t)
        cx.emit(OP.RESHAPE, [idx, cx.i32(shape)], [out], tfl.ReshapeOptionsT(newShape=shape))
        cx.views[key] = out
    return cx.views[key], True


def _out_2d(cx: Context, name: str, is1d: bool, same_as: int | None = None) -> tuple[int, callable]:
    """The tensor an op writes for IR output ``name`` and a function finishing it (1-D: a
    RESHAPE back to rank 3, channels last)."""
    shape = cx.shape(name)
    if not is1d:
        return cx.out(name, phys(shape, NHWC), NHWC, same_as=same_as), lambda: None
    n, c, w = shape
    out = cx.out(name, [n, w, c], NWC, same_as=same_as)
    mid = cx.new([n, 1, w, c], cx.tensors[out].dtype, name + "_2d", like=cx.tensors[out])

    def finish():
        cx.emit(OP.RESHAPE, [mid, cx.i32([n, w, c])], [out], tfl.ReshapeOptionsT(newShape=[n, w, c]))
    return mid, finish


def _pad_input(cx: Context, idx: int, begin, end, value=None, name="pad") -> int:
    t = cx.tensors[idx]
    paddings = np.array([[0, 0], [begin[0], end[0]], [begin[1], end[1]], [0, 0]], np.int32)
    shape = [t.shape[0], t.shape[1] + begin[0] + end[0], t.shape[2] + begin[1] + end[1], t.shape[3]]
    out = cx.new(shape, t.dtype, f"{t.name}_{name}", like=t)
    if value is None:
        cx.emit(OP.PAD, [idx, cx.constant(paddings, "paddings")], [out], tfl.PadOptionsT())
    else:
        cx.emit(OP.PADV2, [idx, cx.constant(paddings, "paddings"), value], [out], tfl.PadV2OptionsT())
    return out


def _geometry(cx: Context, n: Node, kernel, is1d: bool):
    """(in_hw, out_hw, kernel, strides, dilations, begin, end_eff) in 2-D form."""
    a = attrs_of(n)
    x, y = n.inputs[0], n.outputs[0]
    nsp = len(kernel)
    strides, dil, begin, end = _spatial_attrs(a, nsp, kernel)
    in_sp = list(cx.shape(x)[2:])
    out_sp = list(cx.shape(y)[2:])
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = _auto_pads(auto, in_sp, kernel, strides, dil)
    elif auto == "VALID":
        begin, end = [0] * nsp, [0] * nsp
    kernel = list(kernel)
    if is1d:
        in_sp, out_sp, kernel, strides, dil = [1] + in_sp, [1] + out_sp, [1] + kernel, [1] + strides, [1] + dil
        begin, end = [0] + begin, [0] + end
    end_eff = [(o - 1) * s + (k - 1) * d + 1 - i - b
               for i, o, k, s, d, b in zip(in_sp, out_sp, kernel, strides, dil, begin)]
    return in_sp, out_sp, kernel, strides, dil, begin, end_eff


def _spatial_check(node, g, types):
    t = types.get(node.inputs[0])
    if t is None or t.shape is None or len(t.shape) not in (3, 4):
        return "only 1-D and 2-D (rank 3 and 4) inputs"
    return None


# ------------------------------------------------------------------ Conv
def _conv_check(node, g, types):
    why = _spatial_check(node, g, types) or _const_inputs(1, 2)(node, g, types)
    if why:
        return why
    if node.inputs[1] not in g.constants and not any(
            n.outputs[0] == node.inputs[1] and n.op_type == "DequantizeLinear" for n in g.nodes):
        return "the weights must be constant"
    return None


@converts("Conv", check=_conv_check)
def conv(cx: Context, n: Node) -> None:
    a = attrs_of(n)
    x, w_name, y = n.inputs[0], n.inputs[1], n.outputs[0]
    b_name = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] else None
    qw = cx.q.consts.get(w_name) if cx.qmode else None
    w = qw.q if qw is not None else cx.const(w_name).astype(np.float32)
    if w.ndim == 3:
        w = w[:, :, None, :]
    m, cg, kh, kw = w.shape
    group = int(a["group"])
    idx, is1d = _to_2d(cx, x, "Conv reads channels-last input")
    in_hw, out_hw, kernel, strides, dil, begin, end_eff = _geometry(cx, n, list(w.shape[2:]) if cx.rank(x) == 4
                                                                     else [w.shape[3]], is1d)
    if _same_matches(in_hw, out_hw, kernel, strides, dil, begin, end_eff):
        padding = PADDING.SAME
    else:
        padding = PADDING.VALID
        if any(begin) or any(e > 0 for e in end_eff):
            idx = _pad_input(cx, idx, begin, [max(e, 0) for e in end_eff])
    c_in = cg * group
    depthwise = group > 1 and group == c_in and cg == 1
    if depthwise:
        filt, qdim = np.ascontiguousarray(w.reshape(m, kh, kw).transpose(1, 2, 0)[None]), 3
    else:
        filt, qdim = np.ascontiguousarray(w.transpose(0, 2, 3, 1)), 0
    if cx.qmode:
        s_in = cx.tensors[idx].scale[0]
        w_scale = np.broadcast_to(qw.scale.astype(np.float32).reshape(-1), (m,)) if qw.scale.size > 1 \
            else qw.scale.astype(np.float32).reshape(-1)
        widx = cx.constant(filt, w_name, scale=tuple(map(float, w_scale)), zero_point=(0,) * w_scale.size,
                           qdim=qdim if w_scale.size > 1 else 0)
        bias = _int32_bias(cx, b_name, s_in, np.broadcast_to(w_scale, (m,)), m)
        b_scale = s_in * w_scale.astype(np.float64)  # one entry per weight scale
        bidx = cx.constant(bias, b_name or y + "_bias", scale=tuple(map(float, b_scale)),
                           zero_point=(0,) * b_scale.size)
    else:
        widx = cx.constant(filt, w_name)
        b = cx.const(b_name).astype(np.float32) if b_name else np.zeros(m, np.float32)
        bidx = cx.constant(b, b_name or y + "_bias")
    out, finish = _out_2d(cx, y, is1d)
    if depthwise:
        opts = tfl.DepthwiseConv2DOptionsT(padding=padding, strideW=strides[1], strideH=strides[0],
                                           depthMultiplier=m // c_in, dilationWFactor=dil[1], dilationHFactor=dil[0])
        cx.emit(OP.DEPTHWISE_CONV_2D, [idx, widx, bidx], [out], opts)
    else:
        opts = tfl.Conv2DOptionsT(padding=padding, strideW=strides[1], strideH=strides[0],
                                  dilationWFactor=dil[1], dilationHFactor=dil[0])
        cx.emit(OP.CONV_2D, [idx, widx, bidx], [out], opts)
    finish()


def _int32_bias(cx: Context, b_name: str | None, s_in: float, w_scale: np.ndarray, m: int) -> np.ndarray:
    if b_name is None:
        return np.zeros(m, np.int32)
    qb = cx.q.consts.get(b_name)
    if qb is not None:
        return np.broadcast_to(qb.q.astype(np.int32).reshape(-1), (m,)).copy()
    b = cx.const(b_name).astype(np.float64).reshape(-1)
    return np.round(b / (s_in * w_scale.astype(np.float64))).astype(np.int32)


def _conv_transpose_check(node, g, types):
    why = _const_inputs(1, 2)(node, g, types)
    t = types.get(node.inputs[0])
    if why:
        return why
    if t is None or t.shape is None or len(t.shape) != 4:
        return "only 2-D ConvTranspose"
    if node.attrs.get("group", 1) != 1:
        return "groups (LiteRT's TRANSPOSE_CONV has none)"
    if any(d != 1 for d in node.attrs.get("dilations") or [1, 1]):
        return "dilations"
    return None


@converts("ConvTranspose", check=_conv_transpose_check)
def conv_transpose(cx: Context, n: Node) -> None:
    a = attrs_of(n)
    x, y = n.inputs[0], n.outputs[0]
    w = cx.const(n.inputs[1]).astype(np.float32)  # [C_in, M, kh, kw]
    c_in, m, kh, kw = w.shape
    idx = cx.get(x, NHWC, why="ConvTranspose reads channels-last input")
    strides = list(a.get("strides") or [1, 1])
    in_hw, out_hw = list(cx.shape(x)[2:]), list(cx.shape(y)[2:])
    full = [(i - 1) * s + k for i, s, k in zip(in_hw, strides, (kh, kw))]
    pads = list(a.get("pads") or [0, 0, 0, 0])
    auto = a.get("auto_pad", "NOTSET")
    begin = []
    for d in range(2):
        total = full[d] + (list(a.get("output_padding") or [0, 0])[d]) - out_hw[d]
        if a.get("output_shape") or auto in ("SAME_UPPER", "SAME_LOWER"):
            begin.append(total - total // 2 if auto == "SAME_LOWER" else total // 2)
        else:
            begin.append(pads[d])
    if any(b + o > f for b, o, f in zip(begin, out_hw, full)):
        raise ExportError(f"{n.label}: output_padding beyond the full output has no TFLite form")
    filt = cx.constant(np.ascontiguousarray(w.transpose(1, 2, 3, 0)), n.inputs[1])
    b = cx.const(n.inputs[2]).astype(np.float32) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(m, np.float32)
    bidx = cx.constant(b, "bias")
    batch = cx.shape(x)[0]
    tf_same = all(max((i - 1) * s + k - o, 0) // 2 == bb and o == ((i - 1) * s + k - max((i - 1) * s + k - o, 0))
                  for i, s, k, o, bb in zip(in_hw, strides, (kh, kw), out_hw, begin))
    opts = tfl.TransposeConvOptionsT(strideW=strides[1], strideH=strides[0])
    if tf_same:
        opts.padding = PADDING.SAME
        out = cx.out(y, [batch, *out_hw, m], NHWC)
        cx.emit(OP.TRANSPOSE_CONV, [cx.i32([batch, *out_hw, m]), filt, idx, bidx], [out], opts)
        return
    opts.padding = PADDING.VALID
    mid = cx.new([batch, *full, m], "float32", y + "_full")
    cx.emit(OP.TRANSPOSE_CONV, [cx.i32([batch, *full, m]), filt, idx, bidx], [mid], opts)
    out = cx.out(y, [batch, *out_hw, m], NHWC)
    cx.emit(OP.STRIDED_SLICE, [mid, cx.i32([0, begin[0], begin[1], 0]),
                               cx.i32([batch, begin[0] + out_hw[0], begin[1] + out_hw[1], m]), cx.i32([1, 1, 1, 1])],
            [out], tfl.StridedSliceOptionsT())


# ------------------------------------------------------------------ pooling
def _pool_check(node, g, types):
    why = _spatial_check(node, g, types)
    if why:
        return why
    if any(d != 1 for d in node.attrs.get("dilations") or []):
        return "dilated pooling"
    if node.attrs.get("storage_order", 0):
        return "storage_order=1"
    return None


@converts("MaxPool", "AveragePool", check=_pool_check)
def pool(cx: Context, n: Node) -> None:
    a = attrs_of(n)
    x, y = n.inputs[0], n.outputs[0]
    idx, is1d = _to_2d(cx, x, f"{n.op_type} reads channels-last input")
    in_hw, out_hw, kernel, strides, dil, begin, end_eff = _geometry(cx, n, list(a["kernel_shape"]), is1d)
    same_pad = _same_matches(in_hw, out_hw, kernel, strides, dil, begin, end_eff)
    no_pad = not any(begin) and all(e <= 0 for e in end_eff)
    is_max = n.op_type == "MaxPool"
    correction = None
    if no_pad:
        padding = PADDING.VALID
    elif same_pad and (is_max or not a.get("count_include_pad", 0)):
        padding = PADDING.SAME
    else:
        padding = PADDING.VALID
        t = cx.tensors[idx]
        if is_max:
            if t.scale is not None:
                low = cx.constant(np.array(-128, np.int8), "low", scale=t.scale, zero_point=t.zero_point)
            else:
                low = cx.scalar(np.finfo(np.float32).min)
            idx = _pad_input(cx, idx, begin, [max(e, 0) for e in end_eff], low, "padmin")
        else:
            if cx.qmode:
                raise ExportError(f"{n.label}: a quantized average pool with this padding has no TFLite form")
            idx = _pad_input(cx, idx, begin, [max(e, 0) for e in end_eff])
            correction = _avg_correction(in_hw, out_hw, kernel, strides, begin, end_eff,
                                         [e for e in _spatial_attrs(a, len(a["kernel_shape"]), None)[3]],
                                         bool(a.get("count_include_pad", 0)), is1d)
    opts = tfl.Pool2DOptionsT(padding=padding, strideW=strides[1], strideH=strides[0],
                              filterWidth=kernel[1], filterHeight=kernel[0])
    code = OP.MAX_POOL_2D if is_max else OP.AVERAGE_POOL_2D
    same_params = idx if cx.qmode else None
    if correction is None:
        out, finish = _out_2d(cx, y, is1d, same_as=same_params)
        cx.emit(code, [idx], [out], opts)
        finish()
        return
    t = cx.tensors[idx]
    avg = cx.new([t.shape[0], out_hw[0], out_hw[1], t.shape[3]], "float32", y + "_sum")
    cx.emit(code, [idx], [avg], opts)
    out, finish = _out_2d(cx, y, is1d)
    cx.emit(OP.MUL, [avg, cx.constant(correction, y + "_divisor")], [out], tfl.MulOptionsT())
    finish()


def _avg_correction(in_hw, out_hw, kernel, strides, begin, end_eff, pads_end, include_pad, is1d) -> np.ndarray:
    """ONNX's divisor over LiteRT's (the full window) per output position, [1, OH, OW, 1]."""
    if is1d:
        pads_end = [0] + list(pads_end)
    ratios = []
    for n, o, k, s, b, pe in zip(in_hw, out_hw, kernel, strides, begin, pads_end):
        start = np.arange(o) * s - b
        stop = start + k
        if include_pad:
            count = np.minimum(stop, n + pe) - np.maximum(start, -b)
        else:
            count = np.minimum(stop, n) - np.maximum(start, 0)
        ratios.append(k / np.maximum(count, 1))
    return (ratios[0][:, None] * ratios[1][None, :]).astype(np.float32)[None, :, :, None]


# ------------------------------------------------------------------ Gemm / MatMul
def _gemm_check(node, g, types):
    for i in node.inputs[:2]:
        t = types.get(i)
        if t is None or t.shape is None or len(t.shape) != 2:
            return "only 2-D operands"
    return None


@converts("Gemm", check=_gemm_check)
def gemm(cx: Context, n: Node) -> None:
    a = attrs_of(n)
    A, B, y = n.inputs[0], n.inputs[1], n.outputs[0]
    C = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] else None
    nout = cx.shape(y)[1]
    alpha, beta = float(a["alpha"]), float(a["beta"])
    qw = cx.q.consts.get(B) if cx.qmode else None
    if qw is not None or B in cx.consts:
        a_idx = cx.get(A, (1, 0) if a["transA"] else (0, 1), why="FULLY_CONNECTED reads [rows, K]")
        cols = _columns(cx, A)
        if qw is not None:
            w = qw.q if a["transB"] else qw.q.T
            w = w if cols is None else w[:, cols]
            axis_n = 0 if a["transB"] else 1
            _fully_connected_q(cx, a_idx, np.ascontiguousarray(w), qw, axis_n, C, y, nout, (0, 1), keep=False)
            return
        w = cx.const(B).astype(np.float32)
        w = (w if a["transB"] else w.T) * np.float32(alpha)
        w = w if cols is None else w[:, cols]
        bias = None
        if C is not None and C in cx.consts and cx.consts[C].size in (1, nout) and cx.consts[C].ndim <= 2 \
                and (cx.consts[C].ndim < 2 or cx.consts[C].shape[0] == 1):
            bias = np.broadcast_to(cx.consts[C].astype(np.float32).reshape(-1) * np.float32(beta), (nout,))
            C = None
        bidx = cx.constant(np.ascontiguousarray(bias if bias is not None else np.zeros(nout, np.float32)), "bias")
        if C is None:
            out = cx.out(y, list(cx.shape(y)), (0, 1))
        else:
            out = cx.new(list(cx.shape(y)), "float32", y + "_mm")
        cx.emit(OP.FULLY_CONNECTED, [a_idx, cx.constant(np.ascontiguousarray(w), B), bidx], [out],
                tfl.FullyConnectedOptionsT())
    else:
        a_idx = cx.get(A, (0, 1))
        b_idx = cx.get(B, (0, 1))
        out = cx.new(list(cx.shape(y)), "float32", y + "_mm")
        cx.emit(OP.BATCH_MATMUL, [a_idx, b_idx], [out],
                tfl.BatchMatMulOptionsT(adjX=bool(a["transA"]), adjY=bool(a["transB"])))
        if alpha != 1.0:
            scaled = cx.new(list(cx.shape(y)), "float32", y + "_alpha")
            cx.emit(OP.MUL, [out, cx.scalar(alpha)], [scaled], tfl.MulOptionsT())
            out = scaled
        if C is None:
            cx.alias(y, out, (0, 1))
            return
    if C is not None:
        c = cx.operand(C, 2, (0, 1)) if C not in cx.consts else cx.constant(
            (cx.consts[C].astype(np.float32) * np.float32(beta)).reshape((1,) * (2 - cx.consts[C].ndim)
                                                                          + cx.consts[C].shape), C)
        cx.emit(OP.ADD, [out, c], [cx.out(y, list(cx.shape(y)), (0, 1))], tfl.AddOptionsT())


def _columns(cx: Context, a_name: str):
    """The column order of a flattened input (see ``_flatten_into_weights``), or None."""
    if cx.qmode and a_name in cx.q.dq_of:
        return cx.col_perm.get(cx.q.dq_of[a_name][0])
    return cx.col_perm.get(a_name)


def _fully_connected_q(cx, a_idx, w, qw, axis_n, bias_name, y, nout, perm, keep):
    s_in = cx.tensors[a_idx].scale[0]
    if qw.scale.size > 1 and qw.axis != axis_n:
        raise ExportError(f"weights of '{y}' are quantized along the input axis; TFLite needs the output axis")
    w_scale = np.broadcast_to(qw.scale.astype(np.float32).reshape(-1), (nout,))
    per_channel = qw.scale.size > 1
    widx = cx.constant(w, "weights", scale=tuple(map(float, w_scale)) if per_channel else (float(w_scale[0]),),
                       zero_point=(0,) * (nout if per_channel else 1), qdim=0)
    bias = _int32_bias(cx, bias_name, s_in, w_scale, nout)
    bidx = cx.constant(bias, "bias", scale=tuple(map(float, s_in * w_scale)) if per_channel
                       else (float(s_in * w_scale[0]),), zero_point=(0,) * (nout if per_channel else 1))
    shape = phys(cx.shape(y), perm)
    out = cx.out(y, shape, perm)
    cx.emit(OP.FULLY_CONNECTED, [a_idx, widx, bidx], [out], tfl.FullyConnectedOptionsT(keepNumDims=keep))


def _matmul_check(node, g, types):
    for i in node.inputs[:2]:
        t = types.get(i)
        if t is None or t.shape is None or len(t.shape) < 2:
            return "1-D operands"
    return None


@converts("MatMul", check=_matmul_check)
def matmul(cx: Context, n: Node) -> None:
    A, B, y = n.inputs[0], n.inputs[1], n.outputs[0]
    ra, out_shape = cx.rank(A), cx.shape(y)
    qw = cx.q.consts.get(B) if cx.qmode else None
    if (B in cx.consts or qw is not None) and len(cx.shape(B)) == 2 and A not in cx.consts:
        perm = cx.perm(A)
        if inv(perm)[ra - 1] != ra - 1:
            perm = _last_axis_layout(perm, ra - 1)
        a_idx = cx.get(A, perm, why="FULLY_CONNECTED contracts the last axis")
        nout = cx.shape(B)[1]
        cols = _columns(cx, A)
        if qw is not None:
            w = qw.q.T if cols is None else qw.q.T[:, cols]
            _fully_connected_q(cx, a_idx, np.ascontiguousarray(w), qw, 1, None, y, nout, perm, keep=ra > 2)
            return
        w = cx.const(B).astype(np.float32).T
        w = np.ascontiguousarray(w if cols is None else w[:, cols])
        out = cx.out(y, phys(out_shape, perm), perm)
        cx.emit(OP.FULLY_CONNECTED, [a_idx, cx.constant(w, B), cx.constant(np.zeros(nout, np.float32), "bias")],
                [out], tfl.FullyConnectedOptionsT(keepNumDims=ra > 2))
        return
    rank = len(out_shape)
    ins, adj = [], []
    for name in (A, B):
        r = len(cx.shape(name))
        p = cx.perm(name)
        if p is not None and r == rank and tuple(p[:-2]) == ident(r - 2) and set(p[-2:]) == {r - 2, r - 1}:
            ins.append(cx.get(name))
            adj.append(tuple(p[-2:]) == (r - 1, r - 2))
        else:
            ins.append(cx.operand(name, rank, ident(rank)))
            adj.append(False)
    out = cx.out(y, list(out_shape), ident(rank))
    cx.emit(OP.BATCH_MATMUL, ins, [out], tfl.BatchMatMulOptionsT(adjX=adj[0], adjY=adj[1]))


# ------------------------------------------------------------------ Resize
def _resize_coords(a: dict, in_len: int, out_len: int, scale: float):
    x = np.arange(out_len, dtype=np.float64)
    ctm, mode = a["coordinate_transformation_mode"], a["mode"]
    if ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and out_len > 1):
        v = (x + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        v = np.zeros_like(x)
    elif ctm == "align_corners":
        v = x * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(x)
    elif ctm == "asymmetric":
        v = x / scale
    elif ctm == "tf_half_pixel_for_nn":
        v = (x + 0.5) / scale
    else:
        return None
    if mode == "nearest":
        nm = a["nearest_mode"]
        r = {"round_prefer_floor": np.ceil(v - 0.5), "round_prefer_ceil": np.floor(v + 0.5),
             "floor": np.floor(v), "ceil": np.ceil(v)}[nm]
        return np.clip(r, 0, in_len - 1)
    return np.clip(v, 0, in_len - 1)


def _tf_coords(mode: str, align: bool, half: bool, in_len: int, out_len: int):
    x = np.arange(out_len, dtype=np.float64)
    scale = (in_len - 1) / (out_len - 1) if align and out_len > 1 else in_len / out_len
    if mode == "nearest":
        v = (x + (0.5 if half else 0.0)) * scale
        r = np.floor(v + 0.5) if align else np.floor(v)
        r = np.minimum(r, in_len - 1)
        return np.maximum(r, 0) if half else r
    v = (x + 0.5) * scale - 0.5 if half else x * scale
    return np.clip(v, 0, in_len - 1)


def resize_flags(node: Node, in_shape, out_shape, scales) -> tuple[bool, bool] | str:
    """(align_corners, half_pixel_centers) reproducing the ONNX Resize, or why none does."""
    a = attrs_of(node)
    if a["mode"] not in ("nearest", "linear"):
        return f"mode '{a['mode']}'"
    if a.get("antialias"):
        return "antialias"
    if len(in_shape) != 4 or in_shape[:2] != out_shape[:2]:
        return "only resizing the two spatial axes of a rank-4 tensor"
    for align, half in ((False, True), (True, False), (False, False)):
        ok = True
        for d in (2, 3):
            s = float(scales[d]) if scales is not None and len(scales) == 4 else out_shape[d] / in_shape[d]
            want = _resize_coords(a, in_shape[d], out_shape[d], s)
            if want is None:
                return f"coordinate_transformation_mode '{a['coordinate_transformation_mode']}'"
            got = _tf_coords(a["mode"], align, half, in_shape[d], out_shape[d])
            if not np.allclose(want, got, atol=1e-4):
                ok = False
                break
        if ok:
            return align, half
    return (f"coordinate mapping ({a['coordinate_transformation_mode']}, "
            f"{a['nearest_mode'] if a['mode'] == 'nearest' else 'linear'}) has no LiteRT flags")


def _resize_scales(node: Node, consts):
    if len(node.inputs) > 2 and node.inputs[2] and node.inputs[2] in consts and consts[node.inputs[2]].size:
        return consts[node.inputs[2]].tolist()
    return None


def _resize_check(node, g, types):
    why = _const_inputs(1, 2, 3)(node, g, types)
    if why:
        return why
    tin, tout = types.get(node.inputs[0]), types.get(node.outputs[0])
    if tin is None or tout is None or tin.shape is None or tout.shape is None:
        return "unknown shapes"
    r = resize_flags(node, tin.shape, tout.shape, _resize_scales(node, g.constants))
    return r if isinstance(r, str) else None


@converts("Resize", check=_resize_check)
def resize(cx: Context, n: Node) -> None:
    x, y = n.inputs[0], n.outputs[0]
    align, half = resize_flags(n, cx.shape(x), cx.shape(y), _resize_scales(n, cx.consts))
    idx = cx.get(x, NHWC, why="Resize works on channels-last tensors")
    oh, ow = cx.shape(y)[2:]
    out = cx.out(y, phys(cx.shape(y), NHWC), NHWC, same_as=idx if cx.qmode else None)
    if attrs_of(n)["mode"] == "nearest":
        cx.emit(OP.RESIZE_NEAREST_NEIGHBOR, [idx, cx.i32([oh, ow])], [out],
                tfl.ResizeNearestNeighborOptionsT(alignCorners=align, halfPixelCenters=half))
    else:
        cx.emit(OP.RESIZE_BILINEAR, [idx, cx.i32([oh, ow])], [out],
                tfl.ResizeBilinearOptionsT(alignCorners=align, halfPixelCenters=half))


# ------------------------------------------------------------------ depth / space
def _rank4_check(node, g, types):
    t = types.get(node.inputs[0])
    return None if t is not None and t.shape is not None and len(t.shape) == 4 else "only rank-4 tensors"


@converts("DepthToSpace", check=_rank4_check)
def depth_to_space(cx: Context, n: Node) -> None:
    a = attrs_of(n)
    bs = int(a["blocksize"])
    idx = cx.get(n.inputs[0], NHWC, why="DepthToSpace works on channels-last tensors")
    c = cx.shape(n.inputs[0])[1]
    if a["mode"] == "CRD":  # reorder channels so that LiteRT's DCR order gives CRD's result
        cout = c // (bs * bs)
        order = np.array([co * bs * bs + i for i in range(bs * bs) for co in range(cout)], np.int32)
        t = cx.tensors[idx]
        g = cx.new(t.shape, t.dtype, n.outputs[0] + "_dcr", like=t)
        cx.emit(OP.GATHER, [idx, cx.constant(order, "dcr_order")], [g], tfl.GatherOptionsT(axis=3))
        idx = g
    out = cx.out(n.outputs[0], phys(cx.shape(n.outputs[0]), NHWC), NHWC, same_as=idx if cx.qmode else None)
    cx.emit(OP.DEPTH_TO_SPACE, [idx], [out], tfl.DepthToSpaceOptionsT(blockSize=bs))


@converts("SpaceToDepth", check=_rank4_check)
def space_to_depth(cx: Context, n: Node) -> None:
    idx = cx.get(n.inputs[0], NHWC, why="SpaceToDepth works on channels-last tensors")
    out = cx.out(n.outputs[0], phys(cx.shape(n.outputs[0]), NHWC), NHWC, same_as=idx if cx.qmode else None)
    cx.emit(OP.SPACE_TO_DEPTH, [idx], [out], tfl.SpaceToDepthOptionsT(blockSize=int(attrs_of(n)["blocksize"])))
