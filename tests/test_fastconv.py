"""tinyconv.engine.fastconv, the convolution ``Conv2d`` runs, against the
readable pair of tinyconv.engine.functional (itself checked against finite
differences and pixel loops in test_layers.py).

The tiling and the two forms of dx are driven through the keyword tuning
arguments: small tiles force many tiles per image (one output pixel each at
the smallest), ``dx_crossover`` 0 takes the flipped-kernel convolution
wherever it applies and a huge value never.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyconv.engine import fastconv
from tinyconv.engine import functional as F
from tinyconv.engine.layers import Conv2d

ALWAYS, NEVER = 0, 10**9  # dx_crossover: the convolution form wherever it applies / never

# ----------------------------------------------------------------------------
# the tiled convolution: every tiling agrees with the plain im2col formula


def plain_conv(x, w, b, stride, padding):
    f = w.shape[0]
    cols = F.im2col(x, w.shape[2:], stride, padding)  # (N, CKK, P)
    oh = F.output_size(x.shape[2], w.shape[2], stride[0], padding[0])
    ow = F.output_size(x.shape[3], w.shape[3], stride[1], padding[1])
    y = (w.reshape(f, -1) @ cols + b[:, None]).reshape(x.shape[0], f, oh, ow)
    return y, cols


@given(
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    h=st.integers(3, 12),
    w=st.integers(3, 12),
    f=st.integers(1, 4),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 1), st.integers(0, 1)),
    tile=st.sampled_from([(1, 1), (64, 3), (400, 5), (1 << 21, 768)]),
    direct=st.sampled_from([ALWAYS, NEVER]),
    seed=st.integers(0, 2**16),
)
def test_tiled_convolution_equals_the_plain_formula(
    n, c, h, w, f, kernel, stride, padding, tile, direct, seed
):
    """Whatever the tile size (one output pixel, a few rows, whole images)
    and whichever form dx takes (the flipped-kernel convolution wherever it
    applies, or col2im everywhere), forward, dx, dW and db equal the one-shot
    im2col / col2im products, in float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((f, c, *kernel))
    bias = rng.standard_normal(f)
    tuning = {"tile_bytes": tile[0], "min_columns": tile[1], "dx_crossover": direct}
    y, cache = fastconv.conv2d_forward(x, weight, bias, stride, padding, **tuning)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = fastconv.conv2d_backward(dy, cache, **tuning)
    dx_only, no_dw, no_db = fastconv.conv2d_backward(dy, cache, param_grads=False, **tuning)
    want, cols = plain_conv(x, weight, bias, stride, padding)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    dy2 = dy.reshape(n, f, -1)
    want_dx = F.col2im(weight.reshape(f, -1).T @ dy2, x.shape, kernel, stride, padding)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx_only, want_dx, rtol=1e-12, atol=1e-12)
    want_dw = np.einsum("nfp,nkp->fk", dy2, cols).reshape(weight.shape)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dy2.sum(axis=(0, 2)), rtol=1e-12, atol=1e-12)
    assert no_dw is None and no_db is None
    assert y.dtype == dx.dtype == dw.dtype == np.float64


def test_tiles_cover_every_output_pixel_once():
    for n, oh, ow, ckk in [(1, 224, 224, 576), (8, 14, 14, 4608), (256, 7, 7, 288), (3, 5, 1000, 9)]:
        covered = np.zeros((n, oh), dtype=int)
        for n0, n1, r0, r1 in fastconv._conv_tiles(n, oh, ow, ckk, 4):
            covered[n0:n1, r0:r1] += 1
        assert (covered == 1).all()


# ----------------------------------------------------------------------------
# the fast path against the reference pair, both forms of dx named


@st.composite
def conv_cases(draw):
    """A convolution whose kernel fits its padded input, with stride 1 (where
    the flipped-kernel form applies) drawn often, and a tiling."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.sampled_from([(1, 1), (1, 1), (1, 2), (2, 1), (2, 3), (3, 3)]))
    ph, pw = draw(st.integers(0, kh)), draw(st.integers(0, kw))  # also padding >= kernel
    h = draw(st.integers(max(1, kh - 2 * ph), max(1, kh - 2 * ph) + 6))
    w = draw(st.integers(max(1, kw - 2 * pw), max(1, kw - 2 * pw) + 6))
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    tile = draw(st.sampled_from([(1, 1), (8, 1), (200, 4), (4 << 20, 768)]))
    return dict(n=n, c=c, f=f, h=h, w=w, kernel=(kh, kw), stride=stride, padding=(ph, pw), tile=tile,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))  # fmt: skip


def _form_applies(case):
    kh, kw = case["kernel"]
    ph, pw = case["padding"]
    return case["stride"] == (1, 1) and ph < kh and pw < kw and case["f"] <= case["c"]


@given(case=conv_cases())
def test_fast_path_equals_the_reference_pair_in_both_dx_forms(case):
    """y, dx (col2im and, where it applies, the flipped-kernel convolution),
    dW and db of fastconv equal functional's im2col -> GEMM / col2im pair."""
    rng = np.random.default_rng(case["seed"])
    n, c, f, h, w = (case[k] for k in "ncfhw")
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((f, c, *case["kernel"]))
    bias = rng.standard_normal(f) if case["bias"] else None
    args = case["stride"], case["padding"]
    want_y, ref_cache = F.conv2d_forward(x, weight, bias, *args)
    dy = rng.standard_normal(want_y.shape)
    want_dx, want_dw, want_db = F.conv2d_backward(dy, ref_cache)
    tiles = {"tile_bytes": case["tile"][0], "min_columns": case["tile"][1]}
    y, cache = fastconv.conv2d_forward(x, weight, bias, *args, **tiles)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    for crossover, form in ((NEVER, "col2im"), (ALWAYS, "convolution" if _form_applies(case) else "col2im")):
        assert fastconv.dx_form(cache, dx_crossover=crossover) == form
        dx, dw, db = fastconv.conv2d_backward(dy, cache, dx_crossover=crossover, **tiles)
        np.testing.assert_allclose(dx, want_dx, rtol=1e-11, atol=1e-12, err_msg=form)
        np.testing.assert_allclose(dw, want_dw, rtol=1e-11, atol=1e-12, err_msg=form)
        np.testing.assert_allclose(db, want_db, rtol=1e-12, atol=1e-12, err_msg=form)
        dx_only, none_w, none_b = fastconv.conv2d_backward(dy, cache, False, dx_crossover=crossover, **tiles)
        np.testing.assert_allclose(dx_only, want_dx, rtol=1e-11, atol=1e-12, err_msg=form)
        assert none_w is None and none_b is None


def test_the_reference_pair_caches_the_columns_and_the_fast_one_the_input():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5))
    w = np.ones((4, 3, 3, 3))
    _, ref = F.conv2d_forward(x, w, None, 1, 1)
    _, fast = fastconv.conv2d_forward(x, w, None, 1, 1)
    assert ref.cols.shape == (2, 27, 30) and ref.x_shape == fast.x_shape == x.shape
    assert fast.x is x and fast.stride == ref.stride == (1, 1) and fast.padding == (1, 1)


def test_conv2d_exposes_the_form_of_dx_it_took_and_passes_its_tuning():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 8))
    conv = Conv2d(4, 2, 3, padding=1, seed=0).astype(np.float64)  # F <= C, 72 pixels per channel
    assert conv.dx_form is None  # no backward yet
    y = conv.forward(x)
    want = conv.backward(np.ones_like(y))
    assert conv.dx_form == "convolution"
    conv.tuning = {"dx_crossover": NEVER, "tile_bytes": 64, "min_columns": 1}
    conv.forward(x)
    np.testing.assert_allclose(conv.backward(np.ones_like(y)), want, rtol=1e-12, atol=1e-12)
    assert conv.dx_form == "col2im"
    wide = Conv2d(2, 4, 3, padding=1, seed=0)  # F > C: always col2im
    wide.forward(np.ones((1, 2, 5, 5), np.float32))
    wide.backward(np.ones((1, 4, 5, 5), np.float32))
    assert wide.dx_form == "col2im"


def test_unknown_tuning_options_are_refused():
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(TypeError, match="unknown tuning option.*'tile_size'.*tile_bytes"):
        fastconv.conv2d_forward(x, np.ones((1, 1, 3, 3)), None, tile_size=10)
    with pytest.raises(TypeError):
        fastconv.TUNING["tile_bytes"] = 1  # the defaults are read-only
