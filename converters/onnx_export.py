"""IR -> ONNX: :func:`export_onnx`.

Opset rule: the IR's nodes are in latest-opset form, and every form the importer produces is
valid and means the same from :data:`~.onnx_opset.IR_ONNX_OPSET` (21) on. So, unless the
caller names an opset, the default domain is written at ``max(graph.opset[""], 21)`` (21 when
the graph records none), never above what the installed onnx knows. An explicit ``opset`` is
accepted when it is at least the first opset of every node's IR form (:data:`IR_FORM_SINCE`,
e.g. Softmax 13, ReduceMean 18) and the result passes ``onnx.checker``.

Other rules: constants become initializers; overridable inputs (constants that are also inputs)
are written as both; attributes get the type the op schema declares (so ``alpha=1`` is still a
FLOAT), element-type attributes go back to enum codes; nodes of the ``edgeinfer`` domain
(FusedConv and friends, internal to the cpu backend) cannot be exported. Every model passes
``onnx.checker.check_model(full_check=True)`` before it is returned or written.

Files are written atomically: a temp file in the destination folder, fsync, ``os.replace``,
which swaps a symlink at the destination for the new file instead of writing through it.
When the weights would push the protobuf past 2 GiB they go to one ``<name>.data`` file next
to the model (offsets aligned to 64 bytes), also written atomically; the data file is renamed
into place just before the model, so a crash in between leaves the old model with new data.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer import dtypes as _dt
from edgeinfer.errors import ExportError, require
from edgeinfer.graph import Graph, Node, ValueInfo

onnx = require("onnx", "onnx", "ONNX export")

from .onnx_dtypes import DTYPE_ATTRIBUTES, IR_TO_ONNX, onnx_dtype  # noqa: E402
from .onnx_opset import IR_ONNX_OPSET  # noqa: E402
from .onnx_tensors import pack_bits, split_relative_location  # noqa: E402

MAX_PROTO_BYTES = 2**31 - 1
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26  # constant bytes above which weights are written externally
EXTERNAL_MIN_TENSOR_BYTES = 1024  # smaller tensors stay inline even then
_ALIGN = 64
INTERNAL_DOMAIN = "edgeinfer"

# First ai.onnx opset at which each op's IR form (inputs, attributes, meaning) exists.
IR_FORM_SINCE: dict[str, int] = {
    "Softmax": 13, "LogSoftmax": 13, "Hardmax": 13, "Squeeze": 13, "Unsqueeze": 13, "ReduceSum": 13,
    "Split": 13, "Resize": 13, "Dropout": 12, "Clip": 11, "Pad": 11, "TopK": 11, "Gemm": 11,
    "ScatterElements": 11, "Slice": 10, "GridSample": 20, "DFT": 20, "ReduceL1": 18, "ReduceL2": 18,
    "ReduceLogSum": 18, "ReduceLogSumExp": 18, "ReduceMax": 18, "ReduceMean": 18, "ReduceMin": 18,
    "ReduceProd": 18, "ReduceSumSquare": 18,
}

_T = onnx.AttributeProto
_LIST_OF = {_T.FLOATS: _T.FLOAT, _T.INTS: _T.INT, _T.STRINGS: _T.STRING, _T.TENSORS: _T.TENSOR, _T.GRAPHS: _T.GRAPH}


def export_onnx(graph: Graph, path: str | os.PathLike | None = None, *, opset: int | None = None,
                ir_version: int | None = None):
    """Export an IR graph as an ONNX model.

    Args:
        graph: the graph (validated first; not modified).
        path: where to write the ``.onnx`` file (atomically), or ``None`` to only build it.
        opset: ai.onnx opset to write; default ``max(graph.opset[""], 21)`` (see module doc).
        ir_version: ONNX IR version; default the oldest that supports the opsets (at least 4).

    Returns:
        The ``onnx.ModelProto`` (with external-data references when weights were written
        next to ``path``).

    Raises:
        ExportError: internal-only ops, an opset too old for the graph's ops, attribute
            values that do not fit the schema, a model over 2 GiB without ``path``, a model
            the ONNX checker rejects, or a write failure.
        GraphError: the graph itself does not validate.
    """
    graph.validate()
    internal = [f"{n.op_type} node '{n.name or n.outputs[0]}'" for n in graph.walk_nodes()
                if n.domain == INTERNAL_DOMAIN]
    if internal:
        raise ExportError(
            f"cannot export ops of the internal '{INTERNAL_DOMAIN}' domain (made by the cpu backend's "
            f"fusions): {', '.join(internal)}; export the graph before compiling it"
        )
    opsets = _choose_opsets(graph, opset)
    weight_bytes = sum(int(c.nbytes) for g in graph.walk_graphs() for c in g.constants.values() if c.dtype != object)
    external = weight_bytes > EXTERNAL_DATA_THRESHOLD
    if external and path is None:
        raise ExportError(
            f"the graph holds {weight_bytes} bytes of weights, more than one ONNX protobuf can carry; "
            f"pass a path so they are written as external data next to the model"
        )
    if path is None:
        model = _Builder(opsets).model(graph, ir_version)
        _check(model)
        return model
    return _write(graph, Path(path), opsets, ir_version, external)


# ------------------------------------------------------------------- opsets
def required_opset(graph: Graph) -> tuple[int, list[str]]:
    """The oldest ai.onnx opset the graph's node forms need, and the ops that need it."""
    need, why = 7, []
    for n in graph.walk_nodes():
        if n.domain != "":
            continue
        v = IR_FORM_SINCE.get(n.op_type, 7)
        if n.op_type == "Split" and "num_outputs" in n.attrs:
            v = 18
        if v > need:
            need, why = v, [n.op_type]
        elif v == need and v > 7 and n.op_type not in why:
            why.append(n.op_type)
    return need, why


def _choose_opsets(graph: Graph, opset: int | None) -> dict[str, int]:
    latest = onnx.defs.onnx_opset_version()
    recorded = {("" if d == "ai.onnx" else d): int(v) for d, v in graph.opset.items()}
    if opset is None:
        base = recorded.get("", 0)
        opset = max(base if base >= 7 else 0, IR_ONNX_OPSET)
        if opset > latest:
            raise ExportError(f"the graph records opset {opset}, newer than the installed onnx supports ({latest})")
    else:
        if not isinstance(opset, int) or not 7 <= opset <= latest:
            raise ExportError(f"opset {opset!r} is out of range; onnx {onnx.__version__} writes opsets 7 to {latest}")
        need, why = required_opset(graph)
        if opset < need:
            raise ExportError(f"opset {opset} is too old for this graph: {', '.join(why)} need opset {need} or newer")
    out = {"": opset}
    for n in graph.walk_nodes():
        if n.domain and n.domain not in out:
            out[n.domain] = recorded.get(n.domain, 1)
    return out


# ------------------------------------------------------------------ building
class _Builder:
    """Builds protos; ``sink`` (when set) receives tensor bytes written externally."""

    def __init__(self, opsets: dict[str, int], sink=None, location: str = ""):
        self.opsets = opsets
        self.sink = sink
        self.location = location

    def model(self, graph: Graph, ir_version: int | None):
        m = onnx.ModelProto()
        imports = [onnx.helper.make_opsetid(d, v) for d, v in sorted(self.opsets.items())]
        m.opset_import.extend(imports)
        m.ir_version = ir_version or max(4, onnx.helper.find_min_ir_version_for(imports, ignore_unknown=True))
        from edgeinfer import __version__

        m.producer_name, m.producer_version = "edgeinfer", __version__
        meta = dict(graph.metadata)
        for key in ("onnx.source_opset", "onnx.ir_version"):
            meta.pop(key, None)
        m.doc_string = meta.pop("onnx.doc_string", "")
        m.domain = meta.pop("onnx.domain", "")
        version = meta.pop("onnx.model_version", "0")
        m.model_version = int(version) if str(version).isdigit() else 0
        for k, v in meta.items():
            entry = m.metadata_props.add()
            entry.key, entry.value = str(k), str(v)
        m.graph.CopyFrom(self.graph(graph))
        _fill_io_shapes(m)
        return m

    def graph(self, g: Graph):
        gp = onnx.GraphProto()
        gp.name = g.name or "graph"
        gp.input.extend(_value_info(v) for v in g.inputs)
        gp.output.extend(_value_info(v) for v in g.outputs)
        skip = set(g.input_names) | set(g.output_names) | set(g.constants)
        gp.value_info.extend(_value_info(v) for k, v in g.value_info.items() if k not in skip)
        for name, arr in g.constants.items():
            gp.initializer.append(self.tensor(arr, name, f"constant '{name}'"))
        for n in g.nodes:
            gp.node.append(self.node(n))
        return gp

    def node(self, n: Node):
        np_ = onnx.NodeProto()
        np_.op_type, np_.domain, np_.name = n.op_type, n.domain, n.name
        np_.input.extend(n.inputs)
        np_.output.extend(n.outputs)
        schema = _schema(n, self.opsets)
        for key, value in n.attrs.items():
            if value is None:
                continue
            declared = None
            if schema is not None and key in schema.attributes:
                declared = int(schema.attributes[key].type)
            where = f"{n.label} attribute '{key}'"
            if n.domain == "" and (n.op_type, key) in DTYPE_ATTRIBUTES:
                value = value if isinstance(value, int) and value in IR_TO_ONNX.values() else onnx_dtype(value, where)
            np_.attribute.append(self.attribute(key, value, declared, where))
        return np_

    def attribute(self, key: str, value: Any, declared: int | None, where: str):
        kind = declared if declared is not None else _infer_kind(value, where)
        a = onnx.AttributeProto()
        a.name, a.type = key, kind
        try:
            if kind == _T.FLOAT:
                a.f = _as_float(value, where)
            elif kind == _T.INT:
                a.i = _as_int(value, where)
            elif kind == _T.STRING:
                a.s = _as_bytes(value, where)
            elif kind == _T.TENSOR:
                a.t.CopyFrom(self.tensor(np.asarray(value), "", where))
            elif kind == _T.GRAPH:
                a.g.CopyFrom(self.graph(_as_graph(value, where)))
            elif kind == _T.TYPE_PROTO:
                a.tp.CopyFrom(_type_proto(str(value), None, where))
            elif kind in _LIST_OF:
                items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
                if kind == _T.FLOATS:
                    a.floats.extend(_as_float(v, where) for v in items)
                elif kind == _T.INTS:
                    a.ints.extend(_as_int(v, where) for v in items)
                elif kind == _T.STRINGS:
                    a.strings.extend(_as_bytes(v, where) for v in items)
                elif kind == _T.TENSORS:
                    a.tensors.extend(self.tensor(np.asarray(v), "", where) for v in items)
                else:
                    a.graphs.extend(self.graph(_as_graph(v, where)) for v in items)
            else:
                raise ExportError(f"{where}: attributes of type {kind} cannot be exported")
        except (TypeError, ValueError, OverflowError) as e:
            raise ExportError(f"{where}: value {value!r} does not fit the attribute type: {e}") from None
        return a

    def tensor(self, arr: np.ndarray, name: str, where: str):
        dtype = _dt.from_numpy(arr.dtype)
        t = onnx.TensorProto()
        t.name = name
        t.data_type = onnx_dtype(dtype, where)
        t.dims.extend(int(d) for d in arr.shape)
        if dtype == "string":
            t.string_data.extend(_as_bytes(s, where) for s in arr.reshape(-1))
            return t
        if dtype in _dt.PACKED_BITS:
            data = pack_bits(arr, dtype)
        elif dtype in _dt.LOW_PRECISION:
            data = np.ascontiguousarray(arr).view(np.uint16 if dtype == "bfloat16" else np.uint8)
            data = data.astype(data.dtype.newbyteorder("<"))
        else:
            data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        if self.sink is not None and name and data.nbytes >= EXTERNAL_MIN_TENSOR_BYTES:
            offset = self.sink(data)
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", self.location), ("offset", str(offset)), ("length", str(data.nbytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
        else:
            t.raw_data = data.tobytes()
        return t


def _fill_io_shapes(m) -> None:
    """The checker requires a shape on main-graph inputs and outputs; the IR allows an
    unknown rank (shape None). Output shapes are taken from ONNX shape inference; an input
    (or output) whose rank stays unknown cannot be written."""
    def missing(vs):
        return [v for v in vs if v.type.WhichOneof("value") == "tensor_type" and not v.type.tensor_type.HasField("shape")]

    if missing(m.graph.input):
        names = ", ".join(v.name for v in missing(m.graph.input))
        raise ExportError(f"graph inputs {names} have an unknown rank; ONNX needs a shape for every graph input")
    if not missing(m.graph.output):
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception as e:
        raise ExportError(f"cannot infer the shapes of the graph outputs: {e}") from e
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for v in missing(m.graph.output):
        got = known.get(v.name)
        if got is None or not got.type.tensor_type.HasField("shape"):
            raise ExportError(f"graph output '{v.name}' has an unknown rank; ONNX needs a shape for every graph output")
        v.type.tensor_type.shape.CopyFrom(got.type.tensor_type.shape)


def _schema(n: Node, opsets: dict[str, int]):
    try:
        return onnx.defs.get_schema(n.op_type, opsets.get(n.domain, 1), n.domain)
    except Exception:  # SchemaError: custom domain or unknown op; types are inferred instead
        return None


def _type_proto(dtype: str, shape, where: str):
    if _dt.is_sequence(dtype):
        return onnx.helper.make_sequence_type_proto(_type_proto(_dt.element_type(dtype), shape, where))
    if _dt.is_optional(dtype):
        return onnx.helper.make_optional_type_proto(_type_proto(_dt.element_type(dtype), shape, where))
    return onnx.helper.make_tensor_type_proto(onnx_dtype(dtype, where), None if shape is None else list(shape))


def _value_info(v: ValueInfo):
    if v.dtype == "undefined":  # a subgraph value whose type the source left to inference
        return onnx.ValueInfoProto(name=v.name)
    if _dt.is_tensor(v.dtype):
        shape = None if v.shape is None else [d for d in v.shape]
        return onnx.helper.make_tensor_value_info(v.name, onnx_dtype(v.dtype, f"tensor '{v.name}'"), shape)
    return onnx.helper.make_value_info(v.name, _type_proto(v.dtype, v.shape, f"value '{v.name}'"))


def _infer_kind(value, where: str) -> int:
    if isinstance(value, (bool, int, np.integer)):
        return _T.INT
    if isinstance(value, (float, np.floating)):
        return _T.FLOAT
    if isinstance(value, (str, bytes)):
        return _T.STRING
    if isinstance(value, np.ndarray):
        return _T.TENSOR
    if isinstance(value, Graph):
        return _T.GRAPH
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (bool, int, np.integer)) for v in value):
            return _T.INTS
        if all(isinstance(v, (bool, int, float, np.integer, np.floating)) for v in value):
            return _T.FLOATS
        if all(isinstance(v, (str, bytes)) for v in value):
            return _T.STRINGS
        if all(isinstance(v, np.ndarray) for v in value):
            return _T.TENSORS
        if all(isinstance(v, Graph) for v in value):
            return _T.GRAPHS
    raise ExportError(f"{where}: cannot export a value of type {type(value).__name__} ({value!r:.80})")


def _as_float(v, where: str) -> float:
    if isinstance(v, (bool, int, float, np.integer, np.floating)) or (isinstance(v, np.ndarray) and v.size == 1):
        return float(v)
    raise ExportError(f"{where}: expected a float, found {type(v).__name__}")


def _as_int(v, where: str) -> int:
    if isinstance(v, (bool, int, np.integer)) or (isinstance(v, np.ndarray) and v.size == 1 and v.dtype.kind in "iub"):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    raise ExportError(f"{where}: expected an int, found {v!r}")


def _as_bytes(v, where: str) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    raise ExportError(f"{where}: expected a string, found {type(v).__name__}")


def _as_graph(v, where: str) -> Graph:
    if not isinstance(v, Graph):
        raise ExportError(f"{where}: expected a Graph, found {type(v).__name__}")
    return v


def _check(model, path: str | None = None) -> None:
    try:
        onnx.checker.check_model(path if path is not None else model, full_check=True)
    except Exception as e:  # ValidationError, InferenceError
        if path is None and "existing shape differ" in str(e) and _fix_output_ranks(model):
            return _check(model)
        raise ExportError(f"the exported model fails onnx.checker.check_model(full_check=True): {e}") from e


def _fix_output_ranks(model) -> bool:
    """Replace graph-output shapes whose rank contradicts ONNX shape inference with the
    inferred ones. Some exporters declare outputs wrongly (ddddocr's OCR model says rank 2 for
    a Reshape to rank 3); runtimes ignore the declaration, the full checker does not. True when
    an output was changed."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for v in probe.graph.output:
        if v.type.WhichOneof("value") == "tensor_type":
            v.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001  nothing better to offer than the checker's own message
        return False
    got = {v.name: v for v in list(inferred.graph.output) + list(inferred.graph.value_info)}
    changed = False
    for v in model.graph.output:
        new = got.get(v.name)
        if (v.type.WhichOneof("value") != "tensor_type" or new is None
                or not new.type.tensor_type.HasField("shape") or not v.type.tensor_type.HasField("shape")):
            continue
        if len(new.type.tensor_type.shape.dim) != len(v.type.tensor_type.shape.dim):
            v.type.tensor_type.shape.CopyFrom(new.type.tensor_type.shape)
            changed = True
    return changed


# -------------------------------------------------------------------- writing
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _temp_in(folder: Path, name: str) -> tuple[int, Path]:
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")  # O_CREAT|O_EXCL
    except OSError as e:
        raise ExportError(f"cannot write into '{folder}': {e.strerror or e}") from None
    return fd, Path(tmp)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 30]):]


def _write(graph: Graph, dest: Path, opsets: dict[str, int], ir_version: int | None, external: bool):
    folder = dest.parent
    if not folder.is_dir():
        raise ExportError(f"cannot write '{dest}': folder '{folder}' does not exist")
    if dest.is_dir() and not dest.is_symlink():
        raise ExportError(f"cannot write '{dest}': it is a directory")
    temps: list[Path] = []
    try:
        if not external:
            model = _Builder(opsets).model(graph, ir_version)
            data = _serialize(model)
            _check(model)
            fd, tmp = _temp_in(folder, dest.name)
            temps.append(tmp)
            _write_file(fd, data)
            os.close(fd)
        else:
            model, tmp = _write_external(graph, dest, opsets, ir_version, temps)
        os.replace(tmp, dest)
        temps.clear()
        _fsync_dir(folder)
        return model
    except OSError as e:
        raise ExportError(f"cannot write '{dest}': {e.strerror or e}") from e
    finally:
        for t in temps:
            try:
                os.unlink(t)
            except OSError:
                pass


def _write_external(graph: Graph, dest: Path, opsets: dict[str, int], ir_version: int | None, temps: list[Path]):
    """Weights to a temp data file, the model to a temp file, both checked; the data file is
    renamed into place here, the model by the caller. Returns (model, temp model path)."""
    folder = dest.parent
    data_name = f"{dest.name}.data"
    split_relative_location(data_name, f"external data of '{dest.name}'")  # same rules as reading
    data_fd, data_tmp = _temp_in(folder, data_name)
    temps.append(data_tmp)
    written = 0

    def sink(arr: np.ndarray) -> int:
        nonlocal written
        pad = -written % _ALIGN
        _write_all(data_fd, b"\0" * pad)
        offset = written + pad
        _write_all(data_fd, arr.reshape(-1).view(np.uint8).data)
        written = offset + arr.nbytes
        return offset

    builder = _Builder(opsets, sink, data_tmp.name)
    try:
        model = builder.model(graph, ir_version)
        os.fsync(data_fd)
    finally:
        os.close(data_fd)
    fd, tmp = _temp_in(folder, dest.name)
    temps.append(tmp)
    try:
        _write_file(fd, _serialize(model))
        _check(model, str(tmp))  # the checker reads the temp data file next to the temp model
        for t in _initializers(model.graph):
            for e in t.external_data:
                if e.key == "location":
                    e.value = data_name
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        _write_file(fd, _serialize(model))
    finally:
        os.close(fd)
    os.replace(data_tmp, folder / data_name)
    temps.remove(data_tmp)
    return model, tmp


def _initializers(graph):
    """Initializers of a GraphProto and of all its subgraphs (protos hold copies, so the
    tensors must be found in the final model, not kept from building it)."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield from g.initializer
        for n in g.node:
            for a in n.attribute:
                stack.extend([a.g] if a.HasField("g") else [])
                stack.extend(a.graphs)


def _serialize(model) -> bytes:
    size = model.ByteSize()
    if size > MAX_PROTO_BYTES:
        raise ExportError(f"the model is {size} bytes, over the 2 GiB protobuf limit")
    return model.SerializeToString()


def _write_file(fd: int, data: bytes) -> None:
    _write_all(fd, data)
    os.fsync(fd)
