"""Read PyTorch ``.pth`` / ``.pt`` checkpoints with the standard library and
NumPy only: no torch, and no arbitrary code from the file.

A checkpoint written by ``torch.save`` (PyTorch >= 1.6) is a zip archive::

    <name>/data.pkl        the pickled object (a state_dict: names -> tensors)
    <name>/data/<key>      the raw bytes of each tensor storage
    <name>/byteorder       "little" or "big" (absent in old files: little)
    <name>/version ...

The pickle is not given to Python's ``pickle`` module: ``RestrictedUnpickler``
is a small pickle machine of its own, with an explicit table of the opcodes a
state_dict needs (``OPCODES``), in the spirit of PyTorch's ``weights_only``
unpickler. What a file can ask for is therefore bounded by construction:

- globals: only ``collections.OrderedDict``, the tensor rebuild functions of
  ``torch._utils`` and the typed storage classes, each a stand-in written
  here and created afresh for every load (nothing a file does can change a
  later load); every other global (``os.system``, ``builtins.eval``...) is
  refused with a WeightsError naming it, before anything runs;
- ``REDUCE`` calls only those stand-ins; ``BUILD`` is accepted only on a
  dict the pickle made itself (a state_dict's ``_metadata``) and changes
  nothing; ``APPEND``/``SETITEM`` work only on lists/dicts the pickle made;
- containers nest at most ``MAX_DEPTH`` deep and dict keys are plain values,
  so no hashing, comparison or message can recurse without bound;
- nothing recurses in this module, and every error message describes values
  by type and size, never by an unbounded ``repr``.

The zip container is checked before any storage is read: entries are stored
(torch never compresses), no two entries overlap, and each storage holds
exactly the bytes its record declares. Every byte the load allocates (the
storages and every copied tensor) is drawn from a budget of
``BUDGET_FACTOR`` x the file size + ``BUDGET_SLACK``.

A tensor is rebuilt from (storage, offset, size, stride) exactly like
PyTorch does, so transposed, sliced and shared-storage tensors load
correctly; every index is checked against the storage length first, and a
tensor whose strides overlap (stride 0, a broadcast) may expand its storage
only up to ``SMALL_TENSOR_BYTES``.
"""

from __future__ import annotations

import codecs
import collections
import math
import os
import pickletools
import struct
import zipfile
import zlib

import numpy as np

from ..errors import WeightsError

#: deepest nesting of tuples/lists/dicts a pickle may build (a state_dict needs 4)
MAX_DEPTH = 100
#: a tensor whose elements share storage slots may be at most this large
SMALL_TENSOR_BYTES = 1 << 20
#: a checkpoint may allocate at most BUDGET_FACTOR x its file size + BUDGET_SLACK bytes
BUDGET_FACTOR = 4
BUDGET_SLACK = 16 << 20
#: the longest integer a pickle may hold (a state_dict's are sizes, strides, offsets)
MAX_INT_BYTES = 32

#: storage class -> NumPy dtype; bfloat16 has none: read as uint16, widened later
STORAGE_DTYPES = {
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
}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: a name and a dtype.
    Made afresh for each load and never modified."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        self.name, self.dtype = name, np.dtype(dtype)

    def __repr__(self):
        return f"torch.{self.name}"


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

    __slots__ = ("kind", "data")

    def __init__(self, kind: _StorageType, data: np.ndarray):
        self.kind, self.data = kind, data


class Budget:
    """The bytes a load may still allocate; ``take`` refuses what exceeds it."""

    def __init__(self, limit: int | None, where: str = "the checkpoint"):
        self.limit, self.left, self.where = limit, limit, where

    @classmethod
    def for_file(cls, file_size: int, where: str = "the checkpoint") -> Budget:
        return cls(BUDGET_FACTOR * file_size + BUDGET_SLACK, where)

    def take(self, nbytes: int, what: str) -> None:
        if self.left is None:
            return
        if nbytes > self.left:
            raise WeightsError(
                f"{what} needs {nbytes:,} bytes, more than {self.where} may allocate "
                f"({self.limit:,} bytes in all: {BUDGET_FACTOR} x its size + {BUDGET_SLACK >> 20} MiB)"
            )
        self.left -= nbytes


def describe_value(value) -> str:
    """A short description of any value, safe for messages: never recurses,
    never prints a long or deeply nested thing."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"an int of {value.bit_length()} bits"
    if isinstance(value, (str, bytes)):
        text = repr(value[:60])
        return text + (f"... ({len(value)} long)" if len(value) > 60 else "")
    if isinstance(value, (tuple, list, dict, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, _StorageType):
        return f"the storage type torch.{value.name}"
    if isinstance(value, _Callable):
        return f"the function {value.name}"
    return f"a {type(value).__name__}"


def _as_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int):
        raise WeightsError(f"tensor {what} must be an int, got {describe_value(value)}")
    return value


def _overlapping(size, stride) -> bool:
    """True unless the elements provably occupy distinct storage slots: with
    the dimensions sorted by stride, each stride must exceed the furthest
    offset the smaller ones reach."""
    reach = 0
    for s, n in sorted((s, n) for n, s in zip(size, stride, strict=True) if n > 1):
        if s <= reach:
            return True
        reach += (n - 1) * s
    return False


def rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                   metadata=None, *, budget: Budget | None = None):  # fmt: skip
    """``torch._utils._rebuild_tensor_v2``: view ``storage`` with ``size`` and
    ``stride`` (in elements) from ``storage_offset``; returns a ``Tensor``
    holding a fresh, writable, C-contiguous array.

    Element (i_0, ..., i_k) is storage[offset + Σ i_d·stride_d]; the largest
    such index is checked against the storage length, overlapping strides
    against ``SMALL_TENSOR_BYTES`` and a copy against ``budget``, all before
    anything is allocated.
    """
    if not isinstance(storage, _Storage):
        raise WeightsError(f"a tensor's storage is {describe_value(storage)}, not a storage record")
    offset = _as_int(storage_offset, "storage offset")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        raise WeightsError(
            f"tensor size ({describe_value(size)}) and stride ({describe_value(stride)}) do not describe "
            "a tensor"
        )
    if len(size) > 64:
        raise WeightsError(f"tensor has {len(size)} dimensions; at most 64 are supported")
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
    nbytes = numel * data.itemsize
    if nbytes > SMALL_TENSOR_BYTES and _overlapping(size, stride):
        raise WeightsError(
            f"tensor of size {size}, stride {stride} reads some storage elements more than once "
            f"(a stride 0 or overlapping strides) and would expand to {nbytes:,} bytes; "
            f"refusing (such tensors are accepted up to {SMALL_TENSOR_BYTES:,} bytes)"
        )
    contiguous = tuple(math.prod(size[d + 1 :]) for d in range(len(size)))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous, strict=True)):
        if offset == 0 and numel == data.size:
            return Tensor(data.reshape(size), storage.kind.name)  # the whole storage: no copy
        array = data[offset : offset + numel].reshape(size)
    else:
        # bounds checked above: the strided view stays inside ``data``
        array = np.lib.stride_tricks.as_strided(
            data[offset:], shape=size, strides=tuple(s * data.itemsize for s in stride), writeable=False
        )
    if budget is not None:
        budget.take(nbytes, f"tensor of size {size}")
    return Tensor(np.array(array, order="C", copy=True), storage.kind.name)


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """``torch._utils._rebuild_parameter``: a Parameter is its tensor here."""
    if not isinstance(data, Tensor):
        raise WeightsError(f"a parameter wraps {describe_value(data)}, not a tensor")
    return data


class _Callable:
    """A global the pickle may call with REDUCE: a name, an arity, a function."""

    __slots__ = ("name", "function", "arity")

    def __init__(self, name: str, function, arity: tuple[int, int]):
        self.name, self.function, self.arity = name, function, arity

    def __repr__(self):
        return self.name


# ----------------------------------------------------------------------------
# the pickle machine

#: opcode byte -> name, for every opcode the machine executes (torch.save
#: writes protocol 2; protocol 4's framing and STACK_GLOBAL are accepted too).
#: Everything else -- INST/OBJ/NEWOBJ object construction, the copyreg
#: extension registry, out-of-band buffers -- is refused by name.
OPCODES = {
    op.code.encode("latin-1")[0]: op.name
    for op in pickletools.opcodes
    if op.name
    in """PROTO FRAME STOP MARK POP POP_MARK DUP MEMOIZE PUT BINPUT LONG_BINPUT GET BINGET LONG_BINGET
    NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT
    STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8
    BINBYTES SHORT_BINBYTES BINBYTES8 EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3
    EMPTY_LIST LIST APPEND APPENDS EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET
    GLOBAL STACK_GLOBAL REDUCE BUILD PERSID BINPERSID""".split()
}
ALLOWED_OPCODES = frozenset(OPCODES.values())
_ALL_OPCODES = {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}

_PLAIN = (str, bytes, int, float, bool, type(None))
_REFUSED = object()


def _damaged(detail: str) -> WeightsError:
    return WeightsError(f"the checkpoint is damaged and cannot be read (its pickle {detail})")


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


class RestrictedUnpickler:
    """A pickle machine that builds only what a state_dict is made of.

    ``RestrictedUnpickler(file_or_bytes, read_storage, budget).load()``;
    ``read_storage(key, storage_type, numel)`` supplies the bytes of each
    storage the pickle refers to by persistent id. Each instance makes its
    own stand-ins for the allowed globals, so one load cannot affect another.
    """

    def __init__(self, file, read_storage, budget: Budget | None = None):
        self._data = file.read() if hasattr(file, "read") else bytes(file)
        self._read_storage = read_storage
        self._budget = budget if budget is not None else Budget(None)
        self._storages: dict = {}
        self._kinds = {name: _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()}
        tensor = _Callable(
            "torch._utils._rebuild_tensor_v2",
            lambda *args: rebuild_tensor(*args, budget=self._budget),
            (6, 7),
        )
        parameter = _Callable("torch._utils._rebuild_parameter", rebuild_parameter, (3, 3))
        self._globals = {
            ("collections", "OrderedDict"): _Callable("collections.OrderedDict", self._ordered_dict, (0, 0)),
            ("torch._utils", "_rebuild_tensor_v2"): tensor,
            ("torch._utils", "_rebuild_parameter"): parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _Callable(
                "torch._utils._rebuild_parameter_with_state", rebuild_parameter, (4, 4)
            ),
            **{("torch", name): kind for name, kind in self._kinds.items()},
        }
        self._callables = {id(v) for v in self._globals.values() if isinstance(v, _Callable)}
        # nesting depth of every container built here; ``_made`` keeps them
        # alive until the load ends, so that their ids stay unique
        self._depth: dict[int, int] = {}
        self._hashable: set[int] = set()
        self._made: list = []

    # -- containers ----------------------------------------------------------

    def _register(self, container, items=(), hashable=False):
        depth, known = 1, self._depth
        for v in items:
            d = known.get(id(v))
            if d is not None and d >= depth:
                depth = d + 1
        if depth > MAX_DEPTH:
            raise WeightsError(f"the checkpoint's pickle nests containers more than {MAX_DEPTH} deep")
        known[id(container)] = depth
        if hashable:
            plain, ok = _PLAIN, self._hashable
            if all(isinstance(v, plain) or id(v) in ok for v in items):
                ok.add(id(container))
        self._made.append(container)
        return container

    def _grow(self, container, items):
        """``container`` (a list, dict or set made here) receives ``items``."""
        depth = 1 + max((self._depth.get(id(v), 0) for v in items), default=0)
        if depth > MAX_DEPTH:
            raise WeightsError(f"the checkpoint's pickle nests containers more than {MAX_DEPTH} deep")
        if depth > self._depth[id(container)]:
            self._depth[id(container)] = depth

    def _is_hashable(self, value) -> bool:
        return isinstance(value, _PLAIN) or id(value) in self._hashable

    def _key(self, value):
        if not self._is_hashable(value):
            raise WeightsError(
                f"the checkpoint's pickle uses {describe_value(value)} as a dict key or set item; "
                "a state_dict's keys are strings"
            )
        return value

    def _ordered_dict(self):
        return self._register(collections.OrderedDict())

    def _target(self, kinds, opcode):
        if not self._stack:
            raise _damaged(f"has {opcode} on an empty stack")
        target = self._stack[-1]
        if type(target) not in kinds or id(target) not in self._depth:
            raise WeightsError(
                f"the checkpoint's pickle applies {opcode} to {describe_value(target)}, "
                "which a state_dict never does; refusing to load it"
            )
        return target

    # -- the stack -------------------------------------------------------------

    def _pop(self, k=1):
        stack = self._stack
        floor = self._marks[-1] if self._marks else 0
        if len(stack) - floor < k:
            raise _damaged("has a stack underflow")
        items = stack[len(stack) - k :]
        del stack[len(stack) - k :]
        return items

    def _pop_mark(self):
        if not self._marks:
            raise _damaged("has no MARK on the stack")
        floor = self._marks.pop()
        items = self._stack[floor:]
        del self._stack[floor:]
        return items

    def _read(self, k: int) -> bytes:
        start = self._pos
        if k < 0 or start + k > len(self._data):
            raise _damaged(f"is cut short: a {k}-byte argument at byte {start} of {len(self._data)}")
        self._pos = start + k
        return self._data[start : start + k]

    def _line(self, limit: int | None = None) -> bytes:
        start = self._pos
        end = self._data.find(b"\n", start)
        if end < 0 or (limit is not None and end - start > limit):
            raise _damaged(f"has an unterminated text argument at byte {start}")
        self._pos = end + 1
        return self._data[start:end]

    def _uint(self, k: int) -> int:
        return int.from_bytes(self._read(k), "little")

    def _int(self, raw: bytes) -> int:
        text = raw.strip().rstrip(b"L")
        if len(text) > 3 * MAX_INT_BYTES:
            raise WeightsError(f"the checkpoint's pickle holds an integer of {len(text)} digits")
        try:
            return int(text)
        except ValueError:
            raise WeightsError(f"the checkpoint's pickle holds a bad integer {describe_value(raw)}") from None

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise WeightsError("the checkpoint's pickle holds a string that is not UTF-8") from None

    # -- globals and calls -----------------------------------------------------

    def find_class(self, module, name):
        key = (module, name) if isinstance(module, str) and isinstance(name, str) else None
        if key not in self._globals:
            shown = f"{module}.{name}" if key else f"{describe_value(module)}.{describe_value(name)}"
            raise WeightsError(
                f"the checkpoint's pickle asks for the global {shown:.200}, which a state_dict never "
                "needs; refusing to load it (only tensors, storages and ordered dicts are allowed)"
            )
        return self._globals[key]

    def _reduce(self, function, args):
        if not isinstance(function, _Callable) or id(function) not in self._callables:
            raise WeightsError(f"the checkpoint's pickle calls {describe_value(function)}, which is not a "
                               "function a state_dict needs; refusing to load it")  # fmt: skip
        if not isinstance(args, tuple) or not function.arity[0] <= len(args) <= function.arity[1]:
            raise WeightsError(f"{function.name} is called with {describe_value(args)}")
        return function.function(*args)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightsError(f"unsupported persistent id in the checkpoint's pickle: {describe_value(pid)}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or self._kinds.get(kind.name) is not kind:
            raise WeightsError(
                f"storage {describe_value(key)} has an unknown storage type {describe_value(kind)}"
            )
        if not isinstance(key, str):
            raise WeightsError(f"storage key {describe_value(key)} is not a string")
        numel = _as_int(numel, "storage size")
        if key not in self._storages:
            self._storages[key] = _Storage(kind, self._read_storage(key, kind, numel))
        storage = self._storages[key]
        if storage.kind is not kind:
            raise WeightsError(f"storage {key!r:.80} is used as both {storage.kind} and {kind}")
        return storage

    # -- the loop --------------------------------------------------------------

    def load(self):
        """The object the pickle describes; a WeightsError for anything else."""
        self._pos, self._stack, self._marks, self._memo = 0, [], [], {}
        data, stack = self._data, self._stack
        ops = self._ops()
        while True:
            if self._pos >= len(data):
                raise _damaged("ends without a STOP opcode; is it truncated?")
            position = self._pos
            code = data[position]
            self._pos += 1
            op = ops.get(code, _REFUSED)
            if op is _REFUSED:
                name = _ALL_OPCODES.get(code, f"byte 0x{code:02x}")
                raise WeightsError(
                    f"the checkpoint's pickle uses opcode {name} (at byte {position}), "
                    "which a state_dict never needs; refusing to load it"
                )
            if code == 0x2E:  # STOP
                if not stack:
                    raise _damaged("stops on an empty stack")
                return stack[-1]
            op()

    def _ops(self) -> dict:
        """opcode byte -> handler for one load, merged from one table per
        opcode family; made afresh by each ``load`` (GLOBAL's cache too)."""
        push = self._stack.append
        byte, word = self._arg_readers()
        table = {"STOP": None}  # handled by the loop
        for part in (
            self._stack_ops(push),
            self._memo_ops(push, byte, word),
            self._number_ops(push, byte, word),
            self._text_ops(push, byte, word),
            self._container_ops(push),
            self._object_ops(push),
        ):
            assert not table.keys() & part.keys(), table.keys() & part.keys()
            table.update(part)
        assert set(table) == ALLOWED_OPCODES, set(table) ^ ALLOWED_OPCODES
        return {code: table[name] for code, name in OPCODES.items()}

    def _arg_readers(self):
        """``byte()`` and ``word(unpack)``: the 1- and 4-byte arguments, read
        inline (they are most of a state_dict's pickle) rather than through
        ``_read``, which is called only to raise on a cut-short pickle."""
        data, size = self._data, len(self._data)
        unpack_uint = struct.Struct("<I").unpack_from

        def byte():
            p = self._pos
            if p >= size:
                self._read(1)  # raises
            self._pos = p + 1
            return data[p]

        def word(unpack=unpack_uint):
            p = self._pos
            if p + 4 > size:
                self._read(4)  # raises
            self._pos = p + 4
            return unpack(data, p)[0]

        return byte, word

    def _stack_ops(self, push) -> dict:
        """Protocol, framing and the stack itself: PROTO FRAME MARK POP POP_MARK DUP."""
        s = self._stack

        def floor():
            return self._marks[-1] if self._marks else 0

        def pop():
            if len(s) > floor():
                s.pop()
            else:  # POP at a mark discards the mark, as pickle's own machine does
                self._pop_mark()

        def dup():
            if len(s) <= floor():
                raise _damaged("has DUP on an empty stack")
            push(s[-1])

        def proto():
            version = self._uint(1)
            if version > 5:
                raise WeightsError(f"the checkpoint's pickle uses protocol {version}, newer than 5")

        return {
            "PROTO": proto,
            "FRAME": lambda: self._read(8),
            "MARK": lambda: self._marks.append(len(s)),
            "POP": pop,
            "POP_MARK": self._pop_mark,
            "DUP": dup,
        }

    def _memo_ops(self, push, byte, word) -> dict:
        """The memo: MEMOIZE, PUT and GET in their text, 1- and 4-byte forms."""
        s = self._stack

        def memo_put(index):
            if not s:
                raise _damaged("has PUT on an empty stack")
            self._memo[index] = s[-1]
            if len(self._memo) > len(self._data) // 4 + 64:  # a state_dict memoizes one value in ~12 bytes
                raise _damaged("memo is larger than the pickle")

        def memo_get(index):
            if index not in self._memo:
                raise WeightsError(f"the checkpoint's pickle refers to memo entry {index}, never stored")
            push(self._memo[index])

        return {
            "MEMOIZE": lambda: memo_put(len(self._memo)),
            "PUT": lambda: memo_put(self._int(self._line(32))),
            "BINPUT": lambda: memo_put(byte()),
            "LONG_BINPUT": lambda: memo_put(word()),
            "GET": lambda: memo_get(self._int(self._line(32))),
            "BINGET": lambda: memo_get(byte()),
            "LONG_BINGET": lambda: memo_get(word()),
        }

    def _number_ops(self, push, byte, word) -> dict:
        """Constants and numbers: NONE, the booleans, the INT/LONG family, FLOAT/BINFLOAT."""
        unpack_int = struct.Struct("<i").unpack_from

        def const(value):
            return lambda: push(value)

        def long_bytes(n):
            if n > MAX_INT_BYTES:
                raise WeightsError(f"the checkpoint's pickle holds an integer of {n} bytes")
            push(int.from_bytes(self._read(n), "little", signed=True))

        def int_text():
            raw = self._line(4 * MAX_INT_BYTES)
            push(raw == b"01" if raw in (b"00", b"01") else self._int(raw))  # protocol 0's booleans

        def float_text():
            try:
                push(float(self._line(64)))
            except ValueError:
                raise WeightsError("the checkpoint's pickle holds a bad FLOAT") from None

        return {
            "NONE": const(None),
            "NEWTRUE": const(True),
            "NEWFALSE": const(False),
            "INT": int_text,
            "BININT": lambda: push(word(unpack_int)),
            "BININT1": lambda: push(byte()),
            "BININT2": lambda: push(self._uint(2)),
            "LONG": lambda: push(self._int(self._line(4 * MAX_INT_BYTES))),
            "LONG1": lambda: long_bytes(self._uint(1)),
            "LONG4": lambda: long_bytes(struct.unpack("<i", self._read(4))[0]),
            "FLOAT": float_text,
            "BINFLOAT": lambda: push(struct.unpack(">d", self._read(8))[0]),
        }

    def _text_ops(self, push, byte, word) -> dict:
        """Strings and bytes: STRING/BINSTRING (latin-1), UNICODE (UTF-8), BINBYTES."""

        def string(raw):
            raw = raw.strip()
            if len(raw) < 2 or raw[:1] not in b"'\"" or raw[-1:] != raw[:1]:
                raise WeightsError("the checkpoint's pickle has a badly quoted STRING")
            push(codecs.escape_decode(raw[1:-1])[0].decode("latin-1"))

        return {
            "STRING": lambda: string(self._line()),
            "BINSTRING": lambda: push(self._read(struct.unpack("<i", self._read(4))[0]).decode("latin-1")),
            "SHORT_BINSTRING": lambda: push(self._read(self._uint(1)).decode("latin-1")),
            "UNICODE": lambda: push(self._line().decode("raw-unicode-escape")),
            "BINUNICODE": lambda: push(self._text(self._read(word()))),
            "SHORT_BINUNICODE": lambda: push(self._text(self._read(byte()))),
            "BINUNICODE8": lambda: push(self._text(self._read(self._uint(8)))),
            "BINBYTES": lambda: push(self._read(self._uint(4))),
            "SHORT_BINBYTES": lambda: push(self._read(self._uint(1))),
            "BINBYTES8": lambda: push(self._read(self._uint(8))),
        }

    def _container_ops(self, push) -> dict:
        """Tuples, lists, dicts and sets, each registered (depth, hashability)
        as it is made; APPEND/SETITEM/ADDITEMS only on containers made here."""

        def tuple_of(items):
            push(self._register(tuple(items), items, hashable=True))

        def list_from(items):
            push(self._register(list(items), items))

        def new(container):
            return lambda: push(self._register(container()))

        def append(items):
            target = self._target({list}, "APPEND")
            self._grow(target, items)
            target.extend(items)

        def setitems(items):
            if len(items) % 2:
                raise _damaged("has an odd number of SETITEMS values")
            target = self._target({dict, collections.OrderedDict}, "SETITEM")
            self._grow(target, items[1::2])
            for k in range(0, len(items), 2):
                target[self._key(items[k])] = items[k + 1]

        def dict_from(items):
            push(self._register({}))
            setitems(items)

        def additems(items):
            target = self._target({set}, "ADDITEMS")
            self._grow(target, items)
            target.update(self._key(v) for v in items)

        def frozen(items):
            push(self._register(frozenset(self._key(v) for v in items), items, hashable=True))

        return {
            "EMPTY_TUPLE": lambda: tuple_of(()),
            "TUPLE": lambda: tuple_of(self._pop_mark()),
            "TUPLE1": lambda: tuple_of(self._pop(1)),
            "TUPLE2": lambda: tuple_of(self._pop(2)),
            "TUPLE3": lambda: tuple_of(self._pop(3)),
            "EMPTY_LIST": new(list),
            "LIST": lambda: list_from(self._pop_mark()),
            "APPEND": lambda: append(self._pop(1)),
            "APPENDS": lambda: append(self._pop_mark()),
            "EMPTY_DICT": new(dict),
            "DICT": lambda: dict_from(self._pop_mark()),
            "SETITEM": lambda: setitems(self._pop(2)),
            "SETITEMS": lambda: setitems(self._pop_mark()),
            "EMPTY_SET": new(set),
            "ADDITEMS": lambda: additems(self._pop_mark()),
            "FROZENSET": lambda: frozen(self._pop_mark()),
        }

    def _object_ops(self, push) -> dict:
        """Globals and calls: GLOBAL/STACK_GLOBAL (only the stand-ins of
        ``find_class``), REDUCE (only those), BUILD (a no-op on a dict made
        here) and the persistent ids of storages."""
        found = {}  # this load's GLOBAL lookups, by their raw (module, name) lines

        def global_():
            key = (self._line(512), self._line(512))
            if key not in found:
                found[key] = self.find_class(self._text(key[0]), self._text(key[1]))
            push(found[key])

        def stack_global():
            module, name = self._pop(2)
            push(self.find_class(module, name))

        def reduce():
            function, args = self._pop(2)
            push(self._reduce(function, args))

        def build():
            (state,) = self._pop(1)
            self._target({dict, collections.OrderedDict}, "BUILD")
            # a state_dict's BUILD carries its ``_metadata`` (version numbers); a
            # plain dict has no attributes to set, so it changes nothing
            if state is not None and not isinstance(state, (dict, tuple)):
                raise WeightsError(f"the checkpoint's pickle BUILDs a dict from {describe_value(state)}")

        return {
            "GLOBAL": global_,
            "STACK_GLOBAL": stack_global,
            "REDUCE": reduce,
            "BUILD": build,
            "PERSID": lambda: push(self.persistent_load(self._text(self._line()))),
            "BINPERSID": lambda: push(self.persistent_load(self._pop(1)[0])),
        }


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


def check_zip_layout(archive: zipfile.ZipFile, file_size: int) -> dict[str, zipfile.ZipInfo]:
    """name -> ZipInfo of an archive whose entries are unique, lie inside the
    file and do not overlap (Python's zipfile checks none of this), so the
    entries' sizes add up to at most the file size. Raises a WeightsError."""
    infos = archive.infolist()
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.filename in by_name:
            raise WeightsError(f"the zip archive holds two entries named {info.filename!r:.120}")
        by_name[info.filename] = info
        if info.compress_size > file_size or info.file_size > (1 << 48):
            raise WeightsError(
                f"entry {info.filename!r:.120} claims {max(info.compress_size, info.file_size):,} bytes, "
                f"more than the whole {file_size:,}-byte file"
            )
    end, previous = 0, None
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset < end:
            raise WeightsError(
                f"zip entries {previous.filename!r:.120} and {info.filename!r:.120} overlap in the file"
            )
        end, previous = info.header_offset + 30 + info.compress_size, info  # 30: the local header
    start_dir = getattr(archive, "start_dir", file_size)
    if end > start_dir:
        raise WeightsError(f"zip entry {previous.filename!r:.120} runs into the archive's directory")
    return by_name


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
        except MemoryError:
            raise WeightsError(f"{where}: not enough memory to read the checkpoint") from None
        except Exception as exc:  # any damage to the zip entries (bad CRC, bad local header ...)
            raise WeightsError(
                f"{where}: the checkpoint is damaged and cannot be read ({type(exc).__name__}: {exc})"
            ) from None


def _read_archive(archive: zipfile.ZipFile, where: str, file_size: int):
    infos = check_zip_layout(archive, file_size)
    pickles = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        if any(n.endswith("/constants.pkl") for n in infos):
            raise WeightsError("this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint")
        if any(n.endswith("__tinyconv__.npy") for n in infos):
            raise WeightsError("this is a tinyconv .npz file; read it with tinyconv.load")
        raise WeightsError(f"the zip archive has {len(pickles)} '<name>/data.pkl' entries, expected 1")
    prefix = pickles[0][: -len("data.pkl")]
    budget = Budget.for_file(file_size, "the checkpoint")
    byteorder = "little"
    if f"{prefix}byteorder" in infos:
        byteorder = _read_entry(archive, infos[f"{prefix}byteorder"], 16).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise WeightsError(f"unknown byte order {byteorder!r}")

    def read_storage(key, kind, numel):
        name = f"{prefix}data/{key}"
        info = infos.get(name)
        if info is None:
            raise WeightsError(f"storage {key!r:.80} is missing from the archive (no entry {name!r:.120})")
        if numel < 0:
            raise WeightsError(f"storage {key!r:.80} has a negative size")
        nbytes = numel * kind.dtype.itemsize
        if info.file_size != nbytes:
            raise WeightsError(
                f"storage {key!r:.80} should hold {numel} x {kind.dtype.itemsize} = {nbytes} bytes, "
                f"entry {name!r:.120} has {info.file_size}"
            )
        budget.take(nbytes, f"storage {key!r:.80}")
        data = _read_array_entry(archive, info, kind.dtype, numel)
        if byteorder == "big" and kind.dtype.itemsize > 1:
            data.byteswap(inplace=True)
        return data

    data_pkl = _read_entry(archive, infos[pickles[0]], None)
    return RestrictedUnpickler(data_pkl, read_storage, budget).load()


def _check_stored(info: zipfile.ZipInfo) -> None:
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise WeightsError(
            f"entry {info.filename!r:.120} is compressed; torch.save writes entries uncompressed"
        )


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int | None) -> bytes:
    """Bytes of one entry; refuses compressed entries (torch stores its
    entries uncompressed, and a compressed one could expand without bound)."""
    _check_stored(info)
    if limit is not None and info.file_size > limit:
        raise WeightsError(
            f"entry {info.filename!r:.120} holds {info.file_size} bytes, expected at most {limit}"
        )
    return archive.read(info)


def _read_array_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dtype: np.dtype, numel: int):
    """A stored entry's bytes read straight into a new writable array of
    ``numel`` elements (no second copy), its CRC checked. Reads the file
    directly: ``zipfile``'s per-entry machinery would dominate the time of a
    checkpoint with many small storages."""
    _check_stored(info)
    fp = archive.fp
    fp.seek(info.header_offset)
    local = fp.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise WeightsError(f"entry {info.filename!r:.120} has no valid local header")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    if start + info.file_size > getattr(archive, "start_dir", start + info.file_size):
        raise WeightsError(f"entry {info.filename!r:.120} runs into the archive's directory")
    fp.seek(start)
    data = np.empty(numel, dtype=dtype)
    view = memoryview(data).cast("B")
    if fp.readinto(view) != len(view):
        raise WeightsError(f"entry {info.filename!r:.120} is cut short; is the file truncated?")
    if zlib.crc32(view) != info.CRC:
        raise WeightsError(f"entry {info.filename!r:.120} fails its CRC check: the file is damaged")
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
            raise WeightsError(f"{where}: state_dict key {describe_value(key)} is not a string")
        if not isinstance(value, Tensor):
            raise WeightsError(
                f"{where}: entry {key!r:.120} is a {type(value).__name__}, not a tensor; "
                "expected a state_dict or a dict wrapping one under 'state_dict' or 'model'"
            )
        state[key] = value
    if not state:
        raise WeightsError(f"{where} holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


__all__ = ["RestrictedUnpickler", "Tensor", "read_pth", "tensors"]
