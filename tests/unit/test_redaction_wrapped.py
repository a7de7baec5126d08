"""Wrapped base64 and hex: values broken over LF/CRLF line breaks are masked, in any chunking."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.redaction import MASK, RedactingStream, Redactor
from hardened_launcher.redaction.canary import LeakDetectedError, verify_log_clean
from hardened_launcher.redaction.engine import (
    WRAP_ALPHABET,
    WRAP_MIN_WIDTH,
    available_engines,
    wrap_newlines,
)
from hardened_launcher.redaction.stream import (
    BEHIND_BYTES,
    _few_windows,
    _head_newlines,
    _joined_windows,
    _many_windows,
    _wrap_breaks,
    wrapped_span,
)
from hardened_launcher.redaction.variants import variants

ALL = available_engines()

# Secret-like values: printable bytes and some binary, never the mask byte.
value_st = (
    st.binary(min_size=6, max_size=120)
    .map(lambda b: b.replace(b"*", b"."))
    .filter(lambda v: len(variants(v)) > 0)
)
width_st = st.one_of(st.sampled_from([16, 60, 64, 76]), st.integers(WRAP_MIN_WIDTH, 120))
eol_st = st.sampled_from([b"\n", b"\r\n"])
cuts_st = st.lists(st.integers(0, 100_000), max_size=12)


def wrap(text: bytes, width: int, eol: bytes, column: int = 0) -> bytes:
    """``text`` broken into lines of ``width``, the first line starting at ``column``."""
    first = max(1, width - column)
    lines = [text[:first]] + [text[i : i + width] for i in range(first, len(text), width)]
    return eol.join(line for line in lines if line)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def run_stream(stream: RedactingStream, chunks: list[bytes]) -> bytes:
    return b"".join([*(stream.write(c) for c in chunks), stream.flush()])


def unwrapped(out: bytes) -> bytes:
    return out.replace(b"\r\n", b"").replace(b"\n", b"")


def no_decodable_value(out: bytes, value: bytes) -> bool:
    """No base64 or hex run of ``out`` (line breaks removed) decodes to ``value``."""
    flat = unwrapped(out)
    for run in re.findall(rb"[A-Za-z0-9+/\-_]+", flat):
        std = run.translate(bytes.maketrans(b"-_", b"+/"))
        for off in range(4):
            part = std[off:]
            part = part[: len(part) // 4 * 4]
            if value in base64.b64decode(part):
                return False
    for run in re.findall(rb"[0-9a-fA-F]+", flat):
        for off in range(2):
            part = run[off:]
            if value in bytes.fromhex(part[: len(part) // 2 * 2].decode()):
                return False
    return True


@pytest.mark.parametrize("engine", ALL)
@settings(max_examples=120, deadline=None)
@given(
    value=value_st,
    before=st.binary(max_size=40),
    after=st.binary(max_size=40),
    urlsafe=st.booleans(),
    width=width_st,
    eol=eol_st,
    cuts=cuts_st,
)
def test_wrapped_base64_is_masked_at_every_alignment_width_and_chunking(
    engine: str,
    value: bytes,
    before: bytes,
    after: bytes,
    urlsafe: bool,
    width: int,
    eol: bytes,
    cuts: list[int],
) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    block = wrap(encode(before + value + after), width, eol)
    text = b"$ base64 secret.json" + eol + block + eol + b"$ done" + eol
    red = Redactor(engine=engine)
    red.add("V", value)
    out = run_stream(red.stream("stdout"), chunked(text, cuts))
    assert out == red.redact_bytes(text)  # streaming == one-shot, for every chunking
    assert MASK in out
    assert no_decodable_value(out, value)
    assert out.endswith(b"$ done" + eol)


@pytest.mark.parametrize("engine", ALL)
@settings(max_examples=120, deadline=None)
@given(
    value=value_st,
    upper=st.booleans(),
    width=st.one_of(st.none(), width_st),
    eol=eol_st,
    column=st.integers(0, 30),
    cuts=cuts_st,
)
def test_hex_in_either_case_plain_or_wrapped_is_masked(
    engine: str,
    value: bytes,
    upper: bool,
    width: int | None,
    eol: bytes,
    column: int,
    cuts: list[int],
) -> None:
    digits = value.hex().encode()
    digits = digits.upper() if upper else digits
    lead = b"0" * column  # hex of other bytes before the value on the first line
    block = digits if width is None else wrap(lead + digits, width, eol)
    text = b"debug: " + block + eol + b"next line" + eol
    red = Redactor(engine=engine)
    red.add("V", value)
    out = run_stream(red.stream("stderr"), chunked(text, cuts))
    assert out == red.redact_bytes(text)
    assert MASK in out
    assert no_decodable_value(out, value)


@pytest.mark.parametrize("engine", ALL)
@settings(max_examples=100, deadline=None)
@given(
    noise=st.binary(min_size=1, max_size=200),
    width=width_st,
    eol=eol_st,
    cuts=cuts_st,
)
def test_wrapped_encodings_of_other_data_pass_unchanged(
    engine: str, noise: bytes, width: int, eol: bytes, cuts: list[int]
) -> None:
    value = b"s3cr3t-value-\x00\xff-not-in-the-text"
    text = wrap(base64.b64encode(noise), width, eol) + eol + wrap(noise.hex().encode(), width, eol)
    red = Redactor(engine=engine)
    red.add("V", value)
    assert run_stream(red.stream("stdout"), chunked(text, cuts)) == text


@pytest.mark.parametrize("engine", ALL)
@pytest.mark.parametrize(
    "tool",
    [
        pytest.param(lambda v: wrap(base64.b64encode(v), 76, b"\n") + b"\n", id="base64-76"),
        pytest.param(lambda v: wrap(base64.b64encode(v), 64, b"\n") + b"\n", id="openssl-64"),
        pytest.param(lambda v: wrap(base64.b64encode(v), 64, b"\r\n") + b"\r\n", id="pem-crlf"),
        pytest.param(
            lambda v: b"begin-base64 644 f\n" + wrap(base64.b64encode(v), 60, b"\n") + b"\n====\n",
            id="uuencode-m",
        ),
        pytest.param(lambda v: wrap(v.hex().encode(), 60, b"\n") + b"\n", id="xxd-p"),
        pytest.param(lambda v: wrap(v.hex().upper().encode(), 32, b"\n") + b"\n", id="hex-upper"),
        pytest.param(
            lambda v: wrap(base64.urlsafe_b64encode(b"ab" + v), 76, b"\n") + b"\n", id="url-a2"
        ),
    ],
)
def test_wrapped_forms_of_real_tools(engine: str, tool: object) -> None:
    value = b'{"type": "service_account", "private_key_id": "5f1c0e9d2b7a48c3a6e1"}' * 3
    red = Redactor(engine=engine)
    red.add("SA_JSON", value)
    assert callable(tool)
    text: bytes = tool(value)
    out = red.redact_bytes(text)
    assert no_decodable_value(out, value)
    assert red.counts() == {"SA_JSON": 1}


def test_the_canary_scan_finds_a_wrapped_leak(tmp_path: Path) -> None:
    value = b"canary-secret-0123456789-abcdefghijklmnopqrstuvwxyz-" * 2
    red = Redactor()
    red.add("CANARY", value)
    log = tmp_path / "run.log"
    log.write_bytes(b"line\n" + wrap(base64.b64encode(b"x" + value), 76, b"\r\n") + b"\r\n")
    with pytest.raises(LeakDetectedError) as info:
        verify_log_clean(log, red, quarantine_dir=tmp_path / "q")
    assert info.value.counts == {"CANARY": 1}
    assert not log.exists()
    assert b"canary-secret" not in str(info.value).encode()
    clean = tmp_path / "clean.log"
    clean.write_bytes(
        red.redact_bytes(b"line\n" + wrap(base64.b64encode(value), 64, b"\n") + b"\n")
    )
    proof = verify_log_clean(clean, red, quarantine_dir=tmp_path / "q")
    assert proof.size_bytes == len(clean.read_bytes())


def test_line_breaks_after_short_words_are_not_joined() -> None:
    # A break joins two lines only after WRAP_MIN_WIDTH wrap characters: "token: abc\ndef..."
    # must not be read as "abcdef...".
    value = b"abcdefghijklmnop-value"
    red = Redactor()
    red.add("V", value)
    text = b"token: abc\ndefghijklmnop-value\n"
    assert red.redact_bytes(text) == text
    wrapped_raw = b"x" * 20 + b"abcdefghijklmnop\n-value\n"
    assert red.redact_bytes(wrapped_raw) == b"x" * 20 + MASK + b"\n"


@pytest.mark.skipif("hyperscan" not in ALL, reason="compares Hyperscan with the reference")
@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(value_st, min_size=1, max_size=3),
    pieces=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 3), width_st, eol_st, st.binary(max_size=30)),
        min_size=1,
        max_size=6,
    ),
    cuts=cuts_st,
)
def test_hyperscan_equals_the_reference_on_many_wrapped_blocks(
    values: list[bytes], pieces: list[tuple[int, int, int, bytes, bytes]], cuts: list[int]
) -> None:
    # Several blocks per buffer (the joined windows are scanned together), raw values and
    # hex next to them, and filler between: both engines must choose the same occurrences.
    parts = []
    for which, form, width, eol, filler in pieces:
        v = values[which % len(values)]
        encoded = [
            base64.b64encode(b"k" + v),
            v.hex().encode(),
            v,
            base64.urlsafe_b64encode(v + v),
        ][form]
        parts.append(filler + wrap(encoded, width, eol, column=len(filler) % width) + eol)
    text = b"".join(parts)
    fast, ref = Redactor(engine="hyperscan"), Redactor(engine="reference")
    for n, v in enumerate(values):
        fast.add(f"V{n}", v)
        ref.add(f"V{n}", v)
    expected = ref.redact_bytes(text)
    assert fast.redact_bytes(text) == expected
    assert run_stream(fast.stream("stdout"), chunked(text, cuts)) == expected


@pytest.mark.skipif("hyperscan" not in ALL, reason="compares Hyperscan with the reference")
@settings(max_examples=150, deadline=None)
@given(
    value=value_st,
    form=st.integers(0, 2),
    first=st.integers(1, 200),
    width=width_st,
    eol=eol_st,
    lead=st.binary(max_size=24),
    token_lines=st.integers(0, 3),
    cuts=cuts_st,
)
def test_the_first_break_after_any_number_of_bytes_of_an_occurrence(
    value: bytes,
    form: int,
    first: int,
    width: int,
    eol: bytes,
    lead: bytes,
    token_lines: int,
    cuts: list[int],
) -> None:
    # An occurrence's first break after any number k of its bytes (k < 6: its first bytes
    # straddle the break), with ordinary breaks around (lines ending in a long token, then a
    # timestamped line), each of which gets a window too.
    encoded = [base64.b64encode(value), value.hex().encode(), value][form]
    k = 1 + first % max(1, len(encoded) - 1)
    pad = b"Q" * max(0, WRAP_MIN_WIDTH - k)  # the break needs 16 wrap characters before it
    body = pad + encoded[:k] + eol + wrap(encoded[k:], width, eol)
    token = b"2024-05-01T12:00:00Z sha256 " + b"ab12" * 8 + eol
    text = token * token_lines + lead + b" " + body + eol + token
    fast, ref = Redactor(engine="hyperscan"), Redactor(engine="reference")
    fast.add("V", value)
    ref.add("V", value)
    expected = ref.redact_bytes(text)
    assert fast.redact_bytes(text) == expected
    assert run_stream(fast.stream("stdout"), chunked(text, cuts)) == expected
    if form != 2 and len(encoded) > k:
        assert MASK in expected


# -- the break list and the joined windows equal their plain definitions ---------------------
def _breaks_by_definition(buf: bytes, newlines: list[int]) -> list[tuple[int, int]]:
    out = []
    for nl in newlines:
        start = nl - 1 if nl >= 1 and buf[nl - 1] == 0x0D else nl
        if start >= 1 and nl + 1 < len(buf) and buf[nl + 1] in WRAP_ALPHABET:
            out.append((start, nl + 1))
    return out


def _windows_by_definition(
    buf: bytes, breaks: list[tuple[int, int]], longest: int
) -> tuple[bytes, list[int], list[int], list[int]]:
    # Each break's window [start - longest - 2, end + wrapped_span); touching windows merge;
    # a window drops every break in it; one cut at the end of each window.
    spans: list[list[int]] = []
    for b_start, b_end in breaks:
        lo, hi = max(0, b_start - longest - 2), min(len(buf), b_end + wrapped_span(longest))
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = hi
        else:
            spans.append([lo, hi])
    text, seg_j, seg_o, cuts = b"", [], [], []
    for lo, hi in spans:
        cursor = lo
        seg_j.append(len(text))
        seg_o.append(lo)
        for b_start, b_end in breaks:
            if lo <= b_start and b_end <= hi:
                text += buf[cursor:b_start]
                cursor = b_end
                seg_j.append(len(text))
                seg_o.append(cursor)
        text += buf[cursor:hi]
        cuts.append(len(text))
    return text, seg_j, seg_o, cuts


line_st = st.tuples(
    st.text(alphabet="AZaz09+/-_ .:", min_size=0, max_size=40).map(str.encode),
    st.sampled_from([b"\n", b"\r\n", b"\r", b""]),
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(line_st, max_size=40),
    dense=st.lists(st.tuples(st.integers(16, 24), eol_st, st.integers(1, 30)), max_size=3),
    longest=st.integers(6, 80),
    behind=st.binary(max_size=BEHIND_BYTES).map(lambda b: b or b"x"),
)
def test_break_list_and_joined_windows_equal_their_definitions(
    lines: list[tuple[bytes, bytes]],
    dense: list[tuple[int, bytes, int]],
    longest: int,
    behind: bytes,
) -> None:
    # Ordinary lines, lines that end in a long token, and dense blocks (a dump: a break on
    # every line, LF or CRLF, 8 and more in one window, where one replace drops them all).
    parts = [text + eol for text, eol in lines]
    for width, eol, count in dense:
        parts.append(eol.join([b"QUJD" * 6] * count)[: width * count] + eol)
    buf = b"".join(parts)
    newlines = _head_newlines(buf, behind, wrap_newlines(buf, 0))
    breaks = _wrap_breaks(buf, newlines)
    assert breaks == _breaks_by_definition(buf, newlines)
    if breaks:
        # Both builders (a loop for few breaks, list operations for many) on every input.
        expected = _windows_by_definition(buf, breaks, longest)
        span = wrapped_span(longest)
        assert _few_windows(buf, breaks, longest, span) == expected
        assert _many_windows(buf, breaks, longest, span) == expected
        assert _joined_windows(buf, breaks, longest) == expected


@pytest.mark.skipif("hyperscan" not in ALL, reason="compares Hyperscan with the reference")
@settings(max_examples=60, deadline=None)
@given(
    value=value_st,
    width=st.integers(WRAP_MIN_WIDTH, 40),
    eols=st.lists(eol_st, min_size=1, max_size=3),
    junk=st.binary(max_size=600),
    at=st.integers(0, 10_000),
    cuts=cuts_st,
)
def test_hyperscan_equals_the_reference_inside_a_dump(
    value: bytes, width: int, eols: list[bytes], junk: bytes, at: int, cuts: list[int]
) -> None:
    # A value's base64 inside a long base64 dump of other data: one window with a break on
    # every line (LF, CRLF, or mixed, where the one-replace shortcut must not apply).
    block = base64.b64encode(junk[: at % (len(junk) + 1)] + value + junk[at % (len(junk) + 1) :])
    lines = [block[i : i + width] for i in range(0, len(block), width)]
    text = b"".join(line + eols[n % len(eols)] for n, line in enumerate(lines))
    fast, ref = Redactor(engine="hyperscan"), Redactor(engine="reference")
    fast.add("V", value)
    ref.add("V", value)
    expected = ref.redact_bytes(text)
    assert fast.redact_bytes(text) == expected
    assert run_stream(fast.stream("stdout"), chunked(text, cuts)) == expected
    assert no_decodable_value(expected, value) or len(value) < 9
