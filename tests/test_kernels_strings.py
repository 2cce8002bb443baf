"""String kernels (strings.py) against ONNX Runtime through the whole ONNX import path, plus
their compile-time and run-time errors."""
import numpy as np
import onnx
import pytest
from onnx import helper

from edgeinfer import Session
from edgeinfer.errors import EdgeInferError, KernelError
from opcheck import run_edgeinfer


def strings(*values, shape=None):
    a = np.empty(len(values), dtype=object)
    a[:] = list(values)
    return a.reshape(shape if shape is not None else (len(values),))


def one_node_model(op, inputs, attrs, out_types, domain="", opsets=(("", 21),)):
    """A one-node model; ``out_types`` are numpy dtypes (None: leave the output untyped)."""
    names = [f"x{i}" for i in range(len(inputs))]
    outs = [f"y{i}" for i in range(len(out_types))]
    node = helper.make_node(op, names, outs, name="n0", domain=domain, **attrs)
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in zip(names, inputs)]
    outputs = [onnx.ValueInfoProto(name=o) if t is None else
               helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
               for o, t in zip(outs, out_types)]
    model = helper.make_model(helper.make_graph([node], "g", ins, outputs),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 10
    return model


def compare_with_ort(op, inputs, attrs=None, n_outputs=1, rtol=1e-6, atol=1e-6, **kw):
    """Run one node in ONNX Runtime and in edgeinfer (imported from ONNX); assert equal outputs.
    ``kw`` (``domain``, ``opsets``) goes to :func:`one_node_model`."""
    import onnxruntime as ort

    attrs = attrs or {}
    feeds = {f"x{i}": a for i, a in enumerate(inputs)}
    ort_model = one_node_model(op, inputs, attrs, [None] * n_outputs, **kw)
    want = ort.InferenceSession(ort_model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    model = one_node_model(op, inputs, attrs, [w.dtype for w in want], **kw)
    got = Session(model).run(feeds)
    for i, w in enumerate(want):
        g = got[f"y{i}"]
        assert g.shape == w.shape, f"output {i}: shape {g.shape} != ORT {w.shape}"
        if w.dtype.kind in "OUS":
            assert g.dtype == object and g.tolist() == w.tolist(), f"output {i}: {g.tolist()} != {w.tolist()}"
        elif w.dtype.kind == "f":
            assert g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {i}")
        else:
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
    return [got[f"y{i}"] for i in range(n_outputs)]


# ------------------------------------------------------------------------ StringConcat
@pytest.mark.parametrize("x, y", [
    (strings("a", "bc", ""), strings("1", "", "é")),
    (strings("cat", "dog", "的", shape=(3, 1)), strings("s", "!", shape=(1, 2))),
    (np.array("x", dtype=object), np.array("y", dtype=object)),
    (strings(), strings("z")),
])
def test_string_concat(x, y):
    compare_with_ort("StringConcat", [x, y])


def test_string_concat_needs_strings():
    with pytest.raises(EdgeInferError, match="StringConcat node 'n0'.*string"):
        run_edgeinfer("StringConcat", [strings("a"), np.array([1], np.int64)])


# ------------------------------------------------------------------------- StringSplit
SPLIT_INPUT = strings("a,b,,c", ",lead", "trail,", "", "no delimiter here", "  spaced   out  ", "é,中 文")


@pytest.mark.parametrize("attrs", [
    {"delimiter": ","}, {"delimiter": ",", "maxsplit": 1}, {"delimiter": ",", "maxsplit": 0},
    {}, {"maxsplit": 1}, {"delimiter": "ab"},
])
def test_string_split(attrs):
    compare_with_ort("StringSplit", [SPLIT_INPUT], attrs, n_outputs=2)


def test_string_split_keeps_input_shape_and_handles_empty():
    x = strings("a b", "c", "d e f", "", shape=(2, 2))
    y, z = compare_with_ort("StringSplit", [x], {}, n_outputs=2)
    assert y.shape == (2, 2, 3) and z.tolist() == [[2, 1], [3, 0]]
    y, z = run_edgeinfer("StringSplit", [strings()], {"delimiter": ","}, n_outputs=2)
    assert y.shape == (0, 0) and z.shape == (0,)


def test_string_split_rejects_negative_maxsplit():
    with pytest.raises(EdgeInferError, match="StringSplit node 'n0': maxsplit"):
        run_edgeinfer("StringSplit", [strings("a")], {"maxsplit": -1}, n_outputs=2)


# -------------------------------------------------------------------- StringNormalizer
WORDS = strings("Monday", "tuesday", "MONDAY", "Straße", "wednesday", "Ünïcode", "İSTANBUL", "İstanbul")


@pytest.mark.parametrize("attrs", [
    {},
    {"case_change_action": "LOWER"},
    {"case_change_action": "UPPER", "stopwords": ["monday"]},
    {"case_change_action": "LOWER", "stopwords": ["monday"], "is_case_sensitive": 1},
    {"stopwords": ["MONDAY", "ünïcode"], "is_case_sensitive": 0},
    {"case_change_action": "LOWER", "stopwords": ["İstanbul"]},
])
@pytest.mark.parametrize("two_dims", [False, True])
@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_string_normalizer(attrs, two_dims, locale):
    # ß has no one-character upper case and stays; "C" maps ASCII letters only
    x = WORDS.reshape(1, -1) if two_dims else WORDS
    compare_with_ort("StringNormalizer", [x], {**attrs, "locale": locale})


def test_string_normalizer_maps_case_one_character_at_a_time():
    (y,) = run_edgeinfer("StringNormalizer", [strings("Straße", "İx", "ﬁne")], {"case_change_action": "UPPER"})
    assert y.tolist() == ["STRAßE", "İX", "ﬁNE"]
    (y,) = run_edgeinfer("StringNormalizer", [strings("Straße", "İx")], {"case_change_action": "LOWER"})
    assert y.tolist() == ["straße", "ix"]


@pytest.mark.parametrize("shape", [(2,), (1, 2)])
def test_string_normalizer_all_dropped_gives_one_empty_string(shape):
    x = strings("stop", "STOP", shape=shape)
    (y,) = compare_with_ort("StringNormalizer", [x], {"stopwords": ["stop"], "locale": "C.UTF-8"})
    assert y.tolist() == ([""] if len(shape) == 1 else [[""]])


def test_string_normalizer_errors():
    with pytest.raises(EdgeInferError, match="StringNormalizer node 'n0': X must have shape"):
        run_edgeinfer("StringNormalizer", [strings("a", "b", shape=(2, 1))])
    with pytest.raises(EdgeInferError, match="case_change_action"):
        run_edgeinfer("StringNormalizer", [strings("a")], {"case_change_action": "TITLE"})
    with pytest.raises(EdgeInferError, match="locale 'tr_TR'"):
        run_edgeinfer("StringNormalizer", [strings("a")], {"locale": "tr_TR", "case_change_action": "UPPER"})
    with pytest.raises(KernelError, match="StringNormalizer node 'n0'"):
        run_edgeinfer("StringNormalizer", [strings("a", "b", shape=(2, 1))], shapes_known=False)


# ---------------------------------------------------------------------- RegexFullMatch
@pytest.mark.parametrize("pattern, values", [
    (r"www\.[\w.-]+\.\bcom\b", ["www.google.com", "www.bbc.co.uk", "www.x.com.au"]),
    (r"[a-z]+\d{2,3}", ["abc12", "abc1", "ABC123", "x999", ""]),
    (r"(?i)hello|bye", ["HeLLo", "bye", "hello bye"]),
    (r"\d+\z", ["123", "12a", ""]),
    (r"", ["", "a"]),
])
def test_regex_full_match(pattern, values):
    compare_with_ort("RegexFullMatch", [strings(*values)], {"pattern": pattern})


def test_regex_full_match_keeps_shape():
    x = strings("a", "bb", "ab", "", shape=(2, 2))
    (y,) = compare_with_ort("RegexFullMatch", [x], {"pattern": "a*"})
    assert y.tolist() == [[True, False], [False, True]]


def test_regex_full_match_errors():
    with pytest.raises(EdgeInferError, match="RegexFullMatch node 'n0': invalid pattern"):
        run_edgeinfer("RegexFullMatch", [strings("a")], {"pattern": "(a"})
    with pytest.raises(EdgeInferError, match=r"RE2 construct '\\\\Q'"):
        run_edgeinfer("RegexFullMatch", [strings("a")], {"pattern": r"\Qa.b\E"})
    with pytest.raises(EdgeInferError, match="required attribute 'pattern'"):
        run_edgeinfer("RegexFullMatch", [strings("a")])


# --------------------------------------------------------------------- TfIdfVectorizer
INT_POOL = dict(ngram_counts=[0, 4], ngram_indexes=[0, 1, 2, 3, 4, 5, 6],
                pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 6, 7])
WEIGHTS = [0.5, 1.5, 2.0, 0.25, 3.0, 1.0, 0.75]
TOKENS = np.array([1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8, 2, 5, 6], np.int64)


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("grams", [(1, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("skip", [0, 1, 3])
@pytest.mark.parametrize("batch", [False, True])
def test_tfidf_int_pool(mode, grams, skip, batch):
    x = TOKENS[:12].reshape(2, 6) if batch else TOKENS
    attrs = dict(INT_POOL, mode=mode, min_gram_length=grams[0], max_gram_length=grams[1], max_skip_count=skip)
    if mode != "TF":
        attrs["weights"] = WEIGHTS
    compare_with_ort("TfIdfVectorizer", [x.astype(np.int32)], attrs)
    compare_with_ort("TfIdfVectorizer", [x], attrs)


@pytest.mark.parametrize("skip", [0, 2])
def test_tfidf_string_pool_with_trigrams_and_sparse_indexes(skip):
    pool = ["the", "cat", "sat", "the", "cat", "cat", "sat", "the", "cat", "sat"]  # 3 unigrams, 2 bigrams, 1 trigram
    attrs = dict(mode="TFIDF", min_gram_length=1, max_gram_length=3, max_skip_count=skip, ngram_counts=[0, 3, 7],
                 ngram_indexes=[9, 0, 4, 2, 7, 5], pool_strings=pool, weights=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    x = strings("the", "cat", "sat", "on", "the", "mat", "the", "cat", "sat", "cat")
    (y,) = compare_with_ort("TfIdfVectorizer", [x], attrs)
    assert y.shape == (10,)


def test_tfidf_counts_by_hand():
    # pool: unigram 7 and bigram (7, 8). In 7 0 8 7 8 the bigram occurs once adjacent (3-4) and
    # once with one token skipped (0-2); skipping two tokens finds none; unigrams count once.
    attrs = dict(mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=2, ngram_counts=[0, 1],
                 ngram_indexes=[1, 0], pool_int64s=[7, 7, 8])
    (y,) = run_edgeinfer("TfIdfVectorizer", [np.array([7, 0, 8, 7, 8], np.int64)], attrs)
    assert y.tolist() == [2.0, 2.0]
    (y,) = run_edgeinfer("TfIdfVectorizer", [np.array([7, 0, 8, 7, 8], np.int64)], {**attrs, "max_skip_count": 0})
    assert y.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("attrs, message", [
    (dict(pool_int64s=[1], pool_strings=["a"]), "exactly one of pool_int64s and pool_strings"),
    (dict(pool_int64s=[1, 2, 3], ngram_counts=[0, 2]), "does not split a pool"),
    (dict(pool_int64s=[1, 2], ngram_counts=[0], ngram_indexes=[0]), "ngram_indexes has 1 entries"),
    (dict(pool_int64s=[1, 2], ngram_counts=[0], ngram_indexes=[0, 1], weights=[1.0]), "weights has 1 entries"),
    (dict(pool_int64s=[1], ngram_counts=[0], ngram_indexes=[0], mode="BM25"), "mode must be one of"),
    (dict(pool_int64s=[1], ngram_counts=[0], ngram_indexes=[0], min_gram_length=2, max_gram_length=1),
     "min_gram_length"),
    (dict(pool_strings=["a"], ngram_counts=[0], ngram_indexes=[0]), "X is int64 but the pool needs string"),
])
def test_tfidf_errors(attrs, message):
    base = dict(mode="TF", min_gram_length=1, max_gram_length=1, max_skip_count=0, ngram_counts=[0], ngram_indexes=[0])
    with pytest.raises(EdgeInferError, match=f"TfIdfVectorizer node 'n0': .*{message}"):
        run_edgeinfer("TfIdfVectorizer", [np.array([1, 2], np.int64)], {**base, **attrs})


def test_tfidf_rejects_3d_input():
    attrs = dict(mode="TF", min_gram_length=1, max_gram_length=1, max_skip_count=0, ngram_counts=[0],
                 ngram_indexes=[0], pool_int64s=[1])
    with pytest.raises(EdgeInferError, match="1-D .* or 2-D"):
        run_edgeinfer("TfIdfVectorizer", [np.zeros((1, 2, 3), np.int64)], attrs)
