"""DFT, STFT, the cosine windows and MelWeightMatrix against ONNX Runtime, and against numpy
where ONNX Runtime departs from the spec (an inverse one-sided DFT with a dft_length other than
the default, where ORT's result is neither numpy's nor the ONNX reference's; STFT with neither
window nor frame_length; a one-point symmetric window, NaN in ORT)."""
import numpy as np
import pytest

from edgeinfer.errors import KernelError, ShapeInferenceError
from opcheck import check_node, run_edgeinfer

RTOL, ATOL = 1e-4, 1e-4


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(dtype)


def i64(v):
    return np.array(v, np.int64)


def as_complex(pairs):
    return pairs[..., 0] + 1j * pairs[..., 1]


COMPLEX = rand(2, 8, 3, 2)
REAL = rand(2, 8, 3, 1, seed=1)


# --------------------------------------------------------------------------- DFT
@pytest.mark.parametrize("x", [COMPLEX, REAL], ids=["complex", "real"])
@pytest.mark.parametrize("axis", [0, 1, 2, -2, -3, -4])
@pytest.mark.parametrize("inverse", [0, 1])
def test_dft_full(x, axis, inverse):
    check_node("DFT", [x, None, i64(axis)], {"inverse": inverse}, const_inputs=(2,), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n", [1, 5, 8, 12])
@pytest.mark.parametrize("inverse", [0, 1])
def test_dft_length_crops_or_pads(n, inverse):
    check_node("DFT", [COMPLEX, i64(n), i64(1)], {"inverse": inverse}, const_inputs=(1, 2), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", [0, 1, -2])
@pytest.mark.parametrize("n", [None, 5, 8, 11])
def test_rfft(axis, n):
    length = None if n is None else i64(n)
    check_node("DFT", [REAL, length, i64(axis)], {"onesided": 1}, const_inputs=(1, 2), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", [1, 2])
def test_irfft_default_length(axis):
    check_node("DFT", [COMPLEX, None, i64(axis)], {"onesided": 1, "inverse": 1}, const_inputs=(2,),
               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n", [4, 9, 14, 20])
def test_irfft_with_length_follows_numpy(n):
    (y,) = run_edgeinfer("DFT", [COMPLEX, i64(n), i64(1)], {"onesided": 1, "inverse": 1})
    np.testing.assert_allclose(y[..., 0], np.fft.irfft(as_complex(COMPLEX), n=n, axis=1), rtol=RTOL, atol=ATOL)


def test_dft_default_axis_is_the_last_signal_axis():
    check_node("DFT", [COMPLEX], {}, rtol=RTOL, atol=ATOL)


def test_dft_runtime_axis_and_length():
    (y,) = run_edgeinfer("DFT", [COMPLEX, i64(6), i64(2)], {}, shapes_known=False)
    np.testing.assert_allclose(y[..., 0] + 1j * y[..., 1], np.fft.fft(as_complex(COMPLEX), n=6, axis=2),
                               rtol=RTOL, atol=ATOL)


def test_dft_float64_and_float16():
    x = COMPLEX.astype(np.float64)
    (y,) = run_edgeinfer("DFT", [x, None, i64(1)], {})
    assert y.dtype == np.float64
    np.testing.assert_allclose(as_complex(y), np.fft.fft(as_complex(x), axis=1), rtol=1e-12, atol=1e-12)
    (h,) = run_edgeinfer("DFT", [COMPLEX.astype(np.float16), None, i64(1)], {})
    assert h.dtype == np.float16
    np.testing.assert_allclose(h.astype(np.float32), y, rtol=1e-2, atol=1e-2)


def test_dft_axis_out_of_range():
    with pytest.raises(ShapeInferenceError, match="n0.*axis -1 is out of range"):
        run_edgeinfer("DFT", [COMPLEX, None, i64(-1)], const_inputs=(2,))
    with pytest.raises(KernelError, match="n0.*axis 3 is out of range"):
        run_edgeinfer("DFT", [COMPLEX, None, i64(3)])


def test_dft_onesided_needs_real_input():
    with pytest.raises(ShapeInferenceError, match="n0.*onesided=1 forward DFT needs a real input"):
        run_edgeinfer("DFT", [COMPLEX, None, i64(1)], {"onesided": 1})
    with pytest.raises(KernelError, match="n0.*onesided=1 forward DFT needs a real input"):
        run_edgeinfer("DFT", [COMPLEX, None, i64(1)], {"onesided": 1}, shapes_known=False)


def test_dft_bad_trailing_dim_and_length():
    with pytest.raises(ShapeInferenceError, match="n0.*trailing dim must be 1 \\(real\\) or 2"):
        run_edgeinfer("DFT", [rand(4, 3)])
    with pytest.raises(ShapeInferenceError, match="n0.*dft_length must be >= 1"):
        run_edgeinfer("DFT", [COMPLEX, i64(0), i64(1)], const_inputs=(1, 2))


# -------------------------------------------------------------------------- STFT
SIGNAL = rand(2, 40, 1, seed=2)
WINDOW = np.hanning(10).astype(np.float32)


@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("step", [1, 3, 10])
def test_stft_with_window(onesided, step):
    check_node("STFT", [SIGNAL, i64(step), WINDOW], {"onesided": onesided}, const_inputs=(1, 2), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("frame_length", [7, 16, 40])
def test_stft_with_frame_length(frame_length):
    check_node("STFT", [SIGNAL, i64(4), None, i64(frame_length)], {}, const_inputs=(1, 3), rtol=RTOL, atol=ATOL)


def test_stft_window_and_frame_length():
    check_node("STFT", [SIGNAL, i64(5), WINDOW, i64(10)], {}, const_inputs=(1, 2, 3), rtol=RTOL, atol=ATOL)


def test_stft_complex_signal():
    check_node("STFT", [rand(2, 33, 2, seed=3), i64(4), WINDOW], {"onesided": 0}, rtol=RTOL, atol=ATOL)


def test_stft_whole_signal_is_one_frame():
    (y,) = run_edgeinfer("STFT", [SIGNAL, i64(4)], {"onesided": 0})
    assert y.shape == (2, 1, 40, 2)
    np.testing.assert_allclose(as_complex(y[:, 0]), np.fft.fft(SIGNAL[..., 0], axis=1), rtol=RTOL, atol=ATOL)


def test_stft_errors():
    with pytest.raises(ShapeInferenceError, match="n0.*window has length 10 but frame_length is 8"):
        run_edgeinfer("STFT", [SIGNAL, i64(4), WINDOW, i64(8)], const_inputs=(1, 3))
    with pytest.raises(ShapeInferenceError, match="n0.*longer than the signal"):
        run_edgeinfer("STFT", [SIGNAL, i64(4), None, i64(41)], const_inputs=(1, 3))
    with pytest.raises(ShapeInferenceError, match="n0.*onesided=1 needs a real signal"):
        run_edgeinfer("STFT", [rand(1, 20, 2), i64(4), WINDOW])
    with pytest.raises(KernelError, match="n0.*frame_step >= 1"):
        run_edgeinfer("STFT", [SIGNAL, i64(0), WINDOW])
    with pytest.raises(ShapeInferenceError, match="n0.*signal must be 3-D"):
        run_edgeinfer("STFT", [SIGNAL[0], i64(2), WINDOW])


# ----------------------------------------------------------------------- windows
WINDOWS = ["HannWindow", "HammingWindow", "BlackmanWindow"]


@pytest.mark.parametrize("op", WINDOWS)
@pytest.mark.parametrize("size", [2, 7, 16, 1000])
@pytest.mark.parametrize("periodic", [0, 1])
def test_window(op, size, periodic):
    check_node(op, [i64(size)], {"periodic": periodic}, const_inputs=(0,), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", WINDOWS)
@pytest.mark.parametrize("code", [1, 11, 6, 7, 2])
def test_window_output_datatype(op, code):
    check_node(op, [np.array(9, np.int32)], {"output_datatype": code}, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", WINDOWS)
def test_window_float16(op):  # ORT's CPU kernels have no float16 windows
    (half,) = run_edgeinfer(op, [i64(9)], {"output_datatype": 10})
    (full,) = run_edgeinfer(op, [i64(9)], {})
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, full.astype(np.float16))


@pytest.mark.parametrize("op", WINDOWS)
def test_window_edge_sizes(op):
    (one,) = run_edgeinfer(op, [i64(1)], {"periodic": 0})  # 0/0 by the formula; numpy's choice: 1
    np.testing.assert_array_equal(one, [1.0])
    (empty,) = run_edgeinfer(op, [i64(0)])
    assert empty.shape == (0,) and empty.dtype == np.float32


def test_window_accepts_ir_dtype_names():
    (y,) = run_edgeinfer("HannWindow", [i64(8)], {"output_datatype": "float64"})
    np.testing.assert_allclose(y, 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(8) / 8))


def test_window_errors():
    with pytest.raises(ShapeInferenceError, match="n0.*output_datatype 8"):
        run_edgeinfer("HannWindow", [i64(8)], {"output_datatype": 8})
    with pytest.raises(ShapeInferenceError, match="n0.*size must be >= 0"):
        run_edgeinfer("HammingWindow", [i64(-2)], const_inputs=(0,))
    with pytest.raises(KernelError, match="n0.*size must be a scalar"):
        run_edgeinfer("BlackmanWindow", [np.array([3, 4], np.int64)], shapes_known=False)


# ---------------------------------------------------------------- MelWeightMatrix
@pytest.mark.parametrize("mels,dft,rate,low,high", [
    (8, 16, 8192, 0, 4096), (20, 512, 16000, 20, 8000), (10, 256, 22050, 100, 4000), (5, 64, 8000, 300, 3000),
    (40, 1024, 44100, 0, 22050), (64, 400, 16000, 60, 7600), (3, 15, 100, 1, 49),
])
def test_mel_weight_matrix(mels, dft, rate, low, high):
    ins = [np.array(mels, np.int32), np.array(dft, np.int32), np.array(rate, np.int32),
           np.array(low, np.float32), np.array(high, np.float32)]
    check_node("MelWeightMatrix", ins, {}, const_inputs=(0, 1), rtol=1e-5, atol=1e-6)


def test_mel_weight_matrix_float64_output():
    ins = [i64(8), i64(64), i64(8000), np.array(0, np.float32), np.array(4000, np.float32)]
    check_node("MelWeightMatrix", ins, {"output_datatype": 11}, rtol=1e-6, atol=1e-7)


def test_mel_weight_matrix_errors():
    ins = [i64(8), i64(0), i64(8000), np.array(0, np.float32), np.array(4000, np.float32)]
    with pytest.raises(ShapeInferenceError, match="n0.*dft_length must be >= 1"):
        run_edgeinfer("MelWeightMatrix", ins, const_inputs=(1,))
    ins[1], ins[2] = i64(64), i64(0)
    with pytest.raises(KernelError, match="n0.*sample_rate >= 1"):
        run_edgeinfer("MelWeightMatrix", ins)


def test_dft_bfloat16():
    from edgeinfer import dtypes
    from edgeinfer.graph import Node, TensorType
    from edgeinfer.kernels import OpContext, get_schema, resolve_attrs

    store = dtypes.to_numpy("bfloat16")
    if store == np.uint16:  # raw bits today
        b = COMPLEX.view(np.uint32)
        x = ((b + np.uint32(0x7FFF) + ((b >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
        widen = lambda a: (a.astype(np.uint32) << 16).view(np.float32)  # noqa: E731
    else:
        x, widen = COMPLEX.astype(store), (lambda a: a.astype(np.float32))
    node = Node("DFT", ["x", "", "axis"], ["y"], {}, name="n0")
    schema = get_schema("DFT")
    kw = resolve_attrs(schema, node)
    ctx = OpContext(node, [TensorType("bfloat16", x.shape), None, TensorType("int64", ())], [None, None, i64(1)])
    ctx.outputs = schema.infer(ctx, **kw)
    assert ctx.outputs[0] == TensorType("bfloat16", (2, 8, 3, 2))
    y = schema.build(ctx, **kw)(x, None, i64(1))
    want = np.fft.fft(as_complex(widen(x)), axis=1)
    np.testing.assert_allclose(as_complex(widen(y)), want, rtol=2e-2, atol=5e-2)
