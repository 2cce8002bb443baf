"""The data side of :mod:`.distill`: unlabeled samples in, and the choice of what is matched.

:func:`load_samples` turns the accepted forms of unlabeled inputs (a ``.npz``, an array, a dict
of arrays, an iterable of feed dicts) into stacked ``{input: [N, ...]}`` arrays checked against
the graph; :func:`_chunk_size` reads a fixed batch dim. :func:`_plan_outputs` picks each output's
loss (:class:`OutputLoss`: KL on the logits behind a Softmax, else normalised MSE) and
:func:`_choose_features` the intermediate tensors matched; the rules are in the :mod:`.distill`
module docstring.

Kept apart from :mod:`.distill` (the losses, the training loop, checkpoints and the public
entry points) so that module stays a readable size; it needs numpy only, never torch, and
:mod:`.distill` re-exports its public names (``load_samples``, ``OutputLoss``,
``MAX_AUTO_FEATURES``, ``FEATURE_CACHE_BYTES``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgeinfer.errors import InputError
from edgeinfer.graph import Graph, ValueInfo

MAX_AUTO_FEATURES = 8
FEATURE_CACHE_BYTES = 1 << 30  # teacher features cached for auto-chosen features, all samples together
# ops that only move data: their output carries nothing their input does not, so never a feature
_SHAPE_ONLY = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Cast",
                         "Expand", "Slice", "Gather", "Concat", "Split", "Shape"})
_SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax"})


@dataclass
class OutputLoss:
    """How one graph output is matched: ``target`` is the tensor the loss reads (the output
    itself, or a Softmax's input), ``probs`` says the target holds probabilities (log taken
    before the temperature), ``axis`` is the class axis of a KL loss, ``classes`` whether argmax
    agreement is reported for it, ``softmax`` the op that turns the target into the output."""

    output: str
    target: str
    kind: str
    axis: int = -1
    probs: bool = False
    classes: bool = False
    softmax: str = ""


# -------------------------------------------------------------------------------------- data
def _fixed_batch(graph: Graph) -> int | None:
    """The batch size a graph insists on (an int first dim on its inputs), else None."""
    dims = {v.shape[0] for v in graph.required_inputs() if v.shape and isinstance(v.shape[0], int)}
    if len(dims) > 1:
        raise InputError(f"distill: graph '{graph.name}' inputs have different fixed batch dims {sorted(dims)}")
    return dims.pop() if dims else None


def _as_batched(name: str, arr: Any, info: ValueInfo, where: str) -> np.ndarray:
    """``arr`` as a [N, ...] array of the input's dtype (a single unbatched sample gets N=1)."""
    from edgeinfer.dtypes import to_numpy

    a = np.asarray(arr)
    rank = info.rank
    if rank is not None and a.ndim == rank - 1:
        a = a[None]
    if rank is not None and a.ndim != rank:
        raise InputError(f"distill: {where} input '{name}' has rank {a.ndim}, expected {rank} "
                         f"(shape {list(info.shape)}, or {rank - 1} for one sample)")
    want = to_numpy(info.dtype)
    if a.dtype != want:
        if a.dtype.kind != want.kind and not (a.dtype.kind in "iu" and want.kind in "iu"):
            raise InputError(f"distill: {where} input '{name}' has dtype {a.dtype}, expected {want}")
        a = a.astype(want)
    if info.shape is not None:
        for axis, (d, g) in enumerate(zip(info.shape[1:], a.shape[1:]), start=1):
            if isinstance(d, int) and d != g:
                raise InputError(f"distill: {where} input '{name}' has shape {list(a.shape)}, the graph expects "
                                 f"{list(info.shape)} (dim {axis}: expected {d}, got {g})")
    return np.ascontiguousarray(a)


def load_samples(data: Any, graph: Graph) -> dict[str, np.ndarray]:
    """Unlabeled inputs as stacked arrays ``{input: [N, ...]}`` for ``graph``.

    ``data`` may be a path to a ``.npz`` (arrays named as the inputs, or a single array), a single
    array (single-input graphs), a dict of stacked arrays, or an iterable of feed dicts (each a
    batch or one unbatched sample).

    Raises:
        InputError: an unknown or missing input, a shape or dtype that does not fit, no samples.
    """
    required = {v.name: v for v in graph.required_inputs()}
    names = list(required)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise InputError(f"distill: data file '{path}' does not exist")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if set(names) <= set(arrays):
            data = {k: arrays[k] for k in names}
        elif len(arrays) == 1 and len(names) == 1:
            data = {names[0]: next(iter(arrays.values()))}
        else:
            raise InputError(f"distill: data file '{path}' holds arrays {sorted(arrays)}; expected arrays named "
                             f"{names}" + (" or a single array" if len(names) == 1 else ""))
        where = f"data file '{path}'"
    else:
        where = "data"
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise InputError(f"distill: a single array was given but graph '{graph.name}' has inputs {names}; "
                             "pass a dict {input: array}")
        data = {names[0]: data}
    if isinstance(data, Mapping):
        stacked = {}
        for k, v in data.items():
            if k not in required:
                raise InputError(f"distill: {where} has an array '{k}' that is no input of the graph; inputs: {names}")
            stacked[k] = _as_batched(k, v, required[k], where)
    else:
        try:
            items = list(data)
        except TypeError as e:
            raise InputError(f"distill: data must be a .npz path, an array, a dict of arrays or an iterable of feed "
                             f"dicts, got {type(data).__name__}") from e
        parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
        for i, feed in enumerate(items):
            if not isinstance(feed, Mapping):
                raise InputError(f"distill: data item {i} is a {type(feed).__name__}, expected a dict {{input: array}}")
            for k, v in feed.items():
                if k not in required:
                    raise InputError(f"distill: data item {i} has '{k}', which is no input of the graph; inputs: {names}")
                parts[k].append(_as_batched(k, v, required[k], f"data item {i}"))
        stacked = {}
        for k, p in parts.items():
            if p:
                shapes = {a.shape[1:] for a in p}
                if len(shapes) > 1:
                    raise InputError(f"distill: input '{k}' has samples of different shapes {sorted(shapes)}; "
                                     "samples are batched together, so they must share a shape")
                stacked[k] = np.concatenate(p)
    missing = [k for k in names if k not in stacked]
    if missing and any(len(v) for v in stacked.values()):
        raise InputError(f"distill: {where} lacks input(s) {missing} of graph '{graph.name}'")
    counts = {k: len(v) for k, v in stacked.items()}
    if not stacked or not max(counts.values()):
        raise InputError(f"distill: {where} holds no samples; distillation needs unlabeled inputs for {names}")
    if len(set(counts.values())) > 1:
        raise InputError(f"distill: inputs have different sample counts {counts}")
    return {k: stacked[k] for k in names}


def _chunk_size(graph: Graph, n: int) -> int:
    """Samples per run: the fixed batch dim when there is one (N must divide), else 0 (any)."""
    fixed = _fixed_batch(graph)
    if fixed is None:
        return 0
    if n % fixed:
        raise InputError(f"distill: graph '{graph.name}' has a fixed batch of {fixed} but {n} samples were given; "
                         f"pass a multiple of {fixed}")
    return fixed


# -------------------------------------------------------------------------------- planning
_PASS_THROUGH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})


def _softmax_input(graph: Graph, name: str) -> tuple[str, str, int] | None:
    """(logits tensor, op, axis) when ``name`` is produced by a Softmax/LogSoftmax node, directly
    or through ops that only move data (Paddle exports end in Softmax -> Identity, or a Softmax
    on a 2-D view reshaped back: PP-OCR rec)."""
    producers = graph.producers()
    node = producers.get(name)
    while node is not None and not node.domain and node.op_type in _PASS_THROUGH:
        node = producers.get(node.inputs[0])
    if node is None or node.domain or node.op_type not in _SOFTMAX_OPS:
        return None
    return node.inputs[0], node.op_type, int(node.attrs.get("axis", -1))


def _looks_like_probs(values: np.ndarray) -> bool:
    if values.dtype.kind != "f" or values.ndim < 2 or values.shape[-1] < 2 or values.size == 0:
        return False
    if values.min() < 0 or values.max() > 1:
        return False
    return bool(np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))


def _plan_outputs(teacher: Graph, student: Graph, mode: str, outputs: dict[str, np.ndarray],
                  types: dict) -> list[OutputLoss]:
    """Choose each output's loss (:mod:`.distill` docstring); ``outputs`` are the teacher's on a probe."""
    plan = []
    for v in teacher.outputs:
        name = v.name
        values = outputs[name]
        rank = values.ndim
        t_soft, s_soft = _softmax_input(teacher, name), _softmax_input(student, name)
        both_soft = t_soft is not None and s_soft is not None and t_soft[0] == s_soft[0] and t_soft[1:] == s_soft[1:]
        classifier = values.dtype.kind == "f" and rank == 2 and values.shape[-1] > 1
        if mode == "mse" or (mode == "auto" and not both_soft and not _looks_like_probs(values)):
            plan.append(OutputLoss(name, name, "mse", classes=classifier))
            continue
        if values.dtype.kind != "f" or rank < 2:
            raise InputError(f"distill: output '{name}' ({values.dtype}, shape {list(values.shape)}) cannot take a KL "
                             "loss: it needs a float class axis; use output_loss='mse'")
        if both_soft:
            logits, op, axis = t_soft
            t_rank = len(types[logits].shape) if types.get(logits) and types[logits].shape is not None else rank
            # counted from the end: the class axis stays put when a folded batch is unfolded (_per_sample)
            plan.append(OutputLoss(name, logits, "kl", axis=axis % t_rank - t_rank, classes=True, softmax=op))
        else:
            plan.append(OutputLoss(name, name, "kl", axis=rank - 1, probs=_looks_like_probs(values), classes=True))
    return plan


def _choose_features(teacher: Graph, student: Graph, t_types: dict, s_types: dict, wanted: Sequence[str] | None,
                     exclude: set[str], n_samples: int) -> list[str]:
    """Tensors to match (:mod:`.distill` docstring): explicit names are checked, ``None`` chooses."""
    t_made = {o for n in teacher.nodes for o in n.outputs if o}
    if wanted is not None:
        chosen = []
        for name in wanted:
            t, s = t_types.get(name), s_types.get(name)
            if t is None or s is None or name not in t_made:
                where = " and ".join(w for w, ty in (("teacher", t), ("student", s)) if ty is None) or "teacher"
                raise InputError(f"distill: feature '{name}' is not a tensor computed by the {where}")
            if tuple(t.shape or ()) != tuple(s.shape or ()) or t.shape is None:
                raise InputError(f"distill: feature '{name}' has shape {t.shape} in the teacher but {s.shape} in the "
                                 "student; features must keep their shape")
            chosen.append(name)
        return chosen
    outputs = set(student.output_names)
    # a reshaped view of a loss target or an output repeats what the output loss already matches
    producers = student.producers()
    for name in list(exclude | outputs):
        node = producers.get(name)
        while node is not None and not node.domain and node.op_type in _PASS_THROUGH | _SOFTMAX_OPS:
            exclude = exclude | set(node.outputs) | {node.inputs[0]}
            node = producers.get(node.inputs[0])
    candidates = []
    for node in student.nodes:
        if node.domain or node.op_type in _SHAPE_ONLY or node.op_type in _SOFTMAX_OPS:
            continue
        for name in node.outputs:
            t, s = t_types.get(name), s_types.get(name)
            if (not name or name in outputs or name in exclude or name not in t_made or t is None or s is None
                    or t.shape is None or tuple(t.shape) != tuple(s.shape or ()) or t.dtype != s.dtype
                    or not t.dtype.startswith("float") or not all(isinstance(d, int) for d in t.shape)):
                continue
            candidates.append((name, int(np.prod(t.shape)) * 4))
    if len(candidates) > MAX_AUTO_FEATURES:
        picks = np.unique(np.round(np.linspace(0, len(candidates) - 1, MAX_AUTO_FEATURES)).astype(int))
        candidates = [candidates[i] for i in picks]
    # the budget drops the shallowest first: early maps are the largest and the least distilled
    while candidates and sum(b for _, b in candidates) * n_samples > FEATURE_CACHE_BYTES:
        candidates.pop(0)
    return [name for name, _ in candidates]
