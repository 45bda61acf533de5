"""Step 6: class models, gradient ascent on the input with the weights frozen.

The class model of class c (Simonyan et al., eq. 1) is the image

    I* = argmax_I  S_c(I) − λ‖I‖²,   one step: I ← I + lr · (∂S_c/∂I − 2λI),

started from the zero image of the normalised input space (the mean image).
∂S_c/∂I is the backward pass of step 5 with the seed e_c at the scores. The
softmax objective log P_c uses the seed e_c − softmax(S) instead, which
vanishes as P_c → 1: that ascent stalls with a faint image and a low score,
one reason the paper prefers the unnormalised score.
Writes class_model_scores.png and class_models.png.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import tinyconv as tc
from tinyconv.engine.functional import softmax
from tinyconv.methods.classviz import class_model
from tinyconv.pictures import imaging

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("-o", "--out", type=Path, default=Path("."), help="folder for the PNGs (default: here)")
out = parser.parse_args().out
net = tc.load(Path(__file__).resolve().parents[2] / "weights" / "mnist_cnn.npz")
c, steps = 3, 40
runs = {obj: class_model(net, c, steps=steps, lr=1.0, l2=0.01, objective=obj, seed=0, progress=False)
        for obj in ("score", "softmax")}  # fmt: skip
score, soft = runs["score"].history, runs["softmax"].history
print(f"class {c}, lr 1.0, λ 0.01, {steps} steps from the zero image")
print(f"{'step':>4}  {'S_c (score)':>11}  {'S_c (softmax)':>13}  {'P_c (softmax)':>13}")
for k in range(0, steps + 1, 5):
    print(f"{k:4d}  {score['score'][k]:11.2f}  {soft['score'][k]:13.2f}  {soft['posterior'][k]:13.3f}")
rose = int((np.diff(score["objective"]) > 0).sum())
seed_norm = np.linalg.norm(np.eye(10)[c] - softmax(runs["softmax"].scores))
print(f"score objective S_c − λ‖I‖² rose at {rose} of {steps} steps")
print(f"softmax objective: last seed ‖e_c − softmax(S)‖ = {seed_norm:.3f} (the score objective's is 1)")
assert score["score"][-1] > score["score"][0] + 50 and rose >= 0.9 * steps, "gradient ascent climbs"
assert soft["posterior"][-1] > 0.9 and seed_norm < 0.1, "the softmax objective saturates as P_c -> 1"
assert score["score"][-1] > 5 * soft["score"][-1], "the score objective reaches a far higher S_c"

# the chart, drawn with Pillow: S_c per step for both objectives
w, h, m = 440, 260, 40
chart = Image.new("RGB", (w, h), "white")
draw = ImageDraw.Draw(chart)
top = max(score["score"].max(), soft["score"].max())
low = min(score["score"].min(), soft["score"].min(), 0.0)


def xy(k, v):
    return m + (w - 2 * m) * k / steps, h - m - (h - 2 * m) * (v - low) / (top - low)


draw.line([xy(0, low), xy(steps, low)], fill="black")
draw.line([xy(0, low), xy(0, top)], fill="black")
for value in (0.0, top):
    draw.text((4, xy(0, value)[1] - 6), f"{value:.0f}", fill="black")
draw.text((w // 2 - 20, h - m + 8), f"step (0..{steps})", fill="black")
for i, (obj, colour) in enumerate((("score", (200, 40, 40)), ("softmax", (40, 80, 200)))):
    values = runs[obj].history["score"]
    draw.line([xy(k, v) for k, v in enumerate(values)], fill=colour, width=2)
    draw.text((m + 10, 10 + 14 * i), f"S_c, {obj} objective (final {values[-1]:.1f})", fill=colour)
imaging.save_png(chart, out / "class_model_scores.png")


def stretch(x):  # (1, H, W) network input -> uint8 (H, W), its own range to 0..255
    x = np.asarray(x[0], dtype=np.float64)
    return np.round(255 * (x - x.min()) / (x.max() - x.min() + 1e-12)).astype(np.uint8)


tiles = [t for obj in runs for t in (runs[obj].image, stretch(runs[obj].input))]
captions = ["score: image", "score: stretched", "softmax: image", "softmax: stretched"]
picture = imaging.montage(tiles, captions, scale=5, title=f"Class models of '{c}'")
imaging.save_png(picture, out / "class_models.png")
print(f"wrote {out / 'class_model_scores.png'} and {out / 'class_models.png'}")
print("OK: the score climbs under gradient ascent; the softmax objective stalls once P_c is near 1")
