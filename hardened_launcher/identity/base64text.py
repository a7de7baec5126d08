"""Lenient standard-base64 decoding into a wipeable ``bytearray``.

Operators produce the base64 forms of the pool key and the token with whatever tool is at hand:
``base64 -w 0`` (GNU), ``base64 -b 0`` (macOS), plain ``base64`` (76-column lines), with CRLF line
endings after a trip through Windows, with or without a trailing newline. All of those are
accepted: ASCII whitespace anywhere is ignored and the ``=`` padding is optional. Anything else
(another alphabet, a stray ``=`` in the middle, a length that cannot be base64) is refused.

The standard library decoder returns immutable ``bytes`` that cannot be wiped, so this module
decodes into a ``bytearray`` the caller owns and wipes when done. The error raised here never
carries any part of the input.
"""

from __future__ import annotations

from hardened_launcher.secrets import wipe_bytearray

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WHITESPACE = b" \t\r\n\v\f"
_INVALID = 0xFF
_PAD = ord("=")


def _build_table() -> bytes:
    table = bytearray([_INVALID]) * 256
    for value, char in enumerate(_ALPHABET):
        table[char] = value
    return bytes(table)


# Maps each byte to its 6-bit value, or 0xFF when it is not in the alphabet.
_SIXBIT = _build_table()


class Base64DecodeError(ValueError):
    """The text is not standard base64. Carries no part of the input."""


def decode_base64(data: bytes | bytearray | memoryview) -> bytearray:
    """Decode standard base64, ignoring ASCII whitespace and tolerating missing padding.

    Returns a new ``bytearray``; intermediate buffers are wiped before returning.
    """
    compact = bytearray(data).translate(None, delete=_WHITESPACE)
    values = bytearray()
    try:
        end = len(compact)
        while end and compact[end - 1] == _PAD:
            end -= 1
        padding = len(compact) - end
        if padding > 2:
            raise Base64DecodeError("too much '=' padding")
        if padding and len(compact) % 4 != 0:
            raise Base64DecodeError("'=' padding does not complete a 4-character group")
        values = compact[:end].translate(_SIXBIT)
        if _INVALID in values:
            raise Base64DecodeError("a character outside the base64 alphabet")
        remainder = len(values) % 4
        if remainder == 1:
            raise Base64DecodeError("a length that no base64 encoding has")
        return _pack(values, remainder)
    finally:
        wipe_bytearray(compact)
        wipe_bytearray(values)


def _pack(values: bytearray, remainder: int) -> bytearray:
    full = len(values) - remainder
    tail = {0: 0, 2: 1, 3: 2}[remainder]
    out = bytearray(full // 4 * 3 + tail)
    j = 0
    for i in range(0, full, 4):
        a, b, c, d = values[i], values[i + 1], values[i + 2], values[i + 3]
        out[j] = ((a << 2) | (b >> 4)) & 0xFF
        out[j + 1] = ((b << 4) | (c >> 2)) & 0xFF
        out[j + 2] = ((c << 6) | d) & 0xFF
        j += 3
    if remainder >= 2:
        a, b = values[full], values[full + 1]
        out[j] = ((a << 2) | (b >> 4)) & 0xFF
    if remainder == 3:
        b, c = values[full + 1], values[full + 2]
        out[j + 1] = ((b << 4) | (c >> 2)) & 0xFF
    return out
