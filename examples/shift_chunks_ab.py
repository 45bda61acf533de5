"""Whole-layer shifted GEMMs against column chunks (shift_chunk_columns) and the tiled im2col path.

OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD python examples/shift_chunks_ab.py 7
"""

import statistics
import sys
import time

import numpy as np

from tinyconv.engine import fastconv, shiftconv

rng = np.random.default_rng(0)
for c, f, size in [(64, 64, 224), (256, 256, 56), (512, 512, 28)]:
    x = rng.standard_normal((1, c, size, size), dtype=np.float32)
    w = rng.standard_normal((f, c, 3, 3), dtype=np.float32) * 0.05
    b = rng.standard_normal(f, dtype=np.float32)
    variants = {"tiled": lambda: fastconv.conv2d_forward(x, w, b, 1, 1, shift_min_channels=10**9)}
    for ch in (None, 16384, 4096, 1024):
        variants[f"chunk {ch}"] = lambda ch=ch: shiftconv.conv2d_forward(x, w, b, (1, 1), ch)
    for fn in variants.values():
        fn()
    times = {k: [] for k in variants}
    for _ in range(int(sys.argv[1])):
        for k, fn in variants.items():
            time.sleep(0.05)
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    ref = times["tiled"]
    print(
        f"{c}->{f} @{size}: "
        + "  ".join(
            f"{k} {statistics.median(v) * 1e3:.1f}ms ({statistics.median(a / r for a, r in zip(v, ref)):.2f})"
            for k, v in times.items()
        )
    )
