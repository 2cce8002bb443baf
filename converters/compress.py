"""Compression recipes and the one report that follows every step (issue 8).

A recipe is an ordered list of steps, each one of :data:`STEPS`, run on the model in that
order (any order: prune then distill then quantize is the usual one)::

    # recipe.yaml (or the same structure as .json)
    steps:
      - prune: {channels: 0.3, criterion: l2}      # or {target_macs: 0.3} or {sparsity: 0.7}
      - distill: {epochs: 20, temperature: 4}      # teacher: the original model
      - quantize: {mode: static, method: mse}      # calibrated on the same unlabeled data

Step options are the keyword arguments of the function behind each step
(:func:`.prune_channels.prune_channels` / :func:`.prune.prune_magnitude`,
:class:`.distill.DistillConfig`, :func:`.quantize.quantize`); an unknown one is an
:class:`~edgeinfer.errors.InputError` naming the step and the options it takes, before any work
starts.

:func:`compress` runs a recipe and measures every stage (the original and the model after each
step) the same way: file size (``.eim`` and ``.onnx``), parameters, MACs, latency measured on
each backend asked for (one :func:`edgeinfer.bench.bench` run, all stages interleaved, one
process per stage and backend), a predicted latency (the original's measured latency scaled by
the MAC ratio: what the MAC count promises, next to what the backend delivers), and accuracy:
the user's ``evaluate(session) -> float`` when given, and always the argmax agreement and output
error against the original on held-out inputs. :func:`write_report` writes it as JSON, a
Markdown table and a PNG of accuracy against latency.
"""
from __future__ import annotations

import inspect
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgeinfer.errors import InputError, MissingDependencyError
from edgeinfer.graph import Graph

STEPS = ("prune", "distill", "quantize")
SCHEMA = "edgeinfer.compress/1"


@dataclass
class Step:
    kind: str
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if k not in ("progress", "checkpoint"))
        return f"{self.kind}({opts})"


# ----------------------------------------------------------------------------- recipes
def _allowed(kind: str, options: Mapping[str, Any]) -> set[str]:
    if kind == "prune":
        from .prune import prune_magnitude
        from .prune_channels import prune_channels

        fn = prune_magnitude if "sparsity" in options else prune_channels
        names = set(inspect.signature(fn).parameters) - {"graph", "calibration", "progress"}
        return names | ({"sparsity"} if fn is prune_magnitude else {"channels"})
    if kind == "distill":
        from .distill import DistillConfig

        return set(DistillConfig.__dataclass_fields__)
    from .quantize import quantize

    return set(inspect.signature(quantize).parameters) - {"graph", "calibration", "accuracy", "progress"}


def parse_recipe(recipe: Any) -> list[Step]:
    """Steps from a recipe: a path to a .yaml/.yml/.json file, a dict with ``steps``, or a list
    of ``{kind: {options}}`` items (or :class:`Step`)."""
    if isinstance(recipe, (str, os.PathLike)):
        path = Path(recipe)
        if not path.is_file():
            raise InputError(f"recipe '{path}' does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise MissingDependencyError(f"recipe '{path}' is YAML, which needs PyYAML: pip install pyyaml "
                                             f"(or write the recipe as .json)") from None
            try:
                recipe = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise InputError(f"recipe '{path}' is not valid YAML: {e}") from None
        else:
            try:
                recipe = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"recipe '{path}' is not valid JSON: {e}") from None
    if isinstance(recipe, Mapping):
        if "steps" not in recipe:
            raise InputError(f"recipe has no 'steps' list (keys: {sorted(recipe)})")
        recipe = recipe["steps"]
    if not isinstance(recipe, (list, tuple)) or not recipe:
        raise InputError("recipe 'steps' must be a non-empty list")
    steps = []
    for i, item in enumerate(recipe, 1):
        if isinstance(item, Step):
            kind, options = item.kind, dict(item.options)
        elif isinstance(item, str):
            kind, options = item, {}
        elif isinstance(item, Mapping) and len(item) == 1:
            kind, options = next(iter(item.items()))
            options = dict(options or {})
        else:
            raise InputError(f"recipe step {i}: expected {{kind: {{options}}}} with one kind, got {item!r}")
        if kind not in STEPS:
            raise InputError(f"recipe step {i}: unknown step '{kind}'; steps are {list(STEPS)}")
        if kind == "prune" and sum(k in options for k in ("channels", "target_macs", "sparsity")) != 1:
            raise InputError(f"recipe step {i} (prune): give exactly one of channels, target_macs or sparsity")
        unknown = sorted(set(options) - _allowed(kind, options))
        if unknown:
            raise InputError(f"recipe step {i} ({kind}): unknown option(s) {unknown}; it takes "
                             f"{sorted(_allowed(kind, options))}")
        steps.append(Step(kind, options))
    return steps


# ----------------------------------------------------------------------------- running
def _feeds(samples: Mapping[str, np.ndarray], idx: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{k: v[i:i + 1] for k, v in samples.items()} for i in idx]


def run_step(step: Step, graph: Graph, original: Graph, samples: Mapping[str, np.ndarray],
             calib_idx: np.ndarray, progress: bool = True) -> Graph:
    """Apply one step to ``graph``; ``original`` is the distillation teacher."""
    opts = dict(step.options)
    if step.kind == "prune":
        if "sparsity" in opts:
            from .prune import prune_magnitude

            return prune_magnitude(graph, opts.pop("sparsity"), **opts)
        from .prune_channels import prune_channels

        ratio = opts.pop("channels", None)
        return prune_channels(graph, ratio, calibration=_feeds(samples, calib_idx), **opts)
    if step.kind == "distill":
        from .distill import distill

        opts.setdefault("progress", progress)
        return distill(original, graph, dict(samples), **opts).student
    from .quantize import quantize

    mode = opts.get("mode", "static")
    calib = _feeds(samples, calib_idx) if mode == "static" else []
    return quantize(graph, calib, **opts)


def _stage_facts(graph: Graph, shapes: Mapping[str, tuple], folder: Path, tag: str) -> dict:
    import edgeinfer
    from edgeinfer.cost import count_macs

    eim, onnx = folder / f"{tag}.eim", folder / f"{tag}.onnx"
    edgeinfer.save(graph, eim)
    edgeinfer.save(graph, onnx)
    macs = count_macs(graph, dict(shapes))
    return {"eim_bytes": eim.stat().st_size, "onnx_bytes": onnx.stat().st_size, "params": int(graph.param_count()),
            "macs": int(macs["total_macs"]), "onnx_path": str(onnx)}


def _output_agreement(reference: Graph, graph: Graph, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict:
    from edgeinfer.session import Session

    a, b = Session(reference), Session(graph)
    name = reference.output_names[0]
    same, total, err, scale = 0, 0, 0.0, 0.0
    for f in feeds:
        ra, rb = a.run(dict(f))[name], b.run(dict(f))[name]
        if ra.ndim >= 1 and ra.shape[-1] > 1:
            same += int(np.sum(ra.argmax(-1) == rb.argmax(-1)))
            total += int(np.prod(ra.shape[:-1]))
        err = max(err, float(np.abs(ra.astype(np.float64) - rb).max()))
        scale = max(scale, float(np.abs(ra).max()))
    return {"agreement": same / total if total else None, "max_abs_error": err,
            "rel_error": err / scale if scale else None}


def _evaluate(evaluate: Callable[[Any], Any], session) -> tuple[float, dict]:
    """The user's metric: a number, or a dict of named numbers whose first is the headline."""
    value = evaluate(session)
    if isinstance(value, Mapping):
        if not value:
            raise InputError("compress: evaluate(session) returned an empty dict")
        metrics = {str(k): float(v) for k, v in value.items()}
        return next(iter(metrics.values())), metrics
    return float(value), {}


def compress(graph: Graph, recipe: Any, data: Any, *, evaluate: Callable[[Any], float] | None = None,
             backends: Sequence[str] = ("cpu", "ort"), measure: bool = True, threads: int = 1,
             min_seconds: float = 1.0, held_out: float = 0.2, calibration: int = 64, seed: int = 0,
             progress: bool = True, workdir: str | os.PathLike | None = None) -> tuple[Graph, dict]:
    """Run ``recipe`` on ``graph`` and report every stage (module docstring).

    Args:
        graph: the original model (not changed); it is also the distillation teacher.
        recipe: see :func:`parse_recipe`.
        data: unlabeled inputs (any form :func:`.distill.load_samples` takes). ``held_out`` of
            them (at least one) are kept out of every step and score agreement; the rest train
            distillation, and the first ``calibration`` of those calibrate pruning and quantization.
        evaluate: the user's metric, ``evaluate(session) -> float`` (higher is better), or a
            dict of named metrics whose first is the headline ``accuracy``.
        backends: backends whose latency is measured (``measure=False`` skips timing).
        threads, min_seconds: per backend, for the measurement.

    Returns:
        (the compressed graph, the report dict of schema ``edgeinfer.compress/1``).
    """
    from edgeinfer.session import Session

    from .distill import load_samples

    steps = parse_recipe(recipe)
    samples = load_samples(data, graph)
    n = len(next(iter(samples.values())))
    if n < 2:
        raise InputError(f"compress: need at least 2 input samples (some are held out), got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_held = min(n - 1, max(1, int(round(held_out * n))))
    held_idx, train_idx = np.sort(order[:n_held]), np.sort(order[n_held:])
    train = {k: v[train_idx] for k, v in samples.items()}
    calib_idx = np.arange(min(calibration, len(train_idx)))
    held_feeds = _feeds(samples, held_idx)
    shapes = {k: (1,) + tuple(v.shape[1:]) for k, v in samples.items()}

    stages: list[tuple[str, Graph, float]] = [("original", graph, 0.0)]
    current = graph
    for i, step in enumerate(steps, 1):
        if progress:
            import sys

            print(f"compress: step {i}/{len(steps)} {step.label}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        current = run_step(step, current, graph, train, calib_idx, progress)
        stages.append((step.label, current, time.perf_counter() - t0))

    report: dict[str, Any] = {"schema": SCHEMA, "recipe": [{s.kind: s.options} for s in steps],
                              "samples": {"train": int(len(train_idx)), "held_out": int(n_held),
                                          "calibration": int(len(calib_idx))},
                              "input_shapes": {k: list(v) for k, v in shapes.items()}, "backends": list(backends),
                              "stages": []}
    tmp = tempfile.TemporaryDirectory(prefix="edgeinfer-compress-") if workdir is None else None
    folder = Path(workdir or tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for k, (label, g, seconds) in enumerate(stages):
            entry = {"stage": label, "seconds": round(seconds, 2), **_stage_facts(g, shapes, folder, f"stage{k}")}
            entry.update(_output_agreement(graph, g, held_feeds))
            entry["accuracy"], entry["metrics"] = _evaluate(evaluate, Session(g)) if evaluate is not None else (None, {})
            report["stages"].append(entry)
        if measure and backends:
            _measure(report, backends, threads, min_seconds, {k: v[:1] for k, v in samples.items()})
    finally:
        for entry in report["stages"]:
            entry.pop("onnx_path", None)
        if tmp is not None:
            tmp.cleanup()
    return current, report


def _measure(report: dict, backends: Sequence[str], threads: int, min_seconds: float, inputs: dict) -> None:
    from edgeinfer.bench import bench

    paths = [e["onnx_path"] for e in report["stages"]]
    res = bench(paths, list(backends), threads=threads, min_seconds=min_seconds, inputs=inputs, profile=False)
    report["manifest"] = res.get("manifest")
    by = {(r["model"], r["backend"]): r for r in res["results"]}
    base = report["stages"][0]
    for e in report["stages"]:
        e["latency_ms"], e["predicted_ms"], e["status"] = {}, {}, {}
        for b in backends:
            r = by.get((e["onnx_path"], b))
            ok = r is not None and r["status"] == "ok" and r.get("latency_ms")
            e["latency_ms"][b] = r["latency_ms"]["median"] if ok else None
            e["status"][b] = "ok" if ok else (r or {}).get("reason") or (r or {}).get("status")
    for e in report["stages"]:
        for b in backends:
            ref = base["latency_ms"].get(b)
            e["predicted_ms"][b] = ref * e["macs"] / base["macs"] if ref and base["macs"] else None


# ----------------------------------------------------------------------------- output
def markdown_table(report: dict) -> str:
    """The report as a Markdown table, one row per stage."""
    backends = report.get("backends", [])
    head = ["stage", ".eim", ".onnx", "params", "MACs", "agreement", "accuracy"]
    head += [f"{b} ms (pred)" for b in backends if any(e.get("latency_ms") for e in report["stages"])]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in report["stages"]:
        cells = [e["stage"], f"{e['eim_bytes'] / 1e6:.3f} MB", f"{e['onnx_bytes'] / 1e6:.3f} MB", f"{e['params']:,}",
                 f"{e['macs'] / 1e6:.2f} M",
                 "-" if e.get("agreement") is None else f"{e['agreement']:.4f}",
                 "-" if e.get("accuracy") is None else f"{e['accuracy']:.4f}"]
        for b in backends:
            if not e.get("latency_ms"):
                continue
            m, p = e["latency_ms"].get(b), e["predicted_ms"].get(b)
            cells.append("-" if m is None else f"{m:.3f} ({p:.3f})" if p is not None else f"{m:.3f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot(report: dict, path: str | os.PathLike) -> Path:
    """PNG: accuracy (the user's metric, else agreement with the original) against measured
    latency, one line per backend through the stages in order."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("the compression plot needs matplotlib: pip install matplotlib") from None
    stages = report["stages"]
    use_acc = all(e.get("accuracy") is not None for e in stages)
    ykey, ylabel = ("accuracy", "accuracy (your metric)") if use_acc else ("agreement", "argmax agreement with original")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for b in report.get("backends", []):
        pts = [(e["latency_ms"].get(b), e.get(ykey), e["stage"]) for e in stages if e.get("latency_ms")]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=b)
        for x, y, s in pts:
            ax.annotate(s.split("(")[0], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("median latency, ms (lower is better)")
    ax.set_ylabel(ylabel)
    ax.set_title("compression: accuracy vs latency per backend")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(out.name + ".part.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def write_report(report: dict, prefix: str | os.PathLike, *, png: bool = True) -> list[Path]:
    """``prefix``.json, ``prefix``.md and (with ``png``) ``prefix``.png; returns the paths."""
    from edgeinfer._files import write_atomic

    base = Path(prefix)
    if base.suffix.lower() in (".json", ".md", ".png"):
        base = base.with_suffix("")
    out = [base.with_suffix(".json"), base.with_suffix(".md")]
    text = json.dumps(report, indent=2, default=float).encode()
    write_atomic(out[0], lambda f: f.write(text))
    table = markdown_table(report).encode()
    write_atomic(out[1], lambda f: f.write(table))
    if png and any(e.get("latency_ms") for e in report["stages"]):
        out.append(plot(report, base.with_suffix(".png")))
    return out
