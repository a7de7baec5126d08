"""``audit export``: the verified records of a range, as JSON lines, OCSF or CEF.

Exports are deterministic: the bytes depend only on the log and the selection (``--since``,
``--until``, ``--run``), so the same range exported twice is byte-identical, and an interrupted
export run again gives the same result. The log is verified first (an open tail is accepted:
the launcher may be running); nothing is written when verification fails. A file export is
written to a temporary file in the same directory and moved into place with ``os.replace``.

Formats: ``jsonl`` is the records' own canonical lines (checkpoints included, so the export can
be checked record by record); ``ocsf`` is one OCSF event per line (:mod:`.ocsf`); ``cef`` one CEF
line per record (:mod:`.cef`). OCSF and CEF leave checkpoints out.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Final, Literal, get_args

from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit.cef import to_cef
from hardened_launcher.audit.ocsf import to_ocsf
from hardened_launcher.audit.reader import AuditRecord
from hardened_launcher.audit.verify import VerifyReport, verify_log
from hardened_launcher.bounded_input import describe_path
from hardened_launcher.errors import InfrastructureError, UsageError
from hardened_launcher.private_files import non_regular_kind

ExportFormat = Literal["jsonl", "ocsf", "cef"]
EXPORT_FORMATS: Final[tuple[ExportFormat, ...]] = get_args(ExportFormat)
FILE_EXTENSIONS: Final[dict[ExportFormat, str]] = {
    "jsonl": "jsonl",
    "ocsf": "ocsf.jsonl",
    "cef": "cef",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which records to export: ``since <= time < until`` and, if given, one run's records."""

    since: datetime | None = None
    until: datetime | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        for value in (self.since, self.until):
            if value is not None and value.tzinfo is None:
                raise ValueError("since/until must be timezone-aware")

    def matches(self, record: AuditRecord) -> bool:
        if self.run_id is not None and record.run_id != self.run_id:
            return False
        if self.since is None and self.until is None:
            return True
        when = record.time
        if self.since is not None and when < self.since:
            return False
        return self.until is None or when < self.until


def render(record: AuditRecord, fmt: ExportFormat) -> bytes | None:
    """One exported line (with its newline), or ``None`` if ``fmt`` leaves this record out."""
    if fmt == "jsonl":
        return record.raw + b"\n"
    if record.is_checkpoint:
        return None
    if fmt == "ocsf":
        return (
            json.dumps(to_ocsf(record), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            + "\n"
        ).encode("ascii")
    return (to_cef(record) + "\n").encode("utf-8")


@dataclass(slots=True)
class ExportSummary:
    """What an export wrote (printed by the CLI, stored as the S3 export's manifest)."""

    destination: str
    format: ExportFormat
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    segments: list[str] = field(default_factory=list)
    objects_written: int = 0
    objects_unchanged: int = 0
    sealed: bool = False

    def add(self, record: AuditRecord) -> None:
        self.records += 1
        if self.first_seq is None:
            self.first_seq = record.seq
        self.last_seq = record.seq
        if not self.segments or self.segments[-1] != record.segment:
            self.segments.append(record.segment)

    def line(self) -> str:
        where = (
            f" ({self.objects_written} objects written, {self.objects_unchanged} already there)"
            if self.objects_written or self.objects_unchanged
            else ""
        )
        span = f"seq {self.first_seq}..{self.last_seq}" if self.first_seq is not None else "nothing"
        tail = "sealed" if self.sealed else "open tail (the launcher may be running)"
        return (
            f"exported {self.records} records ({span}) from {len(self.segments)} segment(s) "
            f"as {self.format} to {self.destination}{where}; log {tail}"
        )


def iter_selected(
    directory: Path,
    public_key: ed25519.Ed25519PublicKey,
    selection: Selection,
) -> tuple[list[AuditRecord], VerifyReport]:
    """Verify the whole log, then return the selected records (in log order)."""
    chosen: list[AuditRecord] = []

    def keep(record: AuditRecord) -> None:
        if selection.matches(record):
            chosen.append(record)

    report = verify_log(directory, public_key, allow_open_tail=True, visit=keep)
    return chosen, report


def export_to_stream(
    directory: Path,
    public_key: ed25519.Ed25519PublicKey,
    *,
    fmt: ExportFormat,
    selection: Selection,
    out: IO[bytes],
    destination: str = "-",
) -> ExportSummary:
    """Verify, then write the selection to ``out`` (nothing is written if verification fails)."""
    records, report = iter_selected(directory, public_key, selection)
    summary = ExportSummary(destination=destination, format=fmt, sealed=report.sealed)
    for record in records:
        line = render(record, fmt)
        if line is not None:
            out.write(line)
            summary.add(record)
    out.flush()
    return summary


def export_to_file(
    directory: Path,
    public_key: ed25519.Ed25519PublicKey,
    *,
    fmt: ExportFormat,
    selection: Selection,
    path: Path,
    opener: Callable[[Path], IO[bytes]] | None = None,
) -> ExportSummary:
    """Export to ``path`` atomically (temporary file in the same directory, then replace).

    Only a regular file is ever replaced: a device, FIFO, directory, socket or a symlink to one
    at ``path`` is refused before anything is written.
    """
    try:
        kind = non_regular_kind(path)
    except OSError as exc:
        kind = f"unusable ({exc.strerror or 'cannot inspect'})"
    if kind is not None:
        raise UsageError(
            f"cannot write the export to {describe_path(path)}: it is {kind}",
            hint="pass --out a path for a new or regular file, or - for stdout",
            reason="audit_export_target_invalid",
        )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    try:
        with (opener or (lambda p: p.open("xb")))(tmp) as handle:
            summary = export_to_stream(
                directory,
                public_key,
                fmt=fmt,
                selection=selection,
                out=handle,
                destination=str(path),
            )
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise InfrastructureError(
            f"cannot write the export to {path}: {exc.strerror}",
            hint="check the destination directory and free space",
            reason="audit_export_failed",
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return summary
