"""Content hashes of graphs and the on-disk cache folder, for backends that cache what they
derive from a model (``litert``: exported files; ``auto``: which backend won)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..graph import Graph


def edgeinfer_cache() -> Path:
    """``$EDGEINFER_CACHE``, default ``~/.cache/edgeinfer``."""
    base = os.environ.get("EDGEINFER_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "edgeinfer"


def graph_digest(graph: Graph, input_shapes: dict, extra: dict, salt: str = "") -> str:
    """A content hash of a graph (structure, attributes, constants), input shapes, ``extra``
    (options) and ``salt`` (who asks, and the version of what they derive from it)."""
    h = hashlib.blake2b(digest_size=20)

    def put(obj) -> None:
        if isinstance(obj, np.ndarray):
            h.update(f"nd{obj.dtype.str}{obj.shape}".encode())
            h.update(np.ascontiguousarray(obj).tobytes() if obj.dtype != object else repr(obj.tolist()).encode())
        elif isinstance(obj, Graph):
            put_graph(obj)
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for v in obj:
                put(v)
            h.update(b"]")
        elif isinstance(obj, dict):
            for k in sorted(obj):
                h.update(repr(k).encode())
                put(obj[k])
        else:
            h.update(repr(obj).encode())

    def put_graph(g: Graph) -> None:
        put([(v.name, v.dtype, v.shape) for v in g.inputs])
        put([(v.name, v.dtype, v.shape) for v in g.outputs])
        put(g.opset)
        for n in g.nodes:
            put((n.op_type, n.domain, n.inputs, n.outputs))
            put(n.attrs)
        for name in sorted(g.constants):
            h.update(name.encode())
            put(g.constants[name])

    h.update(salt.encode())
    put_graph(graph)
    put({k: tuple(v) if v is not None and not hasattr(v, "dtype") else repr(v) for k, v in input_shapes.items()})
    put(extra)
    return h.hexdigest()
