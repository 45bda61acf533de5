"""The paper's figures as pictures: what ``tinyconv saliency``, ``classviz``,
``deconv`` and ``demo`` draw, and the demo itself.

Each ``*_figures`` function computes in memory and returns a list of
``Figure(name, image, caption)``; nothing is written until the caller hands
them all to ``tinyconv.pictures.imaging.write_files``, so a failure never leaves half
a folder behind. ``run_demo`` applies all of them to every network bundled in
``weights/`` with its example images and writes an ``index.html`` page.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.backend import DeviceError, to_numpy
from ..errors import TargetError, TinyconvError, WeightsError
from ..methods.classviz import class_models
from ..methods.deconvnet import compare, reconstruct, resolve_layer
from ..methods.saliency import eval_mode, input_gradient, reduce_channels, resolve_targets, smoothgrad
from .imaging import (
    contrast_image,
    deprocess,
    display_scale,
    heatmap,
    montage,
    overlay,
    preprocess,
    signed_image,
    upscale,
)

__all__ = [
    "Figure",
    "load_net",
    "parse_target",
    "saliency_figures",
    "classviz_figures",
    "comparison_figures",
    "unit_figures",
    "bundled_networks",
    "run_demo",
    "render_index",
]

REPO = Path(__file__).resolve().parents[2]

# where the demo finds example images for a bundled network (by its meta["arch"])
EXAMPLE_FOLDERS = {"mnist-cnn": "digits", "fashion-cnn": "fashion", "scenes-cnn": "scenes"}

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


# ----------------------------------------------------------------------------
# loading and arguments


def load_net(weights=None, device: str = "cpu"):
    """The network in ``weights`` (default: the bundled MNIST CNN) on ``device``."""
    from ..models.native import bundled, load

    path = bundled("mnist_cnn.npz") if weights is None else Path(weights)
    if not path.exists():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    net = load(path)
    if net.num_classes is None:
        raise WeightsError(f"{str(path)!r} records neither the network's classes nor its input shape")
    try:
        net.to(device)
    except DeviceError as exc:
        raise TinyconvError(str(exc)) from None
    return net.eval()


def parse_target(net, text):
    """A class index from a command-line value: an index or a class name (None stays None)."""
    if text is None:
        return None
    text = str(text)
    if net.classes and text in net.classes:
        return net.classes.index(text)
    try:
        index = int(text)
    except ValueError:
        names = ", ".join(net.classes or [])
        raise TargetError(
            f"unknown class {text!r}; give an index 0..{net.num_classes - 1} or a name: {names}"
        ) from None
    return int(resolve_targets(index, np.zeros((1, net.num_classes)))[0])


def _class_name(net, c: int) -> str:
    return net.classes[c] if net.classes else str(c)


def unique_stems(paths) -> list[str]:
    """File stems, made unique (``digit``, ``digit-2``...) and safe as file names."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(str(p)).stem) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def _compact(values) -> list:
    """A history array as a JSON list: ints stay ints, floats keep 5 significant digits."""
    if np.issubdtype(values.dtype, np.integer):
        return [int(v) for v in values]
    return [float(f"{v:.5g}") for v in values]


def _rgb(image):
    a = np.asarray(image)
    return np.repeat(a, 3, axis=2) if a.ndim == 3 and a.shape[2] == 1 else a


# ----------------------------------------------------------------------------
# figures


def saliency_figures(net, x, stem: str, target=None, smooth=None, prefix: str = "") -> list[Figure]:
    """Saliency of one preprocessed image x (1, C, H, W) for class ``target``
    (None = top class): heat map, overlay, signed gradient, and a panel.

    smooth: None, or a dict of ``smoothgrad`` options (samples, sigma, ...) to add SmoothGrad.
    """
    with eval_mode(net):
        scores = to_numpy(net.predict(x))[0]
    c = int(resolve_targets(target, scores[None])[0])
    w = input_gradient(net, x, c)  # (1, C, H, W)
    m = to_numpy(reduce_channels(w))[0]  # (H, W)
    image = deprocess(x[0], net)  # what the network sees, uint8 (H, W, C)
    scale = display_scale(*m.shape)
    heat = heatmap(m)
    name = _class_name(net, c)
    top = _class_name(net, int(scores.argmax()))
    what = f"class {c} ({name!r}, score S_c = {scores[c]:.2f}; top class {top!r})"
    figs = [
        Figure(
            f"{prefix}{stem}_saliency.png",
            upscale(heat, scale),
            f"{stem}: saliency map M_ij = max_ch |∂S_c/∂I| for {what}; fire colour map, "
            "black = 0, white = the 99.5th percentile and above",
        ),
        Figure(
            f"{prefix}{stem}_overlay.png",
            upscale(overlay(image, heat), scale),
            f"{stem}: the saliency map blended (α = 0.5) over the greyscale input",
        ),
        Figure(
            f"{prefix}{stem}_gradient.png",
            upscale(signed_image(to_numpy(w)[0]), scale),
            f"{stem}: the signed gradient ∂S_c/∂I (red > 0: brighter pixels raise S_c; blue < 0)",
        ),
    ]
    tiles = [
        upscale(_rgb(image), scale),
        upscale(heat, scale),
        upscale(overlay(image, heat), scale),
        upscale(signed_image(to_numpy(w)[0]), scale),
    ]
    captions = ["input (network's view)", "saliency max|w|", "overlay", "signed gradient w"]
    if smooth is not None:
        s = to_numpy(smoothgrad(net, x, c, **smooth))[0]
        sheat = upscale(heatmap(s), scale)
        opts = ", ".join(f"{k}={v}" for k, v in smooth.items())
        figs.append(
            Figure(
                f"{prefix}{stem}_smoothgrad.png",
                sheat,
                f"{stem}: SmoothGrad (beyond the paper): mean saliency over noisy copies ({opts})",
            )
        )
        tiles.append(sheat)
        captions.append("SmoothGrad (beyond the paper)")
    panel = montage(tiles, captions, title=f"{stem}: saliency for {what}", font_size=12)
    figs.append(
        Figure(
            f"{prefix}{stem}_panel.png",
            panel,
            f"{stem}: input, saliency map, overlay and signed gradient side by side for {what}",
        )
    )
    return figs


def classviz_figures(
    net, targets=None, prefix: str = "", progress: bool = True, **options
) -> tuple[list[Figure], str]:
    """Class model images (one per target; default every class), montages of
    them, and the JSON record (parameters, final scores, per-step history).
    Every hyper-parameter also goes into each PNG's text chunks."""
    results = class_models(net, targets, progress=progress, **options)
    h, w = net.input_shape[1:]
    scale = display_scale(h, w)
    figs, tiles, captions, record = [], [], [], []
    for r in results:
        others = _class_name(net, r.runner_up_class)
        cap = f"{r.target} {r.class_name!r}: S_c {r.score:.1f}, next {others!r} {r.runner_up:.1f}"
        safe = "".join(ch if ch.isalnum() else "_" for ch in r.class_name)
        meta = {
            "tinyconv": json.dumps(r.params),
            "final_score": f"{r.score:.6g}",
            "runner_up": f"{others} {r.runner_up:.6g}",
            "posterior": f"{r.posterior:.6g}",
        }
        figs.append(
            Figure(
                f"{prefix}class_{r.target:02d}_{safe}.png",
                upscale(_rgb(r.image), scale),
                f"class model for class {r.target} ({r.class_name!r}): final S_c = {r.score:.2f}, "
                f"runner-up {others!r} {r.runner_up:.2f}, P_c = {r.posterior:.4f}",
                meta,
            )
        )
        tiles.append(_rgb(r.image))
        captions.append(cap)
        record.append(
            {
                **r.params,
                "final_score": r.score,
                "runner_up_class": r.runner_up_class,
                "runner_up_score": r.runner_up,
                "posterior": r.posterior,
                "history": {k: _compact(v) for k, v in r.history.items()},
            }
        )
    p = results[0].params
    title = (
        f"class models, argmax_I S_c(I) − λ‖I‖² ({p['objective']} objective, {p['steps']} steps, "
        f"lr {p['lr']}, λ {p['l2']}, seed {p['seed']})"
    )
    stretched = [_rgb(contrast_image(r.input)) for r in results]
    if len(results) > 1:
        columns = min(len(results), 5)
        figs.append(
            Figure(
                f"{prefix}class_models.png",
                montage(
                    tiles, captions, columns=columns, scale=max(1, scale // 2), title=title, font_size=12
                ),
                "all class models: " + title,
            )
        )
    figs.append(
        Figure(
            f"{prefix}class_models_contrast.png",
            montage(
                stretched,
                [f"{r.target} {r.class_name!r}" for r in results],
                columns=min(len(results), 5),
                scale=max(1, scale // 2),
                title="the same images, contrast-stretched for viewing: grey = the mean image, "
                "white/black = the largest positive/negative change",
                font_size=12,
            ),
            "the same class models shown with grey at the mean image and each image's 99.5th percentile "
            "of |I| stretched to white (brighter than the mean) and black (darker): a display choice only",
        )
    )
    return figs, json.dumps(record, indent=1)


def comparison_figures(net, x, stem: str, target=None, prefix: str = "") -> list[Figure]:
    """The four-way comparison (gradient, DeconvNet rule, explicit DeconvNet,
    guided backprop) for one image x (1, C, H, W), signed and as |.| maps."""
    maps = {k: to_numpy(v)[0] for k, v in compare(net, x, target).items()}  # each (C, H, W)
    with eval_mode(net):
        scores = to_numpy(net.predict(x))[0]
    c = int(resolve_targets(target, scores[None])[0])
    scale = display_scale(*x.shape[2:])
    image = deprocess(x[0], net)
    figs, signed, heats = [], [], []
    for key, m in maps.items():
        s = upscale(signed_image(m), scale)
        figs.append(
            Figure(f"{prefix}{stem}_{key}.png", s, f"{stem}: {RULE_CAPTIONS[key]}; signed, red > 0, blue < 0")
        )
        signed.append(s)
        heats.append(upscale(heatmap(np.abs(m).max(axis=0)), scale))
    diff = np.abs(maps["deconvnet"] - maps["deconvnet_rule"]).max() / max(
        np.abs(maps["deconvnet_rule"]).max(), 1e-30
    )
    short = ["gradient (x > 0)", "DeconvNet rule (g > 0)", "explicit DeconvNet", "guided (both)"]
    blank = np.full_like(heats[0], 255)
    panel = montage(
        [upscale(_rgb(image), scale), *signed, blank, *heats],
        ["input", *[f"{t}, signed" for t in short], "", *[f"{t}, max|·|" for t in short]],
        columns=5,
        title=(
            f"{stem}: class {c} ({_class_name(net, c)!r}); "
            f"explicit DeconvNet vs rule: max rel. diff {diff:.1e}"
        ),
        font_size=12,
    )
    figs.append(
        Figure(
            f"{prefix}{stem}_compare.png",
            panel,
            f"{stem}: the four backward rules for class {c} ({_class_name(net, c)!r}); top row signed, "
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
    name = net.layers[index].name
    a = to_numpy(net.forward_to(x, index))
    used = int(a.reshape(1, a.shape[1], -1).max(axis=2).argmax()) if unit is None else int(unit)
    scale = display_scale(*x.shape[2:])
    image = deprocess(x[0], net)
    safe = "".join(ch if ch.isalnum() else "_" for ch in name)
    what = f"layer {name!r}, {'unit' if a.ndim == 2 else 'feature map'} {used} ({keep})"
    signed, heat = upscale(signed_image(r), scale), upscale(heatmap(np.abs(r).max(axis=0)), scale)
    figs = [
        Figure(
            f"{prefix}{stem}_{safe}_unit{used}.png",
            signed,
            f"{stem}: DeconvNet reconstruction from {what}; signed, red > 0, blue < 0",
        ),
        Figure(
            f"{prefix}{stem}_{safe}_unit{used}_abs.png",
            heat,
            f"{stem}: the same reconstruction as max over channels of |·|",
        ),
    ]
    panel = montage(
        [upscale(_rgb(image), scale), signed, heat],
        ["input", "reconstruction", "max|·|"],
        title=f"{stem}: DeconvNet from {what}",
        font_size=12,
    )
    figs.append(
        Figure(
            f"{prefix}{stem}_{safe}_unit{used}_panel.png",
            panel,
            f"{stem}: input and reconstruction from {what}",
        )
    )
    return figs


# ----------------------------------------------------------------------------
# the demo


def bundled_networks(weights_dir=None) -> list[tuple[Path, list[Path]]]:
    """(weights file, example images) for every ``*.npz`` in ``weights_dir``
    (default: ``$TINYCONV_WEIGHTS`` if set, else the repository's ``weights/``)."""
    from ..models.native import WEIGHTS_ENV

    weights_dir = Path(weights_dir or os.environ.get(WEIGHTS_ENV) or REPO / "weights")
    if not weights_dir.is_dir():
        raise WeightsError(f"weights folder {str(weights_dir)!r} does not exist")
    found = []
    for path in sorted(weights_dir.glob("*.npz")):
        found.append((path, example_images(path)))
    return found


def example_images(weights_path: Path) -> list[Path]:
    """Example images for a bundled network: ``examples/<folder>/*.png`` where
    the folder comes from the net's architecture (``EXAMPLE_FOLDERS``) or its
    file name (``fashion_cnn.npz`` -> ``examples/fashion``)."""
    from ..models.native import load

    try:
        arch = load(weights_path).meta.get("arch", "")
    except TinyconvError:
        return []
    names = [EXAMPLE_FOLDERS.get(arch, ""), weights_path.stem.split("_")[0]]
    for folder in names:
        if folder and (REPO / "examples" / folder).is_dir():
            return sorted((REPO / "examples" / folder).glob("*.png"))
    return []


def _example_folder(net, key: str) -> str:
    return EXAMPLE_FOLDERS.get(net.meta.get("arch", ""), key.split("_")[0])


DEMO_CLASSVIZ = {"seed": 0}  # the defaults of tinyconv.methods.classviz, seeded


def run_demo(
    outdir, device: str = "cpu", weights_dir=None, images_per_net: int = 10, progress: bool = True, log=print
) -> dict:
    """Saliency maps, class models for every class and the four-way rule
    comparison for every bundled network; writes PNGs and ``index.html``.

    Returns {"files": [...], "seconds": float}.
    """
    from .imaging import write_files

    start = time.perf_counter()
    nets = bundled_networks(weights_dir)
    if not nets:
        raise WeightsError(f"no networks (*.npz) in {str(weights_dir or REPO / 'weights')!r}")
    sections = []
    files: dict = {}
    metadata: dict = {}
    for path, images in nets:
        net = load_net(path, device)
        key = path.stem
        log(
            f"{key}: {net.num_classes} classes, input {net.input_shape}, "
            f"{len(images[:images_per_net])} example images"
        )
        prefix = f"{key}/"
        groups = []
        picked = images[:images_per_net]
        if picked:
            stems = unique_stems(picked)
            xs = [preprocess(p, net) for p in picked]
            sal = [
                f for x, s in zip(xs, stems, strict=True) for f in saliency_figures(net, x, s, prefix=prefix)
            ]
            groups.append(("Image-specific class saliency (paper §3)", SALIENCY_TEXT, sal))
        cv, record = classviz_figures(net, prefix=prefix, progress=progress, **DEMO_CLASSVIZ)
        files[f"{key}/class_models.json"] = record
        groups.append(("Class model visualisation (paper §2)", CLASSVIZ_TEXT, cv))
        if picked:
            cmp = [
                f
                for x, s in zip(xs[:4], stems[:4], strict=True)
                for f in comparison_figures(net, x, s, prefix=prefix)
            ]
            groups.append(("DeconvNet and the gradient (paper §4)", DECONV_TEXT, cmp))
        else:
            groups.append(
                (
                    "Example images",
                    "No example images were found for this network "
                    f"(looked in examples/{_example_folder(net, key)}/), "
                    "so only its class models are shown.",
                    [],
                )
            )
        for _, _, figs in groups:
            for f in figs:
                files[f.name] = f.image
                if f.metadata:
                    metadata[f.name] = f.metadata
        sections.append((key, net, groups))
    seconds = time.perf_counter() - start
    files["index.html"] = render_index(sections, seconds, device)
    written = write_files(outdir, files, metadata)
    return {"files": [str(p) for p in written], "seconds": time.perf_counter() - start}


SALIENCY_TEXT = (
    "For an image I₀ and its top class c, w = ∂S_c/∂I at I₀ (one backward pass from the unnormalised "
    "score S_c, never the softmax) tells how much each pixel would change the score. The saliency map "
    "is M_ij = max over channels of |w|. Bright pixels are those the class score is most sensitive to; "
    "the panels show the input as the network sees it, the map, the map over the image and the signed "
    "gradient (red: brightening the pixel raises the score, blue: lowers it)."
)
CLASSVIZ_TEXT = (
    "Gradient ascent on the input, weights frozen: I* = argmax_I S_c(I) − λ‖I‖², from the zero image "
    "in the normalised input space (the mean image), with the training mean added back for display. "
    "Nothing but the L2 penalty keeps the image natural, so these are what the network itself treats as "
    "the most class-like input. Every hyper-parameter and the seed are in each PNG's text chunks and "
    "in class_models.json."
)
DECONV_TEXT = (
    "Backprop and Zeiler & Fergus's DeconvNet differ only at the ReLUs: the gradient passes the "
    "signal where the layer's input was positive, 1(x > 0); the DeconvNet where the signal itself is "
    "positive, 1(g > 0); guided backprop needs both. The explicit DeconvNet (unpooling with the recorded "
    "switches, rectification, transposed and flipped filters applied by the forward convolution code) "
    "equals backward with the DeconvNet rule. Its maps have negative values because the last step, the "
    "first convolution's transpose, has filters of both signs and no ReLU after it."
)


WIDE = ("_panel.png", "_compare.png", "class_models.png", "class_models_contrast.png")


def render_index(sections, seconds: float, device: str) -> str:
    """The demo's page: every picture with its caption, grouped by network and method."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tinyconv demo</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "figure{display:inline-block;vertical-align:top;margin:6px}"
        "figure.wide{max-width:100%}figure.small{width:230px}"
        "figcaption{font-size:13px;color:#333}img{image-rendering:pixelated;max-width:100%}</style>",
        "</head><body><h1>tinyconv demo: Simonyan, Vedaldi &amp; Zisserman (2014) "
        "on the bundled networks</h1>",
        f"<p>Made by <code>tinyconv demo</code> on {html.escape(device)} in {seconds:.1f} s.</p>",
    ]
    for key, net, groups in sections:
        source = net.meta.get("source", "")
        parts.append(
            f"<h2>{html.escape(key)}</h2><p>{net.num_classes} classes, input {net.input_shape}"
            f"{', converted from ' + html.escape(str(source)) if source else ''}.</p>"
        )
        for title, text, figs in groups:
            parts.append(f"<h3>{html.escape(title)}</h3><p>{html.escape(text)}</p>")
            for f in figs:
                size = "wide" if f.name.endswith(WIDE) else "small"  # side-by-side panels large
                parts.append(
                    f"<figure class='{size}'><a href='{html.escape(f.name)}'>"
                    f"<img src='{html.escape(f.name)}' alt='{html.escape(f.caption)}'></a>"
                    f"<figcaption>{html.escape(f.caption)}"
                    "</figcaption></figure>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)
