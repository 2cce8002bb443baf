"""Winograd F(2x2, 3x3) convolution: 3x3 kernels, stride 1, dilation 1, group 1, 2-D.

Each 2x2 block of outputs ("tile") reads a 4x4 patch ``d`` of the padded input; with the
transforms ``V = B^T d B`` (input), ``U = G g G^T`` (weights, once at prepare time) and
``Y = A^T [sum_c U * V] A`` (output), a tile costs 16 multiply-adds per (input, output)
channel pair instead of 36: 2.25x fewer than im2col/tap_gemm. The 16 transform points are 16
independent GEMMs, ``(16, M, C) @ (16, C, tiles)``, one batched ``np.matmul``.

Why in bands: the transforms are additions over whole arrays, memory-bound; done over the
whole image they stream ~4x the input through memory several times (measured: half the time
of a 64->192 layer at 56x56). The output is computed in bands of tile rows (:func:`plan_winograd`
sizes them) whose transformed input and GEMM result stay in L2 between the transform, the
GEMM and the inverse transform. Odd output sizes compute the last half tile over zero
padding and write only the rows and columns that exist.

Why not F(4x4, 3x3) (4x fewer multiply-adds): its transforms have entries up to 8 and its
float32 error is ~1e-4 relative on random data, beyond what the engine allows elsewhere.

Errors: the transforms of F(2x2, 3x3) have entries 0, +-1 and +-1/2 (exact in binary), so the
result differs from a direct sum only by rounding order (~1e-6 relative in float32).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numpy.lib.stride_tricks import as_strided

from .workspace import scratch_views

# G of F(2, 3): the weight transform; B^T and A^T are spelled out as adds in the runner
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_KRON_G = np.kron(_G, _G)  # (16, 9): the 3x3 weights of one channel pair, flattened, to the 16 points
# A^T (x) A^T of the output transform: row 2i + j maps the 16 points to output (i, j) of a tile
_A = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]])
_A_T = {np.dtype(dt): np.einsum("ia,jb->ijab", _A, _A).reshape(4, 16).astype(dt) for dt in (np.float32, np.float64)}

# A band's buffers (transformed input, GEMM result, output tiles) are kept under this many
# bytes so they stay in L2 (2 MB on the measured machine) between the steps, and a band has
# at least this many tiles so its GEMMs stay long enough for BLAS.
_BAND_BYTES = 1 << 20
_BAND_MIN_TILES = 96


@dataclass
class WinogradGeometry:
    """Tiles and bands of one F(2x2, 3x3) convolution."""

    tiles: tuple[int, int]  # tile rows, tile columns (ceil of the output size / 2)
    padded: tuple[int, int]  # 2 * tiles + 2: the zero-padded input the tiles read
    begins: tuple[int, int]  # where the input sits in it
    outs: tuple[int, int]
    bands: list[tuple[int, int]]  # (first tile row, end tile row)


def winograd_ok(x_shape, w_shape, win, group: int) -> bool:
    """Whether the Winograd method can run this conv."""
    return (win.n == 2 and group == 1 and tuple(win.kernel) == (3, 3) and all(s == 1 for s in win.strides)
            and all(d == 1 for d in win.dilations))


def plan_winograd(x_shape: tuple, w_shape: tuple, outs: tuple, begins: tuple, itemsize: int = 4) -> WinogradGeometry:
    c, m = x_shape[1], w_shape[0]
    th, tw = -(-outs[0] // 2), -(-outs[1] // 2)
    per_row = (24 * c + 20 * m) * (tw + 1) * itemsize  # a tile row's share of the band's buffers
    rows = max(1, _BAND_BYTES // per_row, -(-_BAND_MIN_TILES // tw))
    n_bands = -(-th // min(rows, th))
    step = -(-th // n_bands)  # even bands: no short last GEMM
    bands = [(r, min(r + step, th)) for r in range(0, th, step)]
    return WinogradGeometry((th, tw), (2 * th + 2, 2 * tw + 2), tuple(begins), tuple(outs), bands)


def prepare_winograd_weight(w: np.ndarray, dtype) -> np.ndarray:
    """``U = G w G^T`` as (16, M, C) in ``dtype``."""
    # G w G^T of every (M, C) pair as one GEMM with kron(G, G), oriented (16, 9) @ (9, M C) so
    # that the result is already (16, M, C), in the compute dtype: 4 ms for a 512x512 layer in
    # float32, against 12 ms through float64 and 80 ms for (M C, 9) @ (9, 16) plus the
    # transposing copy (einsum or batched 4x3 matmuls: 0.2-1 s). G's entries are 0, 1 and 1/2,
    # so float32 adds at most a rounding or two of the sum of nine terms (~5e-7 relative).
    m, c = w.shape[:2]
    wt = np.ascontiguousarray(w.reshape(m * c, 9).T, dtype=dtype)  # (9, M C)
    return (_KRON_G.astype(dtype) @ wt).reshape(16, m, c)


def run_winograd(p, x: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
    g: WinogradGeometry = p.winograd
    n, c = x.shape[:2]
    m = wp.shape[1]
    (th, tw), pitch = g.tiles, g.tiles[1] + 1
    rows = max(b - a for a, b in g.bands)
    dt = x.dtype
    specs = (((4 * n * c * (th + 1) * pitch + 1,), dt), ((8 * c * (rows + 1) * pitch,), dt),
             ((16 * c * rows * pitch,), dt), ((16 * m * rows * pitch,), out.dtype), ((4 * m * rows * pitch,), out.dtype))
    borders, copies, steps = scratch_views(specs, g, lambda arrays: _views(g, x.shape, m, arrays))
    for b in borders:
        b.fill(0)
    for dst, src in copies:
        np.copyto(dst, x[src])
    a_t = _A_T[out.dtype]
    ho, wo = g.outs
    full = ho // 2  # tile rows whose two output rows both exist
    for b in range(n):
        out_b = out[b]
        pairs = out_b[:, :2 * full].reshape(m, full, 2, wo).transpose(2, 0, 1, 3)  # (i, M, tile row, Wo)
        for (r0, r1), (e, e1, o, o1, col, rows_in, v, v4, mm, mm2, y, y5) in zip(g.bands, steps[b]):
            # V = B^T d B: columns (on whole rows of the column phases), then rows
            np.subtract(e, e1, out=col[0])
            np.add(o, e1, out=col[1])
            np.subtract(e1, o, out=col[2])
            np.subtract(o, o1, out=col[3])
            np.subtract(rows_in[0], rows_in[2], out=v4[0])
            np.add(rows_in[1], rows_in[2], out=v4[1])
            np.subtract(rows_in[2], rows_in[1], out=v4[2])
            np.subtract(rows_in[1], rows_in[3], out=v4[3])
            np.matmul(wp, v, out=mm)
            # Y = A^T M A as one (4, 16) GEMM over the points: 2x faster than the adds, which
            # read and write M's 16 planes several times
            np.matmul(a_t, mm2, out=y)
            k = min(r1, full) - r0
            for j, width in ((0, tw), (1, wo // 2)):
                if k > 0 and width:
                    np.copyto(pairs[:, :, r0:r0 + k, j::2], y5[:, j, :, :k, :width])
                if r1 > full and width:  # an odd output height: the last tile row has row 2r only
                    np.copyto(out_b[:, 2 * full, j::2], y5[0, j, :, k, :width])


def _views(g: WinogradGeometry, x_shape: tuple, m: int, arrays: list) -> tuple:
    """(zero borders of the padded phases, (phase view, input index) copies, per image per
    band: the views its steps read and write).

    The padded input is kept as its four (row, column) parity phases, (2 column phases, N, C,
    2 row phases, th + 1, tw + 1), so that the column transform reads whole rows of one
    column phase at offsets 0 and 1, contiguous and SIMD-friendly, instead of stride-2
    columns, and the row transform reads rows of one row phase. Each row then carries one
    column of garbage (a tile past the image) through the GEMM, never written out."""
    xq, col_buf, v_buf, m_buf, y_buf = arrays
    n, c, h, w = x_shape
    (bh, bw), (th, tw) = g.begins, g.tiles
    pitch = tw + 1
    slab = (th + 1) * pitch
    phases = xq[:-1].reshape(2, n, c, 2, th + 1, pitch)
    borders, copies = [], []
    for rp in range(2):
        r0 = (rp - bh) % 2  # first input row landing in this row phase
        nr, dr = len(range(r0, h, 2)), (r0 + bh) // 2
        for cp in range(2):
            c0 = (cp - bw) % 2
            nc, dc = len(range(c0, w, 2)), (c0 + bw) // 2
            ph = phases[cp, :, :, rp]
            borders += [ph[:, :, :dr], ph[:, :, dr + nr:], ph[:, :, dr:dr + nr, :dc], ph[:, :, dr:dr + nr, dc + nc:]]
            src = (slice(None), slice(None), slice(r0, None, 2), slice(c0, None, 2))
            copies.append((ph[:, :, dr:dr + nr, dc:dc + nc], src))
    borders = [v for v in borders if v.size]
    item = xq.itemsize
    steps = []
    for b in range(n):
        per_band = []
        for r0, r1 in g.bands:
            r = r1 - r0
            length = (r + 1) * pitch  # the band's tile rows and the next one, per row phase
            span = r * pitch

            def phase_rows(cp: int, shift: int) -> np.ndarray:
                # (C, row phase, length) from row r0 of image b's column phase cp; the
                # shifted read of the last row's garbage column may reach the next slab
                base = xq[(cp * n + b) * c * 2 * slab + r0 * pitch + shift:]
                return as_strided(base, (c, 2, length), (2 * slab * item, slab * item, item), writeable=False)

            col = col_buf[:8 * c * length].reshape(4, c, 2, length)
            rows_in = [col[:, :, i % 2, (i // 2) * pitch:(i // 2) * pitch + span] for i in range(4)]
            v = v_buf[:16 * c * span].reshape(16, c, span)
            mm = m_buf[:16 * m * span].reshape(16, m, span)
            y = y_buf[:4 * m * span].reshape(4, m * span)
            per_band.append((phase_rows(0, 0), phase_rows(0, 1), phase_rows(1, 0), phase_rows(1, 1), col, rows_in,
                             v, v.reshape(4, 4, c, span), mm, mm.reshape(16, m * span), y, y.reshape(2, 2, m, r, pitch)))
        steps.append(per_band)
    return borders, copies, steps
