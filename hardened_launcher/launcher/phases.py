"""Phase reports: the worker's ``::hl:: phase <name> start`` markers, read from the run's log.

hl-worker.sh prints one marker line on stdout as each phase of the run spec starts.
:class:`PhaseWatcher` is one more log sink beside the run's own (a tee): it stores nothing,
reads the redacted stdout line by line (lines longer than a marker are skipped, never
buffered), and calls ``on_phase(name, at)`` once per phase name. A run can print such a line
itself; the control plane only records a phase its signed manifest names, after the phase it
recorded last (docs/controlplane.md), so a forged marker can at most move the shown phase
forward early.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from hardened_launcher.executor.logsink import Channel

__all__ = ["PhaseWatcher"]

_MARKER: Final = re.compile(rb"::hl:: phase ([a-z][a-z0-9_]{0,31}) start\r?")
#: Longer lines cannot be markers: they are skipped as they stream past.
_MAX_MARKER_BYTES: Final = 64
#: A run spec has at most 16 phases; more names than this are not reported.
MAX_REPORTED_PHASES: Final = 64


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PhaseWatcher:
    """A log sink that reports phase markers (see the module docstring)."""

    def __init__(
        self,
        on_phase: Callable[[str, datetime], None],
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._on_phase = on_phase
        self._clock = clock
        self._line = bytearray()
        self._skipping = False
        self.seen: list[str] = []

    def write(self, channel: Channel, data: bytes) -> None:
        if channel != "stdout":
            return
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            if not self._skipping:
                self._line += data[start:end]
                if len(self._line) > _MAX_MARKER_BYTES:
                    self._skipping = True
                    self._line.clear()
            if newline < 0:
                return
            if not self._skipping:
                self._complete(bytes(self._line))
            self._line.clear()
            self._skipping = False
            start = newline + 1

    def _complete(self, line: bytes) -> None:
        match = _MARKER.fullmatch(line)
        if match is None:
            return
        name = match.group(1).decode("ascii")
        if name in self.seen or len(self.seen) >= MAX_REPORTED_PHASES:
            return
        self.seen.append(name)
        self._on_phase(name, self._clock())

    def close(self) -> None:
        self._line.clear()
