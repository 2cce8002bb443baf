"""How each convolution method of :mod:`.conv` runs: its plan (:class:`ConvPlan`, with the
stride-phase layout :class:`_PhaseGrid` or the channels-last geometry :class:`_ChannelsLast`),
the weight laid out for it once (:func:`prepare_weight`), and its runner (:data:`METHODS`:
``run(plan, x, prepared_weight, out)``):

* ``pointwise`` (:func:`_run_pointwise`, and :func:`pointwise_channels_last` between layouts);
* ``depthwise_nhwc`` (:func:`run_depthwise_nhwc`, geometry from :func:`channels_last`);
* ``depthwise_phased``, ``tap_gemm`` and ``tap_stacked`` on the stride-phase layout
  (:func:`phase_grid`, :func:`_to_phases`);
* ``im2col`` (:func:`_run_im2col`);
* ``winograd``: F(2x2, 3x3) in bands of tile rows (:mod:`.winograd`).

Which method a conv gets is decided in :mod:`.conv` (``_choose_method``). Temporaries come
from the per-thread workspace (:mod:`.workspace`).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .window import Window, padded_shape
from .winograd import WinogradGeometry, prepare_winograd_weight, run_winograd
from .workspace import scratch, scratch_views


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
    ``period`` columns (see :func:`run_depthwise_nhwc`). A step is a phase, or a band of
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
class ConvPlan:
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
    # strided im2col: the column blocks copied from the stride phases (:func:`phase_columns`)
    columns: "_PhaseColumns | None" = None
    # winograd: tiles and bands (:func:`.winograd.plan_winograd`)
    winograd: WinogradGeometry | None = None


@dataclass
class _PhaseColumns:
    """How a strided im2col gathers its columns from the stride-phase layout (:class:`_PhaseGrid`).

    The kernel taps that read the same phase are evenly spaced on its grid, so each such set
    is one strided view of the phase (per axis: taps, then outputs, both at fixed steps)
    whose innermost axis reads contiguous values. The columns are stored block by block in
    that order, and the weight's columns are permuted to match (``order``), so one copy per
    phase replaces im2col's copy through stride-``s`` innermost reads (2x faster on 7x7/2
    and 3x3/2 stems).
    """

    # per block: (phase, flat offset of its first tap, taps per axis, tap step per axis
    # (grid elements), first column row, end column row), rows counted per input channel
    blocks: list[tuple[int, int, tuple[int, ...], tuple[int, ...], int, int]]
    order: np.ndarray  # weight column (channel-major, taps row-major) of each column row


# one GEMM of all taps' weights per block of this many padded pixels (tap_stacked)
_STACKED_BLOCK = 4096


def phase_grid(win: Window, spatial: tuple[int, ...], outs, begins) -> _PhaseGrid:
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


def phase_columns(win: Window, f: _PhaseGrid, channels: int) -> _PhaseColumns:
    """The column blocks of a strided im2col over the phase layout ``f`` (``channels`` per group)."""
    n = win.n
    pitch = [int(np.prod(f.grid_shape[i + 1:])) for i in range(n)]
    per_axis = []  # per axis: {phase: (taps, grid rows they read)}
    for k, dl, st in zip(win.kernel, win.dilations, win.strides):
        by_phase: dict[int, tuple[list, list]] = {}
        for t in range(k):
            taps, rows = by_phase.setdefault((t * dl) % st, ([], []))
            taps.append(t), rows.append((t * dl) // st)
        per_axis.append(sorted(by_phase.items()))
    blocks, order, r0 = [], [], 0
    taps_per_channel = math.prod(win.kernel)
    for combo in itertools.product(*per_axis):
        phase = int(np.ravel_multi_index([ph for ph, _ in combo], win.strides))
        counts = tuple(len(taps) for _, (taps, _) in combo)
        # taps of one phase are evenly spaced: one step per axis
        steps = tuple((rows[1] - rows[0]) * pt if len(rows) > 1 else 0 for (_, (_, rows)), pt in zip(combo, pitch))
        offset = sum(rows[0] * pt for (_, (_, rows)), pt in zip(combo, pitch))
        taps = [np.ravel_multi_index(t, win.kernel) for t in itertools.product(*[tp for _, (tp, _) in combo])]
        order += [c * taps_per_channel + t for c in range(channels) for t in taps]
        r1 = r0 + channels * math.prod(counts)
        blocks.append((phase, offset, counts, steps, r0, r1))
        r0 = r1
    return _PhaseColumns(blocks, np.array(order, np.intp))


def channels_last(win: Window, spatial: tuple[int, int], outs, begins, channels: int) -> _ChannelsLast:
    (h, w), (bh, bw) = spatial, begins
    (sh, sw), (dh, dw) = win.strides, win.dilations
    hp = max(h + bh, (outs[0] - 1) * sh + win.extent(0))
    wp = max(w + bw, (outs[1] - 1) * sw + win.extent(1))

    def touches(t: int, dl: int, st: int, b: int, d: int, o: int) -> bool:
        # does kernel tap t read a real (not padding) input row for some output row?
        first = t * dl - b  # input row read by output 0; output q reads first + q * st
        q = 0 if first >= 0 else -(first // st)  # the first output reading row >= 0
        return q < o and first + q * st < d

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
        # output rows q in [lo, hi) read a real input row through tap row i
        spans = {i: (max(0, -((i * dh - bh) // sh)), min(ho, (h + bh - i * dh - 1) // sh + 1)) for i in rows_k}
        cuts = sorted({0, ho} | {min(max(x, 0), ho) for span in spans.values() for x in span})
        groups: list[tuple[int, int, tuple]] = []
        for a, b in zip(cuts, cuts[1:]):
            v = tuple(i for i in rows_k if spans[i][0] <= a and b <= spans[i][1])
            if groups and groups[-1][2] == v:
                groups[-1] = (groups[-1][0], b, v)
            else:
                groups.append((a, b, v))
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


def prepare_weight(plan: "ConvPlan", w: np.ndarray, dtype):
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
    if method == "winograd":
        return prepare_winograd_weight(w, dtype)
    if method == "tap_stacked":  # (taps * M, C), tap-major rows
        return np.ascontiguousarray(w.reshape(m, w.shape[1], taps).transpose(2, 0, 1).reshape(taps * m, -1))
    if plan.columns is not None:  # strided im2col: columns in phase-block order
        w = w.reshape(m, -1)[:, plan.columns.order]
    if group == 1:
        return np.ascontiguousarray(w.reshape(m, -1))
    return np.ascontiguousarray(w.reshape(group, m // group, -1))


def pointwise_shapes(x_shape: tuple, out_shape: tuple, win: Window, group: int):
    """(input subsampling index or None, (GEMM input shape, GEMM output shape)) of a 1x1 conv;
    grouped: one GEMM per group, batched, straight from the input."""
    sub = None
    if any(s != 1 for s in win.strides):
        sub = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in win.strides)
    n, c, m = x_shape[0], x_shape[1], out_shape[1]
    if group == 1:
        return sub, ((n, c, -1), (n, m, -1))
    return sub, ((n, group, c // group, -1), (n, group, m // group, -1))


def _run_pointwise(p: ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    if p.subsample is not None:
        x = x[p.subsample]
    xs, ys = p.gemm_shapes
    np.matmul(wp, x.reshape(xs), out=out.reshape(ys))


try:  # einsum's C entry point: np.einsum adds argument parsing on every call
    from numpy._core.multiarray import c_einsum as _c_einsum
except ImportError:  # numpy < 2
    from numpy.core.multiarray import c_einsum as _c_einsum


def run_depthwise_nhwc(p: ConvPlan, x: np.ndarray, wp: list, out: np.ndarray) -> None:
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
    if p.in_nhwc:
        np.copyto(interior, x)
    else:
        _to_channels_last(x, interior)
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


# numpy transposes (N, C, H, W) to channels-last by reading C values H*W apart for every
# pixel; in blocks of a few channels its copy loop runs 2-3x faster once the planes are large
# (measured: 24x128x128 0.52 -> 0.22 ms, 32x160x160 1.6 -> 0.5 ms; below 32x32 planes or
# with few channels one copy is as fast).
_TRANSPOSE_BLOCK = 8
_TRANSPOSE_MIN_PLANE = 1024


def _to_channels_last(x: np.ndarray, dst: np.ndarray) -> None:
    """``dst[n, h, w, c] = x[n, c, h, w]``."""
    c = x.shape[1]
    if c <= _TRANSPOSE_BLOCK or x.shape[2] * x.shape[3] < _TRANSPOSE_MIN_PLANE:
        np.copyto(dst, x.transpose(0, 2, 3, 1))
        return
    for c0 in range(0, c, _TRANSPOSE_BLOCK):
        np.copyto(dst[..., c0:c0 + _TRANSPOSE_BLOCK], x[:, c0:c0 + _TRANSPOSE_BLOCK].transpose(0, 2, 3, 1))


def _nhwc_views(p: ConvPlan, hw: tuple, arrays: list) -> tuple:
    """Everything :func:`run_depthwise_nhwc` reads and writes, as views of its scratch."""
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


def _run_depthwise_phased(p: ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
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


def _run_tap_gemm(p: ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
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


def _run_tap_stacked(p: ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
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


def _run_im2col(p: ConvPlan, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    n, c = x.shape[:2]
    g = p.group
    rows = c // g * math.prod(p.win.kernel)
    npix = math.prod(p.out_shape[2:])
    if p.columns is not None:
        specs = ((_phases_shape(x.shape, p.flat), x.dtype), ((n, g * rows, npix), x.dtype))
        xf, copies, gemm_cols = scratch_views(specs, p, functools.partial(_phase_column_views, p, x.shape))
        _to_phases(x, p.flat, xf)
        for dst, src in copies:
            np.copyto(dst, src)
        np.matmul(wp, gemm_cols, out=out.reshape((n, out.shape[1], npix) if g == 1 else (n, g, -1, npix)))
        return
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


def _phase_column_views(p: ConvPlan, x_shape: tuple, arrays: list) -> tuple:
    """(phase buffer, [(column block, phase view)], GEMM operand) of a strided im2col."""
    xf, cols = arrays
    n, c = x_shape[:2]
    g, f, outs = p.group, p.flat, p.out_shape[2:]
    cg = c // g
    pitch = [int(np.prod(f.grid_shape[i + 1:])) for i in range(len(outs))]
    item = xf.itemsize
    blocks = cols.reshape(n, g, -1, math.prod(outs))
    copies = []
    for phase, offset, counts, steps, r0, r1 in p.columns.blocks:
        src = xf[phase, :, :, offset:]
        sn, sc = src.strides[:2]
        view = as_strided(src, (n, g, cg) + counts + outs,
                          (sn, sc * cg, sc) + tuple(st * item for st in steps) + tuple(pt * item for pt in pitch),
                          writeable=False)
        copies.append((blocks[:, :, r0:r1].reshape((n, g, cg) + counts + outs), view))
    return xf, copies, cols if g == 1 else blocks


def _im2col_strides(p: ConvPlan, strides: tuple | None, x: np.ndarray) -> tuple:
    """Strides of the (N, G, C/G, *kernel, *outs) column view of an array with ``strides``."""
    if strides is None:
        strides = np.ascontiguousarray(x).strides
    sn, sc, sp = strides[0], strides[1], strides[2:]
    c = x.shape[1]
    win = p.win
    return ((sn, sc * (c // p.group), sc) + tuple(d * s for d, s in zip(win.dilations, sp))
            + tuple(st * s for st, s in zip(win.strides, sp)))


def _im2col_views(p: ConvPlan, x_shape: tuple, arrays: list) -> tuple:
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


METHODS = {
    "pointwise": _run_pointwise,
    "depthwise_phased": _run_depthwise_phased,
    "depthwise_nhwc": run_depthwise_nhwc,
    "tap_gemm": _run_tap_gemm,
    "tap_stacked": _run_tap_stacked,
    "im2col": _run_im2col,
    "winograd": run_winograd,
}


def pointwise_channels_last(p: ConvPlan, c: int) -> Callable:
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
