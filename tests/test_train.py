"""Training: the loss and its gradient, SGD, reproducibility, resume, and
agreement with PyTorch's autograd + optimiser in float64."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyconv as tc
from tinyconv import models
from tinyconv.cli import train as train_command
from tinyconv.engine import train
from tinyconv.engine.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.errors import ShapeError

BACKENDS = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def need(device):
    if device == "cuda" and not tc.cuda_available():
        pytest.skip("no GPU: CuPy with a visible device is needed")


def tiny_net(dropout=0.0, classes=3, dtype=np.float64):
    """conv(1->4, 3x3, pad 1)-ReLU-pool2 on 8x8 inputs, fc 64 -> 8 -> classes."""
    layers = [
        Conv2d(1, 4, 3, padding=1, seed=1), ReLU(), MaxPool2d(2),
        Flatten(), Linear(64, 8, seed=2), ReLU(),
    ]  # fmt: skip
    if dropout:
        layers.append(Dropout(dropout))
    layers.append(Linear(8, classes, seed=3))
    return tc.Sequential(layers, input_shape=(1, 8, 8)).astype(dtype)


def toy_data(rng, n=64, classes=3, dtype=np.float64):
    """Images whose class is a bright quadrant, plus noise."""
    y = np.arange(n) % classes
    x = 0.3 * rng.standard_normal((n, 1, 8, 8))
    for c in range(classes):
        r, q = divmod(c, 2)
        x[y == c, 0, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 1.5
    return x.astype(dtype), y


def naive_loss(scores, labels):
    """Cross-entropy written the textbook way (no shift), in float64."""
    p = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    return -np.mean(np.log(p[np.arange(len(labels)), labels]))


# --- the loss ---


@given(n=st.integers(1, 6), k=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_loss_gradient_matches_finite_differences(n, k, seed):
    rng = np.random.default_rng(seed)
    scores = 3 * rng.standard_normal((n, k))
    labels = rng.integers(0, k, n)
    loss, grad = train.softmax_cross_entropy(scores, labels)
    assert loss == pytest.approx(naive_loss(scores, labels), rel=1e-12)
    eps, numeric = 1e-6, np.zeros_like(scores)
    for idx in np.ndindex(*scores.shape):
        plus, minus = scores.copy(), scores.copy()
        plus[idx] += eps
        minus[idx] -= eps
        up, down = train.softmax_cross_entropy(plus, labels)[0], train.softmax_cross_entropy(minus, labels)[0]
        numeric[idx] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-12)  # softmax - onehot sums to 0 per row


def test_loss_is_stable_for_huge_scores():
    scores = np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]])
    loss, grad = train.softmax_cross_entropy(scores, np.array([1, 0]))
    assert math.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx((1e4 + math.log(2)) / 2, rel=1e-12)
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0], [-0.25, 0.25, 0]], atol=1e-12)


def test_loss_rejects_bad_labels():
    scores = np.zeros((2, 3))
    with pytest.raises(ShapeError, match=r"\[0, 3\)"):
        train.softmax_cross_entropy(scores, np.array([0, 3]))
    with pytest.raises(ShapeError, match="shape"):
        train.softmax_cross_entropy(scores, np.array([0, 1, 2]))
    with pytest.raises(ShapeError, match="integers"):
        train.softmax_cross_entropy(scores, np.array([0.0, 1.0]))


# --- SGD, schedule, init ---


def test_one_sgd_step_lowers_the_loss_on_its_batch(rng):
    net = tiny_net()
    x, y = toy_data(rng, 16)
    before, grad = train.softmax_cross_entropy(net.forward(x), y)
    net.zero_grad()
    net.backward(grad)
    train.SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-4).step()
    after, _ = train.softmax_cross_entropy(net.forward(x), y)
    assert after < before


def test_sgd_update_formula():
    net = tc.Sequential([Linear(3, 2, seed=0)]).astype(np.float64)
    w0 = net[0].params["weight"].copy()
    g1, g2 = np.full((2, 3), 0.5), np.full((2, 3), -1.0)
    opt = train.SGD(net, lr=0.1, momentum=0.9, weight_decay=0.01)
    net[0].grads["weight"][...] = g1
    opt.step()
    v1 = g1 + 0.01 * w0
    w1 = w0 - 0.1 * v1
    np.testing.assert_allclose(net[0].params["weight"], w1, rtol=1e-14)
    net[0].grads["weight"][...] = g2
    opt.step(lr=0.2)
    v2 = 0.9 * v1 + g2 + 0.01 * w1
    np.testing.assert_allclose(net[0].params["weight"], w1 - 0.2 * v2, rtol=1e-14)


def test_learning_rate_schedules():
    assert train.learning_rate("cosine", 0.1, 0, 100, 0) == pytest.approx(0.1)
    assert train.learning_rate("cosine", 0.1, 50, 100, 0) == pytest.approx(0.05)
    assert train.learning_rate("cosine", 0.1, 100, 100, 0) == pytest.approx(0.0, abs=1e-15)
    assert train.learning_rate("step", 0.1, 7, 100, 5, step_size=2, gamma=0.5) == pytest.approx(0.1 / 4)
    assert train.learning_rate("constant", 0.1, 99, 100, 9) == 0.1
    with pytest.raises(ValueError, match="schedule"):
        train.learning_rate("linear", 0.1, 0, 1, 0)


def test_he_init_statistics():
    net = tc.Sequential([Linear(2000, 400), ReLU(), Linear(400, 300)])
    train.he_init(net, seed=0)
    hidden, last = net[0].params["weight"], net[2].params["weight"]
    assert hidden.dtype == np.float32
    assert hidden.std() == pytest.approx(math.sqrt(2 / 2000), rel=0.01)
    assert last.std() == pytest.approx(math.sqrt(1 / 400), rel=0.01)  # feeds no ReLU
    assert abs(hidden.mean()) < 1e-3 and not net[0].params["bias"].any()


# --- the loop ---


def test_small_net_overfits_64_samples(rng):
    x, y = toy_data(rng, 64)
    x += 0.5 * rng.standard_normal(x.shape)  # noisy enough that memorising is needed
    net = train.fit(tiny_net(), x, y, epochs=40, batch_size=16, lr=0.05, schedule="constant",
                    weight_decay=0.0, seed=3, progress=False)  # fmt: skip
    assert train.evaluate(net, x, y) == 1.0
    history = net.meta["training"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 10


def test_same_seed_gives_bit_identical_weights(rng):
    x, y = toy_data(rng, 40)
    runs = [
        train.fit(tiny_net(dropout=0.5), x, y, epochs=2, batch_size=8, seed=7, flip=True, progress=False)
        for _ in range(2)
    ]
    other = train.fit(tiny_net(dropout=0.5), x, y, epochs=2, batch_size=8, seed=8, flip=True, progress=False)
    for a, b, c in zip(runs[0].parameters(), runs[1].parameters(), other.parameters(), strict=True):
        assert np.array_equal(a.value, b.value), a.name
        assert not np.array_equal(a.value, c.value), a.name


def test_resume_continues_exactly_like_a_straight_run(tmp_path, rng):
    x, y = toy_data(rng, 48)
    xv, yv = toy_data(rng, 12)
    kwargs = dict(epochs=3, batch_size=8, lr=0.05, seed=5, flip=True, progress=False, weight_decay=1e-3)
    straight = train.fit(tiny_net(dropout=0.3), x, y, xv, yv, **kwargs)
    ckpt = tmp_path / "run.ckpt.npz"
    first = train.fit(tiny_net(dropout=0.3), x, y, xv, yv, checkpoint=ckpt, stop_after=2, **kwargs)
    assert first.meta["training"]["epochs_done"] == 2
    # the checkpoint is a native file: tinyconv.models.native reads it, history included
    from tinyconv.models.native import load

    saved = load(ckpt)
    assert [h["epoch"] for h in saved.meta["training"]["history"]] == [1, 2]
    assert set(saved.meta["training"]["optimizer"]) == {p.name for p in saved.parameters()}
    resumed = train.fit(tiny_net(dropout=0.3), x, y, xv, yv, resume=ckpt, checkpoint=ckpt, **kwargs)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert np.array_equal(a.value, b.value), a.name

    def timeless(net):
        return [{k: v for k, v in h.items() if "seconds" not in k} for h in net.meta["training"]["history"]]

    assert timeless(resumed) == timeless(straight)
    assert load(ckpt).meta["training"]["epochs_done"] == 3


def test_evaluate_counts_correct_argmax(rng):
    net = tiny_net()
    x, y = toy_data(rng, 30)
    expected = np.mean(net.forward(x).argmax(axis=1) == y)
    assert train.evaluate(net, x, y, batch_size=7) == pytest.approx(expected)


def test_fit_rejects_mismatched_data(rng):
    x, y = toy_data(rng, 10)
    with pytest.raises(tc.DataError, match="9 labels for 10 images"):
        train.fit(tiny_net(), x, y[:9], epochs=1, progress=False)


def test_architectures_take_28x28():
    for name in train_command.grey_archs():
        net = train_command.build_net(name, list("abcdefghij"))
        assert net.output_shapes((1, 28, 28))[-1] == (10,)


@pytest.fixture
def fake_device(fake):
    """The device name of conftest's ``fake`` stand-in."""
    return "fake"


@pytest.mark.parametrize("device", BACKENDS)
def test_training_runs_on_every_backend(device, rng):
    need(device)
    x, y = toy_data(rng, 32, dtype=np.float32)
    net = train.fit(tiny_net(dropout=0.2, dtype=np.float32), x, y, x, y, epochs=3, batch_size=8, seed=0,
                    progress=False, device=device)  # fmt: skip
    assert net.device == device
    history = net.meta["training"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_training_on_a_device_equals_training_on_the_host(fake_device, rng):
    """Every array of the loop stays on the (fake) device and the result is the CPU run's."""
    x, y = toy_data(rng, 24)
    host = train.fit(tiny_net(dropout=0.2), x, y, x, y, epochs=2, batch_size=8, seed=0, flip=True,
                     progress=False)  # fmt: skip
    dev = train.fit(tiny_net(dropout=0.2), x, y, x, y, epochs=2, batch_size=8, seed=0, flip=True,
                    progress=False, device=fake_device)  # fmt: skip
    assert dev.device == "fake"
    assert train.evaluate(dev, x, y) == train.evaluate(host, x, y)
    for a, b in zip(host.parameters(), dev.parameters(), strict=True):
        np.testing.assert_allclose(tc.to_numpy(b.value), a.value, rtol=1e-12, atol=1e-14)


# --- against PyTorch ---


def test_training_matches_pytorch_in_float64(rng):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    x, y = toy_data(rng, 48)
    x += 0.3 * rng.standard_normal(x.shape)
    net = tiny_net()
    train.he_init(net, seed=11)
    ref = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3),
    ).double()  # fmt: skip
    initial = [p.value.copy() for p in net.parameters()]
    with torch.no_grad():
        for p, value in zip(ref.parameters(), initial, strict=True):
            p.copy_(torch.from_numpy(value))
    epochs, batch, lr, momentum, decay, seed = 2, 8, 0.05, 0.9, 1e-3, 4
    net = train.fit(net, x, y, epochs=epochs, batch_size=batch, lr=lr, momentum=momentum,
                    weight_decay=decay, schedule="cosine", seed=seed, init=False, progress=False)  # fmt: skip

    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=momentum, weight_decay=decay)
    steps = math.ceil(len(x) / batch)
    for epoch in range(epochs):
        order = train._epoch_rng(seed, epoch, 0).permutation(len(x))  # the same data order
        for b in range(steps):
            idx = order[b * batch : (b + 1) * batch]
            for group in opt.param_groups:
                group["lr"] = train.learning_rate("cosine", lr, epoch * steps + b, epochs * steps, epoch)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(ref(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            loss.backward()
            opt.step()
    for ours, theirs, start in zip(net.parameters(), ref.parameters(), initial, strict=True):
        theirs = theirs.detach().numpy()
        assert np.abs(theirs - start).max() > 1e-3, ours.name  # training moved it
        atol = 1e-12 * np.abs(theirs).max()
        np.testing.assert_allclose(ours.value, theirs, rtol=1e-8, atol=atol, err_msg=ours.name)


# --- the command line ---


def write_idx(path, array):
    """IDX with uint8 elements: 00 00 08 <ndim>, big-endian uint32 sizes, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_train_command_writes_a_native_network_and_evaluates_it(tmp_path, rng, capsys):
    from tinyconv.cli import main
    from tinyconv.models.native import load

    for split, n in (("train", 40), ("t10k", 20)):
        labels = np.arange(n) % 10
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
    out = tmp_path / "net.npz"
    args = ["train", "--data", str(tmp_path), "--arch", "small-cnn", "--epochs", "2", "--batch-size", "16",
            "--seed", "1", "-o", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    net = load(out)
    assert net.classes[0] == "T-shirt/top" and net.input_shape == (1, 28, 28)
    assert net.meta["training"]["epochs_done"] == 2 and "optimizer" not in net.meta["training"]
    command = net.meta["training_command"]
    assert command.startswith("tinyconv train --dataset fashion-mnist") and net.meta["seed"] == 1
    assert "--arch small-cnn" in command and "--epochs 2" in command and "--batch-size 16" in command
    assert 0 < net.std[0] and net.meta["test_images"] == 20
    assert (tmp_path / "net.ckpt.npz").is_file()
    capsys.readouterr()
    expected = f"tinyconv train --evaluate {out} --dataset fashion-mnist --data {tmp_path}"
    assert net.meta["evaluation_command"] == expected
    assert main(net.meta["evaluation_command"].split()[1:]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {net.meta['test_accuracy']:.4f}" in printed and "/20)" in printed


def test_train_command_fine_tunes_from_weights(tmp_path, rng):
    from tinyconv.cli import main
    from tinyconv.models.native import load

    for split, n in (("train", 32), ("t10k", 10)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    start = models.build("small-cnn", classes=list("0123456789"))
    train.he_init(start, seed=0)
    start.mean, start.std = (0.5,), (0.25,)
    start.save(tmp_path / "start.npz")
    out = tmp_path / "tuned.npz"
    common = ["--data", str(tmp_path), "--epochs", "1", "--batch-size", "16", "--quiet"]
    common += ["--weights", str(tmp_path / "start.npz"), "--lr", "1e-9", "-o", str(out)]
    assert main(["train", *common]) == 0
    tuned = load(out)
    assert tuned.std == (0.25,) and tuned.classes[9] == "Ankle boot"
    for a, b in zip(start.parameters(), tuned.parameters(), strict=True):  # started from, not re-initialised
        np.testing.assert_allclose(b.value, a.value, atol=1e-6)
    assert "--weights" in tuned.meta["training_command"]


def test_train_command_reports_missing_data(tmp_path, capsys):
    from tinyconv.cli import main

    assert main(["train", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "x.npz")]) == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_training_resume_has_its_own_name_apart_from_tc_load_checkpoint(tmp_path, rng):
    """engine.train.load_training_state reads fit's checkpoints; tc.load_checkpoint
    (PyTorch / safetensors files) is another function."""
    x, y = toy_data(rng, 16)
    ckpt = tmp_path / "run.ckpt.npz"
    train.fit(tiny_net(), x, y, epochs=1, batch_size=8, checkpoint=ckpt, progress=False)
    net, buffers = train.load_training_state(ckpt)
    assert net.meta["training"]["epochs_done"] == 1 and set(buffers) == {p.name for p in net.parameters()}
    assert not hasattr(train, "load_checkpoint") and tc.load_checkpoint is not train.load_training_state
