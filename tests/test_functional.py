"""tinyconv.engine.functional: the readable pairs a learner reads, the scores'
softmax / log-softmax / log-sum-exp and the one-hot seed.

The pairs are checked against central finite differences in float64 directly
(the layer classes, which run them or the tiled convolution, are checked in
test_layers.py; the tiled convolution against these pairs in test_fastconv.py).
"""

import numpy as np
import pytest
from gradcheck import assert_gradients_close, numerical_gradient
from hypothesis import given
from hypothesis import strategies as st

from tinyconv.engine import functional as F


@given(
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 1), st.integers(0, 1)),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_reference_convolution_pair_against_finite_differences(kernel, stride, padding, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 5, 4))
    w = rng.standard_normal((3, 2, *kernel))
    b = rng.standard_normal(3) if bias else None
    y, cache = F.conv2d_forward(x, w, b, stride, padding)
    r = rng.standard_normal(y.shape)
    dx, dw, db = F.conv2d_backward(r, cache)

    def loss():
        return float(np.vdot(F.conv2d_forward(x, w, b, stride, padding)[0], r))

    assert_gradients_close(dx, numerical_gradient(loss, x), "functional conv input")
    assert_gradients_close(dw, numerical_gradient(loss, w), "functional conv weight")
    if bias:
        assert_gradients_close(db, numerical_gradient(loss, b), "functional conv bias")
    assert F.conv2d_backward(r, cache, param_grads=False)[1:] == (None, None)


def test_every_pair_reads_its_cache_by_name():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    caches = {
        "conv": F.conv2d_forward(x, rng.standard_normal((4, 3, 3, 3)), None, 1, 1)[1],
        "relu": F.relu_forward(x)[1],
        "maxpool": F.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0))[1],
        "avgpool": F.avgpool2d_forward(x, (2, 2), (2, 2), (0, 0))[1],
        "adaptive": F.adaptive_avgpool2d_forward(x, (3, 2))[1],
        "flatten": F.flatten_forward(x)[1],
        "dropout": F.dropout_forward(x, 0.5, np.random.default_rng(1))[1],
    }
    for name, cache in caches.items():
        assert hasattr(cache, "_fields") and cache._fields, name  # a named tuple
    assert caches["conv"].x_shape == caches["maxpool"].x_shape == caches["flatten"].x_shape == x.shape
    assert caches["relu"].mask.dtype == bool and caches["maxpool"].switches.dtype == np.uint8


def test_maxpool_backward_is_unpool_with_the_recorded_switches():
    x = np.random.default_rng(2).permutation(36).reshape(1, 1, 6, 6).astype(float)
    y, cache = F.maxpool2d_forward(x, (3, 3), (1, 1), (0, 0))
    g = np.random.default_rng(3).standard_normal(y.shape)
    want = F.unpool(g, cache.switches, x.shape, (3, 3), (1, 1), (0, 0))
    np.testing.assert_array_equal(F.maxpool2d_backward(g, cache), want)


@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 6)), scale=st.sampled_from([1.0, 30.0, 800.0]),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_softmax_log_softmax_and_logsumexp(shape, scale, seed):
    s = np.random.default_rng(seed).standard_normal(shape) * scale  # large scores: exp would overflow
    top = s.max(axis=1, keepdims=True)
    want_lse = top[:, 0] + np.log(np.sum(np.exp(s - top), axis=1))
    np.testing.assert_allclose(F.logsumexp(s, axis=1), want_lse, rtol=1e-13)
    np.testing.assert_allclose(F.logsumexp(s, axis=1, keepdims=True), want_lse[:, None], rtol=1e-13)
    p = F.softmax(s)
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1.0, rtol=1e-13)
    np.testing.assert_allclose(F.log_softmax(s), s - want_lse[:, None], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(F.log_softmax(s)), p, rtol=1e-12, atol=1e-300)
    if s.shape[1] == 3 and scale == 1.0:  # against scipy, an independent implementation
        special = pytest.importorskip("scipy.special")
        np.testing.assert_allclose(p, special.softmax(s, axis=1), rtol=1e-13)
        np.testing.assert_allclose(F.logsumexp(s, axis=1), special.logsumexp(s, axis=1), rtol=1e-13)


def test_one_hot_takes_the_shape_dtype_and_device_of_its_template():
    like = np.empty((3, 4), dtype=np.float32)
    seed = F.one_hot(np.array([2, 0, 3]), like)
    assert seed.dtype == np.float32 and seed.shape == (3, 4)
    np.testing.assert_array_equal(seed, np.eye(4, dtype=np.float32)[[2, 0, 3]])


def test_one_tuple_of_rules_for_the_engine_and_the_deconvnet():
    from tinyconv.engine import layers, network
    from tinyconv.methods import deconvnet

    assert F.RULES == ("gradient", "deconvnet", "guided")
    assert layers.RULES is F.RULES and network.RULES is F.RULES and deconvnet.RECTIFIERS is F.RULES
