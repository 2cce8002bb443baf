"""Run the ONNX node conformance cases (``onnx.backend.test.case.node``) through edgeinfer.

The cases are built in memory by the ``onnx`` package: a model, one or more input sets and
the expected outputs with the case's rtol/atol. :func:`run_case` returns ``None`` on success
or a one-line reason; ``python tests/conformance.py [-k SUBSTR]`` prints a tally by outcome.
"""
from __future__ import annotations

import functools
import sys
import warnings

import numpy as np


@functools.lru_cache(maxsize=1)
def all_cases() -> dict:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        with np.errstate(all="ignore"):
            return {c.name: c for c in collect_testcases(None)}


def to_value(x):
    """A data-set entry (ndarray, numpy scalar, TensorProto, list, None) as an edgeinfer value."""
    import onnx
    from onnx import numpy_helper

    if x is None:
        return None
    if isinstance(x, list):
        return [to_value(e) for e in x]
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, onnx.SequenceProto):
        return [to_value(e) for e in numpy_helper.to_list(x)]
    if isinstance(x, onnx.OptionalProto):
        return to_value(numpy_helper.to_optional(x))
    return np.asarray(x)


def compare(expected, got, rtol: float, atol: float, where: str = "output") -> str | None:
    """``None`` when ``got`` matches ``expected``, else what differs."""
    if isinstance(expected, list):
        if not isinstance(got, list):
            return f"{where}: expected a sequence, got {type(got).__name__}"
        if len(expected) != len(got):
            return f"{where}: expected {len(expected)} sequence items, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            err = compare(e, g, rtol, atol, f"{where}[{i}]")
            if err:
                return err
        return None
    if expected is None:
        return None if got is None else f"{where}: expected an empty optional, got {type(got).__name__}"
    if got is None or isinstance(got, list):
        return f"{where}: expected a tensor, got {type(got).__name__}"
    got = np.asarray(got)
    if expected.dtype != got.dtype:
        # onnx writes some string outputs as fixed-width numpy strings
        if not (expected.dtype.kind in "OUS" and got.dtype.kind in "OUS"):
            return f"{where}: dtype {got.dtype}, expected {expected.dtype}"
    if expected.shape != got.shape:
        return f"{where}: shape {list(got.shape)}, expected {list(expected.shape)}"
    if expected.dtype.kind in "OUSb" or expected.dtype.kind in "iu":
        if expected.dtype.kind in "OUS":
            same = [str(a) == str(b) if not isinstance(a, bytes) else a == b
                    for a, b in zip(expected.ravel(), got.ravel())]
            ok = all(same)
        else:
            ok = np.array_equal(expected, got)
        return None if ok else f"{where}: values differ"
    e = expected.astype(np.float64) if expected.dtype.kind not in "fc" else expected
    g = got.astype(np.float64) if got.dtype.kind not in "fc" else got
    if e.dtype.kind == "f" and e.dtype.itemsize < 4:
        e, g = e.astype(np.float32), g.astype(np.float32)
    try:
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as exc:
        lines = [ln for ln in str(exc).splitlines() if "Max" in ln or "Mismatch" in ln]
        return f"{where}: values differ ({'; '.join(s.strip() for s in lines)})"
    return None


def run_case(case) -> str | None:
    """Run one case; ``None`` when every output of every data set matches."""
    from edgeinfer import Session

    sess = Session(case.model)
    names = [i.name for i in case.model.graph.input]
    out_names = [o.name for o in case.model.graph.output]
    for k, (inputs, outputs) in enumerate(case.data_sets):
        feeds = {n: to_value(v) for n, v in zip(names, inputs)}
        with np.errstate(all="ignore"):
            got = sess.run(feeds)
        for name, exp in zip(out_names, outputs):
            err = compare(to_value(exp), got[name], case.rtol, case.atol, f"data set {k} output '{name}'")
            if err:
                return err
    return None


def main(argv: list[str]) -> int:
    import collections
    import traceback

    from edgeinfer.errors import EdgeInferError, UnsupportedOpError

    pattern = argv[argv.index("-k") + 1] if "-k" in argv else ""
    verbose = "-v" in argv
    tally = collections.Counter()
    missing = collections.Counter()
    for name, case in all_cases().items():
        if pattern not in name:
            continue
        try:
            err = run_case(case)
            kind = "pass" if err is None else "mismatch"
        except UnsupportedOpError as e:
            kind, err = "unsupported", str(e)
            missing.update(e.ops)
        except EdgeInferError as e:
            kind, err = "error", f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - a crash is what we are looking for
            kind, err = "crash", f"{type(e).__name__}: {e}"
            if verbose:
                traceback.print_exc()
        tally[kind] += 1
        if err and (verbose or kind != "unsupported"):
            print(f"{name}: {kind}: {err[:300]}")
    print(dict(tally))
    if missing:
        print("missing:", ", ".join(f"{k} ({v})" for k, v in missing.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
