"""``tinyconv localize``: boxes from saliency maps by GraphCut (paper §3.2).

Two uses:

    tinyconv localize IMAGE... --weights W [--boxes DIR] -o DIR
        saliency of the top (or --target) class, GraphCut segmentation, box;
        with --boxes, Pascal VOC / ILSVRC XML files (same stem as the image)
        give ground truth and the command reports IoU and CorLoc.

    tinyconv localize --benchmark [--weights weights/scenes_cnn.npz] -o DIR
        the offline benchmark (``tinyconv.datasets.scenes``): GraphCut against three
        baselines on test scenes with known boxes; writes the table
        (results.md), per-image results (results.csv, summary.json) and
        pictures of a sample (samples.png).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DataError
from ..methods.localisation.benchmark import rows_csv, run_benchmark
from ..methods.localisation.photos import localize_files, summarise
from ..models.native import bundled, load, sha256
from ..pictures.figures import benchmark_samples, localisation_pictures
from ..pictures.imaging import unique_stems, write_files
from ._common import (
    add_device_option,
    add_weights_option,
    existing_folder,
    nonnegative_int,
    nonnegative_real,
    output_folder,
    positive_int,
    probability,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "localize",
        help="weakly supervised localisation: saliency -> GraphCut -> box (and its benchmark)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files to localise")
    p.add_argument("--benchmark", action="store_true", help="run the scene benchmark instead of IMAGEs")
    add_weights_option(p, default=None)
    p.add_argument(
        "--boxes",
        type=existing_folder,
        metavar="DIR",
        help="folder of Pascal VOC / ILSVRC XML files (IMAGE stem + .xml)",
    )
    p.add_argument("--origin", type=int, choices=(0, 1), default=1, help="XML coordinate origin (VOC: 1)")
    p.add_argument(
        "-o", "--output", type=output_folder, metavar="DIR", default="localize-out", help="output folder"
    )
    p.add_argument(
        "--target", type=nonnegative_int, default=None, help="class index (default: the top class)"
    )
    p.add_argument("--fg-quantile", type=probability, default=0.95, help="foreground seed quantile (0.95)")
    p.add_argument("--bg-quantile", type=probability, default=0.30, help="background seed quantile (0.30)")
    p.add_argument("--components", type=positive_int, default=5, help="Gaussians per colour model (5)")
    p.add_argument("--gamma", type=nonnegative_real, default=50.0, help="Potts weight γ (50)")
    p.add_argument("--scenes", type=positive_int, default=2000, help="benchmark: test scenes (2000)")
    p.add_argument(
        "--tune-scenes", type=positive_int, default=500, help="benchmark: training-split scenes for baselines"
    )
    p.add_argument(
        "--tune-graphcut",
        type=nonnegative_int,
        default=200,
        help="benchmark: of those, scenes to tune GraphCut's blur",
    )
    p.add_argument(
        "--smooth", type=nonnegative_real, default=0.0, help="IMAGE: blur σ of the saliency (0: the paper's)"
    )
    p.add_argument(
        "--pictures", type=nonnegative_int, default=24, help="benchmark: scenes drawn in samples.png (24)"
    )
    add_device_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.benchmark:
        if args.images:
            raise DataError("give either IMAGE files or --benchmark, not both")
        return run_benchmark_command(args)
    if not args.images:
        raise DataError("no IMAGE given (or use --benchmark)")
    if not args.weights:
        raise DataError("--weights FILE is required to compute saliency maps")
    return run_images(args)


def _options(args) -> dict:
    return dict(
        fg_quantile=args.fg_quantile,
        bg_quantile=args.bg_quantile,
        n_components=args.components,
        gamma=args.gamma,
    )


def _load_net(args, default=None):
    path = args.weights or (bundled(default) if default else None)
    net = load(path)
    net.to(args.device).eval()
    return net, f"{Path(path).name} (sha256 {sha256(path)[:16]}…)"


def run_benchmark_command(args) -> int:
    net, weights = _load_net(args, "scenes_cnn.npz")
    bench = run_benchmark(
        net, args.scenes, args.tune_scenes, args.tune_graphcut, args.pictures, _options(args), weights,
        log=lambda text: print(text, flush=True),
    )  # fmt: skip
    files = bench.files()
    samples = benchmark_samples(bench)
    if samples is not None:
        files["samples.png"] = samples
    write_files(args.output, files)
    print(bench.table, end="")
    print(f"wrote {args.output}/results.md, results.csv, summary.json, samples.png")
    return 0


def run_images(args) -> int:
    net, weights = _load_net(args)
    options = {**_options(args), "smooth": args.smooth}
    rows, found = localize_files(net, args.images, args.target, args.boxes, args.origin, options)
    summary = summarise(rows, options, weights)
    if "corloc" in summary:
        print(
            f"CorLoc {summary['corloc']:.1%} (IoU >= 0.5) over {summary['annotated']} annotated images; "
            f"mean IoU {summary['mean_iou']:.3f}"
        )
    files = localisation_pictures(found, unique_stems(args.images))
    files["results.csv"] = rows_csv(rows)
    files["summary.json"] = json.dumps(summary, indent=2) + "\n"
    write_files(args.output, files)
    print(f"wrote {len(rows)} pictures, results.csv and summary.json to {args.output}")
    return 0
