"""Activation functions as ONNX operators: Relu, LeakyRelu, PRelu, Elu, Selu, Celu, Sigmoid,
HardSigmoid, HardSwish, Softplus, Softsign, Mish, Gelu, ThresholdedRelu, Shrink and Clip.

Registered through :func:`.elementwise.register_elementwise`, so dtype checks, broadcasting,
``out=`` buffers and float16/bfloat16 widening are the family's. Formulas are the numerically
stable forms: nothing here calls ``exp`` of a large positive number (Sigmoid, Softplus and
Mish go through ``exp(-|x|)``; Elu-like ops through ``expm1(min(x, 0))``). (The in-place
epilogues that fused Conv/Gemm apply live in :mod:`.activations`.)
"""
from __future__ import annotations

import math

import numpy as np

from .elementwise import FLOATS, NUMERIC, SIGNED_NUMERIC, Compute, deliver, erf, ieee_errors, quiet, register_elementwise
from .registry import OpContext

_SELU_ALPHA = 1.67326319217681884765625  # ONNX's float32 defaults, written exactly
_SELU_GAMMA = 1.05070102214813232421875


def _into(out, like):
    return np.empty_like(like) if out is None else out


# ------------------------------------------------------------------ piecewise linear
try:  # the clip ufunc itself (np.clip adds Python dispatch)
    from numpy._core.umath import clip as _clip_ufunc
except ImportError:  # numpy < 2
    from numpy.core.umath import clip as _clip_ufunc


def _relu(x, out=None):
    if x.dtype.kind == "f":
        # clip runs ~3x faster than maximum against a scalar (which has no SIMD loop)
        return _clip_ufunc(x, 0, np.inf, out=out)
    return np.maximum(x, 0, out=out)


def _leaky_relu(alpha: float) -> Compute:
    def compute(x, out=None):
        y = np.multiply(x, alpha, out=out)
        np.copyto(y, x, where=x >= 0)
        return y

    return compute


def _thresholded_relu(alpha: float) -> Compute:
    def compute(x, out=None):
        y = _into(out, x)
        y.fill(0)
        np.copyto(y, x, where=x > alpha)
        return y

    return compute


def _prelu(x, slope, out=None):
    if slope.ndim > x.ndim:  # leading dims of an all-1 slope (the shape rule allows no other)
        slope = slope.reshape(slope.shape[slope.ndim - x.ndim:])
    y = np.multiply(x, slope, out=_into(out, x))
    np.copyto(y, x, where=x >= 0)
    return y


def _hard_sigmoid(alpha: float, beta: float) -> Compute:
    def compute(x, out=None):
        y = np.multiply(x, alpha, out=out)
        y += beta
        return np.clip(y, 0, 1, out=y)

    return compute


def _hard_swish(x, out=None):
    y = np.multiply(x, 1 / 6, out=out)
    y += 0.5
    np.clip(y, 0, 1, out=y)
    y *= x
    return y


def _shrink(bias: float, lambd: float) -> Compute:
    def compute(x, out=None):
        y = np.zeros_like(x) if out is None else out
        if out is not None:
            y.fill(0)
        with ieee_errors():
            np.subtract(x, bias, out=y, where=x > lambd, casting="unsafe")
            np.add(x, bias, out=y, where=x < -lambd, casting="unsafe")
        return y

    return compute


def _clip(x, lo=None, hi=None, out=None):
    if lo is None and hi is None:
        return x.copy() if out is None else deliver(x, out)
    # bounds are scalars; a [1]-shaped one (accepted like ONNX Runtime) must not grow a 0-d x
    lo = None if lo is None else lo.reshape(())
    hi = None if hi is None else hi.reshape(())
    return np.clip(x, lo, hi, out=out)


def _check_clip(ctx: OpContext, kw: dict) -> None:
    for i, name in ((1, "min"), (2, "max")):
        t = ctx.inputs[i] if i < len(ctx.inputs) else None
        if t is None or t.shape is None:
            continue
        if len(t.shape) > 1 or (len(t.shape) == 1 and isinstance(t.shape[0], int) and t.shape[0] != 1):
            raise ctx.error(f"{name} must be a scalar, found shape {list(t.shape)}")


# ------------------------------------------------------------------------ smooth
def _sigmoid(x, out=None):
    # e = exp(-|x|) <= 1 never overflows: sigmoid = 1/(1+e) for x >= 0, e/(1+e) below
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)
    y = np.add(e, 1, out=_into(out, x))
    np.reciprocal(y, out=y)
    e *= y
    np.copyto(y, e, where=x < 0)
    return y


def _softplus_of(x):
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))
    t = np.abs(x)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    t += np.maximum(x, 0)
    return t


def _softplus(x, out=None):
    return deliver(_softplus_of(x), out)


def _softsign(x, out=None):
    d = np.abs(x)
    d += 1
    return np.divide(x, d, out=out)


def _mish(x, out=None):
    t = _softplus_of(x)
    np.tanh(t, out=t)
    return np.multiply(x, t, out=out)


def _exp_linear(alpha: float, gamma: float = 1.0, scale_in: float = 1.0) -> Compute:
    """gamma * (x if x > 0 else alpha * (exp(x * scale_in) - 1)): Elu, Selu and Celu."""

    def compute(x, out=None):
        neg = np.minimum(x, 0)
        if scale_in != 1.0:
            neg *= scale_in
        np.expm1(neg, out=neg)
        neg *= alpha
        y = deliver(neg, out)
        np.copyto(y, x, where=x > 0)
        if gamma != 1.0:
            y *= gamma
        return y

    return compute


def _celu(alpha: float) -> Compute:
    if alpha == 0:
        return _exp_linear(0.0)  # the limit alpha -> 0 is Relu
    return _exp_linear(alpha, scale_in=1.0 / alpha)


def _gelu(approximate: str) -> Compute:
    if approximate == "tanh":
        k = math.sqrt(2.0 / math.pi)

        def gelu_tanh(x, out=None):
            inner = x * x
            inner *= 0.044715
            inner += 1
            inner *= x
            inner *= k
            np.tanh(inner, out=inner)
            inner += 1
            inner *= 0.5
            return np.multiply(x, inner, out=out)

        return gelu_tanh

    def gelu_erf(x, out=None):
        phi = erf(x * (1.0 / math.sqrt(2.0)))
        phi += 1.0
        phi *= 0.5
        return np.multiply(x, phi, out=out, casting="unsafe")

    return gelu_erf


def _check_gelu(ctx: OpContext, kw: dict) -> None:
    if kw["approximate"] not in ("none", "tanh"):
        raise ctx.error(f"attribute approximate must be 'none' or 'tanh', found {kw['approximate']!r}")


# ------------------------------------------------------------------- registration
def _quiet_factory(make):
    return lambda **kw: quiet(make(**kw))


register_elementwise("Relu", _relu, accepts=SIGNED_NUMERIC)
register_elementwise("LeakyRelu", accepts=FLOATS, attrs={"alpha": 0.01}, make=_leaky_relu)
register_elementwise("ThresholdedRelu", accepts=FLOATS, attrs={"alpha": 1.0}, make=_thresholded_relu)
register_elementwise("PRelu", _prelu, accepts=NUMERIC, arity=2, shape_of=0)
register_elementwise(
    "HardSigmoid", accepts=FLOATS, attrs={"alpha": 0.2, "beta": 0.5}, make=_hard_sigmoid, wide_half=True
)
register_elementwise("HardSwish", _hard_swish, accepts=FLOATS, wide_half=True)
register_elementwise("Shrink", accepts=NUMERIC, attrs={"bias": 0.0, "lambd": 0.5}, make=_shrink)
register_elementwise("Clip", _clip, accepts=NUMERIC, arity=(1, 3), check=_check_clip, shape_of=0)
register_elementwise("Sigmoid", quiet(_sigmoid), accepts=FLOATS, wide_half=True)
register_elementwise("Softplus", quiet(_softplus), accepts=FLOATS, wide_half=True)
register_elementwise("Softsign", _softsign, accepts=FLOATS, wide_half=True)
register_elementwise("Mish", quiet(_mish), accepts=FLOATS, wide_half=True)
register_elementwise("Elu", accepts=FLOATS, attrs={"alpha": 1.0}, make=_quiet_factory(_exp_linear), wide_half=True)
register_elementwise(
    "Selu",
    accepts=FLOATS,
    attrs={"alpha": _SELU_ALPHA, "gamma": _SELU_GAMMA},
    make=_quiet_factory(lambda alpha, gamma: _exp_linear(alpha, gamma)),
    wide_half=True,
)
register_elementwise("Celu", accepts=FLOATS, attrs={"alpha": 1.0}, make=_quiet_factory(_celu), wide_half=True)
register_elementwise(
    "Gelu", accepts=FLOATS, attrs={"approximate": "none"}, make=_quiet_factory(_gelu), wide_half=True, check=_check_gelu
)
