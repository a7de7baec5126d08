"""Docker's multiplexed attach stream: 8-byte frame headers, then the payload.

A container attached without a TTY sends its output as frames: byte 0 is the stream (0 stdin,
1 stdout, 2 stderr, 3 the daemon's own error text), bytes 1-3 are zero, bytes 4-7 are the
payload's length (big-endian, unsigned). :class:`FrameDemux` is a pure state machine (no I/O):
fed arbitrary pieces of the stream (TCP chunks split anywhere, a header over several reads),
it returns each payload piece as soon as it arrives, tagged with its stream, and never holds
more than one header. A header with an unknown stream, non-zero padding or a length over
``max_frame_bytes`` is not Docker's stream: :class:`FrameError` (carrying the payload pieces of the
same feed that came before the bad header, so no output before it is lost), and the
demultiplexer refuses everything after it.
"""

from __future__ import annotations

from typing import Final

from hardened_launcher.docker_api.errors import DockerProtocolError

__all__ = ["HEADER_BYTES", "MAX_FRAME_BYTES", "STDERR", "STDOUT", "FrameDemux", "FrameError"]

HEADER_BYTES: Final = 8
STDIN: Final = 0
STDOUT: Final = 1
STDERR: Final = 2
SYSTEM_ERROR: Final = 3
_STREAMS: Final = frozenset({STDIN, STDOUT, STDERR, SYSTEM_ERROR})
#: dockerd writes one frame per read of the container's pipe (32 KiB here); a length far above
#: that means the bytes are not frame headers. Payloads are passed on as they arrive, so this
#: bound is a sanity check, not a buffer size.
MAX_FRAME_BYTES: Final = 1024 * 1024


class FrameError(DockerProtocolError):
    """The attach stream holds a header that is not Docker's. ``pieces``: what the refused feed
    held before that header (deliver them, then end the stream)."""

    pieces: list[tuple[int, bytes]]

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.pieces = []


class FrameDemux:
    """Splits the attach stream into ``(stream, payload piece)`` pairs."""

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._max = max_frame_bytes
        self._header = bytearray()
        self._stream = STDOUT
        self._left = 0
        self._broken = False

    @property
    def mid_frame(self) -> bool:
        """True while a header or a payload is incomplete (an end of stream here truncates)."""
        return bool(self._header) or self._left > 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The payload pieces in ``data`` (any split of the stream), in order."""
        if self._broken:
            raise FrameError("the Docker attach stream was already refused")
        pieces: list[tuple[int, bytes]] = []
        view = memoryview(data)
        at, end = 0, len(data)
        while at < end:
            if self._left == 0:
                take = min(HEADER_BYTES - len(self._header), end - at)
                self._header += view[at : at + take]
                at += take
                if len(self._header) < HEADER_BYTES:
                    break
                try:
                    self._start_frame()
                except FrameError as exc:
                    exc.pieces = pieces
                    raise
                continue
            take = min(self._left, end - at)
            pieces.append((self._stream, bytes(view[at : at + take])))
            at += take
            self._left -= take
        return pieces

    def _start_frame(self) -> None:
        header = bytes(self._header)
        self._header.clear()
        stream, padding, size = header[0], header[1:4], int.from_bytes(header[4:8], "big")
        if stream not in _STREAMS or padding != b"\0\0\0":
            self._broken = True
            raise FrameError(
                "the Docker attach stream holds a malformed frame header",
                detail=f"stream byte {stream}, padding {padding.hex()}",
            )
        if size > self._max:
            self._broken = True
            raise FrameError(
                f"a Docker attach frame of {size} bytes is over the {self._max}-byte limit"
            )
        self._stream, self._left = stream, size
