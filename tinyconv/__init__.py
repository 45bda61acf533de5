"""tinyconv: a from-scratch NumPy/CuPy ConvNet engine with hand-written
backward passes, reproducing Simonyan, Vedaldi & Zisserman (2014).

The package, by role:

- ``tinyconv.engine``: backend, the layer functions and classes, ``Sequential``, training.
- ``tinyconv.methods``: the paper's methods, one module per section.
- ``tinyconv.models``: architectures and weight files (native, ``.pth``, safetensors).
- ``tinyconv.datasets``: dataset readers and the synthetic localisation scenes.
- ``tinyconv.pictures``: images, figures and the demo page.
- ``tinyconv.tools``: the benchmark, the per-layer table, the tour.
- ``tinyconv.cli``: the ``tinyconv`` command (nothing in the library imports it).
"""

from . import deconvnet, layers, models
from .engine import backend
from .engine.backend import cuda_available, device_of, get_array_module, to_device, to_numpy
from .engine.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)
from .engine.network import Sequential
from .errors import (
    ArgumentTypeError,
    DataError,
    DeviceError,
    MissingDependency,
    NumericalError,
    OptionError,
    OutputError,
    PrecisionWarning,
    RuleError,
    ShapeError,
    TargetError,
    TinyconvError,
    WeightsError,
)
from .methods.attribution import gradcam, guided_gradcam, input_x_gradient, integrated_gradients, occlusion
from .methods.classviz import class_model, class_models
from .methods.localisation.pipeline import localize
from .methods.saliency import input_gradient, saliency, smoothgrad
from .models import zoo
from .models.checkpoint import load_checkpoint
from .models.fromtorch import from_torch
from .models.native import load, save
from .models.onnxfile import load_onnx
from .pictures.imaging import preprocess

__version__ = "0.1.0"

__all__ = [
    # modules
    "backend", "deconvnet", "layers", "models", "zoo",
    # devices
    "cuda_available", "device_of", "get_array_module", "to_device", "to_numpy",
    # errors
    "ArgumentTypeError", "DataError", "DeviceError", "MissingDependency", "NumericalError", "OptionError",
    "OutputError", "PrecisionWarning", "RuleError", "ShapeError", "TargetError", "TinyconvError",
    "WeightsError",
    # the engine
    "Sequential", "Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "Flatten",
    "Dropout",
    # weights
    "load", "save", "load_checkpoint", "from_torch", "load_onnx",
    # the paper's methods
    "preprocess", "input_gradient", "saliency", "smoothgrad", "class_model", "class_models", "localize",
    # beyond the paper
    "input_x_gradient", "integrated_gradients", "gradcam", "guided_gradcam", "occlusion",
]
