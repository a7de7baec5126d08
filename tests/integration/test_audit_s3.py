"""Audit export to a real S3 API (SeaweedFS, which checks request signatures), read back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hardened_launcher.audit.export import Selection, export_to_file
from hardened_launcher.audit.ocsf import validate_ocsf_event
from hardened_launcher.audit.s3export import export_to_s3
from hardened_launcher.errors import InfrastructureError
from tests.integration.s3_server import S3Server, s3_server  # noqa: F401 - the fixture
from tests.unit.audit_support import KEY, write_log

pytestmark = pytest.mark.integration
PUB = KEY.public_key()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "audit"
    write_log(d, 30, segment_bytes=3000, checkpoint_records=5)
    return d


def _objects(server: S3Server, bucket: str, prefix: str) -> dict[str, bytes]:
    client = server.client()
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {
        o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listing.get("Contents", [])
    }


def test_export_to_s3_reads_back_identical_and_resumes(
    s3_server: S3Server,  # noqa: F811
    log_dir: Path,
    tmp_path: Path,
) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="audit-export")
    url = "s3://audit-export/pool-1/ocsf"
    first = export_to_s3(log_dir, PUB, fmt="ocsf", selection=Selection(), url=url, client=client)
    assert first.objects_written > 3
    stored = _objects(s3_server, "audit-export", "pool-1/ocsf/")
    data_keys = sorted(k for k in stored if k.endswith(".ocsf.jsonl"))
    assert len(data_keys) == len(first.segments)
    # Same bytes as a local export of the same range, segment by segment.
    local = tmp_path / "all.ocsf.jsonl"
    export_to_file(log_dir, PUB, fmt="ocsf", selection=Selection(), path=local)
    assert b"".join(stored[k] for k in data_keys) == local.read_bytes()
    for line in local.read_bytes().splitlines():
        assert validate_ocsf_event(json.loads(line)) == []
    # Each segment's signed checkpoint sits alongside.
    for key in data_keys:
        checkpoint = json.loads(stored[key.replace(".ocsf.jsonl", ".checkpoint.json")])
        assert checkpoint["type"] == "audit.checkpoint"
        assert len(checkpoint["fields"]["signature"]) == 128
    manifest = json.loads(stored["pool-1/ocsf/manifest-ocsf.json"])
    for key, digest in manifest["objects"].items():
        assert hashlib.sha256(stored[key]).hexdigest() == digest
    # Interrupted half-way: delete half of the objects, export again.
    for key in data_keys[::2]:
        client.delete_object(Bucket="audit-export", Key=key)
    second = export_to_s3(log_dir, PUB, fmt="ocsf", selection=Selection(), url=url, client=client)
    assert second.objects_written == len(data_keys[::2])
    assert second.objects_unchanged > 0
    assert _objects(s3_server, "audit-export", "pool-1/ocsf/") == stored


def test_export_with_bad_credentials_is_an_infrastructure_error(
    s3_server: S3Server,  # noqa: F811
    log_dir: Path,
) -> None:
    s3_server.client().create_bucket(Bucket="audit-denied")
    forged = S3Server(
        endpoint_url=s3_server.endpoint_url,
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
    )
    with pytest.raises(InfrastructureError) as info:
        export_to_s3(
            log_dir,
            PUB,
            fmt="jsonl",
            selection=Selection(),
            url="s3://audit-denied/x",
            client=forged.client(),
        )
    assert info.value.reason == "audit_export_failed"
    assert "not-the-secret" not in info.value.message


def test_cli_export_to_s3(
    s3_server: S3Server,  # noqa: F811
    log_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    from hardened_launcher.cli import main  # noqa: PLC0415

    s3_server.client().create_bucket(Bucket="audit-cli")
    for name, value in s3_server.environ().items():
        monkeypatch.setenv(name, value)
    pub = tmp_path / "k.pub"
    pub.write_bytes(
        PUB.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    args = ["audit", "export", str(log_dir), "--public-key", str(pub), "--format", "cef"]
    assert main([*args, "--out", "s3://audit-cli/cef", "--run", "run-1"]) == 0
    stored = _objects(s3_server, "audit-cli", "cef/")
    lines = b"".join(v for k, v in sorted(stored.items()) if k.endswith(".cef")).splitlines()
    assert lines
    assert all(b"cs1=run-1" in line for line in lines)
