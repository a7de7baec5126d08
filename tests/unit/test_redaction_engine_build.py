"""Engine compilation: the Hyperscan expression of a pattern and the one-entry engine cache."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.redaction.engine import _hs_expression, build_engine


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
