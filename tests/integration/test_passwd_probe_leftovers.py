"""A passwd probe left by a launcher killed between create and remove is removed by the next
start's leftovers clean-up (real dockerd); a live process's probe is kept."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys

import pytest

from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.executor.cleanup import remove_leftover_containers
from hardened_launcher.executor.ownership import LABEL_OWNER, owner_token
from hardened_launcher.executor.passwd import LABEL_PROBE, PasswdFiles, probe_labels
from hardened_launcher.executor.runner import docker_client
from tests.conftest import require_docker
from tests.integration.images import busybox_image

pytestmark = pytest.mark.integration


def test_a_dead_launchers_probe_is_removed_at_restart() -> None:
    require_docker()
    import docker  # noqa: PLC0415

    client = docker.from_env()
    image = busybox_image()
    # The probe itself leaves nothing behind and reads the file.
    assert "root:" in (PasswdFiles(docker_client())._read(image, "/etc/passwd") or "")
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(child.stdout)
    dead = {**probe_labels(), LABEL_OWNER: owner_token(pid=dead_pid)}
    tag = secrets.token_hex(4)
    made = []
    try:
        for name, labels in (
            (f"hl-it-probe-dead-{tag}", dead),
            (f"hl-it-probe-live-{tag}", probe_labels()),
        ):
            made.append(
                client.api.create_container(
                    image=image,
                    entrypoint=["/nonexistent"],
                    command=[],
                    name=name,
                    network_disabled=True,
                    labels=labels,
                )["Id"]
            )
        audit = MemoryAuditLog()
        remove_leftover_containers(docker_client(), launcher_id=f"hl-it-probe-{tag}", audit=audit)
        left = {c["Id"] for c in client.api.containers(all=True, filters={"label": [LABEL_PROBE]})}
        assert made[0] not in left
        assert made[1] in left
        assert any(e.type == "executor.leftover_probe_removed" for e in audit.events)
    finally:
        for container_id in made:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(container_id, force=True)
