"""The start every benchmark script shares; ``import _env`` comes before numpy.

These machines may export OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which force an older, slower BLAS
kernel than users get: importing this module re-executes the script without them (same argv), so
numpy's BLAS is loaded the way it is on a user's machine. It also puts the repository root and
``tests/`` (the model and data helpers) on ``sys.path``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(k in os.environ for k in UNSET):
    os.execve(sys.executable, [sys.executable, *sys.argv], {k: v for k, v in os.environ.items() if k not in UNSET})

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (ROOT / "tests", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
