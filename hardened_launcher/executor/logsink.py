"""Where a run's (already redacted) output goes: a small sink interface and its implementations.

The runner writes only bytes that went through the redactor. A sink never sees raw output.
The end-to-end issue adds an object-storage sink and standard output
(``SPACELIFT_RUN_LOGS_ON_STANDARD_OUTPUT_ENABLED``) behind the same interface.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from hardened_launcher.errors import InfrastructureError
from hardened_launcher.terminal import TerminalWriter

__all__ = ["Channel", "FileLogSink", "LogSink", "StreamLogSink", "TeeLogSink"]

Channel = Literal["stdout", "stderr"]


class LogSink(Protocol):
    """Receives redacted run output in order; ``close`` is called exactly once by the runner."""

    def write(self, channel: Channel, data: bytes) -> None: ...

    def close(self) -> None: ...


class FileLogSink:
    """Appends both channels, in arrival order, to one new file (mode 0600, never overwritten)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
        except OSError as exc:
            raise InfrastructureError(
                f"cannot create the run log {path}: {exc.strerror}",
                hint="check that the launcher's log directory exists and is writable",
                reason="run_log_unwritable",
            ) from None
        self._file = os.fdopen(fd, "wb")
        self.bytes_written = 0

    def write(self, channel: Channel, data: bytes) -> None:
        del channel  # one combined log, as a terminal shows it
        self._file.write(data)
        self.bytes_written += len(data)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


class StreamLogSink:
    """Writes stdout and stderr to two binary streams (the terminal, for ``exec``).

    A stream that is a terminal gets the run's control characters and bidi overrides escaped
    (a run must not drive the operator's terminal); a file or pipe gets the bytes unchanged.
    """

    def __init__(self, stdout: BinaryIO, stderr: BinaryIO) -> None:
        self._streams = {"stdout": TerminalWriter(stdout), "stderr": TerminalWriter(stderr)}

    def write(self, channel: Channel, data: bytes) -> None:
        stream = self._streams[channel]
        stream.write(data)
        stream.flush()

    def close(self) -> None:
        for stream in self._streams.values():
            stream.finish()


class TeeLogSink:
    """Writes to several sinks; closes every one even when one fails."""

    def __init__(self, *sinks: LogSink) -> None:
        self._sinks = sinks

    @property
    def sinks(self) -> tuple[LogSink, ...]:
        return self._sinks

    def write(self, channel: Channel, data: bytes) -> None:
        for sink in self._sinks:
            sink.write(channel, data)

    def close(self) -> None:
        errors: list[BaseException] = []
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - every sink is closed, the first error raised
                errors.append(exc)
        if errors:
            raise errors[0]
