"""``audit export --out s3://BUCKET/PREFIX``: one object per segment, its checkpoint alongside.

Objects, for each segment that has selected records (``<stem>`` is the segment name without
``.jsonl``)::

    PREFIX/<stem>.<jsonl|ocsf.jsonl|cef>      the segment's selected records, rendered
    PREFIX/<stem>.checkpoint.json             the segment's last checkpoint record (signed)
    PREFIX/manifest-<format>.json             the export summary and each object's SHA-256

Every object carries its SHA-256 in the ``sha256`` user metadata. The export is resumable: an
object that is already there with the same SHA-256 is not uploaded again, and since the bytes are
deterministic an interrupted export run again ends with the same objects. With ``retain_days``
each new object gets an S3 Object Lock retention (``GOVERNANCE`` or ``COMPLIANCE``); the bucket
must have Object Lock enabled.

Credentials and endpoint come from boto3's usual chain (``AWS_*`` variables, profiles, instance
roles; ``AWS_ENDPOINT_URL`` or ``endpoint_url`` for S3-compatible stores). Every botocore error
is translated to :class:`InfrastructureError` (``audit_export_failed``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit.export import (
    FILE_EXTENSIONS,
    ExportFormat,
    ExportSummary,
    Selection,
    render,
)
from hardened_launcher.audit.reader import AuditRecord
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.errors import InfrastructureError, UsageError
from hardened_launcher.urls import split_url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]
_BUCKET_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → ``(bucket, prefix)`` (prefix without slashes at the ends)."""
    parts = split_url(url)
    bucket = parts.netloc if parts is not None else ""
    if (
        parts is None
        or parts.scheme != "s3"
        or not 3 <= len(bucket) <= 63
        or not set(bucket) <= _BUCKET_CHARS
    ):
        raise UsageError(
            f"{url!r} is not an s3://BUCKET/PREFIX URL",
            hint="bucket names are 3-63 characters of a-z, 0-9, '.' and '-'",
            reason="audit_export_destination_invalid",
        )
    if parts.query or parts.fragment or "@" in url:
        raise UsageError(
            "an s3:// URL takes no query, fragment or credentials",
            hint="credentials come from the AWS_* variables or a profile",
            reason="audit_export_destination_invalid",
        )
    return bucket, parts.path.strip("/")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _upload(
    client: S3Client,
    *,
    bucket: str,
    key: str,
    body: bytes,
    content_type: str,
    summary: ExportSummary,
    retain_until: datetime | None,
    lock_mode: LockMode,
) -> str:
    digest = hashlib.sha256(body).hexdigest()
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status != 404:
            raise
    else:
        if head.get("Metadata", {}).get("sha256") == digest and head["ContentLength"] == len(body):
            summary.objects_unchanged += 1
            return digest
    if retain_until is not None:
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            Metadata={"sha256": digest},
            ObjectLockMode=lock_mode,
            ObjectLockRetainUntilDate=retain_until,
        )
    else:
        client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata={"sha256": digest}
        )
    summary.objects_written += 1
    return digest


def export_to_s3(
    directory: Path,
    public_key: ed25519.Ed25519PublicKey,
    *,
    fmt: ExportFormat,
    selection: Selection,
    url: str,
    client: S3Client | None = None,
    endpoint_url: str | None = None,
    retain_days: int | None = None,
    lock_mode: LockMode = "GOVERNANCE",
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ExportSummary:
    """Verify the log, then upload the selection per segment (see the module docstring)."""
    bucket, prefix = parse_s3_url(url)
    if retain_days is not None and retain_days < 1:
        raise UsageError("--retain-days must be at least 1", reason="usage")
    records: list[AuditRecord] = []
    checkpoints: dict[str, bytes] = {}

    def keep(record: AuditRecord) -> None:
        if record.is_checkpoint:
            checkpoints[record.segment] = record.raw
        if selection.matches(record):
            records.append(record)

    report = verify_log(directory, public_key, allow_open_tail=True, visit=keep)
    if client is None:
        import boto3  # noqa: PLC0415 - only S3 exports need boto3 loaded

        client = boto3.client("s3", endpoint_url=endpoint_url)
    summary = ExportSummary(destination=url, format=fmt, sealed=report.sealed)
    by_segment: dict[str, list[AuditRecord]] = {}
    for record in records:
        by_segment.setdefault(record.segment, []).append(record)
    retain_until = clock() + timedelta(days=retain_days) if retain_days is not None else None
    objects: dict[str, str] = {}
    content_type = "application/x-ndjson" if fmt != "cef" else "text/plain"
    try:
        for segment, chosen in by_segment.items():
            lines = [line for r in chosen if (line := render(r, fmt)) is not None]
            if not lines:
                continue
            for record in chosen:
                if render(record, fmt) is not None:
                    summary.add(record)
            stem = segment.removesuffix(".jsonl")
            put = {"bucket": bucket, "summary": summary, "retain_until": retain_until,
                   "lock_mode": lock_mode}  # fmt: skip
            key = _key(prefix, f"{stem}.{FILE_EXTENSIONS[fmt]}")
            objects[key] = _upload(
                client,
                key=key,
                body=b"".join(lines),
                content_type=content_type,
                **put,  # type: ignore[arg-type]
            )
            checkpoint = checkpoints.get(segment)
            if checkpoint is not None:
                key = _key(prefix, f"{stem}.checkpoint.json")
                objects[key] = _upload(
                    client, key=key, body=checkpoint + b"\n", content_type="application/json",
                    **put,  # type: ignore[arg-type]
                )  # fmt: skip
        manifest = {
            "format": fmt,
            "selection": {
                "since": selection.since.isoformat() if selection.since else None,
                "until": selection.until.isoformat() if selection.until else None,
                "run_id": selection.run_id,
            },
            "key_id": report.key_id,
            "records": summary.records,
            "first_seq": summary.first_seq,
            "last_seq": summary.last_seq,
            "segments": summary.segments,
            "objects": objects,
        }
        body = json.dumps(manifest, sort_keys=True, indent=1).encode() + b"\n"
        _upload(
            client,
            bucket=bucket,
            key=_key(prefix, f"manifest-{fmt}.json"),
            body=body,
            content_type="application/json",
            summary=summary,
            retain_until=retain_until,
            lock_mode=lock_mode,
        )
    except (ClientError, BotoCoreError) as exc:
        code = ""
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
        raise InfrastructureError(
            f"the S3 export to {url} failed ({type(exc).__name__}{': ' + code if code else ''})",
            hint="check credentials, the bucket and the endpoint; running the same export "
            "again resumes it",
            reason="audit_export_failed",
            detail=str(exc),
        ) from None
    return summary
