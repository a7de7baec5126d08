"""Splitting a URL that came from outside without letting :mod:`urllib` raise.

``urllib.parse.urlsplit`` raises ``ValueError`` for some malformed inputs (an unbalanced ``[`` or
``]`` around the host: "Invalid IPv6 URL"), and reading ``.port`` raises it for a port that is
not a number in 0..65535. Every setting, token field, spec field and command argument that holds
a URL is split here, so such a value gets its caller's one clear error instead of an internal
error (exit 70).
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def split_url(text: str) -> SplitResult | None:
    """``urlsplit(text)``, or None when ``urllib`` cannot split it."""
    try:
        return urlsplit(text)
    except ValueError:
        return None
