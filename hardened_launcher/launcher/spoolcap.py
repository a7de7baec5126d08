"""``HL_LOG_SPOOL_MAX_BYTES``: the size cap of the run-log spool (``<state_dir>/log-spool``).

Without object storage, or while it stays unreachable, chunks never leave the spool. Before each
new run the launcher measures the spool and, while it is over the cap, drops the spool of the
oldest run that has already finished (the one whose last chunk was written longest ago), never
the spool of a run still running. Each drop is audited (``run.logs_dropped``, reason
``log_lines_lost``) and counted (``hl_log_bytes_lost``, ``hl_log_spool_evictions``): nothing
is lost silently.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hardened_launcher.transport.messages import is_valid_run_id

log = logging.getLogger(__name__)

#: Directory entries looked at in one pass at most (runs, and files within one run).
MAX_SCAN: Final = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SpooledRun:
    """One run's directory in the spool."""

    run_id: str
    size: int
    #: The newest modification time of a file in it (when the run last wrote a chunk).
    last_write: float


def choose_evictions(
    runs: Iterable[SpooledRun], *, cap: int, active: Collection[str] = ()
) -> list[str]:
    """The run ids whose spools go so that the total fits ``cap``: oldest finished run first
    (``last_write``, then run id), never one in ``active``. When even dropping every finished
    run does not fit, every finished run goes (the active ones stay)."""
    listed = list(runs)
    total = sum(run.size for run in listed)
    chosen: list[str] = []
    finished = sorted(
        (run for run in listed if run.run_id not in active),
        key=lambda run: (run.last_write, run.run_id),
    )
    for run in finished:
        if total <= cap:
            break
        chosen.append(run.run_id)
        total -= run.size
    return chosen


def _files(directory: Path) -> list[os.DirEntry[str]]:
    found: list[os.DirEntry[str]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if len(found) >= MAX_SCAN:
                break
            if entry.is_file(follow_symlinks=False):
                found.append(entry)
    return found


def spool_usage(spool_dir: Path) -> list[SpooledRun]:
    """Every run directory in ``spool_dir`` with its size (a bounded scan; an unreadable entry
    is skipped, never fatal)."""
    runs: list[SpooledRun] = []
    try:
        with os.scandir(spool_dir) as entries:
            candidates = [
                entry
                for _, entry in zip(range(MAX_SCAN), entries, strict=False)
                if entry.is_dir(follow_symlinks=False) and is_valid_run_id(entry.name)
            ]
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("log_spool.scan_failed error=%s", exc.strerror)
        return []
    for entry in candidates:
        size = 0
        last = 0.0
        try:
            for item in _files(Path(entry.path)):
                stat = item.stat(follow_symlinks=False)
                size += stat.st_size
                last = max(last, stat.st_mtime)
            if last == 0.0:
                last = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue  # removed meanwhile (uploaded), or unreadable: not counted
        runs.append(SpooledRun(run_id=entry.name, size=size, last_write=last))
    return runs


def remove_run_spool(spool_dir: Path, run_id: str) -> int:
    """Remove ``<spool_dir>/<run_id>`` (flat: chunk files and ``urls.json``); the bytes removed.
    Never follows a symbolic link; never raises (a leftover is logged and tried again later)."""
    if not is_valid_run_id(run_id):
        return 0
    directory = spool_dir / run_id
    removed = 0
    try:
        for entry in _files(directory):
            with contextlib.suppress(FileNotFoundError):
                size = entry.stat(follow_symlinks=False).st_size
                Path(entry.path).unlink()
                removed += size
        directory.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("log_spool.remove_failed run_id=%s error=%s", run_id, exc.strerror)
    return removed
