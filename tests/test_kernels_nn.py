"""Gemm, MatMul, Einsum, Det, the Softmax family, the normalizations and the fused activation
table against ONNX Runtime and numpy."""
import math

import numpy as np
import pytest

from edgeinfer.errors import GraphError, ShapeInferenceError
from edgeinfer.kernels.activations import ACTIVATIONS, erf, make_activation
from opcheck import check_node, run_edgeinfer

RTOL, ATOL = 1e-4, 1e-5



def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------------ Gemm
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (), (5,), (1, 5), (3, 1), (3, 5)])
def test_gemm(trans_a, trans_b, c_shape):
    a = rand(*((4, 3) if trans_a else (3, 4)))
    b = rand(*((5, 4) if trans_b else (4, 5)), seed=1)
    inputs = [a, b] + ([] if c_shape is None else [rand(*c_shape, seed=2)])
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": 0.5, "beta": 2.0}
    check_node("Gemm", inputs, attrs, const_inputs=(1, 2), rtol=RTOL, atol=ATOL)


def test_gemm_defaults_with_runtime_operands():
    check_node("Gemm", [rand(6, 7), rand(7, 2, seed=1), rand(2, seed=2)], const_inputs=(), rtol=RTOL, atol=ATOL)


def test_gemm_shape_errors_name_the_node():
    with pytest.raises(ShapeInferenceError, match="n0.*inner dims"):
        run_edgeinfer("Gemm", [rand(3, 4), rand(5, 6)])
    with pytest.raises(ShapeInferenceError, match="2-D"):
        run_edgeinfer("Gemm", [rand(2, 3, 4), rand(4, 6)])


# ---------------------------------------------------------------------------- MatMul
@pytest.mark.parametrize("sa,sb", [
    ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 5, 3), (3, 4)), ((2, 1, 5, 3), (4, 3, 2)),
    ((5, 3), (2, 3, 4)), ((1, 7), (7, 1)), ((2, 3, 0), (0, 4)),
])
def test_matmul_broadcasting(sa, sb):
    check_node("MatMul", [rand(*sa), rand(*sb, seed=1)], const_inputs=(1,), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64])
def test_matmul_other_dtypes(dtype):
    rng = np.random.default_rng(0)
    a, b = rng.integers(-5, 5, (3, 4)).astype(dtype), rng.integers(-5, 5, (4, 2)).astype(dtype)
    check_node("MatMul", [a, b])


def test_matmul_inner_dim_mismatch():
    with pytest.raises(ShapeInferenceError, match="inner dims"):
        run_edgeinfer("MatMul", [rand(2, 3), rand(4, 2)])


# ------------------------------------------------------------------- Einsum and Det
@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]),
    ("ii->i", [(3, 3)]),
    ("ij->", [(3, 4)]),
    ("...ij,...jk", [(2, 2, 3), (2, 3, 4)]),
    ("i,j", [(3,), (4,)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
])
def test_einsum(equation, shapes):
    check_node("Einsum", [rand(*s, seed=i) for i, s in enumerate(shapes)], {"equation": equation}, rtol=RTOL, atol=ATOL)


def test_einsum_bad_equation():
    with pytest.raises(ShapeInferenceError, match="subscripts"):
        run_edgeinfer("Einsum", [rand(2, 3)], {"equation": "ijk->i"})
    with pytest.raises(ShapeInferenceError, match="operands"):
        run_edgeinfer("Einsum", [rand(2, 3)], {"equation": "ij,jk->ik"})


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (1, 1)])
def test_det(shape):
    check_node("Det", [rand(*shape)], rtol=1e-4, atol=1e-4)


def test_det_needs_square_matrices():
    with pytest.raises(ShapeInferenceError, match="square"):
        run_edgeinfer("Det", [rand(3, 4)])


# ------------------------------------------------------------------- Softmax family
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1, 2, -3])
def test_softmax_family(op, axis):
    check_node(op, [rand(2, 3, 4, 5) * 4], {"axis": axis}, rtol=RTOL, atol=ATOL)


def test_softmax_is_stable_for_large_inputs():
    x = np.array([[1000.0, 1001.0, -1000.0]], np.float32)
    check_node("Softmax", [x], rtol=RTOL, atol=ATOL)
    check_node("LogSoftmax", [x], rtol=RTOL, atol=ATOL)


def test_hardmax_ties_pick_the_first():
    check_node("Hardmax", [np.array([[1, 3, 3, 0], [2, 2, 2, 2]], np.float32)])


def test_softmax_axis_out_of_range():
    with pytest.raises(ShapeInferenceError, match="axis"):
        run_edgeinfer("Softmax", [rand(2, 3)], {"axis": 2})


# -------------------------------------------------------------------- normalizations
def test_batch_norm_constant_and_runtime_parameters():
    x = rand(2, 3, 4, 5)
    params = [rand(3, seed=1), rand(3, seed=2), rand(3, seed=3), np.abs(rand(3, seed=4)) + 0.1]
    check_node("BatchNormalization", [x] + params, {"epsilon": 1e-3}, const_inputs=(1, 2, 3, 4), rtol=RTOL, atol=ATOL)
    check_node("BatchNormalization", [rand(4, 3)] + params, const_inputs=(), rtol=RTOL, atol=ATOL)


def test_batch_norm_bad_training_mode_is_rejected():
    x = rand(2, 3, 4)
    params = [rand(3), rand(3), rand(3), np.abs(rand(3)) + 0.1]
    with pytest.raises(ShapeInferenceError, match="n0.*training_mode"):
        run_edgeinfer("BatchNormalization", [x] + params, {"training_mode": 2})


def test_instance_norm():
    check_node("InstanceNormalization", [rand(2, 3, 4, 5), rand(3, seed=1), rand(3, seed=2)], {"epsilon": 1e-3},
               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
@pytest.mark.parametrize("with_bias", [False, True])
def test_layer_norm_with_statistics(axis, with_bias):
    x = rand(2, 3, 4, 5)
    scale_shape = x.shape[axis:]
    inputs = [x, rand(*scale_shape, seed=1)] + ([rand(*scale_shape, seed=2)] if with_bias else [])
    check_node("LayerNormalization", inputs, {"axis": axis}, n_outputs=3, rtol=RTOL, atol=ATOL)
    check_node("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-2}, rtol=RTOL, atol=ATOL)


def test_layer_norm_statistics_use_the_stash_type():
    x = rand(2, 5, dtype=np.float64)
    scale = rand(5, dtype=np.float64)
    y, mean, inv_std = run_edgeinfer("LayerNormalization", [x, scale], {"stash_type": 1}, n_outputs=3)
    assert (y.dtype, mean.dtype, inv_std.dtype) == (np.float64, np.float32, np.float32)
    np.testing.assert_allclose(mean[:, 0], x.mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("groups,eps", [(3, 1e-5), (2, 1e-2), (6, 1e-5), (1, 1e-5)])
def test_group_norm(groups, eps):
    check_node("GroupNormalization", [rand(2, 6, 4, 5), rand(6, seed=1), rand(6, seed=2)],
               {"num_groups": groups, "epsilon": eps}, rtol=RTOL, atol=ATOL)


def test_group_norm_groups_must_divide_channels():
    with pytest.raises(ShapeInferenceError, match="num_groups"):
        run_edgeinfer("GroupNormalization", [rand(1, 6, 2, 2), rand(6), rand(6)], {"num_groups": 4})


@pytest.mark.parametrize("axes", [None, [1, -1], [0, 1, 2, 3]])
def test_mean_variance_normalization(axes):
    attrs = {} if axes is None else {"axes": axes}
    check_node("MeanVarianceNormalization", [rand(2, 3, 4, 5)], attrs, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- activation table
REFERENCE = {
    "Relu": ([], lambda y: np.maximum(y, 0)),
    "LeakyRelu": ([0.1], lambda y: np.where(y < 0, 0.1 * y, y)),
    "Clip": ([-1.0, 0.5], lambda y: np.clip(y, -1.0, 0.5)),
    "HardSigmoid": ([], lambda y: np.clip(0.2 * y + 0.5, 0, 1)),
    "HardSwish": ([], lambda y: y * np.clip(y / 6 + 0.5, 0, 1)),
    "Sigmoid": ([], lambda y: 1 / (1 + np.exp(-y))),
    "Tanh": ([], np.tanh),
    "SiLU": ([], lambda y: y / (1 + np.exp(-y))),
    "Gelu": ([], lambda y: 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_applies_in_place(name):
    params, ref = REFERENCE[name]
    y = rand(4, 50) * 4
    want = ref(y.astype(np.float64))
    got = make_activation(name, params)(y)
    assert got is y and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_gelu_tanh_approximation():
    y = rand(100) * 3
    want = 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))
    np.testing.assert_allclose(make_activation("Gelu", [1])(y.copy()), want, rtol=1e-5, atol=1e-6)


def test_sigmoid_saturates_without_overflow_errors():
    y = np.array([-1000.0, 0.0, 1000.0], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_array_equal(make_activation("Sigmoid", [])(y), [0.0, 0.5, 1.0])


def test_erf_accuracy():
    x = np.linspace(-5, 5, 1001)
    np.testing.assert_allclose(erf(x), [math.erf(v) for v in x], atol=2e-7)


def test_unknown_activation_and_extra_params_are_errors():
    with pytest.raises(GraphError, match="unknown fused activation 'Mish'"):
        make_activation("Mish", [])
    with pytest.raises(GraphError, match="at most 1"):
        make_activation("LeakyRelu", [0.1, 0.2])


@pytest.mark.parametrize("equation", ["ij->ji", "ii->i", "ij->ij"])
def test_einsum_relabelings_do_not_alias_the_input(equation):
    x = rand(3, 3)
    y = run_edgeinfer("Einsum", [x], {"equation": equation})[0]
    np.testing.assert_array_equal(y, np.einsum(equation, x))
    assert not np.may_share_memory(y, x)
