"""serve's doorbell: another process that committed to the store wakes ``serve`` at once.

``controlplane serve`` binds a Unix datagram socket, ``doorbell.sock``, in its state directory
(mode 0600, in the 0700 directory only the control plane's user can enter). ``run submit``
(:func:`hardened_launcher.controlplane.runs.submit_run`), ``run cancel`` and ``run confirm``
send one datagram to it after their commit (:func:`ring`); serve's doorbell thread then ends
the transport's ``receive`` wait (:class:`~hardened_launcher.transport.inbox.Wakeable`) and
the loop looks at the store (``Store.change_counter``) and assigns what is queued.

The bell carries no data and is never trusted: any datagram only means "look at the store",
its bytes are not read (one byte is received, the rest of a longer datagram is discarded by
the kernel), a burst is drained as one ring, and rings wake serve at most
``1 / MIN_WAKE_INTERVAL_SECONDS`` times a second. The kernel bounds the queue of unread
datagrams (``SO_RCVBUF``); a ringer never blocks (``MSG_DONTWAIT``) and ignores a missing,
dead, full or foreign socket: the run is committed either way, and serve's periodic look at
the store (``ServeConfig.wake_seconds``) stays as the fallback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

#: The socket's name in the state directory.
DOORBELL_FILE: Final = "doorbell.sock"
#: At most this many queued datagrams are read per ring (the rest make the next ring).
MAX_DRAIN: Final = 256
#: Rings closer together than this are one wake-up (at most 200 wake-ups a second).
MIN_WAKE_INTERVAL_SECONDS: Final = 0.005
#: Receive buffer asked of the kernel: a bound on unread rings (it may round it up).
RECEIVE_BUFFER_BYTES: Final = 16 * 1024
#: How often the doorbell thread looks whether it should stop.
_STOP_CHECK_SECONDS: Final = 0.25


def doorbell_path(directory: Path) -> Path:
    return directory / DOORBELL_FILE


def _our_socket(info: os.stat_result) -> bool:
    return stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid()


def ring(directory: Path) -> bool:
    """Tell the ``serve`` of state directory ``directory`` to look at the store now.

    Returns whether a datagram was handed to the kernel. Never raises and never blocks: no
    socket (serve is not running, or runs elsewhere), something else at its path (a file, a
    link, another user's socket), nobody listening, or a full queue are all ignored.
    """
    path = doorbell_path(directory)
    try:
        info = path.lstat()
    except OSError:
        return False
    if not _our_socket(info):
        log.info("doorbell.ignored reason=not_our_socket")
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(b"\x01", socket.MSG_DONTWAIT, str(path))
    except OSError as exc:  # refused (no listener), full, too long a path, permissions
        log.debug("doorbell.unanswered error=%s", type(exc).__name__)
        return False
    return True


class Doorbell:
    """serve's end of the bell: a bound socket and a thread calling ``on_ring``.

    Build it with :meth:`open`; :meth:`close` stops the thread and removes the socket.
    """

    def __init__(
        self, sock: socket.socket, path: Path, inode: int, on_ring: Callable[[], None]
    ) -> None:
        self._sock = sock
        self._path = path
        self._inode = inode
        self._on_ring = on_ring
        self._stop = threading.Event()
        self.rings = 0
        self._thread = threading.Thread(target=self._run, name="doorbell", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, directory: Path, on_ring: Callable[[], None]) -> Doorbell | None:
        """Bind ``doorbell.sock`` in ``directory`` (replacing a stale socket of ours), or
        return None (logged) when that cannot be done: serve then relies on its periodic look."""
        path = doorbell_path(directory)
        try:
            info = path.lstat()
        except FileNotFoundError:
            pass
        except OSError as exc:
            return cls._unavailable(f"lstat_{type(exc).__name__}")
        else:
            if not _our_socket(info):
                # A file, directory or link where the socket belongs: not ours to remove.
                return cls._unavailable("path_not_our_socket")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a previous serve's socket
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            sock.bind(str(path))
            bound = path.lstat()
            if _our_socket(bound):
                path.chmod(0o600)
            sock.settimeout(0.0)  # non-blocking: the thread waits in select
        except OSError as exc:
            sock.close()
            return cls._unavailable(f"bind_{type(exc).__name__}")
        if not _our_socket(bound):  # pragma: no cover - replaced between bind and lstat
            sock.close()
            return cls._unavailable("bound_path_not_our_socket")
        log.info("doorbell.listening")
        return cls(sock, path, bound.st_ino, on_ring)

    @staticmethod
    def _unavailable(reason: str) -> None:
        log.warning(
            "doorbell.unavailable reason=%s (runs submitted by other processes are noticed "
            "by serve's periodic look at the store)",
            reason,
        )

    def _run(self) -> None:
        last_wake = 0.0
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._sock], [], [], _STOP_CHECK_SECONDS)
            except (OSError, ValueError):  # closed under us
                return
            if not ready or not self._drain():
                continue
            pause = last_wake + MIN_WAKE_INTERVAL_SECONDS - time.monotonic()
            if pause > 0:
                time.sleep(pause)
                self._drain()
            last_wake = time.monotonic()
            self.rings += 1
            try:
                self._on_ring()
            except Exception:  # a failed wake leaves the periodic look
                log.warning("doorbell.wake_failed", exc_info=True)

    def _drain(self) -> bool:
        """Read (and discard) what is queued, at most ``MAX_DRAIN`` datagrams; returns
        whether there was any."""
        got = False
        for _ in range(MAX_DRAIN):
            try:
                self._sock.recv(1)
            except OSError:  # BlockingIOError: nothing more queued
                break
            got = True
        return got

    def close(self) -> None:
        """Stop the thread and remove the socket (when it is still the one bound here)."""
        self._stop.set()
        with contextlib.suppress(OSError):  # end the thread's wait now
            self._sock.sendto(b"\x00", str(self._path))
        self._thread.join(timeout=2 * _STOP_CHECK_SECONDS + 1)
        self._sock.close()
        with contextlib.suppress(OSError):
            if self._path.lstat().st_ino == self._inode:
                self._path.unlink()
