"""A dockerd of the test's own (never the shared one), for Docker outage drills.

Its socket, data root and exec root live in one short /tmp directory; vfs storage, no bridge,
no iptables, so starting and stopping it touches nothing else on the host.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from hardened_launcher.docker_api import DockerClient
from tests.conftest import integration_required, require_tool

__all__ = ["PrivateDockerd", "client_for", "engine_for", "import_busybox", "running_dockerd"]


def client_for(url: str, timeout: int) -> docker.DockerClient:
    # A pinned API version: "auto" would ask the daemon at construction, which may be down.
    return docker.DockerClient(base_url=url, timeout=timeout, version="1.41")


def engine_for(url: str, timeout: int) -> DockerClient:
    """The launcher's own client of the dockerd at ``url`` (``unix://``)."""
    return DockerClient.from_env({"DOCKER_HOST": url}, timeout_seconds=timeout)


class PrivateDockerd:
    """A dockerd of our own: its socket, data root and exec root in one /tmp directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        started = time.monotonic()
        log = (self.root / "dockerd.log").open("ab")
        self.process = subprocess.Popen(  # fixed argv
            [
                require_tool("dockerd"),
                f"--host={self.url}",
                f"--data-root={self.root / 'data'}",
                f"--exec-root={self.root / 'exec'}",
                f"--pidfile={self.root / 'docker.pid'}",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--storage-driver=vfs",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        client = client_for(self.url, 5)
        try:
            while time.monotonic() - started < 60:
                try:
                    client.ping()
                    return time.monotonic() - started
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.1)
        finally:
            client.close()
        raise AssertionError("the private dockerd did not start")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def running_dockerd() -> Iterator[PrivateDockerd]:
    """A started private dockerd, stopped and removed afterwards (use from a fixture)."""
    if os.geteuid() != 0:
        message = "a private dockerd needs root"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    require_tool("docker")
    root = Path(tempfile.mkdtemp(prefix="hl-dockerd-", dir="/tmp"))  # short: a socket path
    daemon = PrivateDockerd(root)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def import_busybox(dockerd: PrivateDockerd, monkeypatch: pytest.MonkeyPatch) -> str:
    """The busybox test image, imported into ``dockerd``."""
    from hardened_launcher.demo.image import BUSYBOX, ensure_busybox_image  # noqa: PLC0415

    if not BUSYBOX.is_file():
        pytest.fail("/bin/busybox is missing; install busybox-static")
    with monkeypatch.context() as m:
        m.setenv("DOCKER_HOST", dockerd.url)  # the docker CLI of ensure_busybox_image
        return ensure_busybox_image()
