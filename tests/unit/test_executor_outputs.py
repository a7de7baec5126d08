"""Output frames are taken out of raw stdout whatever the chunking; everything else passes
through unchanged; names, sizes, counts and encodings are bounded and checked."""

from __future__ import annotations

import base64
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.executor.outputs import MAX_OUTPUT_FILES, MAX_OUTPUTS_BYTES, OutputCollector


def frame(name: str, content: bytes) -> bytes:
    return (
        b"::hl:: output "
        + base64.b64encode(name.encode())
        + b" "
        + base64.b64encode(content)
        + b"\n"
    )


def run(chunks: list[bytes]) -> tuple[bytes, OutputCollector]:
    collector = OutputCollector()
    passed = b"".join(collector.feed(chunk) for chunk in chunks) + collector.close()
    return passed, collector


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


LOG_LINES = st.lists(
    st.binary(max_size=60)
    .map(lambda b: b.replace(b"\n", b"") + b"\n")
    .filter(lambda b: not b.startswith(b"::hl:: output ")),  # a frame is not a log line
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    LOG_LINES,
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True),
        st.binary(max_size=200),
        max_size=4,
    ),
    st.lists(st.integers(0, 10_000), max_size=12),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b),
)
def test_frames_leave_the_log_whatever_the_chunking(
    lines: list[bytes], files: dict[str, bytes], cuts: list[int], tail: bytes
) -> None:
    log = b"".join(lines)
    data = log + b"".join(frame(n, c) for n, c in files.items()) + tail
    passed, collector = run(chunked(data, cuts))
    unfinished_frame = tail.startswith(b"::hl:: output ")
    assert passed == (log if unfinished_frame else log + tail)
    assert {k: bytes(v) for k, v in collector.files.items()} == files
    assert collector.truncated is unfinished_frame


def test_a_line_that_only_starts_like_a_frame_passes() -> None:
    data = b"::hl:: outpu\n::hl:: phase main start\n::hl:: out"
    passed, collector = run([data[:5], data[5:]])
    assert passed == data
    assert collector.files == {}


def test_bad_frames_are_dropped_and_counted() -> None:
    bad = [
        b"::hl:: output !!! " + base64.b64encode(b"x") + b"\n",  # not base64
        frame("../etc/passwd", b"x"),
        frame(".hidden", b"x"),
        frame("a b", b"x"),
        frame("ok.txt", b"first"),
        frame("ok.txt", b"again"),  # a repeated name
        b"::hl:: output a b c\n",
    ]
    passed, collector = run(bad)
    assert passed == b""
    assert {k: bytes(v) for k, v in collector.files.items()} == {"ok.txt": b"first"}
    assert collector.invalid == 6


def test_caps_on_count_size_and_line_length() -> None:
    many = b"".join(frame(f"f{i}", b"data") for i in range(MAX_OUTPUT_FILES + 3))
    _, collector = run([many])
    assert len(collector.files) == MAX_OUTPUT_FILES
    assert collector.truncated
    big = frame("big", b"x" * (MAX_OUTPUTS_BYTES // 2 + 1))
    _, collector = run([big, big.replace(b"Ymln", b"YmlnMg==")])  # "big", "big2"
    assert list(collector.files) == ["big"]
    assert collector.truncated
    huge = b"::hl:: output " + b"A" * (2 * MAX_OUTPUTS_BYTES) + b"\nafter\n"
    passed, collector = run(chunked(huge, [1000, 70_000, 2_000_000]))
    assert passed == b"after\n"
    assert collector.files == {}
    assert collector.truncated


def test_an_unfinished_frame_at_the_end_is_lost_not_logged() -> None:
    passed, collector = run([b"log\n::hl:: output bmFtZQ== c2VjcmV0"])
    assert passed == b"log\n"
    assert collector.truncated
