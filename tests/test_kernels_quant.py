"""Quantized kernels (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
QLinearMatMul, ConvInteger, QLinearConv) against ONNX Runtime, and against integer numpy
references where ORT cannot take the types (int4, float8 inputs) or the case."""
import ml_dtypes
import numpy as np
import pytest

from edgeinfer.errors import GraphError, KernelError, ShapeInferenceError
from opcheck import check_node, run_edgeinfer, run_ort

EXACT = {"rtol": 0, "atol": 0}
INT4, UINT4 = np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)
E4M3, E5M2 = np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2)


def rng(seed=0):
    return np.random.default_rng(seed)


def ints(shape, dtype, seed=0, lo=None, hi=None):
    info = np.iinfo(dtype)
    lo = info.min if lo is None else lo
    hi = info.max if hi is None else hi
    return rng(seed).integers(lo, hi + 1, size=shape).astype(dtype)


def scalar(v, dtype):
    return np.array(v, dtype)


# ----------------------------------------------------------------------- QuantizeLinear
@pytest.mark.parametrize("zp_dtype,zp", [(np.uint8, 128), (np.int8, -3), (np.uint16, 30000), (np.int16, -7)])
def test_quantize_per_tensor_matches_ort(zp_dtype, zp):
    x = (rng().standard_normal((3, 50)) * 200).astype(np.float32)
    x[0, :8] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 1e9, -1e9]  # ties round to even, saturation
    check_node("QuantizeLinear", [x, scalar(0.5, np.float32), scalar(zp, zp_dtype)], const_inputs=(1, 2), **EXACT)


def test_quantize_default_output_is_uint8():
    x = np.array([-3.0, 0.0, 1.0, 300.0, 511.0], np.float32)
    (y,) = run_edgeinfer("QuantizeLinear", [x, scalar(2.0, np.float32)])
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 0, 0, 150, 255])  # 0.5 rounds to 0 (even)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_per_axis_matches_ort(axis):
    x = (rng(1).standard_normal((4, 5, 6)) * 50).astype(np.float32)
    d = x.shape[axis]
    scale = (rng(2).random(d) + 0.1).astype(np.float32)
    zp = ints((d,), np.int8, seed=3, lo=-20, hi=20)
    check_node("QuantizeLinear", [x, scale, zp], {"axis": axis}, const_inputs=(1, 2), **EXACT)


@pytest.mark.parametrize("shape,axis,block", [((4, 8), 1, 4), ((6, 5), 0, 2), ((3, 7, 2), 1, 3)])
def test_quantize_blocked_matches_ort(shape, axis, block):
    x = (rng(4).standard_normal(shape) * 20).astype(np.float32)
    s_shape = list(shape)
    s_shape[axis] = -(-shape[axis] // block)
    scale = (rng(5).random(s_shape) + 0.05).astype(np.float32)
    zp = ints(s_shape, np.uint8, seed=6, lo=100, hi=150)
    check_node("QuantizeLinear", [x, scale, zp], {"axis": axis, "block_size": block}, const_inputs=(1, 2), **EXACT)


def test_quantize_blocked_output_dtype_without_zero_point():
    x = np.array([[6.0, -8, -10, 5.0], [1e6, 8.0, 4.0, -1e6]], np.float32)
    scale = np.array([[1.5, 2.5], [3.0, 4.9]], np.float32)
    check_node("QuantizeLinear", [x, scale], {"axis": 1, "block_size": 2, "output_dtype": 5}, **EXACT)


def test_quantize_float16_input_and_scale():
    x = (rng(7).standard_normal(40) * 30).astype(np.float16)
    check_node("QuantizeLinear", [x, scalar(0.3, np.float16), scalar(10, np.uint8)], const_inputs=(1, 2), **EXACT)


def test_quantize_int4_per_axis():
    x = np.array([[0.0, 2.5, 4.8, 8.6], [-30, -20, 6, 9], [12, 15, 16, 40]], np.float32)
    scale = np.array([2.0, 3.0, 4.0], np.float32)
    (y,) = run_edgeinfer("QuantizeLinear", [x, scale, np.ones(3, INT4)], {"axis": 0})
    assert y.dtype == INT4
    np.testing.assert_array_equal(y.astype(np.int8), [[1, 2, 3, 5], [-8, -6, 3, 4], [4, 5, 5, 7]])
    (u,) = run_edgeinfer("QuantizeLinear", [x, scale, np.ones(3, UINT4)], {"axis": 0})
    np.testing.assert_array_equal(u.astype(np.int8), [[1, 2, 3, 5], [0, 0, 3, 4], [4, 5, 5, 11]])


@pytest.mark.parametrize("saturate", [0, 1])
def test_quantize_float8e4m3fn_bits_match_ort(saturate):
    x = np.array([0, 1e5, -1e5, np.inf, -np.inf, np.nan, 3.3, 600, 898, 928, 930, -0.0, 1e-9], np.float32)
    want = run_ort("QuantizeLinear", [x, scalar(2, np.float32)], {"saturate": saturate, "output_dtype": 17})[0]
    (got,) = run_edgeinfer("QuantizeLinear", [x, scalar(2, np.float32)], {"saturate": saturate, "output_dtype": 17})
    assert got.dtype == E4M3
    np.testing.assert_array_equal(got.view(np.uint8), want)  # ORT hands back the raw bits


@pytest.mark.parametrize("saturate,big", [(1, 57344.0), (0, np.inf)])
def test_quantize_float8e5m2_saturate(saturate, big):
    x = np.array([1e6, -1e6, 3.0, np.inf], np.float32)
    (y,) = run_edgeinfer("QuantizeLinear", [x, scalar(1, np.float32), np.zeros((), E5M2)], {"saturate": saturate})
    np.testing.assert_array_equal(y.astype(np.float32), [big, -big, 3.0, big])


def test_quantize_float4e2m1_always_saturates():
    x = np.array([0.0, 1.2, 100.0, -100.0, 2.5], np.float32)
    zp = np.zeros((), ml_dtypes.float4_e2m1fn)
    (y,) = run_edgeinfer("QuantizeLinear", [x, scalar(1, np.float32), zp], {"saturate": 0})
    np.testing.assert_array_equal(y.astype(np.float32), [0.0, 1.0, 6.0, -6.0, 2.0])


def test_quantize_precision_attribute_divides_in_float16():
    # 1000.5 / 1 rounds to 1000 in float16 (spacing 0.5 at 1000 keeps it; 2049 -> 2048 does not)
    x = np.array([2049.0, 1000.5], np.float32)
    attrs = {"output_dtype": 5}
    (plain,) = run_edgeinfer("QuantizeLinear", [x, scalar(1, np.float32)], attrs)
    (half,) = run_edgeinfer("QuantizeLinear", [x, scalar(1, np.float32)], {**attrs, "precision": 10})
    np.testing.assert_array_equal(plain, [2049, 1000])
    np.testing.assert_array_equal(half, [2048, 1000])


# --------------------------------------------------------------------- DequantizeLinear
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_dequantize_per_tensor_matches_ort(dtype):
    x = ints((5, 7), dtype)
    zp = ints((), dtype, seed=1)
    check_node("DequantizeLinear", [x, scalar(0.037, np.float32), np.array(zp, dtype)], const_inputs=(1, 2))


def test_dequantize_int32_without_zero_point():
    x = np.array([-(2 ** 31), -5, 0, 7, 2 ** 31 - 1, 2 ** 24 + 1], np.int32)
    check_node("DequantizeLinear", [x, scalar(0.5, np.float32)], rtol=1e-7, atol=0)


@pytest.mark.parametrize("axis", [0, 2, -2])
def test_dequantize_per_axis_matches_ort(axis):
    x = ints((3, 4, 5), np.uint8, seed=2)
    d = x.shape[axis]
    scale = (rng(3).random(d) + 0.01).astype(np.float32)
    zp = ints((d,), np.uint8, seed=4)
    check_node("DequantizeLinear", [x, scale, zp], {"axis": axis}, const_inputs=(1, 2))


def test_dequantize_blocked_matches_ort():
    x = ints((2, 9, 3), np.int8, seed=5)
    scale = (rng(6).random((2, 3, 3)) + 0.01).astype(np.float32)
    zp = ints((2, 3, 3), np.int8, seed=7)
    check_node("DequantizeLinear", [x, scale, zp], {"axis": 1, "block_size": 3}, const_inputs=(1, 2))
    # a last block shorter than block_size
    x = ints((2, 7), np.uint8, seed=8)
    scale = (rng(9).random((2, 2)) + 0.01).astype(np.float32)
    check_node("DequantizeLinear", [x, scale], {"axis": 1, "block_size": 4})


def test_dequantize_float16_scale_gives_float16():
    x = ints((6,), np.int16, seed=10)
    (y,) = run_edgeinfer("DequantizeLinear", [x, scalar(0.01, np.float16), scalar(-1000, np.int16)])
    assert y.dtype == np.float16
    want = ((x.astype(np.float64) + 1000) * np.float64(np.float16(0.01))).astype(np.float16)
    np.testing.assert_array_equal(y, want)


def test_dequantize_output_dtype_bfloat16_and_writes_out():
    x = np.array([0, 3, 128, 255], np.uint8)
    (y,) = run_edgeinfer("DequantizeLinear", [x, scalar(2, np.float32), scalar(128, np.uint8)], {"output_dtype": 16})
    assert y.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(y.astype(np.float32), [-256, -250, 0, 254])


@pytest.mark.parametrize("dtype,values", [
    (INT4, [0, 1, 7, -4, -8]),
    (UINT4, [0, 1, 7, 10, 15]),
    (E4M3, [0, 0.5, 1, 448, -104]),
    (E5M2, [0, 0.5, 1, 49152, -96]),
])
def test_dequantize_low_precision(dtype, values):
    x = np.array(values, np.float32).astype(dtype)
    (y,) = run_edgeinfer("DequantizeLinear", [x, scalar(2, np.float32), np.ones((1,), dtype)], {"axis": 0})
    np.testing.assert_array_equal(y, (np.array(values, np.float32) - 1) * 2)


def test_dequantize_float8e8m0_scale():
    x = np.array([1, -2, 3], np.int8)
    scale = np.array([2.0 ** -3], np.float32).astype(ml_dtypes.float8_e8m0fnu)
    (y,) = run_edgeinfer("DequantizeLinear", [x, scale], {"output_dtype": 1})
    np.testing.assert_array_equal(y, [0.125, -0.25, 0.375])


# ---------------------------------------------------------------- DynamicQuantizeLinear
@pytest.mark.parametrize("x", [
    np.array([0, 2, -3, -2.5, 1.34, 0.5], np.float32),
    np.array([-1.0, -2.1, -1.3, -2.5, -3.34, -4.0], np.float32),
    np.array([[1, 2.1, 1.3, 2.5], [3.34, 4.0, 1.5, 2.6]], np.float32),
    (np.random.default_rng(11).standard_normal((4, 33)) * 7).astype(np.float32),
    np.zeros((3,), np.float32),
])
def test_dynamic_quantize_matches_ort(x):
    check_node("DynamicQuantizeLinear", [x], n_outputs=3, rtol=0, atol=0)


# ------------------------------------------------------------------ integer references
def ref_matmul(a, b, za=0, zb=0):
    return np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb)


def ref_conv(x, w, zx, zw, strides=(1, 1), pads=(0, 0, 0, 0), group=1):
    """Direct integer 2-D convolution (int64), for exactness checks."""
    x = x.astype(np.int64) - zx
    w = w.astype(np.int64) - np.asarray(zw, np.int64).reshape((-1, 1, 1, 1) if np.size(zw) > 1 else ())
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh, ow = (h - kh) // strides[0] + 1, (wd - kw) // strides[1] + 1
    y = np.zeros((n, m, oh, ow), np.int64)
    mg = m // group
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + strides[0] * (oh - 1) + 1:strides[0], j:j + strides[1] * (ow - 1) + 1:strides[1]]
            for g in range(group):
                y[:, g * mg:(g + 1) * mg] += np.einsum(
                    "nchw,mc->nmhw", patch[:, g * cg:(g + 1) * cg], w[g * mg:(g + 1) * mg, :, i, j])
    return y


# ------------------------------------------------------------------------ MatMulInteger
@pytest.mark.parametrize("a_dtype,b_dtype", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)])
def test_matmul_integer_matches_ort(a_dtype, b_dtype):
    a, b = ints((2, 5, 17), a_dtype, seed=1), ints((17, 6), b_dtype, seed=2)
    za, zb = ints((), a_dtype, seed=3), ints((), b_dtype, seed=4)
    check_node("MatMulInteger", [a, b, np.array(za, a_dtype), np.array(zb, b_dtype)], const_inputs=(1, 3), **EXACT)


def test_matmul_integer_per_row_and_column_zero_points():
    a, b = ints((4, 9), np.uint8, seed=5), ints((9, 3), np.int8, seed=6)
    za, zb = ints((4,), np.uint8, seed=7), ints((3,), np.int8, seed=8)
    for consts in [(), (1, 3)]:
        (y,) = run_edgeinfer("MatMulInteger", [a, b, za, zb], const_inputs=consts)
        assert y.dtype == np.int32
        np.testing.assert_array_equal(y, ref_matmul(a, b, za.reshape(4, 1), zb))
    # batched per-row zero points of shape [D, M, 1]
    a3 = ints((2, 4, 9), np.uint8, seed=9)
    za3 = ints((2, 4, 1), np.uint8, seed=10)
    (y,) = run_edgeinfer("MatMulInteger", [a3, b, za3])
    np.testing.assert_array_equal(y, ref_matmul(a3, b, za3))


@pytest.mark.parametrize("const", [(), (1, 3)])
def test_matmul_integer_long_sums_stay_exact(const):
    # extreme operands: sums pass 2**24, so the product must fall back to float64
    a = np.full((3, 4000), 255, np.uint8)
    a[1] = ints((4000,), np.uint8, seed=11)
    b = np.full((4000, 5), -128, np.int8)
    b[:, 2] = ints((4000,), np.int8, seed=12)
    (y,) = run_edgeinfer("MatMulInteger", [a, b, scalar(0, np.uint8), scalar(0, np.int8)], const_inputs=const)
    np.testing.assert_array_equal(y, ref_matmul(a, b))
    # 1-D left operand
    (v,) = run_edgeinfer("MatMulInteger", [a[1], b], const_inputs=const)
    np.testing.assert_array_equal(v, ref_matmul(a[1], b))


def test_matmul_integer_wraps_like_int32_accumulation():
    k = 70000  # 70000 * 255 * 128 > 2**31
    a, b = np.full((1, k), 255, np.uint8), np.full((k, 1), -128, np.int8)
    (y,) = run_edgeinfer("MatMulInteger", [a, b])
    np.testing.assert_array_equal(y, ref_matmul(a, b).astype(np.int32))


def test_matmul_integer_errors_name_the_node():
    with pytest.raises(ShapeInferenceError, match="n0.*inner dims"):
        run_edgeinfer("MatMulInteger", [ints((2, 3), np.uint8), ints((4, 2), np.uint8)])
    with pytest.raises(ShapeInferenceError, match="n0.*A has dtype float32"):
        run_edgeinfer("MatMulInteger", [np.zeros((2, 3), np.float32), ints((3, 2), np.uint8)])
    with pytest.raises(KernelError, match="n0.*a_zero_point has 3 values"):
        run_edgeinfer("MatMulInteger", [ints((2, 3), np.uint8), ints((3, 2), np.uint8), ints((3,), np.uint8)])


# ------------------------------------------------------------------------ QLinearMatMul
def qlinear_matmul_inputs(q, seed=0, m=3, k=20, n=4, batch=()):
    a, b = ints(batch + (m, k), q, seed=seed), ints((k, n), q, seed=seed + 1)
    return [a, scalar(0.02, np.float32), np.array(ints((), q, seed=seed + 2), q),
            b, scalar(0.015, np.float32), np.array(ints((), q, seed=seed + 3), q),
            scalar(0.5, np.float32), np.array(ints((), q, seed=seed + 4), q)]


@pytest.mark.parametrize("q", [np.uint8, np.int8])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_qlinear_matmul_matches_ort(q, batch):
    inputs = qlinear_matmul_inputs(q, batch=batch)
    check_node("QLinearMatMul", inputs, const_inputs=(1, 2, 3, 4, 5, 6, 7), **EXACT)


def test_qlinear_matmul_mixed_types_matches_ort():
    inputs = qlinear_matmul_inputs(np.uint8, seed=3)
    inputs[3] = ints(inputs[3].shape, np.int8, seed=9)
    inputs[5] = scalar(0, np.int8)
    check_node("QLinearMatMul", inputs, **EXACT)


def test_qlinear_matmul_per_row_and_column_scales():
    a, b = ints((3, 8), np.uint8, seed=1), ints((8, 5), np.int8, seed=2)
    sa = np.array([0.01, 0.02, 0.03], np.float32)
    sb = np.linspace(0.005, 0.02, 5).astype(np.float32)
    za, zb = ints((3,), np.uint8, seed=3), np.zeros(5, np.int8)
    ys, yz = scalar(0.3, np.float32), scalar(128, np.uint8)
    (y,) = run_edgeinfer("QLinearMatMul", [a, sa, za, b, sb, zb, ys, yz])
    acc = ref_matmul(a, b, za.reshape(3, 1), zb).astype(np.float32)
    mult = sa.reshape(3, 1) * sb / ys
    want = np.clip(np.rint(acc * mult) + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(y, want)


def test_qlinear_matmul_float16_scales():
    inputs = qlinear_matmul_inputs(np.uint8, seed=5)
    for i in (1, 4, 6):
        inputs[i] = inputs[i].astype(np.float16)
    (y,) = run_edgeinfer("QLinearMatMul", inputs)
    a, za, b, zb, yz = inputs[0], inputs[2], inputs[3], inputs[5], inputs[7]
    mult = np.float32(inputs[1]) * np.float32(inputs[4]) / np.float32(inputs[6])
    want = np.clip(np.rint(ref_matmul(a, b, za, zb).astype(np.float32) * mult) + yz, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(y, want)


def test_qlinear_matmul_float8():
    a = np.array([[1.0, 2.0], [0.5, -1.0]], np.float32).astype(E4M3)
    b = np.array([[2.0, 0.0], [1.0, 1.0]], np.float32).astype(E4M3)
    one, zero = scalar(1, np.float32), np.zeros((), E4M3)
    (y,) = run_edgeinfer("QLinearMatMul", [a, one, zero, b, one, zero, scalar(0.5, np.float32), zero])
    assert y.dtype == E4M3
    np.testing.assert_array_equal(y.astype(np.float32), [[8.0, 4.0], [0.0, -2.0]])


# --------------------------------------------------------------------------- ConvInteger
@pytest.mark.parametrize("attrs", [
    {},
    {"pads": [1, 1, 1, 1]},
    {"strides": [2, 2], "pads": [1, 0, 1, 2]},
    {"group": 2, "pads": [1, 1, 1, 1]},
])
def test_conv_integer_matches_ort(attrs):
    x, w = ints((2, 4, 9, 8), np.uint8, seed=1), ints((6, 4 // attrs.get("group", 1), 3, 3), np.uint8, seed=2)
    check_node("ConvInteger", [x, w, scalar(131, np.uint8), scalar(7, np.uint8)], attrs, const_inputs=(1, 3), **EXACT)


def test_conv_integer_per_channel_zero_point_and_signed_weights():
    x, w = ints((1, 3, 7, 6), np.uint8, seed=3), ints((4, 3, 3, 3), np.int8, seed=4)
    zw = ints((4,), np.int8, seed=5)
    for consts in [(), (1, 3)]:
        inputs = [x, w, scalar(100, np.uint8), zw]
        (y,) = run_edgeinfer("ConvInteger", inputs, {"pads": [1, 1, 1, 1]}, const_inputs=consts)
        np.testing.assert_array_equal(y, ref_conv(x, w, 100, zw, pads=(1, 1, 1, 1)))


def test_conv_integer_long_sums_fall_back_to_float64():
    # 512 channels of extreme values: |sum| reaches 512 * 9 * 255 * 128 > 2**24
    x = np.full((1, 512, 4, 4), 255, np.uint8)
    w = np.full((2, 512, 3, 3), -128, np.int8)
    w[1] = ints((512, 3, 3), np.int8, seed=6)
    (y,) = run_edgeinfer("ConvInteger", [x, w], const_inputs=(1,))
    np.testing.assert_array_equal(y, ref_conv(x, w, 0, 0))


# --------------------------------------------------------------------------- QLinearConv
def qlinear_conv_inputs(q_x, q_w, c=4, m=6, group=1, per_channel=False, bias=True, seed=0):
    x = ints((2, c, 10, 9), q_x, seed=seed)
    w = ints((m, c // group, 3, 3), q_w, seed=seed + 1)
    w_scale = scalar(0.004, np.float32)
    if per_channel:
        w_scale = (rng(seed + 2).random(m) * 0.01 + 0.001).astype(np.float32)
    w_zp = np.zeros(m, q_w) if per_channel else scalar(0 if q_w == np.int8 else 120, q_w)
    y_zp = scalar(0 if q_x == np.int8 else 128, q_x)
    inputs = [x, scalar(0.02, np.float32), scalar(3 if q_x == np.int8 else 130, q_x), w, w_scale, w_zp,
              scalar(0.05, np.float32), y_zp]
    if bias:
        inputs.append(rng(seed + 3).integers(-2000, 2000, size=m).astype(np.int32))
    return inputs


@pytest.mark.parametrize("q_x,q_w", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv_matches_ort(q_x, q_w, per_channel):
    inputs = qlinear_conv_inputs(q_x, q_w, per_channel=per_channel)
    check_node("QLinearConv", inputs, {"pads": [1, 1, 1, 1]}, const_inputs=tuple(range(1, 9)), **EXACT)


@pytest.mark.parametrize("attrs,group", [
    ({"strides": [2, 2], "pads": [0, 1, 1, 0]}, 1),
    ({"pads": [1, 1, 1, 1]}, 2),
    ({"pads": [1, 1, 1, 1], "dilations": [2, 1]}, 4),  # depthwise
])
def test_qlinear_conv_geometry_matches_ort(attrs, group):
    inputs = qlinear_conv_inputs(np.uint8, np.int8, c=4, m=8, group=group, per_channel=True, seed=4)
    check_node("QLinearConv", inputs, {**attrs, "group": group}, const_inputs=tuple(range(1, 9)), **EXACT)


def test_qlinear_conv_without_bias_and_runtime_weights():
    inputs = qlinear_conv_inputs(np.uint8, np.uint8, bias=False, seed=8)
    check_node("QLinearConv", inputs, {"auto_pad": "SAME_UPPER"}, const_inputs=(), **EXACT)


def test_qlinear_conv_errors_name_the_node():
    inputs = qlinear_conv_inputs(np.uint8, np.int8, per_channel=True)
    bad = list(inputs)
    bad[4] = np.ones(5, np.float32)  # 6 output channels
    with pytest.raises(KernelError, match="n0.*w_scale has shape \\[5\\]"):
        run_edgeinfer("QLinearConv", bad)
    bad = list(inputs)
    bad[0] = inputs[0].astype(np.float32)
    with pytest.raises(ShapeInferenceError, match="n0.*input x has dtype float32"):
        run_edgeinfer("QLinearConv", bad)
    bad = list(inputs)
    bad[7] = scalar(0, np.int16)
    with pytest.raises(ShapeInferenceError, match="n0.*y_zero_point has dtype int16"):
        run_edgeinfer("QLinearConv", bad)


# ------------------------------------------------------------------------- error paths
def test_quantize_scale_shape_errors_name_the_node():
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(ShapeInferenceError, match="n0.*length 6"):
        run_edgeinfer("QuantizeLinear", [x, np.ones(4, np.float32), np.zeros(4, np.uint8)])
    with pytest.raises(ShapeInferenceError, match="n0.*block_size 4.*expected \\[4, 2\\]"):
        run_edgeinfer("QuantizeLinear", [x, np.ones((4, 3), np.float32)], {"axis": 1, "block_size": 4})
    with pytest.raises(ShapeInferenceError, match="n0.*zero point shape \\[5\\] differs"):
        run_edgeinfer("QuantizeLinear", [x, np.ones(6, np.float32), np.zeros(5, np.uint8)])
    with pytest.raises(ShapeInferenceError, match="n0.*output_dtype int8 differs.*uint8"):
        run_edgeinfer("QuantizeLinear", [x, scalar(1, np.float32), scalar(0, np.uint8)], {"output_dtype": 3})
    with pytest.raises(ShapeInferenceError, match="n0.*cannot quantize to float32"):
        run_edgeinfer("QuantizeLinear", [x, scalar(1, np.float32)], {"output_dtype": 1})
    with pytest.raises(ShapeInferenceError, match="n0.*axis 2 is out of range"):
        run_edgeinfer("QuantizeLinear", [x, np.ones(6, np.float32)], {"axis": 2})
    with pytest.raises(GraphError, match="n0.*unknown attribute 'bogus'"):
        run_edgeinfer("QuantizeLinear", [x, scalar(1, np.float32)], {"bogus": 1})


def test_dequantize_errors_name_the_node():
    x = np.zeros((4, 6), np.uint8)
    with pytest.raises(ShapeInferenceError, match="n0.*x_zero_point has dtype int8 but x has uint8"):
        run_edgeinfer("DequantizeLinear", [x, scalar(1, np.float32), scalar(0, np.int8)])
    with pytest.raises(ShapeInferenceError, match="n0.*cannot dequantize to int32"):
        run_edgeinfer("DequantizeLinear", [x, scalar(1, np.float32)], {"output_dtype": 6})
    with pytest.raises(ShapeInferenceError, match="n0.*input x has dtype float32"):
        run_edgeinfer("DequantizeLinear", [x.astype(np.float32), scalar(1, np.float32)])


def test_scale_shape_checked_at_run_time_when_unknown():
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(KernelError, match="n0.*y_scale.*length 6"):
        run_edgeinfer("QuantizeLinear", [x, np.ones(4, np.float32)], shapes_known=False)


def test_conv_integer_weight_zero_point_length_checked():
    x, w = ints((1, 3, 5, 5), np.uint8), ints((4, 3, 3, 3), np.uint8, seed=1)
    zw = np.zeros(3, np.uint8)
    with pytest.raises(ShapeInferenceError, match="n0.*weight zero point has shape \\[3\\]"):
        run_edgeinfer("ConvInteger", [x, w, scalar(0, np.uint8), zw], const_inputs=(1, 3))
    with pytest.raises(KernelError, match="n0.*weight zero point has shape \\[3\\]"):
        run_edgeinfer("ConvInteger", [x, w, scalar(0, np.uint8), zw])


def test_bfloat16_scales():
    bf16 = np.dtype(ml_dtypes.bfloat16)
    x = np.array([-3, 0, 5, 100], np.int8)
    (y,) = run_edgeinfer("DequantizeLinear", [x, scalar(0.1, np.float32).astype(bf16), scalar(1, np.int8)])
    assert y.dtype == bf16
    s = np.float32(scalar(0.1, np.float32).astype(bf16))
    np.testing.assert_array_equal(y, ((x.astype(np.float32) - 1) * s).astype(bf16))
    # the division runs in bfloat16: 1000.0 / 1 stays 1000, 1001 rounds to 1000 first
    xf = np.array([1000.0, 1001.0, 3.0], np.float32).astype(bf16)
    (q,) = run_edgeinfer("QuantizeLinear", [xf, scalar(1, np.float32).astype(bf16)], {"output_dtype": 5})
    np.testing.assert_array_equal(q, [1000, 1000, 3])
