"""Tests of tinyconv.methods.faithfulness (beyond the paper): deletion and
insertion curves (Petsiuk et al. 2018).

References: the curve's end points are the scores of the untouched, the
fully removed and the blurred image; on a linear score the exact
contributions w ⊙ x are the fastest deletion order there is (a greedy
argument), so every other order lies above it; SciPy's Gaussian filter.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyconv import Sequential
from tinyconv.engine.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.errors import ShapeError, TinyconvError
from tinyconv.methods import faithfulness as F


def net_(seed=0):
    return Sequential(
        [
            Conv2d(3, 4, 3, padding=1, seed=seed),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Linear(4 * 16, 5, seed=seed + 1),
        ],
        input_shape=(3, 8, 8),
    ).astype(np.float64)


def linear(seed=0):
    return Sequential([Conv2d(2, 3, 3, padding=1, seed=seed), Flatten(), Linear(3 * 36, 4, seed=seed + 1)],
                      input_shape=(2, 6, 6)).astype(np.float64)  # fmt: skip


def test_auc_is_the_trapezoid_area():
    np.testing.assert_allclose(F.auc(np.array([[0.5] * 11, np.linspace(0, 1, 11)])), [0.5, 0.5])
    np.testing.assert_allclose(F.auc(np.array([[1.0, 0.0, 0.0]])), [0.25])


def test_pixel_order_is_descending_with_seeded_ties():
    m = np.array([[[3.0, 1.0], [1.0, 5.0]]])
    order = F.pixel_order(m)
    assert list(order[0][:1]) == [3] and order[0][1] == 0 and set(order[0][2:]) == {1, 2}
    ties = np.zeros((1, 4, 4))
    np.testing.assert_array_equal(F.pixel_order(ties, seed=1), F.pixel_order(ties, seed=1))
    assert not np.array_equal(F.pixel_order(ties, seed=1)[0], np.arange(16))


def test_the_curves_start_and_end_at_the_untouched_removed_and_blurred_images():
    net = net_()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    m = np.random.default_rng(1).random((2, 8, 8))
    cur = F.deletion_insertion(net, x, m, [1, 2], steps=8, baseline=0.5, blur_sigma=1.0, score="logit")
    s = lambda v: net.forward(v)[np.arange(2), [1, 2]]  # noqa: E731
    np.testing.assert_allclose(cur.deletion[:, 0], s(x))
    np.testing.assert_allclose(cur.deletion[:, -1], s(np.full_like(x, 0.5)))
    np.testing.assert_allclose(cur.insertion[:, 0], s(F.blur(x, 1.0)))
    np.testing.assert_allclose(cur.insertion[:, -1], s(x))
    assert cur.deletion.shape == (2, 9)
    # probabilities by default, in (0, 1)
    p = F.deletion_insertion(net, x, m, steps=4)
    assert (p.deletion > 0).all() and (p.deletion < 1).all()


def test_on_a_linear_score_the_exact_contributions_delete_fastest():
    net = linear()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 6, 6))
    c = 1
    eye = np.eye(72).reshape(-1, 2, 6, 6)
    w = (net.forward(eye)[:, c] - net.forward(np.zeros((1, 2, 6, 6)))[0, c]).reshape(2, 6, 6)
    exact = (w * x[0]).sum(axis=0)[None]  # each pixel's contribution to S_c
    # one pixel per step: removing the largest contributions first is the lowest curve
    best = F.deletion_insertion(net, x, exact, c, steps=36, score="logit").deletion
    for _ in range(5):
        other = F.deletion_insertion(
            net, x, rng.standard_normal((1, 6, 6)), c, steps=36, score="logit"
        ).deletion
        assert (best <= other + 1e-9).all()
        assert (best < other - 1e-9).any()


def test_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(3).standard_normal((2, 3, 9, 7))
    for sigma in (0.7, 1.5):
        r = int(np.ceil(3 * sigma))
        want = ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="mirror", truncate=r / sigma)
        np.testing.assert_allclose(F.blur(x, sigma), want, rtol=1e-12, atol=1e-13)


def test_evaluate_ranks_occlusion_above_a_random_map_on_a_linear_score():
    net = linear(seed=3)
    x = np.random.default_rng(4).standard_normal((4, 2, 6, 6))
    r = F.evaluate(net, x, ["input_x_gradient", "saliency"], steps=12, score="logit")
    assert set(r) == {"input_x_gradient", "saliency", "random"}
    # gradient × input is the exact contribution here: it beats a random order
    assert r["input_x_gradient"]["deletion"] < r["random"]["deletion"]
    assert r["input_x_gradient"]["insertion"] > r["random"]["insertion"]


def test_bad_arguments_raise():
    net, x = net_(), np.zeros((1, 3, 8, 8))
    with pytest.raises(ShapeError, match="maps have shape"):
        F.deletion_insertion(net, x, np.zeros((1, 4, 4)))
    with pytest.raises(TinyconvError, match="score"):
        F.deletion_insertion(net, x, np.zeros((1, 8, 8)), score="softmax")


def test_the_curves_stay_on_the_device(fake):
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8))
    m = np.random.default_rng(6).random((2, 8, 8))
    host, device = net_(), net_().to("fake")
    want = F.deletion_insertion(host, x, m, steps=4)
    got = F.deletion_insertion(device, fake.asarray(x), m, steps=4)
    np.testing.assert_allclose(got.deletion, want.deletion, rtol=1e-12)
    np.testing.assert_allclose(got.insertion, want.insertion, rtol=1e-12)


