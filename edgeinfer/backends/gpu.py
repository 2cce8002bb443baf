"""The ``gpu`` backend: edgeinfer's kernels on an NVIDIA GPU through CuPy.

``compile`` specialises the graph to concrete input shapes, like the cpu backend:

1. the cpu backend's front end: constant folding + shape inference in one pass
   (:func:`edgeinfer.shape_inference.propagate`), which turns every shape computation into
   constants, then the rewrites of :mod:`edgeinfer.optimize` whose results have gpu kernels
   (Identity removal, layout simplification, activation patterns, affine folding into convs,
   Conv/Gemm/MatMul + bias/residual + activation fusion). The squeeze-and-excite and
   channels-last passes are left out: they pay off on a CPU only;
2. kernel binding (:mod:`.gpu_kernels`): each node's factory runs once with its static shapes
   and constant inputs. Weights are reshaped for their GEMMs and uploaded to the device here,
   once; a run uploads the feeds and nothing else;
3. with static shapes (always, after 1.) the whole run is captured as a CUDA graph: inputs are
   copied into preallocated device buffers, one graph launch runs every kernel, and the
   outputs are read from buffers the graph writes. Capture needs a warm-up run first (it
   compiles the CUDA kernels and sizes the memory pool); the graph's intermediates live in a
   memory pool of its own, so nothing else can reuse their memory. When capture fails the
   executable runs kernel by kernel and says why in ``cuda_graph_reason``.

Options:
    ``precision``: ``"fp32"`` (default) or ``"fp16"``: weights and activations in half
        precision (every float32 tensor of the graph becomes float16; softmax, normalizations
        and means accumulate in float32); outputs are cast back to the graph's dtypes.
        Precision is never lowered unless asked (TF32 stays off, CuPy's default).
    ``cuda_graph``: capture the run as a CUDA graph (default True).
    ``device``: CUDA device index (default 0).
    ``optimize``: False skips the rewrites of step 1 (folding still runs).
    ``array_module``: ``"cupy"`` (default) or ``"numpy"``: run the same kernels on the host
        with numpy, without a GPU (how CI tests the kernel code; no CUDA graph then).
    ``profile``: ignored (per-node profiles come from the cpu backend).

``threads`` is ignored: the GPU schedules its own threads.

Executables are safe to call from several threads (runs take a lock: they share the graph's
input and output buffers).
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import dtypes as _dt
from ..errors import BackendUnavailableError, EdgeInferError, InputError, KernelError, UnsupportedOpError
from ..graph import Graph, Node, TensorType, outer_reads
from ..kernels.registry import is_supported
from ..shape_inference import NONDETERMINISTIC, propagate
from .cpu import _input_type, _Planner, step_failure
from .exported_onnx import check_choice, check_options
from .gpu_kernels import GpuContext, build, has_kernel

NAME = "gpu"
OPTIONS = {
    "precision": "'fp32' (default) or 'fp16' (weights and activations in half, outputs cast back)",
    "cuda_graph": "capture each run as a CUDA graph (default True)",
    "device": "CUDA device index (default 0)",
    "optimize": "False skips the graph rewrites (constant folding still runs)",
    "array_module": "'cupy' (default) or 'numpy' (the same kernels on the host, for tests without a GPU)",
    "profile": "ignored (per-node profiles come from the cpu backend)",
}
_INSTALL_HINT = "cupy is not installed; pip install 'edgeinfer[gpu]'"


@functools.lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    try:
        import cupy
    except ImportError:
        return False, _INSTALL_HINT
    except Exception as e:  # a broken CUDA install can fail at import with other errors
        return False, f"cupy failed to import: {type(e).__name__}: {e}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return False, "no CUDA device: the CUDA runtime reports 0 devices"
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        rt = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as e:  # CUDARuntimeError: no driver, no device, ...
        return False, f"no CUDA device: {e}"
    return True, f"cupy {cupy.__version__}, CUDA {rt // 1000}.{rt % 1000 // 10}, {name}"


def _label(n: Node) -> str:
    return f"{n.domain}::{n.op_type}" if n.domain else n.op_type


def unsupported(graph: Graph) -> list[str]:
    """Op types with no gpu kernel, subgraphs included, leaving out nodes that compiling will
    fold into constants: Shape/Size (shapes are concrete when compiling) and every node whose
    inputs are all constants or folded values (shape arithmetic, constant weights' Cast...).
    Limits that depend on shapes or on which inputs are constant are reported by ``compile``."""
    missing: set[str] = set()
    static = {k for k in graph.constants if k not in set(graph.input_names)}
    for n in graph.nodes:
        reads = [i for i in n.inputs if i] + sorted(outer_reads(n))
        foldable = is_supported(n.op_type, n.domain) and n.op_type not in NONDETERMINISTIC and (
            n.op_type in ("Shape", "Size") or all(r in static for r in reads))
        if foldable:
            static.update(o for o in n.outputs if o)
            continue
        if not has_kernel(n.op_type, n.domain):
            missing.add(_label(n))
        for sub in n.subgraphs():
            missing.update(_label(m) for m in sub.walk_nodes() if not has_kernel(m.op_type, m.domain))
    return sorted(missing)


# ------------------------------------------------------------------------ front end
def _rewrite(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """The rewrites of :func:`edgeinfer.optimize.optimize` whose output ops have gpu kernels."""
    from ..optimize import (fold_affine, fuse_activation_patterns, fuse_conv_activation, remove_identities,
                            simplify_layout)
    from ..rewrite import until_stable

    g = remove_identities(graph)
    g = until_stable(simplify_layout, g, types)
    g = until_stable(fuse_activation_patterns, g, types)
    g = fold_affine(g, types)
    g = fuse_conv_activation(g, types)
    g.remove_unused()
    return g


def front_end(graph: Graph, input_shapes: dict[str, tuple], optimize: bool = True) -> tuple[Graph, dict]:
    """(graph with constants folded [and rewritten], type of every tensor) for concrete shapes."""
    g = graph.copy()
    g.inputs = [v for v in g.inputs if v.name not in g.constants]
    absent = [v.name for v in g.inputs if v.name not in input_shapes]
    if absent:
        raise InputError(f"backend 'gpu': no input shape given for {absent}; given: {sorted(input_shapes)}")
    in_types = {v.name: _input_type(v, input_shapes[v.name]) for v in g.inputs}
    types, values = propagate(g, in_types, fold=True)
    folded = _Planner._drop_folded(g, values)  # the cpu backend's rule: nodes whose outputs are all known go
    if not optimize:
        return folded, types
    out = _rewrite(folded, types)
    types, _ = propagate(out, in_types, fold=False, values=dict(out.constants), prior=(folded, types, values))
    return out, types


# --------------------------------------------------------------------------- compile
def compile(graph: Graph, input_shapes: dict[str, tuple], threads: int | None = None, options: dict | None = None):
    """Compile ``graph`` for the given concrete input shapes (see the module docstring).

    Args:
        graph: the model graph (not modified).
        input_shapes: concrete shape for every graph input without a default.
        threads: ignored (the GPU schedules its own threads).
        options: see the module docstring.

    Raises:
        BackendUnavailableError: cupy or the CUDA device is missing.
        UnsupportedOpError: ops left after folding that have no gpu kernel (all listed).
        KernelError: a node whose form (dynamic weights, 3-D conv, ...) the gpu kernels lack.
        InputError: an unknown option or a bad option value.
    """
    options = dict(options or {})
    check_options(NAME, options, OPTIONS)
    precision = options.get("precision", "fp32")
    check_choice(NAME, "precision", precision, ("fp32", "fp16"))
    module = options.get("array_module", "cupy")
    check_choice(NAME, "array_module", module, ("cupy", "numpy"))
    use_graph = options.get("cuda_graph", True)
    if not isinstance(use_graph, bool):
        raise InputError(f"backend 'gpu' option 'cuda_graph' must be True or False, got {use_graph!r}")
    device = options.get("device", 0)
    if not isinstance(device, int) or isinstance(device, bool) or device < 0:
        raise InputError(f"backend 'gpu' option 'device' must be a CUDA device index >= 0, got {device!r}")
    if module == "numpy":
        xp, dev = np, None
    else:
        ok, why = available()
        if not ok:
            raise BackendUnavailableError(f"backend 'gpu' is not available: {why}")
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        if device >= count:
            raise BackendUnavailableError(f"backend 'gpu': no CUDA device {device}; this machine has {count}")
        xp, dev = cupy, cupy.cuda.Device(device)
    g, types = front_end(graph, input_shapes, options.get("optimize", True))
    missing = sorted({_label(n) for n in g.walk_nodes() if not has_kernel(n.op_type, n.domain)})
    if missing:
        raise UnsupportedOpError(
            f"backend 'gpu' has no kernel for {len(missing)} operator type(s) left after constant folding "
            f"of graph '{graph.name}': {', '.join(missing)}", missing)
    plan = _Binder(g, types, xp, precision == "fp16", dev).bind()
    return GpuExecutable(plan, xp, dev, use_graph and xp is not np)


@dataclass
class _Step:
    node: Node
    fn: Callable
    ins: list[int]  # register per input; -1: None (missing, or a constant the kernel took)
    outs: list[int]
    free_after: list[int] = field(default_factory=list)


@dataclass
class _Plan:
    graph: Graph
    steps: list[_Step]
    n_slots: int
    template: list[Any]  # registers holding device constants
    inputs: list[tuple[str, int, np.dtype, np.dtype, tuple]]  # name, slot, feed dtype, compute dtype, shape
    outputs: list[tuple[str, int, np.dtype]]  # name, slot, graph dtype
    uploaded_bytes: int
    uploads: int
    precision: str


class _Binder:
    """Builds every node's kernel and uploads the constants the kernels read at run time."""

    def __init__(self, g: Graph, types: dict[str, TensorType], xp, half: bool, dev):
        self.g, self.types, self.xp, self.half, self.dev = g, types, xp, half, dev
        self.uploaded_bytes = 0
        self.uploads = 0

    def compute_type(self, t: TensorType | None) -> TensorType | None:
        if t is not None and self.half and t.dtype == "float32":
            return TensorType("float16", t.shape)
        return t

    def upload(self, arr: np.ndarray, round_float32: bool = True):
        if round_float32 and self.half and arr.dtype == np.float32:
            arr = arr.astype(np.float16)
        self.uploaded_bytes += int(arr.nbytes)
        self.uploads += 1
        if self.xp is np:
            return np.array(arr, copy=True)
        return self.xp.asarray(np.ascontiguousarray(arr))

    def bind(self) -> _Plan:
        if self.dev is None:
            return self._bind()
        with self.dev:
            return self._bind()

    def _bind(self) -> _Plan:
        g, types = self.g, self.types
        used = {x for n in g.nodes for x in (*n.inputs, *n.outputs) if x}
        for name in sorted(used):
            t = types.get(name)
            static = t is None or not _dt.is_tensor(t.dtype) or (
                t.shape is not None and all(isinstance(d, int) for d in t.shape))
            if not static:
                raise KernelError(f"backend 'gpu': tensor '{name}' has no static shape ({t.shape}) after folding")
        slots: dict[str, int] = {}

        def slot(name: str) -> int:
            if name not in slots:
                slots[name] = len(slots)
            return slots[name]

        scratch = slot("")
        for v in g.inputs:
            slot(v.name)
        device_consts: dict[int, Any] = {}
        steps: list[_Step] = []
        for node in g.nodes:
            ctx = GpuContext(
                node,
                [self.compute_type(types.get(i)) if i else None for i in node.inputs],
                [g.constants.get(i) if i else None for i in node.inputs],
                [self.compute_type(types.get(o)) if o else None for o in node.outputs],
                xp=self.xp,
                uploader=self._ctx_upload,
            )
            try:
                fn = build(ctx)
            except EdgeInferError as e:
                if node.label in str(e):
                    raise
                raise KernelError(f"{node.label}: {e}") from e
            except Exception as e:
                raise KernelError(f"{node.label}: building the gpu kernel failed: {type(e).__name__}: {e}") from e
            ins = []
            for k, name in enumerate(node.inputs):
                if not name or k in ctx.baked:
                    ins.append(-1)
                    continue
                s = slot(name)
                if name in g.constants and s not in device_consts:
                    device_consts[s] = self.upload(g.constants[name])
                ins.append(s)
            outs = [slot(o) if o else scratch for o in node.outputs]
            steps.append(_Step(node, fn, ins, outs))
        for v in g.outputs:  # an output that is a constant or an input
            s = slot(v.name)
            if v.name in g.constants and s not in device_consts:
                device_consts[s] = self.upload(g.constants[v.name])
        _plan_frees(steps, {slots[v.name] for v in g.outputs})
        template = [None] * len(slots)
        for s, arr in device_consts.items():
            template[s] = arr
        inputs = []
        for v in g.inputs:
            feed = np.dtype(_dt.to_numpy(types[v.name].dtype))
            comp = np.dtype(_dt.to_numpy(self.compute_type(types[v.name]).dtype))
            inputs.append((v.name, slots[v.name], feed, comp, tuple(types[v.name].shape)))
        outputs = [(v.name, slots[v.name], np.dtype(_dt.to_numpy(types[v.name].dtype))) for v in g.outputs]
        return _Plan(g, steps, len(slots), template, inputs, outputs, self.uploaded_bytes, self.uploads,
                     "fp16" if self.half else "fp32")

    def _ctx_upload(self, arr: np.ndarray, round_float32: bool):
        return self.upload(arr, round_float32)


def _plan_frees(steps: list[_Step], keep: set[int]) -> None:
    """Drop each register after its last reader, so the memory pool can reuse its block."""
    last: dict[int, int] = {}
    for k, st in enumerate(steps):
        for s in list(st.ins) + list(st.outs):
            if s >= 0:
                last[s] = k
    for s, k in last.items():
        if s not in keep:
            steps[k].free_after.append(s)


class GpuExecutable:
    """A compiled plan on one device. Attributes worth reading:

    ``cuda_graph`` (bool) and ``cuda_graph_reason`` (why not, or ""); ``uploaded_bytes`` and
    ``uploads``: what compiling put on the device (runs upload only their feeds);
    ``precision``; ``graph``: the graph after folding and rewrites.
    """

    def __init__(self, plan: _Plan, xp, dev, use_graph: bool):
        self.plan = plan
        self.xp = xp
        self.device = dev
        self.precision = plan.precision
        self.uploaded_bytes = plan.uploaded_bytes
        self.uploads = plan.uploads
        self._lock = threading.Lock()
        self.cuda_graph = False
        self.cuda_graph_reason = "array module is numpy" if xp is np else "disabled by option cuda_graph=False"
        self._stream = None
        self._graph = None
        if xp is not np:
            with dev:
                # the weights went up on the legacy stream, which a non-blocking stream does
                # not wait for: finish them before any kernel reads them
                dev.synchronize()
                self._stream = xp.cuda.Stream(non_blocking=True)
                if use_graph:
                    self._capture()

    @property
    def graph(self) -> Graph:
        return self.plan.graph

    # ---------------------------------------------------------------- one run on device
    def _device_run(self, device_inputs: dict[str, Any]) -> dict[str, Any]:
        """Every step on device arrays; returns the outputs as new arrays in graph dtypes."""
        plan, xp = self.plan, self.xp
        r = list(plan.template) + [None]
        for name, s, feed_dt, comp_dt, _ in plan.inputs:
            x = device_inputs[name]
            r[s] = x.astype(comp_dt) if comp_dt != feed_dt else x
        k = 0
        try:
            for k, st in enumerate(plan.steps):
                res = st.fn(*[r[i] if i >= 0 else None for i in st.ins])
                if len(st.outs) == 1:
                    r[st.outs[0]] = res[0] if isinstance(res, tuple) else res
                else:
                    for o, v in zip(st.outs, res):
                        r[o] = v
                for d in st.free_after:
                    r[d] = None
        except Exception as e:
            err = step_failure(plan.steps[k].node, plan.steps[k].ins, r, e, " on the gpu backend")
            if err is e:
                raise
            raise err from e
        return {name: xp.asarray(r[s]).astype(dt, copy=True) for name, s, dt in plan.outputs}

    def _capture(self) -> None:
        """Warm up, then capture one run as a CUDA graph into a private memory pool."""
        import cupy

        stream = self._stream
        pool = cupy.cuda.MemoryPool()
        try:
            with stream, cupy.cuda.using_allocator(pool.malloc):
                bufs = {name: cupy.zeros(shape, feed_dt) for name, _, feed_dt, _, shape in self.plan.inputs}
                self._device_run(bufs)  # compiles kernels, creates BLAS handles, fills the pool
                stream.synchronize()
                stream.begin_capture()
                try:
                    outs = self._device_run(bufs)
                finally:
                    graph = stream.end_capture()
                graph.upload(stream)
                stream.synchronize()
        except Exception as e:  # capture is an optimisation: run kernel by kernel instead
            self.cuda_graph_reason = f"capture failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return
        self._pool, self._in_bufs, self._out_bufs, self._graph = pool, bufs, outs, graph
        self.cuda_graph, self.cuda_graph_reason = True, ""

    # ------------------------------------------------------------------------- runs
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.xp is np:
            outs = self._device_run({name: feeds[name] for name, *_ in self.plan.inputs})
            return dict(outs)
        with self._lock, self.device:
            try:
                if self._graph is not None:
                    return self._run_graph(feeds)
                with self._stream:
                    outs = self._device_run({name: self.xp.asarray(feeds[name]) for name, *_ in self.plan.inputs})
                    res = {name: y.get(stream=self._stream) for name, y in outs.items()}
                    self._stream.synchronize()
                    return res
            except EdgeInferError:
                raise
            except Exception as e:  # an asynchronous CUDA error surfaces at the copy back
                raise KernelError(f"backend 'gpu': the run failed on the device: {type(e).__name__}: {e}") from e

    def _run_graph(self, feeds) -> dict[str, np.ndarray]:
        stream = self._stream
        for name, buf in self._in_bufs.items():
            buf.set(np.ascontiguousarray(feeds[name], dtype=buf.dtype), stream=stream)
        self._graph.launch(stream)
        res = {name: y.get(stream=stream) for name, y in self._out_bufs.items()}
        stream.synchronize()
        return res
