"""Local probes and the probe loop: faults found, posted on change, leftovers cleaned up until
Docker lets it happen; the daemon's readiness names the fault."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from hardened_launcher.launcher.daemon import Daemon
from hardened_launcher.launcher.machine import LauncherMachine, LocalHealth, MachineConfig
from hardened_launcher.launcher.probes import LocalProbes, ProbeLoop
from hardened_launcher.transport.memory import MemoryBroker
from hardened_launcher.transport.messages import Assign, Refuse


class FlakyDocker:
    def __init__(self) -> None:
        self.up = True
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        if not self.up:
            raise ConnectionError("docker.sock: connection refused")
        return True


def _owed(loop: ProbeLoop) -> bool:
    return loop.cleanup_owed  # a call, so mypy does not keep an earlier narrowing


def test_state_and_docker_probes(tmp_path: Path) -> None:
    docker = FlakyDocker()
    probes = LocalProbes(state_dir=tmp_path, docker_ping=docker.ping)
    assert probes.faults() == frozenset()
    assert list(tmp_path.iterdir()) == []  # the probe file is removed
    docker.up = False
    assert probes.faults() == frozenset({"docker_unavailable"})
    missing = LocalProbes(state_dir=tmp_path / "gone")
    assert missing.faults() == frozenset({"state_unwritable"})
    no_audit = LocalProbes(state_dir=tmp_path, audit_dir=tmp_path / "no-audit")
    assert no_audit.faults() == frozenset({"audit_unavailable"})
    both = LocalProbes(state_dir=tmp_path, audit_dir=tmp_path)
    assert both.faults() == frozenset()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno  # noqa: PLC0415

    def full(_fd: int, _data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    assert LocalProbes(state_dir=tmp_path).faults() == frozenset({"disk_full"})


def test_the_loop_posts_changes_only_and_retries_cleanup_until_it_succeeds() -> None:
    posted: list[LocalHealth] = []
    faults = {"now": frozenset[str]()}
    attempts: list[bool] = []
    cleanup_works = {"ok": False}

    def cleanup() -> None:
        attempts.append(cleanup_works["ok"])
        if not cleanup_works["ok"]:
            raise ConnectionError("docker went away again")

    loop = ProbeLoop(lambda: faults["now"], post=posted.append, cleanup=cleanup)
    loop.probe_once()
    assert posted == []  # no change from "healthy"
    assert attempts == []  # nothing owed
    faults["now"] = frozenset({"docker_unavailable"})
    loop.probe_once()
    loop.probe_once()
    assert posted == [LocalHealth(faults=frozenset({"docker_unavailable"}))]
    assert attempts == []  # never while Docker is down
    assert loop.cleanup_owed
    faults["now"] = frozenset()
    loop.probe_once()  # Docker is back: clean-up tried, fails
    assert posted[-1] == LocalHealth(faults=frozenset())
    assert loop.cleanup_owed
    assert loop.cleanup_failures == 1
    cleanup_works["ok"] = True
    loop.probe_once()  # retried at the next interval, succeeds
    assert attempts == [False, True]
    assert not _owed(loop)
    loop.probe_once()
    assert attempts == [False, True]  # not again until owed


def test_the_thread_probes_at_once_when_woken() -> None:
    import threading  # noqa: PLC0415 - only this test

    seen = threading.Event()
    calls = {"n": 0}

    def probes() -> frozenset[str]:
        calls["n"] += 1
        if calls["n"] >= 2:
            seen.set()
        return frozenset()

    loop = ProbeLoop(probes, post=lambda _e: None, interval=3600.0).start()
    try:
        loop.owe_cleanup()  # a run ended badly: probe (and clean up) now, not in an hour
        assert seen.wait(5)
    finally:
        loop.stop()


def test_a_probe_that_raises_is_a_fault() -> None:
    posted: list[LocalHealth] = []

    def broken() -> frozenset[str]:
        raise RuntimeError("probe bug")

    ProbeLoop(broken, post=posted.append).probe_once()
    assert posted == [LocalHealth(faults=frozenset({"state_unwritable"}))]


@pytest.mark.parametrize(
    "fault", ["disk_full", "state_unwritable", "docker_unavailable", "unknown_fault"]
)
def test_readiness_names_the_fault_and_recovers(fault: str) -> None:
    transport = MemoryBroker().worker("pool-a", "w1")
    transport.start()
    machine = LauncherMachine(MachineConfig(worker_id="w1", pool_id="pool-a", version="1"))
    daemon = Daemon(machine=machine, transport=transport, run_function=None)  # type: ignore[arg-type]
    machine.registered = True
    assert daemon.readiness().ready
    daemon.post(LocalHealth(faults=frozenset({fault})))
    daemon.step(0.0)
    readiness = daemon.readiness()
    assert (readiness.ready, readiness.reason) == (False, fault)
    assert machine.heartbeat().state == "DRAINED"
    daemon.post(LocalHealth(faults=frozenset()))
    daemon.step(0.0)
    assert daemon.readiness().ready
    assert machine.heartbeat().state == "IDLE"
    transport.close()


class _ClockedTransport:
    """A transport whose messages carry a control-plane ``sent_at`` an hour behind us."""

    def __init__(self, sent_at: datetime) -> None:
        self.sent_at = sent_at
        self.inbox: list[object] = []
        self.sent: list[object] = []
        self.connected = True

    def receive(self, *, timeout_seconds: float | None = None) -> object | None:
        del timeout_seconds
        if not self.inbox:
            return None
        body = self.inbox.pop(0)
        return SimpleNamespace(body=body, message=SimpleNamespace(sent_at=self.sent_at))

    def send(self, body: object) -> None:
        self.sent.append(body)

    def stats(self) -> object:
        return SimpleNamespace(reconnects=0)


def test_the_daemon_judges_our_clock_by_the_messages_sent_at() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    transport = _ClockedTransport(sent_at=now - timedelta(hours=1))
    machine = LauncherMachine(MachineConfig(worker_id="w1", pool_id="pool-a", version="1"))
    daemon = Daemon(
        machine=machine,
        transport=transport,  # type: ignore[arg-type]
        run_function=None,  # type: ignore[arg-type]
        clock=lambda: now,
    )
    machine.registered = True
    transport.inbox.append(
        Assign(
            run_id="r1",
            lease_id="l1",
            lease_expires_at=now - timedelta(minutes=59),
            envelope_b64="c2VhbGVk",
        )
    )
    daemon.step(0.0)
    refusals = [b for b in transport.sent if isinstance(b, Refuse)]
    assert [r.reason for r in refusals] == ["clock_skewed"]
    assert (daemon.readiness().ready, daemon.readiness().reason) == (False, "clock_skewed")
    assert machine.heartbeat().state == "DRAINED"
