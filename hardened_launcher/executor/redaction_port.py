"""The redactor as the executor sees it: a small Protocol (the test seam).

The real implementation is :class:`hardened_launcher.redaction.Redactor`, which also masks the
usual encodings of each secret (base64 and others); the executor depends only on this shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from hardened_launcher.secrets import Secret

__all__ = ["RedactingStreamLike", "RedactorLike", "add_secret", "add_secrets"]


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


def add_secrets(redactor: RedactorLike, named: Iterable[tuple[str, Secret | bytes]]) -> None:
    """Register many secrets; one engine compile when the redactor has ``add_many`` (a secret
    file can hold thousands of values). Empty secrets are skipped."""
    items = [(name, value) for name, value in named if value]
    add_many = getattr(redactor, "add_many", None)
    if callable(add_many):
        add_many(items)
        return
    for name, value in items:
        redactor.add(name, value)
