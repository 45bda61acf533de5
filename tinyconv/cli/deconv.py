"""``tinyconv deconv``: DeconvNet reconstructions and the backward rules (paper §4).

    tinyconv deconv examples/digits/digit_3.png -o out/
    tinyconv deconv examples/digits/digit_3.png --layer conv_layers.3 --unit 5 -o out/

Without ``--layer``: the four-way comparison for the class score (gradient,
DeconvNet rule, explicit DeconvNet, guided backprop), each as a signed image
and together in ``<stem>_compare.png``. With ``--layer`` (name or index): the
explicit DeconvNet reconstruction from one feature map of that layer
(``--unit``; default the strongest map).
"""

from __future__ import annotations

from ..errors import TargetError
from ..methods.deconvnet import resolve_layer
from ..pictures.demo import load_net, parse_target
from ..pictures.figures import comparison_figures, unit_figures
from ..pictures.imaging import preprocess, unique_stems, write_files
from ._common import add_device_option, add_weights_option, nonnegative_int, output_folder


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "deconv",
        help="DeconvNet reconstruction and the gradient / DeconvNet / guided comparison (section 4)",
        description="Zeiler & Fergus's DeconvNet written out explicitly, compared with backprop and "
        "guided backprop. Default weights: the bundled MNIST network.",
    )
    p.add_argument("image", metavar="IMAGE", help="an image file")
    add_weights_option(p)
    p.add_argument("--target", metavar="C", help="class index or name (default: the top class)")
    p.add_argument("--layer", metavar="L", help="reconstruct from this layer (name or index) instead")
    p.add_argument(
        "--unit", type=nonnegative_int, metavar="U", help="feature map / unit of --layer (default: strongest)"
    )
    p.add_argument(
        "--keep",
        choices=("map", "max"),
        default="map",
        help="keep the whole feature map, or only its largest activation",
    )
    p.add_argument("-o", "--output", required=True, type=output_folder, metavar="DIR", help="output folder")
    add_device_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    net = load_net(args.weights, args.device)
    if args.layer is None and args.unit is not None:
        raise TargetError("--unit needs --layer")
    if args.layer is not None and args.target is not None:
        raise TargetError("give either --target or --layer/--unit, not both")
    target = parse_target(net, args.target)
    x = preprocess(args.image, net)
    stem = unique_stems([args.image])[0]
    if args.layer is None:
        figs = comparison_figures(net, x, stem, target)
    else:
        figs = unit_figures(net, x, stem, resolve_layer(net, args.layer), args.unit, args.keep)
    written = write_files(args.output, {f.name: f.image for f in figs})
    print(f"wrote {len(written)} files to {args.output}")
    return 0
