"""Bounding boxes: IoU, CorLoc, and a reader for Pascal VOC / ILSVRC XML annotations.

tinyconv's boxes are (x0, y0, x1, y1) in pixels with x1 and y1 exclusive, so
a box covering pixel columns 3..7 is (3, ·, 8, ·) and its width is x1 − x0.

Pascal VOC (and the ILSVRC localisation annotations, which use the same XML
layout) give ``<bndbox><xmin>…</xmin><ymin>…<xmax>…<ymax>…</bndbox>`` as
*inclusive* pixel indices counted from 1 (VOC devkit: "top left pixel
co-ordinates: (1, 1)"); the reader turns them into ours with
x0 = xmin − origin, x1 = xmax − origin + 1, which gives exactly the areas and
overlaps of the VOC devkit's "+1" formulas. Pass ``origin=0`` for files
written with 0-based inclusive indices.

    IoU(A, B) = |A ∩ B| / |A ∪ B|
    CorLoc    = fraction of images whose predicted box has IoU ≥ 0.5 with a
                ground-truth box of the image (the ILSVRC localisation criterion).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import DataError


def box_area(box) -> float:
    x0, y0, x1, y1 = (float(v) for v in box)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1); 0 when both are empty."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, float(ix)) * max(0.0, float(iy))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def best_iou(box, truths) -> float:
    """max over ground-truth boxes of IoU(box, truth); 0 with no truth."""
    return max((iou(box, t) for t in truths), default=0.0)


def corloc(ious, threshold: float = 0.5) -> float:
    """Fraction of images whose IoU (best over its ground-truth boxes) is ≥ threshold."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        raise DataError("CorLoc of zero images is undefined")
    return float((ious >= threshold).mean())


@dataclass
class Annotation:
    """One annotated image: file name, size (width, height), and its objects
    as (name, box) with box = (x0, y0, x1, y1), x1/y1 exclusive."""

    filename: str
    size: tuple | None
    objects: list = field(default_factory=list)
    path: str | None = None

    @property
    def boxes(self) -> list:
        return [box for _, box in self.objects]


def _number(node, tag, where):
    child = node.find(tag)
    if child is None or child.text is None:
        raise DataError(f"{where}: <{tag}> is missing")
    try:
        value = float(child.text.strip())
    except ValueError:
        raise DataError(f"{where}: <{tag}> is {child.text.strip()!r}, not a number") from None
    if not math.isfinite(value):  # "inf", "nan", "1e400" parse as floats but are no coordinate or size
        raise DataError(f"{where}: <{tag}> is {child.text.strip()!r}, not a finite number")
    return value


def read_voc_xml(path, origin: int = 1, skip_difficult: bool = False) -> Annotation:
    """Read one Pascal VOC / ILSVRC XML annotation file (see the module docstring)."""
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise DataError(f"{path} is not valid XML: {exc}") from None
    if root.tag != "annotation":
        raise DataError(f"{path}: root element is <{root.tag}>, expected <annotation> (Pascal VOC / ILSVRC)")
    filename = (root.findtext("filename") or "").strip()
    size_node = root.find("size")
    size = None
    if size_node is not None and size_node.find("width") is not None:
        size = (int(_number(size_node, "width", path)), int(_number(size_node, "height", path)))
    objects = []
    for k, obj in enumerate(root.iter("object")):
        where = f"{path}, object {k}"
        if skip_difficult and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{where}: <bndbox> is missing")
        xmin, ymin, xmax, ymax = (_number(bnd, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DataError(f"{where}: box ({xmin}, {ymin}, {xmax}, {ymax}) has xmax < xmin or ymax < ymin")
        box = (xmin - origin, ymin - origin, xmax - origin + 1, ymax - origin + 1)
        box = tuple(int(v) if float(v).is_integer() else v for v in box)
        objects.append(((obj.findtext("name") or "").strip(), box))
    return Annotation(filename, size, objects, os.fspath(path))


def find_annotation(image_path, folder) -> Path | None:
    """The XML file for an image in ``folder``: same stem (``cat.jpg`` -> ``cat.xml``), or None."""
    candidate = Path(folder) / (Path(image_path).stem + ".xml")
    return candidate if candidate.is_file() else None
