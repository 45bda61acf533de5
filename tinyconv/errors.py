"""The errors tinyconv raises on bad input: every exception class of the package.

Every problem that a user can cause (a wrong shape, an unknown class index, a
corrupt weights file, an option out of range) raises a subclass of
``TinyconvError`` whose message names the problem in one line; the
subclasses also derive from the built-in exception a Python user would expect
(``ValueError``, ``TypeError``, ``RuntimeError``), so ``except ValueError``
keeps working. The command line prints the message and exits with status 2.
"""


class TinyconvError(Exception):
    """Base class of every error tinyconv raises on purpose."""


class ShapeError(TinyconvError, ValueError):
    """An array has the wrong rank, size, channel count or dtype."""


class OptionError(TinyconvError, ValueError):
    """An option or argument value out of range or not one of the allowed
    choices (a learning rate <= 0, a probability outside [0, 1), an unknown
    schedule, an architecture option it does not take...)."""


class ArgumentTypeError(TinyconvError, TypeError):
    """An argument of the wrong kind of object (not a tinyconv network, not a
    ``torch.nn.Module``, not a tinyconv layer...)."""


class RuleError(TinyconvError, ValueError):
    """An unknown ReLU backward rule."""


class TargetError(TinyconvError, ValueError):
    """A class index out of range or a target of the wrong form."""


class WeightsError(TinyconvError, ValueError):
    """A weights file that cannot be read, or does not fit the architecture."""


class DataError(TinyconvError, ValueError):
    """A dataset file that is missing or malformed, or data with nothing in it
    (no images to score, an empty mask)."""


class PrecisionWarning(UserWarning):
    """Parameter gradients computed in a wider dtype than the parameters were
    rounded on the way into ``layer.grads`` (e.g. float64 input to a float32
    network): cast the network (``net.astype(np.float64)``) for float64 checks."""


class DeviceError(TinyconvError, RuntimeError):
    """A device was asked for that this machine cannot give, or arrays disagree."""


class MissingDependency(TinyconvError, ModuleNotFoundError):
    """An optional dependency (PyMaxflow or scipy for localisation) is not installed."""


class OutputError(TinyconvError, ValueError):
    """An output path that cannot or must not be written (empty, under a file, the input itself)."""


class NumericalError(TinyconvError, ArithmeticError):
    """Weights or scores that are not finite (NaN, infinite, or overflowing the dtype)."""


__all__ = [
    "ArgumentTypeError", "DataError", "DeviceError", "MissingDependency", "NumericalError", "OptionError",
    "OutputError", "PrecisionWarning", "RuleError", "ShapeError", "TargetError", "TinyconvError",
    "WeightsError",
]  # fmt: skip
