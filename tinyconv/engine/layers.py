"""The layer classes: each holds its parameters, their gradients (summed over
backward calls until ``zero_grad``) and the cache of its last forward pass.

The maths is not here: each ``forward`` / ``backward`` calls the pair of plain
functions in ``functional.py`` (the convolution the tiled pair in
``fastconv.py``), between two explicit guard rails of the base class:
``_check_input`` and ``_record_output`` in forward, ``check_gradient`` in
backward (backward before forward; a gradient of the wrong shape, dtype or
device).

Layouts are PyTorch's: data (N, C, H, W), conv weights (F, C, kh, kw), dense
weights (out, in). Every layer keeps the dtype it is given.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import PrecisionWarning, RuleError, ShapeError
from . import fastconv
from . import functional as F
from .backend import DeviceError, device_of, get_array_module, to_device
from .functional import RULES, out_hw, pair

__all__ = [
    "Layer", "Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "Flatten",
    "Dropout", "LAYER_TYPES", "layer_from_spec", "gradient_buffer", "RULES",
]  # fmt: skip


def gradient_buffer(value):
    """A zero gradient buffer for parameter ``value`` (same shape, dtype, device).

    On the host this is np.zeros (calloc), not zeros_like (which writes): the
    pages cost no memory until a backward pass with param_grads=True fills
    them, and saliency never does.
    """
    return get_array_module(value).zeros(value.shape, value.dtype)


class Layer:
    """Holds parameters, their gradients and the cache of the last forward.

    Subclasses set ``params`` / ``grads`` (dicts of arrays with equal keys,
    see ``set_params``) and implement ``forward``, ``backward``,
    ``output_shape`` and ``spec``.
    """

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self.cache = None
        self.name: str | None = None
        self.training = False
        self._output = None  # (shape, device) of the last forward output; None: nothing to go back through

    def set_params(self, params: dict):
        """Hold ``params`` (name -> array) with fresh zero gradients."""
        self.params = dict(params)
        self.grads = {k: gradient_buffer(v) for k, v in self.params.items()}

    # --- the guard rails: every forward and backward calls them ---

    def where(self) -> str:
        """How messages name this layer: "layer 'conv1' (Conv2d)", or "Conv2d"."""
        label = type(self).__name__
        return f"layer {self.name!r} ({label})" if self.name else label

    def _check_input(self, x, ndim: int | None, channels: int | None = None):
        """Refuse a non-array, the wrong rank or channel count, a non-float dtype."""
        if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
            raise ShapeError(f"{self.where()}: expected an array, got {type(x).__name__}")
        if ndim is not None and x.ndim != ndim:
            raise ShapeError(f"{self.where()}: expected a {ndim}-D input, got shape {tuple(x.shape)}")
        if np.dtype(x.dtype).kind != "f":
            raise ShapeError(f"{self.where()}: expected a floating-point input, got dtype {x.dtype}")
        if channels is not None and x.shape[1] != channels:
            raise ShapeError(
                f"{self.where()}: expected {channels} input channels/features, "
                f"got {x.shape[1]} (input shape {tuple(x.shape)})"
            )

    def _record_output(self, y):
        """Remember the forward output's shape and device (what ``check_gradient``
        holds a gradient to); returns ``y``."""
        self._output = (tuple(y.shape), device_of(y))
        return y

    def check_gradient(self, dy):
        """Refuse a backward pass before a forward, or a gradient ``dy`` that
        is not a float array of the forward output's shape on its device."""
        if self._output is None:
            raise ShapeError(f"call forward before backward: {self.where()} has no cached forward pass")
        shape, device = self._output
        if not hasattr(dy, "dtype") or tuple(getattr(dy, "shape", ())) != shape:
            got = tuple(dy.shape) if hasattr(dy, "shape") else type(dy).__name__
            raise ShapeError(
                f"gradient has shape {got}, expected {shape} (the forward output of {self.where()})"
            )
        if np.dtype(dy.dtype).kind != "f":
            raise ShapeError(f"{self.where()}: gradient must be floating point, got dtype {dy.dtype}")
        if device_of(dy) != device:
            raise DeviceError(f"{self.where()}: gradient on {device_of(dy)!r}, forward ran on {device!r}")

    # --- helpers of the layers with parameters ---

    def _param(self, key, x):
        """Parameter ``key`` in the dtype of ``x`` (no copy when equal)."""
        p = self.params[key]
        get_array_module(x, p)  # raises a DeviceError when they disagree
        return p if p.dtype == x.dtype else p.astype(x.dtype)

    def _accumulate(self, **grads):
        """Add each given parameter gradient to ``self.grads`` (None: skip).
        Rounding a wider gradient into a narrower buffer warns: it would
        silently spoil a float64 gradient check of a float32 network."""
        for key, grad in grads.items():
            if grad is None or key not in self.grads:
                continue
            buffer = self.grads[key]
            if np.dtype(grad.dtype).itemsize > np.dtype(buffer.dtype).itemsize:
                warnings.warn(
                    f"{self.where()}: {grad.dtype} gradients rounded to the {buffer.dtype} parameters' "
                    "grads; cast the network (net.astype(np.float64)) to keep them exact",
                    PrecisionWarning,
                    stacklevel=3,
                )
            buffer += grad.astype(buffer.dtype, copy=False)

    # --- the public interface ---

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy, param_grads: bool = True):
        raise NotImplementedError

    def infer(self, x, inplace: bool = False):
        """The forward output with nothing kept for a backward pass (what
        ``Sequential.predict`` calls). ``inplace``: ``x`` belongs to the
        caller's pipeline and may be overwritten. Layers whose forward keeps
        more than references override this."""
        y = self.forward(x)
        self.forget()
        return y

    def forget(self):
        """Drop the cache of the last forward; backward then refuses to run."""
        self.cache = None
        self._output = None

    def output_shape(self, shape: tuple) -> tuple:
        """Shape of one output sample for an input sample of ``shape``."""
        return tuple(shape)

    def flops(self, shape: tuple) -> int:
        """Multiply-adds x2 of one forward pass on one sample of ``shape``."""
        return 0

    def spec(self) -> dict:
        """Type and hyper-parameters, enough to rebuild the layer."""
        return {"type": type(self).__name__}

    def zero_grad(self):
        for g in self.grads.values():
            g[...] = 0

    def to(self, device: str):
        """Move parameters and gradients to ``device`` (in place)."""
        for d in (self.params, self.grads):
            for k in d:
                d[k] = to_device(d[k], device)
        self.forget()
        return self

    def astype(self, dtype):
        """Cast parameters and gradients to ``dtype`` (in place)."""
        for d in (self.params, self.grads):
            for k in d:
                d[k] = d[k].astype(dtype)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _uniform(rng, bound, shape):
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _window_spec(layer) -> dict:
    return {
        "kernel_size": list(layer.kernel_size),
        "stride": list(layer.stride),
        "padding": list(layer.padding),
    }


class Conv2d(Layer):
    """2-D convolution (cross-correlation), PyTorch's layout and default init.

    Runs ``fastconv``; ``tuning`` (a dict of its keyword arguments, empty: the
    defaults) is passed to it, and ``dx_form`` tells which form of dx the last
    backward took ("col2im" or "convolution", see ``fastconv.dx_form``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, seed=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        if self.in_channels < 1 or self.out_channels < 1:
            raise ShapeError(f"Conv2d channels must be >= 1, got {in_channels}, {out_channels}")
        self.kernel_size = pair(kernel_size, "Conv2d kernel_size")
        self.stride = pair(stride, "Conv2d stride")
        self.padding = pair(padding, "Conv2d padding", 0)
        self.tuning: dict = {}
        self.dx_form: str | None = None
        if seed is not False:  # False: from_arrays fills the parameters
            rng = np.random.default_rng(seed)
            bound = 1.0 / np.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
            weight = _uniform(rng, bound, (self.out_channels, self.in_channels, *self.kernel_size))
            self.set_params({"weight": weight, "bias": _uniform(rng, bound, (self.out_channels,))}
                            if bias else {"weight": weight})  # fmt: skip

    @classmethod
    def from_arrays(cls, weight, bias=None, stride=1, padding=0) -> Conv2d:
        """A Conv2d holding ``weight`` (F, C, kh, kw) and ``bias`` (F,) or None,
        as given (no copy, no random initialisation drawn first)."""
        if getattr(weight, "ndim", None) != 4:
            raise ShapeError(f"Conv2d weight must be (F, C, kh, kw), got {getattr(weight, 'shape', None)}")
        f, c, kh, kw = weight.shape
        if bias is not None and tuple(bias.shape) != (f,):
            raise ShapeError(f"Conv2d bias must have shape ({f},), got {tuple(bias.shape)}")
        layer = cls(c, f, (kh, kw), stride, padding, bias=bias is not None, seed=False)
        layer.set_params({"weight": weight} if bias is None else {"weight": weight, "bias": bias})
        return layer

    def forward(self, x):
        self._check_input(x, 4, self.in_channels)
        out_hw(x.shape, self.kernel_size, self.stride, self.padding, self.where())
        bias = self._param("bias", x) if "bias" in self.params else None
        weight = self._param("weight", x)
        y, self.cache = fastconv.conv2d_forward(x, weight, bias, self.stride, self.padding, **self.tuning)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        self.dx_form = fastconv.dx_form(self.cache, **self.tuning)
        dx, dw, db = fastconv.conv2d_backward(dy, self.cache, param_grads, **self.tuning)
        self._accumulate(weight=dw, bias=db)
        return dx

    def output_shape(self, shape):
        c, h, w = shape
        oh, ow = out_hw((1, c, h, w), self.kernel_size, self.stride, self.padding, self.where())
        return (self.out_channels, oh, ow)

    def flops(self, shape):
        _, oh, ow = self.output_shape(shape)
        kh, kw = self.kernel_size
        return 2 * self.out_channels * oh * ow * self.in_channels * kh * kw

    def spec(self):
        return {"type": "Conv2d", "in_channels": self.in_channels, "out_channels": self.out_channels,
                **_window_spec(self), "bias": "bias" in self.params}  # fmt: skip


class ReLU(Layer):
    """max(x, 0), with a switchable backward rule (see ``functional.relu_backward``)."""

    def __init__(self, rule="gradient"):
        super().__init__()
        self.rule = rule

    @property
    def rule(self):
        return self._rule

    @rule.setter
    def rule(self, value):
        if value not in RULES:
            raise RuleError(f"unknown ReLU rule {value!r}; expected one of {', '.join(RULES)}")
        self._rule = value

    def forward(self, x):
        self._check_input(x, None)
        y, self.cache = F.relu_forward(x)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        return F.relu_backward(dy, self.cache, self.rule)

    def infer(self, x, inplace=False):
        # no mask; in place over the previous layer's output when allowed
        self._check_input(x, None)
        self.forget()
        xp = get_array_module(x)
        return xp.maximum(x, 0, out=x if inplace else None)

    def spec(self):
        return {"type": "ReLU", "rule": self.rule}


class _Pool(Layer):
    """What the two fixed-window pools share: kernel, stride, padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        kind = type(self).__name__
        self.kernel_size = pair(kernel_size, f"{kind} kernel_size")
        self.stride = pair(self.kernel_size if stride is None else stride, f"{kind} stride")
        self.padding = pair(padding, f"{kind} padding", 0)

    def output_shape(self, shape):
        c, h, w = shape
        return (c, *out_hw((1, c, h, w), self.kernel_size, self.stride, self.padding, self.where()))

    def spec(self):
        return {"type": type(self).__name__, **_window_spec(self)}


class MaxPool2d(_Pool):
    """Max-pooling that keeps its ``switches`` (argmax offset per window)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ShapeError(
                f"MaxPool2d padding {self.padding} must be at most half the kernel {self.kernel_size}"
            )

    @property
    def switches(self):
        """(N, C, OH, OW) flat kernel offset of each window's max, from the last forward."""
        return None if self.cache is None else self.cache.switches

    @property
    def input_shape(self):
        return None if self.cache is None else self.cache.x_shape

    def forward(self, x):
        self._check_input(x, 4)
        y, self.cache = F.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        return F.maxpool2d_backward(dy, self.cache)

    def infer(self, x, inplace=False):
        # no switches: one pass per kernel offset instead of five
        self._check_input(x, 4)
        self.forget()
        return F.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding, switches=False)[0]


class AvgPool2d(_Pool):
    """Average pooling, zero padding counted in the mean (PyTorch's default)."""

    def forward(self, x):
        self._check_input(x, 4)
        y, self.cache = F.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        return F.avgpool2d_backward(dy, self.cache)


class AdaptiveAvgPool2d(Layer):
    """Average pooling to a fixed output size, with PyTorch's bin edges."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = pair(output_size, "AdaptiveAvgPool2d output_size")

    def forward(self, x):
        self._check_input(x, 4)
        y, self.cache = F.adaptive_avgpool2d_forward(x, self.output_size)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        return F.adaptive_avgpool2d_backward(dy, self.cache)

    def output_shape(self, shape):
        return (shape[0], *self.output_size)

    def spec(self):
        return {"type": "AdaptiveAvgPool2d", "output_size": list(self.output_size)}


class Linear(Layer):
    """Dense layer y = x Wᵀ + b, weight (out, in), PyTorch's default init."""

    def __init__(self, in_features, out_features, bias=True, seed=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ShapeError(f"Linear features must be >= 1, got {in_features}, {out_features}")
        if seed is not False:  # False: from_arrays fills the parameters
            rng = np.random.default_rng(seed)
            bound = 1.0 / np.sqrt(self.in_features)
            weight = _uniform(rng, bound, (self.out_features, self.in_features))
            self.set_params({"weight": weight, "bias": _uniform(rng, bound, (self.out_features,))}
                            if bias else {"weight": weight})  # fmt: skip

    @classmethod
    def from_arrays(cls, weight, bias=None) -> Linear:
        """A Linear holding ``weight`` (out, in) and ``bias`` (out,) or None,
        as given (no copy, no random initialisation drawn first)."""
        if getattr(weight, "ndim", None) != 2:
            raise ShapeError(f"Linear weight must be (out, in), got shape {getattr(weight, 'shape', None)}")
        out_features, in_features = weight.shape
        if bias is not None and tuple(bias.shape) != (out_features,):
            raise ShapeError(f"Linear bias must have shape ({out_features},), got {tuple(bias.shape)}")
        layer = cls(in_features, out_features, bias=bias is not None, seed=False)
        layer.set_params({"weight": weight} if bias is None else {"weight": weight, "bias": bias})
        return layer

    def forward(self, x):
        self._check_input(x, 2, self.in_features)
        bias = self._param("bias", x) if "bias" in self.params else None
        y, self.cache = F.linear_forward(x, self._param("weight", x), bias)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        dx, dw, db = F.linear_backward(dy, self.cache, param_grads)
        self._accumulate(weight=dw, bias=db)
        return dx

    def output_shape(self, shape):
        if tuple(shape) != (self.in_features,):
            raise ShapeError(
                f"{self.where()}: expects {self.in_features} features, gets shape {tuple(shape)}"
            )
        return (self.out_features,)

    def flops(self, shape):
        return 2 * self.in_features * self.out_features

    def spec(self):
        return {"type": "Linear", "in_features": self.in_features, "out_features": self.out_features,
                "bias": "bias" in self.params}  # fmt: skip


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), in PyTorch's (c, h, w) order."""

    def forward(self, x):
        self._check_input(x, None)
        y, self.cache = F.flatten_forward(x)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        return F.flatten_backward(dy, self.cache)

    def output_shape(self, shape):
        return (int(np.prod(shape)),)


class Dropout(Layer):
    """Identity at inference (cache None); in training zeroes each unit with
    probability p and scales the rest by 1/(1-p), keeping the mask for backward."""

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ShapeError(f"Dropout p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self.cache = None
            return self._record_output(x)
        y, self.cache = F.dropout_forward(x, self.p, self.rng)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        return dy if self.cache is None else F.dropout_backward(dy, self.cache)

    def spec(self):
        return {"type": "Dropout", "p": self.p}


LAYER_TYPES = {
    cls.__name__: cls
    for cls in (Conv2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Linear, Flatten, Dropout)
}


def layer_from_spec(spec: dict) -> Layer:
    """Rebuild a layer from ``Layer.spec()`` output (parameters left at init)."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in LAYER_TYPES:
        raise ShapeError(f"unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}")
    try:
        return LAYER_TYPES[kind](**spec)
    except TypeError as exc:
        raise ShapeError(f"bad hyper-parameters for {kind}: {exc}") from None
