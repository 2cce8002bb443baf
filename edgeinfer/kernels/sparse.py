"""Sparse weight kernels for ``y = x @ W.T`` (W of shape ``[N, K]``, most entries zero), and the
measured rule that says when one of them beats dense BLAS on the cpu backend.

Magnitude pruning (:func:`converters.prune.prune_magnitude`) leaves unstructured zeros: every row
and every column keeps a few survivors, so a dense kernel cannot skip anything and the only way to
save work is to touch the nonzeros one by one. In numpy that means a gather (``x[:, indices]``),
a multiply and a segmented sum (``np.add.reduceat`` or ``np.bincount``): three passes over
``nnz`` elements with no SIMD reuse of ``x``, against BLAS, which streams W once at near-peak
FLOPs. The formats here are the candidates measured by ``benchmarks/sparse_kernels.py``:

* :class:`CsrWeight` / :func:`csr_matmul`: row-compressed, gather-multiply-reduceat, chunked so the
  ``(nnz, M)`` temporary stays bounded;
* :func:`coo_bincount_matvec`: batch 1 only, one weighted ``np.bincount`` over the row ids;
* :class:`ColumnBlockedCsr` / :func:`colblock_matmul`: CSR per block of K columns so the gathered
  slice of ``x`` stays in cache (what helps scalar CSR code in C);
* :class:`CompactWeight` / :func:`compact_matmul`: drop all-zero rows and columns, then dense BLAS
  on what is left (exact, and free when nothing is dropped: it is just the dense product).

:func:`use_sparse` is the decision rule derived from those measurements (see its docstring and
``benchmarks/results/sparse_kernels.json``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

# largest (nnz x M) temporary a CSR product makes at once, in elements (16 MiB of float32):
# bounded so batch 64 of a 4096x4096 layer does not allocate gigabytes
_CHUNK_ELEMENTS = 1 << 22


def _check_weight(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype.kind != "f":
        raise InputError(f"sparse weight must be a 2-D float array [N, K], got {w.dtype} {list(w.shape)}")
    return w


def _check_input(x: np.ndarray, k: int, what: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != k:
        raise InputError(f"{what}: input must be [M, {k}], got {list(x.shape)}")
    return x


# ------------------------------------------------------------------------------------ CSR
@dataclass(frozen=True)
class CsrWeight:
    """W [N, K] by rows; only rows with a nonzero are kept (``rows``), because ``reduceat`` over
    an empty segment returns the next element instead of 0."""

    shape: tuple[int, int]
    rows: np.ndarray      # int64 [R]: the nonempty rows of W
    starts: np.ndarray    # int64 [R + 1]: segment bounds of each kept row in indices/data
    indices: np.ndarray   # intp [nnz]: column of each nonzero
    data: np.ndarray      # [nnz]: the nonzero values
    dense_rows: bool      # every row is nonempty: the output needs no scatter

    @classmethod
    def from_dense(cls, w: np.ndarray) -> "CsrWeight":
        w = _check_weight(w)
        r, c = np.nonzero(w)  # row-major order: already sorted by row
        counts = np.bincount(r, minlength=w.shape[0])
        rows = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts[rows])]).astype(np.int64)
        return cls(tuple(w.shape), rows, starts, c.astype(np.intp), w[r, c], rows.size == w.shape[0])

    @property
    def nnz(self) -> int:
        return int(self.data.size)


def csr_matmul(x: np.ndarray, w: CsrWeight) -> np.ndarray:
    """``x @ W.T`` for x [M, K]: gather the inputs each nonzero multiplies, scale, and sum each
    row's segment with ``np.add.reduceat``. Batch > 1 works on ``x.T`` so each gathered element
    is a contiguous row of M values (one memcpy per nonzero, not M strided loads)."""
    n, k = w.shape
    x = _check_input(x, k, "csr_matmul")
    m = x.shape[0]
    y = np.zeros((m, n), np.result_type(x.dtype, w.data.dtype)) if not w.dense_rows else None
    if w.nnz == 0:
        return y
    if m == 1:
        acc = np.add.reduceat(x[0, w.indices] * w.data, w.starts[:-1])
        if y is None:
            return acc[None, :]
        y[0, w.rows] = acc
        return y
    xt = np.ascontiguousarray(x.T)
    acc = np.empty((w.rows.size, m), y.dtype if y is not None else np.result_type(x.dtype, w.data.dtype))
    # row groups whose nonzeros fit the chunk budget (at least one row per group)
    per = max(1, _CHUNK_ELEMENTS // m)
    r0 = 0
    nr = w.rows.size
    while r0 < nr:
        r1 = int(np.searchsorted(w.starts, w.starts[r0] + per, side="right")) - 1
        r1 = min(max(r1, r0 + 1), nr)
        lo, hi = int(w.starts[r0]), int(w.starts[r1])
        prod = xt[w.indices[lo:hi]]
        prod *= w.data[lo:hi, None]
        acc[r0:r1] = np.add.reduceat(prod, w.starts[r0:r1] - lo, axis=0)
        r0 = r1
    if y is None:
        return np.ascontiguousarray(acc.T)
    y[:, w.rows] = acc.T
    return y


def coo_bincount_matvec(x: np.ndarray, w: CsrWeight, row_ids: np.ndarray) -> np.ndarray:
    """``x @ W.T`` for a single row x [1, K]: ``np.bincount(row_ids, x[indices] * data)``.
    ``row_ids`` is the row of each nonzero (:func:`csr_row_ids`). bincount sums in float64, so
    the result is cast back to x's dtype."""
    n, k = w.shape
    x = _check_input(x, k, "coo_bincount_matvec")
    if x.shape[0] != 1:
        raise InputError(f"coo_bincount_matvec: batch must be 1, got {x.shape[0]}")
    y = np.bincount(row_ids, weights=x[0, w.indices] * w.data, minlength=n)
    return y.astype(np.result_type(x.dtype, w.data.dtype), copy=False)[None, :]


def csr_row_ids(w: CsrWeight) -> np.ndarray:
    """The row of each nonzero of ``w`` (COO row array), for :func:`coo_bincount_matvec`."""
    return np.repeat(w.rows, np.diff(w.starts))


# ------------------------------------------------------------------------ column-blocked CSR
@dataclass(frozen=True)
class ColumnBlockedCsr:
    """W split into blocks of ``block`` columns, one :class:`CsrWeight` each; the partial
    products are summed. The gather of each block reads a slice of x that fits in L1/L2."""

    shape: tuple[int, int]
    block: int
    parts: tuple[CsrWeight, ...]

    @classmethod
    def from_dense(cls, w: np.ndarray, block: int = 256) -> "ColumnBlockedCsr":
        w = _check_weight(w)
        parts = tuple(CsrWeight.from_dense(w[:, c:c + block]) for c in range(0, w.shape[1], block))
        return cls(tuple(w.shape), block, parts)


def colblock_matmul(x: np.ndarray, w: ColumnBlockedCsr) -> np.ndarray:
    """``x @ W.T`` as the sum over column blocks of CSR products on the matching slice of x."""
    x = _check_input(x, w.shape[1], "colblock_matmul")
    y = None
    for i, part in enumerate(w.parts):
        c = i * w.block
        p = csr_matmul(x[:, c:c + w.block], part)
        if y is None:
            y = p if p.flags.writeable and p.base is None else p.copy()
        else:
            y += p
    return y


# ----------------------------------------------------------------- drop zero rows / columns
@dataclass(frozen=True)
class CompactWeight:
    """W with its all-zero rows and columns removed; dense BLAS runs on the rest."""

    shape: tuple[int, int]
    rows: np.ndarray | None   # kept rows, None when all are kept
    cols: np.ndarray | None   # kept columns, None when all are kept
    w_t: np.ndarray           # [K', N'] contiguous: x[:, cols] @ w_t

    @classmethod
    def from_dense(cls, w: np.ndarray) -> "CompactWeight":
        w = _check_weight(w)
        nz = w != 0
        rows, cols = np.flatnonzero(nz.any(axis=1)), np.flatnonzero(nz.any(axis=0))
        rows = None if rows.size == w.shape[0] else rows
        cols = None if cols.size == w.shape[1] else cols
        sub = w if rows is None else w[rows]
        sub = sub if cols is None else sub[:, cols]
        return cls(tuple(w.shape), rows, cols, np.ascontiguousarray(sub.T))


def compact_matmul(x: np.ndarray, w: CompactWeight) -> np.ndarray:
    """``x @ W.T`` from the compacted weight: exact, because the dropped rows give 0 and the
    dropped columns multiply only zeros."""
    x = _check_input(x, w.shape[1], "compact_matmul")
    xs = x if w.cols is None else x[:, w.cols]
    if w.rows is None:
        return xs @ w.w_t
    y = np.zeros((x.shape[0], w.shape[0]), np.result_type(x.dtype, w.w_t.dtype))
    y[:, w.rows] = xs @ w.w_t
    return y


# ---------------------------------------------------------------------------- the rule
def use_sparse(shape: tuple[int, int], sparsity: float, batch: int) -> bool:
    """Whether :func:`csr_matmul` should replace dense BLAS for a constant weight of ``shape``
    ``[N, K]`` with the given fraction of zeros, at ``batch`` rows of input (one BLAS thread).

    From benchmarks/results/sparse_kernels.json (OpenBLAS 0.3.31 SkylakeX kernel, numpy 2.4,
    median of 15 interleaved rounds): numpy's gather + reduceat costs ~10x BLAS per multiply-add,
    so CSR only wins where dense is memory-bound (batch 1-8, W read once per row of x) and
    almost nothing is left to gather:

    * batch 1, sparsity >= 0.99, K >= 1024, N*K >= 256K: CSR 1.6x (256x1024) to 7.6x (4096x4096);
    * batch 1, sparsity >= 0.95, K >= 4096, N*K >= 16M: 1.65x at 4096x4096 (1.32x at 1024x4096 and
      0.93x at 4096x1024 are too close to call, so they stay dense);
    * batch 2-8, sparsity >= 0.99, K >= 1024, N*K >= 1M: 1.4x (1024x1024) to 3.1x at batch 8;
    * everything else is dense: at sparsity <= 0.9 dense wins everywhere measured (CSR 0.02x to
      0.76x), K = 256 rows hold ~3 nonzeros and reduceat's per-row cost loses, and at batch 64
      even 99% sparse is only 0.6x-1.3x.
    """
    n, k = int(shape[0]), int(shape[1])
    if batch < 1 or batch > 8 or k < 1024:
        return False
    if batch == 1:
        return (sparsity >= 0.99 and n * k >= 1 << 18) or (sparsity >= 0.95 and k >= 4096 and n * k >= 1 << 24)
    return sparsity >= 0.99 and n * k >= 1 << 20


def bind_sparse(w_kn: np.ndarray, batch) -> CsrWeight | None:
    """The CSR form of a constant weight ``w_kn`` [K, N] (the right operand of ``x @ w_kn``)
    when :func:`use_sparse` says it is faster at the static ``batch``; None otherwise (and
    always for a symbolic batch: the rule is only known to hold for the batches measured)."""
    if not isinstance(batch, int) or w_kn.ndim != 2 or w_kn.dtype not in (np.float32, np.float64):
        return None
    k, n = w_kn.shape
    if not use_sparse((n, k), 1.0, batch):  # the shape alone rules it out: skip counting zeros
        return None
    if not use_sparse((n, k), 1.0 - np.count_nonzero(w_kn) / max(w_kn.size, 1), batch):
        return None
    return CsrWeight.from_dense(w_kn.T)
