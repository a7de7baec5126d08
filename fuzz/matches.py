"""Fuzz harness for the compiled match collector (``hardened_launcher.redaction._matches``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/matches.py fuzz/corpus/matches -max_total_time=300

Input layout: byte 0 picks how many patterns (1 to 4); each pattern is then one length byte
(6 to 21 bytes follow) and its bytes; the rest is the text. ``test_one_input`` also works
without atheris; the unit tests replay the seed corpus through it.

Properties checked for every input (the C code reads only inside its buffers and arrays; a read
past an edge shows as a crash under atheris' sanitizers, or as a wrong answer here):
- a Hyperscan engine with the collector finds the same matches, raw and wrapped, and redacts
  the text to the same output, consumed length and pattern list as one with the Python
  callbacks; both equal the reference engine on raw matches;
- arbitrary records (expression numbers and ends taken from the input) given to a sink are
  either placed or refused with ValueError, and a refused batch leaves nothing behind.
"""

from __future__ import annotations

import sys

from hardened_launcher.redaction import engine as engine_module
from hardened_launcher.redaction.stream import find_occurrences, redact_buffer

NATIVE = engine_module.MATCHES


def _parse(data: bytes) -> tuple[list[bytes], bytes]:
    if not data:
        return [], b""
    count = data[0] % 4 + 1
    at = 1
    patterns: list[bytes] = []
    for _ in range(count):
        if at >= len(data):
            break
        length = data[at] % 16 + 6
        pattern = data[at + 1 : at + 1 + length]
        at += 1 + length
        if len(pattern) == length and pattern not in patterns:
            patterns.append(pattern)
    return patterns, data[at:]


def _engines(patterns: list[bytes]) -> tuple[engine_module.HyperscanEngine, ...]:
    compiled = engine_module.HyperscanEngine(patterns)
    saved = engine_module.MATCHES
    engine_module.MATCHES = None
    try:
        python = engine_module.HyperscanEngine(patterns)
    finally:
        engine_module.MATCHES = saved
    return compiled, python


def _records(data: bytes, table: object, text: bytes, entries: int) -> None:
    sink = NATIVE.MatchSink()
    for i in range(0, min(len(data), 64) - 1, 2):
        sink(data[i] % (entries + 1), 0, data[i + 1] % (len(text) + 3), 0, None)
    try:
        sink.take(table, text)
    except ValueError:
        assert sink.select() == []
        return
    chosen = sink.select()
    assert chosen == sorted(chosen)
    assert all(0 <= s < e <= len(text) for s, e, _ in chosen)


def test_one_input(data: bytes) -> None:
    if NATIVE is None or "hyperscan" not in engine_module.available_engines():
        return  # nothing to compare (no compiler at install time, or no Hyperscan)
    patterns, text = _parse(data)
    if not patterns:
        return
    compiled, python = _engines(patterns)
    assert compiled.find(text) == python.find(text)
    assert compiled.find(text) == engine_module.ReferenceEngine(patterns).find(text)
    assert find_occurrences(compiled, text) == find_occurrences(python, text)
    for final in (True, False):
        assert redact_buffer(compiled, text, final=final) == redact_buffer(
            python, text, final=final
        )
    _records(data, compiled._table, text, len(compiled._lengths))


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
