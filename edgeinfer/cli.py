"""The ``edgeinfer`` command line (click). ``python -m edgeinfer`` runs the same.

Errors: every failure caused by the user's input (a missing or malformed file, a bad suffix, a
feed that does not fit) reaches the user as one line ``error: ...`` on stderr with exit code 1;
usage errors (unknown option, missing argument) keep click's usage message and exit code 2. Only
:class:`~edgeinfer.errors.EdgeInferError` and ``OSError`` are caught, here at the boundary: any
other exception is a bug in edgeinfer and keeps its traceback so it can be reported.

Progress and timings go to stderr; results go to stdout, so ``edgeinfer inspect --json m.onnx >
m.json`` stays clean.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click
import numpy as np

from . import __version__
from .cost import format_bytes, format_count, summarize
from .errors import EdgeInferError
from .graph import format_shape

MODEL_SUFFIXES = (".onnx", ".tflite", ".eim")


class CliError(click.ClickException):
    """A user-facing failure: printed as ``error: <message>``, exit code 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _os_message(e: OSError) -> str:
    what = e.strerror or str(e)
    return f"{what}: '{e.filename}'" if e.filename else what


class _Group(click.Group):
    """The command group; turns our own errors into one ``error:`` line at the boundary."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeInferError as e:
            raise CliError(str(e)) from None
        except OSError as e:
            raise CliError(_os_message(e)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="edgeinfer")
def cli() -> None:
    """edgeinfer: convert, run and measure neural networks for edge devices.

    Start with `edgeinfer demo`.
    """


def main() -> None:
    """Console-script entry point (``edgeinfer`` and ``python -m edgeinfer``)."""
    cli(prog_name="edgeinfer")


# ------------------------------------------------------------------------- helpers
@contextmanager
def _progress(label: str, after: float = 1.0) -> Iterator[None]:
    """A stderr status line for a step, shown only once it has taken ``after`` seconds.

    Quick steps print nothing, so a fast failure still leaves exactly one ``error:`` line.
    """
    state = {"shown": False, "done": False}
    lock = threading.Lock()

    def show() -> None:
        with lock:
            if not state["done"]:
                click.echo(f"{label} ...", err=True, nl=False)
                state["shown"] = True

    timer = threading.Timer(after, show)
    timer.daemon = True
    timer.start()
    t0 = time.perf_counter()
    outcome = "failed"
    try:
        yield
        outcome = f"{time.perf_counter() - t0:.1f} s"
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["shown"]:
                click.echo(f" {outcome}", err=True)


def _load(path: Path, check_supported: bool = True):
    import edgeinfer

    with _progress(f"loading {path.name}"):
        return edgeinfer.load(path, check_supported=check_supported)


def _check_suffix(path: Path, role: str) -> None:
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise CliError(
            f"{role} '{path}' has suffix '{path.suffix}', which is not a model format edgeinfer writes "
            f"or reads by suffix; supported: {', '.join(MODEL_SUFFIXES)}"
        )


def _shape_text(shape) -> str:
    return format_shape(None if shape is None else tuple(shape))


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz next to its final place, then rename: a crash never leaves half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        # the .npz layout np.savez writes, built here because np.savez(**arrays) breaks on an
        # output named like one of its own parameters ("file", "allow_pickle")
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
            for name, arr in arrays.items():
                with archive.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------- inspect
@cli.command()
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=1x3x224x224", help="Input shape for counting MACs.")
def inspect(model: Path, as_json: bool, shapes: tuple[str, ...]) -> None:
    """Show a model's inputs, outputs, operators, parameters, size and MACs.

    MACs are counted with symbolic input dims set to 1 unless --shape gives the input's shape.
    """
    shape_of = {name: _parse_shape(s, name) for name, s in _parse_pairs(shapes, "--shape").items()}
    graph = _load(model, check_supported=False)
    inputs = {v.name: v for v in graph.required_inputs()}
    unknown = [n for n in shape_of if n not in inputs]
    if unknown:
        raise CliError(
            f"--shape: the model has no input named {', '.join(repr(n) for n in unknown)}; "
            f"its inputs are: {', '.join(str(v) for v in inputs.values())}"
        )
    for name, shape in shape_of.items():
        _check_rank(name, shape, inputs[name].shape)
    info = summarize(graph, shape_of or None)
    info["file"] = str(model)
    info["file_bytes"] = model.stat().st_size
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    rows = [("model", f"{model} ({format_bytes(info['file_bytes'])})")]
    desc = info["metadata"].get("description")
    if desc:
        rows.append(("about", desc))
    for v in info["inputs"]:
        rows.append(("input", f"{v['name']}: {v['dtype']}{_shape_text(v['shape'])}"))
    for v in info["outputs"]:
        rows.append(("output", f"{v['name']}: {v['dtype']}{_shape_text(v['shape'])}"))
    hist = ", ".join(f"{op} {n}" for op, n in info["op_histogram"].items())
    rows.append(("ops", f"{info['nodes']} nodes: {hist}" if hist else "0 nodes"))
    rows.append(("params", f"{format_count(info['params'])} ({format_bytes(info['weight_bytes'])} of weights)"))
    rows.append(("MACs", _macs_text(info)))
    for label, value in rows:
        click.echo(f"{label:<8} {value}")


def _macs_text(info: dict) -> str:
    if info.get("macs_error"):
        return f"? ({info['macs_error']})"
    text = f"{format_count(info['macs'])} per run ({format_count(info['element_ops'])} element ops)"
    notes = []
    if info["assumed"]:
        notes.append("input shapes taken as " + ", ".join(f"{k}={_shape_text(v)}" for k, v in info["assumed"].items()))
    skipped = len(info["unknown"]) + len(info["shape_errors"])
    if skipped:
        notes.append(f"{skipped} node(s) not counted: shapes unknown")
    if info["approximate"]:
        notes.append(f"{len(info['approximate'])} node(s) with unknown dims counted as 1")
    return text + (f"; {'; '.join(notes)}" if notes else "")


# ------------------------------------------------------------------------- convert
@cli.command()
@click.argument("src", metavar="IN", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("dst", metavar="OUT", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--nchw-inputs", is_flag=True,
              help="TFLite export: keep the inputs' and outputs' original layout (default: image tensors NHWC).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="TFLite export: shape of an input whose declared shape has symbolic dims.")
@click.option("--check", is_flag=True,
              help="Run the source and the converted model on the same random inputs and compare every "
                   "tensor they share; name the first op that diverges.")
@click.option("--tolerance", type=float, default=1e-3, show_default=True,
              help="--check: error relative to a tensor's scale above which it diverges.")
def convert(src: Path, dst: Path, nchw_inputs: bool, shapes: tuple[str, ...], check: bool, tolerance: float) -> None:
    """Convert a model between formats, chosen by suffix (.onnx, .tflite, .eim)."""
    import edgeinfer

    _check_suffix(src, "input model")
    _check_suffix(dst, "output model")
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and dst.samefile(src)):
        raise CliError(f"output '{dst}' is the input file; choose another path")
    graph = _load(src, check_supported=False)
    shape_of = {name: _parse_shape(s, name) for name, s in _parse_pairs(shapes, "--shape").items()}
    unknown = sorted(set(shape_of) - set(graph.input_names))
    if unknown:
        raise CliError(f"--shape names {', '.join(unknown)}, which the model has no input called; "
                       f"inputs: {', '.join(graph.input_names)}")
    report = None
    if dst.suffix.lower() == ".tflite":
        symbolic = [v for v in graph.inputs if v.name not in shape_of and v.name not in graph.constants
                    and (v.shape is None or not all(isinstance(d, int) for d in v.shape))]
        if symbolic:
            v = symbolic[0]
            raise CliError(f"input '{v.name}' has shape {_shape_text(v.shape)}; a TFLite model needs concrete "
                           f"shapes: give them with --shape {v.name}=DIMS (e.g. 1x3x224x224)")
    with _progress(f"writing {dst.name}"):
        if dst.suffix.lower() == ".tflite":
            from edgeinfer.converters.tflite_export import export_tflite

            report = export_tflite(graph, dst, nchw_inputs=nchw_inputs, input_shapes=shape_of or None)
        else:
            if nchw_inputs or shape_of:
                raise CliError("--nchw-inputs and --shape apply to TFLite export (an OUT ending in .tflite)")
            edgeinfer.save(graph, dst)
    click.echo(
        f"wrote {dst} ({format_bytes(dst.stat().st_size)}) from {src} ({format_bytes(src.stat().st_size)}): "
        f"{sum(1 for _ in graph.walk_nodes())} nodes, {format_count(graph.param_count())} params"
    )
    if report is not None:
        ops = ", ".join(f"{k} {v}" for k, v in list(report.op_counts.items())[:8])
        click.echo(f"TFLite: {sum(report.op_counts.values())} ops ({ops}); {report.transposes} TRANSPOSE; "
                   f"{report.quantized_ops} int8 ops")
        for why in report.transpose_reasons:
            click.echo(f"  transpose: {why}")
        moved = {k: v for k, v in report.inputs.items() if v != sorted(v)}
        if moved:
            click.echo(f"  inputs exposed transposed (exposed = input.transpose(perm)): {moved}")
    if check:
        from edgeinfer.converters.check import check_conversion

        with _progress("comparing every shared tensor"):
            result = check_conversion(src, dst, tolerance=tolerance, input_shapes=shape_of or None)
        click.echo(result.summary())
        if result.first_divergence is not None:
            raise SystemExit(1)


# ----------------------------------------------------------------------------- run
def _parse_pairs(values: tuple[str, ...], option: str, bare_ok: bool = False) -> dict[str, str]:
    """``NAME=VALUE`` items; with ``bare_ok`` a lone ``VALUE`` is kept under the name ``""``."""
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        if not sep and bare_ok and item:
            name, sep, value = "", "=", item
            if "" in out:
                raise click.BadParameter("only one input may be given without a NAME=", param_hint=option)
        if not sep or (not name and not bare_ok) or not value:
            raise click.BadParameter(f"expected NAME=VALUE, got '{item}'", param_hint=option)
        out[name] = value
    return out


def _parse_shape(text: str, name: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().replace(",", "x").split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d < 0 for d in dims):
        raise click.BadParameter(f"'{name}={text}': expected dims like 1x3x224x224", param_hint="--shape")
    return dims


def _check_rank(name: str, shape: tuple[int, ...], declared) -> None:
    if declared is not None and len(shape) != len(declared):
        raise CliError(
            f"--shape {name}: rank {len(shape)} {list(shape)} does not match the declared "
            f"rank {len(declared)} {format_shape(declared)}"
        )


def _read_npy(name: str, path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except OSError:
        raise
    except Exception as e:  # numpy raises ValueError/EOFError/UnpicklingError for non-.npy bytes
        raise CliError(f"--input {name}: '{path}' is not a readable .npy file ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise CliError(f"--input {name}: '{path}' is an .npz archive; pass one array per input as .npy")
    return arr


def _random_input(info, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    from .dtypes import to_numpy

    dtype = to_numpy(info.dtype)
    if info.dtype in ("float16", "float32", "float64", "bfloat16"):
        return rng.random(shape).astype(np.float32).astype(dtype)
    if info.dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":  # small non-negative values: safe as indices and token ids
        return rng.integers(0, 10, size=shape).astype(dtype)
    raise CliError(f"cannot make a random value for input '{info.name}' of dtype {info.dtype}; pass it with --input")


def _summary_line(name: str, arr: np.ndarray) -> str:
    head = f"{name}: {arr.dtype}{list(arr.shape)}"
    if arr.size == 0 or arr.dtype.kind not in "biuf":
        return head
    a = arr.astype(np.float64)
    text = f"{head}  min {a.min():.6g}  max {a.max():.6g}  mean {a.mean():.6g}"
    if arr.ndim == 2:
        arg = arr.argmax(axis=1)
        shown = ", ".join(str(int(i)) for i in arg[:16]) + (", ..." if len(arg) > 16 else "")
        text += f"  argmax [{shown}]"
    return text


@cli.command()
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--input",
    "-i",
    "inputs",
    multiple=True,
    metavar="NAME=FILE.npy",
    help="Feed an input from a .npy file (NAME= may be left out for a one-input model).",
)
@click.option("--shape", "shapes", multiple=True, metavar="NAME=1x3x224x224", help="Shape of a random input.")
@click.option("--backend", default="cpu", show_default=True, help="Backend name (see `edgeinfer backends`).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for the backend.")
@click.option("--save", "save_path", type=click.Path(path_type=Path, dir_okay=False), help="Write outputs to an .npz.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--profile", is_flag=True,
              help="Time every node: after the first run, run --profile-runs more times and print the "
                   "slowest nodes and the time per op type.")
@click.option("--profile-runs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Runs timed by --profile.")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True,
              help="Nodes and op types listed by --profile.")
def run(model: Path, inputs, shapes, backend: str, threads: int | None, save_path: Path | None, seed: int,
        profile: bool = False, profile_runs: int = 10, top: int = 15) -> None:
    """Run a model once and summarize its outputs.

    Inputs not given with --input are random (uniform [0, 1) for floats, 0..9 for integers)
    with the declared shape; symbolic dims are 1 unless --shape says otherwise.
    """
    import edgeinfer

    files = {name: Path(p) for name, p in _parse_pairs(inputs, "--input", bare_ok=True).items()}
    shape_of = {name: _parse_shape(s, name) for name, s in _parse_pairs(shapes, "--shape").items()}
    if save_path is not None and save_path.suffix.lower() != ".npz":
        raise CliError(f"--save '{save_path}': outputs are written as .npz; use a name ending in .npz")
    graph = _load(model)
    with _progress(f"preparing backend '{backend}'"):
        sess = edgeinfer.Session(graph, backend=backend, threads=threads, profile=profile)
    required = {v.name: v for v in sess.inputs}
    feedable = dict(required, **{v.name: v for v in sess.overridable_inputs})
    if "" in files:  # `--input x.npy` without a name: fine when the model has one input
        if len(required) != 1:
            raise CliError(
                f"--input {files['']}: the model has {len(required)} inputs, so say which one with NAME=FILE; "
                f"its inputs are: {', '.join(str(v) for v in required.values())}"
            )
        files = {next(iter(required)) if n == "" else n: f for n, f in files.items()}
    for option, names, known in (("--input", files, feedable), ("--shape", shape_of, required)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise CliError(
                f"{option}: the model has no input named {', '.join(repr(n) for n in unknown)}; "
                f"its inputs are: {', '.join(str(v) for v in required.values())}"
            )
    both = sorted(set(files) & set(shape_of))
    if both:
        raise CliError(f"input(s) {both} given both with --input and --shape; use one")

    feeds: dict[str, np.ndarray] = {}
    for name, path in files.items():
        feeds[name] = _read_npy(name, path)
        click.echo(f"input  {name}: {feeds[name].dtype}{list(feeds[name].shape)} from {path}")
    for name, shape in shape_of.items():
        _check_rank(name, shape, required[name].shape)
    # symbolic dims fixed by a given array or --shape carry over to the random inputs sharing them
    bound: dict[str, int] = {}
    for name, shape in [*((n, a.shape) for n, a in feeds.items()), *shape_of.items()]:
        declared = feedable[name].shape
        if declared is not None and len(declared) == len(shape):
            bound.update((d, int(v)) for d, v in zip(declared, shape) if isinstance(d, str))
    rng = np.random.default_rng(seed)
    for name, info in required.items():
        if name in feeds:
            continue
        shape = shape_of.get(name)
        if shape is None:
            if info.shape is None:
                raise CliError(f"input '{name}' has unknown rank; give its shape with --shape {name}=1x...")
            shape = tuple(d if isinstance(d, int) else bound.get(d, 1) for d in info.shape)
        feeds[name] = _random_input(info, shape, rng)
        click.echo(f"input  {name}: {feeds[name].dtype}{list(shape)} random (seed {seed})")

    with _progress(f"running on '{sess.backend}'"):
        t0 = time.perf_counter()
        outputs = sess.run(feeds)
        elapsed = time.perf_counter() - t0
    for name, arr in outputs.items():
        click.echo("output " + _summary_line(name, np.asarray(arr)))
    click.echo(
        f"ran in {elapsed * 1e3:.2f} ms on backend '{sess.backend}' (first run: may include compiling for these shapes)"
    )
    if save_path is not None:
        _save_npz_atomic(save_path, {k: np.asarray(v) for k, v in outputs.items()})
        click.echo(f"wrote {save_path}")
    if profile:
        sess.reset_profile()  # the first run may have compiled: time the steady state only
        with _progress(f"profiling {profile_runs} runs"):
            for _ in range(profile_runs):
                sess.run(feeds)
        _print_profile(sess.profile(), top)


def _print_profile(report: dict, top: int) -> None:
    """The slowest nodes and the per-op-type totals of ``Session.profile()``."""
    runs = report["runs"]
    if not runs or not report["nodes"]:
        click.echo("profile: no timed runs (does this backend profile?)")
        return
    total = report["total_ms"] / runs
    click.echo(f"\nprofile: {runs} runs, {total:.3f} ms per run in {len(report['nodes'])} nodes")
    nodes = sorted(report["nodes"], key=lambda r: -r["total_ms"])[:top]
    width = max(len(r["node"]) for r in nodes)
    click.echo(f"top {len(nodes)} nodes (ms per run):")
    for r in nodes:
        per_run = r["total_ms"] / runs
        fused = f" +{r['fused']}" if r.get("fused") else ""
        click.echo(f"  {per_run:9.3f}  {100 * per_run / total:5.1f}%  {r['node']:<{width}}  {r['op_type']}{fused}")
    click.echo("per op type (ms per run):")
    for op, e in list(report["op_types"].items())[:top]:
        click.echo(f"  {e['total_ms'] / runs:9.3f}  {100 * e['share']:5.1f}%  {op} x{e['nodes']}")


# ------------------------------------------------------------------------ quantize
@cli.command()
@click.argument("src", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("dst", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--calib", "calib", type=click.Path(path_type=Path), default=None,
              help="Calibration inputs: an .npz of arrays by input name (split along the first axis into "
                   "--calib-batch batches), or a folder of such .npz files. Needed by --mode static.")
@click.option("--mode", type=click.Choice(["static", "dynamic", "weight_only", "fp16", "bf16"]), default="static",
              show_default=True)
@click.option("--method", type=click.Choice(["minmax", "percentile", "mse", "entropy"]), default="mse",
              show_default=True, help="How calibration chooses each activation's range.")
@click.option("--weights", type=click.Choice(["int8", "int4"]), default="int8", show_default=True,
              help="Weight type for --mode weight_only.")
@click.option("--block-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Values per scale for --mode weight_only (0: per channel for int8, 32 for int4).")
@click.option("--activations", type=click.Choice(["uint8", "int8", "int16", "auto"]), default="uint8",
              show_default=True, help="Activation type; int16 is symmetric (zero point 0); auto: int8 "
                                      "symmetric where a range is nearly symmetric, else uint8.")
@click.option("--calib-batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--exclude", multiple=True, metavar="NODE", help="A node to keep in float (repeatable).")
@click.option("--equalize/--no-equalize", default=True, show_default=True,
              help="Even out channel ranges between Conv pairs before calibrating (static).")
@click.option("--smooth", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="SmoothQuant alpha for LayerNorm -> MatMul sites (static); --no-smooth turns it off.")
@click.option("--no-smooth", is_flag=True, help="Do not rebalance LayerNorm -> MatMul sites.")
@click.option("--bias-correction/--no-bias-correction", default=False, show_default=True,
              help="Correct each layer's bias for the mean shift quantization causes (static); kept only "
                   "when it brings the outputs closer to float on calibration feeds it was not fitted to.")
@click.option("--quantize-outputs", "quantize_outputs", is_flag=True,
              help="Also quantize each layer's output (after a Relu/Clip it feeds): the DQ -> op -> Q form "
                   "ONNX Runtime fuses into QLinearConv and the TFLite export writes as int8 ops. Faster there, "
                   "slower on OpenVINO, and one more rounding per layer.")
@click.option("--eval", "eval_script", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="A Python file of yours defining evaluate(session) -> float (higher is better); with it, "
                   "static quantization is accuracy-aware. The file is run: pass only your own code.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="With --eval: the accuracy the quantized model may lose.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write an HTML report (and a .json beside it): per-layer error, layers kept in float and "
                   "why, and why int8 is or is not faster on each backend.")
@click.option("--report-backends", default="ort,openvino,litert", show_default=True,
              help="Backends the report times, comma-separated.")
def quantize(src: Path, dst: Path, calib, mode, method, weights, block_size, activations, calib_batch, exclude,
             equalize, smooth, no_smooth, bias_correction, quantize_outputs, eval_script, max_drop, report_path,
             report_backends) -> None:
    """Quantize SRC into DST (.onnx, .eim or .tflite by suffix).

    Static int8 writes explicit QDQ: per-channel int8 weights, int32 biases, per-tensor
    activations calibrated on --calib; with --eval and --max-drop it keeps the most sensitive
    layers in float until the accuracy drop is within budget. Dynamic int8, weight-only
    int8/int4 and fp16/bf16 need no calibration data.
    """
    import json

    from .converters.quantize import quantize as run_quantize

    if dst.resolve() == src.resolve():
        raise CliError(f"output '{dst}' is the input file; choose another path")
    graph = _load(src, check_supported=True)
    feeds: list[dict] = []
    if mode == "static":
        if calib is None:
            raise CliError("--mode static needs calibration inputs: --calib FILE.npz or a folder of .npz files")
        feeds = _calibration_feeds(calib, graph, calib_batch)
    elif eval_script is not None:
        raise CliError("--eval (accuracy-aware quantization) works with --mode static only")
    accuracy = _user_evaluate(eval_script) if eval_script is not None else None
    if report_path is not None and not feeds and calib is not None:
        feeds = _calibration_feeds(calib, graph, calib_batch)
    bar = _ProgressBar(sys.stderr, label="quantize")
    try:
        q = run_quantize(graph, feeds, mode=mode, method=method, activations=activations, weights=weights,
                         block_size=block_size, exclude=exclude, equalize=equalize, accuracy=accuracy,
                         smooth=None if no_smooth else smooth, bias_correction=bias_correction,
                         outputs=quantize_outputs,
                         max_drop=max_drop,
                         progress=lambda stage, done, total: bar(f"{stage} {done}/{total or '?'}",
                                                                 done / total if total else 0.0))
    finally:
        bar.close()
    with _progress(f"writing {dst.name}"):
        edgeinfer_save(q, dst)
    ops = q.op_histogram()
    info = json.loads(q.metadata.get("edgeinfer.quantization", "{}"))
    layers = info.get("layers", [])
    kept = [x for x in layers if x["precision"] == "float"]
    click.echo(f"wrote {dst} ({format_bytes(dst.stat().st_size)}) from {src} ({format_bytes(src.stat().st_size)}): "
               f"mode {mode}, {len(layers) - len(kept)} of {len(layers)} layers quantized, "
               f"{ops.get('QuantizeLinear', 0) + ops.get('DynamicQuantizeLinear', 0)} activation quantizers, "
               f"{ops.get('DequantizeLinear', 0)} DequantizeLinear, {ops.get('Cast', 0)} Cast")
    if "accuracy" in info:
        verdict = "within" if info.get("within_budget") else "NOT within"
        click.echo(f"accuracy {info['accuracy']:.4f} vs fp32 {info['accuracy_fp32']:.4f} ({verdict} --max-drop "
                   f"{max_drop}); kept in float: {', '.join(x['node'] for x in kept) or 'none'}")
    if report_path is not None:
        _quantize_report(graph, q, feeds, src, dst, report_path, report_backends)


def _user_evaluate(path: Path):
    """``evaluate(session) -> float`` from the user's own script (run as a module, like a config)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgeinfer_user_eval", path)
    if spec is None or spec.loader is None:
        raise CliError(f"--eval '{path}': not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: report it, don't crash
        raise CliError(f"--eval '{path}' failed while loading: {type(e).__name__}: {e}") from None
    fn = getattr(module, "evaluate", None)
    if not callable(fn):
        raise CliError(f"--eval '{path}' defines no evaluate(session) -> float function")

    def evaluate(session) -> float:
        try:
            value = fn(session)
        except Exception as e:  # the user's code: name it, don't crash
            raise CliError(f"--eval '{path}': evaluate(session) failed: {type(e).__name__}: {e}") from None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise CliError(f"--eval '{path}': evaluate(session) returned {type(value).__name__}, "
                           f"expected a number") from None
    return evaluate


def _quantize_report(graph, q, feeds, src: Path, dst: Path, path: Path, backends: str) -> None:
    import json

    from .converters import quantize_report as qr

    names = [b.strip() for b in backends.split(",") if b.strip()]
    sample = feeds[:4] if feeds else [_synthetic_feed(graph)]
    info = json.loads(q.metadata.get("edgeinfer.quantization", "{}"))
    accuracy = ({"metric": "evaluate(session)", "fp32": info["accuracy_fp32"], "int8": info["accuracy"]}
                if "accuracy" in info else None)
    with _progress("measuring the report (per-layer error, backends)", after=0.0):
        report = qr.build_report(graph, q, sample, float_path=str(src) if src.suffix.lower() == ".onnx" else None,
                                 quant_path=str(dst) if dst.suffix.lower() == ".onnx" else None, backends=names,
                                 accuracy=accuracy)
    qr.write_html(report, path)
    qr.write_json(report, path.with_suffix(".json"))
    click.echo(f"wrote {path} and {path.with_suffix('.json').name}")
    for name, entry in report.get("backends", {}).items() if isinstance(report.get("backends"), dict) else ():
        speed = entry.get("speedup")
        if isinstance(speed, (int, float)):
            click.echo(f"  {name}: int8 is {speed:.2f}x the fp32 speed")


def _synthetic_feed(graph) -> dict:
    rng = np.random.default_rng(0)
    feed = {}
    for v in graph.required_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in (v.shape or ())]
        feed[v.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def edgeinfer_save(graph, dst: Path) -> None:
    if dst.suffix.lower() == ".tflite":
        from .converters.tflite_export import export_tflite

        export_tflite(graph, dst)
    else:
        import edgeinfer

        edgeinfer.save(graph, dst)


def _calibration_feeds(path: Path, graph, batch: int) -> list[dict]:
    """Feed dicts from one .npz or a folder of .npz files, each split into batches of ``batch``."""
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files:
        raise CliError(f"--calib '{path}': no .npz files in the folder")
    names = [v.name for v in graph.required_inputs()]
    feeds: list[dict] = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise CliError(f"--calib '{f}': cannot read it as an .npz of arrays: {e}") from None
        missing = [n for n in names if n not in arrays]
        if missing:
            raise CliError(f"--calib '{f}' has no array for input(s) {missing}; it holds {sorted(arrays)}")
        n = min(int(arrays[k].shape[0]) for k in names) if all(arrays[k].ndim for k in names) else 1
        for i in range(0, n, batch):
            feeds.append({k: arrays[k][i:i + batch] for k in names})
    return feeds


# ------------------------------------------------------------------------ prune
@cli.command()
@click.argument("src", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("dst", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--sparsity", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Unstructured: fraction of the weights set to zero (smallest magnitudes first).")
@click.option("--channels", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Structured: fraction of the channels of every prunable group removed (layers shrink).")
@click.option("--target-macs", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Structured: remove at least this fraction of the MACs (searches the channel fraction).")
@click.option("--criterion", type=click.Choice(["l1", "l2", "bn", "activation"]), default="l2", show_default=True,
              help="Structured: how channels are ranked (activation needs --calib).")
@click.option("--calib", "calib", type=click.Path(path_type=Path, exists=True), default=None,
              help="Structured: an .npz (or a folder of them) of inputs by name, for --criterion activation.")
@click.option("--round-to", type=click.IntRange(min=1), default=1, show_default=True,
              help="Structured: kept channel counts are rounded up to a multiple of this.")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Structured: input shape for shape inference and MAC counting (default: --calib's, else declared).")
@click.option("--scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True,
              help="Unstructured: layer: every pruned layer to --sparsity; global: one magnitude threshold for all.")
@click.option("--exclude", multiple=True, metavar="NODE",
              help="A node whose weight stays dense / whose output channels all stay (repeatable).")
@click.option("--min-elements", type=click.IntRange(min=1), default=256, show_default=True,
              help="Unstructured: weights with fewer values are left dense.")
def prune(src: Path, dst: Path, sparsity, channels, target_macs, criterion, calib, round_to, shapes, scope, exclude,
          min_elements) -> None:
    """Prune SRC into DST: unstructured (--sparsity; .eim stores the zeros sparsely) or
    structured (--channels / --target-macs; whole channels leave every coupled layer)."""
    import json

    if dst.resolve() == src.resolve():
        raise CliError(f"output '{dst}' is the input file; choose another path")
    structured = channels is not None or target_macs is not None
    if (sparsity is None) == (not structured) or (channels is not None and target_macs is not None):
        raise CliError("give exactly one of --sparsity, --channels or --target-macs")
    graph = _load(src, check_supported=True)
    if not structured:
        from .converters.prune import prune_magnitude

        pruned = prune_magnitude(graph, sparsity, scope=scope, exclude=exclude, min_elements=min_elements)
        with _progress(f"writing {dst.name}"):
            edgeinfer_save(pruned, dst)
        info = json.loads(pruned.metadata["edgeinfer.pruning"])
        click.echo(f"wrote {dst} ({format_bytes(dst.stat().st_size)}) from {src} ({format_bytes(src.stat().st_size)}): "
                   f"{len(info['weights'])} weights pruned to {100 * info['sparsity']:.1f}% zeros ({scope})")
        return
    from .converters.prune_channels import prune_channels

    feeds = _calibration_feeds(calib, graph, 1) if calib else []
    if criterion == "activation" and not feeds:
        raise CliError("--criterion activation needs --calib")
    shape_of = {name: _parse_shape(s, name) for name, s in _parse_pairs(shapes, "--shape").items()}
    inputs = {v.name: v for v in graph.required_inputs()}
    for name, shape in shape_of.items():
        if name not in inputs:
            raise CliError(f"--shape: the model has no input named {name!r}; its inputs are: "
                           f"{', '.join(str(v) for v in inputs.values())}")
        _check_rank(name, shape, inputs[name].shape)
    with _progress("pruning channels", after=0.5):
        pruned = prune_channels(graph, channels, criterion=criterion, target_macs=target_macs, calibration=feeds,
                                exclude=exclude, round_to=round_to, input_shapes=shape_of or None)
    with _progress(f"writing {dst.name}"):
        edgeinfer_save(pruned, dst)
    info = json.loads(pruned.metadata["edgeinfer.pruning"])
    kept = sum(g["kept"] for g in info["groups"])
    total = sum(g["channels"] for g in info["groups"])
    click.echo(f"wrote {dst} ({format_bytes(dst.stat().st_size)}) from {src} ({format_bytes(src.stat().st_size)}): "
               f"{len(info['groups'])} channel groups, {total - kept} of {total} channels removed "
               f"(ratio {info['ratio']:.3f}, {criterion}); MACs {format_count(info['macs_before'])} -> "
               f"{format_count(info['macs_after'])} (-{1 - info['macs_after'] / max(info['macs_before'], 1):.1%}); "
               f"params {format_count(info['params_before'])} -> {format_count(info['params_after'])}"
               + (f"; {info['blocked']} group(s) kept whole" if info["blocked"] else ""))


# ------------------------------------------------------------------------ distill
@cli.command()
@click.argument("teacher", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("student", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("dst", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data", "data", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True,
              help="An .npz of unlabeled inputs, stacked along axis 0, named as the model's inputs.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Softens both distributions of the KL loss on class outputs.")
@click.option("--output-loss", type=click.Choice(["auto", "kl", "mse"]), default="auto", show_default=True)
@click.option("--feature-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of the intermediate-feature loss (tensors whose shapes match in both models).")
@click.option("--no-features", is_flag=True, help="Match outputs only.")
@click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Written after every epoch; a later run with the same settings resumes from it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
def distill(teacher: Path, student: Path, dst: Path, data: Path, epochs, batch_size, lr, temperature, output_loss,
            feature_weight, no_features, checkpoint, seed, threads) -> None:
    """Train STUDENT (e.g. a pruned TEACHER) to reproduce TEACHER on unlabeled --data; write DST.

    Needs the train extra: pip install 'edgeinfer[train]' (torch, CPU).
    """
    from .converters.distill import distill_files

    if dst.resolve() in (teacher.resolve(), student.resolve()):
        raise CliError(f"output '{dst}' is one of the input files; choose another path")
    result = distill_files(teacher, student, data, dst, epochs=epochs, batch_size=batch_size, lr=lr,
                           temperature=temperature, output_loss=output_loss, feature_weight=feature_weight,
                           features=[] if no_features else None, checkpoint=checkpoint, seed=seed, threads=threads)
    m = result.metrics
    before, after = m.get("before") or {}, m.get("after") or {}
    agree = ""
    if after.get("val_agreement") is not None and before.get("val_agreement") is not None:
        agree = f"; validation agreement {before['val_agreement']:.4f} -> {after['val_agreement']:.4f}"
    click.echo(f"wrote {dst}: {epochs} epochs, best epoch {m.get('best_epoch')}{agree}")


# ------------------------------------------------------------------------ compress
@cli.command()
@click.argument("src", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("dst", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--recipe", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True,
              help="A .yaml or .json recipe: steps of prune / distill / quantize, in order.")
@click.option("--data", "data", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True,
              help="An .npz of unlabeled inputs (stacked along axis 0): training, calibration, held-out scoring.")
@click.option("--eval", "eval_script", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="A Python file of yours defining evaluate(session) -> float, reported per stage. It is run.")
@click.option("--report", "report_prefix", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write PREFIX.json, PREFIX.md and PREFIX.png (default: beside DST).")
@click.option("--backends", default="cpu,ort", show_default=True,
              help="Backends whose latency is measured per stage, comma-separated ('' for none).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--min-seconds", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Timed seconds per stage and backend.")
def compress(src: Path, dst: Path, recipe: Path, data: Path, eval_script, report_prefix, backends, threads,
             min_seconds) -> None:
    """Run a compression RECIPE on SRC, write DST and a report of every stage (size, params,
    MACs, latency per backend measured and predicted, accuracy)."""
    from .converters.compress import compress as run_compress
    from .converters.compress import markdown_table, write_report

    if dst.resolve() == src.resolve():
        raise CliError(f"output '{dst}' is the input file; choose another path")
    graph = _load(src, check_supported=True)
    evaluate = _user_evaluate(eval_script) if eval_script is not None else None
    names = [b.strip() for b in backends.split(",") if b.strip()]
    out, report = run_compress(graph, recipe, data, evaluate=evaluate, backends=names, threads=threads,
                               min_seconds=min_seconds)
    with _progress(f"writing {dst.name}"):
        edgeinfer_save(out, dst)
    report["source"], report["output"] = str(src), str(dst)
    paths = write_report(report, report_prefix or dst.with_name(dst.stem + "_compress"))
    click.echo(markdown_table(report), nl=False)
    click.echo(f"wrote {dst} and {', '.join(p.name for p in paths)}")


# ------------------------------------------------------------------------ bench
@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--backend", "-b", "backend", default="all", show_default=True,
              help="'all' (every backend but auto) or names: cpu,ort,openvino,litert,gpu,auto.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads per backend (default: each one's own).")
@click.option("--runs", "-n", type=click.IntRange(min=1), default=None, help="Timed runs per backend.")
@click.option("--min-seconds", "-t", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Keep going until every backend has spent this long in timed runs (default 1 s and >= 10 "
                   "runs when --runs is not given).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed runs first.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Value of a symbolic first (batch) dim.")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=1x3x224x224", help="Shape of a synthetic input.")
@click.option("--inputs", "inputs_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="An .npz of inputs by name (the others are synthetic).")
@click.option("--option", "-o", "backend_options", multiple=True, metavar="BACKEND.KEY=VALUE",
              help="A backend option, e.g. openvino.precision=bf16 (VALUE read as JSON when it parses).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic inputs.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="Write the report as JSON.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False), help="Write one CSV row per result.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a PNG box plot of the latencies (needs matplotlib).")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a self-contained HTML report (with the cpu backend's per-layer profile).")
@click.option("--no-profile", is_flag=True, help="Skip the cpu backend's per-layer profile.")
def bench(models, backend: str, threads, runs, min_seconds, warmup, batch, shapes, inputs_path, backend_options,
          seed, json_path, csv_path, plot_path, html_path, no_profile) -> None:
    """Measure MODELS on every backend side by side.

    Each (model, backend) runs in its own process (load time and memory are that runtime's
    alone); timed runs are interleaved across them so machine noise hits all alike. Prints a
    table and writes the report as JSON/CSV/PNG/HTML. Several models are compared too:
    `edgeinfer bench fp32.onnx int8.onnx --backend cpu,ort`.
    """
    from . import bench as _bench
    from . import bench_report

    for path in (plot_path,):
        if path is not None and path.suffix.lower() != ".png":
            raise CliError(f"--plot '{path}': the plot is a PNG; use a name ending in .png")
    options: dict[str, dict] = {}
    for text in backend_options:
        key, sep, value = text.partition("=")
        name, dot, opt = key.partition(".")
        if not sep or not dot or not name or not opt:
            raise CliError(f"--option '{text}': expected BACKEND.KEY=VALUE, e.g. openvino.precision=bf16")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        options.setdefault(name, {})[opt] = parsed
    shape_of = {name: _parse_shape(s, name) for name, s in _parse_pairs(shapes, "--shape").items()}
    feeds = None
    if inputs_path is not None:
        try:
            with np.load(inputs_path, allow_pickle=False) as data:
                feeds = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise CliError(f"--inputs '{inputs_path}': cannot read it as an .npz of arrays: {e}") from None
    bar = _ProgressBar(sys.stderr)
    try:
        report = _bench.bench(models, backend, threads=threads, runs=runs, min_seconds=min_seconds, warmup=warmup,
                              batch=batch, inputs=feeds, shapes=shape_of, seed=seed, options=options,
                              profile=not no_profile, progress=bar, command=["edgeinfer", "bench", *sys.argv[2:]])
    finally:
        bar.close()
    click.echo(bench_report.format_table(report))
    for path, writer in ((json_path, bench_report.write_json), (csv_path, bench_report.write_csv),
                         (plot_path, bench_report.write_png), (html_path, bench_report.write_html)):
        if path is not None:
            writer(report, path)
            click.echo(f"wrote {path}")


class _ProgressBar:
    """A one-line progress bar on a terminal; when not a terminal, a line per stage and per tenth
    of the work, prefixed with ``label``."""

    def __init__(self, stream, width: int = 28, label: str = "bench"):
        self.stream, self.width, self.label = stream, width, label
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last, self.stage, self.tenth = "", "", -1

    def __call__(self, message: str, fraction: float) -> None:
        if self.tty:
            done = int(round(self.width * max(0.0, min(fraction, 1.0))))
            line = f"\r[{'#' * done}{'.' * (self.width - done)}] {100 * fraction:5.1f}% {message[:60]:<60}"
            self.stream.write(line)
            self.stream.flush()
        else:
            stage, tenth = message.split(" ")[0], int(10 * max(0.0, min(fraction, 1.0)))
            if stage != "round" and (stage != self.stage or tenth != self.tenth) and message != self.last:
                self.stream.write(f"{self.label}: {message}\n")
                self.stream.flush()
            self.stage, self.tenth = stage, tenth
        self.last = message

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------------ backends
@cli.command()
def backends() -> None:
    """List the backends and whether they can run here (and why not)."""
    from .backends import available_backends

    for name, (ok, why) in available_backends().items():
        click.echo(f"{name:<10} {'available' if ok else 'unavailable':<12} {why}")


# ---------------------------------------------------------------------------- demo
DEMO_MODEL = "digits_cnn.onnx"
DEMO_DATA = "digits_test.npz"


def _median_ms(fn, runs: int) -> float:
    for _ in range(3):  # warm-up: first calls compile plans, fault in pages, fill caches
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _ort_session(model_path: Path):
    """ONNX Runtime on one thread, sequential (like our cpu backend with threads=1); None if absent."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "not installed (pip install 'edgeinfer[ort]')"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    return sess, f"onnxruntime {ort.__version__}"


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("edgeinfer-demo"),
    show_default=True,
    help="Folder for the .eim model and a sample input.",
)
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per batch size.")
def demo(out_dir: Path, runs: int) -> None:
    """Run the bundled digits CNN end to end: accuracy, latency, size, .eim round trip.

    Loads the ONNX model shipped with edgeinfer, runs it on edgeinfer's cpu backend and (when
    installed) on ONNX Runtime, both on one thread, over the bundled 450-image test set; saves
    it as .eim in --out and checks that the reloaded model gives bit-identical outputs.
    """
    from contextlib import ExitStack
    from importlib.resources import as_file, files

    import edgeinfer

    with ExitStack() as stack:
        root = files("edgeinfer") / "examples"
        if not (root / DEMO_MODEL).is_file() or not (root / DEMO_DATA).is_file():
            raise CliError(
                f"the bundled example ({DEMO_MODEL}, {DEMO_DATA}) is missing from the installed package; "
                "reinstall edgeinfer, or rebuild it with: python examples/train_digits.py"
            )
        model_path = stack.enter_context(as_file(root / DEMO_MODEL))
        data_path = stack.enter_context(as_file(root / DEMO_DATA))
        _run_demo(edgeinfer, Path(model_path), Path(data_path), out_dir, runs)


def _run_demo(edgeinfer, model_path: Path, data_path: Path, out_dir: Path, runs: int) -> None:
    echo = click.echo
    with np.load(data_path) as data:
        images, labels = data["images"], data["labels"]
    graph = _load(model_path)
    info = summarize(graph, {graph.inputs[0].name: (1,) + tuple(images.shape[1:])})
    meta = info["metadata"]
    inp, out = graph.required_inputs()[0], graph.outputs[0]
    hist = ", ".join(f"{op} {n}" for op, n in info["op_histogram"].items())

    echo("edgeinfer demo: the bundled digits classifier, end to end\n")
    echo(f"model    {model_path.name} ({format_bytes(model_path.stat().st_size)}): {meta.get('description', '')}")
    echo(f"         {inp} -> {out}")
    echo(
        f"         {info['nodes']} nodes ({hist}), {format_count(info['params'])} params, "
        f"{format_count(info['macs'])} MACs per image"
    )
    if "reproduce" in meta:
        trained = meta.get("test_accuracy", "?")
        echo(f"         trained with: {meta['reproduce']} (held-out accuracy after training: {trained})")
    echo(f"data     {len(labels)} held-out test images: {images.dtype}{list(images.shape)}, pixels / 16\n")

    with _progress("edgeinfer cpu backend"):
        sess = edgeinfer.Session(graph, backend="cpu", threads=1)
        name = sess.inputs[0].name
        ours = sess.run({name: images})[sess.outputs[0].name]
        ours_ms = [_median_ms(lambda b=b: sess.run({name: images[:b]}), runs) for b in (1, 64)]
    columns = [("edgeinfer cpu", ours, ours_ms)]
    ort_sess, ort_label = _ort_session(model_path)
    if ort_sess is not None:
        with _progress("onnxruntime"):
            ort_name = ort_sess.get_inputs()[0].name
            theirs = ort_sess.run(None, {ort_name: images})[0]
            ort_ms = [_median_ms(lambda b=b: ort_sess.run(None, {ort_name: images[:b]}), runs) for b in (1, 64)]
        columns.append((ort_label, theirs, ort_ms))

    def row(label: str, cells: list[str]) -> None:
        echo(f"{label:<24}" + "".join(f"{c:<20}" for c in cells))

    row("", [c[0] for c in columns] + ([] if ort_sess is not None else [f"onnxruntime: {ort_label}"]))
    row("test accuracy", [f"{100 * float((c[1].argmax(1) == labels).mean()):.2f} %" for c in columns])
    row("latency, batch 1", [f"{c[2][0]:.3f} ms" for c in columns])
    row("latency, batch 64", [f"{c[2][1]:.3f} ms" for c in columns])
    row("throughput, batch 64", [f"{64e3 / c[2][1]:,.0f} images/s" for c in columns])
    echo(f"(median of {runs} runs after 3 warm-up runs; one thread each)")
    if ort_sess is not None:
        diff = float(np.abs(ours.astype(np.float64) - theirs).max())
        agree = int((ours.argmax(1) == theirs.argmax(1)).sum())
        echo(
            f"max |logits difference| edgeinfer vs onnxruntime: {diff:.2e}; "
            f"predictions agree on {agree}/{len(labels)}"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    eim_path = out_dir / (model_path.stem + ".eim")
    with _progress(f"saving {eim_path}"):
        edgeinfer.save(graph, eim_path)
        reloaded = edgeinfer.Session(edgeinfer.load(eim_path), backend="cpu", threads=1)
        again = reloaded.run({name: images})[reloaded.outputs[0].name]
    identical = again.dtype == ours.dtype and again.shape == ours.shape and again.tobytes() == ours.tobytes()
    sample = out_dir / "sample_image.npy"
    np.save(sample, images[:1])
    echo(
        f"\nsaved    {eim_path} ({format_bytes(eim_path.stat().st_size)}; the .onnx is "
        f"{format_bytes(model_path.stat().st_size)}, weights {format_bytes(info['weight_bytes'])})"
    )
    echo(f"reloaded {eim_path.name}: outputs on the 450 images are {'bit-identical' if identical else 'DIFFERENT'}")
    echo(f"sample   {sample} (one test image; its label is {int(labels[0])})")
    if not identical:
        raise CliError(f"the model reloaded from {eim_path} gives different outputs; please report this")
    echo(
        f"\nnext: edgeinfer inspect {eim_path}\n"
        f"      edgeinfer run {eim_path} --input {name}={sample}\n"
        f"      edgeinfer convert your_model.onnx your_model.eim"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
