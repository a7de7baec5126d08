"""The redactor as the executor sees it: a small Protocol (the test seam).

The real implementation is :class:`hardened_launcher.redaction.Redactor`, which also masks the
usual encodings of each secret (base64 and others); the executor depends only on this shape.
"""

from __future__ import annotations

from typing import Protocol

from hardened_launcher.secrets import Secret

__all__ = ["RedactingStreamLike", "RedactorLike", "add_secret"]


class RedactingStreamLike(Protocol):
    def write(self, data: bytes) -> bytes: ...

    def poll(self) -> bytes: ...

    def flush(self) -> bytes: ...


class RedactorLike(Protocol):
    def add(self, name: str, value: Secret | bytes | str) -> None: ...

    def stream(self, channel: str, *, whole_lines: bool = False) -> RedactingStreamLike: ...

    def redact_text(self, text: str) -> str: ...

    def counts(self) -> dict[str, int]: ...


def add_secret(redactor: RedactorLike, name: str, value: Secret) -> None:
    """Register ``value`` under ``name``; an empty secret is skipped (it would mask nothing)."""
    if value:
        redactor.add(name, value)
