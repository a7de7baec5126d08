"""Fuzz harness for the SHA256SUMS parser (``hardened_launcher.binaries.sums``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/sums.py fuzz/corpus/sums -max_total_time=300

``test_one_input`` also works without atheris; tests/unit/test_binaries_fuzz.py replays the seed
corpus through it.

Properties checked for every input, beyond "no exception other than the documented refusals":
- a refusal is an ``UntrustedInputError`` with reason ``sums_malformed`` or ``sums_too_large``
  and a hint, and a malformed-line message never quotes more than the line number;
- every parsed entry has an acceptable name and a 64-digit lower-case digest;
- looking up each parsed name gives that entry or ``sums_entry_duplicate``, nothing else;
- rendering the parsed entries and parsing the result gives the same entries.
"""

from __future__ import annotations

import sys

from hardened_launcher.binaries.sums import (
    MAX_SUMS_BYTES,
    SumsEntry,
    SumsFile,
    check_name,
    parse_sums,
    render_sums,
)
from hardened_launcher.errors import UntrustedInputError

PARSER_REASONS = frozenset({"sums_malformed", "sums_too_large"})
_MAX_MESSAGE_CHARS = 400


def _parse(data: bytes) -> SumsFile | UntrustedInputError:
    try:
        return parse_sums(data, source="SHA256SUMS")
    except UntrustedInputError as exc:
        return exc


def _lookup(parsed: SumsFile, name: str) -> SumsEntry | UntrustedInputError:
    try:
        return parsed.lookup(name)
    except UntrustedInputError as exc:
        return exc


def test_one_input(data: bytes) -> None:
    parsed = _parse(data)
    if isinstance(parsed, UntrustedInputError):
        assert parsed.reason in PARSER_REASONS, parsed.reason
        assert parsed.hint, "a refusal must say what to do"
        assert len(parsed.message) < _MAX_MESSAGE_CHARS, "a refusal must not echo the input"
        return
    assert len(data) <= MAX_SUMS_BYTES
    for entry in parsed.entries:
        assert check_name(entry.name) is None
        assert len(entry.sha256) == 64
        assert entry.sha256 == entry.sha256.lower()
        found = _lookup(parsed, entry.name)
        if isinstance(found, UntrustedInputError):
            assert found.reason == "sums_entry_duplicate", found.reason
        else:
            assert found == entry
    again = parse_sums(render_sums(parsed.entries))
    assert [(e.name, e.sha256, e.style) for e in again.entries] == [
        (e.name, e.sha256, e.style) for e in parsed.entries
    ]


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
