"""The launcher's pure state machine: examples, then a hypothesis rule-based model."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hardened_launcher.launcher.machine import (
    Action,
    AuditHealth,
    CancelRun,
    Connected,
    Exit,
    ForwardLogUrls,
    LauncherMachine,
    LaunchRun,
    LogUrlsWanted,
    MachineConfig,
    Note,
    Received,
    RunEnded,
    RunStarted,
    Send,
    ShippingLogs,
    StartRun,
    Terminate,
    Tick,
)
from hardened_launcher.transport.messages import (
    Accept,
    Assign,
    Cancel,
    Cycle,
    Drain,
    Heartbeat,
    LogUrl,
    LogUrls,
    LogUrlsRequest,
    Refuse,
    Register,
    Status,
    Undrain,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENVELOPE = base64.b64encode(b"sealed").decode()


def config(**kw: object) -> MachineConfig:
    base: dict[str, object] = {"worker_id": "w1", "pool_id": "pool-a", "version": "1.0"}
    base.update(kw)
    return MachineConfig(**base)  # type: ignore[arg-type]


def assign(
    run_id: str, lease: str = "l1", *, expires: datetime = T0 + timedelta(seconds=30)
) -> Assign:
    return Assign(run_id=run_id, lease_id=lease, lease_expires_at=expires, envelope_b64=ENVELOPE)


def sent(actions: tuple[Action, ...]) -> list[object]:
    return [a.body for a in actions if isinstance(a, Send)]


def test_connect_registers_and_heartbeats() -> None:
    m = LauncherMachine(config(metadata={"zone": "a"}, max_concurrent_runs=2))
    bodies = sent(m.handle(Connected(now=T0)))
    assert bodies == [
        Register(
            worker_id="w1",
            pool_id="pool-a",
            version="1.0",
            metadata={"zone": "a"},
            max_concurrent_runs=2,
        ),
        Heartbeat(state="IDLE"),
    ]


def test_happy_path_accept_start_running_finished() -> None:
    m = LauncherMachine(config())
    a = assign("r1")
    assert sent(m.handle(Received(body=a, now=T0)))[0] == Accept(run_id="r1", lease_id="l1")
    assert m.worker_state == "BUSY"
    actions = m.handle(StartRun(run_id="r1", lease_id="l1", now=T0))
    assert LaunchRun(assign=a) in actions
    assert sent(m.handle(RunStarted(run_id="r1"))) == [Status(run_id="r1", state="RUNNING")]
    assert sent(m.handle(RunStarted(run_id="r1"))) == []  # once
    final = Status(run_id="r1", state="FINISHED", exit_code=0, reason="run_succeeded")
    assert sent(m.handle(RunEnded(run_id="r1", status=final))) == [final]
    assert str(m.worker_state) == "IDLE"
    assert not m.running


def test_busy_draining_and_audit_refusals() -> None:
    m = LauncherMachine(config())
    m.handle(Received(body=assign("r1"), now=T0))
    refused = sent(m.handle(Received(body=assign("r2"), now=T0)))
    assert refused == [
        Refuse(run_id="r2", lease_id="l1", reason="worker_busy", message=refused[0].message)  # type: ignore[attr-defined]
    ]
    m2 = LauncherMachine(config())
    m2.handle(Received(body=Drain(), now=T0))
    assert sent(m2.handle(Received(body=assign("r1"), now=T0)))[0].reason == "worker_draining"  # type: ignore[attr-defined]
    m2.handle(Received(body=Undrain(), now=T0))
    assert isinstance(sent(m2.handle(Received(body=assign("r1"), now=T0)))[0], Accept)
    m3 = LauncherMachine(config())
    m3.handle(AuditHealth(healthy=False, failure="disk full"))
    assert sent(m3.handle(Received(body=assign("r1"), now=T0)))[0].reason == "audit_unavailable"  # type: ignore[attr-defined]


def test_start_needs_the_same_lease_and_lease_expires() -> None:
    m = LauncherMachine(config())
    m.handle(Received(body=assign("r1", "l1"), now=T0))
    assert not any(
        isinstance(a, LaunchRun) for a in m.handle(StartRun(run_id="r1", lease_id="lX", now=T0))
    )
    assert not any(
        isinstance(a, LaunchRun) for a in m.handle(StartRun(run_id="zz", lease_id="l1", now=T0))
    )
    m.handle(Tick(now=T0 + timedelta(seconds=39)))
    assert "r1" in m.pending
    m.handle(Tick(now=T0 + timedelta(seconds=40)))  # lease_expires_at + 10 s
    assert not m.pending
    assert not any(
        isinstance(a, LaunchRun) for a in m.handle(StartRun(run_id="r1", lease_id="l1", now=T0))
    )


def test_cancel_before_and_after_start() -> None:
    m = LauncherMachine(config(max_concurrent_runs=2))
    m.handle(Received(body=assign("r1"), now=T0))
    m.handle(Received(body=Cancel(run_id="r1"), now=T0))
    assert not m.pending
    m.handle(Received(body=assign("r2"), now=T0))
    m.handle(StartRun(run_id="r2", lease_id="l1", now=T0))
    assert CancelRun(run_id="r2", reason="cancel") in m.handle(
        Received(body=Cancel(run_id="r2"), now=T0)
    )
    assert m.handle(Received(body=Cancel(run_id="r2"), now=T0)) == ()  # idempotent


def test_log_urls_are_forwarded_and_requested() -> None:
    m = LauncherMachine(config())
    m.handle(Received(body=assign("r1"), now=T0))
    m.handle(StartRun(run_id="r1", lease_id="l1", now=T0))
    urls = (LogUrl(chunk=3, url="https://s3.example/x"),)
    assert ForwardLogUrls(run_id="r1", urls=urls) in m.handle(
        Received(body=LogUrls(run_id="r1", urls=urls), now=T0)
    )
    assert sent(m.handle(LogUrlsWanted(run_id="r1", from_chunk=3))) == [
        LogUrlsRequest(run_id="r1", from_chunk=3)
    ]


def test_sigterm_drains_finishes_then_exits_zero() -> None:
    m = LauncherMachine(config(max_concurrent_runs=2, shutdown_grace=timedelta(seconds=60)))
    m.handle(Received(body=assign("r1"), now=T0))
    m.handle(StartRun(run_id="r1", lease_id="l1", now=T0))
    m.handle(Received(body=assign("r2"), now=T0))  # accepted, not started
    actions = m.handle(Terminate(now=T0))
    assert Refuse(
        run_id="r2", lease_id="l1", reason="worker_draining", message="the worker is shutting down"
    ) in sent(actions)
    assert str(m.worker_state) == "DRAINED"
    assert not any(isinstance(a, Exit) for a in actions)
    assert (
        m.handle(Tick(now=T0 + timedelta(seconds=59))).count(
            CancelRun(run_id="r1", reason="shutdown_grace_ended")
        )
        == 0
    )
    assert CancelRun(run_id="r1", reason="shutdown_grace_ended") in m.handle(
        Tick(now=T0 + timedelta(seconds=60))
    )
    end = m.handle(
        RunEnded(run_id="r1", status=Status(run_id="r1", state="STOPPED", reason="run_cancelled"))
    )
    assert Exit(code=0, reason="terminated") in end
    assert m.handle(Tick(now=T0 + timedelta(hours=1))) == ()


def test_second_sigterm_stops_runs() -> None:
    m = LauncherMachine(config())
    m.handle(Received(body=assign("r1"), now=T0))
    m.handle(StartRun(run_id="r1", lease_id="l1", now=T0))
    m.handle(Terminate(now=T0))
    assert CancelRun(run_id="r1", reason="second_signal") in m.handle(Terminate(now=T0))


def test_idle_sigterm_and_cycle_exit_at_once() -> None:
    assert Exit(code=0, reason="terminated") in LauncherMachine(config()).handle(Terminate(now=T0))
    assert Exit(code=0, reason="cycled") in LauncherMachine(config()).handle(
        Received(body=Cycle(), now=T0)
    )


def test_heartbeat_every_interval() -> None:
    m = LauncherMachine(config(heartbeat_interval=timedelta(seconds=10)))
    m.handle(Connected(now=T0))
    assert sent(m.handle(Tick(now=T0 + timedelta(seconds=9)))) == []
    assert sent(m.handle(Tick(now=T0 + timedelta(seconds=10)))) == [Heartbeat(state="IDLE")]


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
RUN_IDS = st.sampled_from([f"r{i}" for i in range(6)])
LEASES = st.sampled_from(["l1", "l2"])


class LauncherModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = LauncherMachine(
            config(max_concurrent_runs=2, shutdown_grace=timedelta(seconds=30))
        )
        self.now = T0
        self.accepted: set[tuple[str, str]] = set()
        self.launched: list[str] = []
        self.final: dict[str, int] = {}
        self.exited = False

    def _do(self, event: object) -> tuple[Action, ...]:
        was_exited = self.exited
        actions = self.m.handle(event)  # type: ignore[arg-type]
        if was_exited:
            assert actions == ()
        for a in actions:
            if isinstance(a, Send) and isinstance(a.body, Accept):
                self.accepted.add((a.body.run_id, a.body.lease_id))
            if isinstance(a, LaunchRun):
                key = (a.assign.run_id, a.assign.lease_id)
                assert key in self.accepted, "launched without accept"
                assert a.assign.run_id not in self.launched, "launched twice"
                self.launched.append(a.assign.run_id)
            if isinstance(a, Send) and isinstance(a.body, Status) and a.body.state != "RUNNING":
                assert a.body.run_id in self.launched or a.body.reason == "audit_unavailable"
                self.final[a.body.run_id] = self.final.get(a.body.run_id, 0) + 1
            if isinstance(a, Exit):
                assert not self.m.running
                self.exited = True
        return actions

    @rule(run_id=RUN_IDS, lease=LEASES, ttl=st.integers(0, 60))
    def assign(self, run_id: str, lease: str, ttl: int) -> None:
        self._do(
            Received(
                body=assign(run_id, lease, expires=self.now + timedelta(seconds=ttl)), now=self.now
            )
        )

    @rule(run_id=RUN_IDS, lease=LEASES)
    def start(self, run_id: str, lease: str) -> None:
        self._do(StartRun(run_id=run_id, lease_id=lease, now=self.now))

    @precondition(lambda self: bool(self.m.pending))
    @rule(data=st.data())
    def start_pending(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.m.pending)))
        lease = self.m.pending[run_id].assign.lease_id
        self._do(StartRun(run_id=run_id, lease_id=lease, now=self.now))

    @rule(run_id=RUN_IDS)
    def cancel(self, run_id: str) -> None:
        self._do(Received(body=Cancel(run_id=run_id), now=self.now))

    @precondition(lambda self: bool(self.m.running))
    @rule(data=st.data(), state=st.sampled_from(["FINISHED", "FAILED", "STOPPED"]))
    def end(self, data: st.DataObject, state: str) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.m.running)))
        self._do(RunStarted(run_id=run_id))
        self._do(RunEnded(run_id=run_id, status=Status(run_id=run_id, state=state)))  # type: ignore[arg-type]

    @rule(body=st.sampled_from([Drain(), Undrain(), Undrain(), Cycle()]), roll=st.integers(0, 3))
    def control(self, body: object, roll: int) -> None:
        if isinstance(body, Cycle) and roll:
            return
        self._do(Received(body=body, now=self.now))  # type: ignore[arg-type]

    @rule(seconds=st.sampled_from([0, 1, 5, 45]))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self._do(Tick(now=self.now))

    @rule(roll=st.integers(0, 7))
    def terminate(self, roll: int) -> None:
        if roll == 0:  # rarely: it ends the example's useful life
            self._do(Terminate(now=self.now))

    @rule(healthy=st.sampled_from([True, True, True, False]))
    def audit(self, healthy: bool) -> None:
        self._do(AuditHealth(healthy=healthy, failure=None if healthy else "broken"))

    @rule()
    def reconnect(self) -> None:
        actions = self._do(Connected(now=self.now))
        if not self.exited:
            assert isinstance(sent(actions)[0], Register)

    @invariant()
    def capacity_and_disjoint(self) -> None:
        assert self.m.slots_used <= self.m.config.max_concurrent_runs
        assert not set(self.m.pending) & set(self.m.running)

    @invariant()
    def one_final_status_per_run(self) -> None:
        assert all(n == 1 for n in self.final.values())
        assert set(self.m.running) <= set(self.launched)

    @invariant()
    def not_accepting_when_stopping(self) -> None:
        if self.m.terminating or self.m.cycling:
            assert not self.m.pending
            assert self.m.worker_state == "DRAINED"


def test_an_ended_run_is_never_run_again() -> None:
    m = LauncherMachine(config())
    m.handle(Received(body=assign("r1"), now=T0))
    m.handle(StartRun(run_id="r1", lease_id="l1", now=T0))
    m.handle(RunEnded(run_id="r1", status=Status(run_id="r1", state="FAILED")))
    refused = sent(m.handle(Received(body=assign("r1", "l2"), now=T0)))
    assert refused[0].reason == "run_already_done"  # type: ignore[attr-defined]


TestLauncherModel = LauncherModel.TestCase
TestLauncherModel.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


def test_accepted_but_unstarted_runs_are_not_in_the_running_list() -> None:
    m = LauncherMachine(config(max_concurrent_runs=2))
    m.handle(Received(body=assign("r1"), now=T0))
    m.handle(Received(body=assign("r2"), now=T0))
    m.handle(StartRun(run_id="r2", lease_id="l1", now=T0))
    beats = [
        b for b in sent(m.handle(Tick(now=T0 + timedelta(minutes=1)))) if isinstance(b, Heartbeat)
    ]
    assert beats
    assert beats[-1].running == ("r2",)
    assert m.heartbeat().running == ("r2",)


def test_a_lease_without_start_is_dropped_and_the_slot_announced() -> None:
    m = LauncherMachine(config(max_concurrent_runs=1))
    m.handle(Connected(now=T0))
    m.handle(Received(body=assign("r1"), now=T0))
    assert m.worker_state == "BUSY"
    actions = m.handle(Tick(now=T0 + timedelta(seconds=40)))  # lease_expires_at + start_wait
    assert any(isinstance(a, Note) and a.event == "run.lease_dropped" for a in actions)
    assert Heartbeat(state="IDLE", running=()) in sent(actions)
    assert not any(isinstance(a, LaunchRun) for a in actions)
    later = m.handle(StartRun(run_id="r1", lease_id="l1", now=T0 + timedelta(seconds=41)))
    assert not any(isinstance(a, LaunchRun) for a in later)


def test_resumed_runs_get_log_urls_routed() -> None:
    m = LauncherMachine(config())
    url = LogUrl(chunk=3, url="https://s3.example/3")
    # Unknown run: nothing is asked for or forwarded.
    assert m.handle(LogUrlsWanted(run_id="old", from_chunk=3)) == ()
    assert not any(
        isinstance(a, ForwardLogUrls)
        for a in m.handle(Received(body=LogUrls(run_id="old", urls=(url,)), now=T0))
    )
    m.handle(ShippingLogs(run_ids=("old",)))
    assert sent(m.handle(LogUrlsWanted(run_id="old", from_chunk=3))) == [
        LogUrlsRequest(run_id="old", from_chunk=3)
    ]
    assert ForwardLogUrls(run_id="old", urls=(url,)) in m.handle(
        Received(body=LogUrls(run_id="old", urls=(url,)), now=T0)
    )
    assert m.heartbeat().running == ()
    assert m.slots_used == 0


def test_registered_flag_follows_connected() -> None:
    m = LauncherMachine(config())
    assert not m.registered
    m.handle(Connected(now=T0))
    assert m.registered


def test_phases_are_reported_only_for_a_running_run() -> None:
    from hardened_launcher.launcher.machine import RunPhase  # noqa: PLC0415
    from hardened_launcher.transport.messages import PhaseStarted  # noqa: PLC0415

    m = LauncherMachine(config())
    assert sent(m.handle(RunPhase(run_id="r1", phase="planning", at=T0))) == []  # not ours
    m.handle(Received(body=assign("r1"), now=T0))
    assert sent(m.handle(RunPhase(run_id="r1", phase="planning", at=T0))) == []  # not started
    m.handle(StartRun(run_id="r1", lease_id="l1", now=T0))
    assert sent(m.handle(RunPhase(run_id="r1", phase="planning", at=T0))) == [
        PhaseStarted(run_id="r1", phase="planning", started_at=T0)
    ]
    final = Status(run_id="r1", state="FINISHED", exit_code=0, reason="run_succeeded")
    m.handle(RunEnded(run_id="r1", status=final))
    assert sent(m.handle(RunPhase(run_id="r1", phase="applying", at=T0))) == []  # ended


def test_log_urls_for_a_pending_run_keep_its_ticket_and_plan_url() -> None:
    m = LauncherMachine(config())
    a = dataclasses.replace(
        assign("r1"),
        ticket_b64=base64.b64encode(b"ticket").decode(),
        plan_url="https://s3.example/plan",
    )
    m.handle(Received(body=a, now=T0))
    urls = (LogUrl(chunk=5, url="https://s3.example/5"),)
    m.handle(Received(body=LogUrls(run_id="r1", urls=urls), now=T0))
    kept = m.pending["r1"].assign
    assert (kept.ticket, kept.plan_url, kept.log_urls) == (b"ticket", a.plan_url, urls)
