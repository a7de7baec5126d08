"""Run logs in object storage: presigned PUT URLs per chunk, and reading chunks back.

A run's log is a sequence of objects ``<prefix>runs/<run_id>/chunk-<n:06d>`` (n from 0). The
control plane hands the launcher one presigned PUT URL per chunk (a batch with the assignment,
more on ``log_urls_request``); the launcher never holds storage credentials. URLs expire after
``url_expiry_seconds`` (short by default) and name exactly one key, so a leaked URL can write
one chunk of one run for a few minutes and nothing else.

Configuration comes from ``HL_CP_*`` variables (:meth:`LogStorageConfig.from_environ`); see
docs/controlplane.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from hardened_launcher.ascii_text import is_digits, trim
from hardened_launcher.controlplane.errors import (
    ControlPlaneConfigurationError,
    ObjectStorageError,
)
from hardened_launcher.controlplane.presign import QueryPresigner
from hardened_launcher.secrets import Secret
from hardened_launcher.transport.messages import MAX_CHUNK, LogUrl

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_URL_EXPIRY_SECONDS: Final = 900
MAX_URL_EXPIRY_SECONDS: Final = 7 * 24 * 60 * 60  # SigV4's own ceiling
DEFAULT_URLS_PER_BATCH: Final = 16
MAX_URLS_PER_BATCH: Final = 1024
#: Largest chunk object ``run logs`` reads back, in bytes.
MAX_CHUNK_BYTES: Final = 16 * 1024 * 1024

_BUCKET_RE: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_RE: Final = re.compile(r"(?:[A-Za-z0-9_.-]+/)*")
_CHUNK_RE: Final = re.compile(r"chunk-([0-9]{6,10})")

ENV_ENDPOINT: Final = "HL_CP_S3_ENDPOINT_URL"
ENV_REGION: Final = "HL_CP_S3_REGION"
ENV_BUCKET: Final = "HL_CP_S3_BUCKET"
ENV_PREFIX: Final = "HL_CP_S3_PREFIX"
ENV_ACCESS_KEY_ID: Final = "HL_CP_S3_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY: Final = "HL_CP_S3_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name
ENV_URL_EXPIRY: Final = "HL_CP_LOG_URL_EXPIRY_SECONDS"
ENV_URLS_PER_BATCH: Final = "HL_CP_LOG_URLS_PER_BATCH"


def _config_error(message: str, variable: str) -> ControlPlaneConfigurationError:
    return ControlPlaneConfigurationError(
        message, hint=f"Set {variable} (docs/controlplane.md)", reason="log_storage_invalid"
    )


def _int_setting(environ: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = trim(environ.get(name, ""))
    if not raw:
        return default
    if not is_digits(raw) or len(raw) > len(str(maximum)) or not 1 <= int(raw) <= maximum:
        raise _config_error(f"{name} must be a whole number from 1 to {maximum}", name)
    return int(raw)


@dataclass(frozen=True, kw_only=True)
class LogStorageConfig:
    """Where run logs go and how long their upload URLs live."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    prefix: str = ""
    access_key_id: str | None = None
    secret_access_key: Secret | None = field(default=None, repr=False)
    url_expiry_seconds: int = DEFAULT_URL_EXPIRY_SECONDS
    urls_per_batch: int = DEFAULT_URLS_PER_BATCH

    def __post_init__(self) -> None:
        if not _BUCKET_RE.fullmatch(self.bucket):
            raise _config_error("the log bucket name is not a valid S3 bucket name", ENV_BUCKET)
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise _config_error(
                "the log key prefix must be empty or end in '/' (letters, digits, _ . -)",
                ENV_PREFIX,
            )
        if not 1 <= self.url_expiry_seconds <= MAX_URL_EXPIRY_SECONDS:
            raise _config_error("the URL expiry is out of range", ENV_URL_EXPIRY)
        if not 1 <= self.urls_per_batch <= MAX_URLS_PER_BATCH:
            raise _config_error("the URL batch size is out of range", ENV_URLS_PER_BATCH)
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise _config_error(
                "give both the access key id and the secret access key, or neither",
                ENV_ACCESS_KEY_ID,
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LogStorageConfig | None:
        """The config from ``HL_CP_*`` variables, or None when ``HL_CP_S3_BUCKET`` is unset.

        Without credentials here boto3's own chain (AWS_* variables, profiles, instance roles)
        applies.
        """
        bucket = trim(environ.get(ENV_BUCKET, ""))
        if not bucket:
            return None
        secret = environ.get(ENV_SECRET_ACCESS_KEY)
        return cls(
            bucket=bucket,
            endpoint_url=trim(environ.get(ENV_ENDPOINT, "")) or None,
            region=trim(environ.get(ENV_REGION, "")) or "us-east-1",
            prefix=trim(environ.get(ENV_PREFIX, "")),
            access_key_id=trim(environ.get(ENV_ACCESS_KEY_ID, "")) or None,
            secret_access_key=Secret(secret) if secret else None,
            url_expiry_seconds=_int_setting(
                environ, ENV_URL_EXPIRY, DEFAULT_URL_EXPIRY_SECONDS, MAX_URL_EXPIRY_SECONDS
            ),
            urls_per_batch=_int_setting(
                environ, ENV_URLS_PER_BATCH, DEFAULT_URLS_PER_BATCH, MAX_URLS_PER_BATCH
            ),
        )


def chunk_key(prefix: str, run_id: str, chunk: int) -> str:
    """The object key of one chunk: ``<prefix>runs/<run_id>/chunk-<n:06d>``."""
    if not 0 <= chunk <= MAX_CHUNK:
        raise ValueError("chunk number out of range")
    return f"{prefix}runs/{run_id}/chunk-{chunk:06d}"


def plan_key(prefix: str, run_id: str) -> str:
    """The object key of a planning run's sealed plan: ``<prefix>runs/<run_id>/plan.sealed``."""
    return f"{prefix}runs/{run_id}/plan.sealed"


#: How long a plan URL is valid: the sealed plan's own lifetime (a planning run may take long,
#: and the plan must be readable until it is confirmed). A leaked URL can only replace or read
#: sealed bytes, which the applying run checks against the digest in its signed ticket.
PLAN_URL_EXPIRY_SECONDS: Final = 24 * 3600


def witness_key(prefix: str, key_id: str, seq: int) -> str:
    """The object key of one audit witness record (docs/audit.md, "Outside witness"):
    ``<prefix>audit-witness/<key id>/<seq, 20 digits>.json``."""
    return f"{prefix}audit-witness/{key_id}/{seq:020d}.json"


def _storage_error(action: str, exc: Exception) -> ObjectStorageError:
    response = getattr(exc, "response", None)  # botocore's ClientError carries the S3 answer
    code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    return ObjectStorageError(
        f"object storage refused or failed to {action}" + (f" ({code})" if code else ""),
        hint="Check the HL_CP_S3_* settings and that the bucket exists and is reachable",
        detail=type(exc).__name__,
    )


class LogStorage:
    """Presigns chunk uploads and reads chunks back. Construct from a :class:`LogStorageConfig`."""

    def __init__(self, config: LogStorageConfig, *, client: S3Client | None = None) -> None:
        # Imported here: commands that only parse settings (every controlplane command does)
        # must not pay for boto3.
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        self.config = config
        client_given = client is not None
        if client is None:
            secret = (
                config.secret_access_key.reveal().decode("utf-8")
                if config.secret_access_key is not None
                else None
            )
            client = boto3.client(
                "s3",
                endpoint_url=config.endpoint_url,
                region_name=config.region,
                aws_access_key_id=config.access_key_id,
                aws_secret_access_key=secret,
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        self._client = client
        #: The same URLs without boto3's per-call pipeline (presign.py), when the settings name
        #: a plain endpoint and static keys; otherwise boto3 presigns.
        self._presigner: QueryPresigner | None = None
        if not client_given and config.endpoint_url and config.secret_access_key:
            try:
                self._presigner = QueryPresigner(
                    endpoint_url=config.endpoint_url,
                    region=config.region,
                    access_key_id=config.access_key_id or "",
                    secret_access_key=config.secret_access_key,
                )
            except ValueError:
                self._presigner = None

    def presign_put(self, run_id: str, chunk: int) -> str:
        """A presigned PUT URL for one chunk, valid for ``url_expiry_seconds``."""
        if self._presigner is not None:
            return self._presigner.url(
                method="PUT",
                bucket=self.config.bucket,
                key=chunk_key(self.config.prefix, run_id, chunk),
                expires_in=self.config.url_expiry_seconds,
            )
        try:
            return self._client.generate_presigned_url(
                "put_object",
                Params={
                    "Bucket": self.config.bucket,
                    "Key": chunk_key(self.config.prefix, run_id, chunk),
                },
                ExpiresIn=self.config.url_expiry_seconds,
                HttpMethod="PUT",
            )
        except self._errors as exc:
            raise _storage_error("presign a log upload", exc) from exc

    def plan_url(self, run_id: str, *, method: Literal["PUT", "GET"]) -> str:
        """A presigned URL to store (PUT, the planning run) or fetch (GET, its applying run)
        the sealed plan of planning run ``run_id``."""
        try:
            return self._client.generate_presigned_url(
                "put_object" if method == "PUT" else "get_object",
                Params={"Bucket": self.config.bucket, "Key": plan_key(self.config.prefix, run_id)},
                ExpiresIn=PLAN_URL_EXPIRY_SECONDS,
                HttpMethod=method,
            )
        except self._errors as exc:
            raise _storage_error("presign a plan URL", exc) from exc

    def urls(self, run_id: str, *, from_chunk: int, count: int | None = None) -> list[LogUrl]:
        """URLs for ``count`` (default: the batch size) chunks from ``from_chunk`` on."""
        wanted = self.config.urls_per_batch if count is None else count
        last = min(from_chunk + wanted, MAX_CHUNK + 1)
        return [LogUrl(chunk=n, url=self.presign_put(run_id, n)) for n in range(from_chunk, last)]

    def put_witness(self, key_id: str, seq: int, record: bytes) -> None:
        """Store one audit witness record (idempotent: the same bytes under the same key)."""
        try:
            self._client.put_object(
                Bucket=self.config.bucket,
                Key=witness_key(self.config.prefix, key_id, seq),
                Body=record,
                ContentType="application/json",
            )
        except self._errors as exc:
            raise _storage_error("store an audit witness", exc) from exc

    def list_chunks(self, run_id: str) -> list[int]:
        """Chunk numbers present for a run, in order."""
        prefix = f"{self.config.prefix}runs/{run_id}/"
        chunks: list[int] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.config.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    match = _CHUNK_RE.fullmatch(item.get("Key", "")[len(prefix) :])
                    if match is not None:
                        chunks.append(int(match.group(1)))
        except self._errors as exc:
            raise _storage_error("list log chunks", exc) from exc
        return sorted(set(chunks))

    def read_chunk(self, run_id: str, chunk: int) -> bytes:
        key = chunk_key(self.config.prefix, run_id, chunk)
        try:
            response = self._client.get_object(Bucket=self.config.bucket, Key=key)
            if response.get("ContentLength", 0) > MAX_CHUNK_BYTES:
                raise ObjectStorageError(
                    f"log chunk {chunk} of run {run_id} is larger than {MAX_CHUNK_BYTES} bytes",
                    hint="Inspect the object directly; it was not written by a launcher",
                )
            body = response["Body"]
            try:
                return body.read(MAX_CHUNK_BYTES + 1)[:MAX_CHUNK_BYTES]
            finally:
                body.close()
        except self._errors as exc:
            raise _storage_error("read a log chunk", exc) from exc

    def read_from(self, run_id: str, from_chunk: int) -> Iterator[tuple[int, bytes]]:
        """Consecutive chunks from ``from_chunk`` on, stopping before the first missing one.

        Stopping at a gap keeps ``run logs --follow`` in order: a chunk uploaded late (a
        launcher that spooled it during an outage) is printed when it arrives, not skipped.
        """
        present = set(self.list_chunks(run_id))
        chunk = from_chunk
        while chunk in present:
            yield chunk, self.read_chunk(run_id, chunk)
            chunk += 1
