"""The layer and network checks again, on CuPy: only where a GPU is present.

Gradients on the GPU are checked twice: against central finite differences
(float64, evaluated on the device) and against the NumPy run of the same
layer, which tests/test_layers.py checks in turn. Every result must come back
as a CuPy array of the input's dtype.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import assert_gradients_close, numerical_gradient
from hypothesis import given, settings
from hypothesis import strategies as st
from test_layers import away_from_zero, distinct_values, window_cases
from test_network import kink_margin, small_net

import tinyconv
from tinyconv import to_device, to_numpy
from tinyconv.engine.backend import DeviceError
from tinyconv.engine.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)
from tinyconv.errors import ShapeError

if not tinyconv.cuda_available():
    pytest.skip("needs CuPy and an NVIDIA GPU (tinyconv.cuda_available() is False)", allow_module_level=True)

cp = tinyconv.get_array_module(to_device(np.zeros(1), "cuda"))  # CuPy, via the backend
pytestmark = pytest.mark.gpu


def gpu_gradient_check(layer, x, label, rng):
    """Analytic gradients on the GPU against finite differences run on the GPU."""
    layer.astype(np.float64).to("cuda")
    layer.zero_grad()
    y = layer.forward(cp.asarray(x))
    assert isinstance(y, cp.ndarray)
    r = rng.standard_normal(y.shape)
    dx = layer.backward(cp.asarray(r))
    assert isinstance(dx, cp.ndarray) and dx.dtype == np.float64
    grads = {k: to_numpy(g).copy() for k, g in layer.grads.items()}
    r_dev = cp.asarray(r)
    host_params = {k: to_numpy(v).copy() for k, v in layer.params.items()}

    def loss():
        return float((layer.forward(cp.asarray(x)) * r_dev).sum())

    assert_gradients_close(to_numpy(dx), numerical_gradient(loss, x), f"{label} input (cuda)")
    for key, value in host_params.items():

        def loss_of_param(key=key, value=value):
            layer.params[key] = cp.asarray(value)
            return loss()

        assert_gradients_close(grads[key], numerical_gradient(loss_of_param, value), f"{label} {key} (cuda)")
        layer.params[key] = cp.asarray(value)


@settings(max_examples=25)
@given(case=window_cases(), f=st.integers(1, 3))
def test_conv2d_gradients_on_gpu(case, f):
    rng = np.random.default_rng(case["seed"])
    layer = Conv2d(case["c"], f, case["kernel"], case["stride"], case["padding"], seed=case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    gpu_gradient_check(layer, x, "Conv2d", rng)


@settings(max_examples=25)
@given(case=window_cases(max_kernel=3, half_kernel_padding=True))
def test_pool_gradients_on_gpu(case):
    rng = np.random.default_rng(case["seed"])
    x = distinct_values(rng, (case["n"], case["c"], case["h"], case["w"]))
    args = case["kernel"], case["stride"], case["padding"]
    gpu_gradient_check(MaxPool2d(*args), x, "MaxPool2d", rng)
    gpu_gradient_check(AvgPool2d(*args), x, "AvgPool2d", rng)


def test_other_layer_gradients_on_gpu():
    rng = np.random.default_rng(0)
    gpu_gradient_check(ReLU(), away_from_zero(rng, (2, 3, 4, 4)), "ReLU", rng)
    gpu_gradient_check(AdaptiveAvgPool2d((5, 3)), rng.standard_normal((2, 2, 4, 7)), "AdaptiveAvgPool2d", rng)
    gpu_gradient_check(Linear(6, 4, seed=0), rng.standard_normal((3, 6)), "Linear", rng)
    gpu_gradient_check(Flatten(), rng.standard_normal((2, 3, 2, 2)), "Flatten", rng)


def _layers():
    return [
        (Conv2d(2, 3, (3, 2), stride=(2, 1), padding=1, seed=0), (2, 2, 7, 6)),
        (ReLU(), (2, 2, 3, 3)),
        (MaxPool2d(3, 2, 1), (2, 2, 7, 6)),
        (AvgPool2d(2, 1, 1), (2, 2, 5, 5)),
        (AdaptiveAvgPool2d((3, 4)), (2, 2, 5, 5)),
        (Linear(6, 3, seed=0), (2, 6)),
        (Flatten(), (2, 2, 3, 3)),
        (Dropout(0.5, seed=0), (2, 6)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_layers_on_gpu_match_numpy_and_keep_dtype(dtype, rule):
    rng = np.random.default_rng(1)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    for (host, shape), (device, _) in zip(_layers(), _layers(), strict=True):
        name = type(host).__name__
        device.to("cuda")
        for layer in (host, device):
            layer.training = True
            if isinstance(layer, ReLU):
                layer.rule = rule
        x = rng.standard_normal(shape).astype(dtype)
        y_host = host.forward(x)
        y_dev = device.forward(cp.asarray(x))
        assert isinstance(y_dev, cp.ndarray) and y_dev.dtype == dtype, name
        np.testing.assert_allclose(to_numpy(y_dev), y_host, **tol, err_msg=name)
        g = rng.standard_normal(y_host.shape).astype(dtype)
        dx_host = host.backward(g)
        dx_dev = device.backward(cp.asarray(g))
        assert isinstance(dx_dev, cp.ndarray) and dx_dev.dtype == dtype, name
        np.testing.assert_allclose(to_numpy(dx_dev), dx_host, **tol, err_msg=name)
        for key, grad in device.grads.items():
            assert isinstance(grad, cp.ndarray)
            np.testing.assert_allclose(to_numpy(grad), host.grads[key], rtol=1e-4, atol=1e-5, err_msg=name)


def test_network_backward_on_gpu_matches_finite_differences_and_numpy():
    net = small_net(0).to("cuda")
    host = small_net(0)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    assert kink_margin(host, x) > 1e-4
    seed = np.random.default_rng(1).standard_normal((2, 4))
    scores = net.forward(cp.asarray(x))
    dx = net.backward(cp.asarray(seed))
    assert isinstance(scores, cp.ndarray) and isinstance(dx, cp.ndarray)
    numeric = numerical_gradient(lambda: float((net.forward(cp.asarray(x)) * cp.asarray(seed)).sum()), x)
    assert_gradients_close(to_numpy(dx), numeric, "Sequential input (cuda)")
    host.forward(x)
    np.testing.assert_allclose(to_numpy(dx), host.backward(seed), rtol=1e-10, atol=1e-12)


def test_predict_on_gpu_matches_forward():
    net = small_net(0).to("cuda")
    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 2, 6, 6)))
    np.testing.assert_allclose(to_numpy(net.predict(x)), to_numpy(net.forward(x)), rtol=1e-12, atol=1e-12)


def test_input_checks_on_gpu():
    net = small_net(0).to("cuda")
    x = np.zeros((1, 2, 6, 6))
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ShapeError, match="NaN or infinite"):
        net.forward(cp.asarray(x))
    with pytest.raises(DeviceError, match="different devices"):
        net.forward(np.ones((1, 2, 6, 6)))
    scores = net.forward(cp.ones((1, 2, 6, 6)))
    with pytest.raises(DeviceError, match="gradient on 'cpu', forward ran on 'cuda'"):
        net.backward(np.ones(scores.shape))
