"""Tests of tinyconv.engine.layers (and the functional pairs they run) against independent references.

- every backward pass (input and parameter gradients) against central finite
  differences in float64, over shapes, kernels, strides and paddings drawn by
  hypothesis (inputs kept away from kinks);
- the three ReLU rules against their formulas;
- im2col/col2im adjointness, and conv / max-pool / avg-pool / adaptive-pool
  forward passes against naive pixel loops written here only (and against
  torch.nn.functional when PyTorch is installed);
- input checks and dtype preservation.

The worst relative error of each gradient check is printed at the end of the
run (see gradcheck.py and conftest.py).
"""

from __future__ import annotations

import importlib.util
import re
import warnings

import numpy as np
import pytest
from gradcheck import assert_gradients_close, numerical_gradient, relative_error
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyconv.engine.functional import col2im, im2col, relu_backward, unpool
from tinyconv.engine.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    layer_from_spec,
)
from tinyconv.errors import RuleError, ShapeError, TinyconvError

# ----------------------------------------------------------------------------
# strategies: small shapes so thousands of finite differences stay fast

seeds = st.integers(0, 2**32 - 1)
sizes_up_to_9 = st.tuples(st.integers(1, 9), st.integers(1, 9))


@st.composite
def window_cases(draw, max_kernel=4, max_stride=3, max_padding=2, half_kernel_padding=False):
    """(n, c, h, w, kernel, stride, padding) with the window fitting the padded input."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    if half_kernel_padding:  # pools: padding at most half the kernel, as PyTorch
        ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    else:
        ph, pw = draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding))
    h = draw(st.integers(max(1, kh - 2 * ph), max(1, kh - 2 * ph) + 3))
    w = draw(st.integers(max(1, kw - 2 * pw), max(1, kw - 2 * pw) + 3))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return dict(n=n, c=c, h=h, w=w, kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw), seed=draw(seeds))


def distinct_values(rng, shape, gap=1e-2):
    """Values that differ pairwise by >= gap: a scaled random permutation."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size / 2) * gap).reshape(shape)


def away_from_zero(rng, shape, margin=0.1):
    """|x| in [margin, 1], random signs."""
    return rng.uniform(margin, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


# ----------------------------------------------------------------------------
# the gradient check shared by every layer


def check_layer_gradients(layer, x, label, rng, forward=None):
    """Compare ``layer.backward`` with central differences of L = <layer(x), r>.

    Checks ∂L/∂x and ∂L/∂p for every parameter p, float64 throughout; then
    that ``param_grads=False`` gives the same ∂L/∂x and leaves grads alone,
    and that a second backward adds to the parameter gradients.
    """
    layer.astype(np.float64)
    layer.zero_grad()
    forward = forward or (lambda: layer.forward(x))
    y = forward()
    r = rng.standard_normal(y.shape)
    dx = layer.backward(r)
    assert dx.shape == x.shape and dx.dtype == np.float64
    grads = {k: g.copy() for k, g in layer.grads.items()}

    def loss():
        return float(np.sum(forward() * r))

    assert_gradients_close(dx, numerical_gradient(loss, x), f"{label} input")
    for key, value in layer.params.items():
        assert_gradients_close(grads[key], numerical_gradient(loss, value), f"{label} {key}")

    forward()
    np.testing.assert_array_equal(layer.backward(r, param_grads=False), dx)
    for key, g in layer.grads.items():
        np.testing.assert_array_equal(g, grads[key])
    layer.backward(r)  # accumulates until zero_grad
    for key, g in layer.grads.items():
        np.testing.assert_allclose(g, 2 * grads[key], rtol=1e-12, atol=1e-15)
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())


# ----------------------------------------------------------------------------
# gradient checks, one property per layer


@given(case=window_cases(), f=st.integers(1, 3))
def test_conv2d_gradients(case, f):
    rng = np.random.default_rng(case["seed"])
    layer = Conv2d(case["c"], f, case["kernel"], case["stride"], case["padding"], seed=case["seed"])
    layer.params["weight"] = rng.standard_normal(layer.params["weight"].shape)
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    check_layer_gradients(layer, x, "Conv2d", rng)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (Conv2d(2, 3, (2, 3), stride=(1, 2), padding=(0, 1), bias=False, seed=0), (2, 2, 4, 5)),
        (Linear(5, 3, bias=False), (2, 5)),
    ],
)
def test_gradients_without_bias(layer, shape):
    assert set(layer.params) == set(layer.grads) == {"weight"}
    rng = np.random.default_rng(0)
    check_layer_gradients(layer, rng.standard_normal(shape), type(layer).__name__, rng)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), seed=seeds)
def test_relu_gradient(shape, seed):
    rng = np.random.default_rng(seed)
    check_layer_gradients(ReLU(), away_from_zero(rng, shape), "ReLU", rng)


@given(case=window_cases(max_kernel=3, half_kernel_padding=True))
@example(case=dict(n=1, c=2, h=7, w=7, kernel=(3, 3), stride=(2, 2), padding=(0, 0), seed=1))  # AlexNet
@example(case=dict(n=2, c=1, h=6, w=5, kernel=(3, 3), stride=(2, 2), padding=(1, 1), seed=2))
def test_maxpool2d_gradient(case):
    rng = np.random.default_rng(case["seed"])
    x = distinct_values(rng, (case["n"], case["c"], case["h"], case["w"]))
    layer = MaxPool2d(case["kernel"], case["stride"], case["padding"])
    check_layer_gradients(layer, x, "MaxPool2d", rng)


@given(case=window_cases(max_kernel=3, half_kernel_padding=True))
def test_avgpool2d_gradient(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    layer = AvgPool2d(case["kernel"], case["stride"], case["padding"])
    check_layer_gradients(layer, x, "AvgPool2d", rng)


@given(
    n=st.integers(1, 2),
    c=st.integers(1, 2),
    hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    out=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    seed=seeds,
)
@example(n=1, c=1, hw=(2, 3), out=(5, 7), seed=0)  # output larger than the input
@example(n=1, c=2, hw=(5, 6), out=(3, 4), seed=0)  # sizes that do not divide
def test_adaptive_avgpool2d_gradient(n, c, hw, out, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, *hw))
    check_layer_gradients(AdaptiveAvgPool2d(out), x, "AdaptiveAvgPool2d", rng)


@given(n=st.integers(1, 3), fin=st.integers(1, 6), fout=st.integers(1, 5), seed=seeds)
def test_linear_gradients(n, fin, fout, seed):
    rng = np.random.default_rng(seed)
    layer = Linear(fin, fout, seed=seed)
    check_layer_gradients(layer, rng.standard_normal((n, fin)), "Linear", rng)


@given(shape=hnp.array_shapes(min_dims=2, max_dims=4, max_side=4), seed=seeds)
def test_flatten_gradient(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    layer = Flatten()
    y = layer.forward(x)
    assert y.shape == (shape[0], int(np.prod(shape[1:])))
    np.testing.assert_array_equal(y, x.reshape(shape[0], -1))  # PyTorch's (c, h, w) order
    check_layer_gradients(layer, x, "Flatten", rng)


@given(shape=hnp.array_shapes(min_dims=2, max_dims=4, max_side=4), p=st.floats(0.05, 0.9), seed=seeds)
def test_dropout_training_gradient_and_mask(shape, p, seed):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, shape)
    layer = Dropout(p)
    layer.training = True

    def forward():  # the same mask on every call: reseed the layer's generator
        layer.rng = np.random.default_rng(seed)
        return layer.forward(x)

    y = forward()
    mask = layer.cache.mask
    assert mask.shape == x.shape
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1.0 / (1.0 - p), rtol=1e-12)
    np.testing.assert_array_equal(y, x * mask)
    np.testing.assert_array_equal(layer.backward(np.ones_like(y)), mask)
    check_layer_gradients(layer, x, "Dropout (training)", rng, forward=forward)


def test_dropout_drops_about_p_and_is_identity_at_inference(rng):
    x = rng.standard_normal((4, 50, 50))
    layer = Dropout(0.3, seed=0)
    assert layer.forward(x) is x and layer.backward(x) is x  # inference: identity
    layer.training = True
    y = layer.forward(x)
    dropped = np.mean(y == 0)
    assert abs(dropped - 0.3) < 0.02  # 10,000 units: sd 0.0046, so 0.02 is > 4 sd (seeded)
    assert not np.array_equal(layer.forward(x) == 0, y == 0)  # a new mask per call


# ----------------------------------------------------------------------------
# the three ReLU rules against their formulas


relu_values = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
    elements=st.sampled_from([-2.0, -0.5, -0.0, 0.0, 0.5, 3.0]),  # exact zeros included
)


@given(x=relu_values, data=st.data())
def test_relu_rules_match_their_formulas(x, data):
    g = data.draw(hnp.arrays(np.float64, x.shape, elements=st.sampled_from([-1.5, -0.0, 0.0, 0.25, 2.0])))
    expected = {
        "gradient": g * (x > 0),
        "deconvnet": g * (g > 0),
        "guided": g * (x > 0) * (g > 0),
    }
    for rule, want in expected.items():
        layer = ReLU(rule)
        y = layer.forward(x)
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        got = layer.backward(g)
        np.testing.assert_array_equal(got, want)
        assert not (got[want == 0] != 0).any()  # zeros where the indicator is 0, strict >
    # the rule is read at backward time, so one forward serves all three
    layer = ReLU()
    layer.forward(x)
    for rule, want in expected.items():
        layer.rule = rule
        np.testing.assert_array_equal(layer.backward(g), want)


def test_relu_rules_at_exact_zero():
    x = np.array([-1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    g = np.array([1.0, 1.0, 0.0, 0.0, -1.0, -1.0])
    want = {"gradient": [0, 0, 0, 0, -1, 0], "deconvnet": [1, 1, 0, 0, 0, 0], "guided": [0, 0, 0, 0, 0, 0]}
    for rule, w in want.items():
        layer = ReLU(rule)
        layer.forward(x)
        np.testing.assert_array_equal(layer.backward(g), np.array(w, dtype=float))


@pytest.mark.parametrize("rule", ["Gradient", "deconv", "", None, "guided "])
def test_unknown_relu_rule_raises_rule_error(rule):
    with pytest.raises(RuleError, match="unknown ReLU rule"):
        ReLU(rule)
    layer = ReLU()
    with pytest.raises(RuleError, match=repr(rule).replace("(", r"\(")) as info:
        layer.rule = rule
    assert "gradient, deconvnet, guided" in str(info.value)
    assert layer.rule == "gradient"  # unchanged
    with pytest.raises(RuleError, match="unknown ReLU rule"):
        relu_backward(np.ones(3), np.ones(3, bool), rule)


# ----------------------------------------------------------------------------
# naive pixel-loop references (tests only)


def naive_conv2d(x, weight, bias, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    xpad = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xpad[:, :, ph : ph + h, pw : pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, f, oh, ow))
    for b in range(n):
        for k in range(f):
            for i in range(oh):
                for j in range(ow):
                    total = 0.0 if bias is None else bias[k]
                    for ch in range(c):
                        for di in range(kh):
                            for dj in range(kw):
                                total += xpad[b, ch, i * sh + di, j * sw + dj] * weight[k, ch, di, dj]
                    y[b, k, i, j] = total
    return y


def naive_maxpool2d(x, kernel, stride, padding):
    """Max and the first offset (row-major) that attains it; padding is -inf."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    switches = np.zeros((n, c, oh, ow), dtype=int)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    best, arg = -np.inf, -1
                    for di in range(kh):
                        for dj in range(kw):
                            r, s = i * sh + di - ph, j * sw + dj - pw
                            v = x[b, ch, r, s] if 0 <= r < h and 0 <= s < w else -np.inf
                            if arg < 0 or v > best:  # strict: ties keep the first
                                best, arg = v, di * kw + dj
                    y[b, ch, i, j], switches[b, ch, i, j] = best, arg
    return y, switches


def naive_unpool(grad, switches, input_shape, kernel, stride, padding):
    (_, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = input_shape
    out = np.zeros(input_shape)
    for b, ch, i, j in np.ndindex(*grad.shape):
        di, dj = divmod(int(switches[b, ch, i, j]), kw)
        r, s = i * sh + di - ph, j * sw + dj - pw
        if 0 <= r < h and 0 <= s < w:
            out[b, ch, r, s] += grad[b, ch, i, j]
    return out


def naive_avgpool2d(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    for b, ch, i, j in np.ndindex(n, c, oh, ow):
        total = 0.0
        for di in range(kh):
            for dj in range(kw):
                r, s = i * sh + di - ph, j * sw + dj - pw
                if 0 <= r < h and 0 <= s < w:
                    total += x[b, ch, r, s]
        y[b, ch, i, j] = total / (kh * kw)  # zero padding counts (PyTorch's default)
    return y


def naive_adaptive_avgpool2d(x, out):
    n, c, h, w = x.shape
    y = np.zeros((n, c, *out))
    for i in range(out[0]):
        r0, r1 = (i * h) // out[0], -(-((i + 1) * h) // out[0])
        for j in range(out[1]):
            s0, s1 = (j * w) // out[1], -(-((j + 1) * w) // out[1])
            y[:, :, i, j] = x[:, :, r0:r1, s0:s1].mean(axis=(2, 3))
    return y


# ----------------------------------------------------------------------------
# forward passes against the naive references


@given(case=window_cases())
def test_im2col_col2im_are_adjoint(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    args = case["kernel"], case["stride"], case["padding"]
    cols = im2col(x, *args)
    y = rng.standard_normal(cols.shape)
    back = col2im(y, x.shape, *args)
    assert back.shape == x.shape
    lhs, rhs = np.sum(cols * y), np.sum(x * back)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, np.abs(cols * y).sum())


@given(case=window_cases(), f=st.integers(1, 3), bias=st.booleans())
def test_conv2d_forward_matches_naive_loops(case, f, bias):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    layer = Conv2d(case["c"], f, case["kernel"], case["stride"], case["padding"], bias=bias, seed=1).astype(
        np.float64
    )
    want = naive_conv2d(x, layer.params["weight"], layer.params.get("bias"), case["stride"], case["padding"])
    np.testing.assert_allclose(layer.forward(x), want, rtol=1e-12, atol=1e-12)


@given(case=window_cases(max_kernel=3, half_kernel_padding=True), ties=st.booleans())
@example(case=dict(n=1, c=1, h=5, w=5, kernel=(3, 3), stride=(2, 2), padding=(1, 1), seed=0), ties=True)
def test_maxpool2d_forward_switches_and_unpool_match_naive_loops(case, ties):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"], case["h"], case["w"])
    # with ties: values from {-1, 0, 1}, so windows hold equal maxima
    x = rng.integers(-1, 2, size=shape).astype(float) if ties else rng.standard_normal(shape)
    args = case["kernel"], case["stride"], case["padding"]
    layer = MaxPool2d(*args)
    y = layer.forward(x)
    want_y, want_switches = naive_maxpool2d(x, *args)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(layer.switches, want_switches)  # ties: the first offset
    # each switch points at an input pixel holding the window's max
    grad = rng.standard_normal(y.shape)
    routed = unpool(grad, layer.switches, x.shape, *args)
    np.testing.assert_allclose(
        routed, naive_unpool(grad, layer.switches, x.shape, *args), rtol=1e-12, atol=1e-15
    )
    np.testing.assert_array_equal(layer.backward(grad), routed)
    ones = naive_unpool(np.ones_like(y), layer.switches, x.shape, *args)
    (kh, kw), (sh, sw), (ph, pw) = args
    for b, ch, i, j in np.ndindex(*y.shape):
        di, dj = divmod(int(layer.switches[b, ch, i, j]), kw)
        assert x[b, ch, i * sh + di - ph, j * sw + dj - pw] == y[b, ch, i, j]
    assert ones.sum() == y.size  # every output routes to exactly one input pixel


@given(case=window_cases(max_kernel=3, half_kernel_padding=True), ties=st.booleans())
def test_maxpool2d_inference_gives_the_forward_output_without_switches(case, ties):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"], case["h"], case["w"])
    x = rng.integers(-1, 2, size=shape).astype(float) if ties else rng.standard_normal(shape)
    args = case["kernel"], case["stride"], case["padding"]
    layer = MaxPool2d(*args)
    y = layer.infer(x)
    np.testing.assert_array_equal(y, naive_maxpool2d(x, *args)[0])
    assert layer.switches is None
    with pytest.raises(ShapeError, match="call forward before backward"):
        layer.backward(np.ones_like(y))


def test_maxpool2d_ties_take_the_first_offset():
    x = np.zeros((1, 1, 4, 4))
    layer = MaxPool2d(2)
    layer.forward(x)
    np.testing.assert_array_equal(layer.switches, 0)
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = 1.0  # window (0, 0): offsets 2 and 3 tie at the max
    layer.forward(x)
    assert layer.switches[0, 0, 0, 0] == 2
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    assert dx[0, 0, 1, 0] == 1 and dx[0, 0, 1, 1] == 0  # the whole gradient to one switch


@given(case=window_cases(max_kernel=3, half_kernel_padding=True))
def test_avgpool2d_forward_matches_naive_loops(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    args = case["kernel"], case["stride"], case["padding"]
    np.testing.assert_allclose(AvgPool2d(*args).forward(x), naive_avgpool2d(x, *args), rtol=1e-12, atol=1e-14)


@given(hw=sizes_up_to_9, out=sizes_up_to_9, seed=seeds)
def test_adaptive_avgpool2d_forward_matches_naive_loops(hw, out, seed):
    x = np.random.default_rng(seed).standard_normal((2, 3, *hw))
    y = AdaptiveAvgPool2d(out).forward(x)
    np.testing.assert_allclose(y, naive_adaptive_avgpool2d(x, out), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------
# forward passes against PyTorch

# Skip before hypothesis draws anything (importorskip inside a @given test would
# report each explicit example as failing before the skip).
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")


@needs_torch
@given(case=window_cases(), f=st.integers(1, 3))
def test_conv2d_forward_matches_torch(case, f):
    import torch

    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    layer = Conv2d(case["c"], f, case["kernel"], case["stride"], case["padding"], seed=2).astype(np.float64)
    want = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(layer.params["weight"]),
        torch.from_numpy(layer.params["bias"]),
        stride=case["stride"],
        padding=case["padding"],
    )
    np.testing.assert_allclose(layer.forward(x), want.numpy(), rtol=1e-10, atol=1e-12)


@needs_torch
@given(case=window_cases(max_kernel=3, half_kernel_padding=True))
@example(case=dict(n=1, c=2, h=7, w=6, kernel=(3, 3), stride=(2, 2), padding=(1, 1), seed=3))
def test_pools_match_torch(case):
    import torch

    functional = torch.nn.functional
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    args = case["kernel"], case["stride"], case["padding"]
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(MaxPool2d(*args).forward(x), functional.max_pool2d(t, *args).numpy())
    np.testing.assert_allclose(
        AvgPool2d(*args).forward(x), functional.avg_pool2d(t, *args).numpy(), rtol=1e-12, atol=1e-14
    )


@needs_torch
@given(hw=sizes_up_to_9, out=sizes_up_to_9, seed=seeds)
def test_adaptive_avgpool2d_matches_torch(hw, out, seed):
    import torch

    x = np.random.default_rng(seed).standard_normal((2, 3, *hw))
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), out).numpy()
    np.testing.assert_allclose(AdaptiveAvgPool2d(out).forward(x), want, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------
# shapes, FLOPs and specs agree with what forward does


@given(case=window_cases(max_kernel=3, half_kernel_padding=True), f=st.integers(1, 3))
def test_output_shape_and_spec_agree_with_forward(case, f):
    x = np.zeros((case["n"], case["c"], case["h"], case["w"]))
    args = case["kernel"], case["stride"], case["padding"]
    conv = Conv2d(case["c"], f, *args)
    for layer in (
        conv,
        MaxPool2d(*args),
        AvgPool2d(*args),
        AdaptiveAvgPool2d((2, 3)),
        ReLU("guided"),
        Flatten(),
    ):
        assert layer.output_shape(x.shape[1:]) == layer.forward(x).shape[1:], layer
        rebuilt = layer_from_spec(layer.spec())
        assert type(rebuilt) is type(layer) and rebuilt.spec() == layer.spec()
    _, oh, ow = conv.output_shape(x.shape[1:])
    kh, kw = case["kernel"]
    assert conv.flops(x.shape[1:]) == 2 * f * oh * ow * case["c"] * kh * kw


# ----------------------------------------------------------------------------
# input checks: a tinyconv error that names the problem


def test_wrong_rank_is_named():
    with pytest.raises(ShapeError, match=r"expected a 4-D input, got shape \(3, 8, 8\)"):
        Conv2d(3, 4, 3).forward(np.zeros((3, 8, 8)))
    with pytest.raises(ShapeError, match=r"expected a 2-D input, got shape \(2, 3, 4\)"):
        Linear(4, 2).forward(np.zeros((2, 3, 4)))
    for pool in (MaxPool2d(2), AvgPool2d(2), AdaptiveAvgPool2d(1)):
        with pytest.raises(ShapeError, match="4-D input"):
            pool.forward(np.zeros((8, 8)))


def test_wrong_channel_count_is_named():
    with pytest.raises(ShapeError, match=r"expected 3 input channels.*got 1 \(input shape \(2, 1, 8, 8\)\)"):
        Conv2d(3, 4, 3).forward(np.zeros((2, 1, 8, 8)))
    with pytest.raises(ShapeError, match="expected 5 input channels/features, got 4"):
        Linear(5, 2).forward(np.zeros((2, 4)))


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        (Conv2d(1, 1, 5), (1, 1, 3, 8), "spatial size 3x8 .*smaller than the 5x5 kernel"),
        (Conv2d(1, 1, (2, 4), padding=1), (1, 1, 3, 1), "spatial size 3x1 .*smaller than the 2x4 kernel"),
        (MaxPool2d(3, 2), (1, 1, 2, 2), "smaller than the 3x3 kernel"),
        (AvgPool2d((1, 4)), (1, 1, 5, 3), "smaller than the 1x4 kernel"),
    ],
)
def test_input_smaller_than_kernel_is_named(layer, shape, message):
    with pytest.raises(ShapeError, match=message):
        layer.forward(np.zeros(shape))


def one_layer_of_each_kind():
    """(fresh layer, an input shape it takes) for every layer type."""
    return [
        (Conv2d(1, 2, 3), (1, 1, 5, 5)),
        (ReLU(), (1, 4)),
        (MaxPool2d(2), (1, 1, 4, 4)),
        (AvgPool2d(2), (1, 1, 4, 4)),
        (AdaptiveAvgPool2d(2), (1, 1, 4, 4)),
        (Linear(4, 2), (3, 4)),
        (Flatten(), (2, 3, 2)),
    ]


@pytest.mark.parametrize("layer, shape", one_layer_of_each_kind())
@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.bool_])
def test_integer_input_is_refused(layer, shape, dtype):
    with pytest.raises(ShapeError, match=f"floating-point input, got dtype {np.dtype(dtype).name}"):
        layer.forward(np.zeros(shape, dtype=dtype))


def test_non_array_input_is_named():
    with pytest.raises(ShapeError, match="expected an array, got list"):
        Conv2d(1, 1, 1).forward([[[[1.0]]]])


@pytest.mark.parametrize("layer, shape", one_layer_of_each_kind())
def test_layer_backward_before_forward_and_wrong_gradient_shape(layer, shape):
    with pytest.raises(TinyconvError, match="before backward"):
        layer.backward(np.zeros(shape))
    y = layer.forward(np.ones(shape, dtype=np.float32))
    bad = np.zeros((*y.shape[:-1], y.shape[-1] + 1), dtype=np.float32)
    message = re.escape(f"gradient has shape {tuple(bad.shape)}, expected {tuple(y.shape)}")
    with pytest.raises(ShapeError, match=message):
        layer.backward(bad)


def test_bad_hyper_parameters_are_named():
    with pytest.raises(ShapeError, match="kernel_size must be >= 1"):
        Conv2d(1, 1, 0)
    with pytest.raises(ShapeError, match="padding must be >= 0"):
        Conv2d(1, 1, 3, padding=-1)
    with pytest.raises(ShapeError, match="at most half the kernel"):
        MaxPool2d(2, padding=2)
    with pytest.raises(ShapeError, match=r"Dropout p must be in \[0, 1\)"):
        Dropout(1.0)


# ----------------------------------------------------------------------------
# dtypes: every layer keeps float32 and float64; NumPy in, NumPy out


def _all_layers():
    return [
        (Conv2d(2, 3, (3, 2), stride=(2, 1), padding=1), (2, 2, 6, 5)),
        (ReLU(), (2, 2, 3, 3)),
        (MaxPool2d(3, 2, 1), (2, 2, 6, 5)),
        (AvgPool2d(2, 1), (2, 2, 6, 5)),
        (AdaptiveAvgPool2d((3, 4)), (2, 2, 5, 5)),
        (Linear(6, 3), (2, 6)),
        (Flatten(), (2, 2, 3, 3)),
        (Dropout(0.5, seed=0), (2, 6)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [False, True])
def test_every_layer_keeps_dtype_and_stays_numpy(dtype, training, rng):
    for layer, shape in _all_layers():
        layer.training = training
        x = rng.standard_normal(shape).astype(dtype)
        y = layer.forward(x)
        assert type(y) is np.ndarray and y.dtype == dtype, type(layer).__name__
        dx = layer.backward(np.ones_like(y))
        assert type(dx) is np.ndarray and dx.dtype == dtype and dx.shape == x.shape, type(layer).__name__
        for key, g in layer.grads.items():
            assert g.dtype == layer.params[key].dtype, (type(layer).__name__, key)


def test_float32_and_float64_agree(rng):
    for layer, shape in _all_layers():
        x = rng.standard_normal(shape)
        layer.astype(np.float64)
        y64 = layer.forward(x)
        y32 = layer.forward(x.astype(np.float32))
        assert relative_error(y32, y64) < 1e-5, type(layer).__name__


def test_relative_error_helper_sees_a_wrong_gradient():
    """The gradient check can fail: a conv whose backward is off by one kernel flip."""
    rng = np.random.default_rng(0)
    layer = Conv2d(1, 1, 3, seed=0).astype(np.float64)
    x = rng.standard_normal((1, 1, 5, 5))
    r = rng.standard_normal((1, 1, 3, 3))
    num = numerical_gradient(lambda: np.sum(layer.forward(x) * r), x)
    layer.forward(x)
    good = layer.backward(r)
    layer.params["weight"] = layer.params["weight"][:, :, ::-1, ::-1].copy()
    layer.forward(x)
    flipped = layer.backward(r)
    assert relative_error(good, num) < 1e-6 < relative_error(flipped, num)


# ----------------------------------------------------------------------------
# no hidden machinery; building from arrays; the precision trap


def test_layers_are_plain_classes_whose_methods_are_their_own():
    """A learner stepping into ReLU.backward lands in it: no wrappers, no __init_subclass__."""
    from tinyconv.engine.layers import Layer

    assert "__init_subclass__" not in Layer.__dict__
    for cls in (Conv2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Linear, Flatten, Dropout):
        for method in ("forward", "backward"):
            function = getattr(cls, method)
            assert function.__qualname__.split(".")[-1] == method, (cls.__name__, function.__qualname__)
            assert not hasattr(function, "__wrapped__"), (cls.__name__, method)


def test_from_arrays_holds_the_given_arrays_without_drawing_an_init():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3, 2, 3)), rng.standard_normal(4)
    conv = Conv2d.from_arrays(w, b, stride=2, padding=1)
    assert conv.params["weight"] is w and conv.params["bias"] is b
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 4, (2, 3))
    assert conv.stride == (2, 2) and conv.padding == (1, 1)
    assert set(conv.grads) == {"weight", "bias"} and not conv.grads["weight"].any()
    assert conv.grads["weight"].dtype == np.float64
    dense = Linear.from_arrays(w.reshape(4, -1))
    assert dense.params["weight"].shape == (4, 18) and set(dense.params) == {"weight"}
    assert (dense.in_features, dense.out_features) == (18, 4)
    with pytest.raises(ShapeError, match=r"bias must have shape \(4,\)"):
        Conv2d.from_arrays(w, np.zeros(3))
    with pytest.raises(ShapeError, match=r"weight must be \(out, in\)"):
        Linear.from_arrays(w)


def test_float64_input_to_a_float32_layer_warns_that_its_weight_gradients_are_rounded():
    from tinyconv.errors import PrecisionWarning

    layer = Linear(3, 2, seed=0)  # float32 parameters
    x = np.random.default_rng(0).standard_normal((4, 3))  # float64 input
    y = layer.forward(x)
    with pytest.warns(PrecisionWarning, match="float64 gradients rounded to the float32"):
        layer.backward(np.ones_like(y))
    layer.forward(x)
    layer.backward(np.ones_like(y), param_grads=False)  # no parameter gradients: nothing to round
    layer.astype(np.float64).forward(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        layer.backward(np.ones_like(y))  # float64 throughout: no warning
