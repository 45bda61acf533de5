"""Models and weight files.

- ``registry``: every architecture tinyconv builds (``build("vgg16")``, ``build("fashion-cnn")``), by name.
- ``native``: tinyconv's own ``.npz`` format (``save`` / ``load``).
- ``torchfile``, ``safetensors``: torch-free readers of foreign weight files.
- ``checkpoint``: a state_dict of a known architecture -> a network.
- ``fromtorch``: a live ``torch.nn`` module -> a network.
- ``onnxfile``: ONNX chain graphs -> a network (``tc.load_onnx``), with the ``onnx`` package only.
- ``zoo``: real trained networks to be had offline (``tc.zoo``: the ILSVRC VGG-16).
"""

from .registry import (
    ALL_ARCHS,
    ARCHS,
    OWN_ARCHS,
    REGISTRY,
    blueprint,
    build,
    check_arch,
    default_classes,
    input_shape,
    normalisation,
)

__all__ = [
    "ALL_ARCHS", "ARCHS", "OWN_ARCHS", "REGISTRY",
    "blueprint", "build", "check_arch", "default_classes", "input_shape", "normalisation",
]  # fmt: skip
