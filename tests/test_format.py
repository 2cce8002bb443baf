""".eim: bit-exact round trips, zero-copy mmap loading, atomic writes, and hostile files.

Hostile-file tests follow shared/HOSTILE_INPUTS.md items 45-56 (and 22-23 for writing): any
malformed file must raise ModelFormatError naming the field, never another exception.
"""
import json
import math
import mmap
import os
import random
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import edgeinfer.format as fmt
from edgeinfer.errors import ExportError, GraphError, ModelFormatError
from edgeinfer.format import dumps_eim, load_eim, loads_eim, save_eim
from edgeinfer.graph import MAX_SUBGRAPH_DEPTH, Graph, Node, ValueInfo


# ------------------------------------------------------------------------------ helpers
def assert_same(a, b, path="graph"):
    """Structure, Python types, dtypes, shapes and bytes all identical."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, Graph):
        for f in ("name", "inputs", "outputs", "nodes", "constants", "value_info", "opset", "metadata"):
            assert_same(getattr(a, f), getattr(b, f), f"{path}.{f}")
    elif isinstance(a, Node):
        for f in ("op_type", "domain", "name", "inputs", "outputs", "attrs"):
            assert_same(getattr(a, f), getattr(b, f), f"{path}.{f}")
    elif isinstance(a, ValueInfo):
        for f in ("name", "dtype", "shape"):
            assert_same(getattr(a, f), getattr(b, f), f"{path}.{f}")
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), path
        if a.dtype == object:
            assert a.tolist() == b.tolist(), path
        else:
            assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    else:
        assert a == b, path


def tiny_graph():
    return Graph(
        inputs=[ValueInfo("x", "float32", ("N", 3))],
        outputs=[ValueInfo("y", "float32", ("N", 3))],
        nodes=[Node("Add", ["x", "b"], ["t"], name="add"), Node("Mul", ["t", "w"], ["y"], name="mul", attrs={"k": 2})],
        constants={"b": np.array([1.0, 2.0, 3.0], np.float32), "w": np.arange(3, dtype=np.float32)},
        opset={"": 21},
    )


def body(name, const_value):
    return Graph(
        inputs=[ValueInfo("i", "int64", ())],
        outputs=[ValueInfo("o", "float32", (2,))],
        nodes=[Node("Add", ["c", "x"], ["o"], name=f"{name}_add", attrs={"alpha": 0.5})],
        constants={"c": np.full(2, const_value, np.float32)},
        name=name,
    )


def rich_graph():
    """Every attribute type, every tensor kind, nested subgraphs and metadata."""
    strings = np.array([["a", "é漢"], ["", "x\x00y"]], dtype=object)
    attrs = {
        "int": -(2**63), "big": 2**63 - 1, "float": -0.0, "nan": float("nan"), "inf": -math.inf,
        "negnan": struct.unpack("<d", struct.pack("<Q", 0xFFF0000000000123))[0],
        "str": "héllo \"q\" [", "bytes": b"\x00\xff\x80", "empty_bytes": b"", "bool": False, "none": None,
        "ints": [1, -2, 3], "floats": [1.5, math.inf, float("nan")], "strs": ["a", ""],
        "mixed": [1, "a", b"b", 2.0, None],
        "tuple": (1, (2.5, "x")), "nested": [[1, 2], [], [[3]]], "empty": [],
        "tensor": np.arange(12, dtype=np.int64).reshape(3, 4), "strings": strings,
        "f16": np.array([1.5, -np.inf, np.nan], np.float16), "scalar_t": np.array(7, np.int8),
        "np_f32": np.float32(1.25), "np_i64": np.int64(-5), "np_bool": np.bool_(True),
        "then_branch": body("then", 1.0), "branches": [body("b0", 2.0), body("b1", 3.0)],
    }
    return Graph(
        inputs=[ValueInfo("x", "float32", (2,)), ValueInfo("cond", "bool", ()),
                ValueInfo("d", "float32", ("batch", None, 4))],
        outputs=[ValueInfo("y", "float32", None), ValueInfo("b", "float32", (2,))],
        nodes=[Node("If", ["cond", "", "e"], ["y"], attrs=attrs, name="if", domain="ai.edgeinfer")],
        constants={
            "b": np.array([0.5, 0.25], np.float32),  # a constant that is also a graph output
            "e": np.zeros((0, 3), np.float16), "s0": np.array(3.5, np.float64), "bools": np.array([[True, False]]),
            "strs": np.array("one", dtype=object), "empty_str": np.empty((2, 0), dtype=object),
            "c64": np.array([1 + 2j], np.complex64), "u64": np.array([2**64 - 1], np.uint64),
            "bf16": np.array([0x3F80], np.uint16),
        },
        value_info={"t": ValueInfo("t", "float32", (2, "k"))},
        opset={"": 21, "ai.edgeinfer": 1},
        metadata={"producer": "test", "unicode": "ü漢\U0001f600"},
        name="rich",
    )


def split(data: bytes):
    hlen = struct.unpack_from("<Q", data, 8)[0]
    return json.loads(data[24 : 24 + hlen]), data[24 + hlen :]


def assemble(header=None, blobs=b"", *, raw=None, magic=fmt.MAGIC, version=1, reserved=0, crc=None, pad=True):
    raw = json.dumps(header).encode() if raw is None else raw
    if pad:
        raw += b" " * (-(24 + len(raw)) % 64)
    crc = zlib.crc32(raw) if crc is None else crc
    return struct.pack("<4sIQII", magic, version, len(raw), crc, reserved) + raw + blobs


def rewrite(data: bytes, mutate):
    """Apply ``mutate(header)`` and re-seal the file (valid crc and padding)."""
    header, blobs = split(data)
    mutate(header)
    return assemble(header, blobs)


def rejects(data: bytes, match: str | None = None):
    with pytest.raises(ModelFormatError, match=match) as info:
        loads_eim(data, source="m.eim")
    assert "m.eim" in str(info.value)
    return info.value


TINY = dumps_eim(tiny_graph())


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("use_mmap", [True, False])
def test_rich_graph_round_trips_bit_exact(tmp_path, use_mmap):
    g = rich_graph()
    save_eim(g, tmp_path / "m.eim")
    loaded = load_eim(tmp_path / "m.eim", mmap=use_mmap)
    assert_same(g, loaded)
    assert_same(g, loads_eim(dumps_eim(g)))
    assert dumps_eim(loaded) == dumps_eim(g)  # deterministic bytes


def test_layout_is_aligned_and_exact():
    data = dumps_eim(rich_graph())
    assert data[:8] == b"EIM\x00\x01\x00\x00\x00"
    header, blobs = split(data)
    assert (len(data) - len(blobs)) % 64 == 0
    assert data[24 : len(data) - len(blobs)].rstrip(b" ").endswith(b"}")
    pos = 0
    for t in header["tensors"]:
        assert t["offset"] == pos and t["offset"] % 64 == 0
        assert zlib.crc32(blobs[pos : pos + t["length"]]) == t["crc32"]
        pos += t["length"] + (-t["length"] % 64)
    assert pos == len(blobs)


def test_big_endian_and_strided_arrays_are_normalised():
    src = np.arange(24, dtype=">f4").reshape(4, 6)[::2, ::3]
    g = tiny_graph()
    g.constants["w"] = np.arange(3, dtype=">i8")[::-1]
    g.nodes[1] = g.nodes[1].replace(attrs={"t": src})
    loaded = loads_eim(dumps_eim(g))
    t = loaded.nodes[1].attrs["t"]
    assert t.dtype == np.dtype("<f4") and t.flags.c_contiguous
    np.testing.assert_array_equal(t, src)
    np.testing.assert_array_equal(loaded.constants["w"], [2, 1, 0])


def test_save_does_not_modify_the_graph():
    g = rich_graph()
    g.constants["nc"] = np.arange(10, dtype=">f8")[::2]
    before = dumps_eim(g)
    snapshot = rich_graph()
    dumps_eim(g)
    assert dumps_eim(g) == before
    assert_same({k: v for k, v in g.constants.items() if k != "nc"}, snapshot.constants)
    assert g.constants["nc"].dtype == np.dtype(">f8") and not g.constants["nc"].flags.c_contiguous
    assert g.constants["b"].flags.writeable


def test_subgraphs_at_the_depth_limit_round_trip():
    g = body("leaf", 1.0)
    g.inputs.append(ValueInfo("x", "float32", (2,)))
    for level in range(MAX_SUBGRAPH_DEPTH):
        node = Node("If", [], ["y"], attrs={"g": [g]})
        g = Graph(outputs=[ValueInfo("y", "float32", None)], nodes=[node], name=f"l{level}")
    assert_same(g, loads_eim(dumps_eim(g)))
    too_deep = Graph(outputs=[ValueInfo("y", "float32", None)], nodes=[Node("If", [], ["y"], attrs={"g": g})])
    with pytest.raises(GraphError, match="nested"):
        dumps_eim(too_deep)


def test_mmap_arrays_are_read_only_views_of_the_mapping(tmp_path):
    g = rich_graph()
    save_eim(g, tmp_path / "m.eim")
    loaded = load_eim(tmp_path / "m.eim")
    for name in ("b", "bools", "c64"):
        arr = loaded.constants[name]
        assert not arr.flags.writeable and not arr.flags.owndata
        assert arr.ctypes.data % 64 == 0
        base = arr
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
        with pytest.raises(ValueError):
            arr[...] = 0
    assert not loaded.nodes[0].attrs["tensor"].flags.writeable
    in_memory = load_eim(tmp_path / "m.eim", mmap=False).constants["b"]
    assert not in_memory.flags.writeable and in_memory.ctypes.data % 64 == 0


def test_unsupported_values_raise_export_error():
    for bad in ({"a": 1}, {1, 2}, 2**63, np.array([1, 2], dtype=object), [[[[[1]]]]], np.zeros(2, "datetime64[s]")):
        g = tiny_graph()
        g.nodes[1] = g.nodes[1].replace(attrs={"bad": bad})
        with pytest.raises(ExportError, match="attribute 'bad'"):
            dumps_eim(g)
    with pytest.raises(ExportError):
        dumps_eim("not a graph")


# ------------------------------------------------------------------ property: round trip
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
DTYPES = ["float32", "float16", "float64", "int8", "uint8", "int32", "int64", "uint16", "bool", "complex64"]
ARRAYS = st.one_of(
    st.sampled_from(DTYPES).flatmap(
        lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    ),
    st.lists(st.text(max_size=4), max_size=4).map(lambda xs: np.array(xs + ["z"], dtype=object)),
)
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), FLOATS, st.text(max_size=6), st.binary(max_size=6),
    ARRAYS, st.sampled_from(DTYPES).map(lambda d: np.zeros((), d)[()]),
)
VALUES = st.one_of(LEAVES, st.lists(LEAVES, max_size=3), st.tuples(LEAVES, st.lists(LEAVES, max_size=2)))
NAMES = st.text(min_size=1, max_size=5)


@st.composite
def graphs(draw, depth=0):
    consts = draw(st.dictionaries(NAMES.map(lambda s: "c_" + s), ARRAYS, max_size=3))
    dims = st.one_of(st.integers(0, 5), st.text(min_size=1, max_size=3), st.none())
    shape = draw(st.one_of(st.none(), st.lists(dims, max_size=3).map(tuple)))
    nodes, prev = [], "x"
    for i in range(draw(st.integers(0, 3))):
        attrs = draw(st.dictionaries(NAMES, VALUES, max_size=3))
        if depth < 2 and draw(st.booleans()):
            attrs["body"] = draw(graphs(depth + 1))
        ins = [prev] + draw(st.lists(st.sampled_from(sorted(consts) or [""]), max_size=2))
        name, domain = draw(st.text(max_size=3)), draw(st.text(max_size=3))
        nodes.append(Node(draw(NAMES), ins, [f"t{i}"], attrs, name=name, domain=domain))
        prev = f"t{i}"
    return Graph(
        inputs=[ValueInfo("x", draw(st.sampled_from(DTYPES)), shape)],
        outputs=[ValueInfo(prev, "float32", None)],
        nodes=nodes, constants=consts,
        opset=draw(st.dictionaries(st.text(max_size=3), st.integers(0, 2**63 - 1), max_size=2)),
        metadata=draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)),
        name=draw(st.text(max_size=4)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(graphs())
def test_property_round_trip_is_identical(g):
    data = dumps_eim(g)
    assert_same(g, loads_eim(data))


# ------------------------------------------------------------------------- hostile files
def test_every_truncation_is_rejected(tmp_path):
    for n in range(len(TINY)):
        rejects(TINY[:n])
    for n in (0, 10, 24, len(TINY) - 64, len(TINY) - 1):
        path = tmp_path / f"t{n}.eim"
        path.write_bytes(TINY[:n])
        for use_mmap in (True, False):
            with pytest.raises(ModelFormatError, match=str(path)):
                load_eim(path, mmap=use_mmap)


def test_every_single_bit_flip_is_rejected():
    rng = random.Random(0)
    for pos in range(len(TINY)):
        flipped = bytearray(TINY)
        flipped[pos] ^= 1 << rng.randrange(8)
        rejects(bytes(flipped))  # prefix fields, header crc, blob crc or zero padding catch it


@pytest.mark.parametrize("hlen", [2**64 - 1, 2**63, fmt.MAX_HEADER_BYTES + 1, 10_000])
def test_header_length_out_of_range(hlen):
    data = bytearray(TINY)
    struct.pack_into("<Q", data, 8, hlen)
    rejects(bytes(data), "prefix.header_length")


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b"{not json}", "not valid JSON"),
        (b' {"a": 1}', "starting with"),
        (b"[1, 2]", "starting with"),
        (b'{"a": 1}\x00\x00\x00', "NUL"),
        (b'{"a": 1}\n\t', "end in"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than"),
        (b'{"a": "' + b'\\"[' * 50_000 + b'"}', "expected keys"),  # brackets inside a string do not count
        (b'{"a": ' + b"1" * 5000 + b"}", "not valid JSON"),
        (b"{}", "expected keys"),
    ],
)
def test_bad_headers(raw, match):
    rejects(assemble(raw=raw), match)


def test_prefix_fields():
    rejects(b"GGUF" + TINY[4:], "magic")
    rejects(TINY[:4] + struct.pack("<I", 2) + TINY[8:], "format version 1, found 2")
    rejects(assemble(*split(TINY), reserved=7), "reserved")
    rejects(assemble(*split(TINY), crc=1), "header: checksum mismatch")
    rejects(assemble(*split(TINY), pad=False)[:-2], "multiple of 64")


def set_path(path, value):
    def mutate(h):
        *parents, last = path
        target = h
        for p in parents:
            target = target[p]
        target[last] = value
    return mutate


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("format_version",), 2, "header.format_version"),
        (("tensors",), {}, "header.tensors: expected an array"),
        (("tensors", 0, "dtype"), "float128", r"tensors\[0\].dtype: unknown dtype"),
        (("tensors", 0, "dtype"), "string", r"tensors\[0\].dtype"),
        (("tensors", 0, "encoding"), "int4-packed", "unknown encoding"),
        (("tensors", 0, "shape"), [-3], r"shape\[0\]"),
        (("tensors", 0, "shape"), [2**63], r"shape\[0\]"),
        (("tensors", 0, "shape"), [2**62, 2**62, 0], "exceeds 2\\*\\*63-1"),
        (("tensors", 0, "shape"), [2**31, 2**31], "exceeds|length"),
        (("tensors", 0, "shape"), [1] * 65, "rank 65"),
        (("tensors", 0, "shape"), [True, 3], "expected an integer, found a boolean"),
        (("tensors", 0, "length"), 16, r"tensors\[0\].length: expected 3 elements"),
        (("tensors", 0, "offset"), 32, "not a multiple of 64"),
        (("tensors", 1, "offset"), 0, "overlaps"),
        (("tensors", 1, "offset"), 128, "unaccounted"),
        (("tensors", 1, "offset"), 3.0, "expected an integer, found a number"),
        (("tensors", 0, "crc32"), 2**32, "crc32"),
        (("tensors", 0, "crc32"), 1, "tensor \"b\": checksum mismatch"),
        (("tensors", 0, "extra"), 1, "unknown \\['extra'\\]"),
        (("graph", "nodes", 1, "inputs", 1), 5, r"header.graph.nodes\[1\].inputs\[1\]: expected a string"),
        (("graph", "nodes", 1, "attrs", "k"), {"type": "int", "value": 2**64}, "expected an integer in"),
        (("graph", "nodes", 1, "attrs", "k"), {"type": "float", "value": "nan"}, "hex digits"),
        (("graph", "nodes", 1, "attrs", "k"), {"type": "bytes", "value": "@@"}, "base64"),
        (("graph", "nodes", 1, "attrs", "k"), {"type": "pickle", "value": "x"}, "unknown value type"),
        (("graph", "nodes", 1, "attrs", "k"), {"type": "tensor", "value": 0}, "already used"),
        (("graph", "nodes", 1, "attrs", "k"), {"type": "tensor", "value": 9}, "out of range"),
        (("graph", "nodes", 1, "attrs", "k"), {"type": "scalar", "value": 0}, "needs a 0-d tensor"),
        (("graph", "nodes", 1, "attrs", "k"), {"type": "bool", "value": 1}, "true or false"),
        (("graph", "nodes", 1, "op_type"), "", "non-empty"),
        (("graph", "nodes", 1, "inputs"), ["t", "nope"], "reads 'nope'"),
        (("graph", "constants"), {"b": 0}, r"tensors\[1\]: tensor \"w\" is not used"),
        (("graph", "inputs", 0, "shape"), [-1], r"inputs\[0\].shape\[0\]"),
        (("graph", "inputs", 0, "dtype"), "float8", "unknown type"),
        (("graph", "inputs", 0, "dtype"), "sequence(float9)", "unknown type"),
        (("graph", "opset", ""), -1, "opset"),
        (("graph", "metadata"), {"k": 1}, "metadata"),
        (("graph",), [], "header.graph: expected an object"),
    ],
)
def test_bad_fields_name_the_field(path, value, match):
    err = rejects(rewrite(TINY, set_path(path, value)), match)
    if "reads 'nope'" in match:
        assert isinstance(err, GraphError)


def nest(levels, leaf):
    for _ in range(levels):
        leaf = {"type": "list", "value": [leaf]}
    return leaf


def test_nesting_limits_in_files():
    attr = ("graph", "nodes", 1, "attrs", "k")
    rejects(rewrite(TINY, set_path(attr, nest(5, {"type": "int", "value": 1}))), "lists nested")
    sub = dict(name="s", inputs=[], outputs=[], nodes=[], constants={}, value_info={}, opset={}, metadata={})
    for _ in range(MAX_SUBGRAPH_DEPTH + 1):
        sub = dict(sub, nodes=[{"op_type": "If", "domain": "", "name": "", "inputs": [], "outputs": [],
                                "attrs": {"g": {"type": "graph", "value": sub}}}])
    rejects(rewrite(TINY, set_path(attr, {"type": "graph", "value": sub})), "nested more than")


def test_data_section_accounting():
    header, blobs = split(TINY)
    rejects(assemble(header, blobs + bytes(64)), "trailing bytes")  # polyglot tail
    rejects(assemble(header, blobs + b"x"), "trailing bytes")
    rejects(assemble(header, blobs[:-64]), "run past")
    padded = bytearray(blobs)
    padded[20] = 1  # inside tensor 0's padding (12 bytes of data)
    rejects(assemble(header, bytes(padded)), "padding")


def test_blob_contents_are_checked():
    g = Graph(outputs=[ValueInfo("m", "bool", None), ValueInfo("s", "string", None)],
              constants={"m": np.array([True, False]), "s": np.array(["ab", "c"], dtype=object)})
    header, blobs = split(dumps_eim(g))
    bad = bytearray(blobs)
    bad[1] = 2
    header["tensors"][0]["crc32"] = zlib.crc32(bad[:2])
    rejects(assemble(header, bytes(bad)), "bool element 1 is byte 2")
    header, blobs = split(dumps_eim(g))
    strings = bytearray(blobs)
    strings[64 + 8] = 0xFF  # first string byte: invalid UTF-8
    header["tensors"][1]["crc32"] = zlib.crc32(strings[64 : 64 + 11])
    rejects(assemble(header, bytes(strings)), "not valid UTF-8")
    header, blobs = split(dumps_eim(g))
    strings = bytearray(blobs)
    strings[64] = 3  # lengths no longer add up
    header["tensors"][1]["crc32"] = zlib.crc32(strings[64 : 64 + 11])
    rejects(assemble(header, bytes(strings)), "add up")


def test_not_a_regular_file(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot open"):
        load_eim(tmp_path / "missing.eim")
    with pytest.raises(ModelFormatError, match="not a regular file"):
        load_eim(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.eim")
        with pytest.raises(ModelFormatError, match="not a regular file"):
            load_eim(tmp_path / "fifo.eim")  # must not block waiting for a writer


def random_json(rng):
    return rng.choice([
        None, True, -1, 0, 1, 2**64, 63, 65, 1.5, "", "float32", "string", "raw", "x" * 300,
        [], [1, -1], [2**40] * 3, {},
        {"type": "int"}, {"type": "tensor", "value": 0}, {"type": "scalar", "value": 1}, {"type": "graph", "value": {}},
    ])


def mutate_structure(rng, header):
    """Replace, delete or duplicate one value anywhere in the JSON tree (uniformly chosen)."""
    slots, stack = [], [header]
    while stack:
        node = stack.pop()
        for key in list(node) if isinstance(node, dict) else range(len(node)):
            slots.append((node, key))
            if isinstance(node[key], (dict, list)):
                stack.append(node[key])
    node, key = rng.choice(slots)
    action = rng.random()
    if action < 0.6:
        node[key] = random_json(rng)
    elif action < 0.8:
        del node[key]
    elif isinstance(node, list):
        node.insert(key, node[key])  # e.g. a tensor referenced twice or a node defined twice
    else:
        node[key + "_"] = node[key]


def test_fuzz_random_mutations_only_raise_model_format_errors():
    rng = random.Random(1234)
    seeds = [TINY, dumps_eim(rich_graph())]
    deadline = time.monotonic() + 60
    for i in range(300):
        data = bytearray(rng.choice(seeds))
        kind = i % 4
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:
            cut = rng.randrange(len(data))
            noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 70)))
            data = data[:cut] + noise + data[cut + rng.randint(0, 70) :]
        else:  # structural: re-sealed, so it gets past the checksums into the schema checks
            header, blobs = split(bytes(data))
            for _ in range(rng.randint(1, 3)):
                mutate_structure(rng, header)
            data = assemble(header, blobs)
        try:
            loaded = loads_eim(bytes(data))
        except ModelFormatError:
            pass
        else:
            dumps_eim(loaded)  # whatever loads must be a sound graph
        assert time.monotonic() < deadline, "fuzzing ran past its time limit"


# -------------------------------------------------------------------------------- writing
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "m.eim"
    save_eim(tiny_graph(), target)
    old = target.read_bytes()
    calls = []

    def failing_write_blob(f, blob):
        calls.append(1)
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(fmt, "_write_blob", failing_write_blob)
    with pytest.raises(OSError, match="disk full"):
        save_eim(rich_graph(), target)
    assert calls and target.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.eim"]
    monkeypatch.undo()
    monkeypatch.setattr(fmt.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError, match="rename failed"):
        save_eim(rich_graph(), target)
    assert target.read_bytes() == old and os.listdir(tmp_path) == ["m.eim"]


def test_symlink_at_destination_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    link = tmp_path / "m.eim"
    link.symlink_to(victim)
    save_eim(tiny_graph(), link)
    assert victim.read_bytes() == b"precious"
    assert not link.is_symlink()
    assert_same(tiny_graph(), load_eim(link))


def test_saved_file_gets_normal_permissions(tmp_path):
    target = tmp_path / "m.eim"
    save_eim(tiny_graph(), target)
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_api_load_and_save_use_eim(tmp_path):
    import edgeinfer

    g = rich_graph()
    edgeinfer.save(g, tmp_path / "m.eim")
    assert_same(g, edgeinfer.load(tmp_path / "m.eim"))


@pytest.mark.parametrize("dtype", ["bfloat16", "float8e4m3fn", "float8e5m2", "int4", "uint2", "float4e2m1"])
def test_low_precision_constants_round_trip_eim(dtype, tmp_path):
    pytest.importorskip("ml_dtypes")
    import edgeinfer
    from edgeinfer import dtypes
    from edgeinfer.graph import Graph, Node, ValueInfo

    g = Graph(name="g")
    g.constants["w"] = np.array([1, -2, 3, 0.5], np.float32).astype(dtypes.to_numpy(dtype))
    g.outputs = [ValueInfo("y", dtype, (4,))]
    g.nodes = [Node("Identity", ["w"], ["y"])]
    edgeinfer.save(g, tmp_path / "lp.eim")
    back = edgeinfer.load(tmp_path / "lp.eim").constants["w"]
    assert back.dtype == g.constants["w"].dtype
    np.testing.assert_array_equal(back.astype(np.float32), g.constants["w"].astype(np.float32))


@pytest.mark.parametrize("where", ["metadata", "node", "attrs", "value", "top"])
def test_a_duplicate_key_anywhere_is_named(where):
    """Duplicates are found by counting keys against the header's colons, so one deep inside a
    valid-looking file (where the last value would otherwise silently win) is still refused."""
    header, blobs = split(dumps_eim(rich_graph()))
    text = json.dumps(header)
    # (anchor, text put just before it) or, for an object's first keys, (anchor, text put after it)
    before = {"node": ('"op_type": ', '"op_type": "Relu", '), "value": ('"type": "int"', '"type": "float", '),
              "top": ('"format_version"', '"format_version": 1, ')}
    after = {"metadata": ('"metadata": {', '"k": "1", "k": "2"'),
             "attrs": ('"attrs": {"', '"z": {"type": "int", "value": 1}, "z": {"type": "int", "value": 2}')}
    if where in before:
        anchor, extra = before[where]
        at = text.index(anchor)
    else:
        anchor, extra = after[where]
        at = text.index(anchor) + len(anchor)
        if where == "attrs":
            at -= 1  # before the first key's quote
        extra += "" if text[at] == "}" else ", "
    rejects(assemble(raw=(text[:at] + extra + text[at:]).encode(), blobs=blobs), "duplicate key")


def test_reader_counts_every_key_of_a_valid_file():
    data = dumps_eim(rich_graph())
    reader = fmt._Reader("m.eim", np.frombuffer(data, np.uint8))
    reader.parse()
    assert reader.keys_read == reader.keys_in_header > 0


# --------------------------------------------------------- sub-byte tensors: "bits-packed"
PACKED = {"int4": 4, "uint4": 4, "float4e2m1": 4, "int2": 2, "uint2": 2}


def sub_byte(dtype, codes):
    """An ml_dtypes array from bit codes (ml_dtypes keeps each element's code in a byte)."""
    from edgeinfer import dtypes

    return np.asarray(codes, np.uint8).view(dtypes.to_numpy(dtype))


def all_codes_array(dtype, shape, seed=0):
    """Random codes of ``dtype`` in ``shape``; the first element is the minimum and the last the
    maximum (int4: -8 and 7) when there is room."""
    pytest.importorskip("ml_dtypes")
    bits = PACKED[dtype]
    n = math.prod(shape)
    codes = np.random.default_rng(seed).integers(0, 1 << bits, n).astype(np.uint8)
    values = sub_byte(dtype, np.arange(1 << bits)).astype(np.float32)
    if n:
        codes[0], codes[-1] = int(np.argmin(values)), int(np.argmax(values))
    return sub_byte(dtype, codes).reshape(shape)


def packed_graph(arrays):
    """A graph whose outputs are the given constants."""
    return Graph(outputs=[ValueInfo(k, _ir(v), None) for k, v in arrays.items()], constants=dict(arrays), name="packed")


def _ir(arr):
    from edgeinfer import dtypes

    return dtypes.from_numpy(arr.dtype)


@pytest.mark.parametrize("dtype", sorted(PACKED))
@pytest.mark.parametrize("shape", [(), (1,), (2,), (3,), (5,), (8,), (3, 5), (4, 4), (2, 3, 5), (2, 0, 3), (1, 7, 1)])
def test_sub_byte_tensors_round_trip_packed(dtype, shape, tmp_path):
    arr = all_codes_array(dtype, shape)
    g = packed_graph({"w": arr})
    save_eim(g, tmp_path / "m.eim")
    for use_mmap in (True, False):
        back = load_eim(tmp_path / "m.eim", mmap=use_mmap).constants["w"]
        assert (back.dtype, back.shape) == (arr.dtype, arr.shape)
        assert back.tobytes() == arr.tobytes() and not back.flags.writeable
    header, _ = split((tmp_path / "m.eim").read_bytes())
    entry = header["tensors"][0]
    assert (entry["encoding"], entry["dtype"]) == ("bits-packed", dtype)
    assert entry["length"] == -(-math.prod(shape) * PACKED[dtype] // 8)


def test_min_and_max_survive():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from edgeinfer import dtypes

    arrays = {d: all_codes_array(d, (9,)) for d in PACKED}
    back = loads_eim(dumps_eim(packed_graph(arrays))).constants
    for d, arr in arrays.items():
        info = (ml_dtypes.iinfo if "int" in d else ml_dtypes.finfo)(dtypes.to_numpy(d))
        assert back[d][0] == info.min and back[d][-1] == info.max, d
        np.testing.assert_array_equal(back[d].astype(np.float32), arr.astype(np.float32))
    assert back["int4"][[0, -1]].astype(int).tolist() == [-8, 7]
    assert back["int2"][[0, -1]].astype(int).tolist() == [-2, 1]


@pytest.mark.parametrize("dtype", sorted(PACKED))
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 33])
def test_packed_bytes_are_onnx_packing(dtype, n):
    """The blob is byte for byte what ONNX stores in raw_data (first element in the low bits)."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    arr = all_codes_array(dtype, (n,), seed=n)
    header, blobs = split(dumps_eim(packed_graph({"w": arr})))
    length = header["tensors"][0]["length"]
    assert blobs[:length] == numpy_helper.from_array(arr).raw_data, onnx.__version__


def test_packed_bit_order_by_hand():
    pytest.importorskip("ml_dtypes")
    cases = {  # values -> bytes, written out from the module docstring's rule
        "int4": ([1, -2, 3], b"\xe1\x03"),
        "int4 ": ([-8, 7, 0, -1, 3], b"\x78\xf0\x03"),
        "uint4": ([15, 0, 9], b"\x0f\x09"),
        "int2": ([1, -2, 0, -1, 1], b"\xc9\x01"),
        "uint2": ([3, 2, 1, 0, 3, 3], b"\x1b\x0f"),
        "float4e2m1": ([1.0, -2.0, 6.0], b"\xc2\x07"),
    }
    from edgeinfer import dtypes

    for key, (values, expected) in cases.items():
        arr = np.array(values, np.float32).astype(dtypes.to_numpy(key.strip()))
        header, blobs = split(dumps_eim(packed_graph({"w": arr})))
        assert blobs[: header["tensors"][0]["length"]] == expected, key
        np.testing.assert_array_equal(loads_eim(dumps_eim(packed_graph({"w": arr}))).constants["w"], arr)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(PACKED)), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6), st.data())
def test_property_packed_round_trip(dtype, shape, data):
    pytest.importorskip("ml_dtypes")
    n = math.prod(shape)
    codes = data.draw(hnp.arrays(np.uint8, n, elements=st.integers(0, (1 << PACKED[dtype]) - 1)))
    arr = sub_byte(dtype, codes).reshape(shape)
    back = loads_eim(dumps_eim(packed_graph({"w": arr}))).constants["w"]
    assert (back.dtype, back.shape, back.tobytes()) == (arr.dtype, arr.shape, arr.tobytes())


def test_a_million_int4_values_take_half_a_megabyte(tmp_path):
    arr = all_codes_array("int4", (1000, 1000))
    save_eim(packed_graph({"w": arr}), tmp_path / "int4.eim")
    save_eim(packed_graph({"w": arr.astype(np.int8)}), tmp_path / "int8.eim")
    size, size8 = (tmp_path / "int4.eim").stat().st_size, (tmp_path / "int8.eim").stat().st_size
    assert 500_000 <= size <= 500_000 + 1024, size  # the blob plus a small header
    assert 1_000_000 <= size8 <= 1_000_000 + 1024, size8
    back = load_eim(tmp_path / "int4.eim").constants["w"]
    assert back.tobytes() == arr.tobytes()


def test_stray_high_bits_are_stored_as_the_value_ml_dtypes_reads():
    """An int4 array viewed from other bytes: ml_dtypes reads the low bits; the file keeps
    those values (and so never holds a byte that means two things)."""
    pytest.importorskip("ml_dtypes")
    arr = np.array([0x17, 0xF8, 0x7F, 0x03], np.uint8).view(sub_byte("int4", [0]).dtype)
    back = loads_eim(dumps_eim(packed_graph({"w": arr}))).constants["w"]
    assert back.astype(int).tolist() == arr.astype(int).tolist() == [7, -8, -1, 3]
    assert back.view(np.uint8).tolist() == [7, 8, 15, 3]


def packed_file(values=(-8, 7, 0, -1, 3), dtype="int4"):
    """A file with one float32 tensor and one 5-element packed tensor (tensor 1)."""
    pytest.importorskip("ml_dtypes")
    from edgeinfer import dtypes

    arr = np.array(values, np.float32).astype(dtypes.to_numpy(dtype))
    return dumps_eim(packed_graph({"f": np.arange(3, dtype=np.float32), "w": arr}))


def reseal_blob(header, blobs, index, new_blob):
    """Replace tensor ``index``'s blob (same padded size), fixing its length and crc32."""
    entry = header["tensors"][index]
    start, old_end = entry["offset"], entry["offset"] + entry["length"] + (-entry["length"] % 64)
    padded = new_blob + bytes(-len(new_blob) % 64)
    assert len(padded) == old_end - start
    entry["length"], entry["crc32"] = len(new_blob), zlib.crc32(new_blob)
    return assemble(header, blobs[:start] + padded + blobs[old_end:])


@pytest.mark.parametrize("length, found", [(2, "found 2"), (4, "found 4"), (0, "found 0"), (6, "found 6")])
def test_packed_blob_of_the_wrong_length_is_rejected(length, found):
    rejects(rewrite(packed_file(), set_path(("tensors", 1, "length"), length)),
            r"header.tensors\[1\].length: expected ceil\(5 elements x 4 bits / 8\) = 3 bytes for shape \[5\], " + found)


def test_truncated_and_overlong_packed_blobs_are_rejected_even_when_resealed():
    blob = split(packed_file())[1][64:67]
    rejects(reseal_blob(*split(packed_file()), 1, blob[:2]), r"tensors\[1\].length: .*= 3 bytes .*found 2")
    rejects(reseal_blob(*split(packed_file()), 1, blob + b"\x00"), r"tensors\[1\].length: .*= 3 bytes .*found 4")
    rejects(packed_file()[:-64], "run past")  # the file itself cut inside the blob's block


def test_non_zero_padding_bits_are_rejected():
    header, blobs = split(packed_file())
    blob = bytearray(blobs[64:67])
    assert blob[2] == 0x03  # element 4 (value 3) in the low nibble, padding in the high one
    blob[2] |= 0x50
    rejects(reseal_blob(header, blobs, 1, bytes(blob)),
            r"header.tensors\[1\]: the last byte 0x53 has non-zero padding bits after element 4")
    header, blobs = split(packed_file([1, -1, 0], "int2"))  # 3 x 2 bits: the top 2 bits are padding
    rejects(reseal_blob(header, blobs, 1, bytes([blobs[64] | 0x80])), "padding bits after element 2")


@pytest.mark.parametrize("dtype", ["int8", "uint8", "float32", "bool", "float8e4m3fn", "bfloat16"])
def test_bits_packed_with_a_dtype_it_does_not_cover(dtype):
    mutate = lambda h: h["tensors"][1].update(dtype=dtype)  # noqa: E731
    rejects(rewrite(packed_file(), mutate),
            rf"header.tensors\[1\].dtype: dtype \"{dtype}\" cannot use encoding \"bits-packed\", which holds \["
            r"'float4e2m1', 'int2', 'int4', 'uint2', 'uint4'\]")
    mutate = lambda h: h["tensors"][0].update(encoding="bits-packed")  # noqa: E731
    rejects(rewrite(packed_file(), mutate), r"tensors\[0\].dtype: dtype \"float32\" cannot use encoding")


def test_bits_packed_across_dtypes_of_other_widths_is_a_length_error():
    """int4 bytes relabelled int2 (same encoding, other width) hold 10 elements, not 5."""
    rejects(rewrite(packed_file(), lambda h: h["tensors"][1].update(dtype="int2")),
            r"tensors\[1\].length: expected ceil\(5 elements x 2 bits / 8\) = 2 bytes")


def test_old_raw_sub_byte_files_still_load():
    """Files written before "bits-packed" hold one byte per sub-byte value ("raw")."""
    pytest.importorskip("ml_dtypes")
    arrays = {d: all_codes_array(d, (2, 3), seed=i) for i, d in enumerate(sorted(PACKED))}
    header, _ = split(dumps_eim(packed_graph(arrays)))
    blobs = b""
    for entry, arr in zip(header["tensors"], arrays.values()):
        raw = arr.tobytes()
        entry.update(encoding="raw", offset=len(blobs), length=len(raw), crc32=zlib.crc32(raw))
        blobs += raw + bytes(-len(raw) % 64)
    back = loads_eim(assemble(header, blobs)).constants
    for name, arr in arrays.items():
        assert (back[name].dtype, back[name].tobytes()) == (arr.dtype, arr.tobytes())
    # a raw byte with stray high bits means different things to different readers: refused
    entry = header["tensors"][0]
    bad = bytes([0x17]) + arrays[entry["name"]].tobytes()[1:]
    entry["crc32"] = zlib.crc32(bad)
    rejects(assemble(header, bad + blobs[len(bad):]),
            rf"tensors\[0\]: {entry['dtype']} element 0 is byte 0x17, expected 0x00..0x0f")


def test_fuzz_packed_file_only_raises_model_format_errors():
    rng = random.Random(77)
    seed = dumps_eim(packed_graph({d: all_codes_array(d, (3, 3), seed=i) for i, d in enumerate(sorted(PACKED))}))
    for i in range(200):
        if i % 2:  # a random blob byte, re-sealed so that only the packed decoder can object
            header, blobs = split(seed)
            k = rng.randrange(len(header["tensors"]))
            entry = header["tensors"][k]
            blob = bytearray(blobs[entry["offset"] : entry["offset"] + entry["length"]])
            blob[rng.randrange(len(blob))] = rng.randrange(256)
            data = reseal_blob(header, blobs, k, bytes(blob))
        else:
            header, blobs = split(seed)
            mutate_structure(rng, header)
            data = assemble(header, blobs)
        try:
            loaded = loads_eim(data)
        except ModelFormatError:
            continue
        dumps_eim(loaded)


# ------------------------------------------------------------ end to end: int4 PP-OCRv4 rec
@pytest.fixture(scope="module")
def ppocr_rec_int4():
    pytest.importorskip("ml_dtypes")
    import edgeinfer
    from edgeinfer.converters.quantize import quantize_weights
    from models import model_path

    g = edgeinfer.load(model_path("ppocr_rec"))
    return quantize_weights(g, weights="int4"), quantize_weights(g, weights="int8")


def test_int4_ppocr_rec_eim_is_smaller_than_int8_and_runs_identically(ppocr_rec_int4, tmp_path):
    import edgeinfer

    q4, q8 = ppocr_rec_int4
    save_eim(q4, tmp_path / "int4.eim")
    save_eim(q8, tmp_path / "int8.eim")
    size4, size8 = (tmp_path / "int4.eim").stat().st_size, (tmp_path / "int8.eim").stat().st_size
    header, _ = split((tmp_path / "int4.eim").read_bytes())
    packed = [t for t in header["tensors"] if t["encoding"] == "bits-packed"]
    n_int4 = sum(1 for v in q4.constants.values() if _ir(v) == "int4")
    assert n_int4 > 0 and len(packed) == n_int4 and {t["dtype"] for t in packed} == {"int4"}
    # the int4 weights take half a byte each, so the file beats int8 (scales per 32 included)
    int4_values = sum(math.prod(t["shape"]) for t in packed)
    assert sum(t["length"] for t in packed) == sum(-(-math.prod(t["shape"]) // 2) for t in packed)
    assert size4 < size8, (size4, size8)
    assert size8 - size4 > int4_values // 4, (size4, size8, int4_values)
    loaded = load_eim(tmp_path / "int4.eim")
    assert_same(q4.constants, loaded.constants)
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 96)).astype(np.float32)
    name = q4.inputs[0].name
    ref = edgeinfer.Session(q4, backend="cpu").run({name: x})
    got = edgeinfer.Session(loaded, backend="cpu").run({name: x})
    assert list(ref) == list(got)
    for k in ref:
        assert ref[k].dtype == got[k].dtype and ref[k].tobytes() == got[k].tobytes(), k


# ------------------------------------------ sparse tensors: "bitmask-sparse" and "coo-sparse"
SPARSE_DTYPES = ["float32", "float16", "float64", "int8", "uint8", "int32", "int64", "uint16", "bool",
                 "complex64", "complex128", "bfloat16", "float8e4m3fn"]


def sparse_array(dtype, shape, sparsity, seed=0):
    """Random values of ``dtype`` with ``sparsity`` of them zero (all bytes zero); for floats
    some kept values are -0.0 and NaN with a payload, which must survive bit for bit."""
    from edgeinfer import dtypes

    if dtype in ("bfloat16", "float8e4m3fn"):
        pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    np_dtype = dtypes.to_numpy(dtype)
    if dtype == "bool":
        arr = np.ones(n, bool)
    else:
        size = np_dtype.itemsize
        raw = rng.integers(1, 256, (n, size), dtype=np.uint8)  # every byte non-zero: never zero
        arr = raw.reshape(-1).view(np_dtype).copy()
        if dtype in ("float32", "float16", "float64") and n >= 4:
            arr[1] = -0.0
            arr[2] = np.frombuffer({"float32": b"\x01\x00\xc0\x7f", "float16": b"\x01\x7e",
                                    "float64": b"\x01\0\0\0\0\0\xf8\x7f"}[dtype], np_dtype)[0]
    zero = rng.permutation(n)[: round(n * sparsity)]
    arr.view(np.uint8).reshape(n, np_dtype.itemsize)[zero] = 0
    return arr.reshape(shape)


def encodings_of(data):
    return [(t["encoding"], t.get("nnz")) for t in split(data)[0]["tensors"]]


@pytest.mark.parametrize("dtype", SPARSE_DTYPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.7, 0.99, 1.0])
def test_sparse_round_trip_is_bit_exact(dtype, sparsity, tmp_path):
    shapes = [(), (7,), (300,), (10, 30), (4, 5, 6), (2, 3, 4, 5), (3, 0, 70), (64,), (65,)]
    arrays = {f"w{i}": sparse_array(dtype, s, sparsity, seed=i) for i, s in enumerate(shapes)}
    g = packed_graph(arrays)
    save_eim(g, tmp_path / "m.eim")
    for use_mmap in (True, False):
        back = load_eim(tmp_path / "m.eim", mmap=use_mmap).constants
        for k, arr in arrays.items():
            assert (back[k].dtype, back[k].shape) == (arr.dtype, arr.shape), k
            assert back[k].tobytes() == arr.tobytes() and not back[k].flags.writeable, k
    used = {e for e, _ in encodings_of((tmp_path / "m.eim").read_bytes())}
    if sparsity >= 0.5 and dtype != "bool" or sparsity >= 0.9:
        assert used & {"bitmask-sparse", "coo-sparse"}, used
    if sparsity == 0.0:
        assert used <= {"raw"}, used


def test_writer_picks_the_smallest_encoding():
    n = 10_000
    arrays = {"dense": sparse_array("float32", (n,), 0.0), "half": sparse_array("float32", (n,), 0.5),
              "p70": sparse_array("float32", (100, 100), 0.7), "p99": sparse_array("float32", (n,), 0.99),
              "empty": np.zeros((50, 200), np.float32), "small": np.zeros(63, np.float32),
              "i8_p70": sparse_array("int8", (n,), 0.7), "i8_p95": sparse_array("int8", (n,), 0.95)}
    data = dumps_eim(packed_graph(arrays))
    got = dict(zip(arrays, encodings_of(data)))
    assert got["dense"] == ("raw", None) and got["small"] == ("raw", None)  # < 64 elements: always raw
    assert got["half"] == ("bitmask-sparse", None) and got["p70"] == ("bitmask-sparse", None)
    assert got["p99"] == ("coo-sparse", 100) and got["empty"] == ("coo-sparse", 0)
    # int8 70%: bitmask 1250 + 3000 < raw 10000 < coo 15000; 95%: bitmask 1250 + 500 < coo 2500
    assert got["i8_p70"] == ("bitmask-sparse", None) and got["i8_p95"] == ("bitmask-sparse", None)
    entries = {t["name"]: t for t in split(data)[0]["tensors"]}
    assert entries["p70"]["length"] == 10_000 // 8 + 3000 * 4
    assert entries["p99"]["length"] == 100 * (4 + 4) and entries["empty"]["length"] == 0
    assert list(entries["p99"]) == list(fmt._TENSOR_KEYS) + ["nnz"]
    back = loads_eim(data).constants
    for k, arr in arrays.items():
        assert back[k].tobytes() == arr.tobytes(), k


def test_bitmask_bytes_by_hand():
    arr = np.zeros(70, np.float32)
    arr[[0, 3, 9, 69]] = [1.0, -0.0, 2.0, 3.0]
    arr[10:40] = 5.0  # 34 stored: bitmask 9 + 136 = 145 bytes < coo 34 x 8 = 272 < raw 280
    header, blobs = split(dumps_eim(packed_graph({"w": arr})))
    entry = header["tensors"][0]
    assert entry["encoding"] == "bitmask-sparse" and entry["length"] == 9 + 34 * 4
    mask = blobs[:9]
    assert mask[0] == 0b00001001 and mask[1] == 0b11111110 and mask[8] == 0b00100000
    assert blobs[9:21] == np.array([1.0, -0.0, 2.0], "<f4").tobytes()


def test_a_70_percent_sparse_million_float32_file_shrinks(tmp_path, monkeypatch):
    arr = sparse_array("float32", (1000, 1000), 0.7)
    save_eim(packed_graph({"w": arr}), tmp_path / "sparse.eim")
    with monkeypatch.context() as m:  # the file as writers before the sparse encodings made it
        m.setattr(fmt, "SPARSE_MIN_ELEMENTS", 2**62)
        save_eim(packed_graph({"w": arr}), tmp_path / "dense.eim")
    assert encodings_of((tmp_path / "dense.eim").read_bytes()) == [("raw", None)]
    assert encodings_of((tmp_path / "sparse.eim").read_bytes()) == [("bitmask-sparse", None)]
    size, dense = (tmp_path / "sparse.eim").stat().st_size, (tmp_path / "dense.eim").stat().st_size
    assert dense >= 4_000_000
    assert size <= 0.45 * dense, (size, dense)
    assert load_eim(tmp_path / "sparse.eim").constants["w"].tobytes() == arr.tobytes()


def sparse_file(sparsity):
    """A file with a float32 tensor (tensor 0, raw) and a 100-element float32 sparse tensor 1."""
    arr = sparse_array("float32", (100,), sparsity, seed=3)
    data = dumps_eim(packed_graph({"f": np.arange(3, dtype=np.float32), "w": arr}))
    assert encodings_of(data)[1][0] == ("coo-sparse" if sparsity > 0.8 else "bitmask-sparse")
    return data


def blob_of(data, index):
    header, blobs = split(data)
    entry = header["tensors"][index]
    return header, blobs, bytearray(blobs[entry["offset"] : entry["offset"] + entry["length"]])


def test_bitmask_hostile_blobs_are_rejected():
    header, blobs, blob = blob_of(sparse_file(0.7), 1)
    assert len(blob) == 13 + 30 * 4
    rejects(rewrite(sparse_file(0.7), set_path(("tensors", 1, "length"), 12)),
            r"header.tensors\[1\].length: expected ceil\(100 / 8\) = 13 mask bytes plus up to 100 values x 4 bytes")
    rejects(reseal_blob(header, blobs, 1, bytes(blob[:-4])), r"tensors\[1\]: the mask has 30 bits set, "
            r"so expected 30 values x 4 bytes = 120 after it, found 116")
    rejects(reseal_blob(header, blobs, 1, bytes(blob[:-1])), r"tensors\[1\].length: expected ceil")
    bad = bytearray(blob)
    bad[12] |= 0x80  # element 103 does not exist: a padding bit
    rejects(reseal_blob(header, blobs, 1, bytes(bad)), r"tensors\[1\]: the last mask byte 0x.. has non-zero "
            r"padding bits after element 99")
    bad = bytearray(blob)
    bad[0] ^= 1  # one set bit more than there are values, or one fewer
    rejects(reseal_blob(header, blobs, 1, bytes(bad)), r"tensors\[1\]: the mask has (29|31) bits set")
    bad = bytearray(blob)
    bad[13:17] = bytes(4)  # a stored zero: two encodings for one array
    rejects(reseal_blob(header, blobs, 1, bytes(bad)), r"tensors\[1\]: stored value 0 is all zero bytes")
    rejects(rewrite(sparse_file(0.7), set_path(("tensors", 1, "nnz"), 30)), r"tensors\[1\]: expected keys "
            r".*unknown \['nnz'\]")


def test_coo_hostile_blobs_are_rejected():
    data = sparse_file(0.99)
    header, blobs, blob = blob_of(data, 1)
    assert header["tensors"][1]["nnz"] == 1 and len(blob) == 8
    data = dumps_eim(packed_graph({"f": np.arange(3, dtype=np.float32),
                                   "w": sparse_array("float32", (200,), 0.98, seed=3)}))
    header, blobs, blob = blob_of(data, 1)
    assert header["tensors"][1]["nnz"] == 4 and len(blob) == 32
    idx = np.frombuffer(bytes(blob[:16]), "<u4").tolist()

    def with_indices(values):
        b = bytearray(blob)
        b[:16] = np.array(values, "<u4").tobytes()
        return reseal_blob(*split(data), 1, bytes(b))

    rejects(with_indices([idx[1], idx[0], idx[2], idx[3]]), r"header.tensors\[1\]: index 1 is \d+, not above "
            r"index 0 \(\d+\); indices must be strictly increasing")
    rejects(with_indices([idx[0], idx[0], idx[2], idx[3]]), r"tensors\[1\]: index 1 .* strictly increasing")
    rejects(with_indices(idx[:3] + [200]), r"tensors\[1\]: index 3 is 200, out of range for 200 elements")
    rejects(with_indices(idx[:3] + [2**32 - 1]), r"tensors\[1\]: index 3 is 4294967295, out of range")
    rejects(rewrite(data, set_path(("tensors", 1, "nnz"), 3)),
            r"tensors\[1\].length: expected nnz 3 x \(4 index \+ 4 value bytes\) = 24 for shape \[200\], found 32")
    rejects(rewrite(data, set_path(("tensors", 1, "nnz"), 201)), r"tensors\[1\].nnz: expected an integer in \[0, 200\]")
    rejects(rewrite(data, set_path(("tensors", 1, "nnz"), -1)), r"tensors\[1\].nnz: expected an integer")
    rejects(rewrite(data, set_path(("tensors", 1, "nnz"), 4.0)), r"tensors\[1\].nnz: expected an integer")
    rejects(rewrite(data, lambda h: h["tensors"][1].pop("nnz")), r"tensors\[1\]: expected keys .*missing \['nnz'\]")
    rejects(reseal_blob(*split(data), 1, bytes(blob[:24])), r"tensors\[1\].length: expected nnz 4 .* found 24")
    b = bytearray(blob)
    b[16:20] = bytes(4)
    rejects(reseal_blob(*split(data), 1, bytes(b)), r"tensors\[1\]: stored value 0 is all zero bytes")
    rejects(data[:-64], "run past")


def test_sparse_encodings_refuse_other_dtypes_and_bad_bools():
    pytest.importorskip("ml_dtypes")
    for dtype in ("int4", "uint2", "string"):
        rejects(rewrite(sparse_file(0.7), lambda h: h["tensors"][1].update(dtype=dtype)),
                rf"tensors\[1\].dtype: dtype \"{dtype}\" cannot use encoding \"bitmask-sparse\"")
        rejects(rewrite(sparse_file(0.99), lambda h: h["tensors"][1].update(dtype=dtype)),
                rf"tensors\[1\].dtype: dtype \"{dtype}\" cannot use encoding \"coo-sparse\"")
    arr = np.zeros(100, bool)
    arr[[5, 50]] = True
    data = dumps_eim(packed_graph({"b": arr}))
    header, blobs, blob = blob_of(data, 0)
    assert encodings_of(data) == [("coo-sparse", 2)] and blob[8:] == b"\x01\x01"
    blob[9] = 2
    rejects(reseal_blob(header, blobs, 0, bytes(blob)), r"tensors\[0\]: stored bool value 1 is byte 2, expected 1")


def test_fuzz_sparse_file_only_raises_model_format_errors():
    rng = random.Random(78)
    seed = dumps_eim(packed_graph({"a": sparse_array("float32", (10, 10), 0.7), "b": sparse_array("int16", (200,), 0.99),
                                   "c": sparse_array("float64", (70,), 0.6)}))
    assert [e for e, _ in encodings_of(seed)] == ["bitmask-sparse", "coo-sparse", "bitmask-sparse"]
    for _ in range(200):
        header, blobs = split(seed)
        k = rng.randrange(len(header["tensors"]))
        entry = header["tensors"][k]
        blob = bytearray(blobs[entry["offset"] : entry["offset"] + entry["length"]])
        blob[rng.randrange(len(blob))] = rng.randrange(256)
        try:
            loaded = loads_eim(reseal_blob(header, blobs, k, bytes(blob)))
        except ModelFormatError:
            continue
        dumps_eim(loaded)
