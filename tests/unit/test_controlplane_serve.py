"""The coordinator with the fake transport and moto S3 (presigning only; moto is not proof)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from hardened_launcher.controlplane.dispatch import DispatchPolicy, RunState
from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig, chunk_key
from hardened_launcher.controlplane.serve import Coordinator, ServeConfig, serve
from hardened_launcher.controlplane.store import Store
from hardened_launcher.secrets import Secret
from hardened_launcher.transport import messages as wire
from tests.unit.test_controlplane_support import (
    FakeClock,
    FakeTransport,
    SimWorker,
    add_pool,
    add_run,
    open_store,
    route,
)

POLICY = DispatchPolicy(lease_seconds=10, heartbeat_timeout_seconds=30)


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


def _setup(store: Store, storage: LogStorage | None = None) -> tuple[Coordinator, FakeClock]:
    clock = FakeClock()
    coordinator = Coordinator(
        store, config=ServeConfig(policy=POLICY), clock=clock, log_urls=storage
    )
    return coordinator, clock


def _pump(coordinator: Coordinator, transport: FakeTransport, workers: list[SimWorker]) -> None:
    coordinator.tick()
    coordinator.flush(transport)
    route(transport, {w.id: w for w in workers})


def test_assignment_carries_presigned_urls_and_more_on_request(
    store: Store, storage: LogStorage
) -> None:
    coordinator, clock = _setup(store, storage)
    transport = FakeTransport()
    worker = SimWorker("w-1", clock)
    worker.register(coordinator)
    add_run(store, "run-1")
    _pump(coordinator, transport, [worker])
    lease = worker.offers["run-1"][-1]
    urls = worker.log_urls["run-1"]
    assert [u.chunk for u in urls] == [0, 1, 2, 3]
    assert "runs/run-1/chunk-000000" in urls[0].url
    assert "X-Amz-Expires=120" in urls[0].url
    assert "X-Amz-Signature=" in urls[0].url
    worker.accept(coordinator, "run-1", lease)
    _pump(coordinator, transport, [worker])
    assert worker.running == {"run-1"}
    worker.send(coordinator, wire.LogUrlsRequest(run_id="run-1", from_chunk=4))
    _pump(coordinator, transport, [worker])
    assert [u.chunk for u in worker.log_urls["run-1"]][-4:] == [4, 5, 6, 7]
    assert store.get_run_details("run-1").log_chunks == 8


def test_log_urls_only_for_the_holder_of_a_running_run(store: Store, storage: LogStorage) -> None:
    coordinator, clock = _setup(store, storage)
    transport = FakeTransport()
    holder, other = SimWorker("w-1", clock), SimWorker("w-2", clock)
    holder.register(coordinator)
    add_run(store, "run-1")
    _pump(coordinator, transport, [holder])
    other.register(coordinator)
    other.send(coordinator, wire.LogUrlsRequest(run_id="run-1", from_chunk=0))
    _pump(coordinator, transport, [holder, other])
    assert "run-1" not in other.log_urls


def test_expired_lease_goes_to_another_worker_and_the_late_accept_is_cancelled(
    store: Store,
) -> None:
    coordinator, clock = _setup(store)
    transport = FakeTransport()
    slow = SimWorker("w-slow", clock)
    slow.register(coordinator)
    add_run(store, "run-1")
    _pump(coordinator, transport, [slow])
    old_lease = slow.offers["run-1"][-1]
    slow.heartbeat(coordinator, "BUSY")
    fast = SimWorker("w-fast", clock)
    fast.register(coordinator, max_concurrent_runs=2)
    store.set_worker_drained("w-slow", drained=True, now=clock.now)  # no second offer to slow
    clock.advance(11)
    _pump(coordinator, transport, [slow, fast])
    assert "run-1" in slow.cancelled
    new_lease = fast.offers["run-1"][-1]
    assert new_lease != old_lease
    slow.accept(coordinator, "run-1", old_lease)
    fast.accept(coordinator, "run-1", new_lease)
    _pump(coordinator, transport, [slow, fast])
    assert slow.running == set()
    assert fast.running == {"run-1"}
    run = store.get_run("run-1")
    assert (run.state, run.worker_id, run.attempts) == (RunState.RUNNING, "w-fast", 2)


def test_last_will_crashes_a_running_run_and_never_requeues_it(store: Store) -> None:
    coordinator, clock = _setup(store)
    transport = FakeTransport()
    worker, spare = SimWorker("w-1", clock), SimWorker("w-2", clock)
    worker.register(coordinator)
    add_run(store, "run-1")
    _pump(coordinator, transport, [worker])
    worker.accept(coordinator, "run-1", worker.offers["run-1"][-1])
    _pump(coordinator, transport, [worker])
    spare.register(coordinator)
    worker.die(coordinator)
    _pump(coordinator, transport, [worker, spare])
    run = store.get_run("run-1")
    assert (run.state, run.reason) == (RunState.CRASHED, "worker_lost")
    assert spare.offers == {}


def test_silent_worker_comes_back_and_is_told_to_stop_its_crashed_run(store: Store) -> None:
    coordinator, clock = _setup(store)
    transport = FakeTransport()
    worker = SimWorker("w-1", clock)
    worker.register(coordinator)
    add_run(store, "run-1")
    _pump(coordinator, transport, [worker])
    worker.accept(coordinator, "run-1", worker.offers["run-1"][-1])
    _pump(coordinator, transport, [worker])
    clock.advance(31)
    _pump(coordinator, transport, [worker])
    assert store.get_run("run-1").state is RunState.CRASHED
    worker.heartbeat(coordinator, "BUSY")
    _pump(coordinator, transport, [worker])
    assert worker.cancelled == ["run-1"]
    assert store.get_worker("w-1").worker.alive


def test_refusals_policy_is_final_busy_requeues(store: Store) -> None:
    coordinator, clock = _setup(store)
    transport = FakeTransport()
    worker = SimWorker("w-1", clock)
    worker.register(coordinator)
    add_run(store, "run-1")
    add_run(store, "run-2", now=clock.now + 1)
    _pump(coordinator, transport, [worker])
    lease = worker.offers["run-1"][-1]
    worker.send(
        coordinator,
        wire.Refuse(run_id="run-1", lease_id=lease, reason="policy_denied", message="denied"),
    )
    _pump(coordinator, transport, [worker])
    run = store.get_run("run-1")
    assert (run.state, run.reason, run.message) == (RunState.REFUSED, "policy_denied", "denied")
    lease2 = worker.offers["run-2"][-1]
    worker.send(
        coordinator,
        wire.Refuse(run_id="run-2", lease_id=lease2, reason="worker_busy", message="busy"),
    )
    assert store.get_run("run-2").state is RunState.QUEUED


def test_status_messages_are_idempotent(store: Store) -> None:
    coordinator, clock = _setup(store)
    transport = FakeTransport()
    worker = SimWorker("w-1", clock)
    worker.register(coordinator)
    add_run(store, "run-1")
    _pump(coordinator, transport, [worker])
    worker.accept(coordinator, "run-1", worker.offers["run-1"][-1])
    _pump(coordinator, transport, [worker])
    finished = wire.Status(run_id="run-1", state="FINISHED", exit_code=0)
    message = worker.stream.next(finished)
    coordinator.handle(worker.topic, message.to_json())
    coordinator.handle(worker.topic, message.to_json())  # retransmitted
    late = wire.Status(run_id="run-1", state="FAILED", exit_code=1)
    worker.send(coordinator, late)
    run = store.get_run("run-1")
    assert (run.state, run.exit_code) == (RunState.FINISHED, 0)
    assert [k for _, k, _ in store.events(run_id="run-1")].count("run.finished") == 1


def test_messages_that_claim_another_identity_are_dropped(store: Store) -> None:
    coordinator, clock = _setup(store)
    intruder = SimWorker("w-1", clock)
    stream = intruder.stream
    forged = stream.next(
        wire.Register(worker_id="w-2", pool_id="pool-a", version="1", max_concurrent_runs=1)
    )
    coordinator.handle("spacelift/writeonly/pool-a/w-1", forged.to_json())
    coordinator.handle("spacelift/writeonly/pool-a/w-1", b'{"not": "a message"}')
    coordinator.handle("other/writeonly/pool-a/w-1", forged.to_json())
    assert store.list_workers() == []


def test_drain_undrain_and_cycle_reach_the_worker(store: Store) -> None:
    coordinator, clock = _setup(store)
    transport = FakeTransport()
    worker = SimWorker("w-1", clock)
    worker.register(coordinator)
    store.set_worker_drained("w-1", drained=True, now=clock.now)
    add_run(store, "run-1")
    _pump(coordinator, transport, [worker])
    assert worker.offers == {}
    store.set_worker_drained("w-1", drained=False, now=clock.now)
    store.cycle_pool("pool-a", now=clock.now)
    _pump(coordinator, transport, [worker])
    assert worker.commands == ["drain", "undrain", "cycle"]
    assert "run-1" in worker.offers


def test_publish_failure_keeps_order_for_the_next_flush(store: Store) -> None:
    coordinator, clock = _setup(store)
    worker = SimWorker("w-1", clock)
    worker.register(coordinator)
    store.set_worker_drained("w-1", drained=True, now=clock.now)
    store.set_worker_drained("w-1", drained=False, now=clock.now)
    transport = FakeTransport(fail_publish=True)
    assert coordinator.flush(transport) == 0
    transport.fail_publish = False
    assert coordinator.flush(transport) == 2
    assert [m.type for _, m in transport.take()] == ["drain", "undrain"]


def test_expired_envelope_and_rotated_key_fail_queued_runs(store: Store) -> None:
    coordinator, clock = _setup(store)
    worker = SimWorker("w-1", clock)
    worker.register(coordinator, max_concurrent_runs=4)
    add_run(store, "run-old", expires_at=clock.now - 1)
    add_run(store, "run-rotated", key_id="f" * 64)
    coordinator.tick()
    assert store.get_run("run-old").reason == "envelope_expired"
    assert store.get_run("run-rotated").reason == "pool_key_rotated"


def test_serve_loop_stops_when_asked(store: Store) -> None:
    coordinator, clock = _setup(store)
    worker = SimWorker("w-1", clock)
    transport = FakeTransport()
    message = worker.stream.next(
        wire.Register(worker_id="w-1", pool_id="pool-a", version="1", max_concurrent_runs=1)
    )
    transport.inbound.append((worker.topic, message.to_json()))
    stop = threading.Event()
    serve(coordinator, transport, stop=stop, max_iterations=3)
    assert store.get_worker("w-1").worker.alive
    stop.set()
    serve(coordinator, transport, stop=stop)  # returns at once


def test_chunk_key_layout() -> None:
    assert chunk_key("logs/", "run-1", 7) == "logs/runs/run-1/chunk-000007"
    with pytest.raises(ValueError, match="out of range"):
        chunk_key("", "run-1", -1)
