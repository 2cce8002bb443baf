"""Resize against ONNX Runtime (and the ONNX reference evaluator where ONNX Runtime departs
from the spec): every mode x coordinate transformation, with scales and with sizes."""
import numpy as np
import pytest
from onnx import helper

from edgeinfer.errors import KernelError, ShapeInferenceError
from opcheck import check_node, run_edgeinfer, run_ort

RTOL, ATOL = 1e-4, 1e-5
MODES = ["nearest", "linear", "cubic"]
COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
          "tf_crop_and_resize"]
ROI = np.array([0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7], np.float32)



def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(dtype)


X = rand(1, 2, 5, 7)


def f32(*v):
    return np.array(v, np.float32)


def i64(*v):
    return np.array(v, np.int64)


# ONNX Runtime copies an axis whose scale is exactly 1 even under tf_crop_and_resize (the spec
# crops it to the roi), so the ORT comparisons use scales != 1 on resized spatial axes.
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("scales", [(2, 2), (0.6, 0.5), (1.5, 0.8), (3, 1.01)])
def test_resize_scales(mode, coord, scales):
    roi = ROI if coord == "tf_crop_and_resize" else None
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    _check_scales(X, roi, f32(1, 1, *scales), attrs)


def _departs_from_spec(x, scales, coord) -> bool:
    """ONNX Runtime floors ``in * scale`` before align_corners / tf_crop_and_resize use it;
    the spec (onnx/onnx#2462) uses the unfloored length, so there the reference decides."""
    lengths = np.asarray(x.shape, np.float64) * np.asarray(scales, np.float64)
    return coord in ("align_corners", "tf_crop_and_resize") and not np.allclose(lengths, np.round(lengths))


def _check_scales(x, roi, scales, attrs):
    if not _departs_from_spec(x, scales, attrs.get("coordinate_transformation_mode")):
        check_node("Resize", [x, roi, scales], attrs, const_inputs=(1, 2), rtol=RTOL, atol=ATOL)
        return
    from onnx.reference import ReferenceEvaluator

    names = ["x", "roi" if roi is not None else "", "scales"]
    feeds = {k: v for k, v in zip(("x", "roi", "scales"), (x, roi, scales)) if v is not None}
    want = ReferenceEvaluator(helper.make_node("Resize", names, ["y"], **attrs)).run(None, feeds)[0]
    got = run_edgeinfer("Resize", [x, roi, scales], attrs, const_inputs=(1, 2))[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("sizes", [(10, 14), (3, 4), (1, 9)])
def test_resize_sizes(mode, coord, sizes):
    roi = ROI if coord == "tf_crop_and_resize" else None
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    check_node("Resize", [X, roi, None, i64(1, 2, *sizes)], attrs, const_inputs=(1, 3), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("coord", ["asymmetric", "half_pixel", "align_corners"])
# (0.75, 0.5): exact in binary, and no sample lands on a rounding tie that float32 and the float64 reference would
# break differently (0.6 * 5 is 3.0000000000000004 in float64)
@pytest.mark.parametrize("scales", [(2, 2), (0.75, 0.5), (1.5, 2.5)])
def test_resize_nearest_modes(nearest_mode, coord, scales):
    attrs = {"mode": "nearest", "nearest_mode": nearest_mode, "coordinate_transformation_mode": coord}
    _check_scales(X, None, f32(1, 1, *scales), attrs)


@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("a", [-0.75, -0.5])
@pytest.mark.parametrize("scales", [(2, 2), (0.6, 0.5)])
def test_resize_cubic_options(exclude_outside, a, scales):
    attrs = {"mode": "cubic", "exclude_outside": exclude_outside, "cubic_coeff_a": a}
    check_node("Resize", [X, None, f32(1, 1, *scales)], attrs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [(0.6, 0.5), (0.3, 0.4), (2, 1.5)])
@pytest.mark.parametrize("exclude_outside", [0, 1])
def test_resize_antialias_scales(mode, scales, exclude_outside):
    attrs = {"mode": mode, "antialias": 1, "exclude_outside": exclude_outside}
    check_node("Resize", [rand(1, 2, 11, 13), None, f32(1, 1, *scales)], attrs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_antialias_sizes(mode):
    attrs = {"mode": mode, "antialias": 1, "cubic_coeff_a": -0.5}
    check_node("Resize", [rand(1, 2, 11, 13), None, None, i64(1, 2, 4, 5)], attrs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("mode,sizes", [("linear", (8, 8)), ("nearest", (3, 8)), ("cubic", (6, 4))])
def test_resize_keep_aspect_ratio(policy, mode, sizes):
    attrs = {"mode": mode, "axes": [2, 3], "keep_aspect_ratio_policy": policy}
    check_node("Resize", [X, None, None, i64(*sizes)], attrs, rtol=RTOL, atol=ATOL)


def test_resize_axes_in_any_order():
    check_node("Resize", [X, None, f32(2, 3)], {"mode": "linear", "axes": [3, 2]}, rtol=RTOL, atol=ATOL)
    check_node("Resize", [X, None, f32(1.5)], {"mode": "nearest", "axes": [-2]}, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("roi", [(0.2, 0.1, 0.8, 0.9), (-0.2, 0.1, 1.3, 0.9)])
def test_resize_tf_crop_extrapolation(mode, roi):
    attrs = {"mode": mode, "axes": [2, 3], "coordinate_transformation_mode": "tf_crop_and_resize",
             "extrapolation_value": -1.0}
    check_node("Resize", [X, f32(*roi), None, i64(6, 5)], attrs, const_inputs=(1, 3), rtol=RTOL, atol=ATOL)


def test_resize_output_size_is_floored_in_double_precision_like_onnx_shape_inference():
    # 700 * float32(0.45) = 314.99999: ONNX shape inference and the reference say 314, ONNX
    # Runtime multiplies in float32 and gets 315. edgeinfer follows ONNX.
    x = rand(1, 1, 2, 700)
    y = run_edgeinfer("Resize", [x, None, f32(1, 1, 1, 0.45)], {"mode": "nearest"}, const_inputs=(2,))[0]
    assert y.shape == (1, 1, 2, 314)


def test_resize_tf_crop_crops_unit_scale_axes_like_the_onnx_reference():
    from onnx.reference import ReferenceEvaluator

    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}
    scales = f32(1, 1, 1, 2)
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], **attrs)
    want = ReferenceEvaluator(node).run(None, {"x": X, "roi": ROI, "scales": scales})[0]
    got = run_edgeinfer("Resize", [X, ROI, scales], attrs, const_inputs=(1, 2))[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode,antialias", [("linear", 0), ("cubic", 0), ("linear", 1), ("cubic", 1)])
@pytest.mark.parametrize("scale", [0.4, 1.7])
def test_resize_long_axis_uses_per_tap_gathers(mode, antialias, scale):
    # short axes are interpolated by a dense GEMM, long ones by gathers: cover both
    x = rand(1, 2, 3, 700)
    attrs = {"mode": mode, "antialias": antialias}
    check_node("Resize", [x, None, f32(1, 1, 1.5, scale)], attrs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", MODES)
def test_resize_rank_2(mode):
    check_node("Resize", [rand(6, 5), None, f32(1.5, 0.6)], {"mode": mode}, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_rank_3_and_5(mode):
    check_node("Resize", [rand(2, 3, 8), None, f32(1, 1, 2.5)], {"mode": mode}, rtol=RTOL, atol=ATOL)
    check_node("Resize", [rand(1, 2, 3, 4, 5), None, f32(1, 1, 2, 0.5, 1.5)], {"mode": mode}, rtol=RTOL, atol=ATOL)


def test_resize_uint8_images():
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 5, 6)).astype(np.uint8)
    check_node("Resize", [x, None, f32(1, 1, 2, 2)], {"mode": "nearest"})
    # ONNX Runtime rounds 8-bit linear results through fixed point: allow one step
    check_node("Resize", [x, None, f32(1, 1, 1.5, 0.7)], {"mode": "linear"}, atol=1.01)


def test_resize_empty_roi_and_scales_mean_missing():
    # older exporters write a missing input as an empty tensor (ONNX Runtime rejects that at
    # opset 21, so it runs the same node with the inputs really missing)
    empty = np.zeros((0,), np.float32)
    want = run_ort("Resize", [X, None, None, i64(1, 2, 10, 3)], {"mode": "linear"})[0]
    got = run_edgeinfer("Resize", [X, empty, empty, i64(1, 2, 10, 3)], {"mode": "linear"}, const_inputs=(1, 2, 3))[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_resize_with_runtime_scales_and_unknown_shapes():
    scales = f32(1, 1, 2, 0.5)
    want = run_ort("Resize", [X, None, scales], {"mode": "cubic"})[0]
    got = run_edgeinfer("Resize", [X, None, scales], {"mode": "cubic"}, shapes_known=False)[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_resize_shape_rule_with_runtime_sizes_keeps_other_dims():
    from edgeinfer.graph import Node, TensorType
    from edgeinfer.kernels import OpContext, get_schema, resolve_attrs

    node = Node("Resize", ["x", "", "", "sizes"], ["y"], {"axes": [2, 3]}, name="r")
    schema = get_schema("Resize")
    ctx = OpContext(node, [TensorType("float32", ("N", 3, 8, 8)), None, None, TensorType("int64", (2,))],
                    [None, None, None, None])
    (y,) = schema.infer(ctx, **resolve_attrs(schema, node))
    assert y.shape == ("N", 3, None, None)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("inputs,match", [
    ([X, None, f32(1, 1, 2, 2), i64(1, 2, 10, 14)], "only one"),
    ([X, None, f32(2, 2)], "scales has 2 values"),
    ([X, None, None, i64(4, 4)], "sizes has 2 values"),
    ([X, None, f32(1, 1, -2, 2)], "positive"),
    ([X], "one of"),
])
def test_resize_bad_inputs(inputs, match):
    with pytest.raises(ShapeInferenceError, match=match) as info:
        run_edgeinfer("Resize", inputs, {"mode": "linear"}, const_inputs=(1, 2, 3))
    assert "node 'n0'" in str(info.value)


@pytest.mark.parametrize("attrs,match", [
    ({"mode": "bilinear"}, "mode"),
    ({"coordinate_transformation_mode": "tf_half_pixel_for_nn"}, "coordinate_transformation_mode"),
    ({"axes": [4]}, "axis"),
])
def test_resize_bad_attributes(attrs, match):
    with pytest.raises(ShapeInferenceError, match=match):
        run_edgeinfer("Resize", [X, None, f32(1, 1, 2, 2)], attrs, const_inputs=(2,))


def test_resize_runtime_scales_of_wrong_length_fail_at_run_time():
    with pytest.raises(KernelError, match="n0.*scales"):
        run_edgeinfer("Resize", [X, None, f32(2, 2)], {"mode": "nearest"}, shapes_known=False)
