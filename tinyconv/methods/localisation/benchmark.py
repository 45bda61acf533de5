"""The offline localisation benchmark: GraphCut against three baselines on
synthetic scenes with known boxes (``tinyconv.datasets.scenes``).

Protocol (``run_benchmark``):

1. saliency maps of the top class for ``scenes`` test scenes (Fashion-MNIST
   test split, seed 1) and ``tune_scenes`` tuning scenes (training split,
   seed 2): every tuned setting comes from the tuning scenes, never the test;
2. tuning on the training split: the threshold baseline's quantile and blur
   (grid ``QUANTILE_GRID`` x ``SMOOTH_GRID``), GraphCut's saliency blur σ (on
   the first ``tune_graphcut`` of them) and the centred baseline's box size
   (the mean training box);
3. on every test scene: GraphCut with the paper's settings, GraphCut on the
   blurred map, the threshold box, the centred box and the whole image, each
   scored by IoU with the true box; CorLoc = the fraction with IoU ≥ 0.5.

``run_benchmark`` returns a ``Benchmark`` (per-scene rows, the summary, the
Markdown table, and what ``tinyconv.pictures.figures.benchmark_samples``
draws); ``tinyconv localize --benchmark`` writes them.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field

import numpy as np

from ...datasets import scenes as sc
from ...engine.backend import to_device, to_numpy
from ...progress import Progress
from ..saliency import saliency
from . import pipeline as loc
from .boxes import corloc, iou

__all__ = [
    "METHODS",
    "Benchmark",
    "Tuning",
    "method_names",
    "rows_csv",
    "run_benchmark",
    "saliency_batches",
    "tune",
]

METHODS = ("graphcut", "graphcut_smooth", "threshold", "centred", "whole")
QUANTILE_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
SMOOTH_GRID = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


@dataclass
class Tuning:
    """Settings tuned on the training split, with the mean IoU of every candidate."""

    mean_size: tuple  # (width, height) of the centred baseline's box
    threshold: tuple  # (quantile, σ) of the threshold baseline
    threshold_scores: dict
    sigma: float  # GraphCut's saliency blur
    sigma_scores: dict
    graphcut_scenes: int
    scenes: int


@dataclass
class Benchmark:
    """What ``run_benchmark`` measured.

    rows:    one dict per test scene (boxes, IoUs, seconds, fallback reason).
    summary: the JSON record (settings, tuning, the table, timings).
    table:   the Markdown table of results.md.
    test, maps, tops: the test scenes, their saliency maps (N, H, W) and top classes.
    samples: for the first ``pictures`` scenes, (Localization per GraphCut variant, boxes).
    """

    rows: list
    summary: dict
    table: str
    test: object = field(repr=False)
    maps: np.ndarray = field(repr=False)
    tops: np.ndarray = field(repr=False)
    samples: list = field(repr=False, default_factory=list)

    def files(self) -> dict:
        """The text files of the benchmark: results.md, summary.json, results.csv."""
        return {
            "results.md": self.table,
            "summary.json": json.dumps(self.summary, indent=2) + "\n",
            "results.csv": rows_csv(self.rows),
        }


def saliency_batches(net, x, batch: int = 200):
    """Saliency maps (N, H, W) and top classes (N,) for host input x (N, C, H, W), in batches."""
    maps, tops = [], []
    for i in range(0, len(x), batch):
        xb = to_device(np.ascontiguousarray(x[i : i + batch]), net.device)
        tops.append(to_numpy(net.predict(xb)).argmax(1))
        maps.append(to_numpy(saliency(net, xb)))
    return np.concatenate(maps), np.concatenate(tops)


def _tune(truths, candidates, box_of):
    """Mean IoU of each candidate setting over the tuning scenes; (best, {setting: mean IoU})."""
    scores = {}
    for setting in candidates:
        scores[setting] = float(np.mean([iou(box_of(k, setting), t) for k, t in enumerate(truths)]))
    return max(scores, key=scores.get), scores


def tune(net, scenes, options: dict, graphcut_scenes: int, log=print) -> Tuning:
    """The baselines' settings and GraphCut's blur, tuned on ``scenes`` (the training split)."""
    mean_size = tuple(float(v) for v in (scenes.boxes[:, 2:] - scenes.boxes[:, :2]).mean(0))
    maps, _ = saliency_batches(net, scenes.tensors(net.mean, net.std))
    truths = [tuple(b) for b in scenes.boxes]
    grid = [(q, sigma) for q in QUANTILE_GRID for sigma in SMOOTH_GRID]
    thr_best, thr_scores = _tune(truths, grid, lambda k, qs: loc.threshold_box(maps[k], *qs))
    n_gc = min(len(scenes), graphcut_scenes)
    log(f"tuning the saliency blur for GraphCut on {n_gc} training-split scenes")
    gc_best, gc_scores = _tune(
        truths[:n_gc], [s for s in SMOOTH_GRID if s > 0],
        lambda k, sigma: loc.localize(scenes.images[k], maps[k], smooth=sigma, **options).box,
    )  # fmt: skip
    return Tuning(mean_size, thr_best, thr_scores, gc_best, gc_scores, n_gc, len(scenes))


def _scene_row(k, image, smap, label, top, truth, tuning: Tuning, options: dict):
    """Every method on one test scene: (row, {variant: Localization}, {method: box})."""
    found, seconds = {}, {}
    for name, sigma in (("graphcut", 0.0), ("graphcut_smooth", tuning.sigma)):
        start = time.perf_counter()
        found[name] = loc.localize(image, smap, smooth=sigma, **options)
        seconds[name] = time.perf_counter() - start
    boxes = {
        "graphcut": found["graphcut"].box,
        "graphcut_smooth": found["graphcut_smooth"].box,
        "threshold": loc.threshold_box(smap, *tuning.threshold),
        "centred": loc.centred_box(image.shape, tuning.mean_size),
        "whole": loc.whole_image_box(image.shape),
    }
    row = {"index": k, "label": int(label), "predicted": int(top), "true_box": truth}
    for name, box in boxes.items():
        row[f"{name}_box"], row[f"{name}_iou"] = box, round(iou(box, truth), 6)
    for name, value in seconds.items():
        row[f"{name}_seconds"] = round(value, 5)
    row["reason"] = found["graphcut"].reason or found["graphcut_smooth"].reason or ""
    return row, found, boxes


def run_benchmark(
    net,
    scenes: int = 2000,
    tune_scenes: int = 500,
    tune_graphcut: int = 200,
    pictures: int = 24,
    options: dict | None = None,
    weights: str = "",
    progress: bool = True,
    log=print,
) -> Benchmark:
    """The benchmark of the module docstring on ``net`` (the scene classifier).

    options: ``localize`` options shared by every GraphCut run (fg_quantile,
    bg_quantile, n_components, gamma), checked first. ``weights`` names the
    network in the summary. Returns a ``Benchmark``.
    """
    options = {**dict(fg_quantile=0.95, bg_quantile=0.30, n_components=5, gamma=50.0), **(options or {})}
    loc.check_options(**options)
    t0 = time.perf_counter()
    test = sc.load_scenes("test", n=scenes, seed=1)
    tuning = tune(net, sc.load_scenes("train", n=tune_scenes, seed=2), options, tune_graphcut, log)
    t1 = time.perf_counter()
    maps, tops = saliency_batches(net, test.tensors(net.mean, net.std))
    saliency_seconds = (time.perf_counter() - t1) / len(test)
    rows, samples = [], []
    with Progress(len(test), "localising", disable=not progress) as bar:
        for k in range(len(test)):
            truth = tuple(int(v) for v in test.boxes[k])
            row, found, boxes = _scene_row(
                k, test.images[k], maps[k], test.labels[k], tops[k], truth, tuning, options
            )
            rows.append(row)
            if k < pictures:
                samples.append((found, boxes))
            bar.update(1)
    summary = _summary(rows, tuning, options, weights, len(test), saliency_seconds)
    summary["total_seconds"] = time.perf_counter() - t0
    table = _table(summary, test.images.shape[1:3])
    return Benchmark(rows, summary, table, test, maps, tops, samples)


def _summary(rows, tuning: Tuning, options, weights, n, saliency_seconds) -> dict:
    table = {}
    for name in METHODS:
        ious = [r[f"{name}_iou"] for r in rows]
        table[name] = {"corloc": corloc(ious), "mean_iou": float(np.mean(ious))}
    correct = np.array([r["label"] == r["predicted"] for r in rows])
    seconds = {name: [r[f"{name}_seconds"] for r in rows] for name in ("graphcut", "graphcut_smooth")}
    return {
        "weights": weights,
        "scenes": n,
        "test_split": "Fashion-MNIST test split, seed 1",
        "tuning_split": f"{tuning.scenes} Fashion-MNIST training-split scenes, seed 2 "
        f"({tuning.graphcut_scenes} for GraphCut)",
        "classifier_accuracy": float(correct.mean()),
        "options": options,
        "graphcut_smooth_sigma": tuning.sigma,
        "graphcut_smooth_tuning_mean_iou": {str(k): v for k, v in tuning.sigma_scores.items()},
        "threshold_quantile_sigma": tuning.threshold,
        "threshold_tuning_mean_iou": {f"q={q} sigma={s}": v for (q, s), v in tuning.threshold_scores.items()},
        "centred_box_size": tuning.mean_size,
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
    }


def method_names(summary: dict) -> dict:
    """One line per method, naming its (tuned) settings, for tables and captions."""
    s = summary
    sigma, (q, qs), size = s["graphcut_smooth_sigma"], s["threshold_quantile_sigma"], s["centred_box_size"]
    return {
        "graphcut": "GraphCut on saliency, the paper's settings (q 0.95 / 0.30, 5 Gaussians, γ 50)",
        "graphcut_smooth": f"GraphCut on saliency blurred with σ = {sigma} px (σ tuned on training scenes)",
        "threshold": f"box of saliency ≥ its {q} quantile, blur σ = {qs} px (both tuned)",
        "centred": f"centred box of the mean training size ({size[0]:.1f} x {size[1]:.1f})",
        "whole": "whole image",
    }


def _table(summary: dict, size) -> str:
    names, table, sec = method_names(summary), summary["methods"], summary["seconds_per_image"]
    lines = [
        f"Localisation benchmark: {summary['scenes']} test scenes ({size[0]}x{size[1]}), "
        f"classifier accuracy {summary['classifier_accuracy']:.1%}",
        "",
        "| method | CorLoc (IoU ≥ 0.5) | mean IoU |",
        "|---|---|---|",
    ]
    for name in METHODS:
        lines.append(f"| {names[name]} | {table[name]['corloc']:.1%} | {table[name]['mean_iou']:.3f} |")
    lines += [
        "",
        f"Time per image: saliency {1000 * sec['saliency']:.1f} ms (batches of 200); GraphCut pipeline "
        f"{1000 * sec['graphcut']:.1f} ms (median {1000 * sec['graphcut_median']:.1f} ms), "
        f"with the blur {1000 * sec['graphcut_smooth']:.1f} ms.",
    ]
    return "\n".join(lines) + "\n"


def rows_csv(rows) -> str:
    """Rows of dicts as CSV text (tuples written as space-separated numbers)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " ".join(map(str, v)) if isinstance(v, tuple) else v for k, v in row.items()})
    return out.getvalue()
