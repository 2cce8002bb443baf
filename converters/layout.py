"""Layout pass: move Transpose nodes through layout-neutral ops until they cancel.

An importer that meets a channels-last op (TFLite's CONV_2D, pools, depth-to-space ...) wraps
the IR's channels-first op in two Transposes. Between two such ops the data only passes
through elementwise ops, concatenations, pads and the like, so the Transpose after one op and
the one before the next cancel once they meet. :func:`sink_transposes` makes them meet.

The walk is one pass in topological order that keeps Transposes *pending*: a tensor ``y`` whose
producer is ``Transpose(x, perm)`` is remembered as ``(x, perm)`` instead of being computed.

* a Transpose of a pending tensor composes the two permutations (identity: nothing to do);
* a layout-neutral op whose inputs are pending with one permutation (constant operands are
  permuted at import time instead) runs on the untransposed tensors, with its axis attributes
  renumbered, and its outputs become pending in turn;
* any other reader materialises the Transpose once, under the tensor's original name, so the
  graph keeps every name it had (graph outputs included).

Nodes that hold subgraphs are never moved across, and every name a subgraph reads from the
enclosing graph is materialised before the node. The pass works on one graph level; bodies are
left as they are.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeinfer.graph import Graph, Node, outer_reads

Perm = tuple[int, ...]

# shape-preserving ops whose every input is one tensor of the output's shape or broadcasts to it
_ELEMENTWISE = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "Ceil", "Celu", "Clip", "Cos", "Cosh",
    "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu",
    "Log", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin",
    "Sinh", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu",
    "Add", "And", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Div", "Equal", "Greater", "GreaterOrEqual",
    "Less", "LessOrEqual", "Max", "Mean", "Min", "Mod", "Mul", "Or", "Pow", "PRelu", "Sub", "Sum", "Where", "Xor",
})
# inputs after the first that are parameters, not data (left alone when they are scalars)
_PARAM_INPUTS = {"Clip": (1, 2)}


def sink_transposes(graph: Graph) -> Graph:
    """A copy of ``graph`` with Transposes moved forward and cancelled (see the module docstring)."""
    return _Sinker(graph).run()


def compose(first: Perm, then: Perm) -> Perm:
    """The permutation of ``transpose(transpose(x, first), then)``."""
    return tuple(first[i] for i in then)


def inverse(perm: Perm) -> Perm:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


def _is_identity(perm: Perm) -> bool:
    return all(i == p for i, p in enumerate(perm))


class _Sinker:
    def __init__(self, graph: Graph):
        self.g = graph
        self.out = graph.copy()
        self.out.nodes = []
        self.constants = self.out.constants
        self.pending: dict[str, tuple[str, Perm]] = {}
        self.shown: set[str] = set()  # pending tensors already materialised under their name
        self.ranks: dict[str, int] = {}
        self._names = set(graph.constants) | set(graph.input_names) | {o for n in graph.nodes for o in n.outputs}
        self.producers = {o: n for n in graph.nodes for o in n.outputs if o}

    # ------------------------------------------------------------------ helpers
    def fresh(self, base: str) -> str:
        name, i = f"{base}__nhwc", 1
        while name in self._names:
            name, i = f"{base}__nhwc{i}", i + 1
        self._names.add(name)
        return name

    def emit(self, node: Node) -> None:
        self.out.nodes.append(node)

    def show(self, name: str, keep_name: bool = False) -> str:
        """The name under which a reader finds ``name`` computed, materialising a pending
        Transpose once under the original name. An identity permutation needs no node: the
        reader gets the untransposed tensor, unless ``keep_name`` (graph outputs, names read by
        subgraphs) asks for the original name."""
        if name not in self.pending:
            return name
        src, perm = self.pending[name]
        if _is_identity(perm) and not keep_name:
            return src
        if name not in self.shown:
            self.shown.add(name)
            if _is_identity(perm):
                self.emit(Node("Identity", (src,), (name,), name=f"{name}_identity"))
            else:
                self.emit(Node("Transpose", (src,), (name,), {"perm": list(perm)}, name=f"{name}_transpose"))
        return name

    def _decoded_constant(self, name: str, perm: Perm) -> str | None:
        """For a tensor computed from constants by one decode op (DequantizeLinear, QuantizeLinear,
        Cast: weights and initial states of imported models), the same op on the constant
        permuted for ``perm``; None for any other tensor."""
        node = self.producers.get(name)
        if node is None or node.domain or node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Cast"):
            return None
        ins = [self.const(i) if i else None for i in node.inputs]
        if ins[0] is None or any(v is None for i, v in zip(node.inputs, ins) if i) or len(node.outputs) != 1:
            return None
        rank = len(perm)
        value = ins[0]
        if value.ndim > rank:
            return None
        lead = rank - value.ndim
        moved = self.fresh(node.inputs[0])
        self.constants[moved] = np.ascontiguousarray(np.transpose(value.reshape((1,) * lead + value.shape),
                                                                  inverse(perm)))
        attrs = dict(node.attrs)
        if node.op_type != "Cast" and len(ins) > 1 and ins[1] is not None and ins[1].size > 1:
            if int(attrs.get("block_size", 0) or 0):
                return None
            axis = int(attrs.get("axis", 1))
            axis = (axis + value.ndim if axis < 0 else axis) + lead
            attrs["axis"] = perm[axis]
        out = self.fresh(node.outputs[0])
        self.emit(Node(node.op_type, (moved,) + tuple(node.inputs[1:]), (out,), attrs, name=f"{node.name}_moved"))
        return out

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None

    # ------------------------------------------------------------------ the walk
    def run(self) -> Graph:
        for node in self.g.nodes:
            if node.op_type == "Transpose" and not node.domain and self._transpose(node):
                continue
            if not node.domain and not node.has_subgraphs and self._sink(node):
                continue
            for name in outer_reads(node) if node.has_subgraphs else ():
                self.show(name, keep_name=True)
            inputs = tuple(self.show(i) if i else i for i in node.inputs)
            self.emit(node if inputs == node.inputs else node.replace(inputs=inputs))
        for v in self.g.outputs:
            self.show(v.name, keep_name=True)
        self.out.remove_unused()
        return self.out

    def _transpose(self, node: Node) -> bool:
        x = node.inputs[0] if node.inputs else ""
        perm = node.attrs.get("perm")
        if not x or perm is None or len(node.outputs) != 1:
            return False
        perm = tuple(int(p) for p in perm)
        if sorted(perm) != list(range(len(perm))):
            return False  # invalid: leave it for the kernel's error
        if x in self.pending:
            src, first = self.pending[x]
            if len(first) != len(perm):
                return False
            self.pending[node.outputs[0]] = (src, compose(first, perm))
        else:
            self.pending[node.outputs[0]] = (x, perm)
        return True

    def _sink(self, node: Node) -> bool:
        rule = _RULES.get(node.op_type)
        if rule is None and node.op_type not in _ELEMENTWISE:
            return False
        perms = {self.pending[i][1] for i in node.inputs if i and i in self.pending}
        if len(perms) != 1:
            return False
        (perm,) = perms
        inputs = self._operands(node, perm)
        if inputs is None:
            return False
        if rule is None:
            attrs, out_perms = dict(node.attrs), [perm] * len(node.outputs)
        else:
            done = rule(self, node, perm)
            if done is None:
                return False
            attrs, out_perms, params = done
            for k, name in params.items():  # renumbered parameter inputs (axes, pads)
                if k == "append_axes":
                    inputs += [""] * (3 - len(inputs)) + [name]
                else:
                    inputs[k] = name
        outs = []
        for o, p in zip(node.outputs, out_perms):
            if not o:
                outs.append(o)
                continue
            inner = self.fresh(o)
            self.pending[o] = (inner, p)
            outs.append(inner)
        self.emit(Node(node.op_type, tuple(inputs), tuple(outs), attrs, name=node.name))
        return True

    def _operands(self, node: Node, perm: Perm) -> list[str] | None:
        """Inputs of the moved node: pending tensors unwrapped, constants permuted; None when an
        input is a runtime tensor in another layout."""
        rank = len(perm)
        params = _PARAM_INPUTS.get(node.op_type, ())
        n_data = _DATA_INPUTS.get(node.op_type)
        out = []
        for k, name in enumerate(node.inputs):
            if not name or k in params or (n_data is not None and k >= n_data):
                out.append(name)
                continue
            if name in self.pending and self.pending[name][1] == perm:
                out.append(self.pending[name][0])
                continue
            value = self.const(name)
            if value is None:
                decoded = self._decoded_constant(name, perm)
                if decoded is None:
                    return None
                out.append(decoded)
                continue
            if value.ndim > rank:
                return None
            if value.size == 1 and value.ndim <= rank and node.op_type in _ELEMENTWISE:
                out.append(name)  # a scalar broadcasts the same in any layout
                continue
            full = value.reshape((1,) * (rank - value.ndim) + value.shape)
            moved = self.fresh(name)
            self.constants[moved] = np.ascontiguousarray(np.transpose(full, inverse(perm)))
            out.append(moved)
        return out


# ---------------------------------------------------------------------- axis rules
# A rule gets (sinker, node, perm) for a node whose data input is y = transpose(x, perm) and
# returns (attributes for the node on x, permutation of each output, {input index: new
# parameter constant}) or None to leave the node alone. Axis a of y is axis perm[a] of x.
Rule = Callable[[_Sinker, Node, Perm], "tuple[dict, list[Perm], dict[int, str]] | None"]
_RULES: dict[str, Rule] = {}
_DATA_INPUTS: dict[str, int] = {}  # ops whose inputs from this index on are parameters


def _rule(*ops: str, data_inputs: int | None = None):
    def register(fn: Rule) -> Rule:
        for op in ops:
            _RULES[op] = fn
            if data_inputs is not None:
                _DATA_INPUTS[op] = data_inputs
        return fn
    return register


def _axis(a: int, rank: int) -> int | None:
    a = a + rank if a < 0 else a
    return a if 0 <= a < rank else None


@_rule("Concat")
def _concat(s: _Sinker, node: Node, perm: Perm):
    a = _axis(int(node.attrs.get("axis", 0)), len(perm))
    if a is None:
        return None
    return {**node.attrs, "axis": perm[a]}, [perm], {}


@_rule("Softmax", "LogSoftmax", "Hardmax", "LpNormalization", data_inputs=1)
def _one_axis(s: _Sinker, node: Node, perm: Perm):
    a = _axis(int(node.attrs.get("axis", -1)), len(perm))
    if a is None:
        return None
    return {**node.attrs, "axis": perm[a]}, [perm], {}


@_rule("QuantizeLinear", "DequantizeLinear", data_inputs=1)
def _quant(s: _Sinker, node: Node, perm: Perm):
    scale = s.const(node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None:
        return None
    if scale.size == 1:
        return dict(node.attrs), [perm], {}
    if int(node.attrs.get("block_size", 0) or 0):
        return None
    a = _axis(int(node.attrs.get("axis", 1)), len(perm))
    if a is None:
        return None
    return {**node.attrs, "axis": perm[a]}, [perm], {}


@_rule("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
       "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", data_inputs=1)
def _reduce(s: _Sinker, node: Node, perm: Perm):
    rank = len(perm)
    has_axes = len(node.inputs) > 1 and bool(node.inputs[1])
    axes_value = s.const(node.inputs[1]) if has_axes else None
    if has_axes and axes_value is None:
        return None
    if axes_value is None or axes_value.size == 0:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return dict(node.attrs), [perm], {}
        axes = list(range(rank))
    else:
        found = [_axis(int(a), rank) for a in axes_value.reshape(-1)]
        if any(a is None for a in found):
            return None
        axes = [a for a in found if a is not None]
    params = {}
    if has_axes:
        name = s.fresh(node.inputs[1])
        s.constants[name] = np.array(sorted(perm[a] for a in axes), np.int64)
        params[1] = name
    if int(node.attrs.get("keepdims", 1)):
        return dict(node.attrs), [perm], params
    kept = [perm[i] for i in range(rank) if i not in axes]  # the x axes left, in y's order
    order = sorted(kept)
    return dict(node.attrs), [tuple(order.index(a) for a in kept)], params


@_rule("Pad", data_inputs=1)
def _pad(s: _Sinker, node: Node, perm: Perm):
    rank = len(perm)
    pads = s.const(node.inputs[1]) if len(node.inputs) > 1 else None
    if pads is None or pads.size != 2 * rank or (len(node.inputs) > 3 and node.inputs[3]):
        return None  # runtime pads, or pads with an axes input
    pads = pads.reshape(-1)
    moved = np.zeros(2 * rank, np.int64)
    for i in range(rank):
        moved[perm[i]], moved[rank + perm[i]] = pads[i], pads[rank + i]
    name = s.fresh(node.inputs[1])
    s.constants[name] = moved
    return dict(node.attrs), [perm], {1: name}


@_rule("Slice", data_inputs=1)
def _slice(s: _Sinker, node: Node, perm: Perm):
    rank = len(perm)
    ins = list(node.inputs) + [""] * (5 - len(node.inputs))
    starts = s.const(ins[1])
    if starts is None:
        return None
    if ins[3]:
        axes_value = s.const(ins[3])
        if axes_value is None:
            return None
        axes = [_axis(int(a), rank) for a in axes_value.reshape(-1)]
        if any(a is None for a in axes):
            return None
    else:
        axes = list(range(starts.size))
    name = s.fresh(ins[3] or f"{node.outputs[0]}_axes")
    s.constants[name] = np.array([perm[a] for a in axes], np.int64)
    if len(node.inputs) < 4:  # give the node an axes input (steps stays absent)
        return dict(node.attrs), [perm], {"append_axes": name}
    return dict(node.attrs), [perm], {3: name}


@_rule("Split", data_inputs=1)
def _split(s: _Sinker, node: Node, perm: Perm):
    a = _axis(int(node.attrs.get("axis", 0)), len(perm))
    if a is None:
        return None
    return {**node.attrs, "axis": perm[a]}, [perm] * len(node.outputs), {}


def _axes_input(s: _Sinker, node: Node, k: int, rank: int) -> list[int] | None:
    value = s.const(node.inputs[k]) if len(node.inputs) > k and node.inputs[k] else None
    if value is None:
        return None
    axes = [_axis(int(a), rank) for a in value.reshape(-1)]
    return None if any(a is None for a in axes) or len(set(axes)) != len(axes) else axes


@_rule("Squeeze", data_inputs=1)
def _squeeze(s: _Sinker, node: Node, perm: Perm):
    rank = len(perm)
    axes = _axes_input(s, node, 1, rank)
    if axes is None:
        return None  # without axes the squeezed dims depend on the runtime shape
    name = s.fresh(node.inputs[1])
    s.constants[name] = np.array(sorted(perm[a] for a in axes), np.int64)
    kept = [perm[i] for i in range(rank) if i not in axes]
    order = sorted(kept)
    return dict(node.attrs), [tuple(order.index(a) for a in kept)], {1: name}


@_rule("Unsqueeze", data_inputs=1)
def _unsqueeze(s: _Sinker, node: Node, perm: Perm):
    rank = len(perm)
    value = s.const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
    if value is None:
        return None
    out_rank = rank + value.size
    new = [_axis(int(a), out_rank) for a in value.reshape(-1)]
    if any(a is None for a in new) or len(set(new)) != len(new):
        return None
    # unsqueeze x at the same output positions; its other axes are x's, in x's order
    others = [j for j in range(out_rank) if j not in new]
    out_perm = list(range(out_rank))
    for m, j in enumerate(others):
        out_perm[j] = others[perm[m]]
    return dict(node.attrs), [tuple(out_perm)], {}


@_rule("Resize", data_inputs=1)
def _resize(s: _Sinker, node: Node, perm: Perm):
    rank = len(perm)
    axes = node.attrs.get("axes")
    if axes is not None:
        moved = [_axis(int(a), rank) for a in axes]
        if any(a is None for a in moved):
            return None
        return {**node.attrs, "axes": [perm[a] for a in moved]}, [perm], {}
    params = {}
    for k in (1, 2, 3):  # roi (2 * rank), scales (rank), sizes (rank): one value per axis
        if len(node.inputs) <= k or not node.inputs[k]:
            continue
        value = s.const(node.inputs[k])
        if value is None:
            return None
        flat = value.reshape(-1)
        if k == 1:
            if flat.size != 2 * rank:
                return None
            moved = np.empty_like(flat)
            for i in range(rank):
                moved[perm[i]], moved[rank + perm[i]] = flat[i], flat[rank + i]
        else:
            if flat.size != rank:
                return None
            moved = np.empty_like(flat)
            for i in range(rank):
                moved[perm[i]] = flat[i]
        name = s.fresh(node.inputs[k])
        s.constants[name] = moved
        params[k] = name
    return dict(node.attrs), [perm], params
