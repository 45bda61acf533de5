"""Step 3: max-pool switches route the gradient, and unpooling is the same operation.

The forward pass of a max-pool records, per window, where its maximum came
from: the *switch*. Because y = x[switch] within each window, the derivative
∂y/∂x is 1 at the switch and 0 elsewhere, so the backward pass places each
incoming gradient at its switch (and sums where overlapping windows share one).
A DeconvNet's "unpooling" does exactly this with a feature map, so with the
same switches the two are one operation: tinyconv has only one function for both.
"""

import numpy as np

from tinyconv import MaxPool2d

rng = np.random.default_rng(3)
x = rng.permutation(16).reshape(1, 1, 4, 4).astype(np.float64)  # distinct values: no ties
pool = MaxPool2d(2)
y = pool.forward(x)
print("x =\n", x[0, 0].astype(int))
print("y = max over each 2x2 window =\n", y[0, 0].astype(int))
print("switches (flat offset i*kw + j of the max inside each window) =\n", pool.switches[0, 0])


def naive_unpool(r, x, k, s):
    """An independent DeconvNet unpooling: loop over windows, find the max again."""
    out = np.zeros_like(x)
    for n, c, i, j in np.ndindex(r.shape):
        window = x[n, c, i * s : i * s + k, j * s : j * s + k]
        a, b = np.unravel_index(window.argmax(), window.shape)
        out[n, c, i * s + a, j * s + b] += r[n, c, i, j]
    return out


dy = np.array([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 1, 2, 2)
dx = pool.backward(dy)
print("backward of dy = [[10, 20], [30, 40]]: each value lands on its switch =\n", dx[0, 0].astype(int))
for i, j in np.ndindex(2, 2):
    a, b = divmod(int(pool.switches[0, 0, i, j]), 2)
    assert dx[0, 0, 2 * i + a, 2 * j + b] == dy[0, 0, i, j], "the gradient must land on the switch"
assert np.count_nonzero(dx) == 4, "every other input gets zero gradient"

# finite differences agree; the values differ by >= 1, so no max changes within ±0.25
eps = 0.25
fd = np.array([(np.vdot(dy, pool.forward(x + eps * e)) - np.vdot(dy, pool.forward(x - eps * e))) / (2 * eps)
               for e in np.eye(16).reshape(16, 1, 1, 4, 4)]).reshape(x.shape)  # fmt: skip
pool.forward(x)
assert np.allclose(fd, dx, rtol=0, atol=1e-12), "backward must match finite differences"
print(f"finite differences agree: max |difference| = {np.abs(fd - dx).max():.1e}")

# overlapping windows (kernel 3, stride 1): one input may win several windows
x = rng.permutation(25).reshape(1, 1, 5, 5).astype(np.float64)
pool = MaxPool2d(3, stride=1)
y = pool.forward(x)
feature = rng.integers(1, 10, size=y.shape).astype(np.float64)  # a feature map to unpool
back = pool.backward(feature)
print("5x5 input, 3x3 windows at stride 1: x =\n", x[0, 0].astype(int))
print("feature map to send back =\n", feature[0, 0].astype(int))
print("backward = unpool: shared maxima sum their values =\n", back[0, 0].astype(int))
reference = naive_unpool(feature, x, 3, 1)
assert np.array_equal(back, reference), "backward must equal the DeconvNet's unpooling"
assert back.sum() == feature.sum(), "unpooling moves values, never creates or drops them"
print("max-pool backward == DeconvNet unpooling with the same switches (exactly)")
print("OK: switches route each gradient; unpooling is the pool's backward pass")
