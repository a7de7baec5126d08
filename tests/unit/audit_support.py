"""Shared builders for the audit tests: a fixed signing key and logs of varied events."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit import AuditEvent, ChainedAuditLog, Outcome

KEY = ed25519.Ed25519PrivateKey.from_private_bytes(b"audit-tests-fixed-key-32-bytes!!")
OTHER_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(b"audit-tests-other-key-32-bytes!!")
T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    """Deterministic wall clock and monotonic clock, advanced by the test."""

    def __init__(self) -> None:
        self.now = T0
        self.mono = 1000.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def tick(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


GATES = ("credentials", "binaries", "policy", "envelope", "execute", "egress")
OUTCOMES = (Outcome.ALLOW, Outcome.DENY, Outcome.ERROR, Outcome.INFO)


def event(i: int, *, run: str | None = None, when: datetime | None = None) -> AuditEvent:
    gate = GATES[i % len(GATES)]
    outcome = OUTCOMES[i % len(OUTCOMES)]
    return AuditEvent(
        type=f"{gate}.checked",
        outcome=outcome,
        gate=gate,
        run_id=run if run is not None else f"run-{i % 3}",
        reason=None if outcome in (Outcome.ALLOW, Outcome.INFO) else f"{gate}_refused",
        fields={"n": i, "sha256": f"{i:064x}", "note": "a|b=c\\d\né", "names": ("x", "y")},
        time=when or T0 + timedelta(seconds=i),
    )


def open_log(directory: Path, clock: Clock | None = None, **kw: object) -> ChainedAuditLog:
    c = clock or Clock()
    return ChainedAuditLog(
        directory,
        signing_key=KEY,
        clock=c.wall,
        monotonic=c.monotonic,
        **kw,  # type: ignore[arg-type]
    )


def die(log: ChainedAuditLog) -> None:
    """What the kernel does to a killed writer: its descriptors close, which drops the
    directory lock; nothing is sealed."""
    for fd in [*log._retired, log._fd]:
        if fd >= 0:
            os.close(fd)
    log._retired, log._fd = [], -1
    log._dir_lock.release()


def write_log(
    directory: Path,
    count: int,
    *,
    segment_bytes: int = 4096,
    checkpoint_records: int = 5,
    close: bool = True,
) -> ChainedAuditLog:
    log = open_log(directory, segment_bytes=segment_bytes, checkpoint_records=checkpoint_records)
    for i in range(count):
        log.record(event(i))
    if close:
        log.close()
    return log
