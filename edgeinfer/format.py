"""The ``.eim`` format: edgeinfer's own single-file model, memory-mapped at load.

Byte layout (all integers little-endian; a C reader can be written from this alone)::

    offset  size  field
    0       4     magic          b"EIM\\x00"
    4       4     version        uint32, FORMAT_VERSION (1)
    8       8     header_length  uint64, H: bytes of the header, padding included
    16      4     header_crc32   uint32, CRC-32 (zlib/PNG polynomial) of the H header bytes
    20      4     reserved       uint32, must be 0
    24      H     header         UTF-8 JSON object, then ASCII spaces (0x20) only, so that
                                 D = 24 + H is a multiple of 64
    D       ...   data section   tensor blobs in table order; blob i starts at D + offset_i,
                                 is followed by zero bytes up to the next multiple of 64, and
                                 the next blob starts right there. The file ends exactly after
                                 the last blob's padding: no gaps, overlaps or trailing bytes.

Header (every object has exactly the keys shown; the writer emits them in this order)::

    header     = {"format_version": 1, "tensors": [tensor...], "graph": graph}
    tensor     = {"name": str (informative only: the constant or attribute it holds),
                  "dtype": DTYPE, "shape": [uint...], "encoding": ENCODING,
                  "offset": uint (from D, multiple of 64), "length": uint (bytes, unpadded),
                  "crc32": uint32 (CRC-32 of the `length` blob bytes)}
    graph      = {"name": str, "inputs": [value_info...], "outputs": [value_info...],
                  "nodes": [node...], "constants": {name: tensor_index},
                  "value_info": {name: value_info}, "opset": {domain: uint},
                  "metadata": {str: str}}
    value_info = {"name": str, "dtype": DTYPE, "shape": null | [uint | str | null ...]}
    node       = {"op_type": str, "domain": str, "name": str, "inputs": [str...],
                  "outputs": [str...], "attrs": {name: value}}
    value      = {"type": TYPE, "value": ...}   with TYPE and value:
                  "int"    int64 JSON integer       "bool"  true/false       "none"  null
                  "float"  16 lowercase hex digits: the IEEE-754 binary64 bits, big-endian
                           (bit-exact: -0.0, inf, every NaN payload)
                  "str"    JSON string              "bytes" standard base64 with padding
                  "list" / "tuple"  [value...] (nested at most MAX_ATTR_LIST_DEPTH deep)
                  "tensor" tensor_index (a numpy array)
                  "scalar" tensor_index of a 0-d tensor (a numpy scalar such as np.float32)
                  "graph"  graph (a subgraph, nested at most MAX_SUBGRAPH_DEPTH deep)

DTYPE is an IR dtype name (:mod:`edgeinfer.dtypes`). A tensor_index points into
``header.tensors``; every tensor is referenced exactly once in the whole file (constants and
tensor attributes of the root graph and of all subgraphs share one table). ENCODING says how a
blob holds the values, and a reader must reject encodings it does not know:

* ``"raw"`` (any dtype but string): prod(shape) elements, C order, little-endian;
  length = prod(shape) * itemsize; bool bytes are 0 or 1. The sub-byte dtypes of
  ``"bits-packed"`` take one byte per element here, the value's bit code in the low bits
  and the high bits zero (int4 -8 is 0x08); writers since "bits-packed" no longer use "raw"
  for them, readers still accept it.
* ``"strings-utf8"`` (dtype string): prod(shape) uint32 byte lengths, then the UTF-8 bytes
  of the elements back to back in C order; length = 4 * prod(shape) + sum(lengths).
* ``"bits-packed"`` (dtypes int4, uint4, float4e2m1: B = 4 bits; int2, uint2: B = 2 bits):
  the B-bit codes of the prod(shape) elements in C order, 8 / B to a byte, the first
  element of each byte in its lowest bits (bits 0..B-1, the next in bits B..2B-1, ...):
  ONNX's and TFLite's packing, so [1, -2, 3] as int4 is the bytes 0xE1 0x03. A code is the
  two's complement value (int), the unsigned value (uint) or the E2M1 bits (float4e2m1).
  length = ceil(prod(shape) * B / 8); the unused high bits of the last byte must be zero,
  so that every array has exactly one encoding (as the zero padding between blobs).

Two sparse encodings hold tensors that are mostly zero (pruned weights). They take every
dtype "raw" takes except the sub-byte ones; an element is *zero* when all its bytes are zero,
so -0.0 and every NaN are stored values and a round trip is bit-exact. n = prod(shape), S =
itemsize, nnz = number of stored (non-zero) elements; values are little-endian, in C order,
and a stored value must not be all zero bytes (bool: byte 1), so that every array has exactly
one encoding of each kind:

* ``"bitmask-sparse"``: ceil(n / 8) mask bytes, bit i (of byte i // 8, bit i % 8, lowest bit
  first as in "bits-packed") set when element i is stored, the unused high bits of the last
  byte zero; then the nnz values. nnz is the number of set bits, and
  length = ceil(n / 8) + nnz * S.
* ``"coo-sparse"`` (the tensor object has one more key, ``"nnz": uint``, after "crc32"): nnz
  uint32 flat C-order indices, strictly increasing and < n, then the nnz values;
  length = nnz * (4 + S). uint32 indices limit it to n <= 2**32 (larger tensors use
  "bitmask-sparse" or "raw").

The writer stores a tensor of at least 64 elements in whichever of "raw", "bitmask-sparse" and
"coo-sparse" is smallest (raw unless a sparse one is strictly smaller, bitmask unless coo is
strictly smaller): a 70%-zero float32 tensor takes 0.33x its raw bytes as a bitmask, a 99%-zero
one 0.02x as indices. Sparse tensors are decoded into new (read-only) arrays at load; dense
ones stay zero-copy views of the mapping.

Later encodings register an :class:`_Encoding` with their allowed dtypes, extra tensor keys and
decoder in ``_ENCODINGS``. A new encoding does not change FORMAT_VERSION: a reader that
predates it refuses the tensor by name ("unknown encoding"), while files without such tensors
stay readable by every version-1 reader.

Header numbers are JSON integers only (a fraction, exponent, NaN or Infinity is rejected); keys
are unique within an object; the writer emits ASCII with \\uXXXX escapes, readers accept UTF-8.
Limits: H <= MAX_HEADER_BYTES, JSON nesting <= MAX_JSON_DEPTH, rank <= MAX_RANK, every dim and
element count <= 2**63 - 1. The reader checks all of it before it builds an array, and turns
every problem into a :class:`~edgeinfer.errors.ModelFormatError` naming the file and the field
path (``header.graph.nodes[3].inputs[1]``). Nothing in a file is ever executed.
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import dtypes as _dt
from ._files import aligned_buffer, read_model_file, write_atomic
from .errors import EdgeInferError, ExportError, GraphError, ModelFormatError
from .graph import MAX_SUBGRAPH_DEPTH, Graph, Node, ValueInfo

MAGIC = b"EIM\x00"
FORMAT_VERSION = 1
ALIGNMENT = 64
MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_ATTR_LIST_DEPTH = 4
MAX_RANK = 64
# Deepest legal header: each subgraph level adds graph/nodes/node/attrs/value objects plus two
# levels per enclosing attribute list; the innermost graph can add another attribute list.
MAX_JSON_DEPTH = 2 + MAX_SUBGRAPH_DEPTH * (5 + 2 * MAX_ATTR_LIST_DEPTH) + 5 + 2 * MAX_ATTR_LIST_DEPTH
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX = 2**32 - 1

_PREFIX = struct.Struct("<4sIQII")
PREFIX_SIZE = _PREFIX.size  # 24
_HEADER_KEYS = ("format_version", "tensors", "graph")
_TENSOR_KEYS = ("name", "dtype", "shape", "encoding", "offset", "length", "crc32")
_GRAPH_KEYS = ("name", "inputs", "outputs", "nodes", "constants", "value_info", "opset", "metadata")
_NODE_KEYS = ("op_type", "domain", "name", "inputs", "outputs", "attrs")
_VALUE_INFO_KEYS = ("name", "dtype", "shape")
_BRACKET_STEP = np.zeros(256, np.int32)
_BRACKET_STEP[[ord("{"), ord("[")]], _BRACKET_STEP[[ord("}"), ord("]")]] = 1, -1
_COLON = ord(":")
_KEYSETS: dict[tuple, frozenset] = {}
_FLOAT_HEX = re.compile(r"[0-9a-f]{16}")


# ---------------------------------------------------------------------------- encodings
@dataclass(frozen=True)
class _Encoding:
    """How a tensor's values sit in its blob: the dtypes it allows, extra table keys, and

    ``check_length(dtype, count, length, **extra)``: None, or what is wrong with a blob of
    ``length`` bytes for ``count`` elements (checked before any byte is read);
    ``decode(reader, path, dtype, shape, count, blob, **extra)``: the array, without a copy if
    it can. ``extra`` holds the values of ``extra_keys``, integers in [0, count] (checked).
    """

    dtypes: frozenset
    check_length: Callable[[str, int, int], str | None]
    decode: Callable[["_Reader", str, str, tuple, int, np.ndarray], np.ndarray]
    extra_keys: tuple = ()


def _raw_length(dtype: str, count: int, length: int) -> str | None:
    size = _dt.itemsize(dtype)
    return None if length == count * size else f"expected {count} elements x {size} bytes = {count * size}"


def _decode_raw(r: "_Reader", path: str, dtype: str, shape: tuple, count: int, blob: np.ndarray) -> np.ndarray:
    if dtype == "bool" and blob.size and int(blob.max()) > 1:
        bad = int(np.flatnonzero(blob > 1)[0])
        raise r.error(path, f"bool element {bad} is byte {int(blob[bad])}, expected 0 or 1")
    if dtype in _dt.PACKED_BITS and blob.size:
        # ml_dtypes reads the low bits of such bytes and float4e2m1 also looks at the top one,
        # so a byte with stray high bits has no single meaning: refuse it, as for bool.
        top = (1 << _dt.PACKED_BITS[dtype]) - 1
        if int(blob.max()) > top:
            bad = int(np.flatnonzero(blob > top)[0])
            raise r.error(path, f"{dtype} element {bad} is byte {int(blob[bad]):#04x}, expected 0x00..{top:#04x}")
    return blob.view(_little_endian(dtype)).reshape(shape)


def _packed_length(dtype: str, count: int, length: int) -> str | None:
    bits = _dt.PACKED_BITS[dtype]
    need = -(-count * bits // 8)
    return None if length == need else f"expected ceil({count} elements x {bits} bits / 8) = {need} bytes"


def _decode_packed(r: "_Reader", path: str, dtype: str, shape: tuple, count: int, blob: np.ndarray) -> np.ndarray:
    bits = _dt.PACKED_BITS[dtype]
    per_byte = 8 // bits
    # one row per byte, one column per element in it, so C order is element order. Column by
    # column with out= is ~8x faster than broadcasting blob[:, None] >> shifts (25 MB: 0.03 s).
    codes = np.empty((blob.size, per_byte), np.uint8)
    for j in range(per_byte):
        np.right_shift(blob, j * bits, out=codes[:, j])
    np.bitwise_and(codes, (1 << bits) - 1, out=codes)
    codes = codes.reshape(-1)
    if codes[count:].any():
        raise r.error(path, f"the last byte {int(blob[-1]):#04x} has non-zero padding bits after element "
                            f"{count - 1}; {dtype} packs {8 // bits} elements a byte and the rest must be 0")
    # ml_dtypes keeps one element a byte, its code in the low bits: the codes are the array
    arr = codes[:count].view(_dt.to_numpy(dtype)).reshape(shape)
    arr.flags.writeable = False  # like the mapped raw tensors: constants are shared, not scratch space
    return arr


def _pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Bytes of ``bits``-bit codes (a flat uint8 array, each < 2**bits), first code lowest."""
    per_byte = 8 // bits
    padded = np.zeros(-(-codes.size // per_byte) * per_byte, np.uint8)
    padded[: codes.size] = codes
    rows = padded.reshape(-1, per_byte)
    packed = rows[:, 0].copy()
    for j in range(1, per_byte):  # at most 4 whole-array steps
        packed |= rows[:, j] << (j * bits)
    return packed


@functools.lru_cache(maxsize=None)
def _little_endian(dtype: str) -> np.dtype:
    return _dt.to_numpy(dtype).newbyteorder("<")


def _strings_length(dtype: str, count: int, length: int) -> str | None:
    return None if length >= 4 * count else f"expected at least 4 x {count} bytes of string lengths"


def _decode_strings(r: "_Reader", path: str, dtype: str, shape: tuple, count: int, blob: np.ndarray) -> np.ndarray:
    sizes = blob[: 4 * count].view("<u4").astype(np.int64)
    raw = blob[4 * count :].tobytes()
    if int(sizes.sum()) != len(raw):
        raise r.error(path, f"string lengths add up to {int(sizes.sum())} bytes, but {len(raw)} follow them")
    values, start = [], 0
    for i, end in enumerate(np.cumsum(sizes).tolist()):
        try:
            values.append(raw[start:end].decode("utf-8"))
        except UnicodeDecodeError as e:
            raise r.error(path, f"string element {i} is not valid UTF-8 ({e.reason})") from None
        start = end
    arr = np.empty(count, dtype=object)
    arr[:] = values
    arr = arr.reshape(shape)
    arr.flags.writeable = False
    return arr


SPARSE_MIN_ELEMENTS = 64  # below this the header entry costs more than sparsity can save
_COO_MAX_ELEMENTS = 2**32  # uint32 indices


def _bitmask_length(dtype: str, count: int, length: int) -> str | None:
    size, mask = _dt.itemsize(dtype), -(-count // 8)
    rest = length - mask
    if rest >= 0 and rest % size == 0 and rest // size <= count:
        return None
    return f"expected ceil({count} / 8) = {mask} mask bytes plus up to {count} values x {size} bytes"


def _coo_length(dtype: str, count: int, length: int, nnz: int) -> str | None:
    if count > _COO_MAX_ELEMENTS:
        return f"coo-sparse has uint32 indices, so it holds at most 2**32 elements, not {count}"
    size = _dt.itemsize(dtype)
    need = nnz * (4 + size)
    return None if length == need else f"expected nnz {nnz} x (4 index + {size} value bytes) = {need}"


def _scatter(r: "_Reader", path: str, dtype: str, shape: tuple, count: int, where: np.ndarray,
             values: np.ndarray) -> np.ndarray:
    """The dense array: zeros, with the value bytes at ``where`` (a bool mask or flat indices).

    Values move as opaque ``V{itemsize}`` items, so -0.0 and NaN payloads survive unchanged.
    """
    size = _dt.itemsize(dtype)
    items = values.reshape(-1, size)
    stored = items.any(axis=1)
    if not stored.all():
        bad = int(np.flatnonzero(~stored)[0])
        raise r.error(path, f"stored value {bad} is all zero bytes; zeros are left out of sparse tensors")
    if dtype == "bool" and items.size and int(items.max()) > 1:
        bad = int(np.flatnonzero(items.reshape(-1) > 1)[0])
        raise r.error(path, f"stored bool value {bad} is byte {int(items[bad, 0])}, expected 1")
    out = np.zeros(count, f"V{size}")
    out[where] = values.view(f"V{size}")
    arr = out.view(_little_endian(dtype)).reshape(shape)
    arr.flags.writeable = False
    return arr


def _decode_bitmask(r: "_Reader", path: str, dtype: str, shape: tuple, count: int, blob: np.ndarray) -> np.ndarray:
    mask_bytes = -(-count // 8)
    bits = np.unpackbits(blob[:mask_bytes], bitorder="little")
    if bits[count:].any():
        raise r.error(path, f"the last mask byte {int(blob[mask_bytes - 1]):#04x} has non-zero padding bits "
                            f"after element {count - 1}")
    mask = bits[:count].view(bool)
    nnz, size = int(np.count_nonzero(mask)), _dt.itemsize(dtype)
    values = blob[mask_bytes:]
    if values.size != nnz * size:
        raise r.error(path, f"the mask has {nnz} bits set, so expected {nnz} values x {size} bytes = {nnz * size} "
                            f"after it, found {values.size}")
    return _scatter(r, path, dtype, shape, count, mask, values)


def _decode_coo(r: "_Reader", path: str, dtype: str, shape: tuple, count: int, blob: np.ndarray,
                nnz: int) -> np.ndarray:
    indices = blob[: 4 * nnz].view("<u4").astype(np.int64)
    if nnz:
        step = np.diff(indices)
        if step.size and int(step.min()) <= 0:
            k = int(np.flatnonzero(step <= 0)[0]) + 1
            raise r.error(path, f"index {k} is {int(indices[k])}, not above index {k - 1} ({int(indices[k - 1])}); "
                                f"indices must be strictly increasing")
        if int(indices[-1]) >= count:  # increasing, so the last is the largest
            raise r.error(path, f"index {nnz - 1} is {int(indices[-1])}, out of range for {count} elements")
    return _scatter(r, path, dtype, shape, count, indices, blob[4 * nnz :])


_SPARSE_DTYPES = _dt.DTYPES - {"string"} - frozenset(_dt.PACKED_BITS)
_ENCODINGS = {
    "raw": _Encoding(_dt.DTYPES - {"string"}, _raw_length, _decode_raw),
    "strings-utf8": _Encoding(frozenset({"string"}), _strings_length, _decode_strings),
    "bits-packed": _Encoding(frozenset(_dt.PACKED_BITS), _packed_length, _decode_packed),
    "bitmask-sparse": _Encoding(_SPARSE_DTYPES, _bitmask_length, _decode_bitmask),
    "coo-sparse": _Encoding(_SPARSE_DTYPES, _coo_length, _decode_coo, ("nnz",)),
}
_VALUE_TYPES = ["bool", "bytes", "float", "graph", "int", "list", "none", "scalar", "str", "tensor", "tuple"]


# ------------------------------------------------------------------------------- reading
def _unique_keys(pairs: list) -> dict:
    """json object hook: Python's json keeps the last of duplicate keys silently; we refuse them."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        raise ValueError(f"duplicate key {_quote(next(k for k, _ in pairs if k in seen or seen.add(k)))}")
    return out


def _reject_constant(name: str):
    raise ValueError(f"the literal {name} is not allowed")


_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b'"[]{}:')


def _json_scan(raw: bytes, limit: int) -> tuple[int, int]:
    """Deepest {/[ nesting outside strings (stops early past ``limit``), and the number of
    colons outside strings: in valid JSON, the number of keys of all objects together.

    Escapes are dropped first: a run of backslashes pairs up left to right, as the JSON
    parser reads it, so removing ``\\\\`` pairs and then ``\\"`` leaves every remaining quote
    a string delimiter. Only quotes and brackets are kept for the numpy pass. For valid JSON
    this is exact; for invalid JSON it is exact up to the first error, which is as far as the
    json module recurses before it gives up.
    """
    raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURAL)
    data = np.frombuffer(raw, np.uint8)
    depth = peak = colons = 0
    in_string = False
    for start in range(0, data.size, 1 << 20):
        c = data[start : start + (1 << 20)]
        toggles = np.cumsum(c == 0x22, dtype=np.int32) + in_string
        outside = toggles % 2 == 0
        step = _BRACKET_STEP[c]
        step[~outside] = 0
        levels = np.cumsum(step, dtype=np.int64) + depth
        peak, depth = max(peak, int(levels.max())), int(levels[-1])
        colons += int(np.count_nonzero((c == _COLON) & outside))
        in_string = bool(toggles[-1] % 2)
        if peak > limit:
            break
    return peak, colons


def _kind(v: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer"}
    return "null" if v is None else names.get(type(v), "a number")


def _quote(key: str) -> str:
    """A key as it appears in a field path or message: JSON-quoted, long ones shortened."""
    if len(key) <= 60 and key.isprintable() and '"' not in key and "\\" not in key:
        return f'"{key}"'  # the common case, without json.dumps's cost
    return json.dumps(key if len(key) <= 60 else key[:57] + "...")


class _Reader:
    """Checks a file field by field against the layout and schema, then builds the Graph."""

    def __init__(self, source: str, data: np.ndarray):
        self.source = source
        self.data = data  # read-only uint8 view of the whole file
        self.arrays: list[np.ndarray] = []
        self.names: list[str] = []
        self.used: list[str | None] = []
        self.keys_read = 0  # keys of every JSON object read; checked against the header's key count
        self.keys_in_header = 0
        self.header_text = ""

    def error(self, field: str, message: str) -> ModelFormatError:
        return ModelFormatError(f"{self.source}: {field}: {message}")

    # schema helpers: each checks one JSON value's type and names its path on failure
    def obj(self, v: Any, path: str, keys: tuple) -> dict:
        if type(v) is not dict:
            raise self.error(path, f"expected an object, found {_kind(v)}")
        self.keys_read += len(v)
        if v.keys() != _KEYSETS.get(keys) and v.keys() != _KEYSETS.setdefault(keys, frozenset(keys)):
            missing, unknown = [k for k in keys if k not in v], [k for k in v if k not in keys][:5]
            raise self.error(path, f"expected keys {list(keys)}; missing {missing}, unknown {unknown}")
        return v

    def typed(self, v: Any, path: str, kind: type) -> Any:
        if type(v) is not kind:
            raise self.error(path, f"expected {_kind(kind())}, found {_kind(v)}")
        return v

    def integer(self, v: Any, path: str, lo: int = 0, hi: int = INT64_MAX) -> int:
        if not lo <= self.typed(v, path, int) <= hi:
            raise self.error(path, f"expected an integer in [{lo}, {hi}], found {v}")
        return v

    def strings(self, v: Any, path: str) -> tuple:
        if type(v) is list and all(type(s) is str for s in v):
            return tuple(v)
        return tuple(self.typed(s, f"{path}[{i}]", str) for i, s in enumerate(self.typed(v, path, list)))

    def dtype(self, v: Any, path: str, allowed=_dt.DTYPES) -> str:
        if self.typed(v, path, str) not in allowed:
            raise self.error(path, f"unknown dtype {_quote(v)}; expected one of {sorted(allowed)}")
        return v

    def value_type(self, v: Any, path: str) -> str:
        """A value's type: a dtype, ``sequence(T)``, ``optional(T)`` or ``undefined``."""
        text = self.typed(v, path, str)
        if len(text) > 64:
            raise self.error(path, f"type string of {len(text)} characters is too long")
        try:
            return _dt.check_type(text)
        except EdgeInferError:
            raise self.error(path, f"unknown type {_quote(v)}; expected a dtype ({', '.join(sorted(_dt.DTYPES))}), "
                                   f"sequence(T) or optional(T)") from None

    def dims(self, v: Any, path: str, symbolic: bool) -> tuple:
        dims = self.typed(v, path, list)
        if len(dims) > MAX_RANK:
            raise self.error(path, f"rank {len(dims)} exceeds the limit of {MAX_RANK}")
        for k, d in enumerate(dims):
            if not (symbolic and (d is None or type(d) is str)):
                self.integer(d, f"{path}[{k}]")
        return tuple(dims)

    # the file
    def parse(self) -> Graph:
        size = self.data.size
        if size < PREFIX_SIZE:
            raise self.error("prefix", f"the file is {size} bytes, shorter than the {PREFIX_SIZE}-byte prefix")
        magic, version, hlen, hcrc, reserved = _PREFIX.unpack(self.data[:PREFIX_SIZE].tobytes())
        if magic != MAGIC:
            raise self.error("prefix.magic", f"expected {MAGIC!r}, found {magic!r}: not an .eim file")
        if version != FORMAT_VERSION:
            raise self.error("prefix.version", f"expected format version {FORMAT_VERSION}, found {version}")
        if reserved != 0:
            raise self.error("prefix.reserved", f"expected 0, found {reserved}")
        if hlen > MAX_HEADER_BYTES:
            raise self.error("prefix.header_length", f"{hlen} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
        if hlen > size - PREFIX_SIZE:
            raise self.error("prefix.header_length", f"{hlen} bytes runs past the end of the {size}-byte file")
        start = PREFIX_SIZE + hlen
        if start % ALIGNMENT:
            raise self.error("prefix.header_length", f"data would start at {start}, not a multiple of {ALIGNMENT}")
        raw = self.data[PREFIX_SIZE:start].tobytes()
        if zlib.crc32(raw) != hcrc:
            found = zlib.crc32(raw)
            raise self.error("header", f"checksum mismatch: prefix says crc32 {hcrc:#010x}, header has {found:#010x}")
        header = self.parse_json(raw)
        try:
            top = self.obj(header, "header", _HEADER_KEYS)
            self.integer(top["format_version"], "header.format_version", FORMAT_VERSION, FORMAT_VERSION)
            self.read_tensors(top["tensors"], start)
            try:
                graph = self.graph(top["graph"], "header.graph", 0)
            except RecursionError:  # only when the caller's own stack is already deep: the depth is capped
                raise self.error("header.graph", "too deeply nested for the remaining Python stack") from None
            for i, where in enumerate(self.used):
                if where is None:
                    raise self.error(f"header.tensors[{i}]", f"tensor {_quote(self.names[i])} is not used by the graph")
        except ModelFormatError:
            self.refuse_duplicate_keys()  # a duplicate key is the first problem to name
            raise
        if self.keys_read != self.keys_in_header:
            self.refuse_duplicate_keys()
        try:
            graph.validate()
        except GraphError as e:
            raise GraphError(f"{self.source}: the stored graph is invalid: {e}") from e
        return graph

    def parse_json(self, raw: bytes) -> Any:
        if b"\x00" in raw:
            raise self.error("header", f"NUL byte at offset {PREFIX_SIZE + raw.index(0)}; pad only with spaces")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error("header", f"not valid UTF-8 at byte {PREFIX_SIZE + e.start} ({e.reason})") from None
        body = text.rstrip(" ")
        if not body.startswith("{"):
            raise self.error("header", f"expected a JSON object starting with '{{', found {text[:8]!r}")
        if not body.endswith("}"):
            raise self.error("header", f"expected the JSON object to end in '}}' and spaces, found {body[-8:]!r}")
        depth, self.keys_in_header = _json_scan(raw, MAX_JSON_DEPTH)
        if depth > MAX_JSON_DEPTH:
            raise self.error("header", f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        self.header_text = body
        # Python's json keeps the last of duplicate keys silently. Checking every object with an
        # object_pairs_hook costs half the parse, so the reader counts the keys of the objects it
        # reads instead; when that count differs from the header's colons (or reading fails)
        # refuse_duplicate_keys parses again with the hook to name the duplicate.
        try:
            return json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise self.error("header", f"not valid JSON: {e}") from None

    def refuse_duplicate_keys(self) -> None:
        """ModelFormatError naming the first duplicate key of the header, if it has one."""
        try:
            json.loads(self.header_text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            if "duplicate key" in str(e):
                raise self.error("header", f"not valid JSON: {e}") from None

    def read_tensors(self, entries: Any, data_start: int) -> None:
        """Place every blob (aligned, in order, no gap, overlap or tail), then verify and decode."""
        data_size, pos, placed = self.data.size - data_start, 0, []
        for i, e in enumerate(self.typed(entries, "header.tensors", list)):
            path = f"header.tensors[{i}]"
            encoding_name = self.typed(self.typed(e, path, dict).get("encoding"), f"{path}.encoding", str)
            encoding = _ENCODINGS.get(encoding_name)
            if encoding is None:
                raise self.error(f"{path}.encoding", f"unknown encoding {_quote(encoding_name)}; "
                                 f"expected one of {sorted(_ENCODINGS)}")
            self.obj(e, path, _TENSOR_KEYS + encoding.extra_keys)
            name = self.typed(e["name"], f"{path}.name", str)
            dtype = self.dtype(e["dtype"], f"{path}.dtype")
            if dtype not in encoding.dtypes:
                raise self.error(f"{path}.dtype", f"dtype {_quote(dtype)} cannot use encoding {_quote(encoding_name)}, "
                                 f"which holds {sorted(encoding.dtypes)}")
            shape = self.dims(e["shape"], f"{path}.shape", symbolic=False)
            count, bound = 1, max(_dt.itemsize(dtype), 1)
            for d in shape:  # bound: bytes with zero dims read as one, so that numpy's strides fit
                count, bound = count * d, bound * max(d, 1)
                if bound > INT64_MAX:
                    raise self.error(f"{path}.shape", f"{list(shape)} x {dtype} exceeds 2**63-1 bytes")
            offset = self.integer(e["offset"], f"{path}.offset")
            length = self.integer(e["length"], f"{path}.length")
            crc = self.integer(e["crc32"], f"{path}.crc32", 0, UINT32_MAX)
            extra = {k: self.integer(e[k], f"{path}.{k}", 0, count) for k in encoding.extra_keys}
            problem = encoding.check_length(dtype, count, length, **extra)
            if problem:
                raise self.error(f"{path}.length", f"{problem} for shape {list(shape)}, found {length}")
            if offset % ALIGNMENT:
                raise self.error(f"{path}.offset", f"{offset} is not a multiple of {ALIGNMENT}")
            if offset != pos:
                problem = "overlaps the previous tensor or its padding" if offset < pos else "leaves unaccounted bytes"
                raise self.error(f"{path}.offset", f"{offset} {problem}: expected {pos}, where the previous ends")
            pos = offset + length + (-length % ALIGNMENT)
            if pos > data_size:
                raise self.error(path, f"bytes [{offset}, {pos}) run past the {data_size}-byte data section")
            if self.data[data_start + offset + length : data_start + pos].any():
                raise self.error(path, f"padding bytes {offset + length}..{pos} are not all zero")
            placed.append((path, name, dtype, shape, count, encoding, data_start + offset, length, crc, extra))
        if pos != data_size:
            raise self.error("header.tensors", f"the tensors account for {pos} of the {data_size} data bytes: "
                             f"{data_size - pos} trailing bytes")
        for path, name, dtype, shape, count, encoding, begin, length, crc, extra in placed:
            blob = self.data[begin : begin + length]
            found = zlib.crc32(blob)
            if found != crc:
                raise self.error(path, f"tensor {_quote(name)}: checksum mismatch: the header says crc32 "
                                 f"{crc:#010x}, the blob has {found:#010x}")
            try:
                self.arrays.append(encoding.decode(self, path, dtype, shape, count, blob, **extra))
            except ValueError as e:  # numpy refusing a shape the checks above let through
                raise self.error(path, f"tensor {_quote(name)} cannot be built: {e}") from None
            self.names.append(name)
        self.used = [None] * len(self.arrays)

    def tensor(self, v: Any, path: str) -> np.ndarray:
        if not 0 <= self.typed(v, path, int) < len(self.arrays):
            raise self.error(path, f"tensor index {v} is out of range: the table has {len(self.arrays)} tensors")
        if self.used[v] is not None:
            raise self.error(path, f"tensor {v} is already used at {self.used[v]}; each tensor is used once")
        self.used[v] = path
        return self.arrays[v]

    def value_info(self, v: Any, path: str) -> ValueInfo:
        v = self.obj(v, path, _VALUE_INFO_KEYS)
        shape = None if v["shape"] is None else self.dims(v["shape"], f"{path}.shape", symbolic=True)
        return ValueInfo(self.typed(v["name"], f"{path}.name", str), self.value_type(v["dtype"], f"{path}.dtype"), shape)

    def graph(self, g: Any, path: str, depth: int) -> Graph:
        if depth > MAX_SUBGRAPH_DEPTH:
            raise self.error(path, f"subgraphs nested more than {MAX_SUBGRAPH_DEPTH} levels deep")
        g = self.obj(g, path, _GRAPH_KEYS)
        lists = {key: enumerate(self.typed(g[key], f"{path}.{key}", list)) for key in ("inputs", "outputs", "nodes")}
        maps = {key: self.typed(g[key], f"{path}.{key}", dict).items()
                for key in ("constants", "value_info", "opset", "metadata")}
        self.keys_read += sum(len(m) for m in maps.values())
        return Graph(
            inputs=[self.value_info(v, f"{path}.inputs[{i}]") for i, v in lists["inputs"]],
            outputs=[self.value_info(v, f"{path}.outputs[{i}]") for i, v in lists["outputs"]],
            nodes=[self.node(n, f"{path}.nodes[{i}]", depth) for i, n in lists["nodes"]],
            constants={k: self.tensor(v, f"{path}.constants[{_quote(k)}]") for k, v in maps["constants"]},
            value_info={k: self.value_info(v, f"{path}.value_info[{_quote(k)}]") for k, v in maps["value_info"]},
            opset={k: self.integer(v, f"{path}.opset[{_quote(k)}]") for k, v in maps["opset"]},
            metadata={k: self.typed(v, f"{path}.metadata[{_quote(k)}]", str) for k, v in maps["metadata"]},
            name=self.typed(g["name"], f"{path}.name", str),
        )

    def node(self, n: Any, path: str, depth: int) -> Node:
        n = self.obj(n, path, _NODE_KEYS)
        if not self.typed(n["op_type"], f"{path}.op_type", str):
            raise self.error(f"{path}.op_type", "expected a non-empty string")
        attrs = self.typed(n["attrs"], f"{path}.attrs", dict)
        self.keys_read += len(attrs)
        return Node(
            n["op_type"],
            self.strings(n["inputs"], f"{path}.inputs"),
            self.strings(n["outputs"], f"{path}.outputs"),
            {k: self.value(v, f"{path}.attrs[{_quote(k)}]", depth, 0) for k, v in attrs.items()},
            name=self.typed(n["name"], f"{path}.name", str),
            domain=self.typed(n["domain"], f"{path}.domain", str),
        )

    def value(self, v: Any, path: str, depth: int, list_depth: int) -> Any:
        v = self.obj(v, path, ("type", "value"))
        kind, x = v["type"], v["value"]
        if kind == "int" and type(x) is int and INT64_MIN <= x <= INT64_MAX:
            return x  # fast paths for the common attribute types; errors take the long way
        if kind == "str" and type(x) is str:
            return x
        kind, vpath = self.typed(kind, f"{path}.type", str), f"{path}.value"
        if kind == "int":
            return self.integer(x, vpath, INT64_MIN, INT64_MAX)
        if kind == "float":
            if type(x) is not str or not _FLOAT_HEX.fullmatch(x):
                shown = _quote(x) if type(x) is str else _kind(x)
                raise self.error(vpath, f"expected 16 lowercase hex digits (float64 bits), found {shown}")
            return struct.unpack(">d", bytes.fromhex(x))[0]
        if kind == "str":
            return self.typed(x, vpath, str)
        if kind == "bytes":
            try:
                data = base64.b64decode(self.typed(x, vpath, str), validate=True)
            except binascii.Error as e:
                raise self.error(vpath, f"not valid base64 ({e})") from None
            if base64.b64encode(data).decode("ascii") != x:
                raise self.error(vpath, "base64 is not in canonical form")
            return data
        if kind in ("bool", "none"):
            if (kind == "bool" and type(x) is not bool) or (kind == "none" and x is not None):
                raise self.error(vpath, f"expected {'true or false' if kind == 'bool' else 'null'}, found {_kind(x)}")
            return x
        if kind in ("list", "tuple"):
            if list_depth >= MAX_ATTR_LIST_DEPTH:
                raise self.error(vpath, f"lists nested more than {MAX_ATTR_LIST_DEPTH} levels deep")
            items = [self.value(e, f"{vpath}[{i}]", depth, list_depth + 1)
                     for i, e in enumerate(self.typed(x, vpath, list))]
            return items if kind == "list" else tuple(items)
        if kind == "tensor":
            return self.tensor(x, vpath)
        if kind == "scalar":
            arr = self.tensor(x, vpath)
            if arr.ndim != 0:
                raise self.error(vpath, f"a scalar needs a 0-d tensor, found shape {list(arr.shape)}")
            return arr[()]
        if kind == "graph":
            return self.graph(x, vpath, depth + 1)
        raise self.error(f"{path}.type", f"unknown value type {_quote(kind)}; expected one of {_VALUE_TYPES}")


def load_eim(path: str | os.PathLike, *, mmap: bool = True) -> Graph:
    """Load an ``.eim`` file into a :class:`Graph`, checking every field first.

    With ``mmap=True`` the file is mapped read-only and every constant is a read-only numpy
    view of the mapping (no copy; ``arr.flags.writeable`` is False); the mapping lives as long
    as any array does. The mapping is only safe while the file stays as it is: if another
    process truncates or rewrites it in place, or a network filesystem fails, touching an
    array raises SIGBUS, which kills the process and cannot be caught in Python. edgeinfer's
    own writers replace files atomically (a new inode), so they never change a mapped model.
    Use ``mmap=False`` on network or removable filesystems, or for files other programs may
    edit: the file is then read into one 64-byte aligned, read-only buffer. String tensors are
    always built as (read-only) object arrays of ``str``, so they are copies either way.

    Every blob's CRC-32 is verified at load: one sequential pass over the data (about 1 GB/s
    or more with zlib), which also pages the mapped weights in.

    Args:
        path: the ``.eim`` file (a symlink to a regular file is fine).
        mmap: map the file instead of reading it into memory.

    Returns:
        The graph; it passed :meth:`Graph.validate`.

    Raises:
        ModelFormatError: the file cannot be opened or read, is not a regular file, or is
            malformed; the message names the file and the field (a GraphError when only the
            graph's semantics are wrong).
    """
    source = os.fspath(path)
    data = read_model_file(source, source, min_size=PREFIX_SIZE, mmap=mmap, aligned=True,
                           too_short=lambda n: f"prefix: the file is {n} bytes, under {PREFIX_SIZE}")
    if not isinstance(data, np.ndarray):
        data = np.frombuffer(data, np.uint8)
    return _Reader(source, data).parse()


def loads_eim(buffer: bytes | bytearray | memoryview, source: str = "<bytes>") -> Graph:
    """Load an ``.eim`` model from bytes (copied once into an aligned, read-only buffer).

    Raises:
        ModelFormatError: as :func:`load_eim`, naming ``source``.
    """
    raw = np.frombuffer(buffer, np.uint8)
    data = aligned_buffer(raw.size)
    data[:] = raw
    data.flags.writeable = False
    return _Reader(source, data).parse()


# ------------------------------------------------------------------------------- writing
def _sparse_or_raw(dtype: str, flat: np.ndarray) -> tuple[str, np.ndarray, dict]:
    """The smallest of "raw", "bitmask-sparse" and "coo-sparse" for little-endian bytes ``flat``."""
    size = _dt.itemsize(dtype)
    count = flat.size // size
    if count < SPARSE_MIN_ELEMENTS:
        return "raw", flat, {}
    items = flat.view(f"V{size}")
    # all bytes zero is "zero": -0.0 and NaN are kept, and the round trip is bit-exact
    stored = flat.view(f"<u{size}") != 0 if size in (1, 2, 4, 8) else flat.reshape(count, size).any(axis=1)
    nnz = int(np.count_nonzero(stored))
    raw, bitmask = count * size, -(-count // 8) + nnz * size
    coo = nnz * (4 + size) if count <= _COO_MAX_ELEMENTS else raw
    if min(bitmask, coo) >= raw:
        return "raw", flat, {}
    values = items[stored].view(np.uint8)
    if coo < bitmask:
        indices = np.flatnonzero(stored).astype("<u4").view(np.uint8)
        return "coo-sparse", np.concatenate([indices, values]), {"nnz": nnz}
    return "bitmask-sparse", np.concatenate([np.packbits(stored, bitorder="little"), values]), {}


def _encode_array(arr: np.ndarray, where: str) -> tuple[str, str, np.ndarray, dict]:
    """(encoding, IR dtype, uint8 blob, extra tensor keys) of an array, little-endian C order."""
    try:
        dtype = _dt.from_numpy(arr.dtype)
    except GraphError as e:
        raise ExportError(f"cannot save {where}: {e}") from None
    if arr.ndim > MAX_RANK:
        raise ExportError(f"cannot save {where}: rank {arr.ndim} exceeds the limit of {MAX_RANK}")
    if dtype != "string":
        flat = np.ascontiguousarray(arr, dtype=_dt.to_numpy(dtype).newbyteorder("<")).reshape(-1).view(np.uint8)
        if dtype == "bool" and flat.size and int(flat.max()) > 1:
            flat = (flat != 0).view(np.uint8)  # bools built from other bytes: store them as 0/1
        if dtype in _dt.PACKED_BITS:
            bits = _dt.PACKED_BITS[dtype]
            if flat.size and int(flat.max()) >= 1 << bits:  # stray high bits (a view of other bytes):
                # let ml_dtypes say which value each byte is, then store that value's code
                flat = np.ascontiguousarray(arr).astype(np.float32).astype(arr.dtype).reshape(-1).view(np.uint8)
            return "bits-packed", dtype, _pack_bits(flat, bits), {}
        encoding, blob, extra = _sparse_or_raw(dtype, flat)
        return encoding, dtype, blob, extra
    parts = []
    for i, s in enumerate(arr.ravel().tolist()):
        if not isinstance(s, str):
            raise ExportError(f"cannot save {where}: string element {i} is a {type(s).__name__}, expected str")
        try:
            parts.append(s.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise ExportError(f"cannot save {where}: string element {i} is not UTF-8 encodable ({e.reason})") from None
        if len(parts[-1]) > UINT32_MAX:
            raise ExportError(f"cannot save {where}: string element {i} is longer than 4 GiB")
    lengths = np.array([len(p) for p in parts], dtype="<u4").tobytes()
    return "strings-utf8", dtype, np.frombuffer(lengths + b"".join(parts), np.uint8), {}


def _text(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise ExportError(f"cannot save {where}: expected a str, found {type(v).__name__}")
    return str(v)


def _int64(v: Any, where: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= INT64_MAX:
        raise ExportError(f"cannot save {where}: expected an integer in [{lo}, 2**63-1], found {v!r}")
    return int(v)


class _Writer:
    """Turns a Graph into header objects plus the blobs, in file order (it only reads the graph)."""

    def __init__(self):
        self.entries: list[dict] = []
        self.blobs: list[np.ndarray] = []
        self.pos = 0

    def tensor(self, arr: np.ndarray, label: str, where: str) -> int:
        encoding, dtype, blob, extra = _encode_array(arr, where)
        self.entries.append({
            "name": label, "dtype": dtype, "shape": [int(d) for d in arr.shape], "encoding": encoding,
            "offset": self.pos, "length": blob.size, "crc32": zlib.crc32(blob), **extra,
        })
        self.blobs.append(blob)
        self.pos += blob.size + (-blob.size % ALIGNMENT)
        return len(self.entries) - 1

    def graph(self, g: Graph) -> dict:
        at = f"graph '{g.name}'"
        return {
            "name": _text(g.name, f"{at} name"),
            "inputs": [self.value_info(v, at) for v in g.inputs],
            "outputs": [self.value_info(v, at) for v in g.outputs],
            "nodes": [self.node(n, at) for n in g.nodes],
            "constants": {_text(k, f"{at} constant"): self.tensor(v, k, f"{at} constant '{k}'")
                          for k, v in g.constants.items()},
            "value_info": {_text(k, f"{at} value_info"): self.value_info(v, at) for k, v in g.value_info.items()},
            "opset": {_text(k, f"{at} opset"): _int64(v, f"{at} opset '{k}'", 0) for k, v in g.opset.items()},
            "metadata": {_text(k, f"{at} metadata"): _text(v, f"{at} metadata '{k}'") for k, v in g.metadata.items()},
        }

    def value_info(self, v: ValueInfo, at: str) -> dict:
        if not isinstance(v, ValueInfo):
            raise ExportError(f"cannot save {at}: expected a ValueInfo, found {type(v).__name__}")
        shape = None
        if v.shape is not None:
            if len(v.shape) > MAX_RANK:
                raise ExportError(f"cannot save {at} tensor '{v.name}': rank {len(v.shape)} exceeds {MAX_RANK}")
            shape = [d if d is None or isinstance(d, str) else _int64(d, f"{at} tensor '{v.name}' dim", 0)
                     for d in v.shape]
        return {"name": _text(v.name, f"{at} value name"), "dtype": _text(v.dtype, f"{at} dtype"), "shape": shape}

    def node(self, n: Node, at: str) -> dict:
        return {
            "op_type": n.op_type,
            "domain": _text(n.domain, f"{n.label} domain"),
            "name": _text(n.name, f"{n.label} name"),
            "inputs": [_text(s, f"{n.label} input") for s in n.inputs],
            "outputs": [_text(s, f"{n.label} output") for s in n.outputs],
            "attrs": {k: self.value(v, f"{n.label} attribute '{k}'", 0) for k, v in n.attrs.items()},
        }

    def value(self, v: Any, where: str, list_depth: int) -> dict:
        if v is None or isinstance(v, bool):
            return {"type": "none" if v is None else "bool", "value": v}
        if isinstance(v, str):  # np.str_ too: stored (and loaded) as str
            return {"type": "str", "value": str(v)}
        if isinstance(v, bytes):  # likewise np.bytes_
            return {"type": "bytes", "value": base64.b64encode(v).decode("ascii")}
        if isinstance(v, np.generic):  # before int/float: np.float64 subclasses float
            return {"type": "scalar", "value": self.tensor(np.asarray(v), where, where)}
        if isinstance(v, int):
            return {"type": "int", "value": _int64(v, where, INT64_MIN)}
        if isinstance(v, float):
            return {"type": "float", "value": struct.pack(">d", v).hex()}
        if isinstance(v, np.ndarray):
            return {"type": "tensor", "value": self.tensor(v, where, where)}
        if isinstance(v, Graph):
            return {"type": "graph", "value": self.graph(v)}
        if isinstance(v, (list, tuple)):
            if list_depth >= MAX_ATTR_LIST_DEPTH:
                raise ExportError(f"cannot save {where}: lists nested more than {MAX_ATTR_LIST_DEPTH} deep")
            items = [self.value(x, f"{where}[{i}]", list_depth + 1) for i, x in enumerate(v)]
            return {"type": "list" if isinstance(v, list) else "tuple", "value": items}
        raise ExportError(f"cannot save {where}: values of type {type(v).__name__} are not supported")


def _plan(graph: Graph) -> tuple[bytes, list[np.ndarray]]:
    """(prefix + padded header, blobs) of a graph; reads the graph, never changes it."""
    if not isinstance(graph, Graph):
        raise ExportError(f"save_eim needs a Graph, found {type(graph).__name__}")
    graph.validate()  # a file that could not be loaded back is worse than an error now
    writer = _Writer()
    body = writer.graph(graph)
    header = {"format_version": FORMAT_VERSION, "tensors": writer.entries, "graph": body}
    raw = json.dumps(header, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")
    raw += b" " * (-(PREFIX_SIZE + len(raw)) % ALIGNMENT)
    if len(raw) > MAX_HEADER_BYTES:
        raise ExportError(f"cannot save graph '{graph.name}': its header is {len(raw)} bytes, over {MAX_HEADER_BYTES}")
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(raw), zlib.crc32(raw), 0) + raw, writer.blobs


def _write_blob(f: io.RawIOBase | io.BufferedIOBase, blob: np.ndarray) -> None:
    f.write(memoryview(blob))
    if blob.size % ALIGNMENT:
        f.write(bytes(-blob.size % ALIGNMENT))


def dumps_eim(graph: Graph) -> bytes:
    """The ``.eim`` bytes of a graph (the module docstring gives the layout).

    Raises:
        GraphError: the graph does not validate.
        ExportError: an attribute, dtype or value cannot be stored (the message names it).
    """
    head, blobs = _plan(graph)
    out = io.BytesIO()
    out.write(head)
    for blob in blobs:
        _write_blob(out, blob)
    return out.getvalue()


def save_eim(graph: Graph, path: str | os.PathLike) -> None:
    """Write a graph to ``path`` as ``.eim``, atomically.

    The bytes go to a temporary file in the destination folder, which is flushed, fsynced and
    then renamed onto ``path`` with :func:`os.replace`; on any failure the temporary file is
    removed and an existing ``path`` is left as it was. A symlink at ``path`` is replaced by
    the new file, never written through. Non-contiguous or big-endian arrays are written in
    little-endian C order; the graph itself is not modified.

    Args:
        graph: the graph to save; it must pass :meth:`Graph.validate`.
        path: destination file.

    Raises:
        GraphError: the graph does not validate.
        ExportError: an attribute, dtype or value cannot be stored (the message names it).
        OSError: the folder is missing or not writable, or the disk is full.
    """
    head, blobs = _plan(graph)

    def write(f) -> None:
        f.write(head)
        for blob in blobs:
            _write_blob(f, blob)

    write_atomic(path, write)


__all__ = ["save_eim", "load_eim", "dumps_eim", "loads_eim", "MAGIC", "FORMAT_VERSION", "ALIGNMENT"]
