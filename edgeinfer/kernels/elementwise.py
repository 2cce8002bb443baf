"""Elementwise operators: unary math, binary arithmetic/comparison/logic with numpy
broadcasting, variadic Sum/Mean/Max/Min, Where, Identity and Dropout.

Every op is one row of a table, registered in a loop through :func:`register_elementwise`,
which owns what the family shares (STYLE.md #4): arity, the dtypes an op accepts, "same T"
checks between inputs, multidirectional broadcasting of the output shape, and the dtype of the
result. A row only says how to compute: ``compute(*arrays, out=None)`` (a numpy ufunc already
has that signature) or, for ops with attributes, a factory ``make(**attrs)`` returning one.
The activation functions (:mod:`.activation_ops`) and Cast (:mod:`.cast`) use the same
registrar.

dtype rules, applied by the family so the leaves need not care:

* the output dtype is exactly the inferred one: same-T inputs never promote, Python-float
  constants are weak scalars under NEP 50, and a result that still differs (a numpy scalar from
  a 0-d input, float64 from a float16 formula) is cast back;
* ``wide_half`` ops (formulas of several steps) run float16 in float32 and round once at the
  end instead of rounding every intermediate to 11 bits (single ufuncs need not: numpy's
  float16 loops already compute in float32);
* bfloat16 tensors are ``ml_dtypes.bfloat16`` arrays (:mod:`edgeinfer.dtypes`); numeric ops
  widen them to float32 and round results back to the nearest even bfloat16.

All single-output kernels are :func:`~.registry.writes_out`.
"""
from __future__ import annotations

import contextlib

import math
from contextvars import ContextVar
from typing import Callable, Iterable

import numpy as np

from .. import dtypes as _dt
from ..errors import KernelError
from ..graph import TensorType
from .registry import REQUIRED, OpContext, kernel, shape_rule, writes_out
from .shapes import broadcast_shapes

# --------------------------------------------------------------------- dtype classes
FLOATS = frozenset(_dt.FLOAT_DTYPES)
SIGNED = frozenset({"int8", "int16", "int32", "int64"})
UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64"})
INTS = frozenset(_dt.INT_DTYPES)
NUMERIC = FLOATS | INTS
SIGNED_NUMERIC = FLOATS | SIGNED
BOOL = frozenset({"bool"})
ANY = frozenset(_dt.DTYPES)

Compute = Callable[..., np.ndarray]

# True while numpy's floating-point error handling is "ignore" for a whole backend run (the
# cpu backend sets both at once): kernels then skip their own np.errstate, which costs ~1 us a
# call, as much as the arithmetic on a small tensor.
FP_ERRORS_IGNORED: ContextVar[bool] = ContextVar("edgeinfer_fp_errors_ignored", default=False)
_NO_CHANGE = contextlib.nullcontext()


def ieee_errors():
    """A context in which numpy's floating-point errors are ignored: the run's own setting
    when a backend run has set it (no cost), else a fresh ``np.errstate(all="ignore")``."""
    return _NO_CHANGE if FP_ERRORS_IGNORED.get() else np.errstate(all="ignore")


# ------------------------------------------------------------------------- bfloat16
def bfloat16_to_float32(x: np.ndarray) -> np.ndarray:
    """Widen a bfloat16 array to float32 (exact)."""
    return np.asarray(x).astype(np.float32)


def float32_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16, nearest even; NaN stays NaN."""
    return np.asarray(x, np.float32).astype(_dt.to_numpy("bfloat16"))


# ------------------------------------------------------------------------ the family
def _present(ctx: OpContext) -> list[int]:
    return [i for i in range(len(ctx.node.inputs)) if ctx.has_input(i)]


def check_input_dtypes(ctx: OpContext, accepts: frozenset, same: Iterable[int] = (), free: Iterable[int] = ()) -> None:
    """Raise naming the node and tensor when an input's dtype is not accepted, or when the
    inputs listed in ``same`` (ONNX's shared type ``T``) differ. Inputs in ``free`` are not
    checked against ``accepts`` (the caller checks them)."""
    for i in _present(ctx):
        t = ctx.inputs[i]
        if t is not None and i not in free and t.dtype not in accepts:
            raise ctx.error(
                f"input {i} '{ctx.node.inputs[i]}' has dtype {t.dtype}; {ctx.node.op_type} accepts "
                f"{', '.join(sorted(accepts))}"
            )
    same = [i for i in same if i < len(ctx.inputs) and ctx.inputs[i] is not None and ctx.has_input(i)]
    dts = {ctx.inputs[i].dtype for i in same}
    if len(dts) > 1:
        found = ", ".join(f"'{ctx.node.inputs[i]}': {ctx.inputs[i].dtype}" for i in same)
        raise ctx.error(f"inputs must share one dtype, found {found}")


def _widen(x: np.ndarray, dtype: str, wide_half: bool) -> np.ndarray:
    if dtype == "bfloat16":
        return bfloat16_to_float32(x)
    if wide_half and dtype == "float16":
        return x.astype(np.float32)
    return x


def finish(y, out_dtype: str, out: np.ndarray | None) -> np.ndarray:
    """Deliver a computed result as ``out_dtype`` (IR name), in ``out`` when one was given."""
    y = np.asarray(y)
    if out_dtype == "bfloat16" and y.dtype.name != "bfloat16":
        y = float32_to_bfloat16(y)
    if out is not None:
        if y is not out:
            np.copyto(out, y, casting="unsafe")
        return out
    want = _dt.to_numpy(out_dtype)
    return y if y.dtype == want else y.astype(want)


def deliver(y: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``y``, or ``out`` holding ``y`` (C-cast to its dtype) when a buffer was given."""
    if out is None or y is out:
        return y
    np.copyto(out, y, casting="unsafe")
    return out


def bind_elementwise(ctx: OpContext, compute: Compute, *, wide_half: bool = False, widen_bf16: bool = True):
    """The kernel function of an elementwise op: ``fn(*arrays, out=None)``.

    The common case (no dtype widening) calls ``compute`` with ``out`` directly, so ufuncs
    write into the planner's buffer with no copy.
    """
    in_dtypes = [t.dtype if t is not None else None for t in ctx.inputs]
    out_dtype = ctx.outputs[0].dtype
    widen = [d == "bfloat16" and widen_bf16 or (wide_half and d == "float16") for d in in_dtypes]
    if not any(widen) and (out_dtype != "bfloat16" or not widen_bf16):
        want = _dt.to_numpy(out_dtype)
        if _never_scalar(ctx):
            # every input has a known rank >= 1: numpy gives arrays back, so with ``out`` the
            # result is ``out`` itself and without it only the dtype may need a cast
            @writes_out
            def ranked_fn(*xs, out=None):
                if out is not None:
                    return compute(*xs, out=out)
                y = compute(*xs)
                return y if y.dtype == want else y.astype(want)

            return ranked_fn

        @writes_out
        def elementwise_fn(*xs, out=None):
            if _all_scalars(xs):
                return _lifted(elementwise_fn, xs, out)
            y = compute(*xs, out=out)
            if out is None:
                y = np.asarray(y)
                if y.dtype != want:
                    y = y.astype(want)
            return y

        return elementwise_fn

    @writes_out
    def widened_fn(*xs, out=None):
        if _all_scalars(xs):
            return _lifted(widened_fn, xs, out)
        xs = [x if x is None or not w else _widen(x, d, wide_half) for x, d, w in zip(xs, in_dtypes, widen)]
        return finish(compute(*xs), out_dtype, out)

    return widened_fn


def _never_scalar(ctx: OpContext) -> bool:
    """Whether every present input has a static rank >= 1 (so no call sees only 0-d arrays)."""
    ts = [ctx.inputs[i] for i in _present(ctx)]
    return bool(ts) and all(t is not None and t.shape is not None and len(t.shape) >= 1 for t in ts)


def _all_scalars(xs) -> bool:
    return all(x is None or x.ndim == 0 for x in xs)


def _lifted(fn, xs, out):
    # numpy ufuncs turn 0-d arrays into scalars, which in-place steps cannot write: run the
    # formula on 1-element vectors and give back a 0-d result (``out`` is written through a view)
    y = fn(*(None if x is None else x.reshape(1) for x in xs), out=None if out is None else out.reshape(1))
    return out if out is not None else y.reshape(())


def _check_broadcasts_into(ctx: OpContext, i: int, shape) -> None:
    """Input ``i`` must broadcast to ``shape`` without changing it (all-1 shapes always do)."""
    own = ctx.inputs[i].shape
    if shape is None or own is None or all(d == 1 for d in own):
        return
    grown = broadcast_shapes([shape, own], ctx.node)
    if len(grown) != len(shape) or any(
        isinstance(g, int) and isinstance(d, int) and g != d for g, d in zip(grown, shape)
    ):
        raise ctx.error(f"input {i} '{ctx.node.inputs[i]}' of shape {list(own)} does not broadcast to {list(shape)}")


def register_elementwise(
    op: str,
    compute: Compute | None = None,
    *,
    accepts: frozenset = NUMERIC,
    arity: int | tuple[int, int | None] = 1,
    same: tuple[int, ...] | None = None,
    out_dtype: str | None = None,
    dtype_from: int = 0,
    attrs: dict | None = None,
    make: Callable[..., Compute] | None = None,
    wide_half: bool = False,
    widen_bf16: bool = True,
    free: Iterable[int] = (),
    check: Callable[[OpContext, dict], None] | None = None,
    shape_of: int | None = None,
) -> None:
    """Register the shape rule and kernel of one elementwise op.

    Args:
        op: ONNX op type.
        compute: ``compute(*arrays, out=None)`` for ops without attributes.
        accepts: dtypes the inputs may have (inputs in ``free`` are checked by ``check``).
        arity: number of inputs, or ``(min, max)`` (``max=None``: unbounded); missing optional
            inputs arrive as ``None``.
        same: inputs that must share a dtype (default: all of them).
        out_dtype: fixed output dtype (``"bool"`` for comparisons), else input ``dtype_from``'s.
        attrs / make: ONNX attribute defaults and ``make(**attrs) -> compute``.
        wide_half: evaluate float16 in float32 (multi-step formulas).
        widen_bf16: widen bfloat16 inputs to float32 (off for ops that only move bits).
        check: extra shape-rule check ``check(ctx, attrs)`` (attribute values).
        shape_of: the output has this input's shape; the others must broadcast to it without
            growing it (PRelu's slope, Clip's bounds).
    """
    lo, hi = (arity, arity) if isinstance(arity, int) else arity
    free = frozenset(free)

    def infer(ctx: OpContext, **kw) -> list[TensorType]:
        present = _present(ctx)
        n = len(ctx.node.inputs)
        if n < lo or (hi is not None and n > hi) or any(i not in present for i in range(lo)):
            want = f"{lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            raise ctx.error(f"expects {want} inputs, found {n} ({list(ctx.node.inputs)})")
        check_input_dtypes(ctx, accepts, present if same is None else same, free)
        if check is not None:
            check(ctx, kw)
        if shape_of is None:
            shape = broadcast_shapes([ctx.inputs[i].shape for i in present], ctx.node)
        else:
            shape = ctx.inputs[shape_of].shape
            for i in present:
                _check_broadcasts_into(ctx, i, shape)
        return [TensorType(out_dtype or ctx.inputs[dtype_from].dtype, shape)]

    def build(ctx: OpContext, **kw):
        fn = make(**kw) if make is not None else compute
        return bind_elementwise(ctx, fn, wide_half=wide_half, widen_bf16=widen_bf16)

    shape_rule(op)(infer)
    kernel(op, attrs=attrs, native_lowp=True)(build)


# ------------------------------------------------------------------------------- erf
# erfc(a) = t * exp(P(t) - a^2), t = 1 / (1 + a/2), a >= 0.5: P is our own degree-9
# least-squares fit of log(erfc(a) / t) + a^2 on Chebyshev nodes over a in [0.5, 5] (relative
# error below 1e-9 there; beyond 5 erfc is under 2e-12 and the form keeps it tiny).
_ERFC_FIT = (-1.26553972145, 1.00079295016, 0.365063720259, 0.154707182037, -0.410171455484,
             0.821704823946, -1.9655693853, 2.26590431431, -1.22864315548, 0.261788645925)
# Taylor series of erf near 0: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)); nine terms are
# exact to 1e-12 for |x| < 0.5, where 1 - erfc would lose relative accuracy.
_ERF_TAYLOR = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) * 2 / math.sqrt(math.pi) for n in range(9))


def _horner(coefs, t, out):
    """Polynomial ``sum(coefs[i] * t**i)`` evaluated into ``out`` (no temporaries)."""
    out.fill(coefs[-1])
    for c in coefs[-2::-1]:
        out *= t
        out += c
    return out


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorized error function in float64, relative error below 1e-9 (numpy has no erf and
    scipy is not a dependency). Works in place in four buffers: fresh temporaries of a large
    array cost more in page faults than the arithmetic."""
    shape = np.shape(x)
    x = np.array(x, np.float64, copy=None, ndmin=1)
    a = np.abs(x)
    t = np.multiply(a, 0.5)
    t += 1.0
    np.reciprocal(t, out=t)
    y = _horner(_ERFC_FIT, t, np.empty_like(a))
    near = a < 0.5
    a *= a
    y -= a
    with np.errstate(under="ignore"):
        np.exp(y, out=y)
    y *= t
    np.subtract(1.0, y, out=y)  # 1 - erfc(|x|)
    np.copysign(y, x, out=y)
    if near.any():
        small = _horner(_ERF_TAYLOR, a, t)  # a holds x^2 now; t is free
        small *= x
        np.copyto(y, small, where=near)
    return y.reshape(shape)


def _erf_compute(x, out=None):
    return finish(erf(x), _dt.from_numpy(x.dtype), out)


# --------------------------------------------------------------------- unary math
def _is_inf(detect_negative: int, detect_positive: int) -> Compute:
    def compute(x, out=None):
        if detect_negative and detect_positive:
            return np.isinf(x, out=out)
        y = np.isinf(x, out=out)
        side = np.signbit(x) if detect_negative else ~np.signbit(x)
        return np.logical_and(y, side, out=y)

    return compute


# op -> (compute, accepted dtypes); outputs keep the input dtype unless listed in _BOOL_OUT
_UNARY: dict[str, tuple[Compute, frozenset]] = {
    "Abs": (np.absolute, NUMERIC),
    "Neg": (np.negative, SIGNED_NUMERIC),
    "Exp": (np.exp, FLOATS),
    "Log": (np.log, FLOATS),
    "Sqrt": (np.sqrt, FLOATS),
    "Reciprocal": (np.reciprocal, FLOATS),
    "Floor": (np.floor, FLOATS),
    "Ceil": (np.ceil, FLOATS),
    "Round": (np.rint, FLOATS),  # rint rounds half to even, as ONNX
    "Sign": (np.sign, NUMERIC),
    "Sin": (np.sin, FLOATS),
    "Cos": (np.cos, FLOATS),
    "Tan": (np.tan, FLOATS),
    "Asin": (np.arcsin, FLOATS),
    "Acos": (np.arccos, FLOATS),
    "Atan": (np.arctan, FLOATS),
    "Sinh": (np.sinh, FLOATS),
    "Cosh": (np.cosh, FLOATS),
    "Asinh": (np.arcsinh, FLOATS),
    "Acosh": (np.arccosh, FLOATS),
    "Atanh": (np.arctanh, FLOATS),
    "Tanh": (np.tanh, FLOATS),
    "Erf": (_erf_compute, FLOATS),
    "IsNaN": (np.isnan, FLOATS),
    "Not": (np.logical_not, BOOL),
    "BitwiseNot": (np.invert, INTS),
}
_BOOL_OUT = {"IsNaN", "IsInf"}


def quiet(ufunc: Compute) -> Compute:
    """IEEE results (inf, nan) without numpy's RuntimeWarnings (log(0), sqrt(-1), 1/0)."""

    def compute(*xs, out=None):
        if FP_ERRORS_IGNORED.get():
            return ufunc(*xs, out=out)
        with np.errstate(all="ignore"):
            return ufunc(*xs, out=out)

    return compute


for _op, (_fn, _accepts) in _UNARY.items():
    if _accepts is FLOATS and _op not in ("Erf", "IsNaN"):
        _fn = quiet(_fn)
    register_elementwise(_op, _fn, accepts=_accepts, out_dtype="bool" if _op in _BOOL_OUT else None)

register_elementwise(
    "IsInf", accepts=FLOATS, out_dtype="bool", attrs={"detect_negative": 1, "detect_positive": 1}, make=_is_inf
)


# ------------------------------------------------------------------------ binary
def _div_ieee(a, b, out=None):
    """ONNX Div: IEEE for floats, C truncation toward zero for integers."""
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return np.divide(a, b, out=out)
    q = np.floor_divide(a, b, out=out)
    if a.dtype.kind == "i":
        # floor and trunc differ where the remainder is nonzero and the signs differ
        fix = np.not_equal(np.remainder(a, b), 0)
        fix &= np.less(a, 0) != np.less(b, 0)
        np.add(q, fix, out=q, casting="unsafe")
    return q


def _pow_ieee(a, b, out=None):
    """ONNX Pow: the result has the base's dtype whatever the exponent's."""
    if a.dtype.kind == "f":
        exp = b if b.dtype == a.dtype else b.astype(np.result_type(a.dtype, b.dtype) if b.dtype.kind == "f" else a.dtype)
        y = np.power(a, exp, out=out if exp.dtype == a.dtype else None)
    elif b.dtype.kind in "iu" and (b.size == 0 or b.min() >= 0):
        y = np.power(a, b.astype(a.dtype, copy=False), out=out)  # exact integer powers
    else:  # integer base, float or negative exponent: through double, truncated
        y = np.power(a.astype(np.float64), b.astype(np.float64))
        np.trunc(y, out=y)
    return finish(y, _dt.from_numpy(a.dtype), out)


def _mod(fmod: int) -> Compute:
    return quiet(np.fmod if fmod else np.remainder)  # fmod: sign of the dividend; else of the divisor


def _check_mod(ctx: OpContext, kw: dict) -> None:
    if kw["fmod"] not in (0, 1):
        raise ctx.error(f"attribute fmod must be 0 or 1, found {kw['fmod']!r}")


def _bit_shift(direction: str) -> Compute:
    left = direction == "LEFT"
    ufunc = np.left_shift if left else np.right_shift

    def compute(a, b, out=None):
        # ONNX defines shift counts outside [0, bits) as the sign fill alone (-1 for a right
        # shift of a negative value, else 0); C and numpy leave them undefined or
        # platform-specific, so they are shifted by 0 and overwritten here
        bits = a.dtype.itemsize * 8
        oob = b >= bits
        if b.dtype.kind == "i":
            oob |= b < 0
        if not oob.any():
            return ufunc(a, b, out=out)
        y = ufunc(a, np.where(oob, 0, b).astype(b.dtype, copy=False), out=out)
        fill = np.zeros((), a.dtype) if left or a.dtype.kind == "u" else np.where(a < 0, -1, 0).astype(a.dtype)
        np.copyto(y, np.broadcast_to(fill, y.shape), where=np.broadcast_to(oob, y.shape))
        return y

    return compute


def _check_bit_shift(ctx: OpContext, kw: dict) -> None:
    if kw["direction"] not in ("LEFT", "RIGHT"):
        raise ctx.error(f"attribute direction must be 'LEFT' or 'RIGHT', found {kw['direction']!r}")


def _check_pow(ctx: OpContext, kw: dict) -> None:
    t = ctx.inputs[1]
    if t is not None and t.dtype not in NUMERIC:
        raise ctx.error(f"exponent '{ctx.node.inputs[1]}' has dtype {t.dtype}; Pow accepts numeric exponents")


# op -> (compute, accepted dtypes, output dtype or None for the inputs')
_BINARY: dict[str, tuple[Compute, frozenset, str | None]] = {
    "Add": (np.add, NUMERIC, None),
    "Sub": (np.subtract, NUMERIC, None),
    "Mul": (np.multiply, NUMERIC, None),
    "Div": (quiet(_div_ieee), NUMERIC, None),
    "Equal": (np.equal, NUMERIC | BOOL | {"string"}, "bool"),
    "Greater": (np.greater, NUMERIC, "bool"),
    "GreaterOrEqual": (np.greater_equal, NUMERIC, "bool"),
    "Less": (np.less, NUMERIC, "bool"),
    "LessOrEqual": (np.less_equal, NUMERIC, "bool"),
    "And": (np.logical_and, BOOL, "bool"),
    "Or": (np.logical_or, BOOL, "bool"),
    "Xor": (np.logical_xor, BOOL, "bool"),
    "BitwiseAnd": (np.bitwise_and, INTS, None),
    "BitwiseOr": (np.bitwise_or, INTS, None),
    "BitwiseXor": (np.bitwise_xor, INTS, None),
}

for _op, (_fn, _accepts, _out) in _BINARY.items():
    if _op in ("Add", "Sub", "Mul"):
        _fn = quiet(_fn)  # integer overflow wraps and inf - inf is nan, silently as in C
    register_elementwise(_op, _fn, accepts=_accepts, arity=2, out_dtype=_out)

register_elementwise("Pow", quiet(_pow_ieee), accepts=NUMERIC, arity=2, same=(), free=(1,), check=_check_pow)
register_elementwise("Mod", accepts=NUMERIC, arity=2, attrs={"fmod": 0}, make=_mod, check=_check_mod)
register_elementwise(
    "BitShift", accepts=INTS, arity=2, attrs={"direction": REQUIRED}, make=_bit_shift, check=_check_bit_shift
)


# -------------------------------------------------------------------- variadic
def _fold(ufunc, then: Callable | None = None) -> Compute:
    """Sum/Max/Min of any number of broadcast inputs, accumulated in one buffer."""

    def compute(*xs, out=None):
        if out is None:
            shape = np.broadcast_shapes(*(x.shape for x in xs))
            out = np.empty(shape, np.result_type(*xs))
        if len(xs) == 1:
            np.copyto(out, xs[0])
        else:
            ufunc(xs[0], xs[1], out=out)
            for x in xs[2:]:
                ufunc(out, x, out=out)
        if then is not None:
            then(out, len(xs))
        return out

    return compute


def _divide_by_count(y: np.ndarray, n: int) -> None:
    np.divide(y, n, out=y, casting="unsafe")


for _op, _fn, _accepts in (
    ("Sum", _fold(np.add), FLOATS),
    ("Mean", _fold(np.add, _divide_by_count), FLOATS),
    ("Max", _fold(np.maximum), NUMERIC),
    ("Min", _fold(np.minimum), NUMERIC),
):
    register_elementwise(_op, _fn, accepts=_accepts, arity=(1, None), wide_half=_op == "Mean")


# ------------------------------------------------------------------------ Where
def _where(cond, x, y, out=None):
    if out is None:
        return np.where(cond, x, y)
    np.copyto(out, y)
    np.copyto(out, x, where=cond)
    return out


def _check_where(ctx: OpContext, kw: dict) -> None:
    c = ctx.inputs[0]
    if c is not None and c.dtype != "bool":
        raise ctx.error(f"condition '{ctx.node.inputs[0]}' must be bool, found {c.dtype}")


register_elementwise(
    "Where", _where, accepts=ANY, arity=3, same=(1, 2), dtype_from=1, widen_bf16=False, free=(0,), check=_check_where
)


# --------------------------------------------------------- Identity and Dropout
@shape_rule("Identity")
def identity_shape(ctx: OpContext) -> list[TensorType]:
    return [ctx.inputs[0]]


@kernel("Identity", aliases=True)
def identity(ctx: OpContext):
    # the output may be the input itself: kernels never write their inputs, and the cpu
    # backend copies a graph output that aliases anything it does not own
    return lambda x: x


@shape_rule("Dropout")
def dropout_shape(ctx: OpContext, seed) -> list[TensorType]:
    x = ctx.inputs[0]
    ratio = ctx.inputs[1] if len(ctx.inputs) > 1 else None
    if x.dtype not in FLOATS:
        raise ctx.error(f"input '{ctx.node.inputs[0]}' has dtype {x.dtype}; Dropout accepts float types")
    if ratio is not None and ratio.shape is not None and len(ratio.shape) != 0:
        raise ctx.error(f"ratio must be a scalar, found shape {list(ratio.shape)}")
    types = [x, TensorType("bool", x.shape)]
    return types[: max(1, len(ctx.node.outputs))]


@kernel("Dropout", attrs={"seed": None}, aliases=True)
def dropout(ctx: OpContext, seed):
    """Inference Dropout is the identity; the optional mask keeps every element."""
    label = ctx.node.label
    with_mask = len(ctx.node.outputs) > 1

    def dropout_fn(x, ratio=None, training_mode=None):
        if training_mode is not None and bool(np.asarray(training_mode)) and (ratio is None or float(ratio) != 0):
            raise KernelError(f"{label}: training_mode=True is not supported (edgeinfer runs inference only)")
        if not with_mask:
            return x
        return x, np.ones(x.shape, dtype=bool)

    return dropout_fn
