"""``Sequential``: a chain of layers, its forward and backward passes.

The backward pass is the chain rule applied layer by layer in reverse; the
only switch is the ReLU rule, so the same loop computes gradients, DeconvNet
reconstructions and guided backprop (see ``relu_rule``).

Taps (the activation and the gradient at inner layers, no hooks):
``forward(x, keep=True)`` stores each layer's output A in
``activations[name]``; ``backward(seed, keep=True)`` stores ∂L/∂A, the
gradient with respect to each layer's output, in ``gradients[name]`` (and
the input gradient under "input"). One forward and one backward pass give
both at every layer, e.g. Grad-CAM's A^k and ∂S_c/∂A^k
(``tinyconv.methods.attribution.gradcam``). The dicts are replaced on the
next pass; a layer's name is its key.
"""

from __future__ import annotations

import contextlib
from collections import namedtuple

import numpy as np

from ..errors import ArgumentTypeError, OptionError, RuleError, ShapeError, TinyconvError
from .backend import BufferPool, device_of, get_array_module
from .functional import RULES
from .layers import Layer, ReLU

Parameter = namedtuple("Parameter", "name value grad")


def _finite(x) -> bool:
    xp = get_array_module(x)
    return bool(xp.isfinite(x).all())


class Sequential:
    """A feed-forward network whose output is the unnormalised class scores S_c.

    layers:      a list of layers, a list of (name, layer) pairs, or a dict;
                 unnamed layers are called "0", "1", ... as in PyTorch.
    classes:     class names, one per output score.
    mean, std:   per-channel input normalisation, in [0, 1] pixel units
                 (x = (pixel/255 - mean) / std), used by preprocess and to
                 turn optimised inputs back into images.
    input_shape: (C, H, W) the network was trained on.
    meta:        free-form provenance (source file, licence, training record).
    """

    def __init__(self, layers, classes=None, mean=None, std=None, input_shape=None, meta=None):
        items = layers.items() if isinstance(layers, dict) else layers
        self.layers: list[Layer] = []
        for i, item in enumerate(items):
            name, layer = item if isinstance(item, tuple) else (str(i), item)
            if not isinstance(layer, Layer):
                kind = type(layer).__name__
                raise ArgumentTypeError(f"item {i} of layers is a {kind}, not a tinyconv layer")
            layer.name = str(name)
            self.layers.append(layer)
        # one pool for all layers' outputs: a buffer an old cache held serves
        # the next pass's layer that asks for that shape
        self.pool = BufferPool()
        for layer in self.layers:
            layer.pool = self.pool
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise OptionError(f"layer names must be unique, got {names}")
        self.classes = None if classes is None else [str(c) for c in classes]
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        channels = self.input_shape[0] if self.input_shape else None
        self.mean = self._per_channel(mean, "mean", channels)
        self.std = self._per_channel(std, "std", channels)
        if self.std is not None and min(self.std) <= 0:
            raise OptionError(f"std must be positive, got {self.std}")
        self.meta = dict(meta or {})
        self.activations: dict = {}
        self.gradients: dict = {}
        if self.input_shape is not None:
            out = self.output_shapes(self.input_shape)[-1]
            if self.classes is not None and out != (len(self.classes),):
                raise ShapeError(
                    f"network outputs shape {out} but {len(self.classes)} class names were given"
                )

    @staticmethod
    def _per_channel(value, what, channels):
        if value is None:
            return None
        values = [float(v) for v in np.atleast_1d(np.asarray(value, dtype=float))]
        if channels is not None and len(values) == 1:
            values = values * channels
        if channels is not None and len(values) != channels:
            raise ShapeError(f"{what} has {len(values)} values for {channels} input channels")
        return tuple(values)

    # --- containers ---

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key):
        return self.layers[self.index(key)]

    def index(self, key) -> int:
        """Position of a layer given its position (negative allowed) or name."""
        if isinstance(key, (int, np.integer)):
            if not -len(self.layers) <= key < len(self.layers):
                raise IndexError(f"layer index {key} out of range for {len(self.layers)} layers")
            return int(key) % len(self.layers)
        for i, layer in enumerate(self.layers):
            if layer.name == key:
                return i
        raise KeyError(f"no layer named {key!r}; names: {', '.join(l.name for l in self.layers)}")

    @property
    def num_classes(self) -> int | None:
        if self.classes is not None:
            return len(self.classes)
        if self.input_shape is not None:
            out = self.output_shapes(self.input_shape)[-1]
            return out[0] if len(out) == 1 else None
        return None

    # --- shapes ---

    def output_shapes(self, input_shape) -> list[tuple]:
        """Per-layer output shape of one sample; raises a ShapeError naming
        the first layer that cannot take its input."""
        shapes, shape = [], tuple(int(v) for v in input_shape)
        for layer in self.layers:
            try:
                shape = layer.output_shape(shape)
            except ShapeError as exc:
                built = f" (built for {self.input_shape})" if self.input_shape else ""
                raise ShapeError(
                    f"input of shape {tuple(input_shape)} does not fit the network{built}: {exc}"
                ) from None
            shapes.append(shape)
        return shapes

    def check_input(self, x):
        """Raise a ShapeError unless ``x`` is a finite float batch this net takes."""
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise ShapeError(f"expected an array of shape (N, C, H, W), got {type(x).__name__}")
        if np.dtype(x.dtype).kind != "f":
            raise ShapeError(
                f"expected floating-point input, got dtype {x.dtype}; use tinyconv.preprocess "
                "to turn an image into network input"
            )
        if self.input_shape is not None:
            if x.ndim != len(self.input_shape) + 1:
                raise ShapeError(
                    f"expected input of shape (N, {', '.join(map(str, self.input_shape))}), "
                    f"got {tuple(x.shape)}"
                )
            if x.shape[1] != self.input_shape[0]:
                raise ShapeError(
                    f"the network takes {self.input_shape[0]} input channel(s), got {x.shape[1]} "
                    f"(input shape {tuple(x.shape)})"
                )
        if x.shape[0] == 0:
            raise ShapeError("empty batch: input has N = 0")
        self.output_shapes(x.shape[1:])
        if not _finite(x):
            raise ShapeError("input contains NaN or infinite values")

    # --- the two passes ---

    def forward(self, x, keep: bool = False):
        """Scores S_c for a batch. x: (N, C, H, W) -> (N, K).

        With ``keep=True`` every layer's output is stored in
        ``self.activations[name]`` for study.
        """
        return self.forward_to(x, len(self.layers) - 1, keep)

    __call__ = forward

    def predict(self, x):
        """Scores for a batch with nothing kept for a backward pass, as under
        PyTorch's ``torch.no_grad()``: max-pools find no switches, ReLUs
        rectify the previous layer's output in place, no layer holds on to
        its input. x: (N, C, H, W) -> (N, K), equal to ``forward(x)``.
        ``backward`` after ``predict`` is refused until the next forward.
        """
        self.check_input(x)
        self.activations = {}
        xp = get_array_module(x)
        owned = False  # may the current array be overwritten? never the caller's x
        for layer in self.layers:
            y = layer.infer(x, inplace=owned)
            owned = owned or not xp.may_share_memory(x, y)
            x = y
        return x

    def forward_to(self, x, layer, keep: bool = False):
        """Run the forward pass up to and including ``layer`` (name or index)."""
        stop = self.index(layer)
        self.check_input(x)
        self.activations = {}
        for current in self.layers:  # the old caches go first, so their buffers can serve this pass
            current.drop_cache()
        for current in self.layers[: stop + 1]:
            x = current.forward(x)
            if keep:
                self.activations[current.name] = x
        # keep what the caches hold (the next pass reuses it once they drop
        # it), let go of what the pass freed (outputs a ReLU or pool consumed)
        self.pool.trim()
        return x

    def forget(self):
        """Drop every layer's cache and release the buffers kept for the next call."""
        for layer in self.layers:
            layer.drop_cache()
        self.pool.release()

    def backward(
        self, grad, param_grads: bool = True, start=None, keep: bool = False, input_grad: bool = True
    ):
        """Gradient with respect to the input, by the chain rule in reverse.

        grad:        ∂L/∂(output of layer ``start``), shape of that output
                     (by default the scores: one-hot for ∂S_c/∂I).
        param_grads: accumulate parameter gradients in each layer's ``grads``;
                     False skips that work (saliency, class models).
        keep:        store ∂L/∂(output of each layer) in ``self.gradients``,
                     and the input gradient under "input".
        input_grad:  False (training): the first layer may skip the input
                     gradient (a Conv2d does) and None may be returned.
        """
        stop = len(self.layers) - 1 if start is None else self.index(start)
        self.layers[stop].check_gradient(grad)  # each layer's backward checks its own again
        if not _finite(grad):
            raise ShapeError("gradient contains NaN or infinite values")
        self.gradients = {}
        for current in reversed(self.layers[: stop + 1]):
            if keep:
                self.gradients[current.name] = grad
            if current is self.layers[0] and not input_grad and current.skips_input_grad:
                grad = current.backward(grad, param_grads, input_grad=False)
            else:
                grad = current.backward(grad, param_grads)
        if keep:
            self.gradients["input"] = grad
        return grad

    # --- parameters and modes ---

    def parameters(self) -> list[Parameter]:
        """(name, value, grad) for every parameter, e.g. ("0.weight", W, dW)."""
        return [
            Parameter(f"{layer.name}.{key}", layer.params[key], layer.grads[key])
            for layer in self.layers
            for key in layer.params
        ]

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()

    def train(self, mode: bool = True):
        """Training mode (dropout active) or, with False, inference mode."""
        for layer in self.layers:
            layer.training = mode
        return self

    def eval(self):
        return self.train(False)

    @contextlib.contextmanager
    def relu_rule(self, rule: str):
        """Switch every ReLU's backward rule inside a ``with`` block."""
        if rule not in RULES:
            raise RuleError(f"unknown ReLU rule {rule!r}; expected one of {', '.join(RULES)}")
        relus = [layer for layer in self.layers if isinstance(layer, ReLU)]
        saved = [layer.rule for layer in relus]
        try:
            for layer in relus:
                layer.rule = rule
            yield self
        finally:
            for layer, old in zip(relus, saved, strict=True):
                layer.rule = old

    def to(self, device: str):
        """Move every parameter to ``device`` ("cpu", "cuda"); returns self."""
        for layer in self.layers:
            layer.to(device)
        return self

    def astype(self, dtype):
        """Cast every parameter to ``dtype``; returns self."""
        for layer in self.layers:
            layer.astype(dtype)
        return self

    @property
    def device(self) -> str:
        for p in self.parameters():
            return device_of(p.value)
        return "cpu"

    @property
    def dtype(self):
        for p in self.parameters():
            return p.value.dtype
        return np.dtype(np.float32)

    # --- persistence (see tinyconv.models.native) ---

    def save(self, path):
        """Write the network to a native ``.npz`` file (see ``tinyconv.load``)."""
        from ..models.native import save

        save(self, path)

    def __repr__(self):
        lines = [f"Sequential({len(self.layers)} layers, input {self.input_shape}, "
                 f"{self.num_classes if self.num_classes is not None else '?'} classes)"]
        lines += [f"  ({layer.name}): {layer!r}" for layer in self.layers]
        return "\n".join(lines)


__all__ = ["Sequential", "Parameter", "TinyconvError"]
