"""The quantization report (issue 7): per-layer error vs fp32 and why int8 is or is not faster on
each backend, on the bundled digits CNN quantized by converters.quantize."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import edgeinfer
from edgeinfer import InputError
from edgeinfer.backends import available_backends
from edgeinfer.converters.quantize import Range, calibrate, prepare, quantize, quantize_static
from edgeinfer.converters.quantize_report import (build_report, backend_analysis, cpu_int8_support, layer_errors,
                                                  quantization_info, worst_layers, write_html, write_json)

EXAMPLES = Path(edgeinfer.__file__).parent / "examples"


@pytest.fixture(scope="module")
def digits():
    g = edgeinfer.load(EXAMPLES / "digits_cnn.onnx")
    d = np.load(EXAMPLES / "digits_test.npz")
    x = d["images"]
    calib = [{"image": x[i:i + 10]} for i in range(0, 100, 10)]
    evaluation = [{"image": x[i:i + 25]} for i in range(100, 200, 25)]
    return g, calib, evaluation


@pytest.fixture(scope="module")
def quantized(digits):
    g, calib, _ = digits
    return quantize(g, calib, mode="static")


def _needs(backend):
    ok, why = available_backends().get(backend, (False, "not registered"))
    if not ok:
        pytest.skip(f"backend {backend} not available: {why}")


def test_layer_errors_are_finite_and_beat_a_broken_quantization(digits, quantized):
    g, calib, evaluation = digits
    good = layer_errors(g, quantized, evaluation)
    info = {r["node"]: r for r in quantization_info(quantized)["layers"]}
    int8 = [r for r in good if info.get(r["node"], {}).get("precision") == "int8"]
    assert [r["node"] for r in int8] == ["conv1", "conv2", "fc"]  # every quantized layer, in graph order
    for r in int8:
        assert math.isfinite(r["snr_db"]) and r["snr_db"] > 20, r
        assert 0.99 < r["cosine"] <= 1.0 and r["max_abs_error"] > 0
    assert good[0]["elements"] == 100 * 8 * 8 * 8  # conv1: 8 channels of 8x8, summed over all 4 feeds of 25

    # the same rewrite with every activation range 100x too wide: the steps are 100x coarser
    prepared = prepare(g)
    ranges = {k: Range(v.lo * 100, v.hi * 100, v.batches) for k, v in calibrate(prepared, calib).items()}
    bad = {r["node"]: r for r in layer_errors(g, quantize_static(prepared, ranges), evaluation)}
    for r in int8:
        assert r["snr_db"] > bad[r["node"]]["snr_db"] + 10, (r, bad[r["node"]])


def test_worst_layers_rank_what_each_layer_added(digits, quantized):
    g, _, evaluation = digits
    rows = layer_errors(g, quantized, evaluation)
    worst = worst_layers(rows, 2)
    assert len(worst) == 2 and worst[0]["snr_drop_db"] >= worst[1]["snr_drop_db"] > 0
    assert worst[0]["node"] == "conv1"  # quantizing the input and conv1: from exact to ~45 dB
    by_snr = worst_layers(rows, 1, key="snr_db")
    assert by_snr[0]["snr_db"] == min(r["snr_db"] for r in rows)


def test_quantization_info_reads_metadata_or_derives_it(quantized):
    recorded = quantization_info(quantized)  # what converters.quantize wrote
    assert recorded["source"] == "metadata" and recorded["mode"] == "static"
    g = quantized.copy()
    g.metadata.pop("edgeinfer.quantization")  # a QDQ model from elsewhere: read from the graph
    derived = quantization_info(g)
    assert derived["source"] == "graph"
    assert {r["node"]: r["precision"] for r in derived["layers"]} == {"conv1": "int8", "conv2": "int8", "fc": "int8"}
    assert [(r["node"], r["precision"]) for r in recorded["layers"]] == [(r["node"], r["precision"])
                                                                          for r in derived["layers"]]

    g.metadata["edgeinfer.quantization"] = json.dumps({
        "mode": "static", "method": "mse", "activations": "uint8", "weights": "int8",
        "layers": [{"node": "conv1", "op_type": "Conv", "precision": "int8", "reason": None, "sensitivity": 0.001},
                   {"node": "fc", "op_type": "Gemm", "precision": "float", "reason": "excluded by the user",
                    "sensitivity": None}]})
    info = quantization_info(g)
    assert info["source"] == "metadata" and info["method"] == "mse"
    assert info["layers"][1] == {"node": "fc", "op_type": "Gemm", "precision": "float",
                                 "reason": "excluded by the user", "sensitivity": None}
    g.metadata["edgeinfer.quantization"] = "{not json"
    with pytest.raises(InputError, match="edgeinfer.quantization"):
        quantization_info(g)


def test_cpu_sentences_name_the_int8_extension():
    vnni = cpu_int8_support(["avx2", "avx512f", "avx512_vnni"])
    assert vnni["vnni"] and vnni["int8_extensions"] == ["avx512_vnni"] and "VNNI" in vnni["sentences"][0]
    plain = cpu_int8_support(["sse4_2", "avx", "avx2", "fma"])
    assert not plain["vnni"] and "no VNNI" in plain["sentences"][0]
    arm = cpu_int8_support(["neon", "asimd", "asimddp"])
    assert arm["int8_extensions"] == ["asimddp"]


def test_backend_analysis_reads_what_each_runtime_made_of_the_qdq_graph(digits, quantized):
    _needs("ort")
    g, _, evaluation = digits
    out = backend_analysis(g, quantized, ("ort", "openvino", "no_such_backend"), runs=3, inputs=evaluation[0])
    ort = out["backends"]["ort"]
    assert ort["status"] == "ok" and ort["fp32_ms"] > 0 and ort["int8_ms"] > 0
    assert ort["speedup"] == pytest.approx(ort["fp32_ms"] / ort["int8_ms"])
    facts = ort["facts"]
    assert facts["integer_total"] > 0 and "QLinearConv" in facts["integer_kernels"]
    assert any("integer kernel" in s for s in ort["sentences"])
    assert ort["layers"]["conv1"] == "int8 (QLinearConv)"
    assert out["backends"]["no_such_backend"]["status"] == "unavailable"
    assert out["cpu"]["sentences"]
    ov = out["backends"]["openvino"]
    if ov["status"] == "unavailable":
        pytest.skip(f"openvino: {ov['reason']}")
    assert ov["facts"]["compute_int8"], ov["facts"]  # I8/U8 Convolution / FullyConnected layers
    assert any("in int8" in s for s in ov["sentences"])


def test_litert_export_facts_without_timing(digits, quantized):
    _needs("litert")
    g, _, _ = digits
    feed = {"image": np.zeros((1, 1, 8, 8), np.float32)}
    out = backend_analysis(g, quantized, ("litert",), timing=False, inputs=feed)
    lite = out["backends"]["litert"]
    assert lite["int8_ms"] is None and lite["facts"]["quantize"] >= 1
    ops = lite["facts"]["ops"]
    assert ops.get("CONV_2D", 0) + ops.get("DEPTHWISE_CONV_2D", 0) == 2 and ops.get("FULLY_CONNECTED") == 1


def test_html_is_self_contained_and_escapes_names(tmp_path, digits, quantized):
    g, _, evaluation = digits
    hostile = "<script>alert(1)</script>"
    q = quantized.copy()
    q.nodes = [n.replace(name=hostile) if n.name == "conv2" else n for n in q.nodes]
    backends = ("ort",) if available_backends().get("ort", (False,))[0] else ()
    report = build_report(g, q, evaluation, backends=backends, runs=2, accuracy={"fp32": 0.97, "int8": 0.97})
    json.dumps(report, allow_nan=False)  # JSON-safe as returned
    assert any(r["node"] == hostile for r in report["layers"]) and report["summary"]["worst"]
    write_html(report, tmp_path / "r.html")
    write_json(report, tmp_path / "r.json")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<svg" in page and 'class="worst"' in page
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == "edgeinfer.quantize_report/1"


def test_equalization_rescaling_is_not_reported_as_error(digits):
    # cross-layer equalization divides conv1's channels by s_c and multiplies conv2's inputs by
    # s_c: relu1 differs from the float model's by that factor, which is not quantization error
    g, calib, evaluation = digits
    plain = {r["node"]: r for r in layer_errors(g, quantize(g, calib, equalize=False), evaluation)}
    equalized_graph = quantize(g, calib, equalize=True)
    if not json.loads(equalized_graph.metadata["edgeinfer.quantization"]).get("equalized_pairs"):
        pytest.skip("nothing equalized in this model")
    equalized = {r["node"]: r for r in layer_errors(g, equalized_graph, evaluation)}
    for node in ("conv1", "relu1", "conv2"):
        assert equalized[node]["snr_db"] > plain[node]["snr_db"] - 6, (node, equalized[node], plain[node])
