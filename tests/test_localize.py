"""GraphCut localisation: known answers on synthetic images, the min-cut against
a brute-force minimum of the same energy, the seeds, degenerate inputs."""

import itertools
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("maxflow", reason="needs PyMaxflow (pip install 'tinyconv[localize]')")
pytest.importorskip("scipy", reason="needs scipy (pip install 'tinyconv[localize]')")

from tinyconv.errors import ShapeError  # noqa: E402
from tinyconv.methods.localisation import pipeline as loc


def _mask_iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _box_iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _textured_background(rng, h, w):
    yy, xx = np.mgrid[:h, :w]
    bg = np.stack(
        [
            0.25 + 0.12 * np.sin(xx / 1.7),
            0.55 + 0.12 * np.cos(yy / 2.3 + xx / 5.0),
            0.6 + 0.1 * np.sin(yy / 3.1),
        ],
        -1,
    )
    return np.clip(bg + rng.normal(0, 0.03, (h, w, 3)), 0, 1)


def _ellipse(h, w, cx, cy, rx, ry):
    yy, xx = np.mgrid[:h, :w]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def _peak(h, w, cx, cy, sigma, rng, noise=0.05):
    yy, xx = np.mgrid[:h, :w]
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)) + noise * rng.random((h, w))


def _paint(image, mask, colour, rng):
    out = image.copy()
    out[mask] = np.clip(np.asarray(colour) + rng.normal(0, 0.03, (mask.sum(), 3)), 0, 1)
    return out


def _true_box(mask):
    ys, xs = np.nonzero(mask)
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_coloured_object_on_a_textured_background(seed):
    rng = np.random.default_rng(seed)
    h, w = 40, 52
    obj = _ellipse(h, w, 30, 18, 11, 8)
    image = _paint(_textured_background(rng, h, w), obj, (0.9, 0.2, 0.15), rng)
    saliency = _peak(h, w, 30, 18, 4.0, rng)
    box, mask = loc.localize((image * 255).round().astype(np.uint8), saliency)
    assert _mask_iou(mask, obj) >= 0.9
    assert _box_iou(box, _true_box(obj)) >= 0.9
    assert box == loc.mask_box(mask)


def test_greyscale_image_uses_intensity_models():
    rng = np.random.default_rng(4)
    h, w = 36, 36
    yy, xx = np.mgrid[:h, :w]
    grey = 0.3 + 0.08 * np.sin(xx / 1.5) * np.cos(yy / 2.0) + rng.normal(0, 0.02, (h, w))
    obj = _ellipse(h, w, 14, 20, 8, 9)
    grey[obj] = 0.85 + rng.normal(0, 0.02, obj.sum())
    result = loc.localize(np.clip(grey, 0, 1), _peak(h, w, 14, 20, 3.5, rng))
    assert result.info["models"][0].means.shape[1] == 1
    assert _mask_iou(result.mask, obj) >= 0.9


def test_largest_of_two_blobs_is_chosen():
    rng = np.random.default_rng(7)
    h, w = 40, 60
    big = _ellipse(h, w, 18, 20, 11, 10)
    small = _ellipse(h, w, 47, 20, 5, 5)
    image = _paint(_textured_background(rng, h, w), big | small, (0.95, 0.85, 0.1), rng)
    # saliency peaks on both blobs, so both carry foreground seeds
    saliency = np.maximum(_peak(h, w, 18, 20, 3.5, rng), _peak(h, w, 47, 20, 2.0, rng))
    result = loc.localize(image, saliency)
    fg, _ = loc.seeds(saliency)
    assert (fg & big).any() and (fg & small).any()
    assert (result.info["segmentation"] & small).sum() >= 0.8 * small.sum()  # both segmented...
    assert _mask_iou(result.mask, big) >= 0.9  # ...but only the larger is kept
    assert not (result.mask & small).any()


def test_largest_component_is_8_connected():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # a diagonal: one 8-connected component of 3
    mask[4, 4:6] = True  # 2 pixels
    np.testing.assert_array_equal(loc.largest_component(mask), np.eye(6, dtype=bool) & (np.arange(6) < 3))


@given(h=st.integers(3, 30), w=st.integers(3, 30), seed=st.integers(0, 10_000))
def test_seeds_are_where_the_paper_puts_them(h, w, seed):
    """fg: the top 5% of the saliency values, bg: the bottom 30% (distinct values)."""
    s = np.random.default_rng(seed).random((h, w))
    fg, bg = loc.seeds(s, 0.95, 0.30)
    n = s.size
    assert abs(fg.sum() - 0.05 * n) <= 1 and abs(bg.sum() - 0.30 * n) <= 1
    assert fg.any() and bg.any() and not (fg & bg).any()
    assert s[fg].min() > s[~fg].max()
    assert s[bg].max() < s[~bg].min()


def test_seeds_with_ties_and_nans():
    s = np.zeros((10, 10))
    s[2:4, 2:4] = 1.0  # 96% zeros: the two quantiles meet at 0
    s[9, 9] = np.nan
    fg, bg = loc.seeds(s)
    np.testing.assert_array_equal(fg, s == 1.0)
    assert not bg[9, 9] and not fg[9, 9]
    assert bg.sum() == 95


# --- the min-cut against brute force ---


def _naive_energy(labels, cost_fg, cost_bg, image, gamma):
    """E(L) with β and the 8-neighbour Potts weights recomputed pixel pair by pixel pair."""
    h, w = labels.shape
    pairs = []
    for y, x in itertools.product(range(h), range(w)):
        for dy, dx in itertools.product((-1, 0, 1), repeat=2):
            y2, x2 = y + dy, x + dx
            if (dy, dx) != (0, 0) and 0 <= y2 < h and 0 <= x2 < w and (y, x) < (y2, x2):
                pairs.append(((y, x), (y2, x2), np.hypot(dy, dx)))
    d2 = [((image[p] - image[q]) ** 2).sum() for p, q, _ in pairs]
    beta = 1 / (2 * np.mean(d2)) if np.mean(d2) > 0 else 0.0
    energy = sum(cost_fg[p] if labels[p] else cost_bg[p] for p in itertools.product(range(h), range(w)))
    for (p, q, dist), d in zip(pairs, d2, strict=True):
        if labels[p] != labels[q]:
            energy += gamma * np.exp(-beta * d) / dist
    return energy


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("shape", [(3, 3), (2, 4)])
def test_graph_cut_equals_brute_force_minimum(seed, shape):
    rng = np.random.default_rng(seed)
    image = rng.random(shape + (3,))
    cost_fg, cost_bg = rng.random(shape) * 3, rng.random(shape) * 3
    cost_fg.flat[0] = np.inf  # a background seed
    cost_bg.flat[-1] = np.inf  # a foreground seed
    gamma = float(rng.uniform(0.5, 3.0))
    weights, _ = loc.contrast_weights(image, gamma)
    mask = loc.graph_cut(cost_fg, cost_bg, weights)
    best = min(
        _naive_energy(np.array(bits, bool).reshape(shape), cost_fg, cost_bg, image, gamma)
        for bits in itertools.product((0, 1), repeat=image.shape[0] * image.shape[1])
    )
    assert np.isfinite(best)
    np.testing.assert_allclose(_naive_energy(mask, cost_fg, cost_bg, image, gamma), best, rtol=1e-9)
    assert not mask.flat[0] and mask.flat[-1]


def test_contrast_weights_match_the_formula():
    rng = np.random.default_rng(0)
    image = rng.random((5, 6, 3))
    weights, beta = loc.contrast_weights(image, gamma=50.0)
    diffs = []
    for (dy, dx), _ in weights.items():
        for y, x in itertools.product(range(5), range(6)):
            if 0 <= y + dy < 5 and 0 <= x + dx < 6:
                diffs.append(((image[y, x] - image[y + dy, x + dx]) ** 2).sum())
    assert len(diffs) == 4 * 5 * 6 - 6 - 5 - 2 * (5 + 6 - 1)  # undirected 8-neighbour pairs of a 5x6 grid
    np.testing.assert_allclose(beta, 1 / (2 * np.mean(diffs)))
    d2 = ((image[2, 3] - image[3, 2]) ** 2).sum()
    np.testing.assert_allclose(weights[(1, -1)][2, 3], 50 * np.exp(-beta * d2) / np.sqrt(2))
    assert weights[(1, -1)][2, 0] == 0 and weights[(0, 1)][0, 5] == 0


# --- degenerate inputs ---


def test_constant_saliency_gives_the_whole_image_with_a_reason():
    image = np.random.default_rng(0).random((12, 15, 3))
    result = loc.localize(image, np.full((12, 15), 0.7))
    assert result.box == (0, 0, 15, 12) and result.mask.all()
    assert "constant" in result.reason


def test_all_nan_saliency():
    result = loc.localize(np.zeros((8, 8, 3)), np.full((8, 8), np.nan))
    assert result.box == (0, 0, 8, 8) and "finite" in result.reason


def test_some_nan_saliency_still_localises():
    rng = np.random.default_rng(1)
    h, w = 32, 32
    obj = _ellipse(h, w, 16, 16, 8, 8)
    image = _paint(_textured_background(rng, h, w), obj, (0.9, 0.1, 0.5), rng)
    saliency = _peak(h, w, 16, 16, 3.0, rng)
    saliency[0, :] = np.nan
    result = loc.localize(image, saliency)
    assert "NaN" in result.reason
    assert _mask_iou(result.mask, obj) >= 0.9


def test_constant_colour_image():
    rng = np.random.default_rng(2)
    result = loc.localize(np.full((16, 16, 3), 0.5), _peak(16, 16, 5, 5, 2.0, rng))
    assert "single colour" in result.reason
    assert result.mask.any() and result.box == loc.mask_box(result.mask)


def test_fewer_pixels_than_components():
    image = np.array([[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [0.5, 0.5, 0.5]]])
    box, mask = loc.localize(image, np.array([[0.9, 0.1], [0.2, 0.3]]), n_components=5)
    assert mask[0, 0] and box == loc.mask_box(mask)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ShapeError, match="saliency map has shape"):
        loc.localize(np.zeros((8, 8, 3)), np.zeros((8, 9)))
    with pytest.raises(ShapeError, match=r"\[0, 1\]"):
        loc.localize(np.full((8, 8, 3), 200.0), np.zeros((8, 8)))
    with pytest.raises(ShapeError, match="shape"):
        loc.localize(np.zeros((8, 8, 2)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="quantile"):
        loc.seeds(np.zeros((4, 4)), 0.3, 0.5)


def test_missing_maxflow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "maxflow", None)
    with pytest.raises(loc.MissingDependency, match=r"tinyconv\[localize\]"):
        loc.graph_cut(np.zeros((2, 2)), np.zeros((2, 2)), {})


# --- baselines ---


def test_baselines():
    s = np.zeros((20, 30))
    s[5:9, 10:20] = np.arange(40).reshape(4, 10) + 1.0
    assert loc.threshold_box(s, 0.95) == (10, 6, 20, 9)  # the top 30 of 600 values: 11..40
    assert loc.whole_image_box((20, 30, 3)) == (0, 0, 30, 20)
    assert loc.centred_box((20, 30), (10, 6)) == (10, 7, 20, 13)
    assert loc.centred_box((20, 30), (50, 50)) == (0, 0, 30, 20)
    assert loc.threshold_box(np.full((4, 5), np.nan)) == (0, 0, 5, 4)


def test_smooth_saliency_is_nan_aware():
    s = np.full((9, 9), 2.0)
    s[4, 4] = np.nan
    out = loc.smooth_saliency(s, 1.5)
    assert np.isnan(out[4, 4])
    np.testing.assert_allclose(out[np.isfinite(s)], 2.0)  # a constant stays constant around the hole
    spike = np.zeros((9, 9))
    spike[4, 4] = 1.0
    out = loc.smooth_saliency(spike, 1.0)
    assert out.argmax() == 40 and np.allclose(out, out.T) and np.allclose(out, out[::-1])


def test_smoothing_and_iterations_keep_the_object():
    rng = np.random.default_rng(9)
    h, w = 40, 40
    obj = _ellipse(h, w, 20, 22, 9, 7)
    image = _paint(_textured_background(rng, h, w), obj, (0.2, 0.9, 0.3), rng)
    saliency = _peak(h, w, 20, 22, 3.5, rng, noise=0.4)  # speckled
    for kwargs in ({"smooth": 1.5}, {"iterations": 3}):
        result = loc.localize(image, saliency, **kwargs)
        assert _mask_iou(result.mask, obj) >= 0.9, kwargs
    with pytest.raises(ValueError, match="iterations"):
        loc.localize(image, saliency, iterations=0)


# --- the command ---


def _write_voc(path, filename, box):
    x0, y0, x1, y1 = box  # ours (exclusive, 0-based) -> VOC (inclusive, 1-based)
    path.write_text(
        f"<annotation><filename>{filename}</filename><object><name>thing</name><bndbox>"
        f"<xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
        "</bndbox></object></annotation>"
    )


def test_command_localises_user_images_and_reports_corloc(tmp_path, capsys):
    """A photo larger than the net's input: the box comes back in the photo's pixels."""
    from PIL import Image

    from tinyconv import models
    from tinyconv.cli import main
    from tinyconv.engine.train import he_init

    net = he_init(models.build("scenes-cnn", size=32), seed=0)
    net.save(tmp_path / "net.npz")
    rng = np.random.default_rng(0)
    image = (_textured_background(rng, 60, 80) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    Image.fromarray(image[:32, :32]).save(tmp_path / "small.png")
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    _write_voc(boxes / "photo.xml", "photo.png", (0, 0, 80, 60))
    out = tmp_path / "out"
    argv = [str(tmp_path / "photo.png"), str(tmp_path / "small.png"), "--weights", str(tmp_path / "net.npz")]
    assert main(["localize", *argv, "--boxes", str(boxes), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CorLoc" in text and "1 annotated" in text and "no annotation small.xml" in text
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 3
    x0, y0, x1, y1 = (int(v) for v in lines[1].split(",")[3].split())
    assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
    assert Image.open(out / "photo_localized.png").size[0] >= 80


def test_command_errors(tmp_path, capsys):
    from tinyconv.cli import main

    assert main(["localize", "-o", str(tmp_path / "o")]) == 2
    assert "no IMAGE" in capsys.readouterr().err
    assert main(["localize", "x.png", "-o", str(tmp_path / "o")]) == 2
    assert "--weights" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_command_writes_table_csv_and_pictures(tmp_path):
    from tinyconv.cli import main
    from tinyconv.datasets.scenes import load_scenes
    from tinyconv.errors import DataError
    from tinyconv.models.native import bundled

    try:
        bundled("scenes_cnn.npz")
        load_scenes("test", n=1)
    except DataError as exc:
        why = str(exc).split(". ")[0]  # the missing file, without the install help
        pytest.skip(f"needs Fashion-MNIST, the photographs and weights/scenes_cnn.npz ({why})")
    out = tmp_path / "bench"
    argv = ["--scenes", "12", "--tune-scenes", "12", "--tune-graphcut", "3", "--pictures", "2"]
    argv += ["-o", str(out)]
    assert main(["localize", "--benchmark", *argv]) == 0
    table = (out / "results.md").read_text()
    assert "CorLoc" in table and "whole image" in table
    assert len((out / "results.csv").read_text().splitlines()) == 13
    assert (out / "samples.png").is_file()
