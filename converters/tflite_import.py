"""TFLite -> IR: :func:`import_tflite`.

The file is read and verified by :mod:`.tflite_reader` (our own flatbuffer reader: nothing
reaches a node builder before every offset, index, size and quantization table was checked).
Then each operator of the main subgraph is turned into IR nodes by a builder of
:mod:`.tflite_ops`, with these conventions:

* **Signature.** Inputs and outputs keep their TFLite names, dtypes and layouts (an image input
  stays NHWC, an int8 input stays int8), so the graph answers like LiteRT does. Dims that the
  shape signature marks -1 become symbolic.
* **Layout.** Tensors between operators keep TFLite's channels-last order. Each
  layout-sensitive operator (convolutions, pools, depth/space moves, LRN) is the IR's
  channels-first op between two Transposes; :func:`.layout.sink_transposes` then moves those
  Transposes through the elementwise ops between such operators until they cancel, which
  leaves a convolution chain with one Transpose at each end.
* **Quantization is explicit.** A constant int8/uint8/int16/int32 tensor with quantization
  parameters stays integer and is read through DequantizeLinear (per-axis scales keep their
  axis, moved with the weight's layout). A quantized activation is produced by
  QuantizeLinear of the op's float result and read through DequantizeLinear, so the graph
  computes in float between quantization points, within one quantization step of LiteRT's
  integer kernels (QDQ form, which the exporters lower again).
* **Fused activations** become a node after the op (Relu, Clip, Tanh, Sign).
* **Sparse weights** arrive densified from the reader.

Operator parameters that would divide by zero or index outside a tensor (strides, block sizes,
axes, split counts) are checked here, naming the operator.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer import dtypes as _dt
from edgeinfer.errors import ModelFormatError, UnsupportedOpError
from edgeinfer.graph import Graph, Node, ValueInfo

from .layout import sink_transposes
from .tflite_reader import Tensor, TFLiteModel, read_tflite

# IR opset the imported nodes are written in (the cpu backend's vocabulary)
IR_ONNX_OPSET = 23
# metadata entry in which edgeinfer's exporter records the layouts it exposed
LAYOUT_METADATA = "edgeinfer_layout"


def import_tflite(source: str | os.PathLike | bytes, *, check_supported: bool = True, subgraph: int = 0) -> Graph:
    """Import a ``.tflite`` model.

    Args:
        source: path to the file, or its bytes.
        check_supported: refuse models with operators edgeinfer cannot import (all listed in
            one UnsupportedOpError). ``False`` is accepted for symmetry with the ONNX importer;
            an operator without a builder cannot be represented and still raises.
        subgraph: which subgraph is the model (0, TFLite's main subgraph, by default).

    Raises:
        ModelFormatError: the file is malformed (the message names the field) or an operator's
            parameters are invalid (the message names the operator).
        UnsupportedOpError: operators without a builder, all of them with their counts.
    """
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "<bytes>"
    model = read_tflite(source, name=name)
    if not 0 <= subgraph < len(model.subgraphs):
        raise ModelFormatError(f"{name}: subgraph {subgraph} does not exist; the model has {len(model.subgraphs)}")
    from . import tflite_ops

    missing = Counter(tflite_ops.op_key(op) for op in model.subgraphs[subgraph].operators
                      if tflite_ops.op_key(op) not in tflite_ops.BUILDERS)
    if missing:
        listed = ", ".join(f"{k} (x{n})" for k, n in sorted(missing.items()))
        raise UnsupportedOpError(f"{name}: TFLite operators edgeinfer cannot import: {listed}", sorted(missing))
    graph = _Importer(model, subgraph, name).run()
    layout = model.metadata.get(LAYOUT_METADATA)
    if layout is not None and subgraph == 0:
        graph = _restore_layout(graph, layout, name)
    graph = sink_transposes(graph)
    graph.validate()
    return graph


def _restore_layout(graph: Graph, blob: bytes, source: str) -> Graph:
    """Give a model written by edgeinfer's exporter back the signature it was exported from:
    its ``edgeinfer_layout`` metadata says which inputs and outputs were exposed transposed
    (``exposed = logical.transpose(perm)``)."""
    where = f"{source}: metadata {LAYOUT_METADATA}"
    try:
        layout = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFormatError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(layout, dict) or not all(isinstance(layout.get(k, {}), dict) for k in ("inputs", "outputs")):
        raise ModelFormatError(f"{where}: expected {{'inputs': {{name: perm}}, 'outputs': {{name: perm}}}}")

    def perm_of(v: ValueInfo, side: str) -> tuple[int, ...] | None:
        p = layout.get(side, {}).get(v.name)
        if p is None:
            return None
        rank = len(v.shape) if v.shape is not None else -1
        if not isinstance(p, list) or sorted(x for x in p if type(x) is int) != list(range(rank)) or len(p) != rank:
            raise ModelFormatError(f"{where}: {side} '{v.name}': {p!r} is not a permutation of its rank {rank}")
        return None if p == list(range(rank)) else tuple(p)

    g = graph.copy()
    used = {o for n in g.nodes for o in n.outputs} | set(g.constants) | set(g.input_names)
    rename: dict[str, str] = {}
    head: list[Node] = []
    inputs = []
    for v in g.inputs:
        p = perm_of(v, "inputs")
        if p is None:
            inputs.append(v)
            continue
        inner = _unique(f"{v.name}__exposed", used)
        rename[v.name] = inner
        logical = [None] * len(p)
        for j, d in enumerate(v.shape):
            logical[p[j]] = d
        inputs.append(ValueInfo(v.name, v.dtype, tuple(logical)))
        head.append(Node("Transpose", (v.name,), (inner,), {"perm": list(p)}, name=f"{v.name}_to_exposed"))
    tail: list[Node] = []
    outputs = []
    for v in g.outputs:
        p = perm_of(v, "outputs")
        if p is None:
            outputs.append(v)
            continue
        inner = rename.get(v.name) or _unique(f"{v.name}__exposed", used)
        rename.setdefault(v.name, inner)
        inv = [0] * len(p)
        for i, x in enumerate(p):
            inv[x] = i
        shape = None if v.shape is None else tuple(v.shape[i] for i in inv)
        outputs.append(ValueInfo(v.name, v.dtype, shape))
        tail.append(Node("Transpose", (inner,), (v.name,), {"perm": inv}, name=f"{v.name}_from_exposed"))
    if not rename:
        return graph

    def sub(names):
        return tuple(rename.get(x, x) if x else x for x in names)
    body = [n.replace(inputs=sub(n.inputs), outputs=sub(n.outputs)) for n in g.nodes]
    g.inputs, g.outputs, g.nodes = inputs, outputs, head + body + tail
    return g


def _unique(base: str, used: set[str]) -> str:
    name, i = base, 1
    while name in used or not name:
        name, i = f"{base or 'tensor'}_{i}", i + 1
    used.add(name)
    return name


class _Importer:
    """Builds one subgraph; :class:`.tflite_ops.Builder` is its per-operator view."""

    def __init__(self, model: TFLiteModel, index: int, source: str):
        self.model = model
        self.sg = model.subgraphs[index]
        self.source = source
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.used: set[str] = set()
        self.names: list[str] = [_unique(t.name, self.used) for t in self.sg.tensors]
        self.float_of: dict[int, str] = {}  # tensor index -> name of its float (dequantized) value
        self.producer: dict[str, int] = {}  # IR name -> index in self.nodes
        self.var_handles: dict[int, tuple[str, str]] = {}  # resource tensor -> variable key
        self.var_values: dict[tuple[str, str], str] = {}  # variable key -> IR name of its value
        self.inlining: list[int] = []  # subgraphs being inlined (CALL_ONCE), outermost first

    # ------------------------------------------------------------------ naming
    def fresh(self, base: str) -> str:
        return _unique(base, self.used)

    def add(self, op_type: str, inputs, attrs: dict | None = None, outputs=None, n_out: int = 1,
            domain: str = "", hint: str = "") -> list[str]:
        if outputs is None:
            outputs = [self.fresh(f"{hint or op_type}") for _ in range(n_out)]
        node = Node(op_type, tuple(inputs), tuple(outputs), dict(attrs or {}), name=self.fresh(f"{hint or op_type}_node"),
                    domain=domain)
        for o in outputs:
            if o:
                self.producer[o] = len(self.nodes)
        self.nodes.append(node)
        return list(outputs)

    def new_const(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        arr = np.ascontiguousarray(value)
        arr.flags.writeable = False
        self.constants[name] = arr
        return name

    # ------------------------------------------------------------------ tensors
    def is_quantized(self, t: Tensor) -> bool:
        return t.quant is not None and t.dtype in ("int8", "uint8", "int16", "int32", "int4", "uint4", "int64")

    def quant_inputs(self, t: Tensor, hint: str, perm: tuple[int, ...] | None = None) -> tuple[list[str], dict]:
        """[scale, zero point] constants and attrs of a DequantizeLinear/QuantizeLinear of ``t``."""
        q = t.quant
        per_axis = q.axis is not None and q.scale.size > 1
        scale = q.scale.astype(np.float32)
        zp_dtype = _dt.to_numpy(t.dtype)
        zp = q.zero_point.astype(zp_dtype)
        if not per_axis:
            scale, zp = scale.reshape(()), zp.reshape(()) if zp.size == 1 else zp.reshape(())
            attrs: dict[str, Any] = {}
        else:
            axis = q.axis if perm is None else perm.index(q.axis)
            attrs = {"axis": int(axis)}
        return [self.new_const(scale, f"{hint}_scale"), self.new_const(zp, f"{hint}_zero_point")], attrs

    def value(self, index: int) -> str:
        """IR name of tensor ``index`` as the float (or plain) value an op computes with."""
        if index in self.float_of:
            return self.float_of[index]
        t = self.sg.tensors[index]
        name = self.names[index]
        if t.data is not None and name not in self.constants:
            self.constants[name] = self._constant_array(t)
        elif t.data is None and t.is_variable and name not in self.constants:
            self.constants[name] = np.zeros([max(d, 0) for d in t.shape], _dt.to_numpy(t.dtype))
        if self.is_quantized(t):
            params, attrs = self.quant_inputs(t, name)
            (out,) = self.add("DequantizeLinear", [name, *params], attrs, hint=f"{name}_dequant")
            self.float_of[index] = out
            return out
        self.float_of[index] = name
        return name

    def _constant_array(self, t: Tensor) -> np.ndarray:
        data = t.data
        if t.dtype == "string":
            arr = np.empty(data.shape, dtype=object)
            flat = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in data.reshape(-1)]
            arr.reshape(-1)[:] = flat
            return arr
        return data

    def weight(self, index: int, perm: tuple[int, ...] | None, hint: str) -> str:
        """A constant weight input laid out by ``perm`` (``None``: as stored), dequantized by a
        DequantizeLinear whose axis follows the permutation."""
        t = self.sg.tensors[index]
        if t.data is None:
            x = self.value(index)
            if perm is None:
                return x
            if x in self.constants:  # an alias of a constant (DENSIFY, small float16 weights)
                return self.new_const(np.transpose(self.constants[x], perm), hint)
            moved = self._transposed_decode(x, perm, hint)
            return moved or self.add("Transpose", [x], {"perm": list(perm)}, hint=f"{hint}_t")[0]
        data = self._constant_array(t)
        if perm is not None:
            data = np.transpose(data, perm)
        raw = self.new_const(data, hint)
        if not self.is_quantized(t):
            return raw
        params, attrs = self.quant_inputs(t, hint, perm)
        return self.add("DequantizeLinear", [raw, *params], attrs, hint=f"{hint}_dequant")[0]

    def folded(self, name: str) -> str:
        """``name``, or a constant holding its value when a Cast or DequantizeLinear of
        constants computes it (initial values of resource variables)."""
        k = self.producer.get(name)
        if k is None:
            return name
        node = self.nodes[k]
        ins = [self.constants.get(i) for i in node.inputs if i]
        if node.domain or any(v is None for v in ins) or not ins:
            return name
        if node.op_type == "Cast":
            return self.new_const(ins[0].astype(_dt.to_numpy(node.attrs["to"])), f"{name}_value")
        if node.op_type == "DequantizeLinear":
            q, scale = ins[0], ins[1]
            zp = ins[2] if len(ins) > 2 else np.zeros((), q.dtype)
            if scale.size > 1:
                shape = [1] * q.ndim
                axis = int(node.attrs.get("axis", 1)) % q.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            value = ((q.astype(np.int64) - zp.astype(np.int64)) * scale.astype(np.float32)).astype(np.float32)
            return self.new_const(value, f"{name}_value")
        return name

    def _transposed_decode(self, name: str, perm: tuple[int, ...], hint: str) -> str | None:
        """A weight computed from a constant by Cast (float16 weights behind DEQUANTIZE) or
        DequantizeLinear: the same decode of the transposed constant, so the weight stays
        constant-derived instead of going through a Transpose node."""
        k = self.producer.get(name)
        if k is None:
            return None
        node = self.nodes[k]
        src = self.constants.get(node.inputs[0]) if node.inputs else None
        if src is None or node.domain or node.op_type not in ("Cast", "DequantizeLinear") or src.ndim != len(perm):
            return None
        raw = self.new_const(np.transpose(src, perm), hint)
        attrs = dict(node.attrs)
        if node.op_type == "DequantizeLinear":
            scale = self.constants.get(node.inputs[1])
            if scale is None:
                return None
            if scale.size > 1:
                attrs["axis"] = perm.index(int(attrs.get("axis", 1)) % src.ndim)
        return self.add(node.op_type, [raw, *node.inputs[1:]], attrs, hint=f"{hint}_decoded")[0]

    def bind(self, index: int, computed: str) -> None:
        """Make op output tensor ``index`` the result ``computed`` (float), quantizing it when
        the TFLite tensor is quantized."""
        t = self.sg.tensors[index]
        target = self.names[index]
        if self.is_quantized(t):
            if computed in self.constants and index not in self.sg.outputs:
                self.constants[target] = self._quantize_constant(self.constants[computed], t)
                return  # e.g. a variable's initial value: stored quantized, read through DequantizeLinear
            params, attrs = self.quant_inputs(t, target)
            self.add("QuantizeLinear", [computed, *params], attrs, outputs=[target])
            return
        if computed in self.constants and index not in self.sg.outputs:
            self.float_of[index] = computed  # a constant passed on (DENSIFY): readers take it as is
            return
        self._rename(computed, target)

    @staticmethod
    def _quantize_constant(value: np.ndarray, t: Tensor) -> np.ndarray:
        """QuantizeLinear of a constant, done here: round half to even, saturate."""
        q = t.quant
        scale, zp = q.scale.astype(np.float32), q.zero_point.astype(np.float64)
        if q.axis is not None and scale.size > 1:
            shape = [1] * value.ndim
            shape[q.axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        else:
            scale, zp = scale.reshape(()), zp.reshape(())
        info = np.iinfo(_dt.to_numpy(t.dtype))
        y = np.rint(value.astype(np.float32) / scale) + zp
        out = np.clip(y, info.min, info.max).astype(_dt.to_numpy(t.dtype))
        out.flags.writeable = False
        return out

    def _rename(self, old: str, new: str) -> None:
        k = self.producer.get(old)
        if k is None:  # a graph input or constant passed through unchanged
            self.add("Identity", [old], outputs=[new])
            return
        node = self.nodes[k]
        self.nodes[k] = node.replace(outputs=tuple(new if o == old else o for o in node.outputs))
        del self.producer[old]
        self.producer[new] = k
        for j in range(k + 1, len(self.nodes)):  # readers added after the producer (none usually)
            n = self.nodes[j]
            if old in n.inputs:
                self.nodes[j] = n.replace(inputs=tuple(new if i == old else i for i in n.inputs))

    # ------------------------------------------------------------------ the walk
    def run(self) -> Graph:
        from .tflite_ops import BUILDERS, Builder, op_key

        sg = self.sg
        inputs = [self._value_info(i) for i in sg.inputs]
        for k, op in enumerate(sg.operators):
            where = f"{self.source}: operator {k} ({op_key(op)})"
            BUILDERS[op_key(op)](Builder(self, op, k, where))
        outputs = []
        for i in sg.outputs:
            name = self.names[i]
            if name not in self.producer and self.sg.tensors[i].data is not None:
                self.value(i)  # an output that is a constant
            outputs.append(self._value_info(i))
        graph = Graph(inputs=inputs, outputs=outputs, nodes=self.nodes, constants=self.constants,
                      opset={"": IR_ONNX_OPSET}, name=sg.name or "main")
        graph.metadata.update(self._metadata())
        graph.remove_unused()
        return graph

    def inline_subgraph(self, index: int, where: str) -> None:
        """Run the operators of subgraph ``index`` here (CALL_ONCE's initializer: it has no
        inputs or outputs and talks to the caller only through resource variables)."""
        from .tflite_ops import BUILDERS, Builder, op_key

        if not 0 <= index < len(self.model.subgraphs):
            raise ModelFormatError(f"{where}: subgraph index {index} is out of range")
        if index in self.inlining or len(self.inlining) >= 8:
            raise ModelFormatError(f"{where}: subgraph {index} calls itself")
        sub = self.model.subgraphs[index]
        if sub.inputs or sub.outputs:
            raise ModelFormatError(f"{where}: an initializer subgraph must have no inputs or outputs")
        outer = (self.sg, self.names, self.float_of, self.var_handles)
        self.inlining.append(index)
        self.sg = sub
        self.names = [_unique(f"{t.name}", self.used) for t in sub.tensors]
        self.float_of, self.var_handles = {}, {}
        try:
            for k, op in enumerate(sub.operators):
                key = op_key(op)
                if key not in BUILDERS:
                    raise UnsupportedOpError(f"{where}: subgraph {index} uses {key}, which edgeinfer cannot import",
                                             [key])
                BUILDERS[key](Builder(self, op, k, f"{self.source}: subgraph {index} operator {k} ({key})"))
        finally:
            self.sg, self.names, self.float_of, self.var_handles = outer
            self.inlining.pop()

    def branch(self, index: int, values: list[str], where: str) -> Graph:
        """Subgraph ``index`` as an If branch: its inputs read ``values`` (IR names of this
        scope; ONNX branches read the enclosing scope instead of taking inputs) and its outputs
        are float values (the caller quantizes the If outputs where TFLite does)."""
        if not 0 <= index < len(self.model.subgraphs):
            raise ModelFormatError(f"{where}: subgraph index {index} is out of range")
        if index in self.inlining or len(self.inlining) >= 8:
            raise ModelFormatError(f"{where}: subgraph {index} calls itself")
        sub = self.model.subgraphs[index]
        if len(sub.inputs) != len(values):
            raise ModelFormatError(f"{where}: subgraph {index} takes {len(sub.inputs)} inputs, "
                                   f"the operator passes {len(values)}")
        child = _Importer.__new__(_Importer)
        child.__dict__.update(self.__dict__)
        child.sg, child.nodes, child.constants, child.producer = sub, [], {}, {}
        child.names = [_unique(t.name, self.used) for t in sub.tensors]
        child.float_of = dict(zip(sub.inputs, values))
        child.var_handles = {}
        child.inlining = self.inlining + [index]
        from .tflite_ops import BUILDERS, Builder, op_key

        for k, op in enumerate(sub.operators):
            key = op_key(op)
            if key not in BUILDERS:
                raise UnsupportedOpError(f"{where}: subgraph {index} uses {key}, which edgeinfer cannot import", [key])
            BUILDERS[key](Builder(child, op, k, f"{self.source}: subgraph {index} operator {k} ({key})"))
        outputs = []
        for i in sub.outputs:
            value = child.value(i)
            out = child.add("Identity", [value], hint=f"{child.names[i]}_out")[0]
            t = sub.tensors[i]
            dtype = "float32" if child.is_quantized(t) else t.dtype
            outputs.append(ValueInfo(out, dtype, None))
        return Graph(inputs=[], outputs=outputs, nodes=child.nodes, constants=child.constants,
                     name=sub.name or f"subgraph_{index}")

    def _value_info(self, index: int) -> ValueInfo:
        t = self.sg.tensors[index]
        sig = t.shape_signature if t.shape_signature is not None and len(t.shape_signature) == len(t.shape) else None
        dims: list[Any] = []
        for k, d in enumerate(t.shape):
            if sig is not None and sig[k] < 0:
                dims.append(f"{self.names[index]}_dim{k}")
            else:
                dims.append(int(d))
        return ValueInfo(self.names[index], t.dtype if t.dtype != "string" else "string", tuple(dims))

    def _metadata(self) -> dict[str, str]:
        meta = {"tflite.version": str(self.model.version)}
        if self.model.description:
            meta["tflite.description"] = self.model.description
        if self.model.min_runtime:
            meta["tflite.min_runtime_version"] = self.model.min_runtime
        for key, blob in self.model.metadata.items():
            if key == "min_runtime_version":
                continue
            try:
                text = blob.decode("utf-8")
            except UnicodeDecodeError:
                continue  # binary metadata (e.g. TFLite support's flatbuffer) is not kept
            if text.isprintable() and len(text) < 1 << 16:
                meta[f"tflite.metadata.{key}"] = text
        return meta


def layout_error(where: str, message: str) -> ModelFormatError:
    return ModelFormatError(f"{where}: {message}")
