"""The ``ai.onnx.ml`` domain: the operators scikit-learn models exported with skl2onnx are made of.

Preprocessing (Binarizer, Scaler, Normalizer, Imputer, OneHotEncoder, LabelEncoder,
ArrayFeatureExtractor), linear models (LinearRegressor, LinearClassifier), support vector
machines (SVMRegressor, SVMClassifier) and tree ensembles: TreeEnsemble (ai.onnx.ml 5, the
unified op) and the deprecated TreeEnsembleRegressor and TreeEnsembleClassifier. ZipMap (its
output is a sequence of maps) is not supported.

Every op registers with ``domain="ai.onnx.ml"``. Attributes are validated once, at compile time,
into numpy arrays; inference is whole-array numpy. Scores are computed in float64 and rounded
once to the output type.

Tree ensembles (:class:`_Forest`) are evaluated for all samples and all trees at once: a
``[samples, trees]`` array of node positions advances one level per step by gathering each
node's feature, threshold and comparison, for as many steps as the deepest tree is deep (a leaf
points to itself, so paths that end early stay put). Leaf votes are then summed with
``bincount`` (or reduced with ``minimum.at``/``maximum.at``).

Behaviour follows ONNX Runtime where the spec is silent (post transforms of a single score,
binary classifiers), except where ONNX Runtime's result contradicts its own scores; those
places say so. Known differences from ONNX Runtime:

* TreeEnsemble's ``post_transform`` codes are the spec's (1 SOFTMAX, 2 LOGISTIC); ONNX Runtime
  swaps 1 and 2.
* PROBIT uses an exact inverse error function (ONNX Runtime: a three-digit approximation), and
  a post transform of a single-target regressor is applied (ONNX Runtime applies only PROBIT).
* LabelEncoder maps a repeated key to its last value, as the spec says (ONNX Runtime: first).
* Binarizer maps NaN to 0 (ONNX Runtime fails on NaN).
* A TreeEnsembleClassifier with two labels whose trees vote for both classes labels each sample
  with the class of the larger score (ONNX Runtime picks the second label whenever its score is
  positive, and then writes the integers 1/0 rather than the labels).
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


# ----------------------------------------------------------------------- tree ensembles
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
