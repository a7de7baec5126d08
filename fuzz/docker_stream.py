"""Fuzz harness for what the Docker daemon sends back (``hardened_launcher.docker_api``): the
attach stream's frames (:class:`~hardened_launcher.docker_api.frames.FrameDemux`) and the body of
an answer (:meth:`~hardened_launcher.docker_api.connection.Response.json` and ``.message``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/docker_stream.py fuzz/corpus/docker_stream -max_total_time=300

``test_one_input`` also works without atheris; tests/unit/test_docker_api_fuzz.py replays the
seed corpus and random inputs through it.

The first input byte picks a chunk size (1-256); the rest is the stream. Properties:
- demultiplexing gives payload pieces or one ``FrameError``, nothing else, whatever the chunking,
  and the same pieces (per stream, joined; up to a refused header) and the same verdict as the
  whole input at once;
- the pieces never hold more bytes than the input, every piece is non-empty and of a known
  stream, and after a refusal every feed is refused;
- a body is JSON or one ``DockerProtocolError``; its error message is printable and short.
"""

from __future__ import annotations

import contextlib
import sys

from hardened_launcher.docker_api.connection import Response
from hardened_launcher.docker_api.errors import DockerProtocolError
from hardened_launcher.docker_api.frames import FrameDemux, FrameError


def _demux(chunks: list[bytes]) -> tuple[dict[int, bytes], bool]:
    demux = FrameDemux(max_frame_bytes=4096)
    joined: dict[int, bytes] = {}
    refused = False
    for chunk in chunks:
        try:
            pieces = demux.feed(chunk)
        except FrameError as exc:
            refused, pieces = True, exc.pieces
        for stream, payload in pieces:
            assert payload
            assert stream in (0, 1, 2, 3)
            joined[stream] = joined.get(stream, b"") + payload
        if refused:
            break
    if refused:
        try:
            demux.feed(b"")
        except FrameError:
            pass
        else:  # pragma: no cover - a failed property
            raise AssertionError("a refused stream accepted more input")
    return joined, refused


def test_one_input(data: bytes) -> None:
    if not data:
        return
    size, stream = data[0] + 1, data[1:]
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    chunked, refused = _demux(chunks)
    whole, whole_refused = _demux([stream])
    assert refused == whole_refused
    assert chunked == whole  # up to a refused header, the same output whatever the chunking
    assert sum(len(p) for p in chunked.values()) <= len(stream)

    answer = Response(status=500, body=stream, content_type="application/json")
    with contextlib.suppress(DockerProtocolError):
        answer.json()
    message = answer.message()
    assert len(message) <= 500
    assert message.isprintable() or not message


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
