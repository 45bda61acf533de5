"""Gaussian mixture colour models, fitted by expectation-maximisation.

The localisation pipeline (``tinyconv.methods.localisation.pipeline``) models the colours of the
object and of the background each with a mixture of K Gaussians over RGB (or
over intensity, for greyscale images):

    p(x) = Σ_k π_k N(x; μ_k, Σ_k),   x ∈ R^D,

with full covariances Σ_k, each regularised by Σ_k + ε I so that a component
sitting on a flat colour region stays invertible. EM alternates

    E: r_nk = π_k N(x_n; μ_k, Σ_k) / p(x_n)            (responsibilities)
    M: N_k = Σ_n r_nk,  π_k = N_k / N,  μ_k = Σ_n r_nk x_n / N_k,
       Σ_k = Σ_n r_nk (x_n − μ_k)(x_n − μ_k)ᵀ / N_k + ε I

until the mean log-likelihood improves by less than ``tol``. Densities are
computed in the log domain through the Cholesky factor of each Σ_k.
Initialisation is k-means++ (seeded) followed by a few Lloyd iterations, or
quantiles of the first principal direction ("quantile").
"""

from __future__ import annotations

import numpy as np

from ...engine.functional import logsumexp
from ...errors import DataError, OptionError

LOG_2PI = float(np.log(2.0 * np.pi))


def _kmeans_pp(x, k, rng):
    """k-means++ centres: the first uniformly, each next with probability ∝ D(x)²."""
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # every point coincides with a centre already
            centres.append(x[rng.integers(len(x))])
            continue
        centres.append(x[rng.choice(len(x), p=d2 / total)])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    return np.array(centres)


def _quantile_centres(x, k):
    """Centres at the k evenly spaced quantiles of the projection on the first principal direction."""
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    order = np.argsort(centred @ vt[0], kind="stable")
    picks = order[np.minimum(((np.arange(k) + 0.5) / k * len(x)).astype(int), len(x) - 1)]
    return x[picks]


def _lloyd(x, centres, iters=10):
    """A few k-means iterations; returns the hard assignment (N,)."""
    for _ in range(iters):
        d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)  # (N, K)
        assign = d2.argmin(1)
        for j in range(len(centres)):
            members = x[assign == j]
            if len(members):
                centres[j] = members.mean(0)
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    return d2.argmin(1)


class GaussianMixture:
    """A K-component full-covariance Gaussian mixture in D dimensions.

    n_components: K (reduced to the number of distinct points when there are fewer).
    reg:          ε added to every covariance's diagonal (data units squared).
    init:         "kmeans++" (seeded) or "quantile" (deterministic).
    After ``fit``: ``weights`` (K,), ``means`` (K, D), ``covariances`` (K, D, D),
    ``converged``, ``n_iter``, ``log_likelihood`` (mean per point).
    """

    def __init__(self, n_components=5, reg=1e-3, max_iter=100, tol=1e-5, init="kmeans++", seed=0):
        if int(n_components) < 1:
            raise OptionError(f"n_components must be at least 1, got {n_components}")
        if init not in ("kmeans++", "quantile"):
            raise OptionError(f"init must be 'kmeans++' or 'quantile', got {init!r}")
        if reg <= 0:
            raise OptionError(f"reg must be positive, got {reg}")
        self.n_components, self.reg, self.max_iter, self.tol = (
            int(n_components),
            float(reg),
            int(max_iter),
            tol,
        )
        self.init, self.seed = init, seed
        self.weights = self.means = self.covariances = None

    # --- densities ---

    def _component_log_pdf(self, x):
        """log π_k + log N(x_n; μ_k, Σ_k), shape (N, K)."""
        d = x.shape[1]
        chol = np.linalg.cholesky(self.covariances)  # (K, D, D), Σ_k = L_k L_kᵀ
        # Mahalanobis distances through the factors: z = L_k⁻¹ (x − μ_k)
        z = np.linalg.solve(chol, (x[None] - self.means[:, None]).transpose(0, 2, 1))  # (K, D, N)
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)  # (K,)
        out = np.log(self.weights)[:, None] - 0.5 * ((z * z).sum(1) + (log_det + d * LOG_2PI)[:, None])
        return out.T

    def score_samples(self, x):
        """log p(x_n) for each row of x (N, D) -> (N,)."""
        x = self._check(x, fitted=True)
        return logsumexp(self._component_log_pdf(x), axis=1)

    # --- fitting ---

    def _check(self, x, fitted=False):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise DataError(f"GMM data must be (N, D), got shape {x.shape}")
        if fitted:
            if self.means is None:
                raise RuntimeError("call fit before scoring")
            if x.shape[1] != self.means.shape[1]:
                raise DataError(
                    f"GMM was fitted in D = {self.means.shape[1]}, got data with D = {x.shape[1]}"
                )
        if not np.isfinite(x).all():
            raise DataError("GMM data contains NaN or infinite values")
        return x

    def fit(self, x):
        """Fit to x (N, D) (or (N,) for D = 1); returns self."""
        x = self._check(x)
        n, d = x.shape
        if n == 0:
            raise DataError("cannot fit a Gaussian mixture to zero points")
        k = min(self.n_components, len(np.unique(x, axis=0)))
        rng = np.random.default_rng(self.seed)
        centres = _kmeans_pp(x, k, rng) if self.init == "kmeans++" else _quantile_centres(x, k)
        resp = np.eye(k)[_lloyd(x, centres.copy())]  # (N, K) hard start
        self._m_step(x, resp)
        previous = -np.inf
        self.converged, self.n_iter = False, 0
        for step in range(1, self.max_iter + 1):
            self.n_iter = step
            lp = self._component_log_pdf(x)
            log_p = logsumexp(lp, axis=1, keepdims=True)  # (N, 1)
            resp = np.exp(lp - log_p)
            self.log_likelihood = float(log_p.mean())
            if self.log_likelihood - previous < self.tol:
                self.converged = True
                break
            previous = self.log_likelihood
            self._m_step(x, resp)
        return self

    def _m_step(self, x, resp):
        n, d = x.shape
        nk = resp.sum(0)
        keep = nk > 1e-9  # drop components that lost every point
        resp, nk = resp[:, keep], nk[keep]
        self.weights = nk / n
        self.means = (resp.T @ x) / nk[:, None]
        covs = np.empty((len(nk), d, d))
        for j in range(len(nk)):
            c = x - self.means[j]
            covs[j] = (resp[:, j, None] * c).T @ c / nk[j] + self.reg * np.eye(d)
        self.covariances = covs
