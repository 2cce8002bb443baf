"""Compile-time rewrites of the cpu backend (edgeinfer.optimize) and the kernel paths they and
the per-shape planners pick: each rewrite must fire on its pattern (checked on the compiled
graph's op types), leave lookalikes alone, and compute what the unoptimized graph and ONNX
Runtime compute."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeinfer import Session
from edgeinfer.backends import cpu
from edgeinfer.errors import ShapeInferenceError
from edgeinfer.graph import Graph, Node, ValueInfo
from opcheck import check_node, run_edgeinfer

RTOL, ATOL = 1e-4, 1e-5


def rand(*shape, seed=0, lo=None, hi=None):
    rng = np.random.default_rng(seed + sum(shape))
    if lo is not None:
        return rng.uniform(lo, hi, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def onnx_model(nodes, x_shape, consts=None, opset=17, out="y", inputs=None):
    inputs = inputs or [("x", x_shape)]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def compiled_ops(model, feeds):
    """Op types of the graph the cpu backend binds (domain-qualified), and its outputs."""
    sess = Session(model, threads=1)
    out = sess.run(feeds)
    exe = next(iter(sess._plans.values()))
    ops = [f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in exe.graph.nodes]
    return ops, out


def check_against_ort(model, feeds, rtol=RTOL, atol=ATOL):
    ops, ours = compiled_ops(model, feeds)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(list(ours.values())[0], ref[0], rtol=rtol, atol=atol)
    return ops


def c(v):
    return np.array(v, np.float32)


# ------------------------------------------------------------------- activation spellings
def hard_swish_nodes(variant):
    if variant == "div_last":  # x * clip(x + 3, 0, 6) / 6
        return [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["r"]),
                helper.make_node("Mul", ["x", "r"], ["m"]), helper.make_node("Div", ["m", "six"], ["y"])]
    if variant == "div_inside":  # x * (clip(x + 3, 0, 6) / 6), operands swapped
        return [helper.make_node("Add", ["three", "x"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["r"]),
                helper.make_node("Div", ["r", "six"], ["q"]), helper.make_node("Mul", ["q", "x"], ["y"])]
    if variant == "mul_sixth":  # x * clip(x + 3, 0, 6) * (1/6)
        return [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["r"]),
                helper.make_node("Mul", ["r", "x"], ["m"]), helper.make_node("Mul", ["m", "sixth"], ["y"])]
    return [helper.make_node("HardSigmoid", ["x"], ["h"], alpha=1 / 6, beta=0.5),  # x * hardsigmoid(x)
            helper.make_node("Mul", ["x", "h"], ["y"])]


CONSTS = {"three": c(3), "zero": c(0), "six": c(6), "sixth": c(1 / 6), "one": c(1), "half": c(0.5)}


@pytest.mark.parametrize("variant", ["div_last", "div_inside", "mul_sixth", "hard_sigmoid"])
def test_hard_swish_spellings_become_one_node(variant):
    x = rand(2, 3, 5, 7, lo=-6, hi=6)
    ops = check_against_ort(onnx_model(hard_swish_nodes(variant), x.shape, CONSTS), {"x": x})
    assert ops == ["HardSwish"]


def test_hard_swish_fuses_into_the_conv_before_it():
    x, w, b = rand(1, 3, 8, 8), rand(4, 3, 3, 3, seed=1), rand(4, seed=2)
    nodes = [helper.make_node("Conv", ["in", "w", "b"], ["x"], pads=[1, 1, 1, 1])] + hard_swish_nodes("div_last")
    model = onnx_model(nodes, x.shape, dict(CONSTS, w=w, b=b), inputs=[("in", x.shape)])
    assert check_against_ort(model, {"in": x}) == ["edgeinfer::FusedConv"]


def test_hard_swish_lookalike_with_a_shared_intermediate_is_left_alone():
    # the clipped value is also an output: fusing would lose it
    nodes = hard_swish_nodes("div_last") + [helper.make_node("Add", ["r", "y"], ["z"])]
    x = rand(2, 6, lo=-6, hi=6)
    model = onnx_model(nodes, x.shape, CONSTS, out="z")
    ops = check_against_ort(model, {"x": x})
    assert "HardSwish" not in ops


def test_hard_swish_with_other_constants_is_left_alone():
    nodes = hard_swish_nodes("div_last")
    x = rand(2, 6, lo=-6, hi=6)
    ops = check_against_ort(onnx_model(nodes, x.shape, dict(CONSTS, three=c(2.5))), {"x": x})
    assert "HardSwish" not in ops


def test_hard_sigmoid_spelling():
    nodes = [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["r"]),
             helper.make_node("Div", ["r", "six"], ["y"])]
    x = rand(3, 9, lo=-5, hi=5)
    assert check_against_ort(onnx_model(nodes, x.shape, CONSTS), {"x": x}) == ["HardSigmoid"]


def test_silu_spelling():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    x = rand(2, 4, 6, lo=-20, hi=20)
    assert check_against_ort(onnx_model(nodes, x.shape), {"x": x}) == ["edgeinfer::Activation"]


@pytest.mark.parametrize("variant", ["outer_half", "inner_half", "x_half"])
def test_gelu_erf_spellings(variant):
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["g"])]
    if variant == "outer_half":  # (x * g) * 0.5
        nodes += [helper.make_node("Mul", ["x", "g"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    elif variant == "inner_half":  # x * (g * 0.5)
        nodes += [helper.make_node("Mul", ["g", "half"], ["h"]), helper.make_node("Mul", ["x", "h"], ["y"])]
    else:  # (x * 0.5) * g
        nodes += [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Mul", ["h", "g"], ["y"])]
    x = rand(3, 16, lo=-6, hi=6)
    model = onnx_model(nodes, x.shape, dict(CONSTS, sqrt2=c(np.sqrt(2))))
    assert check_against_ort(model, {"x": x}) == ["edgeinfer::Activation"]


def test_gelu_tanh_spelling():
    nodes = [helper.make_node("Pow", ["x", "three"], ["p"]), helper.make_node("Mul", ["p", "k1"], ["q"]),
             helper.make_node("Add", ["x", "q"], ["s"]), helper.make_node("Mul", ["s", "k2"], ["u"]),
             helper.make_node("Tanh", ["u"], ["t"]), helper.make_node("Add", ["t", "one"], ["g"]),
             helper.make_node("Mul", ["x", "g"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    x = rand(4, 8, lo=-5, hi=5)
    model = onnx_model(nodes, x.shape, dict(CONSTS, k1=c(0.044715), k2=c(np.sqrt(2 / np.pi))))
    assert check_against_ort(model, {"x": x}) == ["edgeinfer::Activation"]


def test_layer_norm_spelling_with_scale_and_bias():
    d = 12
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]), helper.make_node("Sub", ["x", "mu"], ["xc"]),
             helper.make_node("Pow", ["xc", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["xc", "sd"], ["n"]), helper.make_node("Mul", ["n", "gamma"], ["g"]),
             helper.make_node("Add", ["g", "beta"], ["y"])]
    x = rand(2, 5, d) * 3 + 1
    consts = {"two": c(2), "eps": c(1e-5), "gamma": rand(d, seed=1), "beta": rand(d, seed=2)}
    assert check_against_ort(onnx_model(nodes, x.shape, consts), {"x": x}) == ["LayerNormalization"]


def test_layer_norm_spelling_over_a_middle_axis_is_left_alone():
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[1]), helper.make_node("Sub", ["x", "mu"], ["xc"]),
             helper.make_node("Pow", ["xc", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["var"], axes=[1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["xc", "sd"], ["y"])]
    x = rand(2, 5, 4)
    ops = check_against_ort(onnx_model(nodes, x.shape, {"two": c(2), "eps": c(1e-5)}), {"x": x})
    assert "LayerNormalization" not in ops


# ----------------------------------------------------------------------- affine folding
def test_per_channel_mul_add_after_conv_fold_into_it():
    x, w, b = rand(1, 3, 9, 9), rand(6, 3, 3, 3, seed=1), rand(6, seed=2)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    consts = {"w": w, "b": b, "s": rand(6, 1, 1, seed=3), "t": rand(1, 6, 1, 1, seed=4)}
    assert check_against_ort(onnx_model(nodes, x.shape, consts), {"x": x}) == ["edgeinfer::FusedConv"]


def test_spatially_varying_mul_after_conv_is_not_folded():
    x, w = rand(1, 3, 5, 5), rand(4, 3, 1, 1, seed=1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    consts = {"w": w, "s": rand(1, 1, 5, 5, seed=3)}
    ops = check_against_ort(onnx_model(nodes, x.shape, consts), {"x": x})
    assert ops == ["Conv", "Mul"]


def test_affine_before_a_pointwise_conv_folds_into_it():
    x, w, b = rand(1, 5, 6, 7), rand(8, 5, 1, 1, seed=1), rand(8, seed=2)
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Conv", ["a", "w", "b"], ["y"])]
    consts = {"w": w, "b": b, "s": rand(5, 1, 1, seed=3), "t": c(0.25)}
    assert check_against_ort(onnx_model(nodes, x.shape, consts), {"x": x}) == ["Conv"]


def test_affine_before_a_padded_conv_is_not_folded_into_it():
    # the padding would see shifted zeros: instead the affine pair becomes one Affine node
    x, w = rand(1, 5, 6, 7), rand(8, 5, 3, 3, seed=1)
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Conv", ["a", "w"], ["y"], pads=[1, 1, 1, 1])]
    consts = {"w": w, "s": rand(5, 1, 1, seed=3), "t": rand(5, 1, 1, seed=4)}
    assert check_against_ort(onnx_model(nodes, x.shape, consts), {"x": x}) == ["edgeinfer::Affine", "Conv"]


def test_batch_norm_mul_add_relu_chain_becomes_one_affine():
    x = rand(2, 4, 5, 5)
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "bt", "mu", "var"], ["n"]),
             helper.make_node("Mul", ["n", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    consts = {"g": rand(4, seed=1), "bt": rand(4, seed=2), "mu": rand(4, seed=3), "var": rand(4, seed=4, lo=0.5, hi=2),
              "s": rand(4, 1, 1, seed=5), "t": rand(4, 1, 1, seed=6)}
    assert check_against_ort(onnx_model(nodes, x.shape, consts), {"x": x}) == ["edgeinfer::Affine"]


def test_matmul_bias_activation_become_fused_matmul():
    x, w, b = rand(2, 3, 8), rand(8, 5, seed=1), rand(5, seed=2)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["b", "m"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    assert check_against_ort(onnx_model(nodes, x.shape, {"w": w, "b": b}), {"x": x}) == ["edgeinfer::FusedMatMul"]


def test_matmul_add_of_a_non_bias_is_not_fused_as_bias():
    x, w = rand(2, 3, 8), rand(8, 5, seed=1)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "z"], ["y"])]
    model = onnx_model(nodes, x.shape, {"w": w}, inputs=[("x", x.shape), ("z", (2, 3, 5))])
    feeds = {"x": x, "z": rand(2, 3, 5, seed=9)}
    assert check_against_ort(model, feeds) == ["MatMul", "Add"]


# ------------------------------------------------------------------------------ layout
def test_transposes_that_cancel_disappear():
    nodes = [helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 3, 1, 2]), helper.make_node("Relu", ["t2"], ["y"])]
    x = rand(2, 3, 4, 5)
    assert check_against_ort(onnx_model(nodes, x.shape), {"x": x}) == ["Relu"]


def test_transpose_chain_becomes_one_transpose():
    nodes = [helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0, 2]),
             helper.make_node("Transpose", ["t1"], ["y"], perm=[0, 2, 1])]
    x = rand(2, 3, 4)
    assert check_against_ort(onnx_model(nodes, x.shape), {"x": x}) == ["Transpose"]


def test_reshape_chain_becomes_one_reshape():
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["r1"]), helper.make_node("Flatten", ["r1"], ["r2"], axis=2),
             helper.make_node("Unsqueeze", ["r2", "ax"], ["y"])]
    x = rand(2, 3, 4, 5)
    consts = {"s1": np.array([2, 12, 5, 1], np.int64), "ax": np.array([0], np.int64)}
    assert check_against_ort(onnx_model(nodes, x.shape, consts), {"x": x}) == ["Reshape"]


def test_transposed_constant_matmul_operand_is_folded():
    w = rand(5, 8, seed=1)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])]
    x = rand(3, 8)
    assert check_against_ort(onnx_model(nodes, x.shape, {"w": w}), {"x": x}) == ["MatMul"]


def test_optimize_false_keeps_the_graph_as_written():
    g = Graph(
        inputs=[ValueInfo("x", "float32", (1, 4))], outputs=[ValueInfo("y", "float32", None)],
        nodes=[Node("Sigmoid", ["x"], ["s"]), Node("Mul", ["x", "s"], ["y"])],
    )
    plain = cpu.compile(g, {"x": (1, 4)}, options={"optimize": False})
    fused = cpu.compile(g, {"x": (1, 4)})
    assert [n.op_type for n in plain.graph.nodes] == ["Sigmoid", "Mul"]
    assert [n.op_type for n in fused.graph.nodes] == ["Activation"]
    x = rand(1, 4, lo=-30, hi=30)
    np.testing.assert_allclose(fused.run({"x": x})["y"], plain.run({"x": x})["y"], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ fused op errors
def test_affine_with_a_scale_that_grows_the_output_names_the_node():
    with pytest.raises(ShapeInferenceError, match="n0.*does not broadcast"):
        run_edgeinfer("Affine", [rand(2, 3), rand(4, 2, 3)], {}, domain="edgeinfer", const_inputs=(1,))


def test_activation_with_an_unknown_name_names_the_node():
    with pytest.raises(ShapeInferenceError, match="n0.*unknown fused activation 'Swoosh'"):
        run_edgeinfer("Activation", [rand(2, 3)], {"activation": "Swoosh"}, domain="edgeinfer")


def test_activation_without_a_name_names_the_node():
    with pytest.raises(ShapeInferenceError, match="n0.*'activation' is empty"):
        run_edgeinfer("Activation", [rand(2, 3)], {}, domain="edgeinfer")


def test_affine_rejects_integer_input():
    with pytest.raises(ShapeInferenceError, match="n0.*float"):
        run_edgeinfer("Affine", [np.ones((2, 3), np.int32)], {}, domain="edgeinfer")


@pytest.mark.parametrize("act,params", [("", []), ("Relu", []), ("HardSwish", []), ("Clip", [-1.0, 2.0])])
def test_affine_kernel(act, params):
    x, s, t = rand(2, 4, 3, 3), rand(4, 1, 1, seed=1), rand(4, 1, 1, seed=2)
    y = run_edgeinfer("Affine", [x, s, t], {"activation": act, "activation_params": params}, domain="edgeinfer",
                      const_inputs=(1, 2))[0]
    ref = x * s + t
    if act == "Relu":
        ref = np.maximum(ref, 0)
    elif act == "HardSwish":
        ref = ref * np.clip(ref / 6 + 0.5, 0, 1)
    elif act == "Clip":
        ref = np.clip(ref, -1, 2)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act,params", [("SiLU", []), ("Gelu", [0.0]), ("Gelu", [1.0])])
def test_activation_kernel(act, params):
    x = rand(3, 50, lo=-8, hi=8)
    y = run_edgeinfer("Activation", [x], {"activation": act, "activation_params": params}, domain="edgeinfer")[0]
    x64 = x.astype(np.float64)
    if act == "SiLU":
        ref = x64 / (1 + np.exp(-x64))
    elif params[0]:
        ref = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3)))
    else:
        from math import erf
        ref = 0.5 * x64 * (1 + np.vectorize(erf)(x64 / np.sqrt(2)))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------- kernel paths vs ORT
CONV_TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape,k,attrs", [
    ((1, 40, 14, 14), 3, {"pads": [1, 1, 1, 1]}),  # channels-last depthwise, stride 1
    ((2, 24, 9, 11), 5, {"pads": [2, 2, 2, 2], "strides": [2, 2]}),  # stride phases
    ((1, 16, 7, 10), 3, {"pads": [2, 1, 2, 1], "dilations": [2, 1]}),  # dilation, asymmetric
    ((1, 32, 2, 30), 5, {"pads": [2, 2, 2, 2]}),  # taps that only read padding are skipped
    ((1, 8, 1, 5), 5, {"pads": [2, 3, 2, 3], "strides": [2, 2]}),
    ((1, 8, 80, 80), 3, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # large image: NCHW phased
    ((1, 12, 6, 6), 3, {"pads": [0, 0, 0, 0], "strides": [2, 1], "dilations": [1, 2]}),  # NCHW fallback
])
def test_depthwise_conv_paths(x_shape, k, attrs):
    c = x_shape[1]
    inputs = [rand(*x_shape), rand(c, 1, k, k, seed=1), rand(c, seed=2)]
    check_node("Conv", inputs, dict(attrs, group=c), const_inputs=(1, 2), **CONV_TOL)


@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ((1, 12, 7, 9), (8, 3, 1, 1), {"group": 4}),  # grouped 1x1: batched GEMMs, no im2col
    ((2, 12, 7, 9), (12, 6, 1, 1), {"group": 2, "strides": [2, 2]}),
    ((1, 6, 9, 9), (10, 6, 3, 3), {"pads": [1, 1, 1, 1]}),  # im2col from the padded copy
    ((1, 6, 9, 9), (10, 6, 3, 3), {"pads": [0, 1, 2, 1], "strides": [2, 1]}),
    ((1, 48, 48, 48), (40, 48, 3, 3), {"pads": [1, 1, 1, 1]}),  # per-tap GEMMs
    ((2, 40, 96, 96), (8, 40, 3, 3), {"pads": [1, 1, 1, 1]}),  # few outputs: stacked taps, in blocks
])
def test_dense_conv_paths(x_shape, w_shape, attrs):
    inputs = [rand(*x_shape), rand(*w_shape, seed=1), rand(w_shape[0], seed=2)]
    check_node("Conv", inputs, attrs, const_inputs=(1, 2), **CONV_TOL)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 3], "strides": [1, 2], "ceil_mode": 1},
])
def test_small_image_pools_run_channels_last(op, attrs):
    # 7x7 images with many channels take the channels-last path
    x = rand(2, 40, 7, 7)
    if op == "AveragePool":
        attrs = dict(attrs, count_include_pad=1)
    check_node(op, [x], attrs, rtol=1e-5, atol=1e-6)


def test_static_conv_fast_path_agrees_with_the_general_path():
    # same kernel object: a call with another shape than compiled takes the general path
    x_shape, w = (1, 3, 6, 6), rand(4, 3, 3, 3, seed=1)
    node_out = run_edgeinfer("Conv", [rand(*x_shape), w, rand(4, seed=2)], {"pads": [1, 1, 1, 1]},
                             const_inputs=(1, 2), shapes_known=False)
    assert node_out[0].shape == (1, 4, 6, 6)


# ------------------------------------------------------------------ channels-last runs
def mobile_block(c_in=8, c_mid=24, hw=10, se=True, k=3, stride=1):
    """1x1 expand + HardSwish -> depthwise + HardSwish -> [squeeze-excite] -> 1x1 project."""
    r = c_mid // 4
    consts = {"w1": rand(c_mid, c_in, 1, 1, seed=1), "b1": rand(c_mid, seed=2),
              "wd": rand(c_mid, 1, k, k, seed=3), "bd": rand(c_mid, seed=4),
              "ws1": rand(r, c_mid, 1, 1, seed=5), "bs1": rand(r, seed=6),
              "ws2": rand(c_mid, r, 1, 1, seed=7), "bs2": rand(c_mid, seed=8),
              "w2": rand(c_in, c_mid, 1, 1, seed=9), "b2": rand(c_in, seed=10)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["e"]), helper.make_node("HardSwish", ["e"], ["ea"]),
             helper.make_node("Conv", ["ea", "wd", "bd"], ["d"], group=c_mid, pads=[k // 2] * 4, strides=[stride] * 2),
             helper.make_node("HardSwish", ["d"], ["da"])]
    last = "da"
    if se:
        nodes += [helper.make_node("GlobalAveragePool", ["da"], ["g"]),
                  helper.make_node("Conv", ["g", "ws1", "bs1"], ["s1"]), helper.make_node("Relu", ["s1"], ["s1a"]),
                  helper.make_node("Conv", ["s1a", "ws2", "bs2"], ["s2"]),
                  helper.make_node("HardSigmoid", ["s2"], ["s2a"], alpha=1 / 6, beta=0.5),
                  helper.make_node("Mul", ["da", "s2a"], ["se"])]
        last = "se"
    nodes.append(helper.make_node("Conv", [last, "w2", "b2"], ["y"]))
    return onnx_model(nodes, (1, c_in, hw, hw), consts, opset=17)


@pytest.mark.parametrize("se,k,stride,hw", [(True, 3, 1, 10), (False, 5, 1, 7), (True, 3, 2, 11), (False, 3, 1, 70)])
def test_depthwise_between_pointwise_convs_runs_channels_last(se, k, stride, hw):
    x = rand(1, 8, hw, hw)
    model = mobile_block(se=se, k=k, stride=stride, hw=hw)
    ops = check_against_ort(model, {"x": x}, rtol=1e-4, atol=1e-4)
    expected = ["edgeinfer::FusedConv", "edgeinfer::FusedConv"] + (["edgeinfer::SqueezeExcite"] if se else [])
    assert ops == expected + ["edgeinfer::FusedConv"]
    exe = next(iter(Session(model)._plans.values()))
    expand, dw = exe.graph.nodes[0], exe.graph.nodes[1]
    assert expand.attrs["output_layout"] == "NHWC"
    assert dw.attrs["input_layout"] == dw.attrs["output_layout"] == "NHWC"
    assert exe.graph.nodes[-1].attrs["input_layout"] == "NHWC"
    assert exe.plan.types[dw.outputs[0]].shape[-1] == 24  # the IR carries the channels-last shape


def test_depthwise_whose_output_is_also_a_graph_output_keeps_nchw():
    model = mobile_block(se=False)
    model.graph.output.append(helper.make_tensor_value_info("da", TensorProto.FLOAT, None))
    x = rand(1, 8, 10, 10)
    sess = Session(model)
    out = sess.run({"x": x})
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for ours, theirs in zip(out.values(), ref):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    dw = next(n for n in next(iter(sess._plans.values())).graph.nodes if n.attrs.get("group", 1) > 1)
    assert dw.attrs.get("output_layout", "NCHW") == "NCHW"


def test_channels_last_conv_refuses_what_it_cannot_run():
    x, w = rand(1, 6, 6, 4), rand(5, 4, 3, 3, seed=1)  # a dense 3x3: no channels-last method
    with pytest.raises(ShapeInferenceError, match="n0.*1x1 stride-1 and depthwise"):
        run_edgeinfer("FusedConv", [x, w], {"input_layout": "NHWC", "pads": [1, 1, 1, 1]}, domain="edgeinfer",
                      const_inputs=(1,))
    with pytest.raises(ShapeInferenceError, match="n0.*input_layout 'NWHC'"):
        run_edgeinfer("FusedConv", [x, w], {"input_layout": "NWHC"}, domain="edgeinfer", const_inputs=(1,))


# ------------------------------------------------------------ which method runs what
@pytest.mark.parametrize("x_shape,w_shape,group,strides,pads,method", [
    ((1, 64, 14, 14), (64, 64, 1, 1), 1, (1, 1), (0, 0), "pointwise"),
    ((1, 64, 14, 14), (64, 16, 1, 1), 4, (1, 1), (0, 0), "pointwise"),
    ((1, 64, 14, 14), (64, 1, 3, 3), 64, (1, 1), (1, 1), "depthwise_nhwc"),
    ((1, 16, 112, 112), (16, 1, 3, 3), 16, (1, 1), (1, 1), "depthwise_phased"),
    ((1, 16, 56, 56), (32, 1, 3, 3), 16, (1, 1), (1, 1), "depthwise_phased"),  # channel multiplier 2
    ((1, 128, 56, 56), (32, 128, 3, 3), 1, (1, 1), (1, 1), "tap_gemm"),
    ((1, 96, 160, 160), (24, 96, 3, 3), 1, (1, 1), (1, 1), "tap_stacked"),
    ((1, 16, 55, 55), (64, 16, 3, 3), 1, (1, 1), (1, 1), "im2col"),
    ((1, 3, 224, 224), (64, 3, 7, 7), 1, (2, 2), (3, 3), "im2col"),
])
def test_conv_method_choice(x_shape, w_shape, group, strides, pads, method):
    from edgeinfer.kernels.conv import Window, _choose_method

    win = Window(tuple(w_shape[2:]), strides, (1, 1), pads * 2)
    outs, begins, ends = win.resolve(tuple(x_shape[2:]), ValueError)
    assert _choose_method(x_shape, w_shape, win, group, outs, begins, ends) == method


def test_positive_scale_moves_through_relu_into_the_next_pointwise_conv():
    x, w = rand(1, 6, 5, 5), rand(4, 6, 1, 1, seed=1)
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])]
    consts = {"w": w, "s": rand(6, 1, 1, seed=3, lo=0.5, hi=2), "t": rand(6, 1, 1, seed=4)}
    model = onnx_model(nodes, x.shape, consts)
    assert check_against_ort(model, {"x": x}) == ["edgeinfer::Affine", "Conv"]
    affine = next(iter(Session(model)._plans.values())).graph.nodes[0]
    assert affine.inputs[1] == ""  # no multiply left


def test_a_negative_scale_stays_before_the_relu():
    x, w = rand(1, 6, 5, 5), rand(4, 6, 1, 1, seed=1)
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])]
    consts = {"w": w, "s": rand(6, 1, 1, seed=3), "t": rand(6, 1, 1, seed=4)}  # mixed signs
    model = onnx_model(nodes, x.shape, consts)
    check_against_ort(model, {"x": x})
    affine = next(iter(Session(model)._plans.values())).graph.nodes[0]
    assert affine.inputs[1] != ""


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("attrs", [{"transB": 1}, {"transB": 1, "alpha": 0.5, "beta": 2.0}])
def test_gemm_with_a_large_transposed_weight_kept_as_a_view(monkeypatch, rows, attrs):
    import edgeinfer.kernels.nn as nn

    monkeypatch.setattr(nn, "_GEMM_COPY_MAX_BYTES", 0)  # every transposed weight counts as large
    a, b, c = rand(rows, 16), rand(7, 16, seed=1), rand(7, seed=2)
    check_node("Gemm", [a, b, c], attrs, const_inputs=(1, 2))


def test_channels_last_block_gives_the_same_results_from_several_threads():
    import threading

    model = mobile_block(se=True, hw=12)
    sess = Session(model)
    x = rand(1, 8, 12, 12)
    ref = sess.run({"x": x})["y"]
    bad = []

    def work():
        for _ in range(10):
            if not np.array_equal(sess.run({"x": x})["y"], ref):
                bad.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad
