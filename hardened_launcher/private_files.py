"""Writing owner-only (0600) files: exclusively, atomically replacing, or published exclusively.

Every file is opened with ``O_NOFOLLOW | O_CLOEXEC`` and its mode is set with ``fchmod`` (so the
umask cannot loosen or tighten it), written completely and fsynced before it is closed.

* :func:`create_exclusive` creates ``path`` itself with ``O_EXCL``: an existing file, or a
  symlink planted at ``path``, is never followed or overwritten.
* :func:`replace_atomically` writes a fresh temporary file in the same directory and moves it
  over ``path`` with ``os.replace``: a reader sees the old file or the new one, never a
  half-written one.
* :func:`publish_exclusive` writes a fresh temporary file and hard-links it to ``path``: a
  reader never sees a half-written file, and an existing ``path`` is never replaced (a
  concurrent writer that got there first wins).

Each raises :class:`OSError` (``FileExistsError`` for "something is already at ``path``") and
leaves no temporary file behind; callers translate it into their own domain error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "PRIVATE_FILE_MODE",
    "create_exclusive",
    "non_regular_kind",
    "publish_exclusive",
    "replace_atomically",
]

PRIVATE_FILE_MODE: Final = 0o600
_NEW_FILE_FLAGS: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
)

_Data = bytes | bytearray | memoryview


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "something other than a regular file"


def non_regular_kind(path: Path) -> str | None:
    """What is at ``path`` when a replacing write must not touch it, else None.

    None: nothing there, a regular file, a symlink to one, or a dangling symlink (replacing
    puts a file where the link was; the target is never written). Otherwise a description: "a
    device", "a FIFO", "a directory", "a socket", or "a symbolic link to a device" and so on.
    A looping link or one this user cannot follow raises the ``OSError``.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        try:
            target = path.stat().st_mode
        except FileNotFoundError:
            return None
        return None if stat.S_ISREG(target) else f"a symbolic link to {_kind(target)}"
    return None if stat.S_ISREG(mode) else _kind(mode)


def create_exclusive(path: Path, data: _Data, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Create ``path`` (which must not exist, not even as a symlink) holding exactly ``data``.

    Raises ``FileExistsError`` if anything is at ``path``. If writing fails, the partly
    written file is removed again before the ``OSError`` is raised.
    """
    try:
        fd = os.open(path, _NEW_FILE_FLAGS, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink: something is already there
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from exc
        raise
    try:
        _fill(fd, data, mode)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)


def replace_atomically(path: Path, data: _Data, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Make ``path`` hold exactly ``data``, replacing what is there in one ``os.replace``.

    The directory is fsynced afterwards (best effort: the file is already in place).
    """
    temporary = _write_temporary(path, data, mode)
    try:
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        _fsync_directory(path.parent)


def publish_exclusive(path: Path, data: _Data, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Make ``path`` hold exactly ``data`` unless something is already there.

    Raises ``FileExistsError`` if ``path`` exists (it is left untouched). The directory is
    fsynced afterwards, and an error doing so is raised.
    """
    temporary = _write_temporary(path, data, mode)
    try:
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _write_temporary(path: Path, data: _Data, mode: int) -> Path:
    """A fresh, fully written and fsynced temporary file next to ``path``."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, _NEW_FILE_FLAGS, mode)
    try:
        try:
            _fill(fd, data, mode)
        finally:
            os.close(fd)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _fill(fd: int, data: _Data, mode: int) -> None:
    os.fchmod(fd, mode)
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
