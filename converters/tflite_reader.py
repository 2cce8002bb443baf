"""Read a ``.tflite`` flatbuffer with numpy and the standard library only, verifying it first.

Nothing here imports TensorFlow, LiteRT or the ``flatbuffers`` package: the bytes are walked by
our own table reader, and every offset, index, count and size is checked before it is used,
which covers what ``flatbuffers::Verifier`` and TFLite's ``verifier.cc`` check, and more:

* flatbuffer structure: the root offset and the ``TFL3`` identifier; every table, vtable,
  vector and string inside the file and aligned as flatbuffers requires; vtable and field
  sizes; vector lengths in Python ints against the bytes left (never slicing, which clamps);
  strings NUL-terminated UTF-8; union types in range; at most :data:`MAX_TABLES` table visits
  and :data:`MAX_DEPTH` nesting, plus a decoding budget so that shared offsets cannot turn a
  small file into a long walk.
* schema: version 3; buffer, opcode, tensor, subgraph and signature indices in range; builtin
  codes in the enum and named custom ops; the operator order is a valid schedule (each input is
  a constant, a variable, a subgraph input or the output of an earlier operator; no tensor is
  written twice, nor is a constant, variable or subgraph input written); subgraph calls (WHILE,
  IF, CALL, CALL_ONCE, StableHLO bodies) form no cycle; shapes, quantization, constant sizes,
  string tables, sparse metadata and large-model (out-of-flatbuffer) data ranges are checked.

Every problem raises :class:`~edgeinfer.errors.ModelFormatError` naming the file and the
field path, e.g. ``model.tflite: subgraphs[0].operators[12].inputs[1]: tensor index 999 is
out of range (the subgraph has 87 tensors)``. Nothing in the file is executed.

Tensor types edgeinfer has no dtype for (RESOURCE, VARIANT) are reported as
``"unsupported:RESOURCE"`` / ``"unsupported:VARIANT"``; the importer decides whether the model
can still be used. Constant data of ml_dtypes types (bfloat16, int4, uint4, int2, float8) needs
the ``ml_dtypes`` package and raises MissingDependencyError without it.

The parts live in their own modules and are re-exported here: :mod:`.flatbuffer_walker` (the
checked table walker), :mod:`.tflite_schema` (the operator, tensor type and builtin options
tables) and :mod:`.flexbuffers` (:func:`decode_flexbuffer`, for custom options).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeinfer._files import read_model_file
from edgeinfer.errors import MissingDependencyError, ModelFormatError

from .flatbuffer_walker import (
    MAX_DEPTH, MAX_TABLES, _I32, _I8, _U32, _U64, _U8, _FlatBuffer, _Table,
)
from .flexbuffers import decode_flexbuffer
from .tflite_schema import (
    OPERATORS, OPTIONS_OF_OP, _BUILTIN_OPTIONS, _BUILTIN_OPTIONS2, _CUSTOM, _ENUMS, _ML_DTYPES,
    _OPTION_TABLES, _POSITIVE_FIELDS, _SCALARS, _SUBGRAPH_FIELDS, _TENSOR_TYPES, option_defaults,
)

# Elements of any tensor and bytes of any constant: TFLite's verifier caps bytes at UINT_MAX;
# we keep int32 element counts, which every TFLite kernel indexes with.
MAX_ELEMENTS = 2**31
# numpy arrays have at most 64 dimensions; no TFLite kernel goes past 6.
MAX_RANK = 64
# A densified sparse constant may be larger than the file (that is the point of sparsity), but
# not without bound: 64x the file (a 98%-sparse model is 50x) or 16M elements, whichever is more.
SPARSE_GROWTH, SPARSE_FLOOR = 64, 1 << 24
SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"


# ------------------------------------------------------------------------ public classes
@dataclass(frozen=True, eq=False)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point), per tensor (axis None) or per axis.

    ``details`` holds the QuantizationDetails union when present (``{"type": name, ...}``,
    e.g. BlockwiseQuantization with its scales/zero_points tensor indices); the schema says the
    other fields are then ignored.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class Tensor:
    """One tensor of a subgraph; ``data`` is the constant value (read-only) or None."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None
    data: np.ndarray | None
    quant: Quantization | None
    is_variable: bool
    was_sparse: bool


@dataclass(frozen=True, eq=False)
class Operator:
    """One operator; ``options`` are the builtin options (snake_case keys, enums by name)."""

    op: str
    custom_code: str | None
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...]
    options: dict[str, Any]
    custom_options: bytes | None


@dataclass(frozen=True, eq=False)
class SubGraph:
    name: str
    tensors: list[Tensor]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    operators: list[Operator]


@dataclass(frozen=True)
class SignatureDef:
    key: str
    subgraph_index: int
    inputs: dict[str, int]
    outputs: dict[str, int]


@dataclass(frozen=True, eq=False)
class TFLiteModel:
    version: int
    description: str
    subgraphs: list[SubGraph]
    signature_defs: list[SignatureDef]
    metadata: dict[str, bytes]
    min_runtime: str | None
    raw: Any = field(default=None, repr=False)  # the file's bytes (bytes, or the read-only mmap)



# --------------------------------------------------------------------------- the reader
class _Reader:
    def __init__(self, data, source: str):
        self.fb = _FlatBuffer(data, source)
        self.source = source
        self.buffers: list[tuple[int, int, bool]] = []  # (start, length, is constant data)
        self.constants: dict[tuple, np.ndarray] = {}
        self.densified = 0  # elements of all densified sparse constants, against dense_limit
        self.dense_limit = max(SPARSE_FLOOR, SPARSE_GROWTH * self.fb.size)

    def error(self, path: str, message: str) -> ModelFormatError:
        return self.fb.error(path, message)

    # ----------------------------------------------------------------------- model
    def model(self) -> TFLiteModel:
        fb = self.fb
        if fb.size < 8:
            raise ModelFormatError(f"{self.source}: the file is {fb.size} bytes, too short for a TFLite model")
        if bytes(fb.data[4:8]) != FILE_IDENTIFIER:
            raise ModelFormatError(f"{self.source}: file identifier is {bytes(fb.data[4:8])!r}, "
                                   f"expected {FILE_IDENTIFIER!r} (not a TFLite flatbuffer)")
        root = fb.table(fb.deref(0, "root offset"), "", 1)
        version = root.scalar(0, _U32, "version")
        if version != SCHEMA_VERSION:
            raise self.error("version", f"schema version {version} is not supported (expected {SCHEMA_VERSION})")
        description = root.string(3, "description") or ""
        self.read_buffers(root.tables(4, "buffers"))
        opcodes = [self.opcode(t, f"operator_codes[{i}]") for i, t in enumerate(root.tables(1, "operator_codes"))]
        sg_tables = root.tables(2, "subgraphs")
        if not sg_tables:
            raise self.error("subgraphs", "the model has no subgraphs")
        root.array(5, "<i4", "metadata_buffer")  # deprecated; verified, not used
        metadata = self.metadata(root.tables(6, "metadata"))
        for i, t in enumerate(root.tables(8, "external_buffer_groups")):
            t.string(0, "name")
        n_external = len(root.tables(9, "external_buffers"))
        subgraphs, calls = [], []
        for i, t in enumerate(sg_tables):
            sg, called = self.subgraph(t, f"subgraphs[{i}]", opcodes, len(sg_tables), n_external)
            subgraphs.append(sg)
            calls.append(called)
        self.check_calls(calls)
        signatures = [self.signature(t, f"signature_defs[{i}]", subgraphs)
                      for i, t in enumerate(root.tables(7, "signature_defs"))]
        min_runtime = None
        if "min_runtime_version" in metadata:
            try:
                min_runtime = metadata["min_runtime_version"].split(b"\0", 1)[0].decode("ascii")
            except UnicodeDecodeError:
                raise self.error('metadata["min_runtime_version"]', "not an ASCII version string") from None
        return TFLiteModel(version, description, subgraphs, signatures, metadata, min_runtime, fb.data)

    def read_buffers(self, tables: list) -> None:
        fb = self.fb
        for i, t in enumerate(tables):
            path = f"buffers[{i}]"
            data = t.raw_vector(0, "data")
            offset, size = t.scalar(1, _U64, "offset"), t.scalar(2, _U64, "size")
            if offset > 1:  # large-model data outside the flatbuffer ("valid only if > 1")
                if data is not None and data[1]:
                    raise self.error(path, "has both inline data and an offset/size range")
                if offset > fb.size or size > fb.size - offset:
                    raise self.error(path, f"offset {offset} + size {size} runs past the {fb.size}-byte file")
                entry = (offset, size, True)
            elif data is not None:
                entry = (data[0], data[1], True)
            else:
                entry = (0, 0, False)
            if i == 0 and entry[1]:
                raise self.error(path, "buffer 0 must be the empty sentinel, but it holds data")
            self.buffers.append(entry)

    def opcode(self, t: _Table, path: str) -> tuple[str, str | None, int]:
        code = max(t.scalar(0, _I8, "deprecated_builtin_code"), t.scalar(3, _I32, "builtin_code"))
        if not 0 <= code < len(OPERATORS):
            raise self.error(path, f"builtin code {code} is not a known operator (0..{len(OPERATORS) - 1})")
        custom = t.string(1, "custom_code")
        if code == _CUSTOM and not custom:
            raise self.error(f"{path}.custom_code", "a CUSTOM operator needs a non-empty custom_code")
        return OPERATORS[code], custom if code == _CUSTOM else None, t.scalar(2, _I32, "version", 1)

    def metadata(self, tables: list) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i, t in enumerate(tables):
            path = f"metadata[{i}]"
            name = t.string(0, "name") or ""
            index = t.scalar(1, _U32, "buffer")
            if index >= len(self.buffers):
                raise self.error(f"{path}.buffer", f"buffer index {index} is out of range "
                                 f"(the model has {len(self.buffers)} buffers)")
            if name in out:
                raise self.error(f"{path}.name", f"duplicate metadata name {name!r}")
            start, length, _ = self.buffers[index]
            out[name] = bytes(self.fb.data[start:start + length])
        return out

    def signature(self, t: _Table, path: str, subgraphs: list[SubGraph]) -> SignatureDef:
        index = t.scalar(4, _U32, "subgraph_index")
        if index >= len(subgraphs):
            raise self.error(f"{path}.subgraph_index", f"subgraph {index} is out of range "
                             f"(the model has {len(subgraphs)} subgraphs)")
        n = len(subgraphs[index].tensors)
        maps = []
        for slot, kind in ((0, "inputs"), (1, "outputs")):
            names: dict[str, int] = {}
            for i, m in enumerate(t.tables(slot, kind)):
                name = m.string(0, "name") or ""
                tensor = m.scalar(1, _U32, "tensor_index")
                if tensor >= n:
                    raise self.error(f"{path}.{kind}[{i}].tensor_index", f"tensor index {tensor} is out of range "
                                     f"(subgraph {index} has {n} tensors)")
                if name in names:
                    raise self.error(f"{path}.{kind}[{i}].name", f"duplicate signature name {name!r}")
                names[name] = tensor
            maps.append(names)
        return SignatureDef(t.string(2, "signature_key") or "", index, maps[0], maps[1])

    # -------------------------------------------------------------------- subgraphs
    def subgraph(self, t: _Table, path: str, opcodes: list, n_subgraphs: int, n_external: int):
        tensors = [self.tensor(tt, f"{path}.tensors[{i}]", n_external) for i, tt in enumerate(t.tables(0, "tensors"))]
        n = len(tensors)
        ios = []
        for slot, kind in ((1, "inputs"), (2, "outputs")):
            indices = t.ints(slot, kind) or ()
            for i, x in enumerate(indices):
                if not 0 <= x < n:
                    raise self.error(f"{path}.{kind}[{i}]", f"tensor index {x} is out of range "
                                     f"(the subgraph has {n} tensors)")
            ios.append(indices)
        available = {i for i, x in enumerate(tensors) if x.data is not None or x.is_variable} | set(ios[0])
        fixed = {i: "a constant" for i, x in enumerate(tensors) if x.data is not None}
        fixed.update({i: "a variable" for i, x in enumerate(tensors) if x.is_variable and i not in fixed})
        fixed.update({i: "a subgraph input" for i in ios[0] if i not in fixed})
        written: dict[int, int] = {}
        operators, called = [], set()
        for k, ot in enumerate(t.tables(3, "operators")):
            op = self.operator(ot, f"{path}.operators[{k}]", opcodes, n, n_subgraphs, called)
            opath = f"{path}.operators[{k}]"
            for i, x in enumerate(op.inputs):
                if x != -1 and x not in available:
                    raise self.error(f"{opath}.inputs[{i}]", f"tensor {x} ({tensors[x].name!r}) is not produced: it is "
                                     "not a constant, variable or subgraph input, nor an output of an earlier operator")
            for i, x in enumerate(op.outputs):
                if x in op.inputs:
                    raise self.error(f"{opath}.outputs[{i}]", f"tensor {x} is both an input and an output of {op.op}")
                if x in fixed:
                    raise self.error(f"{opath}.outputs[{i}]", f"tensor {x} ({tensors[x].name!r}) is {fixed[x]}, "
                                     "an operator cannot write it")
                if x in written:
                    raise self.error(f"{opath}.outputs[{i}]", f"tensor {x} ({tensors[x].name!r}) is already written "
                                     f"by operator {written[x]}")
                written[x] = k
                available.add(x)
            operators.append(op)
        for i, x in enumerate(ios[1]):
            if x not in available:
                raise self.error(f"{path}.outputs[{i}]", f"tensor {x} ({tensors[x].name!r}) is never produced: it is "
                                 "not a constant, variable or subgraph input, nor an operator output")
        for i, x in enumerate(tensors):
            details = x.quant.details if x.quant else None
            for key in ("scales", "zero_points"):
                if not details or key not in details:
                    continue
                value = details[key]
                if not (0 <= value < n or (key == "zero_points" and value == -1)):
                    raise self.error(f"{path}.tensors[{i}].quantization.details.{key}",
                                     f"tensor index {value} is out of range (the subgraph has {n} tensors)")
        name = t.string(4, "name") or ""
        return SubGraph(name, tensors, ios[0], ios[1], operators), called

    def check_calls(self, calls: list[set]) -> None:
        """Reject cycles in the subgraph call graph (WHILE body calling itself, A->B->A, ...)."""
        state = [0] * len(calls)  # 0 unvisited, 1 on the stack, 2 done
        for start in range(len(calls)):
            if state[start]:
                continue
            stack = [(start, iter(sorted(calls[start])))]
            state[start] = 1
            while stack:
                node, edges = stack[-1]
                nxt = next(edges, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                elif state[nxt] == 1:
                    chain = " -> ".join(str(s) for s, _ in stack[[s for s, _ in stack].index(nxt):]) + f" -> {nxt}"
                    raise self.error(f"subgraphs[{node}]", f"subgraph calls form a cycle: {chain}")
                elif state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(sorted(calls[nxt]))))

    def operator(self, t: _Table, path: str, opcodes: list, n: int, n_subgraphs: int, called: set) -> Operator:
        index = t.scalar(0, _U32, "opcode_index")
        if index >= len(opcodes):
            raise self.error(f"{path}.opcode_index", f"opcode index {index} is out of range "
                             f"(the model has {len(opcodes)} operator codes)")
        op, custom_code, version = opcodes[index]
        lists = []
        for slot, kind in ((1, "inputs"), (2, "outputs"), (8, "intermediates")):
            indices = t.ints(slot, kind)
            if indices is None and kind != "intermediates":
                raise self.error(f"{path}.{kind}", f"{op} has no '{kind}' vector")
            indices = indices or ()
            for i, x in enumerate(indices):
                if not (0 <= x < n or (x == -1 and kind == "inputs")):
                    raise self.error(f"{path}.{kind}[{i}]", f"tensor index {x} is out of range "
                                     f"(the subgraph has {n} tensors)")
            lists.append(indices)
        t.array(7, "u1", "mutating_variable_inputs")
        options = {}
        for type_slot, slot, name, members in ((3, 4, "builtin_options", _BUILTIN_OPTIONS),
                                               (11, 12, "builtin_options_2", _BUILTIN_OPTIONS2)):
            found = t.union(type_slot, slot, name, members)
            if found is None:
                continue
            table_name, table = found
            expected = OPTIONS_OF_OP.get(op)
            if expected and expected != table_name:
                raise self.error(f"{path}.{name}_type", f"{op} carries {table_name}, expected {expected}")
            options.update(self.options(table, table_name, f"{path}.{name}", n_subgraphs, called))
        for key, value in option_defaults(op).items():
            options.setdefault(key, value)
        for key in _POSITIVE_FIELDS.get(OPTIONS_OF_OP.get(op, ""), ()):
            if options[key] <= 0:
                raise self.error(f"{path}.builtin_options.{key}", f"{op} {key} is {options[key]}, expected > 0")
        custom = None
        vec = t.raw_vector(5, "custom_options")
        big_off = t.scalar(9, _U64, "large_custom_options_offset")
        big_size = t.scalar(10, _U64, "large_custom_options_size")
        if big_off > 1:
            if big_off > self.fb.size or big_size > self.fb.size - big_off:
                raise self.error(f"{path}.large_custom_options_offset", f"offset {big_off} + size {big_size} runs "
                                 f"past the {self.fb.size}-byte file")
            vec = (big_off, big_size)
        if vec is not None:
            custom = bytes(self.fb.data[vec[0]:vec[0] + vec[1]])
        fmt = t.scalar(6, _I8, "custom_options_format")
        if fmt != 0:
            raise self.error(f"{path}.custom_options_format", f"{fmt} is not a known format (0: FLEXBUFFERS)")
        return Operator(op, custom_code, version, lists[0], lists[1], lists[2], options, custom)

    def options(self, t: _Table | None, table_name: str, path: str, n_subgraphs: int, called: set) -> dict:
        out = {}
        fields = _OPTION_TABLES[table_name]
        for slot, f in enumerate(fields):
            if f is None:
                continue
            if t is None:
                out[f.name] = f.default
                continue
            kind = f.kind
            if kind.startswith("["):
                inner = kind[1:-1]
                pos = t.target(slot, f.name)
                if not pos:
                    value: Any = f.default
                elif inner == "u8":
                    start, count = self.fb.vector(pos, 1, t.where(f.name))
                    value = bytes(self.fb.data[start:start + count])
                else:
                    st = _ENUMS[inner][0] if inner in _ENUMS else _SCALARS[inner]
                    arr = self.fb.array(pos, st.format, t.where(f.name)).tolist()
                    value = tuple(self.enum(inner, v, t.where(f.name)) for v in arr) if inner in _ENUMS else (
                        tuple(bool(v) for v in arr) if inner == "bool" else tuple(arr))
            elif kind == "str":
                value = t.string(slot, f.name) or ""
            elif kind in _ENUMS:
                raw = t.scalar(slot, _ENUMS[kind][0], f.name, None)
                value = f.default if raw is None else self.enum(kind, raw, t.where(f.name))
            else:
                value = t.scalar(slot, _SCALARS[kind], f.name, f.default)
                if kind == "bool":
                    value = bool(value)
            if f.name in _SUBGRAPH_FIELDS:
                for x in (value if isinstance(value, tuple) else (value,)):
                    if not 0 <= x < n_subgraphs:
                        raise self.error(t.where(f.name), f"subgraph index {x} is out of range "
                                         f"(the model has {n_subgraphs} subgraphs)")
                    called.add(x)
            out[f.name] = value
        return out

    def enum(self, kind: str, value: int, path: str) -> str:
        names = _ENUMS[kind][1]
        if not 0 <= value < len(names):
            raise self.error(path, f"{value} is not a valid {kind} (0..{len(names) - 1})")
        return names[value]

    # ---------------------------------------------------------------------- tensors
    def tensor(self, t: _Table, path: str, n_external: int) -> Tensor:
        code = t.scalar(1, _I8, "type")
        if not 0 <= code < len(_TENSOR_TYPES):
            raise self.error(f"{path}.type",
                             f"tensor type {code} is not a known TensorType (0..{len(_TENSOR_TYPES) - 1})")
        type_name, dtype, bits = _TENSOR_TYPES[code]
        name = t.string(3, "name") or ""
        shape = t.ints(0, "shape") or ()
        self.check_shape(shape, f"{path}.shape", signature=False)
        signature = t.ints(7, "shape_signature")
        if signature is not None:
            self.check_shape(signature, f"{path}.shape_signature", signature=True)
            if len(signature) != len(shape):
                raise self.error(f"{path}.shape_signature",
                                 f"rank {len(signature)} differs from the shape's {len(shape)}")
        t.scalar(8, _U8, "has_rank")
        for i, v in enumerate(t.tables(9, "variant_tensors")):
            v.ints(0, "shape")
        if t.scalar(10, _U32, "external_buffer"):
            raise self.error(f"{path}.external_buffer", "constant data in external files is not supported "
                             "(only data inside the .tflite file is read)")
        buffer = t.scalar(2, _U32, "buffer")
        if buffer >= len(self.buffers):
            raise self.error(f"{path}.buffer", f"buffer index {buffer} is out of range "
                             f"(the model has {len(self.buffers)} buffers)")
        sparsity = t.table(6, "sparsity")
        data = None
        start, length, is_const = self.buffers[buffer]
        if buffer and is_const:
            if bits == 0 and dtype != "string":
                raise self.error(f"{path}.type", f"a constant tensor cannot have type {type_name}")
            key = (buffer, code, shape, sparsity.pos if sparsity else 0)
            data = self.constants.get(key)
            if data is None:
                data = self.constant(path, name, dtype, bits, shape, start, length, sparsity)
                self.constants[key] = data
        elif sparsity is not None:
            raise self.error(f"{path}.sparsity", "only constant tensors can be sparse")
        quant = self.quantization(t.table(4, "quantization"), f"{path}.quantization", shape)
        return Tensor(name, dtype, shape, signature, data, quant, bool(t.scalar(5, _U8, "is_variable")),
                      sparsity is not None)

    def check_shape(self, dims: tuple, path: str, signature: bool) -> None:
        if len(dims) > MAX_RANK:
            raise self.error(path, f"rank {len(dims)} exceeds {MAX_RANK}")
        lowest = -1 if signature else 0
        count = 1
        for i, d in enumerate(dims):
            if d < lowest:
                raise self.error(f"{path}[{i}]", f"dimension {d} is negative")
            count *= max(d, 1)
        if count > MAX_ELEMENTS:
            raise self.error(path, f"{list(dims)} has {count} elements, more than {MAX_ELEMENTS}")

    def quantization(self, q: _Table | None, path: str, shape: tuple) -> Quantization | None:
        if q is None:
            return None
        lo, hi = q.array(0, "<f4", "min"), q.array(1, "<f4", "max")
        scale, zero = q.array(2, "<f4", "scale"), q.array(3, "<i8", "zero_point")
        details = None
        found = q.union(4, 5, "details", [None, "CustomQuantization", "BlockwiseQuantization", "MultiAxisQuantization"])
        if found is not None:
            kind, d = found
            details = {"type": kind}
            if d is not None and kind == "CustomQuantization":
                vec = d.raw_vector(0, "custom")
                details["custom"] = b"" if vec is None else bytes(self.fb.data[vec[0]:vec[0] + vec[1]])
            elif d is not None:
                details.update(scales=d.scalar(0, _I32, "scales"), zero_points=d.scalar(1, _I32, "zero_points"),
                               block_size=d.scalar(2, _I32, "block_size"))
                if kind == "MultiAxisQuantization":
                    details["quantized_dimensions"] = d.ints(3, "quantized_dimensions") or ()
        axis = q.scalar(6, _I32, "quantized_dimension")
        if scale is None or scale.size == 0:
            if details is None:
                return None  # TFLite reads no scale as "not quantized"
            scale = np.zeros(0, np.float32)
            zero = zero if zero is not None else np.zeros(0, np.int64)
        else:
            zero = zero if zero is not None else np.zeros(0, np.int64)
            if zero.size != scale.size:
                raise self.error(f"{path}.zero_point", f"{zero.size} zero points for {scale.size} scales; "
                                 "they must have the same length")
            if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
                bad = int(np.flatnonzero(~(np.isfinite(scale) & (scale > 0)))[0])
                raise self.error(f"{path}.scale[{bad}]", f"scale {float(scale[bad])} is not finite and positive")
        if axis < 0 or axis >= max(len(shape), 1):
            raise self.error(f"{path}.quantized_dimension", f"{axis} is out of range for rank {len(shape)}")
        if scale.size > 1 and scale.size != shape[axis]:
            raise self.error(f"{path}.scale", f"{scale.size} scales, expected 1 or shape[{axis}] = {shape[axis]}")
        for arr in (scale, zero, lo, hi):
            if arr is not None:
                arr.flags.writeable = False
        return Quantization(scale, zero, axis if scale.size > 1 else None, lo, hi, details)

    # -------------------------------------------------------------------- constants
    def constant(self, path: str, name: str, dtype: str, bits: int, shape: tuple, start: int, length: int,
                 sparsity: _Table | None) -> np.ndarray:
        count = math.prod(shape)
        where = f"{path} ({name!r})"
        if dtype == "string":
            if sparsity is not None:
                raise self.error(f"{path}.sparsity", "string tensors cannot be sparse")
            return self.strings(where, shape, count, start, length)
        if sparsity is not None:
            stored, dense_index = self.sparse(sparsity, f"{path}.sparsity", shape, count)
        else:
            stored, dense_index = count, None
        need = (stored * bits + 7) // 8
        if need != length:
            raise self.error(where, f"{dtype} tensor of {stored} stored elements requires {need} bytes, "
                             f"but its buffer has {length}")
        self.fb.charge(length if (bits < 8 or dtype == "bool" or dense_index is not None) else 0, path)
        raw = np.frombuffer(self.fb.data, np.uint8, length, start)
        values = self.decode(where, dtype, bits, raw, stored)
        if dense_index is not None:
            try:
                dense = np.zeros(count, values.dtype)
            except MemoryError:
                raise self.error(where, f"cannot allocate the dense {list(shape)} tensor") from None
            dense[dense_index] = values
            values = dense
        values = values.reshape(shape)
        values.flags.writeable = False
        return values

    def decode(self, where: str, dtype: str, bits: int, raw: np.ndarray, count: int) -> np.ndarray:
        """Stored bytes -> a 1-D array of ``count`` values (a view when aligned, else a copy)."""
        if dtype in _ML_DTYPES:
            try:
                import ml_dtypes
            except ImportError:
                raise MissingDependencyError("ml_dtypes", "onnx", f"reading {where} of type {dtype}") from None
            np_dtype = np.dtype(getattr(ml_dtypes, _ML_DTYPES[dtype]))
            if bits < 8:  # packed, low bits first (TFLite's UnpackDenseInt4IntoInt8)
                shifts = np.arange(0, 8, bits, dtype=np.uint8)
                vals = ((raw[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)[:count]
                if dtype.startswith("int"):  # sign-extend: move the value to the top bits and back
                    vals = (vals << np.uint8(8 - bits)).view(np.int8) >> np.int8(8 - bits)
                return vals.view(np_dtype)
            return _aligned(raw, np_dtype.itemsize).view(np_dtype)  # little-endian hosts only
        if dtype == "bool":
            if raw.size and int(raw.max()) > 1:
                bad = int(np.flatnonzero(raw > 1)[0])
                raise self.error(where, f"bool element {bad} is byte {int(raw[bad])}, expected 0 or 1")
            return raw.view(np.bool_)
        return _aligned(raw, np.dtype(dtype).itemsize).view(np.dtype(dtype).newbyteorder("<"))

    def strings(self, where: str, shape: tuple, count: int, start: int, length: int) -> np.ndarray:
        """TFLite string buffer: int32 N, N+1 int32 offsets (from the buffer start), the bytes."""
        if length < 4:
            raise self.error(where, f"string buffer of {length} bytes has no count")
        raw = np.frombuffer(self.fb.data, np.uint8, length, start)
        n = int(raw[:4].copy().view("<i4")[0])
        if n != count:
            raise self.error(where, f"string buffer holds {n} strings, but shape {list(shape)} needs {count}")
        header = 4 * (n + 2)
        if header > length:
            raise self.error(where, f"{n} strings need a {header}-byte offset table, but the buffer has {length} bytes")
        self.fb.charge(length, where)
        offsets = raw[4:header].copy().view("<i4").astype(np.int64)
        if offsets[0] != header or offsets[-1] != length or np.any(np.diff(offsets) < 0):
            raise self.error(where, f"string offsets must rise from {header} to the buffer size {length}")
        body = raw.tobytes()
        arr = np.empty(n, dtype=object)
        arr[:] = [body[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
        arr = arr.reshape(shape)
        arr.flags.writeable = False
        return arr

    def sparse(self, sp: _Table, path: str, shape: tuple, count: int) -> tuple[int, np.ndarray]:
        """Verify sparsity metadata like TFLite's VerifyAndCountSparseElements; return (stored
        element count, flat dense index of each stored element)."""
        order = sp.ints(0, "traversal_order")
        metas = sp.tables(2, "dim_metadata")
        block_map = sp.ints(1, "block_map") or ()
        rank = len(shape)
        if order is None or not metas:
            raise self.error(path, "traversal_order and dim_metadata are required")
        total = len(order)
        if total < rank or len(metas) != total or len(block_map) != total - rank:
            raise self.error(path, f"traversal_order has {total} dims, dim_metadata {len(metas)} and block_map "
                             f"{len(block_map)} for a rank-{rank} tensor")
        if sorted(order[:rank]) != list(range(rank)) or sorted(order[rank:]) != list(range(rank, total)):
            raise self.error(f"{path}.traversal_order",
                             f"{list(order)} is not a permutation of the dims then the block dims")
        if sorted(block_map) != sorted(set(block_map)) or any(not 0 <= b < rank for b in block_map):
            raise self.error(f"{path}.block_map",
                             f"{list(block_map)} must name distinct dims of the rank-{rank} tensor")
        self.densified += count
        if self.densified > self.dense_limit:
            raise self.error(path, f"densifying {list(shape)} ({count} elements) takes the model's sparse "
                             f"constants past the limit of {self.dense_limit} dense elements")
        sizes = list(shape) + [0] * (total - rank)
        block = [1] * rank
        for j, b in enumerate(block_map):
            level = order.index(rank + j)
            m = metas[level]
            bsize = m.scalar(1, _I32, "dense_size")
            if m.scalar(0, _I8, "format") != 0 or bsize <= 0 or shape[b] % bsize:
                raise self.error(f"{path}.dim_metadata[{level}]", f"block dim {rank + j} must be DENSE with a "
                                 f"size > 0 dividing shape[{b}] = {shape[b]}")
            sizes[rank + j], block[b] = bsize, bsize
            sizes[b] = shape[b] // bsize
        strides = [1] * rank
        for i in range(rank - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        weight = [strides[i] * block[i] for i in range(rank)] + [strides[b] for b in block_map]
        flat = np.zeros(1, np.int64)  # dense offset of each node at the current level
        for level, dim in enumerate(order):
            m, mpath = metas[level], f"{path}.dim_metadata[{level}]"
            fmt = m.scalar(0, _I8, "format")
            if fmt == 0:
                size = m.scalar(1, _I32, "dense_size")
                if size != sizes[dim]:
                    raise self.error(f"{mpath}.dense_size", f"{size}, expected {sizes[dim]}")
                flat = (flat[:, None] + np.arange(size, dtype=np.int64) * weight[dim]).reshape(-1)
            elif fmt == 1:
                segments = self.index_vector(m, 2, 3, "array_segments", mpath)
                indices = self.index_vector(m, 4, 5, "array_indices", mpath)
                if segments.size != flat.size + 1 or segments[0] != 0 or np.any(np.diff(segments) < 0):
                    raise self.error(f"{mpath}.array_segments", f"expected {flat.size + 1} non-decreasing "
                                     "segment starts from 0")
                if int(segments[-1]) != indices.size:
                    raise self.error(f"{mpath}.array_indices", f"{indices.size} indices, but the segments end at "
                                     f"{int(segments[-1])}")
                if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= sizes[dim]):
                    raise self.error(f"{mpath}.array_indices", f"indices must lie in [0, {sizes[dim]})")
                flat = np.repeat(flat, np.diff(segments)) + indices * weight[dim]
            else:
                raise self.error(f"{mpath}.format", f"{fmt} is not a DimensionType (0 DENSE, 1 SPARSE_CSR)")
        return int(flat.size), flat

    def index_vector(self, m: _Table, type_slot: int, slot: int, name: str, path: str) -> np.ndarray:
        found = m.union(type_slot, slot, name, [None, "<i4", "<u2", "u1"])
        if found is None or found[1] is None:
            raise self.error(f"{path}.{name}", "a SPARSE_CSR dimension needs this vector")
        arr = found[1].array(0, found[0], "values")
        if arr is None:
            raise self.error(f"{path}.{name}.values", "missing")
        return arr.astype(np.int64)


def _aligned(raw: np.ndarray, itemsize: int = 1) -> np.ndarray:
    """``raw`` itself when its address suits ``itemsize``-byte elements, else an aligned copy."""
    if itemsize > 1 and raw.ctypes.data % itemsize:
        return raw.copy()
    return raw


# ---------------------------------------------------------------------------- reading files
def read_tflite(source: str | os.PathLike | bytes | bytearray | memoryview, *, name: str | None = None,
                mmap: bool = True) -> TFLiteModel:
    """Read and verify a ``.tflite`` model.

    Args:
        source: a path, or the model's bytes (bytearray and memoryview are copied once).
        name: what error messages call the model (default: the path, or ``"<bytes>"``).
        mmap: map a file read-only instead of reading it; constant tensors are then zero-copy,
            read-only views of the mapping. The mapping is only safe while the file stays as it
            is (truncating it while mapped raises SIGBUS); use ``mmap=False`` on network or
            removable filesystems.

    Returns:
        The verified model. Constant tensors are read-only numpy arrays (string tensors are
        object arrays of ``bytes``; sparse constants are densified; int4/int2 are unpacked).

    Raises:
        ModelFormatError: the file cannot be read, or is malformed; the message names the file
            and the field path.
        MissingDependencyError: a constant of a bfloat16/int4/float8 type needs ``ml_dtypes``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source if isinstance(source, bytes) else bytes(source)
        return _Reader(data, name or "<bytes>").model()
    path = os.fspath(source)
    label = name or path
    data = read_model_file(path, label, min_size=8, mmap=mmap,
                           too_short=lambda n: f"the file is {n} bytes, too short for a TFLite model")
    return _Reader(data, label).model()



__all__ = [
    "read_tflite", "decode_flexbuffer", "option_defaults", "TFLiteModel", "SubGraph", "Tensor",
    "Quantization", "Operator", "SignatureDef", "OPERATORS", "OPTIONS_OF_OP", "MAX_DEPTH", "MAX_TABLES",
]
