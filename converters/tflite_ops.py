"""TFLite operator builders: one function per builtin that emits IR nodes (custom ops, control
flow and resource variables are in :mod:`.tflite_ops_extra`).

Each builder gets a :class:`Builder`, a view of one operator inside the import
(:mod:`.tflite_import`), and reads its inputs as float values (quantized tensors come
dequantized), its parameters from constant inputs and builtin options, and binds each output.
Tensors keep TFLite's channels-last order; channels-first IR ops are wrapped by :meth:`Builder.nchw`
and :meth:`Builder.nhwc` and the layout pass cancels those Transposes.

Parameters that would divide by zero, index outside a tensor or need a runtime value the op
cannot take are errors naming the operator (HOSTILE_INPUTS 36-38, 44).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeinfer import dtypes as _dt
from edgeinfer.errors import ModelFormatError

from .tflite_reader import Operator, Tensor

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min

BUILDERS: dict[str, Callable[["Builder"], None]] = {}

# float16 constants up to this many elements (biases, PReLU slopes) are widened at import;
# bigger ones (weights) keep their storage and a Cast (TFLite's DEQUANTIZE)
SMALL_CONSTANT = 4096


def op_key(op: Operator) -> str:
    """``CONV_2D`` for builtins, ``CUSTOM:Name`` for custom ops."""
    return f"CUSTOM:{op.custom_code}" if op.op == "CUSTOM" else op.op


def builder(*names: str):
    def register(fn):
        for n in names:
            BUILDERS[n] = fn
        return fn
    return register


# layout permutations for rank 3/4/5 (1-D, 2-D, 3-D spatial)
_TO_NCHW = {3: (0, 2, 1), 4: (0, 3, 1, 2), 5: (0, 4, 1, 2, 3)}
_TO_NHWC = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}


class Builder:
    """One operator being imported."""

    def __init__(self, imp, op: Operator, index: int, where: str):
        self.imp = imp
        self.op = op
        self.opt = op.options or {}
        self.index = index
        self.where = where

    # ------------------------------------------------------------------ errors
    def error(self, message: str) -> ModelFormatError:
        return ModelFormatError(f"{self.where}: {message}")

    # ------------------------------------------------------------------ inputs
    @property
    def n_in(self) -> int:
        return len(self.op.inputs)

    def has(self, k: int) -> bool:
        return k < len(self.op.inputs) and self.op.inputs[k] >= 0

    def t(self, k: int) -> Tensor:
        if not self.has(k):
            raise self.error(f"input {k} is required but missing")
        return self.imp.sg.tensors[self.op.inputs[k]]

    def out_t(self, k: int = 0) -> Tensor:
        if k >= len(self.op.outputs) or self.op.outputs[k] < 0:
            raise self.error(f"output {k} is required but missing")
        return self.imp.sg.tensors[self.op.outputs[k]]

    def x(self, k: int) -> str:
        """Input ``k`` as the (float, dequantized) value the op computes with."""
        self.t(k)
        return self.imp.value(self.op.inputs[k])

    def const(self, k: int) -> np.ndarray | None:
        """The stored value of constant input ``k`` (raw, not dequantized), or None."""
        return self.t(k).data if self.has(k) else None

    def ints(self, k: int, what: str) -> list[int]:
        value = self.const(k)
        if value is None:
            raise self.error(f"input {k} ({what}) must be a constant for edgeinfer to import this operator")
        if value.dtype.kind not in "iu":
            raise self.error(f"input {k} ({what}) must hold integers, found {value.dtype}")
        return [int(v) for v in value.reshape(-1)]

    def shape(self, k: int) -> tuple[int, ...]:
        return tuple(self.t(k).shape)

    def rank(self, k: int) -> int:
        return len(self.t(k).shape)

    def axis(self, a: int, rank: int, what: str = "axis") -> int:
        """``a`` normalised into [0, rank) (HOSTILE_INPUTS 36)."""
        if not -rank <= a < rank:
            raise self.error(f"{what} {a} is out of range for rank {rank}")
        return a + rank if a < 0 else a

    def positive(self, name: str, value: int) -> int:
        if value is None or int(value) <= 0:
            raise self.error(f"option {name} = {value} must be positive")
        return int(value)

    # ------------------------------------------------------------------ emitting
    def add(self, op_type: str, inputs, attrs: dict | None = None, n_out: int = 1, domain: str = "") -> list[str]:
        return self.imp.add(op_type, inputs, attrs, n_out=n_out, domain=domain, hint=op_type)

    def one(self, op_type: str, inputs, attrs: dict | None = None) -> str:
        return self.add(op_type, inputs, attrs)[0]

    def c(self, value, hint: str = "const") -> str:
        return self.imp.new_const(np.asarray(value), hint)

    def i64(self, values, hint: str = "ints") -> str:
        return self.c(np.asarray(values, dtype=np.int64), hint)

    def weight(self, k: int, perm: tuple[int, ...] | None, hint: str = "weight") -> str:
        self.t(k)
        return self.imp.weight(self.op.inputs[k], perm, hint)

    def bind(self, k: int, name: str) -> None:
        if k < len(self.op.outputs) and self.op.outputs[k] >= 0:
            self.imp.bind(self.op.outputs[k], name)

    def nchw(self, name: str, rank: int = 4) -> str:
        return self.one("Transpose", [name], {"perm": list(_TO_NCHW[rank])})

    def nhwc(self, name: str, rank: int = 4) -> str:
        return self.one("Transpose", [name], {"perm": list(_TO_NHWC[rank])})

    def act(self, name: str, key: str = "fused_activation_function") -> str:
        fn = self.opt.get(key, "NONE") or "NONE"
        if fn == "NONE":
            return name
        if fn == "RELU":
            return self.one("Relu", [name])
        if fn == "RELU6":
            return self.one("Clip", [name, self.c(np.float32(0), "zero"), self.c(np.float32(6), "six")])
        if fn == "RELU_N1_TO_1":
            return self.one("Clip", [name, self.c(np.float32(-1), "minus_one"), self.c(np.float32(1), "one")])
        if fn == "RELU_0_TO_1":
            return self.one("Clip", [name, self.c(np.float32(0), "zero"), self.c(np.float32(1), "one")])
        if fn == "TANH":
            return self.one("Tanh", [name])
        if fn == "SIGN_BIT":
            return self.one("Sign", [name])
        raise self.error(f"unknown fused activation {fn!r}")

    def float_const(self, value: float, like: int = 0) -> str:
        dtype = self.t(like).dtype if self.has(like) else "float32"
        dt = _dt.to_numpy(dtype) if dtype in ("float16", "float32", "float64") else np.float32
        return self.c(np.asarray(value, dtype=dt), "value")


# ---------------------------------------------------------------------- padding helpers
def _auto_pad(b: Builder) -> str:
    padding = b.opt.get("padding", "SAME")
    if padding == "SAME":
        return "SAME_UPPER"
    if padding == "VALID":
        return "VALID"
    raise b.error(f"unknown padding {padding!r}")


def _strides(b: Builder) -> list[int]:
    return [b.positive("stride_h", b.opt.get("stride_h", 1)), b.positive("stride_w", b.opt.get("stride_w", 1))]


def _dilations(b: Builder) -> list[int]:
    return [b.positive("dilation_h_factor", b.opt.get("dilation_h_factor", 1)),
            b.positive("dilation_w_factor", b.opt.get("dilation_w_factor", 1))]


# ---------------------------------------------------------------------- convolutions
@builder("CONV_2D")
def _conv_2d(b: Builder) -> None:
    x_shape, w_shape = b.shape(0), b.shape(1)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise b.error(f"expects 4-D input and filter, found ranks {len(x_shape)} and {len(w_shape)}")
    if w_shape[3] <= 0 or x_shape[3] % w_shape[3]:
        raise b.error(f"input channels {x_shape[3]} are not a multiple of the filter's {w_shape[3]} (HOSTILE 38)")
    group = x_shape[3] // w_shape[3]
    inputs = [b.nchw(b.x(0)), b.weight(1, (0, 3, 1, 2))]
    if b.has(2):
        inputs.append(b.x(2))
    y = b.one("Conv", inputs, {"auto_pad": _auto_pad(b), "strides": _strides(b), "dilations": _dilations(b),
                               "group": group, "kernel_shape": [w_shape[1], w_shape[2]]})
    b.bind(0, b.nhwc(b.act(y)))


@builder("DEPTHWISE_CONV_2D")
def _depthwise(b: Builder) -> None:
    x_shape, w_shape = b.shape(0), b.shape(1)
    if len(x_shape) != 4 or len(w_shape) != 4 or w_shape[0] != 1:
        raise b.error(f"expects a 4-D input and a [1, H, W, C*M] filter, found {list(x_shape)} and {list(w_shape)}")
    channels = x_shape[3]
    if channels <= 0 or w_shape[3] % channels:
        raise b.error(f"filter channels {w_shape[3]} are not a multiple of the input's {channels} (HOSTILE 38)")
    inputs = [b.nchw(b.x(0)), b.weight(1, (3, 0, 1, 2))]
    if b.has(2):
        inputs.append(b.x(2))
    y = b.one("Conv", inputs, {"auto_pad": _auto_pad(b), "strides": _strides(b), "dilations": _dilations(b),
                               "group": channels, "kernel_shape": [w_shape[1], w_shape[2]]})
    b.bind(0, b.nhwc(b.act(y)))


def _transpose_conv(b: Builder, x: int, w: int, bias: int | None, out_hw: tuple[int, int], padding: str,
                    strides: list[int]) -> None:
    x_shape, w_shape = b.shape(x), b.shape(w)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise b.error(f"expects 4-D input and filter, found ranks {len(x_shape)} and {len(w_shape)}")
    if w_shape[3] != x_shape[3]:
        raise b.error(f"filter input channels {w_shape[3]} differ from the input's {x_shape[3]}")
    pads, extra = [0, 0, 0, 0], [0, 0]
    for i in range(2):
        total = (x_shape[1 + i] - 1) * strides[i] + w_shape[1 + i] - out_hw[i]
        before = max(total, 0) // 2 if padding == "SAME" else 0
        after = total - before
        if after < 0:
            extra[i], after = -after, 0
        pads[i], pads[2 + i] = before, after
    inputs = [b.nchw(b.x(x)), b.weight(w, (3, 0, 1, 2))]
    if bias is not None and b.has(bias):
        inputs.append(b.x(bias))
    attrs = {"strides": strides, "pads": pads, "kernel_shape": [w_shape[1], w_shape[2]]}
    if any(extra):
        attrs["output_padding"] = extra
    y = b.one("ConvTranspose", inputs, attrs)
    b.bind(0, b.nhwc(b.act(y)))


@builder("TRANSPOSE_CONV")
def _transpose_conv_op(b: Builder) -> None:
    out_shape = b.ints(0, "output_shape")
    if len(out_shape) != 4 or any(d <= 0 for d in out_shape):
        raise b.error(f"output_shape {out_shape} must be 4 positive dims")
    padding = b.opt.get("padding", "SAME")
    if padding not in ("SAME", "VALID"):
        raise b.error(f"unknown padding {padding!r}")
    _transpose_conv(b, 2, 1, 3, (out_shape[1], out_shape[2]), padding, _strides(b))


@builder("FULLY_CONNECTED")
def _fully_connected(b: Builder) -> None:
    if b.opt.get("weights_format", "DEFAULT") != "DEFAULT":
        raise b.error(f"weights_format {b.opt.get('weights_format')} is not supported")
    w_shape = b.shape(1)
    if len(w_shape) != 2 or w_shape[1] <= 0:
        raise b.error(f"expects a 2-D [out, in] filter, found {list(w_shape)}")
    flat = b.one("Reshape", [b.x(0), b.i64([-1, w_shape[1]], "fc_shape")])
    inputs = [flat, b.weight(1, None)]
    if b.has(2):
        inputs.append(b.x(2))
    y = b.act(b.one("Gemm", inputs, {"transB": 1}))
    out = b.out_t(0)
    if list(out.shape) != [-1, w_shape[0]] and out.shape:
        shape = list(b.shape(0)[:-1]) + [w_shape[0]] if b.opt.get("keep_num_dims") else [-1, w_shape[0]]
        y = b.one("Reshape", [y, b.i64(shape, "fc_out_shape")])
    b.bind(0, y)


# ---------------------------------------------------------------------- pooling
def _pool(b: Builder, op_type: str) -> str:
    size = [b.positive("filter_height", b.opt.get("filter_height")), b.positive("filter_width", b.opt.get("filter_width"))]
    attrs = {"kernel_shape": size, "strides": _strides(b), "auto_pad": _auto_pad(b)}
    return b.one(op_type, [b.nchw(b.x(0))], attrs)


@builder("AVERAGE_POOL_2D")
def _avg_pool(b: Builder) -> None:
    b.bind(0, b.nhwc(b.act(_pool(b, "AveragePool"))))


@builder("MAX_POOL_2D")
def _max_pool(b: Builder) -> None:
    b.bind(0, b.nhwc(b.act(_pool(b, "MaxPool"))))


@builder("L2_POOL_2D")
def _l2_pool(b: Builder) -> None:
    size = [b.positive("filter_height", b.opt.get("filter_height")), b.positive("filter_width", b.opt.get("filter_width"))]
    x = b.nchw(b.x(0))
    sq = b.one("Mul", [x, x])
    mean = b.one("AveragePool", [sq], {"kernel_shape": size, "strides": _strides(b), "auto_pad": _auto_pad(b)})
    b.bind(0, b.nhwc(b.act(b.one("Sqrt", [mean]))))


# ---------------------------------------------------------------------- elementwise
_BINARY = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul", "DIV": "Div"}


@builder(*_BINARY)
def _binary_fused(b: Builder) -> None:
    b.bind(0, b.act(b.one(_BINARY[b.op.op], [b.x(0), b.x(1)])))


_PLAIN_BINARY = {
    "MAXIMUM": "Max", "MINIMUM": "Min", "POW": "Pow", "LESS": "Less", "LESS_EQUAL": "LessOrEqual",
    "GREATER": "Greater", "GREATER_EQUAL": "GreaterOrEqual", "EQUAL": "Equal", "LOGICAL_AND": "And",
    "LOGICAL_OR": "Or",
}


@builder(*_PLAIN_BINARY)
def _binary(b: Builder) -> None:
    b.bind(0, b.one(_PLAIN_BINARY[b.op.op], [b.x(0), b.x(1)]))


@builder("NOT_EQUAL")
def _not_equal(b: Builder) -> None:
    b.bind(0, b.one("Not", [b.one("Equal", [b.x(0), b.x(1)])]))


@builder("SQUARED_DIFFERENCE")
def _squared_difference(b: Builder) -> None:
    d = b.one("Sub", [b.x(0), b.x(1)])
    b.bind(0, b.one("Mul", [d, d]))


@builder("FLOOR_DIV")
def _floor_div(b: Builder) -> None:
    a, c = b.x(0), b.x(1)
    if b.t(0).dtype.startswith("float"):
        b.bind(0, b.one("Floor", [b.one("Div", [a, c])]))
    else:  # exact for integers: (a - a mod c) / c, with the divisor's sign as in Python
        b.bind(0, b.one("Div", [b.one("Sub", [a, b.one("Mod", [a, c], {"fmod": 0})]), c]))


@builder("FLOOR_MOD")
def _floor_mod(b: Builder) -> None:
    a, c = b.x(0), b.x(1)
    if b.t(0).dtype.startswith("float"):
        q = b.one("Floor", [b.one("Div", [a, c])])
        b.bind(0, b.one("Sub", [a, b.one("Mul", [q, c])]))
    else:
        b.bind(0, b.one("Mod", [a, c], {"fmod": 0}))


_UNARY = {
    "EXP": "Exp", "LOG": "Log", "SQRT": "Sqrt", "ABS": "Abs", "NEG": "Neg", "FLOOR": "Floor", "CEIL": "Ceil",
    "ROUND": "Round", "SIN": "Sin", "COS": "Cos", "SIGN": "Sign", "LOGICAL_NOT": "Not", "LOGISTIC": "Sigmoid",
    "TANH": "Tanh", "RELU": "Relu", "HARD_SWISH": "HardSwish",
}


@builder(*_UNARY)
def _unary(b: Builder) -> None:
    b.bind(0, b.one(_UNARY[b.op.op], [b.x(0)]))


@builder("RSQRT")
def _rsqrt(b: Builder) -> None:
    b.bind(0, b.one("Reciprocal", [b.one("Sqrt", [b.x(0)])]))


@builder("SQUARE")
def _square(b: Builder) -> None:
    x = b.x(0)
    b.bind(0, b.one("Mul", [x, x]))


@builder("RELU6", "RELU_N1_TO_1", "RELU_0_TO_1")
def _clip(b: Builder) -> None:
    lo, hi = {"RELU6": (0, 6), "RELU_N1_TO_1": (-1, 1), "RELU_0_TO_1": (0, 1)}[b.op.op]
    b.bind(0, b.one("Clip", [b.x(0), b.c(np.float32(lo), "lo"), b.c(np.float32(hi), "hi")]))


@builder("LEAKY_RELU")
def _leaky_relu(b: Builder) -> None:
    b.bind(0, b.one("LeakyRelu", [b.x(0)], {"alpha": float(b.opt.get("alpha", 0.0))}))


@builder("PRELU")
def _prelu(b: Builder) -> None:
    b.bind(0, b.one("PRelu", [b.x(0), b.x(1)]))


@builder("ELU")
def _elu(b: Builder) -> None:
    b.bind(0, b.one("Elu", [b.x(0)], {"alpha": 1.0}))


@builder("GELU")
def _gelu(b: Builder) -> None:
    b.bind(0, b.one("Gelu", [b.x(0)], {"approximate": "tanh" if b.opt.get("approximate") else "none"}))


@builder("SOFTMAX")
def _softmax(b: Builder) -> None:
    x = b.x(0)
    beta = float(b.opt.get("beta", 1.0))
    if beta != 1.0:
        x = b.one("Mul", [x, b.float_const(beta)])
    b.bind(0, b.one("Softmax", [x], {"axis": -1}))


@builder("LOG_SOFTMAX")
def _log_softmax(b: Builder) -> None:
    b.bind(0, b.one("LogSoftmax", [b.x(0)], {"axis": -1}))


@builder("L2_NORMALIZATION")
def _l2_norm(b: Builder) -> None:
    x = b.x(0)
    ss = b.one("ReduceSumSquare", [x, b.i64([-1], "axes")], {"keepdims": 1})
    norm = b.one("Sqrt", [b.one("Max", [ss, b.float_const(1e-6)])])
    b.bind(0, b.act(b.one("Div", [x, norm])))


@builder("LOCAL_RESPONSE_NORMALIZATION")
def _lrn(b: Builder) -> None:
    if b.rank(0) != 4:
        raise b.error(f"expects a 4-D input, found rank {b.rank(0)}")
    radius = int(b.opt.get("radius", 5))
    if radius < 0:
        raise b.error(f"radius {radius} is negative")
    size = 2 * radius + 1
    attrs = {"size": size, "alpha": float(b.opt.get("alpha", 1.0)) * size, "beta": float(b.opt.get("beta", 0.5)),
             "bias": float(b.opt.get("bias", 1.0))}
    b.bind(0, b.nhwc(b.one("LRN", [b.nchw(b.x(0))], attrs)))


@builder("SELECT", "SELECT_V2")
def _select(b: Builder) -> None:
    cond = b.x(0)
    if b.op.op == "SELECT" and b.rank(0) == 1 and b.rank(1) > 1:  # v1: one condition per row
        cond = b.one("Reshape", [cond, b.i64([-1] + [1] * (b.rank(1) - 1), "cond_shape")])
    b.bind(0, b.one("Where", [cond, b.x(1), b.x(2)]))


@builder("CAST")
def _cast(b: Builder) -> None:
    b.bind(0, b.one("Cast", [b.x(0)], {"to": b.out_t(0).dtype}))


@builder("DEQUANTIZE")
def _dequantize(b: Builder) -> None:
    t = b.t(0)
    x = b.x(0)  # already a DequantizeLinear output when t is quantized
    out = b.out_t(0).dtype
    if t.dtype != out and not b.imp.is_quantized(t):
        value = b.imp.constants.get(x)
        if value is not None and value.size <= SMALL_CONSTANT:
            x = b.c(value.astype(_dt.to_numpy(out)), "dequantized")  # exact: float16 -> float32
        else:
            x = b.one("Cast", [x], {"to": out})  # float16 weights stay float16 in the graph
    b.bind(0, x)


@builder("QUANTIZE")
def _quantize(b: Builder) -> None:
    if not b.imp.is_quantized(b.out_t(0)):
        raise b.error("QUANTIZE writes a tensor without quantization parameters")
    b.bind(0, b.x(0))


@builder("DENSIFY")
def _densify(b: Builder) -> None:
    b.bind(0, b.x(0))  # the reader densified the sparse constant already


# ---------------------------------------------------------------------- shape ops
@builder("RESHAPE")
def _reshape(b: Builder) -> None:
    x = b.x(0)
    shape: list[int] | None = None
    runtime = None
    if b.has(1):
        if b.const(1) is not None:
            shape = b.ints(1, "shape")
        else:
            runtime = b.one("Cast", [b.x(1)], {"to": "int64"})
    elif "new_shape" in b.opt and b.opt["new_shape"]:
        shape = [int(v) for v in b.opt["new_shape"]]
    if shape is None and runtime is None:
        shape = list(b.out_t(0).shape)
    if runtime is not None:
        b.bind(0, b.one("Reshape", [x, runtime]))
        return
    if sum(1 for d in shape if d == -1) > 1 or any(d < -1 for d in shape):
        raise b.error(f"new shape {shape} is invalid")
    b.bind(0, b.one("Reshape", [x, b.i64(shape, "shape")], {"allowzero": 1 if 0 in shape and -1 not in shape else 0}))


@builder("SQUEEZE")
def _squeeze(b: Builder) -> None:
    shape = b.shape(0)
    dims = [int(d) for d in b.opt.get("squeeze_dims", ()) or ()]
    axes = [b.axis(d, len(shape), "squeeze dim") for d in dims] if dims else [i for i, d in enumerate(shape) if d == 1]
    if not axes:
        b.bind(0, b.x(0)) if False else b.bind(0, b.one("Identity", [b.x(0)]))
        return
    b.bind(0, b.one("Squeeze", [b.x(0), b.i64(axes, "axes")]))


@builder("EXPAND_DIMS")
def _expand_dims(b: Builder) -> None:
    (axis,) = b.ints(1, "axis")[:1] or [None]
    rank = b.rank(0)
    a = b.axis(axis, rank + 1)
    b.bind(0, b.one("Unsqueeze", [b.x(0), b.i64([a], "axes")]))


@builder("TRANSPOSE")
def _transpose(b: Builder) -> None:
    perm = b.ints(1, "perm")
    if sorted(perm) != list(range(b.rank(0))):
        raise b.error(f"perm {perm} is not a permutation of rank {b.rank(0)}")
    b.bind(0, b.one("Transpose", [b.x(0)], {"perm": perm}))


@builder("CONCATENATION")
def _concat(b: Builder) -> None:
    rank = b.rank(0)
    axis = b.axis(int(b.opt.get("axis", 0)), rank)
    inputs = [b.x(k) for k in range(b.n_in)]
    b.bind(0, b.act(b.one("Concat", inputs, {"axis": axis})))


@builder("PACK")
def _pack(b: Builder) -> None:
    rank = b.rank(0)
    axis = b.axis(int(b.opt.get("axis", 0)), rank + 1)
    axes = b.i64([axis], "axes")
    parts = [b.one("Unsqueeze", [b.x(k), axes]) for k in range(b.n_in)]
    b.bind(0, b.one("Concat", parts, {"axis": axis}))


@builder("UNPACK")
def _unpack(b: Builder) -> None:
    shape = b.shape(0)
    axis = b.axis(int(b.opt.get("axis", 0)), len(shape))
    num = len(b.op.outputs)
    if shape[axis] != num:
        raise b.error(f"unpacks {num} outputs from a dim of {shape[axis]}")
    axes = b.i64([axis], "axes")
    parts = b.add("Split", [b.x(0)], {"axis": axis, "num_outputs": num}, n_out=num)
    for k, p in enumerate(parts):
        b.bind(k, b.one("Squeeze", [p, axes]))


@builder("SPLIT")
def _split(b: Builder) -> None:
    (axis,) = b.ints(0, "axis")[:1]
    shape = b.shape(1)
    axis = b.axis(axis, len(shape))
    num = b.positive("num_splits", b.opt.get("num_splits", len(b.op.outputs)))
    if shape[axis] % num:
        raise b.error(f"dim {shape[axis]} does not split into {num} equal parts")
    parts = b.add("Split", [b.x(1), b.i64([shape[axis] // num] * num, "split")], {"axis": axis}, n_out=num)
    for k, p in enumerate(parts):
        b.bind(k, p)


@builder("SPLIT_V")
def _split_v(b: Builder) -> None:
    shape = b.shape(0)
    sizes = b.ints(1, "size_splits")
    (axis,) = b.ints(2, "axis")[:1]
    axis = b.axis(axis, len(shape))
    if sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        raise b.error(f"size_splits {sizes} is invalid")
    if -1 in sizes:
        sizes[sizes.index(-1)] = shape[axis] - sum(s for s in sizes if s >= 0)
    if sum(sizes) != shape[axis] or any(s < 0 for s in sizes):
        raise b.error(f"size_splits {sizes} do not add up to the dim {shape[axis]}")
    parts = b.add("Split", [b.x(0), b.i64(sizes, "split")], {"axis": axis}, n_out=len(sizes))
    for k, p in enumerate(parts):
        b.bind(k, p)


@builder("PAD", "PADV2")
def _pad(b: Builder) -> None:
    rank = b.rank(0)
    pads = b.ints(1, "paddings")
    if len(pads) != 2 * rank or any(p < 0 for p in pads):
        raise b.error(f"paddings {pads} must be {rank}x2 non-negative values")
    onnx_pads = [pads[2 * i] for i in range(rank)] + [pads[2 * i + 1] for i in range(rank)]
    inputs = [b.x(0), b.i64(onnx_pads, "pads")]
    if b.op.op == "PADV2" and b.has(2):
        inputs.append(b.x(2))
    b.bind(0, b.one("Pad", inputs, {"mode": "constant"}))


@builder("MIRROR_PAD")
def _mirror_pad(b: Builder) -> None:
    mode = b.opt.get("mode", "REFLECT")
    if mode != "REFLECT":
        raise b.error(f"MIRROR_PAD mode {mode} has no IR equivalent (only REFLECT)")
    rank = b.rank(0)
    pads = b.ints(1, "paddings")
    if len(pads) != 2 * rank or any(p < 0 for p in pads):
        raise b.error(f"paddings {pads} must be {rank}x2 non-negative values")
    onnx_pads = [pads[2 * i] for i in range(rank)] + [pads[2 * i + 1] for i in range(rank)]
    b.bind(0, b.one("Pad", [b.x(0), b.i64(onnx_pads, "pads")], {"mode": "reflect"}))


_REDUCE = {"MEAN": "ReduceMean", "SUM": "ReduceSum", "REDUCE_MAX": "ReduceMax", "REDUCE_MIN": "ReduceMin",
           "REDUCE_PROD": "ReduceProd", "REDUCE_ANY": "ReduceMax", "REDUCE_ALL": "ReduceMin"}


@builder(*_REDUCE)
def _reduce(b: Builder) -> None:
    rank = b.rank(0)
    axes = sorted({b.axis(a, rank) for a in b.ints(1, "axes")})
    x = b.x(0)
    boolean = b.op.op in ("REDUCE_ANY", "REDUCE_ALL")
    if boolean:
        x = b.one("Cast", [x], {"to": "int32"})
    y = b.one(_REDUCE[b.op.op], [x, b.i64(axes, "axes")], {"keepdims": 1 if b.opt.get("keep_dims") else 0})
    if boolean:
        y = b.one("Cast", [y], {"to": "bool"})
    b.bind(0, y)


@builder("STRIDED_SLICE")
def _strided_slice(b: Builder) -> None:
    shape = b.shape(0)
    rank = len(shape)
    begin, end = b.ints(1, "begin"), b.ints(2, "end")
    strides = b.ints(3, "strides") if b.has(3) else [1] * len(begin)
    if not len(begin) == len(end) == len(strides) or len(begin) > rank:
        raise b.error(f"begin/end/strides lengths {len(begin)}/{len(end)}/{len(strides)} do not fit rank {rank}")
    if b.opt.get("ellipsis_mask", 0) or b.opt.get("new_axis_mask", 0):
        raise b.error("ellipsis_mask and new_axis_mask are not supported")
    begin_mask, end_mask = int(b.opt.get("begin_mask", 0)), int(b.opt.get("end_mask", 0))
    shrink = int(b.opt.get("shrink_axis_mask", 0))
    starts, ends, steps, shrunk = [], [], [], []
    for i, (s0, e0, st) in enumerate(zip(begin, end, strides)):
        if st == 0:
            raise b.error(f"stride {i} is zero")
        if b.opt.get("offset"):
            e0 = s0 + e0
        if shrink >> i & 1:
            start = s0 + shape[i] if s0 < 0 else s0
            if not 0 <= start < shape[i]:
                raise b.error(f"shrink index {s0} is out of range for dim {shape[i]}")
            starts.append(start), ends.append(start + 1), steps.append(1), shrunk.append(i)
            continue
        starts.append((0 if st > 0 else INT64_MAX) if begin_mask >> i & 1 else s0)
        ends.append((INT64_MAX if st > 0 else INT64_MIN) if end_mask >> i & 1 else e0)
        steps.append(st)
    axes = list(range(len(starts)))
    y = b.one("Slice", [b.x(0), b.i64(starts, "starts"), b.i64(ends, "ends"), b.i64(axes, "axes"),
                        b.i64(steps, "steps")])
    if shrunk:
        y = b.one("Squeeze", [y, b.i64(shrunk, "axes")])
    b.bind(0, y)


@builder("SLICE")
def _slice(b: Builder) -> None:
    shape = b.shape(0)
    begin, size = b.ints(1, "begin"), b.ints(2, "size")
    if len(begin) != len(size) or len(begin) > len(shape):
        raise b.error(f"begin {begin} and size {size} do not fit shape {list(shape)}")
    ends = [INT64_MAX if s == -1 else bg + s for bg, s in zip(begin, size)]
    b.bind(0, b.one("Slice", [b.x(0), b.i64(begin, "starts"), b.i64(ends, "ends"), b.i64(range(len(begin)), "axes")]))


@builder("GATHER")
def _gather(b: Builder) -> None:
    rank = b.rank(0)
    axis = b.axis(int(b.opt.get("axis", 0)), rank)
    if int(b.opt.get("batch_dims", 0)):
        raise b.error("GATHER with batch_dims is not supported")
    b.bind(0, b.one("Gather", [b.x(0), b.x(1)], {"axis": axis}))


@builder("GATHER_ND")
def _gather_nd(b: Builder) -> None:
    idx = b.one("Cast", [b.x(1)], {"to": "int64"})
    b.bind(0, b.one("GatherND", [b.x(0), idx]))


@builder("TILE")
def _tile(b: Builder) -> None:
    b.bind(0, b.one("Tile", [b.x(0), b.one("Cast", [b.x(1)], {"to": "int64"})]))


@builder("BROADCAST_TO")
def _broadcast_to(b: Builder) -> None:
    b.bind(0, b.one("Expand", [b.x(0), b.one("Cast", [b.x(1)], {"to": "int64"})]))


@builder("FILL")
def _fill(b: Builder) -> None:
    b.bind(0, b.one("Expand", [b.x(1), b.one("Cast", [b.x(0)], {"to": "int64"})]))


@builder("ZEROS_LIKE", "ONES_LIKE")
def _zeros_like(b: Builder) -> None:
    t = b.t(0)
    value = b.c(np.asarray(0 if b.op.op == "ZEROS_LIKE" else 1, dtype=_dt.to_numpy(t.dtype)), "fill")
    b.bind(0, b.one("Expand", [value, b.one("Shape", [b.x(0)])]))


@builder("SHAPE")
def _shape(b: Builder) -> None:
    y = b.one("Shape", [b.x(0)])
    out = b.out_t(0).dtype
    b.bind(0, y if out == "int64" else b.one("Cast", [y], {"to": out}))


@builder("RANGE")
def _range(b: Builder) -> None:
    b.bind(0, b.one("Range", [b.x(0), b.x(1), b.x(2)]))


@builder("CUMSUM")
def _cumsum(b: Builder) -> None:
    attrs = {"exclusive": int(bool(b.opt.get("exclusive"))), "reverse": int(bool(b.opt.get("reverse")))}
    b.bind(0, b.one("CumSum", [b.x(0), b.one("Cast", [b.x(1)], {"to": "int64"})], attrs))


@builder("REVERSE_V2")
def _reverse(b: Builder) -> None:
    rank = b.rank(0)
    axes = sorted({b.axis(a, rank) for a in b.ints(1, "axis")})
    n = len(axes)
    b.bind(0, b.one("Slice", [b.x(0), b.i64([-1] * n, "starts"), b.i64([INT64_MIN] * n, "ends"),
                              b.i64(axes, "axes"), b.i64([-1] * n, "steps")]))


@builder("ARG_MAX", "ARG_MIN")
def _arg(b: Builder) -> None:
    (axis,) = b.ints(1, "axis")[:1]
    axis = b.axis(axis, b.rank(0))
    y = b.one("ArgMax" if b.op.op == "ARG_MAX" else "ArgMin", [b.x(0)], {"axis": axis, "keepdims": 0})
    out = b.out_t(0).dtype
    b.bind(0, y if out == "int64" else b.one("Cast", [y], {"to": out}))


@builder("BATCH_MATMUL")
def _batch_matmul(b: Builder) -> None:
    def side(k: int, adj: bool) -> str:
        x = b.x(k)
        if not adj:
            return x
        r = b.rank(k)
        perm = list(range(r - 2)) + [r - 1, r - 2]
        return b.one("Transpose", [x], {"perm": perm})
    b.bind(0, b.one("MatMul", [side(0, bool(b.opt.get("adj_x"))), side(1, bool(b.opt.get("adj_y")))]))


# ---------------------------------------------------------------------- resize and space moves
def _resize(b: Builder, mode: str) -> None:
    shape = b.shape(0)
    if len(shape) != 4:
        raise b.error(f"expects a 4-D NHWC input, found rank {len(shape)}")
    size = b.ints(1, "size")
    if len(size) != 2 or any(s <= 0 for s in size):
        raise b.error(f"size {size} must be two positive values")
    align, half = bool(b.opt.get("align_corners")), bool(b.opt.get("half_pixel_centers"))
    if align and half:
        raise b.error("align_corners and half_pixel_centers are both set")
    if mode == "linear":
        coord = "align_corners" if align else "half_pixel" if half else "asymmetric"
        attrs = {"mode": "linear", "coordinate_transformation_mode": coord}
    else:
        coord = "align_corners" if align else "tf_half_pixel_for_nn" if half else "asymmetric"
        attrs = {"mode": "nearest", "coordinate_transformation_mode": coord,
                 "nearest_mode": "round_prefer_ceil" if align else "floor"}
    sizes = b.i64(size, "sizes")
    y = b.one("Resize", [b.x(0), "", "", sizes], {**attrs, "axes": [1, 2]})
    b.bind(0, y)


@builder("RESIZE_BILINEAR")
def _resize_bilinear(b: Builder) -> None:
    _resize(b, "linear")


@builder("RESIZE_NEAREST_NEIGHBOR")
def _resize_nearest(b: Builder) -> None:
    _resize(b, "nearest")


@builder("DEPTH_TO_SPACE", "SPACE_TO_DEPTH")
def _depth_space(b: Builder) -> None:
    block = b.positive("block_size", b.opt.get("block_size"))
    if b.rank(0) != 4:
        raise b.error(f"expects a 4-D NHWC input, found rank {b.rank(0)}")
    op = "DepthToSpace" if b.op.op == "DEPTH_TO_SPACE" else "SpaceToDepth"
    attrs = {"blocksize": block} | ({"mode": "DCR"} if op == "DepthToSpace" else {})
    b.bind(0, b.nhwc(b.one(op, [b.nchw(b.x(0))], attrs)))


from . import tflite_ops_extra  # noqa: E402,F401  (custom ops, IF, resource variables register here)
