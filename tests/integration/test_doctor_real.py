"""doctor against real components: an openssl-made key and CSR, and the real Docker daemon."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.identity.csr import load_csr_pem
from hardened_launcher.identity.issuing import CertificateAuthority, issue_pool_token
from tests.conftest import require_docker, require_tool

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def openssl_pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    openssl = require_tool("openssl")
    work = tmp_path_factory.mktemp("openssl")
    # The exact command of the seed text.
    subprocess.run(
        [
            openssl,
            "req",
            "-new",
            "-newkey",
            "rsa:4096",
            "-nodes",
            "-keyout",
            str(work / "spacelift.key"),
            "-out",
            str(work / "spacelift.csr"),
            "-subj",
            "/CN=pool",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    now = datetime.now(UTC)
    ca = CertificateAuthority.generate()
    token = issue_pool_token(
        ca,
        load_csr_pem((work / "spacelift.csr").read_bytes()),
        pool_id="openssl-pool",
        not_before=now - timedelta(minutes=1),
        not_after=now + timedelta(days=90),
        broker_url="mqtts://127.0.0.1:8883",
        control_plane_url="http://127.0.0.1:8080",
        run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
    )
    # `base64 -w 0`, as the seed tells operators to do.
    encoded_key = subprocess.run(
        ["base64", "-w", "0", str(work / "spacelift.key")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {
        "token": token.to_encoded().reveal_text(),
        "key": encoded_key,
        "ca": ca.fingerprint_sha256.hex(),
    }


def _doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "hardened_launcher", "doctor", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    rows = {row["check"]: row for row in json.loads(proc.stdout)}
    return proc.returncode, rows, proc.stderr


def _base_env(tmp_path: Path, pool: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACELIFT_", "HL_"))}
    env.update(
        HOME=str(tmp_path),
        HL_STATE_DIR=str(tmp_path / "state"),
        HL_CACHE_DIR=str(tmp_path / "cache"),
        SPACELIFT_TOKEN=pool["token"],
        SPACELIFT_POOL_PRIVATE_KEY=pool["key"],
        HL_CA_FINGERPRINT=pool["ca"],
    )
    return env


def test_openssl_key_passes_identity_and_docker_is_reachable(
    tmp_path: Path, openssl_pool: dict[str, str]
) -> None:
    require_docker()
    _code, rows, stderr = _doctor(_base_env(tmp_path, openssl_pool))
    assert rows["pool private key"]["result"] == "pass", rows["pool private key"]
    assert "RSA-4096" in rows["pool private key"]["detail"]
    assert rows["pool token"]["result"] == "pass"
    assert rows["pool certificate"]["result"] == "pass", rows["pool certificate"]
    assert rows["docker"]["result"] == "pass", rows["docker"]
    assert "Traceback" not in stderr
    # poll (the default) needs an https URL: the token's http:// one is refused, the variable
    # fixes it.
    assert rows["transport"]["result"] == "fail", rows["transport"]
    env = _base_env(tmp_path, openssl_pool)
    env["SPACELIFT_WORKER_COMMS_URL"] = "https://cp.example.net:8443"
    _code, rows, _ = _doctor(env)
    assert rows["transport"]["result"] == "pass", rows["transport"]
    assert "https://cp.example.net:8443" in rows["transport"]["detail"]


def test_unreachable_docker_socket_fails(tmp_path: Path, openssl_pool: dict[str, str]) -> None:
    env = _base_env(tmp_path, openssl_pool)
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-such-docker.sock"
    code, rows, _ = _doctor(env)
    assert rows["docker"]["result"] == "fail"
    assert code != 0


def test_key_given_as_raw_pem_is_refused_with_advice(
    tmp_path: Path, openssl_pool: dict[str, str]
) -> None:
    env = _base_env(tmp_path, openssl_pool)
    env["SPACELIFT_POOL_PRIVATE_KEY"] = base64.b64decode(openssl_pool["key"]).decode()
    code, rows, _ = _doctor(env)
    assert rows["pool private key"]["result"] == "fail"
    assert "base64" in (rows["pool private key"]["detail"] + rows["pool private key"]["fix"])
    assert "PRIVATE KEY" not in json.dumps(rows)
    assert code != 0


@pytest.mark.parametrize("length", [12, 64])
def test_host_network_named_by_its_id_is_refused(
    tmp_path: Path, openssl_pool: dict[str, str], length: int
) -> None:
    require_docker()
    import docker  # noqa: PLC0415 - only with a real daemon

    host_id = docker.from_env().networks.get("host").id
    env = _base_env(tmp_path, openssl_pool)
    env["SPACELIFT_WORKER_NETWORK"] = host_id[:length]  # no "host" in the name: the driver tells
    code, rows, stderr = _doctor(env)
    assert rows["worker network"]["result"] == "fail", rows["worker network"]
    assert "driver host" in rows["worker network"]["detail"]
    assert "HL_UNSAFE_SHARED_NETWORK" in rows["worker network"]["fix"]
    assert code == 78
    assert "Traceback" not in stderr


def test_missing_worker_network_fails_before_any_run(
    tmp_path: Path, openssl_pool: dict[str, str]
) -> None:
    require_docker()
    env = _base_env(tmp_path, openssl_pool)
    env["SPACELIFT_WORKER_NETWORK"] = "hl-no-such-network-7f3a"
    _code, rows, _ = _doctor(env)
    assert rows["worker network"]["result"] == "fail"
    assert "every run would fail" in rows["worker network"]["detail"]
