"""Histogram calibration: which range of a tensor's values to quantize.

min/max keeps every value and wastes levels on rare outliers; the histogram methods clip them:

* ``percentile``: the range that holds all but ``100 - percentile`` % of the values (split
  between the two tails by their own weight);
* ``mse``: the range minimising the expected squared error: clipping error outside it, plus
  rounding error step²/12 for every value inside;
* ``entropy``: TensorRT's KL-divergence rule, on the side of zero with the larger extreme: the
  threshold ``t`` whose quantized histogram of ``[0, t)`` (that side's share of the 256 uint8
  levels, at least TensorRT's 128) is closest (in KL
  divergence) to the reference with everything beyond ``t`` folded into the last bin; the
  other side is kept whole (asymmetric activations pay nothing for it). Like TensorRT's, it is
  made for CNN activations; it clips attention probabilities hard. Tensors with fewer than
  ``MIN_KL_SAMPLES`` values keep their full range.

A :class:`Histogram` accumulates batches whose range grows: when a batch reaches past the current
edges, the bins are widened by an integer factor and merged, so counts are never re-estimated.
"""
from __future__ import annotations

import numpy as np

BINS = 2048
LEVELS = 256
# Below this many values (100 per level of the 128-level KL grid) entropy keeps the full range: a
# squeeze-excitation branch yields a few hundred values per batch, and KL over such a sparse
# histogram clips a fifth of their range away (PP-OCRv4 rec then reads nothing).
MIN_KL_SAMPLES = 12800


class Histogram:
    """Counts of a tensor's values in ``BINS`` equal bins over ``[lo, hi)`` that widen as needed."""

    def __init__(self, bins: int = BINS):
        self.bins = bins
        self.counts = np.zeros(bins, np.int64)
        self.lo = self.hi = None
        self.seen_lo, self.seen_hi = np.inf, -np.inf

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).ravel()
        x = x[np.isfinite(x)]
        if not x.size:
            return
        a, b = float(x.min()), float(x.max())
        self.seen_lo, self.seen_hi = min(self.seen_lo, a), max(self.seen_hi, b)
        if self.lo is None:
            span = max(b - a, 1e-8)
            self.lo, self.hi = a, a + span * (1 + 1e-6)
        while a < self.lo or b >= self.hi:
            self._widen(a, b)
        idx = ((x - self.lo) * (self.bins / (self.hi - self.lo))).astype(np.int64)
        np.clip(idx, 0, self.bins - 1, out=idx)
        self.counts += np.bincount(idx, minlength=self.bins)

    def _widen(self, a: float, b: float) -> None:
        # double the width towards the side that overflows; merge bin pairs so old counts stay exact
        width = self.hi - self.lo
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts = np.zeros(self.bins, np.int64)
        if a < self.lo:
            self.counts[self.bins // 2:] = merged
            self.lo -= width
        else:
            self.counts[: self.bins // 2] = merged
            self.hi += width

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)


def choose(h: Histogram, method: str, percentile: float = 99.99) -> tuple[float, float]:
    """(lo, hi) of the tensor for ``method``; the result always lies within the values seen."""
    if h.lo is None:
        return 0.0, 0.0
    if method == "percentile":
        return _percentile(h, percentile)
    if method == "mse":
        return _best_range(h, _mse_cost)
    if method == "entropy":
        if h.counts.sum() < MIN_KL_SAMPLES:
            return h.seen_lo, h.seen_hi  # too few values for the histogram to mean anything
        positive = h.seen_hi >= -h.seen_lo
        top, other = (h.seen_hi, -h.seen_lo) if positive else (-h.seen_lo, h.seen_hi)
        # uint8 spends its 256 levels on both sides: the large side gets its share of them
        levels = max(128, int(round((LEVELS - 1) * top / (top + other)))) if top > 0 else 128
        t = max(_kl_threshold(_side_counts(h, positive), top, levels), other)
        return max(-t, h.seen_lo), min(t, h.seen_hi)
    raise ValueError(f"unknown histogram method {method!r}")


def _percentile(h: Histogram, p: float) -> tuple[float, float]:
    c = np.cumsum(h.counts)
    total = c[-1]
    tail = total * (100.0 - p) / 100.0
    e = h.edges()
    lo_i = int(np.searchsorted(c, tail / 2, side="right"))
    hi_i = int(np.searchsorted(c, total - tail / 2, side="left"))
    lo, hi = float(e[min(lo_i, h.bins - 1)]), float(e[min(hi_i + 1, h.bins)])
    return max(lo, h.seen_lo), min(hi, h.seen_hi)


def _candidates(h: Histogram) -> list[tuple[int, int]]:
    """Bin ranges [i, j) to try: the full range shrunk from either side, on a coarse grid (finer
    near the full range), always keeping the bin that holds zero (activations quantize with
    zero exactly representable)."""
    e = h.edges()
    zero = int(np.clip(np.searchsorted(e, 0.0, side="right") - 1, 0, h.bins - 1))
    nz = np.nonzero(h.counts)[0]
    first, last = int(nz[0]), int(nz[-1]) + 1
    steps = np.unique(np.linspace(0, 1, 32) ** 2)
    out = set()
    for s_lo in steps:
        for s_hi in steps:
            i = first + int(round(s_lo * max(zero - first, 0)))
            j = last - int(round(s_hi * max(last - zero - 1, 0)))
            if j - i >= 2:
                out.add((i, j))
    return sorted(out, key=lambda ij: (ij[0] - ij[1], ij[0]))  # widest first: ties keep the wider range


def _best_range(h: Histogram, cost) -> tuple[float, float]:
    e = h.edges()
    centers = (e[:-1] + e[1:]) / 2
    counts = h.counts.astype(np.float64)
    # prefix sums of counts * center^k: the clipping error of any range in O(1)
    pre = [np.concatenate([[0.0], np.cumsum(counts * centers ** k)]) for k in range(3)]
    best, best_cost = None, np.inf
    for i, j in _candidates(h):
        c = cost(counts, pre, e, i, j)
        if c < best_cost:
            best, best_cost = (i, j), c
    i, j = best
    return max(float(e[i]), h.seen_lo), min(float(e[j]), h.seen_hi)


def _mse_cost(counts, pre, e, i, j) -> float:
    lo, hi = e[i], e[j]
    n = len(counts)
    s0, s1, s2 = pre

    def clip(a, b, edge):  # sum over bins [a, b) of count * (center - edge)^2
        return (s2[b] - s2[a]) - 2 * edge * (s1[b] - s1[a]) + edge * edge * (s0[b] - s0[a])

    step = (hi - lo) / (LEVELS - 1)
    inside = s0[j] - s0[i]
    return float(clip(0, i, lo) + clip(j, n, hi) + inside * step * step / 12.0)


def _side_counts(h: Histogram, positive: bool, bins: int = BINS) -> np.ndarray:
    """The counts of one side of zero, re-binned as a histogram of |x| with ``bins`` bins over
    [0, that side's extreme].

    Only the larger side is searched: activations are quantized asymmetrically, so the smaller
    side (a HardSwish's floor of -0.4, say) costs nothing to keep whole, and folding it into
    |x| would let its dense mass near zero pull the threshold below the large side's values."""
    e = h.edges()
    centers = (e[:-1] + e[1:]) / 2
    top = h.seen_hi if positive else -h.seen_lo
    keep = centers > 0 if positive else centers < 0
    if top <= 0 or not keep.any():
        return np.zeros(bins, np.float64)
    idx = np.minimum((np.abs(centers[keep]) / top * bins).astype(np.int64), bins - 1)
    return np.bincount(idx, weights=h.counts[keep].astype(np.float64), minlength=bins)


def _kl_threshold(counts: np.ndarray, top: float, levels: int = 128) -> float:
    """TensorRT's entropy calibration: the |x| threshold minimising KL(P || Q) where P is the
    histogram up to the threshold with the rest folded into its last bin and Q is P's first
    part quantized to ``levels`` groups (each group's mass spread over its non-empty bins)."""
    n = counts.size
    if top <= 0 or counts.sum() <= 0:
        return float(top)
    width = top / n
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = sum(counts[i:])
    best_i, best_kl = n, np.inf
    for i in range(levels, n + 1):
        base = counts[:i]
        p = base.copy()
        p[-1] += tail[i]
        bounds = np.linspace(0, i, levels + 1).astype(np.int64)
        present = (base > 0).astype(np.float64)
        sums, nonempty = np.add.reduceat(base, bounds[:-1]), np.add.reduceat(present, bounds[:-1])
        q = np.repeat(np.where(nonempty > 0, sums / np.maximum(nonempty, 1), 0.0), np.diff(bounds)) * present
        mask = p > 0
        if q.sum() <= 0:
            continue
        ps, qs = p[mask] / p.sum(), q[mask] / q.sum()
        kl = float(np.sum(ps * np.log(ps / np.maximum(qs, 1e-12))))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return float(min((best_i + 0.5) * width, top))
