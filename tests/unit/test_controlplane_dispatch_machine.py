"""Stateful property test of dispatch through the coordinator and the real SQLite store.

Everything travels through the transport package's MemoryBroker (acks, dedupe, retransmission,
lost messages). Workers register, heartbeat, accept (also late, with leases long gone), refuse,
finish, forget runs, die, go silent and come back; the broker restarts and publishes the last
wills of workers that are alive (as mosquitto does on shutdown), and stale wills arrive after a
worker is back; the operator submits and cancels; time jumps. After every step:

* the control plane sends at most one ``start`` per run, ever (retransmissions of that one
  message aside), and at most one worker ever starts a run;
* a ``start`` answers an accept of the lease the worker was offered, sent before it expired;
* a run that was RUNNING never goes back to QUEUED or ASSIGNED;
* a terminal state never changes;
* a run is CRASHED ``worker_lost`` only after its worker was silent, as the control plane saw it,
  for at least the grace period: a will alone (broker restart) never crashes a run;
* held runs carry a worker and a lease, queued runs neither;
* a run is never CRASHED (``worker_lost`` or ``worker_lost_run``) less than the shorter of
  the heartbeat timeout and the grace after the control plane handled a heartbeat of its
  worker listing it: a worker that keeps heartbeating a run keeps it;
* no run whose worker keeps running and heartbeating it is ever CRASHED or cancelled, across a
  control-plane outage longer than the heartbeat timeout (a restart) or a broker outage longer
  than the grace (with the wills mosquitto publishes as it shuts down): checked by the outage
  rules once the workers are back.

At the end every worker dies and every run is cancelled: each run must then be in exactly one
terminal state.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from hardened_launcher.controlplane import dispatch
from hardened_launcher.controlplane.dispatch import (
    HELD_RUN_STATES,
    TERMINAL_RUN_STATES,
    DispatchPolicy,
    RunState,
)
from hardened_launcher.controlplane.serve import Coordinator, ServeConfig
from hardened_launcher.transport import messages as wire
from hardened_launcher.transport.memory import MemoryBroker
from tests.unit.test_controlplane_support import (
    FakeClock,
    SimWorker,
    add_pool,
    add_run,
    open_store,
    sent_starts,
)

WORKER_IDS = ("w0", "w1", "w2")
POLICY = DispatchPolicy(
    lease_seconds=10, heartbeat_timeout_seconds=30, max_lease_attempts=4, lost_run_grace_seconds=20
)


class SpyCoordinator(Coordinator):
    """Remembers when (control-plane clock) a heartbeat listing a run was handled."""

    def __init__(self, *args: Any, listed: dict[tuple[str, str], list[float]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.listed = listed

    def handle_message(self, *, pool_id: str, worker_id: str, message: wire.Message) -> None:
        if isinstance(message.body, wire.Heartbeat):
            for run_id in message.body.running:
                self.listed.setdefault((worker_id, run_id), []).append(self.clock())
        super().handle_message(pool_id=pool_id, worker_id=worker_id, message=message)


class DispatchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self.store = open_store(Path(self._tmp.name))
        add_pool(self.store)
        counter = iter(range(1_000_000))
        self.broker = MemoryBroker()
        self.cp = self.broker.control_plane()
        self.cp.start()
        self.listed: dict[tuple[str, str], list[float]] = {}
        self.coordinator = SpyCoordinator(
            self.store,
            self.cp,
            config=ServeConfig(policy=POLICY),
            clock=self.clock,
            lease_ids=lambda: f"lease-{next(counter)}",
            listed=self.listed,
        )
        self.workers = {w: SimWorker(w, self.clock, self.broker) for w in WORKER_IDS}
        self.run_ids: list[str] = []
        self.go: dict[str, set[str]] = {}
        self.was_running: set[str] = set()
        self.final: dict[str, tuple[RunState, str]] = {}
        #: runs a worker refused (the refusal may still be in flight: it ends a RUNNING run)
        self.refused: set[str] = set()

    def _pump(self) -> None:
        self.coordinator.step()
        before = {w.id: set(w.running) for w in self.workers.values()}
        for worker in self.workers.values():
            worker.deliver_all()
        for worker in self.workers.values():
            for run_id in worker.running - before[worker.id]:
                self.go.setdefault(run_id, set()).add(worker.id)

    @initialize()
    def start(self) -> None:
        self.workers["w0"].register()
        self.submit()
        self.submit()
        self._pump()

    def _offers(self, *, latest_only: bool) -> list[tuple[str, str, str]]:
        return sorted(
            (worker.id, run_id, lease_id)
            for worker in self.workers.values()
            for run_id, leases in worker.offers.items()
            for lease_id in (leases[-1:] if latest_only else leases)
        )

    @rule(worker=st.sampled_from(WORKER_IDS), capacity=st.integers(1, 2))
    def register(self, worker: str, capacity: int) -> None:
        self.workers[worker].revive()
        self.workers[worker].register(max_concurrent_runs=capacity)
        self._pump()

    @rule(
        worker=st.sampled_from(WORKER_IDS),
        state=st.sampled_from(["IDLE", "BUSY", "DRAINED"]),
        after=st.sampled_from([0.0, 12.0]),
    )
    def heartbeat(self, worker: str, state: wire.WorkerState, after: float) -> None:
        self.clock.advance(after)
        self.broker.advance(after)
        self.workers[worker].revive()
        self.workers[worker].heartbeat(state)
        self._pump()

    @rule()
    def submit(self) -> None:
        run_id = f"run-{len(self.run_ids)}"
        add_run(self.store, run_id, now=self.clock.now)
        self.run_ids.append(run_id)

    @precondition(lambda self: bool(self._offers(latest_only=True)))
    @rule(data=st.data())
    def accept_latest_offer(self, data: st.DataObject) -> None:
        worker, run_id, lease_id = data.draw(st.sampled_from(self._offers(latest_only=True)))
        self.workers[worker].accept(run_id, lease_id)
        self._pump()

    @precondition(lambda self: bool(self._offers(latest_only=False)))
    @rule(data=st.data(), delay=st.sampled_from([0.0, 11.0]))
    def accept_any_offer_late(self, data: st.DataObject, delay: float) -> None:
        worker, run_id, lease_id = data.draw(st.sampled_from(self._offers(latest_only=False)))
        self.clock.advance(delay)
        self.workers[worker].accept(run_id, lease_id)
        self._pump()

    @precondition(lambda self: bool(self._offers(latest_only=True)))
    @rule(
        reason=st.sampled_from(["policy_denied", "worker_busy", "envelope_rejected"]),
        data=st.data(),
    )
    def refuse_offer(self, reason: str, data: st.DataObject) -> None:
        worker, run_id, lease_id = data.draw(st.sampled_from(self._offers(latest_only=True)))
        self.refused.add(run_id)
        self.workers[worker].send(
            wire.Refuse(run_id=run_id, lease_id=lease_id, reason=reason, message="no"),
        )
        self._pump()

    @rule(
        worker=st.sampled_from(WORKER_IDS),
        outcome=st.sampled_from(["FINISHED", "FAILED", "STOPPED", "CRASHED", "RUNNING"]),
        data=st.data(),
    )
    def report(self, worker: str, outcome: wire.RunState, data: st.DataObject) -> None:
        sim = self.workers[worker]
        if not sim.running:
            return
        run_id = data.draw(st.sampled_from(sorted(sim.running)))
        sim.status(run_id, outcome, 0)
        self._pump()

    @rule(worker=st.sampled_from(WORKER_IDS))
    def worker_forgets_its_runs(self, worker: str) -> None:
        # The worker lost its runs without a final status; its heartbeats stop listing them.
        sim = self.workers[worker]
        if sim.transport.closed:
            return
        sim.running.clear()
        for _ in range(3):
            sim.heartbeat("IDLE")
            self._pump()
            self.clock.advance(12)
            self.broker.advance(12)

    @rule(count=st.integers(1, 3))
    def broker_loses_messages(self, count: int) -> None:
        self.broker.drop_next(count)

    @rule(worker=st.sampled_from(WORKER_IDS))
    def die(self, worker: str) -> None:
        sim = self.workers[worker]
        if not sim.transport.closed:
            sim.die()
        self._pump()

    @rule(reregister=st.sets(st.sampled_from(WORKER_IDS)))
    def broker_restarts(self, reregister: set[str]) -> None:
        # mosquitto publishes every connected worker's will as it shuts down; the workers
        # reconnect, and some register again before the control plane looks.
        self.broker.restart()
        self._pump()
        for worker in sorted(reregister):
            sim = self.workers[worker]
            if not sim.transport.closed:
                sim.register()
        self._pump()

    def _kept_runs(self) -> dict[str, tuple[str, int]]:
        """RUNNING runs whose (connected) worker runs them: run id -> (worker, cancels seen).

        None while the broker is still to lose messages (``broker_loses_messages``): a lost
        heartbeat after an outage may rightly let the worker's grace end, so nothing is promised.
        """
        kept: dict[str, tuple[str, int]] = {}
        if self.broker.pending_drops:
            return kept
        for sim in self.workers.values():
            if sim.transport.closed:
                continue
            for run_id in sim.running:
                run = self.store.get_run(run_id)
                if (
                    run.state is RunState.RUNNING
                    and run.worker_id == sim.id
                    and not run.cancel_requested
                    and run_id not in self.refused
                ):
                    kept[run_id] = (sim.id, sim.cancelled.count(run_id))
        return kept

    def _check_kept(self, kept: dict[str, tuple[str, int]]) -> None:
        for run_id, (worker_id, cancels) in kept.items():
            run = self.store.get_run(run_id)
            assert (run.state, run.worker_id) == (RunState.RUNNING, worker_id), run
            assert self.workers[worker_id].cancelled.count(run_id) == cancels, run
            assert run_id in self.workers[worker_id].running

    def _workers_come_back(self, kept: dict[str, tuple[str, int]], *, register: bool) -> None:
        for sim in self.workers.values():
            if not sim.transport.closed:
                if register:
                    sim.register()
                sim.heartbeat("BUSY")
        self._pump()
        self._check_kept(kept)
        for _ in range(3):  # and they go on, well past every timeout
            self.clock.advance(12)
            self.broker.advance(12)
            for sim in self.workers.values():
                if not sim.transport.closed:
                    sim.heartbeat("BUSY")
            self._pump()
            self._check_kept(kept)

    @rule(
        seconds=st.sampled_from([POLICY.heartbeat_timeout_seconds + 1, 120.0, 600.0]),
        register=st.booleans(),
    )
    def control_plane_outage(self, seconds: float, register: bool) -> None:
        # The control plane is down (then restarts on the same store); the workers' heartbeats
        # meanwhile are lost, their critical messages wait for it.
        kept = self._kept_runs()
        for sim in self.workers.values():
            if not sim.transport.closed:
                sim.heartbeat("BUSY")
        self.clock.advance(seconds)
        self.broker.advance(seconds)
        waiting = []
        while (received := self.cp.receive(timeout_seconds=0)) is not None:
            if not isinstance(received.message.body, wire.Heartbeat):
                waiting.append(received)
        for received in waiting:
            self.cp.inbox.put(received)
        self.coordinator = SpyCoordinator(
            self.store,
            self.cp,
            config=ServeConfig(policy=POLICY),
            clock=self.clock,
            lease_ids=self.coordinator.lease_ids,
            listed=self.listed,
        )
        self._pump()  # the first tick after the restart
        self._check_kept(kept)
        self._workers_come_back(kept, register=register)

    @rule(
        seconds=st.sampled_from([POLICY.lost_run_grace_seconds + 5, 90.0]),
        register=st.booleans(),
    )
    def broker_outage_with_wills(self, seconds: float, register: bool) -> None:
        kept = self._kept_runs()
        for sim in self.workers.values():
            if not sim.transport.closed:
                self.broker.publish_will(sim.transport)
        self.broker.go_down()
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(10)
            self.broker.advance(10)
            elapsed += 10
            self._pump()
        self.broker.come_up()
        self._pump()
        self._check_kept(kept)
        self._workers_come_back(kept, register=register)

    @rule(worker=st.sampled_from(WORKER_IDS))
    def stale_will_of_a_live_worker(self, worker: str) -> None:
        sim = self.workers[worker]
        if sim.transport.closed:
            return
        self.broker.publish_will(sim.transport)
        self._pump()

    @rule(seconds=st.sampled_from([0.5, 3.0, 9.0, 11.0, 31.0, 120.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.broker.advance(seconds)  # due retransmissions go out
        self._pump()

    @precondition(lambda self: bool(self.run_ids))
    @rule(data=st.data())
    def operator_cancels(self, data: st.DataObject) -> None:
        run = self.store.get_run(data.draw(st.sampled_from(self.run_ids)))
        outcome = dispatch.cancel(run, now=self.clock.now)
        if isinstance(outcome, dispatch.Transition):
            self.store.apply(outcome)
        self._pump()

    @rule(worker=st.sampled_from(WORKER_IDS))
    def worker_restarts_with_same_id(self, worker: str) -> None:
        sim = self.workers[worker]
        sim.reset()
        sim.register()
        self._pump()

    @invariant()
    def one_executor_per_run(self) -> None:
        holders: dict[str, list[str]] = {}
        for worker in self.workers.values():
            for run_id in worker.running:
                holders.setdefault(run_id, []).append(worker.id)
        for run_id, ids in holders.items():
            assert len(ids) == 1, (run_id, ids)
        for run_id, got_go in self.go.items():
            assert len(got_go) <= 1, (run_id, got_go)
        starts: dict[str, int] = {}
        for start in sent_starts(self.cp):
            starts[start.run_id] = starts.get(start.run_id, 0) + 1
        assert all(n == 1 for n in starts.values()), starts

    @invariant()
    def go_only_for_a_live_lease(self) -> None:
        # The go signal answers an accept of the lease the worker was offered last for that run,
        # sent before that lease expired: a late or superseded accept never starts a run.
        for worker in self.workers.values():
            for run_id, lease_id, sent_at in worker.go_log:
                assert lease_id in worker.lease_expiry, (worker.id, run_id, lease_id)
                assert sent_at < worker.lease_expiry[lease_id], (worker.id, run_id, lease_id)

    @invariant()
    def states_are_consistent(self) -> None:
        for run_id in self.run_ids:
            run = self.store.get_run(run_id)
            if run.state is RunState.RUNNING:
                self.was_running.add(run_id)
            if run_id in self.was_running:
                assert run.state not in (RunState.QUEUED, RunState.ASSIGNED), run
            if run_id in self.final:
                assert (run.state, run.reason) == self.final[run_id], run
            elif run.state in TERMINAL_RUN_STATES:
                self.final[run_id] = (run.state, run.reason)
                self._check_worker_lost(run)
                self._check_not_crashed_while_listed(run)
            if run.state in HELD_RUN_STATES:
                assert run.worker_id is not None
                assert run.lease_id is not None
            if run.state is RunState.QUEUED:
                assert run.worker_id is None
                assert run.lease_id is None

    def _check_not_crashed_while_listed(self, run: dispatch.Run) -> None:
        if run.state is not RunState.CRASHED or run.reason not in (
            "worker_lost",
            "worker_lost_run",
        ):
            return
        assert run.worker_id is not None
        assert run.finished_at is not None
        finished = run.finished_at
        heard = [t for t in self.listed.get((run.worker_id, run.id), []) if t <= finished]
        if heard:
            shorter = min(POLICY.heartbeat_timeout_seconds, POLICY.lost_run_grace_seconds)
            assert finished - max(heard) >= shorter, (run, heard)

    def _check_worker_lost(self, run: dispatch.Run) -> None:
        # Seen right after it happened: the worker cannot have been heard from since (a rule
        # that pumps several times may let it heartbeat afterwards: then nothing is checked).
        if run.state is not RunState.CRASHED or run.reason != "worker_lost":
            return
        assert run.worker_id is not None
        assert run.finished_at is not None
        worker = self.store.get_worker(run.worker_id).worker
        if worker.last_heartbeat_at <= run.finished_at:
            silent = run.finished_at - worker.last_heartbeat_at
            assert silent >= POLICY.lost_run_grace_seconds, (run, worker)

    def teardown(self) -> None:
        try:
            awaited = any(kind == "run.awaiting_worker" for _, kind, _ in self.store.events())
            event(f"a RUNNING run awaited its worker after a will: {awaited}")
            for worker in self.workers.values():
                if not worker.transport.closed:
                    worker.die()
            self.coordinator.step()
            for run_id in self.run_ids:
                run = self.store.get_run(run_id)
                outcome = dispatch.cancel(run, now=self.clock.now)
                if isinstance(outcome, dispatch.Transition):
                    self.store.apply(outcome)
            self.clock.advance(POLICY.heartbeat_timeout_seconds + 1)
            self.coordinator.tick()
            self.states_are_consistent()
            event(f"some run was RUNNING: {bool(self.was_running)}")
            event(f"a cancel was sent: {any(w.cancelled for w in self.workers.values())}")
            event(f"runs that got a go: {min(len(self.go), 3)}")
            lost = any(self.store.get_run(r).reason == "worker_lost_run" for r in self.run_ids)
            event(f"a run was lost from heartbeats: {lost}")

            reruns = sum(1 for r in self.run_ids if self.store.get_run(r).attempts > 1)
            event(f"runs leased more than once: {min(reruns, 2)}")
            for run_id in self.run_ids:
                run = self.store.get_run(run_id)
                assert run.state in TERMINAL_RUN_STATES, run
        finally:
            self.store.close()
            self._tmp.cleanup()


DispatchMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDispatchMachine = DispatchMachine.TestCase
