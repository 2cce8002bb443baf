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
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import GraphError

Activation = Callable[[np.ndarray], np.ndarray]


def _relu(y: np.ndarray) -> np.ndarray:
    return np.maximum(y, 0, out=y)


def _leaky_relu(alpha: float) -> Activation:
    def apply(y):
        np.multiply(y, alpha, out=y, where=y < 0)
        return y

    return apply


def _clip(lo: float, hi: float) -> Activation:
    return lambda y: np.clip(y, lo, hi, out=y)


def _hard_sigmoid(alpha: float, beta: float) -> Activation:
    def apply(y):
        y *= alpha
        y += beta
        return np.clip(y, 0, 1, out=y)

    return apply


def _hard_swish(y: np.ndarray) -> np.ndarray:
    gate = y * (1 / 6)
    gate += 0.5
    np.clip(gate, 0, 1, out=gate)
    y *= gate
    return y


def _sigmoid_into(y: np.ndarray, out: np.ndarray) -> np.ndarray:
    # exp(-y) overflows to inf for very negative y, giving the correct limit 1/inf = 0
    with np.errstate(over="ignore"):
        np.negative(y, out=out)
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def _sigmoid(y: np.ndarray) -> np.ndarray:
    return _sigmoid_into(y, y)


def _tanh(y: np.ndarray) -> np.ndarray:
    return np.tanh(y, out=y)


def _silu(y: np.ndarray) -> np.ndarray:
    y *= _sigmoid_into(y, np.empty_like(y))
    return y


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorized error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7), in float64.

    numpy has no erf and scipy is not a dependency; this bound is far below float32 rounding
    of the GELU outputs it feeds.
    """
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.copysign(1.0 - poly * np.exp(-a * a), x)


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
        y *= 0.5 * (1.0 + erf(y * (1.0 / math.sqrt(2.0))))
        return y

    return apply


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
