"""Conv, ConvTranspose and the fused conv/gemm/matmul kernels against ONNX Runtime and numpy."""
import numpy as np
import pytest
from onnx import helper

from edgeinfer.errors import GraphError, ShapeInferenceError
from opcheck import check_node, run_edgeinfer, run_ort

RTOL, ATOL = 1e-4, 1e-4



def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(dtype)


def conv_check(x_shape, w_shape, attrs, bias=True, const=(1, 2), **kw):
    x, w = rand(*x_shape), rand(*w_shape, seed=1)
    inputs = [x, w] + ([rand(w_shape[0], seed=2)] if bias else [])
    return check_node("Conv", inputs, attrs, const_inputs=const, rtol=RTOL, atol=ATOL, **kw)


# ------------------------------------------------------------------------------ Conv
@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("pads", ["none", "half", "asym"])
def test_conv2d_kernel_stride_pads(k, stride, pads):
    p = {"none": [0, 0, 0, 0], "half": [k // 2] * 4, "asym": [0, 1, k // 2, 2]}[pads]
    conv_check((2, 3, 13, 12), (5, 3, k, k), {"strides": [stride, stride], "pads": p})


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [2, 3])
def test_conv2d_dilation(stride, k):
    conv_check((1, 3, 14, 13), (4, 3, k, k), {"dilations": [2, 2], "strides": [stride, stride], "pads": [2, 1, 2, 1]})


@pytest.mark.parametrize("group,c_in,m", [(2, 4, 6), (3, 6, 3), (4, 4, 4), (4, 4, 8), (6, 6, 18)])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_grouped_and_depthwise(group, c_in, m, stride):
    attrs = {"group": group, "strides": [stride, stride], "pads": [1, 1, 1, 1]}
    conv_check((2, c_in, 11, 10), (m, c_in // group, 3, 3), attrs)


def test_conv2d_depthwise_dilated_asymmetric():
    conv_check((1, 8, 12, 15), (16, 1, 3, 5), {"group": 8, "dilations": [2, 1], "pads": [2, 0, 1, 3]})


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv2d_auto_pad(auto_pad, k, stride):
    conv_check((1, 2, 10, 11), (3, 2, k, k), {"auto_pad": auto_pad, "strides": [stride, stride]})


@pytest.mark.parametrize("group", [1, 2, 32])
def test_conv2d_wide_channels_large_image(group):
    # enough channels and pixels for the per-tap GEMM path (group 1) and the flat depthwise path
    conv_check((1, 32, 48, 50), (32, 32 // group, 3, 3), {"group": group, "pads": [1, 1, 1, 1]}, const=())


def test_conv2d_wide_channels_dilated_unpadded():
    conv_check((2, 32, 52, 48), (8, 32, 3, 3), {"dilations": [2, 3]})


def test_conv2d_pointwise_strided_no_bias_runtime_weight():
    conv_check((2, 8, 9, 9), (16, 8, 1, 1), {"strides": [2, 2]}, bias=False, const=())


def test_conv_kernel_shape_attribute_matches_weight():
    conv_check((1, 2, 7, 7), (3, 2, 3, 2), {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1]})


@pytest.mark.parametrize("attrs", [
    {"pads": [1, 2], "strides": [2]}, {"dilations": [3]}, {"auto_pad": "SAME_UPPER", "strides": [3]},
])
def test_conv1d(attrs):
    conv_check((2, 3, 17), (4, 3, 3), attrs)


@pytest.mark.parametrize("attrs", [
    {"pads": [1] * 6}, {"strides": [2, 1, 2], "group": 2}, {"group": 4, "pads": [1, 0, 1, 1, 0, 1]},
])
def test_conv3d(attrs):
    g = attrs.get("group", 1)
    conv_check((1, 4, 6, 7, 5), (4, 4 // g, 3, 3, 3), attrs)


def test_conv_float64_matches_onnx_reference():
    # ONNX Runtime has no float64 Conv; the ONNX reference evaluator does
    from onnx.reference import ReferenceEvaluator

    x, w = rand(1, 3, 8, 8, dtype=np.float64), rand(4, 3, 3, 3, seed=1, dtype=np.float64)
    attrs = {"pads": [1, 1, 1, 1], "strides": [2, 1]}
    want = ReferenceEvaluator(helper.make_node("Conv", ["x", "w"], ["y"], **attrs)).run(None, {"x": x, "w": w})[0]
    got = run_edgeinfer("Conv", [x, w], attrs, const_inputs=(1,))[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("group", [1, 4])
def test_conv_float16_is_computed_in_float32(group):
    x, w = rand(1, 4, 9, 9, dtype=np.float16), rand(8, 4 // group, 3, 3, seed=1, dtype=np.float16)
    check_node("Conv", [x, w], {"pads": [1, 1, 1, 1], "group": group}, const_inputs=(1,), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1]}, {"group": 4, "strides": [2, 2]}, {"auto_pad": "SAME_UPPER"}])
def test_conv_with_unknown_shapes_matches_ort(attrs):
    g = attrs.get("group", 1)
    x, w, b = rand(2, 4, 9, 9), rand(4, 4 // g, 3, 3, seed=1), rand(4, seed=2)
    want = run_ort("Conv", [x, w, b], attrs)[0]
    got = run_edgeinfer("Conv", [x, w, b], attrs, const_inputs=(1, 2), shapes_known=False)[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # the same compiled kernel must serve another batch size (plans are cached per shape)
    got2 = run_edgeinfer("Conv", [x[:1], w, b], attrs, const_inputs=(1, 2), shapes_known=False)[0]
    np.testing.assert_allclose(got2, want[:1], rtol=RTOL, atol=ATOL)


def test_conv_shape_rule_keeps_symbolic_batch():
    from edgeinfer.graph import Node, TensorType
    from edgeinfer.kernels import OpContext, get_schema, resolve_attrs

    node = Node("Conv", ["x", "w"], ["y"], {"strides": [2, 2], "pads": [1, 1, 1, 1]}, name="c")
    schema = get_schema("Conv")
    types = [TensorType("float32", ("N", 3, 224, "W")), TensorType("float32", (8, 3, 3, 3))]
    ctx = OpContext(node, types, [None, None])
    (y,) = schema.infer(ctx, **resolve_attrs(schema, node))
    assert y == TensorType("float32", ("N", 8, 112, None))


# ------------------------------------------------------------------------ Conv errors
def _shape_error(op, x_shape, w_shape, attrs, match, domain=""):
    x, w = rand(*x_shape), rand(*w_shape, seed=1)
    with pytest.raises(ShapeInferenceError, match=match) as info:
        run_edgeinfer(op, [x, w], attrs, const_inputs=(1,), domain=domain)
    assert "node 'n0'" in str(info.value)


def test_conv_weight_rank_larger_than_input_rank_is_a_shape_error():
    _shape_error("Conv", (1, 2, 5, 5), (3, 2, 3, 3, 3), {}, "rank")


def test_conv_input_rank_too_small():
    _shape_error("Conv", (2, 5), (3, 5), {}, "rank")


@pytest.mark.parametrize("attrs,match", [
    ({"strides": [1, 1, 1]}, "strides"),
    ({"pads": [1, 1]}, "pads"),
    ({"dilations": [1]}, "dilations"),
    ({"kernel_shape": [3, 3, 3]}, "kernel_shape"),
    ({"kernel_shape": [5, 5]}, "kernel_shape"),
    ({"strides": [0, 1]}, "strides"),
    ({"pads": [-1, 0, 0, 0]}, "pads"),
    ({"auto_pad": "SAME"}, "auto_pad"),
    ({"group": 2}, "group"),
])
def test_conv_bad_attributes_name_the_node(attrs, match):
    _shape_error("Conv", (1, 3, 6, 6), (4, 3, 3, 3), attrs, match)


def test_conv_input_smaller_than_kernel():
    _shape_error("Conv", (1, 3, 2, 6), (4, 3, 3, 3), {}, "too small")


def test_conv_transpose_bad_attribute_lengths():
    _shape_error("ConvTranspose", (1, 3, 5, 5), (3, 2, 3, 3), {"output_padding": [1]}, "output_padding")
    _shape_error("ConvTranspose", (1, 3, 5, 5), (3, 2, 3, 3), {"strides": [2]}, "strides")
    _shape_error("ConvTranspose", (1, 3, 5, 5), (3, 2, 3, 3, 1), {}, "rank")


# --------------------------------------------------------------------- ConvTranspose
def conv_t_check(x_shape, w_shape, attrs, bias=True, const=(1, 2)):
    group = attrs.get("group", 1)
    x, w = rand(*x_shape), rand(*w_shape, seed=1)
    inputs = [x, w] + ([rand(w_shape[1] * group, seed=2)] if bias else [])
    return check_node("ConvTranspose", inputs, attrs, const_inputs=const, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_transpose_kernel_stride(k, stride):
    conv_t_check((2, 3, 5, 6), (3, 4, k, k), {"strides": [stride, stride]})


@pytest.mark.parametrize("attrs", [
    {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
    {"strides": [2, 3], "pads": [0, 1, 2, 0], "output_padding": [1, 2]},
    {"dilations": [2, 2], "pads": [1, 2, 1, 0]},
    {"strides": [2, 2], "dilations": [2, 1], "output_padding": [1, 0]},
    {"strides": [2, 2], "output_shape": [10, 11]},
    {"strides": [2, 2], "output_shape": [11, 12]},
    {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
    {"strides": [3, 3], "auto_pad": "SAME_UPPER"},
    {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"group": 4, "strides": [2, 2]},
])
def test_conv_transpose_attributes(attrs):
    group = attrs.get("group", 1)
    conv_t_check((1, 4, 5, 6), (4, 3 if group < 4 else 1, 3, 3), attrs)


def test_conv_transpose_1d_and_3d_runtime_weight():
    conv_t_check((2, 3, 7), (3, 2, 3), {"strides": [2], "pads": [1, 0]}, const=())
    conv_t_check((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2]}, bias=False)


# ----------------------------------------------------------------------- fused ops
ACTIVATIONS = {
    "": ([], lambda y: y),
    "Relu": ([], lambda y: np.maximum(y, 0)),
    "LeakyRelu": ([0.2], lambda y: np.where(y < 0, 0.2 * y, y)),
    "Clip": ([-0.5, 0.75], lambda y: np.clip(y, -0.5, 0.75)),
    "HardSigmoid": ([0.3, 0.4], lambda y: np.clip(0.3 * y + 0.4, 0, 1)),
    "HardSwish": ([], lambda y: y * np.clip(y / 6 + 0.5, 0, 1)),
    "Sigmoid": ([], lambda y: 1 / (1 + np.exp(-y))),
    "Tanh": ([], np.tanh),
    "SiLU": ([], lambda y: y / (1 + np.exp(-y))),
    "Gelu": ([], lambda y: 0.5 * y * (1 + np.vectorize(__import__("math").erf)(y / np.sqrt(2)))),
}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("residual", [False, True])
def test_fused_conv_equals_conv_then_activation(activation, residual):
    params, ref = ACTIVATIONS[activation]
    conv_attrs = {"pads": [1, 1, 1, 1], "strides": [1, 1]}
    x, w, b = rand(2, 4, 8, 9), rand(6, 4, 3, 3, seed=1), rand(6, seed=2)
    y = run_edgeinfer("Conv", [x, w, b], conv_attrs, const_inputs=(1, 2))[0]
    inputs = [x, w, b]
    if residual:
        z = rand(*y.shape, seed=3)
        inputs.append(z)
        y = y + z
    attrs = {**conv_attrs, "activation": activation, "activation_params": params}
    got = run_edgeinfer("FusedConv", inputs, attrs, const_inputs=(1, 2), domain="edgeinfer")[0]
    np.testing.assert_allclose(got, ref(y.astype(np.float64)), rtol=RTOL, atol=ATOL)


def test_fused_conv_depthwise_without_bias_with_residual():
    attrs = {"group": 4, "pads": [1, 1, 1, 1]}
    x, w = rand(1, 4, 6, 6), rand(4, 1, 3, 3, seed=1)
    y = run_edgeinfer("Conv", [x, w], attrs, const_inputs=(1,))[0]
    z = rand(*y.shape, seed=5)
    fused_attrs = {**attrs, "activation": "Relu"}
    got = run_edgeinfer("FusedConv", [x, w, None, z], fused_attrs, const_inputs=(1,), domain="edgeinfer")[0]
    np.testing.assert_allclose(got, np.maximum(y + z, 0), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("activation", ["", "Relu", "Clip", "Gelu"])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_fused_gemm_equals_gemm_then_activation(activation, trans_b):
    params, ref = ACTIVATIONS[activation]
    gemm_attrs = {"alpha": 0.5, "beta": 2.0, "transB": trans_b}
    a, b, c = rand(5, 7), rand(*((3, 7) if trans_b else (7, 3)), seed=1), rand(3, seed=2)
    y = run_edgeinfer("Gemm", [a, b, c], gemm_attrs, const_inputs=(1, 2))[0]
    got = run_edgeinfer("FusedGemm", [a, b, c], {**gemm_attrs, "activation": activation, "activation_params": params},
                        const_inputs=(1, 2), domain="edgeinfer")[0]
    np.testing.assert_allclose(got, ref(y.astype(np.float64)), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shapes", [((4, 6), (6, 3)), ((2, 4, 6), (6, 3)), ((6,), (2, 6, 3))])
def test_fused_matmul_adds_bias_then_activation(shapes):
    a, b, bias = rand(*shapes[0]), rand(*shapes[1], seed=1), rand(3, seed=2)
    got = run_edgeinfer("FusedMatMul", [a, b, bias], {"activation": "Tanh"}, const_inputs=(1, 2), domain="edgeinfer")[0]
    np.testing.assert_allclose(got, np.tanh(np.matmul(a, b) + bias), rtol=RTOL, atol=ATOL)


def test_fused_conv_unknown_activation_is_a_shape_error():
    x, w = rand(1, 2, 5, 5), rand(3, 2, 3, 3, seed=1)
    with pytest.raises(ShapeInferenceError, match="unknown fused activation 'Swoosh'.*n0|n0.*Swoosh"):
        run_edgeinfer("FusedConv", [x, w], {"activation": "Swoosh"}, const_inputs=(1,), domain="edgeinfer")


def test_fused_conv_residual_of_wrong_shape_is_rejected():
    x, w, z = rand(1, 2, 5, 5), rand(3, 2, 3, 3, seed=1), rand(1, 3, 5, 5)
    with pytest.raises(GraphError, match="residual"):
        run_edgeinfer("FusedConv", [x, w, None, z], {"activation": "Relu"}, const_inputs=(1,), domain="edgeinfer")


def test_conv_rejects_integer_inputs():
    x, w = np.ones((1, 2, 4, 4), np.int32), np.ones((3, 2, 3, 3), np.int32)
    with pytest.raises(ShapeInferenceError, match="n0.*dtype int32"):
        run_edgeinfer("Conv", [x, w], {}, const_inputs=(1,))


def _build_kernel(op, inputs, attrs, const):
    from edgeinfer.graph import Node, TensorType
    from edgeinfer.kernels import OpContext, get_schema, resolve_attrs

    node = Node(op, [f"i{k}" for k in range(len(inputs))], ["y"], attrs, name="n0")
    schema = get_schema(op)
    kw = resolve_attrs(schema, node)
    types = [TensorType(str(a.dtype), a.shape) for a in inputs]
    ctx = OpContext(node, types, [a if k in const else None for k, a in enumerate(inputs)])
    ctx.outputs = schema.infer(ctx, **kw)
    return schema.build(ctx, **kw)


def test_conv_kernels_share_scratch_safely_across_calls_and_threads():
    from concurrent.futures import ThreadPoolExecutor

    cases = [
        ((1, 32, 48, 50), (32, 32, 3, 3), {"pads": [1, 1, 1, 1]}),  # per-tap GEMM
        ((2, 8, 17, 15), (8, 1, 3, 3), {"group": 8, "strides": [2, 2], "pads": [1, 1, 1, 1]}),  # depthwise
        ((2, 4, 13, 12), (6, 4, 5, 5), {"strides": [2, 1], "pads": [2, 2, 2, 2]}),  # im2col
    ]
    kernels, inputs, wants = [], [], []
    for k, (xs, ws, attrs) in enumerate(cases):
        x, w = rand(*xs, seed=k), rand(*ws, seed=k + 10)
        kernels.append(_build_kernel("Conv", [x, w], attrs, const=(1,)))
        inputs.append((x, w))
        wants.append(run_ort("Conv", [x, w], attrs)[0])
    first = [fn(*args) for fn, args in zip(kernels, inputs)]
    for got, want in zip(first, wants):  # a later call must not have overwritten an earlier result
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

    def run_all(_):
        return [fn(*args) for fn, args in zip(kernels, inputs)]

    with ThreadPoolExecutor(3) as pool:
        for results in pool.map(run_all, range(3)):
            for got, want in zip(results, wants):
                np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
