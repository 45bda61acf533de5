"""The EM Gaussian mixture: recovers known components, its density matches an
independent computation, and it survives degenerate data."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyconv.errors import DataError
from tinyconv.methods.localisation.gmm import GaussianMixture


def _sample(rng, means, covs, weights, n):
    counts = rng.multinomial(n, weights)
    return np.concatenate(
        [rng.multivariate_normal(m, c, size=k) for m, c, k in zip(means, covs, counts, strict=True)]
    )


def _match(found, true):
    """Smallest total distance between found and true means over all pairings."""
    return min(
        max(np.linalg.norm(found[list(p)] - true, axis=1)) for p in itertools.permutations(range(len(true)))
    )


@pytest.mark.parametrize("init", ["kmeans++", "quantile"])
def test_recovers_known_means_and_weights(init):
    rng = np.random.default_rng(3)
    means = np.array([[0.2, 0.2, 0.7], [0.8, 0.3, 0.2], [0.4, 0.9, 0.5]])
    covs = [
        np.diag([0.02, 0.01, 0.015]) ** 2 * 4,
        np.eye(3) * 0.03**2,
        np.array([[4, 1, 0], [1, 3, 0], [0, 0, 2]]) * 1e-3,
    ]
    weights = np.array([0.5, 0.3, 0.2])
    x = _sample(rng, means, covs, weights, 3000)
    gmm = GaussianMixture(3, reg=1e-6, init=init, seed=0).fit(x)
    assert gmm.converged
    assert _match(gmm.means, means) < 0.01
    order = [int(np.argmin(np.linalg.norm(gmm.means - m, axis=1))) for m in means]
    np.testing.assert_allclose(gmm.weights[order], weights, atol=0.03)
    np.testing.assert_allclose(gmm.covariances[order[2]], covs[2], atol=5e-4)


def test_density_matches_direct_formula():
    """score_samples = log Σ_k π_k N(x; μ_k, Σ_k), computed here naively with inv/det."""
    rng = np.random.default_rng(0)
    x = rng.random((400, 3))
    gmm = GaussianMixture(4, seed=1).fit(x)
    direct = np.zeros(len(x))
    for w, mu, cov in zip(gmm.weights, gmm.means, gmm.covariances, strict=True):
        diff = x - mu
        maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        direct += w * np.exp(-0.5 * maha) / np.sqrt((2 * np.pi) ** 3 * np.linalg.det(cov))
    np.testing.assert_allclose(gmm.score_samples(x), np.log(direct), rtol=1e-10)
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = sum(
        w * scipy_stats.multivariate_normal(mu, cov).pdf(x)
        for w, mu, cov in zip(gmm.weights, gmm.means, gmm.covariances, strict=True)
    )
    np.testing.assert_allclose(gmm.score_samples(x), np.log(ref), rtol=1e-8)


def test_em_never_lowers_the_likelihood():
    rng = np.random.default_rng(5)
    x = rng.random((300, 2)) ** 2
    lls = [GaussianMixture(3, max_iter=k, tol=-np.inf, seed=2).fit(x).log_likelihood for k in range(1, 12)]
    assert all(b >= a - 1e-10 for a, b in zip(lls, lls[1:], strict=False))


def test_one_dimensional_data():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.2, 0.02, 500), rng.normal(0.7, 0.05, 500)])
    gmm = GaussianMixture(2, reg=1e-6, seed=0).fit(x)
    np.testing.assert_allclose(np.sort(gmm.means[:, 0]), [0.2, 0.7], atol=0.01)


@given(n=st.integers(1, 6), k=st.integers(1, 8), d=st.sampled_from([1, 3]), seed=st.integers(0, 100))
def test_fewer_points_or_distinct_colours_than_components(n, k, d, seed):
    """Few or repeated points: components are dropped, the density stays finite."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(n, d)) / 2.0
    gmm = GaussianMixture(k, seed=seed).fit(x)
    assert 1 <= len(gmm.weights) <= min(k, len(np.unique(x, axis=0)))
    assert np.isclose(gmm.weights.sum(), 1.0)
    assert np.isfinite(gmm.score_samples(rng.random((10, d)))).all()


def test_constant_data():
    gmm = GaussianMixture(5).fit(np.full((50, 3), 0.4))
    assert len(gmm.weights) == 1
    np.testing.assert_allclose(gmm.means[0], 0.4)


def test_bad_data():
    with pytest.raises(DataError, match="zero points"):
        GaussianMixture(2).fit(np.zeros((0, 3)))
    with pytest.raises(DataError, match="NaN"):
        GaussianMixture(2).fit(np.array([[0.1, np.nan, 0.2]]))
    gmm = GaussianMixture(1).fit(np.random.default_rng(0).random((20, 3)))
    with pytest.raises(DataError, match="D = 3"):
        gmm.score_samples(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        GaussianMixture(0)
