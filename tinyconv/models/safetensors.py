"""Read ``.safetensors`` files with NumPy.

Layout: an 8-byte little-endian unsigned header length N, N bytes of UTF-8
JSON, then the raw tensor buffer. The JSON maps each tensor name to
{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]} (byte offsets
into the buffer), plus an optional "__metadata__" of strings. Every offset,
size and dtype is checked before any data is read: no key may appear twice,
tensors must lie inside the buffer, not overlap, hold exactly
prod(shape) x itemsize bytes, and cover the buffer to its end (no trailing
bytes); each tensor is then read once, straight into its array.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import WeightsError
from .torchfile import Tensor

#: safetensors dtype -> (NumPy dtype, the storage name used by ``Tensor``)
DTYPES = {
    "F64": ("<f8", "DoubleStorage"),
    "F32": ("<f4", "FloatStorage"),
    "F16": ("<f2", "HalfStorage"),
    "BF16": ("<u2", "BFloat16Storage"),
    "I64": ("<i8", "LongStorage"),
    "I32": ("<i4", "IntStorage"),
    "I16": ("<i2", "ShortStorage"),
    "I8": ("<i1", "CharStorage"),
    "U8": ("<u1", "ByteStorage"),
    "BOOL": ("?", "BoolStorage"),
}

MAX_HEADER = 100 * 1024 * 1024


def _no_duplicates(pairs):
    """json object hook: a header naming one key twice is refused (which value
    would count is not defined)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise WeightsError(key)  # given its file name below
        out[key] = value
    return out


def read_safetensors(path) -> tuple[dict[str, Tensor], dict]:
    """(name -> Tensor, metadata) of a ``.safetensors`` file."""
    where = str(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightsError(f"{where} is too short to be a safetensors file ({size} bytes)")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_HEADER):
            raise WeightsError(
                f"{where}: safetensors header claims {n} bytes but the file has {size - 8} after the length"
            )
        try:
            header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise WeightsError(f"{where}: the safetensors header is not valid JSON ({detail})") from None
        except WeightsError as exc:
            raise WeightsError(f"{where}: the safetensors header names {exc.args[0]!r:.120} twice") from None
        if not isinstance(header, dict):
            raise WeightsError(f"{where}: the safetensors header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise WeightsError(f"{where}: the safetensors __metadata__ is not an object of strings")
        buffer_size = size - 8 - n
        entries = [_check_entry(name, entry, buffer_size, where) for name, entry in header.items()]
        previous_end, previous = 0, None
        for name, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
            if begin < previous_end:
                raise WeightsError(
                    f"{where}: tensors {previous!r:.120} and {name!r:.120} overlap in the buffer"
                )
            previous_end, previous = end, name
        if previous_end != buffer_size:
            raise WeightsError(
                f"{where}: {buffer_size - previous_end:,} bytes after the last tensor belong to none "
                "(the safetensors format allows no trailing bytes)"
            )
        result = {}
        for name, dtype, shape, begin, end in entries:
            f.seek(8 + n + begin)
            array = np.empty(shape, dtype=np.dtype(DTYPES[dtype][0]))
            view = memoryview(array.reshape(-1).view(np.uint8))
            if f.readinto(view) != end - begin:
                raise WeightsError(f"{where}: tensor {name!r:.120} is cut short; is the file truncated?")
            result[name] = Tensor(array, DTYPES[dtype][1])
    if not result:
        raise WeightsError(f"{where} holds no tensors")
    return result, metadata


def _check_entry(name, entry, buffer_size, where):
    if not isinstance(entry, dict):
        raise WeightsError(f"{where}: header entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPES:
        raise WeightsError(f"{where}: tensor {name!r} has unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(v) is int and v >= 0 for v in shape):
        raise WeightsError(f"{where}: tensor {name!r} has a bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(v) is int for v in offsets)):
        raise WeightsError(f"{where}: tensor {name!r} has bad data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= buffer_size:
        raise WeightsError(
            f"{where}: tensor {name!r} spans bytes [{begin}, {end}) outside the {buffer_size}-byte buffer"
        )
    nbytes = int(np.prod(shape, dtype=object)) * np.dtype(DTYPES[dtype][0]).itemsize
    if end - begin != nbytes:
        raise WeightsError(
            f"{where}: tensor {name!r} of dtype {dtype} and shape {shape} needs {nbytes} bytes, "
            f"the header gives it {end - begin}"
        )
    return name, dtype, tuple(shape), begin, end


def is_safetensors(path) -> bool:
    """A cheap sniff: 8-byte length followed by '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


__all__ = ["read_safetensors", "is_safetensors"]
