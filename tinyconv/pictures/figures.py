"""The paper's figures as pictures: what ``tinyconv saliency``, ``classviz``,
``deconv`` and ``localize`` draw.

Each figure family has one ``compute_*`` function, the only place where its
arrays cross from the device to NumPy, and drawing functions that take those
NumPy arrays. The ``*_figures`` functions do both and return a list of
``Figure(name, image, caption)``; nothing is written until the caller hands
them all to ``tinyconv.pictures.imaging.write_files``, so a failure never
leaves half a folder behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..engine.backend import to_numpy
from ..methods.classviz import class_models
from ..methods.deconvnet import compare, reconstruct, resolve_layer
from ..methods.saliency import eval_mode, input_gradient, resolve_targets, smoothgrad
from .imaging import (
    as_rgb,
    contrast_image,
    deprocess,
    display_scale,
    heatmap,
    map_top,
    montage,
    overlay,
    safe_name,
    signed_channel,
    signed_image,
    upscale,
    with_colorbar,
)

__all__ = [
    "Figure",
    "SaliencyMaps",
    "RuleMaps",
    "compute_saliency",
    "compute_rules",
    "saliency_figures",
    "classviz_figures",
    "class_model_figures",
    "comparison_figures",
    "unit_figures",
    "draw_boxes",
    "benchmark_samples",
    "localisation_pictures",
    "RULE_CAPTIONS",
]

RULE_CAPTIONS = {
    "gradient": "gradient ∂S_c/∂I (backprop: ReLU passes g where its input x > 0)",
    "deconvnet_rule": "DeconvNet rule (backward with rule='deconvnet': ReLU passes g where g > 0)",
    "deconvnet": "explicit DeconvNet (unpool with switches, rectify, transposed flipped filters)",
    "guided": "guided backprop (ReLU passes g where x > 0 and g > 0)",
}


@dataclass
class Figure:
    """One picture: file name, uint8 array or PIL image, caption, PNG metadata."""

    name: str
    image: object
    caption: str
    metadata: dict = field(default_factory=dict)


def class_name(net, c: int) -> str:
    return net.classes[c] if net.classes else str(c)


# ----------------------------------------------------------------------------
# the device -> NumPy crossings


@dataclass
class SaliencyMaps:
    """Host arrays of one image's saliency: the network's view uint8 (H, W, C),
    w = ∂S_c/∂I (C, H, W), M = max_ch |w| (H, W), scores (K,), the class c, and
    SmoothGrad's map (H, W) or None."""

    image: np.ndarray
    gradient: np.ndarray
    saliency: np.ndarray
    scores: np.ndarray
    target: int
    smooth: np.ndarray | None = None


def compute_saliency(net, x, target=None, smooth=None) -> SaliencyMaps:
    """Saliency of one preprocessed image x (1, C, H, W) for class ``target``
    (None = top class); smooth: None or ``smoothgrad`` options. Host arrays."""
    with eval_mode(net):
        scores = to_numpy(net.predict(x))[0]
    c = int(resolve_targets(target, scores[None])[0])
    w = to_numpy(input_gradient(net, x, c))[0]
    s = None if smooth is None else to_numpy(smoothgrad(net, x, c, **smooth))[0]
    return SaliencyMaps(deprocess(to_numpy(x)[0], net), w, np.abs(w).max(axis=0), scores, c, s)


@dataclass
class RuleMaps:
    """Host arrays of the four backward rules for one image (``compare``): the
    network's view (H, W, C) uint8, {rule: (C, H, W)}, scores (K,), the class c."""

    image: np.ndarray
    maps: dict
    scores: np.ndarray
    target: int

    @property
    def saliency(self) -> np.ndarray:
        """M = max_ch |∂S_c/∂I| (H, W), from the gradient rule."""
        return np.abs(self.maps["gradient"]).max(axis=0)

    @property
    def explicit_difference(self) -> float:
        """max |explicit DeconvNet − DeconvNet rule| / max |DeconvNet rule|."""
        a, b = self.maps["deconvnet"], self.maps["deconvnet_rule"]
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def compute_rules(net, x, target=None) -> RuleMaps:
    """``compare`` for one preprocessed image x (1, C, H, W), as host arrays."""
    maps = {k: to_numpy(v)[0] for k, v in compare(net, x, target).items()}  # each (C, H, W)
    with eval_mode(net):
        scores = to_numpy(net.predict(x))[0]
    c = int(resolve_targets(target, scores[None])[0])
    return RuleMaps(deprocess(to_numpy(x)[0], net), maps, scores, c)


# ----------------------------------------------------------------------------
# saliency (paper §3)


def saliency_figures(net, x, stem: str, target=None, smooth=None, prefix: str = "") -> list[Figure]:
    """Saliency of one preprocessed image x (1, C, H, W) for class ``target``
    (None = top class): heat map, overlay, signed gradient, and a panel.

    smooth: None, or a dict of ``smoothgrad`` options (samples, sigma, ...) to add SmoothGrad.
    """
    maps = compute_saliency(net, x, target, smooth)
    return saliency_pictures(net, maps, stem, smooth, prefix)


def saliency_pictures(net, m: SaliencyMaps, stem: str, smooth=None, prefix: str = "") -> list[Figure]:
    """The figures of ``saliency_figures`` from host arrays (``compute_saliency``)."""
    scale = display_scale(*m.saliency.shape)
    c, heat = m.target, heatmap(m.saliency)
    what = (
        f"class {c} ({class_name(net, c)!r}, score S_c = {m.scores[c]:.2f}; "
        f"top class {class_name(net, int(m.scores.argmax()))!r})"
    )
    tiles = {
        "saliency": upscale(heat, scale),
        "overlay": upscale(overlay(m.image, heat), scale),
        "gradient": upscale(signed_image(m.gradient), scale),
    }
    figs = [
        Figure(f"{prefix}{stem}_saliency.png", tiles["saliency"],
               f"{stem}: saliency map M_ij = max_ch |∂S_c/∂I| for {what}; fire colour map, "
               "black = 0, white = the 99.5th percentile and above"),
        Figure(f"{prefix}{stem}_overlay.png", tiles["overlay"],
               f"{stem}: the saliency map blended (α = 0.5) over the greyscale input"),
        Figure(f"{prefix}{stem}_gradient.png", tiles["gradient"],
               f"{stem}: the signed gradient ∂S_c/∂I (red > 0: brighter pixels raise S_c; blue < 0)"),
    ]  # fmt: skip
    top, signed_top = map_top(m.saliency), map_top(signed_channel(m.gradient))
    panel = [
        upscale(as_rgb(m.image), scale),
        with_colorbar(tiles["saliency"], "fire", "0", f"{top:.2g}"),
        tiles["overlay"],
        with_colorbar(tiles["gradient"], "bluered", f"−{signed_top:.2g}", f"+{signed_top:.2g}", "0"),
    ]
    captions = ["input (network's view)", "saliency max|w|", "overlay", "signed gradient w"]
    if m.smooth is not None:
        sheat = upscale(heatmap(m.smooth), scale)
        opts = ", ".join(f"{k}={v}" for k, v in smooth.items())
        figs.append(
            Figure(f"{prefix}{stem}_smoothgrad.png", sheat,
                   f"{stem}: SmoothGrad (beyond the paper): mean saliency over noisy copies ({opts})")
        )  # fmt: skip
        panel.append(with_colorbar(sheat, "fire", "0", f"{map_top(m.smooth):.2g}"))
        captions.append("SmoothGrad (beyond the paper)")
    figs.append(
        Figure(
            f"{prefix}{stem}_panel.png",
            montage(panel, captions, title=f"{stem}: saliency for {what}", font_size=12),
            f"{stem}: input, saliency map, overlay and signed gradient side by side for {what}",
        )
    )
    return figs


# ----------------------------------------------------------------------------
# class models (paper §2)


def _compact(values) -> list:
    """A history array as a JSON list: ints stay ints, floats keep 5 significant digits."""
    if np.issubdtype(values.dtype, np.integer):
        return [int(v) for v in values]
    return [float(f"{v:.5g}") for v in values]


def class_models_record(results) -> str:
    """The JSON record of class models: parameters, final scores, per-step history."""
    record = [
        {
            **r.params,
            "final_score": r.score,
            "runner_up_class": r.runner_up_class,
            "runner_up_score": r.runner_up,
            "posterior": r.posterior,
            "history": {k: _compact(v) for k, v in r.history.items()},
        }
        for r in results
    ]
    return json.dumps(record, indent=1)


def class_model_figures(net, results, prefix: str = "", contrast: bool = False) -> list[Figure]:
    """One PNG per class model (every hyper-parameter in its text chunks); with
    ``contrast`` also its contrast-stretched view (``contrast_image``)."""
    scale = display_scale(*net.input_shape[1:])
    figs = []
    for r in results:
        others = class_name(net, r.runner_up_class)
        meta = {
            "tinyconv": json.dumps(r.params),
            "final_score": f"{r.score:.6g}",
            "runner_up": f"{others} {r.runner_up:.6g}",
            "posterior": f"{r.posterior:.6g}",
        }
        base = f"{prefix}class_{r.target:02d}_{safe_name(r.class_name)}"
        figs.append(
            Figure(f"{base}.png", upscale(as_rgb(r.image), scale),
                   f"class model for class {r.target} ({r.class_name!r}): final S_c = {r.score:.2f}, "
                   f"runner-up {others!r} {r.runner_up:.2f}, P_c = {r.posterior:.4f}", meta)
        )  # fmt: skip
        if contrast:
            figs.append(
                Figure(f"{base}_contrast.png", upscale(as_rgb(contrast_image(to_numpy(r.input))), scale),
                       f"class {r.target} ({r.class_name!r}) contrast-stretched: grey = the mean image")
            )  # fmt: skip
    return figs


def class_models_title(params: dict) -> str:
    p = params
    return (
        f"class models, argmax_I S_c(I) − λ‖I‖² ({p['objective']} objective, {p['steps']} steps, "
        f"lr {p['lr']}, λ {p['l2']}, seed {p['seed']})"
    )


def _class_montages(net, results, prefix: str) -> list[Figure]:
    scale = max(1, display_scale(*net.input_shape[1:]) // 2)
    title, columns, figs = class_models_title(results[0].params), min(len(results), 5), []
    if len(results) > 1:
        captions = [
            f"{r.target} {r.class_name!r}: S_c {r.score:.1f}, next {class_name(net, r.runner_up_class)!r} "
            f"{r.runner_up:.1f}"
            for r in results
        ]
        tiles = [as_rgb(r.image) for r in results]
        grid = montage(tiles, captions, columns=columns, scale=scale, title=title, font_size=12)
        figs.append(Figure(f"{prefix}class_models.png", grid, "all class models: " + title))
    stretched = montage(
        [as_rgb(contrast_image(to_numpy(r.input))) for r in results],
        [f"{r.target} {r.class_name!r}" for r in results],
        columns=columns,
        scale=scale,
        title="the same images, contrast-stretched for viewing: grey = the mean image, "
        "white/black = the largest positive/negative change",
        font_size=12,
    )
    figs.append(
        Figure(
            f"{prefix}class_models_contrast.png",
            stretched,
            "the same class models shown with grey at the mean image and each image's 99.5th percentile "
            "of |I| stretched to white (brighter than the mean) and black (darker): a display choice only",
        )
    )
    return figs


def classviz_figures(net, targets=None, prefix: str = "", progress: bool = True, **options):
    """Class model images (one per target; default every class), montages of
    them, and the JSON record (parameters, final scores, per-step history).
    Every hyper-parameter also goes into each PNG's text chunks.
    Returns (figures, JSON text)."""
    results = class_models(net, targets, progress=progress, **options)
    figs = class_model_figures(net, results, prefix) + _class_montages(net, results, prefix)
    return figs, class_models_record(results)


# ----------------------------------------------------------------------------
# DeconvNet and the backward rules (paper §4)


def comparison_figures(net, x, stem: str, target=None, prefix: str = "") -> list[Figure]:
    """The four-way comparison (gradient, DeconvNet rule, explicit DeconvNet,
    guided backprop) for one image x (1, C, H, W), signed and as |.| maps."""
    r = compute_rules(net, x, target)
    scale = display_scale(*r.image.shape[:2])
    c, name, diff = r.target, class_name(net, r.target), r.explicit_difference
    figs, signed, heats = [], [], []
    for key, m in r.maps.items():
        s, top = upscale(signed_image(m), scale), map_top(signed_channel(m))
        figs.append(
            Figure(f"{prefix}{stem}_{key}.png", s, f"{stem}: {RULE_CAPTIONS[key]}; signed, red > 0, blue < 0")
        )
        signed.append(with_colorbar(s, "bluered", f"−{top:.2g}", f"+{top:.2g}", "0"))
        a = np.abs(m).max(axis=0)
        heats.append(with_colorbar(upscale(heatmap(a), scale), "fire", "0", f"{map_top(a):.2g}"))
    short = ["gradient (x > 0)", "DeconvNet rule (g > 0)", "explicit DeconvNet", "guided (both)"]
    panel = montage(
        [upscale(as_rgb(r.image), scale), *signed, np.full_like(heats[0], 255), *heats],
        ["input", *[f"{t}, signed" for t in short], "", *[f"{t}, max|·|" for t in short]],
        columns=5,
        title=f"{stem}: class {c} ({name!r}); explicit DeconvNet vs rule: max rel. diff {diff:.1e}",
        font_size=12,
    )
    figs.append(
        Figure(
            f"{prefix}{stem}_compare.png",
            panel,
            f"{stem}: the four backward rules for class {c} ({name!r}); top row signed, "
            f"bottom row max over channels of |·|. The explicit DeconvNet equals the DeconvNet rule "
            f"(max relative difference {diff:.1e}); negative values come from the first "
            "convolution's transpose, whose filters mix signs",
        )
    )
    return figs


def unit_figures(net, x, stem: str, layer, unit=None, keep: str = "map", prefix: str = "") -> list[Figure]:
    """DeconvNet reconstruction from one feature map (or unit) of ``layer``."""
    r = to_numpy(reconstruct(net, x, layer=layer, unit=unit, keep=keep))[0]
    index = resolve_layer(net, layer)
    a = to_numpy(net.forward_to(x, index))
    image = deprocess(to_numpy(x)[0], net)
    used = int(a.reshape(1, a.shape[1], -1).max(axis=2).argmax()) if unit is None else int(unit)
    scale = display_scale(*image.shape[:2])
    name = net.layers[index].name
    what = f"layer {name!r}, {'unit' if a.ndim == 2 else 'feature map'} {used} ({keep})"
    signed, heat = upscale(signed_image(r), scale), upscale(heatmap(np.abs(r).max(axis=0)), scale)
    base = f"{prefix}{stem}_{safe_name(name)}_unit{used}"
    panel = montage(
        [upscale(as_rgb(image), scale), signed, heat],
        ["input", "reconstruction", "max|·|"],
        title=f"{stem}: DeconvNet from {what}",
        font_size=12,
    )
    return [
        Figure(
            f"{base}.png", signed, f"{stem}: DeconvNet reconstruction from {what}; signed, red > 0, blue < 0"
        ),
        Figure(f"{base}_abs.png", heat, f"{stem}: the same reconstruction as max over channels of |·|"),
        Figure(f"{base}_panel.png", panel, f"{stem}: input and reconstruction from {what}"),
    ]


# ----------------------------------------------------------------------------
# localisation (paper §3.2)

TRUE_COLOUR, GRAPHCUT_COLOUR, THRESHOLD_COLOUR = (40, 230, 40), (255, 40, 40), (255, 230, 0)


def draw_boxes(image, boxes, mask=None, scale: int = 4) -> np.ndarray:
    """uint8 (H, W[, 3]) image enlarged ``scale`` times, the mask tinted red,
    boxes = [(box, colour)] drawn as rectangles (x1/y1 exclusive)."""
    a = as_rgb(image).astype(np.float64)
    if mask is not None:
        a[mask] = 0.55 * a[mask] + 0.45 * np.array([255.0, 0, 0])
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    width = max(1, scale // 2 + 1)
    for box, colour in boxes:
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=width)
    return np.asarray(im)


def benchmark_samples(bench) -> Image.Image | None:
    """samples.png of the localisation benchmark (a ``Benchmark``): per scene the
    paper's GraphCut, the blurred-map GraphCut and the saliency map."""
    tiles, captions = [], []
    classes, sigma = list(bench.test.classes), bench.summary["graphcut_smooth_sigma"]
    for k, (found, boxes) in enumerate(bench.samples):
        truth, row = tuple(bench.test.boxes[k]), bench.rows[k]
        for name in ("graphcut", "graphcut_smooth"):
            drawn = [
                (boxes["threshold"], THRESHOLD_COLOUR),
                (truth, TRUE_COLOUR),
                (boxes[name], GRAPHCUT_COLOUR),
            ]
            tiles.append(draw_boxes(bench.test.images[k], drawn, found[name].mask))
        heat = Image.fromarray(heatmap(bench.maps[k])).resize(tiles[-1].shape[1::-1], Image.NEAREST)
        tiles.append(np.asarray(heat))
        captions += [
            f"{classes[bench.test.labels[k]]} -> {classes[bench.tops[k]]}; "
            f"GraphCut IoU {row['graphcut_iou']:.2f}",
            f"blurred σ {sigma}: IoU {row['graphcut_smooth_iou']:.2f}",
            f"saliency; threshold IoU {row['threshold_iou']:.2f}",
        ]
    if not tiles:
        return None
    return montage(
        tiles,
        captions,
        columns=9,
        title="green: true box, red: GraphCut box and mask (paper settings, then blurred saliency), "
        "yellow: threshold box",
    )


def localisation_pictures(found, stems) -> dict:
    """``<stem>_localized.png`` per image of ``localize_files``: the image about
    448 px wide, the mask tinted red, the GraphCut box red, true boxes green."""
    files = {}
    for stem, (r, truths) in zip(stems, found, strict=True):
        scale = max(1, round(448 / max(r.image.size)))
        drawn = [(t, TRUE_COLOUR) for t in truths] + [(r.box, GRAPHCUT_COLOUR)]
        files[f"{stem}_localized.png"] = draw_boxes(np.asarray(r.image), drawn, r.mask, scale)
    return files
