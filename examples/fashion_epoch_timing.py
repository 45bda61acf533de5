"""Time one training step of the Fashion-MNIST network (batch 128, float32) in
tinyconv and in PyTorch, in one process, interleaved in blocks so both see the
same machine load; scale to an epoch of 469 steps (60,000 images).

Run as: OPENBLAS_NUM_THREADS=1 python examples/fashion_epoch_timing.py
(tinyconv's NumPy uses one BLAS thread, as the training run did; PyTorch is
timed with 1 and with 2 threads.)
"""

import json
import sys
import time

import numpy as np
import torch

from tinyconv import models
from tinyconv.datasets import mnist as data
from tinyconv.engine import train

BATCH, STEPS_PER_EPOCH, BLOCKS, PER_BLOCK = 128, 469, int(sys.argv[1]) if len(sys.argv) > 1 else 5, 10

images, labels = data.load_fashion_mnist("test")
x = data.normalise(images[: BATCH * 8], 0.286, 0.353)
y = labels[: BATCH * 8]

net = models.build("fashion-cnn")
train.he_init(net, 0)
net.train()
opt = train.SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4)

nn = torch.nn
ref = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    nn.Linear(3136, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 10),
)
ref.train()
topt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
tx, ty = torch.from_numpy(x), torch.from_numpy(y)


def step_tinyconv(i):
    b = slice((i % 8) * BATCH, (i % 8 + 1) * BATCH)
    scores = net.forward(x[b])
    _, d = train.softmax_cross_entropy(scores, y[b])
    net.zero_grad()
    net.backward(d)
    opt.step()


def step_torch(i):
    b = slice((i % 8) * BATCH, (i % 8 + 1) * BATCH)
    topt.zero_grad()
    loss = nn.functional.cross_entropy(ref(tx[b]), ty[b])
    loss.backward()
    topt.step()


times = {"tinyconv": [], "torch-1thread": [], "torch-2threads": []}
for f, n in ((step_tinyconv, None), (step_torch, 1), (step_torch, 2)):  # warm-up
    if n:
        torch.set_num_threads(n)
    for i in range(2):
        f(i)
for _ in range(BLOCKS):
    for name, f, n in (("tinyconv", step_tinyconv, None), ("torch-1thread", step_torch, 1),
                       ("torch-2threads", step_torch, 2)):
        if n:
            torch.set_num_threads(n)
        t0 = time.perf_counter()
        for i in range(PER_BLOCK):
            f(i)
        times[name].append((time.perf_counter() - t0) / PER_BLOCK)
report = {}
for name, ts in times.items():
    s = float(np.median(ts))
    report[name] = {"s_per_step_median": round(s, 4), "s_per_step_min": round(min(ts), 4),
                    "s_per_epoch": round(s * STEPS_PER_EPOCH, 1)}
report["ratio_tinyconv_over_torch_1thread"] = round(report["tinyconv"]["s_per_step_median"]
                                                    / report["torch-1thread"]["s_per_step_median"], 2)
report["ratio_tinyconv_over_torch_2threads"] = round(report["tinyconv"]["s_per_step_median"]
                                                     / report["torch-2threads"]["s_per_step_median"], 2)
report["steps_timed_each"] = BLOCKS * PER_BLOCK
report["torch"] = torch.__version__
print(json.dumps(report, indent=1))
