"""The edgeinfer error hierarchy.

Every failure caused by a user's input (a malformed file, a graph that does not validate, an
operator we do not implement, a feed of the wrong shape, a missing optional package) raises a
subclass of :class:`EdgeInferError`, with a message that names the file, node or tensor and
says what was expected and what was found. Callers can catch the one base class.
"""
from __future__ import annotations


class EdgeInferError(Exception):
    """Base class of every error edgeinfer raises on purpose."""


class ModelFormatError(EdgeInferError):
    """A model file (or an in-memory model) is malformed: bad bytes, bad fields, bad sizes."""


class UnsafePathError(ModelFormatError):
    """A model refers to data outside its own folder (absolute path, ``..``, symlink, device)."""


class GraphError(ModelFormatError):
    """The IR graph is inconsistent: undefined names, cycles, bad attributes, bad types."""


class ShapeInferenceError(GraphError):
    """Shapes or dtypes of a node's inputs do not fit the operator."""


class UnsupportedOpError(EdgeInferError):
    """The model uses operators edgeinfer does not implement; ``ops`` lists all of them."""

    def __init__(self, message: str, ops: list[str] | None = None):
        super().__init__(message)
        self.ops = list(ops or [])


class InputError(EdgeInferError):
    """Feeds passed to ``Session.run`` do not match the model's inputs (name, dtype, shape)."""


class KernelError(EdgeInferError):
    """A kernel failed while running a node; the message names the node and its op."""


class BackendUnavailableError(EdgeInferError):
    """The requested backend is unknown or cannot run here (package missing, no device)."""


class ExportError(EdgeInferError):
    """A graph cannot be written in the requested format."""


class MissingDependencyError(EdgeInferError, ImportError):
    """An optional package needed for this feature is not installed; names the extra."""

    def __init__(self, package: str, extra: str, feature: str):
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'edgeinfer[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, feature: str):
    """Import an optional module or raise MissingDependencyError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(module.split(".")[0], extra, feature) from e


__all__ = [
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
    "require",
]
