"""Quantized operators: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
QLinearMatMul, ConvInteger and QLinearConv.

Granularity. A scale and its zero point (same shape) are per-tensor (one element), per-axis
(1-D, the length of x's ``axis``) or blocked (x's rank, ``ceil(D / block_size)`` along
``axis``); :class:`ScaleLayout` lays them out to broadcast against x, once when constant.

Rounding and saturation. Integer results round half to even (``np.rint``) and clip to the
type's range. float8 results clip to the finite range when ``saturate`` is set, else the cast
gives what ONNX's table says (Inf for E5M2, NaN for the others); float4e2m1 has no Inf/NaN and
always saturates.

Integer products without an integer BLAS. numpy's integer matmul is a plain loop, so the
integer GEMMs and convolutions run on float BLAS instead: float32 is exact while every partial
sum stays below 2**24 and float64 while it stays below 2**53, which 8-bit operands never reach.
A sum of ``(x - zx) * (w - zw)`` is bounded by ``max|x - zx|`` times the largest L1 norm of a
weight column (or filter); that norm is computed once for constant weights and ``max|x - zx|``
comes from the operand's type range and zero point. Only when that bound passes 2**24 is the
actual data looked at (a tighter bound), and only when that also fails does the product run in
float64. Requantization then works in float32 on the exact accumulator, as ONNX Runtime does.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from .. import dtypes as _dt
from ..errors import KernelError
from ..graph import TensorType
from .conv import CONV_ATTRS, build_conv, conv_output_type
from .nn import matmul_type
from .registry import OpContext, kernel, shape_rule, writes_out

# integer quantized types and the range they saturate to
INT_RANGES: dict[str, tuple[int, int]] = {
    "uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
    "uint4": (0, 15), "int4": (-8, 7), "uint2": (0, 3), "int2": (-2, 1),
}
FLOAT8 = frozenset({"float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz"})
# largest finite value of the small float types (what saturation clips to)
FLOAT_MAX = {"float8e4m3fn": 448.0, "float8e4m3fnuz": 240.0, "float8e5m2": 57344.0,
             "float8e5m2fnuz": 57344.0, "float4e2m1": 6.0}
QUANTIZED = frozenset(INT_RANGES) | FLOAT8 | {"float4e2m1"}  # QuantizeLinear outputs
DEQUANTIZABLE = QUANTIZED | {"int32"}
Q_INPUTS = frozenset({"float32", "float16", "bfloat16", "float64", "int32"})
SCALE_TYPES = frozenset({"float32", "float16", "bfloat16", "float64", "int32", "float8e8m0"})
DQ_OUTPUTS = frozenset({"float32", "float16", "bfloat16", "float64"})
QLINEAR_TYPES = frozenset({"int8", "uint8"}) | FLOAT8  # QLinearMatMul operands
INT8_TYPES = frozenset({"int8", "uint8"})  # MatMulInteger, ConvInteger, QLinearConv

# The importer maps Cast's ``to`` to IR dtype strings; until it does the same for these ops'
# ``output_dtype`` and ``precision`` the ONNX TensorProto code may arrive instead.
_ONNX_CODES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 10: "float16",
    11: "float64", 16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2",
    20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1", 24: "float8e8m0", 25: "uint2",
    26: "int2",
}

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
F32_EXACT = float(2 ** 24)  # integers below this add exactly in float32
INT32_LIMIT = float(2 ** 31)


# ----------------------------------------------------------------------------- helpers
def _value(ctx: OpContext, i: int) -> np.ndarray | None:
    return ctx.values[i] if i < len(ctx.values) else None


def _input(ctx: OpContext, i: int) -> TensorType | None:
    return ctx.inputs[i] if i < len(ctx.inputs) and ctx.has_input(i) else None


def _dtype_attr(ctx: OpContext, name: str, value) -> str | None:
    """An element-type attribute as an IR dtype (``None`` when unset, i.e. 0 or empty)."""
    if value in (None, 0, ""):
        return None
    if isinstance(value, str) and value in _dt.DTYPES:
        return value
    if isinstance(value, int) and value in _ONNX_CODES:
        return _ONNX_CODES[value]
    raise ctx.error(f"attribute '{name}' = {value!r} is not an element type")


def _check_dtype(ctx: OpContext, i: int, what: str, allowed: frozenset) -> str | None:
    t = _input(ctx, i)
    if t is None:
        return None
    if t.dtype not in allowed:
        raise ctx.error(f"input {what} has dtype {t.dtype}; expected one of {', '.join(sorted(allowed))}")
    return t.dtype


def _runtime_fail(label: str) -> Callable[[str], Exception]:
    return lambda msg: KernelError(f"{label}: {msg}")


def saturate_cast(y: np.ndarray, dtype: str, saturate: bool = True) -> np.ndarray:
    """Float values (already scaled, zero point added) as quantized type ``dtype``.

    Integers must already be rounded; they are clipped to the type's range here. ``y`` may be
    modified in place.
    """
    target = _dt.to_numpy(dtype)
    if dtype in INT_RANGES:
        lo, hi = INT_RANGES[dtype]
        np.clip(y, lo, hi, out=y)
        with np.errstate(invalid="ignore"):  # NaN has no integer value; ONNX leaves it undefined
            return y.astype(target)
    if saturate or dtype == "float4e2m1":
        big = FLOAT_MAX[dtype]
        np.clip(y, -big, big, out=y)  # NaN stays NaN
    return y.astype(F32, copy=False).astype(target)


def _low_precision(a: np.ndarray) -> bool:
    """Whether ``a`` holds an ml_dtypes type (bfloat16, float8, int4, ...): numpy files those
    under kind "V", and their arithmetic goes through float32."""
    return a.dtype.kind == "V"


def _deliver(y: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None or y is out:
        return y
    np.copyto(out, y, casting="unsafe")
    return out


# ------------------------------------------------------------------------- granularity
@dataclasses.dataclass(frozen=True)
class ScaleLayout:
    """How a scale (or zero point) of one shape broadcasts against x of another."""

    kind: str  # "tensor", "axis" or "block"
    axis: int = 0
    block: int = 0

    @classmethod
    def of(cls, x_shape: tuple, s_shape: tuple, axis: int, block_size: int) -> "ScaleLayout":
        """The layout for concrete shapes; ValueError says what does not fit."""
        r = len(x_shape)
        size = int(np.prod(s_shape, dtype=np.int64))
        if block_size < 0:
            raise ValueError(f"block_size must be >= 0, found {block_size}")
        if block_size == 0 and size == 1 and len(s_shape) <= 1:
            return cls("tensor")
        if not -r <= axis < r:
            raise ValueError(f"axis {axis} is out of range for input rank {r}")
        a = axis % r
        if block_size == 0:
            if len(s_shape) != 1 or s_shape[0] != x_shape[a]:
                raise ValueError(
                    f"scale of shape {list(s_shape)} must be a scalar or a 1-D tensor of length "
                    f"{x_shape[a]} (input shape {list(x_shape)}, axis {axis}); blocked scales need block_size"
                )
            return cls("axis", a)
        want = tuple(-(-d // block_size) if i == a else d for i, d in enumerate(x_shape))
        if tuple(s_shape) != want:
            raise ValueError(
                f"blocked scale of shape {list(s_shape)} does not fit input {list(x_shape)} with axis "
                f"{axis} and block_size {block_size}: expected {list(want)}"
            )
        return cls("block", a, block_size)

    def expand(self, s: np.ndarray, x_shape: tuple) -> np.ndarray:
        """``s`` reshaped or repeated so that it broadcasts against ``x_shape``."""
        if self.kind == "tensor":
            return s.reshape(())
        if self.kind == "axis":
            return s.reshape((1,) * self.axis + (-1,) + (1,) * (len(x_shape) - self.axis - 1))
        d = x_shape[self.axis]
        if s.shape[self.axis] * self.block == d:
            return np.repeat(s, self.block, axis=self.axis)
        return np.repeat(s, self.block, axis=self.axis)[(slice(None),) * self.axis + (slice(0, d),)]


def _check_layout(ctx: OpContext, x: TensorType, s: TensorType | None, zp: TensorType | None,
                  axis: int, block_size: int) -> None:
    """Compile-time validation of scale and zero point shapes, where they are known."""
    if block_size < 0:
        raise ctx.error(f"block_size must be >= 0, found {block_size}")
    def static(t: TensorType | None) -> bool:
        return t is not None and t.shape is not None and all(isinstance(d, int) for d in t.shape)

    if static(x) and static(s):
        try:
            ScaleLayout.of(tuple(x.shape), tuple(s.shape), axis, block_size)
        except ValueError as e:
            raise ctx.error(str(e)) from None
    if static(s) and static(zp) and not _same_layout(tuple(s.shape), tuple(zp.shape)):
        raise ctx.error(f"zero point shape {list(zp.shape)} differs from scale shape {list(s.shape)}")


def _same_layout(s_shape: tuple, z_shape: tuple) -> bool:
    # a scalar and a one-element vector both mean per-tensor
    one = lambda sh: len(sh) <= 1 and int(np.prod(sh, dtype=np.int64)) == 1  # noqa: E731
    return tuple(s_shape) == tuple(z_shape) or (one(s_shape) and one(z_shape))


class _Operand:
    """A scale or zero point input laid out against x and converted by ``convert``; the
    result is cached per x shape when the input is a compile-time constant."""

    def __init__(self, const: np.ndarray | None, axis: int, block_size: int, convert: Callable, fail,
                 what: str):
        self.const, self.axis, self.block_size = const, axis, block_size
        self.convert, self.fail, self.what = convert, fail, what
        self.cache: dict[tuple, np.ndarray] = {}

    def __call__(self, a: np.ndarray, x_shape: tuple) -> np.ndarray:
        constant = a is self.const
        if constant and x_shape in self.cache:
            return self.cache[x_shape]
        try:
            layout = ScaleLayout.of(x_shape, a.shape, self.axis, self.block_size)
        except ValueError as e:
            raise self.fail(f"{self.what}: {e}") from None
        v = self.convert(layout.expand(a, x_shape))
        if constant:
            self.cache[x_shape] = v
        return v


# ----------------------------------------------------------------------- QuantizeLinear
Q_ATTRS = {"axis": 1, "block_size": 0, "output_dtype": 0, "precision": 0, "saturate": 1}


def _quantize_out_dtype(ctx: OpContext, output_dtype) -> str:
    zp = _input(ctx, 2)
    want = _dtype_attr(ctx, "output_dtype", output_dtype)
    if zp is not None:
        if want is not None and want != zp.dtype:
            raise ctx.error(f"output_dtype {want} differs from the zero point's dtype {zp.dtype}")
        want = zp.dtype
    want = want or "uint8"
    if want not in QUANTIZED:
        raise ctx.error(f"cannot quantize to {want}; expected one of {', '.join(sorted(QUANTIZED))}")
    return want


@shape_rule("QuantizeLinear")
def quantize_linear_shape(ctx: OpContext, axis, block_size, output_dtype, precision, saturate):
    x = ctx.inputs[0]
    _check_dtype(ctx, 0, "x", Q_INPUTS)
    _check_dtype(ctx, 1, "y_scale", SCALE_TYPES)
    _dtype_attr(ctx, "precision", precision)
    out = _quantize_out_dtype(ctx, output_dtype)
    _check_layout(ctx, x, _input(ctx, 1), _input(ctx, 2), axis, block_size)
    return [TensorType(out, x.shape)]


def _division(precision: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``x / scale`` rounded as if computed in ``precision`` (the scale's type by default).

    float16 and bfloat16 divisions are done in float32 and rounded once: with at most 11 of
    float32's 24 significand bits in the operands, that is the correctly rounded quotient.
    Integer precision divides in float64, exact enough to round int32 / int32 to the nearest.
    """
    if precision in ("float64", "int32"):
        return lambda x, s: np.divide(x, s, dtype=F64)
    if precision in ("float16", "bfloat16"):
        narrow = _dt.to_numpy(precision)

        def divide_narrow(x, s):
            q = np.divide(x.astype(narrow).astype(F32), s, dtype=F32)
            return q.astype(narrow).astype(F32)

        return divide_narrow
    return lambda x, s: np.divide(x.astype(F32, copy=False), s, dtype=F32)



def _array(y) -> np.ndarray:
    """numpy gives a scalar, not a 0-d array, for arithmetic on 0-d inputs; ``out=`` needs arrays."""
    return y if isinstance(y, np.ndarray) else np.array(y)

@kernel("QuantizeLinear", attrs=Q_ATTRS)
def quantize_linear(ctx: OpContext, axis, block_size, output_dtype, precision, saturate):
    out_dtype = _quantize_out_dtype(ctx, output_dtype)
    s_type = ctx.inputs[1].dtype if ctx.inputs[1] is not None else "float32"
    prec = _dtype_attr(ctx, "precision", precision) or s_type
    if prec == "float8e8m0":  # powers of two: any float divides them exactly
        prec = "float32"
    if prec in ("float16", "bfloat16"):
        narrow = _dt.to_numpy(prec)  # the scale is rounded to the precision first
        to_scale = lambda s: s.astype(narrow).astype(F32)  # noqa: E731
    else:
        wide = F64 if prec in ("float64", "int32") else F32
        to_scale = lambda s: s.astype(wide)  # noqa: E731
    fail = _runtime_fail(ctx.node.label)
    scale = _Operand(_value(ctx, 1), axis, block_size, to_scale, fail, "y_scale")
    zero = _Operand(_value(ctx, 2), axis, block_size, lambda z: z.astype(F32), fail, "y_zero_point")
    divide = _division(prec)
    integer = out_dtype in INT_RANGES
    sat = bool(saturate)

    def quantize_linear_fn(x, y_scale, y_zero_point=None):
        y = _array(divide(x, scale(y_scale, x.shape)))
        if integer:
            np.rint(y, out=y)
        if y_zero_point is not None:
            z = zero(y_zero_point, x.shape)
            if integer or z.any():
                y += z
        return saturate_cast(y, out_dtype, sat)

    return quantize_linear_fn


# --------------------------------------------------------------------- DequantizeLinear
DQ_ATTRS = {"axis": 1, "block_size": 0, "output_dtype": 0}


def _dequantize_out_dtype(ctx: OpContext, output_dtype) -> str:
    want = _dtype_attr(ctx, "output_dtype", output_dtype)
    s = ctx.inputs[1]
    out = want or (s.dtype if s is not None else "float32")
    if out not in DQ_OUTPUTS:
        hint = "; set output_dtype" if want is None else ""
        raise ctx.error(f"cannot dequantize to {out}{hint}; expected one of {', '.join(sorted(DQ_OUTPUTS))}")
    return out


@shape_rule("DequantizeLinear")
def dequantize_linear_shape(ctx: OpContext, axis, block_size, output_dtype):
    x = ctx.inputs[0]
    xd = _check_dtype(ctx, 0, "x", DEQUANTIZABLE)
    _check_dtype(ctx, 1, "x_scale", SCALE_TYPES - {"int32"})
    zd = _input(ctx, 2).dtype if _input(ctx, 2) is not None else None
    if zd is not None and zd != xd:
        raise ctx.error(f"x_zero_point has dtype {zd} but x has {xd}; they must match")
    out = _dequantize_out_dtype(ctx, output_dtype)
    _check_layout(ctx, x, _input(ctx, 1), _input(ctx, 2), axis, block_size)
    return [TensorType(out, x.shape)]


@kernel("DequantizeLinear", attrs=DQ_ATTRS)
def dequantize_linear(ctx: OpContext, axis, block_size, output_dtype):
    out_dtype = _dequantize_out_dtype(ctx, output_dtype)
    target = _dt.to_numpy(out_dtype)
    wide = out_dtype == "float64"
    work = F64 if wide else F32
    fail = _runtime_fail(ctx.node.label)
    to_work = lambda a: a.astype(work)  # noqa: E731
    scale = _Operand(_value(ctx, 1), axis, block_size, to_work, fail, "x_scale")
    zero = _Operand(_value(ctx, 2), axis, block_size, to_work, fail, "x_zero_point")

    # The product is computed in float32 (float64 for float64 outputs) and rounded once to
    # the output type: for 16-bit outputs that is at least as exact as multiplying in them,
    # and (x - zero point) of int16/uint16 inputs can exceed float16's range.
    @writes_out
    def dequantize_linear_fn(x, x_scale, x_zero_point=None, out=None):
        s = scale(x_scale, x.shape)
        y = out if out is not None and out.dtype == work and out.flags.c_contiguous else None
        if _low_precision(x):
            x = x.astype(work)  # float8, float4, int4, int2: exact in float32
        if x_zero_point is None:
            y = _array(np.multiply(x, s, out=y, dtype=work))
        else:
            z = zero(x_zero_point, x.shape)
            if x.dtype == np.int32 and not wide:
                # int32 - zero point is exact in int64, then rounded once to float32
                d = np.subtract(x, z.astype(np.int64), dtype=np.int64)
                y = _array(np.multiply(d, s, out=y, dtype=work))
            else:
                y = _array(np.subtract(x, z, out=y, dtype=work))
                np.multiply(y, s, out=y)
        if y.dtype != target:
            y = y.astype(target)
        return _deliver(y, out)

    return dequantize_linear_fn


# ---------------------------------------------------------------- DynamicQuantizeLinear
@shape_rule("DynamicQuantizeLinear")
def dynamic_quantize_linear_shape(ctx: OpContext):
    x = ctx.inputs[0]
    _check_dtype(ctx, 0, "x", frozenset({"float32"}))
    return [TensorType("uint8", x.shape), TensorType("float32", ()), TensorType("uint8", ())]


@kernel("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx: OpContext):
    def dynamic_quantize_linear_fn(x):
        # the range always includes 0 so that 0 quantizes exactly
        lo = min(0.0, float(x.min())) if x.size else 0.0
        hi = max(0.0, float(x.max())) if x.size else 0.0
        # an all-zero input would give scale 0; ONNX Runtime uses 1 there, and so do we
        scale = np.float32(1.0) if hi == lo else np.float32(np.float32(hi) - np.float32(lo)) / np.float32(255)
        zp = np.rint(np.clip(np.float32(0) - np.float32(lo) / scale, 0, 255))
        y = _array(np.divide(x, scale, dtype=F32))
        np.rint(y, out=y)
        y += zp
        np.clip(y, 0, 255, out=y)
        return y.astype(np.uint8), np.array(scale, F32), np.array(zp, np.uint8)

    return dynamic_quantize_linear_fn


# ------------------------------------------------------------------- integer products
def _range_absmax(dtype: np.dtype, zp: np.ndarray | None) -> float:
    """Largest ``|x - zp|`` any value of integer type ``dtype`` can give."""
    info = np.iinfo(dtype)
    if zp is None or zp.size == 0:
        return float(max(info.max, -info.min))
    z = zp.astype(np.int64)
    return float(max(info.max - z.min(), z.max() - info.min))


def _centered(a: np.ndarray, zp: np.ndarray | None, dtype) -> np.ndarray:
    """``a - zp`` as float ``dtype`` (exact for 8-bit integers)."""
    if _low_precision(a):
        a = a.astype(F32)
    if zp is None:
        return a.astype(dtype)
    if _low_precision(zp):
        zp = zp.astype(F32)
    return np.subtract(a, zp, dtype=dtype)


def _row_operand(z: np.ndarray | None, a_shape: tuple, fail, what: str) -> np.ndarray | None:
    """A per-tensor or per-row quantization parameter of the left operand, shaped to
    broadcast against it: a 1-D vector of M values becomes (M, 1)."""
    if z is None or z.size == 1:
        return None if z is None else z.reshape(())
    if z.ndim == 1 and len(a_shape) >= 2:
        if z.shape[0] != a_shape[-2]:
            raise fail(f"{what} has {z.shape[0]} values; per-row quantization of an input of shape "
                       f"{list(a_shape)} needs {a_shape[-2]}")
        return z.reshape(-1, 1)
    return z


def _col_operand(z: np.ndarray | None, b_shape: tuple, fail, what: str) -> np.ndarray | None:
    """A per-tensor or per-column quantization parameter of the right operand."""
    if z is None or z.size == 1:
        return None if z is None else z.reshape(())
    if z.ndim == 1 and z.shape[0] != b_shape[-1]:
        raise fail(f"{what} has {z.shape[0]} values; per-column quantization of an input of shape "
                   f"{list(b_shape)} needs {b_shape[-1]}")
    return z


class _RightOperand:
    """``b - b_zero_point`` in float32 with the norms that bound the product, cached for
    constants; the float64 copy is made only when a product needs it."""

    def __init__(self, b_const, zp_const, fail, what: str):
        self.b_const, self.zp_const, self.fail, self.what = b_const, zp_const, fail, what
        self.cached = None

    def __call__(self, b: np.ndarray, zp: np.ndarray | None) -> dict:
        if self.cached is not None and b is self.b_const and zp is self.zp_const:
            return self.cached
        zp = _col_operand(zp, b.shape, self.fail, self.what)
        bc = _centered(b, zp, F32)
        mag = np.abs(bc)
        prepared = {
            "f32": bc,
            "col_l1": float(np.max(mag.sum(axis=-2 if bc.ndim > 1 else 0), initial=0.0)),
            "absmax": float(np.max(mag, initial=0.0)),
        }
        if b is self.b_const and zp is self.zp_const:
            self.cached = prepared
        return prepared


def _exact_matmul(a: np.ndarray, a_zp: np.ndarray | None, right: dict, fail) -> np.ndarray:
    """``(a - a_zp) @ right`` exactly, in float32 when the sums allow it, else float64."""
    ac = _centered(a, a_zp, F32)
    bc = right["f32"]
    fits = a.dtype.kind in "iu" and _range_absmax(a.dtype, a_zp) * right["col_l1"] < F32_EXACT
    if not fits:  # the data's own row norms may still be small enough
        fits = float(np.max(np.abs(ac).sum(axis=-1), initial=0.0)) * right["absmax"] < F32_EXACT
    try:
        if fits:
            return np.matmul(ac, bc)
        b64 = right.get("f64")
        if b64 is None:
            b64 = right["f64"] = bc.astype(F64)
        return np.matmul(ac.astype(F64), b64)
    except ValueError as e:
        raise fail(f"cannot multiply shapes {list(a.shape)} and {list(bc.shape)}: {e}") from e


def _to_int32(acc: np.ndarray) -> np.ndarray:
    """An exact float accumulator as int32, wrapping past 2**31 as an int32 accumulator would."""
    if acc.dtype == F64:
        return acc.astype(np.int64).astype(np.int32)
    return acc.astype(np.int32)


def _requantize(acc: np.ndarray, multiplier, zp: np.ndarray | None, out_dtype: str, fail) -> np.ndarray:
    """``saturate(round(acc * multiplier) + zp)`` in float32, as ONNX Runtime requantizes."""
    try:
        y = _array(np.multiply(acc, multiplier, dtype=F32))
    except ValueError as e:
        raise fail(f"scales of shape {list(np.shape(multiplier))} do not broadcast to the output "
                   f"shape {list(acc.shape)}") from e
    integer = out_dtype in INT_RANGES
    if integer:
        np.rint(y, out=y)
    if zp is not None:
        y += zp.astype(F32)
    return saturate_cast(y, out_dtype, True)


# ------------------------------------------------------------------------ MatMulInteger
def _matmul_ctx(ctx: OpContext, a: int, b: int) -> OpContext:
    return dataclasses.replace(ctx, inputs=[ctx.inputs[a], ctx.inputs[b]],
                               values=[_value(ctx, a), _value(ctx, b)])


def _check_zero_point(ctx: OpContext, z: int, of: int, what: str) -> None:
    zt, t = _input(ctx, z), _input(ctx, of)
    if zt is not None and t is not None and zt.dtype != t.dtype:
        raise ctx.error(f"{what} has dtype {zt.dtype} but its input has {t.dtype}; they must match")


@shape_rule("MatMulInteger")
def matmul_integer_shape(ctx: OpContext):
    _check_dtype(ctx, 0, "A", INT8_TYPES)
    _check_dtype(ctx, 1, "B", INT8_TYPES)
    _check_zero_point(ctx, 2, 0, "a_zero_point")
    _check_zero_point(ctx, 3, 1, "b_zero_point")
    return [TensorType("int32", matmul_type(_matmul_ctx(ctx, 0, 1)).shape)]


@kernel("MatMulInteger")
def matmul_integer(ctx: OpContext):
    fail = _runtime_fail(ctx.node.label)
    right = _RightOperand(_value(ctx, 1), _value(ctx, 3), fail, "b_zero_point")

    def matmul_integer_fn(a, b, a_zero_point=None, b_zero_point=None):
        a_zp = _row_operand(a_zero_point, a.shape, fail, "a_zero_point")
        return _to_int32(_exact_matmul(a, a_zp, right(b, b_zero_point), fail))

    return matmul_integer_fn


# ------------------------------------------------------------------------ QLinearMatMul
@shape_rule("QLinearMatMul")
def qlinear_matmul_shape(ctx: OpContext):
    scales = frozenset({"float32", "float16", "bfloat16"})
    _check_dtype(ctx, 0, "a", QLINEAR_TYPES)
    _check_dtype(ctx, 3, "b", QLINEAR_TYPES)
    for i, name in ((1, "a_scale"), (4, "b_scale"), (6, "y_scale")):
        _check_dtype(ctx, i, name, scales)
    _check_zero_point(ctx, 2, 0, "a_zero_point")
    _check_zero_point(ctx, 5, 3, "b_zero_point")
    yz = _input(ctx, 7)
    out = yz.dtype if yz is not None else ctx.inputs[0].dtype
    if out not in QLINEAR_TYPES:
        raise ctx.error(f"y_zero_point has dtype {out}; expected one of {', '.join(sorted(QLINEAR_TYPES))}")
    return [TensorType(out, matmul_type(_matmul_ctx(ctx, 0, 3)).shape)]


@kernel("QLinearMatMul")
def qlinear_matmul(ctx: OpContext):
    fail = _runtime_fail(ctx.node.label)
    yz = _input(ctx, 7)
    out_dtype = yz.dtype if yz is not None else ctx.inputs[0].dtype
    right = _RightOperand(_value(ctx, 3), _value(ctx, 5), fail, "b_zero_point")
    scale_consts = (_value(ctx, 1), _value(ctx, 4), _value(ctx, 6))
    cached: dict[tuple, np.ndarray] = {}

    def multiplier(a_scale, b_scale, y_scale, a_shape, b_shape):
        key = (a_shape, b_shape)
        constant = all(s is c for s, c in zip((a_scale, b_scale, y_scale), scale_consts))
        if constant and key in cached:
            return cached[key]
        sa = _row_operand(a_scale, a_shape, fail, "a_scale").astype(F32)
        sb = _col_operand(b_scale, b_shape, fail, "b_scale").astype(F32)
        m = sa * sb / y_scale.astype(F32)
        if constant:
            cached[key] = m
        return m

    def qlinear_matmul_fn(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point=None):
        a_zp = _row_operand(a_zero_point, a.shape, fail, "a_zero_point")
        if a.dtype.kind in "iu":
            acc = _exact_matmul(a, a_zp, right(b, b_zero_point), fail)
        else:  # float8 operands: a plain float32 product
            bz = _col_operand(b_zero_point, b.shape, fail, "b_zero_point")
            acc = np.matmul(_centered(a, a_zp, F32), _centered(b, bz, F32))
        m = multiplier(a_scale, b_scale, y_scale, a.shape, b.shape)
        return _requantize(acc, m, y_zero_point, out_dtype, fail)

    return qlinear_matmul_fn


# ----------------------------------------------------------- ConvInteger and QLinearConv
def _float_conv_ctx(ctx: OpContext, x: int, w: int, b: int | None, dtype: str, w_value=None,
                    b_value=None) -> OpContext:
    """A Conv context over float copies of the integer operands (what :func:`build_conv` takes)."""
    as_float = lambda t: None if t is None else TensorType(dtype, t.shape)  # noqa: E731
    inputs = [as_float(ctx.inputs[x]), as_float(ctx.inputs[w])]
    values = [None, w_value]
    if b is not None and _input(ctx, b) is not None:
        inputs.append(as_float(ctx.inputs[b]))
        values.append(b_value)
    outputs = [TensorType(dtype, t.shape) for t in ctx.outputs]
    return OpContext(ctx.node, inputs, values, outputs, ctx.options)


def _conv_shape(ctx: OpContext, attrs: dict, x: int, w: int, out_dtype: str) -> TensorType:
    t = conv_output_type(_float_conv_ctx(ctx, x, w, None, "float32"), attrs)
    return TensorType(out_dtype, t.shape)


def _check_conv_zero_points(ctx: OpContext, xz: int, wz: int) -> None:
    xt, wt = _input(ctx, xz), _input(ctx, wz)
    if xt is not None and xt.shape is not None and len(xt.shape) > 1:
        raise ctx.error(f"the input's zero point must be a scalar, found shape {list(xt.shape)}")
    if wt is not None and wt.shape is not None and len(wt.shape) > 1:
        raise ctx.error(f"the weight's zero point must be a scalar or 1-D, found shape {list(wt.shape)}")


class _IntegerConv:
    """``(x - x_zp) * (w - w_zp)`` (+ bias) exactly, on edgeinfer's float Conv kernel.

    One float Conv is built per compute dtype (float32, and float64 only if a product needs
    it), each with its own constant copy of the centered weight so the Conv kernel's weight
    layout cache keeps working.
    """

    def __init__(self, ctx: OpContext, attrs: dict, x: int, w: int, w_zp: int, b: int | None = None):
        self.ctx, self.attrs, self.x, self.w, self.b = ctx, attrs, x, w, b
        self.fail = _runtime_fail(ctx.node.label)
        self.w_const, self.zp_const = _value(ctx, w), _value(ctx, w_zp)
        self.b_const = _value(ctx, b) if b is not None else None
        self.fixed = self.w_const is not None and (self.zp_const is not None or not ctx.has_input(w_zp))
        self.convs: dict[np.dtype, tuple] = {}
        self.weight = None  # (float32 centered weight, largest filter L1 norm) when constant
        if self.fixed:
            self.weight = self._center_weight(self.w_const, self.zp_const, ctx.error)
        self._conv(F32)  # plan the usual float32 Conv at compile time

    def _center_weight(self, w: np.ndarray, zp: np.ndarray | None, fail) -> tuple[np.ndarray, float]:
        if zp is not None and zp.size > 1:
            if zp.ndim != 1 or zp.shape[0] != w.shape[0]:
                raise fail(f"weight zero point has shape {list(zp.shape)}; expected a scalar or "
                                f"{w.shape[0]} values (one per output channel)")
            zp = zp.reshape((-1,) + (1,) * (w.ndim - 1))
        elif zp is not None:
            zp = zp.reshape(())
        wc = _centered(w, zp, F32)
        l1 = float(np.max(np.abs(wc).reshape(w.shape[0], -1).sum(axis=1), initial=0.0)) if w.size else 0.0
        return wc, l1

    def _conv(self, dtype: np.dtype):
        """(conv fn, constant centered weight or None, constant float bias or None) for ``dtype``."""
        entry = self.convs.get(dtype)
        if entry is None:
            w_value = self.weight[0].astype(dtype) if self.weight is not None else None
            b_value = self.b_const.astype(dtype) if self.b_const is not None else None
            fctx = _float_conv_ctx(self.ctx, self.x, self.w, self.b, dtype.name, w_value, b_value)
            entry = self.convs[dtype] = (build_conv(fctx, self.attrs), w_value, b_value)
        return entry

    def __call__(self, x: np.ndarray, x_zp, w: np.ndarray, w_zp, bias=None) -> np.ndarray:
        if x_zp is not None and x_zp.size != 1:
            raise self.fail(f"the input's zero point must be a scalar, found shape {list(x_zp.shape)}")
        x_zp = None if x_zp is None else x_zp.reshape(())
        fixed = self.fixed and w is self.w_const and w_zp is self.zp_const
        wc, l1 = self.weight if fixed else self._center_weight(w, w_zp, self.fail)
        xc = None
        fits = _range_absmax(x.dtype, x_zp) * l1 < F32_EXACT
        if not fits:  # the data's own range may still keep the sums exact
            xc = _centered(x, x_zp, F32)
            fits = float(np.max(np.abs(xc), initial=0.0)) * l1 < F32_EXACT
        dtype = F32 if fits else F64
        fn, w_value, b_value = self._conv(dtype)
        if xc is None or xc.dtype != dtype:
            xc = _centered(x, x_zp, dtype)
        wd = w_value if fixed else wc.astype(dtype, copy=False)
        if bias is None:
            return fn(xc, wd)
        bd = b_value if (bias is self.b_const and b_value is not None) else bias.astype(dtype)
        return fn(xc, wd, bd)


@shape_rule("ConvInteger")
def conv_integer_shape(ctx: OpContext, **attrs):
    _check_dtype(ctx, 0, "x", INT8_TYPES)
    _check_dtype(ctx, 1, "w", INT8_TYPES)
    _check_zero_point(ctx, 2, 0, "x_zero_point")
    _check_zero_point(ctx, 3, 1, "w_zero_point")
    _check_conv_zero_points(ctx, 2, 3)
    return [_conv_shape(ctx, attrs, 0, 1, "int32")]


@kernel("ConvInteger", attrs=CONV_ATTRS)
def conv_integer(ctx: OpContext, **attrs):
    conv = _IntegerConv(ctx, attrs, 0, 1, 3)

    def conv_integer_fn(x, w, x_zero_point=None, w_zero_point=None):
        return _to_int32(conv(x, x_zero_point, w, w_zero_point))

    return conv_integer_fn


@shape_rule("QLinearConv")
def qlinear_conv_shape(ctx: OpContext, **attrs):
    _check_dtype(ctx, 0, "x", INT8_TYPES)
    _check_dtype(ctx, 3, "w", INT8_TYPES)
    for i, name in ((1, "x_scale"), (4, "w_scale"), (6, "y_scale")):
        _check_dtype(ctx, i, name, frozenset({"float32"}))
    _check_dtype(ctx, 8, "B", frozenset({"int32"}))
    _check_zero_point(ctx, 2, 0, "x_zero_point")
    _check_zero_point(ctx, 5, 3, "w_zero_point")
    _check_conv_zero_points(ctx, 2, 5)
    yz = _input(ctx, 7)
    out = yz.dtype if yz is not None else ctx.inputs[0].dtype
    if out not in INT8_TYPES:
        raise ctx.error(f"y_zero_point has dtype {out}; expected int8 or uint8")
    return [_conv_shape(ctx, attrs, 0, 3, out)]


@kernel("QLinearConv", attrs=CONV_ATTRS)
def qlinear_conv(ctx: OpContext, **attrs):
    fail = _runtime_fail(ctx.node.label)
    yz = _input(ctx, 7)
    out_dtype = yz.dtype if yz is not None else ctx.inputs[0].dtype
    conv = _IntegerConv(ctx, attrs, 0, 3, 5, b=8)
    scale_consts = (_value(ctx, 1), _value(ctx, 4), _value(ctx, 6))
    cached: dict[int, np.ndarray] = {}

    def multiplier(x_scale, w_scale, y_scale, rank: int, channels: int) -> np.ndarray:
        constant = all(s is c for s, c in zip((x_scale, w_scale, y_scale), scale_consts))
        if constant and rank in cached:
            return cached[rank]
        for name, s in (("x_scale", x_scale), ("y_scale", y_scale)):
            if s.size != 1:
                raise fail(f"{name} must be a scalar, found shape {list(s.shape)}")
        if w_scale.size != 1 and (w_scale.ndim != 1 or w_scale.shape[0] != channels):
            raise fail(f"w_scale has shape {list(w_scale.shape)}; expected a scalar or {channels} "
                       f"values (one per output channel)")
        ws = w_scale.astype(F32).reshape((1, -1) + (1,) * (rank - 2) if w_scale.size != 1 else ())
        m = x_scale.astype(F32).reshape(()) * ws / y_scale.astype(F32).reshape(())
        if constant:
            cached[rank] = m
        return m

    def qlinear_conv_fn(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point=None,
                        B=None):
        acc = conv(x, x_zero_point, w, w_zero_point, B)
        m = multiplier(x_scale, w_scale, y_scale, acc.ndim, w.shape[0])
        zp = None if y_zero_point is None else y_zero_point.reshape(())
        return _requantize(acc, m, zp, out_dtype, fail)

    return qlinear_conv_fn
