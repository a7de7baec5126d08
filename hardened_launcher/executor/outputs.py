"""Run outputs: small files a run leaves in ``$HL_OUTPUTS``, collected after its last phase.

The run's file systems are tmpfs mounts inside the container (and, under gVisor, inside the
sandbox), so they cannot be read once it stops, and Docker's archive API does not see them. So
the worker sends them itself, after its ``run end`` line, on stdout, one line per file::

    ::hl:: output <base64 name> <base64 content>

:class:`OutputCollector` sits on the raw stdout stream before the redactor: it takes these lines
out of the log, decodes them, and keeps at most :data:`MAX_OUTPUT_FILES` files and
:data:`MAX_OUTPUTS_BYTES` bytes in all (more sets ``truncated``). The caller redacts each file
with the run's redactor before anything leaves the runner. A run can print such a line itself;
it then only adds to its own outputs (and the line is not in the log).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from hardened_launcher.secrets import wipe_bytearray

__all__ = [
    "MAX_OUTPUTS_BYTES",
    "MAX_OUTPUT_FILES",
    "MAX_PLAN_BYTES",
    "OUTPUTS_DIR",
    "PLAN_FILE",
    "PLAN_PREFIX",
    "OutputCollector",
]

#: Where a run puts its outputs (``HL_OUTPUTS`` in its environment); top-level regular files only.
OUTPUTS_DIR: Final = "/tmp/hl-outputs"  # noqa: S108 - inside the container's private /tmp
MAX_OUTPUT_FILES: Final = 64
MAX_OUTPUTS_BYTES: Final = 1024 * 1024
PREFIX: Final = b"::hl:: output "
#: A planning run's plan artifact (``$HL_PLAN_FILE``), sent back the same way by the worker
#: (one frame named ``plan``) and never redacted: it is sealed to the pool key, never shown.
PLAN_FILE: Final = "/tmp/hl-plan/plan"  # noqa: S108 - inside the container's private /tmp
PLAN_PREFIX: Final = b"::hl:: plan "
MAX_PLAN_BYTES: Final = 8 * 1024 * 1024
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def _max_line_bytes(max_bytes: int) -> int:
    """A longer line cannot hold an acceptable file (base64 of the whole budget + name)."""
    return (max_bytes * 4) // 3 + 4 + 256


class OutputCollector:
    """Takes ``::hl:: output`` lines out of raw stdout; everything else passes through."""

    def __init__(
        self,
        *,
        prefix: bytes = PREFIX,
        max_files: int = MAX_OUTPUT_FILES,
        max_bytes: int = MAX_OUTPUTS_BYTES,
    ) -> None:
        self._prefix = prefix
        self._max_files = max_files
        self._max_bytes = max_bytes
        self._max_line_bytes = _max_line_bytes(max_bytes)
        self.files: dict[str, bytearray] = {}
        self.truncated = False
        self.invalid = 0
        self._total = 0
        self._mode = "start"  # start of a line | pass (rest of a normal line) | capture
        self._head = bytearray()  # the start of a line, until it is known not to be a frame
        self._line = bytearray()  # a frame being captured
        self._overflow = False

    def feed(self, data: bytes) -> bytes:
        """The bytes of ``data`` that are not output frames (to be redacted and logged)."""
        out = bytearray()
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline + 1
            self._part(data[start:end], complete=newline >= 0, out=out)
            start = end
        return bytes(out)

    def close(self) -> bytes:
        """End of stream: an undecided line start passes through, an unfinished frame is lost."""
        if self._mode == "capture":
            self.truncated = True
            wipe_bytearray(self._line)
            self._line.clear()
        rest = bytes(self._head)
        self._head.clear()
        self._mode = "start"
        return rest

    def wipe(self) -> None:
        for content in self.files.values():
            wipe_bytearray(content)
        self.files.clear()
        wipe_bytearray(self._line)

    def _part(self, part: bytes, *, complete: bool, out: bytearray) -> None:
        if self._mode == "capture":
            self._capture(part, complete=complete)
            return
        if self._mode == "pass":
            out += part
            if complete:
                self._mode = "start"
            return
        self._head += part
        if self._head.startswith(self._prefix):
            self._mode = "capture"
            rest = bytes(self._head[len(self._prefix) :])
            self._head.clear()
            self._line.clear()
            self._overflow = False
            self._capture(rest, complete=complete)
            return
        if self._prefix.startswith(bytes(self._head)) and not complete:
            return  # still a possible frame: wait for more bytes
        out += self._head
        self._head.clear()
        self._mode = "start" if complete else "pass"

    def _capture(self, part: bytes, *, complete: bool) -> None:
        if len(self._line) + len(part) > self._max_line_bytes:
            self._overflow = True
        if not self._overflow:
            self._line += part
        if complete:
            self._finish()
            self._mode = "start"

    def _finish(self) -> None:
        line = self._line
        try:
            if self._overflow:
                self.truncated = True
                return
            fields = bytes(line).strip().split(b" ")
            if len(fields) not in (1, 2):
                self.invalid += 1
                return
            try:
                name = base64.b64decode(fields[0], validate=True).decode("ascii")
                content = bytearray(
                    base64.b64decode(fields[1] if len(fields) == 2 else b"", validate=True)
                )
            except (binascii.Error, UnicodeDecodeError):
                self.invalid += 1
                return
            if not _NAME_RE.fullmatch(name) or name in self.files:
                self.invalid += 1
                wipe_bytearray(content)
                return
            if len(self.files) >= self._max_files or self._total + len(content) > self._max_bytes:
                self.truncated = True
                wipe_bytearray(content)
                return
            self._total += len(content)
            self.files[name] = content
        finally:
            wipe_bytearray(line)
            line.clear()
            self._overflow = False
