"""Static int8 quantization (first step of issue 7): calibration on the cpu backend, explicit QDQ
that every backend runs, accuracy kept on the bundled digits CNN."""
import json
from pathlib import Path

import numpy as np
import pytest

import edgeinfer
from edgeinfer import InputError
from edgeinfer.converters.quantize import (Range, activation_params, calibrate, observed_tensors, prepare, quantize,
                                           weight_params)

EXAMPLES = Path(edgeinfer.__file__).parent / "examples"


@pytest.fixture(scope="module")
def digits():
    g = edgeinfer.load(EXAMPLES / "digits_cnn.onnx")
    d = np.load(EXAMPLES / "digits_test.npz")
    x, y = d["images"], d["labels"]
    # calibration and evaluation never share an image
    calib = [{"image": x[i:i + 10]} for i in range(0, 100, 10)]
    return g, calib, x[100:], y[100:]


@pytest.fixture(scope="module")
def quantized(digits):
    g, calib, _, _ = digits
    seen = []
    q = quantize(g, calib, progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert seen[-1] == ("calibrate", 10, 10)
    return q


def _accuracy(graph, x, y, backend="cpu"):
    return float((edgeinfer.Session(graph, backend=backend).run({"image": x})["logits"].argmax(1) == y).mean())


def test_graph_shape_after_quantization(quantized):
    ops = quantized.op_histogram()
    # 3 activations (2 Conv inputs, the Gemm input) quantized once each; 3 weights and 3 biases
    # read through DequantizeLinear; BatchNormalization folded away before quantizing
    assert ops["QuantizeLinear"] == 3 and ops["DequantizeLinear"] == 9
    assert "BatchNormalization" not in ops
    read = [quantized.constants.get(n.inputs[0]) for n in quantized.nodes if n.op_type == "DequantizeLinear"]
    consts = [v for v in read if v is not None]
    assert sum(v.dtype == np.int8 and v.ndim == 4 for v in consts) == 2  # the conv weights
    assert sum(v.dtype == np.int8 and v.ndim == 2 for v in consts) == 1  # the Gemm weight
    assert sum(v.dtype == np.int32 for v in consts) == 3  # the biases


def test_int8_accuracy_within_half_a_point_on_every_backend(digits, quantized):
    g, _, x, y = digits
    fp32 = _accuracy(g, x, y)
    for backend in ("cpu", "ort", "openvino", "litert"):
        acc = _accuracy(quantized, x, y, backend)
        assert acc >= fp32 - 0.005, (backend, acc, fp32)


def test_exported_qdq_model_is_smaller_and_loads_in_onnxruntime(tmp_path, digits, quantized):
    import onnxruntime as ort

    g, _, x, y = digits
    edgeinfer.save(quantized, tmp_path / "q.onnx")
    assert (tmp_path / "q.onnx").stat().st_size < 0.6 * (EXAMPLES / "digits_cnn.onnx").stat().st_size
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})[0]
    want = edgeinfer.Session(quantized).run({"image": x})["logits"]
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99


def test_prepare_folds_batch_norm_and_keeps_results(digits):
    g, _, x, _ = digits
    p = prepare(g)
    assert "BatchNormalization" not in p.op_histogram()
    np.testing.assert_allclose(edgeinfer.Session(p).run({"image": x})["logits"],
                               edgeinfer.Session(g).run({"image": x})["logits"], rtol=1e-4, atol=1e-4)
    assert observed_tensors(p) == ["image", "relu1", "flat"]


def test_calibration_sees_the_true_extremes(digits):
    g, calib, _, _ = digits
    p = prepare(g)
    ranges = calibrate(p, calib)
    images = np.concatenate([c["image"] for c in calib])
    assert ranges["image"].lo == pytest.approx(float(images.min()))
    assert ranges["image"].hi == pytest.approx(float(images.max()))
    assert ranges["relu1"].lo >= 0 and ranges["relu1"].batches == len(calib)


def test_quantization_parameters():
    scale, zp = activation_params(Range(-1.0, 3.0), "uint8")
    scale = float(scale)
    assert zp.dtype == np.uint8 and scale == pytest.approx(4.0 / 255)
    assert -int(zp) * scale == pytest.approx(-1.0, abs=scale)  # the low end maps to 0
    scale, zp = activation_params(Range(0.5, 2.0), "int8")  # the range is widened to hold 0
    assert zp.dtype == np.int8 and int(zp) == -128 and float(scale) == pytest.approx(2.0 / 255)
    w = np.random.default_rng(0).standard_normal((6, 4, 3, 3)).astype(np.float32)
    q, s = weight_params(w, 0)
    assert q.dtype == np.int8 and s.shape == (6,) and np.abs(q).max() <= 127
    assert np.all(np.abs(q * s.reshape(-1, 1, 1, 1) - w) <= s.reshape(-1, 1, 1, 1) / 2 + 1e-7)


def test_bad_arguments_are_named(digits):
    g, calib, _, _ = digits
    with pytest.raises(InputError, match="method"):
        calibrate(prepare(g), calib, method="kl")
    with pytest.raises(InputError, match="no calibration feeds"):
        calibrate(prepare(g), [])
    with pytest.raises(InputError, match="no tensor"):
        calibrate(prepare(g), calib, tensors=["nope"])


def test_histogram_keeps_every_count_while_its_range_grows():
    from edgeinfer.converters.calibration import Histogram

    rng = np.random.default_rng(0)
    h = Histogram()
    batches = [rng.normal(0, s, 5000).astype(np.float32) for s in (0.1, 1.0, 5.0)] + [np.array([-40.0, 60.0])]
    for b in batches:
        h.add(b)
    allv = np.concatenate(batches)
    assert h.counts.sum() == allv.size
    assert h.lo <= allv.min() and h.hi > allv.max()
    e = h.edges()
    # the histogram's own cumulative counts agree with the data's at every edge (bins only merge)
    for edge in e[:: 256]:
        assert abs(np.searchsorted(np.sort(allv), edge) - h.counts[: np.searchsorted(e, edge)].sum()) <= 1


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_histogram_methods_clip_outliers(method):
    from edgeinfer.converters.calibration import Histogram, choose

    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(0, 1, 1_000_000)).astype(np.float32)  # a ReLU-like activation
    x[0] = 30.0  # one outlier: clipping it costs less squared error than the coarser steps keeping it
    h = Histogram()
    for part in np.array_split(x, 10):
        h.add(part)
    lo, hi = choose(h, method)
    assert lo == pytest.approx(0.0, abs=0.05)
    assert 2.5 < hi < 20, (method, hi)  # min/max would say 80; |N(0,1)| reaches ~4.4 here


@pytest.mark.parametrize("method, drop", [("percentile", 0.005), ("mse", 0.005), ("entropy", 0.03)])
def test_every_method_keeps_digits_accuracy(digits, method, drop):
    """KL clips hardest (it cuts some conv activations to a fraction of their range), so it gets
    a wider margin; the other methods keep fp32's accuracy."""
    g, calib, x, y = digits
    q = quantize(g, calib, method=method)
    assert _accuracy(q, x, y) >= _accuracy(g, x, y) - drop


@pytest.mark.parametrize("mode, kw, stored, drop", [
    ("fp16", {}, "float16", 0.005), ("bf16", {}, "bfloat16", 0.005),
    ("weight_only", {"weights": "int8"}, "int8", 0.005), ("weight_only", {"weights": "int4"}, "int4", 0.01),
])
def test_modes_without_calibration_keep_accuracy_on_every_backend(digits, mode, kw, stored, drop):
    from edgeinfer import dtypes as _dt

    g, _, x, y = digits
    q = quantize(g, [], mode=mode, **kw)
    ops = q.op_histogram()
    if mode == "weight_only":
        assert ops["DequantizeLinear"] == 3 and "QuantizeLinear" not in ops  # the 3 weights only
    else:
        assert ops["Cast"] >= 3  # one widening Cast per weight (and per large enough bias)
    read = [n.inputs[0] for n in q.nodes if n.op_type in ("Cast", "DequantizeLinear")]
    assert {_dt.from_numpy(q.constants[r].dtype) for r in read} == {stored}
    fp32 = _accuracy(g, x, y)
    backends = ("cpu", "ort", "litert") if stored == "int4" else ("cpu", "ort", "openvino", "litert")
    for backend in backends:
        assert _accuracy(q, x, y, backend) >= fp32 - drop, backend


@pytest.mark.parametrize("mode, kw, most", [
    ("fp16", {}, 0.52), ("weight_only", {"weights": "int8"}, 0.27), ("weight_only", {"weights": "int4", "block_size": 64}, 0.15),
])
def test_exported_onnx_shrinks(mode, kw, most):
    from edgeinfer.converters.onnx_export import export_onnx
    from edgeinfer.graph import Graph, Node, ValueInfo

    w = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    g = Graph(inputs=[ValueInfo("x", "float32", (4, 512))], outputs=[ValueInfo("y", "float32", (4, 512))],
              nodes=[Node("MatMul", ("x", "w"), ("y",))], constants={"w": w}, opset={"": 21})
    q = quantize(g, [], mode=mode, **kw)
    size = lambda graph: len(export_onnx(graph).SerializeToString())  # noqa: E731
    assert size(q) <= most * size(g)
    x = np.random.default_rng(1).standard_normal((4, 512)).astype(np.float32)
    ref, got = (x @ w).ravel(), edgeinfer.Session(q).run({"x": x})["y"].ravel()
    cosine = float(ref @ got / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cosine >= {"fp16": 0.99999, "int8": 0.9999, "int4": 0.99}[kw.get("weights", "fp16")], cosine


def test_cli_quantize_static_weight_only_and_errors(tmp_path, digits):
    from click.testing import CliRunner

    from edgeinfer.cli import cli

    g, calib, x, y = digits
    np.savez(tmp_path / "calib.npz", image=np.concatenate([c["image"] for c in calib]))
    src = str(EXAMPLES / "digits_cnn.onnx")
    run = CliRunner().invoke
    res = run(cli, ["quantize", src, str(tmp_path / "q.onnx"), "--calib", str(tmp_path / "calib.npz"),
                    "--method", "percentile"])
    assert res.exit_code == 0, res.output
    assert "3 of 3 layers quantized, 3 activation quantizers, 9 DequantizeLinear" in res.output
    q = edgeinfer.load(tmp_path / "q.onnx")
    assert _accuracy(q, x, y) >= _accuracy(g, x, y) - 0.005
    res = run(cli, ["quantize", src, str(tmp_path / "w.eim"), "--mode", "weight_only"])
    assert res.exit_code == 0 and edgeinfer.load(tmp_path / "w.eim").op_histogram()["DequantizeLinear"] == 3
    # a folder of .npz files works too
    (tmp_path / "calib_dir").mkdir()
    np.savez(tmp_path / "calib_dir" / "a.npz", image=x[:20])
    res = run(cli, ["quantize", src, str(tmp_path / "q2.eim"), "--calib", str(tmp_path / "calib_dir")])
    assert res.exit_code == 0, res.output
    for args, needle in ((["quantize", src, str(tmp_path / "e.onnx")], "needs calibration inputs"),
                         (["quantize", src, src, "--mode", "fp16"], "is the input file")):
        res = run(cli, args)
        assert res.exit_code == 1 and needle in res.output, res.output
    np.savez(tmp_path / "bad.npz", img=x[:5])
    res = run(cli, ["quantize", src, str(tmp_path / "e.onnx"), "--calib", str(tmp_path / "bad.npz")])
    assert res.exit_code == 1 and "no array for input(s) ['image']" in res.output


def test_cli_accuracy_aware_with_a_user_eval_script(tmp_path, digits):
    from click.testing import CliRunner

    from edgeinfer.cli import cli

    g, calib, x, y = digits
    np.savez(tmp_path / "calib.npz", image=np.concatenate([c["image"] for c in calib]))
    np.savez(tmp_path / "held_out.npz", x=x, y=y)
    script = tmp_path / "score.py"
    script.write_text(
        "import numpy as np\n"
        f"_d = np.load({str(tmp_path / 'held_out.npz')!r})\n"
        "def evaluate(session):\n"
        "    return float((session.run({'image': _d['x']})['logits'].argmax(1) == _d['y']).mean())\n")
    src = str(EXAMPLES / "digits_cnn.onnx")
    res = CliRunner().invoke(cli, ["quantize", src, str(tmp_path / "q.onnx"), "--calib", str(tmp_path / "calib.npz"),
                                   "--eval", str(script), "--max-drop", "0.005"])
    assert res.exit_code == 0, res.output
    assert "within --max-drop 0.005" in res.output and "NOT within" not in res.output
    # the report: per-layer error and the backend's explanation, as HTML and JSON
    res = CliRunner().invoke(cli, ["quantize", src, str(tmp_path / "r.onnx"), "--calib", str(tmp_path / "calib.npz"),
                                   "--report", str(tmp_path / "report.html"), "--report-backends", "ort"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert {r["node"] for r in report["layers"] if r.get("precision") == "int8"} >= {"conv1", "conv2"}, report["layers"]
    assert report["backends"]["ort"]["status"] == "ok" and report["backends"]["ort"]["sentences"]
    assert "<html" in (tmp_path / "report.html").read_text().lower()
    info = json.loads(edgeinfer.load(tmp_path / "q.onnx").metadata["edgeinfer.quantization"])
    assert info["accuracy_fp32"] - info["accuracy"] <= 0.005 and info["within_budget"]
    bad = tmp_path / "bad.py"
    bad.write_text("def score(session):\n    return 1.0\n")
    res = CliRunner().invoke(cli, ["quantize", src, str(tmp_path / "r.onnx"), "--calib", str(tmp_path / "calib.npz"),
                                   "--eval", str(bad)])
    assert res.exit_code == 1 and "defines no evaluate(session)" in res.output, res.output


def test_accuracy_aware_returns_sensitive_layers_to_float_first(digits):
    g, calib, x, _ = digits
    ref = edgeinfer.Session(g).run({"image": x[:100]})["logits"]

    def closeness(session):  # a strict score: any quantization error costs
        got = session.run({"image": x[:100]})["logits"]
        return -float(np.abs(got - ref).max())

    q = quantize(g, calib, accuracy=closeness, max_drop=1e-5)
    info = json.loads(q.metadata["edgeinfer.quantization"])
    trials = info["trials"]
    assert trials[0]["float_layers"] == [] and len(trials) >= 2
    # each trial returns one more layer to float, most sensitive first
    for a, b in zip(trials[1:], trials[2:]):
        assert b["float_layers"][:-1] == a["float_layers"]
    sens = {x["node"]: x["sensitivity"] for x in info["layers"]}
    first = trials[1]["float_layers"][0]
    assert sens[first] == max(sens.values())
    kept = [x for x in info["layers"] if x["precision"] == "float"]
    assert kept and all(x["reason"].startswith("accuracy-aware") for x in kept)
    assert info["within_budget"] == (info["accuracy_fp32"] - info["accuracy"] <= 1e-5)
    # a generous budget keeps everything int8 after one scoring
    q = quantize(g, calib, accuracy=closeness, max_drop=10.0)
    info = json.loads(q.metadata["edgeinfer.quantization"])
    assert len(info["trials"]) == 1 and all(x["precision"] == "int8" for x in info["layers"])


def test_int16_activations_run_in_onnx_runtimes_and_litert_export_says_why_not(digits):
    from edgeinfer.errors import EdgeInferError

    g, calib, x, y = digits
    q = quantize(g, calib, activations="int16")
    zps = [q.constants[n.inputs[2]] for n in q.nodes if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.int16 and int(z) == 0 for z in zps)
    ref = edgeinfer.Session(g).run({"image": x})["logits"]
    for backend in ("cpu", "ort", "openvino"):
        got = edgeinfer.Session(q, backend=backend).run({"image": x})["logits"]
        assert np.abs(got - ref).max() <= 0.02 * np.abs(ref).max(), backend
    with pytest.raises(EdgeInferError, match="int16"):
        edgeinfer.Session(q, backend="litert").run({"image": x})


def test_quantized_outputs_become_integer_kernels_in_onnxruntime_and_litert(digits):
    from edgeinfer.converters.quantize_report import backend_analysis

    g, calib, x, y = digits
    q = quantize(g, calib, outputs=True)
    ops = q.op_histogram()
    # the two convs' outputs are quantized after their Relu, which the QuantizeLinear applies
    assert ops["QuantizeLinear"] == 4 and "Relu" not in ops
    fp32 = _accuracy(g, x, y)
    for backend in ("cpu", "ort", "openvino", "litert"):
        assert _accuracy(q, x, y, backend) >= fp32 - 0.005, backend
    facts = {b: e["facts"] for b, e in backend_analysis(g, q, ("ort", "litert"), timing=False)["backends"].items()}
    assert facts["ort"]["integer_kernels"].get("QLinearConv") == 2
    assert facts["litert"]["int8_ops"].get("CONV_2D") == 2
