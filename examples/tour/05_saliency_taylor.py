"""Step 5: saliency as a linear approximation of the class score.

Near an image I₀ the unnormalised class score is approximated by its
first-order Taylor expansion (Simonyan et al., eq. 2)

    S_c(I) ≈ wᵀI + b,   w = ∂S_c/∂I at I₀   (one backward pass from a one-hot seed)

so S_c(I₀ + Δ) − S_c(I₀) ≈ wᵀΔ. A ReLU network is piecewise linear, and a real
digit sits on kinks: its flat black background gives max-pool windows whose
maximum is tied, where S_c has no gradient (backward picks the first switch).
Invisible noise breaks the ties; then small steps are exactly linear, and the
error grows once a step crosses a kink. |w| says which pixels move S_c most:
the saliency map M_ij = max over channels of |w_(ch,i,j)|. Writes saliency.png.
"""

import argparse
from pathlib import Path

import numpy as np

import tinyconv as tc
from tinyconv import MaxPool2d
from tinyconv.methods.saliency import input_gradient, reduce_channels
from tinyconv.pictures import imaging

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("-o", "--out", type=Path, default=Path("."), help="folder for the PNG (default: here)")
out = parser.parse_args().out
repo = Path(__file__).resolve().parents[2]
net = tc.load(repo / "weights" / "mnist_cnn.npz").astype(np.float64)  # float64: exact comparisons
digit = imaging.preprocess(repo / "examples" / "digits" / "digit_7.png", net, dtype=np.float64)  # (1,1,28,28)
c = int(net.forward(digit)[0].argmax())
rng = np.random.default_rng(0)


def ties(image):
    """Max-pool inputs tied with the positive maximum of their 2x2 window (besides the winner)."""
    net.forward(image, keep=True)
    count = 0
    for before, pool in zip(net.layers, net.layers[1:], strict=False):
        if isinstance(pool, MaxPool2d):
            a, y = net.activations[before.name], net.activations[pool.name]
            up = y.repeat(2, axis=2).repeat(2, axis=3)  # each window's max at its 4 places
            count += int(((a[:, :, : up.shape[2], : up.shape[3]] == up) & (up > 0)).sum() - (y > 0).sum())
    return count


def change(image, delta):
    return net.forward(image + delta)[0, c] - net.forward(image)[0, c]


def linear_error(image, direction, size):
    """|S_c(I+Δ) − S_c(I) − wᵀΔ| / |wᵀΔ| for Δ = size · direction / ‖direction‖."""
    delta = size * direction / np.linalg.norm(direction)
    linear = np.vdot(input_gradient(net, image, c), delta)
    return abs(change(image, delta) - linear) / abs(linear)


raw_error = linear_error(digit, rng.standard_normal(digit.shape), 1e-6)
print(f"digit_7.png, class {net.classes[c]!r}: {ties(digit)} ties in max-pool windows (I₀ sits on kinks):")
print(f"  a random step of size 1e-6 already misses wᵀΔ by {raw_error:.0%}")
image = digit + 1e-3 * rng.standard_normal(digit.shape)  # σ = 1e-3: under a tenth of a grey level
print(f"digit + N(0, 0.001²) noise: {ties(image)} ties; now the relative error of wᵀΔ is")
print(f"{'‖Δ‖':>8}  {'random Δ':>10}  {'Δ along w':>10}")
w, direction = input_gradient(net, image, c), rng.standard_normal(image.shape)
errors = {s: (linear_error(image, direction, s), linear_error(image, w, s)) for s in (1e-6, 1e-4, 1e-2, 1.0)}
for size, (e_random, e_w) in errors.items():
    print(f"{size:8.0e}  {e_random:10.1e}  {e_w:10.1e}")
assert ties(digit) > 0 and ties(image) == 0 and raw_error > 1e-2, "ties are kinks"
assert max(errors[1e-6]) < 1e-6, "a small step flips no ReLU and moves no switch: exactly linear"
assert errors[1.0][1] < 0.3, "along w the linear model holds roughly even for a visible step"

saliency = reduce_channels(input_gradient(net, digit, c))[0]  # M of the digit itself, (28, 28)
top, some = np.argsort(saliency.ravel())[-20:], rng.choice(784, 20, replace=False)
gains = {}
for name, pixels in (("20 most salient", top), ("20 random", some)):
    delta = np.zeros(784)
    delta[pixels] = 0.05 * np.sign(w.ravel()[pixels])  # each pixel 0.05 up its gradient
    gains[name] = change(image, delta.reshape(image.shape))
    print(f"moving the {name} pixels by 0.05 each raises S_c by {gains[name]:+.4f}")
assert gains["20 most salient"] > 3 * gains["20 random"], "|w| ranks the pixels"

pixels, heat = imaging.deprocess(digit[0], net), imaging.heatmap(saliency)
tiles, captions = [pixels, heat, imaging.overlay(pixels, heat)], ["digit", "saliency M = |w|", "overlay"]
picture = imaging.montage(tiles, captions, scale=6, title=f"Saliency of class {net.classes[c]}, MNIST net")
imaging.save_png(picture, out / "saliency.png")
print(f"wrote {out / 'saliency.png'}")
print("OK: w = ∂S_c/∂I is the linear model of S_c around the image; M = |w| is its map")
