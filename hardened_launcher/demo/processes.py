"""Child processes that are always stopped: own process group, atexit and signal handlers.

Every child is started in a new session (its own process group), so stopping it also stops
whatever it started. A module-level registry stops the children that are still running when
the interpreter exits (``atexit``) or on SIGINT/SIGTERM/SIGHUP (the handlers stop the children,
then re-raise the previous behaviour: ``KeyboardInterrupt`` for SIGINT, exit 143/129 otherwise).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Final

STOP_TIMEOUT_SECONDS: Final = 10.0

_lock = threading.Lock()
_children: dict[int, Child] = {}
_installed = False


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def wait_until(
    predicate: Callable[[], bool], *, timeout_seconds: float, interval: float = 0.1
) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass(kw_only=True)
class Child:
    """One child process in its own process group, its output in ``log_path``."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    #: Set by :meth:`kill`: the exit was caused on purpose, not a failure of the child.
    killed: bool = False
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> Child:
        _install_handlers()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.killed = False
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            list(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(self.env) if self.env is not None else None,
            cwd=self.cwd,
            start_new_session=True,
        )
        with _lock:
            _children[self.process.pid] = self
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, signum: int, *, group: bool = True) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)

    def wait(self, timeout_seconds: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, *, timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM to the group, SIGKILL after ``timeout_seconds``; returns the exit code."""
        code: int | None = None
        if self.process is not None:
            if self.process.poll() is None:
                self.signal(signal.SIGTERM)
                code = self.wait(timeout_seconds)
                if code is None:
                    self.signal(signal.SIGKILL)
                    code = self.wait(timeout_seconds)
            else:
                code = self.process.returncode
            # Whatever the leader left behind in its group goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with _lock:
                _children.pop(self.process.pid, None)
        self.kill_log()
        return code

    def kill(self) -> None:
        """SIGKILL to the leader only (a crash), leaving the registry entry for clean-up."""
        self.killed = True
        self.signal(signal.SIGKILL, group=False)
        self.wait(STOP_TIMEOUT_SECONDS)

    def kill_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""


def stop_all() -> None:
    """Stop every registered child, newest first."""
    with _lock:
        children = list(_children.values())
    for child in reversed(children):
        with contextlib.suppress(Exception):
            child.stop(timeout_seconds=5.0)


def _install_handlers() -> None:
    global _installed  # noqa: PLW0603 - one registry per process
    if _installed:
        return
    _installed = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(signum)
        signal.signal(signum, _make_handler(signum, previous))


def _make_handler(signum: int, previous: object) -> Callable[[int, FrameType | None], None]:
    def handler(received: int, frame: FrameType | None) -> None:
        stop_all()
        if callable(previous):
            previous(received, frame)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    return handler
