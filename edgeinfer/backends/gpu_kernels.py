"""Kernels of the ``gpu`` backend, written once against an array namespace ``xp``.

``xp`` is ``numpy`` or ``cupy``: the same factory serves the GPU and, with numpy, the CI
machines that have none, so every kernel's logic is tested against the cpu backend without a
device. Where the two libraries differ (a fused CUDA kernel is much faster than a chain of
cupy ufuncs, or cupy has a function numpy lacks) the factory picks a path per namespace
behind one interface (:func:`activation`, :func:`erf`, and the raw CUDA kernels of
:mod:`.gpu_conv`).

Registry. A factory is registered with ``@gpu_kernel("Relu", ...)`` for one or more op types
of one domain and is called once per node at compile time as ``build(ctx, **attrs)``, the
attributes with their defaults filled in by the cpu registry (:func:`resolve_attrs`: the
defaults live in one place for every backend). It returns ``fn(*arrays)`` that returns one
array or a tuple (one per node output). Arrays are device arrays of ``ctx.xp``; missing
optional inputs, and constant inputs the factory took at compile time with
:meth:`GpuContext.const`, arrive as ``None``. A kernel never writes into its inputs.

Precision. In ``fp16`` mode every float32 tensor of the graph is a float16 one: the types in
``ctx.inputs``/``ctx.outputs`` already say so, and :meth:`GpuContext.upload` rounds constants
on their way to the device. ``ctx.values`` keep the graph's own dtypes, so compile-time
parameters (Resize scales, Clip bounds, shapes) are never rounded. Reductions that would lose
range in half (softmax, normalizations, means) compute in float32 and round once.

Families: this module holds the registry, activations, elementwise ops, normalizations and
reductions; :mod:`.gpu_tensor_ops` moves data (Reshape ... Resize); :mod:`.gpu_conv` holds
Conv, pooling, Gemm/MatMul and the fused ops of :mod:`edgeinfer.optimize`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import dtypes as _dt
from ..errors import GraphError, KernelError
from ..kernels.registry import OpContext, get_schema, resolve_attrs

FUSED_DOMAIN = "edgeinfer"

_KERNELS: dict[tuple[str, str], Callable] = {}
_LOADED = False


def gpu_kernel(*op_types: str, domain: str = ""):
    """Register a kernel factory for ``op_types`` (see the module docstring)."""

    def register(build: Callable) -> Callable:
        for op in op_types:
            if (domain, op) in _KERNELS:
                raise RuntimeError(f"gpu kernel for {domain or 'ai.onnx'}::{op} registered twice")
            _KERNELS[(domain, op)] = build
        return build

    return register


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        from . import gpu_conv, gpu_tensor_ops  # noqa: F401  (importing registers the kernels)

        _LOADED = True


def _key(op_type: str, domain: str) -> tuple[str, str]:
    return ("" if domain in ("", "ai.onnx") else domain, op_type)


def has_kernel(op_type: str, domain: str = "") -> bool:
    _load_all()
    return _key(op_type, domain) in _KERNELS


def kernel_ops() -> list[str]:
    """Every op type with a gpu kernel, as ``op`` or ``domain::op``."""
    _load_all()
    return sorted(f"{d}::{o}" if d else o for d, o in _KERNELS)


@dataclass
class GpuContext(OpContext):
    """An :class:`OpContext` plus the array namespace and the device upload.

    Attributes:
        xp: ``numpy`` or ``cupy``.
        uploader: (host array, round float32 to the compute dtype) -> device array.
        baked: input positions the factory consumed at compile time (passed as None at run).
    """

    xp: Any = None
    uploader: Callable[[np.ndarray, bool], Any] | None = None
    baked: set = field(default_factory=set)

    @property
    def on_gpu(self) -> bool:
        return self.xp is not np

    def const(self, i: int) -> np.ndarray | None:
        """Input ``i``'s compile-time value (host, graph dtype), taken over by the factory:
        the run-time call then gets None in its place and the raw constant is not uploaded."""
        v = self.values[i] if i < len(self.values) else None
        if v is not None:
            self.baked.add(i)
        return v

    def peek(self, i: int) -> np.ndarray | None:
        """Input ``i``'s compile-time value without taking it over."""
        return self.values[i] if i < len(self.values) else None

    def upload(self, arr: np.ndarray, dtype=None):
        """``arr`` on the device, float32 rounded to the compute dtype (or cast to ``dtype``)."""
        arr = np.asarray(arr)
        if dtype is not None:
            return self.uploader(arr.astype(dtype, copy=False), False)
        return self.uploader(arr, True)

    def dtype(self, i: int = 0) -> np.dtype:
        """numpy dtype of input ``i`` as computed (float16 for float32 in fp16 mode)."""
        return np.dtype(_dt.to_numpy(self.inputs[i].dtype))

    def out_dtype(self, i: int = 0) -> np.dtype:
        return np.dtype(_dt.to_numpy(self.outputs[i].dtype))

    def shape(self, i: int = 0) -> tuple[int, ...]:
        """Input ``i``'s static shape; KernelError if it is not fully known."""
        s = self.static_shape(i)
        if s is None:
            raise self.fail(f"needs a static shape for input {i} ('{self.node.inputs[i]}'), found "
                            f"{None if self.inputs[i] is None else self.inputs[i].shape}")
        return s

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        s = self.static_out_shape(i)
        if s is None:
            raise self.fail(f"needs a static shape for output {i} ('{self.node.outputs[i]}')")
        return s

    def fail(self, message: str) -> KernelError:
        return KernelError(f"{self.node.label}: {message}")


def build(ctx: GpuContext) -> Callable:
    """The kernel of ``ctx.node`` (attributes resolved by the cpu registry's schema)."""
    _load_all()
    node = ctx.node
    factory = _KERNELS.get(_key(node.op_type, node.domain))
    if factory is None:
        raise KernelError(f"{node.label}: the gpu backend has no kernel for this op")
    attrs = resolve_attrs(get_schema(node.op_type, node.domain), node)
    return factory(ctx, **attrs)


def work_dtype(dt: np.dtype) -> np.dtype:
    """float32 for float16 (reductions and softmax accumulate in single precision)."""
    return np.dtype(np.float32) if dt == np.float16 else dt


def erf(xp, x):
    """The error function of a float array (numpy lacks one: the cpu backend's, in float64)."""
    if xp is np:
        from ..kernels.elementwise import erf as np_erf

        return np_erf(x).astype(x.dtype, copy=False)
    import cupyx.scipy.special as special

    return special.erf(x)


# ------------------------------------------------------------------------- activations
# name -> CUDA statement updating float ``v`` (P0, P1: the activation's parameters). The names
# and parameters are those of :mod:`edgeinfer.kernels.activations`, so a fused node's
# ``activation`` attribute means the same on every backend.
_CUDA_ACT = {
    "Relu": "v = v > 0.f ? v : 0.f;",
    "LeakyRelu": "v = v >= 0.f ? v : v * P0;",
    "Clip": "v = fminf(fmaxf(v, P0), P1);",
    "HardSigmoid": "v = fminf(fmaxf(v * P0 + P1, 0.f), 1.f);",
    "HardSwish": "v = v * fminf(fmaxf(v * (1.f / 6.f) + 0.5f, 0.f), 1.f);",
    "Sigmoid": "v = 1.f / (1.f + expf(-v));",
    "Tanh": "v = tanhf(v);",
    "SiLU": "v = v / (1.f + expf(-v));",
    "Gelu:erf": "v = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));",
    "Gelu:tanh": "v = 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));",
}
_ACT_DEFAULTS = {"LeakyRelu": (0.01,), "Clip": (-math.inf, math.inf), "HardSigmoid": (0.2, 0.5), "Gelu": (0.0,)}


def _f32_literal(x: float) -> str:
    if math.isinf(x):
        return "__int_as_float(0x7f800000)" if x > 0 else "__int_as_float(0xff800000)"
    return f"{float(np.float32(x))!r}f"


def cuda_activation(name: str, params) -> str:
    """The CUDA statement applying activation ``name`` to the float ``v`` ("" for none)."""
    if not name:
        return ""
    params = list(params or ()) + list(_ACT_DEFAULTS.get(name, ())[len(params or ()):])
    key = name
    if name == "Gelu":
        key = "Gelu:tanh" if params and params[0] else "Gelu:erf"
        params = []
    if key not in _CUDA_ACT:
        raise GraphError(f"unknown fused activation '{name}'")
    code = _CUDA_ACT[key]
    for k, p in enumerate(params):
        code = code.replace(f"P{k}", _f32_literal(p))
    return code


def xp_activation(name: str, params, xp) -> Callable | None:
    """``f(y) -> y``: activation ``name`` applied in place to float array ``y`` with xp ufuncs
    (the numpy path, and cupy for float64). None for no activation."""
    if not name:
        return None
    p = [float(v) for v in (params or ())]
    p += list(_ACT_DEFAULTS.get(name, ())[len(p):])
    if name == "Relu":
        return lambda y: xp.maximum(y, 0, out=y)
    if name == "LeakyRelu":
        a = p[0]
        return lambda y: xp.multiply(y, xp.where(y >= 0, 1.0, a).astype(y.dtype), out=y)
    if name == "Clip":
        lo, hi = p
        return lambda y: xp.clip(y, lo, hi, out=y)
    if name == "HardSigmoid":
        a, b = p

        def hard_sigmoid(y):
            y *= a
            y += b
            return xp.clip(y, 0, 1, out=y)

        return hard_sigmoid
    if name == "HardSwish":
        def hard_swish(y):
            gate = xp.clip(y * (1 / 6) + 0.5, 0, 1)
            return xp.multiply(y, gate.astype(y.dtype, copy=False), out=y)

        return hard_swish
    if name in ("Sigmoid", "SiLU"):
        silu = name == "SiLU"

        def sigmoid(y):
            with np.errstate(over="ignore"):
                gate = 1 / (1 + xp.exp(-y.astype(work_dtype(y.dtype))))
            if silu:
                gate *= y
            y[...] = gate
            return y

        return sigmoid
    if name == "Tanh":
        return lambda y: xp.tanh(y, out=y)
    if name == "Gelu":
        tanh_form = bool(p[0])

        def gelu(y):
            v = y.astype(work_dtype(y.dtype))
            if tanh_form:
                gate = 0.5 * (1 + xp.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)))
            else:
                gate = 0.5 * (1 + erf(xp, v * 0.7071067811865476))
            y[...] = v * gate
            return y

        return gelu
    raise GraphError(f"unknown fused activation '{name}'")


_EW_CACHE: dict[tuple, Any] = {}


def cuda_elementwise(in_params: str, body: str, name: str):
    """A cached ``cupy.ElementwiseKernel(in_params, 'T y', body)`` (``T``: the output type)."""
    key = (in_params, body)
    k = _EW_CACHE.get(key)
    if k is None:
        import cupy

        k = _EW_CACHE[key] = cupy.ElementwiseKernel(in_params, "T y", body, f"edgeinfer_{name}")
    return k


def epilogue(ctx: GpuContext, name: str, params) -> Callable:
    """``f(y, *terms) -> act(y + terms...)`` (terms broadcast into ``y``; None terms skipped).

    On the GPU one fused elementwise kernel per combination of present terms does it in one
    pass, in place on ``y`` (the GEMM output the caller owns); with numpy, ufuncs in place.
    """
    xp = ctx.xp
    if ctx.on_gpu and ctx.out_dtype(0) in (np.float16, np.float32):
        act = cuda_activation(name, params)
        kernels: dict[tuple, Any] = {}

        def run_gpu(y, *terms):
            present = tuple(t is not None for t in terms)
            if not any(present) and not act:
                return y
            k = kernels.get(present)
            if k is None:
                names = [f"t{i}" for i, p in enumerate(present) if p]
                ins = ", ".join(["T x"] + [f"T {n}" for n in names])
                add = "".join(f" + (float){n}" for n in names)
                k = kernels[present] = cuda_elementwise(ins, f"float v = (float)x{add}; {act} y = (T)v;", "epilogue")
            return k(y, *[t for t in terms if t is not None], y)

        return run_gpu
    act_fn = xp_activation(name, params, xp)

    def run_xp(y, *terms):
        for t in terms:
            if t is not None:
                y += t
        return act_fn(y) if act_fn is not None else y

    return run_xp


def apply_activation(ctx: GpuContext, name: str, params) -> Callable:
    """``f(x) -> act(x)`` as a new array (x is not modified)."""
    if ctx.on_gpu and ctx.out_dtype(0) in (np.float16, np.float32):
        act = cuda_activation(name, params)
        k = cuda_elementwise("T x", f"float v = (float)x; {act} y = (T)v;", "activation")
        return lambda x: k(x)
    ep = epilogue(ctx, name, params)
    return lambda x: ep(x.copy())


# Standalone activation ops: the attributes map to the fused activation's parameters.
@gpu_kernel("Relu", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "Gelu")
def activation_op(ctx: GpuContext, **attrs):
    op = ctx.node.op_type
    if ctx.dtype(0).kind != "f":
        if op == "Relu":  # Relu is defined on integers too
            return lambda x: ctx.xp.maximum(x, 0)
        raise ctx.fail(f"needs a float input, found {ctx.inputs[0].dtype}")
    params = {"LeakyRelu": [attrs.get("alpha", 0.01)],
              "HardSigmoid": [attrs.get("alpha", 0.2), attrs.get("beta", 0.5)],
              "Gelu": [1.0 if attrs.get("approximate", "none") in ("tanh", b"tanh") else 0.0]}.get(op, [])
    return apply_activation(ctx, op, params)


@gpu_kernel("Activation", domain=FUSED_DOMAIN)
def fused_activation_op(ctx: GpuContext, activation, activation_params):
    if not activation:
        raise ctx.fail("attribute 'activation' is empty")
    return apply_activation(ctx, activation, activation_params)


@gpu_kernel("Clip")
def clip_op(ctx: GpuContext):
    lo = ctx.const(1) if ctx.has_input(1) else None
    hi = ctx.const(2) if ctx.has_input(2) else None
    if (ctx.has_input(1) and lo is None) or (ctx.has_input(2) and hi is None):
        raise ctx.fail("min and max must be constants on the gpu backend")
    if ctx.dtype(0).kind != "f":
        xp = ctx.xp
        return lambda x, *_: xp.clip(x, None if lo is None else lo.item(), None if hi is None else hi.item())
    bounds = [-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi)]
    fn = apply_activation(ctx, "Clip", bounds)
    return lambda x, *_: fn(x)


@gpu_kernel("Affine", domain=FUSED_DOMAIN)
def affine_op(ctx: GpuContext, activation, activation_params):
    """``act(x * scale + shift)`` with constant per-channel scale and shift."""
    consts = [ctx.const(i) if ctx.has_input(i) else None for i in (1, 2)]
    dev = [None if c is None else ctx.upload(c.astype(np.float32, copy=False), ctx.dtype(0)) for c in consts]
    xp = ctx.xp
    if ctx.on_gpu and ctx.dtype(0) in (np.float16, np.float32):
        act = cuda_activation(activation, activation_params)
        present = tuple(d is not None for d in dev)
        ins = ", ".join(["T x"] + [n for n, p in zip(("T s", "T t"), present) if p])
        expr = "(float)x" + (" * (float)s" if present[0] else "") + (" + (float)t" if present[1] else "")
        k = cuda_elementwise(ins, f"float v = {expr}; {act} y = (T)v;", "affine")
        args = [d for d in dev if d is not None]
        return lambda x, *_: k(x, *args)
    act_fn = xp_activation(activation, activation_params, xp)

    def affine_xp(x, *_):
        y = x * dev[0] if dev[0] is not None else x.copy()
        if dev[1] is not None:
            y += dev[1]
        return act_fn(y) if act_fn is not None else y

    return affine_xp


# ------------------------------------------------------------------------ elementwise
def _unary_table(xp) -> dict[str, Callable]:
    return {
        "Abs": xp.abs, "Neg": xp.negative, "Exp": xp.exp, "Log": xp.log, "Sqrt": xp.sqrt,
        "Reciprocal": xp.reciprocal, "Floor": xp.floor, "Ceil": xp.ceil, "Round": xp.rint, "Sign": xp.sign,
        "Sin": xp.sin, "Cos": xp.cos, "Tan": xp.tan, "Asin": xp.arcsin, "Acos": xp.arccos, "Atan": xp.arctan,
        "Sinh": xp.sinh, "Cosh": xp.cosh, "Asinh": xp.arcsinh, "Acosh": xp.arccosh, "Atanh": xp.arctanh,
        "Not": xp.logical_not, "IsNaN": xp.isnan,
        "Softplus": lambda x: xp.logaddexp(x, x.dtype.type(0)),
        "Softsign": lambda x: x / (1 + xp.abs(x)),
        "Erf": lambda x: erf(xp, x),
        "Mish": lambda x: x * xp.tanh(xp.logaddexp(x, x.dtype.type(0))),
    }


_UNARY = ("Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan",
          "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Not", "IsNaN", "Softplus", "Softsign",
          "Erf", "Mish")


@gpu_kernel(*_UNARY)
def unary_op(ctx: GpuContext):
    f = _unary_table(ctx.xp)[ctx.node.op_type]
    out_dt = ctx.out_dtype(0)

    def unary(x):
        with np.errstate(all="ignore"):
            y = f(x)
        return y if y.dtype == out_dt else y.astype(out_dt)

    return unary


@gpu_kernel("Elu", "Selu", "Celu", "ThresholdedRelu")
def parametric_unary_op(ctx: GpuContext, **attrs):
    xp, op = ctx.xp, ctx.node.op_type
    alpha = float(attrs.get("alpha", 1.0))

    def elu_like(x):
        with np.errstate(all="ignore"):
            if op == "Elu":
                y = xp.where(x > 0, x, alpha * (xp.exp(x) - 1))
            elif op == "Celu":
                y = xp.maximum(x, 0) + xp.minimum(0, alpha * (xp.exp(x / alpha) - 1))
            elif op == "ThresholdedRelu":
                y = xp.where(x > alpha, x, 0)
            else:
                gamma = float(attrs["gamma"])
                y = gamma * xp.where(x > 0, x, alpha * (xp.exp(x) - 1))
        return y.astype(x.dtype, copy=False)

    return elu_like


def _int_div(xp, a, b):
    """ONNX integer Div: C truncation toward zero."""
    q = xp.floor_divide(a, b)
    return q + ((q < 0) & (q * b != a)).astype(q.dtype)


def _binary_table(xp, is_int: bool) -> dict[str, Callable]:
    return {
        "Add": xp.add, "Sub": xp.subtract, "Mul": xp.multiply,
        "Div": (lambda a, b: _int_div(xp, a, b)) if is_int else xp.true_divide,
        "Pow": xp.power, "Equal": xp.equal, "Less": xp.less, "Greater": xp.greater,
        "LessOrEqual": xp.less_equal, "GreaterOrEqual": xp.greater_equal,
        "And": xp.logical_and, "Or": xp.logical_or, "Xor": xp.logical_xor,
        "BitwiseAnd": xp.bitwise_and, "BitwiseOr": xp.bitwise_or, "BitwiseXor": xp.bitwise_xor,
    }


_BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And",
           "Or", "Xor", "BitwiseAnd", "BitwiseOr", "BitwiseXor")


@gpu_kernel(*_BINARY)
def binary_op(ctx: GpuContext):
    xp = ctx.xp
    op = ctx.node.op_type
    is_int = ctx.dtype(0).kind in "iu"
    f = _binary_table(xp, is_int)[op]
    out_dt = ctx.out_dtype(0)
    if op == "Pow" and ctx.dtype(0).kind == "f":
        # a constant exponent of 2 or 0.5 (LayerNorm spellings) needs no pow
        e = ctx.peek(1)
        if e is not None and e.size == 1 and float(e.reshape(())) in (2.0, 0.5, 1.0):
            ctx.const(1)
            k = float(e.reshape(()))
            fn = {2.0: lambda x: x * x, 0.5: xp.sqrt, 1.0: lambda x: x.copy()}[k]
            return lambda a, _b: fn(a)
    # constants are uploaded once by the executable (in the compute dtype); a 0-d float
    # constant becomes a Python scalar so it cannot widen a float16 tensor
    scalars = {}
    for i in (0, 1):
        v = ctx.peek(i)
        if v is not None and v.ndim == 0 and v.dtype.kind == "f" and ctx.dtype(1 - i).kind == "f":
            ctx.const(i)
            scalars[i] = float(v)

    def binary(a, b):
        if 0 in scalars:
            a = scalars[0]
        if 1 in scalars:
            b = scalars[1]
        with np.errstate(all="ignore"):
            y = f(a, b)
        return y if y.dtype == out_dt else y.astype(out_dt)

    return binary


@gpu_kernel("Mod")
def mod_op(ctx: GpuContext, fmod=0):
    xp = ctx.xp
    if fmod or ctx.dtype(0).kind == "f":
        return lambda a, b: xp.fmod(a, b)
    return lambda a, b: xp.mod(a, b)


@gpu_kernel("Sum", "Mean", "Max", "Min")
def variadic_op(ctx: GpuContext):
    xp = ctx.xp
    op = ctx.node.op_type
    f = {"Sum": xp.add, "Mean": xp.add, "Max": xp.maximum, "Min": xp.minimum}[op]
    out_dt = ctx.out_dtype(0)

    def variadic(*xs):
        xs = [x for x in xs if x is not None]
        y = xs[0]
        for x in xs[1:]:
            y = f(y, x)
        if op == "Mean":
            y = y / len(xs)
        if len(xs) == 1:
            y = y.copy()
        return y if y.dtype == out_dt else y.astype(out_dt)

    return variadic


@gpu_kernel("Where")
def where_op(ctx: GpuContext):
    xp = ctx.xp
    out_dt = ctx.out_dtype(0)
    return lambda c, a, b: xp.where(c, a, b).astype(out_dt, copy=False)


@gpu_kernel("PRelu")
def prelu_op(ctx: GpuContext):
    xp = ctx.xp
    return lambda x, slope: xp.where(x >= 0, x, x * slope).astype(x.dtype, copy=False)


@gpu_kernel("Cast", "CastLike")
def cast_op(ctx: GpuContext, **attrs):
    out_dt = ctx.out_dtype(0)
    if out_dt.kind not in "biuf":
        raise ctx.fail(f"cannot cast to {ctx.outputs[0].dtype} on the gpu backend")
    xp = ctx.xp
    from_float = ctx.dtype(0).kind == "f"

    def cast(x, *_):
        if from_float and out_dt.kind in "iu":
            x = xp.trunc(x)  # numpy's float -> int cast truncates too, but says so on nan
        return x.astype(out_dt)

    return cast


@gpu_kernel("Identity", "Dropout")
def identity_op(ctx: GpuContext, **attrs):
    xp = ctx.xp
    if len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        shape = ctx.shape(0)
        return lambda x, *_: (x, xp.ones(shape, dtype=bool))
    return lambda x, *_: x


# ---------------------------------------------------------------------- normalization
@gpu_kernel("Softmax", "LogSoftmax")
def softmax_op(ctx: GpuContext, axis):
    xp = ctx.xp
    log = ctx.node.op_type == "LogSoftmax"

    def softmax(x):
        v = x.astype(work_dtype(x.dtype))
        v = v - v.max(axis=axis, keepdims=True)
        e = xp.exp(v)
        s = e.sum(axis=axis, keepdims=True)
        y = v - xp.log(s) if log else e / s
        return y.astype(x.dtype, copy=False)

    return softmax


@gpu_kernel("LayerNormalization")
def layer_norm_op(ctx: GpuContext, axis, epsilon, stash_type):
    xp = ctx.xp
    rank = len(ctx.shape(0))
    ax = tuple(range(axis % rank, rank))
    scale = ctx.const(1)
    bias = ctx.const(2) if ctx.has_input(2) else None
    work = work_dtype(ctx.dtype(0))
    s_dev = None if scale is None else ctx.upload(scale, work)
    b_dev = None if bias is None else ctx.upload(bias, work)
    n_out = len(ctx.node.outputs)

    def layer_norm(x, s=None, b=None):
        v = x.astype(work)
        mean = v.mean(axis=ax, keepdims=True)
        d = v - mean
        inv = 1 / xp.sqrt((d * d).mean(axis=ax, keepdims=True) + epsilon)
        y = d * inv
        y *= s_dev if s is None else s.astype(work)
        if b_dev is not None or b is not None:
            y += b_dev if b is None else b.astype(work)
        y = y.astype(x.dtype, copy=False)
        if n_out == 1:
            return y
        return (y, mean.astype(np.float32), inv.astype(np.float32))[:n_out]

    return layer_norm


@gpu_kernel("BatchNormalization")
def batch_norm_op(ctx: GpuContext, epsilon, momentum, training_mode):
    if training_mode:
        raise ctx.fail("training_mode BatchNormalization is not supported on the gpu backend")
    vals = [ctx.const(i) for i in (1, 2, 3, 4)]
    if any(v is None for v in vals):
        raise ctx.fail("scale, B, mean and var must be constants on the gpu backend")
    s, b, m, var = (v.astype(np.float64) for v in vals)
    scale = s / np.sqrt(var + epsilon)
    shift = b - m * scale
    rank = len(ctx.shape(0))
    shape = (-1,) + (1,) * (rank - 2)
    sc = ctx.upload(scale.reshape(shape), ctx.dtype(0))
    sh = ctx.upload(shift.reshape(shape), ctx.dtype(0))
    return lambda x, *_: x * sc + sh


@gpu_kernel("InstanceNormalization")
def instance_norm_op(ctx: GpuContext, epsilon):
    xp = ctx.xp
    rank = len(ctx.shape(0))
    ax = tuple(range(2, rank))
    shape = (-1,) + (1,) * (rank - 2)
    work = work_dtype(ctx.dtype(0))
    s = ctx.upload(ctx.const(1).reshape(shape), work)
    b = ctx.upload(ctx.const(2).reshape(shape), work)

    def instance_norm(x, *_):
        v = x.astype(work)
        d = v - v.mean(axis=ax, keepdims=True)
        y = d / xp.sqrt((d * d).mean(axis=ax, keepdims=True) + epsilon) * s + b
        return y.astype(x.dtype, copy=False)

    return instance_norm


# -------------------------------------------------------------------------- reductions
def _reduce_axes(ctx: GpuContext, attrs: dict) -> tuple[int, ...] | None:
    rank = len(ctx.shape(0))
    if ctx.has_input(1):
        axes = ctx.const(1)
        if axes is None:
            raise ctx.fail("axes must be a constant on the gpu backend")
        axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    else:
        axes = attrs.get("axes")
    if not axes:
        return () if attrs.get("noop_with_empty_axes") else tuple(range(rank))
    return tuple(sorted(a % rank for a in axes))


_REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum")


@gpu_kernel(*_REDUCE)
def reduce_op(ctx: GpuContext, **attrs):
    xp = ctx.xp
    op = ctx.node.op_type
    axes = _reduce_axes(ctx, attrs)
    keep = bool(attrs.get("keepdims", 1))
    out_dt = ctx.out_dtype(0)
    work = work_dtype(ctx.dtype(0))
    if axes == ():
        return lambda x, *_: x.copy()

    def reduce(x, *_):
        v = x.astype(work) if ctx.dtype(0).kind == "f" else x
        if op == "ReduceMean":
            y = v.mean(axis=axes, keepdims=keep)
        elif op == "ReduceSum":
            y = v.sum(axis=axes, keepdims=keep)
        elif op == "ReduceMax":
            y = v.max(axis=axes, keepdims=keep)
        elif op == "ReduceMin":
            y = v.min(axis=axes, keepdims=keep)
        elif op == "ReduceProd":
            y = v.prod(axis=axes, keepdims=keep)
        elif op == "ReduceL1":
            y = xp.abs(v).sum(axis=axes, keepdims=keep)
        elif op == "ReduceL2":
            y = xp.sqrt((v * v).sum(axis=axes, keepdims=keep))
        elif op == "ReduceSumSquare":
            y = (v * v).sum(axis=axes, keepdims=keep)
        elif op == "ReduceLogSum":
            y = xp.log(v.sum(axis=axes, keepdims=keep))
        else:
            m = v.max(axis=axes, keepdims=True)
            y = xp.log(xp.exp(v - m).sum(axis=axes, keepdims=True)) + m
            if not keep:
                y = y.reshape([d for i, d in enumerate(v.shape) if i not in axes])
        return y.astype(out_dt, copy=False)

    return reduce


@gpu_kernel("ArgMax", "ArgMin")
def arg_reduce_op(ctx: GpuContext, axis, keepdims, select_last_index):
    xp = ctx.xp
    rank = len(ctx.shape(0))
    ax = axis % rank
    find = xp.argmax if ctx.node.op_type == "ArgMax" else xp.argmin

    def arg_reduce(x):
        if select_last_index:
            n = x.shape[ax]
            i = (n - 1) - find(xp.flip(x, axis=ax), axis=ax)
        else:
            i = find(x, axis=ax)
        i = i.astype(np.int64)
        return xp.expand_dims(i, ax) if keepdims else i

    return arg_reduce


@gpu_kernel("CumSum")
def cumsum_op(ctx: GpuContext, exclusive, reverse):
    xp = ctx.xp
    a = ctx.const(1)
    if a is None:
        raise ctx.fail("axis must be a constant on the gpu backend")
    ax = int(np.asarray(a).reshape(())) % len(ctx.shape(0))

    def cumsum(x, _a=None):
        v = xp.flip(x, axis=ax) if reverse else x
        y = xp.cumsum(v, axis=ax, dtype=x.dtype)
        if exclusive:
            y = y - v
        return xp.flip(y, axis=ax) if reverse else y

    return cumsum
