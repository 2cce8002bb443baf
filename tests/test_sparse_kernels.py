"""Sparse weight kernels (edgeinfer.kernels.sparse) against the dense product, and the sanity of
the measured decision rule. No timing here: the speed evidence is benchmarks/sparse_kernels.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeinfer.errors import InputError
from edgeinfer.kernels import sparse as sk


def _pruned(rng, n, k, sparsity, dtype=np.float32):
    w = rng.standard_normal((n, k)).astype(dtype)
    w[rng.random(w.shape) < sparsity] = 0
    return w


def _all_products(x, w):
    csr = sk.CsrWeight.from_dense(w)
    out = {
        "csr": sk.csr_matmul(x, csr),
        "colblock": sk.colblock_matmul(x, sk.ColumnBlockedCsr.from_dense(w, 64)),
        "compact": sk.compact_matmul(x, sk.CompactWeight.from_dense(w)),
    }
    if x.shape[0] == 1:
        out["bincount"] = sk.coo_bincount_matvec(x, csr, sk.csr_row_ids(csr))
    return out


@pytest.mark.parametrize("shape", [(64, 100), (300, 257), (17, 1)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("m", [1, 3, 64])
def test_kernels_equal_dense(shape, sparsity, m):
    rng = np.random.default_rng(hash((shape, sparsity, m)) % 2**32)
    w = _pruned(rng, *shape, sparsity)
    x = rng.standard_normal((m, shape[1])).astype(np.float32)
    ref = x @ w.T
    for name, y in _all_products(x, w).items():
        assert y.shape == ref.shape and y.dtype == np.float32, name
        # float32 sums in another order: elementwise rtol, plus atol at the output's scale for
        # entries that cancel to near zero
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()), err_msg=name)


def test_empty_rows_and_columns_give_zeros():
    """Rows with no nonzero must come out 0 (reduceat over an empty segment would not), and the
    compact form must actually drop them."""
    rng = np.random.default_rng(1)
    w = _pruned(rng, 40, 30, 0.7)
    w[[0, 5, 39]] = 0
    w[:, [2, 3, 29]] = 0
    x = rng.standard_normal((5, 30)).astype(np.float32)
    for name, y in _all_products(x, w).items():
        np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5, err_msg=name)
        assert not y[:, [0, 5, 39]].any(), name
    comp = sk.CompactWeight.from_dense(w)
    assert comp.w_t.shape == (27, 37)
    zero = np.zeros((4, 6), np.float32)
    for name, y in _all_products(np.ones((2, 6), np.float32), zero).items():
        assert y.shape == (2, 4) and not y.any(), name


def test_csr_chunking_matches(monkeypatch):
    """Batch > 1 splits the (nnz, M) temporary into row groups; a tiny budget forces many,
    including groups of a single row longer than the budget."""
    monkeypatch.setattr(sk, "_CHUNK_ELEMENTS", 50)
    rng = np.random.default_rng(2)
    w = _pruned(rng, 33, 200, 0.6)
    x = rng.standard_normal((8, 200)).astype(np.float32)
    np.testing.assert_allclose(sk.csr_matmul(x, sk.CsrWeight.from_dense(w)), x @ w.T, rtol=1e-5, atol=1e-5)


def test_float64_stays_float64():
    rng = np.random.default_rng(3)
    w = _pruned(rng, 20, 30, 0.9, np.float64)
    x = rng.standard_normal((1, 30))
    for name, y in _all_products(x, w).items():
        assert y.dtype == np.float64, name
        np.testing.assert_allclose(y, x @ w.T, rtol=1e-12, atol=1e-12, err_msg=name)


def test_bad_inputs_are_reported():
    w = np.zeros((4, 6), np.float32)
    with pytest.raises(InputError, match=r"\[N, K\]"):
        sk.CsrWeight.from_dense(np.zeros(6, np.float32))
    with pytest.raises(InputError, match=r"\[M, 6\], got \[2, 5\]"):
        sk.csr_matmul(np.zeros((2, 5), np.float32), sk.CsrWeight.from_dense(w))
    csr = sk.CsrWeight.from_dense(w)
    with pytest.raises(InputError, match="batch must be 1"):
        sk.coo_bincount_matvec(np.zeros((2, 6), np.float32), csr, sk.csr_row_ids(csr))


DIMS = (16, 64, 256, 1024, 4096, 16384)


def test_rule_never_sparse_below_half():
    for n in DIMS:
        for k in DIMS:
            for m in (1, 2, 8, 64, 512):
                for s in np.linspace(0.0, 0.5, 11):
                    assert not sk.use_sparse((n, k), float(s), m), (n, k, s, m)


def test_rule_is_monotonic():
    """More zeros never turns sparse off; a bigger batch never turns it on (BLAS amortizes the
    weight over the batch, the gather kernels do not)."""
    sps = np.linspace(0.0, 0.999, 40)
    for n in DIMS:
        for k in DIMS:
            for m in (1, 2, 8, 64):
                flags = [sk.use_sparse((n, k), float(s), m) for s in sps]
                assert flags == sorted(flags), (n, k, m)
            for s in (0.9, 0.95, 0.99, 0.999):
                flags = [sk.use_sparse((n, k), s, m) for m in (1, 2, 4, 8, 16, 64, 256)]
                assert flags == sorted(flags, reverse=True), (n, k, s)


# ------------------------------------------------------------------ the cpu backend hook
import edgeinfer  # noqa: E402
from edgeinfer.converters.prune import prune_magnitude  # noqa: E402
from edgeinfer.graph import Graph, Node, ValueInfo  # noqa: E402
from edgeinfer.kernels import nn  # noqa: E402

EXAMPLES = Path(edgeinfer.__file__).parent / "examples"


@pytest.fixture
def csr_calls(monkeypatch):
    """Counts the Gemm kernel's calls into the CSR product, so a test knows the hook fired."""
    calls = []

    def counting(x, w):
        calls.append(w.shape)
        return sk.csr_matmul(x, w)

    monkeypatch.setattr(nn, "csr_matmul", counting)
    return calls


def _logits(graph, x):
    return edgeinfer.Session(graph, backend="cpu").run({"image": x})["logits"]


@pytest.mark.parametrize("batch", [1, 7])
def test_pruned_digits_sparse_equals_dense(monkeypatch, csr_calls, batch):
    """The bundled digits CNN pruned to 95%: its fc Gemm (10x256) is too small for the measured
    rule, so the rule is forced on to run the CSR path and compared with the dense run."""
    g = prune_magnitude(edgeinfer.load(EXAMPLES / "digits_cnn.onnx"), 0.95, min_elements=64)
    x = np.load(EXAMPLES / "digits_test.npz")["images"][:batch]
    monkeypatch.setattr(sk, "use_sparse", lambda shape, sparsity, batch: False)
    dense = _logits(g, x)
    assert csr_calls == []
    monkeypatch.setattr(sk, "use_sparse", lambda shape, sparsity, batch: sparsity >= 0.5)
    sparse = _logits(g, x)
    assert csr_calls == [(10, 256)]
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)


def _fc_graph(w, b, batch, alpha=1.0, trans_b=1):
    return Graph(inputs=[ValueInfo("x", "float32", (batch, w.shape[1] if trans_b else w.shape[0]))],
                 outputs=[ValueInfo("y", "float32", None)],
                 nodes=[Node("Gemm", ("x", "w", "b"), ("y",), {"transB": trans_b, "alpha": alpha})],
                 constants={"w": w, "b": b}, opset={"": 17})


@pytest.mark.parametrize("trans_b,alpha", [(1, 1.0), (0, 0.5)])
def test_rule_picks_csr_for_very_sparse_fc_and_matches_dense(csr_calls, trans_b, alpha):
    """A 1024x1024 FC layer at 99.5% sparsity, batch 1: the real rule says sparse, and the
    output equals numpy's dense product; at batch 64 the rule keeps it dense."""
    rng = np.random.default_rng(4)
    w = _pruned(rng, 1024, 1024, 0.995)
    b = rng.standard_normal(1024).astype(np.float32)
    wb = w if trans_b else np.ascontiguousarray(w.T)
    for batch, expect in ((1, [(1024, 1024)]), (64, [])):
        csr_calls.clear()
        x = rng.standard_normal((batch, 1024)).astype(np.float32)
        y = edgeinfer.Session(_fc_graph(wb, b, batch, alpha, trans_b), backend="cpu").run({"x": x})["y"]
        assert csr_calls == expect
        ref = alpha * (x @ w.T) + b
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
