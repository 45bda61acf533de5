"""Architecture builders: shapes, names and key layouts against PyTorch's."""

import numpy as np
import pytest

import tinyconv as tc
from tinyconv.engine.layers import Conv2d, Linear
from tinyconv.errors import WeightsError
from tinyconv.models import registry as models


def weight_shapes(arch, num_classes=None):
    """{key: shape} of the weighted layers, read from the blueprint (nothing allocated)."""
    shapes = {}
    for name, entry in models.blueprint(arch, num_classes):
        if entry == models.BATCHNORM:
            continue
        cls, args, _ = entry
        if cls is Conv2d:
            shapes[f"{name}.weight"] = (args[1], args[0], args[2], args[2])
            shapes[f"{name}.bias"] = (args[1],)
        elif cls is Linear:
            shapes[f"{name}.weight"] = (args[1], args[0])
            shapes[f"{name}.bias"] = (args[1],)
    return shapes


@pytest.fixture(scope="module")
def alexnet():
    return models.build("alexnet", num_classes=3, seed=0)


@pytest.mark.parametrize("arch", ["mnist-cnn", "alexnet"])
def test_build_gives_named_layers_of_the_right_shapes(arch, alexnet):
    net = alexnet if arch == "alexnet" else models.build(arch, seed=0)
    params = {p.name: p.value.shape for p in net.parameters()}
    assert params == weight_shapes(arch, net.num_classes)
    assert net.output_shapes(net.input_shape)[-1] == (net.num_classes,)
    assert set(p.name.rsplit(".", 1)[0] for p in net.parameters()) <= {
        k.rsplit(".", 1)[0] for k in models.state_dict_keys(arch)
    }
    assert all(p.value.dtype == np.float32 for p in net.parameters())


def test_build_defaults_follow_the_training_data():
    mnist = models.build("mnist-cnn", seed=1)
    assert mnist.input_shape == (1, 28, 28) and mnist.classes == [str(d) for d in range(10)]
    assert mnist.mean == models.MNIST_MEAN and mnist.std == models.MNIST_STD


def test_build_defaults_imagenet(alexnet):
    assert alexnet.input_shape == (3, 224, 224) and alexnet.num_classes == 3 and alexnet.classes is None
    assert alexnet.mean == models.IMAGENET_MEAN and alexnet.std == models.IMAGENET_STD
    assert models.default_classes("vgg16") == models.imagenet_classes()
    names = models.imagenet_classes()
    assert len(names) == len(set(names)) == 1000


def test_build_is_seeded():
    a, b, c = (models.build("mnist-cnn", seed=s) for s in (3, 3, 4))
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        np.testing.assert_array_equal(p.value, q.value)
        assert not np.array_equal(p.value, r.value)


@pytest.mark.parametrize("arch", models.ARCHS)
def test_every_architecture_reaches_its_classes(arch):
    """Layer output shapes through the whole net, from the blueprint's layers (cheap: no weights drawn)."""
    shapes = weight_shapes(arch, num_classes=5)
    last = [k for k in shapes if k.endswith(".weight")][-1]
    assert shapes[last][0] == 5
    # the first Linear takes exactly what the adaptive pool / conv trunk gives
    first = next(k for k, v in shapes.items() if len(v) == 2)
    channels = [v[0] for k, v in shapes.items() if len(v) == 4][-1]
    spatial = {"mnist-cnn": 9, "alexnet": 36}.get(arch, 49)
    assert shapes[first][1] == channels * spatial


def test_adaptive_pool_takes_other_input_sizes(rng, alexnet):
    x = rng.standard_normal((1, 3, 100, 100)).astype(np.float32)  # 100 -> 2x2 features -> pooled to 6x6
    assert alexnet.output_shapes((3, 100, 100))[alexnet.index("avgpool")] == (256, 6, 6)
    assert alexnet.forward(x).shape == (1, 3)


def test_unknown_architecture_is_named():
    with pytest.raises(WeightsError, match=r"unknown architecture 'resnet50'.*vgg16"):
        models.build("resnet50")
    assert models.check_arch("MNIST_CNN") == "mnist-cnn"
    with pytest.raises(WeightsError, match="2 class names"):
        models.build("mnist-cnn", num_classes=10, classes=["a", "b"])


def test_state_dict_keys_match_pytorch():
    torch = pytest.importorskip("torch")
    from torchnets import VGG, VGG_CFG, AlexNet, MnistCNN

    with torch.device("meta"):  # module trees without allocating weights
        nets = {
            "vgg16": VGG(VGG_CFG["vgg16"]),
            "vgg11_bn": VGG(VGG_CFG["vgg11"], batch_norm=True),
            "alexnet": AlexNet(),
            "mnist-cnn": MnistCNN(),
        }
    for arch, module in nets.items():
        state = module.state_dict()
        assert set(state) == set(models.state_dict_keys(arch)), arch
        expected = weight_shapes(arch)
        assert {k: tuple(v.shape) for k, v in state.items() if k in expected} == expected


def test_exported_api():
    assert tc.load is tc.models.native.load and callable(tc.load_checkpoint) and callable(tc.from_torch)
    assert tc.models.build is models.build


BUNDLED = {"mnist-cnn": "mnist_cnn.npz", "fashion-cnn": "fashion_cnn.npz", "scenes-cnn": "scenes_cnn.npz"}


@pytest.mark.parametrize("arch", sorted(BUNDLED))
def test_registry_builds_the_bundled_networks(arch):
    """The registry's architecture is the one each bundled file was made with: same layer names
    and specs, and its layers filled with the file's arrays compute the file's scores."""
    from tinyconv.models.native import bundled, describe

    saved = tc.load(bundled(BUNDLED[arch]))
    assert saved.meta["arch"] == arch
    net = models.build(arch, classes=saved.classes, mean=saved.mean, std=saved.std, seed=0)
    assert [layer["spec"] for layer in describe(net)["layers"]] == [
        layer["spec"] for layer in describe(saved)["layers"]
    ]
    assert [layer.name for layer in net] == [layer.name for layer in saved]
    assert net.input_shape == saved.input_shape
    for p, q in zip(net.parameters(), saved.parameters(), strict=True):
        p.value[...] = q.value
    x = np.random.default_rng(0).standard_normal((2, *saved.input_shape)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), saved.forward(x))


def test_own_architectures_take_their_options():
    assert set(models.OWN_ARCHS) <= set(models.ALL_ARCHS) and set(models.ARCHS) <= set(models.ALL_ARCHS)
    small = models.build("scenes-cnn", size=32, seed=0)
    assert small.input_shape == (3, 32, 32) and small.output_shapes((3, 32, 32))[-1] == (10,)
    assert small.classes[0] == "T-shirt/top" and small.meta["arch"] == "scenes-cnn"
    wide = models.build("fashion-cnn", hidden=64, dropout=0.1, num_classes=4, seed=0)
    assert wide["fc_layers.0"].out_features == 64 and wide["fc_layers.2"].p == 0.1
    assert wide.num_classes == 4 and wide.classes is None and wide.mean is None
    assert models.check_arch("Fashion_CNN") == "fashion-cnn"
    with pytest.raises(tc.OptionError, match=r"'scenes-cnn' has no option hidden \(it takes size\)"):
        models.build("scenes-cnn", hidden=3)
    with pytest.raises(tc.OptionError, match="vgg16' has no option size"):
        models.build("vgg16", size=32)
    with pytest.raises(tc.OptionError, match="multiple of 16, got 40"):
        models.build("scenes-cnn", size=40)


@pytest.mark.parametrize("arch", ["vgg11_bn", "alexnet", *models.OWN_ARCHS])
def test_param_shapes_predict_the_built_layers(arch):
    """The shapes computed from a blueprint entry, without building it, are those of the built layer."""
    from tinyconv.engine.layers import param_shapes

    built = dict(models.layout(arch, num_classes=7, seed=0))
    for name, entry in models.blueprint(arch, num_classes=7):
        if entry == models.BATCHNORM:
            continue
        predicted = param_shapes(models.spec_of(entry))
        assert predicted == {k: v.shape for k, v in built[name].params.items()}, name
        assert predicted == param_shapes(built[name].spec()), name
