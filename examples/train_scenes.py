"""Train the localisation benchmark's scene classifier (weights/scenes_cnn.npz).

Image labels only: the network never sees a box. Scenes are Fashion-MNIST
items pasted on photographs (``tinyconv.datasets.scenes``), built from the training
split (seed 0); the held-out accuracy is measured on scenes built from the
test split (seed 1), the same scenes the localisation benchmark uses.

    python examples/train_scenes.py --train 30000 --epochs 7 -o weights/scenes_cnn.npz

Uses ``tinyconv.engine.train.fit`` (SGD with momentum, cosine schedule, He init).
"""

from __future__ import annotations

import argparse
import json
import time

from tinyconv import models
from tinyconv.datasets import scenes
from tinyconv.engine.train import fit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=30000, help="training scenes (default 30000)")
    p.add_argument("--test", type=int, default=2000, help="held-out scenes (default 2000)")
    p.add_argument("--epochs", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="write the network after every epoch here")
    p.add_argument("-o", "--output", default="weights/scenes_cnn.npz")
    args = p.parse_args(argv)

    t0 = time.time()
    train = scenes.load_scenes("train", n=args.train, progress=True)
    test = scenes.load_scenes("test", n=args.test, progress=True)
    x = train.tensors()
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    x = train.tensors(mean, std)
    xt = test.tensors(mean, std)
    print(f"built {len(train)} + {len(test)} scenes in {time.time() - t0:.1f} s", flush=True)
    net = models.build("scenes-cnn", mean=mean, std=std)
    net = fit(
        net, x, train.labels, xt, test.labels, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, flip=True, checkpoint=args.checkpoint, log=lambda m: print(m, flush=True),
    )  # fmt: skip
    history = net.meta["training"]["history"]
    net.meta.update(
        source="examples/train_scenes.py",
        dataset=f"tinyconv.datasets.scenes: {args.train} train scenes (Fashion-MNIST train split, seed 0), "
        f"{args.test} test scenes (test split, seed 1), 48x48 RGB",
        test_accuracy=history[-1].get("val_acc"),
    )
    net.save(args.output)
    print(json.dumps(history[-1]), flush=True)
    acc = history[-1].get("val_acc")
    print(f"saved {args.output}; held-out accuracy {acc:.4f}; {time.time() - t0:.0f} s total")


if __name__ == "__main__":
    main()
