"""A run's effective limits: what its spec asks for, within what the operator allows.

A spec's ``limits`` may only ask for less than the launcher's settings (``HL_RUN_MEMORY_BYTES``,
``HL_RUN_CPUS``, ``HL_RUN_PIDS_LIMIT``, ``SPACELIFT_LAUNCHER_RUN_TIMEOUT``). Asking for more is
refused with both numbers (:class:`~.errors.LimitRefusedError`), never silently lowered: a run
that needs 8 GiB fails loudly at once instead of being OOM-killed an hour later. Under gVisor a
run holds at most :data:`~.container_spec.GVISOR_MAX_RUN_TASKS` tasks; a spec asking for more
is refused the same way, while the operator's larger default is capped (documented).

Pure: no I/O. The pipeline calls :func:`check_run_limits` before any gate does work, and
:func:`~.container_spec.build_container_spec` applies what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from hardened_launcher.executor.errors import LimitRefusedError
from hardened_launcher.executor.runspec import RunLimits, RunSpec
from hardened_launcher.settings import Settings

__all__ = ["GVISOR_MAX_RUN_TASKS", "EffectiveLimits", "check_run_limits", "is_gvisor_runtime"]

#: The most tasks (processes and threads) a run may hold under gVisor. Above this the sandbox's
#: host budget (``256 + 128 x 128 = 16640`` host tasks, half of Linux's default ``pid_max``) would
#: grow past what one run may take from its host (see container_spec and docs/executor.md).
GVISOR_MAX_RUN_TASKS: Final = 128


def is_gvisor_runtime(runtime: str | None) -> bool:
    """Whether the Docker runtime name is gVisor's (``runsc``, ``runsc-kvm``, ``gvisor``, …)."""
    if runtime is None:
        return False
    name = runtime.lower()
    return "runsc" in name or "gvisor" in name


@dataclass(frozen=True, kw_only=True)
class EffectiveLimits:
    """The limits a run gets. ``pids`` is the run's own process (task) limit."""

    memory_bytes: int
    cpus: float
    pids: int
    time_limit: timedelta


def _refuse(field: str, asked: str, allowed: str, setting: str) -> LimitRefusedError:
    return LimitRefusedError(
        f"the run spec asks for limits.{field} = {asked}, more than this launcher allows "
        f"({setting} = {allowed})",
        hint=f"ask for at most {allowed} in the run spec, or raise {setting} on the launcher",
    )


def check_run_limits(spec: RunSpec, settings: Settings) -> EffectiveLimits:
    """The run's limits, or :class:`LimitRefusedError` naming the first one asked above its cap."""
    return check_limits(spec.limits, settings)


def check_limits(asked: RunLimits, settings: Settings) -> EffectiveLimits:
    """:func:`check_run_limits` for limits alone (the pipeline checks the signed manifest's
    before anything is decrypted)."""
    max_pids = settings.run_pids_limit
    pids_setting = "HL_RUN_PIDS_LIMIT"
    if is_gvisor_runtime(settings.worker_runtime) and max_pids > GVISOR_MAX_RUN_TASKS:
        max_pids = GVISOR_MAX_RUN_TASKS
        pids_setting = "the gVisor task cap of HL_RUN_PIDS_LIMIT"
    if asked.memory_bytes is not None and asked.memory_bytes > settings.run_memory_bytes:
        raise _refuse(
            "memory_bytes",
            str(asked.memory_bytes),
            str(settings.run_memory_bytes),
            "HL_RUN_MEMORY_BYTES",
        )
    if asked.cpus is not None and asked.cpus > settings.run_cpus:
        raise _refuse("cpus", f"{asked.cpus:g}", f"{settings.run_cpus:g}", "HL_RUN_CPUS")
    if asked.pids is not None and asked.pids > max_pids:
        raise _refuse("pids", str(asked.pids), str(max_pids), pids_setting)
    launcher_seconds = settings.launcher_run_timeout.total_seconds()
    if asked.time_seconds is not None and asked.time_seconds > launcher_seconds:
        raise _refuse(
            "time_seconds",
            str(asked.time_seconds),
            f"{launcher_seconds:g}",
            "SPACELIFT_LAUNCHER_RUN_TIMEOUT in seconds",
        )
    return EffectiveLimits(
        memory_bytes=settings.run_memory_bytes
        if asked.memory_bytes is None
        else asked.memory_bytes,
        cpus=settings.run_cpus if asked.cpus is None else asked.cpus,
        pids=max_pids if asked.pids is None else asked.pids,
        time_limit=settings.launcher_run_timeout
        if asked.time_seconds is None
        else timedelta(seconds=asked.time_seconds),
    )
