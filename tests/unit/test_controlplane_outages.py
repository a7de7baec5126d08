"""Time the control plane could not hear does not count (issue 18).

A control-plane outage longer than the heartbeat timeout, or a broker outage (with the wills
mosquitto publishes as it shuts down) longer than the lost-run grace, must not crash a run whose
worker is alive and still running it: the timeouts run from when the control plane could hear
again. A worker that is really dead is still found out, one grace after that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.controlplane import dispatch
from hardened_launcher.controlplane.dispatch import DispatchPolicy, RunState, Worker, WorkerState
from hardened_launcher.controlplane.serve import Coordinator, ServeConfig
from hardened_launcher.controlplane.store import Store
from tests.unit.test_controlplane_serve import POLICY, Rig, _started
from tests.unit.test_controlplane_support import T0, SimWorker, add_pool, add_run, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as s:
        add_pool(s)
        yield s


def _restart_control_plane(rig: Rig) -> None:
    """A new control-plane process on the same store (heartbeats sent meanwhile were lost)."""
    while rig.cp.receive(timeout_seconds=0) is not None:
        pass
    rig.coordinator = Coordinator(
        rig.store, rig.cp, config=ServeConfig(policy=POLICY), clock=rig.clock
    )


def _broker_outage(rig: Rig, seconds: float, *, dead: tuple[SimWorker, ...] = ()) -> None:
    """mosquitto shuts down (publishing every connected worker's will), stays down for
    ``seconds`` while the control plane keeps ticking, and comes back; ``dead`` workers die
    during the outage."""
    for worker in rig.workers:
        if not worker.transport.closed:
            rig.broker.publish_will(worker.transport)
    rig.broker.go_down()
    for worker in dead:
        worker.reset(reconnect=False)
    elapsed = 0.0
    while elapsed < seconds:
        rig.clock.advance(5)
        rig.broker.advance(5)
        elapsed += 5
        for worker in rig.workers:
            if not worker.transport.closed:
                worker.heartbeat("BUSY")  # lost: the broker is down
        rig.pump()
    rig.broker.come_up()


def _two_running(rig: Rig) -> tuple[SimWorker, SimWorker]:
    first, second = rig.worker("w-1"), rig.worker("w-2")
    first.register()
    second.register()
    add_run(rig.store, "run-1")
    add_run(rig.store, "run-2")
    rig.pump()
    for worker in (first, second):
        for run_id, leases in worker.offers.items():
            worker.accept(run_id, leases[-1])
    rig.pump()
    assert first.running | second.running == {"run-1", "run-2"}
    return first, second


@pytest.mark.parametrize("outage", [POLICY.heartbeat_timeout_seconds + 1, 120.0, 3600.0])
def test_a_control_plane_outage_longer_than_the_heartbeat_timeout_crashes_nothing(
    store: Store, outage: float
) -> None:
    rig = Rig(store)
    first, second = _two_running(rig)
    rig.clock.advance(outage)
    for worker in (first, second):
        worker.heartbeat("BUSY")  # nobody hears these
    _restart_control_plane(rig)
    rig.pump()  # the first tick after the restart
    for run_id in ("run-1", "run-2"):
        assert store.get_run(run_id).state is RunState.RUNNING
    assert all(store.get_worker(w).worker.alive for w in ("w-1", "w-2"))
    rig.clock.advance(POLICY.heartbeat_timeout_seconds / 2)
    for worker in (first, second):
        worker.heartbeat("BUSY")
    rig.pump()
    rig.clock.advance(POLICY.heartbeat_timeout_seconds / 2 + 1)
    rig.pump()  # more than the timeout after the restart, but heard half-way through
    for worker in (first, second):
        for run_id in sorted(worker.running):
            worker.status(run_id, "FINISHED", 0)
    rig.pump()
    assert [store.get_run(r).state for r in ("run-1", "run-2")] == [RunState.FINISHED] * 2
    assert first.cancelled == second.cancelled == []


def test_after_a_control_plane_restart_a_silent_worker_is_lost_one_timeout_later(
    store: Store,
) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    worker.reset(reconnect=False)  # vanished without a will while the control plane was down
    rig.clock.advance(120)
    _restart_control_plane(rig)
    rig.pump()
    assert store.get_run("run-1").state is RunState.RUNNING
    rig.clock.advance(POLICY.heartbeat_timeout_seconds)
    rig.pump()
    assert store.get_run("run-1").state is RunState.RUNNING
    rig.clock.advance(1)
    rig.pump()
    run = store.get_run("run-1")
    assert (run.state, run.reason) == (RunState.CRASHED, "worker_lost")


@pytest.mark.parametrize("outage", [POLICY.lost_run_grace_seconds + 5, 90.0, 600.0])
@pytest.mark.parametrize("back_after", [0.0, POLICY.lost_run_grace_seconds - 5])
def test_a_broker_outage_longer_than_the_grace_with_wills_crashes_nothing(
    store: Store, outage: float, back_after: float
) -> None:
    rig = Rig(store)
    first, second = _two_running(rig)
    _broker_outage(rig, outage)
    assert not store.get_worker("w-1").worker.alive  # the wills were heard
    rig.pump()  # the first tick after the broker is back, before any worker returned
    for run_id in ("run-1", "run-2"):
        assert store.get_run(run_id).state is RunState.RUNNING
    rig.clock.advance(back_after)  # the launchers' reconnect back-off
    rig.pump()
    first.register()
    second.heartbeat("BUSY")  # one comes back with a register, the other with a heartbeat
    rig.pump()
    assert all(store.get_worker(w).worker.alive for w in ("w-1", "w-2"))
    for _ in range(6):
        rig.clock.advance(10)
        first.heartbeat("BUSY")
        second.heartbeat("BUSY")
        rig.pump()
    for run_id in ("run-1", "run-2"):
        assert store.get_run(run_id).state is RunState.RUNNING
    for worker in (first, second):
        for run_id in sorted(worker.running):
            worker.status(run_id, "FINISHED", 0)
    rig.pump()
    assert [store.get_run(r).state for r in ("run-1", "run-2")] == [RunState.FINISHED] * 2
    assert first.cancelled == second.cancelled == []


def test_a_worker_that_died_during_a_broker_outage_is_crashed_one_grace_after_it(
    store: Store,
) -> None:
    rig = Rig(store)
    first, second = _two_running(rig)
    dead_run = next(iter(first.running))
    alive_run = next(iter(second.running))
    _broker_outage(rig, 90, dead=(first,))
    rig.pump()
    second.register()
    rig.pump()
    for _ in range(int(POLICY.lost_run_grace_seconds) - 1):
        rig.clock.advance(1)
        second.heartbeat("BUSY")
        rig.pump()
    assert store.get_run(dead_run).state is RunState.RUNNING  # the grace is not over
    rig.clock.advance(1)
    second.heartbeat("BUSY")
    rig.pump()
    run = store.get_run(dead_run)
    assert (run.state, run.reason) == (RunState.CRASHED, "worker_lost")
    assert store.get_run(alive_run).state is RunState.RUNNING
    assert second.cancelled == []


def test_a_run_missing_from_heartbeats_is_judged_on_time_the_control_plane_could_hear(
    store: Store,
) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    add_run(store, "run-1")
    _started(rig, worker, "run-1")
    saved = set(worker.running)
    worker.running.clear()
    worker.heartbeat("BUSY")  # sent before `start` arrived: it omits the run
    rig.pump()
    worker.running |= saved
    _broker_outage(rig, 90)
    worker.running.clear()
    worker.heartbeat("BUSY")  # a stale heartbeat from before the outage, delivered late
    rig.pump()
    assert store.get_run("run-1").state is RunState.RUNNING
    worker.running |= saved
    rig.clock.advance(5)
    worker.heartbeat("BUSY")
    rig.pump()
    assert store.get_run("run-1").state is RunState.RUNNING
    assert worker.cancelled == []


def _worker(last_heartbeat_at: float, gone_at: float | None) -> Worker:
    return Worker(
        id="w",
        pool_id="p",
        state=WorkerState.IDLE if gone_at is None else WorkerState.GONE,
        drained=False,
        max_concurrent_runs=1,
        last_heartbeat_at=last_heartbeat_at,
        gone_at=gone_at,
    )


@given(
    last=st.floats(0, 1000),
    heard=st.floats(0, 1000),
    now=st.floats(0, 3000),
    gone=st.one_of(st.none(), st.floats(0, 1000)),
)
def test_hearing_later_only_ever_delays_a_judgement(
    last: float, heard: float, now: float, gone: float | None
) -> None:
    policy = DispatchPolicy(heartbeat_timeout_seconds=90, lost_run_grace_seconds=60)
    worker = _worker(last, gone)
    silent = dispatch.worker_is_silent(worker, now=now, policy=policy, heard_since=heard)
    past = dispatch.worker_past_grace(worker, now=now, policy=policy, heard_since=heard)
    # Never judged sooner than without the rule, and never within the limit of hearing.
    if silent:
        assert dispatch.worker_is_silent(worker, now=now, policy=policy)
        assert now - heard > policy.heartbeat_timeout_seconds
    if past:
        assert dispatch.worker_past_grace(worker, now=now, policy=policy)
        assert now - heard >= policy.lost_run_grace_seconds
    # Hearing since before the worker's last sign of life changes nothing.
    early = min(heard, last, gone if gone is not None else last)
    assert dispatch.worker_is_silent(
        worker, now=now, policy=policy, heard_since=early
    ) is dispatch.worker_is_silent(worker, now=now, policy=policy)
    assert dispatch.worker_past_grace(
        worker, now=now, policy=policy, heard_since=early
    ) is dispatch.worker_past_grace(worker, now=now, policy=policy)


def test_heard_since_starts_at_construction_and_moves_on_reconnects(store: Store) -> None:
    rig = Rig(store)
    assert rig.coordinator.heard_since == T0
    rig.clock.advance(100)
    rig.pump()
    assert rig.coordinator.heard_since == T0  # connected all along
    rig.broker.go_down()
    rig.clock.advance(10)
    rig.pump()
    assert rig.coordinator.heard_since == T0 + 110
    rig.clock.advance(10)
    rig.broker.come_up()
    rig.pump()
    assert rig.coordinator.heard_since == T0 + 120
    rig.clock.advance(10)
    rig.broker.restart()  # down and up between two looks: the reconnect counter tells
    rig.pump()
    assert rig.coordinator.heard_since == T0 + 130
