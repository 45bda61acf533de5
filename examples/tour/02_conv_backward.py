"""Step 2: a convolution's backward pass is a convolution with the flipped kernel.

The forward pass is linear in x, y = M x, so the input gradient is dx = Mᵀ dy.
Written as a convolution, Mᵀ is the forward code run on dy after three moves:
dilate dy (s − 1 zeros between values, undoing the stride), pad it by k − 1 − p
(plus the rows the forward never reached), and correlate with the kernel
flipped in space, input and output channels swapped:

    dx = conv(pad(dilate(dy)), W'),   W'[c, f] = W[f, c, ::-1, ::-1]

This is the DeconvNet's "deconvolution". Inside tinyconv the same Mᵀ is
col2im(Wᵀ dy), and col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>.
"""

import numpy as np

from tinyconv.engine.layers import col2im, conv2d_backward, conv2d_forward, im2col

rng = np.random.default_rng(0)


def transposed_conv(dy, w, x_shape, s, p):
    """dx through the *forward* code: dilate, pad, correlate with the flipped kernel."""
    n, f, oh, ow = dy.shape
    kh, kw = w.shape[2:]
    dilated = np.zeros((n, f, (oh - 1) * s + 1, (ow - 1) * s + 1))
    dilated[:, :, ::s, ::s] = dy
    eh, ew = x_shape[2] + 2 * p - kh - (oh - 1) * s, x_shape[3] + 2 * p - kw - (ow - 1) * s
    padded = np.pad(dilated, ((0, 0), (0, 0), (kh - 1 - p, kh - 1 - p + eh), (kw - 1 - p, kw - 1 - p + ew)))
    flipped = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # (C, F, kh, kw)
    return conv2d_forward(padded, flipped, None)[0]


print("input gradient: conv2d_backward vs the flipped-kernel convolution (x: 2x3x7x7, 4 filters)")
for k, s, p in [(3, 1, 1), (3, 2, 0), (2, 2, 0), (5, 1, 2), (3, 3, 1)]:
    x, w = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, k, k))
    y, cache = conv2d_forward(x, w, rng.standard_normal(4), stride=s, padding=p)
    dy = rng.standard_normal(y.shape)
    dx = conv2d_backward(dy, cache)[0]
    diff = np.abs(dx - transposed_conv(dy, w, x.shape, s, p)).max()
    print(f"  kernel {k}, stride {s}, padding {p}: y {y.shape}, max |difference| = {diff:.1e}")
    assert diff < 1e-12, "backward must equal the flipped-kernel convolution"

w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
print("a 3x3 kernel W and the flipped W[::-1, ::-1] its backward correlates with:")
for row, flipped_row in zip(w[0, 0], w[0, 0, ::-1, ::-1], strict=True):
    print(f"  {row}    {flipped_row}")

# the matrix view: M's columns are the forward pass of each basis image
basis = np.eye(16).reshape(16, 1, 1, 4, 4)
M = np.stack([conv2d_forward(e, w, None)[0].ravel() for e in basis], axis=1)  # (4, 16)
print("the same kernel as a matrix M (y = M x, x a flattened 4x4 image, y 2x2):")
print(M.astype(int))
dy = rng.standard_normal((1, 1, 2, 2))
_, cache = conv2d_forward(rng.standard_normal((1, 1, 4, 4)), w, None)
dx = conv2d_backward(dy, cache)[0]
assert np.allclose(dx.ravel(), M.T @ dy.ravel(), rtol=0, atol=1e-12), "backward must be Mᵀ dy"
print(f"backward(dy) == Mᵀ dy: max |difference| = {np.abs(dx.ravel() - M.T @ dy.ravel()).max():.1e}")

print("im2col and col2im are adjoint: <im2col(x), c> == <x, col2im(c)>")
for k, s, p in [(3, 1, 1), (2, 2, 0), (3, 2, 1)]:
    x = rng.standard_normal((2, 3, 7, 7))
    c = rng.standard_normal(im2col(x, k, s, p).shape)
    lhs, rhs = np.vdot(im2col(x, k, s, p), c), np.vdot(x, col2im(c, x.shape, k, s, p))
    print(f"  kernel {k}, stride {s}, padding {p}: {lhs:+.12f} vs {rhs:+.12f}")
    assert abs(lhs - rhs) < 1e-10 * abs(lhs), "im2col and col2im must be adjoint"
print("OK: conv backward is a transposed (flipped-kernel) convolution")
