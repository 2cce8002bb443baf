"""The ``openvino`` backend: the graph exported to ONNX in memory, read by OpenVINO's ONNX
frontend, reshaped to the input shapes and compiled for a device.

``compile`` runs once per input-shape signature (the Session's rule), so OpenVINO always
compiles a static-shape model, its fast path.

Precision is a policy, not a surprise: OpenVINO's CPU plugin computes f32 models in bf16 on
CPUs with AVX512-BF16 or AMX unless told otherwise (a 256x256 MatMul then errs by ~0.1), so
``INFERENCE_PRECISION_HINT`` is always ``f32`` unless the ``precision`` option asks for less.

Options:
    ``device``: ``"CPU"`` (default), ``"GPU"``, ``"GPU.1"``, ``"NPU"``, ``"AUTO"``,
        ``"AUTO:GPU,CPU"``, ... as ``openvino.Core().available_devices`` lists them.
    ``precision``: ``"f32"`` (default), ``"bf16"`` or ``"f16"``.
    ``performance_hint``: ``"LATENCY"`` or ``"THROUGHPUT"``; without it the model runs with
        one stream (``NUM_STREAMS=1``), the same work as a latency hint, stated outright.
    ``config``: further OpenVINO properties by name, passed to ``compile_model`` as given
        (``{"ENABLE_CPU_PINNING": False}``); they win over the ones above.

``threads`` is ``INFERENCE_NUM_THREADS`` (``None``: OpenVINO's default, every core). ``run`` is
thread-safe: each calling thread gets its own ``InferRequest`` of the one compiled model.
Results keep the IR's names and dtypes (OpenVINO may rename an output or narrow its type).

``unsupported`` is a static list: op types the exporter cannot write (the cpu backend's internal
``edgeinfer`` domain) and those OpenVINO's ONNX frontend has no conversion for, found by reading
every ONNX node conformance model with OpenVINO 2026.4 (:data:`NO_CONVERSION`). ``compile``
reports the rest, with every op OpenVINO could not convert in one UnsupportedOpError.
"""
from __future__ import annotations

import re
import threading

from ..errors import BackendUnavailableError, EdgeInferError, InputError, KernelError, UnsupportedOpError
from ..graph import Graph
from .exported_onnx import as_ir_value, check_choice, check_options, exported_onnx

NAME = "openvino"
OPTIONS = {
    "device": "'CPU' (default), 'GPU', 'NPU', 'AUTO', ... as openvino.Core().available_devices lists them",
    "precision": "'f32' (default), 'bf16' or 'f16'",
    "performance_hint": "'LATENCY' or 'THROUGHPUT' (default: one stream)",
    "config": "further OpenVINO properties by name, passed to compile_model",
    "profile": "ignored (per-node profiles come from the cpu backend)",
}
PRECISIONS = ("f32", "bf16", "f16")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
_INTERNAL_DOMAIN = "edgeinfer"

# Op types OpenVINO 2026.4's ONNX frontend cannot convert in any form (no conformance case of
# theirs reads). Ops it converts only in some forms (STFT and SplitToSequence with non-constant
# sizes) are left to compile.
NO_CONVERSION: dict[str, frozenset[str]] = {
    "": frozenset({
        "BitCast", "CausalConvWithState", "CumProd", "DeformConv", "Det", "ImageDecoder", "LinearAttention",
        "MaxUnpool", "MelWeightMatrix", "OptionalGetElement", "OptionalHasElement", "RegexFullMatch",
        "SequenceEmpty", "SequenceInsert", "SequenceLength", "SequenceMap", "StringConcat", "StringNormalizer",
        "StringSplit", "SwiGLU", "TensorScatter", "TfIdfVectorizer",
    }),
    "ai.onnx.ml": frozenset({"ArrayFeatureExtractor", "Binarizer", "LabelEncoder", "TreeEnsemble"}),
}
_NO_DOMAINS = ("ai.onnx.preview", "ai.onnx.preview.training")


def available() -> tuple[bool, str]:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import openvino
    except ImportError as e:
        return False, f"{e.name or e} is not installed; pip install 'edgeinfer[openvino]'"
    version = openvino.__version__.split("-")[0]
    try:
        devices = ", ".join(openvino.Core().available_devices)
    except RuntimeError as e:  # a broken plugin: the backend may still load, say so
        devices = f"devices unknown: {e}"
    return True, f"openvino {version} ({devices})"


def unsupported(graph: Graph) -> list[str]:
    """Op types the exporter cannot write or OpenVINO cannot convert (see module doc)."""
    missing = set()
    for n in graph.walk_nodes():
        if (n.domain == _INTERNAL_DOMAIN or n.domain in _NO_DOMAINS
                or n.op_type in NO_CONVERSION.get(n.domain, ())):
            missing.add(f"{n.domain}::{n.op_type}" if n.domain else n.op_type)
    return sorted(missing)


def compile(graph: Graph, input_shapes: dict[str, tuple], threads: int | None = None, options: dict | None = None):
    """Export ``graph`` to ONNX in memory, read it with OpenVINO, fix the input shapes and
    compile it for the device.

    Raises:
        ExportError: the graph has ops or forms the exporter cannot write (all listed).
        UnsupportedOpError: OpenVINO's ONNX frontend cannot convert some ops (all listed).
        BackendUnavailableError: the device is not available here (the available ones listed).
        InputError: an unknown option or an option value of the wrong kind.
        EdgeInferError: OpenVINO rejects the model or the configuration (its message included).
    """
    import openvino as ov

    options = dict(options or {})
    check_options(NAME, options, OPTIONS)
    core = ov.Core()
    device = _check_device(core, options.get("device", "CPU"))
    config = _config(threads, options)
    with exported_onnx(graph) as model_source:
        try:
            model = core.read_model(model_source)
        except RuntimeError as e:
            raise _conversion_error(graph, e) from e
    _reshape(model, graph, input_shapes)
    try:
        compiled = core.compile_model(model, device, config)
    except RuntimeError as e:
        raise EdgeInferError(f"OpenVINO could not compile graph '{graph.name}' for device '{device}' "
                             f"with {config}: {_first_lines(e)}") from e
    return OpenVINOExecutable(graph, compiled, device, config)


def _check_device(core, device) -> str:
    if not isinstance(device, str) or not device:
        raise InputError(f"backend 'openvino' option 'device' must be a device name such as 'CPU', got {device!r}")
    have = list(core.available_devices)
    base, _, candidates = device.partition(":")
    if base.upper() in _VIRTUAL_DEVICES:
        wanted = [c.strip() for c in candidates.split(",") if c.strip()]
    else:
        wanted = [device]
    # "GPU" names the first GPU, listed as "GPU.0" when there are several
    absent = [d for d in wanted if d not in have and not any(h.split(".")[0] == d for h in have)]
    if absent:
        raise BackendUnavailableError(
            f"backend 'openvino': device(s) {absent} not available here; available devices: {have} "
            f"(openvino {_ov_version()})"
        )
    return device


def _config(threads: int | None, options: dict) -> dict:
    precision = options.get("precision", "f32")
    precision = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(precision, precision)
    check_choice(NAME, "precision", precision, PRECISIONS)
    config: dict = {"INFERENCE_PRECISION_HINT": precision}
    hint = options.get("performance_hint")
    if hint is None:
        config["NUM_STREAMS"] = 1
    else:
        hint = str(hint).upper()
        check_choice(NAME, "performance_hint", hint, PERFORMANCE_HINTS)
        config["PERFORMANCE_HINT"] = hint
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    extra = options.get("config") or {}
    if not isinstance(extra, dict):
        raise InputError(f"backend 'openvino' option 'config' must be a dict of properties, got {type(extra).__name__}")
    config.update(extra)
    return config


def _reshape(model, graph: Graph, input_shapes: dict) -> None:
    """Give the model's inputs the concrete shapes of this compile."""
    names = {n for port in model.inputs for n in port.get_names()}
    shapes = {name: list(shape) for name, shape in input_shapes.items() if isinstance(shape, tuple) and name in names}
    if not shapes:
        return
    try:
        model.reshape(shapes)
    except RuntimeError as e:
        raise EdgeInferError(f"OpenVINO could not give graph '{graph.name}' the input shapes {shapes}: "
                             f"{_first_lines(e)}") from e


def _conversion_error(graph: Graph, e: Exception) -> EdgeInferError:
    """UnsupportedOpError listing the ops OpenVINO could not convert, else a plain error."""
    text = str(e)
    found = re.search(r"(?:No conversion rule found for operations|Conversion is failed for):\s*(.*)", text)
    if found:
        ops = sorted({re.sub(r"-\d+$", "", o.strip()) for o in found.group(1).split(",") if o.strip()})
        return UnsupportedOpError(
            f"backend 'openvino' cannot convert {len(ops)} operator type(s) of graph '{graph.name}': "
            f"{', '.join(ops)} (openvino {_ov_version()})", ops)
    return EdgeInferError(f"OpenVINO could not read the exported model of graph '{graph.name}': {_first_lines(e)}")


def _first_lines(e: Exception, n: int = 12) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip() and not ln.startswith("Exception from src/")]
    return " ".join(lines[:n]) or str(e)


def _ov_version() -> str:
    import openvino

    return openvino.__version__.split("-")[0]


class OpenVINOExecutable:
    """One compiled model; each calling thread runs it through its own ``InferRequest``."""

    def __init__(self, graph: Graph, compiled, device: str, config: dict):
        self.compiled = compiled
        self.device = device
        self.config = config
        ports = list(compiled.inputs)
        by_name = {name: k for k, port in enumerate(ports) for name in port.get_names()}
        # the ONNX frontend keeps the inputs' order (initializers aside); a renamed one is found by position
        fed = [v.name for v in graph.inputs if v.name not in graph.constants]
        self._inputs = {}
        for k, name in enumerate(fed):
            k = by_name.get(name, k)
            if k < len(ports):
                self._inputs[name] = (k, ports[k].get_element_type().to_dtype())
        self._outputs = []  # (IR name, output index, IR dtype)
        by_name = {name: k for k, port in enumerate(compiled.outputs) for name in port.get_names()}
        for k, v in enumerate(graph.outputs):
            # the ONNX frontend keeps the outputs' order; a renamed one is found by position
            self._outputs.append((v.name, by_name.get(v.name, k), v.dtype))
        self._local = threading.local()

    def _request(self):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def run(self, feeds: dict) -> dict:
        values = {}
        for name, x in feeds.items():
            k, dtype = self._inputs[name]
            values[k] = x if x.dtype == dtype else x.astype(dtype)
        try:
            results = self._request().infer(values)
        except RuntimeError as e:
            raise KernelError(f"OpenVINO failed running the model on '{self.device}': {_first_lines(e)}") from e
        return {name: as_ir_value(results[k], dtype) for name, k, dtype in self._outputs}
