"""Does a repetition run slower right after the other library's work? (the bench's settle pause)

OpenBLAS's worker threads keep spinning for a while after each NumPy GEMM (and
PyTorch's OpenMP threads may do the same after its kernels); on a machine with
as many cores as threads, the next piece of work of the *other* library then
shares its cores with spinning threads. This script measures the effect as
``tinyconv bench`` meets it, in one process with the same threads on each
side: it times one side's piece of work right after a piece of the other
side's (or of its own, the control), with a pause of 0, 0.05, 0.2 or 0.5 s
in between, every condition once per round, the rounds repeated.

The pieces: ``--piece layer`` (default) is one VGG-16 convolution, 128 -> 128
channels at 56x56 on one image (PyTorch's nn.Conv2d; on the NumPy side
tinyconv's Conv2d); ``--piece net`` a whole VGG-16 forward pass (slow on a
loaded machine).

    PYTHONPATH=$PWD python examples/bench_settle.py [--piece layer|net] [--rounds 20]

Prints each condition's median and minimum, and the median's ratio to the
same pair after the longest pause.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tinyconv.tools import bench


def pieces(kind: str):
    """{side: a function doing one piece of that side's work}."""
    if kind == "net":
        item = bench.Item("vgg16", "forward", 1, 1)
        net = bench.build_net("vgg16")
        return {
            "tinyconv": bench.tinyconv_work(item, net),
            "torch": bench.torch_work(item, bench.torch_twin(net), bench._input(net, 1)),
        }
    import torch

    from tinyconv.engine.layers import Conv2d

    conv = Conv2d(128, 128, 3, padding=1, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 128, 56, 56), dtype=np.float32)
    tconv = torch.nn.Conv2d(128, 128, 3, padding=1)
    tx = torch.from_numpy(x.copy())

    def torch_piece():
        with torch.no_grad():
            return tconv(tx)

    return {"tinyconv": lambda: conv.infer(x), "torch": torch_piece}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--piece", choices=("layer", "net"), default="layer")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=bench.default_threads())
    parser.add_argument("--pauses", default="0,0.05,0.2,0.5")
    args = parser.parse_args(argv)
    bench._set_threads(args.threads)
    sides = pieces(args.piece)
    pauses = [float(p) for p in args.pauses.split(",")]
    for fn in sides.values():  # warm-up
        fn()
        fn()
    # (timed side, side run before it, pause) -> seconds
    conditions = [(t, b, p) for t in sides for b in sides for p in pauses]
    times = {c: [] for c in conditions}
    for _ in range(args.rounds):
        for timed, before, pause in conditions:
            sides[before]()
            time.sleep(pause)
            start = time.perf_counter()
            sides[timed]()
            times[(timed, before, pause)].append(time.perf_counter() - start)

    longest = max(pauses)
    print(f"piece {args.piece}, {args.threads} threads, {args.rounds} rounds")
    print(f"{'timed':<9} {'after':<9} {'pause s':>7} {'median ms':>10} {'min ms':>8} {'/ longest':>10}")
    for timed, before, pause in conditions:
        t = times[(timed, before, pause)]
        ref = statistics.median(times[(timed, before, longest)])
        print(
            f"{timed:<9} {before:<9} {pause:>7.2f} {statistics.median(t) * 1e3:>10.1f} "
            f"{min(t) * 1e3:>8.1f} {statistics.median(t) / ref:>10.2f}"
        )


if __name__ == "__main__":
    main()
