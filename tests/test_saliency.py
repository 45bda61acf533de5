"""Tests of tinyconv.methods.saliency: the input gradient w = ∂S_c/∂I, the paper's
saliency map M_ij = max_ch |w|, the target rules, and SmoothGrad's σ.

References: central finite differences in float64 of the score S_c (not the
softmax); per-image runs against the batch; a one-pixel net where the noise
level of SmoothGrad has a closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import assert_gradients_close, numerical_gradient

import tinyconv as tc
from tinyconv import Sequential
from tinyconv.engine.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.errors import TargetError


def rgb_net(seed=0, dtype=np.float64):
    """conv(3->4, 3x3, pad 1)-ReLU-pool 2-conv(4->3, 2x2, stride 2)-ReLU-flatten-dense(5)."""
    return Sequential(
        [
            Conv2d(3, 4, 3, padding=1, seed=seed),
            ReLU(),
            MaxPool2d(2),
            Conv2d(4, 3, 2, stride=2, seed=seed + 1),
            ReLU(),
            Flatten(),
            Dropout(0.5, seed=seed),
            Linear(3 * 2 * 2, 5, seed=seed + 2),
        ],
        input_shape=(3, 8, 8),
    ).astype(dtype)


def away_from_kinks(net, x, margin=1e-3):
    """True when no ReLU input is within ``margin`` of 0 (finite differences are smooth there)."""
    net.forward(x, keep=True)
    prev = x
    for layer in net:
        out = net.activations[layer.name]
        if isinstance(layer, ReLU) and np.abs(prev).min() < margin:
            return False
        prev = out
    return True


def draw_input(net, rng, n=1):
    for _ in range(50):
        x = rng.standard_normal((n, *net.input_shape))
        if away_from_kinks(net, x):
            return x
    raise AssertionError("could not draw an input away from kinks")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_input_gradient_matches_finite_differences_of_the_score(seed):
    net = rgb_net(seed)
    x = draw_input(net, np.random.default_rng(seed))
    c = 3
    w = tc.input_gradient(net, x, c)

    def score():
        return net.forward(x)[0, c]  # the unnormalised score S_c, never the softmax

    assert_gradients_close(w, numerical_gradient(score, x), "input_gradient")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_saliency_is_channel_max_of_absolute_gradient(seed):
    net = rgb_net(seed)
    x = draw_input(net, np.random.default_rng(seed + 10))
    c = int(net.forward(x).argmax())
    num = numerical_gradient(lambda: net.forward(x)[0, c], x)  # (1, 3, 8, 8)
    expected = np.abs(num).max(axis=1)  # M_ij = max_ch |w|
    m = tc.saliency(net, x)
    assert m.shape == (1, 8, 8)
    assert_gradients_close(m, expected, "saliency")


def test_saliency_of_one_channel_is_absolute_gradient():
    net = Sequential(
        [Conv2d(1, 2, 3, seed=0), ReLU(), Flatten(), Linear(2 * 4 * 4, 3, seed=1)], input_shape=(1, 6, 6)
    ).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    w = tc.input_gradient(net, x, [0, 2])
    np.testing.assert_array_equal(tc.saliency(net, x, [0, 2]), np.abs(w[:, 0]))


def test_batch_equals_per_image():
    net = rgb_net(4)
    x = np.random.default_rng(3).standard_normal((5, 3, 8, 8))
    targets = [0, 4, 2, 2, 1]
    batch = tc.input_gradient(net, x, targets)
    for i, t in enumerate(targets):
        one = tc.input_gradient(net, x[i : i + 1], t)
        np.testing.assert_allclose(batch[i : i + 1], one, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tc.saliency(net, x, targets), np.abs(batch).max(axis=1), rtol=0, atol=0)


def test_default_target_is_the_argmax_per_image():
    net = rgb_net(5)
    x = np.random.default_rng(4).standard_normal((6, 3, 8, 8))
    top = net.forward(x).argmax(axis=1)
    assert len(set(top.tolist())) > 1  # the test means something only if the classes differ
    np.testing.assert_array_equal(tc.input_gradient(net, x), tc.input_gradient(net, x, list(top)))
    np.testing.assert_array_equal(tc.saliency(net, x), tc.saliency(net, x, top))


def test_an_int_target_applies_to_every_image():
    net = rgb_net(6)
    x = np.random.default_rng(5).standard_normal((3, 3, 8, 8))
    np.testing.assert_array_equal(tc.input_gradient(net, x, 1), tc.input_gradient(net, x, [1, 1, 1]))


def test_dropout_is_off_and_the_mode_restored():
    net = rgb_net(7).train()
    x = np.random.default_rng(6).standard_normal((2, 3, 8, 8))
    first = tc.input_gradient(net, x, 0)
    np.testing.assert_array_equal(first, tc.input_gradient(net, x, 0))  # no random masks
    assert all(layer.training for layer in net)


def test_no_parameter_gradients_are_accumulated():
    net = rgb_net(8)
    tc.saliency(net, np.random.default_rng(0).standard_normal((2, 3, 8, 8)))
    assert all(not p.grad.any() for p in net.parameters())


@pytest.mark.parametrize(
    "target, match",
    [
        (5, "out of range"),
        (-1, "out of range"),
        ([0, 1, 2], "3 targets for a batch of 2"),
        ([0, 9], "out of range"),
        ("cat", "target"),
        (True, "class index"),
        ([0.5, 1], "class indices"),
    ],
)
def test_bad_targets_raise_target_error(target, match):
    net = rgb_net(0)
    x = np.zeros((2, 3, 8, 8))
    with pytest.raises(TargetError, match=match):
        tc.input_gradient(net, x, target)


def test_float32_input_stays_float32():
    net = rgb_net(0, np.float32)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert tc.input_gradient(net, x).dtype == np.float32
    assert tc.saliency(net, x).dtype == np.float32


# --- SmoothGrad (beyond the paper) ---


def one_pixel_net(width=1):
    """Flatten - ReLU - dense with weights 1: ∂S/∂I_i = 1(I_i > 0)."""
    fc = Linear(width, 1)
    fc.params["weight"][...] = 1
    fc.params["bias"][...] = 0
    return Sequential([Flatten(), ReLU(), fc], input_shape=(1, 1, width)).astype(np.float64)


def normal_cdf(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_smoothgrad_sigma_is_a_standard_deviation_in_input_units():
    # One pixel at 1, noise N(0, σ²): the mean saliency is P(1 + σz > 0) = Φ(1/σ).
    # σ = 2 gives Φ(0.5) = 0.691; reading σ as a variance would give Φ(0.25) = 0.599.
    net = one_pixel_net()
    x = np.ones((1, 1, 1, 1))
    m = tc.smoothgrad(net, x, target=0, samples=3000, sigma=2.0, seed=0)
    assert abs(float(m[0, 0, 0]) - normal_cdf(0.5)) < 0.025


def test_smoothgrad_sigma_fraction_is_relative_to_the_input_range():
    # pixels (1, -1): range 2, fraction 0.5 -> σ = 1, so pixel 0 gets Φ(1) = 0.841, pixel 1 Φ(-1) = 0.159.
    net = one_pixel_net(2)
    x = np.array([1.0, -1.0]).reshape(1, 1, 1, 2)
    m = tc.smoothgrad(net, x, target=0, samples=3000, sigma_fraction=0.5, seed=1)
    np.testing.assert_allclose(m[0, 0], [normal_cdf(1), normal_cdf(-1)], atol=0.025)


def test_smoothgrad_without_noise_is_saliency():
    net = rgb_net(1)
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
    np.testing.assert_allclose(tc.smoothgrad(net, x, samples=3, sigma=0.0), tc.saliency(net, x), rtol=1e-12)


def test_smoothgrad_is_seeded_and_keeps_the_clean_top_class():
    net = rgb_net(2)
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8))
    a = tc.smoothgrad(net, x, samples=4, seed=7)
    np.testing.assert_array_equal(a, tc.smoothgrad(net, x, samples=4, seed=7))
    top = net.forward(x).argmax(axis=1)
    np.testing.assert_array_equal(a, tc.smoothgrad(net, x, target=list(top), samples=4, seed=7))


def test_smoothgrad_rejects_bad_options():
    net = rgb_net(0)
    x = np.zeros((1, 3, 8, 8))
    with pytest.raises(ValueError, match="samples"):
        tc.smoothgrad(net, x, samples=0)
    with pytest.raises(ValueError, match="sigma"):
        tc.smoothgrad(net, x, sigma=-1)


def test_saliency_and_smoothgrad_stay_on_the_device(fake):
    from fake_device import FakeArray

    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    host, device = rgb_net(3), rgb_net(3).to("fake")
    d = fake.asarray(x)
    for got, want in [
        (
            tc.input_gradient(device, d, [1, 2], rule="guided"),
            tc.input_gradient(host, x, [1, 2], rule="guided"),
        ),
        (tc.saliency(device, d), tc.saliency(host, x)),
        (tc.smoothgrad(device, d, samples=2, seed=0), tc.smoothgrad(host, x, samples=2, seed=0)),
    ]:
        assert isinstance(got, FakeArray)
        np.testing.assert_allclose(fake.asnumpy(got), want, rtol=1e-12)


def test_rule_none_keeps_each_relus_own_rule_and_an_explicit_rule_switches_them_all():
    """tc.input_gradient(rule=None) honours a rule set on one ReLU; an explicit
    rule applies to every ReLU and is restored afterwards."""
    net = rgb_net()
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8))
    relus = [layer for layer in net if isinstance(layer, ReLU)]
    relus[1].rule = "guided"  # one layer only
    mixed = tc.input_gradient(net, x, [1, 2], rule=None)
    everywhere = tc.input_gradient(net, x, [1, 2], rule="gradient")
    assert [r.rule for r in relus] == ["gradient", "guided"]  # restored after the explicit rule
    # the reference: net.backward, which always runs each ReLU's own rule
    net.forward(x)
    seed = np.zeros((2, 5))
    seed[[0, 1], [1, 2]] = 1
    np.testing.assert_array_equal(mixed, net.backward(seed, param_grads=False))
    assert not np.array_equal(mixed, everywhere)
    relus[1].rule = "gradient"
    np.testing.assert_array_equal(tc.input_gradient(net, x, [1, 2], rule=None), everywhere)
    np.testing.assert_array_equal(tc.saliency(net, x, [1, 2]), np.abs(everywhere).max(axis=1))


def test_eval_mode_turns_dropout_off_and_restores_each_layers_mode():
    from tinyconv.methods import saliency as sal

    net = rgb_net().train()
    net[0].training = False  # a mixed state must come back as it was
    before = [layer.training for layer in net]
    with sal.eval_mode(net) as same:
        assert same is net and not any(layer.training for layer in net)
    assert [layer.training for layer in net] == before
    assert not hasattr(sal, "inference_mode")
