"""Graph rewrites the cpu backend applies at compile time, after constant folding.

Each pass takes a graph whose constants are final (folded) and returns an edited copy. A
rewrite fires only when the result computes the same function for the shapes being compiled
(up to float rounding where constants are pre-multiplied). :func:`optimize` runs them in order:

* :func:`remove_identities` - Identity and inference Dropout disappear.
* :func:`simplify_layout` - Transpose pairs that cancel, Transpose chains and Reshape chains
  collapse; a Transpose of a constant MatMul/Gemm operand folds into it.
* :func:`fuse_activation_patterns` - activations spelled as several ops become one node:
  ``x * Clip(x + 3, 0, 6) / 6`` and ``x * HardSigmoid(x)`` -> HardSwish,
  ``Clip(x + 3, 0, 6) / 6`` -> HardSigmoid, ``x * Sigmoid(x)`` -> SiLU, the erf and tanh
  forms of GELU -> Gelu, and the ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div[/Mul/Add]
  spelling of layer normalization -> LayerNormalization.
* :func:`fold_affine` - inference BatchNormalization and per-channel Mul/Add/Sub/Div by
  constants after a Conv fold into its weights and bias (the whole chain at once); before a
  1x1 unpadded Conv they fold into that Conv; chains that remain (optionally followed by an
  activation) become one ``edgeinfer::Affine`` node, whose positive scale moves on through a
  ReLU into the 1x1 Convs it feeds. (:func:`fold_batch_norm` is the BatchNormalization-only
  form, kept for callers that want just that.)
* :func:`fuse_conv_activation` - Conv/Gemm [+ residual Add] + activation becomes one
  ``edgeinfer::FusedConv``/``FusedGemm`` node, and MatMul [+ bias Add] [+ activation] one
  ``edgeinfer::FusedMatMul``; the kernels apply bias, residual and activation in place on the
  GEMM output (:mod:`edgeinfer.kernels.fused`).
* :func:`fuse_squeeze_excite` - GlobalAveragePool -> 1x1 Conv -> 1x1 Conv -> Mul (the
  squeeze-and-excite gate of MobileNetV3-style blocks) becomes one node.
* :func:`use_channels_last` - depthwise convs fed by and feeding 1x1 convs run channels-last,
  the 1x1 convs absorbing the layout change in their GEMMs.

These live in ``edgeinfer`` (not ``converters``) because the runtime needs them and must not
depend on the converters package.
"""
from __future__ import annotations

import math
import weakref
from typing import Callable

import numpy as np

from .graph import Graph, Node, TensorType
from .kernels.registry import is_supported

FUSED_DOMAIN = "edgeinfer"
_FLOAT = (np.float16, np.float32, np.float64)


def optimize(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """Every rewrite of this module, in order (see the module docstring).

    Args:
        graph: a graph whose constants are folded.
        types: inferred type of every tensor of ``graph``; rewrites keep tensor names, so
            the types of the names they leave stay valid.
    """
    g = remove_identities(graph)
    g = _until_stable(simplify_layout, g, types)
    # a rewrite can complete another's pattern: Div(Clip(x + 3, 0, 6), 6) becomes HardSigmoid,
    # which with a Mul by x is HardSwish
    g = _until_stable(fuse_activation_patterns, g, types)
    g = fold_affine(g, types)  # BatchNormalization included: one weight rescale per Conv
    g = fuse_conv_activation(g, types)
    g = fuse_squeeze_excite(g, types)
    g = use_channels_last(g, types)
    g.remove_unused()
    return g


# --------------------------------------------------------------------------- helpers
def _until_stable(rewrite: Callable[[Graph, dict], Graph], g: Graph, types, limit: int = 4) -> Graph:
    """Apply ``rewrite`` until it changes nothing (it returns its input then), at most ``limit`` times."""
    for _ in range(limit):
        new = rewrite(g, types)
        if new is g:
            break
        g = new
    return g


class _Index:
    """Who reads what in one graph (subgraph reads and graph outputs count as uses)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.consumers: dict[str, list[Node]] = {}
        self.uses: dict[str, int] = {}
        self.producer: dict[str, Node] = {}
        for n in graph.nodes:
            for o in n.outputs:
                if o:
                    self.producer[o] = n
            for i in n.inputs:
                if i:
                    self.uses[i] = self.uses.get(i, 0) + 1
                    self.consumers.setdefault(i, []).append(n)
            if n.has_subgraphs:
                for sub in n.subgraphs():
                    for sn in sub.walk_nodes():
                        for i in sn.inputs:
                            self.uses[i] = self.uses.get(i, 0) + 1
        for v in graph.outputs:
            self.uses[v.name] = self.uses.get(v.name, 0) + 1
        self._names: set[str] | None = None

    def only_consumer(self, name: str) -> Node | None:
        """The node reading ``name`` when it is read exactly once (and is no graph output)."""
        if self.uses.get(name) != 1:
            return None
        readers = self.consumers.get(name)
        return readers[0] if readers and len(readers) == 1 else None

    def const(self, name: str) -> np.ndarray | None:
        return self.graph.constants.get(name) if name else None

    def scalar(self, name: str) -> float | None:
        """The value of a constant with one element (any shape of ones), else None."""
        v = self.const(name)
        if v is None or v.size != 1 or v.dtype.kind != "f":
            return None
        return float(v.reshape(()))

    def new_name(self, base: str) -> str:
        """A tensor name unused in the graph (and by earlier calls), derived from ``base``."""
        if self._names is None:
            g = self.graph
            self._names = set(g.constants) | set(g.value_info) | {v.name for v in g.inputs + g.outputs}
            self._names |= set(self.producer) | set(self.uses)
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name


_INDEXES: "weakref.WeakKeyDictionary[Graph, tuple]" = weakref.WeakKeyDictionary()


def _index_of(graph: Graph) -> _Index:
    """The index of ``graph``, shared by the passes that see it unchanged (a pass that edits
    nothing returns its input, so the next one need not walk the graph again). Rebuilt when
    the graph's node list or constants were replaced or resized in place."""
    stamp = (id(graph.nodes), len(graph.nodes), id(graph.constants), len(graph.constants))
    hit = _INDEXES.get(graph)
    if hit is None or hit[0] != stamp:
        hit = _INDEXES[graph] = (stamp, _Index(graph))
    return hit[1]


def _op(node: Node | None, *ops: str) -> bool:
    return node is not None and not node.domain and node.op_type in ops


def _other(node: Node, name: str) -> str | None:
    """The other input of a binary node that reads ``name`` once; None otherwise."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a == name and b != name:
        return b
    if b == name and a != name:
        return a
    return None


def _near(value: float | None, want: float, rel: float = 1e-6) -> bool:
    return value is not None and abs(value - want) <= rel * max(1.0, abs(want))


class _Edits:
    """Pending replacements of one pass: each claimed node is replaced once or dropped."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.replace: dict[int, Node | None] = {}
        self.constants = dict(graph.constants)

    def free(self, *nodes: Node) -> bool:
        return all(id(n) not in self.replace for n in nodes)

    def rewrite(self, anchor: Node, new: Node | None, drop: list[Node]) -> None:
        """Put ``new`` where ``anchor`` is and drop ``drop`` (all must be free)."""
        for n in drop:
            self.replace[id(n)] = None
        self.replace[id(anchor)] = new

    def result(self) -> Graph:
        if not self.replace:
            return self.graph
        g = self.graph.copy()
        g.nodes = [self.replace.get(id(n), n) for n in self.graph.nodes if self.replace.get(id(n), n) is not None]
        g.constants = self.constants
        return g


# -------------------------------------------------------------------------- identities
def remove_identities(graph: Graph) -> Graph:
    """Drop Identity and inference-mode Dropout nodes, renaming their consumers' inputs."""
    if any(True for n in graph.nodes for _ in n.subgraphs()):
        return graph  # subgraphs may read the renamed names from the outer scope
    outputs = set(graph.output_names)
    rename: dict[str, str] = {}
    keep: list[Node] = []
    for n in graph.nodes:
        n = n.replace(inputs=tuple(rename.get(i, i) for i in n.inputs)) if any(i in rename for i in n.inputs) else n
        is_id = n.op_type == "Identity" or (
            n.op_type == "Dropout" and (len(n.outputs) < 2 or not n.outputs[1]) and not n.attrs.get("training_mode")
            and (len(n.inputs) < 3 or not n.inputs[2])
        )
        if is_id and not n.domain and n.outputs[0] not in outputs and not list(n.subgraphs()):
            rename[n.outputs[0]] = n.inputs[0]
            continue
        keep.append(n)
    if not rename:
        return graph
    g = graph.copy()
    g.nodes = keep
    return g


# ----------------------------------------------------------------------------- layout
def simplify_layout(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """Collapse Transpose and Reshape chains and drop the ones that change nothing.

    * Transpose -> Transpose becomes one Transpose (or nothing, when the permutations cancel);
    * Reshape -> Reshape (also Flatten/Squeeze/Unsqueeze chains) becomes one Reshape to the
      final static shape;
    * a Transpose of a constant feeding only MatMul/Gemm is applied to the constant.
    Only fires where the intermediate tensors have no other reader.
    """
    if any(True for n in graph.nodes for _ in n.subgraphs()):
        return graph
    outputs = set(graph.output_names)
    idx = _index_of(graph)
    ed = _Edits(graph)
    rename: dict[str, str] = {}

    def static(name: str):
        t = types.get(name)
        if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
            return None
        return tuple(t.shape)

    def perm_of(n: Node) -> list[int] | None:
        shape = static(n.inputs[0])
        if shape is None:
            return None
        p = n.attrs.get("perm")
        return list(range(len(shape)))[::-1] if p is None else [int(v) for v in p]

    reshapes = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
    for n in graph.nodes:
        if not ed.free(n) or n.domain:
            continue
        if n.op_type == "Transpose":
            nxt = idx.only_consumer(n.outputs[0])
            p1 = perm_of(n)
            if _op(nxt, "Transpose") and ed.free(nxt) and p1 is not None:
                p2 = perm_of(nxt)
                if p2 is None:
                    continue
                combined = [p1[i] for i in p2]
                if combined == sorted(combined) and nxt.outputs[0] not in outputs:
                    rename[nxt.outputs[0]] = n.inputs[0]
                    ed.rewrite(nxt, None, [n])
                else:
                    ed.rewrite(nxt, nxt.replace(inputs=(n.inputs[0],), attrs={"perm": combined}), [n])
                continue
            w = idx.const(n.inputs[0])
            readers = idx.consumers.get(n.outputs[0], [])
            if w is not None and p1 is not None and readers and idx.uses.get(n.outputs[0]) == len(readers) and all(
                    _op(r, "MatMul", "Gemm") for r in readers):
                name = idx.new_name(n.outputs[0] + "_const")
                ed.constants[name] = np.ascontiguousarray(np.transpose(w, p1))
                rename[n.outputs[0]] = name
                ed.rewrite(n, None, [])
            continue
        if n.op_type in reshapes:
            # (a lone Reshape that changes nothing stays: it costs one view)
            if static(n.outputs[0]) is None:
                continue
            nxt = idx.only_consumer(n.outputs[0])
            if _op(nxt, *reshapes) and ed.free(nxt) and static(nxt.outputs[0]) is not None:
                # the second reshape's own rule decides its output; only the data order matters
                shape_name = idx.new_name(nxt.outputs[0] + "_shape")
                ed.constants[shape_name] = np.array(static(nxt.outputs[0]), np.int64)
                src = rename.get(n.inputs[0], n.inputs[0])
                ed.rewrite(nxt, Node("Reshape", (src, shape_name), nxt.outputs, {}, name=nxt.name), [n])
    g = ed.result()
    if rename:
        def resolve(name: str) -> str:
            while name in rename:
                name = rename[name]
            return name

        g.nodes = [m.replace(inputs=tuple(resolve(i) if i else i for i in m.inputs))
                   if any(i in rename for i in m.inputs) else m for m in g.nodes]
    return g


# ---------------------------------------------------------------------- batch norm
def fold_batch_norm(graph: Graph) -> Graph:
    """Fold inference BatchNormalization into the Conv that feeds it."""
    idx = _index_of(graph)
    c = dict(graph.constants)
    ed = _Edits(graph)
    for conv in graph.nodes:
        if not _op(conv, "Conv") or len(conv.outputs) != 1:
            continue
        bn = idx.only_consumer(conv.outputs[0])
        if not _op(bn, "BatchNormalization") or not ed.free(bn, conv):
            continue
        if bn.attrs.get("training_mode", 0) or len([o for o in bn.outputs if o]) != 1 or bn.inputs[0] != conv.outputs[0]:
            continue
        params = bn.inputs[1:5]
        if not all(p in c for p in params):
            continue
        scale, bias, mean, var = (c[p].astype(np.float64) for p in params)
        k = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        folded = _fold_into_conv(conv, k, bias - mean * k, c, idx)
        if folded is None:
            continue
        new = folded.replace(outputs=bn.outputs[:1])
        ed.rewrite(bn, new, [conv])
    ed.constants = c
    return ed.result()


def _fold_into_conv(conv: Node, scale: np.ndarray, shift: np.ndarray, c: dict, idx: _Index) -> Node | None:
    """``conv`` with its output channels mapped ``y * scale + shift`` (per channel, float64),
    its new weight and bias stored in ``c``; None when W/B are not float constants."""
    w_name = conv.inputs[1]
    b_name = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else None
    w = c.get(w_name)
    if w is None or w.dtype.type not in _FLOAT or (b_name is not None and b_name not in c):
        return None
    m = w.shape[0]
    scale, shift = np.broadcast_to(scale, (m,)), np.broadcast_to(shift, (m,))
    b = c[b_name].astype(np.float64) if b_name else np.zeros(m)
    # one rounding in the weight's own precision: float64 copies of large weights cost more
    # compile time than they buy accuracy
    new_w = w * scale.astype(w.dtype).reshape(-1, *([1] * (w.ndim - 1)))
    new_b = (b * scale + shift).astype(w.dtype)
    wn = idx.new_name(w_name + "_folded")
    bn = idx.new_name((b_name or conv.outputs[0] + "_bias") + "_folded")
    c[wn], c[bn] = new_w, new_b
    return conv.replace(inputs=(conv.inputs[0], wn, bn) + tuple(conv.inputs[3:]))


# ------------------------------------------------------------------ activation spellings
def fuse_activation_patterns(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """Rewrite multi-op spellings of HardSwish, HardSigmoid, SiLU, GELU and LayerNorm."""
    idx = _index_of(graph)
    ed = _Edits(graph)
    for node in graph.nodes:
        if not ed.free(node) or node.domain:
            continue
        for match in (_match_hard_swish, _match_hard_sigmoid, _match_silu, _match_gelu_erf, _match_gelu_tanh,
                      _match_layer_norm):
            found = match(node, idx, types, ed)
            if found is not None and ed.free(*found[1]):
                ed.rewrite(node, *found)
                break
    return ed.result()


def _float_tensor(types, name: str) -> bool:
    t = types.get(name)
    return t is not None and t.dtype in ("float16", "float32", "float64")


def _producer_chain(idx: _Index, name: str, op: str) -> Node | None:
    """The producer of ``name`` when it is an ``op`` node whose output is read only once."""
    p = idx.producer.get(name)
    return p if _op(p, op) and idx.uses.get(name) == 1 else None


def _clip_bounds(idx: _Index, clip: Node) -> tuple[float, float] | None:
    lo = idx.scalar(clip.inputs[1]) if len(clip.inputs) > 1 and clip.inputs[1] else -math.inf
    hi = idx.scalar(clip.inputs[2]) if len(clip.inputs) > 2 and clip.inputs[2] else math.inf
    return None if lo is None or hi is None else (lo, hi)


def _relu6_of_x_plus_3(idx: _Index, name: str) -> tuple[str, list[Node]] | None:
    """``name`` = Clip(x + 3, 0, 6) with single-use intermediates: (x, [clip, add])."""
    clip = _producer_chain(idx, name, "Clip")
    if clip is None or _clip_bounds(idx, clip) != (0.0, 6.0):
        return None
    add = _producer_chain(idx, clip.inputs[0], "Add")
    if add is None:
        return None
    for x, k in (add.inputs, add.inputs[::-1]):
        if _near(idx.scalar(k), 3.0) and idx.const(x) is None:
            return x, [clip, add]
    return None


def _div_by_6(idx: _Index, node: Node) -> str | None:
    """The dividend when ``node`` computes ``v / 6`` (Div by 6 or Mul by 1/6)."""
    if _op(node, "Div") and _near(idx.scalar(node.inputs[1]), 6.0):
        return node.inputs[0]
    if _op(node, "Mul"):
        for v, k in (node.inputs, node.inputs[::-1]):
            if _near(idx.scalar(k), 1 / 6):
                return v
    return None


def _match_hard_swish(node: Node, idx: _Index, types, ed: _Edits):
    # (a) Div(Mul(x, Clip(x + 3, 0, 6)), 6)   (b) Mul(x, Div(Clip(x + 3, 0, 6), 6))
    # (c) Mul(x, HardSigmoid(x, 1/6, 1/2))
    prod = _div_by_6(idx, node)
    if prod is not None:
        mul = _producer_chain(idx, prod, "Mul")
        if mul is not None:
            for x, r in (mul.inputs, mul.inputs[::-1]):
                relu6 = _relu6_of_x_plus_3(idx, r)
                if relu6 is not None and relu6[0] == x and _float_tensor(types, x):
                    return Node("HardSwish", (x,), node.outputs, name=node.name), [mul] + relu6[1]
    if _op(node, "Mul") and len(node.inputs) == 2:
        for x, r in (node.inputs, node.inputs[::-1]):
            if not _float_tensor(types, x):
                continue
            hs = _producer_chain(idx, r, "HardSigmoid")
            if hs is not None and hs.inputs[0] == x and _near(float(hs.attrs.get("alpha", 0.2)), 1 / 6) and _near(
                    float(hs.attrs.get("beta", 0.5)), 0.5):
                return Node("HardSwish", (x,), node.outputs, name=node.name), [hs]
            div = idx.producer.get(r)
            if div is not None and idx.uses.get(r) == 1:
                inner = _div_by_6(idx, div)
                relu6 = _relu6_of_x_plus_3(idx, inner) if inner is not None else None
                if relu6 is not None and relu6[0] == x:
                    return Node("HardSwish", (x,), node.outputs, name=node.name), [div] + relu6[1]
    return None


def _match_hard_sigmoid(node: Node, idx: _Index, types, ed: _Edits):
    # Div(Clip(x + 3, 0, 6), 6)
    inner = _div_by_6(idx, node)
    relu6 = _relu6_of_x_plus_3(idx, inner) if inner is not None else None
    if relu6 is None or not _float_tensor(types, relu6[0]):
        return None
    attrs = {"alpha": 1 / 6, "beta": 0.5}
    return Node("HardSigmoid", (relu6[0],), node.outputs, attrs, name=node.name), relu6[1]


def _activation_node(name: str, params: list[float], x: str, node: Node) -> Node:
    return Node("Activation", (x,), node.outputs, {"activation": name, "activation_params": list(params)},
                name=node.name, domain=FUSED_DOMAIN)


def _match_silu(node: Node, idx: _Index, types, ed: _Edits):
    # Mul(x, Sigmoid(x))
    if not _op(node, "Mul") or len(node.inputs) != 2 or not is_supported("Activation", FUSED_DOMAIN):
        return None
    for x, s in (node.inputs, node.inputs[::-1]):
        sig = _producer_chain(idx, s, "Sigmoid")
        if sig is not None and sig.inputs[0] == x and _float_tensor(types, x):
            return _activation_node("SiLU", [], x, node), [sig]
    return None


def _scaled_by(idx: _Index, node: Node | None, factor: float) -> str | None:
    """The operand when ``node`` is Mul by ``factor`` or Div by ``1/factor``."""
    if _op(node, "Mul"):
        for v, k in (node.inputs, node.inputs[::-1]):
            if _near(idx.scalar(k), factor, 1e-5):
                return v
    if _op(node, "Div") and _near(idx.scalar(node.inputs[1]), 1 / factor, 1e-5):
        return node.inputs[0]
    return None


def _half_products(node: Node, idx: _Index):
    """Ways ``node`` computes ``0.5 * x * gate``: (x, gate, intermediate nodes) candidates.

    Mul(Mul(x, gate), 0.5) | Mul(x, Mul(gate, 0.5)) | Mul(Mul(x, 0.5), gate), in any operand order.
    """
    if not _op(node, "Mul") or len(node.inputs) != 2:
        return
    halved = _scaled_by(idx, node, 0.5)
    if halved is not None:
        inner = _producer_chain(idx, halved, "Mul")
        if inner is not None and len(inner.inputs) == 2:
            a, b = inner.inputs
            yield a, b, [inner]
            yield b, a, [inner]
        return
    for a, b in (node.inputs, node.inputs[::-1]):
        h = idx.producer.get(b)
        if h is not None and idx.uses.get(b) == 1:
            g = _scaled_by(idx, h, 0.5)
            if g is not None:
                yield a, g, [h]
        h = idx.producer.get(a)
        if h is not None and idx.uses.get(a) == 1:
            x = _scaled_by(idx, h, 0.5)
            if x is not None:
                yield x, b, [h]


def _one_plus(idx: _Index, name: str, op: str) -> tuple[Node, Node] | None:
    """``name`` = 1 + op(...): (the Add, the op node), single-use."""
    add = _producer_chain(idx, name, "Add")
    if add is None:
        return None
    for v, k in (add.inputs, add.inputs[::-1]):
        if _near(idx.scalar(k), 1.0):
            inner = _producer_chain(idx, v, op)
            if inner is not None:
                return add, inner
    return None


def _match_gelu_erf(node: Node, idx: _Index, types, ed: _Edits):
    # 0.5 * x * (1 + Erf(x / sqrt(2))), the halving anywhere
    if not is_supported("Activation", FUSED_DOMAIN):
        return None
    for x, gate, extra in _half_products(node, idx):
        found = _one_plus(idx, gate, "Erf")
        if found is None or not _float_tensor(types, x) or idx.const(x) is not None:
            continue
        add, erf = found
        scaled = idx.producer.get(erf.inputs[0])
        if scaled is None or idx.uses.get(erf.inputs[0]) != 1 or _scaled_by(idx, scaled, 1 / math.sqrt(2)) != x:
            continue
        return _activation_node("Gelu", [0.0], x, node), [add, erf, scaled] + extra
    return None


def _match_gelu_tanh(node: Node, idx: _Index, types, ed: _Edits):
    # 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * Pow(x, 3))))
    if not is_supported("Activation", FUSED_DOMAIN):
        return None
    for x, gate, extra in _half_products(node, idx):
        found = _one_plus(idx, gate, "Tanh")
        if found is None or not _float_tensor(types, x) or idx.const(x) is not None:
            continue
        add, tanh = found
        scaled = idx.producer.get(tanh.inputs[0])
        if scaled is None or idx.uses.get(tanh.inputs[0]) != 1:
            continue
        inner = _scaled_by(idx, scaled, math.sqrt(2 / math.pi))
        inner_add = _producer_chain(idx, inner, "Add") if inner else None
        if inner_add is None or x not in inner_add.inputs:
            continue
        cube_term = _other(inner_add, x)
        cube_mul = idx.producer.get(cube_term) if cube_term else None
        if cube_mul is None or idx.uses.get(cube_term) != 1:
            continue
        cube = _scaled_by(idx, cube_mul, 0.044715)
        power = _producer_chain(idx, cube, "Pow") if cube else None
        if power is None or power.inputs[0] != x or not _near(idx.scalar(power.inputs[1]), 3.0):
            continue  # x * x * x spelled with Mul nodes is left alone
        return _activation_node("Gelu", [1.0], x, node), [add, tanh, scaled, inner_add, cube_mul, power] + extra
    return None


def _last_axis_reduce(idx: _Index, node: Node | None, types) -> bool:
    """``node`` is ReduceMean over exactly the last axis with keepdims."""
    if not _op(node, "ReduceMean") or not node.attrs.get("keepdims", 1):
        return False
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        axes = idx.const(node.inputs[1])
    t = types.get(node.inputs[0])
    if axes is None or t is None or t.shape is None:
        return False
    axes = [int(a) for a in np.atleast_1d(axes)]
    rank = len(t.shape)
    return len(axes) == 1 and axes[0] % rank == rank - 1


def _match_layer_norm(node: Node, idx: _Index, types, ed: _Edits):
    # Div(Sub(x, mean(x)), Sqrt(mean(Pow(Sub(x, mean(x)), 2)) + eps)) [* gamma] [+ beta]
    # anchored on the Div; the LayerNormalization takes the place of the Div (it reads only x)
    # and writes the output of the last absorbed node
    if not _op(node, "Div"):
        return None
    centered, root = node.inputs
    sub = idx.producer.get(centered)
    sqrt = _producer_chain(idx, root, "Sqrt")
    if not _op(sub, "Sub") or sqrt is None or idx.uses.get(centered) != 2:
        return None
    x, mean_name = sub.inputs
    mean = _producer_chain(idx, mean_name, "ReduceMean")
    if mean is None or mean.inputs[0] != x or not _last_axis_reduce(idx, mean, types):
        return None
    add = _producer_chain(idx, sqrt.inputs[0], "Add")
    if add is None:
        return None
    eps, var_name = None, None
    for v, k in (add.inputs, add.inputs[::-1]):
        if idx.scalar(k) is not None:
            eps, var_name = idx.scalar(k), v
    var = _producer_chain(idx, var_name, "ReduceMean") if var_name else None
    if var is None or not _last_axis_reduce(idx, var, types):
        return None
    sq = idx.producer.get(var.inputs[0])
    if idx.uses.get(var.inputs[0]) != 1 or sq is None:
        return None
    if _op(sq, "Pow"):
        if sq.inputs[0] != centered or not _near(idx.scalar(sq.inputs[1]), 2.0):
            return None
    elif not (_op(sq, "Mul") and sq.inputs[0] == centered and sq.inputs[1] == centered):
        return None
    t = types.get(x)
    if not _float_tensor(types, x) or idx.const(x) is not None or t.shape is None or not isinstance(t.shape[-1], int):
        return None
    d, dtype = t.shape[-1], np.dtype(t.dtype)

    def last_axis_const(n: Node, name: str):
        other = _other(n, name)
        v = idx.const(other) if other else None
        if v is None or v.dtype != dtype or v.ndim < 1 or v.shape[-1] != d or any(s != 1 for s in v.shape[:-1]):
            return None
        return v.reshape(d)

    out, gamma, beta, absorbed = node.outputs[0], np.ones(d, dtype), None, []
    nxt = idx.only_consumer(out)
    if _op(nxt, "Mul") and last_axis_const(nxt, out) is not None:
        gamma, out, absorbed = last_axis_const(nxt, out), nxt.outputs[0], absorbed + [nxt]
        nxt = idx.only_consumer(out)
    if _op(nxt, "Add") and last_axis_const(nxt, out) is not None:
        beta, out, absorbed = last_axis_const(nxt, out), nxt.outputs[0], absorbed + [nxt]
    g_name = idx.new_name(node.outputs[0] + "_scale")
    ed.constants[g_name] = gamma
    inputs = (x, g_name)
    if beta is not None:
        b_name = idx.new_name(node.outputs[0] + "_bias")
        ed.constants[b_name] = beta
        inputs += (b_name,)
    ln = Node("LayerNormalization", inputs, (out,), {"axis": -1, "epsilon": float(eps)}, name=node.name)
    return ln, [sub, mean, sqrt, add, var, sq] + absorbed


# ------------------------------------------------------------------------ affine maps
_AFFINE_OPS = ("Mul", "Add", "Sub", "Div", "BatchNormalization")


def _channel_affine(node: Node, x: str, idx: _Index, rank: int, channels) -> tuple[np.ndarray, np.ndarray] | None:
    """``node`` maps ``x`` by ``x * scale + shift`` with constants varying at most along axis 1
    of a rank-``rank`` tensor with ``channels`` channels: (scale, shift) as float64 arrays of
    shape (1,) or (channels,); None otherwise."""
    if node.domain or len(node.outputs) != 1:
        return None
    if node.op_type == "BatchNormalization":
        if node.inputs[0] != x or node.attrs.get("training_mode", 0) or len([o for o in node.outputs if o]) != 1:
            return None
        params = [idx.const(p) for p in node.inputs[1:5]]
        if any(p is None or p.dtype.type not in _FLOAT for p in params) or rank < 2:
            return None
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        k = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
        return k, bias - mean * k
    if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.inputs) != 2:
        return None
    other = _other(node, x)
    v = idx.const(other) if other else None
    if v is None or v.dtype.type not in _FLOAT or v.ndim > rank:
        return None
    shape = (1,) * (rank - v.ndim) + v.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or (rank > 1 and shape[1] not in (1, channels)):
        return None
    c = v.astype(np.float64).reshape(-1)
    if not np.all(np.isfinite(c)) or (node.op_type == "Div" and not np.all(c)):
        return None  # inf/nan (or 1/0) would turn into nan where the unfolded op gives a number
    if node.op_type == "Sub" and node.inputs[1] != other:
        return None  # c - x
    if node.op_type == "Div" and node.inputs[1] != other:
        return None  # c / x
    one, zero = np.ones(1), np.zeros(1)
    if node.op_type == "Mul":
        return c, zero
    if node.op_type == "Div":
        return 1.0 / c, zero
    return one, (c if node.op_type == "Add" else -c)


def _shape_of(types, name: str):
    t = types.get(name)
    if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
        return None
    return tuple(t.shape)


def _affine_chain(start: str, idx: _Index, ed: _Edits, types) -> tuple[list[Node], np.ndarray, np.ndarray, str]:
    """Follow single-use per-channel affine nodes from tensor ``start``: (nodes, scale, shift,
    output) with the composed map as float64 arrays."""
    shape = _shape_of(types, start)
    nodes: list[Node] = []
    scale, shift = np.ones(1), np.zeros(1)
    cur = start
    if shape is None:
        return nodes, scale, shift, cur
    rank, channels = len(shape), shape[1] if len(shape) > 1 else 1
    while True:
        nxt = idx.only_consumer(cur)
        if nxt is None or not ed.free(nxt) or not _op(nxt, *_AFFINE_OPS):
            break
        m = _channel_affine(nxt, cur, idx, rank, channels)
        if m is None or _shape_of(types, nxt.outputs[0]) != shape:
            break
        s, t = m
        scale, shift = scale * s, shift * s + t
        nodes.append(nxt)
        cur = nxt.outputs[0]
    return nodes, scale, shift, cur


def fold_affine(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """Fold per-channel affine maps (BatchNormalization, Mul/Add/Sub/Div by constants) into
    the neighbouring Conv, or merge a chain of them into one ``edgeinfer::Affine`` node."""
    g = _fold_affine_after_conv(graph, types)
    g = _fold_affine_before_pointwise(g, types)
    g = _merge_affine_chains(g, types)
    return _scale_through_relu(g, types)


def _fold_affine_after_conv(graph: Graph, types) -> Graph:
    idx = _index_of(graph)
    ed = _Edits(graph)
    c = ed.constants
    for conv in graph.nodes:
        if not _op(conv, "Conv") or not ed.free(conv) or len(conv.outputs) != 1:
            continue
        nodes, scale, shift, out = _affine_chain(conv.outputs[0], idx, ed, types)
        if not nodes:
            continue
        folded = _fold_into_conv(conv, scale, shift, c, idx)
        if folded is not None:
            ed.rewrite(conv, folded.replace(outputs=(out,)), nodes)
    return ed.result()


def _is_pointwise_conv(conv: Node, idx: _Index) -> bool:
    w = idx.const(conv.inputs[1]) if len(conv.inputs) > 1 else None
    a = conv.attrs
    return (w is not None and w.ndim >= 3 and all(k == 1 for k in w.shape[2:]) and int(a.get("group", 1)) == 1
            and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID") and not any(a.get("pads") or ())
            and all(d == 1 for d in (a.get("dilations") or [1])))


def _fold_affine_before_pointwise(graph: Graph, types) -> Graph:
    # conv1x1(x * s + t) = conv1x1 with W * s (per input channel) and bias b + W @ t
    idx = _index_of(graph)
    ed = _Edits(graph)
    c = ed.constants
    for conv in graph.nodes:
        if not _op(conv, "Conv") or not ed.free(conv) or not _is_pointwise_conv(conv, idx):
            continue
        w = c[conv.inputs[1]]
        b_name = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else None
        if w.dtype.type not in _FLOAT or (b_name is not None and b_name not in c):
            continue
        x_shape = _shape_of(types, conv.inputs[0])
        if x_shape is None:
            continue
        scale, shift, dropped, src = np.ones(1), np.zeros(1), [], conv.inputs[0]
        while True:
            prod = idx.producer.get(src)
            if prod is None or idx.uses.get(src) != 1 or not ed.free(prod) or not _op(prod, *_AFFINE_OPS):
                break
            x = prod.inputs[0] if prod.op_type == "BatchNormalization" else next(
                (i for i in prod.inputs if idx.const(i) is None), None)
            if x is None or _shape_of(types, x) != x_shape:
                break
            m = _channel_affine(prod, x, idx, len(x_shape), x_shape[1])
            if m is None:
                break
            s, t = m  # the composed map so far applies after this one
            scale, shift = s * scale, t * scale + shift
            dropped.append(prod)
            src = x
        if not dropped:
            continue
        m_out, cin = w.shape[0], w.shape[1]
        w2 = w.reshape(m_out, cin)
        s_full, t_full = np.broadcast_to(scale, (cin,)), np.broadcast_to(shift, (cin,))
        b = c[b_name].astype(np.float64) if b_name else np.zeros(m_out)
        wn = idx.new_name(conv.inputs[1] + "_folded")
        bn = idx.new_name((b_name or conv.outputs[0] + "_bias") + "_folded")
        c[wn] = (w2 * s_full.astype(w.dtype)).reshape(w.shape)
        c[bn] = (b + w2.astype(np.float64) @ t_full).astype(w.dtype)
        ed.rewrite(conv, conv.replace(inputs=(src, wn, bn) + tuple(conv.inputs[3:])), dropped)
    return ed.result()


def _merge_affine_chains(graph: Graph, types) -> Graph:
    if not is_supported("Affine", FUSED_DOMAIN):
        return graph
    idx = _index_of(graph)
    ed = _Edits(graph)
    done: set[int] = set()
    for node in graph.nodes:
        if id(node) in done or not ed.free(node) or not _op(node, *_AFFINE_OPS):
            continue
        x = node.inputs[0] if node.op_type == "BatchNormalization" else next(
            (i for i in node.inputs if i and idx.const(i) is None), None)
        shape = _shape_of(types, x) if x else None
        if shape is None or not _float_tensor(types, x) or _shape_of(types, node.outputs[0]) != shape:
            continue
        first = _channel_affine(node, x, idx, len(shape), shape[1] if len(shape) > 1 else 1)
        if first is None:
            continue
        rest, scale, shift, out = _affine_chain(node.outputs[0], idx, ed, types)
        scale, shift = first[0] * scale, first[1] * scale + shift
        chain = [node] + rest
        done.update(id(n) for n in chain)
        act_node = idx.only_consumer(out)
        act = _activation_of(act_node, idx.graph.constants) if act_node is not None and ed.free(act_node) else None
        if act is not None:
            chain.append(act_node)
            out = act_node.outputs[0]
        if len(chain) < 2:
            continue
        dtype = np.dtype(types[x].dtype)
        bshape = (-1,) + (1,) * (len(shape) - 2) if len(shape) > 1 else (-1,)
        inputs = [x]
        for value, neutral, tag in ((scale, 1.0, "_scale"), (shift, 0.0, "_shift")):
            if np.all(value == neutral):
                inputs.append("")
                continue
            name = idx.new_name(node.outputs[0] + tag)
            ed.constants[name] = value.astype(dtype).reshape(bshape if value.size > 1 else ())
            inputs.append(name)
        name, params = act if act else ("", [])
        new = Node("Affine", tuple(inputs), (out,), {"activation": name, "activation_params": params},
                   name=node.name, domain=FUSED_DOMAIN)
        # the merged node lands where the last absorbed node was, after every input it reads
        ed.rewrite(chain[-1], new, chain[:-1])
    return ed.result()


def _scale_through_relu(graph: Graph, types) -> Graph:
    """``conv1x1(relu(x * s + t))`` with every ``s > 0`` is ``conv1x1'(relu(x + t / s))`` with the
    conv's input channels scaled by ``s``: the Affine before it (DenseNet's BatchNorm + ReLU
    pre-activations) loses its multiply pass."""
    idx = _index_of(graph)
    ed = _Edits(graph)
    c = ed.constants
    for node in graph.nodes:
        if node.domain != FUSED_DOMAIN or node.op_type != "Affine" or node.attrs.get("activation") != "Relu":
            continue
        if len(node.inputs) < 2 or not node.inputs[1]:
            continue
        scale = idx.const(node.inputs[1])
        shift = idx.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        readers = idx.consumers.get(node.outputs[0], [])
        if scale is None or scale.ndim < 1 or not np.all(scale > 0) or not readers:
            continue
        if idx.uses.get(node.outputs[0]) != len(readers) or not all(
                _op(r, "Conv") and r.inputs[0] == node.outputs[0] and _is_pointwise_conv(r, idx)
                and c[r.inputs[1]].shape[1] == scale.size and ed.free(r) for r in readers):
            continue
        s64 = scale.astype(np.float64).reshape(-1)
        new_inputs = [node.inputs[0], ""]
        if shift is not None:
            name = idx.new_name(node.inputs[2] + "_unscaled")
            c[name] = (np.broadcast_to(shift.astype(np.float64).reshape(-1), s64.shape) / s64).astype(shift.dtype).reshape(
                scale.shape)
            new_inputs.append(name)
        ed.rewrite(node, node.replace(inputs=tuple(new_inputs)), [])
        for conv in readers:
            w = c[conv.inputs[1]]
            name = idx.new_name(conv.inputs[1] + "_scaled")
            c[name] = w * scale.astype(w.dtype).reshape(1, -1, *([1] * (w.ndim - 2)))
            ed.replace[id(conv)] = conv.replace(inputs=(conv.inputs[0], name) + tuple(conv.inputs[2:]))
    return ed.result()


# --------------------------------------------------------------- GEMM + epilogue fusion
def _activation_of(node: Node | None, constants: dict) -> tuple[str, list[float]] | None:
    """(activation name, params) of :mod:`edgeinfer.kernels.activations` computed by ``node``."""
    if node is None or len(node.inputs) < 1 or len(node.outputs) != 1:
        return None
    op, a = node.op_type, node.attrs
    if node.domain == FUSED_DOMAIN and op == "Activation":
        return a.get("activation", ""), list(a.get("activation_params", []))
    if node.domain:
        return None
    if op == "Relu":
        return "Relu", []
    if op == "LeakyRelu":
        return "LeakyRelu", [float(a.get("alpha", 0.01))]
    if op == "HardSigmoid":
        return "HardSigmoid", [float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))]
    if op in ("Sigmoid", "Tanh", "HardSwish"):
        return op, []
    if op == "Gelu":
        approx = a.get("approximate", "none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        return ("Gelu", [1.0]) if approx == "tanh" else ("Gelu", [0.0]) if approx == "none" else None
    if op == "Clip":
        lo, hi = -np.inf, np.inf
        for i in (1, 2):
            if len(node.inputs) > i and node.inputs[i]:
                v = constants.get(node.inputs[i])
                if v is None or v.size != 1:
                    return None
                if i == 1:
                    lo = float(v.reshape(()))
                else:
                    hi = float(v.reshape(()))
        return "Clip", [lo, hi]
    return None


def fuse_conv_activation(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """Conv/Gemm [+ Add residual of the same shape] [+ activation] -> FusedConv/FusedGemm, and
    MatMul [+ Add of a bias along the last axis] [+ activation] -> FusedMatMul."""
    idx = _index_of(graph)
    ed = _Edits(graph)
    for node in graph.nodes:
        if node.domain or node.op_type not in ("Conv", "Gemm", "MatMul") or not ed.free(node):
            continue
        if not is_supported("Fused" + node.op_type, FUSED_DOMAIN) or not _float_tensor(types, node.inputs[0]):
            continue
        out = node.outputs[0]
        last, extra, chain = node, None, []
        nxt = idx.only_consumer(out)
        if _op(nxt, "Add", "Sum") and len(nxt.inputs) == 2 and ed.free(nxt):
            other = _other(nxt, out)
            if node.op_type == "Conv" and other and types.get(other) is not None and types[other] == types.get(out):
                extra = other  # a residual of the output's shape
            elif node.op_type == "MatMul" and other:
                bias = idx.const(other)
                shape = _shape_of(types, out)
                if (bias is not None and shape and bias.dtype == np.dtype(types[out].dtype) and bias.ndim >= 1
                        and bias.shape[-1] == shape[-1] and all(d == 1 for d in bias.shape[:-1])):
                    extra = other
            if extra is not None:
                last, chain = nxt, [nxt]
                nxt = idx.only_consumer(nxt.outputs[0])
        act = _activation_of(nxt, graph.constants) if nxt is not None and ed.free(nxt) else None
        if act is not None:
            last, chain = nxt, chain + [nxt]
        if last is node:
            continue
        attrs = dict(node.attrs)
        attrs["activation"], attrs["activation_params"] = act if act else ("", [])
        if node.op_type == "MatMul":
            inputs = tuple(node.inputs) + ((extra,) if extra else ())
        else:
            inputs = tuple(node.inputs) + ("",) * (3 - len(node.inputs)) + ((extra,) if extra else ())
        fused = Node("Fused" + node.op_type, inputs, (last.outputs[0],), attrs, name=node.name, domain=FUSED_DOMAIN)
        # the fused node sits where `last` was, so a residual is already computed
        ed.rewrite(last, fused, [node] + chain[:-1])
    return ed.result()


# ---------------------------------------------------------------- squeeze-and-excite
def fuse_squeeze_excite(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """``x * act2(conv2(act1(conv1(GlobalAveragePool(x)))))`` with 1x1 convs -> one
    ``edgeinfer::SqueezeExcite`` node: the gate is a few hundred numbers, so four nodes'
    per-call overhead costs more than their arithmetic."""
    if not is_supported("SqueezeExcite", FUSED_DOMAIN):
        return graph
    idx = _index_of(graph)
    ed = _Edits(graph)
    for mul in graph.nodes:
        if not _op(mul, "Mul") or len(mul.inputs) != 2 or not ed.free(mul):
            continue
        for x, gate in (mul.inputs, mul.inputs[::-1]):
            found = _squeeze_excite_chain(idx, x, gate, types)
            if found is None or not ed.free(*found[0]):
                continue
            nodes, inputs, attrs = found
            new = Node("SqueezeExcite", (x,) + inputs, mul.outputs, attrs, name=nodes[0].name or mul.name,
                       domain=FUSED_DOMAIN)
            ed.rewrite(mul, new, nodes)
            break
    return ed.result()


def _se_conv(idx: _Index, name: str) -> tuple[Node, tuple[str, list]] | None:
    """The single-use 1x1 Conv/FusedConv (no residual) producing ``name``, and its activation."""
    conv = idx.producer.get(name)
    if conv is None or idx.uses.get(name) != 1 or len(conv.outputs) != 1:
        return None
    fused = conv.domain == FUSED_DOMAIN and conv.op_type == "FusedConv"
    if not (fused or _op(conv, "Conv")) or not _is_pointwise_conv(conv, idx):
        return None
    if len(conv.inputs) > 3 and conv.inputs[3]:
        return None  # a residual
    if len(conv.inputs) > 2 and conv.inputs[2] and idx.const(conv.inputs[2]) is None:
        return None
    act = (conv.attrs.get("activation", ""), list(conv.attrs.get("activation_params", []))) if fused else ("", [])
    return conv, act


def _squeeze_excite_chain(idx: _Index, x: str, gate: str, types):
    shape = _shape_of(types, x)
    if shape is None or len(shape) != 4 or not _float_tensor(types, x) or _shape_of(types, gate) != shape[:2] + (1, 1):
        return None
    second = _se_conv(idx, gate)
    first = _se_conv(idx, second[0].inputs[0]) if second else None
    pool = idx.producer.get(first[0].inputs[0]) if first else None
    if pool is None or not _op(pool, "GlobalAveragePool") or pool.inputs[0] != x or idx.uses.get(pool.outputs[0]) != 1:
        return None
    (c1, a1), (c2, a2) = first, second
    inputs = tuple(c1.inputs[1:3]) + ("",) * (3 - len(c1.inputs[:3])) + tuple(c2.inputs[1:3]) + ("",) * (
        3 - len(c2.inputs[:3]))
    attrs = {"activation": a1[0], "activation_params": a1[1], "gate_activation": a2[0], "gate_activation_params": a2[1]}
    return [pool, c1, c2], inputs, attrs


# ------------------------------------------------------------------------ channels-last
def _static_conv_parts(conv: Node, idx: _Index, types):
    """(NCHW input shape, weight) of a Conv/FusedConv with static shapes, constant float
    weights and layouts not yet set to something else, else None."""
    if not (_op(conv, "Conv") or (conv.domain == FUSED_DOMAIN and conv.op_type == "FusedConv")):
        return None
    x = _shape_of(types, conv.inputs[0])
    w = idx.const(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if x is None or len(x) != 4 or w is None or w.ndim != 4 or types[conv.inputs[0]].dtype not in ("float32", "float64"):
        return None
    if len(conv.inputs) > 2 and conv.inputs[2] and idx.const(conv.inputs[2]) is None:
        return None
    return x, w


def _is_depthwise(conv: Node, idx: _Index, types) -> bool:
    parts = _static_conv_parts(conv, idx, types)
    if parts is None:
        return False
    x, w = parts
    a = conv.attrs
    group = int(a.get("group", 1))
    strides, dilations = a.get("strides") or [1, 1], a.get("dilations") or [1, 1]
    return (group > 1 and group == x[1] == w.shape[0] and w.shape[1] == 1
            and (all(int(s) == 1 for s in strides) or all(int(d) == 1 for d in dilations))
            and not (len(conv.inputs) > 3 and conv.inputs[3]))


def _is_plain_pointwise(conv: Node, idx: _Index, types) -> bool:
    return (_static_conv_parts(conv, idx, types) is not None and _is_pointwise_conv(conv, idx)
            and all(int(s) == 1 for s in (conv.attrs.get("strides") or [1, 1])))


def _layout_neutral(node: Node, idx: _Index) -> bool:
    """An ``edgeinfer::Affine`` whose scale and shift are scalars: the same on any layout."""
    if node.domain != FUSED_DOMAIN or node.op_type != "Affine":
        return False
    return all(not i or (idx.const(i) is not None and idx.const(i).ndim == 0) for i in node.inputs[1:])


def use_channels_last(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """Run depthwise convs channels-last (N, H, W, C) without transposes.

    The channels-last depthwise kernel is 2-3x faster than the NCHW one, but converting its
    input and output costs two transposes. Where the depthwise conv's input comes from a 1x1
    conv (through scalar-only Affines), that conv writes channels-last instead, and where its
    output goes (through scalar Affines and a squeeze-and-excite gate) into a 1x1 conv, that
    conv reads channels-last: a GEMM takes either layout through a transposed operand for
    free. Each edge changes only with both ends convertible; the tensors between carry their
    channels-last shapes in the IR.
    """
    if not is_supported("FusedConv", FUSED_DOMAIN):
        return graph
    idx = _index_of(graph)
    changes: dict[int, dict] = {}  # id(node) -> attribute updates

    def set_attr(node: Node, **kv) -> None:
        changes.setdefault(id(node), {}).update(kv)

    for dw in graph.nodes:
        if not _is_depthwise(dw, idx, types):
            continue
        # upstream: single-use scalar Affines, then a 1x1 conv whose output nobody else reads
        t, producer = dw.inputs[0], None
        while idx.uses.get(t) == 1:
            p = idx.producer.get(t)
            if p is None:
                break
            if _layout_neutral(p, idx):
                t = p.inputs[0]
                continue
            if _is_plain_pointwise(p, idx, types) and changes.get(id(p), {}).get("output_layout") is None:
                producer = p
            break
        # downstream: single-use scalar Affines and squeeze-excite gates, then a 1x1 conv
        t, passed, consumer = dw.outputs[0], [], None
        while True:
            q = idx.only_consumer(t)
            if q is None:
                break
            if _layout_neutral(q, idx) and q.inputs[0] == t:
                t = q.outputs[0]
                continue
            if q.domain == FUSED_DOMAIN and q.op_type == "SqueezeExcite" and q.inputs[0] == t:
                passed.append(q)
                t = q.outputs[0]
                continue
            if _is_plain_pointwise(q, idx, types) and q.inputs[0] == t and (
                    changes.get(id(q), {}).get("input_layout") is None):
                consumer = q
            break
        if producer is not None:
            set_attr(producer, output_layout="NHWC")
            set_attr(dw, input_layout="NHWC")
        if consumer is not None:
            set_attr(dw, output_layout="NHWC")
            set_attr(consumer, input_layout="NHWC")
            for se in passed:
                set_attr(se, layout="NHWC")
    if not changes:
        return graph
    g = graph.copy()
    out = []
    for n in graph.nodes:
        kv = changes.get(id(n))
        if kv is None:
            out.append(n)
            continue
        attrs = dict(n.attrs)
        attrs.update(kv)
        if n.domain != FUSED_DOMAIN:  # a plain Conv becomes a FusedConv to carry the layouts
            attrs.setdefault("activation", "")
            attrs.setdefault("activation_params", [])
            n = Node("FusedConv", n.inputs, n.outputs, attrs, name=n.name, domain=FUSED_DOMAIN)
        else:
            n = n.replace(attrs=attrs)
        out.append(n)
    g.nodes = out
    return g
