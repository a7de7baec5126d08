"""The compiled wrap-break helper (``redaction/_linescan.c``) against its pure-Python definitions,
and the redactor's output with and without it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction import engine as engine_module
from hardened_launcher.redaction.engine import (
    WRAP_MIN_WIDTH,
    HyperscanEngine,
    available_engines,
    merge_joined,
    wrap_newlines_re,
)
from hardened_launcher.redaction.prefixes import PrefixIndex, prefix_index
from hardened_launcher.redaction.stream import (
    BEHIND_BYTES,
    _head_newlines,
    _joined_windows,
    _wrap_breaks,
    find_occurrences,
    wrapped_span,
)
from tests.unit.fuzz_support import harness, seeds

# The package's dev install (pip install -e .) builds the helper; CI installs a C compiler.
NATIVE = engine_module.LINESCAN
if NATIVE is None:
    pytest.fail(
        "hardened_launcher.redaction._linescan is not built: run `pip install -e .` with a C "
        "compiler (gcc, libc6-dev)",
        pytrace=False,
    )
HYPERSCAN = "hyperscan" in available_engines()

# Bytes heavy in wrap characters, line ends and a few others; runs around 16 wrap characters.
byte_st = st.sampled_from(b"AZaz09+/_-\n\n\r\r .=\x00\xff")
run_st = st.tuples(
    st.integers(WRAP_MIN_WIDTH - 2, WRAP_MIN_WIDTH + 2), st.sampled_from([b"\n", b"\r\n", b"\r"])
).map(lambda t: b"Q" * t[0] + t[1])
buf_st = st.lists(st.one_of(byte_st.map(lambda b: bytes((b,))), run_st), max_size=60).map(b"".join)


def python_breaks(buf: bytes, behind: bytes) -> list[tuple[int, int]]:
    newlines = wrap_newlines_re(buf, 0)
    if behind:
        newlines = _head_newlines(buf, behind, newlines)
    return _wrap_breaks(buf, newlines) if newlines else []


@settings(max_examples=400, deadline=None)
@given(buf=buf_st, skip=st.integers(-3, 80))
def test_wrap_newlines_equals_the_regular_expression(buf: bytes, skip: int) -> None:
    assert NATIVE.wrap_newlines(buf, skip) == wrap_newlines_re(buf, skip)
    assert NATIVE.wrap_newlines(memoryview(buf), skip) == wrap_newlines_re(buf, skip)


@settings(max_examples=400, deadline=None)
@given(buf=buf_st, behind=st.one_of(buf_st, st.binary(max_size=BEHIND_BYTES)))
def test_wrap_breaks_equal_the_python_break_list(buf: bytes, behind: bytes) -> None:
    behind = behind[-BEHIND_BYTES:]
    assert NATIVE.wrap_breaks(buf, behind) == python_breaks(buf, behind)
    assert NATIVE.wrap_breaks(memoryview(buf), b"") == python_breaks(buf, b"")


@settings(max_examples=300, deadline=None)
@given(buf=buf_st, longest=st.integers(0, 120))
def test_joined_windows_equal_the_python_windows(buf: bytes, longest: int) -> None:
    breaks = python_breaks(buf, b"")
    if breaks:
        span = wrapped_span(longest)
        assert NATIVE.joined_windows(buf, breaks, longest, span) == _joined_windows(
            buf, breaks, longest
        )


@pytest.mark.parametrize(
    ("buf", "skip", "expected"),
    [
        (b"", 0, []),
        (b"", 5, []),
        (b"\n", 0, []),
        (b"\r\n", 0, []),
        (b"A" * 16 + b"\n", 0, [16]),
        (b"A" * 15 + b"\n", 0, []),
        (b"A" * 16 + b"\r\n", 0, [17]),
        (b"\r" + b"A" * 15 + b"\n", 0, []),
        (b"A" * 16 + b"\n", 17, []),
        (b"A" * 16 + b"\n", 16, [16]),
        (b"A" * 16 + b"\n", 1000, []),
        (b"A" * 16 + b"\n", -5, [16]),
        (b"A" * 16 + b"\r\r\n", 0, []),
    ],
)
def test_wrap_newlines_at_the_edges(buf: bytes, skip: int, expected: list[int]) -> None:
    assert NATIVE.wrap_newlines(buf, skip) == expected == wrap_newlines_re(buf, skip)


def test_wrap_breaks_at_the_edges() -> None:
    run = b"A" * 16
    cases = [
        (b"", b"", []),
        (b"\nA", run, []),  # a break must start after the first byte
        (b"\r\nA", run, []),
        (b".\nA", run, []),  # the dot ends the run
        (b"B\nA", b"A" * 15, [(1, 2)]),  # the run reaches into behind
        (b"B\nA", b"A" * 14, []),
        (b"B\r\nA", b"A" * 15, [(1, 3)]),
        (run + b"\n", b"", []),  # nothing follows
        (run + b"\n.", b"", []),  # no wrap character next
        (run + b"\nA", b"", [(16, 17)]),
    ]
    for buf, behind, expected in cases:
        assert NATIVE.wrap_breaks(buf, behind) == expected == python_breaks(buf, behind), buf


def test_bad_arguments_are_refused_without_reading() -> None:
    with pytest.raises(TypeError):
        NATIVE.wrap_newlines("text", 0)
    with pytest.raises(TypeError):
        NATIVE.wrap_newlines(b"text")
    with pytest.raises(TypeError):
        NATIVE.wrap_breaks(b"text", None)
    with pytest.raises(TypeError):
        NATIVE.wrap_newlines(memoryview(b"ab" * 20)[::2], 0)  # not contiguous
    with pytest.raises(OverflowError):
        NATIVE.wrap_newlines(b"x", 1 << 80)
    data = b"A" * 20 + b"\nB" + b"C" * 30
    for breaks in ([], [(5, 3)], [(21, 22), (10, 11)], [(0, 500)], [(-1, 2)], [[21, 22]]):
        with pytest.raises((ValueError, TypeError)):
            NATIVE.joined_windows(data, breaks, 10, 20)
    with pytest.raises(ValueError, match="non-negative"):
        NATIVE.joined_windows(data, [(20, 21)], -1, 20)


def test_the_helper_implements_the_engine_definition() -> None:
    assert NATIVE.WRAP_ALPHABET == engine_module.WRAP_ALPHABET
    assert NATIVE.WRAP_MIN_WIDTH == WRAP_MIN_WIDTH


@pytest.mark.skipif(not HYPERSCAN, reason="the database shape is Hyperscan's")
def test_with_the_helper_the_database_has_no_trigger_expressions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    patterns = [b"secret-value-%d" % i for i in range(5)]
    native = HyperscanEngine(patterns)
    monkeypatch.setattr(engine_module, "LINESCAN", None)
    fallback = HyperscanEngine(patterns)
    text = b"A" * 16 + b"\n" + b"B" * 16 + b"\r\nsecret-value-3"
    assert native.all_matches(text) == fallback.all_matches(text)
    assert native.all_matches(text)[2] == [16, 34]
    # The database scans the literals only: no callback for the trigger LFs.
    assert native._linescan is NATIVE
    assert fallback._linescan is None


# Values and texts with wrapped forms at widths around 16, LF and CRLF, dumps and noise.
value_st = st.binary(min_size=6, max_size=60).map(lambda b: b.replace(b"*", b"."))


def wrapped(text: bytes, width: int, eol: bytes) -> bytes:
    return eol.join(text[i : i + width] for i in range(0, len(text), width))


@pytest.mark.skipif(not HYPERSCAN, reason="the helper replaces a Hyperscan pass")
@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(value_st, min_size=1, max_size=3),
    widths=st.lists(st.integers(WRAP_MIN_WIDTH, 20), min_size=1, max_size=3),
    eol=st.sampled_from([b"\n", b"\r\n"]),
    noise=st.lists(buf_st, max_size=4),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_stream_output_is_the_same_with_and_without_the_helper(
    values: list[bytes],
    widths: list[int],
    eol: bytes,
    noise: list[bytes],
    cuts: list[int],
) -> None:
    parts = [b"start\n"]
    for n, value in enumerate(values):
        width = widths[n % len(widths)]
        parts += [noise[n] if n < len(noise) else b"", b"x: "]
        parts.append(wrapped(base64.b64encode(b"ab" + value), width, eol))
        parts += [eol, wrapped(value.hex().encode(), width, eol), b" ", value, eol]
    text = b"".join(parts)
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]

    def run(red: Redactor) -> tuple[bytes, bytes, dict[str, int]]:
        stream = red.stream("out")
        out = b"".join([*(stream.write(c) for c in chunks), stream.flush()])
        return out, red.redact_bytes(text), stream.counts

    def redactor() -> Redactor:
        red = Redactor(engine="hyperscan")
        red.add_many([(f"V{n}", v) for n, v in enumerate(values)])
        return red

    with_helper = run(redactor())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "LINESCAN", None)
        without = run(redactor())
    reference = Redactor(engine="reference")
    reference.add_many([(f"V{n}", v) for n, v in enumerate(values)])
    assert with_helper == without
    assert with_helper[1] == reference.redact_bytes(text)


FUZZ_SEEDS = seeds("linescan")
fuzz_one_input = harness("linescan")


@pytest.mark.parametrize("seed", FUZZ_SEEDS, ids=lambda path: path.name)
def test_fuzz_harness_replays_the_seed_corpus(seed: Path) -> None:
    fuzz_one_input(seed.read_bytes())


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), head=buf_st)
def test_fuzz_harness_on_random_bytes(data: bytes, head: bytes) -> None:
    fuzz_one_input(data[:2] + head + data[2:])


@pytest.mark.skipif(not HYPERSCAN, reason="the joined pass of the Hyperscan engine")
@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(value_st, min_size=1, max_size=3),
    width=st.integers(WRAP_MIN_WIDTH, 24),
    eol=st.sampled_from([b"\n", b"\r\n"]),
    gaps=st.lists(st.integers(0, 300), min_size=1, max_size=4),
)
def test_the_joined_pass_in_the_callback_equals_all_matches_and_a_merge(
    values: list[bytes], width: int, eol: bytes, gaps: list[int]
) -> None:
    # Several windows (gaps between wrapped blocks), prefixes of base64 tails (extensions).
    parts = []
    for n, value in enumerate(values * 2):
        parts.append(b" " * gaps[n % len(gaps)] + b"k=")
        parts.append(wrapped(base64.b64encode(value[: 6 + n]), width, eol) + eol)
        parts.append(wrapped(value.hex().encode(), width, eol) + b".\n")
    text = b"".join(parts)
    red = Redactor(engine="hyperscan")
    red.add_many([(f"V{n}", v) for n, v in enumerate(values)])
    fast = red._snapshot()[0]
    if not isinstance(fast, HyperscanEngine):
        return  # every value refused (too short, too few distinct bytes)
    breaks = NATIVE.wrap_breaks(text, b"")
    if not breaks:
        return
    joined, seg_j, seg_o, cuts = NATIVE.joined_windows(
        text, breaks, fast.longest, wrapped_span(fast.longest)
    )
    base_ends, base_spans, _ = fast.all_matches(text, newlines=False)
    by_callback = (dict(base_ends), dict(base_spans))
    fast.add_joined(joined, cuts, seg_j, seg_o, *by_callback)
    by_merge = (dict(base_ends), dict(base_spans))
    merge_joined(fast, joined, cuts, seg_j, seg_o, *by_merge)
    assert by_callback == by_merge


def _occurrences(red: Redactor, text: bytes, *, seed: bool) -> list[tuple[int, int, int]]:
    engine = red._snapshot()[0]
    index = prefix_index(engine)
    with pytest.MonkeyPatch.context() as patch:
        if not seed:
            patch.setattr(index, "break_filters", lambda: None)
        return find_occurrences(engine, text)


# Values with and without punctuation (any variant may be wrapped), 7 bytes and longer.
seed_value_st = st.binary(min_size=7, max_size=50).map(lambda b: b.replace(b"*", b"."))


@pytest.mark.skipif(not HYPERSCAN, reason="the break filter serves the Hyperscan path")
@settings(max_examples=120, deadline=None)
@given(
    values=st.lists(seed_value_st, min_size=1, max_size=3),
    width=st.integers(WRAP_MIN_WIDTH, 20),
    eol=st.sampled_from([b"\n", b"\r\n"]),
    cut=st.integers(0, 60),
    noise=st.lists(buf_st, min_size=1, max_size=3),
)
def test_only_the_windows_of_breaks_an_occurrence_may_cross_change_nothing(
    values: list[bytes], width: int, eol: bytes, cut: int, noise: list[bytes]
) -> None:
    # Values raw and encoded, broken at every kind of place (inside, at their ends, right
    # after a long token), between lines that end in wrap characters and lines that start
    # with them: the windows of the breaks the filter keeps give the same occurrences.
    parts = []
    for n, value in enumerate(values):
        forms = [value, base64.b64encode(value), value.hex().encode()]
        for form in forms:
            at = cut % (len(form) + 1)
            parts += [noise[n % len(noise)], b"Q" * 16, form[:at], eol, form[at:], b"\n"]
            parts += [wrapped(form, width, eol), eol, b"Z" * 17 + eol + b"2024 x" + eol]
    text = b"".join(parts)
    red = Redactor(engine="hyperscan")
    red.add_many([(f"V{n}", v) for n, v in enumerate(values)])
    if not isinstance(red._snapshot()[0], HyperscanEngine):
        return
    assert _occurrences(red, text, seed=True) == _occurrences(red, text, seed=False)


def test_the_gram_table_and_the_break_filter_refuse_what_they_cannot_use() -> None:
    assert NATIVE.gram_table([b"abcdef"]) is None  # a 6-byte pattern: no 7-byte gram
    table = NATIVE.gram_table([b"abcdefg", b"0123456789"])
    assert isinstance(table, bytes)
    assert len(table) >= 512
    assert len(table) & (len(table) - 1) == 0
    with pytest.raises(TypeError):
        NATIVE.gram_table([b"abcdefg", "text"])
    data = b"A" * 20 + b"\nB" + b"C" * 30
    breaks = [(20, 21)]
    assert NATIVE.seed_breaks(data, breaks, 10, 20, []) == []  # no pattern set: no window
    assert NATIVE.seed_breaks(data, breaks, 10, 20, [table]) == []
    crossing = NATIVE.gram_table([b"AAAAAABCC"])
    assert crossing is not None
    assert NATIVE.seed_breaks(data, breaks, 10, 20, [crossing]) == breaks
    assert NATIVE.seed_breaks(data[:24], breaks, 10, 20, [table]) == breaks  # too near the end
    for bad in (b"x" * 100, b"x" * 1000, bytearray(511)):
        with pytest.raises(ValueError, match="gram table"):
            NATIVE.seed_breaks(data, breaks, 10, 20, [bad])
    for bad_breaks in ([(21, 20)], [(20, 22), (21, 23)], [(20, 500)]):
        with pytest.raises(ValueError, match="sorted"):
            NATIVE.seed_breaks(data, bad_breaks, 10, 20, [table])
    for longest, span in ((-1, 20), (10, -1), (1 << 62, 20)):
        with pytest.raises(ValueError, match="non-negative"):
            NATIVE.seed_breaks(data, breaks, longest, span, [table])
        with pytest.raises(ValueError, match="non-negative"):
            NATIVE.joined_windows(data, breaks, longest, span)


# --- the prefix-gram filter of a stream's held-back tail (prefix_table / prefix_starts) -----

gram_st = st.binary(min_size=6, max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    grams=st.lists(gram_st, min_size=1, max_size=40, unique=True),
    text=st.binary(max_size=300),
    picks=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 300)), max_size=6),
)
def test_prefix_starts_holds_every_position_of_a_gram(
    grams: list[bytes], text: bytes, picks: list[tuple[int, int]]
) -> None:
    for which, offset in picks:  # plant some grams, at any offset
        at = min(offset, len(text))
        text = text[:at] + grams[which % len(grams)] + text[at:]
    table = NATIVE.prefix_table(grams)
    starts = NATIVE.prefix_starts(text, table)
    exact = [i for i in range(len(text) - 5) if text[i : i + 6] in set(grams)]
    assert starts == sorted(set(starts))
    assert set(exact) <= set(starts)
    assert all(0 <= i <= len(text) - 6 for i in starts)
    assert NATIVE.prefix_starts(memoryview(text), table) == starts


def test_prefix_starts_is_selective_on_ordinary_text() -> None:
    grams = [b"%06d" % (i * 7919 % 1_000_000) for i in range(2000)]
    table = NATIVE.prefix_table(grams)
    text = b"INFO GET https://api.example.com/v1/items?page=2 200 OK request_id=7f3a9c\n" * 40
    assert len(NATIVE.prefix_starts(text, table)) < len(text) // 20  # ~3 % false candidates


@pytest.mark.parametrize(
    ("grams", "error"),
    [
        ((b"abcdef",), TypeError),
        ([b"abcde"], ValueError),
        ([b"abcdefg"], ValueError),
        (["abcdef"], ValueError),
        ([b"abcdef", None], ValueError),
    ],
)
def test_a_malformed_prefix_gram_list_is_refused(grams: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="grams must be"):
        NATIVE.prefix_table(grams)


@pytest.mark.parametrize("table", [b"", b"\x00" * 511, b"\x00" * 513, b"\x00" * 1000, "x" * 512])
def test_prefix_starts_refuses_what_is_not_a_prefix_table(table: Any) -> None:
    with pytest.raises((ValueError, TypeError), match=r"prefix table|bytes-like"):
        NATIVE.prefix_starts(b"abcdefgh", table)


def test_prefix_starts_takes_two_arguments() -> None:
    with pytest.raises(TypeError, match="exactly 2"):
        NATIVE.prefix_starts(b"abcdefgh")


@settings(max_examples=150, deadline=None)
@given(
    patterns=st.lists(st.binary(min_size=6, max_size=20), min_size=1, max_size=8, unique=True),
    text=st.binary(max_size=200),
    picks=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 200), st.integers(1, 20))),
)
def test_the_prefix_index_answers_the_same_with_the_filter_and_without(
    patterns: list[bytes], text: bytes, picks: list[tuple[int, int, int]]
) -> None:
    for which, offset, cut in picks[:6]:  # plant whole patterns and beginnings of them
        pattern = patterns[which % len(patterns)]
        at = min(offset, len(text))
        text = text[:at] + pattern[:cut] + text[at:]
    with_filter = PrefixIndex(patterns, hyperscan=False)
    assert with_filter._prefix_table is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "LINESCAN", None)
        plain = PrefixIndex(patterns, hyperscan=False)
    assert plain._prefix_table is None
    for tail in (text, text[-40:], text[-6:], text[:5]):
        assert with_filter.gram_starts(tail) == plain.gram_starts(tail)
        assert with_filter.earliest_open(tail) == plain.earliest_open(tail)
    if HYPERSCAN:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine_module, "LINESCAN", None)
            database = PrefixIndex(patterns, hyperscan=True)
        assert database.earliest_open(text) == with_filter.earliest_open(text)
