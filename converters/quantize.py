"""Quantization of an IR graph: static int8 QDQ with calibration on the cpu backend, and the
modes that need no calibration (dynamic int8, weight-only int8/int4, fp16/bf16 storage).

The result is an ordinary IR graph with ``QuantizeLinear``/``DequantizeLinear`` pairs, which the
cpu backend runs, the ONNX exporter writes as QDQ for ONNX Runtime and OpenVINO to fuse into
integer kernels, and the TFLite exporter turns into int8 tensors where it can. It carries
``metadata["edgeinfer.quantization"]`` (settings, and per layer its precision and why it is float).

Static (:func:`quantize` with ``mode="static"``):

1. **Preparation, no hand work needed** (:func:`prepare`): the importer has already put every
   node in the latest opset form. Constants are folded (Constant nodes and shape arithmetic),
   Identity and Dropout go, and BatchNormalization is folded into the convolution before it, so
   the quantized weights are the ones that run.
2. **Rebalancing, exact in float**: cross-layer equalization of conv pairs
   (:func:`equalize_channels`) and SmoothQuant for LayerNorm -> MatMul
   (:mod:`.quantize_tuning`), so one per-tensor scale fits every channel.
3. **Calibration** (:func:`calibrate`): one pass on the cpu backend over the caller's feeds,
   with a ReduceMin/ReduceMax per observed tensor (``minmax``) or growing histograms
   (``percentile``, ``mse``, ``entropy``; :mod:`.calibration`).
4. **Rewrite** (:func:`quantize_static`): for every Conv, Gemm and MatMul,
   * the float activation input gets a QuantizeLinear -> DequantizeLinear pair (one per tensor,
     shared by its consumers), uint8 asymmetric by default, with zero exactly representable;
   * a constant weight becomes int8 with one symmetric scale per output channel, read through a
     per-axis DequantizeLinear;
   * a constant bias becomes int32 with scale ``s_x * s_w`` (per channel), as integer kernels
     add it.
   Everything else (softmax, LayerNorm, activations, the residual adds) stays float.
5. Optionally **bias correction** (:func:`.quantize_tuning.correct_bias`) and the
   **accuracy-aware** search that returns the most sensitive layers to float until the user's
   metric is within ``max_drop`` (see :func:`quantize`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from edgeinfer.errors import InputError
from edgeinfer.graph import Graph, Node, ValueInfo

METHODS = ("minmax", "percentile", "mse", "entropy")
ACTIVATIONS = ("uint8", "int8", "int16", "auto")
# "auto": a range this close to symmetric about 0 is quantized int8 symmetric (zero point 0)
SYMMETRIC_RATIO = 0.8
_TARGETS = ("Conv", "Gemm", "MatMul")


@dataclass
class Range:
    """Observed extremes of one tensor over the calibration set."""

    lo: float
    hi: float
    batches: int = 0


# ----------------------------------------------------------------------------- preparation
def prepare(graph: Graph) -> Graph:
    """The graph as it will be quantized: constants folded, Identity/Dropout removed and
    BatchNormalization folded into the Conv it follows (the graph passed in is not changed)."""
    from edgeinfer import optimize as opt
    from edgeinfer.graph import outer_reads
    from edgeinfer.shape_inference import propagate

    g = opt.remove_identities(graph.copy())
    _, values = propagate(g, fold=True)
    keep = [n for n in g.nodes if not all((not o) or o in values for o in n.outputs)]
    needed = {i for n in keep for i in n.inputs if i} | set(g.output_names)
    needed |= {name for n in keep if n.has_subgraphs for name in outer_reads(n)}  # If/Loop bodies read outer constants
    g.nodes = keep
    g.constants = {k: v for k, v in values.items() if k in needed and k not in g.input_names}
    g = opt.fold_batch_norm(g)
    g.remove_unused()
    return g


# ----------------------------------------------------------------------------- equalization
_HOMOGENEOUS = ("Relu", "LeakyRelu", "MaxPool")  # f(x / s) == f(x) / s for every s > 0, per channel


@dataclass
class _Pair:
    """A Conv whose output channels reach another Conv's input only through ops that commute
    with a positive per-channel scale: scaling channel c of the first conv's weights and bias by
    1/s_c and the second conv's input channel c by s_c changes nothing in float."""

    producer: Node
    consumer: Node
    tensor: str  # the consumer's input, whose per-tensor quantization range is to be evened out
    depthwise: bool


def equalization_pairs(graph: Graph) -> list[_Pair]:
    """Every (Conv, Conv) pair that :func:`equalize_channels` can rebalance (see :class:`_Pair`)."""
    prod, cons = graph.producers(), graph.consumers()
    outputs = set(graph.output_names)
    pairs: list[_Pair] = []
    for n in graph.nodes:
        if n.domain or n.op_type != "Conv" or len(n.inputs) < 2 or n.inputs[1] not in graph.constants:
            continue
        x = n.inputs[0]
        t, ok = x, True
        p = prod.get(t)
        while p is not None and not p.domain and p.op_type in _HOMOGENEOUS:
            if len(cons.get(t, [])) != 1 or t in outputs or (p.op_type == "MaxPool" and len(p.outputs) > 1):
                ok = False
                break
            t = p.inputs[0]
            p = prod.get(t)
        if not ok or p is None or p.domain or p.op_type != "Conv" or len(cons.get(t, [])) != 1 or t in outputs:
            continue
        if len(cons.get(x, [])) != 1 or x in outputs:
            continue
        w1, w2 = graph.constants.get(p.inputs[1]) if len(p.inputs) > 1 else None, graph.constants[n.inputs[1]]
        b1 = p.inputs[2] if len(p.inputs) > 2 else ""
        if w1 is None or w1.dtype != np.float32 or w2.dtype != np.float32 or w2.ndim < 3:
            continue
        if b1 and b1 not in graph.constants:
            continue
        group = int(n.attrs.get("group", 1))
        if w2.shape[1] * group != w1.shape[0] or w2.shape[0] % group:
            continue
        pairs.append(_Pair(p, n, x, depthwise=w2.shape[1] == 1 and group == w1.shape[0]))
    return pairs


def equalize_channels(graph: Graph, feeds: Iterable[Mapping[str, np.ndarray]], *,
             progress: Callable[[int, int | None], None] | None = None) -> tuple[Graph, int]:
    """Cross-layer equalization (Nagel et al., 2019, with activation ranges): for every
    :func:`equalization_pairs` pair, rescale the channels of the tensor between them so that one
    per-tensor activation scale serves all of them.

    A per-tensor int8 range set by one loud channel leaves quiet channels a few levels (PP-OCRv4
    rec's stem: 16 channels spanning 0.01..15). Per-channel weight scales absorb the rescaling on
    both sides when the consumer is depthwise, so the channels are flattened completely;
    a dense consumer shares each input channel between all its filters, so the scale is split
    evenly between activation and weight ranges (s_c = sqrt(a_c / w_c), as in SmoothQuant with
    alpha 0.5). Returns (new graph, pairs rebalanced); float results are unchanged up to rounding.
    """
    pairs = equalization_pairs(graph)
    if not pairs:
        return graph, 0
    from .quantize_tuning import channel_stats

    # the consumer's input and the producer's own output (different when a ReLU sits between)
    specs = {t: ("first", graph.constants[p.consumer.inputs[1]].shape[1] * int(p.consumer.attrs.get("group", 1)))
             for p in pairs for t in (p.tensor, p.producer.outputs[0])}
    stats = channel_stats(graph, specs, feeds, progress)
    amax = {t: v["amax"] for t, v in stats.items()}
    g = graph.copy()
    done = 0
    for pair in pairs:
        a = amax[pair.tensor]
        w2 = g.constants[pair.consumer.inputs[1]]
        group = int(pair.consumer.attrs.get("group", 1))
        cin = w2.shape[1] * group
        if a.shape != (cin,) or not np.all(np.isfinite(a)) or a.max() <= 0:
            continue
        if pair.depthwise:
            s = a / a.max()
        else:
            wc = np.abs(w2).max(axis=tuple(i for i in range(w2.ndim) if i != 1))
            wc = np.tile(wc, group) if group > 1 else wc
            s = np.sqrt(a / np.maximum(wc, 1e-12))
            s = s / np.exp(np.mean(np.log(np.maximum(s, 1e-12))))  # geometric mean 1: sizes stay put
        s = np.where((a > 0) & np.isfinite(s), np.clip(s, 1e-4, 1e4), 1.0)
        # the producer's own output (before a ReLU, say) is scaled by 1/s too: a nearly dead
        # channel must not blow its negative values past the tensor's range (that output may be
        # quantized as well)
        pre = amax.get(pair.producer.outputs[0])
        if pre is not None and pre.shape == s.shape and np.all(np.isfinite(pre)) and pre.max() > 0:
            s = np.maximum(s, pre / pre.max())
        s = s.astype(np.float32)
        p = pair.producer
        w1n = g.unique_name(p.inputs[1] + "_equalized")
        g.constants[w1n] = (g.constants[p.inputs[1]] / s.reshape((-1,) + (1,) * (g.constants[p.inputs[1]].ndim - 1))
                            ).astype(np.float32)
        ins = list(p.inputs)
        ins[1] = w1n
        if len(ins) > 2 and ins[2]:
            bn = g.unique_name(ins[2] + "_equalized")
            g.constants[bn] = (g.constants[ins[2]] / s).astype(np.float32)
            ins[2] = bn
        w2n = g.unique_name(pair.consumer.inputs[1] + "_equalized")
        if pair.depthwise:
            mult = w2.shape[0] // cin
            scale2 = np.repeat(s, mult).reshape((-1,) + (1,) * (w2.ndim - 1))
        else:
            per_group = s.reshape(group, -1)  # input channels of each group
            out_per_group = w2.shape[0] // group
            scale2 = np.repeat(per_group, out_per_group, axis=0).reshape(w2.shape[0], w2.shape[1], *(1,) * (w2.ndim - 2))
        g.constants[w2n] = (w2 * scale2).astype(np.float32)
        cins = list(pair.consumer.inputs)
        cins[1] = w2n
        g.nodes = [p.replace(inputs=tuple(ins)) if m is p else
                   pair.consumer.replace(inputs=tuple(cins)) if m is pair.consumer else m for m in g.nodes]
        done += 1
    g.remove_unused()
    return g, done


# ----------------------------------------------------------------------------- calibration
def observed_tensors(graph: Graph, outputs: bool = False) -> list[str]:
    """The float activations quantize_static puts a QuantizeLinear on: the non-constant inputs of
    every Conv, Gemm and MatMul, and with ``outputs`` their outputs that are not graph outputs."""
    out: list[str] = []
    head = _head_tensors(graph) if outputs else set()
    cons = graph.consumers() if outputs else {}
    for n in graph.nodes:
        if n.domain or n.op_type not in _TARGETS:
            continue
        ins = list(n.inputs[:2])
        point = _output_point(graph, n, cons) if outputs else None
        if point and point not in head:
            ins.append(point)
        for k, name in enumerate(ins):
            if name and name not in graph.constants and name not in out:
                if n.op_type == "Conv" and k == 1 and name == n.inputs[1]:
                    continue  # a run-time conv weight stays float
                out.append(name)
    return out


_FUSED_ACTIVATIONS = ("Relu", "Clip")  # integer kernels apply these before requantizing


def _output_point(graph: Graph, n: Node, consumers: Mapping[str, list[Node]]) -> str | None:
    """Where a layer's output is quantized: after a Relu or Clip that is its only reader (as
    integer kernels fuse them, and a ReLU's negative half would waste the int8 range: an SE
    block's squeeze conv spans [-3.9, 0.002] before its ReLU), else the output itself."""
    if not n.outputs or not n.outputs[0]:
        return None
    y = n.outputs[0]
    users = consumers.get(y, [])
    if len(users) == 1 and not users[0].domain and users[0].op_type in _FUSED_ACTIVATIONS \
            and y not in graph.output_names and all(i in graph.constants for i in users[0].inputs[1:] if i):
        a = users[0]
        if a.op_type == "Clip":  # the Q range always holds 0: exact only if the bounds do too
            lo = float(graph.constants[a.inputs[1]]) if len(a.inputs) > 1 and a.inputs[1] else -np.inf
            hi = float(graph.constants[a.inputs[2]]) if len(a.inputs) > 2 and a.inputs[2] else np.inf
            if not lo <= 0 <= hi:
                return y
        return a.outputs[0]
    return y


def _head_tensors(graph: Graph) -> set[str]:
    """Tensors from which a graph output is reached without passing another Conv/Gemm/MatMul:
    the head's logits and what follows them. Their outputs are not quantized: a calibrated
    range clips exactly the rare large logits that decide the answer (PP-OCRv4 rec with mse
    ranges then reads 7 % of its characters)."""
    prod = graph.producers()
    head, todo = set(), list(graph.output_names)
    while todo:
        t = todo.pop()
        if t in head:
            continue
        head.add(t)
        p = prod.get(t)
        if p is not None and not (not p.domain and p.op_type in _TARGETS):
            todo.extend(i for i in p.inputs if i and i not in graph.constants)
    return head


def calibrate(graph: Graph, feeds: Iterable[Mapping[str, np.ndarray]], *, tensors: list[str] | None = None,
              method: str = "minmax", percentile: float = 99.99,
              progress: Callable[[int, int | None], None] | None = None) -> dict[str, Range]:
    """The range to quantize of each of ``tensors`` (default :func:`observed_tensors`), from one
    pass over the feed dicts on the cpu backend.

    ``minmax`` adds a ReduceMin and a ReduceMax per tensor to a copy of the graph (only scalars
    come back); ``percentile``, ``mse`` and ``entropy`` read the tensors into growing histograms
    and choose a clipped range (:mod:`.calibration`).

    Raises:
        InputError: an unknown method, no feeds, or a tensor name the graph does not have.
    """
    from edgeinfer.session import Session

    if method not in METHODS:
        raise InputError(f"calibration method {method!r} is not available; methods: {list(METHODS)}")
    tensors = observed_tensors(graph) if tensors is None else list(tensors)
    known = {o for n in graph.nodes for o in n.outputs} | set(graph.input_names)
    missing = [t for t in tensors if t not in known]
    if missing:
        raise InputError(f"calibrate: the graph has no tensor(s) {missing[:5]}")
    if method != "minmax":
        return _calibrate_histograms(graph, feeds, tensors, method, percentile, progress)
    probe = graph.copy()
    outs: list[tuple[str, str, str]] = []
    for t in tensors:
        lo, hi = probe.unique_name(t + "_calib_min"), None
        probe.nodes.append(Node("ReduceMin", (t,), (lo,), {"keepdims": 0}))
        hi = probe.unique_name(t + "_calib_max")
        probe.nodes.append(Node("ReduceMax", (t,), (hi,), {"keepdims": 0}))
        outs.append((t, lo, hi))
    probe.outputs = [ValueInfo(name, "float32", None) for _, lo, hi in outs for name in (lo, hi)]
    sess = Session(probe, threads=None)
    ranges: dict[str, Range] = {}
    total = len(feeds) if hasattr(feeds, "__len__") else None
    count = 0
    for feed in feeds:
        res = sess.run(dict(feed))
        for t, lo, hi in outs:
            a, b = float(res[lo]), float(res[hi])
            r = ranges.get(t)
            if r is None:
                ranges[t] = Range(a, b, 1)
            else:
                r.lo, r.hi, r.batches = min(r.lo, a), max(r.hi, b), r.batches + 1
        count += 1
        if progress is not None:
            progress(count, total)
    if not count:
        raise InputError("calibrate: no calibration feeds were given")
    return ranges


def _calibrate_histograms(graph, feeds, tensors, method, percentile, progress) -> dict[str, Range]:
    from edgeinfer.session import Session

    from .calibration import Histogram, choose

    probe = graph.copy()
    probe.outputs = [ValueInfo(t, "float32", None) for t in tensors]
    sess = Session(probe, threads=None)
    hists = {t: Histogram() for t in tensors}
    total = len(feeds) if hasattr(feeds, "__len__") else None
    count = 0
    for feed in feeds:
        res = sess.run(dict(feed))
        for t in tensors:
            hists[t].add(res[t])
        count += 1
        if progress is not None:
            progress(count, total)
    if not count:
        raise InputError("calibrate: no calibration feeds were given")
    return {t: Range(*choose(h, method, percentile), count) for t, h in hists.items()}


# ----------------------------------------------------------------------------- rewrite
def activation_params(r: Range, dtype: str = "uint8") -> tuple[np.float32, np.ndarray]:
    """Scale and zero point of a per-tensor activation range; the range always holds 0, so
    zero (padding, ReLU's floor) is exact.

    ``dtype="auto"`` chooses per tensor: a range nearly symmetric about zero (the smaller side at
    least ``SYMMETRIC_RATIO`` of the larger) becomes int8 with zero point 0, which integer kernels
    handle without a zero-point correction term and which loses at most a fifth of a level's
    resolution; anything lopsided (a ReLU or HardSwish output) stays uint8 asymmetric, where a
    symmetric grid would waste half its levels on values that never occur."""
    lo, hi = min(r.lo, 0.0), max(r.hi, 0.0)
    if dtype == "auto":
        small, large = sorted((-lo, hi))
        if large > 0 and small >= SYMMETRIC_RATIO * large:
            return np.float32(large / 127.0), np.array(0, dtype=np.int8)
        dtype = "uint8"
    if dtype == "int16":  # symmetric, zero point 0: the form TFLite's 16x8 kernels and ORT's 16-bit QDQ take
        large = max(-lo, hi)
        return np.float32(large / 32767.0 if large > 0 else 1.0), np.array(0, dtype=np.int16)
    if dtype == "uint8":
        qmin, qmax, np_t = 0, 255, np.uint8
    else:
        qmin, qmax, np_t = -128, 127, np.int8
    scale = (hi - lo) / (qmax - qmin) if hi > lo else 1.0
    zp = int(round(qmin - lo / scale))
    zp = min(max(zp, qmin), qmax)
    return np.float32(scale), np.array(zp, dtype=np_t)


def weight_params(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per-channel quantization of ``w`` along ``axis``: (int8 weight, scales)."""
    w = np.asarray(w, dtype=np.float32)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    amax = np.abs(moved).max(axis=1) if moved.size else np.zeros(w.shape[axis], np.float32)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def quantize_static(graph: Graph, ranges: Mapping[str, Range], *, activations: str = "uint8",
                    per_channel: bool = True, exclude: Iterable[str] = (), outputs: bool = False) -> Graph:
    """The graph with QDQ around every Conv, Gemm and MatMul whose activations were calibrated
    (see the module doc). ``exclude`` names nodes to keep in float. ``outputs``: a layer's output
    (when calibrated and not a graph output) also goes through QuantizeLinear -> DequantizeLinear,
    the DQ -> op -> Q form ONNX Runtime fuses into QLinearConv / QLinearMatMul and the TFLite
    exporter writes as an int8 op; its readers then see the dequantized value."""
    if activations not in ACTIVATIONS:
        raise InputError(f"activations must be one of {list(ACTIVATIONS)}, got {activations!r}")
    g = graph.copy()
    skip = set(exclude)
    graph_outputs = set(g.output_names)
    qdq: dict[str, str] = {}  # float tensor -> its dequantized twin
    act_scale: dict[str, np.float32] = {}
    new_nodes: list[Node] = []

    def quantized(name: str) -> str:
        if name in qdq:
            return qdq[name]
        scale, zp = activation_params(ranges[name], activations)
        s, z = g.unique_name(name + "_scale"), g.unique_name(name + "_zero_point")
        q, dq = g.unique_name(name + "_quantized"), g.unique_name(name + "_dequantized")
        g.constants[s], g.constants[z] = np.asarray(scale, np.float32), zp
        new_nodes.append(Node("QuantizeLinear", (name, s, z), (q,), name=q))
        new_nodes.append(Node("DequantizeLinear", (q, s, z), (dq,), name=dq))
        qdq[name], act_scale[name] = dq, scale
        return dq

    cons = g.consumers() if outputs else {}
    absorbed: set[str] = set()  # outputs of Relu/Clip nodes whose work a QuantizeLinear does

    def emit_output_qdq(node: Node, point: str | None) -> bool:
        """Append ``node`` then Q -> DQ writing ``point`` (its output, or the output of the Relu /
        Clip after it, which the Q's saturation then applies exactly: the Q range lies within
        the activation's bounds); False (nothing appended) when there is nothing to quantize."""
        y = node.outputs[0] if node.outputs else ""
        if not point or point not in ranges or point in graph_outputs or point in qdq:
            return False
        raw = g.unique_name(point + "_before_requantize")
        new_nodes.append(node.replace(outputs=(raw, *node.outputs[1:])))
        scale, zp = activation_params(ranges[point], activations)
        s, z = g.unique_name(point + "_scale"), g.unique_name(point + "_zero_point")
        q = g.unique_name(point + "_quantized")
        g.constants[s], g.constants[z] = np.asarray(scale, np.float32), zp
        new_nodes.append(Node("QuantizeLinear", (raw, s, z), (q,), name=q))
        new_nodes.append(Node("DequantizeLinear", (q, s, z), (point,), name=g.unique_name(point + "_dequantized")))
        qdq[point], act_scale[point] = point, scale  # already dequantized: a reader quantizes nothing again
        if point != y:
            absorbed.add(point)
        return True

    for n in g.nodes:
        target = (not n.domain and n.op_type in _TARGETS and n.name not in skip
                  and n.inputs and n.inputs[0] in ranges)
        if not target:
            if not (n.outputs and n.outputs[0] in absorbed):  # a Relu/Clip the Q above applies
                new_nodes.append(n)
            continue
        x = n.inputs[0]
        w = n.inputs[1] if len(n.inputs) > 1 else ""
        ins = list(n.inputs)
        ins[0] = quantized(x)
        axis = _weight_axis(n, g.constants.get(w))
        if w in g.constants and axis is not None and g.constants[w].dtype == np.float32:
            wv = g.constants[w]
            if per_channel:
                wq, ws = weight_params(wv, axis)
            else:  # one scale for the whole tensor
                wq, ws = weight_params(wv.reshape(1, -1), 0)
                wq = wq.reshape(wv.shape)
            ins[1] = _dequantized_constant(g, new_nodes, w, wq, ws, axis if per_channel else None)
            b = n.inputs[2] if len(n.inputs) > 2 else ""
            if n.op_type in ("Conv", "Gemm") and b in g.constants and g.constants[b].ndim == 1:
                bias_scale = (act_scale[x] * ws).astype(np.float32)
                if n.op_type == "Gemm" and g.constants[b].shape[0] != bias_scale.size:
                    bias_scale = np.full(g.constants[b].shape, bias_scale.reshape(-1)[0], np.float32)
                bq = np.round(g.constants[b].astype(np.float64) / bias_scale).astype(np.int64)
                if np.all(np.abs(bq) < 2**31):
                    ins[2] = _dequantized_constant(g, new_nodes, b, bq.astype(np.int32), bias_scale, 0)
        elif len(n.inputs) > 1 and w in ranges and n.op_type == "MatMul":
            ins[1] = quantized(w)  # activation @ activation (attention): both sides quantized
        point = _output_point(g, n, cons) if outputs else None
        if not emit_output_qdq(n.replace(inputs=tuple(ins)), point):
            new_nodes.append(n.replace(inputs=tuple(ins)))
    return _finished(g, new_nodes)


def _finished(g: Graph, nodes: list[Node]) -> Graph:
    """``g`` with ``nodes`` (the rewritten list), in order, without what nothing reads, checked."""
    g.nodes = nodes
    g.toposort()
    g.remove_unused()
    g.validate()
    return g


def _weight_axis(n: Node, w: np.ndarray | None) -> int | None:
    """The output-channel axis of a constant weight: Conv 0, Gemm 0 with transB else 1, MatMul
    the last (per output column)."""
    if w is None:
        return None
    if n.op_type == "Conv":
        return 0
    if n.op_type == "Gemm":
        return 0 if int(n.attrs.get("transB", 0)) else 1
    return w.ndim - 1 if w.ndim >= 2 else None


def _dequantized_constant(g: Graph, nodes: list[Node], name: str, q: np.ndarray, scale: np.ndarray,
                          axis: int | None) -> str:
    """A symmetric constant read through DequantizeLinear. The zero point is left out (the
    spec's default is 0 of the input's type): a per-channel array of zeros would cost the file a
    tensor per layer for nothing (about 50 KB on PP-OCRv4 rec)."""
    qn, sn = g.unique_name(name + "_quantized"), g.unique_name(name + "_scale")
    out = g.unique_name(name + "_dequantized")
    scale = np.asarray(scale, np.float32).reshape(-1)
    per_axis = axis is not None and scale.size > 1
    g.constants[qn] = q
    g.constants[sn] = scale if per_axis else scale[:1].reshape(())  # one scale: scalar parameters
    attrs = {"axis": int(axis)} if per_axis else {}
    nodes.append(Node("DequantizeLinear", (qn, sn), (out,), attrs, name=out))
    return out


# ----------------------------------------------------------------------------- no calibration
def convert_float(graph: Graph, dtype: str = "float16", *, min_elements: int = 16) -> Graph:
    """Float weights stored in half precision (``float16`` or ``bfloat16``) and widened back to
    float32 by a Cast where they are read: the file halves, every backend still computes in
    float32 (folding the Cast once at load), and rounding is the only change. Constants with
    fewer than ``min_elements`` values (shapes, scalars, scales) stay as they are."""
    if dtype not in ("float16", "bfloat16"):
        raise InputError(f"convert_float: dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    from edgeinfer import dtypes as _dt

    g = prepare(graph)
    half = _dt.to_numpy(dtype)
    casts: list[Node] = []
    for name in list(g.constants):
        v = g.constants[name]
        if v.dtype != np.float32 or v.size < min_elements:
            continue
        stored = g.unique_name(name + ("_fp16" if dtype == "float16" else "_bf16"))
        g.constants[stored] = v.astype(half)
        del g.constants[name]
        casts.append(Node("Cast", (stored,), (name,), {"to": "float32"}, name=g.unique_name(name + "_widen")))
    g.nodes = casts + g.nodes
    g.validate()
    return g


def quantize_weights(graph: Graph, *, weights: str = "int8", block_size: int = 0,
                     ops: Iterable[str] = ("MatMul", "Gemm", "Conv"), exclude: Iterable[str] = ()) -> Graph:
    """Weight-only quantization: constant weights of ``ops`` stored as int8 (one symmetric
    scale per output channel) or int4 (one scale per ``block_size`` values along the input
    dimension, 32 by default), read through DequantizeLinear; activations stay float."""
    from edgeinfer import dtypes as _dt

    if weights not in ("int8", "int4"):
        raise InputError(f"quantize_weights: weights must be 'int8' or 'int4', got {weights!r}")
    if weights == "int4" and not block_size:
        block_size = 32
    g = prepare(graph)
    skip, kinds = set(exclude), set(ops)
    new_nodes: list[Node] = []
    done: dict[str, str] = {}
    for n in g.nodes:
        w = n.inputs[1] if len(n.inputs) > 1 else ""
        axis = _weight_axis(n, g.constants.get(w)) if (not n.domain and n.op_type in kinds and n.name not in skip) else None
        if axis is None or w not in g.constants or g.constants[w].dtype != np.float32 or g.constants[w].ndim < 2:
            new_nodes.append(n)
            continue
        if w not in done:
            wv = g.constants[w]
            if weights == "int8" and not block_size:
                q, scale = weight_params(wv, axis)
                done[w] = _dequantized_constant(g, new_nodes, w, q, scale, axis)
            else:
                k_axis = _input_axis(n, wv)
                q, scale = _blocked_params(wv, k_axis, block_size, 7 if weights == "int4" else 127)
                q = q.astype(_dt.to_numpy("int4")) if weights == "int4" else q.astype(np.int8)
                done[w] = _blocked_dequantized(g, new_nodes, w, q, scale, k_axis, block_size)
        ins = list(n.inputs)
        ins[1] = done[w]
        new_nodes.append(n.replace(inputs=tuple(ins)))
    return _finished(g, new_nodes)


def _input_axis(n: Node, w: np.ndarray) -> int:
    """The reduction (input-channel) axis of a weight: Conv 1, Gemm 1 with transB else 0,
    MatMul the second to last."""
    if n.op_type == "Conv":
        return 1
    if n.op_type == "Gemm":
        return 1 if int(n.attrs.get("transB", 0)) else 0
    return w.ndim - 2


def _blocked_params(w: np.ndarray, axis: int, block: int, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization with one scale per ``block`` values along ``axis``: (q, scales of
    w's rank with that axis shortened to ceil(D / block))."""
    d = w.shape[axis]
    nb = -(-d // block)
    pad = nb * block - d
    moved = np.moveaxis(w, axis, -1)
    if pad:
        moved = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,), w.dtype)], axis=-1)
    blocks = moved.reshape(moved.shape[:-1] + (nb, block))
    amax = np.abs(blocks).max(axis=-1)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.round(blocks / scale[..., None]), -qmax, qmax)
    q = q.reshape(moved.shape)[..., :d]
    return np.moveaxis(q, -1, axis), np.moveaxis(scale, -1, axis)


def _blocked_dequantized(g: Graph, nodes: list[Node], name: str, q: np.ndarray, scale: np.ndarray, axis: int,
                         block: int) -> str:
    qn, sn = g.unique_name(name + "_quantized"), g.unique_name(name + "_scale")
    out = g.unique_name(name + "_dequantized")
    g.constants[qn], g.constants[sn] = q, scale
    nodes.append(Node("DequantizeLinear", (qn, sn), (out,), {"axis": int(axis), "block_size": int(block)}, name=out))
    return out


def quantize(graph: Graph, calibration: Iterable[Mapping[str, np.ndarray]] = (), *, mode: str = "static",
             method: str = "minmax", percentile: float = 99.99, activations: str = "uint8", per_channel: bool = True,
             weights: str = "int8", block_size: int = 0, equalize: bool = True, smooth: float | None = 0.5,
             bias_correction: bool = False, outputs: bool = False, exclude: Iterable[str] = (),
             accuracy: Callable[[object], float] | None = None, max_drop: float = 0.01,
             max_trials: int = 24, ranking_batches: int = 2,
             progress: Callable[[str, int, int | None], None] | None = None) -> Graph:
    """Quantize ``graph`` (not changed); the result carries ``metadata["edgeinfer.quantization"]``
    (JSON: mode, method, and per layer its precision, why it stayed float and its sensitivity).

    Modes:
        ``static``: prepare, equalize conv pairs (:func:`equalize_channels`), smooth
        LayerNorm -> MatMul sites with SmoothQuant's ``alpha = smooth`` (None: off;
        :func:`.quantize_tuning.smooth_matmuls`), calibrate on ``calibration`` (feed dicts; read
        several times, so a list is best), rewrite with QDQ (``outputs=True``: each layer's
        output too, after the Relu/Clip it feeds, for runtimes that fuse DQ -> op -> Q: ONNX
        Runtime, the TFLite export) and, with ``bias_correction``,
        correct each layer's bias for the mean shift quantization causes
        (:func:`.quantize_tuning.correct_bias`).
        ``dynamic``: int8 products with run-time activation ranges, other weights int8
        (:func:`.quantize_dynamic.quantize_dynamic`); no calibration.
        ``weight_only``: int8 per channel or int4 blocked weights, every large table included
        (:func:`quantize_weights` then :func:`.quantize_dynamic.quantize_tables`).
        ``fp16`` / ``bf16``: half-precision weight storage (:func:`convert_float`).

    Accuracy-aware (static only): with ``accuracy(session) -> float`` (higher is better; it gets
    an :class:`edgeinfer.Session` on the cpu backend), the float model is scored, then the fully
    quantized one. If it lost more than ``max_drop``, layers are ranked by sensitivity, how much
    of the model output's error (on the first ``ranking_batches`` calibration feeds) goes away
    when that layer alone returns to float, and returned to float one at a time, most sensitive
    first, re-scoring after each, until the drop is within ``max_drop`` (at most ``max_trials``
    scorings). The result is the most-quantized model found within budget; when none is, the most
    accurate one tried, with ``"within_budget": false`` in the metadata.

    ``progress(stage, done, total)`` is called as work advances (stages: "equalize", "smooth",
    "calibrate", "bias", "rank", "evaluate").
    """
    def stage(name):
        return None if progress is None else (lambda done, total: progress(name, done, total))

    if mode in ("fp16", "bf16"):
        out = convert_float(graph, "float16" if mode == "fp16" else "bfloat16")
        return _tag(out, {"mode": mode, "weights": mode}, graph_layers(out, set()))
    if mode == "weight_only":
        from .quantize_dynamic import quantize_tables

        out = quantize_tables(quantize_weights(graph, weights=weights, block_size=block_size, exclude=exclude),
                              weights=weights, block_size=block_size, exclude=exclude)
        return _tag(out, {"mode": mode, "weights": weights, "block_size": block_size or (32 if weights == "int4" else 0)},
                    graph_layers(out, set(exclude)))
    if mode == "dynamic":
        from .quantize_dynamic import quantize_dynamic

        out = quantize_dynamic(graph, per_channel=per_channel, exclude=exclude)
        return _tag(out, {"mode": mode, "weights": "int8", "activations": "uint8 (dynamic)"},
                    graph_layers(out, set(exclude)))
    if mode != "static":
        raise InputError(f"quantization mode {mode!r} is not available; modes: {list(MODES)}")
    if method not in METHODS:
        raise InputError(f"calibration method {method!r} is not available; methods: {list(METHODS)}")
    feeds = list(calibration)
    if not feeds:
        raise InputError("static quantization needs calibration feeds (a list of input dicts)")
    prepared = prepare(graph)
    equalized = 0
    if equalize:
        prepared, equalized = equalize_channels(prepared, feeds, progress=stage("equalize"))
    smoothed = 0
    if smooth is not None:
        from .quantize_tuning import smooth_matmuls

        prepared, smoothed = smooth_matmuls(prepared, feeds, alpha=float(smooth), progress=stage("smooth"))
    ranges = calibrate(prepared, feeds, tensors=observed_tensors(prepared, outputs), method=method,
                       percentile=percentile, progress=stage("calibrate"))
    skip = set(exclude)
    settings = {"mode": mode, "method": method, "activations": activations, "weights": "int8", "outputs": outputs,
                "per_channel": per_channel, "equalized_pairs": equalized, "smoothed_sites": smoothed,
                "bias_corrected": 0}

    def finish(g: Graph) -> Graph:
        if not bias_correction:
            return g
        from edgeinfer.session import Session

        from .quantize_tuning import correct_bias

        # measured on some calibration feeds, checked on others: kept only if it brings the
        # model's outputs closer to float on feeds it was not fitted to (with heavily clipped
        # ranges, e.g. entropy on the digits CNN, the shift is input-dependent and the
        # correction can overfit the feeds it saw)
        half = max(1, min(4, len(feeds) // 2))
        fixed, n = correct_bias(prepared, g, feeds[:half], batches=half, progress=stage("bias"))
        check = feeds[half:half + 4] or feeds[:half]
        refs = _float_outputs(prepared, check)
        before = _output_error(Session(g, threads=None), check, refs)
        after = _output_error(Session(fixed, threads=None), check, refs)
        settings["bias_correction"] = {"layers": n, "output_error_before": before, "output_error_after": after,
                                       "kept": after < before}
        settings["bias_corrected"] = n if after < before else 0
        return fixed if after < before else g

    q = finish(quantize_static(prepared, ranges, activations=activations, per_channel=per_channel, exclude=skip,
                               outputs=outputs))
    if accuracy is None:
        return _tag(q, settings, graph_layers(q, skip))
    report = _accuracy_aware(prepared, ranges, q, feeds[:max(1, ranking_batches)], skip, accuracy,
                             max_drop, max_trials, activations, per_channel, stage("rank"), stage("evaluate"), finish,
                             outputs)
    best, layers, summary = report
    settings.update(summary)
    return _tag(best, settings, layers)


MODES = ("static", "dynamic", "weight_only", "fp16", "bf16")


def graph_layers(q: Graph, excluded: set[str], reasons: Mapping[str, str] | None = None,
                 sensitivity: Mapping[str, float] | None = None, float_reason: str | None = None) -> list[dict]:
    """Per Conv/Gemm/MatMul/Einsum of a quantized graph: its precision as the graph says (an
    input read through DequantizeLinear or an integer op) and why a float one is float
    (``float_reason`` replaces the default reason for Conv/Gemm/MatMul, e.g. for QDQ models
    that edgeinfer did not make)."""
    prod = q.producers()
    quant_ops = {"DequantizeLinear", "DynamicQuantizeLinear"}
    layers = []
    for n in q.nodes:
        if n.domain or n.op_type not in (*_TARGETS, "Einsum", "MatMulInteger", "ConvInteger"):
            continue
        if n.op_type in ("MatMulInteger", "ConvInteger"):
            precision = "int8"
        else:
            src = [prod.get(i) for i in n.inputs[:2] if i]
            dq = [m for m in src if m is not None and m.op_type in quant_ops]
            if not dq:
                precision = "float"
            elif any(q.constants.get(m.inputs[0]) is not None and q.constants[m.inputs[0]].dtype.itemsize == 1
                     and str(q.constants[m.inputs[0]].dtype) in ("int4", "uint4") for m in dq):
                precision = "int4"
            else:
                precision = "int8" if len(dq) == len(src) else "int8 weights"
        reason = None
        if precision == "float":
            reason = (reasons or {}).get(n.name) or ("excluded by the user" if n.name in excluded else
                                                     (float_reason or "no calibration range (input not observed)")
                                                     if n.op_type in _TARGETS else "not a quantized op type")
        layers.append({"node": n.name, "op_type": n.op_type, "precision": precision, "reason": reason,
                       "sensitivity": None if sensitivity is None else sensitivity.get(n.name)})
    return layers


def _tag(g: Graph, settings: dict, layers: list[dict]) -> Graph:
    import json

    g.metadata["edgeinfer.quantization"] = json.dumps({**settings, "layers": layers}, default=float)
    return g


def _float_outputs(graph: Graph, feeds) -> list[dict[str, np.ndarray]]:
    """The graph's float outputs (float64) for each feed, on the cpu backend: the reference
    :func:`_output_error` compares against."""
    from edgeinfer.session import Session

    sess = Session(graph, threads=None)
    names = set(graph.output_names)
    return [{k: np.asarray(v, np.float64) for k, v in sess.run(dict(f)).items()
             if k in names and np.asarray(v).dtype.kind == "f"} for f in feeds]


def _output_error(sess, feeds, refs, norm: str = "l2") -> float:
    """How far ``sess``'s outputs are from ``refs`` (float64 outputs per feed), relative to them:
    ``"l2"``: sum |y - ref|^2 / sum |ref|^2 over every output and feed; ``"l1"``: the sum over
    outputs and feeds of mean |y - ref| over that of mean |ref|."""
    num = den = 0.0
    for feed, ref in zip(feeds, refs):
        got = sess.run(dict(feed))
        for k, r in ref.items():
            d = np.asarray(got[k], np.float64) - r
            if norm == "l1":
                num += float(np.abs(d).mean())
                den += float(np.abs(r).mean())
            else:
                num += float(np.sum(d * d))
                den += float(np.sum(r * r))
    return num / den if den > 0 else num


def _accuracy_aware(prepared, ranges, q_all, rank_feeds, skip, accuracy, max_drop, max_trials, activations,
                    per_channel, rank_progress, eval_progress, finish, outputs=False):
    from edgeinfer.session import Session

    def build(float_nodes, final=True):
        g = quantize_static(prepared, ranges, activations=activations, per_channel=per_channel,
                            exclude=skip | set(float_nodes), outputs=outputs)
        return finish(g) if final else g

    def score(g):
        return float(accuracy(Session(g, threads=None)))

    base = score(prepared)
    got = score(q_all)
    trials = [{"float_layers": [], "accuracy": got}]
    summary = {"accuracy_fp32": base, "max_drop": max_drop}
    if base - got <= max_drop:
        summary.update(accuracy=got, within_budget=True, trials=trials)
        return q_all, graph_layers(q_all, skip), summary
    # rank: the output error that goes away when one layer alone returns to float
    refs = _float_outputs(prepared, rank_feeds)
    err_all = _output_error(Session(build([], final=False), threads=None), rank_feeds, refs)
    targets = [n.name for n in prepared.nodes if not n.domain and n.op_type in _TARGETS and n.name not in skip
               and n.inputs and n.inputs[0] in ranges]
    gain: dict[str, float] = {}
    for k, t in enumerate(targets, 1):
        gain[t] = err_all - _output_error(Session(build([t], final=False), threads=None), rank_feeds, refs)
        if rank_progress is not None:
            rank_progress(k, len(targets))
    order = sorted(targets, key=lambda t: -gain[t])
    best, best_acc, best_float, within = q_all, got, [], False
    reverted: list[str] = []
    for k, t in enumerate(order[:max_trials], 1):
        reverted.append(t)
        g = build(reverted)
        a = score(g)
        trials.append({"float_layers": list(reverted), "accuracy": a})
        if eval_progress is not None:
            eval_progress(k, min(len(order), max_trials))
        if a > best_acc:
            best, best_acc, best_float = g, a, list(reverted)
        if base - a <= max_drop:
            best, best_acc, best_float, within = g, a, list(reverted), True
            break
    rank = {t: i + 1 for i, t in enumerate(order)}
    reasons = {t: (f"accuracy-aware: sensitivity rank {rank[t]} of {len(order)} (removes {gain[t] / err_all:.0%} "
                   f"of the output error); in float to keep the drop within {max_drop}") if err_all > 0 else
                  f"accuracy-aware: sensitivity rank {rank[t]} of {len(order)}" for t in best_float}
    sens = {t: gain[t] / err_all if err_all > 0 else 0.0 for t in targets}
    summary.update(accuracy=best_acc, within_budget=within, output_error_int8=err_all, trials=trials)
    return best, graph_layers(best, skip, reasons, sens), summary
