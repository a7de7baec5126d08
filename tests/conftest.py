"""Shared test policy.

Integration tests (``@pytest.mark.integration``) use real components: gpg, openssl, dockerd,
mosquitto. Locally they skip when a component is missing; in CI (``CI=true``) or with
``HL_REQUIRE_INTEGRATION=1`` a missing component is a failure, so they can never be skipped
silently there.
"""

from __future__ import annotations

import compileall
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

import hardened_launcher


def integration_required() -> bool:
    return (
        os.environ.get("CI", "").lower() == "true"
        or os.environ.get("HL_REQUIRE_INTEGRATION") == "1"
    )


def require_tool(name: str) -> str:
    """Return the path of ``name`` or skip (fail in CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; integration tests need it"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _no_rust_backtrace(monkeypatch: pytest.MonkeyPatch) -> None:
    # Messages from Rust bindings must be judged as operators see them.
    monkeypatch.delenv("RUST_BACKTRACE", raising=False)


#: Device nodes every test assumes (CLI tests use /dev/zero as a hostile input). Tests run as
#: root in CI: a command that wrote "atomically" onto such a path would replace the node with a
#: file and break every later test and the machine, so each test is checked after it runs.
_DEVICE_NODES: Final = {"/dev/null": (1, 3), "/dev/zero": (1, 5), "/dev/full": (1, 7)}


def _broken_device_nodes() -> list[str]:
    broken = []
    for path, (major, minor) in _DEVICE_NODES.items():
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            broken.append(path)
            continue
        device = (os.major(info.st_rdev), os.minor(info.st_rdev))
        if not stat.S_ISCHR(info.st_mode) or device != (major, minor):
            broken.append(path)
    return broken


@pytest.fixture(autouse=True)
def _device_nodes_intact() -> Iterator[None]:
    """Fail the test that replaced /dev/null, /dev/zero or /dev/full (and put the node back
    when running as root, so that one fault does not fail the rest of the session)."""
    already = set(_broken_device_nodes())
    yield
    broken = [path for path in _broken_device_nodes() if path not in already]
    if not broken:
        return
    if os.geteuid() == 0:
        for path in broken:
            major, minor = _DEVICE_NODES[path]
            Path(path).unlink(missing_ok=True)
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    pytest.fail(f"this test replaced {', '.join(broken)} (a write through a device path)")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Write the package's bytecode once before the tests start their CLI subprocesses.

    With ``PYTHONDONTWRITEBYTECODE`` set (as in many CI and agent shells) no interpreter ever
    writes a ``.pyc``, so every ``hardened-launcher`` child (each ``controlplane`` command,
    ``keygen``, every ``start`` and its policy workers) compiled the same ~200 modules from
    source again: about 0.3 to 1.7 s of CPU each. ``compileall`` writes the cache regardless of
    that setting, and only for the files whose cache is missing or stale.
    """
    del session
    package = Path(hardened_launcher.__file__).parent
    compileall.compile_dir(package, quiet=1, workers=1)


def require_docker() -> None:
    """Skip (fail in CI) unless a Docker daemon answers on the default socket."""
    docker_cli = require_tool("docker")
    import subprocess  # noqa: PLC0415 - only integration tests need it

    probe = subprocess.run(
        [docker_cli, "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if probe.returncode != 0:
        message = "the Docker daemon is not reachable; integration tests need dockerd"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def runner_image() -> str:
    """The Debian + ansible-core + git runner image's tag (built once per Docker host, by the
    digest of its inputs; see hardened_launcher/demo/runner_image.py)."""
    from tests.integration.images import runner_image as ensure  # noqa: PLC0415

    return ensure()
