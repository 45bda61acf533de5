"""Shared test configuration: hypothesis profiles and the backends to run on."""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# CI: deterministic, no deadline (2 shared cores are slow and noisy), >= 50 examples.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def fake():
    """The CuPy stand-in of tests/fake_device.py, registered as device "fake" for one test.

    NumPy runs each batch whole meanwhile (``batch_threads(1)``), as the device
    does, so that host and device compute the same sums in the same order and
    tests may ask for equal bits.
    """
    from fake_device import FakeArray, fake_module

    from tinyconv.engine import backend

    backend.register_backend("fake", FakeArray, fake_module)
    with backend.batch_threads(1):
        yield fake_module
    backend._BACKENDS.pop("fake", None)


def pytest_terminal_summary(terminalreporter):
    """Print the worst relative error of every gradient check run (see gradcheck.py)."""
    gradcheck = sys.modules.get("gradcheck")  # only when some test imported it
    lines = gradcheck.summary_lines() if gradcheck is not None else []
    if lines:
        terminalreporter.section("gradient checks (central differences, float64)")
        for line in lines:
            terminalreporter.write_line(line)
