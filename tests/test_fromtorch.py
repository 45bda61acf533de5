"""from_torch and load_checkpoint against PyTorch itself: scores and input
gradients of torchvision-layout VGG-16, VGG-11-BN, AlexNet and the MNIST CNN
(random weights), in float64 (to 1e-10 relative) and float32 (scores, 1e-4).

The float64 input gradient is the reference for the backward pass; float32
gradients of a deep net are not compared (near-ties in max-pool windows and
ReLU signs flip between precisions, ~1e-2 relative even within PyTorch).
"""

import gc

import numpy as np
import pytest

import tinyconv as tc
from tinyconv.errors import WeightsError

torch = pytest.importorskip("torch")
nn = torch.nn

from torchnets import VGG, VGG_CFG, AlexNet, MnistCNN, randomise_batchnorm, scores_and_input_gradient  # noqa: E402

F64_TOL, F32_TOL = 1e-10, 1e-4


def rel(a, b) -> float:
    """max |a - b| / max |b|."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def tinyconv_scores_and_input_gradient(net, x, target):
    scores = net.forward(x)
    seed = np.zeros_like(scores)
    seed[np.arange(len(x)), target] = 1.0  # ∂S_c/∂I
    return scores, net.backward(seed, param_grads=False)


def check_float64(net, model, x, target, what):
    """Scores and input gradients of ``net`` (float64) against ``model`` (double)."""
    ref_scores, ref_grad = scores_and_input_gradient(model, x, target)
    scores, grad = tinyconv_scores_and_input_gradient(net, x, target)
    errors = rel(scores, ref_scores), rel(grad, ref_grad)
    print(f"{what}: float64 max relative error: scores {errors[0]:.2e}, input gradient {errors[1]:.2e}")
    assert errors[0] < F64_TOL and errors[1] < F64_TOL, errors
    return errors


def check_float32(net, model, x, what):
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    error = rel(net.forward(x), ref)
    print(f"{what}: float32 max relative error of the scores {error:.2e}")
    assert error < F32_TOL, error
    return error


def assert_same_parameters(a, b):
    assert [p.name for p in a.parameters()] == [p.name for p in b.parameters()]
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert p.value.dtype == q.value.dtype
        np.testing.assert_array_equal(p.value, q.value, err_msg=p.name)


def both_ways(model, arch, tmp_path):
    """(from_torch(model), load_checkpoint(torch.save(state_dict)))."""
    path = tmp_path / f"{arch}.pth"
    torch.save(model.state_dict(), path)
    return tc.from_torch(model), tc.load_checkpoint(path, arch=arch)


def test_mnist_cnn(tmp_path):
    torch.manual_seed(0)
    model = MnistCNN().double().eval()
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28))
    direct, loaded = both_ways(model, "mnist-cnn", tmp_path)
    assert_same_parameters(direct, loaded)
    assert [layer.name for layer in direct] == [layer.name for layer in tc.models.build("mnist-cnn")]
    for net, how in ((direct, "from_torch"), (loaded, "checkpoint")):
        check_float64(net, model, x, [0, 4, 9], f"MNIST CNN ({how})")
    model32 = model.float()
    check_float32(tc.from_torch(model32), model32, x.astype(np.float32), "MNIST CNN")
    assert tc.from_torch(model32).dtype == np.float32


def check_checkpoint_route(model32, arch, tmp_path, x):
    """float32: from_torch and the torch-free reader give bit-identical
    parameters, and the scores agree with PyTorch's."""
    direct, loaded = both_ways(model32, arch, tmp_path)
    assert_same_parameters(direct, loaded)  # so every float64 check of from_torch holds for both
    del direct
    gc.collect()
    check_float32(loaded, model32, x, f"{arch} {x.shape[-1]} (checkpoint)")
    return loaded.meta


@pytest.mark.slow
def test_alexnet(tmp_path):
    torch.manual_seed(1)
    model = AlexNet().eval()
    rng = np.random.default_rng(1)
    check_checkpoint_route(
        model, "alexnet", tmp_path, rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    )
    gc.collect()
    model = model.double()
    net = tc.from_torch(model)
    check_float64(net, model, rng.standard_normal((2, 3, 224, 224)), [3, 999], "AlexNet 224 (from_torch)")
    check_float64(net, model, rng.standard_normal((1, 3, 100, 100)), [7], "AlexNet 100 (adaptive pool)")


@pytest.mark.slow
def test_vgg16(tmp_path):
    torch.manual_seed(2)
    model = VGG(VGG_CFG["vgg16"]).eval()
    rng = np.random.default_rng(2)
    check_checkpoint_route(model, "vgg16", tmp_path, rng.standard_normal((1, 3, 224, 224)).astype(np.float32))
    gc.collect()
    model = model.double()
    net = tc.from_torch(model)
    check_float64(net, model, rng.standard_normal((1, 3, 224, 224)), [5], "VGG-16 224 (from_torch)")
    check_float64(net, model, rng.standard_normal((2, 3, 64, 64)), [1, 2], "VGG-16 64 (adaptive pool)")


@pytest.mark.slow
def test_vgg11_bn_folded(tmp_path):
    torch.manual_seed(3)
    model = randomise_batchnorm(VGG(VGG_CFG["vgg11"], batch_norm=True)).eval()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 64, 64))
    meta = check_checkpoint_route(model, "vgg11_bn", tmp_path, x.astype(np.float32))
    assert meta["arch"] == "vgg11_bn" and "folded" in meta["batchnorm"]
    gc.collect()
    model = model.double()
    net = tc.from_torch(model)
    assert not any(type(layer).__name__.startswith("Batch") for layer in net)
    check_float64(net, model, rng.standard_normal((2, 3, 64, 64)), [10, 20], "VGG-11-BN 64 (folded)")


def small_bn_net():
    """Nested Sequentials, BatchNorm after a bias-free conv, avg-pools, padding, dropout, flatten."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True)),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Sequential(nn.Conv2d(6, 5, (3, 2), stride=(2, 1)), nn.BatchNorm2d(5, eps=1e-3), nn.ReLU()),
        nn.AvgPool2d(2, stride=1, padding=1),
        nn.AdaptiveAvgPool2d((3, 2)),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(30, 4),
    )
    return randomise_batchnorm(model, seed=5).double().eval()


def test_nested_sequential_with_batchnorm():
    model = small_bn_net()
    net = tc.from_torch(model, classes=list("abcd"), mean=0.5, std=0.25, input_shape=(3, 15, 12))
    names = [layer.name for layer in net]
    assert names == ["0.0", "0.2", "1", "2.0", "2.2", "3", "4", "5", "6", "7"]  # BatchNorms folded away
    assert net.classes == list("abcd") and net.mean == (0.5,) * 3 and net.input_shape == (3, 15, 12)
    x = np.random.default_rng(4).standard_normal((2, 3, 15, 12))
    check_float64(net, model, x, [0, 3], "nested Sequential with BatchNorm")


def test_custom_model_with_children_in_order():
    """A plain module whose children run in order: flattened before its first Linear group."""
    model = MnistCNN().double().eval()
    net = tc.from_torch(model)
    assert net.index("flatten") == net.index("fc_layers.0") - 1


@pytest.mark.parametrize(
    "module, message",
    [
        (nn.Conv2d(3, 4, 3, dilation=2), r"module '0' \(Conv2d\): dilation"),
        (nn.Conv2d(4, 4, 3, groups=2), r"module '0' \(Conv2d\): groups=2"),
        (nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (nn.MaxPool2d(2, ceil_mode=True), r"module '0' \(MaxPool2d\): ceil_mode"),
        (nn.MaxPool2d(2, dilation=2), r"\(MaxPool2d\): dilation"),
        (nn.AvgPool2d(2, ceil_mode=True), r"\(AvgPool2d\): ceil_mode"),
        (nn.Sigmoid(), r"module '0' \(Sigmoid\): this module type is not supported"),
        (nn.BatchNorm2d(3), r"module '0' \(BatchNorm2d\): a BatchNorm2d must directly follow a Conv2d"),
        (nn.Flatten(0), r"Flatten\(start_dim=1"),
    ],
)
def test_unsupported_modules_are_refused_by_name(module, message):
    with pytest.raises(WeightsError, match=message):
        tc.from_torch(nn.Sequential(module))


def test_nested_custom_module_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), MnistCNN()))
    with pytest.raises(WeightsError, match=r"module '1\.1' \(MnistCNN\)"):
        tc.from_torch(model)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        tc.from_torch("not a module")
