"""The control plane's SQLite store: pools, workers, runs, events and the outbox.

One file (mode 0600, WAL journal) in the state directory, shared by ``serve`` and the operator
commands, which may run at the same time: every write is one ``BEGIN IMMEDIATE`` transaction.
Run transitions from :mod:`~hardened_launcher.controlplane.dispatch` are applied as a
compare-and-swap: the ``UPDATE`` matches the run's previous state, worker and lease, so of two
competing transitions (two assignments, an accept racing a lease expiry) exactly one applies.

The outbox holds messages for workers; ``serve`` sends them in order and marks them sent, so an
operator command (``worker drain``, ``run cancel``) reaches a worker through the same path as
dispatch's own messages. Events are an operator trail: names and ids, never payloads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from hardened_launcher.controlplane.dispatch import (
    Notice,
    Run,
    RunState,
    Transition,
    Worker,
    WorkerState,
)
from hardened_launcher.controlplane.errors import ConflictError, NotFoundError, StoreError
from hardened_launcher.transport.session import Outgoing
from hardened_launcher.transport.topics import WorkerAddress

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
STORE_FILE_MODE: Final = 0o600

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pools (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    certificate_pem TEXT NOT NULL,
    certificate_serial TEXT NOT NULL,
    certificate_fingerprint TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked_certificates (
    serial TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools(id),
    fingerprint TEXT NOT NULL,
    revoked_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools(id),
    metadata TEXT NOT NULL,
    version TEXT NOT NULL,
    max_concurrent_runs INTEGER NOT NULL,
    state TEXT NOT NULL,
    drained INTEGER NOT NULL DEFAULT 0,
    registered_at REAL NOT NULL,
    last_heartbeat_at REAL NOT NULL,
    gone_at REAL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools(id),
    spec_sha256 TEXT NOT NULL,
    key_id TEXT NOT NULL,
    envelope BLOB NOT NULL,
    envelope_expires_at REAL NOT NULL,
    manifest BLOB NOT NULL DEFAULT x'',
    state TEXT NOT NULL,
    worker_id TEXT,
    lease_id TEXT,
    lease_expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    exit_code INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    log_chunks INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs(state, pool_id, created_at);
CREATE INDEX IF NOT EXISTS runs_by_worker ON runs(worker_id, state);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    pool_id TEXT,
    worker_id TEXT,
    run_id TEXT,
    fields TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    worker_id TEXT NOT NULL,
    type TEXT NOT NULL,
    run_id TEXT,
    body TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(sent_at, id);
CREATE TABLE IF NOT EXISTS run_phases (
    run_id TEXT NOT NULL REFERENCES runs(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    started_at REAL NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS run_outputs (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    outputs TEXT NOT NULL,
    truncated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS plans (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    apply_run_id TEXT NOT NULL UNIQUE,
    commit_sha TEXT NOT NULL,
    apply_spec_sha256 TEXT NOT NULL,
    apply_envelope BLOB NOT NULL,
    apply_manifest BLOB NOT NULL,
    apply_envelope_expires_at REAL NOT NULL,
    artifact_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS audit_witnesses (
    key_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    pool_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    record TEXT NOT NULL,
    received_at REAL NOT NULL,
    exported_at REAL,
    PRIMARY KEY (key_id, seq)
);
CREATE INDEX IF NOT EXISTS audit_witnesses_by_worker ON audit_witnesses(worker_id, seq);
"""
#: Witness records the store keeps per worker (the newest; object storage keeps them all).
MAX_WITNESSES_PER_WORKER: Final = 1000

_RUN_COLUMNS: Final = (
    "id, pool_id, state, key_id, envelope_expires_at, created_at, updated_at, worker_id, "
    "lease_id, lease_expires_at, attempts, reason, message, exit_code, cancel_requested, "
    "started_at, finished_at"
)
_WORKER_COLUMNS: Final = (
    "id, pool_id, state, drained, max_concurrent_runs, last_heartbeat_at, metadata, version, "
    "registered_at, gone_at"
)


@dataclass(frozen=True, kw_only=True)
class PoolRecord:
    id: str
    name: str
    certificate_pem: bytes
    certificate_serial: str
    certificate_fingerprint: str
    key_id: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, kw_only=True)
class WorkerRecord:
    """A worker with what ``workers list`` shows besides dispatch's view."""

    worker: Worker
    metadata: Mapping[str, str]
    version: str
    registered_at: float


@dataclass(frozen=True, kw_only=True)
class RunDetails:
    """A run with the columns dispatch does not need."""

    run: Run
    spec_sha256: str
    log_chunks: int


@dataclass(frozen=True, kw_only=True)
class PhaseRecord:
    """One phase of a run as the control plane recorded it (``started_at``: the worker's
    clock; ``recorded_at``: the control plane's)."""

    index: int
    name: str
    started_at: float
    recorded_at: float


@dataclass(frozen=True, kw_only=True)
class PlanRecord:
    """A confirmed run's two halves: the planning run ``run_id`` and its applying run, sealed
    at submit and queued only on confirm; ``artifact_sha256`` once the plan is stored."""

    run_id: str
    apply_run_id: str
    commit_sha: str
    apply_spec_sha256: str
    apply_envelope: bytes
    apply_manifest: bytes
    apply_envelope_expires_at: float
    artifact_sha256: str | None


@dataclass(frozen=True, kw_only=True)
class OutboxMessage:
    id: int
    worker_id: str
    pool_id: str | None
    type: str
    run_id: str | None
    body: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class RevokedCertificate:
    serial: str
    pool_id: str
    fingerprint: str
    revoked_at: float


def _run_from_row(row: Sequence[Any]) -> Run:
    return Run(
        id=row[0],
        pool_id=row[1],
        state=RunState(row[2]),
        key_id=row[3],
        envelope_expires_at=row[4],
        created_at=row[5],
        updated_at=row[6],
        worker_id=row[7],
        lease_id=row[8],
        lease_expires_at=row[9],
        attempts=row[10],
        reason=row[11],
        message=row[12],
        exit_code=row[13],
        cancel_requested=bool(row[14]),
        started_at=row[15],
        finished_at=row[16],
    )


def _worker_record_from_row(row: Sequence[Any]) -> WorkerRecord:
    return WorkerRecord(
        worker=Worker(
            id=row[0],
            pool_id=row[1],
            state=WorkerState(row[2]),
            drained=bool(row[3]),
            max_concurrent_runs=row[4],
            last_heartbeat_at=row[5],
            gone_at=row[9],
        ),
        metadata=json.loads(row[6]),
        version=row[7],
        registered_at=row[8],
    )


def _pool_from_row(row: Sequence[Any]) -> PoolRecord:
    return PoolRecord(
        id=row[0],
        name=row[1],
        certificate_pem=row[2].encode("ascii"),
        certificate_serial=row[3],
        certificate_fingerprint=row[4],
        key_id=row[5],
        created_at=row[6],
        updated_at=row[7],
    )


_POOL_COLUMNS: Final = (
    "id, name, certificate_pem, certificate_serial, certificate_fingerprint, key_id, "
    "created_at, updated_at"
)


def _create_private_file(path: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, flags, STORE_FILE_MODE))


def current_certificate_serials(path: Path) -> dict[str, int]:
    """``{pool_id: serial}`` of every pool's current certificate, read on a fresh read-only
    connection (the long-poll server's thread asks for it; the store's own connection belongs
    to the serve loop's thread)."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {path}", hint="Check the state directory") from exc
    try:
        rows = db.execute("SELECT id, certificate_serial FROM pools").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the pools in {path}", hint="Check the store") from exc
    finally:
        db.close()
    return {str(pool_id): int(str(serial), 16) for pool_id, serial in rows}


def retired_certificate_serials(path: Path, *, since: float) -> dict[tuple[str, int], float]:
    """``{(pool_id, serial): revoked_at}`` of certificates revoked (by ``pool reset``) at or
    after ``since`` (Unix seconds), read like :func:`current_certificate_serials`."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {path}", hint="Check the state directory") from exc
    try:
        rows = db.execute(
            "SELECT pool_id, serial, revoked_at FROM revoked_certificates WHERE revoked_at >= ?",
            (since,),
        ).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the revocations in {path}", hint="Check the store") from exc
    finally:
        db.close()
    return {(str(pool), int(str(serial), 16)): float(at) for pool, serial, at in rows}


class SqliteOutboxJournal:
    """The transport's outbox of unacknowledged critical messages, durable in the store's
    database (table ``transport_outbox``), so a control-plane restart neither loses a message
    sent to a worker (``start``, ``cancel``…) nor sends it under a new id: the same bytes go
    out again after the restart and the worker drops what it already had as a duplicate.

    It has its own connection; the transport calls it under its lock, from either thread.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=10.0, check_same_thread=False
            )
            self._db.execute("PRAGMA busy_timeout = 10000")
            # NORMAL in WAL: a write survives a crash or kill of serve (what the journal is
            # for) without an fsync per message and per ack on the server's event loop; a
            # power cut can lose the last transactions (the worker then gets the message from
            # the store's outbox again, or the lease expires).
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS transport_outbox (n INTEGER PRIMARY KEY "
                "AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE, pool_id TEXT NOT NULL, "
                "worker_id TEXT NOT NULL, payload BLOB NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the transport journal in {path}: {type(exc).__name__}",
                hint="Check the store file",
            ) from exc

    def keep(self, outgoing: Outgoing) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO transport_outbox(message_id, pool_id, worker_id, payload) "
            "VALUES (?, ?, ?, ?)",
            (
                outgoing.message.id,
                outgoing.peer.pool_id,
                outgoing.peer.worker_id,
                outgoing.payload,
            ),
        )

    def forget(self, message_ids: list[str]) -> None:
        self._db.executemany(
            "DELETE FROM transport_outbox WHERE message_id = ?", [(i,) for i in message_ids]
        )

    def load(self) -> list[tuple[WorkerAddress, bytes]]:
        rows = self._db.execute(
            "SELECT pool_id, worker_id, payload FROM transport_outbox ORDER BY n"
        ).fetchall()
        return [
            (WorkerAddress(pool_id=str(p), worker_id=str(w)), bytes(payload))
            for p, w, payload in rows
        ]

    def close(self) -> None:
        self._db.close()


class Store:
    """The SQLite store. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if create:
            try:
                _create_private_file(path)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store {path}: {exc.strerror or type(exc).__name__}",
                    hint="Check the state directory exists and is writable",
                ) from exc
        elif not path.is_file():
            raise StoreError(
                f"the store {path} does not exist",
                hint="Run `hardened-launcher controlplane init --dir DIR` first",
                reason="store_missing",
            )
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) below.
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA synchronous = FULL")
            # executescript commits on its own; every statement is idempotent.
            self._db.executescript(_SCHEMA)
            self._add_missing_columns()
            with self._transaction() as db:
                db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the store {path}: {type(exc).__name__}",
                hint="Check the file is the control plane's store and the disk is healthy",
                detail=str(exc),
            ) from exc
        # WAL and shared-memory side files inherit the umask: keep them private as well.
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            with contextlib.suppress(OSError):
                side.chmod(STORE_FILE_MODE)

    def _add_missing_columns(self) -> None:
        """Columns added after a store was first created (``CREATE TABLE IF NOT EXISTS``
        leaves an existing table as it is)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(workers)").fetchall()}
        if "gone_at" not in columns:
            try:
                self._db.execute("ALTER TABLE workers ADD COLUMN gone_at REAL")
            except sqlite3.OperationalError:
                # Another process (serve and a CLI command) added it at the same moment.
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(workers)")}
                if "gone_at" not in columns:
                    raise
        runs = {row[1] for row in self._db.execute("PRAGMA table_info(runs)").fetchall()}
        if "manifest" not in runs:
            # Runs queued before the column existed have no manifest: their assignments carry an
            # empty one, which every launcher refuses (ticket_invalid); resubmit them.
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                self._db.execute("ALTER TABLE runs ADD COLUMN manifest BLOB NOT NULL DEFAULT x''")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot start a store transaction: {type(exc).__name__}",
                hint="Another process may hold the store locked; try again",
                detail=str(exc),
            ) from exc
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise StoreError(
                f"cannot commit to the store: {type(exc).__name__}", detail=str(exc)
            ) from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store query failed: {type(exc).__name__}", detail=str(exc)) from exc

    def change_counter(self) -> int:
        """A number that changes when another connection commits to the store (``run submit``,
        ``run cancel``…): SQLite's ``PRAGMA data_version``, cheap to poll. ``serve`` watches it
        to dispatch a new run at once instead of on its next tick."""
        return int(self._query("PRAGMA data_version")[0][0])

    @staticmethod
    def _event(
        db: sqlite3.Connection,
        kind: str,
        *,
        at: float,
        pool_id: str | None = None,
        worker_id: str | None = None,
        run_id: str | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        db.execute(
            "INSERT INTO events(at, kind, pool_id, worker_id, run_id, fields) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (at, kind, pool_id, worker_id, run_id, json.dumps(dict(fields or {}))),
        )

    @staticmethod
    def _enqueue(db: sqlite3.Connection, notice: Notice, *, at: float) -> None:
        db.execute(
            "INSERT INTO outbox(worker_id, type, run_id, body, created_at) VALUES (?, ?, ?, ?, ?)",
            (
                notice.worker_id,
                notice.type,
                notice.run_id,
                json.dumps({"lease_id": notice.lease_id} if notice.lease_id else {}),
                at,
            ),
        )

    # -- pools ---------------------------------------------------------------------------

    def add_pool(
        self,
        *,
        pool_id: str,
        name: str,
        certificate_pem: bytes,
        certificate_serial: str,
        certificate_fingerprint: str,
        key_id: str,
        now: float,
    ) -> PoolRecord:
        with self._transaction() as db:
            if db.execute(
                "SELECT 1 FROM pools WHERE id = ? OR name = ?", (pool_id, name)
            ).fetchone():
                raise ConflictError(
                    f"a pool named {name!r} already exists",
                    hint="Use `pool reset` to re-issue its certificate, or choose another name",
                    reason="pool_exists",
                )
            db.execute(
                f"INSERT INTO pools({_POOL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed column list
                (
                    pool_id,
                    name,
                    certificate_pem.decode("ascii"),
                    certificate_serial,
                    certificate_fingerprint,
                    key_id,
                    now,
                    now,
                ),
            )
            self._event(db, "pool.created", at=now, pool_id=pool_id)
        return self.get_pool(name)

    def get_pool(self, name_or_id: str) -> PoolRecord:
        rows = self._query(
            f"SELECT {_POOL_COLUMNS} FROM pools WHERE name = ? OR id = ?",  # noqa: S608
            (name_or_id, name_or_id),
        )
        if not rows:
            raise NotFoundError(
                f"no pool named {name_or_id!r}",
                hint="`hardened-launcher controlplane pool list` shows the pools",
                reason="pool_not_found",
            )
        return _pool_from_row(rows[0])

    def list_pools(self) -> list[PoolRecord]:
        rows = self._query(f"SELECT {_POOL_COLUMNS} FROM pools ORDER BY name")  # noqa: S608
        return [_pool_from_row(row) for row in rows]

    def replace_pool_certificate(
        self,
        pool_id: str,
        *,
        certificate_pem: bytes,
        certificate_serial: str,
        certificate_fingerprint: str,
        key_id: str,
        now: float,
    ) -> RevokedCertificate:
        """Install a new certificate and record the old one as revoked, in one transaction."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT certificate_serial, certificate_fingerprint FROM pools WHERE id = ?",
                (pool_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no pool {pool_id!r}", reason="pool_not_found")
            db.execute(
                "INSERT OR IGNORE INTO revoked_certificates(serial, pool_id, fingerprint, "
                "revoked_at) VALUES (?, ?, ?, ?)",
                (row[0], pool_id, row[1], now),
            )
            db.execute(
                "UPDATE pools SET certificate_pem = ?, certificate_serial = ?, "
                "certificate_fingerprint = ?, key_id = ?, updated_at = ? WHERE id = ?",
                (
                    certificate_pem.decode("ascii"),
                    certificate_serial,
                    certificate_fingerprint,
                    key_id,
                    now,
                    pool_id,
                ),
            )
            self._event(
                db, "pool.reset", at=now, pool_id=pool_id, fields={"revoked_serial": row[0]}
            )
        return RevokedCertificate(
            serial=row[0], pool_id=pool_id, fingerprint=row[1], revoked_at=now
        )

    def revoked_certificates(self) -> list[RevokedCertificate]:
        rows = self._query(
            "SELECT serial, pool_id, fingerprint, revoked_at FROM revoked_certificates "
            "ORDER BY revoked_at, serial"
        )
        return [
            RevokedCertificate(serial=r[0], pool_id=r[1], fingerprint=r[2], revoked_at=r[3])
            for r in rows
        ]

    # -- workers -------------------------------------------------------------------------

    def register_worker(
        self,
        *,
        worker_id: str,
        pool_id: str,
        metadata: Mapping[str, str],
        version: str,
        max_concurrent_runs: int,
        now: float,
    ) -> bool:
        """Insert or refresh a worker. False (nothing written) if the id belongs to another pool.

        A worker that registers again keeps its operator drain flag and its runs: a launcher
        registers again after every reconnect, and its in-flight runs survive broker outages.
        """
        with self._transaction() as db:
            row = db.execute("SELECT pool_id FROM workers WHERE id = ?", (worker_id,)).fetchone()
            if row is not None and row[0] != pool_id:
                self._event(
                    db,
                    "worker.pool_mismatch",
                    at=now,
                    pool_id=pool_id,
                    worker_id=worker_id,
                )
                return False
            if row is None:
                db.execute(
                    "INSERT INTO workers(id, pool_id, metadata, version, max_concurrent_runs, "
                    "state, drained, registered_at, last_heartbeat_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                    (
                        worker_id,
                        pool_id,
                        json.dumps(dict(metadata), sort_keys=True),
                        version,
                        max_concurrent_runs,
                        WorkerState.IDLE.value,
                        now,
                        now,
                    ),
                )
            else:
                db.execute(
                    "UPDATE workers SET metadata = ?, version = ?, max_concurrent_runs = ?, "
                    "state = CASE WHEN state = 'GONE' THEN 'IDLE' ELSE state END, "
                    "gone_at = NULL, registered_at = ?, last_heartbeat_at = ? WHERE id = ?",
                    (
                        json.dumps(dict(metadata), sort_keys=True),
                        version,
                        max_concurrent_runs,
                        now,
                        now,
                        worker_id,
                    ),
                )
            self._event(db, "worker.registered", at=now, pool_id=pool_id, worker_id=worker_id)
        return True

    def record_heartbeat(self, worker_id: str, *, state: WorkerState, now: float) -> bool:
        """Refresh a known worker's heartbeat (a GONE worker comes back). False if unknown."""
        with self._transaction() as db:
            row = db.execute("SELECT state FROM workers WHERE id = ?", (worker_id,)).fetchone()
            if row is None:
                return False
            db.execute(
                "UPDATE workers SET state = ?, gone_at = NULL, last_heartbeat_at = ? WHERE id = ?",
                (state.value, now, worker_id),
            )
            if row[0] == WorkerState.GONE.value:
                self._event(db, "worker.returned", at=now, worker_id=worker_id)
        return True

    def get_worker(self, worker_id: str) -> WorkerRecord:
        rows = self._query(
            f"SELECT {_WORKER_COLUMNS} FROM workers WHERE id = ?",  # noqa: S608
            (worker_id,),
        )
        if not rows:
            raise NotFoundError(
                f"no worker {worker_id!r}",
                hint="`hardened-launcher controlplane workers list` shows the workers",
                reason="worker_not_found",
            )
        return _worker_record_from_row(rows[0])

    def find_worker(self, worker_id: str) -> WorkerRecord | None:
        try:
            return self.get_worker(worker_id)
        except NotFoundError:
            return None

    def list_workers(self, *, pool_id: str | None = None) -> list[WorkerRecord]:
        sql = f"SELECT {_WORKER_COLUMNS} FROM workers"  # noqa: S608
        params: tuple[str, ...] = ()
        if pool_id is not None:
            sql += " WHERE pool_id = ?"
            params = (pool_id,)
        rows = self._query(sql + " ORDER BY pool_id, id", params)
        return [_worker_record_from_row(row) for row in rows]

    def set_worker_drained(self, worker_id: str, *, drained: bool, now: float) -> None:
        """Set the operator's drain flag and queue ``drain``/``undrain`` for the worker."""
        record = self.get_worker(worker_id)
        with self._transaction() as db:
            db.execute("UPDATE workers SET drained = ? WHERE id = ?", (int(drained), worker_id))
            kind = "drain" if drained else "undrain"
            self._enqueue(db, Notice(worker_id, kind), at=now)
            self._event(
                db, f"worker.{kind}", at=now, pool_id=record.worker.pool_id, worker_id=worker_id
            )

    def cycle_pool(self, pool_id: str, *, now: float) -> list[str]:
        """Queue ``cycle`` for every live worker of the pool; returns their ids."""
        with self._transaction() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM workers WHERE pool_id = ? AND state != 'GONE' ORDER BY id",
                    (pool_id,),
                ).fetchall()
            ]
            for worker_id in ids:
                self._enqueue(db, Notice(worker_id, "cycle"), at=now)
            self._event(db, "pool.cycle", at=now, pool_id=pool_id, fields={"workers": len(ids)})
        return ids

    def mark_worker_gone(self, worker: Worker, *, now: float, reason: str) -> bool:
        """Mark a worker GONE if it is still exactly as seen (not heard from since)."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE workers SET state = 'GONE', gone_at = ? WHERE id = ? AND state != 'GONE' "
                "AND last_heartbeat_at = ?",
                (now, worker.id, worker.last_heartbeat_at),
            ).rowcount
            if changed:
                self._event(
                    db,
                    "worker.gone",
                    at=now,
                    pool_id=worker.pool_id,
                    worker_id=worker.id,
                    fields={"reason": reason},
                )
        return bool(changed)

    # -- runs ----------------------------------------------------------------------------

    def add_run(
        self,
        *,
        run_id: str,
        pool_id: str,
        spec_sha256: str,
        key_id: str,
        envelope: bytes,
        envelope_expires_at: float,
        now: float,
        manifest: bytes = b"",
    ) -> Run:
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                raise ConflictError(
                    f"a run with id {run_id!r} already exists",
                    hint="Give the run spec a new run_id; run ids are never reused",
                    reason="run_exists",
                )
            db.execute(
                "INSERT INTO runs(id, pool_id, spec_sha256, key_id, envelope, "
                "envelope_expires_at, manifest, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'QUEUED', ?, ?)",
                (
                    run_id,
                    pool_id,
                    spec_sha256,
                    key_id,
                    envelope,
                    envelope_expires_at,
                    manifest,
                    now,
                    now,
                ),
            )
            self._event(db, "run.submitted", at=now, pool_id=pool_id, run_id=run_id)
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> Run:
        return self.get_run_details(run_id).run

    def get_run_details(self, run_id: str) -> RunDetails:
        rows = self._query(
            f"SELECT {_RUN_COLUMNS}, spec_sha256, log_chunks FROM runs WHERE id = ?",  # noqa: S608
            (run_id,),
        )
        if not rows:
            raise NotFoundError(
                f"no run {run_id!r}",
                hint="`hardened-launcher controlplane runs list` shows the runs",
                reason="run_not_found",
            )
        row = rows[0]
        return RunDetails(run=_run_from_row(row), spec_sha256=row[17], log_chunks=row[18])

    def find_run(self, run_id: str) -> Run | None:
        try:
            return self.get_run(run_id)
        except NotFoundError:
            return None

    def get_envelope(self, run_id: str) -> bytes:
        rows = self._query("SELECT envelope FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise NotFoundError(f"no run {run_id!r}", reason="run_not_found")
        return bytes(rows[0][0])

    def get_manifest(self, run_id: str) -> bytes:
        """The run's manifest (canonical JSON, no secret), signed into each assignment."""
        rows = self._query("SELECT manifest FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise NotFoundError(f"no run {run_id!r}", reason="run_not_found")
        return bytes(rows[0][0])

    def list_runs(
        self,
        *,
        pool_id: str | None = None,
        states: frozenset[RunState] | None = None,
        worker_id: str | None = None,
    ) -> list[Run]:
        clauses: list[str] = []
        params: list[Any] = []
        if pool_id is not None:
            clauses.append("pool_id = ?")
            params.append(pool_id)
        if worker_id is not None:
            clauses.append("worker_id = ?")
            params.append(worker_id)
        if states is not None:
            ordered = sorted(s.value for s in states)
            clauses.append(f"state IN ({', '.join('?' for _ in ordered)})")
            params.extend(ordered)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY created_at, id",  # noqa: S608
            params,
        )
        return [_run_from_row(row) for row in rows]

    def held_counts(self) -> dict[str, int]:
        """Runs ASSIGNED or RUNNING per worker id."""
        rows = self._query(
            "SELECT worker_id, COUNT(*) FROM runs WHERE state IN ('ASSIGNED', 'RUNNING') "
            "AND worker_id IS NOT NULL GROUP BY worker_id"
        )
        return {row[0]: row[1] for row in rows}

    def apply(self, transition: Transition) -> bool:
        """Apply a dispatch transition if the run is still in ``before``; queue its notices.

        Returns False, writing nothing, when another transition got there first.
        """
        before, after = transition.before, transition.after
        if before.id != after.id:
            raise ValueError("a transition cannot change the run id")
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE runs SET state = ?, worker_id = ?, lease_id = ?, lease_expires_at = ?, "
                "attempts = ?, reason = ?, message = ?, exit_code = ?, cancel_requested = ?, "
                "updated_at = ?, started_at = ?, finished_at = ? "
                "WHERE id = ? AND state = ? AND worker_id IS ? AND lease_id IS ? "
                "AND cancel_requested = ?",
                (
                    after.state.value,
                    after.worker_id,
                    after.lease_id,
                    after.lease_expires_at,
                    after.attempts,
                    after.reason,
                    after.message,
                    after.exit_code,
                    int(after.cancel_requested),
                    after.updated_at,
                    after.started_at,
                    after.finished_at,
                    before.id,
                    before.state.value,
                    before.worker_id,
                    before.lease_id,
                    int(before.cancel_requested),
                ),
            ).rowcount
            if not changed:
                return False
            fields: dict[str, Any] = {"from": before.state.value, "to": after.state.value}
            if after.reason:
                fields["reason"] = after.reason
            self._event(
                db,
                transition.event,
                at=after.updated_at,
                pool_id=after.pool_id,
                worker_id=after.worker_id or before.worker_id,
                run_id=after.id,
                fields=fields,
            )
            for notice in transition.notices:
                self._enqueue(db, notice, at=after.updated_at)
        return True

    def enqueue(self, notices: Sequence[Notice], *, now: float) -> None:
        """Queue messages that go out without a run transition (fencing cancels, drain...)."""
        if not notices:
            return
        with self._transaction() as db:
            for notice in notices:
                self._enqueue(db, notice, at=now)

    def enqueue_message(
        self, worker_id: str, message_type: str, body: Mapping[str, Any], *, now: float
    ) -> None:
        """Queue a message with a ready body (``log_urls``)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO outbox(worker_id, type, run_id, body, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (worker_id, message_type, body.get("run_id"), json.dumps(dict(body)), now),
            )

    def pending_messages(self, *, limit: int = 100) -> list[OutboxMessage]:
        rows = self._query(
            "SELECT o.id, o.worker_id, w.pool_id, o.type, o.run_id, o.body FROM outbox o "
            "LEFT JOIN workers w ON w.id = o.worker_id "
            "WHERE o.sent_at IS NULL ORDER BY o.id LIMIT ?",
            (limit,),
        )
        return [
            OutboxMessage(
                id=r[0],
                worker_id=r[1],
                pool_id=r[2],
                type=r[3],
                run_id=r[4],
                body=json.loads(r[5]),
            )
            for r in rows
        ]

    def mark_sent(self, message_id: int, *, now: float) -> None:
        with self._transaction() as db:
            db.execute("UPDATE outbox SET sent_at = ? WHERE id = ?", (now, message_id))

    def reserve_log_chunks(self, run_id: str, *, up_to: int) -> None:
        """Remember that URLs for chunks below ``up_to`` were handed out."""
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET log_chunks = MAX(log_chunks, ?) WHERE id = ?", (up_to, run_id)
            )

    # -- phases, outputs, plans ------------------------------------------------------------

    def record_phase(
        self, run: Run, *, index: int, name: str, started_at: float, now: float
    ) -> bool:
        """Record that ``run`` entered phase ``index`` (once; False when already recorded)."""
        with self._transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO run_phases(run_id, idx, name, started_at, recorded_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (run.id, index, name, started_at, now),
            ).rowcount
            if inserted:
                self._event(
                    db,
                    "run.phase",
                    at=now,
                    pool_id=run.pool_id,
                    worker_id=run.worker_id,
                    run_id=run.id,
                    fields={"phase": name},
                )
        return bool(inserted)

    def phases(self, run_id: str) -> list[PhaseRecord]:
        rows = self._query(
            "SELECT idx, name, started_at, recorded_at FROM run_phases WHERE run_id = ? "
            "ORDER BY idx",
            (run_id,),
        )
        return [PhaseRecord(index=r[0], name=r[1], started_at=r[2], recorded_at=r[3]) for r in rows]

    def last_phase_index(self, run_id: str) -> int | None:
        rows = self._query("SELECT MAX(idx) FROM run_phases WHERE run_id = ?", (run_id,))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def current_phases(self) -> dict[str, str]:
        """``{run_id: name of the latest recorded phase}`` (``runs list``)."""
        rows = self._query(
            "SELECT p.run_id, p.name FROM run_phases p JOIN (SELECT run_id, MAX(idx) AS idx "
            "FROM run_phases GROUP BY run_id) m ON m.run_id = p.run_id AND m.idx = p.idx"
        )
        return {str(r[0]): str(r[1]) for r in rows}

    def record_outputs(self, run_id: str, outputs: Mapping[str, str], *, truncated: bool) -> None:
        """Keep a run's outputs (base64, already redacted and bounded by the protocol)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO run_outputs(run_id, outputs, truncated) VALUES (?, ?, ?)",
                (run_id, json.dumps(dict(outputs), sort_keys=True), int(truncated)),
            )

    def outputs(self, run_id: str) -> tuple[dict[str, str], bool] | None:
        rows = self._query("SELECT outputs, truncated FROM run_outputs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        return dict(json.loads(rows[0][0])), bool(rows[0][1])

    def add_plan(self, plan: PlanRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO plans(run_id, apply_run_id, commit_sha, apply_spec_sha256, "
                "apply_envelope, apply_manifest, apply_envelope_expires_at, artifact_sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    plan.run_id,
                    plan.apply_run_id,
                    plan.commit_sha,
                    plan.apply_spec_sha256,
                    plan.apply_envelope,
                    plan.apply_manifest,
                    plan.apply_envelope_expires_at,
                ),
            )

    _PLAN_COLUMNS: Final = (
        "run_id, apply_run_id, commit_sha, apply_spec_sha256, apply_envelope, apply_manifest, "
        "apply_envelope_expires_at, artifact_sha256"
    )

    def _plan_where(self, column: str, run_id: str) -> PlanRecord | None:
        rows = self._query(
            f"SELECT {self._PLAN_COLUMNS} FROM plans WHERE {column} = ?",  # noqa: S608
            (run_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return PlanRecord(
            run_id=r[0],
            apply_run_id=r[1],
            commit_sha=r[2],
            apply_spec_sha256=r[3],
            apply_envelope=bytes(r[4]),
            apply_manifest=bytes(r[5]),
            apply_envelope_expires_at=r[6],
            artifact_sha256=r[7],
        )

    def plan_of(self, run_id: str) -> PlanRecord | None:
        """The plan record of a planning run (None: not a planning run)."""
        return self._plan_where("run_id", run_id)

    def plan_applied_by(self, run_id: str) -> PlanRecord | None:
        """The plan record an applying run applies (None: not an applying run)."""
        return self._plan_where("apply_run_id", run_id)

    def set_plan_artifact(self, run_id: str, sha256: str) -> None:
        """The digest of the sealed plan the planning run stored (first report wins)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE plans SET artifact_sha256 = ? WHERE run_id = ? AND artifact_sha256 IS NULL",
                (sha256, run_id),
            )

    def confirm(self, transition: Transition, plan: PlanRecord) -> bool:
        """Apply UNCONFIRMED -> CONFIRMED and queue the applying run, in one transaction."""
        before, after = transition.before, transition.after
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE runs SET state = ?, reason = ?, updated_at = ?, finished_at = ? "
                "WHERE id = ? AND state = ?",
                (
                    after.state.value,
                    after.reason,
                    after.updated_at,
                    after.finished_at,
                    before.id,
                    before.state.value,
                ),
            ).rowcount
            if not changed:
                return False
            row = db.execute(
                "SELECT pool_id, key_id FROM runs WHERE id = ?", (before.id,)
            ).fetchone()
            db.execute(
                "INSERT INTO runs(id, pool_id, spec_sha256, key_id, envelope, "
                "envelope_expires_at, manifest, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'QUEUED', ?, ?)",
                (
                    plan.apply_run_id,
                    row[0],
                    plan.apply_spec_sha256,
                    row[1],
                    plan.apply_envelope,
                    plan.apply_envelope_expires_at,
                    plan.apply_manifest,
                    after.updated_at,
                    after.updated_at,
                ),
            )
            self._event(
                db,
                transition.event,
                at=after.updated_at,
                pool_id=after.pool_id,
                run_id=after.id,
                fields={"apply_run": plan.apply_run_id, "plan_sha256": plan.artifact_sha256},
            )
            self._event(
                db,
                "run.submitted",
                at=after.updated_at,
                pool_id=after.pool_id,
                run_id=plan.apply_run_id,
                fields={"plan_of": plan.run_id},
            )
        return True

    def record_event(
        self,
        kind: str,
        *,
        now: float,
        pool_id: str | None = None,
        worker_id: str | None = None,
        run_id: str | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        with self._transaction() as db:
            self._event(
                db,
                kind,
                at=now,
                pool_id=pool_id,
                worker_id=worker_id,
                run_id=run_id,
                fields=fields,
            )

    def record_witness(
        self, *, key_id: str, seq: int, pool_id: str, worker_id: str, record: str, now: float
    ) -> str:
        """Keep one audit witness record (docs/audit.md). Returns ``new``, ``known`` (the same
        record again) or ``conflict`` (another record for the same log place: the log forked;
        the first is kept and the conflict is an event). Only the newest
        :data:`MAX_WITNESSES_PER_WORKER` of a worker are kept."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT record FROM audit_witnesses WHERE key_id = ? AND seq = ?", (key_id, seq)
            ).fetchone()
            if row is not None:
                if row[0] == record:
                    return "known"
                self._event(
                    db,
                    "audit.witness_conflict",
                    at=now,
                    pool_id=pool_id,
                    worker_id=worker_id,
                    fields={"key_id": key_id, "seq": seq},
                )
                return "conflict"
            db.execute(
                "INSERT INTO audit_witnesses(key_id, seq, pool_id, worker_id, record, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, seq, pool_id, worker_id, record, now),
            )
            db.execute(
                "DELETE FROM audit_witnesses WHERE worker_id = ? AND seq < (SELECT seq FROM "
                "audit_witnesses WHERE worker_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (worker_id, worker_id, MAX_WITNESSES_PER_WORKER - 1),
            )
        return "new"

    def witnesses(self, *, key_id: str | None = None) -> list[str]:
        """Stored witness records (canonical JSON), oldest first."""
        if key_id is None:
            rows = self._query("SELECT record FROM audit_witnesses ORDER BY key_id, seq")
        else:
            rows = self._query(
                "SELECT record FROM audit_witnesses WHERE key_id = ? ORDER BY seq", (key_id,)
            )
        return [str(r[0]) for r in rows]

    def unexported_witnesses(self, *, limit: int = 1000) -> list[tuple[str, int, str]]:
        """``(key_id, seq, record)`` not yet copied to object storage, oldest first."""
        rows = self._query(
            "SELECT key_id, seq, record FROM audit_witnesses WHERE exported_at IS NULL "
            "ORDER BY received_at, key_id, seq LIMIT ?",
            (limit,),
        )
        return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    def mark_witness_exported(self, key_id: str, seq: int, *, now: float) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE audit_witnesses SET exported_at = ? WHERE key_id = ? AND seq = ?",
                (now, key_id, seq),
            )

    def events(self, *, run_id: str | None = None) -> list[tuple[float, str, dict[str, Any]]]:
        sql = "SELECT at, kind, fields FROM events"
        params: tuple[str, ...] = ()
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params = (run_id,)
        rows = self._query(sql + " ORDER BY id", params)
        return [(r[0], r[1], json.loads(r[2])) for r in rows]
