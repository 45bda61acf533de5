"""``tinyconv inspect``: a per-layer table of one forward and backward pass.

    tinyconv inspect examples/digits/digit_3.png
    tinyconv inspect --weights vgg16.npz photo.jpg --target 281
    tinyconv inspect --arch vgg16              # random weights, random input

Columns: output shape, parameters, FLOPs, forward and backward milliseconds,
‖a‖ (the layer's output) and ‖∂S_c/∂a‖ (the gradient of the class score);
see ``tinyconv.tools.layer_table``.
"""

from __future__ import annotations

import json

import numpy as np

from ..engine.backend import to_device
from ..errors import OptionError
from ..files import check_output, write_text
from ..models.registry import build
from ..pictures.demo import load_net, parse_target
from ..pictures.imaging import preprocess
from ..tools.layer_table import format_layer_table, layer_table
from ._common import add_device_option, add_weights_option, output_file, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="per-layer shapes, parameters, FLOPs, forward/backward ms, activation and gradient norms",
        description="Run one image through the network layer by layer and print, for every layer, its "
        "output shape, parameter count, FLOPs, forward and backward time, and the norms of its output "
        "and of the gradient of the class score with respect to that output. Default weights: the "
        "bundled MNIST network; without IMAGE a fixed random input is used.",
    )
    p.add_argument("image", nargs="?", metavar="IMAGE", help="an image file (default: random input)")
    add_weights_option(p)
    p.add_argument("--arch", help="instead of --weights: a freshly initialised architecture (e.g. vgg16)")
    p.add_argument("--target", metavar="C", help="class index or name (default: the top class)")
    p.add_argument(
        "--batch", type=positive_int, default=1, help="copies of the input in the batch (default 1)"
    )
    p.add_argument("--reps", type=positive_int, default=3, help="timed runs after a warm-up (default 3)")
    p.add_argument("--param-grads", action="store_true", help="also compute parameter gradients in backward")
    p.add_argument("--json", type=output_file, metavar="FILE", help="also write the rows as JSON")
    add_device_option(p)
    p.set_defaults(func=run)


def _network(args):
    if args.arch and args.weights:
        raise OptionError("give --weights or --arch, not both")
    if args.arch:
        return build(args.arch, seed=0).to(args.device).eval()
    return load_net(args.weights, args.device)


def run(args) -> int:
    if args.batch < 1 or args.reps < 1:
        raise OptionError("--batch and --reps must be >= 1")
    if args.json:
        check_output(args.json, [args.image, args.weights], "--json file")
    net = _network(args)
    if args.image:
        x = preprocess(args.image, net)
    else:
        if net.input_shape is None:
            raise OptionError("the network does not record its input shape: give an IMAGE")
        x = np.random.default_rng(0).standard_normal((1, *net.input_shape), dtype=np.float32)
    x = to_device(np.repeat(np.asarray(x, dtype=np.float32), args.batch, axis=0), args.device)
    rows = layer_table(net, x, parse_target(net, args.target), args.reps, args.param_grads)
    print(format_layer_table(rows))
    if args.json:
        write_text(args.json, json.dumps(rows, indent=1))
        print(f"wrote {args.json}")
    return 0
