"""The click CLI: each command's happy path, and one clean `error:` line for bad input."""
import json
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeinfer.cli import cli

MODEL = Path(str(files("edgeinfer") / "examples" / "digits_cnn.onnx"))
DIGITS_MACS = 8 * 8 * 8 * 9 + 16 * 4 * 4 * 8 * 9 + 10 * 256  # conv1 + conv2 (stride 2) + fc


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def fails(*args, code=1):
    """The command exits with ``code`` and, for our errors, exactly one `error:` line on stderr."""
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    if code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0]
    return result.stderr


# ----------------------------------------------------------------------- happy paths
def test_version_and_help():
    assert "edgeinfer, version" in ok("--version").output
    out = ok("--help").output
    for command in ("inspect", "convert", "run", "demo", "backends"):
        assert command in out


def test_inspect_text():
    out = ok("inspect", MODEL).stdout
    assert "image: float32[N,1,8,8]" in out
    assert "logits: float32[N,10]" in out
    assert "Conv 2" in out and "Gemm 1" in out and "BatchNormalization 1" in out
    assert "25.6 K per run" in out  # DIGITS_MACS in human units
    assert "N=" not in out or "input shapes taken as image=[1,1,8,8]" in out
    assert "KiB" in out


def test_inspect_json():
    info = json.loads(ok("inspect", MODEL, "--json").stdout)
    assert info["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["N", 1, 8, 8]}]
    assert info["outputs"][0]["name"] == "logits"
    assert info["macs"] == DIGITS_MACS
    assert info["assumed"] == {"image": [1, 1, 8, 8]}
    assert info["op_histogram"]["Conv"] == 2
    assert info["file_bytes"] == MODEL.stat().st_size
    assert info["params"] == 8 * 9 + 4 * 8 + 16 * 72 + 16 + 2560 + 10
    assert info["weight_bytes"] == 4 * info["params"]


def test_inspect_shape_option():
    info = json.loads(ok("inspect", MODEL, "--json", "--shape", "image=4x1x8x8").stdout)
    assert info["macs"] == 4 * DIGITS_MACS and info["assumed"] == {}
    assert "pixels" in fails("inspect", MODEL, "--shape", "pixels=1x1x8x8")
    assert "rank" in fails("inspect", MODEL, "--shape", "image=8x8")


def test_convert_round_trip(tmp_path):
    eim = tmp_path / "digits.eim"
    out = ok("convert", MODEL, eim).stdout
    assert eim.is_file() and f"wrote {eim}" in out
    back = tmp_path / "back.onnx"
    ok("convert", eim, back)
    a = json.loads(ok("inspect", "--json", eim).stdout)
    b = json.loads(ok("inspect", "--json", back).stdout)
    for key in ("inputs", "outputs", "op_histogram", "params", "macs"):
        assert a[key] == b[key]


def test_run_random_input_and_save(tmp_path):
    save = tmp_path / "out.npz"
    out = ok("run", MODEL, "--seed", 3, "--save", save).stdout
    assert "image: float32[1, 1, 8, 8] random (seed 3)" in out
    assert "logits: float32[1, 10]" in out and "argmax [" in out and "mean" in out
    with np.load(save) as z:
        assert list(z) == ["logits"] and z["logits"].shape == (1, 10)
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]  # no temp file left behind


def test_run_with_input_file_matches_session(tmp_path):
    import edgeinfer

    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    save = tmp_path / "y.npz"
    out = ok("run", MODEL, "--input", f"image={tmp_path / 'x.npy'}", "--threads", 1, "--save", save).stdout
    assert "logits: float32[5, 10]" in out
    want = edgeinfer.Session(MODEL).run({"image": x})["logits"]
    with np.load(save) as z:
        np.testing.assert_array_equal(z["logits"], want)
    assert ", ".join(str(i) for i in want.argmax(1)) in out


def test_run_input_without_name_for_one_input_model(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    out = ok("run", MODEL, "-i", tmp_path / "x.npy").stdout
    assert "image: float32[2, 1, 8, 8] from" in out and "logits: float32[2, 10]" in out


def test_run_shape_option():
    out = ok("run", MODEL, "--shape", "image=3x1x8x8").stdout
    assert "logits: float32[3, 10]" in out


def test_backends():
    out = ok("backends").stdout
    assert out.splitlines()[0].split()[:2] == ["cpu", "available"]


def test_demo(tmp_path):
    result = ok("demo", "--out", tmp_path / "demo", "--runs", 3)
    out = result.stdout
    assert "test accuracy" in out and "latency, batch 1" in out and "latency, batch 64" in out
    assert "bit-identical" in out and "next:" in out
    assert (tmp_path / "demo" / "digits_cnn.eim").is_file()
    assert np.load(tmp_path / "demo" / "sample_image.npy").shape == (1, 1, 8, 8)
    acc = [float(t) for t in out.split("test accuracy", 1)[1].splitlines()[0].replace("%", "").split()]
    assert all(a >= 95.0 for a in acc)
    if "onnxruntime" in out and "not installed" not in out:
        diff = float(out.split("edgeinfer vs onnxruntime:", 1)[1].split(";")[0])
        assert diff < 1e-4


def test_python_dash_m_and_no_click_on_import():
    out = subprocess.run([sys.executable, "-m", "edgeinfer", "--version"], capture_output=True, text=True, check=True)
    assert "0.1.0" in out.stdout
    code = "import sys, edgeinfer; assert 'click' not in sys.modules, 'import edgeinfer loaded click'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ bad input
def test_missing_model_file(tmp_path):
    line = fails("inspect", tmp_path / "nope.onnx")
    assert "nope.onnx" in line


def test_garbage_model_file(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\xffthis is not a protobuf" * 10)
    fails("inspect", bad)
    bad_eim = tmp_path / "garbage.eim"
    bad_eim.write_bytes(b"EIM" + b"\x00" * 5 + b"junk")
    fails("run", bad_eim)


def test_convert_bad_suffix_and_same_path(tmp_path):
    line = fails("convert", MODEL, tmp_path / "model.pt")
    assert ".onnx" in line and ".eim" in line and ".pt" in line
    line = fails("convert", tmp_path / "model.txt", tmp_path / "model.eim")
    assert ".txt" in line
    copy = tmp_path / "m.onnx"
    copy.write_bytes(MODEL.read_bytes())
    assert "input file" in fails("convert", copy, copy)


def test_convert_into_missing_folder(tmp_path):
    fails("convert", MODEL, tmp_path / "no" / "such" / "dir" / "m.eim")


def test_run_wrong_input_name(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    line = fails("run", MODEL, "--input", f"pixels={tmp_path / 'x.npy'}")
    assert "pixels" in line and "image" in line


def test_run_wrong_input_shape_and_dtype(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    line = fails("run", MODEL, "--input", f"image={tmp_path / 'x.npy'}")
    assert "image" in line
    np.save(tmp_path / "d.npy", np.zeros((1, 1, 8, 8), np.float64))
    line = fails("run", MODEL, "--input", f"image={tmp_path / 'd.npy'}")
    assert "float32" in line and "float64" in line
    line = fails("run", MODEL, "--shape", "image=8x8")
    assert "rank" in line


def test_run_bad_input_files(tmp_path):
    fails("run", MODEL, "--input", f"image={tmp_path / 'missing.npy'}")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    assert "junk.npy" in fails("run", MODEL, "--input", f"image={tmp_path / 'junk.npy'}")


def test_run_bad_save_suffix(tmp_path):
    assert ".npz" in fails("run", MODEL, "--save", tmp_path / "out.txt")


def test_unknown_backend():
    assert "nosuch" in fails("run", MODEL, "--backend", "nosuch")


def test_usage_errors_exit_2():
    fails("run", code=2)
    fails("run", MODEL, "--input", "image=", code=2)
    fails("run", MODEL, "--input", "a.npy", "--input", "b.npy", code=2)  # two inputs without names
    fails("run", MODEL, "--shape", "image=1xbanana", code=2)
    fails("frobnicate", code=2)


def test_inspect_and_convert_accept_ops_without_kernels(tmp_path):
    """inspect/convert only read the model, so ops the cpu backend lacks must not stop them."""
    import onnx
    from click.testing import CliRunner
    from onnx import helper

    from edgeinfer.cli import cli

    node = helper.make_node("Relu", ["x"], ["h"])
    odd = helper.make_node("DoesNotExist", ["h"], ["y"], domain="acme")
    graph = helper.make_graph(
        [node, odd], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])
    path = tmp_path / "odd.onnx"
    path.write_bytes(model.SerializeToString())
    runner = CliRunner()
    res = runner.invoke(cli, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert "DoesNotExist" in res.output
    res = runner.invoke(cli, ["convert", str(path), str(tmp_path / "odd.eim")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "odd.eim").stat().st_size > 0
    res = runner.invoke(cli, ["run", str(path)])
    assert res.exit_code == 1 and "acme::DoesNotExist" in res.output
