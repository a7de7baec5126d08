"""Append-only JSON-lines audit log (chaining and signing arrive with the audit issue)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from hardened_launcher.audit.events import AuditEvent
from hardened_launcher.errors import InfrastructureError

AUDIT_FILE_NAME = "audit.jsonl"


class JsonLinesAuditLog:
    """Appends one JSON object per line to ``<directory>/audit.jsonl`` and fsyncs each record.

    The directory is created 0700 and the file 0600. A record that cannot be written raises
    :class:`InfrastructureError`: a caller must not proceed with a decision it could not audit.
    """

    def __init__(self, directory: Path) -> None:
        self._lock = threading.Lock()
        self.path = directory / AUDIT_FILE_NAME
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise InfrastructureError(
                f"cannot open the audit log at {self.path}: {exc.strerror}",
                hint="check that HL_AUDIT_DIR exists and is writable by the launcher's user",
                reason="audit_unavailable",
            ) from exc
        self._fd = fd

    def record(self, event: AuditEvent) -> None:
        line = json.dumps(event.to_json_dict(), separators=(",", ":"), sort_keys=True) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            try:
                written = os.write(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                raise InfrastructureError(
                    f"cannot write the audit log at {self.path}: {exc.strerror}",
                    hint="free disk space or restore permissions; no run starts unaudited",
                    reason="audit_unavailable",
                ) from exc
            if written != len(data):
                raise InfrastructureError(
                    f"short write to the audit log at {self.path} (disk full?)",
                    hint="free disk space; no run starts unaudited",
                    reason="audit_unavailable",
                )

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class MemoryAuditLog:
    """Keeps events in a list; for tests and for commands that only report."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)
