"""tinyconv.engine.shiftconv: the shifted-GEMM convolution equals the plain
im2col / col2im formulas (float64, hypothesis-drawn shapes), a finite-difference
check, and the same results on the CuPy-strict fake device."""

from __future__ import annotations

import numpy as np
import pytest
from fake_device import FakeArray
from gradcheck import assert_gradients_close, numerical_gradient
from hypothesis import given
from hypothesis import strategies as st

from tinyconv.engine import backend, shiftconv
from tinyconv.engine import functional as F
from tinyconv.engine.functional import col2im, im2col
from tinyconv.engine.layers import Conv2d


def reference(x, weight, bias, padding, dy):
    """The textbook pair: y = W₂·im2col(x) + b; dx = col2im(W₂ᵀ·dy); dW₂ = Σ_n dy·colsᵀ."""
    f, c, kh, kw = weight.shape
    n = x.shape[0]
    cols = im2col(x, (kh, kw), 1, padding)  # (N, C·kh·kw, P)
    w2 = weight.reshape(f, -1)
    y = np.einsum("fk,nkp->nfp", w2, cols)
    if bias is not None:
        y = y + bias[None, :, None]
    dy2 = dy.reshape(n, f, -1)
    dx = col2im(np.einsum("fk,nfp->nkp", w2, dy2), x.shape, (kh, kw), 1, padding)
    dw = np.einsum("nfp,nkp->fk", dy2, cols).reshape(weight.shape)
    return y, dx, dw, dy2.sum(axis=(0, 2))


@st.composite
def conv_cases(draw):
    kh = draw(st.sampled_from([1, 2, 3, 5]))
    kw = draw(st.sampled_from([kh, 1, 2, 3, 5]))  # square and not
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    chunk = draw(st.sampled_from([None, None, 1, 7, 40]))  # whole layer, or chunks of grid positions
    group = draw(st.sampled_from([None, 1, 60, 200]))  # whole batch; one image; some images per group
    return (n, c, h, w), (f, c, kh, kw), (ph, pw), bias, seed, (chunk, group)


def _arrays(case, dtype=np.float64):
    x_shape, w_shape, padding, with_bias, seed, _ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype) if with_bias else None
    return x, weight, bias, padding, rng


@given(conv_cases())
def test_equals_the_im2col_col2im_formulas(case):
    x, weight, bias, padding, rng = _arrays(case)
    chunk, group = case[-1]
    y, cache = shiftconv.conv2d_forward(x, weight, bias, padding, chunk_columns=chunk, group_columns=group)
    dy = rng.standard_normal(y.shape)
    y_ref, dx_ref, dw_ref, db_ref = reference(x, weight, bias, padding, dy)
    np.testing.assert_allclose(y.reshape(y_ref.shape), y_ref, rtol=1e-12, atol=1e-12)
    dx, dw, db = shiftconv.conv2d_backward(dy, cache)
    assert dx.shape == x.shape and dw.shape == weight.shape
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-12)
    dx2, none_w, none_b = shiftconv.conv2d_backward(dy, cache, param_grads=False)
    assert none_w is None and none_b is None
    np.testing.assert_array_equal(dx2, dx)


@given(conv_cases())
def test_the_blas_path_and_the_matmul_fallback_agree(case):
    x, weight, bias, padding, rng = _arrays(case, np.float32)
    y, cache = shiftconv.conv2d_forward(x, weight, bias, padding)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, _ = shiftconv.conv2d_backward(dy, cache)
    saved = backend._blas_gemm
    backend._blas_gemm = {}  # as on a machine whose BLAS has no cblas
    try:
        y2, cache2 = shiftconv.conv2d_forward(x, weight, bias, padding)
        dx2, dw2, _ = shiftconv.conv2d_backward(dy, cache2)
    finally:
        backend._blas_gemm = saved
    assert y.dtype == dx.dtype == dw.dtype == np.float32
    for got, want in ((y, y2), (dx, dx2), (dw, dw2)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_gradients_against_central_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 6))
    weight = rng.standard_normal((4, 3, 3, 2))
    bias = rng.standard_normal(4)
    y, cache = shiftconv.conv2d_forward(x, weight, bias, (1, 2))
    dy = rng.standard_normal(y.shape)
    dx, dw, db = shiftconv.conv2d_backward(dy, cache)

    def loss():  # numerical_gradient perturbs x, weight and bias in place
        return float((shiftconv.conv2d_forward(x, weight, bias, (1, 2))[0] * dy).sum())

    assert_gradients_close(dx, numerical_gradient(loss, x), "shiftconv dx")
    assert_gradients_close(dw, numerical_gradient(loss, weight), "shiftconv dW")
    assert_gradients_close(db, numerical_gradient(loss, bias), "shiftconv db")


def test_suits_is_the_stated_rule():
    vgg = (1, 64, 224, 224), (64, 64, 3, 3)
    assert shiftconv.suits(*vgg, 1, 1) and shiftconv.suits(*vgg, (1, 1), (1, 1))
    assert not shiftconv.suits(*vgg, 2, 1) and not shiftconv.suits(*vgg, (1, 2), 1)
    rgb = (1, 3, 224, 224), (64, 3, 3, 3)
    assert not shiftconv.suits(*rgb, 1, 1)  # RGB input: im2col's columns are small
    assert shiftconv.suits(*rgb, 1, 1, min_channels=1)
    # pixels per filter: 512 -> 512 at 28x28 on one image (784 pixels) stays tiled, at batch 8 not
    deep = (512, 512, 3, 3)
    assert not shiftconv.suits((1, 512, 28, 28), deep, 1, 1)
    assert shiftconv.suits((8, 512, 28, 28), deep, 1, 1)
    assert shiftconv.suits((1, 512, 28, 28), deep, 1, 1, pixels_per_filter=1)
    # waste: at 14x14 a batch's grid is 256 positions per 196 kept (1.28)
    assert not shiftconv.suits((8, 512, 14, 14), deep, 1, 1)
    assert shiftconv.suits((8, 512, 14, 14), deep, 1, 1, max_waste=1.3)


@pytest.mark.parametrize("padding", [(0, 0), (1, 1), (2, 1)])
def test_on_the_fake_device_equals_numpy(fake, padding):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6))
    weight = rng.standard_normal((4, 3, 3, 3))
    bias = rng.standard_normal(4)
    y, cache = shiftconv.conv2d_forward(x, weight, bias, padding)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = shiftconv.conv2d_backward(dy, cache)
    yd, cached = shiftconv.conv2d_forward(fake.asarray(x), fake.asarray(weight), fake.asarray(bias), padding)
    dxd, dwd, dbd = shiftconv.conv2d_backward(fake.asarray(dy), cached)
    for got, want in ((yd, y), (dxd, dx), (dwd, dw), (dbd, db)):
        assert isinstance(got, FakeArray)
        np.testing.assert_allclose(fake.asnumpy(got), want, rtol=1e-12, atol=1e-12)


LAX = {"shift_max_waste": 10.0}  # small test images: let the shifted path take them


def test_conv2d_dispatches_by_the_stated_rule():
    """Stride 1 with >= shift_min_channels input channels: shifted GEMMs;
    strided, few channels, or the rule turned off by tuning: tiled im2col.
    Each way the layer equals the reference pair."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 8, 6, 7))
    for conv, tuning, form in [
        (Conv2d(8, 5, 3, padding=1, seed=0), {}, "col2im"),  # a 6x7 image: its grid is mostly padding
        (Conv2d(8, 5, 3, padding=1, seed=0), LAX, "shifted"),
        (Conv2d(8, 5, 3, padding=1, seed=0), {**LAX, "shift_min_channels": 10**9}, "col2im"),
        (Conv2d(8, 5, 3, stride=2, padding=1, seed=0), LAX, "col2im"),
        (Conv2d(8, 5, (2, 3), padding=(0, 2), seed=0), {**LAX, "shift_chunk_columns": 5}, "shifted"),
        (Conv2d(8, 5, 3, padding=1, seed=0), {**LAX, "shift_pixels_per_filter": 100}, "col2im"),
        (Conv2d(8, 5, 3, padding=1, seed=0), {**LAX, "shift_group_columns": 1}, "shifted"),
    ]:
        conv = conv.astype(np.float64)
        conv.tuning = tuning
        y = conv.forward(x)
        weight, bias = conv.params["weight"], conv.params["bias"]
        want_y, ref = F.conv2d_forward(x, weight, bias, conv.stride, conv.padding)
        dy = rng.standard_normal(y.shape)
        dx = conv.backward(dy)
        want_dx, want_dw, want_db = F.conv2d_backward(dy, ref)
        assert conv.dx_form == form
        np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(conv.grads["weight"], want_dw, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(conv.grads["bias"], want_db, rtol=1e-12, atol=1e-12)


def test_conv2d_on_the_fake_device_takes_the_shifted_path(fake):
    rng = np.random.default_rng(8)
    x, dy = rng.standard_normal((2, 8, 5, 5)), rng.standard_normal((2, 3, 5, 5))
    host = Conv2d(8, 3, 3, padding=1, seed=1).astype(np.float64)
    device = Conv2d(8, 3, 3, padding=1, seed=1).astype(np.float64).to("fake")
    host.tuning = device.tuning = LAX
    want_y, got_y = host.forward(x), device.forward(fake.asarray(x))
    want, got = host.backward(dy), device.backward(fake.asarray(dy))
    assert device.dx_form == host.dx_form == "shifted"
    assert isinstance(got, FakeArray) and isinstance(device.grads["weight"], FakeArray)
    np.testing.assert_allclose(fake.asnumpy(got_y), want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fake.asnumpy(got), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fake.asnumpy(device.grads["weight"]), host.grads["weight"], rtol=1e-12)


@pytest.mark.parametrize("group_columns", [1, 2 * 8 * 9, 3 * 8 * 9, None])
def test_image_groups_with_a_short_last_group(group_columns):
    """5 images of 6x7 padded to 8x9: groups of 1, 2 (2+2+1), 3 (3+2) or all 5 images."""
    rng = np.random.default_rng(11)
    x, weight = rng.standard_normal((5, 3, 6, 7)), rng.standard_normal((4, 3, 3, 3))
    bias = rng.standard_normal(4)
    y, cache = shiftconv.conv2d_forward(x, weight, bias, (1, 1), group_columns=group_columns)
    assert cache.images == {1: 1, 144: 2, 216: 3, None: 5}[group_columns]
    dy = rng.standard_normal(y.shape)
    want = reference(x, weight, bias, (1, 1), dy)
    got = (y.reshape(want[0].shape), *shiftconv.conv2d_backward(dy, cache))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_the_cache_reads_like_the_other_convolution_caches():
    """x_shape, weight, stride, padding by name, as tinyconv.methods.deconvnet reads a Conv2d's cache."""
    rng = np.random.default_rng(12)
    x, weight = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((6, 3, 3, 2))
    _, cache = shiftconv.conv2d_forward(x, weight, None, (1, 0))
    assert cache.x_shape == x.shape and cache.stride == (1, 1) and cache.padding == (1, 0)
    np.testing.assert_array_equal(cache.weight, weight)
