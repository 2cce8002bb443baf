"""Per-tensor comparison of a model and its conversion: :func:`check_conversion`.

Each model runs in its own format's reference runtime with every intermediate tensor kept:
ONNX in ONNX Runtime (every node output made a graph output), TFLite in LiteRT
(``experimental_preserve_all_tensors``), ``.eim`` on edgeinfer's cpu backend without fusions.
Tensors are matched by name (the converters keep names); a tensor stored in another layout
(NHWC against NCHW) is matched through the permutation that maps its shape and fits best, and
int8 tensors with quantization parameters are compared after dequantizing. The report lists,
in the source model's node order, each matched tensor with its error relative to the tensor's
scale, and names the first operator whose output diverges.
"""
from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeinfer.errors import EdgeInferError, require


@dataclass
class TensorCheck:
    name: str
    op: str  # the producing op of the source model
    error: float  # max |a - b| / max |a|
    perm: tuple[int, ...] | None  # layout permutation applied to the converted tensor


@dataclass
class CheckReport:
    source: str
    converted: str
    tolerance: float
    checked: list[TensorCheck] = field(default_factory=list)
    unmatched: int = 0

    @property
    def first_divergence(self) -> TensorCheck | None:
        return next((c for c in self.checked if c.error > self.tolerance), None)

    def summary(self) -> str:
        lines = [f"compared {len(self.checked)} tensors of {self.source} with {self.converted} "
                 f"({self.unmatched} without a counterpart)"]
        bad = self.first_divergence
        if bad is None:
            worst = max(self.checked, key=lambda c: c.error, default=None)
            lines.append("no tensor diverges" + (f"; worst {worst.error:.2e} at '{worst.name}' ({worst.op})"
                                                 if worst else ""))
        else:
            lines.append(f"first divergence: {bad.op} output '{bad.name}': error {bad.error:.2e} "
                         f"of its scale (tolerance {self.tolerance:.0e})")
        return "\n".join(lines)


def check_conversion(source: str | os.PathLike, converted: str | os.PathLike,
                     feeds: dict[str, np.ndarray] | None = None, *, tolerance: float = 1e-3,
                     seed: int = 0, input_shapes: dict[str, tuple] | None = None) -> CheckReport:
    """Run both models on the same inputs and compare every tensor they share by name.

    Args:
        source, converted: model files (``.onnx``, ``.tflite`` or ``.eim``).
        feeds: inputs by the source's input names; random ones of the declared shapes
            (``input_shapes`` where given, symbolic dims 1) otherwise. A converted input
            exposed in another layout gets the feed transposed to fit.
        tolerance: error (relative to the tensor's scale) above which a tensor diverges.
    """
    src_run, src_order, src_inputs = _runner(Path(source))
    if feeds is None:
        rng = np.random.default_rng(seed)
        shapes = input_shapes or {}
        feeds = {name: _random(rng, dtype, shapes.get(name, shape)) for name, dtype, shape in src_inputs}
    a = src_run(feeds)
    dst_run, _, dst_inputs = _runner(Path(converted))
    dst_feeds = {}
    for name, dtype, shape in dst_inputs:
        if name not in feeds:
            raise EdgeInferError(f"{converted}: input '{name}' has no counterpart in {source}")
        x = feeds[name]
        if tuple(shape) != x.shape and all(isinstance(d, int) for d in shape):
            x = _fit(x, tuple(shape), name)
        dst_feeds[name] = x.astype(np.dtype(dtype), copy=False)
    b = dst_run(dst_feeds)
    report = CheckReport(str(source), str(converted), tolerance)
    for name, op in src_order:
        # the layout pass keeps a tensor it moved past a Transpose under NAME__nhwc (the
        # untransposed form; the comparison finds the permutation)
        other = next((n for n in (name, f"{name}__nhwc", f"{name}__exposed") if n in b), None)
        if name not in a or other is None:
            report.unmatched += name in a
            continue
        found = _compare(a[name], b[other])
        if found is None:
            report.unmatched += 1
            continue
        report.checked.append(TensorCheck(name, op, *found))
    return report


# ---------------------------------------------------------------------- comparison
def _compare(x: np.ndarray, y: np.ndarray) -> tuple[float, tuple | None] | None:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
        return None
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    scale = max(float(np.abs(x64).max()) if x64.size else 0.0, 1e-12)
    best = None
    # the same layout first; then any permutation that maps the shape (a weight stored
    # transposed, an activation stored NHWC), the best one counting
    perms: list = [None] if x.shape == y.shape else []
    if x.ndim == y.ndim and sorted(x.shape) == sorted(y.shape) and 1 < x.ndim <= 6:
        perms += [p for p in itertools.permutations(range(y.ndim))
                  if tuple(y.shape[i] for i in p) == x.shape and p != tuple(range(y.ndim))]
    for p in perms:
        yy = y64 if p is None else np.transpose(y64, p)
        err = float(np.abs(x64 - yy).max()) / scale if x.size else 0.0
        if best is None or err < best[0]:
            best = (err, p)
    return best


def _fit(x: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    for p in itertools.permutations(range(x.ndim)):
        if tuple(x.shape[i] for i in p) == shape:
            return np.ascontiguousarray(np.transpose(x, p))
    raise EdgeInferError(f"input '{name}': shape {list(x.shape)} does not fit {list(shape)} in any layout")


def _random(rng, dtype: str, shape) -> np.ndarray:
    dims = tuple(d if isinstance(d, int) and d >= 0 else 1 for d in shape)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.uniform(-1, 1, dims).astype(dt)
    if dt == np.bool_:
        return rng.integers(0, 2, dims).astype(bool)
    info = np.iinfo(dt)
    return rng.integers(max(info.min, -100), min(info.max, 100) + 1, dims).astype(dt)


# ---------------------------------------------------------------------- runtimes
def _runner(path: Path):
    """(run(feeds) -> {name: array}, [(tensor name, producing op)] in order, [(input, dtype, shape)])."""
    head = path.read_bytes()[:8] if path.is_file() else b""
    suffix = path.suffix.lower()
    if suffix == ".tflite" or head[4:8] == b"TFL3":
        return _litert_runner(path)
    if suffix == ".eim" or head.startswith(b"EIM"):
        return _cpu_runner(path)
    return _ort_runner(path)


def _ort_runner(path: Path):
    onnx = require("onnx", "onnx", "convert --check")
    ort = require("onnxruntime", "ort", "convert --check")
    model = onnx.load(str(path))
    inits = {t.name for t in model.graph.initializer}
    inputs = []
    for v in model.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        inputs.append((v.name, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name, dims))
    order = [(o, n.op_type) for n in model.graph.node for o in n.output if o]
    have = {v.name for v in model.graph.output}
    for o, _ in order:
        if o not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=o))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def run(feeds):
        return dict(zip(names, sess.run(names, feeds)))
    return run, order, inputs


def _litert_runner(path: Path):
    interp_mod = require("ai_edge_litert.interpreter", "litert", "convert --check")
    from .tflite_reader import read_tflite

    model = read_tflite(path)  # verified before LiteRT sees the file
    sg = model.subgraphs[0]
    with warnings.catch_warnings():  # keeping every tensor is what this debugging run is for
        warnings.simplefilter("ignore", UserWarning)
        interp = interp_mod.Interpreter(model_path=str(path), num_threads=1,
                                        experimental_preserve_all_tensors=True)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    inputs = [(sg.tensors[i].name, sg.tensors[i].dtype, list(sg.tensors[i].shape)) for i in sg.inputs]
    order = [(sg.tensors[o].name, op.op if op.op != "CUSTOM" else op.custom_code)
             for op in sg.operators for o in op.outputs if o >= 0]
    quant = {sg.tensors[k].name: sg.tensors[k].quant for k in range(len(sg.tensors))}

    def run(feeds):
        in_details = interp.get_input_details()
        for d in in_details:
            x = feeds[d["name"]]
            if tuple(d["shape"]) != x.shape:
                interp.resize_tensor_input(d["index"], x.shape)
        interp.allocate_tensors()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], feeds[d["name"]])
        interp.invoke()
        out = {}
        for idx, d in details.items():
            try:
                v = interp.get_tensor(idx)
            except ValueError:
                continue
            q = quant.get(d["name"])
            if q is not None and v.dtype.kind in "iu":
                scale, zp = q.scale, q.zero_point
                if q.axis is not None and scale.size > 1:
                    shape = [1] * v.ndim
                    shape[q.axis] = -1
                    scale, zp = scale.reshape(shape), zp.reshape(shape)
                v = (v.astype(np.float64) - zp) * scale
            out[d["name"]] = np.array(v)
        return out
    return run, order, inputs


def _cpu_runner(path: Path):
    import edgeinfer
    from edgeinfer.graph import ValueInfo

    graph = edgeinfer.load(path).copy()
    order = [(o, n.op_type) for n in graph.nodes for o in n.outputs if o]
    have = set(graph.output_names)
    graph.outputs = list(graph.outputs) + [ValueInfo(o, "float32", None) for o, _ in order if o not in have]
    inputs = [(v.name, v.dtype, list(v.shape or ())) for v in graph.inputs if v.name not in graph.constants]
    sess = None

    def run(feeds):
        nonlocal sess
        if sess is None:
            sess = edgeinfer.Session(graph, options={"optimize": False})
        return sess.run(feeds)
    return run, order, inputs
