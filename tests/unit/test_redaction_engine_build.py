"""Engine compilation: the Hyperscan expression of a pattern and the one-entry engine cache."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.redaction.engine import (
    HyperscanEngine,
    _hs_expression,
    available_engines,
    build_engine,
)


@given(st.binary(min_size=1, max_size=64))
def test_hs_expression_matches_exactly_the_pattern(pattern: bytes) -> None:
    expression = _hs_expression(pattern)
    # Letters and digits as themselves, every other byte as \xHH: no metacharacter survives.
    assert re.fullmatch(rb"(?:[0-9A-Za-z]|\\x[0-9a-f]{2})*", expression)
    assert re.fullmatch(expression, pattern, flags=re.DOTALL)


def test_same_pattern_set_reuses_the_compiled_engine() -> None:
    first = build_engine([b"secret-value-1", b"secret-value-2"], "reference")
    again = build_engine([b"secret-value-1", b"secret-value-2"], "reference")
    assert again is first


def test_another_pattern_set_or_engine_compiles_again() -> None:
    first = build_engine([b"secret-value-1", b"secret-value-2"], "reference")
    other = build_engine([b"secret-value-1", b"secret-value-3"], "reference")
    assert other is not first
    assert other.find(b"x secret-value-3 y") == [(2, 16, 1)]
    assert first.find(b"x secret-value-3 y") == []
    # The same patterns split differently are another set, not a cache hit.
    split = build_engine([b"secret-value-1secret", b"-value-2"], "reference")
    assert split is not first


@pytest.mark.skipif("hyperscan" not in available_engines(), reason="hyperscan not installed")
@settings(max_examples=300, deadline=None)
@given(
    patterns=st.sets(
        st.binary(min_size=1, max_size=7).map(lambda b: bytes(x % 3 + 97 for x in b)),
        min_size=1,
        max_size=16,
    ),
    text=st.binary(max_size=120).map(lambda b: bytes(x % 4 + 97 for x in b)),
    cut_points=st.lists(st.integers(1, 120), max_size=5),
)
def test_hyperscan_all_matches_is_the_longest_pattern_at_each_start_inside_one_cut(
    patterns: set[bytes], text: bytes, cut_points: list[int]
) -> None:
    # The database holds only the patterns no other one is a prefix of; the longer ones are
    # confirmed where their prefix matched, and a match may not span a cut.
    ordered = sorted(patterns)
    engine = build_engine(ordered, "hyperscan")
    assert isinstance(engine, HyperscanEngine)
    cuts = sorted({c for c in cut_points if c < len(text)} | {len(text)})
    ends, spans, _ = engine.all_matches(text, cuts)
    expected: dict[int, int] = {}
    for start in range(len(text)):
        limit = next(c for c in cuts if c > start)
        for pattern in ordered:
            end = start + len(pattern)
            if end <= limit and text.startswith(pattern, start) and end > expected.get(start, -1):
                expected[start] = end
    assert ends == expected
    for start, end in expected.items():
        assert ordered[spans[(start, end)]] == text[start:end]
