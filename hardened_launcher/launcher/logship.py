"""Run logs to object storage (presigned PUT URLs per chunk) and to standard output.

:class:`ChunkedLogSink` is a :class:`~hardened_launcher.executor.logsink.LogSink`. The runner
hands it bytes that already went through the redactor; this module never logs, prints or puts
in an error message any of those bytes (nor a presigned URL: it is a short-lived credential).

Chunks
    Both channels go, in arrival order, into one byte stream (as :class:`FileLogSink` does),
    cut into chunks numbered from 0: a chunk is sealed when it reaches ``chunk_bytes`` or when
    its first byte is ``flush_seconds`` old. Chunk ``n`` is object ``runs/<run_id>/chunk-<n:06d>``
    (the control plane chose the key when it presigned the URL).

Spool
    Every byte is appended to ``<spool_dir>/<run_id>/chunk-<n:06d>.part`` (0600) as it arrives,
    so memory stays bounded (one chunk is read back at upload time) and a killed launcher loses
    nothing that reached the page cache. Sealing fsyncs the part and renames it to
    ``chunk-<n:06d>``; a background thread PUTs sealed chunks, lowest number first, and deletes
    each file once the store answered 2xx. ``urls.json`` (0600) keeps the unused URLs so that a
    restarted launcher can use them while they are valid.

Exactly once
    A chunk number maps to one key; a retry PUTs the same bytes to the same key, so a chunk is
    never duplicated under two numbers, and its file is deleted only after success.

Lost lines
    A spool write that fails (disk full) loses the rest of that write; a final seal that fails
    loses the open chunk (its ``.part`` stays on disk, never shipped); an unreadable sealed chunk
    is lost. Each is counted in :attr:`LogShipReport.lost_bytes`, and a report with lost bytes is
    never ``complete`` (the launcher audits ``run.logs_shipped`` with reason ``log_lines_lost``,
    counts ``hl_log_bytes_lost`` and says so in the run's final status message).

Failures
    Network errors and 5xx/408/429 are retried with jittered exponential backoff. Another 4xx
    (403 = expired or forged URL) drops that URL and asks for a fresh one. A chunk without a URL
    stays spooled while ``request_more(from_chunk)`` asks the control plane (debounced).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

from hardened_launcher.errors import InfrastructureError
from hardened_launcher.executor.logsink import Channel
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.private_files import replace_atomically
from hardened_launcher.transport.messages import (
    MAX_CHUNK,
    LogUrl,
    MessageError,
    format_timestamp,
    is_valid_run_id,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_FLUSH_SECONDS",
    "ChunkedLogSink",
    "LogShipReport",
    "StdoutJsonLinesSink",
    "UploadError",
    "Uploader",
    "put_presigned",
    "resume_spooled",
    "spooled_runs",
]

_log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES: Final = 256 * 1024
MIN_CHUNK_BYTES: Final = 1
MAX_CHUNK_BYTES: Final = 16 * 1024 * 1024  # what ``controlplane run logs`` reads back
DEFAULT_FLUSH_SECONDS: Final = 2.0
DEFAULT_CLOSE_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_UPLOAD_TIMEOUT_SECONDS: Final = 30.0
#: URLs held per run ahead of the chunk being written; more are ignored (bounded memory).
MAX_HELD_URLS: Final = 4096
URLS_FILE: Final = "urls.json"

_CHUNK_RE: Final = re.compile(r"chunk-([0-9]{6,10})")
_PART_RE: Final = re.compile(r"chunk-([0-9]{6,10})\.part")


class UploadError(Exception):
    """One PUT failed. ``status`` is the HTTP status, or None for a network-level failure."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def url_rejected(self) -> bool:
        """The store refused this URL itself (expired, forged, wrong key): ask for a new one."""
        return (
            self.status is not None and 400 <= self.status < 500 and self.status not in (408, 429)
        )


#: ``uploader(url, data)`` PUTs ``data`` to ``url``; raises :class:`UploadError` on failure.
Uploader = Callable[[str, bytes], None]


def put_presigned(
    url: str, data: bytes, *, timeout: float = DEFAULT_UPLOAD_TIMEOUT_SECONDS
) -> None:
    """PUT exactly ``data`` to a presigned URL (stdlib only; adds no signed header).

    A SigV4 presigned URL signs ``host`` only, so the Content-Type set here (urllib would
    otherwise send a form type) does not affect the signature.
    """
    if not url.startswith(("https://", "http://")):
        raise UploadError("the log URL is not http(s)")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read(64 * 1024)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(OSError):
            exc.read(64 * 1024)
        raise UploadError(f"the store answered HTTP {exc.code}", status=exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UploadError(f"the store is unreachable ({type(exc).__name__})") from None
    if not 200 <= status < 300:
        raise UploadError(f"the store answered HTTP {status}", status=status)


@dataclass(frozen=True, kw_only=True)
class LogShipReport:
    """Where a run's log chunks stand."""

    run_id: str
    #: Chunks cut so far (numbers ``0 .. chunks-1``).
    chunks: int
    #: Chunks this process uploaded.
    uploaded: int
    #: Chunk numbers sealed on disk and not uploaded yet (in order).
    pending: tuple[int, ...]
    #: Bytes of the pending chunks.
    spooled_bytes: int
    #: Failed PUT attempts (each was retried or is still pending).
    failed_attempts: int
    #: ``close`` was called (or the sink was resumed from the spool) and no part is open.
    closed: bool
    #: Bytes that will never reach object storage (spool write or final seal failed).
    lost_bytes: int = 0

    @property
    def spooled(self) -> int:
        return len(self.pending)

    @property
    def complete(self) -> bool:
        """Every byte the run printed is in object storage."""
        return self.closed and not self.pending and self.lost_bytes == 0


def _chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:06d}"


def _spool_error(action: str, exc: OSError) -> InfrastructureError:
    return InfrastructureError(
        f"cannot {action} in the log spool: {exc.strerror or type(exc).__name__}",
        hint="check that the launcher's spool directory exists, is writable and has space",
        reason="log_spool_unwritable",
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise InfrastructureError(
            f"the log spool {path} is not a directory",
            hint="point the spool at a directory owned by the launcher",
            reason="log_spool_unwritable",
        )


class ChunkedLogSink:
    """A LogSink that ships redacted run output to presigned URLs, spooling every chunk first.

    Thread-safe: ``write`` (the runner), ``add_urls`` (the transport) and the uploader thread
    share one lock. ``request_more`` is called from the uploader thread, never under the lock.
    """

    def __init__(
        self,
        *,
        run_id: str,
        spool_dir: Path,
        initial_urls: Sequence[LogUrl],
        request_more: Callable[[int], None],
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        uploader: Uploader | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: LauncherMetrics | None = None,
        retry_base_seconds: float = 0.25,
        retry_max_seconds: float = 30.0,
        request_interval_seconds: float = 5.0,
        _resume: bool = False,
    ) -> None:
        if not is_valid_run_id(run_id):
            raise ValueError("run_id is not a valid run id")
        if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be from {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES}")
        if flush_seconds <= 0:
            raise ValueError("flush_seconds must be above 0")
        self.run_id = run_id
        self.directory = spool_dir / run_id
        self._request_more = request_more
        self._chunk_bytes = chunk_bytes
        self._flush_seconds = flush_seconds
        self._uploader: Uploader = uploader if uploader is not None else put_presigned
        self._clock = clock
        self._metrics = metrics
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._request_interval = request_interval_seconds
        self._random = random.Random()  # noqa: S311 - jitter, not security

        self._cond = threading.Condition()
        self._urls: dict[int, str] = {}
        self._pending: dict[int, int] = {}  # chunk -> size, sealed and not uploaded
        self._next_chunk = 0  # number of the chunk being (or next to be) written
        self._part_fd: int | None = None
        self._part_size = 0
        self._part_started = 0.0
        self._closed = False
        self._stopped = False
        self._finished = False
        self._uploaded = 0
        self._failed_attempts = 0
        self._lost_bytes = 0
        self._spool_fault_logged = False
        self._consecutive_failures = 0
        self._not_before = 0.0
        self._last_request: tuple[int, float, float] | None = None  # (from, at, interval)

        try:
            _make_private_dir(spool_dir)
            if _resume:
                self._adopt_spool()
            else:
                self.directory.mkdir(mode=0o700)
        except FileExistsError:
            raise InfrastructureError(
                f"the log spool already holds run {run_id}",
                hint="a run id is never reused; resume_spooled() ships what a previous launcher "
                "left there",
                reason="log_spool_conflict",
            ) from None
        except OSError as exc:
            raise _spool_error("create the run's directory", exc) from None
        self._store_urls(initial_urls, persist=True)
        self._thread = threading.Thread(target=self._run, name=f"logship-{run_id}", daemon=True)
        self._thread.start()

    # -- LogSink -----------------------------------------------------------------------------

    def write(self, channel: Channel, data: bytes) -> None:
        """Append already-redacted bytes (both channels into one stream, in arrival order)."""
        del channel
        if not data:
            return
        view = memoryview(data)
        with self._cond:
            if self._closed or self._stopped:
                raise ValueError("write to a closed log sink")
            now = self._clock()
            try:
                if self._part_fd is not None and now - self._part_started >= self._flush_seconds:
                    self._seal()
                while view:
                    if self._part_fd is not None and self._part_size >= self._chunk_bytes:
                        self._seal()  # a seal that failed earlier is tried again first
                    fd = self._part_fd if self._part_fd is not None else self._open_part(now)
                    piece = view[: self._chunk_bytes - self._part_size]
                    written = 0
                    try:
                        while written < len(piece):
                            written += os.write(fd, piece[written:])
                    except OSError as exc:
                        raise _spool_error("append to a log chunk", exc) from None
                    finally:
                        self._part_size += written
                        view = view[written:]
                    if self._part_size >= self._chunk_bytes:
                        self._seal()
            except InfrastructureError as exc:
                if exc.reason != "log_spool_unwritable":
                    raise
                # The run goes on: its outcome is not the log's. The bytes are counted lost
                # (the report is then never complete and the run's status says so); the next
                # write tries the spool again.
                self._lose(len(view))
                if not self._spool_fault_logged:
                    self._spool_fault_logged = True
                    _log.error("run %s: %s; the log is incomplete", self.run_id, exc.message)
            self._cond.notify_all()

    def close(self, timeout_seconds: float = DEFAULT_CLOSE_TIMEOUT_SECONDS) -> LogShipReport:
        """Seal the last chunk and wait up to ``timeout_seconds`` for every upload.

        Uploads that are still pending afterwards go on in the background (call
        :meth:`shutdown` when the launcher exits; the spool keeps them for the next start).
        """
        with self._cond:
            if not self._closed:
                if self._part_fd is not None:
                    try:
                        self._seal()
                    except InfrastructureError as exc:
                        # The final flush failed: the open chunk is never shipped. Say so.
                        _log.error("run %s: %s; the log is incomplete", self.run_id, exc.message)
                        self._lose(self._part_size)
                        if self._part_fd is not None:
                            with contextlib.suppress(OSError):
                                os.close(self._part_fd)
                            self._part_fd = None
                        self._part_size = 0
                self._closed = True
                self._cond.notify_all()
        return self.wait(timeout_seconds)

    # -- control ------------------------------------------------------------------------------

    def add_urls(self, urls: Iterable[LogUrl]) -> None:
        """More presigned URLs (a ``log_urls`` message); a newer URL replaces an older one."""
        self._store_urls(urls, persist=True)

    def wait(self, timeout_seconds: float) -> LogShipReport:
        """Wait until every chunk is uploaded (after close) or the sink stopped, or timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self._finished or self._stopped, timeout_seconds)
            return self._report()

    def report(self) -> LogShipReport:
        with self._cond:
            return self._report()

    def shutdown(self, timeout_seconds: float = 5.0) -> LogShipReport:
        """Stop the uploader (launcher exit). Spooled chunks stay on disk for the next start."""
        with self._cond:
            self._stopped = True
            if self._part_fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._part_fd)
                os.close(self._part_fd)
                self._part_fd = None
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_seconds)
        return self.report()

    def drop_spool(self) -> tuple[int, int]:
        """``HL_LOG_SPOOL_MAX_BYTES`` evicts this closed run: its pending chunks are deleted and
        counted as lost (the report is no longer ``complete``). Returns (chunks, bytes) dropped;
        nothing for a sink still being written."""
        with self._cond:
            if not self._closed:
                return 0, 0
            chunks, size = len(self._pending), sum(self._pending.values())
            for chunk in self._pending:
                with contextlib.suppress(OSError):
                    (self.directory / _chunk_name(chunk)).unlink()
            self._pending.clear()
            self._urls.clear()
            if self._metrics is not None:
                self._metrics.chunk_unspooled(size)
            self._lose(size)
            self._cond.notify_all()
            return chunks, size

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._finished

    # -- internals (call with the lock held) -----------------------------------------------

    def _lose(self, size: int) -> None:
        if size <= 0:
            return
        self._lost_bytes += size
        if self._metrics is not None:
            self._metrics.log_bytes_lost(size)

    def _report(self) -> LogShipReport:
        return LogShipReport(
            run_id=self.run_id,
            chunks=self._next_chunk,
            uploaded=self._uploaded,
            pending=tuple(sorted(self._pending)),
            spooled_bytes=sum(self._pending.values()),
            failed_attempts=self._failed_attempts,
            closed=self._closed,
            lost_bytes=self._lost_bytes,
        )

    def _open_part(self, now: float) -> int:
        if self._next_chunk > MAX_CHUNK:
            raise InfrastructureError(
                "the run's log has more chunks than the protocol allows",
                reason="log_too_long",
            )
        path = self.directory / f"{_chunk_name(self._next_chunk)}.part"
        try:
            fd = os.open(
                path,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
            )
        except OSError as exc:
            raise _spool_error("create a log chunk", exc) from None
        self._part_fd = fd
        self._part_size = 0
        self._part_started = now
        return fd

    def _seal(self) -> None:
        fd = self._part_fd
        assert fd is not None  # noqa: S101 - callers check
        chunk = self._next_chunk
        part = self.directory / f"{_chunk_name(chunk)}.part"
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _spool_error("seal a log chunk", exc) from None  # the part stays open
        with contextlib.suppress(OSError):
            os.close(fd)
        self._part_fd = None
        try:
            part.rename(self.directory / _chunk_name(chunk))
        except OSError as exc:
            # The closed part cannot become a chunk: it is lost, and its number with it (the
            # next part must not collide with the leftover ``.part``).
            self._lose(self._part_size)
            self._next_chunk = chunk + 1
            self._part_size = 0
            raise _spool_error("seal a log chunk", exc) from None
        with contextlib.suppress(OSError):
            _fsync_dir(self.directory)
        self._pending[chunk] = self._part_size
        self._next_chunk = chunk + 1
        self._part_size = 0
        if self._metrics is not None:
            self._metrics.chunk_spooled(self._pending[chunk])
        self._cond.notify_all()

    def _adopt_spool(self) -> None:
        """Take over what a previous launcher left in this run's directory."""
        highest = -1
        for entry in sorted(self.directory.iterdir()):
            part = _PART_RE.fullmatch(entry.name)
            if part is not None and not entry.is_symlink():
                if entry.stat().st_size == 0:
                    entry.unlink()
                    continue
                final = entry.with_name(_chunk_name(int(part.group(1))))
                entry.rename(final)
                entry = final  # noqa: PLW2901 - the same file under its sealed name
            match = _CHUNK_RE.fullmatch(entry.name)
            if match is None or entry.is_symlink() or not entry.is_file():
                continue
            chunk = int(match.group(1))
            size = entry.stat().st_size
            self._pending[chunk] = size
            highest = max(highest, chunk)
            if self._metrics is not None:
                self._metrics.chunk_spooled(size)
        _fsync_dir(self.directory)
        self._next_chunk = highest + 1
        self._closed = True
        urls_file = self.directory / URLS_FILE
        try:
            document = json.loads(urls_file.read_text(encoding="utf-8"))
            saved = [LogUrl.from_dict(item) for item in document]
        except (OSError, ValueError, TypeError, MessageError):
            saved = []
        self._store_urls(saved, persist=False)

    def _store_urls(self, urls: Iterable[LogUrl], *, persist: bool) -> None:
        with self._cond:
            changed = False
            for item in urls:
                if not isinstance(item, LogUrl):
                    raise TypeError("add_urls takes LogUrl items")
                done = item.chunk < self._next_chunk and item.chunk not in self._pending
                if done or item.chunk >= self._next_chunk + MAX_HELD_URLS:
                    continue
                self._urls[item.chunk] = item.url
                changed = True
            if changed:
                if persist:
                    self._persist_urls()
                self._cond.notify_all()

    def _persist_urls(self) -> None:
        if not self.directory.is_dir():
            return
        document = [{"chunk": c, "url": u} for c, u in sorted(self._urls.items())]
        try:
            replace_atomically(self.directory / URLS_FILE, json.dumps(document).encode())
        except OSError as exc:
            # Only an optimisation for restarts: the control plane can issue new URLs.
            _log.warning("run %s: could not save log URLs (%s)", self.run_id, exc.strerror)

    def _backoff(self, failures: int) -> float:
        delay = min(self._retry_max, self._retry_base * float(1 << min(failures - 1, 30)))
        return delay * self._random.uniform(0.5, 1.0)

    def _wanted_from(self) -> int | None:
        """The lowest chunk that needs a URL and has none."""
        candidates = [c for c in self._pending if c not in self._urls]
        if self._part_fd is not None and self._next_chunk not in self._urls:
            candidates.append(self._next_chunk)
        return min(candidates) if candidates else None

    def _due_request(self, now: float) -> int | None:
        wanted = self._wanted_from()
        if wanted is None:
            return None
        last = self._last_request
        if last is None or last[0] != wanted:
            self._last_request = (wanted, now, self._request_interval)
            return wanted
        _, at, interval = last
        if now - at >= interval:
            self._last_request = (wanted, now, min(interval * 2, 60.0))
            return wanted
        return None

    def _next_job(self, now: float) -> tuple[int, str] | None:
        if now < self._not_before:
            return None
        for chunk in sorted(self._pending):
            url = self._urls.get(chunk)
            if url is not None:
                return chunk, url
        return None

    def _sleep_for(self, now: float) -> float:
        waits = [1.0]
        if self._part_fd is not None:
            waits.append(self._part_started + self._flush_seconds - now)
        if self._pending and self._not_before > now:
            waits.append(self._not_before - now)
        if self._last_request is not None and self._wanted_from() is not None:
            waits.append(self._last_request[1] + self._last_request[2] - now)
        return max(0.01, min(waits))

    def _finish(self) -> None:
        self._finished = True
        # urls.json, and the temporary files of a write that was killed half-way (the
        # ".urls.json.tmp" of older versions, replace_atomically's ".urls.json.<hex>.tmp").
        leftovers = [self.directory / URLS_FILE, self.directory / f".{URLS_FILE}.tmp"]
        with contextlib.suppress(OSError):
            leftovers.extend(self.directory.glob(f".{URLS_FILE}.*.tmp"))
        for path in leftovers:
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()
        self._cond.notify_all()

    # -- the uploader thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = self._clock()
                if self._part_fd is not None and now - self._part_started >= self._flush_seconds:
                    try:
                        self._seal()
                    except InfrastructureError as exc:
                        _log.error("run %s: %s", self.run_id, exc.message)
                if self._closed and not self._pending:
                    self._finish()
                    return
                request_from = self._due_request(now)
                job = self._next_job(now)
                if job is None and request_from is None:
                    self._cond.wait(self._sleep_for(now))
                    continue
            if request_from is not None:
                try:
                    self._request_more(request_from)
                except Exception as exc:  # noqa: BLE001 - the daemon's callback must not kill us
                    _log.warning(
                        "run %s: asking for log URLs failed (%s)", self.run_id, type(exc).__name__
                    )
            if job is not None:
                self._upload(*job)

    def _upload(self, chunk: int, url: str) -> None:
        path = self.directory / _chunk_name(chunk)
        try:
            data = path.read_bytes()
        except OSError as exc:
            _log.error(
                "run %s: spooled log chunk %d is unreadable (%s); it is lost",
                self.run_id,
                chunk,
                exc.strerror,
            )
            with self._cond:
                size = self._pending.pop(chunk, 0)
                if self._metrics is not None:
                    self._metrics.chunk_unspooled(size)
                self._lose(size)
            return
        try:
            self._uploader(url, data)
        except UploadError as exc:
            with self._cond:
                self._failed_attempts += 1
                self._consecutive_failures += 1
                delay = self._backoff(self._consecutive_failures)
                self._not_before = self._clock() + delay
                if exc.url_rejected and self._urls.get(chunk) == url:
                    del self._urls[chunk]
                if self._metrics is not None:
                    self._metrics.chunk_upload_failed()
            _log.warning(
                "run %s: uploading log chunk %d failed (%s); retrying in %.1fs",
                self.run_id,
                chunk,
                exc,
                delay,
            )
            return
        except Exception as exc:  # noqa: BLE001 - an uploader bug must not lose the chunk
            with self._cond:
                self._failed_attempts += 1
                self._consecutive_failures += 1
                self._not_before = self._clock() + self._backoff(self._consecutive_failures)
            _log.error("run %s: log uploader raised %s", self.run_id, type(exc).__name__)
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with self._cond:
            size = self._pending.pop(chunk, 0)
            self._urls.pop(chunk, None)
            self._uploaded += 1
            self._consecutive_failures = 0
            self._not_before = 0.0
            if self._metrics is not None:
                self._metrics.chunk_unspooled(size)
                self._metrics.chunk_uploaded()
            self._cond.notify_all()


def spooled_runs(spool_dir: Path) -> list[str]:
    """Run ids that have a directory in the spool (what :func:`resume_spooled` would take)."""
    if not spool_dir.is_dir():
        return []
    return sorted(
        entry.name
        for entry in spool_dir.iterdir()
        if entry.is_dir() and not entry.is_symlink() and is_valid_run_id(entry.name)
    )


def resume_spooled(
    spool_dir: Path,
    *,
    request_more: Callable[[str, int], None],
    uploader: Uploader | None = None,
    metrics: LauncherMetrics | None = None,
    clock: Callable[[], float] = time.monotonic,
    retry_base_seconds: float = 0.25,
    retry_max_seconds: float = 30.0,
    request_interval_seconds: float = 5.0,
) -> dict[str, ChunkedLogSink]:
    """At launcher start-up: ship what a previous process left in ``spool_dir``.

    Returns one closed sink per spooled run (keyed by run id) whose uploader thread is already
    running: route ``log_urls`` messages for those runs to its ``add_urls``, and call
    ``shutdown`` at exit. Saved URLs are tried first; ``request_more(run_id, from_chunk)`` asks
    for fresh ones. Open parts (``.part``) of a killed launcher are sealed as they are. Call it
    before any new sink is created in the same spool.
    """
    sinks: dict[str, ChunkedLogSink] = {}
    for run_id in spooled_runs(spool_dir):

        def ask(from_chunk: int, run_id: str = run_id) -> None:
            request_more(run_id, from_chunk)

        sinks[run_id] = ChunkedLogSink(
            run_id=run_id,
            spool_dir=spool_dir,
            initial_urls=(),
            request_more=ask,
            uploader=uploader,
            clock=clock,
            metrics=metrics,
            retry_base_seconds=retry_base_seconds,
            retry_max_seconds=retry_max_seconds,
            request_interval_seconds=request_interval_seconds,
            _resume=True,
        )
    return sinks


class StdoutJsonLinesSink:
    """``SPACELIFT_RUN_LOGS_ON_STANDARD_OUTPUT_ENABLED``: redacted run output as JSON lines.

    One object per line, ``{"run_id", "channel", "ts", "line"}``; each channel is split on
    ``\\n`` (a trailing ``\\r`` is dropped) with a partial-line buffer of at most
    ``max_line_bytes`` (a longer line is emitted in pieces). Invalid UTF-8 becomes U+FFFD;
    the JSON is ASCII-only, so no control character reaches the terminal. Thread-safe.
    """

    def __init__(
        self,
        run_id: str,
        stream: TextIO,
        *,
        max_line_bytes: int = 64 * 1024,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.run_id = run_id
        self._stream = stream
        self._max = max_line_bytes
        self._clock = clock or (lambda: datetime.now(UTC))
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._lock = threading.Lock()
        self._closed = False

    def _emit(self, channel: str, raw: bytes | bytearray) -> str:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return (
            json.dumps(
                {
                    "run_id": self.run_id,
                    "channel": channel,
                    "ts": format_timestamp(self._clock()),
                    "line": bytes(raw).decode("utf-8", errors="replace"),
                },
                ensure_ascii=True,
                separators=(",", ":"),
            )
            + "\n"
        )

    def write(self, channel: Channel, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed log sink")
            buffer = self._partial[channel]
            out: list[str] = []
            start = 0
            while start < len(data):
                newline = data.find(b"\n", start)
                end = len(data) if newline < 0 else newline
                piece = data[start:end]
                while len(buffer) + len(piece) > self._max:
                    take = self._max - len(buffer)
                    buffer += piece[:take]
                    piece = piece[take:]
                    out.append(self._emit(channel, buffer))
                    buffer.clear()
                buffer += piece
                if newline < 0:
                    break
                out.append(self._emit(channel, buffer))
                buffer.clear()
                start = newline + 1
            if out:
                self._stream.write("".join(out))
                self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            out = [self._emit(ch, buf) for ch, buf in self._partial.items() if buf]
            for buf in self._partial.values():
                buf.clear()
            if out:
                self._stream.write("".join(out))
            self._stream.flush()
