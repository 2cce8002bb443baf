"""Builders of small ONNX models, benign and hostile, for the importer tests and anyone else's.

Each hostile builder reproduces one case of /work/shared/HOSTILE_INPUTS.md (ONNX section);
the test that uses it says which error class and message it expects. Builders only build and
write files under the folder they are given; nothing here reads outside it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHT_NAME = "w"
WEIGHT = np.arange(4, dtype=np.float32).reshape(2, 2)


def value(name: str, shape=(2, 2), elem_type: int = TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem_type, list(shape) if shape is not None else None)


def make_model(nodes, inputs, outputs, initializers=(), *, opset: int = 18, ir_version: int | None = None,
               sparse_initializers=(), functions=(), extra_opsets=()):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers),
                              sparse_initializer=list(sparse_initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=imports, functions=list(functions))
    model.ir_version = ir_version or max(helper.find_min_ir_version_for(imports[:1], ignore_unknown=True), 4)
    return model


def add_weight_model(weight: TensorProto | None = None, *, opset: int = 18):
    """y = x + w, with w an initializer (by default WEIGHT, inline)."""
    w = weight if weight is not None else numpy_helper.from_array(WEIGHT, WEIGHT_NAME)
    node = helper.make_node("Add", ["x", WEIGHT_NAME], ["y"], name="add")
    return make_model([node], [value("x")], [value("y")], [w], opset=opset)


def external_tensor(location: str, *, name: str = WEIGHT_NAME, dims=(2, 2), offset=None, length=None,
                    extra: dict | None = None, elem_type: int = TensorProto.FLOAT) -> TensorProto:
    """A TensorProto whose data lives in ``location`` (nothing is written)."""
    t = TensorProto()
    t.name = name
    t.data_type = elem_type
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location}
    if offset is not None:
        entries["offset"] = str(offset)
    if length is not None:
        entries["length"] = str(length)
    entries.update(extra or {})
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def save(model, path: Path) -> Path:
    """Serialize without onnx.save (which may touch external data)."""
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def write_weights(path: Path, data: np.ndarray = WEIGHT) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes())
    return path


def external_model(folder: Path, location: str, **kw) -> Path:
    """``folder/model.onnx`` whose weight points at ``location`` (the data file is not made)."""
    return save(add_weight_model(external_tensor(location, **kw)), Path(folder) / "model.onnx")


# ------------------------------------------------------------ hostile files
def secret_outside(root: Path) -> Path:
    """A 'secret' file outside the model folder ``root/model`` (16 bytes: a valid 2x2 float)."""
    outside = Path(root) / "outside"
    outside.mkdir(exist_ok=True)
    return write_weights(outside / "secret.bin")


def symlinked_file_model(root: Path) -> Path:
    """model/link.bin -> ../outside/secret.bin (CVE-2026-34447)."""
    folder = Path(root) / "model"
    folder.mkdir()
    os.symlink(secret_outside(root), folder / "link.bin")
    return external_model(folder, "link.bin")


def symlinked_dir_model(root: Path) -> Path:
    """model/symdir -> ../outside, location symdir/secret.bin (CVE-2026-27489)."""
    folder = Path(root) / "model"
    folder.mkdir()
    secret = secret_outside(root)
    os.symlink(secret.parent, folder / "symdir")
    return external_model(folder, "symdir/secret.bin")


def hardlinked_model(root: Path) -> Path:
    """model/w.bin is a hard link to ../outside/secret.bin (CVE-2026-34446)."""
    folder = Path(root) / "model"
    folder.mkdir()
    os.link(secret_outside(root), folder / "w.bin")
    return external_model(folder, "w.bin")


def fifo_model(root: Path) -> Path:
    """model/w.bin is a FIFO nobody writes to: opening or reading it would block forever."""
    folder = Path(root) / "model"
    folder.mkdir()
    os.mkfifo(folder / "w.bin")
    return external_model(folder, "w.bin")


def device_symlink_model(root: Path) -> Path:
    """model/zero -> /dev/zero (a device behind a relative name)."""
    folder = Path(root) / "model"
    folder.mkdir()
    os.symlink("/dev/zero", folder / "zero")
    return external_model(folder, "zero")


def raw_size_mismatch_model():
    """w declares 2x2 float (16 bytes) but raw_data holds 3 bytes."""
    t = numpy_helper.from_array(WEIGHT, WEIGHT_NAME)
    t.raw_data = b"\x00\x01\x02"
    return add_weight_model(t)


def invalid_elem_type_model(code: int = 999):
    """An initializer with an element type code the spec does not define (ORT#4585)."""
    t = numpy_helper.from_array(WEIGHT, WEIGHT_NAME)
    t.data_type = code
    return add_weight_model(t)


def invalid_input_elem_type_model(code: int = 999):
    model = add_weight_model()
    model.graph.input[0].type.tensor_type.elem_type = code
    return model


def nested_if_model(depth: int):
    """If nodes nested ``depth`` levels deep through their then-branches (each else-branch is
    a leaf, so the model stays linear in size); the innermost branch is Identity(x).

    Built in place: copying a message this deep (as onnx.helper does) trips protobuf's own
    recursion limit, which is exactly what an in-memory ModelProto lets an attacker skip."""
    model = make_model([], [value("cond", (), TensorProto.BOOL), value("x")], [value("y")])
    graph, out = model.graph, "y"
    for level in range(depth):
        node = graph.node.add()
        node.op_type, node.name = "If", f"if{level}"
        node.input.append("cond")
        node.output.append(out)
        branches = {}
        for key in ("then_branch", "else_branch"):
            attr = node.attribute.add()
            attr.name, attr.type = key, onnx.AttributeProto.GRAPH
            branches[key] = attr.g
        leaf = branches["else_branch"]
        leaf.name = f"e{level}"
        leaf.node.append(helper.make_node("Identity", ["x"], [f"leaf{level}"]))
        leaf.output.append(value(f"leaf{level}"))
        graph = branches["then_branch"]
        graph.name, out = f"b{level}", f"out{level}"
        graph.output.append(value(out))
    graph.node.append(helper.make_node("Identity", ["x"], [out]))
    return model


def undefined_input_model():
    """A node reads 'ghost', which nothing defines (ORT#24341)."""
    node = helper.make_node("Add", ["x", "ghost"], ["y"], name="reads_ghost")
    return make_model([node], [value("x")], [value("y")])


def cyclic_model():
    a = helper.make_node("Add", ["x", "b"], ["a"], name="first")
    b = helper.make_node("Relu", ["a"], ["b"], name="second")
    out = helper.make_node("Identity", ["b"], ["y"], name="third")
    return make_model([a, b, out], [value("x")], [value("y")])


def function_cycle_model():
    """Local functions f -> g -> f (onnx PR #8171)."""
    f = helper.make_function("local", "f", ["a"], ["b"], [helper.make_node("g", ["a"], ["b"], domain="local")],
                             [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)])
    g = helper.make_function("local", "g", ["a"], ["b"], [helper.make_node("f", ["a"], ["b"], domain="local")],
                             [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)])
    call = helper.make_node("f", ["x"], ["y"], domain="local")
    return make_model([call], [value("x")], [value("y")], functions=[f, g], extra_opsets=[("local", 1)])


def sparse_external_model(location: str):
    """A sparse initializer whose values live in external data at ``location`` (item 12)."""
    values = external_tensor(location, name="sp", dims=(2,))
    indices = numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "sp_indices")
    sparse = helper.make_sparse_tensor(values, indices, [2, 2])
    node = helper.make_node("Add", ["x", "sp"], ["y"])
    return make_model([node], [value("x")], [value("y")], sparse_initializers=[sparse])


def constant_external_model(location: str):
    """A Constant node whose value tensor lives in external data at ``location`` (item 12)."""
    node = helper.make_node("Constant", [], ["c"], value=external_tensor(location, name="c"))
    add = helper.make_node("Add", ["x", "c"], ["y"])
    return make_model([node, add], [value("x")], [value("y")])


def subgraph_external_model(location: str):
    """An If branch with an initializer whose data lives at ``location``."""
    inner = helper.make_graph([helper.make_node("Add", ["x", "w_in"], ["out"])], "then", [], [value("out")],
                              [external_tensor(location, name="w_in")])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["out2"])], "else", [], [value("out2")])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=inner, else_branch=other)
    return make_model([node], [value("cond", (), TensorProto.BOOL), value("x")], [value("y")])


def custom_op_model(ops=(("com.example", "Frobnicate"), ("com.example", "Frobnicate"), ("", "NoSuchOnnxOp"))):
    """A chain of nodes with ops no kernel can have, for the all-at-once unsupported error."""
    nodes, prev = [], "x"
    for i, (domain, op) in enumerate(ops):
        out = "y" if i == len(ops) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, [prev], [out], domain=domain, name=f"n{i}"))
        prev = out
    domains = sorted({d for d, _ in ops if d})
    return make_model(nodes, [value("x")], [value("y")], extra_opsets=[(d, 1) for d in domains])


def onnx_model_bytes(model) -> bytes:
    return model.SerializeToString()





# ------------------------------------------------------------------ running
def ort_outputs(model, feeds: dict) -> list:
    """Run a ModelProto / bytes / path in ONNX Runtime (CPU, one thread)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def light_models() -> list[Path]:
    """The 9 ONNX "light" CNNs shipped inside the onnx wheel."""
    import onnx.backend.test

    return sorted((Path(onnx.backend.test.__file__).parent / "data" / "light").glob("*.onnx"))
