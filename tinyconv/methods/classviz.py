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
from ..errors import TargetError
from ..pictures.imaging import deprocess
from ..progress import Progress
from .checks import check_scores
from .saliency import inference_mode, resolve_targets

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
        z = self.scores - self.scores.max()
        return float(np.exp(z[self.target]) / np.exp(z).sum())

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


def _softmax(s):
    """Row-wise softmax of scores (B, K)."""
    xp = get_array_module(s)
    e = xp.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


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
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    if net.input_shape is None:
        raise TargetError("class models need a network with an input_shape (C, H, W)")
    if int(steps) < 0 or not float(lr) > 0 or not float(l2) >= 0:
        raise ValueError(f"need steps >= 0, lr > 0 and l2 >= 0; got steps={steps}, lr={lr}, l2={l2}")
    k = net.num_classes
    if k is None:
        raise TargetError("the network does not declare its classes; cannot check the target")
    targets = list(range(k)) if targets is None else list(targets)
    if not targets:
        raise TargetError("no target classes given")
    cs = resolve_targets(targets, np.zeros((len(targets), k)))  # (B,), validated
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    classes = net.classes or [str(i) for i in range(k)]
    lr, l2, steps = float(lr), float(l2), int(steps)
    common = {
        "method": "class model (Simonyan et al. 2014, eq. 1): gradient ascent from the zero image",
        "objective": objective,
        "steps": steps,
        "lr": lr,
        "l2": l2,
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
    xp = get_array_module(net.parameters()[0].value) if net.parameters() else np
    b = len(cs)
    rows = np.arange(b)
    x = xp.zeros((b, *net.input_shape), dtype=net.dtype)  # I, (B, C, H, W)
    onehot = xp.zeros((b, k), dtype=net.dtype)
    onehot[xp.arange(b), xp.asarray(cs)] = 1
    if clip:
        mean = np.asarray(net.mean or [0.0] * x.shape[1]).reshape(1, -1, 1, 1)
        std = np.asarray(net.std or [1.0] * x.shape[1]).reshape(1, -1, 1, 1)
        low, high = xp.asarray(-mean / std, dtype=x.dtype), xp.asarray((1 - mean) / std, dtype=x.dtype)
    names = ("score", "runner_up", "runner_up_class", "posterior", "objective")
    history = {name: [] for name in names}

    def record(scores):  # scores (B, K) of the current x; appends to history, returns a host copy
        s = to_numpy(scores).astype(np.float64)
        others = s.copy()
        others[rows, cs] = -np.inf
        z = np.exp(s - s.max(axis=1, keepdims=True))
        p = z[rows, cs] / z.sum(axis=1)
        penalty = l2 * to_numpy((x.astype(xp.float64) ** 2).reshape(b, -1).sum(axis=1))
        gain = s[rows, cs] if objective == "score" else np.log(np.maximum(p, 1e-300))
        values = (s[rows, cs], others.max(axis=1), others.argmax(axis=1), p, gain - penalty)
        for name, v in zip(names, values, strict=True):
            history[name].append(v)
        return s

    desc = f"class model {classes[cs[0]]!r}" if b == 1 else f"{b} class models"
    with inference_mode(net), Progress(steps, desc=desc, disable=not progress) as bar:
        for step in range(steps):
            shift = tuple(int(v) for v in rng.integers(-jitter, jitter + 1, size=2)) if jitter else (0, 0)
            scores = net.forward(xp.roll(x, shift, axis=(2, 3)) if jitter else x)  # (B, K)
            if step == 0:
                check_scores(net, x, scores)
            if not jitter:
                record(scores)
            # ∂S_c/∂S = e_c;  ∂ log P_c/∂S = e_c − softmax(S)
            seed_grad = onehot if objective == "score" else onehot - _softmax(scores)
            g = net.backward(seed_grad, param_grads=False)  # ∂/∂I, (B, C, H, W)
            if jitter:
                g = xp.roll(g, (-shift[0], -shift[1]), axis=(2, 3))
                record(net.forward(x))
            x = x + lr * (g - 2 * l2 * x)
            if blur_every and (step + 1) % int(blur_every) == 0:
                x = _gaussian_blur(x, float(blur_sigma))
            if clip:
                x = xp.minimum(xp.maximum(x, low), high)
            bar.update(1, score=float(history["score"][-1].mean()))
        final = record(net.forward(x))
    stacked = {name: np.stack(v, axis=1) for name, v in history.items()}  # (B, steps + 1)
    results = []
    for i, c in enumerate(int(c) for c in cs):
        hist = {n: v[i].astype(np.int64 if n == "runner_up_class" else float) for n, v in stacked.items()}
        results.append(
            ClassModel(
                input=x[i],
                image=deprocess(x[i], net),
                history=hist,
                params={**common, "target": c, "class_name": classes[c]},
                target=c,
                class_name=classes[c],
                scores=final[i],
            )
        )
    return results
