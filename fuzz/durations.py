"""Fuzz harness for Go duration text (``hardened_launcher.durations``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/durations.py fuzz/corpus/durations -max_total_time=300

``test_one_input`` also works without atheris; the unit tests replay the seed corpus through it.

Properties checked for every input, beyond "no exception other than DurationError":
- a value that parses lies within Go's int64 range of nanoseconds;
- formatting it and parsing the result gives the same value (to the nanosecond, and to the
  microsecond through ``timedelta``);
- the ``timedelta`` parse agrees with the nanosecond parse, truncated toward zero.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from hardened_launcher.durations import (
    MAX_DURATION_NS,
    DurationError,
    format_duration,
    format_ns,
    parse_duration,
    parse_duration_ns,
)


def _parse(text: str) -> int | DurationError:
    try:
        return parse_duration_ns(text)
    except DurationError as exc:
        return exc


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    ns = _parse(text)
    if isinstance(ns, DurationError):
        assert ns.why, "a refusal must say why"
        refused = False
        try:
            parse_duration(text)
        except DurationError:
            refused = True
        assert refused, "parse_duration accepted what parse_duration_ns refused"
        return
    assert -(1 << 63) <= ns <= MAX_DURATION_NS
    assert parse_duration_ns(format_ns(ns)) == ns
    td = parse_duration(text)
    micro = abs(ns) // 1000
    assert td == timedelta(microseconds=-micro if ns < 0 else micro)
    assert parse_duration(format_duration(td)) == td


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
