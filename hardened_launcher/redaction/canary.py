"""The final canary scan: a run's stored log is checked once more before it is published.

When a run ends, :func:`verify_log_clean` streams the stored log through a scanner of the
run's redactor, which by then knows every value, including those added mid-run after some
output was already written. It returns a :class:`CleanLog` proof, or raises
:class:`LeakDetectedError` (reason ``leak_detected``) after moving the log into the quarantine
directory, so that a log with a leak is never published. The error names the variables and the
counts, never the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hardened_launcher.errors import UntrustedInputError
from hardened_launcher.redaction.redactor import Redactor

READ_CHUNK_BYTES = 1 << 20


class LeakDetectedError(UntrustedInputError):
    """A stored run log still contains a variant of a masked value; it was quarantined."""

    default_reason = "leak_detected"

    def __init__(self, message: str, *, quarantined: Path, counts: dict[str, int]) -> None:
        super().__init__(
            message,
            hint="the log was quarantined and not published; rotate the named secrets",
            detail=f"quarantined at {quarantined}",
        )
        self.quarantined = quarantined
        self.counts = counts


@dataclass(frozen=True, kw_only=True)
class CleanLog:
    """Proof that ``path`` held no variant of any value known to the redactor when scanned."""

    path: Path
    size_bytes: int
    patterns_checked: int


def scan_counts(path: Path, redactor: Redactor) -> tuple[dict[str, int], int]:
    """Hits per variable name in the file at ``path`` and its size; nothing is modified."""
    scanner = redactor.scanner("canary")
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(READ_CHUNK_BYTES):
            size += len(chunk)
            scanner.write(chunk)
    scanner.flush()
    return dict(scanner.counts), size


def verify_log_clean(path: Path, redactor: Redactor, *, quarantine_dir: Path) -> CleanLog:
    """Return a :class:`CleanLog` proof, or quarantine the log and raise LeakDetectedError."""
    counts, size = scan_counts(path, redactor)
    if not counts:
        return CleanLog(path=path, size_bytes=size, patterns_checked=redactor.pattern_count)
    quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = quarantine_dir / path.name
    path.replace(target)
    target.chmod(0o600)
    names = ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))
    raise LeakDetectedError(
        f"the stored run log contains masked values of {names}",
        quarantined=target,
        counts=counts,
    )
