"""Retention of the launcher's local per-run log copies (``<state_dir>/runs/<run>-<stamp>.log``).

Every run's log is written to object storage (spooled under ``<state_dir>/log-spool/<run>/``)
and, the same bytes, to a local copy the pipeline's canary scan reads. ``HL_RUN_LOG_RETENTION``
bounds the copies: a copy is removed when it is older than the age limit, or when more copies
than the count limit are newer than it — but never while its run still has a spool directory
(chunks not yet in object storage: the copy may be the only complete one), never while the run
is active, and never within :data:`MIN_IDLE` of its last write.

Setting form: up to two comma-separated terms, a Go duration (the age, 1m to 8760h) and/or a
whole number (the count, 1 to 1 000 000), or ``off`` (keep every copy). Default ``168h,1000``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

from hardened_launcher.ascii_text import is_digits
from hardened_launcher.durations import DurationError, format_duration, parse_duration

log = logging.getLogger(__name__)

MIN_AGE: Final = timedelta(minutes=1)
MAX_AGE: Final = timedelta(hours=8760)
MAX_COUNT: Final = 1_000_000
#: A copy written to this recently is never removed (its run's scan may still read it).
MIN_IDLE: Final = timedelta(minutes=10)
#: Files looked at in one pass at most (a directory flooded by something else stays bounded).
MAX_SCAN: Final = 100_000
RETENTION_FORM: Final = (
    "off, or up to two comma-separated terms: a duration from 1m to 8760h (the age) and/or a "
    "whole number from 1 to 1000000 (the count), e.g. 168h,1000"
)
_NAME: Final = re.compile(r"(?P<run>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})-[0-9]{8}T[0-9]{12}Z\.log")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunLogRetention:
    """How long local per-run log copies are kept (None: no limit of that kind)."""

    max_age: timedelta | None = None
    max_count: int | None = None

    def __post_init__(self) -> None:
        if self.max_age is not None and not MIN_AGE <= self.max_age <= MAX_AGE:
            raise ValueError("the age limit must be from 1m to 8760h")
        if self.max_count is not None and not 1 <= self.max_count <= MAX_COUNT:
            raise ValueError("the count limit must be from 1 to 1000000")

    @property
    def enabled(self) -> bool:
        return self.max_age is not None or self.max_count is not None

    def describe(self) -> str:
        terms = [format_duration(self.max_age)] if self.max_age is not None else []
        terms += [str(self.max_count)] if self.max_count is not None else []
        return ",".join(terms) or "off"


DEFAULT_RUN_LOG_RETENTION: Final = RunLogRetention(max_age=timedelta(hours=168), max_count=1000)


def parse_retention(text: str) -> RunLogRetention:
    """``HL_RUN_LOG_RETENTION``'s value; ValueError (naming the problem) for anything else."""
    value = text.strip()
    if value.lower() == "off":
        return RunLogRetention()
    terms = [t.strip() for t in value.split(",")]
    if not 1 <= len(terms) <= 2 or not all(terms):
        raise ValueError("is not one or two comma-separated terms")
    age: timedelta | None = None
    count: int | None = None
    for term in terms:
        if is_digits(term):
            if count is not None:
                raise ValueError("gives the count twice")
            if len(term) > 7 or not 1 <= int(term) <= MAX_COUNT:
                raise ValueError("has a count outside 1 to 1000000")
            count = int(term)
            continue
        if age is not None:
            raise ValueError("gives the age twice")
        try:
            age = parse_duration(term)
        except DurationError:
            raise ValueError(
                f"has {term[:20]!r}, which is neither a count nor a duration"
            ) from None
        if not MIN_AGE <= age <= MAX_AGE:
            raise ValueError("has an age outside 1m to 8760h")
    return RunLogRetention(max_age=age, max_count=count)


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    removed: int = 0
    kept_unshipped: int = 0


def prune_run_logs(
    directory: Path,
    *,
    spool_dir: Path,
    retention: RunLogRetention,
    active: Collection[str] = (),
    now: Callable[[], float],
) -> PruneReport:
    """Remove the copies in ``directory`` that ``retention`` no longer keeps (see the module
    docstring). Never raises for a file it cannot read or remove: it logs and goes on."""
    if not retention.enabled:
        return PruneReport()
    try:
        entries: list[tuple[float, str, str]] = []
        with os.scandir(directory) as found:
            for entry in found:
                if len(entries) >= MAX_SCAN:
                    break
                match = _NAME.fullmatch(entry.name)
                if match is None or not entry.is_file(follow_symlinks=False):
                    continue
                entries.append(
                    (entry.stat(follow_symlinks=False).st_mtime, entry.name, match["run"])
                )
    except FileNotFoundError:
        return PruneReport()
    except OSError as exc:
        log.warning("run_logs.scan_failed", extra={"error": exc.strerror})
        return PruneReport()
    entries.sort(reverse=True)  # newest first
    current = now()
    removed = unshipped = 0
    for index, (mtime, name, run_id) in enumerate(entries):
        age = current - mtime
        too_old = retention.max_age is not None and age > retention.max_age.total_seconds()
        too_many = retention.max_count is not None and index >= retention.max_count
        if not (too_old or too_many) or age < MIN_IDLE.total_seconds() or run_id in active:
            continue
        if (spool_dir / run_id).exists():
            unshipped += 1  # its chunks are not all in object storage yet
            continue
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("run_logs.remove_failed", extra={"error": exc.strerror})
            continue
        removed += 1
    if removed or unshipped:
        log.info("run_logs.pruned removed=%d kept_unshipped=%d", removed, unshipped)
    return PruneReport(removed=removed, kept_unshipped=unshipped)
