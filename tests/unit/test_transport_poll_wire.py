"""The long-poll wire format (pure): frames, headers, Retry-After — strict and bounded."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.transport import poll_wire as wire
from hardened_launcher.transport.messages import MAX_MESSAGE_BYTES

payloads = st.lists(st.binary(min_size=1, max_size=512), max_size=20)


@given(payloads)
def test_frames_round_trip(items: list[bytes]) -> None:
    assert wire.decode_frames(wire.encode_frames(items)) == items


@given(st.binary(max_size=2048))
@settings(max_examples=500)
def test_any_bytes_decode_or_raise_frame_error(data: bytes) -> None:
    frames: list[bytes] | wire.FrameError
    try:
        frames = wire.decode_frames(data)
    except wire.FrameError as exc:
        frames = exc
    if isinstance(frames, wire.FrameError):
        assert frames.reason == "poll_frames_invalid"
    else:
        assert wire.encode_frames(frames) == data  # only canonical bodies are accepted


@given(payloads, st.integers(min_value=1, max_value=8))
def test_a_cut_or_padded_body_is_refused(items: list[bytes], cut: int) -> None:
    body = wire.encode_frames(items)
    if items:
        inside_last = min(cut, len(items[-1]))  # cut into the last frame's payload
        with pytest.raises(wire.FrameError):
            wire.decode_frames(body[:-inside_last])
    with pytest.raises(wire.FrameError):
        wire.decode_frames(body + b"\n")


@pytest.mark.parametrize(
    "body",
    [
        b"0\n",
        b"00\n",
        b"01\nx",
        b"+1\nx",
        b"-1\nx",
        b" 1\nx",
        b"1 \nx",
        b"1\r\nx",
        b"0x1\nx",
        b"1e1\nxxxxxxxxxx",
        b"\n",
        b"1",
        b"999999999\nx",
        str(MAX_MESSAGE_BYTES + 1).encode() + b"\n" + b"x" * (MAX_MESSAGE_BYTES + 1),
    ],
)
def test_hostile_lengths_are_refused(body: bytes) -> None:
    with pytest.raises(wire.FrameError):
        wire.decode_frames(body)


def test_frame_count_is_bounded() -> None:
    body = wire.encode_frames([b"x"] * (wire.MAX_FRAMES + 1))
    with pytest.raises(wire.FrameError, match="frames"):
        wire.decode_frames(body)
    assert len(wire.decode_frames(body[: -len(b"1\nx")])) == wire.MAX_FRAMES
    with pytest.raises(wire.FrameError):
        wire.decode_frames(wire.encode_frames([b"a", b"b"]), max_frames=1)


def test_a_maximum_size_message_is_one_frame() -> None:
    payload = b"x" * MAX_MESSAGE_BYTES
    assert wire.decode_frames(wire.encode_frames([payload])) == [payload]


@pytest.mark.parametrize("value", [None, "", "a" * 65, "../x", "a b", "a/b", "-a", "a\x00", "é"])
def test_worker_header_refuses_non_ids(value: str | None) -> None:
    with pytest.raises(wire.FrameError):
        wire.check_worker_id(value)


@pytest.mark.parametrize(
    "value", [None, "", "0" * 31, "0" * 33, "A" * 32, "g" * 32, " " + "0" * 31, "0" * 31 + "\n"]
)
def test_session_header_is_32_lowercase_hex(value: str | None) -> None:
    with pytest.raises(wire.FrameError):
        wire.check_session_id(value)
    assert wire.check_session_id("0a" * 16) == "0a" * 16


@pytest.mark.parametrize("value", ["-1", "01", "1.5", "1e3", " 1", "9" * 19, "x"])
def test_cursor_refuses_anything_but_a_decimal(value: str) -> None:
    with pytest.raises(wire.FrameError):
        wire.parse_cursor(value)


def test_cursor_and_wait_defaults_and_bounds() -> None:
    assert wire.parse_cursor(None) == 0
    assert wire.parse_cursor("12") == 12
    assert wire.parse_wait(None) == wire.DEFAULT_POLL_WAIT_SECONDS
    assert wire.parse_wait("0") == 0.0
    assert wire.parse_wait("30") == wire.MAX_POLL_WAIT_SECONDS
    for bad in ("31", "-1", "nan", "inf", "x", ""):
        with pytest.raises(wire.FrameError):
            wire.parse_wait(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 7.0),
        ("3", 3.0),
        (" 10 ", 10.0),
        ("99999", wire.MAX_RETRY_AFTER_SECONDS),
        ("9999999", 7.0),
        ("-3", 7.0),
        ("1.5", 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 7.0),
    ],
)
def test_retry_after_is_bounded_delta_seconds(value: str | None, expected: float) -> None:
    assert wire.parse_retry_after(value, default=7.0) == expected


CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "poll_frames"


@pytest.mark.parametrize("path", sorted(CORPUS.iterdir()), ids=lambda p: p.name)
def test_fuzz_corpus_seed(path: Path) -> None:
    fuzz = importlib.import_module("fuzz.poll_frames")
    fuzz.test_one_input(path.read_bytes())
