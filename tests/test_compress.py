"""Compression recipes and the per-stage report (converters/compress.py), and the distill and
compress commands, on the bundled digits CNN: prune 30% of the channels, distill on unlabeled
training digits, quantize; every stage measured the same way."""
import json
from pathlib import Path

import numpy as np
import pytest

import edgeinfer
from edgeinfer import InputError
from edgeinfer.converters.compress import compress, markdown_table, parse_recipe, write_report

pytest.importorskip("torch")

EXAMPLES = Path(edgeinfer.__file__).parent / "examples"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    from train_digits import load_split

    xtr, _, xte, yte = load_split(0)
    return edgeinfer.load(EXAMPLES / "digits_cnn.onnx"), xtr, xte, yte


def _accuracy(x, y):
    return lambda sess: float((sess.run({"image": x})["logits"].argmax(1) == y).mean())


def test_recipe_prune_distill_quantize_reports_every_stage(digits, tmp_path):
    g, xtr, xte, yte = digits
    recipe = {"steps": [{"prune": {"channels": 0.3}}, {"distill": {"epochs": 6, "lr": 3e-3, "progress": False}},
                        {"quantize": {"mode": "static"}}]}
    out, report = compress(g, recipe, {"image": xtr[:600]}, evaluate=_accuracy(xte, yte), backends=["cpu", "ort"],
                           min_seconds=0.05, progress=False)
    stages = report["stages"]
    assert [s["stage"].split("(")[0] for s in stages] == ["original", "prune", "distill", "quantize"]
    orig, pruned, distilled, quant = stages
    assert pruned["macs"] < 0.6 * orig["macs"] and pruned["params"] < orig["params"]
    assert distilled["macs"] == pruned["macs"]
    assert quant["onnx_bytes"] < distilled["onnx_bytes"]
    assert orig["agreement"] == 1.0 and orig["accuracy"] > 0.95
    # distillation wins back what pruning cost, on the labelled test set it never saw
    assert distilled["accuracy"] > pruned["accuracy"] + 0.02 and distilled["accuracy"] >= orig["accuracy"] - 0.03
    for s in stages:
        assert set(s["latency_ms"]) == {"cpu", "ort"} and all(v > 0 for v in s["latency_ms"].values())
        assert s["predicted_ms"]["cpu"] == pytest.approx(orig["latency_ms"]["cpu"] * s["macs"] / orig["macs"])
    assert out.op_histogram().get("QuantizeLinear")
    paths = write_report(report, tmp_path / "rep")
    assert [p.suffix for p in paths] == [".json", ".md", ".png"] and all(p.stat().st_size for p in paths)
    assert json.loads(paths[0].read_text())["schema"] == "edgeinfer.compress/1"
    table = markdown_table(report)
    assert table.count("\n") == 2 + len(stages) and "cpu ms (pred)" in table


def test_recipes_are_checked_before_any_work(tmp_path):
    bad = [({"steps": []}, "non-empty"), ({"steps": [{"shrink": {}}]}, "unknown step 'shrink'"),
           ({"steps": [{"prune": {"channels": 0.3, "sparsity": 0.5}}]}, "exactly one of"),
           ({"steps": [{"distill": {"epoch": 3}}]}, r"unknown option\(s\) \['epoch'\]"),
           ({"steps": [{"quantize": {"mode": "static", "methd": "mse"}}]}, "methd"), ({"stages": []}, "no 'steps'")]
    for recipe, msg in bad:
        with pytest.raises(InputError, match=msg):
            parse_recipe(recipe)
    y = tmp_path / "r.yaml"
    y.write_text("steps:\n  - prune: {target_macs: 0.3, criterion: bn}\n  - distill: {epochs: 2}\n  - quantize\n")
    steps = parse_recipe(y)
    assert [(s.kind, s.options) for s in steps] == [("prune", {"target_macs": 0.3, "criterion": "bn"}),
                                                   ("distill", {"epochs": 2}), ("quantize", {})]
    (tmp_path / "bad.yaml").write_text("steps: [prune: {channels: 0.3\n")
    with pytest.raises(InputError, match="not valid YAML"):
        parse_recipe(tmp_path / "bad.yaml")
    (tmp_path / "evil.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")  # safe_load: no code
    with pytest.raises(InputError, match="not valid YAML"):
        parse_recipe(tmp_path / "evil.yaml")
    with pytest.raises(InputError, match="does not exist"):
        parse_recipe(tmp_path / "missing.yaml")


def test_cli_distill_and_compress(digits, tmp_path):
    from click.testing import CliRunner

    from edgeinfer.cli import cli

    g, xtr, xte, yte = digits
    run = CliRunner().invoke
    data = tmp_path / "train.npz"
    np.savez(data, image=xtr[:400])
    pruned = tmp_path / "pruned.onnx"
    assert run(cli, ["prune", str(EXAMPLES / "digits_cnn.onnx"), str(pruned), "--channels", "0.3"]).exit_code == 0
    out = tmp_path / "student.onnx"
    res = run(cli, ["distill", str(EXAMPLES / "digits_cnn.onnx"), str(pruned), str(out), "--data", str(data),
                    "--epochs", "4", "--lr", "0.003"])
    assert res.exit_code == 0, res.output
    assert "validation agreement" in res.output
    student = edgeinfer.load(out)
    acc = _accuracy(xte, yte)
    assert acc(edgeinfer.Session(student)) > acc(edgeinfer.Session(edgeinfer.load(pruned)))
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"steps": [{"prune": {"channels": 0.3}}, {"distill": {"epochs": 2}}]}))
    dst = tmp_path / "small.eim"
    res = run(cli, ["compress", str(EXAMPLES / "digits_cnn.onnx"), str(dst), "--recipe", str(recipe), "--data", str(data),
                    "--backends", "cpu", "--min-seconds", "0.05"])
    assert res.exit_code == 0, res.output
    assert dst.is_file() and (tmp_path / "small_compress.json").is_file() and (tmp_path / "small_compress.png").is_file()
    assert "| original |" in res.output and "| distill(epochs=2) |" in res.output
