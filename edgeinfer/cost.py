"""Cost model: multiply-accumulates (MACs) per node, element operations, parameters, bytes.

A MAC is one ``a * b + c``. Only the ops that do dense multiply-accumulate work count MACs;
everything else counts *element ops* (one per output element, or per input element for a
reduction) or nothing (pure data movement: Reshape, Transpose, Concat, Gather, ...). Per op:

==========================  =========================================================================
op                          MACs
==========================  =========================================================================
Conv, ConvInteger,          ``numel(Y) * (C_in / group) * prod(kernel)``; the weight ``W`` is
QLinearConv, FusedConv      ``[M, C_in/group, k1, k2, ...]``, so ``W.shape[1]`` already is
                            ``C_in / group`` and grouped and depthwise convolutions need no case
ConvTranspose               ``numel(X) * (M / group) * prod(kernel)``: every input element is
                            scattered through a ``[M/group, k...]`` slice of ``W`` (``W.shape[1]``)
Gemm, FusedGemm             ``M * N * K`` for ``Y[M, N] = A[M, K] @ B[K, N]`` (transA/transB honoured)
MatMul, MatMulInteger,      ``numel(Y) * K`` with ``K`` the contracted dim of ``A`` (batch dims
QLinearMatMul, FusedMatMul  broadcast; ``FusedMatMul``'s ``transA`` honoured)
==========================  =========================================================================

Bias additions, fused activations and residual adds are element ops, not MACs. Shapes come from
:func:`edgeinfer.shape_inference.propagate` (the rules the cpu backend uses). Symbolic or
unknown input dims are set to 1 before inference and listed in ``assumed``; a node whose
intermediate dims stay symbolic (data-dependent shapes) is counted with them set to 1 and listed
in ``approximate``; a node whose needed shapes are unknown counts 0 and is listed in ``unknown``.
Nodes inside If/Loop/Scan bodies are not counted (how often they run depends on the data); their
number is reported.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .errors import EdgeInferError
from .graph import Graph, Node, TensorType

_FUSED_DOMAINS = ("edgeinfer", "com.microsoft")

# ops whose cost is one element op per output element
_ELEMENTWISE = frozenset(
    """Abs Acos Acosh Add And Asin Asinh Atan Atanh BatchNormalization BitShift Ceil Celu Clip Cos Cosh
    Div Elu Equal Erf Exp Floor Gelu Greater GreaterOrEqual HardSigmoid HardSwish InstanceNormalization
    IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Max Mean Min Mish Mod Mul Neg
    Not Or PRelu Pow Reciprocal Relu Resize Round Selu Sigmoid Sign Sin Sinh Softmax Softplus Softsign Sqrt
    Sub Sum Tan Tanh ThresholdedRelu Where Xor DequantizeLinear QuantizeLinear""".split()
)
# ops whose cost is one element op per input element
_REDUCTIONS = frozenset(
    """ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare ArgMax ArgMin GlobalAveragePool GlobalMaxPool GlobalLpPool""".split()
)
_POOLS = frozenset({"AveragePool", "MaxPool", "LpPool"})


def _numel(shape: tuple[int, ...] | None) -> int:
    if shape is None:
        raise TypeError("shape unknown")  # caught by count_macs: the node goes to 'unknown'
    return int(np.prod(shape, dtype=np.int64))


def _conv(node: Node, ins: list, outs: list, weight: int = 1) -> int:
    w, y = ins[weight], outs[0]
    return _numel(y) * _numel(w[1:])


def _conv_transpose(node: Node, ins: list, outs: list) -> int:
    x, w = ins[0], ins[1]
    return _numel(x) * _numel(w[1:])


def _gemm(node: Node, ins: list, outs: list) -> int:
    a = ins[0]
    k = a[0] if node.attrs.get("transA", 0) else a[-1]
    return _numel(outs[0]) * k


def _matmul(node: Node, ins: list, outs: list) -> int:
    a = ins[0]
    trans_a = node.attrs.get("transA", 0) and len(a) >= 2
    k = a[-2] if trans_a else a[-1]
    return _numel(outs[0]) * k


def _macs_only(base: Callable) -> Callable:
    return lambda node, ins, outs: (base(node, ins, outs), 0)


def _with_epilogue(base: Callable) -> Callable:
    """Conv/Gemm-like op: inputs from index 2 on (bias, residual) and a fused ``activation``
    attribute each cost one element op per output element, on top of the base MACs."""

    def rule(node: Node, ins: list, outs: list) -> tuple[int, int]:
        extra = sum(1 for i in node.inputs[2:] if i) + (1 if node.attrs.get("activation") else 0)
        return base(node, ins, outs), extra * _numel(outs[0])

    return rule


# (domain, op_type) -> rule(node, input shapes, output shapes) -> (MACs, element ops)
_MAC_RULES: dict[tuple[str, str], Callable[[Node, list, list], tuple[int, int]]] = {
    ("", "Conv"): _with_epilogue(_conv),
    ("", "ConvTranspose"): _with_epilogue(_conv_transpose),
    ("", "Gemm"): _with_epilogue(_gemm),
    ("", "MatMul"): _macs_only(_matmul),
    # quantized forms: inputs past the weight are scales and zero points, not epilogues
    ("", "ConvInteger"): _macs_only(_conv),
    ("", "QLinearConv"): _macs_only(lambda n, i, o: _conv(n, i, o, weight=3)),
    ("", "MatMulInteger"): _macs_only(_matmul),
    ("", "QLinearMatMul"): _macs_only(_matmul),
}
for _domain in _FUSED_DOMAINS:
    _MAC_RULES[(_domain, "FusedConv")] = _with_epilogue(_conv)
    _MAC_RULES[(_domain, "FusedGemm")] = _with_epilogue(_gemm)
    _MAC_RULES[(_domain, "FusedMatMul")] = _with_epilogue(_matmul)


def _element_ops(node: Node, ins: list, outs: list) -> int:
    op = node.op_type
    if op in _REDUCTIONS and ins and ins[0] is not None:
        return _numel(ins[0])
    if op in _POOLS and outs:
        return _numel(outs[0]) * _numel(tuple(node.attrs.get("kernel_shape", ())))
    if op in _ELEMENTWISE and outs:
        return _numel(outs[0])
    return 0


def _concrete(shape) -> tuple[tuple[int, ...] | None, bool]:
    """(shape with unknown dims set to 1, whether any was unknown); None when the rank is unknown."""
    if shape is None:
        return None, True
    dims = tuple(d if isinstance(d, int) else 1 for d in shape)
    return dims, dims != tuple(shape)


def count_macs(graph: Graph, input_shapes: dict[str, tuple] | None = None) -> dict[str, Any]:
    """Count multiply-accumulates and element ops of every node (see the module docstring).

    Args:
        graph: the model.
        input_shapes: concrete shapes for some inputs; other inputs keep their declared shape
            with symbolic/unknown dims set to 1.

    Returns:
        A dict with ``total_macs``, ``total_element_ops``, ``nodes`` (one dict per node in graph
        order: ``name``, ``op_type``, ``domain``, ``macs``, ``element_ops``, ``output_shape``),
        ``by_op`` (MACs per op type), ``assumed`` (``{input: shape used}`` where a dim was
        guessed), ``unknown`` (labels of nodes counted as 0 because a shape is unknown),
        ``approximate`` (nodes whose intermediate dims were unknown and counted as 1),
        ``shape_errors`` (nodes whose shape rule failed, with the reason) and
        ``subgraph_nodes_not_counted``.
    """
    from .shape_inference import propagate

    overrides: dict[str, TensorType] = {}
    assumed: dict[str, list] = {}
    for v in graph.inputs:
        if input_shapes and v.name in input_shapes:
            overrides[v.name] = TensorType(v.dtype, tuple(int(d) for d in input_shapes[v.name]))
            continue
        shape, guessed = _concrete(v.shape)
        if shape is not None and guessed:
            overrides[v.name] = TensorType(v.dtype, shape)
            assumed[v.name] = list(shape)
    failed: list[str] = []

    def note_failure(node: Node, err: Exception) -> None:
        failed.append(f"{node.label}: {err}")

    types, _ = propagate(graph, overrides, fold="small", on_error=note_failure)

    nodes, by_op, unknown, approximate = [], {}, [], []
    total_macs = total_ops = 0
    for node in graph.nodes:
        ins, outs, guessed = [], [], False
        for name in node.inputs:
            shape, g = _concrete(types[name].shape) if name in types else (None, False)
            ins.append(shape)
            guessed |= g and name != ""
        for name in node.outputs:
            shape, g = _concrete(types[name].shape) if name in types else (None, bool(name))
            outs.append(shape)
            guessed |= g
        rule = _MAC_RULES.get((node.domain, node.op_type))
        macs = ops = 0
        try:
            if rule is not None:
                macs, ops = rule(node, ins, outs)
            else:
                ops = _element_ops(node, ins, outs)
        except (TypeError, IndexError):  # a needed shape is unknown (None) or has too few dims
            macs = ops = 0
            unknown.append(node.label)
        else:
            if guessed and (macs or ops):
                approximate.append(node.label)
        total_macs += macs
        total_ops += ops
        if macs:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
        nodes.append(
            {
                "name": node.name or (node.outputs[0] if node.outputs else ""),
                "op_type": node.op_type,
                "domain": node.domain,
                "macs": int(macs),
                "element_ops": int(ops),
                "output_shape": list(outs[0]) if outs and outs[0] is not None else None,
            }
        )
    in_subgraphs = sum(1 for n in graph.walk_nodes()) - len(graph.nodes)
    return {
        "total_macs": total_macs,
        "total_element_ops": total_ops,
        "nodes": nodes,
        "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        "assumed": assumed,
        "unknown": unknown,
        "approximate": approximate,
        "shape_errors": failed,
        "subgraph_nodes_not_counted": in_subgraphs,
    }


def summarize(graph: Graph, input_shapes: dict[str, tuple] | None = None) -> dict[str, Any]:
    """A model's vital statistics: signature, parameters, weight bytes, op histogram, MACs.

    Args:
        graph: the model.
        input_shapes: passed to :func:`count_macs`.

    Returns:
        A JSON-serialisable dict: ``name``, ``inputs``/``outputs`` (name, dtype, shape),
        ``nodes``, ``op_histogram``, ``params``, ``weight_bytes``, ``macs``, ``element_ops``,
        ``macs_by_op``, ``assumed``, ``unknown``, ``approximate``, ``shape_errors`` (see
        :func:`count_macs`), ``metadata`` and, when MACs could not be counted at all, ``macs_error``.
    """

    def sig(values):
        return [{"name": v.name, "dtype": v.dtype, "shape": None if v.shape is None else list(v.shape)} for v in values]

    out: dict[str, Any] = {
        "name": graph.name,
        "inputs": sig(graph.required_inputs()),
        "outputs": sig(graph.outputs),
        "nodes": sum(1 for _ in graph.walk_nodes()),
        "op_histogram": graph.op_histogram(),
        "params": graph.param_count(),
        "weight_bytes": graph.weight_bytes(),
        "metadata": dict(graph.metadata),
    }
    try:
        cost = count_macs(graph, input_shapes)
    except EdgeInferError as e:  # e.g. an input shape that does not fit: keep the rest of the summary
        out.update(macs=None, element_ops=None, macs_by_op={}, assumed={}, unknown=[], approximate=[],
                   shape_errors=[], macs_error=str(e))
        return out
    out.update(
        macs=cost["total_macs"],
        element_ops=cost["total_element_ops"],
        macs_by_op=cost["by_op"],
        assumed=cost["assumed"],
        unknown=cost["unknown"],
        approximate=cost["approximate"],
        shape_errors=cost["shape_errors"],
    )
    return out


def format_count(n: float | None, unit: str = "") -> str:
    """A count in human units: ``1234567 -> '1.23 M'`` (K, M, G, T; powers of 1000)."""
    if n is None:
        return "?"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def format_bytes(n: float | None) -> str:
    """A byte size in binary units: ``16859 -> '16.5 KiB'``."""
    if n is None:
        return "?"
    for prefix, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {prefix}"
    return f"{int(n)} B"
