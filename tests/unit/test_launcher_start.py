"""``hardened-launcher start`` up to the broker connection, with a real configuration.

Real pool credentials, a real signed hl-worker release (pysequoia), real settings, doctor checks,
audit log, replay cache and binary verification; Docker is a fake (no containers are made before
the connection) and the broker port on loopback is closed, so the connection is retried and
finally fails with the retryable broker error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from pysequoia import SignatureMode, Tsk, sign

from hardened_launcher import __version__
from hardened_launcher.cli import start
from hardened_launcher.directory_lock import DirectoryInUseError, DirectoryLock
from hardened_launcher.errors import EXIT_RETRYABLE, ConfigurationError
from hardened_launcher.identity import PoolPrivateKey
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import CertificateAuthority, issue_pool_token
from hardened_launcher.settings import Settings
from hardened_launcher.transport.tls import BrokerUnavailableError

POOL = "pool-start"
WORKER = "hl-worker"
FAST = start.ConnectRetry(
    attempt_timeout_seconds=0.3, first_delay_seconds=0.01, max_delay_seconds=0.02, max_attempts=3
)


class FakeDocker:
    """What start-up asks Docker before it connects: ping, info, leftover containers and
    egress networks (none); ``drivers`` answer the worker-network check."""

    def __init__(self, drivers: dict[str, str] | None = None) -> None:
        self.filters: list[list[str]] = []
        self.listed: list[list[str]] = []
        self.drivers = {"bridge": "bridge"} if drivers is None else drivers
        self.pings = 0

    def containers(self, *, labels: list[str]) -> list[Any]:
        self.filters.append(labels)
        return []

    def networks(self, *, labels: list[str]) -> list[Any]:
        self.listed.append(labels)
        return []

    def inspect_network(self, name: str) -> dict[str, Any]:
        if name not in self.drivers:
            raise LookupError(name)
        return {"Driver": self.drivers[name]}

    def ping(self) -> bool:
        self.pings += 1
        return True

    def info(self) -> dict[str, Any]:
        return {"ServerVersion": "fake-27.0", "Runtimes": {"runc": {}}}


@dataclass(frozen=True)
class Release:
    root: Path
    keyring: Path
    fingerprint: str


def make_release(root: Path, keyring: Path) -> Release:
    key = Tsk.generate("hardened-launcher test release <release@test.invalid>")
    directory = root / WORKER / __version__
    directory.mkdir(parents=True)
    data = b"#!/bin/sh\nexit 0\n"
    (directory / WORKER).write_bytes(data)
    sums = f"{hashlib.sha256(data).hexdigest()}  {WORKER}\n".encode()
    (directory / "SHA256SUMS").write_bytes(sums)
    (directory / "SHA256SUMS.sig").write_bytes(
        sign(key.signer(), sums, mode=SignatureMode.DETACHED, armor=True)
    )
    cert = key.extract_certificate()
    keyring.write_text(str(cert))
    return Release(root=root, keyring=keyring, fingerprint=cert.fingerprint)


def closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def credentials() -> tuple[str, str, str]:
    """(SPACELIFT_TOKEN, SPACELIFT_POOL_PRIVATE_KEY, HL_CA_FINGERPRINT) for a broker on a
    closed loopback port."""
    now = datetime.now(UTC)
    ca = CertificateAuthority.generate()
    key = PoolPrivateKey.generate_ec()
    token = issue_pool_token(
        ca,
        create_csr(key, parse_subject("/CN=ignored")),
        pool_id=POOL,
        broker_url=f"mqtts://127.0.0.1:{closed_loopback_port()}",
        control_plane_url="https://cp.example",
        run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
        not_before=now,
        not_after=now + timedelta(days=365),
    )
    return (
        token.to_encoded().reveal_text(),
        base64.b64encode(bytes(key.to_pem().reveal())).decode("ascii"),
        ca.fingerprint_sha256.hex(),
    )


@pytest.fixture
def environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, credentials: tuple[str, str, str]
) -> Iterator[dict[str, str]]:
    """A complete, valid configuration in ``os.environ``; the launcher's logger restored after."""
    import os  # noqa: PLC0415 - only to clear the launcher's namespaces

    for name in list(os.environ):
        if name.startswith(("SPACELIFT_", "HL_")) and name != "HL_REQUIRE_INTEGRATION":
            monkeypatch.delenv(name)
    release = make_release(tmp_path / "releases", tmp_path / "release-keys.asc")
    env = {
        "SPACELIFT_TOKEN": credentials[0],
        "SPACELIFT_POOL_PRIVATE_KEY": credentials[1],
        "HL_CA_FINGERPRINT": credentials[2],
        "HL_STATE_DIR": str(tmp_path / "state"),
        "HL_CACHE_DIR": str(tmp_path / "cache"),
        "HL_LAUNCHER_ID": "launcher-start-test",
        "HL_RELEASE_DIR": str(release.root),
        "HL_RELEASE_KEYRING": str(release.keyring),
        "HL_RELEASE_KEY_FINGERPRINTS": release.fingerprint,
        "HL_HEARTBEAT_INTERVAL": "1s",
        "HL_SHUTDOWN_GRACE": "0s",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    logger = logging.getLogger("hardened_launcher")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield env
    finally:
        logger.handlers, logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_start_passes_every_check_then_retries_the_unreachable_broker(
    environment: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    docker = FakeDocker()
    with pytest.raises(BrokerUnavailableError) as info:
        start.run(argparse.Namespace(), connect_retry=FAST, docker_factory=lambda: docker)
    assert info.value.exit_code == EXIT_RETRYABLE
    assert info.value.reason == "broker_unavailable"
    err = capsys.readouterr().err
    assert "startup.warning" not in err
    assert "attempt=1 " in err
    assert "attempt=2 " in err
    assert err.count("broker.unavailable") == 2  # the third failure is raised, not retried
    assert "launcher.started" not in err
    # Every step before the connection ran: doctor's Docker check, the leftover sweep for this
    # launcher, the worker release's verification (it is in the verified cache now).
    assert docker.pings >= 1
    assert docker.filters
    assert any("launcher-start-test" in label for label in docker.filters[0])
    # Leftover egress networks of a killed launcher are looked for too (issue 11).
    # under the current label and, for networks made by an older version, the old one.
    assert docker.listed == [
        ["io.hardened-launcher.egress-run"],
        ["dev.hardened-launcher.egress-run"],
    ]
    state = Path(environment["HL_STATE_DIR"])
    assert (state / "replay.sqlite3").exists()
    cache = Path(environment["HL_CACHE_DIR"])
    assert any(path.is_file() for path in cache.rglob("*"))
    assert environment["SPACELIFT_TOKEN"] not in err


def test_start_without_a_release_dir_is_a_configuration_error(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HL_RELEASE_DIR")
    with pytest.raises(ConfigurationError) as info:
        start.run(argparse.Namespace(), connect_retry=FAST, docker_factory=FakeDocker)
    assert info.value.reason == "release_dir_missing"
    assert "HL_RELEASE_DIR" in info.value.message


def test_start_with_pins_but_no_keyring_names_hl_release_keyring(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HL_RELEASE_KEYRING")
    with pytest.raises(ConfigurationError) as info:
        start.run(argparse.Namespace(), connect_retry=FAST, docker_factory=FakeDocker)
    assert "HL_RELEASE_KEYRING" in f"{info.value.message} {info.value.hint}"
    assert "/nonexistent" not in f"{info.value.message} {info.value.hint}"


#: Modules the daemon must not hold at idle: the MQTT client (on the long-poll protocol); the
#: Rego engine and its extensions (policies are evaluated in the policy worker process); package
#: metadata (``version`` and ``doctor`` only); PyYAML (loaded with the first YAML document: a run
#: spec, a secret file, an egress policy or policy data); tarfile (the first archive source);
#: difflib (a misspelt setting's suggestion).
NOT_AT_IDLE = (
    "yaml",
    "hardened_launcher.strict_yaml",
    "tarfile",
    "difflib",
    "paho",
    "hardened_launcher.transport.client",
    "regorus",
    "re2",
    "hardened_launcher.policy.builtins",
    "hardened_launcher.policy.jwt",
    "hardened_launcher.policy.static_checks",
    "importlib.metadata",
)

_START_UP_TO_THE_CONNECTION = """
import argparse, json, sys
from hardened_launcher.cli import start

class Docker:
    def ping(self): return True
    def info(self): return {"ServerVersion": "fake-27.0", "Runtimes": {"runc": {}}}
    def containers(self, *, labels): return []
    def networks(self, *, labels): return []
    def inspect_network(self, name): return {"Driver": "bridge"}

retry = start.ConnectRetry(
    attempt_timeout_seconds=0.3, first_delay_seconds=0.01, max_delay_seconds=0.02, max_attempts=1
)
try:
    start.run(argparse.Namespace(), connect_retry=retry, docker_factory=Docker)
    outcome = "returned"
except Exception as exc:
    outcome = type(exc).__name__
print(json.dumps([outcome, sorted(m for m in sys.argv[1:] if m in sys.modules)]))
"""


def test_start_up_imports_nothing_idle_does_not_need(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every start-up step runs (checks, release verification, components, replay cache) up to
    the long-poll connection, in a fresh interpreter; the modules idle does not use stay out."""
    monkeypatch.setenv("SPACELIFT_WORKER_COMMS_PROTOCOL", "poll")
    monkeypatch.setenv("SPACELIFT_WORKER_COMMS_URL", f"https://127.0.0.1:{closed_loopback_port()}")
    done = subprocess.run(
        [sys.executable, "-c", _START_UP_TO_THE_CONNECTION, *NOT_AT_IDLE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    outcome, imported = json.loads(done.stdout.splitlines()[-1])
    assert outcome == "BrokerUnavailableError", done.stderr[-2000:]
    assert imported == []
    assert (Path(environment["HL_STATE_DIR"]) / "replay.sqlite3").exists()


def settings(**extra: Any) -> Settings:
    return Settings(state_dir=Path("/s"), cache_dir=Path("/c"), audit_dir=Path("/a"), **extra)


@pytest.mark.parametrize(
    ("unset", "reason"),
    [
        ("HL_RELEASE_DIR", "release_dir_missing"),
        ("HL_RELEASE_KEY_FINGERPRINTS", "release_keys_missing"),
        ("HL_RELEASE_KEYRING", "release_keyring_missing"),
    ],
)
def test_release_settings_missing_name_the_variable(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, unset: str, reason: str
) -> None:
    monkeypatch.delenv(unset)
    with pytest.raises(ConfigurationError) as info:
        start.run(argparse.Namespace(), connect_retry=FAST, docker_factory=FakeDocker)
    assert info.value.reason == reason
    assert unset in info.value.message
    assert info.value.exit_code == 78


def test_connect_backs_off_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    monkeypatch.setattr(random, "uniform", lambda _low, high: high)

    class Unavailable:
        def start(self, *, timeout_seconds: float) -> None:  # noqa: ARG002
            raise BrokerUnavailableError("down", detail="refused")

    retry = start.ConnectRetry(first_delay_seconds=1, max_delay_seconds=4, max_attempts=5)
    with pytest.raises(BrokerUnavailableError):
        start._connect(Unavailable, retry=retry, stop=[])  # type: ignore[arg-type]
    assert sleeps == [1, 2, 4, 4]


def test_health_server_serves_readiness_and_metrics_from_the_daemon(tmp_path: Path) -> None:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from hardened_launcher.launcher.daemon import Daemon  # noqa: PLC0415
    from hardened_launcher.launcher.machine import LauncherMachine, MachineConfig  # noqa: PLC0415
    from hardened_launcher.launcher.metrics import LauncherMetrics  # noqa: PLC0415
    from hardened_launcher.transport.memory import MemoryBroker  # noqa: PLC0415

    assert start._start_health(settings(), LauncherMetrics(), None) is None  # type: ignore[arg-type]
    metrics = LauncherMetrics()
    metrics.run_refused("policy_denied")
    transport = MemoryBroker().worker("pool-a", "w1")
    machine = LauncherMachine(MachineConfig(worker_id="w1", pool_id="pool-a", version="1"))
    daemon = Daemon(machine=machine, transport=transport, run_function=None)  # type: ignore[arg-type]
    server = start._start_health(settings(metrics_address="127.0.0.1:0"), metrics, daemon)
    assert server is not None
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{server.url}/readyz", timeout=5)  # noqa: S310
        assert info.value.code == 503
        assert b"not_registered" in info.value.read()
        machine.registered = True
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{server.url}/readyz", timeout=5)  # noqa: S310
        assert b"control_plane_disconnected" in info.value.read()
        transport.start()
        with urllib.request.urlopen(f"{server.url}/readyz", timeout=5) as ok:  # noqa: S310
            assert ok.status == 200
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as page:  # noqa: S310
            assert b'hl_run_refusals_total{reason="policy_denied"} 1.0' in page.read()
    finally:
        server.stop()


def test_spooled_logs_of_earlier_runs_are_resumed_and_routed(tmp_path: Path) -> None:
    from hardened_launcher.launcher.daemon import Daemon  # noqa: PLC0415
    from hardened_launcher.launcher.machine import LauncherMachine, MachineConfig  # noqa: PLC0415
    from hardened_launcher.launcher.metrics import LauncherMetrics  # noqa: PLC0415
    from hardened_launcher.transport.memory import MemoryBroker  # noqa: PLC0415
    from hardened_launcher.transport.messages import LogUrlsRequest  # noqa: PLC0415

    spool = tmp_path / "log-spool"
    (spool / "run-old-1").mkdir(parents=True)
    (spool / "run-old-1" / "chunk-000000").write_bytes(b"left over\n")
    broker = MemoryBroker()
    transport = broker.worker("pool-a", "w1")
    cp = broker.control_plane()
    transport.start()
    cp.start()
    machine = LauncherMachine(MachineConfig(worker_id="w1", pool_id="pool-a", version="1"))
    daemon = Daemon(machine=machine, transport=transport, run_function=None)  # type: ignore[arg-type]
    resumed = start._resume_logs(spool, daemon, LauncherMetrics())
    try:
        assert set(resumed) == {"run-old-1"}
        assert "run-old-1" in machine.shipping
        deadline = time.monotonic() + 5
        seen: list[Any] = []
        while (
            time.monotonic() < deadline
            and LogUrlsRequest(run_id="run-old-1", from_chunk=0) not in seen
        ):
            daemon.step(0.01)
            received = cp.receive(timeout_seconds=0.01)
            if received is not None:
                seen.append(received.body)
        assert LogUrlsRequest(run_id="run-old-1", from_chunk=0) in seen
    finally:
        for sink in resumed.values():
            sink.shutdown()


@pytest.mark.parametrize(
    ("held", "reason"),
    [("HL_STATE_DIR", "state_dir_in_use"), ("audit", "audit_log_in_use")],
)
def test_a_second_daemon_on_the_same_directories_is_refused_before_touching_docker(
    environment: dict[str, str], held: str, reason: str
) -> None:
    state = Path(environment["HL_STATE_DIR"])
    directory = state if held == "HL_STATE_DIR" else state / "audit"  # the default audit dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    first = DirectoryLock.acquire(directory, what="x", reason="x", hint="x")
    docker = FakeDocker()
    try:
        with pytest.raises(DirectoryInUseError) as info:
            start.run(argparse.Namespace(), connect_retry=FAST, docker_factory=lambda: docker)
    finally:
        first.release()
    assert info.value.reason == reason
    assert info.value.exit_code == EXIT_RETRYABLE
    # The first daemon's containers and networks were never looked at, let alone removed.
    assert docker.filters == []
    assert docker.listed == []
