"""Convolutions: Conv and ConvTranspose over 1, 2 or 3 spatial axes, plus the sliding-window
geometry (:class:`Window`) that :mod:`.pool` shares.

A convolution kernel is planned per concrete input shape (once at compile time for static
shapes, lazily and cached for unknown ones). A plan picks one of five methods:

* ``pointwise``: a 1x1 kernel without padding is one GEMM (batched over groups) over the
  (strided) input, no im2col;
* ``depthwise_nhwc``: ``group == C_in == C_out`` on small 2-D images (on any, when the graph
  hands it channels-last tensors; :func:`build_conv_channels_last`): channels-last, one
  ``einsum`` per stride phase over rows of ``W * C`` values (:class:`_ChannelsLast`);
* ``depthwise_phased``: other ``group == C_in`` cases accumulate the taps with whole-array
  multiply-adds on contiguous rows of the stride-phase layout (:class:`_PhaseGrid`);
* ``tap_gemm``: stride 1 with many channels and pixels: one GEMM per tap on contiguous rows of
  the padded input, accumulated (no im2col copy); ``tap_stacked`` when the output channels are
  few: one GEMM of all taps' weights per image block, summed at the taps' offsets;
* ``im2col``: a strided view of the padded input, copied once to columns, and one (batched
  over groups) GEMM written straight into the output buffer.

ConvTranspose is the adjoint: one GEMM to columns, then col2im adds the taps into the
output (a loop over kernel taps, never over pixels); when the taps tile the output (stride ==
kernel, no padding) each tap's columns are copied to their place instead.

Temporaries come from a per-thread workspace (:func:`scratch`), and views of it that a kernel
needs on every call are made once (:func:`scratch_views`): at ~1-5 us each, views and small
numpy calls are a large part of a small conv's time.
"""
from __future__ import annotations

import functools
import itertools
import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import KernelError
from ..graph import TensorType
from .registry import OpContext, kernel, shape_rule, writes_out

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
CONV_ATTRS = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None, "strides": None}
CONV_TRANSPOSE_ATTRS = {**CONV_ATTRS, "output_padding": None, "output_shape": None}
CONV_DTYPES = frozenset({"float16", "float32", "float64"})


# ------------------------------------------------------------------------------ geometry
def int_list(ctx: OpContext, name: str, value, n: int, default: int, minimum: int) -> tuple[int, ...]:
    """An int-list attribute of length ``n`` (``default`` repeated when absent), validated."""
    if value is None:
        return (default,) * n
    if type(value) is list and all(type(v) is int for v in value):
        vals = tuple(value)  # the common case: the importers give attributes as lists of int
    else:
        vals = tuple(int(v) for v in np.atleast_1d(value).tolist())
    if len(vals) != n:
        raise ctx.error(f"attribute '{name}' has {len(vals)} values {list(vals)}, expected {n} for {n} spatial axes")
    if any(v < minimum for v in vals):
        raise ctx.error(f"attribute '{name}' = {list(vals)} has a value below {minimum}")
    return vals


@dataclass(frozen=True)
class Window:
    """Sliding-window geometry along the spatial axes of an N-C-spatial tensor."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # begins then ends, as given (used when auto_pad is NOTSET)
    auto_pad: str = "NOTSET"
    ceil_mode: bool = False

    @classmethod
    def from_attrs(cls, ctx: OpContext, kernel: tuple[int, ...], strides, dilations, pads, auto_pad: str,
                   ceil_mode: int = 0) -> "Window":
        n = len(kernel)
        if auto_pad not in AUTO_PADS:
            raise ctx.error(f"auto_pad '{auto_pad}' is not one of {list(AUTO_PADS)}")
        return cls(
            tuple(kernel),
            int_list(ctx, "strides", strides, n, 1, 1),
            int_list(ctx, "dilations", dilations, n, 1, 1),
            int_list(ctx, "pads", pads, 2 * n, 0, 0),
            auto_pad,
            bool(ceil_mode),
        )

    @property
    def n(self) -> int:
        return len(self.kernel)

    def extent(self, i: int) -> int:
        return (self.kernel[i] - 1) * self.dilations[i] + 1

    def out_dim(self, i: int, d):
        """Output size along spatial axis ``i`` for input size ``d`` (symbols pass when exact)."""
        if not isinstance(d, int):
            same = self.auto_pad in ("SAME_UPPER", "SAME_LOWER") or (
                self.auto_pad == "NOTSET" and self.pads[i] + self.pads[self.n + i] == self.extent(i) - 1
            ) or (self.auto_pad == "VALID" and self.extent(i) == 1)
            return d if same and self.strides[i] == 1 and d is not None else None
        return self.resolve_axis(i, d)[0]

    def resolve_axis(self, i: int, d: int) -> tuple[int, int, int]:
        """(output size, pad begin, pad end) along spatial axis ``i`` for input size ``d``."""
        k, s = self.extent(i), self.strides[i]
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-d // s)
            total = max(0, (o - 1) * s + k - d)
            b = total // 2 if self.auto_pad == "SAME_UPPER" else total - total // 2
            return o, b, total - b
        b, e = (0, 0) if self.auto_pad == "VALID" else (self.pads[i], self.pads[self.n + i])
        span = d + b + e - k
        if span < 0:
            return 0, b, e
        if self.ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= d + b:  # a window may not start in the end padding
                o -= 1
        else:
            o = span // s + 1
        return o, b, e

    def resolve(self, spatial: tuple[int, ...], fail: Callable[[str], Exception]):
        """(outputs, pad begins, pad ends) for concrete spatial sizes; raises ``fail(msg)``."""
        res = [self.resolve_axis(i, d) for i, d in enumerate(spatial)]
        outs = tuple(r[0] for r in res)
        if any(o < 1 for o in outs):
            raise fail(
                f"input spatial shape {list(spatial)} is too small for kernel {list(self.kernel)} "
                f"(dilations {list(self.dilations)}, pads {list(self.pads)}): output would be {list(outs)}"
            )
        return outs, tuple(r[1] for r in res), tuple(r[2] for r in res)

    def tap_slices(self, outs: tuple[int, ...]) -> list[tuple[slice, ...]]:
        """For each kernel tap (row-major), the spatial slices of the padded input it reads."""
        per_axis = [
            [slice(t * dl, t * dl + (o - 1) * s + 1, s) for t in range(k)]
            for k, s, dl, o in zip(self.kernel, self.strides, self.dilations, outs)
        ]
        return list(itertools.product(*per_axis))


def padded_shape(shape: tuple[int, ...], begins, ends) -> tuple[int, ...]:
    return tuple(shape[:2]) + tuple(d + b + e for d, b, e in zip(shape[2:], begins, ends))


def pad_spatial(x: np.ndarray, begins, ends, value=0, into: np.ndarray | None = None) -> np.ndarray:
    """``x`` with its spatial axes (2..) padded by ``value`` (written to ``into`` when given);
    ``x`` itself when there is no padding."""
    if not any(begins) and not any(ends):
        return x
    xp = np.empty(padded_shape(x.shape, begins, ends), x.dtype) if into is None else into
    xp.fill(value)
    xp[(slice(None), slice(None)) + tuple(slice(b, b + d) for b, d in zip(begins, x.shape[2:]))] = x
    return xp


class _Workspace(threading.local):
    def __init__(self):
        self.buf = np.empty(0, np.uint8)
        self.offset = 0  # of the first aligned byte of buf
        self.carved: dict[tuple, list[np.ndarray]] = {}  # specs -> arrays of the current buf
        self.derived: dict[tuple, tuple] = {}  # (specs, id(owner)) -> (owner, views), see scratch_views


_CARVED_MAX = 4096


_WORKSPACE = _Workspace()
_WORKSPACE_MAX_BYTES = 64 << 20
_ALIGN = 64


def scratch(*specs: tuple[tuple[int, ...], np.dtype]) -> list[np.ndarray]:
    """Uninitialized arrays for ``(shape, dtype)`` specs, carved from this thread's workspace.

    Why: a kernel's multi-megabyte temporaries (im2col columns, padded inputs, accumulators)
    are returned to the OS when freed and page-fault back in on the next call, which measured
    ~40% of a 3x3 conv. One grow-only buffer per thread avoids that. The arrays are valid
    until the next ``scratch`` call on the same thread, so a kernel takes all it needs in one
    call and never returns one of them. A repeated request returns the very same array
    objects (callers may cache views of them by identity).
    """
    return _carve(specs)[0]


def scratch_views(specs: tuple, owner, build: Callable[[list[np.ndarray]], tuple]) -> tuple:
    """``build(scratch(*specs))``, computed once per ``owner`` while this thread's workspace
    buffer stays the same (views of scratch arrays cost microseconds to make, and a small
    kernel makes many). Dropped with the buffer when it grows, so no stale buffer stays alive."""
    arrays, cacheable = _carve(specs)
    if not cacheable:
        return build(arrays)
    key = (specs, id(owner))
    hit = _WORKSPACE.derived.get(key)
    if hit is None or hit[0] is not owner:
        hit = _WORKSPACE.derived[key] = (owner, build(arrays))
    return hit[1]


def _carve(specs: tuple) -> tuple[list[np.ndarray], bool]:
    """(arrays for specs, whether they live in the kept workspace buffer)."""
    ws = _WORKSPACE
    hit = ws.carved.get(specs)
    if hit is not None:  # the same request as before: the same array objects, no slicing
        return hit, True
    buf = ws.buf
    total = _ALIGN
    for shape, dt in specs:
        total += -(-(math.prod(shape) * np.dtype(dt).itemsize) // _ALIGN) * _ALIGN
    keep = True
    if buf.nbytes < total:
        buf = np.empty(total, np.uint8)
        keep = total <= _WORKSPACE_MAX_BYTES  # larger one-off needs are not kept alive
        if keep:
            ws.buf = buf
            ws.offset = (-buf.ctypes.data) % _ALIGN
            ws.carved = {}  # nothing carved from the old buffer is handed out again
            ws.derived = {}
        offset = (-buf.ctypes.data) % _ALIGN
    else:
        offset = ws.offset
    arrays = []
    for shape, dt in specs:
        dt = np.dtype(dt)
        b = math.prod(shape) * dt.itemsize
        arrays.append(buf[offset:offset + b].view(dt).reshape(shape))
        offset += -(-b // _ALIGN) * _ALIGN
    if keep and len(ws.carved) < _CARVED_MAX:
        ws.carved[specs] = arrays
    return arrays, keep


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
@dataclass
class _PhaseGrid:
    """The padded input split into stride phases, each flattened to one contiguous row.

    Padded position ``q * stride + phase`` of an axis goes to row ``q`` of ``phase``, so a kernel
    tap reads one phase at a fixed offset for every output. With each phase's grid flattened,
    tap ``t`` reads the contiguous slice ``[offset, offset + length)`` of phase ``phase``: the
    per-tap multiply-adds and GEMMs run on contiguous memory, without an im2col copy. Results
    live on the phase grid (row pitch ``grid[1:]``), from which ``crop`` takes the output.
    For stride 1 there is one phase: the whole padded image.
    """

    n_phases: int
    grid_shape: tuple[int, ...]  # rows per phase along each spatial axis
    tail: int  # zeros after each grid so the last tap's slice stays in bounds
    taps: list[tuple[int, int]]  # (phase index, flat offset) per kernel tap, row-major
    length: int
    grid: tuple[int, ...]  # result reshaped: (o1, Q2, ..., Qn)
    crop: tuple[slice, ...]
    copies: list[tuple[int, tuple, tuple]]  # (phase, grid slices, input slices)


@dataclass
class _ChannelsLast:
    """Geometry of the channels-last depthwise method (2-D, multiplier 1).

    The input is copied once (transposed, unless it is channels-last already) into a
    zero-bordered (N, Hp, Wp, C) buffer; with stride > 1 that buffer is split into its stride
    phases so every tap reads one phase at a fixed offset. Within a phase, the taps form a
    (rows, cols) grid read at uniform strides, so one ``einsum`` per step multiplies and sums
    all its taps on rows of ``Wo * C`` contiguous values against weights tiled over
    ``period`` columns (see :func:`_run_depthwise_nhwc`). A step is a phase, or a band of
    output rows of it when short images make many taps read only padding (:func:`_row_steps`).
    """

    padded: tuple[int, int]  # Hp, Wp
    begins: tuple[int, int]
    phases: list[tuple[int, int, tuple[int, int], tuple[int, int], list[tuple[int, int]]]]
    # per phase: (row phase, col phase, phase grid (Qh, Qw), tap step (rows, cols), taps (i, j))
    steps: tuple[tuple[int, int, int, tuple[int, ...], tuple[int, ...], bool], ...]
    # one einsum each: (phase, first output row, end output row, tap rows, tap cols, accumulate?)
    zero_rows: tuple[tuple[int, int], ...]  # output row ranges no tap reaches (zeroed first)
    period: int  # output columns the tiled weights span; they repeat Wo / period times
    specs: dict = field(default_factory=dict)  # (input shape, dtypes) -> its scratch specs


@dataclass
class _ConvPlan:
    """How to run one Conv for one concrete (input shape, weight shape)."""

    method: str
    out_shape: tuple[int, ...]
    begins: tuple[int, ...]
    ends: tuple[int, ...]
    win: Window
    group: int
    flat: _PhaseGrid | None = None
    nhwc: _ChannelsLast | None = None
    # pointwise: the strided-input index (None: stride 1) and the GEMM operand shapes
    subsample: tuple | None = None
    gemm_shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    # channels-last tensors (N, H, W, C) in or out, set by build_conv_channels_last
    in_nhwc: bool = False
    out_nhwc: bool = False


# Per-tap GEMMs beat one im2col GEMM when the contraction (input channels) is long enough for
# BLAS, at least the output channels (the per-tap sums then move less than the columns would),
# and the image is large (measured on 3x3 convs, 16..512 channels, 7..160 pixels).
_TAP_GEMM_MIN_CHANNELS = 32
_TAP_GEMM_MIN_PIXELS = 2048
# With fewer output channels than this, large images stack the taps into one GEMM per block
# of _STACKED_BLOCK padded pixels (measured: 96->24 channels at 160x160, 30% faster).
_STACKED_MAX_CHANNELS = 32
_STACKED_MIN_PIXELS = 8192
_STACKED_BLOCK = 4096
# The channels-last depthwise method pays two transposes, which numpy does slowly once the
# image outgrows the cache (large images with few channels); beyond this many input pixels
# the NCHW phased method wins (measured: 56x56 even, 160x160 3x slower).
_NHWC_MAX_PIXELS = 4096


def _phase_grid(win: Window, spatial: tuple[int, ...], outs, begins) -> _PhaseGrid:
    n = len(spatial)
    reach = [((k - 1) * dl) // st for k, dl, st in zip(win.kernel, win.dilations, win.strides)]
    grid_shape = tuple(o + r for o, r in zip(outs, reach))
    pitch = [int(np.prod(grid_shape[i + 1:])) for i in range(n)]
    size = int(np.prod(grid_shape))
    taps = []
    for tap in itertools.product(*[range(k) for k in win.kernel]):
        pos = [t * dl for t, dl in zip(tap, win.dilations)]
        phase = int(np.ravel_multi_index([p % st for p, st in zip(pos, win.strides)], win.strides))
        taps.append((phase, sum((p // st) * pt for p, st, pt in zip(pos, win.strides, pitch))))
    length = outs[0] * pitch[0]
    tail = max(0, max(off for _, off in taps) + length - size)
    # per axis and phase: which grid rows hold which input rows (the rest is zero padding)
    per_axis = []
    for st, b, d, q in zip(win.strides, begins, spatial, grid_shape):
        rows = []
        for ph in range(st):
            q0 = max(0, -((ph - b) // st))
            q1 = min(q - 1, (d - 1 - ph + b) // st)
            r0 = q0 * st + ph - b
            rows.append((slice(q0, q1 + 1), slice(r0, r0 + (q1 - q0) * st + 1, st)) if q1 >= q0 else None)
        per_axis.append(rows)
    copies = []
    for phase_index in itertools.product(*[range(st) for st in win.strides]):
        parts = [per_axis[a][ph] for a, ph in enumerate(phase_index)]
        if all(p is not None for p in parts):
            flat_index = int(np.ravel_multi_index(phase_index, win.strides))
            copies.append((flat_index, tuple(p[0] for p in parts), tuple(p[1] for p in parts)))
    n_phases = int(np.prod(win.strides))
    crop = tuple(slice(0, o) for o in outs[1:])
    return _PhaseGrid(n_phases, grid_shape, tail, taps, length, (outs[0],) + grid_shape[1:], crop, copies)


def _channels_last(win: Window, spatial: tuple[int, int], outs, begins, channels: int) -> _ChannelsLast:
    (h, w), (bh, bw) = spatial, begins
    (sh, sw), (dh, dw) = win.strides, win.dilations
    hp = max(h + bh, (outs[0] - 1) * sh + win.extent(0))
    wp = max(w + bw, (outs[1] - 1) * sw + win.extent(1))

    def touches(t: int, dl: int, st: int, b: int, d: int, o: int) -> bool:
        # does kernel tap t read a real (not padding) input row for some output row?
        first = t * dl - b  # input row read by output 0
        return any(0 <= first + q * st < d for q in range(o))

    row_cost = outs[1] * channels * _EINSUM_NS_PER_MAC
    rows = [i for i in range(win.kernel[0]) if touches(i, dh, sh, bh, h, outs[0])]
    cols = [j for j in range(win.kernel[1]) if touches(j, dw, sw, bw, w, outs[1])]
    phases = []
    for ph, pw in itertools.product(range(sh), range(sw)):
        # taps that only ever read padding are skipped (thin images: 5x5 taps over 2 rows)
        taps = [(i, j) for i in rows for j in cols if (i * dh) % sh == ph and (j * dw) % sw == pw]
        if not taps:
            continue
        grid = (-(-(hp - ph) // sh), -(-(wp - pw) // sw))
        # stride 1: one phase, taps `dilation` apart; dilation 1: taps adjacent within a phase
        step = (dh if sh == 1 else 1, dw if sw == 1 else 1)
        phases.append((ph, pw, grid, step, taps))
    steps, zero_rows = _row_steps(tuple(tuple(p[4]) for p in phases), tuple(outs), h, bh, sh, dh, row_cost)
    # Weights tiled along a whole output row would be re-read from memory on every call (a
    # 5x5 layer of 88 channels on a 96-wide image: 845 KB); tiled over a few columns and
    # broadcast across the rest they stay in cache while the inner loops stay long.
    period = outs[1]
    for d in range(1, outs[1] + 1):
        if outs[1] % d == 0 and d * channels >= _TILE_MIN_VALUES:
            period = d
            break
    return _ChannelsLast((hp, wp), (bh, bw), phases, steps, zero_rows, period)


# einsum cost model for splitting the output rows (ns): per multiply-add, and per call
_EINSUM_NS_PER_MAC = 0.14
_EINSUM_NS_PER_CALL = 6000.0
_SPLIT_MIN_SAVING = 0.25  # measured: 12-row images (10% of taps on padding) lose by splitting
_TILE_MIN_VALUES = 512  # einsum's inner loop length over the tiled weights


@functools.lru_cache(maxsize=256)  # layers of a network share their geometry
def _row_steps(phase_taps: tuple, outs: tuple, h: int, bh: int, sh: int, dh: int, row_cost: float):
    """The einsum calls of the channels-last depthwise method.

    On a short image most (tap row, output row) pairs of a tall kernel read padding (5x5 taps
    over 2 rows: a third of them), so output rows whose in-image tap rows differ may get their
    own calls, each summing only those tap rows, when the cost model says the saved
    multiply-adds outweigh the extra calls. ``row_cost`` is the cost of one tap on one row.
    """
    ho = outs[0]
    steps, written = [], [False] * ho
    zero_rows = []
    for k, taps in enumerate(phase_taps):
        rows_k = sorted({i for i, _ in taps})
        cols_k = tuple(sorted({j for _, j in taps}))
        valid = [tuple(i for i in rows_k if 0 <= q * sh + i * dh - bh < h) for q in range(ho)]
        groups: list[tuple[int, int, tuple]] = []
        for q, v in enumerate(valid):
            if groups and groups[-1][2] == v:
                groups[-1] = (groups[-1][0], q + 1, v)
            else:
                groups.append((q, q + 1, v))
        whole = len(rows_k) * ho * row_cost * len(cols_k) + _EINSUM_NS_PER_CALL
        split = sum(len(v) * (b - a) * row_cost * len(cols_k) + _EINSUM_NS_PER_CALL for a, b, v in groups if v)
        pairs = sum(len(v) * (b - a) for a, b, v in groups)
        # einsum runs slower on a few rows than the model says: split only a large waste
        if split >= whole or pairs > (1 - _SPLIT_MIN_SAVING) * len(rows_k) * ho:
            groups = [(0, ho, tuple(rows_k))]
        for a, b, v in groups:
            if not v:
                continue
            done = written[a:b]
            if any(done) and not all(done):  # rows first reached here start from zero
                zero_rows += [(q, q + 1) for q in range(a, b) if not written[q]]
                done = [True]
            steps.append((k, a, b, v, cols_k, all(done)))
            written[a:b] = [True] * (b - a)
    zero_rows += [(q, q + 1) for q in range(ho) if not written[q]]
    return tuple(steps), tuple(zero_rows)


def _phases_shape(x_shape: tuple, f: _PhaseGrid) -> tuple[int, ...]:
    return (f.n_phases,) + tuple(x_shape[:2]) + (int(np.prod(f.grid_shape)) + f.tail,)


def _to_phases(x: np.ndarray, f: _PhaseGrid, buf: np.ndarray) -> np.ndarray:
    """Fill ``buf`` (of :func:`_phases_shape`) with the zero-padded phase layout of ``x``."""
    n, c = x.shape[:2]
    size = int(np.prod(f.grid_shape))
    buf.fill(0)
    head = (slice(None), slice(None))
    for phase, dst, src in f.copies:
        buf[phase, :, :, :size].reshape((n, c) + f.grid_shape)[head + dst] = x[head + src]
    return buf


def _prepare_weight(plan: "_ConvPlan", w: np.ndarray, dtype):
    """The weight laid out for ``plan.method`` (done once when W is a constant)."""
    method, group = plan.method, plan.group
    w = w.astype(dtype, copy=False)
    m = w.shape[0]
    taps = int(np.prod(w.shape[2:]))
    if method == "pointwise" and group == 1:
        return np.ascontiguousarray(w.reshape(m, -1))
    if method == "depthwise_nhwc":
        # per step: (tap rows, tap cols, period * C), each tap's C weights repeated `period` times
        wo = plan.nhwc.period
        kw = w.reshape(m, *w.shape[2:])
        tiled = {}  # steps with the same taps share one array
        for _, _, _, rows, cols, _ in plan.nhwc.steps:
            if (rows, cols) not in tiled:
                wt = kw[:, list(rows)][:, :, list(cols)].transpose(1, 2, 0)  # (rows, cols, C)
                tiled[(rows, cols)] = np.ascontiguousarray(np.tile(wt, (1, 1, wo)))
        return [tiled[(rows, cols)] for _, _, _, rows, cols, _ in plan.nhwc.steps]
    if method == "pointwise" and group > 1:
        return np.ascontiguousarray(w.reshape(group, m // group, -1))
    if method == "depthwise_phased":
        # (taps, C, multiplier, 1, ...): one broadcastable factor per tap
        c = group
        wt = np.ascontiguousarray(w.reshape(c, m // c, taps).transpose(2, 0, 1))
        return wt.reshape(taps, c, m // c, 1)
    if method == "tap_gemm":
        return np.ascontiguousarray(w.reshape(m, w.shape[1], taps).transpose(2, 0, 1))
    if method == "tap_stacked":  # (taps * M, C), tap-major rows
        return np.ascontiguousarray(w.reshape(m, w.shape[1], taps).transpose(2, 0, 1).reshape(taps * m, -1))
    if group == 1:
        return np.ascontiguousarray(w.reshape(m, -1))
    return np.ascontiguousarray(w.reshape(group, m // group, -1))


def _pointwise_shapes(x_shape: tuple, out_shape: tuple, win: Window, group: int):
    """(input subsampling index or None, (GEMM input shape, GEMM output shape)) of a 1x1 conv;
    grouped: one GEMM per group, batched, straight from the input."""
    sub = None
    if any(s != 1 for s in win.strides):
        sub = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in win.strides)
    n, c, m = x_shape[0], x_shape[1], out_shape[1]
    if group == 1:
        return sub, ((n, c, -1), (n, m, -1))
    return sub, ((n, group, c // group, -1), (n, group, m // group, -1))


def _run_pointwise(p: _ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    if p.subsample is not None:
        x = x[p.subsample]
    xs, ys = p.gemm_shapes
    np.matmul(wp, x.reshape(xs), out=out.reshape(ys))


try:  # einsum's C entry point: np.einsum adds argument parsing on every call
    from numpy._core.multiarray import c_einsum as _c_einsum
except ImportError:  # numpy < 2
    from numpy.core.multiarray import c_einsum as _c_einsum


def _run_depthwise_nhwc(p: _ConvPlan, x: np.ndarray, wp: list, out: np.ndarray) -> None:
    # Why channels-last: the taps then read rows of Wo * C contiguous values that match the
    # weights tiled along the row, and einsum multiplies and accumulates all taps of a step in
    # one pass per tap without temporaries: ~3x faster than per-tap multiply-adds on NCHW
    # rows, transposes included (measured on 3x3 and 5x5 MobileNet/ShuffleNet layers).
    g = p.nhwc
    if not g.steps:  # every tap reads padding only
        out.fill(0)
        return
    key = (x.shape, x.dtype, out.dtype)
    specs = g.specs.get(key)
    if specs is None:
        n, c = (x.shape[0], x.shape[3]) if p.in_nhwc else x.shape[:2]
        ho, wo = p.out_shape[2:]
        strided = len(g.phases) > 1 or g.phases[0][2] != g.padded
        specs = g.specs[key] = (((n,) + g.padded + (c,), x.dtype), ((n, ho, wo * c), out.dtype),
                                ((n, ho, wo * c), out.dtype)) + (
            tuple(((n,) + ph[2] + (c,), x.dtype) for ph in g.phases) if strided else ())
    borders, interior, copies, views, acc, tmp, acc_nchw = scratch_views(specs, g, functools.partial(
        _nhwc_views, p, x.shape[1:3] if p.in_nhwc else x.shape[2:]))
    for b in borders:  # zero only the border: the interior is overwritten
        b.fill(0)
    np.copyto(interior, x if p.in_nhwc else x.transpose(0, 2, 3, 1))
    for copy in copies:  # stride phases
        np.copyto(*copy)
    direct = p.out_nhwc and out.flags.c_contiguous
    if direct:  # the result is the output itself: no transpose back
        acc = out.reshape(acc.shape)
    for a, b in g.zero_rows:
        acc[:, a:b].fill(0)
    n, ho, row = acc.shape
    acc4 = acc.reshape(n, ho, p.out_shape[3] // g.period, -1)
    q = acc4.shape[2]
    for (_, a, b, _, _, accumulate), view, wt in zip(g.steps, views, wp):
        if accumulate:
            part = tmp[:, :b - a].reshape(n, b - a, q, -1)
            _c_einsum("abnhqk,abk->nhqk", view, wt, out=part)
            acc4[:, a:b] += part
        else:
            _c_einsum("abnhqk,abk->nhqk", view, wt, out=acc4[:, a:b])
    if not p.out_nhwc:
        np.copyto(out, acc_nchw)
    elif not direct:
        np.copyto(out, acc.reshape(out.shape))


def _nhwc_views(p: _ConvPlan, hw: tuple, arrays: list) -> tuple:
    """Everything :func:`_run_depthwise_nhwc` reads and writes, as views of its scratch."""
    g = p.nhwc
    h, w = hw
    ho, wo = p.out_shape[2:]
    n, c = arrays[0].shape[0], arrays[0].shape[-1]
    strided = len(arrays) > 3
    (bh, bw), (sh, sw), (dh, dw) = g.begins, p.win.strides, p.win.dilations
    xp, acc, tmp = arrays[0], arrays[1], arrays[2]
    phase_bufs = arrays[3:] if strided else []
    borders = [v for v in (xp[:, :bh], xp[:, bh + h:], xp[:, bh:bh + h, :bw], xp[:, bh:bh + h, bw + w:]) if v.size]
    copies, sources = [], []
    for k, (ph, pw, grid, _, _) in enumerate(g.phases):
        if strided:
            copies.append((phase_bufs[k], xp[:, ph::sh, pw::sw][:, :grid[0], :grid[1]]))
        sources.append(phase_bufs[k] if strided else xp)
    views = []
    for k, a, b, rows, cols, _ in g.steps:
        step = g.phases[k][3]
        base = sources[k][:, a + (rows[0] * dh) // sh:, (cols[0] * dw) // sw:]
        sn, sr, sc, se = base.strides
        period = g.period * c
        views.append(as_strided(base, (len(rows), len(cols), n, b - a, wo // g.period, period),
                                (sr * step[0], sc * step[1], sn, sr, se * period, se), writeable=False))
    acc_nchw = acc.reshape(n, ho, wo, c).transpose(0, 3, 1, 2)
    return borders, xp[:, bh:bh + h, bw:bw + w], copies, views, acc, tmp, acc_nchw


def _run_depthwise_phased(p: _ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    # contiguous rows make the per-tap multiply-adds several times faster than strided slices
    f = p.flat
    n, c = x.shape[:2]
    mult = out.shape[1] // c
    xf, acc, tmp = scratch((_phases_shape(x.shape, f), x.dtype), ((n, c, mult, f.length), out.dtype),
                           ((n, c, mult, f.length), out.dtype))
    xf = _to_phases(x, f, xf)[:, :, :, None]
    for t, (phase, off) in enumerate(f.taps):
        if t == 0:
            np.multiply(xf[phase, ..., off:off + f.length], wp[0], out=acc)
        else:
            np.multiply(xf[phase, ..., off:off + f.length], wp[t], out=tmp)
            acc += tmp
    grid = acc.reshape((n, c, mult) + f.grid)
    np.copyto(out.reshape((n, c, mult) + out.shape[2:]), grid[(Ellipsis, slice(None)) + f.crop])


def _run_tap_gemm(p: _ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    f = p.flat
    n, m = out.shape[:2]
    xf, acc, tmp = scratch((_phases_shape(x.shape, f), x.dtype), ((n, m, f.length), out.dtype),
                           ((n, m, f.length), out.dtype))
    xf = _to_phases(x, f, xf)
    for t, (phase, off) in enumerate(f.taps):
        if t == 0:
            np.matmul(wp[0], xf[phase, :, :, off:off + f.length], out=acc)
        else:
            np.matmul(wp[t], xf[phase, :, :, off:off + f.length], out=tmp)
            acc += tmp
    np.copyto(out, acc.reshape((n, m) + f.grid)[(Ellipsis, slice(None)) + f.crop])


def _run_tap_stacked(p: _ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    # Few output channels make each per-tap GEMM skinny (M < 32 runs BLAS at ~60% speed), so
    # all taps' weights are stacked into one (taps * M, C) GEMM over a block of the padded
    # image, whose rows are then summed at their tap offsets while the block is in cache.
    f = p.flat
    n, m = out.shape[:2]
    taps = len(f.taps)
    ext = max(off for _, off in f.taps)
    block = min(f.length, _STACKED_BLOCK)
    xf, acc, y = scratch((_phases_shape(x.shape, f), x.dtype), ((n, m, f.length), out.dtype),
                         ((taps * m, block + ext), out.dtype))
    xf = _to_phases(x, f, xf)
    for b in range(n):
        for l0 in range(0, f.length, block):
            cnt = min(block, f.length - l0)
            yb = y[:, :cnt + ext]
            np.matmul(wp, xf[0, b, :, l0:l0 + cnt + ext], out=yb)
            a = acc[b, :, l0:l0 + cnt]
            for t, (_, off) in enumerate(f.taps):
                rows = yb[t * m:(t + 1) * m, off:off + cnt]
                if t == 0:
                    np.copyto(a, rows)
                else:
                    a += rows
    np.copyto(out, acc.reshape((n, m) + f.grid)[(Ellipsis, slice(None)) + f.crop])


def _run_im2col(p: _ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    n, c = x.shape[:2]
    g = p.group
    rows = c // g * math.prod(p.win.kernel)
    npix = math.prod(p.out_shape[2:])
    padding = any(p.begins) or any(p.ends)
    specs = (((n, g * rows, npix), x.dtype),)
    if padding:
        specs += ((padded_shape(x.shape, p.begins, p.ends), x.dtype),)
    cols, gemm_cols, pad = scratch_views(specs, p, lambda arrays: _im2col_views(p, x.shape, arrays))
    if pad is not None:
        borders, interior, view = pad
        for b in borders:
            b.fill(0)
        np.copyto(interior, x)
    else:  # the columns view the input itself, which differs per call
        view = np.ndarray(cols.shape, x.dtype, x if x.flags.c_contiguous else np.ascontiguousarray(x),
                          strides=_im2col_strides(p, x.strides if x.flags.c_contiguous else None, x))
    np.copyto(cols, view)
    if g == 1:
        np.matmul(wp, gemm_cols, out=out.reshape(n, out.shape[1], npix))
    else:
        np.matmul(wp, gemm_cols, out=out.reshape(n, g, out.shape[1] // g, npix))


def _im2col_strides(p: _ConvPlan, strides: tuple | None, x: np.ndarray) -> tuple:
    """Strides of the (N, G, C/G, *kernel, *outs) column view of an array with ``strides``."""
    if strides is None:
        strides = np.ascontiguousarray(x).strides
    sn, sc, sp = strides[0], strides[1], strides[2:]
    c = x.shape[1]
    win = p.win
    return ((sn, sc * (c // p.group), sc) + tuple(d * s for d, s in zip(win.dilations, sp))
            + tuple(st * s for st, s in zip(win.strides, sp)))


def _im2col_views(p: _ConvPlan, x_shape: tuple, arrays: list) -> tuple:
    n, c = x_shape[:2]
    g = p.group
    cols_shape = (n, g, c // g) + p.win.kernel + p.out_shape[2:]
    buf = arrays[0]
    rows = buf.shape[1]
    cols = buf.reshape(cols_shape)
    gemm_cols = buf if g == 1 else buf.reshape(n, g, rows // g, -1)
    pad = None
    if len(arrays) > 1:
        xp = arrays[1]
        inner = (slice(None), slice(None)) + tuple(slice(b, b + d) for b, d in zip(p.begins, x_shape[2:]))
        borders = []
        for a in range(2, xp.ndim):  # the padding slabs, each zeroed once
            lo = (slice(None),) * a
            before = xp[lo + (slice(0, p.begins[a - 2]),)]
            after = xp[lo + (slice(p.begins[a - 2] + x_shape[a], None),)]
            inner_a = tuple(inner[2:a])
            borders += [v[(slice(None), slice(None)) + inner_a] for v in (before, after) if v.size]
        view = as_strided(xp, cols_shape, _im2col_strides(p, xp.strides, xp), writeable=False)
        pad = (borders, xp[inner], view)
    return cols, gemm_cols, pad


_METHODS = {
    "pointwise": _run_pointwise,
    "depthwise_phased": _run_depthwise_phased,
    "depthwise_nhwc": _run_depthwise_nhwc,
    "tap_gemm": _run_tap_gemm,
    "tap_stacked": _run_tap_stacked,
    "im2col": _run_im2col,
}


def depthwise_channels_last_ok(x_shape, w_shape, win: Window, group: int) -> bool:
    """Whether the channels-last depthwise method can run this conv (any image size)."""
    return (group > 1 and group == x_shape[1] == w_shape[0] and win.n == 2
            and (all(s == 1 for s in win.strides) or all(d == 1 for d in win.dilations)))


def _choose_method(x_shape, w_shape, win: Window, group: int, outs, begins, ends) -> str:
    stride1 = all(s == 1 for s in win.strides)
    if all(k == 1 for k in win.kernel) and not any(begins) and not any(ends):
        return "pointwise"
    if group > 1 and group == x_shape[1]:
        if depthwise_channels_last_ok(x_shape, w_shape, win, group) and int(np.prod(x_shape[2:])) <= _NHWC_MAX_PIXELS:
            return "depthwise_nhwc"
        return "depthwise_phased"
    if (stride1 and group == 1 and x_shape[1] >= max(_TAP_GEMM_MIN_CHANNELS, w_shape[0])
            and int(np.prod(outs)) >= _TAP_GEMM_MIN_PIXELS):
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

    def make_plan(x_shape: tuple, w_shape: tuple) -> _ConvPlan:
        if len(x_shape) < 3 or len(w_shape) != len(x_shape):
            raise fail(f"input shape {list(x_shape)} and weight shape {list(w_shape)} do not fit a convolution")
        if x_shape[1] != w_shape[1] * group or w_shape[0] % group:
            raise fail(f"input shape {list(x_shape)} does not fit weight {list(w_shape)} with group {group}")
        win, _ = conv_window(ctx, attrs, len(x_shape) - 2, w_shape)
        outs, begins, ends = win.resolve(tuple(x_shape[2:]), fail)
        out_shape = (x_shape[0], w_shape[0]) + outs
        method = _choose_method(x_shape, w_shape, win, group, outs, begins, ends)
        phased = method in ("depthwise_phased", "tap_gemm", "tap_stacked")
        flat = _phase_grid(win, tuple(x_shape[2:]), outs, begins) if phased else None
        nhwc = _channels_last(win, tuple(x_shape[2:]), outs, begins, x_shape[1]) if method == "depthwise_nhwc" else None
        plan = _ConvPlan(method, out_shape, begins, ends, win, group, flat, nhwc)
        if method == "pointwise":
            plan.subsample, plan.gemm_shapes = _pointwise_shapes(x_shape, out_shape, win, group)
        return plan

    x_static, w_static = ctx.static_shape(0), ctx.static_shape(1)
    plans: dict[tuple, _ConvPlan] = {}
    prepared: dict[tuple, np.ndarray] = {}
    if x_static is not None and w_static is not None:
        plans[(x_static, w_static)] = make_plan(x_static, w_static)
    dtype = _compute_dtype(np.dtype(ctx.inputs[0].dtype)) if ctx.inputs[0] is not None else None
    if w_const is not None and dtype is not None:
        for key, p in plans.items():
            prepared[key] = _prepare_weight(p, w_const, dtype)
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
            wp = _prepare_weight(p, w, cdt)
            if w is w_const:
                prepared[key] = wp
        xc = x if x.dtype == cdt else x.astype(cdt)
        y = out if out is not None and out.dtype == cdt and out.flags.c_contiguous else np.empty(p.out_shape, cdt)
        _METHODS[p.method](p, xc, wp, y)
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
    wp, run = prepared[(x_static, w_static)], _METHODS[p.method]
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


def _pointwise_channels_last(p: _ConvPlan, c: int) -> Callable:
    """``run(x, wp, out)`` of a 1x1 stride-1 conv between layouts, its shapes fixed once.

    The transposed operand costs nothing: BLAS reads it through its transpose flag."""
    n, m = p.out_shape[:2]
    pixels = math.prod(p.out_shape[2:])
    if p.out_nhwc:  # (P, C) @ (C, M)
        out_shape = (n, pixels, m)
        if p.in_nhwc:
            rows = (n, pixels, c)
            return lambda x, wp, out: np.matmul(x.reshape(rows), wp, out=out.reshape(out_shape))
        cols = (n, c, pixels)
        return lambda x, wp, out: np.matmul(x.reshape(cols).transpose(0, 2, 1), wp, out=out.reshape(out_shape))
    out_shape = (n, m, pixels)  # (M, C) @ (C, P)
    rows = (n, pixels, c)
    return lambda x, wp, out: np.matmul(wp, x.reshape(rows).transpose(0, 2, 1), out=out.reshape(out_shape))


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
        plan = _ConvPlan("depthwise_nhwc", out_nchw, begins, ends, win, group,
                         nhwc=_channels_last(win, tuple(x_nchw[2:]), outs, begins, x_nchw[1]), in_nhwc=in_nhwc,
                         out_nhwc=out_nhwc)
        wp = _prepare_weight(plan, w, dtype)
        run = functools.partial(_run_depthwise_nhwc, plan)
    elif (group == 1 and all(k == 1 for k in win.kernel) and not any(begins) and not any(ends)
          and all(st == 1 for st in win.strides)):
        plan = _ConvPlan("pointwise", out_nchw, begins, ends, win, group, in_nhwc=in_nhwc, out_nhwc=out_nhwc)
        w2 = w.astype(dtype, copy=False).reshape(ws[0], -1)
        wp, run = np.ascontiguousarray(w2.T if out_nhwc else w2), _pointwise_channels_last(plan, x_nchw[1])
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
