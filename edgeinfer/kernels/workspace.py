"""The per-thread workspace kernels carve their temporaries from (:func:`scratch`).

Views of it that a kernel needs on every call are made once (:func:`scratch_views`): at
~1-5 us each, views and small numpy calls are a large part of a small conv's time. The
convolution methods (:mod:`.conv_methods`), the pools and the activations use it.
"""
from __future__ import annotations

import math
import threading
from typing import Callable

import numpy as np


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
