"""In place (BLAS GEMM, beta = 1) against matmul + add in the shifted-GEMM convolution, A/B in one process.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD python examples/gemm_beta_ab.py 9

Per VGG-16 layer shape (one image, forward): both medians and the median of the pairwise ratios.
"""

import statistics
import sys
import time

import numpy as np

from tinyconv.engine import backend, shiftconv


def main(rounds: int):
    rng = np.random.default_rng(0)
    backend.blas_gemm_available()
    blas = backend._blas_gemm
    for c, f, size in [(64, 64, 224), (128, 128, 112), (256, 256, 56)]:
        x = rng.standard_normal((1, c, size, size), dtype=np.float32)
        w = rng.standard_normal((f, c, 3, 3), dtype=np.float32) * 0.05
        b = rng.standard_normal(f, dtype=np.float32)
        times = {"beta=1": [], "matmul+add": []}
        for _ in range(rounds):
            for k, t in times.items():
                backend._blas_gemm = blas if k == "beta=1" else {}  # {}: as if no cblas were found
                time.sleep(0.05)
                start = time.perf_counter()
                shiftconv.conv2d_forward(x, w, b, (1, 1))
                t.append(time.perf_counter() - start)
        backend._blas_gemm = blas
        ratio = statistics.median(a / m for a, m in zip(times["beta=1"], times["matmul+add"], strict=True))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{c}->{f} @{size} forward: beta=1 {med['beta=1']:.1f} ms, "
              f"matmul+add {med['matmul+add']:.1f} ms, pairwise ratio {ratio:.2f}")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
