"""Element types of the IR.

IR dtypes are strings: numpy's names for the types numpy has ("float32", "int64", "bool", ...),
"string" (numpy object arrays of ``str``), and the low-precision types numpy lacks, held in
arrays of the ``ml_dtypes`` package (one byte or two per element, unpacked): "bfloat16",
"float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float8e8m0", "float4e2m1",
"int4", "uint4", "int2", "uint2". ``ml_dtypes`` is imported only when such a type is used
(it comes with the ``onnx`` extra); without it they raise MissingDependencyError.

Values that are not tensors have composite type strings: ``sequence(T)`` (a Python list of
arrays of element type T) and ``optional(T)`` (a value of type T, or ``None``), where T is a
dtype or, for optionals, a sequence type: ``optional(sequence(float32))``.

Format-specific codes (ONNX ``TensorProto`` enums, TFLite ``TensorType``) are mapped to these
names in the converters; this module is the only place that maps names to numpy.
"""
from __future__ import annotations

import numpy as np

from .errors import GraphError, MissingDependencyError

# name -> numpy dtype used to hold values of that type
_NUMPY = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
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

# IR name -> ml_dtypes attribute name
_ML_DTYPES = {
    "bfloat16": "bfloat16",
    "float8e4m3fn": "float8_e4m3fn",
    "float8e4m3fnuz": "float8_e4m3fnuz",
    "float8e5m2": "float8_e5m2",
    "float8e5m2fnuz": "float8_e5m2fnuz",
    "float8e8m0": "float8_e8m0fnu",
    "float4e2m1": "float4_e2m1fn",
    "int4": "int4",
    "uint4": "uint4",
    "int2": "int2",
    "uint2": "uint2",
}
_FROM_ML = {v: k for k, v in _ML_DTYPES.items()}

DTYPES = frozenset(_NUMPY) | frozenset(_ML_DTYPES)
LOW_PRECISION = frozenset(_ML_DTYPES)
FLOAT8_DTYPES = frozenset({"float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float8e8m0"})
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
SMALL_FLOAT_DTYPES = FLOAT8_DTYPES | {"float4e2m1"}
INT_DTYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"})
SMALL_INT_DTYPES = frozenset({"int4", "uint4", "int2", "uint2"})
# bits per element of the packed ONNX/TFLite storage of sub-byte types
PACKED_BITS = {"int4": 4, "uint4": 4, "float4e2m1": 4, "int2": 2, "uint2": 2}

_ml = None


def _ml_dtypes():
    global _ml
    if _ml is None:
        try:
            import ml_dtypes
        except ImportError:
            raise MissingDependencyError("ml_dtypes", "onnx", "bfloat16, float8, float4, int4 and int2 tensors") from None
        _ml = ml_dtypes
    return _ml


def is_sequence(dtype: str) -> bool:
    return isinstance(dtype, str) and dtype.startswith("sequence(")


def is_optional(dtype: str) -> bool:
    return isinstance(dtype, str) and dtype.startswith("optional(")


def is_tensor(dtype: str) -> bool:
    return dtype in DTYPES


def element_type(dtype: str) -> str:
    """T of ``sequence(T)`` or ``optional(T)``."""
    if not (is_sequence(dtype) or is_optional(dtype)) or not dtype.endswith(")"):
        raise GraphError(f"{dtype!r} is not a sequence or optional type")
    return dtype[dtype.index("(") + 1:-1]


def sequence_of(elem: str) -> str:
    return f"sequence({elem})"


def optional_of(elem: str) -> str:
    return f"optional({elem})"


def check_type(dtype) -> str:
    """``dtype`` when it names an IR type (tensor, sequence or optional), else GraphError."""
    t = dtype
    if t == "undefined":  # a subgraph value typed by the node that runs it (see onnx_import)
        return dtype
    if is_optional(t):
        t = element_type(t)
    if is_sequence(t):
        t = element_type(t)
    if t not in DTYPES:
        raise GraphError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}, sequence(T) or optional(T)")
    return dtype


def type_of_value(value) -> str:
    """IR type string of a runtime value: an array, a list of arrays, or None (empty optional)."""
    if value is None:
        return "optional(undefined)"
    if isinstance(value, list):
        return sequence_of(from_numpy(value[0].dtype) if value else "undefined")
    return from_numpy(np.asarray(value).dtype)


def to_numpy(dtype: str) -> np.dtype:
    """The numpy dtype that stores values of IR dtype ``dtype``."""
    try:
        return _NUMPY[dtype]
    except (KeyError, TypeError):
        pass
    if dtype in _ML_DTYPES:
        return np.dtype(getattr(_ml_dtypes(), _ML_DTYPES[dtype]))
    raise GraphError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")


_FROM_NUMPY_CACHE: dict = {}


def from_numpy(dtype) -> str:
    """The IR dtype name of a numpy dtype (object arrays are strings)."""
    try:
        return _FROM_NUMPY_CACHE[dtype]
    except (KeyError, TypeError):
        pass
    name = _from_numpy(dtype)
    try:
        _FROM_NUMPY_CACHE[dtype] = name
    except TypeError:
        pass
    return name


def _from_numpy(dtype) -> str:
    dt = np.dtype(dtype)
    if dt == object or dt.kind in "US":
        return "string"
    name = dt.name
    if name in _NUMPY:
        return name
    if name in _FROM_ML and dt.type.__module__.startswith("ml_dtypes"):
        return _FROM_ML[name]
    raise GraphError(f"numpy dtype {dt} has no edgeinfer equivalent")


def itemsize(dtype: str) -> int:
    """Bytes per element (strings report 0: they have no fixed size)."""
    if dtype == "string":
        return 0
    return to_numpy(dtype).itemsize
