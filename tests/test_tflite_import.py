"""TFLite import: real models from PyPI wheels run on the cpu backend and match LiteRT.

Float models must agree within 1e-3 of the output's scale; quantized outputs within one
quantization step. LiteRT runs the original file (default resolver, one thread), edgeinfer
the imported graph.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgeinfer
from edgeinfer.errors import EdgeInferError, ModelFormatError, UnsupportedOpError

import models

litert = pytest.importorskip("ai_edge_litert.interpreter")

# shapes for inputs whose signature has -1 dims
DYNAMIC_SHAPES = {"oww_tfl_melspectrogram": [(1, 1280)], "oww_tfl_embedding": [(1, 76, 32, 1)]}


def _feeds(details, name: str, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k, d in enumerate(details):
        shape = DYNAMIC_SHAPES.get(name, [None] * len(details))[k] or tuple(int(v) for v in d["shape"])
        dtype = np.dtype(d["dtype"])
        if dtype.kind == "f":
            out.append(rng.uniform(-1, 1, shape).astype(dtype))
        elif dtype == np.bool_:
            out.append(rng.integers(0, 2, shape).astype(bool))
        else:
            info = np.iinfo(dtype)
            out.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype))
    return out


def litert_run(path, feeds: list[np.ndarray]) -> tuple[list[dict], list[np.ndarray]]:
    interp = litert.Interpreter(model_path=str(path), num_threads=1)
    for d, x in zip(interp.get_input_details(), feeds):
        if tuple(d["shape"]) != x.shape:
            interp.resize_tensor_input(d["index"], x.shape)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), feeds):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    details = interp.get_output_details()
    return details, [interp.get_tensor(d["index"]).copy() for d in details]


def _input_details(path) -> list[dict]:
    return litert.Interpreter(model_path=str(path)).get_input_details()


@pytest.mark.parametrize("name", sorted(models.TFLITE_MODELS))
def test_real_model_matches_litert(name):
    path = models.tflite_model_path(name)
    graph = edgeinfer.load(path)
    in_details = _input_details(path)
    assert [v.dtype for v in graph.inputs] == [np.dtype(d["dtype"]).name for d in in_details]
    feeds = _feeds(in_details, name)
    out_details, expected = litert_run(path, feeds)
    sess = edgeinfer.Session(graph, threads=1)
    got = sess.run({v.name: x for v, x in zip(graph.inputs, feeds)})
    assert len(got) == len(expected)
    for v, d, want in zip(graph.outputs, out_details, expected):
        have = got[v.name]
        assert have.shape == want.shape, (v.name, have.shape, want.shape)
        assert have.dtype == want.dtype, (v.name, have.dtype, want.dtype)
        if want.dtype.kind == "f":
            scale = max(float(np.abs(want).max()), 1e-6)
            err = float(np.abs(have.astype(np.float64) - want).max()) / scale
            assert err <= 1e-3, f"{name} output {v.name}: error {err:.2e} of scale {scale:.3g}"
        else:  # quantized: one quantization step
            step = np.abs(have.astype(np.int64) - want.astype(np.int64)).max()
            assert step <= 1, f"{name} output {v.name}: off by {step} quantization steps"


def test_signature_keeps_nhwc_and_names():
    path = models.tflite_model_path("fd_short_range")
    graph = edgeinfer.load(path)
    details = _input_details(path)
    assert [v.name for v in graph.inputs] == [d["name"] for d in details]
    assert graph.inputs[0].shape == (1, 128, 128, 3)


def test_transposes_cancel_between_convolutions():
    graph = edgeinfer.load(models.tflite_model_path("fd_short_range"))
    hist = graph.op_histogram()
    assert hist.get("Conv", 0) > 20
    # one Transpose into the network and one per output branch, not two per conv
    assert hist.get("Transpose", 0) <= 1 + 2 * len(graph.outputs), hist


def test_quantized_model_keeps_qdq():
    graph = edgeinfer.load(models.tflite_model_path("mww_okay_nabu"))
    hist = graph.op_histogram()
    assert hist.get("DequantizeLinear", 0) > 0 and hist.get("QuantizeLinear", 0) > 0
    assert graph.inputs[0].dtype == "int8"


def test_unsupported_custom_ops_are_listed(tmp_path):
    path = models._member_path("mediapipe", "0.10.14",
                               "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite")
    with pytest.raises(UnsupportedOpError) as e:
        edgeinfer.load(path)
    for op in ("Landmarks2TransformMatrix", "TransformLandmarks", "TransformTensorBilinear"):
        assert op in str(e.value)


def test_truncated_file_is_a_format_error(tmp_path):
    data = models.tflite_model_path("fd_short_range").read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFormatError):
        edgeinfer.load(bad)
    tiny = tmp_path / "tiny.tflite"
    tiny.write_bytes(b"\x18\x00\x00\x00TFL3")
    with pytest.raises(EdgeInferError):
        edgeinfer.load(tiny)


# ------------------------------------------------------------------------------------ fuzz
_FUZZ_IMPORT = textwrap.dedent("""
    import json, resource, sys, time, traceback
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    from edgeinfer.errors import EdgeInferError
    from edgeinfer.converters.tflite_import import import_tflite
    from tflite_fuzz import mutate, structure_positions
    report = {"ok": 0, "errors": 0, "other": [], "slowest": 0.0}
    for path, seed, count in json.loads(sys.argv[1]):
        good = open(path, "rb").read()
        structure = structure_positions(good, path)
        rng = np.random.default_rng(seed)
        for i in range(count):
            data = mutate(good, structure, rng, edits=4)
            start = time.perf_counter()
            try:
                graph = import_tflite(data)
                graph.validate()
                report["ok"] += 1
            except EdgeInferError:
                report["errors"] += 1
            except BaseException:
                report["other"].append(f"{path} #{i}: {traceback.format_exc(limit=8)}")
            report["slowest"] = max(report["slowest"], time.perf_counter() - start)
    print(json.dumps(report))
""")



def test_fuzz_mutated_models_import_or_fail_cleanly():
    """200 mutated or truncated copies of each test model go through the whole import in a
    subprocess (memory-limited): each is a valid graph or an EdgeInferError, never a crash."""
    jobs = [[str(models.tflite_model_path(n)), 7000 + i, 200] for i, n in enumerate(sorted(models.TFLITE_MODELS))]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _FUZZ_IMPORT, json.dumps(jobs), str(root / "tests")],
                          capture_output=True, text=True,
                          timeout=900, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["other"], "\n".join(report["other"][:5])
    assert report["ok"] + report["errors"] == 200 * len(jobs)
    assert report["errors"] > 0 and report["slowest"] < 30


# ---------------------------------------------------------------------- MediaPipe pooling with indices
def _pool_argmax_model(h: int, w: int, c: int, k: tuple, s: tuple, padding: int) -> bytes:
    """A .tflite with MaxPoolingWithArgmax2D -> MaxUnpooling2D (MediaPipe's custom ops), built
    with LiteRT's schema classes; custom options are TfLitePoolParams."""
    import struct

    import flatbuffers
    from ai_edge_litert import schema_py_generated as sc

    def out_size(n, kk, ss):
        return -(-n // ss) if padding == 1 else (n - kk) // ss + 1

    oh, ow = out_size(h, k[0], s[0]), out_size(w, k[1], s[1])
    params = list(struct.pack("<10i", padding, s[1], s[0], k[1], k[0], 0, 0, 0, 0, 0))
    tensors = []
    for name, shape in [("x", [1, h, w, c]), ("pooled", [1, oh, ow, c]), ("indices", [1, oh, ow, c]),
                        ("unpooled", [1, h, w, c])]:
        t = sc.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, sc.TensorType.FLOAT32, 0
        tensors.append(t)
    codes = []
    for name in ("MaxPoolingWithArgmax2D", "MaxUnpooling2D"):
        oc = sc.OperatorCodeT()
        oc.builtinCode = oc.deprecatedBuiltinCode = sc.BuiltinOperator.CUSTOM
        oc.customCode, oc.version = name, 1
        codes.append(oc)
    ops = []
    for code, ins, outs in ((0, [0], [1, 2]), (1, [1, 2], [3])):
        op = sc.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs, op.customOptions = code, ins, outs, params
        ops.append(op)
    sg = sc.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = tensors, [0], [2, 3], ops, "main"
    m = sc.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, codes, [sg], [sc.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _pool_argmax_reference(x: np.ndarray, k: tuple, s: tuple, same: bool):
    _, h, w, c = x.shape
    oh = -(-h // s[0]) if same else (h - k[0]) // s[0] + 1
    ow = -(-w // s[1]) if same else (w - k[1]) // s[1] + 1
    top = max((oh - 1) * s[0] + k[0] - h, 0) // 2 if same else 0
    left = max((ow - 1) * s[1] + k[1] - w, 0) // 2 if same else 0
    idx = np.zeros((1, oh, ow, c), np.float32)
    unpooled = np.zeros_like(x)
    for i in range(oh):
        for j in range(ow):
            for ch in range(c):
                best, where = -np.inf, (0, 0)
                for dy in range(k[0]):
                    for dx in range(k[1]):
                        y, xx = i * s[0] - top + dy, j * s[1] - left + dx
                        if 0 <= y < h and 0 <= xx < w and x[0, y, xx, ch] > best:
                            best, where = x[0, y, xx, ch], (dy, dx)
                idx[0, i, j, ch] = where[0] * k[1] + where[1]
                unpooled[0, i * s[0] - top + where[0], j * s[1] - left + where[1], ch] = best
    return idx, unpooled


@pytest.mark.parametrize("h,w,k,s,padding", [(8, 8, (2, 2), (2, 2), 1), (7, 9, (3, 2), (2, 2), 1),
                                              (9, 8, (3, 3), (3, 2), 2)])
def test_mediapipe_pooling_with_indices(tmp_path, h, w, k, s, padding):
    path = tmp_path / "argmax.tflite"
    path.write_bytes(_pool_argmax_model(h, w, 3, k, s, padding))
    graph = edgeinfer.load(path)
    x = np.random.default_rng(0).standard_normal((1, h, w, 3)).astype(np.float32)
    got = edgeinfer.Session(graph).run({"x": x})
    want_idx, want_unpooled = _pool_argmax_reference(x, k, s, padding == 1)
    np.testing.assert_array_equal(got["indices"], want_idx)
    np.testing.assert_array_equal(got["unpooled"], want_unpooled)


def test_pool_params_are_checked(tmp_path):
    data = bytearray(_pool_argmax_model(8, 8, 3, (2, 2), (2, 2), 1))
    params = bytes(np.array([1, 2, 2, 2, 2, 0, 0, 0, 0, 0], "<i4").tobytes())
    bad = bytes(np.array([1, 0, 2, 2, 2, 0, 0, 0, 0, 0], "<i4").tobytes())  # stride_w = 0
    at = data.find(params)
    assert at > 0
    data[at:at + len(bad)] = bad
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="stride_w"):
        edgeinfer.load(path)
