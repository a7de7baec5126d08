"""The tamper-evident audit log: hash-chained JSON-lines records in segments, signed checkpoints.

Layout: ``<audit_dir>/audit-<first seq, 20 digits>.jsonl``. Each line is one record in the
canonical encoding (:mod:`hardened_launcher.audit.canonical`)::

    {"fields":{...},"gate":"policy","hash":"<sha256>","outcome":"deny","prev":"<sha256>",
     "reason":"policy_denied","run_id":"...","seq":41,"time":"2030-...+00:00",
     "type":"policy.evaluated","v":1}

``seq`` counts from 0 across segments; ``prev`` is the previous record's ``hash`` (64 zeros for
the first). A checkpoint is a record of type ``audit.checkpoint`` whose fields sign the previous
record's ``seq`` and ``hash`` together with the previous checkpoint's signature. One is written
every ``checkpoint_records`` records or ``checkpoint_seconds`` seconds, as the last record of
every segment (segments rotate at ``segment_bytes`` or ``segment_seconds``), and at
:meth:`ChainedAuditLog.close` (trigger ``close``: the log is sealed).

Each process start writes to a new segment whose first record is ``audit.log_opened``. If the
previous process did not close the log, the old last segment first gets a ``recovery`` checkpoint
(its unsigned tail is signed now, see docs/audit.md) and a partially written last line (never
acknowledged to a caller) is cut and counted in ``audit.log_opened``.

Durability: :meth:`record` returns only after the record is fsynced (group commit: concurrent
callers share one fsync). Failure is fail-closed: after any write or sync error, or when the log
cannot be reached within ``write_timeout_seconds``, every :meth:`record` raises
:class:`InfrastructureError` with reason ``audit_unavailable`` until :meth:`try_recover`
succeeds. Recovery follows the start-up rule exactly (the same code): the failed segment is read
back from disk, a partial last line (never acknowledged) is cut, its unsigned tail gets a
``recovery`` checkpoint that ends it, and a new segment starts with ``audit.log_recovered``
(the failure, the bytes cut) followed by a checkpoint, all fsynced. The daemon calls it every
second while the log is unhealthy, so the log heals by itself when space returns.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit import canonical as c
from hardened_launcher.audit.events import AuditEvent, Outcome
from hardened_launcher.audit.keys import key_id as compute_key_id
from hardened_launcher.audit.reader import (
    AuditFormatError,
    parse_record,
    split_lines,
)
from hardened_launcher.audit.witness import WitnessPoint, WitnessRecord, sign_witness
from hardened_launcher.directory_lock import DirectoryLock
from hardened_launcher.errors import InfrastructureError

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
DEFAULT_SEGMENT_SECONDS: Final = 24 * 3600.0
DEFAULT_CHECKPOINT_RECORDS: Final = 1000
DEFAULT_CHECKPOINT_SECONDS: Final = 60.0
DEFAULT_WRITE_TIMEOUT_SECONDS: Final = 30.0
#: Durable checkpoints kept for :meth:`ChainedAuditLog.take_witnesses` (oldest dropped first:
#: the newest witness pins every record before it).
MAX_PENDING_WITNESSES: Final = 64
AUDIT_UNAVAILABLE: Final = "audit_unavailable"
AUDIT_LOG_IN_USE: Final = "audit_log_in_use"


def _unavailable(message: str, exc: OSError | None = None) -> InfrastructureError:
    why = f": {exc.strerror or errno.errorcode.get(exc.errno or 0, exc)}" if exc else ""
    return InfrastructureError(
        f"{message}{why}",
        hint="free disk space or restore the audit directory's permissions, then restart; "
        "no run is accepted while decisions cannot be audited",
        reason=AUDIT_UNAVAILABLE,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainHead:
    """Where the chain stands: the next sequence number and the last hash and signature."""

    next_seq: int
    last_hash: str
    last_signature: str
    sealed: bool


def _now_text(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="microseconds")


class ChainedAuditLog:
    """An :class:`~hardened_launcher.audit.events.AuditSink` writing the chained, signed log."""

    def __init__(
        self,
        directory: Path,
        *,
        signing_key: ed25519.Ed25519PrivateKey,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
        checkpoint_records: int = DEFAULT_CHECKPOINT_RECORDS,
        checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
        write_timeout_seconds: float = DEFAULT_WRITE_TIMEOUT_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if segment_bytes < 1 or checkpoint_records < 1:
            raise ValueError("segment_bytes and checkpoint_records must be positive")
        self.directory = directory
        self._key = signing_key
        self.key_id = compute_key_id(signing_key.public_key())
        self._segment_bytes = segment_bytes
        self._segment_seconds = segment_seconds
        self._checkpoint_records = checkpoint_records
        self._checkpoint_seconds = checkpoint_seconds
        self._timeout = write_timeout_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._failed: str | None = None
        #: Partial bytes cut by recovery attempts since the failure (reported once healed).
        self._recovery_cut = 0
        self._closed = False
        self._fd = -1
        self._segment_path: Path | None = None
        self._segment_size = 0
        self._segment_started = 0.0
        self._retired: list[int] = []
        self._written = 0  # records written by this instance
        self._synced = 0  # records known durable
        self._since_checkpoint = 0
        self._last_checkpoint_at = monotonic()
        #: (records written when it is durable, the checkpoint) for the outside witness.
        self._witness_points: collections.deque[tuple[int, WitnessPoint]] = collections.deque(
            maxlen=MAX_PENDING_WITNESSES
        )
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise _unavailable(f"cannot open the audit log in {directory}", exc) from exc
        # One writer per log: a second one would seal this one's live segment and fork the
        # chain (the log would then read as tampered). Held until close() or process exit.
        self._dir_lock = DirectoryLock.acquire(
            directory,
            what="the audit log",
            reason=AUDIT_LOG_IN_USE,
            hint="another launcher (or `hardened-launcher exec`) is writing it: stop that one "
            "(`pgrep -af hardened-launcher`), or give this one its own HL_AUDIT_DIR and "
            "HL_STATE_DIR",
        )
        try:
            head, recovered = self._recover()
        except OSError as exc:
            self._dir_lock.release()
            raise _unavailable(f"cannot open the audit log in {directory}", exc) from exc
        except BaseException:
            self._dir_lock.release()
            raise
        self._seq = head.next_seq
        self._prev = head.last_hash
        self._prev_sig = head.last_signature
        previous = "none" if head.next_seq == 0 else ("clean" if head.sealed else "unclean")
        try:
            self.record(
                AuditEvent(
                    type=c.LOG_OPENED_TYPE,
                    outcome=Outcome.INFO,
                    gate="audit",
                    fields={
                        "format": c.FORMAT_VERSION,
                        "key_id": self.key_id,
                        "previous_stop": previous,
                        "cut_partial_bytes": recovered,
                    },
                    time=self._clock(),
                )
            )
        except BaseException:
            # Not opened: nobody will close() it, so let go of its files and its lock now.
            for fd in [*self._retired, self._fd]:
                if fd >= 0:
                    os.close(fd)
            self._retired, self._fd = [], -1
            self._dir_lock.release()
            raise

    # -- start-up ------------------------------------------------------------------------------
    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for entry in os.scandir(self.directory):
            first = c.segment_first_seq(entry.name)
            if first is not None and entry.is_file(follow_symlinks=False):
                found.append((first, Path(entry.path)))
        return sorted(found)

    def _recover(self) -> tuple[ChainHead, int]:
        """Read the last segment; cut an unacknowledged partial line; seal an unclean tail."""
        segments = self._segments()
        if not segments:
            return ChainHead(
                next_seq=0, last_hash=c.GENESIS_HASH, last_signature="", sealed=False
            ), 0
        _, last_path = segments[-1]
        data = last_path.read_bytes()
        cut = 0
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            cut = len(data) - keep
            self._recovery_cut += cut
            log.warning("audit.partial_record_cut", extra={"segment": last_path.name, "bytes": cut})
            fd = os.open(last_path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, keep)
                os.fsync(fd)
            finally:
                os.close(fd)
            data = data[:keep]
        records = []
        try:
            for number, line in enumerate(split_lines(data)):
                records.append(parse_record(line, segment=last_path.name, line=number))
        except AuditFormatError as exc:
            raise InfrastructureError(
                f"the last audit segment {last_path.name} is damaged: {exc.message}",
                hint="run `hardened-launcher audit verify`; keep the damaged log as evidence, "
                "move it aside and restart",
                reason=AUDIT_UNAVAILABLE,
            ) from None
        signature = ""
        for record in reversed(records):
            if record.is_checkpoint:
                signature = record.str_field("signature")
                break
        if not records:
            # An empty segment (crash right after creating it): chain from the one before.
            last_path.unlink()
            if len(segments) == 1:
                return (
                    ChainHead(
                        next_seq=0, last_hash=c.GENESIS_HASH, last_signature="", sealed=False
                    ),
                    cut,
                )
            return self._recover()[0], cut
        if not signature and len(segments) > 1:
            prev_data = segments[-2][1].read_bytes()
            prev_lines = split_lines(prev_data)
            if prev_lines:
                prev_last = parse_record(
                    prev_lines[-1], segment=segments[-2][1].name, line=len(prev_lines) - 1
                )
                if prev_last.is_checkpoint:
                    signature = prev_last.str_field("signature")
        last = records[-1]
        ended = last.is_checkpoint and last.str_field("trigger") in c.SEGMENT_ENDING_TRIGGERS
        sealed = last.is_checkpoint and last.str_field("trigger") == c.TRIGGER_CLOSE
        head = ChainHead(
            next_seq=last.seq + 1, last_hash=last.hash, last_signature=signature, sealed=sealed
        )
        if ended:
            return head, cut
        # Unclean stop: sign the tail into the old segment so every segment ends signed.
        self._seq, self._prev, self._prev_sig = head.next_seq, head.last_hash, head.last_signature
        fd = os.open(last_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            line = self._checkpoint_line(c.TRIGGER_RECOVERY)
            self._write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return (
            ChainHead(
                next_seq=self._seq,
                last_hash=self._prev,
                last_signature=self._prev_sig,
                sealed=False,
            ),
            cut,
        )

    # -- writing ---------------------------------------------------------------------------------
    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]

    def _line(self, body: dict[str, object]) -> bytes:
        """Chain ``body`` (a record without v/seq/prev/hash) and return its canonical line."""
        record: dict[str, object] = {
            **body,
            "v": c.FORMAT_VERSION,
            "seq": self._seq,
            "prev": self._prev,
        }
        digest = c.record_hash(record)
        record["hash"] = digest
        line = c.canonical_json(record) + b"\n"
        self._seq += 1
        self._prev = digest
        return line

    def _checkpoint_line(self, trigger: str) -> bytes:
        when = _now_text(self._clock())
        statement = c.checkpoint_statement(
            covers_seq=self._seq - 1,
            covers_hash=self._prev,
            prev_signature=self._prev_sig,
            key_id=self.key_id,
            time=when,
            trigger=trigger,
        )
        signature = self._key.sign(statement).hex()
        line = self._line(
            {
                "time": when,
                "type": c.CHECKPOINT_TYPE,
                "outcome": Outcome.INFO.value,
                "gate": "audit",
                "fields": {
                    "covers_seq": self._seq - 1,
                    "covers_hash": self._prev,
                    "prev_signature": self._prev_sig,
                    "key_id": self.key_id,
                    "trigger": trigger,
                    "signature": signature,
                },
            }
        )
        self._prev_sig = signature
        # Durable once this line (the next record written) is synced.
        self._witness_points.append(
            (
                self._written + 1,
                WitnessPoint(seq=self._seq - 1, hash=self._prev, trigger=trigger, time=when),
            )
        )
        self._since_checkpoint = 0
        self._last_checkpoint_at = self._monotonic()
        return line

    def _open_segment(self) -> None:
        # Called from _append, after _line numbered the record this segment starts with.
        path = self.directory / c.segment_name(self._seq - 1)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._fd = fd
        self._segment_path = path
        self._segment_size = 0
        self._segment_started = self._monotonic()

    def _append(self, line: bytes) -> None:
        if self._fd < 0:
            self._open_segment()
        self._write_all(self._fd, line)
        self._segment_size += len(line)
        self._written += 1

    def _end_segment(self, trigger: str) -> None:
        """Checkpoint, fsync and retire the current segment (caller holds the write lock)."""
        self._append(self._checkpoint_line(trigger))
        os.fsync(self._fd)
        self._synced = max(self._synced, self._written)
        self._retired.append(self._fd)
        self._fd = -1
        self._segment_path = None

    def _acquire(self, lock: threading.Lock, what: str) -> None:
        if not lock.acquire(timeout=self._timeout):
            self._failed = self._failed or f"timed out after {self._timeout:.0f}s {what}"
            raise _unavailable(f"the audit log did not respond ({what})")

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise _unavailable(f"the audit log in {self.directory} failed earlier ({self._failed})")
        if self._closed:
            raise _unavailable(f"the audit log in {self.directory} is closed")

    def record(self, event: AuditEvent) -> None:
        """Append ``event``; return once it (and any checkpoint it triggered) is on disk."""
        body = event.to_json_dict()
        if event.type == c.CHECKPOINT_TYPE and self._seq != 0:
            raise ValueError("audit.checkpoint records are written by the log itself")
        self._acquire(self._write_lock, "writing")
        try:
            self._check_usable()
            try:
                self._append(self._line(body))
                self._since_checkpoint += 1
                now = self._monotonic()
                if (
                    self._segment_size >= self._segment_bytes
                    or now - self._segment_started >= self._segment_seconds
                ):
                    self._end_segment(c.TRIGGER_SEGMENT_END)
                elif self._since_checkpoint >= self._checkpoint_records:
                    self._append(self._checkpoint_line(c.TRIGGER_RECORDS))
                elif now - self._last_checkpoint_at >= self._checkpoint_seconds:
                    self._append(self._checkpoint_line(c.TRIGGER_SECONDS))
            except OSError as exc:
                self._failed = exc.strerror or str(exc)
                raise _unavailable(f"cannot write the audit log in {self.directory}", exc) from exc
            ticket = self._written
        finally:
            self._write_lock.release()
        self._sync(ticket)

    def _sync(self, ticket: int) -> None:
        """Group commit: one fsync makes every record written before it durable."""
        self._acquire(self._sync_lock, "syncing")
        try:
            if self._synced >= ticket:
                return
            self._acquire(self._write_lock, "syncing")
            try:
                self._check_usable()
                fd, target = self._fd, self._written
                retired, self._retired = self._retired, []
            finally:
                self._write_lock.release()
            try:
                if fd >= 0:
                    os.fsync(fd)
                for old in retired:
                    os.close(old)
            except OSError as exc:
                self._failed = exc.strerror or str(exc)
                raise _unavailable(f"cannot sync the audit log in {self.directory}", exc) from exc
            self._synced = max(self._synced, target)
        finally:
            self._sync_lock.release()

    def checkpoint_if_due(self) -> None:
        """Write a ``seconds`` checkpoint if records are unsigned for ``checkpoint_seconds``;
        the daemon calls this from its timer so an idle launcher's tail gets signed too."""
        self._acquire(self._write_lock, "checkpointing")
        try:
            self._check_usable()
            due = self._monotonic() - self._last_checkpoint_at >= self._checkpoint_seconds
            if self._since_checkpoint == 0 or not due:
                return
            try:
                self._append(self._checkpoint_line(c.TRIGGER_SECONDS))
            except OSError as exc:
                self._failed = exc.strerror or str(exc)
                raise _unavailable(f"cannot write the audit log in {self.directory}", exc) from exc
            ticket = self._written
        finally:
            self._write_lock.release()
        self._sync(ticket)

    def try_recover(self) -> bool:
        """Heal after a write or sync failure once writes succeed again; True when healthy.

        Never waits: does nothing (False) while another caller holds the log (a hung write)
        or when the disk still refuses; the next call tries again. (The daemon calls it from
        its loop, which must not stall.)
        """
        if self._closed:
            return False
        if self._failed is None:
            return True
        if not self._sync_lock.acquire(blocking=False):
            return False
        try:
            if not self._write_lock.acquire(blocking=False):
                return False
            try:
                return self._recover_in_place()
            finally:
                self._write_lock.release()
        finally:
            self._sync_lock.release()

    def _writable(self) -> bool:
        """A scratch write + fsync in the directory succeeds (checked before touching the log,
        so a disk that is still full is not written to, cut and logged every second)."""
        path = self.directory / f".recovery-probe-{os.getpid()}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                self._write_all(fd, b"\0" * 8192)
                os.fsync(fd)
            finally:
                os.close(fd)
                path.unlink(missing_ok=True)
        except OSError:
            return False
        return True

    def _recover_in_place(self) -> bool:
        if self._failed is None or self._closed:
            return not self._closed
        if not self._writable():
            return False
        failure = self._failed
        # A checkpoint written but never synced may have been cut: it is not witnessed.
        while self._witness_points and self._witness_points[-1][0] > self._synced:
            self._witness_points.pop()
        for fd in [*self._retired, self._fd]:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    log.warning("audit.close_failed", exc_info=True)
        self._retired, self._fd, self._segment_path = [], -1, None
        try:
            head, _ = self._recover()
            cut = self._recovery_cut
            self._seq, self._prev = head.next_seq, head.last_hash
            self._prev_sig = head.last_signature
            self._since_checkpoint = 0
            self._append(
                self._line(
                    AuditEvent(
                        type=c.LOG_RECOVERED_TYPE,
                        outcome=Outcome.INFO,
                        gate="audit",
                        fields={
                            "key_id": self.key_id,
                            "failure": failure[:200],
                            "cut_partial_bytes": cut,
                        },
                        time=self._clock(),
                    ).to_json_dict()
                )
            )
            self._append(self._checkpoint_line(c.TRIGGER_RECORDS))
            os.fsync(self._fd)
        except (OSError, InfrastructureError) as exc:
            if self._fd >= 0:
                try:
                    os.close(self._fd)
                except OSError:
                    log.warning("audit.close_failed", exc_info=True)
            self._fd, self._segment_path = -1, None
            log.info("audit.recovery_pending why=%s", type(exc).__name__)
            return False
        self._synced = self._written
        self._failed = None
        self._recovery_cut = 0
        log.warning("audit.recovered failure=%s cut_partial_bytes=%d", failure[:200], cut)
        return True

    def take_witnesses(self, *, pool_id: str, worker_id: str) -> list[WitnessRecord]:
        """The checkpoints that became durable since the last call, bound to the pool and
        worker and signed (docs/audit.md, "Outside witness"); at most
        :data:`MAX_PENDING_WITNESSES`, the oldest dropped first when more were waiting."""
        # Never waits: the daemon's loop calls this, and a hung write holds the lock.
        if not self._write_lock.acquire(blocking=False):
            return []
        try:
            points = []
            while self._witness_points and self._witness_points[0][0] <= self._synced:
                points.append(self._witness_points.popleft()[1])
        finally:
            self._write_lock.release()
        return [
            sign_witness(p, key=self._key, pool_id=pool_id, worker_id=worker_id) for p in points
        ]

    @property
    def healthy(self) -> bool:
        """False once a write failed: the launcher must stop accepting runs."""
        return self._failed is None and not self._closed

    @property
    def failure(self) -> str | None:
        return self._failed

    def close(self) -> None:
        """Seal the log with a ``close`` checkpoint and release the files. Safe to call twice."""
        with self._sync_lock, self._write_lock:
            if self._closed:
                return
            try:
                if self._failed is None:
                    self._end_segment(c.TRIGGER_CLOSE)
            except OSError as exc:
                self._failed = exc.strerror or str(exc)
                raise _unavailable(f"cannot seal the audit log in {self.directory}", exc) from exc
            finally:
                self._closed = True
                for fd in [*self._retired, self._fd]:
                    if fd >= 0:
                        os.close(fd)
                self._retired = []
                self._fd = -1
                self._dir_lock.release()

    def __enter__(self) -> ChainedAuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audit_log(state_dir: Path, audit_dir: Path) -> ChainedAuditLog:
    """The launcher's audit log: the signing key from ``state_dir`` (created at first start)
    and the segments in ``audit_dir``."""
    from hardened_launcher.audit.keys import load_or_create_signing_key  # noqa: PLC0415

    return ChainedAuditLog(audit_dir, signing_key=load_or_create_signing_key(state_dir))
