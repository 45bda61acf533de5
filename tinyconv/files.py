"""Writing files safely: atomically, exclusively, never through a symlink.

``atomic_write(path)`` opens a fresh temporary file in ``path``'s folder with
``O_CREAT | O_EXCL | O_NOFOLLOW`` (a name nobody else can have opened, and a
symlink planted under it is refused, never followed), lets the caller write,
then flushes, ``fsync``s and renames it over ``path`` in one step, and
``fsync``s the folder. On any failure the temporary file is removed. Two
processes writing one path therefore each write their own file, and ``path``
ends as one of the two complete files; a reader never sees a half-written one.

``check_output(path, inputs)`` refuses, before any work, an output that is
empty, lies under a regular file, is a folder, or names one of the inputs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .errors import OutputError

__all__ = ["atomic_write", "check_output", "check_output_folder", "install", "write_bytes", "write_text"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _blocking_file(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` that is not a folder, if any."""
    for ancestor in path.parents:
        if ancestor.exists() or ancestor.is_symlink():
            return None if ancestor.is_dir() else ancestor
    return None


def check_output(path, inputs=(), what: str = "output") -> Path:
    """``path`` as a Path, or an OutputError naming why it cannot be written:
    an empty name, a folder, a path under a regular file, or one of ``inputs``."""
    if path is None or not str(os.fspath(path)).strip():
        raise OutputError(f"the {what} path is empty")
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a folder; give a file name")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise OutputError(f"cannot write {what} {str(path)!r}: {str(blocker)!r} is a file, not a folder")
    for source in inputs:
        if source is None:
            continue
        source = Path(source)
        same = path.resolve() == source.resolve()
        with contextlib.suppress(OSError):
            same = same or (path.exists() and os.path.samefile(path, source))
        if same:
            raise OutputError(f"{what} {str(path)!r} is the input {str(source)!r}; refusing to overwrite it")
    return path


def check_output_folder(folder, inputs=(), what: str = "output folder") -> Path:
    """Like ``check_output`` for a folder that will hold the outputs."""
    if folder is None or not str(os.fspath(folder)).strip():
        raise OutputError(f"the {what} path is empty")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {str(folder)!r} exists and is not a folder")
    blocker = _blocking_file(folder)
    if blocker is not None:
        raise OutputError(f"cannot create {what} {str(folder)!r}: {str(blocker)!r} is a file, not a folder")
    return folder


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every system can)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(path: Path) -> tuple[Path, int]:
    for _ in range(100):
        name = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return name, os.open(name, _FLAGS, 0o666)
        except FileExistsError:  # taken (or a planted symlink): draw another name
            continue
    raise OutputError(f"cannot create a temporary file beside {str(path)!r}")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", inputs=()):
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears, whole,
    only when the block ends without an exception (see the module docstring).
    ``mode`` is "wb" or "w" (UTF-8 text); ``inputs`` are paths it must not be."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = check_output(path, inputs)
    tmp, fd = _temporary(path)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def write_bytes(path, data: bytes, inputs=()) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``)."""
    with atomic_write(path, "wb", inputs) as f:
        f.write(data)
    return Path(path)


def write_text(path, text: str, inputs=()) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_write``)."""
    with atomic_write(path, "w", inputs) as f:
        f.write(text)
    return Path(path)


def install(source, path) -> Path:
    """Move the finished file ``source`` to ``path`` durably: fsync it, rename
    it (a symlink at ``path`` is replaced, not followed), fsync the folder."""
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(source, path)
    _fsync_folder(Path(path).parent)
    return Path(path)
