"""edgeinfer's TFLite export and import, timed against LiteRT, ONNX Runtime and OpenVINO.

Two measurements in one run, one thread everywhere:

A. **Export.** Each ONNX model (the nine ONNX "light" models and PP-OCRv4 det/rec/cls at the
   shapes of ``cpu_vs_peers.PPOCR``) is loaded with ``edgeinfer.load`` and written with
   ``export_tflite`` (default layout: rank-4 image inputs exposed NHWC, so the feeds are
   transposed with the report's input permutations). The ``.tflite`` runs in LiteRT
   (``Interpreter(num_threads=1)``, default resolver, so XNNPACK), the ONNX original in ONNX
   Runtime, OpenVINO (f32, one thread, one stream) and edgeinfer's cpu backend. Per model:
   median and min latency per runtime, LiteRT / OpenVINO and LiteRT / ORT, the error of
   LiteRT's outputs against ORT's relative to the output scale (max|d| / max|ref|), the
   TRANSPOSE ops of the export next to the Transpose nodes of the original, the TFLite op
   count, and the export time.
B. **Import.** Every model of ``tests/models.py`` ``TFLITE_MODELS``: the original file in
   LiteRT vs the imported graph (``edgeinfer.load(.tflite)``) on the cpu backend, with the feeds
   of ``tests/test_tflite_import.py``. Per model: median latencies, cpu / LiteRT, and the error:
   relative to the output scale for float outputs, in integer steps for quantized ones.

Timing is that of ``cpu_vs_peers``: warm-up runs, then rounds that run every runtime once in a
rotating order (interleaved, so machine noise hits all alike); median and min per runtime.
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed (importing ``cpu_vs_peers`` re-executes this
script without them) and the BLAS kernel that ran is recorded with threadpoolctl.

    python benchmarks/tflite_vs_peers.py [--models a,b] [--runs 15] [--quick] [--part A|B]
    python benchmarks/tflite_vs_peers.py --markdown   # README tables from the saved JSON

Writes benchmarks/results/tflite_vs_peers.json and .png (two panels) and prints both tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# importing cpu_vs_peers re-executes this script without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE
# and puts tests/ and the repository root on sys.path
import cpu_vs_peers as peers  # noqa: E402

import numpy as np  # noqa: E402

RESULT = HERE / "results" / "tflite_vs_peers.json"
EXPORT_RUNTIMES = ("litert", "ort", "openvino", "cpu")
IMPORT_RUNTIMES = ("litert", "cpu")
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1}
# runs of these are cut to --heavy-runs when it is given (vgg19 alone is ~60 % of part A)
HEAVY = ("vgg19", "zfnet512")


def export_models() -> list[str]:
    """The ONNX models of part A: the light zoo, then PP-OCRv4."""
    from models import LIGHT_MODELS

    return list(LIGHT_MODELS) + list(peers.PPOCR)


def import_models() -> list[str]:
    from models import TFLITE_MODELS

    return sorted(TFLITE_MODELS)


# ---------------------------------------------------------------------- runtimes
def open_litert(path: Path, shapes: list[tuple]):
    """A callable ``run(list of inputs) -> list of outputs`` on LiteRT, one thread.

    The call sets the inputs, invokes and copies the outputs out, as ORT's ``run`` does."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    inputs = interp.get_input_details()
    for d, shape in zip(inputs, shapes):
        if tuple(d["shape"]) != tuple(shape):  # -1 dims in the signature
            interp.resize_tensor_input(d["index"], shape)
    interp.allocate_tensors()
    in_index = [d["index"] for d in inputs]
    out_index = [d["index"] for d in interp.get_output_details()]

    def run(feeds: list[np.ndarray]) -> list[np.ndarray]:
        for i, x in zip(in_index, feeds):
            interp.set_tensor(i, x)
        interp.invoke()
        return [interp.get_tensor(i) for i in out_index]

    run.input_details, run.output_details = inputs, interp.get_output_details()
    return run


def open_openvino(path: Path):
    """OpenVINO on the ONNX file: ``cpu_vs_peers.open_runtime`` with one stream pinned too."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", OPENVINO_CONFIG)
    request = compiled.create_infer_request()
    outs = compiled.outputs

    def run(feeds):
        result = request.infer(feeds)
        return [np.asarray(result[o]) for o in outs]

    return run


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import edgeinfer

    found = {"edgeinfer": edgeinfer.__version__, "numpy": np.__version__}
    for dist in ("onnxruntime", "openvino", "ai-edge-litert", "onnx"):
        try:
            found[dist] = version(dist)
        except Exception:  # not installed: the runtime is reported as failing per model
            found[dist] = None
    return found


def source_state() -> dict:
    """The commit measured, and the files that differed from it (read-only git)."""
    import subprocess

    def git(*args):
        done = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "modified": status.splitlines() if status else []}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------ timing
def time_interleaved(calls: dict, runs: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median and min ms of each zero-argument callable, over ``runs`` rounds that call every
    one once, the first of the round rotating."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    order = list(calls)
    times: dict[str, list[float]] = {k: [] for k in order}
    for i in range(runs):
        for k in order[i % len(order):] + order[:i % len(order)]:
            t0 = time.perf_counter()
            calls[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: {"ms": 1e3 * float(np.median(v)), "min_ms": 1e3 * float(np.min(v))} for k, v in times.items()}


def relative_error(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """max over outputs of max|got - ref| / max|ref|."""
    worst = 0.0
    for a, b in zip(got, ref):
        b = np.asarray(b, np.float64)
        scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-12)
        worst = max(worst, float(np.max(np.abs(np.asarray(a, np.float64) - b))) / scale if b.size else 0.0)
    return worst


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:400]


# ---------------------------------------------------------------- part A: export
def onnx_transposes(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return sum(n.op_type == "Transpose" for n in proto.graph.node)


def measure_export(name: str, runs: int, warmup: int, workdir: Path) -> dict:
    import edgeinfer
    from edgeinfer.converters.tflite_export import export_tflite

    path, feeds = peers.model_and_feeds(name)
    row: dict = {"model": name, "inputs": {k: list(v.shape) for k, v in feeds.items()}, "runs": runs,
                 "onnx_transposes": onnx_transposes(path)}
    runners: dict = {}
    try:
        t0 = time.perf_counter()
        graph = edgeinfer.load(str(path))
        t1 = time.perf_counter()
        report = export_tflite(graph, workdir / f"{name}.tflite", input_shapes={k: v.shape for k, v in feeds.items()})
        t2 = time.perf_counter()
        row.update(load_ms=1e3 * (t1 - t0), export_ms=1e3 * (t2 - t1), transposes=report.transposes,
                   tflite_ops=sum(report.op_counts.values()), op_counts=report.op_counts,
                   transpose_reasons=report.transpose_reasons, size_mb=report.size_bytes / 2**20)
        # LiteRT takes inputs in the exposed layout: logical.transpose(perm)
        lite_feeds = [np.ascontiguousarray(x.transpose(report.inputs.get(k, range(x.ndim)))) for k, x in feeds.items()]
        lite = open_litert(report.path, [x.shape for x in lite_feeds])
        names = [d["name"] for d in lite.input_details]
        if sorted(names) == sorted(feeds):  # the signature keeps the ONNX names; order by them
            lite_feeds = [lite_feeds[list(feeds).index(n)] for n in names]
        out_perms = [report.outputs.get(d["name"]) for d in lite.output_details]

        def litert_logical(outs):  # back to the IR's layout, to compare with ORT
            return [o if p is None else o.transpose(np.argsort(p)) for o, p in zip(outs, out_perms)]

        runners["litert"] = (lambda: lite(lite_feeds), lambda outs: litert_logical(outs))
    except Exception as e:
        row["export_error"] = _error_text(e)
    for k in ("ort", "openvino", "cpu"):
        try:
            run = open_openvino(path) if k == "openvino" else peers.open_runtime(k, path)
            runners[k] = (lambda run=run: run(feeds), lambda outs: outs)
        except Exception as e:
            row[f"{k}_error"] = _error_text(e)
    outputs = {}
    for k in list(runners):
        try:
            call, to_logical = runners[k]
            outputs[k] = to_logical(call())
        except Exception as e:
            row[f"{k}_error"] = _error_text(e)
            del runners[k]
    ref = outputs.get("ort")
    if ref is not None:
        row["max_abs_ref"] = max(float(np.max(np.abs(o))) for o in ref)
        # the light models' weights are ConstantOfShape fills: their logits are all equal and the
        # output is a uniform softmax (0.001), on which the error says little; flag it
        row["ref_constant"] = all(float(np.ptp(o)) == 0.0 for o in ref)
        for k, outs in outputs.items():
            if k == "ort":
                continue
            if [np.shape(a) for a in outs] != [np.shape(b) for b in ref]:
                row[f"{k}_error"] = f"output shapes {[np.shape(a) for a in outs]} vs ORT {[np.shape(b) for b in ref]}"
                continue
            row[f"{k}_rel_err"] = relative_error(outs, ref)
    for k, t in time_interleaved({k: v[0] for k, v in runners.items()}, runs, warmup).items():
        row[f"{k}_ms"], row[f"{k}_min_ms"] = t["ms"], t["min_ms"]
    for other in ("openvino", "ort"):
        if "litert_ms" in row and f"{other}_ms" in row:
            row[f"litert_vs_{other}"] = row["litert_ms"] / row[f"{other}_ms"]
    return row


# ---------------------------------------------------------------- part B: import
def measure_import(name: str, runs: int, warmup: int) -> dict:
    import edgeinfer
    import models
    from test_tflite_import import DYNAMIC_SHAPES, _feeds

    path = models.tflite_model_path(name)
    row: dict = {"model": name, "runs": runs, "size_mb": path.stat().st_size / 2**20}
    from ai_edge_litert.interpreter import Interpreter

    feeds = _feeds(Interpreter(model_path=str(path)).get_input_details(), name)
    row["inputs"] = [[list(x.shape), x.dtype.name] for x in feeds]
    if name in DYNAMIC_SHAPES:
        row["dynamic_shapes"] = True
    calls, outputs = {}, {}
    try:
        lite = open_litert(path, [x.shape for x in feeds])
        outputs["litert"] = [o.copy() for o in lite(feeds)]
        calls["litert"] = lambda: lite(feeds)
    except Exception as e:
        row["litert_error"] = _error_text(e)
    try:
        t0 = time.perf_counter()
        graph = edgeinfer.load(path)
        row["import_ms"] = 1e3 * (time.perf_counter() - t0)
        row["ops"] = sum(graph.op_histogram().values())
        sess = edgeinfer.Session(graph, threads=1)
        named = {v.name: x for v, x in zip(graph.inputs, feeds)}
        out_names = [v.name for v in graph.outputs]
        outputs["cpu"] = [np.asarray(o) for o in (lambda r: [r[n] for n in out_names])(sess.run(named))]
        calls["cpu"] = lambda: sess.run(named)
    except Exception as e:
        row["cpu_error"] = _error_text(e)
    if len(outputs) == 2:
        got, ref = outputs["cpu"], outputs["litert"]
        float_pairs = [(a, b) for a, b in zip(got, ref) if b.dtype.kind == "f"]
        int_pairs = [(a, b) for a, b in zip(got, ref) if b.dtype.kind != "f"]
        if [a.shape for a in got] != [b.shape for b in ref]:
            row["cpu_error"] = f"output shapes {[a.shape for a in got]} vs LiteRT {[b.shape for b in ref]}"
        else:
            if float_pairs:
                row["cpu_rel_err"] = relative_error(*map(list, zip(*float_pairs)))
            if int_pairs:
                row["cpu_int_steps"] = max(int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
                                           for a, b in int_pairs)
    for k, t in time_interleaved(calls, runs, warmup).items():
        row[f"{k}_ms"], row[f"{k}_min_ms"] = t["ms"], t["min_ms"]
    if "cpu_ms" in row and "litert_ms" in row:
        row["cpu_vs_litert"] = row["cpu_ms"] / row["litert_ms"]
    return row


# ------------------------------------------------------------------------ report
def plot(result: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("A", result.get("export", []), EXPORT_RUNTIMES,
               "A. edgeinfer TFLite export in LiteRT vs the ONNX original (ms, log scale)"),
              ("B", result.get("import", []), IMPORT_RUNTIMES,
               "B. TFLite models: LiteRT on the file vs edgeinfer cpu on the import (ms, log scale)")]
    panels = [p for p in panels if p[1]]
    if not panels:
        return
    width_models = max(len(p[1]) for p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(9, 0.8 * width_models + 2), 5 * len(panels)), squeeze=False)
    labels = {"litert": "LiteRT (XNNPACK)", "ort": "ONNX Runtime", "openvino": "OpenVINO", "cpu": "edgeinfer cpu"}
    for ax, (_, rows, kinds, title) in zip(axes[:, 0], panels):
        x = np.arange(len(rows))
        width = 0.8 / len(kinds)
        for i, k in enumerate(kinds):
            vals = [r.get(f"{k}_ms", np.nan) for r in rows]
            ax.bar(x + (i - (len(kinds) - 1) / 2) * width, vals, width, label=labels[k])
        for j, r in enumerate(rows):  # say so where a runtime has no bar
            missing = [k for k in kinds if f"{k}_ms" not in r]
            if missing:
                ax.annotate("no " + ",".join(missing), (j, 0), xycoords=("data", "axes fraction"),
                            xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7, color="red")
        ax.set_yscale("log")
        ax.set_ylabel("median latency, ms")
        ax.set_title(title)
        ax.set_xticks(x, [r["model"] for r in rows], rotation=30, ha="right")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = result["manifest"]
    fig.suptitle(f"one thread, {m['cpu']}, edgeinfer {m['versions']['edgeinfer']}")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def _cell(v, fmt="{:.1f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "-"


def _err(v) -> str:
    return f"{v:.1e}" if isinstance(v, float) else "-"


def markdown_export(rows: list[dict]) -> str:
    head = ["model", "LiteRT ms", "ORT ms", "OpenVINO ms", "cpu ms", "LiteRT/OV", "LiteRT/ORT",
            "LiteRT err", "TRANSPOSE (ONNX Transpose)", "TFLite ops", "export ms"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        cells = [r["model"]] + [_cell(r.get(f"{k}_ms")) for k in EXPORT_RUNTIMES]
        cells += [_cell(r.get("litert_vs_openvino"), "{:.2f}"), _cell(r.get("litert_vs_ort"), "{:.2f}")]
        cells += [_err(r.get("litert_rel_err")) + (" *" if r.get("ref_constant") else ""),
                  f"{_cell(r.get('transposes'), '{}')} ({r['onnx_transposes']})",
                  _cell(r.get("tflite_ops"), "{}"), _cell(r.get("export_ms"), "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [f"{r['model']}: {k[:-6]} {r[k]}" for r in rows for k in sorted(r) if k.endswith("_error")]
    return "\n".join(lines + ([""] + [f"- failed: {f}" for f in failed] if failed else []))


def markdown_import(rows: list[dict]) -> str:
    head = ["model", "LiteRT ms", "cpu ms", "cpu/LiteRT", "max error"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        errs = []
        if "cpu_rel_err" in r:
            errs.append(_err(r["cpu_rel_err"]))
        if "cpu_int_steps" in r:
            errs.append(f"{r['cpu_int_steps']} step{'s' if r['cpu_int_steps'] != 1 else ''}")
        cells = [r["model"], _cell(r.get("litert_ms"), "{:.2f}"), _cell(r.get("cpu_ms"), "{:.2f}"),
                 _cell(r.get("cpu_vs_litert"), "{:.2f}"), ", ".join(errs) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [f"{r['model']}: {k[:-6]} {r[k]}" for r in rows for k in sorted(r) if k.endswith("_error")]
    return "\n".join(lines + ([""] + [f"- failed: {f}" for f in failed] if failed else []))


def print_markdown(result: dict) -> None:
    m = result["manifest"]
    print(f"One thread; {m['cpu']}; edgeinfer {m['versions']['edgeinfer']}, ONNX Runtime "
          f"{m['versions']['onnxruntime']}, OpenVINO {m['versions']['openvino']}, "
          f"ai-edge-litert {m['versions']['ai-edge-litert']}; median of {m['runs']} interleaved runs.")
    if result.get("export"):
        print("\n**A. edgeinfer's TFLite export in LiteRT vs the ONNX original** (err: max|LiteRT - ORT| / "
              "max|ORT|; TRANSPOSE: ops in the export, Transpose nodes of the ONNX model in brackets)\n")
        print(markdown_export(result["export"]))
        if any(r.get("ref_constant") for r in result["export"]):
            print("\n\\* the output is constant (a uniform softmax: the light models' weights are constant fills), "
                  "so the error checks little there.")
    if result.get("import"):
        print("\n**B. TFLite models: LiteRT on the file vs edgeinfer's cpu backend on the import** (error: "
              "relative to the output scale; quantized outputs in integer steps)\n")
        print(markdown_import(result["import"]))


def summarize(result: dict) -> dict:
    exp, imp = result.get("export", []), result.get("import", [])
    out = {}
    for key in ("litert_vs_openvino", "litert_vs_ort"):
        vals = [r[key] for r in exp if key in r]
        out[f"export_geomean_{key}"] = peers.geomean(vals)
    vals = [r["cpu_vs_litert"] for r in imp if "cpu_vs_litert" in r]
    out["import_geomean_cpu_vs_litert"] = peers.geomean(vals)
    errs = [r["litert_rel_err"] for r in exp if "litert_rel_err" in r]
    out["export_worst_litert_rel_err"] = max(errs) if errs else None
    out["failures"] = sorted({r["model"] for r in exp + imp if any(k.endswith("_error") for k in r)})
    return out


# -------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated model names of either part (default: all)")
    ap.add_argument("--part", choices=("A", "B", "AB"), default="AB", help="export (A), import (B) or both")
    ap.add_argument("--runs", type=int, default=None, help="timed rounds per model (default 15, --quick 5)")
    ap.add_argument("--heavy-runs", type=int, default=None,
                    help=f"timed rounds for {', '.join(HEAVY)} (default: --runs)")
    ap.add_argument("--quick", action="store_true", help="5 rounds, 1 warm-up")
    ap.add_argument("--out", default=str(RESULT))
    ap.add_argument("--replot", action="store_true", help="redraw the chart from the --out JSON and exit")
    ap.add_argument("--markdown", action="store_true", help="print the README tables from the --out JSON and exit")
    args = ap.parse_args()
    out = Path(args.out)
    if args.replot or args.markdown:
        saved = json.loads(out.read_text())
        if args.replot:
            plot(saved, out.with_suffix(".png"))
        if args.markdown:
            print_markdown(saved)
        return
    runs = args.runs or (5 if args.quick else 15)
    heavy_runs = args.heavy_runs or runs
    warmup = 1 if args.quick else 3
    chosen = set(args.models.split(",")) if args.models else None
    part_a = [m for m in export_models() if chosen is None or m in chosen] if "A" in args.part else []
    part_b = [m for m in import_models() if chosen is None or m in chosen] if "B" in args.part else []
    if chosen:
        unknown = chosen - set(export_models()) - set(import_models())
        if unknown:
            ap.error(f"unknown models {sorted(unknown)}; part A has {export_models()}, part B {import_models()}")

    from threadpoolctl import threadpool_info

    start = time.perf_counter()
    result: dict = {"export": [], "import": []}
    with tempfile.TemporaryDirectory() as tmp:
        if part_a:
            print("A. export: LiteRT on edgeinfer's .tflite vs the ONNX original (median ms, one thread)", flush=True)
        for name in part_a:
            t0 = time.perf_counter()
            row = measure_export(name, heavy_runs if name in HEAVY else runs, warmup, Path(tmp))
            result["export"].append(row)
            times = "  ".join(f"{k} {row[f'{k}_ms']:7.2f}" for k in EXPORT_RUNTIMES if f"{k}_ms" in row)
            ratio = f"lite/ov {_cell(row.get('litert_vs_openvino'), '{:.2f}')}"
            err = f"err {_err(row.get('litert_rel_err'))}"
            tr = f"transposes {_cell(row.get('transposes'), '{}')}/{row['onnx_transposes']}"
            print(f"  {name:14s} {times}  {ratio}  {err}  {tr}  [{time.perf_counter() - t0:.0f} s]", flush=True)
            for k in sorted(row):
                if k.endswith("_error"):
                    print(f"    {k}: {row[k]}", flush=True)
    if part_b:
        print("B. import: LiteRT on the .tflite vs edgeinfer cpu on the imported graph (median ms)", flush=True)
    for name in part_b:
        t0 = time.perf_counter()
        row = measure_import(name, runs, warmup)
        result["import"].append(row)
        times = "  ".join(f"{k} {row[f'{k}_ms']:7.2f}" for k in IMPORT_RUNTIMES if f"{k}_ms" in row)
        err = row.get("cpu_int_steps")
        err = f"{err} steps" if err is not None else _err(row.get("cpu_rel_err"))
        print(f"  {name:24s} {times}  cpu/lite {_cell(row.get('cpu_vs_litert'), '{:.2f}')}  err {err}"
              f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
        for k in sorted(row):
            if k.endswith("_error"):
                print(f"    {k}: {row[k]}", flush=True)

    result["manifest"] = {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions(),
        "source": source_state(),
        "blas": [{k: i.get(k) for k in ("internal_api", "version", "architecture", "filepath")}
                 for i in threadpool_info() if i.get("user_api") == "blas"],
        "env_removed": list(peers._UNSET),
        "threads": 1,
        "runs": runs,
        "heavy_runs": {m: heavy_runs for m in HEAVY} if heavy_runs != runs else None,
        "warmup": warmup,
        "quick": args.quick,
        "method": "interleaved rounds (rotating order) after warm-up; median and min per runtime. LiteRT's "
                  "time is set_tensor + invoke + get_tensor (copies out), like ORT's run.",
        "litert_config": "Interpreter(model_path, num_threads=1), default op resolver (XNNPACK delegate)",
        "openvino_config": OPENVINO_CONFIG,
        "ort_config": "CPUExecutionProvider, intra_op 1, inter_op 1",
        "cpu_config": "edgeinfer.Session(path, threads=1) on the ONNX file (A) / on edgeinfer.load(.tflite) (B)",
        "export_config": "export_tflite(edgeinfer.load(onnx), input_shapes=feed shapes), default NHWC inputs",
        "error_metric": "A: max over outputs of max|x - ORT| / max|ORT| (outputs back in the ONNX layout); "
                        "B: same against LiteRT for float outputs, max integer difference for quantized",
        "wall_s": time.perf_counter() - start,
    }
    result["summary"] = summarize(result)
    result = {"manifest": result.pop("manifest"), "summary": result.pop("summary"), **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    print()
    print_markdown(result)
    print("\nsummary:", json.dumps(result["summary"], indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')} in {result['manifest']['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
