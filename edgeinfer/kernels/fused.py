"""Internal fused ops in the ``edgeinfer`` domain, produced by the cpu backend's fusion pass
(:func:`edgeinfer.optimize.fuse_conv_activation`).

* ``FusedConv``: Conv attributes plus ``activation`` (an activation name of
  :mod:`.activations`, ``""`` for none) and ``activation_params``; inputs ``X, W, [B], [Z]``.
  Computes ``act(conv(X, W) + B + Z)``.
* ``FusedGemm``: Gemm attributes plus the activation; inputs ``A, B, [C]``.
* ``FusedMatMul``: inputs ``A, B, [bias]``; computes ``act(A @ B + bias)``, bias broadcast.

The kernels are the Conv/Gemm/MatMul kernels themselves with the epilogue applied in place on
the GEMM output, so fusion costs no extra pass over memory and no duplicated code.
"""
from __future__ import annotations

from ..errors import GraphError, ShapeInferenceError
from ..graph import TensorType
from .activations import make_activation
from .conv import CONV_ATTRS, build_conv, conv_output_type
from .nn import GEMM_ATTRS, build_gemm, build_matmul, gemm_shape, matmul_type
from .registry import OpContext, kernel, shape_rule
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


@shape_rule("FusedConv", domain=DOMAIN)
def fused_conv_shape(ctx: OpContext, activation, activation_params, **attrs):
    _activation(ctx, activation, activation_params)
    y = conv_output_type(ctx, attrs)
    _check_epilogue_input(ctx, 3, y, "residual Z")
    return [y]


@kernel("FusedConv", domain=DOMAIN, attrs={**CONV_ATTRS, **_ACTIVATION_ATTRS})
def fused_conv(ctx: OpContext, activation, activation_params, **attrs):
    return build_conv(ctx, attrs, _activation(ctx, activation, activation_params))


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
