"""The run-time fast paths of the cpu backend give what the general paths give.

Kernels precompute from constant inputs and static shapes (Slice, Split, Pad, Gather,
Reshape, OneHot), Loop turns pass-through carried constants into body constants, If with a
constant condition builds one branch, and a run silences numpy's floating-point warnings
once. Each test compares a model whose deciding inputs are constants (fast path) with the
same model fed them at run time (general path), or with ONNX Runtime.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import edgeinfer  # noqa: E402
from edgeinfer.errors import KernelError  # noqa: E402

OPSET = 18


def _model(nodes, inputs, outputs, inits=(), opset=OPSET):
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, dtype=TP.FLOAT, shape=None):
    return h.make_tensor_value_info(name, dtype, shape)


def _run(model, feeds):
    return edgeinfer.Session(model).run(feeds)


def _const_vs_fed(op, x, consts: dict, attrs=None, names=None):
    """Output of ``op`` with ``consts`` as initializers and with them fed as inputs."""
    names = names or ["x", *consts]
    node = h.make_node(op, names, ["y"], **(attrs or {}))
    dtype = {np.dtype(np.float32): TP.FLOAT, np.dtype(np.int64): TP.INT64}
    x_vi = _vi("x", dtype[x.dtype], list(x.shape))
    inits = [nh.from_array(v, k) for k, v in consts.items()]
    fixed = _run(_model([node], [x_vi], [_vi("y", dtype[x.dtype])], inits), {"x": x})["y"]
    fed_vis = [_vi(k, dtype[v.dtype], list(v.shape)) for k, v in consts.items()]
    fed = _run(_model([node], [x_vi, *fed_vis], [_vi("y", dtype[x.dtype])]), {"x": x, **consts})["y"]
    return fixed, fed


def _same(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------ tensor ops
@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@pytest.mark.parametrize("shape,pads", [((1, 576), [0, 32, 0, 32]), ((2, 3, 5), [1, 2, 0, 2, 1, 3]),
                                        ((2, 3, 5), [0, -1, 2, 1, 0, -2]), ((3, 4), [0, 9, 0, 7])])
def test_pad_static_index_maps_match_np_pad(mode, shape, pads):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    _same(*_const_vs_fed("Pad", x, {"pads": np.array(pads, np.int64)}, {"mode": mode}))


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1], [-1], [1], [1]), ([0, 5], [2, -100], [0, 2], [1, -2]), ([-3], [2**63 - 1], [-1], [1]), ([4], [1], [2], [-1]),
])
def test_slice_constant_bounds(starts, ends, axes, steps):
    x = np.arange(3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6)
    consts = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64),
              "axes": np.array(axes, np.int64), "steps": np.array(steps, np.int64)}
    _same(*_const_vs_fed("Slice", x, consts))


def test_split_static_sizes():
    x = np.arange(2 * 7, dtype=np.float32).reshape(2, 7)
    node = h.make_node("Split", ["x", "s"], ["a", "b", "c"], axis=1)
    m = _model([node], [_vi("x", shape=[2, 7])], [_vi("a"), _vi("b"), _vi("c")],
               [nh.from_array(np.array([2, 0, 5], np.int64), "s")])
    got = _run(m, {"x": x})
    for name, want in zip("abc", np.split(x, [2, 2], axis=1)):
        _same(got[name], want)
    node = h.make_node("Split", ["x"], ["a", "b", "c"], axis=-1, num_outputs=3)
    got = _run(_model([node], [_vi("x", shape=[2, 7])], [_vi("a"), _vi("b"), _vi("c")], opset=18), {"x": x})
    for name, want in zip("abc", np.split(x, [3, 6], axis=1)):
        _same(got[name], want)


def test_gather_constant_indices():
    x = np.arange(2 * 5, dtype=np.float32).reshape(2, 5)
    for idx in (np.array(-1, np.int64), np.array([[0, 4], [-5, 2]], np.int64)):
        fixed, fed = _const_vs_fed("Gather", x, {"i": idx}, {"axis": 1})
        _same(fixed, fed)
        _same(fixed, np.take(x, idx, axis=1))


def test_reshape_constant_target_of_unknown_shape():
    # NonZero's output has a data-dependent dim: Reshape sees no static input shape
    nodes = [h.make_node("NonZero", ["x"], ["nz"]), h.make_node("Reshape", ["nz", "t"], ["y"])]
    m = _model(nodes, [_vi("x", shape=[3, 4])], [_vi("y", TP.INT64)],
               [nh.from_array(np.array([-1, 2], np.int64), "t")])
    x = np.array([[1, 0, 2, 0], [0, 0, 3, 4], [5, 0, 0, 0]], np.float32)
    _same(_run(m, {"x": x})["y"], np.stack(np.nonzero(x)).reshape(-1, 2))
    with pytest.raises(KernelError, match="cannot reshape"):
        m_bad = _model(nodes, [_vi("x", shape=[3, 4])], [_vi("y", TP.INT64)],
                       [nh.from_array(np.array([-1, 4], np.int64), "t")])
        _run(m_bad, {"x": np.array([[1, 0, 2, 0], [0, 0, 3, 0], [0, 0, 0, 0]], np.float32)})


def test_expand_error_names_the_shapes():
    node = h.make_node("Expand", ["x", "s"], ["y"])
    m = _model([node], [_vi("x", shape=[2, 3]), _vi("s", TP.INT64, [2])], [_vi("y")])
    with pytest.raises(KernelError, match="does not broadcast"):
        _run(m, {"x": np.ones((2, 3), np.float32), "s": np.array([4, 3], np.int64)})
    got = _run(m, {"x": np.ones((2, 3), np.float32), "s": np.array([1, 3], np.int64)})["y"]
    _same(got, np.ones((2, 3), np.float32))


def test_one_hot_constant_depth_last_and_first_axis():
    idx = np.array([[0, 3], [-1, 7]], np.int64)
    values = np.array([0.5, 2.0], np.float32)
    for axis in (-1, 0):
        node = h.make_node("OneHot", ["i", "d", "v"], ["y"], axis=axis)
        m = _model([node], [_vi("i", TP.INT64, [2, 2])], [_vi("y")],
                   [nh.from_array(np.array([4], np.int64), "d"), nh.from_array(values, "v")])
        got = _run(m, {"i": idx})["y"]
        hot = np.where((np.where(idx < 0, idx + 4, idx)[..., None] == np.arange(4)), 2.0, 0.5).astype(np.float32)
        _same(got, hot if axis == -1 else np.moveaxis(hot, -1, 0))


# ------------------------------------------------------------------------ control flow
def _loop_with_invariants():
    # carried: w (constant, passed through), acc (updated: acc @ w + b), n (grows each step)
    body = h.make_graph(
        [
            h.make_node("Transpose", ["w_in"], ["wt"], perm=[1, 0]),
            h.make_node("MatMul", ["acc_in", "wt"], ["mm"]),
            h.make_node("Add", ["mm", "b"], ["acc_out"]),
            h.make_node("Identity", ["cond_in"], ["cond_out"]),
            h.make_node("Concat", ["seq_in", "acc_out"], ["seq_out"], axis=0),
        ],
        "body",
        [_vi("i", TP.INT64, []), _vi("cond_in", TP.BOOL, []), _vi("w_in", shape=[3, 3]), _vi("acc_in", shape=[1, 3]),
         _vi("seq_in", shape=[None, 3])],
        [_vi("cond_out", TP.BOOL, []), _vi("w_in", shape=[3, 3]), _vi("acc_out", shape=[1, 3]),
         _vi("seq_out", shape=[None, 3]), _vi("acc_out", shape=[1, 3])],
    )
    node = h.make_node("Loop", ["m", "", "w", "acc0", "seq0"], ["w_final", "acc", "seq", "scan"], body=body)
    w = (np.arange(9, dtype=np.float32).reshape(3, 3) - 4) / 8
    inits = [nh.from_array(np.array(4, np.int64), "m"), nh.from_array(w, "w"),
             nh.from_array(np.array([0.1, 0.2, 0.3], np.float32), "b"),
             nh.from_array(np.zeros((0, 3), np.float32), "seq0")]
    return _model([node], [_vi("acc0", shape=[1, 3])],
                  [_vi("w_final"), _vi("acc"), _vi("seq"), _vi("scan")], inits), w


def test_loop_constant_pass_through_carry():
    m, w = _loop_with_invariants()
    acc0 = np.array([[1.0, -2.0, 0.5]], np.float32)
    got = _run(m, {"acc0": acc0})
    acc, rows = acc0, []
    for _ in range(4):
        acc = (acc @ w.T + np.array([0.1, 0.2, 0.3], np.float32)).astype(np.float32)
        rows.append(acc)
    _same(got["w_final"], w)
    np.testing.assert_allclose(got["acc"], acc, rtol=1e-6)
    np.testing.assert_allclose(got["seq"], np.concatenate(rows), rtol=1e-6)  # its shape grows: re-planned
    np.testing.assert_allclose(got["scan"], np.stack(rows), rtol=1e-6)


def test_if_constant_condition_runs_its_branch():
    then_g = h.make_graph([h.make_node("Mul", ["x", "x"], ["t"])], "then", [], [_vi("t", shape=[2])])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", shape=[2])])
    x = np.array([3.0, -2.0], np.float32)
    for flag in (True, False):
        node = h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)
        m = _model([node], [_vi("x", shape=[2])], [_vi("y", shape=[2])], [nh.from_array(np.array(flag), "c")])
        _same(_run(m, {"x": x})["y"], x * x if flag else -x)


# ------------------------------------------------------------------ floating point
def test_ieee_results_without_warnings():
    nodes = [h.make_node("Mul", ["x", "x"], ["sq"]), h.make_node("Sub", ["sq", "sq"], ["nan"]),
             h.make_node("Div", ["x", "zero"], ["inf"])]
    m = _model(nodes, [_vi("x", shape=[2])], [_vi("sq"), _vi("nan"), _vi("inf")],
               [nh.from_array(np.zeros(2, np.float32), "zero")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _run(m, {"x": np.array([3e38, -1.0], np.float32)})
    assert np.isinf(got["sq"][0]) and np.isnan(got["nan"][0]) and got["inf"][1] == -np.inf
    assert np.geterr()["over"] == "warn"  # the run's setting does not leak out
