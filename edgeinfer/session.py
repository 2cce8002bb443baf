"""``Session``: run a model on a backend, with feeds checked before any kernel sees them."""
from __future__ import annotations

import threading
from typing import Any, Mapping

import numpy as np

from . import dtypes as _dt
from .backends import get_backend
from .errors import InputError, UnsupportedOpError
from .graph import Graph, TensorType, ValueInfo, format_shape


class Session:
    """A model bound to a backend.

    Compiles once per input-shape signature (and per set of overridden default inputs) and
    caches the plan, so a model with symbolic dims serves new shapes without recompiling old
    ones. ``run`` may be called from several threads at once.

    Args:
        model: a :class:`~edgeinfer.graph.Graph`, a path (.onnx, .eim) or an ``onnx.ModelProto``.
        backend: backend name (``edgeinfer backends`` lists them).
        threads: threads for the backend's math (``None``: the backend's default; 1: one thread).
        options: backend-specific options.
        profile: time every node of every run (backends that support it: ``cpu``); read the
            result with :meth:`profile`. Off by default, and then it costs nothing.

    Example:
        >>> sess = Session("model.onnx")
        >>> out = sess.run({"image": x})["logits"]
    """

    def __init__(self, model: Any, backend: str = "cpu", threads: int | None = None, options: dict | None = None,
                 profile: bool = False):
        from .api import load

        self.graph: Graph = model if isinstance(model, Graph) else load(model)
        self.graph.validate()
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer or None, got {threads!r}")
        self.backend = backend
        self.threads = threads
        self.options = dict(options or {})
        if profile:
            self.options["profile"] = True
        self._backend = get_backend(backend)
        missing = self._backend.unsupported(self.graph)
        if missing:
            raise UnsupportedOpError(
                f"backend '{backend}' cannot run {len(missing)} operator type(s) of this model: {', '.join(missing)}",
                missing,
            )
        self._plans: dict[tuple, Any] = {}
        self._last = None  # the most recently compiled executable (backend_report)
        self._lock = threading.Lock()
        self._required = self.graph.required_inputs()
        # sequence/optional inputs: plans are not specialised on their element shapes
        self._composite = {v.name: TensorType(v.dtype, None) for v in self.graph.inputs if not _dt.is_tensor(v.dtype)}
        self._overridable = {v.name: v for v in self.graph.overridable_inputs()}
        static = {v.name: v.shape for v in self._required if v.is_static()}
        if len(static) == len(self._required):
            self._executable(static, frozenset())

    @property
    def inputs(self) -> list[ValueInfo]:
        """Inputs the caller must feed: name, dtype, shape (symbolic dims are strings)."""
        return list(self._required)

    @property
    def overridable_inputs(self) -> list[ValueInfo]:
        """Inputs with a default value (ONNX initializers listed as inputs) a feed may replace."""
        return list(self._overridable.values())

    @property
    def outputs(self) -> list[ValueInfo]:
        return list(self.graph.outputs)

    @property
    def backend_report(self) -> dict:
        """Which backend runs this session and why, for the most recently compiled input shapes.

        For ``backend="auto"`` the full decision (every candidate with its status, reason,
        median time and error vs cpu; see :mod:`edgeinfer.backends.auto`); for a named backend
        ``{"chosen": name, "reason": "named by the caller"}``. Empty before the first compile
        when the model has symbolic inputs.
        """
        exe = self._last
        if exe is None:
            return {}
        report = getattr(exe, "backend_report", None)
        return dict(report) if report is not None else {"chosen": self.backend, "reason": "named by the caller"}

    def run(self, feeds: Mapping[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            feeds: input name -> array. Dtypes must match exactly; shapes must match the
                declared dims (symbolic dims must agree across inputs).
            output_names: subset of outputs to return (default: all, in graph order).

        Raises:
            InputError: for a missing, unknown, mistyped or misshaped feed, naming it.
            KernelError: when a node fails at run time, naming the node.
        """
        feeds = self._check_feeds(feeds)
        names = self._check_output_names(output_names)
        shapes = {name: (tuple(arr.shape) if isinstance(arr, np.ndarray) else self._composite[name])
                  for name, arr in feeds.items()}
        overridden = frozenset(n for n in feeds if n in self._overridable)
        exe = self._executable(shapes, overridden)
        out = exe.run(feeds)
        return {n: out[n] for n in names}

    def profile(self) -> dict:
        """Wall time per node and per op type, summed over the runs since the last reset.

        Needs ``Session(..., profile=True)``. Returns::

            {"runs": int, "total_ms": float,
             "nodes": [{"node", "op_type", "outputs", "calls", "total_ms", "mean_ms"}, ...],
             "op_types": {op_type: {"nodes": int, "total_ms": float, "share": float}}}

        ``nodes`` are in execution order (one record per node and compiled input-shape
        signature); ``op_types`` is sorted by time, most first. Fused nodes are reported as
        their fused op (``edgeinfer::FusedConv``, ...) with the absorbed activation in ``fused``.

        Raises:
            InputError: when the session was not created with ``profile=True``.
        """
        if not self.options.get("profile"):
            raise InputError("this Session was created without profile=True, so it has no profile")
        runs, nodes = 0, []
        for exe in list(self._plans.values()):
            report = exe.profile() if hasattr(exe, "profile") else {"runs": 0, "nodes": []}
            runs += report["runs"]
            nodes.extend(report["nodes"])
        per_op: dict[str, dict] = {}
        for rec in nodes:
            rec["mean_ms"] = rec["total_ms"] / rec["calls"] if rec["calls"] else 0.0
            entry = per_op.setdefault(rec["op_type"], {"nodes": 0, "total_ms": 0.0})
            entry["nodes"] += 1
            entry["total_ms"] += rec["total_ms"]
        total = sum(e["total_ms"] for e in per_op.values())
        for entry in per_op.values():
            entry["share"] = entry["total_ms"] / total if total else 0.0
        op_types = dict(sorted(per_op.items(), key=lambda kv: -kv[1]["total_ms"]))
        return {"runs": runs, "total_ms": total, "nodes": nodes, "op_types": op_types}

    def reset_profile(self) -> None:
        """Start the profile afresh (the compiled plans stay)."""
        for exe in list(self._plans.values()):
            if hasattr(exe, "reset_profile"):
                exe.reset_profile()

    # ----------------------------------------------------------------- internals
    def _executable(self, shapes: dict[str, tuple], overridden: frozenset):
        key = (tuple(sorted(shapes.items())), tuple(sorted(overridden)))
        exe = self._plans.get(key)
        if exe is not None:
            return exe
        with self._lock:
            exe = self._plans.get(key)
            if exe is None:
                graph = self.graph
                if overridden:
                    graph = graph.copy()
                    for name in overridden:
                        del graph.constants[name]
                exe = self._backend.compile(graph, shapes, self.threads, self.options)
                self._plans[key] = exe
                self._last = exe
        return exe

    def _check_output_names(self, output_names):
        all_names = self.graph.output_names
        if output_names is None:
            return all_names
        if isinstance(output_names, str):
            output_names = [output_names]
        unknown = [n for n in output_names if n not in all_names]
        if unknown:
            raise InputError(f"unknown output name(s) {unknown}; the model's outputs are {all_names}")
        return list(output_names)

    def _check_feeds(self, feeds) -> dict[str, np.ndarray]:
        if self._feeds_fit(feeds):
            return feeds
        if not isinstance(feeds, Mapping):
            raise InputError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
        known = {v.name for v in self._required} | set(self._overridable)
        unknown = [k for k in feeds if k not in known]
        if unknown:
            raise InputError(
                f"unknown input name(s) {unknown}; the model's inputs are "
                f"{[v.name for v in self._required]}"
                + (f" (overridable: {sorted(self._overridable)})" if self._overridable else "")
            )
        missing = [v.name for v in self._required if v.name not in feeds]
        if missing:
            expected = ", ".join(str(v) for v in self._required)
            raise InputError(f"missing input(s) {missing}; expected {expected}")
        out: dict[str, np.ndarray] = {}
        bound: dict[str, tuple[int, str]] = {}
        for name, value in feeds.items():
            info = self._overridable.get(name)
            if info is None:
                info = next(v for v in self._required if v.name == name)
            if not _dt.is_tensor(info.dtype):
                out[name] = _check_composite(name, value, info.dtype)
                continue
            arr = value if isinstance(value, np.ndarray) else _as_array(name, value)
            got = _dt.from_numpy(arr.dtype) if arr.dtype.kind not in "US" else "string"
            if got != info.dtype:
                raise InputError(f"input '{name}' expects dtype {info.dtype}, got {got} (shape {list(arr.shape)})")
            if arr.dtype.kind in "US":
                arr = arr.astype(object)
            if info.shape is not None:
                if arr.ndim != len(info.shape):
                    raise InputError(
                        f"input '{name}' expects rank {len(info.shape)} {format_shape(info.shape)}, "
                        f"got rank {arr.ndim} {list(arr.shape)}"
                    )
                for axis, (want, have) in enumerate(zip(info.shape, arr.shape)):
                    if isinstance(want, int) and want != have:
                        raise InputError(
                            f"input '{name}' has mismatch on dim {axis}: expected {want}, got {have} "
                            f"(expected shape {format_shape(info.shape)}, got {list(arr.shape)})"
                        )
                    if isinstance(want, str) and want not in ("?", ""):
                        prev = bound.get(want)
                        if prev is not None and prev[0] != have:
                            raise InputError(
                                f"input '{name}' dim {axis} ('{want}') is {have}, but input '{prev[1]}' "
                                f"set '{want}' = {prev[0]}"
                            )
                        bound[want] = (have, name)
            out[name] = arr
        return out

    def _feeds_fit(self, feeds) -> bool:
        """True when ``feeds`` is a dict holding exactly the required inputs as arrays of the
        declared dtype and dims: the common case, checked in a few microseconds. Anything else
        (overridden defaults, lists, shared symbolic dims, a mistake) takes the full checks."""
        spec = getattr(self, "_feed_spec", None)
        if spec is None:
            spec = self._feed_spec = _fast_feed_spec(self._required)
        if type(feeds) is not dict or len(feeds) != len(spec) or not spec:
            return False
        for name, value in feeds.items():
            want = spec.get(name)
            if want is None or type(value) is not np.ndarray or value.dtype != want[0]:
                return False
            shape, dims = value.shape, want[1]
            if len(shape) != len(dims) or any(d is not None and d != h for d, h in zip(dims, shape)):
                return False
        return True

    def __repr__(self) -> str:
        ins = ", ".join(str(v) for v in self._required)
        outs = ", ".join(str(v) for v in self.graph.outputs)
        return f"Session(backend='{self.backend}', inputs=[{ins}], outputs=[{outs}])"


def _check_composite(name: str, value, dtype: str, where: str = ""):
    """A sequence (list of arrays) or optional (None or a value) feed checked against ``dtype``."""
    where = where or f"input '{name}'"
    if _dt.is_optional(dtype):
        return None if value is None else _check_composite(name, value, _dt.element_type(dtype), where)
    if _dt.is_sequence(dtype):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} is a sequence ({dtype}); pass a list of arrays, got {type(value).__name__}")
        elem = _dt.element_type(dtype)
        return [_check_composite(name, v, elem, f"{where} item {i}") for i, v in enumerate(value)]
    arr = value if isinstance(value, np.ndarray) else _as_array(name, value)
    got = _dt.from_numpy(arr.dtype) if arr.dtype.kind not in "US" else "string"
    if got != dtype:
        raise InputError(f"{where} expects dtype {dtype}, got {got} (shape {list(arr.shape)})")
    return arr.astype(object) if arr.dtype.kind in "US" else arr


def _fast_feed_spec(required: list[ValueInfo]) -> dict[str, tuple[np.dtype, tuple]]:
    """name -> (numpy dtype, dims with None for a free dim) of the inputs a feed may be
    accepted for without the full checks: known rank, not strings, and no symbolic dim that
    another dim shares (those need the cross-input check)."""
    symbols: dict[str, int] = {}
    for v in required:
        for d in v.shape or ():
            if isinstance(d, str):
                symbols[d] = symbols.get(d, 0) + 1
    spec = {}
    for v in required:
        if v.shape is None or v.dtype == "string":
            continue
        if any(isinstance(d, str) and d not in ("?", "") and symbols[d] > 1 for d in v.shape):
            continue
        try:
            dtype = np.dtype(_dt.to_numpy(v.dtype))
        except Exception:  # a dtype numpy cannot hold: the full checks decide
            continue
        spec[v.name] = (dtype, tuple(d if isinstance(d, int) else None for d in v.shape))
    # every required input must be covered, or a feed set could pass without one of them
    return spec if len(spec) == len(required) else {}


def _as_array(name: str, value) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception as e:
        raise InputError(f"input '{name}' is a {type(value).__name__} that cannot be read as an array: {e}") from e
