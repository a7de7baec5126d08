"""scripts/image: the image builds (cached by the digest of its inputs), runs as a non-root user
on a read-only root file system, carries OCI labels and a /healthz health check, and passes
``doctor`` in a container with real credentials given as files and the Docker socket."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_docker, require_tool
from tests.unit.test_launcher_start import credentials, make_release

__all__ = ["credentials"]

ROOT = Path(__file__).resolve().parents[2]
TAG = "hardened-launcher:integration-test"
UID = 10001

pytestmark = pytest.mark.integration


def _run(command: list[str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)


@pytest.fixture(scope="module")
def image() -> Iterator[dict[str, Any]]:
    require_docker()
    require_tool("mmdebstrap")
    env_tag = {**os.environ, "HL_IMAGE_TAG": TAG}
    built = subprocess.run(
        [str(ROOT / "scripts" / "image")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
        env=env_tag,
        cwd=ROOT,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    print(built.stderr.strip().splitlines()[-1])  # size and build time, for CI's log
    inspected = _run(["docker", "image", "inspect", TAG])
    assert inspected.returncode == 0, inspected.stderr
    yield json.loads(inspected.stdout)[0]
    _run(["docker", "image", "rm", TAG])  # the tag only; the digest-tagged stages stay cached


def test_labels_user_health_check_and_entrypoint(image: dict[str, Any]) -> None:
    config = image["Config"]
    labels = config["Labels"]
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == commit
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"]
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert len(labels["io.hardened-launcher.inputs-digest"]) == 64
    assert config["User"] == f"{UID}:{UID}"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert config["Entrypoint"] == ["/opt/hardened-launcher/bin/hardened-launcher"]


def test_a_second_build_is_served_from_the_digest_cache(image: dict[str, Any]) -> None:
    again = subprocess.run(
        [str(ROOT / "scripts" / "image"), "--tag", TAG],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=ROOT,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "base hardened-launcher-base:" in again.stderr
    assert ": cached" in again.stderr
    assert "app hardened-launcher:inputs-" in again.stderr
    assert (
        _run(["docker", "image", "inspect", "--format", "{{.Id}}", TAG]).stdout.strip()
        == image["Id"]
    )


def _in_image(*args: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return _run(
        [
            "docker",
            "run",
            "--rm",
            "--read-only",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            *extra,
            TAG,
            *args,
        ],
        timeout=300,
    )


def test_version_on_a_read_only_root_as_non_root(image: dict[str, Any]) -> None:
    done = _in_image("--version")
    assert done.returncode == 0, done.stderr
    assert (
        f"commit: {image['Config']['Labels']['org.opencontainers.image.revision']}" in done.stdout
    )
    who = _in_image(
        "-c",
        "import os; print(os.getuid(), os.getgid())",
        extra=("--entrypoint", "/opt/hardened-launcher/bin/python"),
    )
    assert who.stdout.split() == [str(UID), str(UID)]
    no_pip = _in_image(
        "-c", "import pip", extra=("--entrypoint", "/opt/hardened-launcher/bin/python")
    )
    assert no_pip.returncode != 0
    assert "ModuleNotFoundError" in no_pip.stderr


def test_policy_library_from_the_image_passes_its_tests(image: dict[str, Any]) -> None:
    done = _in_image(
        "policy",
        "test",
        "/opt/hardened-launcher/lib/python3.11/site-packages/hardened_launcher/policy_library",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS:" in done.stdout


def _owned(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    os.chown(path, UID, UID)
    path.chmod(mode)
    return path


def test_doctor_passes_in_the_container_with_file_credentials(
    image: dict[str, Any], credentials: tuple[str, str, str], tmp_path: Path
) -> None:
    token, key_b64, ca_fingerprint = credentials
    mounts = tmp_path / "mounts"
    mounts.mkdir(mode=0o755)
    secrets = mounts / "secrets"
    secrets.mkdir(mode=0o700)
    os.chown(secrets, UID, UID)
    _owned(secrets / "token", token.encode(), 0o600)
    _owned(secrets / "pool.key", base64.b64decode(key_b64), 0o600)  # the PEM itself
    release = make_release(tmp_path / "releases", tmp_path / "keys.asc")
    shutil.copytree(release.root, mounts / "releases")
    shutil.copy(release.keyring, mounts / "keys.asc")
    for path in [mounts / "releases", *(mounts / "releases").rglob("*"), mounts / "keys.asc"]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, UID, UID)
    socket_gid = Path("/var/run/docker.sock").stat().st_gid
    done = _run(
        [
            "docker",
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--group-add",
            str(socket_gid),
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            f"{state}:/var/lib/hardened-launcher",
            "-v",
            f"{mounts}:/run/hl:ro",
            "-e",
            "SPACELIFT_TOKEN_FILE=/run/hl/secrets/token",
            "-e",
            "SPACELIFT_POOL_PRIVATE_KEY_FILE=/run/hl/secrets/pool.key",
            "-e",
            f"HL_CA_FINGERPRINT={ca_fingerprint}",
            "-e",
            "HL_RELEASE_DIR=/run/hl/releases",
            "-e",
            "HL_RELEASE_KEYRING=/run/hl/keys.asc",
            "-e",
            f"HL_RELEASE_KEY_FINGERPRINTS={release.fingerprint}",
            TAG,
            "doctor",
            "--format",
            "json",
        ],
        timeout=300,
    )
    assert token not in done.stdout + done.stderr
    checks = json.loads(done.stdout)
    assert [c for c in checks if c["result"] not in {"pass", "skip"}] == [], done.stdout
    assert done.returncode == 0, done.stderr
    passed = [c["check"] for c in checks if c["result"] == "pass"]
    assert len(passed) >= 7, done.stdout  # all but the unconfigured policy file
    assert "settings" in passed


def test_a_demo_run_with_the_launcher_in_the_image(image: dict[str, Any], tmp_path: Path) -> None:
    # The whole demo (control plane, mosquitto, SeaweedFS on this host), with the launcher run
    # from the image: read-only, no capabilities, secrets as files, the socket mounted.
    require_tool("mosquitto")
    done = _run(
        [
            sys.executable, "-m", "hardened_launcher", "demo", "--plain", "--clean",
            "--dir", str(tmp_path / "demo"), "--launcher-image", TAG,
        ],
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.count("passed: as expected") == 4, done.stdout[-4000:]
    leftovers = _run(["docker", "ps", "-aq", "--filter", "name=hl-demo-"]).stdout.split()
    assert leftovers == [] or all(
        _run(["docker", "inspect", "--format", "{{.Config.Image}}", c]).stdout.strip() != TAG
        for c in leftovers
    )


_STUB_HEALTH_SERVER = """
import http.server, subprocess, sys, threading
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
host, port = sys.argv[1].rsplit(":", 1)
server = http.server.HTTPServer((host, int(port)), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.exit(subprocess.run(sys.argv[2:], check=False).returncode)
"""


def test_the_health_check_asks_healthz_on_the_metrics_address(image: dict[str, Any]) -> None:
    test = image["Config"]["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    env = dict(item.split("=", 1) for item in image["Config"]["Env"])
    address = env["HL_METRICS_ADDRESS"]
    python = "/opt/hardened-launcher/bin/python"
    healthy = _in_image(
        "-c", _STUB_HEALTH_SERVER, address, *test[1:], extra=("--entrypoint", python)
    )
    assert healthy.returncode == 0, healthy.stderr
    nothing_listening = _in_image(*test[2:], extra=("--entrypoint", test[1]))
    assert nothing_listening.returncode != 0
