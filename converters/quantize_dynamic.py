"""Dynamic int8 quantization and weight-only quantization of every large table (issue 7).

**Dynamic** (:func:`quantize_dynamic`, ONNX Runtime's ``quantize_dynamic`` is the reference
design): no calibration. Each MatMul / Gemm (and Einsum that is a plain matmul) with a constant
float weight becomes::

    x_q, x_scale, x_zp = DynamicQuantizeLinear(x)        # uint8, range measured per call
    acc = MatMulInteger(x_q, W_q, x_zp)                  # W_q int8 symmetric, zero point 0
    y = Cast(acc, float32) * (x_scale * W_scale) + bias   # W_scale one per output column

which is the pattern ONNX Runtime fuses into ``MatMulIntegerToFloat`` and OpenVINO folds
into an int8 matmul. The activation range is taken from the tensor itself at run time, so
there is no calibration set to get wrong; one DynamicQuantizeLinear is shared by every
consumer of a tensor (q, k and v read one LayerNorm output). Weights are symmetric (zero point
0, range [-127, 127]) so ``b_zero_point`` is left out and the int32 accumulator needs no
correction term.

Only products are quantized; a transformer's file is mostly those, but not all of it (the
embeddings, a conv stem or decoder). ``other_weights="int8"`` therefore also stores every
other large float constant as int8 read through a per-channel DequantizeLinear (weight only,
computed in float), which is what takes the file past 3.5x smaller.

**Tables** (:func:`quantize_tables`): weight-only int8/int4 of every large float constant that
the Conv/MatMul/Gemm pass of ``quantize_weights`` leaves float: Gather tables (embeddings),
ConvTranspose weights, position embeddings, Einsum operands. Without it an int4 transformer
keeps those in float32 and cannot shrink 6x.

Constants that are "vectors" (at most one dimension longer than 1: biases, LayerNorm scales,
a class token) and constants under ``min_elements`` values stay float: they weigh nothing and
an error in them is not averaged out over a dot product. Subgraphs (If/Loop bodies) are not
rewritten.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from edgeinfer.errors import InputError
from edgeinfer.graph import Graph, Node

from .quantize import _blocked_dequantized, _blocked_params, _dequantized_constant, _finished, prepare, weight_params

DYNAMIC_OPS = ("MatMul", "Gemm", "Einsum")
OTHER_WEIGHTS = ("int8", None)

# A constant read by one of these is already quantization data (scales, zero points, int
# weights): re-quantizing it would be wrong, not merely useless.
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                        "ConvInteger", "QLinearMatMul", "QLinearConv", "MatMulIntegerToFloat"})


# ----------------------------------------------------------------------------- dynamic
def quantize_dynamic(graph: Graph, *, per_channel: bool = True, ops: Iterable[str] = DYNAMIC_OPS,
                     exclude: Iterable[str] = (), other_weights: str | None = "int8",
                     min_elements: int = 16) -> Graph:
    """Dynamic int8 quantization: activations quantized at run time, int8 weights, no calibration.

    Args:
        graph: the float graph (not changed); :func:`~.quantize.prepare` runs first.
        per_channel: one weight scale per output column (else one per weight).
        ops: which of MatMul, Gemm and Einsum to rewrite. An Einsum is rewritten only when it is
            a plain matmul with a constant second operand (``"abcd,cde->abe"``: the contracted
            letters trail the first operand, the weight has one free letter); others stay float.
        exclude: names (node name or first output) of nodes to keep wholly in float, weights too.
        other_weights: ``"int8"`` stores every other large float constant (Conv, ConvTranspose
            weights, Gather tables, Einsum operands left float) as per-channel int8 read through
            DequantizeLinear, so the file shrinks too; ``None`` leaves them float32.
        min_elements: constants smaller than this are never quantized by ``other_weights``.

    Returns:
        A new graph with DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul (-> Add) in
        place of each quantized product.

    Raises:
        InputError: an op that cannot be quantized dynamically, or a bad ``other_weights``.
    """
    kinds = set(ops)
    unknown = sorted(kinds - set(DYNAMIC_OPS))
    if unknown:
        raise InputError(f"quantize_dynamic: ops {unknown} cannot be quantized dynamically; "
                         f"supported: {list(DYNAMIC_OPS)}")
    if other_weights not in OTHER_WEIGHTS:
        raise InputError(f"quantize_dynamic: other_weights must be 'int8' or None, got {other_weights!r}")
    g = prepare(graph)
    rewriter = _DynamicRewriter(g, per_channel)
    skip = set(exclude)
    for n in g.nodes:
        wanted = (not n.domain and n.op_type in kinds and n.name not in skip
                  and not (n.outputs and n.outputs[0] in skip))
        if not (wanted and rewriter.rewrite(n)):
            rewriter.nodes.append(n)
    g = _finished(g, rewriter.nodes)
    if other_weights == "int8":
        g = quantize_tables(g, weights="int8", min_elements=min_elements, exclude=skip)
    return g


class _DynamicRewriter:
    """Emits the integer form of one product at a time, sharing the quantized activations and
    weights between nodes that read the same tensor."""

    def __init__(self, g: Graph, per_channel: bool):
        self.g, self.per_channel = g, per_channel
        self.nodes: list[Node] = []
        self._acts: dict[str, tuple[str, str, str]] = {}  # float tensor -> (q, scale, zero point)
        self._weights: dict[tuple, tuple[str, np.ndarray]] = {}  # (name, how) -> (int8 name, scales)

    # -- one node
    def rewrite(self, n: Node) -> bool:
        """Append the integer form of ``n`` and return True, or return False to keep it float."""
        c = self.g.constants
        if len(n.inputs) < 2 or n.inputs[1] not in c or c[n.inputs[1]].dtype != np.float32:
            return False
        x, w = n.inputs[0], n.inputs[1]
        if not x or x in c:
            return False
        wv = c[w]
        if n.op_type == "MatMul":
            if wv.ndim < 2:
                return False
            return self._emit(n, x, w, "matmul", lambda: wv, 1.0, None)
        if n.op_type == "Gemm":
            return self._gemm(n, x, w, wv)
        return self._einsum(n, x, w, wv)

    def _gemm(self, n: Node, x: str, w: str, wv: np.ndarray) -> bool:
        if wv.ndim != 2:
            return False
        a = n.attrs
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if int(a.get("transA", 0)):
            xt = self.g.unique_name(x + "_transposed")
            self.nodes.append(Node("Transpose", (x,), (xt,), {"perm": [1, 0]}, name=xt))
            x = xt
        trans_b = bool(int(a.get("transB", 0)))
        bias = n.inputs[2] if len(n.inputs) > 2 and beta != 0.0 else ""
        return self._emit(n, x, w, ("gemm", trans_b), lambda: wv.T if trans_b else wv, alpha, (bias, beta))

    def _einsum(self, n: Node, x: str, w: str, wv: np.ndarray) -> bool:
        plan = _einsum_as_matmul(str(n.attrs.get("equation", "")), wv.shape)
        if plan is None or len(n.inputs) != 2:
            return False
        perm, k, merge = plan
        if merge:  # several contracted letters: merge them into one axis of x
            xr, shape = self.g.unique_name(x + "_merged"), self.g.unique_name(x + "_merged_shape")
            self.g.constants[shape] = np.array([0] * merge + [-1], np.int64)
            self.nodes.append(Node("Reshape", (x, shape), (xr,), name=xr))
            x = xr
        return self._emit(n, x, w, ("einsum", tuple(perm)),
                          lambda: np.ascontiguousarray(wv.transpose(perm)).reshape(k, -1), 1.0, None)

    # -- shared pieces
    def _emit(self, n: Node, x: str, w: str, how, as_kn, alpha: float, bias: tuple[str, float] | None) -> bool:
        g = self.g
        xq, xs, xz = self._activation(x)
        wq, ws = self._weight(w, how, as_kn)
        y = n.outputs[0]
        acc, accf = g.unique_name(y + "_int32"), g.unique_name(y + "_int32_float")
        scale, scaled = g.unique_name(y + "_scale"), g.unique_name(y + "_scaled")
        ws_name = g.unique_name(w + "_scale")
        g.constants[ws_name] = np.asarray(ws * np.float32(alpha), np.float32)  # 0-d stays an array
        self.nodes.append(Node("MatMulInteger", (xq, wq, xz), (acc,), name=acc))
        self.nodes.append(Node("Cast", (acc,), (accf,), {"to": "float32"}, name=accf))
        self.nodes.append(Node("Mul", (xs, ws_name), (scale,), name=scale))
        b, beta = bias if bias else ("", 1.0)
        if not b:
            self.nodes.append(Node("Mul", (accf, scale), (y,), name=n.name or y))
            return True
        self.nodes.append(Node("Mul", (accf, scale), (scaled,), name=scaled))
        if b in g.constants:
            bname = b
            if beta != 1.0:
                bname = g.unique_name(b + "_times_beta")
                g.constants[bname] = (g.constants[b] * np.float32(beta)).astype(g.constants[b].dtype)
        elif beta != 1.0:
            bname, beta_name = g.unique_name(b + "_times_beta"), g.unique_name(b + "_beta")
            g.constants[beta_name] = np.array(beta, np.float32)
            self.nodes.append(Node("Mul", (b, beta_name), (bname,), name=bname))
        else:
            bname = b
        self.nodes.append(Node("Add", (scaled, bname), (y,), name=n.name or y))
        return True

    def _activation(self, x: str) -> tuple[str, str, str]:
        if x not in self._acts:
            g = self.g
            q, s, z = g.unique_name(x + "_quantized"), g.unique_name(x + "_scale"), g.unique_name(x + "_zero_point")
            self.nodes.append(Node("DynamicQuantizeLinear", (x,), (q, s, z), name=q))
            self._acts[x] = (q, s, z)
        return self._acts[x]

    def _weight(self, w: str, how, as_kn) -> tuple[str, np.ndarray]:
        key = (w, how)
        if key not in self._weights:
            wv = np.asarray(as_kn(), np.float32)
            if self.per_channel:
                q, scale = weight_params(wv, wv.ndim - 1)
            else:  # one scale for the whole weight
                q, scale = weight_params(wv.reshape(1, -1), 0)
                q, scale = q.reshape(wv.shape), scale.reshape(())
            name = self.g.unique_name(w + "_int8")
            self.g.constants[name] = q
            self._weights[key] = (name, scale)
        return self._weights[key]


def _einsum_as_matmul(equation: str, w_shape: tuple) -> tuple[list[int], int, int] | None:
    """How an Einsum ``x, W -> y`` is ``reshape(x) @ W'``: (permutation of W putting the
    contracted letters first in x's order, their product K, how many free letters of x precede
    them when they must be merged, else 0), or None when it is not a plain matmul."""
    eq = equation.replace(" ", "")
    if "->" not in eq or "." in eq:
        return None
    lhs, out = eq.split("->")
    parts = lhs.split(",")
    if len(parts) != 2:
        return None
    sx, sw = parts
    if len(sw) != len(w_shape) or any(len(set(s)) != len(s) for s in (sx, sw, out)):
        return None
    contracted = [ch for ch in sw if ch in sx and ch not in out]
    free_w = [ch for ch in sw if ch not in sx]
    if not contracted or len(free_w) != 1 or any(ch in out for ch in sw if ch in sx):
        return None
    k = len(contracted)
    free_x = sx[:-k]
    contracted = list(sx[-k:])  # the order x holds them in
    if set(contracted) != set(ch for ch in sw if ch in sx) or out != free_x + free_w[0] or not free_x:
        return None
    perm = [sw.index(ch) for ch in contracted] + [sw.index(free_w[0])]
    size = int(np.prod([w_shape[sw.index(ch)] for ch in contracted]))
    return perm, size, (len(free_x) if k > 1 else 0)


# ----------------------------------------------------------------------------- tables
def quantize_tables(graph: Graph, *, weights: str = "int8", block_size: int = 0, min_elements: int = 16,
                    exclude: Iterable[str] = ()) -> Graph:
    """Weight-only quantization of every large float constant still stored as float32.

    Meant to follow :func:`~.quantize.quantize_weights` (or :func:`quantize_dynamic`): it
    covers what those leave, Gather tables (embeddings), ConvTranspose weights, position
    embeddings and other large operands, each read back through a DequantizeLinear. The graph
    is not re-prepared (constant folding would undo the DequantizeLinear nodes before it);
    pass a prepared graph.

    Args:
        graph: the graph (not changed).
        weights: ``"int8"`` (one symmetric scale per channel, or per ``block_size`` values
            when given) or ``"int4"`` (one scale per ``block_size`` values, 32 by default).
        block_size: values per scale along the reduction axis; 0 means per channel for int8,
            32 for int4 (as in ``quantize_weights``).
        min_elements: constants with fewer values stay float.
        exclude: constant names, or names of nodes (name or first output) whose constants
            stay float; pass the ``exclude`` given to ``quantize_weights`` so that the
            weights it kept float are not quantized here after all.

    Raises:
        InputError: ``weights`` other than int8/int4, or a negative block size.
    """
    from edgeinfer import dtypes as _dt

    if weights not in ("int8", "int4"):
        raise InputError(f"quantize_tables: weights must be 'int8' or 'int4', got {weights!r}")
    if block_size < 0:
        raise InputError(f"quantize_tables: block_size must be >= 0, got {block_size}")
    if weights == "int4" and not block_size:
        block_size = 32
    g = graph.copy()
    readers = g.consumers()
    skip = set(exclude)
    pinned = set(g.input_names) | set(g.output_names) | skip
    dq_nodes: list[Node] = []
    renamed: dict[str, str] = {}
    for name in list(g.constants):
        v = g.constants[name]
        users = readers.get(name, [])
        if (name in pinned or not users or v.dtype != np.float32 or v.size < min_elements
                or sum(d > 1 for d in v.shape) < 2
                or any(u.op_type in _QUANT_OPS or u.domain or u.has_subgraphs for u in users)
                or any(u.name in skip or (u.outputs and u.outputs[0] in skip) for u in users)):
            continue
        channel, reduce = _table_axes(users[0], name, v)
        if weights == "int8" and not block_size:
            q, scale = weight_params(v, channel)
            renamed[name] = _dequantized_constant(g, dq_nodes, name, q, scale, channel)
        else:
            q, scale = _blocked_params(v, reduce, block_size, 7 if weights == "int4" else 127)
            q = q.astype(_dt.to_numpy("int4")) if weights == "int4" else q.astype(np.int8)
            renamed[name] = _blocked_dequantized(g, dq_nodes, name, q, scale, reduce, block_size)
    if not renamed:
        return g
    nodes = dq_nodes + [n.replace(inputs=tuple(renamed.get(i, i) for i in n.inputs))
                        if any(i in renamed for i in n.inputs) else n for n in g.nodes]
    return _finished(g, nodes)


def _table_axes(user: Node, name: str, v: np.ndarray) -> tuple[int, int]:
    """(channel axis for per-channel scales, reduction axis for blocks) of constant ``name`` as
    its first reader ``user`` uses it: a Gather table has a scale per row and blocks along the
    row; a weight has its output channel and its input (reduced) channel; anything else gets
    its longest dimension as the channel and its last long dimension as the blocked one."""
    port = user.inputs.index(name)
    r = v.ndim
    op = user.op_type
    if op == "Gather" and port == 0:
        axis = int(user.attrs.get("axis", 0)) % r
        return axis, (r - 1 if axis != r - 1 else 0)
    if op == "Conv" and port == 1:
        return 0, 1
    if op == "ConvTranspose" and port == 1:
        return 1, 0
    if op in ("MatMul", "Gemm") and port in (0, 1) and r >= 2:
        trans = bool(int(user.attrs.get("transA" if port == 0 else "transB", 0))) if op == "Gemm" else False
        rows, cols = r - 2, r - 1
        if port == 0:  # a constant left operand: rows are its channels, columns are reduced
            return (cols, rows) if trans else (rows, cols)
        return (rows, cols) if trans else (cols, rows)
    channel = int(np.argmax(v.shape))
    long_axes = [a for a in range(r) if v.shape[a] > 1 and a != channel]
    return channel, (long_axes[-1] if long_axes else channel)
