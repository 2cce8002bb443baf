"""edgeinfer's cpu backend vs ONNX Runtime and OpenVINO on every real model of the test suite.

What is measured, per model:

* latency: one thread everywhere (edgeinfer ``threads=1``, ORT intra/inter-op 1, OpenVINO
  ``INFERENCE_NUM_THREADS=1`` with f32 precision), warm-up runs, then ``--runs`` rounds that
  run each runtime once in a fresh random order (interleaved, so machine noise hits all alike);
  the median per runtime, and the max abs difference of the outputs from ORT's;
* load time, in fresh subprocesses after the runtime's imports: edgeinfer ``load(.eim)`` +
  ``Session``, ORT ``InferenceSession`` creation, OpenVINO ``read_model`` + ``compile_model``
  (median of 5 processes per runtime, interleaved across runtimes; 1 with ``--quick``), plus the first run, which is where edgeinfer
  compiles its plan when the model's input shape is symbolic, and the import time;
* peak RSS (VmHWM) of each runtime in its own subprocess after a few runs, with the RSS after
  imports alongside.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from the environment (the script re-executes
itself without them) because users don't set them; the BLAS library and kernel that ran are
recorded with threadpoolctl.

    python benchmarks/cpu_vs_peers.py [--models a,b] [--runs 15] [--quick] [--runtimes cpu,ort]

Writes benchmarks/results/cpu_vs_peers.json and .png (bar chart) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _env import HERE, UNSET as _UNSET  # noqa: E402  (re-executes without OPENBLAS_*; paths)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

RUNTIMES = ("cpu", "ort", "openvino")
# fixed input shapes for the models whose inputs are symbolic
PPOCR = {"ppocr_det": (1, 3, 640, 640), "ppocr_rec": (1, 3, 48, 320), "ppocr_cls": (1, 3, 48, 192)}
SMALL_MS = 5.0  # ORT latency separating the "small" models in the summary


# ------------------------------------------------------------------------ models
def all_models() -> list[str]:
    """Every model of tests/models.py: the light zoo, then the wheel-cached ones."""
    from models import LIGHT_MODELS, MODELS

    return list(LIGHT_MODELS) + [m for m in MODELS if m not in LIGHT_MODELS]


def model_and_feeds(name: str) -> tuple[Path, dict[str, np.ndarray]]:
    """The ONNX file of a test model and the inputs the tests use for it (case 0)."""
    import models

    if name in models.LIGHT_MODELS:
        path = models.light_model(name)[0]
    elif name in getattr(models, "WHEEL_MODELS", {}):
        path = models.wheel_model_path(name)
    else:
        path = models.model_path(name)
    if path.suffix != ".onnx":
        raise ValueError(f"{path.name} is not an ONNX model; ONNX Runtime and OpenVINO cannot compare on it")
    if name in getattr(models, "WHEEL_MODELS", {}):
        return path, {k: np.asarray(v) for k, v in models.wheel_model_feeds(name, 0).items()}
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    feeds = {}
    rng = np.random.default_rng(0)
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        shape = PPOCR[name] if name in PPOCR else tuple(d if d else 1 for d in dims)
        if name in models.LIGHT_MODELS:
            feeds[inp.name] = models.light_input(shape)
        else:
            feeds[inp.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return path, feeds


# ---------------------------------------------------------------------- runtimes
def open_runtime(kind: str, path: Path, eim: Path | None = None):
    """A callable ``run(feeds) -> list of outputs`` for one runtime, single-threaded."""
    if kind == "cpu":
        import edgeinfer

        sess = edgeinfer.Session(str(eim or path), threads=1)
        names = [v.name for v in sess.outputs]

        def run(feeds):
            out = sess.run(feeds)
            return [out[n] for n in names]

        return run
    if kind == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only: some models warn on every run
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return lambda feeds: sess.run(None, feeds)
    if kind == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
        request = compiled.create_infer_request()
        outs = compiled.outputs

        def run(feeds):
            result = request.infer(feeds)
            return [np.asarray(result[o]) for o in outs]

        return run
    raise ValueError(f"unknown runtime {kind}")


def available_runtimes() -> dict[str, str]:
    """runtime -> version, for the runtimes importable here."""
    found = {}
    import edgeinfer

    found["cpu"] = f"edgeinfer {edgeinfer.__version__}"
    try:
        import onnxruntime

        found["ort"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import openvino

        found["openvino"] = openvino.__version__
    except ImportError:
        pass
    return found


# ------------------------------------------------------------- child processes
def peak_rss_mb() -> float:
    """This process's peak resident set size. VmHWM, not ru_maxrss: Linux keeps ru_maxrss
    across fork+exec, so a child would report its (large) parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(kind: str, model: str, feeds_path: str, runs: int) -> None:
    """In a fresh process: imports, load time, first run and peak RSS of one runtime."""
    t0 = time.perf_counter()
    if kind == "cpu":
        # everything edgeinfer imports lazily on the way to a first run counts as import time,
        # as onnxruntime's and openvino's native libraries do
        import edgeinfer
        import edgeinfer.backends.cpu  # noqa: F401
        import edgeinfer.format  # noqa: F401
        import edgeinfer.backends.cpu  # noqa: F401  (as "import onnxruntime" loads ORT's runtime)
        import edgeinfer.optimize  # noqa: F401
        from edgeinfer.kernels.registry import supported_ops

        supported_ops()  # imports every kernel family
        try:
            import threadpoolctl  # noqa: F401
        except ImportError:
            pass
    elif kind == "ort":
        import onnxruntime  # noqa: F401
    else:
        import openvino  # noqa: F401
    import_s = time.perf_counter() - t0
    with np.load(feeds_path) as data:
        feeds = {k: data[k] for k in data.files}
    base = peak_rss_mb()
    t0 = time.perf_counter()
    if kind == "cpu":
        graph = edgeinfer.load(model)  # the .eim
        sess = edgeinfer.Session(graph, threads=1)
        run = sess.run
    else:
        run = open_runtime(kind, Path(model))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(feeds)
    first_s = time.perf_counter() - t0
    for _ in range(runs):
        run(feeds)
    print(json.dumps({"import_ms": 1e3 * import_s, "load_ms": 1e3 * load_s, "first_run_ms": 1e3 * first_s,
                      "peak_rss_mb": peak_rss_mb(), "import_rss_mb": base}))


def in_child(kind: str, model: Path, feeds_path: Path, runs: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(model), str(feeds_path), "--runs", str(runs)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- measure
def measure(name: str, kinds: list[str], runs: int, warmup: int, load_repeats: int, workdir: Path) -> dict:
    import edgeinfer

    path, feeds = model_and_feeds(name)
    row: dict = {"model": name, "inputs": {k: list(v.shape) for k, v in feeds.items()}}
    eim = workdir / f"{name}.eim"
    try:
        edgeinfer.save(edgeinfer.load(str(path)), eim)
        edgeinfer.load(eim)
    except Exception as e:  # measured from the .onnx then, and said so
        row["eim_error"] = f"{type(e).__name__}: {e}"[:300]
        eim = path
    runners, outputs = {}, {}
    for k in kinds:
        try:
            runners[k] = open_runtime(k, path, eim if k == "cpu" else None)
            outputs[k] = runners[k](feeds)
        except Exception as e:
            row[f"{k}_error"] = f"{type(e).__name__}: {e}"[:300]
            runners.pop(k, None)
    kinds = [k for k in kinds if k in runners]
    ref = outputs.get("ort")
    if ref is not None:
        row["max_abs_ref"] = max(float(np.max(np.abs(o))) for o in ref)
        for k, outs in outputs.items():
            if k != "ort":
                row[f"{k}_max_abs_err"] = max(float(np.max(np.abs(np.asarray(a, np.float64) - b)))
                                              for a, b in zip(outs, ref))
    for _ in range(warmup):
        for r in runners.values():
            r(feeds)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    order = list(kinds)
    rng = np.random.default_rng(0)
    for i in range(runs):
        # a fresh random order every round: with a rotating one each runtime mostly runs right
        # after the same other one (a measurable effect across processes, see edgeinfer.bench)
        for k in (order[j] for j in rng.permutation(len(order))):
            t0 = time.perf_counter()
            runners[k](feeds)
            times[k].append(time.perf_counter() - t0)
    for k in kinds:
        row[f"{k}_ms"] = 1e3 * float(np.median(times[k]))
        row[f"{k}_min_ms"] = 1e3 * float(np.min(times[k]))
    del runners, outputs
    feeds_path = workdir / f"{name}_feeds.npz"
    np.savez(feeds_path, **feeds)
    # fresh processes, interleaved: the machine's memory state hits every runtime alike
    by_kind: dict[str, list[dict]] = {k: [] for k in kinds}
    for _ in range(load_repeats):
        for k in kinds:
            by_kind[k].append(in_child(k, eim if k == "cpu" else path, feeds_path, 3))
    for k in kinds:
        loads = by_kind[k]
        good = [d for d in loads if "error" not in d]
        if not good:
            row[f"{k}_child_error"] = loads[0]["error"]
            continue
        for key in ("import_ms", "load_ms", "first_run_ms", "peak_rss_mb", "import_rss_mb"):
            row[f"{k}_{key}"] = float(np.median([d[key] for d in good]))
    if "ort_ms" in row:
        for k in kinds:
            if k != "ort":
                row[f"{k}_vs_ort"] = row[f"{k}_ms"] / row["ort_ms"]
    return row


def _runtimes_of(row: dict, kinds: list[str]) -> list[str]:
    return [k for k in kinds if f"{k}_ms" in row]


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


# the models of the original performance issue: the light zoo and PP-OCRv4
CORE = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
        "vgg19", "zfnet512", "ppocr_det", "ppocr_rec", "ppocr_cls")


def summarize(rows: list[dict], kinds: list[str]) -> dict:
    """Geometric means of time / ORT time, for models above and at most SMALL_MS on ORT, over
    the issue's models ("core") and over every model measured ("all")."""
    out: dict = {}
    for group, members in (("core", set(CORE)), ("all", None)):
        for k in kinds:
            if k == "ort":
                continue
            key = f"{k}_vs_ort"
            chosen = [r for r in rows if key in r and (members is None or r["model"] in members)]
            big = [r[key] for r in chosen if r["ort_ms"] > SMALL_MS]
            small = [r[key] for r in chosen if r["ort_ms"] <= SMALL_MS]
            worst = max(chosen, key=lambda r: r[key]) if chosen else None
            out.setdefault(group, {})[k] = {
                "models": len(chosen),
                f"geomean_ort_above_{SMALL_MS:g}ms": geomean(big),
                f"geomean_ort_at_most_{SMALL_MS:g}ms": geomean(small),
                "worst": None if worst is None else [worst["model"], worst[key]],
            }
    return out


# ------------------------------------------------------------------------ report
def plot(rows: list[dict], kinds: list[str], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in rows]
    x = np.arange(len(names))
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.9 * len(names) + 2), 11))
    width = 0.8 / len(kinds)
    panels = (("latency vs ONNX Runtime (lower is faster)", "{}_ms", True),
              ("peak RSS (MB)", "{}_peak_rss_mb", False),
              ("load + session creation (ms, log scale)", "{}_load_ms", False))
    for ax, (title, key, relative) in zip(axes, panels):
        if "log" in title:
            ax.set_yscale("log")
        for i, k in enumerate(kinds):
            vals = []
            for r in rows:
                v = r.get(key.format(k))
                base = r.get(key.format("ort")) if relative else 1.0
                vals.append(v / base if v is not None and base else np.nan)
            ax.bar(x + (i - (len(kinds) - 1) / 2) * width, vals, width, label=k)
        if relative:
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_ylabel("time / ORT time")
        ax.set_title(title)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.legend()
    fig.suptitle("edgeinfer cpu vs ONNX Runtime vs OpenVINO, one thread")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def print_table(rows: list[dict], kinds: list[str]) -> None:
    head = ["model"] + [f"{k} ms" for k in kinds] + [f"{k}/ORT" for k in kinds if k != "ort"]
    head += [f"{k} RSS MB" for k in kinds] + [f"{k} load ms" for k in kinds] + ["cpu first run ms"]
    print("\n| " + " | ".join(head) + " |")
    print("|---" + "|---:" * (len(head) - 1) + "|")

    def cell(v, fmt="{:.1f}"):
        return fmt.format(v) if isinstance(v, (int, float)) else "-"

    for r in rows:
        cells = [r["model"]] + [cell(r.get(f"{k}_ms")) for k in kinds]
        cells += [cell(r.get(f"{k}_vs_ort"), "{:.2f}") for k in kinds if k != "ort"]
        cells += [cell(r.get(f"{k}_peak_rss_mb"), "{:.0f}") for k in kinds]
        cells += [cell(r.get(f"{k}_load_ms"), "{:.0f}") for k in kinds]
        cells += [cell(r.get("cpu_first_run_ms"), "{:.0f}")]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated model names (default: all)")
    ap.add_argument("--runs", type=int, default=None, help="timed rounds per model (default 15, --quick 5)")
    ap.add_argument("--quick", action="store_true", help="5 rounds, 1 warm-up, 1 load process per runtime")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="subset of cpu,ort,openvino")
    ap.add_argument("--out", default=str(HERE / "results" / "cpu_vs_peers.json"))
    ap.add_argument("--replot", action="store_true", help="redraw the chart from the --out JSON and exit")
    ap.add_argument("--child", nargs=3, metavar=("RUNTIME", "MODEL", "FEEDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(*args.child, args.runs or 3)
        return
    if args.replot:
        saved = json.loads(Path(args.out).read_text())
        kinds = [k for k in RUNTIMES if any(f"{k}_ms" in r for r in saved["rows"])]
        plot(saved["rows"], kinds, Path(args.out).with_suffix(".png"))
        return
    runs = args.runs or (5 if args.quick else 15)
    warmup = 1 if args.quick else 3
    load_repeats = 1 if args.quick else 5
    versions = available_runtimes()
    kinds = [k for k in args.runtimes.split(",") if k in versions]
    missing = [k for k in args.runtimes.split(",") if k not in versions]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}", file=sys.stderr)
    names = args.models.split(",") if args.models else all_models()

    from threadpoolctl import threadpool_info

    rows, skipped = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                model_and_feeds(name)
            except ValueError as e:
                skipped[name] = str(e)
                print(f"{name}: skipped ({e})", flush=True)
                continue
            row = measure(name, kinds, runs, warmup, load_repeats, Path(tmp))
            rows.append(row)
            errors = {k: row[f"{k}_error"] for k in kinds if f"{k}_error" in row}
            if errors:
                print(f"{name}: failed on {errors}", flush=True)
            text = "  ".join(f"{k} {row[f'{k}_ms']:.2f} ms" for k in _runtimes_of(row, kinds))
            ratio = "  ".join(f"{k}/ort {row[f'{k}_vs_ort']:.2f}" for k in kinds if f"{k}_vs_ort" in row)
            print(f"{name:14s} {text}  {ratio}", flush=True)
    import edgeinfer

    manifest = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "runtimes": versions,
        "blas": [{k: i.get(k) for k in ("internal_api", "version", "architecture", "filepath")}
                 for i in threadpool_info() if i.get("user_api") == "blas"],
        "env_removed": list(_UNSET),
        "threads": 1,
        "runs": runs,
        "warmup": warmup,
        "load_repeats": load_repeats,
        "method": "interleaved rounds (a fresh random order each round) after warm-up; median per runtime. Load time, first "
                  "run and peak RSS (VmHWM) in fresh subprocesses, one per runtime and model.",
        "edgeinfer_load": "edgeinfer.load(.eim) + Session(threads=1); the first run compiles when inputs are symbolic",
        "openvino_config": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1},
        "edgeinfer": edgeinfer.__version__,
    }
    result = {"manifest": manifest, "summary": summarize(rows, kinds), "rows": rows, "skipped": skipped}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if rows:
        plot(rows, kinds, out.with_suffix(".png"))
    print_table(rows, kinds)
    print("\nsummary:", json.dumps(result["summary"], indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
