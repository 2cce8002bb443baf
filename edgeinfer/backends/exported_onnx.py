"""What the backends that run ONNX (``ort``, ``openvino``) share: the graph exported in memory,
their options checked, and their results given the IR's dtypes.

The graph goes to the runtime as serialized ``ModelProto`` bytes: no file is written. Only a
graph whose weights do not fit in one protobuf (2 GiB) is written, with its weights as external
data, to a temporary folder that is removed once the runtime has loaded it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

import numpy as np

from .. import dtypes as _dt
from ..errors import InputError
from ..graph import Graph


@contextlib.contextmanager
def exported_onnx(graph: Graph) -> Iterator[bytes | str]:
    """The graph as an ONNX model a runtime can load: serialized bytes, or for a graph over
    protobuf's 2 GiB the path of a temporary ``.onnx`` file (with its ``.data`` file), which is
    deleted when the ``with`` block ends.

    Raises:
        ExportError: the graph has ops or forms the ONNX exporter cannot write (all listed).
    """
    from ..converters import onnx_export

    weight_bytes = sum(int(c.nbytes) for g in graph.walk_graphs() for c in g.constants.values() if c.dtype != object)
    if weight_bytes <= onnx_export.EXTERNAL_DATA_THRESHOLD:
        yield onnx_export.export_onnx(graph).SerializeToString()
        return
    folder = tempfile.mkdtemp(prefix="edgeinfer-onnx-")
    try:
        path = os.path.join(folder, "model.onnx")
        onnx_export.export_onnx(graph, path)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_options(backend: str, options: dict, known: dict[str, str]) -> None:
    """InputError naming every option ``backend`` does not have (``known``: name -> what it does)."""
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        listed = "; ".join(f"'{k}': {v}" for k, v in known.items())
        names = ", ".join(map(repr, unknown))
        raise InputError(f"backend '{backend}' has no option(s) {names}; its options are {listed}")


def check_choice(backend: str, option: str, value, choices) -> None:
    """InputError unless ``value`` is one of ``choices``, naming the option and the choices."""
    if value not in choices:
        raise InputError(f"backend '{backend}' option '{option}' must be one of {list(choices)}, got {value!r}")


def as_ir_value(value, dtype: str | None):
    """A runtime's result with the IR dtype ``dtype``: runtimes may widen or narrow types (OpenVINO
    computes int64 as int32 on some devices) or hand back 16-bit floats as raw uint16."""
    if value is None or dtype is None:
        return value
    if _dt.is_optional(dtype):
        return as_ir_value(value, _dt.element_type(dtype))
    if _dt.is_sequence(dtype):
        return [as_ir_value(v, _dt.element_type(dtype)) for v in value]
    arr = np.asarray(value)
    want = _dt.to_numpy(dtype)
    if arr.dtype == want:
        return arr
    if dtype == "string":
        return arr.astype(object)
    if dtype in _dt.LOW_PRECISION and arr.dtype.kind in "ui" and arr.dtype.itemsize == want.itemsize:
        return arr.view(want)  # the raw bits of a type the runtime's numpy side does not know
    return arr.astype(want)
