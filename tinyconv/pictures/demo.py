"""The demo: the paper's methods on every bundled network, written as PNGs
and one ``index.html`` page.

``run_demo`` loads every ``weights/*.npz`` with its example images
(``examples/<folder>/``) and builds the page as a list of ``Section``s
(``tinyconv.pictures.page``): per network, one row per image (input,
saliency, overlay, the signed maps of the three ReLU rules) and one grid of
class models. Other code adds sections by passing ``extra_sections``. A
manifest (``demo-files.json``) lists what the demo wrote, so that a re-run
into the same folder removes its own stale pictures and nothing else.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..engine.backend import DeviceError, to_numpy
from ..errors import TargetError, TinyconvError, WeightsError
from ..methods import attribution, sanity
from ..methods.classviz import class_models
from ..methods.saliency import resolve_targets
from ..models.native import WEIGHTS_ENV, bundled, load
from .beyond import SHORT, SIGNED, map_tile
from .figures import Figure, class_model_figures, class_models_record, class_name, compute_rules
from .imaging import (
    as_rgb,
    deprocess,
    display_scale,
    heatmap,
    map_top,
    overlay,
    preprocess,
    safe_name,
    signed_channel,
    signed_image,
    unique_stems,
    upscale,
    write_files,
)
from .page import Cell, Legend, Row, Section, page_files, page_metadata, render_page

__all__ = [
    "load_net",
    "parse_target",
    "bundled_networks",
    "example_images",
    "image_row",
    "network_sections",
    "run_demo",
    "MANIFEST",
]

REPO = Path(__file__).resolve().parents[2]

# where the demo finds example images for a bundled network (by its meta["arch"])
EXAMPLE_FOLDERS = {"mnist-cnn": "digits", "fashion-cnn": "fashion", "scenes-cnn": "scenes"}

MANIFEST = "demo-files.json"  # what the demo wrote, so that a re-run removes only its own files
ROW_WIDTH = 1330  # CSS pixels a row of pictures may take on the page
RULES = (
    ("gradient", "gradient rule: ∂S_c/∂I"),
    ("deconvnet_rule", "DeconvNet rule"),
    ("guided", "guided backprop"),
)


# ----------------------------------------------------------------------------
# loading and arguments


def load_net(weights=None, device: str = "cpu"):
    """The network in ``weights`` (default: the bundled MNIST CNN) on ``device``."""
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


# ----------------------------------------------------------------------------
# the networks and their example images


def bundled_networks(weights_dir=None) -> list[tuple[Path, list[Path]]]:
    """(weights file, example images) for every ``*.npz`` in ``weights_dir``
    (default: ``$TINYCONV_WEIGHTS`` if set, else the repository's ``weights/``)."""
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
    try:
        arch = load(weights_path).meta.get("arch", "")
    except TinyconvError:
        return []
    names = [EXAMPLE_FOLDERS.get(arch, ""), weights_path.stem.split("_")[0]]
    for folder in names:
        if folder and folder == safe_name(folder, keep="-_") and (REPO / "examples" / folder).is_dir():
            return sorted((REPO / "examples" / folder).glob("*.png"))
    return []


def _example_folder(net, key: str) -> str:
    return EXAMPLE_FOLDERS.get(net.meta.get("arch", ""), key.split("_")[0])


# ----------------------------------------------------------------------------
# the page's rows


def _input_hw(net, paths) -> tuple[int, int]:
    """(H, W) of what the network sees: its input_shape, else the first image preprocessed."""
    return tuple(net.input_shape[1:]) if net.input_shape else tuple(preprocess(paths[0], net).shape[2:])


def shown_scale(size: int, pixels: int, limit: int) -> int:
    """Whole CSS pixels per network pixel when ``pixels`` network pixels must fit
    in ``limit`` CSS pixels (at most the PNG's own enlargement of ``size``)."""
    return max(1, min(display_scale(size, size), limit // pixels))


def _strip(maps, scale: int) -> np.ndarray:
    """Signed maps (each (C, H, W)) side by side, one network pixel of white between them."""
    tiles = [upscale(signed_image(m), scale) for m in maps]
    gap = np.full((tiles[0].shape[0], scale, 3), 255, np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)


def _signed_legend(m, meaning: str) -> Legend:
    top = map_top(signed_channel(m))
    return Legend("bluered", f"−{top:.2g}", f"+{top:.2g}", meaning, middle="0")


def image_row(net, x, stem: str, prefix: str, shown: int, labels: bool = True) -> Row:
    """One image's row: input, saliency, overlay, and the signed maps of the three
    ReLU rules as one strip ``<stem>_compare.png``; each network pixel ``shown``
    CSS pixels wide."""
    r = compute_rules(net, x)  # the one crossing of this row's arrays to the host
    h, w = r.image.shape[:2]
    scale, width = display_scale(h, w), w * shown
    heat, m = heatmap(r.saliency), r.saliency
    c, top = r.target, map_top(m)
    figures = {
        "input": Figure(
            f"{prefix}{stem}_input.png", upscale(as_rgb(r.image), scale), f"{stem}: the network's view"
        ),
        "saliency": Figure(
            f"{prefix}{stem}_saliency.png", upscale(heat, scale), f"{stem}: M = max_ch |∂S_c/∂I|"
        ),
        "overlay": Figure(
            f"{prefix}{stem}_overlay.png",
            upscale(overlay(r.image, heat), scale),
            f"{stem}: the saliency map blended (α = 0.5) over the greyscale input",
        ),
        "rules": Figure(
            f"{prefix}{stem}_compare.png",
            _strip([r.maps[k] for k, _ in RULES], scale),
            f"{stem}: the signed maps of the gradient, DeconvNet and guided rules",
        ),
    }
    rules = Cell(
        figures["rules"],
        [f"{text}, signed" for _, text in RULES],
        3 * width + 2 * shown,
        legends=[_signed_legend(r.maps[k], "red > 0, white 0, blue < 0") for k, _ in RULES],
        gap=shown,
    )
    cells = [
        Cell(figures["input"], "input (the network's view)", width),
        Cell(
            figures["saliency"],
            "saliency M = max_ch |∂S_c/∂I|",
            width,
            Legend("fire", "0", f"{top:.2g}", "|∂S_c/∂I|; the top 0.5% saturate"),
        ),
        Cell(figures["overlay"], "saliency over the grey input", width),
        rules,
    ]
    s = r.scores
    caption = (
        f"{stem}: class {c} {class_name(net, c)!r}, S_c = {s[c]:.2f} (the top class); "
        f"explicit DeconvNet = DeconvNet rule to {r.explicit_difference:.0e} (max relative difference)."
    )
    return Row(cells, caption, labels=labels)


def _class_label(r) -> str:
    name = "" if r.class_name == str(r.target) else f" {r.class_name}"
    return f"{r.target}{name}: S_c {r.score:.1f}"


def class_model_section(key: str, net, progress: bool = True) -> tuple[Section, str]:
    """The grid of class models of every class (the paper's §2): the images with
    the mean added back, and below them the same images contrast-stretched.
    Returns (section, the JSON record)."""
    results = class_models(net, progress=progress, seed=0)
    figs = class_model_figures(net, results, prefix=f"{key}/", contrast=True)
    h, w = net.input_shape[1:]
    shown = shown_scale(w, w * min(len(results), 10), ROW_WIDTH - 8 * 9)
    plain = [Cell(f, _class_label(r), w * shown) for f, r in zip(figs[0::2], results, strict=True)]
    stretched = [Cell(f, "", w * shown) for f in figs[1::2]]
    p = results[0].params
    text = (
        "Gradient ascent on the input, weights frozen: I* = argmax_I S_c(I) − λ‖I‖², from the zero image in "
        "the normalised input space (the mean image), the training mean added back for display "
        f"({p['objective']} objective, {p['steps']} steps, lr {p['lr']}, λ {p['l2']}, seed {p['seed']}; "
        f"every hyper-parameter is in each PNG's text chunks and in {key}/class_models.json). "
        "Nothing but the L2 penalty keeps the images natural: they show what the network itself treats "
        f"as most class-like. Each network pixel is drawn as a {shown}×{shown} block."
    )
    pixels = Legend("grey", "0", "255", "pixel value") if net.input_shape[0] == 1 else None
    rows = [
        Row(plain, "Top: the class models as pixels, labelled with the class and its final score S_c.", True,
            legend=pixels),
        Row(stretched, "Below: the same images contrast-stretched for viewing (a display choice only).", True,
            legend=Legend("grey", "darker", "brighter", "than the mean image", middle="mean"), labels=False),
    ]  # fmt: skip
    return Section(f"{key}: class models (paper §2)", text, rows), class_models_record(results)


SALIENCY_TEXT = (
    "For an image I₀ and its top class c, w = ∂S_c/∂I at I₀ (one backward pass from the unnormalised score "
    "S_c, never the softmax) says how much each pixel would change the score; the saliency map is "
    "M_ij = max over channels of |w|. Each row shows the input as the network sees it, M (fire colour map), "
    "M over the greyscale input, and the signed maps of the three ReLU backward rules: the gradient rule, "
    "whose map is w itself (ReLU passes the signal where its input x > 0), Zeiler & Fergus's DeconvNet "
    "rule (where the signal g > 0) and guided backprop (both). Red: raising the pixel raises S_c, blue: "
    "lowers it. Each map is scaled by its own 99.5th percentile of |·|, the value at the end of its colour "
    "bar. The DeconvNet maps are negative in places because the last step, the first convolution's "
    "transpose, has filters of both signs and no ReLU after it."
)


def saliency_section(key: str, net, paths) -> Section:
    """One row per example image (``image_row``), or a note when there are none."""
    if not paths:
        folder = EXAMPLE_FOLDERS.get(net.meta.get("arch", ""), key.split("_")[0])
        text = (
            f"No example images were found for this network (looked in examples/{folder}/), "
            "so only its class models are shown."
        )
        return Section(f"{key}: example images", text)
    h, w = _input_hw(net, paths)
    shown = shown_scale(w, 6 * w + 2, ROW_WIDTH - 3 * 8)
    rows = [
        image_row(net, preprocess(p, net), stem, f"{key}/", shown, labels=k == 0)
        for k, (p, stem) in enumerate(zip(paths, unique_stems(paths), strict=True))
    ]
    text = (
        f"{SALIENCY_TEXT} Each network pixel is drawn as a {shown}×{shown} block (nearest neighbour, no "
        f"smoothing): the {h}×{w} input is shown {h * shown}×{w * shown} px; click a picture for its PNG."
    )
    return Section(f"{key}: image-specific class saliency and the backward rules (paper §3, §4)", text, rows)


def network_sections(path: Path, images, device: str = "cpu", progress: bool = True, log=print):
    """The sections of one bundled network and its extra files: (sections, {name: text})."""
    net = load_net(path, device)
    key = safe_name(path.stem, keep="-_.")  # a file named "...npz" must not name the parent folder
    log(f"{key}: {net.num_classes} classes, input {net.input_shape}, {len(images)} example images")
    classes, record = class_model_section(key, net, progress)
    source = net.meta.get("source", "")
    sal = saliency_section(key, net, images)
    about = f"{path.name}: {net.num_classes} classes, input {net.input_shape}"
    sal.text = f"{about}{', converted from ' + str(source) if source else ''}. {sal.text}"
    return [sal, classes], {f"{key}/class_models.json": record}


BEYOND_TEXT = (
    "Beyond the paper: the attribution methods that other libraries (Captum, pytorch-grad-cam, "
    "tf-keras-vis) offer, each a few lines on the same engine (tinyconv.methods.attribution), for the "
    "image's top class c. Gradient × input x ⊙ ∂S_c/∂x and integrated gradients (16 Gauss–Legendre nodes "
    "from the zero input, whose attributions sum to S_c(x) − S_c(0)) are summed over channels; Grad-CAM "
    "weights the last convolution's maps by their mean gradient (Selvaraju et al. 2017), upsampled "
    "bilinearly; guided Grad-CAM multiplies it with guided backprop; occlusion is the drop of S_c when a "
    "window of the input is set to 0 (Zeiler & Fergus), averaged over the windows covering each pixel; "
    "SmoothGrad averages the saliency of 10 noisy copies. Signed maps are blue < 0 < red, the others black "
    "to white; each is scaled by its own 99.5th percentile of |·|. Which of them depend on the network at "
    "all is measured in docs/beyond.md (tinyconv sanity): guided backprop barely changes when the top "
    "layer is randomised."
)


def beyond_row(net, x, stem: str, prefix: str, shown: int, labels: bool = True) -> Row:
    """One image's row of the beyond-the-paper section: the input, then each
    method of ``attribution.METHODS`` but the three ReLU rules shown above."""
    scores = to_numpy(attribution._eval_scores(net, x))
    c = int(resolve_targets(None, scores)[0])
    methods = [m for m in attribution.METHODS if m not in ("saliency", "guided", "deconvnet")]
    maps = sanity.maps(net, x, methods, [c])  # method -> (1, H, W), the quick options of the checks
    image = as_rgb(deprocess(x[0], net))  # what the network sees, uint8 (H, W, C)
    h, w = image.shape[:2]
    scale = display_scale(h, w)
    cells = [Cell(Figure(f"{prefix}{stem}_input.png", upscale(image, scale), f"{stem}: the input"),
                  "input", w * shown)]  # fmt: skip
    for m in methods:
        a = maps[m][0]
        top = map_top(a)
        legend = (Legend("bluered", f"−{top:.2g}", f"+{top:.2g}", "", middle="0") if m in SIGNED
                  else Legend("fire", "0", f"{top:.2g}", ""))  # fmt: skip
        figure = Figure(f"{prefix}{stem}_{m}.png", upscale(map_tile(a, m), scale),
                        f"{stem}: {attribution.METHODS[m]} (beyond the paper)")  # fmt: skip
        cells.append(Cell(figure, SHORT[m], w * shown, legend))
    s = float(scores[0, c])
    caption = f"{stem}: class {c} {class_name(net, c)!r}, S_c = {s:.2f} (the top class)."
    return Row(cells, caption, labels=labels)


def beyond_section(nets, images_per_net: int = 2, device: str = "cpu", log=print) -> Section:
    """Every other attribution method on the first example images of each network."""
    rows = []
    for path, images in nets:
        paths = images[:images_per_net]
        if not paths:
            continue
        net = load_net(path, device)
        key = safe_name(path.stem, keep="-_.")
        log(f"{key}: the methods beyond the paper on {len(paths)} images")
        w = _input_hw(net, paths)[1]
        shown = shown_scale(w, 7 * w, ROW_WIDTH - 7 * 12)
        for p, stem in zip(paths, unique_stems(paths), strict=True):
            x = preprocess(p, net)
            rows.append(beyond_row(net, x, f"{key}_{stem}", f"{key}/beyond/", shown, labels=not rows))
    return Section("Beyond the paper: six more attribution methods", BEYOND_TEXT, rows)


def run_demo(
    outdir,
    device: str = "cpu",
    weights_dir=None,
    images_per_net: int = 10,
    progress: bool = True,
    log=print,
    extra_sections=(),
    beyond: bool = True,
) -> dict:
    """Saliency maps, the three backward rules and class models for every class
    of every bundled network; writes PNGs and ``index.html``.

    extra_sections: callables ``f(device=..., progress=..., log=...)`` returning
    a list of ``Section``s, added to the page after the networks.
    Returns {"files": [...], "seconds": float}.
    """
    start = time.perf_counter()
    nets = bundled_networks(weights_dir)
    if not nets:
        raise WeightsError(f"no networks (*.npz) in {str(weights_dir or REPO / 'weights')!r}")
    sections, files = [], {}
    for path, images in nets:
        more, extra = network_sections(path, images[:images_per_net], device, progress, log)
        sections += more
        files.update(extra)
    if beyond:
        sections.append(beyond_section(nets, 2, device, log))
    for make in extra_sections:
        sections += make(device=device, progress=progress, log=log)
    files.update(page_files(sections))
    seconds = time.perf_counter() - start
    intro = (
        f"Made by tinyconv demo on {device} in {seconds:.1f} s: the paper's methods on every network in "
        "weights/, with the example images of examples/. Every picture links to its PNG file."
    )
    files["index.html"] = render_page(
        "tinyconv demo: Simonyan, Vedaldi & Zisserman (2014) on the bundled networks", intro, sections
    )
    return {
        "files": [str(p) for p in _write(outdir, files, page_metadata(sections))],
        "seconds": time.perf_counter() - start,
    }


def _write(outdir, files: dict, metadata: dict) -> list:
    """Write the demo's files and its manifest, then remove the files that the
    previous run's manifest lists and this run did not write (only those)."""
    outdir = Path(outdir)
    old = _manifest(outdir)
    files = {**files, MANIFEST: json.dumps({"written_by": "tinyconv demo", "files": sorted(files)}, indent=1)}
    written = write_files(outdir, files, metadata)
    root = outdir.resolve()
    for name in sorted(set(old) - set(files)):
        path = outdir / name
        if ".." in Path(name).parts or Path(name).is_absolute() or path.is_symlink() or not path.is_file():
            continue
        if root not in path.resolve().parents:
            continue
        path.unlink()
        for parent in path.parents:  # folders the demo made, once empty
            if parent == outdir or not parent.is_relative_to(outdir):
                break
            try:
                parent.rmdir()
            except OSError:
                break
    return written


def _manifest(outdir: Path) -> list:
    try:
        record = json.loads((outdir / MANIFEST).read_text(encoding="utf-8"))
        names = record["files"] if record.get("written_by") == "tinyconv demo" else []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str)]
