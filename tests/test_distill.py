"""Knowledge distillation (converters/distill.py) on the bundled digits CNN: a magnitude-pruned
student wins its accuracy back from unlabeled images, a softmax output is matched on its logits,
runs are deterministic, an interrupted run resumes to the same weights, and bad inputs are named."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

import edgeinfer  # noqa: E402
from edgeinfer import InputError, Node, ValueInfo  # noqa: E402
from edgeinfer.converters.distill import DistillConfig, agreement, distill, load_samples  # noqa: E402
from edgeinfer.converters.prune import prune_magnitude  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = Path(edgeinfer.__file__).parent / "examples"


def _load_split():
    """The training images of examples/train_digits.py (the split the bundled model was trained on)."""
    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "examples" / "train_digits.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_split(seed=0)


@pytest.fixture(scope="module")
def digits():
    teacher = edgeinfer.load(EXAMPLES / "digits_cnn.onnx")
    xtr, _, _, _ = _load_split()
    test = np.load(EXAMPLES / "digits_test.npz")
    student = prune_magnitude(teacher, 0.6, min_elements=64)
    return teacher, student, xtr, test["images"], test["labels"]


def _accuracy(graph, x, y, output="logits"):
    return float((edgeinfer.Session(graph).run({"image": x})[output].argmax(1) == y).mean())


FAST = dict(epochs=4, lr=3e-3, progress=False)


def test_distillation_wins_back_the_accuracy_pruning_lost(digits):
    teacher, student, xtr, xte, yte = digits
    acc_t, acc_s = _accuracy(teacher, xte, yte), _accuracy(student, xte, yte)
    agree_before = agreement(teacher, student, xte)
    assert acc_s < acc_t - 0.03  # 60 % magnitude pruning without retraining hurts
    result = distill(teacher, student, xtr, **FAST)  # unlabeled training images only
    acc_d = _accuracy(result.student, xte, yte)
    assert acc_d >= acc_t - 0.015
    assert agreement(teacher, result.student, xte) > agree_before + 0.03
    # the pruned zeros stay zeros and the graph given is not changed
    for name, w in student.constants.items():
        if w.ndim >= 2:
            got = result.student.constants[name]
            assert np.array_equal(got == 0, w == 0), name
            assert not np.signbit(got[got == 0]).any(), name  # +0.0: .eim's sparse encodings drop them
    assert _accuracy(student, xte, yte) == acc_s
    meta = json.loads(result.student.metadata["edgeinfer.distillation"])
    assert meta["epochs"] == 4 and meta["seed"] == 0 and meta["features"] == result.features
    assert result.outputs == [{"output": "logits", "loss": "mse", "target": "logits", "axis": None}]  # raw logits
    assert result.features and all(f in student.producers() for f in result.features)
    assert len(result.history) == 4
    m = result.metrics
    assert m["after"]["val_agreement"] >= m["before"]["val_agreement"]
    assert m["after"]["val_mse"] < m["before"]["val_mse"] / 5
    assert json.loads(result.to_json())["metrics"]["best_epoch"] == m["best_epoch"]


def _with_softmax(graph):
    g = graph.copy()
    g.nodes.append(Node("Softmax", ["logits"], ["probs"], {"axis": 1}, name="softmax"))
    g.outputs = [ValueInfo("probs", g.outputs[0].dtype, g.outputs[0].shape)]
    return g


def test_softmax_output_is_distilled_on_its_logits_with_kl(digits):
    teacher, student, xtr, xte, yte = digits
    t, s = _with_softmax(teacher), _with_softmax(student)
    result = distill(t, s, xtr, features=[], temperature=2.0, **FAST)
    assert result.outputs == [{"output": "probs", "loss": "kl", "target": "logits", "axis": -1}]
    assert result.features == []
    assert _accuracy(result.student, xte, yte, "probs") >= _accuracy(t, xte, yte, "probs") - 0.015


def test_same_seed_same_weights_other_seed_other_weights(digits):
    teacher, student, xtr, _, _ = digits
    x = xtr[:400]
    a = distill(teacher, student, x, epochs=2, progress=False)
    b = distill(teacher, student, x, epochs=2, progress=False)
    c = distill(teacher, student, x, epochs=2, progress=False, seed=1)
    for name in student.constants:
        assert np.array_equal(a.student.constants[name], b.student.constants[name]), name
    assert any(not np.array_equal(a.student.constants[k], c.student.constants[k]) for k in student.constants)
    assert a.history[-1]["loss"] == b.history[-1]["loss"]


def test_interrupted_run_resumes_to_the_uninterrupted_weights(digits, tmp_path, capsys):
    teacher, student, xtr, _, _ = digits
    x = xtr[:400]
    ckpt = tmp_path / "distill.ckpt"
    config = DistillConfig(epochs=4, batch_size=32, progress=False, checkpoint=ckpt)
    seen = []
    # the callback stops the first run after epoch 2, as an interruption would
    first = distill(teacher, student, x, config, callback=lambda e, m: seen.append(e) or e < 2)
    assert seen == [1, 2] and len(first.history) == 2 and ckpt.exists()
    resumed = distill(teacher, student, x, config, progress=True)
    assert "resuming" in capsys.readouterr().err
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    straight = distill(teacher, student, x, epochs=4, batch_size=32, progress=False)
    for name in student.constants:
        assert np.array_equal(resumed.student.constants[name], straight.student.constants[name]), name
    with pytest.raises(InputError, match=r"lr: checkpoint 0.001, now 0.002"):
        distill(teacher, student, x, config, lr=2e-3)
    fresh = distill(teacher, student, x, config, lr=2e-3, resume=False)  # overwrites the checkpoint
    assert len(fresh.history) == 4


def test_progress_lines_go_to_stderr(digits, capsys):
    teacher, student, xtr, _, _ = digits
    distill(teacher, student, xtr[:200], epochs=2)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("distill epoch")]
    assert len(lines) == 2 and "val agreement" in lines[0] and lines[1].startswith("distill epoch 2/2")
    distill(teacher, student, xtr[:200], epochs=1, progress=False)
    assert capsys.readouterr().err == ""


def test_fixed_batch_one_graph_is_run_sample_by_sample(digits):
    teacher, student, xtr, xte, _ = digits
    t, s = teacher.copy(), student.copy()
    for g in (t, s):
        g.inputs = [ValueInfo("image", g.inputs[0].dtype, (1, 1, 8, 8))]
        g.outputs = [ValueInfo("logits", g.outputs[0].dtype, (1, 10))]
    result = distill(t, s, xtr[:96], epochs=2, batch_size=16, features=["relu2"], progress=False, lr=3e-3)
    assert result.features == ["relu2"] and result.history[-1]["val_agreement"] is not None
    assert agreement(t, result.student, xte[:60]) >= agreement(t, s, xte[:60])


def test_every_data_form_gives_the_same_samples(digits, tmp_path):
    teacher, _, xtr, _, _ = digits
    x = xtr[:5]
    np.savez(tmp_path / "one.npz", x)
    np.savez(tmp_path / "named.npz", image=x)
    forms = [x, {"image": x}, [{"image": s} for s in x], [{"image": x[:2]}, {"image": x[2:]}],
             tmp_path / "one.npz", str(tmp_path / "named.npz"), x.astype(np.float64)]
    for form in forms:
        got = load_samples(form, teacher)
        assert list(got) == ["image"] and got["image"].dtype == np.float32
        np.testing.assert_array_equal(got["image"], x)


def test_bad_inputs_are_named(digits, tmp_path):
    teacher, student, xtr, _, _ = digits
    other = student.copy()
    other.outputs = [ValueInfo("logits2", other.outputs[0].dtype, other.outputs[0].shape)]
    with pytest.raises(InputError, match=r"outputs differ: teacher \['logits'\], student \['logits2'\]"):
        distill(teacher, other, xtr[:10], progress=False)
    with pytest.raises(InputError, match="no samples"):
        distill(teacher, student, np.zeros((0, 1, 8, 8), np.float32), progress=False)
    with pytest.raises(InputError, match="no samples"):
        distill(teacher, student, [], progress=False)
    with pytest.raises(InputError, match=r"input 'image' has shape \[4, 1, 9, 9\].*expected 8, got 9"):
        distill(teacher, student, np.zeros((4, 1, 9, 9), np.float32), progress=False)
    with pytest.raises(InputError, match="'pixels' that is no input"):
        distill(teacher, student, {"pixels": xtr[:4]}, progress=False)
    with pytest.raises(InputError, match="feature 'nope' is not a tensor"):
        distill(teacher, student, xtr[:10], features=["nope"], progress=False)
    with pytest.raises(InputError, match=r"unknown setting\(s\) \['epoch'\]"):
        distill(teacher, student, xtr[:10], epoch=3)
    with pytest.raises(InputError, match="temperature must be > 0"):
        distill(teacher, student, xtr[:10], temperature=0)
    with pytest.raises(InputError, match="does not exist"):
        distill(teacher, student, tmp_path / "missing.npz")
    bad = tmp_path / "bad.ckpt"  # not ours: refused without unpickling code, and no advice to do so
    bad.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(InputError, match="cannot be read as a distillation checkpoint") as err:
        distill(teacher, student, xtr[:10], checkpoint=bad, **FAST)
    assert "weights_only" not in str(err.value)


def test_channel_pruned_student_recovers(digits):
    from edgeinfer.converters.prune_channels import prune_channels

    teacher, _, xtr, xte, yte = digits
    student = prune_channels(teacher, 0.5)  # half the channels of both convs leave the graph
    acc_t, acc_s = _accuracy(teacher, xte, yte), _accuracy(student, xte, yte)
    with pytest.raises(InputError, match="feature 'relu2' has shape .*16.* in the teacher but .*8.* in the student"):
        distill(teacher, student, xtr, features=["relu2"], progress=False)
    result = distill(teacher, student, xtr, epochs=6, lr=3e-3, progress=False)
    assert result.features == []  # no intermediate keeps its shape in this small net
    acc_d = _accuracy(result.student, xte, yte)
    assert acc_d >= max(acc_s + 0.15, acc_t - 0.04), (acc_t, acc_s, acc_d)
