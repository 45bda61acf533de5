"""The chain rule, one layer at a time: each layer's forward and backward pass
as a pair of plain functions, side by side.

    y, cache = <op>_forward(x, ...)          the output and what backward needs
    dx, ... = <op>_backward(dy, cache, ...)  dL/dx from dL/dy (and dL/dparams)

For every pair, backward is the adjoint of forward's derivative: if L depends
on y, then dL/dx = (dy/dx)ᵀ dL/dy. Each cache is a small named tuple, read by
name. Everything is written once with ``xp = get_array_module(x)``, so the same
lines run on NumPy and CuPy, and keeps the dtype it is given.

This is what a learner reads. The layer classes (``layers.py``) run the same
maths, except the convolution, which runs the tiled, cache-sized version in
``fastconv.py``; ``tests/test_fastconv.py`` proves the two equal in float64.

Layouts are PyTorch's: data (N, C, H, W), conv weights (F, C, kh, kw), dense
weights (out, in).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import RuleError, ShapeError
from .backend import get_array_module

# How a ReLU passes a signal back (see ``relu_backward``); one tuple for the
# engine and the DeconvNet.
RULES = ("gradient", "deconvnet", "guided")


# ----------------------------------------------------------------------------
# small helpers: windows, padding


def pair(value, what: str, minimum: int = 1) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``; refuses values below ``minimum``."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ShapeError(f"{what} must be an int or a pair of ints, got {value!r}") from None
    if h < minimum or w < minimum:
        raise ShapeError(f"{what} must be >= {minimum}, got {value!r}")
    return h, w


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a sliding window: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def out_hw(shape, kernel, stride, padding, who: str) -> tuple[int, int]:
    """(OH, OW) of a window sliding over an (N, C, H, W) input; a ShapeError
    naming ``who`` when the kernel does not fit the padded input."""
    _, _, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ShapeError(
            f"{who}: input of spatial size {h}x{w} (padding {ph},{pw}) is smaller "
            f"than the {kh}x{kw} kernel"
        )
    return output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)


def window(i, j, oh, ow, sh, sw):
    """The strided slice of a padded image seen by kernel offset (i, j):
    element (n, c, r, q) of it is padded pixel (n, c, r·sh + i, q·sw + j)."""
    return (
        slice(None),
        slice(None),
        slice(i, i + sh * (oh - 1) + 1, sh),
        slice(j, j + sw * (ow - 1) + 1, sw),
    )


def pad(x, ph, pw, value=0):
    """x with ``value`` around H and W: (N, C, H+2ph, W+2pw); x itself when no padding."""
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph : ph + h, pw : pw + w] = x
    return out


def unpad(x, ph, pw):
    """The inverse of ``pad``: drop ph rows and pw columns on each side."""
    h, w = x.shape[2], x.shape[3]
    return x[:, :, ph : h - ph, pw : w - pw]


# ----------------------------------------------------------------------------
# convolution: im2col -> GEMM forward; col2im(Wᵀ dy), dy · colsᵀ backward


def im2col(x, kernel, stride=1, padding=0):
    """Unfold image patches into columns.

    x: (N, C, H, W) -> cols: (N, C*kh*kw, OH*OW), row order (c, i, j) to match
    ``weight.reshape(F, C*kh*kw)``. The loop runs over the kh*kw kernel
    offsets only; each copies one strided view of the padded image.
    """
    (kh, kw), (sh, sw) = pair(kernel, "kernel"), pair(stride, "stride")
    ph, pw = pair(padding, "padding", 0)
    xp = get_array_module(x)
    n, c = x.shape[:2]
    oh, ow = out_hw(x.shape, (kh, kw), (sh, sw), (ph, pw), "im2col")
    xpad = pad(x, ph, pw)
    cols = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xpad[window(i, j, oh, ow, sh, sw)]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols, x_shape, kernel, stride=1, padding=0):
    """The adjoint of ``im2col``: fold columns back, summing overlaps.

    cols: (N, C*kh*kw, OH*OW) -> (N, C, H, W). Same offset loop as ``im2col``
    with ``+=`` in place of ``=``, so <im2col(x), y> = <x, col2im(y)>.
    """
    (kh, kw), (sh, sw) = pair(kernel, "kernel"), pair(stride, "stride")
    ph, pw = pair(padding, "padding", 0)
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    oh, ow = out_hw(x_shape, (kh, kw), (sh, sw), (ph, pw), "col2im")
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xpad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xpad[window(i, j, oh, ow, sh, sw)] += cols[:, :, i, j]
    return unpad(xpad, ph, pw)


class ConvCache(NamedTuple):
    cols: object  # (N, C·kh·kw, OH·OW), im2col of the input
    weight: object  # (F, C, kh, kw)
    x_shape: tuple  # (N, C, H, W)
    stride: tuple
    padding: tuple


def conv2d_forward(x, weight, bias, stride=1, padding=0):
    """y[n, f] = Σ_c x[n, c] ⋆ weight[f, c] + bias[f]   (cross-correlation)

    As one matrix product per image: y[n] = W₂ · cols[n] + b, where
    W₂ = weight.reshape(F, C·kh·kw) and cols = im2col(x).

    x: (N, C, H, W), weight: (F, C, kh, kw), bias: (F,) or None
    -> y: (N, F, OH, OW), ConvCache.
    """
    stride, padding = pair(stride, "stride"), pair(padding, "padding", 0)
    f, c, kh, kw = weight.shape
    oh, ow = out_hw(x.shape, (kh, kw), stride, padding, "conv")
    cols = im2col(x, (kh, kw), stride, padding)  # (N, C·kh·kw, P)
    y = weight.reshape(f, -1) @ cols  # (N, F, P)
    if bias is not None:
        y += bias.reshape(f, 1)
    return y.reshape(x.shape[0], f, oh, ow), ConvCache(cols, weight, x.shape, stride, padding)


def conv2d_backward(dy, cache, param_grads=True):
    """Gradients of ``conv2d_forward``, from y[n] = W₂ · cols[n] + b:

        dcols[n] = W₂ᵀ · dy[n]      dx = col2im(dcols)    (the adjoint of im2col)
        dW₂ = Σ_n dy[n] · cols[n]ᵀ  db = Σ_{n,p} dy[n, :, p]

    dy: (N, F, OH, OW) -> dx: (N, C, H, W), dweight: (F, C, kh, kw), dbias: (F,)
    (the last two None when ``param_grads`` is False).
    """
    cols, weight, x_shape, stride, padding = cache
    f = weight.shape[0]
    dy2 = dy.reshape(dy.shape[0], f, -1)  # (N, F, P)
    dcols = weight.reshape(f, -1).T @ dy2  # (N, C·kh·kw, P)
    dx = col2im(dcols, x_shape, weight.shape[2:], stride, padding)
    if not param_grads:
        return dx, None, None
    dw = (dy2 @ cols.transpose(0, 2, 1)).sum(axis=0)  # (F, C·kh·kw)
    return dx, dw.reshape(weight.shape), dy2.sum(axis=(0, 2))


# ----------------------------------------------------------------------------
# ReLU and its three backward rules


class ReLUCache(NamedTuple):
    mask: object  # 1(x > 0), bool, the shape of x


def relu_forward(x, out=None):
    """y = max(x, 0).  x: any shape -> y: same shape, ReLUCache(mask = 1(x > 0)).

    ``out`` (here and below): the arrays to write the outputs into, here
    (y, mask); None: fresh arrays. (The layers pass arrays from their
    ``BufferPool``, reused between calls.)
    """
    xp = get_array_module(x)
    y, mask = out or (xp.empty(x.shape, dtype=x.dtype), xp.empty(x.shape, dtype=bool))
    # maximum and the products in relu_backward are branch-free: masked
    # selections (where, copyto(where=)) are much slower on a ReLU's random masks
    return xp.maximum(x, 0, out=y), ReLUCache(xp.greater(x, 0, out=mask))


def relu_backward(dy, cache, rule="gradient", out=None):
    """Backward through a ReLU under one of three rules (strict ``>``)::

        gradient   dx = dy · 1(x > 0)             (backprop: the true gradient)
        deconvnet  dx = dy · 1(dy > 0)            (Zeiler & Fergus: rectify the signal)
        guided     dx = dy · 1(x > 0) · 1(dy > 0)  (Springenberg et al.: both)

    dy: the shape of x. (dy · 1(dy > 0) is max(dy, 0); dy is finite, so a
    product with a 0/1 mask is the selection.)
    """
    xp = get_array_module(dy)
    if rule not in RULES:
        raise RuleError(f"unknown ReLU rule {rule!r}; expected one of {', '.join(RULES)}")
    dx = xp.empty(dy.shape, dtype=dy.dtype) if out is None else out
    if rule == "gradient":
        return xp.multiply(dy, cache.mask, out=dx)
    xp.maximum(dy, 0, out=dx)
    return dx if rule == "deconvnet" else xp.multiply(dx, cache.mask, out=dx)


# ----------------------------------------------------------------------------
# max-pooling with switches, and unpooling


class MaxPoolCache(NamedTuple):
    switches: object  # (N, C, OH, OW) flat kernel offset i·kw + j of each window's max
    x_shape: tuple  # (N, C, H, W)
    kernel: tuple
    stride: tuple
    padding: tuple


def maxpool2d_forward(x, kernel, stride, padding=(0, 0), switches=True, out=None):
    """y[n, c, r, q] = max over the window of (r, q); the switches record the
    flat kernel offset i·kw + j the max came from (the first one on ties).

    x: (N, C, H, W) -> y: (N, C, OH, OW), MaxPoolCache. Switches are uint8
    (intp for kernels of more than 256 offsets); None with ``switches=False``
    (inference: one pass per kernel offset instead of five). Padding counts
    as -inf, as in PyTorch. ``out``: (y, switches) to write into.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = get_array_module(x)
    oh, ow = out_hw(x.shape, kernel, stride, padding, "max-pool")
    xpad = pad(x, ph, pw, value=-np.inf)
    shape = (x.shape[0], x.shape[1], oh, ow)
    # a running max over the kernel offsets: offset 0 holds every window until
    # a later offset beats it strictly (so ties keep the first offset).
    # Branch-free: w += better·(k − w) is "w = k where better".
    kind = switch_dtype(kernel)
    if out is None:
        out = xp.empty(shape, dtype=x.dtype), xp.empty(shape, dtype=kind) if switches else None
    y, winners = out
    y[...] = xpad[window(0, 0, oh, ow, sh, sw)]
    if switches:
        winners[...] = 0
        better, step = xp.empty(shape, dtype=bool), xp.empty(shape, dtype=kind)
    for k in range(1, kh * kw):
        candidate = xpad[window(*divmod(k, kw), oh, ow, sh, sw)]
        if switches:
            xp.greater(candidate, y, out=better)
            xp.subtract(k, winners, out=step)  # k > every earlier offset: no wrap-around
            winners += xp.multiply(step, better, out=step)
        xp.maximum(y, candidate, out=y)
    return y, MaxPoolCache(winners if switches else None, x.shape, kernel, stride, padding)


def switch_dtype(kernel):
    """The dtype of max-pool switches: uint8, or intp for kernels of more than 256 offsets."""
    kh, kw = kernel
    return np.uint8 if kh * kw <= 256 else np.intp


def unpool(grad, switches, input_shape, kernel, stride, padding=(0, 0), out=None):
    """Place each value of ``grad`` at its switch; zeros everywhere else.

    grad, switches: (N, C, OH, OW) -> (N, C, H, W). This one function is both
    the max-pool backward pass and the DeconvNet's unpooling; overlapping
    windows sum. ``out``: the (N, C, H, W) array to write into.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = get_array_module(grad)
    n, c, h, w = input_shape
    oh, ow = switches.shape[2:]
    overlapping = sh < kh or sw < kw
    # windows that tile the input exactly write every pixel: no zeroing first
    tiled = (sh, sw) == (kh, kw) and (ph, pw) == (0, 0) and (oh * kh, ow * kw) == (h, w)
    if out is None or (ph, pw) != (0, 0):
        full = (xp.empty if tiled else xp.zeros)((n, c, h + 2 * ph, w + 2 * pw), dtype=grad.dtype)
    else:  # no padding: write straight into out
        full = out
        if not tiled:
            full[...] = 0
    hit = xp.empty(grad.shape, dtype=bool)
    for i in range(kh):
        for j in range(kw):
            view = full[window(i, j, oh, ow, sh, sw)]  # a view into full
            xp.equal(switches, i * kw + j, out=hit)
            if overlapping:  # a pixel may be the switch of several windows: add
                view += grad * hit
            else:  # each pixel lies in one window at most: write in place
                xp.multiply(grad, hit, out=view)
    if out is None or out is full:
        return unpad(full, ph, pw)
    out[...] = unpad(full, ph, pw)
    return out


def maxpool2d_backward(dy, cache, out=None):
    """dx = unpool(dy): dL/dy of each window goes to its max, the recorded
    switch (never re-computed, never split among ties). dy: (N, C, OH, OW)."""
    return unpool(dy, cache.switches, cache.x_shape, cache.kernel, cache.stride, cache.padding, out)


# ----------------------------------------------------------------------------
# average pooling


class AvgPoolCache(NamedTuple):
    x_shape: tuple  # (N, C, H, W)
    kernel: tuple
    stride: tuple
    padding: tuple


def avgpool2d_forward(x, kernel, stride, padding=(0, 0)):
    """y[n, c, r, q] = (1 / kh·kw) Σ over the window of (r, q), zero padding
    counted in the mean (PyTorch's default). x: (N, C, H, W) -> (N, C, OH, OW)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = get_array_module(x)
    oh, ow = out_hw(x.shape, kernel, stride, padding, "avg-pool")
    xpad = pad(x, ph, pw)
    y = xp.zeros((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += xpad[window(i, j, oh, ow, sh, sw)]
    return y / (kh * kw), AvgPoolCache(x.shape, kernel, stride, padding)


def avgpool2d_backward(dy, cache):
    """dx: each dy[n, c, r, q] / (kh·kw) added to every pixel of its window.
    dy: (N, C, OH, OW) -> (N, C, H, W). (The DeconvNet uses it too: it is the
    adjoint of the forward pass.)"""
    (kh, kw), (sh, sw), (ph, pw) = cache.kernel, cache.stride, cache.padding
    xp = get_array_module(dy)
    n, c, h, w = cache.x_shape
    oh, ow = dy.shape[2:]
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)
    share = dy / (kh * kw)
    for i in range(kh):
        for j in range(kw):
            out[window(i, j, oh, ow, sh, sw)] += share
    return unpad(out, ph, pw)


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) averaging matrix of PyTorch's adaptive pooling.

    Bin i covers [floor(i·in/out), ceil((i+1)·in/out)); each row averages it.
    """
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        m[i, start:end] = 1.0 / (end - start)
    return m


class AdaptivePoolCache(NamedTuple):
    rows: object  # P_h: (OH, H) averaging matrix
    cols: object  # P_w: (OW, W)


def adaptive_avgpool2d_forward(x, output_size):
    """y = P_h · x · P_wᵀ per channel, with the averaging matrices above.
    x: (N, C, H, W) -> y: (N, C, OH, OW), AdaptivePoolCache(P_h, P_w)."""
    xp = get_array_module(x)
    rows = xp.asarray(adaptive_pool_matrix(x.shape[2], output_size[0]), dtype=x.dtype)
    cols = xp.asarray(adaptive_pool_matrix(x.shape[3], output_size[1]), dtype=x.dtype)
    return rows @ x @ cols.T, AdaptivePoolCache(rows, cols)


def adaptive_avgpool2d_backward(dy, cache):
    """dx = P_hᵀ · dy · P_w.  dy: (N, C, OH, OW) -> (N, C, H, W)."""
    return cache.rows.T @ dy @ cache.cols


# ----------------------------------------------------------------------------
# dense, flatten, dropout


class LinearCache(NamedTuple):
    x: object  # (N, in)
    weight: object  # (out, in)


def linear_forward(x, weight, bias, out=None):
    """y = x Wᵀ + b.  x: (N, in), weight: (out, in), bias: (out,) or None -> y: (N, out)
    (written into ``out`` when given)."""
    y = get_array_module(x).matmul(x, weight.T, out=out)
    if bias is not None:
        y += bias
    return y, LinearCache(x, weight)


def linear_backward(dy, cache, param_grads=True, out=None):
    """dx = dy W (N, in),  dW = dyᵀ x (out, in),  db = Σ_n dy (out,).  dy: (N, out);
    dx written into ``out`` when given."""
    dx = get_array_module(dy).matmul(dy, cache.weight, out=out)
    if not param_grads:
        return dx, None, None
    return (dx, *linear_param_grads(dy, cache.x))


def linear_param_grads(dy, x, out=None):
    """dW = dyᵀ x (out, in) and db = Σ_n dy (out,), written into ``out`` = (dW, db) when given."""
    xp = get_array_module(dy)
    dw, db = out or (None, None)
    return xp.matmul(dy.T, x, out=dw), xp.sum(dy, axis=0, out=db)


class FlattenCache(NamedTuple):
    x_shape: tuple  # (N, C, H, W) or any (N, ...)


def flatten_forward(x):
    """(N, C, H, W) -> (N, C·H·W), in PyTorch's (c, h, w) order."""
    return x.reshape(x.shape[0], -1), FlattenCache(x.shape)


def flatten_backward(dy, cache):
    """dx = dy reshaped back: (N, C·H·W) -> (N, C, H, W)."""
    return dy.reshape(cache.x_shape)


class DropoutCache(NamedTuple):
    mask: object  # 1(kept) / (1 − p), the shape of x


def dropout_forward(x, p, rng):
    """Training-mode dropout: y = x · m,  m = 1(u >= p) / (1 − p), u ~ U[0, 1)
    drawn from the host generator ``rng`` (the same mask on every device).
    x: any shape -> y: same shape, DropoutCache(m). (At inference y = x.)"""
    xp = get_array_module(x)
    kept = rng.random(x.shape) >= p
    mask = xp.asarray((kept / (1.0 - p)).astype(x.dtype))
    return x * mask, DropoutCache(mask)


def dropout_backward(dy, cache):
    """dx = dy · m (the same mask as the forward pass)."""
    return dy * cache.mask


# ----------------------------------------------------------------------------
# the scores: softmax, log-softmax, log-sum-exp, the one-hot seed


def logsumexp(s, axis=-1, keepdims=False):
    """log Σ_k exp s_k along ``axis``, stable: the maximum is taken out first."""
    xp = get_array_module(s)
    top = s.max(axis=axis, keepdims=True)
    out = top + xp.log(xp.exp(s - top).sum(axis=axis, keepdims=True))
    return out if keepdims else out.squeeze(axis)


def log_softmax(s, axis=-1):
    """log P_k = s_k − log Σ_j exp s_j, along ``axis``."""
    return s - logsumexp(s, axis=axis, keepdims=True)


def softmax(s, axis=-1):
    """P_k = exp s_k / Σ_j exp s_j along ``axis`` (the maximum taken out first)."""
    xp = get_array_module(s)
    e = xp.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def one_hot(targets, like):
    """The seed of ∂S_c/∂(scores): zeros of the shape, dtype and device of
    ``like`` (N, K), with a 1 at (n, targets[n]) for each row n."""
    xp = get_array_module(like)
    seed = xp.zeros(like.shape, dtype=like.dtype)
    seed[xp.arange(like.shape[0]), xp.asarray(targets)] = 1
    return seed
