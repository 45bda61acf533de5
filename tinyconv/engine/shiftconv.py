"""Stride-1 convolution with no im2col copy: kh·kw shifted GEMMs over the flat padded input.

The formula. Pad the input once and lay it out channel-major with every image's
padded plane flattened: P (C, N·Hp·Wp), Hp = H + 2ph, Wp = W + 2pw. On the
*padded-width grid* (output position t = n·Hp·Wp + r·Wp + q, with q running
over all Wp columns, not only the OW valid ones), the input that kernel offset
(i, j) meets at t is P[:, t + i·Wp + j]. So the im2col rows of offset (i, j)
are the contiguous slice

    X_(i,j) = P[:, s_ij : s_ij + L],    s_ij = i·Wp + j,
    L = (N − 1)·Hp·Wp + (OH − 1)·Wp + OW   (the last valid position + 1)

and, with W_(i,j) = weight[:, :, i, j] (F, C),

    forward   Y = Σ_(i,j) W_(i,j) · X_(i,j)                (F, L): kh·kw GEMMs, K = C
              y[n, f, r, q] = Y[f, n·Hp·Wp + r·Wp + q] + b[f]  for r < OH, q < OW
    dW        dW_(i,j) = dY · X_(i,j)ᵀ                     dY: dy on the same grid, 0 elsewhere
    dx        dP[:, s_ij : s_ij + L] += W_(i,j)ᵀ · dY       then dx = dP without its padding

Each product is accumulated in place (``gemm_accumulate``: the BLAS with
beta = 1), so no column matrix is ever built: the only copies are the padded
input, the output's crop (where the bias is added) and the weights laid out
as (F, kh, kw, C), where each W_(i,j) is a matrix with a unit stride (the
reordered weights are kept in the cache for the backward pass). The
positions with q ≥ OW (and, between images, the padding rows) are computed
and dropped: Wp/OW (one image) or Hp·Wp/(OH·OW) (a batch) times the useful
work, a few per cent on large images. dx is the exact adjoint of the
forward sum: the same slices, the transposed kernel, accumulated into the
padded input gradient; it equals the textbook form (dy padded once and
correlated with the flipped kernel) and needs no condition on the padding.

The images are taken in groups (``group_columns``): the formulas above hold
for each group with N its number of images, through two buffers reused from
group to group, so a batch of large images costs two image-sized buffers.

Only stride 1 has this form (a strided window is not a contiguous slice);
the tiled im2col path serves strided convolutions, and ``suits`` states the
rule by which ``fastconv`` chooses between them. The same lines run on
NumPy and CuPy (``xp = get_array_module(x)``).
"""

from __future__ import annotations

from typing import NamedTuple

from .backend import gemm_accumulate, get_array_module

__all__ = ["conv2d_forward", "conv2d_backward", "suits", "ShiftConvCache"]


class ShiftConvCache(NamedTuple):
    x: object  # (N, C, H, W), the forward input (padded again for dW)
    rows: object  # the weights as (F, kh, kw, C)
    padding: tuple  # (ph, pw)
    chunk_columns: int | None  # as given to conv2d_forward; backward uses the same
    images: int  # images per group

    @property
    def x_shape(self) -> tuple:
        """(N, C, H, W) of the forward input, as in the other convolution caches."""
        return tuple(self.x.shape)

    @property
    def weight(self):
        """The weights (F, C, kh, kw), a view of the reordered copy."""
        return self.rows.transpose(0, 3, 1, 2)

    @property
    def stride(self) -> tuple:
        return (1, 1)


def suits(x_shape, weight_shape, stride, padding, min_channels=8, pixels_per_filter=2.0, max_waste=1.25):
    """The dispatch rule: True when this convolution should run as shifted GEMMs.

    x_shape (N, C, H, W), weight_shape (F, C, kh, kw). All of:

    - stride 1 (a strided window is not a contiguous slice);
    - at least ``min_channels`` input channels: with few, each shifted GEMM
      has a tiny K (a rank-C update streaming the whole output through
      memory kh·kw times), while im2col's columns (C·kh·kw rows) are small;
    - at least ``pixels_per_filter`` output pixels N·OH·OW per filter: with
      fewer (deep layers on one small image) reordering the weights, F·C·kh·kw
      values, costs about what the columns it saves do;
    - at most ``max_waste`` grid positions computed per output pixel kept
      (the dropped columns and padding rows): small images waste the most.
    """
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    n, c, h, w = x_shape
    f, _, kh, kw = weight_shape
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    if (sh, sw) != (1, 1) or c < min_channels:
        return False
    hp, wp, oh, ow, length = _grid(n, h, w, kh, kw, ph, pw)
    if oh < 1 or ow < 1:
        return False
    kept = n * oh * ow
    return kept >= pixels_per_filter * f and length <= max_waste * kept


def _grid(n, h, w, kh, kw, ph, pw):
    """(Hp, Wp, OH, OW, L) of the padded-width grid of ``n`` images."""
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = hp - kh + 1, wp - kw + 1
    return hp, wp, oh, ow, (n - 1) * hp * wp + (oh - 1) * wp + ow


def pad_flat(x, ph, pw, out=None):
    """x (N, C, H, W) -> P (C, N·Hp·Wp): zero-padded, channel-major, each plane flat.

    ``out``: a (C, ≥ N·Hp·Wp) buffer to write into (its first N·Hp·Wp columns are returned).
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    flat = xp.empty((c, n * hp * wp), dtype=x.dtype) if out is None else out[:, : n * hp * wp]
    p = flat.reshape(c, n, hp, wp)
    # zero only the border; the interior is one copy of x
    p[:, :, :ph] = 0
    p[:, :, ph + h :] = 0
    p[:, :, ph : ph + h, :pw] = 0
    p[:, :, ph : ph + h, pw + w :] = 0
    p[:, :, ph : ph + h, pw : pw + w] = x.transpose(1, 0, 2, 3)
    return flat


def _kernel_rows(weight):
    """weight (F, C, kh, kw) -> (F, kh, kw, C): each [:, i, j, :] a unit-stride (F, C) matrix."""
    xp = get_array_module(weight)
    f, c, kh, kw = weight.shape
    rows = xp.empty((f, kh, kw, c), dtype=weight.dtype)
    rows[...] = weight.transpose(0, 2, 3, 1)
    return rows


def _chunks(length, chunk_columns):
    """[a, b) ranges covering 0..length: one range (the whole layer) when ``chunk_columns`` is None."""
    step = length if not chunk_columns else max(1, int(chunk_columns))
    return [(a, min(length, a + step)) for a in range(0, length, step)]


def images_per_group(n, hp, wp, group_columns):
    """Images whose grids are computed together: enough for ``group_columns``
    grid positions, at least one; None: the whole batch."""
    if not group_columns:
        return n
    return max(1, min(n, int(group_columns) // (hp * wp)))


def conv2d_forward(
    x, weight, bias, padding=(0, 0), chunk_columns=None, group_columns=None, out=None
):
    """y = x ⋆ weight + bias with stride 1, as kh·kw shifted GEMMs (module docstring).

    x: (N, C, H, W), weight: (F, C, kh, kw), bias: (F,) or None, padding (ph, pw)
    -> y: (N, F, OH, OW), cache for ``conv2d_backward``.

    ``group_columns``: the images are taken in groups of about that many grid
    positions (at least one image; None: the whole batch), each group padded
    into and computed in the same two buffers, so a batch of large images
    costs two image-sized buffers instead of two batch-sized ones.
    ``chunk_columns``: None runs each offset's GEMM over the whole group; a
    number splits its grid into chunks of that many positions, all offsets
    done per chunk. ``out``: an (N, F, OH, OW) array to write y into.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    ph, pw = padding
    hp, wp, oh, ow, _ = _grid(n, h, w, kh, kw, ph, pw)
    g = images_per_group(n, hp, wp, group_columns)
    rows = _kernel_rows(weight)  # (F, kh, kw, C)
    pbuf = xp.empty((c, g * hp * wp), dtype=x.dtype)
    grid = xp.empty((f, g * hp * wp), dtype=x.dtype)
    y = xp.empty((n, f, oh, ow), dtype=x.dtype) if out is None else out
    for n0 in range(0, n, g):
        m = min(g, n - n0)
        padded = pad_flat(x[n0 : n0 + m], ph, pw, out=pbuf)  # (C, m·Hp·Wp)
        length = _grid(m, h, w, kh, kw, ph, pw)[-1]
        for a, b in _chunks(length, chunk_columns):
            out = grid[:, a:b]
            for i in range(kh):
                for j in range(kw):
                    s = i * wp + j
                    if i == 0 and j == 0:
                        xp.matmul(rows[:, 0, 0], padded[:, a:b], out=out)
                    else:
                        gemm_accumulate(out, rows[:, i, j], padded[:, s + a : s + b])
        valid = grid[:, : m * hp * wp].reshape(f, m, hp, wp)[:, :, :oh, :ow].transpose(1, 0, 2, 3)
        if bias is None:
            y[n0 : n0 + m] = valid
        else:
            xp.add(valid, bias.reshape(1, f, 1, 1), out=y[n0 : n0 + m])
    return y, ShiftConvCache(x, rows, (ph, pw), chunk_columns, g)


def conv2d_backward(dy, cache, param_grads=True, out=None, input_grad=True):
    """Gradients of ``conv2d_forward``.

    dy: (N, F, OH, OW) -> dx (N, C, H, W), dweight (F, C, kh, kw), dbias (F,)
    (the last two None when ``param_grads`` is False). dY is dy laid on the
    padded-width grid (zeros at the dropped positions);
    dW_(i,j) = dY · X_(i,j)ᵀ and dP[:, s_ij : s_ij + L] += W_(i,j)ᵀ · dY,
    group by group as in the forward pass (the input is padded again, into
    one group's buffer, only when dW is wanted). ``out``: an (N, C, H, W)
    array to write dx into; ``input_grad=False`` skips dx (None).
    """
    x, rows, (ph, pw), chunk_columns, g = cache
    xp = get_array_module(dy)
    n, c, h, w = x.shape
    f, kh, kw, _ = rows.shape
    hp, wp, oh, ow, _ = _grid(n, h, w, kh, kw, ph, pw)
    dbuf = xp.empty((f, g, hp, wp), dtype=dy.dtype)
    dpbuf = xp.empty((c, g * hp * wp), dtype=dy.dtype)
    pbuf = xp.empty((c, g * hp * wp), dtype=dy.dtype) if param_grads else None
    drows = xp.zeros((f, kh, kw, c), dtype=dy.dtype) if param_grads else None
    dx = None if not input_grad else xp.empty((n, c, h, w), dtype=dy.dtype) if out is None else out
    dbuf[:, :, oh:] = 0  # the dropped positions stay zero for every group
    dbuf[:, :, :oh, ow:] = 0
    for n0 in range(0, n, g):
        m = min(g, n - n0)
        length = _grid(m, h, w, kh, kw, ph, pw)[-1]
        dbuf[:, :m, :oh, :ow] = dy[n0 : n0 + m].transpose(1, 0, 2, 3)
        dgrid = dbuf.reshape(f, g * hp * wp)[:, :length]  # (F, L)
        dpadded = dpbuf[:, : m * hp * wp]
        if input_grad:
            dpadded[...] = 0
        padded = pad_flat(x[n0 : n0 + m], ph, pw, out=pbuf) if param_grads else None
        for a, b in _chunks(length, chunk_columns):
            for i in range(kh):
                for j in range(kw):
                    s = i * wp + j
                    if input_grad:
                        gemm_accumulate(dpadded[:, s + a : s + b], rows[:, i, j].T, dgrid[:, a:b])
                    if param_grads:
                        gemm_accumulate(drows[:, i, j], dgrid[:, a:b], padded[:, s + a : s + b].T)
        if input_grad:
            inner = dpadded.reshape(c, m, hp, wp)[:, :, ph : ph + h, pw : pw + w]
            dx[n0 : n0 + m] = inner.transpose(1, 0, 2, 3)
    if not param_grads:
        return dx, None, None
    return dx, drows.transpose(0, 3, 1, 2), dy.sum(axis=(0, 2, 3))
