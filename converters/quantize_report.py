"""The quantization report: how far each layer of an int8 model is from fp32, and why the int8
model is (or is not) faster on each backend (issue 7).

Users' complaint: "int8 runs no faster than fp32 and I can't tell which layer did it". Both
halves are answered from measurements, never from assumptions:

1. **Per-layer error** (:func:`layer_errors`): the float graph and the quantized graph both run
   on the cpu backend with every shared tensor added as an output; per tensor only running sums
   are kept (sum x^2, sum (x-y)^2, sum xy, sum y^2, max |x-y|), so a long calibration set costs
   no memory. The error of a layer is *cumulative* (its inputs already carry the error of the
   layers before), so each row also carries ``snr_drop_db``: its SNR minus the SNR of its input,
   the error this layer itself added. That is what points at "the layer that did it".
2. **Per-backend facts** (:func:`backend_analysis`): fp32 and int8 medians timed by
   :func:`edgeinfer.bench.bench` (each model and backend in its own worker process, interleaved
   rounds), and what each runtime actually made of the QDQ graph:

   * ONNX Runtime: the optimized model it writes (``optimized_model_filepath``): integer kernels
     (QLinearConv, QGemm, MatMulIntegerToFloat...) vs float compute ops still reading
     DequantizeLinear (unfused QDQ), float ops between DequantizeLinear and QuantizeLinear
     (float islands, each a dequantize + requantize), weights dequantized on every run.
   * OpenVINO: ``compiled_model.get_runtime_model()``: per executed layer its ``layerType``,
     ``runtimePrecision`` and ``primitiveType`` (``*_I8`` kernels, ``ref`` fallbacks), and the
     Reorder / Convert / FakeQuantize layers between them.
   * LiteRT: the ``.tflite`` our exporter writes for the QDQ graph: ops with int8 tensors vs
     float ops, and the QUANTIZE / DEQUANTIZE ops where float and int8 parts meet.
   * The CPU: VNNI / AVX512-VNNI / AVX-VNNI / AMX-INT8 (x86), dot-product / i8mm (Arm), from
     the flags :func:`edgeinfer.bench.machine_manifest` reads.

   Every fact becomes a plain sentence in the report. A backend that is not installed, or
   refuses the model, is a status and a reason, not an exception.
3. :func:`build_report` puts both together (plus the layer list that
   :func:`converters.quantize.quantize` records in ``graph.metadata["edgeinfer.quantization"]``,
   or one derived from the QDQ graph), :func:`write_json` and :func:`write_html` write it.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgeinfer.errors import EdgeInferError, InputError
from edgeinfer.graph import Graph, ValueInfo

SCHEMA = "edgeinfer.quantize_report/1"
METADATA_KEY = "edgeinfer.quantization"
BACKENDS = ("ort", "openvino", "litert")
_TARGETS = ("Conv", "Gemm", "MatMul")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
# an exact tensor (no error at all) has an infinite SNR; differences of SNRs use this instead
# (float32 round-off of two different kernel orders sits around 120-140 dB)
_EXACT_DB = 120.0
# ops that only move data: a DequantizeLinear seen through them still feeds the op after them
_DEAD_WEIGHT = 1e-30  # a weight row below this (PP-OCRv4 has denormal ones) carries no scale
_LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "ReorderInput", "ReorderOutput"})
_ORT_INTEGER = frozenset({"QGemm", "MatMulIntegerToFloat", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
                          "QAttention", "DynamicQuantizeLSTM", "QEmbedLayerNormalization"})
_ORT_FLOAT_COMPUTE = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose"})
_OV_COMPUTE = frozenset({"Convolution", "MatMul", "FullyConnected", "Deconvolution", "GroupConvolution"})
_TFL_COMPUTE = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV",
                          "CONV_3D"})
# (flag, what it gives int8) in order of strength; any one present means single-instruction dot products
_INT8_FLAGS = (("amx_int8", "AMX-INT8 (int8 tile matrix multiply)"),
               ("avx512_vnni", "AVX512-VNNI (vpdpbusd: 64 int8 multiply-adds per instruction)"),
               ("avx_vnni", "AVX-VNNI (vpdpbusd on 256-bit registers)"),
               ("i8mm", "Arm I8MM (int8 matrix multiply, smmla)"),
               ("asimddp", "Arm dot product (sdot/udot)"))


# ============================================================================ layers
def quantization_info(graph: Graph) -> dict:
    """What was quantized and why: ``graph.metadata["edgeinfer.quantization"]`` as written by
    :func:`converters.quantize.quantize`, or, for a QDQ model from elsewhere, derived from the
    graph by :func:`converters.quantize.graph_layers` (a layer whose inputs come from
    DequantizeLinear, or an integer op, is quantized).

    Returns:
        ``{"source": "metadata" | "graph", "mode", "method", "activations", "weights",
        "layers": [{"node", "op_type", "precision", "reason", "sensitivity"}]}``.
    """
    text = graph.metadata.get(METADATA_KEY)
    if text:
        try:
            info = json.loads(text)
        except ValueError as e:
            raise InputError(f"graph '{graph.name}': metadata '{METADATA_KEY}' is not JSON ({e}); "
                             f"it starts {text[:80]!r}") from e
        if not isinstance(info, dict) or not isinstance(info.get("layers", []), list):
            raise InputError(f"graph '{graph.name}': metadata '{METADATA_KEY}' must be an object with a "
                             f"'layers' list, got {type(info).__name__}")
        info = dict(info)
        info["source"] = "metadata"
        info["layers"] = [{"node": str(r.get("node")), "op_type": r.get("op_type"), "precision": r.get("precision"),
                           "reason": r.get("reason"), "sensitivity": r.get("sensitivity")}
                          for r in info.get("layers") or () if isinstance(r, dict)]
        return info
    from .quantize import graph_layers

    layers = graph_layers(graph, set(), float_reason="no QuantizeLinear/DequantizeLinear on its input")
    ops = graph.op_histogram()
    mode = ("dynamic" if "DynamicQuantizeLinear" in ops else "static" if "QuantizeLinear" in ops else
            "weight_only" if any(r["precision"] != "float" for r in layers) else None)
    return {"source": "graph", "mode": mode,
            "method": None, "activations": None, "weights": None, "layers": layers}


def _node_id(n) -> str:
    return n.name or (n.outputs[0] if n.outputs else n.op_type)


def _dtypes(graph: Graph) -> dict[str, str]:
    """IR dtype of every tensor shape inference can type (empty where it cannot)."""
    from edgeinfer.shape_inference import propagate

    try:
        types, _ = propagate(graph, on_error=lambda node, e: None)
    except EdgeInferError:
        return {}
    return {k: t.dtype for k, t in types.items()}


def _probe(graph: Graph, tensors: list[str]) -> Graph:
    """``graph`` with ``tensors`` added as outputs (typed where shape inference can tell)."""
    g = graph.copy()
    known = set(g.output_names)
    types = _dtypes(g)
    g.outputs = list(g.outputs) + [ValueInfo(t, types.get(t, "float32"), None) for t in tensors if t not in known]
    return g


def layer_errors(float_graph: Graph, quant_graph: Graph, feeds: Iterable[Mapping[str, np.ndarray]]) -> list[dict]:
    """The error of every node of ``quant_graph`` whose output tensor the float graph also has.

    Both graphs run once per feed on the cpu backend with those tensors as extra outputs; only
    running sums are kept. The float graph's value is the reference ``x``, the quantized one ``y``.

    Returns:
        One dict per node in graph order: ``node``, ``op_type``, ``output`` (the tensor),
        ``snr_db`` (10 log10(sum x^2 / sum (x-y)^2); ``inf`` when exact), ``cosine``,
        ``max_abs_error``, ``snr_drop_db`` (the SNR of its input tensor minus its own, with an
        exact input counted as 120 dB; None when its input is not compared), ``input``,
        ``elements`` (values compared in all).

    Raises:
        InputError: no feeds, or a feed the graphs refuse.
    """
    from edgeinfer.session import Session

    float_tensors = {o for n in float_graph.nodes for o in n.outputs if o}
    pairs: list[tuple[Any, str]] = []  # (quantized node, compared tensor)
    for n in quant_graph.nodes:
        if n.op_type in _QDQ and not n.domain:
            continue
        t = next((o for o in n.outputs if o in float_tensors), None)
        if t is not None:
            pairs.append((n, t))
    tensors = list(dict.fromkeys(t for _, t in pairs))
    rescale = _equalization_scales(float_graph, quant_graph)
    ref_sess = Session(_probe(float_graph, tensors), threads=None)
    q_sess = Session(_probe(quant_graph, tensors), threads=None)
    sums = {t: np.zeros(5) for t in tensors}  # x2, d2, xy, y2, count
    peak = dict.fromkeys(tensors, 0.0)
    skipped: set[str] = set()
    count = 0
    for feed in feeds:
        ref, got = ref_sess.run(dict(feed)), q_sess.run(dict(feed))
        count += 1
        for t in tensors:
            a, b = ref.get(t), got.get(t)
            if (not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.dtype.kind != "f"
                    or b.dtype.kind != "f" or a.shape != b.shape):
                skipped.add(t)
                continue
            y = b.astype(np.float64)
            sc = rescale.get(t)
            if sc is not None and y.ndim >= 2 and y.shape[1] == sc.size:
                y = y * sc.reshape((1, -1) + (1,) * (y.ndim - 2))  # back to the float model's scale
            x, y = a.astype(np.float64).ravel(), y.ravel()
            d = x - y
            sums[t] += (x @ x, d @ d, x @ y, y @ y, x.size)
            if d.size:
                peak[t] = max(peak[t], float(np.max(np.abs(d))))
    if not count:
        raise InputError("layer_errors: no feeds were given")
    snr: dict[str, float] = {}
    for t, (x2, d2, _, _, _) in sums.items():
        if t not in skipped:
            snr[t] = math.inf if d2 == 0 else (10 * math.log10(x2 / d2) if x2 > 0 else -math.inf)
    producers = quant_graph.producers()
    inputs = set(quant_graph.input_names)
    rows = []
    for n, t in pairs:
        if t in skipped:
            continue
        x2, d2, xy, y2, size = sums[t]
        cos = 1.0 if d2 == 0 else (xy / math.sqrt(x2 * y2) if x2 > 0 and y2 > 0 else 0.0)
        src = _float_source(n.inputs[0] if n.inputs else "", producers)
        in_snr = math.inf if src in inputs else snr.get(src)
        drop = None if in_snr is None else min(in_snr, _EXACT_DB) - min(snr[t], _EXACT_DB)
        rows.append({"node": _node_id(n), "op_type": n.op_type, "output": t, "snr_db": snr[t], "cosine": float(cos),
                     "max_abs_error": peak[t], "snr_drop_db": drop, "input": src or None, "elements": int(size)})
    return rows


def _equalization_scales(float_graph: Graph, quant_graph: Graph) -> dict[str, np.ndarray]:
    """Tensor -> per-channel factor that takes the quantized graph's value back to the float
    graph's scale, for tensors that cross-layer equalization rescaled.

    :func:`converters.quantize.equalize_channels` divides output channel c of a Conv (weights
    and bias) by s_c and multiplies the next Conv's input channel c by s_c: the model's result is
    unchanged, but the tensors in between are x_c / s_c, and comparing them with the float graph
    as they are would report the rescaling as error. s_c is read back from the weights, in graph
    order: the float weight, with its input channels scaled as the Conv's input tensor was,
    divided by the quantized graph's weight is one constant per output channel (up to half a
    quantization step, checked) when that channel was rescaled. The factor is carried forward
    through the ops that commute with a positive per-channel scale (Relu, LeakyRelu, MaxPool).
    Conv weights quantized per tensor or in blocks are taken as unscaled (their per-channel
    ratio is not exact).
    """
    from .quantize import prepare

    try:
        ref = prepare(float_graph)
    except EdgeInferError:
        return {}
    ref_nodes = {n.name: n for n in ref.nodes if n.name and n.op_type == "Conv" and not n.domain}
    producers, consumers = quant_graph.producers(), quant_graph.consumers()
    scales: dict[str, np.ndarray] = {}
    for n in quant_graph.nodes:
        r = ref_nodes.get(n.name)
        if n.op_type != "Conv" or n.domain or r is None or len(n.inputs) < 2 or len(r.inputs) < 2:
            continue
        w_ref = ref.constants.get(r.inputs[1])
        got = _constant_weight(quant_graph, n.inputs[1], producers)
        if w_ref is None or got is None or w_ref.shape != got[0].shape or w_ref.ndim < 3:
            continue
        w_q, step = got
        w = w_ref.astype(np.float64)
        s_in = scales.get(_float_source(n.inputs[0], producers))
        if s_in is not None:  # the consumer side of a pair: input channel c was multiplied by s_c
            cout, cin_g = w.shape[:2]
            group = int(n.attrs.get("group", 1))
            if s_in.size != cin_g * group or cout % group:
                continue
            rows = (np.arange(cout) // (cout // group))[:, None] * cin_g + np.arange(cin_g)[None, :]
            w = w * s_in[rows].reshape(cout, cin_g, *(1,) * (w.ndim - 2))
        flat_ref, flat_q = w.reshape(w.shape[0], -1), w_q.astype(np.float64).reshape(w.shape[0], -1)
        a_ref, a_q = np.abs(flat_ref).max(axis=1), np.abs(flat_q).max(axis=1)
        # a dead channel (weights ~0, even denormal) says nothing about its scale: taken as 1
        live = (a_q > _DEAD_WEIGHT) & (a_ref > _DEAD_WEIGHT)
        s = np.where(live, a_ref / np.where(live, a_q, 1.0), 1.0)
        if np.all(np.abs(s - 1.0) < 1e-4):
            continue
        # a rescaled channel: w_q * s_c is the float weight up to half a step (and float round-off)
        slack = s * (0.5 * step + 1e-5 * a_q) + 1e-6 * a_ref
        if np.any(live & (np.abs(flat_q * s[:, None] - flat_ref).max(axis=1) > slack * 1.01)):
            continue  # not a pure per-channel rescale: leave it alone
        t = n.outputs[0]
        scales[t] = s
        for _ in range(8):  # the homogeneous chain after it
            nxt = [c for c in consumers.get(t, []) if not c.domain and c.op_type in ("Relu", "LeakyRelu", "MaxPool")]
            if len(nxt) != 1:
                break
            t = nxt[0].outputs[0]
            scales[t] = s
    return scales


def _constant_weight(graph: Graph, name: str, producers: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """A Conv weight as float and its quantization step per output channel (0 for a float
    constant): a constant, or a per-channel DequantizeLinear of one; None otherwise."""
    if name in graph.constants:
        w = np.asarray(graph.constants[name], np.float32)
        return (w, np.zeros(w.shape[0])) if w.ndim else None
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain or dq.inputs[0] not in graph.constants:
        return None
    q = graph.constants[dq.inputs[0]]
    scale = graph.constants.get(dq.inputs[1])
    zp = graph.constants.get(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else None
    if (scale is None or q.ndim < 1 or scale.size < 2 or scale.size != q.shape[0] or dq.attrs.get("block_size")
            or int(dq.attrs.get("axis", 1)) % q.ndim != 0):
        return None  # per-tensor or blocked: a channel's amax is not kept exactly
    shape = (-1,) + (1,) * (q.ndim - 1)
    zero = 0 if zp is None else zp.astype(np.float64).reshape(shape)
    w = (q.astype(np.float64) - zero) * scale.astype(np.float64).reshape(shape)
    return w, scale.astype(np.float64).reshape(-1)


def _float_source(name: str, producers: dict) -> str:
    """The float tensor a (possibly dequantized) tensor stands for: through DequantizeLinear and
    the QuantizeLinear before it, to what was quantized."""
    for _ in range(4):
        p = producers.get(name)
        if p is None or p.domain or p.op_type not in _QDQ:
            return name
        name = p.inputs[0]
    return name


def worst_layers(rows: Sequence[dict], n: int = 5, key: str = "snr_drop_db") -> list[dict]:
    """The ``n`` rows with the most error: largest ``snr_drop_db`` (the error a layer itself
    added), or lowest ``snr_db`` / ``cosine`` for those keys. Rows without the value are left out."""
    ok = [r for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
          and (key != "snr_drop_db" or r[key] > 0)]  # a layer that lowered the error did nothing wrong
    ok.sort(key=lambda r: -r[key] if key == "snr_drop_db" else r[key])
    return ok[:n]


# ============================================================================ the CPU
def cpu_int8_support(flags: Iterable[str] | None = None) -> dict:
    """Whether this CPU has single-instruction int8 dot products, as facts and sentences.

    Args:
        flags: CPU flags (default: :func:`edgeinfer.bench.machine_manifest`'s).
    """
    if flags is None:
        from edgeinfer.bench import machine_manifest

        cpu = machine_manifest()["cpu"]
        flags, model = cpu.get("flags") or [], cpu.get("model")
    else:
        model = None
    have = set(flags)
    present = [(f, what) for f, what in _INT8_FLAGS if f in have]
    x86 = bool(have & {"avx", "avx2", "sse4_2", "avx512f"})
    if present:
        best = present[0][1]
        text = f"The CPU{f' ({model})' if model else ''} has {best}"
        text += (", so int8 convolutions and matrix products can run up to ~4x the fp32 multiply-add rate."
                 if present[0][0] != "asimddp" else ", so int8 dot products take one instruction per 4 values.")
    elif x86:
        text = (f"The CPU{f' ({model})' if model else ''} has no VNNI (no avx512_vnni, avx_vnni or amx_int8): "
                "an int8 dot product takes three instructions (vpmaddubsw, vpmaddwd, vpaddd), so int8 "
                "convolutions are at best modestly faster than fp32 FMA, and (de)quantization can eat the gain.")
    else:
        text = (f"The CPU{f' ({model})' if model else ''} reports no int8 dot-product extension "
                "(asimddp, i8mm): int8 kernels gain little over float here.")
    return {"model": model, "flags": sorted(have), "int8_extensions": [f for f, _ in present],
            "vnni": any(f in have for f in ("avx512_vnni", "avx_vnni", "amx_int8")), "sentences": [text]}


# ============================================================================ backends
def backend_analysis(float_model: Graph | str | os.PathLike, quant_model: Graph | str | os.PathLike,
                     backends: Sequence[str] = BACKENDS, *, threads: int | None = 1, min_seconds: float = 1.0,
                     runs: int | None = None, inputs: Mapping[str, np.ndarray] | None = None,
                     timing: bool = True) -> dict:
    """fp32 vs int8 on each backend: medians, speedup, and the facts that explain it.

    Args:
        float_model / quant_model: graphs or model files (graphs are saved to temporary .onnx).
        backends: backend names; each is timed (``edgeinfer.bench``, one worker process per
            model and backend, interleaved rounds) and inspected (see the module doc).
        threads: threads per backend.
        min_seconds / runs: how long to time (``edgeinfer.bench.bench``'s meaning).
        inputs: one feed dict (needed for models with symbolic dims); default synthetic inputs.
        timing: False skips the timing (facts only).

    Returns:
        ``{"cpu": cpu_int8_support(), "backends": {name: {"status", "reason", "fp32_ms",
        "int8_ms", "speedup", "facts", "sentences", "layers"}}}``; ``layers`` maps a node
        name of the quantized graph to how that backend ran it.
    """
    from edgeinfer.api import load, save
    from edgeinfer.backends import available_backends, backend_names

    with tempfile.TemporaryDirectory(prefix="edgeinfer-qreport-") as tmp:
        paths = []
        for label, m in (("fp32", float_model), ("int8", quant_model)):
            if isinstance(m, Graph):
                p = Path(tmp) / f"{label}.onnx"
                save(m, p)
                paths.append(p)
            else:
                paths.append(Path(m))
        quant_graph = quant_model if isinstance(quant_model, Graph) else load(quant_model)
        shapes = _input_shapes(quant_graph, inputs)
        known = set(backend_names())
        usable = [b for b in backends if b in known]
        timed = _timings(paths, usable, threads, min_seconds, runs, inputs) if timing and usable else {}
        out = {"cpu": cpu_int8_support(), "backends": {}}
        for name in backends:
            entry = {"status": "ok", "reason": None, "fp32_ms": None, "int8_ms": None, "speedup": None,
                     "facts": {}, "sentences": [], "layers": {}}
            if name not in known:
                entry.update(status="unavailable", reason=f"no backend named '{name}'; backends: {sorted(known)}")
                entry["sentences"] = [f"{name}: {entry['reason']}"]
                out["backends"][name] = entry
                continue
            ok, why = available_backends().get(name, (False, "not registered"))
            if not ok:
                entry.update(status="unavailable", reason=why)
                entry["sentences"] = [f"{name}: not available here: {why}"]
                out["backends"][name] = entry
                continue
            entry.update(timed.get(name, {}))
            inspect = _INSPECTORS.get(name)
            if inspect is not None:
                try:
                    facts, sentences, layers = inspect(quant_graph, shapes, threads)
                    entry["facts"], entry["layers"] = facts, layers
                    entry["sentences"] = sentences
                except Exception as e:  # noqa: BLE001  a runtime refusing the model is this backend's finding
                    entry["facts"] = {"status": "failed", "reason": f"{type(e).__name__}: {_short(e)}"}
                    entry["sentences"] = [f"Could not inspect what {name} made of the int8 model: "
                                          f"{type(e).__name__}: {_short(e)}"]
                    if entry["status"] == "ok" and entry.get("int8_ms") is None:
                        entry.update(status="failed", reason=entry["facts"]["reason"])
            entry["sentences"] = _verdict(name, entry) + entry["sentences"]
            out["backends"][name] = entry
    return out


def _short(e: Exception, n: int = 400) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _input_shapes(graph: Graph, inputs) -> dict[str, tuple]:
    shapes = {}
    for v in graph.required_inputs():
        if inputs is not None and v.name in inputs:
            shapes[v.name] = tuple(np.shape(inputs[v.name]))
        elif v.shape is not None:
            # a symbolic leading dim is the batch: 1, as bench's synthetic inputs have it
            shapes[v.name] = tuple(d if isinstance(d, int) else 1 for d in v.shape)
    return shapes


def _timings(paths, backends, threads, min_seconds, runs, inputs) -> dict:
    """name -> {status, reason, fp32_ms, int8_ms, speedup} from one interleaved bench run."""
    from edgeinfer.bench import BenchError, bench

    try:
        rep = bench([str(p) for p in paths], backends=backends, threads=threads, runs=runs,
                    min_seconds=None if runs is not None else min_seconds, warmup=2,
                    inputs=dict(inputs) if inputs is not None else None, profile=False)
    except BenchError as e:
        return {b: {"status": "failed", "reason": f"timing failed: {_short(e)}"} for b in backends}
    out: dict[str, dict] = {}
    for row in rep["results"]:
        b = row["backend"]
        entry = out.setdefault(b, {"status": "ok", "reason": None, "fp32_ms": None, "int8_ms": None,
                                   "speedup": None, "version": row.get("version")})
        label = "fp32_ms" if row["model"] == str(paths[0]) else "int8_ms"
        if row["status"] != "ok":
            which = "fp32" if label == "fp32_ms" else "int8"
            entry["status"] = row["status"]
            entry["reason"] = "; ".join(filter(None, [entry["reason"], f"{which} model: {row.get('reason')}"]))
            continue
        entry[label] = (row.get("latency_ms") or {}).get("median")
    for entry in out.values():
        if entry["fp32_ms"] and entry["int8_ms"]:
            entry["speedup"] = entry["fp32_ms"] / entry["int8_ms"]
    return out


def _verdict(name: str, entry: dict) -> list[str]:
    if entry.get("fp32_ms") is None or entry.get("int8_ms") is None:
        if entry.get("status") != "ok":
            return [f"{name}: {entry.get('status')}: {entry.get('reason')}"]
        return []
    s = entry["speedup"]
    how = (f"int8 is {s:.2f}x faster than fp32" if s >= 1.05 else
           f"int8 is no faster than fp32 ({s:.2f}x)" if s >= 0.95 else f"int8 is {1 / s:.2f}x slower than fp32")
    return [f"{name}: {how} (median {entry['int8_ms']:.3g} ms vs {entry['fp32_ms']:.3g} ms)."]


def _counted(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _named(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ---------------------------------------------------------------------------- ONNX Runtime
def _ort_facts(graph: Graph, shapes: dict, threads) -> tuple[dict, list[str], dict]:
    import onnx

    from edgeinfer.backends import get_backend

    ort_backend = get_backend("ort")
    with tempfile.TemporaryDirectory(prefix="edgeinfer-qreport-ort-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        exe = ort_backend.compile(graph, shapes, threads, {"session_options": {"optimized_model_filepath": path}})
        model = onnx.load(path, load_external_data=False)
    g = model.graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def is_int(n) -> bool:
        return n.op_type.startswith("QLinear") or n.op_type in _ORT_INTEGER

    def from_act_dq(name: str) -> bool:  # reaches an activation DequantizeLinear through layout ops
        for _ in range(6):
            p = producer.get(name)
            if p is None:
                return False
            if p.op_type == "DequantizeLinear":
                return p.input[0] not in inits
            if p.op_type not in _LAYOUT_OPS:
                return False
            name = p.input[0]
        return False

    def to_q(name: str, depth: int = 0) -> bool:  # every path reaches a QuantizeLinear through layout ops
        cs = consumers.get(name, [])
        return bool(cs) and depth < 6 and all(
            c.op_type == "QuantizeLinear" or (c.op_type in _LAYOUT_OPS and to_q(c.output[0], depth + 1)) for c in cs)

    def direct_q(name: str) -> bool:  # QDQ fusion wants the QuantizeLinear right after the op
        cs = consumers.get(name, [])
        return bool(cs) and all(c.op_type == "QuantizeLinear" for c in cs)

    integer = Counter(n.op_type for n in g.node if is_int(n))
    unfused, islands, weight_dq = [], Counter(), 0
    island_nodes = []
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            weight_dq += 1
        if is_int(n) or n.op_type in _QDQ or n.op_type in _LAYOUT_OPS:
            continue
        fed = [i for i in n.input[:2] if i and from_act_dq(i)]
        if not fed:
            continue
        if n.op_type in _ORT_FLOAT_COMPUTE:
            outs = [c.op_type for c in consumers.get(n.output[0], [])] or ["a graph output"]
            why = ("its output goes to " + ", ".join(sorted(set(outs))) + ", not directly to a QuantizeLinear"
                   if not direct_q(n.output[0]) else "ORT has no integer kernel for this form")
            unfused.append({"node": n.name, "op_type": n.op_type, "reason": why})
        elif to_q(n.output[0]):
            islands[n.op_type] += 1
            island_nodes.append(n.name)
    act_q = sum(1 for n in g.node if n.op_type == "QuantizeLinear")
    act_dq = sum(1 for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits)
    facts = {"integer_kernels": dict(integer), "integer_total": sum(integer.values()), "unfused_qdq": unfused,
             "float_islands": dict(islands), "float_island_nodes": island_nodes, "quantize_nodes": act_q,
             "dequantize_nodes": act_dq, "weight_dequantize_nodes": weight_dq,
             "optimized_ops": dict(Counter(n.op_type for n in g.node)), "fallback": getattr(exe, "fallback", None)}
    sentences = []
    if integer:
        sentences.append(f"ONNX Runtime fused {sum(integer.values())} QDQ group(s) into integer kernels "
                         f"({_counted(integer)}).")
    else:
        sentences.append("ONNX Runtime fused no QDQ group into an integer kernel: every quantized layer is "
                         "dequantized and computed in float, the fp32 work plus the (de)quantization.")
    if unfused:
        ops = Counter(u["op_type"] for u in unfused)
        reasons = Counter(u["reason"] for u in unfused)
        sentences.append(f"{len(unfused)} compute op(s) still read DequantizeLinear and run in float (unfused QDQ: "
                         f"{_counted(ops)}): {_named([u['node'] for u in unfused])}. Most common reason: "
                         f"{reasons.most_common(1)[0][0]} (ORT fuses DequantizeLinear -> Conv -> QuantizeLinear "
                         "into QLinearConv; a float output needs a MatMul/Gemm to become MatMulIntegerToFloat/QGemm).")
    if islands:
        sentences.append(f"{sum(islands.values())} float op(s) sit between DequantizeLinear and QuantizeLinear "
                         f"(float islands: {_counted(islands)}): each dequantizes a tensor, computes in float and "
                         "requantizes it.")
    if act_q or act_dq:
        sentences.append(f"{act_q} QuantizeLinear and {act_dq} DequantizeLinear of activations remain in the "
                         "optimized model; each converts a whole activation tensor.")
    if weight_dq:
        sentences.append(f"{weight_dq} DequantizeLinear of constant weights remain: those weights are "
                         "dequantized on every run.")
    if facts["fallback"]:
        sentences.append(f"ONNX Runtime {facts['fallback']}.")
    layers = {}
    for n in g.node:
        base = re.sub(r"_token_\d+$", "", n.name)
        if is_int(n):
            layers.setdefault(base, f"int8 ({n.op_type})")
        elif n.op_type in _ORT_FLOAT_COMPUTE:
            layers.setdefault(base, f"float ({n.op_type})")
    return facts, sentences, layers


# ---------------------------------------------------------------------------- OpenVINO
def _openvino_facts(graph: Graph, shapes: dict, threads) -> tuple[dict, list[str], dict]:
    from edgeinfer.backends import get_backend

    # the backend's own compile: INFERENCE_PRECISION_HINT f32, one stream, the same as timed
    exe = get_backend("openvino").compile(graph, shapes, threads, {})
    rows = []
    for op in exe.compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        get = {k: info[k].astype(str) for k in info.keys()}
        rows.append({"name": op.get_friendly_name(), "layer_type": get.get("layerType", ""),
                     "precision": get.get("runtimePrecision", ""), "primitive": get.get("primitiveType", ""),
                     "original": get.get("originalLayersNames", "")})
    compute = [r for r in rows if r["layer_type"] in _OV_COMPUTE]
    int8 = [r for r in compute if r["precision"].lower() in ("i8", "u8")]
    flt = [r for r in compute if r not in int8]
    kinds = Counter(r["layer_type"] for r in rows)
    ref = [r for r in rows if "ref" in r["primitive"].lower()]
    facts = {"compute_int8": dict(Counter(r["layer_type"] for r in int8)),
             "compute_float": dict(Counter(f"{r['layer_type']} {r['precision'].upper()}" for r in flt)),
             "float_layers": [r["name"] for r in flt], "reorders": kinds.get("Reorder", 0),
             "converts": kinds.get("Convert", 0), "fake_quantize": kinds.get("FakeQuantize", 0),
             "reference_kernels": [f"{r['name']} ({r['layer_type']}, {r['primitive']})" for r in ref],
             "primitives": dict(Counter(r["primitive"] for r in compute)), "layer_types": dict(kinds)}
    sentences = [f"OpenVINO runs {len(int8)} of {len(compute)} Convolution/MatMul/FullyConnected layer(s) in "
                 f"int8 ({_counted(Counter(r['primitive'] for r in int8)) or 'none'})."]
    if flt:
        sentences.append(f"{len(flt)} stay in float ({_counted(Counter(r['precision'].upper() for r in flt))}): "
                         f"{_named([r['name'] for r in flt])}; OpenVINO's low-precision pass keeps a layer float "
                         "when no FakeQuantize (QuantizeLinear/DequantizeLinear pair) precedes its inputs.")
    extra = [(facts["reorders"], "Reorder (layout or precision conversion)"),
             (facts["converts"], "Convert"), (facts["fake_quantize"], "FakeQuantize (not fused into a neighbour)")]
    listed = [f"{n} {what}" for n, what in extra if n]
    if listed:
        sentences.append("Between the compute layers run " + ", ".join(listed) + " layer(s).")
    if ref:
        sentences.append(f"{len(ref)} layer(s) fell back to reference (non-JIT) kernels: "
                         f"{_named(facts['reference_kernels'])}.")
    layers = {}
    for r in compute:
        state = f"{'int8' if r in int8 else 'float'} ({r['precision'].upper()}, {r['primitive']})"
        for name in filter(None, (s.strip() for s in r["original"].split(","))):
            layers.setdefault(name, state)
    return facts, sentences, layers


# ---------------------------------------------------------------------------- LiteRT
def _litert_facts(graph: Graph, shapes: dict, threads) -> tuple[dict, list[str], dict]:
    from edgeinfer.converters.tflite_export import _OP_NAMES, build_tflite, tfl

    data, report = build_tflite(graph, input_shapes=shapes)
    model = tfl.ModelT.InitFromPackedBuf(data, 0)
    sub = model.subgraphs[0]
    type_names = {v: k for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}
    produced_by: dict[int, str] = {}
    ops = []
    for op in sub.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        acts = [i for i in op.inputs if i >= 0 and model.buffers[sub.tensors[i].buffer].data is None]
        in_types = [type_names.get(sub.tensors[i].type, "?") for i in acts]
        out_types = [type_names.get(sub.tensors[o].type, "?") for o in op.outputs]
        out_name = sub.tensors[op.outputs[0]].name if op.outputs else b""
        out_name = out_name.decode() if isinstance(out_name, bytes) else str(out_name)
        ops.append({"op": name, "inputs": in_types, "outputs": out_types, "output": out_name,
                    "after_dequantize": any(produced_by.get(i) == "DEQUANTIZE" for i in acts)})
        for o in op.outputs:
            # a DEQUANTIZE seen through padding and layout ops still feeds what comes after them
            moved = name in ("PAD", "RESHAPE", "TRANSPOSE") and acts and produced_by.get(acts[0]) == "DEQUANTIZE"
            produced_by[o] = "DEQUANTIZE" if moved else name
    int_types = {"INT8", "UINT8", "INT16"}
    core = [o for o in ops if o["op"] not in ("QUANTIZE", "DEQUANTIZE")]
    int8 = [o for o in core if set(o["inputs"][:1] + o["outputs"]) & int_types]
    flt_compute = [o for o in core if o["op"] in _TFL_COMPUTE and o not in int8]
    facts = {"ops": dict(Counter(o["op"] for o in ops)), "int8_ops": dict(Counter(o["op"] for o in int8)),
             "float_ops": dict(Counter(o["op"] for o in core if o not in int8)),
             "float_compute": [o["output"] for o in flt_compute],
             "quantize": sum(o["op"] == "QUANTIZE" for o in ops),
             "dequantize": sum(o["op"] == "DEQUANTIZE" for o in ops),
             "transposes": report.transposes, "size_bytes": report.size_bytes}
    sentences = [f"The TFLite export has {len(int8)} int8 op(s) ({_counted(facts['int8_ops']) or 'none'}) and "
                 f"{len(core) - len(int8)} float op(s)."]
    if flt_compute:
        fed = [o["output"] for o in flt_compute if o["after_dequantize"]]
        sentences.append(f"{len(flt_compute)} compute op(s) are float "
                         f"({_counted(Counter(o['op'] for o in flt_compute))}), "
                         + (f"{len(fed)} of them right after a DEQUANTIZE, with dequantized float32 weights: the "
                            "exporter writes an int8 op only when every float input comes from DequantizeLinear "
                            "and every output goes to QuantizeLinear"
                            if fed else "their inputs are not quantized")
                         + (f" (outputs {_named(fed)})." if fed else "."))
    if facts["quantize"] or facts["dequantize"]:
        sentences.append(f"{facts['quantize']} QUANTIZE and {facts['dequantize']} DEQUANTIZE op(s) convert "
                         "between float and int8 where the two parts meet (float islands).")
    layers = {}
    for o in core:
        if o["op"] in _TFL_COMPUTE:
            layers[o["output"]] = f"{'int8' if o in int8 else 'float'} ({o['op']})"
    return facts, sentences, layers


_INSPECTORS = {"ort": _ort_facts, "openvino": _openvino_facts, "litert": _litert_facts}


# ============================================================================ the report
def build_report(float_graph: Graph, quant_graph: Graph, feeds: Iterable[Mapping[str, np.ndarray]], *,
                 float_path: str | os.PathLike | None = None, quant_path: str | os.PathLike | None = None,
                 backends: Sequence[str] = BACKENDS, sizes: Mapping[str, int] | None = None,
                 accuracy: Mapping[str, Any] | None = None, threads: int | None = 1, min_seconds: float = 1.0,
                 runs: int | None = None, worst: int = 5) -> dict:
    """The whole report as a JSON-safe dict (schema ``edgeinfer.quantize_report/1``).

    Args:
        float_graph / quant_graph: the fp32 model and its quantized version.
        feeds: feed dicts for the per-layer error (the first one also times the backends).
        float_path / quant_path: their files, if saved (timed as they are, and their sizes read).
        backends: backends to time and inspect (empty: per-layer error only).
        sizes: ``{"fp32": bytes, "int8": bytes}``; default from the files, else the weights.
        accuracy: free-form, e.g. ``{"metric": "char_accuracy", "fp32": 0.99, "int8": 0.98}``.
        worst: how many layers to highlight.
    """
    from edgeinfer.bench_report import _json_safe

    feeds = [dict(f) for f in feeds]
    info = quantization_info(quant_graph)
    rows = layer_errors(float_graph, quant_graph, feeds)
    meta = {r["node"]: r for r in info["layers"]}
    for r in rows:
        m = meta.get(r["node"], {})
        r["precision"] = m.get("precision") or ("float" if r["op_type"] in _TARGETS else None)
        r["reason"], r["sensitivity"] = m.get("reason"), m.get("sensitivity")
        r["exact"] = r["snr_db"] == math.inf
    analysis = {"cpu": cpu_int8_support(), "backends": {}}
    if backends:
        analysis = backend_analysis(float_path or float_graph, quant_path or quant_graph, backends, threads=threads,
                                    min_seconds=min_seconds, runs=runs, inputs=feeds[0] if feeds else None)
    placed = {b: _attribute(e.get("layers") or {}, quant_graph) for b, e in analysis["backends"].items()}
    for r in rows:
        r["backends"] = {b: p.get(r["node"]) for b, p in placed.items()}
    if sizes is None:
        if float_path and quant_path:
            sizes = {"fp32": os.path.getsize(float_path), "int8": os.path.getsize(quant_path)}
        else:
            sizes = {"fp32": float_graph.weight_bytes(), "int8": quant_graph.weight_bytes()}
    # highlighted: the quantized layers that added the most error (the ones a user can keep in
    # float); a float op's SNR drop is its nonlinearity reshaping error it was handed
    quantized_rows = [r for r in rows if r.get("precision") == "int8"]
    worst_rows = worst_layers(quantized_rows or rows, worst)
    kept = [m for m in info["layers"] if m.get("precision") == "float"]
    summary = {"sizes": dict(sizes), "accuracy": dict(accuracy) if accuracy else None,
               "layers_int8": sum(m.get("precision") == "int8" for m in info["layers"]),
               "layers_float": len(kept), "worst": [r["node"] for r in worst_rows],
               "speedups": {b: e.get("speedup") for b, e in analysis["backends"].items()},
               "feeds": len(feeds)}
    report = {"schema": SCHEMA, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "model": {"fp32": str(float_path) if float_path else float_graph.name,
                        "int8": str(quant_path) if quant_path else quant_graph.name},
              "quantization": {k: v for k, v in info.items() if k != "layers"}, "kept_float": kept,
              "summary": summary, "cpu": analysis["cpu"], "backends": analysis["backends"], "layers": rows}
    return _json_safe(report)


def _attribute(layers: Mapping[str, str], graph: Graph) -> dict[str, str]:
    """A backend's per-layer states keyed by Conv/Gemm/MatMul node of ``graph``.

    A key is a node name or a tensor (then its producer). Runtimes fuse what follows a
    convolution into it and may name the result after the last fused op (OpenVINO names
    PP-OCRv4's Conv -> Mul -> Add -> HardSwish after the Add), so a key naming an elementwise
    op is followed back through single-activation-input ops (up to 4) to the compute op."""
    by_name = {_node_id(n): n for n in graph.nodes}
    producers = graph.producers()
    out: dict[str, str] = {}
    for key, state in layers.items():
        n = by_name.get(key) or producers.get(key)
        for _ in range(4):
            if n is None or n.op_type in _TARGETS:
                break
            acts = [i for i in n.inputs if i and i not in graph.constants]
            n = producers.get(acts[0]) if len(set(acts)) == 1 else None
        if n is not None and n.op_type in _TARGETS:
            out.setdefault(_node_id(n), state)
    return out


def write_json(report: dict, path: str | os.PathLike) -> None:
    """The report as indented UTF-8 JSON, written atomically (non-finite floats as null)."""
    from edgeinfer import bench_report

    bench_report.write_json(report, path)


# ---------------------------------------------------------------------------- HTML
_CSS_EXTRA = """
tr.worst td{background:#fff3e0}td.bar span.snr{background:#4c78a8}td.bar span.drop{background:#e45756}
ul.why li{margin:3px 0}
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _svg_snr(rows: list[dict], worst: set[str]) -> str:
    """Inline SVG: SNR (dB) of each compared layer in graph order; worst layers in red."""
    from edgeinfer.bench_report import _e, _nice_ticks

    pts = [(i, r) for i, r in enumerate(rows) if isinstance(r.get("snr_db"), (int, float))]
    if not pts:
        return "<p>No layer to plot.</p>"
    vals = [min(float(r["snr_db"]), _EXACT_DB) for _, r in pts]
    ticks = _nice_ticks(min(min(vals), 0.0), max(vals))
    lo, hi = ticks[0], ticks[-1]
    left, top, height = 60, 15, 240
    step = max(2.0, min(14.0, 900.0 / max(len(rows), 1)))
    width = int(left + step * len(rows) + 20)

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * height

    out = [f'<svg width="{width}" height="{top + height + 40}" viewBox="0 0 {width} {top + height + 40}" '
           'role="img" aria-label="SNR per layer">']
    for t in ticks:
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{_e(f"{t:g}")}</text>')
    out.append(f'<text x="12" y="{top + height / 2}" transform="rotate(-90 12 {top + height / 2})" '
               'text-anchor="middle">SNR vs fp32 (dB)</text>')
    line = " ".join(f"{left + step * (i + 0.5):.1f},{y(v):.1f}" for (i, _), v in zip(pts, vals))
    out.append(f'<polyline points="{line}" fill="none" stroke="#4c78a8" stroke-width="1.2"/>')
    for (i, r), v in zip(pts, vals):
        bad = r["node"] in worst
        out.append(f'<circle cx="{left + step * (i + 0.5):.1f}" cy="{y(v):.1f}" r="{3.5 if bad else 2}" '
                   f'fill="{"#e45756" if bad else "#4c78a8"}"><title>{_e(r["node"])} ({_e(r["op_type"])}): '
                   f'{_e(_fmt(r.get("snr_db")))} dB</title></circle>')
    out.append(f'<text x="{left}" y="{top + height + 28}">layers in graph order ({len(rows)})</text></svg>')
    return "".join(out)


def write_html(report: dict, path: str | os.PathLike) -> None:
    """One self-contained HTML page (no scripts, nothing fetched; every string escaped): summary,
    the per-backend "why" sentences, the per-layer table with bars (worst layers highlighted) and
    an SVG plot of SNR per layer, written atomically."""
    from edgeinfer.bench_report import _CSS, _e, _kv_table, _write_atomic

    s = report.get("summary") or {}
    rows = list(report.get("layers") or ())
    worst = set(s.get("worst") or ())
    backends = report.get("backends") or {}
    title = f"edgeinfer quantization report: {report.get('model', {}).get('int8', '')}"
    page = ["<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
            "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; style-src 'unsafe-inline'\">",
            f"<title>{_e(title)}</title><style>{_CSS}{_CSS_EXTRA}</style></head><body>", f"<h1>{_e(title)}</h1>",
            f"<p>{_e(report.get('schema', SCHEMA))}, created {_e(report.get('created', '-'))}</p>", "<h2>Summary</h2>"]
    sizes = s.get("sizes") or {}
    models = report.get("model") or {}
    pairs = [("fp32 model", models.get("fp32")), ("int8 model", models.get("int8"))]
    pairs += [(f"size {k}", f"{v / 1e6:.3f} MB" if isinstance(v, (int, float)) else v) for k, v in sizes.items()]
    if isinstance(sizes.get("fp32"), (int, float)) and isinstance(sizes.get("int8"), (int, float)) and sizes["int8"]:
        pairs.append(("size ratio", f"{sizes['fp32'] / sizes['int8']:.2f}x smaller"))
    for k, v in (s.get("accuracy") or {}).items():
        pairs.append((f"accuracy {k}", v))
    q = report.get("quantization") or {}
    pairs += [("quantization", ", ".join(f"{k}={v}" for k, v in q.items() if v is not None)),
              ("layers int8 / float", f"{s.get('layers_int8')} / {s.get('layers_float')}"),
              ("feeds compared", s.get("feeds"))]
    for b, sp in (s.get("speedups") or {}).items():
        pairs.append((f"speedup on {b} (fp32 / int8 median)", "-" if sp is None else f"{sp:.2f}x"))
    page.append(_kv_table(pairs))
    page.append("<h2>Why int8 is or is not faster</h2><ul class=why>")
    page += [f"<li>{_e(t)}</li>" for t in (report.get("cpu") or {}).get("sentences") or ()]
    page.append("</ul>")
    for b, e in backends.items():
        page.append(f"<h3>{_e(b)}</h3><ul class=why>")
        page += [f"<li>{_e(t)}</li>" for t in e.get("sentences") or ()] or ["<li>no findings</li>"]
        page.append("</ul>")
        facts = {k: v for k, v in (e.get("facts") or {}).items() if not isinstance(v, (list, dict)) or v}
        if facts:
            page.append(f"<details><summary>{_e(b)} facts</summary><pre>{_e(json.dumps(facts, indent=1, default=str))}"
                        "</pre></details>")
    kept = report.get("kept_float") or []
    if kept:
        page.append("<h2>Layers kept in float</h2><table><tr><th>node</th><th>op</th><th>reason</th>"
                    "<th>sensitivity</th></tr>")
        page += [f"<tr><td>{_e(k.get('node'))}</td><td>{_e(k.get('op_type'))}</td><td>{_e(k.get('reason') or '-')}"
                 f"</td><td class=n>{_e(_fmt(k.get('sensitivity')))}</td></tr>" for k in kept]
        page.append("</table>")
    page += ["<h2>SNR per layer (graph order)</h2>", _svg_snr(rows, worst),
             f"<h2>Per-layer error vs fp32</h2><p>Error is cumulative; 'SNR drop' is what the layer itself added "
             f"(its SNR minus its input's). The {len(worst)} worst by SNR drop are highlighted.</p>"]
    names = list(backends)
    head = ["node", "op", "precision", "reason kept float", "sensitivity", "SNR (dB)", "", "SNR drop (dB)", "",
            "cosine", "max |err|", *names]
    page.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    drops = [r["snr_drop_db"] for r in rows if isinstance(r.get("snr_drop_db"), (int, float))]
    top_drop = max([d for d in drops if d > 0] or [1.0])
    for r in rows:
        snr = r.get("snr_db")
        snr_txt = "exact" if r.get("exact") else _fmt(snr)
        # the bar is full at 60 dB (an error 1000x below the signal)
        snr_frac = (min(max(snr, 0.0), 60.0) / 60.0 if isinstance(snr, (int, float))
                    else (1.0 if r.get("exact") else 0.0))
        drop = r.get("snr_drop_db")
        drop_frac = max(drop, 0.0) / top_drop if isinstance(drop, (int, float)) else 0.0
        cls = ' class="worst"' if r.get("node") in worst else ""
        cells = [f"<td>{_e(r.get('node'))}</td>", f"<td>{_e(r.get('op_type'))}</td>",
                 f"<td>{_e(r.get('precision') or '-')}</td>", f"<td>{_e(r.get('reason') or '')}</td>",
                 f"<td class=n>{_e(_fmt(r.get('sensitivity')))}</td>", f"<td class=n>{_e(snr_txt)}</td>",
                 f'<td class="bar"><span class=snr style="width:{100 * snr_frac:.1f}%"></span></td>',
                 f"<td class=n>{_e(_fmt(drop))}</td>",
                 f'<td class="bar"><span class=drop style="width:{100 * min(drop_frac, 1.0):.1f}%"></span></td>',
                 f"<td class=n>{_e(_fmt(r.get('cosine'), 5))}</td>",
                 f"<td class=n>{_e(_fmt(r.get('max_abs_error')))}</td>"]
        cells += [f"<td>{_e((r.get('backends') or {}).get(b) or '')}</td>" for b in names]
        page.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    page.append("</table></body></html>\n")
    _write_atomic(path, "\n".join(page).encode("utf-8"))


__all__ = ["SCHEMA", "METADATA_KEY", "quantization_info", "layer_errors", "worst_layers", "cpu_int8_support",
           "backend_analysis", "build_report", "write_json", "write_html"]
