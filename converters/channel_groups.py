"""Coupled channel groups of an IR graph: the analysis half of structured pruning
(:mod:`.prune_channels` ranks, allocates and cuts; see its docstring for the whole method).

:func:`channel_groups` walks a prepared graph once in topological order and gives every tensor a
channel descriptor (:class:`Chan`: the axis that holds channels, how many positions one channel
occupies on it, and which group owns each run of channels). One rule per op kind (``_RULES`` and
the op sets below) says how channels flow through it: producers start groups, elementwise ops
unite them, pass-through ops carry them, and anything a rule cannot follow *blocks* the groups
that reach it, with the reason kept. Every constant that changes when a group loses a channel is
recorded as a :class:`Member` of that group, so cutting is a matter of slicing members.
Kept apart from the pruning module so each stays a readable size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, NamedTuple

import numpy as np

from edgeinfer.errors import InputError
from edgeinfer.graph import Graph, Node

# ops whose output has the input's channels, one for one (first input, first output)
_PASS = {
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Erf", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Softsign", "Mish", "Swish", "ThresholdedRelu", "Clip", "Abs", "Neg", "Exp", "Log", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Cast", "Identity", "Dropout", "Not",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
    "LRN",  # normalises across neighbouring channels: removing one changes its neighbours' scale slightly
}
# elementwise ops with numpy broadcasting over all their inputs
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
                "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "BitShift"}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"}
_SHAPE_ONLY = {"Shape", "Size"}  # read only the (run-time) shape, which follows the pruned tensor


class Chan(NamedTuple):
    """Where a tensor's prunable channels are (see the module doc)."""

    axis: int  # non-negative, in the tensor's rank
    inner: int  # positions per channel along that axis
    segs: tuple[tuple[int, int], ...]  # (group, channel count), in order along the axis

    @property
    def channels(self) -> int:
        return sum(c for _, c in self.segs)


@dataclass
class Member:
    """A constant that changes with a group: along ``axis``, channel ``i`` of the group occupies
    positions ``offset + i*inner`` to ``offset + (i+1)*inner``. ``role`` is ``"out"`` (a
    producer's filters/bias), ``"in"`` (a consumer's input slice, read from ``tensor``),
    ``"dw"`` (a depthwise filter) or ``"param"`` (a per-channel constant of another op)."""

    const: str
    axis: int
    offset: int
    inner: int
    role: str
    node: str
    tensor: str = ""
    repeats: int = 1  # a packed q/k/v projection: the unit recurs every `period` positions
    period: int = 0

    def positions(self, n: int) -> np.ndarray:
        """[n, repeats * inner] positions along ``axis`` of each of the group's ``n`` units."""
        base = self.offset + np.arange(n)[:, None] * self.inner + np.arange(self.inner)[None, :]
        return np.concatenate([base + r * self.period for r in range(self.repeats)], axis=1)


@dataclass
class Group:
    """A set of channels that must be pruned together (union of coupled groups)."""

    id: int
    channels: int
    producers: list[str] = field(default_factory=list)  # nodes whose output channels these are
    members: list[Member] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # why it cannot be pruned (empty: prunable)

    @property
    def prunable(self) -> bool:
        return not self.blocked and self.channels > 1 and bool(self.producers)


@dataclass
class Analysis:
    """What :func:`channel_groups` found: the prepared graph, its groups and the Reshape targets
    and depthwise Convs to rewrite."""

    graph: Graph
    groups: list[Group]
    descriptors: dict[str, Chan]
    reshapes: dict[str, list[int]]  # Reshape node name -> its new constant target
    depthwise: list[str]
    bn_gamma: dict[str, np.ndarray]  # producer output tensor -> |gamma| of the BN folded into it

    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []

    def new(self, channels: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(channels)
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


class _Walker:
    """One pass over a prepared graph building descriptors, groups and members."""

    def __init__(self, g: Graph, types: dict):
        self.g, self.types = g, types
        self.uf = _UnionFind()
        self.desc: dict[str, Chan] = {}
        self.members: list[tuple[int, Member]] = []  # (raw group, member)
        self.producers: list[tuple[int, str]] = []
        self.blocks: list[tuple[int, str]] = []
        self.reshapes: dict[str, list[int]] = {}
        self.depthwise: list[str] = []
        self.hdesc: dict = {}  # head-split tensors (.channel_heads)
        self.coarse: set[int] = set()  # groups whose units became attention heads
        self.united: set[int] = set()  # groups tied to another one

    # ----------------------------------------------------------------- helpers
    def shape(self, name: str):
        t = self.types.get(name)
        return None if t is None else t.shape

    def const(self, name: str) -> np.ndarray | None:
        return self.g.constants.get(name) if name else None

    def block(self, d: Chan | None, why: str) -> None:
        if d is not None:
            for grp, _ in d.segs:
                self.blocks.append((grp, why))

    def block_inputs(self, n: Node, why: str) -> None:
        for i in n.inputs:
            self.block(self.desc.get(i), f"{n.label}: {why}")

    def new_group(self, n: Node, channels: int) -> int:
        grp = self.uf.new(channels)
        self.producers.append((grp, n.name))
        return grp

    def add_members(self, d: Chan, const: str, axis: int, role: str, n: Node, tensor: str = "",
                    inner: int | None = None) -> None:
        off = 0
        inner = d.inner if inner is None else inner
        for grp, cnt in d.segs:
            if cnt != self.uf.size[grp]:  # a view from before the group counted heads
                self.blocks.append((grp, f"{n.label}: reads the group as channels after it became heads"))
            else:
                self.members.append((grp, Member(const, axis, off, inner, role, n.name, tensor)))
            off += cnt * inner

    def unite(self, a: Chan, b: Chan) -> bool:
        """Tie two descriptors of the same tensor positions channel by channel; False when their
        segments do not line up (then the caller blocks both)."""
        if a.inner != b.inner or [c for _, c in a.segs] != [c for _, c in b.segs]:
            return False
        if any(c != self.uf.size[g] for g, c in (*a.segs, *b.segs)):
            return False
        for (ga, _), (gb, _) in zip(a.segs, b.segs):
            self.uf.union(ga, gb)
            self.united.update((ga, gb))
        return True

    # ----------------------------------------------------------------- walk
    def run(self) -> None:
        outputs = set(self.g.output_names)
        from .channel_heads import head_rule

        for n in self.g.nodes:
            ins = [self.desc.get(i) if i else None for i in n.inputs]
            hins = [self.hdesc.get(i) if i else None for i in n.inputs]
            if n.has_subgraphs or n.domain not in ("", "ai.onnx"):
                self.block_inputs(n, "not an ONNX operator pruning understands")
                for h in hins:
                    if h is not None:
                        self.blocks.append((h.group, f"{n.label}: not an ONNX operator pruning understands"))
                continue
            if any(h is not None for h in hins):
                head_rule(self, n, ins, hins)
                continue
            if not any(ins) and n.op_type not in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
                continue
            rule = _RULES.get(n.op_type)
            if rule is None:
                if n.op_type in _PASS:
                    rule = _pass
                elif n.op_type in _ELEMENTWISE:
                    rule = _elementwise
                elif n.op_type in _REDUCE:
                    rule = _reduce
                elif n.op_type in _SHAPE_ONLY:
                    continue
            if rule is None:
                self.block_inputs(n, "op has no channel-pruning rule")
                continue
            rule(self, n, ins)
        for o in outputs:
            self.block(self.desc.get(o), f"graph output '{o}' keeps its channels")
            if o in self.hdesc:
                self.blocks.append((self.hdesc[o].group, f"graph output '{o}' keeps its heads"))
        for n in self.g.nodes:  # tensors read by subgraphs
            if n.has_subgraphs:
                from edgeinfer.graph import outer_reads

                for name in outer_reads(n):
                    self.block(self.desc.get(name), f"{n.label} reads it in a subgraph")


# ----------------------------------------------------------------------------- rules
def _rank(w: _Walker, name: str) -> int | None:
    s = w.shape(name)
    return None if s is None else len(s)


def _pass(w: _Walker, n: Node, ins: list) -> None:
    d = ins[0] if ins else None
    if d is None:
        w.block_inputs(n, "channels reach it through a non-data input")
        return
    if n.op_type in ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "LRN") \
            and (d.axis != 1 or d.inner != 1):
        w.block(d, f"{n.label}: pools a tensor whose channels are not on axis 1")
        return
    if n.op_type == "PRelu":
        _elementwise(w, n, ins)
        return
    for k, x in enumerate(ins[1:], 1):
        w.block(x, f"{n.label}: channels reach its input {k}")
    if n.outputs and n.outputs[0]:
        w.desc[n.outputs[0]] = d


def _aligned(w: _Walker, n: Node, name: str, d: Chan | None, out_rank: int) -> tuple[Chan | None, str | None]:
    """The descriptor of input ``name`` in the output's axes; ``(None, None)`` when the input does
    not touch channels; ``(None, why)`` when it holds channels the rules cannot follow."""
    if d is not None:
        r = _rank(w, name)
        if r is None:
            return None, "input of unknown rank"
        return d._replace(axis=d.axis + out_rank - r), None
    return None, None


def _elementwise(w: _Walker, n: Node, ins: list) -> None:
    out = n.outputs[0]
    out_rank = _rank(w, out)
    live = [d for d in ins if d is not None]
    if out_rank is None:
        for d in live:
            w.block(d, f"{n.label}: output rank unknown")
        return
    aligned = []
    for name, d in zip(n.inputs, ins):
        a, why = _aligned(w, n, name, d, out_rank)
        if why:
            for x in live:
                w.block(x, f"{n.label}: {why}")
            return
        if a is not None:
            aligned.append(a)
    ref = aligned[0]
    for a in aligned[1:]:
        if a.axis != ref.axis or not w.unite(ref, a):
            for x in live:
                w.block(x, f"{n.label}: inputs' channels do not line up")
            return
    size = ref.channels * ref.inner
    # the other inputs: constants are sliced, run-time tensors must broadcast over the channel axis
    for k, (name, d) in enumerate(zip(n.inputs, ins)):
        if d is not None or not name:
            continue
        shape = w.shape(name)
        pos = None if shape is None else ref.axis - (out_rank - len(shape))
        dim = 1 if (shape is not None and pos < 0) else (None if shape is None else shape[pos])
        if dim == 1:
            continue
        c = w.const(name)
        if c is not None and dim == size:
            w.add_members(ref, name, pos, "param", n)
            continue
        for x in live:
            w.block(x, f"{n.label}: input {k} '{name}' has {dim} values along the channel axis, not 1 or {size}")
        return
    if n.op_type in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"):
        pass  # boolean masks still carry the channels
    w.desc[out] = ref


def _produce(w: _Walker, n: Node, count: int, weight_axis: int, bias: tuple[str, int] | None = None,
             out_axis: int = 1) -> int:
    """Start the group of ``n``'s ``count`` output channels: its weight (input 1) along
    ``weight_axis`` and its bias ``(name, axis)`` are the group's "out" members."""
    grp = w.new_group(n, count)
    w.members.append((grp, Member(n.inputs[1], weight_axis, 0, 1, "out", n.name)))
    if bias is not None:
        w.members.append((grp, Member(bias[0], bias[1], 0, 1, "out", n.name)))
    w.desc[n.outputs[0]] = Chan(out_axis, 1, ((grp, count),))
    return grp


def _conv(w: _Walker, n: Node, ins: list) -> None:
    x, wt = ins[0], w.const(n.inputs[1]) if len(n.inputs) > 1 else None
    if wt is None or wt.ndim < 3:
        w.block_inputs(n, "weight is not a constant")
        return
    group = int(n.attrs.get("group", 1))
    cout, cin = int(wt.shape[0]), int(wt.shape[1]) * group
    bias = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] in w.g.constants else None
    if x is not None and (x.axis != 1 or x.inner != 1):
        w.block(x, f"{n.label}: input channels are not on axis 1")
        x = None
    if group == 1:
        if x is not None:
            w.add_members(x, n.inputs[1], 1, "in", n, tensor=n.inputs[0])
        _produce(w, n, cout, 0, (bias, 0) if bias else None)
    elif group == cin == cout and wt.shape[1] == 1:  # depthwise, one filter per channel
        if x is None:
            return
        w.add_members(x, n.inputs[1], 0, "dw", n)
        if bias:
            w.add_members(x, bias, 0, "dw", n)
        w.depthwise.append(n.name)
        w.desc[n.outputs[0]] = x
    else:
        w.block(x, f"{n.label}: grouped convolution ({group} groups) that is not depthwise")


def _conv_transpose(w: _Walker, n: Node, ins: list) -> None:
    x, wt = ins[0], w.const(n.inputs[1]) if len(n.inputs) > 1 else None
    if wt is None or int(n.attrs.get("group", 1)) != 1:
        w.block_inputs(n, "weight is not a constant or the op is grouped")
        return
    if x is not None:
        if x.axis != 1 or x.inner != 1:
            w.block(x, f"{n.label}: input channels are not on axis 1")
        else:
            w.add_members(x, n.inputs[1], 0, "in", n, tensor=n.inputs[0])
    bias = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] in w.g.constants else None
    _produce(w, n, int(wt.shape[1]), 1, (bias, 0) if bias else None)


def _gemm(w: _Walker, n: Node, ins: list) -> None:
    a, b = ins[0], w.const(n.inputs[1])
    if b is None or b.ndim != 2 or n.attrs.get("transA", 0) or ins[1] is not None:
        w.block_inputs(n, "needs a constant 2-D weight and an untransposed input")
        return
    tb = bool(n.attrs.get("transB", 0))
    if a is not None:
        if a.axis != 1:
            w.block(a, f"{n.label}: channels are not on the feature axis")
        else:
            w.add_members(a, n.inputs[1], 1 if tb else 0, "in", n, tensor=n.inputs[0])
    nout = int(b.shape[0 if tb else 1])
    c = w.const(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else None
    sliced = c is not None and c.ndim >= 1 and c.shape[-1] == nout
    grp = _produce(w, n, nout, 0 if tb else 1, (n.inputs[2], c.ndim - 1) if sliced else None)
    if len(n.inputs) > 2 and n.inputs[2] and not sliced:
        if c is None:
            w.blocks.append((grp, f"{n.label}: bias is computed at run time"))
        elif c.size != 1:
            w.blocks.append((grp, f"{n.label}: bias of shape {list(c.shape)}"))


def _matmul(w: _Walker, n: Node, ins: list) -> None:
    a, b = ins[0], w.const(n.inputs[1])
    ra = _rank(w, n.inputs[0])
    if b is None or b.ndim != 2 or ra is None or ra < 2 or ins[1] is not None:
        w.block_inputs(n, "needs a constant 2-D right operand")
        return
    if a is not None:
        if a.axis != ra - 1:
            w.block(a, f"{n.label}: channels are not on the last axis")
        else:
            w.add_members(a, n.inputs[1], 0, "in", n, tensor=n.inputs[0])
    _produce(w, n, int(b.shape[1]), 1, out_axis=ra - 1)


def _batch_norm(w: _Walker, n: Node, ins: list) -> None:
    x = ins[0]
    if x is None:
        w.block_inputs(n, "channels reach a parameter input")
        return
    if x.axis != 1 or x.inner != 1 or any(d is not None for d in ins[1:]):
        w.block(x, f"{n.label}: channels are not on axis 1")
        return
    for p in n.inputs[1:]:
        c = w.const(p)
        if p and (c is None or c.shape != (x.channels,)):
            w.block(x, f"{n.label}: parameter '{p}' is not a constant of {x.channels} values")
            return
    for p in n.inputs[1:]:
        if p:
            w.add_members(x, p, 0, "param", n)
    w.desc[n.outputs[0]] = x


def _same_axis_size(w: _Walker, n: Node, d: Chan) -> bool:
    si, so = w.shape(n.inputs[0]), w.shape(n.outputs[0])
    return si is not None and so is not None and len(si) == len(so) and si[d.axis] == so[d.axis]


def _keep_axis(w: _Walker, n: Node, ins: list) -> None:
    """Resize, Pad, Slice, Upsample...: fine while the channel axis keeps its size."""
    d = ins[0]
    if d is None or any(x is not None for x in ins[1:]):
        w.block_inputs(n, "channels reach a non-data input")
        return
    if not _same_axis_size(w, n, d):
        w.block(d, f"{n.label}: changes the size of the channel axis")
        return
    w.desc[n.outputs[0]] = d


def _flatten(w: _Walker, n: Node, ins: list) -> None:
    d, shape = ins[0], w.shape(n.inputs[0])
    if shape is None:
        w.block(d, f"{n.label}: input rank unknown")
        return
    k = int(n.attrs.get("axis", 1))
    k = k + len(shape) if k < 0 else k
    outer, after = shape[k:d.axis] if k <= d.axis else None, shape[d.axis + 1:]
    if outer is None or any(s != 1 for s in outer) or not all(isinstance(s, int) for s in after):
        w.block(d, f"{n.label}: flattens the channel axis together with axes before it")
        return
    w.desc[n.outputs[0]] = Chan(1, d.inner * int(np.prod(after, dtype=np.int64)), d.segs)


def _prod(dims) -> int | None:
    return int(np.prod(dims, dtype=np.int64)) if all(isinstance(s, int) for s in dims) else None


def _reshape(w: _Walker, n: Node, ins: list) -> None:
    d, si, so = ins[0], w.shape(n.inputs[0]), w.shape(n.outputs[0])
    if d is None or ins[1] is not None:
        w.block_inputs(n, "channels reach the shape input")
        return
    if si is None or so is None or not isinstance(si[d.axis], int):
        w.block(d, f"{n.label}: shapes unknown")
        return
    a, before, after = d.axis, si[:d.axis], si[d.axis + 1:]
    for b in range(len(so)):
        same_before = tuple(so[:b]) == tuple(before) or (_prod(so[:b]) is not None and _prod(so[:b]) == _prod(before))
        if not same_before:
            continue
        if so[b] == si[a] and (tuple(so[b + 1:]) == tuple(after) or _prod(so[b + 1:]) == _prod(after)):
            new = Chan(b, d.inner, d.segs)  # the channel axis survives, other axes regroup
        elif _prod(after) is not None and so[b] == si[a] * _prod(after) and _prod(so[b + 1:]) == 1:
            new = Chan(b, d.inner * _prod(after), d.segs)  # flattened into axis b, channel-major
        else:
            continue
        target = _reshape_target(si, so, a, b)
        if target is None or n.attrs.get("allowzero", 0):
            break
        w.desc[n.outputs[0]] = new
        w.reshapes[n.name] = target
        return
    from .channel_heads import try_split

    if try_split(w, n, d, si, so):
        return
    w.block(d, f"{n.label}: reshape {list(si)} -> {list(so)} splits or mixes the channel axis")


def _reshape_target(si, so, a: int, b: int) -> list[int] | None:
    """A constant Reshape target that stays right when the channel axis shrinks: -1 for the
    output channel axis ``b``, 0 (copy) where the output repeats an input dim at the same
    position other than the channel axis ``a``, the size where it is known; None otherwise."""
    target = []
    for i, dim in enumerate(so):
        if i == b:
            target.append(-1)
        elif i < len(si) and i != a and si[i] == dim and dim is not None:
            target.append(0)
        elif isinstance(dim, int):
            target.append(dim)
        else:
            return None
    return target


def _transpose(w: _Walker, n: Node, ins: list) -> None:
    d, r = ins[0], _rank(w, n.inputs[0])
    if r is None:
        w.block(d, f"{n.label}: input rank unknown")
        return
    perm = list(n.attrs.get("perm", range(r - 1, -1, -1)))
    w.desc[n.outputs[0]] = d._replace(axis=perm.index(d.axis))


def _axes(w: _Walker, n: Node) -> list[int] | None:
    if "axes" in n.attrs:
        return [int(a) for a in n.attrs["axes"]]
    if len(n.inputs) > 1 and n.inputs[1]:
        c = w.const(n.inputs[1])
        return None if c is None else [int(a) for a in np.ravel(c)]
    return []


def _squeeze(w: _Walker, n: Node, ins: list) -> None:
    d, si, so = ins[0], w.shape(n.inputs[0]), w.shape(n.outputs[0])
    axes = _axes(w, n)
    if si is None or so is None or axes is None or ins[1:2] != [None] * len(ins[1:2]):
        w.block(d, f"{n.label}: axes or shapes unknown")
        return
    if n.op_type == "Squeeze":
        axes = [a % len(si) for a in axes] or [i for i, s in enumerate(si) if s == 1]
        if d.axis in axes:
            w.block(d, f"{n.label}: squeezes the channel axis")
            return
        w.desc[n.outputs[0]] = d._replace(axis=d.axis - sum(1 for a in axes if a < d.axis))
    else:
        axes = sorted(a % len(so) for a in axes)
        pos = d.axis
        for a in axes:
            if a <= pos:
                pos += 1
        w.desc[n.outputs[0]] = d._replace(axis=pos)


def _reduce(w: _Walker, n: Node, ins: list) -> None:
    d, si = ins[0], w.shape(n.inputs[0])
    if si is None or any(x is not None for x in ins[1:]):
        w.block(d, f"{n.label}: input rank unknown")
        return
    if n.op_type in ("ArgMax", "ArgMin"):
        axes = [int(n.attrs.get("axis", 0))]
    else:
        axes = _axes(w, n)
        if axes is None:
            w.block(d, f"{n.label}: axes computed at run time")
            return
        if not axes and not n.attrs.get("noop_with_empty_axes", 0):
            axes = list(range(len(si)))
    axes = [a % len(si) for a in axes]
    if d.axis in axes:
        w.block(d, f"{n.label}: reduces over the channel axis")
        return
    keep = int(n.attrs.get("keepdims", 1))
    w.desc[n.outputs[0]] = d if keep else d._replace(axis=d.axis - sum(1 for a in axes if a < d.axis))


def _softmax(w: _Walker, n: Node, ins: list) -> None:
    d, r = ins[0], _rank(w, n.inputs[0])
    axis = int(n.attrs.get("axis", -1))
    if r is None or axis % r == d.axis:
        w.block(d, f"{n.label}: normalises over the channel axis")
        return
    w.desc[n.outputs[0]] = d


def _concat(w: _Walker, n: Node, ins: list) -> None:
    out_rank = _rank(w, n.outputs[0])
    live = [d for d in ins if d is not None]
    if out_rank is None:
        for d in live:
            w.block(d, f"{n.label}: rank unknown")
        return
    axis = int(n.attrs.get("axis", 0)) % out_rank
    ref = live[0]
    if any(d.axis != ref.axis or d.inner != ref.inner for d in live):
        for d in live:
            w.block(d, f"{n.label}: inputs' channels sit on different axes")
        return
    if axis != ref.axis:  # concatenating along another axis: like an elementwise op
        for name, d in zip(n.inputs, ins):
            if d is None:
                for x in live:
                    w.block(x, f"{n.label}: input '{name}' carries unpruned channels")
                return
            if not w.unite(ref, d):
                for x in live:
                    w.block(x, f"{n.label}: inputs' channels do not line up")
                return
        w.desc[n.outputs[0]] = ref
        return
    segs: list[tuple[int, int]] = []
    for name, d in zip(n.inputs, ins):
        if d is not None:
            segs.extend(d.segs)
            continue
        shape = w.shape(name)
        dim = None if shape is None else shape[axis]
        if not isinstance(dim, int) or dim % ref.inner:
            for x in live:
                w.block(x, f"{n.label}: input '{name}' has an unknown size along the channel axis")
            return
        fixed = w.uf.new(dim // ref.inner)  # channels of an input no rule tracks: kept whole
        w.blocks.append((fixed, f"{n.label}: input '{name}' is not produced by a prunable layer"))
        segs.append((fixed, dim // ref.inner))
    w.desc[n.outputs[0]] = Chan(ref.axis, ref.inner, tuple(segs))


_RULES: dict[str, Callable[[_Walker, Node, list], None]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _batch_norm,
    "Resize": _keep_axis,
    "Upsample": _keep_axis,
    "Pad": _keep_axis,
    "Slice": _keep_axis,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _squeeze,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Hardmax": _softmax,
    "Concat": _concat,
}


# ----------------------------------------------------------------------------- analysis
def _unshare(g: Graph) -> None:
    """Give every node its own copy of a non-scalar constant that several nodes read, so slicing
    one node's weight never changes another's."""
    seen: set[str] = set()
    for k, n in enumerate(g.nodes):
        changed = False
        new_inputs = list(n.inputs)
        for j, name in enumerate(n.inputs):
            c = g.constants.get(name)
            if c is None or c.ndim == 0 or c.size == 1 or name in g.input_names:
                continue
            if name in seen:
                copy = g.unique_name(name + "_unshared")
                g.constants[copy] = c
                new_inputs[j] = copy
                changed = True
            else:
                seen.add(name)
        if changed:
            g.nodes[k] = n.replace(inputs=tuple(new_inputs))


def _bn_gamma(graph: Graph) -> dict[str, np.ndarray]:
    """|scale| of every BatchNormalization of the graph as given, by its output name (the name
    the Conv it is folded into takes)."""
    out = {}
    for n in graph.nodes:
        if n.op_type == "BatchNormalization" and len(n.inputs) > 1:
            s = graph.constants.get(n.inputs[1])
            if s is not None:
                out[n.outputs[0]] = np.abs(np.asarray(s, np.float64)).ravel()
    return out


def channel_groups(graph: Graph, *, exclude: Iterable[str] = (), input_shapes: Mapping[str, tuple] | None = None,
                   prepared: bool = False) -> Analysis:
    """Find the coupled channel groups of ``graph`` (see the module doc).

    Args:
        graph: the model (not changed).
        exclude: node names whose output channels must all stay (their groups are blocked).
        input_shapes: concrete input shapes for shape inference (defaults to the declared ones).
        prepared: ``graph`` already went through :func:`.quantize.prepare`.
    """
    from edgeinfer.graph import TensorType
    from edgeinfer.shape_inference import propagate

    from .quantize import prepare

    g = graph.copy() if prepared else prepare(graph)
    _unshare(g)
    overrides = {}
    for v in g.inputs:
        if input_shapes and v.name in input_shapes:
            overrides[v.name] = TensorType(v.dtype, tuple(int(d) for d in input_shapes[v.name]))
    types, _ = propagate(g, overrides or None, fold="small", on_error=lambda node, e: None)
    w = _Walker(g, types)
    w.run()
    skip = set(exclude)
    known = {n.name for n in g.nodes}
    if skip - known:
        raise InputError(f"prune: exclude names nodes the graph does not have: {sorted(skip - known)}")
    for grp, name in w.producers:
        if name in skip:
            w.blocks.append((grp, f"node '{name}' is excluded"))
    roots: dict[int, Group] = {}
    for raw in range(len(w.uf.parent)):
        r = w.uf.find(raw)
        if r not in roots:
            roots[r] = Group(id=len(roots), channels=w.uf.size[r])
    for grp, name in w.producers:
        roots[w.uf.find(grp)].producers.append(name)
    for grp, m in w.members:
        roots[w.uf.find(grp)].members.append(m)
    for grp, why in w.blocks:
        gr = roots[w.uf.find(grp)]
        if why not in gr.blocked:
            gr.blocked.append(why)
    groups = [gr for gr in roots.values() if gr.producers or gr.blocked]
    for gr in groups:
        if not gr.producers and not gr.blocked:
            gr.blocked.append("no layer produces these channels")
    # descriptors name raw groups: map them to Group ids for the caller
    to_id = {raw: roots[w.uf.find(raw)].id for raw in range(len(w.uf.parent))}
    desc = {t: d._replace(segs=tuple((to_id[gg], c) for gg, c in d.segs)) for t, d in w.desc.items()}
    return Analysis(g, groups, desc, w.reshapes, w.depthwise, _bn_gamma(graph))
