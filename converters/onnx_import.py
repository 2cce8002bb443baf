"""ONNX -> IR: :func:`import_onnx`.

The walk, in order (nothing is converted before the model passed the checks that apply to the
whole of it):

1. read and parse: a file must be a regular file under 2 GiB; bytes that are not an ONNX
   protobuf, or parse to something without a graph, are a ModelFormatError naming the file;
2. model checks: IR version, opsets 7..latest for the default domain (older ones when every
   op used is unchanged by opset 7; none when no node uses the domain), local functions
   (duplicates, call cycles, call depth), subgraph nesting depth
   (:data:`edgeinfer.graph.MAX_SUBGRAPH_DEPTH`);
3. with ``check_supported``, every (domain, op) of the model, subgraphs and called functions
   included, that has no kernel, collected into ONE UnsupportedOpError with counts;
4. conversion, graph by graph: tensors through :mod:`.onnx_tensors` (one validator for every
   TensorProto, external data included), local functions inlined, Constant nodes turned into
   constants, attributes into plain Python values, every node normalised to the latest opset
   by :mod:`.onnx_opset`; then nodes are sorted topologically and the graph validated.

Conventions of the result: initializers that are also graph inputs stay inputs with a default
(overridable) when the model's IR version is 4 or more; before IR 4 every initializer had to be
listed as an input, so there they are plain constants, as ONNX Runtime treats them. Element-type
attributes (Cast ``to`` ...) hold IR dtype strings. ``graph.opset[""]`` is
``max(source opset, IR_ONNX_OPSET)`` because the nodes are in latest-opset form; the source
opset is kept in ``graph.metadata["onnx.source_opset"]``, next to ``onnx.producer_name``,
``onnx.producer_version``, ``onnx.doc_string``, ``onnx.domain``, ``onnx.model_version`` and the
model's own ``metadata_props``. Imported constants are read-only arrays.
"""
from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer import dtypes as _dt
from edgeinfer.errors import EdgeInferError, ModelFormatError, UnsupportedOpError, require
from edgeinfer.graph import MAX_SUBGRAPH_DEPTH, Graph, Node, ValueInfo

onnx = require("onnx", "onnx", "ONNX import")

from . import onnx_opset  # noqa: E402
from .onnx_opset import GraphScope  # noqa: E402
from .onnx_dtypes import DTYPE_ATTRIBUTES, ir_dtype  # noqa: E402
from .onnx_tensors import ExternalDataReader, sparse_to_numpy, tensor_to_numpy  # noqa: E402

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
MAX_MODEL_BYTES = 2**31 - 1  # protobuf cannot hold more; bigger models keep weights external
MAX_FUNCTION_DEPTH = 32  # nested calls of model-local functions
MAX_NODES = 5_000_000  # nodes after inlining functions: stops exponential call trees

_A = onnx.AttributeProto
_SCALAR_FIELDS = ((_A.FLOAT, "f"), (_A.INT, "i"), (_A.STRING, "s"), (_A.TENSOR, "t"), (_A.GRAPH, "g"),
                  (_A.SPARSE_TENSOR, "sparse_tensor"), (_A.TYPE_PROTO, "tp"))
_LIST_FIELDS = ((_A.FLOATS, "floats"), (_A.INTS, "ints"), (_A.STRINGS, "strings"), (_A.TENSORS, "tensors"),
                (_A.GRAPHS, "graphs"), (_A.SPARSE_TENSORS, "sparse_tensors"), (_A.TYPE_PROTOS, "type_protos"))

def import_onnx(model, *, base_dir: str | os.PathLike | None = None, check_supported: bool = True) -> Graph:
    """Import an ONNX model into the IR, normalised to latest-opset semantics.

    Args:
        model: a path to a ``.onnx`` file, the serialized bytes, or an ``onnx.ModelProto``
            (not modified).
        base_dir: the folder external tensor data is read from; defaults to the model file's
            folder. Bytes and ModelProtos with external data need it.
        check_supported: first check that edgeinfer has a kernel for every operator and raise
            one UnsupportedOpError listing all that are missing.

    Returns:
        The validated :class:`edgeinfer.graph.Graph`.

    Raises:
        ModelFormatError: the model is malformed (GraphError for graph-structure faults,
            UnsafePathError for external data outside the model's folder); the message names
            the file, node, tensor or field and what was expected.
        UnsupportedOpError: operators (or element types) edgeinfer does not support.
    """
    proto, origin, folder = _read_model(model, base_dir)
    try:
        with ExternalDataReader(folder, origin) as reader:
            return _Importer(proto, origin, reader).run(check_supported)
    except UnsupportedOpError:
        raise
    except ModelFormatError as e:
        if origin.startswith("<"):
            raise
        raise type(e)(f"{origin}: {e}") from e
    except EdgeInferError:
        raise
    except RecursionError as e:
        raise ModelFormatError(f"{origin}: the model is nested too deeply to import") from e
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError, AttributeError) as e:
        raise ModelFormatError(f"{origin}: malformed model: {type(e).__name__}: {e}") from e


# --------------------------------------------------------------------- reading
def _read_model(model, base_dir) -> tuple[Any, str, Path | None]:
    folder = None if base_dir is None else Path(base_dir)
    if isinstance(model, onnx.ModelProto):
        return model, "<ModelProto>", folder
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _parse(bytes(model), "<bytes>"), "<bytes>", folder
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        return _parse(_read_file(path), str(path)), str(path), folder if folder is not None else path.parent
    raise ModelFormatError(
        f"cannot import a {type(model).__name__}; pass a path, the model bytes or an onnx.ModelProto"
    )


def _read_file(path: Path) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFormatError(f"model file '{path}' does not exist") from None
    except OSError as e:
        raise ModelFormatError(f"cannot read model file '{path}': {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelFormatError(f"model path '{path}' is not a regular file")
    if st.st_size > MAX_MODEL_BYTES:
        raise ModelFormatError(
            f"model file '{path}' is {st.st_size} bytes; a protobuf model cannot exceed 2 GiB "
            f"(store the weights as external data)"
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise ModelFormatError(f"cannot open model file '{path}': {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ModelFormatError(f"model path '{path}' is not a regular file")
        return f.read(MAX_MODEL_BYTES + 1)


def _parse(data: bytes, origin: str):
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFormatError(f"{origin}: a protobuf model cannot exceed 2 GiB")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # DecodeError, or the C parser's RuntimeError on deep nesting
        raise ModelFormatError(
            f"{origin}: not a valid ONNX file (protobuf parsing failed: {e}); the file may be truncated or not ONNX"
        ) from None
    return model


# ------------------------------------------------------------------- importer
def _domain(d: str) -> str:
    return "" if d in ("", "ai.onnx") else d


def _op_key(domain: str, op: str) -> str:
    return f"{domain}::{op}" if domain else op


def _decode(b: bytes):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(b)


def _opset_map(entries, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries:
        d = _domain(e.domain)
        if d in out and out[d] != e.version:
            raise ModelFormatError(f"{where}: opset_import lists domain '{d or 'ai.onnx'}' twice ({out[d]} and {e.version})")
        out[d] = int(e.version)
    return out


class _Importer:
    def __init__(self, model, origin: str, reader: ExternalDataReader):
        self.model = model
        self.origin = origin
        self.reader = reader
        self.names: set[str] = set()  # every tensor name of the model, for fresh names
        self.reads: set[str] = set()  # every tensor name some node or graph output reads
        self.functions: dict[tuple[str, str, str], Any] = {}
        self.node_count = 0

    # ------------------------------------------------------------- checks
    def run(self, check_supported: bool) -> Graph:
        m = self.model
        if not m.ir_version or not m.HasField("graph"):
            raise ModelFormatError(
                f"not an ONNX model: {'ir_version is missing' if not m.ir_version else 'it has no graph'}"
            )
        if m.ir_version > onnx.IR_VERSION:
            raise ModelFormatError(f"IR version {m.ir_version} is newer than the newest supported, {onnx.IR_VERSION}")
        self.opsets = _opset_map(m.opset_import, "model")
        version = self.opsets.get("")
        if version is None:
            # Legal when every node is in another domain (ai.onnx.ml, training, custom ones).
            used = self._default_domain_ops()
            if used:
                raise ModelFormatError(
                    f"the model uses ops of the default ONNX domain ({', '.join(sorted(used)[:5])}) "
                    f"but imports no opset of it (opset_import)"
                )
            version = self.opsets[""] = MAX_OPSET
        if not 1 <= version <= MAX_OPSET:
            raise ModelFormatError(
                f"opset {version} of the default domain is not supported; edgeinfer imports opsets 1 to {MAX_OPSET}"
            )
        if version < MIN_OPSET:
            self._check_old_opset(version)
        for f in m.functions:
            key = (_domain(f.domain), f.name, getattr(f, "overload", ""))
            if key in self.functions:
                raise ModelFormatError(f"local function '{f.domain}::{f.name}' is defined twice")
            self.functions[key] = f
        self._scan()
        if check_supported:
            self._check_supported()
        graph = self._graph(m.graph, self.opsets, depth=0, parent=None, main=True)
        graph.validate()
        return graph

    def _all_nodes(self):
        stack = [self.model.graph]
        while stack:
            g = stack.pop()
            for n in g.node:
                yield n
                for a in n.attribute:
                    stack.extend(([a.g] if a.HasField("g") else []) + list(a.graphs))

    def _default_domain_ops(self) -> set[str]:
        local = {name for (_d, name, _o) in self.functions}
        return {n.op_type for n in self._all_nodes() if _domain(n.domain) == "" and n.op_type not in local}

    def _check_old_opset(self, version: int) -> None:
        """Opsets before 7 import when every op used is defined as it is at opset 7."""
        changed = []
        for op in sorted(self._default_domain_ops()):
            try:
                old = onnx.defs.get_schema(op, version, "").since_version
                new = onnx.defs.get_schema(op, MIN_OPSET, "").since_version
            except onnx.defs.SchemaError:
                continue  # an unknown op is reported by the support check
            if old != new:
                changed.append(op)
        if changed:
            raise UnsupportedOpError(
                f"the model uses opset {version}; edgeinfer imports opsets before {MIN_OPSET} only when every "
                f"operator is unchanged by opset {MIN_OPSET}, and these changed: {', '.join(changed)}",
                [f"{op} (opset {version})" for op in changed],
            )

    def _function_of(self, node):
        return self.functions.get((_domain(node.domain), node.op_type, getattr(node, "overload", "")))

    def _scan(self) -> None:
        """Collect names, check subgraph depth and function call cycles, iteratively."""
        stack = [(self.model.graph, 0, "main graph")]
        for f in self.functions.values():
            stack.append((f, 1, f"function '{f.name}'"))
        while stack:
            g, depth, where = stack.pop()
            if depth > MAX_SUBGRAPH_DEPTH:
                raise ModelFormatError(
                    f"{where}: subgraphs are nested more than {MAX_SUBGRAPH_DEPTH} levels deep"
                )
            is_function = isinstance(g, onnx.FunctionProto)
            if is_function:
                self.names.update(g.input)
                self.names.update(g.output)
            else:
                for coll in (g.input, g.output, g.value_info):
                    self.names.update(v.name for v in coll)
                self.names.update(t.name for t in g.initializer)
                self.names.update(s.values.name for s in g.sparse_initializer)
                self.reads.update(v.name for v in g.output)
            for n in g.node:
                self.names.update(n.input)
                self.names.update(n.output)
                self.reads.update(n.input)
                for a in n.attribute:
                    for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                        stack.append((sub, depth + 1, f"{n.op_type} node '{n.name or (n.output[0] if n.output else '?')}' attribute '{a.name}'"))
        self._check_function_cycles()

    def _check_function_cycles(self) -> None:
        calls: dict[tuple, set] = {}
        for key, f in self.functions.items():
            callees, stack = set(), list(f.node)
            while stack:
                n = stack.pop()
                if self._function_of(n) is not None:
                    callees.add((_domain(n.domain), n.op_type, getattr(n, "overload", "")))
                for a in n.attribute:
                    for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                        stack.extend(sub.node)
            calls[key] = callees
        state: dict[tuple, int] = {}
        for root in calls:
            if state.get(root):
                continue
            path, iters = [root], [iter(sorted(calls[root]))]
            state[root] = 1
            while iters:
                nxt = next(iters[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    iters.pop()
                    continue
                if state.get(nxt) == 1:
                    cycle = " -> ".join(k[1] for k in path[path.index(nxt):] + [nxt])
                    raise ModelFormatError(f"local functions call each other in a cycle: {cycle}")
                if not state.get(nxt):
                    if len(path) >= MAX_FUNCTION_DEPTH:
                        raise ModelFormatError(f"local function calls are nested more than {MAX_FUNCTION_DEPTH} deep at '{nxt[1]}'")
                    state[nxt] = 1
                    path.append(nxt)
                    iters.append(iter(sorted(calls[nxt])))

    def _check_supported(self) -> None:
        """One UnsupportedOpError listing every op without a kernel (STYLE.md #7)."""
        missing: Counter = Counter()
        seen_functions: set = set()
        stack = [(self.model.graph.node, self.opsets)]
        while stack:
            nodes, opsets = stack.pop()
            for n in nodes:
                for a in n.attribute:
                    for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                        stack.append((sub.node, opsets))
                f = self._function_of(n)
                if f is not None:
                    key = (_domain(f.domain), f.name, getattr(f, "overload", ""))
                    if key not in seen_functions:
                        seen_functions.add(key)
                        stack.append((f.node, {**opsets, **_opset_map(f.opset_import, f"function '{f.name}'")}))
                    continue
                domain, op = _domain(n.domain), n.op_type
                if domain == "" and op == "Constant":
                    continue
                if domain == "" and op in onnx_opset.UNSUPPORTED_BEFORE:
                    since, why = onnx_opset.UNSUPPORTED_BEFORE[op]
                    if opsets.get("", 0) < since:
                        missing[why] += 1
                        continue
                targets = onnx_opset.REPLACED_BY.get(op, (op,)) if domain == "" else (op,)
                if not all(_kernel_exists(t, domain) for t in targets):
                    missing[_op_key(domain, op)] += 1
        if missing:
            listed = ", ".join(f"{op} ({k} node{'s' if k > 1 else ''})" for op, k in sorted(missing.items()))
            raise UnsupportedOpError(
                f"the model uses {len(missing)} operator(s) edgeinfer has no kernel for: {listed}. "
                f"Pass check_supported=False to import it anyway (for another backend), or see "
                f"edgeinfer.kernels.supported_ops()",
                sorted(missing),
            )

    # ---------------------------------------------------------- conversion
    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def _graph(self, gp, opsets: dict[str, int], depth: int, parent: "GraphScope | None", main: bool = False,
               binding=None) -> Graph:
        scope = GraphScope(self.fresh, self.reads, opsets, parent)
        gname = gp.name or "graph"
        for t in gp.initializer:
            scope.add_constant(t.name, tensor_to_numpy(t, self.reader, f"initializer '{t.name}'"), f"graph '{gname}'")
        for s in gp.sparse_initializer:
            name = s.values.name
            scope.add_constant(name, sparse_to_numpy(s, self.reader, f"sparse initializer '{name}'"), f"graph '{gname}'")
        initializers = set(scope.constants)
        overridable = self.model.ir_version >= 4
        inputs = [self._value_info(v, f"graph '{gname}' input", scope, untyped_ok=not main) for v in gp.input
                  if overridable or v.name not in initializers]
        value_info: dict[str, ValueInfo] = {}
        for v in gp.value_info:
            vi = self._value_info(v, f"graph '{gname}' value_info", scope, optional=True)
            if vi is not None:
                value_info[vi.name] = vi
        for v in gp.output:
            vi = self._value_info(v, f"graph '{gname}' output", scope, optional=True)
            if vi is not None:
                scope.types[vi.name] = vi
        scope.types.update(value_info)
        scope.types.update((v.name, v) for v in inputs)
        raw = self._raw_nodes(gp.node, opsets, depth, scope, binding)
        scope.producers = {o: n for n, _ in raw for o in n.outputs if o}
        nodes: list[Node] = []
        for node, version in raw:
            scope.version = version
            scope.current = node
            nodes.extend(onnx_opset.normalize_node(node, scope))
        outputs = [self._value_info(v, f"graph '{gname}' output", scope, untyped_ok=not main) for v in gp.output]
        for name in [i.name for i in inputs] + [o.name for o in outputs]:
            value_info.pop(name, None)
        graph = Graph(inputs=inputs, outputs=outputs, nodes=nodes, constants=scope.constants,
                      value_info=value_info, name=gname)
        graph.toposort()
        if main:
            graph.opset = {d: v for d, v in opsets.items() if d != ""}
            graph.opset[""] = max(opsets[""], onnx_opset.IR_ONNX_OPSET)
            graph.metadata = self._metadata()
        return graph

    def _metadata(self) -> dict[str, str]:
        m = self.model
        meta = {p.key: p.value for p in m.metadata_props}
        meta["onnx.source_opset"] = str(self.opsets[""])
        meta["onnx.ir_version"] = str(m.ir_version)
        for key in ("producer_name", "producer_version", "doc_string", "domain"):
            if getattr(m, key):
                meta[f"onnx.{key}"] = getattr(m, key)
        if m.model_version:
            meta["onnx.model_version"] = str(m.model_version)
        return meta

    def _value_info(self, v, where: str, scope: "GraphScope", optional: bool = False,
                    untyped_ok: bool = False) -> ValueInfo | None:
        """``untyped_ok``: a subgraph's input or output may leave its type to the node running
        it (ONNX allows this; it gets dtype "undefined" and takes its type at run time)."""
        where = f"{where} '{v.name}'"
        if not v.name:
            raise ModelFormatError(f"{where}: a value has no name")
        kind = v.type.WhichOneof("value") if v.HasField("type") else None
        if kind in ("sequence_type", "optional_type"):
            dtype, shape = _composite_type(v.type, where)
            if dtype is None:
                if optional:
                    return None
                raise ModelFormatError(f"{where} has no element type")
            return ValueInfo(v.name, dtype, shape)
        if kind != "tensor_type":
            if optional:
                return None
            if kind is None:
                dtype = scope.dtype_of(v.name) or ("undefined" if untyped_ok else None)
                if dtype is None:
                    raise ModelFormatError(f"{where} has no type")
                return ValueInfo(v.name, dtype, None)
            raise UnsupportedOpError(
                f"{where} has a {kind.replace('_type', '')} type; only tensors, sequences and optionals are supported",
                [f"type:{kind}"],
            )
        tt = v.type.tensor_type
        if tt.elem_type == 0:
            if optional:
                return None
            dtype = scope.dtype_of(v.name) or ("undefined" if untyped_ok else None)
            if dtype is None:
                raise ModelFormatError(f"{where} has no element type")
        else:
            dtype = ir_dtype(tt.elem_type, where)
        return ValueInfo(v.name, dtype, _tensor_shape(tt))

    def _raw_nodes(self, protos, opsets, depth: int, scope: "GraphScope", binding) -> list[tuple[Node, int]]:
        """Nodes with attributes converted, functions inlined, Constants moved to constants."""
        out: list[tuple[Node, int]] = []
        for n, ops, binding in self._expand(protos, opsets, binding):
            label = f"{n.op_type or '?'} node '{n.name or (n.output[0] if n.output else '?')}'"
            if not n.op_type:
                raise ModelFormatError(f"{label}: op_type is empty")
            domain = _domain(n.domain)
            scope.node_opsets, scope.node_binding = ops, binding
            attrs = self._attributes(n, label, depth, scope, binding, domain)
            if domain == "" and n.op_type == "Constant":
                if len(n.output) != 1 or not n.output[0] or len(n.input):
                    raise ModelFormatError(f"{label}: a Constant needs exactly one output and no inputs")
                scope.add_constant(n.output[0], _constant_value(attrs, label), label)
                continue
            node = Node(n.op_type, tuple(n.input), tuple(n.output), attrs, name=n.name, domain=domain)
            out.append((node, ops.get(domain, 1)))
        return out

    def _expand(self, protos, opsets, binding):
        """Yield (node proto, opsets, attribute binding), inlining local function calls."""
        stack = [(iter(protos), opsets, binding, 0)]
        while stack:
            it, ops, binding, depth = stack[-1]
            n = next(it, None)
            if n is None:
                stack.pop()
                continue
            self.node_count += 1
            if self.node_count > MAX_NODES:
                raise ModelFormatError(f"the model has more than {MAX_NODES} nodes once local functions are inlined")
            f = self._function_of(n)
            if f is None:
                yield n, ops, binding
                continue
            if depth >= MAX_FUNCTION_DEPTH:
                raise ModelFormatError(f"local function calls are nested more than {MAX_FUNCTION_DEPTH} deep at '{f.name}'")
            body, fbinding = self._instantiate(f, n, binding)
            fops = {**ops, **_opset_map(f.opset_import, f"function '{f.name}'")}
            stack.append((iter(body), fops, fbinding, depth + 1))

    def _instantiate(self, f, call, outer_binding):
        """Copies of a function body with names bound to the call site's tensors."""
        who = call.name or (call.output[0] if call.output else f.name)
        if len(call.input) > len(f.input) or len(call.output) > len(f.output):
            raise ModelFormatError(
                f"call of function '{f.name}' ({who}) has {len(call.input)} inputs and {len(call.output)} "
                f"outputs; the function declares {len(f.input)} and {len(f.output)}"
            )
        rename = {formal: (call.input[i] if i < len(call.input) else "") for i, formal in enumerate(f.input)}
        for j, formal in enumerate(f.output):
            actual = call.output[j] if j < len(call.output) else ""
            rename[formal] = actual or self.fresh(f"{who}/{f.name}/{formal}")
        for node in f.node:
            for o in node.output:
                if o and o not in rename:
                    rename[o] = self.fresh(f"{who}/{f.name}/{o}")
        binding = {a.name: a for a in f.attribute_proto}
        for a in call.attribute:
            binding[a.name] = _bind_ref(a, outer_binding) if a.ref_attr_name else a
        body = []
        for node in f.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            _rename_node(copy, rename)
            self.reads.update(copy.input)
            if copy.name:
                copy.name = f"{who}/{copy.name}"
            body.append(copy)
        return body, {k: v for k, v in binding.items() if v is not None}

    def _attributes(self, n, label: str, depth: int, scope: "GraphScope", binding, domain: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for a in n.attribute:
            if a.ref_attr_name:
                if binding is None:
                    raise ModelFormatError(f"{label}: attribute '{a.name}' refers to '{a.ref_attr_name}' outside a function")
                a = _bind_ref(a, binding)
                if a is None:
                    continue
            if not a.name:
                raise ModelFormatError(f"{label}: an attribute has no name")
            if a.name in attrs:
                raise ModelFormatError(f"{label}: attribute '{a.name}' is given twice")
            where = f"{label} attribute '{a.name}'"
            value = self._attribute(a, where, depth, scope)
            if domain == "" and (n.op_type, a.name) in DTYPE_ATTRIBUTES:
                value = ir_dtype(value, where)
            attrs[a.name] = value
        return attrs

    def _attribute(self, a, where: str, depth: int, scope: "GraphScope"):
        kind = a.type or _infer_attribute_type(a, where)
        if kind == _A.FLOAT:
            return float(a.f)
        if kind == _A.INT:
            return int(a.i)
        if kind == _A.STRING:
            return _decode(a.s)
        if kind == _A.TENSOR:
            return tensor_to_numpy(a.t, self.reader, where)
        if kind == _A.SPARSE_TENSOR:
            return sparse_to_numpy(a.sparse_tensor, self.reader, where)
        if kind == _A.GRAPH:
            return self._subgraph(a.g, where, depth, scope)
        if kind == _A.FLOATS:
            return [float(x) for x in a.floats]
        if kind == _A.INTS:
            return [int(x) for x in a.ints]
        if kind == _A.STRINGS:
            return [_decode(x) for x in a.strings]
        if kind == _A.TENSORS:
            return [tensor_to_numpy(t, self.reader, f"{where}[{i}]") for i, t in enumerate(a.tensors)]
        if kind == _A.SPARSE_TENSORS:
            return [sparse_to_numpy(t, self.reader, f"{where}[{i}]") for i, t in enumerate(a.sparse_tensors)]
        if kind == _A.GRAPHS:
            return [self._subgraph(g, f"{where}[{i}]", depth, scope) for i, g in enumerate(a.graphs)]
        if kind == _A.TYPE_PROTO:  # held as the IR type string (Optional's 'type')
            dtype = _composite_type(a.tp, where)[0]
            if dtype is None:
                raise ModelFormatError(f"{where}: the type has no element type")
            return dtype
        if kind == _A.TYPE_PROTOS:
            raise UnsupportedOpError(f"{where}: lists of types are not supported", ["attribute:TYPE_PROTOS"])
        raise ModelFormatError(f"{where}: unknown attribute type {kind}")

    def _subgraph(self, g, where: str, depth: int, scope: "GraphScope") -> Graph:
        if depth + 1 > MAX_SUBGRAPH_DEPTH:
            raise ModelFormatError(f"{where}: subgraphs are nested more than {MAX_SUBGRAPH_DEPTH} levels deep")
        return self._graph(g, scope.node_opsets, depth + 1, scope, binding=scope.node_binding)


def _tensor_shape(tt):
    if not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        which = d.WhichOneof("value")
        if which == "dim_value":
            dims.append(int(d.dim_value) if d.dim_value >= 0 else None)
        elif which == "dim_param" and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _composite_type(tp, where: str, depth: int = 0):
    """(IR type string, shape) of a TypeProto; the shape is the tensor's, or its elements'."""
    kind = tp.WhichOneof("value")
    if depth > 2:
        raise UnsupportedOpError(f"{where}: types nested more than 2 deep are not supported", ["type:nested"])
    if kind == "tensor_type":
        if tp.tensor_type.elem_type == 0:
            return None, None
        return ir_dtype(tp.tensor_type.elem_type, where), _tensor_shape(tp.tensor_type)
    if kind == "sequence_type":
        elem, shape = _composite_type(tp.sequence_type.elem_type, where, depth + 1)
        return (None if elem is None else _dt.sequence_of(elem)), shape
    if kind == "optional_type":
        elem, shape = _composite_type(tp.optional_type.elem_type, where, depth + 1)
        return (None if elem is None else _dt.optional_of(elem)), shape
    if kind is None:
        return None, None
    raise UnsupportedOpError(f"{where} has a {kind.replace('_type', '')} type, which edgeinfer does not support",
                             [f"type:{kind}"])


def _kernel_exists(op_type: str, domain: str) -> bool:
    """Whether edgeinfer has a kernel (looked up lazily: kernels load on first use)."""
    from edgeinfer.kernels.registry import is_supported

    return is_supported(op_type, domain)


def _infer_attribute_type(a, where: str) -> int:
    # Old writers (IR < 3) may leave AttributeProto.type unset; the set field tells the type.
    found = [k for k, f in _SCALAR_FIELDS if a.HasField(f)] + [k for k, f in _LIST_FIELDS if len(getattr(a, f))]
    if len(found) != 1:
        raise ModelFormatError(f"{where}: attribute type is not set and {'no' if not found else 'several'} value fields are")
    return found[0]


def _bind_ref(a, binding):
    """The call-site attribute a function body's ``ref_attr_name`` refers to (or None)."""
    src = binding.get(a.ref_attr_name) if binding else None
    if src is None:
        return None
    out = onnx.AttributeProto()
    out.CopyFrom(src)
    out.name = a.name
    return out


def _rename_node(node, rename: dict[str, str]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
        for i, name in enumerate(n.output):
            if name in rename:
                n.output[i] = rename[name]
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                for v in g.output:
                    if v.name in rename:
                        v.name = rename[v.name]
                stack.extend(g.node)


def _constant_value(attrs: dict[str, Any], label: str) -> np.ndarray:
    kinds = [k for k in ("value", "sparse_value", "value_float", "value_floats", "value_int", "value_ints",
                         "value_string", "value_strings") if k in attrs]
    if len(kinds) != 1 or len(attrs) != 1:
        raise ModelFormatError(
            f"{label}: a Constant needs exactly one value attribute, found {sorted(attrs) or 'none'}"
        )
    kind, value = kinds[0], attrs[kinds[0]]
    try:
        if kind in ("value", "sparse_value"):
            if not isinstance(value, np.ndarray):
                raise ModelFormatError(f"{label}: attribute '{kind}' must be a tensor")
            return value
        if kind in ("value_float", "value_floats"):
            arr = np.array(value, dtype=np.float32)
        elif kind in ("value_int", "value_ints"):
            arr = np.array(value, dtype=np.int64)
        else:
            arr = np.array(value, dtype=object)
            if any(not isinstance(s, str) for s in arr.reshape(-1)):
                raise ModelFormatError(f"{label}: attribute '{kind}' holds strings that are not UTF-8")
    except (TypeError, ValueError, OverflowError):
        raise ModelFormatError(f"{label}: attribute '{kind}' has the wrong type ({type(value).__name__})") from None
    arr.flags.writeable = False
    return arr
