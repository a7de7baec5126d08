"""Presigned log URLs against a real S3 API that checks signatures (SeaweedFS).

Proves what moto cannot: a presigned PUT works for exactly its key, and a tampered (other key,
altered signature) or expired URL is refused by the server.
"""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig
from hardened_launcher.secrets import Secret
from tests.integration.s3_server import S3Server, s3_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def _put(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, data=data, method="PUT")  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _storage(server: S3Server, *, expiry: int = 60) -> LogStorage:
    bucket = f"hl-logs-{secrets.token_hex(4)}"
    server.client().create_bucket(Bucket=bucket)
    return LogStorage(
        LogStorageConfig(
            bucket=bucket,
            endpoint_url=server.endpoint_url,
            region=server.region,
            prefix="cp/",
            access_key_id=server.access_key,
            secret_access_key=Secret(server.secret_key),
            url_expiry_seconds=expiry,
            urls_per_batch=3,
        )
    )


def test_presigned_chunks_upload_and_read_back_in_order(s3_server: S3Server) -> None:  # noqa: F811
    storage = _storage(s3_server)
    urls = storage.urls("run-1", from_chunk=0)
    assert [u.chunk for u in urls] == [0, 1, 2]
    # Upload out of order, with a gap: reading stops before the gap.
    assert _put(urls[2].url, b"third\n") == 200
    assert _put(urls[0].url, b"first\n") == 200
    assert [c for c, _ in storage.read_from("run-1", 0)] == [0]
    assert _put(urls[1].url, b"second\n") == 200
    assert b"".join(d for _, d in storage.read_from("run-1", 0)) == b"first\nsecond\nthird\n"
    assert storage.list_chunks("run-1") == [0, 1, 2]


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_tampered_presigned_urls_are_refused(s3_server: S3Server) -> None:  # noqa: F811
    storage = _storage(s3_server)
    (url,) = storage.urls("run-2", from_chunk=0, count=1)
    other_key = url.url.replace("chunk-000000", "chunk-000001")
    assert _put(other_key, b"x") == 403
    signature = dict(parse_qsl(urlsplit(url.url).query))["X-Amz-Signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert _put(_with_query(url.url, **{"X-Amz-Signature": flipped}), b"x") == 403
    assert _put(_with_query(url.url, **{"X-Amz-Expires": "604800"}), b"x") == 403
    assert storage.list_chunks("run-2") == []
    assert _put(url.url, b"genuine") == 200


def test_expired_presigned_url_is_refused(s3_server: S3Server) -> None:  # noqa: F811
    storage = _storage(s3_server, expiry=1)
    (url,) = storage.urls("run-3", from_chunk=0, count=1)
    time.sleep(2.5)
    assert _put(url.url, b"late") == 403
    assert storage.list_chunks("run-3") == []


def test_plan_urls_store_and_fetch_one_sealed_plan(s3_server: S3Server) -> None:  # noqa: F811
    from hardened_launcher.envelope.plan import PlanArtifactError  # noqa: PLC0415
    from hardened_launcher.launcher.planstore import get_plan, put_plan  # noqa: PLC0415

    storage = _storage(s3_server)
    put_url = storage.plan_url("run-3", method="PUT")
    put_plan(put_url, b"sealed plan bytes")
    assert get_plan(storage.plan_url("run-3", method="GET")) == b"sealed plan bytes"
    assert storage.list_chunks("run-3") == []  # a plan is not a log chunk
    # The PUT URL cannot read, and a GET URL names one run's plan only.
    with pytest.raises(PlanArtifactError) as caught:
        get_plan(put_url)
    assert caught.value.reason == "plan_unavailable"
    with pytest.raises(PlanArtifactError):
        get_plan(storage.plan_url("run-4", method="GET"))
    assert _put(storage.plan_url("run-3", method="GET"), b"x") == 403
