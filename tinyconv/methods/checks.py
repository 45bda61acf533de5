"""Checks the methods share: scores must be finite.

A network can be finite in every weight and still overflow: one weight of
3e38 makes its layer's float32 output infinite, and the next layer's NaN.
Every gradient of such scores is NaN, and the maps drawn from it are black;
so the methods refuse non-finite scores. The check is one ``isfinite`` over
the (N, K) scores; only when it fails is the forward pass run again, keeping
every activation, to name the first layer whose output is not finite.
"""

from __future__ import annotations

from ..engine.backend import get_array_module
from ..errors import NumericalError

__all__ = ["check_scores", "first_nonfinite_layer"]


def first_nonfinite_layer(net, x):
    """(name, type name) of the first layer whose output on ``x`` holds NaN or
    inf, or None when every output is finite."""
    xp = get_array_module(x)
    net.forward(x, keep=True)
    try:
        for layer in net.layers:
            out = net.activations.get(layer.name)
            if out is not None and not bool(xp.isfinite(out).all()):
                return layer.name, type(layer).__name__
    finally:
        net.activations = {}
    return None


def check_scores(net, x, scores) -> None:
    """Raise a NumericalError naming the layer where non-finite values first
    appear when ``scores`` (the network's output on ``x``) are not all finite."""
    xp = get_array_module(scores)
    if bool(xp.isfinite(scores).all()):
        return
    found = first_nonfinite_layer(net, x)
    where = f"layer {found[0]!r} ({found[1]}) is the first whose output" if found else "the output"
    raise NumericalError(
        f"the network's class scores are not finite: {where} holds NaN or infinite values "
        f"(weights too large for {scores.dtype}? the input is finite)"
    )
