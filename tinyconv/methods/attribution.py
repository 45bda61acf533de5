"""Attribution methods beyond the paper, each a few lines on the engine.

The libraries tinyconv's users know (Captum, pytorch-grad-cam, tf-keras-vis,
Zennit) offer these; here each is written out on ``Sequential``'s forward and
backward passes, on NumPy or CuPy alike (``xp = get_array_module(x)``), with
Captum's signature and conventions: ``target=None`` is each image's top
class, outputs are shaped like the inputs (N, C, H, W) unless stated.
S_c is the unnormalised class score, as everywhere in tinyconv.

    input_x_gradient      x ⊙ ∂S_c/∂x                          (Shrikumar et al. 2016)
    integrated_gradients  (x − x̄) ⊙ ∫₀¹ ∂S_c/∂x (x̄ + α(x − x̄)) dα  (Sundararajan et al. 2017)
    gradcam               ReLU(Σ_k α_k A^k),  α_k = mean_ij ∂S_c/∂A^k_ij   (Selvaraju et al. 2017)
    guided_gradcam        guided backprop ⊙ upsampled Grad-CAM
    occlusion             S_c(x) − S_c(x with a window set to the baseline),
                          averaged over the windows covering each value  (Zeiler & Fergus 2014)

Grad-CAM needs the activation A and the gradient ∂S_c/∂A at an inner layer.
It takes them from the network's *taps*, no hooks: ``net.forward(x,
keep=True)`` stores every layer's output in ``net.activations[name]`` and
``net.backward(seed, keep=True)`` stores ∂S/∂(output of each layer) in
``net.gradients[name]`` — one forward and one backward pass.

``attribution_map(net, x, method)`` gives every method tinyconv has as one
(N, H, W) map, for pictures, the sanity checks and the faithfulness curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.backend import get_array_module, to_numpy
from ..errors import ShapeError, TinyconvError
from ..layers import Conv2d, ReLU  # the public door: engine internals may move
from ..progress import Progress

# resolve_targets is the one non-public name used from saliency.py (its TargetError messages)
from .saliency import input_gradient, resolve_targets, saliency, smoothgrad

__all__ = [
    "input_x_gradient",
    "integrated_gradients",
    "IntegratedGradients",
    "quadrature",
    "gradcam",
    "guided_gradcam",
    "occlusion",
    "resize_bilinear",
    "attribution_map",
    "METHODS",
    "IG_METHODS",
]

IG_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def _eval_scores(net, x):
    """Scores S (N, K) with dropout off, the layers' modes restored after."""
    saved = [layer.training for layer in net.layers]
    try:
        net.eval()
        scores = net.predict(x)
    finally:
        for layer, mode in zip(net.layers, saved, strict=True):
            layer.training = mode
    if scores.ndim != 2:
        raise ShapeError(f"the network must output class scores (N, K), got shape {tuple(scores.shape)}")
    return scores


def _pick(scores, targets):
    """S_c per image: (N, K), (N,) host ints -> (N,) on the device of ``scores``."""
    xp = get_array_module(scores)
    return scores[xp.arange(scores.shape[0]), xp.asarray(targets)]


# ----------------------------------------------------------------------------
# gradient × input


def input_x_gradient(net, x, target=None):
    """x ⊙ ∂S_c/∂x: (N, C, H, W). For a linear score S_c = wᵀx + b it is the
    exact contribution w_i x_i of every input value (Captum's InputXGradient)."""
    return x * input_gradient(net, x, target)


# ----------------------------------------------------------------------------
# integrated gradients


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes α_k in [0, 1] and weights w_k with ∫₀¹ f ≈ Σ_k w_k f(α_k).

    riemann_left       α_k = k/n,        k = 0..n−1,  w_k = 1/n
    riemann_right      α_k = k/n,        k = 1..n,    w_k = 1/n
    riemann_middle     α_k = (k + ½)/n,  k = 0..n−1,  w_k = 1/n
    riemann_trapezoid  α_k = k/(n−1),    k = 0..n−1,  w_k = 1/(n−1), halved at both ends
                       (the textbook rule; Captum's weights are 1/n, summing to (n−1)/n)
    gausslegendre      Gauss–Legendre nodes and weights of [−1, 1] mapped to [0, 1]:
                       α = (t + 1)/2, w = w_t/2; exact for polynomials of degree ≤ 2n−1
    """
    n = int(steps)
    if method not in IG_METHODS:
        raise TinyconvError(f"unknown integration method {method!r}; expected one of {', '.join(IG_METHODS)}")
    if n < (2 if method == "riemann_trapezoid" else 1):
        raise TinyconvError(f"steps must be >= {2 if method == 'riemann_trapezoid' else 1}, got {steps}")
    k = np.arange(n, dtype=np.float64)
    if method == "gausslegendre":
        t, w = np.polynomial.legendre.leggauss(n)
        return (t + 1) / 2, w / 2
    if method == "riemann_trapezoid":
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] /= 2
        return k / (n - 1), w
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (k + offset) / n, np.full(n, 1.0 / n)


@dataclass
class IntegratedGradients:
    """What ``integrated_gradients(..., return_gap=True)`` returns.

    attributions: (N, C, H, W); gap: (N,) host float64, the completeness gap
    Σ attributions − (S_c(x) − S_c(x̄)) per image (0 for the exact integral);
    targets: (N,) the classes explained.
    """

    attributions: object
    gap: np.ndarray
    targets: np.ndarray


def integrated_gradients(
    net, x, target=None, baseline=None, steps: int = 50, method: str = "gausslegendre",
    batch_size: int | None = None, return_gap: bool = False,
):  # fmt: skip
    """Integrated gradients (Sundararajan et al. 2017):

        IG_i(x) = (x_i − x̄_i) · ∫₀¹ ∂S_c/∂x_i (x̄ + α(x − x̄)) dα
               ≈ (x_i − x̄_i) · Σ_k w_k ∂S_c/∂x_i (x̄ + α_k(x − x̄))

    with the nodes and weights of ``quadrature(method, steps)``. Completeness:
    Σ_i IG_i = S_c(x) − S_c(x̄) for the exact integral.

    baseline:   x̄; None = zeros in the network's input space (the mean image
                after normalisation), a number, or an array broadcastable to x.
    batch_size: at most this many interpolated images per forward/backward
                pass (default: all N·steps in one batch).
    return_gap: return an ``IntegratedGradients`` (attributions, gap, targets)
                instead of the bare (N, C, H, W) attributions.
    target is resolved on x itself (None: each image's top class).
    """
    net.check_input(x)
    xp = get_array_module(x)
    alphas, weights = quadrature(method, steps)
    base = (
        xp.zeros_like(x)
        if baseline is None
        else xp.broadcast_to(xp.asarray(baseline, dtype=x.dtype), x.shape)
    )
    targets = resolve_targets(target, _eval_scores(net, x))
    n, delta = x.shape[0], x - base
    # one batch of steps·N images: image n at node k is row k·N + n
    path = base[None] + xp.asarray(alphas, dtype=x.dtype).reshape(-1, 1, 1, 1, 1) * delta[None]
    path = path.reshape(-1, *x.shape[1:])
    chunk = len(path) if batch_size is None else max(n, (int(batch_size) // n) * n)
    grads = xp.concatenate(
        [input_gradient(net, path[i : i + chunk], np.tile(targets, len(path[i : i + chunk]) // n))
         for i in range(0, len(path), chunk)]
    ).reshape(len(alphas), *x.shape)  # fmt: skip
    avg = (xp.asarray(weights, dtype=x.dtype).reshape(-1, 1, 1, 1, 1) * grads).sum(axis=0)
    attributions = delta * avg
    if not return_gap:
        return attributions
    rise = _pick(_eval_scores(net, x), targets) - _pick(
        _eval_scores(net, xp.ascontiguousarray(base)), targets
    )
    gap = to_numpy(attributions.reshape(n, -1).sum(axis=1) - rise).astype(np.float64)
    return IntegratedGradients(attributions, gap, targets)


# ----------------------------------------------------------------------------
# Grad-CAM


def _cam_layer(net, layer) -> str:
    """The tapped layer's name. Default: the last Conv2d, or the ReLU right
    after it (its rectified feature maps A^k, as in Selvaraju et al.)."""
    if layer is not None:
        try:
            return net.layers[net.index(layer)].name
        except (KeyError, IndexError) as exc:
            raise TinyconvError(f"Grad-CAM layer: {exc.args[0]}") from None
    convs = [i for i, lay in enumerate(net.layers) if isinstance(lay, Conv2d)]
    if not convs:
        raise TinyconvError("Grad-CAM needs a convolution layer; the network has none")
    i = convs[-1]
    if i + 1 < len(net.layers) and isinstance(net.layers[i + 1], ReLU):
        i += 1
    return net.layers[i].name


def resize_bilinear(maps, size):
    """Bilinear resize of (N, h, w) maps to (N, H, W), with half-pixel centres
    (PyTorch's ``interpolate(mode="bilinear", align_corners=False)``): each
    axis is one (out, in) interpolation matrix, out = R_h · m · R_wᵀ."""
    xp = get_array_module(maps)

    def matrix(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        frac = src - i0
        r = np.zeros((n_out, n_in))
        rows = np.arange(n_out)  # each row once per statement: += is safe without add.at
        r[rows, i0] += 1 - frac
        r[rows, i1] += frac
        return xp.asarray(r, dtype=maps.dtype)

    rh, rw = matrix(maps.shape[1], size[0]), matrix(maps.shape[2], size[1])
    return rh @ maps @ rw.T


def gradcam(net, x, target=None, layer=None, upsample: bool = True, relu: bool = True):
    """Grad-CAM (Selvaraju et al. 2017) at one layer, by default the
    rectified output of the last convolution:

        α_k = (1/Z) Σ_ij ∂S_c/∂A^k_ij,     L_c = ReLU(Σ_k α_k A^k)

    A and ∂S_c/∂A come from the network's taps (``forward(keep=True)``,
    ``backward(keep=True)``), one forward and one backward pass.
    upsample=False: (N, h, w) at the layer's resolution; True: (N, H, W),
    resized bilinearly (half-pixel centres) to the input. relu=False keeps
    the signed map (Captum's LayerGradCam default).
    """
    name = _cam_layer(net, layer)
    net.check_input(x)
    xp = get_array_module(x)
    saved = [lay.training for lay in net.layers]
    try:
        net.eval()
        scores = net.forward(x, keep=True)
        targets = resolve_targets(target, scores)
        seed = xp.zeros_like(scores)
        seed[xp.arange(scores.shape[0]), xp.asarray(targets)] = 1
        net.backward(seed, param_grads=False, keep=True)
        a, g = net.activations[name], net.gradients[name]
    finally:
        for lay, mode in zip(net.layers, saved, strict=True):
            lay.training = mode
        net.activations, net.gradients = {}, {}  # release the taps
    if a.ndim != 4:
        raise TinyconvError(
            f"Grad-CAM layer {name!r} outputs shape {tuple(a.shape)}, not feature maps (N, K, h, w)"
        )
    alpha = g.mean(axis=(2, 3), keepdims=True)  # (N, K, 1, 1)
    cam = (alpha * a).sum(axis=1)  # (N, h, w)
    if relu:
        cam = xp.maximum(cam, 0)
    return resize_bilinear(cam, x.shape[2:]) if upsample else cam


def guided_gradcam(net, x, target=None, layer=None):
    """Guided Grad-CAM: guided backprop ⊙ Grad-CAM upsampled bilinearly,
    (N, C, H, W) (Captum's GuidedGradCam, there with nearest upsampling
    by default)."""
    return input_gradient(net, x, target, rule="guided") * gradcam(net, x, target, layer)[:, None]


# ----------------------------------------------------------------------------
# occlusion


def _windows(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis: ceil((size − window)/stride) + 1 of them,
    the last clipped at the edge (Captum's Occlusion), so every value is covered."""
    return [k * stride for k in range(-(-(size - window) // stride) + 1)]


def occlusion(
    net, x, target=None, window=(8, 8), stride=(4, 4), baseline=0.0, batch_size: int = 128,
    progress: bool = False,
):  # fmt: skip
    """Occlusion sensitivity (Zeiler & Fergus 2014), as Captum's ``Occlusion``
    with sliding_window_shapes=(C, h, w) and strides=(C, s_h, s_w):

        A(x)_i = mean over the windows W ∋ i of [S_c(x) − S_c(x with W ← baseline)]

    Every window covers all channels. (N, C, H, W), the same value in every
    channel of a pixel. baseline: a number or an array broadcastable to x.
    batch_size: occluded images per forward pass; progress: a progress bar.
    """
    net.check_input(x)
    xp = get_array_module(x)
    (wh, ww), (sh, sw) = (tuple(int(v) for v in (p if np.ndim(p) else (p, p))) for p in (window, stride))
    n, c, h, w = x.shape
    if not (1 <= wh <= h and 1 <= ww <= w and sh >= 1 and sw >= 1):
        raise ShapeError(f"occlusion window {window} with stride {stride} does not fit an input of {h}x{w}")
    base = xp.broadcast_to(xp.asarray(baseline, dtype=x.dtype), x.shape)
    scores = _eval_scores(net, x)
    targets = resolve_targets(target, scores)
    clean = _pick(scores, targets)  # (N,)
    spots = [(i, j) for i in _windows(h, wh, sh) for j in _windows(w, ww, sw)]
    total = xp.zeros((n, 1, h, w), dtype=x.dtype)
    count = np.zeros((h, w))
    per_batch = max(1, int(batch_size) // n)
    with Progress(len(spots), "occlusion", disable=not progress) as bar:
        for start in range(0, len(spots), per_batch):
            group = spots[start : start + per_batch]
            batch = xp.concatenate([x] * len(group))  # window g of image m is row g·N + m
            for g, (i, j) in enumerate(group):
                rows, cols = slice(i, i + wh), slice(j, j + ww)
                batch[g * n : (g + 1) * n, :, rows, cols] = base[:, :, rows, cols]
            drop = clean[None] - _pick(_eval_scores(net, batch), np.tile(targets, len(group))).reshape(-1, n)
            for g, (i, j) in enumerate(group):
                total[:, :, i : i + wh, j : j + ww] += drop[g].reshape(n, 1, 1, 1)
                count[i : i + wh, j : j + ww] += 1
            bar.update(len(group))
    return xp.broadcast_to(total / xp.asarray(count, dtype=x.dtype), x.shape).copy()


# ----------------------------------------------------------------------------
# every method as one (N, H, W) map


#: method name -> what its map is (captions, --help, docs)
METHODS = {
    "saliency": "saliency max_ch |∂S_c/∂I| (the paper, §3)",
    "input_x_gradient": "gradient × input x ⊙ ∂S_c/∂x, channel sum",
    "integrated_gradients": "integrated gradients from the zero input, channel sum",
    "gradcam": "Grad-CAM at the last conv layer, upsampled bilinearly",
    "guided_gradcam": "guided Grad-CAM: guided backprop × Grad-CAM, channel sum",
    "occlusion": "occlusion: score drop under an 8x8 zero window, stride 4",
    "smoothgrad": "SmoothGrad: mean saliency of 25 noisy copies",
    "guided": "guided backprop, channel sum",
    "deconvnet": "DeconvNet reconstruction, channel sum",
}


def attribution_map(net, x, method: str, target=None, **options):
    """The (N, H, W) map of ``method`` (a key of ``METHODS``) on x (N, C, H, W).

    Signed methods (gradient × input, integrated gradients, guided Grad-CAM,
    guided backprop, DeconvNet, occlusion) are summed over channels, Captum's
    reduction; saliency and SmoothGrad are the paper's max_ch |w|; Grad-CAM
    is one map. ``options`` go to the method (e.g. steps, window, samples).
    """
    if method not in METHODS:
        raise TinyconvError(f"unknown attribution method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "saliency":
        return saliency(net, x, target)
    if method == "smoothgrad":
        return smoothgrad(net, x, target, **{"seed": 0, **options})
    if method == "gradcam":
        return gradcam(net, x, target, **options)
    attr = {
        "input_x_gradient": lambda: input_x_gradient(net, x, target),
        "integrated_gradients": lambda: integrated_gradients(net, x, target, **options),
        "guided_gradcam": lambda: guided_gradcam(net, x, target, **options),
        "occlusion": lambda: occlusion(net, x, target, **options),
        "guided": lambda: input_gradient(net, x, target, rule="guided"),
        "deconvnet": lambda: input_gradient(net, x, target, rule="deconvnet"),
    }[method]()
    return attr.sum(axis=1)
