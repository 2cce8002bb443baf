"""The ``auto`` backend: compiles every backend that can run the model, checks each against cpu,
times them, keeps the fastest and says why; the decision is cached per model, shapes and machine."""
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

import edgeinfer  # noqa: E402
from backend_cases import matmul_256  # noqa: E402
from edgeinfer import InputError, Session  # noqa: E402
from models import light_model  # noqa: E402

DIGITS = Path(edgeinfer.__file__).parent / "examples" / "digits_cnn.onnx"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEINFER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _by_backend(report):
    return {(c["backend"], c["variant"]): c for c in report["candidates"]}


def test_auto_picks_the_fastest_checked_backend_on_a_real_model(private_cache):
    path, _ = light_model("squeezenet")
    sess = Session(str(path), backend="auto", threads=1, options={"candidates": ["cpu", "ort", "openvino"]})
    report = sess.backend_report
    rows = _by_backend(report)
    assert set(rows) == {("cpu", "f32"), ("ort", "f32"), ("openvino", "f32")}
    ok = [c for c in report["candidates"] if c["status"] == "ok"]
    assert len(ok) == 3, report
    assert all(c["median_ms"] > 0 and c["compile_ms"] > 0 for c in ok)
    assert rows[("ort", "f32")]["max_abs_err"] <= 1e-3 and rows[("openvino", "f32")]["max_abs_err"] <= 1e-3
    fastest = min(ok, key=lambda c: c["median_ms"])
    assert report["chosen"] == fastest["backend"] and report["cached"] is False
    assert "median" in report["reason"] and report["policy"] == "f32"
    # the session runs on the winner and answers like the cpu backend (on inputs like the ones
    # auto checked with: the zoo's own arange input drives squeezenet's logits so high that
    # OpenVINO 2026.4's softmax returns 1/8 in 8 places, a case no made-up input can foresee)
    x = np.random.default_rng(3).random(sess.inputs[0].shape, dtype=np.float32)
    got = sess.run({sess.inputs[0].name: x})
    want = Session(str(path)).run({sess.inputs[0].name: x})
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)
    # the decision is on disk, one JSON file per (model, shapes, machine, options)
    files = list((private_cache / "auto").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["chosen"] == report["chosen"]


def test_a_second_session_reuses_the_cached_decision(private_cache):
    g, x, _ = matmul_256()
    opts = {"candidates": ["cpu", "ort"], "runs": 3}
    first = Session(g, backend="auto", threads=1, options=opts).backend_report
    second = Session(g, backend="auto", threads=1, options=opts)
    rep = second.backend_report
    assert rep["cached"] is True and rep["chosen"] == first["chosen"]
    assert "cached decision" in rep["reason"]
    assert np.allclose(second.run({"x": x})["y"], Session(g).run({"x": x})["y"], rtol=1e-5, atol=1e-4)
    # other threads, or cache=False, measure afresh
    assert Session(g, backend="auto", threads=2, options=opts).backend_report["cached"] is False
    fresh = Session(g, backend="auto", threads=1, options={**opts, "cache": False}).backend_report
    assert fresh["cached"] is False


def test_reduced_precision_needs_consent_and_is_checked_with_its_own_tolerance():
    g, x, _ = matmul_256()
    # asking openvino for bf16 without consent: excluded, with the reason
    rep = Session(g, backend="auto", threads=1, options={
        "candidates": ["cpu", "openvino"], "backend_options": {"openvino": {"precision": "bf16"}}, "cache": False,
    }).backend_report
    row = _by_backend(rep)[("openvino", "bf16")]
    assert row["status"] == "excluded" and "allow_reduced_precision" in row["reason"]
    assert rep["chosen"] == "cpu"
    # with consent the bf16 variant is a candidate of its own next to f32; a tolerance bf16
    # cannot meet rejects it as a mismatch, naming the error
    rep = Session(g, backend="auto", threads=1, options={
        "candidates": ["cpu", "openvino"], "allow_reduced_precision": True, "reduced_tolerance": 1e-6,
        "cache": False, "runs": 3,
    }).backend_report
    rows = _by_backend(rep)
    assert rows[("openvino", "f32")]["status"] == "ok"
    bf16 = rows[("openvino", "bf16")]
    if bf16["status"] != "mismatch":  # a CPU without bf16 arithmetic computes it in f32
        assert bf16["max_abs_err"] <= 1e-6 * max(1.0, float(np.abs(Session(g).run({"x": x})["y"]).max()))
    else:
        assert "differs from the cpu backend" in bf16["reason"]
    assert rep["policy"] == "reduced precision allowed"


def test_unavailable_and_unsupported_candidates_are_reported_not_raised():
    from edgeinfer.backends import available_backends

    g, _, _ = matmul_256()
    rep = Session(g, backend="auto", threads=1, options={"cache": False, "runs": 3}).backend_report
    rows = {c["backend"]: c for c in rep["candidates"] if c["variant"] in ("f32", "fp32")}
    for name, (ok, why) in available_backends().items():
        if name == "auto":
            assert name not in rows
            continue
        assert name in rows
        if not ok:
            assert rows[name]["status"] == "unavailable" and rows[name]["reason"]
    assert rep["chosen"] in rows and rows[rep["chosen"]]["status"] == "ok"


def test_auto_options_are_checked():
    g, _, _ = matmul_256()
    with pytest.raises(InputError, match="no option"):
        Session(g, backend="auto", options={"candidate": ["cpu"]})
    with pytest.raises(InputError, match="unknown backend"):
        Session(g, backend="auto", options={"candidates": ["cpu", "tpu"]})
    with pytest.raises(InputError, match="auto"):
        Session(g, backend="auto", options={"runs": 0})


def test_named_backend_report_and_auto_with_caller_feeds():
    g, x, _ = matmul_256()
    assert Session(g).backend_report == {"chosen": "cpu", "reason": "named by the caller"}
    rep = Session(g, backend="auto", threads=1, options={"candidates": ["cpu", "ort"], "feeds": {"x": x},
                                                          "runs": 3}).backend_report
    assert rep["cached"] is False and {c["status"] for c in rep["candidates"]} == {"ok"}


def test_auto_with_symbolic_inputs_decides_per_shape():
    sess = Session(str(DIGITS), backend="auto", threads=1,
                   options={"candidates": ["cpu", "ort"], "runs": 3, "cache": False})
    assert sess.backend_report == {}  # nothing compiled before the first run
    for n in (1, 16):
        out = sess.run({"image": np.zeros((n, 1, 8, 8), np.float32)})["logits"]
        assert out.shape == (n, 10)
        assert sess.backend_report["shapes"] == {"image": [n, 1, 8, 8]}


def test_decision_waits_for_real_inputs_when_made_up_ones_fail():
    """A shape input of zeros makes this Reshape fail on cpu: auto decides at the first run,
    on the caller's inputs, and says so."""
    from edgeinfer import Graph, Node, ValueInfo

    g = Graph(inputs=[ValueInfo("x", "float32", (2, 3)), ValueInfo("s", "int64", (1,))],
              outputs=[ValueInfo("y", "float32", None)], nodes=[Node("Reshape", ("x", "s"), ("y",))],
              opset={"": 17})
    sess = Session(g, backend="auto", threads=1, options={"candidates": ["cpu", "ort"], "cache": False, "runs": 3})
    assert sess.backend_report["chosen"] is None and "first run" in sess.backend_report["reason"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = sess.run({"x": x, "s": np.array([6], np.int64)})["y"]
    np.testing.assert_array_equal(y, x.reshape(6))
    rep = sess.backend_report
    assert rep["chosen"] in ("cpu", "ort") and "caller's inputs" in rep["reason"]
    assert {c["status"] for c in rep["candidates"]} == {"ok"}


def test_candidates_are_measured_in_their_own_processes_unless_told_otherwise():
    """Only the winner's runtime is imported into the caller's process (another runtime's
    libraries can slow it down there); isolate=False measures in process."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, edgeinfer\n"
        "from edgeinfer import Graph, Node, ValueInfo\n"
        "g = Graph(inputs=[ValueInfo('x', 'float32', (4, 4))], outputs=[ValueInfo('y', 'float32', (4, 4))],\n"
        "          nodes=[Node('Relu', ('x',), ('y',))], opset={'': 17})\n"
        "s = edgeinfer.Session(g, backend='auto', threads=1,\n"
        "                      options={'candidates': ['cpu', 'ort', 'openvino'], 'cache': False, 'runs': 3})\n"
        "rep = s.backend_report\n"
        "libs = {'ort': 'onnxruntime', 'openvino': 'openvino'}\n"
        "print(rep['chosen'], sorted(n for n, m in libs.items() if m in sys.modules), 'own process' in rep['reason'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    chosen, imported, isolated = out.stdout.split()[0], out.stdout.split("[")[1].split("]")[0], out.stdout.split()[-1]
    loaded = {x.strip(" '") for x in imported.split(",") if x.strip()}
    assert loaded <= {chosen}, out.stdout
    assert isolated == "True"
    g, x, _ = matmul_256()
    rep = Session(g, backend="auto", threads=1, options={"candidates": ["cpu", "openvino"], "cache": False,
                                                          "runs": 3, "isolate": False}).backend_report
    assert "own process" not in rep["reason"] and rep["chosen"] in ("cpu", "openvino")
