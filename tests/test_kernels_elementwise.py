"""Elementwise kernels (elementwise.py, activation_ops.py, cast.py) against ONNX Runtime, plus
their shape rules on symbolic dims and their errors."""
import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgeinfer.errors import KernelError, ShapeInferenceError
from edgeinfer.graph import Node, TensorType
from edgeinfer.kernels import OpContext, get_schema, resolve_attrs
from edgeinfer.kernels.elementwise import bfloat16_to_float32, erf, float32_to_bfloat16
from opcheck import check_node, run_edgeinfer

RNG = np.random.default_rng(0)


SHAPES = [(), (5,), (2, 3, 4)]


def rand(shape, dtype=np.float32, lo=-3.0, hi=3.0):
    return RNG.uniform(lo, hi, size=shape).astype(dtype)


def infer(op, types, attrs=None, values=None, n_outputs=1):
    """Run only the shape rule of ``op`` on input types (dtype, shape)."""
    node = Node(op, [f"in{i}" if t else "" for i, t in enumerate(types)], [f"out{i}" for i in range(n_outputs)], attrs or {}, name="n0")
    schema = get_schema(op)
    ins = [TensorType(*t) if t else None for t in types]
    ctx = OpContext(node, ins, list(values or [None] * len(types)))
    return schema.infer(ctx, **resolve_attrs(schema, node))


# ------------------------------------------------------------------------- unary
# op -> input range that keeps it defined
UNARY_DOMAINS = {
    "Abs": (-3, 3), "Neg": (-3, 3), "Exp": (-5, 5), "Log": (0.1, 5), "Sqrt": (0, 5),
    "Reciprocal": (0.5, 3), "Floor": (-3, 3), "Ceil": (-3, 3), "Sign": (-3, 3), "Sin": (-3, 3),
    "Cos": (-3, 3), "Tan": (-1.2, 1.2), "Asin": (-0.99, 0.99), "Acos": (-0.99, 0.99), "Atan": (-3, 3),
    "Sinh": (-3, 3), "Cosh": (-3, 3), "Asinh": (-3, 3), "Acosh": (1.01, 4), "Atanh": (-0.95, 0.95),
    "Tanh": (-4, 4), "Erf": (-3, 3), "Relu": (-3, 3), "Sigmoid": (-8, 8), "HardSwish": (-5, 5),
    "Softplus": (-8, 8), "Softsign": (-3, 3), "Mish": (-5, 5), "Round": (-3, 3),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", sorted(UNARY_DOMAINS))
def test_unary_float32(op, shape):
    check_node(op, [rand(shape, np.float32, *UNARY_DOMAINS[op])], rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["Abs", "Neg", "Exp", "Sqrt", "Tanh", "Sin", "Sigmoid"])
def test_unary_float64(op):
    check_node(op, [rand((3, 4), np.float64, *UNARY_DOMAINS[op])], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("op", ["Abs", "Neg", "Relu", "Sigmoid", "Exp", "Sqrt", "Floor", "Round", "Erf", "Tanh"])
def test_unary_float16_keeps_dtype(op):
    got = check_node(op, [rand((4, 5), np.float16, *UNARY_DOMAINS[op])], rtol=2e-3, atol=2e-3)
    assert got[0].dtype == np.float16


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
@pytest.mark.parametrize("op", ["Abs", "Neg", "Sign", "Relu"])
def test_unary_signed_ints(op, dtype):
    x = RNG.integers(-50, 50, size=(3, 4)).astype(dtype)
    if op == "Relu" and dtype == np.int64:  # ONNX Runtime has no int64 Relu
        np.testing.assert_array_equal(run_edgeinfer(op, [x])[0], np.maximum(x, 0))
        return
    assert check_node(op, [x])[0].dtype == dtype


def test_round_is_half_to_even():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997], np.float32)
    got = check_node("Round", [x])[0]
    np.testing.assert_array_equal(got, [-2, -2, -0, 0, 2, 2, 0])


def test_erf_is_accurate_to_1e9():
    xs = np.concatenate([np.linspace(-7, 7, 20001), np.logspace(-30, 0.5, 500)])
    ref = np.array([math.erf(v) for v in xs])
    rel = np.abs(erf(xs) - ref) / np.maximum(np.abs(ref), 1e-300)
    assert rel.max() < 1e-9
    assert np.isnan(erf(np.array([np.nan])))[0] and erf(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]


def test_sigmoid_is_stable_in_the_tails():
    x = np.array([-1000.0, -100.0, -30.0, 0.0, 30.0, 1000.0], np.float64)
    with np.errstate(all="raise"):  # no overflow along the way
        got = run_edgeinfer("Sigmoid", [x])[0]
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-np.clip(x, -700, 700))), rtol=1e-12, atol=1e-300)
    assert got[1] > 0  # exp(-100) survives instead of underflowing through 1/(1+inf)


def test_sigmoid_float16_tail_is_not_flushed():
    got = run_edgeinfer("Sigmoid", [np.array([-12.0], np.float16)])[0]
    assert got.dtype == np.float16 and got[0] > 0


def test_is_nan_is_inf():
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0], np.float32)
    check_node("IsNaN", [x])
    for neg, pos in ((1, 1), (0, 1), (1, 0)):
        check_node("IsInf", [x], {"detect_negative": neg, "detect_positive": pos})


def test_not_and_bitwise_not():
    check_node("Not", [RNG.random((3, 4)) > 0.5])
    for dtype in (np.uint8, np.int32, np.int64):
        check_node("BitwiseNot", [RNG.integers(0, 100, size=(6,)).astype(dtype)])


# -------------------------------------------------------------------- activations
ACTIVATIONS = [
    ("LeakyRelu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Elu", {}), ("Elu", {"alpha": 0.5}),
    ("Selu", {}), ("Selu", {"alpha": 1.5, "gamma": 2.0}), ("Celu", {}), ("Celu", {"alpha": 2.0}),
    ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("ThresholdedRelu", {}),
    ("ThresholdedRelu", {"alpha": 0.5}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
    ("Shrink", {}), ("Shrink", {"bias": 0.3, "lambd": 1.0}),
]


@pytest.mark.parametrize("shape", [(), (2, 3, 4)])
@pytest.mark.parametrize("op,attrs", ACTIVATIONS)
def test_activations(op, attrs, shape):
    check_node(op, [rand(shape)], attrs, rtol=2e-6, atol=2e-6, opset=21 if op != "Gelu" else 20)


@pytest.mark.parametrize("op,attrs", [("Gelu", {}), ("Elu", {}), ("HardSigmoid", {}), ("Mish", {})])
def test_activations_float16_stay_float16(op, attrs):
    x = rand((3, 5), np.float16)
    got = run_edgeinfer(op, [x], attrs)[0]
    assert got.dtype == np.float16
    want = run_edgeinfer(op, [x.astype(np.float32)], attrs)[0]
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("xs,ss", [((2, 3, 4), (4,)), ((2, 3, 4, 4), (3, 1, 1)), ((5,), ()), ((2, 3), (2, 3))])
def test_prelu_broadcasts_slope(xs, ss):
    check_node("PRelu", [rand(xs), rand(ss, lo=0, hi=1)])


def test_prelu_slope_must_not_grow_x():
    with pytest.raises(ShapeInferenceError, match="PRelu node 'n0'"):
        infer("PRelu", [("float32", (3,)), ("float32", (2, 3))])


@pytest.mark.parametrize("bounds", ["both", "min", "max", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.float16])
def test_clip_optional_bounds(bounds, dtype):
    x = (RNG.uniform(-5, 5, size=(3, 4)) * (10 if dtype == np.int64 else 1)).astype(dtype)
    lo, hi = np.array(-2, dtype), np.array(3, dtype)
    ins = {"both": [x, lo, hi], "min": [x, lo], "max": [x, None, hi], "none": [x]}[bounds]
    got = check_node("Clip", ins, const_inputs=(1, 2))
    assert got[0].dtype == dtype


# ------------------------------------------------------------------------ binary
BROADCASTS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)), ((2, 0, 3), (1, 3))]


@pytest.mark.parametrize("a,b", BROADCASTS)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_arithmetic_broadcast(op, dtype, a, b):
    x, y = rand(a, dtype, -20, 20), rand(b, dtype, 1, 9)
    got = check_node(op, [x, y])
    assert got[0].dtype == dtype


@pytest.mark.parametrize("op", ["Add", "Mul", "Sub", "Div"])
def test_arithmetic_float16(op):
    got = check_node(op, [rand((3, 4), np.float16), rand((4,), np.float16, 1, 2)], rtol=1e-3, atol=1e-3)
    assert got[0].dtype == np.float16


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8])
def test_integer_div_truncates_toward_zero(dtype):
    a = np.array([7, -7, 7, -7, 0, 6, -6], dtype)
    b = np.array([2, 2, -2, -2, 3, -4, 4], dtype)
    got = check_node("Div", [a, b])[0]
    np.testing.assert_array_equal(got, [3, -3, -3, 3, 0, -1, -1])


@pytest.mark.parametrize("fmod,dtype", [(0, np.int32), (0, np.int64), (1, np.int64), (1, np.float32), (1, np.float64)])
def test_mod(fmod, dtype):
    a = np.array([7, -7, 7, -7, 5, -3], dtype)
    b = np.array([3, 3, -3, -3, 5, 2], dtype)
    got = check_node("Mod", [a, b], {"fmod": fmod})[0]
    assert got.dtype == dtype
    assert got[1] == (-1 if fmod else 2)


@pytest.mark.parametrize("base,exp", [(np.float32, np.float32), (np.float32, np.int64), (np.float32, np.float64),
                                      (np.int64, np.int64), (np.int32, np.float32), (np.float64, np.int32)])
def test_pow_keeps_the_base_dtype(base, exp):
    x = rand((3, 4), base, 1, 4)
    y = np.array([0, 1, 2, 3], exp) if np.dtype(exp).kind in "iu" else rand((4,), exp, 0, 2)
    got = check_node("Pow", [x, y], rtol=1e-5)[0]
    assert got.dtype == base


@pytest.mark.parametrize("a,b", BROADCASTS[:4])
@pytest.mark.parametrize("op", ["Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_comparisons_give_bool(op, dtype, a, b):
    x, y = RNG.integers(0, 3, size=a).astype(dtype), RNG.integers(0, 3, size=b).astype(dtype)
    got = check_node(op, [x, y])[0]
    assert got.dtype == bool


def test_equal_on_strings_and_bools():
    check_node("Equal", [np.array(["a", "b", "c"], dtype=object), np.array(["a", "x", "c"], dtype=object)])
    check_node("Equal", [np.array([True, False]), np.array([True, True])])


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical(op):
    check_node(op, [RNG.random((2, 3, 4)) > 0.5, RNG.random((3, 1)) > 0.5])


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
def test_bitwise(op, dtype):
    check_node(op, [RNG.integers(0, 120, size=(3, 4)).astype(dtype), RNG.integers(0, 120, size=(4,)).astype(dtype)])


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_bit_shift(direction, dtype):
    check_node("BitShift", [np.array([1, 2, 7, 128], dtype), np.array([1, 2, 3, 0], dtype)], {"direction": direction})


# ---------------------------------------------------------------------- variadic
@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
@pytest.mark.parametrize("shapes", [[(3, 4)], [(3, 4), (4,)], [(2, 1, 4), (3, 1), (4,)], [(1,), (2, 3), (1, 1, 3)]])
def test_variadic(op, shapes):
    check_node(op, [rand(s) for s in shapes])


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_variadic_ints(op):
    check_node(op, [RNG.integers(-9, 9, size=s).astype(np.int64) for s in [(3, 4), (4,), (1, 4)]])


@pytest.mark.parametrize("shapes", [[(3, 4)] * 3, [(3, 1), (1, 4), (4,)], [(2, 3, 4), (), (3, 1)]])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_where(shapes, dtype):
    c = RNG.random(shapes[0]) > 0.5
    x, y = (RNG.integers(0, 9, size=s).astype(dtype) for s in shapes[1:])
    check_node("Where", [c, x, y])


def test_where_on_strings():
    c = np.array([True, False, True])
    check_node("Where", [c, np.array(["a", "b", "c"], dtype=object), np.array(["x", "y", "z"], dtype=object)])


# ----------------------------------------------------------------- Identity, Dropout
def test_identity_and_dropout():
    x = rand((2, 3))
    check_node("Identity", [x])
    check_node("Dropout", [x])
    out, mask = check_node("Dropout", [x, np.array(0.3, np.float32)], n_outputs=2)
    assert mask.dtype == bool and mask.all()


def test_dropout_refuses_training_mode():
    x = rand((2, 3))
    with pytest.raises(KernelError, match="Dropout node 'n0'.*training"):
        run_edgeinfer("Dropout", [x, np.array(0.5, np.float32), np.array(True)])
    got = run_edgeinfer("Dropout", [x, np.array(0.5, np.float32), np.array(False)])[0]
    np.testing.assert_array_equal(got, x)


# --------------------------------------------------------------------------- Cast
ONNX_CODE = {
    "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16,
    "int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16, "int32": TensorProto.INT32,
    "int64": TensorProto.INT64, "uint16": TensorProto.UINT16, "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64, "bool": TensorProto.BOOL, "string": TensorProto.STRING,
}


def ort_cast(x, src, dst):
    """ONNX Runtime's Cast (opcheck's one-node model leaves output types undefined, which
    ONNX Runtime rejects for Cast, so this builds its own)."""
    import onnxruntime as ort

    node = helper.make_node("Cast", ["x"], ["y"], to=ONNX_CODE[dst])
    g = helper.make_graph(
        [node], "cast", [helper.make_tensor_value_info("x", ONNX_CODE[src], x.shape)],
        [helper.make_tensor_value_info("y", ONNX_CODE[dst], None)],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


NUMERIC_VALUES = np.array([0.0, 1.0, -1.0, 2.5, -2.7, 100.0, 0.1, 7.9], np.float64)
CAST_TYPES = ["float32", "float64", "float16", "int8", "uint8", "int32", "int64", "bool"]


@pytest.mark.parametrize("dst", CAST_TYPES + ["string"])
@pytest.mark.parametrize("src", CAST_TYPES)
def test_cast_matches_onnxruntime(src, dst):
    x = NUMERIC_VALUES.astype(src) if src not in ("uint8",) else np.abs(NUMERIC_VALUES).astype(src)
    want = ort_cast(x, src, dst)
    got = run_edgeinfer("Cast", [x], {"to": dst})[0]
    assert got.shape == want.shape
    if dst == "string":
        assert got.tolist() == want.tolist()
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_cast_special_floats_to_string():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 1e20, 1 / 3], np.float32)
    assert run_edgeinfer("Cast", [x], {"to": "string"})[0].tolist() == ort_cast(x, "float32", "string").tolist()


@pytest.mark.parametrize("dst", ["float32", "float64", "int64", "int32"])
def test_cast_from_string(dst):
    x = np.array(["1.5", "-INF", "nan", "+inf", "1e-5", "100", " 7 "] if dst.startswith("float") else ["100", "-3", " 7 ", "100.5"], dtype=object)
    want = ort_cast(x, "string", dst)
    got = run_edgeinfer("Cast", [x], {"to": dst})[0]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_cast_like():
    x = rand((2, 3))
    got = run_edgeinfer("CastLike", [x, np.zeros(1, np.int32)])[0]
    np.testing.assert_array_equal(got, x.astype(np.int32))
    assert infer("CastLike", [("float32", ("N", 3)), ("float16", (1,))])[0] == TensorType("float16", ("N", 3))


def test_cast_bad_target_names_the_node():
    with pytest.raises(ShapeInferenceError, match="Cast node 'n0'.*'to'"):
        infer("Cast", [("float32", (2,))], {"to": "float8"})


def test_bfloat16_round_trip_and_rounding():
    x = np.array([1.0, -2.5, 3.14159, 1e-3, np.inf, -np.inf, 65504.0, 1.00390625], np.float32)
    bits = float32_to_bfloat16(x)
    back = bfloat16_to_float32(bits)
    np.testing.assert_allclose(back, x, rtol=2 ** -8)
    assert back[-1] == 1.0  # 1 + 2^-8 is halfway: ties go to the even mantissa
    assert np.isnan(bfloat16_to_float32(float32_to_bfloat16(np.array([np.nan], np.float32))))[0]
    node = Node("Cast", ["x"], ["y"], {"to": "bfloat16"}, name="n0")
    ctx = OpContext(node, [TensorType("float32", x.shape)], [None])
    schema = get_schema("Cast")
    ctx.outputs = schema.infer(ctx, **resolve_attrs(schema, node))
    assert ctx.outputs[0].dtype == "bfloat16"
    via_cast = schema.build(ctx, **resolve_attrs(schema, node))(x)
    np.testing.assert_array_equal(via_cast, bits)


def test_bfloat16_arithmetic_widens():
    a, b = float32_to_bfloat16(np.array([1.5, -2.0, 3.0], np.float32)), float32_to_bfloat16(np.array([0.5, -1.0, 4.0], np.float32))
    node = Node("Add", ["a", "b"], ["y"], name="n0")
    ctx = OpContext(node, [TensorType("bfloat16", (3,))] * 2, [None, None])
    ctx.outputs = get_schema("Add").infer(ctx)
    assert ctx.outputs[0].dtype == "bfloat16"
    y = get_schema("Add").build(ctx)(a, b)
    np.testing.assert_array_equal(bfloat16_to_float32(y), [2.0, -3.0, 7.0])
    less = OpContext(Node("Less", ["a", "b"], ["y"], name="n1"), [TensorType("bfloat16", (3,))] * 2, [None, None])
    less.outputs = get_schema("Less").infer(less)
    assert get_schema("Less").build(less)(a, b).tolist() == [False, True, True]  # raw bits would say -2 > -1


# ------------------------------------------------------------------- shape rules
def test_symbolic_broadcast_keeps_symbols():
    assert infer("Add", [("float32", ("N", 3)), ("float32", (1, 3))])[0] == TensorType("float32", ("N", 3))
    assert infer("Mul", [("float32", ("N", 1)), ("float32", (4,))])[0] == TensorType("float32", ("N", 4))
    assert infer("Equal", [("int64", ("B", "T")), ("int64", ("B", 1))])[0] == TensorType("bool", ("B", "T"))
    assert infer("Where", [("bool", (1, "S")), ("float16", ("N", 1)), ("float16", ())])[0] == TensorType("float16", ("N", "S"))
    assert infer("Sum", [("float32", None), ("float32", (3,))])[0].shape is None


def test_bad_broadcast_names_the_node():
    with pytest.raises(ShapeInferenceError, match="Add node 'n0'.*3 and 4"):
        infer("Add", [("float32", (2, 3)), ("float32", (4,))])


def test_mixed_dtypes_rejected():
    with pytest.raises(ShapeInferenceError, match="Add node 'n0'.*share one dtype"):
        infer("Add", [("float32", (2,)), ("int64", (2,))])


def test_float_only_op_rejects_ints():
    with pytest.raises(ShapeInferenceError, match="Exp node 'n0'.*int64"):
        infer("Exp", [("int64", (2,))])
    with pytest.raises(ShapeInferenceError, match="condition"):
        infer("Where", [("float32", (2,)), ("float32", (2,)), ("float32", (2,))])


def test_attribute_values_checked():
    with pytest.raises(ShapeInferenceError, match="direction"):
        infer("BitShift", [("uint8", (2,)), ("uint8", (2,))], {"direction": "UP"})
    with pytest.raises(ShapeInferenceError, match="approximate"):
        infer("Gelu", [("float32", (2,))], {"approximate": "fast"})


def test_kernels_write_into_out_buffers():
    x, y = rand((3, 4)), rand((4,))
    node = Node("Add", ["a", "b"], ["y"], name="n0")
    ctx = OpContext(node, [TensorType("float32", (3, 4)), TensorType("float32", (4,))], [None, None])
    ctx.outputs = get_schema("Add").infer(ctx)
    fn = get_schema("Add").build(ctx)
    assert getattr(fn, "writes_out", False)
    buf = np.empty((3, 4), np.float32)
    assert fn(x, y, out=buf) is buf
    np.testing.assert_array_equal(buf, x + y)
