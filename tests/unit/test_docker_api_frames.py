"""The attach stream's demultiplexer: any frames, any chunking, round-trip; headers that are
not Docker's are refused, and nothing after them is passed on."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.docker_api.frames import (
    HEADER_BYTES,
    MAX_FRAME_BYTES,
    FrameDemux,
    FrameError,
)

frames_st = st.lists(st.tuples(st.sampled_from([0, 1, 2, 3]), st.binary(max_size=300)), max_size=20)


def encode(frames: list[tuple[int, bytes]]) -> bytes:
    return b"".join(
        bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload
        for stream, payload in frames
    )


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def per_stream(pieces: list[tuple[int, bytes]]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for stream, payload in pieces:
        if payload:
            out[stream] = out.get(stream, b"") + payload
    return out


@given(frames_st, st.lists(st.integers(min_value=0), max_size=40))
def test_any_frames_in_any_chunking_round_trip(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    demux = FrameDemux()
    got: list[tuple[int, bytes]] = []
    for chunk in split(encode(frames), cuts):
        got += demux.feed(chunk)
    assert per_stream(got) == per_stream(frames)
    assert all(payload for _, payload in got)  # no empty pieces
    # Order within the whole stream is kept: pieces come in frame order.
    merged = [(s, p) for s, p in frames if p]
    assert b"".join(p for _, p in got) == b"".join(p for _, p in merged)
    assert not demux.mid_frame


@given(frames_st, st.integers(min_value=1, max_value=HEADER_BYTES + 49))
def test_a_stream_cut_short_is_mid_frame(frames: list[tuple[int, bytes]], cut: int) -> None:
    data = encode([*frames, (1, b"x" * 50)])
    demux = FrameDemux()
    demux.feed(data[: len(data) - cut])
    assert demux.mid_frame


@given(
    st.integers(min_value=4, max_value=255),
    st.binary(min_size=3, max_size=3),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.lists(st.integers(min_value=0), max_size=5),
)
def test_unknown_stream_bytes_are_refused(
    stream: int, padding: bytes, size: int, cuts: list[int]
) -> None:
    header = bytes([stream]) + padding + size.to_bytes(4, "big")
    demux = FrameDemux()
    chunks = split(encode([(1, b"ok")]) + header + b"rest", cuts)

    def feed_all() -> None:
        for chunk in chunks:
            demux.feed(chunk)

    with pytest.raises(FrameError):
        feed_all()
    with pytest.raises(FrameError):
        demux.feed(b"")  # refused for good


@given(st.binary(min_size=3, max_size=3).filter(lambda p: p != b"\0\0\0"))
def test_non_zero_padding_is_refused(padding: bytes) -> None:
    with pytest.raises(FrameError, match="malformed"):
        FrameDemux().feed(b"\x01" + padding + b"\0\0\0\x01x")


@given(st.integers(min_value=MAX_FRAME_BYTES + 1, max_value=2**32 - 1))
def test_oversized_and_negative_lengths_are_refused(size: int) -> None:
    # A "negative" length (the sign bit of a 32-bit length) is a huge unsigned one.
    with pytest.raises(FrameError, match="over the"):
        FrameDemux().feed(b"\x02\0\0\0" + size.to_bytes(4, "big"))


def test_the_bound_is_the_configured_one() -> None:
    demux = FrameDemux(max_frame_bytes=4)
    assert demux.feed(encode([(1, b"1234")])) == [(1, b"1234")]
    with pytest.raises(FrameError):
        demux.feed(encode([(1, b"12345")]))


@settings(max_examples=50)
@given(st.binary(max_size=2000))
def test_garbage_gives_pieces_or_one_frame_error(data: bytes) -> None:
    demux = FrameDemux()
    try:
        pieces = demux.feed(data)
    except FrameError:
        return
    assert sum(len(p) for _, p in pieces) <= len(data)
    assert all(stream in (0, 1, 2, 3) for stream, _ in pieces)


@given(frames_st, st.lists(st.integers(min_value=0), max_size=10))
def test_output_before_a_bad_header_is_kept_whatever_the_chunking(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    demux = FrameDemux()
    got: list[tuple[int, bytes]] = []
    refused = False
    for chunk in split(encode(frames) + b"\x09\0\0\0\0\0\0\x01x", cuts):
        try:
            got += demux.feed(chunk)
        except FrameError as exc:
            got += exc.pieces
            refused = True
            break
    assert refused
    assert per_stream(got) == per_stream(frames)
