"""Streams hold back only what may still become a match; ordinary text passes at once."""

from __future__ import annotations

import base64
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.redaction import RedactingStream, Redactor
from hardened_launcher.redaction.engine import available_engines
from hardened_launcher.redaction.prefixes import PrefixIndex
from hardened_launcher.redaction.redactor import (
    BACKGROUND_COMPILE_BYTES,
    BACKGROUND_COMPILE_PATTERNS,
)
from hardened_launcher.redaction.stream import HOLD_DEADLINE_SECONDS
from hardened_launcher.redaction.variants import variants

ALL = available_engines()

WORDS = [
    b"Initializing",
    b"provider",
    b"aws_instance.web:",
    b"Refreshing",
    b"state",
    b"[id=i-0abc]",
    b"Plan:",
    b"12",
    b"to",
    b"add,",
    b"request_id=7f3a9c",
    b"GET",
    b"https://api.example.com/v1/items?page=2",
    b"200",
    b"OK",
]
line_st = st.lists(st.sampled_from(WORDS), min_size=1, max_size=10).map(
    lambda ws: b" ".join(ws) + b"\n"
)


_LAUNCHER_LIKE: dict[str, Redactor] = {}


def launcher_like_redactor(engine: str) -> Redactor:
    """The values every run masks (issue 18): a pool token and a PEM private key (built once)."""
    if engine in _LAUNCHER_LIKE:
        return _LAUNCHER_LIKE[engine]
    red = _LAUNCHER_LIKE[engine] = Redactor(engine=engine)
    key_body = base64.encodebytes(secrets.token_bytes(1190))
    pem = b"-----BEGIN PRIVATE KEY-----\n" + key_body + b"-----END PRIVATE KEY-----\n"
    red.add_many(
        [
            ("SPACELIFT_TOKEN", base64.b64encode(secrets.token_bytes(600))),
            ("SPACELIFT_POOL_PRIVATE_KEY", base64.b64encode(pem)),
            ("SPACELIFT_POOL_PRIVATE_KEY", pem),
        ]
    )
    return red


@pytest.mark.parametrize("engine", ALL)
@settings(max_examples=40, deadline=None)
@given(lines=st.lists(line_st, min_size=1, max_size=20))
def test_ordinary_lines_are_released_whole_at_once(engine: str, lines: list[bytes]) -> None:
    red = launcher_like_redactor(engine)
    assert red.longest_pattern_bytes > 4000  # a fixed hold-back would keep ~4 KB per stream
    stream = red.stream("stdout")
    for line in lines:
        assert stream.write(line) == line
        assert stream.pending_bytes == 0


@pytest.mark.parametrize("engine", ALL)
@settings(max_examples=150, deadline=None)
@given(
    value=st.binary(min_size=6, max_size=40).filter(lambda v: len(variants(v)) > 0),
    before=st.binary(max_size=30),
    cut=st.integers(0, 200),
    wrapped=st.booleans(),
)
def test_held_back_bytes_are_always_part_of_a_variant(
    engine: str, value: bytes, before: bytes, cut: int, wrapped: bool
) -> None:
    red = Redactor(engine=engine)
    red.add("V", value)
    encoded = base64.b64encode(before + value)
    if wrapped:
        encoded = b"\n".join(encoded[i : i + 16] for i in range(0, len(encoded), 16))
    written = (b"out: " + encoded)[: cut % (len(encoded) + 6)]
    stream = red.stream("stdout")
    stream.write(written)
    held = written[len(written) - stream.pending_bytes :] if stream.pending_bytes else b""
    flat = held.replace(b"\n", b"")
    assert not held or any(flat in v for v in variants(value))


def test_a_line_printed_before_a_silence_is_released_at_once() -> None:
    red = Redactor()
    red.add("TOKEN", "tok-9f8e7d6c5b4a39281706")
    stream = red.stream("stdout")
    assert stream.write(b"waiting for the lock...\n") == b"waiting for the lock...\n"
    assert stream.write(b"tok-9f8e") == b""  # the start of the value waits for more
    assert stream.write(b"7d6c5b4a39281706 ok\n") == b"*** ok\n"


def test_a_long_base64_line_end_waits_only_while_it_may_continue_a_value() -> None:
    value = b"a-service-account-key-that-is-long-enough-to-wrap-" * 2
    red = Redactor()
    red.add("SA", value)
    encoded = base64.b64encode(value)
    stream = red.stream("stdout")
    first = encoded[:76] + b"\n"
    assert stream.write(first) == b""  # may continue on the next line
    assert stream.write(encoded[76:] + b"\n") == b"***\n"
    other = base64.b64encode(b"x" * 57) + b"\n"  # a full base64 line of something else
    assert stream.write(other) == other


def test_prefix_index_finds_the_earliest_open_suffix() -> None:
    index = PrefixIndex([b"abcdefgh", b"abcxyz12", b"zzzzzz9"])
    assert index.earliest_open(b"hello abc") == 6
    assert index.earliest_open(b"hello abcdefgh") is None  # complete and not extendable
    assert index.earliest_open(b"abcdefg") == 0
    assert index.earliest_open(b"zzzzzzzzz") == 3
    assert index.earliest_open(b"nothing here\n") is None
    assert index.is_open(b"abcx")
    assert not index.is_open(b"abcxyz12")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_end_after_a_long_token_is_released_by_the_deadline() -> None:
    red = Redactor()
    red.add("V", b"0123-this-value-starts-like-the-word")
    clock = FakeClock()
    stream = RedactingStream(red, "stdout", clock=clock)
    line = b"commit 0123456789abcdef0123\n"  # 16+ base64 characters, then a line end
    out = stream.write(line)
    assert out == line[: len(line) - stream.pending_bytes]
    assert 0 < stream.pending_bytes <= 6  # "0123\n": the next line could continue the value
    assert stream.poll() == b""  # not yet past the deadline
    clock.now += HOLD_DEADLINE_SECONDS
    assert out + stream.poll() == line
    assert stream.pending_bytes == 0
    assert stream.write(b"-this-value-starts-like-the-word\n") == (
        b"-this-value-starts-like-the-word\n"
    )


def test_whole_lines_keep_two_channels_from_interleaving_inside_a_line() -> None:
    red = Redactor()
    red.add("TOKEN", b"tok-9f8e7d6c5b4a39281706")
    clock = FakeClock()
    out = RedactingStream(red, "stdout", whole_lines=True, clock=clock)
    err = RedactingStream(red, "stderr", whole_lines=True, clock=clock)
    log = [out.write(b"progress: 10%"), err.write(b"warning: slow\n")]
    log.append(out.write(b" 20% tok-9f8e7d6c5b4a39281706 done\nnext"))
    assert b"".join(log) == b"warning: slow\nprogress: 10% 20% *** done\n"
    assert out.poll() == b""
    clock.now += HOLD_DEADLINE_SECONDS
    # A partial line shows after the deadline, except what may still start the value ("t").
    assert out.poll() == b"nex"
    assert out.flush() == b"t"
    assert err.flush() == b""


def test_poll_never_releases_an_open_prefix_of_a_value() -> None:
    red = Redactor()
    red.add("TOKEN", b"tok-9f8e7d6c5b4a39281706")
    clock = FakeClock()
    stream = RedactingStream(red, "stdout", clock=clock)
    assert stream.write(b"value: tok-9f8e") == b"value: "
    clock.now += 10 * HOLD_DEADLINE_SECONDS
    assert stream.poll() == b""
    assert stream.write(b"7d6c5b4a39281706\n") == b"***\n"


@pytest.mark.skipif(not {"hyperscan", "aho-corasick"} <= set(ALL), reason="needs both fast engines")
def test_many_values_start_on_aho_corasick_and_switch_to_hyperscan_mid_stream() -> None:
    values = [(f"V{i}", f"value-{i:04d}-{secrets.token_hex(8)}") for i in range(300)]
    red = Redactor()
    red.add_many(values)
    assert red.pattern_count >= BACKGROUND_COMPILE_PATTERNS
    text = b"".join(
        b"line %d %s and hex %s\n" % (i, v.encode(), v.encode().hex().encode())
        for i, (_, v) in enumerate(values[:50])
    )
    expected = Redactor(engine="reference")
    expected.add_many(values[:50])
    stream = red.stream("stdout")
    first = stream.write(text[:1000])  # whichever engine is current
    red.wait_compiled(timeout=60)
    assert red.engine_name == "hyperscan"
    out = first + stream.write(text[1000:]) + stream.flush()
    assert out == expected.redact_bytes(text)
    assert red.counts() == {name: 2 for name, _ in values[:50]}


@pytest.mark.skipif(not {"hyperscan", "aho-corasick"} <= set(ALL), reason="needs both fast engines")
def test_a_few_long_values_start_on_aho_corasick_and_the_next_redactor_reuses_hyperscan() -> None:
    """A pool key's variants are few but ~0.5 MB: by bytes, not count, the run's redactor
    starts on Aho-Corasick; the next redactor for the same values takes the compiled
    Hyperscan engine at once (a run without secrets of its own compiles nothing)."""
    key = [(f"KEY{i}", base64.b64encode(secrets.token_bytes(4000))) for i in range(3)]
    patterns = {p for _, v in key for p in variants(v)}
    assert sum(map(len, patterns)) >= BACKGROUND_COMPILE_BYTES
    assert len(patterns) < BACKGROUND_COMPILE_PATTERNS
    first = Redactor()
    first.add_many(key)
    assert first.engine_name == "aho-corasick"
    text = b"key=" + key[0][1] + b"\n"
    stream = first.stream("stdout")
    out = stream.write(text[:100])
    first.wait_compiled(timeout=60)
    assert first.engine_name == "hyperscan"
    assert out + stream.write(text[100:]) + stream.flush() == b"key=***\n"
    second = Redactor()
    second.add_many(key)
    assert second.engine_name == "hyperscan"
    assert second.redact_bytes(text) == b"key=***\n"
