"""The graph IR: plain, small data that every importer, pass, exporter and backend shares.

* :class:`ValueInfo` names a tensor and gives its dtype (an IR dtype string, see
  :mod:`edgeinfer.dtypes`) and shape. A shape is a tuple whose entries are ``int`` (known),
  ``str`` (a symbolic dim such as ``"batch"``) or ``None`` (unknown); the shape itself is
  ``None`` when even the rank is unknown.
* :class:`Node` is one operator application. Operator semantics are ONNX's at the latest
  opset (importers normalise older opsets and other formats to that one vocabulary). Missing
  optional inputs are the empty string, as in ONNX. Attributes are plain Python values:
  ``int``, ``float``, ``str``, ``bytes``, lists of those, ``numpy.ndarray`` (tensor
  attributes), :class:`Graph` (If/Loop/Scan bodies) or lists of graphs.
* :class:`Graph` holds inputs, outputs, nodes in topological order, constant tensors by name,
  the opset per domain and free-form string metadata. A constant whose name is also a graph
  input is an *overridable* input: its value is the default and a feed may replace it.
  Nested graphs may read names of the enclosing graphs (outer scope), as in ONNX.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple, Union

import numpy as np

from . import dtypes as _dt
from .errors import GraphError

Dim = Union[int, str, None]
Shape = Union[tuple, None]

MAX_SUBGRAPH_DEPTH = 32


class TensorType(NamedTuple):
    """dtype and shape of a value, without its name (what shape inference produces)."""

    dtype: str
    shape: Shape


@dataclass(frozen=True)
class ValueInfo:
    """A named tensor's type: IR dtype string and shape (see module docstring)."""

    name: str
    dtype: str
    shape: Shape = None

    @property
    def type(self) -> TensorType:
        return TensorType(self.dtype, self.shape)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def is_static(self) -> bool:
        """True when every dim is a known integer."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}{format_shape(self.shape)}"


@dataclass(frozen=True, eq=False)
class Node:
    """One operator application. Identity-hashed so passes can keep sets of nodes."""

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""

    # whether an attribute holds a graph, found once (passes ask for every node, often)
    _nested: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if self.attrs:
            for v in self.attrs.values():
                if isinstance(v, Graph) or (isinstance(v, (list, tuple)) and any(isinstance(x, Graph) for x in v)):
                    object.__setattr__(self, "_nested", True)
                    break

    def replace(self, **changes) -> "Node":
        """A copy with some fields changed (nodes are frozen)."""
        return dataclasses.replace(self, **changes)

    @property
    def label(self) -> str:
        """How error messages refer to this node: op type plus name or first output."""
        who = self.name or (self.outputs[0] if self.outputs else "?")
        return f"{self.op_type} node '{who}'"

    def subgraphs(self) -> Iterator["Graph"]:
        if not self._nested:
            return
        for value in self.attrs.values():
            if isinstance(value, Graph):
                yield value
            elif isinstance(value, (list, tuple)):
                yield from (v for v in value if isinstance(v, Graph))

    @property
    def has_subgraphs(self) -> bool:
        """True when an attribute holds a graph (If/Loop/Scan bodies...)."""
        return self._nested

    def __repr__(self) -> str:
        return f"Node({self.op_type}, {list(self.inputs)} -> {list(self.outputs)}, name={self.name!r})"


@dataclass(eq=False)
class Graph:
    """A computation graph (see module docstring). Mutable; passes say whether they copy."""

    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    value_info: dict[str, ValueInfo] = field(default_factory=dict)
    opset: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    name: str = "graph"

    # ----------------------------------------------------------------- lookups
    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.outputs]

    def required_inputs(self) -> list[ValueInfo]:
        """Inputs a caller must feed (those without a constant default)."""
        return [v for v in self.inputs if v.name not in self.constants]

    def overridable_inputs(self) -> list[ValueInfo]:
        """Inputs that have a constant default a feed may replace."""
        return [v for v in self.inputs if v.name in self.constants]

    def producers(self) -> dict[str, Node]:
        """Map from a tensor name to the node producing it."""
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Map from a tensor name to the nodes reading it (subgraph reads count for their node)."""
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for name in set(n.inputs) | _outer_reads(n):
                if name:
                    users.setdefault(name, []).append(n)
        return users

    def tensor_type(self, name: str) -> TensorType | None:
        """The known type of a tensor: input, constant, output or inferred intermediate."""
        if name in self.constants:
            c = self.constants[name]
            return TensorType(_dt.from_numpy(c.dtype), tuple(c.shape))
        for v in self.inputs:
            if v.name == name:
                return v.type
        if name in self.value_info:
            return self.value_info[name].type
        for v in self.outputs:
            if v.name == name:
                return v.type
        return None

    def op_histogram(self) -> dict[str, int]:
        """Operator counts, including nodes inside subgraphs."""
        counts: dict[str, int] = {}
        for n in self.walk_nodes():
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def walk_nodes(self) -> Iterator[Node]:
        """Every node of this graph and of its nested subgraphs, depth first."""
        stack = [iter(self.nodes)]
        while stack:
            node = next(stack[-1], None)
            if node is None:
                stack.pop()
                continue
            yield node
            subs = list(node.subgraphs())
            if subs:
                stack.append(iter([n for g in subs for n in g.nodes]))

    def walk_graphs(self) -> Iterator["Graph"]:
        """This graph and every nested subgraph."""
        stack = [self]
        while stack:
            g = stack.pop()
            yield g
            for n in g.nodes:
                stack.extend(n.subgraphs())

    def param_count(self) -> int:
        """Number of elements in constant tensors (weights), subgraphs included."""
        return sum(int(np.prod(c.shape, dtype=np.int64)) for g in self.walk_graphs() for c in g.constants.values())

    def weight_bytes(self) -> int:
        return sum(int(c.nbytes) for g in self.walk_graphs() for c in g.constants.values() if c.dtype != object)

    def copy(self) -> "Graph":
        """A shallow copy: new containers, same (immutable by convention) nodes and arrays."""
        return Graph(
            inputs=list(self.inputs),
            outputs=list(self.outputs),
            nodes=list(self.nodes),
            constants=dict(self.constants),
            value_info=dict(self.value_info),
            opset=dict(self.opset),
            metadata=dict(self.metadata),
            name=self.name,
        )

    # ------------------------------------------------------------- editing
    def unique_name(self, base: str) -> str:
        """A tensor/node name not used anywhere in this graph, derived from ``base``."""
        taken = self._all_names()
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    def _all_names(self) -> set[str]:
        names = set(self.constants) | set(self.value_info)
        names.update(v.name for v in self.inputs)
        names.update(v.name for v in self.outputs)
        for n in self.nodes:
            names.update(n.outputs)
            names.update(n.inputs)
            if n.name:
                names.add(n.name)
        return names

    def toposort(self) -> None:
        """Order nodes topologically in place; raises GraphError naming a node on a cycle."""
        self.nodes = toposort_nodes(self.nodes, set(self.input_names) | set(self.constants))

    def remove_unused(self) -> None:
        """Drop nodes and constants that no graph output depends on (in place)."""
        needed = set(self.output_names)
        kept: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.outputs) or _has_side_effects(n):
                kept.append(n)
                needed.update(i for i in n.inputs if i)
                needed.update(_outer_reads(n))
        self.nodes = kept[::-1]
        inputs = set(self.input_names)
        self.constants = {k: v for k, v in self.constants.items() if k in needed or k in inputs}
        self.value_info = {k: v for k, v in self.value_info.items() if k in needed}

    # ------------------------------------------------------------ validation
    def validate(self, outer_scope: Iterable[str] = (), _depth: int = 0) -> None:
        """Check names, SSA form, topological order, dtypes and subgraphs.

        Raises:
            GraphError: naming the first offending node or tensor.
        """
        if _depth > MAX_SUBGRAPH_DEPTH:
            raise GraphError(
                f"subgraph '{self.name}' is nested {_depth} levels deep; the limit is {MAX_SUBGRAPH_DEPTH}"
            )
        where = f"graph '{self.name}'"
        defined: set[str] = set(outer_scope)
        seen_inputs: set[str] = set()
        for v in self.inputs:
            _check_value_info(v, where)
            if v.name in seen_inputs:
                raise GraphError(f"{where}: input '{v.name}' is declared twice")
            seen_inputs.add(v.name)
        for name, arr in self.constants.items():
            if not isinstance(arr, np.ndarray):
                raise GraphError(f"{where}: constant '{name}' is a {type(arr).__name__}, expected numpy.ndarray")
            _dt.from_numpy(arr.dtype)
        defined |= seen_inputs | set(self.constants)
        produced: set[str] = set()
        for node in self.nodes:
            if not isinstance(node, Node):
                raise GraphError(f"{where}: nodes must be Node objects, found {type(node).__name__}")
            if not node.op_type or not isinstance(node.op_type, str):
                raise GraphError(f"{where}: a node has no op_type ({node!r})")
            for name in node.inputs:
                if name and name not in defined:
                    raise GraphError(
                        f"{where}: {node.label} reads '{name}', which is not a graph input, "
                        f"constant, or output of a previous node"
                    )
            for sub in node.subgraphs():
                sub.validate(outer_scope=defined, _depth=_depth + 1)
            for name in node.outputs:
                if not name:
                    continue
                if name in produced or name in seen_inputs or name in self.constants:
                    raise GraphError(f"{where}: {node.label} writes '{name}', which is already defined")
                produced.add(name)
                defined.add(name)
            for key in node.attrs:
                if not isinstance(key, str):
                    raise GraphError(f"{where}: {node.label} has a non-string attribute name {key!r}")
        for v in self.outputs:
            _check_value_info(v, where)
            if v.name not in defined:
                raise GraphError(f"{where}: output '{v.name}' is not produced by any node, input or constant")
        for v in self.value_info.values():
            _check_value_info(v, where)

    def __repr__(self) -> str:
        return (
            f"Graph('{self.name}', inputs={[str(v) for v in self.inputs]}, "
            f"outputs={[str(v) for v in self.outputs]}, nodes={len(self.nodes)}, constants={len(self.constants)})"
        )


# --------------------------------------------------------------------- helpers
def format_shape(shape: Shape) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _check_value_info(v: ValueInfo, where: str) -> None:
    if not isinstance(v, ValueInfo) or not v.name:
        raise GraphError(f"{where}: every input/output needs a ValueInfo with a name, found {v!r}")
    _dt.check_type(v.dtype)
    if v.shape is not None:
        for d in v.shape:
            if not (d is None or isinstance(d, str) or (isinstance(d, int) and d >= 0)):
                raise GraphError(f"{where}: tensor '{v.name}' has invalid dim {d!r} in shape {v.shape}")


def _outer_reads(node: Node) -> set[str]:
    """Names a node's subgraphs read from enclosing scopes."""
    reads: set[str] = set()
    for sub in node.subgraphs():
        local = set(sub.input_names) | set(sub.constants)
        for n in sub.nodes:
            for name in n.inputs:
                if name and name not in local:
                    reads.add(name)
            reads |= {r for r in _outer_reads(n) if r not in local}
            local.update(n.outputs)
        reads |= {v.name for v in sub.outputs if v.name not in local}
    return reads


def _has_side_effects(node: Node) -> bool:
    return False


def toposort_nodes(nodes: list[Node], available: set[str]) -> list[Node]:
    """Kahn's algorithm, stable with respect to the given order.

    Names not produced by any node in ``nodes`` are assumed to come from outside (inputs,
    constants, outer scope). Raises GraphError naming a node that sits on a cycle.
    """
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.outputs:
            if o:
                producer[o] = i
    deps: list[set[int]] = []
    users: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        d = {producer[x] for x in set(n.inputs) | _outer_reads(n) if x and x in producer and x not in available}
        deps.append(d)
        for j in d:
            users[j].append(i)
    import heapq

    ready = [i for i, d in enumerate(deps) if not d]
    heapq.heapify(ready)
    order: list[int] = []
    remaining = [len(d) for d in deps]
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = next(nodes[i] for i in range(len(nodes)) if remaining[i] > 0)
        raise GraphError(f"the graph has a cycle through {stuck.label}")
    return [nodes[i] for i in order]


def outer_reads(node: Node) -> set[str]:
    """Names the subgraphs of ``node`` (nested ones included) read from enclosing scopes."""
    return _outer_reads(node)
