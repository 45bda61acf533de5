"""Boxes: IoU against pixel counting, CorLoc, the Pascal VOC / ILSVRC XML reader."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyconv.errors import DataError
from tinyconv.methods.localisation.boxes import best_iou, corloc, find_annotation, iou, read_voc_xml


def _raster(box, size=24):
    m = np.zeros((size, size), bool)
    m[box[1] : box[3], box[0] : box[2]] = True
    return m


boxes = st.tuples(st.integers(0, 23), st.integers(0, 23), st.integers(1, 12), st.integers(1, 12)).map(
    lambda t: (t[0], t[1], min(24, t[0] + t[2]), min(24, t[1] + t[3]))
)


@given(a=boxes, b=boxes)
def test_iou_equals_pixel_count(a, b):
    ma, mb = _raster(a), _raster(b)
    assert iou(a, b) == pytest.approx((ma & mb).sum() / (ma | mb).sum())
    assert iou(a, b) == pytest.approx(iou(b, a))


def test_iou_edge_cases():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 5, 5), (5, 5, 10, 10)) == 0.0  # touching corners, x1 exclusive
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert best_iou((0, 0, 4, 4), []) == 0.0
    assert best_iou((0, 0, 4, 4), [(10, 10, 12, 12), (0, 0, 4, 2)]) == 0.5


def test_corloc_counts_iou_at_least_half():
    assert corloc([0.5, 0.49, 0.9, 0.1]) == 0.5
    with pytest.raises(ValueError):
        corloc([])


VOC = """<annotation>
  <folder>VOC2007</folder><filename>000005.jpg</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>chair</name><difficult>0</difficult>
    <bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object>
  <object><name>chair</name><difficult>1</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>1</xmax><ymax>1</ymax></bndbox></object>
</annotation>
"""


def test_reads_voc_xml_as_exclusive_zero_based_boxes(tmp_path):
    path = tmp_path / "000005.xml"
    path.write_text(VOC)
    ann = read_voc_xml(path)
    assert ann.filename == "000005.jpg" and ann.size == (500, 375)
    # VOC's inclusive 1-based pixels 263..324 are our columns 262..323, i.e. [262, 324)
    assert ann.objects == [("chair", (262, 210, 324, 339)), ("chair", (0, 0, 1, 1))]
    # the VOC devkit's area: (xmax - xmin + 1) * (ymax - ymin + 1)
    x0, y0, x1, y1 = ann.boxes[0]
    assert (x1 - x0) * (y1 - y0) == (324 - 263 + 1) * (339 - 211 + 1)
    assert len(read_voc_xml(path, skip_difficult=True).objects) == 1
    assert read_voc_xml(path, origin=0).boxes[0] == (263, 211, 325, 340)
    assert find_annotation(tmp_path / "images" / "000005.jpg", tmp_path) == path
    assert find_annotation("nothere.jpg", tmp_path) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("<annotation><object><name>x</name></object></annotation>", "bndbox"),
        ("<annotation><object><bndbox><xmin>a</xmin></bndbox></object></annotation>", "not a number"),
        ("<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax></bndbox></object></annotation>",
         "ymax"),
        ("<annotation><object><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>"
         "</annotation>", "xmax < xmin"),
        ("<notvoc/>", "expected <annotation>"),
        ("<annotation>", "not valid XML"),
    ],
)  # fmt: skip
def test_malformed_xml_names_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_voc_xml(path)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
@pytest.mark.parametrize("where", ["box", "size"])
def test_non_finite_numbers_are_a_data_error_not_an_iou(tmp_path, value, where):
    box = dict(xmin="1", ymin="1", xmax="5", ymax="5")
    size = "<size><width>10</width><height>10</height></size>"
    if where == "box":
        box["xmax"] = value
    else:
        size = f"<size><width>{value}</width><height>10</height></size>"
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in box.items())
    path = tmp_path / "bad.xml"
    path.write_text(f"<annotation>{size}<object><name>x</name><bndbox>{fields}</bndbox></object></annotation>")
    with pytest.raises(DataError, match="not a finite number") as info:
        read_voc_xml(path)
    assert len(str(info.value).splitlines()) == 1
