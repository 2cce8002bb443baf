"""Shape arithmetic shared by the shape rules: symbolic-aware broadcasting and axis handling.

Dims are ``int`` (known), ``str`` (symbolic) or ``None`` (unknown); see :mod:`edgeinfer.graph`.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import ShapeInferenceError
from ..graph import Dim, Node


def broadcast_dims(a: Dim, b: Dim, node: Node | None = None) -> Dim:
    """The numpy-broadcast of two dims, keeping symbols where the result is certain."""
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, int) and isinstance(b, int):
        if a != b:
            where = f"{node.label}: " if node is not None else ""
            raise ShapeInferenceError(f"{where}cannot broadcast dims {a} and {b}")
        return a
    if a == b:
        return a
    if isinstance(a, int):
        return a  # symbolic b must equal a (or be 1, which broadcasts to a)
    if isinstance(b, int):
        return b
    return None


def broadcast_shapes(shapes: Sequence[tuple | None], node: Node | None = None) -> tuple | None:
    """Multidirectional (numpy) broadcasting of several shapes; ``None`` if any rank is unknown."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = [1] * rank
    for s in shapes:
        padded = (1,) * (rank - len(s)) + tuple(s)
        out = [broadcast_dims(x, y, node) for x, y in zip(out, padded)]
    return tuple(out)


def normalize_axis(axis: int, rank: int, node: Node | None = None, *, allow_end: bool = False) -> int:
    """Map a possibly negative axis into ``[0, rank)`` (``[0, rank]`` with ``allow_end``)."""
    limit = rank + 1 if allow_end else rank
    a = int(axis)
    if a < 0:
        a += limit
    if not 0 <= a < limit:
        where = f"{node.label}: " if node is not None else ""
        raise ShapeInferenceError(f"{where}axis {axis} is out of range for rank {rank}")
    return a


def num_elements(shape: Sequence[Dim]) -> Dim:
    """Product of dims, or ``None`` when any dim is not a known integer."""
    total = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        total *= d
    return total


def is_static(shape: tuple | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)
