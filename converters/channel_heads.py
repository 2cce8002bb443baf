"""Attention heads as prunable channel groups (the head half of :mod:`.channel_groups`).

An attention block's projection writes ``H * D`` (or ``3 * H * D`` for a packed q/k/v projection)
features that a Reshape splits into ``[.., (3,) H, D]``. Removing *features* there would break
the head structure; removing whole *heads* keeps it: head ``h`` is the ``D`` consecutive features
``h*D .. h*D+D-1`` (of each of the three parts when packed). So when a Reshape splits a
channel axis that way, the projection's group is *coarsened*: its unit becomes a head, and every
constant already recorded for it (weight columns, bias) is re-expressed per head (``D`` positions,
repeated every ``H*D`` for the packed parts).

The head-split tensors get a :class:`HeadDesc` (which axes hold heads and head features) that
these rules follow: Transpose moves axes; Slice/Gather/Split/Squeeze pick one of the packed
parts; a scale by a constant passes; ``q @ k^T`` unites the q and k groups (both must lose the
same heads) and leaves a heads-only tensor; Softmax over keys passes (also PaddlePaddle's
Flatten -> Softmax -> Reshape-to-Shape form); ``probs @ v`` unites with the v group; the Reshape
that merges heads and features back gives an ordinary channel descriptor whose channels are heads
of ``D`` positions each, which the output projection reads. Anything else blocks the group.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edgeinfer.graph import Node


class HeadDesc(NamedTuple):
    """Where a head-split tensor's heads are."""

    group: int  # raw group id (units = heads)
    heads: int
    dim: int  # features per head
    h_axis: int | None  # None: folded into another axis (Flatten before a Softmax)
    d_axis: int | None  # None: the head features were contracted (attention scores)
    p_axis: int | None  # the packed q/k/v axis, until a part is picked
    origin: str = ""  # for a folded tensor: the tensor whose shape restores it


def _prod(dims) -> int | None:
    return int(np.prod(dims, dtype=np.int64)) if all(isinstance(s, int) for s in dims) else None


def _same(a, b) -> bool:
    return tuple(a) == tuple(b) or (_prod(a) is not None and _prod(a) == _prod(b))


def try_split(w, n: Node, d, si, so) -> bool:
    """The Reshape ``n`` splits the channel axis of ``d`` into ``(P,) H, D``: coarsen the group to
    heads and describe the output; False when it is not that."""
    from .channel_groups import _reshape_target

    if len(d.segs) != 1 or d.inner != 1:
        return False
    grp, count = d.segs[0]
    a, before, after = d.axis, si[:d.axis], si[d.axis + 1:]
    for b in range(len(so)):
        if not _same(so[:b], before):
            continue
        for k in (2, 3):
            parts = so[b:b + k]
            if len(parts) != k or not all(isinstance(s, int) for s in parts) or _prod(parts) != count:
                continue
            if not _same(so[b + k:], after) or min(parts) < 1:
                continue
            packed, heads, dim = (parts[0] if k == 3 else 1), parts[-2], parts[-1]
            if heads < 2 or not coarsen(w, grp, packed, heads, dim):
                return False
            target = _reshape_target(si, so, a, b + k - 2)
            if target is None or n.attrs.get("allowzero", 0):
                w.blocks.append((grp, f"{n.label}: cannot write a target for fewer heads"))
                return True
            w.reshapes[n.name] = target
            w.hdesc[n.outputs[0]] = HeadDesc(grp, heads, dim, b + k - 2, b + k - 1, b if k == 3 else None)
            return True
    return False


def coarsen(w, grp: int, packed: int, heads: int, dim: int) -> bool:
    """Make group ``grp`` (``packed * heads * dim`` channels, not tied to any other) count heads."""
    if w.uf.find(grp) != grp or grp in w.united or w.uf.size[grp] != packed * heads * dim:
        return False
    for k, (g, m) in enumerate(w.members):
        if g != grp:
            continue
        if m.repeats != 1:
            return False
        w.members[k] = (g, m.__class__(m.const, m.axis, m.offset, m.inner * dim, m.role, m.node, m.tensor,
                                       repeats=packed, period=heads * dim * m.inner))
    w.uf.size[grp] = heads
    w.coarse.add(grp)
    return True


def _block(w, hs, why: str) -> None:
    for h in hs:
        if h is not None:
            w.blocks.append((h.group, why))


def _unite(w, a: HeadDesc, b: HeadDesc) -> bool:
    if a.heads != b.heads or w.uf.size[w.uf.find(a.group)] != w.uf.size[w.uf.find(b.group)]:
        return False
    w.uf.union(a.group, b.group)
    w.united.update((a.group, b.group))
    return True


def _drop_axis(h: HeadDesc, axis: int) -> HeadDesc:
    def f(x):
        return None if x is None else (x - 1 if x > axis else x)
    return h._replace(h_axis=f(h.h_axis), d_axis=f(h.d_axis), p_axis=None if h.p_axis == axis else f(h.p_axis))


def head_rule(w, n: Node, ins: list, hins: list) -> None:
    """One node that reads a head-split tensor (module doc)."""
    live = [h for h in hins if h is not None]
    op = n.op_type
    h = hins[0]
    if h is None and op in ("Mul", "Div", "Add", "Sub") and len(live) == 1:
        h = live[0]
    out = n.outputs[0] if n.outputs else ""
    rank = None if w.shape(n.inputs[0]) is None else len(w.shape(n.inputs[0]))
    why = f"{n.label}: attention heads do not follow this op"
    if any(d is not None for d in ins):
        w.block_inputs(n, why)
        _block(w, live, why)
        return
    if op in ("Shape", "Size"):
        return
    if h is None:  # heads reach a non-data input only (MatMul's right side is handled below)
        if op != "MatMul":
            _block(w, live, why)
            return
    if op == "Transpose" and h is not None and rank is not None:
        perm = list(n.attrs.get("perm", range(rank - 1, -1, -1)))

        def moved(x):
            return None if x is None else perm.index(x)
        w.hdesc[out] = h._replace(h_axis=moved(h.h_axis), d_axis=moved(h.d_axis), p_axis=moved(h.p_axis))
        return
    if op in ("Slice", "Gather", "Split", "Squeeze", "Unsqueeze") and h is not None and h.h_axis is not None:
        _pick(w, n, h, rank)
        return
    if op in ("Mul", "Div", "Add", "Sub") and h is not None and len(live) == 1:
        other = n.inputs[1] if hins[0] is h else n.inputs[0]
        shape = w.shape(other)
        out_shape = w.shape(out)
        rank = None if out_shape is None else len(out_shape)
        mine = w.shape(n.inputs[0] if hins[0] is h else n.inputs[1])
        if shape is not None and out_shape is not None and mine is not None and len(mine) == rank:
            axes = [x for x in (h.h_axis, h.d_axis) if x is not None]
            pos = [x - (rank - len(shape)) for x in axes]
            if all(p < 0 or shape[p] == 1 for p in pos):
                w.hdesc[out] = h
                return
        _block(w, live, f"{n.label}: the other operand varies along the heads")
        return
    if op in ("Softmax", "LogSoftmax") and h is not None and rank is not None:
        axis = int(n.attrs.get("axis", -1)) % rank
        if axis not in (h.h_axis, h.d_axis) and (h.h_axis is not None or axis == rank - 1):
            w.hdesc[out] = h
            return
    if op == "Flatten" and h is not None and h.d_axis is None and h.h_axis is not None and rank is not None:
        k = int(n.attrs.get("axis", 1)) % rank
        if k == rank - 1 and h.h_axis < k:  # [.., H, T, S] -> [..*H*T, S]: the Softmax form
            w.hdesc[out] = h._replace(h_axis=None, origin=n.inputs[0])
            return
    if op == "Reshape" and h is not None:
        if h.h_axis is None and h.origin:  # back to the shape of the tensor it was flattened from
            src = w.g.producers().get(n.inputs[1]) if n.inputs[1] not in w.g.constants else None
            if src is not None and src.op_type == "Shape" and src.inputs[0] == h.origin:
                w.hdesc[out] = w.hdesc[h.origin]
                return
        elif _merge(w, n, h):
            return
    if op == "MatMul" and len(live) == 2 and rank is not None:
        a, b = hins[0], hins[1]
        rb = len(w.shape(n.inputs[1])) if w.shape(n.inputs[1]) is not None else None
        if a.h_axis is not None and a.h_axis == b.h_axis and rb == rank and a.h_axis < rank - 2 \
                and a.p_axis is None and b.p_axis is None:
            if a.d_axis == rank - 1 and b.d_axis == rank - 2 and a.dim == b.dim and _unite(w, a, b):  # q @ k^T
                w.hdesc[out] = a._replace(d_axis=None)
                return
            if a.d_axis is None and b.d_axis == rank - 1 and _unite(w, a, b):  # probs @ v
                w.hdesc[out] = b
                return
    _block(w, live, why)


def _pick(w, n: Node, h: HeadDesc, rank: int | None) -> None:
    """Slice/Gather/Split/Squeeze/Unsqueeze: pick a packed part, or drop/add size-1 axes."""
    op = n.op_type
    si, so = w.shape(n.inputs[0]), w.shape(n.outputs[0])
    why = f"{n.label}: cuts across the heads"
    if si is None or so is None:
        _block(w, [h], why)
        return
    keep = [x for x in (h.h_axis, h.d_axis) if x is not None]
    if op in ("Squeeze", "Unsqueeze"):
        from .channel_groups import _axes

        axes = _axes(w, n)
        if axes is None:
            _block(w, [h], why)
            return
        if op == "Squeeze":
            axes = sorted(a % len(si) for a in axes) or [i for i, s in enumerate(si) if s == 1]
            if any(a in keep for a in axes):
                _block(w, [h], why)
                return
            new = h
            for a in sorted(axes, reverse=True):
                new = _drop_axis(new, a)
            w.hdesc[n.outputs[0]] = new
            return
        axes = sorted(a % len(so) for a in axes)

        def shift(x):
            if x is None:
                return None
            for a in axes:
                if a <= x:
                    x += 1
            return x
        w.hdesc[n.outputs[0]] = h._replace(h_axis=shift(h.h_axis), d_axis=shift(h.d_axis), p_axis=shift(h.p_axis))
        return
    outs = [o for o in n.outputs if o]
    for o in outs:
        shape = w.shape(o)
        if shape is None or any(shape[x] != si[x] for x in keep if x < len(shape)):
            _block(w, [h], why)
            return
    changed = [i for i in range(len(si)) if len(so) == len(si) and so[i] != si[i]]
    if op == "Gather":
        axis = int(n.attrs.get("axis", 0)) % len(si)
        idx = w.const(n.inputs[1])
        if axis == h.p_axis and idx is not None and idx.ndim == 0:
            w.hdesc[n.outputs[0]] = _drop_axis(h, axis)
            return
        _block(w, [h], why)
        return
    if any(c in keep for c in changed) or (changed and changed != [h.p_axis]):
        _block(w, [h], why)
        return
    for o in outs:  # a part (or all) of the packed axis: heads and features where they were
        w.hdesc[o] = h


def _merge(w, n: Node, h: HeadDesc) -> bool:
    """The Reshape merging heads and head features back into one axis: an ordinary channel
    descriptor whose channels are heads of ``dim`` positions."""
    from .channel_groups import Chan, _reshape_target

    si, so = w.shape(n.inputs[0]), w.shape(n.outputs[0])
    if si is None or so is None or h.h_axis is None or h.d_axis != h.h_axis + 1 or h.p_axis is not None:
        return False
    if w.uf.size[h.group] != h.heads and w.uf.size[w.uf.find(h.group)] != h.heads:
        return False
    before, after = si[:h.h_axis], si[h.d_axis + 1:]
    for b in range(len(so)):
        if _same(so[:b], before) and so[b] == h.heads * h.dim and _same(so[b + 1:], after):
            target = _reshape_target(si, so, h.h_axis, b)
            if target is None or n.attrs.get("allowzero", 0):
                return False
            w.reshapes[n.name] = target
            w.desc[n.outputs[0]] = Chan(b, h.dim, ((h.group, h.heads),))
            return True
    return False
