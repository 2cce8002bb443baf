"""IR -> .tflite (converters/tflite_export.py), run in LiteRT and compared with ONNX Runtime.

* one-node models per op family against our cpu backend, in both signature layouts;
* the 9 ONNX light models and PP-OCRv4 rec / cls against ONNX Runtime on the original model
  (max |diff| <= 1e-3 * max |ref|), with the transposes the layout pass leaves;
* QDQ models from ``onnxruntime.quantization.quantize_static`` (per-tensor and per-channel)
  against ONNX Runtime on the QDQ model: within one quantization step of the output.
"""
import json

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import edgeinfer  # noqa: E402
from edgeinfer import ExportError, Graph, Node, Session, ValueInfo  # noqa: E402
from edgeinfer.converters.tflite_export import LAYOUT_METADATA, export_tflite, read_layout  # noqa: E402
from models import LIGHT_MODELS, light_input, light_model, model_path  # noqa: E402

from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

ort.set_default_logger_severity(3)
PPOCR = {"ppocr_rec": (1, 3, 48, 320), "ppocr_cls": (1, 3, 48, 192)}
HEAVY = {"vgg19", "zfnet512", "bvlc_alexnet"}  # hundreds of MB of weights: export and run once


def lite_run(path, report, feeds, reference=False):
    """Run a .tflite in LiteRT, feeds and results in the IR's layout (via the report)."""
    it = Interpreter(model_path=str(path), num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], feeds[d["name"]].transpose(report.inputs[d["name"]]).copy(order="C"))  # 0-d stays 0-d
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).transpose(np.argsort(report.outputs[d["name"]]))
            for d in it.get_output_details()}


def ort_run(model, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else open(model, "rb").read()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def rel_err(got, want):
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got.astype(np.float64) - want))) / max(float(np.max(np.abs(want))), 1e-12)


def conv_chain(path, nchw_inputs=False):
    """Conv -> Relu -> depthwise Conv -> MaxPool -> Add -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return nh.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8),
             h.make_node("Relu", ["c2"], ["r2"]),
             h.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             h.make_node("Add", ["p", "p"], ["a"]), h.make_node("GlobalAveragePool", ["a"], ["g"]),
             h.make_node("Flatten", ["g"], ["f"]), h.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    g = h.make_graph(nodes, "chain", [h.make_tensor_value_info("x", TP.FLOAT, [1, 3, 16, 16])],
                     [h.make_tensor_value_info("y", TP.FLOAT, [1, 10])],
                     [init("w1", 8, 3, 3, 3), init("b1", 8), init("w2", 8, 1, 3, 3), init("b2", 8), init("wf", 10, 8),
                      init("bf", 10)])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------ one-node ops vs the cpu backend
def one_node(op, inputs, attrs=None, consts=None, out_shape=None, n_out=1):
    """A one-node Graph: ``inputs`` name -> array (graph inputs), ``consts`` name -> array."""
    consts = consts or {}
    names = list(inputs) + list(consts)
    outs = [f"y{i}" for i in range(n_out)]
    g = Graph(inputs=[ValueInfo(k, str(v.dtype), v.shape) for k, v in inputs.items()],
              outputs=[ValueInfo(o, "float32", None) for o in outs],
              nodes=[Node(op, tuple(names), tuple(outs), dict(attrs or {}))], constants=dict(consts),
              opset={"": 21})
    from edgeinfer.shape_inference import propagate

    types, _ = propagate(g, fold=False)
    g.outputs = [ValueInfo(o, types[o].dtype, types[o].shape) for o in outs]
    return g


rng = np.random.default_rng(1)
X4 = rng.standard_normal((1, 6, 9, 10)).astype(np.float32)
X3 = rng.standard_normal((2, 5, 7)).astype(np.float32)
f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
i64 = lambda *v: np.array(v, np.int64)  # noqa: E731

OP_CASES = {
    "conv_same": ("Conv", {"x": X4}, {"pads": [1, 1, 1, 1]}, {"w": f32(4, 6, 3, 3), "b": f32(4)}),
    "conv_stride_asym": ("Conv", {"x": X4}, {"pads": [0, 1, 2, 0], "strides": [2, 2]}, {"w": f32(4, 6, 3, 3)}),
    "conv_dilated": ("Conv", {"x": X4}, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, {"w": f32(4, 6, 3, 3)}),
    "conv_grouped": ("Conv", {"x": X4}, {"group": 2, "pads": [1, 1, 1, 1]}, {"w": f32(4, 3, 3, 3)}),
    "conv_depthwise_mult": ("Conv", {"x": X4}, {"group": 6}, {"w": f32(12, 1, 3, 3), "b": f32(12)}),
    "conv1d": ("Conv", {"x": X3}, {"pads": [1, 1]}, {"w": f32(4, 5, 3)}),
    "conv_transpose": ("ConvTranspose", {"x": X4}, {"strides": [2, 2], "pads": [1, 1, 1, 1]},
                       {"w": f32(6, 3, 3, 3), "b": f32(3)}),
    "maxpool_pads": ("MaxPool", {"x": X4}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, {}),
    "maxpool_ceil": ("MaxPool", {"x": X4}, {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, {}),
    "avgpool_include_pad": ("AveragePool", {"x": X4}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                                       "count_include_pad": 1}, {}),
    "avgpool_exclude_pad": ("AveragePool", {"x": X4}, {"kernel_shape": [3, 3], "strides": [2, 2],
                                                       "pads": [1, 1, 1, 1]}, {}),
    "avgpool_ceil": ("AveragePool", {"x": X4}, {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, {}),
    "global_max": ("GlobalMaxPool", {"x": X4}, {}, {}),
    "lrn": ("LRN", {"x": X4}, {"size": 3, "alpha": 1e-2, "beta": 0.75, "bias": 1.0}, {}),
    "batchnorm": ("BatchNormalization", {"x": X4}, {}, {"s": f32(6), "b": f32(6), "m": f32(6),
                                                        "v": np.abs(f32(6)) + 0.5}),
    "instancenorm": ("InstanceNormalization", {"x": X4}, {}, {"s": f32(6), "b": f32(6)}),
    "layernorm": ("LayerNormalization", {"x": X3}, {"axis": -1}, {"s": f32(7), "b": f32(7)}),
    "resize_linear_half": ("Resize", {"x": X4}, {"mode": "linear"}, {"roi": np.zeros(0, np.float32),
                                                                     "sc": np.array([1, 1, 2, 2], np.float32)}),
    "resize_linear_align": ("Resize", {"x": X4}, {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
                            {"roi": np.zeros(0, np.float32), "sc": np.zeros(0, np.float32), "sz": i64(1, 6, 17, 23)}),
    "resize_nearest": ("Resize", {"x": X4}, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                             "nearest_mode": "floor"},
                       {"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 3], np.float32)}),
    "depth_to_space_crd": ("DepthToSpace", {"x": f32(1, 8, 3, 4)}, {"blocksize": 2, "mode": "CRD"}, {}),
    "depth_to_space_dcr": ("DepthToSpace", {"x": f32(1, 8, 3, 4)}, {"blocksize": 2, "mode": "DCR"}, {}),
    "space_to_depth": ("SpaceToDepth", {"x": X4[:, :, :8]}, {"blocksize": 2}, {}),
    "softmax_axis1": ("Softmax", {"x": X4}, {"axis": 1}, {}),
    "logsoftmax": ("LogSoftmax", {"x": X3}, {"axis": -1}, {}),
    "concat": ("Concat", {"x": X4, "x2": f32(1, 3, 9, 10)}, {"axis": 1}, {}),
    "split": ("Split", {"x": X4}, {"axis": 1}, {"s": i64(2, 4)}),
    "slice_neg_step": ("Slice", {"x": X4}, {}, {"st": i64(-1, 1), "en": i64(-100, 8), "ax": i64(3, 2),
                                                "sp": i64(-2, 3)}),
    "gather": ("Gather", {"x": X4}, {"axis": 1}, {"i": i64(5, -1, 0)}),
    "pad_reflect": ("Pad", {"x": X4}, {"mode": "reflect"}, {"p": i64(0, 0, 1, 2, 0, 0, 2, 1)}),
    "pad_value": ("Pad", {"x": X4}, {}, {"p": i64(0, 1, 1, 0, 0, 0, 2, 1), "v": np.array(0.5, np.float32)}),
    "reduce_mean": ("ReduceMean", {"x": X4}, {"keepdims": 0}, {"a": i64(1, 3)}),
    "reduce_max": ("ReduceMax", {"x": X4}, {"keepdims": 1}, {"a": i64(2)}),
    "reduce_l2": ("ReduceL2", {"x": X4}, {"keepdims": 1}, {"a": i64(1)}),
    "argmax": ("ArgMax", {"x": X4}, {"axis": 1, "keepdims": 1}, {}),
    "transpose": ("Transpose", {"x": X4}, {"perm": [0, 2, 3, 1]}, {}),
    "reshape": ("Reshape", {"x": X4}, {}, {"s": i64(1, 6, 90)}),
    "flatten": ("Flatten", {"x": X4}, {"axis": 2}, {}),
    "unsqueeze": ("Unsqueeze", {"x": X3}, {}, {"a": i64(1)}),
    "matmul": ("MatMul", {"x": X3, "x2": f32(2, 7, 4)}, {}, {}),
    "matmul_const": ("MatMul", {"x": X3}, {}, {"w": f32(7, 4)}),
    "gemm_trans": ("Gemm", {"x": f32(5, 3)}, {"transA": 1, "alpha": 0.5, "beta": 2.0}, {"w": f32(5, 4),
                                                                                       "c": f32(4)}),
    "add_bcast": ("Add", {"x": X4}, {}, {"c": f32(6, 1, 1)}),
    "mul_rank": ("Mul", {"x": X4, "x2": f32(10)}, {}, {}),
    "pow": ("Pow", {"x": np.abs(X4) + 0.1}, {}, {"e": np.array(1.5, np.float32)}),
    "clip": ("Clip", {"x": X4}, {}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}),
    # bounds computed at run time (openWakeWord's melspectrogram): MAXIMUM/MINIMUM by a scalar
    "clip_dynamic": ("Clip", {"x": X4, "lo": np.array([-0.5], np.float32), "hi": np.array(0.7, np.float32)}, {}, {}),
    "clip_dynamic_min": ("Clip", {"x": X3, "lo": np.array(0.1, np.float32)}, {}, {}),
    "hard_sigmoid": ("HardSigmoid", {"x": X4}, {}, {}),
    "hard_swish": ("HardSwish", {"x": X4}, {}, {}),
    "leaky_relu": ("LeakyRelu", {"x": X4}, {"alpha": 0.2}, {}),
    "prelu": ("PRelu", {"x": X4}, {}, {"s": f32(6, 1, 1)}),
    "gelu": ("Gelu", {"x": X4}, {}, {}),
    "erf": ("Erf", {"x": X4}, {}, {}),
    "elu": ("Elu", {"x": X4}, {}, {}),
    "sigmoid": ("Sigmoid", {"x": X4}, {}, {}),
    "tanh": ("Tanh", {"x": X4}, {}, {}),
    "exp": ("Exp", {"x": X4}, {}, {}),
    "sqrt": ("Sqrt", {"x": np.abs(X4)}, {}, {}),
    "max3": ("Max", {"x": X4, "x2": f32(1, 6, 9, 10), "x3": f32(1, 1, 1, 10)}, {}, {}),
    "where": ("Where", {"c": X4 > 0, "x": X4}, {}, {"z": np.zeros(1, np.float32)}),
    "cast": ("Cast", {"x": X4 * 10}, {"to": "int32"}, {}),
    "tile": ("Tile", {"x": X3}, {}, {"r": i64(1, 2, 3)}),
    "expand": ("Expand", {"x": f32(1, 6, 1, 1)}, {}, {"s": i64(2, 6, 3, 4)}),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
@pytest.mark.parametrize("nchw", [False, True], ids=["nhwc", "nchw"])
def test_op_matches_cpu_backend(case, nchw, tmp_path):
    op, inputs, attrs, consts = OP_CASES[case]
    n_out = 2 if op == "Split" else 1
    g = one_node(op, inputs, attrs, consts, n_out=n_out)
    report = export_tflite(g, tmp_path / "m.tflite", nchw_inputs=nchw)
    want = Session(g).run(inputs)
    got = lite_run(tmp_path / "m.tflite", report, inputs)
    for name, ref in want.items():
        assert got[name].dtype == ref.dtype, name
        if ref.dtype.kind == "f":
            assert rel_err(got[name], ref) < 1e-5, case
        else:
            np.testing.assert_array_equal(got[name], ref)
    if nchw:
        assert all(p == list(range(len(p))) for p in report.inputs.values())
        assert all(p == list(range(len(p))) for p in report.outputs.values())


def test_conv_chain_layout_and_fusion(tmp_path):
    g = edgeinfer.load(conv_chain(tmp_path / "chain.onnx"))
    report = export_tflite(g, tmp_path / "nhwc.tflite")
    assert report.transposes == 0
    assert report.inputs == {"x": [0, 2, 3, 1]} and report.outputs == {"y": [0, 1]}
    assert report.op_counts == {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "MAX_POOL_2D": 1, "ADD": 1, "MEAN": 1,
                                "RESHAPE": 1, "FULLY_CONNECTED": 1}
    assert report.fused_activations == 2  # both Relus
    assert read_layout(tmp_path / "nhwc.tflite") == {"inputs": {"x": [0, 2, 3, 1]}, "outputs": {"y": [0, 1]}}
    kept = export_tflite(g, tmp_path / "nchw.tflite", nchw_inputs=True)
    assert kept.transposes == 1 and "Conv" in kept.transpose_reasons[0]  # only at the input
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = ort_run(str(tmp_path / "chain.onnx"), {"x": x})[0]
    for path, rep in ((tmp_path / "nhwc.tflite", report), (tmp_path / "nchw.tflite", kept)):
        assert rel_err(lite_run(path, rep, {"x": x})["y"], want) < 1e-5
        assert rel_err(lite_run(path, rep, {"x": x}, reference=True)["y"], want) < 1e-5


def test_nhwc_model_with_transposes_comes_back_without_them(tmp_path):
    """A graph fed NHWC that transposes to NCHW for its convs (what a TFLite import gives)."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = Graph(inputs=[ValueInfo("img", "float32", (1, 8, 8, 3))], outputs=[ValueInfo("out", "float32", (1, 8, 8, 4))],
              nodes=[Node("Transpose", ("img",), ("t",), {"perm": [0, 3, 1, 2]}),
                     Node("Conv", ("t", "w"), ("c",), {"pads": [1, 1, 1, 1]}), Node("Relu", ("c",), ("r",)),
                     Node("Transpose", ("r",), ("out",), {"perm": [0, 2, 3, 1]})],
              constants={"w": w}, opset={"": 21})
    report = export_tflite(g, tmp_path / "m.tflite")
    assert report.transposes == 0 and report.op_counts == {"CONV_2D": 1}
    assert report.inputs == {"img": [0, 1, 2, 3]} and report.outputs == {"out": [0, 1, 2, 3]}
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(lite_run(tmp_path / "m.tflite", report, {"img": x})["out"],
                               Session(g).run({"img": x})["out"], rtol=1e-5, atol=1e-5)


def test_unsupported_ops_are_listed_at_once(tmp_path):
    g = Graph(inputs=[ValueInfo("x", "float32", (2, 3))], outputs=[ValueInfo("y", "float32", (2, 3))],
              nodes=[Node("Hardmax", ("x",), ("a",)), Node("Celu", ("a",), ("b",)),
                     Node("Elu", ("b",), ("y",), {"alpha": 0.5})], opset={"": 21})
    with pytest.raises(ExportError) as e:
        export_tflite(g, tmp_path / "m.tflite")
    msg = str(e.value)
    assert "3 unsupported" in msg and "Hardmax" in msg and "Celu" in msg and "alpha=0.5" in msg
    assert not (tmp_path / "m.tflite").exists()


def test_symbolic_shapes_need_input_shapes(tmp_path):
    g = Graph(inputs=[ValueInfo("x", "float32", ("n", 3))], outputs=[ValueInfo("y", "float32", ("n", 3))],
              nodes=[Node("Relu", ("x",), ("y",))], opset={"": 21})
    with pytest.raises(ExportError, match="input_shapes"):
        export_tflite(g, tmp_path / "m.tflite")
    report = export_tflite(g, tmp_path / "m.tflite", input_shapes={"x": (4, 3)})
    assert report.op_counts == {"RELU": 1}


def test_write_is_atomic_and_leaves_the_graph_alone(tmp_path):
    g = edgeinfer.load(conv_chain(tmp_path / "chain.onnx"))
    before = (list(g.nodes), dict(g.constants), list(g.inputs))
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")
    report = export_tflite(g, target)
    assert (list(g.nodes), dict(g.constants), list(g.inputs)) == before
    assert target.read_bytes()[4:8] == b"TFL3" and report.size_bytes == target.stat().st_size
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    meta = read_layout(target)
    assert json.loads(json.dumps(meta)) == meta and LAYOUT_METADATA == "edgeinfer_layout"


# ------------------------------------------------------------------ real models vs ONNX Runtime
def real_model(name):
    if name in PPOCR:
        path = model_path(name)
        x = np.random.default_rng(0).uniform(-1, 1, PPOCR[name]).astype(np.float32)
        return path, {"x": x}, {"x": PPOCR[name]}
    path, _ = light_model(name)
    g = edgeinfer.load(path)
    inp = g.required_inputs()[0]
    return path, {inp.name: light_input(inp.shape)}, None


# transposes the layout pass leaves (NHWC signature): the channel shuffles of ShuffleNet need one
# each; PP-OCRv4 rec's two attention blocks need one for q/k/v and one for the heads' merge
MAX_TRANSPOSES = {"shufflenet": 16, "ppocr_rec": 4}


@pytest.mark.parametrize("name", LIGHT_MODELS + list(PPOCR))
def test_real_model_matches_onnxruntime(name, tmp_path):
    if name in HEAVY or name == "densenet121":
        pytest.importorskip("onnx")  # still run: each is exported and run once only
    path, feeds, shapes = real_model(name)
    report = export_tflite(edgeinfer.load(path), tmp_path / "m.tflite", input_shapes=shapes)
    got = lite_run(tmp_path / "m.tflite", report, feeds)
    want = ort_run(str(path), feeds)
    for (oname, y), ref in zip(got.items(), want):
        assert rel_err(y, ref) < 1e-3, (name, oname)
    assert report.transposes <= MAX_TRANSPOSES.get(name, 0), report.transpose_reasons
    assert all(r for r in report.transpose_reasons)


# ------------------------------------------------------------------ quantized (QDQ) export
def _qdq(src, dst, shape, per_channel, activation):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            r = np.random.default_rng(1)
            self.it = iter([{"x": r.uniform(-1, 1, shape).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    weight_type=QuantType.QInt8, activation_type=getattr(QuantType, activation))
    return dst


def _output_step(model_path_, output):
    m = onnx.load(str(model_path_))
    consts = {i.name: nh.to_array(i) for i in m.graph.initializer}
    # the output's own DequantizeLinear, or the last one before it (an Identity after it)
    for n in reversed(m.graph.node):
        if n.op_type == "DequantizeLinear":
            return float(consts[n.input[1]])
    raise AssertionError("no DequantizeLinear")


# every variant on the small chain; on PP-OCR cls (slow to calibrate) one uint8 variant is enough
QDQ_CASES = [("chain", pc, act) for pc in (False, True) for act in ("QInt8", "QUInt8")] + [
    ("ppocr_cls", False, "QInt8"), ("ppocr_cls", True, "QInt8"), ("ppocr_cls", True, "QUInt8")]


@pytest.mark.parametrize("model,per_channel,activation", QDQ_CASES,
                         ids=[f"{m}-{'per_channel' if pc else 'per_tensor'}-{a}" for m, pc, a in QDQ_CASES])
def test_qdq_model_within_one_step_of_onnxruntime(model, per_channel, activation, tmp_path):
    if model == "chain":
        src, shape = conv_chain(tmp_path / "chain.onnx"), (1, 3, 16, 16)
    else:
        src, shape = model_path("ppocr_cls"), PPOCR["ppocr_cls"]
    dst = _qdq(src, tmp_path / "qdq.onnx", shape, per_channel, activation)
    report = export_tflite(edgeinfer.load(dst), tmp_path / "q.tflite", input_shapes={"x": shape})
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    got = next(iter(lite_run(tmp_path / "q.tflite", report, {"x": x}).values()))
    want = ort_run(str(dst), {"x": x})[0]
    step = _output_step(dst, None)
    assert np.max(np.abs(got - want)) <= step * 1.01, (np.max(np.abs(got - want)), step)
    assert report.quantized_ops >= (7 if model == "chain" else 60)
    if model == "chain":  # int8 from the first QUANTIZE to the last DEQUANTIZE
        assert report.op_counts["QUANTIZE"] == 1 and report.op_counts["DEQUANTIZE"] == 1
        assert report.transposes == 0


@pytest.mark.parametrize("form", ["erf", "tanh"])
def test_gelu_spelled_out_exports_as_tflite_gelu(form, tmp_path):
    """Transformers exported from PyTorch spell GELU with Erf (or tanh); the export's rewrites
    recognise it and write TFLite's GELU (vit_focus failed on this before)."""
    x = f32(2, 8)
    if form == "erf":
        nodes = [Node("Div", ("x", "sqrt2"), ("d",)), Node("Erf", ("d",), ("e",)), Node("Add", ("e", "one"), ("a",)),
                 Node("Mul", ("x", "a"), ("m",)), Node("Mul", ("m", "half"), ("y",))]
        consts = {"sqrt2": np.array(np.sqrt(2), np.float32), "one": np.array(1, np.float32),
                  "half": np.array(0.5, np.float32)}
    else:
        nodes = [Node("Pow", ("x", "three"), ("p",)), Node("Mul", ("p", "c"), ("pc",)), Node("Add", ("x", "pc"), ("s",)),
                 Node("Mul", ("s", "k"), ("sk",)), Node("Tanh", ("sk",), ("t",)), Node("Add", ("t", "one"), ("a",)),
                 Node("Mul", ("x", "a"), ("m",)), Node("Mul", ("m", "half"), ("y",))]
        consts = {"three": np.array(3, np.float32), "c": np.array(0.044715, np.float32),
                  "k": np.array(np.sqrt(2 / np.pi), np.float32), "one": np.array(1, np.float32),
                  "half": np.array(0.5, np.float32)}
    g = Graph(inputs=[ValueInfo("x", "float32", (2, 8))], outputs=[ValueInfo("y", "float32", (2, 8))],
              nodes=nodes, constants=consts, opset={"": 17})
    report = export_tflite(g, tmp_path / "g.tflite")
    got = lite_run(tmp_path / "g.tflite", report, {"x": x})["y"]
    assert rel_err(got, Session(g).run({"x": x})["y"]) < 1e-5


def test_uint8_signature_of_a_qdq_graph_stays_uint8(tmp_path):
    """int8 TFLite ops read uint8 as int8 with the zero point moved by 128; the model's
    signature keeps the IR's uint8 (a QUANTIZE each side), as microWakeWord's int8 models need."""
    w = np.array([[0.5, -0.25], [0.125, 1.0]], np.float32)
    g = Graph(
        inputs=[ValueInfo("x", "uint8", (3, 2))], outputs=[ValueInfo("y", "uint8", (3, 2))],
        nodes=[Node("DequantizeLinear", ("x", "sx", "zx"), ("xf",)),
               Node("MatMul", ("xf", "w"), ("m",)), Node("Relu", ("m",), ("r",)),
               Node("QuantizeLinear", ("r", "sy", "zy"), ("y",))],
        constants={"sx": np.array(0.05, np.float32), "zx": np.array(100, np.uint8), "w": w,
                   "sy": np.array(0.02, np.float32), "zy": np.array(10, np.uint8)},
        opset={"": 21})
    x = np.array([[0, 255], [100, 130], [200, 50]], np.uint8)
    report = export_tflite(g, tmp_path / "q.tflite")
    it = Interpreter(model_path=str(tmp_path / "q.tflite"))
    assert [d["dtype"] for d in it.get_input_details()] == [np.uint8]
    assert [d["dtype"] for d in it.get_output_details()] == [np.uint8]
    got = lite_run(tmp_path / "q.tflite", report, {"x": x})["y"]
    want = Session(g).run({"x": x})["y"]
    assert got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # one quantization step
    got2 = Session(g, backend="litert").run({"x": x})["y"]
    assert got2.dtype == np.uint8 and np.abs(got2.astype(int) - want.astype(int)).max() <= 1
