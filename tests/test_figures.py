"""The command figures (tinyconv.pictures.figures) and the demo's rows on a
CuPy-strict fake device (tests/fake_device.py): the arrays cross to NumPy in
the ``compute_*`` functions only, and every picture equals the one made on
the host."""

from __future__ import annotations

import numpy as np
import pytest
from fake_device import FakeArray

from tinyconv import Sequential
from tinyconv.engine.backend import to_device
from tinyconv.engine.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.pictures import figures
from tinyconv.pictures.demo import image_row


def small_net():
    return Sequential(
        [
            ("conv", Conv2d(1, 4, 3, padding=1, seed=0)),
            ("relu", ReLU()),
            ("pool", MaxPool2d(2)),
            ("flatten", Flatten()),
            ("fc", Linear(4 * 8 * 8, 3, seed=1)),
        ],
        classes=["ant", "bee", "cat"],
        mean=0.3,
        std=0.4,
        input_shape=(1, 16, 16),
    ).astype(np.float64)


def _pictures(figs):
    return {f.name: np.asarray(f.image) for f in figs}


def _same(a: dict, b: dict):
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_every_figure_on_the_fake_device_equals_the_host_one(fake):
    x = np.random.default_rng(0).standard_normal((1, 1, 16, 16))
    host, device = small_net(), small_net().to("fake")
    xd = to_device(x, "fake")
    assert isinstance(xd, FakeArray)
    smooth = {"samples": 2, "sigma": 0.1, "seed": 0}
    _same(_pictures(figures.saliency_figures(host, x, "a", smooth=smooth)),
          _pictures(figures.saliency_figures(device, xd, "a", smooth=smooth)))  # fmt: skip
    _same(
        _pictures(figures.comparison_figures(host, x, "a")),
        _pictures(figures.comparison_figures(device, xd, "a")),
    )
    _same(
        _pictures(figures.unit_figures(host, x, "a", 0)), _pictures(figures.unit_figures(device, xd, "a", 0))
    )
    want, record = figures.classviz_figures(host, steps=3, seed=0, progress=False)
    got, record_device = figures.classviz_figures(device, steps=3, seed=0, progress=False)
    _same(_pictures(want), _pictures(got))
    assert record == record_device
    rows = [image_row(net, xi, "a", "n/", 7) for net, xi in ((host, x), (device, xd))]
    _same(*({c.figure.name: np.asarray(c.figure.image) for c in r.cells} for r in rows))
    assert rows[0].caption == rows[1].caption


def test_compute_functions_hand_back_numpy(fake):
    x = to_device(np.random.default_rng(1).standard_normal((1, 1, 16, 16)), "fake")
    net = small_net().to("fake")
    s = figures.compute_saliency(net, x)
    r = figures.compute_rules(net, x)
    for a in (s.image, s.gradient, s.saliency, s.scores, r.image, *r.maps.values()):
        assert type(a) is np.ndarray
    np.testing.assert_allclose(r.saliency, s.saliency)
    assert r.explicit_difference < 1e-12


def test_localize_image_on_the_fake_device_equals_the_host_one(fake):
    pytest.importorskip("maxflow", reason="needs PyMaxflow (pip install 'tinyconv[localize]')")
    pytest.importorskip("scipy", reason="needs scipy (pip install 'tinyconv[localize]')")
    from PIL import Image

    from tinyconv.methods.localisation.photos import localize_image

    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 40), dtype=np.uint8))
    want = localize_image(small_net(), photo)
    got = localize_image(small_net().to("fake"), photo)
    assert got.box == want.box and got.target == want.target
    np.testing.assert_array_equal(got.mask, want.mask)
