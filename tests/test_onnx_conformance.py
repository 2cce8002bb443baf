"""The ONNX node conformance suite (shipped inside the onnx package) on the cpu backend.

Every case runs; the ones edgeinfer does not pass yet are listed in :data:`EXCLUDED` under
the reason and marked ``xfail(strict=True)``, so a case that starts passing must be moved out
of the list. The pass count is printed at the end of the run (see ``conftest.py``).
"""
from __future__ import annotations

import pytest

pytest.importorskip("onnx")

from conformance import all_cases, run_case  # noqa: E402

# reason -> names of the cases it covers
EXCLUDED: dict[str, list[str]] = {}

_REASON = {name: reason for reason, names in EXCLUDED.items() for name in names}
RESULTS: dict[str, bool] = {}


def _params():
    for name in all_cases():
        marks = []
        if name in _REASON:
            marks.append(pytest.mark.xfail(strict=True, reason=_REASON[name]))
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_onnx_node(name):
    RESULTS[name] = False
    err = run_case(all_cases()[name])
    assert err is None, err
    RESULTS[name] = True


def test_exclusions_name_real_cases():
    unknown = sorted(set(_REASON) - set(all_cases()))
    assert not unknown, f"EXCLUDED names cases the onnx package does not have: {unknown[:5]}"
