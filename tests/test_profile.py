"""Per-node profiling: Session(profile=True), Session.profile()/reset_profile() and
`edgeinfer run --profile`."""
import threading
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeinfer import Session
from edgeinfer.cli import cli
from edgeinfer.errors import InputError, KernelError
from edgeinfer.graph import Graph, Node, ValueInfo

MODEL = Path(str(files("edgeinfer") / "examples" / "digits_cnn.onnx"))


def small_graph(shape=(2, 3)):
    return Graph(
        inputs=[ValueInfo("x", "float32", shape)],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[Node("Relu", ["x"], ["r"], name="act"), Node("Mul", ["r", "r"], ["m"], name="square"),
               Node("Sigmoid", ["m"], ["y"], name="squash")],
    )


def feeds(shape=(2, 3)):
    return {"x": np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 2}


def test_profile_records_every_node_and_op_type_per_run():
    sess = Session(small_graph(), profile=True)
    for _ in range(3):
        sess.run(feeds())
    p = sess.profile()
    assert p["runs"] == 3
    assert [r["node"] for r in p["nodes"]] == ["act", "square", "squash"]  # execution order
    assert [r["op_type"] for r in p["nodes"]] == ["Relu", "Mul", "Sigmoid"]
    for r in p["nodes"]:
        assert r["calls"] == 3 and r["total_ms"] > 0 and r["mean_ms"] == pytest.approx(r["total_ms"] / 3)
    assert set(p["op_types"]) == {"Relu", "Mul", "Sigmoid"}
    totals = [e["total_ms"] for e in p["op_types"].values()]
    assert totals == sorted(totals, reverse=True)  # most expensive first
    assert sum(e["share"] for e in p["op_types"].values()) == pytest.approx(1.0)
    assert p["total_ms"] == pytest.approx(sum(r["total_ms"] for r in p["nodes"]))


def test_profile_reports_fused_nodes_as_such():
    sess = Session(str(MODEL), profile=True)
    x = np.zeros([d if isinstance(d, int) else 1 for d in sess.inputs[0].shape], np.float32)
    sess.run({sess.inputs[0].name: x})
    ops = {r["op_type"] for r in sess.profile()["nodes"]}
    assert "edgeinfer::FusedConv" in ops
    fused = [r for r in sess.profile()["nodes"] if r["op_type"] == "edgeinfer::FusedConv"]
    assert all(r.get("fused") for r in fused)


def test_reset_profile_starts_afresh():
    sess = Session(small_graph(), profile=True)
    sess.run(feeds())
    sess.reset_profile()
    p = sess.profile()
    assert p["runs"] == 0 and all(r["total_ms"] == 0 for r in p["nodes"])
    sess.run(feeds())
    assert sess.profile()["runs"] == 1


def test_profile_without_profiling_is_an_input_error():
    sess = Session(small_graph())
    sess.run(feeds())
    with pytest.raises(InputError, match="profile=True"):
        sess.profile()


def test_no_timing_loop_without_profiling():
    sess = Session(small_graph())
    sess.run(feeds())
    exe = next(iter(sess._plans.values()))
    inst = exe._pool.get()
    exe._pool.put(inst)
    assert inst.step_seconds is None  # the run loop is the plain closure loop


def test_profile_covers_every_compiled_shape():
    sess = Session(small_graph(("n", 3)), profile=True)
    sess.run(feeds((2, 3)))
    sess.run(feeds((5, 3)))
    sess.run(feeds((5, 3)))
    p = sess.profile()
    assert p["runs"] == 3
    assert len(p["nodes"]) == 6  # 3 nodes x 2 shape signatures
    assert p["op_types"]["Relu"]["nodes"] == 2


def test_profile_counts_runs_from_several_threads():
    sess = Session(small_graph(), profile=True)

    def work():
        for _ in range(20):
            sess.run(feeds())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sess.profile()["runs"] == 80


def test_a_failing_profiled_run_names_the_node_and_the_session_keeps_working():
    g = Graph(
        inputs=[ValueInfo("x", "float32", (3,)), ValueInfo("i", "int64", (1,))],
        outputs=[ValueInfo("y", "float32", None)],
        nodes=[Node("Gather", ["x", "i"], ["y"], {"axis": 0}, name="pick")],
    )
    sess = Session(g, profile=True)
    with pytest.raises(KernelError, match="pick"):
        sess.run({"x": np.zeros(3, np.float32), "i": np.array([7], np.int64)})
    sess.run({"x": np.zeros(3, np.float32), "i": np.array([1], np.int64)})
    assert sess.profile()["runs"] == 1


def test_cli_run_profile_prints_top_nodes_and_op_types():
    result = CliRunner().invoke(cli, ["run", str(MODEL), "--profile", "--profile-runs", "3", "--top", "4"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = result.output
    assert "profile: 3 runs" in out
    assert "top 4 nodes" in out and "per op type" in out
    assert "edgeinfer::FusedConv" in out
