"""Recurrent layers: RNN, GRU and LSTM (ONNX opset 22).

The three ops share one frame, written once here:

* **Layout.** ``layout=1`` (batch-major) tensors are transposed to the time-major form on the
  way in and back on the way out; everything in between is ``[time, direction, batch, ...]``.
* **Input projection.** ``X @ W^T`` (plus the biases that do not depend on the state) is one
  GEMM over every time step and direction before the loop; the loop only adds ``H @ R^T`` and
  the gate arithmetic, with both directions of a bidirectional layer stacked so each step is
  one batched matmul.
* **Directions and sequence_lens.** A reverse direction reads each batch entry from its own
  last valid step backwards. That is a per-entry permutation of the time axis (``L-1-s`` for
  ``s < L``, identity past ``L``) which is its own inverse, so the projected inputs are
  gathered through it once and the outputs scattered back through it once; inside the loop
  every direction runs forwards in lockstep. Past an entry's length the state is frozen (so
  ``Y_h``/``Y_c`` hold the last valid step) and ``Y`` is zero; an entry of length 0 has zero
  ``Y_h``/``Y_c`` (the spec is silent; ONNX Runtime's choice).
* **Activations** are the spec's list (Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu,
  ScaledTanh, HardSigmoid, Elu, Softsign, Softplus; names case-insensitive). As in ONNX
  Runtime, ``activation_alpha`` and ``activation_beta`` are consumed in list order by the
  functions that take the parameter; a function left without one gets the default of the
  same-named ONNX op (Affine 1/0, ScaledTanh 1/1, ThresholdedRelu 1, LeakyRelu 0.01,
  HardSigmoid 0.2/0.5, Elu 1), where ONNX Runtime uses 0 for the first three. ``clip`` bounds
  the input of every gate activation; LSTM's cell state on its way into ``h`` is not clipped
  (ONNX Runtime does not either).

float16/bfloat16 layers compute in float32, float64 in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import dtypes as _dt
from ..errors import KernelError
from ..graph import TensorType
from .registry import OpContext, kernel, shape_rule

_FLOATS = ("float16", "bfloat16", "float32", "float64")
_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}

Activation = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------ activations
# Each factory returns an in-place applier (the gate buffers are the kernel's own).
def _affine(a, b):
    def apply(x):
        x *= a
        x += b
        return x
    return apply


def _leaky_relu(a, b):
    return lambda x: np.multiply(x, a, out=x, where=x < 0)


def _thresholded_relu(a, b):
    def apply(x):
        np.copyto(x, 0, where=~(x >= a))  # a copy, not x * mask: inf stays inf, not nan
        return x
    return apply


def _scaled_tanh(a, b):
    def apply(x):
        x *= b
        np.tanh(x, out=x)
        x *= a
        return x
    return apply


def _hard_sigmoid(a, b):
    def apply(x):
        x *= a
        x += b
        return np.clip(x, 0, 1, out=x)
    return apply


def _elu(a, b):
    def apply(x):
        neg = np.expm1(np.minimum(x, 0))  # no exp of a large positive number
        neg *= a
        np.copyto(x, neg, where=x < 0)
        return x
    return apply


def _sigmoid(x):
    # 1/(1+e^-x) written as (1+tanh(x/2))/2: no overflow for very negative x
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


def _softsign(x):
    x /= 1 + np.abs(x)
    return x


# lower-case name -> (alpha default or None when unused, beta default or None, factory(alpha, beta))
_ACTIVATIONS: dict[str, tuple[float | None, float | None, Callable[[float, float], Activation]]] = {
    "relu": (None, None, lambda a, b: lambda x: np.maximum(x, 0, out=x)),
    "tanh": (None, None, lambda a, b: lambda x: np.tanh(x, out=x)),
    "sigmoid": (None, None, lambda a, b: _sigmoid),
    "affine": (1.0, 0.0, _affine),
    "leakyrelu": (0.01, None, _leaky_relu),
    "thresholdedrelu": (1.0, None, _thresholded_relu),
    "scaledtanh": (1.0, 1.0, _scaled_tanh),
    "hardsigmoid": (0.2, 0.5, _hard_sigmoid),
    "elu": (1.0, None, _elu),
    "softsign": (None, None, lambda a, b: _softsign),
    "softplus": (None, None, lambda a, b: lambda x: np.logaddexp(0, x, out=x)),
}
_ACTIVATION_NAMES = ("Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, "
                     "Softsign, Softplus")


# ----------------------------------------------------------------------- layer spec
@dataclass(frozen=True)
class _Op:
    """What differs between RNN, GRU and LSTM in the shared frame."""

    gates: int  # gate blocks stacked in W and R
    default_activations: tuple[str, ...]  # one direction's list
    states: int  # 1 (H) or 2 (H and C)


_OPS = {
    "RNN": _Op(1, ("Tanh",), 1),
    "GRU": _Op(3, ("Sigmoid", "Tanh"), 1),
    "LSTM": _Op(4, ("Sigmoid", "Tanh", "Tanh"), 2),
}


@dataclass(frozen=True)
class _Spec:
    """A node's attributes, checked and resolved."""

    reverse: tuple[bool, ...]  # per direction: runs backwards
    layout: int
    hidden: int | None  # None: taken from the weights at run time
    clip: float | None
    acts: tuple[tuple[Activation, ...], ...]  # [direction][function]
    shared: tuple[bool, ...]  # per function: the same in every direction
    standard: bool = False  # the op's default functions in every direction, no clip

    @property
    def num_dirs(self) -> int:
        return len(self.reverse)

    def activate(self, k: int, x: np.ndarray, clip: bool = True) -> np.ndarray:
        """Apply function ``k`` in place to ``x`` of shape ``[direction, ...]``, after ``clip``."""
        if clip and self.clip is not None:
            np.clip(x, -self.clip, self.clip, out=x)
        if self.shared[k]:
            return self.acts[0][k](x)
        for d, fns in enumerate(self.acts):
            fns[k](x[d])
        return x


def _activation_keys(ctx: OpContext, names, alphas, betas) -> list[tuple]:
    """(name, alpha, beta) per function, consuming the parameter lists in order."""
    alphas, betas = list(alphas or ()), list(betas or ())
    keys = []
    for name in names:
        key = str(name).lower()
        if key not in _ACTIVATIONS:
            raise ctx.error(f"unknown activation '{name}'; expected one of {_ACTIVATION_NAMES}")
        a_default, b_default, _ = _ACTIVATIONS[key]
        a = (alphas.pop(0) if alphas else a_default) if a_default is not None else None
        b = (betas.pop(0) if betas else b_default) if b_default is not None else None
        keys.append((key, a, b))
    if alphas or betas:
        raise ctx.error(f"activation_alpha/activation_beta have more values than the activations "
                        f"{list(names)} take ({len(alphas)} alpha and {len(betas)} beta left over)")
    return keys


def _spec(ctx: OpContext, op: _Op, attrs: dict) -> _Spec:
    direction = attrs["direction"]
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction not in _DIRECTIONS:
        raise ctx.error(f"direction must be forward, reverse or bidirectional, found {direction!r}")
    reverse = _DIRECTIONS[direction]
    layout = int(attrs["layout"])
    if layout not in (0, 1):
        raise ctx.error(f"layout must be 0 or 1, found {layout}")
    hidden = attrs["hidden_size"]
    if hidden is not None and int(hidden) <= 0:
        raise ctx.error(f"hidden_size must be positive, found {hidden}")
    clip = attrs["clip"]
    if clip is not None and not float(clip) > 0:
        raise ctx.error(f"clip must be positive, found {clip}")
    n, nd = len(op.default_activations), len(reverse)
    names = [s.decode() if isinstance(s, bytes) else s for s in (attrs["activations"] or op.default_activations)]
    if len(names) not in (n, n * nd) and not (nd == 1 and len(names) == 2 * n):
        raise ctx.error(f"activations must list {n} function(s) per direction ({n * nd} for "
                        f"direction={direction}), found {len(names)}: {names}")
    keys = _activation_keys(ctx, names, attrs["activation_alpha"], attrs["activation_beta"])
    if len(keys) == n:  # one list (with its parameters) for every direction
        keys = keys * nd
    # nd == 1 with 2n functions: the first n (the RNN schema's own default is [Tanh, Tanh];
    # ONNX Runtime also reads a forward RNN's first function)
    per_dir = [keys[d * n:(d + 1) * n] for d in range(nd)]
    acts = tuple(tuple(_ACTIVATIONS[k][2](a, b) for k, a, b in fns) for fns in per_dir)
    shared = tuple(all(per_dir[d][k] == per_dir[0][k] for d in range(nd)) for k in range(n))
    default = tuple(a.lower() for a in op.default_activations)
    standard = clip is None and all(tuple(k for k, _, _ in fns) == default for fns in per_dir)
    return _Spec(reverse, layout, None if hidden is None else int(hidden),
                 None if clip is None else float(clip), acts, shared, standard)


# -------------------------------------------------------------------------- shapes
def _dim(d):
    return d if isinstance(d, int) else None


def _mismatch(shape, want) -> bool:
    """True when a known dim of ``shape`` differs from a known dim of ``want`` (or ranks differ)."""
    if shape is None:
        return False
    if len(shape) != len(want):
        return True
    return any(_dim(a) is not None and _dim(b) is not None and a != b for a, b in zip(shape, want))


def _expected_shapes(op: _Op, spec: _Spec, x_shape, hidden) -> dict[int, tuple]:
    """Expected shape per input index (dims may be None), from X's shape and the hidden size."""
    nd, g = spec.num_dirs, op.gates
    if spec.layout:
        batch, _, size = x_shape
        state = (batch, nd, hidden)
    else:
        _, batch, size = x_shape
        state = (nd, batch, hidden)
    gh = None if hidden is None else g * hidden
    want = {1: (nd, gh, size), 2: (nd, gh, hidden), 3: (nd, None if gh is None else 2 * gh),
            4: (batch,), 5: state}
    if op.states == 2:
        want[6] = state
        want[7] = (nd, None if hidden is None else 3 * hidden)
    return want


_INPUT_NAMES = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")


def _hidden_from(op: _Op, spec: _Spec, w_shape, r_shape):
    if spec.hidden is not None:
        return spec.hidden
    if r_shape is not None and len(r_shape) == 3 and _dim(r_shape[2]) is not None:
        return r_shape[2]
    if w_shape is not None and len(w_shape) == 3 and _dim(w_shape[1]) is not None:
        return w_shape[1] // op.gates
    return None


def _rnn_shape(op_type: str):
    op = _OPS[op_type]

    def infer(ctx: OpContext, **attrs):
        spec = _spec(ctx, op, attrs)
        x = ctx.inputs[0]
        for i, t in enumerate(ctx.inputs):
            if t is None or not ctx.has_input(i):
                continue
            if i == 4:
                if t.dtype not in ("int32", "int64"):
                    raise ctx.error(f"sequence_lens must be int32, found {t.dtype}")
            elif t.dtype != x.dtype or t.dtype not in _FLOATS:
                raise ctx.error(f"input {_INPUT_NAMES[i]} has dtype {t.dtype}; expected a float type "
                                f"shared with X ({x.dtype})")
        if x.shape is not None and len(x.shape) != 3:
            raise ctx.error(f"X must be 3-D, found shape {list(x.shape)}")
        w_shape = ctx.inputs[1].shape if len(ctx.inputs) > 1 and ctx.inputs[1] else None
        r_shape = ctx.inputs[2].shape if len(ctx.inputs) > 2 and ctx.inputs[2] else None
        hidden = _hidden_from(op, spec, w_shape, r_shape)
        x_shape = tuple(x.shape) if x.shape is not None else (None, None, None)
        want = _expected_shapes(op, spec, x_shape, hidden)
        for i, shape in want.items():
            t = ctx.inputs[i] if i < len(ctx.inputs) and ctx.has_input(i) else None
            if t is not None and _mismatch(t.shape, shape):
                raise ctx.error(f"input {_INPUT_NAMES[i]} has shape {list(t.shape)}, expected "
                                f"{[d if _dim(d) is not None else '?' for d in shape]} (hidden_size={hidden}, "
                                f"layout={spec.layout}, {spec.num_dirs} direction(s))")
        nd = spec.num_dirs
        if spec.layout:
            batch, seq = x_shape[0], x_shape[1]
            y, state = (batch, seq, nd, hidden), (batch, nd, hidden)
        else:
            seq, batch = x_shape[0], x_shape[1]
            y, state = (seq, nd, batch, hidden), (nd, batch, hidden)
        types = [TensorType(x.dtype, y)] + [TensorType(x.dtype, state)] * op.states
        return types[:max(len(ctx.node.outputs), 1)]

    return infer


for _name in _OPS:
    shape_rule(_name)(_rnn_shape(_name))


# --------------------------------------------------------------------- the frame
def _widen(x: np.ndarray | None, work) -> np.ndarray | None:
    if x is None:
        return None
    return x.astype(work, copy=False)


def _narrow(y: np.ndarray, ir_dtype: str) -> np.ndarray:
    return np.ascontiguousarray(y, dtype=_dt.to_numpy(ir_dtype))


@dataclass
class _Frame:
    """One call's time-major operands, ready for a cell's loop."""

    xw: np.ndarray  # [T, dirs, batch, gates*H]: input projection plus biases, time-permuted
    states: list[np.ndarray]  # [dirs, batch, H] each
    steps: int  # time steps any entry needs
    mask: np.ndarray | None  # [T, 1, batch, 1] bool: step valid for the entry, None when all are
    perm: np.ndarray | None  # [T, batch]: the reverse directions' time permutation
    y: np.ndarray | None  # [T, dirs, batch, H] zeros, when Y is wanted
    empty: np.ndarray | None = None  # [batch] bool: zero-length entries, None when there are none


def _check_runtime(label: str, op: _Op, spec: _Spec, arrays: list) -> int:
    """Validate the shapes of one call's inputs; returns the hidden size."""
    x = arrays[0]
    if x.ndim != 3:
        raise KernelError(f"{label}: X must be 3-D, found shape {list(x.shape)}")
    w, r = arrays[1], arrays[2]
    hidden = _hidden_from(op, spec, w.shape, r.shape)
    for i, shape in _expected_shapes(op, spec, x.shape, hidden).items():
        a = arrays[i] if i < len(arrays) else None
        if a is not None and _mismatch(a.shape, shape):
            raise KernelError(f"{label}: input {_INPUT_NAMES[i]} has shape {list(a.shape)}, expected {list(shape)} "
                              f"(hidden_size={hidden}, layout={spec.layout}, {spec.num_dirs} direction(s))")
    return hidden


def _frame(label: str, op: _Op, spec: _Spec, arrays: list, work, want_y: bool,
           weights: Callable, biases: Callable) -> tuple[_Frame, int]:
    """Project the inputs, apply the time permutation and the masks (see module docstring).

    ``weights(W)`` gives W as ``[input_size, dirs*gates*H]`` (:func:`_input_weights`);
    ``biases(B)`` what the op folds into the input projection, ``[dirs, gates*H]``.
    """
    hidden = _check_runtime(label, op, spec, arrays)
    w_t, bias = weights(arrays[1]), biases(arrays[3])
    x, lens = arrays[0], arrays[4]
    if spec.layout:
        x = x.swapaxes(0, 1)
    steps_total, batch, size = x.shape
    nd, gh = spec.num_dirs, op.gates * hidden
    xw = _widen(x, work).reshape(-1, size) @ w_t
    xw = xw.reshape(steps_total, batch, nd, gh).transpose(0, 2, 1, 3)
    if bias is not None:
        xw += bias[:, None, :]

    mask, steps, empty = None, steps_total, None
    if lens is not None:
        lens = np.asarray(lens, np.int64)
        if lens.size and (lens.min() < 0 or lens.max() > steps_total):
            raise KernelError(f"{label}: sequence_lens must lie in [0, {steps_total}] (seq_length), "
                              f"found {lens.tolist()}")
        if lens.size and lens.min() < steps_total:
            steps = int(lens.max())
            mask = (np.arange(steps_total)[:, None] < lens[None, :])[:, None, :, None]
            empty = lens == 0 if not lens.all() else None
        else:
            lens = None
    perm = None
    if any(spec.reverse):
        t = np.arange(steps_total)[:, None]
        full = np.full((1, batch), steps_total) if lens is None else lens[None, :]
        perm = np.where(t < full, full - 1 - t, t)
        cols = np.arange(batch)[None, :]
        for d, rev in enumerate(spec.reverse):
            if rev:
                xw[:, d] = xw[perm, d, cols]
    xw = np.ascontiguousarray(xw)

    layout_state = (lambda s: s.swapaxes(0, 1)) if spec.layout else (lambda s: s)
    states = []
    for i in range(op.states):
        s0 = arrays[5 + i]
        states.append(np.zeros((nd, batch, hidden), work) if s0 is None
                      else np.array(layout_state(_widen(s0, work)), dtype=work))
    y = np.zeros((steps_total, nd, batch, hidden), work) if want_y else None
    return _Frame(xw, states, steps, mask, perm, y, empty), hidden


def _outputs(ctx: OpContext, spec: _Spec, frame: _Frame, states: list[np.ndarray]):
    """The node's outputs from a finished loop: one array, or a tuple (None for unnamed ones)."""
    dtype = ctx.inputs[0].dtype if ctx.inputs[0] is not None else "float32"
    names = ctx.node.outputs
    res = []
    if names and names[0]:
        y = frame.y
        if frame.mask is not None:
            y = np.where(frame.mask, y, 0)  # a where, not a product: no inf*0 = nan
        if frame.perm is not None:
            cols = np.arange(y.shape[2])[None, :]
            for d, rev in enumerate(spec.reverse):
                if rev:
                    y[:, d] = y[frame.perm, d, cols]
        res.append(_narrow(y.transpose(2, 0, 1, 3) if spec.layout else y, dtype))
    else:
        res.append(None)
    for i, s in enumerate(states, start=1):
        if i < len(names) and names[i]:
            if frame.empty is not None:  # no last step: zeros, as ONNX Runtime gives
                s = s.copy()
                s[:, frame.empty] = 0
            res.append(_narrow(s.swapaxes(0, 1) if spec.layout else s, dtype))
        elif i < len(names):
            res.append(None)
    return res[0] if len(names) == 1 else tuple(res[:len(names)])


def _work_dtype(ctx: OpContext):
    t = ctx.inputs[0]
    return np.dtype(np.float64) if t is not None and t.dtype == "float64" else np.dtype(np.float32)


def _input_weights(w: np.ndarray, work) -> np.ndarray:
    """W ``[dirs, gates*H, input_size]`` as ``[input_size, dirs*gates*H]``, contiguous: BLAS is
    several times slower on a transposed view."""
    return np.ascontiguousarray(_widen(w, work).reshape(-1, w.shape[-1]).T)


def _transposed_recurrence(r: np.ndarray, work) -> np.ndarray:
    """R ``[dirs, gates*H, H]`` as ``[dirs, H, gates*H]``, contiguous for the per-step matmul."""
    return np.ascontiguousarray(_widen(r, work).transpose(0, 2, 1))


def _cached(ctx: OpContext, i: int, prepare: Callable[[np.ndarray], object]) -> Callable[[np.ndarray], object]:
    """``prepare`` applied to input ``i``, done once at build time when the input is a constant."""
    const = ctx.values[i] if i < len(ctx.values) else None
    ready = prepare(const) if const is not None else None

    def get(a):
        if a is None:
            return None
        return ready if a is const and ready is not None else prepare(a)

    return get


def _summed_biases(b: np.ndarray, work) -> np.ndarray:
    """Wb + Rb from B ``[dirs, 2*gates*H]``: both add to every gate's input."""
    b = _widen(b, work)
    half = b.shape[1] // 2
    return b[:, :half] + b[:, half:]


def _step_update(frame: _Frame, s: int, state: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The state after step ``s``: ``new`` where the entry is still running, else ``state``."""
    return new if frame.mask is None else np.where(frame.mask[s], new, state)


_COMMON_ATTRS = {"activation_alpha": None, "activation_beta": None, "activations": None, "clip": None,
                 "direction": "forward", "hidden_size": None, "layout": 0}


def _padded(arrays: tuple, n: int) -> list:
    return list(arrays) + [None] * (n - len(arrays))


# ------------------------------------------------------------------------------- RNN
@kernel("RNN", attrs=dict(_COMMON_ATTRS))
def rnn(ctx: OpContext, **attrs):
    op, spec, work = _OPS["RNN"], _spec(ctx, _OPS["RNN"], attrs), _work_dtype(ctx)
    label, want_y = ctx.node.label, bool(ctx.node.outputs and ctx.node.outputs[0])
    weights = _cached(ctx, 1, lambda w: _input_weights(w, work))
    recurrence = _cached(ctx, 2, lambda r: _transposed_recurrence(r, work))
    biases = _cached(ctx, 3, lambda b: _summed_biases(b, work))

    def rnn_fn(*arrays):
        arrays = _padded(arrays, 6)
        frame, hidden = _frame(label, op, spec, arrays, work, want_y, weights, biases)
        rt = recurrence(arrays[2])
        (h,) = frame.states
        for s in range(frame.steps):
            g = frame.xw[s]
            g += h @ rt
            spec.activate(0, g)
            h = _step_update(frame, s, h, g)
            if frame.y is not None:
                frame.y[s] = g
        return _outputs(ctx, spec, frame, [h])

    return rnn_fn


# ------------------------------------------------------------------------------- GRU
@kernel("GRU", attrs=dict(_COMMON_ATTRS, linear_before_reset=0))
def gru(ctx: OpContext, linear_before_reset: int, **attrs):
    op, spec, work = _OPS["GRU"], _spec(ctx, _OPS["GRU"], attrs), _work_dtype(ctx)
    label, want_y = ctx.node.label, bool(ctx.node.outputs and ctx.node.outputs[0])
    lbr = bool(linear_before_reset)
    weights = _cached(ctx, 1, lambda w: _input_weights(w, work))
    recurrence = _cached(ctx, 2, lambda r: _transposed_recurrence(r, work))

    def folded_biases(b):
        # Wb for every gate; Rb for z and r, and for h unless it is applied inside r * (...)
        b = _widen(b, work)
        gh = b.shape[1] // 2
        fold = b[:, :gh] + b[:, gh:]
        if lbr:
            fold[:, 2 * gh // 3:] = b[:, 2 * gh // 3:gh]
        return fold

    biases = _cached(ctx, 3, folded_biases)

    def gru_fn(*arrays):
        arrays = _padded(arrays, 6)
        frame, hid = _frame(label, op, spec, arrays, work, want_y, weights, biases)
        rt = recurrence(arrays[2])  # [dirs, H, 3H]: z | r | h
        rt_zr, rt_h = rt[:, :, :2 * hid], rt[:, :, 2 * hid:]
        b = arrays[3]
        rb_h = None if b is None or not lbr else _widen(b, work)[:, None, 5 * hid:]
        (h,) = frame.states
        for s in range(frame.steps):
            g = frame.xw[s]
            zr, hh = g[..., :2 * hid], g[..., 2 * hid:]
            if lbr:
                rec = h @ rt
                zr += rec[..., :2 * hid]
                spec.activate(0, zr)
                lin = rec[..., 2 * hid:]
                if rb_h is not None:
                    lin += rb_h
                lin *= zr[..., hid:]
                hh += lin
            else:
                zr += h @ rt_zr
                spec.activate(0, zr)
                hh += (zr[..., hid:] * h) @ rt_h
            spec.activate(1, hh)
            new = h - hh  # H = hh + z * (H - hh)
            new *= zr[..., :hid]
            new += hh
            h = _step_update(frame, s, h, new)
            if frame.y is not None:
                frame.y[s] = new
        return _outputs(ctx, spec, frame, [h])

    return gru_fn


# ------------------------------------------------------------------------------ LSTM
def _lstm_steps(frame: _Frame, rt: np.ndarray, h: np.ndarray, c: np.ndarray, hid: int) -> None:
    """The time loop of the common LSTM (sigmoid/tanh/tanh, no peepholes, clip, coupling or
    sequence lengths), updating the states ``h`` and ``c`` (fresh arrays) in place: one gate
    buffer whose four views are taken once, and no temporaries (a small model's LSTM is
    mostly per-call overhead)."""
    gates = np.empty(h.shape[:-1] + (4 * hid,), h.dtype)
    i_g, o_g, f_g, c_g = (gates[..., k * hid:(k + 1) * hid] for k in range(4))
    iof = gates[..., :3 * hid]
    tanh_c = np.empty_like(c)
    xw, y = frame.xw, frame.y
    for s in range(frame.steps):
        np.matmul(h, rt, out=gates)
        gates += xw[s]
        _sigmoid(iof)
        np.tanh(c_g, out=c_g)
        c *= f_g
        c_g *= i_g
        c += c_g
        np.tanh(c, out=tanh_c)
        np.multiply(tanh_c, o_g, out=h)
        if y is not None:
            y[s] = h


@kernel("LSTM", attrs=dict(_COMMON_ATTRS, input_forget=0))
def lstm(ctx: OpContext, input_forget: int, **attrs):
    op, spec, work = _OPS["LSTM"], _spec(ctx, _OPS["LSTM"], attrs), _work_dtype(ctx)
    label, want_y = ctx.node.label, bool(ctx.node.outputs and ctx.node.outputs[0])
    couple = bool(input_forget)
    weights = _cached(ctx, 1, lambda w: _input_weights(w, work))
    recurrence = _cached(ctx, 2, lambda r: _transposed_recurrence(r, work))
    biases = _cached(ctx, 3, lambda b: _summed_biases(b, work))

    def lstm_fn(*arrays):
        arrays = _padded(arrays, 8)
        frame, hid = _frame(label, op, spec, arrays, work, want_y, weights, biases)
        rt = recurrence(arrays[2])  # [dirs, H, 4H]: i | o | f | c
        p = _widen(arrays[7], work)
        if p is not None:
            p_i, p_o, p_f = (p[:, None, k * hid:(k + 1) * hid] for k in range(3))
        h, c = frame.states
        if p is None and not couple and frame.mask is None and spec.standard:
            _lstm_steps(frame, rt, h, c, hid)
            return _outputs(ctx, spec, frame, [h, c])
        for s in range(frame.steps):
            g = frame.xw[s]
            g += h @ rt
            i_g, o_g, f_g, c_g = (g[..., k * hid:(k + 1) * hid] for k in range(4))
            if p is None:
                spec.activate(0, g[..., :3 * hid])  # i, o, f at once
            else:
                i_g += p_i * c
                f_g += p_f * c
                spec.activate(0, i_g)
                spec.activate(0, f_g)
            if couple:
                np.subtract(1, i_g, out=f_g)
            spec.activate(1, c_g)
            c_new = f_g * c
            c_new += i_g * c_g
            if p is not None:
                o_g += p_o * c_new
                spec.activate(0, o_g)
            # the cell state feeding h is not clipped (ONNX Runtime clips gate inputs only)
            h_new = spec.activate(2, c_new.copy(), clip=False)
            h_new *= o_g
            h = _step_update(frame, s, h, h_new)
            c = _step_update(frame, s, c, c_new)
            if frame.y is not None:
                frame.y[s] = h_new
        return _outputs(ctx, spec, frame, [h, c])

    return lstm_fn
