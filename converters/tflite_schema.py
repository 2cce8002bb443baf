"""The TFLite schema as compact tables: operator and tensor type enums, the builtin options.

:data:`OPERATORS` is the BuiltinOperator enum, ``_TENSOR_TYPES`` the TensorType enum with the
edgeinfer dtype of each; ``_OPTIONS_SPEC`` lists every table of the BuiltinOptions and
BuiltinOptions2 unions (field names, kinds and schema defaults), parsed once into
``_OPTION_TABLES`` and :data:`OPTIONS_OF_OP`; :func:`option_defaults` gives the defaults of an
op's options. :mod:`.tflite_reader` decodes and verifies option tables with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .flatbuffer_walker import _F32, _I8, _I32, _I64, _U8, _U32

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
