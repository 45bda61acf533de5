"""The demo page's building blocks (tinyconv.pictures.page): every picture of
every section is a file the page references, legends carry their values, and
small maps are shown at whole multiples of their pixels."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tinyconv.pictures.figures import Figure
from tinyconv.pictures.imaging import colormap
from tinyconv.pictures.page import Cell, Legend, Row, Section, page_files, page_metadata, render_page


def _figure(name, h=28, w=28, scale=8, metadata=None):
    return Figure(name, np.zeros((h * scale, w * scale, 3), np.uint8), f"caption of {name}", metadata or {})


def test_the_page_references_exactly_the_pictures_of_its_sections():
    strip = Cell(_figure("a/x_compare.png", w=86), ["one", "two", "three"], 3 * 196 + 14, gap=7,
                 legends=[Legend("bluered", "−1", "+1", "signed", middle="0")] * 3)  # fmt: skip
    sections = [
        Section("first", "text & <b>", [Row([Cell(_figure("a/x_input.png"), "input", 196), strip], "cap")]),
        Section("added later", "", [Row([Cell(_figure("b/y.png", metadata={"k": "v"}), "y",
                                              legend=Legend("fire", "0", "0.57", "|w|"))], wrap=True)]),
    ]  # fmt: skip
    page = render_page("title", "intro", sections)
    assert set(re.findall(r"<img src='([^']+)'", page)) == set(page_files(sections))
    assert page_metadata(sections) == {"b/y.png": {"k": "v"}}
    assert "text &amp; &lt;b&gt;" in page and "<h2>added later</h2>" in page
    assert "width='196'" in page and "image-rendering:pixelated" in page
    assert "0.57" in page and page.count("class='legend'") == 4
    # the colour bar is drawn from the colour map's own table: its first stop is the table's first colour
    r, g, b = colormap("fire")[0]
    assert f"rgb({r},{g},{b}) 0.0%" in page
    assert page.count("<span style='width:196px") == 3  # the strip's labels line up with its three maps


def test_one_name_for_two_pictures_is_refused():
    a, b = _figure("same.png"), _figure("same.png")
    with pytest.raises(ValueError, match="same.png"):
        page_files([Section("s", "", [Row([Cell(a), Cell(b)])])])
