"""Weakly supervised localisation from a saliency map (Simonyan et al. 2014, §3.2).

The paper's pipeline, for an image I and its class saliency map M:

1. seeds: foreground pixels F = {M_ij ≥ q_0.95(M)}, background pixels
   B = {M_ij ≤ q_0.30(M)} (quantiles over the image's pixels);
2. colour models: a Gaussian mixture p_F fitted to the colours of F and p_B to
   those of B (``tinyconv.methods.localisation.gmm``; intensity models for greyscale images);
3. GraphCut colour segmentation, the binary labelling L minimising

       E(L) = Σ_p U_p(L_p) + Σ_{(p,q) ∈ N8} w_pq [L_p ≠ L_q],
       U_p(fg) = −log p_F(I_p),  U_p(bg) = −log p_B(I_p),
       w_pq = γ exp(−β ‖I_p − I_q‖²) / dist(p, q),  β = 1 / (2 ⟨‖I_p − I_q‖²⟩),

   (contrast-sensitive Potts on the 8-neighbourhood, as in GrabCut; ⟨·⟩ is the
   mean over all neighbouring pairs) with the seed pixels pinned to their side
   (infinite unary cost for the other label), solved exactly by a min-cut
   (Boykov–Kolmogorov max-flow, PyMaxflow);
4. the largest 8-connected component of the foreground is the object mask,
   and its bounding box the prediction.

Boxes are (x0, y0, x1, y1) in pixels, x1 and y1 exclusive (width = x1 − x0).

Two options go beyond the paper and are off by default: ``smooth`` blurs M
(Gaussian, σ in pixels) before the quantiles, so that speckle in a gradient
map does not scatter foreground seeds over the background; ``iterations``
re-fits the colour models to the last segmentation and cuts again, as GrabCut
does. The scene benchmark (``tinyconv localize --benchmark``) reports the
paper's settings and a blur tuned on training scenes side by side.

Baselines for comparison: ``threshold_box`` (box of the pixels above a
saliency quantile), ``whole_image_box`` and ``centred_box`` (a centred box of
a given size, e.g. the mean object size of training scenes).

PyMaxflow and scipy come with the ``localize`` extra:
``pip install 'tinyconv[localize]'``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ...engine.backend import to_numpy
from ...errors import DataError, MissingDependency, OptionError, ShapeError
from .gmm import GaussianMixture

INSTALL_HINT = "pip install 'tinyconv[localize]' (PyMaxflow and scipy)"
#: 8-neighbourhood offsets (dy, dx), each undirected pair counted once.
OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))
PIN = 1e9  # capacity that stands for "infinite" on a seed's t-link


def _maxflow():
    try:
        import maxflow
    except ModuleNotFoundError:
        raise MissingDependency(f"GraphCut localisation needs PyMaxflow: {INSTALL_HINT}") from None
    return maxflow


def _ndimage():
    try:
        from scipy import ndimage
    except ModuleNotFoundError:
        raise MissingDependency(f"connected components need scipy: {INSTALL_HINT}") from None
    return ndimage


class Localization(tuple):
    """The result of ``localize``: unpacks as ``(box, mask)``.

    box:    (x0, y0, x1, y1) ints, x1/y1 exclusive.
    mask:   (H, W) bool object mask (the largest foreground component).
    reason: None for a normal run, else why the pipeline fell back (e.g.
            "constant saliency map: no foreground seeds; whole-image box").
    info:   diagnostics: the seed masks, the raw graph-cut segmentation, β.
    """

    def __new__(cls, box, mask, reason=None, info=None):
        self = super().__new__(cls, (tuple(int(v) for v in box), mask))
        self.reason, self.info = reason, dict(info or {})
        return self

    @property
    def box(self):
        return self[0]

    @property
    def mask(self):
        return self[1]


# --- inputs ---


def as_image(image) -> np.ndarray:
    """An image as (H, W, D) float64 in [0, 1], D = 3 (RGB) or 1 (grey).

    Takes a PIL image, (H, W) or (H, W, 1|3|4) uint8 (0..255) or float ([0, 1])
    arrays; an alpha channel is dropped.
    """
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = np.asarray(image.convert("L" if image.mode in ("1", "L", "I", "F") else "RGB"))
    a = to_numpy(image) if not isinstance(image, np.ndarray) else image
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ShapeError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    a = a[..., :3] if a.shape[2] == 4 else a
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ShapeError(f"empty image of shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype.kind not in "fiu":
        raise ShapeError(f"image must be uint8 or float, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ShapeError("image contains NaN or infinite values")
    if a.min() < -1e-6 or a.max() > 1 + 1e-6:
        raise ShapeError(
            f"float images must lie in [0, 1], got values in [{a.min():.3g}, {a.max():.3g}]; "
            "pass uint8 for 0..255"
        )
    return a


def _as_saliency(saliency, shape) -> np.ndarray:
    s = np.asarray(to_numpy(saliency), dtype=np.float64)
    if s.ndim == 3 and s.shape[0] == 1:
        s = s[0]
    if s.shape != tuple(shape):
        raise ShapeError(
            f"saliency map has shape {s.shape}, expected {tuple(shape)} (the image's height and width)"
        )
    return s


# --- the pieces of the pipeline ---


def seeds(saliency, fg_quantile=0.95, bg_quantile=0.30):
    """Seed masks from saliency quantiles: (fg, bg), each (H, W) bool.

    fg = M ≥ q_fg(M), bg = M ≤ q_bg(M), over the finite values of M (NaN pixels
    are neither). When ties make the two thresholds meet (q_fg ≤ q_bg) the
    foreground is M > q_bg instead, so the two sets never overlap; it is empty
    for a constant map.
    """
    _check_quantiles(fg_quantile, bg_quantile)
    s = np.asarray(saliency, dtype=np.float64)
    finite = np.isfinite(s)
    if not finite.any():
        return np.zeros(s.shape, bool), np.zeros(s.shape, bool)
    values = s[finite]
    q_fg, q_bg = np.quantile(values, fg_quantile), np.quantile(values, bg_quantile)
    with np.errstate(invalid="ignore"):
        bg = finite & (s <= q_bg)
        fg = finite & ((s >= q_fg) if q_fg > q_bg else (s > q_bg))
    return fg, bg


def contrast_weights(image, gamma=50.0):
    """Contrast-sensitive Potts weights on the 8-neighbourhood.

    image: (H, W, D) float. Returns (weights, beta): weights maps each offset
    (dy, dx) in ``OFFSETS`` to an (H, W) array whose [y, x] entry is
    w between pixel (y, x) and pixel (y + dy, x + dx) (0 where the neighbour is
    outside the image); β = 1 / (2 ⟨‖I_p − I_q‖²⟩), 0 for a constant image.
    """
    h, w = image.shape[:2]
    diffs = {}
    for dy, dx in OFFSETS:
        d2 = np.zeros((h, w))
        ys, ye = 0, h - dy
        xs, xe = max(0, -dx), w - max(0, dx)
        a = image[ys:ye, xs:xe]
        b = image[ys + dy : ye + dy, xs + dx : xe + dx]
        d2[ys:ye, xs:xe] = ((a - b) ** 2).sum(-1)
        valid = np.zeros((h, w), bool)
        valid[ys:ye, xs:xe] = True
        diffs[(dy, dx)] = (d2, valid)
    total = sum(d2[v].sum() for d2, v in diffs.values())
    count = sum(int(v.sum()) for _, v in diffs.values())
    mean = total / max(count, 1)
    beta = 1.0 / (2.0 * mean) if mean > 0 else 0.0
    weights = {}
    for (dy, dx), (d2, valid) in diffs.items():
        dist = float(np.hypot(dy, dx))
        weights[(dy, dx)] = np.where(valid, gamma * np.exp(-beta * d2) / dist, 0.0)
    return weights, beta


def graph_cut(cost_fg, cost_bg, weights):
    """Exact minimiser of E(L) = Σ_p cost_{L_p}(p) + Σ_{(p,q)} w_pq [L_p ≠ L_q] by min-cut.

    cost_fg, cost_bg: (H, W) unary costs (np.inf pins a pixel to the other side).
    weights: {(dy, dx): (H, W)} as from ``contrast_weights``.
    Returns the foreground mask (H, W) bool. The source s is the foreground:
    the s-link of p carries cost_bg (cut, hence paid, when p ends on the
    background side), the t-link carries cost_fg (paid when p stays with s).
    """
    maxflow = _maxflow()
    cost_fg = np.asarray(cost_fg, dtype=np.float64)
    cost_bg = np.asarray(cost_bg, dtype=np.float64)
    # only differences matter per pixel: shift so the cheaper label costs 0
    low = np.minimum(cost_fg, cost_bg)
    low = np.where(np.isfinite(low), low, 0.0)
    cfg = np.minimum(cost_fg - low, PIN)
    cbg = np.minimum(cost_bg - low, PIN)
    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes(cost_fg.shape)
    for (dy, dx), w in weights.items():
        structure = np.zeros((3, 3))
        structure[1 + dy, 1 + dx] = 1.0
        g.add_grid_edges(nodes, weights=w, structure=structure, symmetric=True)
    g.add_grid_tedges(nodes, cbg, cfg)
    g.maxflow()
    return ~g.get_grid_segments(nodes)  # segments: True on the sink (background) side


def largest_component(mask, saliency=None):
    """The largest 8-connected component of ``mask`` (H, W) bool (ties: the one
    with the larger total saliency, then the first found)."""
    ndimage = _ndimage()
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), int))
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.float64)
    best = np.flatnonzero(sizes == sizes.max())
    if len(best) > 1 and saliency is not None:
        s = np.nan_to_num(np.asarray(saliency, dtype=np.float64), nan=0.0)
        mass = np.bincount(labels.ravel(), weights=s.ravel(), minlength=count + 1)[1:]
        best = best[np.argsort(-mass[best], kind="stable")]
    return labels == best[0] + 1


def smooth_saliency(saliency, sigma):
    """Gaussian blur of a saliency map (H, W) with σ = ``sigma`` pixels, NaN-aware:
    (G * (M·v)) / (G * v) with v the indicator of finite values; NaNs stay NaN."""
    ndimage = _ndimage()
    s = np.asarray(saliency, dtype=np.float64)
    valid = np.isfinite(s)
    top = ndimage.gaussian_filter(np.where(valid, s, 0.0), sigma, mode="nearest")
    weight = ndimage.gaussian_filter(valid.astype(np.float64), sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, top / np.maximum(weight, 1e-12), np.nan)


def mask_box(mask):
    """Bounding box (x0, y0, x1, y1) of a non-empty (H, W) bool mask, x1/y1 exclusive."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise DataError("empty mask has no bounding box")
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _pixels(image, where, limit, rng):
    x = image[where]
    if len(x) > limit:
        x = x[rng.choice(len(x), limit, replace=False)]
    return x


# --- the pipeline ---


def _number(name, value, low, high=math.inf, low_open=False, integer=False):
    """``value`` as a float (int if ``integer``) in [low, high] (low excluded when
    ``low_open``), else an OptionError naming the option. NaN and inf never pass
    a finite bound: a NaN capacity would reach the max-flow solver's C loop."""
    kinds = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        what = "an integer" if integer else "a finite number"
        raise OptionError(f"{name} must be {what}, got {value!r}")
    if value < low or (low_open and value == low) or value > high:
        bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high != math.inf else "")
        raise OptionError(f"{name} must be {bounds}, got {value!r}")
    return int(value) if integer else float(value)


def _check_quantiles(fg_quantile, bg_quantile):
    fg = _number("fg_quantile", fg_quantile, 0.0, 1.0)
    bg = _number("bg_quantile", bg_quantile, 0.0, 1.0)
    if not bg < fg:
        raise OptionError(f"need bg_quantile < fg_quantile, got bg_quantile={bg} and fg_quantile={fg}")
    return fg, bg


def check_options(fg_quantile=0.95, bg_quantile=0.30, n_components=5, gamma=50.0, reg=1e-3,
                  max_samples=4000, smooth=0.0, iterations=1) -> dict:  # fmt: skip
    """The options of ``localize`` checked (finite, in range), as a dict; an
    ``OptionError`` naming the first bad one otherwise."""
    fg, bg = _check_quantiles(fg_quantile, bg_quantile)
    return dict(
        fg_quantile=fg,
        bg_quantile=bg,
        n_components=_number("n_components", n_components, 1, integer=True),
        gamma=_number("gamma", gamma, 0.0),
        reg=_number("reg", reg, 0.0),
        max_samples=_number("max_samples", max_samples, 1, integer=True),
        smooth=_number("smooth", smooth, 0.0),
        iterations=_number("iterations", iterations, 1, integer=True),
    )


def localize(
    image,
    saliency,
    fg_quantile=0.95,
    bg_quantile=0.30,
    n_components=5,
    gamma=50.0,
    reg=1e-3,
    max_samples=4000,
    seed=0,
    smooth=0.0,
    iterations=1,
) -> Localization:
    """Box and mask of the object from a saliency map (GraphCut pipeline above).

    image:      (H, W, 3) RGB or (H, W) grey; uint8, float in [0, 1] or PIL.
    saliency:   (H, W) saliency map M (e.g. ``tinyconv.saliency(net, x)[0]``).
    fg_quantile, bg_quantile: seed quantiles (the paper: 0.95 and 0.30).
    n_components: Gaussians per colour model; reg: ε on their covariances.
    gamma:      Potts weight γ (GrabCut's 50).
    max_samples: seed pixels used to fit each model (a seeded random subset).
    smooth:     σ (pixels) of a Gaussian blur of M before the quantiles (0: the
                paper's raw map); see ``smooth_saliency``.
    iterations: 1 is the paper's single cut; more re-fit both colour models
                to the last segmentation and cut again (GrabCut-style), the
                seeds staying pinned.
    Returns a ``Localization`` that unpacks as (box, mask), box = (x0, y0, x1, y1);
    its ``reason`` says why when the pipeline had to fall back:
    constant or all-NaN saliency -> the whole image; constant-colour image ->
    the largest component of the foreground seeds (colour cannot separate).
    Options out of range (NaN, inf, γ < 0, crossed quantiles...) raise ``OptionError``.
    """
    o = check_options(fg_quantile, bg_quantile, n_components, gamma, reg, max_samples, smooth, iterations)
    img = as_image(image)
    h, w, _ = img.shape
    s = _as_saliency(saliency, (h, w))
    whole, full = (0, 0, w, h), np.ones((h, w), bool)
    if not np.isfinite(s).any():
        return Localization(whole, full, "saliency map has no finite values: whole-image box")
    if o["smooth"]:
        s = smooth_saliency(s, o["smooth"])
    fg, bg = seeds(s, o["fg_quantile"], o["bg_quantile"])
    info = {"fg_seeds": fg, "bg_seeds": bg}
    if not fg.any() or not bg.any():
        return Localization(
            whole, full, "saliency map is constant: no foreground seeds, whole-image box", info
        )
    if np.ptp(img.reshape(-1, img.shape[2]), axis=0).max() == 0:
        mask = largest_component(fg, s)
        reason = "image has a single colour: colour models cannot separate, foreground seeds kept"
        return Localization(mask_box(mask), mask, reason, info)
    segmentation, models, beta = _segment(img, fg, bg, o, seed)
    mask = largest_component(segmentation, s)
    info.update(segmentation=segmentation, beta=beta, models=models)
    note = "saliency has NaN values: those pixels are not seeds" if not np.isfinite(s).all() else None
    return Localization(mask_box(mask), mask, note, info)


def _segment(img, fg, bg, options, seed):
    """Colour models from the seeds and the graph cut, ``options["iterations"]``
    times (re-fitting to the last cut); returns (segmentation, models, β)."""
    h, w, d = img.shape
    rng = np.random.default_rng(seed)
    flat = img.reshape(-1, d)
    weights, beta = contrast_weights(img, options["gamma"])
    fit_fg, fit_bg = fg, bg
    for _ in range(options["iterations"]):
        models = []
        for where in (fit_fg, fit_bg):
            gmm = GaussianMixture(options["n_components"], reg=options["reg"], seed=seed)
            models.append(gmm.fit(_pixels(img, where, options["max_samples"], rng)))
        cost_fg = -models[0].score_samples(flat).reshape(h, w)
        cost_bg = -models[1].score_samples(flat).reshape(h, w)
        cost_fg[bg] = np.inf  # pins: a background seed cannot be foreground
        cost_bg[fg] = np.inf
        segmentation = graph_cut(cost_fg, cost_bg, weights)
        fit_fg, fit_bg = segmentation, ~segmentation
    return segmentation, models, beta


# --- baselines ---


def threshold_box(saliency, quantile=0.95, smooth=0.0):
    """Baseline: the box of the pixels with M ≥ q_quantile(M) (whole image if M is constant or NaN);
    ``smooth``: σ of a Gaussian blur of M first."""
    s = np.asarray(to_numpy(saliency), dtype=np.float64)
    if smooth:
        s = smooth_saliency(s, smooth)
    h, w = s.shape
    finite = np.isfinite(s)
    if not finite.any():
        return (0, 0, w, h)
    with np.errstate(invalid="ignore"):
        above = finite & (s >= np.quantile(s[finite], quantile))
    return mask_box(above)


def whole_image_box(shape):
    """Baseline: the whole image; shape = (H, W, ...)."""
    return (0, 0, int(shape[1]), int(shape[0]))


def centred_box(shape, size):
    """Baseline: a box of ``size`` = (width, height) centred in an image of ``shape`` (H, W, ...)."""
    h, w = int(shape[0]), int(shape[1])
    bw, bh = min(float(size[0]), w), min(float(size[1]), h)
    x0, y0 = int(round((w - bw) / 2)), int(round((h - bh) / 2))
    return (x0, y0, x0 + int(round(bw)), y0 + int(round(bh)))
