"""Every architecture tinyconv builds, by name: ``build("vgg16")``,
``build("fashion-cnn")``...

- ``ARCHS``: the published PyTorch architectures whose checkpoints
  ``load_checkpoint`` / ``tinyconv convert`` read: VGG-11/13/16/19 (and their
  ``_bn`` layouts), AlexNet and the MNIST CNN of digit-recognizer-py.
- ``OWN_ARCHS``: the networks tinyconv trains itself: "fashion-cnn" (the
  bundled ``weights/fashion_cnn.npz``), "scenes-cnn" (``weights/scenes_cnn.npz``,
  the localisation benchmark's classifier) and "small-cnn" (tests, quick runs).

Every layer is named after the key prefix its parameters carry in the
PyTorch ``state_dict`` ("features.0", "classifier.6", "conv_layers.3"...), so
converting a checkpoint is a copy plus checks. The flatten between the
convolutional trunk and the classifier (a call in PyTorch's ``forward``, not
a module) is called "flatten".

The ``_bn`` variants (torchvision's ``vgg11_bn``...) put a BatchNorm2d after
each convolution; at inference that is an affine map per channel, which the
checkpoint readers fold into the convolution before it
(``tinyconv.models.checkpoint.fold_into``). The built network is therefore the
plain VGG, but its layer names keep the ``_bn`` indices (conv "features.0",
its ReLU "features.2", the next conv "features.3"...), so a name a user
reads in a PyTorch printout means the same layer here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets.mnist import FASHION_CLASSES
from ..datasets.scenes import SIZE as SCENE_SIZE
from ..engine.layers import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from ..engine.network import Sequential
from ..errors import OptionError, WeightsError

#: ImageNet normalisation used by every torchvision model, in [0, 1] pixel units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: MNIST normalisation (mean and std of the training pixels in [0, 1]).
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

# torchvision's VGG configurations: output channels of each 3x3 conv, "M" = 2x2 max-pool
_VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ],
}  # fmt: skip

ARCHS = (
    *_VGG_CFG,
    *(f"{name}_bn" for name in _VGG_CFG),
    "alexnet",
    "mnist-cnn",
)
OWN_ARCHS = ("fashion-cnn", "small-cnn", "scenes-cnn")
ALL_ARCHS = ARCHS + OWN_ARCHS

BATCHNORM = "BatchNorm2d"


def _seeds(seed):
    """An endless supply of per-layer seeds derived from one seed (None: fresh entropy)."""
    seq = np.random.SeedSequence(seed)
    while True:
        (child,) = seq.spawn(1)
        yield int(child.generate_state(1)[0])


def _conv(*args, **kwargs):
    return (Conv2d, args, kwargs)


def _linear(*args):
    return (Linear, args, {})


def _pool(*args):
    return (MaxPool2d, args, {})


def _relu():
    return (ReLU, (), {})


def _dropout(p=0.5):
    return (Dropout, (p,), {})


def _flatten():
    return (Flatten, (), {})


def _vgg_blueprint(arch, num_classes):
    batch_norm = arch.endswith("_bn")
    layout, index, channels = [], 0, 3
    for value in _VGG_CFG[arch.removesuffix("_bn")]:
        if value == "M":
            layout.append((f"features.{index}", _pool(2, 2)))
            index += 1
            continue
        layout.append((f"features.{index}", _conv(channels, value, 3, padding=1)))
        index += 1
        if batch_norm:
            layout.append((f"features.{index}", BATCHNORM))
            index += 1
        layout.append((f"features.{index}", _relu()))
        index += 1
        channels = value
    layout += [
        ("avgpool", (AdaptiveAvgPool2d, ((7, 7),), {})),
        ("flatten", (Flatten, (), {})),
        ("classifier.0", _linear(512 * 7 * 7, 4096)),
        ("classifier.1", _relu()),
        ("classifier.2", _dropout()),
        ("classifier.3", _linear(4096, 4096)),
        ("classifier.4", _relu()),
        ("classifier.5", _dropout()),
        ("classifier.6", _linear(4096, num_classes)),
    ]
    return layout


def _alexnet_blueprint(num_classes):
    return [
        ("features.0", _conv(3, 64, 11, stride=4, padding=2)),
        ("features.1", _relu()),
        ("features.2", _pool(3, 2)),
        ("features.3", _conv(64, 192, 5, padding=2)),
        ("features.4", _relu()),
        ("features.5", _pool(3, 2)),
        ("features.6", _conv(192, 384, 3, padding=1)),
        ("features.7", _relu()),
        ("features.8", _conv(384, 256, 3, padding=1)),
        ("features.9", _relu()),
        ("features.10", _conv(256, 256, 3, padding=1)),
        ("features.11", _relu()),
        ("features.12", _pool(3, 2)),
        ("avgpool", (AdaptiveAvgPool2d, ((6, 6),), {})),
        ("flatten", (Flatten, (), {})),
        ("classifier.0", _dropout()),
        ("classifier.1", _linear(256 * 6 * 6, 4096)),
        ("classifier.2", _relu()),
        ("classifier.3", _dropout()),
        ("classifier.4", _linear(4096, 4096)),
        ("classifier.5", _relu()),
        ("classifier.6", _linear(4096, num_classes)),
    ]


def _conv_stages(prefix: str, in_channels: int, widths) -> list:
    """conv(3x3, pad 1)-ReLU-maxpool(2) stages of ``widths`` output channels, named
    ``prefix``.0, .1, .2 for the first stage, .3, .4, .5 for the second..."""
    layout = []
    for stage, out in enumerate(widths):
        layout += [
            (f"{prefix}.{3 * stage}", _conv(in_channels, out, 3, padding=1)),
            (f"{prefix}.{3 * stage + 1}", _relu()),
            (f"{prefix}.{3 * stage + 2}", _pool(2, 2)),
        ]
        in_channels = out
    return layout


def _mnist_blueprint(num_classes):
    """The digit-recognizer-py CNN: three conv(3x3, pad 1)-ReLU-pool(2) stages
    (28 -> 14 -> 7 -> 3), then 1152 -> 256 -> 10; no dropout."""
    return _conv_stages("conv_layers", 1, (32, 64, 128)) + [
        ("flatten", _flatten()),
        ("fc_layers.0", _linear(128 * 3 * 3, 256)),
        ("fc_layers.1", _relu()),
        ("fc_layers.2", _linear(256, num_classes)),
    ]


def _fashion_blueprint(num_classes, hidden=256, dropout=0.3):
    """The Fashion-MNIST ConvNet, of the MNIST CNN's family: conv(1→32, 3x3, pad 1)-ReLU-pool2,
    conv(32→64)-ReLU-pool2 (28 → 14 → 7), fc 3136 → ``hidden``-ReLU-Dropout, fc → classes."""
    return _conv_stages("conv_layers", 1, (32, 64)) + [
        ("flatten", _flatten()),
        ("fc_layers.0", _linear(64 * 7 * 7, hidden)),
        ("fc_layers.1", _relu()),
        ("fc_layers.2", _dropout(dropout)),
        ("fc_layers.3", _linear(hidden, num_classes)),
    ]


def _small_blueprint(num_classes):
    """A small, fast ConvNet for tests and quick runs: conv(1→8, 3x3, pad 1)-ReLU-pool2,
    conv(8→16)-ReLU-pool2, fc 784 → 32-ReLU, fc → classes."""
    return _conv_stages("conv_layers", 1, (8, 16)) + [
        ("flatten", _flatten()),
        ("fc_layers.0", _linear(16 * 7 * 7, 32)),
        ("fc_layers.1", _relu()),
        ("fc_layers.2", _linear(32, num_classes)),
    ]


def _scenes_blueprint(num_classes, size=SCENE_SIZE):
    """The localisation benchmark's scene classifier: four blocks of conv 3x3 (pad 1)-ReLU-maxpool 2
    with 16, 32, 64, 64 channels (48 → 24 → 12 → 6 → 3), fc 64·(size/16)² → 128-ReLU-Dropout(0.3),
    fc → classes. Input (3, size, size)."""
    if int(size) % 16 or int(size) < 16:
        raise OptionError(f"scene size must be a positive multiple of 16, got {size}")
    side = int(size) // 16
    return _conv_stages("features", 3, (16, 32, 64, 64)) + [
        ("flatten", _flatten()),
        ("classifier.0", _linear(64 * side * side, 128)),
        ("classifier.1", _relu()),
        ("classifier.2", _dropout(0.3)),
        ("classifier.3", _linear(128, num_classes)),
    ]


def _digits(n):
    return [str(d) for d in range(10)] if n == 10 else None


def _fashion(n):
    return list(FASHION_CLASSES) if n == 10 else None


def _imagenet(n):
    return imagenet_classes() if n == 1000 else None


@dataclass(frozen=True)
class Architecture:
    """What the registry knows of one architecture.

    blueprint:   (num_classes, **options) -> [(layer name, (class, args, kwargs) or "BatchNorm2d")]
    input_shape: (**options) -> (C, H, W) of the training data
    num_classes: size of the standard head
    mean, std:   input normalisation of the training data (None: set by whoever trains it)
    classes:     num_classes -> the standard class names, or None for another head size
    options:     the architecture's own keyword options and their defaults
    """

    blueprint: Callable
    input_shape: Callable
    num_classes: int
    mean: tuple | None
    std: tuple | None
    classes: Callable
    options: dict = field(default_factory=dict)


def _grey28(**_):
    return (1, 28, 28)


def _rgb224(**_):
    return (3, 224, 224)


REGISTRY: dict[str, Architecture] = {
    **{
        arch: Architecture(lambda n, arch=arch: _vgg_blueprint(arch, n), _rgb224, 1000, IMAGENET_MEAN,
                           IMAGENET_STD, _imagenet)
        for arch in ARCHS if arch.startswith("vgg")
    },
    "alexnet": Architecture(_alexnet_blueprint, _rgb224, 1000, IMAGENET_MEAN, IMAGENET_STD, _imagenet),
    "mnist-cnn": Architecture(_mnist_blueprint, _grey28, 10, MNIST_MEAN, MNIST_STD, _digits),
    "fashion-cnn": Architecture(_fashion_blueprint, _grey28, 10, None, None, _fashion,
                                {"hidden": 256, "dropout": 0.3}),
    "small-cnn": Architecture(_small_blueprint, _grey28, 10, None, None, lambda n: None),
    "scenes-cnn": Architecture(_scenes_blueprint, lambda size=SCENE_SIZE: (3, int(size), int(size)), 10,
                               None, None, _fashion, {"size": SCENE_SIZE}),
}  # fmt: skip


def _options(arch: str, options: dict) -> dict:
    """``options`` checked against the architecture's own, defaults filled in."""
    known = REGISTRY[arch].options
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = ", ".join(known) if known else "no options"
        raise OptionError(f"architecture {arch!r} has no option {', '.join(unknown)} (it takes {takes})")
    return {**known, **options}


def conv2d_from(weight, bias=None, stride=1, padding=0) -> Conv2d:
    """A Conv2d holding the given arrays (weight (F, C, kh, kw), bias (F,) or
    None), built without drawing a random initialisation first."""
    return Conv2d.from_arrays(weight, bias, stride, padding)


def linear_from(weight, bias=None) -> Linear:
    """A Linear holding the given arrays (weight (out, in), bias (out,) or None)."""
    return Linear.from_arrays(weight, bias)


def spec_of(entry) -> dict:
    """The ``Layer.spec()``-style description of a blueprint entry (layer
    class, args, kwargs), made without building the layer."""
    cls, args, kwargs = entry
    return {"type": cls.__name__, **inspect.signature(cls).bind(*args, **kwargs).arguments}


def check_arch(arch: str) -> str:
    """Return the canonical architecture name or raise a WeightsError listing the known ones."""
    name = str(arch).lower().replace("_cnn", "-cnn")
    if name == "mnist":
        name = "mnist-cnn"
    if name not in REGISTRY:
        raise WeightsError(f"unknown architecture {arch!r}; known: {', '.join(ALL_ARCHS)}")
    return name


def blueprint(arch: str, num_classes: int | None = None, **options) -> list[tuple[str, object]]:
    """The PyTorch module list of ``arch`` without allocating weights:
    (name, (layer class, args, kwargs)) pairs, with the string
    ``"BatchNorm2d"`` in place of the triple where a ``_bn`` variant holds a
    batch norm. ``options``: the architecture's own (``size`` of "scenes-cnn",
    ``hidden`` and ``dropout`` of "fashion-cnn")."""
    arch = check_arch(arch)
    num_classes = default_num_classes(arch) if num_classes is None else int(num_classes)
    if num_classes < 1:
        raise OptionError(f"num_classes must be >= 1, got {num_classes}")
    return REGISTRY[arch].blueprint(num_classes, **_options(arch, options))


def layout(arch: str, num_classes: int | None = None, seed=None, **options) -> list[tuple[str, object]]:
    """``blueprint`` with the layers built: (name, tinyconv layer) pairs, and
    the string ``"BatchNorm2d"`` where a ``_bn`` variant holds a batch norm.
    Weighted layers and dropouts get seeds derived from ``seed``."""
    seeds, built = _seeds(seed), []
    for name, entry in blueprint(arch, num_classes, **options):
        if entry == BATCHNORM:
            built.append((name, BATCHNORM))
            continue
        cls, args, kwargs = entry
        if cls in (Conv2d, Linear, Dropout):
            kwargs = {**kwargs, "seed": next(seeds)}
        built.append((name, cls(*args, **kwargs)))
    return built


def state_dict_keys(arch: str, **options) -> dict[str, str]:
    """state_dict key -> module type ("Conv2d", "Linear", "BatchNorm2d") of
    ``arch``'s PyTorch model (torchvision layout), computed without weights."""
    keys = {}
    for name, entry in blueprint(arch, **options):
        if entry == BATCHNORM:
            for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                keys[f"{name}.{leaf}"] = BATCHNORM
        elif entry[0] in (Conv2d, Linear):
            keys[f"{name}.weight"] = keys[f"{name}.bias"] = entry[0].__name__
    return keys


def default_num_classes(arch: str) -> int:
    return REGISTRY[check_arch(arch)].num_classes


def input_shape(arch: str, **options) -> tuple[int, int, int]:
    """(C, H, W) the architecture was trained on."""
    arch = check_arch(arch)
    return REGISTRY[arch].input_shape(**_options(arch, options))


def normalisation(arch: str) -> tuple[tuple | None, tuple | None]:
    """(mean, std) of the input normalisation x = (pixel/255 - mean) / std;
    (None, None) for tinyconv's own networks, whose training sets them."""
    entry = REGISTRY[check_arch(arch)]
    return entry.mean, entry.std


def default_classes(arch: str, num_classes: int | None = None) -> list[str] | None:
    """Class names of the standard head: digits for the MNIST CNN, the 1000
    ImageNet classes for the torchvision models, Fashion-MNIST's for
    "fashion-cnn" and "scenes-cnn"; None for another head size."""
    arch = check_arch(arch)
    n = default_num_classes(arch) if num_classes is None else int(num_classes)
    return REGISTRY[arch].classes(n)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in torchvision's index order
    (tinyconv/data/imagenet_classes.txt; provenance in tinyconv/data/README.md)."""
    path = Path(__file__).resolve().parent / "data" / "imagenet_classes.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise WeightsError(f"the ImageNet class list is missing from the installation: {path}") from None
    names = [line for line in lines if line and not line.startswith("#")]
    if len(names) != 1000:
        raise WeightsError(f"{path} holds {len(names)} class names, expected 1000")
    return names


def build(arch: str, num_classes: int | None = None, seed=None, classes=None, mean=None, std=None,
          **options) -> Sequential:  # fmt: skip
    """A freshly initialised network of a known architecture.

    arch:        one of ``ALL_ARCHS`` ("vgg16", "vgg16_bn", "alexnet", "mnist-cnn",
                 "fashion-cnn", "scenes-cnn", "small-cnn"...).
    num_classes: size of the last layer (default 1000 for the ImageNet
                 models, 10 for the others).
    seed:        seed of the weight initialisation (PyTorch's default uniform
                 init); None draws fresh entropy.
    classes:     class names; by default the ImageNet names for a 1000-way
                 torchvision model, "0".."9" for the MNIST CNN, Fashion-MNIST's
                 for "fashion-cnn" and "scenes-cnn".
    mean, std:   input normalisation; by default that of the architecture's
                 training data (None for tinyconv's own networks).
    options:     the architecture's own: ``size`` (input side, a multiple of
                 16) of "scenes-cnn", ``hidden`` and ``dropout`` of "fashion-cnn".

    ``input_shape`` is that of the architecture's training data.
    """
    arch = check_arch(arch)
    if classes is not None:
        classes = [str(c) for c in classes]
        if num_classes is not None and int(num_classes) != len(classes):
            raise WeightsError(f"num_classes={num_classes} but {len(classes)} class names were given")
        num_classes = len(classes)
    built = layout(arch, num_classes, seed, **options)
    layers = [(name, layer) for name, layer in built if layer != BATCHNORM]
    n_out = layers[-1][1].out_features
    if classes is None:
        classes = default_classes(arch, n_out)
    default_mean, default_std = normalisation(arch)
    return Sequential(
        layers,
        classes=classes,
        mean=default_mean if mean is None else mean,
        std=default_std if std is None else std,
        input_shape=input_shape(arch, **options),
        meta={"arch": arch},
    )


__all__ = [
    "ALL_ARCHS", "ARCHS", "OWN_ARCHS", "IMAGENET_MEAN", "IMAGENET_STD", "MNIST_MEAN", "MNIST_STD",
    "Architecture", "REGISTRY", "blueprint", "build", "layout", "state_dict_keys",
]  # fmt: skip
