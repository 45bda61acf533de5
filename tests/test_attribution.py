"""Tests of tinyconv.methods.attribution (beyond the paper): proofs of what each
method computes, finite differences of the engine's taps, and Captum in float64.

References: closed forms on linear networks (gradient × input, occlusion),
CAM (Zhou et al. 2016) from the dense weights, quadrature exactness on
polynomials, a per-step loop and a per-window loop beside the batched code,
central finite differences of an inner layer's score, and Captum 0.9
(Saliency, InputXGradient, IntegratedGradients with every method,
LayerGradCam, GuidedGradCam, Occlusion, GuidedBackprop, Deconvolution) on a
PyTorch twin of a test network. Each Captum comparison records its max
relative difference under "captum: ..." in the gradient-check table that
conftest prints at the end of the session.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from gradcheck import assert_gradients_close, numerical_gradient, record, relative_error

import tinyconv as tc
from tinyconv import Sequential
from tinyconv.engine.layers import AdaptiveAvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.errors import ShapeError, TinyconvError
from tinyconv.methods import attribution as A

# Captum warns that it sets requires_grad on the inputs itself
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def relu_net(seed=0, channels=3, size=8, classes=5):
    """conv(C->4, 3x3, pad 1)-ReLU-pool 2-conv(4->6, 3x3, pad 1)-ReLU-flatten-dense."""
    return Sequential(
        [
            Conv2d(channels, 4, 3, padding=1, seed=seed),
            ReLU(),
            MaxPool2d(2),
            Conv2d(4, 6, 3, padding=1, seed=seed + 1),
            ReLU(),
            Flatten(),
            Linear(6 * (size // 2) ** 2, classes, seed=seed + 2),
        ],
        input_shape=(channels, size, size),
    ).astype(np.float64)


def linear_net(seed=0, channels=1, size=6, classes=4):
    """conv-pool(max)-free linear map: conv(C->3, 3x3, pad 1)-conv(3->2, 2x2, stride 2)-flatten-dense."""
    return Sequential(
        [
            Conv2d(channels, 3, 3, padding=1, seed=seed),
            Conv2d(3, 2, 2, stride=2, seed=seed + 1),
            Flatten(),
            Linear(2 * (size // 2) ** 2, classes, seed=seed + 2),
        ],
        input_shape=(channels, size, size),
    ).astype(np.float64)


def effective_weights(net, c):
    """w with S_c(x) = w·x + b for a linear net, from the scores of the basis images."""
    shape = net.input_shape
    eye = np.eye(int(np.prod(shape))).reshape(-1, *shape)
    zero = np.zeros((1, *shape))
    return (net.forward(eye)[:, c] - net.forward(zero)[0, c]).reshape(shape)


# ----------------------------------------------------------------------------
# gradient × input


def test_input_x_gradient_is_the_exact_attribution_of_a_linear_network():
    net = linear_net(channels=2)
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    targets = [0, 3, 1]
    got = tc.input_x_gradient(net, x, targets)
    for n, c in enumerate(targets):
        want = effective_weights(net, c) * x[n]  # w_i x_i: S_c − b split exactly over the inputs
        np.testing.assert_allclose(got[n], want, rtol=0, atol=1e-12)
        b = net.forward(np.zeros((1, 2, 6, 6)))[0, c]
        np.testing.assert_allclose(got[n].sum(), net.forward(x[n : n + 1])[0, c] - b, atol=1e-12)


def test_input_x_gradient_default_target_is_the_top_class():
    net = relu_net()
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    top = net.forward(x).argmax(axis=1)
    np.testing.assert_array_equal(tc.input_x_gradient(net, x), tc.input_x_gradient(net, x, list(top)))


# ----------------------------------------------------------------------------
# integrated gradients


@pytest.mark.parametrize("method", A.IG_METHODS)
def test_quadrature_nodes_lie_in_the_unit_interval_and_integrate_constants(method):
    alphas, weights = A.quadrature(method, 7)
    assert alphas.min() >= 0 and alphas.max() <= 1
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-14)  # the textbook rules integrate 1 exactly


def test_gauss_legendre_is_exact_for_polynomials_up_to_degree_2n_minus_1():
    n = 5
    alphas, weights = A.quadrature("gausslegendre", n)
    for p in range(2 * n):
        np.testing.assert_allclose((weights * alphas**p).sum(), 1 / (p + 1), rtol=1e-13)
    assert abs((weights * alphas ** (2 * n)).sum() - 1 / (2 * n + 1)) > 1e-8  # and not beyond


def test_trapezoid_is_exact_for_linear_integrands_and_middle_converges_quadratically():
    alphas, weights = A.quadrature("riemann_trapezoid", 4)
    np.testing.assert_allclose((weights * (3 * alphas + 2)).sum(), 3.5, rtol=1e-14)
    errs = [abs((w * a**2).sum() - 1 / 3) for a, w in (A.quadrature("riemann_middle", n) for n in (10, 20))]
    np.testing.assert_allclose(errs[0] / errs[1], 4.0, rtol=1e-6)


@pytest.mark.parametrize("method", A.IG_METHODS)
def test_ig_is_exact_when_the_path_stays_in_one_linear_region(method):
    # a linear network: the gradient is constant along the path, every rule
    # integrates it exactly, and completeness holds to rounding
    net = linear_net(channels=2)
    x = np.random.default_rng(2).standard_normal((2, 2, 6, 6))
    base = np.random.default_rng(3).standard_normal((2, 2, 6, 6))
    out = tc.integrated_gradients(net, x, [1, 2], baseline=base, steps=3, method=method, return_gap=True)
    np.testing.assert_allclose(out.gap, 0, atol=1e-12)
    for n, c in enumerate([1, 2]):
        np.testing.assert_allclose(
            out.attributions[n], effective_weights(net, c) * (x[n] - base[n]), atol=1e-12
        )


@pytest.mark.parametrize("method", A.IG_METHODS)
def test_ig_completeness_gap_shrinks_as_steps_grow(method):
    net = relu_net(seed=4)
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8))
    rise = None
    gaps = []
    for steps in (4, 64, 1024):
        out = tc.integrated_gradients(net, x, steps=steps, method=method, return_gap=True, batch_size=512)
        gaps.append(np.abs(out.gap).max())
        if rise is None:
            s = (
                net.forward(x)[np.arange(2), out.targets]
                - net.forward(np.zeros_like(x))[np.arange(2), out.targets]
            )
            rise = np.abs(s).max()
    assert gaps[2] < gaps[0] and gaps[2] < 2e-3 * rise, (gaps, rise)


def test_ig_batched_over_steps_equals_a_loop_over_the_nodes():
    net = relu_net(seed=5)
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8))
    targets = [1, 4]
    alphas, weights = A.quadrature("gausslegendre", 6)
    want = sum(w * tc.input_gradient(net, a * x, targets) for a, w in zip(alphas, weights, strict=True)) * x
    for batch_size in (None, 4, 5):
        got = tc.integrated_gradients(net, x, targets, steps=6, batch_size=batch_size)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_ig_rejects_bad_options():
    net, x = relu_net(), np.zeros((1, 3, 8, 8))
    with pytest.raises(TinyconvError, match="integration method"):
        tc.integrated_gradients(net, x, method="simpson")
    with pytest.raises(TinyconvError, match="steps"):
        tc.integrated_gradients(net, x, steps=1, method="riemann_trapezoid")


# ----------------------------------------------------------------------------
# the ReLU rules: when gradient, DeconvNet and guided backprop agree


def test_without_relus_gradient_deconvnet_and_guided_are_equal():
    net = Sequential(
        [
            Conv2d(2, 3, 3, padding=1, seed=0),
            MaxPool2d(2),
            Conv2d(3, 4, 3, seed=1),
            Flatten(),
            Linear(16, 3, seed=2),
        ],
        input_shape=(2, 8, 8),
    ).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    g = tc.input_gradient(net, x, [0, 2])
    assert np.abs(g).max() > 0
    for rule in ("deconvnet", "guided"):
        np.testing.assert_array_equal(tc.input_gradient(net, x, [0, 2], rule=rule), g)


def positive_net(nonnegative_weights, seed=0):
    """relu_net with biases large enough that every pre-activation is positive
    on inputs in [0, 1] (and with |weights| when ``nonnegative_weights``)."""
    net = relu_net(seed=seed)
    for layer in net:
        if "weight" in layer.params:
            if nonnegative_weights:
                layer.params["weight"] = np.abs(layer.params["weight"])
            layer.params["bias"] = np.full_like(layer.params["bias"], 10.0)
    return net


def all_preactivations_positive(net, x):
    net.forward(x, keep=True)
    prev = x
    for layer in net:
        if isinstance(layer, ReLU) and not (prev > 0).all():
            return False
        prev = net.activations[layer.name]
    return True


def test_with_every_preactivation_positive_the_gradient_is_the_linear_one_and_deconvnet_is_guided():
    net = positive_net(nonnegative_weights=False)
    x = np.random.default_rng(1).uniform(0, 1, (2, 3, 8, 8))
    assert all_preactivations_positive(net, x)
    linear = Sequential(
        [copy.deepcopy(lay) for lay in net if not isinstance(lay, ReLU)], input_shape=(3, 8, 8)
    )
    g = tc.input_gradient(net, x, [0, 3])
    np.testing.assert_array_equal(g, tc.input_gradient(linear, x, [0, 3]))  # every mask 1(x > 0) is 1
    np.testing.assert_array_equal(
        tc.input_gradient(net, x, [0, 3], rule="deconvnet"), tc.input_gradient(net, x, [0, 3], rule="guided")
    )
    # but the signals change sign on the way back: the gradient is not the guided map
    assert not np.allclose(g, tc.input_gradient(net, x, [0, 3], rule="guided"))


def test_with_positive_preactivations_and_backward_signals_all_three_coincide():
    net = positive_net(nonnegative_weights=True)
    x = np.random.default_rng(2).uniform(0, 1, (2, 3, 8, 8))
    assert all_preactivations_positive(net, x)
    g = tc.input_gradient(net, x, [1, 2])
    assert (g > 0).all()
    for rule in ("deconvnet", "guided"):
        np.testing.assert_array_equal(tc.input_gradient(net, x, [1, 2], rule=rule), g)


# ----------------------------------------------------------------------------
# Grad-CAM and the taps


def cam_net(seed=0):
    """The CAM architecture: convs, the last followed only by global average pooling and a dense layer."""
    return Sequential(
        [
            ("conv1", Conv2d(3, 4, 3, padding=1, seed=seed)),
            ("relu1", ReLU()),
            ("pool", MaxPool2d(2)),
            ("conv2", Conv2d(4, 6, 3, padding=1, seed=seed + 1)),
            ("relu2", ReLU()),
            ("gap", AdaptiveAvgPool2d(1)),
            ("flatten", Flatten()),
            ("fc", Linear(6, 5, seed=seed + 2)),
        ],
        input_shape=(3, 12, 12),
    ).astype(np.float64)


def test_gradcam_of_a_gap_network_is_cam():
    net = cam_net()
    x = np.random.default_rng(0).standard_normal((3, 3, 12, 12))
    targets = [0, 2, 4]
    net.forward_to(x, "relu2", keep=True)
    a = net.activations["relu2"]  # A^k: (N, 6, 6, 6)
    w = net["fc"].params["weight"]  # (5, 6)
    cam = np.einsum("nk,nkij->nij", w[targets], a)  # Zhou et al.: M_c = Σ_k w_ck A^k
    z = a.shape[2] * a.shape[3]
    # α_k = mean_ij ∂S_c/∂A^k_ij = w_ck / Z, so Grad-CAM = ReLU(CAM) / Z
    got = tc.gradcam(net, x, targets, upsample=False, relu=False)
    np.testing.assert_allclose(got * z, cam, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(
        tc.gradcam(net, x, targets, upsample=False) * z, np.maximum(cam, 0), atol=1e-14
    )
    assert (cam < 0).any() and (cam > 0).any()  # the ReLU mattered


def test_the_default_gradcam_layer_is_the_relu_after_the_last_conv():
    net = cam_net()
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 12))
    np.testing.assert_array_equal(
        tc.gradcam(net, x, upsample=False), tc.gradcam(net, x, layer="relu2", upsample=False)
    )
    assert tc.gradcam(net, x, upsample=False).shape == (1, 6, 6)
    assert tc.gradcam(net, x).shape == (1, 12, 12)
    assert tc.gradcam(net, x, layer="conv1", upsample=False).shape == (1, 12, 12)
    with pytest.raises(TinyconvError, match="no layer named"):
        tc.gradcam(net, x, layer="nope")
    with pytest.raises(TinyconvError, match="feature maps"):
        tc.gradcam(net, x, layer="fc")


def test_the_gradient_tap_is_the_finite_difference_of_the_score_at_an_inner_layer():
    net = relu_net(seed=7)
    x = np.random.default_rng(7).standard_normal((1, 3, 8, 8))
    c = 3
    scores = net.forward(x, keep=True)
    seed = np.zeros_like(scores)
    seed[0, c] = 1
    net.backward(seed, param_grads=False, keep=True)
    name = net.layers[2].name  # the max-pool output, input of the second conv
    a = net.activations[name].copy()
    tapped = net.gradients[name]
    head = Sequential([copy.deepcopy(lay) for lay in net.layers[3:]])
    num = numerical_gradient(lambda: head.forward(a)[0, c], a)
    assert_gradients_close(tapped, num, "Sequential tap: dS_c/d(inner activation)")


def test_gradcam_upsampling_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    m = np.random.default_rng(0).standard_normal((2, 3, 5))
    for size in ((12, 10), (7, 16), (3, 5)):
        want = torch.nn.functional.interpolate(
            torch.tensor(m)[:, None], size=size, mode="bilinear", align_corners=False
        )[:, 0].numpy()
        np.testing.assert_allclose(A.resize_bilinear(m, size), want, rtol=1e-13, atol=1e-15)


def test_guided_gradcam_is_guided_backprop_times_the_upsampled_cam():
    net = cam_net(seed=3)
    x = np.random.default_rng(3).standard_normal((2, 3, 12, 12))
    want = tc.input_gradient(net, x, [1, 2], rule="guided") * tc.gradcam(net, x, [1, 2])[:, None]
    np.testing.assert_array_equal(tc.guided_gradcam(net, x, [1, 2]), want)


# ----------------------------------------------------------------------------
# occlusion


@pytest.mark.parametrize("channels", [1, 3])
def test_occlusion_with_a_1x1_window_on_a_linear_network_is_the_exact_drop(channels):
    net = linear_net(channels=channels)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, channels, 6, 6))
    base = 0.3
    got = tc.occlusion(net, x, [0, 2], window=(1, 1), stride=(1, 1), baseline=base)
    for n, c in enumerate([0, 2]):
        w = effective_weights(net, c)
        # occluding pixel (i, j) changes S_c by −Σ_ch w(x − baseline); the attribution is the drop
        drop = (w * (x[n] - base)).sum(axis=0, keepdims=True)
        np.testing.assert_allclose(got[n], np.broadcast_to(drop, x[n].shape), atol=1e-12)
        if channels == 1:
            np.testing.assert_allclose(-got[n], -w * (x[n] - base), atol=1e-12)


def naive_occlusion(net, x, c, window, stride, baseline):
    """One window at a time, one image at a time, counts by hand."""
    n, ch, h, w = x.shape
    out = np.zeros_like(x)
    for m in range(n):
        clean = net.forward(x[m : m + 1])[0, c[m]]
        total, count = np.zeros((h, w)), np.zeros((h, w))
        i = 0
        while True:
            j = 0
            while True:
                occ = x[m : m + 1].copy()
                occ[:, :, i : i + window[0], j : j + window[1]] = baseline
                total[i : i + window[0], j : j + window[1]] += clean - net.forward(occ)[0, c[m]]
                count[i : i + window[0], j : j + window[1]] += 1
                if j + window[1] >= w:
                    break
                j += stride[1]
            if i + window[0] >= h:
                break
            i += stride[0]
        out[m] = total / count
    return out


@pytest.mark.parametrize(
    "window, stride, batch_size", [((3, 3), (2, 2), 128), ((5, 4), (3, 3), 3), ((8, 8), (4, 4), 1)]
)
def test_occlusion_batched_equals_one_window_at_a_time(window, stride, batch_size):
    net = relu_net(seed=9)
    x = np.random.default_rng(9).standard_normal((2, 3, 8, 8))
    got = tc.occlusion(net, x, [1, 3], window=window, stride=stride, baseline=-0.5, batch_size=batch_size)
    np.testing.assert_allclose(
        got, naive_occlusion(net, x, [1, 3], window, stride, -0.5), rtol=1e-12, atol=1e-13
    )


def test_occlusion_rejects_a_window_larger_than_the_image():
    with pytest.raises(ShapeError, match="window"):
        tc.occlusion(relu_net(), np.zeros((1, 3, 8, 8)), window=(9, 9))


# ----------------------------------------------------------------------------
# every method as a map, on NumPy and on a CuPy-strict device


@pytest.mark.parametrize("method", list(A.METHODS))
def test_every_method_gives_one_map_per_image(method):
    net = cam_net()
    x = np.random.default_rng(10).standard_normal((2, 3, 12, 12))
    opts = {"occlusion": {"window": (4, 4), "stride": (4, 4)}, "smoothgrad": {"samples": 2},
            "integrated_gradients": {"steps": 4}}.get(method, {})  # fmt: skip
    m = A.attribution_map(net, x, method, **opts)
    assert m.shape == (2, 12, 12) and np.isfinite(m).all()
    with pytest.raises(TinyconvError, match="unknown attribution method"):
        A.attribution_map(net, x, "lrp")


def test_every_method_stays_on_the_device(fake):
    from fake_device import FakeArray

    x = np.random.default_rng(11).standard_normal((2, 3, 12, 12))
    host, device = cam_net(), cam_net().to("fake")
    d = fake.asarray(x)
    calls = [
        lambda net, v: tc.input_x_gradient(net, v, [0, 1]),
        lambda net, v: tc.integrated_gradients(net, v, [0, 1], steps=3),
        lambda net, v: tc.integrated_gradients(net, v, [0, 1], steps=3, return_gap=True).attributions,
        lambda net, v: tc.gradcam(net, v, [0, 1]),
        lambda net, v: tc.gradcam(net, v, [0, 1], upsample=False),
        lambda net, v: tc.guided_gradcam(net, v, [0, 1]),
        lambda net, v: tc.occlusion(net, v, [0, 1], window=(4, 4), stride=(4, 4)),
    ]
    for call in calls:
        got, want = call(device, d), call(host, x)
        assert isinstance(got, FakeArray)
        np.testing.assert_allclose(fake.asnumpy(got), want, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------
# against Captum, float64, on a PyTorch twin of a test network


@pytest.fixture(scope="module")
def twin():
    torch = pytest.importorskip("torch")
    pytest.importorskip("captum")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5),
    ).double().eval()  # fmt: skip
    net = tc.from_torch(model, input_shape=(3, 16, 16))
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16))
    targets = [0, 3, 4]
    return torch, model, net, x, targets


def compare(label, got, want, tol):
    err = relative_error(got, want)
    record(f"captum: {label}", err)
    assert err < tol, f"{label}: max relative difference {err:.3g} against Captum"


def test_captum_saliency_input_x_gradient_guided_backprop_and_deconvolution(twin):
    from captum.attr import Deconvolution, GuidedBackprop, InputXGradient, Saliency

    torch, model, net, x, targets = twin
    xt, tt = torch.tensor(x), torch.tensor(targets)
    compare("Saliency (abs=False)", tc.input_gradient(net, x, targets),
            Saliency(model).attribute(xt, target=tt, abs=False).detach().numpy(), 1e-12)  # fmt: skip
    compare("Saliency (abs=True), max over channels", tc.saliency(net, x, targets),
            Saliency(model).attribute(xt, target=tt).numpy().max(axis=1), 1e-12)  # fmt: skip
    compare("InputXGradient", tc.input_x_gradient(net, x, targets),
            InputXGradient(model).attribute(xt, target=tt).detach().numpy(), 1e-12)  # fmt: skip
    compare("GuidedBackprop", tc.input_gradient(net, x, targets, rule="guided"),
            GuidedBackprop(model).attribute(xt, target=tt).detach().numpy(), 1e-12)  # fmt: skip
    compare("Deconvolution", tc.input_gradient(net, x, targets, rule="deconvnet"),
            Deconvolution(model).attribute(xt, target=tt).detach().numpy(), 1e-12)  # fmt: skip


@pytest.mark.parametrize("method", A.IG_METHODS)
def test_captum_integrated_gradients(twin, method):
    from captum.attr import IntegratedGradients

    torch, model, net, x, targets = twin
    n = 20
    base = np.random.default_rng(1).standard_normal(x.shape) * 0.1
    want, delta = IntegratedGradients(model).attribute(
        torch.tensor(x), baselines=torch.tensor(base), target=torch.tensor(targets), n_steps=n, method=method,
        return_convergence_delta=True,
    )  # fmt: skip
    want, delta = want.detach().numpy(), delta.detach().numpy()
    if method == "riemann_trapezoid":
        want, delta = want * n / (n - 1), None  # Captum's weights are 1/n; the textbook rule's 1/(n-1)
    got = tc.integrated_gradients(net, x, targets, baseline=base, steps=n, method=method, return_gap=True)
    # Captum casts its weights to float32 (and takes its Riemann nodes from a float32 torch.linspace)
    tol = 1e-6
    compare(f"IntegratedGradients {method}", got.attributions, want, tol)
    if delta is not None:
        np.testing.assert_allclose(got.gap, delta, atol=tol * np.abs(want).sum())


def test_captum_layer_gradcam_and_guided_gradcam(twin):
    from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam

    torch, model, net, x, targets = twin
    xt, tt = torch.tensor(x), torch.tensor(targets)
    layer = model[4]  # the ReLU after the last conv, tinyconv's default Grad-CAM layer
    assert A._cam_layer(net, None) == "4"
    cam = LayerGradCam(model, layer).attribute(xt, target=tt, relu_attributions=True)
    compare(
        "LayerGradCam (relu_attributions=True)",
        tc.gradcam(net, x, targets, upsample=False),
        cam[:, 0].detach().numpy(),
        1e-12,
    )
    signed = LayerGradCam(model, layer).attribute(xt, target=tt)
    compare("LayerGradCam (signed)", tc.gradcam(net, x, targets, upsample=False, relu=False),
            signed[:, 0].detach().numpy(), 1e-12)  # fmt: skip
    up = LayerAttribution.interpolate(cam, (16, 16), interpolate_mode="bilinear")
    compare(
        "LayerGradCam + interpolate bilinear", tc.gradcam(net, x, targets), up[:, 0].detach().numpy(), 1e-12
    )
    guided = GuidedGradCam(model, layer).attribute(xt, target=tt, interpolate_mode="bilinear")
    compare("GuidedGradCam (bilinear)", tc.guided_gradcam(net, x, targets), guided.detach().numpy(), 1e-12)


@pytest.mark.parametrize("window, stride", [((4, 4), (2, 2)), ((5, 5), (3, 3)), ((8, 8), (4, 4))])
def test_captum_occlusion(twin, window, stride):
    from captum.attr import Occlusion

    torch, model, net, x, targets = twin
    want = Occlusion(model).attribute(
        torch.tensor(x), sliding_window_shapes=(3, *window), strides=(3, *stride), baselines=0.0,
        target=torch.tensor(targets),
    ).detach().numpy()  # fmt: skip
    # Captum divides a float32 copy of the summed drops by the counts
    compare(
        f"Occlusion window {window} stride {stride}",
        tc.occlusion(net, x, targets, window, stride),
        want,
        1e-6,
    )


# ----------------------------------------------------------------------------
# the command line: tinyconv saliency --method


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients", "occlusion"])
def test_cli_saliency_method_writes_the_map_and_its_overlay(tmp_path, method):
    from PIL import Image

    from tinyconv.cli import main

    path = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28)).astype(np.uint8)).save(path)
    out = tmp_path / "out"
    assert main(["saliency", str(path), "--method", method, "-o", str(out)]) == 0
    for name in (f"digit_{method}.png", f"digit_{method}_overlay.png"):
        with Image.open(out / name) as im:
            assert im.size == (224, 224)


@pytest.mark.parametrize("method", ["riemann_left", "riemann_middle", "gausslegendre"])
def test_captum_integrated_gradients_differ_only_by_its_float32_rounding(twin, method, monkeypatch):
    # with Captum's own rounding of the nodes (float32 linspace for Riemann) and of the
    # weights (float32), tinyconv's batched integral agrees with Captum to float64 rounding
    from captum.attr import IntegratedGradients

    torch, model, net, x, targets = twin
    n = 20
    exact = A.quadrature

    def rounded(m, steps):
        alphas, weights = exact(m, steps)
        if m == "riemann_left":
            alphas = np.array(torch.linspace(0, 1 - 1 / steps, steps).tolist())
        if m == "riemann_middle":
            alphas = np.array(torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps).tolist())
        return alphas, np.float32(weights).astype(np.float64)

    monkeypatch.setattr(A, "quadrature", rounded)
    got = tc.integrated_gradients(net, x, targets, steps=n, method=method)
    want = IntegratedGradients(model).attribute(
        torch.tensor(x), target=torch.tensor(targets), n_steps=n, method=method
    )
    compare(
        f"IntegratedGradients {method}, Captum's float32 nodes and weights", got, want.detach().numpy(), 1e-12
    )
