"""Options shared by every subcommand."""

from __future__ import annotations


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
