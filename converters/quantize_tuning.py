"""Repairs that make a quantized graph closer to the float one: SmoothQuant-style rebalancing
before calibration, and bias correction after quantizing.

* :func:`smooth_matmuls` (Xiao et al., 2023, SmoothQuant): a MatMul's per-tensor activation scale
  is set by its loudest input channel, so channels of a LayerNorm output with outliers leave the
  others a few int8 levels. Dividing channel c of the activation by ``s_c`` and multiplying row c
  of the weight by ``s_c`` changes nothing in float; with
  ``s_c = max|X_c|^alpha / max|W_c|^(1 - alpha)`` activation and weight ranges meet halfway.
  The division is folded into the affine part of the LayerNorm before (``gamma``, ``beta``:
  either a LayerNormalization node or the Mul/Add pair a decomposed one ends with), so the
  rebalanced graph has no extra op.
* :func:`correct_bias` (empirical bias correction, as in Nagel et al., 2019 / AIMET): rounding
  weights and activations shifts each output channel's mean; the shift is measured on the
  calibration feeds (float graph vs quantized graph) and subtracted from the layer's bias, one
  layer at a time in graph order, because correcting the early layers changes the shift the
  later ones see.

Both need per-channel statistics of a few tensors over the calibration feeds, collected in one
pass on the cpu backend by :func:`channel_stats` (reductions added to a copy of the graph; only
vectors come back).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from edgeinfer.graph import Graph, Node, ValueInfo


# ----------------------------------------------------------------------------- statistics
def channel_stats(graph: Graph, specs: Mapping[str, tuple[str, int]], feeds: Iterable[Mapping[str, np.ndarray]],
                  progress: Callable[[int, int | None], None] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per channel of each tensor: ``amax`` (max |x|) and ``mean`` over every feed.

    ``specs`` maps a tensor to where its channels are: ``("first", C)`` for axis 1 (NCHW convs)
    or ``("last", C)`` for the last axis (MatMul activations), C being the channel count.
    """
    from edgeinfer.session import Session

    probe = graph.copy()
    outs: dict[str, tuple[str, str, str]] = {}
    for t, (where, c) in specs.items():
        shape = probe.unique_name(t + "_stat_shape")
        probe.constants[shape] = np.array([0, c, -1] if where == "first" else [-1, c], np.int64)
        axes = probe.unique_name(t + "_stat_axes")
        probe.constants[axes] = np.array([0, 2] if where == "first" else [0], np.int64)
        flat, ab = probe.unique_name(t + "_stat_flat"), probe.unique_name(t + "_stat_abs")
        mx, sm, size = (probe.unique_name(t + s) for s in ("_stat_amax", "_stat_sum", "_stat_size"))
        probe.nodes += [Node("Reshape", (t, shape), (flat,)), Node("Abs", (flat,), (ab,)),
                        Node("ReduceMax", (ab, axes), (mx,), {"keepdims": 0}),
                        Node("ReduceSum", (flat, axes), (sm,), {"keepdims": 0}),
                        Node("Size", (t,), (size,))]
        outs[t] = (mx, sm, size)
    probe.outputs = [ValueInfo(n, "float32" if k < 2 else "int64", None) for o in outs.values() for k, n in enumerate(o)]
    sess = Session(probe, threads=None)
    acc: dict[str, list] = {t: [None, None, 0] for t in specs}
    total = len(feeds) if hasattr(feeds, "__len__") else None
    for k, feed in enumerate(feeds, 1):
        res = sess.run(dict(feed))
        for t, (mx, sm, size) in outs.items():
            a = acc[t]
            amax, s = np.asarray(res[mx], np.float64), np.asarray(res[sm], np.float64)
            a[0] = amax if a[0] is None else np.maximum(a[0], amax)
            a[1] = s if a[1] is None else a[1] + s
            a[2] += int(res[size]) // specs[t][1]
        if progress is not None:
            progress(k, total)
    return {t: {"amax": a[0].astype(np.float32), "mean": (a[1] / max(a[2], 1)).astype(np.float32)}
            for t, a in acc.items() if a[0] is not None}


# ----------------------------------------------------------------------------- SmoothQuant
@dataclass
class _Smoothable:
    tensor: str  # the LayerNorm output every consumer MatMul reads
    gamma: str  # constant names of the affine part
    beta: str | None
    norm: Node | None  # a LayerNormalization node, or None for the Mul/Add form
    scale_node: Node | None
    bias_node: Node | None
    matmuls: list[Node]


def smoothable(graph: Graph) -> list[_Smoothable]:
    """LayerNorm outputs read only by MatMuls with a constant 2-D weight (see the module doc)."""
    prod, cons = graph.producers(), graph.consumers()
    outputs = set(graph.output_names)
    found: list[_Smoothable] = []
    for t, users in cons.items():
        if t in outputs or not users or t in graph.constants:
            continue
        if not all(u.op_type == "MatMul" and not u.domain and u.inputs[0] == t and len(u.inputs) > 1
                   and u.inputs[1] in graph.constants and graph.constants[u.inputs[1]].ndim == 2
                   and graph.constants[u.inputs[1]].dtype == np.float32 for u in users):
            continue
        c = graph.constants[users[0].inputs[1]].shape[0]
        p = prod.get(t)
        if p is None or p.domain:
            continue
        if p.op_type == "LayerNormalization" and len(p.inputs) > 1 and p.inputs[1] in graph.constants \
                and int(p.attrs.get("axis", -1)) == -1 and len(p.outputs) == 1:
            beta = p.inputs[2] if len(p.inputs) > 2 and p.inputs[2] else None
            if _vector(graph, p.inputs[1], c) and (beta is None or _vector(graph, beta, c)):
                found.append(_Smoothable(t, p.inputs[1], beta, p, None, None, users))
            continue
        if p.op_type == "Add":  # ... Mul(x, gamma) -> Add(., beta)
            beta_in = [i for i in p.inputs if i in graph.constants]
            other = [i for i in p.inputs if i not in graph.constants]
            if len(beta_in) != 1 or len(other) != 1 or not _vector(graph, beta_in[0], c):
                continue
            m = prod.get(other[0])
            if m is None or m.op_type != "Mul" or m.domain or len(cons.get(other[0], [])) != 1 or other[0] in outputs:
                continue
            gamma_in = [i for i in m.inputs if i in graph.constants]
            if len(gamma_in) != 1 or len([i for i in m.inputs if i not in graph.constants]) != 1 \
                    or not _vector(graph, gamma_in[0], c):
                continue
            found.append(_Smoothable(t, gamma_in[0], beta_in[0], None, m, p, users))
    return found


def _vector(graph: Graph, name: str, c: int) -> bool:
    """A float constant of c values along the last axis (shape (c,) or (1, ..., c))."""
    v = graph.constants.get(name)
    return v is not None and v.dtype == np.float32 and v.size == c and v.ndim >= 1 and v.shape[-1] == c


def smooth_matmuls(graph: Graph, feeds: Iterable[Mapping[str, np.ndarray]], *, alpha: float = 0.5,
                   progress: Callable[[int, int | None], None] | None = None) -> tuple[Graph, int]:
    """SmoothQuant on every :func:`smoothable` LayerNorm -> MatMul site; returns (graph, sites)."""
    sites = smoothable(graph)
    if not sites:
        return graph, 0
    specs = {s.tensor: ("last", graph.constants[s.matmuls[0].inputs[1]].shape[0]) for s in sites}
    stats = channel_stats(graph, specs, feeds, progress)
    g = graph.copy()
    done = 0
    replace: dict[int, Node] = {}
    for site in sites:
        a = stats.get(site.tensor, {}).get("amax")
        if a is None or not np.all(np.isfinite(a)) or a.max() <= 0:
            continue
        w = np.max([np.abs(g.constants[m.inputs[1]]).max(axis=1) for m in site.matmuls], axis=0)
        s = np.power(np.maximum(a, 1e-12), alpha) / np.power(np.maximum(w, 1e-12), 1 - alpha)
        s = np.where((a > 0) & (w > 0) & np.isfinite(s), np.clip(s, 1e-3, 1e3), 1.0).astype(np.float32)

        def rescaled(name: str, factor: np.ndarray) -> str:
            new = g.unique_name(name + "_smoothed")
            v = g.constants[name]
            g.constants[new] = (v * factor.reshape(v.shape) if factor.size == v.size else v * factor).astype(np.float32)
            return new

        swap = {site.gamma: rescaled(site.gamma, 1 / s)}
        if site.beta:
            swap[site.beta] = rescaled(site.beta, 1 / s)
        for node in (site.norm, site.scale_node, site.bias_node):
            if node is not None:
                replace[id(node)] = node.replace(inputs=tuple(swap.get(i, i) for i in node.inputs))
        for m in site.matmuls:
            ins = list(m.inputs)
            ins[1] = rescaled(m.inputs[1], s[:, None])
            replace[id(m)] = m.replace(inputs=tuple(ins))
        done += 1
    g.nodes = [replace.get(id(n), n) for n in g.nodes]
    g.remove_unused()
    return g, done


# ----------------------------------------------------------------------------- bias correction
def _corrections(prepared: Graph, q: Graph) -> dict[str, tuple[Node, str, int]]:
    """Quantized Conv/Gemm nodes of ``q`` whose bias is an int32 constant read through
    DequantizeLinear, other than those writing a graph output: output tensor -> (node, that
    int32 constant's name, channel count)."""
    prod = q.producers()
    out: dict[str, tuple[Node, str, int]] = {}
    float_outputs = {o for n in prepared.nodes for o in n.outputs}
    graph_outputs = set(q.output_names)
    for n in q.nodes:
        if n.outputs and n.outputs[0] in graph_outputs:
            continue  # a head's per-class offsets from a few batches would move decisions, not errors
        if n.domain or n.op_type not in ("Conv", "Gemm") or len(n.inputs) < 3 or not n.inputs[2]:
            continue
        dq = prod.get(n.inputs[2])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.inputs[0] not in q.constants:
            continue
        b = q.constants[dq.inputs[0]]
        if b.dtype != np.int32 or b.ndim != 1 or n.outputs[0] not in float_outputs:
            continue
        if n.op_type == "Gemm" and (int(n.attrs.get("transA", 0)) or float(n.attrs.get("beta", 1.0)) != 1.0):
            continue
        out[n.outputs[0]] = (n, dq.inputs[0], b.size)
    return out


def correct_bias(prepared: Graph, q: Graph, feeds: list[Mapping[str, np.ndarray]], *, batches: int = 4,
                 progress: Callable[[int, int | None], None] | None = None) -> tuple[Graph, int]:
    """Empirical bias correction of ``q`` (the quantized form of ``prepared``; both keep each
    layer's output name); returns (corrected copy, layers corrected).

    Layers are corrected one at a time in graph order, each measured (on the first ``batches``
    feeds) after the ones before it were corrected: correcting them all from one measurement
    over-corrects, since a layer's shift includes what its inputs passed on (tried on PP-OCRv4
    rec: it then reads nothing). A correction the int32 bias cannot hold (a dead channel whose
    bias scale is ~1e-36) is left out."""
    targets = _corrections(prepared, q)
    if not targets:
        return q, 0
    feeds = list(feeds)[:max(1, batches)]
    specs = {t: ("first" if n.op_type == "Conv" else "last", c) for t, (n, _, c) in targets.items()}
    ref = channel_stats(prepared, specs, feeds)
    g = q.copy()
    prod = g.producers()
    order = [o for n in g.nodes for o in n.outputs if o in targets]
    for k, t in enumerate(order, 1):
        n, bias_name, c = targets[t]
        got = channel_stats(g, {t: specs[t]}, feeds)
        if t in ref and t in got:
            shift = got[t]["mean"].astype(np.float64) - ref[t]["mean"]
            scale = np.asarray(g.constants[prod[n.inputs[2]].inputs[1]], np.float64).reshape(-1)
            step = np.round(shift / scale)
            b = g.constants[bias_name].astype(np.int64) - np.where(np.abs(step) < 2**30, step, 0).astype(np.int64)
            g.constants[bias_name] = np.clip(b, -2**31, 2**31 - 1).astype(np.int32)
        if progress is not None:
            progress(k, len(order))
    return g, len(targets)
