"""Tests of tinyconv.methods.classviz: gradient ascent on the input.

On a linear net S(I) = W·I + b the ascent has a closed form, so the update
rule (score and softmax objectives, the L2 penalty, jitter) is checked
exactly; on the bundled MNIST network the optimisation must raise the target
score and make the target the top class.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinyconv as tc
from tinyconv import Sequential
from tinyconv.engine.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.errors import TargetError
from tinyconv.methods.classviz import DEFAULTS, _gaussian_blur, class_models
from tinyconv.pictures.imaging import deprocess


def linear_net(seed=0, k=4, shape=(1, 3, 4)):
    """Flatten - dense: S = W·vec(I) + b, so ∂S_c/∂I = W[c] everywhere."""
    n = int(np.prod(shape))
    return Sequential([Flatten(), Linear(n, k, seed=seed)], input_shape=shape, mean=0.5, std=0.25).astype(
        np.float64
    )


def small_net(seed=0):
    return Sequential(
        [
            Conv2d(1, 4, 3, padding=1, seed=seed),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Linear(4 * 4 * 4, 3, seed=seed + 1),
        ],
        input_shape=(1, 8, 8),
        mean=0.2,
        std=0.5,
    ).astype(np.float64)


def test_score_objective_follows_the_closed_form_on_a_linear_net():
    # I_{k+1} = I_k + lr (w - 2λ I_k) from I_0 = 0  =>  I_n = (1 - (1 - 2λ lr)^n) w / (2λ)
    net = linear_net()
    c, lr, l2, n = 2, 0.3, 0.5, 7
    r = tc.class_model(net, c, steps=n, lr=lr, l2=l2, progress=False)
    w = net[1].params["weight"][c].reshape(net.input_shape)
    expected = (1 - (1 - 2 * l2 * lr) ** n) * w / (2 * l2)
    np.testing.assert_allclose(r.input, expected, rtol=1e-12)
    assert r.input.shape == net.input_shape


def test_softmax_objective_step_is_the_gradient_of_log_posterior():
    net = linear_net(1)
    c, lr, l2 = 1, 0.2, 0.1
    r = tc.class_model(net, c, steps=1, lr=lr, l2=l2, objective="softmax", progress=False)
    weight, bias = net[1].params["weight"], net[1].params["bias"]
    p = np.exp(bias - bias.max())
    p /= p.sum()  # scores of the zero image are the biases
    grad = (np.eye(len(bias))[c] - p) @ weight  # ∂ log P_c/∂I = Wᵀ(e_c − softmax)
    np.testing.assert_allclose(r.input.ravel(), lr * grad, rtol=1e-12)
    assert 0 < r.posterior <= 1
    np.testing.assert_allclose(r.history["posterior"][0], p[c])


def test_history_records_scores_runner_up_and_objective():
    net = linear_net(2)
    c, l2 = 0, 0.05
    r = tc.class_model(net, c, steps=5, lr=0.1, l2=l2, progress=False)
    h = r.history
    assert all(len(v) == 6 for v in h.values())  # steps + 1 (after 0..5 updates)
    s = r.scores
    assert h["score"][-1] == pytest.approx(s[c])
    assert h["runner_up"][-1] == pytest.approx(np.delete(s, c).max())
    assert h["objective"][-1] == pytest.approx(s[c] - l2 * np.sum(r.input**2))
    assert r.runner_up_class != c and r.score == pytest.approx(s[c])
    assert np.all(np.diff(h["objective"]) > 0)  # concave objective, small steps: monotone


def test_params_record_every_hyper_parameter_and_the_seed():
    r = tc.class_model(linear_net(), 1, steps=2, lr=0.1, l2=0.01, seed=None, progress=False)
    for key in (
        "target",
        "class_name",
        "objective",
        "steps",
        "lr",
        "l2",
        "seed",
        "jitter",
        "blur_every",
        "blur_sigma",
        "clip",
        "start",
        "mean",
        "std",
    ):
        assert key in r.params
    assert isinstance(r.params["seed"], int)
    again = tc.class_model(linear_net(), 1, steps=2, lr=0.1, l2=0.01, seed=r.params["seed"], progress=False)
    np.testing.assert_array_equal(r.input, again.input)


def test_image_is_the_input_with_the_mean_added_back():
    net = linear_net(3)
    r = tc.class_model(net, 0, steps=3, lr=1.0, l2=0.01, progress=False)
    assert r.image.dtype == np.uint8 and r.image.shape == (3, 4, 1)
    expected = np.round(np.clip(r.input * 0.25 + 0.5, 0, 1) * 255).transpose(1, 2, 0)
    np.testing.assert_array_equal(r.image, expected)
    blank = tc.class_model(net, 0, steps=0, progress=False)  # the zero image is the mean
    np.testing.assert_array_equal(blank.image, round(0.5 * 255))


def test_batch_of_classes_equals_one_at_a_time():
    net = small_net()
    options = {"steps": 6, "lr": 0.5, "l2": 0.05, "seed": 3, "jitter": 1}
    batch = class_models(net, [2, 0], progress=False, **options)
    for r in batch:
        one = tc.class_model(net, r.target, progress=False, **options)
        np.testing.assert_allclose(r.input, one.input, rtol=1e-10, atol=1e-12)


def test_jitter_ascends_the_score_of_the_shifted_image():
    # One step on S(roll(I, s)) = W[c]·roll(I, s): the gradient w.r.t. I is roll(W[c], -s),
    # with s the first shift drawn from the recorded seed.
    net = linear_net(4, shape=(1, 5, 6))
    lr, seed, jitter = 0.2, 3, 2
    r = tc.class_model(net, 1, steps=1, lr=lr, l2=0.1, jitter=jitter, seed=seed, progress=False)
    s = np.random.default_rng(seed).integers(-jitter, jitter + 1, size=2)
    assert s.any()  # a real shift, or the test proves nothing
    w = net[1].params["weight"][1].reshape(1, 5, 6)
    np.testing.assert_allclose(r.input, lr * np.roll(w, (-s[0], -s[1]), axis=(1, 2)), rtol=1e-12)
    assert r.params["jitter"] == jitter


def test_clip_keeps_pixels_in_range_and_blur_keeps_constants():
    net = linear_net(5)
    r = tc.class_model(net, 0, steps=5, lr=5.0, l2=0.0, clip=True, progress=False)
    pixels = r.input * 0.25 + 0.5
    assert pixels.min() >= -1e-12 and pixels.max() <= 1 + 1e-12
    const = np.full((1, 2, 6, 7), 1.5)
    np.testing.assert_allclose(_gaussian_blur(const, 0.8), const)
    spike = np.zeros((1, 1, 9, 9))
    spike[0, 0, 4, 4] = 1
    blurred = _gaussian_blur(spike, 1.0)
    assert blurred.sum() == pytest.approx(1.0) and blurred[0, 0, 4, 4] < 0.5


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"target": 4}, TargetError, "out of range"),
        ({"target": -1}, TargetError, "out of range"),
        ({"target": [0, 1]}, TargetError, "one class index"),
        ({"target": 0, "objective": "posterior"}, ValueError, "objective"),
        ({"target": 0, "lr": 0}, ValueError, "lr > 0"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        tc.class_model(linear_net(), progress=False, **kwargs)


# --- on the bundled MNIST network ---


@pytest.fixture(scope="module")
def mnist():
    try:
        return tc.models.native.load_bundled("mnist_cnn.npz")
    except tc.WeightsError as exc:
        pytest.skip(f"bundled MNIST weights not available: {exc}")


STEPS = 150  # default lr and λ, fewer steps than the default 400 to keep the test short


@pytest.fixture(scope="module")
def mnist_models(mnist):
    return class_models(mnist, [0, 3, 8], steps=STEPS, seed=0, progress=False)


@pytest.mark.slow  # ~5 s of CPU on the real network
def test_mnist_class_models_make_the_target_the_top_class(mnist_models):
    for r in mnist_models:
        assert r.top_class == r.target, r.summary()
        assert r.score > r.runner_up + 3
        assert r.history["score"][-1] > r.history["score"][0] + 5


@pytest.mark.slow  # ~5 s of CPU on the real network
def test_mnist_class_model_score_rises_monotonically_within_noise(mnist_models):
    for r in mnist_models:
        s = r.history["score"]
        rise = s.max() - s.min()
        drops = np.maximum.accumulate(s) - s  # how far below its best so far, step by step
        assert drops.max() < 0.1 * rise, r.summary()
        tenths = np.array([chunk.mean() for chunk in np.array_split(s, 10)])
        assert np.all(np.diff(tenths) > -0.02 * rise), tenths  # smoothed over a tenth of the run: monotone
    assert DEFAULTS["l2"] > 0  # the paper's regulariser is on by default


@pytest.mark.slow  # ~5 s of CPU on the real network
def test_mnist_softmax_objective_reports_its_posterior(mnist):
    r = tc.class_model(mnist, 5, steps=60, objective="softmax", seed=0, progress=False)
    p = r.history["posterior"]
    assert (
        p[0] == pytest.approx(r.history["posterior"][0]) and 0.05 < p[0] < 0.5
    )  # ~uniform at the mean image
    assert r.posterior > p[0] and r.posterior == pytest.approx(p[-1])
    assert "P_c" in r.summary()
    np.testing.assert_array_equal(r.image, deprocess(r.input, mnist))


def test_class_models_stay_on_the_device(fake):
    options = {"steps": 4, "lr": 0.5, "l2": 0.05, "seed": 1, "jitter": 1, "blur_every": 2, "clip": True}
    host = class_models(small_net(), [0, 2], progress=False, objective="softmax", **options)
    device = class_models(small_net().to("fake"), [0, 2], progress=False, objective="softmax", **options)
    for h, d in zip(host, device, strict=True):
        assert type(d.input).__name__ == "FakeArray"
        np.testing.assert_allclose(fake.asnumpy(d.input), h.input, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(d.image, h.image)
        np.testing.assert_allclose(d.history["score"], h.history["score"], rtol=1e-10)


