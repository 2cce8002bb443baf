"""The translation state and the op converters of the TFLite exporter (see :mod:`.tflite_export`).

:class:`Context` walks the specialised graph once. Every IR tensor it has written lives in
``where[name] = (tensor index, perm)`` with ``physical = logical.transpose(perm)``;
:meth:`Context.get` hands a converter the tensor in the layout it asks for and writes a
TRANSPOSE (recording why) only when the layouts differ. Constants never need one: they are
written already permuted.

Converters are one function per op family, registered in :data:`CONVERTERS` by ONNX op type;
:data:`CHECKS` holds the shape- and constant-dependent conditions under which a mapping
exists (a Reshape to a computed shape, a Resize whose coordinate mapping LiteRT has no flag
for...), so the exporter can list every problem before it writes anything.
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


# ================================================================== converters
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


# ------------------------------------------------------------------ elementwise
UNARY = {
    "Relu": OP.RELU, "Sigmoid": OP.LOGISTIC, "Tanh": OP.TANH, "Exp": OP.EXP, "Log": OP.LOG, "Sqrt": OP.SQRT,
    "Abs": OP.ABS, "Neg": OP.NEG, "Floor": OP.FLOOR, "Ceil": OP.CEIL, "Round": OP.ROUND, "Sin": OP.SIN,
    "Cos": OP.COS, "Elu": OP.ELU, "HardSwish": OP.HARD_SWISH, "Not": OP.LOGICAL_NOT, "Sign": OP.SIGN,
}
# int8 output parameters LiteRT's kernels require
_FIXED_QPARAMS = {"Sigmoid": (1 / 256, -128), "Tanh": (1 / 128, 0), "Softmax": (1 / 256, -128)}


@converts(*UNARY, check=None)
def unary(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    if n.op_type == "Elu" and abs(attrs_of(n)["alpha"] - 1.0) > 1e-7:
        raise ExportError(f"{n.label}: ELU with alpha != 1 has no TFLite form")
    idx = cx.get(x)
    t = cx.tensors[idx]
    out = cx.out(n.outputs[0], t.shape, cx.perm(x), fixed=_FIXED_QPARAMS.get(n.op_type))
    cx.emit(UNARY[n.op_type], [idx], [out])


def _elu_check(node, g, types):
    a = node.attrs.get("alpha", 1.0)
    return None if abs(a - 1.0) < 1e-7 else f"alpha={a} (LiteRT's ELU has alpha 1)"


CHECKS["Elu"] = _elu_check


@converts("Identity", "Dropout")
def identity(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    if x in cx.consts:
        cx.consts[n.outputs[0]] = cx.consts[x]
        return
    idx = cx.get(x)
    cx.alias(n.outputs[0], idx, cx.perm(x))


BINARY = {
    "Add": OP.ADD, "Sub": OP.SUB, "Mul": OP.MUL, "Div": OP.DIV, "Pow": OP.POW, "Max": OP.MAXIMUM,
    "Min": OP.MINIMUM, "Sum": OP.ADD, "Equal": OP.EQUAL, "Greater": OP.GREATER, "GreaterOrEqual": OP.GREATER_EQUAL,
    "Less": OP.LESS, "LessOrEqual": OP.LESS_EQUAL, "And": OP.LOGICAL_AND, "Or": OP.LOGICAL_OR, "Mod": OP.FLOOR_MOD,
    "PRelu": OP.PRELU,
}
_BINARY_OPTIONS = {OP.ADD: tfl.AddOptionsT, OP.SUB: tfl.SubOptionsT, OP.MUL: tfl.MulOptionsT, OP.DIV: tfl.DivOptionsT}


def _mod_check(node, g, types):
    return "fmod=1 (LiteRT has only floor modulo)" if node.attrs.get("fmod", 0) else None


CHECKS["Mod"] = _mod_check


@converts(*BINARY)
def binary(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    rank = len(cx.shape(out_name))
    ins = [i for i in n.inputs if i]
    if n.op_type == "Pow" and cx.is_const(ins[1]) and not cx.qmode:
        e = cx.const(ins[1])
        if e.size == 1 and float(e.reshape(-1)[0]) in (1.0, 2.0, 0.5) and cx.shape(ins[0]) == cx.shape(out_name):
            v = float(e.reshape(-1)[0])
            x = cx.get(ins[0])
            t = cx.tensors[x]
            if v == 1.0:
                cx.alias(out_name, x, cx.perm(ins[0]))
                return
            out = cx.out(out_name, t.shape, cx.perm(ins[0]))
            if v == 2.0:
                cx.emit(OP.MUL, [x, x], [out], tfl.MulOptionsT())
            else:
                cx.emit(OP.SQRT, [x], [out])
            return
    perm = cx.common_perm(ins, rank)
    code = BINARY[n.op_type]
    acc = cx.operand(ins[0], rank, perm)
    for k, other in enumerate(ins[1:]):
        b = cx.operand(other, rank, perm)
        last = k == len(ins) - 2
        shape = phys(cx.shape(out_name), perm)
        opts = _BINARY_OPTIONS.get(code)
        if last:
            dtype = "bool" if code in (OP.EQUAL, OP.GREATER, OP.GREATER_EQUAL, OP.LESS, OP.LESS_EQUAL) else None
            out = cx.out(out_name, shape, perm, dtype=dtype)
        else:
            out = cx.new(shape, cx.dtype(out_name), f"{out_name}_part{k}")
        cx.emit(code, [acc, b], [out], opts() if opts else None)
        acc = out


@converts("Mean")
def variadic_mean(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    rank = len(cx.shape(out_name))
    perm = cx.common_perm(n.inputs, rank)
    acc = cx.operand(n.inputs[0], rank, perm)
    shape = phys(cx.shape(out_name), perm)
    for k, other in enumerate(n.inputs[1:]):
        nxt = cx.new(shape, cx.dtype(out_name), f"{out_name}_sum{k}")
        cx.emit(OP.ADD, [acc, cx.operand(other, rank, perm)], [nxt], tfl.AddOptionsT())
        acc = nxt
    out = cx.out(out_name, shape, perm)
    cx.emit(OP.MUL, [acc, cx.scalar(1.0 / len(n.inputs))], [out], tfl.MulOptionsT())


@converts("Where")
def where(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    rank = len(cx.shape(out_name))
    perm = cx.common_perm(n.inputs, rank)
    ins = [cx.operand(i, rank, perm) for i in n.inputs]
    cx.emit(OP.SELECT_V2, ins, [cx.out(out_name, phys(cx.shape(out_name), perm), perm)])


@converts("Reciprocal")
def reciprocal(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    out = cx.out(n.outputs[0], cx.tensors[x].shape, cx.perm(n.inputs[0]))
    cx.emit(OP.DIV, [cx.scalar(1.0), x], [out], tfl.DivOptionsT())


@converts("LeakyRelu")
def leaky_relu(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    out = cx.out(n.outputs[0], cx.tensors[x].shape, cx.perm(n.inputs[0]))
    cx.emit(OP.LEAKY_RELU, [x], [out], tfl.LeakyReluOptionsT(alpha=float(attrs_of(n)["alpha"])))


@converts("Gelu")
def gelu(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    out = cx.out(n.outputs[0], cx.tensors[x].shape, cx.perm(n.inputs[0]))
    cx.emit(OP.GELU, [x], [out], tfl.GeluOptionsT(approximate=attrs_of(n)["approximate"] == "tanh"))


def _clip_bounds(cx_or_g, n: Node):
    consts = cx_or_g.consts if isinstance(cx_or_g, Context) else cx_or_g.constants
    lo = consts[n.inputs[1]] if len(n.inputs) > 1 and n.inputs[1] else None
    hi = consts[n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] else None
    return (None if lo is None else float(lo.reshape(-1)[0])), (None if hi is None else float(hi.reshape(-1)[0]))


@converts("Clip", check=_const_inputs(1, 2))
def clip(cx: Context, n: Node) -> None:
    lo, hi = _clip_bounds(cx, n)
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    perm = cx.perm(n.inputs[0])
    named = {(0.0, 6.0): OP.RELU6, (0.0, None): OP.RELU, (-1.0, 1.0): OP.RELU_N1_TO_1, (0.0, 1.0): OP.RELU_0_TO_1}
    code = named.get((lo, hi))
    if code is not None and (code != OP.RELU_0_TO_1 or not cx.qmode):
        cx.emit(code, [x], [cx.out(n.outputs[0], t.shape, perm)])
        return
    if cx.qmode:
        raise ExportError(f"{n.label}: a quantized Clip({lo}, {hi}) has no int8 TFLite form")
    cur = x
    if lo is not None:
        nxt = cx.new(t.shape, t.dtype, n.outputs[0] + "_lo") if hi is not None else cx.out(n.outputs[0], t.shape, perm)
        cx.emit(OP.MAXIMUM, [cur, cx.scalar(lo, t.dtype)], [nxt])
        cur = nxt
    if hi is not None:
        cx.emit(OP.MINIMUM, [cur, cx.scalar(hi, t.dtype)], [cx.out(n.outputs[0], t.shape, perm)])
    if lo is None and hi is None:
        cx.alias(n.outputs[0], x, perm)


@converts("HardSigmoid")
def hard_sigmoid(cx: Context, n: Node) -> None:
    a = attrs_of(n)
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    perm = cx.perm(n.inputs[0])
    scaled = cx.new(t.shape, t.dtype, n.outputs[0] + "_scaled")
    cx.emit(OP.MUL, [x, cx.scalar(a["alpha"])], [scaled], tfl.MulOptionsT())
    shifted = cx.new(t.shape, t.dtype, n.outputs[0] + "_shifted")
    cx.emit(OP.ADD, [scaled, cx.scalar(a["beta"])], [shifted], tfl.AddOptionsT())
    # min(relu(y), 1) == relu(min(y, 1)); in this order the RELU fuses into the ADD
    rel = cx.new(t.shape, t.dtype, n.outputs[0] + "_relu")
    cx.emit(OP.RELU, [shifted], [rel])
    cx.emit(OP.MINIMUM, [rel, cx.scalar(1.0)], [cx.out(n.outputs[0], t.shape, perm)])


@converts("Softplus")
def softplus(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    e = cx.new(t.shape, t.dtype, n.outputs[0] + "_exp")
    cx.emit(OP.EXP, [x], [e])
    s = cx.new(t.shape, t.dtype, n.outputs[0] + "_1p")
    cx.emit(OP.ADD, [e, cx.scalar(1.0)], [s], tfl.AddOptionsT())
    cx.emit(OP.LOG, [s], [cx.out(n.outputs[0], t.shape, cx.perm(n.inputs[0]))])


# Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): erf(x) = sign(x) (1 - poly(t) e^{-x^2}), t = 1 / (1 + p|x|)
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@converts("Erf")
def erf(cx: Context, n: Node) -> None:
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    shape, f = t.shape, t.dtype
    name = n.outputs[0]

    def op(code, ins, tag, opts=None):
        o = cx.new(shape, f, f"{name}_{tag}")
        cx.emit(code, ins, [o], opts)
        return o

    ax = op(OP.ABS, [x], "abs")
    den = op(OP.ADD, [op(OP.MUL, [ax, cx.scalar(_ERF_P)], "px", tfl.MulOptionsT()), cx.scalar(1.0)], "den",
             tfl.AddOptionsT())
    tt = op(OP.DIV, [cx.scalar(1.0), den], "t", tfl.DivOptionsT())
    poly = op(OP.MUL, [tt, cx.scalar(_ERF_A[4])], "p4", tfl.MulOptionsT())
    for k, a in enumerate(reversed(_ERF_A[:4])):
        poly = op(OP.ADD, [poly, cx.scalar(a)], f"a{k}", tfl.AddOptionsT())
        poly = op(OP.MUL, [poly, tt], f"m{k}", tfl.MulOptionsT())
    sq = op(OP.MUL, [x, x], "sq", tfl.MulOptionsT())
    ex = op(OP.EXP, [op(OP.NEG, [sq], "nsq")], "exp")
    one_minus = op(OP.SUB, [cx.scalar(1.0), op(OP.MUL, [poly, ex], "pe", tfl.MulOptionsT())], "om", tfl.SubOptionsT())
    sign = op(OP.SIGN, [x], "sign")
    cx.emit(OP.MUL, [sign, one_minus], [cx.out(name, shape, cx.perm(n.inputs[0]))], tfl.MulOptionsT())


@converts("Cast")
def cast(cx: Context, n: Node) -> None:
    to = attrs_of(n)["to"]
    x = cx.get(n.inputs[0])
    t = cx.tensors[x]
    if to == t.dtype:
        cx.alias(n.outputs[0], x, cx.perm(n.inputs[0]))
        return
    out = cx.out(n.outputs[0], t.shape, cx.perm(n.inputs[0]), dtype=to)
    cx.emit(OP.CAST, [x], [out], tfl.CastOptionsT(inDataType=TFL_DTYPES[t.dtype], outDataType=TFL_DTYPES[to]))


def _cast_check(node, g, types):
    to = node.attrs.get("to")
    return None if to in TFL_DTYPES else f"cast to {to}"


CHECKS["Cast"] = _cast_check


# ------------------------------------------------------------------ softmax
def _last_axis_layout(perm, axis) -> tuple:
    return tuple(a for a in perm if a != axis) + (axis,)


@converts("Softmax", "LogSoftmax")
def softmax(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    axis = attrs_of(n)["axis"] % rank
    perm = cx.perm(x)
    if inv(perm)[axis] != rank - 1:
        perm = _last_axis_layout(perm, axis)
    idx = cx.get(x, perm, why=f"{n.op_type} works on the last axis")
    shape = cx.tensors[idx].shape
    if n.op_type == "Softmax":
        out = cx.out(n.outputs[0], shape, perm, fixed=_FIXED_QPARAMS["Softmax"])
        cx.emit(OP.SOFTMAX, [idx], [out], tfl.SoftmaxOptionsT(beta=1.0))
    else:
        cx.emit(OP.LOG_SOFTMAX, [idx], [cx.out(n.outputs[0], shape, perm)], tfl.LogSoftmaxOptionsT())


# ------------------------------------------------------------------ shape ops
def _static_out(node, g, types) -> str | None:
    for o in node.outputs:
        t = types.get(o)
        if o and (t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape)):
            return f"output '{o}' has no static shape at the export input shapes"
    return None


def _reshape_check(node, g, types):
    return _static_out(node, g, types)


@converts("Reshape", "Flatten", "Squeeze", "Unsqueeze", check=_reshape_check)
def reshape(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    in_shape, out_shape = cx.shape(x), cx.shape(out_name)
    if x in cx.consts and not cx.qmode:
        cx.consts[out_name] = cx.consts[x].reshape(out_shape)
        return
    perm = cx.perm(x)
    q = reshape_layout(in_shape, perm, out_shape)
    if q is None and _flatten_into_weights(cx, n, in_shape, perm, out_shape):
        return
    if q is None:
        # reorder the input once: either close to its layout or to the logical order,
        # whichever leaves fewer transposes for the readers of the result
        options = []
        for cand in (reshape_target(in_shape, perm, out_shape), ident(len(in_shape))):
            cq = reshape_layout(in_shape, cand, out_shape)
            if cq is not None:
                options.append((cx.transposes_downstream(out_name, cq), len(options), cand, cq))
        _, _, perm, q = min(options)
    idx = cx.get(x, perm, why=f"{n.op_type} to {list(out_shape)} merges or splits dims in logical order")
    new_shape = phys(out_shape, q)
    if new_shape == cx.tensors[idx].shape and len(new_shape) == len(cx.tensors[idx].shape):
        cx.alias(out_name, idx, q)
        return
    out = cx.out(out_name, new_shape, q, same_as=idx)
    cx.emit(OP.RESHAPE, [idx, cx.i32(new_shape)], [out], tfl.ReshapeOptionsT(newShape=new_shape))


def _flatten_into_weights(cx: Context, n: Node, in_shape, perm, out_shape) -> bool:
    """A flatten to [N, K] read only by fully connected layers with constant weights: flatten
    the physical order and permute the weights' K columns instead of the data."""
    out_name = n.outputs[0]
    if len(out_shape) != 2 or perm[0] != 0 or out_shape[0] != in_shape[0] or out_name in cx._graph_outputs:
        return False
    users = cx.consumers.get(out_name, [])
    for u in users:
        if u.op_type == "Gemm" and u.inputs[0] == out_name and not u.attrs.get("transA", 0):
            w = u.inputs[1]
        elif u.op_type == "MatMul" and u.inputs[0] == out_name:
            w = u.inputs[1]
        else:
            return False
        if not (w in cx.consts or w in cx.q.consts) or u.inputs[1] == out_name:
            return False
    if not users:
        return False
    rest = [a - 1 for a in perm[1:]]
    cols = np.arange(int(np.prod(in_shape[1:])), dtype=np.int64).reshape(in_shape[1:]).transpose(rest).reshape(-1)
    idx = cx.get(n.inputs[0])
    shape = [int(d) for d in out_shape]
    out = cx.out(out_name, shape, (0, 1), same_as=idx)
    cx.emit(OP.RESHAPE, [idx, cx.i32(shape)], [out], tfl.ReshapeOptionsT(newShape=shape))
    for qo in [out_name] + [u.outputs[0] for u in cx.consumers.get(out_name, []) if u.op_type == "QuantizeLinear"]:
        cx.col_perm[qo] = cols
    return True


@converts("Transpose")
def transpose(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    t = attrs_of(n)["perm"] or list(range(rank))[::-1]
    t = [a % rank for a in t]
    if x in cx.consts and not cx.qmode:
        cx.consts[n.outputs[0]] = cx.consts[x].transpose(t)
        return
    p = cx.perm(x)
    it = inv(t)
    absorbed = tuple(it[a] for a in p)
    if absorbed != ident(rank):
        # relabelling is free here but may cost transposes further on; writing the TRANSPOSE
        # now costs one and leaves the logical order
        later = cx.transposes_downstream(n.outputs[0], absorbed)
        if later > 1 + cx.transposes_downstream(n.outputs[0], ident(rank)):
            src = cx.get(x, tuple(t), why=f"writing the Transpose saves {later - 1} later one(s)")
            cx.alias(n.outputs[0], src, ident(rank))
            return
    cx.alias(n.outputs[0], cx.get(x), absorbed)


@converts("Concat")
def concat(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    rank = len(cx.shape(out_name))
    axis = attrs_of(n)["axis"] % rank
    ins = [i for i in n.inputs if i and int(np.prod(cx.shape(i))) > 0]
    perm = cx.common_perm(ins, rank)
    idxs = [cx.get(i, perm, why="Concat inputs share one layout") for i in ins]
    shape = phys(cx.shape(out_name), perm)
    out = cx.out(out_name, shape, perm)
    if cx.qmode:
        o = cx.tensors[out]
        idxs = [cx.requantized(i, o.scale, o.zero_point) for i in idxs]
    cx.emit(OP.CONCATENATION, idxs, [out], tfl.ConcatenationOptionsT(axis=inv(perm)[axis]))


@converts("Split", check=_const_inputs(1))
def split(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    axis = attrs_of(n)["axis"] % rank
    perm = cx.perm(x)
    idx = cx.get(x)
    sizes = [cx.shape(o)[axis] for o in n.outputs]
    outs = [cx.out(o, phys(cx.shape(o), perm), perm, same_as=idx) for o in n.outputs]
    cx.emit(OP.SPLIT_V, [idx, cx.i32(sizes), cx.constant(np.array(inv(perm)[axis], np.int32))], outs,
            tfl.SplitVOptionsT(numSplits=len(outs)))


@converts("Slice", check=_const_inputs(1, 2, 3, 4))
def slice_(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    shape = cx.shape(x)
    rank = len(shape)
    starts, ends = cx.const(n.inputs[1]).tolist(), cx.const(n.inputs[2]).tolist()
    axes = cx.const(n.inputs[3]).tolist() if len(n.inputs) > 3 and n.inputs[3] else list(range(len(starts)))
    steps = cx.const(n.inputs[4]).tolist() if len(n.inputs) > 4 and n.inputs[4] else [1] * len(starts)
    spec = {a % rank: slice(int(s), int(e), int(st)) for s, e, a, st in zip(starts, ends, axes, steps)}
    if x in cx.consts and not cx.qmode:
        cx.consts[out_name] = cx.consts[x][tuple(spec.get(a, slice(None)) for a in range(rank))]
        return
    perm = cx.perm(x)
    begin, end, stride, end_mask = [], [], [], 0
    for i, a in enumerate(perm):
        b, e, s = spec.get(a, slice(None)).indices(shape[a])
        if s < 0 and e < 0:
            end_mask |= 1 << i
            e = 0
        begin.append(b), end.append(e), stride.append(s)
    idx = cx.get(x)
    out = cx.out(out_name, phys(cx.shape(out_name), perm), perm, same_as=idx)
    cx.emit(OP.STRIDED_SLICE, [idx, cx.i32(begin), cx.i32(end), cx.i32(stride)], [out],
            tfl.StridedSliceOptionsT(endMask=end_mask))


@converts("Gather")
def gather(cx: Context, n: Node) -> None:
    x, ind, out_name = n.inputs[0], n.inputs[1], n.outputs[0]
    rank = cx.rank(x)
    axis = attrs_of(n)["axis"] % rank
    if x in cx.consts and ind in cx.consts and not cx.qmode:
        cx.consts[out_name] = np.take(cx.consts[x], cx.consts[ind], axis=axis)
        return
    k = len(cx.shape(ind))
    perm = cx.perm(x) if x not in cx.consts else ident(rank)
    idx = cx.get(x, perm)
    if ind in cx.consts:
        v = cx.consts[ind].astype(np.int64)
        v = np.where(v < 0, v + cx.shape(x)[axis], v).astype(np.int32)
        ii = cx.constant(v, ind)
    else:
        ii = cx.get(ind, ident(k), why="Gather indices are read in logical order")
    out_perm = []
    for a in perm:
        if a == axis:
            out_perm.extend(range(axis, axis + k))
        else:
            out_perm.append(a if a < axis else a + k - 1)
    out_perm = tuple(out_perm)
    out = cx.out(out_name, phys(cx.shape(out_name), out_perm), out_perm, same_as=idx)
    cx.emit(OP.GATHER, [idx, ii], [out], tfl.GatherOptionsT(axis=inv(perm)[axis]))


@converts("Expand", check=_const_inputs(1))
def expand(cx: Context, n: Node) -> None:
    out_name = n.outputs[0]
    shape = cx.shape(out_name)
    rank = len(shape)
    perm = cx.common_perm([n.inputs[0]], rank)
    x = cx.operand(n.inputs[0], rank, perm)
    target = phys(shape, perm)
    if cx.tensors[x].shape == target:
        cx.alias(out_name, x, perm)
        return
    cx.emit(OP.BROADCAST_TO, [x, cx.i32(target)], [cx.out(out_name, target, perm)])


@converts("Tile", check=_const_inputs(1))
def tile(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    perm = cx.perm(x)
    reps = cx.const(n.inputs[1]).tolist()
    idx = cx.get(x)
    cx.emit(OP.TILE, [idx, cx.i32([reps[a] for a in perm])],
            [cx.out(n.outputs[0], phys(cx.shape(n.outputs[0]), perm), perm)])


@converts("Pad", check=_const_inputs(1, 2, 3))
def pad(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    rank = cx.rank(x)
    a = attrs_of(n)
    pads = cx.const(n.inputs[1]).astype(np.int64).tolist()
    axes = cx.const(n.inputs[3]).tolist() if len(n.inputs) > 3 and n.inputs[3] else list(range(rank))
    full = [[0, 0] for _ in range(rank)]
    for k, ax in enumerate(axes):
        full[ax % rank] = [pads[k], pads[k + len(axes)]]
    if any(p < 0 for pr in full for p in pr):
        raise ExportError(f"{n.label}: negative pads (cropping) are not supported")
    perm = cx.perm(x)
    idx = cx.get(x)
    paddings = cx.constant(np.array([full[ax] for ax in perm], np.int32), "paddings")
    out = cx.out(out_name, phys(cx.shape(out_name), perm), perm, same_as=idx)
    mode = a["mode"]
    if mode == "reflect":
        cx.emit(OP.MIRROR_PAD, [idx, paddings], [out], tfl.MirrorPadOptionsT(mode=tfl.MirrorPadMode.REFLECT))
        return
    value = cx.const(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else None
    if value is None or float(value.reshape(-1)[0]) == 0.0:
        cx.emit(OP.PAD, [idx, paddings], [out], tfl.PadOptionsT())
    else:
        cx.emit(OP.PADV2, [idx, paddings, cx.scalar(value.reshape(-1)[0], cx.tensors[idx].dtype)], [out],
                tfl.PadV2OptionsT())


def _pad_check(node, g, types):
    why = _const_inputs(1, 2, 3)(node, g, types)
    if why:
        return why
    mode = node.attrs.get("mode", "constant")
    return None if mode in ("constant", "reflect") else f"mode '{mode}'"


CHECKS["Pad"] = _pad_check


# ------------------------------------------------------------------ reductions
REDUCE = {"ReduceMean": OP.MEAN, "ReduceSum": OP.SUM, "ReduceMax": OP.REDUCE_MAX, "ReduceMin": OP.REDUCE_MIN,
          "ReduceProd": OP.REDUCE_PROD, "ReduceL2": OP.SUM, "ReduceSumSquare": OP.SUM}


def _reduce_axes(cx: Context, n: Node, rank: int) -> list[int]:
    a = attrs_of(n)
    axes = a.get("axes")
    if len(n.inputs) > 1 and n.inputs[1]:
        axes = cx.const(n.inputs[1]).tolist()
    if not axes:
        return [] if a.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted({int(ax) % rank for ax in axes})


@converts(*REDUCE, check=_const_inputs(1))
def reduce(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    rank = cx.rank(x)
    axes = _reduce_axes(cx, n, rank)
    keep = bool(attrs_of(n)["keepdims"])
    perm = cx.perm(x)
    idx = cx.get(x)
    if not axes:
        cx.alias(out_name, idx, perm)
        return
    out_perm = perm if keep else drop_axes(perm, axes)
    shape = phys(cx.shape(out_name), out_perm)
    src = idx
    if n.op_type in ("ReduceL2", "ReduceSumSquare"):
        src = cx.new(cx.tensors[idx].shape, cx.tensors[idx].dtype, out_name + "_sq")
        cx.emit(OP.MUL, [idx, idx], [src], tfl.MulOptionsT())
    phys_axes = sorted(inv(perm)[ax] for ax in axes)
    if n.op_type == "ReduceL2":
        mid = cx.new(shape, cx.tensors[idx].dtype, out_name + "_sum")
        cx.emit(OP.SUM, [src, cx.i32(phys_axes)], [mid], tfl.ReducerOptionsT(keepDims=keep))
        cx.emit(OP.SQRT, [mid], [cx.out(out_name, shape, out_perm)])
        return
    out = cx.out(out_name, shape, out_perm, same_as=idx if n.op_type in ("ReduceMax", "ReduceMin") else None)
    cx.emit(REDUCE[n.op_type], [src, cx.i32(phys_axes)], [out], tfl.ReducerOptionsT(keepDims=keep))


@converts("GlobalAveragePool", "GlobalMaxPool")
def global_pool(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    layout = NHWC if rank == 4 else (0,) + tuple(range(2, rank)) + (1,)
    idx = cx.get(x, layout, why=f"{n.op_type} pools the spatial axes of a channels-last tensor")
    shape = phys(cx.shape(n.outputs[0]), layout)
    code = OP.MEAN if n.op_type == "GlobalAveragePool" else OP.REDUCE_MAX
    out = cx.out(n.outputs[0], shape, layout, same_as=idx if code == OP.REDUCE_MAX else None)
    cx.emit(code, [idx, cx.i32(list(range(1, rank - 1)))], [out], tfl.ReducerOptionsT(keepDims=True))


@converts("ArgMax", "ArgMin")
def argmax(cx: Context, n: Node) -> None:
    x, out_name = n.inputs[0], n.outputs[0]
    rank = cx.rank(x)
    a = attrs_of(n)
    axis = a["axis"] % rank
    perm = cx.perm(x)
    idx = cx.get(x)
    dropped = drop_axes(perm, [axis])
    flat = phys([d for i, d in enumerate(cx.shape(x)) if i != axis], dropped)
    code, opts = ((OP.ARG_MAX, tfl.ArgMaxOptionsT) if n.op_type == "ArgMax" else (OP.ARG_MIN, tfl.ArgMinOptionsT))
    if a["keepdims"]:
        mid = cx.new(flat, "int64", out_name + "_flat")
        cx.emit(code, [idx, cx.constant(np.array([inv(perm)[axis]], np.int32))], [mid],
                opts(outputType=tfl.TensorType.INT64))
        shape = phys(cx.shape(out_name), perm)
        cx.emit(OP.RESHAPE, [mid, cx.i32(shape)], [cx.out(out_name, shape, perm, dtype="int64")],
                tfl.ReshapeOptionsT(newShape=shape))
    else:
        cx.emit(code, [idx, cx.constant(np.array([inv(perm)[axis]], np.int32))],
                [cx.out(out_name, flat, dropped, dtype="int64")], opts(outputType=tfl.TensorType.INT64))


def _argmax_check(node, g, types):
    return "select_last_index=1" if node.attrs.get("select_last_index", 0) else None


CHECKS["ArgMax"] = CHECKS["ArgMin"] = _argmax_check


# ------------------------------------------------------------------ normalization
def _channel_vector(v: np.ndarray, rank: int, perm) -> np.ndarray:
    """A per-channel (axis 1) vector as a rank-``rank`` constant in layout ``perm``."""
    shape = [1] * rank
    shape[1] = v.size
    return np.ascontiguousarray(v.astype(np.float32).reshape(shape).transpose(perm))


@converts("BatchNormalization", check=_const_inputs(1, 2, 3, 4))
def batch_norm(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    scale, bias, mean, var = (cx.const(i).astype(np.float64) for i in n.inputs[1:5])
    k = scale / np.sqrt(var + attrs_of(n)["epsilon"])
    perm = cx.perm(x)
    idx = cx.get(x)
    shape = cx.tensors[idx].shape
    mid = cx.new(shape, "float32", n.outputs[0] + "_scaled")
    cx.emit(OP.MUL, [idx, cx.constant(_channel_vector(k, rank, perm), "bn_scale")], [mid], tfl.MulOptionsT())
    cx.emit(OP.ADD, [mid, cx.constant(_channel_vector(bias - mean * k, rank, perm), "bn_shift")],
            [cx.out(n.outputs[0], shape, perm)], tfl.AddOptionsT())


def _normalize(cx: Context, name: str, idx: int, phys_axes: list[int], eps: float) -> int:
    """(x - mean) / sqrt(var + eps) over ``phys_axes``, as primitive ops; returns the result."""
    t = cx.tensors[idx]
    red = [1 if i in phys_axes else d for i, d in enumerate(t.shape)]

    def op(code, ins, shape, tag, opts=None):
        o = cx.new(shape, "float32", f"{name}_{tag}")
        cx.emit(code, ins, [o], opts)
        return o

    axes = cx.i32(phys_axes)
    mean = op(OP.MEAN, [idx, axes], red, "mean", tfl.ReducerOptionsT(keepDims=True))
    centered = op(OP.SUB, [idx, mean], t.shape, "centered", tfl.SubOptionsT())
    sq = op(OP.MUL, [centered, centered], t.shape, "sq", tfl.MulOptionsT())
    var = op(OP.MEAN, [sq, axes], red, "var", tfl.ReducerOptionsT(keepDims=True))
    rstd = op(OP.RSQRT, [op(OP.ADD, [var, cx.scalar(eps)], red, "var_eps", tfl.AddOptionsT())], red, "rstd")
    return op(OP.MUL, [centered, rstd], t.shape, "normed", tfl.MulOptionsT())


@converts("InstanceNormalization", check=_const_inputs(1, 2))
def instance_norm(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    rank = cx.rank(x)
    layout = (0,) + tuple(range(2, rank)) + (1,)
    idx = cx.get(x, layout, why="InstanceNormalization normalizes the spatial axes of a channels-last tensor")
    normed = _normalize(cx, n.outputs[0], idx, list(range(1, rank - 1)), attrs_of(n)["epsilon"])
    shape = cx.tensors[idx].shape
    scaled = cx.new(shape, "float32", n.outputs[0] + "_scaled")
    cx.emit(OP.MUL, [normed, cx.constant(_channel_vector(cx.const(n.inputs[1]), rank, layout))], [scaled],
            tfl.MulOptionsT())
    cx.emit(OP.ADD, [scaled, cx.constant(_channel_vector(cx.const(n.inputs[2]), rank, layout))],
            [cx.out(n.outputs[0], shape, layout)], tfl.AddOptionsT())


@converts("LayerNormalization", check=_const_inputs(1, 2))
def layer_norm(cx: Context, n: Node) -> None:
    x = n.inputs[0]
    shape = cx.shape(x)
    rank = len(shape)
    a = attrs_of(n)
    axis = a["axis"] % rank
    perm = cx.perm(x)
    idx = cx.get(x)
    normed = _normalize(cx, n.outputs[0], idx, sorted(inv(perm)[ax] for ax in range(axis, rank)), a["epsilon"])
    cur = normed
    full = (1,) * axis + tuple(shape[axis:])
    pshape = cx.tensors[idx].shape
    extra = [i for i in n.inputs[1:3] if i]
    for k, (name, code, opts) in enumerate(zip(extra, (OP.MUL, OP.ADD), (tfl.MulOptionsT, tfl.AddOptionsT))):
        v = np.broadcast_to(cx.const(name).astype(np.float32), shape[axis:]).reshape(full).transpose(perm)
        last = k == len(extra) - 1
        o = cx.out(n.outputs[0], pshape, perm) if last else cx.new(pshape, "float32", n.outputs[0] + "_scaled")
        cx.emit(code, [cur, cx.constant(np.ascontiguousarray(v), name)], [o], opts())
        cur = o
    if not extra:
        cx.alias(n.outputs[0], normed, perm)


@converts("LRN")
def lrn(cx: Context, n: Node) -> None:
    a = attrs_of(n)
    size = int(a["size"])
    idx = cx.get(n.inputs[0], NHWC, why="LRN normalizes across channels, the last axis in TFLite")
    out = cx.out(n.outputs[0], cx.tensors[idx].shape, NHWC)
    cx.emit(OP.LOCAL_RESPONSE_NORMALIZATION, [idx], [out], tfl.LocalResponseNormalizationOptionsT(
        radius=(size - 1) // 2, bias=float(a["bias"]), alpha=float(a["alpha"]) / size, beta=float(a["beta"])))


def _lrn_check(node, g, types):
    size = node.attrs.get("size", 1)
    t = types.get(node.inputs[0])
    if t is None or t.shape is None or len(t.shape) != 4:
        return "only rank-4 LRN"
    return None if size % 2 == 1 else f"even size {size} (LiteRT's window is symmetric)"


CHECKS["LRN"] = _lrn_check


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


# ------------------------------------------------------------------ quantization boundaries
def _quantize_check(node, g, types):
    s = g.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
    if s is None or s.size != 1 or node.attrs.get("block_size", 0):
        return "only per-tensor activation quantization with a constant scale"
    zp = g.constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if zp is not None and zp.dtype not in (np.int8, np.uint8):
        return f"{zp.dtype} activations (LiteRT's quantized kernels take int8)"
    return None


@converts("QuantizeLinear", check=_quantize_check)
def quantize_linear(cx: Context, n: Node) -> None:
    _, scale, zp, zdt = cx.q.q_params[n.outputs[0]]
    s, z = _qparam(scale, zp, zdt)
    x = n.inputs[0]
    idx = cx.get(x)
    t = cx.tensors[idx]
    out = cx.new(t.shape, "int8", n.outputs[0])
    cx.tensors[out].scale, cx.tensors[out].zero_point = s, z
    cx.where[n.outputs[0]] = (out, cx.perm(x))
    cx.emit(OP.QUANTIZE, [idx], [out], tfl.QuantizeOptionsT())


def _dequantize_check(node, g, types):
    if node.inputs[0] in g.constants:
        return None
    s = g.constants.get(node.inputs[1])
    return None if s is not None and s.size == 1 else "per-axis quantized activations"


@converts("DequantizeLinear", check=_dequantize_check)
def dequantize_linear(cx: Context, n: Node) -> None:
    raise ExportError(f"{n.label}: per-axis quantized activations have no TFLite form")
