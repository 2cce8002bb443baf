"""``load`` and ``save``: models in and out of the IR, format chosen by suffix."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import EdgeInferError, ModelFormatError
from .graph import Graph

SUFFIXES = {".onnx": "onnx", ".eim": "eim", ".tflite": "tflite"}
_EIM_MAGIC = b"EIM"


def _format_of(path: Path, sniff: bool) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    if sniff:
        with open(path, "rb") as f:
            head = f.read(8)
        if head.startswith(_EIM_MAGIC):
            return "eim"
        if head[4:8] == b"TFL3":
            return "tflite"
        return "onnx"
    raise EdgeInferError(
        f"cannot tell the format of '{path}' from its suffix '{path.suffix}'; supported: {', '.join(SUFFIXES)}"
    )


def load(model: Any, *, check_supported: bool = True) -> Graph:
    """Load a model into the IR.

    Args:
        model: a path to a ``.onnx``, ``.tflite`` or ``.eim`` file (other suffixes are sniffed), an
            ``onnx.ModelProto``, or a :class:`Graph` (returned as is).
        check_supported: refuse ONNX models with ops edgeinfer has no kernel for (all listed
            in one error). ``False`` imports them anyway, e.g. to inspect or convert them.

    Raises:
        ModelFormatError: the file is missing or malformed (the message names the field).
        UnsupportedOpError: the model uses operators edgeinfer lacks (all are listed).
    """
    if isinstance(model, Graph):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelFormatError(f"model file '{path}' does not exist")
        if not path.is_file():
            raise ModelFormatError(f"model path '{path}' is not a regular file")
        fmt = _format_of(path, sniff=True)
        if fmt == "eim":
            from .format import load_eim

            return load_eim(path)
        if fmt == "tflite":
            from .converters.tflite_import import import_tflite

            return import_tflite(path, check_supported=check_supported)
        from .converters.onnx_import import import_onnx

        return import_onnx(path, check_supported=check_supported)
    if type(model).__name__ == "ModelProto":
        from .converters.onnx_import import import_onnx

        return import_onnx(model, check_supported=check_supported)
    raise EdgeInferError(f"cannot load a {type(model).__name__}; pass a path, an onnx.ModelProto or a Graph")


def save(graph: Graph, path: str | os.PathLike) -> Path:
    """Save a graph; the format follows the suffix (``.eim``, ``.onnx``, ``.tflite``). Writes atomically."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise EdgeInferError(
            f"cannot save as '{path.name}': unknown suffix '{path.suffix}'; supported: {', '.join(SUFFIXES)}"
        )
    if fmt == "eim":
        from .format import save_eim

        save_eim(graph, path)
    elif fmt == "tflite":
        from .converters.tflite_export import export_tflite

        export_tflite(graph, path)
    else:
        from .converters.onnx_export import export_onnx

        export_onnx(graph, path)
    return path
