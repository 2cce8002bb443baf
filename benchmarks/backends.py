"""Every backend on every real model of the test suite, with `edgeinfer bench`, and whether
`auto` picks a backend within 5% of the fastest.

For each model (the ONNX light zoo, PP-OCRv4, the wheel models, then the TFLite models) one
:func:`edgeinfer.bench.bench` run measures cpu, ort, openvino, litert and auto, one thread each,
every (model, backend) in its own worker process, timed runs interleaved across them. Inputs are
the ones the tests use. ``auto`` decides afresh in its worker (``cache=False``) and is then
timed like the others, so "within 5% of the fastest" compares medians taken in the same rounds
(at least 15 rounds and 1 s of timed runs per backend).
Refusals are recorded with the runtime's own reason.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from the environment (the script re-executes
itself without them) because users don't set them; the BLAS kernel is in the manifest.

    python benchmarks/backends.py [--models a,b] [--runs 15] [--quick] [--no-tflite]

Writes benchmarks/results/backends.json and .png and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from _env import HERE  # noqa: E402  (re-executes without OPENBLAS_*; paths)

import numpy as np  # noqa: E402

sys.path.insert(0, str(HERE))

BACKENDS = ("cpu", "ort", "openvino", "litert")
WITHIN = 1.05  # auto's median / the fastest backend's median
TOLERANCE = 1e-3  # max abs diff vs cpu relative to max(1, max|cpu|)


def onnx_models() -> list[str]:
    from cpu_vs_peers import all_models

    return all_models()


def tflite_models() -> list[str]:
    from models import TFLITE_MODELS

    return sorted(TFLITE_MODELS)


def model_and_feeds(name: str) -> tuple[Path, dict[str, np.ndarray]]:
    import models

    path = None
    if name in getattr(models, "TFLITE_MODELS", {}):
        path = models.tflite_model_path(name)
    elif name in models.MODELS and name not in getattr(models, "WHEEL_MODELS", {}) and name not in models.LIGHT_MODELS:
        candidate = models.model_path(name)
        path = candidate if candidate.suffix == ".tflite" else None
    if path is not None:  # a TFLite model: the inputs the TFLite tests use
        import edgeinfer
        from ai_edge_litert.interpreter import Interpreter
        from test_tflite_import import _feeds

        feeds = _feeds(Interpreter(model_path=str(path)).get_input_details(), name)
        graph = edgeinfer.load(path)
        return path, {v.name: x for v, x in zip(graph.inputs, feeds)}
    from cpu_vs_peers import model_and_feeds as onnx_model_and_feeds

    return onnx_model_and_feeds(name)


def measure(name: str, runs: int, warmup: int, min_seconds: float) -> dict:
    from edgeinfer.bench import bench

    path, feeds = model_and_feeds(name)
    report = bench([path], [*BACKENDS, "auto"], threads=1, runs=runs, min_seconds=min_seconds, warmup=warmup,
                   inputs=feeds, profile=False,
                   options={"auto": {"cache": False, "candidates": list(BACKENDS)}})
    row: dict = {"model": name, "file": path.name, "manifest": report["manifest"], "backends": {}}
    for r in report["results"]:
        entry = {k: r[k] for k in ("status", "reason", "load_ms", "first_inference_ms", "peak_rss_mb",
                                   "rss_delta_mb", "max_abs_diff_vs_cpu", "rel_diff_vs_cpu", "version")}
        entry["median_ms"] = r["latency_ms"]["median"] if r["latency_ms"] else None
        entry["p90_ms"] = r["latency_ms"]["p90"] if r["latency_ms"] else None
        if r["backend"] == "auto" and r["auto"]:
            entry["chosen"] = r["auto"]["chosen"]
            entry["decision"] = r["auto"]["reason"]
        row["backends"][r["backend"]] = entry
    timed = {b: e["median_ms"] for b, e in row["backends"].items() if b != "auto" and e["median_ms"]}
    if timed:
        fastest = min(timed, key=timed.get)
        row["fastest"], row["fastest_ms"] = fastest, timed[fastest]
        auto = row["backends"].get("auto", {})
        if auto.get("median_ms"):
            row["auto_vs_fastest"] = auto["median_ms"] / timed[fastest]
            row["auto_within_5pct"] = row["auto_vs_fastest"] <= WITHIN
    bad = {b: e["rel_diff_vs_cpu"] for b, e in row["backends"].items()
           if e["rel_diff_vs_cpu"] is not None and e["rel_diff_vs_cpu"] > TOLERANCE}
    row["mismatches"] = bad
    return row


def summarize(rows: list[dict]) -> dict:
    out: dict = {"models": len(rows), "per_backend": {}}
    for b in (*BACKENDS, "auto"):
        st = [r["backends"].get(b, {}).get("status") for r in rows]
        out["per_backend"][b] = {"ok": st.count("ok"), "refused": sum(s not in ("ok", None) for s in st),
                                 "within_tolerance": sum(1 for r in rows if b in r["backends"]
                                                         and r["backends"][b]["status"] == "ok"
                                                         and b not in r["mismatches"])}
    judged = [r for r in rows if "auto_within_5pct" in r]
    out["auto_within_5pct"] = sum(r["auto_within_5pct"] for r in judged)
    out["auto_judged"] = len(judged)
    out["auto_worst"] = max(((r["model"], r["auto_vs_fastest"]) for r in judged), key=lambda t: t[1], default=None)
    out["fastest_counts"] = {}
    for r in rows:
        if "fastest" in r:
            out["fastest_counts"][r["fastest"]] = out["fastest_counts"].get(r["fastest"], 0) + 1
    return out


def plot(rows: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "fastest_ms" in r]
    names = [r["model"] for r in rows]
    kinds = [*BACKENDS, "auto"]
    fig, ax = plt.subplots(figsize=(max(10, 0.45 * len(rows)), 5.5))
    width = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        vals = [(r["backends"].get(kind, {}).get("median_ms") or float("nan")) / r["fastest_ms"] for r in rows]
        ax.bar(np.arange(len(rows)) + (k - (len(kinds) - 1) / 2) * width, vals, width, label=kind)
    ax.axhline(WITHIN, color="k", lw=0.8, ls="--", label="auto target (1.05)")
    ax.set_yscale("log")
    ax.set_ylabel("median latency / fastest backend's (log)")
    ax.set_xticks(np.arange(len(rows)))
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    ax.legend(fontsize=8, ncol=6)
    ax.set_title("edgeinfer bench: every backend, one thread, interleaved medians")
    fig.tight_layout()
    tmp = target.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, target)


def markdown(rows: list[dict]) -> str:
    head = "| model | " + " | ".join(f"{b} ms" for b in BACKENDS) + " | auto picks | auto / fastest |"
    lines = [head, "|" + "---|" * (len(BACKENDS) + 3)]
    for r in rows:
        cells = []
        for b in BACKENDS:
            e = r["backends"].get(b, {})
            if e.get("median_ms") is not None:
                mark = "" if b not in r["mismatches"] else " (diff!)"
                cells.append(f"{e['median_ms']:.3g}{mark}")
            else:
                cells.append(f"{e.get('status', '-')}")
        auto = r["backends"].get("auto", {})
        ratio = f"{r['auto_vs_fastest']:.2f}" if "auto_vs_fastest" in r else "-"
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {auto.get('chosen', '-')} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated model names (default: all)")
    ap.add_argument("--runs", type=int, default=None, help="timed rounds per model (default 15, --quick 5)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-tflite", action="store_true", help="skip the TFLite models")
    ap.add_argument("--out", default=str(HERE / "results" / "backends.json"))
    args = ap.parse_args()
    runs = args.runs or (5 if args.quick else 15)
    warmup = 1 if args.quick else 2
    # at least this long in timed runs per backend: sub-millisecond models get hundreds of runs,
    # so a 5% comparison is not decided by a few scheduler hiccups
    min_seconds = 0.2 if args.quick else 1.0
    names = args.models.split(",") if args.models else onnx_models() + ([] if args.no_tflite else tflite_models())
    rows, t0 = [], time.time()
    for i, name in enumerate(names):
        try:
            row = measure(name, runs, warmup, min_seconds)
        except Exception as e:  # noqa: BLE001  one model's setup failing is its row
            row = {"model": name, "error": f"{type(e).__name__}: {e}"[:400], "backends": {}, "mismatches": {}}
        rows.append(row)
        b = row["backends"]
        meds = "  ".join(f"{k} {v['median_ms']:.3g}" if v.get("median_ms") else f"{k} {v.get('status')}"
                         for k, v in b.items())
        print(f"[{i + 1}/{len(names)} {time.time() - t0:5.0f}s] {name:<28} {meds}  "
              f"auto={b.get('auto', {}).get('chosen')} x{row.get('auto_vs_fastest', float('nan')):.2f}", flush=True)
    manifest = next((r.pop("manifest") for r in rows if "manifest" in r), None)
    for r in rows:
        r.pop("manifest", None)
    result = {"manifest": manifest, "settings": {"runs": runs, "min_seconds": min_seconds, "warmup": warmup, "threads": 1,
                                                 "within": WITHIN, "tolerance": TOLERANCE},
              "summary": summarize(rows), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o)
                              else str(o)))
    os.replace(tmp, out)
    try:
        plot(rows, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
    print(json.dumps(result["summary"], indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
