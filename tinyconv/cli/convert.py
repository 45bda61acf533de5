"""``tinyconv convert``: a PyTorch / safetensors checkpoint to tinyconv's .npz.

    tinyconv convert vgg16-397923af.pth -o vgg16.npz --arch vgg16
    tinyconv convert handwriting_model.pth -o weights/mnist_cnn.npz --arch mnist-cnn --licence MIT

No PyTorch needed. ImageNet class names and normalisation come built in for
the torchvision architectures; ``--classes``, ``--mean`` and ``--std``
override them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import OptionError, WeightsError
from ..files import check_output
from ..models import registry as models
from ..models.checkpoint import BN_EPS, load_checkpoint
from ..models.native import is_native, load, save, sha256
from ._common import existing_file, output_file, positive_real, real


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a PyTorch (.pth/.pt) or .safetensors checkpoint to tinyconv's .npz",
        description="Convert a trained network to tinyconv's native .npz format, without PyTorch. "
        f"Known architectures: {', '.join(models.ARCHS)}. BatchNorm layers of the _bn VGGs are "
        "folded into the convolutions before them (eval statistics).",
    )
    p.add_argument(
        "source", metavar="SRC", help="the checkpoint (.pth, .pt, .safetensors, .onnx, or a tinyconv .npz)"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=output_file,
        metavar="OUT.npz",
        help="where to write the network",
    )
    p.add_argument(
        "--arch",
        choices=models.ARCHS,
        default=None,
        help="architecture (default: guessed from the key names)",
    )
    p.add_argument(
        "--classes",
        type=existing_file,
        metavar="FILE",
        help="class names, one per line (blank and '#' lines skipped)",
    )
    p.add_argument(
        "--mean", type=real(), nargs="+", metavar="M", help="input mean per channel, in [0, 1] units"
    )
    p.add_argument(
        "--std", type=positive_real, nargs="+", metavar="S", help="input std per channel, in [0, 1] units"
    )
    p.add_argument(
        "--licence", "--license", dest="licence", help="licence of the weights, stored in the file"
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default=None, help="cast the weights")
    p.add_argument(
        "--bn-eps", type=positive_real, default=BN_EPS, help=f"BatchNorm epsilon to fold (default {BN_EPS})"
    )
    p.set_defaults(func=run)


def read_classes(path) -> list[str]:
    """Class names from a text file: one per line, blank lines and '#' comments skipped."""
    raw = Path(path).read_bytes()
    try:
        if b"\0" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\0"), raw.index(b"\0") + 1, "NUL byte")
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{path} is not a UTF-8 text file of class names (byte {exc.start})") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise WeightsError(f"{path} holds no class names")
    return names


def run(args) -> int:
    source = Path(args.source)
    if not source.is_file():
        raise WeightsError(f"no such checkpoint: {str(source)!r}")
    out = check_output(args.output, [source, args.classes], "output")
    classes = read_classes(args.classes) if args.classes else None
    if source.suffix.lower() == ".onnx":  # a chain graph; see tinyconv.models.onnxfile
        from ..models.onnxfile import load_onnx

        net = load_onnx(source, dtype=args.dtype)
        if classes is not None:
            if len(classes) != net.num_classes:
                raise WeightsError(
                    f"{len(classes)} class names given, the network has {net.num_classes} outputs"
                )
            net.classes = classes
    elif is_native(source):
        net = load(source)
        if args.dtype:
            net.astype(args.dtype)
            for p in net.parameters():  # float64 values beyond float32's range become inf
                if not np.isfinite(p.value).all():
                    raise WeightsError(f"{p.name} does not fit in {args.dtype}: some values overflow it")
        if classes is not None:
            if len(classes) != net.num_classes:
                raise WeightsError(
                    f"{len(classes)} class names given, the network has {net.num_classes} outputs"
                )
            net.classes = classes
    else:
        net = load_checkpoint(source, arch=args.arch, classes=classes, dtype=args.dtype, bn_eps=args.bn_eps)
    if args.mean is not None or args.std is not None:
        if args.mean is None or args.std is None:
            raise OptionError("give --mean and --std together")
        channels = net.input_shape[0] if net.input_shape else len(args.mean)
        try:
            net.mean = net._per_channel(args.mean, "mean", channels)
            net.std = net._per_channel(args.std, "std", channels)
        except ValueError as exc:
            raise OptionError(f"{exc} (network input {net.input_shape})") from None
        if min(net.std) <= 0:
            raise OptionError(f"--std must be positive, got {args.std}")
    if args.licence:
        net.meta["licence"] = args.licence
    net.meta["converted_by"] = f"tinyconv {__version__} (tinyconv convert)"
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    save(net, out)
    n_params = sum(int(np.prod(p.value.shape)) for p in net.parameters())
    print(
        f"{source} -> {out}: {net.meta.get('arch', 'network')}, {len(net)} layers, {n_params:,} parameters "
        f"({net.dtype}), {net.num_classes} classes, input {net.input_shape}, mean {net.mean}, std {net.std}"
    )
    print(f"source sha256 {sha256(source)}")
    print(f"output sha256 {sha256(out)}")
    return 0
