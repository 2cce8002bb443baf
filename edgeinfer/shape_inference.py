"""Shape and dtype inference, with constant propagation.

:func:`propagate` walks a graph once in topological order. For each node it either

* evaluates the node, when every input has a known value (constants, or values already
  propagated) and folding is allowed: this is constant folding, done by the node's own kernel
  so folded results are exactly what the runtime would compute; or
* evaluates ``Shape``/``Size`` of an input whose shape is fully known; or
* runs the op's shape rule (see :mod:`edgeinfer.kernels.registry`).

The cpu backend compiles with ``fold=True`` and concrete input shapes, which turns every
shape computation of a model (Shape -> Gather -> Concat -> Reshape chains) into constants.
:func:`infer_shapes` is the public, read-only form for tools (inspect, cost model).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import dtypes as _dt
from .errors import EdgeInferError, GraphError, ShapeInferenceError
from .graph import Graph, Node, TensorType, outer_reads
from .kernels.registry import OpContext, build_kernel, get_schema, resolve_attrs

# Ops never folded even with constant inputs (random generators, ops with hidden state).
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"})

# Folding a node whose output would exceed this many elements is skipped when fold is "small".
SMALL_FOLD_LIMIT = 1 << 16


def _type_of(a: np.ndarray) -> TensorType:
    return TensorType(_dt.from_numpy(a.dtype), tuple(int(d) for d in a.shape))


def _shape_value(node: Node, attrs: dict, t: TensorType) -> np.ndarray | None:
    if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
        return None
    if node.op_type == "Size":
        return np.array(int(np.prod(t.shape, dtype=np.int64)), dtype=np.int64)
    rank = len(t.shape)
    start = attrs.get("start", 0) or 0
    end = attrs.get("end", None)
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = rank if end is None else max(0, min(rank, end + rank if end < 0 else end))
    return np.array(t.shape[start:end], dtype=np.int64)


def run_node(node: Node, ctx: OpContext, attrs: dict, arrays: list) -> list[np.ndarray]:
    """Build and run one node's kernel on concrete arrays (used for folding)."""
    schema = get_schema(node.op_type, node.domain)
    fn = build_kernel(schema, ctx, attrs)
    res = fn(*arrays)
    if not isinstance(res, tuple):
        res = (res,)
    return [None if r is None else np.asarray(r) for r in res]


def propagate(
    graph: Graph,
    input_types: dict[str, TensorType] | None = None,
    *,
    fold: bool | str = False,
    values: dict[str, np.ndarray] | None = None,
    on_error: Callable[[Node, Exception], None] | None = None,
    outer_types: dict[str, TensorType] | None = None,
    prior: tuple[Graph, dict[str, TensorType], dict[str, np.ndarray]] | None = None,
) -> tuple[dict[str, TensorType], dict[str, np.ndarray]]:
    """Infer the type of every tensor, propagating known values.

    Args:
        graph: the graph (not modified).
        input_types: types of the graph inputs, overriding the declared ones (e.g. concrete
            shapes for compilation). Missing entries use the declared input types.
        fold: ``True`` evaluates every node whose inputs are all known; ``"small"`` only when
            the result is small (shape arithmetic); ``False`` only evaluates Shape/Size.
        values: known tensor values to start from; defaults to ``graph.constants`` minus the
            names that are graph inputs (overridable inputs are not constant here).
        on_error: when given, called for a node whose shape rule fails, instead of raising;
            its outputs then get unknown types.
        outer_types: for a subgraph, the types of the enclosing scopes' names it may read.
        prior: ``(graph, types, values)`` of an earlier propagation over a graph this one was
            rewritten from (nodes are immutable, so a rewrite keeps untouched node objects). A
            node of that graph whose input types and known input values are unchanged keeps
            its output types without running its shape rule again.

    Returns:
        (types, values): a type per tensor name and the values known at compile time.
    """
    input_names = set(graph.input_names)
    known: dict[str, np.ndarray] = (
        dict(values) if values is not None else {k: v for k, v in graph.constants.items() if k not in input_names}
    )
    types: dict[str, TensorType] = dict(outer_types or {})
    types.update((name, _type_of(v)) for name, v in known.items())
    for v in graph.inputs:
        t = (input_types or {}).get(v.name, v.type)
        types[v.name] = t
    before: dict[int, Node] = {id(n): n for n in prior[0].nodes} if prior else {}
    for node in graph.nodes:
        if before and before.get(id(node)) is node and _unchanged(node, types, known, prior[1], prior[2]):
            for o in node.outputs:
                if o:
                    types[o] = prior[1][o]
            continue
        try:
            _propagate_node(node, types, known, fold)
        except EdgeInferError as e:
            if on_error is None:
                raise
            on_error(node, e)
            for o in node.outputs:
                if o:
                    types.setdefault(o, TensorType("float32", None))
    return types, known


def _unchanged(node: Node, types: dict, known: dict, old_types: dict, old_known: dict) -> bool:
    if node.has_subgraphs:
        return False  # bodies also read outer-scope names
    for i in node.inputs:
        if i and (known.get(i) is not old_known.get(i) or types.get(i) != old_types.get(i)):
            return False
    return all((not o) or (o in old_types and o not in old_known) for o in node.outputs)


def _propagate_node(node: Node, types: dict, known: dict, fold) -> None:
    schema = get_schema(node.op_type, node.domain)
    attrs = resolve_attrs(schema, node)
    in_types = [types.get(i) if i else None for i in node.inputs]
    for name, t in zip(node.inputs, in_types):
        if name and t is None:
            raise GraphError(f"{node.label}: input '{name}' has no known type (is it defined before the node?)")
    in_values = [known.get(i) if i else None for i in node.inputs]
    ctx = OpContext(node, in_types, in_values)
    nested = node.has_subgraphs
    if nested:
        ctx.captures, ctx.scope, ctx.scope_values = sorted(outer_reads(node)), types, known
    present = [v for i, v in zip(node.inputs, in_values) if i]
    can_fold = (
        fold
        and all(v is not None for v in present)
        and node.op_type not in NONDETERMINISTIC
        and not nested
    )
    if node.op_type in ("Shape", "Size") and in_types and in_types[0] is not None:
        val = _shape_value(node, attrs, in_types[0])
        if val is not None:
            known[node.outputs[0]] = val
            types[node.outputs[0]] = _type_of(val)
            return
    out_types = _infer(node, schema, ctx, attrs)
    if can_fold and not all(t is not None and _dt.is_tensor(t.dtype) for t in out_types):
        can_fold = False  # folded values are arrays; sequences and optionals stay runtime values
    if can_fold and fold == "small":
        sizes = [_numel(t) for t in out_types]
        can_fold = all(s is not None and s <= SMALL_FOLD_LIMIT for s in sizes)
    if can_fold:
        ctx.outputs = list(out_types)
        try:
            outs = run_node(node, ctx, attrs, in_values)
        except EdgeInferError:
            raise
        except Exception as e:  # a kernel bug or bad constant data: name the node
            raise ShapeInferenceError(f"{node.label}: constant folding failed: {type(e).__name__}: {e}") from e
        for name, val in zip(node.outputs, outs):
            if name and val is not None:
                known[name] = val
                types[name] = _type_of(val)
        return
    for name, t in zip(node.outputs, out_types):
        if name:
            types[name] = t


def _numel(t: TensorType) -> int | None:
    if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
        return None
    return int(np.prod(t.shape, dtype=np.int64))


def _infer(node: Node, schema, ctx: OpContext, attrs: dict) -> list[TensorType]:
    if schema.infer is None:
        raise ShapeInferenceError(f"{node.label}: no shape rule is registered for {node.op_type}")
    try:
        out = schema.infer(ctx, **attrs)
    except EdgeInferError:
        raise
    except Exception as e:  # shape rules index into user-controlled attributes: name the node
        raise ShapeInferenceError(f"{node.label}: shape inference failed: {type(e).__name__}: {e}") from e
    out = list(out)
    if len(out) < len(node.outputs):
        raise ShapeInferenceError(
            f"{node.label}: has {len(node.outputs)} outputs but the operator produces {len(out)}"
        )
    return out[: len(node.outputs)]


def infer_shapes(graph: Graph, input_shapes: dict[str, tuple] | None = None) -> dict[str, TensorType]:
    """Types of every tensor of ``graph`` (inputs, constants, intermediates, outputs).

    Args:
        graph: the graph.
        input_shapes: optional concrete shapes for some inputs (dtype stays the declared one).

    Raises:
        ShapeInferenceError: naming the node whose inputs do not fit the operator.
        UnsupportedOpError: for an op without a kernel/shape rule.
    """
    overrides = {}
    for v in graph.inputs:
        if input_shapes and v.name in input_shapes:
            overrides[v.name] = TensorType(v.dtype, tuple(input_shapes[v.name]))
    types, _ = propagate(graph, overrides, fold="small")
    return types
