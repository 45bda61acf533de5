"""Choosing the array library: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module that imports CuPy. Every kernel in tinyconv starts with
``xp = get_array_module(x)`` and then calls ``xp.<function>``, so one code path
serves both libraries. Arrays come back on the device they went in on.

A backend is a (name, array type, module) triple. ``numpy`` is always there,
``cuda`` is registered the first time CuPy imports cleanly and sees a GPU, and
``register_backend`` lets a test double (or a future library that mirrors the
NumPy API) take part in exactly the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import DeviceError, OptionError

__all__ = [
    "DeviceError",
    "get_array_module",
    "device_of",
    "to_device",
    "to_numpy",
    "cuda_available",
    "register_backend",
    "synchronize",
    "gemm_accumulate",
    "blas_gemm_available",
    "BufferPool",
    "new_array",
    "batch_map",
    "batch_threads",
    "worker_threads",
]


# name -> (array type, module); the module must offer NumPy's API plus
# ``asnumpy`` (device -> host) and ``asarray`` (host -> device), like CuPy.
_BACKENDS: dict[str, tuple[type, object]] = {}
_cupy_checked = False
_cupy_error: str | None = None


def _try_cupy() -> None:
    """Register CuPy as ``cuda`` once, if it imports and sees a GPU."""
    global _cupy_checked, _cupy_error
    if _cupy_checked:
        return
    _cupy_checked = True
    try:
        import cupy  # noqa: PLC0415  (the one place CuPy is imported)

        if cupy.cuda.runtime.getDeviceCount() < 1:
            _cupy_error = "CuPy is installed but sees no GPU"
            return
    except ImportError:
        _cupy_error = "CuPy is not installed (pip install 'tinyconv[gpu]')"
        return
    except Exception as exc:  # CUDA driver errors come in many types
        _cupy_error = f"CuPy could not reach a GPU: {exc}"
        return
    _BACKENDS["cuda"] = (cupy.ndarray, cupy)


def register_backend(name: str, array_type: type, module: object) -> None:
    """Make ``module`` the array module for arrays of ``array_type``.

    ``module`` must provide NumPy's functions under their NumPy names, plus
    ``asarray`` (host array in, device array out) and ``asnumpy`` (the reverse).
    """
    if name == "cpu":
        raise OptionError("'cpu' is NumPy's name and cannot be re-registered")
    _BACKENDS[name] = (array_type, module)


def cuda_available() -> bool:
    """True when CuPy imports and a GPU is visible."""
    _try_cupy()
    return "cuda" in _BACKENDS


def get_array_module(*arrays):
    """The array module (``numpy``, ``cupy``, ...) that owns ``arrays``.

    Raises DeviceError when the arrays live on different devices.
    """
    _try_cupy()
    found = None
    for a in arrays:
        if a is None or isinstance(a, (int, float, np.ndarray, np.generic)):
            module = np
        else:
            module = next(
                (mod for typ, mod in _BACKENDS.values() if isinstance(a, typ)), np
            )
        if found is None:
            found = module
        elif module is not found:
            raise DeviceError(
                f"arrays on different devices ({device_of(arrays[0])} and "
                f"{device_of(a)}): move them with tinyconv.to_device or net.to()"
            )
    return np if found is None else found


def device_of(x) -> str:
    """``"cpu"`` for NumPy arrays, else the backend name (``"cuda"``...)."""
    _try_cupy()
    for name, (typ, _) in _BACKENDS.items():
        if isinstance(x, typ):
            return name
    return "cpu"


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    _try_cupy()
    if device not in _BACKENDS:
        if device == "cuda":
            raise DeviceError(f"device 'cuda' is not available: {_cupy_error}")
        known = ", ".join(["cpu", "cuda", *[k for k in _BACKENDS if k != "cuda"]])
        raise DeviceError(f"unknown device {device!r}; expected one of: {known}")


def to_numpy(x):
    """A NumPy copy (or the array itself) of ``x``, wherever it lives."""
    if isinstance(x, np.ndarray):
        return x
    for typ, module in _BACKENDS.values():
        if isinstance(x, typ):
            return module.asnumpy(x)
    return np.asarray(x)


def to_device(x, device: str = "cpu"):
    """``x`` on ``device`` (``"cpu"``, ``"cuda"``); no copy when already there."""
    _check_device(device)
    if device == "cpu":
        return to_numpy(x)
    typ, module = _BACKENDS[device]
    if isinstance(x, typ):
        return x
    return module.asarray(to_numpy(x))


def synchronize(x=None):
    """Wait until the device holding ``x`` has finished its queued work.

    GPU kernels run asynchronously: a timer must call this before reading the
    clock. A no-op for NumPy arrays (and for ``None`` when no GPU is in use).
    Returns ``x``.
    """
    module = get_array_module(x) if x is not None else _BACKENDS.get("cuda", (None, np))[1]
    cuda = getattr(module, "cuda", None)
    if module is not np and cuda is not None and hasattr(cuda, "Device"):
        cuda.Device().synchronize()
    return x


# ----------------------------------------------------------------------------
# out += a @ b in place: the BLAS's GEMM with beta = 1
#
# NumPy does not expose GEMM's beta, so ``out += a @ b`` costs a temporary and
# a second pass over ``out``. On NumPy the accumulation calls cblas_?gemm of
# the BLAS that NumPy itself loaded: the library is found among the shared
# objects already mapped into this process, so no second BLAS (with a second
# thread pool fighting NumPy's) is ever loaded. Where it cannot be found
# (another platform, a BLAS without CBLAS symbols, a failed self-check) or the
# operands cannot be described to BLAS (no unit stride, overlap with ``out``,
# mixed or non-float dtypes), matmul + add does the same sum.

_CBLAS_ROW_MAJOR, _CBLAS_NO_TRANS, _CBLAS_TRANS = 101, 111, 112
_blas_gemm: dict | None = None  # dtype char -> ctypes function; {} when unavailable
_blas_source: str | None = None  # the library's path, or why there is none


def _mapped_blas_paths() -> list[str]:
    """Paths of the shared objects mapped into this process whose name says BLAS."""
    try:
        with open("/proc/self/maps") as f:
            paths = [line.split()[-1] for line in f if line.rstrip().endswith(".so") or ".so." in line]
    except OSError:
        return []
    seen = []
    for path in paths:
        name = path.rsplit("/", 1)[-1].lower()
        if path.startswith("/") and "blas" in name and path not in seen:
            seen.append(path)
    return seen


def _cblas_functions(lib) -> dict:
    """{'f': sgemm, 'd': dgemm} from ``lib``, with the integer width its names imply."""
    uses_64bit_ints = "USE64BITINT" in str(_numpy_blas_config())
    for prefix in ("scipy_", ""):
        for suffix, int64 in (("64_", True), ("_64", True), ("", uses_64bit_ints)):
            try:
                fns = {
                    "f": getattr(lib, f"{prefix}cblas_sgemm{suffix}"),
                    "d": getattr(lib, f"{prefix}cblas_dgemm{suffix}"),
                }
            except AttributeError:
                continue
            blasint = ctypes.c_int64 if int64 else ctypes.c_int32
            for char, fn in fns.items():
                real = ctypes.c_float if char == "f" else ctypes.c_double
                # order, transa, transb (C enums), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc
                fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, blasint, blasint, blasint, real,
                               ctypes.c_void_p, blasint, ctypes.c_void_p, blasint, real,
                               ctypes.c_void_p, blasint]  # fmt: skip
                fn.restype = None
            return fns
    return {}


def _numpy_blas_config():
    try:
        return np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # older NumPy, or a build without the record
        return {}


def _find_blas() -> dict:
    """Look up (once) the cblas GEMMs of NumPy's own BLAS; {} when there are none."""
    global _blas_gemm, _blas_source
    if _blas_gemm is not None:
        return _blas_gemm
    _blas_gemm, _blas_source = {}, "no BLAS library is mapped into this process"
    if not sys.platform.startswith("linux"):
        _blas_source = f"BLAS lookup is implemented for Linux only (this is {sys.platform})"
        return _blas_gemm
    np.ones((2, 2)) @ np.ones((2, 2))  # NumPy's BLAS is mapped by now
    for path in _mapped_blas_paths():
        try:
            # already mapped: dlopen returns the loaded object, it loads nothing new
            fns = _cblas_functions(ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_NOLOAD", 4)))
        except OSError:
            continue
        if fns and _self_check(fns):
            _blas_gemm, _blas_source = fns, path
            return _blas_gemm
        _blas_source = f"{path} has no usable cblas_sgemm/cblas_dgemm"
    return _blas_gemm


def _self_check(fns) -> bool:
    """One small product through each function, with transposed and strided
    operands, against matmul: a wrong guess of the integer width fails here."""
    global _blas_gemm
    rng = np.random.default_rng(0)
    saved, _blas_gemm = _blas_gemm, fns
    try:
        for dtype in (np.float32, np.float64):
            a = rng.standard_normal((7, 5)).astype(dtype).T  # (5, 7), column-major
            b = rng.standard_normal((7, 10)).astype(dtype)[:, 2:8]  # (7, 6), leading dimension 10
            big = rng.standard_normal((5, 9)).astype(dtype)
            out = big[:, 1:7]  # (5, 6), leading dimension 9
            want = out + a @ b
            if not _blas_accumulate(out, a, b):
                return False
            if not np.allclose(out, want, rtol=1e-4, atol=1e-4):
                return False
    finally:
        _blas_gemm = saved
    return True


def _layout(m, itemsize):
    """(transposed?, leading dimension) of a 2-D array for row-major BLAS, or None."""
    rows, cols = m.shape
    s0, s1 = m.strides
    if s0 % itemsize or s1 % itemsize or s0 < 0 or s1 < 0:
        return None
    s0, s1 = s0 // itemsize, s1 // itemsize
    if s1 == 1 or cols == 1:  # row-major rows
        ld = s0 if rows > 1 else cols
        if ld >= max(1, cols):
            return False, ld
    if s0 == 1 or rows == 1:  # column-major: a transposed row-major array
        ld = s1 if cols > 1 else rows
        if ld >= max(1, rows):
            return True, ld
    return None


def _blas_accumulate(out, a, b) -> bool:
    """out += a @ b through the BLAS when the operands allow it; False if not done."""
    fn = _blas_gemm.get(out.dtype.char) if _blas_gemm else None
    if fn is None or a.dtype != out.dtype or b.dtype != out.dtype:
        return False
    if not (out.flags.writeable and out.flags.aligned and a.flags.aligned and b.flags.aligned):
        return False
    size = out.itemsize
    lo, la, lb = _layout(out, size), _layout(a, size), _layout(b, size)
    if lo is None or la is None or lb is None or lo[0]:  # out must be row-major
        return False
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    m, k = a.shape
    n = b.shape[1]
    trans_a = _CBLAS_TRANS if la[0] else _CBLAS_NO_TRANS
    trans_b = _CBLAS_TRANS if lb[0] else _CBLAS_NO_TRANS
    fn(_CBLAS_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0,
       a.ctypes.data, la[1], b.ctypes.data, lb[1], 1.0, out.ctypes.data, lo[1])  # fmt: skip
    return True


def blas_gemm_available() -> str | None:
    """The path of the BLAS library ``gemm_accumulate`` calls on NumPy arrays,
    or None when it falls back to matmul + add."""
    return _blas_source if _find_blas() else None


def gemm_accumulate(out, a, b, use_blas: bool = True):
    """out += a @ b, in place, for 2-D arrays; returns ``out``.

    a: (M, K), b: (K, N), out: (M, N), any of them a strided view (a slice, a
    transpose). On NumPy: the BLAS GEMM with beta = 1 (no temporary for
    a @ b, one pass over ``out``) when NumPy's BLAS offers cblas and the
    strides can be described to it, else ``out += a @ b``. On CuPy:
    ``cupy.cublas.gemm`` with beta = 1 (which copies operands it cannot
    describe). Any other array module (a test double): ``out += a @ b``.
    ``use_blas=False`` forces the fallback (tests compare the two).
    """
    xp = get_array_module(out, a, b)
    if a.ndim != 2 or b.ndim != 2 or out.shape != (a.shape[0], b.shape[1]) or a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm_accumulate: shapes {out.shape} += {a.shape} @ {b.shape} do not match")
    if a.shape[1] == 0 or out.size == 0:
        return out
    if use_blas:
        if xp is np:
            _find_blas()
            if _blas_accumulate(out, a, b):
                return out
        elif getattr(xp, "__name__", "") == "cupy" and a.dtype == b.dtype == out.dtype:
            from cupy import cublas  # noqa: PLC0415  (CuPy is imported in this module only)

            cublas.gemm("N", "N", a, b, out=out, alpha=1.0, beta=1.0)
            return out
    out += xp.matmul(a, b)
    return out


# ----------------------------------------------------------------------------
# buffers reused between calls


def _references(bucket: list, i: int) -> int:
    """sys.getrefcount of ``bucket[i]`` as ``BufferPool`` sees it."""
    return sys.getrefcount(bucket[i])


# the count of an array that only a pool's list holds, measured the way the
# pool measures it (so the interpreter's own temporary references cancel out)
_UNHELD = _references([np.empty(0)], 0)


class BufferPool:
    """NumPy arrays kept between calls and handed out again once nothing else holds them.

    A large array freed and allocated anew on every call costs page faults
    (the allocator gives big blocks back to the system, which hands them out
    zeroed page by page); a layer that takes its outputs from a pool pays
    that once. Only what a layer returns (and its cache) comes from the pool,
    never its work buffers: those die within the call, and held in the pool
    each layer's would add up. ``empty(xp, shape, dtype)`` returns an
    uninitialised array: a held array of that shape and dtype that no one
    else references any more (no caller, no view of it, no cache, by
    CPython's reference count), else a new one, held for next time while
    fewer than ``per_key`` are. So a result someone still holds is never
    handed out again, and the pool holds at most what was alive at once.
    ``release()`` lets everything go (``Layer.forget`` calls it). On CuPy,
    whose memory pool already reuses device memory, and on any other array
    module, ``empty`` is ``xp.empty``.
    """

    def __init__(self, per_key: int = 8):
        self.per_key = int(per_key)
        self._held: dict[tuple, list] = {}
        # batch_map's threads share a layer's pool: the check and the hand-out
        # are one step (the caller holds its reference before the lock opens)
        self._lock = threading.Lock()

    def empty(self, xp, shape, dtype):
        if xp is not np:
            return xp.empty(shape, dtype=dtype)
        key = (tuple(int(v) for v in shape), np.dtype(dtype))
        with self._lock:
            bucket = self._held.setdefault(key, [])
            for i in range(len(bucket)):
                if _references(bucket, i) == _UNHELD:
                    return bucket[i]
            array = np.empty(key[0], dtype=key[1])
            if len(bucket) < self.per_key:
                bucket.append(array)
            return array

    def __reduce__(self):  # a copy (deepcopy, pickle) starts empty: buffers are not state
        return (BufferPool, (self.per_key,))

    def release(self):
        self._held = {}

    def trim(self):
        """Let go of the arrays no one else holds now, keep those in use
        (``Sequential.forward`` calls it at the end of a pass: what the pass
        freed should not sit idle while the backward pass allocates)."""
        with self._lock:
            for key, bucket in list(self._held.items()):
                kept = [bucket[i] for i in range(len(bucket)) if _references(bucket, i) != _UNHELD]
                if kept:
                    self._held[key] = kept
                else:
                    del self._held[key]

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held (in use or free)."""
        return sum(a.nbytes for bucket in self._held.values() for a in bucket)


def new_array(xp, shape, dtype, pool: BufferPool | None = None):
    """An uninitialised array from ``pool`` (see ``BufferPool``) or, with no pool, a fresh one."""
    return xp.empty(shape, dtype=dtype) if pool is None else pool.empty(xp, shape, dtype)


# ----------------------------------------------------------------------------
# the batch split over threads
#
# NumPy runs its element-wise work, copies and reductions on one core; only
# its BLAS uses the others. The layers therefore split a batch into one
# contiguous piece per thread (``batch_map``): the images are independent,
# NumPy and the BLAS release the GIL, and while the pieces run the BLAS is
# set to one thread (OpenBLAS's thread count is one setting for the whole
# process; the calling thread waits meanwhile, so no other GEMM wants more),
# so the threads never oversubscribe the cores. Without that setting
# (another BLAS), or on another array module, the batch runs whole in the
# calling thread with the BLAS's own threads, as before.

_set_threads = None  # OpenBLAS's openblas_set_num_threads, once found; False: none
_get_threads = None
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_map_lock = threading.Lock()


def _find_thread_control() -> bool:
    """Look up (once) OpenBLAS's thread-count setting in NumPy's own BLAS."""
    global _set_threads, _get_threads
    if _set_threads is not None:
        return bool(_set_threads)
    _set_threads = False
    if not _find_blas():
        return False
    lib = ctypes.CDLL(_blas_source, mode=getattr(ctypes, "RTLD_NOLOAD", 4))
    found = {}
    for role in ("set", "get"):
        for prefix, suffix in (("scipy_", "64_"), ("scipy_", "_64"), ("", "64_"), ("", "")):
            fn = getattr(lib, f"{prefix}openblas_{role}_num_threads{suffix}", None)
            if fn is not None:
                found[role] = fn
                break
    if len(found) < 2:
        return False
    found["set"].argtypes, found["set"].restype = [ctypes.c_int], None
    found["get"].argtypes, found["get"].restype = [], ctypes.c_int
    _set_threads, _get_threads = found["set"], found["get"]
    return True


_thread_limit: int | None = None  # set by ``batch_threads``


def _blas_threads() -> int:
    """The BLAS's thread count when it can be set, else 1."""
    return max(1, int(_get_threads())) if _find_thread_control() else 1


def worker_threads() -> int:
    """How many threads ``batch_map`` splits a NumPy batch over: the BLAS's
    thread count when it can be set, else 1; at most ``batch_threads``'s limit."""
    count = _blas_threads()
    return count if _thread_limit is None else max(1, min(count, _thread_limit))


@contextlib.contextmanager
def batch_threads(limit: int | None):
    """Inside the block ``batch_map`` uses at most ``limit`` threads (1: every
    batch whole in the calling thread, the BLAS with its own threads; None:
    no limit). The split changes float32 results only by the order of the
    GEMMs' sums."""
    global _thread_limit
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise OptionError(f"batch_threads limit must be a positive integer or None, got {limit!r}")
    saved, _thread_limit = _thread_limit, limit
    try:
        yield
    finally:
        _thread_limit = saved


def _executor_for(size: int) -> ThreadPoolExecutor:
    global _executor, _executor_size
    if _executor is None or _executor_size < size:
        if _executor is not None:
            _executor.shutdown(wait=True)
        _executor, _executor_size = ThreadPoolExecutor(size, thread_name_prefix="tinyconv"), size
    return _executor


def batch_map(fn, n: int, xp=np) -> list:
    """[fn(a, b) for each piece a:b of range(n)], the pieces contiguous, in
    order, one per thread (``worker_threads``), run at once with the BLAS at
    one thread; one piece, fn(0, n) in this thread, when there is one
    thread, one image or an array module other than NumPy, and inside a
    piece (no nesting). An exception in any piece is raised here.
    """
    if xp is not np:
        return [fn(0, n)]
    count, threads = _blas_threads(), min(worker_threads(), n)
    if threads <= 1 or threading.current_thread().name.startswith("tinyconv") or not _map_lock.acquire(False):
        return [fn(0, n)]
    try:
        step = -(-n // threads)
        pieces = [(a, min(n, a + step)) for a in range(0, n, step)]
        _set_threads(1)
        try:
            return list(_executor_for(threads).map(lambda piece: fn(*piece), pieces))
        finally:
            _set_threads(count)
    finally:
        _map_lock.release()
