"""Sliding-window geometry along the spatial axes of an N-C-spatial tensor, shared by the
convolutions (:mod:`.conv`) and the pools (:mod:`.pool`): :class:`Window` (kernel, strides,
dilations, pads and auto_pad of one node, and the output sizes and padding they give),
:func:`int_list` (an int-list attribute, validated) and :func:`pad_spatial` (zero-padding of
the spatial axes).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .registry import OpContext

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


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
