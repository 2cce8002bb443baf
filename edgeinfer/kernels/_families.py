"""Imports every kernel family module so their ops register (see registry.py)."""
from . import elementwise, tensor, reduce, conv, pool, nn, resize, activations, fused  # noqa: F401
from . import activation_ops, cast, indexing, generators  # noqa: F401,E402
from . import losses, misc, attention, quant, rnn, signal, vision  # noqa: F401,E402
from . import strings, ml, ml_trees, training, control, sequence  # noqa: F401,E402
