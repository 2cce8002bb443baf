"""Internal fused ops in the ``edgeinfer`` domain, produced by the cpu backend's fusion pass
(:func:`edgeinfer.optimize.fuse_conv_activation`).

* ``FusedConv``: Conv attributes plus ``activation`` (an activation name of
  :mod:`.activations`, ``""`` for none) and ``activation_params``; inputs ``X, W, [B], [Z]``.
  Computes ``act(conv(X, W) + B + Z)``. ``input_layout``/``output_layout`` ``"NHWC"`` make X
  or Y channels-last (1x1 and depthwise convs with static shapes; see
  :func:`edgeinfer.optimize.use_channels_last`).
* ``FusedGemm``: Gemm attributes plus the activation; inputs ``A, B, [C]``.
* ``FusedMatMul``: inputs ``A, B, [bias]``; computes ``act(A @ B + bias)``, bias broadcast.
* ``Affine``: inputs ``X, [scale], [shift]`` (constants that broadcast into X) plus the
  activation; computes ``act(X * scale + shift)``: a chain of BatchNormalization/Mul/Add in
  one pass (:func:`edgeinfer.optimize.fold_affine`).
* ``Activation``: input ``X``; computes ``act(X)`` for activations that ONNX spells with
  several ops (SiLU) or that the model's opset lacks (Gelu).
* ``SqueezeExcite``: inputs ``X, W1, [B1], W2, [B2]`` (1x1 conv weights) plus ``activation``
  and ``gate_activation``; computes ``X * gate_act(conv2(act(conv1(mean_hw(X)))))``
  (:func:`edgeinfer.optimize.fuse_squeeze_excite`); ``layout`` ``"NHWC"`` for a channels-last X.

The GEMM kernels are the Conv/Gemm/MatMul kernels themselves with the epilogue applied in
place on the GEMM output, so fusion costs no extra pass over memory and no duplicated code.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, ShapeInferenceError
from ..graph import TensorType
from .activations import make_activation, silu_into
from .conv import (CONV_ATTRS, LAYOUTS, build_conv, build_conv_channels_last, conv_output_type, nchw_to_nhwc,
                   nhwc_to_nchw)
from .nn import GEMM_ATTRS, build_gemm, build_matmul, gemm_shape, matmul_type
from .pool import spatial_mean
from .registry import OpContext, kernel, shape_rule, writes_out
from .shapes import broadcast_shapes

DOMAIN = "edgeinfer"
_ACTIVATION_ATTRS = {"activation": "", "activation_params": []}


def _activation(ctx: OpContext, name: str, params):
    if not name:
        if params:
            raise ctx.error(f"activation_params {list(params)} given without an activation")
        return None
    try:
        return make_activation(name, params)
    except GraphError as e:
        raise ctx.error(str(e)) from e


def _check_epilogue_input(ctx: OpContext, i: int, y: TensorType, what: str) -> None:
    """An added input (residual, bias) must broadcast to the output without changing it."""
    t = ctx.inputs[i] if i < len(ctx.inputs) else None
    if t is None or t.shape is None or y.shape is None:
        return
    try:
        fits = broadcast_shapes([y.shape, t.shape]) == tuple(y.shape)
    except ShapeInferenceError:
        fits = False
    if not fits:
        raise ctx.error(f"{what} of shape {list(t.shape)} does not broadcast to the output shape {list(y.shape)}")


_LAYOUT_ATTRS = {"input_layout": "NCHW", "output_layout": "NCHW"}


def _layouts(ctx: OpContext, input_layout: str, output_layout: str) -> tuple[bool, bool]:
    for name, value in (("input_layout", input_layout), ("output_layout", output_layout)):
        if value not in LAYOUTS:
            raise ctx.error(f"{name} '{value}' is not one of {list(LAYOUTS)}")
    return input_layout == "NHWC", output_layout == "NHWC"


@shape_rule("FusedConv", domain=DOMAIN)
def fused_conv_shape(ctx: OpContext, activation, activation_params, input_layout, output_layout, **attrs):
    _activation(ctx, activation, activation_params)
    in_nhwc, out_nhwc = _layouts(ctx, input_layout, output_layout)
    x = ctx.inputs[0]
    if in_nhwc and x is not None and x.shape is not None:
        if len(x.shape) != 4:
            raise ctx.error(f"input_layout NHWC needs a rank-4 input, found shape {list(x.shape)}")
        ctx = OpContext(ctx.node, [TensorType(x.dtype, nhwc_to_nchw(x.shape))] + list(ctx.inputs[1:]), ctx.values,
                        ctx.outputs, ctx.options)
    y = conv_output_type(ctx, attrs)
    if out_nhwc and y.shape is not None:
        y = TensorType(y.dtype, nchw_to_nhwc(y.shape))
    _check_epilogue_input(ctx, 3, y, "residual Z")
    return [y]


@kernel("FusedConv", domain=DOMAIN, attrs={**CONV_ATTRS, **_ACTIVATION_ATTRS, **_LAYOUT_ATTRS})
def fused_conv(ctx: OpContext, activation, activation_params, input_layout, output_layout, **attrs):
    act = _activation(ctx, activation, activation_params)
    in_nhwc, out_nhwc = _layouts(ctx, input_layout, output_layout)
    if in_nhwc or out_nhwc:
        return build_conv_channels_last(ctx, attrs, act, in_nhwc, out_nhwc)
    return build_conv(ctx, attrs, act)


@shape_rule("FusedGemm", domain=DOMAIN)
def fused_gemm_shape(ctx: OpContext, activation, activation_params, **attrs):
    _activation(ctx, activation, activation_params)
    return gemm_shape(ctx, **attrs)


@kernel("FusedGemm", domain=DOMAIN, attrs={**GEMM_ATTRS, **_ACTIVATION_ATTRS})
def fused_gemm(ctx: OpContext, activation, activation_params, **attrs):
    return build_gemm(ctx, attrs, _activation(ctx, activation, activation_params))


@shape_rule("FusedMatMul", domain=DOMAIN)
def fused_matmul_shape(ctx: OpContext, activation, activation_params):
    _activation(ctx, activation, activation_params)
    y = matmul_type(ctx)
    _check_epilogue_input(ctx, 2, y, "bias")
    return [y]


@kernel("FusedMatMul", domain=DOMAIN, attrs=dict(_ACTIVATION_ATTRS))
def fused_matmul(ctx: OpContext, activation, activation_params):
    return build_matmul(ctx, _activation(ctx, activation, activation_params), bias_input=2)


_FLOATS = ("float16", "float32", "float64")


def _float_input(ctx: OpContext) -> TensorType:
    x = ctx.inputs[0]
    if x is None or x.dtype not in _FLOATS:
        raise ctx.error(f"input X must be a float tensor, found {None if x is None else x.dtype}")
    return x


@shape_rule("Affine", domain=DOMAIN)
def affine_shape(ctx: OpContext, activation, activation_params):
    _activation(ctx, activation, activation_params)
    x = _float_input(ctx)
    for i, what in ((1, "scale"), (2, "shift")):
        if ctx.has_input(i):
            _check_epilogue_input(ctx, i, x, what)
    return [x]


@kernel("Affine", domain=DOMAIN, attrs=dict(_ACTIVATION_ATTRS))
def affine(ctx: OpContext, activation, activation_params):
    act = _activation(ctx, activation, activation_params)
    work = np.dtype(np.float32) if _float_input(ctx).dtype == "float16" else np.dtype(ctx.inputs[0].dtype)
    given = list(ctx.values[1:3]) + [None] * (3 - len(ctx.values))
    ready = [None if v is None else v.astype(work) for v in given]  # constants in the compute dtype

    @writes_out
    def affine_fn(x, scale=None, shift=None, out=None):
        direct = out is not None and out.dtype == work
        y = out if direct else np.empty(x.shape, work)
        s = ready[0] if scale is not None and scale is given[0] else scale
        t = ready[1] if shift is not None and shift is given[1] else shift
        if s is not None:
            np.multiply(x, s, out=y, casting="unsafe")
            if t is not None:
                y += t
        elif t is not None:
            np.add(x, t, out=y, casting="unsafe")
        else:
            np.copyto(y, x, casting="unsafe")
        if act is not None:
            act(y)
        return _deliver(y, out, x.dtype)

    return affine_fn


def _deliver(y: np.ndarray, out: np.ndarray | None, dtype) -> np.ndarray:
    """``y`` computed in the working precision, handed back in ``out`` or as ``dtype``."""
    if y is out:
        return out
    if out is not None:
        np.copyto(out, y, casting="unsafe")
        return out
    return y.astype(dtype, copy=False)


@shape_rule("Activation", domain=DOMAIN)
def activation_shape(ctx: OpContext, activation, activation_params):
    if not activation:
        raise ctx.error("attribute 'activation' is empty")
    _activation(ctx, activation, activation_params)
    return [_float_input(ctx)]


@kernel("Activation", domain=DOMAIN, attrs=dict(_ACTIVATION_ATTRS))
def activation_op(ctx: OpContext, activation, activation_params):
    if not activation:
        raise ctx.error("attribute 'activation' is empty")
    act = _activation(ctx, activation, activation_params)
    silu = activation == "SiLU"

    @writes_out
    def activation_fn(x, out=None):
        work = np.float32 if x.dtype == np.float16 else x.dtype
        direct = out is not None and out.dtype == work and not np.shares_memory(out, x)
        y = out if direct else np.empty(x.shape, work)
        if silu and x.dtype == work:
            silu_into(x, y)
        else:
            np.copyto(y, x, casting="unsafe")
            act(y)
        return _deliver(y, out, x.dtype)

    return activation_fn


_SE_ATTRS = {**_ACTIVATION_ATTRS, "gate_activation": "", "gate_activation_params": [], "layout": "NCHW"}


@shape_rule("SqueezeExcite", domain=DOMAIN)
def squeeze_excite_shape(ctx: OpContext, activation, activation_params, gate_activation, gate_activation_params,
                         layout):
    _activation(ctx, activation, activation_params)
    _activation(ctx, gate_activation, gate_activation_params)
    nhwc = _layouts(ctx, layout, "NCHW")[0]
    x = _float_input(ctx)
    if nhwc and x.shape is not None and len(x.shape) == 4:
        x = TensorType(x.dtype, nhwc_to_nchw(x.shape))
    w1, w2 = ctx.inputs[1], ctx.inputs[3] if len(ctx.inputs) > 3 else None
    if w1 is None or w2 is None:
        raise ctx.error("SqueezeExcite needs inputs X, W1, [B1], W2, [B2]")
    if x.shape is not None and len(x.shape) != 4:
        raise ctx.error(f"input X must have rank 4 (N, C, H, W), found shape {list(x.shape)}")
    if w1.shape is not None and w2.shape is not None and x.shape is not None:
        c = x.shape[1]
        if len(w1.shape) != 4 or len(w2.shape) != 4 or w1.shape[1] != c or w2.shape[0] != c or w2.shape[1] != w1.shape[0]:
            raise ctx.error(f"weights {list(w1.shape)} and {list(w2.shape)} do not map {c} channels "
                            "to a gate and back with 1x1 kernels")
    return [ctx.inputs[0]]


@kernel("SqueezeExcite", domain=DOMAIN, attrs=_SE_ATTRS)
def squeeze_excite(ctx: OpContext, activation, activation_params, gate_activation, gate_activation_params, layout):
    act = _activation(ctx, activation, activation_params)
    gate_act = _activation(ctx, gate_activation, gate_activation_params)
    nhwc = _layouts(ctx, layout, "NCHW")[0]
    work = np.dtype(np.float32) if _float_input(ctx).dtype == "float16" else np.dtype(ctx.inputs[0].dtype)
    consts = list(ctx.values[1:5]) + [None] * (5 - len(ctx.values))
    ready = {}  # id of a constant input -> its GEMM-ready form

    def matrix(w):
        if ready.get(id(w), (None,))[0] is not w:
            ready[id(w)] = (w, np.ascontiguousarray(w.reshape(w.shape[0], -1).T, dtype=work))
        return ready[id(w)][1]

    for w in (consts[0], consts[2]):
        if w is not None:
            matrix(w)
    averagers: dict[int, np.ndarray] = {}  # pixels -> the (1, pixels) row of 1 / pixels

    @writes_out
    def squeeze_excite_fn(x, w1, b1=None, w2=None, b2=None, out=None):
        if nhwc:  # (N, H, W, C): the mean is a row vector times each image's (HW, C) matrix
            n, c = x.shape[0], x.shape[-1]
            rows = x.reshape(n, -1, c)
            avg = averagers.get(rows.shape[1])
            if avg is None:
                avg = averagers[rows.shape[1]] = np.full((1, rows.shape[1]), 1.0 / max(rows.shape[1], 1), work)
            squeezed = (avg @ rows).reshape(n, c)
        else:
            n, c = x.shape[:2]
            squeezed = spatial_mean(x, work)
        h = squeezed @ (matrix(w1) if w1 is consts[0] else w1.reshape(w1.shape[0], -1).T.astype(work))
        if b1 is not None:
            h += b1
        if act is not None:
            act(h)
        g = h @ (matrix(w2) if w2 is consts[2] else w2.reshape(w2.shape[0], -1).T.astype(work))
        if b2 is not None:
            g += b2
        if gate_act is not None:
            gate_act(g)
        y = np.multiply(x, g.reshape((n, 1, 1, c) if nhwc else (n, c, 1, 1)), out=out, casting="unsafe", dtype=work)
        return y if out is not None or y.dtype == x.dtype else y.astype(x.dtype)

    return squeeze_excite_fn
