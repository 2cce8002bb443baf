"""Pooling, LRN and MaxUnpool kernels against ONNX Runtime (and the ONNX reference evaluator
where ONNX Runtime does not implement a case)."""
import numpy as np
import pytest

from edgeinfer.errors import GraphError, ShapeInferenceError
from opcheck import check_node, run_edgeinfer, run_ort

RTOL, ATOL = 1e-4, 1e-5



def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(dtype)


WINDOWS = {
    "k3": {"kernel_shape": [3, 3]},
    "k3s2": {"kernel_shape": [3, 3], "strides": [2, 2]},
    "k3s2p1": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    "k3s2ceil": {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    "k3s2p1ceil": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    "k2s2": {"kernel_shape": [2, 2], "strides": [2, 2]},
    "k2s2ceil": {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
    "k3dil2": {"kernel_shape": [3, 3], "dilations": [2, 2], "strides": [2, 1]},
    "k3dil2ceil_asym": {
        "kernel_shape": [3, 3], "dilations": [2, 2], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 0, 2, 1],
    },
    "k5s3p2": {"kernel_shape": [5, 4], "strides": [3, 3], "pads": [2, 1, 2, 2]},
    # stride 1 keeping the size: the last axis is reduced on the flattened tensor
    "k3s1p1": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    "k5s1p2": {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]},
    "k4same_s1": {"kernel_shape": [4, 4], "auto_pad": "SAME_UPPER"},
    "k3dil2s1p2": {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 2, 2, 2]},
    # ceil_mode would start a last window inside the end padding: ONNX drops that window
    "ceil_drops_pad_window": {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [0, 0, 2, 2], "ceil_mode": 1},
    "same_upper": {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
    "same_lower": {"kernel_shape": [4, 4], "auto_pad": "SAME_LOWER", "strides": [2, 2]},
    "valid": {"kernel_shape": [3, 2], "auto_pad": "VALID", "strides": [2, 3]},
}
X = rand(2, 3, 9, 10)


@pytest.mark.parametrize("window", list(WINDOWS))
def test_max_pool(window):
    check_node("MaxPool", [X], WINDOWS[window], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_with_indices(window, storage_order):
    y, idx = check_node("MaxPool", [X], {**WINDOWS[window], "storage_order": storage_order}, n_outputs=2)
    assert idx.dtype == np.int64 and idx.shape == y.shape


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_pool_window_wider_than_the_image(op):
    # every column is a border column of the flattened last-axis reduction
    check_node(op, [rand(1, 2, 3, 2)], {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}, rtol=RTOL, atol=ATOL)


def test_max_pool_indices_pick_the_first_of_tied_maxima():
    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 1, 1:3, 1:3] = 5.0
    check_node("MaxPool", [x], {"kernel_shape": [2, 2], "strides": [1, 1]}, n_outputs=2)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_max_pool_integers_pad_with_the_lowest_value(dtype):
    x = np.random.default_rng(3).integers(0, 100, (1, 2, 6, 6)).astype(dtype)
    check_node("MaxPool", [x], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]})


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool(window, count_include_pad):
    check_node("AveragePool", [X], {**WINDOWS[window], "count_include_pad": count_include_pad}, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("window", ["k3", "k3s2p1", "k2s2", "k5s3p2", "same_upper", "valid", "k3dil2ceil_asym"])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(window, p):
    check_node("LpPool", [X], {**WINDOWS[window], "p": p}, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_1d_and_3d(op):
    check_node(op, [rand(2, 3, 11)], {"kernel_shape": [3], "strides": [2], "ceil_mode": 1}, rtol=RTOL, atol=ATOL)
    check_node(op, [rand(1, 2, 5, 6, 7)], {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "pads": [1, 0, 1, 0, 1, 1]},
               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "GlobalAveragePool"])
def test_pools_float16(op):
    attrs = {} if op.startswith("Global") else {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    check_node(op, [X.astype(np.float16)], attrs, rtol=1e-3, atol=1e-3)


def test_max_pool_3d_indices():
    check_node("MaxPool", [rand(1, 2, 4, 5, 6)], {"kernel_shape": [2, 2, 3], "strides": [2, 2, 2]}, n_outputs=2)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 5, 6), (1, 2, 3, 4, 5)])
def test_global_pools(op, shape):
    check_node(op, [rand(*shape)], rtol=RTOL, atol=ATOL)


def test_global_lp_pool_p3():
    check_node("GlobalLpPool", [rand(2, 3, 4, 5)], {"p": 3}, rtol=RTOL, atol=ATOL)


def test_pools_with_unknown_shapes():
    x = rand(2, 3, 9, 9)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 0, 0]}
    for op in ("MaxPool", "AveragePool"):
        want = run_ort(op, [x], attrs)[0]
        got = run_edgeinfer(op, [x], attrs, shapes_known=False)[0]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("size,attrs", [(3, {}), (5, {"alpha": 0.01, "beta": 0.5, "bias": 2.0}), (1, {})])
def test_lrn(size, attrs):
    check_node("LRN", [rand(2, 8, 4, 5)], {"size": size, **attrs}, rtol=RTOL, atol=ATOL)


def test_lrn_even_size_follows_the_onnx_formula():
    # ONNX Runtime only implements odd sizes (and the ONNX reference evaluator loops over the
    # batch instead of the channels), so compare with the spec's formula written out per channel:
    # the window is [c - floor((size-1)/2), c + ceil((size-1)/2)]
    x = rand(2, 6, 3, 3)
    size, alpha, beta, bias = 4, 0.1, 0.6, 1.5
    want = np.empty_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - (size - 1) // 2), min(x.shape[1] - 1, c + size // 2)
        square_sum = np.sum(x[:, lo:hi + 1] ** 2, axis=1)
        want[:, c] = x[:, c] / (bias + alpha / size * square_sum) ** beta
    got = run_edgeinfer("LRN", [x], {"size": size, "alpha": alpha, "beta": beta, "bias": bias})[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape,attrs", [
    ((1, 2, 4, 4), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 3, 5, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
])
def test_max_unpool_inverts_max_pool(shape, attrs):
    y, idx = check_node("MaxPool", [rand(*shape)], attrs, n_outputs=2)
    check_node("MaxUnpool", [y, idx], attrs)


def test_max_unpool_with_output_shape():
    x = rand(1, 2, 5, 5)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    y, idx = check_node("MaxPool", [x], attrs, n_outputs=2)
    out = check_node("MaxUnpool", [y, idx, np.array(x.shape, np.int64)], attrs, const_inputs=(2,))[0]
    assert out.shape == x.shape


def test_max_unpool_rejects_out_of_range_indices():
    from edgeinfer.errors import KernelError

    y = rand(1, 1, 2, 2)
    idx = np.array([[[[0, 1], [2, 99]]]], np.int64)
    with pytest.raises(KernelError, match="n0"):
        run_edgeinfer("MaxUnpool", [y, idx], {"kernel_shape": [2, 2], "strides": [2, 2]})


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("attrs,match", [
    ({"kernel_shape": [3]}, "kernel_shape"),
    ({"kernel_shape": [3, 3], "strides": [1, 1, 1]}, "strides"),
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1]}, "pads"),
    ({"kernel_shape": [3, 3], "dilations": [0, 1]}, "dilations"),
    ({"kernel_shape": [7, 7]}, "too small"),
])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_pool_bad_attributes_name_the_node(op, attrs, match):
    with pytest.raises(ShapeInferenceError, match=match) as info:
        run_edgeinfer(op, [rand(1, 2, 5, 5)], attrs)
    assert "node 'n0'" in str(info.value)


def test_pool_without_kernel_shape_is_rejected():
    with pytest.raises(GraphError, match="kernel_shape"):
        run_edgeinfer("MaxPool", [rand(1, 2, 5, 5)], {})


def test_global_pool_needs_spatial_axes():
    with pytest.raises(ShapeInferenceError, match="rank"):
        run_edgeinfer("GlobalAveragePool", [rand(2, 3)])
