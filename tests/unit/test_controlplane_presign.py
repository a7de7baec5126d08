"""The direct SigV4 presigner (controlplane/presign.py) makes exactly boto3's URLs, and
``LogStorage`` uses it only for a plain endpoint with static keys."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig, chunk_key
from hardened_launcher.controlplane.presign import QueryPresigner
from hardened_launcher.secrets import Secret

CANARY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYcanary"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


def _storage(endpoint: str | None, *, region: str = "us-east-1", prefix: str = "") -> LogStorage:
    return LogStorage(
        LogStorageConfig(
            bucket="run-logs.1",
            endpoint_url=endpoint,
            region=region,
            prefix=prefix,
            access_key_id=KEY_ID,
            secret_access_key=Secret(CANARY),
        )
    )


def _boto3_url(storage: LogStorage, key: str, *, expires: int = 900) -> tuple[str, datetime]:
    url = storage._client.generate_presigned_url(
        "put_object",
        Params={"Bucket": storage.config.bucket, "Key": key},
        ExpiresIn=expires,
        HttpMethod="PUT",
    )
    stamp = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["X-Amz-Date"]
    return url, datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("endpoint", "region", "prefix"),
    [
        ("http://127.0.0.1:8333", "us-east-1", ""),
        ("https://s3.example.test", "eu-west-3", "logs/a_b.c/"),
        ("http://localhost:80", "us-east-1", ""),
        ("https://objects.example.test:443/", "ap-south-1", "x/"),
        ("https://minio.example.test:9000", "us-west-2", ""),
        ("http://[::1]:8333", "us-east-1", ""),
    ],
)
def test_the_urls_are_boto3_s(endpoint: str, region: str, prefix: str) -> None:
    storage = _storage(endpoint, region=region, prefix=prefix)
    presigner = QueryPresigner(
        endpoint_url=endpoint, region=region, access_key_id=KEY_ID, secret_access_key=Secret(CANARY)
    )
    key = chunk_key(prefix, "run-1_x", 3)
    expected, at = _boto3_url(storage, key, expires=900)
    got = presigner.url(method="PUT", bucket="run-logs.1", key=key, expires_in=900, now=at)
    assert got == expected
    assert CANARY not in got
    assert CANARY not in repr(presigner)


_RUN_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(run_id=_RUN_IDS, chunk=st.integers(0, 999_999), expires=st.integers(1, 7 * 86_400))
def test_any_chunk_url_is_boto3_s(run_id: str, chunk: int, expires: int) -> None:
    storage = _storage("http://127.0.0.1:8333")
    key = chunk_key("", run_id, chunk)
    expected, at = _boto3_url(storage, key, expires=expires)
    presigner = QueryPresigner(
        endpoint_url="http://127.0.0.1:8333",
        region="us-east-1",
        access_key_id=KEY_ID,
        secret_access_key=Secret(CANARY),
    )
    assert presigner.url(
        method="PUT", bucket="run-logs.1", key=key, expires_in=expires, now=at
    ) == (expected)


def test_log_storage_presigns_directly_for_a_plain_endpoint_and_keys() -> None:
    storage = _storage("http://127.0.0.1:8333")
    assert storage._presigner is not None
    url = storage.presign_put("run-1", 0)
    parts = urllib.parse.urlsplit(url)
    assert parts.path == "/run-logs.1/runs/run-1/chunk-000000"
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert query["X-Amz-Expires"] == "900"
    assert query["X-Amz-Credential"].startswith(KEY_ID + "/")
    assert CANARY not in url


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:8333/base"])
def test_anything_else_goes_through_boto3(endpoint: str | None) -> None:
    storage = _storage(endpoint)
    assert storage._presigner is None
    assert "X-Amz-Signature=" in storage.presign_put("run-1", 0)


@pytest.mark.parametrize(
    "endpoint",
    ["http://h:1/base", "http://h:1/?x=1", "http://h:1/#f", "ftp://h", "http://u:p@h:1", "h:1"],
)
def test_the_presigner_takes_only_a_plain_endpoint(endpoint: str) -> None:
    with pytest.raises(ValueError, match="plain"):
        QueryPresigner(
            endpoint_url=endpoint,
            region="us-east-1",
            access_key_id=KEY_ID,
            secret_access_key=Secret(CANARY),
        )


def test_without_static_keys_boto3_signs() -> None:
    storage = LogStorage(LogStorageConfig(bucket="run-logs.1", endpoint_url="http://127.0.0.1:1"))
    assert storage._presigner is None
