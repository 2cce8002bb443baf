"""Detection and sampling kernels (NonMaxSuppression, RoiAlign, GridSample, AffineGrid,
DeformConv) and the Resize / MaxUnpool corner cases fixed with them, against ONNX Runtime,
or against hand-computed values and the ONNX reference where ONNX Runtime departs from the
spec or lacks the case."""
import itertools

import numpy as np
import pytest
from onnx import helper

from edgeinfer.errors import GraphError, KernelError, ShapeInferenceError
from opcheck import check_node, run_edgeinfer, run_ort

RTOL, ATOL = 1e-4, 1e-5


def rng(seed=0):
    return np.random.default_rng(seed)


def f32(*v):
    return np.array(v, np.float32)


def i64(*v):
    return np.array(v, np.int64)


# --------------------------------------------------------------------- NonMaxSuppression
def random_boxes(seed, batches, n, center):
    g = rng(seed)
    corner = g.uniform(0, 10, (batches, n, 2))
    other = g.uniform(0.5, 4, (batches, n, 2)) if center else corner + g.uniform(-4, 4, (batches, n, 2))
    return np.concatenate([corner, other], -1).astype(np.float32)


@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("seed", range(6))
def test_nms_against_ort(center, seed):
    g = rng(100 + seed)
    b, c, n = 1 + seed % 2, 1 + seed % 3, 25
    boxes = random_boxes(seed, b, n, center)
    if seed % 2:
        boxes = np.round(boxes)  # touching and identical boxes
    scores = np.round(g.uniform(0, 1, (b, c, n)), 1).astype(np.float32)  # many equal scores
    inputs = [boxes, scores, i64(1 + seed), f32(0.4)]
    if seed % 3:
        inputs.append(f32(0.3))
    check_node("NonMaxSuppression", inputs, {"center_point_box": center}, const_inputs=(2, 3, 4))


@pytest.mark.parametrize("iou", [0.0, 0.5, 1.0])
def test_nms_iou_thresholds_against_ort(iou):
    boxes = random_boxes(7, 2, 40, 0)
    scores = rng(8).uniform(0, 1, (2, 3, 40)).astype(np.float32)
    check_node("NonMaxSuppression", [boxes, scores, i64(100), f32(iou), f32(0.2)])


def test_nms_optional_inputs_default_to_no_output():
    boxes = random_boxes(1, 1, 5, 0)
    scores = rng(2).uniform(size=(1, 2, 5)).astype(np.float32)
    (y,) = run_edgeinfer("NonMaxSuppression", [boxes, scores])
    assert y.shape == (0, 3) and y.dtype == np.int64


def test_nms_flipped_corners_select_the_same_boxes():
    boxes = random_boxes(3, 1, 30, 0)
    flipped = boxes[..., [2, 3, 0, 1]]
    scores = rng(4).uniform(size=(1, 1, 30)).astype(np.float32)
    args = [i64(30), f32(0.3)]
    a = run_edgeinfer("NonMaxSuppression", [boxes, scores, *args])[0]
    b = run_edgeinfer("NonMaxSuppression", [flipped, scores, *args])[0]
    np.testing.assert_array_equal(a, b)


def test_nms_keeps_a_box_whose_iou_equals_the_threshold():
    # the second box overlaps the first by 1/3 exactly (area 2, intersection 1, union 3)
    boxes = np.array([[[0, 0, 1, 2], [0, 1, 1, 3]]], np.float32)
    scores = f32(0.9, 0.8).reshape(1, 1, 2)
    kept = run_edgeinfer("NonMaxSuppression", [boxes, scores, i64(5), np.float32(1 / 3)])[0]
    assert kept.tolist() == [[0, 0, 0], [0, 0, 1]]
    kept = run_edgeinfer("NonMaxSuppression", [boxes, scores, i64(5), np.float32(0.3)])[0]
    assert kept.tolist() == [[0, 0, 0]]


def test_nms_orders_by_batch_class_then_score():
    boxes = np.array([[[0, 0, 1, 1], [5, 5, 6, 6]]] * 2, np.float32)
    scores = np.array([[[0.1, 0.9], [0.8, 0.2]], [[0.5, 0.6], [0.7, 0.3]]], np.float32)
    kept = run_edgeinfer("NonMaxSuppression", [boxes, scores, i64(2)])[0]
    assert kept.tolist() == [[0, 0, 1], [0, 0, 0], [0, 1, 0], [0, 1, 1],
                             [1, 0, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_nms_score_threshold_is_strict():
    boxes = random_boxes(5, 1, 3, 1)
    scores = f32(0.5, 0.4, 0.6).reshape(1, 1, 3)
    kept = run_edgeinfer("NonMaxSuppression", [boxes, scores, i64(3), f32(1.0), f32(0.5)],
                         {"center_point_box": 1})[0]
    assert kept[:, 2].tolist() == [2]


@pytest.mark.parametrize("inputs,match", [
    ([np.zeros((1, 3, 5), np.float32), np.zeros((1, 1, 3), np.float32)], "4 coordinates"),
    ([np.zeros((1, 3, 4), np.float32), np.zeros((1, 1, 4), np.float32)], "number of boxes"),
    ([np.zeros((2, 3, 4), np.float32), np.zeros((1, 1, 3), np.float32)], "num_batches"),
])
def test_nms_bad_shapes(inputs, match):
    with pytest.raises(ShapeInferenceError, match=match) as info:
        run_edgeinfer("NonMaxSuppression", inputs)
    assert "node 'n0'" in str(info.value)


def test_nms_bad_runtime_inputs_name_the_node():
    boxes, scores = random_boxes(0, 1, 4, 0), np.ones((1, 1, 4), np.float32)
    with pytest.raises(KernelError, match="n0.*iou_threshold"):
        run_edgeinfer("NonMaxSuppression", [boxes, scores, i64(2), f32(1.5)])
    with pytest.raises(KernelError, match="n0.*must be a scalar"):
        run_edgeinfer("NonMaxSuppression", [boxes, scores, i64(2, 3)])
    with pytest.raises(KernelError, match="n0.*scores"):
        run_edgeinfer("NonMaxSuppression", [boxes, np.ones((1, 1, 5), np.float32)], shapes_known=False)
    with pytest.raises(ShapeInferenceError, match="center_point_box"):
        run_edgeinfer("NonMaxSuppression", [boxes, scores], {"center_point_box": 2})


# ------------------------------------------------------------------------------ RoiAlign
X_ROI = rng(1).standard_normal((3, 4, 11, 13)).astype(np.float32)


def random_rois(seed, n=16):
    r = rng(seed).uniform(-3, 14, (n, 4))
    r = np.concatenate([np.minimum(r[:, :2], r[:, 2:]), np.maximum(r[:, :2], r[:, 2:])], 1)
    extra = [[2, 3, 2, 3], [-5, -5, -2, -2], [0, 0, 13, 11], [12, 10, 16, 14]]
    return np.concatenate([r, extra]).astype(np.float32)


ROIS = random_rois(2)
BATCH = rng(3).integers(0, 3, ROIS.shape[0]).astype(np.int64)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("ratio", [0, 1, 2])
@pytest.mark.parametrize("out_hw,scale", [((1, 1), 1.0), ((5, 3), 0.5), ((2, 7), 1.5)])
def test_roi_align_against_ort(mode, ctm, ratio, out_hw, scale):
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "sampling_ratio": ratio,
             "output_height": out_hw[0], "output_width": out_hw[1], "spatial_scale": scale}
    check_node("RoiAlign", [X_ROI, ROIS, BATCH], attrs, rtol=RTOL, atol=ATOL)


def test_roi_align_float64_and_float16():
    attrs = {"output_height": 3, "output_width": 2}
    check_node("RoiAlign", [X_ROI.astype(np.float64), ROIS.astype(np.float64), BATCH], attrs)
    want = run_edgeinfer("RoiAlign", [X_ROI, ROIS, BATCH], attrs)[0]
    got = run_edgeinfer("RoiAlign", [X_ROI.astype(np.float16), ROIS.astype(np.float16), BATCH], attrs)[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=2e-2)


def test_roi_align_large_grids_are_computed_in_bands(monkeypatch):
    from edgeinfer.kernels import vision

    attrs = {"output_height": 2, "output_width": 3, "sampling_ratio": 0}
    rois = f32(0, 0, 12, 10, 1, 2, 9, 11).reshape(2, 4)
    want = run_edgeinfer("RoiAlign", [X_ROI, rois, i64(0, 2)], attrs)[0]
    for mode in ("avg", "max"):
        monkeypatch.setattr(vision, "_GATHER_BLOCK", 1)
        got = run_edgeinfer("RoiAlign", [X_ROI, rois, i64(0, 2)], {**attrs, "mode": mode})[0]
        monkeypatch.undo()
        ref = run_ort("RoiAlign", [X_ROI, rois, i64(0, 2)], {**attrs, "mode": mode})[0]
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(want, run_ort("RoiAlign", [X_ROI, rois, i64(0, 2)], attrs)[0], rtol=RTOL, atol=ATOL)


def test_roi_align_inverted_roi_pools_to_zero():
    # ONNX Runtime overflows on this one; an empty sampling grid averages nothing
    y = run_edgeinfer("RoiAlign", [X_ROI, f32(5, 5, 1, 1).reshape(1, 4), i64(0)], {"output_height": 2})[0]
    assert y.shape == (1, 4, 2, 1) and not y.any()


def test_roi_align_hand_computed_bilinear_sample():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    # one sample at the RoI centre (1.5, 1.5) after the half-pixel shift: mean of 5, 6, 9, 10
    y = run_edgeinfer("RoiAlign", [x, f32(1, 1, 3, 3).reshape(1, 4), i64(0)], {"sampling_ratio": 1})[0]
    np.testing.assert_allclose(y.reshape(-1), [7.5])


@pytest.mark.parametrize("inputs,attrs,error,match", [
    ([X_ROI, ROIS, BATCH[:3]], {}, ShapeInferenceError, "number of RoIs"),
    ([X_ROI, ROIS[:, :3], BATCH], {}, ShapeInferenceError, "4 coordinates"),
    ([X_ROI[0], ROIS, BATCH], {}, ShapeInferenceError, "rank 4"),
    ([X_ROI, ROIS, BATCH], {"mode": "sum"}, ShapeInferenceError, "mode"),
    ([X_ROI, ROIS, BATCH], {"output_height": 0}, ShapeInferenceError, "output_height"),
    ([X_ROI, ROIS, BATCH + 3], {}, KernelError, "batch_indices"),
    ([X_ROI, ROIS * np.nan, BATCH], {}, KernelError, "finite"),
])
def test_roi_align_errors(inputs, attrs, error, match):
    with pytest.raises(error, match=match) as info:
        run_edgeinfer("RoiAlign", inputs, attrs)
    assert "node 'n0'" in str(info.value)


# ---------------------------------------------------------------------------- GridSample
def random_grid(seed, shape):
    grid = rng(seed).uniform(-1.6, 1.6, shape).astype(np.float32)
    # exact edges, halfway points and far-away coordinates
    grid.reshape(-1)[:8] = [-1, 1, 0, 1.0001, -1.25, 3.7, -5.5, 0.5]
    return grid


GRID_CASES = list(itertools.product(["linear", "nearest", "cubic"], ["zeros", "border", "reflection"], [0, 1]))


@pytest.mark.parametrize("mode,padding,align", GRID_CASES)
def test_grid_sample_2d_against_ort(mode, padding, align):
    x = rng(4).standard_normal((2, 3, 6, 7)).astype(np.float32)
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    check_node("GridSample", [x, random_grid(5, (2, 4, 5, 2))], attrs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode,padding,align", [c for c in GRID_CASES if c[0] != "cubic"])
def test_grid_sample_3d_against_ort(mode, padding, align):
    x = rng(6).standard_normal((1, 2, 4, 5, 6)).astype(np.float32)
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    check_node("GridSample", [x, random_grid(7, (1, 3, 4, 2, 3))], attrs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode,padding,align", GRID_CASES)
def test_grid_sample_1d_matches_2d_with_one_row(mode, padding, align):
    # ONNX Runtime has no 1-D GridSample; a 1-pixel-high image sampled on its row is the same
    x = rng(8).standard_normal((2, 3, 9)).astype(np.float32)
    g = random_grid(9, (2, 11, 1))
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    got = run_edgeinfer("GridSample", [x, g], attrs)[0]
    grid_2d = np.concatenate([g[:, None], np.zeros_like(g)[:, None]], -1)  # y = 0: the row itself
    want = run_ort("GridSample", [x[:, :, None], grid_2d], attrs)[0][:, :, 0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_grid_sample_opset16_mode_names():
    x = rng(10).standard_normal((1, 2, 5, 5)).astype(np.float32)
    g = random_grid(11, (1, 3, 3, 2))
    for old, new in (("bilinear", "linear"), ("bicubic", "cubic")):
        a = run_edgeinfer("GridSample", [x, g], {"mode": old})[0]
        b = run_edgeinfer("GridSample", [x, g], {"mode": new})[0]
        np.testing.assert_array_equal(a, b)
    check_node("GridSample", [x, g], {"mode": "bicubic"}, opset=16, rtol=RTOL, atol=ATOL)


def test_grid_sample_nearest_rounds_half_to_even():
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)
    # align_corners=1: x = -1/3 -> pixel 1.0, x = 0 -> pixel 1.5 -> 2, x = -2/3 -> 0.5 -> 0
    g = np.array([[[[-1 / 3, 0], [0, 0], [-2 / 3, 0]]]], np.float32)
    y = run_edgeinfer("GridSample", [x, g], {"mode": "nearest", "align_corners": 1})[0]
    assert y.reshape(-1).tolist() == [1, 2, 0]


def test_grid_sample_other_dtypes():
    g = random_grid(12, (1, 4, 4, 2))
    x = rng(13).integers(0, 255, (1, 2, 5, 6)).astype(np.uint8)
    near = run_edgeinfer("GridSample", [x, g], {"mode": "nearest"})[0]
    np.testing.assert_array_equal(near, run_edgeinfer("GridSample", [x.astype(np.float32), g],
                                                      {"mode": "nearest"})[0].astype(np.uint8))
    lin = run_edgeinfer("GridSample", [x, g], {"mode": "linear"})[0]
    as_float = run_edgeinfer("GridSample", [x.astype(np.float32), g], {"mode": "linear"})[0]
    assert lin.dtype == np.uint8
    np.testing.assert_array_equal(lin, np.trunc(as_float).astype(np.uint8))  # computed in float, then cast
    xh = rng(14).standard_normal((1, 2, 5, 6)).astype(np.float16)
    half = run_edgeinfer("GridSample", [xh, g.astype(np.float16)], {"mode": "cubic"})[0]
    assert half.dtype == np.float16
    full = run_edgeinfer("GridSample", [xh.astype(np.float32), g.astype(np.float16).astype(np.float32)],
                         {"mode": "cubic"})[0]
    np.testing.assert_allclose(half.astype(np.float32), full, rtol=1e-2, atol=1e-2)
    check_node("GridSample", [xh.astype(np.float64), g.astype(np.float64)], {"mode": "linear"})


def test_grid_sample_empty_output():
    x = rng(15).standard_normal((1, 2, 5, 6)).astype(np.float32)
    y = run_edgeinfer("GridSample", [x, np.zeros((1, 0, 3, 2), np.float32)])[0]
    assert y.shape == (1, 2, 0, 3)


@pytest.mark.parametrize("grid_shape,attrs,match,dims_only", [
    ((1, 3, 3, 3), {}, "last dim", True),
    ((1, 3, 2), {}, "rank", False),
    ((2, 3, 3, 2), {}, "batch", True),
    ((1, 3, 3, 2), {"mode": "area"}, "mode", False),
    ((1, 3, 3, 2), {"padding_mode": "wrap"}, "padding_mode", False),
])
def test_grid_sample_errors(grid_shape, attrs, match, dims_only):
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ShapeInferenceError, match=match) as info:
        run_edgeinfer("GridSample", [x, np.zeros(grid_shape, np.float32)], attrs)
    assert "node 'n0'" in str(info.value)
    if dims_only:  # caught at run time when the dims are not known at compile time
        with pytest.raises(KernelError, match="n0.*grid"):
            run_edgeinfer("GridSample", [x, np.zeros(grid_shape, np.float32)], shapes_known=False)


# ---------------------------------------------------------------------------- AffineGrid
@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (1, 1, 7, 2), (2, 3, 4, 5, 6), (1, 2, 2, 3, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_grid_against_ort(align, size, dtype):
    r = len(size) - 2
    theta = rng(16).standard_normal((size[0], r, r + 1)).astype(dtype)
    check_node("AffineGrid", [theta, i64(*size)], {"align_corners": align}, const_inputs=(1,))


@pytest.mark.parametrize("size", [(1, 1, 1, 3), (2, 1, 4, 1), (1, 1, 1, 2, 1)])
def test_affine_grid_single_pixel_axis_against_ort(size):
    r = len(size) - 2
    theta = rng(17).standard_normal((size[0], r, r + 1)).astype(np.float32)
    check_node("AffineGrid", [theta, i64(*size)], {"align_corners": 0}, const_inputs=(1,))


def test_affine_grid_single_pixel_axis_with_align_corners_is_the_centre():
    # ONNX's function body divides by zero here (NaN) and ONNX Runtime gives 1; PyTorch's
    # affine_grid, which the spec follows, puts a lone pixel at 0
    theta = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)
    y = run_edgeinfer("AffineGrid", [theta, i64(1, 1, 1, 3)], {"align_corners": 1})[0]
    np.testing.assert_allclose(y.reshape(-1, 2), [[-1, 0], [0, 0], [1, 0]])


def test_affine_grid_shape_with_runtime_size():
    from edgeinfer.graph import Node, TensorType
    from edgeinfer.kernels import OpContext, get_schema, resolve_attrs

    node = Node("AffineGrid", ["theta", "size"], ["grid"], {}, name="a")
    schema = get_schema("AffineGrid")
    ctx = OpContext(node, [TensorType("float32", ("N", 3, 4)), TensorType("int64", (5,))], [None, None])
    (y,) = schema.infer(ctx, **resolve_attrs(schema, node))
    assert y == TensorType("float32", ("N", None, None, None, 3))


@pytest.mark.parametrize("theta_shape,size,error,match", [
    ((1, 2, 4), (1, 1, 3, 3), ShapeInferenceError, r"\[N, 2, 3\]"),
    ((1, 2, 3), (1, 1, 3, 3, 3), ShapeInferenceError, "size"),
    ((2, 2, 3), (1, 1, 3, 3), ShapeInferenceError, "batch"),
])
def test_affine_grid_errors(theta_shape, size, error, match):
    theta = np.zeros(theta_shape, np.float32)
    with pytest.raises(error, match=match) as info:
        run_edgeinfer("AffineGrid", [theta, i64(*size)], const_inputs=(1,))
    assert "node 'n0'" in str(info.value)
    with pytest.raises(KernelError, match="n0.*theta"):
        run_edgeinfer("AffineGrid", [theta, i64(*size)], shapes_known=False)


# ---------------------------------------------------------------------------- DeformConv
def deform_case(seed, n=2, group=1, offset_group=1, kernel=(3, 3), strides=(1, 1), dilations=(1, 1),
                pads=(1, 1, 1, 1), hw=(7, 6), bias=True, mask=True, per_group=2, out_per_group=2):
    g = rng(seed)
    c = per_group * group * offset_group
    m = out_per_group * group
    x = g.standard_normal((n, c) + hw).astype(np.float32)
    w = g.standard_normal((m, c // group) + kernel).astype(np.float32)
    outs = tuple((d + pads[i] + pads[i + 2] - ((k - 1) * dl + 1)) // s + 1
                 for i, (d, k, s, dl) in enumerate(zip(hw, kernel, strides, dilations)))
    taps = kernel[0] * kernel[1]
    offset = (g.standard_normal((n, offset_group * taps * 2) + outs) * 2).astype(np.float32)
    inputs = [x, w, offset, g.standard_normal(m).astype(np.float32) if bias else None,
              g.uniform(0, 1, (n, offset_group * taps) + outs).astype(np.float32) if mask else None]
    while inputs[-1] is None:
        inputs.pop()
    attrs = {"group": group, "offset_group": offset_group, "strides": list(strides), "dilations": list(dilations),
             "pads": list(pads)}
    return inputs, attrs


@pytest.mark.parametrize("kw", [
    {},
    {"bias": False, "mask": False},
    {"group": 2},
    {"offset_group": 2},
    {"group": 2, "offset_group": 3, "bias": False},
    {"strides": (2, 1), "dilations": (1, 2), "pads": (0, 2, 1, 0)},
    {"kernel": (2, 3), "pads": (0, 0, 0, 0), "mask": False},
    {"n": 1, "kernel": (1, 1), "pads": (0, 0, 0, 0)},
])
def test_deform_conv_against_ort(kw):
    inputs, attrs = deform_case(17, **kw)
    check_node("DeformConv", inputs, attrs, rtol=RTOL, atol=1e-4)


def test_deform_conv_with_kernel_shape_attribute_and_empty_bias():
    inputs, attrs = deform_case(18, bias=False, mask=True)
    inputs[3] = None
    got = run_edgeinfer("DeformConv", inputs, {**attrs, "kernel_shape": [3, 3]})[0]
    want = run_ort("DeformConv", [inputs[0], inputs[1], inputs[2], None, inputs[4]], attrs)[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-4)


def test_deform_conv_with_zero_offsets_is_conv():
    # 1-D (ONNX Runtime's DeformConv is 2-D only): zero offsets sample the regular grid
    g = rng(19)
    x = g.standard_normal((2, 4, 9)).astype(np.float32)
    w = g.standard_normal((6, 2, 3)).astype(np.float32)
    attrs = {"group": 2, "strides": [2], "pads": [1, 2], "dilations": [2]}
    want = run_ort("Conv", [x, w], attrs)[0]
    offset = np.zeros((2, 3, want.shape[2]), np.float32)
    got = run_edgeinfer("DeformConv", [x, w, offset], attrs)[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-4)


def test_deform_conv_half_pixel_offset_averages_neighbours():
    x = np.arange(5, dtype=np.float32).reshape(1, 1, 5)
    w = np.ones((1, 1, 1), np.float32)
    offset = np.full((1, 1, 5), 0.5, np.float32)  # each output reads halfway to the next pixel
    y = run_edgeinfer("DeformConv", [x, w, offset], {})[0]
    np.testing.assert_allclose(y.reshape(-1), [0.5, 1.5, 2.5, 3.5, 2.0])  # the last one half outside


@pytest.mark.parametrize("change,error,match", [
    ({"offset_group": 3}, ShapeInferenceError, "offset_group"),
    ({"group": 3}, ShapeInferenceError, "group"),
    ({"offset": np.zeros((2, 17, 7, 6), np.float32)}, ShapeInferenceError, "offset"),
    ({"kernel_shape": [2, 2]}, ShapeInferenceError, "kernel_shape"),
])
def test_deform_conv_errors(change, error, match):
    inputs, attrs = deform_case(20, mask=False, bias=False)
    if "offset" in change:
        inputs[2] = change.pop("offset")
    with pytest.raises(error, match=match) as info:
        run_edgeinfer("DeformConv", inputs, {**attrs, **change})
    assert "node 'n0'" in str(info.value)


def test_deform_conv_runtime_shape_errors_name_the_node():
    inputs, attrs = deform_case(21, mask=True, bias=True)
    inputs[4] = inputs[4][:, :4]
    with pytest.raises(KernelError, match="n0.*mask"):
        run_edgeinfer("DeformConv", inputs, attrs, shapes_known=False)


def test_deform_conv_rejects_integer_input():
    inputs, attrs = deform_case(22, mask=False, bias=False)
    with pytest.raises(ShapeInferenceError, match="dtype int32"):
        run_edgeinfer("DeformConv", [inputs[0].astype(np.int32), *inputs[1:]], attrs)


# -------------------------------------------------------------------------------- Resize
def reference_resize(x, roi, scales, sizes, attrs):
    from onnx.reference import ReferenceEvaluator

    names = ["x", "roi" if roi is not None else "", "scales" if scales is not None else "",
             "sizes" if sizes is not None else ""]
    while not names[-1]:
        names.pop()
    node = helper.make_node("Resize", names, ["y"], **attrs)
    feeds = {k: v for k, v in zip(("x", "roi", "scales", "sizes"), (x, roi, scales, sizes)) if v is not None}
    return ReferenceEvaluator(node).run(None, feeds)[0]


def test_resize_downsample_align_corners_uses_the_unfloored_length():
    # onnx/onnx#2462: length_resized is in * scale = 2.4, so the second sample is at 3 / 1.4
    x = np.arange(1, 9, dtype=np.float32).reshape(1, 1, 2, 4)
    y = run_edgeinfer("Resize", [x, None, f32(1, 1, 0.6, 0.6)],
                      {"mode": "linear", "coordinate_transformation_mode": "align_corners"})[0]
    np.testing.assert_allclose(y.reshape(-1), [1, 1 + 3 / 1.4], rtol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("coord", ["align_corners", "tf_crop_and_resize", "pytorch_half_pixel"])
@pytest.mark.parametrize("scales", [(0.6, 0.5), (1.5, 0.8), (3, 1.01), (0.3, 0.75)])
def test_resize_fractional_scales_against_the_onnx_reference(mode, coord, scales):
    # (coordinates are float32, as in ONNX Runtime; scales whose float32 and float64 results
    # round the same way keep nearest-mode ties out of the comparison with the float64 reference)
    x = rng(23).standard_normal((1, 2, 5, 7)).astype(np.float32)
    roi = f32(0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7) if coord == "tf_crop_and_resize" else None
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    s = f32(1, 1, *scales)
    want = reference_resize(x, roi, s, None, attrs)
    got = run_edgeinfer("Resize", [x, roi, s], attrs, const_inputs=(1, 2))[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("coord", ["align_corners", "tf_crop_and_resize", "half_pixel"])
@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_sizes_with_policies_against_ort(mode, coord, policy):
    # with sizes (and integer resulting lengths) ONNX Runtime agrees with the spec
    x = rng(24).standard_normal((1, 2, 6, 8)).astype(np.float32)
    roi = f32(0.1, 0.2, 0.9, 0.7) if coord == "tf_crop_and_resize" else None
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "axes": [2, 3],
             "keep_aspect_ratio_policy": policy, "extrapolation_value": -2.0}
    sizes = i64(3, 4) if policy != "not_smaller" else i64(9, 12)  # ratio 0.5 or 1.5 on both axes
    check_node("Resize", [x, roi, None, sizes], attrs, const_inputs=(1, 3), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode,a,exclude", [("linear", -0.75, 0), ("cubic", -0.5, 0), ("cubic", -0.75, 1)])
@pytest.mark.parametrize("sizes", [(4, 3), (15, 5), (1, 2)])
def test_resize_antialias_against_ort(mode, a, exclude, sizes):
    x = rng(25).standard_normal((1, 2, 9, 11)).astype(np.float32)
    attrs = {"mode": mode, "antialias": 1, "cubic_coeff_a": a, "exclude_outside": exclude, "axes": [2, 3]}
    check_node("Resize", [x, None, None, i64(*sizes)], attrs, const_inputs=(3,), rtol=RTOL, atol=ATOL)


def test_resize_float16_interpolates_in_float32():
    x = rng(26).standard_normal((1, 1, 6, 9)).astype(np.float16)
    attrs = {"mode": "cubic"}
    got = run_edgeinfer("Resize", [x, None, f32(1, 1, 1.5, 0.5)], attrs, const_inputs=(2,))[0]
    want = run_edgeinfer("Resize", [x.astype(np.float32), None, f32(1, 1, 1.5, 0.5)], attrs, const_inputs=(2,))[0]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want.astype(np.float16))


# ----------------------------------------------------------------------------- MaxUnpool
def test_max_unpool_output_shape_scatters_into_that_shape():
    # indices are flat positions in MaxPool's input (5 x 5 here), as ONNX Runtime reads them
    x = rng(27).standard_normal((1, 2, 5, 5)).astype(np.float32)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    y, idx = run_ort("MaxPool", [x], attrs, n_outputs=2)
    out = check_node("MaxUnpool", [y, idx, i64(1, 2, 5, 5)], attrs, const_inputs=(2,))[0]
    assert out.shape == (1, 2, 5, 5)
    np.testing.assert_array_equal(out[out != 0], x[out != 0])


def test_max_unpool_bad_output_shape():
    y = np.ones((1, 1, 2, 2), np.float32)
    idx = i64(0, 1, 2, 3).reshape(1, 1, 2, 2)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    with pytest.raises(KernelError, match="n0.*output_shape"):
        run_edgeinfer("MaxUnpool", [y, idx, i64(4, 4)], attrs, shapes_known=False)
    with pytest.raises((KernelError, GraphError), match="n0.*outside"):
        run_edgeinfer("MaxUnpool", [y, idx, i64(1, 1, 1, 3)], attrs)


# ------------------------------------------------------------------- dtypes, unknown shapes
def test_low_precision_inputs_compute_in_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    g = rng(28)
    x = g.standard_normal((1, 2, 5, 6)).astype(bf16)
    grid = g.uniform(-1, 1, (1, 3, 3, 2)).astype(bf16)
    cases = [
        ("GridSample", [x, grid], {"mode": "cubic"}),
        ("RoiAlign", [x, f32(0, 0, 4, 3).reshape(1, 4).astype(bf16), i64(0)], {"output_height": 2}),
        ("DeformConv", [x, g.standard_normal((2, 2, 3, 3)).astype(bf16), np.zeros((1, 18, 3, 4), bf16)], {}),
        ("AffineGrid", [g.standard_normal((1, 2, 3)).astype(bf16), i64(1, 1, 3, 4)], {}),
    ]
    for op, inputs, attrs in cases:
        got = run_edgeinfer(op, inputs, attrs)[0]
        want = run_edgeinfer(op, [a.astype(np.float32) if a.dtype == bf16 else a for a in inputs], attrs)[0]
        assert got.dtype == bf16, op
        np.testing.assert_allclose(got.astype(np.float32), want.astype(bf16).astype(np.float32), rtol=1e-2,
                                   atol=1e-2, err_msg=op)


@pytest.mark.parametrize("op,inputs,attrs", [
    ("NonMaxSuppression", [random_boxes(0, 2, 9, 0), np.ones((2, 3, 9), np.float32), i64(2), f32(0.5)], {}),
    ("RoiAlign", [X_ROI, ROIS, BATCH], {"output_height": 2, "output_width": 3}),
    ("GridSample", [X_ROI, random_grid(1, (3, 2, 4, 2))], {"mode": "cubic"}),
    ("AffineGrid", [np.ones((2, 3, 4), np.float32), i64(2, 1, 2, 3, 4)], {}),
    ("DeformConv", deform_case(2)[0], deform_case(2)[1]),
])
def test_unknown_input_shapes(op, inputs, attrs):
    want = run_edgeinfer(op, inputs, attrs)[0]
    got = run_edgeinfer(op, inputs, attrs, shapes_known=False)[0]
    np.testing.assert_array_equal(got, want)
