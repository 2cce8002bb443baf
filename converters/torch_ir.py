"""IR graph -> torch module and back (the distillation part of issue 8).

A pruned or quantization-prepared student is fine-tuned on a teacher's outputs; that needs
gradients, so :func:`to_torch` turns an IR :class:`~edgeinfer.graph.Graph` into a
``torch.nn.Module`` that computes the same thing, and :func:`write_back` copies the trained
weights into a copy of the graph.

How the module is built:

* Every node is translated by one converter from ``_CONVERTERS`` (op type -> function of the
  node, its input tensors and its attributes), ONNX semantics at the latest opset; the
  converters live in :mod:`.torch_ir_ops`, this module holds the public API, the parameter
  handling and the graph walk. The graph is checked first and every node without a converter
  is reported in one UnsupportedOpError; nodes with subgraphs (If/Loop/Scan) are refused too:
  their bodies would need a traced control flow that a distillation student does not need.
* Constant float tensors in *weight ports* (``_WEIGHT_PORTS``: conv/matmul weights and
  biases, BatchNormalization scale and bias, PRelu slopes, LayerNormalization scale and bias)
  become ``nn.Parameter``; every other constant is a buffer (running mean/var, shapes,
  indices, the constants of a decomposed activation). BatchNormalization runs in inference
  form on purpose: the student keeps the teacher's folded behaviour and a batch of
  distillation images must not move the statistics.
* IR names contain '.', '/' and ':', which torch refuses in attribute names, so parameters
  and buffers get sanitized names (``p_`` / ``b_`` prefix, so they cannot hit a Module
  attribute); :meth:`GraphModule.parameter_map` gives the way back.
* Shape-computing subgraphs (Shape -> Gather -> Concat -> Reshape) run eagerly on int64
  tensors and reach shape arguments as Python ints; the module is not scriptable, which
  training does not need.

torch is the optional ``train`` extra and is imported only inside functions, so importing
this module works without it; ``GraphModule`` is resolved on first access.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgeinfer.errors import EdgeInferError, InputError, KernelError, UnsupportedOpError
from edgeinfer.graph import Graph, Node

from .torch_ir_ops import _CONVERTERS, _load_torch

if TYPE_CHECKING:  # the real class is built on first use by _module_class() (needs torch)
    from torch.nn import Module as GraphModule

TRAINABLE = ("weights", "none")

# op type -> input ports whose constant float tensors are trained
_WEIGHT_PORTS = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (1, 2),
    "MatMul": (0, 1),
    "BatchNormalization": (1, 2),
    "PRelu": (1,),
    "LayerNormalization": (1, 2),
}


# ============================================================================ the module
def _check_supported(graph: Graph) -> None:
    """Every node must have a converter: report all that do not, in one error."""
    bad = [n for n in graph.nodes
           if n.domain not in ("", "ai.onnx") or n.op_type not in _CONVERTERS or n.has_subgraphs]
    if bad:
        listed = ", ".join(n.label + (" (has subgraphs)" if n.has_subgraphs else "")
                           + (f" (domain {n.domain!r})" if n.domain not in ("", "ai.onnx") else "")
                           for n in bad[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise UnsupportedOpError(
            f"to_torch: graph '{graph.name}' has {len(bad)} node(s) without a torch translation: "
            f"{listed}{more}", sorted({n.op_type for n in bad}))


def _weight_constants(graph: Graph) -> set[str]:
    names = set()
    for n in graph.nodes:
        for port in _WEIGHT_PORTS.get(n.op_type, ()):
            if port < len(n.inputs) and n.inputs[port] in graph.constants:
                if graph.constants[n.inputs[port]].dtype.kind == "f":
                    names.add(n.inputs[port])
    return names


def _sanitize(name: str, prefix: str, taken: set[str]) -> str:
    base = prefix + re.sub(r"\W", "_", name)
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


_MODULE_CLASS = None


def _module_class():
    """GraphModule, defined on first use so that importing this module needs no torch."""
    global _MODULE_CLASS
    if _MODULE_CLASS is not None:
        return _MODULE_CLASS
    torch = _load_torch()  # the methods below close over it

    class GraphModule(torch.nn.Module):
        """A torch module computing an IR graph (see :func:`to_torch`).

        Attributes:
            graph: the graph it was built from (not mutated).
            input_names: the inputs ``forward`` takes, in order (inputs with a constant default
                are left out; ``run`` may feed them).
            output_names: the graph outputs ``forward`` returns, in order.
        """

        def __init__(self, graph: Graph, trainable: str):
            super().__init__()
            self.graph = graph
            self.input_names = [v.name for v in graph.required_inputs()]
            self.output_names = list(graph.output_names)
            weights = _weight_constants(graph) if trainable == "weights" else set()
            self._tensor_attr: dict[str, str] = {}  # IR constant -> attribute on self
            self._python_constants: dict[str, np.ndarray] = {}  # what torch cannot hold
            self._parameter_map: dict[str, str] = {}
            taken: set[str] = set()
            for name, arr in graph.constants.items():
                try:
                    # a C-ordered copy (np.ascontiguousarray would turn a 0-d array into 1-d)
                    t = torch.from_numpy(np.array(arr, order="C", copy=True))
                except (TypeError, RuntimeError):
                    self._python_constants[name] = arr
                    continue
                if name in weights:
                    attr = _sanitize(name, "p_", taken)
                    self.register_parameter(attr, torch.nn.Parameter(t))
                    self._parameter_map[attr] = name
                else:
                    attr = _sanitize(name, "b_", taken)
                    self.register_buffer(attr, t)
                self._tensor_attr[name] = attr
            self._producer = graph.producers()
            self._plans: dict[tuple, list[Node]] = {}

        def parameter_map(self) -> dict[str, str]:
            """torch parameter name -> IR constant name."""
            return dict(self._parameter_map)

        def forward(self, *inputs):
            if len(inputs) != len(self.input_names):
                raise InputError(f"GraphModule of graph '{self.graph.name}' takes {len(self.input_names)} "
                                 f"input(s) {self.input_names}, got {len(inputs)}")
            values = self._execute(dict(zip(self.input_names, inputs)), self.output_names)
            return tuple(values[n] for n in self.output_names)

        def run(self, feeds: dict, extra: Sequence[str] = ()) -> dict:
            """The graph outputs plus the intermediate tensors named in ``extra`` (feature losses).

            Raises:
                InputError: a required input is missing or an ``extra`` name is no tensor of the graph.
            """
            missing = [n for n in self.input_names if n not in feeds]
            if missing:
                raise InputError(f"GraphModule.run: graph '{self.graph.name}' needs input(s) {missing}; "
                                 f"fed {sorted(feeds)}")
            known = set(self._producer) | set(self.graph.constants) | set(self.graph.input_names)
            unknown = [n for n in extra if n not in known]
            if unknown:
                raise InputError(f"GraphModule.run: {unknown} are not tensors of graph '{self.graph.name}'")
            wanted = list(dict.fromkeys([*self.output_names, *extra]))
            values = self._execute(dict(feeds), wanted)
            return {n: values[n] for n in wanted}

        # ---------------------------------------------------------------- execution
        def _plan(self, wanted: Sequence[str]) -> list[Node]:
            """The nodes ``wanted`` depends on, in graph order (cached per target set)."""
            key = tuple(wanted)
            plan = self._plans.get(key)
            if plan is None:
                needed: set[Node] = set()
                stack = [self._producer[n] for n in wanted if n in self._producer]
                while stack:
                    node = stack.pop()
                    if node in needed:
                        continue
                    needed.add(node)
                    stack.extend(self._producer[i] for i in node.inputs if i in self._producer)
                plan = self._plans[key] = [n for n in self.graph.nodes if n in needed]
            return plan

        def _execute(self, feeds: dict, wanted: Sequence[str]) -> dict:
            values: dict[str, Any] = {name: getattr(self, attr) for name, attr in self._tensor_attr.items()}
            values.update(self._python_constants)
            for name, value in feeds.items():  # feeds may replace overridable constants
                values[name] = torch.as_tensor(value) if isinstance(value, np.ndarray) else value
            for node in self._plan(wanted):
                args = [values[i] if i else None for i in node.inputs]
                try:
                    out = _CONVERTERS[node.op_type](node, args, node.attrs)
                except EdgeInferError:
                    raise
                except Exception as e:
                    shapes = [None if a is None else tuple(getattr(a, "shape", ())) for a in args]
                    raise KernelError(f"to_torch: {node.label} failed on inputs {list(node.inputs)} of shapes "
                                      f"{shapes}: {e}") from e
                outs = out if isinstance(out, (tuple, list)) else (out,)
                for name, value in zip(node.outputs, outs):
                    if name:
                        values[name] = value
            return values

    GraphModule.__module__ = __name__
    GraphModule.__qualname__ = "GraphModule"
    _MODULE_CLASS = GraphModule
    return GraphModule


def __getattr__(name: str):
    # PEP 562: `from converters.torch_ir import GraphModule` loads torch only when asked for
    if name == "GraphModule":
        return _module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_torch(graph: Graph, *, trainable: str = "weights") -> "GraphModule":
    """A ``torch.nn.Module`` that computes ``graph`` (see the module doc).

    Args:
        graph: the IR graph; it is not changed.
        trainable: ``"weights"``: constant float conv/matmul weights and biases, BatchNorm and
            LayerNorm scale and bias and PRelu slopes are ``nn.Parameter``; ``"none"``: every
            constant is a buffer (a frozen teacher).

    Raises:
        MissingDependencyError: torch is not installed (``pip install 'edgeinfer[train]'``).
        UnsupportedOpError: naming every node without a translation (and nodes with subgraphs).
        InputError: ``trainable`` is not one of ``TRAINABLE``.
    """
    if trainable not in TRAINABLE:
        raise InputError(f"to_torch: trainable must be one of {list(TRAINABLE)}, got {trainable!r}")
    cls = _module_class()
    _check_supported(graph)
    return cls(graph, trainable)


def write_back(graph: Graph, module: "GraphModule") -> Graph:
    """A copy of ``graph`` whose constants take ``module``'s current parameter values.

    Values keep the constant's dtype (float32 for every graph our importers produce); the
    graph passed in is not changed.

    Raises:
        InputError: a parameter's IR constant is not in ``graph`` or its shape changed.
    """
    out = graph.copy()
    params = dict(module.named_parameters())
    for attr, name in module.parameter_map().items():
        if name not in graph.constants:
            raise InputError(f"write_back: parameter '{attr}' belongs to constant '{name}', which graph "
                             f"'{graph.name}' does not have")
        old = graph.constants[name]
        new = params[attr].detach().cpu().numpy()
        if tuple(new.shape) != tuple(old.shape):
            raise InputError(f"write_back: constant '{name}' (parameter '{attr}') has shape {tuple(old.shape)} "
                             f"in graph '{graph.name}' but {tuple(new.shape)} in the module")
        out.constants[name] = np.array(new, dtype=old.dtype, order="C", copy=True)
    return out


__all__ = ["to_torch", "write_back", "GraphModule", "TRAINABLE"]
