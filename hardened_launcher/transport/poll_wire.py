"""The HTTP long-poll transport's wire format (pure): endpoints, headers, frames, limits.

A request or response body carries whole protocol messages, each exactly the bytes
:meth:`~.messages.Message.to_json` produced (the same bytes MQTT publishes), framed as::

    <length in ASCII decimal>\\n<length bytes of message>

one after the other, nothing else (``Content-Type: application/vnd.hardened-launcher.frames``).
Parsing is strict and bounded: a frame over ``MAX_MESSAGE_BYTES``, more than ``MAX_FRAMES``
frames, a length with a sign, spaces or leading zeros, or trailing bytes is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from hardened_launcher.ascii_text import is_digits, trim
from hardened_launcher.errors import UntrustedInputError
from hardened_launcher.transport.messages import MAX_MESSAGE_BYTES, is_valid_worker_id

API_PREFIX: Final = "/v1"
SESSION_PATH: Final = f"{API_PREFIX}/session"
POLL_PATH: Final = f"{API_PREFIX}/poll"
MESSAGES_PATH: Final = f"{API_PREFIX}/messages"

CONTENT_TYPE: Final = "application/vnd.hardened-launcher.frames"
WORKER_HEADER: Final = "HL-Worker-Id"
SESSION_HEADER: Final = "HL-Session"
CURSOR_HEADER: Final = "HL-Cursor"
WAIT_HEADER: Final = "HL-Wait"

#: Frames in one request or response body.
MAX_FRAMES: Final = 256
#: Bytes of one POST body (a few maximum-size messages).
MAX_BODY_BYTES: Final = 4 * MAX_MESSAGE_BYTES
#: Longest a poll may be held, in seconds (the client asks for less; proxies cut idle
#: connections after 30-60 s).
MAX_POLL_WAIT_SECONDS: Final = 30.0
DEFAULT_POLL_WAIT_SECONDS: Final = 20.0
#: Bytes of a worker's will (its ``gone`` message).
MAX_WILL_BYTES: Final = 4096
#: Longest ``Retry-After`` a client honours, in seconds.
MAX_RETRY_AFTER_SECONDS: Final = 300.0

_LENGTH_RE: Final = re.compile(rb"0|[1-9][0-9]{0,7}")
_SESSION_RE: Final = re.compile(r"[0-9a-f]{32}")
_CURSOR_RE: Final = re.compile(r"0|[1-9][0-9]{0,17}")


class FrameError(UntrustedInputError):
    """A body that is not a well-formed sequence of frames."""

    default_reason = "poll_frames_invalid"


def encode_frames(payloads: Iterable[bytes]) -> bytes:
    out = bytearray()
    for payload in payloads:
        out += str(len(payload)).encode("ascii") + b"\n" + payload
    return bytes(out)


def decode_frames(body: bytes, *, max_frames: int = MAX_FRAMES) -> list[bytes]:
    """Split ``body`` into message payloads; anything malformed raises :class:`FrameError`."""
    frames: list[bytes] = []
    view = memoryview(body)
    pos = 0
    while pos < len(body):
        if len(frames) >= max_frames:
            raise FrameError(f"more than {max_frames} frames in one body")
        newline = body.find(b"\n", pos, pos + 10)
        if newline < 0 or _LENGTH_RE.fullmatch(body, pos, newline) is None:
            raise FrameError("a frame does not start with its decimal length and a newline")
        length = int(body[pos:newline])
        if length == 0 or length > MAX_MESSAGE_BYTES:
            raise FrameError("a frame is empty or longer than the largest message")
        start = newline + 1
        if start + length > len(body):
            raise FrameError("a frame is cut short")
        frames.append(bytes(view[start : start + length]))
        pos = start + length
    return frames


def check_worker_id(value: str | None) -> str:
    if value is None or not is_valid_worker_id(value):
        raise FrameError(f"the {WORKER_HEADER} header is missing or not a worker id")
    return value


def check_session_id(value: str | None) -> str:
    if value is None or _SESSION_RE.fullmatch(value) is None:
        raise FrameError(f"the {SESSION_HEADER} header is missing or not 32 lowercase hex digits")
    return value


def parse_cursor(value: str | None) -> int:
    if value is None:
        return 0
    if _CURSOR_RE.fullmatch(value) is None:
        raise FrameError(f"the {CURSOR_HEADER} header is not a decimal number")
    return int(value)


def parse_wait(value: str | None) -> float:
    if value is None:
        return DEFAULT_POLL_WAIT_SECONDS
    try:
        wait = float(value)
    except ValueError:
        raise FrameError(f"the {WAIT_HEADER} header is not a number of seconds") from None
    if not 0.0 <= wait <= MAX_POLL_WAIT_SECONDS:
        raise FrameError(f"the {WAIT_HEADER} header is not 0 to {MAX_POLL_WAIT_SECONDS:g} s")
    return wait


def parse_retry_after(value: str | None, *, default: float) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds only), bounded; else ``default``."""
    if value is None or not is_digits(trim(value)) or len(trim(value)) > 6:
        return default
    return min(float(int(trim(value))), MAX_RETRY_AFTER_SECONDS)
