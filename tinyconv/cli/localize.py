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

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DataError
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

METHODS = ("graphcut", "graphcut_smooth", "threshold", "centred", "whole")
QUANTILE_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
SMOOTH_GRID = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "localize",
        help="weakly supervised localisation: saliency -> GraphCut -> box (and its benchmark)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
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
        return run_benchmark(args)
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


def _image_options(args) -> dict:
    return {**_options(args), "smooth": args.smooth}


def _load_net(args, default=None):
    from ..models.native import bundled, load, sha256

    path = args.weights or (bundled(default) if default else None)
    net = load(path)
    net.to(args.device).eval()
    return net, f"{Path(path).name} (sha256 {sha256(path)[:16]}…)"


def _saliency_batches(net, x, batch=200):
    """Saliency maps (N, H, W) and top classes (N,) for host input x, in batches."""
    from ..engine.backend import to_device, to_numpy
    from ..methods.saliency import saliency

    maps, tops = [], []
    for i in range(0, len(x), batch):
        xb = to_device(np.ascontiguousarray(x[i : i + batch]), net.device)
        tops.append(to_numpy(net.predict(xb)).argmax(1))
        maps.append(to_numpy(saliency(net, xb)))
    return np.concatenate(maps), np.concatenate(tops)


# --- drawing ---


def _draw(image, boxes, mask=None, scale=4):
    """uint8 (H, W, 3) image enlarged ``scale`` times, the mask tinted red,
    boxes = [(box, colour)] drawn as rectangles (x1/y1 exclusive)."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if mask is not None:
        a[mask] = 0.55 * a[mask] + 0.45 * np.array([255.0, 0, 0])
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    width = max(1, scale // 2 + 1)
    for box, colour in boxes:
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=width)
    return np.asarray(im)


TRUE_COLOUR, GRAPHCUT_COLOUR, THRESHOLD_COLOUR = (40, 230, 40), (255, 40, 40), (255, 230, 0)


# --- the benchmark ---


def _tune(maps, truths, candidates, box_of):
    """Mean IoU on tuning scenes of each candidate setting; returns (best, {setting: mean IoU})."""
    from ..methods.localisation.boxes import iou

    scores = {}
    for setting in candidates:
        scores[setting] = float(np.mean([iou(box_of(k, setting), t) for k, t in enumerate(truths)]))
    return max(scores, key=scores.get), scores


def run_benchmark(args) -> int:

    from ..datasets import scenes as sc
    from ..methods.localisation import pipeline as loc
    from ..methods.localisation.boxes import corloc, iou
    from ..pictures.imaging import heatmap, montage, write_files
    from ..progress import Progress

    net, weights = _load_net(args, "scenes_cnn.npz")
    t0 = time.perf_counter()
    test = sc.load_scenes("test", n=args.scenes, seed=1)
    tune = sc.load_scenes("train", n=args.tune_scenes, seed=2)
    mean, std = net.mean, net.std
    options = _options(args)
    # every tuned setting comes from training-split scenes (seed 2), never from the test scenes
    mean_size = tuple(float(v) for v in (tune.boxes[:, 2:] - tune.boxes[:, :2]).mean(0))
    tune_maps, _ = _saliency_batches(net, tune.tensors(mean, std))
    truths = [tuple(b) for b in tune.boxes]
    grid = [(q, sigma) for q in QUANTILE_GRID for sigma in SMOOTH_GRID]
    thr_best, thr_scores = _tune(tune_maps, truths, grid, lambda k, qs: loc.threshold_box(tune_maps[k], *qs))
    n_gc = min(len(tune), args.tune_graphcut)
    print(f"tuning the saliency blur for GraphCut on {n_gc} training-split scenes", flush=True)
    gc_best, gc_scores = _tune(
        tune_maps[:n_gc], truths[:n_gc], [s for s in SMOOTH_GRID if s > 0],
        lambda k, sigma: loc.localize(tune.images[k], tune_maps[k], smooth=sigma, **options).box,
    )  # fmt: skip

    t1 = time.perf_counter()
    maps, tops = _saliency_batches(net, test.tensors(mean, std))
    saliency_seconds = (time.perf_counter() - t1) / len(test)
    rows, results, seconds = [], [], {"graphcut": [], "graphcut_smooth": []}
    with Progress(len(test), "localising") as bar:
        for k in range(len(test)):
            image, truth, smap = test.images[k], tuple(int(v) for v in test.boxes[k]), maps[k]
            found = {}
            for name, sigma in (("graphcut", 0.0), ("graphcut_smooth", gc_best)):
                start = time.perf_counter()
                found[name] = loc.localize(image, smap, smooth=sigma, **options)
                seconds[name].append(time.perf_counter() - start)
            boxes = {
                "graphcut": found["graphcut"].box,
                "graphcut_smooth": found["graphcut_smooth"].box,
                "threshold": loc.threshold_box(smap, *thr_best),
                "centred": loc.centred_box(image.shape, mean_size),
                "whole": loc.whole_image_box(image.shape),
            }
            row = {"index": k, "label": int(test.labels[k]), "predicted": int(tops[k]), "true_box": truth}
            for name, box in boxes.items():
                row[f"{name}_box"], row[f"{name}_iou"] = box, round(iou(box, truth), 6)
            for name in seconds:
                row[f"{name}_seconds"] = round(seconds[name][-1], 5)
            row["reason"] = found["graphcut"].reason or found["graphcut_smooth"].reason or ""
            rows.append(row)
            if k < args.pictures:
                results.append((found, boxes))
            bar.update(1)

    table = {}
    for name in METHODS:
        ious = [r[f"{name}_iou"] for r in rows]
        table[name] = {"corloc": corloc(ious), "mean_iou": float(np.mean(ious))}
    correct = np.array([r["label"] == r["predicted"] for r in rows])
    summary = {
        "weights": weights,
        "scenes": len(test),
        "test_split": "Fashion-MNIST test split, seed 1",
        "tuning_split": f"{len(tune)} Fashion-MNIST training-split scenes, seed 2 ({n_gc} for GraphCut)",
        "classifier_accuracy": float(correct.mean()),
        "options": options,
        "graphcut_smooth_sigma": gc_best,
        "graphcut_smooth_tuning_mean_iou": {str(k): v for k, v in gc_scores.items()},
        "threshold_quantile_sigma": thr_best,
        "threshold_tuning_mean_iou": {f"q={q} sigma={s}": v for (q, s), v in thr_scores.items()},
        "centred_box_size": mean_size,
        "methods": table,
        "graphcut_corloc_when_class_correct": corloc(np.array([r["graphcut_iou"] for r in rows])[correct])
        if correct.any()
        else None,
        "seconds_per_image": {
            "saliency": saliency_seconds,
            **{name: float(np.mean(v)) for name, v in seconds.items()},
            **{f"{name}_median": float(np.median(v)) for name, v in seconds.items()},
        },
        "fallbacks": int(sum(bool(r["reason"]) for r in rows)),
        "total_seconds": time.perf_counter() - t0,
    }
    names = {
        "graphcut": "GraphCut on saliency, the paper's settings (q 0.95 / 0.30, 5 Gaussians, γ 50)",
        "graphcut_smooth": f"GraphCut on saliency blurred with σ = {gc_best} px (σ tuned on training scenes)",
        "threshold": f"box of saliency ≥ its {thr_best[0]} quantile, blur σ = {thr_best[1]} px (both tuned)",
        "centred": f"centred box of the mean training size ({mean_size[0]:.1f} x {mean_size[1]:.1f})",
        "whole": "whole image",
    }
    lines = [
        f"Localisation benchmark: {len(test)} test scenes ({test.images.shape[1]}x{test.images.shape[2]}), "
        f"classifier accuracy {correct.mean():.1%}",
        "",
        "| method | CorLoc (IoU ≥ 0.5) | mean IoU |",
        "|---|---|---|",
    ]
    for name in METHODS:
        lines.append(f"| {names[name]} | {table[name]['corloc']:.1%} | {table[name]['mean_iou']:.3f} |")
    lines += [
        "",
        f"Time per image: saliency {1000 * saliency_seconds:.1f} ms (batches of 200); GraphCut pipeline "
        f"{1000 * np.mean(seconds['graphcut']):.1f} ms "
        f"(median {1000 * np.median(seconds['graphcut']):.1f} ms), "
        f"with the blur {1000 * np.mean(seconds['graphcut_smooth']):.1f} ms.",
    ]
    table_md = "\n".join(lines) + "\n"

    tiles, captions = [], []
    classes = list(test.classes)
    for k, (found, boxes) in enumerate(results):
        truth = tuple(test.boxes[k])
        for name in ("graphcut", "graphcut_smooth"):
            drawn = [
                (boxes["threshold"], THRESHOLD_COLOUR),
                (truth, TRUE_COLOUR),
                (boxes[name], GRAPHCUT_COLOUR),
            ]
            tiles.append(_draw(test.images[k], drawn, found[name].mask))
        heat = Image.fromarray(heatmap(maps[k])).resize(tiles[-1].shape[1::-1], Image.NEAREST)
        tiles.append(np.asarray(heat))
        captions += [
            f"{classes[test.labels[k]]} -> {classes[tops[k]]}; GraphCut IoU {rows[k]['graphcut_iou']:.2f}",
            f"blurred σ {gc_best}: IoU {rows[k]['graphcut_smooth_iou']:.2f}",
            f"saliency; threshold IoU {rows[k]['threshold_iou']:.2f}",
        ]
    files = {
        "results.md": table_md,
        "summary.json": json.dumps(summary, indent=2) + "\n",
        "results.csv": _csv(rows),
    }
    if tiles:
        files["samples.png"] = montage(
            tiles,
            captions,
            columns=9,
            title="green: true box, red: GraphCut box and mask (paper settings, then blurred saliency), "
            "yellow: threshold box",
        )
    write_files(args.output, files)
    print(table_md, end="")
    print(f"wrote {args.output}/results.md, results.csv, summary.json, samples.png")
    return 0


def _csv(rows) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " ".join(map(str, v)) if isinstance(v, tuple) else v for k, v in row.items()})
    return out.getvalue()


# --- user images ---


def _view_geometry(size, shape):
    """How ``imaging.preprocess`` maps an image of ``size`` (w, h) onto the network's
    (H, W): scale to cover, cut the centre. Returns (scale_x, scale_y, left, top)."""
    w, h = size
    height, width = shape
    if (h, w) == (height, width):
        return 1.0, 1.0, 0, 0
    scale = max(height / h, width / w)
    new = (max(width, round(w * scale)), max(height, round(h * scale)))
    return new[0] / w, new[1] / h, (new[0] - width) // 2, (new[1] - height) // 2


def run_images(args) -> int:

    from ..engine.backend import to_numpy
    from ..methods.localisation import pipeline as loc
    from ..methods.localisation.boxes import best_iou, corloc, find_annotation, read_voc_xml
    from ..methods.saliency import saliency
    from ..pictures.imaging import load_image, preprocess, write_files
    from ..progress import Progress

    net, weights = _load_net(args)
    shape = net.input_shape
    channels = shape[0] if shape else 3
    files, rows = {}, []
    with Progress(len(args.images), "localising") as bar:
        for path in args.images:
            im = load_image(path).convert("L" if channels == 1 else "RGB")
            x = preprocess(im, net)
            scores = to_numpy(net.predict(x))[0]
            target = int(scores.argmax()) if args.target is None else args.target
            smap = to_numpy(saliency(net, x, target))[0]
            if shape:
                sx, sy, left, top = _view_geometry(im.size, shape[1:])
                view = im.resize((round(im.width * sx), round(im.height * sy)), Image.BILINEAR)
                view = view.crop((left, top, left + shape[2], top + shape[1]))
            else:
                sx, sy, left, top, view = 1.0, 1.0, 0, 0, im
            start = time.perf_counter()
            result = loc.localize(np.asarray(view), smap, **_image_options(args))
            seconds = time.perf_counter() - start
            x0, y0, x1, y1 = result.box
            box = (
                max(0, int(np.floor((x0 + left) / sx))),
                max(0, int(np.floor((y0 + top) / sy))),
                min(im.width, int(np.ceil((x1 + left) / sx))),
                min(im.height, int(np.ceil((y1 + top) / sy))),
            )
            full = np.zeros((round(im.height * sy), round(im.width * sx)), bool)
            full[top : top + result.mask.shape[0], left : left + result.mask.shape[1]] = result.mask
            mask = np.asarray(Image.fromarray(full).resize(im.size, Image.NEAREST))
            name = net.classes[target] if net.classes and 0 <= target < len(net.classes) else str(target)
            row = {
                "image": str(path),
                "class": target,
                "class_name": name,
                "box": box,
                "seconds": round(seconds, 4),
                "reason": result.reason or "",
            }
            truths = []
            if args.boxes:
                xml = find_annotation(path, args.boxes)
                if xml is None:
                    print(
                        f"warning: no annotation {Path(path).stem}.xml in {args.boxes}; not counted in CorLoc"
                    )
                else:
                    truths = read_voc_xml(xml, origin=args.origin).boxes
                    row["iou"] = round(best_iou(box, truths), 6)
            rows.append(row)
            scale = max(1, round(448 / max(im.size)))
            drawn = _draw(
                np.asarray(im), [(t, TRUE_COLOUR) for t in truths] + [(box, GRAPHCUT_COLOUR)], mask, scale
            )
            files[f"{Path(path).stem}_localized.png"] = drawn
            print(f"{path}: {name} box {box}" + (f" IoU {row['iou']:.3f}" if "iou" in row else ""))
            bar.update(1)
    summary = {"weights": weights, "images": len(rows), "options": _image_options(args)}
    scored = [r["iou"] for r in rows if "iou" in r]
    if scored:
        summary.update(corloc=corloc(scored), mean_iou=float(np.mean(scored)), annotated=len(scored))
        print(
            f"CorLoc {summary['corloc']:.1%} (IoU >= 0.5) over {len(scored)} annotated images; "
            f"mean IoU {summary['mean_iou']:.3f}"
        )
    files["results.csv"] = _csv(rows)
    files["summary.json"] = json.dumps(summary, indent=2) + "\n"
    write_files(args.output, files)
    print(f"wrote {len(rows)} pictures, results.csv and summary.json to {args.output}")
    return 0
