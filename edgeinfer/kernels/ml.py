"""The ``ai.onnx.ml`` domain: the operators scikit-learn models exported with skl2onnx are made of.

Preprocessing (Binarizer, Scaler, Normalizer, Imputer, OneHotEncoder, LabelEncoder,
ArrayFeatureExtractor), linear models (LinearRegressor, LinearClassifier) and support vector
machines (SVMRegressor, SVMClassifier). The tree ensembles (TreeEnsemble, TreeEnsembleRegressor,
TreeEnsembleClassifier) live in :mod:`.ml_trees`, which builds on the helpers here (attribute
parsing, post transforms, classifier outputs); ml_trees imports this module, never the reverse.
ZipMap (its output is a sequence of maps) is not supported.

Every op registers with ``domain="ai.onnx.ml"``. Attributes are validated once, at compile time,
into numpy arrays; inference is whole-array numpy. Scores are computed in float64 and rounded
once to the output type.

Behaviour follows ONNX Runtime where the spec is silent (post transforms of a single score,
binary classifiers), except where ONNX Runtime's result contradicts its own scores; those
places say so. Known differences from ONNX Runtime (see :mod:`.ml_trees` for the tree ensembles'):

* PROBIT uses an exact inverse error function (ONNX Runtime: a three-digit approximation), and
  a post transform of a single-target regressor is applied (ONNX Runtime applies only PROBIT).
* LabelEncoder maps a repeated key to its last value, as the spec says (ONNX Runtime: first).
* Binarizer maps NaN to 0 (ONNX Runtime fails on NaN).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .elementwise import erf
from .registry import REQUIRED, OpContext, kernel, shape_rule
from .shapes import num_elements

ML = "ai.onnx.ml"
_NUMERIC_IN = frozenset({"float32", "float64", "int64", "int32"})
_POST_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")


# ---------------------------------------------------------------------------- helpers
def _check_input(ctx: OpContext, accepted, what: str = "X") -> TensorType:
    t = ctx.inputs[0]
    if t.dtype not in accepted:
        raise ctx.error(f"input {what} ('{ctx.node.inputs[0]}') must be one of {sorted(accepted)}, found {t.dtype}")
    return t


def _rows(t: TensorType) -> object:
    """Batch size of a [N, C] (or [C], one sample) input type."""
    if t.shape is None:
        return None
    return 1 if len(t.shape) <= 1 else t.shape[0]


def _as_matrix(x: np.ndarray, label: str) -> np.ndarray:
    """``x`` as float64 [N, F]: a vector is one sample, as in ONNX Runtime."""
    if x.ndim > 2:
        raise KernelError(f"{label}: X must be [N, F] or [F], found shape {list(x.shape)}")
    return np.atleast_2d(x).astype(np.float64, copy=False)


def _floats(values, name: str, ctx: OpContext) -> np.ndarray | None:
    """A float attribute list or tensor as float64 (None when absent)."""
    if values is None:
        return None
    a = np.asarray(values)
    if a.dtype.kind not in "fiu":
        raise ctx.error(f"attribute {name} must hold numbers, found {a.dtype}")
    return a.astype(np.float64).ravel()


def _ints(values) -> np.ndarray:
    return np.asarray([] if values is None else values, dtype=np.int64).ravel()


def _post_transform_name(ctx: OpContext, value) -> str:
    if isinstance(value, int):  # TreeEnsemble (opset 5) numbers them
        if not 0 <= value < len(_POST_TRANSFORMS):
            raise ctx.error(f"post_transform must be 0..4, found {value}")
        return _POST_TRANSFORMS[value]
    if value not in _POST_TRANSFORMS:
        raise ctx.error(f"post_transform must be one of {list(_POST_TRANSFORMS)}, found {value!r}")
    return value


def erfinv(y: np.ndarray) -> np.ndarray:
    """Inverse error function in float64: Winitzki's closed form, polished by Newton steps on
    :func:`erf`. ``±1`` give ``±inf``; values outside [-1, 1] give NaN."""
    y = np.asarray(y, np.float64)
    with np.errstate(all="ignore"):
        a = 0.147
        ln = np.log1p(-y * y)
        first = 2 / (math.pi * a) + ln / 2
        x = np.copysign(np.sqrt(np.sqrt(first * first - ln / a) - first), y)
        for _ in range(3):  # quadratic convergence: 1e-3 -> 1e-6 -> 1e-12 -> exact
            step = (erf(x) - y) / (2 / math.sqrt(math.pi) * np.exp(-x * x))
            x = np.where(np.isfinite(step), x - step, x)
    return x


def _probit(p: np.ndarray) -> np.ndarray:
    return math.sqrt(2) * erfinv(2 * p - 1)


def _logistic(s: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-s)) without overflow for large |s|
    return np.exp(-np.logaddexp(0, -s))


def _softmax(s: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Row softmax; with ``keep``, over the kept entries only (the others become 0)."""
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    top = np.max(s, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)
    e = np.exp(s - top)
    total = e.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, e / np.where(total > 0, total, 1), 0)


def apply_post_transform(scores: np.ndarray, kind: str) -> np.ndarray:
    """Apply an ai.onnx.ml post transform to [N, K] float64 scores (row-wise for softmaxes)."""
    if kind == "LOGISTIC":
        return _logistic(scores)
    if kind == "SOFTMAX":
        return _softmax(scores)
    if kind == "SOFTMAX_ZERO":  # zero scores stay zero and take no share
        return _softmax(scores, scores != 0)
    if kind == "PROBIT":
        return _probit(scores)
    return scores


def _two_columns(score: np.ndarray, kind: str, probability_like: np.ndarray | bool) -> np.ndarray:
    """[N, 2] scores of a binary model that computes one score (for the positive class).

    LOGISTIC and PROBIT make it a probability p, reported as [1 - p, p]. Untransformed scores
    are reported as [1 - s, s] when they are probability-like (non-negative votes) and as
    [-s, s] when they are signed margins, as ONNX Runtime does.
    """
    if kind in ("LOGISTIC", "PROBIT"):
        p = apply_post_transform(score, kind)
        return np.stack([1 - p, p], axis=1)
    first = np.where(probability_like, 1 - score, -score)
    return np.stack([first, score], axis=1)


def _labels(ctx: OpContext, ints, strings, where: str = "classlabels") -> tuple[np.ndarray, str]:
    """Class labels and their IR dtype; exactly one of the two attributes must be set."""
    if (ints is None) == (strings is None):
        raise ctx.error(f"exactly one of {where}_ints/int64s and {where}_strings must be set")
    if strings is not None:
        out = np.empty(len(strings), dtype=object)
        out[:] = list(strings)
        return out, "string"
    return np.asarray(ints, np.int64), "int64"


def _classifier_types(ctx: OpContext, label_dtype: str, n_scores) -> list[TensorType]:
    n = _rows(ctx.inputs[0])
    types = [TensorType(label_dtype, (n,)), TensorType("float32", (n, n_scores))]
    return types[: len(ctx.node.outputs)]


# --------------------------------------------------------------- ArrayFeatureExtractor
@shape_rule("ArrayFeatureExtractor", domain=ML)
def array_feature_extractor_shape(ctx: OpContext):
    x = _check_input(ctx, _NUMERIC_IN | {"string"})
    y = ctx.inputs[1]
    if y.dtype != "int64":
        raise ctx.error(f"indices Y must be int64, found {y.dtype}")
    k = None if y.shape is None else num_elements(y.shape)
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    if len(x.shape) <= 1:  # a vector is one sample
        return [TensorType(x.dtype, (1, k))]
    return [TensorType(x.dtype, tuple(x.shape[:-1]) + (k,))]


@kernel("ArrayFeatureExtractor", domain=ML)
def array_feature_extractor(ctx: OpContext):
    label = ctx.node.label

    def extract(x, indices):
        idx = indices.ravel()
        size = x.shape[-1] if x.ndim else 0
        if idx.size and (idx.min() < 0 or idx.max() >= size):
            bad = int(idx.min() if idx.min() < 0 else idx.max())
            raise KernelError(f"{label}: index {bad} is out of range for the last axis of size {size}")
        return np.take(x.reshape(1, -1) if x.ndim <= 1 else x, idx, axis=-1)

    return extract


# -------------------------------------------------------------------------- Binarizer
@shape_rule("Binarizer", domain=ML)
def binarizer_shape(ctx: OpContext, threshold):
    x = _check_input(ctx, _NUMERIC_IN)
    return [x]


@kernel("Binarizer", domain=ML, attrs={"threshold": 0.0})
def binarizer(ctx: OpContext, threshold):
    # NaN is not above any threshold: it maps to 0
    return lambda x: (x > threshold).astype(x.dtype)


# ----------------------------------------------------------------------------- Scaler
@shape_rule("Scaler", domain=ML)
def scaler_shape(ctx: OpContext, scale, offset):
    x = _check_input(ctx, _NUMERIC_IN)
    return [TensorType("float32", x.shape)]


def _per_feature(ctx: OpContext, values, name: str, default: float) -> np.ndarray:
    a = _floats(values, name, ctx)
    if a is None or a.size == 0:
        return np.array([default])
    width = ctx.inputs[0].shape[-1] if ctx.inputs[0].shape else None
    if a.size != 1 and isinstance(width, int) and a.size != width:
        raise ctx.error(f"{name} has {a.size} values; expected 1 or one per feature ({width})")
    return a


@kernel("Scaler", domain=ML, attrs={"scale": None, "offset": None})
def scaler(ctx: OpContext, scale, offset):
    mul = _per_feature(ctx, scale, "scale", 1.0)
    sub = _per_feature(ctx, offset, "offset", 0.0)
    return lambda x: ((x.astype(np.float64) - sub) * mul).astype(np.float32)


# ------------------------------------------------------------------------- Normalizer
@shape_rule("Normalizer", domain=ML)
def normalizer_shape(ctx: OpContext, norm):
    x = _check_input(ctx, _NUMERIC_IN)
    if x.shape is not None and len(x.shape) > 2:
        raise ctx.error(f"X must be [N, C] or [C], found shape {list(x.shape)}")
    return [TensorType("float32", x.shape)]


@kernel("Normalizer", domain=ML, attrs={"norm": "MAX"})
def normalizer(ctx: OpContext, norm):
    divisors = {
        "MAX": lambda x: np.max(x, axis=-1, keepdims=True),
        "L1": lambda x: np.sum(np.abs(x), axis=-1, keepdims=True),
        "L2": lambda x: np.sqrt(np.sum(x * x, axis=-1, keepdims=True)),
    }
    if norm not in divisors:
        raise ctx.error(f"norm must be one of {list(divisors)}, found {norm!r}")
    divisor = divisors[norm]

    def normalize(x):
        x = x.astype(np.float64)
        if x.shape[-1] == 0:
            return x.astype(np.float32)
        d = divisor(x)
        # ONNX: where the divisor is zero the row is returned unchanged
        return np.divide(x, d, out=x.copy(), where=d != 0).astype(np.float32)

    return normalize


# ---------------------------------------------------------------------------- Imputer
@shape_rule("Imputer", domain=ML)
def imputer_shape(ctx: OpContext, **attrs):
    x = _check_input(ctx, _NUMERIC_IN)
    return [x]


@kernel("Imputer", domain=ML, attrs={"imputed_value_floats": None, "imputed_value_int64s": None,
                                     "replaced_value_float": 0.0, "replaced_value_int64": 0})
def imputer(ctx: OpContext, imputed_value_floats, imputed_value_int64s, replaced_value_float, replaced_value_int64):
    is_float = ctx.inputs[0].dtype.startswith("float")
    values = imputed_value_floats if is_float else imputed_value_int64s
    if not values:
        wanted = "imputed_value_floats" if is_float else "imputed_value_int64s"
        raise ctx.error(f"X is {ctx.inputs[0].dtype}, so {wanted} must be set")
    fill = np.asarray(values, np.float64 if is_float else np.int64)
    width = ctx.inputs[0].shape[-1] if ctx.inputs[0].shape else None
    if fill.size != 1 and isinstance(width, int) and fill.size != width:
        raise ctx.error(f"{fill.size} imputed values; expected 1 or one per feature ({width})")
    replaced = replaced_value_float if is_float else replaced_value_int64
    by_nan = is_float and math.isnan(replaced)

    def impute(x):
        missing = np.isnan(x) if by_nan else x == replaced
        return np.where(missing, fill.astype(x.dtype), x)

    return impute


# ---------------------------------------------------------------------- OneHotEncoder
@shape_rule("OneHotEncoder", domain=ML)
def one_hot_encoder_shape(ctx: OpContext, cats_int64s, cats_strings, zeros):
    x = _check_input(ctx, _NUMERIC_IN | {"string"})
    n = len(cats_strings if cats_strings is not None else cats_int64s or [])
    return [TensorType("float32", None if x.shape is None else tuple(x.shape) + (n,))]


@kernel("OneHotEncoder", domain=ML, attrs={"cats_int64s": None, "cats_strings": None, "zeros": 1})
def one_hot_encoder(ctx: OpContext, cats_int64s, cats_strings, zeros):
    if (cats_int64s is None) == (cats_strings is None):
        raise ctx.error("exactly one of cats_int64s and cats_strings must be set")
    strings = cats_strings is not None
    if strings != (ctx.inputs[0].dtype == "string"):
        raise ctx.error(f"X is {ctx.inputs[0].dtype} but the categories are {'strings' if strings else 'integers'}")
    cats = list(cats_strings if strings else cats_int64s)
    position = {c: i for i, c in enumerate(cats)}
    sorted_cats = np.asarray(sorted(position), dtype=np.int64) if not strings else None
    rank = np.asarray([position[c] for c in sorted(position)], np.int64) if not strings else None
    label = ctx.node.label

    def encode(x):
        if strings:
            idx = np.fromiter((position.get(s, -1) for s in x.ravel().tolist()), np.int64, x.size)
        else:
            v = x.astype(np.int64).ravel()  # floats are truncated to integers, as in ONNX Runtime
            pos = np.minimum(np.searchsorted(sorted_cats, v), max(len(cats) - 1, 0))
            hit = sorted_cats[pos] == v if len(cats) else np.zeros(v.shape, bool)
            idx = np.where(hit, rank[pos] if len(cats) else 0, -1)
        if not zeros and (idx < 0).any():
            bad = x.ravel()[int(np.argmax(idx < 0))]
            raise KernelError(f"{label}: {bad!r} is not one of the {len(cats)} categories (zeros=0)")
        y = np.zeros((x.size, len(cats)), np.float32)
        found = idx >= 0
        y[np.flatnonzero(found), idx[found]] = 1
        return y.reshape(x.shape + (len(cats),))

    return encode


# ----------------------------------------------------------------------- LabelEncoder
_LABEL_KEYS = {"keys_strings": "string", "keys_int64s": "int64", "keys_floats": "float32"}
_LABEL_VALUES = {"values_strings": ("string", "default_string"), "values_int64s": ("int64", "default_int64"),
                 "values_floats": ("float32", "default_float")}
_LABEL_ATTRS = {name: None for name in (*_LABEL_KEYS, *_LABEL_VALUES, "keys_tensor", "values_tensor", "default_tensor")}
_LABEL_ATTRS.update({"default_string": "_Unused", "default_int64": -1, "default_float": -0.0})


def _tensor_dtype(a: np.ndarray) -> str:
    from .. import dtypes

    return dtypes.from_numpy(a.dtype)


def _label_encoder_table(ctx: OpContext, attrs: dict):
    """(keys, key dtype, values, value dtype, default) from the one keys_* and values_* set."""
    keys = [(n, attrs[n]) for n in (*_LABEL_KEYS, "keys_tensor") if attrs[n] is not None]
    values = [(n, attrs[n]) for n in (*_LABEL_VALUES, "values_tensor") if attrs[n] is not None]
    if len(keys) != 1 or len(values) != 1:
        raise ctx.error(f"exactly one keys_* and one values_* attribute must be set, found "
                        f"{[n for n, _ in keys] or 'no keys'} and {[n for n, _ in values] or 'no values'}")
    (key_name, key_list), (value_name, value_list) = keys[0], values[0]
    if key_name == "keys_tensor":
        key_dtype, key_arr = _tensor_dtype(key_list), np.asarray(key_list).ravel()
    else:
        key_dtype = _LABEL_KEYS[key_name]
        key_arr = np.array(key_list, dtype=object if key_dtype == "string" else key_dtype)
    if value_name == "values_tensor":
        value_dtype, value_arr = _tensor_dtype(value_list), np.asarray(value_list).ravel()
        default = attrs["default_tensor"]
        if default is None:
            default = "_Unused" if value_dtype == "string" else (-0.0 if value_dtype.startswith("float") else -1)
        else:
            default = np.asarray(default).ravel()
            if default.size != 1:
                raise ctx.error(f"default_tensor must hold one value, found {default.size}")
            default = default[0]
    else:
        value_dtype, default_name = _LABEL_VALUES[value_name]
        value_arr = np.array(value_list, dtype=object if value_dtype == "string" else value_dtype)
        default = attrs[default_name]
    if key_arr.size != value_arr.size:
        raise ctx.error(f"{key_name} has {key_arr.size} entries but {value_name} has {value_arr.size}")
    return key_arr, key_dtype, value_arr, value_dtype, default


@shape_rule("LabelEncoder", domain=ML)
def label_encoder_shape(ctx: OpContext, **attrs):
    _, key_dtype, _, value_dtype, _ = _label_encoder_table(ctx, attrs)
    x = ctx.inputs[0]
    if (x.dtype == "string") != (key_dtype == "string"):
        raise ctx.error(f"X is {x.dtype} but the keys are {key_dtype}")
    return [TensorType(value_dtype, x.shape)]


@kernel("LabelEncoder", domain=ML, attrs=_LABEL_ATTRS)
def label_encoder(ctx: OpContext, **attrs):
    keys, key_dtype, values, value_dtype, default = _label_encoder_table(ctx, attrs)
    from .. import dtypes

    out_dtype = dtypes.to_numpy(value_dtype)
    if key_dtype == "string":
        table = dict(zip(keys.tolist(), values.tolist()))  # a repeated key: the last one wins

        def encode_strings(x):
            get = table.get
            flat = [get(s, default) for s in x.ravel().tolist()]
            out = np.empty(len(flat), dtype=out_dtype)
            out[:] = flat
            return out.reshape(x.shape)

        return encode_strings
    # numeric keys: sorted unique keys (the last of repeats wins), found by searchsorted
    uniq, last = np.unique(keys[::-1], return_index=True)
    mapped = values[::-1][last].astype(out_dtype)
    fill = np.array(default, dtype=out_dtype)

    def encode_numbers(x):
        if uniq.size == 0:
            return np.full(x.shape, fill, dtype=out_dtype)
        pos = np.minimum(np.searchsorted(uniq, x), uniq.size - 1)
        found = uniq[pos] == x
        if uniq.dtype.kind == "f" and x.dtype.kind == "f":  # a NaN key matches any NaN
            found |= np.isnan(uniq[pos]) & np.isnan(x)
        return np.where(found, mapped[pos], fill)

    return encode_numbers


# -------------------------------------------------------------------- LinearRegressor
@shape_rule("LinearRegressor", domain=ML)
def linear_regressor_shape(ctx: OpContext, coefficients, intercepts, targets, post_transform):
    _check_input(ctx, _NUMERIC_IN)
    return [TensorType("float32", (_rows(ctx.inputs[0]), targets))]


def _linear_weights(ctx: OpContext, coefficients, intercepts, rows: int) -> tuple[np.ndarray, np.ndarray]:
    coef = _floats(coefficients, "coefficients", ctx)
    if coef is None or rows <= 0 or coef.size % rows:
        raise ctx.error(f"coefficients ({0 if coef is None else coef.size} values) must split into {rows} rows")
    coef = coef.reshape(rows, -1)
    width = ctx.inputs[0].shape[-1] if ctx.inputs[0].shape else None
    if isinstance(width, int) and width != coef.shape[1]:
        raise ctx.error(f"X has {width} features but the coefficients have {coef.shape[1]} per row")
    bias = _floats(intercepts, "intercepts", ctx)
    if bias is None or bias.size == 0:
        bias = np.zeros(rows)
    if bias.size != rows:
        raise ctx.error(f"{bias.size} intercepts for {rows} rows of coefficients")
    return coef, bias


@kernel("LinearRegressor", domain=ML, attrs={"coefficients": None, "intercepts": None, "targets": 1,
                                             "post_transform": "NONE"})
def linear_regressor(ctx: OpContext, coefficients, intercepts, targets, post_transform):
    kind = _post_transform_name(ctx, post_transform)
    coef, bias = _linear_weights(ctx, coefficients, intercepts, targets)
    label = ctx.node.label

    def regress(x):
        scores = _as_matrix(x, label) @ coef.T + bias
        return apply_post_transform(scores, kind).astype(np.float32)

    return regress


# ------------------------------------------------------------------- LinearClassifier
def _linear_classifier_rows(coefficients, intercepts, n_labels: int, x: TensorType) -> int:
    """Rows of the coefficient matrix: one per intercept, else coefficients / features, else
    one per class (one row in all for two classes whose coefficients do not split in two)."""
    if intercepts:
        return len(intercepts)
    width = x.shape[-1] if x.shape else None
    if isinstance(width, int) and width:
        return len(coefficients) // width
    return n_labels if n_labels and len(coefficients) % n_labels == 0 else 1


@shape_rule("LinearClassifier", domain=ML)
def linear_classifier_shape(ctx: OpContext, coefficients, intercepts, classlabels_ints, classlabels_strings,
                            multi_class, post_transform):
    x = _check_input(ctx, _NUMERIC_IN)
    labels, label_dtype = _labels(ctx, classlabels_ints, classlabels_strings)
    rows = _linear_classifier_rows(coefficients, intercepts, len(labels), x)
    return _classifier_types(ctx, label_dtype, 2 if rows == 1 else rows)


@kernel("LinearClassifier", domain=ML, attrs={"coefficients": REQUIRED, "intercepts": None,
                                              "classlabels_ints": None, "classlabels_strings": None,
                                              "multi_class": 0, "post_transform": "NONE"})
def linear_classifier(ctx: OpContext, coefficients, intercepts, classlabels_ints, classlabels_strings,
                      multi_class, post_transform):
    # multi_class (OvR vs multinomial) changes how the model was trained, not how it scores
    kind = _post_transform_name(ctx, post_transform)
    labels, _ = _labels(ctx, classlabels_ints, classlabels_strings)
    rows = _linear_classifier_rows(coefficients, intercepts, len(labels), ctx.inputs[0])
    coef, bias = _linear_weights(ctx, coefficients, intercepts, rows)
    if rows == 1 and len(labels) != 2:
        raise ctx.error(f"one row of coefficients is a binary model and needs 2 class labels, found {len(labels)}")
    if rows > 1 and len(labels) != rows:
        raise ctx.error(f"{rows} rows of coefficients but {len(labels)} class labels")
    label = ctx.node.label
    n_out = len(ctx.node.outputs)

    def classify(x):
        scores = _as_matrix(x, label) @ coef.T + bias
        if rows == 1:  # one score: the positive class is the second label
            s = scores[:, 0]
            y, z = labels[(s > 0).astype(np.int64)], _two_columns(s, kind, True)
        else:
            y, z = labels[np.argmax(scores, axis=1)], apply_post_transform(scores, kind)
        return (y, z.astype(np.float32))[:n_out]

    return classify


# ------------------------------------------------------------------------------- SVMs
_SVM_KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


class _SvmKernel:
    """The kernel function of an SVM: ``matrix(x, sv)`` is [N, V]."""

    def __init__(self, ctx: OpContext, kernel_type: str, kernel_params):
        if kernel_type not in _SVM_KERNELS:
            raise ctx.error(f"kernel_type must be one of {list(_SVM_KERNELS)}, found {kernel_type!r}")
        params = list(kernel_params or []) + [0.0, 0.0, 0.0]
        self.kind = kernel_type
        self.gamma, self.coef0, self.degree = float(params[0]), float(params[1]), float(params[2])

    def matrix(self, x: np.ndarray, sv: np.ndarray) -> np.ndarray:
        if self.kind == "RBF":
            d = (x * x).sum(1)[:, None] - 2 * (x @ sv.T) + (sv * sv).sum(1)[None, :]
            return np.exp(-self.gamma * np.maximum(d, 0))
        dot = x @ sv.T
        if self.kind == "POLY":
            return (self.gamma * dot + self.coef0) ** self.degree
        if self.kind == "SIGMOID":
            return np.tanh(self.gamma * dot + self.coef0)
        return dot


def _support_vectors(ctx: OpContext, support_vectors, n_vectors: int) -> np.ndarray:
    sv = _floats(support_vectors, "support_vectors", ctx)
    if sv is None or n_vectors <= 0 or sv.size % n_vectors:
        raise ctx.error(f"support_vectors ({0 if sv is None else sv.size} values) must split into {n_vectors} vectors")
    sv = sv.reshape(n_vectors, -1)
    width = ctx.inputs[0].shape[-1] if ctx.inputs[0].shape else None
    if isinstance(width, int) and width != sv.shape[1]:
        raise ctx.error(f"X has {width} features but the support vectors have {sv.shape[1]}")
    return sv


@shape_rule("SVMRegressor", domain=ML)
def svm_regressor_shape(ctx: OpContext, **attrs):
    _check_input(ctx, _NUMERIC_IN)
    return [TensorType("float32", (_rows(ctx.inputs[0]), 1))]


@kernel("SVMRegressor", domain=ML, attrs={"coefficients": None, "kernel_params": None, "kernel_type": "LINEAR",
                                          "n_supports": 0, "one_class": 0, "post_transform": "NONE",
                                          "rho": None, "support_vectors": None})
def svm_regressor(ctx: OpContext, coefficients, kernel_params, kernel_type, n_supports, one_class, post_transform,
                  rho, support_vectors):
    kind = _post_transform_name(ctx, post_transform)
    coef = _floats(coefficients, "coefficients", ctx)
    bias = float(_floats(rho, "rho", ctx)[0]) if rho else 0.0
    if n_supports > 0:
        fn = _SvmKernel(ctx, kernel_type, kernel_params)
        sv = _support_vectors(ctx, support_vectors, n_supports)
        if coef is None or coef.size != n_supports:
            raise ctx.error(f"{0 if coef is None else coef.size} coefficients for {n_supports} support vectors")
        score = lambda x: fn.matrix(x, sv) @ coef  # noqa: E731
    else:  # linear SVM: the coefficients are the weight vector
        if coef is None:
            raise ctx.error("coefficients must be set")
        score = lambda x: x @ coef  # noqa: E731
    label = ctx.node.label

    def regress(x):
        s = (score(_as_matrix(x, label)) + bias)[:, None]
        if one_class:  # inlier +1, outlier -1
            s = np.where(s > 0, 1.0, -1.0)
        return apply_post_transform(s, kind).astype(np.float32)

    return regress


def _pairwise_coupling(r: np.ndarray) -> np.ndarray:
    """Class probabilities [N, K] from pairwise ones ``r[n, i, j]`` = P(i beats j), by the
    second method of Wu, Lin and Weng (2004), as libsvm: minimise sum over i != j of
    (r_ji p_i - r_ij p_j)^2 subject to sum(p) = 1, by coordinate descent. Samples are
    updated together; each stops when its optimality gap is below 0.005 / K."""
    n, k = r.shape[0], r.shape[1]
    q = -r.transpose(0, 2, 1) * r  # q[n, t, j] = -r_jt r_tj off the diagonal
    diag = np.arange(k)
    q[:, diag, diag] = (r.transpose(0, 2, 1) ** 2).sum(axis=2) - r[:, diag, diag] ** 2
    p = np.full((n, k), 1.0 / k)
    active = np.ones(n, bool)
    for _ in range(max(100, k)):
        qp = np.einsum("ntj,nj->nt", q, p)
        pqp = (p * qp).sum(axis=1)
        active &= np.abs(qp - pqp[:, None]).max(axis=1) >= 0.005 / k
        if not active.any():
            break
        a = active
        for t in range(k):
            diff = (pqp[a] - qp[a, t]) / q[a, t, t]
            scale = 1 + diff
            pqp[a] = (pqp[a] + diff * (diff * q[a, t, t] + 2 * qp[a, t])) / scale ** 2
            p[a, t] += diff
            p[a] /= scale[:, None]
            qp[a] = (qp[a] + diff[:, None] * q[a, t]) / scale[:, None]
    return p


@shape_rule("SVMClassifier", domain=ML)
def svm_classifier_shape(ctx: OpContext, **attrs):
    _check_input(ctx, _NUMERIC_IN)
    labels, label_dtype = _labels(ctx, attrs["classlabels_ints"], attrs["classlabels_strings"])
    k = len(labels)
    pairwise = bool(attrs["vectors_per_class"]) and not attrs["prob_a"]  # raw one-vs-one scores
    return _classifier_types(ctx, label_dtype, (2 if k == 2 else k * (k - 1) // 2) if pairwise else k)


@kernel("SVMClassifier", domain=ML, attrs={"classlabels_ints": None, "classlabels_strings": None,
                                           "coefficients": None, "kernel_params": None, "kernel_type": "LINEAR",
                                           "post_transform": "NONE", "prob_a": None, "prob_b": None, "rho": None,
                                           "support_vectors": None, "vectors_per_class": None})
def svm_classifier(ctx: OpContext, classlabels_ints, classlabels_strings, coefficients, kernel_params, kernel_type,
                   post_transform, prob_a, prob_b, rho, support_vectors, vectors_per_class):
    """libsvm's one-vs-one SVC (``vectors_per_class`` set) or a liblinear model (one row of
    coefficients per class), with ONNX Runtime's conventions for labels and binary scores."""
    kind = _post_transform_name(ctx, post_transform)
    labels, _ = _labels(ctx, classlabels_ints, classlabels_strings)
    k = len(labels)
    coef = _floats(coefficients, "coefficients", ctx)
    bias = _floats(rho, "rho", ctx)
    if coef is None or not coef.size or bias is None or not bias.size:
        raise ctx.error("coefficients and rho must be set")
    prob_a, prob_b = _floats(prob_a, "prob_a", ctx), _floats(prob_b, "prob_b", ctx)
    if (prob_a is None) != (prob_b is None) or (prob_a is not None and prob_a.size != prob_b.size):
        raise ctx.error("prob_a and prob_b must be set together, with equal lengths")
    n_out = len(ctx.node.outputs)
    label = ctx.node.label
    if not vectors_per_class:  # linear: one score per class; rho[0] is every class's bias
        if coef.size % k:
            raise ctx.error(f"{coef.size} coefficients do not split into {k} classes")
        weights = coef.reshape(k, -1)
        all_positive = bool((coef >= 0).all())

        def linear(x):
            scores = _as_matrix(x, label) @ weights.T + bias[0]
            best = np.argmax(scores, axis=1)
            if k == 2:  # the second label when the best score is "positive enough"
                top = scores[np.arange(len(best)), best]
                best = np.where(top >= 0.5 if all_positive else top > 0, 1, best)
            return (labels[best], apply_post_transform(scores, kind).astype(np.float32))[:n_out]

        return linear
    counts = _ints(vectors_per_class)
    if len(counts) != k or (counts < 0).any():
        raise ctx.error(f"vectors_per_class must give a count for each of the {k} classes, found {counts.tolist()}")
    fn = _SvmKernel(ctx, kernel_type, kernel_params)
    n_vectors = int(counts.sum())
    sv = _support_vectors(ctx, support_vectors, n_vectors)
    if coef.size != (k - 1) * n_vectors:
        raise ctx.error(f"{coef.size} coefficients; expected (classes - 1) * vectors = {(k - 1) * n_vectors}")
    coef = coef.reshape(k - 1, n_vectors)
    first, second = np.triu_indices(k, 1)  # the one-vs-one pairs, in libsvm's order
    if bias.size != first.size:
        raise ctx.error(f"{bias.size} rho values for {first.size} pairs of classes")
    if prob_a is not None and prob_a.size not in (0, first.size):
        raise ctx.error(f"{prob_a.size} prob_a values for {first.size} pairs of classes")
    with_proba = prob_a is not None and prob_a.size > 0
    # pair p = (i, j) weighs class i's vectors by coefficient row j-1, class j's by row i
    owner = np.repeat(np.arange(k), counts)
    pair_weights = np.zeros((n_vectors, first.size))
    for p, (i, j) in enumerate(zip(first, second)):
        pair_weights[owner == i, p] = coef[j - 1, owner == i]
        pair_weights[owner == j, p] = coef[i, owner == j]

    def one_vs_one(x):
        decision = fn.matrix(_as_matrix(x, label), sv) @ pair_weights + bias  # [N, pairs]
        winners = np.where(decision > 0, first, second)
        votes = (winners[:, :, None] == np.arange(k)).sum(axis=1)
        y = labels[np.argmax(votes, axis=1)]
        if with_proba:
            # Platt-scaled pairwise probabilities, clipped as libsvm, then coupled
            win = np.clip(1 / (1 + np.exp(decision * prob_a + prob_b)), 1e-7, 1 - 1e-7)
            r = np.zeros((len(decision), k, k))
            r[:, first, second] = win
            r[:, second, first] = 1 - win
            z = apply_post_transform(_pairwise_coupling(r), kind)
        elif k == 2:
            z = _two_columns(decision[:, 0], kind, kind != "NONE")
        else:
            z = apply_post_transform(decision, kind)
        return (y, z.astype(np.float32))[:n_out]

    return one_vs_one
