"""An offline localisation benchmark: Fashion-MNIST items pasted on photographs.

Each scene is a ``size`` x ``size`` RGB image: a background cut at random from
one of the colour photographs that scikit-image ships (read straight from the
package's data folder with Pillow, so scikit-image need not even import), and
one Fashion-MNIST item, scaled, tinted with a random colour and pasted at a
random place. The item's tight box is recorded, so a localiser trained (or a
classifier trained) on image labels only can be judged against ground truth.

Compositing, for item intensity a in [0, 1] (the resized Fashion-MNIST pixel):

    alpha = clip(a / OPAQUE, 0, 1)                      # opacity
    item  = colour * (SHADE + (1 - SHADE) * a)          # shaded by the texture
    pixel = alpha * item + (1 - alpha) * background

and the ground-truth box is the tight box of the pixels with alpha >= 0.5,
``(x0, y0, x1, y1)`` with x1, y1 exclusive (width = x1 - x0), as everywhere in
tinyconv.

The generator is seeded: the same (items, seed) give the same scenes. The
train and test scenes use the matching Fashion-MNIST splits; backgrounds for
the training scenes are cut from the left 70% of each photograph and those
of the test scenes from the right 30%, so no test background pixel was seen
in training.
"""

from __future__ import annotations

import colorsys
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError

#: colour photographs shipped in ``skimage/data`` used as backgrounds.
PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "rocket.jpg",
)
#: Fashion-MNIST class names, in label order.
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SIZE = 48
OPAQUE = 0.25  # item intensity at which the item becomes fully opaque
SHADE = 0.45  # darkest shading of the tint, at item intensity 0
TRAIN_FRACTION = 0.7  # left part of each photograph for training backgrounds


@dataclass
class Scenes:
    """A batch of benchmark scenes.

    images: (N, size, size, 3) uint8 RGB.
    labels: (N,) int64 Fashion-MNIST class of the pasted item.
    boxes:  (N, 4) int64 tight ground-truth boxes (x0, y0, x1, y1), x1/y1 exclusive.
    items:  (N,) int64 index of the item in its Fashion-MNIST split.
    classes: class names.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    items: np.ndarray
    classes: tuple = FASHION_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self, mean=None, std=None) -> np.ndarray:
        """Network input (N, 3, H, W) float32: (pixel/255 - mean) / std per channel."""
        x = self.images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        if mean is not None:
            x -= np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        if std is not None:
            x /= np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        return x


def photo_dir() -> Path:
    """The folder holding scikit-image's sample photographs (found without importing skimage)."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the scene benchmark cuts its backgrounds from scikit-image's sample photographs; "
            "install scikit-image (pip install scikit-image)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_photos(folder=None) -> list[np.ndarray]:
    """The background photographs as (H, W, 3) uint8 arrays."""
    folder = Path(folder) if folder is not None else photo_dir()
    photos = []
    for name in PHOTOS:
        path = folder / name
        if not path.is_file():
            raise DataError(f"background photograph {path} is missing (scikit-image's data folder)")
        with Image.open(path) as im:
            photos.append(np.asarray(im.convert("RGB")))
    return photos


def _random_colour(rng) -> np.ndarray:
    """A saturated, fairly bright RGB colour in [0, 1]."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _background(rng, photos, split: str, size: int) -> np.ndarray:
    """A random square crop of a random photograph, resized to (size, size, 3) float in [0, 1]."""
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    cut = int(round(w * TRAIN_FRACTION))
    lo, hi = (0, cut) if split == "train" else (cut, w)
    side_max = min(h, hi - lo)
    side = int(rng.integers(min(size, side_max), side_max // 2 + 1)) if side_max // 2 >= size else side_max
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(lo, hi - side + 1))
    crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
    bg = np.asarray(crop, dtype=np.float64) / 255.0
    return bg[:, ::-1] if rng.uniform() < 0.5 else bg


def compose(background, item, colour, x: int, y: int, scale: int):
    """Paste one item on a background.

    background: (S, S, 3) float in [0, 1]; item: (28, 28) uint8; colour: (3,) in [0, 1];
    (x, y): top-left corner of the scaled item; scale: its side in pixels.
    Returns (image (S, S, 3) float, alpha (S, S) float, box (x0, y0, x1, y1)).
    """
    a = np.asarray(Image.fromarray(item).resize((scale, scale), Image.BILINEAR), dtype=np.float64) / 255.0
    size = background.shape[0]
    alpha = np.zeros((size, size))
    alpha[y : y + scale, x : x + scale] = np.clip(a / OPAQUE, 0.0, 1.0)
    shade = np.zeros((size, size))
    shade[y : y + scale, x : x + scale] = a
    tint = colour * (SHADE + (1.0 - SHADE) * shade[..., None])
    image = alpha[..., None] * tint + (1.0 - alpha[..., None]) * background
    ys, xs = np.nonzero(alpha >= 0.5)
    if len(xs) == 0:
        return image, alpha, None
    return image, alpha, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def make_scenes(
    items,
    labels,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    size: int = SIZE,
    scale=(0.45, 0.8),
    photos=None,
    progress: bool = False,
) -> Scenes:
    """Build ``n`` scenes from Fashion-MNIST ``items`` (M, 28, 28) uint8 and ``labels`` (M,).

    split: "train" or "test" (which part of each photograph gives the backgrounds).
    scale: range of the item's side as a fraction of the scene side.
    Items are taken in a seeded random order (without replacement while they last).
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    items = np.asarray(items)
    labels = np.asarray(labels)
    if items.ndim != 3 or items.shape[1:] != (28, 28) or items.dtype != np.uint8:
        raise DataError(
            f"items must be (M, 28, 28) uint8 Fashion-MNIST images, got {items.shape} {items.dtype}"
        )
    if len(labels) != len(items):
        raise DataError(f"{len(items)} items but {len(labels)} labels")
    n = len(items) if n is None else int(n)
    rng = np.random.default_rng(seed)
    photos = load_photos() if photos is None else photos
    order = np.concatenate([rng.permutation(len(items)) for _ in range(-(-n // len(items)))])[:n]
    images = np.empty((n, size, size, 3), np.uint8)
    boxes = np.empty((n, 4), np.int64)
    picked = np.empty(n, np.int64)
    from ..progress import Progress

    with Progress(n, f"scenes ({split})", disable=not progress) as bar:
        for k, index in enumerate(order):
            # retry the rare item that is empty at its scale
            box = None
            while box is None:
                side = int(round(size * rng.uniform(*scale)))
                x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                bg = _background(rng, photos, split, size)
                image, _, box = compose(bg, items[index], _random_colour(rng), x, y, side)
                if box is None:
                    index = rng.integers(len(items))
            images[k] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
            boxes[k], picked[k] = box, index
            if k % 500 == 499 or k == n - 1:
                bar.update(k + 1 - bar.count)
    return Scenes(images, labels[picked].astype(np.int64), boxes, picked)


def load_scenes(
    split: str = "train", n: int | None = None, seed: int | None = None, root=None, **kw
) -> Scenes:
    """Scenes built from the matching Fashion-MNIST split (``tinyconv.datasets.mnist.load_fashion_mnist``).

    The default seed differs between splits (train 0, test 1).
    """
    from .mnist import load_fashion_mnist

    kwargs = {} if root is None else {"root": root}
    images, labels = load_fashion_mnist(split, **kwargs)
    images = np.asarray(images)
    if images.ndim == 4:  # (M, 1, 28, 28) float or uint8
        images = images[:, 0]
    if images.dtype != np.uint8:
        scale = 255.0 if float(images.max()) <= 1.0 else 1.0
        images = np.clip(np.rint(images * scale), 0, 255).astype(np.uint8)
    seed = (0 if split == "train" else 1) if seed is None else seed
    return make_scenes(images, labels, split=split, n=n, seed=seed, **kw)


def save_scenes(path, scenes: Scenes) -> None:
    """Write scenes to an ``.npz`` file (no pickles), atomically (``tinyconv.files``)."""
    from ..files import atomic_write

    with atomic_write(path) as f:
        np.savez_compressed(
            f, images=scenes.images, labels=scenes.labels, boxes=scenes.boxes, items=scenes.items
        )


def read_scenes(path) -> Scenes:
    """Read scenes written by ``save_scenes``."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            return Scenes(f["images"], f["labels"], f["boxes"], f["items"])
    except (OSError, KeyError, ValueError) as exc:
        detail = "it is not an .npz archive of scenes" if "pickle" in str(exc) else exc  # never numpy's hint
        raise DataError(f"cannot read scenes from {path}: {detail}") from None
