"""``audit verify --witness s3://BUCKET/PREFIX``: read the witness records the control plane
copied to object storage (``<prefix>audit-witness/<key id>/<seq, 20 digits>.json``).

Only the log's own key id is read, newest first, at most :data:`MAX_S3_WITNESSES` objects: the
hash chain makes the newest witness pin every record before it, so older ones add little.
Credentials and endpoint come from boto3's usual chain (``AWS_*``, ``--endpoint-url``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from botocore.exceptions import BotoCoreError, ClientError

from hardened_launcher.audit.s3export import parse_s3_url
from hardened_launcher.audit.witness import (
    MAX_WITNESS_BYTES,
    MAX_WITNESS_FILES,
    WitnessRecord,
    parse_witness_lines,
)
from hardened_launcher.errors import InfrastructureError, InputFileError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MAX_S3_WITNESSES: Final = 64
_NAME: Final = re.compile(r"(?:.*/)?([0-9a-f]{64})/([0-9]{20})\.json")


def load_witness_s3(
    url: str, *, key_id: str, client: S3Client | None = None, endpoint_url: str | None = None
) -> list[WitnessRecord]:
    """The newest witness records of the log with ``key_id`` under ``url``."""
    bucket, prefix = parse_s3_url(url)
    if client is None:
        import boto3  # noqa: PLC0415 - only S3 witnesses need boto3 loaded

        client = boto3.client("s3", endpoint_url=endpoint_url)
    keys: list[tuple[int, str]] = []
    try:
        listed = 0
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            for item in page.get("Contents", []):
                listed += 1
                if listed > MAX_WITNESS_FILES * 10:
                    raise InputFileError(
                        f"{url} holds more than {MAX_WITNESS_FILES * 10} objects",
                        hint="point --witness at the audit-witness/<key id>/ prefix",
                        reason="audit_witness_missing",
                    )
                match = _NAME.fullmatch(item["Key"])
                if match and match.group(1) == key_id and item.get("Size", 0) <= MAX_WITNESS_BYTES:
                    keys.append((int(match.group(2)), item["Key"]))
        keys.sort()
        records: list[WitnessRecord] = []
        for _, key in keys[-MAX_S3_WITNESSES:]:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_WITNESS_BYTES + 2)
            records.extend(parse_witness_lines(body, source=f"s3://{bucket}/{key}"))
    except (ClientError, BotoCoreError) as exc:
        raise InfrastructureError(
            f"cannot read the witness records under {url} ({type(exc).__name__})",
            hint="check credentials, the bucket and the endpoint (--endpoint-url)",
            reason="audit_witness_unavailable",
            detail=str(exc),
        ) from None
    if not records:
        raise InputFileError(
            f"{url} holds no witness records of audit key {key_id[:16]}…",
            hint="witnesses are under <HL_CP_S3_PREFIX>audit-witness/<key id>/",
            reason="audit_witness_missing",
        )
    return records
