"""Cast and CastLike: conversions between every IR dtype, strings and low-precision types included.

The ``to`` attribute holds an IR dtype string (the importer maps ONNX's codes). Conversions
follow ONNX (which defers to C): floats to integers truncate, integers wrap on overflow,
anything nonzero is True. Low-precision floats (bfloat16, float8, float4) widen exactly to
float32 and narrow with round-to-nearest-even. To float8, ``saturate=1`` (the default) clamps
out-of-range values, infinities included, to the largest finite value; ``saturate=0`` gives
NaN (or infinity for float8e5m2). float8e8m0 (powers of two) rounds by ``round_mode``
(``up``, ``down``, ``nearest``). int4/uint4/int2/uint2 wrap like the wider integers.
Strings follow ONNX Runtime's formats so results match it: numbers print with ``%.8g`` and
infinities/NaN as ``INF``/``-INF``/``NaN``; bools print as ``1``/``0``; parsing accepts what
C's ``strtod`` does (``1e-5``, ``-INF``, ``nan``, surrounding spaces).
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as _dt
from ..errors import GraphError
from ..graph import TensorType
from .elementwise import deliver, ieee_errors
from .registry import REQUIRED, OpContext, kernel, shape_rule, writes_out

_CAST_ATTRS = {"saturate": 1, "round_mode": "up"}
_ROUND_MODES = ("up", "down", "nearest")


def _widen(x: np.ndarray, src: str) -> tuple[np.ndarray, str]:
    """Low-precision values as the narrowest standard type that holds them exactly."""
    if src in _dt.SMALL_INT_DTYPES:
        return x.astype(np.int8 if src.startswith("int") else np.uint8), ("int8" if src.startswith("int") else "uint8")
    if src in _dt.LOW_PRECISION:
        return x.astype(np.float32), "float32"
    return x, src


def _to_string(x: np.ndarray, src: str) -> np.ndarray:
    x, src = _widen(x, src)
    if src == "string":
        return x.astype(object)
    if src == "bool":
        return np.where(x, "1", "0").astype(object)
    if src in _dt.INT_DTYPES:
        return x.astype(str).astype(object)
    text = np.char.mod("%.8g", x).astype(object)
    text[np.isnan(x)] = "NaN"
    text[np.isposinf(x)] = "INF"
    text[np.isneginf(x)] = "-INF"
    return text


def _from_string(x: np.ndarray, dst: str, saturate: int, round_mode: str) -> np.ndarray:
    x = x.astype(object)
    if dst in _dt.FLOAT_DTYPES or dst in _dt.SMALL_FLOAT_DTYPES or dst.startswith("complex"):
        values = x.astype(np.float64)
    else:
        try:  # integers parse exactly (int64 would lose precision through a double)
            values = x.astype(np.uint64 if dst == "uint64" else np.int64)
        except (ValueError, OverflowError):
            values = np.trunc(x.astype(np.float64))
        if dst == "bool":
            return values != 0
    return _from_number(values, dst, saturate, round_mode)


def to_float8e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float32 values as float8e8m0 (the exponent byte of a float32, sign dropped), rounded."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.uint16)
    special = exponent == 0xFF
    if round_mode == "up":
        bump = (bits & 0x7FFFFF) > 0
    elif round_mode == "nearest":
        guard = (bits & 0x400000) > 0
        rest = (bits & 0x3FFFFF) > 0
        bump = guard & (rest | (exponent > 0))
    else:
        bump = np.zeros(bits.shape, bool)
    bump &= ~special
    if saturate:
        bump &= exponent != 0xFE
    exponent = np.where(special, 0xFF, exponent + bump).astype(np.uint8)
    return exponent.view(_dt.to_numpy("float8e8m0"))


def _from_number(x: np.ndarray, dst: str, saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    x = np.asarray(x)
    with ieee_errors():
        if dst == "float8e8m0":
            return to_float8e8m0(x.astype(np.float32), bool(saturate), round_mode)
        if dst in _dt.FLOAT8_DTYPES:
            npdt = _dt.to_numpy(dst)
            x = x.astype(np.float32)
            if saturate:
                import ml_dtypes

                big = float(ml_dtypes.finfo(npdt).max)
                x = np.clip(x, -big, big)
            return x.astype(npdt)
        if dst in _dt.LOW_PRECISION and x.dtype.kind == "f" and x.dtype.itemsize > 4:
            x = x.astype(np.float32)  # ml_dtypes converts from float32 with one rounding
        return x.astype(_dt.to_numpy(dst))


def cast_array(x: np.ndarray, src: str, dst: str, out: np.ndarray | None = None, *,
               saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    """``x`` (of IR dtype ``src``) converted to IR dtype ``dst``; into ``out`` when given."""
    if src == dst:
        return x.copy() if out is None else deliver(x, out)
    if dst == "string":
        return deliver(_to_string(x, src), out)
    if src == "string":
        return deliver(_from_string(x, dst, saturate, round_mode), out)
    x, src = _widen(x, src)
    if src == dst:
        return deliver(x, out)
    if out is not None and dst not in _dt.LOW_PRECISION:
        with ieee_errors():
            np.copyto(out, x, casting="unsafe")  # the C cast, straight into the buffer
        return out
    return deliver(_from_number(x, dst, saturate, round_mode), out)


def _target(ctx: OpContext, to) -> str:
    try:
        _dt.to_numpy(to)
    except GraphError:
        raise ctx.error(f"attribute 'to' is {to!r}, which is not an IR dtype ({', '.join(sorted(_dt.DTYPES))})") from None
    return to


def _bind(ctx: OpContext, src: str, dst: str, saturate, round_mode):
    if round_mode not in _ROUND_MODES:
        raise ctx.error(f"attribute 'round_mode' is {round_mode!r}; expected one of {', '.join(_ROUND_MODES)}")

    @writes_out
    def cast_fn(x, target_type=None, out=None):
        return cast_array(x, src, dst, out, saturate=saturate, round_mode=round_mode)

    return cast_fn


@shape_rule("Cast")
def cast_shape(ctx: OpContext, to, saturate, round_mode) -> list[TensorType]:
    return [TensorType(_target(ctx, to), ctx.inputs[0].shape)]


@kernel("Cast", attrs={"to": REQUIRED, **_CAST_ATTRS})
def cast(ctx: OpContext, to, saturate, round_mode):
    return _bind(ctx, ctx.inputs[0].dtype, _target(ctx, to), saturate, round_mode)


@shape_rule("CastLike")
def cast_like_shape(ctx: OpContext, saturate, round_mode) -> list[TensorType]:
    return [TensorType(ctx.inputs[1].dtype, ctx.inputs[0].shape)]


@kernel("CastLike", attrs=dict(_CAST_ATTRS))
def cast_like(ctx: OpContext, saturate, round_mode):
    return _bind(ctx, ctx.inputs[0].dtype, ctx.inputs[1].dtype, saturate, round_mode)
