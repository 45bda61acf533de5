"""tinyconv.tools.layer_table and ``tinyconv inspect``: every column against an
independent computation (Sequential's own passes, parameter counts, the
analytic FLOPs); times are only checked to be there."""

import json

import numpy as np
import pytest
from PIL import Image

from tinyconv.cli import main
from tinyconv.engine.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tinyconv.engine.network import Sequential
from tinyconv.errors import TargetError
from tinyconv.tools.layer_table import format_layer_table, layer_table


def small_net():
    return Sequential(
        [
            ("conv", Conv2d(2, 4, 3, padding=1, seed=1)),
            ("relu", ReLU()),
            ("pool", MaxPool2d(2)),
            ("flat", Flatten()),
            ("fc", Linear(4 * 3 * 3, 5, seed=2)),
        ],
        input_shape=(2, 6, 6),
    )


@pytest.mark.parametrize("target", [None, 3])
def test_rows_match_the_network(target):
    net = small_net()
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6))
    rows = layer_table(net, x, target=target, reps=2)
    assert [r["name"] for r in rows] == ["input", "conv", "relu", "pool", "flat", "fc"]
    assert [r["shape"] for r in rows[1:]] == net.output_shapes((2, 6, 6))
    assert [r["params"] for r in rows] == [0, 4 * 2 * 9 + 4, 0, 0, 0, 36 * 5 + 5]
    assert rows[1]["flops"] == 2 * 4 * 36 * 2 * 9 and rows[5]["flops"] == 2 * 36 * 5
    assert all(r["forward_ms"] >= 0 and r["backward_ms"] >= 0 for r in rows)

    # activations and gradients: recompute with Sequential's own passes
    scores = net.forward(x, keep=True)
    c = int(scores[0].argmax()) if target is None else target
    assert rows[0]["target"] == c
    seed = np.zeros_like(scores)
    seed[0, c] = 1
    dx = net.backward(seed, param_grads=False, keep=True)
    for r in rows[1:]:
        assert r["activation_norm"] == pytest.approx(np.linalg.norm(net.activations[r["name"]]), rel=1e-12)
        assert r["gradient_norm"] == pytest.approx(np.linalg.norm(net.gradients[r["name"]]), rel=1e-12)
    assert rows[0]["activation_norm"] == pytest.approx(np.linalg.norm(x), rel=1e-12)
    assert rows[0]["gradient_norm"] == pytest.approx(np.linalg.norm(dx), rel=1e-12)
    assert rows[-1]["gradient_norm"] == pytest.approx(1.0)  # ∂S_c/∂scores is one-hot


def test_param_grads_are_filled_only_when_asked():
    net = small_net()
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 6))
    layer_table(net, x, reps=1)
    assert all(not g.any() for _, _, g in net.parameters())
    layer_table(net, x, reps=1, param_grads=True)
    assert all(g.any() for _, _, g in net.parameters())


def test_bad_target_is_a_target_error():
    net = small_net()
    with pytest.raises(TargetError, match="out of range"):
        layer_table(net, np.zeros((1, 2, 6, 6)), target=5)


def test_table_text_has_a_line_per_layer_and_totals():
    net = small_net()
    rows = layer_table(net, np.ones((1, 2, 6, 6)), reps=1)
    text = format_layer_table(rows)
    for name in ("input", "conv", "relu", "pool", "flat", "fc", "total"):
        assert any(line.startswith(name) for line in text.splitlines())


def test_cli_inspect_an_image_with_the_bundled_network(tmp_path, capsys):
    image = tmp_path / "digit.png"
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 12:16] = 255  # a "1"
    Image.fromarray(pixels).save(image)
    out = tmp_path / "rows.json"
    assert main(["inspect", str(image), "--reps", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Conv2d" in text and "total" in text
    rows = json.loads(out.read_text())
    assert rows[0]["name"] == "input" and rows[0]["shape"] == [1, 28, 28]
    assert rows[-1]["gradient_norm"] == pytest.approx(1.0)


def test_cli_inspect_an_architecture_with_random_input(capsys):
    assert main(["inspect", "--arch", "mnist-cnn", "--reps", "1", "--target", "7", "--batch", "2"]) == 0
    assert "class 7" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "--arch", "mnist-cnn", "--target", "12"], "12"),
        (["inspect", "--arch", "mnist-cnn", "--weights", "x.npz"], "not both"),
        (["inspect", "--weights", "missing.npz"], "missing.npz"),
        (["inspect", "--arch", "resnet"], "resnet"),
    ],
)
def test_cli_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
