"""Options shared by every subcommand, and the ``type=`` checks of their values.

Every numeric option is checked where argparse reads it: a value that is not
a finite number, or lies outside its range, ends in one line naming the
option (``tinyconv train: error: argument --lr: must be a finite number > 0,
got 'nan'``) and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import math
import os

from ..errors import OutputError
from ..files import check_output, check_output_folder

#: the largest seed accepted (NumPy's generators take any non-negative int; this keeps it a uint64)
MAX_SEED = 2**63 - 1


def add_device_option(parser) -> None:
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where to compute (default: cpu)"
    )


def add_weights_option(parser, required: bool = False, default=None) -> None:
    parser.add_argument(
        "--weights",
        required=required,
        default=default,
        metavar="FILE",
        help="network weights in tinyconv's .npz format" + (f" (default: {default})" if default else ""),
    )


def _range_text(low, high, low_open, high_open) -> str:
    def show(v):
        return str(v) if isinstance(v, int) else f"{v:g}"

    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{show(low)}, {show(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {show(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {show(high)}"
    return ""


def real(low=None, high=None, *, low_open=False, high_open=False):
    """argparse ``type=``: a finite float, optionally in a range (open or closed ends)."""
    where = _range_text(low, high, low_open, high_open)

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
            bad = True
        else:
            bad = not math.isfinite(value)
        if not bad and low is not None:
            bad = value <= low if low_open else value < low
        if not bad and high is not None:
            bad = value >= high if high_open else value > high
        if bad:
            raise argparse.ArgumentTypeError(
                f"must be a finite number{' ' + where if where else ''}, got {text!r}"
            )
        return value

    check.__name__ = f"number {where}".strip()
    return check


def integer(low=None, high=None):
    """argparse ``type=``: an int, optionally in [low, high]."""
    where = _range_text(low, high, False, False)

    def check(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer{' ' + where if where else ''}, got {text!r}"
            ) from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {where}, got {text!r}")
        return value

    check.__name__ = f"integer {where}".strip()
    return check


positive_int = integer(1)
nonnegative_int = integer(0)
seed = integer(0, MAX_SEED)
positive_real = real(0, low_open=True)
nonnegative_real = real(0)
probability = real(0, 1)
open_fraction = real(0, 1, low_open=True, high_open=True)


def retype(parser, **types) -> None:
    """Give the options ``dest=type`` of a parser built elsewhere (a library's
    ``add_arguments``) these ``type=`` checks."""
    for action in parser._actions:
        if action.dest in types:
            action.type = types[action.dest]


def existing_file(text: str) -> str:
    """argparse ``type=``: a path that is an existing regular file."""
    if not text or not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def existing_folder(text: str) -> str:
    """argparse ``type=``: a path that is an existing folder."""
    if not text or not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return text


def output_file(text: str) -> str:
    """argparse ``type=``: a file that can be written: not empty, not a folder,
    not under a regular file (``tinyconv.files.check_output``), so that a bad
    ``-o`` is refused before any work."""
    try:
        check_output(text, what="file")
    except OutputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def output_folder(text: str) -> str:
    """argparse ``type=``: a folder that can hold the outputs (it may not exist yet)."""
    try:
        check_output_folder(text, what="folder")
    except OutputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
