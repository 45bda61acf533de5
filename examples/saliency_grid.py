"""Paper figure 2: image-specific class saliency maps for a grid of test images.

    python examples/saliency_grid.py                       # the ten MNIST example digits
    python examples/saliency_grid.py --smoothgrad          # add SmoothGrad (beyond the paper)
    python examples/saliency_grid.py --weights weights/fashion_cnn.npz --images examples/fashion

One backward pass for the whole batch gives w = ∂S_c/∂I for each image's top
class; the map is M_ij = max over channels of |w|. Each column shows an
image above its saliency map.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import tinyconv as tc
from tinyconv.engine.backend import to_numpy
from tinyconv.pictures.demo import REPO, load_net
from tinyconv.pictures.imaging import deprocess, display_scale, heatmap, montage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="a .npz network (default: the bundled MNIST CNN)")
    parser.add_argument("--images", default=str(REPO / "examples" / "digits"), help="a folder of images")
    parser.add_argument("--smoothgrad", action="store_true", help="add a SmoothGrad row (beyond the paper)")
    parser.add_argument("-o", "--output", default="demo-out/examples/saliency_grid.png")
    args = parser.parse_args()

    net = load_net(args.weights)
    paths = sorted(Path(args.images).glob("*.png"))
    if not paths:
        raise SystemExit(f"no PNG images in {args.images}")
    x = np.concatenate([tc.preprocess(p, net) for p in paths])  # (N, C, H, W)
    scores = to_numpy(net.predict(x))
    top = scores.argmax(axis=1)
    maps = to_numpy(tc.saliency(net, x))  # (N, H, W), one backward pass for the batch
    rows = [[deprocess(xi, net) for xi in x], [heatmap(m) for m in maps]]
    labels = [
        [f"{p.stem}: top {net.classes[c]!r}" for p, c in zip(paths, top, strict=True)],
        [f"saliency, S_c = {scores[i, c]:.1f}" for i, c in enumerate(top)],
    ]
    if args.smoothgrad:
        smooth = to_numpy(tc.smoothgrad(net, x, samples=25, sigma_fraction=0.15, seed=0))
        rows.append([heatmap(m) for m in smooth])
        labels.append(["SmoothGrad (σ = 0.15 × range, 25 samples)"] * len(paths))
    tiles = [
        t if t.ndim == 3 and t.shape[2] == 3 else np.repeat(t.reshape(*t.shape[:2], 1), 3, axis=2)
        for row in rows
        for t in row
    ]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = "image-specific class saliency: M_ij = max_ch |∂S_c/∂I| for each image's top class"
    montage(
        tiles,
        [c for row in labels for c in row],
        columns=len(paths),
        scale=max(1, display_scale(*x.shape[2:]) // 2),
        title=title,
        font_size=11,
    ).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
