"""ONNX exporter: checker-clean round trips that ONNX Runtime runs with the original's outputs,
the opset rule, attribute typing, internal ops, atomic writes and external data."""
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as h  # noqa: E402

import hostile_onnx as H  # noqa: E402
from edgeinfer.converters import onnx_export  # noqa: E402
from edgeinfer.converters.onnx_export import export_onnx  # noqa: E402
from edgeinfer.converters.onnx_import import import_onnx  # noqa: E402
from edgeinfer.errors import ExportError  # noqa: E402
from edgeinfer.graph import Graph, Node, ValueInfo  # noqa: E402

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX symlinks")


def load(model, **kw):
    return import_onnx(model, check_supported=False, **kw)


def light_input(shape):
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def opset_of(model):
    return {o.domain: o.version for o in model.opset_import}[""]


def relu_graph(**kw) -> Graph:
    return Graph(inputs=[ValueInfo("x", "float32", (2, 3))], outputs=[ValueInfo("y", "float32", (2, 3))],
                 nodes=[Node("Relu", ("x",), ("y",))], **kw)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("path", H.light_models(), ids=lambda p: p.stem)
def test_light_models_round_trip(path, tmp_path):
    g = load(path)
    target = tmp_path / "out.onnx"
    proto = export_onnx(g, target)
    onnx.checker.check_model(proto, full_check=True)
    onnx.checker.check_model(str(target), full_check=True)
    assert opset_of(proto) == 21
    feeds = {g.inputs[0].name: light_input(g.inputs[0].shape)}
    want = H.ort_outputs(path, feeds)
    got = H.ort_outputs(target, feeds)
    for w, o in zip(want, got):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    again = load(target)  # and back: same structure
    assert again.op_histogram() == g.op_histogram()
    assert sorted(again.constants) == sorted(g.constants)


def test_overridable_input_round_trip():
    model = H.add_weight_model()
    model.graph.input.append(H.value("w"))
    proto = export_onnx(load(model))
    assert [i.name for i in proto.graph.input] == ["x", "w"]
    assert [t.name for t in proto.graph.initializer] == ["w"]
    x = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(H.ort_outputs(proto, {"x": x})[0], x + H.WEIGHT)
    np.testing.assert_array_equal(H.ort_outputs(proto, {"x": x, "w": x})[0], x + x)


def test_metadata_round_trip():
    model = H.add_weight_model()
    model.doc_string = "docs"
    h.set_model_props(model, {"author": "me"})
    proto = export_onnx(load(model))
    assert proto.doc_string == "docs" and proto.producer_name == "edgeinfer"
    assert {p.key: p.value for p in proto.metadata_props}["author"] == "me"


def test_string_and_int_constants():
    g = Graph(inputs=[], outputs=[ValueInfo("y", "string", (2,)), ValueInfo("z", "int64", (3,))],
              nodes=[Node("Identity", ("s",), ("y",)), Node("Identity", ("i",), ("z",))],
              constants={"s": np.array(["a", "é"], dtype=object), "i": np.array([1, -2, 2**40])})
    got = H.ort_outputs(export_onnx(g), {})
    assert list(got[0]) == ["a", "é"] and got[1].tolist() == [1, -2, 2**40]


# ------------------------------------------------------------------ opset rule
def test_opset_rule():
    assert opset_of(export_onnx(relu_graph())) == 21  # graph records none
    assert opset_of(export_onnx(relu_graph(opset={"": 9}))) == 21  # imported graphs are in latest form
    assert opset_of(export_onnx(relu_graph(opset={"": 23}))) == 23
    assert opset_of(export_onnx(relu_graph(), opset=13)) == 13


def test_explicit_opset_too_old_for_ir_form():
    g = relu_graph()
    g.nodes = [Node("Softmax", ("x",), ("y",), {"axis": -1})]
    assert opset_of(export_onnx(g, opset=13)) == 13
    with pytest.raises(ExportError, match="Softmax need opset 13"):
        export_onnx(g, opset=12)
    g.nodes = [Node("ReduceMean", ("x",), ("y",), {"keepdims": 1})]
    with pytest.raises(ExportError, match="ReduceMean need opset 18"):
        export_onnx(g, opset=17)
    with pytest.raises(ExportError, match="out of range"):
        export_onnx(g, opset=999)


# ---------------------------------------------------------------- attributes
def test_attributes_typed_by_schema():
    g = Graph(inputs=[ValueInfo("x", "float32", (2, 3))], outputs=[ValueInfo("y", "float16", (2, 3))],
              nodes=[Node("LeakyRelu", ("x",), ("t",), {"alpha": 1}),  # int where the schema says FLOAT
                     Node("Cast", ("t",), ("y",), {"to": "float16"})])
    proto = export_onnx(g)
    alpha, to = proto.graph.node[0].attribute[0], proto.graph.node[1].attribute[0]
    assert alpha.type == onnx.AttributeProto.FLOAT and alpha.f == 1.0
    assert to.type == onnx.AttributeProto.INT and to.i == TP.FLOAT16
    x = np.array([[-1, 2, 3], [4, -5, 6]], np.float32)
    np.testing.assert_array_equal(H.ort_outputs(proto, {"x": x})[0], x.astype(np.float16))


def test_custom_domain_attributes_inferred():
    g = relu_graph()
    g.nodes = [Node("Thing", ("x",), ("y",), {"f": 0.5, "i": 2, "s": "a", "fs": [1, 2.5], "is": [1, 2],
                                             "t": np.zeros(2, np.float32), "empty": []}, domain="my.domain")]
    proto = export_onnx(g)
    kinds = {a.name: a.type for a in proto.graph.node[0].attribute}
    A = onnx.AttributeProto
    assert kinds == {"f": A.FLOAT, "i": A.INT, "s": A.STRING, "fs": A.FLOATS, "is": A.INTS, "t": A.TENSOR,
                     "empty": A.INTS}
    assert {o.domain: o.version for o in proto.opset_import}["my.domain"] == 1


def test_bad_attribute_value():
    g = relu_graph()
    g.nodes = [Node("LeakyRelu", ("x",), ("y",), {"alpha": "steep"})]
    with pytest.raises(ExportError, match="alpha"):
        export_onnx(g)


def test_internal_ops_refused():
    g = relu_graph()
    g.nodes = [Node("FusedConv", ("x",), ("t",), domain="edgeinfer", name="fc1"),
               Node("FusedGemm", ("t",), ("y",), domain="edgeinfer", name="fg1")]
    with pytest.raises(ExportError, match="FusedConv node 'fc1'.*FusedGemm node 'fg1'"):
        export_onnx(g)


def test_unknown_rank_input_refused_and_output_inferred():
    g = relu_graph()
    g.outputs = [ValueInfo("y", "float32", None)]
    proto = export_onnx(g)
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [2, 3]
    g.inputs = [ValueInfo("x", "float32", None)]
    with pytest.raises(ExportError, match="'?x'?.*unknown rank|x have an unknown rank"):
        export_onnx(g)


def test_checker_failure_is_export_error(tmp_path):
    g = relu_graph()
    g.nodes = [Node("Relu", ("x",), ("y",), {"nonsense": 1})]
    with pytest.raises(ExportError, match="checker"):
        export_onnx(g, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp left


# ------------------------------------------------------------------ writing
@posix_only
def test_atomic_write_replaces_symlink_not_target(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    dest = tmp_path / "model.onnx"
    os.symlink(victim, dest)
    export_onnx(relu_graph(), dest)
    assert victim.read_text() == "keep me"
    assert not dest.is_symlink() and dest.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "victim.txt"]
    onnx.checker.check_model(str(dest), full_check=True)


def test_write_into_missing_folder(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(relu_graph(), tmp_path / "nope" / "m.onnx")


def _big_graph():
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    b = np.arange(4, dtype=np.float32)  # small: stays inline
    return Graph(inputs=[ValueInfo("x", "float32", (2, 64))], outputs=[ValueInfo("y", "float32", (2, 64))],
                 nodes=[Node("MatMul", ("x", "w"), ("t",)), Node("Relu", ("t",), ("y",))],
                 constants={"w": w, "b": b})


def test_external_data_when_too_big(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 1000)
    g = _big_graph()
    with pytest.raises(ExportError, match="pass a path"):
        export_onnx(g)
    dest = tmp_path / "big.onnx"
    proto = export_onnx(g, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    w = next(t for t in proto.graph.initializer if t.name == "w")
    assert w.data_location == TP.EXTERNAL
    assert {e.key: e.value for e in w.external_data}["location"] == "big.onnx.data"
    assert next(t for t in proto.graph.initializer if t.name == "b").raw_data
    onnx.checker.check_model(str(dest), full_check=True)
    again = load(dest)  # our own validated reader
    np.testing.assert_array_equal(again.constants["w"], g.constants["w"])
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(H.ort_outputs(dest, {"x": x})[0], np.maximum(x @ g.constants["w"], 0), rtol=1e-5)


@posix_only
def test_external_data_replaces_symlinked_data_file(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 1000)
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"keep")
    os.symlink(victim, tmp_path / "big.onnx.data")
    export_onnx(_big_graph(), tmp_path / "big.onnx")
    assert victim.read_bytes() == b"keep"
    assert not (tmp_path / "big.onnx.data").is_symlink()
    load(tmp_path / "big.onnx")


def test_subgraph_constants_and_outer_scope(tmp_path):
    then = Graph(outputs=[ValueInfo("t", "float32", (2,))], nodes=[Node("Add", ("x", "k"), ("t",))],
                 constants={"k": np.array([1.0, 2.0], np.float32)}, name="then")
    other = Graph(outputs=[ValueInfo("e", "float32", (2,))], nodes=[Node("Neg", ("x",), ("e",))], name="else")
    g = Graph(inputs=[ValueInfo("c", "bool", ()), ValueInfo("x", "float32", (2,))],
              outputs=[ValueInfo("y", "float32", (2,))],
              nodes=[Node("If", ("c",), ("y",), {"then_branch": then, "else_branch": other})])
    proto = export_onnx(g, tmp_path / "if.onnx")
    x = np.array([1.0, -1.0], np.float32)
    np.testing.assert_array_equal(H.ort_outputs(proto, {"c": np.array(True), "x": x})[0], x + [1, 2])
    np.testing.assert_array_equal(H.ort_outputs(proto, {"c": np.array(False), "x": x})[0], -x)


def test_an_output_declared_with_the_wrong_rank_is_written_with_the_inferred_one():
    """ddddocr's OCR model declares a rank-2 output that its Reshape makes rank 3: runtimes
    ignore that, the full checker does not, so the export takes ONNX's inferred shape."""
    import onnxruntime as ort

    g = Graph(
        inputs=[ValueInfo("x", "float32", (2, 3))],
        outputs=[ValueInfo("y", "float32", (6,))],  # wrong: y is (2, 3, 1)
        nodes=[Node("Shape", ["x"], ["s"]), Node("Concat", ["s", "one"], ["s3"], {"axis": 0}),
               Node("Reshape", ["x", "s3"], ["y"])],
        constants={"one": np.array([1], np.int64)},
        opset={"": 17},
    )
    m = export_onnx(g)
    dims = [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    assert len(dims) == 3
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.shape == (2, 3, 1)
