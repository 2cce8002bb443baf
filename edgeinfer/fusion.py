"""Graph rewrites that fold or fuse arithmetic into the Conv/Gemm/MatMul nodes around it, run
by :func:`edgeinfer.optimize.optimize` (see its module docstring for the order):

* :func:`fold_affine` - per-channel affine maps (BatchNormalization, Mul/Add/Sub/Div by
  constants) fold into a neighbouring Conv or merge into one ``edgeinfer::Affine`` node;
  :func:`fold_batch_norm` is the BatchNormalization-only form.
* :func:`fuse_conv_activation` - Conv/Gemm/MatMul epilogues (bias, residual, activation)
  become one ``edgeinfer::FusedConv``/``FusedGemm``/``FusedMatMul`` node.
* :func:`fuse_squeeze_excite` - the squeeze-and-excite gate becomes one node.
* :func:`use_channels_last` - depthwise convs between 1x1 convs run channels-last.

The shared index/edit toolkit lives in :mod:`edgeinfer.rewrite`.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, Node, TensorType
from .kernels.registry import is_supported
from .rewrite import (FLOAT_TYPES, FUSED_DOMAIN, Edits, Index, index_of, is_float_tensor, is_op, other_input,
                      static_shape)


# ---------------------------------------------------------------------- batch norm
def fold_batch_norm(graph: Graph) -> Graph:
    """Fold inference BatchNormalization into the Conv that feeds it."""
    idx = index_of(graph)
    c = dict(graph.constants)
    ed = Edits(graph)
    for conv in graph.nodes:
        if not is_op(conv, "Conv") or len(conv.outputs) != 1:
            continue
        bn = idx.only_consumer(conv.outputs[0])
        if not is_op(bn, "BatchNormalization") or not ed.free(bn, conv):
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


def _fold_into_conv(conv: Node, scale: np.ndarray, shift: np.ndarray, c: dict, idx: Index) -> Node | None:
    """``conv`` with its output channels mapped ``y * scale + shift`` (per channel, float64),
    its new weight and bias stored in ``c``; None when W/B are not float constants."""
    w_name = conv.inputs[1]
    b_name = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else None
    w = c.get(w_name)
    if w is None or w.dtype.type not in FLOAT_TYPES or (b_name is not None and b_name not in c):
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


# ------------------------------------------------------------------------ affine maps
_AFFINE_OPS = ("Mul", "Add", "Sub", "Div", "BatchNormalization")


def _channel_affine(node: Node, x: str, idx: Index, rank: int, channels) -> tuple[np.ndarray, np.ndarray] | None:
    """``node`` maps ``x`` by ``x * scale + shift`` with constants varying at most along axis 1
    of a rank-``rank`` tensor with ``channels`` channels: (scale, shift) as float64 arrays of
    shape (1,) or (channels,); None otherwise."""
    if node.domain or len(node.outputs) != 1:
        return None
    if node.op_type == "BatchNormalization":
        if node.inputs[0] != x or node.attrs.get("training_mode", 0) or len([o for o in node.outputs if o]) != 1:
            return None
        params = [idx.const(p) for p in node.inputs[1:5]]
        if any(p is None or p.dtype.type not in FLOAT_TYPES for p in params) or rank < 2:
            return None
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        k = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
        return k, bias - mean * k
    if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.inputs) != 2:
        return None
    other = other_input(node, x)
    v = idx.const(other) if other else None
    if v is None or v.dtype.type not in FLOAT_TYPES or v.ndim > rank:
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


def _affine_chain(start: str, idx: Index, ed: Edits, types) -> tuple[list[Node], np.ndarray, np.ndarray, str]:
    """Follow single-use per-channel affine nodes from tensor ``start``: (nodes, scale, shift,
    output) with the composed map as float64 arrays."""
    shape = static_shape(types, start)
    nodes: list[Node] = []
    scale, shift = np.ones(1), np.zeros(1)
    cur = start
    if shape is None:
        return nodes, scale, shift, cur
    rank, channels = len(shape), shape[1] if len(shape) > 1 else 1
    while True:
        nxt = idx.only_consumer(cur)
        if nxt is None or not ed.free(nxt) or not is_op(nxt, *_AFFINE_OPS):
            break
        m = _channel_affine(nxt, cur, idx, rank, channels)
        if m is None or static_shape(types, nxt.outputs[0]) != shape:
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
    idx = index_of(graph)
    ed = Edits(graph)
    c = ed.constants
    for conv in graph.nodes:
        if not is_op(conv, "Conv") or not ed.free(conv) or len(conv.outputs) != 1:
            continue
        nodes, scale, shift, out = _affine_chain(conv.outputs[0], idx, ed, types)
        if not nodes:
            continue
        folded = _fold_into_conv(conv, scale, shift, c, idx)
        if folded is not None:
            ed.rewrite(conv, folded.replace(outputs=(out,)), nodes)
    return ed.result()


def _is_pointwise_conv(conv: Node, idx: Index) -> bool:
    w = idx.const(conv.inputs[1]) if len(conv.inputs) > 1 else None
    a = conv.attrs
    return (w is not None and w.ndim >= 3 and all(k == 1 for k in w.shape[2:]) and int(a.get("group", 1)) == 1
            and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID") and not any(a.get("pads") or ())
            and all(d == 1 for d in (a.get("dilations") or [1])))


def _fold_affine_before_pointwise(graph: Graph, types) -> Graph:
    # conv1x1(x * s + t) = conv1x1 with W * s (per input channel) and bias b + W @ t
    idx = index_of(graph)
    ed = Edits(graph)
    c = ed.constants
    for conv in graph.nodes:
        if not is_op(conv, "Conv") or not ed.free(conv) or not _is_pointwise_conv(conv, idx):
            continue
        w = c[conv.inputs[1]]
        b_name = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else None
        if w.dtype.type not in FLOAT_TYPES or (b_name is not None and b_name not in c):
            continue
        x_shape = static_shape(types, conv.inputs[0])
        if x_shape is None:
            continue
        scale, shift, dropped, src = np.ones(1), np.zeros(1), [], conv.inputs[0]
        while True:
            prod = idx.producer.get(src)
            if prod is None or idx.uses.get(src) != 1 or not ed.free(prod) or not is_op(prod, *_AFFINE_OPS):
                break
            x = prod.inputs[0] if prod.op_type == "BatchNormalization" else next(
                (i for i in prod.inputs if idx.const(i) is None), None)
            if x is None or static_shape(types, x) != x_shape:
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
    idx = index_of(graph)
    ed = Edits(graph)
    done: set[int] = set()
    for node in graph.nodes:
        if id(node) in done or not ed.free(node) or not is_op(node, *_AFFINE_OPS):
            continue
        x = node.inputs[0] if node.op_type == "BatchNormalization" else next(
            (i for i in node.inputs if i and idx.const(i) is None), None)
        shape = static_shape(types, x) if x else None
        if shape is None or not is_float_tensor(types, x) or static_shape(types, node.outputs[0]) != shape:
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
    idx = index_of(graph)
    ed = Edits(graph)
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
                is_op(r, "Conv") and r.inputs[0] == node.outputs[0] and _is_pointwise_conv(r, idx)
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
    idx = index_of(graph)
    ed = Edits(graph)
    for node in graph.nodes:
        if node.domain or node.op_type not in ("Conv", "Gemm", "MatMul") or not ed.free(node):
            continue
        if not is_supported("Fused" + node.op_type, FUSED_DOMAIN) or not is_float_tensor(types, node.inputs[0]):
            continue
        out = node.outputs[0]
        last, extra, chain = node, None, []
        nxt = idx.only_consumer(out)
        if is_op(nxt, "Add", "Sum") and len(nxt.inputs) == 2 and ed.free(nxt):
            other = other_input(nxt, out)
            if node.op_type == "Conv" and other and types.get(other) is not None and types[other] == types.get(out):
                extra = other  # a residual of the output's shape
            elif node.op_type == "MatMul" and other:
                bias = idx.const(other)
                shape = static_shape(types, out)
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
    idx = index_of(graph)
    ed = Edits(graph)
    for mul in graph.nodes:
        if not is_op(mul, "Mul") or len(mul.inputs) != 2 or not ed.free(mul):
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


def _se_conv(idx: Index, name: str) -> tuple[Node, tuple[str, list]] | None:
    """The single-use 1x1 Conv/FusedConv (no residual) producing ``name``, and its activation."""
    conv = idx.producer.get(name)
    if conv is None or idx.uses.get(name) != 1 or len(conv.outputs) != 1:
        return None
    fused = conv.domain == FUSED_DOMAIN and conv.op_type == "FusedConv"
    if not (fused or is_op(conv, "Conv")) or not _is_pointwise_conv(conv, idx):
        return None
    if len(conv.inputs) > 3 and conv.inputs[3]:
        return None  # a residual
    if len(conv.inputs) > 2 and conv.inputs[2] and idx.const(conv.inputs[2]) is None:
        return None
    act = (conv.attrs.get("activation", ""), list(conv.attrs.get("activation_params", []))) if fused else ("", [])
    return conv, act


def _squeeze_excite_chain(idx: Index, x: str, gate: str, types):
    shape = static_shape(types, x)
    if (shape is None or len(shape) != 4 or not is_float_tensor(types, x)
            or static_shape(types, gate) != shape[:2] + (1, 1)):
        return None
    second = _se_conv(idx, gate)
    first = _se_conv(idx, second[0].inputs[0]) if second else None
    pool = idx.producer.get(first[0].inputs[0]) if first else None
    if (pool is None or not is_op(pool, "GlobalAveragePool") or pool.inputs[0] != x
            or idx.uses.get(pool.outputs[0]) != 1):
        return None
    (c1, a1), (c2, a2) = first, second
    inputs = tuple(c1.inputs[1:3]) + ("",) * (3 - len(c1.inputs[:3])) + tuple(c2.inputs[1:3]) + ("",) * (
        3 - len(c2.inputs[:3]))
    attrs = {"activation": a1[0], "activation_params": a1[1], "gate_activation": a2[0], "gate_activation_params": a2[1]}
    return [pool, c1, c2], inputs, attrs


# ------------------------------------------------------------------------ channels-last
def _static_conv_parts(conv: Node, idx: Index, types):
    """(NCHW input shape, weight) of a Conv/FusedConv with static shapes, constant float
    weights and layouts not yet set to something else, else None."""
    if not (is_op(conv, "Conv") or (conv.domain == FUSED_DOMAIN and conv.op_type == "FusedConv")):
        return None
    x = static_shape(types, conv.inputs[0])
    w = idx.const(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if x is None or len(x) != 4 or w is None or w.ndim != 4 or types[conv.inputs[0]].dtype not in ("float32", "float64"):
        return None
    if len(conv.inputs) > 2 and conv.inputs[2] and idx.const(conv.inputs[2]) is None:
        return None
    return x, w


def _is_depthwise(conv: Node, idx: Index, types) -> bool:
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


def _is_plain_pointwise(conv: Node, idx: Index, types) -> bool:
    return (_static_conv_parts(conv, idx, types) is not None and _is_pointwise_conv(conv, idx)
            and all(int(s) == 1 for s in (conv.attrs.get("strides") or [1, 1])))


def _layout_neutral(node: Node, idx: Index) -> bool:
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
    idx = index_of(graph)
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
