"""Start-up clean-up: remove containers left by an earlier life of this launcher.

A launcher that was killed (SIGKILL, power loss) cannot run its ``finally`` blocks, so its run
containers may survive it. At start-up, before taking new runs, the launcher lists containers
labelled with its own launcher ID, stops and removes each, and records each run as crashed.
"""

from __future__ import annotations

import logging
import secrets as random_source
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardened_launcher.audit import AuditEvent, AuditSink, Outcome
from hardened_launcher.errors import InfrastructureError
from hardened_launcher.executor.container_spec import LABEL_LAUNCHER_ID, LABEL_MANAGED, LABEL_RUN_ID
from hardened_launcher.executor.runner import DOCKER_ERRORS, translate_docker_error
from hardened_launcher.private_files import create_exclusive
from hardened_launcher.settings import Settings

__all__ = ["CrashedRun", "launcher_id_for", "remove_leftover_containers"]

log = logging.getLogger(__name__)

LAUNCHER_ID_FILE = "launcher-id"


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


def _read_id(path: Path) -> str:
    value = path.read_text(encoding="ascii").strip()
    if not value or len(value) > 63 or not all(c.isalnum() or c in "_.-" for c in value):
        raise InfrastructureError(
            f"the launcher ID file {path} is corrupt",
            hint=f"delete {path} (a new ID is made) or set HL_LAUNCHER_ID",
            reason="launcher_id_invalid",
        )
    return value


def remove_leftover_containers(
    client: Any,  # noqa: ANN401 - docker.DockerClient, untyped
    *,
    launcher_id: str,
    audit: AuditSink | None = None,
    stop_grace_seconds: int = 10,
    keep_run_ids: frozenset[str] = frozenset(),
) -> tuple[CrashedRun, ...]:
    """Stop and remove every container of ``launcher_id``; return the runs they belonged to.

    Containers of ``keep_run_ids`` (runs this process is running now) are left alone: the
    daemon calls this again while it runs, to remove what a Docker outage interrupted."""
    api = client.api
    try:
        found = api.containers(
            all=True,
            filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_LAUNCHER_ID}={launcher_id}"]},
        )
    except DOCKER_ERRORS as exc:
        raise translate_docker_error(exc, doing="list leftover run containers") from None
    crashed: list[CrashedRun] = []
    for item in found:
        container_id = str(item["Id"])
        labels = item.get("Labels") or {}
        run_id = str(labels.get(LABEL_RUN_ID, "unknown"))
        if run_id in keep_run_ids:
            continue
        try:
            if item.get("State") == "running":
                api.stop(container_id, timeout=stop_grace_seconds)
            api.remove_container(container_id, force=True, v=True)
        except DOCKER_ERRORS as exc:
            if getattr(exc, "status_code", None) != 404:
                raise translate_docker_error(exc, doing="remove a leftover run container") from None
        log.warning("executor.leftover_removed run_id=%s container=%s", run_id, container_id[:12])
        if audit is not None:
            audit.record(
                AuditEvent(
                    type="run.crashed",
                    outcome=Outcome.ERROR,
                    gate="execute",
                    run_id=run_id,
                    reason="launcher_restarted",
                    fields={"container_id": container_id, "launcher_id": launcher_id},
                )
            )
        crashed.append(CrashedRun(run_id=run_id, container_id=container_id))
    return tuple(crashed)
