"""Step 1: checking a gradient with central finite differences.

A hand-written backward pass is checked against the definition of the
derivative, the central difference

    ∂L/∂x_i ≈ (L(x + h e_i) − L(x − h e_i)) / 2h,   error ≈ h²·|L'''|/6 + ε·|L|/h

(truncation + rounding, ε the machine epsilon). In float64 (ε ≈ 2e-16) the
best h leaves a relative error of ~3e-11: a reference. In float32 (ε ≈ 1e-7)
rounding swamps the difference quotient and the best h still leaves ~1e-4: a
float32 "check" cannot tell a correct backward from one that is slightly
wrong, even though the float32 backward itself is accurate to ~1e-7.
"""

import numpy as np

from tinyconv import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from tinyconv.engine.functional import logsumexp, softmax

rng = np.random.default_rng(0)
net = Sequential(
    [Conv2d(1, 3, 3, padding=1, seed=1), ReLU(), MaxPool2d(2), Flatten(), Linear(3 * 3 * 3, 4, seed=2)]
)
x64 = rng.permutation(np.linspace(-1, 1, 36)).reshape(1, 1, 6, 6)  # distinct values: no ties in the pool
label = 2


def loss_and_grad(net, x):
    """Softmax cross-entropy L = log Σ_k exp S_k − S_y and ∂L/∂x by backward."""
    s = net.forward(x)  # (1, 4)
    loss = logsumexp(s[0]) - s[0, label]
    seed = softmax(s)
    seed[0, label] -= 1  # ∂L/∂S = softmax(S) − e_y
    return loss, net.backward(seed.astype(x.dtype), param_grads=False)


def central_difference(net, x, h):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (loss_and_grad(net, xp)[0] - loss_and_grad(net, xm)[0]) / (2 * h)
    return g


def rel_error(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# every layer computes in the dtype of its input (the float32 weights are exact in float64)
x32 = x64.astype(np.float32)
_, g64 = loss_and_grad(net, x64)
_, g32 = loss_and_grad(net, x32)
backward_err32 = rel_error(g32.astype(np.float64), g64)

print("relative error max|fd − backward| / max|backward| of central differences:")
print(f"{'h':>8}  {'float64':>10}  {'float32':>10}")
errors = {}
for h in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
    e64 = rel_error(central_difference(net, x64, h), g64)
    e32 = rel_error(central_difference(net, x32, np.float32(h)).astype(np.float64), g64)
    errors[h] = (e64, e32)
    print(f"{h:8.0e}  {e64:10.2e}  {e32:10.2e}")
best64, best32 = min(e[0] for e in errors.values()), min(e[1] for e in errors.values())
print(f"best float64 finite difference: {best64:.1e};  best float32: {best32:.1e}")
print(f"the float32 *backward* against the float64 one: {backward_err32:.1e}")
print("large h: x ± h crosses kinks (a ReLU flips, a pool's max moves); small h: rounding ε·|L|/h wins")

assert best64 < 1e-8, "the float64 check must agree with backward to 1e-8"
assert best32 > 100 * best64, "float32 differences are far noisier than float64 ones"
assert backward_err32 < 1e-5, "the backward pass itself is accurate in float32"
assert backward_err32 < best32 / 10, "float32 backward beats every float32 finite difference"
print("OK: check backward passes in float64; float32 differences are no reference")
