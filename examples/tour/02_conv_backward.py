"""Step 2: a convolution's backward pass: dx by the flipped kernel, and dW.

The forward pass is linear in x, y = M x, so the input gradient is dx = Mᵀ dy.
Written as a convolution, Mᵀ is the forward code run on dy after three moves:
dilate dy (s − 1 zeros between values, undoing the stride), pad it by k − 1 − p
(plus the rows the forward never reached), and correlate with the kernel
flipped in space, input and output channels swapped:

    dx = conv(pad(dilate(dy)), W'),   W'[c, f] = W[f, c, ::-1, ::-1]

This is the DeconvNet's "deconvolution". The readable pair in
tinyconv/engine/functional.py writes the same Mᵀ as col2im(W₂ᵀ dy) (col2im is
the adjoint of im2col), and the weight gradient from y[n] = W₂ cols[n] + b as
dW₂ = Σ_n dy[n] cols[n]ᵀ, checked here by finite differences in float64.
Conv2d runs fastconv.py: stride-1 layers with enough channels and pixels as
shifted GEMMs (shiftconv.py), the others tiled, with dx by col2im or the
flipped kernel, whichever is cheaper for the layer: conv.dx_form says which.
"""

import numpy as np

from tinyconv import Conv2d
from tinyconv.engine.functional import col2im, conv2d_backward, conv2d_forward, im2col

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


print("dx: conv2d_backward (col2im) vs the flipped-kernel convolution (x: 2x3x7x7, 4 filters)")
for k, s, p in [(3, 1, 1), (3, 2, 0), (2, 2, 0), (5, 1, 2), (3, 3, 1)]:
    x, w = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, k, k))
    y, cache = conv2d_forward(x, w, rng.standard_normal(4), stride=s, padding=p)
    dy = rng.standard_normal(y.shape)
    diff = np.abs(conv2d_backward(dy, cache)[0] - transposed_conv(dy, w, x.shape, s, p)).max()
    print(f"  kernel {k}, stride {s}, padding {p}: y {y.shape}, max |difference| = {diff:.1e}")
    assert diff < 1e-12, "backward must equal the flipped-kernel convolution"

w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
basis = np.eye(16).reshape(16, 1, 1, 4, 4)  # M's columns: the forward pass of each basis image
M = np.stack([conv2d_forward(e, w, None)[0].ravel() for e in basis], axis=1)  # (4, 16)
print("the kernel 1..9 as a matrix M (y = M x, x a flattened 4x4 image, y 2x2):")
print(M.astype(int))
dy = rng.standard_normal((1, 1, 2, 2))
dx = conv2d_backward(dy, conv2d_forward(rng.standard_normal((1, 1, 4, 4)), w, None)[1])[0]
print(f"backward(dy) == Mᵀ dy: max |difference| = {np.abs(dx.ravel() - M.T @ dy.ravel()).max():.1e}")
assert np.allclose(dx.ravel(), M.T @ dy.ravel(), rtol=0, atol=1e-12), "backward must be Mᵀ dy"
x, c = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((2, 27, 16))
lhs, rhs = np.vdot(im2col(x, 3, 2, 1), c), np.vdot(x, col2im(c, x.shape, 3, 2, 1))
print(f"im2col, col2im adjoint: <im2col(x), c> = {lhs:+.12f}, <x, col2im(c)> = {rhs:+.12f}")
assert abs(lhs - rhs) < 1e-10 * abs(lhs), "im2col and col2im must be adjoint"

# the weight gradient dW = Σ_n dy[n] · cols[n]ᵀ against central differences of L = <y, dy>
x, w, b = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
y, cache = conv2d_forward(x, w, b, stride=2, padding=1)
dy = rng.standard_normal(y.shape)
_, dw, db = conv2d_backward(dy, cache)
h, fd = 1e-5, np.zeros_like(w)
for i in np.ndindex(w.shape):
    e = np.zeros_like(w)
    e[i] = h
    up, down = (np.vdot(conv2d_forward(x, w + sign * e, b, 2, 1)[0], dy) for sign in (1, -1))
    fd[i] = (up - down) / (2 * h)
err = float(np.abs(dw - fd).max() / np.abs(fd).max())
print(f"dW (4x3x3x3, stride 2, padding 1) against central differences in float64: relative error {err:.1e}")
assert err < 1e-8 and np.allclose(db, dy.sum(axis=(0, 2, 3))), "dW and db must match their definitions"

print("the form of dx Conv2d took (the flipped kernel needs F <= C and >= 16 pixels per input channel):")
forms, tiled = [], {"shift_min_channels": 10**9}  # the tiled path forced, for its two forms
for c_in, f_out, size, tuning in [(1, 32, 28, {}), (64, 32, 40, tiled), (64, 32, 8, tiled), (64, 32, 40, {})]:
    conv = Conv2d(c_in, f_out, 3, padding=1, seed=0)
    conv.tuning = tuning
    out = conv.forward(rng.standard_normal((1, c_in, size, size)).astype(np.float32))
    conv.backward(np.ones_like(out), param_grads=False)
    forms.append(conv.dx_form)
    print(f"  Conv2d({c_in}, {f_out}) at {size}x{size}{' (tiled)' * bool(tuning)}: dx_form {conv.dx_form!r}")
assert forms == ["col2im", "convolution", "col2im", "shifted"] and Conv2d(1, 1, 1).dx_form is None
print("OK: conv backward is a transposed (flipped-kernel) convolution, and dW = dy · colsᵀ")
