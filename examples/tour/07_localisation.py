"""Step 7: weakly supervised localisation, stage by stage (Simonyan et al., §3.2).

The network was trained on labels only, yet its saliency map says where the
object is. The paper turns the map into a box in four stages:
  1. seeds: foreground = pixels with M ≥ q_0.95(M), background = M ≤ q_0.30(M);
  2. colour models: a Gaussian mixture fitted to each seed set (here grey levels);
  3. GraphCut: the labelling L minimising E(L) = Σ_p −log p_L(I_p) + Σ_pq w_pq [L_p ≠ L_q]
     (w_pq large between similar neighbours), seeds pinned, solved exactly by a min-cut;
  4. the largest connected foreground component; its bounding box is the answer,
     correct when IoU ≥ 0.5 with the true box (here: the box of the digit's ink).
Needs PyMaxflow and scipy (pip install 'tinyconv[localize]'). Writes localisation.png.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import tinyconv as tc
from tinyconv.methods import localisation as loc
from tinyconv.methods.saliency import saliency
from tinyconv.pictures import imaging

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("-o", "--out", type=Path, default=Path("."), help="folder for the PNG (default: here)")
out = parser.parse_args().out
if missing := [m for m in ("maxflow", "scipy") if importlib.util.find_spec(m) is None]:
    print(f"step 7 skipped: {', '.join(missing)} missing (pip install 'tinyconv[localize]')")
    sys.exit(0)
repo = Path(__file__).resolve().parents[2]
net = tc.load(repo / "weights" / "mnist_cnn.npz")
pixels = np.asarray(Image.open(repo / "examples" / "digits" / "digit_3.png").convert("L"))  # (28, 28) uint8
M = saliency(net, imaging.preprocess(pixels, net))[0]  # (28, 28)
image = pixels[..., None] / 255.0  # (28, 28, 1) grey levels in [0, 1], as localize() sees them

fg, bg = loc.seeds(M, 0.95, 0.30)
print(f"1. seeds: {fg.sum()} foreground pixels (M ≥ {np.quantile(M, 0.95):.3g}), {bg.sum()} background")
models = [loc.GaussianMixture(5, reg=1e-3, seed=0).fit(image[where]) for where in (fg, bg)]
cost_fg, cost_bg = (-m.score_samples(image.reshape(-1, 1)).reshape(M.shape) for m in models)
cost_fg[bg], cost_bg[fg] = np.inf, np.inf  # pins
for name, m in zip(("foreground", "background"), models, strict=True):
    print(f"2. {name} model: grey-level means {np.round(np.sort(m.means[:, 0]), 2)}")
weights, beta = loc.contrast_weights(image, gamma=50.0)
cut = loc.graph_cut(cost_fg, cost_bg, weights)


def energy(labels):
    """E(L): unary costs plus w_pq for every neighbouring pair cut apart (w = 0 off the image)."""
    total = np.where(labels, cost_fg, cost_bg).sum()
    for (dy, dx), w in weights.items():
        total += (w * (labels != np.roll(labels, (-dy, -dx), axis=(0, 1)))).sum()
    return total


ink = pixels > 127
rivals = {"seeds only": fg, "cheaper unary per pixel": cost_fg < cost_bg, "ink, seeds kept": (ink | fg) & ~bg}
print(f"3. graph cut: {cut.sum()} foreground pixels, E = {energy(cut):.1f}; other labellings:")
for name, labels in rivals.items():
    print(f"   {name}: E = {energy(labels):.1f}")
    assert energy(cut) <= energy(labels) + 1e-6, "the min-cut labelling has the lowest energy"
mask = loc.largest_component(cut, M)
box, truth, frame = loc.mask_box(mask), loc.mask_box(ink), (0, 0, 28, 28)
print(f"4. largest component: {mask.sum()} pixels, box {box}; ink box {truth}; IoU {loc.iou(box, truth):.2f}")
print(f"   (the whole-image box would score IoU {loc.iou(frame, truth):.2f})")
assert box == tuple(loc.localize(pixels, M).box), "the stages above are what loc.localize() does"
assert loc.iou(box, truth) >= max(0.5, loc.iou(frame, truth)), "a correct box (IoU >= 0.5), beating the frame"


def tile(rgb, *boxes, k=8):  # enlarged k times, with boxes drawn on it
    im = Image.fromarray(imaging.upscale(rgb.astype(np.uint8), k))
    for (x0, y0, x1, y1), colour in boxes:
        ImageDraw.Draw(im).rectangle([x0 * k, y0 * k, x1 * k - 1, y1 * k - 1], outline=colour, width=2)
    return im


grey = np.repeat(pixels[..., None], 3, axis=2)
seeded = np.where(fg[..., None], [230, 40, 40], np.where(bg[..., None], [40, 80, 230], grey // 2))
found = grey // 2 + mask[..., None] * np.array([0, 127, 0])
tiles = [tile(grey), tile(imaging.heatmap(M)), tile(seeded), tile(np.repeat(cut[..., None] * 255, 3, axis=2)),
         tile(found, (truth, "white"), (box, "red"))]  # fmt: skip
captions = ["digit", "saliency M", "1. seeds: red fg, blue bg", "3. graph cut", "4. box: red; ink: white"]
picture = imaging.montage(tiles, captions, title=f"Localisation from saliency: IoU {loc.iou(box, truth):.2f}")
imaging.save_png(picture, out / "localisation.png")
print(f"wrote {out / 'localisation.png'}")
print("OK: saliency -> seeds -> colour models -> min-cut -> largest component -> box")
