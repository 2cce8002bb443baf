"""Opening a model file for reading, the same way for every format; writing a file atomically.

The path is opened without following it into anything but a regular file (a FIFO would block
``open``, a device could stream forever): O_NONBLOCK for the open, then ``fstat`` on the
descriptor. The content comes back either memory-mapped read-only (zero copy) or read in full,
with a check that the file did not change size while it was read.
"""
from __future__ import annotations

import contextlib
import mmap as _mmap
import os
import secrets
import stat
from typing import BinaryIO, Callable

import numpy as np

from .errors import ModelFormatError

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_ALIGNMENT = 64


def read_model_file(path: str, label: str, *, min_size: int, too_short: Callable[[int], str], mmap: bool,
                    aligned: bool = False):
    """The content of the model file ``path`` (errors name it as ``label``).

    Returns a read-only ``mmap`` when ``mmap``; else the bytes, as a read-only 64-byte aligned
    uint8 array when ``aligned`` or as ``bytes``.

    Raises:
        ModelFormatError: the file cannot be opened or read, is not a regular file, is shorter
            than ``min_size`` (message ``too_short(size)``) or changed size while being read.
    """
    try:
        fd = os.open(path, _FLAGS)  # O_NONBLOCK: opening a FIFO must not hang
    except OSError as e:
        raise ModelFormatError(f"{label}: cannot open the model file: {e.strerror or e}") from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelFormatError(f"{label}: not a regular file (devices, FIFOs and folders are refused)")
        if info.st_size < max(min_size, 1):  # also: mmap cannot map an empty file
            raise ModelFormatError(f"{label}: {too_short(info.st_size)}")
        if mmap:
            try:
                return _mmap.mmap(fd, 0, access=_mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise ModelFormatError(f"{label}: cannot memory-map the file ({e}); try mmap=False") from e
        with open(fd, "rb", buffering=0, closefd=False) as f:
            if not aligned:
                data = f.read(info.st_size + 1)
                if len(data) != info.st_size:
                    raise ModelFormatError(f"{label}: the file changed size while being read")
                return data
            buf = aligned_buffer(info.st_size)
            with memoryview(buf) as view:
                got = 0
                while got < buf.size:
                    n = f.readinto(view[got:])
                    if not n:
                        raise ModelFormatError(f"{label}: the file shrank to {got} bytes while being read")
                    got += n
            if f.read(1):
                raise ModelFormatError(f"{label}: the file grew while being read")
            buf.flags.writeable = False
            return buf
    except OSError as e:
        raise ModelFormatError(f"{label}: cannot read the model file: {e.strerror or e}") from e
    finally:
        os.close(fd)


def aligned_buffer(size: int) -> np.ndarray:
    """A writable uint8 array of ``size`` bytes whose first byte is 64-byte aligned."""
    base = np.empty(size + _ALIGNMENT, np.uint8)
    start = -base.ctypes.data % _ALIGNMENT
    return base[start : start + size]


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Create the file at ``path`` through ``write(f)`` into a new file beside it, fsync it, and
    rename it onto ``path``: readers see the old file or the new one, never half of one. On
    failure the temporary file is removed and an existing ``path`` is left as it was; a symlink
    at ``path`` is replaced, not written through. The folder is fsynced so the rename lasts."""
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    # like tempfile.mkstemp (O_EXCL, random name), but with the mode a new file gets from open()
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename itself durable (POSIX)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
