"""Train the data-randomisation pair of docs/beyond.md (beyond the paper).

The Fashion-MNIST ConvNet architecture (models.build("fashion-cnn")) trained
twice by tinyconv on the first N training images: on the true labels, and on
permuted labels until it memorises them (Adebayo et al. 2018, data randomisation).

    OPENBLAS_NUM_THREADS=1 python examples/beyond_train_random_labels.py --n 2000 -o docs/beyond/labels
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tinyconv as tc
from tinyconv.datasets.mnist import FASHION_CLASSES, load_fashion_mnist
from tinyconv.methods.sanity import train_label_pair


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="training images (default 2000)")
    p.add_argument("--epochs-true", type=int, default=15)
    p.add_argument("--max-epochs-random", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="folder for true_labels.npz and random_labels.npz")
    a = p.parse_args()
    images, labels = load_fashion_mnist("train")
    images, labels = images[: a.n], labels[: a.n]
    mean, std = images.mean() / 255.0, images.std() / 255.0
    t0 = time.perf_counter()
    net_true, net_random, record = train_label_pair(
        images, labels, lambda: tc.models.build("fashion-cnn", classes=FASHION_CLASSES), mean, std,
        epochs_true=a.epochs_true, max_epochs_random=a.max_epochs_random, lr=a.lr, seed=a.seed, log=print,
    )  # fmt: skip
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    for net in (net_true, net_random):
        net.input_shape = (1, 28, 28)
    tc.save(net_true, out / "true_labels.npz")
    tc.save(net_random, out / "random_labels.npz")
    print(record, f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
