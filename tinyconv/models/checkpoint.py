"""``load_checkpoint``: a trained network from a PyTorch or safetensors file,
without PyTorch.

The file is read by ``tinyconv.models.torchfile`` (``.pth`` / ``.pt``) or
``tinyconv.models.safetensors``; its tensors are matched by name to the layers of a
known architecture (``tinyconv.models.registry``), whose layer names are the
state_dict prefixes, so a conversion is a copy plus checks. Every missing
key, unexpected key and shape mismatch is reported by name.

BatchNorm folding (the ``_bn`` VGGs). At inference a BatchNorm2d after a
convolution is the per-channel affine map y = γ (z − μ) / √(σ² + ε) + β with
the running statistics μ, σ²; with s = γ / √(σ² + ε) the pair collapses
into one convolution:

    W'[f] = W[f] · s[f]            b'[f] = (b[f] − μ[f]) · s[f] + β[f]

computed in float64 and stored in the convolution's dtype. The folded
network equals the PyTorch model in ``eval()`` mode (not in training mode,
where batch statistics are used). ε is not stored in a state_dict: it is
torchvision's 1e-5 unless ``bn_eps`` says otherwise.

timm's VGG layout is accepted as well: its ``pre_logits.fc1`` (a 7x7
convolution over the 7x7 feature map), ``pre_logits.fc2`` (1x1) and
``head.fc`` are the torchvision classifier's three Linear layers, reshaped;
the two are the same function at the 224x224 input size.
"""

from __future__ import annotations

import os

import numpy as np

from ..engine.layers import Conv2d, Linear, param_shapes
from ..engine.network import Sequential
from ..errors import OptionError, WeightsError
from . import registry as models
from .native import sha256
from .safetensors import is_safetensors, read_safetensors
from .torchfile import Tensor, read_pth, tensors

BN_EPS = 1e-5

_TIMM_VGG = {"pre_logits.fc1": "classifier.0", "pre_logits.fc2": "classifier.3", "head.fc": "classifier.6"}


def read_tensors(path) -> tuple[dict[str, Tensor], dict]:
    """(name -> Tensor, metadata) of a ``.pth`` / ``.pt`` / ``.safetensors`` file,
    told apart by their content, not their name."""
    where = str(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        raise WeightsError(f"{where} is empty")
    if head.startswith(b"PK"):
        return tensors(read_pth(path), where), {}
    if is_safetensors(path):
        return read_safetensors(path)
    return tensors(read_pth(path), where), {}  # raises a WeightsError saying what the file is not


def fold_batchnorm(weight, bias, gamma, beta, mean, var, eps=BN_EPS):
    """Fold an eval-mode BatchNorm2d into the convolution before it.

    weight: (F, C, kh, kw), bias: (F,) or None, the rest (F,)
    -> (W', b') with W'[f] = W[f]·s[f], b'[f] = (b[f] − μ[f])·s[f] + β[f],
    s = γ / √(σ² + ε); computed in float64, returned in ``weight``'s dtype.
    """
    _check_eps(eps)
    dtype = weight.dtype
    w64 = np.asarray(weight, dtype=np.float64)
    b64 = np.zeros(w64.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    if (var < 0).any():
        raise WeightsError("BatchNorm running_var has negative entries")
    scale = np.asarray(gamma, dtype=np.float64) / np.sqrt(var + eps)
    folded_w = w64 * scale[:, None, None, None]
    folded_b = (b64 - np.asarray(mean, dtype=np.float64)) * scale + np.asarray(beta, dtype=np.float64)
    folded_w, folded_b = folded_w.astype(dtype), folded_b.astype(dtype)
    if not (np.isfinite(folded_w).all() and np.isfinite(folded_b).all()):
        raise WeightsError(f"folding BatchNorm (eps={eps}) gives weights that are not finite in {dtype}")
    return folded_w, folded_b


def _check_eps(eps) -> None:
    """BatchNorm's eps must be a finite number > 0 (0 divides by a zero variance)."""
    try:
        ok = np.isfinite(float(eps)) and float(eps) > 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise OptionError(f"bn_eps must be a finite number > 0, got {eps!r}")


def _check_dtype(dtype):
    """None, or a floating dtype (an integer or bool cast would truncate every weight)."""
    if dtype is None:
        return None
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise OptionError(f"dtype {dtype!r} is not a NumPy dtype") from None
    if resolved.kind != "f" or resolved.itemsize not in (2, 4, 8):
        raise OptionError(f"dtype must be a floating dtype (float16, float32, float64), got {dtype!r}")
    return resolved


def _timm_to_torchvision(state: dict) -> dict:
    """Rename timm VGG keys to torchvision's; reshape its conv classifier to Linear."""
    if not any(k.startswith(("pre_logits.", "head.fc.")) for k in state):
        return state
    out = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in _TIMM_VGG:
            array = value.array
            if leaf == "weight" and array.ndim == 4:
                array = array.reshape(array.shape[0], -1)  # (out, C, kh, kw) -> (out, C*kh*kw)
            out[f"{_TIMM_VGG[prefix]}.{leaf}"] = Tensor(array, value.torch_dtype)
        else:
            out[key] = value
    return out


def guess_arch(state: dict) -> str | None:
    """The one known architecture whose key names are exactly ``state``'s, or None."""
    names = set(_timm_to_torchvision(state))
    found = [arch for arch in models.ARCHS if set(models.state_dict_keys(arch)) == names]
    if not found:  # files saved without BatchNorm's num_batches_tracked
        found = [
            arch for arch in models.ARCHS
            if {k for k in models.state_dict_keys(arch) if not k.endswith("num_batches_tracked")} == names
        ]  # fmt: skip
    return found[0] if len(found) == 1 else None


def _float(tensor: Tensor, key: str, dtype) -> np.ndarray:
    if tensor.torch_dtype not in ("FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage"):
        raise WeightsError(f"tensor {key!r} has integer/bool storage {tensor.torch_dtype}, expected floats")
    array = tensor.numpy()
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    elif array.dtype != np.float64:
        array = array.astype(np.float32, copy=False)  # half / bfloat16 widened: tinyconv computes in float32
    if not np.isfinite(array).all():
        if np.isfinite(tensor.numpy()).all():
            raise WeightsError(f"tensor {key!r} has values beyond the range of {array.dtype}")
        raise WeightsError(f"tensor {key!r} contains NaN or infinite values")
    return np.ascontiguousarray(array)


def _natural(key: str):
    """Sort key putting "features.3" before "features.10"."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in key.split(".")]


def _list(names, limit=12):
    names = sorted(names, key=_natural)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def fold_into(conv: Conv2d, gamma, beta, mean, var, eps: float = BN_EPS, where: str = "BatchNorm2d"):
    """The Conv2d equal to ``conv`` followed by an eval-mode BatchNorm2d of
    these statistics (each (F,), γ = weight, β = bias): a new layer holding
    ``fold_batchnorm``'s arrays, with ``conv``'s stride and padding."""
    for what, value in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
        if np.shape(value) != (conv.out_channels,):
            raise WeightsError(f"{where}.{what} is {np.shape(value)}, expected ({conv.out_channels},)")
    try:
        w, b = fold_batchnorm(conv.params["weight"], conv.params.get("bias"), gamma, beta, mean, var, eps)
    except WeightsError as exc:
        raise WeightsError(f"layer {where!r}: {exc}") from None
    return models.conv2d_from(w, b, conv.stride, conv.padding)


def _head(state: dict, arch: str, classes, where: str) -> tuple[int | None, list | None]:
    """(outputs of the last layer as stored in ``state`` or None, the class names checked against it)."""
    weighted = [(name, entry) for name, entry in models.blueprint(arch) if entry != models.BATCHNORM]
    head_key = [f"{name}.weight" for name, entry in weighted if entry[0] is Linear][-1]
    num_classes = None
    if head_key in state and state[head_key].array.ndim == 2:
        num_classes = state[head_key].shape[0]
    if classes is not None:
        classes = [str(c) for c in classes]
        if num_classes is not None and len(classes) != num_classes:
            raise WeightsError(
                f"{where}: {len(classes)} class names given but the last layer ({head_key}) has "
                f"{num_classes} outputs"
            )
    return num_classes, classes


def _check_keys(state: dict, arch: str, where: str) -> None:
    """Raise a WeightsError naming every missing and unexpected key."""
    expected = models.state_dict_keys(arch)
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list(unexpected)}")
    if problems:
        guess = guess_arch(state)
        hint = f"; the keys fit arch {guess!r}" if guess and guess != arch else ""
        raise WeightsError(f"{where} does not fit architecture {arch!r}: {'; '.join(problems)}{hint}")


def _arrays(state: dict, name: str, shapes: dict, dtype, mismatched: list) -> dict | None:
    """{leaf: array} of layer ``name`` read from ``state``; None (and the
    problems appended to ``mismatched``) when a shape differs from ``shapes``."""
    values = {}
    for leaf, shape in shapes.items():
        key = f"{name}.{leaf}"
        values[leaf] = _float(state[key], key, dtype)
        if values[leaf].shape != tuple(shape):
            mismatched.append(f"{key} is {values[leaf].shape}, expected {tuple(shape)}")
    return None if any(v.shape != tuple(shapes[k]) for k, v in values.items()) else values


def _layers(state: dict, arch: str, num_classes, dtype, bn_eps: float, where: str) -> list:
    """(name, layer) pairs of ``arch`` filled from ``state``, every BatchNorm
    folded into the convolution before it; raises a WeightsError listing
    every shape mismatch."""
    mismatched, layers = [], []
    for name, entry in models.blueprint(arch, num_classes):
        previous = layers[-1][1] if layers else None
        if entry == models.BATCHNORM:
            if not isinstance(previous, Conv2d):  # its convolution did not fit: already reported
                continue
            leaves = ("weight", "bias", "running_mean", "running_var")
            shapes = dict.fromkeys(leaves, (previous.out_channels,))
            stats = _arrays(state, name, shapes, np.float64, mismatched)
            if stats is not None and not mismatched:
                folded = fold_into(previous, *(stats[leaf] for leaf in leaves), bn_eps, name)
                layers[-1] = (layers[-1][0], folded)
            continue
        cls, args, kwargs = entry
        shapes = param_shapes(models.spec_of(entry))
        if not shapes:
            layers.append((name, cls(*args, **kwargs)))
            continue
        values = _arrays(state, name, shapes, dtype, mismatched)
        if values is None:
            continue
        if cls is Conv2d:
            stride, padding = kwargs.get("stride", 1), kwargs.get("padding", 0)
            layers.append((name, models.conv2d_from(values["weight"], values.get("bias"), stride, padding)))
        else:
            layers.append((name, models.linear_from(values["weight"], values.get("bias"))))
    if mismatched:
        raise WeightsError(
            f"{where} does not fit architecture {arch!r}: shape mismatch: {'; '.join(mismatched)}"
        )
    return layers


def network_from_state(state: dict, arch: str, classes=None, dtype=None, bn_eps: float = BN_EPS,
                       where: str = "checkpoint") -> Sequential:  # fmt: skip
    """Build ``arch`` and fill it from a name -> Tensor mapping (see ``load_checkpoint``)."""
    arch = models.check_arch(arch)
    dtype = _check_dtype(dtype)
    _check_eps(bn_eps)
    state = _timm_to_torchvision(state)
    num_classes, classes = _head(state, arch, classes, where)
    _check_keys(state, arch, where)
    layers = _layers(state, arch, num_classes or len(classes or []) or None, dtype, bn_eps, where)
    n_out = layers[-1][1].out_features
    mean, std = models.normalisation(arch)
    return Sequential(
        layers,
        classes=classes if classes is not None else models.default_classes(arch, n_out),
        mean=mean,
        std=std,
        input_shape=models.input_shape(arch),
        meta={"arch": arch},
    )


def load_checkpoint(path, arch: str | None = None, classes=None, dtype=None, bn_eps: float = BN_EPS,
                    licence: str | None = None) -> Sequential:  # fmt: skip
    """A ``Sequential`` from a PyTorch ``.pth``/``.pt`` or ``.safetensors`` file, no torch needed.

    arch:    "vgg11" ... "vgg19", "vgg11_bn" ... "vgg19_bn", "alexnet" or
             "mnist-cnn"; None guesses it from the key names when exactly one
             architecture fits.
    classes: class names (default: ImageNet's for a 1000-way torchvision
             model, "0".."9" for the MNIST CNN).
    dtype:   cast the weights (default: keep float32 / float64; half and
             bfloat16 are widened to float32).
    bn_eps:  ε of the folded BatchNorm layers (torchvision: 1e-5).

    The result's ``meta`` records the source file name, its sha256, the
    architecture and the licence if given.
    """
    _check_dtype(dtype)
    _check_eps(bn_eps)
    state, metadata = read_tensors(path)
    where = str(path)
    if arch is None:
        arch = guess_arch(state)
        if arch is None:
            raise WeightsError(
                f"{where}: cannot tell the architecture from its {len(state)} keys; pass arch= one of "
                f"{', '.join(models.ARCHS)}"
            )
    net = network_from_state(state, arch, classes=classes, dtype=dtype, bn_eps=bn_eps, where=where)
    net.meta.update({"source": _basename(path), "source_sha256": sha256(path)})
    if arch.endswith("_bn"):
        net.meta["batchnorm"] = f"folded into the preceding convolutions (eval statistics, eps={bn_eps})"
    if licence:
        net.meta["licence"] = licence
    if metadata:
        net.meta["source_metadata"] = {str(k): str(v) for k, v in metadata.items()}
    return net


def _basename(path) -> str:
    return os.path.basename(os.fspath(path))


__all__ = [
    "fold_batchnorm", "fold_into", "guess_arch", "load_checkpoint", "network_from_state", "read_tensors",
]  # fmt: skip
