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
