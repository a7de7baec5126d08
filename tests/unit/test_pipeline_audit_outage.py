"""The audit log failing after a run's container ran does not change the reported outcome.

Issue 18: a run that exited 0 while the audit disk filled was reported FAILED without its exit
code. Now the facts recorded after the container exited (``run.finished``, ``run.log_clean``)
are best effort when the log is unavailable; anything before the container starts still fails
closed (no run without its ``run.started`` record).
"""

from __future__ import annotations

import pytest

from hardened_launcher.audit import AuditEvent, MemoryAuditLog
from hardened_launcher.errors import InfrastructureError, LauncherError
from hardened_launcher.executor.runner import RunResult
from hardened_launcher.pipeline import run_pipeline
from tests.unit.test_executor_pipeline import (
    FakeBinaries,
    FakeRunner,
    FakeSink,
    StandInRedactor,
    allow,
    make_spec,
    settings,
    step,
)


class FailingAudit(MemoryAuditLog):
    """Raises ``audit_unavailable`` from the first record of a type in ``fail_from`` on."""

    def __init__(self, fail_from: str, *, reason: str = "audit_unavailable") -> None:
        super().__init__()
        self.fail_from = fail_from
        self.reason = reason
        self.failing = False

    def record(self, event: AuditEvent) -> None:
        if event.type == self.fail_from:
            self.failing = True
        if self.failing:
            raise InfrastructureError("the audit disk is full", reason=self.reason)
        super().record(event)


def _go(audit: MemoryAuditLog) -> tuple[FakeRunner, RunResult | LauncherError]:
    runner = FakeRunner()
    outcome: RunResult | LauncherError
    try:
        outcome = run_pipeline(
            make_spec(),
            settings=settings(),
            launcher_id="L",
            worker_version="0.1.0",
            binaries=FakeBinaries(),  # type: ignore[arg-type]
            policy=step(allow),
            runner=runner,
            redactor=StandInRedactor(),
            sink=FakeSink(),
            audit=audit,
            environ={},
        )
    except LauncherError as exc:
        outcome = exc
    return runner, outcome


def test_a_run_that_exited_is_reported_as_it_exited_when_the_log_fails_after() -> None:
    audit = FailingAudit("run.finished")
    runner, outcome = _go(audit)
    assert len(runner.calls) == 1
    assert isinstance(outcome, RunResult)
    assert outcome.exit_code == 0
    assert outcome.succeeded
    assert [e.type for e in audit.events][-1] == "run.started"


@pytest.mark.parametrize("first_failing", ["binaries.passed", "identity.skipped", "run.started"])
def test_before_the_container_starts_an_audit_failure_still_fails_closed(
    first_failing: str,
) -> None:
    runner, outcome = _go(FailingAudit(first_failing))
    assert runner.calls == []
    assert isinstance(outcome, LauncherError)
    assert outcome.reason == "audit_unavailable"


def test_other_errors_after_the_run_are_not_swallowed() -> None:
    runner, outcome = _go(FailingAudit("run.finished", reason="something_else"))
    assert len(runner.calls) == 1
    assert isinstance(outcome, LauncherError)
    assert outcome.reason == "something_else"
