"""Backends, found by name and imported lazily.

A backend is one module exposing::

    NAME: str
    available() -> tuple[bool, str]           # and why not
    unsupported(graph) -> list[str]           # op types it cannot run
    compile(graph, input_shapes, threads, options) -> Executable

and ``Executable.run(feeds) -> dict[str, ndarray]`` returning every graph output. The Session
validates feeds before a backend sees them, so backends may assume names, dtypes and shapes
are right. Optional packages (onnxruntime, openvino, ...) are imported only inside the module
that needs them, so ``import edgeinfer`` stays numpy-only.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import BackendUnavailableError

# name -> module path; modules are imported on first use
_REGISTRY: dict[str, str] = {
    "cpu": "edgeinfer.backends.cpu",
    "litert": "edgeinfer.backends.litert",
    "ort": "edgeinfer.backends.ort",
    "openvino": "edgeinfer.backends.openvino",
    "gpu": "edgeinfer.backends.gpu",
    "auto": "edgeinfer.backends.auto",
}


def register_backend(name: str, module: str) -> None:
    """Register a backend module under ``name`` (used by plugins and tests)."""
    _REGISTRY[name] = module


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> ModuleType:
    """The backend module for ``name``; BackendUnavailableError if unknown or unusable here."""
    if name not in _REGISTRY:
        raise BackendUnavailableError(f"unknown backend '{name}'; known backends: {', '.join(_REGISTRY)}")
    module = importlib.import_module(_REGISTRY[name])
    ok, why = module.available()
    if not ok:
        raise BackendUnavailableError(f"backend '{name}' is not available: {why}")
    return module


def available_backends() -> dict[str, tuple[bool, str]]:
    """Every registered backend with (available, reason or version)."""
    out: dict[str, tuple[bool, str]] = {}
    for name, path in _REGISTRY.items():
        try:
            out[name] = importlib.import_module(path).available()
        except Exception as e:  # a broken optional install must not break listing
            out[name] = (False, f"{type(e).__name__}: {e}")
    return out
