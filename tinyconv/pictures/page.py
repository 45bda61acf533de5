"""An HTML page of figures: a list of sections, each a title, a text and rows of pictures.

    page = [Section("mnist_cnn: saliency", "What the columns show...", [Row([Cell(...), ...], "caption")])]
    files = page_files(page)            # name -> image, for imaging.write_files
    html = render_page("tinyconv demo", "intro", page)

A ``Cell`` is one picture file with a label above it, the width it is shown
at (whole multiples of its pixels, drawn nearest-neighbour, so small maps stay
sharp) and an optional ``Legend``: a colour bar drawn from the colour map's
own table, with the values at its ends. Any code can add sections (a network,
a method beyond the paper): every picture of the page is a cell of a section,
so the page references exactly the files ``page_files`` returns.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from .imaging import colormap

__all__ = ["Legend", "Cell", "Row", "Section", "page_files", "page_metadata", "render_page"]


@dataclass
class Legend:
    """A colour bar: ``cmap`` "fire", "bluered" or "grey", the labels at its
    left end, middle (or None) and right end, and what the colour means."""

    cmap: str
    low: str
    high: str
    meaning: str = ""
    middle: str | None = None


@dataclass
class Cell:
    """One picture: ``figure`` (a ``Figure``: file name, image, caption = alt text),
    the ``label`` above it, the displayed ``width`` in CSS pixels (None: its own)
    and an optional legend below."""

    figure: object
    label: object = ""  # a str, or one str per map of a strip
    width: int | None = None
    legend: Legend | None = None
    legends: list = field(default_factory=list)  # one per map of a strip, side by side
    gap: int = 4  # CSS pixels between the maps of a strip (and so between its legends)


@dataclass
class Row:
    """Cells side by side (``wrap``: a grid that wraps) and a caption below."""

    cells: list
    caption: str = ""
    wrap: bool = False
    legend: Legend | None = None  # one legend for the whole row, after its cells
    labels: bool = True  # False: no labels above the cells (rows below the first of a section)


@dataclass
class Section:
    """A titled part of the page: a text, then rows of cells."""

    title: str
    text: str = ""
    rows: list = field(default_factory=list)


def page_files(sections) -> dict:
    """name -> image of every picture on the page (refusing one name used for two pictures)."""
    files: dict = {}
    for section in sections:
        for row in section.rows:
            for cell in row.cells:
                name = cell.figure.name
                if name in files and files[name] is not cell.figure.image:
                    raise ValueError(f"two different pictures are named {name!r}")
                files[name] = cell.figure.image
    return files


def page_metadata(sections) -> dict:
    """name -> PNG text chunks of every picture that has metadata."""
    return {
        cell.figure.name: cell.figure.metadata
        for section in sections
        for row in section.rows
        for cell in row.cells
        if getattr(cell.figure, "metadata", None)
    }


CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:10px 14px;max-width:1360px;color:#222}
h1{font-size:24px;margin:8px 0}h2{font-size:19px;margin:26px 0 4px;border-bottom:1px solid #ccc}
p.text{font-size:14px;max-width:1100px;line-height:1.4;margin:4px 0 10px}
.row{display:flex;gap:8px;align-items:flex-start;margin:10px 0 2px}
.row.wrap{flex-wrap:wrap}
.cell{display:flex;flex-direction:column;font-size:12px}
.label{height:30px;display:flex;align-items:flex-end;line-height:1.15;color:#333}
.cell img{image-rendering:pixelated;display:block}
.rowlegend{align-self:flex-end}
.caption{font-size:13px;color:#444;margin:2px 0 14px;max-width:1340px}
.legends{display:flex}
.legend{font-size:11px;color:#333;margin-top:3px}
.bar{height:9px;border:1px solid #999}
.ends{display:flex;justify-content:space-between}
"""


def _gradient_css(cmap: str) -> str:
    table = np.linspace(0, 255, 256)[:, None].repeat(3, 1) if cmap == "grey" else colormap(cmap)
    stops = [f"rgb({r:.0f},{g:.0f},{b:.0f}) {100 * i / 16:.1f}%" for i, (r, g, b) in
             ((i, table[min(255, i * 16)]) for i in range(17))]  # fmt: skip
    return "linear-gradient(to right," + ",".join(stops) + ")"


def _legend(legend: Legend, width: int, gap: int = 0) -> str:
    e = html.escape
    middle = f"<span>{e(legend.middle)}</span>" if legend.middle is not None else ""
    return (
        f"<div class='legend' style='width:{width}px;margin-right:{gap}px'>"
        f"<div class='bar' style='background:{_gradient_css(legend.cmap)}'></div>"
        f"<div class='ends'><span>{e(legend.low)}</span>{middle}<span>{e(legend.high)}</span></div>"
        f"<div>{e(legend.meaning)}</div></div>"
    )


def _labels(cell: Cell, width: int) -> str:
    if isinstance(cell.label, str):
        return f"<div class='label'>{html.escape(cell.label)}</div>"
    n, gap = len(cell.label), cell.gap
    each = (width - gap * (n - 1)) // n
    spans = "".join(
        f"<span style='width:{each}px;margin-right:{gap if i < n - 1 else 0}px'>{html.escape(t)}</span>"
        for i, t in enumerate(cell.label)
    )
    return f"<div class='label'>{spans}</div>"


def _cell(cell: Cell, labels: bool = True) -> str:
    e, f = html.escape, cell.figure
    width = cell.width or np.asarray(f.image).shape[1]
    legends = [cell.legend] if cell.legend else list(cell.legends)
    legend_html = ""
    if legends:
        n, gap = len(legends), cell.gap
        each = (width - gap * (n - 1)) // n
        legend_html = "<div class='legends'>" + "".join(
            _legend(g, each, gap if i < n - 1 else 0) for i, g in enumerate(legends)
        ) + "</div>"  # fmt: skip
    return (
        f"<div class='cell' style='width:{width}px'>{_labels(cell, width) if labels else ''}"
        f"<a href='{e(f.name)}'><img src='{e(f.name)}' width='{width}' alt='{e(f.caption)}' "
        f"title='{e(f.caption)}'></a>{legend_html}</div>"
    )


def render_page(title: str, intro: str, sections) -> str:
    """The HTML page: ``title``, an ``intro`` paragraph, then every section."""
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{e(title)}</h1><p class='text'>{e(intro)}</p>",
    ]
    for section in sections:
        parts.append(f"<h2>{e(section.title)}</h2>")
        if section.text:
            parts.append(f"<p class='text'>{e(section.text)}</p>")
        for row in section.rows:
            cells = "".join(_cell(c, row.labels) for c in row.cells)
            if row.legend is not None:
                cells += f"<div class='cell rowlegend'>{_legend(row.legend, 200)}</div>"
            parts.append(f"<div class='row{' wrap' if row.wrap else ''}'>{cells}</div>")
            if row.caption:
                parts.append(f"<div class='caption'>{e(row.caption)}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
