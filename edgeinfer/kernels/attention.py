"""The attention family: Attention, RotaryEmbedding, LinearAttention, CausalConvWithState and
the preview FlexAttention (domain ``ai.onnx.preview``).

Precision: the math runs in float32 (float64 for double inputs) whatever the storage type, and
results are rounded once to the output dtype. float16 and bfloat16 tensors are widened on entry.

Heads: multi-head inputs are handled in one batched matmul per product, never a loop over
heads. Grouped-query attention views the ``Hq`` query heads as ``(Hkv, G)`` so query head ``h``
reads key/value head ``h // G`` (ONNX's contiguous grouping) without repeating K and V.

Masking (Attention): ``attn_mask``, ``is_causal``, the sliding window and ``nonpad_kv_seqlen``
combine into one additive bias. A query row that the bias disallows entirely yields zeros, not
NaN, in ``Y`` and in the mode-3 ``qk_matmul_output``, as the spec requires.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .. import dtypes as _dt
from ..errors import KernelError
from ..graph import Dim, Graph, TensorType
from .registry import REQUIRED, OpContext, kernel, shape_rule

_FLOATS = frozenset({"float16", "bfloat16", "float32", "float64"})
# softmax_precision codes (ONNX TensorProto) -> IR dtype
_PRECISIONS = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


# ---------------------------------------------------------------------- shared helpers
def _work_dtype(ir_dtype: str | None) -> np.dtype:
    """Arithmetic precision for values stored as ``ir_dtype``."""
    return np.dtype(np.float64 if ir_dtype == "float64" else np.float32)


def _widen(x: np.ndarray, work: np.dtype) -> np.ndarray:
    """``x`` as ``work`` floats (no copy when it already is)."""
    return x.astype(work, copy=False)


def _narrow(y: np.ndarray, ir_dtype: str) -> np.ndarray:
    """``y`` rounded to the storage type of ``ir_dtype``."""
    return y.astype(_dt.to_numpy(ir_dtype), copy=False)


def _round_to(x: np.ndarray, ir_dtype: str) -> np.ndarray:
    """``x`` rounded to ``ir_dtype`` precision, held in a numpy float type (bfloat16 values
    come back as float32: numpy arithmetic on ml_dtypes arrays is slow)."""
    r = x.astype(_dt.to_numpy(ir_dtype), copy=False)
    return r if r.dtype in (np.float16, np.float32, np.float64) else r.astype(np.float32)


def _ir(ctx: OpContext, i: int) -> str | None:
    t = ctx.inputs[i] if i < len(ctx.inputs) else None
    return t.dtype if t is not None else None


def _check_float(ctx: OpContext, indices, allowed=_FLOATS) -> None:
    for i in indices:
        if ctx.has_input(i) and ctx.inputs[i] is not None and ctx.inputs[i].dtype not in allowed:
            raise ctx.error(f"input {i} '{ctx.node.inputs[i]}' has dtype {ctx.inputs[i].dtype}; "
                            f"expected one of {', '.join(sorted(allowed))}")


def _shape(ctx: OpContext, i: int) -> tuple | None:
    t = ctx.inputs[i] if i < len(ctx.inputs) and ctx.has_input(i) else None
    return None if t is None or t.shape is None else tuple(t.shape)


def _known(*dims) -> bool:
    return all(isinstance(d, int) for d in dims)


def _mul(a: Dim, b: Dim) -> Dim:
    return a * b if _known(a, b) else None


def _add(a: Dim, b: Dim) -> Dim:
    return a + b if _known(a, b) else None


def _div(ctx: OpContext, total: Dim, parts: int, what: str) -> Dim:
    """``total / parts``, checking divisibility when ``total`` is known."""
    if not isinstance(total, int):
        return None
    if total % parts:
        raise ctx.error(f"{what} {total} is not divisible by {parts}")
    return total // parts


def _rank(ctx: OpContext, i: int, allowed: tuple[int, ...], name: str) -> int | None:
    s = _shape(ctx, i)
    if s is None:
        return None
    if len(s) not in allowed:
        ranks = " or ".join(str(r) for r in allowed)
        raise ctx.error(f"{name} must have rank {ranks}, found shape {list(s)}")
    return len(s)


def _outputs(ctx: OpContext, types: list[TensorType]) -> list[TensorType]:
    """One type per node output (the op's optional trailing outputs may be absent)."""
    n = len(ctx.node.outputs)
    if n > len(types):
        raise ctx.error(f"has {n} outputs; {ctx.node.op_type} has at most {len(types)}")
    return types[:n]


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; an all ``-inf`` row gives zeros rather than NaN."""
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0, m)
    e = np.exp(x - m)
    s = np.sum(e, axis=-1, keepdims=True)
    e /= np.where(s == 0, 1, s)
    return e


def _grouped_matmul(a: np.ndarray, b: np.ndarray, q_heads: int) -> np.ndarray:
    """``a @ b`` where ``a`` has ``q_heads`` heads on axis 1 and ``b`` has ``Hkv`` dividing it.

    Query heads ``g*G .. g*G+G-1`` share ``b``'s head ``g``; viewing ``a`` as
    ``(B, Hkv, G*rows, cols)`` makes that one batched product without copying ``b``.
    """
    bsz, _, rows, cols = a.shape
    kv_heads = b.shape[1]
    group = q_heads // kv_heads
    y = np.matmul(a.reshape(bsz, kv_heads, group * rows, cols), b)
    return y.reshape(bsz, q_heads, rows, y.shape[-1])


def _precision_attr(ctx: OpContext, softmax_precision) -> str | None:
    if softmax_precision is None:
        return None
    if int(softmax_precision) not in _PRECISIONS:
        raise ctx.error(f"softmax_precision {softmax_precision} is not supported; expected one of "
                        f"{', '.join(f'{k} ({v})' for k, v in _PRECISIONS.items())}")
    return _PRECISIONS[int(softmax_precision)]


# ---------------------------------------------------------------------------- Attention
ATTENTION_ATTRS = {
    "is_causal": 0, "kv_num_heads": None, "q_num_heads": None, "qk_matmul_output_mode": 0,
    "scale": None, "softcap": 0.0, "softmax_precision": None,
    "left_window_size": -1, "right_window_size": -1,
}


def _attention_dims(ctx: OpContext, q_num_heads, kv_num_heads) -> dict:
    """Batch, heads, lengths and head sizes of an Attention node (``None`` where unknown)."""
    rank = _rank(ctx, 0, (3, 4), "Q")
    for i, name in ((1, "K"), (2, "V")):
        r = _rank(ctx, i, (3, 4), name)
        if rank is not None and r is not None and r != rank:
            raise ctx.error(f"Q, K and V must have the same rank, found Q rank {rank} and {name} rank {r}")
        rank = rank if rank is not None else r
    q, k, v = _shape(ctx, 0), _shape(ctx, 1), _shape(ctx, 2)
    if rank == 3:
        if not q_num_heads or not kv_num_heads or q_num_heads < 0 or kv_num_heads < 0:
            raise ctx.error("3-D Q/K/V need positive q_num_heads and kv_num_heads attributes, found "
                            f"q_num_heads={q_num_heads}, kv_num_heads={kv_num_heads}")
        hq, hkv = int(q_num_heads), int(kv_num_heads)
        batch = q[0] if q else None
        sq = q[1] if q else None
        skv = k[1] if k else (v[1] if v else None)
        dk = _div(ctx, q[2], hq, "Q hidden size") if q else None
        dk_k = _div(ctx, k[2], hkv, "K hidden size") if k else None
        dv = _div(ctx, v[2], hkv, "V hidden size") if v else None
    else:
        batch = q[0] if q else None
        hq = q[1] if q else None
        sq = q[2] if q else None
        dk = q[3] if q else None
        hkv = k[1] if k else (v[1] if v else None)
        skv = k[2] if k else (v[2] if v else None)
        dk_k = k[3] if k else None
        dv = v[3] if v else None
        if v and k and _known(k[1], v[1]) and k[1] != v[1]:
            raise ctx.error(f"K and V must have the same number of heads, found {k[1]} and {v[1]}")
    if _known(dk, dk_k) and dk != dk_k:
        raise ctx.error(f"Q and K head sizes differ: {dk} and {dk_k}")
    if _known(hq, hkv) and (hkv <= 0 or hq % hkv):
        raise ctx.error(f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})")
    past = _shape(ctx, 4)
    if ctx.has_input(4) != ctx.has_input(5):
        raise ctx.error("past_key and past_value must be given together")
    plen = (past[2] if past and len(past) == 4 else None) if ctx.has_input(4) else 0
    if past is not None and len(past) != 4:
        raise ctx.error(f"past_key must be 4-D, found shape {list(past)}")
    return dict(rank=rank, batch=batch, hq=hq, hkv=hkv, sq=sq, skv=skv, dk=dk, dv=dv,
                total=_add(plen, skv))


@shape_rule("Attention")
def attention_shape(ctx: OpContext, is_causal, kv_num_heads, q_num_heads, qk_matmul_output_mode, scale,
                    softcap, softmax_precision, left_window_size, right_window_size):
    _check_float(ctx, (0, 1, 2, 4, 5))
    if ctx.has_input(6) and ctx.inputs[6] is not None and ctx.inputs[6].dtype != "int64":
        raise ctx.error(f"nonpad_kv_seqlen must be int64, found {ctx.inputs[6].dtype}")
    if qk_matmul_output_mode not in (0, 1, 2, 3):
        raise ctx.error(f"qk_matmul_output_mode must be 0, 1, 2 or 3, found {qk_matmul_output_mode}")
    _precision_attr(ctx, softmax_precision)
    d = _attention_dims(ctx, q_num_heads, kv_num_heads)
    t1, t2 = ctx.inputs[0].dtype, ctx.inputs[2].dtype
    if d["rank"] == 3:
        y = (d["batch"], d["sq"], _mul(d["hq"], d["dv"]))
    elif d["rank"] == 4:
        y = (d["batch"], d["hq"], d["sq"], d["dv"])
    else:
        y = None
    return _outputs(ctx, [
        TensorType(t1, y),
        TensorType(t1, (d["batch"], d["hkv"], d["total"], d["dk"])),
        TensorType(t2, (d["batch"], d["hkv"], d["total"], d["dv"])),
        TensorType(t1, (d["batch"], d["hq"], d["sq"], d["total"])),
    ])


def _split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, S, H*D) -> (B, H, S, D)."""
    b, s, hd = x.shape
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)


def _structural_mask(sq: int, total: int, offset, is_causal: bool, left: int, right: int, nonpad):
    """Keys each query may see from causality, the window and padding: bool, broadcastable to
    (B, 1, Sq, T); ``None`` when nothing is restricted. ``offset`` is a scalar or a (B,) array."""
    if not is_causal and left < 0 and right < 0 and nonpad is None:
        return None
    off = np.asarray(offset, np.int64).reshape(-1, 1, 1, 1)
    pos = np.arange(sq, dtype=np.int64)[:, None] + off  # absolute query position
    key = np.arange(total, dtype=np.int64)
    allowed = np.ones((1, 1, sq, total), dtype=bool)
    if is_causal:
        allowed = allowed & (key <= pos)
    if left >= 0:
        allowed = allowed & (key >= pos - left)
    if right >= 0:
        allowed = allowed & (key <= pos + right)
    if nonpad is not None:
        allowed = allowed & (key < np.asarray(nonpad, np.int64).reshape(-1, 1, 1, 1))
    return allowed


def _attention_bias(label: str, mask, nonpad, shape: tuple, plen: int | None, causal: bool, left: int,
                    right: int, work: np.dtype):
    """The additive bias of ``attn_mask``, causality, the window and padding, broadcastable to
    the scores' ``shape`` (B, Hq, Sq, T); ``None`` when nothing is masked."""
    bsz, _, sq, total = shape
    parts = []
    if mask is not None:
        if mask.ndim > 4:
            raise KernelError(f"{label}: attn_mask has rank {mask.ndim}; at most 4 is allowed")
        if mask.dtype == np.bool_:
            mb = np.where(mask, work.type(0), work.type(-np.inf))
        else:
            mb = _widen(mask, work)
        width = mb.shape[-1] if mb.ndim else total
        if width < total:  # a short mask is padded with -inf up to the total sequence length
            pad = np.full(mb.shape[:-1] + (total - width,), -np.inf, dtype=work)
            mb = np.concatenate([mb, pad], axis=-1)
        elif width != total and width != 1:
            raise KernelError(f"{label}: attn_mask's last dim {width} exceeds the total sequence length {total}")
        parts.append(mb)
    if nonpad is not None:
        nonpad = np.asarray(nonpad).reshape(-1)
        if nonpad.shape[0] not in (1, bsz):
            raise KernelError(f"{label}: nonpad_kv_seqlen has {nonpad.shape[0]} entries for batch {bsz}")
    # keys before the query block: the internal cache, else the external cache's valid prefix
    offset = plen if plen is not None else (nonpad - sq if nonpad is not None else 0)
    allowed = _structural_mask(sq, total, offset, causal, left, right, nonpad)
    if allowed is not None:
        parts.append(np.where(allowed, work.type(0), work.type(-np.inf)))
    if not parts:
        return None
    bias = parts[0] if len(parts) == 1 else parts[0] + parts[1]
    try:
        fits = np.broadcast_shapes(bias.shape, shape) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise KernelError(f"{label}: attn_mask of shape {list(mask.shape)} does not broadcast to the "
                          f"scores' shape {list(shape)}")
    return bias


def _to_heads(label: str, Q, K, V, q_num_heads, kv_num_heads):
    """Q, K, V as (B, H, S, D) arrays (views where possible), with the head counts."""
    rank = Q.ndim
    if rank not in (3, 4) or K.ndim != rank or V.ndim != rank:
        raise KernelError(f"{label}: Q, K, V must all be 3-D or all 4-D, found shapes "
                          f"{list(Q.shape)}, {list(K.shape)}, {list(V.shape)}")
    if rank == 3:
        hq, hkv = int(q_num_heads or 0), int(kv_num_heads or 0)
        for x, h, name in ((Q, hq, "Q"), (K, hkv, "K"), (V, hkv, "V")):
            if h <= 0 or x.shape[2] % h:
                raise KernelError(f"{label}: {name} hidden size {x.shape[2]} is not divisible by {h} heads")
        q4, k4, v4 = _split_heads(Q, hq), _split_heads(K, hkv), _split_heads(V, hkv)
    else:
        q4, k4, v4 = Q, K, V
        hq, hkv = Q.shape[1], K.shape[1]
    if (k4.shape[3] != q4.shape[3] or k4.shape[:3] != v4.shape[:3] or k4.shape[0] != q4.shape[0]
            or hkv <= 0 or hq % hkv):
        raise KernelError(f"{label}: incompatible Q {list(q4.shape)}, K {list(k4.shape)} and "
                          f"V {list(v4.shape)} (as batch, heads, sequence, head size)")
    return q4, k4, v4, hq


def _softmax_in(scores: np.ndarray, precision: str | None, work: np.dtype) -> np.ndarray:
    """Softmax computed at ``softmax_precision`` (``None``: the working precision)."""
    if precision is None:
        return _softmax(scores)
    if precision == "bfloat16":
        return _round_to(_softmax(_round_to(scores, precision)), precision).astype(work, copy=False)
    return _softmax(scores.astype(_dt.to_numpy(precision))).astype(work, copy=False)


@kernel("Attention", attrs=ATTENTION_ATTRS)
def attention(ctx: OpContext, is_causal, kv_num_heads, q_num_heads, qk_matmul_output_mode, scale, softcap,
              softmax_precision, left_window_size, right_window_size):
    label = ctx.node.label
    t1, t2 = _ir(ctx, 0), _ir(ctx, 2)
    work = _work_dtype(t1)
    precision = _precision_attr(ctx, softmax_precision)
    wanted = [bool(name) for name in ctx.node.outputs] + [False] * 3
    mode = int(qk_matmul_output_mode)
    cap = float(softcap)
    masking = dict(causal=bool(is_causal), left=int(left_window_size), right=int(right_window_size), work=work)

    def attention_fn(Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
        q4, k4, v4, hq = _to_heads(label, Q, K, V, q_num_heads, kv_num_heads)
        plen = None
        if past_key is not None:
            plen = past_key.shape[2]
            try:
                k4 = np.concatenate([past_key, k4.astype(past_key.dtype, copy=False)], axis=2)
                v4 = np.concatenate([past_value, v4.astype(past_value.dtype, copy=False)], axis=2)
            except ValueError as e:
                raise KernelError(f"{label}: past_key {list(past_key.shape)} / past_value "
                                  f"{list(past_value.shape)} do not fit K {list(k4.shape)} / V "
                                  f"{list(v4.shape)}") from e
        bsz, _, sq, dk = q4.shape
        s = float(scale) if scale is not None else 1.0 / math.sqrt(dk)
        root = work.type(math.sqrt(s))  # Q and K are scaled by sqrt(scale) against overflow, as ONNX says
        scores = _grouped_matmul(_widen(q4, work) * root, (_widen(k4, work) * root).transpose(0, 1, 3, 2), hq)
        qk_out = scores
        if cap > 0:
            scores = np.tanh(scores / work.type(cap)) * work.type(cap)
            qk_out = scores if mode == 1 else qk_out
        bias = _attention_bias(label, attn_mask, nonpad_kv_seqlen, scores.shape, plen, **masking)
        if bias is not None:
            scores = scores + bias
        qk_out = scores if mode == 2 else qk_out
        probs = _softmax_in(scores, precision, work)
        if bias is not None:  # rows the bias disallows entirely attend nothing: zeros, as ONNX says
            empty = np.isneginf(np.max(bias, axis=-1, keepdims=True))
            if empty.any():
                probs = np.where(empty, work.type(0), probs)
        qk_out = probs if mode == 3 else qk_out
        y = _grouped_matmul(probs, _widen(v4, work), hq)
        if Q.ndim == 3:
            y = y.transpose(0, 2, 1, 3).reshape(bsz, sq, -1)
        if len(ctx.node.outputs) == 1:
            return _narrow(y, t1)
        fresh = past_key is None  # K and V themselves: outputs must not alias inputs
        results = (
            _narrow(y, t1),
            k4.astype(_dt.to_numpy(t1), copy=fresh) if wanted[1] else None,
            v4.astype(_dt.to_numpy(t2), copy=fresh) if wanted[2] else None,
            _narrow(qk_out, t1) if wanted[3] else None,
        )
        return results[:len(ctx.node.outputs)]

    return attention_fn


# ---------------------------------------------------------------------- RotaryEmbedding
ROTARY_ATTRS = {"interleaved": 0, "num_heads": None, "rotary_embedding_dim": 0}


@shape_rule("RotaryEmbedding")
def rotary_embedding_shape(ctx: OpContext, interleaved, num_heads, rotary_embedding_dim):
    _check_float(ctx, (0, 1, 2))
    if ctx.has_input(3) and ctx.inputs[3] is not None and ctx.inputs[3].dtype != "int64":
        raise ctx.error(f"position_ids must be int64, found {ctx.inputs[3].dtype}")
    rank = _rank(ctx, 0, (3, 4), "X")
    x = _shape(ctx, 0)
    if rank == 3 and not num_heads:
        raise ctx.error("a 3-D input needs the num_heads attribute")
    head = (_div(ctx, x[2], int(num_heads), "hidden size") if rank == 3 else x[3]) if x else None
    rot = int(rotary_embedding_dim) or head
    if isinstance(rot, int) and (rot % 2 or (isinstance(head, int) and rot > head)):
        raise ctx.error(f"rotary_embedding_dim {rot} must be even and at most the head size {head}")
    want_rank = 2 if ctx.has_input(3) else 3
    for i, name in ((1, "cos_cache"), (2, "sin_cache")):
        s = _shape(ctx, i)
        if s is not None and len(s) != want_rank:
            raise ctx.error(f"{name} must be {want_rank}-D {'with' if want_rank == 2 else 'without'} "
                            f"position_ids, found shape {list(s)}")
        if s is not None and _known(s[-1], rot) and s[-1] != rot // 2:
            raise ctx.error(f"{name}'s last dim {s[-1]} must be rotary_embedding_dim/2 = {rot // 2}")
    return [ctx.inputs[0]]


@kernel("RotaryEmbedding", attrs=ROTARY_ATTRS)
def rotary_embedding(ctx: OpContext, interleaved, num_heads, rotary_embedding_dim):
    label = ctx.node.label
    tx = _ir(ctx, 0)
    work = _work_dtype(tx)

    def rotary_fn(X, cos_cache, sin_cache, position_ids=None):
        if X.ndim == 4:
            xv = _widen(X, work)  # (B, H, S, D)
        elif X.ndim == 3 and num_heads and X.shape[2] % int(num_heads) == 0:
            b, s, hd = X.shape
            xv = _widen(X, work).reshape(b, s, int(num_heads), hd // int(num_heads))  # (B, S, H, D)
        else:
            raise KernelError(f"{label}: X of shape {list(X.shape)} does not split into num_heads={num_heads}")
        head = xv.shape[-1]
        rot = int(rotary_embedding_dim) or head
        half = rot // 2
        cos, sin = _widen(cos_cache, work), _widen(sin_cache, work)
        if position_ids is not None:
            if position_ids.size and (position_ids.min() < 0 or position_ids.max() >= cos.shape[0]):
                raise KernelError(f"{label}: position_ids must lie in [0, {cos.shape[0]}), found "
                                  f"[{position_ids.min()}, {position_ids.max()}]")
            cos, sin = cos[position_ids], sin[position_ids]
        if cos.shape[-1] != half or sin.shape[-1] != half or rot > head or rot % 2:
            raise KernelError(f"{label}: caches of last dim {cos.shape[-1]}/{sin.shape[-1]} do not fit "
                              f"rotary_embedding_dim {rot} (head size {head})")
        # caches are (B, S, rot/2): put a head axis where X has it
        cos = cos[:, None] if X.ndim == 4 else cos[:, :, None]
        sin = sin[:, None] if X.ndim == 4 else sin[:, :, None]
        if interleaved:
            x1, x2 = xv[..., 0:rot:2], xv[..., 1:rot:2]
        else:
            x1, x2 = xv[..., :half], xv[..., half:rot]
        try:
            real = cos * x1 - sin * x2
            imag = sin * x1 + cos * x2
        except ValueError as e:
            raise KernelError(f"{label}: caches of shape {list(cos_cache.shape)} do not match X "
                              f"{list(X.shape)}") from e
        y = xv.copy()
        if interleaved:
            y[..., 0:rot:2], y[..., 1:rot:2] = real, imag
        else:
            y[..., :half], y[..., half:rot] = real, imag
        return _narrow(y.reshape(X.shape), tx)

    return rotary_fn


# --------------------------------------------------------------------- LinearAttention
LINEAR_ATTENTION_ATTRS = {"chunk_size": 64, "kv_num_heads": REQUIRED, "q_num_heads": REQUIRED,
                          "scale": 0.0, "update_rule": "gated_delta"}
_UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def _linear_attention_dims(ctx: OpContext, q_num_heads, kv_num_heads, update_rule) -> dict:
    if update_rule not in _UPDATE_RULES:
        raise ctx.error(f"update_rule '{update_rule}' is not one of {', '.join(_UPDATE_RULES)}")
    hq, hkv = int(q_num_heads), int(kv_num_heads)
    if hq <= 0 or hkv <= 0 or hq % hkv:
        raise ctx.error(f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})")
    if "gated" in update_rule and not ctx.has_input(4):
        raise ctx.error(f"update_rule '{update_rule}' needs the decay input")
    if "delta" in update_rule and not ctx.has_input(5):
        raise ctx.error(f"update_rule '{update_rule}' needs the beta input")
    for i, name in ((0, "query"), (1, "key"), (2, "value"), (4, "decay"), (5, "beta")):
        if ctx.has_input(i):
            _rank(ctx, i, (3,), name)
    _rank(ctx, 3, (4,), "past_state")
    q, k, v = _shape(ctx, 0), _shape(ctx, 1), _shape(ctx, 2)
    dk = _div(ctx, q[2], hq, "query hidden size") if q else None
    dk_k = _div(ctx, k[2], hkv, "key hidden size") if k else None
    if _known(dk, dk_k) and dk != dk_k:
        raise ctx.error(f"query and key head sizes differ: {dk} and {dk_k}")
    dv = _div(ctx, v[2], hkv, "value hidden size") if v else None
    dk = dk if dk is not None else dk_k
    return dict(batch=q[0] if q else None, t=q[1] if q else None, hq=hq, hkv=hkv, dk=dk, dv=dv)


@shape_rule("LinearAttention")
def linear_attention_shape(ctx: OpContext, chunk_size, kv_num_heads, q_num_heads, scale, update_rule):
    _check_float(ctx, (0, 1, 2, 3, 4, 5), frozenset({"float16", "bfloat16", "float32"}))
    d = _linear_attention_dims(ctx, q_num_heads, kv_num_heads, update_rule)
    t = ctx.inputs[0].dtype
    ts = ctx.inputs[3].dtype if ctx.has_input(3) and ctx.inputs[3] is not None else t
    return _outputs(ctx, [TensorType(t, (d["batch"], d["t"], _mul(d["hq"], d["dv"]))),
                          TensorType(ts, (d["batch"], d["hkv"], d["dk"], d["dv"]))])


@kernel("LinearAttention", attrs=LINEAR_ATTENTION_ATTRS)
def linear_attention(ctx: OpContext, chunk_size, kv_num_heads, q_num_heads, scale, update_rule):
    # chunk_size only tunes chunk-parallel GPU kernels; the recurrence below is exact.
    label = ctx.node.label
    d = _linear_attention_dims(ctx, q_num_heads, kv_num_heads, update_rule)
    hq, hkv = d["hq"], d["hkv"]
    group = hq // hkv
    t_out = _ir(ctx, 0)
    t_state = _ir(ctx, 3) or t_out
    work = np.dtype(np.float32)
    gated, delta = "gated" in update_rule, "delta" in update_rule

    def linear_attention_fn(query, key, value, past_state=None, decay=None, beta=None):
        bsz, steps, qh = query.shape
        if qh % hq or key.shape[2] % hkv or value.shape[2] % hkv or key.shape[:2] != (bsz, steps) \
                or value.shape[:2] != (bsz, steps) or key.shape[2] // hkv != qh // hq:
            raise KernelError(f"{label}: query {list(query.shape)}, key {list(key.shape)} and value "
                              f"{list(value.shape)} do not fit q_num_heads={hq}, kv_num_heads={hkv}")
        dk, dv = qh // hq, value.shape[2] // hkv
        s = float(scale) if scale else 1.0 / math.sqrt(dk)
        q = _widen(query, work).reshape(bsz, steps, hkv, group, dk)
        k = _widen(key, work).reshape(bsz, steps, hkv, dk)
        v = _widen(value, work).reshape(bsz, steps, hkv, dv)
        if past_state is None:
            state = np.zeros((bsz, hkv, dk, dv), dtype=work)
        elif past_state.shape != (bsz, hkv, dk, dv):
            raise KernelError(f"{label}: past_state has shape {list(past_state.shape)}, expected "
                              f"{[bsz, hkv, dk, dv]}")
        else:
            state = _widen(past_state, work).copy()
        gate = rate = None
        if gated:
            g = _widen(decay, work)
            if g.shape[:2] != (bsz, steps) or g.shape[2] not in (hkv, hkv * dk):
                raise KernelError(f"{label}: decay has shape {list(g.shape)}, expected "
                                  f"{[bsz, steps, hkv * dk]} or {[bsz, steps, hkv]}")
            # per key dim (B, T, Hkv, dk, 1) or per head (B, T, Hkv, 1, 1): scales rows of the state
            gate = np.exp(g).reshape(bsz, steps, hkv, -1, 1)
        if delta:
            r = _widen(beta, work)
            if r.shape[:2] != (bsz, steps) or r.shape[2] not in (1, hkv):
                raise KernelError(f"{label}: beta has shape {list(r.shape)}, expected "
                                  f"{[bsz, steps, hkv]} or {[bsz, steps, 1]}")
            rate = np.broadcast_to(r, (bsz, steps, hkv))[..., None]  # (B, T, Hkv, 1)
        out = np.empty((bsz, steps, hkv, group, dv), dtype=work)
        for t in range(steps):  # the recurrence is sequential in time
            kt, vt = k[:, t], v[:, t]
            if gated:
                state *= gate[:, t]
            if delta:
                recalled = np.matmul(kt[:, :, None, :], state)[:, :, 0]  # S^T k: (B, Hkv, dv)
                vt = rate[:, t] * (vt - recalled)
            state += kt[..., :, None] * vt[..., None, :]
            np.matmul(q[:, t], state, out=out[:, t])  # (B, Hkv, G, dk) @ (B, Hkv, dk, dv)
        out *= work.type(s)
        return _narrow(out.reshape(bsz, steps, hq * dv), t_out), _narrow(state, t_state)

    return linear_attention_fn


# ----------------------------------------------------------------- CausalConvWithState
_CONV_ACTIVATIONS = ("none", "silu", "swish")


@shape_rule("CausalConvWithState")
def causal_conv_with_state_shape(ctx: OpContext, activation):
    _check_float(ctx, (0, 1, 2, 3), frozenset({"float16", "bfloat16", "float32"}))
    if activation not in _CONV_ACTIVATIONS:
        raise ctx.error(f"activation '{activation}' is not one of {', '.join(_CONV_ACTIVATIONS)}")
    _rank(ctx, 0, (3,), "input")
    _rank(ctx, 1, (3,), "weight")
    _rank(ctx, 2, (1,), "bias")
    _rank(ctx, 3, (3,), "past_state")
    x, w = _shape(ctx, 0), _shape(ctx, 1)
    if x and w and _known(x[1], w[0]) and x[1] != w[0]:
        raise ctx.error(f"weight has {w[0]} channels, input has {x[1]}")
    if w and isinstance(w[1], int) and w[1] != 1:
        raise ctx.error(f"weight must have shape (channels, 1, k), found {list(w)}")
    k = w[2] if w else None
    state = (x[0] if x else None, x[1] if x else (w[0] if w else None), k - 1 if isinstance(k, int) else None)
    return _outputs(ctx, [ctx.inputs[0], TensorType(ctx.inputs[0].dtype, state)])


@kernel("CausalConvWithState", attrs={"activation": "none"})
def causal_conv_with_state(ctx: OpContext, activation):
    label = ctx.node.label
    t = _ir(ctx, 0)
    work = np.dtype(np.float32)
    silu = activation in ("silu", "swish")

    def causal_conv_fn(x, weight, bias=None, past_state=None):
        bsz, ch, length = x.shape
        if weight.shape[0] != ch or weight.shape[1] != 1 or weight.shape[2] < 1:
            raise KernelError(f"{label}: weight of shape {list(weight.shape)} does not fit input {list(x.shape)}")
        k = weight.shape[2]
        xw = _widen(x, work)
        if past_state is None:
            head = np.zeros((bsz, ch, k - 1), dtype=work)
        elif past_state.shape != (bsz, ch, k - 1):
            raise KernelError(f"{label}: past_state has shape {list(past_state.shape)}, expected "
                              f"{[bsz, ch, k - 1]}")
        else:
            head = _widen(past_state, work)
        padded = np.concatenate([head, xw], axis=2)  # (B, C, k-1+L)
        w = _widen(weight, work)[:, 0, :]  # (C, k)
        y = np.zeros((bsz, ch, length), dtype=work)
        for j in range(k):  # one whole-tensor multiply-add per tap
            y += w[:, j, None] * padded[:, :, j:j + length]
        if bias is not None:
            y += _widen(bias, work)[:, None]
        if silu:
            y *= 1.0 / (1.0 + np.exp(-y))
        return _narrow(y, t), _narrow(padded[:, :, padded.shape[2] - (k - 1):], t)

    return causal_conv_fn


# ------------------------------------------------------------ FlexAttention (preview)
PREVIEW = "ai.onnx.preview"
FLEX_ATTRS = {"scale": None, "score_mod": None, "prob_mod": None, "softmax_precision": None}


def _check_modifier(ctx: OpContext, name: str, graph) -> None:
    if graph is None:
        return
    if not isinstance(graph, Graph):
        raise ctx.error(f"attribute '{name}' must be a graph, found {type(graph).__name__}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ctx.error(f"attribute '{name}' must be a graph with 1 input and 1 output, found "
                        f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs")


@shape_rule("FlexAttention", domain=PREVIEW)
def flex_attention_shape(ctx: OpContext, scale, score_mod, prob_mod, softmax_precision):
    _check_float(ctx, (0, 1, 2))
    _precision_attr(ctx, softmax_precision)
    _check_modifier(ctx, "score_mod", score_mod)
    _check_modifier(ctx, "prob_mod", prob_mod)
    for i, name in ((0, "Q"), (1, "K"), (2, "V")):
        _rank(ctx, i, (4,), name)
    q, k, v = _shape(ctx, 0), _shape(ctx, 1), _shape(ctx, 2)
    if q and k and _known(q[3], k[3]) and q[3] != k[3]:
        raise ctx.error(f"Q and K head sizes differ: {q[3]} and {k[3]}")
    if q and k and _known(q[1], k[1]) and (k[1] <= 0 or q[1] % k[1]):
        raise ctx.error(f"Q's {q[1]} heads are not a multiple of K's {k[1]}")
    y = (q[0] if q else None, q[1] if q else None, q[2] if q else None, v[3] if v else None)
    return [TensorType(ctx.inputs[0].dtype, y)]


def _bind_modifier(ctx: OpContext, name: str, graph: Graph | None, score_type: TensorType) -> Callable | None:
    """``fn(tensor, captured) -> tensor`` running a score_mod / prob_mod subgraph, or ``None``.

    Subgraph execution belongs to the control-flow family (If/Loop/Scan); this only adapts it:
    ``bind_subgraph(ctx, graph, input_types)`` compiles ``graph`` once and returns
    ``run(inputs, captured) -> outputs``, ``captured`` being the values of ``ctx.captures``.
    """
    if graph is None:
        return None
    try:
        from .control import bind_subgraph  # noqa: PLC0415 - imported late: control imports kernels
    except ImportError:
        raise ctx.error(f"attribute '{name}': running subgraphs is not available in this build") from None
    run = bind_subgraph(ctx, graph, [score_type])
    label = ctx.node.label

    def modifier(x: np.ndarray, captured: tuple) -> np.ndarray:
        outs = run([x], list(captured))
        y = np.asarray(outs[0])
        if y.shape != x.shape:
            raise KernelError(f"{label}: {name} returned shape {list(y.shape)}, expected {list(x.shape)}")
        return y.astype(x.dtype, copy=False)

    return modifier


@kernel("FlexAttention", attrs=FLEX_ATTRS, domain=PREVIEW)
def flex_attention(ctx: OpContext, scale, score_mod, prob_mod, softmax_precision):
    label = ctx.node.label
    t1 = _ir(ctx, 0)
    # scores and probabilities live in the softmax precision: float32, or float64 for double
    precision = _precision_attr(ctx, softmax_precision) or ("float64" if t1 == "float64" else "float32")
    work = _work_dtype(precision)
    hold = np.dtype(np.float32) if precision == "bfloat16" else _dt.to_numpy(precision)
    q, k = _shape(ctx, 0), _shape(ctx, 1)
    score_type = TensorType(precision, (q[0], q[1], q[2], k[2]) if q and k else None)
    score_fn = _bind_modifier(ctx, "score_mod", score_mod, score_type)
    prob_fn = _bind_modifier(ctx, "prob_mod", prob_mod, score_type)

    def flex_attention_fn(Q, K, V, *captured):
        if Q.ndim != 4 or K.ndim != 4 or V.ndim != 4:
            raise KernelError(f"{label}: Q, K, V must be 4-D, found {list(Q.shape)}, {list(K.shape)}, {list(V.shape)}")
        hq, hkv = Q.shape[1], K.shape[1]
        if (K.shape[3] != Q.shape[3] or K.shape[:3] != V.shape[:3] or K.shape[0] != Q.shape[0]
                or hkv <= 0 or hq % hkv):
            raise KernelError(f"{label}: incompatible Q {list(Q.shape)}, K {list(K.shape)} and V {list(V.shape)}")
        s = float(scale) if scale is not None else 1.0 / math.sqrt(Q.shape[3])
        scores = _grouped_matmul(_widen(Q, work), _widen(K, work).transpose(0, 1, 3, 2), hq) * work.type(s)
        scores = _round_to(scores, precision).astype(hold, copy=False)
        if score_fn is not None:
            scores = score_fn(scores, captured)
        # plain Softmax, as the spec writes it: a row of -inf stays NaN
        x = scores.astype(work, copy=False)
        e = np.exp(x - np.max(x, axis=-1, keepdims=True))
        probs = _round_to(e / np.sum(e, axis=-1, keepdims=True), precision).astype(hold, copy=False)
        if prob_fn is not None:
            probs = prob_fn(probs, captured)
        y = _grouped_matmul(probs.astype(work, copy=False), _widen(V, work), hq)
        return _narrow(y, t1)

    return flex_attention_fn
