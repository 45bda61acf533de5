"""Tests of tinyconv.methods.sanity (beyond the paper): the similarity measures
against SciPy and scikit-image, and the mechanics of the three checks.

References: scipy.stats.spearmanr (ties included), skimage's
structural_similarity with its defaults (7x7 uniform window, sample
covariance), a second randomisation done by hand, and networks built so the
expected similarity is known (1 for a class-independent map).
"""

from __future__ import annotations

import numpy as np
import pytest

import tinyconv as tc
from tinyconv import Sequential
from tinyconv.engine.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.engine.train import he_init
from tinyconv.errors import TinyconvError
from tinyconv.methods import sanity as S
from tinyconv.models import build


def small_net(seed=0):
    return Sequential(
        [
            ("conv1", Conv2d(1, 4, 3, padding=1, seed=seed)),
            ("relu1", ReLU()),
            ("pool1", MaxPool2d(2)),
            ("conv2", Conv2d(4, 6, 3, padding=1, seed=seed + 1)),
            ("relu2", ReLU()),
            ("flatten", Flatten()),
            ("fc", Linear(6 * 16, 4, seed=seed + 2)),
        ],
        input_shape=(1, 8, 8),
    ).astype(np.float64)


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy_with_ties(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, (9, 7)).astype(float)  # many ties
    b = a + rng.integers(0, 3, (9, 7))
    np.testing.assert_allclose(S.spearman(a, b), stats.spearmanr(a.ravel(), b.ravel()).statistic, rtol=1e-12)
    assert S.spearman(a, np.full_like(a, 2.0)) == 0.0
    assert S.spearman(np.zeros(5), np.full(5, 2.0)) == 1.0  # two constant maps: trivially the same order


@pytest.mark.parametrize("shape", [(28, 28), (12, 9), (7, 7)])
def test_ssim_matches_scikit_image(shape):
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, shape)
    b = np.clip(a + rng.normal(0, 0.2, shape), 0, 1)
    want = metrics.structural_similarity(a, b, data_range=1.0)
    np.testing.assert_allclose(S.ssim(a, b), want, rtol=1e-10)
    np.testing.assert_allclose(S.ssim(a, a), 1.0, rtol=1e-12)


def test_similarity_of_a_map_with_itself_and_with_its_negative():
    m = np.random.default_rng(2).standard_normal((10, 10))
    same = S.similarity(m, m)
    assert same == pytest.approx({"spearman_abs": 1.0, "spearman": 1.0, "ssim": 1.0})
    neg = S.similarity(m, -m)
    assert neg["spearman"] == pytest.approx(-1.0) and neg["spearman_abs"] == pytest.approx(1.0)


def test_group_blocks_gives_the_vgg_cascade():
    names = ["block5_conv3", "block5_conv2", "block5_conv1", "block4_conv3", "block1_conv2", "block1_conv1"]
    assert S.group_blocks(names) == [names[:3], [names[3]], names[4:]]


def test_parameter_layers_run_from_the_top_down():
    assert S.parameter_layers(small_net()) == ["fc", "conv2", "conv1"]


def test_randomise_redraws_only_the_named_layers_at_their_scale():
    net = small_net()
    out = S.randomise(net, ["conv2"], seed=0)
    for layer, new in zip(net, out, strict=True):
        for key, value in layer.params.items():
            if layer.name == "conv2":
                assert not np.allclose(new.params[key], value)
                if key == "weight":  # 216 draws: the scale within 25 %
                    np.testing.assert_allclose(new.params[key].std(), value.std(), rtol=0.25)
            else:
                np.testing.assert_array_equal(new.params[key], value)
    assert net["conv2"].params["weight"] is not out["conv2"].params["weight"]


def test_cascading_keeps_each_draw_and_independent_randomises_one_group():
    net = small_net()
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8))
    methods = ("saliency", "gradcam")
    cas = S.parameter_randomisation(net, x, methods, "cascading", progress=False)
    ind = S.parameter_randomisation(net, x, methods, "independent", progress=False)
    assert cas.steps == ind.steps == ["trained", "fc", "conv2", "conv1"]
    for result in (cas, ind):
        assert all(s == pytest.approx(1.0) for s in result.scores["saliency"][0].values())
    # by hand: step 2 of the cascade has fc (seed 0) and conv2 (seed 1) re-drawn
    by_hand = S.randomise(S.randomise(net, ["fc"], 0), ["conv2"], 1)
    np.testing.assert_allclose(cas.maps["saliency"][2], tc.to_numpy(tc.saliency(by_hand, x, cas.targets)))
    # the first step of both modes is the same network (only fc re-drawn)
    np.testing.assert_array_equal(cas.maps["gradcam"][1], ind.maps["gradcam"][1])
    np.testing.assert_allclose(
        ind.maps["saliency"][2], tc.to_numpy(tc.saliency(S.randomise(net, ["conv2"], 1), x, cas.targets))
    )
    assert cas.scores["saliency"][-1]["spearman_abs"] < 0.99


def test_randomisation_refuses_unknown_layers_and_modes():
    net, x = small_net(), np.zeros((1, 1, 8, 8))
    with pytest.raises(TinyconvError, match="no layer named"):
        S.parameter_randomisation(net, x, ("saliency",), layers=["nope"], progress=False)
    with pytest.raises(TinyconvError, match="mode"):
        S.parameter_randomisation(net, x, ("saliency",), mode="bottom-up", progress=False)


def test_a_network_compared_with_itself_is_identical():
    net = small_net()
    x = np.random.default_rng(4).standard_normal((2, 1, 8, 8))
    result = S.compare_networks(net, net, x, ("saliency", "guided", "integrated_gradients"))
    for m in ("saliency", "guided", "integrated_gradients"):
        assert result[m] == pytest.approx({"spearman_abs": 1.0, "spearman": 1.0, "ssim": 1.0})


def test_class_sensitivity_is_one_when_every_class_has_the_same_map():
    net = small_net()
    w = net["fc"].params["weight"]
    # S_k = (k + 1) · S_0 + b_k: every class's gradient is a positive multiple of class 0's
    net["fc"].params["weight"] = np.stack([(k + 1) * w[0] for k in range(4)])
    x = np.random.default_rng(5).standard_normal((2, 1, 8, 8))
    same = S.class_sensitivity(net, x, ("saliency", "guided", "gradcam"))
    for m in same:
        assert same[m] == pytest.approx({"spearman_abs": 1.0, "spearman": 1.0, "ssim": 1.0})
    differs = S.class_sensitivity(small_net(), x, ("saliency",))
    assert differs["saliency"]["spearman_abs"] < 0.9


def test_tables_render_as_markdown():
    net = small_net()
    x = np.random.default_rng(6).standard_normal((1, 1, 8, 8))
    r = S.parameter_randomisation(net, x, ("saliency",), progress=False)
    text = S.randomisation_table(r).markdown()
    assert text.splitlines()[0] == "| method | trained | fc | conv2 | conv1 |"
    assert text.splitlines()[2].startswith("| saliency | 1.00 |")


def test_the_label_pair_memorises_permuted_labels():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (48, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 48)
    net_true, net_random, record = S.train_label_pair(
        images, labels, lambda: build("small-cnn"), 0.5, 0.3, epochs_true=2, max_epochs_random=60, chunk=20,
        fit_to=0.9, lr=0.05, batch_size=16,
    )  # fmt: skip
    assert record["random_train_acc"] >= 0.9
    assert record["permuted_label_agreement"] < 0.5
    assert net_random.meta["label_randomisation"]["labels"] == "random"
    assert net_true.mean == (0.5,)


# ----------------------------------------------------------------------------
# the command line


def digit_files(tmp_path, n=2):
    from PIL import Image

    rng = np.random.default_rng(8)
    paths = []
    for i in range(n):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28)).astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_cli_sanity_writes_tables_and_pictures(tmp_path, capsys):
    from tinyconv.cli import main

    net = build("small-cnn", classes=[str(i) for i in range(10)])
    he_init(net, 0)
    net.mean, net.std = (0.5,), (0.3,)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    net.save(a)
    S.randomise(net, S.parameter_layers(net)).save(b)
    out = tmp_path / "out"
    rc = main(["sanity", *digit_files(tmp_path), "--weights", str(a), "--random-labels", str(b),
               "--methods", "saliency,guided,gradcam", "-o", str(out)])  # fmt: skip
    assert rc == 0
    text = (out / "sanity.md").read_text()
    assert "## Parameter randomisation, cascading: spearman_abs" in text
    assert "data randomisation" in text and "| guided |" in text
    for name in ("randomisation_cascading.png", "randomisation_independent.png", "sanity.json"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize(
    "args, match",
    [(["--methods", "lrp"], "unknown method lrp"), (["--checks", "data"], "needs --random-labels"),
     (["--max-images", "0"], "max-images")],
)  # fmt: skip
def test_cli_sanity_bad_options_exit_2(tmp_path, capsys, args, match):
    from tinyconv.cli import main

    out = tmp_path / "out"
    assert main(["sanity", *digit_files(tmp_path, 1), *args, "-o", str(out)]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_block_cascade_on_vgg_style_names():
    # the naming of the ONNX VGG-16 (block1_conv1 ... block5_conv3): one step per block
    net = Sequential(
        [
            ("block1_conv1", Conv2d(1, 3, 3, padding=1, seed=0)),
            ("block1_relu1", ReLU()),
            ("block1_conv2", Conv2d(3, 3, 3, padding=1, seed=1)),
            ("block1_relu2", ReLU()),
            ("block1_pool", MaxPool2d(2)),
            ("block2_conv1", Conv2d(3, 4, 3, padding=1, seed=2)),
            ("block2_relu1", ReLU()),
            ("flatten", Flatten()),
            ("predictions", Linear(4 * 16, 3, seed=3)),
        ],
        input_shape=(1, 8, 8),
    ).astype(np.float64)
    groups = S.group_blocks(S.parameter_layers(net))
    assert groups == [["predictions"], ["block2_conv1"], ["block1_conv2", "block1_conv1"]]
    x = np.random.default_rng(9).standard_normal((1, 1, 8, 8))
    r = S.parameter_randomisation(net, x, ("gradcam", "guided"), layers=groups[1:], progress=False)
    assert r.steps == ["trained", "block2_conv1", "block1_conv2+block1_conv1"]


def test_edge_map_is_the_sobel_magnitude_per_image_and_channel():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(10).standard_normal((2, 3, 9, 8))

    def magnitude(a):  # scipy's sobel smooths along every other axis: one 2-D image at a time
        return np.hypot(ndimage.sobel(a, axis=1, mode="nearest"), ndimage.sobel(a, axis=0, mode="nearest"))

    want = np.array([[magnitude(ch) for ch in image] for image in x]).max(axis=1)
    np.testing.assert_allclose(S.edge_map(x), want, rtol=1e-12)
    net = small_net()
    r = S.edge_similarity(net, np.random.default_rng(11).standard_normal((2, 1, 8, 8)), ("saliency",))
    assert -1 <= r["saliency"]["spearman_abs"] <= 1
