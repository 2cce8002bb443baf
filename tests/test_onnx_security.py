"""Hostile ONNX inputs (HOSTILE_INPUTS.md, ONNX items 1-18, 22-23): each raises the right
EdgeInferError subclass, names the tensor/field, reads nothing outside the model folder and
never hangs."""
import os
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("onnx")

import hostile_onnx as H  # noqa: E402
from edgeinfer.converters.onnx_import import import_onnx  # noqa: E402
from edgeinfer.errors import EdgeInferError, GraphError, ModelFormatError, UnsafePathError, UnsupportedOpError  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="symlinks/FIFOs/hard links need POSIX")


def load(path_or_model, **kw):
    return import_onnx(path_or_model, check_supported=False, **kw)


def raises(cls, fn, *words):
    """Call fn, expect exactly an EdgeInferError of class cls whose message has every word."""
    with pytest.raises(EdgeInferError) as info:
        fn()
    assert isinstance(info.value, cls), f"{type(info.value).__name__}: {info.value}"
    for w in words:
        assert w in str(info.value), f"{w!r} not in: {info.value}"
    return info.value


# ------------------------------------------------------------- a valid baseline
def test_valid_external_data_is_read(tmp_path):
    H.write_weights(tmp_path / "weights.bin", np.concatenate([np.zeros(3, np.float32), H.WEIGHT.ravel()]))
    path = H.external_model(tmp_path, "weights.bin", offset=12, length=16)
    g = load(path)
    np.testing.assert_array_equal(g.constants["w"], H.WEIGHT)
    sub = tmp_path / "sub"
    H.write_weights(sub / "w.bin")
    np.testing.assert_array_equal(load(H.external_model(tmp_path, "sub/w.bin")).constants["w"], H.WEIGHT)


def test_checksum_verified(tmp_path):
    import hashlib

    H.write_weights(tmp_path / "w.bin")
    good = hashlib.sha1(H.WEIGHT.tobytes()).hexdigest()
    load(H.external_model(tmp_path, "w.bin", extra={"checksum": good}))
    raises(ModelFormatError, lambda: load(H.external_model(tmp_path, "w.bin", extra={"checksum": "0" * 40})),
           "checksum", "'w'")


def test_external_data_without_folder_is_refused(tmp_path):
    model = H.add_weight_model(H.external_tensor("w.bin"))
    raises(ModelFormatError, lambda: load(model), "'w'", "base_dir")
    raises(ModelFormatError, lambda: load(model.SerializeToString()), "'w'", "base_dir")
    H.write_weights(tmp_path / "w.bin")
    np.testing.assert_array_equal(load(model, base_dir=tmp_path).constants["w"], H.WEIGHT)


# --------------------------------------------------------------- paths
@pytest.mark.parametrize("location", ["/etc/passwd", "\\\\server\\share\\w.bin", "C:\\w.bin", "/dev/zero"])
def test_absolute_location(tmp_path, location):
    raises(UnsafePathError, lambda: load(H.external_model(tmp_path, location)), "'w'", "absolute", location)


@pytest.mark.parametrize("location", ["../x", "../../etc/passwd", "sub/../../x", "sub/..", "a\\..\\..\\x"])
def test_parent_traversal(tmp_path, location):
    (tmp_path / "sub").mkdir()
    raises(UnsafePathError, lambda: load(H.external_model(tmp_path, location)), "'w'", "..")


def test_nul_and_empty_location(tmp_path):
    raises(UnsafePathError, lambda: load(H.external_model(tmp_path, "w\x00.bin")), "'w'", "NUL")
    raises(UnsafePathError, lambda: load(H.external_model(tmp_path, "")), "'w'", "empty")


@posix_only
def test_symlinked_file(tmp_path):
    raises(UnsafePathError, lambda: load(H.symlinked_file_model(tmp_path)), "'w'", "link.bin", "symlink")


@posix_only
def test_symlinked_parent_dir(tmp_path):
    raises(UnsafePathError, lambda: load(H.symlinked_dir_model(tmp_path)), "'w'", "symdir", "symlink")


@posix_only
def test_hardlink(tmp_path):
    raises(UnsafePathError, lambda: load(H.hardlinked_model(tmp_path)), "'w'", "w.bin", "hard link")


@posix_only
def test_device_behind_symlink(tmp_path):
    raises(UnsafePathError, lambda: load(H.device_symlink_model(tmp_path)), "'w'", "zero")


@posix_only
def test_directory_location(tmp_path):
    (tmp_path / "adir").mkdir()
    raises(UnsafePathError, lambda: load(H.external_model(tmp_path, "adir")), "'w'", "not a regular file")


@posix_only
def test_fifo_does_not_hang(tmp_path):
    path = H.fifo_model(tmp_path)
    result = {}

    def target():
        try:
            load(path)
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "importing a model whose external data is a FIFO hung"
    err = result.get("error")
    assert isinstance(err, UnsafePathError), repr(err)
    assert "'w'" in str(err) and "not a regular file" in str(err)


def test_missing_file(tmp_path):
    raises(ModelFormatError, lambda: load(H.external_model(tmp_path, "nope.bin")), "'w'", "nope.bin", "does not exist")


# --------------------------------------------------------- offset / length / keys
@pytest.mark.parametrize(
    "kw, words",
    [
        ({"offset": -1}, ["offset", "-1"]),
        ({"length": -16}, ["length", "-16"]),
        ({"offset": "abc"}, ["offset", "abc"]),
        ({"length": "1e3"}, ["length", "1e3"]),
        ({"offset": "0x10"}, ["offset", "0x10"]),
        ({"length": 10**15}, ["length", str(10**15)]),
        ({"offset": 10**12}, ["offset=" + str(10**12), "past the end"]),
        ({"offset": 4}, ["past the end"]),
        ({"length": 8}, ["length 8", "16 bytes"]),
    ],
)
def test_bad_offset_or_length(tmp_path, kw, words):
    H.write_weights(tmp_path / "w.bin")
    raises(ModelFormatError, lambda: load(H.external_model(tmp_path, "w.bin", **kw)), "'w'", *words)


@pytest.mark.parametrize("key", ["__class__", "evil", "location2"])
def test_unknown_external_key(tmp_path, key):
    H.write_weights(tmp_path / "w.bin")
    raises(ModelFormatError, lambda: load(H.external_model(tmp_path, "w.bin", extra={key: "1"})), "'w'", key)


def test_external_data_too_short_for_shape(tmp_path):
    H.write_weights(tmp_path / "w.bin", np.zeros(3, np.float32))
    raises(ModelFormatError, lambda: load(H.external_model(tmp_path, "w.bin")), "'w'", "past the end")


# ----------------------------------------------------- every TensorProto is checked
@pytest.mark.parametrize("builder", [H.sparse_external_model, H.constant_external_model, H.subgraph_external_model])
@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd"])
def test_same_validator_everywhere(tmp_path, builder, location):
    folder = tmp_path / "model"
    folder.mkdir()
    path = H.save(builder(location), folder / "model.onnx")
    raises(UnsafePathError, lambda: load(path), location)


# ------------------------------------------------------------- tensor contents
def test_raw_data_size_mismatch():
    raises(ModelFormatError, lambda: load(H.raw_size_mismatch_model()), "'w'", "raw_data", "3 bytes", "16")


def test_typed_field_count_mismatch():
    from onnx import TensorProto

    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 2])
    t.float_data.extend([1.0, 2.0, 3.0])
    raises(ModelFormatError, lambda: load(H.add_weight_model(t)), "'w'", "float_data", "3 values", "4")


def test_int8_out_of_range_in_int32_data():
    from onnx import TensorProto

    t = TensorProto(name="w", data_type=TensorProto.INT8, dims=[2])
    t.int32_data.extend([1, 300])
    raises(ModelFormatError, lambda: load(H.add_weight_model(t)), "'w'", "int8")


def test_negative_and_huge_dims():
    from onnx import TensorProto

    neg = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[-1, 2])
    raises(ModelFormatError, lambda: load(H.add_weight_model(neg)), "'w'", "negative")
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**20, 2**20, 2**20])
    raises(ModelFormatError, lambda: load(H.add_weight_model(huge)), "'w'", "limit")


@pytest.mark.parametrize("code", [999, 0, -3])
def test_invalid_elem_type(code):
    raises(ModelFormatError, lambda: load(H.invalid_elem_type_model(code)), "'w'", "element type")


def test_invalid_elem_type_in_graph_input():
    raises(ModelFormatError, lambda: load(H.invalid_input_elem_type_model(12345)), "'x'", "12345")


def test_not_yet_supported_elem_type_is_unsupported_not_malformed():
    from edgeinfer.errors import UnsupportedOpError

    raises(UnsupportedOpError, lambda: load(H.invalid_elem_type_model(27)), "'w'", "FLOAT6E2M3")


# ------------------------------------------------------------------- files
def test_truncated_file(tmp_path):
    data = H.add_weight_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    raises(ModelFormatError, lambda: load(path), "cut.onnx")


@pytest.mark.parametrize("payload", [b"hello, I am not a model", b"\xff" * 64, b"", os.urandom(256)])
def test_garbage_file(tmp_path, payload):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(payload)
    raises(ModelFormatError, lambda: load(path), "garbage.onnx")


def test_missing_and_non_regular_model_path(tmp_path):
    raises(ModelFormatError, lambda: load(tmp_path / "absent.onnx"), "absent.onnx", "does not exist")
    raises(ModelFormatError, lambda: load(tmp_path), "not a regular file")


@posix_only
def test_model_path_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "m.onnx")
    raises(ModelFormatError, lambda: load(tmp_path / "m.onnx"), "not a regular file")


# ------------------------------------------------------------------- graphs
def test_subgraph_nesting_depth_100_in_memory():
    raises(ModelFormatError, lambda: load(H.nested_if_model(100)), "nested", "32")


def test_subgraph_nesting_depth_100_serialized():
    # protobuf itself refuses the nesting, or the depth check does: a ModelFormatError either way
    raises(ModelFormatError, lambda: load(H.nested_if_model(100).SerializeToString()))


def test_subgraph_nesting_within_limit_imports():
    g = load(H.nested_if_model(5))
    assert sum(1 for _ in g.walk_graphs()) == 1 + 2 * 5


def test_undefined_input():
    raises(GraphError, lambda: load(H.undefined_input_model()), "reads_ghost", "ghost")


def test_cycle():
    raises(GraphError, lambda: load(H.cyclic_model()), "cycle")


def test_function_cycle():
    raises(ModelFormatError, lambda: load(H.function_cycle_model()), "cycle", "f", "g")


def test_opset_out_of_range():
    raises(ModelFormatError, lambda: load(H.add_weight_model(opset=999)), "opset 999")
    raises(ModelFormatError, lambda: load(H.add_weight_model(opset=0)), "opset 0")


def test_old_opset_imports_only_unchanged_ops():
    # Add changed at opset 7 (broadcasting replaced the broadcast/axis attributes)
    raises(UnsupportedOpError, lambda: load(H.add_weight_model(opset=6)), "opset 6", "Add")
    node = helper.make_node("Not", ["x"], ["y"])
    m = H.make_model([node], [helper.make_tensor_value_info("x", TensorProto.BOOL, [2])],
                     [helper.make_tensor_value_info("y", TensorProto.BOOL, [2])], [], opset=1)
    assert load(m).nodes[0].op_type == "Not"


def test_default_domain_ops_need_a_default_opset():
    m = H.add_weight_model()
    del m.opset_import[:]
    m.opset_import.add(domain="ai.onnx.ml", version=3)
    raises(ModelFormatError, lambda: load(m), "imports no opset", "Add")


def test_no_exception_escapes_byte_flips():
    """Mutation smoke test: any failure on a corrupted model is an EdgeInferError."""
    data = bytearray(H.add_weight_model().SerializeToString())
    rng = np.random.default_rng(0)
    for _ in range(300):
        mutated = bytearray(data)
        for i in rng.integers(0, len(mutated), size=3):
            mutated[i] = int(rng.integers(0, 256))
        try:
            load(bytes(mutated))
        except EdgeInferError:
            pass
