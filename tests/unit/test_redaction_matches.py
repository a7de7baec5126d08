"""The compiled match collector (``redaction/_matches.c``) against the Python callbacks it
replaces: the same matches, the same redacted output and counts, for one engine and for a
run's engine layered over the launcher's; and every malformed argument refused with one error."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction import engine as engine_module
from hardened_launcher.redaction.engine import (
    WRAP_MIN_WIDTH,
    HyperscanEngine,
    ReferenceEngine,
    available_engines,
)
from hardened_launcher.redaction.layered import LayeredHyperscanEngine, LiteralLayer
from hardened_launcher.redaction.stream import MASK, find_occurrences, redact_buffer
from tests.unit.fuzz_support import harness, seeds

# The package's dev install (pip install -e .) builds the helper; CI installs a C compiler.
NATIVE = engine_module.MATCHES
if NATIVE is None:
    pytest.fail(
        "hardened_launcher.redaction._matches is not built: run `pip install -e .` with a C "
        "compiler (gcc, libc6-dev)",
        pytrace=False,
    )
HYPERSCAN = "hyperscan" in available_engines()
needs_hyperscan = pytest.mark.skipif(not HYPERSCAN, reason="the collector serves Hyperscan")


@contextmanager
def without_collector() -> Iterator[None]:
    """Engines compiled inside take the Python callbacks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "MATCHES", None)
        yield


def wrap(text: bytes, width: int, eol: bytes) -> bytes:
    return eol.join(text[i : i + width] for i in range(0, len(text), width))


# Patterns that share beginnings (a root and its longer variants), with bytes of every kind.
stem_st = st.binary(min_size=6, max_size=24)
family_st = st.tuples(stem_st, st.lists(st.binary(min_size=1, max_size=8), max_size=3)).map(
    lambda t: [t[0], *(t[0] + tail for tail in t[1])]
)
patterns_st = st.lists(family_st, min_size=1, max_size=4).map(
    lambda fams: sorted({p for fam in fams for p in fam})
)


@st.composite
def texts(draw: st.DrawFn, patterns: list[bytes]) -> bytes:
    """Patterns (whole, cut short, back to back, overlapping), wrapped base64 and hex of them
    at widths around the narrowest, and noise."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        p = draw(st.sampled_from(patterns))
        kind = draw(st.integers(0, 5))
        eol = draw(st.sampled_from([b"\n", b"\r\n"]))
        width = draw(st.integers(WRAP_MIN_WIDTH, WRAP_MIN_WIDTH + 6))
        if kind == 0:
            parts.append(p)
        elif kind == 1:
            parts.append(p[: draw(st.integers(0, len(p)))])
        elif kind == 2:
            parts.append(p + p[draw(st.integers(0, len(p) - 1)) :])
        elif kind == 3:
            parts.append(wrap(base64.b64encode(b"k" * draw(st.integers(0, 2)) + p), width, eol))
        elif kind == 4:
            parts.append(wrap(p.hex().encode(), width, eol))
        else:
            parts.append(draw(st.binary(max_size=40)))
        parts.append(draw(st.sampled_from([b"", b" ", b"\n", b"\r\n", b"Q" * 17 + b"\n"])))
    return b"".join(parts)


def _pairs(patterns: list[bytes]) -> tuple[HyperscanEngine, HyperscanEngine]:
    compiled = HyperscanEngine(patterns)
    with without_collector():
        python = HyperscanEngine(patterns)
    assert compiled.sink() is not None
    assert python.sink() is None
    return compiled, python


@needs_hyperscan
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), patterns=patterns_st, skip=st.integers(0, 30))
@example(data=None, patterns=[b"abcdef", b"abcdefgh", b"abcdefghij"], skip=0)
def test_the_engine_finds_the_same_matches_with_and_without_the_collector(
    data: st.DataObject | None, patterns: list[bytes], skip: int
) -> None:
    text = data.draw(texts(patterns)) if data is not None else b"abcdefghij abcdefgh abcdef"
    compiled, python = _pairs(patterns)
    skip = min(skip, len(text))
    assert compiled.scan(text, skip) == python.scan(text, skip)
    assert compiled.find(text) == python.find(text) == ReferenceEngine(patterns).find(text)
    for behind in (b"", b"Q" * 18):
        expected = find_occurrences(python, text, behind)
        assert find_occurrences(compiled, text, behind) == expected
        for final in (True, False):
            assert redact_buffer(compiled, text, final=final, behind=behind) == redact_buffer(
                python, text, final=final, behind=behind
            )


@needs_hyperscan
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), base=patterns_st, top=patterns_st)
def test_a_layered_engine_finds_the_same_with_and_without_the_collector(
    data: st.DataObject, base: list[bytes], top: list[bytes]
) -> None:
    top = [p for p in top if p not in base]
    if not top:
        return
    text = data.draw(texts(base + top))
    compiled = LayeredHyperscanEngine(HyperscanEngine(base), LiteralLayer(top))
    with without_collector():
        python = LayeredHyperscanEngine(HyperscanEngine(base), LiteralLayer(top))
    assert compiled.sink() is not None
    assert python.sink() is None
    union = ReferenceEngine(base + top)
    assert compiled.find(text) == python.find(text) == union.find(text)
    for final in (True, False):
        assert redact_buffer(compiled, text, final=final) == redact_buffer(
            python, text, final=final
        )


@needs_hyperscan
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.binary(min_size=6, max_size=40), min_size=1, max_size=3),
    data=st.data(),
    step=st.integers(1, 300),
)
def test_the_redactor_writes_the_same_stream_with_and_without_the_collector(
    values: list[bytes], data: st.DataObject, step: int
) -> None:
    text = data.draw(texts(values))

    def run() -> tuple[bytes, dict[str, int]]:
        red = Redactor(engine="hyperscan")
        red.add_many([(f"V{n}", v) for n, v in enumerate(values)])
        stream = red.stream("out")
        out = [stream.write(text[i : i + step]) for i in range(0, len(text), step)]
        return b"".join([*out, stream.flush()]), stream.counts

    compiled = run()
    with without_collector():
        python = run()
    assert compiled == python


@needs_hyperscan
def test_a_buffer_dense_with_overlapping_matches_gives_the_same_answer() -> None:
    # Every position of the buffer ends several matches (a hostile run can print this).
    patterns = [b"abababab", b"babababa", b"abababababab", b"ababab" + b"ab" * 8]
    text = b"ab" * 32768
    compiled, python = _pairs(patterns)
    assert compiled.find(text) == python.find(text)
    assert redact_buffer(compiled, text, final=False) == redact_buffer(python, text, final=False)


@needs_hyperscan
def test_redact_returns_the_data_itself_when_nothing_is_masked_or_held() -> None:
    compiled, _ = _pairs([b"secret-value"])
    text = b"nothing to see here\n" * 50
    out, consumed, hits = redact_buffer(compiled, text, final=True)
    assert out is text
    assert (consumed, hits) == (len(text), [])


# --- the C objects' contracts: malformed arguments are refused with one clear error ------


def _table(**kwargs: Any) -> Any:  # the untyped C object
    args: dict[str, Any] = {"lengths": [3, 4], "indexes": [0, 1], "longer": [[], []]}
    args.update(kwargs)
    return NATIVE.MatchTable(**args)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"lengths": (3, 4)}, TypeError, "list"),
        ({"lengths": [3]}, ValueError, "differ in length"),
        ({"indexes": [0]}, ValueError, "differ in length"),
        ({"longer": [[]]}, ValueError, "differ in length"),
        ({"lengths": [0, 4]}, ValueError, "positive"),
        ({"lengths": [-1, 4]}, ValueError, "positive"),
        ({"indexes": [0, -2]}, ValueError, "not negative"),
        ({"lengths": ["3", 4]}, TypeError, "integer"),
        ({"lengths": [2**70, 4]}, OverflowError, "too large|too big"),
        ({"lengths": [2**32, 4]}, ValueError, "exceeds 32 bits"),
        ({"indexes": [0, 2**32]}, ValueError, "exceeds 32 bits"),
        ({"longer": [[(b"abcd", 2**32)], []]}, ValueError, "exceeds 32 bits"),
        ({"longer": [None, []]}, TypeError, "a list per expression"),
        ({"longer": [[b"abcd"], []]}, TypeError, r"\(bytes, int\) pair"),
        ({"longer": [[("abcd", 2)], []]}, TypeError, r"\(bytes, int\) pair"),
        ({"longer": [[(b"abcd", 2, 3)], []]}, TypeError, r"\(bytes, int\) pair"),
        ({"longer": [[(b"abc", 2)], []]}, ValueError, "must be longer"),
        ({"longer": [[(b"abcd", -1)], []]}, ValueError, "not negative"),
        ({"longer": [[(b"abcd", 2), (b"abcdef", 3)], []]}, ValueError, "longest first"),
        ({"longer": [[(b"abcd", "2")], []]}, TypeError, "integer"),
    ],
)
def test_a_malformed_table_is_refused(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        _table(**kwargs)


def test_a_table_cannot_be_initialised_twice() -> None:
    table = _table()
    with pytest.raises(TypeError, match="already initialised"):
        table.__init__([1], [0], [[]])


def test_an_uninitialised_table_is_refused_by_the_sink() -> None:
    empty = NATIVE.MatchTable.__new__(NATIVE.MatchTable)
    sink = NATIVE.MatchSink()
    with pytest.raises(TypeError, match="initialised MatchTable"):
        sink.take(empty, b"abc")
    with pytest.raises(TypeError, match="initialised MatchTable"):
        sink.take(object(), b"abc")


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((0, 0, 3, 0), {}, TypeError),
        ((0, 0, 3, 0, None, 1), {}, TypeError),
        ((0, 0, 3, 0, None), {"x": 1}, TypeError),
        ((-1, 0, 3, 0, None), {}, ValueError),
        ((0, 0, -3, 0, None), {}, ValueError),
        (("0", 0, 3, 0, None), {}, TypeError),
    ],
)
def test_a_malformed_callback_call_is_refused(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception]
) -> None:
    sink = NATIVE.MatchSink()
    with pytest.raises(error):
        sink(*args, **kwargs)
    assert sink.select() == []  # nothing was recorded


@pytest.mark.parametrize(
    ("record", "data", "message"),
    [
        ((2, 3), b"abcdef", "does not know"),  # expression 2 of a table of 2
        ((0, 7), b"abcdef", "outside the data"),  # ends past the data
        ((1, 3), b"abcdef", "outside the data"),  # starts before it (length 4)
    ],
)
def test_a_record_the_table_cannot_place_is_refused_and_forgotten(
    record: tuple[int, int], data: bytes, message: str
) -> None:
    table = _table()
    sink = NATIVE.MatchSink()
    sink(record[0], 0, record[1], 0, None)
    with pytest.raises(ValueError, match=message):
        sink.take(table, data)
    sink.take(table, data)  # the records are gone: nothing to refuse any more
    assert sink.select() == []


@pytest.mark.parametrize(
    ("cuts", "seg_j", "seg_o", "error", "message"),
    [
        ([5], [0], [0], ValueError, "end at the text"),  # the text is 10 bytes
        ([6, 4, 10], [0], [0], ValueError, "ascending"),
        ([5, 5, 10], [0], [0], ValueError, "ascending"),
        ([10], [0, 5], [0], ValueError, "start the segments"),
        ([10], [3], [0], ValueError, "start the segments"),
        ([10], [], [], ValueError, "start the segments"),
        ([10], [0, 6, 4], [0, 7, 9], ValueError, "ascending"),
        ([10], [0], [-1], ValueError, "not negative"),
        ((10,), [0], [0], TypeError, "list"),
        ([10], [0], ["0"], TypeError, "integer"),
    ],
)
def test_a_malformed_joined_layout_is_refused(
    cuts: Any,  # malformed on purpose
    seg_j: list[int],
    seg_o: list[Any],
    error: type[Exception],
    message: str,
) -> None:
    sink = NATIVE.MatchSink()
    sink(0, 0, 3, 0, None)
    with pytest.raises(error, match=message):
        sink.take_joined(_table(), b"abcdefghij", cuts, seg_j, seg_o)
    assert sink.select() == []


def test_wrong_argument_counts_are_refused() -> None:
    sink = NATIVE.MatchSink()
    table = _table()
    with pytest.raises(TypeError, match="exactly 2"):
        sink.take(table)
    with pytest.raises(TypeError, match="exactly 5"):
        sink.take_joined(table, b"abc", [3], [0])
    with pytest.raises(TypeError, match="exactly 3"):
        sink.redact(b"abc", 3)
    with pytest.raises(TypeError):
        sink.take(table, "not bytes")


@pytest.mark.parametrize("limit", [-1, 7, 2**40])
def test_redact_refuses_a_limit_outside_the_data(limit: int) -> None:
    sink = NATIVE.MatchSink()
    with pytest.raises(ValueError, match="within the data"):
        sink.redact(b"abcdef", limit, MASK)


def test_the_choice_is_leftmost_longest_and_the_first_of_equal_spans() -> None:
    # Expressions: 0 "abc" (index 0), 1 "bcdef" (index 1), 2 "abc" again as index 7 (a
    # second source of the same span, e.g. a layer); "abcdef" extends 0 to index 5.
    table = NATIVE.MatchTable([3, 5, 3], [0, 1, 7], [[(b"abcdef", 5)], [], []])
    sink = NATIVE.MatchSink()
    data = b"abcdefabc"
    for expr, to in ((1, 6), (0, 3), (0, 9), (2, 9)):
        sink(expr, 0, to, 0, None)
    sink.take(table, data)
    assert sink.select() == [(0, 6, 5), (6, 9, 0)]
    for expr, to in ((2, 9), (0, 9)):
        sink(expr, 0, to, 0, None)
    sink.take(table, data)
    assert sink.redact(data, 9, b"#") == (b"abcdef#", 9, [7])


def test_a_joined_match_maps_back_across_the_removed_break() -> None:
    # Buffer b"xxabc\ndefyy": the joined window b"abcdef" (the LF at 5 removed).
    table = NATIVE.MatchTable([6, 2], [4, 9], [[], []])
    sink = NATIVE.MatchSink()
    sink(0, 0, 6, 0, None)  # "abcdef" crosses the break: kept
    sink(1, 0, 2, 0, None)  # "ab" does not: the main pass has it
    sink.take_joined(table, b"abcdef", [6], [0, 3], [2, 6])
    assert sink.select() == [(2, 9, 4)]


FUZZ_SEEDS = seeds("matches")
fuzz_one_input = harness("matches")


@pytest.mark.parametrize("seed", FUZZ_SEEDS, ids=lambda path: path.name)
def test_fuzz_harness_replays_the_seed_corpus(seed: Path) -> None:
    fuzz_one_input(seed.read_bytes())


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=400))
def test_fuzz_harness_on_random_bytes(data: bytes) -> None:
    fuzz_one_input(data)
