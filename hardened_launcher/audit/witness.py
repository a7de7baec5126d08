"""Outside witnesses of the audit log: signed copies of each checkpoint's place and digest.

The log alone cannot show that whole segments were deleted from its end back to an earlier
checkpoint (a rollback), or that it was cut right after a checkpoint: what is left verifies.
A *witness record* names one checkpoint of the log — its ``seq`` and its record ``hash`` — and
is kept outside the launcher's host (the control plane stores it and copies it to object
storage). Comparing the log with its witnesses then shows a log that lost records the witnesses
saw (``audit_log_rolled_back``) or holds other records at a witnessed place
(``audit_witness_mismatch``).

A witness record is one JSON object in the canonical encoding of the audit log
(:mod:`hardened_launcher.audit.canonical`)::

    {"hash":"<checkpoint record hash>","key_id":"<audit key id>","kind":"audit-witness",
     "pool_id":"…","seq":41,"signature":"<128 hex>","time":"<checkpoint time>",
     "trigger":"records","v":1,"worker_id":"…"}

``signature`` is Ed25519 under the launcher's audit key over :data:`WITNESS_DOMAIN` followed by
the canonical encoding of the record without ``signature``, so it binds the checkpoint to the
pool and worker that reported it. A record is at most :data:`MAX_WITNESS_BYTES` bytes; a file
of them (JSON lines, the form the control plane exports) at most :data:`MAX_WITNESS_FILE_BYTES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit import canonical as c
from hardened_launcher.audit.keys import key_id as compute_key_id
from hardened_launcher.audit.reader import AuditRecord
from hardened_launcher.audit.verify import VerifyReport, verify_log
from hardened_launcher.bounded_input import describe_path, read_bounded
from hardened_launcher.errors import InputFileError, UntrustedInputError
from hardened_launcher.identity.token import is_valid_pool_id

WITNESS_FORMAT: Final = 1
WITNESS_KIND: Final = "audit-witness"
WITNESS_DOMAIN: Final = b"hardened-launcher/audit-witness/v1\n"
#: One record: every member is bounded (ids 64, hashes 64, signature 128, time 32 characters).
MAX_WITNESS_BYTES: Final = 1024
MAX_WITNESS_FILE_BYTES: Final = 64 * 1024 * 1024
#: Records one comparison reads (a witness every minute for about two years).
MAX_WITNESS_RECORDS: Final = 1_000_000
#: Files in a ``--witness`` directory.
MAX_WITNESS_FILES: Final = 100_000
MAX_SEQ: Final = 2**63 - 1
WITNESS_SUFFIXES: Final = (".json", ".jsonl")

_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_HEX128: Final = re.compile(r"[0-9a-f]{128}")
_WORKER_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\+00:00")
_MEMBERS: Final = frozenset(
    {"v", "kind", "key_id", "pool_id", "worker_id", "seq", "hash", "trigger", "time", "signature"}
)


class WitnessError(UntrustedInputError):
    """A witness record is malformed or forged, or the log disagrees with its witnesses."""

    default_reason = "audit_witness_invalid"


def _invalid(message: str, where: str) -> WitnessError:
    return WitnessError(
        f"{where}: {message}",
        hint="witness records come from the control plane's store or its object-storage copy "
        "(docs/audit.md); a record that does not verify was not written by this launcher",
        reason="audit_witness_invalid",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessPoint:
    """One durable checkpoint of the log, before it is bound and signed."""

    seq: int
    hash: str
    trigger: str
    time: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessRecord:
    """A signed witness of one checkpoint (see the module docstring)."""

    key_id: str
    pool_id: str
    worker_id: str
    seq: int
    hash: str
    trigger: str
    time: str
    signature: str

    def statement(self) -> bytes:
        """The exact bytes the signature covers."""
        return WITNESS_DOMAIN + c.canonical_json(self._unsigned())

    def _unsigned(self) -> dict[str, object]:
        return {
            "v": WITNESS_FORMAT,
            "kind": WITNESS_KIND,
            "key_id": self.key_id,
            "pool_id": self.pool_id,
            "worker_id": self.worker_id,
            "seq": self.seq,
            "hash": self.hash,
            "trigger": self.trigger,
            "time": self.time,
        }

    def to_json(self) -> bytes:
        """The canonical form (no newline)."""
        return c.canonical_json({**self._unsigned(), "signature": self.signature})

    def verify(self, public_key: ed25519.Ed25519PublicKey, *, where: str = "witness") -> None:
        if self.key_id != compute_key_id(public_key):
            raise _invalid(
                f"signed by audit key {self.key_id[:16]}…, not the given key "
                f"{compute_key_id(public_key)[:16]}…",
                where,
            )
        try:
            public_key.verify(bytes.fromhex(self.signature), self.statement())
        except InvalidSignature:
            raise _invalid("the signature does not verify (forged or altered)", where) from None


def sign_witness(
    point: WitnessPoint, *, key: ed25519.Ed25519PrivateKey, pool_id: str, worker_id: str
) -> WitnessRecord:
    """Bind ``point`` to the pool and worker reporting it and sign it with the audit key."""
    unsigned = WitnessRecord(
        key_id=compute_key_id(key.public_key()),
        pool_id=pool_id,
        worker_id=worker_id,
        seq=point.seq,
        hash=point.hash,
        trigger=point.trigger,
        time=point.time,
        signature="0" * 128,
    )
    check_witness_fields(unsigned, where="witness")
    return replace(unsigned, signature=key.sign(unsigned.statement()).hex())


def check_witness_fields(record: WitnessRecord, *, where: str) -> WitnessRecord:
    """Every member has its shape (not the signature: see :meth:`WitnessRecord.verify`)."""
    checks: tuple[tuple[str, bool], ...] = (
        ("key_id", bool(_HEX64.fullmatch(record.key_id))),
        ("pool_id", is_valid_pool_id(record.pool_id)),
        ("worker_id", bool(_WORKER_ID.fullmatch(record.worker_id))),
        ("seq", 0 <= record.seq <= MAX_SEQ and not isinstance(record.seq, bool)),
        ("hash", bool(_HEX64.fullmatch(record.hash))),
        ("trigger", record.trigger in c.ALL_TRIGGERS),
        ("time", bool(_TIME.fullmatch(record.time))),
        ("signature", bool(_HEX128.fullmatch(record.signature))),
    )
    for name, good in checks:
        if not good:
            raise _invalid(f"{name} does not have the shape of a witness record's {name}", where)
    return record


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate member")
        result[key] = value
    return result


def parse_witness(line: bytes, *, where: str = "witness") -> WitnessRecord:
    """One witness record from its canonical bytes; strict (exact members, canonical form)."""
    if len(line) > MAX_WITNESS_BYTES:
        raise _invalid(f"longer than {MAX_WITNESS_BYTES} bytes", where)
    try:
        doc = json.loads(line.decode("ascii"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _invalid("not a JSON object in ASCII", where) from None
    if not isinstance(doc, dict) or set(doc) != _MEMBERS:
        raise _invalid("does not have exactly the members of a witness record", where)
    if doc["v"] != WITNESS_FORMAT or isinstance(doc["v"], bool) or doc["kind"] != WITNESS_KIND:
        raise _invalid(f"not a version {WITNESS_FORMAT} {WITNESS_KIND} record", where)
    texts = ("key_id", "pool_id", "worker_id", "hash", "trigger", "time", "signature")
    if not all(isinstance(doc[name], str) for name in texts):
        raise _invalid("a member that must be text is not", where)
    seq = doc["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise _invalid("seq is not an integer", where)
    record = check_witness_fields(
        WitnessRecord(seq=seq, **{name: str(doc[name]) for name in texts}), where=where
    )
    if record.to_json() != line:
        raise _invalid("not in the canonical encoding (altered?)", where)
    return record


def parse_witness_lines(data: bytes, *, source: str) -> list[WitnessRecord]:
    """Every record of a JSON-lines witness file (blank lines and a final newline allowed)."""
    records: list[WitnessRecord] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.strip(b"\r")
        if not line.strip():
            continue
        if len(records) >= MAX_WITNESS_RECORDS:
            raise _invalid(f"more than {MAX_WITNESS_RECORDS} records", source)
        records.append(parse_witness(line, where=f"{source} line {number}"))
    return records


def load_witness_path(path: Path) -> list[WitnessRecord]:
    """Witness records from a JSON-lines file, or from every ``*.json``/``*.jsonl`` file of a
    directory (the layout the control plane exports, copied down)."""
    try:
        is_dir = path.is_dir()
        listed = sorted(path.iterdir()) if is_dir else []
        files = [p for p in listed if p.suffix in WITNESS_SUFFIXES and p.is_file()]
    except OSError as exc:  # a name too long, a loop, no permission to list the directory
        raise InputFileError(
            f"cannot read the witness path {describe_path(path)}: {exc.strerror or exc}",
            hint="point --witness at a readable file or directory of exported witness records",
            reason="audit_witness_missing",
        ) from None
    if is_dir:
        if len(files) > MAX_WITNESS_FILES:
            raise _invalid(f"more than {MAX_WITNESS_FILES} witness files", describe_path(path))
        if not files:
            raise InputFileError(
                f"{describe_path(path)} holds no witness files (*.json, *.jsonl)",
                hint="point --witness at the witness records the control plane exported",
                reason="audit_witness_missing",
            )
    else:
        files = [path]
    records: list[WitnessRecord] = []
    budget = MAX_WITNESS_FILE_BYTES
    for file in files:
        data = bytes(
            read_bounded(
                file, max_bytes=budget, what="witness file", reason="audit_witness_missing"
            )
        )
        budget -= len(data)
        records.extend(parse_witness_lines(data, source=describe_path(file)))
        if len(records) > MAX_WITNESS_RECORDS:
            raise _invalid(f"more than {MAX_WITNESS_RECORDS} records", describe_path(path))
    return records


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessReport:
    """What the comparison established."""

    witnesses: int
    latest_seq: int
    bindings: tuple[tuple[str, str], ...]


def witness_seqs(witnesses: Iterable[WitnessRecord]) -> frozenset[int]:
    return frozenset(w.seq for w in witnesses)


def compare_with_witnesses(
    witnesses: Iterable[WitnessRecord],
    public_key: ed25519.Ed25519PublicKey,
    *,
    last_seq: int,
    checkpoint_hashes: Mapping[int, str],
    source: str = "witness",
) -> WitnessReport:
    """Judge a verified log against its witnesses.

    ``last_seq`` is the log's last record; ``checkpoint_hashes`` maps the seq of every
    checkpoint in the log (at least those the witnesses name) to its hash. Raises
    :class:`WitnessError` with ``audit_log_rolled_back`` when a witness names a checkpoint past
    the log's end, ``audit_witness_mismatch`` when the log holds no such checkpoint at a
    witnessed place, ``audit_witness_invalid`` for a forged witness; ``audit_witness_missing``
    when there is none.
    """
    checked = list(witnesses)
    if not checked:
        raise InputFileError(
            f"{source} holds no witness records",
            hint="point --witness at the witness records the control plane exported",
            reason="audit_witness_missing",
        )
    for witness in checked:
        witness.verify(public_key, where=f"{source}: witness of seq {witness.seq}")
    latest = max(checked, key=lambda w: w.seq)
    if latest.seq > last_seq:
        raise WitnessError(
            f"the log ends at seq {last_seq}, but {source} saw checkpoint seq {latest.seq} "
            f"({latest.trigger}, {latest.time}) reported by {latest.pool_id}/{latest.worker_id}: "
            f"{latest.seq - last_seq} record(s) were removed from the end of the log (rolled "
            "back, cut at a checkpoint, or trailing segments deleted)",
            hint="keep this log as evidence; the records after seq "
            f"{last_seq} exist only in exports and the witnesses",
            reason="audit_log_rolled_back",
        )
    for witness in sorted(checked, key=lambda w: w.seq):
        found = checkpoint_hashes.get(witness.seq)
        if found != witness.hash:
            what = "no checkpoint" if found is None else "a different checkpoint"
            raise WitnessError(
                f"{source} saw checkpoint seq {witness.seq} with hash {witness.hash[:16]}…, but "
                f"the log holds {what} at that place: it was rewritten from there on",
                hint="keep this log as evidence; it is not the log the witnesses saw",
                reason="audit_witness_mismatch",
            )
    bindings = tuple(sorted({(w.pool_id, w.worker_id) for w in checked}))
    return WitnessReport(witnesses=len(checked), latest_seq=latest.seq, bindings=bindings)


def verify_log_with_witnesses(
    directory: Path,
    public_key: ed25519.Ed25519PublicKey,
    witnesses: Iterable[WitnessRecord],
    *,
    allow_open_tail: bool = False,
    source: str = "witness",
) -> tuple[VerifyReport, WitnessReport]:
    """:func:`~hardened_launcher.audit.verify.verify_log`, then the comparison with the
    witnesses. The chain makes the newest witness enough to pin every record before it; the
    older ones are checked too."""
    kid = compute_key_id(public_key)
    given = list(witnesses)
    # A collection may hold the witnesses of many launchers: this log's are those of its key.
    checked = [w for w in given if w.key_id == kid]
    if given and not checked:
        raise InputFileError(
            f"{source} holds {len(given)} witness record(s), none of audit key {kid[:16]}…",
            hint="point --witness at this launcher's witnesses (audit-witness/<key id>/)",
            reason="audit_witness_missing",
        )
    wanted = witness_seqs(checked)
    hashes: dict[int, str] = {}

    def keep(record: AuditRecord) -> None:
        if record.seq in wanted and record.is_checkpoint:
            hashes[record.seq] = record.hash

    report = verify_log(directory, public_key, allow_open_tail=allow_open_tail, visit=keep)
    judged = compare_with_witnesses(
        checked, public_key, last_seq=report.last_seq, checkpoint_hashes=hashes, source=source
    )
    return report, judged
