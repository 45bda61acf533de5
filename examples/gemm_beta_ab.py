"""In place (BLAS GEMM, beta = 1) against matmul + add inside the shifted-GEMM convolution, A/B in one process.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD python examples/gemm_beta_ab.py 9

Prints, per VGG-16 layer shape (one image, forward), both medians and the median pairwise ratio.
"""

import statistics
import sys
import time

import numpy as np

from tinyconv.engine import backend, shiftconv

rng = np.random.default_rng(0)
backend.blas_gemm_available()
blas = backend._blas_gemm
for c, f, size in [(64, 64, 224), (128, 128, 112), (256, 256, 56)]:
    x = rng.standard_normal((1, c, size, size), dtype=np.float32)
    w = rng.standard_normal((f, c, 3, 3), dtype=np.float32) * 0.05
    b = rng.standard_normal(f, dtype=np.float32)
    times = {"beta=1": [], "matmul+add": []}
    for _ in range(int(sys.argv[1])):
        for k in times:
            backend._blas_gemm = blas if k == "beta=1" else {}
            time.sleep(0.05)
            t = time.perf_counter()
            shiftconv.conv2d_forward(x, w, b, (1, 1))
            times[k].append(time.perf_counter() - t)
    backend._blas_gemm = blas
    r = statistics.median(a / m for a, m in zip(times["beta=1"], times["matmul+add"]))
    print(
        f"{c}->{f} @{size} forward: beta=1 {statistics.median(times['beta=1']) * 1e3:.1f} ms, matmul+add {statistics.median(times['matmul+add']) * 1e3:.1f} ms, pairwise ratio {r:.2f}"
    )
