"""Structured channel pruning on the IR: whole channels leave the graph, so every affected layer
really gets smaller (fewer MACs, a smaller file, faster on every backend), not just sparser.

Removing output channel ``i`` of a Conv is only correct if every tensor that carries that channel
loses it too: the bias entry, the depthwise Conv that filters it, the per-channel constants of the
activations and squeeze-excite scales on the way, the other branch of a residual Add (whose
channel ``i`` is the same channel), the slice ``i`` of every consumer's weight, the block of a
Gemm's columns a Flatten turned it into. :func:`channel_groups` finds these *coupled groups* by one
walk over the graph in topological order, giving every tensor a channel descriptor:

* the axis that holds channels, and ``inner``: how many consecutive positions of that axis one
  channel occupies (1 for NCHW; H*W after a Flatten feeding a Gemm);
* a list of segments ``(group, count)``: a Concat along the channel axis lines up the segments of
  its inputs, each still owned by the layer that made it.

The walk lives in :mod:`.channel_groups`. Each op kind has a rule there: Conv/Gemm/MatMul with constant weights read their input's
channels (a slice of the weight's input axis) and start a new group of their output channels;
depthwise Convs, BatchNormalization, activations, pooling, Resize and Pad carry the input's
descriptor through; elementwise ops (Add, Mul, ...) *unite* the groups of their inputs channel by
channel and slice per-channel constants; Flatten, Reshape, Transpose, Squeeze/Unsqueeze and
reductions over other axes move the channel axis; Concat along it concatenates segments. A
Reshape that splits a projection's features into attention heads turns that group's unit into a
head (:mod:`.channel_heads`): q, k and v lose the same heads and the output projection the
matching rows. Anything else (an unknown op, a Softmax or reduction over channels, a graph
output, a Reshape that mixes channels otherwise) *blocks* the groups that reach it: they keep
every channel. A group is a union-find set
of the groups an elementwise op tied together, with every constant slice ("member") it touches.

:func:`prune_channels` then ranks each group's channels, keeps the best ``1 - ratio`` of them
(``floor(n * (1 - ratio))``, at least ``min_channels``, rounded up to ``round_to``), and slices
every member constant, the ``group`` attribute of depthwise Convs and the constant targets of
Reshapes. Criteria:

* ``"l1"`` / ``"l2"``: the norm of each channel's weights across the whole group (producer filters,
  depthwise filters and consumer input slices, each normalised by its mean so a large layer does
  not drown a small one), as torch-pruning's group-norm importance;
* ``"bn"``: ``|gamma|`` of the BatchNormalization that followed the producing Conv in the model as
  given (network slimming, Liu et al., 2017); groups without one fall back to ``"l2"``;
* ``"activation"``: on calibration feeds, the mean ``|a_c|`` of the channel at every consumer's
  input times the norm of the consumer weights that read it: an estimate of how much the next
  layers' inputs change without it (data-aware, no gradients needed).

How much each group loses (``allocation``): the same ratio everywhere (``target_macs`` then
searches the smallest uniform ratio that removes that fraction of the MACs), or by
sensitivity: each group pruned alone at :data:`LEVELS` on calibration feeds, then greedily the
cut with the least output error per MAC saved until the target is met (wide, cheap-to-cut layers
give more; the few layers a model depends on keep their width).
The graph passes through :func:`.quantize.prepare` first (constants folded, BatchNorm folded), so
what is pruned is what runs; the result is a plain float graph every exporter and backend takes.
Pruning costs accuracy; :mod:`.distill` trains it back against the original.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from edgeinfer.errors import InputError
from edgeinfer.graph import Graph, Node

from .channel_groups import Analysis, Chan, Group, Member, channel_groups

__all__ = ["Analysis", "Chan", "Group", "Member", "channel_groups", "rank_channels", "kept_count", "apply_plan",
           "prune_channels", "CRITERIA", "ALLOCATIONS", "LEVELS"]

CRITERIA = ("l1", "l2", "bn", "activation")
ALLOCATIONS = ("auto", "uniform", "sensitivity")
LEVELS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)  # ratios tried per group by the sensitivity scan

# ----------------------------------------------------------------------------- ranking
def _channel_norms(a: np.ndarray, m: Member, n: int, p: int) -> np.ndarray:
    """Per group channel: the L1 (p=1) or L2 (p=2) norm of the member's slice, as a mean over
    its elements so layers of different sizes compare."""
    moved = np.moveaxis(np.asarray(a, np.float64), m.axis, 0)
    span = moved[m.positions(n)].reshape(n, -1)
    return np.abs(span).mean(axis=1) if p == 1 else np.sqrt((span ** 2).mean(axis=1))


def _normalised(v: np.ndarray) -> np.ndarray:
    s = float(np.mean(v))
    return v / s if s > 0 else v


def rank_channels(an: Analysis, group: Group, criterion: str = "l2",
                  activations: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Importance of each channel of ``group`` (higher keeps), by ``criterion`` (module doc)."""
    n, g = group.channels, an.graph
    total = np.zeros(n)
    if criterion == "bn":
        prod = {p.name: p for p in g.nodes}
        found = False
        for name in group.producers:
            node = prod.get(name)
            gamma = an.bn_gamma.get(node.outputs[0]) if node is not None else None
            if gamma is not None and gamma.size == n:
                total += _normalised(gamma)
                found = True
        if found:
            return total
        criterion = "l2"
    weights = [m for m in group.members if m.role in ("out", "in", "dw") and g.constants[m.const].ndim >= 2]
    if criterion == "activation" and activations:
        used = False
        for m in weights:
            if m.role != "in" or m.tensor not in activations:
                continue
            act = activations[m.tensor]
            span = np.asarray(act, np.float64)[m.positions(n)].reshape(n, -1).mean(axis=1)
            total += _normalised(span * _channel_norms(g.constants[m.const], m, n, 2))
            used = True
        if used:
            return total
        criterion = "l2"
    p = 1 if criterion == "l1" else 2
    for m in weights:
        total += _normalised(_channel_norms(g.constants[m.const], m, n, p))
    return total


def _activation_stats(an: Analysis, groups: list[Group], feeds, progress) -> dict[str, np.ndarray]:
    """Mean |x| along the channel axis of every consumer input of the groups, over ``feeds``
    (one run per feed of a copy of the graph that reduces each such tensor to a vector)."""
    from edgeinfer.graph import ValueInfo
    from edgeinfer.session import Session
    from edgeinfer.shape_inference import propagate

    types, _ = propagate(an.graph, fold="small", on_error=lambda node, e: None)
    probe = an.graph.copy()
    final: dict[str, str] = {}
    for t in sorted({m.tensor for gr in groups for m in gr.members if m.role == "in" and m.tensor}):
        d, tt = an.descriptors.get(t), types.get(t)
        if d is None or tt is None or tt.shape is None:
            continue
        ab, red, axes = (probe.unique_name(t + s) for s in ("_absmean_abs", "_absmean", "_absmean_axes"))
        probe.constants[axes] = np.array([a for a in range(len(tt.shape)) if a != d.axis], np.int64)
        probe.nodes += [Node("Abs", (t,), (ab,)), Node("ReduceMean", (ab, axes), (red,), {"keepdims": 0})]
        final[t] = red
    probe.outputs = [ValueInfo(r, "float32", None) for r in final.values()]
    sess = Session(probe, threads=None)
    sums: dict[str, np.ndarray] = {}
    count = 0
    total = len(feeds) if hasattr(feeds, "__len__") else None
    for k, feed in enumerate(feeds, 1):
        res = sess.run(dict(feed))
        for t, r in final.items():
            v = np.asarray(res[r], np.float64)
            sums[t] = v if t not in sums else sums[t] + v
        count += 1
        if progress is not None:
            progress(k, total)
    return {t: s / count for t, s in sums.items()}


# ----------------------------------------------------------------------------- pruning
def kept_count(n: int, ratio: float, *, min_channels: int = 1, round_to: int = 1) -> int:
    """How many of ``n`` channels stay when ``ratio`` of them go: ``floor(n * (1 - ratio))``
    rounded up to a multiple of ``round_to``, between ``min_channels`` and ``n``."""
    keep = math.floor(n * (1.0 - ratio) + 1e-9)
    if round_to > 1:
        keep = int(math.ceil(keep / round_to) * round_to)
    return int(min(n, max(keep, min_channels, 1)))


def apply_plan(an: Analysis, keep: dict[int, np.ndarray]) -> Graph:
    """A copy of the analysed graph with each group's channels reduced to ``keep[group id]``."""
    g = an.graph.copy()
    masks: dict[str, dict[int, np.ndarray]] = {}
    for gr in an.groups:
        if gr.id not in keep:
            continue
        drop = np.setdiff1d(np.arange(gr.channels), keep[gr.id])
        for m in gr.members:
            c = g.constants[m.const]
            axis_masks = masks.setdefault(m.const, {})
            mask = axis_masks.setdefault(m.axis, np.ones(c.shape[m.axis], bool))
            if len(drop):
                mask[m.positions(gr.channels)[drop].ravel()] = False
    for name, axis_masks in masks.items():
        c = g.constants[name]
        for axis, mask in axis_masks.items():
            c = np.compress(mask, c, axis=axis)
        g.constants[name] = np.ascontiguousarray(c)
    for k, n in enumerate(g.nodes):
        if n.name in an.depthwise:
            g.nodes[k] = n.replace(attrs={**n.attrs, "group": int(g.constants[n.inputs[1]].shape[0])})
        elif n.name in an.reshapes:  # a target that follows the pruned channel count (run-time ones too)
            name = g.unique_name(n.outputs[0] + "_pruned_shape")
            g.constants[name] = np.array(an.reshapes[n.name], np.int64)
            g.nodes[k] = n.replace(inputs=(n.inputs[0], name) + tuple(n.inputs[2:]))
    keep_vi = set(g.input_names) | set(g.output_names)
    g.value_info = {k: v for k, v in g.value_info.items() if k in keep_vi}
    g.remove_unused()
    return g


def _macs(graph: Graph, input_shapes) -> int:
    from edgeinfer.cost import count_macs

    return int(count_macs(graph, dict(input_shapes) if input_shapes else None)["total_macs"])


def _sensitivity(an: Analysis, groups: list[Group], kept, feeds, input_shapes, before: int,
                 progress) -> dict[int, list[tuple[float, float, int]]]:
    """Per group: (ratio, output error, MACs saved) with that group alone pruned at each of
    :data:`LEVELS` (distinct kept counts only)."""
    from edgeinfer.session import Session

    from .quantize import _output_error

    base = Session(an.graph)
    refs = [{k: np.asarray(v, np.float64) for k, v in base.run(dict(f)).items()} for f in feeds]
    table: dict[int, list[tuple[float, float, int]]] = {}
    total = sum(len(LEVELS) for _ in groups)
    done = 0
    for gr in groups:
        rows, seen = [], set()
        for r in LEVELS:
            done += 1
            keep = kept(gr, r)
            if len(keep) in seen or len(keep) == gr.channels:
                continue
            seen.add(len(keep))
            g = apply_plan(an, {gr.id: keep})
            rows.append((r, _output_error(Session(g), feeds, refs, norm="l1"), before - _macs(g, input_shapes)))
            if progress is not None:
                progress(done, total)
        table[gr.id] = rows
    return table


def _allocate(an: Analysis, groups: list[Group], table, kept, before: int, target_macs: float | None,
              ratio: float | None, input_shapes) -> tuple[dict[int, np.ndarray], float]:
    """Greedy: from nothing pruned, repeatedly move the group whose next level costs the least
    output error per unit saved (MACs for ``target_macs``, channels for ``ratio``) until the
    target is met. Errors of different groups are taken as additive; the MACs are counted on the
    plan itself (two coupled groups share the savings of a layer between them)."""
    level = {gr.id: -1 for gr in groups}
    by_id = {gr.id: gr for gr in groups}
    total_ch = sum(gr.channels for gr in groups)
    saved_macs, saved_ch = 0, 0

    def unit(gid: int, row) -> float:
        return row[2] if target_macs is not None else by_id[gid].channels - len(kept(by_id[gid], row[0]))

    def plan() -> dict[int, np.ndarray]:
        return {gid: (kept(by_id[gid], table[gid][level[gid]][0]) if level[gid] >= 0 else np.arange(by_id[gid].channels))
                for gid in level}

    def met() -> bool:
        if target_macs is not None:
            if saved_macs < target_macs * before:  # the additive estimate: a cheap lower bound on steps
                return False
            return before - _macs(apply_plan(an, plan()), input_shapes) >= target_macs * before
        return saved_ch >= float(ratio) * total_ch - 1e-9

    while not met():
        best = None
        for gid, rows in table.items():
            i = level[gid] + 1
            if i >= len(rows):
                continue
            prev = rows[i - 1] if i > 0 else (0.0, 0.0, 0)
            gain = unit(gid, rows[i]) - (unit(gid, prev) if i > 0 else 0)
            if gain <= 0:
                continue
            cost = max(rows[i][1] - prev[1], 0.0) / gain
            if best is None or cost < best[0]:
                best = (cost, gid)
        if best is None:
            break
        gid = best[1]
        level[gid] += 1
        saved_macs = sum(table[g][level[g]][2] for g in level if level[g] >= 0)
        saved_ch = sum(by_id[g].channels - len(kept(by_id[g], table[g][level[g]][0])) for g in level if level[g] >= 0)
    return plan(), saved_ch / max(total_ch, 1)


def prune_channels(graph: Graph, ratio: float | None = 0.3, *, criterion: str = "l2", target_macs: float | None = None,
                   allocation: str = "auto", calibration: Iterable[Mapping[str, np.ndarray]] = (),
                   exclude: Iterable[str] = (), min_channels: int = 1, round_to: int = 1,
                   input_shapes: Mapping[str, tuple] | None = None,
                   progress: Callable[[int, int | None], None] | None = None) -> Graph:
    """``graph`` (not changed) with a fraction of the channels of every prunable group removed.

    Args:
        graph: the model.
        ratio: fraction of each group's channels to remove (``floor(n * (1 - ratio))`` stay).
        criterion: ``"l1"``, ``"l2"``, ``"bn"`` or ``"activation"`` (needs ``calibration``).
        target_macs: instead of ``ratio``, the fraction of the model's MACs to remove.
        allocation: how much each group loses. ``"uniform"``: every group the same ratio (for
            ``target_macs``, the smallest ratio that removes enough). ``"sensitivity"``: each
            group is pruned alone at several ratios on the calibration feeds and the output error
            measured; then, greedily, the step with the least error per MAC (or per channel, for
            ``ratio``) saved is taken until the target is met (layers that matter keep their
            width, wide cheap-to-cut ones give more). ``"auto"``: sensitivity when calibration
            feeds are given, else uniform.
        calibration: feed dicts for ``"activation"`` (and to find concrete input shapes).
        exclude: node names whose output channels stay.
        min_channels: no group keeps fewer.
        round_to: kept counts are rounded up to a multiple of this (SIMD-friendly widths).
        input_shapes: concrete input shapes for shape inference and MAC counting; defaults to
            the first calibration feed's, else the declared shapes.

    Returns:
        The pruned graph (prepared: constants and BatchNorm folded), with
        ``metadata["edgeinfer.pruning"]``: method, criterion, ratio, MACs and parameters before
        and after, and per group its producers, channels and kept channels.

    Raises:
        InputError: bad arguments, or no prunable group.
    """
    if criterion not in CRITERIA:
        raise InputError(f"prune: criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    if target_macs is None and (ratio is None or not 0.0 <= float(ratio) < 1.0):
        raise InputError(f"prune: channel ratio must be in [0, 1), got {ratio}")
    if target_macs is not None and not 0.0 < float(target_macs) < 1.0:
        raise InputError(f"prune: target_macs must be in (0, 1), got {target_macs}")
    if allocation not in ALLOCATIONS:
        raise InputError(f"prune: allocation must be one of {list(ALLOCATIONS)}, got {allocation!r}")
    if min_channels < 1 or round_to < 1:
        raise InputError(f"prune: min_channels and round_to must be at least 1, got {min_channels}, {round_to}")
    feeds = list(calibration)
    if input_shapes is None and feeds:
        input_shapes = {k: np.shape(v) for k, v in feeds[0].items()}
    an = channel_groups(graph, exclude=exclude, input_shapes=input_shapes)
    groups = an.prunable()
    if not groups:
        reasons = sorted({b for gr in an.groups for b in gr.blocked})[:5]
        raise InputError(f"prune: graph '{graph.name}' has no prunable channel group"
                         + (f" ({'; '.join(reasons)})" if reasons else ""))
    if criterion == "activation" and not feeds:
        raise InputError("prune: criterion 'activation' needs calibration feeds, got none")
    acts = _activation_stats(an, groups, feeds, progress) if criterion == "activation" else None
    order = {gr.id: np.argsort(-rank_channels(an, gr, criterion, acts), kind="stable") for gr in groups}

    def kept(gr: Group, r: float) -> np.ndarray:
        return np.sort(order[gr.id][:kept_count(gr.channels, r, min_channels=min_channels, round_to=round_to)])

    def build(r: float) -> Graph:
        keep = {gr.id: kept(gr, r) for gr in groups}
        return apply_plan(an, keep), keep

    before = _macs(an.graph, input_shapes)
    if allocation == "auto":
        allocation = "sensitivity" if feeds else "uniform"
    if allocation == "sensitivity":
        if not feeds:
            raise InputError("prune: allocation 'sensitivity' needs calibration feeds, got none")
        table = _sensitivity(an, groups, kept, feeds[:16], input_shapes, before, progress)
        keep, ratio = _allocate(an, groups, table, kept, before, target_macs, ratio, input_shapes)
        pruned = apply_plan(an, keep)
        if target_macs is not None and 1.0 - _macs(pruned, input_shapes) / max(before, 1) < target_macs:
            raise InputError(f"prune: removing {target_macs:.0%} of the MACs is not possible with the prunable "
                             f"groups at ratios up to {LEVELS[-1]}")
    elif target_macs is not None:
        lo, hi = 0.0, 0.99
        best = None
        for _ in range(14):  # bisection on the uniform ratio
            mid = (lo + hi) / 2
            cand, keep = build(mid)
            if 1.0 - _macs(cand, input_shapes) / max(before, 1) >= target_macs:
                best, hi = (cand, keep, mid), mid
            else:
                lo = mid
        if best is None:
            raise InputError(f"prune: removing {target_macs:.0%} of the MACs is not possible with the prunable groups "
                             f"(at most {1.0 - _macs(build(0.99)[0], input_shapes) / max(before, 1):.1%})")
        pruned, keep, ratio = best
    else:
        pruned, keep = build(float(ratio))
    pruned.validate()
    after = _macs(pruned, input_shapes)
    info: dict[str, Any] = {
        "method": "channels", "criterion": criterion, "allocation": allocation, "ratio": float(ratio),
        "target_macs": None if target_macs is None else float(target_macs),
        "macs_before": before, "macs_after": after,
        "params_before": int(an.graph.param_count()), "params_after": int(pruned.param_count()),
        "groups": [{"producers": gr.producers, "channels": gr.channels, "kept": int(len(keep[gr.id]))} for gr in groups],
        "blocked": len([gr for gr in an.groups if gr.blocked and gr.producers]),
    }
    pruned.metadata["edgeinfer.pruning"] = json.dumps(info)
    return pruned
