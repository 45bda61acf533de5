"""Image-specific class saliency (Simonyan et al. 2014, section 3).

For an image I₀ and a class c, the unnormalised class score S_c(I) is
approximated near I₀ by its first-order Taylor expansion

    S_c(I) ≈ wᵀ I + b,    w = ∂S_c/∂I |_{I₀}                       (paper eq. 2)

and the saliency map of an image with C channels is

    M_ij = max_ch |w_(ch, i, j)|                                    (paper, §3.1)

(for one channel, |w|). w is computed by one backward pass from a one-hot
seed on the *scores*, never on the softmax: the softmax posterior can grow by
lowering the other classes, which is not what the map should explain.

``smoothgrad`` (Smilkov et al. 2017) goes beyond the paper: it averages the
saliency of noisy copies of the image, which removes much of the speckle.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..engine.backend import get_array_module, to_numpy
from ..engine.functional import one_hot
from ..errors import OptionError, ShapeError, TargetError
from .checks import check_scores

__all__ = ["resolve_targets", "input_gradient", "saliency", "smoothgrad", "eval_mode", "relu_rules"]


@contextlib.contextmanager
def eval_mode(net):
    """Put every layer in eval mode (``net.eval()``: dropout off, the only layer
    that differs in training), restoring each layer's mode on exit. Unlike
    PyTorch's ``eval_mode`` it leaves gradients on: this is ``model.eval()``
    as a ``with`` block."""
    saved = [layer.training for layer in net.layers]
    try:
        net.eval()
        yield net
    finally:
        for layer, mode in zip(net.layers, saved, strict=True):
            layer.training = mode


def resolve_targets(target, scores) -> np.ndarray:
    """Class index per image, as a host int array of shape (N,).

    target: None (the top-scoring class of each image), an int (the same class
    for every image), or a sequence of N ints. scores: (N, K).
    """
    n, k = scores.shape
    if target is None:
        return to_numpy(scores.argmax(axis=1)).astype(np.int64)
    if isinstance(target, str):
        raise TargetError(f"target must be a class index, got the string {target!r} (see net.classes)")
    if isinstance(target, (bool, np.bool_)):
        raise TargetError(f"target must be a class index, got {target!r}")
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < k:  # before any int64 conversion: 2**70 must not overflow
            raise TargetError(
                f"target class {int(target)} is out of range: the network has {k} classes (0..{k - 1})"
            )
        targets = np.full(n, int(target), dtype=np.int64)
    else:
        try:
            values = list(to_numpy(target).ravel()) if hasattr(target, "shape") else list(target)
        except TypeError:
            raise TargetError(
                f"target must be None, a class index or one index per image, got {type(target).__name__}"
            ) from None
        if len(values) != n:
            raise TargetError(f"got {len(values)} targets for a batch of {n} images")
        if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in values):
            raise TargetError(f"targets must be class indices (ints), got {values!r}")
        for v in values:
            if not 0 <= int(v) < k:
                raise TargetError(
                    f"target class {int(v)} is out of range: the network has {k} classes (0..{k - 1})"
                )
        targets = np.asarray(values, dtype=np.int64)
    bad = targets[(targets < 0) | (targets >= k)]
    if bad.size:
        raise TargetError(
            f"target class {int(bad[0])} is out of range: the network has {k} classes (0..{k - 1})"
        )
    return targets


def relu_rules(net, rule=None):
    """``net.relu_rule(rule)``, or with ``rule=None`` a block that changes
    nothing: each ReLU keeps the rule it has (e.g. one set on a single layer)."""
    return contextlib.nullcontext(net) if rule is None else net.relu_rule(rule)


def input_gradient(net, x, target=None, rule="gradient"):
    """w = ∂S_c/∂I for each image of a batch, in one forward and one backward.

    x: (N, C, H, W) network input (already normalised, see ``preprocess``).
    target: None (top class per image), an int, or one int per image.
    rule: the ReLU backward rule for every ReLU, "gradient" (the true
          gradient, the default), "deconvnet" (Zeiler & Fergus) or "guided"
          (guided backprop), restored afterwards; None: each ReLU keeps its
          own ``rule`` (set per layer, e.g. ``net["relu3"].rule = "guided"``).
    Returns (N, C, H, W) on the device of ``x``. S_c is the unnormalised
    score; no parameter gradients are accumulated.
    """
    with eval_mode(net), relu_rules(net, rule):
        scores = net.forward(x)  # (N, K)
        if scores.ndim != 2:
            raise ShapeError(f"the network must output class scores (N, K), got shape {tuple(scores.shape)}")
        targets = resolve_targets(target, scores)
        check_scores(net, x, scores)
        return net.backward(one_hot(targets, scores), param_grads=False)


def reduce_channels(w):
    """M_ij = max over channels of |w|: (N, C, H, W) -> (N, H, W)."""
    xp = get_array_module(w)
    return xp.abs(w).max(axis=1)


def saliency(net, x, target=None, rule="gradient"):
    """The paper's saliency map M_ij = max_ch |∂S_c/∂I|: (N, C, H, W) -> (N, H, W).

    rule: as for ``input_gradient`` ("gradient", the paper's, for every ReLU;
    None keeps each ReLU's own rule)."""
    return reduce_channels(input_gradient(net, x, target, rule))


def _finite_nonnegative(value) -> bool:
    try:
        return bool(np.isfinite(float(value))) and float(value) >= 0
    except (TypeError, ValueError, OverflowError):
        return False


def smoothgrad(net, x, target=None, samples: int = 25, sigma=None, sigma_fraction: float = 0.15, seed=None):
    """SmoothGrad (beyond the paper): the mean saliency of noisy copies of x.

        M̄ = (1/n) Σ_k max_ch |∂S_c/∂I (x + ε_k)|,   ε_k ~ N(0, σ² I)

    sigma:          the noise standard deviation σ (not the variance) in the
                    units of ``x``, i.e. of the normalised network input.
    sigma_fraction: used when ``sigma`` is None: σ = sigma_fraction ×
                    (max(x) − min(x)) of each image (SmoothGrad's "noise level").
    samples:        number of noisy copies n.
    target:         as for ``saliency``; None picks each image's top class on
                    the clean image, so every copy explains the same class.
    Returns (N, H, W) on the device of ``x``.
    """
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise OptionError(f"samples must be an int >= 1, got {samples!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise OptionError(f"seed must be None or an int >= 0, got {seed!r}")
    net.check_input(x)
    xp = get_array_module(x)
    n = x.shape[0]
    with eval_mode(net):
        targets = resolve_targets(target, net.forward(x))
    if sigma is None:
        if not _finite_nonnegative(sigma_fraction):
            raise OptionError(f"sigma_fraction must be a finite number >= 0, got {sigma_fraction!r}")
        flat = x.reshape(n, -1)
        sig = (flat.max(axis=1) - flat.min(axis=1)) * sigma_fraction  # (N,)
        sig = sig.reshape(n, 1, 1, 1)
    else:
        if not _finite_nonnegative(sigma):
            raise OptionError(f"sigma must be a finite number >= 0, got {sigma!r}")
        sig = float(sigma)
    rng = np.random.default_rng(seed)
    total = xp.zeros((n, *x.shape[2:]), dtype=x.dtype)
    for _ in range(int(samples)):
        noise = xp.asarray(rng.standard_normal(x.shape).astype(x.dtype))  # drawn on the host
        total += saliency(net, x + sig * noise, targets)
    return total / int(samples)
