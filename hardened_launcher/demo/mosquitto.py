"""mosquitto as a child process: start on a generated configuration, wait, restart, reload, stop.

Shared by the demo and ``tests/integration/broker.py``. mosquitto started as root switches to
the user ``mosquitto``, which cannot read the 0600 files of a configuration written by another
user, nor re-read the CRL on SIGHUP. :func:`run_as_owner_config` writes a wrapper configuration
that keeps the broker running as the owner of the generated directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

START_TIMEOUT_SECONDS: Final = 10.0
STOP_TIMEOUT_SECONDS: Final = 10.0


class BrokerStartError(RuntimeError):
    """mosquitto exited or did not listen in time; the message carries its output."""


def find_mosquitto() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_as_owner_config(config_path: Path, wrapper: Path) -> Path:
    """A configuration that includes ``config_path``'s directory and keeps the owner's user.

    Only needed when running as root; returns ``config_path`` itself otherwise.
    """
    if os.geteuid() != 0:
        return config_path
    user = pwd.getpwuid(config_path.stat().st_uid).pw_name
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f"user {user}\ninclude_dir {config_path.parent}\n")
    wrapper.chmod(0o600)
    return wrapper


@dataclass(kw_only=True)
class MosquittoProcess:
    """``mosquitto -c CONFIG`` listening on ``port`` on 127.0.0.1."""

    config_path: Path
    port: int
    output_path: Path
    mosquitto: str = "mosquitto"
    process: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = field(default=None, repr=False)

    def start(self, *, timeout_seconds: float = START_TIMEOUT_SECONDS) -> None:
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        self._out = self.output_path.open("ab")
        self.process = subprocess.Popen(
            [self.mosquitto, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise BrokerStartError(f"mosquitto exited with {code}:\n{self.output()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError(
            f"mosquitto did not listen on port {self.port} within {timeout_seconds} s:\n"
            f"{self.output()}"
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
        if self._out is not None:
            self._out.close()
            self._out = None

    def restart(self, *, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads the CRL (open connections stay open)."""
        if self.process is None:
            raise BrokerStartError("mosquitto is not running")
        os.kill(self.process.pid, signal.SIGHUP)

    def output(self, tail: int = 4000) -> str:
        try:
            return self.output_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""
