"""Losses (losses.py), the miscellaneous ops (misc.py), signed BitShift and training-mode
BatchNormalization against ONNX Runtime where it has the op, else against hand-computed
references; and their errors, which name the node."""
import numpy as np
import pytest

from edgeinfer.errors import GraphError, KernelError, ShapeInferenceError
from opcheck import check_node, run_edgeinfer

RTOL, ATOL = 1e-5, 1e-6


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed + 7 * len(shape) + sum(shape)).standard_normal(shape).astype(dtype)


def i64(*v):
    return np.array(v, np.int64)


# ------------------------------------------------------------------------- losses
def _targets(shape, classes, ignore_index, seed=0):
    t = np.random.default_rng(seed).integers(0, classes, shape).astype(np.int64)
    if ignore_index is not None:
        t.reshape(-1)[::3] = ignore_index
    return t


@pytest.mark.parametrize("op,opset", [("NegativeLogLikelihoodLoss", 22), ("SoftmaxCrossEntropyLoss", 21)])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), (2, 3, 2, 2)])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 1, -5])
def test_losses_match_ort(op, opset, shape, reduction, weighted, ignore_index):
    x = rand(*shape)
    target = _targets((shape[0],) + shape[2:], shape[1], ignore_index)
    inputs = [x, target] + ([np.abs(rand(shape[1], seed=3)) + 0.1] if weighted else [])
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    check_node(op, inputs, attrs, opset=opset, rtol=1e-5, atol=1e-5)
    if op == "SoftmaxCrossEntropyLoss":
        check_node(op, inputs, attrs, n_outputs=2, opset=opset, rtol=1e-5, atol=1e-5)


def test_nll_loss_hand_example():
    # the worked example of the ONNX spec: weighted mean of -input[n, target, d]
    x = np.array([[[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]], [[0.0, 1.0], [2.0, 2.0], [1.0, 2]]], np.float32)
    target = np.array([[2, 1], [0, 2]], np.int64)
    weight = np.array([0.2, 0.3, 0.1], np.float32)
    (mean,) = run_edgeinfer("NegativeLogLikelihoodLoss", [x, target, weight])
    np.testing.assert_allclose(mean, -1.1 / 0.7, rtol=1e-6)
    (none,) = run_edgeinfer("NegativeLogLikelihoodLoss", [x, target], {"reduction": "none"})
    np.testing.assert_array_equal(none, [[-3, -2], [-0, -2]])


def test_losses_in_float64_and_float16():
    x64, target = rand(3, 4, 5, dtype=np.float64), _targets((3, 5), 4, None)
    (want,) = run_edgeinfer("SoftmaxCrossEntropyLoss", [x64.astype(np.float32), target])
    (got64,) = run_edgeinfer("SoftmaxCrossEntropyLoss", [x64, target])
    (got16,) = run_edgeinfer("SoftmaxCrossEntropyLoss", [x64.astype(np.float16), target])
    assert got64.dtype == np.float64 and got16.dtype == np.float16
    np.testing.assert_allclose(got64, want, rtol=1e-6)
    np.testing.assert_allclose(got16.astype(np.float32), want, rtol=2e-3)


def test_mean_loss_of_all_ignored_samples_is_nan():
    target = np.full((2,), 3, np.int64)
    (got,) = run_edgeinfer("NegativeLogLikelihoodLoss", [rand(2, 4), target], {"ignore_index": 3})
    assert np.isnan(got)


def test_loss_errors_name_the_node():
    x, t = rand(2, 3, 4), _targets((2, 4), 3, None)
    with pytest.raises(ShapeInferenceError, match="n0.*reduction"):
        run_edgeinfer("NegativeLogLikelihoodLoss", [x, t], {"reduction": "avg"})
    with pytest.raises(ShapeInferenceError, match="n0.*target of shape"):
        run_edgeinfer("SoftmaxCrossEntropyLoss", [x, t[:, :3]])
    with pytest.raises(ShapeInferenceError, match="n0.*int32 or int64"):
        run_edgeinfer("NegativeLogLikelihoodLoss", [x, t.astype(np.float32)])
    with pytest.raises(ShapeInferenceError, match="n0.*weight"):
        run_edgeinfer("NegativeLogLikelihoodLoss", [x, t, rand(4)])
    t[0, 0] = 7
    with pytest.raises(KernelError, match="n0.*target value 7"):
        run_edgeinfer("NegativeLogLikelihoodLoss", [x, t])
    with pytest.raises(KernelError, match="n0.*target of shape"):
        run_edgeinfer("NegativeLogLikelihoodLoss", [x, t[:, :2]], shapes_known=False)


# ----------------------------------------------------------------- normalizations
@pytest.mark.parametrize("shape,axis,scale_shape", [
    ((2, 3, 4), -1, (4,)), ((2, 3, 4), 1, (3, 4)), ((2, 3, 4), 0, (2, 3, 4)), ((5, 6), -2, (1, 6)),
])
def test_rms_norm(shape, axis, scale_shape):
    check_node("RMSNormalization", [rand(*shape), rand(*scale_shape, seed=1)], {"axis": axis, "epsilon": 1e-3},
               opset=23, rtol=1e-5, atol=1e-5)


def test_rms_norm_float16_computes_in_float32():
    x, s = rand(4, 8), rand(8, seed=1)
    (want,) = run_edgeinfer("RMSNormalization", [x, s])
    (got,) = run_edgeinfer("RMSNormalization", [x.astype(np.float16), s.astype(np.float16)])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3)


def test_rms_norm_errors():
    with pytest.raises(ShapeInferenceError, match="n0.*stash_type"):
        run_edgeinfer("RMSNormalization", [rand(2, 3), rand(3)], {"stash_type": 7})
    with pytest.raises(ShapeInferenceError, match="n0.*axis 2"):
        run_edgeinfer("RMSNormalization", [rand(2, 3), rand(3)], {"axis": 2})
    with pytest.raises(ShapeInferenceError, match="n0.*scale"):
        run_edgeinfer("RMSNormalization", [rand(2, 3), rand(2, 3)], {"axis": -1})


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_lp_norm(p, axis):
    check_node("LpNormalization", [rand(3, 4, 5)], {"p": p, "axis": axis}, opset=22)


def test_lp_norm_of_zero_slice_is_zero():
    x = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    (got,) = run_edgeinfer("LpNormalization", [x], {"axis": 1})
    np.testing.assert_allclose(got, [[0, 0], [0.6, 0.8]])
    with pytest.raises(ShapeInferenceError, match="n0.*p must be 1 or 2"):
        run_edgeinfer("LpNormalization", [x], {"p": 3})


# ------------------------------------------------------------------ Swish, SwiGLU
@pytest.mark.parametrize("alpha", [1.0, 1.702, -0.5])
def test_swish(alpha):
    check_node("Swish", [rand(3, 5) * 4], {"alpha": alpha}, opset=24, rtol=1e-5, atol=1e-6)
    # far tails: no overflow, and full relative precision where ONNX Runtime's sigmoid loses it
    x = np.array([-200.0, -30.0, -5.0, 0.0, 5.0, 30.0, 200.0], np.float32)
    (got,) = run_edgeinfer("Swish", [x], {"alpha": alpha})
    xd = x.astype(np.float64)
    np.testing.assert_allclose(got, xd / (1 + np.exp(-alpha * xd)), rtol=1e-5, atol=1e-30)


def _swiglu_reference(a, b, alpha):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return a / (1 + np.exp(-alpha * a)) * b


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-12), (np.float16, 2e-3)])
@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_swiglu(dtype, tol, alpha):
    a, b = rand(4, 6, dtype=dtype), rand(4, 6, seed=1, dtype=dtype)
    (got,) = run_edgeinfer("SwiGLU", [a, b], {"alpha": alpha})
    assert got.dtype == dtype
    np.testing.assert_allclose(got.astype(np.float64), _swiglu_reference(a, b, alpha), rtol=tol, atol=tol)


def test_swiglu_does_not_broadcast():
    with pytest.raises(ShapeInferenceError, match="n0.*same shape"):
        run_edgeinfer("SwiGLU", [rand(2, 3), rand(1, 3)])
    with pytest.raises(KernelError, match="n0.*same shape"):
        run_edgeinfer("SwiGLU", [rand(2, 3), rand(1, 3)], shapes_known=False)


# ------------------------------------------------------------------------ CumProd
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_cum_prod(exclusive, reverse, axis, dtype):
    x = np.random.default_rng(2).integers(-3, 4, (3, 4, 2)).astype(dtype)
    check_node("CumProd", [x, np.array(axis, np.int32)], {"exclusive": exclusive, "reverse": reverse},
               const_inputs=(1,), opset=26)


def test_cum_prod_axis_errors():
    with pytest.raises(ShapeInferenceError, match="n0.*axis 3"):
        run_edgeinfer("CumProd", [rand(2, 3), i64(3)], const_inputs=(1,))
    with pytest.raises(KernelError, match="n0.*axis 3"):
        run_edgeinfer("CumProd", [rand(2, 3), i64(3)])


# ------------------------------------------------------------------------- Unique
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("sorted_", [1, 0])
def test_unique(axis, sorted_):
    x = np.array([[2, 1, 2, 1], [0, 3, 0, 3], [2, 1, 2, 1], [5, 3, 5, 4]], np.float32)
    attrs = {"sorted": sorted_} if axis is None else {"sorted": sorted_, "axis": axis}
    check_node("Unique", [x], attrs, n_outputs=4)


def test_unique_spec_example_unsorted():
    x = np.array([2, 1, 1, 3, 4, 3], np.int64)
    y, first, inverse, counts = run_edgeinfer("Unique", [x], {"sorted": 0}, n_outputs=4)
    assert y.tolist() == [2, 1, 3, 4] and first.tolist() == [0, 1, 3, 4]
    assert inverse.tolist() == [0, 1, 1, 2, 3, 2] and counts.tolist() == [1, 2, 2, 1]


def test_unique_of_strings_along_an_axis():
    x = np.array([["b", "a"], ["a", "a"], ["b", "a"]], dtype=object)
    y, first, inverse, counts = run_edgeinfer("Unique", [x], {"axis": 0}, n_outputs=4)
    assert y.tolist() == [["a", "a"], ["b", "a"]]
    assert first.tolist() == [1, 0] and inverse.tolist() == [1, 0, 1] and counts.tolist() == [1, 2]


def test_unique_empty_and_single_output():
    (y,) = run_edgeinfer("Unique", [np.zeros((0,), np.float32)])
    assert y.shape == (0,)
    y, first, inverse, counts = run_edgeinfer("Unique", [np.zeros((3, 0), np.float32)], {"axis": 0}, n_outputs=4)
    assert y.shape == (1, 0) and counts.tolist() == [3] and inverse.tolist() == [0, 0, 0]


# ------------------------------------------------------------------ CenterCropPad
@pytest.mark.parametrize("shape,target,axes", [
    ((20, 10, 3), (10, 7, 3), None), ((10, 7, 3), (20, 10, 3), None), ((9, 8, 3), (10, 5), (0, 1)),
    ((3, 9, 8), (4, 7), (-2, -1)), ((5, 6), (5, 6), None),
])
def test_center_crop_pad(shape, target, axes):
    attrs = {} if axes is None else {"axes": list(axes)}
    check_node("CenterCropPad", [rand(*shape), i64(*target)], attrs, const_inputs=(1,), opset=21)


def test_center_crop_pad_errors():
    with pytest.raises(ShapeInferenceError, match="n0.*2 values for 3 axes"):
        run_edgeinfer("CenterCropPad", [rand(2, 3, 4), i64(2, 2)], const_inputs=(1,))
    with pytest.raises(KernelError, match="n0.*shape"):
        run_edgeinfer("CenterCropPad", [rand(2, 3, 4), i64(2, -2, 1)], shapes_known=False)


# ------------------------------------------------------------------------- Col2Im
def _col2im_reference(x, image, block, strides, pads, dilations):
    n, ck, _ = x.shape
    k = int(np.prod(block))
    c = ck // k
    nd = len(image)
    padded = [image[i] + pads[i] + pads[i + nd] for i in range(nd)]
    counts = [(padded[i] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    out = np.zeros((n, c) + tuple(padded), x.dtype)
    cols = x.reshape(n, c, k, -1)
    for kk, offset in enumerate(np.ndindex(*block)):
        for ll, pos in enumerate(np.ndindex(*counts)):
            where = tuple(p * s + o * d for p, s, o, d in zip(pos, strides, offset, dilations))
            out[(slice(None), slice(None)) + where] += cols[:, :, kk, ll]
    return out[(slice(None), slice(None)) + tuple(slice(pads[i], pads[i] + image[i]) for i in range(nd))]


@pytest.mark.parametrize("image,block,attrs", [
    ((5, 5), (1, 5), {}),
    ((5, 5), (3, 3), {"strides": [2, 2]}),
    ((5, 5), (1, 5), {"pads": [0, 1, 0, 1]}),
    ((6, 6), (2, 2), {"dilations": [1, 5]}),
    ((7, 6), (3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [2, 1]}),
])
def test_col2im_2d(image, block, attrs):
    nd = len(image)
    counts = [(image[i] + (attrs.get("pads") or [0] * 4)[i] + (attrs.get("pads") or [0] * 4)[i + nd]
               - (attrs.get("dilations") or [1, 1])[i] * (block[i] - 1) - 1) // (attrs.get("strides") or [1, 1])[i] + 1
              for i in range(nd)]
    x = rand(2, 3 * int(np.prod(block)), int(np.prod(counts)))
    check_node("Col2Im", [x, i64(*image), i64(*block)], attrs, const_inputs=(1, 2), opset=21)


def test_col2im_3d_against_reference():
    image, block = (3, 4, 5), (1, 2, 2)
    strides, pads, dilations = [1, 2, 1], [0, 1, 0, 0, 0, 1], [1, 1, 2]
    counts = [(image[i] + pads[i] + pads[i + 3] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(3)]
    x = rand(1, 2 * 4, int(np.prod(counts)), dtype=np.float64)
    attrs = {"strides": strides, "pads": pads, "dilations": dilations}
    (got,) = run_edgeinfer("Col2Im", [x, i64(*image), i64(*block)], attrs, const_inputs=(1, 2))
    np.testing.assert_allclose(got, _col2im_reference(x, image, block, strides, pads, dilations))


def test_col2im_errors():
    with pytest.raises(ShapeInferenceError, match="n0.*blocks"):
        run_edgeinfer("Col2Im", [rand(1, 4, 7), i64(3, 3), i64(2, 2)], const_inputs=(1, 2))
    with pytest.raises(ShapeInferenceError, match="n0.*multiple"):
        run_edgeinfer("Col2Im", [rand(1, 5, 4), i64(3, 3), i64(2, 2)], const_inputs=(1, 2))
    with pytest.raises(KernelError, match="n0.*strides"):
        run_edgeinfer("Col2Im", [rand(1, 4, 4), i64(3, 3), i64(2, 2)], {"strides": [1]})


# ------------------------------------------------------------------------ BitCast
@pytest.mark.parametrize("src,dst", [
    (np.float32, "int32"), (np.int32, "float32"), (np.float64, "uint64"), (np.uint16, "float16"),
    (np.int8, "uint8"), (np.bool_, "uint8"), (np.complex64, "int64"),
])
def test_bitcast(src, dst):
    x = np.random.default_rng(0).integers(0, 2, (2, 3)).astype(src) if src is np.bool_ else rand(2, 3).astype(src)
    (got,) = run_edgeinfer("BitCast", [x], {"to": dst})
    assert got.dtype == np.dtype(dst) and got.shape == x.shape
    assert got.tobytes() == x.tobytes()


def test_bitcast_width_mismatch():
    with pytest.raises(ShapeInferenceError, match="n0.*float32.*32 bits.*int64.*64 bits"):
        run_edgeinfer("BitCast", [rand(3)], {"to": "int64"})
    with pytest.raises(ShapeInferenceError, match="n0.*not an IR dtype"):
        run_edgeinfer("BitCast", [rand(3)], {"to": "float128"})


# ------------------------------------------------------------------ TensorScatter
@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("axis,past_shape,seq", [(-2, (2, 3, 6, 4), 2), (1, (3, 5, 2), 3), (2, (2, 1, 4, 3), 1)])
def test_tensor_scatter(mode, axis, past_shape, seq):
    past = rand(*past_shape)
    upd_shape = list(past_shape)
    upd_shape[axis] = seq
    update = rand(*upd_shape, seed=1)
    a = axis % len(past_shape)
    top = past_shape[a] - seq if mode == "linear" else past_shape[a]
    write = np.random.default_rng(3).integers(0, top + 1, past_shape[0]).astype(np.int64)
    check_node("TensorScatter", [past, update, write], {"axis": axis, "mode": mode}, opset=24)
    if mode == "linear":
        check_node("TensorScatter", [past, update], {"axis": axis}, opset=24)


def test_tensor_scatter_errors():
    past, update = rand(2, 4, 3), rand(2, 2, 3)
    with pytest.raises(KernelError, match="n0.*run past"):
        run_edgeinfer("TensorScatter", [past, update, i64(0, 3)], {"axis": 1})
    with pytest.raises(ShapeInferenceError, match="n0.*mode"):
        run_edgeinfer("TensorScatter", [past, update, i64(0, 0)], {"axis": 1, "mode": "ring"})
    with pytest.raises(ShapeInferenceError, match="n0.*batch"):
        run_edgeinfer("TensorScatter", [past, update, i64(0, 0)], {"axis": 0})
    with pytest.raises(ShapeInferenceError, match="n0.*does not fit"):
        run_edgeinfer("TensorScatter", [past, rand(2, 5, 3), i64(0, 0)], {"axis": 1})


# -------------------------------------------------------------- random generators
def test_bernoulli_shape_dtype_and_values():
    p = np.random.default_rng(0).uniform(0, 1, (50, 40))
    p[0] = 0.0
    p[1] = 1.0
    (y,) = run_edgeinfer("Bernoulli", [p])
    assert y.dtype == np.float64 and y.shape == p.shape
    assert set(np.unique(y)) <= {0.0, 1.0} and not y[0].any() and y[1].all()
    assert abs(y[2:].mean() - p[2:].mean()) < 0.05
    (b,) = run_edgeinfer("Bernoulli", [p.astype(np.float32)], {"dtype": "bool"})
    assert b.dtype == np.bool_


def test_random_ops_honour_the_seed():
    p = np.full((100,), 0.5, np.float32)
    assert np.array_equal(run_edgeinfer("Bernoulli", [p], {"seed": 3.0})[0],
                          run_edgeinfer("Bernoulli", [p], {"seed": 3.0})[0])
    assert not np.array_equal(run_edgeinfer("Bernoulli", [p], {"seed": 3.0})[0],
                              run_edgeinfer("Bernoulli", [p], {"seed": 4.0})[0])
    x = np.zeros((4, 5), np.int32)
    a = run_edgeinfer("RandomUniformLike", [x], {"seed": 1.5, "dtype": "float32", "low": -2.0, "high": 3.0})[0]
    b = run_edgeinfer("RandomUniformLike", [x], {"seed": 1.5, "dtype": "float32", "low": -2.0, "high": 3.0})[0]
    assert np.array_equal(a, b) and a.dtype == np.float32 and a.shape == x.shape
    assert a.min() >= -2.0 and a.max() <= 3.0


def test_random_uniform_like_dtype_from_input_and_errors():
    (y,) = run_edgeinfer("RandomUniformLike", [np.zeros((3, 2), np.float16)])
    assert y.dtype == np.float16 and ((y >= 0) & (y <= 1)).all()
    with pytest.raises(ShapeInferenceError, match="n0.*not a float type"):
        run_edgeinfer("RandomUniformLike", [np.zeros(3, np.int64)])
    with pytest.raises(ShapeInferenceError, match="n0.*low"):
        run_edgeinfer("RandomUniformLike", [rand(3)], {"low": 2.0, "high": 1.0})
    with pytest.raises(ShapeInferenceError, match="n0.*dtype"):
        run_edgeinfer("Bernoulli", [np.zeros(3, np.int64)])


# ----------------------------------------------------------------------- BitShift
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bit_shift_out_of_range_counts(dtype, direction):
    bits = np.dtype(dtype).itemsize * 8
    signed = np.dtype(dtype).kind == "i"
    x = np.array([-8, 4, -1, 5, 3] if signed else [8, 4, 255, 5, 3]).astype(dtype)
    y = np.array([bits, bits + 1, 127 if bits == 8 else 1000, -1 if signed else 2 * bits, 1]).astype(dtype)
    (got,) = run_edgeinfer("BitShift", [x, y], {"direction": direction})
    assert got.dtype == dtype
    # every count but the last is out of range: sign fill for signed right shifts, else 0
    fill = [-1, 0, -1, 0] if signed and direction == "RIGHT" else [0, 0, 0, 0]
    last = (x[-1] << 1) if direction == "LEFT" else (x[-1] >> 1)
    assert got.tolist() == fill + [int(last)]


def test_bit_shift_signed_semantics_and_broadcasting():
    x = np.array([[-8, -1, -128], [64, 1, -64]], np.int8)
    (right,) = run_edgeinfer("BitShift", [x, np.array([1], np.int8)], {"direction": "RIGHT"})
    assert right.tolist() == [[-4, -1, -64], [32, 0, -32]]
    (left,) = run_edgeinfer("BitShift", [x, np.array([[1], [7]], np.int8)], {"direction": "LEFT"})
    assert left.tolist() == [[-16, -2, 0], [0, -128, 0]]  # bits past the sign bit are dropped
    with pytest.raises(ShapeInferenceError, match="n0.*BitShift accepts"):
        run_edgeinfer("BitShift", [rand(2), rand(2)], {"direction": "LEFT"})


def test_bit_shift_unsigned_matches_ort():
    x = np.array([16, 4, 1, 255], np.uint8)
    check_node("BitShift", [x, np.array([1, 2, 3, 7], np.uint8)], {"direction": "RIGHT"})


# ------------------------------------------------------- BatchNormalization training
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3), (2, 3, 7)])
@pytest.mark.parametrize("momentum", [0.9, 0.3])
def test_batch_norm_training_mode(shape, momentum):
    c = shape[1]
    params = [rand(c, seed=1), rand(c, seed=2), rand(c, seed=3), np.abs(rand(c, seed=4)) + 0.1]
    attrs = {"training_mode": 1, "momentum": momentum, "epsilon": 1e-3}
    check_node("BatchNormalization", [rand(*shape)] + params, attrs, n_outputs=3, opset=15, rtol=1e-4, atol=1e-5)


def test_batch_norm_training_mode_y_only_and_errors():
    x = rand(2, 3, 4)
    params = [rand(3, seed=1), rand(3, seed=2), rand(3, seed=3), np.abs(rand(3, seed=4)) + 0.1]
    (y,) = run_edgeinfer("BatchNormalization", [x] + params, {"training_mode": 1})
    mean, var = x.mean(axis=(0, 2), keepdims=True), x.var(axis=(0, 2), keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-5) * params[0][:, None] + params[1][:, None]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeInferenceError, match="n0.*training_mode=1"):
        run_edgeinfer("BatchNormalization", [x] + params, n_outputs=3)
    with pytest.raises(ShapeInferenceError, match="n0.*training_mode must be 0 or 1"):
        run_edgeinfer("BatchNormalization", [x] + params, {"training_mode": 2})


def test_unknown_attribute_is_a_graph_error():
    with pytest.raises(GraphError, match="n0.*unknown attribute 'beta'"):
        run_edgeinfer("Swish", [rand(3)], {"beta": 1.0})


# ----------------------------------------------------------- low-precision dtypes
ml_dtypes = pytest.importorskip("ml_dtypes")


@pytest.mark.parametrize("src,dst", [("int4", "uint4"), ("float8e4m3fn", "uint8"), ("bfloat16", "int16")])
def test_bitcast_low_precision(src, dst):
    from edgeinfer import dtypes

    x = np.array([-1.0, 0.5, 2.0, -3.0]).astype(dtypes.to_numpy(src)) if src != "int4" else \
        np.array([-1, -8, 7, 0]).astype(dtypes.to_numpy(src))
    (got,) = run_edgeinfer("BitCast", [x], {"to": dst})
    assert got.dtype == dtypes.to_numpy(dst)
    assert got.view(np.uint8).tolist() == x.view(np.uint8).tolist()


def _one_node_session(op, inputs, attrs, n_outputs, opset):
    from onnx import helper

    from edgeinfer import Session

    names = [f"in{i}" for i in range(len(inputs))]
    node = helper.make_node(op, names, [f"out{i}" for i in range(n_outputs)], **attrs)
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in zip(names, inputs)]
    out_type = helper.np_dtype_to_tensor_dtype(inputs[0].dtype)  # every output here has X's type
    g_out = [helper.make_tensor_value_info(f"out{i}", out_type, None) for i in range(n_outputs)]
    model = helper.make_model(helper.make_graph([node], "g", g_in, g_out), opset_imports=[helper.make_opsetid("", opset)])
    return Session(model), dict(zip(names, inputs))


@pytest.mark.parametrize("op,extra,attrs,n_outputs,opset", [
    ("SoftmaxCrossEntropyLoss", [np.array([0, 2, 1])], {"reduction": "none"}, 2, 21),
    ("RMSNormalization", [np.ones(4)], {}, 1, 23),
    ("Swish", [], {}, 1, 24),
    ("CumProd", [np.array(1, np.int64)], {}, 1, 26),
])
def test_bfloat16_runs_in_float32_and_rounds_once(op, extra, attrs, n_outputs, opset):
    bf16 = ml_dtypes.bfloat16
    x = rand(3, 4).astype(bf16)
    extra = [e.astype(bf16) if e.dtype.kind == "f" else e for e in extra]
    sess, feeds = _one_node_session(op, [x] + extra, attrs, n_outputs, opset)
    got = sess.run(feeds)
    sess32, feeds32 = _one_node_session(op, [x.astype(np.float32)] + [e.astype(np.float32) if e.dtype == bf16 else e
                                                                     for e in extra], attrs, n_outputs, opset)
    want = sess32.run(feeds32)
    for name in want:
        assert got[name].dtype == bf16
        np.testing.assert_array_equal(got[name], want[name].astype(bf16))
