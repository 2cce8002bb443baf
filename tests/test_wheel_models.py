"""More real, trained models end to end: the cpu backend against ONNX Runtime.

The models ship inside pinned PyPI wheels (tests/models.py: WHEEL_MODELS) and cover what
the CNNs of test_real_models.py do not: control flow (If in Silero VAD and openWakeWord,
Loop in the SLANet table decoder), recurrent layers (LSTM in Silero VAD, ddddocr's CRNN
and a tf2onnx wake-word head; an FSMN VAD with caches), transformers (a PyTorch
nn.TransformerEncoder with external weights, a ViT-S), detectors (YOLOv8n, YOLOX,
PP-PicoDet) and audio front ends (an STFT-as-Conv mel spectrogram).

Each model runs on realistic synthetic inputs (speech-like audio, rendered pages, tables,
photos and text lines; see models.wheel_model_feeds), and a second input shape where the
model has symbolic dims. Bar: max |edgeinfer - ort| <= 1e-3 * max(1, max |ort|) for each
float output; integer and bool outputs must match exactly.
"""
import numpy as np
import pytest

import edgeinfer
from edgeinfer import Session
from models import WHEEL_MODELS, wheel_model_cases, wheel_model_feeds, wheel_model_path

ort = pytest.importorskip("onnxruntime")

CASES = [(name, case) for name in WHEEL_MODELS for case in wheel_model_cases(name)]


def close_enough(got, want, what=""):
    """The issue's bar: max abs error <= 1e-3 * max(1, max |reference|)."""
    got = np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if want.dtype.kind not in "fc":
        assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want, err_msg=what)
        return 0.0
    if want.size == 0:
        return 0.0
    assert np.all(np.isfinite(got) == np.isfinite(want)), f"{what}: non-finite values differ"
    fin = np.isfinite(want)
    bound = 1e-3 * max(1.0, float(np.max(np.abs(want[fin]), initial=0.0)))
    err = float(np.max(np.abs(got[fin].astype(np.float64) - want[fin].astype(np.float64)), initial=0.0))
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"
    return err


_ort_sessions = {}
_sessions = {}


def ort_run(name, feeds):
    if name not in _ort_sessions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        _ort_sessions[name] = ort.InferenceSession(str(wheel_model_path(name)), so,
                                                   providers=["CPUExecutionProvider"])
    sess = _ort_sessions[name]
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def cpu_session(name):
    if name not in _sessions:
        _sessions[name] = Session(wheel_model_path(name))
    return _sessions[name]


@pytest.mark.slow
@pytest.mark.parametrize("name,case", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_cpu_matches_onnxruntime(name, case):
    feeds = wheel_model_feeds(name, case)
    want = ort_run(name, feeds)
    got = cpu_session(name).run(feeds)
    assert set(got) == set(want), (sorted(got), sorted(want))
    for oname, ref in want.items():
        close_enough(got[oname], ref, f"{name} case {case} output {oname!r}")


def test_every_wheel_model_has_a_typical_case():
    for name in WHEEL_MODELS:
        package, version, member = WHEEL_MODELS[name]
        assert version.count(".") >= 2 and member.endswith(".onnx"), name
        assert wheel_model_cases(name)[0] == 0


@pytest.mark.parametrize("name", ["silero_vad", "slanet_table"])
def test_control_flow_models_load_with_their_subgraphs(name):
    """The If/Loop models import with their subgraphs intact (before any kernel runs)."""
    graph = edgeinfer.load(wheel_model_path(name))
    ops = {n.op_type for n in graph.nodes}
    assert {"silero_vad": "If", "slanet_table": "Loop"}[name] in ops


def _g2p_greedy(run_encoder, run_decoder, word):
    """g2p-id's LSTM decoding loop (greedy, up to 25 phonemes) over given run functions."""
    from models import _g2p_json, g2p_decoder_input, g2p_encoder_input

    config, p2id = _g2p_json("g2p_lstm_decoder", "config.json"), _g2p_json("g2p_lstm_decoder", "p2id.json")
    id2p = {v: k for k, v in p2id.items()}
    h, c = run_encoder(g2p_encoder_input([word]))
    token, out = p2id[config["bos_token"]], ""
    while len(out) <= config["max_decoder_seq_length"]:
        probs, h, c = run_decoder(g2p_decoder_input([[token]]), h, c)
        token = int(np.argmax(probs[0, -1]))
        if id2p[token] == config["eos_token"]:
            break
        out += id2p[token]
    return out


@pytest.mark.slow
def test_g2p_seq2seq_greedy_decode_matches_onnxruntime():
    """The whole encoder + step-decoder loop gives the same phonemes as with ONNX Runtime."""
    enc, dec = cpu_session("g2p_lstm_encoder"), cpu_session("g2p_lstm_decoder")

    def cpu_enc(x):
        return list(enc.run({"input_1": x}).values())

    def cpu_dec(t, h, c):
        return list(dec.run({"input_2": t, "input_3": h, "input_4": c}).values())

    def ort_enc(x):
        return list(ort_run("g2p_lstm_encoder", {"input_1": x}).values())

    def ort_dec(t, h, c):
        return list(ort_run("g2p_lstm_decoder", {"input_2": t, "input_3": h, "input_4": c}).values())

    for word in ["bersepeda", "mengembangkan", "kesejahteraan"]:
        want = _g2p_greedy(ort_enc, ort_dec, word)
        assert len(want) > 3
        assert _g2p_greedy(cpu_enc, cpu_dec, word) == want


@pytest.mark.slow
def test_openwakeword_pipeline_end_to_end():
    """Audio -> mel spectrogram -> speech embeddings -> wake-word heads, every stage on the
    cpu backend, against the same chain in ONNX Runtime."""
    from models import synthetic_speech

    audio = np.round(synthetic_speech(16000 * 2 + 1280, seed=21) * 32767).astype(np.float32)[None]

    def chain(run):
        mel = np.squeeze(run("oww_melspectrogram", {"input": audio})["output"]) / 10 + 2
        n = (mel.shape[0] - 76) // 8 + 1
        batch = np.stack([mel[i * 8:i * 8 + 76] for i in range(n)])[..., None].astype(np.float32)
        emb = next(iter(run("oww_embedding", {"input_1": batch}).values())).reshape(n, 96)[None, -16:]
        jarvis = next(iter(run("oww_hey_jarvis", {"x.1": emb}).values()))
        mycroft = next(iter(run("oww_hey_mycroft", {"input_1": emb}).values()))
        return mel, emb, jarvis, mycroft

    want = chain(ort_run)
    got = chain(lambda name, feeds: cpu_session(name).run(feeds))
    assert want[1].shape == (1, 16, 96)
    for g, w, what in zip(got, want, ["mel", "embeddings", "hey_jarvis", "hey_mycroft"]):
        close_enough(g, w, what)
