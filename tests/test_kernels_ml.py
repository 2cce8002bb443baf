"""ai.onnx.ml kernels (ml.py) against ONNX Runtime and scikit-learn, the
ai.onnx.preview.training optimizers (training.py) against the spec's formulas, and their errors."""
import numpy as np
import pytest
from onnx import numpy_helper

from edgeinfer.errors import EdgeInferError, KernelError
from edgeinfer.kernels.ml import apply_post_transform, erfinv
from opcheck import run_edgeinfer
from test_kernels_strings import compare_with_ort, strings

ML = "ai.onnx.ml"
TRAINING = "ai.onnx.preview.training"
RNG = np.random.default_rng(7)


def ml(op, inputs, attrs=None, n_outputs=1, ml_opset=5, **kw):
    """compare_with_ort for an ai.onnx.ml node; numpy attribute values become tensor attributes."""
    attrs = {k: numpy_helper.from_array(v, k) if isinstance(v, np.ndarray) else v for k, v in (attrs or {}).items()}
    return compare_with_ort(op, inputs, attrs, n_outputs, domain=ML, opsets=(("", 21), (ML, ml_opset)), **kw)


def edge(op, inputs, attrs=None, n_outputs=1, **kw):
    return run_edgeinfer(op, inputs, attrs, n_outputs, domain=ML, **kw)


# --------------------------------------------------------------------- preprocessing
def test_array_feature_extractor():
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    ml("ArrayFeatureExtractor", [x, np.array([3, 0, 3], np.int64)])
    ml("ArrayFeatureExtractor", [x.reshape(3, 2, 2), np.array([[1]], np.int64)])
    ml("ArrayFeatureExtractor", [np.arange(5, dtype=np.int64), np.array([4, 1], np.int64)])
    ml("ArrayFeatureExtractor", [strings("a", "b", "c", shape=(1, 3)), np.array([2], np.int64)])
    with pytest.raises(KernelError, match="ArrayFeatureExtractor node 'n0': index 4 is out of range"):
        edge("ArrayFeatureExtractor", [x, np.array([4], np.int64)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_binarizer(dtype):
    x = (RNG.normal(size=(2, 5)) * 3).astype(dtype)
    if dtype == np.float32:  # the only type ORT implements
        ml("Binarizer", [x], {"threshold": 0.5})
    (y,) = edge("Binarizer", [x], {"threshold": 0.5})
    assert y.dtype == dtype and y.tolist() == (x > 0.5).astype(dtype).tolist()
    (y,) = edge("Binarizer", [np.array([np.nan, 2.0], np.float32)], {"threshold": 1.0})
    assert y.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_scaler(dtype):
    x = (RNG.normal(size=(4, 3)) * 5).astype(dtype)
    ml("Scaler", [x], {"scale": [2.0, 0.5, -1.0], "offset": [1.0, -2.0, 0.25]})
    ml("Scaler", [x], {"scale": [3.0], "offset": [1.5]})
    with pytest.raises(EdgeInferError, match="Scaler node 'n0': scale has 2 values"):
        edge("Scaler", [x], {"scale": [1.0, 2.0]})


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer(norm):
    x = np.array([[-3, 4, 0], [0, 0, 0], [-1, -2, -3], [1, 2, 3]], np.float32)
    ml("Normalizer", [x], {"norm": norm})
    ml("Normalizer", [x[2]], {"norm": norm})
    ml("Normalizer", [x.astype(np.int64)], {"norm": norm})
    with pytest.raises(EdgeInferError, match="norm must be one of"):
        edge("Normalizer", [x], {"norm": "L3"})


def test_imputer():
    x = np.array([[np.nan, 4, 0], [0, np.nan, -1]], np.float32)
    ml("Imputer", [x], {"imputed_value_floats": [7.0, 8.0, 9.0], "replaced_value_float": np.nan})
    ml("Imputer", [x], {"imputed_value_floats": [5.0], "replaced_value_float": 0.0})
    xi = np.array([[-1, 4, 0], [0, -1, -1]], np.int64)
    ml("Imputer", [xi], {"imputed_value_int64s": [7], "replaced_value_int64": -1})
    with pytest.raises(EdgeInferError, match="imputed_value_int64s must be set"):
        edge("Imputer", [xi], {"imputed_value_floats": [1.0]})


def test_one_hot_encoder():
    ml("OneHotEncoder", [np.array([[1, 4], [0, 2]], np.int64)], {"cats_int64s": [0, 1, 2, 3]})
    ml("OneHotEncoder", [np.array([-1.7, 4, 2.9], np.float32)], {"cats_int64s": [3, -1, 1, 2]})
    ml("OneHotEncoder", [strings("a", "c", "b")], {"cats_strings": ["b", "a"]})
    with pytest.raises(KernelError, match=r"OneHotEncoder node 'n0': 'c' is not one of the 2 categories \(zeros=0\)"):
        edge("OneHotEncoder", [strings("a", "c")], {"cats_strings": ["b", "a"], "zeros": 0})
    with pytest.raises(EdgeInferError, match="exactly one of cats_int64s and cats_strings"):
        edge("OneHotEncoder", [strings("a")], {"cats_strings": ["a"], "cats_int64s": [1]})


# ---------------------------------------------------------------------- LabelEncoder
@pytest.mark.parametrize("x, attrs", [
    (strings("a", "b", "d", "c"), {"keys_strings": ["a", "b", "c"], "values_int64s": [0, 1, 2], "default_int64": 42}),
    (strings("a", "b", "d"), {"keys_strings": ["a", "b"], "values_floats": [0.5, 1.5]}),
    (np.array([3, 1, 7, 3], np.int64),
     {"keys_int64s": [1, 3], "values_strings": ["one", "three"], "default_string": "?"}),
    (np.array([0.5, np.nan, 2.0], np.float32), {"keys_floats": [0.5, np.nan], "values_int64s": [5, 6]}),
    (strings("a", "x"), {"keys_tensor": np.array(["a", "b"], dtype=object), "values_tensor": np.array([1, 2], np.int16),
                         "default_tensor": np.array([42], np.int16)}),
    (np.array([1.5, 2.5], np.float64), {"keys_tensor": np.array([1.5], np.float64),
                                        "values_tensor": np.array(["x"], dtype=object)}),
    (np.array([4, 5], np.int64),
     {"keys_tensor": np.array([5], np.int64), "values_tensor": np.array([0.25], np.float64)}),
])
def test_label_encoder(x, attrs):
    ml("LabelEncoder", [x], attrs, ml_opset=4)


def test_label_encoder_by_hand():
    # the spec: a repeated key maps to its last value (ONNX Runtime keeps the first)
    (y,) = edge("LabelEncoder", [np.array([[1, 2], [2, 9]], np.int64)],
                {"keys_int64s": [2, 1, 2], "values_int64s": [10, 20, 30]})
    assert y.tolist() == [[20, 30], [30, -1]]
    (y,) = edge("LabelEncoder", [np.array([4, 5], np.int32)], {"keys_tensor": np.array([5], np.int32),
                                                               "values_tensor": np.array([0.25], np.float64)})
    assert y.dtype == np.float64 and y.tolist() == [-0.0, 0.25] and np.signbit(y[0])


def test_label_encoder_errors():
    with pytest.raises(EdgeInferError, match="LabelEncoder node 'n0': exactly one keys_"):
        edge("LabelEncoder", [strings("a")], {"keys_strings": ["a"], "keys_int64s": [1], "values_int64s": [1]})
    with pytest.raises(EdgeInferError, match="keys_strings has 2 entries but values_int64s has 1"):
        edge("LabelEncoder", [strings("a")], {"keys_strings": ["a", "b"], "values_int64s": [1]})
    with pytest.raises(EdgeInferError, match="X is int64 but the keys are string"):
        edge("LabelEncoder", [np.array([1], np.int64)], {"keys_strings": ["a"], "values_int64s": [1]})


# ---------------------------------------------------------------------- linear models
X4 = np.array([[1, 2], [-1, 0.5], [0, 0], [3, -4], [0.3, 0.2]], np.float32)
POST = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"]


@pytest.mark.parametrize("post", POST + ["PROBIT"])
def test_linear_regressor(post):
    rtol = 2e-3 if post == "PROBIT" else 1e-5  # ORT's probit is a 3-digit approximation
    ml("LinearRegressor", [X4], {"coefficients": [0.5, -1, 1, 1], "intercepts": [0.1, 0.0], "targets": 2,
                                 "post_transform": post}, rtol=rtol)
    if post == "NONE":
        ml("LinearRegressor", [X4[0]], {"coefficients": [0.5, -1], "intercepts": [0.1]})
    x = np.array([[0.1, 0.1], [0.2, 0.3]], np.float32)  # scores in (0, 1) for PROBIT
    ml("LinearRegressor", [x], {"coefficients": [1.0, 1.0, 0.5, 0.5], "targets": 2, "post_transform": post}, rtol=rtol)


@pytest.mark.parametrize("post", POST)
@pytest.mark.parametrize("labels", [{"classlabels_ints": [5, 6, 7]}, {"classlabels_strings": ["a", "b", "c"]}])
def test_linear_classifier_multiclass(post, labels):
    attrs = {"coefficients": [0.5, -1, 1, 0.2, -0.3, 0.1], "intercepts": [0.1, 0.2, 0.0], "post_transform": post}
    ml("LinearClassifier", [X4], {**attrs, **labels}, n_outputs=2, rtol=1e-5)
    ml("LinearClassifier", [X4.astype(np.float64)], {**attrs, **labels, "multi_class": 1}, n_outputs=2, rtol=1e-5)


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_linear_classifier_binary_with_one_score(post):
    attrs = {"coefficients": [0.5, -1], "intercepts": [0.1], "post_transform": post, "classlabels_ints": [3, 9]}
    label, scores = ml("LinearClassifier", [X4], attrs, n_outputs=2, rtol=1e-5)
    assert scores.shape == (5, 2)


def test_linear_classifier_errors():
    with pytest.raises(EdgeInferError, match="LinearClassifier node 'n0': 3 rows of coefficients but 2 class labels"):
        edge("LinearClassifier", [X4], {"coefficients": [1.0] * 6, "intercepts": [0.0] * 3, "classlabels_ints": [1, 2]},
             n_outputs=2)
    with pytest.raises(EdgeInferError, match="post_transform must be one of"):
        edge("LinearClassifier", [X4], {"coefficients": [1.0, 1.0], "classlabels_ints": [1, 2],
                                        "post_transform": "TANH"}, n_outputs=2)
    with pytest.raises(EdgeInferError, match="X has 2 features but the coefficients have 3"):
        edge("LinearRegressor", [X4], {"coefficients": [1.0, 1.0, 1.0]})


# ----------------------------------------------------------------------------- SVMs
@pytest.mark.parametrize("kernel", ["LINEAR", "POLY", "RBF", "SIGMOID"])
def test_svm_regressor(kernel):
    sv = RNG.normal(size=(4, 2))
    attrs = {"support_vectors": sv.ravel().tolist(), "coefficients": [0.5, -1.0, 0.25, 2.0], "n_supports": 4,
             "rho": [0.3], "kernel_type": kernel, "kernel_params": [0.4, 0.1, 3.0]}
    ml("SVMRegressor", [X4], attrs, ml_opset=3, rtol=1e-5, atol=1e-5)
    ml("SVMRegressor", [X4], {**attrs, "one_class": 1, "rho": [-1.2]}, ml_opset=3)
    # linear mode: the coefficients are the weights (ORT wants kernel_params and support_vectors present)
    ml("SVMRegressor", [X4], {"coefficients": [0.5, -2.0], "rho": [1.0], "kernel_params": [0.0, 0.0, 0.0],
                              "support_vectors": [0.0]}, ml_opset=3, rtol=1e-5)


# -------------------------------------------------------------------- tree ensembles
def legacy_tree_attrs(trees, leaf_votes, vote="target"):
    """TreeEnsembleRegressor/Classifier attributes of sklearn trees; ``leaf_votes(tree_index,
    tree, node)`` lists the (target/class id, weight) votes of a leaf."""
    a = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
                         "nodes_truenodeids", "nodes_falsenodeids", f"{vote}_treeids", f"{vote}_nodeids",
                         f"{vote}_ids", f"{vote}_weights")}
    for t, tree in enumerate(trees):
        for n in range(tree.node_count):
            leaf = tree.children_left[n] < 0
            a["nodes_treeids"].append(t)
            a["nodes_nodeids"].append(n)
            a["nodes_featureids"].append(0 if leaf else int(tree.feature[n]))
            a["nodes_values"].append(0.0 if leaf else float(tree.threshold[n]))
            a["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            a["nodes_truenodeids"].append(0 if leaf else int(tree.children_left[n]))
            a["nodes_falsenodeids"].append(0 if leaf else int(tree.children_right[n]))
            if leaf:
                for target, weight in leaf_votes(t, tree, n):
                    a[f"{vote}_treeids"].append(t)
                    a[f"{vote}_nodeids"].append(n)
                    a[f"{vote}_ids"].append(target)
                    a[f"{vote}_weights"].append(float(weight))
    return a


def v5_tree_attrs(trees, leaf_votes, dtype=np.float64):
    """TreeEnsemble (ai.onnx.ml 5) attributes of sklearn trees."""
    nodes = {k: [] for k in ("featureids", "splits", "truenodeids", "trueleafs", "falsenodeids", "falseleafs")}
    leaves_t, leaves_w, roots = [], [], []
    for t, tree in enumerate(trees):
        inner = [n for n in range(tree.node_count) if tree.children_left[n] >= 0]
        pos = {}
        for n in range(tree.node_count):
            if tree.children_left[n] >= 0:
                pos[n] = (len(nodes["featureids"]) + inner.index(n), 0)
            else:
                pos[n] = (len(leaves_t), 1)
                votes = leaf_votes(t, tree, n)
                assert len(votes) == 1, "one vote per leaf in this helper"
                leaves_t.append(votes[0][0])
                leaves_w.append(votes[0][1])
        if not inner:  # a single-leaf tree: one node whose branches both reach the leaf
            inner_pos = len(nodes["featureids"])
            for k, v in zip(nodes, (0, 0.0, pos[0][0], 1, pos[0][0], 1)):
                nodes[k].append(v)
            roots.append(inner_pos)
            continue
        roots.append(pos[0][0])
        for n in inner:
            left, right = pos[tree.children_left[n]], pos[tree.children_right[n]]
            row = (int(tree.feature[n]), float(tree.threshold[n]), left[0], left[1], right[0], right[1])
            for k, v in zip(nodes, row):
                nodes[k].append(v)
    return {"tree_roots": roots, "nodes_modes": np.zeros(len(nodes["featureids"]), np.uint8),
            "nodes_featureids": nodes["featureids"], "nodes_splits": np.array(nodes["splits"], dtype),
            "nodes_truenodeids": nodes["truenodeids"], "nodes_trueleafs": nodes["trueleafs"],
            "nodes_falsenodeids": nodes["falsenodeids"], "nodes_falseleafs": nodes["falseleafs"],
            "leaf_targetids": leaves_t, "leaf_weights": np.array(leaves_w, dtype)}


@pytest.fixture(scope="module")
def regression_data():
    x = RNG.normal(size=(200, 4)).astype(np.float32)
    y = x[:, 0] * 2 - x[:, 1] ** 2 + np.sin(3 * x[:, 2]) + RNG.normal(scale=0.1, size=200)
    return x, y


def test_tree_ensemble_regressor_matches_sklearn_and_ort(regression_data):
    from sklearn.ensemble import RandomForestRegressor

    x, y = regression_data
    forest = RandomForestRegressor(n_estimators=6, max_depth=6, random_state=0).fit(x, y)
    trees = [e.tree_ for e in forest.estimators_]
    votes = lambda t, tree, n: [(0, tree.value[n][0][0])]  # noqa: E731
    legacy = legacy_tree_attrs(trees, votes)
    for how in ("SUM", "AVERAGE", "MIN", "MAX"):
        ml("TreeEnsembleRegressor", [x], {**legacy, "n_targets": 1, "aggregate_function": how, "base_values": [0.5]},
           ml_opset=3, rtol=1e-5, atol=1e-5)
    (avg,) = edge("TreeEnsembleRegressor", [x], {**legacy, "n_targets": 1, "aggregate_function": "AVERAGE"})
    np.testing.assert_allclose(avg[:, 0], forest.predict(x), rtol=1e-5, atol=1e-5)
    v5 = v5_tree_attrs(trees, votes)
    for code in range(4):
        ml("TreeEnsemble", [x.astype(np.float64)], {**v5, "n_targets": 1, "aggregate_function": code}, rtol=1e-9)
    (y5,) = edge("TreeEnsemble", [x.astype(np.float64)], {**v5, "n_targets": 1, "aggregate_function": 0,
                                                          "nodes_splits": v5["nodes_splits"]})
    np.testing.assert_allclose(y5[:, 0], forest.predict(x), rtol=1e-9)


def test_tree_ensemble_v5_float32_and_float16_inputs(regression_data):
    from sklearn.tree import DecisionTreeRegressor

    x, y = regression_data
    tree = DecisionTreeRegressor(max_depth=4, random_state=0).fit(x, y).tree_
    v5 = v5_tree_attrs([tree], lambda t, tr, n: [(0, tr.value[n][0][0])], dtype=np.float32)
    ml("TreeEnsemble", [x], {**v5, "n_targets": 1}, rtol=1e-6)
    v16 = {**v5, "nodes_splits": v5["nodes_splits"].astype(np.float16),
           "leaf_weights": v5["leaf_weights"].astype(np.float16)}
    (y16,) = edge("TreeEnsemble", [x.astype(np.float16)], {**v16, "n_targets": 1})
    assert y16.dtype == np.float16


def test_tree_ensemble_multi_target_post_transforms(regression_data):
    from sklearn.tree import DecisionTreeRegressor

    x, y = regression_data
    trees = [DecisionTreeRegressor(max_depth=3, random_state=s).fit(x, y * (s + 1)).tree_ for s in range(3)]
    votes = lambda t, tree, n: [(t, tree.value[n][0][0] / 4)]  # noqa: E731  tree t votes for target t
    legacy = legacy_tree_attrs(trees, votes)
    v5 = v5_tree_attrs(trees, votes)
    for post in POST:
        ml("TreeEnsembleRegressor", [x], {**legacy, "n_targets": 3, "post_transform": post,
                                          "base_values": [0.1, -0.2, 0.3]}, ml_opset=3, rtol=1e-5, atol=1e-6)
        # the spec numbers them NONE 0, SOFTMAX 1, LOGISTIC 2; ONNX Runtime swaps 1 and 2
        code = ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO"].index(post)
        ort_code = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"].index(post)
        (want,) = ml("TreeEnsemble", [x.astype(np.float64)], {**v5, "n_targets": 3, "post_transform": ort_code},
                     rtol=1e-5, atol=1e-6) if code == ort_code else [None]
        (got,) = edge("TreeEnsemble", [x.astype(np.float64)], {**v5, "n_targets": 3, "post_transform": code})
        (raw,) = edge("TreeEnsemble", [x.astype(np.float64)], {**v5, "n_targets": 3})
        np.testing.assert_allclose(got, apply_post_transform(raw, post), rtol=1e-12)


def _all_modes_forest():
    """Two hand-made trees using every comparison, missing-value tracking and a set."""
    return {
        "tree_roots": [0, 3],
        "nodes_modes": np.array([0, 6, 4, 2, 5, 1], np.uint8),
        "nodes_featureids": [0, 1, 2, 1, 2, 0],
        "nodes_splits": np.array([0.5, 0.0, 1.0, -0.25, 2.0, 0.0], np.float64),
        "nodes_truenodeids": [1, 0, 2, 4, 3, 1],
        "nodes_trueleafs": [0, 1, 1, 0, 1, 1],
        "nodes_falsenodeids": [2, 1, 3, 5, 4, 5],
        "nodes_falseleafs": [0, 1, 1, 0, 1, 1],
        "nodes_missing_value_tracks_true": [1, 0, 0, 0, 1, 1],
        "membership_values": np.array([1.0, 2.0, 3.0], np.float64),
        "leaf_targetids": [0, 1, 0, 1, 0, 1],
        "leaf_weights": np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], np.float64),
        "n_targets": 2,
    }


@pytest.mark.parametrize("how", range(4))
def test_tree_ensemble_v5_every_mode_and_missing_values(how):
    x = RNG.choice([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, np.nan], size=(64, 3))
    ml("TreeEnsemble", [x], {**_all_modes_forest(), "aggregate_function": how})


def test_tree_ensemble_v5_single_leaf_tree():
    attrs = {"tree_roots": [0], "nodes_modes": np.zeros(1, np.uint8), "nodes_featureids": [0],
             "nodes_splits": np.zeros(1), "nodes_truenodeids": [0], "nodes_trueleafs": [1],
             "nodes_falsenodeids": [0], "nodes_falseleafs": [1], "leaf_targetids": [0],
             "leaf_weights": np.array([2.5]), "n_targets": 1}
    (y,) = ml("TreeEnsemble", [np.zeros((3, 2))], attrs)
    assert y.tolist() == [[2.5]] * 3


@pytest.fixture(scope="module")
def classification_data():
    x = RNG.normal(size=(240, 4)).astype(np.float32)
    score = x[:, 0] - x[:, 1] * x[:, 2]
    return x, (score > 0.3).astype(np.int64) + (score > 1.2)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_random_forest_classifier_as_skl2onnx_writes_it(classification_data, n_classes):
    from sklearn.ensemble import RandomForestClassifier

    x, y = classification_data
    y = np.minimum(y, n_classes - 1)
    forest = RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0).fit(x, y)
    n = len(forest.estimators_)

    def votes(t, tree, node):
        p = tree.value[node][0] / tree.value[node][0].sum() / n
        # binary: skl2onnx keeps only P(class 1), under class id 0
        return [(0, p[1])] if n_classes == 2 else list(enumerate(p))

    attrs = {**legacy_tree_attrs([e.tree_ for e in forest.estimators_], votes, vote="class"),
             "classlabels_int64s": list(range(n_classes))}
    label, proba = ml("TreeEnsembleClassifier", [x], attrs, n_outputs=2, ml_opset=3, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proba, forest.predict_proba(x), rtol=1e-5, atol=1e-6)
    agree = label == forest.predict(x)
    assert agree.mean() > 0.97  # ties at p = 0.5 may go either way
    strs = {**attrs, "classlabels_int64s": None, "classlabels_strings": [f"c{i}" for i in range(n_classes)]}
    del strs["classlabels_int64s"]
    ml("TreeEnsembleClassifier", [x], strs, n_outputs=2, ml_opset=3, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("post", ["LOGISTIC", "NONE", "SOFTMAX", "PROBIT"])
def test_gradient_boosting_binary_classifier_as_skl2onnx_writes_it(classification_data, post):
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = classification_data
    y = np.minimum(y, 1)
    gb = GradientBoostingClassifier(n_estimators=8, max_depth=3, random_state=0).fit(x, y)
    trees = [e.tree_ for e in gb.estimators_[:, 0]]
    votes = lambda t, tree, n: [(0, gb.learning_rate * tree.value[n][0][0])]  # noqa: E731
    raw = gb.decision_function(x[:1])[0] - sum(gb.learning_rate * t.predict(x[:1].astype(np.float32))[0]
                                                 for t in gb.estimators_[:, 0])
    attrs = {**legacy_tree_attrs(trees, votes, vote="class"), "classlabels_int64s": [0, 1], "base_values": [float(raw)],
             "post_transform": post}
    if post == "PROBIT":  # ORT writes one column of a PROBIT binary score and leaves the other unset
        label, proba = edge("TreeEnsembleClassifier", [x], attrs, n_outputs=2)
        score = gb.decision_function(x)
        np.testing.assert_allclose(proba[:, 1], np.sqrt(2) * erfinv(2 * score - 1), rtol=1e-5, equal_nan=True)
        np.testing.assert_allclose(proba[:, 0], 1 - proba[:, 1], rtol=1e-5, equal_nan=True)
        return
    label, proba = ml("TreeEnsembleClassifier", [x], attrs, n_outputs=2, ml_opset=3, rtol=1e-4, atol=1e-5)
    if post == "LOGISTIC":
        np.testing.assert_allclose(proba, gb.predict_proba(x), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(label, gb.predict(x))


def test_gradient_boosting_multiclass_classifier(classification_data):
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = classification_data
    gb = GradientBoostingClassifier(n_estimators=4, max_depth=2, random_state=0).fit(x, y)
    trees, classes = [], []
    for stage in gb.estimators_:
        for c, est in enumerate(stage):
            trees.append(est.tree_)
            classes.append(c)
    votes = lambda t, tree, n: [(classes[t], gb.learning_rate * tree.value[n][0][0])]  # noqa: E731
    raw = gb.decision_function(x[:1])[0] - sum(gb.learning_rate * est.predict(x[:1])[0] * (np.arange(3) == c)
                                                 for stage in gb.estimators_ for c, est in enumerate(stage))
    attrs = {**legacy_tree_attrs(trees, votes, vote="class"), "classlabels_int64s": [10, 20, 30],
             "base_values": raw.tolist(), "post_transform": "SOFTMAX"}
    label, proba = ml("TreeEnsembleClassifier", [x], attrs, n_outputs=2, ml_opset=3, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(proba, gb.predict_proba(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(label, np.array([10, 20, 30])[gb.predict(x)])


def test_tree_classifier_with_branch_modes_and_missing_values():
    attrs = {"nodes_treeids": [0, 0, 0, 0, 0], "nodes_nodeids": [0, 1, 2, 3, 4], "nodes_featureids": [0, 1, 0, 0, 0],
             "nodes_values": [0.5, -1.0, 0, 0, 0], "nodes_modes": ["BRANCH_GT", "BRANCH_NEQ", "LEAF", "LEAF", "LEAF"],
             "nodes_truenodeids": [1, 2, 0, 0, 0], "nodes_falsenodeids": [4, 3, 0, 0, 0],
             "nodes_missing_value_tracks_true": [1, 0, 0, 0, 0],
             "class_treeids": [0, 0, 0, 0, 0], "class_nodeids": [2, 3, 4, 4, 2], "class_ids": [0, 1, 2, 1, 2],
             "class_weights": [0.5, 1.0, 0.7, 0.1, 0.25], "classlabels_strings": ["a", "b", "c"]}
    x = np.array([[1, 2], [1, -1], [0, 0], [np.nan, 3], [np.nan, np.nan]], np.float32)
    ml("TreeEnsembleClassifier", [x], attrs, n_outputs=2, ml_opset=3, rtol=1e-6)


def test_tree_classifier_binary_with_votes_for_both_classes_labels_by_the_larger_score():
    # ONNX Runtime agrees on the scores but labels both samples 1 ("class 1 score > 0")
    attrs = {"nodes_treeids": [0, 0, 0], "nodes_nodeids": [0, 1, 2], "nodes_featureids": [0, 0, 0],
             "nodes_values": [0.5, 0, 0], "nodes_modes": ["BRANCH_LEQ", "LEAF", "LEAF"], "nodes_truenodeids": [1, 0, 0],
             "nodes_falsenodeids": [2, 0, 0], "class_treeids": [0] * 4, "class_nodeids": [1, 1, 2, 2],
             "class_ids": [0, 1, 0, 1], "class_weights": [0.3, 0.7, 0.6, 0.4], "classlabels_int64s": [5, 6]}
    label, proba = edge("TreeEnsembleClassifier", [np.array([[0.0], [1.0]], np.float32)], attrs, n_outputs=2)
    assert label.tolist() == [6, 5]
    np.testing.assert_allclose(proba, [[0.3, 0.7], [0.6, 0.4]], rtol=1e-6)


def test_tree_ensemble_errors():
    good = _all_modes_forest()
    x = np.zeros((2, 3))
    with pytest.raises(EdgeInferError, match=r"TreeEnsemble node 'n0': nodes_truenodeids\[0\] = 9 is not a node index"):
        edge("TreeEnsemble", [x], {**good, "nodes_truenodeids": [9, 0, 2, 4, 3, 1]})
    with pytest.raises(EdgeInferError, match="cycle"):
        edge("TreeEnsemble", [x], {**good, "nodes_truenodeids": [0, 0, 2, 4, 3, 1],
                                   "nodes_trueleafs": [0, 1, 1, 0, 1, 1]})
    with pytest.raises(EdgeInferError, match="nodes_splits has 2 entries but nodes_modes has 6"):
        edge("TreeEnsemble", [x], {**good, "nodes_splits": np.zeros(2)})
    with pytest.raises(EdgeInferError, match="membership_values holds 2 sets for 1 BRANCH_MEMBER nodes"):
        edge("TreeEnsemble", [x], {**good, "membership_values": np.array([1.0, np.nan, 2.0])})
    with pytest.raises(EdgeInferError, match="target/class 2, outside 0..1"):
        edge("TreeEnsemble", [x], {**good, "leaf_targetids": [0, 1, 0, 1, 0, 2]})
    with pytest.raises(KernelError, match="TreeEnsemble node 'n0': the trees read feature 2 but X has 2 features"):
        edge("TreeEnsemble", [np.zeros((2, 2))], good, shapes_known=False)
    legacy = {"nodes_treeids": [0, 0], "nodes_nodeids": [0, 1], "nodes_featureids": [0, 0], "nodes_values": [0.0, 0.0],
              "nodes_modes": ["BRANCH_LEQ", "LEAF"], "nodes_truenodeids": [1, 0], "nodes_falsenodeids": [5, 0],
              "target_treeids": [0], "target_nodeids": [1], "target_ids": [0], "target_weights": [1.0]}
    with pytest.raises(EdgeInferError, match="nodes_falsenodeids refers to node 5 of tree 0, which does not exist"):
        edge("TreeEnsembleRegressor", [np.zeros((1, 1), np.float32)], legacy)
    with pytest.raises(EdgeInferError, match="unknown nodes_modes"):
        edge("TreeEnsembleRegressor", [np.zeros((1, 1), np.float32)], {**legacy, "nodes_modes": ["LESS", "LEAF"]})


def test_post_transforms_by_hand():
    s = np.array([[0.5, 0.0, -1.0], [2.0, 1.0, 0.0]])
    e = np.exp(s)
    np.testing.assert_allclose(apply_post_transform(s, "SOFTMAX"), e / e.sum(1, keepdims=True))
    np.testing.assert_allclose(apply_post_transform(s, "LOGISTIC"), 1 / (1 + np.exp(-s)))
    kept = np.where(s != 0, e, 0)
    np.testing.assert_allclose(apply_post_transform(s, "SOFTMAX_ZERO"), kept / kept.sum(1, keepdims=True))
    assert apply_post_transform(np.array([[-800.0, 800.0]]), "LOGISTIC").tolist() == [[0.0, 1.0]]


def test_erfinv_is_exact():
    from edgeinfer.kernels.elementwise import erf

    y = np.linspace(-0.999999, 0.999999, 2001)
    np.testing.assert_allclose(erf(erfinv(y)), y, rtol=1e-12, atol=1e-15)
    assert erfinv(np.array([1.0]))[0] == np.inf and np.isnan(erfinv(np.array([1.5]))[0])


# ---------------------------------------------------------- ai.onnx.preview.training
def train(op, inputs, attrs, n_outputs):
    return run_edgeinfer(op, inputs, attrs, n_outputs, domain=TRAINING)


def test_adagrad_two_tensors_by_hand():
    r, t = np.array(0.1, np.float32), np.array(3, np.int64)
    x = [np.array([1.0, -2.0], np.float32), np.array([[0.5]], np.float64)]
    g = [np.array([0.3, 0.4], np.float32), np.array([[-1.0]], np.float64)]
    h = [np.array([0.1, 0.2], np.float32), np.array([[0.0]], np.float64)]
    attrs = {"norm_coefficient": 0.01, "decay_factor": 0.1, "epsilon": 1e-6}
    out = train("Adagrad", [r, t, *x, *g, *h], attrs, 4)
    rate = 0.1 / (1 + 3 * 0.1)
    for i in range(2):
        gr = 0.01 * x[i].astype(np.float64) + g[i]
        h_new = h[i] + gr * gr
        np.testing.assert_allclose(out[i], x[i] - rate * gr / (np.sqrt(h_new) + 1e-6), rtol=1e-6)
        np.testing.assert_allclose(out[2 + i], h_new, rtol=1e-6)
        assert out[i].dtype == x[i].dtype and out[2 + i].dtype == h[i].dtype


@pytest.mark.parametrize("t", [0, 5])
def test_adam_by_hand(t):
    r, tt = np.array(0.05, np.float64), np.array(t, np.int64)
    x, g = np.array([1.0, 2.0], np.float32), np.array([-0.5, 0.25], np.float32)
    v, h = np.array([0.1, 0.2], np.float32), np.array([0.01, 0.02], np.float32)
    attrs = {"alpha": 0.8, "beta": 0.9, "epsilon": 1e-7, "norm_coefficient": 0.02, "norm_coefficient_post": 0.1}
    x_new, v_new, h_new = train("Adam", [r, tt, x, g, v, h], attrs, 3)
    gr = 0.02 * x + g
    v_want = 0.8 * v + 0.2 * gr
    h_want = 0.9 * h + 0.1 * gr * gr
    rate = 0.05 * np.sqrt(1 - 0.9 ** t) / (1 - 0.8 ** t) if t > 0 else 0.05
    x_want = 0.9 * (x - rate * v_want / (np.sqrt(h_want) + 1e-7))
    np.testing.assert_allclose(x_new, x_want, rtol=1e-5)
    np.testing.assert_allclose(v_new, v_want, rtol=1e-6)
    np.testing.assert_allclose(h_new, h_want, rtol=1e-6)


@pytest.mark.parametrize("mode", ["standard", "nesterov"])
@pytest.mark.parametrize("t", [0, 2])
def test_momentum_by_hand(mode, t):
    r, tt = np.array(0.1, np.float32), np.array(t, np.int64)
    x = [np.array([1.0, 2.0], np.float32), np.array([3.0], np.float32)]
    g = [np.array([0.5, -0.5], np.float32), np.array([1.0], np.float32)]
    v = [np.array([0.2, 0.1], np.float32), np.array([-0.3], np.float32)]
    attrs = {"alpha": 0.9, "beta": 0.5, "mode": mode, "norm_coefficient": 0.01}
    out = train("Momentum", [r, tt, *x, *g, *v], attrs, 4)
    for i in range(2):
        gr = 0.01 * x[i] + g[i]
        v_new = 0.9 * v[i] + (0.5 if t > 0 else 1.0) * gr
        x_new = x[i] - 0.1 * (gr + 0.9 * v_new) if mode == "nesterov" else x[i] - 0.1 * v_new
        np.testing.assert_allclose(out[i], x_new, rtol=1e-6)
        np.testing.assert_allclose(out[2 + i], v_new, rtol=1e-6)


def test_optimizer_errors():
    r, t = np.array(0.1, np.float32), np.array(0, np.int64)
    x = np.ones(2, np.float32)
    with pytest.raises(EdgeInferError, match="Momentum node 'n0': mode must be one of"):
        train("Momentum", [r, t, x, x, x], {"alpha": 0.9, "beta": 0.1, "mode": "heavy", "norm_coefficient": 0.0}, 2)
    with pytest.raises(EdgeInferError, match="Adam node 'n0': Adam takes R, T and 4 equal groups"):
        train("Adam", [r, t, x, x, x], {}, 3)
    with pytest.raises(EdgeInferError, match="Adagrad updating 1 tensor.* has 2 outputs"):
        train("Adagrad", [r, t, x, x, x], {}, 3)
    with pytest.raises(EdgeInferError, match="update count T must be int64"):
        train("Adagrad", [r, t.astype(np.float32), x, x, x], {}, 2)
    with pytest.raises(EdgeInferError, match="required attribute 'alpha'"):
        train("Momentum", [r, t, x, x, x], {"beta": 0.1, "mode": "standard", "norm_coefficient": 0.0}, 2)
    with pytest.raises(EdgeInferError, match=r"input X1 .* must be float or double, found int64"):
        train("Adagrad", [r, t, x.astype(np.int64), x, x], {}, 2)


# --------------------------------------------------------------------- SVMClassifier
def svc_attrs(svc, labels):
    """SVMClassifier attributes of a fitted sklearn SVC, laid out as libsvm (and skl2onnx) do."""
    gamma = svc._gamma if hasattr(svc, "_gamma") else svc.gamma
    attrs = {"kernel_type": svc.kernel.upper(), "kernel_params": [float(gamma), float(svc.coef0), float(svc.degree)],
             "support_vectors": svc.support_vectors_.ravel().tolist(), "vectors_per_class": svc.n_support_.tolist(),
             "coefficients": svc.dual_coef_.ravel().tolist(), "rho": svc.intercept_.tolist(),
             "classlabels_ints": labels}
    if svc.probability:
        attrs.update(prob_a=svc.probA_.tolist(), prob_b=svc.probB_.tolist())
    return attrs


@pytest.mark.filterwarnings("ignore:.*probab.*:FutureWarning")  # sklearn 1.9 deprecates SVC(probability=True)
@pytest.mark.parametrize("kernel", ["rbf", "poly", "linear", "sigmoid"])
@pytest.mark.parametrize("n_classes", [2, 3, 4])
@pytest.mark.parametrize("probability", [False, True])
def test_svm_classifier_sklearn_svc(classification_data, kernel, n_classes, probability):
    from sklearn.svm import SVC

    x, y = classification_data
    y = (np.minimum(y, n_classes - 1) if n_classes < 4 else (x[:, 3] > 0) + 2 * y.clip(0, 1)).astype(np.int64)
    svc = SVC(kernel=kernel, probability=probability, random_state=0, degree=2, gamma=0.5, coef0=0.5,
              decision_function_shape="ovo").fit(x[:120], y[:120])
    attrs = svc_attrs(svc, list(range(n_classes)))
    label, scores = ml("SVMClassifier", [x], attrs, n_outputs=2, ml_opset=3, rtol=1e-3, atol=1e-4)
    if not probability and n_classes > 2:
        np.testing.assert_allclose(scores, svc.decision_function(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_svm_classifier_linear_mode(post, n_classes):
    coefficients = RNG.normal(size=(n_classes, 2)).ravel().tolist()
    attrs = {"coefficients": coefficients, "rho": [0.25], "classlabels_strings": [f"c{i}" for i in range(n_classes)],
             "post_transform": post, "kernel_params": [0.0, 0.0, 0.0], "support_vectors": [0.0]}
    ml("SVMClassifier", [X4], attrs, n_outputs=2, ml_opset=3, rtol=1e-5, atol=1e-6)
    ml("SVMClassifier", [X4], {**attrs, "coefficients": np.abs(coefficients).tolist()}, n_outputs=2, ml_opset=3,
       rtol=1e-5, atol=1e-6)


def test_svm_classifier_errors():
    base = {"coefficients": [1.0, 1.0, 1.0], "rho": [0.0], "classlabels_ints": [0, 1], "vectors_per_class": [1, 2],
            "support_vectors": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "kernel_type": "RBF", "kernel_params": [0.1, 0, 0]}
    edge("SVMClassifier", [X4], base, n_outputs=2)
    with pytest.raises(EdgeInferError, match="SVMClassifier node 'n0': vectors_per_class must give a count"):
        edge("SVMClassifier", [X4], {**base, "vectors_per_class": [3]}, n_outputs=2)
    with pytest.raises(EdgeInferError, match="2 rho values for 1 pairs"):
        edge("SVMClassifier", [X4], {**base, "rho": [0.0, 1.0]}, n_outputs=2)
    with pytest.raises(EdgeInferError, match="kernel_type must be one of"):
        edge("SVMClassifier", [X4], {**base, "kernel_type": "CUBIC"}, n_outputs=2)
    with pytest.raises(EdgeInferError, match="prob_a and prob_b must be set together"):
        edge("SVMClassifier", [X4], {**base, "prob_a": [1.0]}, n_outputs=2)
