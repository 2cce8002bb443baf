"""Control flow: If, Loop, Scan and SequenceMap, which run subgraphs.

A subgraph may read names of the enclosing graphs (outer scope). The backend passes the
values of those names (``ctx.captures``) after the node's own inputs, so a kernel function is
``fn(*inputs, *captures)``. Each subgraph is compiled like a model of its own (a
:class:`Body`): its formal inputs and the captured names that are not constants become graph
inputs, captured constants become constants (so they fold), and the compiled plan is cached
per input-type signature, so a loop whose carried values keep their shapes compiles its body
once. Nesting is bounded by :data:`edgeinfer.graph.MAX_SUBGRAPH_DEPTH` (checked on load).

Shape rules infer the branch/body output types with the enclosing scope's types; where a
type cannot be inferred they fall back to the types the subgraph declares.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from .. import dtypes as _dt
from ..errors import EdgeInferError, KernelError
from ..graph import Graph, TensorType, ValueInfo, outer_reads
from .registry import REQUIRED, OpContext, kernel, shape_rule
from .shapes import normalize_axis

# compiled plans kept per subgraph (input-type signatures); older ones are dropped
PLAN_CACHE_SIZE = 32
_INT64 = np.dtype(np.int64)


def _graph_reads(g: Graph) -> set[str]:
    """Names ``g`` reads from enclosing scopes."""
    from ..graph import Node

    return outer_reads(Node("_", (), (), {"g": g}))


def _signature(v) -> tuple:
    if v is None:
        return ("none",)
    if isinstance(v, list):
        return ("seq", tuple((x.dtype.str, x.shape) for x in v[:1]))
    return (v.dtype.str, v.shape)


def _value_type(v, declared: str) -> tuple[str, Any]:
    """(IR type, shape or TensorType) of a runtime value for compiling a body."""
    if v is None:
        return declared, TensorType(declared, None)
    if isinstance(v, list):
        dtype = _dt.sequence_of(_dt.from_numpy(v[0].dtype)) if v else (declared if _dt.is_sequence(declared) else _dt.sequence_of("float32"))
        if _dt.is_optional(declared):
            dtype = _dt.optional_of(dtype)
        return dtype, TensorType(dtype, None)
    dtype = _dt.from_numpy(v.dtype)
    if _dt.is_optional(declared):
        return _dt.optional_of(dtype), TensorType(_dt.optional_of(dtype), tuple(v.shape))
    return dtype, tuple(v.shape)


class _Compiled:
    """One compiled plan of a :class:`Body` and how to feed it positionally."""

    __slots__ = ("exe", "order", "out_types")

    def __init__(self, exe, order: list[int] | None, out_types: list):
        self.exe = exe
        self.order = order  # body value index of each plan input (None: the same order)
        self.out_types = out_types  # inferred (dtype, shape) of each output, None if not static


class Body:
    """One subgraph, compiled on demand for the types of the values it is run with."""

    def __init__(self, ctx: OpContext, graph: Graph):
        self.graph = graph
        self.label = ctx.node.label
        self.options = dict(ctx.options)
        reads = _graph_reads(graph)
        self.captures = ctx.captures
        self.const = {c: ctx.scope_values[c] for c in reads
                      if c in ctx.scope_values and isinstance(ctx.scope_values[c], np.ndarray)}
        # captured names fed at run time, as indices into the node's capture list
        self.fed = [(c, ctx.captures.index(c)) for c in sorted(reads) if c not in self.const and c in ctx.captures]
        self.formal = [v.name for v in graph.inputs]
        self.out_names = [v.name for v in graph.outputs]
        self._plans: OrderedDict[tuple, _Compiled] = OrderedDict()

    def _compile(self, inputs: list, caps: tuple) -> _Compiled:
        from ..backends.cpu import compile as cpu_compile

        values = list(inputs) + [caps[k] for _, k in self.fed]
        names = self.formal + [c for c, _ in self.fed]
        declared = [v.dtype for v in self.graph.inputs] + ["float32"] * len(self.fed)
        ins, shapes = [], {}
        for name, v, want in zip(names, values, declared):
            dtype, shape = _value_type(v, want)
            ins.append(ValueInfo(name, dtype, shape.shape if isinstance(shape, TensorType) else shape))
            shapes[name] = shape
        g = Graph(inputs=ins, outputs=list(self.graph.outputs), nodes=list(self.graph.nodes),
                  constants={**self.const, **self.graph.constants}, value_info=dict(self.graph.value_info),
                  name=self.graph.name)
        exe = cpu_compile(g, shapes, None, self.options)
        # A model's outputs that are inputs or constants are copied for the caller; the node
        # running a body never writes into what it gets back, so only arena views need copies.
        plan = exe.plan
        fixed = {s for _, s in plan.input_slots} | {i for i, v in enumerate(plan.template) if v is not None}
        plan.output_slots = [(n, s, copy and s not in fixed) for n, s, copy in plan.output_slots]
        where = {n: i for i, n in enumerate(names)}
        order = [where[n] for n, _ in plan.input_slots]
        out_types = []
        for n in self.out_names:
            t = plan.types.get(n)
            static = (t is not None and t.shape is not None and _dt.is_tensor(t.dtype)
                      and all(isinstance(d, int) for d in t.shape))
            out_types.append((_dt.to_numpy(t.dtype), tuple(t.shape)) if static else None)
        return _Compiled(exe, None if order == list(range(len(names))) else order, out_types)

    def compiled(self, inputs: list, caps: tuple) -> _Compiled:
        """The plan for these input values (compiled on first sight of their types)."""
        key = tuple(_signature(v) for v in inputs) + tuple(_signature(caps[k]) for _, k in self.fed)
        c = self._plans.get(key)
        if c is None:
            c = self._compile(inputs, caps)
            self._plans[key] = c
            if len(self._plans) > PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return c

    def feed(self, c: _Compiled, inputs: list, caps: tuple) -> list:
        """Run plan ``c`` on the formal inputs (already arrays) and the captures."""
        values = inputs + [caps[k] for _, k in self.fed] if self.fed else inputs
        if c.order is not None:
            values = [values[i] for i in c.order]
        return c.exe.run_list(values)

    def run(self, inputs: list, caps: tuple) -> list:
        if len(inputs) != len(self.formal):
            raise KernelError(f"{self.label}: the subgraph takes {len(self.formal)} inputs, got {len(inputs)}")
        inputs = [v if v is None or isinstance(v, (list, np.ndarray)) else np.asarray(v) for v in inputs]
        return self.feed(self.compiled(inputs, caps), inputs, caps)


def bind_subgraph(ctx: OpContext, graph: Graph, input_types: list | None = None):
    """``run(inputs, captured) -> outputs`` for a function-valued attribute of any op
    (FlexAttention's score_mod, ...): ``captured`` holds the values of ``ctx.captures``."""
    body = Body(ctx, graph)
    return lambda inputs, captured: body.run(list(inputs), tuple(captured))


def _body_types(ctx: OpContext, g: Graph, input_types: list[TensorType | None]) -> list[TensorType]:
    """Output types of ``g`` given its input types; declared types where inference fails."""
    from ..shape_inference import propagate

    declared = [v.type for v in g.outputs]
    try:
        over = {v.name: t for v, t in zip(g.inputs, input_types) if t is not None}
        consts = {k: v for k, v in ctx.scope_values.items() if isinstance(v, np.ndarray)}
        consts.update(g.constants)
        types, _ = propagate(g, over, fold=False, values=consts, outer_types=ctx.scope)
    except EdgeInferError:
        return declared
    out = []
    for v, d in zip(g.outputs, declared):
        t = types.get(v.name)
        out.append(d if t is None else TensorType(t.dtype, t.shape if t.shape is not None else d.shape))
    return out


def _merge(a: TensorType, b: TensorType) -> TensorType:
    """The type both ``a`` and ``b`` fit: dims that differ become unknown."""
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return TensorType(a.dtype, None)
    return TensorType(a.dtype, tuple(x if x == y else None for x, y in zip(a.shape, b.shape)))


def _caps(ctx: OpContext, args: tuple) -> tuple[tuple, tuple]:
    n = len(ctx.captures)
    return (args[: len(args) - n], args[len(args) - n:]) if n else (args, ())


# ---------------------------------------------------------------------------- If
@shape_rule("If")
def if_shape(ctx: OpContext, then_branch, else_branch):
    then_t = _body_types(ctx, then_branch, [])
    else_t = _body_types(ctx, else_branch, [])
    if len(then_t) != len(else_t):
        raise ctx.error(f"then_branch has {len(then_t)} outputs but else_branch has {len(else_t)}")
    cond = ctx.values[0] if ctx.values else None
    if cond is not None and cond.size == 1:  # the branch is known: its types are exact
        return then_t if bool(cond.reshape(-1)[0]) else else_t
    return [_merge(a, b) for a, b in zip(then_t, else_t)]


@kernel("If", attrs={"then_branch": REQUIRED, "else_branch": REQUIRED})
def if_(ctx: OpContext, then_branch, else_branch):
    single = len(ctx.node.outputs) == 1
    n_caps = len(ctx.captures)
    const = ctx.values[0] if ctx.values else None
    if isinstance(const, np.ndarray) and const.size == 1:
        # a constant condition (common inside exported subgraphs): only that branch is built
        body = Body(ctx, then_branch if bool(const.reshape(-1)[0]) else else_branch)

        def const_if_fn(*args):
            outs = body.run([], args[len(args) - n_caps:] if n_caps else ())
            return outs[0] if single else tuple(outs)

        return const_if_fn
    then_body, else_body = Body(ctx, then_branch), Body(ctx, else_branch)

    def if_fn(*args):
        (cond,), caps = _caps(ctx, args)
        if cond is None or np.size(cond) != 1:
            raise KernelError(f"{ctx.node.label}: the condition must hold one element, got shape {np.shape(cond)}")
        outs = (then_body if bool(np.asarray(cond).reshape(-1)[0]) else else_body).run([], caps)
        return outs[0] if single else tuple(outs)

    return if_fn


# -------------------------------------------------------------------------- Loop
def _loop_body_inputs(ctx: OpContext) -> list[TensorType | None]:
    carried = ctx.inputs[2:]
    return [TensorType("int64", ()), TensorType("bool", ())] + list(carried)


@shape_rule("Loop")
def loop_shape(ctx: OpContext, body):
    n_carried = len(ctx.node.inputs) - 2
    if n_carried < 0:
        raise ctx.error("needs the inputs M and cond (either may be empty)")
    if len(body.inputs) != n_carried + 2:
        raise ctx.error(f"the body takes {len(body.inputs)} inputs; expected {n_carried + 2} "
                        f"(iteration number, condition and {n_carried} loop-carried values)")
    if len(body.outputs) < n_carried + 1:
        raise ctx.error(f"the body has {len(body.outputs)} outputs; expected at least {n_carried + 1}")
    outs = _body_types(ctx, body, _loop_body_inputs(ctx))
    carried = [_merge(init, out) if init is not None else out for init, out in zip(ctx.inputs[2:], outs[1:1 + n_carried])]
    scans = [TensorType(t.dtype, None if t.shape is None else (None,) + tuple(t.shape)) for t in outs[1 + n_carried:]]
    return carried + scans


def _without_invariants(body: Graph, fixed: dict[int, np.ndarray]) -> Graph:
    """``body`` with the carried values ``fixed`` (index -> value) turned into constants:
    their inputs and pass-through outputs are dropped."""
    drop_in = {2 + j for j in fixed}
    drop_out = {1 + j for j in fixed}
    consts = dict(body.constants)
    consts.update((body.inputs[2 + j].name, v) for j, v in fixed.items())
    return Graph(inputs=[v for i, v in enumerate(body.inputs) if i not in drop_in],
                 outputs=[v for i, v in enumerate(body.outputs) if i not in drop_out],
                 nodes=list(body.nodes), constants=consts, value_info=dict(body.value_info),
                 opset=dict(body.opset), metadata=dict(body.metadata), name=body.name)


def _same_types(new: list, old: list) -> bool:
    """Whether ``new`` values have the compile signature of ``old`` ones (arrays: cheaply)."""
    for a, b in zip(new, old):
        if type(a) is np.ndarray and type(b) is np.ndarray:
            if a.shape != b.shape or a.dtype != b.dtype:
                return False
        elif _signature(a) != _signature(b):
            return False
    return True


@kernel("Loop", attrs={"body": REQUIRED})
def loop(ctx: OpContext, body):
    n_carried = len(ctx.node.inputs) - 2
    n_scan = len(body.outputs) - 1 - n_carried
    scan_types = [v.type for v in body.outputs[1 + n_carried:]]
    if not ctx.has_input(0) and not ctx.has_input(1):
        raise ctx.error("has neither a trip count M nor a condition: the loop would never end")
    # A carried value that the body passes straight through (output name = input name) and
    # that starts as a constant is the same in every iteration: it becomes a constant of the
    # body, so what depends on it alone (weight transposes) folds once at compile time and
    # MatMul + bias fuse, instead of running every iteration (exporters such as Paddle's
    # carry all the weights of a decoder loop this way).
    fixed = {j: ctx.values[2 + j] for j in range(n_carried)
             if isinstance(ctx.values[2 + j], np.ndarray) and body.inputs[2 + j].name == body.outputs[1 + j].name}
    live = [j for j in range(n_carried) if j not in fixed]
    n_live = len(live)
    runner = Body(ctx, _without_invariants(body, fixed) if fixed else body)
    use_cond = ctx.has_input(1)

    def loop_fn(*args):
        ins, caps = _caps(ctx, args)
        m, cond = ins[0], ins[1]
        carried = [v if v is None or isinstance(v, (list, np.ndarray)) else np.asarray(v)
                   for v in (ins[2 + j] for j in live)]
        trips = None if m is None else int(np.asarray(m).reshape(-1)[0])
        keep = True if cond is None else bool(np.asarray(cond).reshape(-1)[0])
        scans: list[list] = [[] for _ in range(n_scan)]
        i = 0
        plan = None
        while keep and (trips is None or i < trips):
            step_in = [np.array(i, _INT64), np.array(keep)] + carried
            if plan is None:  # the plan stays while the carried values keep their types
                plan = runner.compiled(step_in, caps)
            outs = runner.feed(plan, step_in, caps)
            keep = bool(np.asarray(outs[0]).reshape(-1)[0]) if use_cond else True
            new = outs[1:1 + n_live]
            if not _same_types(new, carried):
                plan = None
            carried = new
            for k in range(n_scan):
                scans[k].append(outs[1 + n_live + k])
            i += 1
        results = [None] * n_carried
        for j, v in fixed.items():
            results[j] = v
        for j, v in zip(live, carried):
            results[j] = v
        for k in range(n_scan):
            if scans[k]:
                if isinstance(scans[k][0], list):
                    raise KernelError(f"{ctx.node.label}: scan output {k} is a sequence; Loop scan outputs must be tensors")
                results.append(np.stack([np.asarray(x) for x in scans[k]]))
            else:
                t = scan_types[k]
                tail = tuple(d if isinstance(d, int) else 0 for d in (t.shape or ()))
                results.append(np.zeros((0,) + tail, dtype=_dt.to_numpy(t.dtype)))
        return results[0] if len(results) == 1 else tuple(results)

    return loop_fn


# -------------------------------------------------------------------------- Scan
_SCAN_ATTRS = {"body": REQUIRED, "num_scan_inputs": REQUIRED, "scan_input_axes": None,
               "scan_input_directions": None, "scan_output_axes": None, "scan_output_directions": None}


def _scan_layout(ctx: OpContext, body, num_scan_inputs, scan_input_axes, scan_input_directions,
                 scan_output_axes, scan_output_directions):
    m = int(num_scan_inputs)
    n_state = len(ctx.node.inputs) - m
    if m < 1 or n_state < 0:
        raise ctx.error(f"num_scan_inputs={m} does not fit {len(ctx.node.inputs)} inputs")
    k = len(body.outputs) - n_state
    if len(body.inputs) != n_state + m or k < 0:
        raise ctx.error(f"the body has {len(body.inputs)} inputs and {len(body.outputs)} outputs; expected "
                        f"{n_state + m} inputs and at least {n_state} outputs")
    in_axes = list(scan_input_axes) if scan_input_axes is not None else [0] * m
    in_dirs = list(scan_input_directions) if scan_input_directions is not None else [0] * m
    out_axes = list(scan_output_axes) if scan_output_axes is not None else [0] * k
    out_dirs = list(scan_output_directions) if scan_output_directions is not None else [0] * k
    for name, lst, want in (("scan_input_axes", in_axes, m), ("scan_input_directions", in_dirs, m),
                            ("scan_output_axes", out_axes, k), ("scan_output_directions", out_dirs, k)):
        if len(lst) != want:
            raise ctx.error(f"attribute '{name}' has {len(lst)} entries; expected {want}")
    return n_state, m, k, in_axes, in_dirs, out_axes, out_dirs


@shape_rule("Scan")
def scan_shape(ctx: OpContext, body, **attrs):
    n_state, m, k, in_axes, _, out_axes, _ = _scan_layout(ctx, body, **attrs)
    slice_types = []
    trip = None
    for t, ax in zip(ctx.inputs[n_state:], in_axes):
        if t is None or t.shape is None:
            slice_types.append(None)
            continue
        a = normalize_axis(ax, len(t.shape), ctx.node)
        trip = trip if trip is not None else t.shape[a]
        slice_types.append(TensorType(t.dtype, tuple(d for i, d in enumerate(t.shape) if i != a)))
    outs = _body_types(ctx, body, list(ctx.inputs[:n_state]) + slice_types)
    states = [_merge(a, b) if a is not None else b for a, b in zip(ctx.inputs[:n_state], outs[:n_state])]
    scans = []
    for t, ax in zip(outs[n_state:], out_axes):
        if t.shape is None:
            scans.append(TensorType(t.dtype, None))
            continue
        a = normalize_axis(ax, len(t.shape) + 1, ctx.node)
        shape = list(t.shape)
        shape.insert(a, trip)
        scans.append(TensorType(t.dtype, tuple(shape)))
    return states + scans


@kernel("Scan", attrs=_SCAN_ATTRS)
def scan(ctx: OpContext, body, **attrs):
    n_state, m, k, in_axes, in_dirs, out_axes, out_dirs = _scan_layout(ctx, body, **attrs)
    runner = Body(ctx, body)

    def scan_fn(*args):
        ins, caps = _caps(ctx, args)
        states = list(ins[:n_state])
        xs = ins[n_state:]
        axes = [normalize_axis(a, x.ndim, ctx.node) for a, x in zip(in_axes, xs)]
        lengths = {x.shape[a] for x, a in zip(xs, axes)}
        if len(lengths) != 1:
            raise KernelError(f"{ctx.node.label}: scan inputs have different lengths along their scan axes: {sorted(lengths)}")
        steps = lengths.pop()
        acc: list[list] = [[] for _ in range(k)]
        for t in range(steps):
            slices = [np.take(x, steps - 1 - t if d else t, axis=a) for x, a, d in zip(xs, axes, in_dirs)]
            outs = runner.run(states + slices, caps)
            states = outs[:n_state]
            for j in range(k):
                acc[j].append(np.asarray(outs[n_state + j]))
        results = list(states)
        for j in range(k):
            items = acc[j][::-1] if out_dirs[j] else acc[j]
            if items:
                results.append(np.stack(items, axis=normalize_axis(out_axes[j], items[0].ndim + 1, ctx.node)))
            else:
                t = body.outputs[n_state + j]
                tail = [d if isinstance(d, int) else 0 for d in (t.shape or ())]
                tail.insert(normalize_axis(out_axes[j], len(tail) + 1, ctx.node), 0)
                results.append(np.zeros(tuple(tail), dtype=_dt.to_numpy(t.dtype)))
        return results[0] if len(results) == 1 else tuple(results)

    return scan_fn


# ------------------------------------------------------------------- SequenceMap
@shape_rule("SequenceMap")
def sequence_map_shape(ctx: OpContext, body):
    if not _dt.is_sequence(ctx.inputs[0].dtype):
        raise ctx.error(f"input 0 must be a sequence, found {ctx.inputs[0].dtype}")
    if len(body.inputs) != len(ctx.node.inputs):
        raise ctx.error(f"the body takes {len(body.inputs)} inputs; the node has {len(ctx.node.inputs)}")
    elem = [TensorType(_dt.element_type(t.dtype), t.shape) if _dt.is_sequence(t.dtype) else t for t in ctx.inputs]
    outs = _body_types(ctx, body, elem)
    return [TensorType(_dt.sequence_of(t.dtype), None) for t in outs]


@kernel("SequenceMap", attrs={"body": REQUIRED})
def sequence_map(ctx: OpContext, body):
    runner = Body(ctx, body)
    is_seq = [_dt.is_sequence(t.dtype) for t in ctx.inputs]
    n_out = len(body.outputs)

    def sequence_map_fn(*args):
        ins, caps = _caps(ctx, args)
        n = len(ins[0])
        for i, (v, s) in enumerate(zip(ins, is_seq)):
            if s and len(v) != n:
                raise KernelError(f"{ctx.node.label}: input {i} has {len(v)} items; input 0 has {n}")
        outs: list[list] = [[] for _ in range(n_out)]
        for j in range(n):
            res = runner.run([v[j] if s else v for v, s in zip(ins, is_seq)], caps)
            for o, r in zip(outs, res):
                o.append(r)
        return outs[0] if n_out == 1 else tuple(outs)

    return sequence_map_fn
