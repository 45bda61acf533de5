"""A/B in one process: the shifted-GEMM convolution against the tiled im2col one, per VGG-16 layer shape.

    PYTHONPATH=$PWD python examples/shiftconv_ab.py [--batch 1] [--rounds 7] [--pass forward|backward|input]
    PYTHONPATH=$PWD python examples/shiftconv_ab.py --net vgg16 --work saliency [--batch 1] [--rounds 7]

The second form times a whole network's bench work (tinyconv.tools.bench) with
every Conv2d's dispatch rule on (shifted GEMMs where it applies) and off
(``shift_min_channels`` huge: all tiled), the two alternating on the same net.

Each round times both variants on each layer, alternating, each after a settle
pause (see tinyconv.tools.bench.SETTLE_S); prints medians and the ratio
shift / tiled of the medians (and the median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tinyconv.engine import fastconv, shiftconv

TILED = {"shift_min_channels": 10**9}  # the tiled im2col path, forced
SHAPES = [(64, 64, 224), (128, 128, 112), (256, 256, 56), (512, 512, 28), (512, 512, 14)]


def _variants(which, x, w, b, dy, tcache, scache):
    if which == "forward":
        return {"tiled": lambda: fastconv.conv2d_forward(x, w, b, 1, 1, **TILED),
                "shift": lambda: shiftconv.conv2d_forward(x, w, b, (1, 1))}  # fmt: skip
    grads = which == "backward"
    return {"tiled": lambda: fastconv.conv2d_backward(dy, tcache, grads, **TILED),
            "shift": lambda: shiftconv.conv2d_backward(dy, scache, grads)}  # fmt: skip


def whole_net(args):
    from tinyconv.engine.layers import Conv2d
    from tinyconv.tools import bench

    net = bench.build_net(args.net)
    fn = bench.tinyconv_work(bench.Item(args.net, args.work, args.batch, 1), net)
    convs = [layer for layer in net if isinstance(layer, Conv2d)]
    settings = {"tiled": TILED, "shift": {}}
    times = {k: [] for k in settings}
    for k in settings:  # warm-up
        for conv in convs:
            conv.tuning = settings[k]
        fn()
    for _ in range(args.rounds):
        for k, tuning in settings.items():
            for conv in convs:
                conv.tuning = tuning
            time.sleep(args.settle)
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    pair = statistics.median(s / t for s, t in zip(times["shift"], times["tiled"], strict=True))
    print(f"{args.net} {args.work} b{args.batch}, {args.rounds} rounds: tiled {med['tiled'] * 1e3:.1f} ms, "
          f"shift {med['shift'] * 1e3:.1f} ms, ratio {med['shift'] / med['tiled']:.2f}, pairwise {pair:.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--pass", dest="which", choices=("forward", "backward", "input"), default="forward")
    ap.add_argument("--settle", type=float, default=0.3)
    ap.add_argument("--net", help="time this network's --work instead of single layers")
    ap.add_argument("--work", default="forward")
    args = ap.parse_args(argv)
    if args.net:
        return whole_net(args)
    rng = np.random.default_rng(0)
    rows = []
    for c, f, size in SHAPES:
        x = rng.standard_normal((args.batch, c, size, size), dtype=np.float32)
        w = rng.standard_normal((f, c, 3, 3), dtype=np.float32) * 0.05
        b = rng.standard_normal(f, dtype=np.float32)
        y, tcache = fastconv.conv2d_forward(x, w, b, 1, 1, **TILED)
        _, scache = shiftconv.conv2d_forward(x, w, b, (1, 1))
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        fns = _variants(args.which, x, w, b, dy, tcache, scache)
        for fn in fns.values():
            fn()
        times = {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, fn in fns.items():
                time.sleep(args.settle)
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        pair = statistics.median(s / t for s, t in zip(times["shift"], times["tiled"], strict=True))
        rows.append((f"{c}->{f} @{size} b{args.batch}", med["tiled"], med["shift"], pair))
    print(f"pass {args.which}, batch {args.batch}, {args.rounds} rounds")
    print(f"{'layer':<22} {'tiled ms':>9} {'shift ms':>9} {'ratio':>6} {'pairwise':>8}")
    for name, t, s, pair in rows:
        print(f"{name:<22} {t * 1e3:>9.1f} {s * 1e3:>9.1f} {s / t:>6.2f} {pair:>8.2f}")


if __name__ == "__main__":
    main()
