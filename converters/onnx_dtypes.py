"""The one table between ONNX ``TensorProto.DataType`` codes and IR dtype strings.

The codes are fixed by the ONNX spec (``onnx.proto``), so they are written out here rather
than read from the ``onnx`` package: the table is usable without it. Codes fall in three
groups:

* mapped: the IR has the type (:data:`ONNX_TO_IR`);
* known but not supported yet (float6): a clear
  :class:`~edgeinfer.errors.UnsupportedOpError`, because the model is valid, we just cannot
  run it yet;
* unknown (``UNDEFINED`` or a number the spec does not define): a
  :class:`~edgeinfer.errors.ModelFormatError`, because the model is malformed.

It also names the attributes whose value is an element type (Cast ``to`` and friends): in the
IR they hold the IR dtype string, in ONNX the enum code.
"""
from __future__ import annotations

from edgeinfer import dtypes as _dt
from edgeinfer.errors import ModelFormatError, UnsupportedOpError

# TensorProto.DataType codes (onnx.proto)
UNDEFINED = 0
FLOAT = 1
UINT8 = 2
INT8 = 3
UINT16 = 4
INT16 = 5
INT32 = 6
INT64 = 7
STRING = 8
BOOL = 9
FLOAT16 = 10
DOUBLE = 11
UINT32 = 12
UINT64 = 13
COMPLEX64 = 14
COMPLEX128 = 15
BFLOAT16 = 16

ONNX_TO_IR: dict[int, str] = {
    FLOAT: "float32",
    UINT8: "uint8",
    INT8: "int8",
    UINT16: "uint16",
    INT16: "int16",
    INT32: "int32",
    INT64: "int64",
    STRING: "string",
    BOOL: "bool",
    FLOAT16: "float16",
    DOUBLE: "float64",
    UINT32: "uint32",
    UINT64: "uint64",
    COMPLEX64: "complex64",
    COMPLEX128: "complex128",
    BFLOAT16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
    24: "float8e8m0",
    25: "uint2",
    26: "int2",
}
IR_TO_ONNX: dict[str, int] = {v: k for k, v in ONNX_TO_IR.items()}

# Valid ONNX element types the IR cannot hold yet.
NOT_YET_SUPPORTED: dict[int, str] = {
    27: "FLOAT6E2M3",
    28: "FLOAT6E3M2",
}

# Which repeated field of a TensorProto holds each IR dtype when raw_data is not used
# (onnx.proto: 16-bit floats and all integer types narrower than 32 bits travel as int32).
TYPED_FIELD: dict[str, str] = {
    "float32": "float_data",
    "complex64": "float_data",
    "float64": "double_data",
    "complex128": "double_data",
    "int32": "int32_data",
    "int16": "int32_data",
    "int8": "int32_data",
    "uint16": "int32_data",
    "uint8": "int32_data",
    "bool": "int32_data",
    "float16": "int32_data",
    "bfloat16": "int32_data",
    # one element per int32 for float8; one packed byte per int32 for 4- and 2-bit types
    "float8e4m3fn": "int32_data",
    "float8e4m3fnuz": "int32_data",
    "float8e5m2": "int32_data",
    "float8e5m2fnuz": "int32_data",
    "float8e8m0": "int32_data",
    "int4": "int32_data",
    "uint4": "int32_data",
    "float4e2m1": "int32_data",
    "int2": "int32_data",
    "uint2": "int32_data",
    "int64": "int64_data",
    "uint32": "uint64_data",
    "uint64": "uint64_data",
    "string": "string_data",
}

# (op_type, attribute) pairs of the default domain whose value is an element type.
DTYPE_ATTRIBUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("Cast", "to"),
        ("BitCast", "to"),
        ("EyeLike", "dtype"),
        ("RandomNormal", "dtype"),
        ("RandomUniform", "dtype"),
        ("RandomNormalLike", "dtype"),
        ("RandomUniformLike", "dtype"),
        ("Multinomial", "dtype"),
        ("Bernoulli", "dtype"),
        ("SequenceEmpty", "dtype"),
        ("HannWindow", "output_datatype"),
        ("HammingWindow", "output_datatype"),
        ("BlackmanWindow", "output_datatype"),
        ("MelWeightMatrix", "output_datatype"),
    }
)


_SUPPORTED_NAMES = {
    FLOAT: "FLOAT", UINT8: "UINT8", INT8: "INT8", UINT16: "UINT16", INT16: "INT16", INT32: "INT32",
    INT64: "INT64", STRING: "STRING", BOOL: "BOOL", FLOAT16: "FLOAT16", DOUBLE: "DOUBLE",
    UINT32: "UINT32", UINT64: "UINT64", COMPLEX64: "COMPLEX64", COMPLEX128: "COMPLEX128",
    BFLOAT16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ",
    21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2", 26: "INT2",
}


def type_name(code: int) -> str:
    """The spec name of a code (``FLOAT``, ``INT4``), or ``code N`` when the spec has none."""
    if code == UNDEFINED:
        return "UNDEFINED"
    return _SUPPORTED_NAMES.get(code) or NOT_YET_SUPPORTED.get(code) or f"code {code}"


def ir_dtype(code, where: str) -> str:
    """The IR dtype of an ONNX element type code.

    Args:
        code: the ``elem_type`` / ``data_type`` / ``to`` value found in the model.
        where: what holds the code, for the message (``"tensor 'w'"``, ``"Cast node 'c' attribute 'to'"``).

    Raises:
        UnsupportedOpError: a valid type the IR does not support yet (float8, int4, ...).
        ModelFormatError: ``UNDEFINED`` or a code the ONNX spec does not define.
    """
    if isinstance(code, bool) or not isinstance(code, int):
        raise ModelFormatError(f"{where}: element type must be an integer code, found {code!r}")
    if code in ONNX_TO_IR:
        return ONNX_TO_IR[code]
    if code in NOT_YET_SUPPORTED:
        name = NOT_YET_SUPPORTED[code]
        raise UnsupportedOpError(
            f"{where} has element type {name} (code {code}), which edgeinfer does not support yet; "
            f"supported: {', '.join(sorted(IR_TO_ONNX))}",
            [f"dtype:{name}"],
        )
    raise ModelFormatError(
        f"{where}: invalid element type code {code}; expected one of the ONNX TensorProto.DataType "
        f"codes 1-{max(max(ONNX_TO_IR), max(NOT_YET_SUPPORTED))}"
    )


def onnx_dtype(dtype, where: str = "") -> int:
    """The ONNX element type code of an IR dtype string (raises GraphError for unknown names)."""
    if isinstance(dtype, str) and dtype in IR_TO_ONNX:
        return IR_TO_ONNX[dtype]
    _dt.to_numpy(dtype)  # raises GraphError listing the IR dtypes
    raise ModelFormatError(f"{where}: IR dtype {dtype!r} has no ONNX element type")  # pragma: no cover
