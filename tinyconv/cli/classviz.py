"""``tinyconv classviz``: class model visualisation (paper §2).

    tinyconv classviz --target all -o out/
    tinyconv classviz --weights weights/fashion_cnn.npz --target Sneaker --steps 300 -o out/

Gradient ascent on the input for argmax_I S_c(I) − λ‖I‖² from the zero
image. Writes ``class_<c>_<name>.png`` per class (hyper-parameters and seed in
the PNG's text chunks), ``class_models.png`` (all of them) and
``class_models.json`` (parameters, final scores, per-step history).
"""

from __future__ import annotations

from ..errors import TinyconvError
from ..methods.classviz import DEFAULTS, OBJECTIVES
from ..pictures.demo import load_net, parse_target
from ..pictures.figures import classviz_figures
from ..pictures.imaging import write_files
from ._common import (
    add_device_option,
    add_weights_option,
    nonnegative_int,
    nonnegative_real,
    output_folder,
    positive_real,
    seed,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "classviz",
        help="class model images: gradient ascent on S_c(I) - l2*|I|^2 (Simonyan et al. 2014, section 2)",
        description="Class model visualisation by gradient ascent on the input with the weights frozen. "
        "Default weights: the bundled MNIST network. Jitter, blur and clipping go beyond the paper.",
    )
    add_weights_option(p)
    p.add_argument("--target", required=True, metavar="C", help="class index or name, or 'all'")
    p.add_argument(
        "--steps",
        type=nonnegative_int,
        default=DEFAULTS["steps"],
        help=f"ascent steps (default {DEFAULTS['steps']})",
    )
    p.add_argument(
        "--lr", type=positive_real, default=DEFAULTS["lr"], help=f"step size (default {DEFAULTS['lr']})"
    )
    p.add_argument(
        "--l2", type=nonnegative_real, default=DEFAULTS["l2"], help=f"λ of λ‖I‖² (default {DEFAULTS['l2']})"
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="score",
        help="'score' maximises S_c (the paper's), 'softmax' log P_c",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed, recorded with each image (default 0)")
    p.add_argument(
        "--jitter", type=nonnegative_int, default=0, help="beyond the paper: random shifts of up to N pixels"
    )
    p.add_argument(
        "--blur-every", type=nonnegative_int, default=0, help="beyond the paper: Gaussian blur every N steps"
    )
    p.add_argument("--blur-sigma", type=positive_real, default=0.5, help="beyond the paper: blur σ in pixels")
    p.add_argument("--clip", action="store_true", help="beyond the paper: keep pixels in [0, 255]")
    p.add_argument("-o", "--output", required=True, type=output_folder, metavar="DIR", help="output folder")
    add_device_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.steps < 0 or not args.lr > 0 or not args.l2 >= 0 or args.jitter < 0 or args.blur_every < 0:
        raise TinyconvError("need --steps >= 0, --lr > 0, --l2 >= 0, --jitter >= 0 and --blur-every >= 0")
    if args.blur_every and not args.blur_sigma > 0:
        raise TinyconvError("--blur-sigma must be > 0")
    net = load_net(args.weights, args.device)
    targets = None if args.target == "all" else [parse_target(net, args.target)]
    figs, record = classviz_figures(
        net,
        targets,
        steps=args.steps,
        lr=args.lr,
        l2=args.l2,
        objective=args.objective,
        seed=args.seed,
        jitter=args.jitter,
        blur_every=args.blur_every,
        blur_sigma=args.blur_sigma,
        clip=args.clip,
    )
    files = {f.name: f.image for f in figs}
    files["class_models.json"] = record
    written = write_files(args.output, files, {f.name: f.metadata for f in figs if f.metadata})
    for f in figs:
        if f.metadata:
            print(f.caption)
    print(f"wrote {len(written)} files to {args.output}")
    return 0
