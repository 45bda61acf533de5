"""The summary tables of docs/beyond.md, read from the files `tinyconv sanity` and
examples/beyond_faithfulness.py wrote (no numbers typed by hand).

    python examples/beyond_tables.py docs/beyond
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NETS = ("mnist_cnn", "fashion_cnn", "scenes_cnn")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/beyond")
    runs = {n: json.loads((root / "sanity" / n / "sanity.json").read_text()) for n in NETS}
    methods = runs[NETS[0]]["methods"]
    for what in ("spearman_abs", "ssim"):
        print(f"\nCascading randomisation, {what}: top layer randomised → every layer randomised\n")
        rows = []
        for m in methods:
            cells = []
            for n in NETS:
                s = runs[n]["cascading"]["scores"][m]
                cells.append(f"{s[1][what]:.2f} → {s[-1][what]:.2f}")
            rows.append([m, *cells])
        print(table(["method", *NETS], rows))
    print(
        "\nIndependent randomisation, spearman_abs: the highest over the layers, one randomised at a time\n"
    )
    rows = []
    for m in methods:
        rows.append([m, *[f"{max(s['spearman_abs'] for s in runs[n]['independent']['scores'][m][1:]):.2f}"
                          for n in NETS]])  # fmt: skip
    print(table(["method", *NETS], rows))
    titles = {
        "classes": "Class sensitivity: top class against every other class",
        "edges": "Similarity to the input's Sobel edge map (a model-free reference)",
    }
    for key, title in titles.items():
        print(f"\n{title}, spearman_abs / ssim\n")
        rows = [[m, *[f"{runs[n][key][m]['spearman_abs']:.2f} / {runs[n][key][m]['ssim']:.2f}" for n in NETS]]
                for m in methods]  # fmt: skip
        print(table(["method", *NETS], rows))
    labels = root / "sanity" / "labels" / "sanity.json"
    if labels.exists():
        d = json.loads(labels.read_text())
        print("\nData randomisation: true against permuted labels; edges for reference\n")
        rows = []
        for m in d["methods"]:
            edges = f"{d['edges'][m]['spearman_abs']:.2f}" if "edges" in d else "-"
            rows.append([m, *[f"{d['data'][m][s]:.2f}" for s in ("spearman_abs", "spearman", "ssim")], edges])
        print(table(["method", "spearman_abs", "spearman", "ssim", "edges spearman_abs (true labels)"], rows))
    faith = root / "faithfulness" / "faithfulness.json"
    if faith.exists():
        print("\nFaithfulness: deletion AUC (lower is better) / insertion AUC (higher is better)\n")
        f = json.loads(faith.read_text())
        nets = list(f)
        rows = [
            [m, *[f"{f[n][m]['deletion']:.3f} / {f[n][m]['insertion']:.3f}" for n in nets]]
            for m in f[nets[0]]
        ]
        print(table(["method", *nets], rows))


if __name__ == "__main__":
    main()
