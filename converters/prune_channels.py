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

Each op kind has a rule (``_RULES``): Conv/Gemm/MatMul with constant weights read their input's
channels (a slice of the weight's input axis) and start a new group of their output channels;
depthwise Convs, BatchNormalization, activations, pooling, Resize and Pad carry the input's
descriptor through; elementwise ops (Add, Mul, ...) *unite* the groups of their inputs channel by
channel and slice per-channel constants; Flatten, Reshape, Transpose, Squeeze/Unsqueeze and
reductions over other axes move the channel axis; Concat along it concatenates segments. Anything
else (an unknown op, a Softmax or reduction over channels, a graph output, a Reshape that splits
channels) *blocks* the groups that reach it: they keep every channel. A group is a union-find set
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

``target_macs`` searches the uniform ratio that removes at least that fraction of the MACs.
The graph passes through :func:`.quantize.prepare` first (constants folded, BatchNorm folded), so
what is pruned is what runs; the result is a plain float graph every exporter and backend takes.
Pruning costs accuracy; :mod:`.distill` trains it back against the original.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np

from edgeinfer.errors import InputError
from edgeinfer.graph import Graph, Node

CRITERIA = ("l1", "l2", "bn", "activation")
ALLOCATIONS = ("auto", "uniform", "sensitivity")
LEVELS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)  # ratios tried per group by the sensitivity scan

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
            self.members.append((grp, Member(const, axis, off, inner, role, n.name, tensor)))
            off += cnt * inner

    def unite(self, a: Chan, b: Chan) -> bool:
        """Tie two descriptors of the same tensor positions channel by channel; False when their
        segments do not line up (then the caller blocks both)."""
        if a.inner != b.inner or [c for _, c in a.segs] != [c for _, c in b.segs]:
            return False
        for (ga, _), (gb, _) in zip(a.segs, b.segs):
            self.uf.union(ga, gb)
        return True

    # ----------------------------------------------------------------- walk
    def run(self) -> None:
        outputs = set(self.g.output_names)
        for n in self.g.nodes:
            ins = [self.desc.get(i) if i else None for i in n.inputs]
            if n.has_subgraphs or n.domain not in ("", "ai.onnx"):
                self.block_inputs(n, "not an ONNX operator pruning understands")
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
    shape = w.shape(name)
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
        grp = w.new_group(n, cout)
        d = Chan(1, 1, ((grp, cout),))
        w.members.append((grp, Member(n.inputs[1], 0, 0, 1, "out", n.name)))
        if bias:
            w.members.append((grp, Member(bias, 0, 0, 1, "out", n.name)))
        w.desc[n.outputs[0]] = d
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
    cout = int(wt.shape[1])
    grp = w.new_group(n, cout)
    w.members.append((grp, Member(n.inputs[1], 1, 0, 1, "out", n.name)))
    if len(n.inputs) > 2 and n.inputs[2] in w.g.constants:
        w.members.append((grp, Member(n.inputs[2], 0, 0, 1, "out", n.name)))
    w.desc[n.outputs[0]] = Chan(1, 1, ((grp, cout),))


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
    grp = w.new_group(n, nout)
    w.members.append((grp, Member(n.inputs[1], 0 if tb else 1, 0, 1, "out", n.name)))
    if len(n.inputs) > 2 and n.inputs[2]:
        c = w.const(n.inputs[2])
        if c is None:
            w.blocks.append((grp, f"{n.label}: bias is computed at run time"))
        elif c.ndim >= 1 and c.shape[-1] == nout:
            w.members.append((grp, Member(n.inputs[2], c.ndim - 1, 0, 1, "out", n.name)))
        elif c.size != 1:
            w.blocks.append((grp, f"{n.label}: bias of shape {list(c.shape)}"))
    w.desc[n.outputs[0]] = Chan(1, 1, ((grp, nout),))


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
    nout = int(b.shape[1])
    grp = w.new_group(n, nout)
    w.members.append((grp, Member(n.inputs[1], 1, 0, 1, "out", n.name)))
    w.desc[n.outputs[0]] = Chan(ra - 1, 1, ((grp, nout),))


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


# ----------------------------------------------------------------------------- ranking
def _channel_norms(a: np.ndarray, m: Member, n: int, p: int) -> np.ndarray:
    """Per group channel: the L1 (p=1) or L2 (p=2) norm of the member's slice, as a mean over
    its elements so layers of different sizes compare."""
    moved = np.moveaxis(np.asarray(a, np.float64), m.axis, 0)
    span = moved[m.offset:m.offset + n * m.inner].reshape(n, -1)
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
            span = np.asarray(act[m.offset:m.offset + n * m.inner], np.float64).reshape(n, -1).mean(axis=1)
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
            for i in drop:
                mask[m.offset + i * m.inner:m.offset + (i + 1) * m.inner] = False
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


def _output_error(sess, feeds, refs) -> float:
    """Mean |y - y_ref| / mean |y_ref| over the outputs and feeds."""
    num = den = 0.0
    for feed, ref in zip(feeds, refs):
        got = sess.run(dict(feed))
        for k, r in ref.items():
            num += float(np.abs(got[k].astype(np.float64) - r).mean())
            den += float(np.abs(r).mean())
    return num / max(den, 1e-12)


def _sensitivity(an: Analysis, groups: list[Group], kept, feeds, input_shapes, before: int,
                 progress) -> dict[int, list[tuple[float, float, int]]]:
    """Per group: (ratio, output error, MACs saved) with that group alone pruned at each of
    :data:`LEVELS` (distinct kept counts only)."""
    from edgeinfer.session import Session

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
            rows.append((r, _output_error(Session(g), feeds, refs), before - _macs(g, input_shapes)))
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
