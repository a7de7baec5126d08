"""A value type for secrets: masked in every rendering, revealed only on purpose, wiped on close.

Python cannot guarantee that no copy of a value survives in memory (``bytes`` and ``str`` are
immutable and may be interned or copied by the interpreter). ``Secret`` keeps its own copy in a
``bytearray`` that :meth:`wipe` overwrites with zeros, so at least the long-lived copy goes away;
callers that need the value briefly should prefer :meth:`view` over :meth:`reveal`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn, Self

MASK = "********"


class SecretWipedError(RuntimeError):
    """A secret was used after it was wiped: a programming error, not bad input."""


class Secret:
    """A secret byte string. ``repr``/``str``/``format`` never show it; pickling is refused."""

    __slots__ = ("_buf", "_wiped")

    def __init__(self, value: bytes | bytearray | memoryview | str) -> None:
        data = value.encode("utf-8") if isinstance(value, str) else value
        self._buf = bytearray(data)
        self._wiped = False

    @classmethod
    def from_bytearray(cls, buf: bytearray) -> Self:
        """Take ownership of ``buf`` without copying; the caller must not keep using it."""
        secret = cls(b"")
        secret._buf = buf
        return secret

    # -- renderings: always masked ---------------------------------------------------------
    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return MASK

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret values cannot be pickled or copied out of the process")

    def __copy__(self) -> NoReturn:
        raise TypeError("Secret values are not copied; pass the same object")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("Secret values are not copied; pass the same object")

    def __bool__(self) -> bool:
        return not self._wiped and len(self._buf) > 0

    def __len__(self) -> int:
        self._check()
        return len(self._buf)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        self._check()
        other._check()
        return hmac.compare_digest(bytes(self._buf), bytes(other._buf))

    __hash__ = None  # type: ignore[assignment]  # secrets are not dictionary keys

    # -- explicit access ---------------------------------------------------------------------
    def reveal(self) -> bytes:
        """Return the value as ``bytes``. The copy cannot be wiped: keep it short-lived."""
        self._check()
        return bytes(self._buf)

    def reveal_text(self) -> str:
        """Return the value decoded as UTF-8 (strict)."""
        return self.reveal().decode("utf-8")

    @contextmanager
    def view(self) -> Iterator[memoryview]:
        """Yield a read-only view of the buffer without copying it."""
        self._check()
        mv = memoryview(self._buf).toreadonly()
        try:
            yield mv
        finally:
            mv.release()

    @property
    def wiped(self) -> bool:
        return self._wiped

    def wipe(self) -> None:
        """Overwrite the buffer with zeros and forget it. Safe to call twice."""
        if self._wiped:
            return
        wipe_bytearray(self._buf)
        self._buf = bytearray()
        self._wiped = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()

    def _check(self) -> None:
        if self._wiped:
            raise SecretWipedError("this secret was wiped and can no longer be used")


def wipe_bytearray(buf: bytearray) -> None:
    """Best-effort zeroing of a mutable buffer that held secret material."""
    buf[:] = bytes(len(buf))
