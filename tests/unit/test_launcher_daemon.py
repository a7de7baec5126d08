"""The daemon's I/O loop on a MemoryBroker, with a fake run function (no Docker)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hardened_launcher.audit import AuditEvent
from hardened_launcher.executor.logsink import TeeLogSink
from hardened_launcher.launcher.daemon import Daemon
from hardened_launcher.launcher.gates import RunContext, log_shipper
from hardened_launcher.launcher.health import Readiness
from hardened_launcher.launcher.machine import LauncherMachine, MachineConfig
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.transport.memory import MemoryBroker, MemoryTransport
from hardened_launcher.transport.messages import (
    Accept,
    Assign,
    Body,
    Cancel,
    Drain,
    Heartbeat,
    LogUrl,
    LogUrls,
    LogUrlsRequest,
    Register,
    Start,
    Status,
    Witness,
)
from hardened_launcher.transport.topics import WorkerAddress

PEER = WorkerAddress(pool_id="pool-a", worker_id="w1")


class FakeSink:
    def __init__(self) -> None:
        self.urls: list[LogUrl] = []

    def write(self, channel: str, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def add_urls(self, urls: tuple[LogUrl, ...]) -> None:
        self.urls.extend(urls)


class FakeRuns:
    """Starts the 'container', then waits for cancel or release."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sinks: dict[str, FakeSink] = {}

    def __call__(self, assign: Assign, context: RunContext) -> Status:
        sink = FakeSink()
        self.sinks[assign.run_id] = sink
        context.on_sink(sink)
        context.on_started("container-1")
        context.request_more(5)
        while not self.release.is_set():
            if context.cancel.wait(0.01):
                return Status(run_id=assign.run_id, state="STOPPED", reason="run_cancelled")
        return Status(run_id=assign.run_id, state="FINISHED", exit_code=0, reason="run_succeeded")


@pytest.fixture
def setup() -> Iterator[tuple[Daemon, MemoryTransport, FakeRuns, threading.Thread]]:
    broker = MemoryBroker()
    worker = broker.worker("pool-a", "w1")
    cp = broker.control_plane()
    worker.start()
    cp.start()
    runs = FakeRuns()
    machine = LauncherMachine(
        MachineConfig(worker_id="w1", pool_id="pool-a", version="1.0", max_concurrent_runs=1)
    )
    daemon = Daemon(machine=machine, transport=worker, run_function=runs, poll_seconds=0.01)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
    thread.start()
    yield daemon, cp, runs, thread
    runs.release.set()
    daemon.stop_loop()
    thread.join(5)


def wait_for(cp: MemoryTransport, predicate: object, timeout: float = 5.0) -> list[Body]:
    seen: list[Body] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cp.receive(timeout_seconds=0.05)
        if r is None:
            continue
        seen.append(r.body)
        if predicate(r.body):  # type: ignore[operator]
            return seen
    raise AssertionError(f"not seen; got {seen}")


def an_assign(run_id: str = "r1") -> Assign:
    return Assign(
        run_id=run_id,
        lease_id="l1",
        lease_expires_at=datetime.now(UTC) + timedelta(seconds=30),
        envelope_b64=base64.b64encode(b"x").decode(),
        log_urls=(LogUrl(chunk=0, url="https://s3.example/0"),),
    )


def test_register_accept_start_run_finish(
    setup: tuple[Daemon, MemoryTransport, FakeRuns, threading.Thread],
) -> None:
    _, cp, runs, _ = setup
    wait_for(cp, lambda b: isinstance(b, Register))
    cp.send(an_assign(), peer=PEER)
    wait_for(cp, lambda b: b == Accept(run_id="r1", lease_id="l1"))
    cp.send(Start(run_id="r1", lease_id="l1"), peer=PEER)
    seen = wait_for(cp, lambda b: isinstance(b, Status) and b.state == "RUNNING")
    cp.send(LogUrls(run_id="r1", urls=(LogUrl(chunk=5, url="https://s3.example/5"),)), peer=PEER)
    seen += wait_for(cp, lambda b: getattr(b, "TYPE", "") == "log_urls_request")
    deadline = time.monotonic() + 5
    while not runs.sinks["r1"].urls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runs.sinks["r1"].urls == [LogUrl(chunk=5, url="https://s3.example/5")]
    runs.release.set()
    wait_for(cp, lambda b: isinstance(b, Status) and b.state == "FINISHED")


def test_busy_refusal_and_cancel(
    setup: tuple[Daemon, MemoryTransport, FakeRuns, threading.Thread],
) -> None:
    _, cp, _, _ = setup
    cp.send(an_assign("r1"), peer=PEER)
    wait_for(cp, lambda b: isinstance(b, Accept))
    cp.send(an_assign("r2"), peer=PEER)
    wait_for(cp, lambda b: getattr(b, "reason", None) == "worker_busy")
    cp.send(Start(run_id="r1", lease_id="l1"), peer=PEER)
    wait_for(cp, lambda b: isinstance(b, Status) and b.state == "RUNNING")
    cp.send(Cancel(run_id="r1"), peer=PEER)
    wait_for(cp, lambda b: isinstance(b, Status) and b.state == "STOPPED")


def test_sigterm_finishes_the_run_then_exits(
    setup: tuple[Daemon, MemoryTransport, FakeRuns, threading.Thread],
) -> None:
    daemon, cp, runs, thread = setup
    cp.send(an_assign("r1"), peer=PEER)
    wait_for(cp, lambda b: isinstance(b, Accept))
    cp.send(Start(run_id="r1", lease_id="l1"), peer=PEER)
    wait_for(cp, lambda b: isinstance(b, Status) and b.state == "RUNNING")
    daemon.terminate()
    wait_for(cp, lambda b: isinstance(b, Heartbeat) and b.state == "DRAINED")
    assert thread.is_alive()
    runs.release.set()
    wait_for(cp, lambda b: isinstance(b, Status) and b.state == "FINISHED")
    thread.join(5)
    assert daemon.exit is not None
    assert daemon.exit.code == 0


def test_reregisters_after_reconnect(
    setup: tuple[Daemon, MemoryTransport, FakeRuns, threading.Thread],
) -> None:
    daemon, cp, _, _ = setup
    wait_for(cp, lambda b: isinstance(b, Register))
    daemon.transport.session.note_reconnect()  # type: ignore[attr-defined]
    wait_for(cp, lambda b: isinstance(b, Register))


def test_log_urls_reach_a_shipper_inside_a_tee() -> None:
    inner = FakeSink()
    tee = TeeLogSink(FileLikeSink(), inner)
    found: object = log_shipper(tee)
    assert found is inner
    assert log_shipper(FileLikeSink()) is None


class FileLikeSink:
    def write(self, channel: str, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def test_urls_for_a_tee_wrapped_run_and_a_resumed_run_are_routed() -> None:
    broker = MemoryBroker()
    worker = broker.worker("pool-a", "w1")
    cp = broker.control_plane()
    worker.start()
    cp.start()
    machine = LauncherMachine(MachineConfig(worker_id="w1", pool_id="pool-a", version="1.0"))
    inner = FakeSink()

    def run_function(assign: Assign, context: RunContext) -> Status:
        context.on_sink(TeeLogSink(FileLikeSink(), inner))
        context.on_started("c")
        deadline = time.monotonic() + 5
        while not inner.urls and time.monotonic() < deadline:
            time.sleep(0.01)
        return Status(run_id=assign.run_id, state="FINISHED", exit_code=0, reason="run_succeeded")

    metrics = LauncherMetrics()
    daemon = Daemon(
        machine=machine,
        transport=worker,
        run_function=run_function,
        poll_seconds=0.01,
        metrics=metrics,
    )
    resumed = FakeSink()
    daemon.adopt_log_sinks({"old-run": resumed})
    assert daemon.readiness() == Readiness(ready=False, reason="not_registered")
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_for(cp, lambda b: isinstance(b, Register))
        assert daemon.readiness().ready
        daemon.request_log_urls("old-run", 2)
        wait_for(cp, lambda b: b == LogUrlsRequest(run_id="old-run", from_chunk=2))
        old_url = LogUrl(chunk=2, url="https://s3.example/old-2")
        cp.send(LogUrls(run_id="old-run", urls=(old_url,)), peer=PEER)
        cp.send(an_assign(), peer=PEER)
        wait_for(cp, lambda b: isinstance(b, Accept))
        cp.send(Start(run_id="r1", lease_id="l1"), peer=PEER)
        wait_for(cp, lambda b: isinstance(b, Status) and b.state == "RUNNING")
        url = LogUrl(chunk=1, url="https://s3.example/1")
        cp.send(LogUrls(run_id="r1", urls=(url,)), peer=PEER)
        wait_for(cp, lambda b: isinstance(b, Status) and b.state == "FINISHED")
        assert url in inner.urls
        assert resumed.urls == [old_url]
        daemon.transport.session.note_reconnect()  # type: ignore[attr-defined]
        wait_for(cp, lambda b: isinstance(b, Register))
        assert "hl_broker_reconnects_total 1.0" in metrics.render().decode()
        cp.send(Drain(), peer=PEER)
        deadline = time.monotonic() + 5
        while daemon.readiness().ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert daemon.readiness() == Readiness(ready=False, reason="draining")
    finally:
        daemon.stop_loop()
        thread.join(5)


class RecordingAudit:
    """The daemon's view of the audit log, recording what it is given."""

    def __init__(self) -> None:
        self.healthy = True
        self.failure: str | None = None
        self.events: list[AuditEvent] = []

    def checkpoint_if_due(self) -> None:
        return None

    def try_recover(self) -> bool:
        return self.healthy

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


def test_an_assignment_refused_before_any_gate_is_audited() -> None:
    broker = MemoryBroker()
    worker = broker.worker("pool-a", "w1")
    cp = broker.control_plane()
    worker.start()
    cp.start()
    runs = FakeRuns()
    audit = RecordingAudit()
    machine = LauncherMachine(
        MachineConfig(worker_id="w1", pool_id="pool-a", version="1.0", max_concurrent_runs=1)
    )
    daemon = Daemon(
        machine=machine, transport=worker, run_function=runs, poll_seconds=0.01, audit=audit
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        cp.send(an_assign("r1"), peer=PEER)
        wait_for(cp, lambda b: isinstance(b, Accept))
        cp.send(an_assign("r2"), peer=PEER)
        wait_for(cp, lambda b: getattr(b, "reason", None) == "worker_busy")
        deadline = time.monotonic() + 5
        while not audit.events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(e.type, e.gate, e.run_id, e.reason) for e in audit.events] == [
            ("run.refused", "assignment", "r2", "worker_busy")
        ]
    finally:
        runs.release.set()
        daemon.stop_loop()
        thread.join(5)


def test_each_durable_checkpoint_is_sent_as_a_witness(tmp_path: Path) -> None:
    from hardened_launcher.audit.witness import parse_witness, verify_log_with_witnesses  # noqa: PLC0415
    from tests.unit.audit_support import KEY, event, open_log  # noqa: PLC0415

    broker = MemoryBroker()
    worker = broker.worker("pool-a", "w1")
    cp = broker.control_plane()
    worker.start()
    cp.start()
    audit = open_log(tmp_path, checkpoint_records=2)
    machine = LauncherMachine(
        MachineConfig(worker_id="w1", pool_id="pool-a", version="1.0", max_concurrent_runs=1)
    )
    daemon = Daemon(
        machine=machine, transport=worker, run_function=FakeRuns(), poll_seconds=0.01, audit=audit
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        for i in range(5):
            audit.record(event(i))
        seen = wait_for(cp, lambda b: isinstance(b, Witness) and b.seq >= 5)
    finally:
        daemon.stop_loop()
        thread.join(5)
        audit.close()
    bodies = [b for b in seen if isinstance(b, Witness)]
    assert [b.seq for b in bodies] == [2, 5]
    records = [
        parse_witness(
            json.dumps(
                {**b.to_dict(), "v": 1, "kind": "audit-witness"},
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
        )
        for b in bodies
    ]
    assert {(r.pool_id, r.worker_id) for r in records} == {("pool-a", "w1")}
    verify_log_with_witnesses(tmp_path, KEY.public_key(), records)
