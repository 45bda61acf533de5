"""Per-layer anatomy of a network on one input: shapes, sizes, costs, norms.

``layer_table(net, x)`` runs the forward pass layer by layer, then the
backward pass of the top class score S_c (or of ``target``) to the input,
timing every layer's share and recording

- the output shape of one sample, the parameter count and the analytic FLOPs
  (2 × multiply-adds, ``Layer.flops``) of the layer's forward pass;
- forward and backward milliseconds (median over ``reps`` runs, after one
  warm-up run; the device is synchronised before each clock reading);
- ‖a‖, the L2 norm of the layer's output a, and ‖∂S_c/∂a‖, the L2 norm of
  the gradient of the class score with respect to that output. The row
  "input" holds the image and w = ∂S_c/∂I, whose channel-max is the saliency.

The backward pass computes parameter gradients only with
``param_grads=True``; by default it does what saliency maps and class models
do (input gradient only). ``format_layer_table`` prints the table;
``tinyconv inspect`` is the command.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from ..engine.backend import get_array_module, synchronize
from ..engine.functional import one_hot
from ..errors import TargetError


def _norm(a) -> float:
    xp = get_array_module(a)
    return float(xp.sqrt(xp.sum(xp.square(a, dtype=np.float64))))


def _clock(x) -> float:
    synchronize(x)
    return time.perf_counter()


def _target(scores, target) -> int:
    """The class whose score is differentiated: ``target``, or the top class of the first image."""
    if scores.ndim != 2:
        raise TargetError(f"the network's output has shape {tuple(scores.shape)}, not (N, classes)")
    if target is None:
        return int(scores[0].argmax())
    c = int(target)
    if not 0 <= c < scores.shape[1]:
        raise TargetError(f"target class {target} is out of range for {scores.shape[1]} classes")
    return c


def _one_pass(layers, x, target, param_grads: bool, forward_ms: list, backward_ms: list):
    """Forward layer by layer, then the backward pass of S_c, appending each
    layer's milliseconds; -> (outputs, gradients w.r.t. them, ∂S_c/∂I, c)."""
    outputs, a = [], x
    t = _clock(a)
    for i, layer in enumerate(layers):
        a = layer.forward(a)
        now = _clock(a)
        forward_ms[i].append((now - t) * 1e3)
        outputs.append(a)
        t = now
    c = _target(a, target)
    g = one_hot(np.full(a.shape[0], c), a)  # ∂S_c/∂scores
    grads = [None] * len(layers)
    t = _clock(g)
    for i in reversed(range(len(layers))):
        grads[i] = g
        g = layers[i].backward(g, param_grads=param_grads)
        now = _clock(g)
        backward_ms[i].append((now - t) * 1e3)
        t = now
    return outputs, grads, g, c


def layer_table(net, x, target=None, reps: int = 3, param_grads: bool = False) -> list[dict]:
    """One dict per layer (after an "input" row) with the keys ``name``,
    ``type``, ``shape``, ``params``, ``flops``, ``forward_ms``,
    ``backward_ms``, ``activation_norm``, ``gradient_norm`` (and, in the
    "input" row, ``target``: the class whose score was differentiated).

    x:      (1, C, H, W) input (a batch is allowed: FLOPs and norms then
            cover the whole batch).
    target: class index whose score S_c is differentiated (default: the top
            class of the first image).
    """
    net.check_input(x)
    layers = list(net)
    forward_ms, backward_ms = [[] for _ in layers], [[] for _ in layers]
    for _ in range(1 + max(1, int(reps))):  # the first run is the warm-up
        outputs, grads, dx, c = _one_pass(layers, x, target, param_grads, forward_ms, backward_ms)
    shape = tuple(int(v) for v in x.shape[1:])
    rows = [{"name": "input", "type": "", "shape": shape, "params": 0, "flops": 0, "forward_ms": 0.0,
             "backward_ms": 0.0, "activation_norm": _norm(x), "gradient_norm": _norm(dx),
             "target": c}]  # fmt: skip
    for i, layer in enumerate(layers):
        rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "shape": tuple(int(v) for v in outputs[i].shape[1:]),
                "params": int(sum(int(np.prod(p.shape)) for p in layer.params.values())),
                "flops": int(layer.flops(shape)) * x.shape[0],
                "forward_ms": statistics.median(forward_ms[i][1:]),
                "backward_ms": statistics.median(backward_ms[i][1:]),
                "activation_norm": _norm(outputs[i]),
                "gradient_norm": _norm(grads[i]),
            }
        )
        shape = rows[-1]["shape"]
    return rows


def _count(n: int) -> str:
    """1234567 -> '1.23M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def format_layer_table(rows: list[dict]) -> str:
    """The rows of ``layer_table`` as fixed-width text, with a totals line."""
    head = (
        f"{'layer':<14} {'type':<17} {'output':<15} {'params':>7} {'FLOPs':>7} "
        f"{'fwd ms':>8} {'bwd ms':>8} {'‖a‖':>10} {'‖∂S/∂a‖':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(str(v) for v in r["shape"])
        lines.append(
            f"{r['name']:<14} {r['type']:<17} {shape:<15} {_count(r['params']):>7} {_count(r['flops']):>7} "
            f"{r['forward_ms']:>8.2f} {r['backward_ms']:>8.2f} "
            f"{r['activation_norm']:>10.4g} {r['gradient_norm']:>10.4g}"
        )
    fwd = sum(r["forward_ms"] for r in rows)
    bwd = sum(r["backward_ms"] for r in rows)
    flops = sum(r["flops"] for r in rows)
    params = sum(r["params"] for r in rows)
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<14} {'':<17} {'':<15} {_count(params):>7} {_count(flops):>7} {fwd:>8.2f} {bwd:>8.2f}"
    )
    if fwd > 0:
        target = rows[0].get("target")
        lines.append(f"forward: {flops / fwd / 1e6:.1f} GFLOP/s; gradients of the score of class {target}")
    return "\n".join(lines)


__all__ = ["layer_table", "format_layer_table"]
