"""The localisation benchmark and the per-image run called from Python, the one
image geometry (preprocessing forwards, box mapping backwards), and bad input
to localisation, images and the demo (one-line TinyconvErrors, outputs kept
inside their folder)."""

from __future__ import annotations

import json
import math
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import tinyconv as tc
from tinyconv import Sequential
from tinyconv.engine.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.errors import DataError, OptionError, TinyconvError
from tinyconv.pictures.demo import MANIFEST, run_demo
from tinyconv.pictures.figures import Figure
from tinyconv.pictures.imaging import fit_geometry, fit_image, preprocess, unique_stems, write_files
from tinyconv.pictures.page import Cell, Row, Section

pytest.importorskip("maxflow", reason="needs PyMaxflow (pip install 'tinyconv[localize]')")
pytest.importorskip("scipy", reason="needs scipy (pip install 'tinyconv[localize]')")

from tinyconv.methods.localisation import benchmark, photos  # noqa: E402


def tiny_net(size=16, channels=3, classes=("ant", "bee", "cat")):
    return Sequential(
        [
            ("conv", Conv2d(channels, 4, 3, padding=1, seed=0)),
            ("relu", ReLU()),
            ("pool", MaxPool2d(2)),
            ("flatten", Flatten()),
            ("fc", Linear(4 * (size // 2) ** 2, len(classes), seed=1)),
        ],
        classes=list(classes),
        mean=[0.5] * channels,
        std=[0.25] * channels,
        input_shape=(channels, size, size),
        meta={"arch": "tiny"},
    )


def _iou(a, b):  # written out again, independently of boxes.iou
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


# --- the benchmark, from Python ---


@pytest.fixture(scope="module")
def scene_net():
    from tinyconv.datasets.scenes import load_scenes
    from tinyconv.models.native import bundled

    try:
        net = tc.load(bundled("scenes_cnn.npz"))
        load_scenes("test", n=1)
    except (DataError, tc.WeightsError) as exc:
        pytest.skip(f"needs Fashion-MNIST, the photographs and weights/scenes_cnn.npz: {exc}")
    return net.eval()


def test_benchmark_rows_agree_with_the_pipeline_run_by_hand(scene_net):
    lines = []
    bench = benchmark.run_benchmark(
        scene_net, scenes=5, tune_scenes=6, tune_graphcut=2, pictures=2, progress=False, log=lines.append
    )
    assert len(bench.rows) == 5 and len(bench.samples) == 2 and "2 training-split" in lines[0]
    test = bench.test
    for k, row in enumerate(bench.rows):
        truth = tuple(int(v) for v in test.boxes[k])
        # the paper's GraphCut box, recomputed here from the saliency of the scene alone
        x = tc.to_device(test.tensors(scene_net.mean, scene_net.std)[k : k + 1], scene_net.device)
        m = tc.to_numpy(tc.saliency(scene_net, x))[0]
        box = tc.localize(test.images[k], m).box
        assert row["graphcut_box"] == box
        assert row["true_box"] == truth
        for name in benchmark.METHODS:
            assert row[f"{name}_iou"] == pytest.approx(_iou(row[f"{name}_box"], truth), abs=1e-6)
        h, w = test.images[k].shape[:2]
        assert row["whole_box"] == (0, 0, w, h)
    for name in benchmark.METHODS:
        ious = [r[f"{name}_iou"] for r in bench.rows]
        assert bench.summary["methods"][name]["corloc"] == np.mean([v >= 0.5 for v in ious])
    assert bench.summary["threshold_quantile_sigma"][0] in benchmark.QUANTILE_GRID
    assert "CorLoc" in bench.table and set(bench.files()) == {"results.md", "summary.json", "results.csv"}
    assert len(bench.files()["results.csv"].splitlines()) == 6


def test_benchmark_refuses_bad_options_before_any_work(scene_net):
    with pytest.raises(OptionError, match="gamma"):
        benchmark.run_benchmark(scene_net, scenes=1, tune_scenes=1, options={"gamma": float("nan")})


# --- one geometry, forwards and backwards ---


@pytest.mark.parametrize("size", [(80, 60), (60, 80), (16, 16), (20, 13), (7, 5)])
def test_a_box_mapped_back_lands_on_the_object_in_the_source_pixels(size):
    w, h = size
    shape = (16, 16)
    geometry = fit_geometry((w, h), shape)
    # a white object that the view surely contains: the source pixels behind the view's centre
    cx, cy = (geometry.left + 8) / geometry.scale[0], (geometry.top + 8) / geometry.scale[1]
    x0, y0 = max(0, int(cx) - max(1, w // 8)), max(0, int(cy) - max(1, h // 8))
    x1, y1 = min(w, int(cx) + max(2, w // 8)), min(h, int(cy) + max(2, h // 8))
    source = np.zeros((h, w), np.uint8)
    source[y0:y1, x0:x1] = 255
    view = np.asarray(fit_image(Image.fromarray(source), geometry))
    assert view.shape == shape
    # preprocess is this same view
    net = tiny_net(channels=1)
    net.mean, net.std = [0.0], [1.0]
    np.testing.assert_allclose(preprocess(source, net)[0, 0], view / 255.0, atol=1e-6)
    ys, xs = np.nonzero(view > 127)
    back = geometry.box_to_source((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    # within one source pixel (resampling blurs the edges) of the object drawn
    assert all(
        abs(a - b) <= max(1, math.ceil(1 / min(geometry.scale)))
        for a, b in zip(back, (x0, y0, x1, y1), strict=True)
    )
    mask = geometry.mask_to_source(view > 127)
    assert mask.shape == (h, w) and mask[(y0 + y1) // 2, (x0 + x1) // 2]


def test_integer_enlargement_maps_boxes_exactly():
    g = fit_geometry((8, 8), (16, 16))
    assert g.scale == (2.0, 2.0) and (g.left, g.top) == (0, 0)
    assert g.box_to_source((4, 6, 10, 16)) == (2, 3, 5, 8)
    g = fit_geometry((40, 20), (20, 20))  # shrink by 2, cut 10 columns off each side
    assert (g.resized, g.left, g.top) == ((40, 20), 10, 0)
    assert g.box_to_source((0, 0, 20, 20)) == (10, 0, 30, 20)
    g = fit_geometry((80, 40), (20, 20))
    assert (g.resized, g.left, g.top) == ((40, 20), 10, 0)
    assert g.box_to_source((0, 0, 20, 20)) == (20, 0, 60, 40)


def test_localize_image_gives_the_box_in_the_photo_pixels(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    net = tiny_net()
    r = photos.localize_image(net, photo)
    assert 0 <= r.box[0] < r.box[2] <= 90 and 0 <= r.box[1] < r.box[3] <= 60
    assert r.mask.shape == (60, 90)
    g = fit_geometry((90, 60), (16, 16))
    assert r.box == g.box_to_source(r.result.box)


# --- bad input: one line, the option named ---


@pytest.mark.parametrize(
    "options, name",
    [
        ({"gamma": float("nan")}, "gamma"),
        ({"gamma": float("inf")}, "gamma"),
        ({"gamma": -5}, "gamma"),
        ({"smooth": -1}, "smooth"),
        ({"smooth": float("nan")}, "smooth"),
        ({"fg_quantile": 2}, "fg_quantile"),
        ({"bg_quantile": -0.1}, "bg_quantile"),
        ({"fg_quantile": 0.2, "bg_quantile": 0.9}, "bg_quantile < fg_quantile"),
        ({"fg_quantile": float("nan")}, "fg_quantile"),
        ({"n_components": 0}, "n_components"),
        ({"n_components": 2.5}, "n_components"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_localize_options_are_checked_before_the_max_flow(options, name):
    rng = np.random.default_rng(1)
    image, saliency = rng.random((12, 12, 3)), rng.random((12, 12))
    with pytest.raises(OptionError, match=re.escape(name)) as info:
        tc.localize(image, saliency, **options)
    assert isinstance(info.value, TinyconvError) and len(str(info.value).splitlines()) == 1


def test_empty_images_and_decompression_bombs_are_one_line_errors(tmp_path):
    net = tiny_net()
    for empty in (np.zeros((0, 0), np.uint8), np.zeros((0, 5, 3), np.uint8)):
        with pytest.raises(DataError, match="no pixels"):
            tc.preprocess(empty, net)

    # a 20000 x 20000 PNG header with no pixel data: Pillow refuses it as a decompression bomb
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))  # fmt: skip
    with pytest.raises(DataError, match="too many pixels") as info:
        tc.preprocess(path, net)
    assert len(str(info.value).splitlines()) == 1


# --- output names stay unique and inside their folder ---


def test_two_images_with_one_name_give_two_pictures(tmp_path, capsys):
    from tinyconv.cli import main

    net = tiny_net()
    net.save(tmp_path / "net.npz")
    rng = np.random.default_rng(2)
    paths = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "x.png")
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(paths[-1])
    out = tmp_path / "out"
    assert main(["localize", *map(str, paths), "--weights", str(tmp_path / "net.npz"), "-o", str(out)]) == 0
    assert {p.name for p in out.glob("*.png")} == {"x_localized.png", "x-2_localized.png"}
    capsys.readouterr()
    assert unique_stems(["a/x.png", "b/x.png", "x-2.png"]) == ["x", "x-2", "x-2-2"]
    assert main(["localize", str(paths[0]), "--weights", str(tmp_path / "net.npz"), "--gamma", "nan",
                 "-o", str(tmp_path / "o2")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gamma" in err and not (tmp_path / "o2").exists()


def test_write_files_keeps_every_name_inside_the_folder(tmp_path):
    for name in ("../escape.txt", "/tmp/abs.txt", "a/../../b.txt", ""):
        with pytest.raises(DataError, match="inside"):
            write_files(tmp_path / "out", {"ok.txt": "fine", name: "no"})
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()


def test_demo_stays_in_its_folder_and_removes_only_its_own_stale_files(tmp_path):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    tiny_net(channels=1).save(wdir / "...npz")  # a stem of ".." must not name the parent folder
    out = tmp_path / "site" / "demo"
    out.mkdir(parents=True)
    (out / "mine.txt").write_text("not the demo's")
    quiet = dict(weights_dir=wdir, images_per_net=1, progress=False, log=lambda *a: None)
    run_demo(out, **quiet)
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["demo"]
    first = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    listed = set(json.loads((out / MANIFEST).read_text())["files"])
    assert listed == first - {"mine.txt", MANIFEST}
    # a second run with another network: the first network's files go, the user's file stays
    (wdir / "...npz").unlink()
    tiny_net(channels=1).save(wdir / "other.npz")
    def more(device, progress, log):  # how other code adds a section to the page
        figure = Figure("extra/pixel.png", np.zeros((4, 4, 3), np.uint8), "a black square")
        return [Section("beyond the paper", "an added section", [Row([Cell(figure, "black")])])]

    run_demo(out, **quiet, extra_sections=[more])
    assert "<h2>beyond the paper</h2>" in (out / "index.html").read_text()
    second = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert "mine.txt" in second and not any(n.startswith("_.") for n in second)
    assert any(n.startswith("other/") for n in second) and "extra/pixel.png" in second
    referenced = set(re.findall(r"<img src='([^']+)'", (out / "index.html").read_text()))
    assert {n for n in second if n.endswith(".png")} == referenced
