"""A stand-in for CuPy that runs on the CPU: proves device discipline without a GPU.

``FakeArray`` wraps a NumPy array the way a ``cupy.ndarray`` wraps GPU memory:
operators, indexing, reductions and methods return ``FakeArray``s, and any
attempt to make a host array of it implicitly raises ``TypeError``, as CuPy
does: ``np.asarray(a)``, ``np.exp(a)`` (a ufunc), ``np.pad(a, ...)`` (an array
function), ``a + np.ones(3)`` (mixing devices). Only ``asnumpy`` / ``.get()``
cross to the host, and ``bool``/``float``/``int`` of a one-element array (CuPy
allows those; they synchronise).

``fake_module`` mirrors NumPy's API: ``fake_module.<f>(...)`` unwraps its
FakeArray arguments, calls ``numpy.<f>`` and wraps the arrays it returns;
host arguments that are NumPy arrays are refused, as CuPy refuses them.
``asarray`` (host -> fake) and ``asnumpy`` (fake -> host) are the only ways
across. Register it with::

    tinyconv.engine.backend.register_backend("fake", FakeArray, fake_module)
"""

from __future__ import annotations

import operator
import types

import numpy as np

__all__ = ["FakeArray", "FakeModule", "fake_module", "FakeDeviceError"]


class FakeDeviceError(TypeError):
    """A fake device array met NumPy where only the fake module may touch it."""


def _unwrap(value, where: str):
    """FakeArray -> its data; NumPy arrays refused; containers walked."""
    if isinstance(value, FakeArray):
        return value._data
    if isinstance(value, np.ndarray):
        raise FakeDeviceError(
            f"{where}: got a host (NumPy) array of shape {value.shape}; "
            "move it with asarray first (CuPy refuses NumPy arrays too)"
        )
    if isinstance(value, tuple):
        return tuple(_unwrap(v, where) for v in value)
    if isinstance(value, list):
        return [_unwrap(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _unwrap(v, where) for k, v in value.items()}
    return value


def _wrap(value):
    """NumPy arrays and NumPy scalars -> FakeArray (0-d for scalars, as CuPy)."""
    if isinstance(value, np.ndarray):
        return FakeArray(value)
    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_)):
        return FakeArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


# methods of numpy.ndarray that cupy.ndarray also has; results are wrapped
_METHODS = set(
    "all any argmax argmin astype clip copy cumsum dot fill flatten max mean min nonzero prod "
    "ravel repeat reshape round squeeze std sum swapaxes take transpose var view".split()
)


class FakeArray:
    """A NumPy array in disguise that behaves like a ``cupy.ndarray``."""

    __array_ufunc__ = None  # NumPy ufuncs and mixed operators refuse it
    __array_priority__ = 100

    def __init__(self, data):
        if not isinstance(data, np.ndarray):
            raise TypeError(f"FakeArray wraps a NumPy array, got {type(data).__name__}")
        self._data = data

    # --- the host boundary ---

    def __array__(self, *args, **kwargs):
        raise FakeDeviceError("Implicit conversion to a NumPy array is not allowed; use asnumpy() or .get()")

    def __array_function__(self, func, types, args, kwargs):
        raise FakeDeviceError(
            f"numpy.{func.__name__} was called on a FakeArray; call it through the array module (xp)"
        )

    def get(self):
        """A host copy, as ``cupy.ndarray.get()``."""
        return self._data.copy()

    def item(self):
        return self._data.item()

    def tolist(self):
        return self._data.tolist()

    def _scalar(self, kind):
        if self._data.size != 1:
            raise TypeError(
                f"only one-element arrays can be converted to Python scalars, got shape {self.shape}"
            )
        return kind(self._data.reshape(()).item())

    def __bool__(self):
        return self._scalar(bool)

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __complex__(self):
        return self._scalar(complex)

    # --- attributes ---

    shape = property(lambda self: self._data.shape)
    ndim = property(lambda self: self._data.ndim)
    dtype = property(lambda self: self._data.dtype)
    size = property(lambda self: self._data.size)
    itemsize = property(lambda self: self._data.itemsize)
    nbytes = property(lambda self: self._data.nbytes)
    strides = property(lambda self: self._data.strides)
    T = property(lambda self: FakeArray(self._data.T))
    device = property(lambda self: "fake")

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        for item in self._data:
            yield _wrap(item)

    def __repr__(self):
        return f"FakeArray({self._data!r})"

    def __getattr__(self, name):
        if name in _METHODS:
            method = getattr(self._data, name)

            def call(*args, **kwargs):
                where = f"FakeArray.{name}"
                return _wrap(method(*_unwrap(args, where), **_unwrap(kwargs, where)))

            return call
        raise AttributeError(f"FakeArray has no attribute {name!r}")

    # --- indexing (views share the data, as on the device) ---

    def __getitem__(self, key):
        return _wrap(self._data[_unwrap(key, "FakeArray[...]")])

    def __setitem__(self, key, value):
        self._data[_unwrap(key, "FakeArray[...] =")] = _unwrap(value, "FakeArray[...] =")


def _refuse_host(other, op):
    if isinstance(other, np.ndarray):
        raise FakeDeviceError(
            f"FakeArray {op.__name__} a host (NumPy) array of shape {other.shape}: "
            "arrays on different devices"
        )


def _binary(op, reflected=False):
    def method(self, other):
        _refuse_host(other, op)
        if not isinstance(other, (FakeArray, int, float, bool, complex, np.generic)):
            return NotImplemented
        b = _unwrap(other, f"FakeArray {op.__name__}")
        a = self._data
        return _wrap(op(b, a) if reflected else op(a, b))

    return method


def _inplace(op):
    def method(self, other):
        _refuse_host(other, op)
        if not isinstance(other, (FakeArray, int, float, bool, complex, np.generic)):
            return NotImplemented
        op(self._data, _unwrap(other, f"FakeArray {op.__name__}"))
        return self

    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor"):
    _op = getattr(operator, _name + "_" if _name in ("and", "or") else _name)
    setattr(FakeArray, f"__{_name}__", _binary(_op))
    setattr(FakeArray, f"__r{_name}__", _binary(_op, reflected=True))
    setattr(FakeArray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name, _op in {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
}.items():
    setattr(FakeArray, f"__{_name}__", _binary(_op))
for _name, _op in {
    "neg": operator.neg,
    "pos": operator.pos,
    "abs": operator.abs,
    "invert": operator.invert,
}.items():
    setattr(FakeArray, f"__{_name}__", (lambda op: lambda self: FakeArray(op(self._data)))(_op))
FakeArray.__hash__ = None  # like every ndarray


class FakeModule(types.ModuleType):
    """NumPy's API over FakeArrays (``fake_module.zeros``, ``.where``, ``.linalg.norm`` ...)."""

    def __init__(self, name: str = "fake_numpy", target=np):
        super().__init__(name)
        self._target = target
        self.ndarray = FakeArray  # as cupy.ndarray

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._target, name)
        if isinstance(attr, types.ModuleType):
            return FakeModule(f"{self.__name__}.{name}", attr)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes (float32...), constants (inf, newaxis...)
        where = f"{self.__name__}.{name}"

        def call(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, where), **_unwrap(kwargs, where)))

        call.__name__ = name
        return call

    # --- crossing between host and device ---

    def asarray(self, a, dtype=None):
        """Host -> device copy (a FakeArray comes back as it is, cast if asked)."""
        if isinstance(a, FakeArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return FakeArray(np.array(a, dtype=dtype))

    array = asarray

    def asnumpy(self, a):
        """Device -> host copy."""
        if isinstance(a, FakeArray):
            return a._data.copy()
        return np.asarray(a)

    def get_array_module(self, *args):
        return self


fake_module = FakeModule()
