"""Cast and CastLike: conversions between every IR dtype, strings and bfloat16 included.

The ``to`` attribute holds an IR dtype string (the importer maps ONNX's codes). Conversions
follow ONNX (which defers to C): floats to integers truncate, integers wrap on overflow,
anything nonzero is True. bfloat16 is widened exactly and narrowed to the nearest even.
Strings follow ONNX Runtime's formats so results match it: numbers print with ``%.8g`` and
infinities/NaN as ``INF``/``-INF``/``NaN``; bools print as ``1``/``0``; parsing accepts what
C's ``strtod`` does (``1e-5``, ``-INF``, ``nan``, surrounding spaces). ``saturate`` and
``round_mode`` only concern float8 types, which the IR does not have; they are accepted and
ignored.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as _dt
from ..errors import GraphError
from ..graph import TensorType
from .elementwise import bfloat16_to_float32, deliver, float32_to_bfloat16
from .registry import REQUIRED, OpContext, kernel, shape_rule, writes_out

_CAST_ATTRS = {"saturate": 1, "round_mode": "up"}


def _to_string(x: np.ndarray, src: str) -> np.ndarray:
    if src == "string":
        return x.astype(object)
    if src == "bool":
        return np.where(x, "1", "0").astype(object)
    if src in _dt.INT_DTYPES:
        return x.astype(str).astype(object)
    if src == "bfloat16":
        x = bfloat16_to_float32(x)
    text = np.char.mod("%.8g", x).astype(object)
    text[np.isnan(x)] = "NaN"
    text[np.isposinf(x)] = "INF"
    text[np.isneginf(x)] = "-INF"
    return text


def _from_string(x: np.ndarray, dst: str) -> np.ndarray:
    x = x.astype(object)
    if dst in _dt.FLOAT_DTYPES or dst.startswith("complex"):
        values = x.astype(np.float64)
    else:
        try:  # integers parse exactly (int64 would lose precision through a double)
            values = x.astype(np.uint64 if dst == "uint64" else np.int64)
        except (ValueError, OverflowError):
            values = np.trunc(x.astype(np.float64))
        if dst == "bool":
            return values != 0
    return _from_number(values, dst)


def _from_number(x: np.ndarray, dst: str) -> np.ndarray:
    if dst == "bfloat16":
        return float32_to_bfloat16(x.astype(np.float32))
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(_dt.to_numpy(dst))


def cast_array(x: np.ndarray, src: str, dst: str, out: np.ndarray | None = None) -> np.ndarray:
    """``x`` (of IR dtype ``src``) converted to IR dtype ``dst``; into ``out`` when given."""
    if src == dst:
        return x.copy() if out is None else deliver(x, out)
    if dst == "string":
        return deliver(_to_string(x, src), out)
    if src == "string":
        return deliver(_from_string(x, dst), out)
    if src == "bfloat16":
        x, src = bfloat16_to_float32(x), "float32"
        if dst == "float32":
            return deliver(x, out)
    if out is not None and dst != "bfloat16":
        with np.errstate(invalid="ignore", over="ignore"):
            np.copyto(out, x, casting="unsafe")  # the C cast, straight into the buffer
        return out
    return deliver(_from_number(x, dst), out)


def _target(ctx: OpContext, to) -> str:
    try:
        _dt.to_numpy(to)
    except GraphError:
        raise ctx.error(f"attribute 'to' is {to!r}, which is not an IR dtype ({', '.join(sorted(_dt.DTYPES))})") from None
    return to


def _bind(src: str, dst: str):
    @writes_out
    def cast_fn(x, target_type=None, out=None):
        return cast_array(x, src, dst, out)

    return cast_fn


@shape_rule("Cast")
def cast_shape(ctx: OpContext, to, saturate, round_mode) -> list[TensorType]:
    return [TensorType(_target(ctx, to), ctx.inputs[0].shape)]


@kernel("Cast", attrs={"to": REQUIRED, **_CAST_ATTRS})
def cast(ctx: OpContext, to, saturate, round_mode):
    return _bind(ctx.inputs[0].dtype, _target(ctx, to))


@shape_rule("CastLike")
def cast_like_shape(ctx: OpContext, saturate, round_mode) -> list[TensorType]:
    return [TensorType(ctx.inputs[1].dtype, ctx.inputs[0].shape)]


@kernel("CastLike", attrs=dict(_CAST_ATTRS))
def cast_like(ctx: OpContext, saturate, round_mode):
    return _bind(ctx.inputs[0].dtype, ctx.inputs[1].dtype)
