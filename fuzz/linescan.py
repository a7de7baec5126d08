"""Fuzz harness for the compiled wrap-break helper (``hardened_launcher.redaction._linescan``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/linescan.py fuzz/corpus/linescan -max_total_time=300

Input layout: byte 0 = ``skip`` (signed, -8 to 247); byte 1 = how many of the following bytes
are ``behind`` (at most 20); the rest is the buffer. ``test_one_input`` also works without
atheris; the unit tests replay the seed corpus through it.

Properties checked for every input (the C code reads only inside its buffers; a read past an
edge shows as a crash under atheris' sanitizers, or as a wrong answer here):
- ``wrap_newlines`` equals the regular-expression definition, at ``skip`` and at 0;
- ``wrap_breaks`` equals the pure-Python break list, with and without ``behind``;
- ``joined_windows`` equals the pure-Python windows for those breaks, and ``seed_breaks``
  keeps a sub-list of them;
- ``prefix_starts`` holds every position of a gram of ``prefix_table`` (the values' first six
  bytes and the buffer's own), in order, inside the buffer;
- the stream's output for a small value set is the same with and without the helper (which
  joins only the windows of the breaks an occurrence may cross first).
"""

from __future__ import annotations

import sys

from hardened_launcher.redaction import engine as engine_module
from hardened_launcher.redaction import stream as stream_module
from hardened_launcher.redaction.redactor import Redactor

NATIVE = engine_module.LINESCAN
VALUES = (b"QUJDREVGR0hJSktMTU5PUA", b"deadbeefcafe0123", b"secret-value+/_x")


def _parse(data: bytes) -> tuple[int, bytes, bytes]:
    if len(data) < 2:
        return 0, b"", data
    skip = data[0] - 8
    behind_len = min(data[1], 20)
    return skip, data[2 : 2 + behind_len], data[2 + behind_len :]


def _python_breaks(buf: bytes, behind: bytes) -> list[tuple[int, int]]:
    newlines = engine_module.wrap_newlines_re(buf, 0)
    if behind:
        newlines = stream_module._head_newlines(buf, behind, newlines)
    return stream_module._wrap_breaks(buf, newlines) if newlines else []


_TABLE = NATIVE.gram_table(list(VALUES)) if NATIVE is not None else None

_REDACTORS: dict[bool, Redactor] = {}


def _redactor(*, native: bool) -> Redactor:
    """A redactor whose engine was compiled with (or without) the helper, made once."""
    red = _REDACTORS.get(native)
    if red is None:
        saved = engine_module.LINESCAN
        engine_module.LINESCAN = NATIVE if native else None
        try:
            red = Redactor(engine="hyperscan")
            red.add_many([(f"V{n}", v) for n, v in enumerate(VALUES)])
        finally:
            engine_module.LINESCAN = saved
        _REDACTORS[native] = red
    return red


def _redact(text: bytes, step: int, *, native: bool) -> bytes:
    stream = _redactor(native=native).stream("fuzz")
    out = [stream.write(text[i : i + step]) for i in range(0, len(text), step)]
    return b"".join([*out, stream.flush()])


def test_one_input(data: bytes) -> None:
    if NATIVE is None:
        return  # nothing to compare (no compiler when the package was installed)
    skip, behind, buf = _parse(data)
    for at in (skip, 0, len(buf), len(buf) + 3):
        assert NATIVE.wrap_newlines(buf, at) == engine_module.wrap_newlines_re(buf, at)
    for before in (behind, b""):
        breaks = NATIVE.wrap_breaks(buf, before)
        assert breaks == _python_breaks(buf, before)
        if breaks:
            for longest in (6, 40, 100):
                span = stream_module.wrapped_span(longest)
                assert NATIVE.joined_windows(buf, breaks, longest, span) == (
                    stream_module._joined_windows(buf, breaks, longest)
                )
                seeded = NATIVE.seed_breaks(buf, breaks, longest, span, [_TABLE])
                assert [b for b in breaks if b in seeded] == seeded
    grams = sorted({v[:6] for v in VALUES} | ({buf[:6]} if len(buf) >= 6 else set()))
    starts = NATIVE.prefix_starts(buf, NATIVE.prefix_table(grams))
    exact = [i for i in range(len(buf) - 5) if buf[i : i + 6] in set(grams)]
    assert set(exact) <= set(starts)
    assert starts == sorted(set(starts))
    assert all(0 <= i <= len(buf) - 6 for i in starts)
    if "hyperscan" in engine_module.available_engines():
        step = (data[0] % 13 + 1) if data else 1
        assert _redact(buf, step, native=True) == _redact(buf, step, native=False)


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
