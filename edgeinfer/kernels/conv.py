"""Convolutions: Conv and ConvTranspose over 1, 2 or 3 spatial axes, plus the sliding-window
geometry (:class:`Window`) that :mod:`.pool` shares.

A convolution kernel is planned per concrete input shape (once at compile time for static
shapes, lazily and cached for unknown ones). A plan picks one of four methods:

* ``pointwise``: a 1x1 kernel without padding is one GEMM over the (strided) input, no im2col;
* ``depthwise_phased``: ``group == C_in`` accumulates the taps with whole-array multiply-adds
  on contiguous rows of the stride-phase layout (:class:`_PhaseGrid`);
* ``tap_gemm``: stride 1 with many channels and pixels: one GEMM per tap on contiguous rows of
  the padded input, accumulated (no im2col copy);
* ``im2col``: a strided view of the padded input, copied once to columns, and one (batched
  over groups) GEMM written straight into the output buffer.

ConvTranspose is the adjoint: one GEMM to columns, then col2im adds the taps into the
output (a loop over kernel taps, never over pixels).
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
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
    buf = np.empty(0, np.uint8)


_WORKSPACE = _Workspace()
_WORKSPACE_MAX_BYTES = 64 << 20
_ALIGN = 64


def scratch(*specs: tuple[tuple[int, ...], np.dtype]) -> list[np.ndarray]:
    """Uninitialized arrays for ``(shape, dtype)`` specs, carved from this thread's workspace.

    Why: a kernel's multi-megabyte temporaries (im2col columns, padded inputs, accumulators)
    are returned to the OS when freed and page-fault back in on the next call, which measured
    ~40% of a 3x3 conv. One grow-only buffer per thread avoids that. The arrays are valid
    until the next ``scratch`` call on the same thread, so a kernel takes all it needs in one
    call and never returns one of them.
    """
    nbytes = [int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for shape, dt in specs]
    sizes = [-(-b // _ALIGN) * _ALIGN for b in nbytes]
    total = sum(sizes) + _ALIGN
    buf = _WORKSPACE.buf
    if buf.nbytes < total:
        buf = np.empty(total, np.uint8)
        if total <= _WORKSPACE_MAX_BYTES:  # larger one-off needs are not kept alive
            _WORKSPACE.buf = buf
    offset = (-buf.ctypes.data) % _ALIGN
    arrays = []
    for (shape, dt), b, size in zip(specs, nbytes, sizes):
        arrays.append(buf[offset:offset + b].view(dt).reshape(shape))
        offset += size
    return arrays


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
class _ConvPlan:
    """How to run one Conv for one concrete (input shape, weight shape)."""

    method: str
    out_shape: tuple[int, ...]
    begins: tuple[int, ...]
    ends: tuple[int, ...]
    win: Window
    group: int
    flat: _PhaseGrid | None = None


# Per-tap GEMMs beat one im2col GEMM when the contraction (input channels) is long enough for
# BLAS and the image is large (measured on 3x3 convs, 16..512 channels, 7..112 pixels).
_TAP_GEMM_MIN_CHANNELS = 32
_TAP_GEMM_MIN_PIXELS = 2048


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


def _prepare_weight(method: str, w: np.ndarray, group: int, dtype) -> np.ndarray:
    """The weight laid out for ``method`` (done once when W is a constant)."""
    w = w.astype(dtype, copy=False)
    m = w.shape[0]
    taps = int(np.prod(w.shape[2:]))
    if method == "pointwise":
        return np.ascontiguousarray(w.reshape(m, -1))
    if method == "depthwise_phased":
        # (taps, C, multiplier, 1, ...): one broadcastable factor per tap
        c = group
        wt = np.ascontiguousarray(w.reshape(c, m // c, taps).transpose(2, 0, 1))
        return wt.reshape(taps, c, m // c, 1)
    if method == "tap_gemm":
        return np.ascontiguousarray(w.reshape(m, w.shape[1], taps).transpose(2, 0, 1))
    if group == 1:
        return np.ascontiguousarray(w.reshape(m, -1))
    return np.ascontiguousarray(w.reshape(group, m // group, -1))


def _run_pointwise(p: _ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    if any(s != 1 for s in p.win.strides):
        x = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in p.win.strides)]
    n, c = x.shape[:2]
    np.matmul(wp, x.reshape(n, c, -1), out=out.reshape(n, out.shape[1], -1))


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


def _run_im2col(p: _ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    n, c = x.shape[:2]
    g, win = p.group, p.win
    outs = p.out_shape[2:]
    cols_shape = (n, g, c // g) + win.kernel + outs
    padding = any(p.begins) or any(p.ends)
    specs = [(cols_shape, x.dtype)] + ([(padded_shape(x.shape, p.begins, p.ends), x.dtype)] if padding else [])
    cols, *pad_buf = scratch(*specs)
    xp = pad_spatial(x, p.begins, p.ends, into=pad_buf[0]) if padding else x
    sn, sc = xp.strides[:2]
    sp = xp.strides[2:]
    view = as_strided(
        xp,
        cols_shape,
        (sn, sc * (c // g), sc) + tuple(d * s for d, s in zip(win.dilations, sp))
        + tuple(st * s for st, s in zip(win.strides, sp)),
        writeable=False,
    )
    np.copyto(cols, view)
    npix = int(np.prod(outs))
    if g == 1:
        np.matmul(wp, cols.reshape(n, -1, npix), out=out.reshape(n, out.shape[1], npix))
    else:
        np.matmul(wp, cols.reshape(n, g, -1, npix), out=out.reshape(n, g, out.shape[1] // g, npix))


_METHODS = {
    "pointwise": _run_pointwise,
    "depthwise_phased": _run_depthwise_phased,
    "tap_gemm": _run_tap_gemm,
    "im2col": _run_im2col,
}


def _choose_method(x_shape, w_shape, win: Window, group: int, outs, begins, ends) -> str:
    stride1 = all(s == 1 for s in win.strides)
    if group == 1 and all(k == 1 for k in win.kernel) and not any(begins) and not any(ends):
        return "pointwise"
    if group > 1 and group == x_shape[1]:
        return "depthwise_phased"
    if stride1 and group == 1 and x_shape[1] >= _TAP_GEMM_MIN_CHANNELS and int(np.prod(outs)) >= _TAP_GEMM_MIN_PIXELS:
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
        phased = method in ("depthwise_phased", "tap_gemm")
        flat = _phase_grid(win, tuple(x_shape[2:]), outs, begins) if phased else None
        return _ConvPlan(method, out_shape, begins, ends, win, group, flat)

    x_static, w_static = ctx.static_shape(0), ctx.static_shape(1)
    plans: dict[tuple, _ConvPlan] = {}
    prepared: dict[tuple, np.ndarray] = {}
    if x_static is not None and w_static is not None:
        plans[(x_static, w_static)] = make_plan(x_static, w_static)
    dtype = _compute_dtype(np.dtype(ctx.inputs[0].dtype)) if ctx.inputs[0] is not None else None
    if w_const is not None and dtype is not None:
        for key, p in plans.items():
            prepared[(p.method, key[1])] = _prepare_weight(p.method, w_const, group, dtype)
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
        wp = prepared.get((p.method, w.shape)) if w is w_const else None
        if wp is None:
            wp = _prepare_weight(p.method, w, group, cdt)
            if w is w_const:
                prepared[(p.method, w.shape)] = wp
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

    return conv_fn


@kernel("Conv", attrs=CONV_ATTRS)
def conv(ctx: OpContext, **attrs):
    return build_conv(ctx, attrs)


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
        cols, buf = scratch(((nb, group, wp.shape[1], xg.shape[-1]), cdt), (buf_shape, cdt))
        np.matmul(wp, xg, out=cols)
        m = out_shape[1]
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
