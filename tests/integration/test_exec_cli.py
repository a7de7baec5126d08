"""`hardened-launcher exec` end to end: signed worker, real policy, dockerd, redacted output."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import yaml

from hardened_launcher import __version__
from hardened_launcher.executor.entrypoint import worker_script_path
from tests.conftest import require_docker
from tests.integration.executor_support import publish
from tests.integration.images import busybox_image
from tests.integration.test_egress_docker import (
    NS_HOST_IP,
    NS_SERVER_IP,
    SERVER_PORT,
    _leftovers,
    upstream,  # noqa: F401 - the fixture: an HTTP server in a network namespace of the test's
)
from tests.unit.test_binaries_support import make_key

pytestmark = pytest.mark.integration

ALLOW_IMAGE_POLICY = """package spacelift

deny contains msg if {
    not startswith(input.docker_image, "hl-test-busybox:")
    msg := sprintf("image %s is not allowed", [input.docker_image])
}

deny contains "revoked token" if {
    input.static_run_environment.environment_variables.TOKEN == sanitized("revoked-token-value")
}
"""


@pytest.fixture(scope="module")
def image() -> str:
    require_docker()
    return busybox_image()


def _setup(tmp_path: Path, policy: str | None, token: str, image: str) -> dict[str, str]:
    key = make_key()
    publish(tmp_path / "releases", "hl-worker", __version__, worker_script_path().read_bytes(), key)
    keyring = tmp_path / "release.asc"
    keyring.write_bytes(key.armored())
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""version: 1
run_id: exec-{secrets.token_hex(4)}
run_type: wo
image: {image}
phases:
  - name: main
    commands:
      - echo "token=$TOKEN"
secret_env:
  TOKEN: {token}
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACELIFT_", "HL_"))}
    env.update(
        HOME=str(tmp_path),
        HL_STATE_DIR=str(tmp_path / "state"),
        HL_CACHE_DIR=str(tmp_path / "cache"),
        HL_RELEASE_KEY_FINGERPRINTS=key.fingerprint,
        HL_RELEASE_KEYRING=str(keyring),
        SPACELIFT_WORKER_NETWORK="none",
    )
    if policy is not None:
        (tmp_path / "policy.rego").write_text(policy, encoding="utf-8")
        env["SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY"] = str(tmp_path / "policy.rego")
    return env


def _exec(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hardened_launcher",
            "-v",
            "exec",
            str(tmp_path / "spec.yaml"),
            "--releases",
            str(tmp_path / "releases"),
            "--log",
            str(tmp_path / "run.log"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=180,
    )


def _containers_left() -> set[str]:
    """Ids of run containers (image probes carry the managed label too; other processes on a
    shared dockerd make and remove containers at any time, so tests compare sets: no new id)."""
    return {
        str(item["Id"])
        for item in docker.from_env().api.containers(
            all=True, filters={"label": "io.hardened-launcher.managed=true"}
        )
        if "io.hardened-launcher.probe" not in (item.get("Labels") or {})
    }


def test_policy_allows_and_the_secret_never_shows(tmp_path: Path, image: str) -> None:
    token = f"CANARY-{secrets.token_hex(10)}"
    env = _setup(tmp_path, ALLOW_IMAGE_POLICY, token, image)
    # A launcher-side value (SPACELIFT_MASK_ENVS): masked by the process redactor, which the
    # run's redactor is layered over (compiled once, not again with the run's secret).
    launcher_side = f"MASKCANARY-{secrets.token_hex(10)}"
    env.update(SPACELIFT_MASK_ENVS="DEPLOY_KEY_X", DEPLOY_KEY_X=launcher_side)
    spec = tmp_path / "spec.yaml"
    text = spec.read_text(encoding="utf-8").replace(
        '      - echo "token=$TOKEN"\n', '      - echo "token=$TOKEN"\n      - echo "mask=$SHOWN"\n'
    )
    spec.write_text(text + f"env:\n  SHOWN: {launcher_side}\n", encoding="utf-8")
    done = _exec(tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "token=***" in done.stdout
    assert "mask=***" in done.stdout
    for value in (token, launcher_side):
        assert value not in done.stdout + done.stderr
        assert value not in (tmp_path / "run.log").read_text()
    audit = "".join(
        segment.read_text() for segment in sorted((tmp_path / "state" / "audit").glob("*.jsonl"))
    )
    assert '"policy.allowed"' in audit
    assert '"run.log_clean"' in audit
    assert token not in audit


def test_policy_denial_stops_the_run_before_any_container(tmp_path: Path, image: str) -> None:
    before = _containers_left()
    done = _exec(tmp_path, _setup(tmp_path, ALLOW_IMAGE_POLICY, "revoked-token-value", image))
    assert done.returncode == 65, done.stderr
    assert "revoked token" in done.stderr
    assert "reason: policy_denied" in done.stderr
    assert "revoked-token-value" not in done.stderr
    assert "Traceback" not in done.stderr
    assert not _containers_left() - before
    assert not (tmp_path / "run.log").exists() or (tmp_path / "run.log").read_bytes() == b""


def test_policy_that_does_not_compile_stops_start_up(tmp_path: Path, image: str) -> None:
    broken = "package spacelift\n\ndeny contains msg if {\n    msg := \n}\n"
    done = _exec(tmp_path, _setup(tmp_path, broken, "whatever-token-1", image))
    assert done.returncode == 78, done.stderr
    assert "policy.rego:" in done.stderr
    assert "panicked" not in done.stderr
    assert "Traceback" not in done.stderr


EXEC_EGRESS_POLICY = f"""version: 1
allow:
  - cidr: 198.18.0.0/24          # the test namespace's server, by address: no DNS at all
    ports: [{SERVER_PORT}]
"""

NC_GET = (
    "P=${HTTP_PROXY#http://}; "
    'printf \'GET %s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\' "$URL" | timeout 8 nc "${P%:*}" "${P##*:}"'
)


def test_exec_runs_behind_the_egress_proxy_when_a_policy_is_configured(
    tmp_path: Path,
    image: str,
    upstream: Path,  # noqa: F811 - the fixture imported above
) -> None:
    env = _setup(tmp_path, None, "unused-token-1", image)
    run_id = f"exec-egress-{secrets.token_hex(4)}"
    launcher = f"test-{secrets.token_hex(4)}"
    spec = {
        "version": 1,
        "run_id": run_id,
        "run_type": "wo",
        "image": image,
        "phases": [
            {
                "name": "main",
                "commands": [
                    f'echo "== allowed"; URL=http://{NS_SERVER_IP}:{SERVER_PORT}/; {NC_GET}',
                    f'echo "== denied"; URL=http://denied.test:{SERVER_PORT}/; {NC_GET}',
                ],
            }
        ],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    (tmp_path / "egress.yaml").write_text(EXEC_EGRESS_POLICY, encoding="utf-8")
    env.update(HL_EGRESS_POLICY=str(tmp_path / "egress.yaml"), HL_LAUNCHER_ID=launcher)
    done = _exec(tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "hello from the test namespace" in done.stdout
    assert "HTTP/1.1 403 Forbidden" in done.stdout
    assert "reason: egress_host_not_allowed" in done.stdout
    # The decisions: on the terminal's stderr and in the log file, marked lines.
    allowed = f"::hl:: egress: allowed GET {NS_SERVER_IP}:{SERVER_PORT} via {NS_SERVER_IP}"
    refused = f"::hl:: egress: refused GET denied.test:{SERVER_PORT}: egress_host_not_allowed"
    log = (tmp_path / "run.log").read_text()
    for line in (allowed, refused):
        assert line in done.stderr
        assert line in log
    audit = "".join(
        segment.read_text() for segment in sorted((tmp_path / "state" / "audit").glob("*.jsonl"))
    )
    assert audit.count('"egress.connection"') == 2
    assert '"egress.session"' in audit
    assert '"run.log_clean"' in audit
    # The denied name was decided without a connection: the server saw the proxy's one.
    assert upstream.read_text().split() == [NS_HOST_IP]
    assert _leftovers(docker.from_env(), run_id, f"{launcher}-exec") == []


def test_exec_removes_the_egress_leftovers_of_a_killed_launcher(tmp_path: Path, image: str) -> None:
    """A SIGKILLed process held an egress session; the next `exec` removes its network and its
    IPv4/IPv6 rules before running (issue 11)."""
    from tests.integration.test_egress_host import HOLDER, _require_root, _rules  # noqa: PLC0415

    _require_root()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"exec-killed-{secrets.token_hex(4)}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    name, bridge = holder.stdout.readline().split()
    holder.kill()
    holder.wait(timeout=10)
    assert docker.from_env().networks.list(names=[name])
    assert bridge in _rules("iptables")
    assert bridge in _rules("ip6tables")
    done = _exec(tmp_path, _setup(tmp_path, ALLOW_IMAGE_POLICY, "unused-token-2", image))
    assert done.returncode == 0, done.stderr
    assert not docker.from_env().networks.list(names=[name])
    assert bridge not in _rules("iptables")
    assert bridge not in _rules("ip6tables")
    audit = "".join(
        segment.read_text() for segment in sorted((tmp_path / "state" / "audit").glob("*.jsonl"))
    )
    assert '"egress.leftover_removed"' in audit
    assert name in audit
