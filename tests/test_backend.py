"""Tests of tinyconv.engine.backend, and device discipline proven without a GPU.

A fake device (tests/fake_device.py) behaves like CuPy: its arrays refuse to
become NumPy arrays implicitly and refuse NumPy functions. A whole network
runs forward and backward on it and must give exactly the NumPy results,
with every array staying on the fake device.
"""

from __future__ import annotations

import numpy as np
import pytest
from fake_device import FakeArray, FakeDeviceError, fake_module
from hypothesis import given
from hypothesis import strategies as st

import tinyconv
from tinyconv import backend
from tinyconv.engine.backend import (
    BufferPool,
    DeviceError,
    batch_map,
    batch_threads,
    device_of,
    gemm_accumulate,
    get_array_module,
    register_backend,
    to_device,
    to_numpy,
)
from tinyconv.engine.functional import col2im, im2col, unpool
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
from tinyconv.errors import TinyconvError

# ----------------------------------------------------------------------------
# the backend's own functions


def test_numpy_is_the_default_module():
    x = np.zeros(3)
    assert get_array_module(x) is np and get_array_module() is np
    assert get_array_module(x, None, 1.0) is np
    assert device_of(x) == "cpu"
    assert to_device(x, "cpu") is x and to_numpy(x) is x


def test_moving_to_the_fake_device_and_back(fake):
    x = np.arange(6.0).reshape(2, 3)
    d = to_device(x, "fake")
    assert isinstance(d, FakeArray) and device_of(d) == "fake"
    assert get_array_module(d) is fake
    assert to_device(d, "fake") is d  # no copy when already there
    back = to_device(d, "cpu")
    assert type(back) is np.ndarray
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(to_numpy(d), x)


def test_mixed_devices_raise_a_device_error_naming_both(fake):
    d = fake.zeros(3)
    with pytest.raises(DeviceError, match=r"arrays on different devices \(fake and cpu\)"):
        get_array_module(d, np.zeros(3))
    assert issubclass(DeviceError, TinyconvError)


def test_unavailable_devices_are_named():
    if not tinyconv.cuda_available():
        with pytest.raises(DeviceError, match="device 'cuda' is not available"):
            to_device(np.zeros(2), "cuda")
    with pytest.raises(DeviceError, match="unknown device 'tpu'; expected one of: cpu, cuda"):
        to_device(np.zeros(2), "tpu")
    with pytest.raises(ValueError, match="'cpu' is NumPy's name"):
        register_backend("cpu", FakeArray, fake_module)


# ----------------------------------------------------------------------------
# the fake device is as strict as CuPy (so the tests below can fail)


def test_fake_arrays_refuse_numpy(fake):
    d = fake.asarray(np.arange(4.0))
    for attempt in (
        lambda: np.asarray(d),
        lambda: np.array(d),
        lambda: np.exp(d),  # a ufunc
        lambda: np.pad(d, 1),  # an array function
        lambda: np.sum(d),
        lambda: d + np.ones(4),  # mixing devices
        lambda: np.ones(4) * d,
        lambda: fake.where(np.ones(4) > 0, d, 0),  # a host array into the device module
        lambda: bool(d),  # more than one element
    ):
        with pytest.raises(TypeError):
            attempt()
    assert isinstance(d.sum(), FakeArray) and d.sum().ndim == 0  # reductions stay on the device
    assert float(d.sum()) == 6.0 and bool(d[1] > 0) and int(d.argmax()) == 3  # size-1: allowed
    assert isinstance(d[1:], FakeArray) and isinstance(d.reshape(2, 2).T, FakeArray)
    view = d[1:3]
    view += 10  # views write through, like device memory
    np.testing.assert_array_equal(fake.asnumpy(d), [0, 11, 12, 3])


def test_an_engine_call_to_numpy_would_be_caught(fake):
    """What the device tests guard against: np.* on a device array raises."""
    d = fake.asarray(np.zeros((1, 1, 4, 4)))
    with pytest.raises(FakeDeviceError, match="numpy.pad was called on a FakeArray"):
        np.pad(d, ((0, 0), (0, 0), (1, 1), (1, 1)))


# ----------------------------------------------------------------------------
# the engine on the fake device


def build_net(seed=0):
    """conv-ReLU-maxpool-avgpool-adaptive-dropout-flatten-dense, every layer type."""
    return tinyconv.Sequential(
        [
            Conv2d(2, 4, (3, 2), stride=1, padding=(1, 0), seed=seed),
            ReLU(),
            MaxPool2d(3, 2, padding=1),
            AvgPool2d(2, 1, padding=1),
            AdaptiveAvgPool2d((3, 2)),
            Dropout(0.4, seed=seed + 1),
            Flatten(),
            Linear(4 * 3 * 2, 5, seed=seed + 2),
        ],
        input_shape=(2, 9, 8),
    )


def _run(net, x, seed, device, rule="gradient"):
    """forward + backward with taps; everything returned on the host."""
    xd = to_device(x, device)
    scores = net.forward(xd, keep=True)
    net.zero_grad()
    with net.relu_rule(rule):
        dx = net.backward(to_device(seed, device), keep=True)
    arrays = {"scores": scores, "dx": dx}
    arrays.update({f"act {k}": v for k, v in net.activations.items()})
    arrays.update({f"grad {k}": v for k, v in net.gradients.items()})
    arrays.update({f"param {p.name}": p.value for p in net.parameters()})
    arrays.update({f"pgrad {p.name}": p.grad for p in net.parameters()})
    for layer in net:
        if isinstance(layer, MaxPool2d):
            arrays["switches"] = layer.switches
        if isinstance(layer, Dropout) and layer.cache is not None:
            arrays["mask"] = layer.cache.mask
    return arrays


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_network_on_the_fake_device_matches_numpy(fake, dtype, training, rule):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 9, 8)).astype(dtype)
    seed = rng.standard_normal((3, 5)).astype(dtype)
    host = build_net().astype(dtype).train(training)
    device = build_net().astype(dtype).train(training).to("fake")
    assert device.device == "fake"
    want = _run(host, x, seed, "cpu", rule)
    got = _run(device, x, seed, "fake", rule)
    assert set(got) == set(want)
    for key, value in got.items():
        assert isinstance(value, FakeArray), f"{key} left the device: {type(value).__name__}"
        assert value.dtype == want[key].dtype, key
        np.testing.assert_array_equal(fake.asnumpy(value), want[key], err_msg=key)
    if training:
        assert "mask" in got


def test_param_grads_false_and_forward_to_on_the_fake_device(fake):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 9, 8))
    host, device = build_net().astype(np.float64), build_net().astype(np.float64).to("fake")
    out = host.forward_to(x, 3)
    want = host.backward(np.ones(out.shape), start=3, param_grads=False)
    out = device.forward_to(fake.asarray(x), 3)
    dx = device.backward(fake.ones(out.shape), start=3, param_grads=False)
    assert isinstance(out, FakeArray) and isinstance(dx, FakeArray)
    np.testing.assert_array_equal(fake.asnumpy(dx), want)
    assert not any(bool(p.grad.any()) for p in device.parameters())


def test_engine_functions_on_the_fake_device(fake):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 5))
    d = fake.asarray(x)
    cols = im2col(d, (3, 2), (2, 1), (1, 1))
    assert isinstance(cols, FakeArray)
    np.testing.assert_array_equal(fake.asnumpy(cols), im2col(x, (3, 2), (2, 1), (1, 1)))
    back = col2im(cols, x.shape, (3, 2), (2, 1), (1, 1))
    np.testing.assert_array_equal(
        fake.asnumpy(back), col2im(fake.asnumpy(cols), x.shape, (3, 2), (2, 1), (1, 1))
    )
    pool = MaxPool2d(3, 2, 1)
    pool.forward(d)
    assert isinstance(pool.switches, FakeArray)
    g = fake.ones((2, 3, 3, 3))
    assert isinstance(unpool(g, pool.switches, x.shape, (3, 3), (2, 2), (1, 1)), FakeArray)


def test_device_mismatch_is_a_tinyconv_error_naming_the_devices(fake):
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 8))
    host = build_net()
    with pytest.raises(DeviceError, match="different devices"):
        host.forward(fake.asarray(x.astype(np.float32)))
    device = build_net().to("fake")
    with pytest.raises(DeviceError, match="different devices"):
        device.forward(x.astype(np.float32))
    scores = device.forward(fake.asarray(x.astype(np.float32)))
    with pytest.raises(DeviceError, match="gradient on 'cpu', forward ran on 'fake'"):
        device.backward(np.ones(scores.shape, dtype=np.float32))
    layer = ReLU()
    layer.forward(fake.asarray(x))
    with pytest.raises(TinyconvError, match="'cpu'.*'fake'"):
        layer.backward(np.ones(x.shape))


def test_moving_a_network_moves_parameters_and_gradients(fake):
    net = build_net().to("fake")
    assert all(isinstance(p.value, FakeArray) and isinstance(p.grad, FakeArray) for p in net.parameters())
    net.to("cpu")
    assert all(type(p.value) is np.ndarray and type(p.grad) is np.ndarray for p in net.parameters())
    assert net.device == "cpu"


def test_predict_on_the_fake_device_matches_numpy(fake):
    """The inference path (no switches, ReLUs in place) stays on the device."""
    x = np.random.default_rng(8).standard_normal((3, 2, 9, 8))
    want = build_net().predict(x)
    xd = to_device(x, "fake")
    got = build_net().to("fake").predict(xd)
    assert isinstance(got, FakeArray)
    np.testing.assert_array_equal(fake.asnumpy(got), want)
    np.testing.assert_array_equal(fake.asnumpy(xd), x)


@pytest.mark.parametrize("channels", [(4, 2), (2, 4)], ids=["dx-as-convolution", "dx-by-col2im"])
def test_both_forms_of_the_conv_input_gradient_on_the_fake_device(fake, channels):
    """F <= C with many pixels per channel takes the flipped-kernel
    convolution, F > C the fold; both stay on the device and match NumPy."""
    c, f = channels
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, c, 9, 8))
    dy = rng.standard_normal((3, f, 9, 8))
    host = Conv2d(c, f, 3, padding=1, seed=1).astype(np.float64)
    device = Conv2d(c, f, 3, padding=1, seed=1).astype(np.float64).to("fake")
    host.forward(x)
    device.forward(fake.asarray(x))
    want = host.backward(dy)
    got = device.backward(fake.asarray(dy))
    assert isinstance(got, FakeArray)
    np.testing.assert_allclose(fake.asnumpy(got), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fake.asnumpy(device.grads["weight"]), host.grads["weight"], rtol=1e-12)


@pytest.mark.parametrize("form, crossover", [("convolution", 0), ("col2im", 10**9)])
def test_each_form_of_dx_forced_by_tuning_stays_on_the_fake_device(fake, form, crossover):
    """The same layer shape, each dx form forced through ``Conv2d.tuning``,
    with small tiles (many per image): on the device, equal to NumPy's."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 7, 6))
    dy = rng.standard_normal((2, 3, 7, 6))
    tuning = {"dx_crossover": crossover, "tile_bytes": 256, "min_columns": 4}
    host = Conv2d(3, 3, 3, padding=1, seed=2).astype(np.float64)
    device = Conv2d(3, 3, 3, padding=1, seed=2).astype(np.float64).to("fake")
    host.tuning = device.tuning = tuning
    host.forward(x)
    device.forward(fake.asarray(x))
    want = host.backward(dy)
    got = device.backward(fake.asarray(dy))
    assert device.dx_form == host.dx_form == form
    assert isinstance(got, FakeArray) and isinstance(device.grads["weight"], FakeArray)
    np.testing.assert_allclose(fake.asnumpy(got), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fake.asnumpy(device.grads["weight"]), host.grads["weight"], rtol=1e-12)


# ----------------------------------------------------------------------------
# gemm_accumulate: out += a @ b through NumPy's own BLAS, or matmul + add


def _operand(rng, rows, cols, layout, dtype):
    """A (rows, cols) array laid out as asked: a view into a larger buffer."""
    if layout == "c":
        return rng.standard_normal((rows, cols)).astype(dtype)
    if layout == "f":  # column-major: the transpose of a row-major array
        return rng.standard_normal((cols, rows)).astype(dtype).T
    if layout == "ld":  # rows of a wider array (leading dimension > cols)
        return rng.standard_normal((rows, cols + 3)).astype(dtype)[:, 1 : cols + 1]
    if layout == "ld-f":
        return rng.standard_normal((cols, rows + 2)).astype(dtype)[:, 2:].T
    if layout == "step":  # no unit stride: BLAS cannot take it, the fallback must
        return rng.standard_normal((rows, 2 * cols)).astype(dtype)[:, ::2]
    raise ValueError(layout)


LAYOUTS = ["c", "f", "ld", "ld-f", "step"]


@given(
    m=st.integers(0, 9),
    n=st.integers(0, 9),
    k=st.integers(0, 9),
    layouts=st.tuples(
        st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS), st.sampled_from(["c", "ld", "step"])
    ),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_gemm_accumulate_blas_and_fallback_agree_with_the_product(m, n, k, layouts, dtype, seed):
    rng = np.random.default_rng(seed)
    a = _operand(rng, m, k, layouts[0], dtype)
    b = _operand(rng, k, n, layouts[1], dtype)
    out = _operand(rng, m, n, layouts[2], dtype)
    want = out.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for use_blas in (True, False):
        got = out.copy() if layouts[2] == "c" else _same_layout_copy(out, layouts[2])
        result = gemm_accumulate(got, a, b, use_blas=use_blas)
        assert result is got and got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1, k))


def _same_layout_copy(out, layout):
    """A copy of ``out`` that is again a view of the same kind (rows of a wider array...)."""
    rows, cols = out.shape
    if layout == "ld":
        buf = np.zeros((rows, cols + 3), out.dtype)
        view = buf[:, 1 : cols + 1]
    else:  # "step"
        buf = np.zeros((rows, 2 * cols), out.dtype)
        view = buf[:, ::2]
    view[...] = out
    return view


needs_blas = pytest.mark.skipif(
    backend.blas_gemm_available() is None, reason="NumPy's BLAS offers no cblas GEMM here"
)


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "layouts", [("c", "c", "c"), ("f", "ld", "ld"), ("ld-f", "f", "c"), ("ld", "ld-f", "ld")]
)
def test_describable_operands_take_the_blas_path(dtype, layouts):
    rng = np.random.default_rng(0)
    a, b = _operand(rng, 5, 4, layouts[0], dtype), _operand(rng, 4, 6, layouts[1], dtype)
    out = _operand(rng, 5, 6, layouts[2], dtype)
    want = out + a @ b
    assert backend._blas_accumulate(out, a, b)  # done by the BLAS, not refused
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_blas", [True, False])
def test_gemm_accumulate_refuses_nothing_it_cannot_describe(use_blas):
    rng = np.random.default_rng(1)
    # out overlapping an operand: BLAS would read what it writes; the fallback is exact
    buf = rng.standard_normal((4, 8))
    out, a = buf[:, :4], buf[:, 4:]
    b = rng.standard_normal((4, 4))
    want = out + a @ b
    gemm_accumulate(out, a, b, use_blas=use_blas)
    np.testing.assert_allclose(out, want, rtol=1e-12)
    # mixed dtypes: NumPy's promotion, as out += a @ b
    out32 = np.zeros((4, 4), np.float32)
    gemm_accumulate(out32, a.astype(np.float32), b, use_blas=use_blas)
    np.testing.assert_allclose(out32, (a @ b).astype(np.float32), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        gemm_accumulate(np.zeros((4, 3)), a, b, use_blas=use_blas)


def test_gemm_accumulate_on_the_fake_device_is_the_fallback(fake):
    rng = np.random.default_rng(2)
    a, b, out = rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    want = out + a @ b
    d_out = to_device(out, "fake")
    got = gemm_accumulate(d_out, to_device(a, "fake").T.T, to_device(b, "fake"))
    assert got is d_out and isinstance(got, FakeArray)
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12)


# --- the buffer pool and the batch split ---------------------------------------


def test_buffer_pool_never_hands_out_an_array_still_held():
    pool = BufferPool()
    a = pool.empty(np, (4, 3), np.float32)
    b = pool.empty(np, (4, 3), np.float32)
    assert a is not b  # a is held by this test
    a_id = id(a)
    del a
    c = pool.empty(np, (4, 3), np.float32)
    assert id(c) == a_id  # freed: handed out again
    view = c[1:]  # a view holds its base
    del c
    d = pool.empty(np, (4, 3), np.float32)
    assert id(d) != a_id and view.base is not None
    assert pool.empty(np, (4, 3), np.float64).dtype == np.float64  # keyed by dtype too
    assert pool.nbytes > 0
    pool.release()
    assert pool.nbytes == 0


def test_network_results_survive_the_next_call():
    """A result (or a tap) held from one call is never overwritten by the next."""
    net = build_net()
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((2, 3, 2, 9, 8)).astype(np.float32)
    s1 = net.forward(x1, keep=True)
    acts1 = {k: v.copy() for k, v in net.activations.items()}
    held = dict(net.activations)
    d1 = net.backward(np.ones_like(s1))
    copies = s1.copy(), d1.copy()
    for _ in range(2):
        net.backward(np.ones_like(net.forward(x2)))
    np.testing.assert_array_equal(s1, copies[0])
    np.testing.assert_array_equal(d1, copies[1])
    for key, value in held.items():
        np.testing.assert_array_equal(value, acts1[key], err_msg=key)
    net.forget()
    assert net.pool.nbytes == 0 and all(layer.cache is None for layer in net)


def test_batch_map_pieces_cover_the_batch_in_order():
    pieces = batch_map(lambda a, b: (a, b), 7)
    assert pieces[0][0] == 0 and pieces[-1][1] == 7
    assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:], strict=False))
    with batch_threads(1):
        assert batch_map(lambda a, b: (a, b), 7) == [(0, 7)]
    with pytest.raises(TinyconvError, match="batch_threads"):
        with batch_threads(0):
            pass


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_the_batch_split_equals_the_whole_batch(dtype, tol):
    """Layers split over threads (when the BLAS's threads can be set) give the
    same forward, input gradient and parameter gradients as the whole batch in
    one thread; float32 differs only by the order of the sums."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 2, 9, 8)).astype(dtype)
    seed = rng.standard_normal((5, 5)).astype(dtype)
    split, whole = build_net().astype(dtype), build_net().astype(dtype)
    got = _run(split, x, seed, "cpu")
    with batch_threads(1):
        want = _run(whole, x, seed, "cpu")
    for key, value in want.items():
        scale = max(1.0, float(np.abs(value).max()))
        np.testing.assert_allclose(got[key], value, rtol=tol, atol=tol * scale, err_msg=key)


def test_training_skips_the_first_layers_input_gradient_and_changes_no_parameter_gradient():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 2, 9, 8))
    seed = rng.standard_normal((4, 5))
    nets = build_net().astype(np.float64), build_net().astype(np.float64)
    for net in nets:
        net.forward(x)
    assert nets[0].backward(seed, input_grad=False) is None  # the first layer is a Conv2d
    assert nets[1].backward(seed).shape == x.shape
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, atol=1e-14, err_msg=p.name)
