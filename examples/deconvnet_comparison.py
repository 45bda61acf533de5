"""Paper section 4: the DeconvNet is backprop with a different ReLU rule.

    python examples/deconvnet_comparison.py
    python examples/deconvnet_comparison.py --weights weights/fashion_cnn.npz --images examples/fashion

For a few images, the gradient ∂S_c/∂I, the explicit Zeiler & Fergus
DeconvNet (unpooling with switches, rectification, transposed flipped
filters through the forward convolution code), backward with the DeconvNet
ReLU rule, and guided backprop. Prints how far the explicit DeconvNet is from
the rule-based one (float64 rounding) and writes a grid of signed maps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import tinyconv as tc
from tinyconv.engine.backend import to_numpy
from tinyconv.pictures.demo import REPO, load_net
from tinyconv.pictures.imaging import deprocess, display_scale, montage, signed_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="a .npz network (default: the bundled MNIST CNN)")
    parser.add_argument("--images", default=str(REPO / "examples" / "digits"), help="a folder of images")
    parser.add_argument("--count", type=int, default=5, help="how many images (default 5)")
    parser.add_argument("-o", "--output", default="demo-out/examples/deconvnet_comparison.png")
    args = parser.parse_args()

    net = load_net(args.weights).astype(np.float64)  # float64: the agreement is then ~1e-16
    paths = sorted(Path(args.images).glob("*.png"))[: args.count]
    if not paths:
        raise SystemExit(f"no PNG images in {args.images}")
    x = np.concatenate([tc.preprocess(p, net, dtype=np.float64) for p in paths])
    maps = {k: to_numpy(v) for k, v in tc.deconvnet.compare(net, x).items()}
    diff = np.abs(maps["deconvnet"] - maps["deconvnet_rule"]).max() / np.abs(maps["deconvnet_rule"]).max()
    agree = np.mean(np.sign(maps["gradient"]) == np.sign(maps["deconvnet"]))
    print(f"explicit DeconvNet vs backward(rule='deconvnet'): max relative difference {diff:.2e}")
    print(f"gradient and DeconvNet maps share their sign on {100 * agree:.1f}% of the pixels")
    negative = np.mean(maps["deconvnet"] < 0)
    print(f"{100 * negative:.1f}% of DeconvNet pixels are negative (the first conv's transpose mixes signs)")
    order = ["gradient", "deconvnet", "deconvnet_rule", "guided"]
    names = {
        "gradient": "gradient",
        "deconvnet": "explicit DeconvNet",
        "deconvnet_rule": "DeconvNet rule",
        "guided": "guided backprop",
    }
    tiles, captions = [], []
    for i, p in enumerate(paths):
        image = deprocess(x[i], net)
        tiles.append(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)
        captions.append(p.stem)
        for key in order:
            tiles.append(signed_image(maps[key][i]))
            captions.append(names[key])
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"gradient vs DeconvNet vs guided backprop (red > 0, blue < 0); explicit vs rule: {diff:.1e}"
    montage(
        tiles,
        captions,
        columns=1 + len(order),
        scale=max(1, display_scale(*x.shape[2:]) // 2),
        title=title,
        font_size=11,
    ).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
