"""``audit verify``: check every hash, the chain, the signatures and sequence continuity.

Verification reads the segments in name order and stops at the first bad place, raising
:class:`~hardened_launcher.audit.reader.AuditFormatError` with the segment, the 0-based line and
a stable reason:

=============================  ==================================================================
reason                         what was found
=============================  ==================================================================
audit_log_empty                no segment at all
audit_record_unparseable       a line is not JSON (a byte was changed, or lines were merged)
audit_record_modified          a line is not canonical, or its content does not match its hash
audit_record_invalid           a member is missing, unknown or of the wrong type
audit_sequence_broken          ``seq`` is not the next number: a record removed, inserted, moved
audit_chain_broken             ``prev`` is not the previous record's hash (a record re-hashed)
audit_checkpoint_invalid       a checkpoint covers the wrong record or chains the wrong signature
audit_signature_invalid        a checkpoint's signature does not verify under the given key
audit_segment_missing          a segment is missing (before, between, or after the others)
audit_segment_truncated        a segment ends mid-record or without its closing checkpoint
audit_tail_open                the log does not end with a ``close`` checkpoint: the records
                               after the last checkpoint are unsigned, so a cut there cannot be
                               excluded (the launcher is running, stopped uncleanly, or the tail
                               was cut); ``allow_open_tail`` accepts this for a live log
=============================  ==================================================================

``allow_open_tail`` (a live or uncleanly stopped log, as ``doctor`` checks it) also accepts a
partial last line in the *last* segment: a write in progress, or one a full disk cut short. It
was never acknowledged to a caller, and the launcher cuts exactly it (and nothing else) when it
next opens or recovers the log; the report counts its bytes in ``partial_tail_bytes``. A partial
line anywhere else is ``audit_segment_truncated``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit import canonical as c
from hardened_launcher.audit.keys import key_id as compute_key_id
from hardened_launcher.audit.reader import (
    AuditFormatError,
    AuditRecord,
    list_segments,
    parse_record,
    read_segment,
    split_lines,
)
from hardened_launcher.bounded_input import describe_path
from hardened_launcher.errors import InputFileError

_SIG_HEX: Final = re.compile(r"[0-9a-f]{128}")


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """What a successful verification established."""

    segments: int
    records: int
    checkpoints: int
    last_seq: int
    last_hash: str
    last_signature: str
    key_id: str
    sealed: bool
    unsigned_tail_records: int
    unclean_stops: int
    #: Bytes of an unacknowledged partial last line (only with ``allow_open_tail``).
    partial_tail_bytes: int = 0


def _check_checkpoint(
    record: AuditRecord, *, key: ed25519.Ed25519PublicKey, key_id: str, last_signature: str
) -> str:
    def bad(message: str, reason: str = "audit_checkpoint_invalid") -> AuditFormatError:
        return AuditFormatError(message, segment=record.segment, line=record.line, reason=reason)

    f = record.fields
    covers_seq = f.get("covers_seq")
    if covers_seq != record.seq - 1 or isinstance(covers_seq, bool):
        raise bad("checkpoint does not cover the record before it")
    if f.get("covers_hash") != record.prev:
        raise bad("checkpoint covers a different hash than the chain's")
    if f.get("prev_signature") != last_signature:
        raise bad("checkpoint does not chain the previous checkpoint's signature")
    if f.get("key_id") != key_id:
        raise bad(
            f"checkpoint was signed by key {str(f.get('key_id'))[:16]}…, not the given key "
            f"{key_id[:16]}…",
            "audit_signature_invalid",
        )
    trigger = f.get("trigger")
    signature = f.get("signature")
    if trigger not in c.ALL_TRIGGERS or not isinstance(trigger, str):
        raise bad("checkpoint has an unknown trigger")
    if not isinstance(signature, str) or not _SIG_HEX.fullmatch(signature):
        raise bad("checkpoint signature is not 128 hex digits", "audit_signature_invalid")
    if set(f) != {"covers_seq", "covers_hash", "prev_signature", "key_id", "trigger", "signature"}:
        raise bad("checkpoint has unexpected fields")
    statement = c.checkpoint_statement(
        covers_seq=record.seq - 1,
        covers_hash=record.prev,
        prev_signature=last_signature,
        key_id=key_id,
        time=str(record.data["time"]),
        trigger=trigger,
    )
    try:
        key.verify(bytes.fromhex(signature), statement)
    except InvalidSignature:
        raise bad("checkpoint signature does not verify", "audit_signature_invalid") from None
    return signature


def verify_log(
    directory: Path,
    public_key: ed25519.Ed25519PublicKey,
    *,
    allow_open_tail: bool = False,
    visit: Callable[[AuditRecord], None] | None = None,
) -> VerifyReport:
    """Verify the whole log in ``directory``; call ``visit`` with each record as it passes.

    Returns a :class:`VerifyReport` or raises :class:`AuditFormatError` at the first bad place.
    ``visit`` may see records before a later failure: use its output only if this returns.
    """
    kid = compute_key_id(public_key)
    segments = list_segments(directory)
    if not segments:
        # Not an alarm: a fresh install has no log until the launcher first starts. (A log
        # that was deleted whole looks the same; nothing here can tell them apart.)
        raise InputFileError(
            f"there is no audit log in {describe_path(directory)} yet (no "
            f"{c.SEGMENT_PREFIX}*{c.SEGMENT_SUFFIX} segments)",
            hint="the launcher writes its first records when it starts; if it has started on "
            "this host, the log was removed",
            reason="audit_log_empty",
        )
    expected_seq = 0
    prev = c.GENESIS_HASH
    last_signature = ""
    records = checkpoints = unsigned = unclean = partial = 0
    last: AuditRecord | None = None
    for index, (first, name) in enumerate(segments):
        if first != expected_seq:
            missing = c.segment_name(expected_seq)
            raise AuditFormatError(
                f"segment {missing} (from seq {expected_seq}) is missing"
                if first > expected_seq
                else f"segment starts at seq {first}, overlapping records up to {expected_seq - 1}",
                segment=name,
                line=0,
                reason="audit_segment_missing" if first > expected_seq else "audit_sequence_broken",
            )
        data = read_segment(directory, name)
        lines = split_lines(data)
        segment_closed = False
        for number, raw in enumerate(lines):
            record = parse_record(raw, segment=name, line=number)
            if segment_closed:
                raise AuditFormatError(
                    "a record follows the segment's closing checkpoint (inserted or moved)",
                    segment=name,
                    line=number,
                    reason="audit_sequence_broken",
                )
            if record.seq != expected_seq:
                raise AuditFormatError(
                    f"expected seq {expected_seq}, found {record.seq}: a record was removed, "
                    "inserted or moved here",
                    segment=name,
                    line=number,
                    reason="audit_sequence_broken",
                )
            if record.prev != prev:
                raise AuditFormatError(
                    "prev does not match the previous record's hash: the chain is broken here",
                    segment=name,
                    line=number,
                    reason="audit_chain_broken",
                )
            if record.is_checkpoint:
                last_signature = _check_checkpoint(
                    record, key=public_key, key_id=kid, last_signature=last_signature
                )
                checkpoints += 1
                unsigned = 0
                segment_closed = record.str_field("trigger") in c.SEGMENT_ENDING_TRIGGERS
            else:
                unsigned += 1
                if record.type == c.LOG_OPENED_TYPE and record.fields.get("previous_stop") == (
                    "unclean"
                ):
                    unclean += 1
            if visit is not None:
                visit(record)
            records += 1
            expected_seq += 1
            prev = record.hash
            last = record
        complete = sum(len(x) + 1 for x in lines)
        if (
            allow_open_tail
            and index == len(segments) - 1
            and len(data) != complete
            and (lines or last is not None)
        ):
            partial = len(data) - complete  # start-up and recovery cut exactly this
            if not lines:  # only a partial line: the log continues from the segment before
                break
        elif len(data) != complete or not lines:
            raise AuditFormatError(
                "segment ends in the middle of a record (truncated)"
                if lines or data
                else "segment is empty (truncated)",
                segment=name,
                line=len(lines),
                reason="audit_segment_truncated",
            )
        assert last is not None  # noqa: S101 - lines is non-empty here
        trigger = last.str_field("trigger") if last.is_checkpoint else ""
        ended = trigger in c.SEGMENT_ENDING_TRIGGERS
        if index < len(segments) - 1 and not ended:
            raise AuditFormatError(
                "segment does not end with its closing checkpoint: records were cut from its end",
                segment=name,
                line=len(lines),
                reason="audit_segment_truncated",
            )
        if index == len(segments) - 1 and trigger != c.TRIGGER_CLOSE and not allow_open_tail:
            if ended:
                raise AuditFormatError(
                    f"the log ends at a segment boundary, but the next segment "
                    f"{c.segment_name(expected_seq)} is missing (deleted, or the launcher "
                    "stopped right after rotating)",
                    segment=name,
                    line=len(lines),
                    reason="audit_segment_missing",
                )
            raise AuditFormatError(
                f"the log is not sealed: {unsigned} record(s) after the last checkpoint are "
                "unsigned, so the tail may have been cut here (or the launcher is running or "
                "stopped uncleanly)",
                segment=name,
                line=len(lines),
                reason="audit_tail_open",
                hint="verify again after the launcher stopped, or pass --allow-open-tail for a "
                "live log",
            )
    assert last is not None  # noqa: S101 - at least one segment with one record
    return VerifyReport(
        segments=len(segments),
        records=records,
        checkpoints=checkpoints,
        last_seq=last.seq,
        last_hash=last.hash,
        last_signature=last_signature,
        key_id=kid,
        sealed=last.is_checkpoint and last.str_field("trigger") == c.TRIGGER_CLOSE,
        unsigned_tail_records=unsigned,
        unclean_stops=unclean,
        partial_tail_bytes=partial,
    )
