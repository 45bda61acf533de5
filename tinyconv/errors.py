"""The errors tinyconv raises on bad input.

Every problem that a user can cause (a wrong shape, an unknown class index, a
corrupt weights file) raises a subclass of ``TinyconvError`` whose message
names the problem; the subclasses also derive from the built-in exception a
Python user would expect (``ValueError``, ``KeyError``...).
"""


class TinyconvError(Exception):
    """Base class of every error tinyconv raises on purpose."""


class ShapeError(TinyconvError, ValueError):
    """An array has the wrong rank, size, channel count or dtype."""


class RuleError(TinyconvError, ValueError):
    """An unknown ReLU backward rule."""


class TargetError(TinyconvError, ValueError):
    """A class index out of range or a target of the wrong form."""


class WeightsError(TinyconvError, ValueError):
    """A weights file that cannot be read, or does not fit the architecture."""


class DataError(TinyconvError, ValueError):
    """A dataset file that is missing or malformed."""


class ArgumentError(TinyconvError, ValueError):
    """A numeric argument or command-line option that is not finite or out of range."""


class OutputError(TinyconvError, ValueError):
    """An output path that cannot or must not be written (empty, under a file, the input itself)."""


class NumericalError(TinyconvError, ArithmeticError):
    """Weights or scores that are not finite (NaN, infinite, or overflowing the dtype)."""


import argparse as _argparse  # noqa: E402  (appended here to keep merges with other branches simple)


class OptionError(ArgumentError, _argparse.ArgumentTypeError):
    """A command-line option value out of range (argparse shows its message, naming the option)."""
