"""A demo launcher run from the container image (``demo --launcher-image TAG``).

The launcher runs in the image as ``docker run … TAG start`` on the host network (the broker and
object storage listen on loopback), read-only, without capabilities, as the demo's own user, with
the Docker socket and the demo directory mounted at the same path (paths it hands to the Docker
daemon must mean the same on both sides). The token and key reach it as 0600 files through
``SPACELIFT_TOKEN_FILE`` / ``SPACELIFT_POOL_PRIVATE_KEY_FILE``: Docker stores a container's
environment on disk, so the secrets never go there; only non-secret settings are passed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hardened_launcher.private_files import replace_atomically

DOCKER_SOCKET = Path("/var/run/docker.sock")
SECRET_VARIABLES = ("SPACELIFT_TOKEN", "SPACELIFT_POOL_PRIVATE_KEY")


@dataclass(frozen=True, kw_only=True)
class ContainerCommand:
    """The ``docker run`` argv of one launcher and the environment of the docker CLI."""

    name: str
    argv: list[str]
    env: dict[str, str]


def container_name(root: Path, launcher_name: str) -> str:
    """Unique per demo directory, so stop() can remove what a killed ``docker run`` left."""
    tag = hashlib.sha256(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"hl-demo-{tag}-{launcher_name}"


def launcher_container(
    *,
    image: str,
    root: Path,
    launcher_name: str,
    directory: Path,
    launcher_env: Mapping[str, str],
    cli_env: Mapping[str, str],
) -> ContainerCommand:
    """Write the launcher's secrets to files under ``directory`` and build its ``docker run``."""
    secrets = directory / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    settings: dict[str, str] = {
        k: v for k, v in launcher_env.items() if k.startswith(("SPACELIFT_", "HL_"))
    }
    for variable in SECRET_VARIABLES:
        value = settings.pop(variable, "")
        if value:
            path = secrets / variable.lower()
            replace_atomically(path, value.encode("ascii"))
            settings[f"{variable}_FILE"] = str(path)
    # The image listens for /healthz on a fixed loopback port; on the host network several
    # launchers would collide, so only an explicit setting opens it.
    settings.setdefault("HL_METRICS_ADDRESS", "")
    # The audit directory defaults to <state>/audit here as outside the image.
    if "HL_STATE_DIR" in settings:
        settings.setdefault("HL_AUDIT_DIR", str(Path(settings["HL_STATE_DIR"]) / "audit"))
    name = container_name(root, launcher_name)
    argv = [
        "docker", "run", "--rm", "--name", name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",  # noqa: S108 - the container's own tmpfs
        "--security-opt", "no-new-privileges",
        "--user", f"{os.getuid()}:{os.getgid()}",
        "--group-add", str(DOCKER_SOCKET.stat().st_gid),
        "-v", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}",
        "-v", f"{root}:{root}",
    ]  # fmt: skip
    for variable in sorted(settings):
        argv += ["-e", variable]  # the value comes from the docker CLI's environment
    argv += [image, "start"]
    env = dict(cli_env)
    env.update(settings)
    return ContainerCommand(name=name, argv=argv, env=env)


def remove_container(name: str) -> None:
    """Best effort: a launcher container left by a killed ``docker run``."""
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False, timeout=60)
