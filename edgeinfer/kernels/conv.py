"""Convolutions: Conv and ConvTranspose over 1, 2 or 3 spatial axes.

A convolution kernel is planned per concrete input shape (once at compile time for static
shapes, lazily and cached for unknown ones). A plan picks one of five methods:

* ``pointwise``: a 1x1 kernel without padding is one GEMM (batched over groups) over the
  (strided) input, no im2col;
* ``depthwise_nhwc``: ``group == C_in == C_out`` on small 2-D images (on any, when the graph
  hands it channels-last tensors; :func:`build_conv_channels_last`): channels-last, one
  ``einsum`` per stride phase over rows of ``W * C`` values;
* ``depthwise_phased``: other ``group == C_in`` cases accumulate the taps with whole-array
  multiply-adds on contiguous rows of the stride-phase layout;
* ``tap_gemm``: stride 1 with many channels and pixels: one GEMM per tap on contiguous rows of
  the padded input, accumulated (no im2col copy); ``tap_stacked`` when the output channels are
  few: one GEMM of all taps' weights per image block, summed at the taps' offsets;
* ``im2col``: a strided view of the padded input, copied once to columns, and one (batched
  over groups) GEMM written straight into the output buffer.

ConvTranspose is the adjoint: one GEMM to columns, then col2im adds the taps into the
output (a loop over kernel taps, never over pixels); when the taps tile the output (stride ==
kernel, no padding) each tap's columns are copied to their place instead.

This module holds the attributes, the shape rules, the choice of method (:func:`_choose_method`)
and the kernels. Each method's layouts, weight preparation and runner live in
:mod:`.conv_methods`, the sliding-window geometry (:class:`Window`, which :mod:`.pool` shares)
in :mod:`.window`, and the per-thread workspace temporaries are carved from in
:mod:`.workspace` (:func:`scratch`, :func:`scratch_views`: at ~1-5 us each, views and small
numpy calls are a large part of a small conv's time). The names other modules import from
here (``Window``, ``int_list``, ``pad_spatial``, ``scratch``...) are re-exported.
"""
from __future__ import annotations

import functools
import itertools
from typing import Callable

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .conv_methods import (METHODS, ConvPlan, channels_last, phase_columns, phase_grid, pointwise_channels_last,
                           pointwise_shapes, prepare_weight, run_depthwise_nhwc)
from .winograd import plan_winograd, winograd_ok
from .registry import OpContext, kernel, shape_rule, writes_out
from .window import AUTO_PADS, Window, int_list, pad_spatial, padded_shape  # noqa: F401  (re-exported)
from .workspace import scratch, scratch_views  # noqa: F401  (re-exported)

CONV_ATTRS = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None, "strides": None}
CONV_TRANSPOSE_ATTRS = {**CONV_ATTRS, "output_padding": None, "output_shape": None}
CONV_DTYPES = frozenset({"float16", "float32", "float64"})


def _runtime_error(node_label: str) -> Callable[[str], Exception]:
    return lambda msg: KernelError(f"{node_label}: {msg}")


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    # numpy has no BLAS for float16: compute in float32 and round once at the end.
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


# ------------------------------------------------------------------------------- shapes
def _spatial_rank(ctx: OpContext) -> int | None:
    for t in ctx.inputs[:2]:
        if t is not None and t.shape is not None:
            return len(t.shape) - 2
    return None


def conv_window(ctx: OpContext, attrs: dict, n: int, w_shape) -> tuple[Window, bool]:
    """Validated Window of a Conv/ConvTranspose node with ``n`` spatial axes, and whether the
    kernel size is known (from ``kernel_shape`` or a static weight shape)."""
    if n < 1:
        raise ctx.error(f"input must have rank >= 3 (N, C, spatial...), found rank {n + 2}")
    if w_shape is not None and len(w_shape) != n + 2:
        raise ctx.error(f"weight has rank {len(w_shape)} but the input has rank {n + 2}; they must match")
    ks = attrs.get("kernel_shape")
    if ks is not None:
        kernel = int_list(ctx, "kernel_shape", ks, n, 1, 1)
        if w_shape is not None:
            for a, b in zip(kernel, w_shape[2:]):
                if isinstance(b, int) and a != b:
                    raise ctx.error(f"kernel_shape {list(kernel)} does not match weight shape {list(w_shape)}")
    elif w_shape is not None and all(isinstance(d, int) for d in w_shape[2:]):
        kernel = tuple(w_shape[2:])
    else:
        kernel = None
    if attrs.get("group", 1) < 1:
        raise ctx.error(f"group must be >= 1, found {attrs.get('group')}")
    return Window.from_attrs(ctx, kernel or (1,) * n, attrs.get("strides"), attrs.get("dilations"),
                             attrs.get("pads"), attrs.get("auto_pad", "NOTSET")), kernel is not None


def _check_channels(ctx: OpContext, x_shape, w_shape, group: int, transpose: bool) -> None:
    if x_shape is None or w_shape is None:
        return
    c, m = x_shape[1], w_shape[0]
    if transpose:
        if isinstance(c, int) and isinstance(m, int) and c != m:
            raise ctx.error(f"input has {c} channels but the weight expects {m} (W.shape[0])")
        if isinstance(m, int) and m % group:
            raise ctx.error(f"weight dim 0 ({m}) is not divisible by group {group}")
        return
    cg = w_shape[1]
    if isinstance(c, int) and isinstance(cg, int) and c != cg * group:
        raise ctx.error(f"input has {c} channels but weight {list(w_shape)} with group {group} expects {cg * group}")
    if isinstance(m, int) and m % group:
        raise ctx.error(f"{m} output channels are not divisible by group {group}")


def _check_float(ctx: OpContext, x: TensorType) -> None:
    if x.dtype not in CONV_DTYPES:
        raise ctx.error(f"input X has dtype {x.dtype}; convolutions take {', '.join(sorted(CONV_DTYPES))}")


def conv_output_type(ctx: OpContext, attrs: dict) -> TensorType:
    x, w = ctx.inputs[0], ctx.inputs[1]
    if x is None or w is None:
        raise ctx.error("Conv needs inputs X and W")
    _check_float(ctx, x)
    n = _spatial_rank(ctx)
    if n is None:
        return TensorType(x.dtype, None)
    xs, ws = x.shape, w.shape
    win, known = conv_window(ctx, attrs, n, ws)
    if xs is not None and len(xs) != n + 2:
        raise ctx.error(f"input has rank {len(xs)} but the weight has rank {n + 2}; they must match")
    _check_channels(ctx, xs, ws, attrs["group"], transpose=False)
    if xs is None:
        return TensorType(x.dtype, None)
    m = ws[0] if ws is not None else None
    spatial = tuple(win.out_dim(i, d) if known else None for i, d in enumerate(xs[2:]))
    if known and any(isinstance(o, int) and o < 1 for o in spatial):
        raise ctx.error(f"input spatial shape {list(xs[2:])} is too small for kernel {list(win.kernel)}: "
                        f"output {list(spatial)}")
    return TensorType(x.dtype, (xs[0], m) + spatial)


def _transpose_geometry(ctx, attrs, win: Window, spatial: tuple, fail):
    """(outputs, pad begins, pad ends) of a ConvTranspose for input spatial sizes (ints or symbols)."""
    n = win.n
    op = int_list(ctx, "output_padding", attrs.get("output_padding"), n, 0, 0)
    for i in range(n):
        if op[i] >= max(win.strides[i], win.dilations[i]):
            raise ctx.error(f"output_padding {list(op)} must be smaller than strides or dilations")
    shape_attr = attrs.get("output_shape")
    if shape_attr is not None:
        shape_attr = [int(v) for v in shape_attr]
        if len(shape_attr) == n + 2:  # some exporters write the full N, C, spatial shape
            shape_attr = shape_attr[2:]
        if len(shape_attr) != n:
            raise ctx.error(f"attribute 'output_shape' has {len(shape_attr)} values, expected {n}")
    outs, begins, ends = [], [], []
    for i, d in enumerate(spatial):
        full = None if not isinstance(d, int) else win.strides[i] * (d - 1) + op[i] + win.extent(i)
        if shape_attr is not None or win.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if shape_attr is not None:
                o = shape_attr[i]
            else:
                o = d * win.strides[i] if isinstance(d, int) else None
            if full is None or o is None:
                outs.append(o), begins.append(0), ends.append(0)
                continue
            total = full - o
            # ONNX: the odd unit of padding goes to the end for SAME_UPPER, to the start otherwise
            b = total // 2 if win.auto_pad == "SAME_UPPER" else total - total // 2
            outs.append(o), begins.append(b), ends.append(total - b)
        else:
            b, e = (0, 0) if win.auto_pad == "VALID" else (win.pads[i], win.pads[n + i])
            outs.append(None if full is None else full - b - e)
            begins.append(b), ends.append(e)
    if any(isinstance(o, int) and o < 1 for o in outs):
        raise fail(f"ConvTranspose output spatial shape {outs} is empty (input {list(spatial)})")
    return tuple(outs), tuple(begins), tuple(ends), op


@shape_rule("Conv")
def conv_shape(ctx: OpContext, **attrs):
    return [conv_output_type(ctx, attrs)]


@shape_rule("ConvTranspose")
def conv_transpose_shape(ctx: OpContext, **attrs):
    x, w = ctx.inputs[0], ctx.inputs[1]
    if x is None or w is None:
        raise ctx.error("ConvTranspose needs inputs X and W")
    _check_float(ctx, x)
    n = _spatial_rank(ctx)
    if n is None or x.shape is None:
        return [TensorType(x.dtype, None)]
    win, known = conv_window(ctx, attrs, n, w.shape)
    if len(x.shape) != n + 2:
        raise ctx.error(f"input has rank {len(x.shape)} but the weight has rank {n + 2}; they must match")
    _check_channels(ctx, x.shape, w.shape, attrs["group"], transpose=True)
    m = w.shape[1] * attrs["group"] if w.shape is not None and isinstance(w.shape[1], int) else None
    if not known:
        return [TensorType(x.dtype, (x.shape[0], m) + (None,) * n)]
    outs, _, _, _ = _transpose_geometry(ctx, attrs, win, tuple(x.shape[2:]), ctx.error)
    return [TensorType(x.dtype, (x.shape[0], m) + outs)]


# ------------------------------------------------------------------------------ kernels
# Per-tap GEMMs beat one im2col GEMM when the contraction (input channels) is long enough for
# BLAS, at least the output channels (the per-tap sums then move less than the columns would),
# and the image is large (measured on 3x3 convs, 16..512 channels, 7..160 pixels); with at
# least twice as many input as output channels they win at any size, the im2col columns then
# outweighing the per-tap sums (measured, one thread: 128->32 at 14x14 30% and at 7x7 23%
# faster, 192->64 at 28x28 5%, 256->96 at 40x40 10%; 128->128 at 28x28 5% slower).
_TAP_GEMM_MIN_CHANNELS = 32
_TAP_GEMM_MIN_PIXELS = 2048
_TAP_GEMM_NARROWING = 2
_PHASE_COLUMNS_MAX_STRIDE = 4
_PHASE_COLUMNS_MIN_PIXELS = 16384
# With fewer output channels than this, large images stack the taps into one GEMM per block
# of conv_methods._STACKED_BLOCK padded pixels (measured: 96->24 channels at 160x160, 30% faster).
_STACKED_MAX_CHANNELS = 32
_STACKED_MIN_PIXELS = 8192
# The channels-last depthwise method pays two transposes, which numpy does slowly once the
# image outgrows the cache (large images with few channels); beyond this many input pixels
# the NCHW phased method wins (measured: 56x56 even, 160x160 3x slower).
_NHWC_MAX_PIXELS = 4096
# Winograd F(2x2, 3x3) (:mod:`.winograd`) does 2.25x fewer multiply-adds but its transforms
# are memory passes and its GEMMs are 16 short ones (K = C): it wins with at least this many
# input and output channels on maps of at least this many rows and columns (measured, one
# thread, against the method chosen otherwise: 256->256 at 14x14 0.72, 512->512 at 28x28
# 0.77, 128->256 at 56x56 0.82, 128->128 at 28x28 0.95 and at 20x20 0.85, 192->192 at 13x13
# 0.93; 64->64 at 40..80 1.03-1.18, 64->192 at 56x56 0.96, 96->96 at 26..52 1.09-1.17,
# 512->512 at 7x7 1.23, 128->32 at 56x56 1.34 against tap_gemm).
_WINOGRAD_MIN_CHANNELS = 128
_WINOGRAD_MIN_SIDE = 12


def depthwise_channels_last_ok(x_shape, w_shape, win: Window, group: int) -> bool:
    """Whether the channels-last depthwise method can run this conv (any image size)."""
    return (group > 1 and group == x_shape[1] == w_shape[0] and win.n == 2
            and (all(s == 1 for s in win.strides) or all(d == 1 for d in win.dilations)))


def _winograd_wins(c: int, m: int, outs) -> bool:
    return min(c, m) >= _WINOGRAD_MIN_CHANNELS and min(outs) >= _WINOGRAD_MIN_SIDE


def _choose_method(x_shape, w_shape, win: Window, group: int, outs, begins, ends) -> str:
    stride1 = all(s == 1 for s in win.strides)
    if all(k == 1 for k in win.kernel) and not any(begins) and not any(ends):
        return "pointwise"
    if group > 1 and group == x_shape[1]:
        if depthwise_channels_last_ok(x_shape, w_shape, win, group) and int(np.prod(x_shape[2:])) <= _NHWC_MAX_PIXELS:
            return "depthwise_nhwc"
        return "depthwise_phased"
    c, m = x_shape[1], w_shape[0]
    if winograd_ok(x_shape, w_shape, win, group) and _winograd_wins(c, m, outs):
        return "winograd"
    if stride1 and group == 1 and c >= max(_TAP_GEMM_MIN_CHANNELS, m) and (
            c >= _TAP_GEMM_NARROWING * m or int(np.prod(outs)) >= _TAP_GEMM_MIN_PIXELS):
        if w_shape[0] < _STACKED_MAX_CHANNELS and int(np.prod(outs)) >= _STACKED_MIN_PIXELS:
            return "tap_stacked"
        return "tap_gemm"
    return "im2col"


def build_conv(ctx: OpContext, attrs: dict, activation: Callable | None = None) -> Callable:
    """Kernel of Conv and FusedConv: ``fn(x, w, b=None, z=None, out=None)``.

    The GEMM writes into ``out`` (im2col, pointwise) or is cropped into it; bias, the residual
    ``z`` and ``activation`` are then applied in place, in that order.
    """
    group = int(attrs["group"])
    label = ctx.node.label
    fail = _runtime_error(label)
    w_const = ctx.values[1] if len(ctx.values) > 1 else None
    b_const = ctx.values[2] if len(ctx.values) > 2 else None
    n = _spatial_rank(ctx)
    if n is not None:  # validate attributes at compile time whenever the rank is known
        conv_window(ctx, attrs, n, ctx.inputs[1].shape if ctx.inputs[1] is not None else None)
        x_t, w_t = ctx.inputs[0], ctx.inputs[1]
        _check_channels(ctx, x_t.shape if x_t else None, w_t.shape if w_t else None, group, False)

    def make_plan(x_shape: tuple, w_shape: tuple) -> ConvPlan:
        if len(x_shape) < 3 or len(w_shape) != len(x_shape):
            raise fail(f"input shape {list(x_shape)} and weight shape {list(w_shape)} do not fit a convolution")
        if x_shape[1] != w_shape[1] * group or w_shape[0] % group:
            raise fail(f"input shape {list(x_shape)} does not fit weight {list(w_shape)} with group {group}")
        win, _ = conv_window(ctx, attrs, len(x_shape) - 2, w_shape)
        outs, begins, ends = win.resolve(tuple(x_shape[2:]), fail)
        out_shape = (x_shape[0], w_shape[0]) + outs
        method = _choose_method(x_shape, w_shape, win, group, outs, begins, ends)
        # reading columns from the stride phases pays off for small strides on large maps
        # (stems); a long stride (an STFT's hop as a 1-D conv) would make as many phases as
        # taps, and on small maps the phase split costs more than the strided reads (measured)
        strided_im2col = (method == "im2col" and any(s > 1 for s in win.strides)
                          and max(win.strides) <= _PHASE_COLUMNS_MAX_STRIDE
                          and int(np.prod(outs)) >= _PHASE_COLUMNS_MIN_PIXELS)
        phased = method in ("depthwise_phased", "tap_gemm", "tap_stacked") or strided_im2col
        flat = phase_grid(win, tuple(x_shape[2:]), outs, begins) if phased else None
        nhwc = channels_last(win, tuple(x_shape[2:]), outs, begins, x_shape[1]) if method == "depthwise_nhwc" else None
        plan = ConvPlan(method, out_shape, begins, ends, win, group, flat, nhwc)
        if method == "winograd":
            plan.winograd = plan_winograd(x_shape, w_shape, outs, begins)
        if strided_im2col:
            plan.columns = phase_columns(win, flat, x_shape[1] // group)
        if method == "pointwise":
            plan.subsample, plan.gemm_shapes = pointwise_shapes(x_shape, out_shape, win, group)
        return plan

    x_static, w_static = ctx.static_shape(0), ctx.static_shape(1)
    plans: dict[tuple, ConvPlan] = {}
    prepared: dict[tuple, np.ndarray] = {}
    if x_static is not None and w_static is not None:
        plans[(x_static, w_static)] = make_plan(x_static, w_static)
    dtype = _compute_dtype(np.dtype(ctx.inputs[0].dtype)) if ctx.inputs[0] is not None else None
    if w_const is not None and dtype is not None:
        for key, p in plans.items():
            prepared[key] = prepare_weight(p, w_const, dtype)
    bias = None
    if b_const is not None and dtype is not None:
        bias = b_const.astype(dtype)

    @writes_out
    def conv_fn(x, w, b=None, z=None, out=None):
        key = (x.shape, w.shape)
        p = plans.get(key)
        if p is None:
            p = plans[key] = make_plan(x.shape, w.shape)
        cdt = _compute_dtype(x.dtype)
        wp = prepared.get(key) if w is w_const else None
        if wp is None:
            wp = prepare_weight(p, w, cdt)
            if w is w_const:
                prepared[key] = wp
        xc = x if x.dtype == cdt else x.astype(cdt)
        y = out if out is not None and out.dtype == cdt and out.flags.c_contiguous else np.empty(p.out_shape, cdt)
        METHODS[p.method](p, xc, wp, y)
        if b is not None:
            bb = bias if (b is b_const and bias is not None) else b.astype(cdt, copy=False)
            y += bb.reshape((-1,) + (1,) * (y.ndim - 2))
        if z is not None:
            y += z
        if activation is not None:
            activation(y)
        if y.dtype != x.dtype or (out is not None and y is not out):
            if out is None:
                return y.astype(x.dtype)
            np.copyto(out, y, casting="unsafe")
            return out
        return y

    if x_static is None or w_const is None or dtype != np.dtype(ctx.inputs[0].dtype) or (
            ctx.has_input(2) and b_const is None):
        return conv_fn
    # The usual case, a static shape with constant weights: everything above is decided once.
    p = plans[(x_static, w_static)]
    wp, run = prepared[(x_static, w_static)], METHODS[p.method]
    bb = None if bias is None else bias.reshape((-1,) + (1,) * (len(x_static) - 2))

    @writes_out
    def conv_static_fn(x, w, b=None, z=None, out=None):
        if x.shape != x_static or w is not w_const or b is not b_const or x.dtype != dtype:
            return conv_fn(x, w, b, z, out=out)
        if out is None:
            out = np.empty(p.out_shape, dtype)
        run(p, x, wp, out)
        apply_epilogue(out, bb, z, activation)
        return out

    return conv_static_fn


def apply_epilogue(out: np.ndarray, bias, z, activation) -> None:
    """``out = activation(out + bias + z)`` in place (``bias`` already shaped to broadcast)."""
    if bias is not None:
        out += bias
    if z is not None:
        out += z
    if activation is not None:
        activation(out)


LAYOUTS = ("NCHW", "NHWC")


def nhwc_to_nchw(shape: tuple) -> tuple:
    return (shape[0], shape[-1]) + tuple(shape[1:-1])


def nchw_to_nhwc(shape: tuple) -> tuple:
    return (shape[0],) + tuple(shape[2:]) + (shape[1],)


def build_conv_channels_last(ctx: OpContext, attrs: dict, activation: Callable | None, in_nhwc: bool,
                             out_nhwc: bool) -> Callable:
    """Kernel of a FusedConv whose input and/or output is channels-last (N, H, W, C), as
    :func:`edgeinfer.optimize.use_channels_last` sets around depthwise convs: the 1x1 convs
    beside them read or write that layout through a transposed GEMM operand, so the
    depthwise conv needs no transposes. Only 1x1 stride-1 and depthwise methods exist here;
    shapes must be static and the weights constant."""
    group = int(attrs["group"])
    xs, ws = ctx.static_shape(0), ctx.static_shape(1)
    w = ctx.values[1] if len(ctx.values) > 1 else None
    b = ctx.values[2] if len(ctx.values) > 2 else None
    if xs is None or ws is None or w is None or (ctx.has_input(2) and b is None):
        raise ctx.error("channels-last layouts need static shapes and constant weights")
    x_nchw = nhwc_to_nchw(xs) if in_nhwc else xs
    if len(x_nchw) != 4:
        raise ctx.error(f"channels-last layouts are 2-D only, found input shape {list(xs)}")
    _check_channels(ctx, x_nchw, ws, group, False)
    win, _ = conv_window(ctx, attrs, 2, ws)
    fail = _runtime_error(ctx.node.label)
    outs, begins, ends = win.resolve(tuple(x_nchw[2:]), fail)
    out_nchw = (x_nchw[0], ws[0]) + outs
    dtype = np.dtype(ctx.inputs[0].dtype)
    if dtype not in (np.float32, np.float64):
        raise ctx.error(f"channels-last layouts take float32 or float64, found {dtype}")
    if depthwise_channels_last_ok(x_nchw, ws, win, group):
        plan = ConvPlan("depthwise_nhwc", out_nchw, begins, ends, win, group,
                         nhwc=channels_last(win, tuple(x_nchw[2:]), outs, begins, x_nchw[1]), in_nhwc=in_nhwc,
                         out_nhwc=out_nhwc)
        wp = prepare_weight(plan, w, dtype)
        run = functools.partial(run_depthwise_nhwc, plan)
    elif (group == 1 and all(k == 1 for k in win.kernel) and not any(begins) and not any(ends)
          and all(st == 1 for st in win.strides)):
        plan = ConvPlan("pointwise", out_nchw, begins, ends, win, group, in_nhwc=in_nhwc, out_nhwc=out_nhwc)
        w2 = w.astype(dtype, copy=False).reshape(ws[0], -1)
        wp, run = np.ascontiguousarray(w2.T if out_nhwc else w2), pointwise_channels_last(plan, x_nchw[1])
    else:
        raise ctx.error("channels-last layouts apply to 1x1 stride-1 and depthwise convolutions only")
    out_shape = nchw_to_nhwc(out_nchw) if out_nhwc else out_nchw
    bias = None
    if b is not None:
        bias = b.astype(dtype).reshape(-1) if out_nhwc else b.astype(dtype).reshape(-1, 1, 1)

    @writes_out
    def conv_channels_last_fn(x, w_in, b_in=None, z=None, out=None):
        if x.shape != xs or w_in is not w or b_in is not b or x.dtype != dtype:
            raise fail(f"compiled for input {list(xs)} {dtype} with constant weights; got {list(x.shape)} {x.dtype}")
        if out is None:
            out = np.empty(out_shape, dtype)
        run(x, wp, out)
        apply_epilogue(out, bias, z, activation)
        return out

    return conv_channels_last_fn


@kernel("Conv", attrs=CONV_ATTRS)
def conv(ctx: OpContext, **attrs):
    return build_conv(ctx, attrs)


def _tiles(x_shape: tuple, out_shape: tuple, w_shape: tuple, attrs: dict) -> bool:
    """Whether a ConvTranspose's kernel taps tile the output without overlap or gaps."""
    k = tuple(w_shape[2:])
    n = len(k)
    strides = tuple(int(v) for v in (attrs.get("strides") or (1,) * n))
    dilations = tuple(int(v) for v in (attrs.get("dilations") or (1,) * n))
    return (strides == k and all(d == 1 for d in dilations)
            and tuple(out_shape[2:]) == tuple(d * kk for d, kk in zip(x_shape[2:], k)))


@kernel("ConvTranspose", attrs=CONV_TRANSPOSE_ATTRS)
def conv_transpose(ctx: OpContext, **attrs):
    group = int(attrs["group"])
    fail = _runtime_error(ctx.node.label)
    w_const = ctx.values[1] if len(ctx.values) > 1 else None
    n = _spatial_rank(ctx)
    if n is not None:
        conv_window(ctx, attrs, n, ctx.inputs[1].shape if ctx.inputs[1] is not None else None)

    def make_plan(x_shape: tuple, w_shape: tuple):
        if len(x_shape) < 3 or len(w_shape) != len(x_shape) or x_shape[1] != w_shape[0] or w_shape[0] % group:
            raise fail(f"input shape {list(x_shape)} does not fit weight {list(w_shape)} with group {group}")
        win, _ = conv_window(ctx, attrs, len(x_shape) - 2, w_shape)
        outs, begins, _, _ = _transpose_geometry(ctx, attrs, win, tuple(x_shape[2:]), fail)
        full = [s * (d - 1) + win.extent(i) for i, (s, d) in enumerate(zip(win.strides, x_shape[2:]))]
        # the scatter buffer spans the taps' reach and the output window, which padding or
        # output_shape may place partly outside the taps' reach
        lo = [min(0, b) for b in begins]
        hi = [max(f, b + o) for f, b, o in zip(full, begins, outs)]
        buf_shape = (x_shape[0], w_shape[1] * group) + tuple(h - l for h, l in zip(hi, lo))
        taps = [
            tuple(slice(t * dl - l, t * dl - l + (d - 1) * s + 1, s)
                  for t, dl, l, d, s in zip(tap, win.dilations, lo, x_shape[2:], win.strides))
            for tap in itertools.product(*[range(k) for k in win.kernel])
        ]
        crop = tuple(slice(b - l, b - l + o) for b, l, o in zip(begins, lo, outs))
        return (x_shape[0], w_shape[1] * group) + outs, buf_shape, taps, crop

    plans: dict[tuple, tuple] = {}
    prepared: dict[tuple, np.ndarray] = {}

    def prepare(w: np.ndarray, dtype) -> np.ndarray:
        # (G, Mg*K, Cg): columns = W_g^T @ X_g
        cin = w.shape[0]
        wg = w.astype(dtype, copy=False).reshape(group, cin // group, -1)
        return np.ascontiguousarray(wg.transpose(0, 2, 1))

    x_static, w_static = ctx.static_shape(0), ctx.static_shape(1)
    if x_static is not None and w_static is not None:
        plans[(x_static, w_static)] = make_plan(x_static, w_static)
    if w_const is not None and ctx.inputs[0] is not None:
        prepared[w_const.shape] = prepare(w_const, _compute_dtype(np.dtype(ctx.inputs[0].dtype)))

    @writes_out
    def conv_transpose_fn(x, w, b=None, out=None):
        key = (x.shape, w.shape)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = make_plan(x.shape, w.shape)
        out_shape, buf_shape, taps, crop = plan
        cdt = _compute_dtype(x.dtype)
        wp = prepared.get(w.shape) if w is w_const else None
        if wp is None:
            wp = prepare(w, cdt)
            if w is w_const:
                prepared[w.shape] = wp
        nb, c = x.shape[:2]
        xg = x.astype(cdt, copy=False).reshape(nb, group, c // group, -1)
        m = out_shape[1]
        if buf_shape == out_shape and _tiles(x.shape, out_shape, w.shape, attrs):
            # stride == kernel, no padding: every output pixel comes from exactly one tap, so
            # the columns are the output, only interleaved: one strided copy, no scatter-add
            (cols,) = scratch(((nb, group, wp.shape[1], xg.shape[-1]), cdt))
            np.matmul(wp, xg, out=cols)
            k = tuple(w.shape[2:])
            cols = cols.reshape((nb, m, len(taps)) + x.shape[2:])
            if out is None:
                out = np.empty(out_shape, x.dtype)
            head = (slice(None), slice(None))
            for t, tap in enumerate(itertools.product(*[range(kk) for kk in k])):
                # one strided copy per tap (2.5x faster than one copy of the interleaving transpose)
                np.copyto(out[head + tuple(slice(a, None, kk) for a, kk in zip(tap, k))], cols[:, :, t],
                          casting="unsafe")
            if b is not None:
                out += b.astype(x.dtype, copy=False).reshape((-1,) + (1,) * (out.ndim - 2))
            return out
        cols, buf = scratch(((nb, group, wp.shape[1], xg.shape[-1]), cdt), (buf_shape, cdt))
        np.matmul(wp, xg, out=cols)
        cols = cols.reshape((nb, m, len(taps)) + x.shape[2:])
        buf.fill(0)
        head = (slice(None), slice(None))
        for t, sl in enumerate(taps):
            buf[head + sl] += cols[:, :, t]
        y = buf[head + crop]
        if out is None:
            out = np.empty(out_shape, x.dtype)
        np.copyto(out, y, casting="unsafe")
        if b is not None:
            out += b.astype(x.dtype, copy=False).reshape((-1,) + (1,) * (out.ndim - 2))
        return out

    return conv_transpose_fn
