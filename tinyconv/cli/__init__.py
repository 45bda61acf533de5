"""The ``tinyconv`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it. Errors a user can cause (``TinyconvError``, missing
files, a missing optional dependency) end in a one-line message and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ..errors import TinyconvError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyconv",
        description="A hand-written-backprop ConvNet engine: saliency maps, class models, "
        "DeconvNet and GraphCut localisation (Simonyan et al. 2014).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (TinyconvError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"tinyconv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(
            f"tinyconv {args.command}: error: missing optional dependency {exc.name!r} ({exc})",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
