"""Signal processing: DFT (opset 20, ``axis`` an input), STFT, the Hann, Hamming and Blackman
windows, and MelWeightMatrix.

Complex tensors are real tensors with a trailing dim of 2 (real, imaginary); a trailing dim of
1 marks a real signal. Transforms go through ``numpy.fft`` in the input's precision (float16
and bfloat16 in float32), viewing float pairs as complex numbers without a copy where the
layout allows.

``output_datatype`` of the generators is an IR dtype name, or the ONNX ``TensorProto`` code
when the importer passed the attribute through untranslated.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as _dt
from ..errors import KernelError
from ..graph import TensorType
from .registry import OpContext, kernel, shape_rule

_FLOATS = ("float16", "bfloat16", "float32", "float64")
_INTS = ("int32", "int64")

# ONNX TensorProto codes a generator's output_datatype may hold (T2/T3 of the schemas)
_OUTPUT_CODES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}
_OUTPUT_DTYPES = frozenset(_OUTPUT_CODES.values())


# ---------------------------------------------------------------------- helpers
def _widen(x: np.ndarray, ir_dtype: str) -> np.ndarray:
    """A float array in computing precision: float64 stays, everything else is float32."""
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def _narrow(y: np.ndarray, ir_dtype: str) -> np.ndarray:
    return np.ascontiguousarray(y, dtype=_dt.to_numpy(ir_dtype))


def _as_complex(x: np.ndarray) -> np.ndarray:
    """``[..., 2]`` float pairs (float32/float64) as complex ``[...]``, a view when contiguous."""
    x = np.ascontiguousarray(x)
    return x.view(np.complex64 if x.dtype == np.float32 else np.complex128)[..., 0]


def _as_pairs(y: np.ndarray) -> np.ndarray:
    """Complex ``[...]`` as float pairs ``[..., 2]``."""
    y = np.ascontiguousarray(y)
    return y.view(np.float32 if y.dtype == np.complex64 else np.float64).reshape(y.shape + (2,))


def _signal(x: np.ndarray, ir_dtype: str) -> np.ndarray:
    """A ``[..., 1]`` (real) or ``[..., 2]`` (complex) tensor as a real or complex ``[...]`` array."""
    x = _widen(x, ir_dtype)
    return x[..., 0] if x.shape[-1] == 1 else _as_complex(x)


def _scalar(ctx: OpContext, i: int):
    """Input ``i`` as a Python int when it is a compile-time constant, else None."""
    v = ctx.values[i] if i < len(ctx.values) and ctx.has_input(i) else None
    if v is None or np.size(v) != 1:
        return None
    return int(np.asarray(v).reshape(()))


def _check_scalar_input(ctx: OpContext, i: int, name: str, dtypes=_INTS) -> None:
    t = ctx.inputs[i] if i < len(ctx.inputs) and ctx.has_input(i) else None
    if t is None:
        return
    if t.dtype not in dtypes:
        raise ctx.error(f"{name} must be one of {', '.join(dtypes)}, found {t.dtype}")
    if t.shape is not None and any(isinstance(d, int) and d != 1 for d in t.shape):
        raise ctx.error(f"{name} must be a scalar, found shape {list(t.shape)}")


def _runtime_scalar(label: str, name: str, v) -> int:
    a = np.asarray(v)
    if a.size != 1:
        raise KernelError(f"{label}: {name} must be a scalar, found shape {list(a.shape)}")
    return int(a.reshape(()))


# -------------------------------------------------------------------------- DFT
def _dft_axis(axis: int, rank: int) -> tuple[int, str | None]:
    """``axis`` of a rank-``rank`` input normalised (valid: [-rank, -2] and [0, rank-2]), and
    the error message when it is out of range."""
    a = axis + rank if axis < 0 else axis
    if 0 <= a <= rank - 2:
        return a, None
    return a, f"axis {axis} is out of range for an input of rank {rank} (valid: [{-rank}, -2] or [0, {rank - 2}])"


def _dft_mode_error(onesided: int, inverse: int, last) -> str | None:
    if onesided and not inverse and last == 2:
        return "onesided=1 forward DFT needs a real input (trailing dim 1), found a complex one (trailing dim 2)"
    if onesided and inverse and last == 1:
        return "onesided=1 inverse DFT needs a complex one-sided spectrum (trailing dim 2), found a real input"
    if last not in (None, 1, 2):
        return f"the trailing dim must be 1 (real) or 2 (complex), found {last}"
    return None


@shape_rule("DFT")
def dft_shape(ctx: OpContext, inverse, onesided):
    x = ctx.inputs[0]
    if x.dtype not in _FLOATS:
        raise ctx.error(f"input has dtype {x.dtype}; DFT accepts {', '.join(_FLOATS)}")
    _check_scalar_input(ctx, 1, "dft_length")
    _check_scalar_input(ctx, 2, "axis", ("int64", "int32"))
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    rank = len(x.shape)
    if rank < 2:
        raise ctx.error(f"input must have rank >= 2 (signal dims and a trailing 1 or 2), found {list(x.shape)}")
    last = x.shape[-1] if isinstance(x.shape[-1], int) else None
    err = _dft_mode_error(onesided, inverse, last)
    if err:
        raise ctx.error(err)
    out_last = 1 if onesided and inverse else 2
    axis = _scalar(ctx, 2) if ctx.has_input(2) else -2
    if axis is None:
        return [TensorType(x.dtype, (None,) * (rank - 1) + (out_last,))]
    a, err = _dft_axis(axis, rank)
    if err:
        raise ctx.error(err)
    n = _scalar(ctx, 1) if ctx.has_input(1) else None
    dim = x.shape[a] if isinstance(x.shape[a], int) else None
    if n is not None and n < 1:
        raise ctx.error(f"dft_length must be >= 1, found {n}")
    if n is None and not ctx.has_input(1) and dim is not None:
        n = 2 * (dim - 1) if onesided and inverse else dim
    out = list(x.shape[:-1]) + [out_last]
    out[a] = None if n is None else (n // 2 + 1 if onesided and not inverse else n)
    return [TensorType(x.dtype, tuple(out))]


@kernel("DFT", attrs={"inverse": 0, "onesided": 0})
def dft(ctx: OpContext, inverse: int, onesided: int):
    label, ir_dtype = ctx.node.label, ctx.inputs[0].dtype

    def dft_fn(x, dft_length=None, axis=None):
        err = _dft_mode_error(onesided, inverse, x.shape[-1]) if x.ndim >= 2 else "input must have rank >= 2"
        if err:
            raise KernelError(f"{label}: {err}")
        a, err = _dft_axis(-2 if axis is None else _runtime_scalar(label, "axis", axis), x.ndim)
        if err:
            raise KernelError(f"{label}: {err}")
        if dft_length is not None:
            n = _runtime_scalar(label, "dft_length", dft_length)
            if n < 1:
                raise KernelError(f"{label}: dft_length must be >= 1, found {n}")
        else:
            n = 2 * (x.shape[a] - 1) if onesided and inverse else x.shape[a]
            if n < 1:
                raise KernelError(f"{label}: the signal along axis {a} is too short for an inverse one-sided "
                                  f"DFT ({x.shape[a]} bins); give dft_length")
        sig = _signal(x, ir_dtype)
        if onesided and inverse:
            return _narrow(np.fft.irfft(sig, n=n, axis=a)[..., None], ir_dtype)
        if onesided:
            y = np.fft.rfft(sig, n=n, axis=a)
        else:
            y = (np.fft.ifft if inverse else np.fft.fft)(sig, n=n, axis=a)
        return _narrow(_as_pairs(y), ir_dtype)

    return dft_fn


# ------------------------------------------------------------------------- STFT
def _frames(signal_length, frame_length, step):
    if None in (signal_length, frame_length, step):
        return None
    return (signal_length - frame_length) // step + 1


@shape_rule("STFT")
def stft_shape(ctx: OpContext, onesided):
    sig = ctx.inputs[0]
    if sig.dtype not in _FLOATS:
        raise ctx.error(f"signal has dtype {sig.dtype}; STFT accepts {', '.join(_FLOATS)}")
    _check_scalar_input(ctx, 1, "frame_step")
    _check_scalar_input(ctx, 3, "frame_length")
    window = ctx.inputs[2] if ctx.has_input(2) else None
    if window is not None:
        if window.dtype != sig.dtype:
            raise ctx.error(f"window has dtype {window.dtype}, expected the signal's {sig.dtype}")
        if window.shape is not None and len(window.shape) != 1:
            raise ctx.error(f"window must be 1-D, found shape {list(window.shape)}")
    if sig.shape is not None and len(sig.shape) != 3:
        raise ctx.error(f"signal must be 3-D [batch, signal_length, 1 or 2], found shape {list(sig.shape)}")
    shape = sig.shape or (None, None, None)
    batch, length, last = ((d if isinstance(d, int) else None) for d in shape)
    if last not in (None, 1, 2):
        raise ctx.error(f"signal's trailing dim must be 1 (real) or 2 (complex), found {last}")
    if onesided and last == 2:
        raise ctx.error("onesided=1 needs a real signal (trailing dim 1); set onesided=0 for a complex one")
    step = _scalar(ctx, 1)
    if step is not None and step < 1:
        raise ctx.error(f"frame_step must be >= 1, found {step}")
    win_len = window.shape[0] if window is not None and window.shape and isinstance(window.shape[0], int) else None
    if ctx.has_input(3):
        frame_length = _scalar(ctx, 3)
        if frame_length is not None and win_len is not None and frame_length != win_len:
            raise ctx.error(f"window has length {win_len} but frame_length is {frame_length}")
    else:
        frame_length = win_len if window is not None else length
    if frame_length is not None and frame_length < 1:
        raise ctx.error(f"frame_length must be >= 1, found {frame_length}")
    frames = _frames(length, frame_length, step)
    if frames is not None and frames < 1:
        raise ctx.error(f"frame_length {frame_length} is longer than the signal ({length} samples)")
    bins = None if frame_length is None else (frame_length // 2 + 1 if onesided else frame_length)
    return [TensorType(sig.dtype, (shape[0], frames, bins, 2))]


@kernel("STFT", attrs={"onesided": 1})
def stft(ctx: OpContext, onesided: int):
    label, ir_dtype = ctx.node.label, ctx.inputs[0].dtype

    def stft_fn(signal, frame_step, window=None, frame_length=None):
        if signal.ndim != 3 or signal.shape[-1] not in (1, 2):
            raise KernelError(f"{label}: signal must have shape [batch, signal_length, 1 or 2], "
                              f"found {list(signal.shape)}")
        if onesided and signal.shape[-1] == 2:
            raise KernelError(f"{label}: onesided=1 needs a real signal; set onesided=0 for a complex one")
        step = _runtime_scalar(label, "frame_step", frame_step)
        length = signal.shape[1]
        if frame_length is not None:
            n = _runtime_scalar(label, "frame_length", frame_length)
            if window is not None and window.shape != (n,):
                raise KernelError(f"{label}: window has shape {list(window.shape)} but frame_length is {n}")
        elif window is not None:
            if window.ndim != 1:
                raise KernelError(f"{label}: window must be 1-D, found shape {list(window.shape)}")
            n = window.shape[0]
        else:
            n = length
        if step < 1 or n < 1 or n > length:
            raise KernelError(f"{label}: need frame_step >= 1 and 1 <= frame_length <= signal_length, found "
                              f"frame_step={step}, frame_length={n}, signal_length={length}")
        sig = _signal(signal, ir_dtype)  # [batch, length], real or complex
        frames = np.lib.stride_tricks.sliding_window_view(sig, n, axis=1)[:, ::step]  # [batch, frames, n]
        if window is not None:
            frames = frames * _widen(window, ir_dtype).astype(frames.real.dtype, copy=False)
        y = np.fft.rfft(frames, axis=-1) if onesided else np.fft.fft(frames, axis=-1)
        return _narrow(_as_pairs(y), ir_dtype)

    return stft_fn


# ---------------------------------------------------------------------- windows
def _output_dtype(ctx: OpContext, output_datatype) -> str:
    dtype = _OUTPUT_CODES.get(output_datatype) if isinstance(output_datatype, int) else output_datatype
    if dtype not in _OUTPUT_DTYPES:
        raise ctx.error(f"output_datatype {output_datatype!r} is not a supported output type; expected one of "
                        f"{', '.join(sorted(_OUTPUT_DTYPES))} (or its TensorProto code)")
    return dtype


def _window_shape(ctx: OpContext, periodic, output_datatype):
    dtype = _output_dtype(ctx, output_datatype)
    _check_scalar_input(ctx, 0, "size")
    size = _scalar(ctx, 0)
    if size is not None and size < 0:
        raise ctx.error(f"size must be >= 0, found {size}")
    return [TensorType(dtype, (size,))]


def _register_window(op_type: str, coefficients: tuple[float, ...]):
    """A generalized cosine window ``sum_k (-1)^k a_k cos(2 pi k n / N)``, ``N = size`` when
    periodic else ``size - 1``."""
    shape_rule(op_type)(_window_shape)

    @kernel(op_type, attrs={"periodic": 1, "output_datatype": 1})
    def build(ctx: OpContext, periodic: int, output_datatype):
        dtype = _output_dtype(ctx, output_datatype)
        label = ctx.node.label

        def window_fn(size):
            n = _runtime_scalar(label, "size", size)
            if n < 0:
                raise KernelError(f"{label}: size must be >= 0, found {n}")
            period = n if periodic else n - 1
            if period < 1:  # a one-point symmetric window is its peak
                return _narrow(np.ones(n), dtype)
            phase = (2 * np.pi / period) * np.arange(n)
            y = np.full(n, coefficients[0])
            for k, a in enumerate(coefficients[1:], start=1):
                y += (-1) ** k * a * np.cos(k * phase)
            return _narrow(y, dtype)

        return window_fn

    return build


_register_window("HannWindow", (0.5, 0.5))
_register_window("HammingWindow", (25 / 46, 21 / 46))
_register_window("BlackmanWindow", (0.42, 0.5, 0.08))


# --------------------------------------------------------------- MelWeightMatrix
@shape_rule("MelWeightMatrix")
def mel_weight_matrix_shape(ctx: OpContext, output_datatype):
    dtype = _output_dtype(ctx, output_datatype)
    for i, name in enumerate(("num_mel_bins", "dft_length", "sample_rate")):
        _check_scalar_input(ctx, i, name)
    for i, name in ((3, "lower_edge_hertz"), (4, "upper_edge_hertz")):
        _check_scalar_input(ctx, i, name, _FLOATS)
    mels, n = _scalar(ctx, 0), _scalar(ctx, 1)
    if mels is not None and mels < 0:
        raise ctx.error(f"num_mel_bins must be >= 0, found {mels}")
    if n is not None and n < 1:
        raise ctx.error(f"dft_length must be >= 1, found {n}")
    return [TensorType(dtype, (None if n is None else n // 2 + 1, mels))]


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@kernel("MelWeightMatrix", attrs={"output_datatype": 1})
def mel_weight_matrix(ctx: OpContext, output_datatype):
    dtype = _output_dtype(ctx, output_datatype)
    label = ctx.node.label
    edge_dtypes = [ctx.inputs[i].dtype if ctx.inputs[i] is not None else "float32" for i in (3, 4)]

    def mel_fn(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz):
        mels = _runtime_scalar(label, "num_mel_bins", num_mel_bins)
        n = _runtime_scalar(label, "dft_length", dft_length)
        rate = _runtime_scalar(label, "sample_rate", sample_rate)
        if mels < 0 or n < 1 or rate < 1:
            raise KernelError(f"{label}: need num_mel_bins >= 0, dft_length >= 1 and sample_rate >= 1, found "
                              f"{mels}, {n} and {rate}")
        lo, hi = (float(_widen(np.asarray(v), d).reshape(-1)[0])
                  for v, d in zip((lower_edge_hertz, upper_edge_hertz), edge_dtypes))
        # num_mel_bins + 2 band edges, evenly spaced in mel; ONNX (and ONNX Runtime) step by
        # (high - low) / (num_mel_bins + 2), so the top edge falls short of upper_edge_hertz
        lo_mel, hi_mel = _hz_to_mel(lo), _hz_to_mel(hi)
        edges_mel = lo_mel + np.arange(mels + 2) * ((hi_mel - lo_mel) / (mels + 2))
        edges = np.floor((n + 1) * _mel_to_hz(edges_mel) / rate).astype(np.int64)  # spectrogram bins
        left, center, right = edges[:-2], edges[1:-1], edges[2:]
        j = np.arange(n // 2 + 1)[:, None]
        rising = np.where(center > left, (j - left) / np.maximum(center - left, 1), 1.0)
        rising = np.where((j >= left) & (j <= center), rising, 0.0)
        falling = np.where((j > center) & (j < right), (right - j) / np.maximum(right - center, 1), 0.0)
        return _narrow(rising + falling, dtype)

    return mel_fn
