"""The ``ort`` backend: the graph exported to ONNX in memory and run by ONNX Runtime.

``compile`` exports the graph with :func:`~edgeinfer.converters.onnx_export.export_onnx` and
hands the serialized bytes to an ``onnxruntime.InferenceSession`` (no file is written, see
:mod:`.exported_onnx`). ONNX Runtime serves any input shape, but the Session still compiles
once per shape signature, like every backend; the exported model keeps the graph's symbolic dims.

Options:
    ``providers``: execution providers in order of preference, default
        ``["CPUExecutionProvider"]``; ``CUDAExecutionProvider``, ``TensorrtExecutionProvider``
        and the rest as the installed onnxruntime build provides them (``onnxruntime-gpu``).
    ``provider_options``: one dict per provider (a list in ``providers`` order, or a dict
        provider name -> dict).
    ``graph_optimization_level``: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"``
        (default).
    ``session_options``: ``onnxruntime.SessionOptions`` attributes by name
        (``{"enable_mem_pattern": False}``), and session config entries by their dotted key
        (``{"session.intra_op.allow_spinning": "0"}``). ``log_severity_level`` defaults to 4
        (fatal only): ORT's warnings about models it can run stay off the console, and its
        errors reach the caller as exceptions, not also as log lines (``auto`` tries candidates
        that may fail).

``threads`` is ORT's ``intra_op_num_threads`` (``None`` leaves ORT's default, one thread per
core); ``inter_op_num_threads`` is 1, since nodes run sequentially. ``run`` is thread-safe:
``InferenceSession.run`` may be called from several threads at once.

``unsupported`` is static and cheap (creating a session to find out would export the whole
model): op types the exporter cannot write (the cpu backend's internal ``edgeinfer`` domain),
and op types for which the installed onnxruntime has no CPU kernel at the version the exporter
writes and no ONNX function body it could expand. Limits that depend on shapes or attribute
values are reported by ``compile``.
"""
from __future__ import annotations

import functools

from ..errors import BackendUnavailableError, EdgeInferError, InputError, KernelError
from ..graph import Graph
from .exported_onnx import as_ir_value, check_choice, check_options, exported_onnx

NAME = "ort"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
OPTIONS = {
    "providers": "execution providers in order of preference (default ['CPUExecutionProvider'])",
    "provider_options": "a dict of options per provider (list in providers order, or dict by provider name)",
    "graph_optimization_level": "'disable', 'basic', 'extended' or 'all' (default)",
    "session_options": "onnxruntime.SessionOptions attributes and dotted session config entries",
    "profile": "ignored (per-node profiles come from the cpu backend)",
}
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}
_INTERNAL_DOMAIN = "edgeinfer"
_QUIET = 4  # ORT log severity: fatal only (every error reaches the caller as an exception anyway)
_OPEN_ENDED = 2**31 - 1  # the end of a kernel version range that has no end


def available() -> tuple[bool, str]:
    try:
        import onnxruntime
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError as e:
        return False, f"{e.name or e} is not installed; pip install 'edgeinfer[ort]'"
    providers = ", ".join(onnxruntime.get_available_providers())
    return True, f"onnxruntime {onnxruntime.__version__} ({providers})"


def unsupported(graph: Graph) -> list[str]:
    """Op types the exporter cannot write or the installed onnxruntime cannot run (see module doc)."""
    # the exporter's own rule for the opsets it writes, so the versions checked are the ones ORT sees
    from ..converters.onnx_export import _choose_opsets

    try:
        opsets = _choose_opsets(graph, None)
    except EdgeInferError:
        opsets = {}  # an opset the exporter refuses: compile reports it
    missing = set()
    for n in graph.walk_nodes():
        label = f"{n.domain}::{n.op_type}" if n.domain else n.op_type
        if n.domain == _INTERNAL_DOMAIN or not _ort_runs(n.domain, n.op_type, opsets.get(n.domain, 1)):
            missing.add(label)
    return sorted(missing)


def _ort_runs(domain: str, op_type: str, opset: int, depth: int = 0) -> bool:
    """Whether ORT has a CPU kernel for the op's form at ``opset``, or a function body to expand."""
    import onnx

    kernels = _kernel_versions()
    versions = kernels.get((domain, op_type))
    if not any(d == domain for d, _ in kernels):
        return False  # a domain ORT does not know (ai.onnx.preview.training, ...)
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except Exception:  # SchemaError: a contrib domain (com.microsoft) or an unknown op
        return versions is not None
    since = schema.since_version
    # ORT's kernel lookup: a range open to "the latest" matches only its first version, so
    # a kernel registered for opset 25 does not run the op's opset-28 form
    if versions and any(lo == since or lo < since <= hi < _OPEN_ENDED for lo, hi in versions):
        return True
    if op_type == "Constant":
        return True  # ORT folds it into an initializer when it loads the model
    if schema.has_context_dependent_function:
        return True  # its body depends on the node's types: ORT builds and expands it
    if schema.has_function and depth < 4:
        body = onnx.FunctionProto.FromString(schema.get_function_with_opset_version(opset) or schema.function_body)
        ops = {i.domain: i.version for i in body.opset_import}
        return all(_ort_runs(b.domain, b.op_type, ops.get(b.domain, opset), depth + 1) for b in body.node)
    return False


@functools.lru_cache(maxsize=1)
def _kernel_versions() -> dict[tuple[str, str], list[tuple[int, int]]]:
    """(domain, op type) -> opset ranges of the installed onnxruntime's CPU kernels."""
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    out: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for k in C.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            domain = "" if k.domain == "ai.onnx" else k.domain
            out.setdefault((domain, k.op_name), []).append(tuple(k.version_range))
    return out


def compile(graph: Graph, input_shapes: dict[str, tuple], threads: int | None = None, options: dict | None = None):
    """Export ``graph`` to ONNX in memory and open it in an ``onnxruntime.InferenceSession``.

    ``input_shapes`` is not needed: the session serves every shape the model allows.

    Raises:
        ExportError: the graph has ops or forms the exporter cannot write (all listed).
        BackendUnavailableError: a requested execution provider is not in this onnxruntime build.
        InputError: an unknown option or an option value of the wrong kind.
        EdgeInferError: ONNX Runtime rejects the exported model (its message included).
    """
    import onnxruntime as ort

    options = dict(options or {})
    check_options(NAME, options, OPTIONS)
    providers, provider_options = _providers(ort, options)
    so = _session_options(ort, threads, options)
    fallback = None
    with exported_onnx(graph) as model:
        try:
            session = ort.InferenceSession(model, so, providers=providers, provider_options=provider_options)
        except Exception as e:  # onnxruntime's Fail / NotImplemented / InvalidGraph / RuntimeError
            if "graph_optimization_level" in options or not _optimizer_made(str(e), graph):
                raise EdgeInferError(f"ONNX Runtime could not load the exported model of graph '{graph.name}': {e}") from e
            # ORT's own rewrites produced a node it then rejects (seen: its transpose optimizer
            # writes QuantizeLinear(output_dtype=INT8) with a UINT8 zero point on int8 QDQ graphs,
            # onnxruntime 1.32): the model is fine, so load it with only the basic rewrites
            so = _session_options(ort, threads, {**options, "graph_optimization_level": "basic"})
            try:
                session = ort.InferenceSession(model, so, providers=providers, provider_options=provider_options)
            except Exception as e2:
                raise EdgeInferError(f"ONNX Runtime could not load the exported model of graph '{graph.name}': "
                                     f"{e2}") from e2
            fallback = f"loaded with graph_optimization_level='basic': the full level failed: {str(e)[:300]}"
    exe = OrtExecutable(graph, session)
    exe.fallback = fallback
    if fallback is None and "graph_optimization_level" not in options:
        exe.reload_basic = lambda: _basic_session(ort, graph, threads, options, providers, provider_options)
    return exe


def _basic_session(ort, graph: Graph, threads, options: dict, providers, provider_options):
    so = _session_options(ort, threads, {**options, "graph_optimization_level": "basic"})
    with exported_onnx(graph) as model:
        return ort.InferenceSession(model, so, providers=providers, provider_options=provider_options)


def _optimizer_made(message: str, graph: Graph) -> bool:
    """Whether ORT's load error names a node that is not in the exported graph (one its graph
    optimizer made)."""
    import re

    names = {n.name for n in graph.walk_nodes() if n.name}
    found = re.findall(r"Node \(([^)]*)\)", message)
    return bool(found) and any(f not in names for f in found)


def _providers(ort, options: dict) -> tuple[list[str], list[dict]]:
    providers = options.get("providers", DEFAULT_PROVIDERS)
    if isinstance(providers, str):
        providers = [providers]
    providers = list(providers)
    have = ort.get_available_providers()
    absent = [p for p in providers if p not in have]
    if absent or not providers:
        raise BackendUnavailableError(
            f"backend 'ort': execution provider(s) {absent or providers} not available in onnxruntime "
            f"{ort.__version__}; available: {have}"
            + ("; CUDA and TensorRT need the onnxruntime-gpu package" if any("CUDA" in p or "Tensorrt" in p
                                                                           for p in absent) else "")
        )
    given = options.get("provider_options")
    if given is None:
        return providers, [{} for _ in providers]
    if isinstance(given, dict):
        extra = [k for k in given if k not in providers]
        if extra:
            raise InputError(f"backend 'ort' option 'provider_options' names provider(s) {extra} "
                             f"that are not in 'providers' {providers}")
        given = [given.get(p, {}) for p in providers]
    given = list(given)
    if len(given) != len(providers) or not all(isinstance(d, dict) for d in given):
        raise InputError(f"backend 'ort' option 'provider_options' must hold one dict per provider "
                         f"({len(providers)}: {providers}), got {given!r}")
    return providers, [{str(k): str(v) for k, v in d.items()} for d in given]


def _session_options(ort, threads: int | None, options: dict):
    so = ort.SessionOptions()
    so.log_severity_level = _QUIET
    level = options.get("graph_optimization_level", "all")
    check_choice(NAME, "graph_optimization_level", level, _LEVELS)
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    if threads is not None:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    extra = options.get("session_options") or {}
    if not isinstance(extra, dict):
        raise InputError(f"backend 'ort' option 'session_options' must be a dict, got {type(extra).__name__}")
    for key, value in extra.items():
        if "." in key:  # a session config entry: "session.intra_op.allow_spinning", ...
            so.add_session_config_entry(key, str(value))
        elif not key.startswith("_") and hasattr(so, key) and not callable(getattr(so, key)):
            try:
                setattr(so, key, value)
            except (TypeError, ValueError) as e:
                raise InputError(f"backend 'ort' session option '{key}' cannot be {value!r}: {e}") from e
        else:
            known = sorted(a for a in dir(so) if not a.startswith("_") and not callable(getattr(so, a)))
            raise InputError(f"backend 'ort' session option '{key}' is not an onnxruntime.SessionOptions "
                             f"attribute nor a dotted config key; attributes: {', '.join(known)}")
    return so


class OrtExecutable:
    """One ``InferenceSession``; ``run`` is safe to call from several threads at once."""

    reload_basic = None  # set when the user left the optimization level to us: see ``run``
    fallback = None

    def __init__(self, graph: Graph, session):
        self.session = session
        self.providers = session.get_providers()
        self.output_names = [v.name for v in graph.outputs]
        self._dtypes = {v.name: v.dtype for v in graph.outputs}

    def run(self, feeds: dict) -> dict:
        try:
            values = self.session.run(self.output_names, feeds)
        except Exception as e:
            # ORT's full-level rewrites can also break a model at run time (seen: its transpose
            # optimizer moves a Transpose through a cubic Resize whose new scales that Resize then
            # rejects, on a ViT whose position embedding is read through DequantizeLinear). The
            # feeds were validated, so try once more with the basic rewrites only and keep that
            # session if it works.
            retry, self.reload_basic = self.reload_basic, None
            if retry is None:
                raise KernelError(f"ONNX Runtime failed running the model: {e}") from e
            try:
                session = retry()
                values = session.run(self.output_names, feeds)
            except Exception:
                raise KernelError(f"ONNX Runtime failed running the model: {e}") from e
            self.session = session
            self.fallback = (f"reloaded with graph_optimization_level='basic': running at the full level failed: "
                             f"{str(e)[:300]}")
        return {name: as_ir_value(v, self._dtypes[name]) for name, v in zip(self.output_names, values)}

