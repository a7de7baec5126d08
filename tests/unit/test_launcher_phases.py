"""PhaseWatcher: the worker's phase markers read from the run's redacted stdout, whatever the
write boundaries; nothing else is reported."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.launcher.phases import PhaseWatcher

AT = datetime(2026, 1, 2, tzinfo=UTC)
STREAM = (
    b"::hl:: phase initializing start\n"
    b"some output\n"
    b"::hl:: phase initializing end status=0\n"
    b"::hl:: phase planning start\n"
    b"  ::hl:: phase indented start\n"
    b"::hl:: phase planning start\n"
    b"::hl:: phase " + b"x" * 200 + b" start\n"
    b"::hl:: phase Bad start\n"
    b"::hl:: phase applying start\r\n"
)


def _watch(chunks: list[bytes], channel: str = "stdout") -> list[str]:
    seen: list[str] = []
    watcher = PhaseWatcher(lambda name, _at: seen.append(name), clock=lambda: AT)
    for chunk in chunks:
        watcher.write(channel, chunk)  # type: ignore[arg-type]
    watcher.close()
    return seen


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_markers_whatever_the_write_boundaries(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert _watch(chunks) == ["initializing", "planning", "applying"]


def test_stderr_and_unfinished_lines_are_not_reported() -> None:
    assert _watch([STREAM], channel="stderr") == []
    assert _watch([b"::hl:: phase main start"]) == []  # no newline: not a whole marker line


def test_a_long_line_is_skipped_without_buffering_it() -> None:
    watcher = PhaseWatcher(lambda _name, _at: None)
    watcher.write("stdout", b"y" * 1_000_000)
    assert len(watcher._line) == 0
