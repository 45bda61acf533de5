"""Tests of tinyconv.methods.deconvnet: the explicit Zeiler & Fergus reconstruction.

The explicit walk (unpool with switches, rectify, convolve with transposed
flipped filters through the forward conv code) never calls a layer's
backward, so backward with ``rule="deconvnet"`` is an independent reference:
they must agree to float64 rounding on random nets with overlapping pools,
strided and padded convolutions. The rules are also checked against their
formulas on a one-ReLU net where each pixel's mask can be read off.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyconv as tc
from tinyconv import Sequential
from tinyconv.engine.functional import conv2d_backward, conv2d_forward
from tinyconv.engine.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)
from tinyconv.errors import TargetError
from tinyconv.methods.deconvnet import compare, deconvolve, reconstruct, walk_back


def random_net(seed, k1, s1, p1, pool_k, pool_s, pool_p, k2, s2, size, avg):
    """conv(k1, stride s1, pad p1)-ReLU-maxpool(pool_k, pool_s, pool_p)-conv(k2, s2)-ReLU
    -[avgpool 2 stride 1 | adaptive avgpool 2]-flatten-dense-ReLU-dropout-dense(5)."""
    layers = [
        Conv2d(2, 4, k1, stride=s1, padding=p1, seed=seed),
        ReLU(),
        MaxPool2d(pool_k, pool_s, pool_p),
        Conv2d(4, 3, k2, stride=s2, padding=1, seed=seed + 1),
        ReLU(),
        AvgPool2d(2, 1) if avg else AdaptiveAvgPool2d(2),
        Flatten(),
    ]
    probe = Sequential(layers)
    features = probe.output_shapes((2, size, size))[-1][0]
    layers += [Linear(features, 7, seed=seed + 2), ReLU(), Dropout(0.3), Linear(7, 5, seed=seed + 3)]
    return Sequential(layers, input_shape=(2, size, size)).astype(np.float64)


net_options = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 1000),
        "k1": st.integers(2, 4),
        "s1": st.integers(1, 3),
        "p1": st.integers(0, 2),
        "pool_k": st.just(3),
        "pool_s": st.integers(1, 2),  # 3x3 windows with stride < 3 overlap
        "pool_p": st.integers(0, 1),
        "k2": st.sampled_from([2, 3, (3, 2)]),
        "s2": st.integers(1, 2),
        "size": st.integers(15, 21),
        "avg": st.booleans(),
    }
)


def close(a, b):
    """Equal to float64 rounding, relative to the size of the maps."""
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-300)
    return np.abs(a - b).max() / scale < 1e-12


@given(options=net_options, data_seed=st.integers(0, 2**16), target=st.integers(0, 4))
def test_explicit_deconvnet_equals_backward_with_the_deconvnet_rule(options, data_seed, target):
    net = random_net(**options)
    x = np.random.default_rng(data_seed).standard_normal((2, *net.input_shape))
    explicit = reconstruct(net, x, target)
    rule = tc.input_gradient(net, x, target, rule="deconvnet")
    assert explicit.shape == x.shape
    assert close(explicit, rule)


@given(options=net_options, data_seed=st.integers(0, 2**16))
def test_the_explicit_walk_with_each_relu_rule_equals_backward(options, data_seed):
    net = random_net(**options)
    x = np.random.default_rng(data_seed).standard_normal((1, *net.input_shape))
    for rule in ("gradient", "guided"):
        assert close(reconstruct(net, x, rectifier=rule), tc.input_gradient(net, x, rule=rule))


@given(
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 4),
    size=st.integers(4, 11),
    seed=st.integers(0, 1000),
)
def test_deconvolve_is_the_adjoint_of_the_convolution(k, stride, padding, size, seed):
    # <conv(x), r> = <x, deconvolve(r)> for every x, r: deconvolve is the transpose.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, size, size + 1))
    w = rng.standard_normal((4, 3, k, k))
    if size + 2 * padding < k:
        return
    y, cache = conv2d_forward(x, w, None, stride, padding)
    r = rng.standard_normal(y.shape)
    back = deconvolve(r, w, x.shape, (stride, stride), (padding, padding))
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(y * r), np.sum(x * back), rtol=1e-10)
    np.testing.assert_allclose(back, conv2d_backward(r, cache, param_grads=False)[0], rtol=1e-10, atol=1e-12)


def one_relu_net(weights):
    """Flatten - ReLU - dense: the input gradient of class c is g·mask with g = W[c]."""
    fc = Linear(weights.shape[1], weights.shape[0])
    fc.params["weight"] = weights.astype(np.float64)
    fc.params["bias"] = np.zeros(weights.shape[0])
    fc.grads = {k: np.zeros_like(v) for k, v in fc.params.items()}
    return Sequential([Flatten(), ReLU(), fc], input_shape=(1, 1, weights.shape[1]))


def test_rules_differ_exactly_where_input_and_signal_signs_disagree():
    rng = np.random.default_rng(0)
    n = 40
    w = rng.standard_normal((3, n))
    net = one_relu_net(w)
    x = rng.standard_normal((1, 1, 1, n))
    c = 1
    g = w[c]  # the signal reaching the ReLU
    mask_x, mask_g = x.ravel() > 0, g > 0
    grad = compare(net, x, c)
    np.testing.assert_allclose(grad["gradient"].ravel(), g * mask_x)
    np.testing.assert_allclose(grad["deconvnet"].ravel(), g * mask_g)
    np.testing.assert_allclose(grad["deconvnet_rule"].ravel(), g * mask_g)
    np.testing.assert_allclose(grad["guided"].ravel(), g * mask_x * mask_g)
    differ = grad["gradient"].ravel() != grad["deconvnet"].ravel()
    np.testing.assert_array_equal(differ, mask_x != mask_g)
    assert differ.any() and not differ.all()


@given(options=net_options, data_seed=st.integers(0, 2**16))
def test_guided_is_the_elementwise_combination_at_every_relu(options, data_seed):
    # At each ReLU, guided passes g·1(x > 0)·1(g > 0): the gradient rule's mask
    # times the DeconvNet rule's mask, applied to the signal arriving there.
    net = random_net(**options)
    x = np.random.default_rng(data_seed).standard_normal((1, *net.input_shape))
    scores = net.forward(x)
    seed = np.zeros_like(scores)
    seed[0, int(scores.argmax())] = 1
    with net.relu_rule("guided"):
        net.backward(seed, param_grads=False, keep=True)
    names = [layer.name for layer in net]
    for i, layer in enumerate(net):
        if isinstance(layer, ReLU):
            arriving = net.gradients[layer.name]
            leaving = net.gradients[names[i - 1]] if i else net.gradients["input"]
            expected = arriving * (layer.cache.mask > 0) * (arriving > 0)
            np.testing.assert_array_equal(leaving, expected)


def test_deconvnet_output_has_both_signs_after_the_first_conv():
    net = random_net(0, 3, 1, 1, 3, 2, 1, 3, 1, 17, True)
    x = np.random.default_rng(1).standard_normal((1, *net.input_shape))
    r = reconstruct(net, x)
    assert (r > 0).any() and (r < 0).any()
    # ...while the signal entering the first conv's transpose is rectified
    net.forward(x)
    scores = net.forward(x)
    seed = np.zeros_like(scores)
    seed[0, int(scores.argmax())] = 1
    assert (walk_back(net, seed, start=None) == r).all()


def test_reconstruct_from_a_feature_map_keeps_only_that_map():
    net = random_net(3, 3, 1, 1, 3, 2, 1, 3, 1, 17, True)
    x = np.random.default_rng(2).standard_normal((1, *net.input_shape))
    a = net.forward_to(x, 3)  # (1, 3, h, w), output of the second conv
    unit = 1
    r = reconstruct(net, x, layer=3, unit=unit)
    # reference: zero the other maps, run the deconvnet rule backward from layer 3
    signal = np.zeros_like(a)
    signal[:, unit] = a[:, unit]
    net.forward_to(x, 3)
    with net.relu_rule("deconvnet"):
        expected = net.backward(signal, param_grads=False, start=3)
    assert close(r, expected)
    # keep="max": only the largest activation of that map
    single = np.zeros_like(a)
    i = np.unravel_index(a[0, unit].argmax(), a[0, unit].shape)
    single[0, unit][i] = a[0, unit][i]
    net.forward_to(x, 3)
    with net.relu_rule("deconvnet"):
        expected = net.backward(single, param_grads=False, start=3)
    assert close(reconstruct(net, x, layer="3", unit=unit, keep="max"), expected)


def test_reconstruct_default_unit_is_the_strongest_map_per_image():
    net = random_net(4, 3, 1, 1, 3, 2, 1, 3, 1, 17, True)
    x = np.random.default_rng(3).standard_normal((2, *net.input_shape))
    a = net.forward_to(x, 4)
    best = a.reshape(2, a.shape[1], -1).max(axis=2).argmax(axis=1)
    r = reconstruct(net, x, layer=4)
    for i in range(2):
        assert close(r[i : i + 1], reconstruct(net, x[i : i + 1], layer=4, unit=int(best[i])))


def test_reconstruct_from_a_dense_unit():
    net = random_net(5, 3, 1, 1, 3, 2, 1, 3, 1, 17, False)
    x = np.random.default_rng(4).standard_normal((1, *net.input_shape))
    layer = len(net) - 1  # the scores: keeping class c's score s_c gives s_c · (the class map)
    s = net.forward(x)
    c = 2
    r = reconstruct(net, x, layer=layer, unit=c)
    assert close(r, s[0, c] * reconstruct(net, x, c))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layer": 3, "unit": 99}, "out of range"),
        ({"layer": "nope"}, "no layer named"),
        ({"layer": 99}, "out of range"),
        ({"unit": 1}, "unit needs a layer"),
        ({"target": 1, "layer": 3}, "not both"),
        ({"target": 7}, "out of range"),
    ],
)
def test_bad_requests_raise_target_errors(kwargs, match):
    net = random_net(0, 3, 1, 1, 3, 2, 1, 3, 1, 17, True)
    x = np.zeros((1, *net.input_shape))
    with pytest.raises(TargetError, match=match):
        reconstruct(net, x, **kwargs)


def test_compare_returns_the_four_maps_for_the_same_class():
    net = random_net(6, 3, 2, 1, 3, 2, 1, 3, 1, 19, True)
    x = np.random.default_rng(5).standard_normal((3, *net.input_shape))
    maps = compare(net, x)
    assert set(maps) == {"gradient", "deconvnet_rule", "deconvnet", "guided"}
    assert close(maps["deconvnet"], maps["deconvnet_rule"])
    np.testing.assert_array_equal(maps["gradient"], tc.input_gradient(net, x))
    assert not np.allclose(maps["gradient"], maps["deconvnet"])


def test_reconstructions_stay_on_the_device(fake):
    from fake_device import FakeArray

    x = np.random.default_rng(6).standard_normal((2, 2, 17, 17))
    host = random_net(7, 3, 2, 1, 3, 2, 1, 3, 1, 17, True)
    device = random_net(7, 3, 2, 1, 3, 2, 1, 3, 1, 17, True).to("fake")
    d = fake.asarray(x)
    maps = compare(device, d)
    for key, want in compare(host, x).items():
        assert isinstance(maps[key], FakeArray), key
        np.testing.assert_allclose(fake.asnumpy(maps[key]), want, rtol=1e-12, atol=1e-15)
    got = reconstruct(device, d, layer=3, keep="max")
    np.testing.assert_allclose(fake.asnumpy(got), reconstruct(host, x, layer=3, keep="max"), rtol=1e-12)


def test_walk_back_uses_the_layers_guard_rails():
    """Before a forward pass, and with a signal of the wrong shape, walk_back
    refuses with the layers' own messages."""
    net = random_net(0, 3, 1, 1, 3, 2, 1, 2, 1, 15, True)
    fresh = np.zeros((1, 5))
    with pytest.raises(tc.TinyconvError, match="call forward before backward: layer '10'"):
        walk_back(net, fresh)
    x = np.random.default_rng(0).standard_normal((1, 2, 15, 15))
    net.forward(x)
    with pytest.raises(tc.TinyconvError, match=r"gradient has shape \(2, 5\), expected \(1, 5\)"):
        walk_back(net, np.zeros((2, 5)))
    with pytest.raises(tc.TinyconvError, match="unknown rectifier"):
        walk_back(net, fresh, rectifier="deconv")
    assert walk_back(net, np.ones((1, 5))).shape == x.shape
