"""Per layer and operation: tinyconv against PyTorch on VGG-16's saliency work
(forward, input-only backward; ``--param-grads`` adds the parameter gradients).

    PYTHONPATH=$PWD python examples/layer_profile_vs_torch.py [--batch 1] [--rounds 3] [--threads 2] [--cpu]

Each layer of the bench's VGG-16 (seed 0) is timed alone on the input it gets
in the network: tinyconv's ``layer.forward`` then ``layer.backward(dy,
param_grads=False)``, and the PyTorch twin module's forward and
``backward(dy)`` with only its input requiring a gradient (as the bench's
saliency item). The sides alternate, each after the bench's settle pause.
Prints medians per layer and pass, the ratio tinyconv / PyTorch, and the
sums, so the layers that still lose stand out.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tinyconv.tools import bench


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vgg16")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=bench.default_threads())
    ap.add_argument("--settle", type=float, default=bench.SETTLE_S)
    ap.add_argument("--param-grads", action="store_true",
                    help="backward with the parameter gradients too (the train item's work)")  # fmt: skip
    ap.add_argument("--cpu", action="store_true",
                    help="CPU time of the process instead of wall time (meaningful with --threads 1 on a "
                    "busy machine, where wall time measures the scheduler's share)")  # fmt: skip
    args = ap.parse_args(argv)
    clock = time.process_time if args.cpu else time.perf_counter
    import torch

    bench._set_threads(args.threads)
    net = bench.build_net(args.arch)
    twin = bench.torch_twin(net)
    for m in twin:
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False  # each layer's input is reused across repetitions
    x = bench._input(net, args.batch)
    rng = np.random.default_rng(3)
    rows = []
    state = {}  # the PyTorch forward's output, for its backward
    for layer, module in zip(net, twin, strict=True):
        y = layer.forward(x)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        xt = torch.from_numpy(x.copy())
        dyt = torch.from_numpy(dy.copy())
        for p in module.parameters():
            p.requires_grad_(args.param_grads)

        def tc_fwd(layer=layer, x=x):
            return layer.forward(x)

        def tc_bwd(layer=layer, dy=dy):
            return layer.backward(dy, param_grads=args.param_grads)

        def pt_fwd(module=module, xt=xt, state=state):
            xi = xt.detach().requires_grad_(True)
            state["y"] = module(xi)
            state["x"] = xi

        def pt_bwd(dyt=dyt, state=state):
            state["y"].backward(dyt)

        times = {k: [] for k in ("tc fwd", "tc bwd", "pt fwd", "pt bwd")}
        for r in range(args.rounds + 1):  # the first round warms up
            for side, (fwd, bwd) in (("tc", (tc_fwd, tc_bwd)), ("pt", (pt_fwd, pt_bwd))):
                time.sleep(args.settle)
                t0 = clock()
                fwd()
                t1 = clock()
                bwd()
                t2 = clock()
                if r:
                    times[f"{side} fwd"].append(t1 - t0)
                    times[f"{side} bwd"].append(t2 - t1)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        name = repr(layer)
        if hasattr(layer, "dx_form") and layer.dx_form:
            name += f" [{layer.dx_form}]"
        rows.append((name, tuple(x.shape[1:]), med))
        x = layer.forward(x)
        layer.forget()
    what = "CPU" if args.cpu else "wall"
    print(f"{args.arch} b{args.batch}, {args.threads} threads, median of {args.rounds} rounds, {what} ms")
    print(f"{'layer':<58} {'tc fwd':>7} {'pt fwd':>7} {'ratio':>5} {'tc bwd':>7} {'pt bwd':>7} {'ratio':>5}")
    total = dict.fromkeys(("tc fwd", "pt fwd", "tc bwd", "pt bwd"), 0.0)
    for name, shape, med in rows:
        for k in total:
            total[k] += med[k]
        print(
            f"{name[:44] + ' ' + str(shape):<58} {med['tc fwd']:>7.1f} {med['pt fwd']:>7.1f} "
            f"{med['tc fwd'] / med['pt fwd']:>5.2f} {med['tc bwd']:>7.1f} {med['pt bwd']:>7.1f} "
            f"{med['tc bwd'] / med['pt bwd']:>5.2f}"
        )
    print(
        f"{'sum':<58} {total['tc fwd']:>7.1f} {total['pt fwd']:>7.1f} "
        f"{total['tc fwd'] / total['pt fwd']:>5.2f} {total['tc bwd']:>7.1f} {total['pt bwd']:>7.1f} "
        f"{total['tc bwd'] / total['pt bwd']:>5.2f}"
    )


if __name__ == "__main__":
    main()
