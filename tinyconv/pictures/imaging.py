"""Pictures in and out, with Pillow only.

In:  ``preprocess`` turns an image file, a PIL image or a uint8 array into the
     network's input (1, C, H, W): greyscale or RGB as the net expects, the
     shorter side resized and the centre cropped for a fixed-size net, then
     x = (pixel / 255 − mean) / std with the net's per-channel mean and std.
Out: heat maps with a perceptual colour map, overlays on the image,
     signed-gradient images with a diverging map, montages with captions,
     PNG files written all-or-nothing (``write_files``).

The two colour maps are derived here, not copied: each is a path through
CIELAB space converted to sRGB. "fire" (inferno-like) raises the lightness
L* linearly from black to near-white while the hue turns from purple through
red to yellow, so equal steps in saliency look like equal steps in
brightness, and the map survives greyscale printing. "bluered" is diverging:
white at zero, blue below and red above, with L* falling symmetrically.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin, UnidentifiedImageError

from ..engine.backend import to_device, to_numpy
from ..errors import DataError, OptionError, ShapeError
from ..files import check_output_folder, install

__all__ = [
    "colormap",
    "load_image",
    "as_uint8_image",
    "as_rgb",
    "Geometry",
    "fit_geometry",
    "fit_image",
    "preprocess",
    "deprocess",
    "contrast_image",
    "map_top",
    "normalise_map",
    "heatmap",
    "signed_image",
    "signed_channel",
    "overlay",
    "upscale",
    "display_scale",
    "with_colorbar",
    "montage",
    "save_png",
    "safe_name",
    "unique_stems",
    "write_files",
]

# Pillow modes holding 8-bit samples that convert to greyscale or RGB, which /255 maps to [0, 1]
_EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")


# ----------------------------------------------------------------------------
# colour maps, derived from paths through CIELAB


def _lab_to_srgb(lab):
    """CIELAB (D65) -> sRGB in [0, 1] (unclipped). lab: (..., 3)."""
    lab = np.asarray(lab, dtype=float)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    delta = 6 / 29
    xyz = np.where(f > delta, f**3, 3 * delta**2 * (f - 4 / 29)) * np.array([0.95047, 1.0, 1.08883])
    to_linear_rgb = np.array(
        [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
    )
    rgb = xyz @ to_linear_rgb.T
    return np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.abs(rgb) ** (1 / 2.4) * np.sign(rgb) - 0.055)


def _lch_to_srgb_in_gamut(lightness, chroma, hue_degrees):
    """sRGB of (L*, C*, h), lowering the chroma until the colour fits the gamut."""
    h = math.radians(hue_degrees)

    def rgb(c):
        return _lab_to_srgb([lightness, c * math.cos(h), c * math.sin(h)])

    if np.all((rgb(chroma) >= 0) & (rgb(chroma) <= 1)):
        return rgb(chroma)
    lo, hi = 0.0, chroma  # bisection on the largest chroma in gamut
    for _ in range(30):
        mid = (lo + hi) / 2
        inside = np.all((rgb(mid) >= -1e-9) & (rgb(mid) <= 1 + 1e-9))
        lo, hi = (mid, hi) if inside else (lo, mid)
    return np.clip(rgb(lo), 0, 1)


def _fire(t):
    # L* rises linearly; hue turns 300° (purple) -> 455° = 95° (yellow); chroma is an arch
    return 4 + 93 * t, 80 * math.sin(math.pi * t / 1.2) ** 0.6, 300 + 155 * t


def _bluered(t):
    # t = 0.5 is zero (white); the two halves are mirror images in L* and chroma
    u = abs(2 * t - 1)
    return 98 - 58 * u, 72 * u, 285 if t < 0.5 else 35


@functools.cache
def colormap(name: str = "fire") -> np.ndarray:
    """A 256-entry colour table (256, 3) uint8: "fire" (sequential) or "bluered" (diverging)."""
    paths = {"fire": _fire, "bluered": _bluered}
    if name not in paths:
        raise OptionError(f"unknown colour map {name!r}; expected one of {', '.join(paths)}")
    table = np.array([_lch_to_srgb_in_gamut(*paths[name](i / 255)) for i in range(256)])
    table = np.round(np.clip(table, 0, 1) * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


# ----------------------------------------------------------------------------
# images in


def load_image(path) -> Image.Image:
    """Open an image file, refusing what tinyconv cannot read with a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"image file {str(path)!r} does not exist")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory, not an image file")
    try:
        with Image.open(path) as im:
            im.load()
    except Image.DecompressionBombError as exc:
        raise DataError(f"{str(path)!r} declares too many pixels to read safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{str(path)!r} is not an image file Pillow can read ({exc})") from None
    _check_mode(im, str(path))
    _check_size(im, str(path))
    return im


def _check_mode(im: Image.Image, what: str) -> None:
    if im.mode not in _EIGHT_BIT_MODES:
        raise DataError(
            f"{what} has image mode {im.mode!r}; tinyconv reads 8-bit greyscale or colour images "
            f"(modes {', '.join(_EIGHT_BIT_MODES)}): convert it first"
        )


def _check_size(im: Image.Image, what: str) -> None:
    if im.width == 0 or im.height == 0:
        raise DataError(f"{what} has no pixels (size {im.width}x{im.height})")


def as_uint8_image(image) -> Image.Image:
    """A PIL image from a path, a PIL image or a uint8 array (H, W), (H, W, 1|3|4)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        _check_mode(image, "the image")
        _check_size(image, "the image")
        return image
    if hasattr(image, "shape") and hasattr(image, "dtype"):
        a = to_numpy(image)  # an image array may come from the device
        if 0 in a.shape:
            raise DataError(f"the image array has no pixels (shape {a.shape})")
        if a.dtype != np.uint8:
            raise DataError(
                f"image arrays must be uint8 pixels (0..255), got dtype {a.dtype}; "
                "for network input that is already normalised, skip preprocess"
            )
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim == 2:
            return Image.fromarray(np.ascontiguousarray(a), mode="L")
        if a.ndim == 3 and a.shape[2] in (3, 4):
            return Image.fromarray(np.ascontiguousarray(a), mode="RGB" if a.shape[2] == 3 else "RGBA")
        raise DataError(
            f"image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}"
        )
    raise DataError(f"expected an image path, a PIL image or a uint8 array, got {type(image).__name__}")


@dataclass(frozen=True)
class Geometry:
    """How ``preprocess`` maps a source image of ``source`` = (w, h) pixels onto a
    fixed network input: resize to ``resized`` = (w', h'), which covers the
    input, then cut the window of ``view`` = (W, H) at (``left``, ``top``).

    The one place this mapping is computed: preprocessing uses it forwards,
    localisation backwards (``box_to_source``, ``mask_to_source``).
    """

    source: tuple
    resized: tuple
    left: int
    top: int
    view: tuple

    @property
    def identity(self) -> bool:
        return self.source == self.view

    @property
    def scale(self) -> tuple:
        """(sx, sy) = (w' / w, h' / h)."""
        return self.resized[0] / self.source[0], self.resized[1] / self.source[1]

    def box_to_source(self, box) -> tuple:
        """A box (x0, y0, x1, y1) in view pixels (x1/y1 exclusive) as the smallest
        box of source pixels that covers it, clipped to the source image."""
        sx, sy = self.scale
        x0, y0, x1, y1 = (float(v) for v in box)
        return (
            max(0, math.floor((x0 + self.left) / sx)),
            max(0, math.floor((y0 + self.top) / sy)),
            min(self.source[0], math.ceil((x1 + self.left) / sx)),
            min(self.source[1], math.ceil((y1 + self.top) / sy)),
        )

    def mask_to_source(self, mask) -> np.ndarray:
        """A (H, W) bool mask of the view as a (h, w) mask of the source (nearest neighbour)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.view[::-1]:
            raise ShapeError(f"mask of shape {mask.shape} does not match the view's {self.view[::-1]}")
        if self.identity:
            return mask.copy()
        full = np.zeros(self.resized[::-1], bool)
        full[self.top : self.top + mask.shape[0], self.left : self.left + mask.shape[1]] = mask
        return np.asarray(Image.fromarray(full).resize(self.source, Image.Resampling.NEAREST))


def fit_geometry(size, shape=None) -> Geometry:
    """The ``Geometry`` that makes an image of ``size`` = (w, h) cover ``shape`` =
    (H, W) and cuts its centre; ``shape`` None (a net without a fixed input)
    keeps the image as it is."""
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise DataError(f"the image has no pixels (size {w}x{h})")
    if shape is None or (h, w) == tuple(shape):
        return Geometry((w, h), (w, h), 0, 0, (w, h))
    height, width = (int(v) for v in shape)
    scale = max(height / h, width / w)
    new = (max(width, round(w * scale)), max(height, round(h * scale)))
    return Geometry((w, h), new, (new[0] - width) // 2, (new[1] - height) // 2, (width, height))


def fit_image(im: Image.Image, geometry: Geometry) -> Image.Image:
    """The view ``geometry`` describes: ``im`` resized (bilinear when enlarging,
    Lanczos when shrinking) and its window cut out."""
    if geometry.identity:
        return im
    enlarging = geometry.resized[0] > geometry.source[0] or geometry.resized[1] > geometry.source[1]
    im = im.resize(geometry.resized, Image.Resampling.BILINEAR if enlarging else Image.Resampling.LANCZOS)
    (width, height), left, top = geometry.view, geometry.left, geometry.top
    return im.crop((left, top, left + width, top + height))


def preprocess(image, net, dtype=np.float32):
    """Network input (1, C, H, W) from a file, PIL image or uint8 array.

    Converts to greyscale ("L") or RGB as ``net.input_shape[0]`` asks (an
    alpha channel is composited on black), resizes the shorter side and crops
    the centre when the net has a fixed ``input_shape``, and normalises
    x = (pixel / 255 − mean) / std, with the channels in the order
    ``net.meta["channel_order"]`` gives ("RGB" unless it says "BGR").
    Returned on the net's device.
    """
    im = as_uint8_image(image)
    shape = getattr(net, "input_shape", None)
    channels = shape[0] if shape else (1 if im.mode in ("1", "L", "LA", "La") else 3)
    if channels not in (1, 3):
        raise ShapeError(f"the network takes {channels} input channels; images give 1 (greyscale) or 3 (RGB)")
    if im.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        im = im.convert("RGBA")
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, im)
    if im.mode in ("CMYK", "YCbCr"):
        im = im.convert("RGB")
    im = im.convert("L" if channels == 1 else "RGB")
    if shape:
        im = fit_image(im, fit_geometry(im.size, shape[1:]))
    a = np.asarray(im, dtype=np.float64) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)
    if channels == 3 and channel_order(net) == "BGR":
        a = a[::-1]  # mean and std are then in B, G, R order too
    mean = np.asarray(net.mean if getattr(net, "mean", None) is not None else [0.0] * channels)
    std = np.asarray(net.std if getattr(net, "std", None) is not None else [1.0] * channels)
    x = ((a - mean[:, None, None]) / std[:, None, None]).astype(dtype)[None]
    return to_device(x, getattr(net, "device", "cpu"))


def deprocess(x, net) -> np.ndarray:
    """The displayable image of one network input: (C, H, W) -> uint8 (H, W, C).

    pixel = 255 · clip(x · std + mean, 0, 1), the inverse of ``preprocess``.
    """
    a = to_numpy(x).astype(np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ShapeError(f"expected one input of shape (C, H, W), got {a.shape}")
    c = a.shape[0]
    mean = np.asarray(net.mean if net.mean is not None else [0.0] * c)
    std = np.asarray(net.std if net.std is not None else [1.0] * c)
    a = a * std[:, None, None] + mean[:, None, None]
    if c == 3 and channel_order(net) == "BGR":
        a = a[::-1]
    return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def channel_order(net) -> str:
    """"RGB" (the default) or "BGR": the colour order of a 3-channel network's
    input, from ``net.meta["channel_order"]`` (Caffe-trained weights such as
    ``tc.zoo.vgg16_features`` take BGR; the native format keeps meta)."""
    order = str((getattr(net, "meta", None) or {}).get("channel_order", "RGB")).upper()
    if order not in ("RGB", "BGR"):
        raise ShapeError(f"unknown channel_order {order!r} in the network's meta; expected RGB or BGR")
    return order


def contrast_image(x, percentile: float = 99.5) -> np.ndarray:
    """A display of one network input (C, H, W) that ignores the pixel range:
    mid-grey at 0 (the mean image), x / (``percentile`` of |x|) stretched
    symmetrically to black and white. uint8 (H, W, C); for looking only."""
    a = to_numpy(x).astype(np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ShapeError(f"expected one input of shape (C, H, W), got {a.shape}")
    top = np.percentile(np.abs(a), percentile)
    top = top if top > 0 else 1.0
    return np.round(np.clip(0.5 + 0.5 * a / top, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


# ----------------------------------------------------------------------------
# maps to colours


def map_top(m, percentile: float = 99.5) -> float:
    """The value of |m| where a colour map saturates: its ``percentile`` (the
    max when that is 0, 1 for an all-zero map). What a legend's top end means."""
    a = np.abs(np.asarray(m, dtype=np.float64))
    top = np.percentile(a, percentile) if a.size else 0.0
    if not top > 0:
        top = a.max() if a.size and a.max() > 0 else 1.0
    return float(top)


def normalise_map(m, percentile: float = 99.5) -> np.ndarray:
    """Scale a map to [0, 1] by dividing by ``map_top`` (its ``percentile`` of |m|)
    and clipping (the few strongest values saturate; 100 = divide by the max).
    m: a NumPy array (pictures are made on the host: ``tc.to_numpy`` first)."""
    return np.clip(np.abs(np.asarray(m, dtype=np.float64)) / map_top(m, percentile), 0, 1)


def _apply(table, t):
    return table[np.round(np.clip(t, 0, 1) * 255).astype(np.intp)]


def heatmap(m, cmap: str = "fire", percentile: float = 99.5) -> np.ndarray:
    """A saliency map (H, W), a NumPy array, as colours: uint8 (H, W, 3)."""
    m = np.asarray(m)
    if m.ndim != 2:
        raise ShapeError(f"heatmap expects one map of shape (H, W), got {m.shape}")
    return _apply(colormap(cmap), normalise_map(m, percentile))


def signed_image(g, percentile: float = 99.5) -> np.ndarray:
    """A signed map as colours, white at 0, red > 0, blue < 0: uint8 (H, W, 3).

    g: (H, W), or (C, H, W) where each pixel shows its channel of largest |g|.
    Scaled symmetrically by the ``percentile`` of |g|. g: a NumPy array.
    """
    g = signed_channel(g)
    if g.ndim != 2:
        raise ShapeError(f"signed_image expects (H, W) or (C, H, W), got {g.shape}")
    return _apply(colormap("bluered"), 0.5 + 0.5 * np.clip(g / map_top(g, percentile), -1, 1))


def signed_channel(g) -> np.ndarray:
    """(C, H, W) -> (H, W): at each pixel the value of the channel of largest |g|
    (what ``signed_image`` shows); (H, W) stays as it is."""
    g = np.asarray(g, dtype=np.float64)
    if g.ndim == 3:
        g = np.take_along_axis(g, np.abs(g).argmax(axis=0)[None], axis=0)[0]
    return g


def as_rgb(image) -> np.ndarray:
    """A uint8 image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as (H, W, 3): grey
    repeated in the three channels, alpha dropped."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return a[:, :, :3].astype(np.uint8)


def overlay(image, heat, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend a heat map (H, W, 3) over the greyscale version of an
    image (H, W[, C]) uint8: out = (1 − α)·grey + α·heat."""
    grey = np.asarray(image, dtype=np.float64)
    if grey.ndim == 3:  # luma of RGB(A); a single channel as is
        grey = grey[:, :, :3] @ np.array([0.299, 0.587, 0.114]) if grey.shape[2] >= 3 else grey[:, :, 0]
    heat = np.asarray(heat, dtype=np.float64)
    if heat.shape[:2] != grey.shape[:2]:
        raise ShapeError(f"heat map of size {heat.shape[:2]} does not match the image's {grey.shape[:2]}")
    out = (1 - alpha) * grey[:, :, None] + alpha * heat
    return np.round(np.clip(out, 0, 255)).astype(np.uint8)


def upscale(image, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement (each pixel becomes a factor×factor block)."""
    a = np.asarray(image)
    if factor <= 1:
        return a
    return a.repeat(factor, axis=0).repeat(factor, axis=1)


def display_scale(height: int, width: int, target: int = 224) -> int:
    """Integer enlargement that makes a small image about ``target`` pixels tall."""
    return max(1, round(target / max(height, width)))


# ----------------------------------------------------------------------------
# montages and files


@functools.lru_cache(maxsize=8)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


# spellings for symbols the captions use, where the font has no glyph
_SPELLED = {
    "σ": "sigma",
    "∂": "d",
    "λ": "lambda",
    "‖": "||",
    "−": "-",
    "×": "x",
    "²": "^2",
    "α": "alpha",
    "ε": "eps",
    "≈": "~",
    "→": "->",
    "₀": "0",
    "…": "...",
    "’": "'",
    "“": '"',
    "”": '"',
    "–": "-",
}


def _printable(text: str, font) -> str:
    """``text`` with every character the font cannot draw spelled out (or '?')."""
    try:
        missing = bytes(font.getmask("\uffff"))
    except Exception:  # noqa: BLE001  (bitmap fonts: keep ASCII only)
        missing = None
    out = []
    for ch in text:
        if ch.isascii() or (missing is not None and bytes(font.getmask(ch)) != missing):
            out.append(ch)
        else:
            out.append(_SPELLED.get(ch, "?"))
    return "".join(out)


def _wrap(text: str, font, width: int) -> list[str]:
    lines = []
    for paragraph in _printable(str(text), font).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}".strip()
            if line and font.getlength(trial) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def with_colorbar(tile, cmap: str, low: str, high: str, middle: str | None = None, font_size: int = 11):
    """``tile`` (H, W, 3) uint8 with a legend below it: the colour map's table
    drawn as a bar the tile's width, ``low``/``middle``/``high`` under its
    left end, centre and right end. Returns uint8 (H + ~28, W, 3)."""
    tile = as_rgb(tile)
    w = tile.shape[1]
    table = colormap(cmap)
    bar = table[np.linspace(0, 255, w).round().astype(np.intp)][None].repeat(9, axis=0)
    font = _font(font_size)
    legend = Image.new("RGB", (w, 12 + font_size + 6), "white")
    legend.paste(Image.fromarray(np.ascontiguousarray(bar)), (0, 3))
    draw = ImageDraw.Draw(legend)
    draw.rectangle((0, 2, w - 1, 12), outline=(150, 150, 150))
    texts = [(low, 0), (high, 1)] + ([(middle, 0.5)] if middle is not None else [])
    for text, where in texts:
        text = _printable(str(text), font)
        x = (w - font.getlength(text)) * where
        draw.text((x, 14), text, fill="black", font=font)
    return np.concatenate([tile, np.asarray(legend)], axis=0)


def montage(
    tiles,
    captions=None,
    columns: int | None = None,
    scale: int = 1,
    title: str | None = None,
    pad: int = 8,
    font_size: int = 13,
) -> Image.Image:
    """Tiles (uint8 arrays (H, W) or (H, W, 3), or PIL images) in a grid, each
    enlarged ``scale`` times (nearest neighbour) with its caption below."""
    tiles = [
        as_rgb(upscale(np.asarray(t.convert("RGB")) if isinstance(t, Image.Image) else t, scale))
        for t in tiles
    ]
    if not tiles:
        raise OptionError("montage needs at least one tile")
    captions = list(captions or [""] * len(tiles))
    if len(captions) != len(tiles):
        raise OptionError(f"{len(captions)} captions for {len(tiles)} tiles")
    columns = columns or len(tiles)
    rows = -(-len(tiles) // columns)
    tile_h = max(t.shape[0] for t in tiles)
    tile_w = max(t.shape[1] for t in tiles)
    font = _font(font_size)
    line_h = font_size + 3
    wrapped = [_wrap(c, font, tile_w) for c in captions]
    text_h = line_h * max(len(w) for w in wrapped) if any(captions) else 0
    title_lines = _wrap(title, _font(font_size + 2), columns * (tile_w + pad)) if title else []
    top = pad + (font_size + 5) * len(title_lines)
    cell_h = tile_h + text_h + pad
    canvas = Image.new("RGB", (pad + columns * (tile_w + pad), top + rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((pad, pad // 2 + i * (font_size + 5)), line, fill="black", font=_font(font_size + 2))
    for k, (tile, lines) in enumerate(zip(tiles, wrapped, strict=True)):
        r, c = divmod(k, columns)
        x0, y0 = pad + c * (tile_w + pad), top + r * cell_h
        canvas.paste(Image.fromarray(tile), (x0, y0))
        for i, line in enumerate(lines):
            draw.text((x0, y0 + tile.shape[0] + 2 + i * line_h), line, fill="black", font=font)
    return canvas


def _as_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    return Image.fromarray(
        as_rgb(image) if np.asarray(image).ndim == 3 else np.asarray(image, dtype=np.uint8)
    )


def save_png(image, path, metadata: dict | None = None) -> Path:
    """Write a uint8 array or PIL image as PNG; ``metadata`` goes into text chunks."""
    info = None
    if metadata:
        info = PngImagePlugin.PngInfo()
        for key, value in metadata.items():
            info.add_text(str(key), str(value))
    path = Path(path)
    _as_pil(image).save(path, format="PNG", pnginfo=info)
    return path


def safe_name(text, keep: str = "") -> str:
    """``text`` made safe as one file-name component: every character that is
    not a letter, a digit or in ``keep`` becomes "_"; never empty, never "." or
    "..", never a leading dot (so never a hidden file or a parent folder)."""
    name = "".join(ch if ch.isalnum() or ch in keep else "_" for ch in str(text))
    if name.startswith("."):
        name = "_" + name[1:]
    return name or "_"


def unique_stems(paths) -> list[str]:
    """File stems, made safe as file names (``safe_name``) and unique in the
    list: ``digit``, ``digit-2``..., so that two inputs never write one output."""
    taken: set[str] = set()
    out = []
    for p in paths:
        stem = safe_name(Path(str(p)).stem, keep="-_.") if Path(str(p)).stem else "image"
        name, k = stem, 1
        while name in taken:
            k += 1
            name = f"{stem}-{k}"
        taken.add(name)
        out.append(name)
    return out


def _inside(outdir: Path, name: str) -> None:
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise DataError(f"output file name {name!r} would not stay inside the folder {str(outdir)!r}")


def write_files(outdir, files: dict, metadata: dict | None = None) -> list[Path]:
    """Write every file or none: build them in a temporary folder beside
    ``outdir`` and move them in only when all were written.

    files: name -> PIL image / uint8 array (saved as PNG, with ``metadata``
    in its text chunks when the name is in ``metadata``), str (text) or bytes.
    A name is a relative path below ``outdir`` ("net/x.png"); one that would
    leave it ("..", absolute) is refused before anything is written.
    """
    outdir = check_output_folder(outdir)  # empty, under a regular file: one-line error naming it
    parent = outdir.resolve().parent
    if outdir.exists() and not outdir.is_dir():
        raise DataError(f"output {str(outdir)!r} exists and is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the folder {str(parent)!r}: {exc.strerror}") from None
    for name in files:
        _inside(outdir, name)
    metadata = metadata or {}
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=parent))
    try:
        for name, content in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                target.write_text(content, encoding="utf-8")
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                save_png(content, target, metadata.get(name))
        outdir.mkdir(exist_ok=True)
        written = []
        for name in files:
            dest = outdir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            install(tmp / name, dest)  # fsync, then rename (a symlink at dest is replaced, not followed)
            written.append(dest)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
