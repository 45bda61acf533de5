"""Class model visualisation (Simonyan et al. 2014, section 2).

Find an image that the network scores highly for class c:

    I* = argmax_I  S_c(I) − λ‖I‖²                       (paper eq. 1, objective "score")

by gradient ascent on the input I with the weights frozen, starting from the
zero image in the network's normalised input space (the mean image) and
adding the mean back at the end. S_c is the unnormalised score. The paper
also tried the softmax posterior, log P_c(I) − λ‖I‖² (objective "softmax"),
and found it worse: P_c can rise by pushing the other classes down.

Each step:  I ← I + lr · (∂S_c/∂I − 2λ I)   (one forward, one backward).

Beyond the paper, off by default: random ``jitter`` (roll the image by up to
that many pixels before each step and roll the gradient back), a Gaussian
``blur`` every few steps, and ``clip`` of I to the valid pixel range.
The paper publishes no λ, step size or step count; the defaults here were
chosen on the bundled MNIST network, and every hyper-parameter and the seed
are kept with the result (``.params``) so that an image can be reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine.backend import get_array_module, to_numpy
from ..engine.functional import one_hot, softmax
from ..errors import OptionError, TargetError
from ..pictures.imaging import deprocess
from ..progress import Progress
from .checks import check_scores
from .saliency import eval_mode, resolve_targets

__all__ = ["ClassModel", "class_model", "class_models", "OBJECTIVES"]

OBJECTIVES = ("score", "softmax")

DEFAULTS = {"steps": 400, "lr": 0.5, "l2": 0.1}  # chosen on the bundled MNIST CNN


@dataclass
class ClassModel:
    """The result of ``class_model``.

    input:   the optimised network input (C, H, W), normalised space.
    image:   displayable uint8 (H, W, C): x · std + mean, clipped to [0, 1], ×255.
    history: per step k = 0..steps (k = after k updates), host arrays:
             "score" S_c, "runner_up" the best other score, "runner_up_class",
             "posterior" P_c (softmax), "objective" the value being maximised.
    params:  every hyper-parameter, the seed and the target, to reproduce it.
    """

    input: object
    image: np.ndarray
    history: dict
    params: dict
    target: int
    class_name: str
    scores: np.ndarray = field(repr=False)  # final scores (K,)

    @property
    def score(self) -> float:
        """Final S_c."""
        return float(self.scores[self.target])

    @property
    def runner_up_class(self) -> int:
        others = self.scores.copy()
        others[self.target] = -np.inf
        return int(others.argmax())

    @property
    def runner_up(self) -> float:
        """Final best score among the other classes."""
        return float(self.scores[self.runner_up_class])

    @property
    def posterior(self) -> float:
        """Final softmax probability P_c."""
        return float(softmax(self.scores)[self.target])

    @property
    def top_class(self) -> int:
        return int(self.scores.argmax())

    def summary(self, classes=None) -> str:
        name = (lambda k: classes[k]) if classes else str
        return (
            f"class {self.target} ({self.class_name!r}): S_c = {self.score:.3f}, runner-up "
            f"{name(self.runner_up_class)!r} {self.runner_up:.3f}, P_c = {self.posterior:.4f} "
            f"after {self.params['steps']} steps ({self.params['objective']} objective)"
        )


def _gaussian_blur(x, sigma: float):
    """Separable Gaussian blur of (1, C, H, W) along H and W, edges reflected."""
    xp = get_array_module(x)
    radius = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = xp.asarray(k / k.sum(), dtype=x.dtype)
    for axis in (2, 3):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = xp.pad(x, pad, mode="reflect" if x.shape[axis] > radius else "edge")
        out = xp.zeros_like(x)
        for i in range(2 * radius + 1):
            sl = [slice(None)] * 4
            sl[axis] = slice(i, i + x.shape[axis])
            out += k[i] * padded[tuple(sl)]
        x = out
    return x


def class_model(
    net,
    target,
    steps: int = DEFAULTS["steps"],
    lr: float = DEFAULTS["lr"],
    l2: float = DEFAULTS["l2"],
    objective: str = "score",
    seed=None,
    jitter: int = 0,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    clip: bool = False,
    progress: bool = True,
) -> ClassModel:
    """Gradient ascent on the input for class ``target`` (see the module docstring).

    net:        a Sequential with ``input_shape`` (C, H, W); mean/std turn the
                result back into pixels.
    target:     class index.
    steps, lr:  number of ascent steps and step size.
    l2:         λ of the penalty λ‖I‖² (normalised input units).
    objective:  "score" (S_c, the paper's) or "softmax" (log P_c).
    seed:       seeds the jitter; None draws one, recorded in ``params``.
    jitter, blur_every, blur_sigma, clip: extras beyond the paper (off by default).
    Returns a ``ClassModel``; ``progress`` shows a bar on stderr.
    """
    if isinstance(target, (list, tuple)) or hasattr(target, "shape"):
        raise TargetError(f"class_model takes one class index, got {target!r}; use class_models for several")
    return class_models(
        net,
        [target],
        steps=steps,
        lr=lr,
        l2=l2,
        objective=objective,
        seed=seed,
        jitter=jitter,
        blur_every=blur_every,
        blur_sigma=blur_sigma,
        clip=clip,
        progress=progress,
    )[0]


def class_models(
    net,
    targets=None,
    steps: int = DEFAULTS["steps"],
    lr: float = DEFAULTS["lr"],
    l2: float = DEFAULTS["l2"],
    objective: str = "score",
    seed=None,
    jitter: int = 0,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    clip: bool = False,
    progress: bool = True,
) -> list[ClassModel]:
    """``class_model`` for several classes at once (default: every class).

    The images are optimised side by side as one batch (one forward and one
    backward per step for all of them); they do not interact, and each equals
    what ``class_model`` gives for its class with the same options and seed
    (the jitter shift of a step is shared by the batch).
    """
    cs = _check(net, targets, steps, lr, l2, objective)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
    classes = net.classes or [str(i) for i in range(net.num_classes)]
    common = {
        "method": "class model (Simonyan et al. 2014, eq. 1): gradient ascent from the zero image",
        "objective": objective,
        "steps": int(steps),
        "lr": float(lr),
        "l2": float(l2),
        "seed": int(seed),
        "start": "zeros (normalised input space)",
        "jitter": int(jitter),
        "blur_every": int(blur_every),
        "blur_sigma": float(blur_sigma),
        "clip": bool(clip),
        "mean": net.mean,
        "std": net.std,
        "input_shape": net.input_shape,
    }
    desc = f"class model {classes[cs[0]]!r}" if len(cs) == 1 else f"{len(cs)} class models"
    with Progress(int(steps), desc=desc, disable=not progress) as bar:
        x, history, final = _ascent(net, cs, common, np.random.default_rng(seed), bar)
    stacked = {name: np.stack(v, axis=1) for name, v in history.items()}  # (B, steps + 1)
    host = to_numpy(x)  # the one crossing to the host for the displayable images
    results = []
    for i, c in enumerate(int(c) for c in cs):
        hist = {n: v[i].astype(np.int64 if n == "runner_up_class" else float) for n, v in stacked.items()}
        params = {**common, "target": c, "class_name": classes[c]}
        image = deprocess(host[i], net)
        results.append(ClassModel(x[i], image, hist, params, c, classes[c], scores=final[i]))
    return results


def _check(net, targets, steps, lr, l2, objective) -> np.ndarray:
    """The target classes (B,) after checking the options and the network."""
    if objective not in OBJECTIVES:
        raise OptionError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    if net.input_shape is None:
        raise TargetError("class models need a network with an input_shape (C, H, W)")
    if int(steps) < 0 or not float(lr) > 0 or not float(l2) >= 0:
        raise OptionError(f"need steps >= 0, lr > 0 and l2 >= 0; got steps={steps}, lr={lr}, l2={l2}")
    k = net.num_classes
    if k is None:
        raise TargetError("the network does not declare its classes; cannot check the target")
    targets = list(range(k)) if targets is None else list(targets)
    if not targets:
        raise TargetError("no target classes given")
    return resolve_targets(targets, np.zeros((len(targets), k)))  # (B,), validated


class _History:
    """Per-step records of the batch: S_c, the best other score and its class,
    P_c and the objective's value, each a list of host arrays (B,)."""

    NAMES = ("score", "runner_up", "runner_up_class", "posterior", "objective")

    def __init__(self, cs, l2, objective):
        self.cs, self.rows, self.l2, self.objective = cs, np.arange(len(cs)), l2, objective
        self.values = {name: [] for name in self.NAMES}

    def record(self, scores, x):
        """Append the records of scores (B, K) at input x; returns the host scores."""
        xp = get_array_module(x)
        s = to_numpy(scores).astype(np.float64)
        rows, cs = self.rows, self.cs
        others = s.copy()
        others[rows, cs] = -np.inf
        p = softmax(s)[rows, cs]
        penalty = self.l2 * to_numpy((x.astype(xp.float64) ** 2).reshape(len(cs), -1).sum(axis=1))
        gain = s[rows, cs] if self.objective == "score" else np.log(np.maximum(p, 1e-300))
        values = (s[rows, cs], others.max(axis=1), others.argmax(axis=1), p, gain - penalty)
        for name, v in zip(self.NAMES, values, strict=True):
            self.values[name].append(v)
        return s


def _ascent(net, cs, p: dict, rng, bar):
    """Gradient ascent I ← I + lr (∂objective/∂I − 2λI) for the batch of classes
    ``cs`` with the options ``p``; returns (x, history lists, final host scores)."""
    xp = get_array_module(net.parameters()[0].value) if net.parameters() else np
    b, k = len(cs), net.num_classes
    x = xp.zeros((b, *net.input_shape), dtype=net.dtype)  # I, (B, C, H, W)
    onehot = one_hot(cs, xp.empty((b, k), dtype=net.dtype))
    low, high = _pixel_range(net, xp, x.dtype) if p["clip"] else (None, None)
    history, jitter, lr, l2 = _History(cs, p["l2"], p["objective"]), p["jitter"], p["lr"], p["l2"]
    with eval_mode(net):
        for step in range(p["steps"]):
            shift = tuple(int(v) for v in rng.integers(-jitter, jitter + 1, size=2)) if jitter else (0, 0)
            scores = net.forward(xp.roll(x, shift, axis=(2, 3)) if jitter else x)  # (B, K)
            if step == 0:
                check_scores(net, x, scores)
            if not jitter:
                history.record(scores, x)
            # ∂S_c/∂S = e_c;  ∂ log P_c/∂S = e_c − softmax(S)
            seed_grad = onehot if p["objective"] == "score" else onehot - softmax(scores)
            g = net.backward(seed_grad, param_grads=False)  # ∂/∂I, (B, C, H, W)
            if jitter:
                g = xp.roll(g, (-shift[0], -shift[1]), axis=(2, 3))
                history.record(net.forward(x), x)
            x = x + lr * (g - 2 * l2 * x)
            if p["blur_every"] and (step + 1) % p["blur_every"] == 0:
                x = _gaussian_blur(x, p["blur_sigma"])
            if p["clip"]:
                x = xp.minimum(xp.maximum(x, low), high)
            bar.update(1, score=float(history.values["score"][-1].mean()))
        final = history.record(net.forward(x), x)
    return x, history.values, final


def _pixel_range(net, xp, dtype):
    """The normalised input values of pixels 0 and 1: ((1, C, 1, 1), (1, C, 1, 1))."""
    c = net.input_shape[0]
    mean = np.asarray(net.mean or [0.0] * c).reshape(1, -1, 1, 1)
    std = np.asarray(net.std or [1.0] * c).reshape(1, -1, 1, 1)
    return xp.asarray(-mean / std, dtype=dtype), xp.asarray((1 - mean) / std, dtype=dtype)
