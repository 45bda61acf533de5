"""Faithfulness of attribution maps: deletion and insertion curves (Petsiuk et
al. 2018, RISE) — beyond the paper.

A map ranks the pixels. *Deletion* removes them in that order, most
important first (each removed pixel, all its channels, is set to the
baseline: 0 in the network's input space, i.e. the mean image), and records
the class probability after every step; a faithful map makes it fall fast,
so a **low** area under the curve is good. *Insertion* starts from a
blurred copy of the image and puts the pixels back in the same order; a
faithful map makes the probability rise fast, so a **high** area is good.

    curve_t = P_c(x_t),  t = 0..T,  x_t with the first t·(HW/T) pixels removed / inserted
    AUC     = trapezoid area under curve_t over the fraction t/T ∈ [0, 1]

P_c is the softmax probability of the explained class (``score="prob"``,
Petsiuk et al.'s choice) or the unnormalised score S_c (``score="logit"``).
Ties in a map (Grad-CAM's zeros, occlusion's flat windows) are broken in a
seeded random order, so no method gains from scanning in raster order. A
random map is the reference every method should beat (``"random"`` in
``evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.backend import get_array_module, to_device, to_numpy
from ..errors import ShapeError, TinyconvError
from . import attribution

__all__ = ["Curves", "pixel_order", "blur", "deletion_insertion", "evaluate", "auc"]


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area of each curve (N, T+1) over [0, 1]: (N,)."""
    c = np.asarray(curves, dtype=np.float64)
    return (c[:, 1:] + c[:, :-1]).sum(axis=1) / (2 * (c.shape[1] - 1))


def pixel_order(maps, seed: int = 0) -> np.ndarray:
    """Pixel indices (N, H·W) from the largest map value down; ties in a seeded random order."""
    m = np.asarray(to_numpy(maps), dtype=np.float64).reshape(len(maps), -1)
    rng = np.random.default_rng(seed)
    return np.stack([np.lexsort((rng.permutation(row.size), -row)) for row in m])


def blur(x, sigma: float):
    """Gaussian blur of every channel of (N, C, H, W), reflecting at the edges
    (separable, radius 3σ); the insertion curve's starting image."""
    xp = get_array_module(x)
    if sigma <= 0:
        return x.copy()
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = xp.asarray(k / k.sum(), dtype=x.dtype)
    out = x
    for axis in (2, 3):
        size = out.shape[axis]
        index = np.abs(np.arange(-r, size + r))  # reflect: -1 -> 1, size -> size-2
        index = np.where(index >= size, 2 * (size - 1) - index, index)
        padded = xp.take(out, xp.asarray(np.clip(index, 0, size - 1)), axis=axis)
        acc = xp.zeros_like(out)
        for t in range(2 * r + 1):
            sl = [slice(None)] * 4
            sl[axis] = slice(t, t + size)
            acc += k[t] * padded[tuple(sl)]
        out = acc
    return out


@dataclass
class Curves:
    """deletion, insertion: (N, T+1) host curves; their areas (N,); targets (N,)."""

    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    targets: np.ndarray


def _class_score(net, x, targets, score):
    s = attribution._eval_scores(net, x)
    xp = get_array_module(s)
    if score == "prob":
        s = s - s.max(axis=1, keepdims=True)
        s = xp.exp(s)
        s = s / s.sum(axis=1, keepdims=True)
    return to_numpy(s[xp.arange(s.shape[0]), xp.asarray(targets)]).astype(np.float64)


def deletion_insertion(
    net, x, maps, target=None, steps: int = 50, baseline: float = 0.0, blur_sigma: float | None = None,
    score: str = "prob", batch_size: int = 256, seed: int = 0,
) -> Curves:  # fmt: skip
    """Deletion and insertion curves of maps (N, H, W) on images x (N, C, H, W).

    steps: T points after the start (about H·W/T pixels each); baseline:
    the value of a removed pixel (network-input units); blur_sigma: σ in
    pixels of the insertion start's Gaussian blur (default H/8); score:
    "prob" or "logit".
    target: None (each image's top class on x), an int or N ints.
    """
    net.check_input(x)
    if score not in ("prob", "logit"):
        raise TinyconvError(f"unknown score {score!r}; expected 'prob' or 'logit'")
    n, c, h, w = x.shape
    if tuple(np.shape(maps)) != (n, h, w):
        raise ShapeError(f"maps have shape {tuple(np.shape(maps))}, expected {(n, h, w)} for input {x.shape}")
    if int(steps) < 1:
        raise TinyconvError(f"steps must be >= 1, got {steps}")
    xp = get_array_module(x)
    targets = attribution.resolve_targets(target, attribution._eval_scores(net, x))
    order = pixel_order(maps, seed)  # (N, HW)
    counts = np.round(np.linspace(0, h * w, int(steps) + 1)).astype(np.intp)
    # rank[n, p]: position of pixel p in image n's order; step t covers the pixels of rank < counts[t]
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(h * w)[None].repeat(n, 0), axis=1)
    rank = to_device(rank.reshape(n, 1, h, w), net.device)
    start = blur(x, h / 8 if blur_sigma is None else blur_sigma)
    gone = xp.full_like(x, baseline)
    curves = {}
    for kind, before, after in (("deletion", x, gone), ("insertion", start, x)):
        rows = []
        per = max(1, int(batch_size) // n)
        for i in range(0, len(counts), per):
            ts = counts[i : i + per]
            # (len(ts)·N, C, H, W): step t of image m is row t·N + m
            changed = xp.concatenate([rank < int(t) for t in ts])  # (len(ts)·N, 1, H, W)
            batch = xp.where(changed, xp.concatenate([after] * len(ts)), xp.concatenate([before] * len(ts)))
            rows.append(_class_score(net, batch, np.tile(targets, len(ts)), score).reshape(len(ts), n))
        curves[kind] = np.concatenate(rows).T  # (N, T+1)
    return Curves(
        curves["deletion"], curves["insertion"], auc(curves["deletion"]), auc(curves["insertion"]), targets
    )


def evaluate(net, x, methods=None, target=None, options=None, random: bool = True, **curve_options) -> dict:
    """method -> {"deletion": mean AUC, "insertion": mean AUC, "curves": Curves}
    for every method of ``attribution.METHODS`` (default all) and, with
    ``random``, a seeded random map. options: method -> its keyword options."""
    methods = list(methods or attribution.METHODS)
    opts = options or {}
    targets = attribution.resolve_targets(target, attribution._eval_scores(net, x))
    out = {}

    def entry(maps):
        cur = deletion_insertion(net, x, to_numpy(maps), targets, **curve_options)
        return {
            "deletion": float(cur.deletion_auc.mean()),
            "insertion": float(cur.insertion_auc.mean()),
            "curves": cur,
        }

    for m in methods:
        # signed maps rank by value: the pixels that raise S_c most come first
        out[m] = entry(attribution.attribution_map(net, x, m, targets, **opts.get(m, {})))
    if random:
        out["random"] = entry(np.random.default_rng(12345).random((x.shape[0], *x.shape[2:])))
    return out
