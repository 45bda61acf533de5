"""tinyconv.tools.bench: the report's structure, the equality of the work timed on
both sides, the FLOP count. (The tiled convolution the benchmark drives is
tested in test_fastconv.py.)

Timings are never asserted: the machine is shared and noisy.
"""

import json

import numpy as np
import pytest

from tinyconv.cli import main as cli_main
from tinyconv.engine.backend import synchronize
from tinyconv.engine.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.engine.network import Sequential
from tinyconv.tools import bench

SIDE_FIELDS = {"median_s", "min_s", "times_s", "gflops", "peak_rss_mb", "work_rss_mb"}
ITEM_FIELDS = {"name", "arch", "work", "batch", "device", "reps", "flops", "tinyconv", "torch", "ratio"}
META_FIELDS = {"tinyconv", "numpy", "torch", "threads", "devices", "quick", "load_average", "command"}


def check_report(report, names, with_torch):
    assert META_FIELDS <= set(report["meta"])
    assert report["gemm_peak_gflops"] > 0
    assert [r["name"] for r in report["items"]] == names
    for r in report["items"]:
        assert ITEM_FIELDS <= set(r)
        assert r["flops"] > 0
        sides = ["tinyconv", "torch"] if with_torch else ["tinyconv"]
        for side in sides:
            s = r[side]
            assert SIDE_FIELDS <= set(s)
            assert len(s["times_s"]) == r["reps"]
            assert 0 < s["min_s"] <= s["median_s"]
            assert s["gflops"] == pytest.approx(r["flops"] / s["median_s"] / 1e9)
            assert s["peak_rss_mb"] > 0
        if with_torch:
            assert r["ratio"] == pytest.approx(r["tinyconv"]["median_s"] / r["torch"]["median_s"])
        else:
            assert r["torch"] is None and r["ratio"] is None


@pytest.mark.slow
def test_one_item_report_has_every_field(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--items", "mnist-cnn forward b1", "--reps", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    check_report(report, ["mnist-cnn forward b1"], with_torch=bench.has_torch())
    table = capsys.readouterr().out
    assert "mnist-cnn forward b1" in table and "GEMM peak" in table


def test_no_torch_no_memory(tmp_path):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--items", "mnist train", "--reps", "1", "--no-torch", "--no-memory",
                     "--json", str(out)]) == 0  # fmt: skip
    (item,) = json.loads(out.read_text())["items"]
    assert item["name"] == "mnist-cnn train b128" and item["torch"] is None
    assert item["tinyconv"]["peak_rss_mb"] is None


@pytest.mark.slow
def test_quick_completes_with_every_field(tmp_path):
    out = tmp_path / "quick.json"
    assert bench.main(["--quick", "--reps", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["meta"]["quick"] is True
    check_report(report, [i.name for i in bench.QUICK], with_torch=bench.has_torch())


def test_unknown_item_is_refused():
    with pytest.raises(SystemExit, match="no item matches"):
        bench.select("resnet")


def test_select_matches_every_word():
    assert [i.name for i in bench.select("vgg16 saliency")] == ["vgg16 saliency b1", "vgg16 saliency b8"]


def small_net():
    return Sequential(
        [Conv2d(1, 3, 3, padding=1, seed=1), ReLU(), MaxPool2d(2), Flatten(), Linear(3 * 2 * 2, 5, seed=2)],
        input_shape=(1, 4, 4),
    )


def test_forward_flops_by_hand():
    # conv: 3 filters x 16 pixels x 9 taps, one multiply-add (2 FLOPs) each; linear 12 -> 5
    assert bench.forward_flops(small_net(), 1) == 2 * 3 * 16 * 9 + 2 * 12 * 5
    assert bench.forward_flops(small_net(), 7) == 7 * bench.forward_flops(small_net(), 1)


def test_synchronize_returns_its_argument():
    x = np.ones(3)
    assert synchronize(x) is x
    assert synchronize() is None


@pytest.mark.parametrize("work", ["forward", "saliency", "classviz"])
def test_both_sides_do_the_same_work(work):
    """The PyTorch twin gets the same weights and input: the arrays each
    side's timed step produces agree (scores, or ∂S_c/∂I)."""
    pytest.importorskip("torch")
    net = bench.build_net("mnist-cnn")
    item = bench.Item("mnist-cnn", work, 3, 1)
    ours = bench.tinyconv_work(item, net)()
    theirs = bench.torch_work(item, bench.torch_twin(net), bench._input(net, 3))()
    theirs = theirs.detach().numpy()
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * scale)


def test_training_steps_agree_with_pytorch_sgd():
    """Two training steps on both sides leave the same weights (PyTorch's
    momentum SGD, mean softmax cross-entropy)."""
    pytest.importorskip("torch")
    net = bench.build_net("mnist-cnn")
    saved = [p.value.copy() for p in net.parameters()]
    twin = bench.torch_twin(net)
    item = bench.Item("mnist-cnn", "train", 16, 1)
    try:
        ours, theirs = bench.tinyconv_work(item, net), bench.torch_work(item, twin, bench._input(net, 16))
        for _ in range(2):
            ours(), theirs()
        for p, q in zip(net.parameters(), twin.parameters(), strict=True):
            np.testing.assert_allclose(p.value, q.detach().numpy(), rtol=1e-4, atol=1e-6)
    finally:  # the network is cached by the benchmark: put its weights back
        for p, value in zip(net.parameters(), saved, strict=True):
            p.value[...] = value
        net.zero_grad()


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9), dtype=np.float32)
    net = small_net()
    conv = Conv2d(3, 1, 3, padding=1, seed=0)
    y = conv.forward(x)
    assert y.dtype == np.float32 and conv.backward(np.ones_like(y)).dtype == np.float32
    assert net.forward(x[:, :1, :4, :4]).dtype == np.float32


def test_time_pair_settles_before_every_block_and_alternates(monkeypatch):
    """The protocol of bench.time_pair: the sides take turns in blocks, each
    block (and each warm-up call) right after a settle pause, every side
    timed ``reps`` times in at least ``min_blocks`` blocks."""
    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: events.append(("pause", s)))
    fns = {side: (lambda side=side: events.append(("run", side)), None) for side in ("tinyconv", "torch")}
    times = bench.time_pair(fns, reps=10, warmup=1, settle=0.25, block_s=1.0, min_blocks=4)
    assert {side: len(t) for side, t in times.items()} == {"tinyconv": 10, "torch": 10}
    runs = [e for e in events if e[0] == "run"]
    assert len(runs) == 2 * (10 + 1)
    # every run follows a pause or a run of its own side: never the other side's work directly
    for before, after in zip(events, events[1:], strict=False):
        if after[0] == "run":
            assert before == ("pause", 0.25) or before == after
    blocks = [e for e in events if e[0] == "pause"]
    assert len(blocks) >= 2 * (4 + 1)  # >= min_blocks per side, plus the warm-ups
    sides = [a[1] for b, a in zip(events, events[1:], strict=False) if b[0] == "pause"]
    assert sides[2:] == ["tinyconv", "torch"] * (len(sides[2:]) // 2)  # the turns alternate
