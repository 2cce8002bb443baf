"""numpy kernels, one module per operator family, registered in :mod:`.registry`."""
from .registry import (  # noqa: F401
    REQUIRED,
    OpContext,
    OpSchema,
    get_schema,
    is_supported,
    kernel,
    resolve_attrs,
    shape_rule,
    supported_ops,
    writes_out,
)
