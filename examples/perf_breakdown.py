"""Where the time of a VGG-16 convolution goes, piece by piece.

    python examples/perf_breakdown.py

The numbers behind README.md's "Performance" notes, measured in one process
(float32, median of repetitions, NumPy's BLAS threads as they come):

1. conv 64->64 at 224x224, forward: the whole layer, then its pieces — the
   im2col unfold of every tile, the GEMMs alone, and the copy of each GEMM's
   output (plus bias) into y — and what a padded copy of the input costs;
2. sgemm speed for the first layer's tile shape (64 x 576 x 2048) against a
   large square product;
3. the two forms of the input gradient (flipped-kernel convolution and
   col2im) on VGG-16's layer shapes, and the transposing copy of a 512x512x3x3
   kernel that the first form needs;
4. ReLU backward at 64x224x224: the product with the mask against masked
   selections;
5. with PyTorch installed, its time for the same convolutions (oneDNN).

These are engine-internal timings for study; ``tinyconv bench`` is the
measurement against PyTorch on whole networks.
"""

from __future__ import annotations

import time

import numpy as np

from tinyconv.engine import fastconv as L
from tinyconv.engine import functional

RNG = np.random.default_rng(0)
VGG_SHAPES = [(64, 64, 224), (64, 128, 112), (128, 128, 112), (256, 256, 56), (512, 512, 28), (512, 512, 14)]


def ms(fn, reps=9):
    """Median milliseconds of ``fn()`` after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def conv_case(c, f, h):
    x = RNG.standard_normal((1, c, h, h), dtype=np.float32)
    w = (RNG.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = RNG.standard_normal(f).astype(np.float32)
    return x, w, b


def forward_pieces(c=64, f=64, h=224):
    """The tiled forward of ``fastconv.correlate``, its three steps timed apart."""
    x, w, b = conv_case(c, f, h)
    w2 = w.reshape(f, -1)
    ckk = w2.shape[1]
    tiles = L._conv_tiles(1, h, h, ckk, 4)
    buf = L._tile_buffer(np, tiles, ckk, h, np.float32)
    prod_buf = L._tile_buffer(np, tiles, f, h, np.float32)
    y = np.empty((1, f, h * h), np.float32)
    cols = [L._unfold_tile(buf, x, t, (3, 3), (1, 1), (1, 1), h).copy() for t in tiles]

    def unfold():
        for t in tiles:
            L._unfold_tile(buf, x, t, (3, 3), (1, 1), (1, 1), h)

    def gemms():
        for col in cols:
            np.matmul(w2, col, out=prod_buf[: f * col.shape[1]].reshape(f, -1))

    def copy_out():
        for t, col in zip(tiles, cols, strict=True):
            prod = prod_buf[: f * col.shape[1]].reshape(f, -1)
            np.add(prod, b.reshape(f, 1), out=y[0, :, t[2] * h : t[3] * h])

    whole = ms(lambda: L.conv2d_forward(x, w, b, 1, 1))
    flops = 2 * f * ckk * h * h
    rate = flops / whole / 1e6
    print(f"1. conv {c}->{f} at {h}x{h}, forward {whole:.1f} ms ({rate:.0f} GFLOP/s), {len(tiles)} tiles:")
    pieces = {"unfold": unfold, "GEMMs alone": gemms, "bias + copy into y": copy_out}
    print("   " + ", ".join(f"{name} {ms(fn):.1f} ms" for name, fn in pieces.items()))
    print(f"   a padded copy of the input (not made any more): {ms(lambda: functional.pad(x, 1, 1)):.1f} ms")


def gemm_speed():
    for m, k, n in [(64, 576, 2048), (2048, 2048, 2048)]:
        a = RNG.standard_normal((m, k), dtype=np.float32)
        b = RNG.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        t = ms(lambda a=a, b=b, out=out: np.matmul(a, b, out=out))
        print(f"2. sgemm {m}x{k}x{n}: {2 * m * k * n / t / 1e6:.0f} GFLOP/s")


def input_gradient_forms():
    print("3. input gradient of a conv at batch 1, as a flipped-kernel convolution and by col2im:")
    for c, f, h in VGG_SHAPES:
        x, w, b = conv_case(c, f, h)
        dy = RNG.standard_normal((1, f, h, h), dtype=np.float32)
        _, cache = L.conv2d_forward(x, w, b, 1, 1)
        times = {}
        for form, crossover in (("convolution", 0), ("col2im", 10**9)):
            times[form] = ms(lambda cache=cache, dy=dy, crossover=crossover: L.conv2d_backward(
                dy, cache, param_grads=False, dx_crossover=crossover))
        cells = ", ".join(f"{k} {v:.1f} ms" for k, v in times.items())
        print(f"   {c}->{f} at {h}x{h}: {cells}")
    w = RNG.standard_normal((512, 512, 3, 3), dtype=np.float32)
    flip = ms(lambda: np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)))
    print(f"   the flipped, transposed copy of a 512x512x3x3 kernel: {flip:.1f} ms")


def relu_backward_forms():
    dy = RNG.standard_normal((1, 64, 224, 224), dtype=np.float32)
    mask = RNG.standard_normal(dy.shape, dtype=np.float32) > 0

    def copyto_where():
        out = np.zeros_like(dy)
        np.copyto(out, dy, where=mask)
        return out

    forms = {
        "dy * mask": lambda: dy * mask,
        "where(mask, dy, 0)": lambda: np.where(mask, dy, 0),
        "copyto(where=mask)": copyto_where,
    }
    print("4. ReLU backward at 64x224x224: " + ", ".join(f"{k} {ms(fn):.1f} ms" for k, fn in forms.items()))


def torch_convolutions():
    try:
        import torch
    except ImportError:
        print("5. PyTorch not installed: skipped")
        return
    print(f"5. PyTorch {torch.__version__} ({torch.get_num_threads()} threads), conv forward under no_grad:")
    for c, f, h in VGG_SHAPES:
        x = torch.randn(1, c, h, h)
        conv = torch.nn.Conv2d(c, f, 3, padding=1)
        with torch.no_grad():
            t = ms(lambda conv=conv, x=x: conv(x))
        xn, wn, bn = x.numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy()
        ours = ms(lambda xn=xn, wn=wn, bn=bn: L.conv2d_forward(xn, wn, bn, 1, 1))
        print(f"   {c}->{f} at {h}x{h}: PyTorch {t:.1f} ms, tinyconv {ours:.1f} ms")


def main():
    forward_pieces()
    gemm_speed()
    input_gradient_forms()
    relu_backward_forms()
    torch_convolutions()


if __name__ == "__main__":
    main()
