"""``tinyconv bench``: tinyconv against PyTorch on the paper's workloads.

    tinyconv bench                       # the full table (several minutes)
    tinyconv bench --quick               # a subset, under a minute
    tinyconv bench --items "vgg16 saliency" --json out.json

Same as ``python -m tinyconv.tools.bench``; see ``tinyconv.tools.bench`` for what each
line measures.
"""

from __future__ import annotations

from ..files import check_output
from ..tools import bench
from ._common import output_file, positive_int, retype


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time forward/saliency/backward/training/class-model steps against PyTorch",
        description="Benchmark VGG-16 and the MNIST network (float32): median and minimum time per "
        "repetition, the same work in PyTorch with the same weights and threads, the ratio, achieved "
        "GFLOP/s against the analytic FLOP count and the NumPy GEMM peak, and peak resident memory of "
        "each side in a child process.",
    )
    bench.add_arguments(p)
    retype(p, reps=positive_int, threads=positive_int, json=output_file)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.json:
        check_output(args.json, what="--json file")
    return bench.main_args(args)
