"""Graph rewrites the cpu backend applies at compile time, after constant folding.

Each pass takes a graph whose constants are final (folded) and edits a copy, returning it.
They only fire when the result is exactly equivalent for the shapes being compiled:

* :func:`fold_batch_norm` - Conv followed by inference BatchNormalization becomes one Conv
  with rescaled weights and bias.
* :func:`fuse_conv_activation` - Conv/Gemm [+ residual Add] + activation becomes one
  ``edgeinfer::FusedConv``/``FusedGemm`` node, whose kernel applies bias, residual and
  activation in place on the GEMM output.
* :func:`remove_identities` - Identity and inference Dropout disappear.

These live in ``edgeinfer`` (not ``converters``) because the runtime needs them and must not
depend on the converters package.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, Node, TensorType
from .kernels.registry import is_supported

FUSED_DOMAIN = "edgeinfer"


def _use_counts(graph: Graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in graph.nodes:
        for i in n.inputs:
            if i:
                counts[i] = counts.get(i, 0) + 1
        for sub in n.subgraphs():
            for sn in sub.walk_nodes():
                for i in sn.inputs:
                    counts[i] = counts.get(i, 0) + 1
    for v in graph.outputs:
        counts[v.name] = counts.get(v.name, 0) + 1
    return counts


def _single_consumer(graph: Graph) -> dict[str, Node]:
    """Tensor name -> its only consumer node, for tensors read exactly once and not outputs."""
    counts = _use_counts(graph)
    out: dict[str, Node] = {}
    for n in graph.nodes:
        for i in n.inputs:
            if i and counts.get(i) == 1:
                out[i] = n
    return out


def _rewrite(graph: Graph, replace: dict[int, Node | None]) -> Graph:
    """Copy of graph with nodes replaced (by identity of the old node) or dropped (None)."""
    g = graph.copy()
    nodes = []
    for n in graph.nodes:
        if id(n) in replace:
            new = replace[id(n)]
            if new is not None:
                nodes.append(new)
        else:
            nodes.append(n)
    g.nodes = nodes
    return g


def fold_batch_norm(graph: Graph) -> Graph:
    """Fold inference BatchNormalization into the Conv that feeds it."""
    consumer = _single_consumer(graph)
    c = graph.constants
    replace: dict[int, Node | None] = {}
    for conv in graph.nodes:
        if conv.op_type != "Conv" or conv.domain or len(conv.outputs) != 1:
            continue
        bn = consumer.get(conv.outputs[0])
        if bn is None or bn.op_type != "BatchNormalization" or bn.domain or id(bn) in replace:
            continue
        if bn.attrs.get("training_mode", 0) or len([o for o in bn.outputs if o]) != 1:
            continue
        w_name = conv.inputs[1]
        params = bn.inputs[1:5]
        if w_name not in c or not all(p in c for p in params):
            continue
        b_name = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else None
        if b_name is not None and b_name not in c:
            continue
        w = c[w_name]
        if w.dtype not in (np.float32, np.float64):
            continue
        scale, bias, mean, var = (c[p].astype(np.float64) for p in params)
        eps = float(bn.attrs.get("epsilon", 1e-5))
        k = scale / np.sqrt(var + eps)
        if k.shape != (w.shape[0],):
            continue
        b = c[b_name].astype(np.float64) if b_name else np.zeros(w.shape[0])
        new_w = (w.astype(np.float64) * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        new_b = ((b - mean) * k + bias).astype(w.dtype)
        wn = graph.unique_name(w_name + "_bnfold")
        bn_ = graph.unique_name((b_name or conv.outputs[0] + "_bias") + "_bnfold")
        c = dict(c)
        c[wn], c[bn_] = new_w, new_b
        graph = graph.copy()
        graph.constants = c
        replace[id(conv)] = conv.replace(inputs=(conv.inputs[0], wn, bn_), outputs=bn.outputs[:1])
        replace[id(bn)] = None
    if not replace:
        return graph
    g = _rewrite(graph, replace)
    g.constants = c
    g.remove_unused()
    return g


# activation op -> how to read its parameters (from attrs or constant inputs)
def _activation_of(node: Node, constants: dict) -> tuple[str, list[float]] | None:
    op, a = node.op_type, node.attrs
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
    if op == "Clip":
        lo, hi = -np.inf, np.inf
        for idx in (1, 2):
            if len(node.inputs) > idx and node.inputs[idx]:
                v = constants.get(node.inputs[idx])
                if v is None or v.size != 1:
                    return None
                if idx == 1:
                    lo = float(v.reshape(()))
                else:
                    hi = float(v.reshape(()))
        return "Clip", [lo, hi]
    return None


def fuse_conv_activation(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """Conv/Gemm [+ Add residual of the same shape] [+ activation] -> FusedConv/FusedGemm."""
    consumer = _single_consumer(graph)
    replace: dict[int, Node | None] = {}
    for node in graph.nodes:
        if node.domain or node.op_type not in ("Conv", "Gemm") or id(node) in replace:
            continue
        if not is_supported("Fused" + node.op_type, FUSED_DOMAIN):
            continue
        if types.get(node.inputs[0]) is None or types[node.inputs[0]].dtype not in ("float32", "float64"):
            continue
        out = node.outputs[0]
        last = node
        residual = None
        nxt = consumer.get(out)
        if (
            node.op_type == "Conv"
            and nxt is not None
            and nxt.op_type in ("Add", "Sum")
            and not nxt.domain
            and len(nxt.inputs) == 2
            and id(nxt) not in replace
        ):
            other = nxt.inputs[1] if nxt.inputs[0] == out else nxt.inputs[0]
            if other != out and types.get(other) is not None and types[other] == types.get(out):
                residual, last = other, nxt
                nxt = consumer.get(nxt.outputs[0])
        act = None
        if nxt is not None and id(nxt) not in replace:
            act = _activation_of(nxt, graph.constants)
            if act is not None:
                last = nxt
        if last is node:
            continue
        attrs = dict(node.attrs)
        attrs["activation"], attrs["activation_params"] = act if act else ("", [])
        inputs = list(node.inputs) + [""] * (3 - len(node.inputs))
        if residual is not None:
            inputs.append(residual)
        fused = Node(
            "Fused" + node.op_type, tuple(inputs), (last.outputs[0],), attrs, name=node.name, domain=FUSED_DOMAIN
        )
        cur = consumer.get(out)
        while cur is not None and cur is not last:
            replace[id(cur)] = None
            cur = consumer.get(cur.outputs[0])
        # the fused node sits where `last` was, so the residual is already computed
        replace[id(last)] = fused
        replace[id(node)] = None
    return _rewrite(graph, replace) if replace else graph


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
