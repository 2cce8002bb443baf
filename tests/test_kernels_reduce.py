"""Reductions (reduce.py) against ONNX Runtime, their shape rules and errors."""
import numpy as np
import pytest

from edgeinfer.errors import KernelError, ShapeInferenceError
from edgeinfer.graph import TensorType
from opcheck import check_node, run_edgeinfer
from test_kernels_elementwise import infer

RNG = np.random.default_rng(2)
REDUCE = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]
AXES = [None, (0,), (-1,), (0, 2), (1, -1), (0, 1, 2)]


def data(op, shape, dtype=np.float32):
    lo = 0.5 if op == "ReduceLogSum" else -2.0  # log of a sum must stay defined
    return RNG.uniform(lo, 2.0, size=shape).astype(dtype)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("op", REDUCE)
def test_reduce(op, axes, keepdims):
    ins = [data(op, (2, 3, 4))] + ([] if axes is None else [np.array(axes, np.int64)])
    check_node(op, ins, {"keepdims": keepdims}, const_inputs=(1,), rtol=1e-5, atol=1e-5, opset=18)


@pytest.mark.parametrize("op", REDUCE)
def test_reduce_noop_with_empty_axes_keeps_elementwise_steps(op):
    x = data(op, (3, 4))
    got = check_node(op, [x], {"noop_with_empty_axes": 1}, rtol=1e-5, atol=1e-5, opset=18)
    assert got[0].shape == x.shape
    empty = check_node(op, [x, np.zeros(0, np.int64)], {"noop_with_empty_axes": 1}, const_inputs=(1,), rtol=1e-5, atol=1e-5, opset=18)
    np.testing.assert_allclose(empty[0], got[0], rtol=1e-6)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_reduce_ints_keep_dtype(op, dtype):
    x = RNG.integers(-4, 5, size=(3, 4)).astype(dtype)
    got = check_node(op, [x, np.array([1], np.int64)], const_inputs=(1,), opset=18)
    assert got[0].dtype == dtype


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSumExp"])
def test_reduce_float16_accumulates_wide(op):
    x = RNG.uniform(0, 2, size=(4, 4096)).astype(np.float16)
    got = run_edgeinfer(op, [x, np.array([1], np.int64)], const_inputs=(1,))[0]
    assert got.dtype == np.float16
    want = run_edgeinfer(op, [x.astype(np.float32), np.array([1], np.int64)], const_inputs=(1,))[0]
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-3)


def test_reduce_over_an_empty_axis_gives_the_identity():
    x = np.zeros((0, 3), np.float32)
    axes = np.array([0], np.int64)
    assert run_edgeinfer("ReduceSum", [x, axes])[0].tolist() == [[0.0] * 3]
    assert run_edgeinfer("ReduceProd", [x, axes])[0].tolist() == [[1.0] * 3]
    assert run_edgeinfer("ReduceMax", [x, axes])[0].tolist() == [[-np.inf] * 3]
    assert run_edgeinfer("ReduceLogSumExp", [x, axes])[0].tolist() == [[-np.inf] * 3]


def test_reduce_log_sum_exp_is_stable():
    x = np.array([[1000.0, 1000.0], [-1000.0, -1000.0], [-np.inf, -np.inf]], np.float32)
    got = run_edgeinfer("ReduceLogSumExp", [x, np.array([1], np.int64)], {"keepdims": 0})[0]
    np.testing.assert_allclose(got[:2], [1000 + np.log(2), -1000 + np.log(2)], rtol=1e-6)
    assert got[2] == -np.inf


def test_reduce_shape_rules():
    t = [("float32", ("N", 3, 4)), ("int64", (1,))]
    assert infer("ReduceMean", t, values=[None, np.array([-1])])[0] == TensorType("float32", ("N", 3, 1))
    assert infer("ReduceMean", t, {"keepdims": 0}, values=[None, np.array([0])])[0].shape == (3, 4)
    assert infer("ReduceSum", t[:1])[0].shape == (1, 1, 1)  # no axes: all of them
    assert infer("ReduceSum", t[:1], {"noop_with_empty_axes": 1})[0].shape == ("N", 3, 4)
    assert infer("ReduceSum", t)[0].shape == (None, None, None)  # axes unknown, keepdims
    assert infer("ReduceSum", t, {"keepdims": 0})[0].shape == (None, None)  # one axis goes


def test_reduce_bad_axis_names_the_node():
    with pytest.raises(ShapeInferenceError, match="ReduceSum node 'n0'.*axis 3.*rank 3"):
        infer("ReduceSum", [("float32", (2, 3, 4)), ("int64", (1,))], values=[None, np.array([3])])
    with pytest.raises(ShapeInferenceError, match="ReduceMax node 'n0'.*repeat"):
        infer("ReduceMax", [("float32", (2, 3)), ("int64", (2,))], values=[None, np.array([1, -1])])
    with pytest.raises(KernelError, match="ReduceSum node 'n0'.*axes"):
        run_edgeinfer("ReduceSum", [np.ones((2, 3), np.float32), np.array([2], np.int64)], shapes_known=False)
    with pytest.raises(ShapeInferenceError, match="ReduceSum node 'n0'.*string"):
        infer("ReduceSum", [("string", (2,))])


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("select_last_index", [0, 1])
def test_arg_max_min_with_ties(op, axis, keepdims, select_last_index):
    x = RNG.integers(0, 3, size=(3, 4, 5)).astype(np.float32)  # ties decide first vs last
    attrs = {"axis": axis, "keepdims": keepdims, "select_last_index": select_last_index}
    got = check_node(op, [x], attrs)
    assert got[0].dtype == np.int64


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16])
def test_arg_max_dtypes(dtype):
    check_node("ArgMax", [RNG.integers(-9, 9, size=(4, 6)).astype(dtype)], {"axis": 1})


def test_arg_shape_rule_and_errors():
    assert infer("ArgMax", [("float32", ("N", 7))], {"axis": -1, "keepdims": 0})[0] == TensorType("int64", ("N",))
    with pytest.raises(ShapeInferenceError, match="ArgMin node 'n0'.*axis 2"):
        infer("ArgMin", [("float32", (2, 3))], {"axis": 2})
    with pytest.raises(KernelError, match="ArgMax node 'n0'.*empty"):
        run_edgeinfer("ArgMax", [np.zeros((0, 3), np.float32)])
