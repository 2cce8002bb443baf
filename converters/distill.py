"""Knowledge distillation of a pruned (or otherwise degraded) student from its teacher (issue 8).

Pruning costs accuracy; distillation wins it back without labels: the student is trained to
reproduce the teacher's outputs (and, where the tensors still line up, some of its intermediate
features) on unlabeled inputs. :func:`distill` takes two IR graphs with the same inputs and
outputs (tensor names kept by the pruning passes, channel counts may shrink), trains the
student in torch (:mod:`.torch_ir`) and writes the trained weights back into a copy of the
student graph.

How the pieces are chosen, and why:

* **The teacher runs once.** It is fixed, so its targets are computed a single time per sample
  on edgeinfer's own numpy cpu backend (the graph is given the extra outputs it needs, as ORT's
  calibrator augments a graph) and kept in memory; no torch copy of the teacher exists.
* **Output losses.** An output that holds probabilities (produced by a Softmax/LogSoftmax node,
  or, for ``output_loss="auto"``, whose values lie in [0, 1] and sum to 1 along the last axis)
  is matched with Hinton's soft-target loss ``KL(softmax(t/T) || softmax(s/T)) * T^2``. Where a
  Softmax produces it, the loss reads the Softmax's *input* (the logits) from both graphs: the
  temperature acts on logits, and no ``log(0)`` appears. Other outputs (regression, maps such as
  a detector's probability map, raw logits under ``"auto"``) get a mean squared error divided by
  the teacher's variance, so outputs of different scales weigh the same.
* **Feature losses.** Structured pruning keeps the shapes of block outputs (a residual add
  forces them), so tensors present in both graphs with equal shapes are matched with the same
  normalised MSE, weighted by ``feature_weight``. At most :data:`MAX_AUTO_FEATURES`, spread over
  depth, and within a memory budget for the cache (:data:`FEATURE_CACHE_BYTES`).
* **Training** is Adam with a per-step cosine schedule, deterministic for a seed (torch seed,
  a numpy Generator for the split and the shuffles, deterministic torch algorithms). The best
  epoch on the held-out part (argmax agreement with the teacher, then loss) is what is kept.
* **Checkpoints** are written atomically after each epoch; a later call with the same settings
  continues from the next epoch and ends with the same weights as a run never interrupted.

Loading the samples and choosing what is matched (outputs, features) live in
:mod:`.distill_data`; its public names are importable from here too.

torch is the optional ``train`` extra; importing this module needs numpy only.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeinfer.errors import InputError, require
from edgeinfer.graph import Graph, ValueInfo

# the data side (samples, output/feature planning) lives in distill_data; re-exported here
from .distill_data import (FEATURE_CACHE_BYTES, MAX_AUTO_FEATURES, OutputLoss, _choose_features, _chunk_size,
                           _plan_outputs, load_samples)

OUTPUT_LOSSES = ("auto", "kl", "mse")
CHECKPOINT_FORMAT = "edgeinfer.distill/1"
_PROB_EPS = 1e-12
SPARSE_FRACTION = 0.1  # a weight this share of exact zeros was pruned; keep_sparsity keeps its zeros
# settings a checkpoint must share with the call resuming it: each changes the weights produced
_RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "temperature", "output_loss", "feature_weight",
                "seed", "val_fraction", "keep_sparsity")


def _torch():
    return require("torch", "train", "distillation")


# ------------------------------------------------------------------------------------ config
@dataclass
class DistillConfig:
    """Settings of :func:`distill`; any field may also be passed to it as a keyword.

    Attributes:
        epochs: passes over the training part of the data.
        batch_size: samples per optimizer step (rounded down to a multiple of a fixed batch dim).
        lr: Adam's peak learning rate; it follows a cosine down to 0 over all steps.
        weight_decay: Adam's (L2) weight decay.
        temperature: softens both distributions of a KL output loss (Hinton et al., 2015).
        output_loss: ``"kl"``, ``"mse"`` or ``"auto"`` (decided per output, module docstring).
        feature_weight: weight of the mean feature MSE against the output losses.
        features: tensor names to match; ``None`` chooses them (module docstring); ``[]`` none.
        seed: seeds the split, the shuffles and torch.
        checkpoint: file written after each epoch (``None``: no checkpoint).
        resume: continue from ``checkpoint`` when it exists and matches these settings.
        progress: one line per epoch on stderr.
        val_fraction: share of the samples held out for validation and model selection.
        threads: torch CPU threads while training (``None``: leave torch's setting).
        keep_sparsity: weights that are at least :data:`SPARSE_FRACTION` exact zeros (a
            magnitude-pruned student) keep those zeros: training would otherwise undo the pruning.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    temperature: float = 4.0
    output_loss: str = "auto"
    feature_weight: float = 1.0
    features: Sequence[str] | None = None
    seed: int = 0
    checkpoint: str | Path | None = None
    resume: bool = True
    progress: bool = True
    val_fraction: float = 0.1
    threads: int | None = None
    keep_sparsity: bool = True

    def check(self) -> "DistillConfig":
        """Raise InputError for a setting outside its range; return self."""
        problems = []
        if not isinstance(self.epochs, int) or self.epochs < 1:
            problems.append(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0, got {self.temperature!r}")
        if self.output_loss not in OUTPUT_LOSSES:
            problems.append(f"output_loss must be one of {list(OUTPUT_LOSSES)}, got {self.output_loss!r}")
        if self.feature_weight < 0:
            problems.append(f"feature_weight must be >= 0, got {self.feature_weight!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            problems.append(f"threads must be a positive integer or None, got {self.threads!r}")
        if isinstance(self.features, str):
            problems.append(f"features must be a list of tensor names, got the string {self.features!r}")
        if problems:
            raise InputError("distill: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["checkpoint"] = None if self.checkpoint is None else str(self.checkpoint)
        d["features"] = None if self.features is None else list(self.features)
        return d


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
        student: the student graph with the kept (best epoch's) weights and
            ``metadata["edgeinfer.distillation"]``; for :func:`distill_modules`, the module.
        history: one dict per epoch (loss, val_loss, val_agreement, val_mse, lr, seconds).
        metrics: ``agreement``, ``mse``, ``loss`` after, ``before`` and ``after`` dicts, ``best_epoch``.
        features: the feature tensors that were matched.
        outputs: per output, the loss used.
        config: the settings used.
    """

    student: Any
    history: list[dict]
    metrics: dict
    features: list[str]
    outputs: list[dict]
    config: DistillConfig

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps({"config": self.config.to_dict(), "features": self.features, "outputs": self.outputs,
                           "metrics": self.metrics, "history": self.history}, indent=indent)


# ------------------------------------------------------------------------------------ checks
def _check_pair(teacher: Graph, student: Graph) -> None:
    """Teacher and student must take the same inputs and give the same outputs (names, shapes)."""
    diffs = []
    for kind, t_list, s_list in (("inputs", teacher.required_inputs(), student.required_inputs()),
                                 ("outputs", teacher.outputs, student.outputs)):
        t = {v.name: v for v in t_list}
        s = {v.name: v for v in s_list}
        if list(t) != list(s):
            diffs.append(f"{kind} differ: teacher {list(t)}, student {list(s)}")
            continue
        for name in t:
            a, b = t[name], s[name]
            if a.dtype != b.dtype:
                diffs.append(f"{kind[:-1]} '{name}': teacher dtype {a.dtype}, student {b.dtype}")
            elif a.shape is not None and b.shape is not None and (
                    len(a.shape) != len(b.shape)
                    or any(isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a.shape, b.shape))):
                diffs.append(f"{kind[:-1]} '{name}': teacher shape {list(a.shape)}, student {list(b.shape)}")
    if diffs:
        raise InputError(f"distill: teacher '{teacher.name}' and student '{student.name}' do not match: "
                         + "; ".join(diffs))


def _shapes(graph: Graph, samples: dict[str, np.ndarray], chunk: int) -> dict:
    """Every tensor's type for one run of ``chunk`` (or 1) samples."""
    from edgeinfer.shape_inference import infer_shapes

    k = chunk or 1
    return infer_shapes(graph, {n: (k,) + a.shape[1:] for n, a in samples.items()})


# ---------------------------------------------------------------------------------- teacher
def _with_outputs(graph: Graph, names: Sequence[str], types: dict) -> Graph:
    """A copy of ``graph`` whose outputs are ``names`` (the calibrator's augmented graph)."""
    g = copy.copy(graph)
    g.outputs = [ValueInfo(n, types[n].dtype, None) for n in names]  # shapes left open: batch dims vary
    g.metadata = dict(graph.metadata)
    return g


def _run_graph(graph: Graph, samples: dict[str, np.ndarray], names: Sequence[str], types: dict, chunk: int,
               batch: int = 64) -> dict[str, np.ndarray]:
    """``names`` for every sample, on the numpy cpu backend, ``chunk`` (or ``batch``) at a time."""
    from edgeinfer.session import Session

    sess = Session(_with_outputs(graph, names, types), backend="cpu")
    n = len(next(iter(samples.values())))
    step = chunk or batch
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for i in range(0, n, step):
        out = sess.run({k: v[i:i + step] for k, v in samples.items()})
        for k in names:
            parts[k].append(_per_sample(np.asarray(out[k]), min(step, n - i)))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _per_sample(arr, batch: int):
    """A tensor whose first axis folds the batch with another (a Softmax on a ``[N*T, C]`` view:
    PP-OCR rec) as ``[batch, -1, ...]``, so indexing by sample works on teacher and student
    alike; others as they are. Works for numpy arrays and torch tensors."""
    if arr.ndim >= 1 and arr.shape[0] != batch and batch > 0 and arr.shape[0] % batch == 0:
        return arr.reshape(batch, arr.shape[0] // batch, *arr.shape[1:])
    return arr


# ----------------------------------------------------------------------------------- losses
def _kl(torch, teacher_logits, student_logits, axis: int, temperature: float, probs: bool):
    """Hinton's soft-target loss, mean over every position but the class axis, times T^2."""
    f = torch.nn.functional
    if probs:
        teacher_logits = torch.log(teacher_logits.clamp_min(_PROB_EPS))
        student_logits = torch.log(student_logits.clamp_min(_PROB_EPS))
    t = f.log_softmax(teacher_logits / temperature, dim=axis)
    s = f.log_softmax(student_logits / temperature, dim=axis)
    return (t.exp() * (t - s)).sum(dim=axis).mean() * temperature * temperature


class _Objective:
    """The distillation loss and the validation metrics over cached teacher targets."""

    def __init__(self, plan: list[OutputLoss], features: list[str], targets: dict[str, np.ndarray],
                 train_idx: np.ndarray, config: DistillConfig):
        self.plan, self.features, self.config = plan, features, config
        # one scale per tensor: MSE / teacher variance weighs outputs of any range alike
        self.var = {}
        for name in [p.target for p in plan if p.kind == "mse"] + features:
            self.var[name] = max(float(np.var(targets[name][train_idx], dtype=np.float64)), 1e-8)

    def loss(self, torch, got: dict, want: dict):
        total = 0.0
        for p in self.plan:
            s, t = got[p.target], want[p.target]
            if p.kind == "kl":
                total = total + _kl(torch, t, s, p.axis, self.config.temperature, p.probs)
            else:
                total = total + ((s - t) ** 2).mean() / self.var[p.target]
        if self.features and self.config.feature_weight:
            feat = sum(((got[n] - want[n]) ** 2).mean() / self.var[n] for n in self.features) / len(self.features)
            total = total + self.config.feature_weight * feat
        return total

    def output_of(self, torch, p: OutputLoss, target):
        """The graph output from the loss's target tensor (the Softmax applied back)."""
        if p.softmax == "Softmax":
            return torch.softmax(target, dim=p.axis)
        if p.softmax == "LogSoftmax":
            return torch.log_softmax(target, dim=p.axis)
        return target


# ---------------------------------------------------------------------------------- student
class _StudentRunner:
    """Runs the student module on a batch, ``chunk`` samples at a time for a fixed batch dim."""

    def __init__(self, module, names: list[str], chunk: int, run: Callable | None = None):
        self.module, self.names, self.chunk = module, names, chunk
        self._run = run or (lambda feeds: module.run(feeds, extra=names))

    def __call__(self, torch, feeds: dict) -> dict:
        n = len(next(iter(feeds.values())))
        if not self.chunk or self.chunk >= n:
            out = self._run(feeds)
            return {k: _per_sample(out[k], n) for k in self.names}
        parts = []
        for i in range(0, n, self.chunk):
            out = self._run({k: v[i:i + self.chunk] for k, v in feeds.items()})
            parts.append({k: _per_sample(out[k], min(self.chunk, n - i)) for k in self.names})
        return {k: torch.cat([p[k] for p in parts]) for k in self.names}


def _split(n: int, chunk: int, config: DistillConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sample indices: a seeded permutation, ``val_fraction`` held out (at
    least one sample when asked for, a multiple of a fixed batch). With nothing held out the
    validation indices are the training ones, so model selection still has something to read."""
    order = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(2)[0]).permutation(n)
    n_val = int(round(n * config.val_fraction)) if n > 1 else 0
    if config.val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    if chunk:
        n_val -= n_val % chunk
    train = np.sort(order[n_val:])
    return train, (np.sort(order[:n_val]) if n_val else train)


def _param_shapes(module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _signature(config: DistillConfig, plan, features, module, n_samples: int) -> dict:
    cfg = config.to_dict()
    sig = {k: cfg[k] for k in _RESUME_KEYS}
    sig.update(features=list(features), outputs=[f"{p.output}:{p.kind}" for p in plan], samples=int(n_samples),
               student=_param_shapes(module))
    return sig


def _signature_diff(saved: dict, now: dict) -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if a == b:
            continue
        if key == "student" and isinstance(a, dict) and isinstance(b, dict):
            names = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            shown = ", ".join(f"{k}: checkpoint {a.get(k)} now {b.get(k)}" for k in names[:4])
            diffs.append(f"student weights differ ({len(names)}): {shown}")
        else:
            diffs.append(f"{key}: checkpoint {a!r}, now {b!r}")
    return diffs


def _save_checkpoint(torch, path: Path, state: dict) -> None:
    """torch.save to a temp file beside ``path``, then an atomic rename: a crash mid-write
    leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _load_checkpoint(torch, path: Path, signature: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own text advises weights_only=False: not for a file we did not write
        why = f"{type(e).__name__}: {e}" if isinstance(e, OSError) else f"not a torch weights file: {type(e).__name__}"
        raise InputError(f"distill: checkpoint '{path}' cannot be read as a distillation checkpoint "
                         f"({why}); delete it or pass resume=False") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"distill: '{path}' is not a distillation checkpoint (format {CHECKPOINT_FORMAT})")
    diffs = _signature_diff(state["signature"], signature)
    if diffs:
        raise InputError(f"distill: checkpoint '{path}' was written with other settings: " + "; ".join(diffs)
                         + ". Delete it, pass another checkpoint path, or resume=False")
    return state


def _sparsity_masks(params) -> list:
    """(parameter, nonzero mask) for every weight matrix/kernel that is mostly pruned; the mask
    is reapplied after each step, since Adam's momentum and weight decay move zeros too."""
    masks = []
    for p in params:
        if p.dim() >= 2 and p.numel():
            nonzero = p.detach() != 0
            if 1.0 - float(nonzero.float().mean()) >= SPARSE_FRACTION:
                masks.append((p, nonzero.to(p.dtype)))
    return masks


def _clone_state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _better(a: dict, b: dict | None) -> bool:
    """Model selection: higher agreement, then lower loss (agreement None: loss only)."""
    if b is None:
        return True
    ka = (a["val_agreement"] if a["val_agreement"] is not None else 0.0, -a["val_loss"])
    kb = (b["val_agreement"] if b["val_agreement"] is not None else 0.0, -b["val_loss"])
    return ka > kb


def _fit(module, runner: _StudentRunner, samples: dict[str, np.ndarray], targets: dict[str, np.ndarray],
         objective: _Objective, config: DistillConfig, chunk: int, signature: dict,
         callback: Callable | None) -> tuple[list[dict], dict]:
    """The training loop (module docstring); leaves the best epoch's weights in ``module``."""
    torch = _torch()
    n = len(next(iter(samples.values())))
    train_idx, val_idx = _split(n, chunk, config)
    n_val = len(val_idx) if val_idx is not train_idx else 0
    batch = max(config.batch_size - (config.batch_size % chunk if chunk else 0), chunk or 1)
    steps = math.ceil(len(train_idx) / batch)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(2)[1])

    torch.manual_seed(config.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise InputError("distill: the student has no trainable parameters")
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    masks = _sparsity_masks(params) if config.keep_sparsity else []
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, config.epochs * steps) / (config.epochs * steps))))
    history: list[dict] = []
    best: dict | None = None
    best_state = None
    start = 1
    path = Path(config.checkpoint) if config.checkpoint is not None else None
    if path is not None and config.resume and path.exists():
        state = _load_checkpoint(torch, path, signature)
        module.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = state["numpy_rng"]
        history = list(state["history"])
        best, best_state = state["best"], state["best_state"]
        start = int(state["epoch"]) + 1
        if config.progress:
            print(f"distill: resuming from '{path}' after epoch {state['epoch']}/{config.epochs}", file=sys.stderr,
                  flush=True)

    def tensors(idx, source):
        return {k: torch.from_numpy(source[k][idx]) for k in (source if source is samples else runner.names)}

    def evaluate(idx) -> dict:
        module.eval()
        total, count = 0.0, 0
        agree = {p.output: [0, 0] for p in objective.plan if p.classes}
        sq = {p.output: [0.0, 0] for p in objective.plan}
        with torch.no_grad():
            for i in range(0, len(idx), batch):
                b = idx[i:i + batch]
                got, want = runner(torch, tensors(b, samples)), tensors(b, targets)
                total += float(objective.loss(torch, got, want)) * len(b)
                count += len(b)
                for p in objective.plan:
                    s, t = got[p.target], want[p.target]
                    if p.classes:
                        axis = p.axis if p.kind == "kl" else -1
                        hit = s.argmax(dim=axis) == t.argmax(dim=axis)
                        agree[p.output][0] += int(hit.sum())
                        agree[p.output][1] += hit.numel()
                    so, to = objective.output_of(torch, p, s), objective.output_of(torch, p, t)
                    sq[p.output][0] += float(((so - to) ** 2).sum())
                    sq[p.output][1] += so.numel()
        rates = [a / max(c, 1) for a, c in agree.values()]
        return {"val_loss": total / max(count, 1),
                "val_agreement": float(np.mean(rates)) if rates else None,
                "val_mse": float(np.mean([s / max(c, 1) for s, c in sq.values()]))}

    before = evaluate(val_idx) if start == 1 else (history[0].get("before") if history else None)
    # within an epoch, a live bar on a terminal; a log gets the line per epoch only
    bar = config.progress and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        module.train()
        perm = train_idx[rng.permutation(len(train_idx))]
        losses = []
        for i in range(0, len(perm), batch):
            b = perm[i:i + batch]
            if chunk:
                b = b[: len(b) - len(b) % chunk]
                if not len(b):
                    continue
            got = runner(torch, tensors(b, samples))
            loss = objective.loss(torch, got, tensors(b, targets))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for p, mask in masks:
                    p.mul_(mask).add_(0.0)  # +0.0 turns the -0.0 of a negative weight times 0 into 0
            losses.append(float(loss.detach()))
            if bar:
                done = min(i + batch, len(perm)) / max(len(perm), 1)
                sys.stderr.write(f"\rdistill epoch {epoch}/{config.epochs} [{'#' * int(24 * done):<24}] "
                                 f"{100 * done:5.1f}%  loss {np.mean(losses):.4f}")
                sys.stderr.flush()
        if bar:
            sys.stderr.write("\r" + " " * 72 + "\r")
        metrics = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), **evaluate(val_idx),
                   "lr": float(sched.get_last_lr()[0]), "seconds": round(time.perf_counter() - t0, 3)}
        if epoch == 1:
            metrics["before"] = before
        history.append(metrics)
        if _better(metrics, best):
            best, best_state = dict(metrics), _clone_state(module)
        if path is not None:
            _save_checkpoint(torch, path, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch, "student": module.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                "numpy_rng": rng.bit_generator.state, "signature": signature, "config": config.to_dict(),
                "history": history, "best": best, "best_state": best_state})
        if config.progress:
            agree_txt = "n/a" if metrics["val_agreement"] is None else f"{metrics['val_agreement']:.4f}"
            print(f"distill epoch {epoch}/{config.epochs}  loss {metrics['loss']:.4f}  val loss "
                  f"{metrics['val_loss']:.4f}  val agreement {agree_txt}  val mse {metrics['val_mse']:.4g}  "
                  f"{metrics['seconds']:.1f}s", file=sys.stderr, flush=True)
        if callback is not None and callback(epoch, dict(metrics)) is False:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    summary = {"before": before, "best_epoch": best["epoch"] if best else None,
               "after": {k: best[k] for k in ("val_loss", "val_agreement", "val_mse")} if best else before,
               "train_samples": int(len(train_idx)), "val_samples": int(n_val)}
    after = summary["after"] or {}
    summary.update(agreement=after.get("val_agreement"), mse=after.get("val_mse"), loss=after.get("val_loss"))
    return history, summary


class _Settings:
    """Deterministic algorithms and a thread count for the duration of training, then restored."""

    def __init__(self, torch, threads: int | None):
        self.torch, self.threads = torch, threads

    def __enter__(self):
        t = self.torch
        self.det, self.old_threads = t.are_deterministic_algorithms_enabled(), t.get_num_threads()
        t.use_deterministic_algorithms(True, warn_only=True)
        if self.threads is not None:
            t.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc):
        self.torch.use_deterministic_algorithms(self.det)
        self.torch.set_num_threads(self.old_threads)


def _resolve_config(config: DistillConfig | None, overrides: dict) -> DistillConfig:
    config = copy.deepcopy(config) if config is not None else DistillConfig()
    fields = {f.name for f in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise InputError(f"distill: unknown setting(s) {unknown}; known: {sorted(fields)}")
    return dataclasses.replace(config, **overrides).check()


# ---------------------------------------------------------------------------------- public
def distill(teacher: Graph, student: Graph, data: Any, config: DistillConfig | None = None, *,
            callback: Callable[[int, dict], Any] | None = None, **overrides) -> DistillResult:
    """Train ``student`` to reproduce ``teacher`` on unlabeled ``data`` (module docstring).

    Args:
        teacher: the reference graph (not changed).
        student: the graph to train, e.g. a pruned copy of the teacher (not changed): same input
            and output names and shapes; intermediate tensors may differ.
        data: unlabeled inputs, any form :func:`load_samples` takes.
        config: settings; keywords override single fields (``epochs=3``).
        callback: called as ``callback(epoch, metrics)`` after each epoch; returning ``False``
            stops training there (the checkpoint of that epoch is already written).

    Returns:
        DistillResult whose ``student`` is a new graph with the best epoch's weights.

    Raises:
        InputError: inputs/outputs of the two graphs differ, empty or misshaped data, bad
            settings, a feature that is missing or changed shape, a checkpoint with other settings.
        MissingDependencyError: torch is not installed (``pip install 'edgeinfer[train]'``).
    """
    config = _resolve_config(config, overrides)
    torch = _torch()
    from .torch_ir import to_torch, write_back

    _check_pair(teacher, student)
    samples = load_samples(data, student)
    n = len(next(iter(samples.values())))
    chunk = _chunk_size(student, n)
    t_types, s_types = _shapes(teacher, samples, chunk), _shapes(student, samples, chunk)
    probe = {k: v[: chunk or 1] for k, v in samples.items()}
    t_probe = _run_graph(teacher, probe, teacher.output_names, t_types, chunk)
    plan = _plan_outputs(teacher, student, config.output_loss, t_probe, t_types)
    loss_targets = list(dict.fromkeys(p.target for p in plan))
    features = _choose_features(teacher, student, t_types, s_types, config.features, set(loss_targets), n)
    names = list(dict.fromkeys(loss_targets + features))
    targets = _run_graph(teacher, samples, names, t_types, chunk)

    with _Settings(torch, config.threads):
        torch.manual_seed(config.seed)
        module = to_torch(student, trainable="weights")
        extra = [k for k in names if k not in student.output_names]
        runner = _StudentRunner(module, names, chunk, run=lambda feeds: module.run(feeds, extra=extra))
        objective = _Objective(plan, features, targets, _split(n, chunk, config)[0], config)
        signature = _signature(config, plan, features, module, n)
        history, metrics = _fit(module, runner, samples, targets, objective, config, chunk, signature, callback)
        trained = write_back(student, module)

    outputs = [{"output": p.output, "loss": p.kind, "target": p.target, "axis": p.axis if p.kind == "kl" else None}
               for p in plan]
    trained.metadata["edgeinfer.distillation"] = json.dumps({
        "epochs": len(history), "temperature": config.temperature, "features": features, "outputs": outputs,
        "metrics": metrics, "seed": config.seed, "lr": config.lr, "batch_size": config.batch_size,
        "teacher": teacher.name})
    return DistillResult(trained, history, metrics, features, outputs, config)


def agreement(teacher: Graph, student: Graph, feeds: Any) -> float:
    """Share of samples (and positions) where the argmax over the last axis of the first output
    is the same for teacher and student, on the numpy cpu backend. ``feeds``: any form of
    :func:`load_samples`."""
    _check_pair(teacher, student)
    samples = load_samples(feeds, teacher)
    n = len(next(iter(samples.values())))
    chunk = _chunk_size(teacher, n)
    name = teacher.output_names[0]
    types = {name: teacher.tensor_type(name) or _shapes(teacher, samples, chunk)[name]}
    t = _run_graph(teacher, samples, [name], types, chunk)[name]
    s = _run_graph(student, samples, [name], types, chunk)[name]
    return float(np.mean(t.argmax(axis=-1) == s.argmax(axis=-1)))


def distill_files(teacher: Any, student: Any, data: Any, output: str | os.PathLike | None = None,
                  config: DistillConfig | None = None, **overrides) -> DistillResult:
    """:func:`distill` on model files (or graphs), saving the trained student to ``output``
    (any format :func:`edgeinfer.save` writes) - what ``edgeinfer distill`` calls."""
    from edgeinfer.api import load, save

    result = distill(load(teacher), load(student), data, config, **overrides)
    if output is not None:
        save(result.student, output)
    return result


__all__ = ["distill", "distill_files", "agreement", "load_samples", "DistillConfig", "DistillResult", "OutputLoss",
           "MAX_AUTO_FEATURES", "FEATURE_CACHE_BYTES", "OUTPUT_LOSSES", "CHECKPOINT_FORMAT", "SPARSE_FRACTION"]
