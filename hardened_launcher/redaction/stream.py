"""The per-stream state machine: bytes in, bytes that are safe to emit out.

No I/O happens here. A stream keeps only the *pending* tail of what it was given: the bytes
whose fate still depends on bytes not yet seen. With ``L`` the longest pattern, the greedy
leftmost-longest choice at position ``i`` depends only on ``buf[i:i + L]``, so every position
``i <= len(buf) - L`` can be decided now and at most ``L - 1`` bytes are held back. Because the
decisions are the same ones a one-shot pass over the whole text would make, the output of any
chunking equals the one-shot output (a property the tests check), including values split
across any number of writes, in the middle of a UTF-8 code point, or values whose beginning
repeats inside them (``abac`` written as ``aba`` + ``bac``): nothing is ever "backed up" — the
matcher re-reads the held-back bytes together with the new ones.

Values added to the redactor mid-stream apply to every byte not yet emitted; bytes already
emitted cannot be called back (the final canary scan catches those in stored logs).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from hardened_launcher.redaction.engine import Engine

if TYPE_CHECKING:
    from hardened_launcher.redaction.redactor import Redactor

MASK = b"***"


def redact_buffer(engine: Engine, buf: bytes, *, final: bool) -> tuple[bytes, int, list[int]]:
    """Redact the decidable prefix of ``buf``.

    Returns ``(output, consumed, pattern_indexes)``: ``output`` replaces ``buf[:consumed]``;
    ``buf[consumed:]`` (at most ``engine.longest - 1`` bytes unless ``final``) must be offered
    again with the next bytes. ``pattern_indexes`` lists the pattern of each mask written.
    """
    size = len(buf)
    limit = size if final else size - engine.longest + 1
    if limit <= 0:
        return b"", 0, []
    matches = engine.find(buf) if engine.longest else []
    if not matches or matches[0][0] >= limit:
        emit_to = min(limit, size)
        return buf[:emit_to], emit_to, []
    parts: list[bytes] = []
    hits: list[int] = []
    cursor = 0
    for start, end, index in matches:
        if start >= limit:
            break
        parts.append(buf[cursor:start])
        parts.append(MASK)
        hits.append(index)
        cursor = end
    emit_to = max(cursor, min(limit, size))
    parts.append(buf[cursor:emit_to])
    return b"".join(parts), emit_to, hits


class RedactingStream:
    """One output channel (``stdout``, ``stderr``…) of one run. Thread-safe; order is the caller's.

    :meth:`write` returns what may be emitted now; :meth:`flush` ends the stream and returns the
    rest. ``counts`` holds this channel's masks per variable name; they are also added to the
    redactor's totals unless the stream was made with ``record=False`` (the canary's scans).
    """

    def __init__(self, redactor: Redactor, channel: str, *, record: bool = True) -> None:
        self.channel = channel
        self.counts: dict[str, int] = {}
        self._redactor = redactor
        self._record = record
        self._pending = b""
        self._closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"RedactingStream(channel={self.channel!r}, pending_bytes={len(self._pending)}, "
            f"closed={self._closed})"
        )

    @property
    def pending_bytes(self) -> int:
        """How many bytes are held back right now (at most the longest pattern minus one)."""
        return len(self._pending)

    def write(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed ``data``; return the bytes that are safe to emit now (possibly fewer, or none)."""
        with self._lock:
            if self._closed:
                raise ValueError(f"write to the flushed redacting stream {self.channel!r}")
            return self._step(bytes(data), final=False)

    def flush(self) -> bytes:
        """End of stream: return everything still held back, redacted. Further writes fail."""
        with self._lock:
            if self._closed:
                return b""
            out = self._step(b"", final=True)
            self._closed = True
            return out

    def _step(self, data: bytes, *, final: bool) -> bytes:
        engine, owners = self._redactor._snapshot()  # one package, one lock
        buf = self._pending + data if self._pending else data
        out, consumed, hits = redact_buffer(engine, buf, final=final)
        self._pending = buf[consumed:]
        if hits:
            names = [name for index in hits for name in owners[index]]
            for name in names:
                self.counts[name] = self.counts.get(name, 0) + 1
            if self._record:
                self._redactor._count(names)
        return out
