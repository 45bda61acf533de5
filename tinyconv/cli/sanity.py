"""``tinyconv sanity``: sanity checks for the attribution maps (beyond the paper).

    tinyconv sanity -o out/                                   # the bundled MNIST CNN, its example digits
    tinyconv sanity --weights weights/scenes_cnn.npz -o out/
    tinyconv sanity --weights true_labels.npz --random-labels random_labels.npz examples/fashion/*.png -o out/

Adebayo et al. (NeurIPS 2018): the model-parameter randomisation test
(cascading from the top layer down, and independent per layer), class
sensitivity, and — with ``--random-labels`` — the data randomisation test
(the maps of ``--weights`` against those of the same network trained on
permuted labels). Writes ``sanity.md`` (the tables), ``sanity.json`` and
``randomisation_<mode>.png`` (their Fig. 2, one row per method).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import TinyconvError
from ..methods import attribution, sanity
from ..pictures.beyond import randomisation_panel
from ..pictures.demo import example_images, load_net, unique_stems
from ..pictures.imaging import deprocess, preprocess, write_files
from ._common import add_device_option, add_weights_option

CHECKS = ("cascading", "independent", "classes", "edges", "data")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sanity",
        help="sanity checks of every attribution method: parameter and data randomisation, class "
        "sensitivity (Adebayo et al. 2018; beyond the paper)",
        description="Beyond the paper: Adebayo et al.'s sanity checks for every attribution method "
        "tinyconv has. Spearman rank correlation (of |map| and signed) and SSIM between the maps of "
        "the trained network and of a randomised one (or of other classes). Default weights: the "
        "bundled MNIST network; default images: its bundled examples.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (default: the network's examples)")
    add_weights_option(p)
    p.add_argument(
        "--methods",
        default=",".join(attribution.METHODS),
        help=f"comma-separated methods (default all: {','.join(attribution.METHODS)})",
    )
    p.add_argument(
        "--checks",
        default="cascading,independent,classes,edges",
        help=f"comma-separated checks of {','.join(CHECKS)} (default cascading,independent,classes,edges; "
        "data is added by --random-labels; edges: similarity to the input's Sobel edge map)",
    )
    p.add_argument(
        "--random-labels",
        metavar="FILE",
        help="the same network trained on permuted labels: run the data randomisation test "
        "(see examples/beyond_train_random_labels.py)",
    )
    p.add_argument(
        "--blocks",
        action="store_true",
        help="randomise by block (names before the first '_' or '.', e.g. VGG-16's block5 ... block1)",
    )
    p.add_argument("--max-images", type=int, default=10, help="at most this many images (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomised weights (default 0)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    add_device_option(p)
    p.set_defaults(func=run)


def _choose(text: str, known, what: str) -> list[str]:
    chosen = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in chosen if v not in known]
    if bad or not chosen:
        raise TinyconvError(
            f"unknown {what} {', '.join(bad) or '(none given)'}; expected of {', '.join(known)}"
        )
    return chosen


def run(args) -> int:
    methods = _choose(args.methods, attribution.METHODS, "method")
    checks = _choose(args.checks, CHECKS, "check")
    if args.random_labels and "data" not in checks:
        checks.append("data")
    if "data" in checks and not args.random_labels:
        raise TinyconvError("the data randomisation check needs --random-labels FILE")
    if args.max_images < 1:
        raise TinyconvError("--max-images must be >= 1")
    net = load_net(args.weights, args.device)
    other = load_net(args.random_labels, args.device) if args.random_labels else None
    paths = args.images or [str(p) for p in example_images(Path(args.weights or _bundled()))]
    if not paths:
        raise TinyconvError("no images given and the network has no bundled examples")
    paths = paths[: args.max_images]
    xs = np.concatenate([preprocess(path, net) for path in paths])  # every image checked first
    layers = sanity.parameter_layers(net)
    if args.blocks:
        layers = sanity.group_blocks(layers)
    weights = args.weights or "the bundled MNIST CNN"
    lines = [
        f"# Sanity checks of {weights} (beyond the paper)",
        "",
        f"{len(paths)} images: {', '.join(unique_stems(paths))}. Similarities are means over the images; "
        "1 = the same map, 0 = unrelated.",
    ]
    record: dict = {"weights": str(weights), "images": paths, "methods": methods}
    files: dict = {}
    for mode in ("cascading", "independent"):
        if mode not in checks:
            continue
        result = sanity.parameter_randomisation(net, xs, methods, mode, layers, seed=args.seed)
        record[mode] = {"steps": result.steps, "scores": result.scores}
        for what in sanity.SIMILARITIES:
            lines += ["", f"## Parameter randomisation, {mode}: {what}", "",
                      sanity.randomisation_table(result, what).markdown()]  # fmt: skip
        files[f"randomisation_{mode}.png"] = randomisation_panel(result, deprocess(xs[0], net))
    summary = {}
    if "classes" in checks:
        summary["classes"] = record["classes"] = sanity.class_sensitivity(net, xs, methods)
    if "edges" in checks:
        summary["edges"] = record["edges"] = sanity.edge_similarity(net, xs, methods)
    if "data" in checks:
        data = sanity.compare_networks(net, other, xs, methods)
        data.pop("maps")
        summary["data"] = record["data"] = data
    if summary:
        lines += ["", "## " + " and ".join({"classes": "Class sensitivity (top class against every other)",
                                             "edges": "similarity to the input's edge map",
                                             "data": "data randomisation (true against permuted labels)"}[k]
                                            for k in summary),  # fmt: skip
                  "", sanity.summary_table(summary).markdown()]  # fmt: skip
    files["sanity.md"] = "\n".join(lines) + "\n"
    files["sanity.json"] = json.dumps(record, indent=1, default=float) + "\n"
    written = write_files(args.output, files)
    print("\n".join(lines))
    print(f"wrote {len(written)} files to {args.output}")
    return 0


def _bundled() -> Path:
    from ..models.native import bundled

    return bundled("mnist_cnn.npz")
