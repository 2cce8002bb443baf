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
depend on the converters package. The passes from :func:`fold_affine` on live in
:mod:`edgeinfer.fusion` (re-exported here), and the index/edit toolkit every pass uses in
:mod:`edgeinfer.rewrite`.
"""
from __future__ import annotations

import math

import numpy as np

from .fusion import fold_affine, fold_batch_norm, fuse_conv_activation, fuse_squeeze_excite, use_channels_last
from .graph import Graph, Node, TensorType
from .kernels.registry import is_supported
from .rewrite import FUSED_DOMAIN, Edits, Index, index_of, is_float_tensor, is_op, near, other_input, until_stable

__all__ = [
    "FUSED_DOMAIN", "optimize", "remove_identities", "simplify_layout", "fuse_activation_patterns", "fold_affine",
    "fold_batch_norm", "fuse_conv_activation", "fuse_squeeze_excite", "use_channels_last",
]


def optimize(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """Every rewrite of this module, in order (see the module docstring).

    Args:
        graph: a graph whose constants are folded.
        types: inferred type of every tensor of ``graph``; rewrites keep tensor names, so
            the types of the names they leave stay valid.
    """
    g = remove_identities(graph)
    g = until_stable(simplify_layout, g, types)
    # a rewrite can complete another's pattern: Div(Clip(x + 3, 0, 6), 6) becomes HardSigmoid,
    # which with a Mul by x is HardSwish
    g = until_stable(fuse_activation_patterns, g, types)
    g = fold_affine(g, types)  # BatchNormalization included: one weight rescale per Conv
    g = fuse_conv_activation(g, types)
    g = fuse_squeeze_excite(g, types)
    g = use_channels_last(g, types)
    g.remove_unused()
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
    idx = index_of(graph)
    ed = Edits(graph)
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
            if is_op(nxt, "Transpose") and ed.free(nxt) and p1 is not None:
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
                    is_op(r, "MatMul", "Gemm") for r in readers):
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
            if is_op(nxt, *reshapes) and ed.free(nxt) and static(nxt.outputs[0]) is not None:
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


# ------------------------------------------------------------------ activation spellings
def fuse_activation_patterns(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """Rewrite multi-op spellings of HardSwish, HardSigmoid, SiLU, GELU and LayerNorm."""
    idx = index_of(graph)
    ed = Edits(graph)
    for node in graph.nodes:
        # every spelling ends in a Mul or a Div (the matchers check the rest)
        if node.op_type not in ("Mul", "Div") or node.domain or not ed.free(node):
            continue
        for match in (_match_hard_swish, _match_hard_sigmoid, _match_silu, _match_gelu_erf, _match_gelu_tanh,
                      _match_layer_norm):
            found = match(node, idx, types, ed)
            if found is not None and ed.free(*found[1]):
                ed.rewrite(node, *found)
                break
    return ed.result()


def _producer_chain(idx: Index, name: str, op: str) -> Node | None:
    """The producer of ``name`` when it is an ``op`` node whose output is read only once."""
    p = idx.producer.get(name)
    return p if is_op(p, op) and idx.uses.get(name) == 1 else None


def _clip_bounds(idx: Index, clip: Node) -> tuple[float, float] | None:
    lo = idx.scalar(clip.inputs[1]) if len(clip.inputs) > 1 and clip.inputs[1] else -math.inf
    hi = idx.scalar(clip.inputs[2]) if len(clip.inputs) > 2 and clip.inputs[2] else math.inf
    return None if lo is None or hi is None else (lo, hi)


def _relu6_of_x_plus_3(idx: Index, name: str) -> tuple[str, list[Node]] | None:
    """``name`` = Clip(x + 3, 0, 6) with single-use intermediates: (x, [clip, add])."""
    clip = _producer_chain(idx, name, "Clip")
    if clip is None or _clip_bounds(idx, clip) != (0.0, 6.0):
        return None
    add = _producer_chain(idx, clip.inputs[0], "Add")
    if add is None:
        return None
    for x, k in (add.inputs, add.inputs[::-1]):
        if near(idx.scalar(k), 3.0) and idx.const(x) is None:
            return x, [clip, add]
    return None


def _div_by_6(idx: Index, node: Node) -> str | None:
    """The dividend when ``node`` computes ``v / 6`` (Div by 6 or Mul by 1/6)."""
    if is_op(node, "Div") and near(idx.scalar(node.inputs[1]), 6.0):
        return node.inputs[0]
    if is_op(node, "Mul"):
        for v, k in (node.inputs, node.inputs[::-1]):
            if near(idx.scalar(k), 1 / 6):
                return v
    return None


def _match_hard_swish(node: Node, idx: Index, types, ed: Edits):
    # (a) Div(Mul(x, Clip(x + 3, 0, 6)), 6)   (b) Mul(x, Div(Clip(x + 3, 0, 6), 6))
    # (c) Mul(x, HardSigmoid(x, 1/6, 1/2))
    prod = _div_by_6(idx, node)
    if prod is not None:
        mul = _producer_chain(idx, prod, "Mul")
        if mul is not None:
            for x, r in (mul.inputs, mul.inputs[::-1]):
                relu6 = _relu6_of_x_plus_3(idx, r)
                if relu6 is not None and relu6[0] == x and is_float_tensor(types, x):
                    return Node("HardSwish", (x,), node.outputs, name=node.name), [mul] + relu6[1]
    if is_op(node, "Mul") and len(node.inputs) == 2:
        for x, r in (node.inputs, node.inputs[::-1]):
            if not is_float_tensor(types, x):
                continue
            hs = _producer_chain(idx, r, "HardSigmoid")
            if hs is not None and hs.inputs[0] == x and near(float(hs.attrs.get("alpha", 0.2)), 1 / 6) and near(
                    float(hs.attrs.get("beta", 0.5)), 0.5):
                return Node("HardSwish", (x,), node.outputs, name=node.name), [hs]
            div = idx.producer.get(r)
            if div is not None and idx.uses.get(r) == 1:
                inner = _div_by_6(idx, div)
                relu6 = _relu6_of_x_plus_3(idx, inner) if inner is not None else None
                if relu6 is not None and relu6[0] == x:
                    return Node("HardSwish", (x,), node.outputs, name=node.name), [div] + relu6[1]
    return None


def _match_hard_sigmoid(node: Node, idx: Index, types, ed: Edits):
    # Div(Clip(x + 3, 0, 6), 6)
    inner = _div_by_6(idx, node)
    relu6 = _relu6_of_x_plus_3(idx, inner) if inner is not None else None
    if relu6 is None or not is_float_tensor(types, relu6[0]):
        return None
    attrs = {"alpha": 1 / 6, "beta": 0.5}
    return Node("HardSigmoid", (relu6[0],), node.outputs, attrs, name=node.name), relu6[1]


def _activation_node(name: str, params: list[float], x: str, node: Node) -> Node:
    return Node("Activation", (x,), node.outputs, {"activation": name, "activation_params": list(params)},
                name=node.name, domain=FUSED_DOMAIN)


def _match_silu(node: Node, idx: Index, types, ed: Edits):
    # Mul(x, Sigmoid(x))
    if not is_op(node, "Mul") or len(node.inputs) != 2 or not is_supported("Activation", FUSED_DOMAIN):
        return None
    for x, s in (node.inputs, node.inputs[::-1]):
        sig = _producer_chain(idx, s, "Sigmoid")
        if sig is not None and sig.inputs[0] == x and is_float_tensor(types, x):
            return _activation_node("SiLU", [], x, node), [sig]
    return None


def _scaled_by(idx: Index, node: Node | None, factor: float) -> str | None:
    """The operand when ``node`` is Mul by ``factor`` or Div by ``1/factor``."""
    if is_op(node, "Mul"):
        for v, k in (node.inputs, node.inputs[::-1]):
            if near(idx.scalar(k), factor, 1e-5):
                return v
    if is_op(node, "Div") and near(idx.scalar(node.inputs[1]), 1 / factor, 1e-5):
        return node.inputs[0]
    return None


def _half_products(node: Node, idx: Index):
    """Ways ``node`` computes ``0.5 * x * gate``: (x, gate, intermediate nodes) candidates.

    Mul(Mul(x, gate), 0.5) | Mul(x, Mul(gate, 0.5)) | Mul(Mul(x, 0.5), gate), in any operand order.
    """
    if not is_op(node, "Mul") or len(node.inputs) != 2:
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


def _one_plus(idx: Index, name: str, op: str) -> tuple[Node, Node] | None:
    """``name`` = 1 + op(...): (the Add, the op node), single-use."""
    add = _producer_chain(idx, name, "Add")
    if add is None:
        return None
    for v, k in (add.inputs, add.inputs[::-1]):
        if near(idx.scalar(k), 1.0):
            inner = _producer_chain(idx, v, op)
            if inner is not None:
                return add, inner
    return None


def _match_gelu_erf(node: Node, idx: Index, types, ed: Edits):
    # 0.5 * x * (1 + Erf(x / sqrt(2))), the halving anywhere
    if not is_supported("Activation", FUSED_DOMAIN):
        return None
    for x, gate, extra in _half_products(node, idx):
        found = _one_plus(idx, gate, "Erf")
        if found is None or not is_float_tensor(types, x) or idx.const(x) is not None:
            continue
        add, erf = found
        scaled = idx.producer.get(erf.inputs[0])
        if scaled is None or idx.uses.get(erf.inputs[0]) != 1 or _scaled_by(idx, scaled, 1 / math.sqrt(2)) != x:
            continue
        return _activation_node("Gelu", [0.0], x, node), [add, erf, scaled] + extra
    return None


def _match_gelu_tanh(node: Node, idx: Index, types, ed: Edits):
    # 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * Pow(x, 3))))
    if not is_supported("Activation", FUSED_DOMAIN):
        return None
    for x, gate, extra in _half_products(node, idx):
        found = _one_plus(idx, gate, "Tanh")
        if found is None or not is_float_tensor(types, x) or idx.const(x) is not None:
            continue
        add, tanh = found
        scaled = idx.producer.get(tanh.inputs[0])
        if scaled is None or idx.uses.get(tanh.inputs[0]) != 1:
            continue
        inner = _scaled_by(idx, scaled, math.sqrt(2 / math.pi))
        inner_add = _producer_chain(idx, inner, "Add") if inner else None
        if inner_add is None or x not in inner_add.inputs:
            continue
        cube_term = other_input(inner_add, x)
        cube_mul = idx.producer.get(cube_term) if cube_term else None
        if cube_mul is None or idx.uses.get(cube_term) != 1:
            continue
        cube = _scaled_by(idx, cube_mul, 0.044715)
        power = _producer_chain(idx, cube, "Pow") if cube else None
        if power is None or power.inputs[0] != x or not near(idx.scalar(power.inputs[1]), 3.0):
            continue  # x * x * x spelled with Mul nodes is left alone
        return _activation_node("Gelu", [1.0], x, node), [add, tanh, scaled, inner_add, cube_mul, power] + extra
    return None


def _last_axis_reduce(idx: Index, node: Node | None, types) -> bool:
    """``node`` is ReduceMean over exactly the last axis with keepdims."""
    if not is_op(node, "ReduceMean") or not node.attrs.get("keepdims", 1):
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


def _match_layer_norm(node: Node, idx: Index, types, ed: Edits):
    # Div(Sub(x, mean(x)), Sqrt(mean(Pow(Sub(x, mean(x)), 2)) + eps)) [* gamma] [+ beta]
    # anchored on the Div; the LayerNormalization takes the place of the Div (it reads only x)
    # and writes the output of the last absorbed node
    if not is_op(node, "Div"):
        return None
    centered, root = node.inputs
    sub = idx.producer.get(centered)
    sqrt = _producer_chain(idx, root, "Sqrt")
    if not is_op(sub, "Sub") or sqrt is None or idx.uses.get(centered) != 2:
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
    if is_op(sq, "Pow"):
        if sq.inputs[0] != centered or not near(idx.scalar(sq.inputs[1]), 2.0):
            return None
    elif not (is_op(sq, "Mul") and sq.inputs[0] == centered and sq.inputs[1] == centered):
        return None
    t = types.get(x)
    if not is_float_tensor(types, x) or idx.const(x) is not None or t.shape is None or not isinstance(t.shape[-1], int):
        return None
    d, dtype = t.shape[-1], np.dtype(t.dtype)

    def last_axis_const(n: Node, name: str):
        other = other_input(n, name)
        v = idx.const(other) if other else None
        if v is None or v.dtype != dtype or v.ndim < 1 or v.shape[-1] != d or any(s != 1 for s in v.shape[:-1]):
            return None
        return v.reshape(d)

    out, gamma, beta, absorbed = node.outputs[0], np.ones(d, dtype), None, []
    nxt = idx.only_consumer(out)
    if is_op(nxt, "Mul") and last_axis_const(nxt, out) is not None:
        gamma, out, absorbed = last_axis_const(nxt, out), nxt.outputs[0], absorbed + [nxt]
        nxt = idx.only_consumer(out)
    if is_op(nxt, "Add") and last_axis_const(nxt, out) is not None:
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
