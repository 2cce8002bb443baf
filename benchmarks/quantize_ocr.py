"""Quantized PP-OCRv4 against fp32 and against ONNX Runtime's own tools: size, accuracy and
speed measured together, in one run.

**rec** (text recognition). From the raw ``ch_PP-OCRv4_rec_infer.onnx``, with no manual
preparation:

* edgeinfer static int8 for each calibration method (minmax, percentile, mse, entropy), with
  cross-layer equalization, on 48 rendered calibration lines (tests/ocr_lines.py);
* edgeinfer static int8, mse, with bias correction;
* edgeinfer static int8, mse, accuracy-aware: scored on 100 more calibration-split lines (never
  the test lines), ``max_drop=0.001`` (strict, so that it has layers to return to float);
* edgeinfer static int8, mse, with each layer's output quantized too (``outputs=True``, the form
  ORT and the TFLite export turn into integer kernels), plain and accuracy-aware
  (``max_drop=0.003``);
* edgeinfer dynamic int8, weight-only int8, fp16 and bf16 weights;
* ONNX Runtime's ``quantize_static`` (after its documented ``quant_pre_process``; per-channel
  QDQ, uint8 activations, int8 weights, MinMax on the same 48 lines) and ``quantize_dynamic``,
  the baselines users have today.

Character accuracy on 150 rendered test lines that calibration never saw (PaddleOCR batching,
uncapped widths, greedy CTC with the model's own ``character`` table) on the cpu backend, ORT
and OpenVINO. Sizes of the ``.onnx`` and ``.eim``. Latency: every model on cpu, ORT, OpenVINO
(f32 hint: fp32 stays fp32) and LiteRT with :func:`edgeinfer.bench.bench` (one process per
model and runtime, interleaved rounds in random order, one thread) at [1, 3, 48, 320]; each
model's fastest runtime is compared with the fp32 model's fastest.

**det** (DBNet text detection): static int8 (mse, equalized) on 8 rendered pages
(tests/ocr_pages.py); probability maps binarized at 0.3 against fp32's (IoU) on 8 test pages;
latency at [1, 3, 736, 736] on the same runtimes.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from the environment (the script re-executes
itself without them); the BLAS kernel and CPU flags are in the manifest.

    python benchmarks/quantize_ocr.py [--quick] [--seconds 3] [--part rec|det|all]

Writes benchmarks/results/quantize_ocr.json and .png and prints the README tables.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _env import HERE  # noqa: E402  (re-executes without OPENBLAS_*; paths)

import numpy as np  # noqa: E402

RESULT = HERE / "results" / "quantize_ocr.json"
RUNTIMES = ("cpu", "ort", "openvino", "litert")
ACC_RUNTIMES = ("cpu", "ort", "openvino")
N_CALIB, N_VAL, N_TEST = 48, 100, 150
MAX_DROP = 0.001  # the accuracy-aware row's budget on the validation lines: strict, so it has work to do


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _progress(label):
    last = [-1]

    def report(stage, done, total):
        tenth = int(10 * done / total) if total else 0
        if tenth != last[0]:
            last[0] = tenth
            log(f"  {label}: {stage} {done}/{total}")
    return report


# ---------------------------------------------------------------------------- rec
def rec_feeds(lines, batch_size=8):
    from ocr_lines import batch

    order = sorted(range(len(lines)), key=lambda i: lines[i][1].shape[1] / lines[i][1].shape[0])
    return [{"x": batch([lines[i][1] for i in order[s:s + batch_size]])} for s in range(0, len(order), batch_size)]


def rec_accuracy_fn(lines, chars):
    from ocr_lines import evaluate

    def accuracy(session) -> float:
        name, out = session.inputs[0].name, session.outputs[0].name
        return evaluate(lambda x: session.run({name: x})[out], lines, chars)["char_accuracy"]
    return accuracy


def build_rec(work: Path, quick: bool) -> dict[str, dict]:
    import edgeinfer
    from converters.quantize import quantize
    from models import model_path
    from ocr_lines import charset, make_lines

    src = model_path("ppocr_rec")
    chars = charset(src)
    g = edgeinfer.load(src)
    calib_lines = make_lines(N_CALIB + N_VAL, split="calib")
    feeds = rec_feeds(calib_lines[:N_CALIB])
    val = rec_accuracy_fn(calib_lines[N_CALIB:], chars)
    variants: dict[str, dict] = {"fp32": {"graph": g, "maker": "original", "seconds": 0.0}}
    methods = ("mse",) if quick else ("minmax", "percentile", "mse", "entropy")
    for m in methods:
        t = time.perf_counter()
        q = quantize(g, feeds, method=m, progress=_progress(f"static {m}"))
        variants[f"int8 {m}"] = {"graph": q, "maker": "edgeinfer", "seconds": time.perf_counter() - t}
        log(f"rec int8 {m}: {variants[f'int8 {m}']['seconds']:.1f} s")
    t = time.perf_counter()
    q = quantize(g, feeds, method="mse", bias_correction=True, progress=_progress("bias correction"))
    variants["int8 mse + bias correction"] = {"graph": q, "maker": "edgeinfer", "seconds": time.perf_counter() - t,
                                              "bias_correction": json.loads(q.metadata["edgeinfer.quantization"])
                                              .get("bias_correction")}
    t = time.perf_counter()
    q = quantize(g, feeds, method="mse", accuracy=val, max_drop=MAX_DROP, progress=_progress("accuracy-aware"))
    variants["int8 mse accuracy-aware"] = {"graph": q, "maker": "edgeinfer", "seconds": time.perf_counter() - t}
    info = json.loads(q.metadata["edgeinfer.quantization"])
    variants["int8 mse accuracy-aware"]["float_layers"] = [x["node"] for x in info["layers"] if x["precision"] == "float"]
    variants["int8 mse accuracy-aware"]["validation"] = {"fp32": info["accuracy_fp32"], "int8": info["accuracy"]}
    t = time.perf_counter()
    q = quantize(g, feeds, method="mse", outputs=True, progress=_progress("outputs"))
    variants["int8 mse, outputs quantized"] = {"graph": q, "maker": "edgeinfer", "seconds": time.perf_counter() - t}
    t = time.perf_counter()
    q = quantize(g, feeds, method="mse", outputs=True, accuracy=val, max_drop=0.003,
                 progress=_progress("outputs, accuracy-aware"))
    info = json.loads(q.metadata["edgeinfer.quantization"])
    variants["int8 mse, outputs quantized, accuracy-aware"] = {
        "graph": q, "maker": "edgeinfer", "seconds": time.perf_counter() - t,
        "float_layers": [x["node"] for x in info["layers"] if x["precision"] == "float"],
        "validation": {"fp32": info["accuracy_fp32"], "int8": info["accuracy"]}}
    for mode in ("dynamic", "weight_only", "fp16", "bf16"):
        t = time.perf_counter()
        label = f"{mode} int8" if mode in ("dynamic", "weight_only") else f"{mode} weights"
        variants[label] = {"graph": quantize(g, mode=mode), "maker": "edgeinfer", "seconds": time.perf_counter() - t}
    for name, v in variants.items():
        _save(v, work / ("rec_" + name.replace(" ", "_")))
    if not quick:
        variants.update(ort_baselines(src, feeds, work))
    return variants


def _save(v: dict, stem: Path) -> None:
    import edgeinfer

    if "graph" in v:
        edgeinfer.save(v["graph"], stem.with_suffix(".onnx"))
        edgeinfer.save(v["graph"], stem.with_suffix(".eim"))
        v["eim_bytes"] = stem.with_suffix(".eim").stat().st_size
    v["onnx"] = str(stem.with_suffix(".onnx"))
    v["onnx_bytes"] = stem.with_suffix(".onnx").stat().st_size


def ort_baselines(src: Path, feeds: list[dict], work: Path) -> dict[str, dict]:
    """ORT's quantize_static (after quant_pre_process, as its docs say) and quantize_dynamic."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    out: dict[str, dict] = {}
    pre = work / "rec_ort_preprocessed.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # sympy is not a dependency
    t = time.perf_counter()
    dst = work / "rec_ort_static.onnx"
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    out["ORT quantize_static"] = {"maker": "onnxruntime", "seconds": time.perf_counter() - t}
    _save(out["ORT quantize_static"], dst.with_suffix(""))
    t = time.perf_counter()
    dst = work / "rec_ort_dynamic.onnx"
    quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
    out["ORT quantize_dynamic"] = {"maker": "onnxruntime", "seconds": time.perf_counter() - t}
    _save(out["ORT quantize_dynamic"], dst.with_suffix(""))
    log("rec ORT baselines built")
    return out


def rec_accuracy(variants: dict[str, dict], n_test: int) -> None:
    import edgeinfer
    from models import model_path
    from ocr_lines import charset, make_lines

    chars = charset(model_path("ppocr_rec"))
    acc = rec_accuracy_fn(make_lines(n_test, split="test"), chars)
    for name, v in variants.items():
        v["accuracy"] = {}
        for rt in ACC_RUNTIMES:
            try:
                sess = edgeinfer.Session(v["onnx"], backend=rt, threads=1)
                v["accuracy"][rt] = acc(sess)
            except Exception as e:  # a runtime that refuses the model: its reason is the result
                v["accuracy"][rt] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        log(f"rec {name}: accuracy {v['accuracy']}")


# ---------------------------------------------------------------------------- det
def build_det(work: Path, n_calib: int) -> dict[str, dict]:
    import edgeinfer
    from converters.quantize import quantize
    from models import model_path
    from ocr_pages import calib_pages, det_inputs

    g = edgeinfer.load(model_path("ppocr_det"))
    name = g.inputs[0].name
    feeds = [{name: x} for x in det_inputs(calib_pages(n_calib))]
    variants = {"fp32": {"graph": g, "maker": "original", "seconds": 0.0}}
    for m in ("minmax", "mse"):
        t = time.perf_counter()
        q = quantize(g, feeds, method=m, progress=_progress(f"det {m}"))
        variants[f"int8 {m}"] = {"graph": q, "maker": "edgeinfer", "seconds": time.perf_counter() - t}
    for k, v in variants.items():
        _save(v, work / ("det_" + k.replace(" ", "_")))
    return variants


def det_iou(variants: dict[str, dict], n_test: int) -> None:
    import edgeinfer
    from ocr_pages import binary_iou, det_inputs, test_pages

    xs = det_inputs(test_pages(n_test))
    ref = None
    maps: dict[str, dict[str, list]] = {}
    for name, v in variants.items():
        maps[name] = {}
        for rt in ACC_RUNTIMES:
            try:
                sess = edgeinfer.Session(v["onnx"], backend=rt, threads=1)
                iname, oname = sess.inputs[0].name, sess.outputs[0].name
                maps[name][rt] = [np.asarray(sess.run({iname: x})[oname]) for x in xs]
            except Exception as e:
                maps[name][rt] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    ref = maps["fp32"]["cpu"]
    for name, v in variants.items():
        v["iou_vs_fp32"] = {}
        for rt, got in maps[name].items():
            if isinstance(got, str):
                v["iou_vs_fp32"][rt] = got
                continue
            ious = [binary_iou(a, b) for a, b in zip(ref, got)]
            v["iou_vs_fp32"][rt] = {"mean": float(np.mean(ious)), "min": float(np.min(ious))}
        log(f"det {name}: IoU vs fp32 {v['iou_vs_fp32']}")


# ---------------------------------------------------------------------------- timing
def time_variants(variants: dict[str, dict], feed: dict, seconds: float) -> dict:
    from edgeinfer.bench import bench

    names = list(variants)
    report = bench([variants[n]["onnx"] for n in names], list(RUNTIMES), threads=1, inputs=feed,
                   min_seconds=seconds, warmup=5, profile=False,
                   progress=lambda msg, frac: None)
    by_path = {variants[n]["onnx"]: n for n in names}
    for r in report["results"]:
        v = variants[by_path[r["model"]]]
        v.setdefault("latency_ms", {})[r["backend"]] = (r["latency_ms"]["median"] if r["status"] == "ok"
                                                        else f"{r['status']}: {(r.get('reason') or '')[:200]}")
    fp32_best = min(x for x in variants["fp32"]["latency_ms"].values() if isinstance(x, float))
    for v in variants.values():
        ok = {k: x for k, x in v["latency_ms"].items() if isinstance(x, float)}
        if ok:
            best = min(ok, key=ok.get)
            v["fastest"] = best
            v["speedup_vs_fp32_fastest"] = fp32_best / ok[best]
    return report["manifest"]


def _plain(variants: dict[str, dict]) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk != "graph"} for k, v in variants.items()}


# ---------------------------------------------------------------------------- output
def markdown(result: dict) -> str:
    lines = []
    rec = result.get("rec")
    if rec:
        lines += ["| PP-OCRv4 rec | made by | .onnx MB | .eim MB | char acc cpu | ORT | OpenVINO | "
                  "fastest runtime | median ms | × fp32 fastest |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in rec.items():
            acc = v.get("accuracy", {})
            cell = lambda x: f"{x:.4f}" if isinstance(x, float) else "fails"  # noqa: E731
            lat = v.get("latency_ms", {}).get(v.get("fastest"), "")
            lines.append(f"| {name} | {v['maker']} | {v['onnx_bytes'] / 1e6:.2f} | "
                         f"{v['eim_bytes'] / 1e6:.2f} | " if "eim_bytes" in v else
                         f"| {name} | {v['maker']} | {v['onnx_bytes'] / 1e6:.2f} | – | ")
            lines[-1] += (f"{cell(acc.get('cpu'))} | {cell(acc.get('ort'))} | {cell(acc.get('openvino'))} | "
                          f"{v.get('fastest', '–')} | {lat:.2f} | {v.get('speedup_vs_fp32_fastest', 0):.2f} |"
                          if isinstance(lat, float) else "– | – | – |")
    det = result.get("det")
    if det:
        lines += ["", "| PP-OCRv4 det | .onnx MB | IoU vs fp32 cpu (min) | ORT | OpenVINO | fastest runtime | "
                  "median ms | × fp32 fastest |", "|---|---|---|---|---|---|---|---|"]
        for name, v in det.items():
            iou = v.get("iou_vs_fp32", {})
            cell = lambda x: f"{x['mean']:.3f} ({x['min']:.3f})" if isinstance(x, dict) else "fails"  # noqa: E731
            lat = v.get("latency_ms", {}).get(v.get("fastest"), float("nan"))
            lines.append(f"| {name} | {v['onnx_bytes'] / 1e6:.2f} | {cell(iou.get('cpu'))} | {cell(iou.get('ort'))} | "
                         f"{cell(iou.get('openvino'))} | {v.get('fastest', '–')} | {lat:.2f} | "
                         f"{v.get('speedup_vs_fp32_fastest', 0):.2f} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = result["rec"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, v in rec.items():
        lat, acc = v.get("latency_ms", {}).get(v.get("fastest")), v.get("accuracy", {}).get("cpu")
        if isinstance(lat, float) and isinstance(acc, float):
            ax.scatter(lat, acc, s=40, color="C0" if v["maker"] == "edgeinfer" else "C3" if v["maker"] == "onnxruntime" else "k")
            k = list(rec).index(name)
            ax.annotate(f"{name} ({v['fastest']})", (lat, acc), fontsize=6, xytext=(5, 6 * (k % 3) - 6),
                        textcoords="offset points")
    ax.set_xlabel("median latency on the model's fastest runtime, ms (1 thread, [1,3,48,320])")
    ax.set_ylabel("character accuracy, 150 test lines")
    shown = [v["accuracy"]["cpu"] for v in rec.values() if isinstance(v.get("accuracy", {}).get("cpu"), float)
             and v["accuracy"]["cpu"] > 0.9]
    ax.set_ylim(min(shown) - 0.002, max(shown) + 0.002)
    ax.axhline(0.988, ls=":", color="grey")
    ax.set_title(f"PP-OCRv4 rec quantized: accuracy vs speed\n{result['manifest']['cpu']['model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="mse only, fewer test lines/pages, 1 s timing")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per (model, runtime)")
    ap.add_argument("--part", choices=("rec", "det", "all"), default="all")
    ap.add_argument("--markdown", action="store_true", help="print the tables (and redraw the plot) from the saved JSON")
    args = ap.parse_args()
    if args.markdown:
        saved = json.loads(RESULT.read_text())
        plot(saved, RESULT.with_suffix(".png"))
        print(markdown(saved))
        return
    seconds = 1.0 if args.quick else args.seconds
    result: dict = {"command": sys.argv, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="edgeinfer-qocr-") as tmp:
        work = Path(tmp)
        if args.part in ("rec", "all"):
            from ocr_lines import make_lines, preprocess

            rec = build_rec(work, args.quick)
            rec_accuracy(rec, 40 if args.quick else N_TEST)
            line = make_lines(1, split="test")[0][1]
            log("timing rec")
            result["manifest"] = time_variants(rec, {"x": preprocess(line)}, seconds)
            result["rec"] = _plain(rec)
        if args.part in ("det", "all"):
            from ocr_pages import det_inputs, test_pages

            det = build_det(work, 4 if args.quick else 8)
            det_iou(det, 3 if args.quick else 8)
            log("timing det")
            x = det_inputs(test_pages(1))[0]
            result["manifest"] = time_variants(det, {det["fp32"]["graph"].inputs[0].name: x}, seconds)
            result["det"] = _plain(det)
    from edgeinfer._files import write_atomic

    out = RESULT if not args.quick else RESULT.with_name("quantize_ocr_quick.json")
    data = json.dumps(result, indent=1, default=str).encode()
    write_atomic(out, lambda f: f.write(data))
    if "rec" in result:
        plot(result, out.with_suffix(".png"))
    print(markdown(result))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
