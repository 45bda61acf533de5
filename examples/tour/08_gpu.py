"""Step 8: the same forward and backward passes on the GPU.

Nothing in the code changes. Every kernel in tinyconv begins with
xp = get_array_module(x) and then calls xp.<function>: NumPy for host arrays,
CuPy for GPU arrays. Moving the parameters (net.to("cuda")) and the input
(tinyconv.to_device(x, "cuda")) is all it takes, and results come back on the
device the input was on. What does change: sums run in another order, so
float32 results agree to rounding (~1e-6 relative), not bit for bit; and GPU
kernels run asynchronously, so a timer must synchronise before reading the clock.
A max-pool passes the gradient to the largest value of each window, and
where two values are equal but for rounding (a digit's flat background gives
many) another order of sums can pick the other one: the float32 input
gradients then differ at those pixels by whole values. So float32 is compared
on the scores, the input gradients in float64.
Needs a GPU with CuPy (pip install 'tinyconv[gpu]'); without one
(tinyconv.cuda_available() is False) the step says why and exits 0.
"""

import sys
import time
from pathlib import Path

import numpy as np

import tinyconv as tc
from tinyconv.engine.backend import DeviceError, synchronize
from tinyconv.methods.saliency import input_gradient
from tinyconv.pictures import imaging

if not tc.cuda_available():
    try:
        tc.to_device(np.zeros(1), "cuda")
    except DeviceError as exc:
        print(f"step 8 skipped, no GPU here: {exc}")
    sys.exit(0)

repo = Path(__file__).resolve().parents[2]
cpu = tc.load(repo / "weights" / "mnist_cnn.npz")
gpu = tc.load(repo / "weights" / "mnist_cnn.npz").to("cuda")  # the same network, parameters on the GPU
files = [repo / "examples" / "digits" / f"digit_{d}.png" for d in range(10)]
x_cpu = np.concatenate([imaging.preprocess(f, cpu) for f in files])  # (10, 1, 28, 28)
x_gpu = tc.to_device(x_cpu, "cuda")
scores = gpu.forward(x_gpu)
print(f"scores: {type(scores).__module__}.{type(scores).__name__} on {tc.device_of(scores)!r}")
assert tc.device_of(scores) == "cuda", "results stay on the device of the input"
same_top = (tc.to_numpy(scores).argmax(1) == cpu.forward(x_cpu).argmax(1)).all()
print(f"top classes agree with the CPU on all 10 digits: {bool(same_top)}")
assert same_top

s_cpu = cpu.forward(x_cpu)
error = float(np.abs(tc.to_numpy(scores) - s_cpu).max() / np.abs(s_cpu).max())
print(f"float32: GPU scores vs CPU, relative difference {error:.1e}")
assert error < 1e-5, "float32 scores must agree to rounding"

cpu.astype(np.float64)
gpu.astype(np.float64)
w_cpu = input_gradient(cpu, x_cpu.astype(np.float64))  # ∂S_c/∂I, the same function on both devices
w_gpu = input_gradient(gpu, x_gpu.astype(np.float64))
assert tc.device_of(w_gpu) == "cuda" and w_gpu.dtype == np.float64
error = float(np.abs(tc.to_numpy(w_gpu) - w_cpu).max() / np.abs(w_cpu).max())
print(f"float64: GPU input gradient vs CPU, relative difference {error:.1e}")
assert error < 1e-10, "float64 input gradients must agree to rounding"

cpu.astype(np.float32)
gpu.astype(np.float32)
batch = np.concatenate([x_cpu] * 3)  # (30, 1, 28, 28)
for name, net, x in (("CPU", cpu, batch), ("GPU", gpu, tc.to_device(batch, "cuda"))):
    input_gradient(net, x)  # warm-up (CuPy compiles its kernels on first use)
    start = time.perf_counter()
    for _ in range(2):
        synchronize(input_gradient(net, x))  # wait for the device before reading the clock
    print(f"{name}: forward + backward of 30 digits in {(time.perf_counter() - start) / 2 * 1e3:.1f} ms")
print("OK: the same code, on either device; only where the arrays live changed")
