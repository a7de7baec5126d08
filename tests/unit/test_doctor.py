"""doctor: every start-up check, with a fake Docker client and real issued credentials."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher import doctor
from hardened_launcher.doctor import CheckResult, Status, exit_code_for, render_table, run_checks
from hardened_launcher.errors import EXIT_CONFIGURATION, EXIT_INFRASTRUCTURE, EXIT_UNTRUSTED_INPUT
from hardened_launcher.identity import PoolPrivateKey
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import CertificateAuthority, issue_pool_token
from tests.unit.test_binaries_support import make_key
from tests.unit.test_launcher_start import make_release

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
KEY_CANARY_WINDOW = 24


class FakeDocker:
    def __init__(self, *, runtimes: dict[str, Any] | None = None, fail: bool = False) -> None:
        self.runtimes = runtimes if runtimes is not None else {"runc": {}}
        self.fail = fail

    def ping(self) -> bool:
        if self.fail:
            raise ConnectionError("socket missing")
        return True

    def info(self) -> dict[str, Any]:
        return {"ServerVersion": "99.0", "Runtimes": self.runtimes}

    def inspect_network(self, network: str) -> dict[str, Any]:
        raise LookupError(network)


def _factory(client: FakeDocker) -> Callable[[], FakeDocker]:
    return lambda: client


@pytest.fixture(scope="module")
def credentials() -> dict[str, str]:
    ca = CertificateAuthority.generate(not_before=NOW - timedelta(days=1))
    key = PoolPrivateKey.generate(rsa_key_bits=2048)
    token = issue_pool_token(
        ca,
        create_csr(key, parse_subject("/CN=ignored")),
        pool_id="pool-1",
        not_before=NOW - timedelta(hours=1),
        not_after=NOW + timedelta(days=30),
        broker_url="mqtts://127.0.0.1:8883",
        control_plane_url="https://127.0.0.1:8443",
        run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
    )
    other = PoolPrivateKey.generate(rsa_key_bits=2048)
    return {
        "token": token.to_encoded().reveal_text(),
        "key": base64.b64encode(key.to_pem().reveal()).decode(),
        "other_key": base64.b64encode(other.to_pem().reveal()).decode(),
        "ca_sha256": ca.fingerprint_sha256.hex(),
    }


def _env(tmp_path: Path, credentials: dict[str, str], **extra: str) -> dict[str, str]:
    env = {
        "HOME": str(tmp_path),
        "HL_STATE_DIR": str(tmp_path / "state"),
        "HL_CACHE_DIR": str(tmp_path / "cache"),
        "SPACELIFT_TOKEN": credentials["token"],
        "SPACELIFT_POOL_PRIVATE_KEY": credentials["key"],
        "HL_CA_FINGERPRINT": credentials["ca_sha256"],
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def release_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    key = make_key()
    path = tmp_path_factory.mktemp("keyring") / "release.asc"
    path.write_bytes(key.armored())
    return key.fingerprint, path


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_all_checks_pass_with_good_configuration(
    tmp_path: Path, credentials: dict[str, str], release_key: tuple[str, Path]
) -> None:
    del release_key
    release = make_release(tmp_path / "releases", tmp_path / "release-keys.asc")
    env = _env(
        tmp_path,
        credentials,
        HL_RELEASE_KEY_FINGERPRINTS=release.fingerprint,
        HL_RELEASE_KEYRING=str(release.keyring),
        HL_RELEASE_DIR=str(release.root),
    )
    results = run_checks(env, now=NOW, docker_factory=_factory(FakeDocker()))
    statuses = {r.name: r.status for r in results}
    assert statuses == {
        "settings": Status.PASS,
        "pool private key": Status.PASS,
        "pool token": Status.PASS,
        "transport": Status.PASS,
        "pool certificate": Status.PASS,
        "release keys": Status.PASS,
        "worker release": Status.PASS,
        "directories": Status.PASS,
        "audit log": Status.PASS,
        "docker": Status.PASS,
        "worker network": Status.PASS,
        "extra mounts": Status.PASS,
        "egress policy": Status.PASS,
        "run initialization policy": Status.PASS,
        "unsafe opt-ins": Status.PASS,
    }
    assert exit_code_for(results) == 0
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_transport_check_shows_poll_and_its_url(
    tmp_path: Path, credentials: dict[str, str]
) -> None:
    env = _env(
        tmp_path,
        credentials,
        SPACELIFT_WORKER_COMMS_PROTOCOL="poll",
        SPACELIFT_WORKER_COMMS_URL="https://cp.example.net:9443",
    )
    result = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))
    assert result["transport"].status is Status.PASS
    assert result["transport"].summary == (
        "poll to https://cp.example.net:9443 (SPACELIFT_WORKER_COMMS_URL)"
    )
    env = _env(tmp_path, credentials, SPACELIFT_WORKER_COMMS_PROTOCOL="mqtt")
    result = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))
    assert (
        result["transport"].summary == "mqtt to mqtts://127.0.0.1:8883 (SPACELIFT_TOKEN broker_url)"
    )


def test_transport_check_fails_when_poll_falls_back_to_an_http_url(
    tmp_path: Path, credentials: dict[str, str]
) -> None:
    ca = CertificateAuthority.generate(not_before=NOW - timedelta(days=1))
    key = PoolPrivateKey.generate(rsa_key_bits=2048)
    token = issue_pool_token(
        ca,
        create_csr(key, parse_subject("/CN=ignored")),
        pool_id="pool-1",
        not_before=NOW - timedelta(hours=1),
        not_after=NOW + timedelta(days=30),
        broker_url="mqtts://127.0.0.1:8883",
        control_plane_url="http://127.0.0.1:8080",
        run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
    )
    env = _env(tmp_path, credentials, SPACELIFT_WORKER_COMMS_PROTOCOL="poll")
    env["SPACELIFT_TOKEN"] = token.to_encoded().reveal_text()
    result = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))
    assert result["transport"].status is Status.FAIL
    assert "SPACELIFT_WORKER_COMMS_URL" in result["transport"].fix


def test_missing_credentials_fail_and_certificate_is_skipped(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "HL_STATE_DIR": str(tmp_path / "s"),
        "HL_CACHE_DIR": str(tmp_path / "c"),
    }
    results = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))
    assert results["pool private key"].status is Status.FAIL
    assert "base64 -w 0" in results["pool private key"].fix
    assert results["pool token"].status is Status.FAIL
    assert results["pool certificate"].status is Status.SKIP
    assert results["release keys"].status is Status.FAIL
    assert results["release keys"].reason == "release_keys_missing"
    assert results["worker release"].status is Status.FAIL
    assert results["worker release"].reason == "release_dir_missing"
    assert exit_code_for(list(results.values())) == EXIT_CONFIGURATION


def test_wrong_key_fails_the_certificate_check(tmp_path: Path, credentials: dict[str, str]) -> None:
    env = _env(tmp_path, credentials, SPACELIFT_POOL_PRIVATE_KEY=credentials["other_key"])
    results = run_checks(env, now=NOW, docker_factory=_factory(FakeDocker()))
    cert = _by_name(results)["pool certificate"]
    assert cert.status is Status.FAIL
    assert cert.exit_code == EXIT_UNTRUSTED_INPUT
    assert cert.fix
    # The first failure decides the exit code.
    assert exit_code_for(results) == EXIT_UNTRUSTED_INPUT


def test_expired_certificate_fails(tmp_path: Path, credentials: dict[str, str]) -> None:
    results = _by_name(
        run_checks(
            _env(tmp_path, credentials),
            now=NOW + timedelta(days=60),
            docker_factory=_factory(FakeDocker()),
        )
    )
    assert results["pool certificate"].status is Status.FAIL
    assert "expired" in results["pool certificate"].summary


def test_unpinned_ca_is_a_warning(tmp_path: Path, credentials: dict[str, str]) -> None:
    env = _env(tmp_path, credentials)
    del env["HL_CA_FINGERPRINT"]
    cert = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))[
        "pool certificate"
    ]
    assert cert.status is Status.WARN
    assert "HL_CA_FINGERPRINT" in cert.fix


def test_pin_mismatch_fails(tmp_path: Path, credentials: dict[str, str]) -> None:
    env = _env(tmp_path, credentials, HL_CA_FINGERPRINT="00" * 32)
    cert = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))[
        "pool certificate"
    ]
    assert cert.status is Status.FAIL


def test_bad_settings_fail_and_dependent_checks_skip(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "SPACELIFT_LAUNCHER_RUN_TIMEOUT": "70 minutes"}
    results = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))
    assert results["settings"].status is Status.FAIL
    assert "SPACELIFT_LAUNCHER_RUN_TIMEOUT" in results["settings"].summary
    for name in ("pool private key", "pool token", "directories", "run initialization policy"):
        assert results[name].status is Status.SKIP


def test_docker_unreachable(tmp_path: Path, credentials: dict[str, str]) -> None:
    results = run_checks(
        _env(tmp_path, credentials), now=NOW, docker_factory=_factory(FakeDocker(fail=True))
    )
    docker = _by_name(results)["docker"]
    assert docker.status is Status.FAIL
    assert docker.exit_code == EXIT_INFRASTRUCTURE
    assert "DOCKER_HOST" in docker.fix


def test_a_docker_host_that_is_not_a_unix_socket_is_a_configuration_failure(
    tmp_path: Path, credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    docker = _by_name(run_checks(_env(tmp_path, credentials), now=NOW))["docker"]
    assert docker.status is Status.FAIL
    assert docker.exit_code == EXIT_CONFIGURATION
    assert docker.reason == "docker_host_unsupported"
    assert "unix://" in docker.fix


def test_unknown_runtime(tmp_path: Path, credentials: dict[str, str]) -> None:
    env = _env(tmp_path, credentials, SPACELIFT_WORKER_RUNTIME="runsc")
    docker = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))["docker"]
    assert docker.status is Status.FAIL
    assert "runsc" in docker.summary
    env_ok = _env(tmp_path, credentials, SPACELIFT_WORKER_RUNTIME="runc")
    assert (
        _by_name(run_checks(env_ok, now=NOW, docker_factory=_factory(FakeDocker())))[
            "docker"
        ].status
        is Status.PASS
    )


def test_world_writable_directory_fails(tmp_path: Path, credentials: dict[str, str]) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    dirs = _by_name(
        run_checks(_env(tmp_path, credentials), now=NOW, docker_factory=_factory(FakeDocker()))
    )["directories"]
    assert dirs.status is Status.FAIL
    assert "HL_STATE_DIR" in dirs.summary


def test_no_secret_reaches_the_output(tmp_path: Path, credentials: dict[str, str]) -> None:
    # A key that does not match (so every check has something to say), rendered both ways.
    env = _env(tmp_path, credentials, SPACELIFT_POOL_PRIVATE_KEY=credentials["other_key"])
    results = run_checks(env, now=NOW, docker_factory=_factory(FakeDocker()))
    text = render_table(results) + json.dumps([r.summary + r.fix for r in results])
    for secret in (credentials["other_key"], credentials["token"]):
        for i in range(0, len(secret) - KEY_CANARY_WINDOW, KEY_CANARY_WINDOW):
            assert secret[i : i + KEY_CANARY_WINDOW] not in text


def test_pins_without_keyring_fail(tmp_path: Path, credentials: dict[str, str]) -> None:
    env = _env(tmp_path, credentials, HL_RELEASE_KEY_FINGERPRINTS="a" * 40)
    check = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))[
        "release keys"
    ]
    assert check.status is Status.FAIL
    assert "HL_RELEASE_KEYRING" in check.fix


def test_pinned_key_missing_from_keyring_fails(
    tmp_path: Path, credentials: dict[str, str], release_key: tuple[str, Path]
) -> None:
    env = _env(
        tmp_path,
        credentials,
        HL_RELEASE_KEY_FINGERPRINTS="b" * 40,
        HL_RELEASE_KEYRING=str(release_key[1]),
    )
    check = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))[
        "release keys"
    ]
    assert check.status is Status.FAIL
    assert "b" * 40 in check.summary


def test_render_table_has_header_and_one_row_per_check() -> None:
    results = [
        CheckResult(name="a", status=Status.PASS, summary="fine"),
        CheckResult(name="bb", status=Status.FAIL, summary="broken", fix="repair", exit_code=78),
    ]
    lines = render_table(results).splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL", "HOW", "TO", "FIX"]
    assert lines[2].split() == ["bb", "FAIL", "broken", "repair"]
    assert exit_code_for(results) == 78


def test_checks_are_registered_in_order() -> None:
    names = [check.__name__ for check in doctor.CHECKS]
    assert names.index("check_settings") == 0
    assert names.index("check_pool_key") < names.index("check_certificate")
    assert names.index("check_token") < names.index("check_certificate")


def test_cli_exits_non_zero_and_prints_json(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "DOCKER_HOST": "unix:///nonexistent.sock",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "hardened_launcher", "doctor", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert proc.returncode == EXIT_CONFIGURATION
    rows = json.loads(proc.stdout)
    assert {row["check"]: row["result"] for row in rows}["docker"] == "fail"
    assert "Traceback" not in proc.stderr


def test_policy_that_compiles_passes_and_a_broken_one_fails_with_its_location(
    tmp_path: Path, credentials: dict[str, str]
) -> None:
    good = tmp_path / "good.rego"
    good.write_text('package spacelift\n\ndeny contains "never" if { false }\n')
    bad = tmp_path / "bad.rego"
    bad.write_text("package spacelift\n\ndeny contains msg if {\n    msg := \n}\n")
    ok = _by_name(
        run_checks(
            _env(tmp_path, credentials, SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY=str(good)),
            now=NOW,
            docker_factory=_factory(FakeDocker()),
        )
    )["run initialization policy"]
    assert ok.status is Status.PASS
    assert "compiles" in ok.summary
    broken = _by_name(
        run_checks(
            _env(tmp_path, credentials, SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY=str(bad)),
            now=NOW,
            docker_factory=_factory(FakeDocker()),
        )
    )["run initialization policy"]
    assert broken.status is Status.FAIL
    assert "bad.rego:" in broken.summary
    assert "RUST_BACKTRACE" not in broken.summary


def test_audit_log_that_verifies_passes_and_a_tampered_one_fails(
    tmp_path: Path, credentials: dict[str, str]
) -> None:
    from hardened_launcher.audit import AuditEvent, Outcome, open_audit_log  # noqa: PLC0415

    env = _env(tmp_path, credentials)
    state = tmp_path / "state"
    log = open_audit_log(state, state / "audit")
    for i in range(3):
        log.record(AuditEvent(type="test.event", outcome=Outcome.INFO, fields={"i": i}))
    log.close()
    check = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))["audit log"]
    assert check.status is Status.PASS, check.summary
    assert "verify" in check.summary

    (segment,) = sorted((state / "audit").glob("*.jsonl"))
    segment.write_text(segment.read_text().replace('"i":1', '"i":7'))
    check = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))["audit log"]
    assert check.status is Status.FAIL
    assert segment.name in check.summary


@pytest.mark.parametrize("past", [timedelta(seconds=1), timedelta(minutes=2), timedelta(minutes=4)])
def test_a_certificate_accepted_only_within_the_clock_skew_is_shown_as_expired(
    tmp_path: Path, credentials: dict[str, str], past: timedelta
) -> None:
    # The certificate ends at NOW + 30 days; the default skew (5 min) still accepts it just after.
    cert = _by_name(
        run_checks(
            _env(tmp_path, credentials),
            now=NOW + timedelta(days=30) + past,
            docker_factory=_factory(FakeDocker()),
        )
    )["pool certificate"]
    assert cert.status is Status.WARN
    assert "expired" in cert.summary
    assert "clock skew" in cert.summary
    assert "-1" not in cert.summary
    assert "more days" not in cert.summary
    assert "pool reset" in cert.fix


def test_a_certificate_valid_for_hours_says_hours(
    tmp_path: Path, credentials: dict[str, str]
) -> None:
    cert = _by_name(
        run_checks(
            _env(tmp_path, credentials),
            now=NOW + timedelta(days=30) - timedelta(hours=5),
            docker_factory=_factory(FakeDocker()),
        )
    )["pool certificate"]
    assert "valid for 5 hours more" in cert.summary


@pytest.mark.parametrize("name", [b"\xff.rego", b"\xfe\xff-data.yaml", b"sub\xff/p.rego"])
def test_a_non_utf8_policy_file_name_fails_the_policy_check_without_crashing(
    tmp_path: Path, credentials: dict[str, str], name: bytes
) -> None:
    import os  # noqa: PLC0415

    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "ok.rego").write_text('package spacelift\n\ndeny contains "never" if { false }\n')
    odd = Path(os.fsdecode(bytes(policy) + b"/" + name))
    odd.parent.mkdir(exist_ok=True)
    odd.write_text("package spacelift\n")
    env = _env(tmp_path, credentials, SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY=str(policy))
    row = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))[
        "run initialization policy"
    ]
    assert row.status is Status.FAIL
    assert "not UTF-8" in row.summary
    assert "\\x" in row.summary  # the name shown escaped


@pytest.mark.parametrize(
    ("ipv6", "absent"), [(True, "ip6tables"), (True, "iptables"), (False, "iptables")]
)
def test_an_egress_policy_without_the_firewall_programs_fails_as_start_would(
    tmp_path: Path,
    credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    ipv6: bool,
    absent: str,
) -> None:
    import shutil  # noqa: PLC0415

    from hardened_launcher.egress import isolation  # noqa: PLC0415

    policy = tmp_path / "egress.yaml"
    policy.write_text('allow:\n  - {host: "vcs.corp.test", ports: [443]}\n')
    real_which = shutil.which
    monkeypatch.setattr(isolation, "ipv6_present", lambda: ipv6)
    monkeypatch.setattr(shutil, "which", lambda name: None if name == absent else real_which(name))
    env = _env(tmp_path, credentials, HL_EGRESS_POLICY=str(policy))
    check = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))[
        "egress policy"
    ]
    assert check.status is Status.FAIL
    assert check.reason == "egress_firewall_unavailable"
    assert absent in check.summary
    assert check.exit_code == EXIT_CONFIGURATION


def test_an_ipv4_only_host_does_not_need_ip6tables(
    tmp_path: Path, credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil  # noqa: PLC0415

    from hardened_launcher.egress import isolation  # noqa: PLC0415

    policy = tmp_path / "egress.yaml"
    policy.write_text('allow:\n  - {host: "vcs.corp.test", ports: [443]}\n')
    real_which = shutil.which
    monkeypatch.setattr(isolation, "ipv6_present", lambda: False)
    monkeypatch.setattr(
        shutil, "which", lambda name: None if name == "ip6tables" else real_which(name)
    )
    env = _env(tmp_path, credentials, HL_EGRESS_POLICY=str(policy))
    check = _by_name(run_checks(env, now=NOW, docker_factory=_factory(FakeDocker())))[
        "egress policy"
    ]
    assert check.status is Status.PASS, check.summary
