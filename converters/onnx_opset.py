"""Opset normalisation: every ONNX node is rewritten to the latest-opset form the IR speaks.

The table maps an op type to the rewrites that apply below an opset; one function per op and
per semantic change, in the spirit of TVM's ``_get_convert_map`` (STYLE.md #6). A node of the
default domain at opset ``v`` goes through every rule registered for its op with
``v < below`` (ascending, so rules chain like the ONNX version converter's adapters), then
through the rules registered for all versions. Ops not in the table kept their semantics
across opsets 7..latest (only types were added) and pass through unchanged.

Changes handled (opset where the new form starts):

* attributes that became inputs: Squeeze/Unsqueeze ``axes`` (13), ReduceSum ``axes`` (13),
  other Reduce* ``axes`` (18), Clip ``min``/``max`` (11), Slice ``starts``/``ends``/``axes``
  (10), Split ``split`` (13), Pad ``pads``/``value`` (11), TopK ``k`` (10), DFT ``axis`` (20,
  whose default also moved from 1 to -2);
* Split without sizes needs ``num_outputs`` (18);
* Softmax/LogSoftmax/Hardmax (13): before 13 the input was coerced to 2-D at ``axis``; kept
  when the rank is known and ``axis`` is the last dim, else written as Flatten -> op(axis=-1)
  -> Reshape(Shape(x));
* Resize 10 and Upsample (all versions) -> Resize with ``coordinate_transformation_mode =
  asymmetric`` and, for nearest, ``nearest_mode = floor`` (ORT's reading of the old ops);
  Resize 11 ``tf_half_pixel_for_nn`` (removed in 13) -> ``half_pixel`` with the nearest
  rounding that gives the same pixel;
* GridSample ``mode`` values renamed (20): bilinear -> linear, bicubic -> cubic;
* RoiAlign before 16 gets ``coordinate_transformation_mode = output_half_pixel`` (its behaviour
  then; the attribute and the half_pixel default came in 16);
* Scatter (deprecated 11) -> ScatterElements; ImageScaler (experimental, removed in 10) ->
  Mul + Add;
* inference-only cleanup: Dropout loses ``ratio``/``is_test`` (12); BatchNormalization loses
  ``spatial``, ``consumed_inputs``, ``is_test`` and (unless training) ``momentum``, and its
  pre-14 training outputs when nothing reads them.

:class:`GraphScope` is the importer's side of :class:`NormalizeContext`: constants of the
graph being converted, and a cheap walk back through producers that finds a tensor's dtype or
rank when a rewrite needs it (a constant of the input's dtype, the Softmax fast path).

Reshape's ``shape`` attribute (before 5), Gemm ``broadcast`` (before 7) and the like are not
handled: they predate opset 7, the oldest the importer accepts.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from edgeinfer import dtypes as _dt
from edgeinfer.errors import ModelFormatError, UnsupportedOpError
from edgeinfer.graph import Node, ValueInfo

# The oldest ai.onnx opset at which every node form the importer produces is valid and means
# what the IR means (the newest rewrite above targets GridSample/DFT 20). Imported graphs
# record max(source opset, IR_ONNX_OPSET) and the exporter writes at least this opset.
IR_ONNX_OPSET = 21

# Ops the importer replaces by other ops: the unsupported-op check looks for kernels of these.
REPLACED_BY: dict[str, tuple[str, ...]] = {
    "Upsample": ("Resize",),
    "Scatter": ("ScatterElements",),
    "ImageScaler": ("Mul", "Add"),
}

# Old forms nothing can rewrite: (op, first opset of the supported form, why).
UNSUPPORTED_BEFORE: dict[str, tuple[int, str]] = {
    "Scan": (9, "Scan before opset 9 (batch axis and sequence_lens input)"),
}


class NormalizeContext(Protocol):
    """What a rewrite may ask of the importer."""

    version: int  # the opset of the node's domain in the node's scope

    def constant(self, base: str, value: np.ndarray) -> str: ...  # add a constant, return its name
    def constant_like(self, base: str, value, like: str) -> tuple[str, list[Node]]: ...
    def fresh(self, base: str) -> str: ...  # an unused tensor name
    def rank_of(self, name: str) -> int | None: ...
    def is_used(self, name: str) -> bool: ...


Rewrite = Callable[[Node, NormalizeContext], list[Node]]
_RULES: dict[str, list[tuple[int | None, Rewrite]]] = {}


def upgrade(*op_types: str, below: int | None = None):
    """Register a rewrite of default-domain ``op_types`` nodes whose opset is ``< below``
    (``below=None``: every opset)."""

    def register(fn: Rewrite) -> Rewrite:
        for op in op_types:
            _RULES.setdefault(op, []).append((below, fn))
            _RULES[op].sort(key=lambda r: (r[0] is None, r[0] or 0))
        return fn

    return register


def normalize_node(node: Node, ctx: NormalizeContext) -> list[Node]:
    """The latest-opset nodes equivalent to ``node`` at opset ``ctx.version``."""
    if node.domain != "":
        return [node]
    nodes = [node]
    for below, fn in _RULES.get(node.op_type, ()):
        if below is not None and ctx.version >= below:
            continue
        out: list[Node] = []
        for n in nodes:
            out.extend(fn(n, ctx) if n.op_type == node.op_type else [n])
        nodes = out
    return nodes


# ------------------------------------------------------------------- helpers
def _without(attrs: dict, *names: str) -> dict:
    return {k: v for k, v in attrs.items() if k not in names}


def _with_inputs(node: Node, inputs: list[str], attrs: dict) -> Node:
    while len(inputs) > 1 and inputs[-1] == "":
        inputs.pop()
    return node.replace(inputs=tuple(inputs), attrs=attrs)


def _tag(node: Node) -> str:
    return node.name or (node.outputs[0] if node.outputs else node.op_type)


def _int64(node: Node, key: str, value) -> np.ndarray:
    try:
        return np.array(value, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ModelFormatError(f"{node.label}: attribute '{key}' must be integers, found {value!r}") from None


def _need(node: Node, key: str):
    if key not in node.attrs:
        raise ModelFormatError(f"{node.label}: required attribute '{key}' is missing")
    return node.attrs[key]


# --------------------------------------------------- attributes that became inputs
@upgrade("Squeeze", "Unsqueeze", below=13)
@upgrade("ReduceSum", below=13)
@upgrade("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
         "ReduceMin", "ReduceProd", "ReduceSumSquare", below=18)
def axes_attribute_to_input(node: Node, ctx: NormalizeContext) -> list[Node]:
    if node.op_type == "Unsqueeze":
        _need(node, "axes")
    axes = node.attrs.get("axes")
    inputs = list(node.inputs[:1])
    if axes is not None and (len(axes) or node.op_type == "Unsqueeze"):
        inputs.append(ctx.constant(f"{_tag(node)}_axes", _int64(node, "axes", list(axes))))
    return [_with_inputs(node, inputs, _without(node.attrs, "axes"))]


@upgrade("Clip", below=11)
def clip_attributes_to_inputs(node: Node, ctx: NormalizeContext) -> list[Node]:
    inputs, pre = [node.inputs[0], "", ""], []
    for i, key in ((1, "min"), (2, "max")):
        if key in node.attrs:
            inputs[i], extra = ctx.constant_like(f"{_tag(node)}_{key}", np.float32(node.attrs[key]), node.inputs[0])
            pre += extra
    return pre + [_with_inputs(node, inputs, _without(node.attrs, "min", "max"))]


@upgrade("Slice", below=10)
def slice_attributes_to_inputs(node: Node, ctx: NormalizeContext) -> list[Node]:
    tag = _tag(node)
    inputs = [node.inputs[0]]
    for key in ("starts", "ends"):
        inputs.append(ctx.constant(f"{tag}_{key}", _int64(node, key, list(_need(node, key)))))
    if "axes" in node.attrs:
        inputs.append(ctx.constant(f"{tag}_axes", _int64(node, "axes", list(node.attrs["axes"]))))
    return [_with_inputs(node, inputs, _without(node.attrs, "starts", "ends", "axes"))]


@upgrade("Split", below=13)
def split_attribute_to_input(node: Node, ctx: NormalizeContext) -> list[Node]:
    inputs = list(node.inputs[:1])
    if "split" in node.attrs:
        inputs.append(ctx.constant(f"{_tag(node)}_split", _int64(node, "split", list(node.attrs["split"]))))
    return [_with_inputs(node, inputs, _without(node.attrs, "split"))]


@upgrade("Split", below=18)
def split_needs_num_outputs(node: Node, ctx: NormalizeContext) -> list[Node]:
    if len(node.inputs) > 1 and node.inputs[1]:
        return [node]
    return [node.replace(attrs={**node.attrs, "num_outputs": len(node.outputs)})]


@upgrade("Pad", below=11)
def pad_attributes_to_inputs(node: Node, ctx: NormalizeContext) -> list[Node]:
    tag = _tag(node)
    inputs = [node.inputs[0], ctx.constant(f"{tag}_pads", _int64(node, "pads", list(_need(node, "pads"))))]
    pre: list[Node] = []
    value = float(node.attrs.get("value", 0.0))
    if node.attrs.get("mode", "constant") == "constant" and value != 0.0:
        name, pre = ctx.constant_like(f"{tag}_value", np.float32(value), node.inputs[0])
        inputs.append(name)
    return pre + [_with_inputs(node, inputs, _without(node.attrs, "pads", "value"))]


@upgrade("TopK", below=10)
def topk_attribute_to_input(node: Node, ctx: NormalizeContext) -> list[Node]:
    k = ctx.constant(f"{_tag(node)}_k", _int64(node, "k", [_need(node, "k")]))
    return [_with_inputs(node, [node.inputs[0], k], _without(node.attrs, "k"))]


@upgrade("DFT", below=20)
def dft_axis_attribute_to_input(node: Node, ctx: NormalizeContext) -> list[Node]:
    axis = ctx.constant(f"{_tag(node)}_axis", _int64(node, "axis", node.attrs.get("axis", 1)))
    inputs = list(node.inputs[:2]) + [""] * (2 - len(node.inputs[:2])) + [axis]
    return [_with_inputs(node, inputs, _without(node.attrs, "axis"))]


# --------------------------------------------------------- changed semantics
@upgrade("Softmax", "LogSoftmax", "Hardmax", below=13)
def softmax_coerced_to_2d(node: Node, ctx: NormalizeContext) -> list[Node]:
    """Before 13 these flattened the input to 2-D at ``axis`` (default 1)."""
    axis = int(node.attrs.get("axis", 1))
    x = node.inputs[0]
    rank = ctx.rank_of(x)
    if rank is not None and (axis + rank if axis < 0 else axis) == rank - 1:
        return [node.replace(attrs={**node.attrs, "axis": axis})]
    tag = _tag(node)
    flat, soft, shape = ctx.fresh(f"{tag}_2d"), ctx.fresh(f"{tag}_2d_out"), ctx.fresh(f"{tag}_shape")
    return [
        Node("Flatten", (x,), (flat,), {"axis": axis}, name=f"{tag}_flatten"),
        node.replace(inputs=(flat,), outputs=(soft,), attrs={"axis": -1}),
        Node("Shape", (x,), (shape,), {}, name=f"{tag}_shape"),
        Node("Reshape", (soft, shape), node.outputs[:1], {}, name=f"{tag}_reshape"),
    ]


def _old_resize_attrs(node: Node) -> dict:
    mode = node.attrs.get("mode", "nearest")
    if isinstance(mode, bytes):
        mode = mode.decode("utf-8", "replace")
    if mode not in ("nearest", "linear", "bilinear"):
        raise ModelFormatError(f"{node.label}: mode '{mode}' is not one of nearest, linear")
    attrs = {"mode": "nearest" if mode == "nearest" else "linear", "coordinate_transformation_mode": "asymmetric"}
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    return attrs


@upgrade("Upsample")
def upsample_to_resize(node: Node, ctx: NormalizeContext) -> list[Node]:
    if ctx.version < 9:
        scales = node.attrs.get("scales")
        if scales is None:
            raise ModelFormatError(f"{node.label}: required attribute 'scales' is missing")
        scales_name = ctx.constant(f"{_tag(node)}_scales", np.array(list(scales), dtype=np.float32))
    else:
        if len(node.inputs) < 2 or not node.inputs[1]:
            raise ModelFormatError(f"{node.label}: input 'scales' is missing")
        scales_name = node.inputs[1]
    return [node.replace(op_type="Resize", inputs=(node.inputs[0], "", scales_name), attrs=_old_resize_attrs(node))]


@upgrade("Resize", below=11)
def resize_10_to_latest(node: Node, ctx: NormalizeContext) -> list[Node]:
    if len(node.inputs) < 2 or not node.inputs[1]:
        raise ModelFormatError(f"{node.label}: input 'scales' is missing")
    return [node.replace(inputs=(node.inputs[0], "", node.inputs[1]), attrs=_old_resize_attrs(node))]


@upgrade("Resize", below=13)
def resize_tf_half_pixel_for_nn(node: Node, ctx: NormalizeContext) -> list[Node]:
    """``tf_half_pixel_for_nn`` maps x to (x+0.5)/scale, which is half_pixel's x' + 0.5:
    floor(x'+0.5) is round_prefer_ceil(x') and round_prefer_floor(x'+0.5) is ceil(x')."""
    if node.attrs.get("coordinate_transformation_mode") != "tf_half_pixel_for_nn":
        return [node]
    nearest = node.attrs.get("nearest_mode", "round_prefer_floor")
    equivalent = {"floor": "round_prefer_ceil", "round_prefer_floor": "ceil"}
    if node.attrs.get("mode", "nearest") != "nearest" or nearest not in equivalent:
        raise UnsupportedOpError(
            f"{node.label}: coordinate_transformation_mode 'tf_half_pixel_for_nn' (removed in opset 13) "
            f"is supported only with mode 'nearest' and nearest_mode 'floor' or 'round_prefer_floor', "
            f"found mode '{node.attrs.get('mode', 'nearest')}', nearest_mode '{nearest}'",
            ["Resize(tf_half_pixel_for_nn)"],
        )
    attrs = {**node.attrs, "coordinate_transformation_mode": "half_pixel", "nearest_mode": equivalent[nearest]}
    return [node.replace(attrs=attrs)]


@upgrade("GridSample", below=20)
def grid_sample_mode_names(node: Node, ctx: NormalizeContext) -> list[Node]:
    renamed = {"bilinear": "linear", "bicubic": "cubic"}
    mode = node.attrs.get("mode")
    if mode in renamed:
        return [node.replace(attrs={**node.attrs, "mode": renamed[mode]})]
    return [node]


@upgrade("RoiAlign", below=16)
def roi_align_output_half_pixel(node: Node, ctx: NormalizeContext) -> list[Node]:
    # RoiAlign 10 had no coordinate_transformation_mode and behaved as output_half_pixel
    return [node.replace(attrs={**node.attrs, "coordinate_transformation_mode": "output_half_pixel"})]


@upgrade("Scatter")
def scatter_to_scatter_elements(node: Node, ctx: NormalizeContext) -> list[Node]:
    return [node.replace(op_type="ScatterElements")]


@upgrade("ImageScaler")
def image_scaler_to_mul_add(node: Node, ctx: NormalizeContext) -> list[Node]:
    """Experimental op of opsets 1-9: y = scale * x + bias[c] over NCHW input."""
    tag, x = _tag(node), node.inputs[0]
    try:
        scale = np.float32(node.attrs.get("scale", 1.0))
        bias = np.array(list(node.attrs.get("bias", [])), dtype=np.float32).reshape(-1, 1, 1)
    except (TypeError, ValueError):
        raise ModelFormatError(f"{node.label}: attributes 'scale'/'bias' must be floats") from None
    scale_name, pre = ctx.constant_like(f"{tag}_scale", scale, x)
    scaled = ctx.fresh(f"{tag}_scaled")
    nodes = pre + [Node("Mul", (x, scale_name), (scaled,), {}, name=f"{tag}_mul")]
    bias_name, more = ctx.constant_like(f"{tag}_bias", bias, x)
    return nodes + more + [Node("Add", (scaled, bias_name), node.outputs[:1], {}, name=f"{tag}_add")]


# --------------------------------------------------------- inference cleanup
@upgrade("Dropout", below=12)
def dropout_ratio_attribute(node: Node, ctx: NormalizeContext) -> list[Node]:
    # In inference Dropout is the identity whatever the ratio, so the ratio is dropped.
    return [node.replace(attrs=_without(node.attrs, "ratio", "is_test"))]


@upgrade("BatchNormalization")
def batch_norm_for_inference(node: Node, ctx: NormalizeContext) -> list[Node]:
    if node.attrs.get("spatial", 1) == 0:
        raise UnsupportedOpError(
            f"{node.label}: BatchNormalization with spatial=0 (per-activation statistics) is not supported",
            ["BatchNormalization(spatial=0)"],
        )
    drop = ["spatial", "consumed_inputs", "is_test"]
    if not node.attrs.get("training_mode", 0):
        drop.append("momentum")
    outputs = node.outputs
    if ctx.version < 14 and len(outputs) > 1:
        used = [o for o in outputs[1:] if o and ctx.is_used(o)]
        if used:
            raise UnsupportedOpError(
                f"{node.label}: training outputs {used} of BatchNormalization (opset {ctx.version}) are "
                f"read by the graph; only inference is supported",
                ["BatchNormalization(training outputs)"],
            )
        outputs = outputs[:1]
    return [node.replace(outputs=outputs, attrs=_without(node.attrs, *drop))]


# ------------------------------------------------------ the importer's context
# Ops whose output 0 has the element type of input 0 / the rank of input 0 (used only to pick
# constant dtypes and the Softmax<13 fast path; unknown is always a safe answer).
_SAME_RANK = frozenset(
    "Relu LeakyRelu PRelu Sigmoid HardSigmoid HardSwish Tanh Elu Selu Celu Softplus Softsign Gelu Mish "
    "Abs Neg Exp Log Sqrt Reciprocal Floor Ceil Round Erf Sin Cos Clip Identity Dropout Cast "
    "Conv ConvTranspose MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool "
    "BatchNormalization InstanceNormalization LayerNormalization GroupNormalization LRN "
    "LpNormalization MeanVarianceNormalization Softmax LogSoftmax Hardmax Pad Resize Upsample "
    "DepthToSpace SpaceToDepth Transpose Slice Tile Concat ImageScaler".split()
)
_SAME_DTYPE = _SAME_RANK - {"Cast"} | frozenset(
    "Add Sub Mul Div Pow Sum Mean Max Min Gemm MatMul Flatten Reshape Squeeze Unsqueeze Expand "
    "Gather GatherElements Split ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2".split()
)
_INT64_OUT = frozenset({"Shape", "Size", "ArgMax", "ArgMin", "NonZero"})
_BOOL_OUT = frozenset({"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"})


class GraphScope:
    """One graph being imported: its constants, known types and producers. Implements
    :class:`NormalizeContext`; ``fresh`` makes model-wide unique names and ``reads`` holds
    every tensor name some node or graph output reads."""

    def __init__(self, fresh: Callable[[str], str], reads: set[str], opsets: dict[str, int],
                 parent: "GraphScope | None"):
        self._fresh, self._reads = fresh, reads
        self.opsets = opsets
        self.parent = parent
        self.constants: dict[str, np.ndarray] = {}
        self.types: dict[str, ValueInfo] = {}
        self.producers: dict[str, Node] = {}
        self.version = opsets.get("", 0)
        self.current: Node | None = None
        self.node_opsets, self.node_binding = opsets, None

    def add_constant(self, name: str, value: np.ndarray, where: str) -> None:
        if not name:
            raise ModelFormatError(f"{where}: a constant (initializer or Constant output) has no name")
        if name in self.constants:
            raise ModelFormatError(f"{where}: tensor '{name}' is defined twice (initializer or Constant)")
        _dt.from_numpy(value.dtype)
        self.constants[name] = value

    # NormalizeContext
    def fresh(self, base: str) -> str:
        return self._fresh(base)

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        value = np.asarray(value)
        value.flags.writeable = False
        self.constants[name] = value
        return name

    def constant_like(self, base: str, value, like: str) -> tuple[str, list[Node]]:
        dtype = self.dtype_of(like)
        if dtype is not None and dtype not in ("string", "bfloat16"):
            return self.constant(base, np.asarray(value).astype(_dt.to_numpy(dtype))), []
        raw = self.constant(base + "_f32", np.asarray(value, dtype=np.float32))
        out = self.fresh(base)
        return out, [Node("CastLike", (raw, like), (out,), {}, name=out)]

    def is_used(self, name: str) -> bool:
        return name in self._reads

    def _walk(self, name: str, same: frozenset, known, special):
        scope: GraphScope | None = self
        bound, s = 2, self
        while s is not None:
            bound, s = bound + len(s.producers), s.parent
        for _ in range(bound):
            if scope is None:
                return None
            found = known(scope, name)
            if found is not None:
                return found
            node = scope.producers.get(name)
            if node is None:
                scope = scope.parent
                continue
            if node.domain != "" or name != node.outputs[0]:  # only output 0 follows the tables
                return None
            answer = special(node, scope)
            if answer is not None:
                return answer
            if node.op_type not in same or not node.inputs or not node.inputs[0]:
                return None
            name = node.inputs[0]
        return None

    def dtype_of(self, name: str) -> str | None:
        def known(s: GraphScope, n: str):
            if n in s.constants:
                return _dt.from_numpy(s.constants[n].dtype)
            return s.types[n].dtype if n in s.types else None

        def special(node: Node, scope: GraphScope):
            if node.op_type == "Cast":
                return node.attrs.get("to") if isinstance(node.attrs.get("to"), str) else None
            return "int64" if node.op_type in _INT64_OUT else "bool" if node.op_type in _BOOL_OUT else None

        return self._walk(name, _SAME_DTYPE, known, special)

    def rank_of(self, name: str) -> int | None:
        def known(s: GraphScope, n: str):
            if n in s.constants:
                return s.constants[n].ndim
            t = s.types.get(n)
            return None if t is None or t.shape is None else len(t.shape)

        def special(node: Node, scope: GraphScope):
            if node.op_type in ("Gemm", "Flatten"):
                return 2
            if node.op_type == "Shape":
                return 1
            if node.op_type == "Reshape" and len(node.inputs) > 1:
                shape = scope.constants.get(node.inputs[1])
                return int(shape.shape[0]) if shape is not None and shape.ndim == 1 else None
            return None

        return self._walk(name, _SAME_RANK, known, special)
