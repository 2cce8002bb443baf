"""``edgeinfer bench``: every backend (and every model given) measured side by side in one run.

Each (model, backend) pair runs in a **worker process of its own**, so load time, peak RSS and
RSS delta are that runtime's alone. The parent drives the workers over pipes in **interleaved
rounds**: every round asks each worker for one timed run, in a fresh random order, so noise on the
machine (other processes, frequency changes, thermal) hits all of them alike. A worker times its
own run with ``perf_counter`` around ``Session.run``; the pipe is not in the samples.

Per result: load (model read + Session creation, which compiles for static shapes) and first
inference ms, warm-up runs, latency min/mean/median/std/p90/p95/p99/max, throughput (batch /
median), peak RSS (VmHWM) and its delta over the worker's RSS after imports, precision, threads,
the backend's version, the max abs difference of its outputs from the cpu backend's, and for
the cpu backend a per-layer profile (taken after the timed runs, in a second Session, so the
timing runs are not profiled). The report dict follows :data:`SCHEMA` (documented in the README,
rendered by :mod:`edgeinfer.bench_report`).

    report = bench(["model.onnx"], backends="all", threads=1)
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import __version__
from . import dtypes as _dt
from .errors import EdgeInferError

SCHEMA = "edgeinfer.bench/1"
LATENCY_KEYS = ("min", "mean", "median", "std", "p90", "p95", "p99", "max")
_MIN_RUNS = 10  # with --min-seconds alone, every backend gets at least this many runs
_PROFILE_RUNS = 5
_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile", "neon", "asimd",
              "asimddp", "sve", "sve2", "i8mm", "bf16")
_LIBRARIES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert", "cupy-cuda12x",
              "threadpoolctl")
_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class BenchError(EdgeInferError):
    """A benchmark could not be set up (bad arguments, no model, no backend)."""


# ---------------------------------------------------------------------------- the parent
def bench(models: Iterable[str | os.PathLike], backends: str | list[str] = "all", *, threads: int | None = None,
          runs: int | None = None, min_seconds: float | None = None, warmup: int = 3, batch: int | None = None,
          inputs: dict[str, np.ndarray] | None = None, shapes: dict[str, tuple] | None = None, seed: int = 0, options: dict[str, dict] | None = None,
          profile: bool = True, progress: Callable[[str, float], None] | None = None,
          command: list[str] | None = None) -> dict:
    """Measure every model on every backend; returns the report dict (schema ``edgeinfer.bench/1``).

    Args:
        models: model files (.onnx, .tflite, .eim); several are compared side by side.
        backends: ``"all"`` (every registered backend but ``auto``), or names (``"cpu,ort"``,
            ``["cpu", "auto"]``). Unavailable ones appear with status ``unavailable`` and why.
        threads: threads per backend (``None``: each backend's default).
        runs: timed runs per backend. ``min_seconds``: keep going until every backend has spent
            at least this long in timed runs. Without either: ``min_seconds=1`` and >= 10 runs.
        warmup: untimed runs per backend after the first inference.
        batch: the value of every input's first dim when that dim is symbolic.
        inputs: arrays by input name (the rest are synthetic: floats uniform in [0, 1) from
            ``seed``, integers and booleans zero).
        shapes: shapes of synthetic inputs by name, for inputs with symbolic dims.
        options: per-backend options, ``{"openvino": {"precision": "bf16"}}``.
        profile: take the cpu backend's per-layer profile.
        progress: called with (message, fraction done) as the work goes.
    """
    models = [Path(m) for m in models]
    if not models:
        raise BenchError("no model given")
    for m in models:
        if not m.is_file():
            raise BenchError(f"model file '{m}' does not exist")
    names = _backend_list(backends)
    if runs is not None and runs < 1:
        raise BenchError(f"runs must be at least 1, got {runs}")
    if min_seconds is not None and min_seconds <= 0:
        raise BenchError(f"min_seconds must be positive, got {min_seconds}")
    if warmup < 0:
        raise BenchError(f"warmup must be 0 or more, got {warmup}")
    if batch is not None and batch < 1:
        raise BenchError(f"batch must be at least 1, got {batch}")
    if runs is None and min_seconds is None:
        min_seconds = 1.0
    options = options or {}
    say = progress or (lambda msg, frac: None)
    settings = {"runs": runs, "min_seconds": min_seconds, "warmup": warmup, "threads": threads, "batch": batch,
                "seed": seed, "interleaved": True, "backends": names}
    report = {"schema": SCHEMA, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "command": list(command or []), "settings": settings, "manifest": machine_manifest(), "results": []}
    with tempfile.TemporaryDirectory(prefix="edgeinfer-bench-") as tmp:
        workers: list[_Worker] = []
        for mi, model in enumerate(models):
            feeds_path, batch_used = _write_feeds(model, inputs, shapes, batch, seed, Path(tmp) / f"feeds{mi}.npz")
            for name in names:
                row = _row(model, name, threads, options.get(name, {}), batch_used)
                ok, why = _availability(name)
                row["version"] = why if ok else None
                if not ok:
                    row.update(status="unavailable", reason=why)
                    report["results"].append(row)
                    continue
                w = _Worker(model, name, threads, options.get(name, {}), feeds_path, Path(tmp) / f"out{len(workers)}.npz",
                            row, warmup)
                report["results"].append(row)
                workers.append(w)
        try:
            for i, w in enumerate(workers):
                say(f"loading {w.model.name} on {w.backend}", 0.05 * i / len(workers))
                w.start()
                w.ready()  # one load at a time: the machine is quiet for each
            live = [w for w in workers if w.row["status"] == "ok"]
            for w in live:
                w.call({"cmd": "warmup", "n": warmup})
            _rounds(live, runs, min_seconds, say, seed)
            for w in live:
                w.finish(profile and w.backend == "cpu")
            _compare_outputs(live)
        finally:
            for w in workers:
                w.close()
    say("done", 1.0)
    for row in report["results"]:
        row.pop("_outputs", None)
    return report


def _backend_list(backends) -> list[str]:
    from .backends import backend_names

    known = backend_names()
    if isinstance(backends, str):
        backends = [b.strip() for b in backends.split(",") if b.strip()]
    names: list[str] = []
    for b in backends:
        if b == "all":
            names.extend(n for n in known if n != "auto")
        elif b in known:
            names.append(b)
        else:
            raise BenchError(f"unknown backend '{b}'; known backends: {', '.join(known)} (or 'all')")
    if not names:
        raise BenchError("no backend given")
    return list(dict.fromkeys(names))


def _availability(name: str) -> tuple[bool, str]:
    from .backends import available_backends

    return available_backends().get(name, (False, "not registered"))


def _row(model: Path, backend: str, threads, options: dict, batch: int) -> dict:
    precision = options.get("precision") or "f32"
    return {"model": str(model), "model_name": model.name, "backend": backend, "status": "ok", "reason": None,
            "version": None, "precision": "fp32" if precision == "fp32" else precision, "threads": threads,
            "options": {k: v for k, v in options.items() if isinstance(v, (str, int, float, bool))},
            "batch": batch, "load_ms": None, "first_inference_ms": None, "warmup_runs": 0, "count": 0,
            "duration_s": None, "latency_ms": None, "throughput_fps": None, "peak_rss_mb": None,
            "rss_before_mb": None, "rss_delta_mb": None, "samples_ms": [], "max_abs_diff_vs_cpu": None, "rel_diff_vs_cpu": None,
            "profile": None, "auto": None}


def _write_feeds(model: Path, given, shapes, batch, seed, path: Path) -> tuple[Path, int]:
    """The feeds every backend of this model gets, in an .npz; and the batch they have."""
    from .api import load

    graph = load(model)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    bound: dict[str, int] = {}
    batch_used = None
    given = dict(given or {})
    shapes = dict(shapes or {})
    for v in graph.required_inputs():
        if v.name in shapes:
            shape = tuple(int(d) for d in shapes.pop(v.name))
            if v.shape is not None and (len(shape) != len(v.shape) or any(
                    isinstance(d, int) and d != h for d, h in zip(v.shape, shape))):
                raise BenchError(f"{model.name}: input '{v.name}' has shape {list(v.shape)}; "
                                 f"the given shape {list(shape)} does not fit it")
            feeds[v.name] = synthetic_input(v.dtype, shape, rng)
            batch_used = batch_used or (shape[0] if shape else None)
            continue
        if v.name in given:
            feeds[v.name] = np.asarray(given.pop(v.name))
            if feeds[v.name].ndim:
                batch_used = batch_used or int(feeds[v.name].shape[0])
            continue
        if not _dt.is_tensor(v.dtype) or v.shape is None:
            raise BenchError(f"{model.name}: input '{v.name}' ({v.dtype}, shape {v.shape}) cannot be made up; "
                             f"pass it with --inputs FILE.npz")
        shape = []
        for axis, d in enumerate(v.shape):
            if isinstance(d, int):
                if axis == 0 and batch is not None and d != batch:
                    raise BenchError(f"{model.name}: input '{v.name}' has a fixed first dim {d}; "
                                     f"--batch {batch} needs a symbolic one")
                shape.append(d)
            elif axis == 0:
                shape.append(bound.setdefault(d, batch or 1) if d not in ("", "?") else batch or 1)
            else:
                if d in ("", "?") or d not in bound:
                    raise BenchError(f"{model.name}: input '{v.name}' dim {axis} ('{d or '?'}') is symbolic; "
                                     f"give its shape with --shape {v.name}=... or the array with --inputs FILE.npz")
                shape.append(bound[d])
        if shape:
            batch_used = batch_used or shape[0]
        feeds[v.name] = synthetic_input(v.dtype, tuple(shape), rng)
    if given or shapes:
        raise BenchError(f"{model.name}: no input(s) named {sorted(set(given) | set(shapes))}; "
                         f"its inputs are {[v.name for v in graph.required_inputs()]}")
    np.savez(path, **feeds)
    return path, int(batch_used or 1)


def synthetic_input(dtype: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """A benchmark input: floats uniform in [0, 1), integers and booleans zero (valid as indices
    and token ids in any model), strings empty."""
    if dtype in _dt.FLOAT_DTYPES:
        return rng.random(shape).astype(_dt.to_numpy(dtype))
    if dtype == "string":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=_dt.to_numpy(dtype))


def _rounds(live: list["_Worker"], runs, min_seconds, say, seed: int = 0) -> None:
    if not live:
        return
    start, r = time.perf_counter(), 0
    rng = np.random.default_rng(seed)
    while True:
        # a fresh random order every round: with a rotating order each worker would mostly run
        # right after the same other one, and that is measurable (two OpenVINO processes in a
        # row: the second ran 4-9 % slower on sub-millisecond models)
        order = [live[k] for k in rng.permutation(len(live))]
        for w in order:
            w.samples.append(w.call({"cmd": "run"})["ms"])
        r += 1
        enough_runs = runs is None or r >= runs
        enough_time = min_seconds is None or (all(sum(w.samples) >= 1e3 * min_seconds for w in live)
                                              and (runs is not None or r >= _MIN_RUNS))
        if runs is not None:
            frac = r / runs
        else:
            frac = min(min(sum(w.samples) / (1e3 * min_seconds) for w in live), 1.0)
        if r % 5 == 0 or (enough_runs and enough_time):
            say(f"round {r}", 0.05 + 0.9 * min(frac, 1.0))
        if enough_runs and enough_time:
            break
    elapsed = time.perf_counter() - start
    for w in live:
        w.row["duration_s"] = elapsed


def _compare_outputs(live: list["_Worker"]) -> None:
    by_model: dict[str, dict] = {}
    for w in live:
        if w.backend == "cpu" and w.row.get("_outputs") is not None:
            by_model[w.row["model"]] = w.row["_outputs"]
    for w in live:
        ref, got = by_model.get(w.row["model"]), w.row.get("_outputs")
        if ref is None or got is None:
            continue
        diffs, rel = [], []
        for k, b in ref.items():
            a = got.get(k)
            if a is None or a.shape != b.shape or b.dtype.kind not in "fciub" or a.dtype.kind not in "fciub":
                continue
            if b.size:
                a64, b64 = a.astype(np.float64), b.astype(np.float64)
                both = np.isfinite(a64) & np.isfinite(b64)
                d = float(np.max(np.abs(a64[both] - b64[both]), initial=0.0))
                if not np.array_equal(np.isfinite(a64), np.isfinite(b64)):
                    d = float("inf")  # NaN/inf in one and not the other
                diffs.append(d)
                rel.append(d / max(1.0, float(np.max(np.abs(b64[np.isfinite(b64)]), initial=0.0))))
        w.row["max_abs_diff_vs_cpu"] = max(diffs) if diffs else None
        w.row["rel_diff_vs_cpu"] = max(rel) if rel else None


class _Worker:
    """One (model, backend) measured in its own process, driven by JSON lines on its pipes."""

    def __init__(self, model: Path, backend: str, threads, options: dict, feeds: Path, outputs: Path, row: dict,
                 warmup: int):
        self.model, self.backend, self.row = model, backend, row
        self.args = {"model": str(model), "backend": backend, "threads": threads, "options": options,
                     "feeds": str(feeds), "outputs": str(outputs)}
        self.samples: list[float] = []
        self.proc: subprocess.Popen | None = None
        self.warmup = warmup
        self.log = outputs.with_suffix(".log")  # the worker's stderr: a file, so it can never block on a full pipe

    def start(self) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "edgeinfer.bench", "--worker", json.dumps(self.args)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)

    def _read(self) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                try:
                    err = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
                except OSError:
                    err = []
                raise _WorkerDied(err[-1] if err else f"worker exited with code {self.proc.wait()}")
            if line.startswith("@bench "):  # anything else is the runtime's own printing
                return json.loads(line[7:])

    def ready(self) -> None:
        try:
            msg = self._read()
        except _WorkerDied as e:
            self.row.update(status="failed", reason=str(e))
            return
        if msg.get("status") != "ok":
            self.row.update(status=msg.get("status", "failed"), reason=msg.get("reason"))
            return
        for k in ("load_ms", "first_inference_ms", "rss_before_mb", "precision", "auto"):
            if msg.get(k) is not None:
                self.row[k] = msg[k]
        self.row["warmup_runs"] = self.warmup

    def call(self, msg: dict) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            answer = self._read()
        except (_WorkerDied, BrokenPipeError, OSError) as e:
            raise BenchError(f"{self.model.name} on {self.backend}: the worker died: {e}") from None
        if "error" in answer:
            raise BenchError(f"{self.model.name} on {self.backend}: {answer['error']}")
        return answer

    def finish(self, profile: bool) -> None:
        stats = self.call({"cmd": "stats"})
        self.row["peak_rss_mb"] = stats["peak_rss_mb"]
        if self.row.get("rss_before_mb") is not None:
            self.row["rss_delta_mb"] = stats["peak_rss_mb"] - self.row["rss_before_mb"]
        self.call({"cmd": "outputs"})
        with np.load(self.args["outputs"], allow_pickle=False) as data:
            self.row["_outputs"] = {k: data[k] for k in data.files}
        if profile:
            self.row["profile"] = self.call({"cmd": "profile", "n": _PROFILE_RUNS})["profile"]
        s = np.asarray(self.samples)
        self.row["samples_ms"] = [float(x) for x in s]
        self.row["count"] = int(s.size)
        if s.size:
            self.row["latency_ms"] = latency_stats(s)
            self.row["throughput_fps"] = 1e3 * self.row["batch"] / self.row["latency_ms"]["median"]

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


class _WorkerDied(Exception):
    pass


def latency_stats(samples_ms) -> dict:
    s = np.asarray(samples_ms, dtype=np.float64)
    p90, p95, p99 = np.percentile(s, [90, 95, 99])
    return {"min": float(s.min()), "mean": float(s.mean()), "median": float(np.median(s)), "std": float(s.std()),
            "p90": float(p90), "p95": float(p95), "p99": float(p99), "max": float(s.max())}


# ---------------------------------------------------------------------------- the machine
def machine_manifest() -> dict:
    """CPU model and flags, cores, OS, Python, library versions (read from package metadata, not
    imported), the BLAS libraries numpy loaded (threadpoolctl) and the environment variables
    that change BLAS and thread behaviour."""
    from importlib import metadata

    cpu = {"model": platform.processor() or platform.machine(), "flags": [], "logical_cores": os.cpu_count(),
           "physical_cores": None}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
        cores = set()
        phys = None
        for line in text.splitlines():
            key, _, val = line.partition(":")
            key, val = key.strip(), val.strip()
            if key == "model name" and cpu["model"] in ("", platform.processor(), platform.machine()):
                cpu["model"] = val
            elif key in ("flags", "Features") and not cpu["flags"]:
                have = set(val.split())
                cpu["flags"] = [f for f in _CPU_FLAGS if f in have]
            elif key == "physical id":
                phys = val
            elif key == "core id":
                cores.add((phys, val))
        cpu["physical_cores"] = len(cores) or None
    except OSError:
        pass
    libs: dict[str, str | None] = {"edgeinfer": __version__}
    for name in _LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    blas: list[dict] = []
    try:
        from threadpoolctl import threadpool_info

        blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
                for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        pass
    return {"cpu": cpu, "os": platform.platform(), "python": platform.python_version(), "machine": platform.node(),
            "libraries": libs, "blas": blas, "env": {k: os.environ.get(k) for k in _ENV}}


# ---------------------------------------------------------------------------- the worker
def _rss_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if field == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return None


def _send(msg: dict) -> None:
    sys.__stdout__.write("@bench " + json.dumps(msg, default=_plain) + "\n")
    sys.__stdout__.flush()


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return repr(obj)


def _precision(backend: str, options: dict, sess) -> str:
    if backend == "auto":
        rep = sess.backend_report
        return f"{rep.get('chosen')}:{rep.get('variant', 'f32')}"
    p = options.get("precision")
    return str(p) if p else "f32"


def _worker(args: dict) -> int:
    """Load one model on one backend, then serve the parent's commands until ``quit``."""
    import edgeinfer
    from .backends import get_backend

    with np.load(args["feeds"], allow_pickle=False) as data:
        feeds = {k: data[k] for k in data.files}
    try:
        # imports are import time, not load time (as "import onnxruntime" is not ORT's load time):
        # the backend's module and the reader of the model's format
        get_backend(args["backend"])
    except EdgeInferError as e:
        _send({"status": "unavailable", "reason": str(e)})
        return 0
    suffix = Path(args["model"]).suffix.lower()
    if suffix in (".onnx", ".tflite"):
        try:
            importlib.import_module(f"edgeinfer.converters.{suffix[1:]}_import")
        except ImportError:
            pass  # loading the model says what is missing
    rss_before = _rss_mb("VmRSS")
    try:
        t0 = time.perf_counter()
        sess = edgeinfer.Session(args["model"], backend=args["backend"], threads=args["threads"],
                                 options=args["options"] or None)
        t1 = time.perf_counter()
        out = sess.run(feeds)
        t2 = time.perf_counter()
    except edgeinfer.UnsupportedOpError as e:
        _send({"status": "unsupported", "reason": str(e)})
        return 0
    except Exception as e:  # noqa: BLE001  any failure is this backend's result, reported by name
        _send({"status": "failed", "reason": f"{type(e).__name__}: {str(e)[:500]}"})
        return 0
    _send({"status": "ok", "load_ms": 1e3 * (t1 - t0), "first_inference_ms": 1e3 * (t2 - t1),
           "rss_before_mb": rss_before, "precision": _precision(args["backend"], args["options"] or {}, sess),
           "auto": sess.backend_report if args["backend"] == "auto" else None})
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.get("cmd")
        try:
            if cmd == "run":
                t0 = time.perf_counter()
                out = sess.run(feeds)
                _send({"ms": 1e3 * (time.perf_counter() - t0)})
            elif cmd == "warmup":
                for _ in range(int(msg.get("n", 0))):
                    out = sess.run(feeds)
                _send({"ok": True})
            elif cmd == "stats":
                _send({"peak_rss_mb": _rss_mb("VmHWM"), "rss_mb": _rss_mb("VmRSS")})
            elif cmd == "outputs":
                arrays = {k: v for k, v in out.items() if isinstance(v, np.ndarray) and v.dtype != object}
                np.savez(args["outputs"], **arrays)
                _send({"ok": True})
            elif cmd == "profile":
                prof = edgeinfer.Session(args["model"], backend=args["backend"], threads=args["threads"],
                                         options=args["options"] or None, profile=True)
                prof.run(feeds)
                prof.reset_profile()  # the compile-time first run is not a layer's cost
                for _ in range(int(msg.get("n", 1))):
                    prof.run(feeds)
                _send({"profile": prof.profile()})
            elif cmd == "quit":
                _send({"ok": True})
                return 0
            else:
                _send({"error": f"unknown command {cmd!r}"})
        except Exception as e:  # noqa: BLE001
            _send({"error": f"{type(e).__name__}: {str(e)[:500]}"})
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        # the runtime's own printing goes to stderr; stdout carries only our messages
        sys.stdout = sys.stderr
        sys.exit(_worker(json.loads(sys.argv[2])))
    raise SystemExit("usage: edgeinfer bench MODEL... (this module's command line is the worker's)")
