import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def pytest_terminal_summary(terminalreporter):
    mod = sys.modules.get("test_onnx_conformance")
    results = getattr(mod, "RESULTS", None)
    if results:
        from conformance import all_cases

        passed = sum(results.values())
        terminalreporter.write_line(
            f"ONNX node conformance (cpu backend): {passed} of {len(results)} run cases pass "
            f"({len(all_cases())} cases in the onnx package)"
        )
