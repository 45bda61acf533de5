"""Paper figure 1: class model images for every class of a bundled network.

    python examples/class_models.py                       # MNIST, score objective
    python examples/class_models.py --softmax             # add the softmax row (paper: worse)
    python examples/class_models.py --weights weights/fashion_cnn.npz

Gradient ascent on the input, argmax_I S_c(I) − λ‖I‖², from the zero image
(the mean image); all classes are optimised together as one batch. Writes
one montage PNG and prints each class's final score and runner-up.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinyconv.methods.classviz import DEFAULTS, class_models
from tinyconv.pictures.demo import load_net
from tinyconv.pictures.imaging import display_scale, montage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="a .npz network (default: the bundled MNIST CNN)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--l2", type=float, default=DEFAULTS["l2"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--softmax", action="store_true", help="also the softmax objective, as a second row")
    parser.add_argument("-o", "--output", default="demo-out/examples/class_models.png")
    args = parser.parse_args()

    net = load_net(args.weights)
    objectives = ["score", "softmax"] if args.softmax else ["score"]
    tiles, captions = [], []
    for objective in objectives:
        results = class_models(
            net, steps=args.steps, lr=args.lr, l2=args.l2, seed=args.seed, objective=objective
        )
        for r in results:
            print(r.summary(net.classes))
            image = r.image if r.image.shape[2] == 3 else np.repeat(r.image, 3, axis=2)
            tiles.append(image)
            captions.append(f"{r.class_name} ({objective}): S_c {r.score:.1f}, P_c {r.posterior:.2f}")
    columns = net.num_classes
    title = f"class models, {args.steps} steps, lr {args.lr}, λ {args.l2}, seed {args.seed}" + (
        "; top row S_c, bottom row log P_c" if args.softmax else ""
    )
    scale = max(1, display_scale(*net.input_shape[1:]) // 2)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    montage(tiles, captions, columns=columns, scale=scale, title=title, font_size=11).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
