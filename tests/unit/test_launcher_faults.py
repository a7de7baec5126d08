"""Local faults and lease timing in the pure launcher machine, and the dispatch side of them.

A launcher that cannot run (audit log, disk, state directory, Docker, clock) advertises DRAINED,
refuses every ``assign`` with a reason the control plane re-queues, and offers itself again
when the fault clears. Lease deadlines run on the monotonic clock from receipt, so stepping the
wall clock (±2 min, +1 h, before or after receipt) neither drops a lease it accepted nor makes it
hold a slot for ever.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.controlplane import dispatch
from hardened_launcher.controlplane.dispatch import DispatchPolicy, Run, RunState
from hardened_launcher.launcher.machine import (
    LOCAL_FAULTS,
    Action,
    AuditHealth,
    Connected,
    LauncherMachine,
    LaunchRun,
    LocalHealth,
    MachineConfig,
    Note,
    Received,
    Send,
    StartRun,
    Tick,
)
from hardened_launcher.transport.messages import Accept, Assign, Drain, Heartbeat, Refuse, Status

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ENVELOPE = base64.b64encode(b"sealed").decode()
STEPS = (
    timedelta(minutes=2),
    timedelta(minutes=-2),
    timedelta(hours=1),
    timedelta(hours=-1),
    timedelta(0),
)


def machine(**kw: object) -> LauncherMachine:
    base: dict[str, object] = {"worker_id": "w1", "pool_id": "pool-a", "version": "1.0"}
    base.update(kw)
    m = LauncherMachine(MachineConfig(**base))  # type: ignore[arg-type]
    m.handle(Connected(now=T0, mono=0.0))
    return m


def assign(run_id: str = "r1", lease: str = "l1", *, ttl: float = 30.0) -> Assign:
    return Assign(
        run_id=run_id,
        lease_id=lease,
        lease_expires_at=T0 + timedelta(seconds=ttl),
        envelope_b64=ENVELOPE,
    )


def _state(m: LauncherMachine) -> str:
    return m.worker_state  # a call, so mypy does not keep an earlier narrowing


def sent(actions: tuple[Action, ...]) -> list[object]:
    return [a.body for a in actions if isinstance(a, Send)]


def accepts(actions: tuple[Action, ...]) -> list[Accept]:
    return [b for b in sent(actions) if isinstance(b, Accept)]


def heartbeats(actions: tuple[Action, ...]) -> list[Heartbeat]:
    return [b for b in sent(actions) if isinstance(b, Heartbeat)]


# -- local faults ------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", [f for f in LOCAL_FAULTS if f not in {"audit_unavailable"}])
def test_each_probe_fault_drains_refuses_with_a_requeued_reason_and_recovers(fault: str) -> None:
    m = machine()
    actions = m.handle(LocalHealth(faults=frozenset({fault})))
    assert [h.state for h in heartbeats(actions)] == ["DRAINED"]  # announced at once
    refusal = sent(m.handle(Received(body=assign(), now=T0, mono=1.0)))
    assert len(refusal) == 1
    assert isinstance(refusal[0], Refuse)
    assert (refusal[0].run_id, refusal[0].reason) == ("r1", fault)
    assert fault in dispatch.REQUEUE_REFUSAL_REASONS
    assert not m.pending
    # The fault clears: IDLE at once, and the next assign is accepted.
    actions = m.handle(LocalHealth(faults=frozenset()))
    assert [h.state for h in heartbeats(actions)] == ["IDLE"]
    assert accepts(m.handle(Received(body=assign("r2"), now=T0, mono=2.0))) == [
        Accept(run_id="r2", lease_id="l1")
    ]


def test_audit_fault_drains_and_recovers_like_the_others() -> None:
    m = machine()
    actions = m.handle(AuditHealth(healthy=False, failure="No space left on device"))
    assert [h.state for h in heartbeats(actions)] == ["DRAINED"]
    refusal = sent(m.handle(Received(body=assign(), now=T0, mono=1.0)))
    assert isinstance(refusal[0], Refuse)
    assert refusal[0].reason == "audit_unavailable"
    assert "audit_unavailable" in dispatch.REQUEUE_REFUSAL_REASONS
    actions = m.handle(AuditHealth(healthy=True))
    assert [h.state for h in heartbeats(actions)] == ["IDLE"]


@given(faults=st.sets(st.sampled_from(LOCAL_FAULTS), min_size=1))
@settings(max_examples=60, deadline=None)
def test_any_combination_of_faults_names_the_first_in_order(faults: set[str]) -> None:
    m = machine()
    m.handle(LocalHealth(faults=frozenset(faults - {"audit_unavailable"})))
    if "audit_unavailable" in faults:
        m.handle(AuditHealth(healthy=False, failure="x"))
    assert m.worker_state == "DRAINED"
    expected = next(f for f in LOCAL_FAULTS if f in faults)
    refusal = sent(m.handle(Received(body=assign(), now=T0, mono=1.0)))
    assert isinstance(refusal[0], Refuse)
    assert refusal[0].reason == expected


def test_an_operator_drain_stays_after_a_fault_clears() -> None:
    m = machine()
    m.handle(Received(body=Drain(), now=T0, mono=0.5))
    m.handle(LocalHealth(faults=frozenset({"docker_unavailable"})))
    m.handle(LocalHealth(faults=frozenset()))
    assert m.worker_state == "DRAINED"


def test_a_fault_between_accept_and_start_refuses_the_run_without_running_it() -> None:
    m = machine()
    m.handle(Received(body=assign(), now=T0, mono=1.0))
    m.handle(LocalHealth(faults=frozenset({"docker_unavailable"})))
    actions = m.handle(StartRun(run_id="r1", lease_id="l1", now=T0, mono=1.1))
    assert not any(isinstance(a, LaunchRun) for a in actions)
    status = [b for b in sent(actions) if isinstance(b, Status)]
    assert [(s.state, s.reason) for s in status] == [("REFUSED", "docker_unavailable")]


def test_a_running_run_is_not_touched_by_a_fault() -> None:
    m = machine()
    m.handle(Received(body=assign(), now=T0, mono=1.0))
    m.handle(StartRun(run_id="r1", lease_id="l1", now=T0, mono=1.1))
    actions = m.handle(LocalHealth(faults=frozenset({"docker_unavailable"})))
    assert [h.running for h in heartbeats(actions)] == [("r1",)]
    assert "r1" in m.running


# -- the clock against the control plane's --------------------------------------------------
def test_a_skewed_clock_refuses_with_clock_skewed_then_rechecks() -> None:
    m = machine(clock_skew=timedelta(minutes=5))
    ahead = T0 + timedelta(hours=1)
    refusal = sent(m.handle(Received(body=assign(), now=ahead, mono=1.0, sent_at=T0)))
    assert [type(b) for b in refusal] == [Heartbeat, Refuse]
    assert refusal[1].reason == "clock_skewed"  # type: ignore[attr-defined]
    assert m.worker_state == "DRAINED"
    # Still skewed within the recheck period.
    m.handle(Tick(now=ahead, mono=30.0))
    assert m.worker_state == "DRAINED"
    # After it, the launcher offers itself again; a sane message keeps it available.
    actions = m.handle(Tick(now=ahead, mono=62.0))
    assert any(isinstance(a, Note) and a.event == "launcher.clock_recheck" for a in actions)
    assert _state(m) == "IDLE"
    fixed = T0 + timedelta(seconds=3)
    assert accepts(m.handle(Received(body=assign("r2"), now=fixed, mono=63.0, sent_at=T0))) == [
        Accept(run_id="r2", lease_id="l1")
    ]


@pytest.mark.parametrize("offset", [timedelta(seconds=-299), timedelta(0), timedelta(seconds=299)])
def test_a_clock_within_the_skew_is_sane(offset: timedelta) -> None:
    m = machine(clock_skew=timedelta(minutes=5))
    out = accepts(m.handle(Received(body=assign(), now=T0 + offset, mono=1.0, sent_at=T0)))
    assert out == [Accept(run_id="r1", lease_id="l1")]


# -- leases on the monotonic clock ----------------------------------------------------------
@pytest.mark.parametrize("at_receipt", STEPS)
@pytest.mark.parametrize("after", STEPS)
def test_a_stepped_wall_clock_never_drops_an_accepted_lease_before_start(
    at_receipt: timedelta, after: timedelta
) -> None:
    """The wall clock is off by ``at_receipt`` when the assign arrives and stepped by ``after``
    before ``start`` (sent 1 s later on the monotonic clock): the run starts in every case."""
    m = machine(clock_skew=timedelta(hours=2))
    received_at = T0 + at_receipt
    assert accepts(m.handle(Received(body=assign(), now=received_at, mono=100.0))) == [
        Accept(run_id="r1", lease_id="l1")
    ]
    later = received_at + after
    tick = m.handle(Tick(now=later, mono=100.5))
    assert not any(isinstance(a, Note) and a.event == "run.lease_dropped" for a in tick)
    actions = m.handle(StartRun(run_id="r1", lease_id="l1", now=later, mono=101.0))
    assert [a.assign.run_id for a in actions if isinstance(a, LaunchRun)] == ["r1"]


@pytest.mark.parametrize("at_receipt", STEPS)
def test_an_unstarted_lease_frees_its_slot_after_a_bounded_monotonic_window(
    at_receipt: timedelta,
) -> None:
    m = machine(clock_skew=timedelta(hours=2))
    m.handle(Received(body=assign(ttl=30), now=T0 + at_receipt, mono=0.0))
    floor, ceiling, wait = 30.0, 600.0, 10.0
    # Never dropped before the floor (+ start wait), whatever the wall clock said...
    m.handle(Tick(now=T0 + timedelta(days=1), mono=floor + wait - 0.1))
    assert "r1" in m.pending
    # ...and always dropped by the ceiling (+ start wait), whatever the wall clock says.
    actions = m.handle(Tick(now=T0 - timedelta(days=1), mono=ceiling + wait))
    assert "r1" not in m.pending
    assert any(isinstance(a, Note) and a.event == "run.lease_dropped" for a in actions)
    assert [h.state for h in heartbeats(actions)][-1] == "IDLE"


def test_the_lease_window_follows_the_lease_when_the_clock_is_right() -> None:
    m = machine()
    m.handle(Received(body=assign(ttl=120), now=T0, mono=0.0))
    m.handle(Tick(now=T0, mono=129.0))
    assert "r1" in m.pending
    m.handle(Tick(now=T0, mono=130.0))
    assert "r1" not in m.pending


def test_a_start_after_the_monotonic_deadline_is_dropped_even_if_the_wall_clock_went_back() -> None:
    m = machine()
    m.handle(Received(body=assign(), now=T0, mono=0.0))
    actions = m.handle(StartRun(run_id="r1", lease_id="l1", now=T0 - timedelta(hours=1), mono=40.0))
    assert not any(isinstance(a, LaunchRun) for a in actions)


def test_machine_config_rejects_a_bad_lease_window() -> None:
    with pytest.raises(ValueError, match="lease window"):
        MachineConfig(
            worker_id="w",
            pool_id="p",
            version="1",
            lease_window_floor=timedelta(minutes=5),
            lease_window_ceiling=timedelta(minutes=1),
        )


# -- dispatch: what re-queues and what consumes a lease attempt -------------------------------
def _assigned(attempts: int) -> Run:
    return Run(
        id="r1",
        pool_id="pool-a",
        state=RunState.ASSIGNED,
        key_id="k",
        envelope_expires_at=10_000.0,
        created_at=0.0,
        updated_at=0.0,
        worker_id="w1",
        lease_id="l1",
        lease_expires_at=30.0,
        attempts=attempts,
    )


def _refuse(run: Run, reason: str) -> dispatch.Transition:
    out = dispatch.refuse(run, worker_id="w1", lease_id="l1", reason=reason, message="m", now=1.0)
    assert isinstance(out, dispatch.Transition)
    return out


@pytest.mark.parametrize("reason", LOCAL_FAULTS)
def test_dispatch_requeues_every_local_fault_refusal(reason: str) -> None:
    after = _refuse(_assigned(1), reason).after
    assert after.state is RunState.QUEUED
    assert after.reason == reason
    assert after.attempts == 1  # a broken worker still spends an attempt (bounded)


def test_worker_busy_refusals_do_not_consume_lease_attempts() -> None:
    policy = DispatchPolicy(max_lease_attempts=5)
    run = _assigned(1)
    for _ in range(50):  # fifty busy refusals in a row: the run stays dispatchable
        queued = _refuse(run, "worker_busy").after
        assert queued.state is RunState.QUEUED
        assert queued.attempts == 0
        plan = dispatch.plan_assignments(
            queued=[queued],
            workers=[
                dispatch.Worker(
                    id="w1",
                    pool_id="pool-a",
                    state=dispatch.WorkerState.IDLE,
                    drained=False,
                    max_concurrent_runs=1,
                    last_heartbeat_at=1.0,
                )
            ],
            held_counts={},
            pool_key_ids={"pool-a": "k"},
            now=1.0,
            policy=policy,
            new_lease_id=lambda: "l1",
        )
        assert [t.after.state for t in plan] == [RunState.ASSIGNED]
        run = plan[0].after


@pytest.mark.parametrize("reason", ["policy_denied", "envelope_rejected", "identity_invalid"])
def test_gate_refusals_stay_final(reason: str) -> None:
    assert _refuse(_assigned(1), reason).after.state is RunState.REFUSED


def test_a_drained_worker_gets_no_lease() -> None:
    worker = dispatch.Worker(
        id="w1",
        pool_id="pool-a",
        state=dispatch.WorkerState.DRAINED,
        drained=False,
        max_concurrent_runs=1,
        last_heartbeat_at=1.0,
    )
    assert not worker.accepts_work()
