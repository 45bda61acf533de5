"""Pictures of the attribution methods beyond the paper, and of the sanity checks.

- ``method_figures(net, x, stem, ...)``: one map per method for one image
  (``tinyconv saliency --method``), each a PNG with its caption;
- ``methods_panel(net, xs, names, ...)``: one row per image, the input then
  every method's map, with captions (for the demo page);
- ``randomisation_panel(result, image, ...)``: the model-parameter
  randomisation test row by row, as Adebayo et al.'s Fig. 2 (a row per
  method, a column per randomised layer).

Signed maps (gradient × input, integrated gradients, occlusion, guided
backprop, DeconvNet, guided Grad-CAM) are drawn blue–white–red, white at 0;
non-negative maps (saliency, SmoothGrad, Grad-CAM) with the fire colour map.
Both are clipped at the 99.5th percentile of |map|.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine.backend import to_numpy
from ..methods import attribution
from ..methods.attribution import resolve_targets
from .imaging import deprocess, display_scale, heatmap, montage, overlay, signed_image, upscale

__all__ = ["Figure", "SIGNED", "map_tile", "method_figures", "methods_panel", "randomisation_panel"]

#: methods whose maps have both signs
SIGNED = ("input_x_gradient", "integrated_gradients", "guided_gradcam", "occlusion", "guided", "deconvnet")

#: short captions for the tiles
SHORT = {
    "saliency": "saliency max|∂S/∂I|",
    "input_x_gradient": "gradient × input",
    "integrated_gradients": "integrated gradients",
    "gradcam": "Grad-CAM",
    "guided_gradcam": "guided Grad-CAM",
    "occlusion": "occlusion",
    "smoothgrad": "SmoothGrad",
    "guided": "guided backprop",
    "deconvnet": "DeconvNet",
}


@dataclass
class Figure:
    """One picture: file name, uint8 array or PIL image, caption, PNG metadata
    (the fields of ``tinyconv.pictures.demo.Figure``)."""

    name: str
    image: object
    caption: str
    metadata: dict = field(default_factory=dict)


def map_tile(m, method: str) -> np.ndarray:
    """One (H, W) map as colours (H, W, 3) uint8: signed or fire (see above)."""
    m = to_numpy(m)
    return signed_image(m) if method in SIGNED else heatmap(m)


def _grey_rgb(image) -> np.ndarray:
    a = np.asarray(image)
    return np.repeat(a, 3, axis=2) if a.ndim == 3 and a.shape[2] == 1 else a


def _maps(net, x, methods, targets, options):
    opts = options or {}
    return {m: to_numpy(attribution.attribution_map(net, x, m, targets, **opts.get(m, {}))) for m in methods}


def method_figures(
    net, x, stem: str, target=None, methods=None, options=None, prefix: str = ""
) -> list[Figure]:
    """For one preprocessed image x (1, C, H, W): ``<stem>_<method>.png`` (the
    map) and ``<stem>_<method>_overlay.png`` (over the input) per method,
    and ``<stem>_methods.png``, all of them side by side.

    methods: names of ``attribution.METHODS`` (default all); options:
    method -> keyword options (e.g. {"occlusion": {"window": (4, 4)}}).
    """
    methods = list(methods or attribution.METHODS)
    scores = to_numpy(attribution._eval_scores(net, x))
    c = int(resolve_targets(target, scores)[0])
    name = net.classes[c] if net.classes else str(c)
    maps = _maps(net, x, methods, [c], options)
    image = deprocess(x[0], net)
    scale = display_scale(*x.shape[2:])
    figs, tiles, captions = [], [upscale(_grey_rgb(image), scale)], ["input"]
    for m in methods:
        tile = upscale(map_tile(maps[m][0], m), scale)
        what = f"{attribution.METHODS[m]} for class {c} ({name!r})"
        what += "" if m == "saliency" else " — beyond the paper"
        colours = "blue < 0 < red" if m in SIGNED else "black = 0, white = the 99.5th percentile"
        figs.append(Figure(f"{prefix}{stem}_{m}.png", tile, f"{stem}: {what}; {colours}"))
        heat = heatmap(np.abs(maps[m][0]))
        figs.append(
            Figure(
                f"{prefix}{stem}_{m}_overlay.png",
                upscale(overlay(image, heat), scale),
                f"{stem}: |{SHORT[m]}| blended (α = 0.5) over the greyscale input",
            )
        )
        tiles.append(tile)
        captions.append(SHORT[m])
    if len(methods) > 1:
        panel = montage(tiles, captions, title=f"{stem}: class {c} ({name!r})", font_size=12)
        figs.append(Figure(f"{prefix}{stem}_methods.png", panel, f"{stem}: every method's map for class {c}"))
    return figs


def methods_panel(net, xs, names=None, target=None, methods=None, options=None, size: int = 112):
    """One row per image: the input, then each method's map, captioned.

    xs: (N, C, H, W) preprocessed images; names: a label per image (default
    "image i"); target: None (each image's top class), an int or N ints;
    size: tile height in pixels (nearest-neighbour enlargement).
    Returns a PIL image."""
    methods = list(methods or attribution.METHODS)
    scores = to_numpy(attribution._eval_scores(net, xs))
    targets = resolve_targets(target, scores)
    maps = _maps(net, xs, methods, targets, options)
    scale = display_scale(*xs.shape[2:], target=size)
    names = list(names or [f"image {i}" for i in range(len(xs))])
    tiles, captions = [], []
    for i in range(len(xs)):
        c = int(targets[i])
        label = net.classes[c] if net.classes else str(c)
        tiles.append(upscale(_grey_rgb(deprocess(xs[i], net)), scale))
        captions.append(f"{names[i]}: class {label}")
        for m in methods:
            tiles.append(upscale(map_tile(maps[m][i], m), scale))
            captions.append(SHORT[m])
    return montage(
        tiles, captions, columns=len(methods) + 1, font_size=11,
        title="Attribution maps, one row per image (beyond the paper except saliency); "
        "signed maps blue < 0 < red, the others black to white",
    )  # fmt: skip


def randomisation_panel(result, image, index: int = 0, size: int = 84, title: str | None = None):
    """Adebayo et al.'s Fig. 2 for image ``index`` of a ``sanity.Randomisation``:
    a row per method, the input then one column per step ("trained", then
    each layer as randomised), |map| with the fire colour map, each tile
    scaled by its own 99.5th percentile. image: (H, W[, C]) uint8 for the
    first column. Returns a PIL image."""
    first = next(iter(result.maps.values()))[0]
    scale = display_scale(*first.shape[1:], target=size)
    tiles, captions = [], []
    for m, per_step in result.maps.items():
        tiles.append(upscale(_grey_rgb(image), scale))
        captions.append(SHORT.get(m, m))
        for step, maps in zip(result.steps, per_step, strict=True):
            tiles.append(upscale(heatmap(np.abs(maps[index])), scale))
            captions.append(step if m == next(iter(result.maps)) else "")
    title = title or (
        f"Model-parameter randomisation ({result.mode}, from the top layer down): |map| of the trained "
        "network, then with each named layer randomised"
    )
    return montage(tiles, captions, columns=len(result.steps) + 1, font_size=10, title=title)
