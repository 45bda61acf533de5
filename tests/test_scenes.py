"""The scene benchmark generator: exact boxes, seeded, splits, saving."""

from pathlib import Path

import numpy as np
import pytest

from tinyconv import models
from tinyconv.datasets import scenes
from tinyconv.errors import DataError


@pytest.fixture(scope="module")
def photos():
    try:
        return scenes.load_photos()
    except DataError as exc:
        pytest.skip(f"scikit-image's sample photographs are not installed: {exc}")


def _items(n, seed=0):
    """Synthetic 28x28 'items': a solid rectangle of random extent, label = its index mod 10."""
    rng = np.random.default_rng(seed)
    items = np.zeros((n, 28, 28), np.uint8)
    for k in range(n):
        y0, x0 = rng.integers(0, 10, 2)
        y1, x1 = rng.integers(18, 29, 2)
        items[k, y0:y1, x0:x1] = 255
    return items, np.arange(n) % 10


def test_full_square_item_has_the_box_of_its_placement():
    """An all-white item scaled to side L at (x, y) covers exactly [x, x+L) x [y, y+L)."""
    bg = np.zeros((48, 48, 3))
    image, alpha, box = scenes.compose(bg, np.full((28, 28), 255, np.uint8), np.array([1.0, 0, 0]), 7, 11, 20)
    assert box == (7, 11, 27, 31)
    assert (alpha > 0).sum() == 400
    np.testing.assert_allclose(image[11:31, 7:27], np.broadcast_to([1.0, 0, 0], (20, 20, 3)))
    assert image[:11].max() == 0 and image[31:].max() == 0


def test_boxes_are_tight_around_the_pasted_item(photos):
    items, labels = _items(30)
    s = scenes.make_scenes(items, labels, "train", n=30, seed=3, photos=photos)
    assert s.images.shape == (30, scenes.SIZE, scenes.SIZE, 3) and s.images.dtype == np.uint8
    np.testing.assert_array_equal(s.labels, labels[s.items])
    for k in range(30):
        x0, y0, x1, y1 = s.boxes[k]
        assert 0 <= x0 < x1 <= scenes.SIZE and 0 <= y0 < y1 <= scenes.SIZE
        # the item's rectangle in 28x28 units scales to roughly the box's aspect
        ys, xs = np.nonzero(items[s.items[k]])
        aspect_item = (np.ptp(xs) + 1) / (np.ptp(ys) + 1)
        assert (x1 - x0) / (y1 - y0) == pytest.approx(aspect_item, rel=0.25)


def test_seeded_and_splits_differ(photos):
    items, labels = _items(20)
    a = scenes.make_scenes(items, labels, "train", n=12, seed=5, photos=photos)
    b = scenes.make_scenes(items, labels, "train", n=12, seed=5, photos=photos)
    c = scenes.make_scenes(items, labels, "test", n=12, seed=5, photos=photos)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.images, c.images)
    # items are used without replacement while they last
    assert len(set(a.items.tolist())) == 12


def test_save_and_read(tmp_path, photos):
    items, labels = _items(10)
    s = scenes.make_scenes(items, labels, "test", n=5, seed=1, photos=photos)
    scenes.save_scenes(tmp_path / "s.npz", s)
    r = scenes.read_scenes(tmp_path / "s.npz")
    np.testing.assert_array_equal(r.images, s.images)
    np.testing.assert_array_equal(r.boxes, s.boxes)
    with pytest.raises(DataError, match="cannot read scenes"):
        scenes.read_scenes(tmp_path / "missing.npz")


def test_bad_arguments(photos):
    items, labels = _items(4)
    with pytest.raises(DataError, match="split"):
        scenes.make_scenes(items, labels, "val", photos=photos)
    with pytest.raises(DataError, match="28, 28"):
        scenes.make_scenes(items[:, :20], labels, photos=photos)
    with pytest.raises(DataError, match="labels"):
        scenes.make_scenes(items, labels[:2], photos=photos)
    with pytest.raises(DataError, match="missing"):
        scenes.load_photos(Path("/nonexistent"))


def test_tensors_normalise_per_channel(photos):
    items, labels = _items(6)
    s = scenes.make_scenes(items, labels, n=6, photos=photos)
    x = s.tensors(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    assert x.shape == (6, 3, scenes.SIZE, scenes.SIZE) and x.dtype == np.float32
    np.testing.assert_allclose(x[2, 1, 4, 7], (s.images[2, 4, 7, 1] / 255 - 0.4) / 0.25, rtol=1e-6)


def test_scene_classifier_shape():
    net = models.build("scenes-cnn")
    assert net.output_shapes((3, scenes.SIZE, scenes.SIZE))[-1] == (10,)


def test_real_fashion_mnist_scenes():
    from tinyconv.datasets import mnist as data

    try:
        s = scenes.load_scenes("test", n=8)
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST or the photographs are not installed ({str(exc).split('. ')[0]})")
    images, labels = data.load_fashion_mnist("test")
    np.testing.assert_array_equal(s.labels, labels[s.items])
    widths = s.boxes[:, 2] - s.boxes[:, 0]
    assert (widths >= 5).all() and (widths <= scenes.SIZE).all()
