"""The convolution that ``Conv2d`` runs: the maths of
``functional.conv2d_forward`` / ``conv2d_backward``, tiled to the cache.

Same formulas, two differences in how they are computed:

- The columns are never built for the whole batch. They are unfolded one
  tile of output pixels at a time into one small reusable buffer, so a tile's
  columns are still in cache when its GEMM reads them; the cache of a layer
  holds the input, 1/(kh·kw) the size of the columns, and backward unfolds
  the tiles again.
- dx takes one of two equal forms (see ``dx_form``): col2im(W₂ᵀ dy), folded
  tile by tile, or, at stride 1, the "full" correlation of dy with the kernel
  flipped in space and its channel axes swapped, computed by the same tiled
  forward code (what the DeconvNet calls "deconvolution").

``tests/test_fastconv.py`` proves both equal to the readable pair in float64
over hypothesis-drawn shapes and tile sizes. The tuning knobs are keyword
arguments (``**tuning``, see ``TUNING``); the measurements behind their
defaults live in the docs, beside the commands that made them.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

from . import shiftconv
from .backend import gemm_accumulate, get_array_module
from .functional import out_hw, pair

# "shifted": the layer ran as shifted GEMMs (shiftconv), whose dx is its own adjoint
DX_FORMS = ("col2im", "convolution", "shifted")

# The tuning knobs every entry point takes as keyword arguments (``**tuning``),
# and their defaults. Read-only: pass other values, never patch these.
TUNING = MappingProxyType({
    # bytes of one tile's columns: a buffer for a whole large layer pays page
    # faults and cache misses; a few MB stay in the last-level cache
    "tile_bytes": 4 << 20,
    # the fewest output pixels in a tile, below which the GEMM itself loses
    # speed (deep layers, where C·kh·kw is large)
    "min_columns": 768,
    # output pixels per input channel from which dx takes the convolution form
    "dx_crossover": 16,
    # the dispatch rule (shiftconv.suits): a stride-1 convolution with at least
    # shift_min_channels input channels, at least shift_pixels_per_filter
    # output pixels (over the batch) per filter, and at most shift_max_waste
    # grid positions per output pixel runs as shifted GEMMs with no column
    # copy (shiftconv.py); others (strided; few channels, where im2col's
    # columns are small; small deep layers, where reordering the weights
    # costs more than the columns; small images, whose padded grid is mostly
    # dropped) run tiled. shift_min_channels huge: always tiled
    "shift_min_channels": 8,
    "shift_pixels_per_filter": 2.0,
    "shift_max_waste": 1.25,
    # None: each shifted GEMM spans the whole layer; a number: that many grid
    # positions per chunk, all kernel offsets done chunk by chunk
    "shift_chunk_columns": None,
    # images taken together: about this many grid positions per group (one
    # 224x224 image is 51,076), so large images go one by one through two
    # reused image-sized buffers and small ones are batched into one GEMM
    "shift_group_columns": 1 << 16,
})


def _tuned(tuning: dict) -> dict:
    """The defaults overridden by ``tuning``; an unknown knob is a TypeError."""
    unknown = set(tuning) - set(TUNING)
    if unknown:
        raise TypeError(f"unknown tuning option(s) {sorted(unknown)}; known: {', '.join(TUNING)}")
    return {**TUNING, **tuning}


class FastConvCache(NamedTuple):
    x: object  # (N, C, H, W), the forward input (the columns are unfolded again from it)
    weight: object  # (F, C, kh, kw)
    x_shape: tuple  # (N, C, H, W)
    stride: tuple
    padding: tuple


def conv2d_forward(x, weight, bias, stride=1, padding=0, out=None, layer_batch=None, **tuning):
    """y[n, f] = Σ_c x[n, c] ⋆ weight[f, c] + bias[f], tiled (see the module).

    x: (N, C, H, W), weight: (F, C, kh, kw), bias: (F,) or None
    -> y: (N, F, OH, OW), FastConvCache. ``tuning``: see ``TUNING``.
    ``out``: a C-contiguous (N, F, OH, OW) array to write y into (the layer
    takes it from its ``BufferPool``); ``layer_batch``: when
    x is a piece of a layer's batch (``backend.batch_map``), the whole
    batch's size, so that the dispatch rule judges the layer and every
    piece takes the same path.

    Where ``shiftconv.suits`` (the ``shift_*`` knobs of ``TUNING``) the layer
    runs as shifted GEMMs instead, and the cache is a
    ``shiftconv.ShiftConvCache``, which ``conv2d_backward`` recognises.
    """
    (sh, sw), (ph, pw) = pair(stride, "stride"), pair(padding, "padding", 0)
    f, c, kh, kw = weight.shape
    tuned = _tuned(tuning)
    out_hw(x.shape, (kh, kw), (sh, sw), (ph, pw), "conv")  # refuses a kernel larger than the input
    judged = (x.shape[0] if layer_batch is None else layer_batch, *x.shape[1:])
    if shiftconv.suits(judged, weight.shape, (sh, sw), (ph, pw), tuned["shift_min_channels"],
                       tuned["shift_pixels_per_filter"], tuned["shift_max_waste"]):  # fmt: skip
        return shiftconv.conv2d_forward(
            x, weight, bias, (ph, pw), tuned["shift_chunk_columns"], tuned["shift_group_columns"], out
        )
    y = correlate(x, weight.reshape(f, c * kh * kw), bias, (kh, kw), (sh, sw), (ph, pw), out, **tuning)
    return y, FastConvCache(x, weight, x.shape, (sh, sw), (ph, pw))


def with_input(cache, x):
    """``cache`` with ``x`` as its forward input: a piece of the batch
    (``x[a:b]``, for the backward pass of that piece) or the whole batch
    the pieces came from; everything else in a cache holds for any batch."""
    if isinstance(cache, shiftconv.ShiftConvCache):
        return cache._replace(x=x)
    return cache._replace(x=x, x_shape=tuple(x.shape))


def dx_form(cache, **tuning) -> str:
    """Which form ``conv2d_backward`` takes for dx: "convolution" (the flipped
    kernel) or "col2im"; "shifted" for a layer that ran as shifted GEMMs.

    The convolution form needs stride 1 and padding < kernel. It replaces
    the fold's read-modify-write passes by copies, but its columns have
    F·kh·kw rows instead of C·kh·kw and the flipped kernel is a transposing
    copy of W, a fixed cost that small images do not repay. So it is taken
    when F <= C and there are at least ``tuning["dx_crossover"]`` output
    pixels (over the batch) per input channel; 0 takes it wherever it
    applies, a huge value never.
    """
    if isinstance(cache, shiftconv.ShiftConvCache):
        return "shifted"
    crossover = _tuned(tuning)["dx_crossover"]
    f, c, kh, kw = cache.weight.shape
    n, _, h, w = cache.x_shape
    (sh, sw), (ph, pw) = cache.stride, cache.padding
    if (sh, sw) != (1, 1) or ph >= kh or pw >= kw or f > c:
        return "col2im"
    oh, ow = out_hw(cache.x_shape, (kh, kw), (1, 1), (ph, pw), "conv")
    return "convolution" if n * oh * ow >= crossover * c else "col2im"


def conv2d_backward(dy, cache, param_grads=True, out=None, input_grad=True, **tuning):
    """Gradients of ``conv2d_forward``: dy (N, F, OH, OW) -> dx (N, C, H, W),
    dweight (F, C, kh, kw), dbias (F,) (the last two None when ``param_grads``
    is False). The formulas are ``functional.conv2d_backward``'s; dx in the
    form ``dx_form(cache, **tuning)`` names; ``out`` a C-contiguous
    (N, C, H, W) array to write dx into.
    ``input_grad=False`` skips dx (None; a first layer in training needs none).
    """
    if isinstance(cache, shiftconv.ShiftConvCache):
        return shiftconv.conv2d_backward(dy, cache, param_grads, out, input_grad)
    x, weight, x_shape, stride, padding = cache
    f, c, kh, kw = weight.shape
    xp = get_array_module(dy)
    by_convolution = input_grad and dx_form(cache, **tuning) == "convolution"
    if not input_grad:
        dx = None
    elif by_convolution:
        dx = _dx_by_convolution(dy, weight, padding, out, **tuning)
        if not param_grads:
            return dx, None, None
    elif out is None:
        dx = xp.zeros(x_shape, dtype=dy.dtype)
    else:
        dx = out
        dx[...] = 0
    n, oh, ow = x_shape[0], dy.shape[2], dy.shape[3]
    ckk = c * kh * kw
    dy2 = dy.reshape(n, f, oh * ow)  # (N, F, P)
    tiles = _conv_tiles(n, oh, ow, ckk, dy.dtype.itemsize, **tuning)
    buf = _tile_buffer(xp, tiles, ckk, ow, dy.dtype)
    dw2 = xp.zeros((f, ckk), dtype=dy.dtype) if param_grads else None
    w2t = weight.reshape(f, ckk).T  # (C·kh·kw, F)
    for tile in tiles:
        dy_tile = _dy_tile(dy2, tile, ow)
        if input_grad and not by_convolution:  # dcols = W₂ᵀ dy, folded into dx (col2im)
            dcols = buf[: ckk * dy_tile.shape[1]].reshape(ckk, -1)
            xp.matmul(w2t, dy_tile, out=dcols)
            _fold_tile(dx, dcols, tile, (kh, kw), stride, padding, ow)
        if param_grads:  # dW₂ += dy · colsᵀ; the buffer is free again once dcols are folded
            cols = _unfold_tile(buf, x, tile, (kh, kw), stride, padding, ow)
            gemm_accumulate(dw2, dy_tile, cols.T)
    if not param_grads:
        return dx, None, None
    return dx, dw2.reshape(weight.shape), dy2.sum(axis=(0, 2))


def _dx_by_convolution(dy, weight, padding, out=None, **tuning):
    """dx = dy ⋆ W' with W'[c, f] = W[f, c, ::-1, ::-1] and padding k − 1 − p
    (stride 1 only): the full correlation with the flipped kernel."""
    f, c, kh, kw = weight.shape
    xp = get_array_module(dy)
    flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, F, kh, kw)
    flipped = xp.ascontiguousarray(flipped).reshape(c, f * kh * kw)
    ph, pw = padding
    return correlate(dy, flipped, None, (kh, kw), (1, 1), (kh - 1 - ph, kw - 1 - pw), out, **tuning)


def correlate(x, w2, bias, kernel, stride, padding, out=None, **tuning):
    """The tiled im2col + GEMM: (N, C, H, W) ⋆ w2 (F, C·kh·kw) -> (N, F, OH, OW), into ``out`` if given."""
    xp = get_array_module(x)
    n = x.shape[0]
    f, ckk = w2.shape
    oh, ow = out_hw(x.shape, kernel, stride, padding, "conv")
    y = xp.empty((n, f, oh * ow), dtype=x.dtype) if out is None else out.reshape(n, f, oh * ow)
    tiles = _conv_tiles(n, oh, ow, ckk, x.dtype.itemsize, **tuning)
    buf = _tile_buffer(xp, tiles, ckk, ow, x.dtype)
    prod_buf = _tile_buffer(xp, tiles, f, ow, x.dtype)
    for tile in tiles:
        n0, n1, r0, r1 = tile
        cols = _unfold_tile(buf, x, tile, kernel, stride, padding, ow)  # (C·kh·kw, T)
        # the GEMM writes a small contiguous buffer, still in cache when the
        # bias is added on its way into y; a tile of several images has to be
        # reordered on that way anyway, and one code path serves both kinds
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


def _conv_tiles(n, oh, ow, ckk, itemsize, **tuning):
    """The tiles of an (N, ·, OH, OW) output as (n0, n1, r0, r1): images
    n0:n1 and output rows r0:r1 (all rows when more than one image).

    A tile is a block of output pixels whose columns take about
    ``tile_bytes``, but never fewer than ``min_columns`` pixels (see
    ``TUNING``). Small images are grouped whole into one tile, so the GEMM is not a string of
    tiny products. The pieces are of equal size (no one-row remainder tile),
    and an image only a little larger than a tile stays whole.
    """
    tuning = _tuned(tuning)
    columns = max(tuning["min_columns"], tuning["tile_bytes"] // (ckk * itemsize), 1)
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
    return xp.empty((ckk * largest,), dtype=dtype)


# The padding is never built: a padded copy of the input would cost a pass
# over memory as large as the input itself. Kernel offset (i, j) reads input
# row r·s + i − p for output row r; rows (and columns) whose input falls in
# the padding take zeros in the columns, and the others one strided copy.


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
