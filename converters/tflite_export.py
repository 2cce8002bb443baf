"""IR -> TFLite: :func:`export_tflite`.

The writer builds a ``.tflite`` flatbuffer with the schema classes LiteRT ships
(``ai_edge_litert.schema_py_generated``, the ``litert`` extra) in four steps:

1. **Specialise.** The graph is propagated at the export input shapes with constant folding
   (every Shape/Gather/Concat chain becomes a constant), then the standard-op rewrites of
   :mod:`edgeinfer.optimize` that keep ONNX vocabulary run: Identity/Dropout removal,
   Transpose/Reshape chain collapse, BatchNormalization folded into the Conv before it, and
   multi-op activation spellings (HardSwish, HardSigmoid, Gelu, LayerNormalization).
2. **Check.** Every node is looked up in the converter table (:data:`CONVERTERS`); every
   unsupported op type (or unsupported form, such as a dynamic Reshape) is listed in one
   :class:`~edgeinfer.errors.ExportError`.
3. **Translate**, node by node, with a *physical layout* per tensor: a permutation ``perm``
   with ``physical = logical.transpose(perm)``. Layout-sensitive ops (Conv, pooling, Resize,
   LRN, DepthToSpace...) want channels last; elementwise ops follow their input (constant
   operands are permuted at export time); axis ops remap their axis; a Transpose only
   relabels the layout (no op is written); Reshape/Flatten keep the layout when the dims they
   merge or split stay contiguous and in order. A TRANSPOSE is materialised only where an op
   needs an order its input does not have, and the report says why for each one.
4. **Serialise**, after two small passes over the TFLite op list: RELU/RELU6/RELU_N1_TO_1 move
   into the ``fused_activation_function`` of the op before them, and unused ops are dropped.

Quantization: QDQ in the IR becomes int8 tensors. A ``DequantizeLinear`` of a constant is a
quantized weight; a node whose float inputs all come from ``DequantizeLinear`` and whose
outputs all go to ``QuantizeLinear`` is written as the int8 TFLite op (per-channel weights on
the output-channel axis, int32 bias at scale ``s_in * s_w``); QUANTIZE / DEQUANTIZE remain only
where float and int8 parts of the graph meet. uint8 activations become int8 with the zero
point shifted by 128 (the same real values).

The signature: by default a rank-4 graph input whose consumers are layout sensitive is
exposed NHWC, and a rank-4 output whose physical layout is NHWC stays NHWC; with
``nchw_inputs=True`` every input and output keeps the IR's layout. The permutation of every
input and output is in :class:`ExportReport` and in the model's metadata entry
``edgeinfer_layout`` (JSON: ``{"inputs": {name: perm}, "outputs": {name: perm}}``), which the
``litert`` backend and the importer read to translate feeds and results.

Files are written atomically (temp file in the destination folder, fsync, ``os.replace``).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeinfer.errors import ExportError, require
from edgeinfer.graph import Graph, Node, TensorType

tfl = require("ai_edge_litert.schema_py_generated", "litert", "TFLite export")
flatbuffers = require("flatbuffers", "litert", "TFLite export")

from . import tflite_export_nn  # noqa: E402,F401  (registers conv, pooling, matmul, resize converters)
from . import tflite_export_ops as _ops  # noqa: E402

LAYOUT_METADATA = "edgeinfer_layout"
INTERNAL_DOMAIN = "edgeinfer"
NHWC = (0, 2, 3, 1)
_MAX_FLATBUFFER = 2**31 - 1

_OP_NAMES = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}


@dataclass
class ExportReport:
    """What :func:`export_tflite` wrote.

    Attributes:
        path: the ``.tflite`` file.
        op_counts: TFLite builtin name -> count, most frequent first.
        transposes: number of TRANSPOSE ops in the model.
        transpose_reasons: one line per TRANSPOSE saying which op needed which order.
        inputs / outputs: tensor name -> permutation of its exposed layout
            (``exposed = logical.transpose(perm)``; identity means the IR's layout).
        quantized_ops: TFLite ops written with int8 tensors.
        size_bytes: size of the file.
    """

    path: Path
    op_counts: dict[str, int]
    transposes: int
    transpose_reasons: list[str]
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]
    quantized_ops: int = 0
    size_bytes: int = 0
    fused_activations: int = 0
    notes: list[str] = field(default_factory=list)


def export_tflite(graph: Graph, path: str | os.PathLike, *, nchw_inputs: bool = False,
                  input_shapes: dict[str, tuple] | None = None) -> ExportReport:
    """Export an IR graph as a TFLite flatbuffer.

    Args:
        graph: the graph (validated first; not modified). Export the unoptimised graph: the
            cpu backend's fused ``edgeinfer::`` ops have no TFLite form.
        path: where to write the ``.tflite`` file (atomically).
        nchw_inputs: keep every input and output in the IR's layout (transposes inside)
            instead of exposing rank-4 image tensors NHWC.
        input_shapes: concrete shapes for inputs whose declared shape has symbolic dims.

    Returns:
        An :class:`ExportReport` (op counts, transposes and why, input/output layouts).

    Raises:
        ExportError: unsupported ops (all listed at once), symbolic shapes without
            ``input_shapes``, ops of the internal domain, or a model over 2 GiB.
        GraphError: the graph itself does not validate.
    """
    model, report = build_tflite(graph, nchw_inputs=nchw_inputs, input_shapes=input_shapes)
    path = Path(path)
    _write_atomic(path, model)
    report.path, report.size_bytes = path, len(model)
    return report


def build_tflite(graph: Graph, *, nchw_inputs: bool = False,
                 input_shapes: dict[str, tuple] | None = None) -> tuple[bytes, ExportReport]:
    """The flatbuffer bytes and report of :func:`export_tflite`, without writing a file."""
    g, types, qinfo = _specialise(graph, input_shapes)
    problems = unsupported_ops(g, types)
    if problems:
        raise ExportError(
            f"cannot export to TFLite: {len(problems)} unsupported operator(s): " + "; ".join(problems),
        )
    cx = _ops.Context(g, types, qinfo, nchw_inputs)
    cx.run()
    fused = _fuse_activations(cx)
    _drop_unused(cx)
    return _serialize(cx, fused)


def unsupported_ops(graph: Graph, types: dict[str, TensorType] | None = None) -> list[str]:
    """Why each unsupported node cannot be exported (op type and reason), one entry per op type
    and reason. ``types`` are the graph's inferred types; without them only op types are checked."""
    found: dict[str, list[str]] = {}
    for n in graph.nodes:
        key = f"{n.domain}::{n.op_type}" if n.domain else n.op_type
        if n.domain == INTERNAL_DOMAIN:
            why = "an internal op of the cpu backend's fusions; export the graph before compiling it"
        elif n.domain not in ("", "ai.onnx") or n.op_type not in _ops.CONVERTERS:
            why = "no TFLite mapping"
        elif types is not None and n.op_type in _ops.CHECKS:
            why = _ops.CHECKS[n.op_type](n, graph, types)
        elif types is not None and n.op_type == "DequantizeLinear" and n.outputs[0] not in types:
            why = None
        else:
            why = None
        if why:
            found.setdefault(key, [])
            if why not in found[key]:
                found[key].append(why)
    return [f"{k} ({'; '.join(v)})" for k, v in sorted(found.items())]


def unsupported_op_types(graph: Graph) -> list[str]:
    """Op types of ``graph`` the exporter has no mapping for (shape-free check). Nodes that
    fold away once input shapes are concrete (Shape and what computes only from shapes and
    constants) do not count."""
    static = set(graph.constants) - set(graph.input_names)
    missing = set()
    for n in graph.walk_nodes():
        if n.op_type in ("Shape", "Size") or all(i in static for i in n.inputs if i):
            static.update(o for o in n.outputs if o)
            continue
        if n.domain not in ("", "ai.onnx") or n.op_type not in _ops.CONVERTERS:
            missing.add(f"{n.domain}::{n.op_type}" if n.domain else n.op_type)
    return sorted(missing)


# ------------------------------------------------------------------ specialise
def _specialise(graph: Graph, input_shapes) -> tuple[Graph, dict[str, TensorType], _ops.QInfo]:
    from edgeinfer.shape_inference import propagate

    graph.validate()
    if any(n.has_subgraphs for n in graph.nodes):
        ops = sorted({n.op_type for n in graph.nodes if n.has_subgraphs})
        raise ExportError(f"cannot export to TFLite: control flow ({', '.join(ops)}) has no TFLite mapping here")
    g = graph.copy()
    g.inputs = [v for v in g.inputs if v.name not in g.constants]
    in_types = {}
    for v in g.inputs:
        shape = (input_shapes or {}).get(v.name, v.shape)
        if shape is None or not all(isinstance(d, int) for d in shape):
            raise ExportError(
                f"input '{v.name}' has shape {list(v.shape) if v.shape else v.shape}; TFLite export needs "
                f"concrete shapes: pass input_shapes={{'{v.name}': (...)}}"
            )
        if v.shape is not None and len(shape) != len(v.shape):
            raise ExportError(f"input_shapes['{v.name}'] has rank {len(shape)}, the input has rank {len(v.shape)}")
        in_types[v.name] = TensorType(v.dtype, tuple(int(d) for d in shape))
    g.inputs = [v.__class__(v.name, v.dtype, in_types[v.name].shape) for v in g.inputs]
    scalar_q = _fold_scalar_quantize(g)
    types, values = propagate(g, in_types, fold=True)
    qinfo = _quant_tables(g, values)
    qinfo.consts.update(scalar_q)
    folded = g.copy()
    folded.nodes = [n for n in g.nodes if not all((not o) or o in values for o in n.outputs)]
    needed = {i for n in folded.nodes for i in n.inputs if i} | set(folded.output_names)
    folded.constants = {k: v for k, v in values.items() if k in needed}
    g = _standard_rewrites(folded, types)
    types, _ = propagate(g, in_types, fold=False, values=dict(g.constants))
    g.outputs = [v.__class__(v.name, v.dtype, types[v.name].shape if v.name in types else v.shape)
                 for v in g.outputs]
    return g, types, qinfo


def _fold_scalar_quantize(g: Graph) -> dict:
    """Fold QuantizeLinear/DequantizeLinear of 0-d constants here: the numpy kernel's in-place rounding fails
    on 0-d arrays (numpy hands back a scalar), which stops constant folding of QDQ models
    that quantize scalar constants (ORT does for HardSigmoid/HardSwish operands). Returns the
    quantized form of each folded DequantizeLinear."""
    keep, quantized = [], {}
    for n in g.nodes:
        ins = [g.constants.get(i) for i in n.inputs if i]
        if (n.op_type in ("QuantizeLinear", "DequantizeLinear") and not n.domain and ins
                and all(v is not None for v in ins) and ins[0].ndim == 0 and ins[1].size == 1):
            zp = ins[2] if len(ins) > 2 else np.zeros((), np.uint8 if n.op_type == "QuantizeLinear" else ins[0].dtype)
            scale, z = float(ins[1].reshape(())), int(zp.reshape(()))
            if n.op_type == "QuantizeLinear":
                info = np.iinfo(zp.dtype)
                q = np.clip(np.rint(float(ins[0]) / scale) + z, info.min, info.max)
                g.constants[n.outputs[0]] = np.asarray(q, zp.dtype).reshape(())
            else:
                g.constants[n.outputs[0]] = np.asarray((int(ins[0]) - z) * scale, ins[1].dtype).reshape(())
                if ins[0].dtype in (np.int8, np.uint8):
                    quantized[n.outputs[0]] = _ops.QConst(ins[0], ins[1].astype(np.float32), zp.astype(np.int64), None)
            continue
        keep.append(n)
    g.nodes = keep
    return quantized


def _standard_rewrites(g: Graph, types) -> Graph:
    """Rewrites of :mod:`edgeinfer.optimize` whose results are standard ONNX ops only."""
    from edgeinfer import optimize as opt

    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.nodes):
        # in a QDQ graph the Q/DQ pairs pin every tensor; only drop the no-ops
        out = opt.remove_identities(g)
        out.remove_unused()
        return out
    out = opt.remove_identities(g)
    for rewrite in (opt.simplify_layout, opt.fuse_activation_patterns):
        for _ in range(4):
            new = rewrite(out, types)
            if new is out:
                break
            out = new
    out = opt.fold_batch_norm(out)
    out.remove_unused()
    # fuse_activation_patterns writes SiLU and GELU (erf or tanh form) as internal Activation
    # nodes: SiLU goes back to x * sigmoid(x), GELU to the standard Gelu op (TFLite's GELU)
    nodes = []
    for n in out.nodes:
        act = n.attrs.get("activation") if n.domain == INTERNAL_DOMAIN and n.op_type == "Activation" else None
        if act in ("SiLU", "silu", "Swish"):
            s = out.unique_name(n.outputs[0] + "_sigmoid")
            nodes += [Node("Sigmoid", (n.inputs[0],), (s,)), Node("Mul", (n.inputs[0], s), n.outputs, name=n.name)]
        elif act == "Gelu":
            tanh = bool((n.attrs.get("activation_params") or [0.0])[0])
            nodes.append(Node("Gelu", (n.inputs[0],), n.outputs, {"approximate": "tanh" if tanh else "none"},
                              name=n.name))
        else:
            nodes.append(n)
    out.nodes = nodes
    return out


def _quant_tables(g: Graph, values: dict[str, np.ndarray]) -> _ops.QInfo:
    consts, dq_of, q_params = {}, {}, {}
    for n in g.nodes:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or n.domain:
            continue
        scale = values.get(n.inputs[1])
        zp = values.get(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else None
        if scale is None or n.attrs.get("block_size", 0):
            continue
        if n.op_type == "DequantizeLinear":
            src = values.get(n.inputs[0])
            if zp is None:
                zp = np.zeros(scale.shape, (src.dtype if src is not None else np.int8))
            if src is not None:
                if src.dtype in (np.int8, np.uint8, np.int32, np.int16):
                    axis = n.attrs.get("axis", 1) if scale.size > 1 else None
                    if axis is not None and axis < 0:
                        axis += src.ndim
                    consts[n.outputs[0]] = _ops.QConst(src, scale.astype(np.float32), zp.astype(np.int64), axis)
            elif scale.size == 1:
                dq_of[n.outputs[0]] = (n.inputs[0], float(scale.reshape(())), int(zp.reshape(())))
        elif scale.size == 1:
            zp = np.zeros((), np.uint8) if zp is None else zp
            q_params[n.outputs[0]] = (n.inputs[0], float(scale.reshape(())), int(zp.reshape(())), zp.dtype)
    return _ops.QInfo(consts, dq_of, q_params)


# ------------------------------------------------------------------ TFLite-level passes
_OP = tfl.BuiltinOperator
_ACT = tfl.ActivationFunctionType
# ops whose options carry a fused activation LiteRT's kernels apply
_FUSES_ACTIVATION = frozenset({_OP.CONV_2D, _OP.DEPTHWISE_CONV_2D, _OP.FULLY_CONNECTED, _OP.ADD, _OP.SUB, _OP.MUL,
                               _OP.DIV, _OP.AVERAGE_POOL_2D, _OP.MAX_POOL_2D, _OP.CONCATENATION})
# builtins whose kernels are registered from a version above 1
_FIRST_VERSION = {_OP.BROADCAST_TO: 2}
_ACTIVATIONS = {_OP.RELU: _ACT.RELU, _OP.RELU6: _ACT.RELU6, _OP.RELU_N1_TO_1: _ACT.RELU_N1_TO_1}


def _fuse_activations(cx) -> int:
    """RELU / RELU6 / RELU_N1_TO_1 after an op that can apply it become its fused activation."""
    producer = {o: op for op in cx.ops for o in op.outputs}
    readers = Counter(i for op in cx.ops for i in op.inputs)
    graph_out = set(cx.outputs)
    kept, fused = [], 0
    for op in cx.ops:
        act = _ACTIVATIONS.get(op.code)
        src = op.inputs[0] if op.inputs else -1
        prod = producer.get(src)
        if (act is not None and prod is not None and prod.code in _FUSES_ACTIVATION and readers[src] == 1
                and src not in graph_out and prod.options is not None
                and prod.options.fusedActivationFunction == _ACT.NONE
                and cx.tensors[src].qparams() == cx.tensors[op.outputs[0]].qparams()):
            prod.options.fusedActivationFunction = act
            prod.outputs[prod.outputs.index(src)] = op.outputs[0]
            producer[op.outputs[0]] = prod
            fused += 1
            continue
        kept.append(op)
    cx.ops = kept
    return fused


def _drop_unused(cx) -> None:
    """Ops none of whose outputs is read or returned (e.g. a view made but not used)."""
    needed = set(cx.outputs)
    kept = []
    for op in reversed(cx.ops):
        if any(o in needed for o in op.outputs):
            kept.append(op)
            needed.update(i for i in op.inputs if i >= 0)
    cx.ops = kept[::-1]


class _AlignedBuffer(tfl.BufferT):
    """A buffer whose bytes start at a 16-byte boundary (what LiteRT's converter writes, so
    kernels can read weights in place)."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            raw = memoryview(self.data).cast("B")
            builder.StartVector(1, len(raw), 16)
            builder.head = builder.Head() - len(raw)
            builder.Bytes[builder.head:builder.head + len(raw)] = raw
            builder.vectorNumElems = len(raw)
            data = builder.EndVector()
        tfl.BufferStart(builder)
        if data is not None:
            tfl.BufferAddData(builder, data)
        return tfl.BufferEnd(builder)


def _serialize(cx, fused: int) -> tuple[bytes, "ExportReport"]:
    used = sorted({i for op in cx.ops for i in op.inputs + op.outputs if i >= 0} | set(cx.inputs) | set(cx.outputs))
    remap = {old: new for new, old in enumerate(used)}
    buffers = [tfl.BufferT()]
    tensors, names = [], Counter()
    total = 0
    for old in used:
        t = cx.tensors[old]
        tt = tfl.TensorT()
        tt.shape = list(t.shape)
        tt.type = _ops.TFL_DTYPES[t.dtype]
        names[t.name] += 1
        tt.name = t.name if names[t.name] == 1 else f"{t.name}__{names[t.name] - 1}"
        tt.buffer = 0
        if t.data is not None:
            b = _AlignedBuffer()
            b.data = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1) if t.data.size else None
            if b.data is not None:
                total += b.data.size
                buffers.append(b)
                tt.buffer = len(buffers) - 1
        if t.scale is not None:
            qp = tfl.QuantizationParametersT()
            qp.scale = [float(s) for s in t.scale]
            qp.zeroPoint = [int(z) for z in t.zero_point]
            qp.quantizedDimension = int(t.qdim)
            tt.quantization = qp
        tensors.append(tt)
    if total > _MAX_FLATBUFFER - (1 << 24):
        raise ExportError(f"the model holds {total} bytes of weights; one TFLite flatbuffer holds at most 2 GiB")
    codes: dict[int, int] = {}
    op_codes, operators = [], []
    for op in cx.ops:
        if op.code not in codes:
            oc = tfl.OperatorCodeT()
            oc.builtinCode = op.code
            oc.deprecatedBuiltinCode = min(op.code, 127)
            oc.version = _FIRST_VERSION.get(op.code, 1)
            codes[op.code] = len(op_codes)
            op_codes.append(oc)
        o = tfl.OperatorT()
        o.opcodeIndex = codes[op.code]
        o.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
        o.outputs = [remap[i] for i in op.outputs]
        if op.options is not None:
            o.builtinOptionsType = getattr(tfl.BuiltinOptions, type(op.options).__name__[:-1])
            o.builtinOptions = op.options
        operators.append(o)
    sub = tfl.SubGraphT()
    sub.tensors, sub.operators, sub.name = tensors, operators, "main"
    sub.inputs = [remap[i] for i in cx.inputs]
    sub.outputs = [remap[i] for i in cx.outputs]
    layout = {"inputs": {k: list(v) for k, v in cx.input_layouts.items()},
              "outputs": {k: list(v) for k, v in cx.output_layouts.items()}}
    meta_buf = _AlignedBuffer()
    meta_buf.data = np.frombuffer(json.dumps(layout).encode(), np.uint8)
    buffers.append(meta_buf)
    md = tfl.MetadataT()
    md.name, md.buffer = LAYOUT_METADATA, len(buffers) - 1
    sig = tfl.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs = [_tensor_map(tensors[remap[i]].name, remap[i]) for i in cx.inputs]
    sig.outputs = [_tensor_map(tensors[remap[i]].name, remap[i]) for i in cx.outputs]
    model = tfl.ModelT()
    model.version, model.description = 3, "edgeinfer"
    model.operatorCodes, model.subgraphs, model.buffers = op_codes, [sub], buffers
    model.metadata, model.signatureDefs = [md], [sig]
    builder = flatbuffers.Builder(total + (1 << 20))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    data = bytes(builder.Output())
    counts = Counter(_OP_NAMES.get(op.code, str(op.code)) for op in cx.ops)
    transposes = [op for op in cx.ops if op.code == _OP.TRANSPOSE]
    quantized = sum(1 for op in cx.ops if op.code not in (_OP.QUANTIZE, _OP.DEQUANTIZE)
                    and any(cx.tensors[o].dtype == "int8" for o in op.outputs))
    report = ExportReport(
        path=Path(), op_counts=dict(counts.most_common()), transposes=len(transposes),
        transpose_reasons=[cx.reasons.get(op.outputs[0], "") for op in transposes],
        inputs=layout["inputs"], outputs=layout["outputs"], quantized_ops=quantized, size_bytes=len(data),
        fused_activations=fused,
    )
    return data, report


def _tensor_map(name: str, index: int):
    m = tfl.TensorMapT()
    m.name, m.tensorIndex = name, index
    return m

def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ExportError(f"cannot write '{path}': {e}") from e
        raise


def read_layout(model: bytes | str | os.PathLike) -> dict | None:
    """The ``edgeinfer_layout`` metadata of a ``.tflite`` written by :func:`export_tflite`."""
    data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    m = tfl.Model.GetRootAs(data, 0)
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        if md.Name() and md.Name().decode() == LAYOUT_METADATA:
            buf = m.Buffers(md.Buffer())
            return json.loads(bytes(buf.DataAsNumpy()).decode())
    return None
