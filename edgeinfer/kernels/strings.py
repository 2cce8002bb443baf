"""String operators: StringConcat, StringSplit, StringNormalizer, RegexFullMatch and
TfIdfVectorizer.

IR string tensors are numpy object arrays of Python ``str`` (:mod:`edgeinfer.dtypes`). Work on
individual strings (splitting, case mapping, regex matching) is inherently per element and goes
through one comprehension over the flattened array; everything around it (padding, counting,
n-gram matching) is whole-array numpy.

Deliberate differences from ONNX Runtime, all outside the conformance cases:

* RegexFullMatch uses Python's :mod:`re` rather than RE2. RE2 syntax is close to a subset of
  Python's; ``\\z`` (end of text) is translated to Python's ``\\Z``. RE2-only constructs
  (``\\C``, ``\\Q...\\E``, ``\\pN`` one-letter Unicode classes) are compile-time errors, and
  patterns RE2 rejects (backreferences, lookaround) are accepted here.
* StringNormalizer maps case character by character with Unicode's simple case mapping (``ß``
  stays ``ß`` in upper case), as ONNX Runtime does in a UTF-8 locale; the "C"/"POSIX" locale
  maps ASCII letters only. Locales with their own casing rules (Turkish, Azeri, Lithuanian) are
  rejected at compile time rather than silently mapped the default way.
* StringSplit without a delimiter follows :meth:`str.split` on the stripped string: any Unicode
  whitespace separates, as the spec says; ONNX Runtime splits on the space character only.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .registry import REQUIRED, OpContext, kernel, shape_rule
from .shapes import broadcast_shapes


def _require_string(ctx: OpContext, i: int, what: str = "X") -> TensorType:
    t = ctx.inputs[i]
    if t.dtype != "string":
        raise ctx.error(f"input {what} ('{ctx.node.inputs[i]}') must be a string tensor, found {t.dtype}")
    return t


def _strings(values, shape) -> np.ndarray:
    """An object array of ``shape`` from an iterable of ``str``."""
    out = np.empty(len(values) if isinstance(values, list) else 0, dtype=object)
    out[:] = values
    return out.reshape(shape)


# ------------------------------------------------------------------------ StringConcat
@shape_rule("StringConcat")
def string_concat_shape(ctx: OpContext):
    x, y = _require_string(ctx, 0, "X"), _require_string(ctx, 1, "Y")
    return [TensorType("string", broadcast_shapes([x.shape, y.shape], ctx.node))]


@kernel("StringConcat")
def string_concat(ctx: OpContext):
    def concat(x, y):
        out = np.empty(np.broadcast_shapes(x.shape, y.shape), dtype=object)
        return np.add(x, y, out=out, dtype=object)  # object add is str.__add__, broadcast

    return concat


# ------------------------------------------------------------------------- StringSplit
@shape_rule("StringSplit")
def string_split_shape(ctx: OpContext, delimiter, maxsplit):
    x = _require_string(ctx, 0)
    if maxsplit is not None and maxsplit < 0:
        raise ctx.error(f"maxsplit must be >= 0, found {maxsplit}")
    if x.shape is None:
        return [TensorType("string", None), TensorType("int64", None)]
    return [TensorType("string", tuple(x.shape) + (None,)), TensorType("int64", tuple(x.shape))]


@kernel("StringSplit", attrs={"delimiter": "", "maxsplit": None})
def string_split(ctx: OpContext, delimiter, maxsplit):
    # an empty delimiter means runs of whitespace, with the ends stripped: str.split(None)
    sep = delimiter or None
    limit = -1 if maxsplit is None else int(maxsplit)

    def split(x):
        flat = x.ravel().tolist()
        if sep is None:  # the unsplit remainder after maxsplit loses its trailing whitespace too
            flat = [s.rstrip() for s in flat]
        # an empty string has no substrings, whatever the delimiter (as in ONNX Runtime)
        parts = [s.split(sep, limit) if s else [] for s in flat]
        counts = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        width = int(counts.max()) if counts.size else 0
        # pad every row to the longest one with "": one flat list, then one reshape
        flat = [p for row in parts for p in row + [""] * (width - len(row))]
        return _strings(flat, x.shape + (width,)), counts.reshape(x.shape)

    return split


# -------------------------------------------------------------------- StringNormalizer
_CASE_ACTIONS = ("NONE", "LOWER", "UPPER")
_SPECIAL_CASING_LOCALES = ("tr", "az", "lt")
_ASCII_LOCALES = ("c", "posix")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_simple_case_exceptions: dict[str, dict[str, str]] = {}


def _simple_case_table(upper: bool) -> dict[str, str]:
    """Characters whose full case mapping (what ``str.upper``/``str.lower`` do) is not one
    character, with their one-character (simple) mapping: ``ß`` stays ``ß`` in upper case and
    ``İ`` lowers to ``i``. Case maps character by character, as ONNX Runtime does."""
    key = "upper" if upper else "lower"
    if key not in _simple_case_exceptions:
        table = {}
        for code in range(0x10000):  # every special-cased character is in the BMP
            c = chr(code)
            mapped = c.upper() if upper else c.lower()
            if len(mapped) != 1:
                # uppercase expansions (ß -> SS, ligatures) have no simple mapping; İ lowers to i
                table[c] = c if upper else mapped[0]
        _simple_case_exceptions[key] = table
    return _simple_case_exceptions[key]


def _case_mapper(action: str, ascii_only: bool):
    """A function mapping one string to upper or lower case, character by character."""
    if action == "NONE":
        return None
    upper = action == "UPPER"
    if ascii_only:
        table = _ASCII_UPPER if upper else _ASCII_LOWER
        return lambda s: s.translate(table)
    full = str.upper if upper else str.lower
    exceptions = _simple_case_table(upper)

    def simple(s: str) -> str:
        if s.isascii() or exceptions.keys().isdisjoint(s):
            return full(s)
        return "".join(exceptions.get(c) or full(c) for c in s)

    return simple


@shape_rule("StringNormalizer")
def string_normalizer_shape(ctx: OpContext, case_change_action, is_case_sensitive, stopwords, locale):
    x = _require_string(ctx, 0)
    if x.shape is not None:
        if len(x.shape) not in (1, 2) or (len(x.shape) == 2 and x.shape[0] not in (1, None)):
            raise ctx.error(f"X must have shape [C] or [1, C], found {list(x.shape)}")
    # the number of words kept depends on the data
    shape = None if x.shape is None else ((None,) if len(x.shape) == 1 else (1, None))
    return [TensorType("string", shape)]


@kernel("StringNormalizer",
        attrs={"case_change_action": "NONE", "is_case_sensitive": 0, "stopwords": None, "locale": ""})
def string_normalizer(ctx: OpContext, case_change_action, is_case_sensitive, stopwords, locale):
    if case_change_action not in _CASE_ACTIONS:
        raise ctx.error(f"case_change_action must be one of {list(_CASE_ACTIONS)}, found {case_change_action!r}")
    language = re.split(r"[_.@-]", locale or "")[0].lower()
    if language in _SPECIAL_CASING_LOCALES:
        raise ctx.error(f"locale {locale!r} has its own casing rules; edgeinfer supports only "
                        f"Unicode default case mapping (the default locale) and the C/POSIX locale")
    ascii_only = language in _ASCII_LOCALES and "utf" not in (locale or "").lower()
    fold = (lambda s: s) if is_case_sensitive else _case_mapper("LOWER", ascii_only)
    stop = frozenset(fold(w) for w in (stopwords or []))
    change = _case_mapper(case_change_action, ascii_only)
    label = ctx.node.label

    def normalize(x):
        if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[0] != 1):
            raise KernelError(f"{label}: X must have shape [C] or [1, C], found {list(x.shape)}")
        words = [w for w in x.ravel().tolist() if fold(w) not in stop] if stop else x.ravel().tolist()
        if change is not None:
            words = [change(w) for w in words]
        if not words:  # ONNX: an all-dropped input gives one empty string
            words = [""]
        return _strings(words, (len(words),) if x.ndim == 1 else (1, len(words)))

    return normalize


# ---------------------------------------------------------------------- RegexFullMatch
_RE2_ONLY = (r"\C", r"\Q", r"\E", r"\pL", r"\pN", r"\pP", r"\pS", r"\pZ", r"\PL", r"\PN")


def _compile_re2(pattern: str) -> re.Pattern:
    """Compile an RE2 pattern with Python's ``re`` (see the module docstring)."""
    for token in _RE2_ONLY:
        if token in pattern:
            raise re.error(f"RE2 construct {token!r} is not supported by edgeinfer's regex engine")
    # \z is RE2's (and Perl's) end of text; Python 3.11 spells it \Z. An escaped backslash
    # before z ("\\z") is a literal backslash and z, hence the look-behind on an even run.
    pattern = re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", pattern)
    return re.compile(pattern)


@shape_rule("RegexFullMatch")
def regex_full_match_shape(ctx: OpContext, pattern):
    x = _require_string(ctx, 0)
    return [TensorType("bool", x.shape)]


@kernel("RegexFullMatch", attrs={"pattern": REQUIRED})
def regex_full_match(ctx: OpContext, pattern):
    try:
        compiled = _compile_re2(pattern)
    except re.error as e:
        raise ctx.error(f"invalid pattern {pattern!r}: {e}") from None
    match = compiled.fullmatch

    def full_match(x):
        flat = [match(s) is not None for s in x.ravel().tolist()]
        return np.array(flat, dtype=bool).reshape(x.shape)

    return full_match


# --------------------------------------------------------------------- TfIdfVectorizer
_TFIDF_MODES = ("TF", "IDF", "TFIDF")
_TFIDF_INPUTS = ("int32", "int64", "string")


class _NgramPool:
    """The pool of n-grams of one TfIdfVectorizer, as integer keys ready for searchsorted.

    Tokens are numbered by their rank in the pool's sorted vocabulary (``V`` tokens; an input
    token outside it gets ``V``); an n-gram's key is its token numbers read as digits in base
    ``V + 1``, so a window of the input matches a pool n-gram exactly when the keys are equal.
    """

    def __init__(self, pool: list, ngram_counts: list[int]):
        self.vocab = np.unique(np.array(pool, dtype=object if pool and isinstance(pool[0], str) else np.int64))
        self.base = len(self.vocab) + 1
        self.is_string = self.vocab.dtype == object
        self.lookup = {t: i for i, t in enumerate(self.vocab.tolist())} if self.is_string else None
        ids = self.token_ids(np.array(pool, dtype=self.vocab.dtype))
        self.levels: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # n -> (sorted keys, gram index)
        starts = list(ngram_counts) + [len(pool)]
        gram = 0
        for level, (lo, hi) in enumerate(zip(starts[:-1], starts[1:])):
            n = level + 1
            if hi < lo or (hi - lo) % n:
                raise ValueError(f"ngram_counts {list(ngram_counts)} does not split a pool of "
                                 f"{len(pool)} tokens into whole {n}-grams")
            grams = ids[lo:hi].reshape(-1, n)
            if len(grams):
                if self.base ** n >= 2 ** 63:
                    raise ValueError(f"{n}-grams over a vocabulary of {len(self.vocab)} tokens "
                                     f"are too long for edgeinfer's 63-bit n-gram keys")
                keys = self.keys(grams)
                # the first of repeated pool n-grams wins
                uniq, first = np.unique(keys, return_index=True)
                self.levels[n] = (uniq, first + gram)
            gram += len(grams)
        self.n_grams = gram

    def token_ids(self, tokens: np.ndarray) -> np.ndarray:
        v = len(self.vocab)
        if self.is_string:
            get = self.lookup.get
            ids = np.fromiter((get(t, v) for t in tokens.ravel().tolist()), np.int64, tokens.size)
            return ids.reshape(tokens.shape)
        if v == 0:
            return np.full(tokens.shape, v, np.int64)
        pos = np.searchsorted(self.vocab, tokens)
        hit = self.vocab[np.minimum(pos, v - 1)] == tokens
        return np.where(hit, pos, v)

    def keys(self, ids: np.ndarray) -> np.ndarray:
        """Keys of n-grams laid out along the last axis of ``ids``."""
        n = ids.shape[-1]
        powers = self.base ** np.arange(n - 1, -1, -1, dtype=np.int64)
        return ids @ powers

    def count(self, ids: np.ndarray, min_n: int, max_n: int, max_skip: int) -> np.ndarray:
        """[rows, n_grams] occurrence counts of the pool n-grams in each row of ``ids``."""
        rows, length = ids.shape
        counts = np.zeros(rows * self.n_grams, np.int64)
        row_base = (np.arange(rows, dtype=np.int64) * self.n_grams)[:, None]
        for n in range(min_n, max_n + 1):
            if n not in self.levels:
                continue
            sorted_keys, gram_of = self.levels[n]
            # a unigram is the same whatever the skip: count it once
            for skip in range(max_skip + 1 if n > 1 else 1):
                span = (n - 1) * (skip + 1)
                if span >= length:
                    break
                window = np.arange(length - span)[:, None] + np.arange(n) * (skip + 1)
                keys = self.keys(ids[:, window])  # [rows, windows]
                pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
                found = sorted_keys[pos] == keys
                counts += np.bincount((row_base + gram_of[pos])[found], minlength=counts.size)
        return counts.reshape(rows, self.n_grams)


@shape_rule("TfIdfVectorizer")
def tfidf_shape(ctx: OpContext, mode, min_gram_length, max_gram_length, max_skip_count, ngram_counts,
                ngram_indexes, pool_int64s=None, pool_strings=None, weights=None):
    x = ctx.inputs[0]
    if x.dtype not in _TFIDF_INPUTS:
        raise ctx.error(f"X must be int32, int64 or string, found {x.dtype}")
    if x.shape is not None and len(x.shape) not in (1, 2):
        raise ctx.error(f"X must be 1-D [C] or 2-D [N, C], found shape {list(x.shape)}")
    width = max(ngram_indexes) + 1 if ngram_indexes else 0
    shape = None if x.shape is None else ((width,) if len(x.shape) == 1 else (x.shape[0], width))
    return [TensorType("float32", shape)]


@kernel("TfIdfVectorizer", attrs={
    "mode": REQUIRED, "min_gram_length": REQUIRED, "max_gram_length": REQUIRED, "max_skip_count": REQUIRED,
    "ngram_counts": REQUIRED, "ngram_indexes": REQUIRED, "pool_int64s": None, "pool_strings": None,
    "weights": None})
def tfidf_vectorizer(ctx: OpContext, mode, min_gram_length, max_gram_length, max_skip_count, ngram_counts,
                     ngram_indexes, pool_int64s, pool_strings, weights):
    if mode not in _TFIDF_MODES:
        raise ctx.error(f"mode must be one of {list(_TFIDF_MODES)}, found {mode!r}")
    if not 1 <= min_gram_length <= max_gram_length:
        raise ctx.error(f"need 1 <= min_gram_length <= max_gram_length, found {min_gram_length} and {max_gram_length}")
    if max_skip_count < 0:
        raise ctx.error(f"max_skip_count must be >= 0, found {max_skip_count}")
    if (pool_int64s is None) == (pool_strings is None):
        raise ctx.error("exactly one of pool_int64s and pool_strings must be set")
    pool = list(pool_strings if pool_strings is not None else pool_int64s)
    want = "string" if pool_strings is not None else "an integer type"
    x_dtype = ctx.inputs[0].dtype
    if (x_dtype == "string") != (pool_strings is not None):
        raise ctx.error(f"X is {x_dtype} but the pool needs {want}")
    try:
        grams = _NgramPool(pool, ngram_counts)
    except ValueError as e:
        raise ctx.error(str(e)) from None
    if len(ngram_indexes) != grams.n_grams:
        raise ctx.error(f"ngram_indexes has {len(ngram_indexes)} entries but the pool holds {grams.n_grams} n-grams")
    out_index = np.asarray(ngram_indexes, np.int64)
    if out_index.size and out_index.min() < 0:
        raise ctx.error(f"ngram_indexes must be >= 0, found {int(out_index.min())}")
    scale = np.ones(grams.n_grams, np.float32) if not weights else np.asarray(weights, np.float32)
    if scale.size != grams.n_grams:
        raise ctx.error(f"weights has {scale.size} entries, expected one per n-gram ({grams.n_grams})")
    width = int(out_index.max()) + 1 if out_index.size else 0

    def vectorize(x):
        rows = x.reshape(1, -1) if x.ndim == 1 else x
        counts = grams.count(grams.token_ids(rows), min_gram_length, max_gram_length, max_skip_count)
        values = (counts > 0 if mode == "IDF" else counts).astype(np.float32)
        if mode != "TF":
            values *= scale
        y = np.zeros((rows.shape[0], width), np.float32)
        y[:, out_index] = values
        return y[0] if x.ndim == 1 else y

    return vectorize
