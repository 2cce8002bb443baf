"""The ``auto`` backend: every backend that can run the model is compiled, checked against the
cpu backend, timed here, and the fastest is kept.

``compile`` (once per input-shape signature, like every backend):

1. **Candidates**: every registered backend but ``auto`` (or the ``candidates`` option), each
   skipped with its reason when it is not installed (``available()``), cannot run an op of the
   model (``unsupported()``), or would compute in reduced precision against the policy.
2. **Precision policy**: exact f32 by default. ``allow_reduced_precision=True`` adds the
   reduced-precision variants (``openvino`` in bf16, ``gpu`` in fp16) as candidates of their own,
   checked with the looser ``reduced_tolerance``.
3. **Isolation**: each candidate is loaded and measured in a worker process of its own (the
   workers of ``edgeinfer bench``), because runtimes sharing a process slow each other down
   (measured: importing onnxruntime makes OpenVINO ~33% slower on a 0.3 ms model); the winner
   is then compiled in the caller's process. ``isolate=False`` measures in this process.
4. **Check**: each compiled candidate runs the same feeds (``feeds`` option, or seeded synthetic
   ones: floats uniform in [0, 1), integers and booleans zero) and must match the cpu backend:
   max abs error <= tolerance x max(1, max |cpu output|) on float outputs, exact on the rest.
   When the cpu backend fails on the synthetic feeds (a sample-rate input that must be 8000 or
   16000), the decision waits for the first ``run`` and is made on the caller's inputs.
5. **Time**: one warm-up run each, then rounds that run every candidate once in a fresh random order
   (machine noise hits all alike) until each has ``runs`` samples and 0.1 s of timed runs, or
   ``budget_s`` has passed (at least 3 rounds). The lowest median wins.

The decision is cached on disk per (model content, input shapes, threads, options, machine:
CPU model, core count and the version string of every candidate backend), under
``$EDGEINFER_CACHE/auto`` (default ``~/.cache/edgeinfer/auto``); a later compile of the same model
on the same machine compiles only the winner. ``cache=False`` measures afresh and stores nothing.

Every decision is in ``executable.backend_report`` (``Session.backend_report``)::

    {"chosen": "ort", "options": {...}, "cached": False, "reason": "lowest median ...",
     "policy": "f32" | "reduced precision allowed", "shapes": {...},
     "candidates": [{"backend": "openvino", "variant": "f32", "status": "ok" | "unavailable" |
                     "unsupported" | "excluded" | "failed" | "mismatch", "reason": str | None,
                     "median_ms": float | None, "max_abs_err": float | None,
                     "compile_ms": float | None}, ...]}

Options:
    ``candidates``: backend names to consider (default: all but ``auto``).
    ``backend_options``: ``{name: {option: value}}`` passed to that backend.
    ``allow_reduced_precision``: admit bf16/fp16 variants (default False).
    ``tolerance`` (default 1e-3) and ``reduced_tolerance`` (default 5e-2): the check above.
    ``runs`` (default 7) and ``budget_s`` (default 3.0): the timing.
    ``feeds``: ``{input: array}`` to check and time with (default: synthetic, seeded).
    ``cache`` (default True): read and write the decision cache.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from .. import dtypes as _dt
from ..errors import EdgeInferError, InputError
from ..graph import Graph
from .digest import edgeinfer_cache, graph_digest

NAME = "auto"
OPTIONS = {
    "candidates": "backend names to consider (default: every registered backend but auto)",
    "backend_options": "{backend: {option: value}} passed to that backend",
    "allow_reduced_precision": "admit bf16/fp16 variants (openvino bf16, gpu fp16); default False",
    "tolerance": "max abs error vs cpu relative to max(1, max|ref|) for f32 candidates (default 1e-3)",
    "reduced_tolerance": "the same for reduced-precision variants (default 5e-2)",
    "runs": "timed runs per candidate (default 7)",
    "budget_s": "time budget for the timing rounds in seconds (default 3.0)",
    "feeds": "inputs to check and time with (default: seeded synthetic inputs)",
    "cache": "read and write the on-disk decision cache (default True)",
    "isolate": "measure each candidate in a worker process of its own (default True)",
    "profile": "passed to the chosen backend when it supports it (cpu)",
}
CACHE_VERSION = "1"
_MIN_TIMED_S = 0.1  # timed seconds per candidate before the runs count alone may stop
# reduced-precision variants: backend -> (variant name, the options that select it)
REDUCED = {"openvino": ("bf16", {"precision": "bf16"}), "gpu": ("fp16", {"precision": "fp16"})}
# options that lower a backend's precision, and their exact-f32 values
_PRECISION_OPTION = {"openvino": ("precision", "f32"), "gpu": ("precision", "fp32")}


def available() -> tuple[bool, str]:
    return True, "measures the available backends and keeps the fastest (cpu always qualifies)"


def unsupported(graph: Graph) -> list[str]:
    """auto can run what the cpu backend can (the reference every candidate is checked against)."""
    from . import get_backend

    return get_backend("cpu").unsupported(graph)


def compile(graph: Graph, input_shapes: dict[str, tuple], threads: int | None = None, options: dict | None = None):
    """Compile every admitted candidate, check and time them, and return the fastest one's
    executable wrapped with its ``backend_report`` (see the module doc)."""
    opts = _check_options(dict(options or {}))
    candidates = _candidates(graph, opts)
    key = _cache_key(graph, input_shapes, threads, opts, candidates) if opts["cache"] else None
    if key is not None:
        hit = _cached_choice(key, graph, input_shapes, threads, opts, candidates)
        if hit is not None:
            return hit
    try:
        exe, report = _measure(graph, input_shapes, threads, opts, candidates)
    except _SyntheticInputsFailed as e:
        return _Deferred(graph, input_shapes, threads, opts, key, str(e))
    if key is not None:
        _store(key, report)
    return exe


class _SyntheticInputsFailed(Exception):
    """The cpu backend (the reference) fails on made-up inputs: the model needs real ones."""


class _Deferred:
    """Decides at the first run, with the caller's inputs, when made-up inputs do not work
    (a sample-rate or token input that must hold a meaningful value)."""

    def __init__(self, graph, input_shapes, threads, opts, key, why: str):
        self.args = (graph, input_shapes, threads, opts)
        self.key, self.why = key, why
        self.exe = None
        self.backend_report = {"chosen": None, "reason": f"decided at the first run: {why}", "candidates": []}
        self._lock = __import__("threading").Lock()

    def run(self, feeds):
        exe = self.exe
        if exe is None:
            with self._lock:
                if self.exe is None:
                    graph, shapes, threads, opts = self.args
                    opts = {**opts, "feeds": dict(feeds)}
                    chosen, report = _measure(graph, shapes, threads, opts, _candidates(graph, opts))
                    report["reason"] = f"decided at the first run on the caller's inputs ({self.why}): {report['reason']}"
                    if self.key is not None:
                        _store(self.key, report)
                    self.backend_report = report
                    self.exe = chosen
                exe = self.exe
        return exe.run(feeds)

    def __getattr__(self, name):
        if name in ("exe", "args"):
            raise AttributeError(name)
        if self.exe is None:
            raise AttributeError(name)
        return getattr(self.exe, name)


# ------------------------------------------------------------------------- options
def _check_options(opts: dict) -> dict:
    unknown = sorted(k for k in opts if k not in OPTIONS)
    if unknown:
        raise InputError(f"backend 'auto' has no option(s) {', '.join(map(repr, unknown))}; "
                         f"its options are {', '.join(OPTIONS)}")
    from . import backend_names

    names = [n for n in backend_names() if n != NAME]
    cands = opts.get("candidates")
    if cands is None:
        cands = names
    elif isinstance(cands, str) or not all(isinstance(c, str) for c in cands):
        raise InputError(f"auto option 'candidates' must be a list of backend names, got {cands!r}")
    bad = [c for c in cands if c not in names]
    if bad:
        raise InputError(f"auto option 'candidates' names unknown backend(s) {bad}; known: {names}")
    per = opts.get("backend_options") or {}
    if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
        raise InputError("auto option 'backend_options' must be a dict of backend name -> dict of options")
    out = {
        "candidates": list(dict.fromkeys(cands)),
        "backend_options": {k: dict(v) for k, v in per.items()},
        "allow_reduced_precision": bool(opts.get("allow_reduced_precision", False)),
        "tolerance": float(opts.get("tolerance", 1e-3)),
        "reduced_tolerance": float(opts.get("reduced_tolerance", 5e-2)),
        "runs": int(opts.get("runs", 7)),
        "budget_s": float(opts.get("budget_s", 3.0)),
        "feeds": opts.get("feeds"),
        "cache": bool(opts.get("cache", True)),
        "isolate": bool(opts.get("isolate", True)),
        "profile": bool(opts.get("profile", False)),
    }
    if out["runs"] < 1 or out["budget_s"] <= 0 or out["tolerance"] <= 0 or out["reduced_tolerance"] <= 0:
        raise InputError("auto options 'runs', 'budget_s', 'tolerance' and 'reduced_tolerance' must be positive")
    return out


# the library each optional backend needs: found without importing it (importing one runtime's
# library can slow another down in the same process; see the module doc)
_LIBRARY = {"ort": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino"),
            "litert": ("ai_edge_litert", "ai-edge-litert"), "gpu": ("cupy", "cupy-cuda12x")}


def _candidates(graph: Graph, opts: dict) -> list[dict]:
    """Every (backend, variant) with its module or the reason it is out; cpu first (the
    reference). Backends are not probed here (see :func:`_probe`): with isolation on, their
    workers say whether they are available and can run the model."""
    import importlib
    import importlib.util

    from . import _REGISTRY

    names = sorted(opts["candidates"], key=lambda n: n != "cpu")
    out: list[dict] = []
    for name in names:
        base = {"backend": name, "variant": "f32", "options": dict(opts["backend_options"].get(name, {})),
                "module": None, "status": None, "reason": None, "version": _library_version(name)}
        lib = _LIBRARY.get(name)
        try:
            if lib is not None and importlib.util.find_spec(lib[0]) is None:
                raise ImportError(f"{lib[0]} is not installed")
            module = importlib.import_module(_REGISTRY[name])  # edgeinfer's module: no runtime import
        except Exception as e:  # a broken optional install is a reason, not a crash
            out.append({**base, "status": "unavailable", "reason": f"{type(e).__name__}: {e}"})
            continue
        opt, exact = _PRECISION_OPTION.get(name, (None, None))
        asked = base["options"].get(opt, exact) if opt else None
        if opt and asked != exact:
            base["variant"] = str(asked)
            if not opts["allow_reduced_precision"]:
                out.append({**base, "module": module, "status": "excluded",
                            "reason": f"options ask for {opt}={asked!r}; pass allow_reduced_precision=True"})
                continue
        out.append({**base, "module": module})
        if opts["allow_reduced_precision"] and name in REDUCED and asked == exact:
            variant, extra = REDUCED[name]
            out.append({**base, "module": module, "variant": variant, "options": {**base["options"], **extra}})
    return out


def _library_version(name: str) -> str | None:
    from importlib import metadata

    dist = _LIBRARY[name][1] if name in _LIBRARY else "numpy"
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return None


def _probe(c: dict, graph: Graph) -> None:
    """In-process measurement: the backend's own availability and op checks."""
    if c["status"] is not None:
        return
    try:
        ok, why = c["module"].available()
    except Exception as e:  # noqa: BLE001
        ok, why = False, f"{type(e).__name__}: {e}"
    if not ok:
        c["status"], c["reason"] = "unavailable", why
        return
    c["version"] = why
    missing = c["module"].unsupported(graph)
    if missing:
        c["status"] = "unsupported"
        c["reason"] = f"cannot run {len(missing)} op type(s): {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else "")


# ------------------------------------------------------------------------- measuring
def _measure(graph, input_shapes, threads, opts, candidates) -> tuple[Any, dict]:
    feeds = _feeds(graph, input_shapes, opts["feeds"])
    pool = _Isolated.open(graph, feeds, opts) if opts["isolate"] and feeds is not None else None
    try:
        live: list[dict] = []
        for c in candidates:
            if pool is None:
                _probe(c, graph)
            if c["status"] is not None:
                continue
            t0 = time.perf_counter()
            try:
                if pool is not None:
                    c["runner"] = pool.runner(c, threads)
                else:
                    c["runner"] = _InProcess(c["module"].compile(graph, input_shapes, threads, _with_profile(c, opts)))
                c["compile_ms"] = 1e3 * (time.perf_counter() - t0)
                c["outputs"] = c["runner"].outputs(feeds) if feeds is not None else None
            except _WorkerRefused as e:  # the worker found it unavailable or unable to run an op
                c["status"], c["reason"] = e.status, e.reason
                continue
            except (EdgeInferError, Exception) as e:  # noqa: B014  a candidate's failure is its reason
                c["status"], c["reason"] = "failed", f"{type(e).__name__}: {str(e)[:300]}"
                c.pop("runner", None)
                continue
            live.append(c)
        cpu = next((c for c in candidates if c["backend"] == "cpu" and c["variant"] == "f32"), None)
        if cpu is not None and cpu["status"] == "failed" and opts["feeds"] is None:
            raise _SyntheticInputsFailed(f"made-up inputs fail on the cpu backend: {cpu['reason'][:200]}")
        ref = next((c for c in live if c["backend"] == "cpu" and c["variant"] == "f32"), None)
        if ref is not None and feeds is not None:
            for c in live:
                if c is ref:
                    continue
                tol = opts["tolerance"] if c["variant"] in ("f32", "fp32") else opts["reduced_tolerance"]
                err, problem = _compare(graph, c["outputs"], ref["outputs"], tol)
                c["max_abs_err"] = err
                if problem:
                    c["status"], c["reason"] = "mismatch", problem
            live = [c for c in live if c["status"] is None]
        if not live:
            reasons = "; ".join(f"{c['backend']}({c['variant']}): {c['reason']}" for c in candidates)
            raise EdgeInferError(f"auto: no backend could run this model: {reasons}")
        if feeds is not None and len(live) > 1:
            _time(live, feeds, opts["runs"], opts["budget_s"])
            best = min(live, key=lambda c: c["median_ms"])
            where = "each in its own process, " if pool is not None else ""
            why = (f"lowest median of {len(live)} checked backends ({where}{len(best['samples'])} interleaved "
                   f"runs): {best['median_ms']:.3f} ms")
        else:
            best = live[0]
            why = "the only backend that could run it" if len(live) == 1 else "first candidate (inputs not synthesizable)"
    finally:
        if pool is not None:
            pool.close()
    for c in live:
        c["status"] = "ok"
    exe = best["runner"].exe if pool is None else best["module"].compile(graph, input_shapes, threads,
                                                                        _with_profile(best, opts))
    report = _report(candidates, best, why, input_shapes, opts, cached=False)
    return _Chosen(exe, report), report


class _InProcess:
    """A candidate compiled in this process."""

    def __init__(self, exe):
        self.exe = exe

    def outputs(self, feeds: dict) -> dict:
        return self.exe.run(dict(feeds))

    def run_ms(self, feeds: dict) -> float:
        t0 = time.perf_counter()
        self.exe.run(dict(feeds))
        return 1e3 * (time.perf_counter() - t0)


class _Isolated:
    """Candidates measured each in a worker process of its own (``edgeinfer bench``'s workers):
    one runtime's libraries can then not slow another down. Measured here: importing
    onnxruntime into a process makes OpenVINO ~33% slower on a 0.3 ms model; the winner is
    then compiled in the caller's process, which holds only the libraries it chose."""

    def __init__(self, folder: str, model: str, feeds: str, opts: dict):
        self.folder, self.model, self.feeds, self.opts = folder, model, feeds, opts
        self.workers: list = []

    @classmethod
    def open(cls, graph: Graph, feeds: dict, opts: dict):
        from ..api import save

        folder = tempfile.mkdtemp(prefix="edgeinfer-auto-")
        try:
            model = os.path.join(folder, "model.eim")
            save(graph, model)
            feeds_path = os.path.join(folder, "feeds.npz")
            np.savez(feeds_path, **feeds)
        except Exception:  # noqa: BLE001  a graph .eim cannot hold, object feeds: measure in process
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return cls(folder, model, feeds_path, opts)

    def runner(self, c: dict, threads):
        from pathlib import Path

        from ..bench import _Worker

        options = _with_profile(c, self.opts)
        json.dumps(options)  # a worker takes its options as JSON: say so here if they are not
        k = len(self.workers)
        row = {"status": "ok", "reason": None}
        w = _Worker(Path(self.model), c["backend"], threads, options, Path(self.feeds),
                    Path(self.folder) / f"out{k}.npz", row, 0)
        self.workers.append(w)
        w.start()
        w.ready()
        if row["status"] in ("unavailable", "unsupported"):
            raise _WorkerRefused(row["status"], row.get("reason") or row["status"])
        if row["status"] != "ok":
            raise EdgeInferError(row.get("reason") or row["status"])
        return _Remote(w)

    def close(self) -> None:
        for w in self.workers:
            w.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class _WorkerRefused(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class _Remote:
    def __init__(self, worker):
        self.w = worker

    def outputs(self, feeds: dict) -> dict:
        self.w.call({"cmd": "outputs"})
        with np.load(self.w.args["outputs"], allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def run_ms(self, feeds: dict) -> float:
        return float(self.w.call({"cmd": "run"})["ms"])


def _with_profile(c: dict, opts: dict) -> dict:
    o = dict(c["options"])
    if opts["profile"] and c["backend"] == "cpu":
        o["profile"] = True
    return o


def _feeds(graph: Graph, input_shapes: dict, given) -> dict | None:
    """The feeds every candidate is checked and timed with: the given ones or seeded synthetic
    ones; None when an input is a sequence/optional (nothing sensible to make up)."""
    if given is not None:
        if not isinstance(given, dict):
            raise InputError("auto option 'feeds' must be a dict of input name -> array")
        return dict(given)
    rng = np.random.default_rng(0)
    out = {}
    for v in graph.inputs:
        shape = input_shapes.get(v.name)
        if not _dt.is_tensor(v.dtype) or shape is None or not isinstance(shape, tuple):
            return None
        if v.dtype == "string":
            out[v.name] = np.full(shape, "", dtype=object)
        elif v.dtype in _dt.FLOAT_DTYPES:
            out[v.name] = rng.random(shape, dtype=np.float64).astype(_dt.to_numpy(v.dtype))
        else:
            out[v.name] = np.zeros(shape, dtype=_dt.to_numpy(v.dtype))
    return out


def _compare(graph: Graph, got: dict, ref: dict, tol: float) -> tuple[float | None, str | None]:
    worst = 0.0
    for name in graph.output_names:
        a, b = got.get(name), ref.get(name)
        if not isinstance(b, np.ndarray):
            continue  # sequences/optionals: the cpu backend's own tests cover them
        if not isinstance(a, np.ndarray) or a.shape != b.shape or a.dtype != b.dtype:
            desc = f"{getattr(a, 'dtype', type(a).__name__)}{list(getattr(a, 'shape', []))}"
            return None, f"output '{name}' is {desc}, the cpu backend gives {b.dtype}{list(b.shape)}"
        if b.dtype.kind in "fc":
            if b.size == 0:
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            if not np.array_equal(np.isnan(a64), np.isnan(b64)):
                return None, f"output '{name}' has NaNs where the cpu backend has none (or the reverse)"
            finite = np.isfinite(b64)
            err = float(np.max(np.abs(a64[finite] - b64[finite]), initial=0.0))
            scale = max(1.0, float(np.max(np.abs(b64[finite]), initial=0.0)))
            worst = max(worst, err)
            if err > tol * scale:
                return worst, f"output '{name}' differs from the cpu backend by {err:.3g} (limit {tol * scale:.3g})"
        elif not np.array_equal(a, b):
            return worst, f"output '{name}' differs from the cpu backend ({b.dtype}, compared exactly)"
    return worst, None


def _time(live: list[dict], feeds: dict, runs: int, budget_s: float) -> None:
    for c in live:
        c["runner"].run_ms(feeds)  # warm-up
        c["samples"] = []
    start, rounds = time.perf_counter(), 0
    rng = np.random.default_rng(0)
    while True:
        for k in rng.permutation(len(live)):  # a fresh order every round (see edgeinfer.bench)
            c = live[k]
            c["samples"].append(c["runner"].run_ms(feeds))
        rounds += 1
        elapsed = time.perf_counter() - start
        if rounds >= 3 and elapsed > budget_s:
            break
        # enough runs, and enough time in each candidate that a sub-millisecond model's median
        # is not decided by the clock's resolution and one scheduler hiccup
        if rounds >= runs and min(sum(c["samples"]) for c in live) >= 1e3 * _MIN_TIMED_S:
            break
    for c in live:
        c["median_ms"] = float(np.median(c["samples"]))


def _report(candidates, best, why, input_shapes, opts, cached: bool) -> dict:
    rows = []
    for c in candidates:
        rows.append({"backend": c["backend"], "variant": c["variant"], "status": c["status"], "reason": c["reason"],
                     "version": c.get("version"), "median_ms": c.get("median_ms"),
                     "max_abs_err": c.get("max_abs_err"), "compile_ms": c.get("compile_ms")})
    return {
        "chosen": best["backend"],
        "variant": best["variant"],
        "options": _jsonable(best["options"]),
        "cached": cached,
        "reason": why,
        "policy": "reduced precision allowed" if opts["allow_reduced_precision"] else "f32",
        "shapes": {k: list(v) if isinstance(v, tuple) else None for k, v in input_shapes.items()},
        "candidates": rows,
    }


class _Chosen:
    """The winner's executable, with the decision attached."""

    def __init__(self, exe, report: dict):
        self.exe = exe
        self.backend_report = report
        self.run = exe.run

    def __getattr__(self, name):  # profile(), graph, ... of the chosen backend's executable
        return getattr(self.exe, name)


# ------------------------------------------------------------------------- the cache
def _machine() -> dict:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "machine": platform.machine(), "system": platform.system()}


def _cache_key(graph, input_shapes, threads, opts, candidates) -> str | None:
    if opts["feeds"] is not None:
        return None  # a decision made on the caller's data is not reused for other data
    extra = {
        "threads": threads,
        "candidates": [(c["backend"], c["variant"], c["status"], c["version"]) for c in candidates],
        "isolate": opts["isolate"],
        "options": _jsonable({k: opts[k] for k in ("backend_options", "allow_reduced_precision", "tolerance",
                                                    "reduced_tolerance")}),
        "machine": _machine(),
    }
    return graph_digest(graph, input_shapes, extra, salt=f"auto-{CACHE_VERSION}")


def _cache_file(key: str):
    return edgeinfer_cache() / "auto" / f"{key}.json"


def _cached_choice(key, graph, input_shapes, threads, opts, candidates):
    path = _cache_file(key)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        name, variant = stored["chosen"], stored["variant"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no entry, or one we cannot read: measure afresh (and overwrite it)
    c = next((c for c in candidates if c["backend"] == name and c["variant"] == variant and c["status"] is None), None)
    if c is None:
        return None
    try:
        exe = c["module"].compile(graph, input_shapes, threads, _with_profile(c, opts))
    except Exception:  # noqa: BLE001  the cached winner no longer compiles: measure afresh
        return None
    report = dict(stored)
    report["cached"] = True
    report["reason"] = f"cached decision ({path.name}): {stored.get('reason', '')}"
    return _Chosen(exe, report)


def _store(key: str, report: dict) -> None:
    from .._files import write_atomic

    path = _cache_file(key)
    try:
        data = json.dumps(report, indent=1).encode("utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: f.write(data))
    except (OSError, TypeError, ValueError):
        pass  # a read-only cache folder costs a re-measure next time, nothing else


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)
