"""Every convolution method of edgeinfer.kernels.conv, forced onto shapes it may not be chosen
for, against a plain reference (one multiply-add per kernel tap on the zero-padded input, in
float64): odd sizes, padding, strides, dilations, groups, tiny and large maps.
"""
import itertools

import numpy as np
import pytest

from edgeinfer.kernels import conv as conv_module
from edgeinfer.kernels import conv_methods
from opcheck import run_edgeinfer


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def reference_conv(x, w, strides, pads, dilations, group):
    """Direct 2-D convolution in float64: a sum over the kernel taps of strided input views."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ho = (h + pads[0] + pads[2] - (kh - 1) * dh - 1) // sh + 1
    wo = (wd + pads[1] + pads[3] - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((n, m, ho, wo))
    mg = m // group
    for g, i, j in itertools.product(range(group), range(kh), range(kw)):
        patch = xp[:, g * cg:(g + 1) * cg, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
        y[:, g * mg:(g + 1) * mg] += np.einsum("nchw,mc->nmhw", patch, w[g * mg:(g + 1) * mg, :, i, j].astype(np.float64))
    return y


def run_forced(monkeypatch, method, x, w, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, bias=None):
    chosen = []

    def choose(*args):
        chosen.append(method)
        return method

    monkeypatch.setattr(conv_module, "_choose_method", choose)
    attrs = {"strides": list(strides), "pads": list(pads), "dilations": list(dilations), "group": group}
    inputs = [x, w] + ([bias] if bias is not None else [])
    (y,) = run_edgeinfer("Conv", inputs, attrs, const_inputs=tuple(range(1, len(inputs))))
    assert chosen, "the forced method was not asked for"
    return y


def check(y, x, w, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, bias=None):
    want = reference_conv(x, w, strides, pads, dilations, group)
    if bias is not None:
        want += bias.reshape(1, -1, 1, 1)
    assert y.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5 * scale)


# (x shape, w shape, strides, pads, dilations, group)
DENSE = [
    ((1, 3, 17, 19), (8, 3, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),  # a 7x7/2 stem, odd sizes
    ((2, 3, 21, 20), (5, 3, 5, 5), (2, 2), (1, 2, 2, 1), (1, 1), 1),  # uneven pads, batch 2
    ((1, 4, 13, 12), (6, 4, 5, 5), (2, 1), (2, 2, 2, 2), (1, 1), 1),  # stride on one axis only
    ((1, 4, 15, 16), (6, 4, 3, 3), (3, 2), (1, 0, 0, 1), (1, 1), 1),  # stride 3
    ((1, 6, 19, 17), (4, 6, 3, 3), (2, 2), (2, 2, 2, 2), (2, 2), 1),  # strided and dilated
    ((1, 6, 20, 18), (4, 6, 3, 3), (2, 2), (2, 2, 2, 2), (3, 1), 1),  # dilation 3 vs stride 2
    ((1, 8, 9, 11), (8, 2, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4),  # grouped, strided
    ((1, 3, 3, 3), (2, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),  # tiny map, one output row of taps
    ((1, 3, 2, 2), (2, 3, 3, 3), (2, 2), (0, 0, 1, 1), (1, 1), 1),  # 1x1 output reading padding
    ((1, 3, 64, 66), (16, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),  # a large stem map
    ((1, 5, 12, 12), (7, 5, 4, 4), (4, 4), (0, 0, 0, 0), (1, 1), 1),  # patchify: stride == kernel
    ((1, 5, 10, 9), (7, 5, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),  # stride 1 (the padded-copy path)
]


@pytest.mark.parametrize("x_shape,w_shape,strides,pads,dilations,group", DENSE)
def test_im2col_matches_the_reference(monkeypatch, x_shape, w_shape, strides, pads, dilations, group):
    x, w, b = rand(*x_shape), rand(*w_shape, seed=1), rand(w_shape[0], seed=2)
    y = run_forced(monkeypatch, "im2col", x, w, strides, pads, dilations, group, bias=b)
    check(y, x, w, strides, pads, dilations, group, bias=b)


@pytest.mark.parametrize("x_shape,w_shape,strides,pads,dilations,group", [c for c in DENSE if c[5] == 1])
def test_tap_gemm_matches_the_reference(monkeypatch, x_shape, w_shape, strides, pads, dilations, group):
    x, w = rand(*x_shape), rand(*w_shape, seed=1)
    for method in ("tap_gemm", "tap_stacked"):
        if method == "tap_stacked" and strides != (1, 1):
            continue  # stacks the taps of one phase: stride 1 only
        check(run_forced(monkeypatch, method, x, w, strides, pads, dilations), x, w, strides, pads, dilations)


@pytest.mark.parametrize("x_shape,strides,pads", [
    ((1, 24, 40, 36), (1, 1), (1, 1, 1, 1)),  # planes above the blocked-transpose threshold
    ((1, 13, 33, 35), (2, 2), (0, 1, 1, 0)),  # channels not a multiple of the block, stride 2
    ((2, 9, 32, 32), (1, 1), (2, 2, 2, 2)),
    ((1, 4, 40, 40), (1, 1), (1, 1, 1, 1)),  # fewer channels than one block
    ((1, 16, 5, 7), (1, 1), (1, 1, 1, 1)),  # small planes: one copy
])
def test_depthwise_nhwc_matches_the_reference(monkeypatch, x_shape, strides, pads):
    c = x_shape[1]
    for k in (3, 5):
        x, w = rand(*x_shape), rand(c, 1, k, k, seed=k)
        p = pads if k == 3 else tuple(2 * v for v in pads)
        check(run_forced(monkeypatch, "depthwise_nhwc", x, w, strides, p, group=c), x, w, strides, p, group=c)


def test_depthwise_transpose_to_channels_last_in_blocks():
    for shape in [(1, 24, 32, 32), (2, 13, 40, 33), (1, 8, 64, 64), (1, 40, 8, 8)]:
        x = rand(*shape)
        dst = np.full(shape[:1] + shape[2:] + shape[1:2], np.nan, np.float32)
        conv_methods._to_channels_last(x, dst)
        np.testing.assert_array_equal(dst, x.transpose(0, 2, 3, 1))


def test_strided_im2col_columns_cover_every_tap_once():
    from edgeinfer.kernels.window import Window

    for kernel, strides, dilations in [((7, 7), (2, 2), (1, 1)), ((3, 5), (3, 2), (2, 1)), ((4, 4), (4, 4), (1, 1))]:
        win = Window(kernel, strides, dilations, (1, 1, 1, 1))
        outs, begins, _ = win.resolve((23, 21), ValueError)
        grid = conv_methods.phase_grid(win, (23, 21), outs, begins)
        cols = conv_methods.phase_columns(win, grid, 3)
        assert sorted(cols.order.tolist()) == list(range(3 * kernel[0] * kernel[1]))
        assert cols.blocks[-1][5] == len(cols.order)


@pytest.mark.parametrize("x_shape,w_shape,method", [
    ((1, 128, 14, 14), (32, 128, 3, 3), "tap_gemm"),  # narrowing: per-tap GEMMs at any size
    ((1, 128, 7, 7), (32, 128, 3, 3), "tap_gemm"),
    ((1, 96, 28, 28), (96, 96, 3, 3), "im2col"),  # as many outputs as inputs on a small map
    ((1, 3, 224, 224), (64, 3, 7, 7), "im2col"),  # strided: im2col over the stride phases
])
def test_method_choice(x_shape, w_shape, method):
    from edgeinfer.kernels.window import Window

    win = Window(tuple(w_shape[2:]), (1, 1) if w_shape[1] > 3 else (2, 2), (1, 1), (1, 1, 1, 1))
    outs, begins, ends = win.resolve(tuple(x_shape[2:]), ValueError)
    assert conv_module._choose_method(x_shape, w_shape, win, 1, outs, begins, ends) == method


# ---------------------------------------------------------------------------------- winograd
def _forced_winograd(monkeypatch, x, w, pads, inputs=(), attrs=None, op="Conv", domain=""):
    """Run Conv/FusedConv with the Winograd method forced; returns the output."""
    monkeypatch.setattr(conv_module, "_choose_method", lambda *a: "winograd")
    all_inputs = [x, w] + list(inputs)
    full = {"pads": list(pads), **(attrs or {})}
    (y,) = run_edgeinfer(op, all_inputs, full, const_inputs=tuple(range(1, len(all_inputs))), domain=domain)
    return y


def _close(y, want, rtol):
    assert y.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(y.astype(np.float64) - want).max()) / scale
    assert err <= rtol, f"relative error {err:.1e} > {rtol:.0e}"


@pytest.mark.parametrize("h,w", [(1, 1), (1, 2), (2, 3), (3, 3), (4, 5), (5, 4), (6, 7), (7, 9), (8, 8), (9, 6)])
@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 0, 2, 2), (2, 1, 0, 2)])
def test_winograd_odd_sizes_and_pads(monkeypatch, h, w, pads):
    x, wt = rand(1, 3, h, w), rand(5, 3, 3, 3, seed=1)
    if h + pads[0] + pads[2] < 3 or w + pads[1] + pads[3] < 3:
        pytest.skip("the kernel does not fit")
    _close(_forced_winograd(monkeypatch, x, wt, pads), reference_conv(x, wt, (1, 1), pads, (1, 1), 1), 1e-5)


@pytest.mark.parametrize("x_shape,m,pads", [
    ((2, 64, 29, 31), 64, (1, 1, 1, 1)),  # batch 2, odd sizes, several bands
    ((1, 1, 9, 9), 1, (0, 0, 0, 0)),  # one channel, no padding
    ((2, 3, 17, 8), 7, (1, 2, 1, 0)),
    ((1, 128, 60, 58), 160, (1, 1, 1, 1)),  # large: many bands of tile rows
])
def test_winograd_channels_batch_and_large_maps(monkeypatch, x_shape, m, pads):
    x, wt = rand(*x_shape), rand(m, x_shape[1], 3, 3, seed=1)
    _close(_forced_winograd(monkeypatch, x, wt, pads), reference_conv(x, wt, (1, 1), pads, (1, 1), 1), 1e-5)


def test_winograd_float64_and_auto_pad(monkeypatch):
    x, wt = rand(2, 6, 11, 10).astype(np.float64), rand(4, 6, 3, 3, seed=1).astype(np.float64)
    y = _forced_winograd(monkeypatch, x, wt, (0, 0, 0, 0), attrs={"auto_pad": "SAME_UPPER"})
    assert y.dtype == np.float64
    _close(y, reference_conv(x, wt, (1, 1), (1, 1, 1, 1), (1, 1), 1), 1e-12)
    x16 = rand(1, 5, 7, 6).astype(np.float16)
    y16 = _forced_winograd(monkeypatch, x16, rand(3, 5, 3, 3, seed=2).astype(np.float16), (1, 1, 1, 1))
    assert y16.dtype == np.float16


@pytest.mark.parametrize("x_shape,m", [((1, 3, 7, 9), 5), ((2, 64, 16, 15), 32)])
def test_winograd_fused_epilogue(monkeypatch, x_shape, m):
    """Bias, residual and activation after the Winograd output transform (FusedConv)."""
    x, wt = rand(*x_shape), rand(m, x_shape[1], 3, 3, seed=1)
    b = rand(m, seed=2)
    z = rand(x_shape[0], m, *x_shape[2:], seed=3)
    pads = (1, 1, 1, 1)
    y = _forced_winograd(monkeypatch, x, wt, pads, inputs=[b, z], attrs={"activation": "Relu"}, op="FusedConv",
                         domain="edgeinfer")
    want = np.maximum(reference_conv(x, wt, (1, 1), pads, (1, 1), 1) + b.reshape(1, -1, 1, 1) + z, 0)
    _close(y, want, 1e-5)


@pytest.mark.parametrize("x_shape,w_shape,method", [
    ((1, 256, 14, 14), (256, 256, 3, 3), "winograd"),
    ((1, 128, 56, 56), (256, 128, 3, 3), "winograd"),
    ((1, 512, 7, 7), (512, 512, 3, 3), "im2col"),  # too small a map: the transforms dominate
    ((1, 64, 56, 56), (64, 64, 3, 3), "tap_gemm"),  # too few channels for the short GEMMs
])
def test_winograd_choice(x_shape, w_shape, method):
    from edgeinfer.kernels.window import Window

    win = Window((3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    outs, begins, ends = win.resolve(tuple(x_shape[2:]), ValueError)
    assert conv_module._choose_method(x_shape, w_shape, win, 1, outs, begins, ends) == method
