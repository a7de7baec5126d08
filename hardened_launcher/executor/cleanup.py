"""Start-up clean-up: remove containers left by an earlier life of this launcher or ``exec``.

A launcher or ``exec`` that was killed (SIGKILL, power loss) cannot run its ``finally`` blocks,
so its run containers may survive it. One label scheme (:mod:`.ownership`) tells who owns each
container and until when. At start-up the daemon removes every container of its own launcher
ID (:func:`remove_leftover_containers`), and both the daemon and ``exec`` remove the *stale*
containers of the ``exec`` family (:func:`remove_stale_containers`: owner gone, deadline
passed); each removal is recorded as a crashed run.
"""

from __future__ import annotations

import logging
import os
import re
import secrets as random_source
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hardened_launcher.ascii_text import trim
from hardened_launcher.audit import AuditEvent, AuditSink, Outcome
from hardened_launcher.bounded_input import read_bounded
from hardened_launcher.docker_api import NotFoundError
from hardened_launcher.errors import ConfigurationError, InfrastructureError
from hardened_launcher.executor.container_spec import LABEL_LAUNCHER_ID, LABEL_MANAGED, LABEL_RUN_ID
from hardened_launcher.executor.ownership import (
    LABEL_DEADLINE,
    LABEL_OWNER,
    is_stale,
    owner_alive,
    owner_token,
)
from hardened_launcher.executor.passwd import LABEL_PROBE, PROBE_DEADLINE_SECONDS
from hardened_launcher.executor.runner import DOCKER_ERRORS, translate_docker_error
from hardened_launcher.private_files import create_exclusive
from hardened_launcher.settings import Settings

if TYPE_CHECKING:
    from hardened_launcher.docker_api import DockerClient
    from hardened_launcher.docker_api.models import ContainerSummary

__all__ = [
    "CrashedRun",
    "LauncherIdInUseError",
    "exec_launcher_id",
    "launcher_id_for",
    "remove_leftover_containers",
    "remove_stale_containers",
]

log = logging.getLogger(__name__)

LAUNCHER_ID_FILE = "launcher-id"
EXEC_SUFFIX = "-exec"


@dataclass(frozen=True, kw_only=True)
class CrashedRun:
    run_id: str
    container_id: str


def launcher_id_for(settings: Settings) -> str:
    """``HL_LAUNCHER_ID``, else a random ID created once in ``<state_dir>/launcher-id``."""
    if settings.launcher_id is not None:
        return settings.launcher_id
    path = settings.state_dir / LAUNCHER_ID_FILE
    try:
        return _read_id(path)
    except FileNotFoundError:
        pass
    value = f"hl-{random_source.token_hex(8)}"
    try:
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_exclusive(path, (value + "\n").encode("ascii"))
    except FileExistsError:
        return _read_id(path)  # another process won the race
    except OSError as exc:
        raise InfrastructureError(
            f"cannot create the launcher ID file {path}: {exc.strerror}",
            hint="make HL_STATE_DIR writable by the launcher, or set HL_LAUNCHER_ID",
            reason="state_dir_unwritable",
        ) from None
    return value


#: A launcher ID file holds one ID (at most 63 characters) and a line end.
_ID_FILE_MAX_BYTES = 128
#: The rule of ``HL_LAUNCHER_ID`` (settings): 1 to 63 ASCII letters, digits and ``_.-``, the
#: first a letter or digit.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def _read_id(path: Path) -> str:
    """The ID in ``path`` (``FileNotFoundError`` if there is none), by the rule of
    ``HL_LAUNCHER_ID``; anything else (another byte, a directory, a huge file) is refused."""
    os.lstat(path)  # FileNotFoundError: the caller makes a new ID

    def corrupt(message: str, **_: object) -> InfrastructureError:
        return InfrastructureError(
            message,
            hint=f"delete {path} (a new ID is made) or set HL_LAUNCHER_ID",
            reason="launcher_id_invalid",
        )

    data = read_bounded(
        path,
        max_bytes=_ID_FILE_MAX_BYTES,
        what="launcher ID file",
        unreadable=corrupt,
        too_large=corrupt,
        reason="launcher_id_invalid",
    )
    value = trim(bytes(data).decode("latin-1"))
    if not _ID_RE.fullmatch(value):
        raise corrupt(f"the launcher ID file {path} is corrupt")
    return value


def _list(api: DockerClient, launcher_id: str) -> list[ContainerSummary]:
    try:
        return api.containers(
            labels=[f"{LABEL_MANAGED}=true", f"{LABEL_LAUNCHER_ID}={launcher_id}"]
        )
    except DOCKER_ERRORS as exc:
        raise translate_docker_error(exc, doing="list leftover run containers") from None


def _remove(
    api: DockerClient,
    item: ContainerSummary,
    *,
    launcher_id: str,
    reason: str,
    audit: AuditSink | None,
    stop_grace_seconds: int,
) -> CrashedRun:
    container_id = str(item.get("Id", ""))
    labels = item.get("Labels") or {}
    run_id = str(labels.get(LABEL_RUN_ID, "unknown"))
    try:
        if item.get("State") == "running":
            api.stop(container_id, timeout=stop_grace_seconds)
        api.remove_container(container_id, force=True)
    except NotFoundError:
        pass
    except DOCKER_ERRORS as exc:
        raise translate_docker_error(exc, doing="remove a leftover run container") from None
    log.warning(
        "executor.leftover_removed run_id=%s container=%s reason=%s",
        run_id,
        container_id[:12],
        reason,
    )
    if audit is not None:
        audit.record(
            AuditEvent(
                type="run.crashed",
                outcome=Outcome.ERROR,
                gate="execute",
                run_id=run_id,
                reason=reason,
                fields={"container_id": container_id, "launcher_id": launcher_id},
            )
        )
    return CrashedRun(run_id=run_id, container_id=container_id)


def exec_launcher_id(launcher_id: str) -> str:
    """The launcher ID of ``exec`` runs (never the daemon's: a daemon start removes its own)."""
    return f"{launcher_id}{EXEC_SUFFIX}"[:63]


class LauncherIdInUseError(ConfigurationError):
    """Another live process runs containers under this launcher's ID (exit 78)."""

    default_reason = "launcher_id_in_use"


def _owned_by_another_live_process(item: ContainerSummary, me: str) -> bool:
    owner = str((item.get("Labels") or {}).get(LABEL_OWNER, ""))
    return bool(owner) and owner != me and owner_alive(owner) is True


def _launcher_id_in_use(launcher_id: str, live: list[ContainerSummary]) -> LauncherIdInUseError:
    owner = str((live[0].get("Labels") or {}).get(LABEL_OWNER, ""))
    pid = owner.split(":")[1] if owner.count(":") == 2 else "?"
    return LauncherIdInUseError(
        f"launcher ID {launcher_id} is in use by another live process (pid {pid}, "
        f"{len(live)} run container(s)); nothing was stopped",
        hint="give each launcher its own HL_LAUNCHER_ID (or unset it: each HL_STATE_DIR then "
        "keeps its own), or stop the other launcher first",
    )


def remove_stale_containers(
    client: DockerClient,
    *,
    launcher_ids: tuple[str, ...],
    audit: AuditSink | None = None,
    stop_grace_seconds: int = 10,
    now: float | None = None,
) -> tuple[CrashedRun, ...]:
    """Remove the containers of ``launcher_ids`` that no owner can still need: their owner ran
    on this host's current boot and is gone (SIGKILL, crash), or their deadline passed.

    Safe while other launchers or ``exec`` runs are live: their containers are not stale.
    """
    moment = time.time() if now is None else now
    removed: list[CrashedRun] = []
    for launcher_id in launcher_ids:
        for item in _list(client, launcher_id):
            labels = {str(k): str(v) for k, v in (item.get("Labels") or {}).items()}
            if not is_stale(labels, now=moment):
                continue
            removed.append(
                _remove(
                    client,
                    item,
                    launcher_id=launcher_id,
                    reason="owner_gone",
                    audit=audit,
                    stop_grace_seconds=stop_grace_seconds,
                )
            )
    return tuple(removed)


def remove_stale_probes(
    client: DockerClient,
    *,
    audit: AuditSink | None = None,
    now: float | None = None,
) -> tuple[str, ...]:
    """Remove passwd probes (never-started containers, :mod:`.passwd`) no owner can need: their
    owner is gone or their deadline passed; a probe of an older version (no owner label) once
    it is older than a probe's deadline. Best effort (logged, retried at the next clean-up);
    returns the container ids removed. A live process's probe is never touched."""
    moment = time.time() if now is None else now
    try:
        found = client.containers(labels=[LABEL_PROBE])
    except DOCKER_ERRORS as exc:
        log.warning("executor.probe_list_failed error=%s", type(exc).__name__)
        return ()
    removed: list[str] = []
    for item in found:
        labels = {str(k): str(v) for k, v in (item.get("Labels") or {}).items()}
        created = item.get("Created")
        legacy = LABEL_OWNER not in labels and LABEL_DEADLINE not in labels
        old = isinstance(created, int) and created + PROBE_DEADLINE_SECONDS < moment
        if not (is_stale(labels, now=moment) or (legacy and old)):
            continue
        container_id = str(item.get("Id", ""))
        try:
            client.remove_container(container_id, force=True)
        except NotFoundError:
            pass
        except DOCKER_ERRORS:
            log.warning("executor.probe_not_removed container=%s", container_id[:12])
            continue
        removed.append(container_id)
        log.warning("executor.leftover_probe_removed container=%s", container_id[:12])
        if audit is not None:
            audit.record(
                AuditEvent(
                    type="executor.leftover_probe_removed",
                    outcome=Outcome.INFO,
                    gate="execute",
                    reason="owner_gone",
                    fields={"container_id": container_id, "probe": labels.get(LABEL_PROBE, "")},
                )
            )
    return tuple(removed)


def remove_leftover_containers(
    client: DockerClient,
    *,
    launcher_id: str,
    audit: AuditSink | None = None,
    stop_grace_seconds: int = 10,
    keep_run_ids: frozenset[str] = frozenset(),
    reason: str = "launcher_restarted",
) -> tuple[CrashedRun, ...]:
    """At daemon start: stop and remove every container of ``launcher_id`` (this daemon's
    earlier life), and the stale ones of its ``exec`` runs; return the runs they belonged to.

    Containers of ``keep_run_ids`` (runs this process is running now) are left alone: the
    daemon calls this again while it runs (``reason`` ``docker_restarted``), to remove what a
    Docker outage interrupted.

    A container whose owner label names another process that is still alive is never touched:
    another launcher uses the same ID (two daemons given one ``HL_LAUNCHER_ID``). At start-up
    (``reason`` ``launcher_restarted``) that refuses the start (:class:`LauncherIdInUseError`);
    later it is logged and skipped."""
    items = _list(client, launcher_id)
    me = owner_token()
    live = [item for item in items if _owned_by_another_live_process(item, me)]
    refused = bool(live) and reason == "launcher_restarted"
    for item in live:
        if audit is not None:
            audit.record(
                AuditEvent(
                    type="executor.launcher_id_shared",
                    outcome=Outcome.DENY if refused else Outcome.ERROR,
                    gate="execute",
                    reason="launcher_id_in_use",
                    fields={
                        "container_id": str(item.get("Id", ""))[:64],
                        "launcher_id": launcher_id,
                        "owner": str((item.get("Labels") or {}).get(LABEL_OWNER, ""))[:128],
                        "action": "start_refused" if refused else "left_alone",
                    },
                )
            )
    if refused:
        raise _launcher_id_in_use(launcher_id, live)
    for item in live:
        log.error(
            "executor.launcher_id_shared container=%s owner=%s (another live launcher uses "
            "this launcher ID; its container is left alone)",
            str(item.get("Id", ""))[:12],
            str((item.get("Labels") or {}).get(LABEL_OWNER, "")),
        )
    crashed = [
        _remove(
            client,
            item,
            launcher_id=launcher_id,
            reason=reason,
            audit=audit,
            stop_grace_seconds=stop_grace_seconds,
        )
        for item in items
        if str((item.get("Labels") or {}).get(LABEL_RUN_ID, "unknown")) not in keep_run_ids
        and item not in live
    ]
    crashed += remove_stale_containers(
        client,
        launcher_ids=(exec_launcher_id(launcher_id),),
        audit=audit,
        stop_grace_seconds=stop_grace_seconds,
    )
    remove_stale_probes(client, audit=audit)
    return tuple(crashed)
