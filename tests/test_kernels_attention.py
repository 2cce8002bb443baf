"""The attention family: Attention and RotaryEmbedding against ONNX Runtime; LinearAttention,
CausalConvWithState and FlexAttention (which ORT lacks) against small loop-based references
written from the ONNX spec; error paths name the node."""
import math

import numpy as np
import pytest

from edgeinfer.errors import GraphError, KernelError, ShapeInferenceError
from opcheck import check_node, run_edgeinfer, run_ort

RTOL, ATOL = 1e-4, 1e-5


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed + 7 * len(shape) + sum(shape)).standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------ reference Attention
def ref_attention(q, k, v, mask=None, scale=None, causal=False, left=-1, right=-1, offset=0, nonpad=None):
    """One head at a time, straight from the spec (4-D inputs, float64)."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    b, hq, sq, d = q.shape
    hkv, t = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(d) if scale is None else scale
    y = np.zeros((b, hq, sq, v.shape[3]))
    for bi in range(b):
        off = offset if nonpad is None else nonpad[bi] - sq
        for h in range(hq):
            kh, vh = k[bi, h // (hq // hkv)], v[bi, h // (hq // hkv)]
            for i in range(sq):
                s = q[bi, h, i] @ kh.T * scale
                for j in range(t):
                    p = i + off
                    if mask is not None:
                        m = np.broadcast_to(mask, (b, hq, sq, t))[bi, h, i, j]
                        s[j] += (0 if m else -np.inf) if mask.dtype == bool else m
                    if (causal and j > p) or (left >= 0 and j < p - left) or (right >= 0 and j > p + right) \
                            or (nonpad is not None and j >= nonpad[bi]):
                        s[j] = -np.inf
                if np.all(np.isneginf(s)):
                    continue  # a query that may see no key outputs zeros
                e = np.exp(s - s.max())
                y[bi, h, i] = e / e.sum() @ vh
    return y


# ---------------------------------------------------------------------------- Attention
QKV_4D = {
    "mha": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 8)),
    "gqa": ((2, 6, 4, 8), (2, 2, 6, 8), (2, 2, 6, 8)),
    "mqa": ((1, 4, 3, 8), (1, 1, 5, 8), (1, 1, 5, 8)),
    "v_head_size": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5)),
}


@pytest.mark.parametrize("layout", sorted(QKV_4D))
@pytest.mark.parametrize("attrs", [{}, {"scale": 0.3}, {"softcap": 2.0}])
def test_attention_4d(layout, attrs):
    qs, ks, vs = QKV_4D[layout]
    check_node("Attention", [rand(*qs), rand(*ks, seed=1), rand(*vs, seed=2)], attrs, opset=24, rtol=RTOL, atol=ATOL)


def test_attention_causal_square():
    q, k, v = rand(2, 3, 5, 8), rand(2, 3, 5, 8, seed=1), rand(2, 3, 5, 8, seed=2)
    check_node("Attention", [q, k, v], {"is_causal": 1}, opset=24, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mask_shape", [(4, 6), (1, 4, 6), (2, 1, 4, 6), (1, 3, 4, 6), (3, 4, 6)])
@pytest.mark.parametrize("kind", ["float", "bool"])
def test_attention_masks_broadcast(mask_shape, kind):
    q, k, v = rand(2, 3, 4, 8), rand(2, 3, 6, 8, seed=1), rand(2, 3, 6, 8, seed=2)
    if kind == "float":
        mask = rand(*mask_shape, seed=3)
    else:
        mask = np.random.default_rng(4).random(mask_shape) < 0.7
        mask[..., 0] = True  # keep every row attending something (ORT gives NaN otherwise)
    check_node("Attention", [q, k, v, mask], opset=24, rtol=RTOL, atol=ATOL)


def test_attention_3d_gqa_against_ort():
    q, k, v = rand(2, 4, 6 * 8), rand(2, 5, 2 * 8, seed=1), rand(2, 5, 2 * 4, seed=2)
    check_node("Attention", [q, k, v], {"q_num_heads": 6, "kv_num_heads": 2}, opset=24, rtol=RTOL, atol=ATOL)


def test_attention_past_and_present():
    q, k, v = rand(2, 3, 2, 8), rand(2, 3, 2, 8, seed=1), rand(2, 3, 2, 8, seed=2)
    pk, pv = rand(2, 3, 5, 8, seed=3), rand(2, 3, 5, 8, seed=4)
    mask = rand(2, 7, seed=5)
    got = check_node("Attention", [q, k, v, mask, pk, pv], n_outputs=3, opset=24, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(got[1], np.concatenate([pk, k], axis=2))


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_attention_qk_matmul_output_modes(mode):
    q, k, v = rand(1, 2, 3, 8), rand(1, 2, 4, 8, seed=1), rand(1, 2, 4, 8, seed=2)
    mask = rand(3, 4, seed=3)
    attrs = {"qk_matmul_output_mode": mode, "softcap": 1.5}
    y, _, _, qk = run_edgeinfer("Attention", [q, k, v, mask], attrs, n_outputs=4)
    raw = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k) / math.sqrt(8)
    capped = 1.5 * np.tanh(raw / 1.5)
    biased = capped + mask
    probs = np.exp(biased - biased.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    want = [raw, capped, biased, probs][mode]
    np.testing.assert_allclose(qk, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(y, probs @ v, rtol=RTOL, atol=ATOL)


def test_attention_nonpad_kv_seqlen_against_ort():
    q, k, v = rand(2, 3, 4, 8), rand(2, 3, 6, 8, seed=1), rand(2, 3, 6, 8, seed=2)
    nonpad = np.array([3, 6], dtype=np.int64)
    check_node("Attention", [q, k, v, None, None, None, nonpad], opset=24, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("causal,left,right", [(1, 2, -1), (0, 1, 2), (1, -1, -1), (0, 0, 0)])
@pytest.mark.parametrize("nonpad", [None, (5, 7)])
def test_attention_windows_and_external_cache(causal, left, right, nonpad):
    q, k, v = rand(2, 4, 3, 8), rand(2, 2, 7, 8, seed=1), rand(2, 2, 7, 6, seed=2)
    inputs = [q, k, v] + ([None, None, None, np.array(nonpad, np.int64)] if nonpad else [])
    attrs = {"is_causal": causal, "left_window_size": left, "right_window_size": right}
    (y,) = run_edgeinfer("Attention", inputs, attrs)
    want = ref_attention(q, k, v, causal=causal, left=left, right=right, nonpad=nonpad)
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


def test_attention_causal_with_past_is_bottom_right():
    q, k, v = rand(1, 2, 3, 4), rand(1, 2, 3, 4, seed=1), rand(1, 2, 3, 4, seed=2)
    pk, pv = rand(1, 2, 4, 4, seed=3), rand(1, 2, 4, 4, seed=4)
    y, pk_out, pv_out = run_edgeinfer("Attention", [q, k, v, None, pk, pv], {"is_causal": 1}, n_outputs=3)
    want = ref_attention(q, np.concatenate([pk, k], 2), np.concatenate([pv, v], 2), causal=True, offset=4)
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


def test_attention_fully_masked_rows_are_zero():
    q, k, v = rand(1, 2, 3, 4), rand(1, 2, 3, 4, seed=1), rand(1, 2, 3, 4, seed=2)
    mask = np.array([[False, False, False], [True, False, True], [True, True, True]])
    y, _, _, probs = run_edgeinfer("Attention", [q, k, v, mask], {"qk_matmul_output_mode": 3}, n_outputs=4)
    assert np.all(np.isfinite(y)) and np.all(y[:, :, 0] == 0) and np.all(probs[:, :, 0] == 0)
    np.testing.assert_allclose(y, ref_attention(q, k, v, mask=mask), rtol=RTOL, atol=ATOL)
    # a negative causal offset (fewer valid keys than queries) empties the leading rows too
    (y,) = run_edgeinfer("Attention", [q, k, v, None, None, None, np.array([1], np.int64)], {"is_causal": 1})
    assert np.all(y[:, :, :2] == 0) and np.all(y[:, :, 2] != 0)


def test_attention_short_mask_is_padded_with_minus_inf():
    q, k, v = rand(1, 1, 2, 4), rand(1, 1, 5, 4, seed=1), rand(1, 1, 5, 4, seed=2)
    mask = rand(2, 3, seed=3)
    (y,) = run_edgeinfer("Attention", [q, k, v, mask])
    full = np.concatenate([mask, np.full((2, 2), -np.inf, np.float32)], axis=1)
    np.testing.assert_allclose(y, ref_attention(q, k, v, mask=full), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("precision", [1, 10, 11, 16])
def test_attention_softmax_precision(precision):
    q, k, v = rand(1, 2, 3, 8), rand(1, 2, 4, 8, seed=1), rand(1, 2, 4, 8, seed=2)
    (y,) = run_edgeinfer("Attention", [q, k, v], {"softmax_precision": precision})
    tol = {1: 1e-5, 10: 2e-3, 11: 1e-5, 16: 1e-2}[precision]
    np.testing.assert_allclose(y, ref_attention(q, k, v), rtol=tol, atol=tol)


def test_attention_float16_and_float64():
    for dtype, tol in ((np.float16, 2e-3), (np.float64, 1e-10)):
        q, k, v = (rand(2, 3, n, 8, seed=i, dtype=dtype) for i, n in enumerate((4, 6, 6)))
        (y,) = run_edgeinfer("Attention", [q, k, v], {"is_causal": 1})
        assert y.dtype == dtype
        np.testing.assert_allclose(y.astype(np.float64), ref_attention(q, k, v, causal=True), rtol=tol, atol=tol)


def test_attention_unknown_shapes():
    q, k, v = rand(2, 6, 12), rand(2, 5, 4, seed=1), rand(2, 5, 4, seed=2)
    attrs = {"q_num_heads": 3, "kv_num_heads": 1}
    (a,) = run_edgeinfer("Attention", [q, k, v], attrs)
    (b,) = run_edgeinfer("Attention", [q, k, v], attrs, shapes_known=False)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 6, 12)


@pytest.mark.parametrize("inputs,attrs,match", [
    ([(2, 4, 8), (2, 4, 8), (2, 4, 8)], {}, "q_num_heads and kv_num_heads"),
    ([(2, 4, 9), (2, 4, 8), (2, 4, 8)], {"q_num_heads": 2, "kv_num_heads": 2}, "not divisible"),
    ([(2, 3, 4, 8), (2, 2, 4, 8), (2, 2, 4, 8)], {}, "multiple of kv_num_heads"),
    ([(2, 3, 4, 8), (2, 3, 4, 6), (2, 3, 4, 8)], {}, "head sizes differ"),
    ([(2, 3, 4, 8), (2, 3, 4, 8), (2, 3, 4, 8)], {"qk_matmul_output_mode": 4}, "qk_matmul_output_mode"),
    ([(2, 3, 4, 8), (2, 3, 4, 8), (2, 3, 4, 8)], {"softmax_precision": 7}, "softmax_precision"),
    ([(2, 3, 4, 8), (2, 3, 4, 8)], {}, "rank"),
    ([(2, 3, 4, 8), (2, 3, 4, 8), (2, 3, 4, 8), None, (2, 3, 1, 8)], {}, "together"),
])
def test_attention_errors_name_the_node(inputs, attrs, match):
    arrays = [None if s is None else rand(*s, seed=i) for i, s in enumerate(inputs)]
    if len(arrays) == 2:  # a 4-D Q with a 3-D V
        arrays.append(rand(2, 4, 8))
    with pytest.raises(ShapeInferenceError, match=f"n0.*{match}"):
        run_edgeinfer("Attention", arrays, attrs)


def test_attention_runtime_errors_name_the_node():
    q, k, v = rand(2, 3, 4, 8), rand(2, 3, 6, 8, seed=1), rand(2, 3, 6, 8, seed=2)
    with pytest.raises(KernelError, match="n0.*attn_mask"):
        run_edgeinfer("Attention", [q, k, v, rand(4, 9)], shapes_known=False)
    with pytest.raises(KernelError, match="n0.*incompatible"):
        run_edgeinfer("Attention", [q, rand(2, 3, 6, 5), v], shapes_known=False)


def test_attention_unknown_attribute():
    with pytest.raises(GraphError, match="n0.*unknown attribute 'causal'"):
        run_edgeinfer("Attention", [rand(1, 1, 2, 4)] * 3, {"causal": 1})


# ---------------------------------------------------------------------- RotaryEmbedding
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot_dim", [0, 4])
def test_rotary_embedding_with_position_ids(interleaved, rot_dim):
    x = rand(2, 3, 5, 8)
    half = (rot_dim or 8) // 2
    cos, sin = rand(10, half, seed=1), rand(10, half, seed=2)
    pos = np.random.default_rng(3).integers(0, 10, (2, 5)).astype(np.int64)
    check_node("RotaryEmbedding", [x, cos, sin, pos], {"interleaved": interleaved, "rotary_embedding_dim": rot_dim},
               opset=23, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding_3d_without_position_ids(interleaved):
    x = rand(2, 5, 4 * 6)
    cos, sin = rand(2, 5, 3, seed=1), rand(2, 5, 3, seed=2)
    check_node("RotaryEmbedding", [x, cos, sin], {"interleaved": interleaved, "num_heads": 4}, opset=23,
               rtol=RTOL, atol=ATOL)


def test_rotary_embedding_float16():
    x = rand(1, 2, 3, 4, dtype=np.float16)
    cos, sin = rand(4, 2, seed=1, dtype=np.float16), rand(4, 2, seed=2, dtype=np.float16)
    pos = np.array([[0, 2, 3]], np.int64)
    check_node("RotaryEmbedding", [x, cos, sin, pos], opset=23, rtol=2e-3, atol=2e-3)


def test_rotary_embedding_rotates_pairs():
    # angle pi/2 on every pair: (a, b) -> (-b, a); the tail beyond rotary_embedding_dim is kept
    x = np.arange(8, dtype=np.float32).reshape(1, 1, 1, 8)
    cos, sin = np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32)
    pos = np.zeros((1, 1), np.int64)
    (y,) = run_edgeinfer("RotaryEmbedding", [x, cos, sin, pos], {"rotary_embedding_dim": 4})
    np.testing.assert_array_equal(y.ravel(), [-2, -3, 0, 1, 4, 5, 6, 7])
    (y,) = run_edgeinfer("RotaryEmbedding", [x, cos, sin, pos], {"rotary_embedding_dim": 4, "interleaved": 1})
    np.testing.assert_array_equal(y.ravel(), [-1, 0, -3, 2, 4, 5, 6, 7])


@pytest.mark.parametrize("inputs,attrs,match", [
    ([(2, 5, 8), (2, 5, 2), (2, 5, 2)], {}, "num_heads"),
    ([(1, 1, 2, 8), (4, 3), (4, 3), "pos"], {"rotary_embedding_dim": 5}, "even"),
    ([(1, 1, 2, 8), (4, 3), (4, 3), "pos"], {}, "rotary_embedding_dim/2"),
    ([(1, 1, 2, 8), (1, 2, 4), (1, 2, 4), "pos"], {}, "2-D with position_ids"),
])
def test_rotary_embedding_errors(inputs, attrs, match):
    arrays = [np.zeros((1, 2), np.int64) if s == "pos" else rand(*s) for s in inputs]
    with pytest.raises(ShapeInferenceError, match=f"n0.*{match}"):
        run_edgeinfer("RotaryEmbedding", arrays, attrs)


def test_rotary_embedding_position_out_of_range():
    x, cos, sin = rand(1, 1, 2, 4), rand(3, 2), rand(3, 2)
    with pytest.raises(KernelError, match=r"n0.*position_ids must lie in \[0, 3\)"):
        run_edgeinfer("RotaryEmbedding", [x, cos, sin, np.array([[0, 3]], np.int64)])


# ---------------------------------------------------------------------- LinearAttention
def ref_linear_attention(q, k, v, hq, hkv, rule, past=None, decay=None, beta=None, scale=0.0):
    """Token by token, head by head, exactly as the spec's recurrences read."""
    b, t, _ = q.shape
    dk = q.shape[2] // hq
    dv = v.shape[2] // hkv
    scale = scale or 1 / math.sqrt(dk)
    state = np.zeros((b, hkv, dk, dv)) if past is None else past.astype(np.float64).copy()
    out = np.zeros((b, t, hq * dv))
    for bi in range(b):
        for h in range(hkv):
            s = state[bi, h]
            for ti in range(t):
                kt = k[bi, ti, h * dk:(h + 1) * dk].astype(np.float64)
                vt = v[bi, ti, h * dv:(h + 1) * dv].astype(np.float64)
                if decay is not None and "gated" in rule:
                    g = decay[bi, ti, h * dk:(h + 1) * dk] if decay.shape[2] == hkv * dk else decay[bi, ti, h]
                    s = np.exp(np.asarray(g, np.float64)).reshape(-1, 1) * s
                if "delta" in rule:
                    bt = beta[bi, ti, h if beta.shape[2] > 1 else 0]
                    s = s + bt * np.outer(kt, vt - s.T @ kt)
                else:
                    s = s + np.outer(kt, vt)
                for g_ in range(hq // hkv):
                    hh = h * (hq // hkv) + g_
                    out[bi, ti, hh * dv:(hh + 1) * dv] = scale * q[bi, ti, hh * dk:(hh + 1) * dk] @ s
            state[bi, h] = s
    return out, state


def linear_inputs(b, t, hq, hkv, dk, dv, per_head_decay=False, beta_heads=None, dtype=np.float32):
    q = rand(b, t, hq * dk, dtype=dtype)
    k = rand(b, t, hkv * dk, seed=1)
    k4 = k.reshape(b, t, hkv, dk)
    k = (k4 / np.linalg.norm(k4, axis=-1, keepdims=True)).reshape(b, t, hkv * dk).astype(dtype)
    v = rand(b, t, hkv * dv, seed=2, dtype=dtype)
    decay = (-np.abs(rand(b, t, hkv if per_head_decay else hkv * dk, seed=3)) * 0.2).astype(dtype)
    beta = np.random.default_rng(4).random((b, t, beta_heads or hkv)).astype(dtype)
    return q, k, v, decay, beta


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (3, 1)])
def test_linear_attention_rules(rule, heads):
    hq, hkv = heads
    q, k, v, decay, beta = linear_inputs(2, 5, hq, hkv, 4, 3)
    past = rand(2, hkv, 4, 3, seed=5) * 0.1
    inputs = [q, k, v, past, decay if "gated" in rule else None, beta if "delta" in rule else None]
    out, state = run_edgeinfer("LinearAttention", inputs, {"update_rule": rule, "q_num_heads": hq,
                                                           "kv_num_heads": hkv}, n_outputs=2)
    want_out, want_state = ref_linear_attention(q, k, v, hq, hkv, rule, past, decay, beta)
    np.testing.assert_allclose(out, want_out, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(state, want_state, rtol=RTOL, atol=ATOL)


def test_linear_attention_per_head_decay_scalar_beta_and_scale():
    q, k, v, decay, beta = linear_inputs(1, 4, 2, 2, 4, 4, per_head_decay=True, beta_heads=1)
    attrs = {"q_num_heads": 2, "kv_num_heads": 2, "scale": 0.5}
    out, state = run_edgeinfer("LinearAttention", [q, k, v, None, decay, beta], attrs, n_outputs=2)
    want_out, want_state = ref_linear_attention(q, k, v, 2, 2, "gated_delta", None, decay, beta, 0.5)
    np.testing.assert_allclose(out, want_out, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(state, want_state, rtol=RTOL, atol=ATOL)


def test_linear_attention_prefill_equals_decode_steps():
    q, k, v, decay, beta = linear_inputs(1, 6, 2, 1, 4, 3)
    attrs = {"q_num_heads": 2, "kv_num_heads": 1}
    full, final = run_edgeinfer("LinearAttention", [q, k, v, None, decay, beta], attrs, n_outputs=2)
    state = None
    for t in range(6):
        sl = slice(t, t + 1)
        step, state = run_edgeinfer("LinearAttention", [q[:, sl], k[:, sl], v[:, sl], state, decay[:, sl], beta[:, sl]],
                                    attrs, n_outputs=2)
        np.testing.assert_allclose(step, full[:, sl], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(state, final, rtol=RTOL, atol=ATOL)


def test_linear_attention_float16():
    q, k, v, decay, beta = linear_inputs(1, 3, 2, 2, 4, 4, dtype=np.float16)
    out, state = run_edgeinfer("LinearAttention", [q, k, v, None, decay, beta],
                               {"q_num_heads": 2, "kv_num_heads": 2}, n_outputs=2)
    assert out.dtype == state.dtype == np.float16
    want, _ = ref_linear_attention(q, k, v, 2, 2, "gated_delta", None, decay, beta)
    np.testing.assert_allclose(out.astype(np.float64), want, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("attrs,inputs,match", [
    ({"update_rule": "lstm"}, "qkv", "update_rule 'lstm'"),
    ({"update_rule": "gated"}, "qkv", "needs the decay"),
    ({"update_rule": "delta"}, "qkv", "needs the beta"),
    ({"update_rule": "linear", "q_num_heads": 3}, "qkv", "multiple of kv_num_heads"),
])
def test_linear_attention_errors(attrs, inputs, match):
    q, k, v, _, _ = linear_inputs(1, 2, 2, 2, 4, 4)
    full = {"q_num_heads": 2, "kv_num_heads": 2, **attrs}
    with pytest.raises(ShapeInferenceError, match=f"n0.*{match}"):
        run_edgeinfer("LinearAttention", [q, k, v], full, n_outputs=2)


def test_linear_attention_required_and_runtime_errors():
    q, k, v, _, _ = linear_inputs(1, 2, 2, 2, 4, 4)
    with pytest.raises(GraphError, match="n0.*required attribute 'q_num_heads'"):
        run_edgeinfer("LinearAttention", [q, k, v], {"kv_num_heads": 2, "update_rule": "linear"}, n_outputs=2)
    attrs = {"q_num_heads": 2, "kv_num_heads": 2, "update_rule": "linear"}
    with pytest.raises(KernelError, match="n0.*past_state has shape"):
        run_edgeinfer("LinearAttention", [q, k, v, rand(1, 2, 4, 5)], attrs, n_outputs=2, shapes_known=False)


# ----------------------------------------------------------------- CausalConvWithState
def ref_causal_conv(x, w, bias=None, past=None, activation="none"):
    b, c, n = x.shape
    k = w.shape[2]
    head = np.zeros((b, c, k - 1)) if past is None else past
    padded = np.concatenate([head, x], axis=2).astype(np.float64)
    y = np.zeros((b, c, n))
    for bi in range(b):
        for ci in range(c):
            # a causal convolution is numpy's full convolution with the flipped kernel, cut
            y[bi, ci] = np.convolve(padded[bi, ci], w[ci, 0, ::-1], mode="valid")
    if bias is not None:
        y += bias[:, None]
    if activation in ("silu", "swish"):
        y = y / (1 + np.exp(-y))
    return y, padded[:, :, n:]


@pytest.mark.parametrize("length,k", [(8, 4), (1, 4), (2, 5), (6, 1), (3, 3)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_past", [False, True])
@pytest.mark.parametrize("activation", ["none", "silu"])
def test_causal_conv_with_state(length, k, with_bias, with_past, activation):
    x, w = rand(2, 3, length), rand(3, 1, k, seed=1)
    bias = rand(3, seed=2) if with_bias else None
    past = rand(2, 3, k - 1, seed=3) if with_past else None
    y, state = run_edgeinfer("CausalConvWithState", [x, w, bias, past], {"activation": activation}, n_outputs=2)
    want_y, want_state = ref_causal_conv(x, w, bias, past, activation)
    np.testing.assert_allclose(y, want_y, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(state, want_state, rtol=RTOL, atol=ATOL)
    assert state.shape == (2, 3, k - 1)


def test_causal_conv_matches_ort_depthwise_conv():
    x, w, past = rand(2, 4, 7), rand(4, 1, 3, seed=1), rand(2, 4, 2, seed=2)
    (want,) = run_ort("Conv", [np.concatenate([past, x], axis=2), w], {"group": 4})
    y, _ = run_edgeinfer("CausalConvWithState", [x, w, None, past], n_outputs=2)
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


def test_causal_conv_streaming_equals_one_shot():
    x, w = rand(1, 2, 9), rand(2, 1, 4, seed=1)
    full, _ = run_edgeinfer("CausalConvWithState", [x, w], n_outputs=2)
    state, parts = None, []
    for lo in (0, 2, 3, 7):
        hi = {0: 2, 2: 3, 3: 7, 7: 9}[lo]
        y, state = run_edgeinfer("CausalConvWithState", [x[:, :, lo:hi], w, None, state], n_outputs=2)
        parts.append(y)
    np.testing.assert_allclose(np.concatenate(parts, axis=2), full, rtol=RTOL, atol=ATOL)


def test_causal_conv_errors():
    x = rand(2, 3, 5)
    with pytest.raises(ShapeInferenceError, match="n0.*activation 'relu'"):
        run_edgeinfer("CausalConvWithState", [x, rand(3, 1, 2)], {"activation": "relu"}, n_outputs=2)
    with pytest.raises(ShapeInferenceError, match="n0.*weight has 4 channels"):
        run_edgeinfer("CausalConvWithState", [x, rand(4, 1, 2)], n_outputs=2)
    with pytest.raises(KernelError, match="n0.*past_state has shape"):
        run_edgeinfer("CausalConvWithState", [x, rand(3, 1, 3), None, rand(2, 3, 1)], n_outputs=2,
                      shapes_known=False)


# ------------------------------------------------------------------------ FlexAttention
PREVIEW = "ai.onnx.preview"


def ref_flex(q, k, v, scale=None, score_mod=None, prob_mod=None):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) * (1 / math.sqrt(q.shape[3]) if scale is None else scale)
    s = score_mod(s) if score_mod else s
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p = prob_mod(p) if prob_mod else p
    return p @ v


@pytest.mark.parametrize("shapes", [
    ((2, 4, 5, 8), (2, 4, 3, 8), (2, 4, 3, 6)),  # MHA, V head size differs
    ((1, 6, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4)),  # GQA
])
@pytest.mark.parametrize("attrs", [{}, {"scale": 0.2}, {"softmax_precision": 11}])
def test_flex_attention(shapes, attrs):
    q, k, v = (rand(*s, seed=i) for i, s in enumerate(shapes))
    (y,) = run_edgeinfer("FlexAttention", [q, k, v], attrs, domain=PREVIEW)
    np.testing.assert_allclose(y, ref_flex(q, k, v, attrs.get("scale")), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype,tol", [(np.float16, 2e-3), (np.float64, 1e-10)])
def test_flex_attention_dtypes(dtype, tol):
    q, k, v = (rand(1, 2, 3, 4, seed=i, dtype=dtype) for i in range(3))
    (y,) = run_edgeinfer("FlexAttention", [q, k, v], domain=PREVIEW)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.astype(np.float64), ref_flex(q, k, v), rtol=tol, atol=tol)


def _flex_model(attr_name, body_nodes, initializers, shapes):
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", "H", "L", "S"]) for n in ("s", "s_out")]
    body = helper.make_graph(body_nodes, "mod", [io[0]], [io[1]], initializers)
    node = helper.make_node("FlexAttention", ["Q", "K", "V"], ["Y"], domain=PREVIEW)
    node.attribute.append(helper.make_attribute(attr_name, body))
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip("QKV", shapes)]
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["B", "H", "L", "E"])
    graph = helper.make_graph([node], "flex", ins, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26), helper.make_opsetid(PREVIEW, 1)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def subgraph_runner(monkeypatch):
    """The control family's subgraph runner; a stand-in on the cpu backend until it lands."""
    from edgeinfer.kernels import control

    if not hasattr(control, "bind_subgraph"):
        from edgeinfer.backends import cpu

        def bind_subgraph(ctx, graph, input_types):
            def run(inputs, captured):
                exe = cpu.compile(graph, {v.name: x.shape for v, x in zip(graph.inputs, inputs)})
                outs = exe.run({v.name: x for v, x in zip(graph.inputs, inputs)})
                return [outs[o.name] for o in graph.outputs]
            return run

        monkeypatch.setattr(control, "bind_subgraph", bind_subgraph, raising=False)


@pytest.mark.usefixtures("subgraph_runner")
@pytest.mark.parametrize("attr_name", ["score_mod", "prob_mod"])
def test_flex_attention_modifier_subgraphs(attr_name):
    from onnx import TensorProto, helper

    from edgeinfer import Session

    q, k, v = rand(1, 2, 3, 4), rand(1, 2, 5, 4, seed=1), rand(1, 2, 5, 4, seed=2)
    model = _flex_model(attr_name, [helper.make_node("Mul", ["s", "c"], ["s_out"])],
                        [helper.make_tensor("c", TensorProto.FLOAT, [], [0.5])], [q.shape, k.shape, v.shape])
    y = Session(model).run({"Q": q, "K": k, "V": v})["Y"]
    half = lambda x: x * 0.5  # noqa: E731
    want = ref_flex(q, k, v, **{attr_name: half})
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


def test_flex_attention_errors():
    q = rand(1, 2, 3, 4)
    with pytest.raises(ShapeInferenceError, match="n0.*K must have rank 4"):
        run_edgeinfer("FlexAttention", [q, rand(1, 3, 4), q], domain=PREVIEW)
    with pytest.raises(ShapeInferenceError, match="n0.*not a multiple"):
        run_edgeinfer("FlexAttention", [rand(1, 3, 3, 4), q, q], domain=PREVIEW)
    with pytest.raises(ShapeInferenceError, match="n0.*'score_mod' must be a graph"):
        run_edgeinfer("FlexAttention", [q, q, q], {"score_mod": 3}, domain=PREVIEW)
    with pytest.raises(KernelError, match="n0.*incompatible"):
        run_edgeinfer("FlexAttention", [q, rand(1, 2, 3, 5), q], domain=PREVIEW, shapes_known=False)
