"""Shape/layout and indexing kernels (tensor.py, indexing.py) against ONNX Runtime, their shape
rules with constant and unknown shape inputs and symbolic dims, and their errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgeinfer import Session
from edgeinfer.errors import KernelError, ShapeInferenceError
from edgeinfer.graph import Graph, Node, TensorType, ValueInfo
from opcheck import check_node, run_edgeinfer
from test_kernels_elementwise import infer

RNG = np.random.default_rng(1)
I64 = np.int64
INT64_MAX = np.iinfo(np.int64).max


def rand(shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def i64(*v):
    return np.array(v, I64)


# ------------------------------------------------------------------------- Reshape
@pytest.mark.parametrize(
    "shape,target",
    [((2, 3, 4), (4, 6)), ((2, 3, 4), (0, -1)), ((2, 3, 4), (-1,)), ((2, 3, 4), (2, 0, 2, 2)), ((6,), (1, 2, 1, 3)), ((1,), ())],
)
def test_reshape(shape, target):
    got = check_node("Reshape", [rand(shape), i64(*target)], const_inputs=(1,))
    assert got[0].size == int(np.prod(shape))


def test_reshape_allowzero_keeps_zero():
    x = np.zeros((0, 3), np.float32)
    got = check_node("Reshape", [x, i64(3, 0)], {"allowzero": 1}, const_inputs=(1,))
    assert got[0].shape == (3, 0)


def test_reshape_returns_a_view():
    x = rand((2, 6))
    y = run_edgeinfer("Reshape", [x, i64(3, 4)], const_inputs=(1,))[0]
    assert np.shares_memory(x, y)


def test_reshape_shape_rule_symbolic():
    v = [None, i64(0, -1)]
    assert infer("Reshape", [("float32", ("N", 3, 4)), ("int64", (2,))], values=v)[0] == TensorType("float32", ("N", 12))
    v = [None, i64(-1, 4)]
    assert infer("Reshape", [("float32", ("N", 3, 4)), ("int64", (2,))], values=v)[0] == TensorType("float32", (None, 4))
    v = [None, i64(0, 0, 2, 2)]
    assert infer("Reshape", [("float32", ("B", "T", 4)), ("int64", (4,))], values=v)[0].shape == ("B", "T", 2, 2)
    # unknown target: only the rank is known
    assert infer("Reshape", [("float32", ("N", 3)), ("int64", (3,))])[0].shape == (None, None, None)


@pytest.mark.parametrize("target,match", [((5, -1), "divide"), ((-1, -1), "more than one -1"), ((2, 2), "elements"), ((-2, 6), "negative")])
def test_reshape_bad_target_names_the_node(target, match):
    with pytest.raises(ShapeInferenceError, match=f"Reshape node 'n0'.*{match}"):
        infer("Reshape", [("float32", (3, 4)), ("int64", (len(target),))], values=[None, i64(*target)])


def test_reshape_bad_target_at_run_time():
    with pytest.raises(KernelError, match="Reshape node 'n0'"):
        run_edgeinfer("Reshape", [rand((3, 4)), i64(5, -1)], shapes_known=False)


# ----------------------------------------------------------------- Flatten/Squeeze
@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis):
    check_node("Flatten", [rand((2, 3, 1, 4))], {"axis": axis})


def test_flatten_symbolic():
    assert infer("Flatten", [("float32", ("N", 3, 4))])[0].shape == ("N", 12)
    assert infer("Flatten", [("float32", ("N", 3, 4))], {"axis": 0})[0].shape == (1, None)
    with pytest.raises(ShapeInferenceError, match="Flatten node 'n0'.*axis 4"):
        infer("Flatten", [("float32", (2, 3))], {"axis": 4})


@pytest.mark.parametrize("axes", [None, (), (0,), (-1,), (0, 2)])
def test_squeeze(axes):
    ins = [rand((1, 3, 1))] + ([] if axes is None else [i64(*axes)])
    check_node("Squeeze", ins, const_inputs=(1,))


@pytest.mark.parametrize("shape,axes", [((3,), (0,)), ((3, 4), (1, -1)), ((), (0, 1)), ((2, 3), (-1, 0))])
def test_unsqueeze(shape, axes):
    check_node("Unsqueeze", [rand(shape), i64(*axes)], const_inputs=(1,))


def test_squeeze_unsqueeze_shape_rules():
    assert infer("Unsqueeze", [("float32", ("N", 3)), ("int64", (2,))], values=[None, i64(0, -1)])[0].shape == (1, "N", 3, 1)
    assert infer("Unsqueeze", [("float32", ("N", 3)), ("int64", (2,))])[0].shape == (None,) * 4
    assert infer("Squeeze", [("float32", ("N", 1, 3)), ("int64", (1,))], values=[None, i64(1)])[0].shape == ("N", 3)
    assert infer("Squeeze", [("float32", ("N", 1, 3))])[0].shape is None  # N may be 1
    with pytest.raises(ShapeInferenceError, match="Squeeze node 'n0'.*size 3"):
        infer("Squeeze", [("float32", (1, 3)), ("int64", (1,))], values=[None, i64(1)])
    with pytest.raises(ShapeInferenceError, match="Unsqueeze node 'n0'"):
        infer("Unsqueeze", [("float32", (3,)), ("int64", (2,))], values=[None, i64(0, 0)])


def test_squeeze_non_unit_axis_at_run_time():
    with pytest.raises(KernelError, match="Squeeze node 'n0'"):
        run_edgeinfer("Squeeze", [rand((2, 3)), i64(0)], shapes_known=False)


# ----------------------------------------------------------- Transpose and Concat
@pytest.mark.parametrize("perm", [None, (0, 2, 1), (2, 0, 1), (1, 0, 2)])
def test_transpose(perm):
    attrs = {} if perm is None else {"perm": list(perm)}
    check_node("Transpose", [rand((2, 3, 4))], attrs)


def test_transpose_bad_perm():
    with pytest.raises(ShapeInferenceError, match="Transpose node 'n0'.*permutation"):
        infer("Transpose", [("float32", (2, 3))], {"perm": [0, 0]})
    assert infer("Transpose", [("float32", ("N", 3, "C"))], {"perm": [2, 0, 1]})[0].shape == ("C", "N", 3)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.float16])
def test_concat(axis, dtype):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for s, n in zip(shapes, (1, 2, 3)):
        s[axis] = n
    check_node("Concat", [rand(s, dtype) for s in shapes], {"axis": axis})


def test_concat_shape_rule():
    got = infer("Concat", [("float32", ("N", 3)), ("float32", ("N", 5))], {"axis": 1})[0]
    assert got.shape == ("N", 8)
    assert infer("Concat", [("float32", ("N", 3)), ("float32", ("M", 3))], {"axis": 0})[0].shape == (None, 3)
    with pytest.raises(ShapeInferenceError, match="Concat node 'n0'.*differ on axis 0"):
        infer("Concat", [("float32", (2, 3)), ("float32", (4, 3))], {"axis": 1})
    with pytest.raises(ShapeInferenceError, match="Concat node 'n0'.*axis 2"):
        infer("Concat", [("float32", (2, 3)), ("float32", (2, 3))], {"axis": 2})


# -------------------------------------------------------------------------- Split
@pytest.mark.parametrize("sizes,axis", [((2, 4), 1), ((1, 1, 4), -1), ((6,), 1), ((0, 6), 1)])
def test_split_sizes(sizes, axis):
    check_node("Split", [rand((2, 6)), i64(*sizes)], {"axis": axis}, n_outputs=len(sizes), const_inputs=(1,))


@pytest.mark.parametrize("dim,n", [(6, 3), (7, 3), (5, 2)])
def test_split_num_outputs(dim, n):
    got = check_node("Split", [rand((dim, 2))], {"num_outputs": n}, n_outputs=n, opset=18)
    assert sum(g.shape[0] for g in got) == dim


def test_split_evenly_by_outputs():
    check_node("Split", [rand((4, 6))], {"axis": 1}, n_outputs=3, opset=13)


def test_split_bad_sizes():
    with pytest.raises(ShapeInferenceError, match="Split node 'n0'"):
        infer("Split", [("float32", (2, 6)), ("int64", (2,))], {"axis": 1}, values=[None, i64(2, 3)], n_outputs=2)


# -------------------------------------------------------------------------- Slice
SLICES = [
    ((0,), (2,), None, None),
    ((1, 0), (INT64_MAX, -1), (0, 2), None),
    ((-1,), (-INT64_MAX,), (1,), (-1,)),
    ((5,), (-10,), (2,), (-2,)),
    ((-100,), (100,), (-1,), (3,)),
    ((2,), (1,), (0,), None),  # empty
    ((0, 3), (3, 0), (1, 2), (2, -1)),
    ((-2,), (-100,), (0,), (-1,)),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice(starts, ends, axes, steps):
    ins = [rand((4, 5, 6)), i64(*starts), i64(*ends)]
    if axes is not None or steps is not None:
        ins.append(i64(*(axes if axes is not None else range(len(starts)))))
    if steps is not None:
        ins.append(i64(*steps))
    check_node("Slice", ins, const_inputs=(1, 2, 3, 4))


BOUND = st.one_of(st.integers(-9, 9), st.sampled_from([INT64_MAX, -INT64_MAX, -(1 << 63)]))


@settings(max_examples=40, deadline=None)
@given(start=BOUND, end=BOUND, step=st.sampled_from([1, 2, 3, -1, -2, -5]), axis=st.sampled_from([0, 1, -1]))
def test_slice_clamping_matches_onnxruntime(start, end, step, axis):
    x = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    got = check_node("Slice", [x, i64(start), i64(end), i64(axis), i64(step)], const_inputs=(1, 2, 3, 4))
    assert got[0].ndim == 2


def test_slice_shape_rule():
    v = [None, i64(0), i64(INT64_MAX), i64(0), i64(1)]
    t = [("float32", ("N", 8)), ("int64", (1,)), ("int64", (1,)), ("int64", (1,)), ("int64", (1,))]
    assert infer("Slice", t, values=v)[0].shape == ("N", 8)
    v = [None, i64(1), i64(-1), i64(1), i64(2)]
    assert infer("Slice", t, values=v)[0].shape == ("N", 3)
    v = [None, None, None, i64(1), None]
    assert infer("Slice", t, values=v)[0].shape == ("N", None)
    with pytest.raises(ShapeInferenceError, match="Slice node 'n0'.*steps"):
        infer("Slice", t, values=[None, i64(0), i64(2), i64(0), i64(0)])


# ------------------------------------------------------------------ Expand / Tile
@pytest.mark.parametrize("shape,target", [((3, 1), (2, 3, 4)), ((1,), (5,)), ((2, 3), (1, 1)), ((4, 1), (1, 1, 1, 5)), ((), (2, 2))])
def test_expand(shape, target):
    check_node("Expand", [rand(shape), i64(*target)], const_inputs=(1,))


def test_expand_shape_rule():
    assert infer("Expand", [("float32", ("N", 1)), ("int64", (2,))], values=[None, i64(1, 4)])[0].shape == ("N", 4)
    assert infer("Expand", [("float32", ("N", 1)), ("int64", (3,))])[0].shape == (None, None, None)
    with pytest.raises(ShapeInferenceError, match="Expand node 'n0'"):
        infer("Expand", [("float32", (3,)), ("int64", (1,))], values=[None, i64(4)])


@pytest.mark.parametrize("shape,reps", [((2, 3), (1, 2)), ((3,), (4,)), ((2, 1, 2), (2, 3, 1)), ((2, 3), (0, 1))])
def test_tile(shape, reps):
    check_node("Tile", [rand(shape), i64(*reps)], const_inputs=(1,))


# ---------------------------------------------------------------------------- Pad
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [(1, 2, 0, 1), (0, 0, 2, 2), (1, -1, 2, 0)])
def test_pad_modes(mode, pads):
    check_node("Pad", [rand((4, 5)), i64(*pads)], {"mode": mode}, const_inputs=(1,))


def test_pad_constant_value_and_axes():
    x = rand((2, 3, 4))
    got = check_node("Pad", [x, i64(1, 2, 0, 3), np.array(7.5, np.float32), i64(0, -1)], const_inputs=(1, 3))
    assert got[0].shape == (3, 3, 9) and got[0][0, 0, 0] == 7.5


def test_pad_int_and_shape_rule():
    check_node("Pad", [RNG.integers(0, 9, (3, 3)).astype(I64), i64(1, 1, 1, 1), np.array(-1, I64)])
    got = infer("Pad", [("float32", ("N", 3, 8, 8)), ("int64", (8,))], values=[None, i64(0, 0, 1, 1, 0, 0, 1, 1)])
    assert got[0].shape == ("N", 3, 10, 10)
    with pytest.raises(ShapeInferenceError, match="Pad node 'n0'.*mode"):
        infer("Pad", [("float32", (2,)), ("int64", (2,))], {"mode": "mirror"})


# ------------------------------------------------------------ Shape, Size, fills
@pytest.mark.parametrize("start,end", [(0, None), (1, None), (-2, None), (0, -1), (1, 2), (-10, 10), (3, 1)])
def test_shape(start, end):
    attrs = {"start": start} | ({} if end is None else {"end": end})
    got = check_node("Shape", [rand((2, 3, 4))], attrs)
    assert got[0].dtype == I64


def test_size_and_shape_rules():
    check_node("Size", [rand((2, 3, 4))])
    assert infer("Shape", [("float32", ("N", 3, 4))], {"start": 1})[0] == TensorType("int64", (2,))
    assert infer("Size", [("float32", ("N", 3))])[0] == TensorType("int64", ())


@pytest.mark.parametrize("value", [None, np.array([3], np.int32), np.array([1.5], np.float64), np.array([True])])
def test_constant_of_shape(value):
    attrs = {} if value is None else {"value": value}
    ours = run_edgeinfer("ConstantOfShape", [i64(2, 3)], attrs, const_inputs=(0,))[0]
    want = np.full((2, 3), 0.0 if value is None else value[0], dtype=np.float32 if value is None else value.dtype)
    np.testing.assert_array_equal(ours, want)
    assert ours.dtype == want.dtype
    assert infer("ConstantOfShape", [("int64", (3,))], attrs)[0].shape == (None, None, None)


@pytest.mark.parametrize("start,limit,delta,dtype", [(0, 10, 3, I64), (10, 4, -2, np.int32), (0.5, 3.0, 0.4, np.float32), (1.0, 1.0, 1.0, np.float64), (5, 1, 1, I64)])
def test_range(start, limit, delta, dtype):
    ins = [np.array(v, dtype) for v in (start, limit, delta)]
    check_node("Range", ins, const_inputs=(0, 1, 2))
    assert infer("Range", [(np.dtype(dtype).name, ())] * 3)[0].shape == (None,)


@pytest.mark.parametrize("k", [0, 1, -1, 5])
@pytest.mark.parametrize("dtype", [None, "int64"])
def test_eye_like(k, dtype):
    attrs = {"k": k} | ({} if dtype is None else {"dtype": dtype})
    got = run_edgeinfer("EyeLike", [rand((3, 4))], attrs)[0]
    np.testing.assert_array_equal(got, np.eye(3, 4, k))
    assert got.dtype == (np.float32 if dtype is None else I64)


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 1, -2])
def test_trilu(upper, k):
    ins = [rand((2, 4, 5))] + ([] if k is None else [np.array(k, I64)])
    check_node("Trilu", ins, {"upper": upper})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_and_back(mode):
    x = rand((2, 8, 3, 4))
    check_node("DepthToSpace", [x], {"blocksize": 2, "mode": mode})
    check_node("SpaceToDepth", [rand((2, 2, 6, 4))], {"blocksize": 2})
    y = run_edgeinfer("DepthToSpace", [x], {"blocksize": 2, "mode": mode})[0]
    if mode == "DCR":
        np.testing.assert_array_equal(run_edgeinfer("SpaceToDepth", [y], {"blocksize": 2})[0], x)
    with pytest.raises(ShapeInferenceError, match="DepthToSpace node 'n0'.*multiple"):
        infer("DepthToSpace", [("float32", (1, 6, 2, 2))], {"blocksize": 2})


# ------------------------------------------------------------------------- Gather
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("idx_shape", [(), (2,), (2, 3)])
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_gather(axis, idx_shape, idx_dtype):
    data = rand((3, 4, 5))
    n = data.shape[axis]
    idx = RNG.integers(-n, n, size=idx_shape).astype(idx_dtype)
    check_node("Gather", [data, idx], {"axis": axis})


def test_gather_out_of_range_raises_kernel_error():
    data = rand((3, 4))
    with pytest.raises(KernelError, match=r"Gather node 'n0'.*index 3 is out of range.*size 3"):
        run_edgeinfer("Gather", [data, i64(0, 3)])
    with pytest.raises(KernelError, match=r"Gather node 'n0'.*index -5"):
        run_edgeinfer("Gather", [data, i64(-5)], {"axis": 1})
    np.testing.assert_array_equal(run_edgeinfer("Gather", [data, i64(-3)])[0], data[[0]])


def test_gather_shape_rule():
    assert infer("Gather", [("float32", ("V", 8)), ("int64", ("B", "T"))])[0].shape == ("B", "T", 8)
    with pytest.raises(ShapeInferenceError, match="Gather node 'n0'.*axis 2"):
        infer("Gather", [("float32", (3, 4)), ("int64", (2,))], {"axis": 2})
    with pytest.raises(ShapeInferenceError, match="Gather node 'n0'.*int32 or int64"):
        infer("Gather", [("float32", (3, 4)), ("float32", (2,))])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(axis):
    data = rand((3, 4))
    shape = [2, 3]
    n = data.shape[axis]
    check_node("GatherElements", [data, RNG.integers(-n, n, size=shape).astype(I64)], {"axis": axis})


def test_gather_elements_out_of_range():
    with pytest.raises(KernelError, match="GatherElements node 'n0'"):
        run_edgeinfer("GatherElements", [rand((2, 2)), np.array([[0, 2]], I64)], {"axis": 1})


@pytest.mark.parametrize("data_shape,idx,batch_dims", [
    ((2, 2), [[0, 0], [1, 1]], 0),
    ((2, 2), [[1], [0]], 0),
    ((2, 2, 2), [[0, 1], [1, 0]], 0),
    ((2, 2, 2), [[[0, 1]], [[1, 0]]], 0),
    ((2, 2, 2), [[1], [0]], 1),
    ((2, 3, 4), [[[1, -1]], [[2, 0]]], 1),
])
def test_gather_nd(data_shape, idx, batch_dims):
    check_node("GatherND", [rand(data_shape), np.array(idx, I64)], {"batch_dims": batch_dims})


def test_gather_nd_out_of_range():
    with pytest.raises(KernelError, match="GatherND node 'n0'"):
        run_edgeinfer("GatherND", [rand((2, 2)), np.array([[0, 2]], I64)])


# ------------------------------------------------------------------------ Scatter
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements(reduction, axis):
    data = rand((3, 4))
    n = data.shape[axis]
    idx = np.array([[1, 0, 2], [0, 2, 1]]) % n if reduction == "none" else RNG.integers(-n, n, size=(2, 3))
    check_node("ScatterElements", [data, idx.astype(I64), rand((2, 3))], {"axis": axis, "reduction": reduction})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction):
    data = rand((4, 3, 2))
    idx = np.array([[0], [2]], I64) if reduction == "none" else np.array([[0], [2], [0]], I64)
    check_node("ScatterND", [data, idx, rand((len(idx), 3, 2))], {"reduction": reduction})
    check_node("ScatterND", [data, np.array([[1, 2], [3, 0]], I64), rand((2, 2))], {"reduction": reduction})


def test_scatter_errors():
    with pytest.raises(KernelError, match="ScatterElements node 'n0'"):
        run_edgeinfer("ScatterElements", [rand((2, 2)), np.array([[2]], I64), rand((1, 1))])
    with pytest.raises(ShapeInferenceError, match="ScatterND node 'n0'.*updates shape"):
        infer("ScatterND", [("float32", (4, 3)), ("int64", (2, 1)), ("float32", (2, 4))])


# ---------------------------------------------------------------- data-dependent
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 2, 3)])
def test_non_zero(shape):
    x = (RNG.random(shape) > 0.5).astype(np.float32)
    check_node("NonZero", [x])
    assert infer("NonZero", [("float32", shape)])[0] == TensorType("int64", (len(shape), None))


def test_non_zero_of_a_scalar_is_one_row():
    assert run_edgeinfer("NonZero", [np.array(3.0, np.float32)])[0].shape == (1, 1)


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_compress(axis):
    cond = np.array([True, False, True])
    attrs = {} if axis is None else {"axis": axis}
    check_node("Compress", [rand((3, 3)), cond], attrs, const_inputs=(1,))
    got = infer("Compress", [("float32", ("N", 3)), ("bool", (3,))], attrs, values=[None, cond])
    assert got[0].shape == ((2,) if axis is None else ("N", 2) if axis != 0 else (2, 3))


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("idx_dtype", [np.int64, np.float32])
def test_one_hot(axis, idx_dtype):
    idx = np.array([[0, 3, -1], [5, 1, -4]], idx_dtype)  # 5 is out of [-4, 3]: that row is all off
    depth = np.array(4, I64 if idx_dtype == np.int64 else np.float32)  # pairs ONNX Runtime implements
    got = check_node("OneHot", [idx, depth, np.array([0.5, 2.0], np.float32)], {"axis": axis}, const_inputs=(1,))
    assert got[0].shape[axis] == 4 and (got[0] == 2.0).sum() == 5


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_top_k_with_ties(largest, axis, dtype):
    x = RNG.integers(0, 4, size=(6, 5)).astype(dtype)  # many ties: the lower index must win
    got = check_node("TopK", [x, i64(3)], {"largest": largest, "axis": axis}, n_outputs=2, const_inputs=(1,))
    assert got[1].dtype == I64


def test_top_k_shape_rule():
    got = infer("TopK", [("float32", ("N", 10)), ("int64", (1,))], values=[None, i64(3)], n_outputs=2)
    assert got == [TensorType("float32", ("N", 3)), TensorType("int64", ("N", 3))]
    with pytest.raises(ShapeInferenceError, match="TopK node 'n0'.*exceeds"):
        infer("TopK", [("float32", (2, 3)), ("int64", (1,))], values=[None, i64(4)], n_outputs=2)


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis,dtype", [(0, np.float32), (1, np.float32), (-1, np.int64), (1, np.int32)])
def test_cum_sum(exclusive, reverse, axis, dtype):
    x = RNG.integers(-5, 5, size=(3, 4)).astype(dtype)
    check_node("CumSum", [x, np.array(axis, np.int32)], {"exclusive": exclusive, "reverse": reverse})


@pytest.mark.parametrize("batch_axis,time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis, time_axis):
    shape = [4, 4, 2]
    lens = np.array([4, 1, 0, 3], I64)
    check_node("ReverseSequence", [rand(shape), lens], {"batch_axis": batch_axis, "time_axis": time_axis})


# --------------------------------------------------------------- through a Session
def test_shape_chain_with_dynamic_batch_runs_in_a_session():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, the exporters' favourite, with Slice,
    Transpose, Expand, Where and a reduction around it, on two batch sizes."""
    g = Graph(
        inputs=[ValueInfo("x", "float32", ("N", 3, 4))],
        outputs=[ValueInfo("y", "float32", None), ValueInfo("m", "int64", None)],
        nodes=[
            Node("Shape", ["x"], ["s"], name="shape"),
            Node("Gather", ["s", "zero"], ["n"], name="batch"),
            Node("Unsqueeze", ["n", "zero1"], ["n1"], name="n1"),
            Node("Concat", ["n1", "minus1"], ["target"], {"axis": 0}, name="target"),
            Node("Reshape", ["x", "target"], ["flat"], name="flatten"),
            Node("Slice", ["flat", "s0", "s1", "one1"], ["head"], name="head"),
            Node("Transpose", ["head"], ["t"], {"perm": [1, 0]}, name="t"),
            Node("Expand", ["bias", "s_t"], ["b"], name="expand"),
            Node("Shape", ["t"], ["s_t"], name="shape_t"),
            Node("Greater", ["t", "b"], ["mask"], name="gt"),
            Node("Where", ["mask", "t", "b"], ["y"], name="where"),
            Node("ArgMax", ["y"], ["m"], {"axis": 0, "keepdims": 0}, name="argmax"),
        ],
        constants={
            "zero": np.array(0, I64), "zero1": i64(0), "minus1": i64(-1), "s0": i64(2), "s1": i64(8),
            "one1": i64(1), "bias": np.array([[0.25]], np.float32),
        },
        opset={"": 21},
    )
    g.toposort()
    sess = Session(g)
    for n in (1, 3):
        x = rand((n, 3, 4))
        out = sess.run({"x": x})
        y, m = out["y"], out["m"]
        head = x.reshape(n, -1)[:, 2:8].T
        want = np.maximum(head, 0.25)
        np.testing.assert_allclose(y, want)
        np.testing.assert_array_equal(m, want.argmax(axis=0))
