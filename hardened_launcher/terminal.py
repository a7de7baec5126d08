"""Text from runs, policies and the control plane, made safe for an operator's terminal.

Deny messages, run logs, reasons and file names are written by people the operator does not
trust. Raw, they could move the cursor, rewrite earlier lines (CR, ESC sequences), change the
window title, or reorder what is shown (Unicode bidirectional overrides, "Trojan Source").
:func:`for_terminal` is the one place that turns such text into something a terminal prints
literally: every C0 and C1 control character, DEL, and every bidi embedding, override or isolate
becomes a visible escape (``\\x1b``, ``\\u202e``). Newlines and tabs are kept only where the text
is meant to span lines (``multiline=True``, for logs). :class:`TerminalWriter` does the same for
a byte stream of run output, when that stream is a terminal.
"""

from __future__ import annotations

import codecs
import re
from typing import BinaryIO, Final

__all__ = ["TerminalWriter", "for_terminal", "for_terminal_bytes"]

_BIDI: Final = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE_ONE_LINE: Final = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}\u2028\u2029]")
_UNSAFE_MULTILINE: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def for_terminal(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control character and bidi control shown as an escape.

    With ``multiline`` newlines and tabs pass (a run log); otherwise they are escaped too, so a
    message stays on its one line.
    """
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE_ONE_LINE
    return pattern.sub(_escape, text)


def for_terminal_bytes(data: bytes, *, multiline: bool = True) -> bytes:
    """Bytes of a log (UTF-8, invalid sequences shown as ``\\xNN``) made safe the same way."""
    text = data.decode("utf-8", "backslashreplace")
    return for_terminal(text, multiline=multiline).encode("utf-8")


class TerminalWriter:
    """A binary stream of run output, escaped when (and only when) it is a terminal.

    Chunks may split a UTF-8 sequence anywhere: an incremental decoder holds the partial bytes
    until the next chunk. Not a terminal (a file, a pipe): bytes pass unchanged, so a run's
    binary output can still be redirected intact.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._escape = _is_terminal(stream)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")

    @property
    def escaping(self) -> bool:
        return self._escape

    def write(self, data: bytes) -> None:
        if self._escape:
            text = self._decoder.decode(data)
            data = for_terminal(text, multiline=True).encode("utf-8")
        self._stream.write(data)

    def flush(self) -> None:
        self._stream.flush()

    def finish(self) -> None:
        """Write what the decoder still holds (an incomplete sequence, escaped) and flush."""
        if self._escape:
            rest = self._decoder.decode(b"", final=True)
            if rest:
                self._stream.write(for_terminal(rest, multiline=True).encode("utf-8"))
        self._stream.flush()


def _is_terminal(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False
