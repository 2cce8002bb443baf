"""Differential checks of one operator: edgeinfer's shape rule + numpy kernel vs ONNX Runtime.

``run_edgeinfer`` builds the node exactly as the cpu backend does (resolve attributes, run the
shape rule, build the kernel with compile-time constants) and checks that every output has the
inferred dtype and shape. ``run_ort`` runs the same node as a one-node ONNX model.
"""
from __future__ import annotations

import numpy as np

from edgeinfer import dtypes
from edgeinfer.graph import Node, TensorType
from edgeinfer.kernels import OpContext, get_schema, resolve_attrs
from edgeinfer.kernels.registry import build_kernel


def _type_of(a):
    if a is None:
        return None
    return TensorType(dtypes.from_numpy(a.dtype), tuple(a.shape))


def run_edgeinfer(op_type, inputs, attrs=None, n_outputs=1, const_inputs=(), domain="", shapes_known=True):
    """Run one node through edgeinfer. ``const_inputs``: indices whose values are known at compile time."""
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    node = Node(op_type, names, [f"out{i}" for i in range(n_outputs)], dict(attrs or {}), name="n0", domain=domain)
    schema = get_schema(op_type, domain)
    kw = resolve_attrs(schema, node)
    in_types = [_type_of(a) for a in inputs]
    if not shapes_known:
        in_types = [None if t is None else TensorType(t.dtype, tuple(None for _ in t.shape)) for t in in_types]
    values = [a if i in const_inputs else None for i, a in enumerate(inputs)]
    ctx = OpContext(node, in_types, values)
    out_types = schema.infer(ctx, **kw)
    assert len(out_types) == n_outputs, f"shape rule returned {len(out_types)} types for {n_outputs} outputs"
    ctx.outputs = list(out_types)
    fn = build_kernel(schema, ctx, kw)
    res = fn(*inputs)
    if not isinstance(res, tuple):
        res = (res,)
    assert len(res) == n_outputs
    for r, t in zip(res, out_types):
        if r is None:
            continue
        assert isinstance(r, np.ndarray), f"kernel returned {type(r).__name__}, expected ndarray"
        assert dtypes.from_numpy(r.dtype) == t.dtype, f"kernel dtype {r.dtype} != inferred {t.dtype}"
        if shapes_known and t.shape is not None:
            for d_real, d_inf in zip(r.shape, t.shape):
                if isinstance(d_inf, int):
                    assert d_real == d_inf, f"kernel shape {r.shape} != inferred {t.shape}"
            assert len(r.shape) == len(t.shape), f"kernel rank {r.shape} != inferred {t.shape}"
    if getattr(fn, "writes_out", False) and n_outputs == 1 and res[0] is not None:
        buf = np.empty_like(res[0])
        again = fn(*inputs, out=buf)
        assert again is buf
        np.testing.assert_array_equal(buf, res[0])
    return list(res)


def run_ort(op_type, inputs, attrs=None, n_outputs=1, opset=21, domain=""):
    """Run one node as a one-node ONNX model in ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, domain=domain, **(attrs or {}))
    g_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in zip(names, inputs)
        if a is not None
    ]
    g_outputs = [onnx.ValueInfoProto(name=o) for o in outs]
    graph = helper.make_graph([node], "one", g_inputs, g_outputs)
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {n: a for n, a in zip(names, inputs) if a is not None}
    return sess.run(None, feeds)


def check_node(op_type, inputs, attrs=None, n_outputs=1, const_inputs=(), rtol=1e-5, atol=1e-6, opset=21):
    """Compare edgeinfer with ONNX Runtime on one node, with constants known and unknown."""
    want = run_ort(op_type, inputs, attrs, n_outputs, opset=opset)
    for consts in {tuple(const_inputs), tuple(range(len(inputs)))}:
        got = run_edgeinfer(op_type, inputs, attrs, n_outputs, const_inputs=consts)
        for g, w in zip(got, want):
            assert g.shape == w.shape, f"{op_type}: shape {g.shape} != ORT {w.shape}"
            if g.dtype == object or w.dtype == object:
                assert g.tolist() == w.tolist()
            else:
                np.testing.assert_allclose(g.astype(np.float64) if g.dtype != bool else g, w.astype(np.float64) if w.dtype != bool else w, rtol=rtol, atol=atol, err_msg=op_type)
    return want
