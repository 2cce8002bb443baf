"""The ``litert`` backend: the graph exported to a ``.tflite`` flatbuffer, run by LiteRT.

``compile`` exports the graph at the given input shapes (:func:`converters.tflite_export.
export_tflite`, images exposed NHWC) and caches the file on disk under
``$EDGEINFER_CACHE/litert`` (default ``~/.cache/edgeinfer/litert``), keyed by a hash of the
graph, the shapes, the options that change the file and the exporter's version; a second
compile of the same model only loads the file. The interpreter runs with XNNPACK (LiteRT's
default CPU delegate) and ``num_threads=threads``.

Options:
    ``{"reference": True}``: LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``, no
        XNNPACK), slow but simple: an oracle for the optimized kernels.
    ``{"delegate": "path/to/lib.so", "delegate_options": {...}}``: an external delegate
        (GPU, NPU...) loaded with ``load_delegate``.
    ``{"nchw_inputs": True}``: export with the IR's layout at the signature (transposes inside).

Feeds and results keep the IR's signature: the layout permutations the exporter records in
the model's ``edgeinfer_layout`` metadata translate them (a feed is transposed into the
exposed layout, a result back), so every backend answers with the same names, shapes and
dtypes.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, EdgeInferError, KernelError
from ..graph import Graph
from .digest import edgeinfer_cache, graph_digest

NAME = "litert"
EXPORT_VERSION = "2"  # bump when the exporter's output for a given graph changes
_CACHE_OPTIONS = ("nchw_inputs",)


def available() -> tuple[bool, str]:
    try:
        import ai_edge_litert  # noqa: F401
        from ai_edge_litert import interpreter  # noqa: F401
    except ImportError as e:
        return False, f"the 'ai-edge-litert' package is not installed ({e}); pip install 'edgeinfer[litert]'"
    version = getattr(ai_edge_litert, "__version__", "")
    return True, f"ai-edge-litert {version}".strip()


def unsupported(graph: Graph) -> list[str]:
    """Op types the TFLite exporter has no mapping for (shape-dependent limits are reported
    when ``compile`` exports the graph at concrete shapes)."""
    from ..converters.tflite_export import unsupported_op_types

    return unsupported_op_types(graph)


def cache_dir() -> Path:
    return edgeinfer_cache() / "litert"


def compile(graph: Graph, input_shapes: dict[str, tuple], threads: int | None = None, options: dict | None = None):
    """Export ``graph`` at ``input_shapes`` (cached on disk) and load it in a LiteRT interpreter.

    Raises:
        ExportError: the graph has ops or forms the exporter cannot write (all listed).
        BackendUnavailableError: a requested delegate library is missing or fails to load.
    """
    options = dict(options or {})
    path = _cached_model(graph, input_shapes, options)
    return LiteRTExecutable(graph, path, threads, options)


def _cached_model(graph: Graph, input_shapes: dict, options: dict) -> Path:
    from ..converters.tflite_export import export_tflite

    extra = {k: options.get(k) for k in _CACHE_OPTIONS}
    key = graph_digest(graph, input_shapes, extra, salt=f"litert-export-{EXPORT_VERSION}")
    path = cache_dir() / f"{key}.tflite"
    if not path.exists():
        export_tflite(graph, path, nchw_inputs=bool(options.get("nchw_inputs")), input_shapes=input_shapes)
    return path


def _load_delegates(options: dict) -> list:
    lib = options.get("delegate")
    if not lib:
        return []
    from ai_edge_litert.interpreter import load_delegate

    if not Path(lib).exists() and os.sep in str(lib):
        raise BackendUnavailableError(f"litert delegate library '{lib}' does not exist")
    try:
        return [load_delegate(str(lib), dict(options.get("delegate_options") or {}))]
    except (ValueError, OSError, RuntimeError) as e:
        raise BackendUnavailableError(f"litert could not load the delegate library '{lib}': {e}") from e


class LiteRTExecutable:
    """One interpreter over one exported model; ``run`` translates layouts both ways."""

    def __init__(self, graph: Graph, path: Path, threads: int | None, options: dict):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from ..converters.tflite_export import read_layout

        self.path = path
        layout = read_layout(path) or {"inputs": {}, "outputs": {}}
        resolver = OpResolverType.BUILTIN_REF if options.get("reference") else OpResolverType.AUTO
        delegates = _load_delegates(options)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads, experimental_delegates=delegates,
                                           experimental_op_resolver_type=resolver)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EdgeInferError(f"LiteRT could not prepare the exported model '{path}': {e}") from e
        by_name_in = {d["name"]: d for d in self.interpreter.get_input_details()}
        by_name_out = {d["name"]: d for d in self.interpreter.get_output_details()}
        self.inputs = []
        for v in graph.inputs:
            if v.name in graph.constants and v.name not in by_name_in:
                continue  # an overridable input the caller did not feed: a constant in the model
            d = by_name_in[v.name]
            self.inputs.append((v.name, d["index"], _perm(layout["inputs"].get(v.name))))
        self.outputs = []
        for v in graph.outputs:
            d = by_name_out[v.name]
            p = _perm(layout["outputs"].get(v.name))
            self.outputs.append((v.name, d["index"], None if p is None else tuple(np.argsort(p))))
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self.interpreter
        with self._lock:  # one interpreter holds one set of buffers
            for name, index, perm in self.inputs:
                x = feeds[name]
                # copy(order="C"), not ascontiguousarray, which makes a 0-d feed 1-d
                it.set_tensor(index, (x.transpose(perm) if perm is not None else x).copy(order="C"))
            try:
                it.invoke()
            except RuntimeError as e:
                raise KernelError(f"LiteRT failed running '{self.path.name}': {e}") from e
            out = {}
            for name, index, back in self.outputs:
                y = it.get_tensor(index)
                out[name] = y.transpose(back).copy(order="C") if back is not None else y.copy()
        return out


def _perm(p) -> tuple | None:
    if p is None:
        return None
    p = tuple(int(a) for a in p)
    return None if p == tuple(range(len(p))) else p
