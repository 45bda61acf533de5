"""``from_torch``: the tinyconv ``Sequential`` equal to a PyTorch module.

Walks an ``nn.Sequential`` (nested ones included) or a torchvision-style
model (children ``features``, ``avgpool``, ``classifier``, with the flatten
its ``forward`` does between them) or any module whose children, run in
order with a flatten before the first Linear, form the network. Layer names
are the PyTorch module paths ("features.0", "classifier.6"), so they match
the state_dict keys.

Supported modules: Conv2d (no dilation, groups or non-zero padding mode),
ReLU, MaxPool2d (no dilation, no ceil_mode), AvgPool2d (count_include_pad,
no ceil_mode), AdaptiveAvgPool2d, Linear, Flatten (from dim 1), Dropout, and
BatchNorm2d directly after a convolution, folded into it with its eval
statistics (``tinyconv.models.checkpoint.fold_into``). Anything else is
refused by name. PyTorch is imported only when this is called.
"""

from __future__ import annotations

import numpy as np

from ..engine import layers as L
from ..engine.network import Sequential
from ..errors import ArgumentTypeError, WeightsError
from .checkpoint import fold_into
from .registry import conv2d_from, linear_from


def _array(tensor) -> np.ndarray:
    """A writable NumPy copy of a CPU/GPU tensor, dtype kept."""
    return np.array(tensor.detach().cpu().numpy(), copy=True)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _refuse(name, module, why):
    raise WeightsError(f"cannot convert module {name!r} ({type(module).__name__}): {why}")


def _convert(name, module, nn):
    """One tinyconv layer for one leaf module (BatchNorm handled by the caller)."""
    if isinstance(module, nn.Conv2d):
        if _pair(module.dilation) != (1, 1):
            _refuse(name, module, f"dilation {module.dilation} is not supported")
        if module.groups != 1:
            _refuse(name, module, f"groups={module.groups} is not supported")
        if module.padding_mode != "zeros":
            _refuse(name, module, f"padding_mode={module.padding_mode!r} is not supported")
        if isinstance(module.padding, str):
            _refuse(name, module, f"padding={module.padding!r} is not supported; give it in pixels")
        bias = None if module.bias is None else _array(module.bias)
        layer = conv2d_from(_array(module.weight), bias, module.stride, module.padding)
    elif isinstance(module, nn.Linear):
        bias = None if module.bias is None else _array(module.bias)
        layer = linear_from(_array(module.weight), bias)
    elif isinstance(module, nn.ReLU):
        layer = L.ReLU()
    elif isinstance(module, nn.MaxPool2d):
        if module.ceil_mode:
            _refuse(name, module, "ceil_mode=True is not supported")
        if _pair(module.dilation) != (1, 1):
            _refuse(name, module, f"dilation {module.dilation} is not supported")
        if module.return_indices:
            _refuse(name, module, "return_indices=True is not supported")
        layer = L.MaxPool2d(module.kernel_size, module.stride, module.padding)
    elif isinstance(module, nn.AvgPool2d):
        if module.ceil_mode:
            _refuse(name, module, "ceil_mode=True is not supported")
        if not module.count_include_pad and _pair(module.padding) != (0, 0):
            _refuse(name, module, "count_include_pad=False with padding is not supported")
        if module.divisor_override is not None:
            _refuse(name, module, "divisor_override is not supported")
        layer = L.AvgPool2d(module.kernel_size, module.stride, module.padding)
    elif isinstance(module, nn.AdaptiveAvgPool2d):
        size = _pair(module.output_size)
        if None in size:
            _refuse(name, module, f"output_size {module.output_size} with None is not supported")
        layer = L.AdaptiveAvgPool2d(size)
    elif isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            _refuse(name, module, "only Flatten(start_dim=1, end_dim=-1) is supported")
        layer = L.Flatten()
    elif isinstance(module, nn.Dropout):
        layer = L.Dropout(module.p)
    else:
        _refuse(name, module, "this module type is not supported by tinyconv")
    return layer


def _leaves(module, prefix, nn):
    """(path, leaf module) in execution order, descending into nn.Sequential
    and into the children of a plain container module."""
    children = list(module.named_children())
    if not children:
        yield prefix, module
        return
    if prefix and not isinstance(module, nn.Sequential):
        # a nested custom module: its forward may do anything
        _refuse(prefix, module, "only nn.Sequential containers can be walked inside a model")
    for child_name, child in children:
        yield from _leaves(child, f"{prefix}.{child_name}" if prefix else child_name, nn)


def from_torch(module, classes=None, mean=None, std=None, input_shape=None, meta=None) -> Sequential:
    """The tinyconv network computing the same function as ``module`` in eval mode.

    module: an ``nn.Sequential`` (nested allowed) or a torchvision-style model
            (VGG, AlexNet: ``features`` / ``avgpool`` / ``classifier``), or a
            model whose children run in order, flattened before the first
            Linear (like the MNIST CNN's ``conv_layers`` / ``fc_layers``).
    The weights keep their dtype (float32 stays float32). ``classes``,
    ``mean``, ``std``, ``input_shape`` and ``meta`` are passed to Sequential.
    """
    import torch.nn as nn

    if not isinstance(module, nn.Module):
        raise ArgumentTypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    leaves = list(_leaves(module, "", nn))
    top_level_plain = not isinstance(module, nn.Sequential)
    built, pending_conv, seen_flatten, group_start = [], None, False, {}
    for name, leaf in leaves:
        group_start.setdefault(name.split(".")[0], len(built))
        if isinstance(leaf, nn.BatchNorm2d):
            if pending_conv is None:
                _refuse(name, leaf, "a BatchNorm2d must directly follow a Conv2d to be folded")
            if leaf.running_mean is None or leaf.running_var is None:
                _refuse(name, leaf, "track_running_stats=False: no eval statistics to fold")
            channels = pending_conv.out_channels
            gamma = _array(leaf.weight) if leaf.affine else np.ones(channels)
            beta = _array(leaf.bias) if leaf.affine else np.zeros(channels)
            stats = (gamma, beta, _array(leaf.running_mean), _array(leaf.running_var))
            built[-1] = (built[-1][0], fold_into(pending_conv, *stats, leaf.eps, name))
            pending_conv = None
            continue
        if isinstance(leaf, (nn.Flatten,)):
            seen_flatten = True
        if isinstance(leaf, nn.Linear) and top_level_plain and not seen_flatten:
            # the flatten a model's forward does before the group holding the first Linear
            built.insert(group_start[name.split(".")[0]], ("flatten", L.Flatten()))
            seen_flatten = True
        layer = _convert(name, leaf, nn)
        pending_conv = layer if isinstance(layer, L.Conv2d) else None
        built.append((name, layer))
    if not built:
        raise WeightsError(f"the {type(module).__name__} holds no layers to convert")
    return Sequential(built, classes=classes, mean=mean, std=std, input_shape=input_shape, meta=meta)


__all__ = ["from_torch"]
