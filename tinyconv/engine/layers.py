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

from ..errors import OptionError, PrecisionWarning, RuleError, ShapeError
from . import fastconv
from . import functional as F
from .backend import (
    BufferPool,
    DeviceError,
    batch_map,
    device_of,
    get_array_module,
    new_array,
    to_device,
)
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
        # forward outputs reused between calls of the same shape (a
        # Sequential hands all its layers one pool); ``forget`` releases it
        self.pool = BufferPool()

    # True where backward takes input_grad=False and then skips dx (Conv2d)
    skips_input_grad = False

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
        more than references override this. The output is a fresh array, not
        one from the pool: with no caches a pass holds one stage's arrays at
        a time, where a pool would keep every stage's."""
        held, self.pool = self.pool, None
        try:
            y = self.forward(x)
        finally:
            self.pool = held
        self.drop_cache()
        return y

    def drop_cache(self):
        """Drop the cache of the last forward; backward then refuses to run."""
        self.cache = None
        self._output = None

    def forget(self):
        """Drop the cache and release the buffers kept for the next call (``pool``)."""
        self.drop_cache()
        self.pool.release()

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


def _over_images(fn, x, xp):
    """fn(index) for pieces of the images of ``x``, run at once (``batch_map``).
    (One image is not split over its channels: measured, the threads then
    lost to the BLAS's threads still spinning after the convolution.)"""
    return batch_map(lambda a, b: fn(np.s_[a:b]), len(x), xp)


def _sum(arrays):
    """The sum of the pieces' parameter gradients; None when they are None (no parameter gradients)."""
    first, *rest = arrays
    return None if first is None else sum(rest, first)


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

    skips_input_grad = True

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
            shapes = param_shapes({"type": "Conv2d", "in_channels": self.in_channels, "bias": bias,
                                   "out_channels": self.out_channels, "kernel_size": self.kernel_size})
            self.set_params({key: _uniform(rng, bound, shape) for key, shape in shapes.items()})

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
        oh, ow = out_hw(x.shape, self.kernel_size, self.stride, self.padding, self.where())
        bias = self._param("bias", x) if "bias" in self.params else None
        weight = self._param("weight", x)
        xp = get_array_module(x)
        y = new_array(xp, (x.shape[0], self.out_channels, oh, ow), x.dtype, self.pool)

        def piece(a, b):  # the images a:b (see batch_map)
            return fastconv.conv2d_forward(x[a:b], weight, bias, self.stride, self.padding, out=y[a:b],
                                           layer_batch=len(x), **self.tuning)[1]  # fmt: skip

        self.cache = fastconv.with_input(batch_map(piece, len(x), xp)[0], x)
        return self._record_output(y)

    def backward(self, dy, param_grads=True, input_grad=True):
        """dx (None with ``input_grad=False``: a first layer in training needs
        none), and the parameter gradients added to ``grads``."""
        self.check_gradient(dy)
        self.dx_form = fastconv.dx_form(self.cache, **self.tuning) if input_grad else None
        xp = get_array_module(dy)
        x = self.cache.x
        dx = xp.empty(x.shape, dtype=dy.dtype) if input_grad else None

        def piece(a, b):  # the images a:b: their dx, and their share of dW and db
            cache, out = fastconv.with_input(self.cache, x[a:b]), None if dx is None else dx[a:b]
            return fastconv.conv2d_backward(dy[a:b], cache, param_grads, out, input_grad, **self.tuning)[1:]

        shares = batch_map(piece, len(dy), xp)
        if param_grads:
            self._accumulate(weight=_sum(s[0] for s in shares), bias=_sum(s[1] for s in shares))
        return dx if input_grad else None

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
        xp = get_array_module(x)
        y, mask = new_array(xp, x.shape, x.dtype, self.pool), new_array(xp, x.shape, bool, self.pool)
        _over_images(lambda s: F.relu_forward(x[s], out=(y[s], mask[s])), x, xp)
        self.cache = F.ReLUCache(mask)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        xp = get_array_module(dy)
        dx, mask = xp.empty(dy.shape, dtype=dy.dtype), self.cache.mask
        _over_images(lambda s: F.relu_backward(dy[s], F.ReLUCache(mask[s]), self.rule, out=dx[s]), dy, xp)
        return dx

    def infer(self, x, inplace=False):
        # no mask; in place over the previous layer's output when allowed
        self._check_input(x, None)
        self.drop_cache()
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
        xp = get_array_module(x)
        c, oh, ow = self.output_shape(x.shape[1:])
        y = new_array(xp, (len(x), c, oh, ow), x.dtype, self.pool)
        switches = new_array(xp, y.shape, F.switch_dtype(self.kernel_size), self.pool)

        def piece(s):  # some images, into their part of y and the switches
            F.maxpool2d_forward(x[s], self.kernel_size, self.stride, self.padding, out=(y[s], switches[s]))

        _over_images(piece, x, xp)
        self.cache = F.MaxPoolCache(switches, x.shape, self.kernel_size, self.stride, self.padding)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        xp = get_array_module(dy)
        cache = self.cache
        dx = xp.empty(cache.x_shape, dtype=dy.dtype)

        def piece(s):
            kernel, stride, padding = cache.kernel, cache.stride, cache.padding
            F.unpool(dy[s], cache.switches[s], dx[s].shape, kernel, stride, padding, out=dx[s])

        _over_images(piece, dy, xp)
        return dx

    def infer(self, x, inplace=False):
        # no switches: one pass per kernel offset instead of five
        self._check_input(x, 4)
        self.drop_cache()
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
            shapes = param_shapes({"type": "Linear", "in_features": self.in_features,
                                   "out_features": self.out_features, "bias": bias})
            self.set_params({key: _uniform(rng, bound, shape) for key, shape in shapes.items()})

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
        weight = self._param("weight", x)
        xp = get_array_module(x)
        y = new_array(xp, (len(x), self.out_features), x.dtype, self.pool)
        batch_map(lambda a, b: F.linear_forward(x[a:b], weight, bias, out=y[a:b]), len(x), xp)
        self.cache = F.LinearCache(x, weight)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        xp = get_array_module(dy)
        x, weight = self.cache
        dx = xp.empty(x.shape, dtype=dy.dtype)
        batch_map(lambda a, b: F.linear_backward(dy[a:b], F.LinearCache(x[a:b], weight), False, out=dx[a:b]),
                  len(dy), xp)  # fmt: skip
        if param_grads:  # split over the output features: no partial sums of a weight-sized dW
            dw, db = xp.empty(weight.shape, dtype=dy.dtype), xp.empty(weight.shape[:1], dtype=dy.dtype)
            batch_map(lambda a, b: F.linear_param_grads(dy[:, a:b], x, out=(dw[a:b], db[a:b])),
                      self.out_features, xp)  # fmt: skip
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
        raise OptionError(f"unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}")
    try:
        return LAYER_TYPES[kind](**spec)
    except TypeError as exc:
        raise OptionError(f"bad hyper-parameters for {kind}: {exc}") from None


# ----------------------------------------------------------------------------
# layers the ONNX importer needs (tinyconv.models.onnxfile): a per-channel
# affine map, explicit (possibly asymmetric) padding, and average pooling that
# leaves the padding out of the mean. Self-contained: pure pair, then class.


def channel_affine_forward(x, scale, shift):
    """y = scale_c · x + shift_c per channel (axis 1).

    x: (N, C) or (N, C, H, W); scale, shift: (C,). An inference-time
    BatchNorm, or the Mul / Add by per-channel constants of an exported graph.
    """
    view = (1, -1) + (1,) * (x.ndim - 2)
    return x * scale.reshape(view) + shift.reshape(view), (x, scale)


def channel_affine_backward(dy, cache, param_grads=True):
    """dx = scale_c · dy;  dscale_c = Σ dy·x,  dshift_c = Σ dy over all but axis 1."""
    x, scale = cache
    view = (1, -1) + (1,) * (x.ndim - 2)
    dx = dy * scale.reshape(view)
    if not param_grads:
        return dx, None, None
    axes = (0,) + tuple(range(2, x.ndim))
    return dx, (dy * x).sum(axis=axes), dy.sum(axis=axes)


def _pads4(pads, what):
    try:
        top, bottom, left, right = (int(v) for v in pads)
    except (TypeError, ValueError):
        raise ShapeError(f"{what} must be four ints (top, bottom, left, right), got {pads!r}") from None
    if min(top, bottom, left, right) < 0:
        raise ShapeError(f"{what} must be >= 0, got {pads!r}")
    return top, bottom, left, right


def ceil_extra(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int) -> int:
    """Extra end padding that makes a floor-mode window grid equal the ceil-mode
    one of ONNX / PyTorch: out = ceil((size + pads − k) / s) + 1, minus one when
    the last window would start in the end padding."""
    total = size + pad_begin + pad_end
    out = -(-(total - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return max(0, (out - 1) * stride + kernel - total)


def pad2d_forward(x, pads, value=0.0):
    """x surrounded by ``value``: pads = (top, bottom, left, right).
    (N, C, H, W) -> (N, C, H+top+bottom, W+left+right)."""
    xp = get_array_module(x)
    top, bottom, left, right = pads
    n, c, h, w = x.shape
    y = xp.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    y[:, :, top : top + h, left : left + w] = x
    return y, (x.shape, pads)


def pad2d_backward(dy, cache):
    """dx = the centre of dy (the padding receives no input)."""
    (n, c, h, w), (top, _, left, _) = cache
    return dy[:, :, top : top + h, left : left + w]


class Pad2d(Layer):
    """Constant padding of H and W by (top, bottom, left, right), e.g. the
    asymmetric pads of an ONNX Conv (value 0) or MaxPool (value -inf).

    ceil_window: optional (kh, kw, sh, sw) of the pool that follows; the
    bottom/right padding then also grows by ``ceil_extra`` so that the pool's
    floor-mode grid is ONNX's ``ceil_mode=1`` grid, for any input size.
    """

    def __init__(self, pads, value=0.0, ceil_window=None):
        super().__init__()
        self.pads = _pads4(pads, "Pad2d pads")
        self.value = float(value)
        if ceil_window is not None:
            kh, kw, sh, sw = (int(v) for v in ceil_window)
            if min(kh, kw, sh, sw) < 1:
                raise ShapeError(f"Pad2d ceil_window must be positive, got {ceil_window!r}")
            ceil_window = (kh, kw, sh, sw)
        self.ceil_window = ceil_window

    def _pads_for(self, h, w):
        top, bottom, left, right = self.pads
        if self.ceil_window is not None:
            kh, kw, sh, sw = self.ceil_window
            bottom += ceil_extra(h, kh, sh, top, bottom)
            right += ceil_extra(w, kw, sw, left, right)
        return top, bottom, left, right

    def forward(self, x):
        self._check_input(x, 4)
        y, self.cache = pad2d_forward(x, self._pads_for(x.shape[2], x.shape[3]), self.value)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        return pad2d_backward(dy, self.cache)

    def output_shape(self, shape):
        c, h, w = shape
        top, bottom, left, right = self._pads_for(h, w)
        return (c, h + top + bottom, w + left + right)

    def spec(self):
        spec = {"type": "Pad2d", "pads": list(self.pads), "value": self.value}
        if self.ceil_window is not None:
            spec["ceil_window"] = list(self.ceil_window)
        return spec


class ChannelAffine(Layer):
    """y = scale_c · x + shift_c per channel (inference-time BatchNorm, or an
    exported graph's Mul / Add by per-channel constants that could not be
    folded into a neighbouring conv or dense layer)."""

    def __init__(self, channels, scale=None, shift=None):
        super().__init__()
        self.channels = int(channels)
        if self.channels < 1:
            raise ShapeError(f"ChannelAffine channels must be >= 1, got {channels}")
        ones, zeros = np.ones(self.channels, np.float32), np.zeros(self.channels, np.float32)
        self.params["scale"] = ones if scale is None else np.asarray(scale).reshape(self.channels).copy()
        self.params["shift"] = zeros if shift is None else np.asarray(shift).reshape(self.channels).copy()
        self.grads = {k: np.zeros(v.shape, v.dtype) for k, v in self.params.items()}

    def forward(self, x):
        self._check_input(x, None, self.channels)
        if x.ndim not in (2, 4):
            raise ShapeError(f"{self._where()}: expected (N, C) or (N, C, H, W), got {tuple(x.shape)}")
        y, self.cache = channel_affine_forward(x, self._param("scale", x), self._param("shift", x))
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        dx, dscale, dshift = channel_affine_backward(dy, self.cache, param_grads)
        self._accumulate(scale=dscale, shift=dshift)
        return dx

    def output_shape(self, shape):
        if shape[0] != self.channels:
            raise ShapeError(f"{self._where()}: expects {self.channels} channels, gets shape {tuple(shape)}")
        return tuple(shape)

    def flops(self, shape):
        return 2 * int(np.prod(shape))

    def spec(self):
        return {"type": "ChannelAffine", "channels": self.channels}


def avgpool2d_exclude_forward(x, kernel, stride, pads):
    """Mean over the part of each window inside the image (ONNX's default
    ``count_include_pad=0``); pads = (top, bottom, left, right).
    Returns y: (N, C, OH, OW) and the per-window count (OH, OW)."""
    (kh, kw), (sh, sw) = kernel, stride
    xp = get_array_module(x)
    xpad, _ = pad2d_forward(x, pads)
    ones, _ = pad2d_forward(xp.ones((1, 1) + x.shape[2:], dtype=x.dtype), pads)
    oh, ow = (xpad.shape[2] - kh) // sh + 1, (xpad.shape[3] - kw) // sw + 1
    y = xp.zeros((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
    count = xp.zeros((1, 1, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += xpad[F.window(i, j, oh, ow, sh, sw)]
            count += ones[F.window(i, j, oh, ow, sh, sw)]
    return y / count, (x.shape, count)


def avgpool2d_exclude_backward(dy, cache, kernel, stride, pads):
    """Each output gradient spread evenly over the in-image part of its window."""
    (kh, kw), (sh, sw) = kernel, stride
    xp = get_array_module(dy)
    (n, c, h, w), count = cache
    top, bottom, left, right = pads
    oh, ow = dy.shape[2:]
    out = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=dy.dtype)
    share = dy / count
    for i in range(kh):
        for j in range(kw):
            out[F.window(i, j, oh, ow, sh, sw)] += share
    return pad2d_backward(out, ((n, c, h, w), pads))


class AvgPool2dExcludePad(Layer):
    """Average pooling whose mean leaves the zero padding out (ONNX's
    AveragePool default, PyTorch's ``count_include_pad=False``); the pads may
    be asymmetric: (top, bottom, left, right)."""

    def __init__(self, kernel_size, stride=None, pads=(0, 0, 0, 0)):
        super().__init__()
        self.kernel_size = pair(kernel_size, "AvgPool2dExcludePad kernel_size")
        self.stride = pair(self.kernel_size if stride is None else stride, "AvgPool2dExcludePad stride")
        self.pads = _pads4(pads, "AvgPool2dExcludePad pads")
        (kh, kw), (top, bottom, left, right) = self.kernel_size, self.pads
        if max(top, bottom) >= kh or max(left, right) >= kw:
            raise ShapeError(f"AvgPool2dExcludePad pads {self.pads} must be smaller than the kernel")

    def forward(self, x):
        self._check_input(x, 4)
        self.output_shape(x.shape[1:])
        y, self.cache = avgpool2d_exclude_forward(x, self.kernel_size, self.stride, self.pads)
        return self._record_output(y)

    def backward(self, dy, param_grads=True):
        self.check_gradient(dy)
        return avgpool2d_exclude_backward(dy, self.cache, self.kernel_size, self.stride, self.pads)

    def output_shape(self, shape):
        c, h, w = shape
        (kh, kw), (sh, sw), (top, bottom, left, right) = self.kernel_size, self.stride, self.pads
        if h + top + bottom < kh or w + left + right < kw:
            raise ShapeError(f"{self._where()}: input {h}x{w} (pads {self.pads}) is smaller than the kernel")
        return (c, (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1)

    def spec(self):
        return {
            "type": "AvgPool2dExcludePad",
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "pads": list(self.pads),
        }


LAYER_TYPES.update({cls.__name__: cls for cls in (Pad2d, ChannelAffine, AvgPool2dExcludePad)})


def param_shapes(spec: dict) -> dict:
    """The parameter shapes of the layer ``spec`` (``Layer.spec()``) describes,
    computed without building it (a size read from a file allocates nothing):
    Conv2d weight (F, C, kh, kw) and bias (F,), Linear weight (out, in) and
    bias (out,), no bias where ``spec["bias"]`` is false; {} for layers
    without parameters. Raises KeyError / TypeError / ValueError on a
    malformed spec."""
    kind = spec.get("type")
    if kind == "Conv2d":
        out = int(spec["out_channels"])
        weight = (out, int(spec["in_channels"]), *pair(spec["kernel_size"], "Conv2d kernel_size"))
    elif kind == "Linear":
        out = int(spec["out_features"])
        weight = (out, int(spec["in_features"]))
    else:
        return {}
    return {"weight": weight, "bias": (out,)} if spec.get("bias", True) else {"weight": weight}
