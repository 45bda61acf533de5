"""Whole-layer shifted GEMMs against column chunks (shift_chunk_columns) and the tiled im2col path.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD python examples/shift_chunks_ab.py 7

Per VGG-16 layer shape (one image, forward): medians, and in brackets the median pairwise ratio to tiled.
"""

import statistics
import sys
import time

import numpy as np

from tinyconv.engine import fastconv, shiftconv


def variants(x, w, b):
    out = {"tiled": lambda: fastconv.conv2d_forward(x, w, b, 1, 1, shift_min_channels=10**9)}
    for chunk in (None, 16384, 4096, 1024):
        out[f"chunk {chunk}"] = lambda chunk=chunk: shiftconv.conv2d_forward(x, w, b, (1, 1), chunk)
    return out


def main(rounds: int):
    rng = np.random.default_rng(0)
    for c, f, size in [(64, 64, 224), (256, 256, 56), (512, 512, 28)]:
        x = rng.standard_normal((1, c, size, size), dtype=np.float32)
        w = rng.standard_normal((f, c, 3, 3), dtype=np.float32) * 0.05
        b = rng.standard_normal(f, dtype=np.float32)
        fns = variants(x, w, b)
        for fn in fns.values():
            fn()
        times = {k: [] for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                time.sleep(0.05)
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
        ref = times["tiled"]
        cells = []
        for k, v in times.items():
            ratio = statistics.median(a / r for a, r in zip(v, ref, strict=True))
            cells.append(f"{k} {statistics.median(v) * 1e3:.1f}ms ({ratio:.2f})")
        print(f"{c}->{f} @{size}: " + "  ".join(cells))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
