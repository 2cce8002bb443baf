"""ONNX ``TensorProto`` / ``SparseTensorProto`` to numpy, with the external-data checks.

Every tensor the importer reaches (initializers, sparse initializers, Constant and other
tensor attributes, tensors inside subgraphs and functions) is decoded by
:func:`tensor_to_numpy`, so one validator guards them all (HOSTILE_INPUTS.md, ONNX items 1-12):

* shapes: every dim a non-negative integer, the element count computed in Python ints and
  capped at :data:`MAX_ELEMENTS`;
* inline data: ``raw_data`` must hold exactly ``prod(dims) * itemsize`` bytes; typed fields
  exactly ``prod(dims)`` values (two per complex value), each in range for the dtype;
* external data: only the keys of :data:`EXTERNAL_DATA_KEYS`; a relative location without
  ``..``, read from a regular, singly linked file reached from the model's folder through
  no symlink (each component is opened with ``O_NOFOLLOW`` relative to the previous one's
  descriptor, so a component swapped for a symlink after the check is refused too);
  non-negative decimal ``offset``/``length`` with ``offset + length`` inside the file; the
  SHA-1 ``checksum`` verified when present. The bytes are read with ``preadv`` straight into
  a numpy buffer we own (no mmap, so a file truncated later cannot SIGBUS us). ``basepath`` is
  accepted and ignored: the folder is always the model's own (or the caller's ``base_dir``).

External files are not integrity-bound to the model beyond the optional checksum: a benign
looking weights file may hold other bytes at other offsets (HOSTILE_INPUTS.md item 11).
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

import numpy as np

from edgeinfer import dtypes as _dt
from edgeinfer.errors import ModelFormatError, UnsafePathError, UnsupportedOpError

from .onnx_dtypes import TYPED_FIELD, ir_dtype, type_name

MAX_ELEMENTS = 2**34  # elements in one tensor; far above any edge model, far below overflow
MAX_SPARSE_DENSE_BYTES = 2**32  # a sparse tensor densified may not exceed this
EXTERNAL_DATA_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})
_DEFAULT, _EXTERNAL = 0, 1  # TensorProto.DataLocation
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "float16": (0, 2**16 - 1),
    "bfloat16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    **{name: (0, 2**8 - 1) for name in ("float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float8e8m0")},
}
_DIGITS = re.compile(r"[0-9]{1,20}")
_DRIVE = re.compile(r"^[A-Za-z]:")


def element_count(dims, where: str) -> int:
    """``prod(dims)`` in Python ints, after checking every dim is a non-negative int.

    Raises:
        ModelFormatError: a negative dim, or more than :data:`MAX_ELEMENTS` elements.
    """
    count = 1
    for d in dims:
        d = int(d)
        if d < 0:
            raise ModelFormatError(f"{where}: dims {list(dims)} contain a negative dim {d}")
        count *= d
        if count > MAX_ELEMENTS:
            raise ModelFormatError(
                f"{where}: dims {list(dims)} give more than {MAX_ELEMENTS} elements, the limit"
            )
    return count


# ------------------------------------------------------------------ safe paths
def split_relative_location(location, where: str) -> list[str]:
    """The path components of an external-data location, refusing anything that could leave
    the model's folder: empty or non-text locations, NUL bytes, absolute paths (POSIX, ``\\``
    rooted, drive letters) and any ``..`` component. Both ``/`` and ``\\`` separate components.

    Raises:
        UnsafePathError: naming ``where`` and the location.
    """
    if not isinstance(location, str) or not location:
        raise UnsafePathError(f"{where}: external data location {location!r} is empty or not text")
    if "\x00" in location:
        raise UnsafePathError(f"{where}: external data location {location!r} contains a NUL byte")
    if location.startswith(("/", "\\")) or _DRIVE.match(location) or os.path.isabs(location):
        raise UnsafePathError(
            f"{where}: external data location '{location}' is an absolute path; only paths "
            f"relative to the model's folder are allowed"
        )
    parts = [p for p in re.split(r"[\\/]+", location) if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(
            f"{where}: external data location '{location}' contains '..'; it must stay inside "
            f"the model's folder"
        )
    if not parts:
        raise UnsafePathError(f"{where}: external data location '{location}' names no file")
    return parts


_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)  # never block on a FIFO swapped in after the check
    | getattr(os, "O_BINARY", 0)
)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _check_final(st: os.stat_result, where: str, shown: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{where}: external data file '{shown}' is a symlink; symlinks are refused")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(
            f"{where}: external data file '{shown}' is not a regular file (a directory, FIFO, "
            f"socket or device); refused"
        )
    if st.st_nlink > 1:
        raise UnsafePathError(
            f"{where}: external data file '{shown}' has {st.st_nlink} hard links; files with "
            f"more than one link are refused (copy the file instead of linking it)"
        )


def open_inside(base_dir: str | os.PathLike, parts: list[str], where: str) -> int:
    """Open ``base_dir/parts...`` read-only, refusing symlinks in any component, non-regular
    files and hard-linked files. Returns an OS file descriptor the caller closes.

    Raises:
        UnsafePathError: a symlink, a non-regular file or a hard link.
        ModelFormatError: the file does not exist or cannot be read.
    """
    shown = "/".join(parts)
    try:
        if os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd and hasattr(os, "O_DIRECTORY"):
            return _open_with_dir_fds(os.path.realpath(base_dir), parts, where, shown)
        return _open_with_lstat(os.path.realpath(base_dir), parts, where, shown)  # pragma: no cover
    except FileNotFoundError:
        raise ModelFormatError(
            f"{where}: external data file '{shown}' does not exist in the model folder '{base_dir}'"
        ) from None
    except (UnsafePathError, ModelFormatError):
        raise
    except OSError as e:
        if getattr(e, "errno", None) in (getattr(os, "ELOOP", -1), getattr(os, "ENOTDIR", -1)):
            raise UnsafePathError(f"{where}: external data path '{shown}' goes through a symlink or non-directory") from None
        raise ModelFormatError(f"{where}: cannot open external data file '{shown}': {e.strerror or e}") from None


def _open_with_dir_fds(base: str, parts: list[str], where: str, shown: str) -> int:
    dfd = os.open(base, _DIR_FLAGS & ~getattr(os, "O_NOFOLLOW", 0))  # the base itself is the user's choice
    try:
        for i, comp in enumerate(parts):
            st = os.stat(comp, dir_fd=dfd, follow_symlinks=False)
            here = "/".join(parts[: i + 1])
            if i < len(parts) - 1:
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafePathError(f"{where}: external data path '{shown}' goes through symlink '{here}'; refused")
                if not stat.S_ISDIR(st.st_mode):
                    raise ModelFormatError(f"{where}: external data path '{shown}': '{here}' is not a directory")
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=dfd)
                os.close(dfd)
                dfd = nfd
                continue
            _check_final(st, where, shown)
            fd = os.open(comp, _OPEN_FLAGS, dir_fd=dfd)
            fst = os.fstat(fd)
            if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev) or not stat.S_ISREG(fst.st_mode) or fst.st_nlink > 1:
                os.close(fd)
                raise UnsafePathError(f"{where}: external data file '{shown}' changed while it was being opened")
            return fd
    finally:
        os.close(dfd)
    raise AssertionError("unreachable")  # pragma: no cover


def _open_with_lstat(base: str, parts: list[str], where: str, shown: str) -> int:  # pragma: no cover
    path = base
    for i, comp in enumerate(parts):
        path = os.path.join(path, comp)
        st = os.lstat(path)
        if i < len(parts) - 1 and (stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode)):
            raise UnsafePathError(f"{where}: external data path '{shown}' goes through a symlink or non-directory")
    _check_final(st, where, shown)
    fd = os.open(path, _OPEN_FLAGS)
    fst = os.fstat(fd)
    if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev):
        os.close(fd)
        raise UnsafePathError(f"{where}: external data file '{shown}' changed while it was being opened")
    return fd


# ------------------------------------------------------------- external data
class ExternalDataReader:
    """Reads external tensor data from files inside one folder; use as a context manager.

    Args:
        base_dir: the model's folder, or ``None`` when the model came without one (then any
            external tensor is an error).
        origin: how messages name the model when ``base_dir`` is missing (``"<bytes>"``).
    """

    def __init__(self, base_dir: str | os.PathLike | None, origin: str = "the model"):
        self.base_dir = None if base_dir is None else Path(base_dir)
        self.origin = origin
        self._files: dict[tuple[str, ...], tuple[int, int]] = {}  # parts -> (fd, size)

    def __enter__(self) -> "ExternalDataReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fd, _ in self._files.values():
            try:
                os.close(fd)
            except OSError:  # pragma: no cover
                pass
        self._files.clear()

    def _file(self, parts: list[str], where: str) -> tuple[int, int]:
        key = tuple(parts)
        if key not in self._files:
            fd = open_inside(self.base_dir, parts, where)
            self._files[key] = (fd, os.fstat(fd).st_size)
        return self._files[key]

    def read(self, entries, nbytes: int, where: str) -> np.ndarray:
        """The ``nbytes`` bytes a tensor's ``external_data`` entries point at, as uint8."""
        info: dict[str, str] = {}
        for entry in entries:
            key, value = entry.key, entry.value
            if key not in EXTERNAL_DATA_KEYS:
                raise ModelFormatError(
                    f"{where}: unknown external_data key {key!r}; allowed keys: {', '.join(sorted(EXTERNAL_DATA_KEYS))}"
                )
            if key in info:
                raise ModelFormatError(f"{where}: external_data key '{key}' is given twice")
            info[key] = value
        if "location" not in info:
            raise ModelFormatError(f"{where}: external_data has no 'location'")
        parts = split_relative_location(info["location"], where)
        offset = _parse_size(info.get("offset", "0"), "offset", where)
        length = _parse_size(info["length"], "length", where) if "length" in info else None
        if self.base_dir is None:
            raise ModelFormatError(
                f"{where}: data is stored externally in '{info['location']}', but {self.origin} was "
                f"given without a folder; pass base_dir= (the folder holding the data files)"
            )
        if length is not None and length != nbytes:
            raise ModelFormatError(
                f"{where}: external_data length {length} does not match the declared dtype and "
                f"shape, which need {nbytes} bytes"
            )
        fd, size = self._file(parts, where)
        if offset > size or nbytes > size - offset:
            raise ModelFormatError(
                f"{where}: external data range offset={offset} length={nbytes} runs past the end "
                f"of '{info['location']}' ({size} bytes)"
            )
        data = _pread_exact(fd, nbytes, offset)
        if data.size != nbytes:
            raise ModelFormatError(
                f"{where}: read {data.size} bytes from '{info['location']}', expected {nbytes} "
                f"(the file shrank while reading)"
            )
        if "checksum" in info:
            self._verify_checksum(info["checksum"], data, fd, where, info["location"])
        return data

    @staticmethod
    def _verify_checksum(expected: str, data: np.ndarray, fd: int, where: str, location: str) -> None:
        # onnx.proto calls it "SHA1 digest of file"; writers differ on whether that means the
        # whole file or the tensor's bytes, so either digest is accepted.
        want = expected.strip().lower()
        if hashlib.sha1(data.tobytes()).hexdigest() == want:
            return
        whole = hashlib.sha1()
        pos = 0
        while True:
            chunk = os.pread(fd, 1 << 24, pos)
            if not chunk:
                break
            whole.update(chunk)
            pos += len(chunk)
        if whole.hexdigest() != want:
            raise ModelFormatError(
                f"{where}: SHA-1 checksum of external data in '{location}' does not match: "
                f"expected {want}, found {hashlib.sha1(data.tobytes()).hexdigest()}"
            )


def _pread_exact(fd: int, nbytes: int, offset: int) -> np.ndarray:
    """Read up to ``nbytes`` at ``offset`` into a fresh numpy buffer (short only at EOF)."""
    buf = np.empty(nbytes, dtype=np.uint8)
    view = memoryview(buf)
    done = 0
    while done < nbytes:
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[done : done + (1 << 30)]], offset + done)
        else:  # pragma: no cover - platforms without preadv
            chunk = os.pread(fd, min(nbytes - done, 1 << 30), offset + done)
            n = len(chunk)
            view[done : done + n] = chunk
        if n <= 0:
            break
        done += n
    return buf[:done]


def _parse_size(text, key: str, where: str) -> int:
    if not isinstance(text, str) or not _DIGITS.fullmatch(text.strip()):
        raise ModelFormatError(f"{where}: external_data {key} {text!r} is not a non-negative decimal integer")
    return int(text.strip())


# ------------------------------------------------------------------ decoding
def tensor_to_numpy(tp, reader: ExternalDataReader, where: str | None = None) -> np.ndarray:
    """Decode a TensorProto into a read-only numpy array of its IR dtype.

    Args:
        tp: the ``onnx.TensorProto``.
        reader: where external data may come from.
        where: how messages name the tensor (default ``tensor '<name>'``).

    Raises:
        ModelFormatError: bad dims, sizes, fields or element type code.
        UnsafePathError: an external location outside the model's folder.
        UnsupportedOpError: a valid element type the IR does not support yet.
    """
    where = where or f"tensor '{tp.name}'"
    dtype = ir_dtype(tp.data_type, where)
    if tp.HasField("segment"):
        raise ModelFormatError(f"{where}: segmented tensors are not supported")
    dims = [int(d) for d in tp.dims]
    count = element_count(dims, where)
    npdt = _dt.to_numpy(dtype)
    typed = [f for f in _TYPED_FIELDS if len(getattr(tp, f))]
    if tp.data_location not in (_DEFAULT, _EXTERNAL):
        raise ModelFormatError(f"{where}: invalid data_location {tp.data_location}; expected DEFAULT (0) or EXTERNAL (1)")
    if tp.data_location == _EXTERNAL:
        if dtype == "string":
            raise ModelFormatError(f"{where}: STRING tensors cannot be stored as external data")
        if tp.HasField("raw_data") or typed:
            raise ModelFormatError(f"{where}: has both external data and inline data")
        raw = reader.read(tp.external_data, stored_bytes(dtype, count), where)
        arr = _from_bytes(raw, dtype, npdt, count)
    elif len(tp.external_data):
        raise ModelFormatError(f"{where}: has external_data entries but data_location is not EXTERNAL")
    elif tp.HasField("raw_data"):
        if dtype == "string":
            raise ModelFormatError(f"{where}: STRING tensors cannot use raw_data")
        if typed:
            raise ModelFormatError(f"{where}: has both raw_data and {typed[0]}")
        raw = tp.raw_data
        want = stored_bytes(dtype, count)
        if len(raw) != want:
            raise ModelFormatError(
                f"{where}: raw_data holds {len(raw)} bytes, but dtype {dtype} and shape {dims} need {want}"
            )
        arr = _from_bytes(np.frombuffer(raw, dtype=np.uint8), dtype, npdt, count)
    else:
        arr = _from_typed_field(tp, dtype, npdt, count, typed, where)
    arr = arr.reshape(dims)
    arr.flags.writeable = False
    return arr


def stored_bytes(dtype: str, count: int) -> int:
    """Bytes of ``count`` elements in ONNX storage (sub-byte types are packed)."""
    bits = _dt.PACKED_BITS.get(dtype)
    if bits:
        return (count * bits + 7) // 8
    return count * _dt.itemsize(dtype)


def unpack_bits(packed: np.ndarray, dtype: str, count: int) -> np.ndarray:
    """Sub-byte values packed little-end first into bytes, as one ml_dtypes element each."""
    bits = _dt.PACKED_BITS[dtype]
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    vals = ((np.asarray(packed, np.uint8)[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)[:count]
    if dtype.startswith("int"):
        vals = vals.astype(np.int8)
        vals = np.where(vals >= 1 << (bits - 1), vals - (1 << bits), vals).astype(np.int8)
    return vals.view(_dt.to_numpy(dtype))


def pack_bits(arr: np.ndarray, dtype: str) -> np.ndarray:
    """The packed bytes of a sub-byte array (inverse of :func:`unpack_bits`)."""
    bits = _dt.PACKED_BITS[dtype]
    per = 8 // bits
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8) & np.uint8((1 << bits) - 1)
    pad = (-flat.size) % per
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, np.uint8)])
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    return np.bitwise_or.reduce(flat.reshape(-1, per) << shifts, axis=1).astype(np.uint8)


def _from_bytes(raw: np.ndarray, dtype: str, npdt: np.dtype, count: int) -> np.ndarray:
    if dtype == "bool":
        return raw != 0
    if dtype in _dt.PACKED_BITS:
        return unpack_bits(raw, dtype, count)
    if dtype == "bfloat16":
        return raw.view("<u2").astype(np.uint16).view(npdt)
    if dtype in _dt.LOW_PRECISION:
        return raw.view(npdt)
    return raw.view(npdt.newbyteorder("<")).astype(npdt, copy=False)


def _from_typed_field(tp, dtype: str, npdt: np.dtype, count: int, typed: list[str], where: str) -> np.ndarray:
    field = TYPED_FIELD[dtype]
    wrong = [f for f in typed if f != field]
    if wrong:
        raise ModelFormatError(f"{where}: dtype {dtype} keeps its values in {field}, but {wrong[0]} is set")
    values = getattr(tp, field)
    per = 2 if dtype.startswith("complex") else 1
    if dtype in _dt.PACKED_BITS:
        want = stored_bytes(dtype, count)
        if len(values) != want:
            raise ModelFormatError(f"{where}: {field} holds {len(values)} packed bytes, but dtype {dtype} and shape {list(tp.dims)} need {want}")
        packed = np.fromiter(values, dtype=np.int64, count=len(values))
        if packed.size and (int(packed.min()) < 0 or int(packed.max()) > 255):
            raise ModelFormatError(f"{where}: {field} has values outside [0, 255], the range of a packed byte")
        return unpack_bits(packed.astype(np.uint8), dtype, count)
    if len(values) != count * per:
        raise ModelFormatError(
            f"{where}: {field} holds {len(values)} values, but dtype {dtype} and shape {list(tp.dims)} need {count * per}"
        )
    if dtype == "string":
        out = np.empty(count, dtype=object)
        for i, b in enumerate(values):
            out[i] = _decode(b)
        return out
    if dtype in ("float32", "complex64"):
        return np.fromiter(values, dtype=np.float32, count=len(values)).view(npdt)
    if dtype in ("float64", "complex128"):
        return np.fromiter(values, dtype=np.float64, count=len(values)).view(npdt)
    wide = np.fromiter(values, dtype=np.uint64 if field == "uint64_data" else np.int64, count=len(values))
    if dtype == "bool":
        return wide != 0
    if dtype in _INT_RANGES and wide.size:
        lo, hi = _INT_RANGES[dtype]
        if int(wide.min()) < lo or int(wide.max()) > hi:
            raise ModelFormatError(f"{where}: {field} has values outside [{lo}, {hi}], the range of {dtype}")
    if dtype in ("float16", "bfloat16"):
        return wide.astype(np.uint16).view(npdt)
    if dtype in _dt.LOW_PRECISION:  # float8: one byte per element
        return wide.astype(np.uint8).view(npdt)
    return wide.astype(npdt)


def _decode(b: bytes):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(b)


def sparse_to_numpy(sp, reader: ExternalDataReader, where: str | None = None) -> np.ndarray:
    """Densify a SparseTensorProto (values + COO indices, linear or per-dim) into a numpy array.

    Raises:
        ModelFormatError: bad dims, index shape/dtype, indices out of range, or a dense size
            above :data:`MAX_SPARSE_DENSE_BYTES`.
    """
    where = where or f"sparse tensor '{sp.values.name}'"
    dims = [int(d) for d in sp.dims]
    count = element_count(dims, where)
    values = tensor_to_numpy(sp.values, reader, f"{where} values")
    indices = tensor_to_numpy(sp.indices, reader, f"{where} indices")
    if values.ndim != 1:
        raise ModelFormatError(f"{where}: values must be 1-D, found shape {list(values.shape)}")
    nnz = values.shape[0]
    if count * max(values.dtype.itemsize, 1) > MAX_SPARSE_DENSE_BYTES:
        raise ModelFormatError(f"{where}: densified size of shape {dims} exceeds {MAX_SPARSE_DENSE_BYTES} bytes")
    if indices.dtype != np.int64:
        raise ModelFormatError(f"{where}: indices must be INT64, found {type_name(sp.indices.data_type)}")
    if indices.shape == (nnz,):
        linear = indices
    elif indices.shape == (nnz, len(dims)):
        if nnz and (indices.min() < 0 or np.any(indices >= np.array(dims, dtype=np.int64))):
            raise ModelFormatError(f"{where}: indices out of range for shape {dims}")
        linear = np.ravel_multi_index(tuple(indices.T), dims) if nnz else np.zeros(0, np.int64)
    else:
        raise ModelFormatError(
            f"{where}: indices shape {list(indices.shape)} fits neither [{nnz}] nor [{nnz}, {len(dims)}]"
        )
    if nnz and (linear.min() < 0 or linear.max() >= count):
        raise ModelFormatError(f"{where}: indices out of range for shape {dims} ({count} elements)")
    dense = np.full(count, "", dtype=object) if values.dtype == object else np.zeros(count, dtype=values.dtype)
    dense[linear] = values
    dense = dense.reshape(dims)
    dense.flags.writeable = False
    return dense
