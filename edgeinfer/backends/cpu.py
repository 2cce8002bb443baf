"""The ``cpu`` backend: edgeinfer's own numpy runtime.

``compile`` specialises a graph to concrete input shapes, once:

1. constant folding + shape inference in one pass (:func:`edgeinfer.shape_inference.propagate`),
   which also turns all shape arithmetic into constants;
2. graph rewrites (:mod:`edgeinfer.optimize`): Identity/Dropout removal, Transpose/Reshape
   chains, BatchNorm and per-channel affine folding, multi-op activation spellings,
   Conv/Gemm/MatMul + bias/residual + activation fusion, squeeze-and-excite fusion and
   channels-last depthwise convs;
3. kernel binding: each node's factory runs with its static shapes and constant inputs and
   returns a closure (see :mod:`edgeinfer.kernels.registry`);
4. a buffer plan by lifetime: outputs of kernels that can write into a given array get a slice
   of a reusable arena; an arena block returns to the free list once every tensor that may
   view it is dead.

At run time an executable only calls one closure per node over a register list. Each calling
thread gets its own arena (a pool of instances), so one compiled plan serves many threads.
With ``{"profile": True}`` the instances run a second loop that reads the clock after every
node and sums the times (:meth:`CpuExecutable.profile`); without it the loop is the plain one.
"""
from __future__ import annotations

import gc
import math
import operator
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import dtypes as _dt
from ..errors import EdgeInferError, KernelError, ShapeInferenceError
from ..graph import Graph, Node, TensorType, outer_reads
from ..kernels.registry import OpContext, build_kernel, get_schema, is_supported, resolve_attrs
from ..kernels.elementwise import FP_ERRORS_IGNORED
from ..optimize import optimize
from ..shape_inference import propagate

NAME = "cpu"

# Arena blocks are aligned so BLAS sees aligned operands.
_ALIGN = 64


def available() -> tuple[bool, str]:
    return True, f"numpy {np.__version__}"


def unsupported(graph: Graph) -> list[str]:
    """Op types in the graph (subgraphs included) that have no numpy kernel."""
    missing = {
        (f"{n.domain}::{n.op_type}" if n.domain else n.op_type)
        for n in graph.walk_nodes()
        if not is_supported(n.op_type, n.domain)
    }
    return sorted(missing)


def compile(graph: Graph, input_shapes: dict[str, tuple], threads: int | None = None, options: dict | None = None):
    """Compile ``graph`` for the given concrete input shapes.

    Inputs that also have a constant default (overridable initializers) are treated as
    constants here; the Session removes the default of any such input the caller feeds.

    Args:
        graph: the model graph (not modified).
        input_shapes: concrete shape for every graph input without a default.
        threads: BLAS threads for this executable (``None`` leaves the process setting).
        options: ``{"optimize": False}`` turns off fusion (useful to debug a fusion);
            ``{"profile": True}`` times every node (see :meth:`CpuExecutable.profile`).
    """
    options = dict(options or {})
    # Compiling allocates many small objects and no cycles worth collecting; the cyclic GC's
    # passes over them were 10-25% of compile time on ~1000-node graphs.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        with _small_pages():
            plan = _Planner(graph, input_shapes, options).build()
        return CpuExecutable(plan, threads, profile=bool(options.get("profile")))
    finally:
        if gc_was_on:
            gc.enable()


def _hugepage_switch():
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    return getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)


_PAGES_LOCK = threading.Lock()
_PAGES_USERS = [0, True]  # compiles in progress, numpy's setting before the first of them


@contextmanager
def _small_pages():
    """Constants materialised while compiling (folded ConstantOfShape/Tile results, transformed
    conv weights) are written once, at load. numpy asks Linux for transparent huge pages on every
    large array; on this kind of machine first-touch faults on those vary by 10x from one process
    to the next (92 ms to 1.3 s for 576 MB, measured, with no compaction stalls), while 4 KiB
    pages cost a steady ~0.5 ms per MB. Compiling therefore allocates with small pages; buffers
    made later (the per-thread arenas) keep numpy's setting. Only a performance hint changes."""
    switch = _hugepage_switch()
    if switch is None:
        yield
        return
    with _PAGES_LOCK:
        if _PAGES_USERS[0] == 0:
            _PAGES_USERS[1] = switch(False)
        _PAGES_USERS[0] += 1
    try:
        yield
    finally:
        with _PAGES_LOCK:
            _PAGES_USERS[0] -= 1
            if _PAGES_USERS[0] == 0:
                switch(_PAGES_USERS[1])


def _input_type(v, shape) -> TensorType:
    """A graph input's type for compilation: its dtype with the given concrete shape (a
    sequence or optional input may come with a TensorType of its own, or no shape)."""
    if isinstance(shape, TensorType):
        return shape
    return TensorType(v.dtype, None if shape is None else tuple(shape))


@dataclass
class _Step:
    node: Node
    fn: Callable
    ins: list[int]
    outs: list[int]
    out_block: int | None = None  # arena block for a writes_out kernel
    out_type: TensorType | None = None
    free_after: list[int] = field(default_factory=list)


@dataclass
class _Plan:
    steps: list[_Step]
    n_slots: int
    template: list[Any]
    input_slots: list[tuple[str, int]]
    output_slots: list[tuple[str, int, bool]]  # name, slot, needs copy
    block_sizes: list[int]
    graph: Graph
    types: dict[str, TensorType]


class _Planner:
    def __init__(self, graph: Graph, input_shapes: dict[str, tuple], options: dict):
        self.source = graph
        self.input_shapes = input_shapes
        self.options = options

    def build(self) -> _Plan:
        g = self.source.copy()
        # inputs with defaults that the caller does not feed are constants from here on
        g.inputs = [v for v in g.inputs if v.name not in g.constants]
        in_types = {v.name: _input_type(v, self.input_shapes[v.name]) for v in g.inputs}
        types, values = propagate(g, in_types, fold=True)
        folded = self._drop_folded(g, values)
        g = optimize(folded, types) if self.options.get("optimize", True) else folded
        # the rewrites keep the nodes they do not touch: only new or rewired ones are inferred again
        types, _ = propagate(g, in_types, fold=False, values=dict(g.constants), prior=(folded, types, values))
        return self._bind(g, types)

    @staticmethod
    def _drop_folded(g: Graph, values: dict[str, np.ndarray]) -> Graph:
        out = g.copy()
        out.nodes = [n for n in g.nodes if not all((not o) or o in values for o in n.outputs)]
        needed = {i for n in out.nodes for i in n.inputs if i} | set(out.output_names)
        needed |= {r for n in out.nodes if n.attrs for r in outer_reads(n)}
        out.constants = {k: v for k, v in values.items() if k in needed}
        return out

    def _bind(self, g: Graph, types: dict[str, TensorType]) -> _Plan:
        slots: dict[str, int] = {}

        def slot(name: str) -> int:
            if name not in slots:
                slots[name] = len(slots)
            return slots[name]

        scratch = slot("")  # unnamed outputs land here
        for v in g.inputs:
            slot(v.name)
        template_vals: dict[int, Any] = {}
        for name, arr in g.constants.items():
            template_vals[slot(name)] = arr

        steps: list[_Step] = []
        for node in g.nodes:
            schema = get_schema(node.op_type, node.domain)
            attrs = resolve_attrs(schema, node)
            ctx = OpContext(
                node,
                [types.get(i) if i else None for i in node.inputs],
                [g.constants.get(i) if i else None for i in node.inputs],
                [types.get(o) if o else None for o in node.outputs],
                options=self.options,
            )
            captures: list[str] = []
            if node.has_subgraphs:
                # values the subgraphs read from this scope follow the node's own inputs
                captures = sorted(outer_reads(node))
                ctx.captures, ctx.scope, ctx.scope_values = captures, types, g.constants
            try:
                fn = build_kernel(schema, ctx, attrs)
            except EdgeInferError:
                raise
            except Exception as e:
                raise ShapeInferenceError(f"{node.label}: building the kernel failed: {type(e).__name__}: {e}") from e
            ins = [slot(i) if i else -1 for i in node.inputs] + [slot(c) for c in captures]
            outs = [slot(o) if o else scratch for o in node.outputs]
            steps.append(_Step(node, fn, ins, outs, out_type=types.get(node.outputs[0]) if node.outputs else None))

        block_sizes, copy_out = _plan_buffers(g, steps, slots, types)
        template = [None] * len(slots)
        for i, v in template_vals.items():
            template[i] = v
        input_slots = [(v.name, slots[v.name]) for v in g.inputs]
        output_slots = [(v.name, slots[v.name], v.name in copy_out) for v in g.outputs]
        return _Plan(steps, len(slots), template, input_slots, output_slots, block_sizes, g, types)


def _plan_buffers(g: Graph, steps: list[_Step], slots: dict[str, int], types: dict[str, TensorType]):
    """Assign arena blocks to writes_out outputs by lifetime.

    Any kernel that is not ``writes_out`` may return a view of an input, so its outputs are
    treated as possibly viewing every arena block its inputs may view; a block is freed only
    when no live tensor may view it. Graph outputs never live in the arena, and an output
    that may view a block (or is an input or constant) is copied when returned.
    """
    graph_outputs = {slots[v.name] for v in g.outputs}
    # tensors a graph output may be a view of (through Reshape, Squeeze, slices ...): they get
    # no arena block, so the output needs no copy when it is returned
    reach_output = set(graph_outputs)
    for st in reversed(steps):
        if not getattr(st.fn, "writes_out", False) and any(o in reach_output for o in st.outs):
            reach_output.update(i for i in st.ins if i >= 0)
    last_use: dict[int, int] = {}
    for k, st in enumerate(steps):
        for i in st.ins:
            if i >= 0:
                last_use[i] = k
    end = len(steps)
    for s in graph_outputs:
        last_use[s] = end
    roots: dict[int, set[int]] = {}
    block_live: list[set[int]] = []
    block_sizes: list[int] = []
    free: list[int] = []
    for k, st in enumerate(steps):
        t = st.out_type
        wants_block = (
            getattr(st.fn, "writes_out", False)
            and len(st.outs) == 1
            and st.outs[0] not in reach_output
            and t is not None
            and t.shape is not None
            and all(isinstance(d, int) for d in t.shape)
            and t.dtype != "string" and _dt.is_tensor(t.dtype)
        )
        if wants_block:
            nbytes = max(_ALIGN, int(np.prod(t.shape, dtype=np.int64)) * _dt.itemsize(t.dtype))
            fits = [b for b in free if block_sizes[b] >= nbytes]
            if fits:
                b = min(fits, key=lambda x: block_sizes[x])
            elif free:
                b = max(free, key=lambda x: block_sizes[x])
                block_sizes[b] = nbytes
            else:
                b = len(block_sizes)
                block_sizes.append(nbytes)
                block_live.append(set())
            if b in free:
                free.remove(b)
            st.out_block = b
            roots[st.outs[0]] = {b}
        else:
            r: set[int] = set()
            for i in st.ins:
                if i >= 0:
                    r |= roots.get(i, set())
            for o in st.outs:
                roots[o] = set(r)
        for o in st.outs:
            for b in roots.get(o, ()):
                block_live[b].add(o)
            if o not in last_use:
                last_use[o] = k  # produced, never read
        # tensors whose last use is this step die now
        for s in set(st.ins) | set(st.outs):
            if s >= 0 and last_use.get(s) == k:
                if s not in graph_outputs:
                    st.free_after.append(s)
                for b in roots.get(s, ()):
                    block_live[b].discard(s)
                    if not block_live[b] and b not in free:
                        free.append(b)
    const_or_input = {slots[n] for n in g.constants} | {slots[v.name] for v in g.inputs}
    copy_out = {
        v.name for v in g.outputs if roots.get(slots[v.name]) or slots[v.name] in const_or_input
    }
    return block_sizes, copy_out


class _Instance:
    """One arena + bound step closures; used by one thread at a time."""

    def __init__(self, plan: _Plan, profile: bool = False):
        self.plan = plan
        blocks = [np.empty(size + _ALIGN, dtype=np.uint8) for size in plan.block_sizes]
        blocks = [b[(-b.ctypes.data) % _ALIGN:][: size] for b, size in zip(blocks, plan.block_sizes)]
        self.blocks = blocks
        self.template = list(plan.template) + [None]  # + the always-None slot
        self.none_slot = len(plan.template)
        self.calls = [self._make_call(st) for st in plan.steps]
        # profiling: seconds spent in each step summed over ``runs`` (None: not profiling)
        self.step_seconds: list[float] | None = [0.0] * len(plan.steps) if profile else None
        self.runs = 0

    def _make_call(self, st: _Step) -> Callable[[list], None]:
        # Missing optional inputs read a slot past the plan's registers that is always None,
        # so arguments are gathered by one C-level itemgetter; the common arities get closures
        # without argument packing (per-node overhead is most of a small model's run time).
        fn, outs, dead = st.fn, st.outs, tuple(st.free_after)
        ins = tuple(i if i >= 0 else self.none_slot for i in st.ins)
        if st.out_block is not None:
            t = st.out_type
            n = math.prod(t.shape) * _dt.itemsize(t.dtype)
            buf = self.blocks[st.out_block][:n].view(_dt.to_numpy(t.dtype)).reshape(t.shape)
            o = outs[0]
            if len(ins) == 1:
                a = ins[0]

                def call(r):
                    r[o] = fn(r[a], out=buf)
            elif len(ins) == 2:
                a, b = ins

                def call(r):
                    r[o] = fn(r[a], r[b], out=buf)
            else:
                get = _gather(ins)

                def call(r):
                    r[o] = fn(*get(r), out=buf)
        elif len(outs) == 1:
            o = outs[0]
            get = _gather(ins)

            def call(r):
                r[o] = fn(*get(r))
        else:
            get = _gather(ins)

            def call(r):
                res = fn(*get(r))
                for o, v in zip(outs, res):
                    r[o] = v
        if not dead:
            return call
        step = call

        def call(r):
            step(r)
            for d in dead:
                r[d] = None
        return call

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        plan = self.plan
        r = self.template.copy()
        for name, s in plan.input_slots:
            r[s] = feeds[name]
        self._execute(r)
        return {name: (_copy_value(r[s]) if copy else r[s]) for name, s, copy in plan.output_slots}

    def run_list(self, values: list) -> list:
        """:meth:`run` with the inputs and outputs as lists in the plan's order (no dicts:
        a Loop body runs once per iteration)."""
        plan = self.plan
        r = self.template.copy()
        for (_, s), v in zip(plan.input_slots, values):
            r[s] = v
        self._execute(r)
        return [(_copy_value(r[s]) if copy else r[s]) for _, s, copy in plan.output_slots]

    def _execute(self, r: list) -> None:
        # One np.errstate for the whole run instead of one per kernel call (~1 us each):
        # ONNX arithmetic is IEEE (inf, nan, wrap-around), so numpy's RuntimeWarnings are
        # noise; kernels that check FP_ERRORS_IGNORED skip their own errstate. A nested run
        # (a subgraph) finds the state already set.
        if FP_ERRORS_IGNORED.get():
            return self._steps(r)
        token = FP_ERRORS_IGNORED.set(True)
        try:
            with np.errstate(all="ignore"):
                self._steps(r)
        finally:
            FP_ERRORS_IGNORED.reset(token)

    def _steps(self, r: list) -> None:
        plan = self.plan
        k = 0
        try:
            if self.step_seconds is None:
                for k, call in enumerate(self.calls):
                    call(r)
            else:
                self._run_timed(r)
                k = len(self.calls)
        except Exception as e:
            err = step_failure(plan.steps[k].node, plan.steps[k].ins, r, e)
            if err is e:
                raise
            raise err from e

    def _run_timed(self, r: list) -> None:
        """The run loop with a clock read after every step (profiling only)."""
        clock = time.perf_counter
        seconds = [0.0] * len(self.calls)
        t0 = clock()
        for k, call in enumerate(self.calls):
            try:
                call(r)
            finally:
                t1 = clock()
                seconds[k] = t1 - t0
                t0 = t1
        acc = self.step_seconds
        for k, t in enumerate(seconds):
            acc[k] += t
        self.runs += 1


def step_failure(node: Node, ins: list[int], r: list, e: Exception, where: str = "") -> Exception:
    """The error to raise when ``node`` failed with ``e`` during a run (registers ``r``, input
    slots ``ins``): ``e`` itself when it already names the node, else a KernelError naming the
    node, and for an unexpected exception also its input shapes. Shared by cpu and gpu."""
    if isinstance(e, EdgeInferError):
        return e if node.label in str(e) else KernelError(f"{node.label}: {e}")
    shapes = [None if i < 0 or r[i] is None else tuple(np.shape(r[i])) for i in ins]
    return KernelError(f"{node.label} failed{where}: {type(e).__name__}: {e} (input shapes {shapes})")


class CpuExecutable:
    """A compiled plan; ``run`` is safe to call from several threads at once."""

    def __init__(self, plan: _Plan, threads: int | None, profile: bool = False):
        self.plan = plan
        self.threads = threads
        self.profiling = profile
        self._instances: list[_Instance] = []  # every instance made, for the profile
        self._instances_lock = threading.Lock()
        self._pool: queue.SimpleQueue[_Instance] = queue.SimpleQueue()
        self._pool.put(self._new_instance())
        self._blas = _blas_libraries(threads)

    def _new_instance(self) -> "_Instance":
        inst = _Instance(self.plan, self.profiling)
        if self.profiling:
            with self._instances_lock:
                self._instances.append(inst)
        return inst

    @property
    def graph(self) -> Graph:
        """The optimized graph that was bound (after folding and fusion)."""
        return self.plan.graph

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._on_instance(_Instance.run, feeds)

    def run_list(self, values: list) -> list:
        """Run with the inputs as a list in ``plan.input_slots`` order; the outputs come back
        as a list in ``plan.output_slots`` order. For callers that run a plan many times
        (subgraphs), without building a dict each way."""
        return self._on_instance(_Instance.run_list, values)

    def _on_instance(self, method, arg):
        """``method(instance, arg)`` on a free instance, with this session's BLAS threads."""
        try:
            inst = self._pool.get_nowait()
        except queue.Empty:
            inst = self._new_instance()
        saved = None
        try:
            if self._blas is not None:
                saved = _set_blas_threads(self._blas, self.threads)
            return method(inst, arg)
        finally:
            if saved is not None:
                for lib, n in zip(self._blas, saved):
                    lib.set_num_threads(n)
            self._pool.put(inst)

    def profile(self) -> dict:
        """Per-step wall time summed over every run since compiling or :meth:`reset_profile`.

        Returns ``{"runs": n, "nodes": [...]}`` with one record per bound node, in execution
        order: ``{"node", "op_type", "outputs", "calls", "total_ms"}``. ``op_type`` carries the
        domain (``edgeinfer::FusedConv``); fused nodes add ``"fused"``, the activation they absorbed.
        Empty when the executable was compiled without ``{"profile": True}``.
        """
        with self._instances_lock:
            instances = list(self._instances)
        runs = sum(i.runs for i in instances)
        records = []
        if self.profiling:
            for k, st in enumerate(self.plan.steps):
                node = st.node
                rec = {
                    "node": node.name or (node.outputs[0] if node.outputs else "?"),
                    "op_type": f"{node.domain}::{node.op_type}" if node.domain else node.op_type,
                    "outputs": list(node.outputs),
                    "calls": runs,
                    "total_ms": 1e3 * sum(i.step_seconds[k] for i in instances),
                }
                if node.attrs.get("activation"):
                    rec["fused"] = node.attrs["activation"]
                records.append(rec)
        return {"runs": runs, "nodes": records}

    def reset_profile(self) -> None:
        """Zero the profile counters."""
        with self._instances_lock:
            for inst in self._instances:
                inst.runs = 0
                inst.step_seconds = [0.0] * len(self.plan.steps)


def _copy_value(v):
    """A copy of an output that may view the arena: an array, a sequence (list) or None."""
    if isinstance(v, list):
        return [np.array(x, copy=True) for x in v]
    return None if v is None else np.array(v, copy=True)


def _gather(slots: tuple[int, ...]) -> Callable[[list], tuple]:
    """``r -> tuple(r[i] for i in slots)`` at C speed."""
    if not slots:
        return lambda r: ()
    if len(slots) == 1:
        a = slots[0]
        return lambda r: (r[a],)
    return operator.itemgetter(*slots)


def _blas_libraries(threads: int | None) -> list | None:
    """threadpoolctl's controllers of the loaded BLAS libraries, or None when ``threads`` is
    None or threadpoolctl is missing."""
    global _BLAS_LIBS
    if threads is None:
        return None
    if _BLAS_LIBS is None:  # scanning the loaded libraries takes milliseconds: once per process
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS_LIBS = []
        else:
            _BLAS_LIBS = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    return _BLAS_LIBS or None


_BLAS_LIBS: list | None = None


def _set_blas_threads(libs: list, threads: int) -> list[int] | None:
    """Set every BLAS library to ``threads``; the previous counts, or None when all were set.

    Why not ``ThreadpoolController.limit``: it re-reads every library's info on each call
    (~8 us, more than a small model's whole run); two ctypes calls per library suffice.
    """
    old = [lib.get_num_threads() for lib in libs]
    if all(n == threads for n in old):
        return None
    for lib in libs:
        lib.set_num_threads(threads)
    return old
