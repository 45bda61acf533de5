"""Tests of tinyconv.engine.network.Sequential: the chain rule end to end.

``Sequential.backward`` against central finite differences (float64) on a
small random conv-ReLU-pool-dense net, from the scores and from an
intermediate layer; taps; gradient accumulation; the ReLU rule switch; input
checks; dtypes.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from gradcheck import assert_gradients_close, numerical_gradient
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinyconv import Sequential
from tinyconv.engine.functional import ReLUCache, relu_backward
from tinyconv.engine.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.errors import RuleError, ShapeError

SEEDS = [0, 1, 2]


def small_net(seed=0, dtype=np.float64):
    """conv(2->3, 3x3, pad 1) - ReLU - max-pool 2 - conv(3->2, (2,1)) - ReLU - flatten - dense(4)."""
    return Sequential(
        [
            ("conv1", Conv2d(2, 3, 3, padding=1, seed=seed)),
            ("relu1", ReLU()),
            ("pool1", MaxPool2d(2)),
            ("conv2", Conv2d(3, 2, (2, 1), seed=seed + 1)),
            ("relu2", ReLU()),
            ("flatten", Flatten()),
            ("fc", Linear(2 * 2 * 3, 4, seed=seed + 2)),
        ],
        classes=list("abcd"),
        input_shape=(2, 6, 6),
    ).astype(dtype)


def kink_margin(net, x):
    """Smallest distance of the forward pass to a kink: |pre-ReLU value|, and
    the gap between the largest and second largest value of each pool window
    that holds a positive value (the pools here follow ReLUs)."""
    net.forward(x, keep=True)
    names = [layer.name for layer in net]
    margin = np.inf
    for i, layer in enumerate(net):
        before = x if i == 0 else net.activations[names[i - 1]]
        if isinstance(layer, ReLU):
            margin = min(margin, np.abs(before).min())
        if isinstance(layer, MaxPool2d):
            n, c, h, w = before.shape
            k = layer.kernel_size[0]  # square, stride = kernel, no padding here
            windows = before.reshape(n, c, h // k, k, w // k, k).transpose(0, 1, 2, 4, 3, 5)
            top = np.sort(windows.reshape(n, c, h // k, w // k, k * k), axis=-1)
            live = top[..., -1] > 0  # all-zero windows behind a ReLU stay at zero gradient
            margin = min(margin, (top[..., -1] - top[..., -2])[live].min(initial=np.inf))
    return margin


@pytest.fixture(params=SEEDS)
def case(request):
    """A float64 net and input whose forward pass keeps 1e-4 away from every kink."""
    seed = request.param
    net = small_net(seed)
    x = np.random.default_rng(seed).standard_normal((2, 2, 6, 6))
    assert kink_margin(net, x) > 1e-4, "test input too close to a kink: pick another seed"
    return net, x, np.random.default_rng(seed + 100)


# ----------------------------------------------------------------------------
# backward against finite differences


@pytest.mark.slow  # ~500 forward passes per example
@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 2))
def test_backward_matches_finite_differences(seed, n):
    rng = np.random.default_rng(seed)
    net = small_net(seed % 1000)
    net.zero_grad()
    x = rng.standard_normal((n, 2, 6, 6))
    assume(kink_margin(net, x) > 1e-4)
    scores = net.forward(x)
    assert scores.shape == (n, 4)
    seed = rng.standard_normal(scores.shape)
    dx = net.backward(seed)
    grads = {p.name: p.grad.copy() for p in net.parameters()}

    def loss():
        return float(np.sum(net.forward(x) * seed))

    assert_gradients_close(dx, numerical_gradient(loss, x), "Sequential input")
    for p in net.parameters():  # p.value is the layer's own array: perturbing it moves the net
        assert_gradients_close(grads[p.name], numerical_gradient(loss, p.value), "Sequential parameters")

    # param_grads=False: the same input gradient, and no parameter gradient touched
    net.forward(x)
    np.testing.assert_array_equal(net.backward(seed, param_grads=False), dx)
    for p in net.parameters():
        np.testing.assert_array_equal(p.grad, grads[p.name])


@pytest.mark.parametrize("start", ["conv1", "relu1", "pool1", "relu2", 5])
def test_backward_from_an_intermediate_layer(case, start):
    net, x, rng = case
    out = net.forward_to(x, start)
    assert out.shape[1:] == net.output_shapes(x.shape[1:])[net.index(start)]
    seed = rng.standard_normal(out.shape)
    net.zero_grad()
    dx = net.backward(seed, start=start)
    numeric = numerical_gradient(lambda: float(np.sum(net.forward_to(x, start) * seed)), x)
    assert_gradients_close(dx, numeric, "Sequential input (from a layer)")
    # the layers after ``start`` took no part
    assert not net["fc"].grads["weight"].any()


def test_backward_from_a_layer_after_a_full_forward_agrees_with_taps(case):
    net, x, rng = case
    scores = net.forward(x)
    net.backward(rng.standard_normal(scores.shape), keep=True)
    full = dict(net.gradients)
    # restarting at pool1 with the gradient the full pass had there reproduces the rest
    dx = net.backward(full["pool1"], start="pool1")
    np.testing.assert_allclose(dx, full["input"], rtol=1e-12, atol=1e-14)


def test_taps_hold_activations_and_gradients(case):
    net, x, rng = case
    scores = net.forward(x, keep=True)
    names = [layer.name for layer in net]
    assert list(net.activations) == names
    shapes = net.output_shapes(x.shape[1:])
    a = x
    for layer, shape in zip(net, shapes, strict=True):
        a = layer.forward(a)  # the same chain, by hand
        tap = net.activations[layer.name]
        assert tap.shape == (2, *shape)
        np.testing.assert_array_equal(tap, a)
    np.testing.assert_array_equal(net.activations["fc"], scores)

    net.forward(x, keep=True)
    seed = rng.standard_normal(scores.shape)
    dx = net.backward(seed, keep=True)
    assert set(net.gradients) == {*names, "input"}
    np.testing.assert_array_equal(net.gradients["fc"], seed)
    np.testing.assert_array_equal(net.gradients["input"], dx)
    for name in names:
        assert net.gradients[name].shape == net.activations[name].shape
    # the tap after conv1 is ∂L/∂(conv1 output): check it by finite differences
    pre = net.activations["conv1"].copy()

    def loss_from_conv1():
        a = pre
        for layer in net.layers[1:]:
            a = layer.forward(a)
        return float(np.sum(a * seed))

    assert_gradients_close(
        net.gradients["conv1"], numerical_gradient(loss_from_conv1, pre), "Sequential taps"
    )
    # without keep, no taps are left behind
    net.forward(x)
    assert net.activations == {}
    net.backward(seed)
    assert net.gradients == {}


def test_parameter_gradients_accumulate_until_zero_grad(case):
    net, x, rng = case
    net.zero_grad()
    seed = rng.standard_normal(net.forward(x).shape)
    net.backward(seed)
    once = {p.name: p.grad.copy() for p in net.parameters()}
    assert all(g.any() for g in once.values())
    net.forward(x)
    net.backward(seed)
    for p in net.parameters():
        np.testing.assert_allclose(p.grad, 2 * once[p.name], rtol=1e-12, atol=1e-15)
        layer_name, key = p.name.split(".")
        assert p.grad is net[layer_name].grads[key] and p.value is net[layer_name].params[key]  # in place
    net.zero_grad()
    assert all(not p.grad.any() for p in net.parameters())
    assert [p.name for p in net.parameters()] == [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "fc.weight",
        "fc.bias",
    ]


# ----------------------------------------------------------------------------
# the ReLU rule switch


def test_relu_rule_switches_every_relu_and_restores(case):
    net, x, rng = case
    relus = [layer for layer in net if isinstance(layer, ReLU)]
    relus[1].rule = "guided"  # mixed starting rules must each come back
    for rule in ("gradient", "deconvnet", "guided"):
        with net.relu_rule(rule) as same:
            assert same is net
            assert [r.rule for r in relus] == [rule, rule]
        assert [r.rule for r in relus] == ["gradient", "guided"]
    with pytest.raises(KeyError), net.relu_rule("deconvnet"):
        assert [r.rule for r in relus] == ["deconvnet", "deconvnet"]
        raise KeyError("boom")
    assert [r.rule for r in relus] == ["gradient", "guided"]
    with pytest.raises(
        RuleError, match=re.escape("unknown ReLU rule 'deconv'; expected one of gradient, deconvnet, guided")
    ):
        with net.relu_rule("deconv"):
            pass
    assert [r.rule for r in relus] == ["gradient", "guided"]


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_backward_under_a_rule_is_the_chain_with_that_rule(case, rule):
    net, x, rng = case
    scores = net.forward(x, keep=True)
    seed = rng.standard_normal(scores.shape)
    with net.relu_rule(rule):
        got = net.backward(seed, param_grads=False)
    # by hand: every layer's own backward, ReLUs by the formula of the rule
    names = [layer.name for layer in net]
    g = seed
    for i in reversed(range(len(names))):
        layer = net.layers[i]
        if isinstance(layer, ReLU):
            before = x if i == 0 else net.activations[names[i - 1]]
            g = relu_backward(g, ReLUCache(before > 0), rule)
        else:
            g = layer.backward(g, param_grads=False)
    np.testing.assert_array_equal(got, g)


def test_deconvnet_and_guided_differ_from_the_gradient(case):
    net, x, rng = case
    seed = np.zeros((2, 4))
    seed[:, 1] = 1.0
    out = {}
    for rule in ("gradient", "deconvnet", "guided"):
        net.forward(x)
        with net.relu_rule(rule):
            out[rule] = net.backward(seed, param_grads=False)
    assert not np.allclose(out["gradient"], out["deconvnet"])
    assert not np.allclose(out["gradient"], out["guided"])


# ----------------------------------------------------------------------------
# input checks


def test_input_checks_name_the_problem():
    net = small_net()
    with pytest.raises(ShapeError, match=re.escape("expected input of shape (N, 2, 6, 6), got (2, 6, 6)")):
        net.forward(np.zeros((2, 6, 6)))
    with pytest.raises(ShapeError, match=re.escape("takes 2 input channel(s), got 3")):
        net.forward(np.zeros((1, 3, 6, 6)))
    with pytest.raises(
        ShapeError, match=r"input of shape \(2, 2, 2\) does not fit.*'conv2'.*smaller than the 2x1 kernel"
    ):
        net.forward(np.zeros((1, 2, 2, 2)))
    with pytest.raises(ShapeError, match="dtype int64"):
        net.forward(np.zeros((1, 2, 6, 6), dtype=np.int64))
    with pytest.raises(ShapeError, match="N = 0"):
        net.forward(np.zeros((0, 2, 6, 6)))
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros((1, 2, 6, 6))
        x[0, 1, 2, 3] = bad
        with pytest.raises(ShapeError, match="NaN or infinite"):
            net.forward(x)


def test_backward_checks_name_the_problem():
    net = small_net()
    with pytest.raises(ShapeError, match="call forward before backward"):
        net.backward(np.zeros((1, 4)))
    net.forward(np.ones((3, 2, 6, 6)))
    with pytest.raises(ShapeError, match=re.escape("gradient has shape (1, 4), expected (3, 4)")):
        net.backward(np.zeros((1, 4)))
    with pytest.raises(ShapeError, match="floating point, got dtype int64"):
        net.backward(np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ShapeError, match="NaN or infinite"):
        net.backward(np.full((3, 4), np.nan))
    net.forward_to(np.ones((3, 2, 6, 6)), "pool1")
    with pytest.raises(ShapeError, match="call forward before backward: layer 'fc'"):
        net.backward(np.zeros((3, 4)))


# ----------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_network_keeps_dtype(dtype):
    net = small_net(dtype=dtype)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(dtype)
    scores = net.forward(x, keep=True)
    assert type(scores) is np.ndarray and scores.dtype == dtype
    assert all(a.dtype == dtype for a in net.activations.values())
    dx = net.backward(np.ones_like(scores))
    assert type(dx) is np.ndarray and dx.dtype == dtype and dx.shape == x.shape
    assert all(p.value.dtype == dtype and p.grad.dtype == dtype for p in net.parameters())
    assert net.dtype == dtype


def test_float32_net_on_float64_input_computes_in_float64():
    net = small_net(dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6))
    assert net.forward(x).dtype == np.float64
    assert net.backward(np.ones((1, 4))).dtype == np.float64
    assert all(p.grad.dtype == np.float32 for p in net.parameters())


def nets_for_predict():
    """small_net, and nets whose first layers return their input or a view
    of it (ReLU in place would then overwrite the caller's array)."""
    yield small_net()
    yield Sequential(
        [("relu0", ReLU()), ("conv", Conv2d(2, 3, 3, padding=1, seed=3)), ("relu", ReLU())]
        + [("pool", MaxPool2d(2)), ("flat", Flatten()), ("relu2", ReLU()), ("fc", Linear(27, 4, seed=4))],
        input_shape=(2, 6, 6),
    ).astype(np.float64)
    yield Sequential(
        [("flat", Flatten()), ("drop", Dropout(0.5)), ("relu", ReLU()), ("fc", Linear(72, 4, seed=5))],
        input_shape=(2, 6, 6),
    ).astype(np.float64)


@pytest.mark.parametrize("net", list(nets_for_predict()), ids=["small", "relu-first", "flatten-first"])
def test_predict_equals_forward_and_keeps_nothing(net):
    """predict: the same scores as forward, the caller's input untouched, no
    caches left behind, and backward refused until the next forward."""
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    saved = x.copy()
    want = net.forward(x)
    np.testing.assert_array_equal(x, saved)
    got = net.predict(x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(x, saved)  # in-place ReLUs never reach the input
    assert all(layer.cache is None for layer in net)
    assert all(getattr(layer, "switches", None) is None for layer in net)
    with pytest.raises(ShapeError, match="call forward before backward"):
        net.backward(np.ones_like(got))
    net.forward(x)
    assert net.backward(np.ones_like(got)).shape == x.shape


def test_forward_to_forgets_the_later_layers_so_backward_cannot_use_stale_caches():
    net = small_net()
    x = np.ones((3, 2, 6, 6))
    net.forward(x)
    out = net.forward_to(x, "pool1")
    later = net.layers[net.index("pool1") + 1 :]
    assert later and all(layer.cache is None for layer in later)
    assert net.backward(np.ones(out.shape), start="pool1", param_grads=False).shape == x.shape
