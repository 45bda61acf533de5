"""Write the example images the demo uses for weights/fashion_cnn.npz and weights/scenes_cnn.npz.

    python examples/fashion_images.py   # -> examples/fashion/item_<label>_<name>.png
                                        #    examples/scenes/scene_<label>_<name>.png

One image per class: the first test-split Fashion-MNIST image of each label
(the Debian package dataset-fashion-mnist, MIT licence, Zalando Research, read
with tinyconv.datasets.mnist), and the first test scene of each label from
tinyconv.datasets.scenes (test split, its default seed 1: Fashion-MNIST test items on
the right 30% of scikit-image's sample photographs, never seen in training).
The PNGs are committed, so the demo needs no dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from tinyconv.datasets.mnist import FASHION_CLASSES, load_fashion_mnist
from tinyconv.datasets.scenes import load_scenes

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default=None, help="folder with the IDX files (default: the Debian package's)"
    )
    parser.add_argument("-o", "--output", default=str(HERE / "fashion"))
    parser.add_argument("--scenes-output", default=str(HERE / "scenes"))
    args = parser.parse_args()
    images, labels = load_fashion_mnist("test", args.root)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(FASHION_CLASSES):
        index = int(np.flatnonzero(labels == label)[0])
        safe = "".join(ch if ch.isalnum() else "-" for ch in name)
        path = out / f"item_{label}_{safe}.png"
        Image.fromarray(images[index]).save(path)
        print(f"{path}  (test image {index}, label {label} {name!r})")
    scenes = load_scenes("test", n=100, **({"root": args.root} if args.root else {}))
    out = Path(args.scenes_output)
    out.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(FASHION_CLASSES):
        index = int(np.flatnonzero(scenes.labels == label)[0])
        safe = "".join(ch if ch.isalnum() else "-" for ch in name)
        path = out / f"scene_{label}_{safe}.png"
        Image.fromarray(scenes.images[index]).save(path)
        print(f"{path}  (test scene {index}, label {label} {name!r}, box {scenes.boxes[index].tolist()})")


if __name__ == "__main__":
    main()
