"""A run spec asks for limits within the operator's; more is refused with both numbers, never
lowered silently (memory, CPUs, processes, time; gVisor's task cap)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.executor.container_spec import GVISOR_MAX_RUN_TASKS as SPEC_CAP
from hardened_launcher.executor.errors import LimitRefusedError, RunSpecError
from hardened_launcher.executor.limits import GVISOR_MAX_RUN_TASKS, check_run_limits
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.settings import Settings

GIB = 1024**3


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "state_dir": Path("/var/lib/hl"),
        "cache_dir": Path("/var/cache/hl"),
        "audit_dir": Path("/var/log/hl"),
        "run_memory_bytes": 2 * GIB,
        "run_cpus": 2.0,
        "run_pids_limit": 512,
        "launcher_run_timeout": timedelta(hours=1),
    }
    base.update(overrides)
    return Settings(**base)


def spec(**limits: Any) -> Any:
    return run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "r1",
            "run_type": "ro",
            "image": "busybox:1",
            "phases": [{"name": "main", "commands": ["true"]}],
            "limits": limits,
        }
    )


def test_no_request_gets_the_operators_limits() -> None:
    got = check_run_limits(spec(), settings())
    assert (got.memory_bytes, got.cpus, got.pids, got.time_limit) == (
        2 * GIB,
        2.0,
        512,
        timedelta(hours=1),
    )


def test_requests_up_to_the_operators_limits_are_granted_exactly() -> None:
    got = check_run_limits(
        spec(memory_bytes=2 * GIB, cpus=2, pids=512, time_seconds=3600), settings()
    )
    assert (got.memory_bytes, got.cpus, got.pids, got.time_limit) == (
        2 * GIB,
        2.0,
        512,
        timedelta(hours=1),
    )
    got = check_run_limits(spec(memory_bytes=64 * 1024**2, time_seconds=30), settings())
    assert got.memory_bytes == 64 * 1024**2
    assert got.time_limit == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("field", "asked", "numbers", "setting"),
    [
        ("memory_bytes", 2 * GIB + 1, (str(2 * GIB + 1), str(2 * GIB)), "HL_RUN_MEMORY_BYTES"),
        ("memory_bytes", 1 << 40, (str(1 << 40), str(2 * GIB)), "HL_RUN_MEMORY_BYTES"),
        ("cpus", 2.01, ("2.01", "2"), "HL_RUN_CPUS"),
        ("cpus", 1024, ("1024", "2"), "HL_RUN_CPUS"),
        ("pids", 513, ("513", "512"), "HL_RUN_PIDS_LIMIT"),
        ("time_seconds", 3601, ("3601", "3600"), "SPACELIFT_LAUNCHER_RUN_TIMEOUT"),
        ("time_seconds", 30 * 24 * 3600, ("2592000", "3600"), "SPACELIFT_LAUNCHER_RUN_TIMEOUT"),
    ],
)
def test_more_than_allowed_is_refused_with_the_numbers(
    field: str, asked: float, numbers: tuple[str, str], setting: str
) -> None:
    with pytest.raises(LimitRefusedError) as info:
        check_run_limits(spec(**{field: asked}), settings())
    message = str(info.value)
    assert f"limits.{field} = {numbers[0]}" in message
    assert f"{setting}" in message
    assert numbers[1] in message
    assert info.value.reason == "limits_refused"
    assert info.value.exit_code == 65


def test_gvisor_caps_the_operators_default_and_refuses_a_larger_request() -> None:
    assert GVISOR_MAX_RUN_TASKS == SPEC_CAP
    s = settings(worker_runtime="runsc", run_pids_limit=1024)
    assert check_run_limits(spec(), s).pids == GVISOR_MAX_RUN_TASKS
    assert check_run_limits(spec(pids=100), s).pids == 100
    with pytest.raises(LimitRefusedError, match=r"limits\.pids = 129.*gVisor task cap"):
        check_run_limits(spec(pids=129), s)
    # runc: the operator's 1024 stands.
    assert check_run_limits(spec(pids=1000), settings(run_pids_limit=1024)).pids == 1000


@pytest.mark.parametrize("bad", [0, -1, 30 * 24 * 3600 + 1, 1.5, "60", True, None])
def test_malformed_time_limits_are_refused_by_the_spec_parser(bad: object) -> None:
    if bad is None:
        assert check_run_limits(spec(time_seconds=None), settings()).time_limit == timedelta(
            hours=1
        )
        return
    with pytest.raises(RunSpecError, match=r"limits\.time_seconds"):
        spec(time_seconds=bad)


@given(
    memory=st.integers(6 * 1024**2, 1 << 40),
    pids=st.integers(8, 1 << 20),
    cpus=st.floats(0.01, 1024),
    seconds=st.integers(1, 30 * 24 * 3600),
)
def test_granted_limits_never_exceed_the_operators(
    memory: int, pids: int, cpus: float, seconds: int
) -> None:
    s = settings()
    try:
        got = check_run_limits(
            spec(memory_bytes=memory, pids=pids, cpus=cpus, time_seconds=seconds), s
        )
    except LimitRefusedError:
        assert (
            memory > s.run_memory_bytes
            or pids > s.run_pids_limit
            or cpus > s.run_cpus
            or seconds > s.launcher_run_timeout.total_seconds()
        )
        return
    assert (got.memory_bytes, got.pids, got.cpus) == (memory, pids, cpus)
    assert got.time_limit == timedelta(seconds=seconds)
