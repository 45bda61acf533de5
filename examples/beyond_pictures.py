"""The method pictures of docs/beyond.md: one row per image, every method's map
(tinyconv.pictures.beyond.methods_panel), for each bundled network.

    OPENBLAS_NUM_THREADS=1 python examples/beyond_pictures.py --images 4 -o docs/beyond
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import tinyconv as tc
from tinyconv.methods.sanity import method_options
from tinyconv.pictures.beyond import methods_panel
from tinyconv.pictures.demo import example_images
from tinyconv.pictures.imaging import write_files


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4, help="example images per network (default 4)")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    files = {}
    for name in ("mnist_cnn", "fashion_cnn", "scenes_cnn"):
        weights = Path("weights") / f"{name}.npz"
        net = tc.load(weights).eval()
        paths = example_images(weights)[: a.images]
        xs = np.concatenate([tc.preprocess(path, net) for path in paths])
        files[f"methods_{name}.png"] = methods_panel(
            net, xs, [p.stem for p in paths], options=method_options(net)
        )
    print("wrote", ", ".join(write_files(a.output, files)[i].name for i in range(len(files))))


if __name__ == "__main__":
    main()
