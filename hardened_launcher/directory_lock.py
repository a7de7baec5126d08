"""One writing process per directory: an advisory ``flock`` on the directory itself.

The audit log, the launcher's state and the control plane's state each assume a single process
writes them. Two writers on one audit directory fork the hash chain: the second one seals the
first one's live segment with a recovery checkpoint and starts its own, the first keeps
appending, and the log no longer verifies (it reads exactly like a tampered log). Two launchers
on one state directory share a launcher ID; two ``controlplane serve`` on one state directory
race for the same assignments and doorbell. An operator can set this up by accident (a systemd
unit plus a manual ``start`` to debug, two units with one ``HL_STATE_DIR``), so every such
writer takes this lock first and refuses, with a message naming the directory, when another
process holds it.

The lock is on an ``O_DIRECTORY`` descriptor (no lock file to leave behind or to be replaced),
opened ``O_CLOEXEC`` so no executed child inherits it; the kernel drops it when the holder dies,
so a crash never leaves a stale lock. A path through a symbolic link locks the directory it
names, which is the one the writer uses, so two paths to one directory meet in the same lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

from hardened_launcher.errors import RetryableError
from hardened_launcher.terminal import for_terminal


class DirectoryInUseError(RetryableError):
    """Another process holds the directory's writer lock (exit 75: it may pass once it stops)."""

    default_reason = "directory_in_use"


class DirectoryLock:
    """An exclusive, non-blocking writer lock on one directory; :meth:`release` (or the owning
    process's exit) lets it go. Released when garbage-collected, like a closed file."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"DirectoryLock(path={str(self.path)!r}, held={self.held})"

    @property
    def held(self) -> bool:
        return self._fd >= 0

    @classmethod
    def acquire(cls, path: Path, *, what: str, reason: str, hint: str) -> DirectoryLock:
        """Lock ``path`` (an existing directory) or raise :class:`DirectoryInUseError`.

        ``what`` names the directory's role in the message (``the audit log``); ``reason`` is
        the refusal's slug; ``hint`` says what to do. A path that cannot be opened or locked for
        another reason (not a directory, no permission, a filesystem without locks) is refused
        too, with the system's reason: without the lock nothing guarantees a single writer.
        """
        shown = for_terminal(str(path))
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise DirectoryInUseError(
                f"cannot lock {what} in {shown}: {_why(exc)}",
                hint="make it a directory this user can read",
                reason=reason,
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DirectoryInUseError(
                    f"{what} in {shown} is in use by another process", hint=hint, reason=reason
                ) from None
            raise DirectoryInUseError(
                f"cannot lock {what} in {shown}: {_why(exc)}",
                hint="put it on a local filesystem that supports flock(2)",
                reason=reason,
            ) from None
        return cls(path, fd)

    def release(self) -> None:
        """Let the lock go. Safe to call twice."""
        with self._guard:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the only descriptor drops the flock

    def __del__(self) -> None:
        self.release()


def _why(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, "error")
