"""The ``tinyconv`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it.

Every problem a user can cause ends in one line on stderr and exit status 2,
never a traceback: a bad option (argparse's message, without the usage
block), a ``TinyconvError``, any ``OSError`` (a missing file, a read-only
folder, a full disk...), ``MemoryError``, a Pillow error (an unreadable or
oversized image), a missing optional dependency. Only an unexpected
exception raised by tinyconv itself still prints its traceback, followed by
a line saying it is a bug to report.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
import traceback

from ..errors import TinyconvError


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``--help`` shows the usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="tinyconv",
        description="A hand-written-backprop ConvNet engine: saliency maps, class models, "
        "DeconvNet and GraphCut localisation (Simonyan et al. 2014).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def _os_message(exc: OSError) -> str:
    """One line for an OSError: what failed, on which path, why."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else "") or str(exc) or type(exc).__name__
    hints = {errno.ENOSPC: " (the disk is full)", errno.EROFS: " (the file system is read-only)"}
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    where = f"{os.fsdecode(names[0])!r}: " if names else ""
    if not names and exc.strerror is None and str(exc):
        return _one_line(str(exc))
    return _one_line(f"{where}{reason}{hints.get(exc.errno, '')}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _pillow_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    names = ("DecompressionBombError", "UnidentifiedImageError")
    return module.startswith("PIL") or type(exc).__name__ in names


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (already printed, one line) or --help
        return exc.code if isinstance(exc.code, int) else 2
    prefix = f"tinyconv {args.command}: error:"
    try:
        return int(args.func(args) or 0)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a message meant for the user
            print(_one_line(exc.code), file=sys.stderr)
            return 2
        raise
    except TinyconvError as exc:
        print(f"{prefix} {_one_line(exc)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"{prefix} missing optional dependency {exc.name!r} ({_one_line(exc)})", file=sys.stderr)
        return 2
    except OSError as exc:  # FileNotFoundError, NotADirectoryError, EROFS, ENOSPC, ...
        print(f"{prefix} {_os_message(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prefix} not enough memory (is the input very large?)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _pillow_error(exc):
            print(f"{prefix} image: {_one_line(exc)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(
            f"tinyconv {args.command}: this is a bug, please report it "
            f"({type(exc).__name__}: {_one_line(exc)})",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
