"""The canonical encoding of audit records, and the hashes and signatures computed over it.

One encoding is used for every byte that is hashed or signed, and it is also the exact form of
each line on disk, so a verifier re-encodes what it parsed and compares bytes:

- JSON with object keys sorted by code point, no whitespace at all (``,`` and ``:`` only);
- ASCII only: every non-ASCII character is written as a lower-case ``\\uXXXX`` escape (UTF-16
  surrogate pairs above U+FFFF), so the bytes are also valid UTF-8 and a line can never hold a raw
  newline;
- integers in decimal; floats as Python's shortest round-trip ``repr``; NaN and infinities are
  refused; ``true``/``false``/``null``.

A record's ``hash`` is the lower-case hex SHA-256 of the canonical encoding of the record without
its ``hash`` member. A checkpoint's signature is Ed25519 over :data:`CHECKPOINT_DOMAIN` followed
by the canonical encoding of :func:`checkpoint_statement`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Final

from hardened_launcher.ascii_text import is_digits

FORMAT_VERSION: Final = 1
GENESIS_HASH: Final = "0" * 64
CHECKPOINT_TYPE: Final = "audit.checkpoint"
LOG_OPENED_TYPE: Final = "audit.log_opened"
#: The first record of the segment a log opens after it recovered from a write failure.
LOG_RECOVERED_TYPE: Final = "audit.log_recovered"
CHECKPOINT_DOMAIN: Final = b"hardened-launcher/audit-checkpoint/v1\n"
#: Checkpoint triggers; the last three end a segment.
TRIGGER_RECORDS: Final = "records"
TRIGGER_SECONDS: Final = "seconds"
TRIGGER_SEGMENT_END: Final = "segment_end"
TRIGGER_RECOVERY: Final = "recovery"
TRIGGER_CLOSE: Final = "close"
SEGMENT_ENDING_TRIGGERS: Final = frozenset({TRIGGER_SEGMENT_END, TRIGGER_RECOVERY, TRIGGER_CLOSE})
ALL_TRIGGERS: Final = frozenset({TRIGGER_RECORDS, TRIGGER_SECONDS}) | SEGMENT_ENDING_TRIGGERS
SEGMENT_PREFIX: Final = "audit-"
SEGMENT_SUFFIX: Final = ".jsonl"
SEGMENT_DIGITS: Final = 20


def canonical_json(value: object) -> bytes:
    """The canonical bytes of a JSON value (see the module docstring)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def record_hash(record: Mapping[str, object]) -> str:
    """SHA-256 (hex) of the canonical encoding of ``record`` without its ``hash`` member."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def checkpoint_statement(
    *,
    covers_seq: int,
    covers_hash: str,
    prev_signature: str,
    key_id: str,
    time: str,
    trigger: str,
) -> bytes:
    """The exact bytes a checkpoint signature covers."""
    return CHECKPOINT_DOMAIN + canonical_json(
        {
            "covers_hash": covers_hash,
            "covers_seq": covers_seq,
            "key_id": key_id,
            "prev_signature": prev_signature,
            "time": time,
            "trigger": trigger,
        }
    )


def segment_name(first_seq: int) -> str:
    """``audit-<first sequence number, 20 digits>.jsonl``: names sort in log order."""
    return f"{SEGMENT_PREFIX}{first_seq:0{SEGMENT_DIGITS}d}{SEGMENT_SUFFIX}"


def segment_first_seq(name: str) -> int | None:
    """The first sequence number a segment's name announces, or ``None`` if not a segment."""
    if not (name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX)):
        return None
    digits = name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)]
    if len(digits) != SEGMENT_DIGITS or not is_digits(digits):
        return None
    return int(digits)
