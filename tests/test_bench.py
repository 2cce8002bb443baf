"""``edgeinfer bench``: every backend in its own process, interleaved timed runs, one report."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

import edgeinfer  # noqa: E402
from edgeinfer.bench import LATENCY_KEYS, SCHEMA, BenchError, bench  # noqa: E402

DIGITS = Path(edgeinfer.__file__).parent / "examples" / "digits_cnn.onnx"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def report():
    return bench([DIGITS], "cpu,ort,openvino,litert,gpu", threads=1, runs=6, warmup=1, batch=4)


def _rows(report):
    return {(r["model_name"], r["backend"]): r for r in report["results"]}


def test_every_available_backend_is_measured_with_every_field(report):
    from edgeinfer.backends import available_backends

    avail = available_backends()
    assert report["schema"] == SCHEMA
    assert report["settings"]["runs"] == 6 and report["settings"]["interleaved"] is True
    ok = [r for r in report["results"] if r["status"] == "ok"]
    assert {r["backend"] for r in ok} >= {"cpu", "ort", "openvino"}
    for r in ok:
        assert r["count"] == 6 == len(r["samples_ms"])
        lat = r["latency_ms"]
        assert set(lat) == set(LATENCY_KEYS)
        assert lat["min"] <= lat["median"] <= lat["max"] and lat["min"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["min"] == pytest.approx(min(r["samples_ms"]))
        assert r["load_ms"] > 0 and r["first_inference_ms"] > 0 and r["warmup_runs"] == 1
        assert r["batch"] == 4 and r["throughput_fps"] == pytest.approx(4e3 / lat["median"])
        assert r["peak_rss_mb"] > r["rss_before_mb"] > 0 and r["rss_delta_mb"] > 0
        assert r["precision"] == "f32" and r["threads"] == 1 and r["version"]
        assert r["max_abs_diff_vs_cpu"] is not None and r["max_abs_diff_vs_cpu"] <= 1e-3
    # a backend that cannot run here is a row with its reason, not an error
    for r in report["results"]:
        ok_here, why = avail[r["backend"]]
        if not ok_here:
            assert r["status"] == "unavailable" and r["reason"] == why


def test_each_backend_ran_in_its_own_process(report):
    rows = _rows(report)
    # RSS figures are per process: ORT's and OpenVINO's own libraries show in their baselines only
    cpu, ort, ov = (rows[("digits_cnn.onnx", b)] for b in ("cpu", "ort", "openvino"))
    assert cpu["rss_before_mb"] < ort["rss_before_mb"] and cpu["rss_before_mb"] < ov["rss_before_mb"]


def test_cpu_row_carries_the_per_layer_profile(report):
    prof = _rows(report)[("digits_cnn.onnx", "cpu")]["profile"]
    assert prof["runs"] == 5 and prof["nodes"] and prof["total_ms"] > 0
    assert abs(sum(e["share"] for e in prof["op_types"].values()) - 1) < 1e-6
    assert _rows(report)[("digits_cnn.onnx", "ort")]["profile"] is None


def test_machine_manifest(report):
    m = report["manifest"]
    assert m["cpu"]["logical_cores"] >= 1 and m["cpu"]["model"]
    assert m["libraries"]["edgeinfer"] == edgeinfer.__version__ and m["libraries"]["numpy"] == np.__version__
    assert "OPENBLAS_CORETYPE" in m["env"] and m["python"]


def test_two_models_side_by_side_and_auto(tmp_path):
    eim = tmp_path / "digits.eim"
    edgeinfer.save(edgeinfer.load(DIGITS), eim)
    rep = bench([DIGITS, eim], "cpu,auto", threads=1, runs=3, warmup=0, profile=False,
                options={"auto": {"candidates": ["cpu", "ort"], "cache": False, "runs": 3}})
    rows = _rows(rep)
    assert set(rows) == {("digits_cnn.onnx", "cpu"), ("digits_cnn.onnx", "auto"), ("digits.eim", "cpu"),
                         ("digits.eim", "auto")}
    for r in rows.values():
        assert r["status"] == "ok" and r["count"] == 3 and r["profile"] is None
    auto = rows[("digits.eim", "auto")]
    assert auto["auto"]["chosen"] in ("cpu", "ort") and auto["precision"].startswith(auto["auto"]["chosen"])


def test_bad_arguments_are_named():
    with pytest.raises(BenchError, match="unknown backend 'tpu'"):
        bench([DIGITS], "cpu,tpu")
    with pytest.raises(BenchError, match="does not exist"):
        bench(["missing.onnx"], "cpu")
    with pytest.raises(BenchError, match="no input"):
        bench([DIGITS], "cpu", runs=1, inputs={"img": np.zeros((1, 1, 8, 8), np.float32)})
    with pytest.raises(BenchError, match="does not fit"):
        bench([DIGITS], "cpu", runs=1, shapes={"image": (1, 2, 8, 8)})


def test_a_backend_that_fails_is_a_row_not_a_crash(tmp_path):
    rep = bench([DIGITS], "cpu,openvino", runs=2, warmup=0, profile=False,
                options={"openvino": {"device": "NO_SUCH_DEVICE"}})
    rows = _rows(rep)
    assert rows[("digits_cnn.onnx", "cpu")]["status"] == "ok"
    bad = rows[("digits_cnn.onnx", "openvino")]
    assert bad["status"] == "failed" and "NO_SUCH_DEVICE" in bad["reason"] and bad["latency_ms"] is None


def test_cli_writes_every_format_and_the_json_follows_the_documented_schema(tmp_path):
    from click.testing import CliRunner

    from edgeinfer.cli import cli

    out = {k: tmp_path / f"r.{k}" for k in ("json", "csv", "png", "html")}
    res = CliRunner().invoke(cli, ["bench", str(DIGITS), "--backend", "cpu,ort,openvino", "--runs", "3",
                                   "--warmup", "1", "--threads", "1", "--json", str(out["json"]),
                                   "--csv", str(out["csv"]), "--plot", str(out["png"]), "--html", str(out["html"])])
    assert res.exit_code == 0, res.output
    assert "ort" in res.output and "openvino" in res.output
    rep = json.loads(out["json"].read_text())
    assert rep["schema"] == SCHEMA and len(rep["results"]) == 3
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in out["html"].read_text() and out["csv"].read_text().count("\n") >= 4
    # every field of the report is documented in the README's schema section, and the reverse
    text = README.read_text()
    section = text[text.index("<!-- bench-schema -->"): text.index("<!-- /bench-schema -->")]
    documented = set(re.findall(r"^\s*[-*] `([a-z_0-9]+)`", section, re.M))
    actual = set(rep) | set(rep["settings"]) | set(rep["manifest"]) | set(rep["results"][0])
    assert actual == documented, (sorted(actual - documented), sorted(documented - actual))


def test_cli_errors_are_one_line():
    from click.testing import CliRunner

    from edgeinfer.cli import cli

    res = CliRunner().invoke(cli, ["bench", str(DIGITS), "--backend", "nope"])
    assert res.exit_code == 1 and "error:" in res.output and "unknown backend 'nope'" in res.output
    res = CliRunner().invoke(cli, ["bench", str(DIGITS), "--option", "precision=bf16"])
    assert res.exit_code == 1 and "BACKEND.KEY=VALUE" in res.output
