"""The translation state of the TFLite exporter and its converter registry (see :mod:`.tflite_export`).

:class:`Context` walks the specialised graph once. Every IR tensor it has written lives in
``where[name] = (tensor index, perm)`` with ``physical = logical.transpose(perm)``;
:meth:`Context.get` hands a converter the tensor in the layout it asks for and writes a
TRANSPOSE (recording why) only when the layouts differ. Constants never need one: they are
written already permuted.

Converters are one function per op family, registered in :data:`CONVERTERS` by ONNX op type;
:data:`CHECKS` holds the shape- and constant-dependent conditions under which a mapping
exists (a Reshape to a computed shape, a Resize whose coordinate mapping LiteRT has no flag
for...), so the exporter can list every problem before it writes anything.

The converters themselves are in :mod:`.tflite_export_ops` (elementwise, shape, reduction,
normalization and quantization-boundary ops) and :mod:`.tflite_export_nn` (convolution,
pooling, Gemm/MatMul, Resize, DepthToSpace/SpaceToDepth). Also here: the layout algebra, the
tables the layout look-ahead reads, and which nodes may be written as int8 ops
(:data:`QUANTIZABLE`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeinfer import dtypes as _dt
from edgeinfer.errors import ExportError, require
from edgeinfer.graph import Graph, Node, TensorType
from edgeinfer.kernels.registry import get_schema, resolve_attrs

tfl = require("ai_edge_litert.schema_py_generated", "litert", "TFLite export")

OP = tfl.BuiltinOperator
ACT = tfl.ActivationFunctionType
NHWC = (0, 2, 3, 1)
NWC = (0, 2, 1)
_FLOATS = ("float32", "float16", "float64")

TFL_DTYPES = {
    "float32": tfl.TensorType.FLOAT32, "float16": tfl.TensorType.FLOAT16, "float64": tfl.TensorType.FLOAT64,
    "int8": tfl.TensorType.INT8, "uint8": tfl.TensorType.UINT8, "int16": tfl.TensorType.INT16,
    "uint16": tfl.TensorType.UINT16, "int32": tfl.TensorType.INT32, "uint32": tfl.TensorType.UINT32,
    "int64": tfl.TensorType.INT64, "uint64": tfl.TensorType.UINT64, "bool": tfl.TensorType.BOOL,
}

# ops that want channels last; their data input decides the layout of a graph input
LAYOUT_SENSITIVE = frozenset({
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN",
    "Resize", "DepthToSpace", "SpaceToDepth", "InstanceNormalization", "BatchNormalization",
})
# ops whose output layout follows the input's (looked through when deciding input layouts)
LAYOUT_FOLLOWING = frozenset({
    "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu",
    "QuantizeLinear", "DequantizeLinear", "Cast", "Identity", "Elu", "Neg", "Abs", "Exp", "Pow", "Sqrt",
    "Max", "Min", "Sum", "PRelu",
})


# ops that pass their input's layout to their output unchanged (for the look-ahead)
_CARRY_LAYOUT = frozenset({
    "Relu", "Clip", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu", "Exp", "Log", "Sqrt", "Abs",
    "Neg", "Erf", "Gelu", "Cast", "Identity", "Dropout", "Slice", "Split", "QuantizeLinear", "DequantizeLinear",
    "Elu", "Softplus", "Reciprocal", "Floor", "Ceil", "Round",
})
# binary elementwise ops: ONNX op type -> TFLite op (the look-ahead follows a layout through them)
BINARY = {
    "Add": OP.ADD, "Sub": OP.SUB, "Mul": OP.MUL, "Div": OP.DIV, "Pow": OP.POW, "Max": OP.MAXIMUM,
    "Min": OP.MINIMUM, "Sum": OP.ADD, "Equal": OP.EQUAL, "Greater": OP.GREATER, "GreaterOrEqual": OP.GREATER_EQUAL,
    "Less": OP.LESS, "LessOrEqual": OP.LESS_EQUAL, "And": OP.LOGICAL_AND, "Or": OP.LOGICAL_OR, "Mod": OP.FLOOR_MOD,
    "PRelu": OP.PRELU,
}


# ------------------------------------------------------------------ layout algebra
def ident(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def inv(p) -> tuple[int, ...]:
    r = [0] * len(p)
    for i, a in enumerate(p):
        r[a] = i
    return tuple(r)


def phys(shape, perm) -> list[int]:
    return [int(shape[a]) for a in perm]


def reshape_layout(in_shape, in_perm, out_shape):
    """The output layout under which reshaping the *physical* input gives the logical output,
    or None when the dims a reshape merges or splits are not contiguous and in order
    physically. Dims of size 1 are free; the others are matched into groups of equal products."""
    groups = _reshape_groups(in_shape, out_shape)
    if groups is None:
        return None
    pos = {a: i for i, a in enumerate(a for a in in_perm if in_shape[a] != 1)}
    starts = []
    for ins, outs in groups:
        p = [pos[a] for a in ins]
        if p != list(range(p[0], p[0] + len(p))):
            return None
        starts.append((p[0], outs))
    return _with_unit_axes([o for _, outs in sorted(starts) for o in outs], out_shape)


def reshape_target(in_shape, in_perm, out_shape) -> tuple[int, ...]:
    """An input layout close to ``in_perm`` under which the reshape needs no reordering:
    groups keep their physical order, each group's axes in logical order."""
    groups = _reshape_groups(in_shape, out_shape)
    if groups is None:
        return ident(len(in_shape))
    pos = {a: i for i, a in enumerate(in_perm)}
    order = sorted(groups, key=lambda gr: min(pos[a] for a in gr[0]))
    return _with_unit_axes([a for ins, _ in order for a in ins], in_shape)


def _reshape_groups(in_shape, out_shape):
    ins = [i for i, d in enumerate(in_shape) if d != 1]
    outs = [i for i, d in enumerate(out_shape) if d != 1]
    groups, i, j = [], 0, 0
    while i < len(ins) or j < len(outs):
        if i >= len(ins) or j >= len(outs):
            return None
        gi, gj, pi, pj = [ins[i]], [outs[j]], in_shape[ins[i]], out_shape[outs[j]]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                if i >= len(ins):
                    return None
                gi.append(ins[i])
                pi *= in_shape[ins[i]]
                i += 1
            else:
                if j >= len(outs):
                    return None
                gj.append(outs[j])
                pj *= out_shape[outs[j]]
                j += 1
        groups.append((gi, gj))
    return groups


def _with_unit_axes(seq: list[int], shape) -> tuple[int, ...]:
    """Complete a physical order of the non-unit axes with the unit axes, each right after its
    logical predecessor, so the result stays as close to the identity as it can."""
    order = list(seq)
    for a in range(len(shape)):
        if shape[a] == 1 and a not in order:
            order.insert(order.index(a - 1) + 1 if a > 0 else 0, a)
    return tuple(order)


def drop_axes(perm, axes) -> tuple[int, ...]:
    """The layout left when logical ``axes`` are removed (renumbered)."""
    axes = set(axes)
    return tuple(a - sum(1 for r in axes if r < a) for a in perm if a not in axes)


# ------------------------------------------------------------------ written model
@dataclass
class Tensor:
    name: str
    shape: list[int]
    dtype: str
    data: np.ndarray | None = None
    scale: tuple | None = None          # per-tensor: 1 entry; per-channel: one per channel
    zero_point: tuple | None = None
    qdim: int = 0

    def qparams(self):
        return None if self.scale is None else (self.scale, self.zero_point, self.qdim)


@dataclass
class Op:
    code: int
    inputs: list[int]
    outputs: list[int]
    options: object = None


@dataclass
class QConst:
    """A constant stored quantized: ``real = (q - zero_point) * scale`` along ``axis``."""

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None


@dataclass
class QInfo:
    consts: dict        # DQ output of a constant -> QConst
    dq_of: dict         # DQ output of an activation -> (int source name, scale, zero point)
    q_params: dict      # Q output -> (float input, scale, zero point, zero point dtype)


def _qparam(scale: float, zp: int, zp_dtype) -> tuple[tuple, tuple]:
    """uint8 becomes int8 with the zero point moved by 128: the same real values."""
    zp = int(zp) - 128 if np.dtype(zp_dtype) == np.uint8 else int(zp)
    return (float(np.float32(scale)),), (zp,)


class Context:
    """The state of one export: written tensors and ops, and where each IR tensor lives."""

    def __init__(self, g: Graph, types: dict[str, TensorType], q: QInfo, nchw_inputs: bool):
        self.g, self.types, self.q, self.nchw_inputs = g, types, q, nchw_inputs
        self.consts = g.constants
        self.tensors: list[Tensor] = []
        self.ops: list[Op] = []
        self.where: dict[str, tuple[int, tuple]] = {}
        self.views: dict[tuple, int] = {}
        self.const_cache: dict[tuple, int] = {}
        self.reasons: dict[int, str] = {}  # TRANSPOSE op output -> why
        self.node: Node | None = None
        self.qmode = False
        self.qnodes: set[int] = set()
        self.consumers = g.consumers()
        self.input_layouts: dict[str, tuple] = {}
        self.output_layouts: dict[str, tuple] = {}
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self._pending: list[Op] = []
        self._graph_outputs = set(g.output_names)
        self.col_perm: dict[str, np.ndarray] = {}  # flattened tensors whose columns are permuted

    # ----------------------------------------------------------------- the walk
    def run(self) -> None:
        self._plan_quantized()
        for v in self.g.inputs:
            shape = self.types[v.name].shape
            perm = ident(len(shape))
            if not self.nchw_inputs and len(shape) == 4 and self._feeds_layout_sensitive(v.name):
                perm = NHWC
            dtype = v.dtype
            idx = self.new(phys(shape, perm), dtype, v.name)
            if dtype in ("int8", "uint8", "int16"):
                # an integer input read through a DequantizeLinear (a fully int8 model): the
                # signature tensor carries the DQ's parameters, as the int8 ops reading it expect
                qp = next(((sc, zp) for src, sc, zp in self.q.dq_of.values() if src == v.name), None)
                if qp is not None and dtype == "uint8":
                    # the int8 ops read uint8 as int8 with the zero point moved by 128 (_qparam)
                    t = self.tensors[idx]
                    t.scale, t.zero_point = (float(np.float32(qp[0])),), (int(qp[1]),)
                    i8 = self.new(list(t.shape), "int8", v.name + "_int8")
                    self.tensors[i8].scale, self.tensors[i8].zero_point = _qparam(qp[0], qp[1], np.uint8)
                    self.emit(OP.QUANTIZE, [idx], [i8], tfl.QuantizeOptionsT())
                    self.inputs.append(idx)
                    self.input_layouts[v.name] = perm
                    self.where[v.name] = (i8, perm)
                    continue
                if qp is not None:
                    self.tensors[idx].scale, self.tensors[idx].zero_point = _qparam(qp[0], qp[1], dtype)
            self.where[v.name] = (idx, perm)
            self.inputs.append(idx)
            self.input_layouts[v.name] = perm
        for node in self.g.nodes:
            self.node, self.qmode = node, id(node) in self.qnodes
            if node.op_type == "DequantizeLinear" and node.outputs[0] in self.q.dq_of:
                continue  # written where a float consumer needs it
            if node.op_type == "QuantizeLinear" and node.outputs[0] in self.where:
                continue  # its producer was written quantized
            CONVERTERS[node.op_type](self, node)
        self.node, self.qmode = None, False
        for v in self.g.outputs:
            self._finish_output(v.name)

    def _finish_output(self, name: str) -> None:
        if name in self.consts or (name not in self.where and name not in self.q.dq_of):
            raise ExportError(f"graph output '{name}' is a constant; TFLite models cannot return constants")
        idx0, perm = self._located(name)
        rank = len(perm)
        keep = (not self.nchw_inputs and rank == 4 and tuple(perm) == NHWC)
        target = tuple(perm) if keep else ident(rank)
        idx = self.get(name, target, why=f"graph output '{name}' is returned in the IR's layout")
        want = self.types[name].dtype if name in self.types else None
        t = self.tensors[idx]
        if want == "uint8" and t.dtype == "int8" and t.scale is not None:
            # int8 ops compute uint8 tensors as int8 with the zero point moved by 128 (_qparam):
            # hand back the IR's uint8, the same real values, with one requantize
            u8 = self.new(list(t.shape), "uint8", name + "_uint8")
            self.tensors[u8].scale = tuple(t.scale)
            self.tensors[u8].zero_point = tuple(int(z) + 128 for z in t.zero_point)
            self.emit(OP.QUANTIZE, [idx], [u8], tfl.QuantizeOptionsT())
            idx = u8
        if idx in self.inputs or idx in self.outputs:  # an output that is an input, or twice an output
            t = self.tensors[idx]
            copy = self.new(list(t.shape), t.dtype, name, like=t)
            self.emit(OP.RESHAPE, [idx, self.i32(t.shape)], [copy], tfl.ReshapeOptionsT())
            idx = copy
        for k, t in enumerate(self.tensors):  # the signature name belongs to the returned tensor
            if t.name == name and k != idx:
                t.name = f"{name}_inner"
        self.tensors[idx].name = name
        self.outputs.append(idx)
        self.output_layouts[name] = target

    def _located(self, name: str):
        if name in self.q.dq_of and name not in self.where:
            self._dequantize(name)
        return self.where[name]

    def _feeds_layout_sensitive(self, name: str) -> bool:
        seen, todo = set(), [name]
        while todo:
            cur = todo.pop()
            for n in self.consumers.get(cur, []):
                if n.op_type in LAYOUT_SENSITIVE and n.inputs and n.inputs[0] == cur:
                    return True
                if n.op_type in LAYOUT_FOLLOWING:
                    for o in n.outputs:
                        if o and o not in seen:
                            seen.add(o)
                            todo.append(o)
        return False

    # ---------------------------------------------------------------- look-ahead
    def transposes_downstream(self, name: str, perm, depth: int = 0) -> int:
        """How many of the ops reading ``name`` (looking through ops that carry a layout
        unchanged: elementwise, Slice, Split, Squeeze, Transpose, Q/DQ) would need a TRANSPOSE
        if ``name`` had layout ``perm``. Used to choose between layouts, not exact."""
        if depth > 8:
            return 0
        perm = tuple(perm)
        rank = len(perm)
        cost = 0
        if name in self._graph_outputs:
            ok = perm == ident(rank) or (not self.nchw_inputs and rank == 4 and perm == NHWC)
            cost += 0 if ok else 1
        for n in self.consumers.get(name, []):
            op = n.op_type
            out = n.outputs[0] if n.outputs else ""
            if op in LAYOUT_SENSITIVE and n.inputs[0] == name:
                want = NHWC if rank == 4 else (0,) + tuple(range(2, rank)) + (1,)
                cost += perm != want
            elif op in _CARRY_LAYOUT or (op in BINARY and all(
                    i == name or self.is_const(i) or (i in self.types and len(self.types[i].shape or ()) < rank)
                    for i in n.inputs if i)):
                if out in self.types and len(self.types[out].shape or ()) == rank:
                    cost += sum(self.transposes_downstream(o, perm, depth + 1) for o in n.outputs if o)
            elif op == "Squeeze" and out in self.types:
                axes = [a for a in range(rank) if self.shape(name)[a] == 1 and len(self.types[out].shape) < rank]
                axes = self._squeeze_axes(n, rank) if len(n.inputs) > 1 else axes
                cost += self.transposes_downstream(out, drop_axes(perm, axes), depth + 1)
            elif op == "Transpose":
                t = [a % rank for a in (n.attrs.get("perm") or list(range(rank))[::-1])]
                cost += self.transposes_downstream(out, tuple(inv(t)[a] for a in perm), depth + 1)
            elif op in ("Reshape", "Flatten") and out in self.types:
                q = reshape_layout(self.shape(name), perm, self.types[out].shape)
                cost += 1 if q is None else self.transposes_downstream(out, q, depth + 1)
            elif op == "MatMul" and rank >= 2:
                other = n.inputs[1] if n.inputs[0] == name else n.inputs[0]
                if other in self.consts and n.inputs[0] == name:
                    cost += inv(perm)[rank - 1] != rank - 1
                else:
                    cost += not (perm[:-2] == ident(rank - 2) and set(perm[-2:]) == {rank - 2, rank - 1})
            elif op in ("Gemm", "Softmax", "LogSoftmax"):
                axis = rank - 1 if op == "Gemm" else (n.attrs.get("axis", -1) % rank)
                cost += inv(perm)[axis] != rank - 1
        return cost

    def _squeeze_axes(self, n: Node, rank: int) -> list[int]:
        axes = n.attrs.get("axes")
        if len(n.inputs) > 1 and n.inputs[1] in self.consts:
            axes = self.consts[n.inputs[1]].tolist()
        if axes is None:
            return [a for a in range(rank) if self.shape(n.inputs[0])[a] == 1]
        return sorted(int(a) % rank for a in axes)

    # ---------------------------------------------------------------- lookups
    def shape(self, name: str) -> tuple:
        if name in self.consts:
            return tuple(self.consts[name].shape)
        return tuple(self.types[name].shape)

    def dtype(self, name: str) -> str:
        if name in self.consts:
            return _dt.from_numpy(self.consts[name].dtype)
        return self.types[name].dtype

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def is_const(self, name: str) -> bool:
        return name in self.consts or (self.qmode and name in self.q.consts)

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def perm(self, name: str) -> tuple | None:
        """The current layout of a written tensor (None for constants: any layout is free)."""
        if name in self.consts:
            return None
        if self.qmode and name in self.q.dq_of:
            name = self.q.dq_of[name][0]
        if name in self.where:
            return self.where[name][1]
        if name in self.q.dq_of:
            return self.where[self.q.dq_of[name][0]][1]
        raise ExportError(f"{self.node.label if self.node else 'export'}: tensor '{name}' was not written")

    def get(self, name: str, perm=None, why: str = "") -> int:
        """Tensor index of ``name`` in layout ``perm`` (its current layout when None)."""
        if self.qmode and name in self.q.dq_of:
            name = self.q.dq_of[name][0]
        elif self.qmode and name in self.q.consts:
            return self.qconst_tensor(name, perm)
        if name in self.consts:
            arr = self.consts[name]
            return self.constant(arr if perm is None else arr.transpose(perm), name)
        if name not in self.where and name in self.q.dq_of:
            self._dequantize(name)
        idx, cur = self.where[name]
        if perm is None or tuple(perm) == tuple(cur):
            return idx
        perm = tuple(perm)
        key = (name, perm)
        if key not in self.views:
            s = [inv(cur)[a] for a in perm]
            t = self.tensors[idx]
            out = self.new([t.shape[i] for i in s], t.dtype, f"{name}_perm{''.join(map(str, perm))}", like=t)
            self.emit(OP.TRANSPOSE, [idx, self.i32(s)], [out], tfl.TransposeOptionsT())
            who = self.node.label if self.node else "the signature"
            self.reasons[out] = f"{who} needs '{name}' as {list(perm)} (it is {list(cur)}){': ' + why if why else ''}"
            self.views[key] = out
        return self.views[key]

    def operand(self, name: str, rank: int, perm) -> int:
        """``name`` broadcast-compatible with a rank-``rank`` tensor in layout ``perm``:
        constants are reshaped and permuted, lower-rank tensors get their unit dims."""
        shape = self.shape(name)
        k = len(shape)
        full = (1,) * (rank - k) + tuple(shape)
        if self.is_const(name) and not (self.qmode and name in self.q.consts):
            return self.constant(self.consts[name].reshape(full).transpose(perm), name)
        if self.qmode and name in self.q.consts:
            return self.qconst_tensor(name, perm, full)
        if k == rank:
            return self.get(name, perm)
        sub = tuple(a - (rank - k) for a in perm if a >= rank - k)
        idx = self.get(name, sub, why="a lower-rank operand of a broadcasting op")
        t = self.tensors[idx]
        target = phys(full, perm)
        key = (name, "rank", rank, tuple(perm))
        if key not in self.views:
            out = self.new(target, t.dtype, f"{name}_rank{rank}", like=t)
            self.emit(OP.RESHAPE, [idx, self.i32(target)], [out], tfl.ReshapeOptionsT(newShape=target))
            self.views[key] = out
        return self.views[key]

    def common_perm(self, names, rank: int) -> tuple:
        """The layout an elementwise op works in: that of its first full-rank non-constant
        input with a non-identity layout, else the identity."""
        perms = [self.perm(n) for n in names if n and not self.is_const(n) and self.rank(n) == rank]
        for p in perms:
            if p is not None and tuple(p) != ident(rank):
                return tuple(p)
        return ident(rank)

    # ---------------------------------------------------------------- writing
    def new(self, shape, dtype: str, name: str, data=None, like: Tensor | None = None) -> int:
        t = Tensor(name, [int(d) for d in shape], dtype, data)
        if like is not None and like.scale is not None:
            t.dtype, t.scale, t.zero_point, t.qdim = like.dtype, like.scale, like.zero_point, like.qdim
        self.tensors.append(t)
        return len(self.tensors) - 1

    def constant(self, arr: np.ndarray, name: str = "const", scale=None, zero_point=None, qdim=0) -> int:
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        small = arr.nbytes <= 4096
        key = (arr.dtype.str, arr.shape, arr.tobytes() if small else id(arr), scale, zero_point, qdim)
        if key in self.const_cache:
            return self.const_cache[key]
        idx = self.new(arr.shape, _dt.from_numpy(arr.dtype), name, data=arr)
        t = self.tensors[idx]
        t.scale, t.zero_point, t.qdim = scale, zero_point, qdim
        self.const_cache[key] = idx
        if not small:
            self._keep = getattr(self, "_keep", [])
            self._keep.append(arr)  # id() keys stay valid while the array lives
        return idx

    def i32(self, values) -> int:
        return self.constant(np.asarray(values, np.int32).reshape(-1), "shape")

    def scalar(self, value, dtype="float32") -> int:
        return self.constant(np.asarray(value, dtype=dtype).reshape(()), "scalar")

    def emit(self, code: int, inputs: list[int], outputs: list[int], options=None) -> None:
        self.ops.append(Op(code, list(inputs), list(outputs), options))
        if self._pending:
            self.ops.extend(self._pending)
            self._pending = []

    def out(self, name: str, shape, perm, dtype: str | None = None, same_as: int | None = None,
            fixed: tuple | None = None) -> int:
        """A new tensor for IR output ``name`` (physical ``shape``, layout ``perm``). For a node
        written quantized the tensor is int8 with the parameters of the QuantizeLinear after
        it; ``same_as`` (ops that cannot rescale) or ``fixed`` (LOGISTIC, SOFTMAX) give the
        parameters the op itself must produce, and a requantize follows when they differ."""
        perm = tuple(perm)
        if not self.qmode:
            idx = self.new(shape, dtype or self.types[name].dtype, name)
            self.where[name] = (idx, perm)
            return idx
        qouts = [n.outputs[0] for n in self.consumers.get(name, [])]
        _, scale, zp, zdt = self.q.q_params[qouts[0]]
        s, z = _qparam(scale, zp, zdt)
        final = Tensor(qouts[0], [int(d) for d in shape], "int8", scale=s, zero_point=z)
        self.tensors.append(final)
        fidx = len(self.tensors) - 1
        for qo in qouts:
            self.where[qo] = (fidx, perm)
        produced = None
        if same_as is not None:
            src = self.tensors[same_as]
            produced = (src.scale, src.zero_point)
        elif fixed is not None:
            produced = ((float(np.float32(fixed[0])),), (int(fixed[1]),))
        if produced is None or (tuple(produced[0]), tuple(produced[1])) == (s, z):
            return fidx
        mid = self.new(shape, "int8", name + "_requant")
        self.tensors[mid].scale, self.tensors[mid].zero_point = tuple(produced[0]), tuple(produced[1])
        self._pending.append(Op(OP.QUANTIZE, [mid], [fidx], tfl.QuantizeOptionsT()))
        return mid

    def alias(self, name: str, idx: int, perm) -> None:
        """IR tensor ``name`` is tensor ``idx`` (an op that only relabels: Transpose, Identity)."""
        if not self.qmode:
            self.where[name] = (idx, tuple(perm))
            return
        t = self.tensors[idx]
        out = self.out(name, t.shape, perm, same_as=idx)
        if out != idx:  # out() made a fresh int8 tensor: copy into it (requantizing if needed)
            if self.tensors[out].qparams() == t.qparams():
                self.where.update({k: (idx, tuple(perm)) for k, v in self.where.items() if v[0] == out})
                self._pending.clear()
            else:
                self.emit(OP.QUANTIZE, [idx], [out], tfl.QuantizeOptionsT())
        # out == idx cannot happen: out() always makes a new tensor

    def requantized(self, idx: int, scale, zero_point) -> int:
        """``idx`` with other int8 parameters (a QUANTIZE op), or ``idx`` when they match."""
        t = self.tensors[idx]
        if (t.scale, t.zero_point) == (scale, zero_point):
            return idx
        key = ("requant", idx, scale, zero_point)
        if key not in self.views:
            out = self.new(t.shape, "int8", t.name + "_rq")
            self.tensors[out].scale, self.tensors[out].zero_point = scale, zero_point
            self.emit(OP.QUANTIZE, [idx], [out], tfl.QuantizeOptionsT())
            self.views[key] = out
        return self.views[key]

    # ------------------------------------------------------------ quantization
    def _dequantize(self, name: str) -> None:
        src = self.q.dq_of[name][0]
        idx, perm = self.where[src]
        t = self.tensors[idx]
        out = self.new(t.shape, "float32", name)
        self.emit(OP.DEQUANTIZE, [idx], [out])
        self.where[name] = (out, perm)

    def qconst_tensor(self, name: str, perm=None, full_shape=None) -> int:
        qc = self.q.consts[name]
        q = _int8(qc.q, qc.zero_point)
        zp = _int8_zp(qc.zero_point, qc.q.dtype)
        if full_shape is not None:
            q = q.reshape(full_shape)
        if perm is not None:
            q = q.transpose(perm)
        if qc.scale.size != 1:
            raise ExportError(f"{self.node.label}: per-channel quantized operand '{name}' is only supported as a weight")
        return self.constant(q, name, scale=(float(qc.scale.reshape(-1)[0]),), zero_point=(int(zp.reshape(-1)[0]),))

    def _plan_quantized(self) -> None:
        """Nodes written as int8 ops: every float input from a DequantizeLinear (or a quantized
        constant the op can take), every output read only by QuantizeLinear nodes that agree."""
        outputs = set(self.g.output_names)
        for n in self.g.nodes:
            spec = QUANTIZABLE.get(n.op_type)
            if spec is None or n.domain:
                continue
            ok, has_act = True, False
            for pos, i in enumerate(n.inputs):
                if not i:
                    continue
                if i in self.q.dq_of:
                    has_act = True
                elif i in self.q.consts:
                    ok = ok and pos in spec.get("qconst", ())
                elif i in self.consts:
                    ok = ok and (self.consts[i].dtype.kind in "iub" or pos in spec.get("float_const", ()))
                else:
                    ok = False
            for o in n.outputs:
                if not o:
                    continue
                users = self.consumers.get(o, [])
                params = {self.q.q_params.get(u.outputs[0], (None,))[1:] for u in users}
                if (o in outputs or not users or any(u.op_type != "QuantizeLinear" for u in users)
                        or len(params) != 1 or (None,) in [p[:1] for p in params]):
                    ok = False
            check = spec.get("check")
            if ok and has_act and (check is None or check(self, n)):
                self.qnodes.add(id(n))


def _int8(q: np.ndarray, zp: np.ndarray) -> np.ndarray:
    if q.dtype == np.uint8:
        return (q.astype(np.int16) - 128).astype(np.int8)
    return q


def _int8_zp(zp: np.ndarray, qdtype) -> np.ndarray:
    zp = np.asarray(zp, np.int64)
    return zp - 128 if np.dtype(qdtype) == np.uint8 else zp


# ================================================================== the converter registry
CONVERTERS: dict[str, Callable[[Context, Node], None]] = {}
CHECKS: dict[str, Callable[[Node, Graph, dict], str | None]] = {}


def converts(*op_types: str, check: Callable | None = None):
    def register(fn):
        for op in op_types:
            CONVERTERS[op] = fn
            if check is not None:
                CHECKS[op] = check
        return fn
    return register


def attrs_of(node: Node) -> dict:
    """The node's attributes with the ONNX defaults filled in (the kernel registry's table)."""
    return resolve_attrs(get_schema(node.op_type, node.domain), node)


def _const_inputs(*positions):
    def check(node: Node, g: Graph, types) -> str | None:
        for p in positions:
            if len(node.inputs) > p and node.inputs[p] and node.inputs[p] not in g.constants:
                return f"input {p} ('{node.inputs[p]}') must be a constant at the export shapes"
        return None
    return check


# ------------------------------------------------------------------ int8 planning (Context._plan_quantized)
# (_clip_bounds is also what the Clip converter reads its bounds with)
def _clip_bounds(cx_or_g, n: Node):
    consts = cx_or_g.consts if isinstance(cx_or_g, Context) else cx_or_g.constants
    lo = consts[n.inputs[1]] if len(n.inputs) > 1 and n.inputs[1] else None
    hi = consts[n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] else None
    return (None if lo is None else float(lo.reshape(-1)[0])), (None if hi is None else float(hi.reshape(-1)[0]))


# op type -> how it may be written in int8: positions of quantized constants it takes, float
# constants it may take, and an extra condition
QUANTIZABLE: dict[str, dict] = {
    "Conv": {"qconst": (1, 2), "float_const": (2,), "check": lambda cx, n: _conv_weights_ok(cx, n)},
    "Gemm": {"qconst": (1, 2), "float_const": (2,), "check": lambda cx, n: _fc_ok(cx, n)},
    "MatMul": {"qconst": (1,), "check": lambda cx, n: _fc_ok(cx, n)},
    "Add": {"qconst": (0, 1)}, "Sub": {"qconst": (0, 1)}, "Mul": {"qconst": (0, 1)},
    "MaxPool": {}, "AveragePool": {}, "GlobalAveragePool": {}, "Concat": {}, "Reshape": {}, "Flatten": {},
    "Squeeze": {}, "Unsqueeze": {}, "Transpose": {}, "Relu": {}, "Sigmoid": {}, "Softmax": {}, "HardSwish": {},
    "Tanh": {}, "LeakyRelu": {}, "ReduceMean": {}, "Slice": {}, "Split": {}, "Resize": {"float_const": (1, 2)},
    "Clip": {"float_const": (1, 2), "check": lambda cx, n: _clip_bounds(cx, n) in ((0.0, 6.0), (0.0, None),
                                                                                   (-1.0, 1.0))},
    "Identity": {}, "Pad": {"float_const": (2,)},
}


def _conv_weights_ok(cx: Context, n: Node) -> bool:
    w = cx.q.consts.get(n.inputs[1])
    if w is None or w.q.dtype != np.int8 or np.any(w.zero_point != 0):
        return False  # LiteRT's int8 kernels take symmetric int8 weights
    if len(n.inputs) > 2 and n.inputs[2] in cx.q.consts:
        b = cx.q.consts[n.inputs[2]]
        return b.q.dtype == np.int32 and not np.any(b.zero_point)
    return True


def _fc_ok(cx: Context, n: Node) -> bool:
    if n.op_type == "Gemm" and attrs_of(n)["transA"]:
        return False
    if n.op_type == "MatMul" and len(cx.shape(n.inputs[1])) != 2:
        return False
    return _conv_weights_ok(cx, n)
