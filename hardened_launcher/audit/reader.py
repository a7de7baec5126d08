"""Reading the audit log: segment listing and strict parsing of one record line.

Parsing is strict because the bytes may have been tampered with: a line must be canonical (its
re-encoding is byte-identical), carry exactly the known members with the right types, and its
``hash`` must match its content. Chain, sequence and signature checks are in
:mod:`hardened_launcher.audit.verify`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from hardened_launcher.audit import canonical as c
from hardened_launcher.bounded_input import (
    DocumentTooDeepError,
    describe_path,
    load_json,
    read_bounded,
)
from hardened_launcher.errors import InputFileError, UntrustedInputError

MAX_LINE_BYTES: Final = 1024 * 1024
# Records are flat; their ``fields`` hold a few levels at most.
MAX_RECORD_DEPTH: Final = 32
# The writer rotates at 64 MiB (``DEFAULT_SEGMENT_BYTES``); one more record and the closing
# checkpoint can follow. Anything larger was not written by the launcher.
MAX_SEGMENT_BYTES: Final = 64 * 1024 * 1024 + 4 * MAX_LINE_BYTES
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_REQUIRED: Final = {
    "v": int,
    "seq": int,
    "prev": str,
    "hash": str,
    "time": str,
    "type": str,
    "outcome": str,
}
_OPTIONAL: Final = {"gate": str, "run_id": str, "reason": str, "fields": dict}


class AuditFormatError(UntrustedInputError):
    """A record or segment of the audit log is damaged, or the log was tampered with.

    ``segment`` and ``line`` (0-based) locate the first bad place; ``line`` may equal the
    segment's line count when a record is missing at its end.
    """

    default_reason = "audit_record_invalid"

    def __init__(
        self, message: str, *, segment: str, line: int, reason: str, hint: str = ""
    ) -> None:
        super().__init__(
            f"{segment} line {line + 1}: {message}",
            hint=hint or "the audit log was modified or damaged at this place",
            reason=reason,
        )
        self.segment = segment
        self.line = line
        self.short = message


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One parsed, hash-checked record and where it was read from."""

    data: Mapping[str, object]
    raw: bytes
    segment: str
    line: int

    @property
    def seq(self) -> int:
        value = self.data["seq"]
        assert isinstance(value, int)  # noqa: S101 - parse_record checked the type
        return value

    @property
    def hash(self) -> str:
        return str(self.data["hash"])

    @property
    def prev(self) -> str:
        return str(self.data["prev"])

    @property
    def type(self) -> str:
        return str(self.data["type"])

    @property
    def outcome(self) -> str:
        return str(self.data["outcome"])

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(str(self.data["time"]))

    @property
    def run_id(self) -> str | None:
        value = self.data.get("run_id")
        return value if isinstance(value, str) else None

    @property
    def gate(self) -> str | None:
        value = self.data.get("gate")
        return value if isinstance(value, str) else None

    @property
    def reason(self) -> str | None:
        value = self.data.get("reason")
        return value if isinstance(value, str) else None

    @property
    def fields(self) -> Mapping[str, object]:
        value = self.data.get("fields")
        return value if isinstance(value, dict) else {}

    @property
    def is_checkpoint(self) -> bool:
        return self.type == c.CHECKPOINT_TYPE

    def str_field(self, name: str) -> str:
        value = self.fields.get(name)
        return value if isinstance(value, str) else ""


def split_lines(data: bytes) -> list[bytes]:
    """Complete lines of ``data`` without their newlines (a trailing partial line is dropped)."""
    if not data:
        return []
    parts = data.split(b"\n")
    return parts[:-1]


def parse_record(raw: bytes, *, segment: str, line: int) -> AuditRecord:
    """Parse one line (without its newline) strictly; raise :class:`AuditFormatError`."""

    def bad(message: str, reason: str = "audit_record_invalid") -> AuditFormatError:
        return AuditFormatError(message, segment=segment, line=line, reason=reason)

    if len(raw) > MAX_LINE_BYTES:
        raise bad(f"record longer than {MAX_LINE_BYTES} bytes")
    try:
        data = load_json(raw.decode("ascii"), max_depth=MAX_RECORD_DEPTH)
    except DocumentTooDeepError as exc:
        raise bad(
            f"the record nests deeper than {MAX_RECORD_DEPTH} levels at column {exc.column} "
            "(damaged or edited)",
            "audit_record_unparseable",
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise bad("not a JSON record (damaged or edited)", "audit_record_unparseable") from None
    if not isinstance(data, dict):
        raise bad("not a JSON object", "audit_record_unparseable")
    try:
        canonical = c.canonical_json(data)
    except ValueError:
        canonical = b""
    if canonical != raw:
        raise bad("not in canonical form (edited by hand?)", "audit_record_modified")
    for name, kind in _REQUIRED.items():
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"member {name!r} is missing or has the wrong type")
    for name, kind in _OPTIONAL.items():
        if name in data and not isinstance(data[name], kind):
            raise bad(f"member {name!r} has the wrong type")
    unknown = set(data) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise bad(f"unknown members {sorted(unknown)}")
    if data["v"] != c.FORMAT_VERSION:
        raise bad(f"unsupported record version {data['v']}", "audit_version_unsupported")
    if not _HEX64.fullmatch(data["hash"]) or not _HEX64.fullmatch(data["prev"]):
        raise bad("hash or prev is not 64 lower-case hex digits")
    if c.record_hash(data) != data["hash"]:
        raise bad(
            "the record's content does not match its hash (modified)", "audit_record_modified"
        )
    try:
        parsed_time = datetime.fromisoformat(data["time"])
    except ValueError:
        raise bad("time is not an ISO 8601 timestamp") from None
    if parsed_time.tzinfo is None:
        raise bad("time has no time zone")
    return AuditRecord(data=data, raw=raw, segment=segment, line=line)


def list_segments(directory: Path) -> list[tuple[int, str]]:
    """``(first seq, file name)`` of each segment in ``directory``, in log order.

    A directory that does not exist or cannot be listed raises :class:`InputFileError`.
    """
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        raise InputFileError(
            f"cannot read the audit directory {describe_path(directory)}: "
            f"{exc.strerror or 'cannot list'}",
            hint="pass the audit directory (HL_AUDIT_DIR) as PATH; a launcher that has never "
            "started has not created it yet",
            reason="audit_dir_unreadable",
        ) from None
    found = []
    for entry in entries:
        first = c.segment_first_seq(entry.name)
        if first is not None and entry.is_file(follow_symlinks=False):
            found.append((first, entry.name))
    return sorted(found)


def _segment_error(message: str, *, hint: str = "", reason: str) -> UntrustedInputError:
    return UntrustedInputError(message, hint=hint, reason=reason)


def read_segment(directory: Path, name: str) -> bytes:
    """One segment's bytes; a segment larger than any the launcher writes is refused unread."""
    return bytes(
        read_bounded(
            directory / name,
            max_bytes=MAX_SEGMENT_BYTES,
            what="audit segment",
            unreadable=_segment_error,
            too_large=_segment_error,
            reason="audit_dir_unreadable",
        )
    )
