"""Read PyTorch ``.pth`` / ``.pt`` checkpoints with the standard library and
NumPy only: no torch, and no arbitrary code from the file.

A checkpoint written by ``torch.save`` (PyTorch >= 1.6) is a zip archive::

    <name>/data.pkl        the pickled object (a state_dict: names -> tensors)
    <name>/data/<key>      the raw bytes of each tensor storage
    <name>/byteorder       "little" or "big" (absent in old files: little)
    <name>/version ...

The pickle is read by ``RestrictedUnpickler``, whose ``find_class`` allows
only the globals a state_dict needs: ``collections.OrderedDict``, the tensor
rebuild functions of ``torch._utils`` and the typed storage classes. Each
resolves to a small NumPy stand-in written here; every other global (for
example ``os.system`` or ``builtins.eval``, what a malicious file would
call) is refused with a WeightsError naming it, before anything runs.

A tensor is rebuilt from (storage, offset, size, stride) exactly like
PyTorch does, so transposed, sliced and shared-storage tensors load
correctly; every index is checked against the storage length first.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import zipfile

import numpy as np

from ..errors import WeightsError


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: just a dtype."""

    def __init__(self, name: str, dtype: str):
        self.name, self.dtype = name, np.dtype(dtype)

    def __repr__(self):
        return f"torch.{self.name}"


# bfloat16 has no NumPy dtype: its storage is read as uint16 and widened later
STORAGE_TYPES = {
    name: _StorageType(name, dtype)
    for name, dtype in {
        "DoubleStorage": "<f8",
        "FloatStorage": "<f4",
        "HalfStorage": "<f2",
        "BFloat16Storage": "<u2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "<i1",
        "ByteStorage": "<u1",
        "BoolStorage": "?",
    }.items()
}


class Tensor:
    """A rebuilt tensor: a NumPy array plus the torch dtype name it had."""

    __slots__ = ("array", "torch_dtype")

    def __init__(self, array: np.ndarray, torch_dtype: str):
        self.array, self.torch_dtype = array, torch_dtype

    @property
    def shape(self):
        return self.array.shape

    def numpy(self, float_dtype=None) -> np.ndarray:
        """The values as a NumPy array; bfloat16 is widened to float32 exactly."""
        a = self.array
        if self.torch_dtype == "BFloat16Storage":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        return a if float_dtype is None else a.astype(float_dtype)


class _Storage:
    """One storage of the archive: a flat NumPy array of its element type."""

    def __init__(self, kind: _StorageType, data: np.ndarray):
        self.kind, self.data = kind, data


def _as_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int):
        raise WeightsError(f"tensor {what} must be an int, got {type(value).__name__}")
    return value


def rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                   metadata=None):  # fmt: skip
    """``torch._utils._rebuild_tensor_v2``: view ``storage`` with ``size`` and
    ``stride`` (in elements) from ``storage_offset``; returns a ``Tensor``
    holding a fresh, writable, C-contiguous array.

    Element (i_0, ..., i_k) is storage[offset + Σ i_d·stride_d]; the largest
    such index is checked against the storage length before any read.
    """
    if not isinstance(storage, _Storage):
        raise WeightsError(f"a tensor's storage is a {type(storage).__name__}, not a storage record")
    offset = _as_int(storage_offset, "storage offset")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        raise WeightsError(f"tensor size {size!r} and stride {stride!r} do not describe a tensor")
    size = tuple(_as_int(v, "size") for v in size)
    stride = tuple(_as_int(v, "stride") for v in stride)
    if offset < 0 or any(v < 0 for v in size) or any(v < 0 for v in stride):
        raise WeightsError(f"tensor has a negative offset, size or stride: {offset}, {size}, {stride}")
    data = storage.data
    numel = math.prod(size)
    if numel == 0:
        return Tensor(np.zeros(size, dtype=data.dtype), storage.kind.name)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= data.size:
        raise WeightsError(
            f"tensor of size {size}, stride {stride}, offset {offset} reads element {last} "
            f"of a storage holding {data.size}"
        )
    contiguous = tuple(math.prod(size[d + 1 :]) for d in range(len(size)))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous, strict=True)):
        array = data[offset : offset + numel].reshape(size)
        if offset == 0 and numel == data.size:
            return Tensor(array, storage.kind.name)  # the whole storage: no copy
    else:
        # bounds checked above: the strided view stays inside ``data``
        base = data[offset:]
        array = np.lib.stride_tricks.as_strided(
            base, shape=size, strides=tuple(s * data.itemsize for s in stride), writeable=False
        )
    if not array.flags.writeable or not array.flags.c_contiguous or array.base is not None:
        array = np.array(array, order="C", copy=True)
    return Tensor(array, storage.kind.name)


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """``torch._utils._rebuild_parameter``: a Parameter is its tensor here."""
    if not isinstance(data, Tensor):
        raise WeightsError(f"a parameter wraps a {type(data).__name__}, not a tensor")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    **{("torch", name): kind for name, kind in STORAGE_TYPES.items()},
}


#: the pickle opcodes a state_dict needs (torch.save writes protocol 2; 4's
#: framing and STACK_GLOBAL are accepted too). Everything else -- object
#: construction through INST/OBJ/NEWOBJ, the copyreg extension registry,
#: out-of-band buffers -- is refused before unpickling starts.
ALLOWED_OPCODES = frozenset(
    """PROTO FRAME STOP MARK POP POP_MARK DUP MEMOIZE PUT BINPUT LONG_BINPUT GET BINGET LONG_BINGET
    NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT
    STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8
    BINBYTES SHORT_BINBYTES BINBYTES8 EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3
    EMPTY_LIST LIST APPEND APPENDS EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET
    GLOBAL STACK_GLOBAL REDUCE BUILD PERSID BINPERSID""".split()
)


def check_opcodes(data: bytes) -> None:
    """Raise a WeightsError naming the first opcode outside ``ALLOWED_OPCODES``."""
    try:
        for opcode, _, position in pickletools.genops(data):
            if opcode.name not in ALLOWED_OPCODES:
                raise WeightsError(
                    f"the checkpoint's pickle uses opcode {opcode.name} (at byte {position}), "
                    "which a state_dict never needs; refusing to load it"
                )
    except WeightsError:
        raise
    except Exception as exc:  # truncated or garbled opcode stream
        raise WeightsError(f"the checkpoint's pickle is malformed ({type(exc).__name__}: {exc})") from None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals listed in ``_ALLOWED``.

    ``read_storage(key, storage_type, numel)`` supplies the bytes of each
    storage the pickle refers to by persistent id.
    """

    def __init__(self, file, read_storage):
        super().__init__(file)
        self._read_storage = read_storage
        self._storages: dict = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise WeightsError(
                f"the checkpoint's pickle asks for the global {module}.{name}, which a state_dict never "
                "needs; refusing to load it (only tensors, storages and ordered dicts are allowed)"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightsError(f"unsupported persistent id in the checkpoint's pickle: {pid!r:.80}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType):
            raise WeightsError(f"storage {key!r} has an unknown storage type {kind!r:.80}")
        if not isinstance(key, str):
            raise WeightsError(f"storage key {key!r:.80} is not a string")
        numel = _as_int(numel, "storage size")
        if key not in self._storages:
            self._storages[key] = _Storage(kind, self._read_storage(key, kind, numel))
        storage = self._storages[key]
        if storage.kind is not kind:
            raise WeightsError(f"storage {key!r} is used as both {storage.kind} and {kind}")
        return storage


# ----------------------------------------------------------------------------
# the zip container

LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pickled magic number


def _refuse_non_zip(path, head: bytes):
    if not head:
        raise WeightsError(f"{path} is empty")
    if head.startswith(LEGACY_MAGIC[:4]):
        raise WeightsError(
            f"{path} uses PyTorch's legacy (pre-1.6, non-zip) serialisation, which tinyconv does not "
            "read; load it once in PyTorch and re-save it with torch.save(state_dict, 'new.pth')"
        )
    raise WeightsError(f"{path} is not a PyTorch zip checkpoint (it does not start with a zip header)")


def read_pth(path) -> object:
    """The object stored in a ``torch.save`` zip file, with every tensor as a
    ``Tensor`` (NumPy array); raises a WeightsError for anything else."""
    where = str(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if not head.startswith(b"PK"):
        _refuse_non_zip(where, head)
    try:
        archive = zipfile.ZipFile(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # BadZipFile, EOFError, NotImplementedError ("zip file version") ...
        raise WeightsError(
            f"{where} is not a readable zip archive ({type(exc).__name__}: {exc}); is it truncated?"
        ) from None
    with archive:
        try:
            return _read_archive(archive, where, os.path.getsize(path))
        except WeightsError as exc:
            raise WeightsError(f"{where}: {exc}") from None
        except RecursionError:
            raise WeightsError(f"{where}: the checkpoint's pickle is nested too deeply") from None
        except Exception as exc:  # any damage to the pickle or the zip entries
            raise WeightsError(
                f"{where}: the checkpoint is damaged and cannot be read ({type(exc).__name__}: {exc})"
            ) from None


def _read_archive(archive: zipfile.ZipFile, where: str, file_size: int):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        if any(n.endswith("/constants.pkl") for n in names):
            raise WeightsError("this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint")
        if any(n.endswith("__tinyconv__.npy") for n in names):
            raise WeightsError("this is a tinyconv .npz file; read it with tinyconv.load")
        raise WeightsError(f"the zip archive has {len(pickles)} '<name>/data.pkl' entries, expected 1")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in names:
        byteorder = _read_entry(archive, f"{prefix}byteorder", 16).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise WeightsError(f"unknown byte order {byteorder!r}")

    def read_storage(key, kind, numel):
        name = f"{prefix}data/{key}"
        if name not in names:
            raise WeightsError(f"storage {key!r} is missing from the archive (no entry {name!r})")
        if numel < 0:
            raise WeightsError(f"storage {key!r} has a negative size")
        nbytes = numel * kind.dtype.itemsize
        info = archive.getinfo(name)
        if info.file_size > file_size:
            raise WeightsError(f"entry {name!r} claims {info.file_size} bytes, more than the whole file")
        if info.file_size != nbytes:
            raise WeightsError(
                f"storage {key!r} should hold {numel} x {kind.dtype.itemsize} = {nbytes} bytes, "
                f"entry {name!r} has {info.file_size}"
            )
        data = _read_array_entry(archive, name, kind.dtype, numel)
        if byteorder == "big" and kind.dtype.itemsize > 1:
            data.byteswap(inplace=True)
        return data

    data_pkl = _read_entry(archive, pickles[0], None)
    check_opcodes(data_pkl)
    return RestrictedUnpickler(io.BytesIO(data_pkl), read_storage).load()


def _read_entry(archive: zipfile.ZipFile, name: str, limit: int | None) -> bytes:
    """Bytes of one entry; refuses compressed entries (torch stores its
    entries uncompressed, and a compressed one could expand without bound)."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise WeightsError(f"entry {name!r} is compressed; torch.save writes entries uncompressed")
    if limit is not None and info.file_size > limit:
        raise WeightsError(f"entry {name!r} holds {info.file_size} bytes, expected at most {limit}")
    return archive.read(name)


def _read_array_entry(archive: zipfile.ZipFile, name: str, dtype: np.dtype, numel: int) -> np.ndarray:
    """An entry's bytes read straight into a new writable array of ``numel``
    elements (in chunks: no second copy of a large storage)."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise WeightsError(f"entry {name!r} is compressed; torch.save writes entries uncompressed")
    data = np.empty(numel, dtype=dtype)
    view = memoryview(data).cast("B")
    with archive.open(name) as f:
        done, chunk = 0, 1 << 24
        while done < len(view):
            block = f.read(min(chunk, len(view) - done))
            if not block:
                raise WeightsError(f"entry {name!r} ends after {done} of {len(view)} bytes")
            view[done : done + len(block)] = block
            done += len(block)
    return data


def tensors(obj, where: str = "checkpoint") -> dict[str, Tensor]:
    """The name -> Tensor mapping inside a loaded checkpoint.

    Accepts a bare state_dict or one wrapped as {"state_dict": ...},
    {"model": ...} (or "model_state_dict", "net", "module"); drops a
    "module." prefix left by DataParallel / DistributedDataParallel.
    """
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            break
        for key in ("state_dict", "model_state_dict", "model", "net", "module"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            break
    if not isinstance(obj, dict):
        raise WeightsError(f"{where} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightsError(f"{where}: state_dict key {key!r:.80} is not a string")
        if not isinstance(value, Tensor):
            raise WeightsError(
                f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                "expected a state_dict or a dict wrapping one under 'state_dict' or 'model'"
            )
        state[key] = value
    if not state:
        raise WeightsError(f"{where} holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


__all__ = ["RestrictedUnpickler", "Tensor", "read_pth", "tensors"]
