"""edgeinfer: take a trained network to a phone, a camera or a board.

``import edgeinfer`` needs numpy only; converters and other backends load their optional
packages when used.

    >>> import edgeinfer
    >>> sess = edgeinfer.Session("model.onnx")          # numpy cpu backend
    >>> outputs = sess.run({"image": x})
    >>> edgeinfer.save(sess.graph, "model.eim")           # one-file format, mmap-loaded
"""
from .api import load, save
from .errors import (
    BackendUnavailableError,
    EdgeInferError,
    ExportError,
    GraphError,
    InputError,
    KernelError,
    MissingDependencyError,
    ModelFormatError,
    ShapeInferenceError,
    UnsafePathError,
    UnsupportedOpError,
)
from .graph import Graph, Node, TensorType, ValueInfo
from .session import Session

__version__ = "0.1.0"

__all__ = [
    "load",
    "save",
    "Session",
    "Graph",
    "Node",
    "ValueInfo",
    "TensorType",
    "EdgeInferError",
    "ModelFormatError",
    "UnsafePathError",
    "GraphError",
    "ShapeInferenceError",
    "UnsupportedOpError",
    "InputError",
    "KernelError",
    "BackendUnavailableError",
    "ExportError",
    "MissingDependencyError",
    "__version__",
]
