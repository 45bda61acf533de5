"""``tinyconv saliency``: image-specific class saliency maps (paper §3).

    tinyconv saliency examples/digits/digit_3.png -o out/
    tinyconv saliency photo.jpg --weights vgg16.npz --target 281 --smoothgrad -o out/

For each image writes ``<stem>_saliency.png`` (M_ij = max_ch |∂S_c/∂I|),
``<stem>_overlay.png``, ``<stem>_gradient.png`` (signed) and
``<stem>_panel.png`` (all side by side), plus ``<stem>_smoothgrad.png`` with
``--smoothgrad``. ``--method`` (beyond the paper, except ``saliency``)
writes ``<stem>_<method>.png`` and its overlay instead. Every input is
checked before anything is written.
"""

from __future__ import annotations

from ..errors import TinyconvError
from ..methods.attribution import METHODS
from ..pictures.demo import load_net, parse_target
from ..pictures.figures import saliency_figures
from ..pictures.imaging import preprocess, unique_stems, write_files
from ._common import (
    add_device_option,
    add_weights_option,
    nonnegative_real,
    output_folder,
    positive_int,
    seed,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "saliency",
        help="saliency maps: max over channels of |dS_c/dI| (Simonyan et al. 2014, section 3)",
        description="Image-specific class saliency maps from one backward pass of the unnormalised "
        "class score. Writes PNGs into DIR. Default weights: the bundled MNIST network.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    add_weights_option(p)
    p.add_argument("--target", metavar="C", help="class index or name (default: each image's top class)")
    p.add_argument("--smoothgrad", action="store_true", help="also SmoothGrad (beyond the paper)")
    p.add_argument(
        "--method",
        choices=tuple(METHODS),
        default="saliency",
        help="the map to draw: saliency (the paper's, default) or, beyond the paper, "
        + ", ".join(m for m in METHODS if m != "saliency"),
    )
    p.add_argument("--samples", type=positive_int, default=25, help="SmoothGrad: noisy copies (default 25)")
    p.add_argument(
        "--sigma-fraction",
        type=nonnegative_real,
        default=0.15,
        help="SmoothGrad: noise standard deviation σ as a fraction of the input's range (default 0.15)",
    )
    p.add_argument(
        "--sigma",
        type=nonnegative_real,
        default=None,
        help="SmoothGrad: noise standard deviation σ in network-input units (overrides --sigma-fraction)",
    )
    p.add_argument("--seed", type=seed, default=0, help="SmoothGrad: noise seed (default 0)")
    p.add_argument("-o", "--output", required=True, type=output_folder, metavar="DIR", help="output folder")
    add_device_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.samples < 1 or not args.sigma_fraction >= 0 or (args.sigma is not None and not args.sigma >= 0):
        raise TinyconvError("--samples must be >= 1, and --sigma and --sigma-fraction >= 0")
    net = load_net(args.weights, args.device)
    target = parse_target(net, args.target)
    xs = [preprocess(path, net) for path in args.images]  # every image checked before any work
    smooth = None
    if args.smoothgrad:
        noise = {"sigma": args.sigma} if args.sigma is not None else {"sigma_fraction": args.sigma_fraction}
        smooth = {"samples": args.samples, **noise, "seed": args.seed}
    if args.method != "saliency":  # beyond the paper: tinyconv.pictures.beyond draws the map
        from ..pictures.beyond import method_figures

        smooth = smooth or {"samples": args.samples, "seed": args.seed}
        options = {"smoothgrad": smooth, "occlusion": {"progress": True}}
        figs = [
            f
            for x, stem in zip(xs, unique_stems(args.images), strict=True)
            for f in method_figures(net, x, stem, target, [args.method], options)
        ]
    else:
        figs = [
            f
            for x, stem in zip(xs, unique_stems(args.images), strict=True)
            for f in saliency_figures(net, x, stem, target, smooth)
        ]
    written = write_files(args.output, {f.name: f.image for f in figs})
    print(f"wrote {len(written)} files to {args.output}")
    return 0
