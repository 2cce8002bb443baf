"""edgeinfer's cpu backend vs ONNX Runtime on the real models of the test suite.

Single thread, interleaved runs (cpu, ort, cpu, ort, ...) after warm-up, median latency,
plus the max abs difference of the outputs. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed
from the environment (the script re-executes itself without them) because users don't have
them; the BLAS kernel that ran is recorded with threadpoolctl.

    python benchmarks/cpu_vs_ort.py [--runs 15] [--models name,...]

Writes benchmarks/results/cpu_vs_ort.json and prints a Markdown table for the README.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

if any(k in os.environ for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import edgeinfer  # noqa: E402
from models import LIGHT_MODELS, light_input, light_model, model_path  # noqa: E402

PPOCR = {"ppocr_det": (1, 3, 640, 640), "ppocr_rec": (1, 3, 48, 320), "ppocr_cls": (1, 3, 48, 192)}


def feeds_for(name):
    if name in PPOCR:
        return model_path(name), {"x": np.random.default_rng(0).uniform(-1, 1, PPOCR[name]).astype(np.float32)}
    path, _ = light_model(name)
    inp = edgeinfer.load(path).required_inputs()[0]
    return path, {inp.name: light_input(tuple(d if isinstance(d, int) else 1 for d in inp.shape))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--models", default=",".join(LIGHT_MODELS + list(PPOCR)))
    args = ap.parse_args()
    import onnxruntime as ort
    from threadpoolctl import threadpool_info

    rows = []
    for name in args.models.split(","):
        path, feeds = feeds_for(name)
        t0 = time.perf_counter()
        sess = edgeinfer.Session(str(path), threads=1)
        sess.run(feeds)
        compile_s = time.perf_counter() - t0
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        osess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ours = sess.run(feeds)
        theirs = osess.run(None, feeds)
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(ours.values(), theirs))
        ref = max(float(np.max(np.abs(b))) for b in theirs)
        for _ in range(2):
            sess.run(feeds)
            osess.run(None, feeds)
        t_cpu, t_ort = [], []
        for _ in range(args.runs):
            t = time.perf_counter(); sess.run(feeds); t_cpu.append(time.perf_counter() - t)
            t = time.perf_counter(); osess.run(None, feeds); t_ort.append(time.perf_counter() - t)
        row = {
            "model": name,
            "cpu_ms": 1e3 * float(np.median(t_cpu)),
            "ort_ms": 1e3 * float(np.median(t_ort)),
            "max_abs_err": err,
            "max_abs_ref": ref,
            "load_compile_s": compile_s,
        }
        row["ratio"] = row["cpu_ms"] / row["ort_ms"]
        rows.append(row)
        print(f"{name:14s} cpu {row['cpu_ms']:9.2f} ms  ort {row['ort_ms']:9.2f} ms  x{row['ratio']:.2f}  err {err:.2e}", flush=True)
    manifest = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "blas": [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in threadpool_info()],
        "threads": 1,
        "runs": args.runs,
        "method": "interleaved cpu/ort runs after 2 warm-ups; median",
    }
    out = HERE / "results" / "cpu_vs_ort.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"manifest": manifest, "rows": rows}, indent=2))
    print("\n| model | edgeinfer cpu (ms) | ONNX Runtime (ms) | cpu / ORT | max abs err vs ORT |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['cpu_ms']:.1f} | {r['ort_ms']:.1f} | {r['ratio']:.2f} | {r['max_abs_err']:.1e} |")


if __name__ == "__main__":
    main()
