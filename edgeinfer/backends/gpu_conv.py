"""Conv, pooling and GEMM kernels of the ``gpu`` backend (see :mod:`.gpu_kernels`).

Conv is a GEMM on the device's BLAS (``xp.matmul``: cuBLAS under cupy): a 1x1 unstrided
unpadded conv is one GEMM on the input as it lies; any other conv gathers its columns with one
strided view copy (im2col, ``(N, G, Cg*KH*KW, OH*OW)``) and runs one batched GEMM over the
groups. A depthwise conv (one input channel per group) has no GEMM worth the name: on the GPU
it is a CUDA kernel with one thread per output value, the bias, the residual and the
activation fused in; with numpy a loop over the kernel taps. Max/average pooling is likewise a
CUDA kernel per output value on the GPU and a strided window view with numpy. Both CUDA
kernels are ``cupy.ElementwiseKernel`` bodies over ``raw`` inputs, so cupy instantiates them
for float16 and float32 and the geometry is compiled in as constants.

1-D convs and pools run as 2-D ones with a height of 1. Weights and biases are reshaped for
the GEMM and uploaded once, when the kernel is built.
"""
from __future__ import annotations

import numpy as np

from ..kernels.conv import _transpose_geometry, conv_window
from ..kernels.window import Window
from .gpu_kernels import FUSED_DOMAIN, GpuContext, cuda_activation, cuda_elementwise, epilogue, gpu_kernel, work_dtype


def _as_strided(xp):
    if xp is np:
        return np.lib.stride_tricks.as_strided
    import cupy

    return cupy.lib.stride_tricks.as_strided


def _pad2d(xp, x, pt, pb, pl, pr, value=0.0):
    """``x`` (N, C, H, W) padded on its spatial axes by ``value`` (contiguous in any case)."""
    if not (pt or pb or pl or pr):
        return xp.ascontiguousarray(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + pt + pb, w + pl + pr), value, dtype=x.dtype)
    out[:, :, pt:pt + h, pl:pl + w] = x
    return out


class _Geometry:
    """A 1-D or 2-D window resolved for one static input shape, as 2-D numbers."""

    def __init__(self, ctx: GpuContext, win: Window, spatial: tuple[int, ...]):
        if len(spatial) not in (1, 2):
            raise ctx.fail(f"only 1-D and 2-D windows run on the gpu backend, found {len(spatial)}-D")
        outs, begins, ends = win.resolve(spatial, ctx.fail)
        one = len(spatial) == 1
        pick = (lambda t, d: (d,) + tuple(t)) if one else (lambda t, d: tuple(t))
        self.one_d = one
        self.h, self.w = pick(spatial, 1)
        self.oh, self.ow = pick(outs, 1)
        self.kh, self.kw = pick(win.kernel, 1)
        self.sh, self.sw = pick(win.strides, 1)
        self.dh, self.dw = pick(win.dilations, 1)
        self.pt, self.pl = pick(begins, 0)
        self.pb, self.pr = pick(ends, 0)

    def as_2d(self, x):
        return x.reshape(x.shape[:2] + (1, x.shape[2])) if self.one_d else x

    def from_2d(self, y):
        return y.reshape(y.shape[:2] + (y.shape[3],)) if self.one_d else y

    @property
    def pointwise(self) -> bool:
        return (self.kh, self.kw, self.sh, self.sw, self.pt, self.pb, self.pl, self.pr) == (1, 1, 1, 1, 0, 0, 0, 0)

    def constants(self) -> str:
        names = ("H", "W", "OH", "OW", "KH", "KW", "SH", "SW", "DH", "DW", "PT", "PL", "PB", "PR")
        vals = (self.h, self.w, self.oh, self.ow, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw, self.pt,
                self.pl, self.pb, self.pr)
        return " ".join(f"const int {n} = {v};" for n, v in zip(names, vals))

    def im2col(self, xp, x, groups: int):
        """(N, G, Cg*KH*KW, OH*OW) columns of the 2-D input ``x``."""
        xp_ = _pad2d(xp, x, self.pt, self.pb, self.pl, self.pr)
        n, c = x.shape[:2]
        s_n, s_c, s_h, s_w = xp_.strides
        view = _as_strided(xp)(xp_, (n, c, self.kh, self.kw, self.oh, self.ow),
                               (s_n, s_c, s_h * self.dh, s_w * self.dw, s_h * self.sh, s_w * self.sw))
        return view.reshape(n, groups, (c // groups) * self.kh * self.kw, self.oh * self.ow)

    def tap_slices(self):
        for i in range(self.kh):
            for j in range(self.kw):
                hs = slice(i * self.dh, i * self.dh + (self.oh - 1) * self.sh + 1, self.sh)
                ws = slice(j * self.dw, j * self.dw + (self.ow - 1) * self.sw + 1, self.sw)
                yield i, j, hs, ws


# ------------------------------------------------------------------------------- conv
_DEPTHWISE_BODY = """
{geom}
const int C = {channels};
int ow = i % OW; int t = i / OW; int oh = t % OH; t /= OH; int c = t % C; int n = t / C;
float acc = {init};
const int h0 = oh * SH - PT, w0 = ow * SW - PL;
const ptrdiff_t base = (ptrdiff_t)(n * C + c) * H * W;
for (int kh = 0; kh < KH; ++kh) {{
  int ih = h0 + kh * DH;
  if (ih < 0 || ih >= H) continue;
  for (int kw = 0; kw < KW; ++kw) {{
    int iw = w0 + kw * DW;
    if (iw < 0 || iw >= W) continue;
    acc += (float)x[base + (ptrdiff_t)ih * W + iw] * (float)wt[(c * KH + kh) * KW + kw];
  }}
}}
float v = acc{residual}; {act}
y = (T)v;
"""


def _depthwise_gpu(geo: _Geometry, channels: int, has_bias: bool, has_residual: bool, act: str):
    params = ["raw T x", "raw T wt"] + (["raw T b"] if has_bias else []) + (["T z"] if has_residual else [])
    body = _DEPTHWISE_BODY.format(geom=geo.constants(), channels=channels, init="(float)b[c]" if has_bias else "0.f",
                                  residual=" + (float)z" if has_residual else "", act=act)
    return cuda_elementwise(", ".join(params), body, "depthwise_conv")


def build_conv(ctx: GpuContext, attrs: dict, activation: str, params) -> callable:
    """Conv with an epilogue: ``act(conv(x, W) + B + Z)`` (Z: input 3, a residual)."""
    xp = ctx.xp
    x_shape = ctx.shape(0)
    w = ctx.const(1)
    if w is None:
        raise ctx.fail("the weight must be a constant on the gpu backend")
    bias = ctx.const(2) if ctx.has_input(2) else None
    if ctx.has_input(2) and bias is None:
        raise ctx.fail("the bias must be a constant on the gpu backend")
    win, _ = conv_window(ctx, attrs, len(x_shape) - 2, w.shape)
    geo = _Geometry(ctx, win, x_shape[2:])
    group = int(attrs.get("group", 1))
    n, c = x_shape[:2]
    m = w.shape[0]
    dt = ctx.dtype(0)
    out_shape = ctx.out_shape(0)
    depthwise = group == c and w.shape[1] == 1 and m == c and group > 1
    has_res = ctx.has_input(3)
    ep = epilogue(ctx, activation, params)

    if depthwise:
        w_dev = ctx.upload(w.reshape(c, -1), dt)
        b_dev = None if bias is None else ctx.upload(bias, dt)
        if ctx.on_gpu and dt in (np.float16, np.float32):
            k = _depthwise_gpu(geo, c, bias is not None, has_res, cuda_activation(activation, params))
            y_shape = (n, c, geo.oh, geo.ow)

            def depthwise_gpu(x, _w=None, _b=None, z=None):
                y = xp.empty(y_shape, dtype=dt)
                args = [xp.ascontiguousarray(x), w_dev] + ([b_dev] if b_dev is not None else [])
                if has_res:
                    args.append(geo.as_2d(z))
                k(*args, y)
                return geo.from_2d(y)

            return depthwise_gpu
        b_b = None if b_dev is None else b_dev.reshape(-1, 1, 1)
        w_taps = w_dev.reshape(1, c, geo.kh, geo.kw)

        def depthwise_xp(x, _w=None, _b=None, z=None):
            xpad = _pad2d(xp, geo.as_2d(x), geo.pt, geo.pb, geo.pl, geo.pr)
            y = xp.zeros((n, c, geo.oh, geo.ow), dtype=work_dtype(dt))
            for i, j, hs, ws in geo.tap_slices():
                y += xpad[:, :, hs, ws] * w_taps[:, :, i:i + 1, j:j + 1]
            y = y.astype(dt, copy=False)
            return geo.from_2d(ep(y, b_b, None if z is None else geo.as_2d(z)))

        return depthwise_xp

    cg = c // group
    mg = m // group
    w_mat = ctx.upload(w.reshape(group, mg, cg * geo.kh * geo.kw), dt)
    b_dev = None if bias is None else ctx.upload(bias.reshape(-1, 1, 1), dt)
    if geo.pointwise and group == 1:
        w0 = w_mat[0]

        def pointwise(x, _w=None, _b=None, z=None):
            y = xp.matmul(w0, geo.as_2d(x).reshape(n, c, geo.h * geo.w)).reshape(n, m, geo.oh, geo.ow)
            return geo.from_2d(ep(y, b_dev, None if z is None else geo.as_2d(z))).reshape(out_shape)

        return pointwise

    def conv_gemm(x, _w=None, _b=None, z=None):
        cols = geo.im2col(xp, geo.as_2d(x), group)
        y = xp.matmul(w_mat, cols).reshape(n, m, geo.oh, geo.ow)
        return geo.from_2d(ep(y, b_dev, None if z is None else geo.as_2d(z))).reshape(out_shape)

    return conv_gemm


@gpu_kernel("Conv")
def conv_op(ctx: GpuContext, **attrs):
    return build_conv(ctx, attrs, "", [])


@gpu_kernel("FusedConv", domain=FUSED_DOMAIN)
def fused_conv_op(ctx: GpuContext, activation, activation_params, input_layout, output_layout, **attrs):
    if input_layout != "NCHW" or output_layout != "NCHW":
        raise ctx.fail("channels-last FusedConv is not supported on the gpu backend")
    return build_conv(ctx, attrs, activation, activation_params)


@gpu_kernel("ConvTranspose")
def conv_transpose_op(ctx: GpuContext, **attrs):
    """GEMM to columns, then each kernel tap's columns added into their strided place."""
    xp = ctx.xp
    x_shape = ctx.shape(0)
    w = ctx.const(1)
    if w is None:
        raise ctx.fail("the weight must be a constant on the gpu backend")
    bias = ctx.const(2) if ctx.has_input(2) else None
    nsp = len(x_shape) - 2
    if nsp not in (1, 2):
        raise ctx.fail(f"only 1-D and 2-D ConvTranspose runs on the gpu backend, found {nsp}-D")
    win, _ = conv_window(ctx, attrs, nsp, w.shape)
    outs, begins, ends, _ = _transpose_geometry(ctx, attrs, win, tuple(x_shape[2:]), ctx.fail)
    if any(b < 0 or e < 0 for b, e in zip(begins, ends)):
        raise ctx.fail("negative ConvTranspose padding is not supported on the gpu backend")
    as2 = (lambda t, d: (d,) + tuple(t)) if nsp == 1 else (lambda t, d: tuple(t))
    h, wd = as2(x_shape[2:], 1)
    kh, kw = as2(win.kernel, 1)
    sh, sw = as2(win.strides, 1)
    dh, dw = as2(win.dilations, 1)
    bt, bl = as2(begins, 0)
    oh, ow = as2(outs, 1)
    group = int(attrs.get("group", 1))
    n, c = x_shape[:2]
    cg = c // group
    mg = w.shape[1]
    m = mg * group
    dt = ctx.dtype(0)
    # (G, Mg*KH*KW, Cg): columns = W_g^T @ x_g
    w_mat = ctx.upload(np.ascontiguousarray(w.reshape(group, cg, mg * kh * kw).transpose(0, 2, 1)), dt)
    b_dev = None if bias is None else ctx.upload(bias.reshape(-1, 1, 1), dt)
    full_h = sh * (h - 1) + (kh - 1) * dh + 1
    full_w = sw * (wd - 1) + (kw - 1) * dw + 1
    big_h, big_w = max(full_h, bt + oh), max(full_w, bl + ow)
    out_shape = ctx.out_shape(0)
    work = work_dtype(dt)

    def conv_transpose(x, _w=None, _b=None):
        cols = xp.matmul(w_mat, x.reshape(n, group, cg, h * wd)).reshape(n, m, kh, kw, h, wd).astype(work, copy=False)
        full = xp.zeros((n, m, big_h, big_w), dtype=work)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + (h - 1) * sh + 1, sh)
                full[:, :, rows, j * dw:j * dw + (wd - 1) * sw + 1:sw] += cols[:, :, i, j]
        y = full[:, :, bt:bt + oh, bl:bl + ow].astype(dt)
        if b_dev is not None:
            y += b_dev
        return y.reshape(out_shape)

    return conv_transpose


# ---------------------------------------------------------------------------- pooling
_POOL_BODY = """
{geom}
const int C = {channels};
int ow = i % OW; int t = i / OW; int oh = t % OH; t /= OH; int c = t % C; int n = t / C;
const int h0 = oh * SH - PT, w0 = ow * SW - PL;
const ptrdiff_t base = (ptrdiff_t)(n * C + c) * H * W;
float acc = {init}; int count = 0;
for (int kh = 0; kh < KH; ++kh) {{
  int ih = h0 + kh * DH;
  bool in_h = ih >= 0 && ih < H;
  bool pad_h = ih >= -PT && ih < H + PB;
  for (int kw = 0; kw < KW; ++kw) {{
    int iw = w0 + kw * DW;
    bool in_w = iw >= 0 && iw < W;
    if ({counted}) ++count;
    if (!(in_h && in_w)) continue;
    float v = (float)x[base + (ptrdiff_t)ih * W + iw];
    {update}
  }}
}}
{finish}
"""


def _pool_gpu(geo: _Geometry, channels: int, is_max: bool, include_pad: bool):
    if is_max:
        update, init, finish = "acc = v > acc || isnan(v) ? v : acc;", "-__int_as_float(0x7f800000)", "y = (T)acc;"
        counted = "false"
    else:
        update, init = "acc += v;", "0.f"
        finish = "y = (T)(count > 0 ? acc / (float)count : 0.f);"
        counted = "pad_h && iw >= -PL && iw < W + PR" if include_pad else "in_h && in_w"
    body = _POOL_BODY.format(geom=geo.constants(), channels=channels, init=init, update=update, finish=finish,
                             counted=counted)
    return cuda_elementwise("raw T x", body, "max_pool" if is_max else "avg_pool")


def _pool_counts(geo: _Geometry, include_pad: bool) -> np.ndarray:
    """(OH, OW) number of window taps that count for an average (host, float64)."""
    def axis(size, out, k, s, d, pb_, pe):
        pos = np.arange(out)[:, None] * s - pb_ + np.arange(k)[None, :] * d
        ok = (pos >= -pb_) & (pos < size + pe) if include_pad else (pos >= 0) & (pos < size)
        return ok.sum(axis=1)

    rows = axis(geo.h, geo.oh, geo.kh, geo.sh, geo.dh, geo.pt, geo.pb)
    cols = axis(geo.w, geo.ow, geo.kw, geo.sw, geo.dw, geo.pl, geo.pr)
    return np.maximum(rows[:, None] * cols[None, :], 1).astype(np.float64)


@gpu_kernel("MaxPool", "AveragePool")
def pool_op(ctx: GpuContext, **attrs):
    xp = ctx.xp
    is_max = ctx.node.op_type == "MaxPool"
    if is_max and len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        raise ctx.fail("MaxPool's Indices output is not supported on the gpu backend")
    x_shape = ctx.shape(0)
    win = Window.from_attrs(ctx, tuple(attrs["kernel_shape"]), attrs.get("strides"), attrs.get("dilations"),
                            attrs.get("pads"), attrs.get("auto_pad", "NOTSET"), attrs.get("ceil_mode", 0))
    geo = _Geometry(ctx, win, x_shape[2:])
    include_pad = bool(attrs.get("count_include_pad", 0))
    n, c = x_shape[:2]
    dt = ctx.dtype(0)
    if ctx.on_gpu and dt in (np.float16, np.float32):
        k = _pool_gpu(geo, c, is_max, include_pad)
        y_shape = (n, c, geo.oh, geo.ow)

        def pool_gpu(x):
            y = xp.empty(y_shape, dtype=dt)
            k(xp.ascontiguousarray(x), y)
            return geo.from_2d(y)

        return pool_gpu
    # a window may run past the end padding in ceil mode: pad far enough, then one strided view
    extra_h = max(geo.pb, (geo.oh - 1) * geo.sh + (geo.kh - 1) * geo.dh + 1 - geo.h - geo.pt)
    extra_w = max(geo.pr, (geo.ow - 1) * geo.sw + (geo.kw - 1) * geo.dw + 1 - geo.w - geo.pl)
    counts = None if is_max else ctx.upload(_pool_counts(geo, include_pad), work_dtype(dt))
    fill = -np.inf if is_max else 0.0

    def pool_xp(x):
        v = x if is_max else x.astype(work_dtype(dt))
        xpad = _pad2d(xp, geo.as_2d(v), geo.pt, extra_h, geo.pl, extra_w, fill)
        s_n, s_c, s_h, s_w = xpad.strides
        win_view = _as_strided(xp)(xpad, (n, c, geo.oh, geo.ow, geo.kh, geo.kw),
                                   (s_n, s_c, s_h * geo.sh, s_w * geo.sw, s_h * geo.dh, s_w * geo.dw))
        if is_max:
            y = win_view.max(axis=(4, 5))
        else:
            y = (win_view.sum(axis=(4, 5)) / counts).astype(dt)
        return geo.from_2d(y)

    return pool_xp


@gpu_kernel("GlobalAveragePool", "GlobalMaxPool")
def global_pool_op(ctx: GpuContext):
    rank = len(ctx.shape(0))
    axes = tuple(range(2, rank))
    if ctx.node.op_type == "GlobalMaxPool":
        return lambda x: x.max(axis=axes, keepdims=True)
    work = work_dtype(ctx.dtype(0))
    return lambda x: x.mean(axis=axes, keepdims=True, dtype=work).astype(x.dtype, copy=False)


@gpu_kernel("LRN")
def lrn_op(ctx: GpuContext, alpha, beta, bias, size):
    xp = ctx.xp
    c = ctx.shape(0)[1]
    lo = (size - 1) // 2
    hi = size - 1 - lo
    work = work_dtype(ctx.dtype(0))

    def lrn(x):
        v = x.astype(work)
        sq = v * v
        pad = [(0, 0)] * v.ndim
        pad[1] = (lo, hi)
        sq = xp.pad(sq, pad)
        acc = sq[:, 0:c].copy()
        for k in range(1, size):
            acc += sq[:, k:k + c]
        return (v / (bias + (alpha / size) * acc) ** beta).astype(x.dtype, copy=False)

    return lrn


# ------------------------------------------------------------------------------- GEMM
def _build_gemm(ctx: GpuContext, alpha, beta, transA, transB, activation: str, params):
    xp = ctx.xp
    dt = ctx.dtype(0)
    b = ctx.const(1)
    c = ctx.const(2) if ctx.has_input(2) else None
    b_dev = None
    if b is not None:
        bm = b.T if transB else b
        b_dev = ctx.upload(np.ascontiguousarray(bm * np.asarray(alpha, bm.dtype) if alpha != 1 else bm), dt)
    c_dev = None
    if c is not None:
        c_dev = ctx.upload(c * np.asarray(beta, c.dtype) if beta != 1 else c, dt)
    ep = epilogue(ctx, activation, params)
    out_dt = ctx.out_dtype(0)

    def gemm(a, b_run=None, c_run=None):
        a = a.T if transA else a
        if b_dev is not None:
            y = xp.matmul(a, b_dev)
        else:
            y = xp.matmul(a, b_run.T if transB else b_run)
            if alpha != 1:
                y *= alpha
        if c_run is not None:
            term = c_run * beta if beta != 1 else c_run
        else:
            term = c_dev
        if y.dtype != out_dt:
            y = y.astype(out_dt)
        return ep(y, term)

    return gemm


@gpu_kernel("Gemm")
def gemm_op(ctx: GpuContext, alpha, beta, transA, transB):
    return _build_gemm(ctx, alpha, beta, transA, transB, "", [])


@gpu_kernel("FusedGemm", domain=FUSED_DOMAIN)
def fused_gemm_op(ctx: GpuContext, activation, activation_params, alpha, beta, transA, transB):
    return _build_gemm(ctx, alpha, beta, transA, transB, activation, activation_params)


def _build_matmul(ctx: GpuContext, activation: str, params, bias_input: int | None):
    xp = ctx.xp
    dt = ctx.dtype(0)
    b = ctx.const(1)
    b_dev = None if b is None else ctx.upload(b, dt)
    bias = ctx.const(bias_input) if bias_input is not None and ctx.has_input(bias_input) else None
    bias_dev = None if bias is None else ctx.upload(bias, dt)
    ep = epilogue(ctx, activation, params)
    out_shape = ctx.static_out_shape(0)

    def matmul(a, b_run=None, bias_run=None):
        y = xp.matmul(a, b_dev if b_run is None else b_run)
        if out_shape is not None and y.shape != out_shape:
            y = y.reshape(out_shape)
        if not (activation or bias_dev is not None or bias_run is not None):
            return y
        return ep(y, bias_dev if bias_run is None else bias_run)

    return matmul


@gpu_kernel("MatMul")
def matmul_op(ctx: GpuContext):
    return _build_matmul(ctx, "", [], None)


@gpu_kernel("FusedMatMul", domain=FUSED_DOMAIN)
def fused_matmul_op(ctx: GpuContext, activation, activation_params):
    return _build_matmul(ctx, activation, activation_params, 2)

