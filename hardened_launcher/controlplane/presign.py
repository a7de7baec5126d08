"""Presigned S3 URLs (Signature Version 4, query string, path-style) computed directly.

Every ``assign`` carries a batch of presigned log-chunk URLs, built when it is sent. boto3's
``generate_presigned_url`` runs its whole request pipeline per URL (endpoint rules, parameter
validation, event hooks): measured ~0.3 ms per URL idle and several times that on a busy
machine, most of the time it takes to build an ``assign``. The signature itself is a few HMACs.

:class:`QueryPresigner` is used only for the simple case: an explicit ``http(s)://host[:port]``
endpoint without a path and static credentials given in the settings (anything else goes through
boto3 as before). Its URLs are the ones boto3 makes for the same time (unit tests compare them).
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from datetime import UTC, datetime
from typing import Final

from hardened_launcher.secrets import Secret

_ALGORITHM: Final = "AWS4-HMAC-SHA256"
_UNRESERVED: Final = "-_.~"


def _quote(value: str, *, keep_slash: bool = False) -> str:
    return urllib.parse.quote(value, safe=_UNRESERVED + ("/" if keep_slash else ""))


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


class QueryPresigner:
    """Presigns object URLs for one endpoint, region and static key pair."""

    def __init__(
        self, *, endpoint_url: str, region: str, access_key_id: str, secret_access_key: Secret
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint_url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ValueError("not a plain http(s)://host[:port] endpoint")
        default_port = 80 if parts.scheme == "http" else 443
        port = parts.port
        self._base = f"{parts.scheme}://{parts.netloc}"
        host = parts.netloc
        if port == default_port:  # the Host header leaves out a default port
            host = parts.netloc.rsplit(":", 1)[0]
        self._host = host
        self._region = region
        self._access_key_id = access_key_id
        self._secret = secret_access_key
        self._day = ""
        self._signing_key = b""

    def __repr__(self) -> str:
        return f"QueryPresigner(host={self._host!r}, region={self._region!r})"

    def _key_for(self, day: str) -> bytes:
        if day != self._day:
            secret = self._secret.reveal()
            key = _hmac(b"AWS4" + secret, day)
            for part in (self._region, "s3", "aws4_request"):
                key = _hmac(key, part)
            self._day, self._signing_key = day, key
        return self._signing_key

    def url(
        self,
        *,
        method: str,
        bucket: str,
        key: str,
        expires_in: int,
        now: datetime | None = None,
    ) -> str:
        """The presigned URL of ``method`` on ``bucket``/``key``, valid ``expires_in`` s."""
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        day = moment.strftime("%Y%m%d")
        stamp = moment.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{day}/{self._region}/s3/aws4_request"
        path = "/" + _quote(bucket) + "/" + _quote(key, keep_slash=True)
        query = {
            "X-Amz-Algorithm": _ALGORITHM,
            "X-Amz-Credential": f"{self._access_key_id}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(expires_in),
            "X-Amz-SignedHeaders": "host",
        }
        canonical_query = "&".join(
            f"{_quote(name)}={_quote(value)}" for name, value in sorted(query.items())
        )
        canonical_request = "\n".join(
            (method, path, canonical_query, f"host:{self._host}", "", "host", "UNSIGNED-PAYLOAD")
        )
        to_sign = "\n".join(
            (_ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
        )
        signature = hmac.new(
            self._key_for(day), to_sign.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        return f"{self._base}{path}?{canonical_query}&X-Amz-Signature={signature}"
