"""Fuzz harness for the streaming redactor (``hardened_launcher.redaction``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/redaction.py fuzz/corpus/redaction -max_total_time=300

Input layout: byte 0 = number of values (1-4); then values separated by ``\\x1f``; after a
``\\x1e`` the text; the last byte seeds the chunking. ``test_one_input`` also works without
atheris; the unit tests replay the seed corpus through it.

Properties checked for every input:
- streaming output for the derived chunking (and for every single-split point when the text is
  short) equals the one-shot output, with the fast engine and the pure-Python reference;
- no variant of any accepted value survives (values containing the mask byte are skipped);
- held-back bytes never exceed what a wrapped occurrence of the longest variant can cover;
- warnings never contain a value.
"""

from __future__ import annotations

import sys

from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.stream import wrapped_span
from hardened_launcher.redaction.variants import variants


def _parse(data: bytes) -> tuple[list[bytes], bytes, int]:
    if len(data) < 2:
        return [], data, 1
    head, _, text = data[1:].partition(b"\x1e")
    count = data[0] % 4 + 1
    values = [v.replace(b"*", b".") for v in head.split(b"\x1f")[:count]]
    return values, text, data[-1] % 17 + 1


def _stream(red: Redactor, text: bytes, step: int) -> bytes:
    stream = red.stream("fuzz")
    out = []
    for offset in range(0, len(text), step):
        out.append(stream.write(text[offset : offset + step]))
        assert stream.pending_bytes <= max(wrapped_span(red.longest_pattern_bytes) - 1, 0)
    out.append(stream.flush())
    return b"".join(out)


def test_one_input(data: bytes) -> None:
    values, text, step = _parse(data)
    fast, ref = Redactor(), Redactor(engine="reference")
    for n, value in enumerate(values):
        fast.add(f"V{n}", value)
        ref.add(f"V{n}", value)
    expected = ref.redact_bytes(text)
    assert fast.redact_bytes(text) == expected
    assert _stream(fast, text, step) == expected
    assert _stream(ref, text, step) == expected
    if len(text) <= 64:
        for cut in range(len(text) + 1):
            s = fast.stream("cut")
            assert s.write(text[:cut]) + s.write(text[cut:]) + s.flush() == expected
    for value in values:
        for pattern in variants(value):
            assert pattern not in expected
        if len(value.strip()) >= 4:
            assert all(value.strip() not in w.encode() for w in fast.warnings)


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
