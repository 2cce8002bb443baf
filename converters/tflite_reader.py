"""Read a ``.tflite`` flatbuffer with numpy and the standard library only, verifying it first.

Nothing here imports TensorFlow, LiteRT or the ``flatbuffers`` package: the bytes are walked by
our own table reader, and every offset, index, count and size is checked before it is used,
which covers what ``flatbuffers::Verifier`` and TFLite's ``verifier.cc`` check, and more:

* flatbuffer structure: the root offset and the ``TFL3`` identifier; every table, vtable,
  vector and string inside the file and aligned as flatbuffers requires; vtable and field
  sizes; vector lengths in Python ints against the bytes left (never slicing, which clamps);
  strings NUL-terminated UTF-8; union types in range; at most :data:`MAX_TABLES` table visits
  and :data:`MAX_DEPTH` nesting, plus a decoding budget so that shared offsets cannot turn a
  small file into a long walk.
* schema: version 3; buffer, opcode, tensor, subgraph and signature indices in range; builtin
  codes in the enum and named custom ops; the operator order is a valid schedule (each input is
  a constant, a variable, a subgraph input or the output of an earlier operator; no tensor is
  written twice, nor is a constant, variable or subgraph input written); subgraph calls (WHILE,
  IF, CALL, CALL_ONCE, StableHLO bodies) form no cycle; shapes, quantization, constant sizes,
  string tables, sparse metadata and large-model (out-of-flatbuffer) data ranges are checked.

Every problem raises :class:`~edgeinfer.errors.ModelFormatError` naming the file and the
field path, e.g. ``model.tflite: subgraphs[0].operators[12].inputs[1]: tensor index 999 is
out of range (the subgraph has 87 tensors)``. Nothing in the file is executed.

Tensor types edgeinfer has no dtype for (RESOURCE, VARIANT) are reported as
``"unsupported:RESOURCE"`` / ``"unsupported:VARIANT"``; the importer decides whether the model
can still be used. Constant data of ml_dtypes types (bfloat16, int4, uint4, int2, float8) needs
the ``ml_dtypes`` package and raises MissingDependencyError without it.
"""
from __future__ import annotations

import math
import mmap as _mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeinfer.errors import MissingDependencyError, ModelFormatError

# flatbuffers::Verifier defaults (max_depth 64, max_tables 1,000,000); TFLite uses them as is.
MAX_DEPTH = 64
MAX_TABLES = 1_000_000
# Elements of any tensor and bytes of any constant: TFLite's verifier caps bytes at UINT_MAX;
# we keep int32 element counts, which every TFLite kernel indexes with.
MAX_ELEMENTS = 2**31
# numpy arrays have at most 64 dimensions; no TFLite kernel goes past 6.
MAX_RANK = 64
# A densified sparse constant may be larger than the file (that is the point of sparsity), but
# not without bound: 64x the file (a 98%-sparse model is 50x) or 16M elements, whichever is more.
SPARSE_GROWTH, SPARSE_FLOOR = 64, 1 << 24
SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"

_U8, _I8, _U16, _I32, _U32 = (struct.Struct(f) for f in ("<B", "<b", "<H", "<i", "<I"))
_I64, _U64, _F32, _F64 = (struct.Struct(f) for f in ("<q", "<Q", "<f", "<d"))

# BuiltinOperator, in enum order (0..209).
OPERATORS = tuple("""
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6
RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL
CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND
SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE
BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM
CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE
SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW
ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK
REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR
LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS
WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM
BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG
REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL
CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL
BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD
UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR
RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE STABLEHLO_MULTIPLY
STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE
STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL
STABLEHLO_REDUCE STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL
STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER
STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT STABLEHLO_SUBTRACT STABLEHLO_TANH
STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT STABLEHLO_DYNAMIC_SLICE
STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA STABLEHLO_DOT_GENERAL
STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER STABLEHLO_TRANSPOSE
DILATE STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT
STABLEHLO_CBRT STABLEHLO_CASE
""".split())
_CUSTOM = OPERATORS.index("CUSTOM")

# TensorType code -> (name, edgeinfer dtype, bits per stored element; 0 = not a numeric buffer)
_TENSOR_TYPES = (
    ("FLOAT32", "float32", 32), ("FLOAT16", "float16", 16), ("INT32", "int32", 32),
    ("UINT8", "uint8", 8), ("INT64", "int64", 64), ("STRING", "string", 0), ("BOOL", "bool", 8),
    ("INT16", "int16", 16), ("COMPLEX64", "complex64", 64), ("INT8", "int8", 8),
    ("FLOAT64", "float64", 64), ("COMPLEX128", "complex128", 128), ("UINT64", "uint64", 64),
    ("RESOURCE", "unsupported:RESOURCE", 0), ("VARIANT", "unsupported:VARIANT", 0),
    ("UINT32", "uint32", 32), ("UINT16", "uint16", 16), ("INT4", "int4", 4),
    ("BFLOAT16", "bfloat16", 16), ("INT2", "int2", 2), ("UINT4", "uint4", 4),
    ("FLOAT8_E4M3FN", "float8e4m3fn", 8), ("FLOAT8_E5M2", "float8e5m2", 8),
)
_ML_DTYPES = {"bfloat16": "bfloat16", "int4": "int4", "uint4": "uint4", "int2": "int2",
              "float8e4m3fn": "float8_e4m3fn", "float8e5m2": "float8_e5m2"}

# ------------------------------------------------------------------ builtin options tables
# Enums used by option fields: name -> (storage, value names in enum order).
_ENUMS = {
    "Padding": (_I8, ("SAME", "VALID")),
    "Act": (_I8, ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")),
    "TensorType": (_I8, tuple(t[0] for t in _TENSOR_TYPES)),
    "LSHProjectionType": (_I8, ("UNKNOWN", "SPARSE", "DENSE")),
    "WeightsFormat": (_I8, ("DEFAULT", "SHUFFLED4x16INT8")),
    "LSTMKernelType": (_I8, ("FULL", "BASIC")),
    "CombinerType": (_I8, ("SUM", "MEAN", "SQRTN")),
    "MirrorPadMode": (_I8, ("REFLECT", "SYMMETRIC")),
    "Precision": (_U32, ("DEFAULT", "HIGH", "HIGHEST")),
    "CmpDirection": (_U32, tuple(f"STABLEHLO_COMPARISON_DIRECTION_{d}" for d in ("EQ", "NE", "GE", "GT", "LE", "LT"))),
    "CmpType": (_U32, tuple(f"STABLEHLO_COMPARISON_TYPE_{t}" for t in
                            ("NOTYPE", "FLOAT", "FLOAT_TOTAL_ORDER", "SIGNED", "UNSIGNED"))),
    "RngAlgorithm": (_I8, ("DEFAULT", "PHILOX", "THREEFRY")),
    "ReduceWindowFunction": (_I32, ("UNSUPPORTED", "ADD", "MUL", "MINIMUM", "MAXIMUM", "ALL", "ANY")),
    "CustomOptionsFormat": (_I8, ("FLEXBUFFERS",)),
}
_SCALARS = {"bool": _U8, "i32": _I32, "u32": _U32, "i64": _I64, "f32": _F32}

# The BuiltinOptions union (type 1, 2, ...) then BuiltinOptions2, from schema.fbs. A line is
# ``Table: field:type[=default] ...`` in field order (a field's vtable slot is its position;
# ``-`` holds a deprecated slot). Types: bool i32 u32 i64 f32 str, an _ENUMS name, [T] vectors.
_OPTIONS_SPEC = """
Conv2DOptions: padding:Padding stride_w:i32 stride_h:i32 fused_activation_function:Act dilation_w_factor:i32=1 dilation_h_factor:i32=1 quantized_bias_type:TensorType
DepthwiseConv2DOptions: padding:Padding stride_w:i32 stride_h:i32 depth_multiplier:i32 fused_activation_function:Act dilation_w_factor:i32=1 dilation_h_factor:i32=1
ConcatEmbeddingsOptions: num_channels:i32 num_columns_per_channel:[i32] embedding_dim_per_channel:[i32]
LSHProjectionOptions: type:LSHProjectionType
Pool2DOptions: padding:Padding stride_w:i32 stride_h:i32 filter_width:i32 filter_height:i32 fused_activation_function:Act
SVDFOptions: rank:i32 fused_activation_function:Act asymmetric_quantize_inputs:bool
RNNOptions: fused_activation_function:Act asymmetric_quantize_inputs:bool
FullyConnectedOptions: fused_activation_function:Act weights_format:WeightsFormat keep_num_dims:bool asymmetric_quantize_inputs:bool quantized_bias_type:TensorType
SoftmaxOptions: beta:f32
ConcatenationOptions: axis:i32 fused_activation_function:Act
AddOptions: fused_activation_function:Act pot_scale_int16:bool=1
L2NormOptions: fused_activation_function:Act
LocalResponseNormalizationOptions: radius:i32 bias:f32 alpha:f32 beta:f32
LSTMOptions: fused_activation_function:Act cell_clip:f32 proj_clip:f32 kernel_type:LSTMKernelType asymmetric_quantize_inputs:bool
ResizeBilinearOptions: - - align_corners:bool half_pixel_centers:bool
CallOptions: subgraph:u32
ReshapeOptions: new_shape:[i32]
SkipGramOptions: ngram_size:i32 max_skip_size:i32 include_all_ngrams:bool
SpaceToDepthOptions: block_size:i32
EmbeddingLookupSparseOptions: combiner:CombinerType
MulOptions: fused_activation_function:Act
PadOptions:
GatherOptions: axis:i32 batch_dims:i32
BatchToSpaceNDOptions:
SpaceToBatchNDOptions:
TransposeOptions:
ReducerOptions: keep_dims:bool
SubOptions: fused_activation_function:Act pot_scale_int16:bool=1
DivOptions: fused_activation_function:Act
SqueezeOptions: squeeze_dims:[i32]
SequenceRNNOptions: time_major:bool fused_activation_function:Act asymmetric_quantize_inputs:bool
StridedSliceOptions: begin_mask:i32 end_mask:i32 ellipsis_mask:i32 new_axis_mask:i32 shrink_axis_mask:i32 offset:bool
ExpOptions:
TopKV2Options:
SplitOptions: num_splits:i32
LogSoftmaxOptions:
CastOptions: in_data_type:TensorType out_data_type:TensorType
DequantizeOptions:
MaximumMinimumOptions:
ArgMaxOptions: output_type:TensorType
LessOptions:
NegOptions:
PadV2Options:
GreaterOptions:
GreaterEqualOptions:
LessEqualOptions:
SelectOptions:
SliceOptions:
TransposeConvOptions: padding:Padding stride_w:i32 stride_h:i32 fused_activation_function:Act quantized_bias_type:TensorType
SparseToDenseOptions: validate_indices:bool
TileOptions:
ExpandDimsOptions:
EqualOptions:
NotEqualOptions:
ShapeOptions: out_type:TensorType
PowOptions:
ArgMinOptions: output_type:TensorType
FakeQuantOptions: min:f32 max:f32 num_bits:i32 narrow_range:bool
PackOptions: values_count:i32 axis:i32
LogicalOrOptions:
OneHotOptions: axis:i32
LogicalAndOptions:
LogicalNotOptions:
UnpackOptions: num:i32 axis:i32
FloorDivOptions:
SquareOptions:
ZerosLikeOptions:
FillOptions:
BidirectionalSequenceLSTMOptions: fused_activation_function:Act cell_clip:f32 proj_clip:f32 merge_outputs:bool time_major:bool=1 asymmetric_quantize_inputs:bool
BidirectionalSequenceRNNOptions: time_major:bool fused_activation_function:Act merge_outputs:bool asymmetric_quantize_inputs:bool
UnidirectionalSequenceLSTMOptions: fused_activation_function:Act cell_clip:f32 proj_clip:f32 time_major:bool asymmetric_quantize_inputs:bool diagonal_recurrent_tensors:bool
FloorModOptions:
RangeOptions:
ResizeNearestNeighborOptions: align_corners:bool half_pixel_centers:bool
LeakyReluOptions: alpha:f32
SquaredDifferenceOptions:
MirrorPadOptions: mode:MirrorPadMode
AbsOptions:
SplitVOptions: num_splits:i32
UniqueOptions: idx_out_type:TensorType=2
ReverseV2Options:
AddNOptions:
GatherNdOptions:
CosOptions:
WhereOptions:
RankOptions:
ReverseSequenceOptions: seq_dim:i32 batch_dim:i32
MatrixDiagOptions:
QuantizeOptions:
MatrixSetDiagOptions:
HardSwishOptions:
IfOptions: then_subgraph_index:i32 else_subgraph_index:i32
WhileOptions: cond_subgraph_index:i32 body_subgraph_index:i32
DepthToSpaceOptions: block_size:i32
NonMaxSuppressionV4Options:
NonMaxSuppressionV5Options:
ScatterNdOptions:
SelectV2Options:
DensifyOptions:
SegmentSumOptions:
BatchMatMulOptions: adj_x:bool adj_y:bool asymmetric_quantize_inputs:bool
CumsumOptions: exclusive:bool reverse:bool
CallOnceOptions: init_subgraph_index:i32
BroadcastToOptions:
Rfft2dOptions:
Conv3DOptions: padding:Padding stride_d:i32 stride_w:i32 stride_h:i32 fused_activation_function:Act dilation_d_factor:i32=1 dilation_w_factor:i32=1 dilation_h_factor:i32=1
HashtableOptions: table_id:i32 key_dtype:TensorType value_dtype:TensorType
HashtableFindOptions:
HashtableImportOptions:
HashtableSizeOptions:
VarHandleOptions: container:str shared_name:str
ReadVariableOptions:
AssignVariableOptions:
RandomOptions: seed:i64 seed2:i64
BucketizeOptions: boundaries:[f32]
GeluOptions: approximate:bool
DynamicUpdateSliceOptions:
UnsortedSegmentProdOptions:
UnsortedSegmentMaxOptions:
UnsortedSegmentMinOptions:
UnsortedSegmentSumOptions:
ATan2Options:
SignOptions:
BitcastOptions:
BitwiseXorOptions:
RightShiftOptions:
===
StablehloConcatenateOptions: dimension:i64
StablehloBroadcastInDimOptions: broadcast_dimensions:[i64]
StablehloSliceOptions: start_indices:[i64] limit_indices:[i64] strides:[i64]
StablehloConvolutionOptions: window_strides:[i64] padding:[i64] lhs_dilation:[i64] rhs_dilation:[i64] window_reversal:[bool] input_batch_dimension:i64 input_feature_dimension:i64 input_spatial_dimensions:[i64] kernel_input_feature_dimension:i64 kernel_output_feature_dimension:i64 kernel_spatial_dimensions:[i64] output_batch_dimension:i64 output_feature_dimension:i64 output_spatial_dimensions:[i64] feature_group_count:i64 batch_group_count:i64 precision_config:[Precision]
StablehloCustomCallOptions: call_target_name:str has_side_effect:bool backend_config:str api_version:i32 called_computations:[i32] custom_attributes:[u8]
StablehloReduceOptions: dimensions:[i64] body_subgraph_index:i32
StablehloScatterOptions: indices_are_sorted:bool update_window_dims:[i64] inserted_window_dims:[i64] scatter_dims_to_operand_dims:[i64] index_vector_dim:i64 unique_indices:bool update_computation_subgraph_index:i32
StablehloCompareOptions: comparison_direction:CmpDirection compare_type:CmpType
StablehloDynamicSliceOptions: slice_sizes:[i64]
StablehloPadOptions: edge_padding_low:[i64] edge_padding_high:[i64] interior_padding:[i64]
StablehloIotaOptions: iota_dimension:i64
StablehloDotGeneralOptions: lhs_batching_dimensions:[i64] rhs_batching_dimensions:[i64] lhs_contracting_dimensions:[i64] rhs_contracting_dimensions:[i64] precision_config:[Precision]
StablehloReduceWindowOptions: window_dimensions:[i64] window_strides:[i64] base_dilations:[i64] window_dilations:[i64] padding:[i64] body_subgraph_index:i32
StablehloSortOptions: dimension:i64 is_stable:bool comparator_subgraph_index:i32
StablehloWhileOptions: cond_subgraph_index:i32 body_subgraph_index:i32
StablehloGatherOptions: offset_dims:[i64] collapsed_slice_dims:[i64] start_index_map:[i64] index_vector_dim:i64 slice_sizes:[i64] indices_are_sorted:bool
StablehloTransposeOptions: permutation:[i64]
DilateOptions:
StablehloRngBitGeneratorOptions: algorithm:RngAlgorithm
ReduceWindowOptions: reduce_function:ReduceWindowFunction
StableHLOCompositeOptions: name:str decomposition_subgraph_index:i32 composite_attributes:[u8] composite_attributes_format:CustomOptionsFormat version:i32
StablehloShiftLeftOptions:
StablehloCaseOptions: branch_subgraph_indices:[i32]
"""
# Option fields that name subgraphs (checked in range; they make the subgraph call graph).
_SUBGRAPH_FIELDS = frozenset({
    "subgraph", "then_subgraph_index", "else_subgraph_index", "cond_subgraph_index",
    "body_subgraph_index", "init_subgraph_index", "update_computation_subgraph_index",
    "comparator_subgraph_index", "decomposition_subgraph_index", "branch_subgraph_indices",
    "called_computations",
})
# Options that divide or step by a value: 0 or less is a malformed model (HOSTILE_INPUTS 38).
_POSITIVE_FIELDS = {
    "Conv2DOptions": ("stride_w", "stride_h", "dilation_w_factor", "dilation_h_factor"),
    "DepthwiseConv2DOptions": ("stride_w", "stride_h", "dilation_w_factor", "dilation_h_factor"),
    "Conv3DOptions": ("stride_d", "stride_w", "stride_h", "dilation_d_factor", "dilation_w_factor",
                      "dilation_h_factor"),
    "TransposeConvOptions": ("stride_w", "stride_h"),
    "Pool2DOptions": ("stride_w", "stride_h", "filter_width", "filter_height"),
    "SpaceToDepthOptions": ("block_size",), "DepthToSpaceOptions": ("block_size",),
    "SplitOptions": ("num_splits",), "SplitVOptions": ("num_splits",),
}
# Ops whose options table is not the op's own CamelCase name + "Options".
_OPTIONS_OF = {
    "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions", "L2_POOL_2D": "Pool2DOptions",
    "L2_NORMALIZATION": "L2NormOptions", "UNIDIRECTIONAL_SEQUENCE_RNN": "SequenceRNNOptions",
    "MAXIMUM": "MaximumMinimumOptions", "MINIMUM": "MaximumMinimumOptions",
    "CONV_3D_TRANSPOSE": "Conv3DOptions", "RANDOM_STANDARD_NORMAL": "RandomOptions",
    "RANDOM_UNIFORM": "RandomOptions", "MULTINOMIAL": "RandomOptions",
    **{op: "ReducerOptions" for op in ("MEAN", "SUM", "REDUCE_PROD", "REDUCE_MAX", "REDUCE_MIN",
                                       "REDUCE_ANY", "REDUCE_ALL")},
}


@dataclass(frozen=True)
class _OptionField:
    name: str
    kind: str  # a scalar, enum or "str" name; vectors are "[kind]"
    default: Any


def _parse_options_spec(spec: str) -> tuple[list, list, dict]:
    unions: list[list] = [[None], [None]]  # type 0 is NONE in both unions
    tables: dict[str, tuple] = {}
    union = 0
    for line in spec.strip().splitlines():
        if line == "===":
            union = 1
            continue
        name, _, rest = line.partition(":")
        fields = []
        for item in rest.split():
            if item == "-":
                fields.append(None)
                continue
            fname, _, kind = item.partition(":")
            kind, _, default = kind.partition("=")
            if kind.startswith("["):
                value: Any = b"" if kind == "[u8]" else ()
            elif kind == "str":
                value = ""
            elif kind in _ENUMS:
                value = _ENUMS[kind][1][int(default or 0)]
            elif kind == "bool":
                value = bool(int(default or 0))
            else:
                value = float(default or 0) if kind == "f32" else int(default or 0)
            fields.append(_OptionField(fname, kind, value))
        tables[name] = tuple(fields)
        unions[union].append(name)
    by_key = {n.lower(): n for n in tables}
    expected = {}
    for op in OPERATORS:
        table = _OPTIONS_OF.get(op) or by_key.get(op.replace("_", "").lower() + "options")
        if table:
            expected[op] = table
    return unions[0], unions[1], {"tables": tables, "expected": expected}


_BUILTIN_OPTIONS, _BUILTIN_OPTIONS2, _SPEC = _parse_options_spec(_OPTIONS_SPEC)
_OPTION_TABLES: dict[str, tuple] = _SPEC["tables"]
OPTIONS_OF_OP: dict[str, str] = _SPEC["expected"]  # op name -> its options table name


def option_defaults(op: str) -> dict[str, Any]:
    """The options dict of ``op`` when its file gives no options table (the schema defaults)."""
    table = OPTIONS_OF_OP.get(op)
    return {f.name: f.default for f in _OPTION_TABLES.get(table, ()) if f is not None}


# ------------------------------------------------------------------------ public classes
@dataclass(frozen=True, eq=False)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point), per tensor (axis None) or per axis.

    ``details`` holds the QuantizationDetails union when present (``{"type": name, ...}``,
    e.g. BlockwiseQuantization with its scales/zero_points tensor indices); the schema says the
    other fields are then ignored.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class Tensor:
    """One tensor of a subgraph; ``data`` is the constant value (read-only) or None."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None
    data: np.ndarray | None
    quant: Quantization | None
    is_variable: bool
    was_sparse: bool


@dataclass(frozen=True, eq=False)
class Operator:
    """One operator; ``options`` are the builtin options (snake_case keys, enums by name)."""

    op: str
    custom_code: str | None
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...]
    options: dict[str, Any]
    custom_options: bytes | None


@dataclass(frozen=True, eq=False)
class SubGraph:
    name: str
    tensors: list[Tensor]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    operators: list[Operator]


@dataclass(frozen=True)
class SignatureDef:
    key: str
    subgraph_index: int
    inputs: dict[str, int]
    outputs: dict[str, int]


@dataclass(frozen=True, eq=False)
class TFLiteModel:
    version: int
    description: str
    subgraphs: list[SubGraph]
    signature_defs: list[SignatureDef]
    metadata: dict[str, bytes]
    min_runtime: str | None
    raw: Any = field(default=None, repr=False)  # the file's bytes (bytes, or the read-only mmap)


# ------------------------------------------------------------------ flatbuffer walking
class _FlatBuffer:
    """Bounds-, alignment- and budget-checked reads of one flatbuffer."""

    def __init__(self, data, source: str):
        self.data = data
        self.size = len(data)
        self.source = source
        self.tables = 0
        self.work = 0
        # Bytes of vectors and strings decoded: shared offsets may point many fields at the same
        # data; a file may be walked 8 times over (real models are walked about once).
        self.work_limit = 8 * self.size + (1 << 20)

    def error(self, path: str, message: str) -> ModelFormatError:
        return ModelFormatError(f"{self.source}: {path}: {message}")

    def charge(self, nbytes: int, path: str) -> None:
        self.work += nbytes
        if self.work > self.work_limit:
            raise self.error(path, f"the file references its data more than {self.work_limit} bytes' worth "
                             "(shared offsets used to inflate the work of reading it)")

    def read(self, st: struct.Struct, pos: int, path: str, what: str = "value") -> Any:
        if pos < 0 or pos + st.size > self.size:
            raise self.error(path, f"{what} at byte {pos} lies outside the {self.size}-byte file")
        if pos % st.size:
            raise self.error(path, f"{what} at byte {pos} is not aligned to {st.size} bytes")
        return st.unpack_from(self.data, pos)[0]

    def deref(self, pos: int, path: str) -> int:
        """Target of the uoffset stored at ``pos`` (flatbuffers: non-zero, below 2**31, inside)."""
        rel = self.read(_U32, pos, path, "offset")
        if rel == 0 or rel >= 2**31:
            raise self.error(path, f"offset {rel} at byte {pos} is invalid")
        target = pos + rel
        if target >= self.size:
            raise self.error(path, f"offset at byte {pos} points to byte {target}, past the {self.size}-byte file")
        return target

    def table(self, pos: int, path: str, depth: int) -> "_Table":
        self.tables += 1
        if self.tables > MAX_TABLES:
            raise self.error(path, f"more than {MAX_TABLES} tables")
        if depth > MAX_DEPTH:
            raise self.error(path, f"tables nested more than {MAX_DEPTH} deep")
        self.charge(8, path)  # a table takes 8 bytes or more of the file, so visits count against the budget too
        vt = pos - self.read(_I32, pos, path, "table")
        vtsize = self.read(_U16, vt, path, "vtable")
        objsize = self.read(_U16, vt + 2, path, "vtable")
        if vtsize < 4 or vtsize % 2 or vt + vtsize > self.size:
            raise self.error(path, f"vtable at byte {vt} has an invalid size {vtsize}")
        if objsize < 4 or pos + objsize > self.size:
            raise self.error(path, f"table at byte {pos} of {objsize} bytes runs past the {self.size}-byte file")
        return _Table(self, pos, vt, vtsize, objsize, path, depth)

    def vector(self, pos: int, elem: int, path: str) -> tuple[int, int]:
        """(first element position, count) of the vector at ``pos``, all of it inside the file."""
        count = self.read(_U32, pos, path, "vector length")
        if 4 + count * elem > self.size - pos:
            raise self.error(path, f"vector of {count} x {elem}-byte elements at byte {pos} runs past "
                             f"the {self.size}-byte file")
        self.charge(count * elem, path)
        return pos + 4, count

    def string(self, pos: int, path: str) -> str:
        start, count = self.vector(pos, 1, path)
        end = start + count
        if end >= self.size or self.data[end] != 0:
            raise self.error(path, f"string at byte {pos} is not NUL-terminated")
        try:
            return bytes(self.data[start:end]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(path, f"string is not valid UTF-8 ({e.reason} at byte {e.start})") from None

    def array(self, pos: int, dtype: str, path: str) -> np.ndarray:
        """A copied (so aligned) numpy array of the scalar vector at ``pos``."""
        dt = np.dtype(dtype)
        start, count = self.vector(pos, dt.itemsize, path)
        raw = np.frombuffer(self.data, np.uint8, count * dt.itemsize, start).copy()
        return raw.view(dt)


class _Table:
    __slots__ = ("fb", "pos", "vt", "vtsize", "objsize", "path", "depth")

    def __init__(self, fb: _FlatBuffer, pos: int, vt: int, vtsize: int, objsize: int, path: str, depth: int):
        self.fb, self.pos, self.vt, self.vtsize, self.objsize = fb, pos, vt, vtsize, objsize
        self.path, self.depth = path, depth

    def where(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def field(self, slot: int, size: int, name: str) -> int:
        """Absolute position of field ``slot`` (``size`` bytes inline), or 0 when absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vtsize:
            return 0
        off = _U16.unpack_from(self.fb.data, self.vt + entry)[0]
        if off == 0:
            return 0
        if off < 4 or off + size > self.objsize:
            raise self.fb.error(self.where(name), f"field offset {off} lies outside its {self.objsize}-byte table")
        return self.pos + off

    def scalar(self, slot: int, st: struct.Struct, name: str, default: Any = 0) -> Any:
        pos = self.field(slot, st.size, name)
        return self.fb.read(st, pos, self.where(name)) if pos else default

    def target(self, slot: int, name: str) -> int:
        pos = self.field(slot, 4, name)
        return self.fb.deref(pos, self.where(name)) if pos else 0

    def table(self, slot: int, name: str) -> "_Table | None":
        pos = self.target(slot, name)
        return self.fb.table(pos, self.where(name), self.depth + 1) if pos else None

    def string(self, slot: int, name: str) -> str | None:
        pos = self.target(slot, name)
        return self.fb.string(pos, self.where(name)) if pos else None

    def array(self, slot: int, dtype: str, name: str) -> np.ndarray | None:
        pos = self.target(slot, name)
        return self.fb.array(pos, dtype, self.where(name)) if pos else None

    def ints(self, slot: int, name: str) -> tuple[int, ...] | None:
        arr = self.array(slot, "<i4", name)
        return None if arr is None else tuple(arr.tolist())

    def raw_vector(self, slot: int, name: str) -> tuple[int, int] | None:
        """(start, length) of a [ubyte] field, without copying it."""
        pos = self.target(slot, name)
        return self.fb.vector(pos, 1, self.where(name)) if pos else None

    def tables(self, slot: int, name: str) -> list["_Table | None"]:
        pos = self.target(slot, name)
        if not pos:
            return []
        start, count = self.fb.vector(pos, 4, self.where(name))
        path = self.where(name)
        return [self.fb.table(self.fb.deref(start + 4 * i, f"{path}[{i}]"), f"{path}[{i}]", self.depth + 1)
                for i in range(count)]

    def union(self, type_slot: int, slot: int, name: str, members: list) -> tuple[str, "_Table | None"] | None:
        code = self.scalar(type_slot, _U8, f"{name}_type")
        if code == 0:
            return None
        if code >= len(members):
            raise self.fb.error(self.where(f"{name}_type"),
                                f"union type {code} is out of range (1..{len(members) - 1})")
        return members[code], self.table(slot, name)


# --------------------------------------------------------------------------- the reader
class _Reader:
    def __init__(self, data, source: str):
        self.fb = _FlatBuffer(data, source)
        self.source = source
        self.buffers: list[tuple[int, int, bool]] = []  # (start, length, is constant data)
        self.constants: dict[tuple, np.ndarray] = {}
        self.densified = 0  # elements of all densified sparse constants, against dense_limit
        self.dense_limit = max(SPARSE_FLOOR, SPARSE_GROWTH * self.fb.size)

    def error(self, path: str, message: str) -> ModelFormatError:
        return self.fb.error(path, message)

    # ----------------------------------------------------------------------- model
    def model(self) -> TFLiteModel:
        fb = self.fb
        if fb.size < 8:
            raise ModelFormatError(f"{self.source}: the file is {fb.size} bytes, too short for a TFLite model")
        if bytes(fb.data[4:8]) != FILE_IDENTIFIER:
            raise ModelFormatError(f"{self.source}: file identifier is {bytes(fb.data[4:8])!r}, "
                                   f"expected {FILE_IDENTIFIER!r} (not a TFLite flatbuffer)")
        root = fb.table(fb.deref(0, "root offset"), "", 1)
        version = root.scalar(0, _U32, "version")
        if version != SCHEMA_VERSION:
            raise self.error("version", f"schema version {version} is not supported (expected {SCHEMA_VERSION})")
        description = root.string(3, "description") or ""
        self.read_buffers(root.tables(4, "buffers"))
        opcodes = [self.opcode(t, f"operator_codes[{i}]") for i, t in enumerate(root.tables(1, "operator_codes"))]
        sg_tables = root.tables(2, "subgraphs")
        if not sg_tables:
            raise self.error("subgraphs", "the model has no subgraphs")
        root.array(5, "<i4", "metadata_buffer")  # deprecated; verified, not used
        metadata = self.metadata(root.tables(6, "metadata"))
        for i, t in enumerate(root.tables(8, "external_buffer_groups")):
            t.string(0, "name")
        n_external = len(root.tables(9, "external_buffers"))
        subgraphs, calls = [], []
        for i, t in enumerate(sg_tables):
            sg, called = self.subgraph(t, f"subgraphs[{i}]", opcodes, len(sg_tables), n_external)
            subgraphs.append(sg)
            calls.append(called)
        self.check_calls(calls)
        signatures = [self.signature(t, f"signature_defs[{i}]", subgraphs)
                      for i, t in enumerate(root.tables(7, "signature_defs"))]
        min_runtime = None
        if "min_runtime_version" in metadata:
            try:
                min_runtime = metadata["min_runtime_version"].split(b"\0", 1)[0].decode("ascii")
            except UnicodeDecodeError:
                raise self.error('metadata["min_runtime_version"]', "not an ASCII version string") from None
        return TFLiteModel(version, description, subgraphs, signatures, metadata, min_runtime, fb.data)

    def read_buffers(self, tables: list) -> None:
        fb = self.fb
        for i, t in enumerate(tables):
            path = f"buffers[{i}]"
            data = t.raw_vector(0, "data")
            offset, size = t.scalar(1, _U64, "offset"), t.scalar(2, _U64, "size")
            if offset > 1:  # large-model data outside the flatbuffer ("valid only if > 1")
                if data is not None and data[1]:
                    raise self.error(path, "has both inline data and an offset/size range")
                if offset > fb.size or size > fb.size - offset:
                    raise self.error(path, f"offset {offset} + size {size} runs past the {fb.size}-byte file")
                entry = (offset, size, True)
            elif data is not None:
                entry = (data[0], data[1], True)
            else:
                entry = (0, 0, False)
            if i == 0 and entry[1]:
                raise self.error(path, "buffer 0 must be the empty sentinel, but it holds data")
            self.buffers.append(entry)

    def opcode(self, t: _Table, path: str) -> tuple[str, str | None, int]:
        code = max(t.scalar(0, _I8, "deprecated_builtin_code"), t.scalar(3, _I32, "builtin_code"))
        if not 0 <= code < len(OPERATORS):
            raise self.error(path, f"builtin code {code} is not a known operator (0..{len(OPERATORS) - 1})")
        custom = t.string(1, "custom_code")
        if code == _CUSTOM and not custom:
            raise self.error(f"{path}.custom_code", "a CUSTOM operator needs a non-empty custom_code")
        return OPERATORS[code], custom if code == _CUSTOM else None, t.scalar(2, _I32, "version", 1)

    def metadata(self, tables: list) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i, t in enumerate(tables):
            path = f"metadata[{i}]"
            name = t.string(0, "name") or ""
            index = t.scalar(1, _U32, "buffer")
            if index >= len(self.buffers):
                raise self.error(f"{path}.buffer", f"buffer index {index} is out of range "
                                 f"(the model has {len(self.buffers)} buffers)")
            if name in out:
                raise self.error(f"{path}.name", f"duplicate metadata name {name!r}")
            start, length, _ = self.buffers[index]
            out[name] = bytes(self.fb.data[start:start + length])
        return out

    def signature(self, t: _Table, path: str, subgraphs: list[SubGraph]) -> SignatureDef:
        index = t.scalar(4, _U32, "subgraph_index")
        if index >= len(subgraphs):
            raise self.error(f"{path}.subgraph_index", f"subgraph {index} is out of range "
                             f"(the model has {len(subgraphs)} subgraphs)")
        n = len(subgraphs[index].tensors)
        maps = []
        for slot, kind in ((0, "inputs"), (1, "outputs")):
            names: dict[str, int] = {}
            for i, m in enumerate(t.tables(slot, kind)):
                name = m.string(0, "name") or ""
                tensor = m.scalar(1, _U32, "tensor_index")
                if tensor >= n:
                    raise self.error(f"{path}.{kind}[{i}].tensor_index", f"tensor index {tensor} is out of range "
                                     f"(subgraph {index} has {n} tensors)")
                if name in names:
                    raise self.error(f"{path}.{kind}[{i}].name", f"duplicate signature name {name!r}")
                names[name] = tensor
            maps.append(names)
        return SignatureDef(t.string(2, "signature_key") or "", index, maps[0], maps[1])

    # -------------------------------------------------------------------- subgraphs
    def subgraph(self, t: _Table, path: str, opcodes: list, n_subgraphs: int, n_external: int):
        tensors = [self.tensor(tt, f"{path}.tensors[{i}]", n_external) for i, tt in enumerate(t.tables(0, "tensors"))]
        n = len(tensors)
        ios = []
        for slot, kind in ((1, "inputs"), (2, "outputs")):
            indices = t.ints(slot, kind) or ()
            for i, x in enumerate(indices):
                if not 0 <= x < n:
                    raise self.error(f"{path}.{kind}[{i}]", f"tensor index {x} is out of range "
                                     f"(the subgraph has {n} tensors)")
            ios.append(indices)
        available = {i for i, x in enumerate(tensors) if x.data is not None or x.is_variable} | set(ios[0])
        fixed = {i: "a constant" for i, x in enumerate(tensors) if x.data is not None}
        fixed.update({i: "a variable" for i, x in enumerate(tensors) if x.is_variable and i not in fixed})
        fixed.update({i: "a subgraph input" for i in ios[0] if i not in fixed})
        written: dict[int, int] = {}
        operators, called = [], set()
        for k, ot in enumerate(t.tables(3, "operators")):
            op = self.operator(ot, f"{path}.operators[{k}]", opcodes, n, n_subgraphs, called)
            opath = f"{path}.operators[{k}]"
            for i, x in enumerate(op.inputs):
                if x != -1 and x not in available:
                    raise self.error(f"{opath}.inputs[{i}]", f"tensor {x} ({tensors[x].name!r}) is not produced: it is "
                                     "not a constant, variable or subgraph input, nor an output of an earlier operator")
            for i, x in enumerate(op.outputs):
                if x in op.inputs:
                    raise self.error(f"{opath}.outputs[{i}]", f"tensor {x} is both an input and an output of {op.op}")
                if x in fixed:
                    raise self.error(f"{opath}.outputs[{i}]", f"tensor {x} ({tensors[x].name!r}) is {fixed[x]}, "
                                     "an operator cannot write it")
                if x in written:
                    raise self.error(f"{opath}.outputs[{i}]", f"tensor {x} ({tensors[x].name!r}) is already written "
                                     f"by operator {written[x]}")
                written[x] = k
                available.add(x)
            operators.append(op)
        for i, x in enumerate(ios[1]):
            if x not in available:
                raise self.error(f"{path}.outputs[{i}]", f"tensor {x} ({tensors[x].name!r}) is never produced: it is "
                                 "not a constant, variable or subgraph input, nor an operator output")
        for i, x in enumerate(tensors):
            details = x.quant.details if x.quant else None
            for key in ("scales", "zero_points"):
                if not details or key not in details:
                    continue
                value = details[key]
                if not (0 <= value < n or (key == "zero_points" and value == -1)):
                    raise self.error(f"{path}.tensors[{i}].quantization.details.{key}",
                                     f"tensor index {value} is out of range (the subgraph has {n} tensors)")
        name = t.string(4, "name") or ""
        return SubGraph(name, tensors, ios[0], ios[1], operators), called

    def check_calls(self, calls: list[set]) -> None:
        """Reject cycles in the subgraph call graph (WHILE body calling itself, A->B->A, ...)."""
        state = [0] * len(calls)  # 0 unvisited, 1 on the stack, 2 done
        for start in range(len(calls)):
            if state[start]:
                continue
            stack = [(start, iter(sorted(calls[start])))]
            state[start] = 1
            while stack:
                node, edges = stack[-1]
                nxt = next(edges, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                elif state[nxt] == 1:
                    chain = " -> ".join(str(s) for s, _ in stack[[s for s, _ in stack].index(nxt):]) + f" -> {nxt}"
                    raise self.error(f"subgraphs[{node}]", f"subgraph calls form a cycle: {chain}")
                elif state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(sorted(calls[nxt]))))

    def operator(self, t: _Table, path: str, opcodes: list, n: int, n_subgraphs: int, called: set) -> Operator:
        index = t.scalar(0, _U32, "opcode_index")
        if index >= len(opcodes):
            raise self.error(f"{path}.opcode_index", f"opcode index {index} is out of range "
                             f"(the model has {len(opcodes)} operator codes)")
        op, custom_code, version = opcodes[index]
        lists = []
        for slot, kind in ((1, "inputs"), (2, "outputs"), (8, "intermediates")):
            indices = t.ints(slot, kind)
            if indices is None and kind != "intermediates":
                raise self.error(f"{path}.{kind}", f"{op} has no '{kind}' vector")
            indices = indices or ()
            for i, x in enumerate(indices):
                if not (0 <= x < n or (x == -1 and kind == "inputs")):
                    raise self.error(f"{path}.{kind}[{i}]", f"tensor index {x} is out of range "
                                     f"(the subgraph has {n} tensors)")
            lists.append(indices)
        t.array(7, "u1", "mutating_variable_inputs")
        options = {}
        for type_slot, slot, name, members in ((3, 4, "builtin_options", _BUILTIN_OPTIONS),
                                               (11, 12, "builtin_options_2", _BUILTIN_OPTIONS2)):
            found = t.union(type_slot, slot, name, members)
            if found is None:
                continue
            table_name, table = found
            expected = OPTIONS_OF_OP.get(op)
            if expected and expected != table_name:
                raise self.error(f"{path}.{name}_type", f"{op} carries {table_name}, expected {expected}")
            options.update(self.options(table, table_name, f"{path}.{name}", n_subgraphs, called))
        for key, value in option_defaults(op).items():
            options.setdefault(key, value)
        for key in _POSITIVE_FIELDS.get(OPTIONS_OF_OP.get(op, ""), ()):
            if options[key] <= 0:
                raise self.error(f"{path}.builtin_options.{key}", f"{op} {key} is {options[key]}, expected > 0")
        custom = None
        vec = t.raw_vector(5, "custom_options")
        big_off = t.scalar(9, _U64, "large_custom_options_offset")
        big_size = t.scalar(10, _U64, "large_custom_options_size")
        if big_off > 1:
            if big_off > self.fb.size or big_size > self.fb.size - big_off:
                raise self.error(f"{path}.large_custom_options_offset", f"offset {big_off} + size {big_size} runs "
                                 f"past the {self.fb.size}-byte file")
            vec = (big_off, big_size)
        if vec is not None:
            custom = bytes(self.fb.data[vec[0]:vec[0] + vec[1]])
        fmt = t.scalar(6, _I8, "custom_options_format")
        if fmt != 0:
            raise self.error(f"{path}.custom_options_format", f"{fmt} is not a known format (0: FLEXBUFFERS)")
        return Operator(op, custom_code, version, lists[0], lists[1], lists[2], options, custom)

    def options(self, t: _Table | None, table_name: str, path: str, n_subgraphs: int, called: set) -> dict:
        out = {}
        fields = _OPTION_TABLES[table_name]
        for slot, f in enumerate(fields):
            if f is None:
                continue
            if t is None:
                out[f.name] = f.default
                continue
            kind = f.kind
            if kind.startswith("["):
                inner = kind[1:-1]
                pos = t.target(slot, f.name)
                if not pos:
                    value: Any = f.default
                elif inner == "u8":
                    start, count = self.fb.vector(pos, 1, t.where(f.name))
                    value = bytes(self.fb.data[start:start + count])
                else:
                    st = _ENUMS[inner][0] if inner in _ENUMS else _SCALARS[inner]
                    arr = self.fb.array(pos, st.format, t.where(f.name)).tolist()
                    value = tuple(self.enum(inner, v, t.where(f.name)) for v in arr) if inner in _ENUMS else (
                        tuple(bool(v) for v in arr) if inner == "bool" else tuple(arr))
            elif kind == "str":
                value = t.string(slot, f.name) or ""
            elif kind in _ENUMS:
                raw = t.scalar(slot, _ENUMS[kind][0], f.name, None)
                value = f.default if raw is None else self.enum(kind, raw, t.where(f.name))
            else:
                value = t.scalar(slot, _SCALARS[kind], f.name, f.default)
                if kind == "bool":
                    value = bool(value)
            if f.name in _SUBGRAPH_FIELDS:
                for x in (value if isinstance(value, tuple) else (value,)):
                    if not 0 <= x < n_subgraphs:
                        raise self.error(t.where(f.name), f"subgraph index {x} is out of range "
                                         f"(the model has {n_subgraphs} subgraphs)")
                    called.add(x)
            out[f.name] = value
        return out

    def enum(self, kind: str, value: int, path: str) -> str:
        names = _ENUMS[kind][1]
        if not 0 <= value < len(names):
            raise self.error(path, f"{value} is not a valid {kind} (0..{len(names) - 1})")
        return names[value]

    # ---------------------------------------------------------------------- tensors
    def tensor(self, t: _Table, path: str, n_external: int) -> Tensor:
        code = t.scalar(1, _I8, "type")
        if not 0 <= code < len(_TENSOR_TYPES):
            raise self.error(f"{path}.type",
                             f"tensor type {code} is not a known TensorType (0..{len(_TENSOR_TYPES) - 1})")
        type_name, dtype, bits = _TENSOR_TYPES[code]
        name = t.string(3, "name") or ""
        shape = t.ints(0, "shape") or ()
        self.check_shape(shape, f"{path}.shape", signature=False)
        signature = t.ints(7, "shape_signature")
        if signature is not None:
            self.check_shape(signature, f"{path}.shape_signature", signature=True)
            if len(signature) != len(shape):
                raise self.error(f"{path}.shape_signature",
                                 f"rank {len(signature)} differs from the shape's {len(shape)}")
        t.scalar(8, _U8, "has_rank")
        for i, v in enumerate(t.tables(9, "variant_tensors")):
            v.ints(0, "shape")
        if t.scalar(10, _U32, "external_buffer"):
            raise self.error(f"{path}.external_buffer", "constant data in external files is not supported "
                             "(only data inside the .tflite file is read)")
        buffer = t.scalar(2, _U32, "buffer")
        if buffer >= len(self.buffers):
            raise self.error(f"{path}.buffer", f"buffer index {buffer} is out of range "
                             f"(the model has {len(self.buffers)} buffers)")
        sparsity = t.table(6, "sparsity")
        data = None
        start, length, is_const = self.buffers[buffer]
        if buffer and is_const:
            if bits == 0 and dtype != "string":
                raise self.error(f"{path}.type", f"a constant tensor cannot have type {type_name}")
            key = (buffer, code, shape, sparsity.pos if sparsity else 0)
            data = self.constants.get(key)
            if data is None:
                data = self.constant(path, name, dtype, bits, shape, start, length, sparsity)
                self.constants[key] = data
        elif sparsity is not None:
            raise self.error(f"{path}.sparsity", "only constant tensors can be sparse")
        quant = self.quantization(t.table(4, "quantization"), f"{path}.quantization", shape)
        return Tensor(name, dtype, shape, signature, data, quant, bool(t.scalar(5, _U8, "is_variable")),
                      sparsity is not None)

    def check_shape(self, dims: tuple, path: str, signature: bool) -> None:
        if len(dims) > MAX_RANK:
            raise self.error(path, f"rank {len(dims)} exceeds {MAX_RANK}")
        lowest = -1 if signature else 0
        count = 1
        for i, d in enumerate(dims):
            if d < lowest:
                raise self.error(f"{path}[{i}]", f"dimension {d} is negative")
            count *= max(d, 1)
        if count > MAX_ELEMENTS:
            raise self.error(path, f"{list(dims)} has {count} elements, more than {MAX_ELEMENTS}")

    def quantization(self, q: _Table | None, path: str, shape: tuple) -> Quantization | None:
        if q is None:
            return None
        lo, hi = q.array(0, "<f4", "min"), q.array(1, "<f4", "max")
        scale, zero = q.array(2, "<f4", "scale"), q.array(3, "<i8", "zero_point")
        details = None
        found = q.union(4, 5, "details", [None, "CustomQuantization", "BlockwiseQuantization", "MultiAxisQuantization"])
        if found is not None:
            kind, d = found
            details = {"type": kind}
            if d is not None and kind == "CustomQuantization":
                vec = d.raw_vector(0, "custom")
                details["custom"] = b"" if vec is None else bytes(self.fb.data[vec[0]:vec[0] + vec[1]])
            elif d is not None:
                details.update(scales=d.scalar(0, _I32, "scales"), zero_points=d.scalar(1, _I32, "zero_points"),
                               block_size=d.scalar(2, _I32, "block_size"))
                if kind == "MultiAxisQuantization":
                    details["quantized_dimensions"] = d.ints(3, "quantized_dimensions") or ()
        axis = q.scalar(6, _I32, "quantized_dimension")
        if scale is None or scale.size == 0:
            if details is None:
                return None  # TFLite reads no scale as "not quantized"
            scale = np.zeros(0, np.float32)
            zero = zero if zero is not None else np.zeros(0, np.int64)
        else:
            zero = zero if zero is not None else np.zeros(0, np.int64)
            if zero.size != scale.size:
                raise self.error(f"{path}.zero_point", f"{zero.size} zero points for {scale.size} scales; "
                                 "they must have the same length")
            if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
                bad = int(np.flatnonzero(~(np.isfinite(scale) & (scale > 0)))[0])
                raise self.error(f"{path}.scale[{bad}]", f"scale {float(scale[bad])} is not finite and positive")
        if axis < 0 or axis >= max(len(shape), 1):
            raise self.error(f"{path}.quantized_dimension", f"{axis} is out of range for rank {len(shape)}")
        if scale.size > 1 and scale.size != shape[axis]:
            raise self.error(f"{path}.scale", f"{scale.size} scales, expected 1 or shape[{axis}] = {shape[axis]}")
        for arr in (scale, zero, lo, hi):
            if arr is not None:
                arr.flags.writeable = False
        return Quantization(scale, zero, axis if scale.size > 1 else None, lo, hi, details)

    # -------------------------------------------------------------------- constants
    def constant(self, path: str, name: str, dtype: str, bits: int, shape: tuple, start: int, length: int,
                 sparsity: _Table | None) -> np.ndarray:
        count = math.prod(shape)
        where = f"{path} ({name!r})"
        if dtype == "string":
            if sparsity is not None:
                raise self.error(f"{path}.sparsity", "string tensors cannot be sparse")
            return self.strings(where, shape, count, start, length)
        if sparsity is not None:
            stored, dense_index = self.sparse(sparsity, f"{path}.sparsity", shape, count)
        else:
            stored, dense_index = count, None
        need = (stored * bits + 7) // 8
        if need != length:
            raise self.error(where, f"{dtype} tensor of {stored} stored elements requires {need} bytes, "
                             f"but its buffer has {length}")
        self.fb.charge(length if (bits < 8 or dtype == "bool" or dense_index is not None) else 0, path)
        raw = np.frombuffer(self.fb.data, np.uint8, length, start)
        values = self.decode(where, dtype, bits, raw, stored)
        if dense_index is not None:
            try:
                dense = np.zeros(count, values.dtype)
            except MemoryError:
                raise self.error(where, f"cannot allocate the dense {list(shape)} tensor") from None
            dense[dense_index] = values
            values = dense
        values = values.reshape(shape)
        values.flags.writeable = False
        return values

    def decode(self, where: str, dtype: str, bits: int, raw: np.ndarray, count: int) -> np.ndarray:
        """Stored bytes -> a 1-D array of ``count`` values (a view when aligned, else a copy)."""
        if dtype in _ML_DTYPES:
            try:
                import ml_dtypes
            except ImportError:
                raise MissingDependencyError("ml_dtypes", "onnx", f"reading {where} of type {dtype}") from None
            np_dtype = np.dtype(getattr(ml_dtypes, _ML_DTYPES[dtype]))
            if bits < 8:  # packed, low bits first (TFLite's UnpackDenseInt4IntoInt8)
                shifts = np.arange(0, 8, bits, dtype=np.uint8)
                vals = ((raw[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)[:count]
                if dtype.startswith("int"):  # sign-extend: move the value to the top bits and back
                    vals = (vals << np.uint8(8 - bits)).view(np.int8) >> np.int8(8 - bits)
                return vals.view(np_dtype)
            return _aligned(raw, np_dtype.itemsize).view(np_dtype)  # little-endian hosts only
        if dtype == "bool":
            if raw.size and int(raw.max()) > 1:
                bad = int(np.flatnonzero(raw > 1)[0])
                raise self.error(where, f"bool element {bad} is byte {int(raw[bad])}, expected 0 or 1")
            return raw.view(np.bool_)
        return _aligned(raw, np.dtype(dtype).itemsize).view(np.dtype(dtype).newbyteorder("<"))

    def strings(self, where: str, shape: tuple, count: int, start: int, length: int) -> np.ndarray:
        """TFLite string buffer: int32 N, N+1 int32 offsets (from the buffer start), the bytes."""
        if length < 4:
            raise self.error(where, f"string buffer of {length} bytes has no count")
        raw = np.frombuffer(self.fb.data, np.uint8, length, start)
        n = int(raw[:4].copy().view("<i4")[0])
        if n != count:
            raise self.error(where, f"string buffer holds {n} strings, but shape {list(shape)} needs {count}")
        header = 4 * (n + 2)
        if header > length:
            raise self.error(where, f"{n} strings need a {header}-byte offset table, but the buffer has {length} bytes")
        self.fb.charge(length, where)
        offsets = raw[4:header].copy().view("<i4").astype(np.int64)
        if offsets[0] != header or offsets[-1] != length or np.any(np.diff(offsets) < 0):
            raise self.error(where, f"string offsets must rise from {header} to the buffer size {length}")
        body = raw.tobytes()
        arr = np.empty(n, dtype=object)
        arr[:] = [body[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
        arr = arr.reshape(shape)
        arr.flags.writeable = False
        return arr

    def sparse(self, sp: _Table, path: str, shape: tuple, count: int) -> tuple[int, np.ndarray]:
        """Verify sparsity metadata like TFLite's VerifyAndCountSparseElements; return (stored
        element count, flat dense index of each stored element)."""
        order = sp.ints(0, "traversal_order")
        metas = sp.tables(2, "dim_metadata")
        block_map = sp.ints(1, "block_map") or ()
        rank = len(shape)
        if order is None or not metas:
            raise self.error(path, "traversal_order and dim_metadata are required")
        total = len(order)
        if total < rank or len(metas) != total or len(block_map) != total - rank:
            raise self.error(path, f"traversal_order has {total} dims, dim_metadata {len(metas)} and block_map "
                             f"{len(block_map)} for a rank-{rank} tensor")
        if sorted(order[:rank]) != list(range(rank)) or sorted(order[rank:]) != list(range(rank, total)):
            raise self.error(f"{path}.traversal_order",
                             f"{list(order)} is not a permutation of the dims then the block dims")
        if sorted(block_map) != sorted(set(block_map)) or any(not 0 <= b < rank for b in block_map):
            raise self.error(f"{path}.block_map",
                             f"{list(block_map)} must name distinct dims of the rank-{rank} tensor")
        self.densified += count
        if self.densified > self.dense_limit:
            raise self.error(path, f"densifying {list(shape)} ({count} elements) takes the model's sparse "
                             f"constants past the limit of {self.dense_limit} dense elements")
        sizes = list(shape) + [0] * (total - rank)
        block = [1] * rank
        for j, b in enumerate(block_map):
            level = order.index(rank + j)
            m = metas[level]
            bsize = m.scalar(1, _I32, "dense_size")
            if m.scalar(0, _I8, "format") != 0 or bsize <= 0 or shape[b] % bsize:
                raise self.error(f"{path}.dim_metadata[{level}]", f"block dim {rank + j} must be DENSE with a "
                                 f"size > 0 dividing shape[{b}] = {shape[b]}")
            sizes[rank + j], block[b] = bsize, bsize
            sizes[b] = shape[b] // bsize
        strides = [1] * rank
        for i in range(rank - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        weight = [strides[i] * block[i] for i in range(rank)] + [strides[b] for b in block_map]
        flat = np.zeros(1, np.int64)  # dense offset of each node at the current level
        for level, dim in enumerate(order):
            m, mpath = metas[level], f"{path}.dim_metadata[{level}]"
            fmt = m.scalar(0, _I8, "format")
            if fmt == 0:
                size = m.scalar(1, _I32, "dense_size")
                if size != sizes[dim]:
                    raise self.error(f"{mpath}.dense_size", f"{size}, expected {sizes[dim]}")
                flat = (flat[:, None] + np.arange(size, dtype=np.int64) * weight[dim]).reshape(-1)
            elif fmt == 1:
                segments = self.index_vector(m, 2, 3, "array_segments", mpath)
                indices = self.index_vector(m, 4, 5, "array_indices", mpath)
                if segments.size != flat.size + 1 or segments[0] != 0 or np.any(np.diff(segments) < 0):
                    raise self.error(f"{mpath}.array_segments", f"expected {flat.size + 1} non-decreasing "
                                     "segment starts from 0")
                if int(segments[-1]) != indices.size:
                    raise self.error(f"{mpath}.array_indices", f"{indices.size} indices, but the segments end at "
                                     f"{int(segments[-1])}")
                if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= sizes[dim]):
                    raise self.error(f"{mpath}.array_indices", f"indices must lie in [0, {sizes[dim]})")
                flat = np.repeat(flat, np.diff(segments)) + indices * weight[dim]
            else:
                raise self.error(f"{mpath}.format", f"{fmt} is not a DimensionType (0 DENSE, 1 SPARSE_CSR)")
        return int(flat.size), flat

    def index_vector(self, m: _Table, type_slot: int, slot: int, name: str, path: str) -> np.ndarray:
        found = m.union(type_slot, slot, name, [None, "<i4", "<u2", "u1"])
        if found is None or found[1] is None:
            raise self.error(f"{path}.{name}", "a SPARSE_CSR dimension needs this vector")
        arr = found[1].array(0, found[0], "values")
        if arr is None:
            raise self.error(f"{path}.{name}.values", "missing")
        return arr.astype(np.int64)


def _aligned(raw: np.ndarray, itemsize: int = 1) -> np.ndarray:
    """``raw`` itself when its address suits ``itemsize``-byte elements, else an aligned copy."""
    if itemsize > 1 and raw.ctypes.data % itemsize:
        return raw.copy()
    return raw


# ---------------------------------------------------------------------------- reading files
def read_tflite(source: str | os.PathLike | bytes | bytearray | memoryview, *, name: str | None = None,
                mmap: bool = True) -> TFLiteModel:
    """Read and verify a ``.tflite`` model.

    Args:
        source: a path, or the model's bytes (bytearray and memoryview are copied once).
        name: what error messages call the model (default: the path, or ``"<bytes>"``).
        mmap: map a file read-only instead of reading it; constant tensors are then zero-copy,
            read-only views of the mapping. The mapping is only safe while the file stays as it
            is (truncating it while mapped raises SIGBUS); use ``mmap=False`` on network or
            removable filesystems.

    Returns:
        The verified model. Constant tensors are read-only numpy arrays (string tensors are
        object arrays of ``bytes``; sparse constants are densified; int4/int2 are unpacked).

    Raises:
        ModelFormatError: the file cannot be read, or is malformed; the message names the file
            and the field path.
        MissingDependencyError: a constant of a bfloat16/int4/float8 type needs ``ml_dtypes``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source if isinstance(source, bytes) else bytes(source)
        return _Reader(data, name or "<bytes>").model()
    path = os.fspath(source)
    label = name or path
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO must not hang
    except OSError as e:
        raise ModelFormatError(f"{label}: cannot open the model file: {e.strerror or e}") from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelFormatError(f"{label}: not a regular file (devices, FIFOs and folders are refused)")
        if info.st_size < 8:  # also: mmap cannot map an empty file
            raise ModelFormatError(f"{label}: the file is {info.st_size} bytes, too short for a TFLite model")
        if mmap:
            data = _mmap.mmap(fd, 0, access=_mmap.ACCESS_READ)
        else:
            with open(fd, "rb", buffering=0, closefd=False) as f:
                data = f.read(info.st_size + 1)
            if len(data) != info.st_size:
                raise ModelFormatError(f"{label}: the file changed size while being read")
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"{label}: cannot read the model file: {e}") from e
    finally:
        os.close(fd)
    return _Reader(data, label).model()


# ----------------------------------------------------------------------------- flexbuffers
_FLEX_MAX_DEPTH = 64  # as the flatbuffer depth limit; real custom options nest 1-2 levels


class _Flex:
    """A bounds-checked flexbuffers reader (the format of TFLite custom options)."""

    def __init__(self, data: bytes, where: str):
        self.data, self.where = data, where
        self.budget = 16 * len(data) + 1024  # element visits; shared offsets cannot inflate past it

    def error(self, message: str) -> ModelFormatError:
        return ModelFormatError(f"{self.where}: {message}")

    def read_uint(self, pos: int, width: int) -> int:
        if width not in (1, 2, 4, 8):
            raise self.error(f"invalid byte width {width}")
        if pos < 0 or pos + width > len(self.data):
            raise self.error(f"{width}-byte value at byte {pos} lies outside the {len(self.data)} bytes")
        return int.from_bytes(self.data[pos:pos + width], "little")

    def read_int(self, pos: int, width: int) -> int:
        v = self.read_uint(pos, width)
        return v - (1 << (8 * width)) if v >> (8 * width - 1) else v

    def read_float(self, pos: int, width: int) -> float:
        if width not in (4, 8):
            raise self.error(f"a float of {width} bytes at byte {pos}")
        self.read_uint(pos, width)  # bounds
        return (_F32 if width == 4 else _F64).unpack_from(self.data, pos)[0]

    def indirect(self, pos: int, width: int) -> int:
        target = pos - self.read_uint(pos, width)
        if not 0 <= target <= pos:  # offsets point backwards (0 for an empty vector right after its size)
            raise self.error(f"offset at byte {pos} points to byte {target}")
        return target

    def sized(self, target: int, width: int, elem: int, extra_per: int = 0) -> int:
        size = self.read_uint(target - width, width)
        if target + size * (elem + extra_per) > len(self.data):
            raise self.error(f"a {size}-element vector at byte {target} runs past the end")
        self.budget -= size + 1
        if self.budget < 0:
            raise self.error("too many elements (shared offsets used to inflate the data)")
        return size

    def text(self, start: int, end: int, as_key: bool) -> str | bytes:
        raw = self.data[start:end]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if as_key:
                raise self.error(f"map key at byte {start} is not valid UTF-8") from None
            return raw  # e.g. a serialized NodeDef of a Flex op

    def key(self, target: int) -> str:
        end = self.data.find(b"\0", target)
        if end < 0:
            raise self.error(f"key at byte {target} is not NUL-terminated")
        return self.text(target, end, True)

    def value(self, pos: int, parent_width: int, packed: int, depth: int) -> Any:
        if depth > _FLEX_MAX_DEPTH:
            raise self.error(f"nested more than {_FLEX_MAX_DEPTH} levels deep")
        kind, width = packed >> 2, 1 << (packed & 3)
        if kind == 0:
            return None
        if kind == 1:
            return self.read_int(pos, parent_width)
        if kind == 2:
            return self.read_uint(pos, parent_width)
        if kind == 3:
            return self.read_float(pos, parent_width)
        if kind == 26:
            return self.read_uint(pos, parent_width) != 0
        target = self.indirect(pos, parent_width)
        if kind == 4:
            return self.key(target)
        if kind in (5, 25):  # string (NUL-terminated), blob
            size = self.sized(target, width, 1, 0)
            if kind == 25:
                return self.data[target:target + size]
            if target + size >= len(self.data) or self.data[target + size] != 0:
                raise self.error(f"string at byte {target} is not NUL-terminated")
            return self.text(target, target + size, False)
        if kind in (6, 7, 8):
            return (self.read_int, self.read_uint, self.read_float)[kind - 6](target, width)
        if kind == 9:
            return self.map(target, width, depth)
        if kind == 10:
            size = self.sized(target, width, width, 1)
            types = self.data[target + size * width:target + size * width + size]
            return [self.value(target + i * width, width, types[i], depth + 1) for i in range(size)]
        if kind in (11, 12, 13, 14, 15, 36):  # typed vectors
            elem = {11: 1, 12: 2, 13: 3, 14: 4, 15: 5, 36: 26}[kind]
            size = self.sized(target, width, width)
            return [self.value(target + i * width, width, (elem << 2) | (packed & 3), depth + 1) for i in range(size)]
        if 16 <= kind <= 24:  # fixed-length typed vectors of 2, 3 or 4 numbers
            size, elem = (kind - 16) // 3 + 2, (kind - 16) % 3 + 1
            if target + size * width > len(self.data):
                raise self.error(f"vector at byte {target} runs past the end")
            return [self.value(target + i * width, width, (elem << 2) | (packed & 3), depth + 1) for i in range(size)]
        raise self.error(f"unknown value type {kind} at byte {pos}")

    def map(self, target: int, width: int, depth: int) -> dict:
        size = self.sized(target, width, width, 1)
        keys_at = target - 3 * width
        keys = self.indirect(keys_at, width)
        key_width = self.read_uint(target - 2 * width, width)
        if key_width not in (1, 2, 4, 8):
            raise self.error(f"map at byte {target} has key width {key_width}")
        if self.sized(keys, key_width, key_width) != size:
            raise self.error(f"map at byte {target} has a different number of keys and values")
        types = self.data[target + size * width:target + size * width + size]
        out: dict = {}
        for i in range(size):
            k = self.key(self.indirect(keys + i * key_width, key_width))
            if k in out:
                raise self.error(f"duplicate map key {k!r}")
            out[k] = self.value(target + i * width, width, types[i], depth + 1)
        return out


def decode_flexbuffer(data: bytes | bytearray | memoryview, *, where: str = "flexbuffer") -> Any:
    """Decode flexbuffer bytes (TFLite custom options) into Python values, checking every read.

    Maps become dicts (str keys), vectors lists, blobs bytes, strings str (bytes when they are
    not UTF-8, as in Flex ops' serialized NodeDefs), numbers int/float/bool.

    Raises:
        ModelFormatError: the bytes are not a well-formed flexbuffer; ``where`` starts the message.
    """
    buf = bytes(data)
    if len(buf) < 3:
        raise ModelFormatError(f"{where}: {len(buf)} bytes is too short for a flexbuffer")
    width, packed = buf[-1], buf[-2]
    if width not in (1, 2, 4, 8) or len(buf) < width + 2:
        raise ModelFormatError(f"{where}: invalid root byte width {width}")
    return _Flex(buf, where).value(len(buf) - 2 - width, width, packed, 0)


__all__ = [
    "read_tflite", "decode_flexbuffer", "option_defaults", "TFLiteModel", "SubGraph", "Tensor",
    "Quantization", "Operator", "SignatureDef", "OPERATORS", "OPTIONS_OF_OP",
]
