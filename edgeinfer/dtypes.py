"""Element types of the IR.

IR dtypes are strings: numpy's names for the types numpy has ("float32", "int64", "bool", ...)
plus "bfloat16" (stored as its raw uint16 bits) and "string" (numpy object arrays of ``str``).
Format-specific codes (ONNX ``TensorProto`` enums, TFLite ``TensorType``) are mapped to these
names in the converters; this module is the only place that maps names to numpy.
"""
from __future__ import annotations

import numpy as np

from .errors import GraphError

# name -> numpy dtype used to hold values of that type
_NUMPY = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.uint16),  # raw bits; kernels that support it convert explicitly
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "int16": np.dtype(np.int16),
    "uint16": np.dtype(np.uint16),
    "int32": np.dtype(np.int32),
    "uint32": np.dtype(np.uint32),
    "int64": np.dtype(np.int64),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
    "string": np.dtype(object),
}

DTYPES = frozenset(_NUMPY)
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
INT_DTYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"})


def to_numpy(dtype: str) -> np.dtype:
    """The numpy dtype that stores values of IR dtype ``dtype``."""
    try:
        return _NUMPY[dtype]
    except (KeyError, TypeError):
        raise GraphError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}") from None


def from_numpy(dtype) -> str:
    """The IR dtype name of a numpy dtype (object arrays are strings)."""
    dt = np.dtype(dtype)
    if dt == object or dt.kind in "US":
        return "string"
    name = dt.name
    if name not in _NUMPY:
        raise GraphError(f"numpy dtype {dt} has no edgeinfer equivalent")
    return name


def itemsize(dtype: str) -> int:
    """Bytes per element (strings report 0: they have no fixed size)."""
    if dtype == "string":
        return 0
    return to_numpy(dtype).itemsize
