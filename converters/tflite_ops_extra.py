"""TFLite operator builders beyond the plain builtins: MediaPipe's custom ops, IF, and the
resource variables of streaming models (VAR_HANDLE, READ/ASSIGN_VARIABLE, CALL_ONCE).

Registered into :data:`.tflite_ops.BUILDERS` on import (see :mod:`.tflite_ops` for the
:class:`~.tflite_ops.Builder` each function gets).
"""
from __future__ import annotations

import struct
from typing import Any

import numpy as np

from edgeinfer import dtypes as _dt

from .tflite_ops import Builder, _transpose_conv, builder


# ---------------------------------------------------------------------- MediaPipe transpose conv
@builder("CUSTOM:Convolution2DTransposeBias")
def _conv_transpose_bias(b: Builder) -> None:
    # custom options: TfLiteTransposeConvParams {int padding (1 SAME, 2 VALID); int stride_w; int stride_h}
    raw = b.op.custom_options or b""
    if len(raw) < 12:
        raise b.error(f"custom options hold {len(raw)} bytes, expected at least 12 (padding, stride_w, stride_h)")
    pad_code, sw, sh = struct.unpack("<iii", raw[:12])
    padding = {1: "SAME", 2: "VALID"}.get(pad_code)
    if padding is None:
        raise b.error(f"custom option padding = {pad_code}, expected 1 (SAME) or 2 (VALID)")
    strides = [b.positive("stride_h", sh), b.positive("stride_w", sw)]
    x_shape, w_shape = b.shape(0), b.shape(1)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise b.error(f"expects 4-D input and filter, found ranks {len(x_shape)} and {len(w_shape)}")
    out_hw = tuple(x_shape[1 + i] * strides[i] + (0 if padding == "SAME" else max(w_shape[1 + i] - strides[i], 0))
                   for i in range(2))
    _transpose_conv(b, 0, 1, 2, out_hw, padding, strides)


# ---------------------------------------------------------------------- resource variables
# VAR_HANDLE / ASSIGN_VARIABLE / READ_VARIABLE and CALL_ONCE (the initializer subgraph) are
# followed at import time: a read gets the value last assigned, in program order. One call of
# the graph is one invocation from the initial state; LiteRT keeps the variables between
# invocations, which a stateless IR graph does not (streaming models need their state fed back).
def _var_key(b: Builder, k: int) -> Any:
    key = b.imp.var_handles.get(b.op.inputs[k]) if b.has(k) else None
    if key is None:
        raise b.error(f"input {k} is not a resource made by VAR_HANDLE")
    return key


@builder("VAR_HANDLE")
def _var_handle(b: Builder) -> None:
    key = (b.opt.get("container", "") or "", b.opt.get("shared_name", "") or "")
    if not key[1]:
        key = ("", f"#{b.op.outputs[0]}")
    b.imp.var_handles[b.op.outputs[0]] = key


@builder("ASSIGN_VARIABLE")
def _assign_variable(b: Builder) -> None:
    b.imp.var_values[_var_key(b, 0)] = b.imp.folded(b.x(1))


@builder("READ_VARIABLE")
def _read_variable(b: Builder) -> None:
    key = _var_key(b, 0)
    value = b.imp.var_values.get(key)
    if value is None:
        t = b.out_t(0)
        value = b.c(np.zeros([max(d, 0) for d in t.shape], _dt.to_numpy(t.dtype)), "variable_init")
        if b.imp.is_quantized(t):  # a zero-initialised quantized variable: its zero point, 0.0
            value = b.c(np.zeros([max(d, 0) for d in t.shape], np.float32), "variable_init")
    if value in b.imp.constants:
        b.bind(0, value)
    else:
        b.bind(0, b.one("Identity", [value]))


@builder("CALL_ONCE")
def _call_once(b: Builder) -> None:
    index = int(b.opt.get("init_subgraph_index", -1))
    b.imp.inline_subgraph(index, b.where)


# ---------------------------------------------------------------------- control flow
@builder("IF")
def _if(b: Builder) -> None:
    values = [b.x(k) for k in range(1, b.n_in)]
    then_g = b.imp.branch(int(b.opt.get("then_subgraph_index", -1)), values, b.where)
    else_g = b.imp.branch(int(b.opt.get("else_subgraph_index", -1)), values, b.where)
    if len(then_g.outputs) != len(else_g.outputs) or len(then_g.outputs) != len(b.op.outputs):
        raise b.error(f"branches give {len(then_g.outputs)} and {len(else_g.outputs)} outputs, "
                      f"the operator has {len(b.op.outputs)}")
    cond = b.x(0)
    if b.t(0).shape and int(np.prod(b.t(0).shape)) == 1 and len(b.t(0).shape) > 0:
        cond = b.one("Reshape", [cond, b.i64([], "scalar_shape")])
    outs = b.add("If", [cond], {"then_branch": then_g, "else_branch": else_g}, n_out=len(b.op.outputs))
    for k, o in enumerate(outs):
        b.bind(k, o)


# ---------------------------------------------------------------------- MediaPipe pooling with indices
# MaxPoolingWithArgmax2D and MaxUnpooling2D (MediaPipe's segmentation models) carry a raw
# TfLitePoolParams struct as custom options: int32 padding (1 SAME, 2 VALID), stride_w,
# stride_h, filter_w, filter_h, activation, then computed paddings. Their indices are float32
# positions inside the pooling window, ``dy * filter_w + dx`` (the TFLite GPU delegate's
# convention, which implements both), so a pooling/unpooling pair is exact. They become ONNX
# MaxPool (with its whole-tensor Indices) / MaxUnpool, with the index arithmetic in between.
def _pool_params(b: Builder) -> tuple[str, list[int], list[int]]:
    raw = b.op.custom_options or b""
    if len(raw) < 24:
        raise b.error(f"custom options hold {len(raw)} bytes, expected a 24-byte pool parameter block at least")
    pad_code, sw, sh, fw, fh, act = struct.unpack("<6i", raw[:24])
    padding = {1: "SAME", 2: "VALID"}.get(pad_code)
    if padding is None:
        raise b.error(f"custom option padding = {pad_code}, expected 1 (SAME) or 2 (VALID)")
    if act != 0:
        raise b.error(f"custom option activation = {act}: fused activations are not supported here")
    return padding, [b.positive("stride_h", sh), b.positive("stride_w", sw)], \
        [b.positive("filter_height", fh), b.positive("filter_width", fw)]


def _window_origins(padding: str, size: int, stride: int, k: int, out: int) -> np.ndarray:
    total = max((out - 1) * stride + k - size, 0) if padding == "SAME" else 0
    return np.arange(out, dtype=np.int64) * stride - total // 2


@builder("CUSTOM:MaxPoolingWithArgmax2D")
def _max_pool_argmax(b: Builder) -> None:
    padding, strides, kernel = _pool_params(b)
    n, h, w, c = _static4(b, 0)
    oh, ow = b.out_t(0).shape[1], b.out_t(0).shape[2]
    x = b.nchw(b.x(0))
    y, idx = b.add("MaxPool", [x], {"kernel_shape": kernel, "strides": strides,
                                   "auto_pad": "SAME_UPPER" if padding == "SAME" else "VALID"}, n_out=2)
    # whole-tensor NCHW index -> row and column in the image -> position inside the window
    plane = b.one("Mod", [idx, b.i64(h * w, "plane")], {"fmod": 0})
    row = b.one("Div", [plane, b.i64(w, "width")])
    col = b.one("Mod", [plane, b.i64(w, "width")], {"fmod": 0})
    y0 = b.i64(_window_origins(padding, h, strides[0], kernel[0], oh).reshape(1, 1, oh, 1), "row_origin")
    x0 = b.i64(_window_origins(padding, w, strides[1], kernel[1], ow).reshape(1, 1, 1, ow), "col_origin")
    local = b.one("Add", [b.one("Mul", [b.one("Sub", [row, y0]), b.i64(kernel[1], "filter_w")]),
                          b.one("Sub", [col, x0])])
    b.bind(0, b.nhwc(y))
    b.bind(1, b.nhwc(b.one("Cast", [local], {"to": b.out_t(1).dtype})))


@builder("CUSTOM:MaxUnpooling2D")
def _max_unpool(b: Builder) -> None:
    padding, strides, kernel = _pool_params(b)
    n, oh, ow, c = _static4(b, 0)
    out = b.out_t(0).shape
    if len(out) != 4 or out[0] != n or out[3] != c:
        raise b.error(f"output shape {list(out)} does not fit the input {[n, oh, ow, c]}")
    h, w = out[1], out[2]
    local = b.one("Cast", [b.nchw(b.x(1))], {"to": "int64"})
    y0 = _window_origins(padding, h, strides[0], kernel[0], oh).reshape(1, 1, oh, 1)
    x0 = _window_origins(padding, w, strides[1], kernel[1], ow).reshape(1, 1, 1, ow)
    row = b.one("Add", [b.one("Div", [local, b.i64(kernel[1], "filter_w")]), b.i64(y0, "row_origin")])
    col = b.one("Add", [b.one("Mod", [local, b.i64(kernel[1], "filter_w")], {"fmod": 0}), b.i64(x0, "col_origin")])
    # clamp to the image so that a corrupt index cannot address another plane
    row = b.one("Clip", [row, b.i64(0, "zero"), b.i64(h - 1, "last_row")])
    col = b.one("Clip", [col, b.i64(0, "zero"), b.i64(w - 1, "last_col")])
    planes = b.i64((np.arange(n * c, dtype=np.int64) * h * w).reshape(n, c, 1, 1), "plane_offset")
    flat = b.one("Add", [b.one("Add", [b.one("Mul", [row, b.i64(w, "width")]), col]), planes])
    y = b.one("MaxUnpool", [b.nchw(b.x(0)), flat, b.i64([n, c, h, w], "output_shape")],
              {"kernel_shape": kernel, "strides": strides})
    b.bind(0, b.nhwc(y))


def _static4(b: Builder, k: int) -> tuple[int, int, int, int]:
    shape = b.shape(k)
    if len(shape) != 4 or any(d <= 0 for d in shape):
        raise b.error(f"expects a 4-D NHWC input of known shape, found {list(shape)}")
    return tuple(int(d) for d in shape)
