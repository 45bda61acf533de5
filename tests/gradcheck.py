"""Central finite differences in float64, and a record of how well they agree.

Import from any test (pytest puts ``tests/`` on ``sys.path``)::

    from gradcheck import assert_gradients_close, numerical_gradient

    num = numerical_gradient(lambda: loss(x), x)     # x perturbed in place
    assert_gradients_close(analytic, num, "Conv2d input")

The relative error of an analytic gradient a against the numerical one n is

    err = max_i |a_i - n_i| / max(max_i |a_i|, max_i |n_i|)

(0 when both are exactly zero): a max-norm error, so a tiny entry that is
mostly cancellation noise cannot blow it up. Every call records the worst
error seen under its label in ``WORST``; ``conftest.py`` prints that table at
the end of the session.
"""

from __future__ import annotations

import numpy as np

# label -> (worst relative error, number of checks)
WORST: dict[str, tuple[float, int]] = {}

TOLERANCE = 1e-6


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """∂f/∂x by central differences, (f(x + εe_i) - f(x - εe_i)) / 2ε.

    f: a function of no arguments returning a scalar that reads ``x``;
    x: a float64 NumPy array, perturbed in place and restored.
    Returns an array of x's shape.
    """
    if x.dtype != np.float64:
        raise TypeError(f"finite differences need float64, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views of x and grad
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = float(f())
        flat[i] = old - eps
        minus = float(f())
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def relative_error(analytic, numeric) -> float:
    """max |a - n| / max(max |a|, max |n|); 0 when both are zero."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise AssertionError(f"gradient shapes differ: {a.shape} vs {n.shape}")
    scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0))
    diff = np.abs(a - n).max(initial=0.0)
    return 0.0 if scale == 0.0 else float(diff / scale)


def record(label: str, err: float) -> None:
    worst, count = WORST.get(label, (0.0, 0))
    WORST[label] = (max(worst, err), count + 1)


def assert_gradients_close(analytic, numeric, label: str, tol: float = TOLERANCE) -> float:
    """Assert relative_error < tol, record it under ``label``, return it."""
    err = relative_error(analytic, numeric)
    record(label, err)
    assert err < tol, f"{label}: relative error {err:.3g} >= {tol:g}"
    return err


def summary_lines() -> list[str]:
    """The table conftest prints: label, worst relative error, checks."""
    if not WORST:
        return []
    width = max(len(k) for k in WORST)
    lines = [f"{'gradient':<{width}}  {'worst rel. err':>14}  {'checks':>6}"]
    for label in sorted(WORST):
        worst, count = WORST[label]
        lines.append(f"{label:<{width}}  {worst:>14.2e}  {count:>6d}")
    return lines
