"""The operator registry: one schema per (domain, op_type), holding attribute defaults, the
shape/dtype rule and the numpy kernel factory.

Naming and versions: the IR speaks one vocabulary, ONNX at the latest opset (importers
normalise older opsets), so an operator is keyed by ``(domain, op_type)`` only and each kernel
implements one version. Register with the decorators::

    @kernel("Relu")
    def relu(ctx):
        return lambda x: np.maximum(x, 0)

    @shape_rule("Relu")
    def relu_shape(ctx):
        return [ctx.inputs[0]]

Attributes reach both functions as keyword arguments whose defaults are filled in exactly one
place (:func:`resolve_attrs`), from the ``attrs=`` mapping given to :func:`kernel`
(``REQUIRED`` marks attributes without a default).

Kernel contract. ``build(ctx, **attrs)`` runs once at compile time and returns ``fn``;
``fn(*arrays)`` runs at inference time and returns one ``numpy.ndarray`` or a tuple of them
(one per node output, including outputs named ""). Missing optional inputs arrive as
``None``. A kernel never writes into its inputs. It may precompute from constant inputs
(``ctx.values``) and static shapes (``ctx.inputs``/``ctx.outputs``) but must still work when a
shape is unknown (``None`` dims). A single-output kernel that can write its result into a
preallocated array marks the returned function with :func:`writes_out`; it is then called as
``fn(*arrays, out=buf)`` with ``buf`` of the inferred static shape and dtype and must return
``buf``. Ops whose output 0 may be a view of input 0 (Reshape family) register with
``aliases=True`` so the buffer planner keeps the input alive as long as the view.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import GraphError, UnsupportedOpError
from ..graph import Node, TensorType


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass
class OpSchema:
    op_type: str
    domain: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    build: Callable | None = None
    infer: Callable | None = None
    aliases: bool = False
    native_lowp: bool = False  # the kernel handles bfloat16 itself (see build_kernel)


@dataclass
class OpContext:
    """What a shape rule or kernel factory knows about one node at compile time.

    Attributes:
        node: the node being built.
        inputs: type of each input (``None`` for a missing optional input).
        values: compile-time value of each input when it is a constant, else ``None``.
        outputs: inferred output types (empty while shape inference itself runs).
        options: backend options (e.g. ``threads``).
    """

    node: Node
    inputs: list[TensorType | None]
    values: list[np.ndarray | None]
    outputs: list[TensorType] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    # nodes with subgraphs (If, Loop, Scan, ...): the names the subgraphs read from enclosing
    # scopes, in the order their values follow the node's inputs in the kernel call, and the
    # types/constant values of every name visible at the node
    captures: list[str] = field(default_factory=list)
    scope: dict[str, TensorType] = field(default_factory=dict)
    scope_values: dict[str, Any] = field(default_factory=dict)

    def error(self, message: str) -> GraphError:
        from ..errors import ShapeInferenceError

        return ShapeInferenceError(f"{self.node.label}: {message}")

    def static_shape(self, i: int) -> tuple[int, ...] | None:
        """Input ``i``'s shape when fully known, else ``None``."""
        t = self.inputs[i] if i < len(self.inputs) else None
        if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
            return None
        return tuple(t.shape)

    def static_out_shape(self, i: int = 0) -> tuple[int, ...] | None:
        t = self.outputs[i] if i < len(self.outputs) else None
        if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
            return None
        return tuple(t.shape)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.inputs) and bool(self.node.inputs[i])


_OPS: dict[tuple[str, str], OpSchema] = {}


def _schema(op_type: str, domain: str) -> OpSchema:
    key = (domain, op_type)
    if key not in _OPS:
        _OPS[key] = OpSchema(op_type, domain)
    return _OPS[key]


def kernel(op_type: str, *, attrs: dict[str, Any] | None = None, domain: str = "", aliases: bool = False,
           native_lowp: bool = False):
    """Register the numpy kernel factory of an operator and its attribute defaults.

    ``native_lowp=True`` declares that the kernel computes on bfloat16 inputs itself;
    otherwise :func:`build_kernel` runs it in float32 and rounds bfloat16 outputs.
    """

    def register(build: Callable) -> Callable:
        s = _schema(op_type, domain)
        if s.build is not None:
            raise RuntimeError(f"kernel for {domain or 'ai.onnx'}::{op_type} registered twice")
        s.build = build
        s.attrs = dict(attrs or {})
        s.aliases = aliases
        s.native_lowp = native_lowp or (domain == "" and op_type in _MOVES_DATA)
        return build

    return register


def shape_rule(op_type: str, *, domain: str = ""):
    """Register the shape/dtype inference function of an operator."""

    def register(infer: Callable) -> Callable:
        s = _schema(op_type, domain)
        if s.infer is not None:
            raise RuntimeError(f"shape rule for {domain or 'ai.onnx'}::{op_type} registered twice")
        s.infer = infer
        return infer

    return register


def writes_out(fn: Callable) -> Callable:
    """Mark a kernel function as accepting ``out=`` (see module docstring)."""
    fn.writes_out = True
    return fn


_LOADED = False


def _load_all() -> None:
    # Importing the families registers their ops; done lazily to keep import cycles away.
    global _LOADED
    if not _LOADED:
        from . import _families  # noqa: F401

        _LOADED = True


def get_schema(op_type: str, domain: str = "") -> OpSchema:
    """The schema of an op; UnsupportedOpError when edgeinfer has no kernel for it."""
    _load_all()
    domain = "" if domain in ("", "ai.onnx") else domain
    s = _OPS.get((domain, op_type))
    if s is None or s.build is None:
        where = f"{domain}::" if domain else ""
        raise UnsupportedOpError(f"operator {where}{op_type} is not supported", [f"{where}{op_type}"])
    return s


def is_supported(op_type: str, domain: str = "") -> bool:
    _load_all()
    domain = "" if domain in ("", "ai.onnx") else domain
    s = _OPS.get((domain, op_type))
    return s is not None and s.build is not None


def supported_ops() -> list[str]:
    """Every op type with a kernel, as ``op`` or ``domain::op``."""
    _load_all()
    return sorted((f"{d}::{o}" if d else o) for (d, o), s in _OPS.items() if s.build is not None)


# Ops that only move, select or reinterpret elements: exact on any dtype, never widened.
_MOVES_DATA = frozenset({
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice",
    "Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "Scatter", "Expand", "Tile",
    "Pad", "Where", "Shape", "Size", "DepthToSpace", "SpaceToDepth", "ReverseSequence", "Compress",
    "Cast", "CastLike", "BitCast", "Constant", "ConstantOfShape", "If", "Loop", "Scan", "Optional",
    "OptionalHasElement", "OptionalGetElement", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
    "SequenceErase", "SequenceInsert", "SequenceLength", "SplitToSequence", "ConcatFromSequence",
    "SequenceMap", "Dropout", "QuantizeLinear", "DequantizeLinear", "TensorScatter", "CenterCropPad",
    "Trilu", "EyeLike", "NonZero",
})


def _is_bf16(t) -> bool:
    return t is not None and t.dtype == "bfloat16"


def build_kernel(schema: OpSchema, ctx: OpContext, attrs: dict[str, Any]) -> Callable:
    """``schema.build`` for ``ctx``; a kernel that is not ``native_lowp`` sees bfloat16 inputs
    and outputs as float32, and its bfloat16 outputs are rounded back (nearest even)."""
    if schema.native_lowp or not (any(_is_bf16(t) for t in ctx.inputs) or any(_is_bf16(t) for t in ctx.outputs)):
        return schema.build(ctx, **attrs)
    from .. import dtypes as _dt

    bf16 = _dt.to_numpy("bfloat16")
    wide = lambda t: TensorType("float32", t.shape) if _is_bf16(t) else t  # noqa: E731
    in_mask = [_is_bf16(t) for t in ctx.inputs]
    out_mask = [_is_bf16(t) for t in ctx.outputs]
    wctx = OpContext(
        ctx.node,
        [wide(t) for t in ctx.inputs],
        [v.astype(np.float32) if v is not None and m else v for v, m in zip(ctx.values, in_mask)],
        [wide(t) for t in ctx.outputs],
        options=ctx.options,
        captures=ctx.captures, scope=ctx.scope, scope_values=ctx.scope_values,
    )
    fn = schema.build(wctx, **attrs)

    def widened_fn(*xs):
        res = fn(*[x.astype(np.float32) if m and x is not None else x for x, m in zip(xs, in_mask)], *xs[len(in_mask):])
        if not isinstance(res, tuple):
            return res.astype(bf16) if out_mask and out_mask[0] and res is not None else res
        return tuple(r.astype(bf16) if m and r is not None else r for r, m in zip(res, out_mask + [False] * len(res)))

    return widened_fn


def resolve_attrs(schema: OpSchema, node: Node) -> dict[str, Any]:
    """The node's attributes with defaults filled in; errors name the node and attribute."""
    out: dict[str, Any] = {}
    for key, value in node.attrs.items():
        if key not in schema.attrs:
            known = ", ".join(sorted(schema.attrs)) or "none"
            raise GraphError(f"{node.label}: unknown attribute '{key}' (known: {known})")
        out[key] = value
    for key, default in schema.attrs.items():
        if key not in out:
            if default is REQUIRED:
                raise GraphError(f"{node.label}: required attribute '{key}' is missing")
            out[key] = default
    return out
