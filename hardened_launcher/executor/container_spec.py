"""The run container's Docker arguments, computed by a pure function (no I/O, no Docker).

:func:`build_container_spec` turns a validated :class:`~.runspec.RunSpec`, the launcher's
:class:`~hardened_launcher.settings.Settings` and the gate proofs (verified binaries) into a
:class:`ContainerSpec`: the exact arguments of Docker's create call. Nothing secret goes into
it: the environment holds plumbing only, labels hold the run and launcher IDs, the command is
fixed. Secrets reach the container over its attached stdin (see :mod:`.instructions`).

When gate 6 isolates the run, the caller passes a :class:`NetworkPlan` (the run's own network,
its DNS settings and the proxy variables, all plumbing); without one the container joins
``SPACELIFT_WORKER_NETWORK`` as before.

:func:`check_extra_mounts` judges operator mounts; the launcher calls it at start-up so that a
dangerous mount stops the launcher before any run, and again for every run (defence in depth).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final

from hardened_launcher.binaries import VerifiedBinary
from hardened_launcher.executor.images import run_image
from hardened_launcher.executor.limits import (
    GVISOR_MAX_RUN_TASKS,
    check_run_limits,
    is_gvisor_runtime,
)
from hardened_launcher.executor.mounts import check_mounts
from hardened_launcher.executor.outputs import OUTPUTS_DIR, PLAN_FILE
from hardened_launcher.executor.runspec import RunSpec
from hardened_launcher.settings import RUN_TYPES, Mount, Settings

__all__ = [
    "BIN_DIR",
    "GVISOR_MAX_RUN_TASKS",
    "HOME_BYTES",
    "HOME_DIR",
    "LABEL_LAUNCHER_ID",
    "LABEL_MANAGED",
    "LABEL_RUN_ID",
    "TMP_DIR",
    "WORKER_NAME",
    "WORKSPACE_DIR",
    "ContainerSpec",
    "NetworkPlan",
    "build_container_spec",
    "check_extra_mounts",
    "gvisor_run_tasks",
    "gvisor_sandbox_pids_limit",
    "is_gvisor_runtime",
]

LABEL_MANAGED: Final = "io.hardened-launcher.managed"
LABEL_LAUNCHER_ID: Final = "io.hardened-launcher.launcher-id"
LABEL_RUN_ID: Final = "io.hardened-launcher.run-id"

WORKER_NAME: Final = "hl-worker"
BIN_DIR: Final = "/opt/hl/bin"
WORKSPACE_DIR: Final = "/workspace"
TMP_DIR: Final = "/tmp"  # noqa: S108 - the container's own /tmp, a private tmpfs
#: The run user's home: its own tmpfs, apart from the project in ``/workspace``, so that tools'
#: caches and dot files (``~/.ssh``, ``~/.ansible``, ``~/.terraform.d``) never mix with the
#: checkout. The name is the vendor runner images' user (``spacelift``, uid 1983).
HOME_DIR: Final = "/home/spacelift"
HOME_BYTES: Final = 64 * 1024 * 1024
#: Options of every writable tmpfs of a run. ``exec``: a run executes what it builds (providers
#: unpacked by ``terraform init``, a virtualenv's scripts) - the image's interpreters run any code
#: anyway, so ``noexec`` would protect nothing. ``nosuid`` and ``nodev`` stay (with
#: ``no-new-privileges`` and no capabilities); Docker would add ``noexec`` unless told ``exec``.
TMPFS_FLAGS: Final = "rw,exec,nosuid,nodev"
PATH: Final = f"{BIN_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROTOCOL_VERSION: Final = "1"
#: The environment the container always gets; a :class:`NetworkPlan` may not replace any of it.
BASE_ENVIRONMENT: Final = MappingProxyType(
    {
        "PATH": PATH,
        "HOME": HOME_DIR,
        "HL_WORKSPACE": WORKSPACE_DIR,
        "HL_PROTOCOL": PROTOCOL_VERSION,
    }
)
#: The worker's own time limit in seconds (``hl-worker.sh`` stops the run after it).
ENV_TIME_LIMIT: Final = "HL_TIME_LIMIT_SECONDS"
ENV_OUTPUTS: Final = "HL_OUTPUTS"
ENV_PLAN_FILE: Final = "HL_PLAN_FILE"
WATCHDOG_MARGIN: Final = 10
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: Network modes that are not a run's own network (shared with the host, another container or
#: every container, or no network at all).
_SHARED_NETWORK_MODES: Final = frozenset({"host", "bridge", "default", "none"})

#: gVisor's host pids budget: Docker's ``pids_limit`` is the pids cgroup of the *sandbox* (the
#: Sentry's Go threads, the Gofer, the ptrace platform's stub processes and their threads), not
#: of the run's tasks, which live inside the Sentry. Measured here (runsc 20221219, ptrace, 2
#: CPUs) under a fork bomb ``f(){ f|f& };f``: ~45-60 host tasks per run task the Sentry allows
#: (2926 host tasks at 64 run tasks, 13889 at 256), because stubs of short-lived processes
#: linger; ~50 at rest. A sandbox that reaches its cgroup limit dies (the Go runtime cannot
#: create a thread: exit 2, no run end), so the limit is sized for the worst case measured.
GVISOR_PIDS_BASE: Final = 256
GVISOR_PIDS_PER_PROCESS: Final = 128


def check_extra_mounts(
    settings: Settings,
    *,
    resolved: Mapping[str, str] | None = None,
) -> tuple[Mount, ...]:
    """Refuse dangerous extra mounts (of every run type) with :class:`MountRefusedError`.

    Pure; the rules live in :mod:`hardened_launcher.executor.mounts` (which also resolves
    symbolic links at start-up and again before each container is created). ``resolved``
    optionally maps a host path to its real path; both forms are judged. Returns every mount.
    """
    return check_mounts(settings, resolved=resolved)


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """Arguments of Docker's create call: ``create_args`` (the container's config) and
    ``host_config_args`` (its host config), in snake case; :func:`.create_body.create_body`
    turns them into the Engine API's body.
    """

    run_id: str
    image: str
    create_args: Mapping[str, Any]
    host_config_args: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The run's own time limit (its spec's ``limits.time_seconds``, at most the launcher's);
    #: None: the runner's.
    time_limit_seconds: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "create_args", MappingProxyType(dict(self.create_args)))
        object.__setattr__(self, "host_config_args", MappingProxyType(dict(self.host_config_args)))
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))


@dataclass(frozen=True, kw_only=True)
class NetworkPlan:
    """The run's network when the egress gate isolates it (from the run's egress session).

    ``network_mode`` is the run's own Docker network, ``dns`` its resolvers (the session's DNS
    sink), ``dns_search``/``dns_options`` their settings, and ``environment`` the non-secret
    proxy variables (``HTTP_PROXY`` …). Everything here ends up in Docker's stored container
    config, so it must be plumbing only; it is validated when built.
    """

    network_mode: str
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mode = self.network_mode
        if not mode or mode in _SHARED_NETWORK_MODES or mode.startswith("container:"):
            raise ValueError(f"network mode {mode!r} is not a run's own network")
        for address in self.dns:
            ipaddress.ip_address(address)  # ValueError if it is not an address
        for name, value in self.environment.items():
            if not _ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name in BASE_ENVIRONMENT or name in (ENV_TIME_LIMIT, ENV_OUTPUTS, ENV_PLAN_FILE):
                raise ValueError(f"{name} is set by the launcher and cannot be replaced")
            if "\0" in value:
                raise ValueError(f"the value of {name} holds a NUL byte")
        for item in (*self.dns_search, *self.dns_options):
            if not item or any(c.isspace() or c == "\0" for c in item):
                raise ValueError(f"{item!r} is not a DNS search domain or option")
        object.__setattr__(self, "dns", tuple(self.dns))
        object.__setattr__(self, "dns_search", tuple(self.dns_search))
        object.__setattr__(self, "dns_options", tuple(self.dns_options))
        object.__setattr__(self, "environment", MappingProxyType(dict(self.environment)))


def _bind(source: str, target: str, *, read_only: bool) -> dict[str, Any]:
    return {
        "Type": "bind",
        "Source": source,
        "Target": target,
        "ReadOnly": read_only,
        "BindOptions": {"Propagation": "rprivate"},
    }


def gvisor_run_tasks(pids: int) -> int:
    """The tasks a run limited to ``pids`` may hold under gVisor (capped for the host)."""
    return min(pids, GVISOR_MAX_RUN_TASKS)


def gvisor_sandbox_pids_limit(pids: int) -> int:
    """The host pids cgroup limit of a gVisor sandbox whose run is limited to ``pids`` tasks."""
    return GVISOR_PIDS_BASE + GVISOR_PIDS_PER_PROCESS * gvisor_run_tasks(pids)


def watchdog_seconds(time_limit: timedelta, settings: Settings) -> int:
    """When the worker stops its own run: after the launcher would have (limit, grace, margin)."""
    return math.ceil(
        time_limit.total_seconds() + settings.run_stop_grace.total_seconds() + WATCHDOG_MARGIN
    )


def build_container_spec(
    spec: RunSpec,
    settings: Settings,
    *,
    launcher_id: str,
    worker: VerifiedBinary,
    binaries: Sequence[VerifiedBinary] = (),
    network: NetworkPlan | None = None,
) -> ContainerSpec:
    """The hardened container for ``spec``. Pure: same inputs, same output, no I/O.

    ``worker`` is the verified worker program (mounted read-only and started as the entrypoint);
    ``binaries`` are the verified binaries the run asked for, mounted read-only in ``BIN_DIR``
    under their requested names. ``network`` puts the run on its egress session's network
    (replacing ``SPACELIFT_WORKER_NETWORK``); ``None`` keeps the configured network.
    """
    if spec.run_type not in RUN_TYPES:  # pragma: no cover - RunSpec already guarantees it
        raise ValueError("unknown run type")
    check_extra_mounts(settings)
    wanted = {b.name for b in spec.binaries}
    given = {b.name for b in binaries}
    if wanted != given:
        raise ValueError(
            f"verified binaries {sorted(given)} do not match the run's request {sorted(wanted)}"
        )

    mounts = [_bind(str(worker.path), f"{BIN_DIR}/{WORKER_NAME}", read_only=True)]
    mounts += [_bind(str(b.path), f"{BIN_DIR}/{b.name}", read_only=True) for b in binaries]
    mounts += [
        _bind(m.host_path, m.container_path, read_only=m.read_only)
        for m in settings.extra_mounts_for(spec.run_type)
    ]

    limits = check_run_limits(spec, settings)  # more than the operator allows: refused
    memory, pids, cpus = limits.memory_bytes, limits.pids, limits.cpus
    uid, gid = settings.worker_uid, settings.worker_gid
    # No core dumps: a dump would write the run's memory (its secrets) to disk.
    ulimits: list[dict[str, Any]] = [{"Name": "core", "Soft": 0, "Hard": 0}]
    host_pids = pids
    if is_gvisor_runtime(settings.worker_runtime):
        # Under gVisor Docker's pids cgroup counts the sandbox's own host threads, and the
        # Sentry dies (Go "failed to create new OS thread", exit 2, no output) when it hits
        # it. So the run's limit is enforced inside the sandbox, by the Sentry: RLIMIT_NPROC
        # counts the tasks of the run's UID in that sandbox's kernel only (fork → EAGAIN), and
        # cannot be raised (no capabilities, no-new-privileges). The host cgroup stays as a
        # bounded backstop sized for the sandbox. Not under runc: there RLIMIT_NPROC counts
        # every process of the UID on the whole host, so concurrent runs would share it.
        tasks = gvisor_run_tasks(pids)
        ulimits.append({"Name": "nproc", "Soft": tasks, "Hard": tasks})
        host_pids = gvisor_sandbox_pids_limit(tasks)

    labels = {
        LABEL_MANAGED: "true",
        LABEL_LAUNCHER_ID: launcher_id,
        LABEL_RUN_ID: spec.run_id,
    }
    environment = dict(BASE_ENVIRONMENT)
    # The worker's own deadline: if the launcher dies (SIGKILL), the run still ends. Later than
    # the launcher's stop (time limit + grace), so a live launcher always stops it first.
    environment[ENV_TIME_LIMIT] = str(watchdog_seconds(limits.time_limit, settings))
    environment[ENV_OUTPUTS] = OUTPUTS_DIR  # files the worker sends back after the run
    if spec.stage is not None:
        # A confirmed run's plan: written by the planning stage, given to the applying one.
        environment[ENV_PLAN_FILE] = PLAN_FILE
    if network is not None:
        environment.update(network.environment)  # validated: never replaces the base
    image = run_image(spec, settings)
    create_args: dict[str, Any] = {
        "image": image,
        # Fixed: the run's commands travel over stdin, never on the command line.
        "entrypoint": ["/bin/sh", f"{BIN_DIR}/{WORKER_NAME}"],
        "command": [],
        "user": f"{uid}:{gid}",
        "working_dir": WORKSPACE_DIR,
        "hostname": "run",
        # Plumbing only; no value here may depend on the run's secrets.
        "environment": environment,
        "labels": labels,
        # detach=False + stdin_open: Docker attaches all three streams and closes the
        # container's stdin when the launcher half-closes it (StdinOnce).
        "stdin_open": True,
        "tty": False,
        "detach": False,
    }
    host_config: dict[str, Any] = {
        "mounts": mounts,
        "tmpfs": {
            WORKSPACE_DIR: (
                f"{TMPFS_FLAGS},size={settings.run_workspace_bytes},mode=0700,uid={uid},gid={gid}"
            ),
            TMP_DIR: f"{TMPFS_FLAGS},size={settings.run_tmp_bytes},mode=1777",
            HOME_DIR: f"{TMPFS_FLAGS},size={HOME_BYTES},mode=0700,uid={uid},gid={gid}",
        },
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "pids_limit": host_pids,
        "mem_limit": memory,
        "memswap_limit": memory,  # no swap: secrets in memory never reach a swap device
        "nano_cpus": round(cpus * 1e9),
        "ipc_mode": "private",
        "init": True,
        "log_config": {"Type": "none", "Config": {}},
        "network_mode": settings.worker_network,
        "ulimits": ulimits,
        "oom_kill_disable": False,
    }
    if network is not None:
        host_config["network_mode"] = network.network_mode
        host_config["dns"] = list(network.dns)
        host_config["dns_search"] = list(network.dns_search)
        host_config["dns_opt"] = list(network.dns_options)
    if settings.worker_runtime is not None:
        host_config["runtime"] = settings.worker_runtime
    return ContainerSpec(
        run_id=spec.run_id,
        image=image,
        create_args=create_args,
        host_config_args=host_config,
        labels=labels,
        time_limit_seconds=limits.time_limit.total_seconds(),
    )
