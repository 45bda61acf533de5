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


class PrecisionWarning(UserWarning):
    """Parameter gradients computed in a wider dtype than the parameters were
    rounded on the way into ``layer.grads`` (e.g. float64 input to a float32
    network): cast the network (``net.astype(np.float64)``) for float64 checks."""
