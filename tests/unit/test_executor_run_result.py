"""A run's outcome slug: the limit that fired, then OOM, then the worker's own exit status, and
a container that died under the worker (no run end) as a runtime failure."""

from __future__ import annotations

import pytest

from hardened_launcher.executor.runner import RunResult, StopReason


def result(**overrides: object) -> RunResult:
    base: dict[str, object] = {
        "run_id": "r",
        "container_id": "c",
        "exit_code": 0,
        "stopped_by": StopReason.EXITED,
        "duration_seconds": 1.0,
        "output_bytes": 10,
    }
    base.update(overrides)
    return RunResult(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "reason", "succeeded"),
    [
        ({}, "run_succeeded", True),
        ({"exit_code": 3}, "run_failed", False),
        ({"exit_code": 137, "oom_killed": True}, "run_oom", False),
        ({"exit_code": 0, "oom_killed": True}, "run_oom", False),  # a child was killed
        ({"exit_code": 2, "worker_ended": False}, "runtime_failed", False),
        ({"exit_code": None, "worker_ended": False}, "runtime_failed", False),
        ({"stopped_by": StopReason.RUN_TIMEOUT, "oom_killed": True}, "run_timeout", False),
        ({"stopped_by": StopReason.CANCELLED, "exit_code": 143}, "run_cancelled", False),
        ({"stopped_by": StopReason.LOGS_TIMEOUT}, "run_logs_timeout", False),
    ],
)
def test_reason(overrides: dict[str, object], reason: str, succeeded: bool) -> None:
    r = result(**overrides)
    assert r.reason == reason
    assert r.succeeded is succeeded
