"""Choosing the array library: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module that imports CuPy. Every kernel in tinyconv starts with
``xp = get_array_module(x)`` and then calls ``xp.<function>``, so one code path
serves both libraries. Arrays come back on the device they went in on.

A backend is a (name, array type, module) triple. ``numpy`` is always there,
``cuda`` is registered the first time CuPy imports cleanly and sees a GPU, and
``register_backend`` lets a test double (or a future library that mirrors the
NumPy API) take part in exactly the same way.
"""

from __future__ import annotations

import numpy as np

from ..errors import DeviceError, OptionError

__all__ = [
    "DeviceError",
    "get_array_module",
    "device_of",
    "to_device",
    "to_numpy",
    "cuda_available",
    "register_backend",
    "synchronize",
]


# name -> (array type, module); the module must offer NumPy's API plus
# ``asnumpy`` (device -> host) and ``asarray`` (host -> device), like CuPy.
_BACKENDS: dict[str, tuple[type, object]] = {}
_cupy_checked = False
_cupy_error: str | None = None


def _try_cupy() -> None:
    """Register CuPy as ``cuda`` once, if it imports and sees a GPU."""
    global _cupy_checked, _cupy_error
    if _cupy_checked:
        return
    _cupy_checked = True
    try:
        import cupy  # noqa: PLC0415  (the one place CuPy is imported)

        if cupy.cuda.runtime.getDeviceCount() < 1:
            _cupy_error = "CuPy is installed but sees no GPU"
            return
    except ImportError:
        _cupy_error = "CuPy is not installed (pip install 'tinyconv[gpu]')"
        return
    except Exception as exc:  # CUDA driver errors come in many types
        _cupy_error = f"CuPy could not reach a GPU: {exc}"
        return
    _BACKENDS["cuda"] = (cupy.ndarray, cupy)


def register_backend(name: str, array_type: type, module: object) -> None:
    """Make ``module`` the array module for arrays of ``array_type``.

    ``module`` must provide NumPy's functions under their NumPy names, plus
    ``asarray`` (host array in, device array out) and ``asnumpy`` (the reverse).
    """
    if name == "cpu":
        raise OptionError("'cpu' is NumPy's name and cannot be re-registered")
    _BACKENDS[name] = (array_type, module)


def cuda_available() -> bool:
    """True when CuPy imports and a GPU is visible."""
    _try_cupy()
    return "cuda" in _BACKENDS


def get_array_module(*arrays):
    """The array module (``numpy``, ``cupy``, ...) that owns ``arrays``.

    Raises DeviceError when the arrays live on different devices.
    """
    _try_cupy()
    found = None
    for a in arrays:
        if a is None or isinstance(a, (int, float, np.ndarray, np.generic)):
            module = np
        else:
            module = next(
                (mod for typ, mod in _BACKENDS.values() if isinstance(a, typ)), np
            )
        if found is None:
            found = module
        elif module is not found:
            raise DeviceError(
                f"arrays on different devices ({device_of(arrays[0])} and "
                f"{device_of(a)}): move them with tinyconv.to_device or net.to()"
            )
    return np if found is None else found


def device_of(x) -> str:
    """``"cpu"`` for NumPy arrays, else the backend name (``"cuda"``...)."""
    _try_cupy()
    for name, (typ, _) in _BACKENDS.items():
        if isinstance(x, typ):
            return name
    return "cpu"


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    _try_cupy()
    if device not in _BACKENDS:
        if device == "cuda":
            raise DeviceError(f"device 'cuda' is not available: {_cupy_error}")
        known = ", ".join(["cpu", "cuda", *[k for k in _BACKENDS if k != "cuda"]])
        raise DeviceError(f"unknown device {device!r}; expected one of: {known}")


def to_numpy(x):
    """A NumPy copy (or the array itself) of ``x``, wherever it lives."""
    if isinstance(x, np.ndarray):
        return x
    for typ, module in _BACKENDS.values():
        if isinstance(x, typ):
            return module.asnumpy(x)
    return np.asarray(x)


def to_device(x, device: str = "cpu"):
    """``x`` on ``device`` (``"cpu"``, ``"cuda"``); no copy when already there."""
    _check_device(device)
    if device == "cpu":
        return to_numpy(x)
    typ, module = _BACKENDS[device]
    if isinstance(x, typ):
        return x
    return module.asarray(to_numpy(x))


def synchronize(x=None):
    """Wait until the device holding ``x`` has finished its queued work.

    GPU kernels run asynchronously: a timer must call this before reading the
    clock. A no-op for NumPy arrays (and for ``None`` when no GPU is in use).
    Returns ``x``.
    """
    module = get_array_module(x) if x is not None else _BACKENDS.get("cuda", (None, np))[1]
    cuda = getattr(module, "cuda", None)
    if module is not np and cuda is not None and hasattr(cuda, "Device"):
        cuda.Device().synchronize()
    return x
