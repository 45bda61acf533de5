"""tinyconv's native weight files: one ``.npz`` holding every parameter array
and a JSON description of the network.

Layout of the archive (a plain NumPy ``.npz``, no pickles)::

    __tinyconv__.npy      uint8 array: UTF-8 JSON, see below
    <layer>.<param>.npy   one array per parameter, e.g. "features.0.weight"

The JSON holds ``format`` ("tinyconv"), ``format_version`` (``FORMAT_VERSION``),
``layers`` (a list of {"name", "spec": Layer.spec(), "params": {key: {"shape",
"dtype"}}}), ``classes``, ``mean``, ``std``, ``input_shape`` and ``meta``
(provenance: source file, its sha256, licence, training record...).

``load`` reads with ``allow_pickle=False`` and checks every array against the
description (present, floating point, finite, the shape the layer needs) so a
damaged or hand-edited file fails with a message naming the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..engine.backend import to_numpy
from ..engine.layers import gradient_buffer, layer_from_spec, param_shapes
from ..engine.network import Sequential
from ..errors import TinyconvError, WeightsError

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

    The file is written to a temporary name first and renamed, so an
    interrupted save never leaves a half-written file under ``path``.
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"save expects a tinyconv Sequential, got {type(net).__name__}")
    spec = json.dumps(describe(net), indent=1).encode("utf-8")
    arrays = {SPEC_KEY: np.frombuffer(spec, dtype=np.uint8)}
    for p in net.parameters():
        arrays[p.name] = np.ascontiguousarray(to_numpy(p.value))
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    # np.savez's layout, written by hand with a fixed timestamp so that the
    # same network always gives the same bytes (and sha256)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, value, allow_pickle=False)
    os.replace(tmp, path)


def _read_spec(archive, where: str) -> dict:
    if SPEC_KEY not in archive.files:
        raise WeightsError(f"{where} is not a tinyconv weights file: it has no {SPEC_KEY!r} entry")
    raw = _read_array(archive, SPEC_KEY, where)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise WeightsError(f"{where}: the {SPEC_KEY!r} entry is not a byte string")
    try:
        spec = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{where}: the network description is not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise WeightsError(f"{where}: the network description is not a tinyconv description")
    version = spec.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(
            f"{where}: format version {version!r} is not supported by this tinyconv "
            f"(which reads version {FORMAT_VERSION}); a newer tinyconv may read it"
        )
    if not isinstance(spec.get("layers"), list):
        raise WeightsError(f"{where}: the network description has no layer list")
    return spec


def _read_array(archive, key: str, where: str) -> np.ndarray:
    """One array of the archive; any decoding failure becomes a WeightsError."""
    try:
        return archive[key]
    except KeyError:
        raise WeightsError(f"{where}: array {key!r} is missing") from None
    except Exception as exc:  # zlib, zipfile, format errors of a damaged file
        raise WeightsError(f"{where}: array {key!r} cannot be read ({type(exc).__name__}: {exc})") from None


def _param_shapes(spec: dict) -> dict:
    """``param_shapes`` of a layer's spec, computed without building the layer
    (so a hand-edited size cannot trigger a huge allocation); {} for layers
    without parameters, which are checked once built."""
    try:
        return param_shapes(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"bad hyper-parameters ({type(exc).__name__}: {exc})") from None


def _read_layer(archive, entry, index: int, where: str):
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
        value = _read_array(archive, full, where)
        if value.shape != predicted[key]:
            need = predicted[key]
            raise WeightsError(
                f"{where}: array {full!r} has shape {value.shape}, layer {name!r} ({kind}) needs {need}"
            )
        values[key] = value
    try:
        layer = layer_from_spec(spec)
    except TinyconvError as exc:
        raise WeightsError(f"{where}: layer {name!r}: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise WeightsError(f"{where}: layer {name!r} has bad hyper-parameters ({exc})") from None
    for key, init in layer.params.items():
        full = f"{name}.{key}"
        value = values[key] if key in values else _read_array(archive, full, where)
        if value.shape != init.shape:
            raise WeightsError(
                f"{where}: array {full!r} has shape {value.shape}, layer {name!r} ({kind}) needs {init.shape}"
            )
        if value.dtype.kind != "f":
            raise WeightsError(f"{where}: array {full!r} has dtype {value.dtype}, expected floating point")
        if not np.isfinite(value).all():
            raise WeightsError(f"{where}: array {full!r} contains NaN or infinite values")
        layer.params[key] = value
        layer.grads[key] = gradient_buffer(value)
    return name, layer


def load(path) -> Sequential:
    """Read a network written by ``save`` / ``Sequential.save``.

    Raises a WeightsError naming the file and the problem for a missing or
    damaged file, an unknown format version, a missing array, or an array
    whose shape or dtype does not fit its layer.
    """
    where = str(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # not a zip, truncated, empty ...
        raise WeightsError(
            f"{where} cannot be read as a tinyconv .npz file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise WeightsError(f"{where} holds a single array, not a tinyconv .npz weights file")
    with archive:
        spec = _read_spec(archive, where)
        layers = [_read_layer(archive, entry, i, where) for i, entry in enumerate(spec["layers"])]
        expected = {SPEC_KEY} | {f"{name}.{key}" for name, layer in layers for key in layer.params}
        extra = sorted(set(archive.files) - expected)
        if extra:
            raise WeightsError(f"{where}: arrays {extra} belong to no layer of the description")
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
