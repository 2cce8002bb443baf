"""A bounds-, alignment- and budget-checked flatbuffer table walker (used by :mod:`.tflite_reader`).

:class:`_FlatBuffer` reads scalars, offsets, vectors and strings of one flatbuffer, checking
every position against the file before it is used; :class:`_Table` reads the fields of one
table through its vtable. At most :data:`MAX_TABLES` table visits and :data:`MAX_DEPTH`
nesting, plus a decoding budget so that shared offsets cannot turn a small file into a long
walk. Every problem raises :class:`~edgeinfer.errors.ModelFormatError` naming the source and
the field path. Also the little-endian scalar formats the TFLite modules read with.
"""
from __future__ import annotations

import struct
from typing import Any

import numpy as np

from edgeinfer.errors import ModelFormatError

# flatbuffers::Verifier defaults (max_depth 64, max_tables 1,000,000); TFLite uses them as is.
MAX_DEPTH = 64
MAX_TABLES = 1_000_000

_U8, _I8, _U16, _I32, _U32 = (struct.Struct(f) for f in ("<B", "<b", "<H", "<i", "<I"))
_I64, _U64, _F32, _F64 = (struct.Struct(f) for f in ("<q", "<Q", "<f", "<d"))


# ------------------------------------------------------------------ flatbuffer walking
class _FlatBuffer:
    """Bounds-, alignment- and budget-checked reads of one flatbuffer."""

    def __init__(self, data, source: str):
        self.data = data
        self.size = len(data)
        self.source = source
        self.tables = 0
        self.work = 0
        # Bytes of vectors and strings decoded: shared offsets may point many fields at the same
        # data; a file may be walked 8 times over (real models are walked about once).
        self.work_limit = 8 * self.size + (1 << 20)

    def error(self, path: str, message: str) -> ModelFormatError:
        return ModelFormatError(f"{self.source}: {path}: {message}")

    def charge(self, nbytes: int, path: str) -> None:
        self.work += nbytes
        if self.work > self.work_limit:
            raise self.error(path, f"the file references its data more than {self.work_limit} bytes' worth "
                             "(shared offsets used to inflate the work of reading it)")

    def read(self, st: struct.Struct, pos: int, path: str, what: str = "value") -> Any:
        if pos < 0 or pos + st.size > self.size:
            raise self.error(path, f"{what} at byte {pos} lies outside the {self.size}-byte file")
        if pos % st.size:
            raise self.error(path, f"{what} at byte {pos} is not aligned to {st.size} bytes")
        return st.unpack_from(self.data, pos)[0]

    def deref(self, pos: int, path: str) -> int:
        """Target of the uoffset stored at ``pos`` (flatbuffers: non-zero, below 2**31, inside)."""
        rel = self.read(_U32, pos, path, "offset")
        if rel == 0 or rel >= 2**31:
            raise self.error(path, f"offset {rel} at byte {pos} is invalid")
        target = pos + rel
        if target >= self.size:
            raise self.error(path, f"offset at byte {pos} points to byte {target}, past the {self.size}-byte file")
        return target

    def table(self, pos: int, path: str, depth: int) -> "_Table":
        self.tables += 1
        if self.tables > MAX_TABLES:
            raise self.error(path, f"more than {MAX_TABLES} tables")
        if depth > MAX_DEPTH:
            raise self.error(path, f"tables nested more than {MAX_DEPTH} deep")
        self.charge(8, path)  # a table takes 8 bytes or more of the file, so visits count against the budget too
        vt = pos - self.read(_I32, pos, path, "table")
        vtsize = self.read(_U16, vt, path, "vtable")
        objsize = self.read(_U16, vt + 2, path, "vtable")
        if vtsize < 4 or vtsize % 2 or vt + vtsize > self.size:
            raise self.error(path, f"vtable at byte {vt} has an invalid size {vtsize}")
        if objsize < 4 or pos + objsize > self.size:
            raise self.error(path, f"table at byte {pos} of {objsize} bytes runs past the {self.size}-byte file")
        return _Table(self, pos, vt, vtsize, objsize, path, depth)

    def vector(self, pos: int, elem: int, path: str) -> tuple[int, int]:
        """(first element position, count) of the vector at ``pos``, all of it inside the file."""
        count = self.read(_U32, pos, path, "vector length")
        if 4 + count * elem > self.size - pos:
            raise self.error(path, f"vector of {count} x {elem}-byte elements at byte {pos} runs past "
                             f"the {self.size}-byte file")
        self.charge(count * elem, path)
        return pos + 4, count

    def string(self, pos: int, path: str) -> str:
        start, count = self.vector(pos, 1, path)
        end = start + count
        if end >= self.size or self.data[end] != 0:
            raise self.error(path, f"string at byte {pos} is not NUL-terminated")
        try:
            return bytes(self.data[start:end]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(path, f"string is not valid UTF-8 ({e.reason} at byte {e.start})") from None

    def array(self, pos: int, dtype: str, path: str) -> np.ndarray:
        """A copied (so aligned) numpy array of the scalar vector at ``pos``."""
        dt = np.dtype(dtype)
        start, count = self.vector(pos, dt.itemsize, path)
        raw = np.frombuffer(self.data, np.uint8, count * dt.itemsize, start).copy()
        return raw.view(dt)


class _Table:
    __slots__ = ("fb", "pos", "vt", "vtsize", "objsize", "path", "depth")

    def __init__(self, fb: _FlatBuffer, pos: int, vt: int, vtsize: int, objsize: int, path: str, depth: int):
        self.fb, self.pos, self.vt, self.vtsize, self.objsize = fb, pos, vt, vtsize, objsize
        self.path, self.depth = path, depth

    def where(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def field(self, slot: int, size: int, name: str) -> int:
        """Absolute position of field ``slot`` (``size`` bytes inline), or 0 when absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vtsize:
            return 0
        off = _U16.unpack_from(self.fb.data, self.vt + entry)[0]
        if off == 0:
            return 0
        if off < 4 or off + size > self.objsize:
            raise self.fb.error(self.where(name), f"field offset {off} lies outside its {self.objsize}-byte table")
        return self.pos + off

    def scalar(self, slot: int, st: struct.Struct, name: str, default: Any = 0) -> Any:
        pos = self.field(slot, st.size, name)
        return self.fb.read(st, pos, self.where(name)) if pos else default

    def target(self, slot: int, name: str) -> int:
        pos = self.field(slot, 4, name)
        return self.fb.deref(pos, self.where(name)) if pos else 0

    def table(self, slot: int, name: str) -> "_Table | None":
        pos = self.target(slot, name)
        return self.fb.table(pos, self.where(name), self.depth + 1) if pos else None

    def string(self, slot: int, name: str) -> str | None:
        pos = self.target(slot, name)
        return self.fb.string(pos, self.where(name)) if pos else None

    def array(self, slot: int, dtype: str, name: str) -> np.ndarray | None:
        pos = self.target(slot, name)
        return self.fb.array(pos, dtype, self.where(name)) if pos else None

    def ints(self, slot: int, name: str) -> tuple[int, ...] | None:
        arr = self.array(slot, "<i4", name)
        return None if arr is None else tuple(arr.tolist())

    def raw_vector(self, slot: int, name: str) -> tuple[int, int] | None:
        """(start, length) of a [ubyte] field, without copying it."""
        pos = self.target(slot, name)
        return self.fb.vector(pos, 1, self.where(name)) if pos else None

    def tables(self, slot: int, name: str) -> list["_Table | None"]:
        pos = self.target(slot, name)
        if not pos:
            return []
        start, count = self.fb.vector(pos, 4, self.where(name))
        path = self.where(name)
        return [self.fb.table(self.fb.deref(start + 4 * i, f"{path}[{i}]"), f"{path}[{i}]", self.depth + 1)
                for i in range(count)]

    def union(self, type_slot: int, slot: int, name: str, members: list) -> tuple[str, "_Table | None"] | None:
        code = self.scalar(type_slot, _U8, f"{name}_type")
        if code == 0:
            return None
        if code >= len(members):
            raise self.fb.error(self.where(f"{name}_type"),
                                f"union type {code} is out of range (1..{len(members) - 1})")
        return members[code], self.table(slot, name)
