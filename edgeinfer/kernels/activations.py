"""In-place activation appliers for the fused ops of :mod:`.fused`.

``make_activation(name, params)`` returns ``f(y) -> y`` that overwrites the float array ``y``
with the activation of its values and returns it. Names are the ONNX op names and ``params``
their float attributes in ONNX order, so the fusion pass can copy them from the node it
absorbs:

============  =====================================  =====================================
name          params (defaults)                      y :=
============  =====================================  =====================================
Relu          -                                      max(y, 0)
LeakyRelu     alpha (0.01)                           y if y >= 0 else alpha * y
Clip          min (-inf), max (inf)                  min(max(y, min), max)
HardSigmoid   alpha (0.2), beta (0.5)                clip(alpha * y + beta, 0, 1)
HardSwish     -                                      y * clip(y / 6 + 0.5, 0, 1)
Sigmoid       -                                      1 / (1 + exp(-y))
Tanh          -                                      tanh(y)
SiLU          -                                      y * sigmoid(y)
Gelu          approximate (0: erf, 1: tanh)          y * Phi(y)
============  =====================================  =====================================

Temporaries come from the convolution workspace (:func:`.conv.scratch`): a fresh array for
the output of a large conv page-faults in at every call (a HardSwish over 3.3M values paid
~1 ms for it). So ``y`` itself must never be a scratch array.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import GraphError
from .conv import scratch
from .elementwise import erf, ieee_errors

Activation = Callable[[np.ndarray], np.ndarray]

try:  # the clip ufunc itself: np.clip adds ~2 us of Python dispatch per call
    from numpy._core.umath import clip as _clip_ufunc
except ImportError:  # numpy < 2
    from numpy.core.umath import clip as _clip_ufunc


def _temp(y: np.ndarray) -> np.ndarray:
    """A scratch array shaped like ``y`` (see the module docstring)."""
    return scratch((y.shape, y.dtype))[0]


def _relu(y: np.ndarray) -> np.ndarray:
    # clip runs ~3x faster than maximum against a scalar (which has no SIMD loop)
    return _clip_ufunc(y, 0, np.inf, out=y)


def _leaky_relu(alpha: float) -> Activation:
    def apply(y):
        np.multiply(y, alpha, out=y, where=y < 0)
        return y

    return apply


def _clip(lo: float, hi: float) -> Activation:
    return lambda y: _clip_ufunc(y, lo, hi, out=y)


def _hard_sigmoid(alpha: float, beta: float) -> Activation:
    def apply(y):
        y *= alpha
        y += beta
        return _clip_ufunc(y, 0, 1, out=y)

    return apply


def _hard_swish(y: np.ndarray) -> np.ndarray:
    # y * relu6(y + 3) / 6 in three passes over one temporary
    gate = _clip_ufunc(y, -3.0, 3.0, out=_temp(y))
    gate += 3.0
    gate *= y
    np.multiply(gate, 1 / 6, out=y)
    return y


def _sigmoid_into(y: np.ndarray, out: np.ndarray) -> np.ndarray:
    # exp(-y) overflows to inf for very negative y, giving the correct limit 1/inf = 0
    with ieee_errors():
        np.negative(y, out=out)
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def _sigmoid(y: np.ndarray) -> np.ndarray:
    return _sigmoid_into(y, y)


def _tanh(y: np.ndarray) -> np.ndarray:
    return np.tanh(y, out=y)


def _silu(y: np.ndarray) -> np.ndarray:
    y *= _sigmoid_into(y, _temp(y))
    return y


def silu_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = x * sigmoid(x)`` without a temporary (``out`` must not be ``x``)."""
    _sigmoid_into(x, out)
    out *= x
    return out


def _gelu(approximate: float) -> Activation:
    if approximate:
        k = math.sqrt(2.0 / math.pi)

        def apply(y):
            inner = y * y
            inner *= 0.044715 * y
            inner += y
            inner *= k
            np.tanh(inner, out=inner)
            inner += 1
            inner *= 0.5
            y *= inner
            return y

        return apply

    def apply(y):
        if y.dtype == np.float32:
            return _gelu_erf_float32(y)
        gate = erf(y * (1.0 / math.sqrt(2.0)))  # float64, |relative error| < 1e-9
        gate += 1.0
        gate *= 0.5
        np.multiply(y, gate, out=y, casting="unsafe")
        return y

    return apply


# Abramowitz & Stegun 7.1.26: erf(a) = 1 - t P(t) exp(-a^2), t = 1 / (1 + p a), a >= 0, with
# |error| < 1.5e-7 (below float32 rounding of the GELU output it feeds)
_AS_P = 0.3275911
_AS_POLY = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def _gelu_erf_float32(y: np.ndarray) -> np.ndarray:
    """``y * Phi(y)`` in place, in float32 throughout.

    Why not the float64 ``erf``: converting to float64 and its many passes cost ~35 ns per
    value, which made the GELU of a ViT MLP four times its matrix product. With
    ``h = 0.5 t P(t) exp(-a^2)`` (``a = |y| / sqrt(2)``), ``Phi(y)`` is ``1 - h`` for
    ``y >= 0`` and ``h`` below.
    """
    a, t, h = scratch((y.shape, y.dtype), (y.shape, y.dtype), (y.shape, y.dtype))
    np.abs(y, out=a)
    a *= np.float32(1 / math.sqrt(2.0))
    np.multiply(a, np.float32(_AS_P), out=t)
    t += np.float32(1)
    np.reciprocal(t, out=t)
    np.multiply(t, np.float32(_AS_POLY[0]), out=h)
    for c in _AS_POLY[1:]:
        h += np.float32(c)
        h *= t
    np.multiply(a, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    h *= a
    h *= np.float32(0.5)
    np.subtract(np.float32(1), h, out=h, where=y >= 0)
    with ieee_errors():  # -inf * 0: nan, as the formula gives
        y *= h
    return y


# name -> (parameter defaults, factory taking the parameters)
_TABLE: dict[str, tuple[tuple[float, ...], Callable[..., Activation]]] = {
    "Relu": ((), lambda: _relu),
    "LeakyRelu": ((0.01,), _leaky_relu),
    "Clip": ((-math.inf, math.inf), _clip),
    "HardSigmoid": ((0.2, 0.5), _hard_sigmoid),
    "HardSwish": ((), lambda: _hard_swish),
    "Sigmoid": ((), lambda: _sigmoid),
    "Tanh": ((), lambda: _tanh),
    "SiLU": ((), lambda: _silu),
    "Gelu": ((0.0,), _gelu),
}

ACTIVATIONS = tuple(_TABLE)


def make_activation(name: str, params=()) -> Activation:
    """The in-place applier of activation ``name`` with float ``params`` (see module docstring).

    Raises:
        GraphError: for an unknown name or too many parameters.
    """
    if name not in _TABLE:
        raise GraphError(f"unknown fused activation '{name}'; known: {', '.join(ACTIVATIONS)}")
    defaults, factory = _TABLE[name]
    params = [float(p) for p in (params or ())]
    if len(params) > len(defaults):
        raise GraphError(f"activation '{name}' takes at most {len(defaults)} parameters, found {params}")
    return factory(*(params + list(defaults[len(params):])))
