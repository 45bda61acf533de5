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
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin, UnidentifiedImageError

from ..engine.backend import to_device, to_numpy
from ..errors import DataError, ShapeError
from ..files import check_output_folder, install

__all__ = [
    "COLORMAPS",
    "colormap",
    "load_image",
    "as_uint8_image",
    "preprocess",
    "deprocess",
    "contrast_image",
    "normalise_map",
    "heatmap",
    "signed_image",
    "overlay",
    "upscale",
    "display_scale",
    "montage",
    "save_png",
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
        raise ValueError(f"unknown colour map {name!r}; expected one of {', '.join(paths)}")
    table = np.array([_lch_to_srgb_in_gamut(*paths[name](i / 255)) for i in range(256)])
    table = np.round(np.clip(table, 0, 1) * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


COLORMAPS = ("fire", "bluered")


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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{str(path)!r} is not an image file Pillow can read ({exc})") from None
    _check_mode(im, str(path))
    return im


def _check_mode(im: Image.Image, what: str) -> None:
    if im.mode not in _EIGHT_BIT_MODES:
        raise DataError(
            f"{what} has image mode {im.mode!r}; tinyconv reads 8-bit greyscale or colour images "
            f"(modes {', '.join(_EIGHT_BIT_MODES)}): convert it first"
        )


def as_uint8_image(image) -> Image.Image:
    """A PIL image from a path, a PIL image or a uint8 array (H, W), (H, W, 1|3|4)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        _check_mode(image, "the image")
        return image
    if hasattr(image, "shape") and hasattr(image, "dtype"):
        a = to_numpy(image)
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


def _fit(im: Image.Image, height: int, width: int) -> Image.Image:
    """Resize so the image covers (height, width), then cut out the centre."""
    w, h = im.size
    if (h, w) == (height, width):
        return im
    scale = max(height / h, width / w)
    new = (max(width, round(w * scale)), max(height, round(h * scale)))
    im = im.resize(new, Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.LANCZOS)
    left, top = (new[0] - width) // 2, (new[1] - height) // 2
    return im.crop((left, top, left + width, top + height))


def preprocess(image, net, dtype=np.float32):
    """Network input (1, C, H, W) from a file, PIL image or uint8 array.

    Converts to greyscale ("L") or RGB as ``net.input_shape[0]`` asks (an
    alpha channel is composited on black), resizes the shorter side and crops
    the centre when the net has a fixed ``input_shape``, and normalises
    x = (pixel / 255 − mean) / std. Returned on the net's device.
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
        im = _fit(im, shape[1], shape[2])
    a = np.asarray(im, dtype=np.float64) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)
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
    return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


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


def normalise_map(m, percentile: float = 99.5) -> np.ndarray:
    """Scale a map to [0, 1] by dividing by its ``percentile`` of |m| and
    clipping (the few strongest values saturate; 100 = divide by the max)."""
    m = np.abs(to_numpy(m).astype(np.float64))
    top = np.percentile(m, percentile) if m.size else 0.0
    if not top > 0:
        top = m.max() if m.size and m.max() > 0 else 1.0
    return np.clip(m / top, 0, 1)


def _apply(table, t):
    return table[np.round(np.clip(t, 0, 1) * 255).astype(np.intp)]


def heatmap(m, cmap: str = "fire", percentile: float = 99.5) -> np.ndarray:
    """A saliency map (H, W) as colours: uint8 (H, W, 3)."""
    m = to_numpy(m)
    if m.ndim != 2:
        raise ShapeError(f"heatmap expects one map of shape (H, W), got {m.shape}")
    return _apply(colormap(cmap), normalise_map(m, percentile))


def signed_image(g, percentile: float = 99.5) -> np.ndarray:
    """A signed map as colours, white at 0, red > 0, blue < 0: uint8 (H, W, 3).

    g: (H, W), or (C, H, W) where each pixel shows its channel of largest |g|.
    Scaled symmetrically by the ``percentile`` of |g|.
    """
    g = to_numpy(g).astype(np.float64)
    if g.ndim == 3:
        pick = np.abs(g).argmax(axis=0)[None]
        g = np.take_along_axis(g, pick, axis=0)[0]
    if g.ndim != 2:
        raise ShapeError(f"signed_image expects (H, W) or (C, H, W), got {g.shape}")
    top = np.percentile(np.abs(g), percentile) if g.size else 0.0
    top = top if top > 0 else (np.abs(g).max() or 1.0)
    return _apply(colormap("bluered"), 0.5 + 0.5 * np.clip(g / top, -1, 1))


def _to_rgb(image) -> np.ndarray:
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
        _to_rgb(upscale(np.asarray(t.convert("RGB")) if isinstance(t, Image.Image) else t, scale))
        for t in tiles
    ]
    if not tiles:
        raise ValueError("montage needs at least one tile")
    captions = list(captions or [""] * len(tiles))
    if len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} tiles")
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
        _to_rgb(image) if np.asarray(image).ndim == 3 else np.asarray(image, dtype=np.uint8)
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


def write_files(outdir, files: dict, metadata: dict | None = None) -> list[Path]:
    """Write every file or none: build them in a temporary folder beside
    ``outdir`` and move them in only when all were written.

    files: name -> PIL image / uint8 array (saved as PNG, with ``metadata``
    in its text chunks when the name is in ``metadata``), str (text) or bytes.
    """
    outdir = check_output_folder(outdir)  # empty, under a regular file: one-line error naming it
    parent = outdir.resolve().parent
    if outdir.exists() and not outdir.is_dir():
        raise DataError(f"output {str(outdir)!r} exists and is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the folder {str(parent)!r}: {exc.strerror}") from None
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
