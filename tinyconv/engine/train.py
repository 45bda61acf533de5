"""Training with tinyconv's own backward passes: loss, SGD, the loop.

    loss       L = (1/N) Σ_n [log Σ_k exp S_nk − S_n,y_n]   (softmax cross-entropy
               on the unnormalised scores S), ∂L/∂S = (softmax(S) − onehot(y)) / N
    SGD        g = ∂L/∂θ + λθ;  v ← μv + g;  θ ← θ − η_t v   (PyTorch's SGD)
    schedule   η_t = η/2 · (1 + cos(π t/T)) over the T steps ("cosine"),
               η·γ^⌊epoch/k⌋ ("step") or η ("constant")

Everything random is drawn from generators derived from one seed and the
epoch number (the shuffle, the dropout masks, the flips), so a run is
reproducible bit for bit, and a run resumed from the checkpoint written after
epoch e continues exactly as the uninterrupted run: the checkpoint holds the
weights, the momentum buffers, the step count and the history (see
``save_checkpoint`` and ``load_training_state``).
"""

from __future__ import annotations

import base64
import math
import time

import numpy as np

from ..errors import DataError, OptionError, ShapeError, WeightsError
from ..progress import Progress
from .backend import get_array_module, to_device, to_numpy
from .functional import log_softmax, softmax
from .layers import Conv2d, Dropout, Linear
from .network import Sequential

__all__ = [
    "softmax_cross_entropy",
    "SGD",
    "learning_rate",
    "he_init",
    "evaluate",
    "fit",
    "save_checkpoint",
    "load_training_state",
    "SCHEDULES",
]

SCHEDULES = ("cosine", "step", "constant")


# ----------------------------------------------------------------------------
# the loss


def softmax_cross_entropy(scores, labels):
    """Mean softmax cross-entropy of unnormalised scores and its gradient.

    scores: (N, K) float, labels: (N,) ints in [0, K)
    -> (loss: Python float, dscores: (N, K) = (softmax(S) − onehot(y)) / N).
    Stable: ``functional.log_softmax`` takes each row's maximum out first.
    """
    xp = get_array_module(scores)
    if scores.ndim != 2:
        raise ShapeError(f"scores must have shape (N, K), got {tuple(scores.shape)}")
    n, k = scores.shape
    labels = xp.asarray(labels)
    if labels.shape != (n,):
        raise ShapeError(
            f"labels must have shape ({n},) to match scores {tuple(scores.shape)}, got {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise ShapeError(f"labels must be integers, got dtype {labels.dtype}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ShapeError(f"labels must lie in [0, {k}), got range [{int(labels.min())}, {int(labels.max())}]")
    rows = xp.arange(n)
    loss = -float(log_softmax(scores)[rows, labels].mean())  # the label's log P, averaged
    dscores = softmax(scores)
    dscores[rows, labels] -= 1
    return loss, dscores / n


# ----------------------------------------------------------------------------
# the optimiser and the learning-rate schedule


class SGD:
    """Stochastic gradient descent with momentum and weight decay, as PyTorch's
    ``torch.optim.SGD`` (dampening 0, not Nesterov)::

        g = ∂L/∂θ + λθ;   v ← μv + g  (v = g at the first step);   θ ← θ − η v

    The parameters are updated in place; ``state()`` / ``load_state()`` give
    the momentum buffers as host arrays keyed by parameter name.
    """

    def __init__(self, net: Sequential, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise OptionError(
                f"need lr > 0, 0 <= momentum < 1, weight_decay >= 0; got {lr}, {momentum}, {weight_decay}"
            )
        self.net, self.lr, self.momentum, self.weight_decay = (
            net,
            float(lr),
            float(momentum),
            float(weight_decay),
        )
        self.buffers: dict = {}  # parameter name -> v, created at the first step

    def step(self, lr: float | None = None):
        lr = self.lr if lr is None else float(lr)
        for name, value, grad in self.net.parameters():
            g = grad + self.weight_decay * value if self.weight_decay else grad
            if self.momentum:
                v = self.buffers.get(name)
                if v is None:
                    v = self.buffers[name] = g.copy()
                else:
                    v *= self.momentum
                    v += g
                g = v
            value -= lr * g

    def state(self) -> dict:
        return {name: to_numpy(v) for name, v in self.buffers.items()}

    def load_state(self, buffers: dict):
        params = {p.name: p.value for p in self.net.parameters()}
        self.buffers = {}
        for name, v in buffers.items():
            if name not in params or params[name].shape != v.shape:
                raise WeightsError(
                    f"momentum buffer {name!r} of shape {v.shape} fits no parameter of the network"
                )
            xp = get_array_module(params[name])
            self.buffers[name] = xp.asarray(v, dtype=params[name].dtype)


def learning_rate(
    schedule: str, lr: float, step: int, total_steps: int, epoch: int, step_size: int = 3, gamma: float = 0.1
) -> float:
    """The learning rate η_t at optimisation step ``step`` (0-based) of ``total_steps``.

    cosine: η/2 · (1 + cos(π·step/total_steps)); step: η·γ^⌊epoch/step_size⌋;
    constant: η.
    """
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * step / max(total_steps, 1)))
    if schedule == "step":
        return lr * gamma ** (epoch // step_size)
    if schedule == "constant":
        return lr
    raise OptionError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")


# ----------------------------------------------------------------------------
# initialisation (the architectures are in tinyconv.models.registry)


def he_init(net: Sequential, seed=None) -> Sequential:
    """He/Kaiming normal initialisation for ReLU networks (He et al. 2015).

    Every Conv2d / Linear weight ~ N(0, 2/fan_in) (fan_in = C·kh·kw or in),
    except the last layer, which feeds no ReLU: N(0, 1/fan_in). Biases 0.
    Drawn in float64 from ``seed``, then cast to each parameter's dtype.
    """
    rng = np.random.default_rng(seed)
    weighted = [layer for layer in net.layers if isinstance(layer, (Conv2d, Linear))]
    for i, layer in enumerate(weighted):
        w = layer.params["weight"]
        fan_in = int(np.prod(w.shape[1:]))
        gain = 1.0 if i == len(weighted) - 1 else 2.0
        xp = get_array_module(w)
        layer.params["weight"][...] = xp.asarray(
            rng.normal(0.0, math.sqrt(gain / fan_in), w.shape), dtype=w.dtype
        )
        if "bias" in layer.params:
            layer.params["bias"][...] = 0
    return net


# ----------------------------------------------------------------------------
# evaluation


def _batches(n: int, batch_size: int, order=None):
    order = np.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _check_data(x, y, what: str):
    if x.ndim != 4 or np.dtype(x.dtype).kind != "f":
        raise DataError(f"{what} images must be a float array (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if y.shape != (len(x),):
        raise DataError(f"{what}: {len(y)} labels for {len(x)} images")


def _evaluate(net: Sequential, x, y, batch_size: int = 500) -> tuple[float, float]:
    """(mean loss, accuracy) of ``net`` in inference mode on host arrays x, y."""
    was_training = any(layer.training for layer in net.layers)
    net.eval()
    device, dtype = net.device, net.dtype
    loss_sum, correct = 0.0, 0
    try:
        for idx in _batches(len(x), batch_size):
            scores = net.predict(to_device(np.asarray(x[idx], dtype=dtype), device))
            loss, _ = softmax_cross_entropy(scores, to_device(y[idx], device))
            loss_sum += loss * len(idx)
            correct += int((to_numpy(scores.argmax(axis=1)) == y[idx]).sum())
    finally:
        net.train(was_training)
    return loss_sum / len(x), correct / len(x)


def evaluate(net: Sequential, x, y, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``net`` (inference mode) on images x (N, C, H, W) and labels y (N,)."""
    x, y = to_numpy(x), to_numpy(y).astype(np.int64)
    _check_data(x, y, "evaluation")
    return _evaluate(net, x, y, batch_size)[1]


# ----------------------------------------------------------------------------
# checkpoints: the native format, with the training state in net.meta


def _encode(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "base64": base64.b64encode(a.tobytes()).decode("ascii"),
    }


def _decode(d: dict) -> np.ndarray:
    try:
        a = np.frombuffer(base64.b64decode(d["base64"]), dtype=np.dtype(d["dtype"]))
        return a.reshape(d["shape"]).copy()
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"checkpoint momentum buffer cannot be decoded ({exc})") from None


def save_checkpoint(net: Sequential, optimizer: SGD | None, path):
    """Write ``net`` in the native format with ``net.meta["training"]`` plus,
    under ``net.meta["training"]["optimizer"]``, the momentum buffers (exact
    bytes, base64 in the JSON) so ``fit(resume=...)`` continues bit for bit."""
    from ..models.native import save  # noqa: PLC0415

    meta = dict(net.meta)
    training = dict(meta.get("training", {}))
    if optimizer is not None:
        training["optimizer"] = {name: _encode(v) for name, v in optimizer.state().items()}
    meta["training"] = training
    saved, net.meta = net.meta, meta
    try:
        save(net, path)
    finally:
        net.meta = saved


def load_training_state(path) -> tuple[Sequential, dict]:
    """(net, momentum buffers) from a training checkpoint written by ``fit``,
    to resume training (``tinyconv.load_checkpoint`` is another thing: it reads
    a trained network from a PyTorch or safetensors file)."""
    from ..models.native import load  # noqa: PLC0415

    net = load(path)
    training = net.meta.get("training")
    if not isinstance(training, dict) or "epochs_done" not in training:
        raise WeightsError(f"{path} is not a training checkpoint: its meta has no training record")
    buffers = {name: _decode(d) for name, d in (training.pop("optimizer", None) or {}).items()}
    return net, buffers


# ----------------------------------------------------------------------------
# the training loop


def _epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """Generator for one purpose (0 shuffle, 1 flips, 10+i dropout layer i) of one epoch."""
    return np.random.default_rng([int(seed), int(epoch), int(stream)])


def fit(
    net: Sequential, x_train, y_train, x_val=None, y_val=None, *,
    epochs: int = 10, batch_size: int = 128, lr: float = 0.05, momentum: float = 0.9,
    weight_decay: float = 5e-4, schedule: str = "cosine", step_size: int = 3, gamma: float = 0.1,
    seed: int = 0, flip: bool = False, checkpoint=None, resume=None, init: bool = True,
    device: str | None = None, progress: bool = True, log=None, stop_after: int | None = None,
) -> Sequential:  # fmt: skip
    """Train ``net`` with mini-batch SGD on softmax cross-entropy.

    x_train: (N, C, H, W) float (host), y_train: (N,) ints; x_val, y_val the
    held-out set evaluated after each epoch. Each epoch shuffles with a
    generator seeded by (seed, epoch); ``flip`` mirrors a random half of each
    batch left-right. ``init`` re-initialises the weights (He normal, from
    ``seed``) before the first epoch. After every epoch the network is written
    to ``checkpoint`` (native format, history in ``net.meta["training"]``).
    ``resume``: a checkpoint path; training continues after its last epoch
    with its weights, momentum buffers and history, exactly as if never
    stopped (the other arguments must match the original run's).
    ``stop_after``: stop after that many epochs of this call (for tests of resume).
    Returns the trained network (the resumed one when ``resume`` is given),
    in inference mode.
    """
    x_train, y_train, x_val, y_val = _fit_data(x_train, y_train, x_val, y_val)
    if schedule not in SCHEDULES:
        raise OptionError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if batch_size < 1 or epochs < 1:
        raise OptionError(f"batch_size and epochs must be >= 1, got {batch_size}, {epochs}")
    log = log or (lambda msg: None)
    hyper = {
        "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr), "momentum": float(momentum),
        "weight_decay": float(weight_decay), "schedule": schedule, "step_size": int(step_size),
        "gamma": float(gamma), "seed": int(seed), "flip": bool(flip), "train_size": int(len(x_train)),
    }  # fmt: skip
    net, done, history, buffers = _start(net, resume, hyper, init, log)
    device = device or net.device
    net.to(device)
    net.check_input(to_device(np.asarray(x_train[:1], dtype=net.dtype), device))
    optimizer = SGD(net, lr, momentum, weight_decay)
    if buffers:
        optimizer.load_state(buffers)
    last = epochs if stop_after is None else min(epochs, done + int(stop_after))
    start_time = time.perf_counter()
    for epoch in range(done, last):
        record = _train_epoch(net, optimizer, x_train, y_train, epoch, hyper, device, progress)
        if x_val is not None:
            t0 = time.perf_counter()
            record["val_loss"], record["val_acc"] = _evaluate(net, x_val, y_val)
            record["eval_seconds"] = round(time.perf_counter() - t0, 2)
        history.append(record)
        log(_epoch_line(record))
        net.meta["training"] = {"epochs_done": epoch + 1, "hyper": hyper, "history": history}
        if checkpoint is not None:
            save_checkpoint(net, optimizer, checkpoint)
    net.meta.setdefault("training", {"epochs_done": done, "hyper": hyper, "history": history})
    net.meta["training"]["wall_seconds_this_call"] = round(time.perf_counter() - start_time, 1)
    return net.eval()


def _epoch_line(record: dict) -> str:
    held_out = " | held-out loss {val_loss:.4f} acc {val_acc:.4f}" if "val_acc" in record else ""
    line = "epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.4f}" + held_out
    return line.format(**record) + f" | {record['seconds']:.1f} s"


def _fit_data(x_train, y_train, x_val, y_val):
    """The training (and held-out) arrays on the host, labels int64, checked."""
    x_train = to_numpy(x_train)
    y_train = to_numpy(y_train).astype(np.int64)
    _check_data(x_train, y_train, "training")
    if x_val is not None:
        x_val, y_val = to_numpy(x_val), to_numpy(y_val).astype(np.int64)
        _check_data(x_val, y_val, "validation")
    return x_train, y_train, x_val, y_val


def _start(net, resume, hyper, init, log):
    """(net, epochs done, history, momentum buffers): a fresh start (He init
    when ``init``) or the state of the checkpoint ``resume``."""
    if resume is None:
        if init:
            he_init(net, hyper["seed"])
        return net, 0, [], None
    net, buffers = load_training_state(resume)
    done = int(net.meta["training"]["epochs_done"])
    old = net.meta["training"].get("hyper", {})
    changed = {k: (old.get(k), v) for k, v in hyper.items() if old.get(k) != v}
    if changed:
        log(f"warning: resuming with changed settings {changed}: the run will differ from a straight one")
    log(f"resuming from {resume} after epoch {done}")
    return net, done, list(net.meta["training"].get("history", [])), buffers


def _train_epoch(net, optimizer, x_train, y_train, epoch, hyper, device, progress) -> dict:
    """One epoch of SGD steps; returns its record (epoch, lr, loss, accuracy, seconds)."""
    seed, batch_size, epochs = hyper["seed"], hyper["batch_size"], hyper["epochs"]
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    net.train()
    order = _epoch_rng(seed, epoch, 0).permutation(len(x_train))
    flips = _epoch_rng(seed, epoch, 1)
    for i, layer in enumerate(layer for layer in net.layers if isinstance(layer, Dropout)):
        layer.rng = _epoch_rng(seed, epoch, 10 + i)
    t0 = time.perf_counter()
    loss_sum = correct = seen = 0
    with Progress(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", disable=not progress) as bar:
        for b, idx in enumerate(_batches(len(x_train), batch_size, order)):
            step = epoch * steps_per_epoch + b
            rate = learning_rate(hyper["schedule"], hyper["lr"], step, steps_per_epoch * epochs, epoch,
                                 hyper["step_size"], hyper["gamma"])  # fmt: skip
            xb = np.asarray(x_train[idx], dtype=net.dtype)
            if hyper["flip"]:
                mirror = flips.random(len(idx)) < 0.5
                xb[mirror] = xb[mirror][..., ::-1]
            yb = to_device(y_train[idx], device)
            scores, loss = _sgd_step(net, optimizer, to_device(xb, device), yb, rate)
            if not math.isfinite(loss):
                raise ValueError(
                    f"the loss became {loss} at epoch {epoch + 1}, step {b}: lower the learning rate"
                )
            loss_sum += loss * len(idx)
            correct += int((to_numpy(scores.argmax(axis=1)) == y_train[idx]).sum())
            seen += len(idx)
            bar.update(1, loss=loss_sum / seen, acc=correct / seen, lr=rate)
    return {"epoch": epoch + 1, "lr": rate, "train_loss": loss_sum / seen, "train_acc": correct / seen,
            "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip


def _sgd_step(net, optimizer, xb, yb, rate):
    """Forward, loss, backward, update: (scores, loss) of the batch before the
    update. A non-finite loss leaves the weights untouched."""
    scores = net.forward(xb)
    loss, dscores = softmax_cross_entropy(scores, yb)
    if math.isfinite(loss):
        net.zero_grad()
        net.backward(dscores, input_grad=False)  # no input gradient: the images are data
        optimizer.step(rate)
    return scores, loss
