"""Tests of tinyconv.pictures.imaging: preprocessing against its formula, the colour
maps against an independent sRGB -> CIELAB conversion, overlays, montages
and all-or-nothing file writing; bad input gives clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import tinyconv as tc
from tinyconv import Sequential
from tinyconv.engine.layers import Conv2d, Flatten, Linear
from tinyconv.errors import DataError
from tinyconv.pictures.imaging import (
    colormap,
    deprocess,
    heatmap,
    montage,
    normalise_map,
    overlay,
    save_png,
    signed_image,
    upscale,
    write_files,
)


def grey_net(h=28, w=28, mean=0.1307, std=0.3081):
    return Sequential([Flatten(), Linear(h * w, 3)], input_shape=(1, h, w), mean=mean, std=std)


def rgb_net(h=8, w=8):
    return Sequential(
        [Conv2d(3, 2, 3, padding=1), Flatten(), Linear(2 * h * w, 4)],
        input_shape=(3, h, w),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )


@pytest.fixture
def digit(rng):
    return rng.integers(0, 256, size=(28, 28), dtype=np.uint8)


def test_preprocess_is_pixel_over_255_minus_mean_over_std(digit):
    x = tc.preprocess(digit, grey_net())
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    expected = (digit / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(x[0, 0], expected, rtol=1e-6, atol=1e-6)


def test_preprocess_per_channel_normalisation(rng):
    a = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    net = rgb_net()
    x = tc.preprocess(a, net)
    for ch in range(3):
        expected = (a[:, :, ch] / 255.0 - net.mean[ch]) / net.std[ch]
        np.testing.assert_allclose(x[0, ch], expected, rtol=1e-5, atol=1e-6)


def test_path_pil_and_array_agree(tmp_path, digit):
    path = tmp_path / "d.png"
    Image.fromarray(digit).save(path)
    net = grey_net()
    a = tc.preprocess(digit, net)
    np.testing.assert_array_equal(a, tc.preprocess(path, net))
    np.testing.assert_array_equal(a, tc.preprocess(str(path), net))
    np.testing.assert_array_equal(a, tc.preprocess(Image.open(path), net))
    np.testing.assert_array_equal(a, tc.preprocess(digit[:, :, None], net))


def test_deprocess_inverts_preprocess(rng):
    a = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    net = rgb_net()
    np.testing.assert_array_equal(deprocess(tc.preprocess(a, net)[0], net), a)


def test_colour_and_grey_are_converted_as_the_net_expects(rng):
    grey = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    x = tc.preprocess(grey, rgb_net())  # greyscale into an RGB net: three equal channels (before mean/std)
    net = rgb_net()
    pixels = x[0] * np.asarray(net.std)[:, None, None] + np.asarray(net.mean)[:, None, None]
    np.testing.assert_allclose(pixels[0], pixels[1], atol=1e-6)
    np.testing.assert_allclose(pixels[0], grey / 255.0, atol=1e-6)
    colour = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
    x = tc.preprocess(colour, grey_net())  # RGB into a greyscale net: Pillow's luma
    expected = np.asarray(Image.fromarray(colour).convert("L")) / 255.0
    np.testing.assert_allclose(x[0, 0] * 0.3081 + 0.1307, expected, atol=1e-6)


def test_alpha_is_composited_on_black():
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 0  # fully transparent: black
    x = tc.preprocess(rgba, grey_net())
    np.testing.assert_allclose(x * 0.3081 + 0.1307, 0, atol=1e-6)


def test_larger_images_are_resized_by_the_shorter_side_and_centre_cropped():
    # 56 x 112 image: left half 0, middle 255, right 0; shorter side 56 -> 28, width 112 -> 56,
    # the centre crop of 28 columns is exactly the bright stripe (up to the filter's edge ripple).
    a = np.zeros((56, 112), dtype=np.uint8)
    a[:, 28:84] = 255
    x = tc.preprocess(a, grey_net(mean=0.0, std=1.0))
    assert x.shape == (1, 1, 28, 28)
    np.testing.assert_allclose(x[0, 0, :, 1:-1], 1.0, atol=0.01)
    assert x[0, 0, :, [0, -1]].min() > 0.9  # dark columns lie just outside the crop


def test_nets_without_input_shape_take_the_image_as_is(rng):
    net = Sequential([Conv2d(1, 2, 3)], mean=0.5, std=0.5)
    a = rng.integers(0, 256, size=(13, 17), dtype=np.uint8)
    assert tc.preprocess(a, net).shape == (1, 1, 13, 17)


def test_missing_and_non_image_files(tmp_path):
    net = grey_net()
    with pytest.raises(DataError, match="does not exist"):
        tc.preprocess(tmp_path / "nope.png", net)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DataError, match="not an image file"):
        tc.preprocess(text, net)
    with pytest.raises(DataError, match="directory"):
        tc.preprocess(tmp_path, net)


def test_other_eight_bit_colour_modes_are_converted(rng):
    rgb = Image.fromarray(rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8))
    for mode in ("CMYK", "YCbCr"):
        other = rgb.convert(mode)
        np.testing.assert_array_equal(
            tc.preprocess(other, grey_net()), tc.preprocess(other.convert("RGB"), grey_net())
        )


def test_wrong_modes_are_refused(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((28, 28), 40000, dtype=np.uint16)).save(path)  # a 16-bit PNG
    with pytest.raises(DataError, match="mode 'I"):
        tc.preprocess(path, grey_net())
    with pytest.raises(DataError, match="mode 'F'"):
        tc.preprocess(Image.new("F", (28, 28)), grey_net())


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((28, 28), dtype=np.float32), "uint8"),
        (np.zeros((28, 28, 2), dtype=np.uint8), "shape"),
        (np.zeros((1, 1, 28, 28), dtype=np.uint8), "shape"),
        ([[0, 1]], "expected an image"),
    ],
)
def test_bad_arrays(array, match):
    with pytest.raises(DataError, match=match):
        tc.preprocess(array, grey_net())


# --- colour maps ---


def srgb_to_lightness(rgb):
    """CIE L* of sRGB colours in [0, 255] (independent of the module's LCh -> sRGB)."""
    c = np.asarray(rgb, dtype=float) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126, 0.7152, 0.0722])
    return np.where(y > (6 / 29) ** 3, 116 * np.cbrt(y) - 16, y * (29 / 3) ** 3)


def test_fire_lightness_rises_steadily_from_black_to_near_white():
    lightness = srgb_to_lightness(colormap("fire"))
    assert lightness[0] < 8 and lightness[-1] > 90
    steps = np.diff(lightness)
    assert (steps > 0).all()
    # perceptually even: L* stays within a few units of a straight line
    line = np.linspace(lightness[0], lightness[-1], 256)
    assert np.abs(lightness - line).max() < 4


def test_bluered_is_white_at_zero_and_symmetric_in_lightness():
    table = colormap("bluered")
    lightness = srgb_to_lightness(table)
    assert lightness[127] > 95 and lightness[128] > 95
    np.testing.assert_allclose(lightness[:128], lightness[128:][::-1], atol=2.5)
    assert table[0, 2] > table[0, 0]  # negative end is blue
    assert table[-1, 0] > table[-1, 2]  # positive end is red


def test_heatmap_and_signed_image():
    m = np.arange(16, dtype=float).reshape(4, 4)
    h = heatmap(m, percentile=100)
    assert h.shape == (4, 4, 3) and h.dtype == np.uint8
    np.testing.assert_array_equal(h[0, 0], colormap("fire")[0])
    np.testing.assert_array_equal(h[-1, -1], colormap("fire")[-1])
    g = np.array([[-2.0, 0.0, 2.0]])
    s = signed_image(g, percentile=100)
    np.testing.assert_array_equal(s[0, 0], colormap("bluered")[0])
    np.testing.assert_array_equal(s[0, 2], colormap("bluered")[255])
    # per pixel, the channel of largest |g| decides
    g3 = np.stack([g, -3 * g, 0 * g])
    np.testing.assert_array_equal(signed_image(g3, percentile=100)[0, 0], colormap("bluered")[255])


def test_normalise_map_clips_the_top_percentile():
    m = np.concatenate([np.ones(99), [100.0]])
    n = normalise_map(m, percentile=99)
    assert n.max() == 1 and np.isclose(n[0], 1 / np.percentile(m, 99))
    np.testing.assert_array_equal(normalise_map(np.zeros(4)), 0)


def test_overlay_is_an_alpha_blend_on_grey():
    image = np.full((2, 2, 3), [255, 0, 0], dtype=np.uint8)  # red: luma 76
    heat = np.full((2, 2, 3), 200, dtype=np.uint8)
    out = overlay(image, heat, alpha=0.25)
    np.testing.assert_array_equal(out, np.round(0.75 * 0.299 * 255 + 0.25 * 200).astype(np.uint8))


def test_upscale_is_nearest_neighbour():
    a = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    b = upscale(a, 3)
    assert b.shape == (6, 6)
    np.testing.assert_array_equal(b[::3, ::3], a)
    np.testing.assert_array_equal(b[:3, :3], 1)


def test_montage_places_tiles_with_captions():
    tiles = [np.full((10, 10), v, dtype=np.uint8) for v in (0, 128, 255)]
    one_row = montage(tiles, ["a", "b", "c"], scale=2, pad=4)
    two_rows = montage(tiles, ["a", "b", "c"], columns=2, scale=2, pad=4)
    assert one_row.size[0] == 4 + 3 * (20 + 4)
    assert two_rows.size[0] == 4 + 2 * (20 + 4) and two_rows.size[1] > one_row.size[1]
    px = np.asarray(one_row)
    np.testing.assert_array_equal(px[4, 4 + 24 * 2], [255, 255, 255])
    np.testing.assert_array_equal(px[4, 4 + 24], [128, 128, 128])
    with pytest.raises(ValueError, match="captions"):
        montage(tiles, ["a"])


def test_save_png_keeps_metadata(tmp_path):
    path = save_png(np.zeros((3, 3), dtype=np.uint8), tmp_path / "a.png", {"seed": 7})
    with Image.open(path) as im:
        assert im.text["seed"] == "7"


def test_write_files_is_all_or_nothing(tmp_path):
    out = tmp_path / "nested" / "out"
    with pytest.raises(Exception):  # noqa: B017  (an unsupported content type fails mid-way)
        write_files(out, {"a.png": np.zeros((2, 2), dtype=np.uint8), "b.png": object()})
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out")]  # temp folder removed
    written = write_files(out, {"a.png": np.zeros((2, 2), dtype=np.uint8), "sub/b.txt": "hi"})
    assert sorted(p.relative_to(out).as_posix() for p in written) == ["a.png", "sub/b.txt"]
    assert (out / "sub" / "b.txt").read_text() == "hi"


def test_contrast_image_puts_the_mean_at_grey():
    x = np.zeros((1, 3, 4))
    x[0, 0, 0], x[0, 0, 1] = 2.0, -2.0
    from tinyconv.pictures.imaging import contrast_image

    out = contrast_image(x, percentile=100)
    assert out.shape == (3, 4, 1) and out.dtype == np.uint8
    assert out[0, 0, 0] == 255 and out[0, 1, 0] == 0 and out[1, 1, 0] == 128


def test_with_colorbar_puts_the_colour_table_under_the_tile():
    from tinyconv.pictures.imaging import with_colorbar

    tile = np.full((20, 64, 3), 7, np.uint8)
    out = with_colorbar(tile, "fire", "0", "1.5")
    assert out.shape[1] == 64 and out.shape[0] > 20 + 12
    np.testing.assert_array_equal(out[:20], tile)
    bar = out[20 + 7]  # a row through the middle of the bar, inside its grey border
    np.testing.assert_array_equal(bar[1], colormap("fire")[round(255 / 63)])
    np.testing.assert_array_equal(bar[-2], colormap("fire")[round(255 * 62 / 63)])
