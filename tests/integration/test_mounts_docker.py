"""Operator mounts on the real Docker daemon: the container mounts the path resolved at start-up
(not the configured spelling), and a link swapped after start-up refuses the run before any
container exists."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import docker
import pytest

from hardened_launcher import __version__
from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.executor.errors import MountRefusedError
from hardened_launcher.executor.logsink import FileLogSink
from hardened_launcher.executor.mounts import resolve_mounts
from hardened_launcher.executor.runner import DockerRunner, docker_client
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.pipeline import run_pipeline
from hardened_launcher.redaction import Redactor
from hardened_launcher.settings import Mount
from tests.integration.executor_support import settings_for, signed_release
from tests.integration.images import busybox_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image() -> str:
    return busybox_image()


def _spec(image: str, run_id: str) -> Any:
    return run_spec_from_mapping(
        {
            "version": 1,
            "run_id": run_id,
            "run_type": "ro",
            "image": image,
            "phases": [{"name": "main", "commands": ["cat /mnt/data/hello"]}],
        }
    )


def _containers(run_id: str) -> list[Any]:
    return list(
        docker.from_env().api.containers(
            all=True, filters={"label": f"io.hardened-launcher.run-id={run_id}"}
        )
    )


def _layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    data, other = tmp_path / "data", tmp_path / "other"
    for directory, text in ((data, "from-data"), (other, "from-other")):
        directory.mkdir()
        (directory / "hello").write_text(text)
        directory.chmod(0o755)
        (directory / "hello").chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(data)
    return data, other, link


def test_the_container_mounts_the_resolved_path(image: str, tmp_path: Path) -> None:
    data, _other, link = _layout(tmp_path)
    release = signed_release(tmp_path)
    settings = settings_for(
        tmp_path,
        worker_extra_mounts_ro=(Mount(host_path=f"/{link}", container_path="/mnt/data"),),
    )
    mounts = resolve_mounts(settings)
    runner = DockerRunner(
        docker_client(),
        logs_timeout=settings.launcher_logs_timeout,
        run_timeout=settings.launcher_run_timeout,
        stop_grace=settings.run_stop_grace,
        mounts=mounts,
    )
    run_id = f"run-{secrets.token_hex(4)}"
    sources: list[str] = []

    def inspect(container_id: str) -> None:
        info = docker.from_env().api.inspect_container(container_id)
        sources.extend(m["Source"] for m in info["Mounts"] if m["Destination"] == "/mnt/data")

    log = tmp_path / "run.log"
    result = run_pipeline(
        _spec(image, run_id),
        settings=settings,
        launcher_id=f"test-{secrets.token_hex(4)}",
        worker_version=__version__,
        binaries=release.gate,
        policy=None,
        runner=runner,
        redactor=Redactor(),
        sink=FileLogSink(log),
        audit=MemoryAuditLog(),
        on_started=inspect,
    )
    assert result.exit_code == 0, log.read_text()
    assert "from-data" in log.read_text()
    assert sources == [str(data)]  # the real path, not "//…/link"
    assert _containers(run_id) == []


def test_a_link_swapped_after_start_up_refuses_the_run_before_any_container(
    image: str, tmp_path: Path
) -> None:
    _data, other, link = _layout(tmp_path)
    release = signed_release(tmp_path)
    settings = settings_for(
        tmp_path,
        worker_extra_mounts_ro=(Mount(host_path=str(link), container_path="/mnt/data"),),
    )
    runner = DockerRunner(
        docker_client(),
        logs_timeout=settings.launcher_logs_timeout,
        run_timeout=settings.launcher_run_timeout,
        stop_grace=settings.run_stop_grace,
        mounts=resolve_mounts(settings),  # start-up
    )
    link.unlink()
    link.symlink_to(other)  # after start-up, before the run
    run_id = f"run-{secrets.token_hex(4)}"
    log = tmp_path / "run.log"
    with pytest.raises(MountRefusedError) as info:
        run_pipeline(
            _spec(image, run_id),
            settings=settings,
            launcher_id=f"test-{secrets.token_hex(4)}",
            worker_version=__version__,
            binaries=release.gate,
            policy=None,
            runner=runner,
            redactor=Redactor(),
            sink=FileLogSink(log),
            audit=MemoryAuditLog(),
        )
    assert info.value.reason == "mount_changed"
    assert _containers(run_id) == []
    assert "from-other" not in (log.read_text() if log.exists() else "")
