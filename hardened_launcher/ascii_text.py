"""Digits and white space as the rest of the world reads them: ASCII only.

Python's ``str.isdigit()`` is true for ``²``, ``٣`` and every other Unicode digit, and ``int()``
then reads ``٣`` as 3 but raises ``ValueError`` for ``²``; ``str.strip()`` also drops U+001C..
U+001F, U+0085 and Unicode spaces. Go (OPA, Docker), HTTP and every configuration format this
product speaks mean ``0``-``9`` and ASCII white space only. So a hostile header, label, setting
or policy reached a traceback, or meant something else here than where it was written. Every
such check goes through this module.
"""

from __future__ import annotations

from typing import Final

#: ASCII white space: what surrounding a value is trimmed.
SPACE: Final = " \t\n\r\x0b\x0c"


def is_digits(text: str) -> bool:
    """Whether ``text`` is one or more of ``0``-``9`` (and nothing else)."""
    return text.isascii() and text.isdigit()


def trim(text: str) -> str:
    """``text`` without surrounding ASCII white space (other characters are kept)."""
    return text.strip(SPACE)
