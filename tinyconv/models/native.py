"""tinyconv's native weight files: one ``.npz`` holding every parameter array
and a JSON description of the network.

Layout of the archive (a plain NumPy ``.npz``, no pickles)::

    __tinyconv__.npy      uint8 array: UTF-8 JSON, see below
    <layer>.<param>.npy   one array per parameter, e.g. "features.0.weight"

The JSON holds ``format`` ("tinyconv"), ``format_version`` (``FORMAT_VERSION``),
``layers`` (a list of {"name", "spec": Layer.spec(), "params": {key: {"shape",
"dtype"}}}), ``classes``, ``mean``, ``std``, ``input_shape`` and ``meta``
(provenance: source file, its sha256, licence, training record...).

``load`` reads the archive itself (never ``np.load``, never a pickle): the zip
layout is checked first (unique, non-overlapping entries), then each array's
``.npy`` header is compared with the description (present, floating point,
the shape the layer needs) before its data is read, within a byte budget
proportional to the file size, and the values must be finite; a damaged or
hand-edited file fails with a message naming the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from ..engine.backend import to_numpy
from ..engine.layers import gradient_buffer, layer_from_spec, param_shapes
from ..engine.network import Sequential
from ..errors import TinyconvError, WeightsError
from ..files import atomic_write
from .torchfile import Budget, check_zip_layout, describe_value

FORMAT = "tinyconv"
FORMAT_VERSION = 1
SPEC_KEY = "__tinyconv__"


def sha256(path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value):
    """Meta values as JSON: tuples to lists, NumPy scalars to Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise WeightsError(f"meta value {value!r} of type {type(value).__name__} cannot be stored as JSON")


def describe(net: Sequential) -> dict:
    """The JSON description ``save`` writes next to the arrays."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layers": [
            {
                "name": layer.name,
                "spec": layer.spec(),
                "params": {
                    key: {"shape": list(value.shape), "dtype": str(value.dtype)}
                    for key, value in layer.params.items()
                },
            }
            for layer in net.layers
        ],
        "classes": net.classes,
        "mean": None if net.mean is None else list(net.mean),
        "std": None if net.std is None else list(net.std),
        "input_shape": None if net.input_shape is None else list(net.input_shape),
        "meta": _jsonable(net.meta),
    }


def save(net: Sequential, path) -> None:
    """Write ``net`` (its arrays, on any device, in their own dtype) to ``path``.

    The file is written to a fresh temporary file beside ``path``, synced
    and renamed (``tinyconv.files.atomic_write``): an interrupted save never
    leaves a half-written file or a temporary behind, two saves to one path
    leave one of the two whole files, and a symlink is never written through.
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"save expects a tinyconv Sequential, got {type(net).__name__}")
    spec = json.dumps(describe(net), indent=1).encode("utf-8")
    arrays = {SPEC_KEY: np.frombuffer(spec, dtype=np.uint8)}
    for p in net.parameters():
        arrays[p.name] = np.ascontiguousarray(to_numpy(p.value))
    # np.savez's layout, written by hand with a fixed timestamp so that the
    # same network always gives the same bytes (and sha256)
    with atomic_write(path) as out, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, value, allow_pickle=False)


#: the network description may be at most this large
MAX_SPEC_BYTES = 64 << 20
#: a .npz may allocate at most NPZ_BUDGET_FACTOR x its file size + NPZ_BUDGET_SLACK bytes
#: (deflated entries of real weights shrink little; tinyconv's own files are stored)
NPZ_BUDGET_FACTOR = 16
NPZ_BUDGET_SLACK = 64 << 20
NPY_MAGIC = b"\x93NUMPY"


class _NpzArchive:
    """The arrays of a ``.npz`` read one at a time, each header checked before
    its data: ``read(key, check)`` calls ``check(shape, dtype)`` (which
    raises) before a byte of the data is read or allocated."""

    def __init__(self, archive: zipfile.ZipFile, where: str, file_size: int):
        self.archive, self.where = archive, where
        infos = check_zip_layout(archive, file_size)
        self.infos = {name[: -len(".npy")] if name.endswith(".npy") else name: i for name, i in infos.items()}
        self.files = list(self.infos)
        self.budget = Budget(NPZ_BUDGET_FACTOR * file_size + NPZ_BUDGET_SLACK, where)

    def read(self, key: str, check=None) -> np.ndarray:
        where = self.where
        info = self.infos.get(key)
        if info is None:
            raise WeightsError(f"{where}: array {key!r} is missing")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise WeightsError(f"{where}: array {key!r} uses an unsupported zip compression")
        try:
            with self.archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise WeightsError(f"{where}: array {key!r} has .npy format version {version}")
                if dtype.hasobject:
                    raise WeightsError(
                        f"{where}: array {key!r} holds Python objects (a pickle); tinyconv files never do"
                    )
                if check is not None:
                    check(shape, dtype)
                numel = math.prod(shape)
                nbytes = numel * dtype.itemsize
                if info.file_size - f.tell() != nbytes:
                    raise WeightsError(
                        f"{where}: array {key!r} of shape {shape} needs {nbytes:,} bytes, "
                        f"its entry holds {info.file_size - f.tell():,}"
                    )
                self.budget.take(nbytes, f"array {key!r}")
                array = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
                view = memoryview(array.reshape(-1).view(np.uint8))
                done = 0
                while done < nbytes:
                    got = f.readinto(view[done : done + (1 << 24)])
                    if not got:
                        raise WeightsError(f"{where}: array {key!r} is cut short; is the file truncated?")
                    done += got
        except TinyconvError:
            raise
        except MemoryError:
            raise WeightsError(f"{where}: not enough memory to read array {key!r}") from None
        except Exception as exc:  # zlib, zipfile, header format errors of a damaged file
            raise WeightsError(
                f"{where}: array {key!r} cannot be read ({type(exc).__name__}: {exc})"
            ) from None
        return np.ascontiguousarray(array.T) if fortran else array


def _read_spec(archive: _NpzArchive, where: str) -> dict:
    if SPEC_KEY not in archive.files:
        raise WeightsError(f"{where} is not a tinyconv weights file: it has no {SPEC_KEY!r} entry")

    def check(shape, dtype):
        if dtype != np.uint8 or len(shape) != 1:
            raise WeightsError(f"{where}: the {SPEC_KEY!r} entry is not a byte string")
        if shape[0] > MAX_SPEC_BYTES:
            raise WeightsError(f"{where}: the network description holds {shape[0]:,} bytes, too many")

    raw = archive.read(SPEC_KEY, check)
    try:
        spec = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise WeightsError(f"{where}: the network description is not valid JSON ({detail})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise WeightsError(f"{where}: the network description is not a tinyconv description")
    version = spec.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(
            f"{where}: format version {describe_value(version)} is not supported by this tinyconv "
            f"(which reads version {FORMAT_VERSION}); a newer tinyconv may read it"
        )
    if not isinstance(spec.get("layers"), list):
        raise WeightsError(f"{where}: the network description has no layer list")
    return spec


def _param_shapes(spec: dict) -> dict:
    """``param_shapes`` of a layer's spec, computed without building the layer
    (so a hand-edited size cannot trigger a huge allocation); {} for layers
    without parameters, which are checked once built."""
    try:
        return param_shapes(spec)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise WeightsError(f"bad hyper-parameters ({type(exc).__name__}: {exc})") from None


def _array_check(where, full, name, kind, need):
    """check(shape, dtype) of one parameter array: the shape its layer needs, floats."""

    def check(shape, dtype):
        if need is not None and tuple(shape) != tuple(need):
            raise WeightsError(
                f"{where}: array {full!r} has shape {tuple(shape)}, "
                f"layer {name!r} ({kind}) needs {tuple(need)}"
            )
        if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
            raise WeightsError(f"{where}: array {full!r} has dtype {dtype}, expected floating point")

    return check


def _read_layer(archive: _NpzArchive, entry, index: int, where: str):
    """Rebuild layer ``index`` of the description and fill it from the archive."""
    if not isinstance(entry, dict) or not isinstance(entry.get("spec"), dict):
        raise WeightsError(f"{where}: layer entry {index} is malformed")
    name, spec = entry.get("name"), entry["spec"]
    if not isinstance(name, str):
        raise WeightsError(f"{where}: layer entry {index} has no name")
    kind = spec.get("type")
    try:
        predicted = _param_shapes(spec)
    except WeightsError as exc:
        raise WeightsError(f"{where}: layer {name!r} ({kind}): {exc}") from None
    values = {}
    for key in predicted or {}:
        full = f"{name}.{key}"
        values[key] = archive.read(full, _array_check(where, full, name, kind, predicted[key]))
    try:
        layer = layer_from_spec(spec)
    except TinyconvError as exc:
        raise WeightsError(f"{where}: layer {name!r}: {exc}") from None
    except (TypeError, ValueError, OverflowError, MemoryError) as exc:
        raise WeightsError(f"{where}: layer {name!r} has bad hyper-parameters ({exc})") from None
    for key, init in layer.params.items():
        full = f"{name}.{key}"
        check = _array_check(where, full, name, kind, init.shape)
        value = values[key] if key in values else archive.read(full, check)
        check(value.shape, value.dtype)
        if not np.isfinite(value).all():
            raise WeightsError(
                f"{where}: array {full!r} contains NaN or infinite values (layer {name!r}, {kind})"
            )
        layer.params[key] = value
        layer.grads[key] = gradient_buffer(value)
    return name, layer


def _what_it_is(head: bytes) -> str:
    """What a file that is not a zip archive looks like, for the message."""
    if not head:
        return "it is empty"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return "it is an image"
    if len(head) >= 9 and head[8:9] == b"{":
        return "it looks like a safetensors file: convert it with `tinyconv convert`"
    if head.startswith(b"\x80"):
        return "it is a pickle, which tinyconv never reads (a legacy PyTorch file? re-save it in PyTorch)"
    if head.startswith(b"ONNX") or head[:1] == b"\x08":
        return "it is not a zip archive (an ONNX model? load it with tinyconv.load_onnx)"
    return "it is not a zip archive"


def load(path) -> Sequential:
    """Read a network written by ``save`` / ``Sequential.save``.

    Raises a WeightsError naming the file and the problem for a missing or
    damaged file, an unknown format version, a missing array, or an array
    whose shape or dtype does not fit its layer. Every array's header is
    compared with the description before its data is read, and the bytes
    read are bounded by a multiple of the file size; no pickle is ever read.
    """
    where = str(path)
    if hasattr(path, "read"):
        path.seek(0)
        head = path.read(16)
        file_size = path.seek(0, os.SEEK_END)
        path.seek(0)
    else:
        with open(path, "rb") as f:
            head = f.read(16)
            file_size = os.fstat(f.fileno()).st_size
    if head.startswith(NPY_MAGIC):
        raise WeightsError(f"{where} holds a single array, not a tinyconv .npz weights file")
    if not head.startswith(b"PK"):
        raise WeightsError(f"{where} cannot be read as a tinyconv .npz file: {_what_it_is(head)}")
    try:
        zipped = zipfile.ZipFile(path)
    except Exception as exc:  # not a zip, truncated ...
        raise WeightsError(
            f"{where} cannot be read as a tinyconv .npz file ({type(exc).__name__}: {exc})"
        ) from None
    with zipped:
        try:
            archive = _NpzArchive(zipped, where, file_size)
        except WeightsError as exc:
            raise WeightsError(f"{where}: {exc}") from None
        if SPEC_KEY not in archive.files and any(n.endswith("/data.pkl") for n in archive.files):
            raise WeightsError(f"{where} is a PyTorch checkpoint, not a tinyconv file: convert it with "
                               "`tinyconv convert` or read it with tinyconv.load_checkpoint")  # fmt: skip
        spec = _read_spec(archive, where)
        layers = [_read_layer(archive, entry, i, where) for i, entry in enumerate(spec["layers"])]
        expected = {SPEC_KEY} | {f"{name}.{key}" for name, layer in layers for key in layer.params}
        extra = sorted(set(archive.files) - expected)
        if extra:
            raise WeightsError(f"{where}: arrays {extra[:20]} belong to no layer of the description")
    meta = spec.get("meta")
    try:
        return Sequential(
            layers,
            classes=spec.get("classes"),
            mean=spec.get("mean"),
            std=spec.get("std"),
            input_shape=spec.get("input_shape"),
            meta=meta if isinstance(meta, dict) else {},
        )
    except TinyconvError as exc:
        raise WeightsError(f"{where}: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise WeightsError(f"{where}: the network description is inconsistent ({exc})") from None


# ----------------------------------------------------------------------------
# the weights bundled with the source repository

#: Environment variable naming a directory searched before the repository's weights/.
WEIGHTS_ENV = "TINYCONV_WEIGHTS"


def bundled(name: str) -> Path:
    """Path of a weights file shipped in the repository's ``weights/`` folder
    (e.g. ``bundled("mnist_cnn.npz")``).

    Looks in ``$TINYCONV_WEIGHTS`` if set, then in ``weights/`` next to the
    package (an editable install or a source checkout). Raises a WeightsError
    saying where it looked when the file is absent.
    """
    places = []
    if os.environ.get(WEIGHTS_ENV):
        places.append(Path(os.environ[WEIGHTS_ENV]))
    places.append(Path(__file__).resolve().parents[2] / "weights")
    for place in places:
        candidate = place / name
        if candidate.is_file():
            return candidate
    raise WeightsError(
        f"bundled weights file {name!r} not found (looked in {', '.join(map(str, places))}); "
        f"it ships with the source repository's weights/ folder: set {WEIGHTS_ENV} to a folder "
        "holding it or pass --weights FILE"
    )


def load_bundled(name: str = "mnist_cnn.npz") -> Sequential:
    """``load(bundled(name))``."""
    return load(bundled(name))


def is_native(path) -> bool:
    """True when ``path`` is a zip holding the tinyconv description entry."""
    try:
        with zipfile.ZipFile(path) as z:
            return f"{SPEC_KEY}.npy" in z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


__all__ = ["FORMAT_VERSION", "bundled", "describe", "load", "load_bundled", "save", "sha256"]
