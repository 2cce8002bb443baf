"""The toolkit the graph rewrites of :mod:`edgeinfer.optimize` and :mod:`edgeinfer.fusion` share.

* :class:`Index` - who produces and who reads each tensor of a graph, its constants, and
  fresh tensor names; :func:`index_of` shares one index between passes that see the same
  unchanged graph.
* :class:`Edits` - the pending node replacements of one pass, applied at once by
  :meth:`Edits.result` (which returns the input graph itself when nothing changed).
* Pattern predicates: :func:`is_op` (a standard-domain node of some op types),
  :func:`other_input` (the other operand of a binary node), :func:`near` (a float close to a
  wanted value), :func:`is_float_tensor` and :func:`static_shape` (what the inferred types say).
* :func:`until_stable` - repeat a pass until it changes nothing.

``FUSED_DOMAIN`` is the domain of the nodes the rewrites create (``edgeinfer::FusedConv``...).
"""
from __future__ import annotations

import weakref
from typing import Callable

import numpy as np

from .graph import Graph, Node

FUSED_DOMAIN = "edgeinfer"
FLOAT_TYPES = (np.float16, np.float32, np.float64)


def until_stable(rewrite: Callable[[Graph, dict], Graph], g: Graph, types, limit: int = 4) -> Graph:
    """Apply ``rewrite`` until it changes nothing (it returns its input then), at most ``limit`` times."""
    for _ in range(limit):
        new = rewrite(g, types)
        if new is g:
            break
        g = new
    return g


class Index:
    """Who reads what in one graph (subgraph reads and graph outputs count as uses)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.consumers: dict[str, list[Node]] = {}
        self.uses: dict[str, int] = {}
        self.producer: dict[str, Node] = {}
        for n in graph.nodes:
            for o in n.outputs:
                if o:
                    self.producer[o] = n
            for i in n.inputs:
                if i:
                    self.uses[i] = self.uses.get(i, 0) + 1
                    self.consumers.setdefault(i, []).append(n)
            if n.has_subgraphs:
                for sub in n.subgraphs():
                    for sn in sub.walk_nodes():
                        for i in sn.inputs:
                            self.uses[i] = self.uses.get(i, 0) + 1
        for v in graph.outputs:
            self.uses[v.name] = self.uses.get(v.name, 0) + 1
        self._names: set[str] | None = None

    def only_consumer(self, name: str) -> Node | None:
        """The node reading ``name`` when it is read exactly once (and is no graph output)."""
        if self.uses.get(name) != 1:
            return None
        readers = self.consumers.get(name)
        return readers[0] if readers and len(readers) == 1 else None

    def const(self, name: str) -> np.ndarray | None:
        return self.graph.constants.get(name) if name else None

    def scalar(self, name: str) -> float | None:
        """The value of a constant with one element (any shape of ones), else None."""
        v = self.const(name)
        if v is None or v.size != 1 or v.dtype.kind != "f":
            return None
        return float(v.reshape(()))

    def new_name(self, base: str) -> str:
        """A tensor name unused in the graph (and by earlier calls), derived from ``base``."""
        if self._names is None:
            g = self.graph
            self._names = set(g.constants) | set(g.value_info) | {v.name for v in g.inputs + g.outputs}
            self._names |= set(self.producer) | set(self.uses)
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name


_INDEXES: "weakref.WeakKeyDictionary[Graph, tuple]" = weakref.WeakKeyDictionary()


def index_of(graph: Graph) -> Index:
    """The index of ``graph``, shared by the passes that see it unchanged (a pass that edits
    nothing returns its input, so the next one need not walk the graph again). Rebuilt when
    the graph's node list or constants were replaced or resized in place."""
    stamp = (id(graph.nodes), len(graph.nodes), id(graph.constants), len(graph.constants))
    hit = _INDEXES.get(graph)
    if hit is None or hit[0] != stamp:
        hit = _INDEXES[graph] = (stamp, Index(graph))
    return hit[1]


def is_op(node: Node | None, *ops: str) -> bool:
    return node is not None and not node.domain and node.op_type in ops


def other_input(node: Node, name: str) -> str | None:
    """The other input of a binary node that reads ``name`` once; None otherwise."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a == name and b != name:
        return b
    if b == name and a != name:
        return a
    return None


def near(value: float | None, want: float, rel: float = 1e-6) -> bool:
    return value is not None and abs(value - want) <= rel * max(1.0, abs(want))


class Edits:
    """Pending replacements of one pass: each claimed node is replaced once or dropped."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.replace: dict[int, Node | None] = {}
        self.constants = dict(graph.constants)

    def free(self, *nodes: Node) -> bool:
        return all(id(n) not in self.replace for n in nodes)

    def rewrite(self, anchor: Node, new: Node | None, drop: list[Node]) -> None:
        """Put ``new`` where ``anchor`` is and drop ``drop`` (all must be free)."""
        for n in drop:
            self.replace[id(n)] = None
        self.replace[id(anchor)] = new

    def result(self) -> Graph:
        if not self.replace:
            return self.graph
        g = self.graph.copy()
        g.nodes = [self.replace.get(id(n), n) for n in self.graph.nodes if self.replace.get(id(n), n) is not None]
        g.constants = self.constants
        return g


def is_float_tensor(types, name: str) -> bool:
    t = types.get(name)
    return t is not None and t.dtype in ("float16", "float32", "float64")


def static_shape(types, name: str):
    t = types.get(name)
    if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
        return None
    return tuple(t.shape)
