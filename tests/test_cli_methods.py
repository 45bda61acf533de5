"""End-to-end tests of ``tinyconv saliency``, ``classviz``, ``deconv`` and
``demo`` in temporary folders: the PNGs they write (non-empty, expected
size), the demo's index page, and bad input (one-line error, exit status 2,
nothing written)."""

from __future__ import annotations

import json
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image

import tinyconv as tc
from tinyconv import Sequential
from tinyconv.cli import main
from tinyconv.engine.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.pictures.demo import REPO, run_demo

SIZE = 16  # the small net's input; shown 14x enlarged (display_scale) -> 224 px


def small_net(input_shape=(1, SIZE, SIZE), arch="tiny-cnn"):
    return Sequential(
        [
            ("conv", Conv2d(1, 4, 3, padding=1, seed=0)),
            ("relu", ReLU()),
            ("pool", MaxPool2d(2)),
            ("flatten", Flatten()),
            ("fc", Linear(4 * (SIZE // 2) ** 2, 3, seed=1)),
        ],
        classes=["ant", "bee", "cat"],
        mean=0.3,
        std=0.4,
        input_shape=input_shape,
        meta={"arch": arch},
    )


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "tiny.npz"
    small_net().save(path)
    return path


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(20, 24), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def png_size(path):
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        im.load()
        return im.size


def run_ok(argv, capsys):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def run_fails(argv, capsys, match):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert re.search(match, err), err
    return err


def test_saliency_writes_maps_of_the_display_size(tmp_path, weights, images, capsys):
    out = tmp_path / "sal"
    run_ok(["saliency", *images, "--weights", weights, "--smoothgrad", "--samples", 3, "-o", out], capsys)
    run_ok(
        ["saliency", images[0], "--weights", weights, "--smoothgrad", "--sigma", 0.3, "-o", out / "abs"],
        capsys,
    )
    assert png_size(out / "abs" / "img0_smoothgrad.png") == (224, 224)
    for stem in ("img0", "img1"):
        for kind in ("saliency", "overlay", "gradient", "smoothgrad"):
            assert png_size(out / f"{stem}_{kind}.png") == (224, 224)
        w, h = png_size(out / f"{stem}_panel.png")
        assert w > 4 * 224 and h > 224


def test_saliency_target_by_name_and_index_agree(tmp_path, weights, images, capsys):
    run_ok(["saliency", images[0], "--weights", weights, "--target", "bee", "-o", tmp_path / "a"], capsys)
    run_ok(["saliency", images[0], "--weights", weights, "--target", 1, "-o", tmp_path / "b"], capsys)
    a = np.asarray(Image.open(tmp_path / "a" / "img0_saliency.png"))
    np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "b" / "img0_saliency.png")))


def test_classviz_writes_every_class_with_its_parameters(tmp_path, weights, capsys):
    out = tmp_path / "cv"
    run_ok(
        ["classviz", "--weights", weights, "--target", "all", "--steps", 5, "--seed", 4, "-o", out], capsys
    )
    for i, name in enumerate(["ant", "bee", "cat"]):
        path = out / f"class_{i:02d}_{name}.png"
        assert png_size(path) == (224, 224)
        with Image.open(path) as im:
            assert '"seed": 4' in im.text["tinyconv"] and '"steps": 5' in im.text["tinyconv"]
    assert png_size(out / "class_models.png")[0] > 3 * 112
    record = json.loads((out / "class_models.json").read_text())
    assert [r["target"] for r in record] == [0, 1, 2]
    assert all(len(r["history"]["score"]) == 6 for r in record)


def test_deconv_writes_the_four_way_comparison_and_unit_reconstructions(tmp_path, weights, images, capsys):
    out = tmp_path / "dc"
    run_ok(["deconv", images[0], "--weights", weights, "-o", out], capsys)
    for key in ("gradient", "deconvnet_rule", "deconvnet", "guided"):
        assert png_size(out / f"img0_{key}.png") == (224, 224)
    assert png_size(out / "img0_compare.png")[0] > 5 * 224
    run_ok(["deconv", images[0], "--weights", weights, "--layer", "relu", "--unit", 2, "-o", out], capsys)
    assert png_size(out / "img0_relu_unit2.png") == (224, 224)
    run_ok(["deconv", images[0], "--weights", weights, "--layer", 0, "--keep", "max", "-o", out], capsys)
    assert list(out.glob("img0_conv_unit*_panel.png"))


def test_bad_inputs_fail_cleanly_and_write_nothing(tmp_path, weights, images, capsys):
    out = tmp_path / "out"
    base = ["--weights", weights, "-o", out]
    run_fails(["saliency", images[0], tmp_path / "missing.png", *base], capsys, "missing.png.*does not exist")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    run_fails(["saliency", images[0], text, *base], capsys, "not an image file")
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(deep)
    run_fails(["deconv", deep, *base], capsys, "mode 'I")
    run_fails(["saliency", images[0], "--target", 3, *base], capsys, "class 3 is out of range.*3 classes")
    run_fails(["classviz", "--target", "dog", *base], capsys, "unknown class 'dog'")
    run_fails(["deconv", images[0], "--layer", "fc", "--unit", 9, *base], capsys, "unit 9 is out of range")
    run_fails(["deconv", images[0], "--layer", "nope", *base], capsys, "no layer named 'nope'")
    run_fails(["saliency", images[0], "--weights", tmp_path / "none.npz", "-o", out], capsys, "none.npz")
    run_fails(["saliency", images[0], "--smoothgrad", "--sigma", -1, *base], capsys, "sigma")
    assert not out.exists()


def test_weights_for_another_input_size_fail_cleanly(tmp_path, images, capsys):
    # a net without a recorded input shape whose dense layer wants 16x16 inputs, given 20x24 images
    path = tmp_path / "free.npz"
    net = small_net(input_shape=None)
    net.save(path)
    out = tmp_path / "out"
    run_fails(["saliency", images[0], "--weights", path, "-o", out], capsys, "does not fit the network")
    run_fails(["classviz", "--weights", path, "--target", 0, "-o", out], capsys, "input_shape")
    assert not out.exists()


def test_demo_index_references_every_image_it_wrote(tmp_path):
    # a folder of weights: 'digits_cnn.npz' picks up examples/digits, 'other.npz' has no examples
    wdir = tmp_path / "weights"
    wdir.mkdir()
    small_net(arch="digits-test").save(wdir / "digits_cnn.npz")
    small_net(arch="other").save(wdir / "other.npz")
    out = tmp_path / "demo"
    result = run_demo(out, weights_dir=wdir, images_per_net=3, progress=False, log=lambda *a: None)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    page = (out / "index.html").read_text()
    referenced = set(re.findall(r"<img src='([^']+)'", page))
    assert written and referenced == written
    assert any(name.startswith("digits_cnn/") and name.endswith("_saliency.png") for name in written)
    assert any(name.startswith("digits_cnn/") and name.endswith("_compare.png") for name in written)
    assert {f"other/class_{i:02d}_{n}.png" for i, n in enumerate(["ant", "bee", "cat"])} <= written
    assert "No example images" in page and result["seconds"] > 0


def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, weights, images, capsys):
    if tc.cuda_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "out"
    run_fails(["saliency", images[0], "--weights", weights, "--device", "cuda", "-o", out], capsys, "cuda")
    assert not out.exists()


@pytest.mark.slow
def test_demo_on_the_bundled_mnist_network(tmp_path, capsys):
    # the demo as users run it, on the bundled MNIST network alone to keep the test short
    source = REPO / "weights" / "mnist_cnn.npz"
    if not source.exists():
        pytest.skip("the bundled MNIST weights are not in this checkout")
    wdir = tmp_path / "weights"
    wdir.mkdir()
    shutil.copy(source, wdir / source.name)
    out = tmp_path / "demo"
    start = time.perf_counter()
    run_ok(["demo", "--weights", wdir, "-o", out], capsys)
    seconds = time.perf_counter() - start
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    referenced = set(re.findall(r"<img src='([^']+)'", (out / "index.html").read_text()))
    assert referenced == written
    assert {f"mnist_cnn/class_{d:02d}_{d}.png" for d in range(10)} <= written
    for d in range(10):
        assert png_size(out / f"mnist_cnn/digit_{d}_saliency.png") == (224, 224)
    record = json.loads((out / "mnist_cnn" / "class_models.json").read_text())
    assert all(
        r["runner_up_score"] < r["final_score"] for r in record
    )  # every digit is its model's top class
    print(f"tinyconv demo (MNIST only) took {seconds:.1f} s")
