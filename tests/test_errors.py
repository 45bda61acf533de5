"""The error contract: every exception class lives in tinyconv.errors, derives
from TinyconvError and the built-in a Python user expects, and is exported."""

import importlib
import inspect
import pkgutil

import pytest

import tinyconv as tc
from tinyconv import errors


def package_modules():
    for info in pkgutil.walk_packages(tc.__path__, "tinyconv."):
        if info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)


def test_every_exception_class_lives_in_errors():
    defined_elsewhere = [
        f"{module.__name__}.{name}"
        for module in package_modules()
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
        and module is not errors
    ]  # fmt: skip
    assert defined_elsewhere == []


def test_every_error_is_a_tinyconv_error_and_exported():
    classes = [obj for obj in vars(errors).values() if inspect.isclass(obj) and issubclass(obj, Exception)]
    assert {c.__name__ for c in classes} == set(errors.__all__)
    for cls in classes:
        # warnings (PrecisionWarning) are raised with warnings.warn, never as errors
        assert issubclass(cls, tc.TinyconvError) or issubclass(cls, Warning)
        assert getattr(tc, cls.__name__) is cls and cls.__name__ in tc.__all__
    assert tc.engine.backend.DeviceError is tc.DeviceError  # still importable where it was


@pytest.mark.parametrize(
    "call, builtin, message",
    [
        (lambda: tc.engine.train.SGD(None, lr=0), ValueError, "lr > 0"),
        (lambda: tc.engine.train.learning_rate("linear", 0.1, 0, 10, 0), ValueError, "unknown schedule"),
        (lambda: tc.pictures.imaging.colormap("jet"), ValueError, "unknown colour map 'jet'"),
        (lambda: tc.Sequential([tc.ReLU(), tc.ReLU()], std=0), ValueError, "std must be positive"),
        (lambda: tc.models.build("scenes-cnn", size=20), ValueError, "multiple of 16"),
    ],
)
def test_option_checks_raise_option_error(call, builtin, message):
    with pytest.raises(tc.OptionError, match=message) as info:
        call()
    assert isinstance(info.value, builtin)


def test_wrong_kind_of_object_is_an_argument_type_error():
    with pytest.raises(tc.ArgumentTypeError, match="not a tinyconv layer"):
        tc.Sequential([object()])
    assert issubclass(tc.ArgumentTypeError, TypeError)
