"""The layer classes, for ``from tinyconv.layers import Conv2d, ReLU, ...``.

They live in ``tinyconv.engine.layers``; their maths, forward and backward
side by side, in ``tinyconv.engine.functional``.
"""

from .engine.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
)

__all__ = [
    "Layer",
    "Conv2d",
    "ReLU",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Linear",
    "Flatten",
    "Dropout",
]
