"""Unstructured magnitude pruning of an IR graph's weights (first part of issue 8).

:func:`prune_magnitude` sets the smallest-magnitude weights of every Conv, Gemm and MatMul with a
constant weight to zero: each layer to the same sparsity (``scope="layer"``, the default: no
layer is emptied because its weights happen to be small), or one magnitude threshold for all of
them (``scope="global"``, as ``torch.nn.utils.prune.global_unstructured``; layers with larger
weights keep more). Shapes do not change, so every backend runs the result as before; the saving
is in storage: ``.eim`` writes a tensor that is mostly zeros with a bitmask or index encoding,
whichever is smaller (:mod:`edgeinfer.format`). Exporters to other formats write it dense.

The graph passes through :func:`.quantize.prepare` first (constants folded, BatchNorm folded into
its conv), so the weights pruned are the ones that run; a zero stays zero under BN folding and
under quantization, so pruning composes with both in either order.

Pruning without retraining costs accuracy; the distillation step of issue 8 is what wins it back.
:func:`sparsity_schedule` gives the gradual schedule (Zhu & Gupta, 2017) for pruning while
training.
"""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np

from edgeinfer.errors import InputError
from edgeinfer.graph import Graph

PRUNABLE = ("Conv", "Gemm", "MatMul")
SCOPES = ("layer", "global")


def prunable_weights(graph: Graph, *, ops: Iterable[str] = PRUNABLE, exclude: Iterable[str] = (),
                     min_elements: int = 256) -> dict[str, list[str]]:
    """Constant float weights (input 1) of ``ops`` nodes with at least ``min_elements`` values:
    weight name -> the nodes reading it (a weight shared by several nodes is pruned once)."""
    kinds, skip = set(ops), set(exclude)
    found: dict[str, list[str]] = {}
    for n in graph.nodes:
        if n.domain or n.op_type not in kinds or n.name in skip or len(n.inputs) < 2:
            continue
        w = graph.constants.get(n.inputs[1])
        if w is None or w.dtype.kind != "f" or w.ndim < 2 or w.size < min_elements:
            continue
        found.setdefault(n.inputs[1], []).append(n.name)
    return found


def prune_magnitude(graph: Graph, sparsity: float = 0.5, *, scope: str = "layer", ops: Iterable[str] = PRUNABLE,
                    exclude: Iterable[str] = (), min_elements: int = 256) -> Graph:
    """``graph`` (not changed) with the smallest weights set to zero (see the module doc).

    ``sparsity`` is the fraction of each pruned layer's weights (``scope="layer"``) or of all of
    them together (``"global"``) that becomes zero. Weights under ``min_elements`` values (a
    depthwise 3x3 of a few channels, biases) are left alone. The result records per weight its
    sparsity in ``metadata["edgeinfer.pruning"]``.

    Raises:
        InputError: sparsity outside [0, 1), an unknown scope, or nothing to prune.
    """
    from .quantize import prepare

    if not 0.0 <= float(sparsity) < 1.0:
        raise InputError(f"prune: sparsity must be in [0, 1), got {sparsity}")
    if scope not in SCOPES:
        raise InputError(f"prune: scope must be one of {list(SCOPES)}, got {scope!r}")
    g = prepare(graph)
    weights = prunable_weights(g, ops=ops, exclude=exclude, min_elements=min_elements)
    if not weights:
        raise InputError(f"prune: graph '{graph.name}' has no constant {'/'.join(ops)} weight of at least "
                         f"{min_elements} values to prune")
    threshold = None
    if scope == "global":
        mags = np.concatenate([np.abs(g.constants[w]).ravel() for w in weights])
        k = int(np.floor(sparsity * mags.size))
        threshold = np.partition(mags, k - 1)[k - 1] if k else -1.0
    report = {}
    for name in weights:
        w = g.constants[name]
        mag = np.abs(w)
        if threshold is None:
            k = int(np.floor(sparsity * w.size))
            mask = np.zeros(w.size, bool)
            if k:
                mask[np.argpartition(mag.ravel(), k - 1)[:k]] = True  # exactly k zeros, ties broken by position
            mask = mask.reshape(w.shape)
        else:
            mask = mag <= threshold
        pruned = np.where(mask, np.zeros((), w.dtype), w).astype(w.dtype)
        g.constants[name] = pruned
        report[name] = {"nodes": weights[name], "elements": int(w.size),
                        "sparsity": float(np.count_nonzero(pruned == 0) / w.size)}
    total = sum(r["elements"] for r in report.values())
    zeros = sum(r["sparsity"] * r["elements"] for r in report.values())
    g.metadata["edgeinfer.pruning"] = json.dumps({"method": "magnitude", "scope": scope, "target": float(sparsity),
                                                  "sparsity": zeros / total, "weights": report})
    return g


def sparsity_schedule(final: float, steps: int, *, initial: float = 0.0, begin: int = 0, end: int | None = None,
                      power: int = 3) -> list[float]:
    """Target sparsity at each of ``steps`` training steps (Zhu & Gupta, 2017): ``initial`` until
    ``begin``, rising as ``final + (initial - final) * (1 - t)^power`` to ``final`` at ``end``
    (default: the last step), then flat. Pruning fast early, when the network can recover, and
    slowly near the end."""
    if steps < 1:
        raise InputError(f"sparsity_schedule: steps must be at least 1, got {steps}")
    end = steps - 1 if end is None else end
    if not 0 <= begin <= end < steps:
        raise InputError(f"sparsity_schedule: need 0 <= begin <= end < steps, got begin={begin}, end={end}, "
                         f"steps={steps}")
    out = []
    for s in range(steps):
        t = 1.0 if end == begin else min(max((s - begin) / (end - begin), 0.0), 1.0)
        out.append(initial if s < begin else final + (initial - final) * (1.0 - t) ** power)
    return out
