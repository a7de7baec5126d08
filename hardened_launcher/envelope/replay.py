"""Replay caches: a run id opens at most once per launcher while its envelope could be valid.

The cache is the test seam: :class:`ReplayCache` is a small protocol with an in-memory
implementation (tests, single-shot tools) and a SQLite one (the daemon) that survives restarts.

Entries are kept until ``keep_until`` (``open_run_state`` passes the envelope's ``expires_at``
plus the clock skew: the last moment the same envelope could pass the time check) and pruned
after that. Both operations take ``now`` so that the cache and the time check agree on the clock.

Every failure to read or write the SQLite cache is a :class:`ReplayCacheError`
(``replay_cache_unavailable``): the caller must then refuse the envelope (fail closed).
"""

from __future__ import annotations

import math
import os
import sqlite3
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from hardened_launcher.envelope.errors import (
    EnvelopeConfigurationError,
    EnvelopeError,
    Reason,
    ReplayCacheError,
)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_SECONDS = 5.0
_CACHE_HINT = "check the disk and the permissions of the replay cache file, then retry the run"


class ReplayCache(Protocol):
    """Remembers which run ids were opened.

    Implementations must make :meth:`check_and_record` atomic: of two concurrent callers with
    the same run id (threads or processes sharing the cache), exactly one succeeds.
    """

    def check_not_recorded(self, run_id: str, *, now: datetime | None = None) -> None:
        """Raise ``EnvelopeError(envelope_replayed)`` if ``run_id`` is recorded and live."""
        ...

    def check_and_record(
        self, run_id: str, keep_until: datetime, *, now: datetime | None = None
    ) -> None:
        """Record ``run_id`` until ``keep_until``, or raise ``envelope_replayed`` if present."""
        ...


def _replayed(run_id: str) -> EnvelopeError:
    return EnvelopeError(
        f"run {run_id} was already opened on this launcher; the envelope is a replay",
        reason=Reason.REPLAYED,
        hint="if the run really has to run again, have the control plane dispatch it anew",
    )


def _seconds_floor(moment: datetime | None) -> int:
    if moment is None:
        moment = datetime.now(UTC)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("replay cache times must be timezone-aware datetimes")
    return math.floor(moment.timestamp())


def _seconds_ceil(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("replay cache times must be timezone-aware datetimes")
    return math.ceil(moment.timestamp())


class MemoryReplayCache:
    """A process-local cache: forgets everything when the process exits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keep_until: dict[str, int] = {}

    def check_not_recorded(self, run_id: str, *, now: datetime | None = None) -> None:
        now_s = _seconds_floor(now)
        with self._lock:
            keep = self._keep_until.get(run_id)
        if keep is not None and keep >= now_s:
            raise _replayed(run_id)

    def check_and_record(
        self, run_id: str, keep_until: datetime, *, now: datetime | None = None
    ) -> None:
        now_s = _seconds_floor(now)
        keep_s = _seconds_ceil(keep_until)
        with self._lock:
            self._prune_locked(now_s)
            if run_id in self._keep_until:
                raise _replayed(run_id)
            self._keep_until[run_id] = keep_s

    def prune(self, now: datetime | None = None) -> int:
        """Forget entries whose ``keep_until`` has passed; return how many."""
        with self._lock:
            return self._prune_locked(_seconds_floor(now))

    def _prune_locked(self, now_s: int) -> int:
        stale = [run_id for run_id, keep in self._keep_until.items() if keep < now_s]
        for run_id in stale:
            del self._keep_until[run_id]
        return len(stale)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keep_until)


class SqliteReplayCache:
    """A replay cache in a SQLite file (WAL, synchronous=FULL) that survives restarts.

    The file is created with mode 0600 in a directory with mode 0700 (created if missing).
    An existing directory or file that other users can access is refused
    (``replay_cache_insecure``): whoever can write it can delete entries and re-enable replays.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._conn = self._open(path)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteReplayCache(path={str(self._path)!r})"

    # -- protocol ----------------------------------------------------------------------------
    def check_not_recorded(self, run_id: str, *, now: datetime | None = None) -> None:
        now_s = _seconds_floor(now)
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT 1 FROM seen_runs WHERE run_id = ? AND keep_until >= ?",
                    (run_id, now_s),
                ).fetchone()
        except sqlite3.Error as exc:
            raise self._unavailable("could not be read", exc) from exc
        if row is not None:
            raise _replayed(run_id)

    def check_and_record(
        self, run_id: str, keep_until: datetime, *, now: datetime | None = None
    ) -> None:
        now_s = _seconds_floor(now)
        keep_s = _seconds_ceil(keep_until)
        with self._lock:
            try:
                # IMMEDIATE takes the write lock up front, so the prune, the insert and the
                # primary-key check are one transaction even across processes.
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.execute("DELETE FROM seen_runs WHERE keep_until < ?", (now_s,))
                    self._conn.execute(
                        "INSERT INTO seen_runs (run_id, keep_until, recorded_at) VALUES (?, ?, ?)",
                        (run_id, keep_s, now_s),
                    )
                except sqlite3.IntegrityError:
                    self._conn.execute("ROLLBACK")
                    raise _replayed(run_id) from None
                except BaseException:
                    self._rollback_quietly()
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback_quietly()
                raise self._unavailable("could not be written", exc) from exc

    def prune(self, now: datetime | None = None) -> int:
        """Delete entries whose ``keep_until`` has passed; return how many."""
        now_s = _seconds_floor(now)
        try:
            with self._lock:
                cursor = self._conn.execute("DELETE FROM seen_runs WHERE keep_until < ?", (now_s,))
                return cursor.rowcount
        except sqlite3.Error as exc:
            raise self._unavailable("could not be pruned", exc) from exc

    def __len__(self) -> int:
        try:
            with self._lock:
                count: int = self._conn.execute("SELECT count(*) FROM seen_runs").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._unavailable("could not be read", exc) from exc
        return count

    # -- internals ---------------------------------------------------------------------------
    def _rollback_quietly(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is already broken; the caller reports the original error.
            return

    def _unavailable(self, what: str, exc: BaseException) -> ReplayCacheError:
        return ReplayCacheError(
            f"the replay cache {self._path} {what}; the envelope was not opened",
            hint=_CACHE_HINT,
            detail=f"{type(exc).__name__}: {exc}",
        )

    def _open(self, path: Path) -> sqlite3.Connection:
        try:
            _prepare_directory(path.parent)
            _prepare_file(path)
        except OSError as exc:
            raise self._unavailable("could not be created", exc) from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                str(path),
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
            # FULL: a recorded run id must survive a power loss, or a replay could pass after it.
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"unknown replay cache schema version {version}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS seen_runs ("
                " run_id TEXT PRIMARY KEY NOT NULL,"
                " keep_until INTEGER NOT NULL,"
                " recorded_at INTEGER NOT NULL"
                ") WITHOUT ROWID"
            )
            conn.execute(
                "CREATE INDEX IF NOT EXISTS seen_runs_keep_until ON seen_runs (keep_until)"
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise self._unavailable("could not be opened", exc) from exc
        return conn


def _insecure(path: Path, problem: str, fix: str) -> EnvelopeConfigurationError:
    return EnvelopeConfigurationError(
        f"the replay cache location {path} {problem}",
        reason=Reason.REPLAY_CACHE_INSECURE,
        hint=fix,
    )


def _prepare_directory(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)
    info = directory.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise _insecure(directory, "is not a directory", "point the cache at a directory path")
    if info.st_uid != os.geteuid():
        raise _insecure(
            directory,
            "is owned by another user",
            "use a directory owned by the launcher's user",
        )
    if info.st_mode & 0o077:
        raise _insecure(
            directory,
            f"is accessible by other users (mode {stat.S_IMODE(info.st_mode):o})",
            f"run: chmod 700 {directory}",
        )


def _prepare_file(path: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise _insecure(path, "is not a regular file", "remove it; the cache is recreated")
    if info.st_uid != os.geteuid():
        raise _insecure(path, "is owned by another user", "remove it; the cache is recreated")
    if info.st_mode & 0o077:
        raise _insecure(
            path,
            f"is accessible by other users (mode {stat.S_IMODE(info.st_mode):o})",
            f"run: chmod 600 {path}",
        )
