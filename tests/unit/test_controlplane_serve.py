"""The coordinator on the transport package's MemoryBroker, and moto S3 (presigning only).

The control plane's transport is ``MemoryBroker().control_plane()``: the same session rules
(ids, seq, auto-acks, dedupe, retransmission) and codec as on the real broker.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto import mock_aws

from hardened_launcher.controlplane.dispatch import DispatchPolicy, RunState
from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig, chunk_key
from hardened_launcher.controlplane.serve import Coordinator, ServeConfig, serve
from hardened_launcher.controlplane.store import Store
from hardened_launcher.envelope.ticket import manifest_from_spec, verify_ticket
from hardened_launcher.errors import LauncherError
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.secrets import Secret
from hardened_launcher.transport import messages as wire
from hardened_launcher.transport.memory import MemoryBroker, MemoryTransport
from hardened_launcher.transport.session import OutboxFullError, Received
from hardened_launcher.transport.topics import WorkerAddress
from tests.unit.test_controlplane_support import (
    KEY_ID,
    T0,
    FakeClock,
    SimWorker,
    add_pool,
    add_run,
    open_store,
    sent_starts,
)

POLICY = DispatchPolicy(lease_seconds=10, heartbeat_timeout_seconds=30, lost_run_grace_seconds=20)


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogStorage]:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="hl-run-logs")
        yield LogStorage(
            LogStorageConfig(
                bucket="hl-run-logs",
                access_key_id="AKIATEST",
                secret_access_key=Secret("secret"),
                url_expiry_seconds=120,
                urls_per_batch=4,
            )
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as s:
        add_pool(s)
        yield s


class Rig:
    """A coordinator on a MemoryBroker, plus simulated workers on the same broker."""

    def __init__(self, store: Store, storage: LogStorage | None = None) -> None:
        self.store = store
        self.clock = FakeClock()
        self.broker = MemoryBroker()
        self.cp = self.broker.control_plane()
        self.cp.start()
        self.coordinator = Coordinator(
            store,
            self.cp,
            config=ServeConfig(policy=POLICY),
            clock=self.clock,
            log_urls=storage,
        )
        self.workers: list[SimWorker] = []

    def worker(self, worker_id: str, *, pool_id: str = "pool-a") -> SimWorker:
        sim = SimWorker(worker_id, self.clock, self.broker, pool_id=pool_id)
        self.workers.append(sim)
        return sim

    def pump(self) -> None:
        """The control plane handles what arrived, ticks, sends; the workers read."""
        self.coordinator.step()
        for worker in self.workers:
            worker.deliver_all()

    def types_to(self, worker_id: str) -> list[str]:
        return [m.type for m in self.cp.sent if _peer_of(self.broker, m) == worker_id]


def _peer_of(broker: MemoryBroker, message: wire.Message) -> str | None:
    for outgoing in broker.published:
        if outgoing.message.id == message.id:
            return outgoing.topic.rsplit("/", 1)[1]
    return None


def _started(rig: Rig, worker: SimWorker, run_id: str) -> str:
    """Register (if needed), get the assignment, accept it, get `start`; returns the lease."""
    rig.pump()
    lease = worker.offers[run_id][-1]
    worker.accept(run_id, lease)
    rig.pump()
    assert run_id in worker.running
    return lease


def test_register_assign_accept_start_finished(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    rig.pump()
    lease = worker.offers["run-1"][-1]
    assert store.get_run("run-1").state is RunState.ASSIGNED
    assert worker.running == set()  # the assignment alone never starts a run
    worker.accept("run-1", lease)
    rig.pump()
    assert [g[:2] for g in worker.go_log] == [("run-1", lease)]
    assert sent_starts(rig.cp) == [wire.Start(run_id="run-1", lease_id=lease)]
    assert store.get_run("run-1").state is RunState.RUNNING
    worker.status("run-1", "FINISHED", 0)
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.exit_code) == (RunState.FINISHED, 0)
    # Everything the control plane sent was acknowledged by the worker's transport.
    assert rig.cp.stats().outbox_messages == 0


def test_a_repeated_accept_of_the_winning_lease_gets_no_second_start(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    lease = _started(rig, worker, "run-1")
    worker.accept("run-1", lease)  # a new accept message (not a transport retransmission)
    rig.pump()
    assert len(sent_starts(rig.cp)) == 1
    assert store.get_run("run-1").state is RunState.RUNNING


def test_a_lost_start_is_retransmitted_until_acked(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    rig.pump()
    worker.accept("run-1", worker.offers["run-1"][-1])
    rig.broker.drop_next(1)  # the accept's ack is not dropped by the worker: it drops the start
    rig.coordinator.step()
    worker.deliver_all()
    assert worker.running == set()
    rig.broker.advance(6)
    worker.deliver_all()
    assert worker.running == {"run-1"}
    assert len(sent_starts(rig.cp)) == 1


def test_assignment_carries_presigned_urls_and_more_on_request(
    store: Store, storage: LogStorage
) -> None:
    rig = Rig(store, storage)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    rig.pump()
    lease = worker.offers["run-1"][-1]
    urls = worker.log_urls["run-1"]
    assert [u.chunk for u in urls] == [0, 1, 2, 3]
    assert "runs/run-1/chunk-000000" in urls[0].url
    assert "X-Amz-Expires=120" in urls[0].url
    assert "X-Amz-Signature=" in urls[0].url
    worker.accept("run-1", lease)
    rig.pump()
    assert worker.running == {"run-1"}
    worker.send(wire.LogUrlsRequest(run_id="run-1", from_chunk=4))
    rig.pump()
    assert [u.chunk for u in worker.log_urls["run-1"]][-4:] == [4, 5, 6, 7]
    assert store.get_run_details("run-1").log_chunks == 8


def test_log_urls_only_for_the_holder_of_a_running_run(store: Store, storage: LogStorage) -> None:
    rig = Rig(store, storage)
    holder, other = rig.worker("w-1"), rig.worker("w-2")
    holder.register()
    add_run(store, "run-1")
    rig.pump()
    other.register()
    other.send(wire.LogUrlsRequest(run_id="run-1", from_chunk=0))
    rig.pump()
    assert "run-1" not in other.log_urls


def test_expired_lease_goes_to_another_worker_and_the_late_accept_is_cancelled(
    store: Store,
) -> None:
    rig = Rig(store)
    slow = rig.worker("w-slow")
    slow.register()
    add_run(store, "run-1")
    rig.pump()
    old_lease = slow.offers["run-1"][-1]
    slow.heartbeat("BUSY")
    fast = rig.worker("w-fast")
    fast.register(max_concurrent_runs=2)
    store.set_worker_drained("w-slow", drained=True, now=rig.clock.now)  # no second offer
    rig.clock.advance(11)
    rig.pump()
    assert "run-1" in slow.cancelled
    new_lease = fast.offers["run-1"][-1]
    assert new_lease != old_lease
    slow.accept("run-1", old_lease)
    fast.accept("run-1", new_lease)
    rig.pump()
    assert slow.running == set()
    assert fast.running == {"run-1"}
    assert sent_starts(rig.cp) == [wire.Start(run_id="run-1", lease_id=new_lease)]
    assert rig.types_to("w-slow").count("cancel") == 2  # expiry, then the stale accept
    run = store.get_run("run-1")
    assert (run.state, run.worker_id, run.attempts) == (RunState.RUNNING, "w-fast", 2)


def test_two_workers_racing_exactly_one_start(store: Store) -> None:
    rig = Rig(store)
    first, second = rig.worker("w-1"), rig.worker("w-2")
    first.register()
    add_run(store, "run-1")
    rig.pump()
    lease1 = first.offers["run-1"][-1]
    store.set_worker_drained("w-1", drained=True, now=rig.clock.now)
    second.register()
    rig.clock.advance(11)
    rig.pump()
    lease2 = second.offers["run-1"][-1]
    # Both accept before the control plane reads either: only the current lease wins.
    first.accept("run-1", lease1)
    second.accept("run-1", lease2)
    first.accept("run-1", lease1)
    rig.pump()
    assert sent_starts(rig.cp) == [wire.Start(run_id="run-1", lease_id=lease2)]
    assert (first.running, second.running) == (set(), {"run-1"})


def test_last_will_crashes_a_running_run_after_the_grace_and_never_requeues_it(
    store: Store,
) -> None:
    rig = Rig(store)
    worker, spare = rig.worker("w-1"), rig.worker("w-2")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    spare.register()
    worker.die()
    rig.pump()
    # A will alone is not proof of death: GONE (no new leases), the run awaits the worker.
    assert not store.get_worker("w-1").worker.alive
    assert store.get_run("run-1").state is RunState.RUNNING
    assert "run.awaiting_worker" in [kind for _, kind, _ in store.events(run_id="run-1")]
    rig.clock.advance(POLICY.lost_run_grace_seconds - 1)
    rig.pump()
    assert store.get_run("run-1").state is RunState.RUNNING
    rig.clock.advance(1)
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.reason) == (RunState.CRASHED, "worker_lost")
    assert spare.offers == {}
    rig.clock.advance(300)
    rig.pump()
    assert store.get_run("run-1").state is RunState.CRASHED
    assert spare.offers == {}


def test_bye_crashes_a_running_run_at_once(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    worker.send(wire.Bye(reason="sigterm"))
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.reason) == (RunState.CRASHED, "worker_lost")


def test_wills_published_by_a_broker_restart_do_not_crash_running_runs(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    rig.broker.restart()  # mosquitto publishes the live worker's will as it shuts down
    rig.pump()
    assert not store.get_worker("w-1").worker.alive
    assert store.get_run("run-1").state is RunState.RUNNING
    worker.register()  # the launcher registers again after the reconnect …
    rig.pump()
    assert store.get_worker("w-1").worker.alive
    for _ in range(4):  # … and keeps listing the run, well past the grace period
        rig.clock.advance(10)
        worker.heartbeat("BUSY")
        rig.pump()
    assert store.get_run("run-1").state is RunState.RUNNING
    worker.status("run-1", "FINISHED", 0)
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.exit_code) == (RunState.FINISHED, 0)
    assert worker.cancelled == []


def test_a_late_will_after_the_worker_is_back_is_healed_by_its_heartbeat(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    worker.register()  # reconnected; the old connection's will arrives after the register
    rig.broker.publish_will(worker.transport)
    rig.pump()
    assert not store.get_worker("w-1").worker.alive
    rig.clock.advance(5)
    worker.heartbeat("BUSY")
    rig.pump()
    assert store.get_worker("w-1").worker.alive
    rig.clock.advance(POLICY.lost_run_grace_seconds * 2)
    worker.heartbeat("BUSY")
    rig.pump()
    assert store.get_run("run-1").state is RunState.RUNNING
    worker.status("run-1", "FINISHED", 0)
    rig.pump()
    assert store.get_run("run-1").state is RunState.FINISHED


def test_a_will_requeues_an_assigned_run_and_fences_the_late_accept(store: Store) -> None:
    rig = Rig(store)
    worker, spare = rig.worker("w-1"), rig.worker("w-2")
    worker.register()
    add_run(store, "run-1")
    rig.pump()
    old_lease = worker.offers["run-1"][-1]
    rig.broker.restart()
    rig.pump()
    assert store.get_run("run-1").state is RunState.QUEUED
    spare.register()
    rig.pump()
    new_lease = spare.offers["run-1"][-1]
    worker.accept("run-1", old_lease)  # the accept was in flight across the restart
    spare.accept("run-1", new_lease)
    rig.pump()
    rig.broker.advance(120)  # any retransmission goes out
    rig.pump()
    assert sent_starts(rig.cp) == [wire.Start(run_id="run-1", lease_id=new_lease)]
    assert (worker.running, spare.running) == (set(), {"run-1"})
    assert worker.cancelled == ["run-1"]


def test_a_new_process_with_the_same_id_within_the_grace_loses_the_run(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    worker.die()
    rig.pump()
    worker.revive()  # a new process: registers, its heartbeats do not list the run
    worker.register()
    for _ in range(3):
        worker.heartbeat("IDLE")
        rig.pump()
        rig.clock.advance(POLICY.lost_run_grace_seconds / 2)
    run = store.get_run("run-1")
    assert (run.state, run.reason) == (RunState.CRASHED, "worker_lost_run")
    assert worker.running == set()


def test_a_gone_worker_s_pending_messages_are_discarded(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    rig.pump()
    worker.accept("run-1", worker.offers["run-1"][-1])
    rig.broker.drop_next(1)  # the start never arrives and is never acked
    rig.coordinator.step()
    assert rig.cp.stats().outbox_messages == 1
    worker.die()
    rig.pump()
    # Kept during the grace: a worker that is alive after all still needs its start.
    assert rig.cp.stats().outbox_messages == 1
    rig.clock.advance(POLICY.lost_run_grace_seconds)
    rig.pump()
    assert rig.cp.stats().outbox_messages == 0
    assert store.get_run("run-1").state is RunState.CRASHED
    worker.revive()  # a new process with the same id never receives the old start
    worker.register()
    rig.broker.advance(120)
    rig.pump()
    assert worker.ignored_starts == 0
    assert worker.running == set()


def test_silent_worker_comes_back_and_is_told_to_stop_its_crashed_run(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    rig.clock.advance(31)
    rig.pump()
    assert store.get_run("run-1").state is RunState.CRASHED
    worker.heartbeat("BUSY")
    rig.pump()
    assert worker.cancelled == ["run-1"]
    assert store.get_worker("w-1").worker.alive


def test_a_run_missing_from_heartbeats_past_the_grace_period_is_crashed(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    worker.running.clear()  # the worker lost the run (e.g. restarted its executor)
    worker.heartbeat("IDLE")
    rig.pump()
    rig.clock.advance(10)
    worker.heartbeat("IDLE")
    rig.pump()
    assert store.get_run("run-1").state is RunState.RUNNING  # still within the grace period
    rig.clock.advance(10)
    worker.heartbeat("IDLE")
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.reason) == (RunState.CRASHED, "worker_lost_run")
    assert worker.cancelled == ["run-1"]
    rig.clock.advance(100)
    rig.pump()
    assert store.get_run("run-1").state is RunState.CRASHED  # never re-queued


def test_a_run_listed_again_within_the_grace_period_keeps_running(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    worker.send(wire.Heartbeat(state="BUSY", running=()))  # sent before `start` arrived
    rig.pump()
    rig.clock.advance(15)
    worker.heartbeat("BUSY")
    rig.pump()
    rig.clock.advance(15)
    worker.send(wire.Heartbeat(state="BUSY", running=()))
    rig.pump()
    assert store.get_run("run-1").state is RunState.RUNNING
    worker.status("run-1", "FINISHED")
    worker.heartbeat("IDLE")
    rig.pump()
    assert store.get_run("run-1").state is RunState.FINISHED


def test_refusals_policy_is_final_busy_requeues(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    add_run(store, "run-2", now=rig.clock.now + 1)
    rig.pump()
    lease = worker.offers["run-1"][-1]
    worker.send(
        wire.Refuse(run_id="run-1", lease_id=lease, reason="policy_denied", message="denied")
    )
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.reason, run.message) == (RunState.REFUSED, "policy_denied", "denied")
    lease2 = worker.offers["run-2"][-1]
    worker.send(wire.Refuse(run_id="run-2", lease_id=lease2, reason="worker_busy", message="busy"))
    rig.coordinator.receive_all(timeout_seconds=0)
    assert store.get_run("run-2").state is RunState.QUEUED
    assert sent_starts(rig.cp) == []


def test_status_messages_are_idempotent(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    finished = wire.MessageStream().next(wire.Status(run_id="run-1", state="FINISHED", exit_code=0))
    peer = WorkerAddress(pool_id="pool-a", worker_id="w-1")
    rig.coordinator.handle(Received(peer=peer, message=finished))
    rig.coordinator.handle(Received(peer=peer, message=finished))  # beyond the dedupe window
    worker.status("run-1", "FAILED", 1)
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.exit_code) == (RunState.FINISHED, 0)
    assert [k for _, k, _ in store.events(run_id="run-1")].count("run.finished") == 1


def test_messages_that_claim_another_identity_are_dropped(store: Store) -> None:
    rig = Rig(store)
    forged = wire.MessageStream().next(
        wire.Register(worker_id="w-2", pool_id="pool-a", version="1", max_concurrent_runs=1)
    )
    peer = WorkerAddress(pool_id="pool-a", worker_id="w-1")
    rig.coordinator.handle(Received(peer=peer, message=forged))
    other_pool = WorkerAddress(pool_id="pool-b", worker_id="w-2")
    rig.coordinator.handle(Received(peer=other_pool, message=forged))
    intruder = rig.worker("w-3", pool_id="pool-b")  # a pool the control plane does not know
    intruder.register()
    rig.pump()
    assert store.list_workers() == []


def test_drain_undrain_and_cycle_reach_the_worker(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    rig.pump()
    store.set_worker_drained("w-1", drained=True, now=rig.clock.now)
    add_run(store, "run-1")
    rig.pump()
    assert worker.offers == {}
    store.set_worker_drained("w-1", drained=False, now=rig.clock.now)
    store.cycle_pool("pool-a", now=rig.clock.now)
    rig.pump()
    assert worker.commands == ["drain", "undrain", "cycle"]
    assert "run-1" in worker.offers


def test_log_urls_request_is_answered_with_log_urls(store: Store, storage: LogStorage) -> None:
    rig = Rig(store, storage)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    worker.send(wire.LogUrlsRequest(run_id="run-1", from_chunk=100))
    rig.pump()
    assert rig.types_to("w-1")[-1] == "log_urls"
    assert [u.chunk for u in worker.log_urls["run-1"]][-4:] == [100, 101, 102, 103]


class _Refusing:
    """Wraps a transport whose ``send`` fails while ``fail`` is set (a full outbox)."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner
        self.fail = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def send(self, body: wire.Body, *, peer: WorkerAddress | None = None) -> wire.Message:
        if self.fail:
            raise OutboxFullError("outbox full", reason="transport_outbox_full")
        return self.inner.send(body, peer=peer)


def test_send_failure_keeps_order_for_the_next_flush(store: Store) -> None:
    rig = Rig(store)
    wrapper = _Refusing(rig.cp)
    rig.coordinator.transport = wrapper  # type: ignore[assignment]
    worker = rig.worker("w-1")
    worker.register()
    rig.coordinator.receive_all(timeout_seconds=0)
    store.set_worker_drained("w-1", drained=True, now=rig.clock.now)
    store.set_worker_drained("w-1", drained=False, now=rig.clock.now)
    wrapper.fail = True
    assert rig.coordinator.flush() == 0
    wrapper.fail = False
    assert rig.coordinator.flush() == 2
    worker.deliver_all()
    assert worker.commands == ["drain", "undrain"]
    assert issubclass(OutboxFullError, LauncherError)


def test_expired_envelope_and_rotated_key_fail_queued_runs(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register(max_concurrent_runs=4)
    rig.coordinator.receive_all(timeout_seconds=0)
    add_run(store, "run-old", expires_at=rig.clock.now - 1)
    add_run(store, "run-rotated", key_id="f" * 64)
    rig.coordinator.tick()
    assert store.get_run("run-old").reason == "envelope_expired"
    assert store.get_run("run-rotated").reason == "pool_key_rotated"


def test_serve_loop_stops_when_asked(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    stop = threading.Event()
    serve(rig.coordinator, stop=stop, max_iterations=3)
    assert store.get_worker("w-1").worker.alive
    stop.set()
    serve(rig.coordinator, stop=stop)  # returns at once


def test_chunk_key_layout() -> None:
    assert chunk_key("logs/", "run-1", 7) == "logs/runs/run-1/chunk-000007"
    with pytest.raises(ValueError, match="out of range"):
        chunk_key("", "run-1", -1)


def test_a_refusal_after_start_ends_refused_with_the_gate_reason(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    worker.send(wire.Status(run_id="run-1", state="REFUSED", reason="policy_denied", message="no"))
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.reason, run.exit_code) == (RunState.REFUSED, "policy_denied", None)


def test_each_assignment_carries_a_ticket_signed_for_that_worker_and_lease(
    store: Store, tmp_path: Path
) -> None:
    signer = Ed25519PrivateKey.generate()
    sanitizer = Sanitizer(b"p" * 32)
    spec = run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "run-t",
            "run_type": "ro",
            "image": "busybox",
            "phases": [{"name": "main", "commands": ["true"]}],
            "secret_env": {"S": "CANARY-cp-ticket"},
        }
    )
    store.add_run(
        run_id="run-t",
        pool_id="pool-a",
        spec_sha256="0" * 64,
        key_id=KEY_ID,
        envelope=b"sealed:run-t",
        envelope_expires_at=T0 + 86_400,
        now=T0,
        manifest=manifest_from_spec(spec, sanitizer).encoded(),
    )
    rig = Rig(store)
    rig.coordinator.signing_key = signer
    worker = rig.worker("w-1")
    worker.register()
    rig.pump()
    (assign,) = [m.body for m in rig.cp.sent if isinstance(m.body, wire.Assign)]
    assert b"CANARY-cp-ticket" not in assign.ticket
    verified = verify_ticket(
        assign.ticket,
        assign.ticket_signature,
        signer_public_key=signer.public_key(),
        run_id="run-t",
        pool_id="pool-a",
        worker_id="w-1",
        lease_id=assign.lease_id,
    )
    assert verified.manifest.secret_env == {"S": sanitizer.sanitize("CANARY-cp-ticket")}
    assert verified.envelope_sha256 == hashlib.sha256(b"sealed:run-t").hexdigest()
