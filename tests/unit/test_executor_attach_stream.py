"""The runner reads Docker's attach stream through the demultiplexer: bytes that came with the
attach answer first, then any chunking of the socket; a header that is not Docker's ends the
stream (logged), and what came before it is kept."""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import timedelta
from typing import cast

import pytest

from hardened_launcher.docker_api import DockerClient, Hijacked
from hardened_launcher.executor.outputs import OutputCollector
from hardened_launcher.executor.runner import DockerRunner, StopReason
from hardened_launcher.redaction import Redactor


class ListSink:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def write(self, channel: str, data: bytes) -> None:
        self.data[channel] += data

    def close(self) -> None:
        return None


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def pump(pending: bytes, chunks: list[bytes]) -> tuple[ListSink, StopReason, int]:
    ours, theirs = socket.socketpair()
    runner = DockerRunner(
        cast("DockerClient", object()),  # _pump makes no Docker call unless a limit fires
        logs_timeout=timedelta(seconds=30),
        run_timeout=timedelta(seconds=30),
        stop_grace=timedelta(seconds=1),
    )
    redactor = Redactor()
    redactor.add("TOKEN", b"hunter2-secret")
    streams = {
        "stdout": redactor.stream("stdout", whole_lines=True),
        "stderr": redactor.stream("stderr", whole_lines=True),
    }
    sink = ListSink()

    def send() -> None:
        for chunk in chunks:
            theirs.sendall(chunk)
            time.sleep(0.01)
        theirs.close()

    writer = threading.Thread(target=send)
    writer.start()
    try:
        stopped, size, _ = runner._pump(
            Hijacked(sock=ours, pending=pending),
            "c" * 64,
            streams,  # type: ignore[arg-type]
            sink,
            None,
            time.monotonic(),
            30.0,
            OutputCollector(),
        )
    finally:
        writer.join(timeout=10)
        ours.close()
    return sink, stopped, size


def test_early_bytes_and_any_chunking_reach_the_redacted_sink() -> None:
    stream = frame(1, b"hello hun") + frame(1, b"ter2-secret\n") + frame(2, b"oops\n")
    stream += frame(0, b"") + frame(1, b"bye\n")
    pending, rest = stream[:11], stream[11:]
    sink, stopped, size = pump(pending, [rest[i : i + 3] for i in range(0, len(rest), 3)])
    assert stopped is StopReason.EXITED
    assert sink.data["stdout"] == b"hello ***\nbye\n"
    assert sink.data["stderr"] == b"oops\n"
    assert size == len(b"hello hunter2-secret\noops\nbye\n")


@pytest.mark.parametrize("together", [False, True])
def test_a_header_that_is_not_dockers_ends_the_stream(
    caplog: pytest.LogCaptureFixture, together: bool
) -> None:
    caplog.set_level(logging.WARNING)
    garbage = b"\x01\x00\xff\x00\x00\x00\x00\x05after"
    # In one read with the bad header or before it: the output before it is kept.
    chunks = [frame(1, b"before\n") + garbage] if together else [frame(1, b"before\n"), garbage]
    sink, stopped, _ = pump(b"", [*chunks, frame(1, b"never\n")])
    assert sink.data["stdout"] == b"before\n"
    assert stopped is StopReason.EXITED
    assert any("executor.attach_stream_refused" in r.getMessage() for r in caplog.records)
