"""ONNX importer: the light models, opset normalisation (checked against ONNX Runtime on the
original model), attributes, constants, functions, subgraphs and the unsupported-op check."""
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import hostile_onnx as H  # noqa: E402
from edgeinfer.converters import onnx_import  # noqa: E402
from edgeinfer.converters.onnx_export import export_onnx  # noqa: E402
from edgeinfer.converters.onnx_import import import_onnx  # noqa: E402
from edgeinfer.converters.onnx_opset import IR_ONNX_OPSET  # noqa: E402
from edgeinfer.errors import ModelFormatError, UnsupportedOpError  # noqa: E402
from edgeinfer.graph import Graph  # noqa: E402

RNG = np.random.default_rng(0)
X4 = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)


def load(model, **kw):
    return import_onnx(model, check_supported=False, **kw)


def v(name, shape=(2, 3, 4, 5), t=TP.FLOAT):
    return H.value(name, shape, t)


def single(op_nodes, opset, inputs=None, outputs=("y",), inits=()):
    return H.make_model(op_nodes, inputs or [v("x")], [v(o, None) for o in outputs], inits, opset=opset)


# ------------------------------------------------------------------- light models
@pytest.mark.parametrize("path", H.light_models(), ids=lambda p: p.stem)
def test_light_models_import(path):
    g = load(path)
    g.validate()
    assert [i.shape for i in g.inputs] == [(1, 3, 224, 224)]  # IR 3: initializers are not inputs
    assert len(g.outputs) == 1 and g.outputs[0].dtype == "float32"
    assert g.opset[""] == IR_ONNX_OPSET and g.metadata["onnx.source_opset"] == "9"
    assert all(not c.flags.writeable for c in g.constants.values())
    ops = g.op_histogram()
    assert "Constant" not in ops
    for n in g.nodes:
        if n.op_type in ("Unsqueeze", "Squeeze"):
            assert len(n.inputs) == 2 and n.inputs[1] in g.constants and "axes" not in n.attrs


def test_light_model_from_bytes_and_proto_agree():
    path = H.light_models()[0]
    a, b = load(path), load(path.read_bytes())
    c = load(onnx.load(str(path)))
    for other in (b, c):
        assert [n.op_type for n in other.nodes] == [n.op_type for n in a.nodes]
        assert sorted(other.constants) == sorted(a.constants)


# -------------------------------------------------------------- normalisation
def _sc():
    return nh.from_array(np.array([1, 1, 3, 2.5], np.float32), "sc")


NORMALIZE = {
    # name: (model, expected (op_type, n_inputs) of the imported nodes)
    "unsqueeze_squeeze_11": (single([h.make_node("Unsqueeze", ["x"], ["u"], axes=[0]),
                                     h.make_node("Squeeze", ["u"], ["y"], axes=[0])], 11),
                             [("Unsqueeze", 2), ("Squeeze", 2)]),
    "squeeze_no_axes_9": (single([h.make_node("Unsqueeze", ["x"], ["u"], axes=[0]),
                                  h.make_node("Squeeze", ["u"], ["y"])], 9), [("Unsqueeze", 2), ("Squeeze", 1)]),
    "reduce_mean_11": (single([h.make_node("ReduceMean", ["x"], ["y"], axes=[1, -1], keepdims=0)], 11),
                       [("ReduceMean", 2)]),
    "reduce_sum_12": (single([h.make_node("ReduceSum", ["x"], ["y"], axes=[2])], 12), [("ReduceSum", 2)]),
    "reduce_max_13": (single([h.make_node("ReduceMax", ["x"], ["y"], axes=[2])], 13), [("ReduceMax", 2)]),
    "reduce_l2_all_9": (single([h.make_node("ReduceL2", ["x"], ["y"])], 9), [("ReduceL2", 1)]),
    "clip_9": (single([h.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.5)], 9), [("Clip", 3)]),
    "clip_9_unknown_dtype": (single([h.make_node("Atan", ["x"], ["a"]), h.make_node("Clip", ["a"], ["y"], min=-0.5)], 9),
                             [("Atan", 1), ("CastLike", 2), ("Clip", 2)]),
    "slice_9": (single([h.make_node("Slice", ["x"], ["y"], starts=[1, 0], ends=[3, -1], axes=[1, 3])], 9), [("Slice", 4)]),
    "slice_9_no_axes": (single([h.make_node("Slice", ["x"], ["y"], starts=[1], ends=[1000])], 9), [("Slice", 3)]),
    "split_11": (single([h.make_node("Split", ["x"], ["a", "b"], axis=3, split=[2, 3])], 11, outputs=("a", "b")),
                 [("Split", 2)]),
    "split_12_equal": (single([h.make_node("Split", ["x"], ["a", "b"], axis=2)], 12, outputs=("a", "b")), [("Split", 1)]),
    "split_13_equal": (single([h.make_node("Split", ["x"], ["a", "b"], axis=2)], 13, outputs=("a", "b")), [("Split", 1)]),
    "pad_9": (single([h.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 1, 0, 1], value=1.5)], 9), [("Pad", 3)]),
    "pad_9_reflect": (single([h.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 1, 1], mode="reflect")], 9),
                      [("Pad", 2)]),
    "upsample_7": (single([h.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 3.0])], 7), [("Resize", 3)]),
    "upsample_7_linear": (single([h.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 3.0], mode="linear")], 7),
                          [("Resize", 3)]),
    "upsample_9": (single([h.make_node("Upsample", ["x", "sc"], ["y"])], 9, inits=[_sc()]), [("Resize", 3)]),
    "upsample_9_linear": (single([h.make_node("Upsample", ["x", "sc"], ["y"], mode="linear")], 9, inits=[_sc()]),
                          [("Resize", 3)]),
    "resize_10": (single([h.make_node("Resize", ["x", "sc"], ["y"])], 10, inits=[_sc()]), [("Resize", 3)]),
    "resize_10_linear": (single([h.make_node("Resize", ["x", "sc"], ["y"], mode="linear")], 10, inits=[_sc()]),
                         [("Resize", 3)]),
    "resize_11_tf_half_pixel_floor": (
        single([h.make_node("Resize", ["x", "roi", "sc"], ["y"], coordinate_transformation_mode="tf_half_pixel_for_nn",
                            nearest_mode="floor")], 11, inits=[_sc(), nh.from_array(np.zeros(0, np.float32), "roi")]),
        [("Resize", 3)]),
    "resize_11_tf_half_pixel_default": (
        single([h.make_node("Resize", ["x", "roi", "sc"], ["y"], coordinate_transformation_mode="tf_half_pixel_for_nn")],
               11, inits=[_sc(), nh.from_array(np.zeros(0, np.float32), "roi")]),
        [("Resize", 3)]),
    "dropout_7_ratio": (single([h.make_node("Dropout", ["x"], ["y", "mask"], ratio=0.3)], 7), [("Dropout", 1)]),
    "dropout_10": (single([h.make_node("Dropout", ["x"], ["y"], ratio=0.3)], 10), [("Dropout", 1)]),
    "batchnorm_7": (single([h.make_node("BatchNormalization", ["x", "s", "b", "m", "var"], ["y"], spatial=1,
                                        momentum=0.8, epsilon=1e-3)], 7,
                           inits=[nh.from_array(RNG.random(3).astype(np.float32) + 0.5, n) for n in ("s", "b", "m", "var")]),
                    [("BatchNormalization", 5)]),
    "topk_9": (H.make_model([h.make_node("TopK", ["x"], ["vals", "idx"], k=2, axis=1)], [v("x")],
                            [v("vals", None), v("idx", None, TP.INT64)], opset=9), [("TopK", 2)]),
    "cast_9": (H.make_model([h.make_node("Cast", ["x"], ["y"], to=TP.INT32)], [v("x")], [v("y", None, TP.INT32)], opset=9),
               [("Cast", 1)]),
    "scatter_9": (H.make_model([h.make_node("Scatter", ["x", "i", "u"], ["y"], axis=0)], [v("x", (3, 3))], [v("y", None)],
                               [nh.from_array(np.array([[1, 0, 2]], np.int64), "i"), nh.from_array(np.ones((1, 3), np.float32), "u")],
                               opset=9), [("ScatterElements", 3)]),
    "gridsample_16": (H.make_model([h.make_node("GridSample", ["x", "grid"], ["y"], mode="bicubic")],
                                   [v("x"), v("grid", (2, 6, 7, 2))], [v("y", None)], opset=16), [("GridSample", 2)]),
    "dft_17_default_axis": (H.make_model([h.make_node("DFT", ["x"], ["y"])], [v("x", (2, 8, 3, 1))], [v("y", None)], opset=17),
                            [("DFT", 3)]),
    "gemm_9": (H.make_model([h.make_node("Gemm", ["x", "b", "c"], ["y"], transB=1)], [v("x", (2, 3))], [v("y", None)],
                            [nh.from_array(RNG.random((4, 3)).astype(np.float32), "b"),
                             nh.from_array(RNG.random(4).astype(np.float32), "c")], opset=9), [("Gemm", 3)]),
    "constant_of_shape_9": (single([h.make_node("ConstantOfShape", ["s"], ["c"], value=nh.from_array(np.array([2.5], np.float32))),
                                    h.make_node("Add", ["x", "c"], ["y"])], 9, inits=[nh.from_array(np.array([5], np.int64), "s")]),
                            [("ConstantOfShape", 1), ("Add", 2)]),
}
for _op in ("Softmax", "LogSoftmax", "Hardmax"):
    for _axis, _expect in ((1, 4), (0, 4), (2, 4), (-1, 1), (3, 1)):
        NORMALIZE[f"{_op}_11_axis{_axis}"] = (single([h.make_node(_op, ["x"], ["y"], axis=_axis)], 11),
                                              [(_op, 1)] if _expect == 1 else
                                              [("Flatten", 1), (_op, 1), ("Shape", 1), ("Reshape", 2)])
    NORMALIZE[f"{_op}_9_unknown_rank"] = (
        H.make_model([h.make_node("Atan", ["x"], ["a"]), h.make_node(_op, ["a"], ["y"])], [v("x", ("N", 3, 4, 5))],
                     [v("y", None)], opset=9),
        [("Atan", 1), ("Flatten", 1), (_op, 1), ("Shape", 1), ("Reshape", 2)])


def _feeds(model):
    feeds = {}
    for i in model.graph.input:
        if i.name in {t.name for t in model.graph.initializer}:
            continue
        shape = [d.dim_value or 2 for d in i.type.tensor_type.shape.dim]
        if i.name == "grid":
            feeds[i.name] = RNG.uniform(-1, 1, shape).astype(np.float32)
        elif i.type.tensor_type.elem_type == TP.BOOL:
            feeds[i.name] = np.array(True)
        else:
            feeds[i.name] = (RNG.standard_normal(shape) * 4).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", sorted(NORMALIZE))
def test_normalization_matches_onnxruntime(name):
    model, expected = NORMALIZE[name]
    g = load(model)
    assert [(n.op_type, len(n.inputs)) for n in g.nodes] == expected
    for n in g.nodes:  # attributes that became inputs are gone
        assert not {"axes", "split", "starts", "ends", "pads", "k", "ratio", "spatial", "momentum"} & set(n.attrs), n
    exported = export_onnx(g)
    assert exported.opset_import[0].version >= IR_ONNX_OPSET
    feeds = _feeds(model)
    for want, got in zip(H.ort_outputs(model, feeds), H.ort_outputs(exported, feeds)):
        assert want.shape == got.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_normalized_attribute_values():
    g = load(NORMALIZE["cast_9"][0])
    assert g.nodes[0].attrs == {"to": "int32"}
    g = load(NORMALIZE["upsample_7"][0])
    assert g.nodes[0].attrs == {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    np.testing.assert_array_equal(g.constants[g.nodes[0].inputs[2]], [1, 1, 2, 3])
    g = load(NORMALIZE["split_12_equal"][0])
    assert g.nodes[0].attrs["num_outputs"] == 2
    g = load(NORMALIZE["gridsample_16"][0])
    assert g.nodes[0].attrs["mode"] == "cubic"
    g = load(NORMALIZE["batchnorm_7"][0])
    assert g.nodes[0].attrs == {"epsilon": pytest.approx(1e-3)}
    g = load(NORMALIZE["slice_9"][0])
    assert [g.constants[i].dtype for i in g.nodes[0].inputs[1:]] == [np.int64] * 3
    g = load(NORMALIZE["clip_9"][0])
    assert g.constants[g.nodes[0].inputs[1]].dtype == np.float32


def test_batchnorm_training_outputs():
    inits = [nh.from_array(np.ones(3, np.float32), n) for n in ("s", "b", "m", "var")]
    unused = single([h.make_node("BatchNormalization", ["x", "s", "b", "m", "var"], ["y", "rm", "rv"])], 9, inits=inits)
    assert load(unused).nodes[0].outputs == ("y",)
    used = single([h.make_node("BatchNormalization", ["x", "s", "b", "m", "var"], ["t", "rm", "rv"]),
                   h.make_node("Add", ["t", "rm"], ["y"])], 9, inits=inits)
    with pytest.raises(UnsupportedOpError, match="rm"):
        load(used)


def test_tf_half_pixel_linear_is_unsupported():
    model = single([h.make_node("Resize", ["x", "roi", "sc"], ["y"], mode="linear",
                                coordinate_transformation_mode="tf_half_pixel_for_nn")], 11,
                   inits=[_sc(), nh.from_array(np.zeros(0, np.float32), "roi")])
    with pytest.raises(UnsupportedOpError, match="tf_half_pixel_for_nn"):
        load(model)


def test_image_scaler_becomes_mul_add():
    model = single([h.make_node("ImageScaler", ["x"], ["y"], scale=2.0, bias=[1.0, 2.0, 3.0])], 8)
    g = load(model)
    assert [n.op_type for n in g.nodes] == ["Mul", "Add"]
    bias = g.constants[g.nodes[1].inputs[1]]
    assert bias.shape == (3, 1, 1) and bias.dtype == np.float32


# ---------------------------------------------------------------- constants
@pytest.mark.parametrize(
    "attr, want",
    [
        ({"value": nh.from_array(np.array([[1, 2]], np.int32))}, np.array([[1, 2]], np.int32)),
        ({"value_float": 1.5}, np.array(1.5, np.float32)),
        ({"value_floats": [1.0, 2.0]}, np.array([1, 2], np.float32)),
        ({"value_int": 7}, np.array(7, np.int64)),
        ({"value_ints": [1, 2, 3]}, np.array([1, 2, 3], np.int64)),
        ({"value_string": "hi"}, np.array("hi", dtype=object)),
        ({"value_strings": ["a", "b"]}, np.array(["a", "b"], dtype=object)),
    ],
)
def test_constant_nodes_become_constants(attr, want):
    node = h.make_node("Constant", [], ["c"], **attr)
    model = H.make_model([node, h.make_node("Identity", ["c"], ["y"])], [], [H.value("y", None)], opset=13)
    g = load(model)
    assert [n.op_type for n in g.nodes] == ["Identity"]
    got = g.constants["c"]
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tolist() == want.tolist()


def test_sparse_constant_and_initializer_densified():
    values = nh.from_array(np.array([5.0, 6.0], np.float32), "sp")
    sparse = h.make_sparse_tensor(values, nh.from_array(np.array([[0, 1], [1, 0]], np.int64), "i"), [2, 2])
    node = h.make_node("Constant", [], ["c"], sparse_value=sparse)
    model = H.make_model([node, h.make_node("Add", ["x", "c"], ["y"])], [H.value("x")], [H.value("y")], opset=13)
    np.testing.assert_array_equal(load(model).constants["c"], [[0, 5], [6, 0]])
    linear = h.make_sparse_tensor(nh.from_array(np.array([1.0, 2.0], np.float32), "sp"),
                                  nh.from_array(np.array([0, 3], np.int64), "i"), [2, 2])
    model = H.make_model([h.make_node("Add", ["x", "sp"], ["y"])], [H.value("x")], [H.value("y")], sparse_initializers=[linear])
    np.testing.assert_array_equal(load(model).constants["sp"], [[1, 0], [0, 2]])


@pytest.mark.parametrize(
    "arr",
    [
        np.array([1.5, -2.0], np.float16), np.array([True, False]), np.array([2**63 + 5], np.uint64),
        np.array([1 + 2j], np.complex64), np.array([-7, 8], np.int8), np.array([70000], np.uint32),
        np.array([1.25], np.float64), np.array([-(2**40)], np.int64),
    ],
    ids=lambda a: str(a.dtype),
)
def test_typed_fields_decode(arr):
    t = nh.from_array(arr, "w")
    raw = load(H.make_model([h.make_node("Identity", ["w"], ["y"])], [], [H.value("y", None, t.data_type)], [t]))
    typed = h.make_tensor("w", t.data_type, arr.shape, arr.tolist())
    assert not typed.raw_data
    got = load(H.make_model([h.make_node("Identity", ["w"], ["y"])], [], [H.value("y", None, t.data_type)], [typed]))
    for g in (raw, got):
        assert g.constants["w"].dtype == arr.dtype
        np.testing.assert_array_equal(g.constants["w"], arr)


LOW_PRECISION = [
    (TP.BFLOAT16, "bfloat16", [1.0, -2.5, 3.140625, float("inf"), 0.0]),
    (TP.FLOAT8E4M3FN, "float8e4m3fn", [1.0, -2.5, 448.0, 0.015625, 0.0]),
    (TP.FLOAT8E5M2, "float8e5m2", [1.0, -2.5, 57344.0, float("-inf"), 0.0]),
    (TP.FLOAT8E4M3FNUZ, "float8e4m3fnuz", [1.0, -2.5, 240.0, 0.5, 0.0]),
    (TP.FLOAT8E5M2FNUZ, "float8e5m2fnuz", [1.0, -2.5, 0.25, 8.0, 0.0]),
    (TP.FLOAT8E8M0, "float8e8m0", [1.0, 2.0, 0.5, 1024.0, 0.25]),
    (TP.INT4, "int4", [-8, 7, 0, -1, 3]),  # odd count: the last byte is half used
    (TP.UINT4, "uint4", [15, 0, 1, 8, 9]),
    (TP.INT2, "int2", [-2, 1, 0, -1, 1]),
    (TP.UINT2, "uint2", [3, 0, 1, 2, 3]),
    (TP.FLOAT4E2M1, "float4e2m1", [6.0, -0.5, 1.5, 0.0, -4.0]),
]


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize("code,dtype,values", LOW_PRECISION, ids=[d for _, d, _ in LOW_PRECISION])
def test_low_precision_constants_round_trip(code, dtype, values, raw, tmp_path):
    ref = nh.to_array(h.make_tensor("w", code, [5], values))  # onnx's own decoding (ml_dtypes)
    t = nh.from_array(ref, "w") if raw else h.make_tensor("w", code, [5], values)
    assert t.HasField("raw_data") == raw
    node = h.make_node("Identity", ["w"], ["y"])
    import onnx

    model = H.make_model([node], [], [h.make_tensor_value_info("y", code, [5])], [t], opset=onnx.defs.onnx_opset_version())
    g = load(model)
    got = g.constants["w"]
    from edgeinfer import dtypes

    assert dtypes.from_numpy(got.dtype) == dtype
    np.testing.assert_array_equal(got.astype(np.float32), ref.astype(np.float32))
    # the exporter packs sub-byte types back; onnx decodes what we wrote
    export_onnx(g, tmp_path / "lp.onnx")
    back = nh.to_array(onnx.load(str(tmp_path / "lp.onnx")).graph.initializer[0])
    np.testing.assert_array_equal(back.astype(np.float32), ref.astype(np.float32))
    assert back.dtype == ref.dtype


# --------------------------------------------------------- inputs, types, metadata
def test_overridable_initializers_stay_inputs():
    model = H.add_weight_model()
    model.graph.input.append(H.value("w"))
    g = load(model)
    assert g.input_names == ["x", "w"]
    assert [vi.name for vi in g.required_inputs()] == ["x"]
    assert [vi.name for vi in g.overridable_inputs()] == ["w"]
    np.testing.assert_array_equal(g.constants["w"], H.WEIGHT)
    model.ir_version = 3  # before IR 4, listing an initializer as input did not make it overridable
    assert load(model).input_names == ["x"]


def test_value_info_shapes():
    x = h.make_tensor_value_info("x", TP.FLOAT, ["batch", 3, None, 5])
    x.type.tensor_type.shape.dim[3].dim_value = -4  # a negative dim is unknown
    mid = h.make_tensor_value_info("r", TP.FLOAT, ["batch", 3, 4, 5])
    model = H.make_model([h.make_node("Relu", ["x"], ["r"]), h.make_node("Relu", ["r"], ["y"])], [x], [H.value("y", None)])
    model.graph.value_info.append(mid)
    g = load(model)
    assert g.inputs[0].shape == ("batch", 3, None, None)
    assert g.value_info["r"].shape == ("batch", 3, 4, 5)
    assert g.outputs[0].shape is None


def test_sequence_and_optional_inputs(tmp_path):
    from edgeinfer import Session
    from edgeinfer.errors import InputError

    seq = h.make_tensor_sequence_value_info("s", TP.FLOAT, None)
    opt = h.make_value_info("o", h.make_optional_type_proto(h.make_tensor_type_proto(TP.FLOAT, [2])))
    nodes = [h.make_node("SequenceLength", ["s"], ["n"]), h.make_node("OptionalHasElement", ["o"], ["has"])]
    model = H.make_model(nodes, [seq, opt], [H.value("n", (), TP.INT64), H.value("has", (), TP.BOOL)])
    g = load(model)
    assert [v.dtype for v in g.inputs] == ["sequence(float32)", "optional(float32)"]
    sess = Session(g)
    out = sess.run({"s": [np.zeros(2, np.float32)] * 3, "o": None})
    assert int(out["n"]) == 3 and not bool(out["has"])
    assert bool(sess.run({"s": [], "o": np.ones(2, np.float32)})["has"])
    with pytest.raises(InputError, match="'s'.*list"):
        sess.run({"s": np.zeros(2, np.float32), "o": None})
    with pytest.raises(InputError, match="item 1.*float32"):
        sess.run({"s": [np.zeros(2, np.float32), np.zeros(2, np.int64)], "o": None})
    # the types survive an ONNX round trip
    export_onnx(g, tmp_path / "seq.onnx")
    assert [v.dtype for v in load(str(tmp_path / "seq.onnx")).inputs] == ["sequence(float32)", "optional(float32)"]


def test_map_input_is_unsupported():
    m = h.make_value_info("m", h.make_map_type_proto(TP.INT64, h.make_tensor_type_proto(TP.FLOAT, None)))
    model = H.make_model([h.make_node("Identity", ["m"], ["y"])], [m], [H.value("y")])
    with pytest.raises(UnsupportedOpError, match="'m'.*map"):
        load(model)


def test_attributes_become_plain_python():
    node = h.make_node("Custom", ["x"], ["y"], domain="my.domain", f=0.5, i=3, s="text", raw=b"\xff\xfe",
                       fs=[1.0, 2.0], is_=[1, 2], ss=["a", "b"], t=nh.from_array(np.arange(3, dtype=np.int64)))
    model = H.make_model([node], [H.value("x")], [H.value("y")], extra_opsets=[("my.domain", 1)])
    a = load(model).nodes[0].attrs
    assert a["f"] == 0.5 and a["i"] == 3 and a["s"] == "text" and a["raw"] == b"\xff\xfe"
    assert a["fs"] == [1.0, 2.0] and a["is_"] == [1, 2] and a["ss"] == ["a", "b"]
    np.testing.assert_array_equal(a["t"], [0, 1, 2])


def test_metadata():
    model = H.add_weight_model()
    model.producer_name, model.producer_version, model.doc_string = "maker", "1.2", "docs"
    h.set_model_props(model, {"author": "me"})
    meta = load(model).metadata
    assert meta["author"] == "me" and meta["onnx.producer_name"] == "maker"
    assert meta["onnx.producer_version"] == "1.2" and meta["onnx.doc_string"] == "docs"
    assert meta["onnx.source_opset"] == "18"


def test_unsorted_nodes_are_sorted():
    nodes = [h.make_node("Relu", ["a"], ["y"], name="second"), h.make_node("Neg", ["x"], ["a"], name="first")]
    g = load(H.make_model(nodes, [H.value("x")], [H.value("y")]))
    assert [n.name for n in g.nodes] == ["first", "second"]


# ---------------------------------------------------------- subgraphs, functions
def _if_model():
    then = h.make_graph([h.make_node("Add", ["x", "w"], ["t"])], "then", [], [H.value("t")])
    other = h.make_graph([h.make_node("Constant", [], ["k"], value_float=2.0), h.make_node("Mul", ["x", "k"], ["e"])],
                         "else", [], [H.value("e")])
    node = h.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)
    return H.make_model([node], [H.value("cond", (), TP.BOOL), H.value("x")], [H.value("y")],
                        [nh.from_array(H.WEIGHT, "w")])


def test_if_subgraphs_read_outer_scope():
    model = _if_model()
    g = load(model)
    then, other = g.nodes[0].attrs["then_branch"], g.nodes[0].attrs["else_branch"]
    assert isinstance(then, Graph) and then.nodes[0].inputs == ("x", "w")
    assert "k" in other.constants and [n.op_type for n in other.nodes] == ["Mul"]
    exported = export_onnx(g)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": H.WEIGHT * 3}
        np.testing.assert_allclose(H.ort_outputs(exported, feeds)[0], H.ort_outputs(model, feeds)[0])


def test_old_opset_inside_subgraph_is_normalized():
    body = h.make_graph([h.make_node("Unsqueeze", ["x"], ["u"], axes=[0])], "then", [], [H.value("u", None)])
    other = h.make_graph([h.make_node("Unsqueeze", ["x"], ["u2"], axes=[1])], "else", [], [H.value("u2", None)])
    model = H.make_model([h.make_node("If", ["c"], ["y"], then_branch=body, else_branch=other)],
                         [H.value("c", (), TP.BOOL), H.value("x")], [H.value("y", None)], opset=11)
    sub = load(model).nodes[0].attrs["then_branch"]
    assert len(sub.nodes[0].inputs) == 2 and sub.nodes[0].inputs[1] in sub.constants


def test_local_function_is_inlined_with_attribute_refs():
    body = [h.make_node("Mul", ["a", "b"], ["t"]), h.make_node("LeakyRelu", ["t"], ["out"])]
    ref = onnx.AttributeProto(name="alpha", ref_attr_name="slope", type=onnx.AttributeProto.FLOAT)
    body[1].attribute.append(ref)
    fn = h.make_function("local", "ScaledLeaky", ["a", "b"], ["out"], body, [h.make_opsetid("", 18)],
                         attributes=["slope"])
    calls = [h.make_node("ScaledLeaky", ["x", "w"], ["m"], domain="local", slope=0.2, name="call1"),
             h.make_node("ScaledLeaky", ["m", "w"], ["y"], domain="local", name="call2")]
    model = H.make_model(calls, [H.value("x")], [H.value("y")], [nh.from_array(H.WEIGHT - 2, "w")],
                         functions=[fn], extra_opsets=[("local", 1)])
    g = load(model)
    assert [n.op_type for n in g.nodes] == ["Mul", "LeakyRelu", "Mul", "LeakyRelu"]
    assert g.nodes[1].attrs == {"alpha": pytest.approx(0.2)} and g.nodes[3].attrs == {}
    assert len({o for n in g.nodes for o in n.outputs}) == 4
    feeds = {"x": RNG.standard_normal((2, 2)).astype(np.float32)}
    np.testing.assert_allclose(H.ort_outputs(export_onnx(g), feeds)[0], H.ort_outputs(model, feeds)[0], rtol=1e-6)


# ------------------------------------------------------------ unsupported ops
def _fake_registry(monkeypatch, supported):
    monkeypatch.setattr(onnx_import, "_kernel_exists", lambda op, domain: (domain, op) in supported)


def test_unsupported_ops_listed_all_at_once(monkeypatch):
    _fake_registry(monkeypatch, {("", "Relu")})
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(H.custom_op_model())
    msg = str(info.value)
    assert "com.example::Frobnicate (2 nodes)" in msg and "NoSuchOnnxOp (1 node)" in msg
    assert info.value.ops == ["NoSuchOnnxOp", "com.example::Frobnicate"]


def test_unsupported_check_comes_before_conversion(monkeypatch):
    _fake_registry(monkeypatch, set())
    model = H.raw_size_mismatch_model()  # malformed too, but the op list is reported first
    with pytest.raises(UnsupportedOpError, match="Add"):
        import_onnx(model)


def test_unsupported_check_sees_subgraphs_functions_and_replacements(monkeypatch):
    _fake_registry(monkeypatch, {("", "If"), ("", "Mul"), ("", "Resize"), ("", "LeakyRelu")})
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(_if_model())
    assert info.value.ops == ["Add"]  # Constant is the importer's; If and Mul have kernels
    import_onnx(NORMALIZE["upsample_7"][0])  # Upsample is fine when Resize is
    model = H.make_model([h.make_node("Scan", ["x"], ["y"], body=h.make_graph([], "b", [], []), num_scan_inputs=1)],
                         [H.value("x")], [H.value("y")], opset=8)
    _fake_registry(monkeypatch, {("", "Scan")})
    with pytest.raises(UnsupportedOpError, match="Scan before opset 9"):
        import_onnx(model)


def test_unsupported_with_the_real_registry():
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(H.custom_op_model())
    assert {"com.example::Frobnicate", "NoSuchOnnxOp"} <= set(info.value.ops)


def test_missing_onnx_raises_missing_dependency():
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "from edgeinfer.errors import MissingDependencyError\n"
        "try:\n    import edgeinfer.converters.onnx_import\nexcept MissingDependencyError as e:\n    print('OK', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("OK") and "edgeinfer[onnx]" in out.stdout, out.stdout + out.stderr


def test_bad_argument_type():
    with pytest.raises(ModelFormatError, match="cannot import a int"):
        import_onnx(42)


def test_loop_body_with_old_opset_and_outer_scope():
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("Add", ["acc", "x"], ["acc_out"]),
         h.make_node("Unsqueeze", ["acc_out"], ["scan"], axes=[0])], "body",
        [H.value("i", (), TP.INT64), H.value("cond_in", (), TP.BOOL), H.value("acc", (2,))],
        [H.value("cond_out", (), TP.BOOL), H.value("acc_out", (2,)), H.value("scan", (1, 2))])
    model = H.make_model([h.make_node("Loop", ["n", "c", "a0"], ["af", "sc"], body=body)],
                         [H.value("n", (), TP.INT64), H.value("c", (), TP.BOOL), H.value("a0", (2,)), H.value("x", (2,))],
                         [H.value("af", (2,)), H.value("sc", None)], opset=11)
    g = load(model)
    sub = g.nodes[0].attrs["body"]
    assert sub.nodes[2].inputs[1] in sub.constants  # Unsqueeze-11 axes became an input
    feeds = {"n": np.array(3), "c": np.array(True), "a0": np.zeros(2, np.float32), "x": np.ones(2, np.float32)}
    for want, got in zip(H.ort_outputs(model, feeds), H.ort_outputs(export_onnx(g), feeds)):
        np.testing.assert_array_equal(got, want)
