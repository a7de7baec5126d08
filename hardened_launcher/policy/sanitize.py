"""The sanitized form of secret values, shared by the input builder and the ``sanitized`` builtin.

A secret value never enters the policy input. Where the run metadata has one (a
:class:`~hardened_launcher.secrets.Secret`, or a variable named as secret), the input holds::

    "sanitized:" + the first 16 hex digits of HMAC-SHA256(key, UTF-8 value)

and policies compare with the ``sanitized(x)`` builtin, which computes the same form with the
same key. ``key`` is per launcher: random at start-up unless the operator configures one, so the
form is stable for one launcher process (or across launchers sharing a configured key).

Why a keyed hash and not plain SHA-256: a plain hash of a low-entropy secret (a short password, a
PIN, a known token prefix) can be guessed by hashing candidates, and the input reaches sampled
evaluations and the audit log. With a key the form is useless without the key. The cost: a
sanitized value cannot be precomputed outside the launcher, so policies must use ``sanitized()``
rather than a literal; 64 bits are plenty for equality tests and reveal little.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _stdlib_secrets

from hardened_launcher.secrets import Secret

PREFIX = "sanitized:"
KEY_BYTES = 32
DIGEST_HEX_CHARS = 16


class Sanitizer:
    """Computes the sanitized form under one key. ``repr`` never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a sanitizer key needs at least 16 bytes")
        self._key = bytes(key)

    @classmethod
    def random(cls) -> Sanitizer:
        return cls(_stdlib_secrets.token_bytes(KEY_BYTES))

    def __repr__(self) -> str:
        return "Sanitizer(key='********')"

    def key_for_worker(self) -> bytes:
        """The key, to hand to the engine worker process over its private pipe only."""
        return self._key

    def sanitize(self, value: str | bytes | Secret) -> str:
        if isinstance(value, Secret):
            with value.view() as data:
                mac = hmac.new(self._key, data, hashlib.sha256).hexdigest()
        else:
            raw = value.encode("utf-8") if isinstance(value, str) else value
            mac = hmac.new(self._key, raw, hashlib.sha256).hexdigest()
        return PREFIX + mac[:DIGEST_HEX_CHARS]


def is_sanitized(text: str) -> bool:
    tail = text[len(PREFIX) :]
    return (
        text.startswith(PREFIX)
        and len(tail) == DIGEST_HEX_CHARS
        and all(c in "0123456789abcdef" for c in tail)
    )
