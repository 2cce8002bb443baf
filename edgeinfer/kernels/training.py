"""The ``ai.onnx.preview.training`` optimizers: Adagrad, Adam and Momentum.

Each op updates one or more tensors at once. Inputs are ``R`` (learning rate, scalar), ``T``
(update count, int64 scalar), then one group of tensors per role, each group holding the same
number ``n`` of tensors: ``X..., G...`` and the optimizer's state (``H...`` for Adagrad,
``V..., H...`` for Adam, ``V...`` for Momentum). Outputs are the new ``X...`` followed by the
new state groups in the same order. The update formulas are the ONNX spec's; they run in
float64 and each result is rounded once to the dtype of the tensor it replaces.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import KernelError
from ..graph import TensorType
from .registry import REQUIRED, OpContext, kernel, shape_rule

TRAINING = "ai.onnx.preview.training"
_FLOATS = frozenset({"float32", "float64"})

# op -> (roles of the input groups after R and T, roles of the output groups), one letter each
_GROUPS = {"Adagrad": ("XGH", "XH"), "Adam": ("XGVH", "XVH"), "Momentum": ("XGV", "XV")}


def _group_size(ctx: OpContext, op: str) -> int:
    ins, outs = _GROUPS[op]
    n_tensors = len(ctx.node.inputs) - 2
    if n_tensors <= 0 or n_tensors % len(ins):
        raise ctx.error(f"{op} takes R, T and {len(ins)} equal groups ({', '.join(ins)}) of tensors; "
                        f"found {len(ctx.node.inputs)} inputs")
    n = n_tensors // len(ins)
    if len(ctx.node.outputs) != n * len(outs):
        raise ctx.error(f"{op} updating {n} tensor(s) has {n * len(outs)} outputs ({', '.join(outs)} for each), "
                        f"found {len(ctx.node.outputs)}")
    return n


def _optimizer_types(ctx: OpContext, op: str) -> list[TensorType]:
    n = _group_size(ctx, op)
    r, t = ctx.inputs[0], ctx.inputs[1]
    if r.dtype not in _FLOATS:
        raise ctx.error(f"learning rate R must be float or double, found {r.dtype}")
    if t.dtype != "int64":
        raise ctx.error(f"update count T must be int64, found {t.dtype}")
    for name, v in (("R", r), ("T", t)):
        if v.shape is not None and len(v.shape) != 0 and tuple(v.shape) != (1,):
            raise ctx.error(f"{name} must be a scalar, found shape {list(v.shape)}")
    ins, outs = _GROUPS[op]
    tensors = ctx.inputs[2:]
    for i, t_in in enumerate(tensors):
        if t_in.dtype not in _FLOATS:
            raise ctx.error(f"input {ins[i // n]}{i % n + 1} ('{ctx.node.inputs[2 + i]}') must be float or "
                            f"double, found {t_in.dtype}")
    # each output has the type of the input it replaces
    return [tensors[ins.index(role) * n + j] for role in outs for j in range(n)]


def _register(op: str, attrs: dict, update: Callable, check: Callable | None = None) -> None:
    """Register an optimizer whose ``update(r, t, *one_tensor_group, **attrs)`` returns the new
    tensors of one group (in output order), computed in float64; ``check(ctx, attrs)`` validates
    the attributes at compile time."""
    ins, _ = _GROUPS[op]

    @shape_rule(op, domain=TRAINING)
    def infer(ctx: OpContext, **kw):
        return _optimizer_types(ctx, op)

    @kernel(op, domain=TRAINING, attrs=attrs)
    def build(ctx: OpContext, **kw):
        n = _group_size(ctx, op)
        if check is not None:
            check(ctx, kw)
        label = ctx.node.label

        def step(r, t, *tensors):
            if r.size != 1 or t.size != 1:
                raise KernelError(f"{label}: R and T must be scalars, found shapes {list(r.shape)} and {list(t.shape)}")
            rate, count = float(r.reshape(())), int(t.reshape(()))
            results = [[] for _ in _GROUPS[op][1]]
            for j in range(n):
                group = [tensors[g * n + j] for g in range(len(ins))]
                wide = [a.astype(np.float64) for a in group]
                for slot, (new, like) in enumerate(zip(update(rate, count, *wide, **kw), _outputs_like(op, group))):
                    results[slot].append(np.asarray(new).astype(like.dtype))
            return tuple(a for slot in results for a in slot)

        return step


def _outputs_like(op: str, group: list[np.ndarray]) -> list[np.ndarray]:
    """The inputs whose dtypes the outputs of one group take (X, then the state)."""
    ins, outs = _GROUPS[op]
    return [group[ins.index(role)] for role in outs]


# ----------------------------------------------------------------------------- Adagrad
def _adagrad(r, t, x, g, h, *, norm_coefficient, decay_factor, epsilon):
    rate = r / (1 + t * decay_factor)
    g = norm_coefficient * x + g
    h_new = h + g * g
    return x - rate * g / (np.sqrt(h_new) + epsilon), h_new


_register("Adagrad", {"norm_coefficient": 0.0, "decay_factor": 0.0, "epsilon": 1e-6}, _adagrad)


# -------------------------------------------------------------------------------- Adam
def _adam(r, t, x, g, v, h, *, alpha, beta, epsilon, norm_coefficient, norm_coefficient_post):
    g = norm_coefficient * x + g
    v_new = alpha * v + (1 - alpha) * g
    h_new = beta * h + (1 - beta) * g * g
    # bias correction of both moments, from the second update on
    rate = r * np.sqrt(1 - beta ** t) / (1 - alpha ** t) if t > 0 else r
    x_new = x - rate * v_new / (np.sqrt(h_new) + epsilon)
    return (1 - norm_coefficient_post) * x_new, v_new, h_new


_register("Adam", {"alpha": 0.9, "beta": 0.999, "epsilon": 1e-6, "norm_coefficient": 0.0,
                   "norm_coefficient_post": 0.0}, _adam)


# ---------------------------------------------------------------------------- Momentum
_MOMENTUM_MODES = ("standard", "nesterov")


def _momentum(r, t, x, g, v, *, alpha, beta, mode, norm_coefficient):
    g = norm_coefficient * x + g
    v_new = alpha * v + (beta if t > 0 else 1.0) * g  # the first update takes the whole gradient
    if mode == "nesterov":
        return x - r * (g + alpha * v_new), v_new
    return x - r * v_new, v_new


def _check_momentum(ctx: OpContext, kw: dict) -> None:
    if kw["mode"] not in _MOMENTUM_MODES:
        raise ctx.error(f"mode must be one of {list(_MOMENTUM_MODES)}, found {kw['mode']!r}")


_register("Momentum", {"alpha": REQUIRED, "beta": REQUIRED, "mode": REQUIRED, "norm_coefficient": REQUIRED},
          _momentum, _check_momentum)
