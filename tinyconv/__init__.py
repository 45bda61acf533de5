"""tinyconv: a from-scratch NumPy/CuPy ConvNet engine with hand-written
backward passes, reproducing Simonyan, Vedaldi & Zisserman (2014)."""

from . import backend, deconvnet, io, layers, models
from .backend import cuda_available, device_of, get_array_module, to_device, to_numpy
from .checkpoint import load_checkpoint
from .classviz import class_model, class_models
from .convert import from_torch
from .errors import DataError, RuleError, ShapeError, TargetError, TinyconvError, WeightsError
from .imaging import preprocess
from .io import load
from .layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)
from .localize import localize
from .network import Sequential
from .saliency import input_gradient, saliency, smoothgrad

__version__ = "0.1.0"

__all__ = [
    # modules
    "backend", "deconvnet", "io", "layers", "models",
    # devices
    "cuda_available", "device_of", "get_array_module", "to_device", "to_numpy",
    # errors
    "DataError", "RuleError", "ShapeError", "TargetError", "TinyconvError", "WeightsError",
    # the engine
    "Sequential", "Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "Flatten",
    "Dropout",
    # weights
    "load", "load_checkpoint", "from_torch",
    # the paper's methods
    "preprocess", "input_gradient", "saliency", "smoothgrad", "class_model", "class_models", "localize",
]
