from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hardened_launcher.durations import (
    MAX_DURATION_NS,
    MAX_DURATION_TEXT_CHARS,
    DurationError,
    format_duration,
    format_ns,
    parse_duration,
    parse_duration_ns,
)

NS = 1
US = 1_000
MS = 1_000_000
S = 1_000_000_000
M = 60 * S
H = 60 * M

# Expected values as Go's time.ParseDuration returns them (its own test table, plus ours).
GO_CASES: list[tuple[str, int]] = [
    ("0", 0),
    ("+0", 0),
    ("-0", 0),
    ("5s", 5 * S),
    ("30s", 30 * S),
    ("1478s", 1478 * S),
    ("-5s", -5 * S),
    ("+5s", 5 * S),
    ("5.0s", 5 * S),
    ("5.6s", 5 * S + 600 * MS),
    ("5.s", 5 * S),
    (".5s", 500 * MS),
    ("1.0s", 1 * S),
    ("1.00s", 1 * S),
    ("1.004s", 1 * S + 4 * MS),
    ("1.0040s", 1 * S + 4 * MS),
    ("100.00100s", 100 * S + 1 * MS),
    ("10ns", 10 * NS),
    ("11us", 11 * US),
    ("12\u00b5s", 12 * US),
    ("12\u03bcs", 12 * US),
    ("13ms", 13 * MS),
    ("14s", 14 * S),
    ("15m", 15 * M),
    ("16h", 16 * H),
    ("3h30m", 3 * H + 30 * M),
    ("10.5s4m", 4 * M + 10 * S + 500 * MS),
    ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
    ("1h2m3s4ms5us6ns", 1 * H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
    ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
    ("52763797000ns", 52763797000 * NS),
    ("0.3333333333333333333h", 20 * M),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", MAX_DURATION_NS),
    ("9223372036854775.807us", MAX_DURATION_NS),
    ("9223372036s854ms775us807ns", MAX_DURATION_NS),
    ("-9223372036854775808ns", -(1 << 63)),
    ("-9223372036854775.808us", -(1 << 63)),
    ("-9223372036s854ms775us808ns", -(1 << 63)),
    ("-2562047h47m16.854775808s", -(1 << 63)),
    ("0.100000000000000000000h", 6 * M),
    ("0.830103483285477580700h", 49 * M + 48 * S + 372539827 * NS),
    # the seed's examples
    ("1000s", 1000 * S),
    ("120m", 120 * M),
    ("1h30m", 90 * M),
    ("1.5h", 90 * M),
    ("300ms", 300 * MS),
]

BAD = [
    "",
    "3",
    "-",
    "s",
    ".",
    "-.",
    ".s",
    "+.s",
    "1d",
    "1 s",
    " 1s",
    "1s ",
    "1S",
    "00",
    "1h-1m",
    "\u0661s",  # ARABIC-INDIC DIGIT ONE is a digit to int(), not to Go
    "9223372036854775808ns",
    "9223372036854775.808us",
    "9223372036854ms775us808ns",
    "-9223372036854775809ns",
    "99999999999999999999h",
    "2562048h",
]


@pytest.mark.parametrize(("text", "expected"), GO_CASES)
def test_parses_like_go(text: str, expected: int) -> None:
    assert parse_duration_ns(text) == expected


@pytest.mark.parametrize("text", BAD)
def test_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration_ns(text)
    assert info.value.why
    assert isinstance(info.value, ValueError)


def test_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(DurationError, match="unknown unit 'd'"):
        parse_duration("1d")
    with pytest.raises(DurationError, match="unit is missing"):
        parse_duration("30")
    with pytest.raises(DurationError, match="out of range"):
        parse_duration("3000000h")
    with pytest.raises(DurationError, match="needs a number"):
        parse_duration(".h")


def test_overlong_text_is_refused_without_scanning() -> None:
    with pytest.raises(DurationError, match="longer than"):
        parse_duration("1" * (MAX_DURATION_TEXT_CHARS + 1) + "s")


def test_non_text_is_refused() -> None:
    with pytest.raises(DurationError, match="must be text"):
        parse_duration(b"1s")  # type: ignore[arg-type]


def test_timedelta_truncates_below_a_microsecond_toward_zero() -> None:
    assert parse_duration("1500ns") == timedelta(microseconds=1)
    assert parse_duration("-1500ns") == timedelta(microseconds=-1)
    assert parse_duration("999ns") == timedelta(0)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1 * NS, "1ns"),
        (1100 * NS, "1.1\u00b5s"),
        (2200 * US, "2.2ms"),
        (3300 * MS, "3.3s"),
        (4 * M + 5 * S, "4m5s"),
        (4 * M + 5001 * MS, "4m5.001s"),
        (5 * H + 6 * M + 7001 * MS, "5h6m7.001s"),
        (8 * M + 1 * NS, "8m0.000000001s"),
        (7 * M, "7m0s"),
        (70 * M, "1h10m0s"),
        (2 * H, "2h0m0s"),
        (-(1 << 63), "-2562047h47m16.854775808s"),
        (MAX_DURATION_NS, "2562047h47m16.854775807s"),
        (-1 * S, "-1s"),
    ],
)
def test_formats_like_go(ns: int, text: str) -> None:
    assert format_ns(ns) == text
    assert parse_duration_ns(text) == ns


def test_format_duration_of_the_seed_defaults() -> None:
    assert format_duration(timedelta(minutes=7)) == "7m0s"
    assert format_duration(timedelta(minutes=70)) == "1h10m0s"
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(microseconds=1500)) == "1.5ms"
    assert format_duration(-timedelta(seconds=90)) == "-1m30s"


def _outcome(text: str) -> int | DurationError:
    try:
        return parse_duration_ns(text)
    except DurationError as exc:  # any other exception escapes and fails the test
        return exc


def _assert_parses_or_explains(text: str) -> None:
    outcome = _outcome(text)
    if isinstance(outcome, DurationError):
        assert outcome.why
        assert str(outcome)
    else:
        assert -(1 << 63) <= outcome <= MAX_DURATION_NS
        assert parse_duration_ns(format_ns(outcome)) == outcome


# Go's range in whole microseconds, which is what a timedelta can hold.
GO_RANGE_US = st.integers(min_value=-(MAX_DURATION_NS // US), max_value=MAX_DURATION_NS // US)


@given(GO_RANGE_US)
@example(0)
@example(1)
@example(-1)
@example(MAX_DURATION_NS // US)
def test_format_then_parse_round_trips(micro: int) -> None:
    td = timedelta(microseconds=micro)
    assert parse_duration(format_duration(td)) == td


@given(st.integers(min_value=-(1 << 63), max_value=MAX_DURATION_NS))
def test_format_ns_then_parse_round_trips_to_the_nanosecond(ns: int) -> None:
    assert parse_duration_ns(format_ns(ns)) == ns


@given(st.text(max_size=300))
@example("\u00b5s")
@example("1.")
@example("+")
def test_arbitrary_text_parses_or_raises_only_duration_error(text: str) -> None:
    _assert_parses_or_explains(text)


DURATION_ALPHABET = st.sampled_from(list("0123456789.+-hmsnuµμ"))


@given(st.text(alphabet=DURATION_ALPHABET, max_size=40))
def test_near_miss_text_parses_or_raises_only_duration_error(text: str) -> None:
    _assert_parses_or_explains(text)


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from(["h", "m", "s"])),
        min_size=1,
        max_size=4,
    )
)
def test_sums_components(parts: list[tuple[int, str]]) -> None:
    scale = {"h": H, "m": M, "s": S}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration_ns(text) == sum(n * scale[unit] for n, unit in parts)


FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"


@functools.cache
def _load_harness() -> Callable[[bytes], None]:
    spec = importlib.util.spec_from_file_location("fuzz_durations", FUZZ_DIR / "durations.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    harness: Callable[[bytes], None] = module.test_one_input
    return harness


CORPUS = sorted((FUZZ_DIR / "corpus" / "durations").iterdir())


def test_the_seed_corpus_exists() -> None:
    assert len(CORPUS) >= 5


@pytest.mark.parametrize("seed", CORPUS, ids=lambda p: p.name)
def test_fuzz_harness_replays_the_seed_corpus(seed: Path) -> None:
    data = seed.read_bytes()
    _load_harness()(data)  # the harness asserts its properties; a failure raises
    outcome = _outcome(data.decode("utf-8", errors="replace"))
    assert isinstance(outcome, (int, DurationError))


@given(st.binary(max_size=64))
def test_fuzz_harness_on_random_bytes(data: bytes) -> None:
    _load_harness()(data)  # the harness asserts its properties
    text = data.decode("utf-8", errors="replace")
    if not isinstance(_outcome(text), DurationError):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
