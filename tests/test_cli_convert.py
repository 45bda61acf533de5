"""``tinyconv convert`` on the command line (no PyTorch needed)."""

import numpy as np
import pytest
from test_checkpoint import MNIST_PTH, random_state, write_safetensors

import tinyconv as tc
from tinyconv.cli import main


@pytest.fixture
def mnist_safetensors(tmp_path, rng):
    path = tmp_path / "mnist.safetensors"
    write_safetensors(path, random_state("mnist-cnn", rng))
    return path


def test_convert_writes_a_loadable_file(tmp_path, mnist_safetensors, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("# digits in words\nzero\none\ntwo\nthree\nfour\n\nfive\nsix\nseven\neight\nnine\n")
    out = tmp_path / "sub" / "net.npz"
    argv = ["convert", str(mnist_safetensors), "-o", str(out), "--classes", str(classes)]
    assert main(argv + ["--mean", "0.5", "--std", "0.25", "--licence", "CC0-1.0", "--dtype", "float64"]) == 0
    net = tc.load(out)
    assert net.classes[0] == "zero" and net.classes[-1] == "nine" and len(net.classes) == 10
    assert net.mean == (0.5,) and net.std == (0.25,) and net.dtype == np.float64
    assert net.meta["licence"] == "CC0-1.0" and net.meta["arch"] == "mnist-cnn"
    assert net.meta["source_sha256"] == tc.models.native.sha256(mnist_safetensors)
    printed = capsys.readouterr().out
    assert "mnist-cnn" in printed and tc.models.native.sha256(out) in printed
    # a native file can be re-converted (here: cast back to float32)
    assert main(["convert", str(out), "-o", str(tmp_path / "f32.npz"), "--dtype", "float32"]) == 0
    assert tc.load(tmp_path / "f32.npz").dtype == np.float32


def test_convert_defaults_come_from_the_architecture(tmp_path, mnist_safetensors):
    out = tmp_path / "net.npz"
    assert main(["convert", str(mnist_safetensors), "-o", str(out), "--arch", "mnist-cnn"]) == 0
    net = tc.load(out)
    assert net.mean == tc.models.registry.MNIST_MEAN and net.input_shape == (1, 28, 28)
    assert net.classes == [str(d) for d in range(10)]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--arch", "alexnet"], "does not fit architecture 'alexnet'"),
        (["--mean", "0.5"], "--mean and --std together"),
        (["--mean", "0.5", "0.5", "--std", "1", "1"], "mean has 2 values for 1 input channels"),
    ],
)
def test_convert_errors_are_one_line(tmp_path, mnist_safetensors, capsys, extra, message):
    assert main(["convert", str(mnist_safetensors), "-o", str(tmp_path / "x.npz"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "x.npz").exists()


def test_convert_missing_and_foreign_files(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "absent.pth"), "-o", str(tmp_path / "x.npz")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 64)
    assert main(["convert", str(tmp_path / "junk.pth"), "-o", str(tmp_path / "x.npz")]) == 2
    assert "not a PyTorch zip checkpoint" in capsys.readouterr().err


@pytest.mark.skipif(MNIST_PTH is None, reason="digit-recognizer-py not installed")
def test_convert_reproduces_the_bundled_mnist_file(tmp_path):
    """The command in weights/README.md gives the bundled file, byte for byte."""
    out = tmp_path / "mnist_cnn.npz"
    argv = [
        "convert",
        MNIST_PTH,
        "-o",
        str(out),
        "--arch",
        "mnist-cnn",
        "--mean",
        "0.1307",
        "--std",
        "0.3081",
    ]
    assert main([*argv, "--licence", "MIT"]) == 0
    assert out.read_bytes() == tc.models.native.bundled("mnist_cnn.npz").read_bytes()
