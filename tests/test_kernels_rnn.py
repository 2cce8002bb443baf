"""RNN, GRU and LSTM against ONNX Runtime: directions, layouts, sequence_lens, initial states,
peepholes, clip, every activation function, optional outputs; and their error paths.

Where ONNX Runtime departs from the spec (defaults of Affine, ScaledTanh and ThresholdedRelu
when no alpha/beta is given) the comparisons pass the parameters explicitly.
"""
import numpy as np
import onnx
import pytest
from onnx import helper

from edgeinfer import Session
from edgeinfer.errors import GraphError, KernelError, ShapeInferenceError
from opcheck import check_node, run_edgeinfer, run_ort

RTOL, ATOL = 1e-4, 1e-5
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
N_STATES = {"RNN": 1, "GRU": 1, "LSTM": 2}
SEQ, BATCH, INPUT, HIDDEN = 5, 3, 4, 6


def rand(*shape, seed=0, scale=1.0, dtype=np.float32):
    return (np.random.default_rng(seed + sum(shape)).standard_normal(shape) * scale).astype(dtype)


def layer_inputs(op, *, dirs=1, layout=0, lens=None, initial=True, peepholes=False, seed=0, dtype=np.float32,
                 seq=SEQ, batch=BATCH):
    """X, W, R, B, sequence_lens, initial_h[, initial_c, P] with random weights."""
    g = GATES[op]
    x = rand(*((batch, seq, INPUT) if layout else (seq, batch, INPUT)), seed=seed, dtype=dtype)
    state = (batch, dirs, HIDDEN) if layout else (dirs, batch, HIDDEN)
    ins = [x, rand(dirs, g * HIDDEN, INPUT, seed=seed + 1, scale=0.5, dtype=dtype),
           rand(dirs, g * HIDDEN, HIDDEN, seed=seed + 2, scale=0.5, dtype=dtype),
           rand(dirs, 2 * g * HIDDEN, seed=seed + 3, scale=0.5, dtype=dtype),
           None if lens is None else np.array(lens, np.int32),
           rand(*state, seed=seed + 4, dtype=dtype) if initial else None]
    if op == "LSTM":
        ins += [rand(*state, seed=seed + 5, dtype=dtype) if initial else None,
                rand(dirs, 3 * HIDDEN, seed=seed + 6, scale=0.5, dtype=dtype) if peepholes else None]
    while ins[-1] is None:
        ins.pop()
    return ins


def check(op, ins, attrs, n_outputs=None, **kw):
    """Compare with ONNX Runtime. ORT's CPU kernels reject layout=1, so batch-major layers are
    compared with ORT's time-major run on the transposed tensors."""
    n_outputs = n_outputs or 1 + N_STATES[op]
    attrs = dict(attrs, hidden_size=HIDDEN)
    if not attrs.get("layout"):
        return check_node(op, ins, attrs, n_outputs=n_outputs, const_inputs=(1, 2, 3), rtol=RTOL, atol=ATOL, **kw)
    time_major = [a.swapaxes(0, 1).copy() if i in (0, 5, 6) and a is not None else a for i, a in enumerate(ins)]
    want = run_ort(op, time_major, dict(attrs, layout=0), n_outputs)
    want = [want[0].transpose(2, 0, 1, 3)] + [w.swapaxes(0, 1) for w in want[1:]]
    for consts in [(1, 2, 3), ()]:
        got = run_edgeinfer(op, ins, attrs, n_outputs, const_inputs=consts)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    return want


# --------------------------------------------------------------- the common frame
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("lens", [None, [5, 2, 4]])
def test_directions_layouts_lengths(op, direction, layout, lens):
    dirs = 2 if direction == "bidirectional" else 1
    ins = layer_inputs(op, dirs=dirs, layout=layout, lens=lens)
    check(op, ins, {"direction": direction, "layout": layout})


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_defaults_without_optional_inputs(op):
    check(op, layer_inputs(op, initial=False)[:3], {})


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_zero_length_sequence_gives_zero_state(op):
    ins = layer_inputs(op, dirs=2, lens=[5, 0, 3])
    check(op, ins, {"direction": "bidirectional"})


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_only_y_output(op):
    check(op, layer_inputs(op, dirs=2, lens=[1, 5, 3]), {"direction": "bidirectional"}, n_outputs=1)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_hidden_size_taken_from_the_weights(op):
    ins = layer_inputs(op, dirs=2)
    want = run_ort(op, ins, {"hidden_size": HIDDEN, "direction": "bidirectional"}, 1 + N_STATES[op])
    got = run_edgeinfer(op, ins, {"direction": "bidirectional"}, 1 + N_STATES[op], shapes_known=False)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_clip(op):
    check(op, layer_inputs(op, dirs=2, lens=[5, 3, 1]), {"direction": "bidirectional", "clip": 0.3})


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_float64(op):
    ins = layer_inputs(op, dirs=2, lens=[4, 5, 2], dtype=np.float64)
    want = run_edgeinfer(op, [None if a is None else a.astype(np.float32) if a.dtype == np.float64 else a
                              for a in ins], {"hidden_size": HIDDEN, "direction": "bidirectional"}, 1 + N_STATES[op])
    got = run_edgeinfer(op, ins, {"hidden_size": HIDDEN, "direction": "bidirectional"}, 1 + N_STATES[op])
    for g, w in zip(got, want):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_float16_computes_in_float32(op):
    ins = layer_inputs(op, lens=[4, 5, 2], dtype=np.float16)
    want = check(op, [None if a is None else a.astype(np.float32) if a.dtype == np.float16 else a for a in ins], {})
    got = run_edgeinfer(op, ins, {"hidden_size": HIDDEN}, 1 + N_STATES[op])
    for g, w in zip(got, want):
        assert g.dtype == np.float16
        np.testing.assert_allclose(g.astype(np.float32), w, rtol=1e-2, atol=1e-2)


# ----------------------------------------------------------------------- op specific
@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("layout", [0, 1])
def test_gru_linear_before_reset(linear_before_reset, layout):
    ins = layer_inputs("GRU", dirs=2, layout=layout, lens=[2, 5, 4])
    check("GRU", ins, {"direction": "bidirectional", "layout": layout, "linear_before_reset": linear_before_reset})


def test_gru_linear_before_reset_without_bias():
    check("GRU", layer_inputs("GRU")[:3], {"linear_before_reset": 1})


@pytest.mark.parametrize("input_forget", [0, 1])
@pytest.mark.parametrize("clip", [None, 0.4])
def test_lstm_peepholes(input_forget, clip):
    ins = layer_inputs("LSTM", dirs=2, lens=[5, 1, 3], peepholes=True)
    attrs = {"direction": "bidirectional", "input_forget": input_forget}
    if clip is not None:
        attrs["clip"] = clip
    check("LSTM", ins, attrs)


# --------------------------------------------------------------------- activations
# (name, alpha, beta) with every parameter explicit; None: the function takes none
ACTIVATIONS = [("Relu", None, None), ("Tanh", None, None), ("Sigmoid", None, None), ("Affine", 0.7, 0.2),
               ("LeakyRelu", 0.3, None), ("ThresholdedRelu", 0.1, None), ("ScaledTanh", 1.3, 0.8),
               ("HardSigmoid", 0.3, 0.4), ("Elu", 0.9, None), ("Softsign", None, None), ("Softplus", None, None)]


def activation_attrs(funcs):
    attrs = {"activations": [f[0] for f in funcs]}
    for k, key in ((1, "activation_alpha"), (2, "activation_beta")):
        values = [f[k] for f in funcs if f[k] is not None]
        if values:
            attrs[key] = values
    return attrs


@pytest.mark.parametrize("func", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_each_activation(func):
    # forward with `func`, reverse with Tanh: also covers per-direction functions
    attrs = activation_attrs([func, ("Tanh", None, None)])
    check("RNN", layer_inputs("RNN", dirs=2, lens=[5, 2, 3]), dict(attrs, direction="bidirectional"))


def _acts(*names):
    table = {a[0]: a for a in ACTIVATIONS}
    return [table[n] for n in names]


# gates (f) stay bounded so the cell state cannot overflow float32 within the sequence
@pytest.mark.parametrize("funcs", [_acts("HardSigmoid", "Affine", "ThresholdedRelu"),
                                   _acts("Sigmoid", "ScaledTanh", "LeakyRelu"),
                                   _acts("HardSigmoid", "Elu", "Softsign"),
                                   _acts("Sigmoid", "Softplus", "Relu")],
                         ids=lambda funcs: "_".join(f[0] for f in funcs))
def test_lstm_activation_lists(funcs):
    check("LSTM", layer_inputs("LSTM", peepholes=True), activation_attrs(funcs))


def test_gru_activation_lists_per_direction():
    funcs = [ACTIVATIONS[7], ACTIVATIONS[9], ACTIVATIONS[2], ACTIVATIONS[4]]
    check("GRU", layer_inputs("GRU", dirs=2), dict(activation_attrs(funcs), direction="bidirectional"))


def test_alpha_values_go_to_the_functions_that_take_them():
    # Tanh takes no alpha, so LeakyRelu gets 0.5 (and the second LeakyRelu its default)
    attrs = {"activations": ["Tanh", "LeakyRelu", "LeakyRelu"], "activation_alpha": [0.5]}
    check("LSTM", layer_inputs("LSTM"), attrs)


def test_activation_names_are_case_insensitive():
    check("GRU", layer_inputs("GRU"), {"activations": ["sigmoid", "TANH"]})


def test_spec_defaults_of_parametrised_activations():
    # ONNX: defaults are those of the same-named ops (Affine 1/0, ScaledTanh 1/1, ThresholdedRelu 1)
    x = np.linspace(-3, 3, HIDDEN, dtype=np.float32).reshape(1, 1, HIDDEN)
    w, r = np.eye(HIDDEN, dtype=np.float32)[None], np.zeros((1, HIDDEN, HIDDEN), np.float32)
    for name, expected in [("Affine", x), ("ScaledTanh", np.tanh(x)), ("ThresholdedRelu", np.where(x >= 1, x, 0))]:
        (y,) = run_edgeinfer("RNN", [x, w, r], {"hidden_size": HIDDEN, "activations": [name]})
        np.testing.assert_allclose(y.reshape(-1), expected.reshape(-1), rtol=1e-6, atol=1e-6, err_msg=name)


# ----------------------------------------------------------- through the whole stack
def _one_node_model(op, outputs, dirs=1):
    g = GATES[op]
    names = ["X", "W", "R"]
    inputs = [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [SEQ, "batch", INPUT])]
    inits = [helper.make_tensor("W", onnx.TensorProto.FLOAT, (dirs, g * HIDDEN, INPUT),
                                rand(dirs, g * HIDDEN, INPUT, scale=0.5).ravel()),
             helper.make_tensor("R", onnx.TensorProto.FLOAT, (dirs, g * HIDDEN, HIDDEN),
                                rand(dirs, g * HIDDEN, HIDDEN, seed=1, scale=0.5).ravel())]
    direction = "bidirectional" if dirs == 2 else "forward"
    node = helper.make_node(op, names, outputs, hidden_size=HIDDEN, direction=direction)
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs if o]
    graph = helper.make_graph([node], "g", inputs, outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])


@pytest.mark.parametrize("op,outputs", [("LSTM", ["", "Y_h"]), ("LSTM", ["", "", "Y_c"]), ("GRU", ["", "Y_h"]),
                                        ("RNN", ["Y"])])
def test_unnamed_outputs_through_a_session(op, outputs):
    model = _one_node_model(op, outputs, dirs=2)
    x = rand(SEQ, 2, INPUT, seed=7)
    got = Session(model).run({"X": x})
    import onnxruntime as ort
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    for name, w in zip([o for o in outputs if o], want):
        np.testing.assert_allclose(got[name], w, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------- error paths
def test_bad_direction_names_the_node():
    with pytest.raises(ShapeInferenceError, match="n0.*direction"):
        run_edgeinfer("RNN", layer_inputs("RNN"), {"hidden_size": HIDDEN, "direction": "sideways"}, 2)


def test_unknown_activation():
    with pytest.raises(ShapeInferenceError, match="n0.*unknown activation 'Swish'"):
        run_edgeinfer("GRU", layer_inputs("GRU"), {"hidden_size": HIDDEN, "activations": ["Sigmoid", "Swish"]}, 2)


def test_wrong_number_of_activations():
    with pytest.raises(ShapeInferenceError, match="n0.*3 function\\(s\\) per direction"):
        run_edgeinfer("LSTM", layer_inputs("LSTM"), {"hidden_size": HIDDEN, "activations": ["Sigmoid", "Tanh"]}, 3)


def test_too_many_alpha_values():
    with pytest.raises(ShapeInferenceError, match="n0.*activation_alpha"):
        run_edgeinfer("RNN", layer_inputs("RNN"), {"hidden_size": HIDDEN, "activation_alpha": [0.1, 0.2]}, 2)


def test_bad_layout():
    with pytest.raises(ShapeInferenceError, match="n0.*layout must be 0 or 1"):
        run_edgeinfer("RNN", layer_inputs("RNN"), {"hidden_size": HIDDEN, "layout": 2}, 2)


def test_weight_shape_mismatch():
    ins = layer_inputs("GRU")
    ins[1] = ins[1][:, :, :3]
    with pytest.raises(ShapeInferenceError, match="n0.*input W has shape \\[1, 18, 3\\], expected \\[1, 18, 4\\]"):
        run_edgeinfer("GRU", ins, {"hidden_size": HIDDEN}, 2)


def test_hidden_size_disagrees_with_weights():
    with pytest.raises(ShapeInferenceError, match="n0.*input W has shape \\[1, 6, 4\\], expected \\[1, 7, 4\\]"):
        run_edgeinfer("RNN", layer_inputs("RNN"), {"hidden_size": HIDDEN + 1}, 2)


def test_directions_disagree_with_weights():
    with pytest.raises(ShapeInferenceError, match="n0.*input W"):
        run_edgeinfer("LSTM", layer_inputs("LSTM"), {"hidden_size": HIDDEN, "direction": "bidirectional"}, 3)


def test_x_must_be_3d():
    ins = layer_inputs("RNN")
    ins[0] = ins[0][0]
    with pytest.raises(ShapeInferenceError, match="n0.*X must be 3-D"):
        run_edgeinfer("RNN", ins, {"hidden_size": HIDDEN}, 2)


def test_unknown_attribute():
    from edgeinfer.graph import Node
    from edgeinfer.kernels import get_schema, resolve_attrs

    node = Node("GRU", ["x", "w", "r"], ["y"], {"input_forget": 1}, name="n0")
    with pytest.raises(GraphError, match="n0.*unknown attribute 'input_forget'"):
        resolve_attrs(get_schema("GRU"), node)


def test_sequence_lens_out_of_range_at_run_time():
    ins = layer_inputs("RNN", lens=[5, 6, 1])
    with pytest.raises(KernelError, match="n0.*sequence_lens must lie in \\[0, 5\\]"):
        run_edgeinfer("RNN", ins, {"hidden_size": HIDDEN}, 2)


def test_shape_mismatch_found_at_run_time():
    ins = layer_inputs("LSTM")
    ins[5] = ins[5][:, :2]  # initial_h for 2 entries, X has 3
    with pytest.raises(KernelError, match="n0.*initial_h"):
        run_edgeinfer("LSTM", ins, {"hidden_size": HIDDEN}, 3, shapes_known=False)


# ---------------------------------------------------------------------------- bfloat16
def to_bfloat16(x):
    """``x`` in the IR's bfloat16 storage (raw uint16 bits today, ml_dtypes.bfloat16 later)."""
    from edgeinfer import dtypes

    store = dtypes.to_numpy("bfloat16")
    if store != np.uint16:
        return x.astype(store)
    b = x.astype(np.float32).view(np.uint32)
    return ((b + np.uint32(0x7FFF) + ((b >> 16) & np.uint32(1))) >> 16).astype(np.uint16)


def from_bfloat16(x):
    if x.dtype == np.uint16:
        return (x.astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float32)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_bfloat16(op):
    from edgeinfer.graph import Node, TensorType
    from edgeinfer.kernels import OpContext, get_schema, resolve_attrs

    ins = layer_inputs(op, dirs=2, lens=[5, 3, 2])
    ins_bf = [a if a is None or a.dtype == np.int32 else to_bfloat16(a) for a in ins]
    n_out = 1 + N_STATES[op]
    node = Node(op, [f"i{k}" for k in range(len(ins))], [f"o{k}" for k in range(n_out)],
                {"hidden_size": HIDDEN, "direction": "bidirectional"}, name="n0")
    schema = get_schema(op)
    kw = resolve_attrs(schema, node)
    ctx = OpContext(node, [None if a is None else TensorType("int32" if a.dtype == np.int32 else "bfloat16", a.shape)
                           for a in ins_bf], [None] * len(ins))
    ctx.outputs = schema.infer(ctx, **kw)
    assert all(t.dtype == "bfloat16" for t in ctx.outputs)
    got = schema.build(ctx, **kw)(*ins_bf)
    want = run_edgeinfer(op, [a if a is None or a.dtype == np.int32 else from_bfloat16(b)
                              for a, b in zip(ins, ins_bf)], kw, n_out)
    for g, w in zip(got, want):
        np.testing.assert_allclose(from_bfloat16(g), w, rtol=2e-2, atol=2e-2)


def test_one_activation_list_serves_both_directions():
    ins = layer_inputs("RNN", dirs=2)
    attrs = {"hidden_size": HIDDEN, "direction": "bidirectional"}
    one = run_edgeinfer("RNN", ins, dict(attrs, activations=["LeakyRelu"], activation_alpha=[0.5]), 2)
    both = run_edgeinfer("RNN", ins, dict(attrs, activations=["LeakyRelu"] * 2, activation_alpha=[0.5, 0.5]), 2)
    for a, b in zip(one, both):
        np.testing.assert_array_equal(a, b)


def test_forward_rnn_reads_the_first_of_two_functions():
    check("RNN", layer_inputs("RNN"), {"activations": ["Relu", "Tanh"]})
