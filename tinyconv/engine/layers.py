"""Layers with hand-written backward passes, on NumPy or CuPy arrays.

Each layer's math is a pair of pure functions, ``<op>_forward(x, ...) ->
(y, cache)`` and ``<op>_backward(dy, cache, ...) -> dx`` (plus parameter
gradients), written once with ``xp = get_array_module(x)`` so the same lines
run on the CPU and the GPU. The classes hold parameters, gradients (summed
over calls until ``zero_grad``) and the cache of the last forward pass.

Layouts are PyTorch's: data (N, C, H, W), conv weights (F, C, kh, kw), dense
weights (out, in). Every function keeps the dtype it is given.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import OptionError, RuleError, ShapeError
from .backend import DeviceError, device_of, get_array_module, to_device

RULES = ("gradient", "deconvnet", "guided")


# ----------------------------------------------------------------------------
# small helpers


def _pair(value, what: str, minimum: int = 1) -> tuple[int, int]:
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


def _out_hw(shape, kernel, stride, padding, who: str) -> tuple[int, int]:
    _, _, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ShapeError(
            f"{who}: input of spatial size {h}x{w} (padding {ph},{pw}) is smaller "
            f"than the {kh}x{kw} kernel"
        )
    return output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)


def _window(i, j, oh, ow, sh, sw):
    """The strided slice of a padded image seen by kernel offset (i, j)."""
    return (
        slice(None),
        slice(None),
        slice(i, i + sh * (oh - 1) + 1, sh),
        slice(j, j + sw * (ow - 1) + 1, sw),
    )


def _pad(x, ph, pw, value=0):
    """x with ``value`` around H and W: (N, C, H+2ph, W+2pw); x itself when no padding."""
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph : ph + h, pw : pw + w] = x
    return out


def _unpad(x, ph, pw):
    h, w = x.shape[2], x.shape[3]
    return x[:, :, ph : h - ph, pw : w - pw]


# ----------------------------------------------------------------------------
# convolution: im2col / col2im and the two passes


def im2col(x, kernel, stride=1, padding=0):
    """Unfold image patches into columns.

    x: (N, C, H, W) -> cols: (N, C*kh*kw, OH*OW), row order (c, i, j) to match
    ``weight.reshape(F, C*kh*kw)``. The loop runs over the kh*kw kernel
    offsets only; each copies one strided view of the padded image.
    """
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel, "kernel"), _pair(stride, "stride"), _pair(
        padding, "padding", 0
    )
    xp = get_array_module(x)
    n, c = x.shape[:2]
    oh, ow = _out_hw(x.shape, (kh, kw), (sh, sw), (ph, pw), "im2col")
    xpad = _pad(x, ph, pw)
    cols = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xpad[_window(i, j, oh, ow, sh, sw)]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols, x_shape, kernel, stride=1, padding=0):
    """The adjoint of ``im2col``: fold columns back, summing overlaps.

    cols: (N, C*kh*kw, OH*OW) -> (N, C, H, W). Same offset loop as ``im2col``
    with ``+=`` in place of ``=``, so <im2col(x), y> = <x, col2im(y)>.
    """
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel, "kernel"), _pair(stride, "stride"), _pair(
        padding, "padding", 0
    )
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    oh, ow = _out_hw(x_shape, (kh, kw), (sh, sw), (ph, pw), "col2im")
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xpad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xpad[_window(i, j, oh, ow, sh, sw)] += cols[:, :, i, j]
    return _unpad(xpad, ph, pw)


def conv2d_forward(x, weight, bias, stride=1, padding=0):
    """y[n, f] = sum_c (x[n, c] ⋆ weight[f, c]) + bias[f]  (cross-correlation).

    x: (N, C, H, W), weight: (F, C, kh, kw), bias: (F,) or None
    -> y: (N, F, OH, OW), cache for ``conv2d_backward``.

    As a matrix product: y[n] = W₂ · im2col(x[n]) with W₂ = weight.reshape(F,
    C·kh·kw). The columns are never built for the whole batch: they are
    unfolded one tile of output pixels at a time into one small reusable
    buffer (``_conv_tiles``), so each tile's columns are still in cache when
    its GEMM reads them, and the cache holds the input, 1/(kh·kw) the size of
    the columns. The backward pass unfolds the tiles again.
    """
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding", 0)
    f, c, kh, kw = weight.shape
    y = _correlate(x, weight.reshape(f, c * kh * kw), bias, (kh, kw), (sh, sw), (ph, pw))
    cache = (x, weight, x.shape, (sh, sw), (ph, pw))
    return y, cache


def conv2d_backward(dy, cache, param_grads=True):
    """Gradients of ``conv2d_forward``.

    dy: (N, F, OH, OW) -> dx (N, C, H, W), dweight (F, C, kh, kw), dbias (F,)
    (the last two None when ``param_grads`` is False).

    dx, two equal forms, chosen by cost:
    - per tile dcols = W₂ᵀ dy, folded back into dx with ``+=`` (col2im);
    - with stride 1 (and padding < kernel), dx is itself a convolution: the
      "full" correlation of dy with the kernel flipped in space and its
      channel axes swapped, dx = _correlate(dy, flip(W)ᵀ, padding k−1−p),
      through the same tiled im2col + GEMM as the forward pass. Copies
      replace the fold's read-modify-write passes (VGG-16's conv 64->64 at
      224x224: 47 ms against 60), but the columns have F·kh·kw rows instead
      of C·kh·kw, and the flipped kernel is a transposing copy of W (4-7 ms
      for 512x512x3x3, more than the fold costs at 28x28 and below).
      So: the convolution form when F <= C and there are at least
      DIRECT_DX_PIXELS_PER_CHANNEL output pixels per input channel.
    dW₂ += dy · colsᵀ with each tile's columns unfolded again from the
    cached input, only when parameter gradients are wanted; db = sum of dy
    over n, p.
    """
    x, weight, x_shape, (sh, sw), (ph, pw) = cache
    f, c, kh, kw = weight.shape
    xp = get_array_module(dy)
    n = x_shape[0]
    oh, ow = dy.shape[2], dy.shape[3]
    ckk = c * kh * kw
    dy2 = dy.reshape(n, f, oh * ow)  # (N, F, P)
    as_convolution = (
        (sh, sw) == (1, 1)
        and ph < kh
        and pw < kw
        and f <= c
        and n * oh * ow >= DIRECT_DX_PIXELS_PER_CHANNEL * c
    )
    if as_convolution:
        flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, F, kh, kw)
        flipped = xp.ascontiguousarray(flipped).reshape(c, f * kh * kw)
        dx = _correlate(dy, flipped, None, (kh, kw), (1, 1), (kh - 1 - ph, kw - 1 - pw))
        if not param_grads:
            return dx, None, None
    else:
        dx = xp.zeros(x_shape, dtype=dy.dtype)
        w2t = weight.reshape(f, ckk).T  # (C·kh·kw, F)
    tiles = _conv_tiles(n, oh, ow, ckk, dy.dtype.itemsize)
    buf = _tile_buffer(xp, tiles, ckk, ow, dy.dtype)
    dw2 = xp.zeros((f, ckk), dtype=dy.dtype) if param_grads else None
    for tile in tiles:
        dy_tile = _dy_tile(dy2, tile, ow)
        if not as_convolution:  # col2im
            dcols = buf[: ckk * dy_tile.shape[1]].reshape(ckk, -1)
            xp.matmul(w2t, dy_tile, out=dcols)
            _fold_tile(dx, dcols, tile, (kh, kw), (sh, sw), (ph, pw), ow)
        if param_grads:  # the buffer is free again once dcols are folded
            cols = _unfold_tile(buf, x, tile, (kh, kw), (sh, sw), (ph, pw), ow)
            dw2 += dy_tile @ cols.T
    if not param_grads:
        return dx, None, None
    return dx, dw2.reshape(weight.shape), dy2.sum(axis=(0, 2))


def _correlate(x, w2, bias, kernel, stride, padding):
    """The tiled im2col + GEMM: (N, C, H, W) ⋆ w2 (F, C·kh·kw) -> (N, F, OH, OW)."""
    xp = get_array_module(x)
    n, c = x.shape[:2]
    f, ckk = w2.shape
    oh, ow = _out_hw(x.shape, kernel, stride, padding, "conv")
    y = xp.empty((n, f, oh * ow), dtype=x.dtype)
    tiles = _conv_tiles(n, oh, ow, ckk, x.dtype.itemsize)
    buf = _tile_buffer(xp, tiles, ckk, ow, x.dtype)
    prod_buf = _tile_buffer(xp, tiles, f, ow, x.dtype)
    for tile in tiles:
        n0, n1, r0, r1 = tile
        cols = _unfold_tile(buf, x, tile, kernel, stride, padding, ow)  # (C·kh·kw, T)
        # the GEMM writes a small contiguous buffer, still in cache when the
        # bias is added on its way into y; a tile of several images has to be
        # reordered on that way anyway. (For one-image tiles, a GEMM straight
        # into y's block and the bias added there ran ~1.4x slower on the
        # first VGG layers when the tiles were first written, and as fast in
        # the latest measurement: the buffer is kept for the one code path.)
        prod = prod_buf[: f * cols.shape[1]].reshape(f, -1)  # (F, T)
        xp.matmul(w2, cols, out=prod)
        if n1 - n0 == 1:  # rows r0:r1 of one image: (F, T)
            out = y[n0, :, r0 * ow : r1 * ow]
        else:  # whole images n0:n1: (F, images·P) -> (images, F, P)
            out = y[n0:n1]
            prod = prod.reshape(f, n1 - n0, oh * ow).transpose(1, 0, 2)
        if bias is None:
            out[...] = prod
        else:
            xp.add(prod, bias.reshape(f, 1), out=out)
    return y.reshape(n, f, oh, ow)


def _dy_tile(dy2, tile, ow):
    """The output gradients of one tile as (F, T), T in (image, row, col) order."""
    n0, n1, r0, r1 = tile
    if n1 - n0 == 1:
        return dy2[n0, :, r0 * ow : r1 * ow]  # a view
    return dy2[n0:n1].transpose(1, 0, 2).reshape(dy2.shape[1], -1)  # a copy


# Tiling of the convolution's GEMMs. A tile is a block of output pixels whose
# columns take about TILE_BYTES, but never fewer than TILE_MIN_COLUMNS pixels,
# below which the GEMM itself loses speed (deep layers, where C·kh·kw is
# large). Small images (MNIST, deep VGG layers at batch > 1) are grouped whole
# into one tile, so the GEMM is not a string of tiny products. Measured on
# VGG-16's first layers (2 threads, 2 cores, quiet machine): one buffer for a
# whole 224x224 layer (115 MB) pays page faults and cache misses; 2-4 MB tiles
# ran fastest (conv 64->64 at 224x224: forward 38 ms against 59 ms with 32 MB
# tiles). On a machine busy with other jobs larger tiles win instead, since
# every GEMM call waits for all BLAS threads: 32 MB tiles were then ~1.5x
# faster than 4 MB ones.
TILE_BYTES = 4 << 20
TILE_MIN_COLUMNS = 768
# see conv2d_backward: the crossover measured on VGG-16's layers lies between
# 256 channels at 56x56 (12 pixels per channel, a tie) and 128 at 112x112
# (98 per channel, the convolution form 15% faster)
DIRECT_DX_PIXELS_PER_CHANNEL = 16


def _conv_tiles(n, oh, ow, ckk, itemsize):
    """The tiles of an (N, ·, OH, OW) output as (n0, n1, r0, r1): images
    n0:n1 and output rows r0:r1 (all rows when more than one image).

    The pieces are of equal size (no one-row remainder tile), and an image
    only a little larger than a tile stays whole.
    """
    columns = max(TILE_MIN_COLUMNS, TILE_BYTES // (ckk * itemsize))
    pixels = oh * ow
    if pixels >= columns:  # an image is a tile or more: split its rows
        pieces = min(oh, pixels // columns)
        rows = -(-oh // pieces)  # ceil
        return [(i, i + 1, r, min(oh, r + rows)) for i in range(n) for r in range(0, oh, rows)]
    groups = -(-n // max(1, columns // pixels))
    images = -(-n // groups)
    return [(i, min(n, i + images), 0, oh) for i in range(0, n, images)]


def _tile_buffer(xp, tiles, ckk, ow, dtype):
    """One flat buffer large enough for the columns of the largest tile."""
    largest = max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in tiles) * ow
    return xp.empty(ckk * largest, dtype=dtype)


# The padding is never built: a padded copy of the input costs a pass over
# memory as large as the input itself (5 ms of 53 on VGG-16's conv 64->64 at
# 224x224). Kernel offset (i, j) reads input row r·s + i − p for output row r;
# rows (and columns) whose input falls in the padding take zeros in the
# columns, and the others one strided copy of the input.


def _inside(start, stop, offset, stride, pad, size):
    """The output indices a:b within [start, stop) whose input index
    o·stride + offset − pad lies inside [0, size), and that input slice."""
    a = max(start, -((offset - pad) // stride))  # ceil((pad − offset) / stride)
    b = min(stop, (size - 1 - offset + pad) // stride + 1)
    if a >= b:
        return a, a, slice(0, 0)
    return a, b, slice(a * stride + offset - pad, (b - 1) * stride + offset - pad + 1, stride)


def _unfold_tile(buf, x, tile, kernel, stride, padding, ow):
    """im2col of one tile into ``buf``: -> cols (C·kh·kw, images·rows·OW)
    with rows in (c, i, j) order, columns in (image, row, col) order."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n0, n1, r0, r1 = tile
    c, h, w = x.shape[1:]
    cols = buf[: c * kh * kw * (n1 - n0) * (r1 - r0) * ow].reshape(c, kh, kw, n1 - n0, r1 - r0, ow)
    for i in range(kh):
        ra, rb, rows = _inside(r0, r1, i, sh, ph, h)
        ra, rb = ra - r0, rb - r0
        for j in range(kw):
            qa, qb, columns = _inside(0, ow, j, sw, pw, w)
            dst = cols[:, i, j]  # (C, images, rows, OW)
            if ra > 0:
                dst[:, :, :ra] = 0
            if rb < r1 - r0:
                dst[:, :, rb:] = 0
            if qa > 0:
                dst[..., :qa] = 0
            if qb < ow:
                dst[..., qb:] = 0
            dst[:, :, ra:rb, qa:qb] = x[n0:n1, :, rows, columns].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, -1)


def _fold_tile(dx, dcols, tile, kernel, stride, padding, ow):
    """col2im of one tile: add ``dcols`` (C·kh·kw, T) into ``dx`` in place;
    the columns of padding positions fall away."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n0, n1, r0, r1 = tile
    c, h, w = dx.shape[1:]
    dcols = dcols.reshape(c, kh, kw, n1 - n0, r1 - r0, ow)
    for i in range(kh):
        ra, rb, rows = _inside(r0, r1, i, sh, ph, h)
        for j in range(kw):
            qa, qb, columns = _inside(0, ow, j, sw, pw, w)
            dx[n0:n1, :, rows, columns] += dcols[:, i, j, :, ra - r0 : rb - r0, qa:qb].transpose(1, 0, 2, 3)


# ----------------------------------------------------------------------------
# ReLU and its three backward rules


def relu_forward(x):
    """y = max(x, 0); the cache is the mask 1(x > 0)."""
    xp = get_array_module(x)
    # maximum and the products below are branch-free: masked selections
    # (where, copyto(where=)) run ~30x slower on the random masks of a ReLU
    return xp.maximum(x, 0), x > 0


def relu_backward(dy, mask, rule="gradient"):
    """Backward through a ReLU under one of three rules (strict ``>``)::

        gradient   dx = dy · 1(x > 0)             (backprop: the true gradient)
        deconvnet  dx = dy · 1(dy > 0)            (Zeiler & Fergus: rectify the signal)
        guided     dx = dy · 1(x > 0) · 1(dy > 0)  (Springenberg et al.: both)

    (dy · 1(dy > 0) is max(dy, 0); dy is finite, so a product with a 0/1 mask
    is the selection.)
    """
    xp = get_array_module(dy)
    if rule == "gradient":
        return dy * mask
    if rule == "deconvnet":
        return xp.maximum(dy, 0)
    if rule == "guided":
        return xp.maximum(dy, 0) * mask
    raise RuleError(f"unknown ReLU rule {rule!r}; expected one of {', '.join(RULES)}")


# ----------------------------------------------------------------------------
# max-pooling with switches, and unpooling


def maxpool2d_forward(x, kernel, stride, padding=0, switches=True):
    """Max over each window; the switches record where each max came from.

    x: (N, C, H, W) -> y: (N, C, OH, OW), switches: (N, C, OH, OW) holding the
    flat index i*kw + j of the winning kernel offset (the first one on ties),
    as uint8 (intp for kernels of more than 256 offsets); None with
    ``switches=False`` (inference: one pass per kernel offset
    instead of five). Padding counts as -inf,
    as in PyTorch.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = get_array_module(x)
    oh, ow = _out_hw(x.shape, kernel, stride, padding, "max-pool")
    xpad = _pad(x, ph, pw, value=-np.inf)
    # a running max over the kernel offsets: offset 0 holds every window
    # until a later offset beats it strictly (so ties keep the first offset).
    # Branch-free arithmetic: w += better·(k − w) is "w = k where better".
    y = xpad[_window(0, 0, oh, ow, sh, sw)].copy()  # (N, C, OH, OW)
    winners = xp.zeros(y.shape, dtype=np.uint8 if kh * kw <= 256 else np.intp) if switches else None
    for k in range(1, kh * kw):
        i, j = divmod(k, kw)
        candidate = xpad[_window(i, j, oh, ow, sh, sw)]
        if switches:
            better = candidate > y
            winners += better * (k - winners)
        xp.maximum(y, candidate, out=y)
    return y, winners


def unpool(grad, switches, input_shape, kernel, stride, padding=0):
    """Place each value of ``grad`` at its switch; zeros everywhere else.

    grad, switches: (N, C, OH, OW) -> (N, C, H, W). This is both the max-pool
    backward pass and the DeconvNet's unpooling; overlapping windows sum.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = get_array_module(grad)
    n, c, h, w = input_shape
    oh, ow = switches.shape[2:]
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad.dtype)
    overlapping = sh < kh or sw < kw
    for i in range(kh):
        for j in range(kw):
            window = out[_window(i, j, oh, ow, sh, sw)]  # a view into out
            hit = switches == i * kw + j
            if overlapping:  # a pixel may be the switch of several windows: add
                window += grad * hit
            else:  # each pixel lies in one window at most: write in place
                xp.multiply(grad, hit, out=window)
    return _unpad(out, ph, pw)


# ----------------------------------------------------------------------------
# average pooling


def avgpool2d_forward(x, kernel, stride, padding=0):
    """Mean over each window, padding counted as zeros (PyTorch's default)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = get_array_module(x)
    oh, ow = _out_hw(x.shape, kernel, stride, padding, "avg-pool")
    xpad = _pad(x, ph, pw)
    y = xp.zeros((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += xpad[_window(i, j, oh, ow, sh, sw)]
    return y / (kh * kw), x.shape


def avgpool2d_backward(dy, input_shape, kernel, stride, padding=0):
    """Spread each output gradient evenly over its window."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = get_array_module(dy)
    n, c, h, w = input_shape
    oh, ow = dy.shape[2:]
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)
    share = dy / (kh * kw)
    for i in range(kh):
        for j in range(kw):
            out[_window(i, j, oh, ow, sh, sw)] += share
    return _unpad(out, ph, pw)


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


def adaptive_avgpool2d_forward(x, output_size):
    """y = P_h · x · P_wᵀ per channel, with the averaging matrices above."""
    xp = get_array_module(x)
    ph = xp.asarray(adaptive_pool_matrix(x.shape[2], output_size[0]), dtype=x.dtype)
    pw = xp.asarray(adaptive_pool_matrix(x.shape[3], output_size[1]), dtype=x.dtype)
    return ph @ x @ pw.T, (ph, pw)


def adaptive_avgpool2d_backward(dy, cache):
    """dx = P_hᵀ · dy · P_w."""
    ph, pw = cache
    return ph.T @ dy @ pw


# ----------------------------------------------------------------------------
# dense


def linear_forward(x, weight, bias):
    """y = x Wᵀ + b.  x: (N, in), weight: (out, in), bias: (out,) -> (N, out)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y, (x, weight)


def linear_backward(dy, cache, param_grads=True):
    """dx = dy W, dW = dyᵀ x, db = sum_n dy."""
    x, weight = cache
    dx = dy @ weight
    if not param_grads:
        return dx, None, None
    return dx, dy.T @ x, dy.sum(axis=0)


# ----------------------------------------------------------------------------
# the layer classes


class Layer:
    """Holds parameters, their gradients and the cache of the last forward.

    Subclasses set ``params`` / ``grads`` (dicts of arrays with equal keys)
    and implement ``forward``, ``backward``, ``output_shape`` and ``spec``.
    """

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self.cache = None
        self.name: str | None = None
        self.training = False
        self._forward_out = None  # (shape, device) of the last forward's output

    def __init_subclass__(cls, **kwargs):
        """Give every layer the same guard rails: its ``forward`` records the
        output's shape and device, its ``backward`` refuses to run before a
        forward or on a gradient of another shape or device."""
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _recording_forward(cls.__dict__["forward"])
        if "backward" in cls.__dict__:
            cls.backward = _checked_backward(cls.__dict__["backward"])

    # --- helpers shared by every layer ---

    def _where(self) -> str:
        label = type(self).__name__
        return f"layer {self.name!r} ({label})" if self.name else label

    def _check(self, x, ndim: int | None, channels: int | None = None):
        if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
            raise ShapeError(f"{self._where()}: expected an array, got {type(x).__name__}")
        if ndim is not None and x.ndim != ndim:
            raise ShapeError(
                f"{self._where()}: expected a {ndim}-D input, got shape {tuple(x.shape)}"
            )
        if np.dtype(x.dtype).kind != "f":
            raise ShapeError(
                f"{self._where()}: expected a floating-point input, got dtype {x.dtype}"
            )
        if channels is not None and x.shape[1] != channels:
            raise ShapeError(
                f"{self._where()}: expected {channels} input channels/features, "
                f"got {x.shape[1]} (input shape {tuple(x.shape)})"
            )

    def _param(self, key, x):
        """Parameter ``key`` in the dtype of ``x`` (no copy when equal)."""
        p = self.params[key]
        get_array_module(x, p)  # raises a DeviceError when they disagree
        return p if p.dtype == x.dtype else p.astype(x.dtype)

    def _accumulate(self, **grads):
        """Add each given parameter gradient to ``self.grads`` (None: skip)."""
        for key, grad in grads.items():
            if grad is not None and key in self.grads:
                self.grads[key] += grad.astype(self.grads[key].dtype, copy=False)

    # --- the public interface ---

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy, param_grads: bool = True):
        raise NotImplementedError

    def infer(self, x, inplace: bool = False):
        """The forward output with nothing kept for a backward pass (what
        ``Sequential.predict`` calls). ``inplace``: ``x`` belongs to the
        caller's pipeline and may be overwritten. Layers whose forward keeps
        more than references override this."""
        y = self.forward(x)
        self.forget()
        return y

    def forget(self):
        """Drop the cache of the last forward; backward then refuses to run."""
        self.cache = None
        self._forward_out = None

    def output_shape(self, shape: tuple) -> tuple:
        """Shape of one output sample for an input sample of ``shape``."""
        return tuple(shape)

    def flops(self, shape: tuple) -> int:
        """Multiply-adds x2 of one forward pass on one sample of ``shape``."""
        return 0

    def spec(self) -> dict:
        """Type and hyper-parameters, enough to rebuild the layer."""
        return {"type": type(self).__name__}

    def zero_grad(self):
        for g in self.grads.values():
            g[...] = 0

    def to(self, device: str):
        """Move parameters and gradients to ``device`` (in place)."""
        for d in (self.params, self.grads):
            for k in d:
                d[k] = to_device(d[k], device)
        self.forget()
        return self

    def astype(self, dtype):
        """Cast parameters and gradients to ``dtype`` (in place)."""
        for d in (self.params, self.grads):
            for k in d:
                d[k] = d[k].astype(dtype)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _recording_forward(forward):
    @functools.wraps(forward)
    def wrapper(self, x, *args, **kwargs):
        y = forward(self, x, *args, **kwargs)
        self._forward_out = (tuple(y.shape), device_of(y))
        return y

    return wrapper


def _checked_backward(backward):
    @functools.wraps(backward)
    def wrapper(self, dy, *args, **kwargs):
        if getattr(self, "_forward_out", None) is None:
            raise ShapeError(f"{self._where()}: call forward before backward (no cached forward pass)")
        shape, device = self._forward_out
        if tuple(getattr(dy, "shape", ())) != shape or not hasattr(dy, "dtype"):
            got = tuple(dy.shape) if hasattr(dy, "shape") else type(dy).__name__
            raise ShapeError(f"{self._where()}: gradient has shape {got}, expected {shape} (forward output)")
        if device_of(dy) != device:
            raise DeviceError(f"{self._where()}: gradient on {device_of(dy)!r}, forward ran on {device!r}")
        return backward(self, dy, *args, **kwargs)

    return wrapper


def _uniform(rng, bound, shape):
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


class Conv2d(Layer):
    """2-D convolution (cross-correlation), PyTorch's layout and default init."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, seed=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        if self.in_channels < 1 or self.out_channels < 1:
            raise ShapeError(f"Conv2d channels must be >= 1, got {in_channels}, {out_channels}")
        self.kernel_size = _pair(kernel_size, "Conv2d kernel_size")
        self.stride = _pair(stride, "Conv2d stride")
        self.padding = _pair(padding, "Conv2d padding", 0)
        rng = np.random.default_rng(seed)
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / np.sqrt(fan_in)
        shapes = param_shapes({"type": "Conv2d", "in_channels": self.in_channels, "bias": bias,
                               "out_channels": self.out_channels, "kernel_size": self.kernel_size})
        self.params = {key: _uniform(rng, bound, shape) for key, shape in shapes.items()}
        # np.zeros (calloc), not zeros_like (which writes): the pages cost no memory
        # until a backward pass with param_grads=True fills them; saliency never does
        self.grads = {k: np.zeros(v.shape, v.dtype) for k, v in self.params.items()}

    def forward(self, x):
        self._check(x, 4, self.in_channels)
        _out_hw(x.shape, self.kernel_size, self.stride, self.padding, self._where())
        bias = self._param("bias", x) if "bias" in self.params else None
        y, self.cache = conv2d_forward(x, self._param("weight", x), bias, self.stride, self.padding)
        return y

    def backward(self, dy, param_grads=True):
        dx, dw, db = conv2d_backward(dy, self.cache, param_grads)
        self._accumulate(weight=dw, bias=db)
        return dx

    def output_shape(self, shape):
        c, h, w = shape
        oh, ow = _out_hw((1, c, h, w), self.kernel_size, self.stride, self.padding, self._where())
        return (self.out_channels, oh, ow)

    def flops(self, shape):
        _, oh, ow = self.output_shape(shape)
        kh, kw = self.kernel_size
        return 2 * self.out_channels * oh * ow * self.in_channels * kh * kw

    def spec(self):
        return {
            "type": "Conv2d",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "bias": "bias" in self.params,
        }


class ReLU(Layer):
    """max(x, 0), with a switchable backward rule (see ``relu_backward``)."""

    def __init__(self, rule="gradient"):
        super().__init__()
        self.rule = rule

    @property
    def rule(self):
        return self._rule

    @rule.setter
    def rule(self, value):
        if value not in RULES:
            raise RuleError(f"unknown ReLU rule {value!r}; expected one of {', '.join(RULES)}")
        self._rule = value

    def forward(self, x):
        self._check(x, None)
        y, self.cache = relu_forward(x)
        return y

    def backward(self, dy, param_grads=True):
        return relu_backward(dy, self.cache, self.rule)

    def infer(self, x, inplace=False):
        # no mask; in place over the previous layer's output when allowed
        self._check(x, None)
        self.forget()
        xp = get_array_module(x)
        return xp.maximum(x, 0, out=x if inplace else None)

    def spec(self):
        return {"type": "ReLU", "rule": self.rule}


class MaxPool2d(Layer):
    """Max-pooling that keeps its ``switches`` (argmax offset per window)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "MaxPool2d kernel_size")
        self.stride = _pair(self.kernel_size if stride is None else stride, "MaxPool2d stride")
        self.padding = _pair(padding, "MaxPool2d padding", 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ShapeError(
                f"MaxPool2d padding {self.padding} must be at most half the kernel {self.kernel_size}"
            )
        self.switches = None
        self.input_shape = None

    def forward(self, x):
        self._check(x, 4)
        y, self.switches = maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        self.input_shape = x.shape
        return y

    def backward(self, dy, param_grads=True):
        return unpool(dy, self.switches, self.input_shape, self.kernel_size, self.stride, self.padding)

    def infer(self, x, inplace=False):
        # no switches: one pass per kernel offset instead of five
        self._check(x, 4)
        self.forget()
        return maxpool2d_forward(x, self.kernel_size, self.stride, self.padding, switches=False)[0]

    def forget(self):
        super().forget()
        self.switches = None

    def output_shape(self, shape):
        c, h, w = shape
        return (c, *_out_hw((1, c, h, w), self.kernel_size, self.stride, self.padding, self._where()))

    def spec(self):
        return {
            "type": "MaxPool2d",
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }


class AvgPool2d(Layer):
    """Average pooling, zero padding counted in the mean (PyTorch's default)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "AvgPool2d kernel_size")
        self.stride = _pair(self.kernel_size if stride is None else stride, "AvgPool2d stride")
        self.padding = _pair(padding, "AvgPool2d padding", 0)

    def forward(self, x):
        self._check(x, 4)
        y, self.cache = avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, dy, param_grads=True):
        return avgpool2d_backward(dy, self.cache, self.kernel_size, self.stride, self.padding)

    output_shape = MaxPool2d.output_shape

    def spec(self):
        return {
            "type": "AvgPool2d",
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }


class AdaptiveAvgPool2d(Layer):
    """Average pooling to a fixed output size, with PyTorch's bin edges."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = _pair(output_size, "AdaptiveAvgPool2d output_size")

    def forward(self, x):
        self._check(x, 4)
        y, self.cache = adaptive_avgpool2d_forward(x, self.output_size)
        return y

    def backward(self, dy, param_grads=True):
        return adaptive_avgpool2d_backward(dy, self.cache)

    def output_shape(self, shape):
        return (shape[0], *self.output_size)

    def spec(self):
        return {"type": "AdaptiveAvgPool2d", "output_size": list(self.output_size)}


class Linear(Layer):
    """Dense layer y = x Wᵀ + b, weight (out, in), PyTorch's default init."""

    def __init__(self, in_features, out_features, bias=True, seed=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ShapeError(f"Linear features must be >= 1, got {in_features}, {out_features}")
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        shapes = param_shapes({"type": "Linear", "in_features": self.in_features,
                               "out_features": self.out_features, "bias": bias})
        self.params = {key: _uniform(rng, bound, shape) for key, shape in shapes.items()}
        self.grads = {k: np.zeros(v.shape, v.dtype) for k, v in self.params.items()}

    def forward(self, x):
        self._check(x, 2, self.in_features)
        bias = self._param("bias", x) if "bias" in self.params else None
        y, self.cache = linear_forward(x, self._param("weight", x), bias)
        return y

    def backward(self, dy, param_grads=True):
        dx, dw, db = linear_backward(dy, self.cache, param_grads)
        self._accumulate(weight=dw, bias=db)
        return dx

    def output_shape(self, shape):
        if tuple(shape) != (self.in_features,):
            raise ShapeError(
                f"{self._where()}: expects {self.in_features} features, gets shape {tuple(shape)}"
            )
        return (self.out_features,)

    def flops(self, shape):
        return 2 * self.in_features * self.out_features

    def spec(self):
        return {
            "type": "Linear",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": "bias" in self.params,
        }


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), in PyTorch's (c, h, w) order."""

    def forward(self, x):
        self._check(x, None)
        self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, param_grads=True):
        return dy.reshape(self.cache)

    def output_shape(self, shape):
        return (int(np.prod(shape)),)


class Dropout(Layer):
    """Identity at inference; in training zeroes each unit with probability p
    and scales the rest by 1/(1-p), keeping the mask for backward."""

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ShapeError(f"Dropout p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self.cache = None
            return x
        xp = get_array_module(x)
        keep = self.rng.random(x.shape) >= self.p  # drawn on the host: same on every device
        self.cache = xp.asarray((keep / (1.0 - self.p)).astype(x.dtype))
        return x * self.cache

    def backward(self, dy, param_grads=True):
        return dy if self.cache is None else dy * self.cache

    def spec(self):
        return {"type": "Dropout", "p": self.p}


LAYER_TYPES = {
    cls.__name__: cls
    for cls in (Conv2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Linear, Flatten, Dropout)
}


def layer_from_spec(spec: dict) -> Layer:
    """Rebuild a layer from ``Layer.spec()`` output (parameters left at init)."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in LAYER_TYPES:
        raise OptionError(f"unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}")
    try:
        return LAYER_TYPES[kind](**spec)
    except TypeError as exc:
        raise OptionError(f"bad hyper-parameters for {kind}: {exc}") from None


def param_shapes(spec: dict) -> dict:
    """The parameter shapes of the layer ``spec`` (``Layer.spec()``) describes,
    computed without building it (a size read from a file allocates nothing):
    Conv2d weight (F, C, kh, kw) and bias (F,), Linear weight (out, in) and
    bias (out,), no bias where ``spec["bias"]`` is false; {} for layers
    without parameters. Raises KeyError / TypeError / ValueError on a
    malformed spec."""
    kind = spec.get("type")
    if kind == "Conv2d":
        out = int(spec["out_channels"])
        weight = (out, int(spec["in_channels"]), *_pair(spec["kernel_size"], "Conv2d kernel_size"))
    elif kind == "Linear":
        out = int(spec["out_features"])
        weight = (out, int(spec["in_features"]))
    else:
        return {}
    return {"weight": weight, "bias": (out,)} if spec.get("bias", True) else {"weight": weight}
