"""Mutations of real .tflite files for the fuzz tests (run inside their subprocesses)."""
from __future__ import annotations

import numpy as np


def structure_positions(good: bytes, path: str = "model.tflite") -> np.ndarray:
    """Byte positions outside the weight buffers: the tables, vectors and strings worth mutating."""
    from edgeinfer.converters import tflite_reader as tr

    reader = tr._Reader(good, path)
    reader.model()
    weights = np.zeros(len(good), bool)
    for start, length, _ in reader.buffers:
        weights[start:start + length] = True
    return np.flatnonzero(~weights)


def mutate(good: bytes, structure: np.ndarray, rng: np.random.Generator, edits: int = 5) -> bytes:
    """``good`` with 1 to ``edits - 1`` random edits, mostly in ``structure``: bit flips,
    4-byte words overwritten with telling values, truncation, inserted bytes."""
    data = bytearray(good)
    for _ in range(int(rng.integers(1, edits))):
        kind = rng.integers(4)
        at = int(rng.integers(len(data))) if rng.random() < 0.2 else int(rng.choice(structure))
        at = min(at, max(len(data) - 1, 0))
        if kind == 0 and data:
            data[at] ^= 1 << int(rng.integers(8))
        elif kind == 1 and len(data) >= 4:
            at = min(at // 4 * 4, len(data) - 4)
            word = int(rng.choice([0, 1, 2, 3, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, int(rng.integers(2**32)),
                                   int(rng.integers(4096))]))
            data[at:at + 4] = word.to_bytes(4, "little")
        elif kind == 2 and rng.random() < 0.3:
            data = data[:at]
        else:
            data[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
    return bytes(data)
