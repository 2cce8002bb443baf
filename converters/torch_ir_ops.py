"""The per-op converters of :mod:`.torch_ir`: ONNX op -> torch code, one function per op.

Kept apart from :mod:`.torch_ir` (the public API, parameter handling and the graph walk)
because the op table is most of the code and grows one op at a time; this module owns the
registry ``_CONVERTERS`` and :mod:`.torch_ir` only reads it, so there is no import cycle.

* Every converter is a function ``(node, args, attrs) -> tensor or tuple of tensors``
  registered with ``@_converter(op, ...)``, ONNX semantics at the latest opset. ``args`` are the
  node's input tensors (``None`` for a missing optional input), ``attrs`` its attributes.
* Shape arguments arrive as int64 tensors (the shape subgraph runs eagerly) and are read as
  Python ints with :func:`_ints`.
* Pure renames stay data (``_UNARY``, ``_BINARY``, ``_REDUCE``); converters translate only,
  fusions belong in ``passes``.

torch is the optional ``train`` extra: :func:`_load_torch` sets the module globals ``torch``
and ``F`` on first use, so importing this module works without it and converters run only
after :func:`.torch_ir.to_torch` has loaded torch.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from edgeinfer.errors import UnsupportedOpError, require
from edgeinfer.graph import Node

# Set by _load_torch(); converters use them only after to_torch() has loaded torch.
torch: Any = None
F: Any = None


def _load_torch():
    global torch, F
    if torch is None:
        torch = require("torch", "train", "Training an IR graph with torch (converters.torch_ir)")
        import torch.nn.functional as functional

        F = functional
    return torch


# ============================================================================ converters
Converter = Callable[[Node, list, dict], Any]
_CONVERTERS: dict[str, Converter] = {}


def _converter(*ops: str):
    def register(fn: Converter) -> Converter:
        for op in ops:
            _CONVERTERS[op] = fn
        return fn
    return register


def _ints(t) -> list[int]:
    """A shape-like input (int tensor, possibly 0-d) as Python ints."""
    return [int(v) for v in t.reshape(-1).tolist()]


def _arg(args: list, i: int):
    """Optional input ``i`` (None when missing or named "")."""
    return args[i] if i < len(args) else None


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _torch_pads(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX per-axis (begin, end) pads -> F.pad order (last axis first)."""
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        out += [int(b), int(e)]
    return out


def _window_pads(attrs: dict, spatial: list[int], k_eff: list[int], strides: list[int]) -> tuple[list, list]:
    """Begin/end pads of a conv or pool window, auto_pad resolved (the odd unit of SAME
    padding goes to the end for SAME_UPPER, to the start for SAME_LOWER)."""
    n = len(spatial)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(n):
            out = -(-spatial[i] // strides[i])
            total = max((out - 1) * strides[i] + k_eff[i] - spatial[i], 0)
            b = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begins.append(b)
            ends.append(total - b)
        return begins, ends
    if auto == "VALID":
        return [0] * n, [0] * n
    pads = list(attrs.get("pads") or [0] * (2 * n))
    return pads[:n], pads[n:]


def _window(attrs: dict, x, kernel: list[int]):
    n = len(kernel)
    strides = list(attrs.get("strides") or [1] * n)
    dil = list(attrs.get("dilations") or [1] * n)
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    begins, ends = _window_pads(attrs, list(x.shape[2:]), k_eff, strides)
    return strides, dil, begins, ends


# ---------------------------------------------------------------------- convolution
@_converter("Conv")
def _conv(node, args, attrs):
    x, w, b = args[0], args[1], _arg(args, 2)
    n = w.dim() - 2
    strides, dil, begins, ends = _window(attrs, x, list(w.shape[2:]))
    fn = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    group = int(attrs.get("group", 1))
    if begins != ends:  # torch pads symmetrically only
        x, begins = F.pad(x, _torch_pads(begins, ends)), [0] * n
    return fn(x, w, b, strides, begins, dil, group)


@_converter("ConvTranspose")
def _conv_transpose(node, args, attrs):
    x, w, b = args[0], args[1], _arg(args, 2)
    n = w.dim() - 2
    kernel = list(w.shape[2:])
    strides = list(attrs.get("strides") or [1] * n)
    dil = list(attrs.get("dilations") or [1] * n)
    out_pad = list(attrs.get("output_padding") or [0] * n)
    group = int(attrs.get("group", 1))
    spatial = list(x.shape[2:])
    full = [s * (i - 1) + op + (k - 1) * d + 1 for s, i, op, k, d in zip(strides, spatial, out_pad, kernel, dil)]
    auto = attrs.get("auto_pad", "NOTSET")
    shape_attr = attrs.get("output_shape")
    if shape_attr is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        outs = list(shape_attr)[-n:] if shape_attr is not None else [i * s for i, s in zip(spatial, strides)]
        begins, ends = [], []
        for f, o in zip(full, outs):
            total = f - o
            bgn = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begins.append(bgn)
            ends.append(total - bgn)
    elif auto == "VALID":
        begins, ends = [0] * n, [0] * n
    else:
        pads = list(attrs.get("pads") or [0] * (2 * n))
        begins, ends = pads[:n], pads[n:]
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    # full transposed conv, then crop the pads and grow by output_padding (negative F.pad
    # crops): exact for asymmetric pads, which torch's `padding=` cannot express
    y = fn(x, w, None, strides, 0, 0, group, dil)
    y = F.pad(y, _torch_pads([-p for p in begins], [op - p for op, p in zip(out_pad, ends)]))
    if b is not None:
        y = y + b.reshape([1, -1] + [1] * n)
    return y


@_converter("BatchNormalization")
def _batch_norm(node, args, attrs):
    x, scale, bias, mean, var = args[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(attrs.get("epsilon", 1e-5)))


@_converter("LayerNormalization")
def _layer_norm(node, args, attrs):
    x, scale, bias = args[0], args[1], _arg(args, 2)
    axis = _axis(int(attrs.get("axis", -1)), x.dim())
    eps = float(attrs.get("epsilon", 1e-5))
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    inv = torch.rsqrt(var + eps)
    y = (x - mean) * inv * scale
    if bias is not None:
        y = y + bias
    return y, mean, inv


@_converter("Gemm")
def _gemm(node, args, attrs):
    a, b, c = args[0], args[1], _arg(args, 2)
    if attrs.get("transA", 0):
        a = a.transpose(0, 1)
    if attrs.get("transB", 0):
        b = b.transpose(0, 1)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    y = a @ b
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


@_converter("MatMul")
def _matmul(node, args, attrs):
    return torch.matmul(args[0], args[1])


@_converter("Einsum")
def _einsum(node, args, attrs):
    return torch.einsum(attrs["equation"].replace(" ", ""), *args)


# ----------------------------------------------------------------------- pooling
def _pool_kernel(attrs) -> list[int]:
    return list(attrs["kernel_shape"])


def _crop_to_onnx_ceil(y, spatial, begins, ends, k_eff, strides):
    """After pooling an explicitly padded input with ceil_mode, drop a last window that starts
    in the end padding: ONNX (like torch with its own padding) does not keep one, but torch
    cannot tell our pre-applied padding from input."""
    for i, (size, b, e, k, s) in enumerate(zip(spatial, begins, ends, k_eff, strides)):
        out = -(-(size + b + e - k) // s) + 1
        if (out - 1) * s >= size + b:
            out -= 1
        if y.shape[2 + i] > out:
            y = y.narrow(2 + i, 0, out)
    return y


@_converter("MaxPool")
def _max_pool(node, args, attrs):
    if len(node.outputs) > 1 and node.outputs[1]:
        raise UnsupportedOpError(f"to_torch: {node.label}: MaxPool's Indices output is not supported",
                                 ["MaxPool"])
    x = args[0]
    kernel = _pool_kernel(attrs)
    n = len(kernel)
    strides, dil, begins, ends = _window(attrs, x, kernel)
    ceil = bool(attrs.get("ceil_mode", 0))
    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
    if begins == ends and all(p <= k // 2 for p, k in zip(begins, kernel)):
        return fn(x, kernel, strides, begins, dil, ceil)
    y = fn(F.pad(x, _torch_pads(begins, ends), value=-math.inf), kernel, strides, 0, dil, ceil)
    if not ceil:
        return y
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    return _crop_to_onnx_ceil(y, list(x.shape[2:]), begins, ends, k_eff, strides)


@_converter("AveragePool")
def _average_pool(node, args, attrs):
    x = args[0]
    kernel = _pool_kernel(attrs)
    n = len(kernel)
    strides, dil, begins, ends = _window(attrs, x, kernel)
    if any(d != 1 for d in dil):
        raise UnsupportedOpError(f"to_torch: {node.label}: AveragePool with dilations {dil}", ["AveragePool"])
    ceil = bool(attrs.get("ceil_mode", 0))
    include = bool(attrs.get("count_include_pad", 0))
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
    if begins == ends and all(p <= k // 2 for p, k in zip(begins, kernel)):
        return fn(x, kernel, strides, begins, ceil, include)
    # asymmetric or large pads: window sum over the padded input / count of the cells that
    # count (input, plus the pads when count_include_pad); exact for both settings
    pads = _torch_pads(begins, ends)
    ones = torch.ones([1, 1] + list(x.shape[2:]), dtype=x.dtype, device=x.device)
    count = fn(F.pad(ones, pads, value=1.0 if include else 0.0), kernel, strides, 0, ceil)
    y = fn(F.pad(x, pads), kernel, strides, 0, ceil) / count
    return _crop_to_onnx_ceil(y, list(x.shape[2:]), begins, ends, kernel, strides) if ceil else y


@_converter("GlobalAveragePool")
def _global_avg(node, args, attrs):
    x = args[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@_converter("GlobalMaxPool")
def _global_max(node, args, attrs):
    x = args[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


# -------------------------------------------------------------------- activations
_UNARY: dict[str, Callable] = {
    "Relu": lambda x: torch.relu(x),
    "Sigmoid": lambda x: torch.sigmoid(x),
    "Tanh": lambda x: torch.tanh(x),
    "HardSwish": lambda x: F.hardswish(x),
    "Erf": lambda x: torch.erf(x),
    "Sqrt": lambda x: torch.sqrt(x),
    "Exp": lambda x: torch.exp(x),
    "Log": lambda x: torch.log(x),
    "Neg": lambda x: torch.neg(x),
    "Abs": lambda x: torch.abs(x),
    "Reciprocal": lambda x: torch.reciprocal(x),
    "Floor": lambda x: torch.floor(x),
    "Ceil": lambda x: torch.ceil(x),
    "Round": lambda x: torch.round(x),  # half to even, as ONNX
    "Sign": lambda x: torch.sign(x),
    "Sin": lambda x: torch.sin(x),
    "Cos": lambda x: torch.cos(x),
    "Not": lambda x: torch.logical_not(x),
    "Softplus": lambda x: F.softplus(x),
    "Softsign": lambda x: F.softsign(x),
    "Mish": lambda x: F.mish(x),
    "IsNaN": lambda x: torch.isnan(x),
}


@_converter(*_UNARY)
def _unary(node, args, attrs):
    return _UNARY[node.op_type](args[0])


@_converter("Identity", "Dropout")
def _identity(node, args, attrs):
    x = args[0]
    if len(node.outputs) > 1:  # Dropout's mask: inference keeps everything
        return x, torch.ones(x.shape, dtype=torch.bool, device=x.device)
    return x


@_converter("LeakyRelu")
def _leaky_relu(node, args, attrs):
    return F.leaky_relu(args[0], float(attrs.get("alpha", 0.01)))


@_converter("PRelu")
def _prelu(node, args, attrs):
    x, slope = args  # ONNX broadcasts the slope (any shape), F.prelu wants one per channel
    return torch.where(x < 0, x * slope, x)


@_converter("HardSigmoid")
def _hard_sigmoid(node, args, attrs):
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return torch.clamp(args[0] * alpha + beta, 0.0, 1.0)


@_converter("Elu")
def _elu(node, args, attrs):
    return F.elu(args[0], float(attrs.get("alpha", 1.0)))


@_converter("Selu")
def _selu(node, args, attrs):
    alpha = float(attrs.get("alpha", 1.67326319217681884765625))
    gamma = float(attrs.get("gamma", 1.05070102214813232421875))
    x = args[0]
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@_converter("Gelu")
def _gelu(node, args, attrs):
    return F.gelu(args[0], approximate=attrs.get("approximate", "none"))


@_converter("Clip")
def _clip(node, args, attrs):
    x, lo, hi = args[0], _arg(args, 1), _arg(args, 2)
    if lo is None and hi is None:
        return x
    return torch.clamp(x, lo, hi)


@_converter("Softmax", "LogSoftmax")
def _softmax(node, args, attrs):
    fn = F.softmax if node.op_type == "Softmax" else F.log_softmax
    return fn(args[0], dim=int(attrs.get("axis", -1)))


# ----------------------------------------------------------------- elementwise math
def _div(a, b):
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # ONNX integer Div truncates toward zero


def _pow(a, b):
    return torch.pow(a, b).to(a.dtype)  # ONNX: the result has the base's type


_BINARY: dict[str, Callable] = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": _div,
    "Pow": _pow,
    "Equal": lambda a, b: torch.eq(a, b),
    "Less": lambda a, b: torch.lt(a, b),
    "LessOrEqual": lambda a, b: torch.le(a, b),
    "Greater": lambda a, b: torch.gt(a, b),
    "GreaterOrEqual": lambda a, b: torch.ge(a, b),
    "And": lambda a, b: torch.logical_and(a, b),
    "Or": lambda a, b: torch.logical_or(a, b),
    "Xor": lambda a, b: torch.logical_xor(a, b),
}


@_converter(*_BINARY)
def _binary(node, args, attrs):
    return _BINARY[node.op_type](args[0], args[1])


@_converter("Mod")
def _mod(node, args, attrs):
    a, b = args
    return torch.fmod(a, b) if attrs.get("fmod", 0) else torch.remainder(a, b)


@_converter("Max", "Min", "Sum", "Mean")
def _variadic(node, args, attrs):
    fn = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add, "Mean": torch.add}[node.op_type]
    y = args[0]
    for t in args[1:]:
        y = fn(y, t)
    return y / len(args) if node.op_type == "Mean" else y


@_converter("Where")
def _where(node, args, attrs):
    return torch.where(args[0], args[1], args[2])


def _torch_dtype(name: str, node: Node):
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise UnsupportedOpError(f"to_torch: {node.label} casts to {name!r}, which torch has no dtype for",
                                 [node.op_type])
    return dt


@_converter("Cast")
def _cast(node, args, attrs):
    return args[0].to(_torch_dtype(attrs["to"], node))


@_converter("CastLike")
def _cast_like(node, args, attrs):
    return args[0].to(args[1].dtype)


# ------------------------------------------------------------------------ reductions
_REDUCE: dict[str, Callable] = {
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(dim=d, keepdim=k),
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt((x * x).sum(dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


@_converter(*_REDUCE, "ReduceProd")
def _reduce(node, args, attrs):
    x = args[0]
    axes_t = _arg(args, 1)
    axes = _ints(axes_t) if axes_t is not None else list(attrs.get("axes") or [])
    keep = bool(attrs.get("keepdims", 1))
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    dims = tuple(sorted(_axis(a, x.dim()) for a in axes))
    if node.op_type == "ReduceProd":  # torch.prod takes one dim at a time
        for d in reversed(dims):
            x = x.prod(dim=d, keepdim=keep)
        return x
    return _REDUCE[node.op_type](x, dims, keep)


@_converter("ArgMax", "ArgMin")
def _arg_reduce(node, args, attrs):
    x = args[0]
    axis, keep = int(attrs.get("axis", 0)), bool(attrs.get("keepdims", 1))
    if attrs.get("select_last_index", 0):
        x = x.flip(axis)
        i = (torch.argmax if node.op_type == "ArgMax" else torch.argmin)(x, dim=axis, keepdim=keep)
        return x.shape[axis] - 1 - i
    return (torch.argmax if node.op_type == "ArgMax" else torch.argmin)(x, dim=axis, keepdim=keep)


# ------------------------------------------------------------------- tensor layout
@_converter("Flatten")
def _flatten(node, args, attrs):
    x = args[0]
    axis = _axis(int(attrs.get("axis", 1)), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@_converter("Reshape")
def _reshape(node, args, attrs):
    x, shape = args[0], _ints(args[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x.reshape(shape)


@_converter("Transpose")
def _transpose(node, args, attrs):
    x = args[0]
    perm = attrs.get("perm")
    return x.permute(list(perm) if perm is not None else list(range(x.dim() - 1, -1, -1)))


@_converter("Squeeze")
def _squeeze(node, args, attrs):
    x, axes_t = args[0], _arg(args, 1)
    axes = _ints(axes_t) if axes_t is not None else attrs.get("axes")
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in axes)) if axes else x


@_converter("Unsqueeze")
def _unsqueeze(node, args, attrs):
    x, axes_t = args[0], _arg(args, 1)
    axes = _ints(axes_t) if axes_t is not None else list(attrs["axes"])
    rank = x.dim() + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


@_converter("Concat")
def _concat(node, args, attrs):
    return torch.cat([a for a in args if a is not None], dim=int(attrs["axis"]))


@_converter("Split")
def _split(node, args, attrs):
    x, split_t = args[0], _arg(args, 1)
    axis = _axis(int(attrs.get("axis", 0)), x.dim())
    if split_t is not None:
        sizes = _ints(split_t)
    elif attrs.get("split") is not None:
        sizes = list(attrs["split"])
    else:  # num_outputs (or one output per node output): the last part may be smaller
        parts = int(attrs.get("num_outputs", len(node.outputs)))
        sizes = -(-x.shape[axis] // parts)
    return tuple(torch.split(x, sizes, dim=axis))


@_converter("Slice")
def _slice(node, args, attrs):
    x = args[0]
    starts, ends = _ints(args[1]), _ints(args[2])
    axes = _ints(args[3]) if _arg(args, 3) is not None else list(range(len(starts)))
    steps = _ints(args[4]) if _arg(args, 4) is not None else [1] * len(starts)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = _axis(ax, x.dim())
        d = x.shape[ax]
        st, en = (st + d if st < 0 else st), (en + d if en < 0 else en)
        if sp > 0:  # ONNX clamps to [0, d] for positive steps, [-1, d-1] for negative
            st, en = min(max(st, 0), d), min(max(en, 0), d)
            index = [slice(None)] * x.dim()
            index[ax] = slice(st, max(en, st), sp)
            x = x[tuple(index)]
        else:  # torch has no negative-step slicing: gather the indices
            st, en = min(max(st, 0), d - 1), min(max(en, -1), d - 1)
            x = torch.index_select(x, ax, torch.arange(st, en, sp, device=x.device))
    return x


def _positive_indices(idx, dim: int):
    return torch.where(idx < 0, idx + dim, idx).long()


@_converter("Gather")
def _gather(node, args, attrs):
    x, idx = args
    axis = _axis(int(attrs.get("axis", 0)), x.dim())
    flat = _positive_indices(idx, x.shape[axis]).reshape(-1)
    y = torch.index_select(x, axis, flat)
    return y.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


@_converter("GatherElements")
def _gather_elements(node, args, attrs):
    x, idx = args
    axis = _axis(int(attrs.get("axis", 0)), x.dim())
    return torch.gather(x, axis, _positive_indices(idx, x.shape[axis]))


@_converter("Pad")
def _pad(node, args, attrs):
    x, pads_t, value, axes_t = args[0], args[1], _arg(args, 2), _arg(args, 3)
    pads = _ints(pads_t)
    rank = x.dim()
    axes = [_axis(a, rank) for a in _ints(axes_t)] if axes_t is not None else list(range(rank))
    begins, ends = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begins[a], ends[a] = pads[i], pads[i + len(axes)]
    # F.pad lists the last axis first; drop leading axes without padding (reflect/replicate
    # only pad the trailing 1-3 axes)
    first = next((i for i in range(rank) if begins[i] or ends[i]), rank)
    tp = _torch_pads(begins[first:], ends[first:])
    mode = attrs.get("mode", "constant")
    if mode == "constant":
        return F.pad(x, tp, value=float(value.reshape(-1)[0]) if value is not None and value.numel() else 0.0)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise UnsupportedOpError(f"to_torch: {node.label}: Pad mode {mode!r}", ["Pad"])
    return F.pad(x, tp, mode=torch_mode)


@_converter("Shape")
def _shape(node, args, attrs):
    dims = list(args[0].shape)
    start, end = attrs.get("start", 0), attrs.get("end")
    return torch.tensor(dims[start:end], dtype=torch.int64)


@_converter("Size")
def _size(node, args, attrs):
    return torch.tensor(args[0].numel(), dtype=torch.int64)


@_converter("ConstantOfShape")
def _constant_of_shape(node, args, attrs):
    value = attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    return torch.full(_ints(args[0]), value.reshape(-1)[0].item(), dtype=getattr(torch, value.dtype.name))


@_converter("Constant")
def _constant(node, args, attrs):
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return torch.from_numpy(np.array(attrs[key], dtype=dtype))
    if "value" in attrs:
        return torch.from_numpy(np.array(attrs["value"]))
    raise UnsupportedOpError(f"to_torch: {node.label}: Constant with attributes {sorted(attrs)}", ["Constant"])


@_converter("Expand")
def _expand(node, args, attrs):
    x = args[0]
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_ints(args[1]))))


@_converter("Tile")
def _tile(node, args, attrs):
    return args[0].repeat(_ints(args[1]))


@_converter("Range")
def _range(node, args, attrs):
    start, limit, delta = args
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


# -------------------------------------------------------------------------- Resize
def _source_coords(out: int, size: int, scale: float, mode: str, node: Node):
    """ONNX coordinate_transformation_mode: output index -> input coordinate (float64)."""
    i = torch.arange(out, dtype=torch.float64)
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out > 1 else torch.zeros_like(i)
    if mode == "align_corners":
        return i * (size - 1) / (out - 1) if out > 1 else torch.zeros_like(i)
    if mode == "asymmetric":
        return i / scale
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        return size / 2 * (1 - adjustment) + (i + 0.5) / scale - 0.5
    raise UnsupportedOpError(f"to_torch: {node.label}: coordinate_transformation_mode {mode!r}", ["Resize"])


_NEAREST = {
    "round_prefer_floor": lambda c: torch.ceil(c - 0.5),
    "round_prefer_ceil": lambda c: torch.floor(c + 0.5),
    "floor": lambda c: torch.floor(c),
    "ceil": lambda c: torch.ceil(c),
}


@_converter("Resize")
def _resize(node, args, attrs):
    x, scales_t, sizes_t = args[0], _arg(args, 2), _arg(args, 3)
    mode = attrs.get("mode", "nearest")
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    if attrs.get("antialias", 0) or mode not in ("nearest", "linear"):
        raise UnsupportedOpError(f"to_torch: {node.label}: Resize mode {mode!r}"
                                 f"{' with antialias' if attrs.get('antialias', 0) else ''}", ["Resize"])
    rank = x.dim()
    axes = [_axis(a, rank) for a in attrs.get("axes") or range(rank)]
    in_sizes = [x.shape[a] for a in axes]
    if sizes_t is not None and sizes_t.numel():
        outs = _ints(sizes_t)
        scales = [o / i for o, i in zip(outs, in_sizes)]
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            s = (min if policy == "not_larger" else max)(scales)
            scales = [s] * len(axes)
            outs = [int(math.floor(i * s + 0.5)) for i in in_sizes]
    else:
        scales = [float(v) for v in scales_t.reshape(-1).tolist()]
        outs = [int(math.floor(i * s)) for i, s in zip(in_sizes, scales)]
    for ax, size, out, scale in zip(axes, in_sizes, outs, scales):
        if out == size and scale == 1.0:
            continue
        coords = _source_coords(out, size, scale, ctm, node)
        if mode == "nearest":
            rule = _NEAREST[attrs.get("nearest_mode", "round_prefer_floor")]
            idx = rule(coords).clamp(0, size - 1).long().to(x.device)
            x = torch.index_select(x, ax, idx)
            continue
        coords = coords.clamp(0, size - 1)  # outside the input: the edge value, as ONNX
        lo = coords.floor().long()
        hi = (lo + 1).clamp(max=size - 1)
        shape = [1] * x.dim()
        shape[ax] = out
        w = (coords - lo).to(x.dtype).reshape(shape).to(x.device)
        a, b = torch.index_select(x, ax, lo.to(x.device)), torch.index_select(x, ax, hi.to(x.device))
        x = a + (b - a) * w
    return x
