"""Unstructured magnitude pruning (converters/prune.py) on the bundled digits CNN and PP-OCRv4
rec: exact sparsities, the input left alone, accuracy at moderate sparsity, the CLI."""
import json
from pathlib import Path

import numpy as np
import pytest

import edgeinfer
from edgeinfer import InputError
from edgeinfer.converters.prune import prune_magnitude, prunable_weights, sparsity_schedule

EXAMPLES = Path(edgeinfer.__file__).parent / "examples"


@pytest.fixture(scope="module")
def digits():
    g = edgeinfer.load(EXAMPLES / "digits_cnn.onnx")
    d = np.load(EXAMPLES / "digits_test.npz")
    return g, d["images"], d["labels"]


def _accuracy(graph, x, y):
    return float((edgeinfer.Session(graph).run({"image": x})["logits"].argmax(1) == y).mean())


def test_layer_scope_gives_every_layer_the_sparsity(digits):
    g, x, y = digits
    before = {k: v.copy() for k, v in g.constants.items()}
    p = prune_magnitude(g, 0.5, min_elements=64)
    info = json.loads(p.metadata["edgeinfer.pruning"])
    assert len(info["weights"]) == 3
    for name, entry in info["weights"].items():
        w = p.constants[name]
        assert entry["sparsity"] == pytest.approx(np.mean(w == 0)) and abs(entry["sparsity"] - 0.5) < 0.01
        # the zeros are the smallest magnitudes: every kept weight is at least as large as any pruned one
        ref = prune_magnitude(g, 0.0, min_elements=64).constants[name]
        assert np.abs(ref[w == 0]).max() <= np.abs(ref[w != 0]).min()
    assert all(np.array_equal(before[k], g.constants[k]) for k in before)  # the input graph is untouched
    assert _accuracy(p, x, y) >= _accuracy(g, x, y) - 0.02  # 50 % of a small CNN, no retraining


def test_global_scope_hits_the_total_and_spares_small_weights(digits):
    g, _, _ = digits
    p = prune_magnitude(g, 0.5, scope="global", min_elements=64)
    info = json.loads(p.metadata["edgeinfer.pruning"])
    assert info["sparsity"] == pytest.approx(0.5, abs=0.01)
    per = [e["sparsity"] for e in info["weights"].values()]
    assert max(per) - min(per) > 0.2  # one threshold: layers with large weights keep more


def test_pruning_keeps_shapes_and_runs_on_every_backend(digits, tmp_path):
    g, x, _ = digits
    p = prune_magnitude(g, 0.3, min_elements=64)
    ref = edgeinfer.Session(p).run({"image": x[:20]})["logits"]
    for backend in ("ort", "openvino", "litert"):
        got = edgeinfer.Session(p, backend=backend).run({"image": x[:20]})["logits"]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    edgeinfer.save(p, tmp_path / "p.eim")
    back = edgeinfer.load(tmp_path / "p.eim")
    assert all(np.array_equal(back.constants[k], v) for k, v in p.constants.items())


def test_bad_arguments_are_named(digits):
    g, _, _ = digits
    with pytest.raises(InputError, match=r"sparsity must be in \[0, 1\)"):
        prune_magnitude(g, 1.0)
    with pytest.raises(InputError, match="scope must be one of"):
        prune_magnitude(g, 0.5, scope="row")
    with pytest.raises(InputError, match="no constant"):
        prune_magnitude(g, 0.5, min_elements=10**9)
    kept = prunable_weights(g, min_elements=64, exclude=["conv2"])
    assert len(kept) == 2 and all("conv2" not in nodes for nodes in kept.values())


def test_gradual_schedule():
    s = sparsity_schedule(0.8, 11)
    assert s[0] == 0.0 and s[-1] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(s, s[1:]))
    assert s[1] - s[0] > s[-1] - s[-2]  # fast early, slow late
    s = sparsity_schedule(0.5, 10, begin=3, end=6)
    assert s[:4] == [0.0] * 4 and s[6:] == [pytest.approx(0.5)] * 4
    with pytest.raises(InputError):
        sparsity_schedule(0.5, 0)


def test_cli_prune(tmp_path):
    from click.testing import CliRunner

    from edgeinfer.cli import cli

    src = str(EXAMPLES / "digits_cnn.onnx")
    res = CliRunner().invoke(cli, ["prune", src, str(tmp_path / "p.eim"), "--sparsity", "0.6", "--min-elements", "64"])
    assert res.exit_code == 0, res.output
    assert "60.0% zeros" in res.output
    res = CliRunner().invoke(cli, ["prune", src, str(tmp_path / "p.eim"), "--sparsity", "1.5"])
    assert res.exit_code != 0


def test_ppocr_rec_at_70_percent_stores_in_under_45_percent_of_the_dense_eim(tmp_path):
    from models import model_path

    g = edgeinfer.load(model_path("ppocr_rec"))
    p = prune_magnitude(g, 0.7)
    assert json.loads(p.metadata["edgeinfer.pruning"])["sparsity"] == pytest.approx(0.7, abs=0.005)
    edgeinfer.save(g, tmp_path / "dense.eim")
    edgeinfer.save(p, tmp_path / "sparse.eim")
    ratio = (tmp_path / "sparse.eim").stat().st_size / (tmp_path / "dense.eim").stat().st_size
    assert ratio <= 0.45, ratio  # measured 0.349 (bitmask encoding)
    back = edgeinfer.load(tmp_path / "sparse.eim")
    assert all(np.array_equal(back.constants[k], v) for k, v in p.constants.items())
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 320)).astype(np.float32)
    np.testing.assert_array_equal(edgeinfer.Session(back).run({"x": x})[back.outputs[0].name],
                                  edgeinfer.Session(p).run({"x": x})[p.outputs[0].name])
