"""A bounds-checked flexbuffers decoder: :func:`decode_flexbuffer` (TFLite custom options).

Every read is checked against the data, nesting is limited to ``_FLEX_MAX_DEPTH`` levels and
element visits to a budget, so that shared offsets cannot inflate a small blob; every problem
raises :class:`~edgeinfer.errors.ModelFormatError`.
"""
from __future__ import annotations

from typing import Any

from edgeinfer.errors import ModelFormatError

from .flatbuffer_walker import _F32, _F64


_FLEX_MAX_DEPTH = 64  # as the flatbuffer depth limit; real custom options nest 1-2 levels


class _Flex:
    """A bounds-checked flexbuffers reader (the format of TFLite custom options)."""

    def __init__(self, data: bytes, where: str):
        self.data, self.where = data, where
        self.budget = 16 * len(data) + 1024  # element visits; shared offsets cannot inflate past it

    def error(self, message: str) -> ModelFormatError:
        return ModelFormatError(f"{self.where}: {message}")

    def read_uint(self, pos: int, width: int) -> int:
        if width not in (1, 2, 4, 8):
            raise self.error(f"invalid byte width {width}")
        if pos < 0 or pos + width > len(self.data):
            raise self.error(f"{width}-byte value at byte {pos} lies outside the {len(self.data)} bytes")
        return int.from_bytes(self.data[pos:pos + width], "little")

    def read_int(self, pos: int, width: int) -> int:
        v = self.read_uint(pos, width)
        return v - (1 << (8 * width)) if v >> (8 * width - 1) else v

    def read_float(self, pos: int, width: int) -> float:
        if width not in (4, 8):
            raise self.error(f"a float of {width} bytes at byte {pos}")
        self.read_uint(pos, width)  # bounds
        return (_F32 if width == 4 else _F64).unpack_from(self.data, pos)[0]

    def indirect(self, pos: int, width: int) -> int:
        target = pos - self.read_uint(pos, width)
        if not 0 <= target <= pos:  # offsets point backwards (0 for an empty vector right after its size)
            raise self.error(f"offset at byte {pos} points to byte {target}")
        return target

    def sized(self, target: int, width: int, elem: int, extra_per: int = 0) -> int:
        size = self.read_uint(target - width, width)
        if target + size * (elem + extra_per) > len(self.data):
            raise self.error(f"a {size}-element vector at byte {target} runs past the end")
        self.budget -= size + 1
        if self.budget < 0:
            raise self.error("too many elements (shared offsets used to inflate the data)")
        return size

    def text(self, start: int, end: int, as_key: bool) -> str | bytes:
        raw = self.data[start:end]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if as_key:
                raise self.error(f"map key at byte {start} is not valid UTF-8") from None
            return raw  # e.g. a serialized NodeDef of a Flex op

    def key(self, target: int) -> str:
        end = self.data.find(b"\0", target)
        if end < 0:
            raise self.error(f"key at byte {target} is not NUL-terminated")
        return self.text(target, end, True)

    def value(self, pos: int, parent_width: int, packed: int, depth: int) -> Any:
        if depth > _FLEX_MAX_DEPTH:
            raise self.error(f"nested more than {_FLEX_MAX_DEPTH} levels deep")
        kind, width = packed >> 2, 1 << (packed & 3)
        if kind == 0:
            return None
        if kind == 1:
            return self.read_int(pos, parent_width)
        if kind == 2:
            return self.read_uint(pos, parent_width)
        if kind == 3:
            return self.read_float(pos, parent_width)
        if kind == 26:
            return self.read_uint(pos, parent_width) != 0
        target = self.indirect(pos, parent_width)
        if kind == 4:
            return self.key(target)
        if kind in (5, 25):  # string (NUL-terminated), blob
            size = self.sized(target, width, 1, 0)
            if kind == 25:
                return self.data[target:target + size]
            if target + size >= len(self.data) or self.data[target + size] != 0:
                raise self.error(f"string at byte {target} is not NUL-terminated")
            return self.text(target, target + size, False)
        if kind in (6, 7, 8):
            return (self.read_int, self.read_uint, self.read_float)[kind - 6](target, width)
        if kind == 9:
            return self.map(target, width, depth)
        if kind == 10:
            size = self.sized(target, width, width, 1)
            types = self.data[target + size * width:target + size * width + size]
            return [self.value(target + i * width, width, types[i], depth + 1) for i in range(size)]
        if kind in (11, 12, 13, 14, 15, 36):  # typed vectors
            elem = {11: 1, 12: 2, 13: 3, 14: 4, 15: 5, 36: 26}[kind]
            size = self.sized(target, width, width)
            return [self.value(target + i * width, width, (elem << 2) | (packed & 3), depth + 1) for i in range(size)]
        if 16 <= kind <= 24:  # fixed-length typed vectors of 2, 3 or 4 numbers
            size, elem = (kind - 16) // 3 + 2, (kind - 16) % 3 + 1
            if target + size * width > len(self.data):
                raise self.error(f"vector at byte {target} runs past the end")
            return [self.value(target + i * width, width, (elem << 2) | (packed & 3), depth + 1) for i in range(size)]
        raise self.error(f"unknown value type {kind} at byte {pos}")

    def map(self, target: int, width: int, depth: int) -> dict:
        size = self.sized(target, width, width, 1)
        keys_at = target - 3 * width
        keys = self.indirect(keys_at, width)
        key_width = self.read_uint(target - 2 * width, width)
        if key_width not in (1, 2, 4, 8):
            raise self.error(f"map at byte {target} has key width {key_width}")
        if self.sized(keys, key_width, key_width) != size:
            raise self.error(f"map at byte {target} has a different number of keys and values")
        types = self.data[target + size * width:target + size * width + size]
        out: dict = {}
        for i in range(size):
            k = self.key(self.indirect(keys + i * key_width, key_width))
            if k in out:
                raise self.error(f"duplicate map key {k!r}")
            out[k] = self.value(target + i * width, width, types[i], depth + 1)
        return out


def decode_flexbuffer(data: bytes | bytearray | memoryview, *, where: str = "flexbuffer") -> Any:
    """Decode flexbuffer bytes (TFLite custom options) into Python values, checking every read.

    Maps become dicts (str keys), vectors lists, blobs bytes, strings str (bytes when they are
    not UTF-8, as in Flex ops' serialized NodeDefs), numbers int/float/bool.

    Raises:
        ModelFormatError: the bytes are not a well-formed flexbuffer; ``where`` starts the message.
    """
    buf = bytes(data)
    if len(buf) < 3:
        raise ModelFormatError(f"{where}: {len(buf)} bytes is too short for a flexbuffer")
    width, packed = buf[-1], buf[-2]
    if width not in (1, 2, 4, 8) or len(buf) < width + 2:
        raise ModelFormatError(f"{where}: invalid root byte width {width}")
    return _Flex(buf, where).value(len(buf) - 2 - width, width, packed, 0)


__all__ = ["decode_flexbuffer"]
