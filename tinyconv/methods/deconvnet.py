"""The DeconvNet of Zeiler & Fergus (2014), written out explicitly.

A DeconvNet maps a signal from a layer back to pixel space by walking the
network in reverse, using only what the forward pass recorded:

    max-pool   unpool: put each value back at the position its window's
               maximum came from (the pool's *switches*), zeros elsewhere;
    ReLU       rectify the reconstruction: r ← max(r, 0);
    conv       "deconvolve": convolve with the same filters transposed
               (input and output channels swapped) and flipped in space,
               using the *forward* convolution code;
    linear     multiply by Wᵀ;  flatten: reshape;  avg-pool: its adjoint.

It calls no layer's ``backward`` method, and only the convolution is written
anew here (``deconvolve``: a transposed convolution by dilation, padding and
the forward code with flipped kernels, where ``Conv2d.backward`` takes
col2im(Wᵀ dy) or its own flipped-kernel form). The other steps are the engine's own functions: unpooling is
``functional.unpool``, the very function ``MaxPool2d.backward`` calls (the one
recorded switch drives both, as in Zeiler & Fergus), and the avg-pool and
adaptive-pool adjoints are their layers' backward functions. Simonyan et al.
(2014, section 4) observe that the whole walk is backprop with one change: at
a ReLU the gradient is masked by the sign of the layer's *input*, 1(x > 0),
while the DeconvNet masks by the sign of the *reconstruction*, 1(r > 0). So
``reconstruct(net, x, c)`` must equal ``input_gradient(net, x, c,
rule="deconvnet")``; the tests check it to float64 rounding. Because the
unpooling is shared code, that equality cannot catch a wrong switch (both
sides would carry it: ``tests/test_layers.py`` checks ``unpool`` against a
pixel loop instead). What it proves is that the transposed convolution built
here is the convolution's backward pass, and that the ReLU rule is the only
difference between the two walks.

Why DeconvNet maps have negative values: the last step back to pixels is the
transpose of the first convolution, and no ReLU follows it. Its filters have
weights of both signs, so a rectified (non-negative) signal in the first
feature maps still produces positive and negative pixels. Display
reconstructions with a diverging colour map, or take |r| (max over channels)
for a saliency-like map.
"""

from __future__ import annotations

import numpy as np

from ..engine import functional as F
from ..engine.backend import get_array_module
from ..engine.fastconv import conv2d_forward
from ..engine.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)
from ..errors import OptionError, RuleError, ShapeError, TargetError
from .checks import check_scores
from .saliency import eval_mode, input_gradient, resolve_targets

__all__ = ["deconvolve", "reconstruct", "compare", "walk_back", "resolve_layer", "RECTIFIERS"]

# How a reconstruction r passes a ReLU whose forward input was x: the engine's
# three ReLU rules, the same tuple.
#   deconvnet  r · 1(r > 0)            Zeiler & Fergus: rectify the signal
#   gradient   r · 1(x > 0)            backprop's mask from the forward pass
#   guided     r · 1(x > 0) · 1(r > 0)  both (Springenberg et al. 2015)
RECTIFIERS = F.RULES


def _pad_or_crop(x, top, bottom, left, right):
    """Zero-pad (positive amounts) or crop (negative amounts) the last two axes."""
    xp = get_array_module(x)
    pads = [(0, 0), (0, 0), (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))]
    if any(p != (0, 0) for p in pads):
        x = xp.pad(x, pads)
    h, w = x.shape[2], x.shape[3]
    return x[:, :, max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]


def _dilate(x, sh, sw):
    """Insert (s - 1) zeros between neighbouring values: (N, C, H, W) ->
    (N, C, (H-1)·sh + 1, (W-1)·sw + 1). Undoes the stride's subsampling."""
    if sh == 1 and sw == 1:
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.zeros((n, c, (h - 1) * sh + 1, (w - 1) * sw + 1), dtype=x.dtype)
    out[:, :, ::sh, ::sw] = x
    return out


def deconvolve(r, weight, input_shape, stride=(1, 1), padding=(0, 0)):
    """The transposed convolution, computed by the forward convolution code.

    r: (N, F, OH, OW), the signal at a conv layer's output; weight: (F, C, kh, kw);
    input_shape: (N, C, H, W) of that layer's forward input. Returns (N, C, H, W).

    A forward conv with stride s and padding p reads input row s·o + i − p
    for output row o and kernel row i. Its transpose therefore (1) dilates r
    with s − 1 zeros between rows, (2) pads it with k − 1 − p zeros above and
    k − 1 − p + e below, where e = H + 2p − k − (OH − 1)·s counts the rows the
    forward pass never reached (PyTorch's "output padding"), and (3) cross-
    correlates with the kernel flipped in space and with input and output
    channels swapped, W'[c, f] = W[f, c, ::-1, ::-1], at stride 1.
    """
    (sh, sw), (ph, pw) = stride, padding
    _, _, kh, kw = weight.shape
    h, w = input_shape[2], input_shape[3]
    oh, ow = r.shape[2], r.shape[3]
    eh, ew = h + 2 * ph - kh - (oh - 1) * sh, w + 2 * pw - kw - (ow - 1) * sw
    signal = _pad_or_crop(_dilate(r, sh, sw), kh - 1 - ph, kh - 1 - ph + eh, kw - 1 - pw, kw - 1 - pw + ew)
    flipped = weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # (C, F, kh, kw)
    xp = get_array_module(weight)
    out, _ = conv2d_forward(signal, xp.ascontiguousarray(flipped), None, 1, 0)
    return out


def _back_through(layer, r, rectifier):
    """One layer of the reverse walk, from the layer's cached forward state."""
    if isinstance(layer, ReLU):
        xp = get_array_module(r)
        mask = layer.cache.mask  # 1(x > 0) of the forward input
        if rectifier == "deconvnet":
            return xp.maximum(r, 0)
        if rectifier == "gradient":
            return xp.where(mask, r, 0)
        return xp.where(mask & (r > 0), r, 0)
    if isinstance(layer, MaxPool2d):
        cache = layer.cache
        return F.unpool(r, cache.switches, cache.x_shape, cache.kernel, cache.stride, cache.padding)
    if isinstance(layer, Conv2d):
        weight = layer.params["weight"].astype(r.dtype, copy=False)
        return deconvolve(r, weight, layer.cache.x_shape, layer.stride, layer.padding)
    if isinstance(layer, Linear):
        return r @ layer.params["weight"].astype(r.dtype, copy=False)  # (N, out) -> (N, in): rᵀW = (Wᵀr)ᵀ
    if isinstance(layer, Flatten):
        return r.reshape(layer.cache.x_shape)
    if isinstance(layer, AvgPool2d):
        return F.avgpool2d_backward(r, layer.cache)  # each value / window size, back to its window
    if isinstance(layer, AdaptiveAvgPool2d):
        return F.adaptive_avgpool2d_backward(r, layer.cache)  # P_hᵀ r P_w
    if isinstance(layer, Dropout):
        return r if layer.cache is None else r * layer.cache.mask
    raise ShapeError(
        f"the DeconvNet does not know how to reverse layer {layer.name!r} ({type(layer).__name__})"
    )


def walk_back(net, r, start=None, rectifier="deconvnet"):
    """Map a signal at the output of layer ``start`` (default: the last) back
    to pixel space through every earlier layer, after a forward pass.

    rectifier: what a ReLU does to the reconstruction (see ``RECTIFIERS``);
    "deconvnet" is Zeiler & Fergus's network.
    """
    if rectifier not in RECTIFIERS:
        raise RuleError(f"unknown rectifier {rectifier!r}; expected one of {', '.join(RECTIFIERS)}")
    stop = len(net.layers) - 1 if start is None else net.index(start)
    for layer in reversed(net.layers[: stop + 1]):
        layer.check_gradient(r)  # a forward pass ran, r has its output's shape and device
        r = _back_through(layer, r, rectifier)
    return r


def resolve_layer(net, layer):
    """A layer given by name, index, or index written as a string ("3")."""
    if isinstance(layer, str) and layer.lstrip("-").isdigit():
        try:
            return net.index(layer)
        except KeyError:
            layer = int(layer)
    try:
        return net.index(layer)
    except (KeyError, IndexError) as exc:
        raise TargetError(str(exc).strip("'\"")) from None


def reconstruct(net, x, target=None, layer=None, unit=None, keep="map", rectifier="deconvnet"):
    """The DeconvNet reconstruction of an image batch x: (N, C, H, W) -> (N, C, H, W).

    From a class score (default): the signal is the one-hot vector of class
    ``target`` (None = top class) at the scores, so the result equals
    ``input_gradient(net, x, target, rule="deconvnet")``.

    From a layer (``layer`` = name or index): Zeiler & Fergus keep one
    feature map's activations and zero everything else in that layer.
    unit: the channel (conv layers) or unit (dense layers) to keep; None picks,
          per image, the one with the strongest activation.
    keep: "map" keeps the whole map's activations, "max" only its largest one.
    """
    if keep not in ("map", "max"):
        raise OptionError(f"keep must be 'map' or 'max', got {keep!r}")
    with eval_mode(net):
        if layer is None:
            if unit is not None:
                raise TargetError("unit needs a layer: give layer=NAME (or index) as well")
            scores = net.forward(x)
            check_scores(net, x, scores)
            return walk_back(net, F.one_hot(resolve_targets(target, scores), scores), None, rectifier)
        if target is not None:
            raise TargetError("give either a class target or a layer/unit to reconstruct from, not both")
        stop = resolve_layer(net, layer)
        a = net.forward_to(x, stop)  # (N, F, h, w) or (N, F)
        return walk_back(net, _keep_unit(a, unit, keep, net.layers[stop]), stop, rectifier)


def _keep_unit(a, unit, keep, layer):
    """Zero every activation of ``a`` except those of one unit/feature map."""
    xp = get_array_module(a)
    n, f = a.shape[0], a.shape[1]
    per_unit = a.reshape(n, f, -1)  # (N, F, P)
    if unit is None:
        units = per_unit.max(axis=2).argmax(axis=1)  # (N,)
    else:
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < f:
            raise TargetError(
                f"unit {unit!r} is out of range: layer {layer.name!r} has {f} "
                f"{'feature maps' if a.ndim == 4 else 'units'} (0..{f - 1})"
            )
        units = xp.full(n, int(unit))
    mask = xp.zeros_like(per_unit, dtype=bool)
    mask[xp.arange(n), units] = True
    if keep == "max":
        best = xp.where(mask, per_unit, -xp.inf).reshape(n, -1).argmax(axis=1)
        mask = xp.zeros(n * f * per_unit.shape[2], dtype=bool).reshape(n, -1)
        mask[xp.arange(n), best] = True
    return xp.where(mask.reshape(a.shape), a, 0)


def compare(net, x, target=None):
    """Four maps of one batch for the same class (None = top class per image):

        "gradient"        backprop, ReLU mask 1(x > 0)      = ∂S_c/∂I (the paper)
        "deconvnet_rule"  backward with rule="deconvnet", mask 1(r > 0)
        "deconvnet"       the explicit DeconvNet above (equals the previous one)
        "guided"          guided backprop, mask 1(x > 0)·1(r > 0)

    Each (N, C, H, W), on the device of x. Each map switches every ReLU to
    its rule (restored afterwards), so a rule set on one layer plays no part.
    """
    with eval_mode(net):
        targets = resolve_targets(target, net.forward(x))
    return {
        "gradient": input_gradient(net, x, targets, rule="gradient"),
        "deconvnet_rule": input_gradient(net, x, targets, rule="deconvnet"),
        "deconvnet": reconstruct(net, x, targets),
        "guided": input_gradient(net, x, targets, rule="guided"),
    }
