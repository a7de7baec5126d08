"""Event-driven dispatch (issue 18): a queued run is assigned as soon as a slot frees or a run
is submitted, not on the next tick.

Most tests call only ``receive_all`` and ``flush`` (never ``tick``): whatever is assigned was
assigned because of the message just handled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.controlplane.serve import Coordinator, ServeConfig, serve
from hardened_launcher.controlplane.store import Store
from hardened_launcher.transport import messages as wire
from tests.unit.test_controlplane_serve import POLICY, Rig, _started
from tests.unit.test_controlplane_support import SimWorker, add_pool, add_run, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as s:
        add_pool(s)
        yield s


def _react(rig: Rig) -> None:
    """Handle what arrived and send: no tick."""
    rig.coordinator.receive_all(timeout_seconds=0)
    rig.coordinator.flush()
    for worker in rig.workers:
        worker.deliver_all()


def _offered(worker: SimWorker, run_id: str) -> bool:
    return run_id in worker.offers


def test_a_register_gets_the_queued_run_without_a_tick(store: Store) -> None:
    rig = Rig(store)
    add_run(store, "run-1")
    worker = rig.worker("w-1")
    worker.register()
    _react(rig)
    assert _offered(worker, "run-1")
    assert store.get_run("run-1").state is RunState.ASSIGNED


@pytest.mark.parametrize("outcome", ["FINISHED", "FAILED", "STOPPED", "CRASHED", "REFUSED"])
def test_a_final_status_frees_the_slot_for_the_next_run_at_once(
    store: Store, outcome: wire.RunState
) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    add_run(store, "run-2")
    _react(rig)
    assert not _offered(worker, "run-2")  # the one slot is held
    worker.status("run-1", outcome, 0)
    _react(rig)
    assert _offered(worker, "run-2")


def test_an_idle_heartbeat_triggers_dispatch_a_busy_one_does_not(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    _react(rig)
    add_run(store, "run-1")  # by this process: no store watch here, only messages
    worker.heartbeat("BUSY")
    _react(rig)
    assert not _offered(worker, "run-1")
    worker.heartbeat("IDLE")
    _react(rig)
    assert _offered(worker, "run-1")


@pytest.mark.parametrize("reason", ["worker_busy", "worker_draining", "docker_unavailable"])
def test_a_requeued_refusal_goes_to_another_worker_at_once_never_back_to_the_refuser(
    store: Store, reason: str
) -> None:
    rig = Rig(store)
    first, second = rig.worker("w-1"), rig.worker("w-2")
    first.register()
    second.register()
    add_run(store, "run-1")
    _react(rig)
    lease = first.offers["run-1"][-1]  # equal load: the lower worker id first
    assert not _offered(second, "run-1")
    first.send(wire.Refuse(run_id="run-1", lease_id=lease, reason=reason, message="no"))
    _react(rig)
    assert _offered(second, "run-1")
    assert first.offers["run-1"] == [lease]
    run = store.get_run("run-1")
    assert (run.state, run.worker_id) == (RunState.ASSIGNED, "w-2")


def test_a_refuser_alone_gets_the_run_again_only_on_the_tick(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _react(rig)
    for _ in range(3):  # a busy worker cannot make the run bounce at message speed
        lease = worker.offers["run-1"][-1]
        worker.send(wire.Refuse(run_id="run-1", lease_id=lease, reason="worker_busy", message=""))
        _react(rig)
        assert store.get_run("run-1").state is RunState.QUEUED
        rig.pump()  # the tick
        assert store.get_run("run-1").state is RunState.ASSIGNED
    assert len(worker.offers["run-1"]) == 4


def test_the_old_tick_only_mode_assigns_nothing_between_ticks(store: Store) -> None:
    rig = Rig(store)
    rig.coordinator = Coordinator(
        store,
        rig.cp,
        config=ServeConfig(policy=POLICY, event_driven=False),
        clock=rig.clock,
    )
    add_run(store, "run-1")
    worker = rig.worker("w-1")
    worker.register()
    _react(rig)
    assert not _offered(worker, "run-1")
    rig.pump()
    assert _offered(worker, "run-1")


def test_change_counter_moves_on_another_connection_s_commit_only(
    store: Store, tmp_path: Path
) -> None:
    before = store.change_counter()
    add_run(store, "own")
    assert store.change_counter() == before
    with Store(tmp_path / "store.sqlite3") as other:
        add_run(other, "theirs")
    assert store.change_counter() != before


def test_serve_assigns_a_run_submitted_by_another_process_before_the_next_tick(
    store: Store, tmp_path: Path
) -> None:
    rig = Rig(store)
    rig.coordinator = Coordinator(
        store,
        rig.cp,
        config=ServeConfig(policy=POLICY, tick_seconds=3600),  # one tick, at the start
        clock=rig.clock,
    )
    worker = rig.worker("w-1")
    worker.register()
    rig.coordinator.receive_all(timeout_seconds=0)
    stop = threading.Event()
    outcome: list[tuple[RunState, str | None]] = []

    def submit_and_watch() -> None:  # `run submit` in another process, then wait for it
        try:
            with Store(tmp_path / "store.sqlite3") as cli:
                time.sleep(0.2)  # the loop has ticked once and is waiting
                add_run(cli, "run-1")
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    run = cli.get_run("run-1")
                    if run.state is not RunState.QUEUED:
                        outcome.append((run.state, run.worker_id))
                        return
                    time.sleep(0.01)
        finally:
            stop.set()

    watcher = threading.Thread(target=submit_and_watch)
    watcher.start()
    serve(rig.coordinator, stop=stop)
    watcher.join(timeout=10)
    assert outcome == [(RunState.ASSIGNED, "w-1")]
