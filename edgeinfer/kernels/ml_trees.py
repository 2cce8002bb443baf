"""Tree ensembles of the ``ai.onnx.ml`` domain: TreeEnsemble (ai.onnx.ml 5, the unified op) and
the deprecated TreeEnsembleRegressor and TreeEnsembleClassifier.

Split out of :mod:`.ml`, whose helpers (attribute parsing, post transforms, classifier outputs)
it imports; ml never imports this module. Every op registers with ``domain="ai.onnx.ml"``.

Tree ensembles (:class:`_Forest`) are evaluated for all samples and all trees at once: a
``[samples, trees]`` array of node positions advances one level per step by gathering each
node's feature, threshold and comparison, for as many steps as the deepest tree is deep (a leaf
points to itself, so paths that end early stay put). Leaf votes are then summed with
``bincount`` (or reduced with ``minimum.at``/``maximum.at``).

Known differences from ONNX Runtime (besides those of :mod:`.ml`'s post transforms):

* TreeEnsemble's ``post_transform`` codes are the spec's (1 SOFTMAX, 2 LOGISTIC); ONNX Runtime
  swaps 1 and 2.
* A TreeEnsembleClassifier with two labels whose trees vote for both classes labels each sample
  with the class of the larger score (ONNX Runtime picks the second label whenever its score is
  positive, and then writes the integers 1/0 rather than the labels).
"""
from __future__ import annotations

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .ml import (ML, _NUMERIC_IN, _as_matrix, _check_input, _classifier_types, _floats, _ints, _labels,
                 _post_transform_name, _rows, _two_columns, apply_post_transform)
from .registry import REQUIRED, OpContext, kernel, shape_rule

_LEQ, _LT, _GTE, _GT, _EQ, _NEQ, _MEMBER, _LEAF = range(8)
_LEGACY_MODES = {"BRANCH_LEQ": _LEQ, "BRANCH_LT": _LT, "BRANCH_GTE": _GTE, "BRANCH_GT": _GT,
                 "BRANCH_EQ": _EQ, "BRANCH_NEQ": _NEQ, "LEAF": _LEAF}
_COMPARE = {_LEQ: np.less_equal, _LT: np.less, _GTE: np.greater_equal, _GT: np.greater,
            _EQ: np.equal, _NEQ: np.not_equal}
_AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")


class _Forest:
    """A tree ensemble as flat per-node arrays, evaluated level by level for a whole batch.

    Every node, leaves included, is one position in the arrays. A leaf has mode ``_LEAF`` and
    both branches pointing to itself; its votes are ``vote_target``/``vote_weight`` entries
    ``leaf_start[i] : leaf_start[i] + leaf_count[i]``. Set membership nodes test
    ``member_keys``: ``rank * len(member_values) + position`` of each (node, value) pair.
    Invalid structure (an index out of range, a cycle) raises ValueError with the reason.
    """

    def __init__(self, feature, threshold, mode, true_next, false_next, tracks_true, roots,
                 vote_node, vote_target, vote_weight, n_targets: int, member_sets=None):
        m = len(mode)
        self.feature = np.asarray(feature, np.int64)
        self.threshold = np.asarray(threshold, np.float64)
        self.mode = np.asarray(mode, np.int8)
        self.roots = np.asarray(roots, np.int64)
        for name, arr in (("feature", self.feature), ("threshold", self.threshold)):
            if len(arr) != m:
                raise ValueError(f"{len(arr)} node {name}s for {m} nodes")
        leaf = self.mode == _LEAF
        nodes = np.arange(m)
        self.true_next = np.where(leaf, nodes, np.asarray(true_next, np.int64))
        self.false_next = np.where(leaf, nodes, np.asarray(false_next, np.int64))
        for name, arr in (("true", self.true_next), ("false", self.false_next), ("root", self.roots)):
            bad = (arr < 0) | (arr >= m)
            if bad.any():
                raise ValueError(f"a {name} branch refers to node {int(arr[bad][0])}, outside 0..{m - 1}")
        if self.feature[~leaf].size and self.feature[~leaf].min() < 0:
            raise ValueError(f"negative feature id {int(self.feature[~leaf].min())}")
        no_tracks = tracks_true is None or not len(tracks_true)
        self.tracks_true = np.zeros(m, bool) if no_tracks else np.asarray(tracks_true, bool)
        if len(self.tracks_true) != m:
            raise ValueError(f"{len(self.tracks_true)} nodes_missing_value_tracks_true entries for {m} nodes")
        self.any_tracks = bool(self.tracks_true.any())
        self.modes_used = sorted(set(np.unique(self.mode[~leaf]).tolist()))
        self.n_features = int(self.feature[~leaf].max()) + 1 if (~leaf).any() else 0
        self.n_targets = int(n_targets)
        # votes, grouped by node (CSR)
        vote_node = np.asarray(vote_node, np.int64)
        vote_target = np.asarray(vote_target, np.int64)
        if vote_node.size and (vote_node.min() < 0 or vote_node.max() >= m):
            raise ValueError("a leaf weight refers to a node that does not exist")
        if vote_target.size and (vote_target.min() < 0 or vote_target.max() >= self.n_targets):
            bad = int(vote_target.min() if vote_target.min() < 0 else vote_target.max())
            raise ValueError(f"a leaf weight is for target/class {bad}, outside 0..{self.n_targets - 1}")
        order = np.argsort(vote_node, kind="stable")
        self.vote_target = vote_target[order]
        self.vote_weight = np.asarray(vote_weight, np.float64)[order]
        self.leaf_count = np.bincount(vote_node, minlength=m).astype(np.int64)
        self.leaf_start = np.cumsum(self.leaf_count) - self.leaf_count
        self._set_members(member_sets or {})
        self.depth = self._depth(leaf)

    def _set_members(self, member_sets: dict[int, np.ndarray]) -> None:
        self.member_rank = np.full(len(self.mode), -1, np.int64)
        values = [np.asarray(v, np.float64) for v in member_sets.values()]
        self.member_values = np.unique(np.concatenate(values)) if values else np.zeros(0)
        keys = []
        for rank, (node, vals) in enumerate(member_sets.items()):
            self.member_rank[node] = rank
            keys.append(rank * len(self.member_values) + np.searchsorted(self.member_values, vals))
        self.member_keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)

    def _depth(self, leaf: np.ndarray) -> int:
        level, depth = np.unique(self.roots), 0
        while True:
            inner = level[~leaf[level]]
            if inner.size == 0:
                return depth
            depth += 1
            if depth > len(leaf):
                raise ValueError("the trees contain a cycle")
            level = np.unique(np.concatenate([self.true_next[inner], self.false_next[inner]]))

    def _is_member(self, v: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        u = self.member_values
        if u.size == 0:
            return np.zeros(v.shape, bool)
        pos = np.minimum(np.searchsorted(u, v), u.size - 1)
        key = self.member_rank[nodes] * u.size + pos
        at = np.minimum(np.searchsorted(self.member_keys, key), self.member_keys.size - 1)
        return (u[pos] == v) & (self.member_keys[at] == key)

    def _condition(self, v: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        if len(self.modes_used) == 1 and self.modes_used[0] != _MEMBER:
            cond = _COMPARE[self.modes_used[0]](v, self.threshold[nodes])
        else:
            mode = self.mode[nodes]
            cond = np.zeros(v.shape, bool)
            for code in self.modes_used:
                sel = mode == code
                if code == _MEMBER:
                    cond[sel] = self._is_member(v[sel], nodes[sel])
                else:
                    cond[sel] = _COMPARE[code](v[sel], self.threshold[nodes[sel]])
        if self.any_tracks:  # a missing value (NaN) takes the branch the node says
            cond |= self.tracks_true[nodes] & np.isnan(v)
        return cond

    def leaves(self, x: np.ndarray, label: str) -> np.ndarray:
        """[N, trees] index of the leaf each sample reaches in each tree."""
        if x.shape[1] < self.n_features:
            raise KernelError(f"{label}: the trees read feature {self.n_features - 1} but X has {x.shape[1]} features")
        pos = np.broadcast_to(self.roots, (x.shape[0], len(self.roots))).copy()
        rows = np.arange(x.shape[0])[:, None]
        feature = self.feature if x.shape[1] else np.zeros_like(self.feature)
        with np.errstate(invalid="ignore"):
            for _ in range(self.depth):
                cond = self._condition(x[rows, feature[pos]] if x.shape[1] else np.zeros(pos.shape), pos)
                pos = np.where(cond, self.true_next[pos], self.false_next[pos])
        return pos

    def scores(self, x: np.ndarray, aggregate: str, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Aggregated votes [N, targets] (0 where nothing voted) and whether anything voted."""
        n, k = x.shape[0], self.n_targets
        leaf = self.leaves(x, label).ravel()
        count = self.leaf_count[leaf]
        total = int(count.sum())
        # every vote of every reached leaf: its sample and its position in the vote arrays
        sample = np.repeat(np.arange(leaf.size) // max(len(self.roots), 1), count)
        vote = np.repeat(self.leaf_start[leaf] - (np.cumsum(count) - count), count) + np.arange(total)
        cell = sample * k + self.vote_target[vote]
        weight = self.vote_weight[vote]
        voted = np.bincount(cell, minlength=n * k) > 0
        if aggregate in ("SUM", "AVERAGE"):
            out = np.bincount(cell, weights=weight, minlength=n * k)
            if aggregate == "AVERAGE":
                out /= max(len(self.roots), 1)
        else:
            out = np.full(n * k, np.inf if aggregate == "MIN" else -np.inf)
            (np.minimum if aggregate == "MIN" else np.maximum).at(out, cell, weight)
            out[~voted] = 0
        return out.reshape(n, k), voted.reshape(n, k)


def _forest(ctx: OpContext, build) -> _Forest:
    try:
        return build()
    except ValueError as e:
        raise ctx.error(str(e)) from None


def _node_values(ctx: OpContext, plain, as_tensor, name: str) -> np.ndarray:
    values = plain if plain is not None else as_tensor
    if values is None:
        raise ctx.error(f"{name} (or {name}_as_tensor) must be set")
    return _floats(values, name, ctx)


def _legacy_forest(ctx: OpContext, attrs: dict, vote: str, n_targets: int) -> _Forest:
    """A forest from TreeEnsembleRegressor/Classifier attributes (``vote``: "target"/"class")."""
    tree, node = _ints(attrs["nodes_treeids"]), _ints(attrs["nodes_nodeids"])
    modes = attrs["nodes_modes"] or []
    unknown = sorted(set(modes) - set(_LEGACY_MODES))
    if unknown:
        raise ctx.error(f"unknown nodes_modes {unknown}; expected {list(_LEGACY_MODES)}")
    mode = np.array([_LEGACY_MODES[m] for m in modes], np.int8)
    m = len(mode)
    lists = {"nodes_treeids": tree, "nodes_nodeids": node, "nodes_featureids": _ints(attrs["nodes_featureids"]),
             "nodes_truenodeids": _ints(attrs["nodes_truenodeids"]),
             "nodes_falsenodeids": _ints(attrs["nodes_falsenodeids"])}
    for name, arr in lists.items():
        if len(arr) != m:
            raise ctx.error(f"{name} has {len(arr)} entries but nodes_modes has {m}")
    threshold = _node_values(ctx, attrs["nodes_values"], attrs["nodes_values_as_tensor"], "nodes_values")
    if len(threshold) != m:
        raise ctx.error(f"nodes_values has {len(threshold)} entries but nodes_modes has {m}")
    # (tree id, node id) -> position, through one sorted integer key
    base = int(max(node.max(initial=0), lists["nodes_truenodeids"].max(initial=0),
                   lists["nodes_falsenodeids"].max(initial=0))) + 1
    key = tree * base + node
    order = np.argsort(key, kind="stable")
    if np.any(np.diff(key[order]) == 0):
        raise ctx.error("two nodes share a (tree id, node id) pair")

    def find(k, what):
        at = np.minimum(np.searchsorted(key[order], k), max(m - 1, 0))
        missing = key[order][at] != k if m else np.ones(len(k), bool)
        if missing.any():
            i = int(np.argmax(missing))
            tree_id, node_id = divmod(int(k[i]), base)
            raise ctx.error(f"{what} refers to node {node_id} of tree {tree_id}, which does not exist")
        return order[at]

    inner = mode != _LEAF
    true_next = np.zeros(m, np.int64)
    false_next = np.zeros(m, np.int64)
    true_next[inner] = find(tree[inner] * base + lists["nodes_truenodeids"][inner], "nodes_truenodeids")
    false_next[inner] = find(tree[inner] * base + lists["nodes_falsenodeids"][inner], "nodes_falsenodeids")
    # roots: the nodes no branch points to, in order of tree id
    child = np.zeros(m, bool)
    child[true_next[inner]] = True
    child[false_next[inner]] = True
    roots = np.flatnonzero(~child)
    roots = roots[np.argsort(tree[roots], kind="stable")]
    v_tree, v_node = _ints(attrs[f"{vote}_treeids"]), _ints(attrs[f"{vote}_nodeids"])
    v_ids = _ints(attrs[f"{vote}_ids"])
    v_weight = _node_values(ctx, attrs[f"{vote}_weights"], attrs[f"{vote}_weights_as_tensor"], f"{vote}_weights")
    if not len(v_tree) == len(v_node) == len(v_ids) == len(v_weight):
        raise ctx.error(f"{vote}_treeids, {vote}_nodeids, {vote}_ids and {vote}_weights must have equal lengths")
    vote_node = find(v_tree * base + v_node, f"{vote}_nodeids") if len(v_node) else np.zeros(0, np.int64)
    tracks = attrs["nodes_missing_value_tracks_true"]
    return _forest(ctx, lambda: _Forest(lists["nodes_featureids"], threshold, mode, true_next, false_next, tracks,
                                        roots, vote_node, v_ids, v_weight, n_targets))


_LEGACY_TREE_ATTRS = {name: None for name in (
    "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values", "nodes_values_as_tensor",
    "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true", "nodes_hitrates",
    "nodes_hitrates_as_tensor", "base_values", "base_values_as_tensor")}
_LEGACY_TREE_ATTRS["post_transform"] = "NONE"
_LEGACY_INPUTS = _NUMERIC_IN


def _base_values(ctx: OpContext, attrs: dict, k: int) -> np.ndarray:
    base = attrs["base_values"] if attrs["base_values"] is not None else attrs["base_values_as_tensor"]
    base = _floats(base, "base_values", ctx)
    if base is None:
        return np.zeros(0)
    if base.size not in (0, k) and not (k == 2 and base.size == 1):
        raise ctx.error(f"{base.size} base_values for {k} targets/classes")
    return base


# TreeEnsembleRegressor
@shape_rule("TreeEnsembleRegressor", domain=ML)
def tree_ensemble_regressor_shape(ctx: OpContext, **attrs):
    _check_input(ctx, _LEGACY_INPUTS)
    return [TensorType("float32", (_rows(ctx.inputs[0]), _n_targets(attrs["n_targets"], attrs["target_ids"])))]


def _n_targets(n_targets, target_ids) -> int:
    """n_targets, or when absent the largest target id + 1."""
    return int(n_targets) if n_targets is not None else int(max(target_ids or [0])) + 1


@kernel("TreeEnsembleRegressor", domain=ML, attrs={
    **_LEGACY_TREE_ATTRS, "aggregate_function": "SUM", "n_targets": None, "target_treeids": None,
    "target_nodeids": None, "target_ids": None, "target_weights": None, "target_weights_as_tensor": None})
def tree_ensemble_regressor(ctx: OpContext, **attrs):
    kind = _post_transform_name(ctx, attrs["post_transform"])
    how = attrs["aggregate_function"]
    if how not in _AGGREGATES:
        raise ctx.error(f"aggregate_function must be one of {list(_AGGREGATES)}, found {how!r}")
    k = _n_targets(attrs["n_targets"], attrs["target_ids"])
    forest = _legacy_forest(ctx, attrs, "target", k)
    base = _base_values(ctx, attrs, k)
    if base.size not in (0, k):
        raise ctx.error(f"{base.size} base_values for {k} targets")
    label = ctx.node.label

    def regress(x):
        scores, _ = forest.scores(_as_matrix(x, label), how, label)
        if base.size:
            scores += base
        return apply_post_transform(scores, kind).astype(np.float32)

    return regress


# TreeEnsembleClassifier
def _classifier_labels(ctx: OpContext, attrs: dict):
    return _labels(ctx, attrs["classlabels_int64s"], attrs["classlabels_strings"])


@shape_rule("TreeEnsembleClassifier", domain=ML)
def tree_ensemble_classifier_shape(ctx: OpContext, **attrs):
    _check_input(ctx, _LEGACY_INPUTS)
    labels, label_dtype = _classifier_labels(ctx, attrs)
    return _classifier_types(ctx, label_dtype, len(labels))


@kernel("TreeEnsembleClassifier", domain=ML, attrs={
    **_LEGACY_TREE_ATTRS, "classlabels_int64s": None, "classlabels_strings": None, "class_treeids": None,
    "class_nodeids": None, "class_ids": None, "class_weights": None, "class_weights_as_tensor": None})
def tree_ensemble_classifier(ctx: OpContext, **attrs):
    kind = _post_transform_name(ctx, attrs["post_transform"])
    labels, _ = _classifier_labels(ctx, attrs)
    k = len(labels)
    forest = _legacy_forest(ctx, attrs, "class", k)
    base = _base_values(ctx, attrs, k)
    voted_classes = np.unique(forest.vote_target)
    # One class id voted for among two labels: the trees compute one score, for the positive
    # class (skl2onnx writes P(class 1) under class id 0 for binary trees).
    single_score = k == 2 and voted_classes.size == 1
    all_positive = bool((forest.vote_weight >= 0).all())
    threshold = 0.5 if all_positive else 0.0
    n_out = len(ctx.node.outputs)
    label = ctx.node.label

    def classify(x):
        scores, voted = forest.scores(_as_matrix(x, label), "SUM", label)
        if single_score:
            c = int(voted_classes[0])
            s = scores[:, c] + (base[c] if base.size == 2 else base[0] if base.size == 1 else 0.0)
            y = labels[(s > threshold).astype(np.int64)]
            z = _two_columns(s, kind, all_positive)
        else:
            if base.size:
                scores += base
                voted |= np.arange(k) < base.size
            # the best class among those that got a score, as ONNX Runtime
            y = labels[np.argmax(np.where(voted, scores, -np.inf), axis=1)]
            z = apply_post_transform(scores, kind)
        return (y, z.astype(np.float32))[:n_out]

    return classify


# TreeEnsemble (ai.onnx.ml 5)
_TREE_V5_INPUTS = frozenset({"float32", "float64", "float16"})


@shape_rule("TreeEnsemble", domain=ML)
def tree_ensemble_shape(ctx: OpContext, **attrs):
    x = _check_input(ctx, _TREE_V5_INPUTS)
    return [TensorType(x.dtype, (_rows(x), _n_targets(attrs["n_targets"], attrs["leaf_targetids"])))]


def _membership_sets(ctx: OpContext, mode: np.ndarray, membership_values) -> dict[int, np.ndarray]:
    """The NaN-delimited sets of ``membership_values``, one per BRANCH_MEMBER node, in order."""
    nodes = np.flatnonzero(mode == _MEMBER)
    if nodes.size == 0:
        return {}
    if membership_values is None:
        raise ctx.error(f"{nodes.size} BRANCH_MEMBER nodes but no membership_values")
    values = np.asarray(membership_values, np.float64).ravel()
    cuts = np.flatnonzero(np.isnan(values))
    groups = np.split(values, cuts)
    groups = [groups[0]] + [g[1:] for g in groups[1:]]  # drop the NaN that starts each later group
    if groups and groups[-1].size == 0 and len(groups) == nodes.size + 1:
        groups.pop()  # a trailing NaN closes the last set
    if len(groups) != nodes.size:
        raise ctx.error(f"membership_values holds {len(groups)} sets for {nodes.size} BRANCH_MEMBER nodes")
    return dict(zip(nodes.tolist(), groups))


@kernel("TreeEnsemble", domain=ML, attrs={
    "aggregate_function": 1, "post_transform": 0, "tree_roots": REQUIRED, "nodes_modes": REQUIRED,
    "nodes_featureids": REQUIRED, "nodes_splits": REQUIRED, "nodes_truenodeids": REQUIRED,
    "nodes_trueleafs": REQUIRED, "nodes_falsenodeids": REQUIRED, "nodes_falseleafs": REQUIRED,
    "nodes_missing_value_tracks_true": None, "nodes_hitrates": None, "membership_values": None,
    "leaf_targetids": REQUIRED, "leaf_weights": REQUIRED, "n_targets": None})
def tree_ensemble(ctx: OpContext, **attrs):
    kind = _post_transform_name(ctx, attrs["post_transform"])
    if not 0 <= attrs["aggregate_function"] < len(_AGGREGATES):
        raise ctx.error(f"aggregate_function must be 0..3, found {attrs['aggregate_function']}")
    how = _AGGREGATES[attrs["aggregate_function"]]
    mode = np.asarray(attrs["nodes_modes"]).astype(np.int64).ravel()
    if mode.size and (mode.min() < 0 or mode.max() > _MEMBER):
        raise ctx.error(f"nodes_modes must be 0..6, found {int(mode.max() if mode.max() > _MEMBER else mode.min())}")
    m = mode.size
    columns = {name: _ints(attrs[name]) for name in (
        "nodes_featureids", "nodes_truenodeids", "nodes_trueleafs", "nodes_falsenodeids", "nodes_falseleafs")}
    splits = _floats(attrs["nodes_splits"], "nodes_splits", ctx)
    for name, arr in (*columns.items(), ("nodes_splits", splits)):
        if len(arr) != m:
            raise ctx.error(f"{name} has {len(arr)} entries but nodes_modes has {m}")
    targets = _ints(attrs["leaf_targetids"])
    weights = _floats(attrs["leaf_weights"], "leaf_weights", ctx)
    if len(targets) != len(weights):
        raise ctx.error(f"leaf_targetids has {len(targets)} entries but leaf_weights has {len(weights)}")
    n_leaves = len(weights)
    k = _n_targets(attrs["n_targets"], attrs["leaf_targetids"])

    def branch(ids, to_leaf, name):
        is_leaf = to_leaf.astype(bool)
        limit = np.where(is_leaf, n_leaves, m)
        bad = (ids < 0) | (ids >= limit)
        if bad.any():
            i = int(np.argmax(bad))
            what = "leaf" if is_leaf[i] else "node"
            raise ctx.error(f"{name}[{i}] = {int(ids[i])} is not a {what} index (0..{int(limit[i]) - 1})")
        return np.where(is_leaf, m + ids, ids)  # leaves follow the nodes

    true_next = branch(columns["nodes_truenodeids"], columns["nodes_trueleafs"], "nodes_truenodeids")
    false_next = branch(columns["nodes_falsenodeids"], columns["nodes_falseleafs"], "nodes_falsenodeids")
    roots = _ints(attrs["tree_roots"])
    if roots.size and (roots.min() < 0 or roots.max() >= m):
        raise ctx.error(f"tree_roots must index nodes 0..{m - 1}, found {roots.tolist()}")
    tracks = attrs["nodes_missing_value_tracks_true"]
    if tracks is not None and len(tracks):
        tracks = np.concatenate([np.asarray(tracks, bool), np.zeros(n_leaves, bool)])
    members = _membership_sets(ctx, mode, attrs["membership_values"])
    all_mode = np.concatenate([mode, np.full(n_leaves, _LEAF)])
    forest = _forest(ctx, lambda: _Forest(
        np.concatenate([columns["nodes_featureids"], np.zeros(n_leaves, np.int64)]),
        np.concatenate([np.where(mode == _MEMBER, 0.0, splits), np.zeros(n_leaves)]),
        all_mode, np.concatenate([true_next, np.zeros(n_leaves, np.int64)]),
        np.concatenate([false_next, np.zeros(n_leaves, np.int64)]), tracks, roots,
        m + np.arange(n_leaves), targets, weights, k, members))
    label = ctx.node.label

    def evaluate(x):
        scores, _ = forest.scores(_as_matrix(x, label), how, label)
        return apply_post_transform(scores, kind).astype(x.dtype)

    return evaluate
