"""The `edgeinfer bench` renderers on a hand-built report: table, JSON, CSV, PNG and HTML."""
import csv
import json
import math
import os
import re
import sys

import numpy as np
import pytest

from edgeinfer import bench_report
from edgeinfer.bench_report import CSV_COLUMNS, format_table, write_csv, write_html, write_json, write_png
from edgeinfer.errors import MissingDependencyError

HOSTILE_NAME = "<b>x&y</b>.onnx"
TOP_NODE = "/backbone/conv_17/Conv"


def _ok(model, name, backend, samples, *, profile=None, threads=1):
    s = np.asarray(samples, np.float64)
    median = float(np.median(s))
    return {
        "model": model, "model_name": name, "backend": backend, "status": "ok", "reason": None,
        "version": f"{backend} 1.0", "precision": "f32", "threads": threads,
        "load_ms": 31.25, "first_inference_ms": 4.5, "warmup_runs": 3, "count": int(s.size),
        "duration_s": float(s.sum() / 1e3),
        "latency_ms": {"min": float(s.min()), "mean": float(s.mean()), "median": median, "std": float(s.std()),
                       "p90": float(np.percentile(s, 90)), "p95": float(np.percentile(s, 95)),
                       "p99": float(np.percentile(s, 99)), "max": float(s.max())},
        "throughput_fps": 1e3 / median, "batch": 1,
        "peak_rss_mb": 210.5, "rss_before_mb": 200.0, "rss_delta_mb": 10.5,
        "samples_ms": [float(v) for v in s], "max_abs_diff_vs_cpu": None if backend == "cpu" else 1.5e-6,
        "profile": profile, "auto": None,
    }


def _profile():
    nodes = [{"node": f"/backbone/conv_{i}/Conv", "op_type": "Conv", "total_ms": 1.0 + i, "mean_ms": (1.0 + i) / 10,
              "calls": 10} for i in range(18)]
    nodes.append({"node": "/head/Relu", "op_type": "Relu", "total_ms": 0.5, "mean_ms": 0.05, "calls": 10})
    total = sum(n["total_ms"] for n in nodes)
    return {"runs": 10, "total_ms": total, "nodes": nodes,
            "op_types": {"Conv": {"nodes": 18, "total_ms": total - 0.5, "share": (total - 0.5) / total},
                         "Relu": {"nodes": 1, "total_ms": 0.5, "share": 0.5 / total}}}


def make_report():
    """Two models x three backends: a tiny model (~0.05 ms), a 12 ms one with a cpu profile,
    one failed row (openvino on the big model) with null numbers, one unavailable row with none."""
    rng = np.random.default_rng(0)
    tiny = "/models/" + HOSTILE_NAME
    big = "/models/resnet.onnx"
    failed = {"model": big, "model_name": "resnet.onnx", "backend": "openvino", "status": "failed",
              "reason": "compile_model: unsupported op <Foo>", "version": "openvino 2024.4", "precision": "f32",
              "threads": 1, "load_ms": None, "latency_ms": None, "samples_ms": None, "profile": None}
    unavailable = {"model": tiny, "model_name": HOSTILE_NAME, "backend": "litert", "status": "unavailable",
                   "reason": "ai-edge-litert is not installed"}  # numbers absent altogether
    return {
        "schema": "edgeinfer.bench/1", "created": "2026-11-24T23:30:00Z",
        "command": ["edgeinfer", "bench", tiny, big],
        "settings": {"runs": 50, "min_seconds": None, "warmup": 3, "threads": 1, "batch": 1, "seed": 0,
                     "interleaved": True},
        "manifest": {"cpu": {"model": "Intel(R) Xeon(R) Platinum 8480+", "flags": ["avx2", "avx512f"],
                             "logical_cores": 16, "physical_cores": 8},
                     "os": "Linux-6.8", "python": "3.11.9", "machine": "x86_64",
                     "libraries": {"edgeinfer": "0.1.0", "numpy": "2.1.0", "onnxruntime": "1.20.0",
                                   "openvino": None, "ai-edge-litert": None, "cupy": None},
                     "blas": [{"internal_api": "openblas", "version": "0.3.27", "architecture": "SkylakeX",
                               "num_threads": 1}],
                     "env": {"OPENBLAS_CORETYPE": None, "OMP_NUM_THREADS": "1"}},
        "results": [
            _ok(tiny, HOSTILE_NAME, "cpu", 0.05 + 0.002 * rng.random(50)),
            _ok(tiny, HOSTILE_NAME, "ort", 0.02 + 0.001 * rng.random(50)),
            unavailable,
            _ok(big, "resnet.onnx", "cpu", 12.0 + rng.random(50), profile=_profile()),
            _ok(big, "resnet.onnx", "ort", 6.0 + 0.5 * rng.random(50), threads=None),
            failed,
        ],
    }


def only(report, model_name):
    return {**report, "results": [r for r in report["results"] if r["model_name"] == model_name]}


def header_line(table):
    return next(line for line in table.splitlines() if line.startswith("Backend"))


# ----------------------------------------------------------------------------- table
def test_table_has_the_benchmark_app_columns():
    table = format_table(make_report())
    head = header_line(table)
    for column in ["Backend", "Precision", "Threads", "Load (ms)", "First inference (ms)", "Count", "Median",
                   "Average", "Min", "Max", "P90", "P99", "Throughput (FPS)", "Peak RSS (MB)", "RSS delta (MB)",
                   "x fastest"]:
        assert column in head, column
    assert "Intel(R) Xeon(R) Platinum 8480+" in table.splitlines()[0]


def test_table_picks_the_unit_from_the_data():
    report = make_report()
    tiny = format_table(only(report, HOSTILE_NAME))
    assert "Median (us)" in header_line(tiny) and "(ms)" not in header_line(tiny).split("Count")[1]
    cpu_row = next(line for line in tiny.splitlines() if line.startswith("cpu "))
    median_us = report["results"][0]["latency_ms"]["median"] * 1e3
    assert f"{median_us:.2f}" in cpu_row  # ~50.xx us, not 0.050 ms
    big = format_table(only(report, "resnet.onnx"))
    assert "Median (ms)" in header_line(big) and "(us)" not in big
    slow = only(report, "resnet.onnx")
    for r in slow["results"]:
        if r.get("latency_ms"):
            r["latency_ms"] = {k: v * 1000 for k, v in r["latency_ms"].items()}
    assert "Median (s)" in header_line(format_table(slow))


def test_table_shows_status_and_reason_in_place_of_numbers():
    table = format_table(make_report())
    failed = next(line for line in table.splitlines() if line.startswith("openvino"))
    assert "failed: compile_model: unsupported op <Foo>" in failed
    assert "31.25" not in failed
    unavailable = next(line for line in table.splitlines() if line.startswith("litert"))
    assert "unavailable: ai-edge-litert is not installed" in unavailable


def test_table_groups_by_model_with_speedup_over_the_fastest():
    lines = format_table(make_report()).splitlines()
    headings = [i for i, line in enumerate(lines) if line.startswith("model: ")]
    assert len(headings) == 2 and HOSTILE_NAME in lines[headings[0]] and "resnet.onnx" in lines[headings[1]]
    big = lines[headings[1] + 1 :]
    cpu, ort = big[0], big[1]
    assert cpu.startswith("cpu") and ort.startswith("ort")
    assert ort.endswith("1.00x")
    ratio = float(cpu.rsplit(None, 1)[1].rstrip("x"))
    assert 1.8 < ratio < 2.3  # ~12.5 ms over ~6.25 ms
    # one model alone: no speedup column
    assert "x fastest" not in format_table(only(make_report(), "resnet.onnx"))


def test_table_strips_terminal_control_characters():
    report = make_report()
    report["results"][5]["reason"] = "boom\x1b[2J\nsecond line\x9b"
    table = format_table(report)
    assert "\x1b" not in table and "\x9b" not in table
    assert "failed: boom [2J second line" in table


def test_table_of_an_empty_report():
    assert "no results" in format_table({"schema": "edgeinfer.bench/1", "results": []})


# ----------------------------------------------------------------------------- JSON and CSV
def test_json_round_trips_and_nan_becomes_null(tmp_path):
    report = make_report()
    report["results"][0]["latency_ms"]["std"] = float("nan")
    path = tmp_path / "bench.json"
    write_json(report, path)
    back = json.loads(path.read_text("utf-8"))
    assert back["results"][0]["latency_ms"]["std"] is None
    assert back["results"][3]["profile"]["nodes"][0]["node"] == "/backbone/conv_0/Conv"
    assert back["results"][1]["samples_ms"] == report["results"][1]["samples_ms"]


def test_csv_has_one_row_per_result_with_exact_numbers(tmp_path):
    report = make_report()
    path = tmp_path / "bench.csv"
    write_csv(report, path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    for column in ["model", "backend", "status", "reason", "precision", "threads", "load_ms", "first_inference_ms",
                   "count", "latency_min_ms", "latency_median_ms", "latency_p99_ms", "latency_max_ms",
                   "throughput_fps", "peak_rss_mb", "rss_delta_mb", "version"]:
        assert column in CSV_COLUMNS
    assert len(rows) == len(report["results"])
    for row, r in zip(rows, report["results"]):
        assert row["model"] == r["model"] and row["backend"] == r["backend"] and row["status"] == r["status"]
        if r["status"] == "ok":
            for key in bench_report.LATENCY_KEYS:
                assert float(row[f"latency_{key}_ms"]) == r["latency_ms"][key]  # exact, not rounded
            assert int(row["count"]) == 50
            assert float(row["throughput_fps"]) == r["throughput_fps"]
            assert float(row["load_ms"]) == 31.25
        else:
            assert row["reason"] == r["reason"]
            assert row["latency_median_ms"] == "" and row["load_ms"] == "" and row["throughput_fps"] == ""
    assert rows[4]["threads"] == ""  # threads null: empty cell
    assert rows[0]["model"] == "/models/" + HOSTILE_NAME


# ----------------------------------------------------------------------------- PNG
def test_png_is_a_real_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    write_png(make_report(), path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 600 and height >= 400


def test_png_handles_dollar_signs_and_nothing_to_plot(tmp_path):
    pytest.importorskip("matplotlib")
    report = make_report()
    report["manifest"]["cpu"]["model"] = "$weird$ cpu \\frac{"
    for r in report["results"]:
        r["model_name"] = "a$b$c.onnx"
    write_png(report, tmp_path / "a.png")
    failed_only = {**report, "results": [r for r in report["results"] if r["status"] != "ok"]}
    write_png(failed_only, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_png_without_matplotlib_names_the_install(tmp_path, monkeypatch):
    for name in ["matplotlib", "matplotlib.figure", "matplotlib.patches", "matplotlib.backends.backend_agg"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match="pip install matplotlib"):
        write_png(make_report(), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- HTML
@pytest.fixture
def page(tmp_path):
    path = tmp_path / "bench.html"
    write_html(make_report(), path)
    return path.read_text("utf-8")


def test_html_is_self_contained(page):
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "default-src 'none'" in page


def test_html_escapes_user_strings(page):
    assert "<b>x&y</b>" not in page
    assert html_escaped(HOSTILE_NAME) in page
    assert "unsupported op &lt;Foo&gt;" in page


def html_escaped(s):
    import html

    return html.escape(s, quote=True)


def test_html_has_the_sections(page):
    assert page.count("<svg") == 1 and "</svg>" in page
    assert page.count("<rect") == 4  # one box per ok result with samples
    assert "Intel(R) Xeon(R) Platinum 8480+" in page and "SkylakeX" in page and "OMP_NUM_THREADS" in page
    assert "interleaved" in page  # settings
    assert "Median (us)" in page  # results table, one unit for the whole report
    assert "Median latency per model" in page and "1.00x" in page


def test_html_profile_shows_top_nodes_and_op_types(page):
    assert TOP_NODE in page  # the slowest node
    section = page.split("Per-layer profile", 1)[1]
    assert section.index(TOP_NODE) < section.index("/backbone/conv_16/Conv")  # sorted by time
    assert "Top 15 of 19 nodes" in section
    assert "/backbone/conv_2/Conv<" not in section  # the 16th..19th are cut
    assert "/head/Relu" not in section
    ops = section.split("Time per op type", 1)[1]
    assert ops.index("Conv") < ops.index("Relu")
    total = sum(1.0 + i for i in range(18)) + 0.5
    assert f"{100 * 0.5 / total:.1f}%" in ops


def test_html_with_nothing_ok_still_renders(tmp_path):
    report = make_report()
    report["results"] = [r for r in report["results"] if r["status"] != "ok"]
    write_html(report, tmp_path / "x.html")
    text = (tmp_path / "x.html").read_text("utf-8")
    assert "No successful results to plot" in text and "<svg" not in text


def test_svg_log_axis_when_spread_is_wide(tmp_path):
    wide = make_report()  # 0.02 ms to 13 ms: > 20x
    assert "(log)" in bench_report._svg_boxplot(wide["results"], "us", 1e3)
    narrow = only(make_report(), "resnet.onnx")  # 6 to 13 ms
    assert "(log)" not in bench_report._svg_boxplot(narrow["results"], "ms", 1.0)


# ----------------------------------------------------------------------------- atomic writes
WRITERS = [write_json, write_csv, write_html, write_png]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__)
def test_writes_replace_an_existing_file_and_leave_no_temp(tmp_path, writer):
    if writer is write_png:
        pytest.importorskip("matplotlib")
    path = tmp_path / "out.file"
    path.write_bytes(b"old content")
    link_target = tmp_path / "elsewhere.txt"
    link_target.write_bytes(b"keep me")
    os.symlink(link_target, tmp_path / "link.file")
    writer(make_report(), path)
    writer(make_report(), str(tmp_path / "link.file"))
    assert path.read_bytes() != b"old content" and path.stat().st_size > 100
    assert link_target.read_bytes() == b"keep me"  # the symlink is replaced, not written through
    assert not (tmp_path / "link.file").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.txt", "link.file", "out.file"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "bench.json"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(bench_report.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_json(make_report(), path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_speedups_ignore_failed_and_zero_medians():
    report = make_report()
    ratios = bench_report._speedups(only(report, "resnet.onnx")["results"])
    assert len(ratios) == 2 and min(ratios.values()) == 1.0
    assert all(math.isfinite(v) for v in ratios.values())


def test_sparse_and_odd_results_render_everywhere(tmp_path):
    """Nulls where numbers go, junk samples and profile entries, a missing status: no writer fails."""
    report = make_report()
    odd = report["results"][0]
    odd["latency_ms"] = None
    odd["samples_ms"] = [0.05, None, float("nan"), 0.06, "x"]
    odd["throughput_fps"] = float("inf")
    report["results"][3]["profile"]["nodes"].append("not a dict")
    report["results"][3]["profile"]["op_types"]["Weird"] = None
    report["results"].append({"model": "/m/z.onnx", "backend": "cpu"})  # no status, no model_name
    table = format_table(report)
    row = next(line for line in table.splitlines() if line.startswith("cpu ") and " 50 " in line)
    assert row.split()[6:12] == ["-"] * 6  # no latency numbers: dashes, not a crash
    assert "unknown" in table and "z.onnx" in table
    write_html(report, tmp_path / "x.html")
    write_csv(report, tmp_path / "x.csv")
    write_json(report, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text())["results"][0]["throughput_fps"] is None
    pytest.importorskip("matplotlib")
    write_png(report, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
