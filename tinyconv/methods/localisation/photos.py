"""Localisation of user images (photographs of any size) with a trained network.

``localize_image`` runs the paper's pipeline on one image: the saliency map of
the top (or given) class is computed on the network's view of the image (the
resize-and-crop of ``tinyconv.pictures.imaging.fit_geometry``), GraphCut runs
on that view, and the box and mask are mapped back to the image's own pixels
through the same ``Geometry``. ``localize_files`` does it for files, with
optional Pascal VOC / ILSVRC ground truth (IoU per image, CorLoc overall).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...engine.backend import to_numpy
from ...pictures.imaging import fit_geometry, fit_image, load_image, preprocess
from ...progress import Progress
from ..saliency import resolve_targets, saliency
from . import pipeline as loc
from .boxes import best_iou, corloc, find_annotation, read_voc_xml

__all__ = ["ImageLocalization", "localize_image", "localize_files", "summarise"]


@dataclass
class ImageLocalization:
    """``localize_image``'s result, in the pixels of the image given.

    box:    (x0, y0, x1, y1), x1/y1 exclusive; mask: (h, w) bool.
    target: the class localised; seconds: time of the GraphCut pipeline alone.
    result: the ``Localization`` on the network's view (its box, mask, reason, info).
    """

    box: tuple
    mask: np.ndarray = field(repr=False)
    target: int
    image: object = field(repr=False)
    result: object = field(repr=False)
    seconds: float = 0.0

    @property
    def reason(self):
        return self.result.reason


def localize_image(net, image, target=None, **options) -> ImageLocalization:
    """Saliency of class ``target`` (None: the top class) on the network's view of
    ``image`` (a PIL image), GraphCut on that view, box and mask mapped back.

    options: those of ``tinyconv.localize`` (fg_quantile, gamma, smooth...)."""
    shape = net.input_shape
    im = image.convert("L" if (shape[0] if shape else 3) == 1 else "RGB")
    x = preprocess(im, net)
    c = int(resolve_targets(target, to_numpy(net.predict(x)))[0])
    smap = to_numpy(saliency(net, x, c))[0]
    geometry = fit_geometry(im.size, shape[1:] if shape else None)
    start = time.perf_counter()
    result = loc.localize(np.asarray(fit_image(im, geometry)), smap, **options)
    seconds = time.perf_counter() - start
    box = geometry.box_to_source(result.box)
    return ImageLocalization(box, geometry.mask_to_source(result.mask), c, im, result, seconds)


def localize_files(
    net, paths, target=None, boxes=None, origin: int = 1, options=None, progress=True, log=print
):
    """``localize_image`` for each image file; with ``boxes`` (a folder of VOC XML
    files, image stem + ".xml") also the best IoU with the annotated boxes.

    Returns (rows, found): one dict per image for results.csv, and per image
    (ImageLocalization, ground-truth boxes) for the pictures."""
    options = dict(options or {})
    loc.check_options(**options)
    images = [load_image(p) for p in paths]  # every file checked before any work
    rows, found = [], []
    with Progress(len(images), "localising", disable=not progress) as bar:
        for path, im in zip(paths, images, strict=True):
            r = localize_image(net, im, target, **options)
            name = net.classes[r.target] if net.classes else str(r.target)
            row = {"image": str(path), "class": r.target, "class_name": name, "box": r.box}
            row.update(seconds=round(r.seconds, 4), reason=r.reason or "")
            truths = _truths(path, boxes, origin, log)
            if truths is not None:
                row["iou"] = round(best_iou(r.box, truths), 6)
            rows.append(row)
            found.append((r, truths or []))
            log(f"{path}: {name} box {r.box}" + (f" IoU {row['iou']:.3f}" if "iou" in row else ""))
            bar.update(1)
    return rows, found


def _truths(path, folder, origin, log):
    if not folder:
        return None
    xml = find_annotation(path, folder)
    if xml is None:
        log(f"warning: no annotation {Path(path).stem}.xml in {folder}; not counted in CorLoc")
        return None
    return read_voc_xml(xml, origin=origin).boxes


def summarise(rows, options: dict, weights: str = "") -> dict:
    """The summary of ``localize_files``' rows: the options, and CorLoc / mean IoU
    over the annotated images when there are any."""
    summary = {"weights": weights, "images": len(rows), "options": options}
    scored = [r["iou"] for r in rows if "iou" in r]
    if scored:
        summary.update(corloc=corloc(scored), mean_iou=float(np.mean(scored)), annotated=len(scored))
    return summary
