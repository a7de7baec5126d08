"""The launcher daemon's decisions as a pure state machine: events in, actions out.

No I/O, no threads, no clock: :class:`LauncherMachine.handle` takes one :data:`Event` (a message
from the control plane, a tick with the time, a run's progress, a signal) and returns the
:data:`Action` tuple the I/O loop (:mod:`.daemon`) carries out, in order. Everything the daemon
decides — accept or refuse an assignment, when a lease is dropped, when to heartbeat, when to
stop runs and when to exit — is here, so it is tested without a broker, Docker or threads.

Run lifecycle (one run id)::

    assign ─▶ refuse (a local fault | worker_draining | worker_busy | run_already_done)
           └▶ accept ─▶ PENDING ──start (same lease)──▶ RUNNING ─▶ final status ─▶ gone
                          │  cancel / lease window + start_wait / shutdown ─▶ dropped
                          └ (shutdown releases it with refuse worker_draining: re-queued)

An accepted (pending) run holds a slot: pending + running never exceed ``max_concurrent_runs``.

Local faults (:data:`LOCAL_FAULTS`: the audit log, the state directory, the disk, Docker, the
clock) make the launcher unavailable: its heartbeat says ``DRAINED`` (so the control plane leases
it nothing) and an ``assign`` that still arrives is refused with the fault as the reason, which
the control plane re-queues for another worker. When the fault clears the heartbeat says IDLE or
BUSY again at once.

Leases run on the monotonic clock: the wall clock is read once, at receipt, only to learn the
lease's length (bounded to ``[lease_window_floor, lease_window_ceiling]``: a clock stepped or
skewed either way cannot make the window vanish or grow without bound); the deadline is
``receipt + window + start_wait`` in monotonic seconds, so a wall-clock step after receipt changes
nothing. The control plane stays the authority (it answers a late ``accept`` with ``cancel``);
the launcher's deadline only frees the slot if neither ``start`` nor ``cancel`` ever comes. Events
without ``mono`` use the wall clock's timestamp (tests that do not step the clock).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final

from hardened_launcher.transport.messages import (
    Accept,
    Assign,
    Body,
    Cancel,
    Cycle,
    Drain,
    Heartbeat,
    LogUrl,
    LogUrls,
    LogUrlsRequest,
    PhaseStarted,
    Refuse,
    Register,
    Status,
    Undrain,
    WorkerState,
)

__all__ = [
    "CLOCK_RECHECK",
    "DEFAULT_START_WAIT",
    "LOCAL_FAULTS",
    "Action",
    "AuditHealth",
    "CancelRun",
    "Connected",
    "Event",
    "Exit",
    "ForwardLogUrls",
    "LaunchRun",
    "LauncherMachine",
    "LocalHealth",
    "LogUrlsWanted",
    "MachineConfig",
    "Note",
    "Received",
    "RunEnded",
    "RunPhase",
    "RunStarted",
    "Send",
    "ShippingLogs",
    "StartRun",
    "Terminate",
    "Tick",
]

#: How long after ``lease_expires_at`` an accepted run waits for ``start`` before it is dropped.
DEFAULT_START_WAIT: Final = timedelta(seconds=10)

#: The shortest and longest lease window read from ``lease_expires_at`` at receipt.
DEFAULT_LEASE_WINDOW_FLOOR: Final = timedelta(seconds=30)
DEFAULT_LEASE_WINDOW_CEILING: Final = timedelta(minutes=10)

#: How long a clock found skewed (by a control-plane message's ``sent_at``) keeps the launcher
#: unavailable before it offers itself again (a drained worker gets no message to re-check on).
CLOCK_RECHECK: Final = timedelta(seconds=60)

#: Local faults, in the order a refusal names them (all re-queued by the control plane).
LOCAL_FAULTS: Final = (
    "audit_unavailable",
    "disk_full",
    "state_unwritable",
    "docker_unavailable",
    "clock_skewed",
)

#: How many ended run ids are remembered (an ``assign`` of one of them is refused).
MAX_REMEMBERED_ENDED: Final = 4096

#: How many resumed (spooled) runs' log shipping is routed at most.
MAX_SHIPPING_RUNS: Final = 4096

#: Final run states (``Status.state``) a run can end with.
FINAL_STATES: Final = frozenset({"FINISHED", "FAILED", "STOPPED", "CRASHED", "REFUSED"})


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Connected:
    """The transport (re)connected: announce ourselves (``register``) and our state."""

    now: datetime
    mono: float | None = None


@dataclass(frozen=True, kw_only=True)
class Tick:
    """Time passed (the loop sends one at least every second)."""

    now: datetime
    #: The monotonic clock in seconds (``None``: ``now.timestamp()``).
    mono: float | None = None


@dataclass(frozen=True, kw_only=True)
class Received:
    """A control-plane message (``assign``, ``cancel``, ``drain``, ``undrain``, ``cycle``,
    ``log_urls``). ``start`` arrives as :class:`StartRun`."""

    body: Body
    now: datetime
    mono: float | None = None
    #: The message's ``sent_at`` (the control plane's clock), to judge ours.
    sent_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class StartRun:
    """The control plane's ``start {run_id, lease_id}``: run the accepted assignment."""

    run_id: str
    lease_id: str
    now: datetime
    mono: float | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class RunStarted:
    """The run's container started (all gates passed)."""

    run_id: str


@dataclass(frozen=True, kw_only=True)
class RunPhase:
    """The run's worker started phase ``phase`` (its ``::hl:: phase … start`` marker)."""

    run_id: str
    phase: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class RunEnded:
    """The run's worker thread finished; ``status`` is its final ``status`` message."""

    run_id: str
    status: Status


@dataclass(frozen=True, kw_only=True)
class LogUrlsWanted:
    """The run's log sink needs presigned URLs from ``from_chunk`` on."""

    run_id: str
    from_chunk: int


@dataclass(frozen=True, kw_only=True)
class ShippingLogs:
    """Earlier runs whose spooled log chunks are still being shipped (``resume_spooled`` at
    start-up): each ``log_urls_request`` is sent and their ``log_urls`` forwarded, although
    they are not running."""

    run_ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class AuditHealth:
    """The audit log's health changed (unhealthy: refuse every new run)."""

    healthy: bool
    failure: str | None = None


@dataclass(frozen=True, kw_only=True)
class LocalHealth:
    """The probes' current local faults (slugs of :data:`LOCAL_FAULTS`, except the audit log's,
    which :class:`AuditHealth` reports); empty: all well."""

    faults: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class Terminate:
    """SIGTERM (or SIGINT): the first drains; the second stops the running runs."""

    now: datetime


Event = (
    Connected
    | Tick
    | Received
    | StartRun
    | RunStarted
    | RunPhase
    | RunEnded
    | LogUrlsWanted
    | ShippingLogs
    | AuditHealth
    | LocalHealth
    | Terminate
)


# ---------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Send:
    """Send ``body`` to the control plane."""

    body: Body


@dataclass(frozen=True, kw_only=True)
class LaunchRun:
    """Run the gates and the pipeline for ``assign`` in a worker thread."""

    assign: Assign


@dataclass(frozen=True, kw_only=True)
class CancelRun:
    """Set the run's cancel event (the executor's stop path)."""

    run_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ForwardLogUrls:
    """Give more presigned URLs to the run's log sink."""

    run_id: str
    urls: tuple[LogUrl, ...]


@dataclass(frozen=True, kw_only=True)
class Note:
    """A decision worth one structured log line (no I/O of its own)."""

    event: str
    fields: Mapping[str, str | int | None] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, kw_only=True)
class Exit:
    """Leave the loop and exit the process with ``code`` (after ``bye``)."""

    code: int
    reason: str


Action = Send | LaunchRun | CancelRun | ForwardLogUrls | Note | Exit


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class MachineConfig:
    worker_id: str
    pool_id: str
    version: str
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_concurrent_runs: int = 1
    heartbeat_interval: timedelta = timedelta(seconds=10)
    shutdown_grace: timedelta = timedelta(minutes=15)
    start_wait: timedelta = DEFAULT_START_WAIT
    lease_window_floor: timedelta = DEFAULT_LEASE_WINDOW_FLOOR
    lease_window_ceiling: timedelta = DEFAULT_LEASE_WINDOW_CEILING
    #: ``HL_CLOCK_SKEW``: a control-plane message whose ``sent_at`` differs more is a fault.
    clock_skew: timedelta = timedelta(minutes=5)
    clock_recheck: timedelta = CLOCK_RECHECK

    def __post_init__(self) -> None:
        if self.max_concurrent_runs < 1:
            raise ValueError("max_concurrent_runs must be at least 1")
        if self.heartbeat_interval <= timedelta(0):
            raise ValueError("heartbeat_interval must be positive")
        if self.shutdown_grace < timedelta(0) or self.start_wait < timedelta(0):
            raise ValueError("durations must not be negative")
        if not timedelta(0) < self.lease_window_floor <= self.lease_window_ceiling:
            raise ValueError("the lease window floor must be positive and at most the ceiling")


@dataclass(kw_only=True)
class Pending:
    """An accepted assignment waiting for ``start``."""

    assign: Assign
    #: Monotonic seconds: receipt + lease window + start_wait.
    deadline: float


@dataclass(kw_only=True)
class Running:
    lease_id: str
    container_started: bool = False
    cancel_requested: bool = False


class LauncherMachine:
    """The daemon's state. Only :meth:`handle` changes it."""

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.pending: dict[str, Pending] = {}
        self.running: dict[str, Running] = {}
        #: Drained by the control plane (``drain``; ``undrain`` lifts it).
        self.drained = False
        #: ``cycle`` received: exit 0 once the current runs are done.
        self.cycling = False
        #: SIGTERM received: like cycling, with a grace period.
        self.terminating = False
        self.shutdown_deadline: datetime | None = None
        #: Runs are being stopped (second SIGTERM or the grace period ended).
        self.stopping = False
        self.audit_healthy = True
        self.audit_failure: str | None = None
        #: Faults the probes report (:class:`LocalHealth`).
        self.probe_faults: frozenset[str] = frozenset()
        #: The clock was found skewed; the fault holds until this monotonic time.
        self.clock_suspect_until: float | None = None
        self.clock_offset_seconds: float | None = None
        #: ``register`` was sent on the current connection (readiness).
        self.registered = False
        #: Earlier runs whose spooled logs are still shipped (see :class:`ShippingLogs`).
        self.shipping: set[str] = set()
        self.last_heartbeat: datetime | None = None
        self.exited: Exit | None = None
        #: Recently ended run ids (bounded): a run is never run twice by this worker.
        self.ended: dict[str, None] = {}

    # -- queries ---------------------------------------------------------------------------
    @property
    def accepting(self) -> bool:
        return not (self.drained or self.cycling or self.terminating or self.exited)

    @property
    def faults(self) -> tuple[str, ...]:
        """The local faults now, in :data:`LOCAL_FAULTS` order (empty: able to run)."""
        now = set(self.probe_faults)
        if not self.audit_healthy:
            now.add("audit_unavailable")
        if self.clock_suspect_until is not None:
            now.add("clock_skewed")
        known = [f for f in LOCAL_FAULTS if f in now]
        return (*known, *sorted(now - set(LOCAL_FAULTS)))

    @property
    def available(self) -> bool:
        """Accepting work and free of local faults: what the heartbeat advertises."""
        return self.accepting and not self.faults

    @property
    def slots_used(self) -> int:
        return len(self.pending) + len(self.running)

    @property
    def worker_state(self) -> WorkerState:
        if not self.available:
            return "DRAINED"
        return "BUSY" if self.slots_used >= self.config.max_concurrent_runs else "IDLE"

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(state=self.worker_state, running=tuple(sorted(self.running)))

    def register(self) -> Register:
        c = self.config
        return Register(
            worker_id=c.worker_id,
            pool_id=c.pool_id,
            version=c.version,
            metadata=c.metadata,
            max_concurrent_runs=c.max_concurrent_runs,
        )

    # -- the transition function -----------------------------------------------------------
    def handle(self, event: Event) -> tuple[Action, ...]:
        if self.exited is not None:
            return ()
        out: list[Action] = []
        match event:
            case Connected(now=now):
                self.registered = True
                out.append(Send(body=self.register()))
                self._heartbeat(now, out)
            case Tick(now=now, mono=mono):
                self._tick(now, _mono(now, mono), out)
            case Received(body=body, now=now, mono=mono, sent_at=sent_at):
                self._judge_clock(now, _mono(now, mono), sent_at, out)
                self._received(body, now, _mono(now, mono), out)
            case StartRun(run_id=run_id, lease_id=lease_id, now=now, mono=mono, sent_at=sent_at):
                self._judge_clock(now, _mono(now, mono), sent_at, out)
                self._start(run_id, lease_id, now, _mono(now, mono), out)
            case RunStarted(run_id=run_id):
                run = self.running.get(run_id)
                if run is not None and not run.container_started:
                    run.container_started = True
                    out.append(Send(body=Status(run_id=run_id, state="RUNNING")))
            case RunPhase(run_id=run_id, phase=phase, at=at):
                # Only for a run this worker runs now; the control plane judges the order.
                if run_id in self.running:
                    out.append(Send(body=PhaseStarted(run_id=run_id, phase=phase, started_at=at)))
            case RunEnded(run_id=run_id, status=status):
                self._ended(run_id, status, out)
            case LogUrlsWanted(run_id=run_id, from_chunk=from_chunk):
                if run_id in self.running or run_id in self.shipping:
                    out.append(Send(body=LogUrlsRequest(run_id=run_id, from_chunk=from_chunk)))
            case ShippingLogs(run_ids=ids):
                for run_id in ids:
                    if len(self.shipping) < MAX_SHIPPING_RUNS:
                        self.shipping.add(run_id)
            case LocalHealth(faults=faults):
                if faults != self.probe_faults:
                    before = self.worker_state
                    self.probe_faults = faults
                    out.append(
                        Note(
                            event="launcher.local_faults",
                            fields={"faults": ",".join(sorted(faults)) or "none"},
                        )
                    )
                    if self.worker_state != before and self.last_heartbeat is not None:
                        self._heartbeat(self.last_heartbeat, out)
            case AuditHealth(healthy=healthy, failure=failure):
                if healthy != self.audit_healthy:
                    before = self.worker_state
                    self.audit_healthy = healthy
                    self.audit_failure = None if healthy else failure
                    out.append(
                        Note(
                            event="launcher.audit_healthy"
                            if healthy
                            else "launcher.audit_unavailable",
                            fields={"failure": failure},
                        )
                    )
                    if self.worker_state != before and self.last_heartbeat is not None:
                        self._heartbeat(self.last_heartbeat, out)
            case Terminate(now=now):
                self._terminate(now, out)
        self._maybe_exit(out)
        return tuple(out)

    # -- pieces ----------------------------------------------------------------------------
    def _heartbeat(self, now: datetime, out: list[Action]) -> None:
        self.last_heartbeat = now
        out.append(Send(body=self.heartbeat()))

    def _judge_clock(
        self, now: datetime, mono: float, sent_at: datetime | None, out: list[Action]
    ) -> None:
        """Compare our wall clock with the control plane's ``sent_at`` (transit included)."""
        if sent_at is None:
            return
        offset = now - sent_at
        self.clock_offset_seconds = offset.total_seconds()
        before = self.worker_state
        if abs(offset) > self.config.clock_skew:
            if self.clock_suspect_until is None:
                out.append(
                    Note(
                        event="launcher.clock_skewed",
                        fields={"offset_seconds": int(offset.total_seconds())},
                    )
                )
            self.clock_suspect_until = mono + self.config.clock_recheck.total_seconds()
        elif self.clock_suspect_until is not None:
            self.clock_suspect_until = None
            out.append(Note(event="launcher.clock_sane"))
        if self.worker_state != before:
            self._heartbeat(now, out)

    def _lease_deadline(self, assign: Assign, now: datetime, mono: float) -> float:
        c = self.config
        window = min(
            max(assign.lease_expires_at - now, c.lease_window_floor), c.lease_window_ceiling
        )
        return mono + (window + c.start_wait).total_seconds()

    def _tick(self, now: datetime, mono: float, out: list[Action]) -> None:
        if self.clock_suspect_until is not None and mono >= self.clock_suspect_until:
            self.clock_suspect_until = None  # offer ourselves again; the next message re-judges
            out.append(Note(event="launcher.clock_recheck"))
            self._heartbeat(now, out)
        dropped = False
        for run_id, pending in list(self.pending.items()):
            if mono >= pending.deadline:
                del self.pending[run_id]
                dropped = True
                out.append(
                    Note(
                        event="run.lease_dropped",
                        fields={"run_id": run_id, "lease_id": pending.assign.lease_id},
                    )
                )
        if dropped:  # the slot is free again: say so now, not at the next interval
            self._heartbeat(now, out)
        if (
            self.terminating
            and not self.stopping
            and self.shutdown_deadline is not None
            and now >= self.shutdown_deadline
        ):
            self._stop_all("shutdown_grace_ended", out)
        if (
            self.last_heartbeat is None
            or now - self.last_heartbeat >= self.config.heartbeat_interval
            or now < self.last_heartbeat  # the clock went back: do not go quiet
        ):
            self._heartbeat(now, out)

    def _refuse(self, assign: Assign, reason: str, message: str, out: list[Action]) -> None:
        out.append(
            Send(
                body=Refuse(
                    run_id=assign.run_id, lease_id=assign.lease_id, reason=reason, message=message
                )
            )
        )
        out.append(Note(event="run.refused", fields={"run_id": assign.run_id, "reason": reason}))

    def _received(self, body: Body, now: datetime, mono: float, out: list[Action]) -> None:
        match body:
            case Assign():
                self._assign(body, now, mono, out)
            case Cancel(run_id=run_id):
                if run_id in self.pending:
                    del self.pending[run_id]
                    out.append(Note(event="run.cancelled_before_start", fields={"run_id": run_id}))
                    self._heartbeat(now, out)
                elif (run := self.running.get(run_id)) is not None:
                    if not run.cancel_requested:
                        run.cancel_requested = True
                        out.append(CancelRun(run_id=run_id, reason="cancel"))
                else:
                    out.append(Note(event="run.cancel_unknown", fields={"run_id": run_id}))
            case Drain():
                if not self.drained:
                    self.drained = True
                    out.append(Note(event="launcher.drained"))
                    self._heartbeat(now, out)
            case Undrain():
                if self.drained:
                    self.drained = False
                    out.append(Note(event="launcher.undrained"))
                    self._heartbeat(now, out)
            case Cycle():
                if not self.cycling:
                    self.cycling = True
                    out.append(Note(event="launcher.cycling", fields={"runs": len(self.running)}))
                    self._release_pending(out)
                    self._heartbeat(now, out)
            case LogUrls(run_id=run_id, urls=urls):
                if run_id in self.running or run_id in self.shipping:
                    out.append(ForwardLogUrls(run_id=run_id, urls=urls))
                elif run_id in self.pending:
                    # Keep them with the assignment: the sink is made at start.
                    p = self.pending[run_id]
                    merged = {u.chunk: u for u in (*p.assign.log_urls, *urls)}
                    # Everything else of the assignment (ticket, plan URL) is kept as it came.
                    p.assign = dataclasses.replace(
                        p.assign, log_urls=tuple(merged[k] for k in sorted(merged))
                    )
            case _:
                out.append(Note(event="message.ignored", fields={"type": type(body).TYPE}))

    def _assign(self, assign: Assign, now: datetime, mono: float, out: list[Action]) -> None:
        run_id = assign.run_id
        held = self.pending.get(run_id)
        if held is not None and held.assign.lease_id == assign.lease_id:
            out.append(Send(body=Accept(run_id=run_id, lease_id=assign.lease_id)))  # idempotent
            return
        if run_id in self.ended:
            self._refuse(assign, "run_already_done", "this worker already ran the run", out)
            return
        if run_id in self.running or held is not None:
            # Already ours under another lease: never run one run twice.
            self._refuse(assign, "worker_busy", "this worker already holds the run", out)
            return
        if self.faults:
            fault = self.faults[0]
            self._refuse(assign, fault, FAULT_MESSAGES.get(fault, "the launcher cannot run"), out)
        elif not self.accepting:
            self._refuse(assign, "worker_draining", "the worker is draining", out)
        elif self.slots_used >= self.config.max_concurrent_runs:
            self._refuse(assign, "worker_busy", "the worker is at its concurrency limit", out)
        else:
            self.pending[run_id] = Pending(
                assign=assign, deadline=self._lease_deadline(assign, now, mono)
            )
            out.append(Send(body=Accept(run_id=run_id, lease_id=assign.lease_id)))
            out.append(
                Note(event="run.accepted", fields={"run_id": run_id, "lease_id": assign.lease_id})
            )
            if self.slots_used >= self.config.max_concurrent_runs:
                self._heartbeat(now, out)

    def _start(
        self, run_id: str, lease_id: str, now: datetime, mono: float, out: list[Action]
    ) -> None:
        pending = self.pending.get(run_id)
        if pending is None or pending.assign.lease_id != lease_id:
            out.append(
                Note(
                    event="run.start_ignored",
                    fields={
                        "run_id": run_id,
                        "lease_id": lease_id,
                        "why": "running" if run_id in self.running else "not accepted",
                    },
                )
            )
            return
        if mono >= pending.deadline:
            del self.pending[run_id]
            out.append(Note(event="run.lease_dropped", fields={"run_id": run_id}))
            return
        del self.pending[run_id]
        if self.faults:
            # A fault that came between accept and start: nothing ran, so REFUSED (not FAILED).
            fault = self.faults[0]
            self._remember_ended(run_id)  # its final status is sent now: never run it later
            out.append(
                Send(
                    body=Status(
                        run_id=run_id,
                        state="REFUSED",
                        reason=fault,
                        message=FAULT_MESSAGES.get(fault, "the launcher cannot run"),
                    )
                )
            )
            if self.last_heartbeat is not None:
                self._heartbeat(now, out)
            return
        self.running[run_id] = Running(lease_id=lease_id)
        out.append(LaunchRun(assign=pending.assign))
        out.append(Note(event="run.launched", fields={"run_id": run_id}))

    def _ended(self, run_id: str, status: Status, out: list[Action]) -> None:
        if self.running.pop(run_id, None) is None:
            return
        self._remember_ended(run_id)
        if status.run_id != run_id or status.state not in FINAL_STATES:
            status = Status(
                run_id=run_id, state="FAILED", reason="internal_error", message="bad final status"
            )
        out.append(Send(body=status))
        out.append(
            Note(
                event="run.ended",
                fields={
                    "run_id": run_id,
                    "state": status.state,
                    "reason": status.reason,
                    "exit_code": status.exit_code,
                },
            )
        )

    def _remember_ended(self, run_id: str) -> None:
        self.ended[run_id] = None
        while len(self.ended) > MAX_REMEMBERED_ENDED:
            del self.ended[next(iter(self.ended))]

    def _release_pending(self, out: list[Action]) -> None:
        """Give accepted, unstarted runs back (the control plane re-queues worker_draining)."""
        for run_id, pending in list(self.pending.items()):
            del self.pending[run_id]
            self._refuse(pending.assign, "worker_draining", "the worker is shutting down", out)

    def _stop_all(self, reason: str, out: list[Action]) -> None:
        self.stopping = True
        out.append(Note(event="launcher.stopping_runs", fields={"reason": reason}))
        for run_id, run in sorted(self.running.items()):
            if not run.cancel_requested:
                run.cancel_requested = True
                out.append(CancelRun(run_id=run_id, reason=reason))

    def _terminate(self, now: datetime, out: list[Action]) -> None:
        if not self.terminating:
            self.terminating = True
            self.shutdown_deadline = now + self.config.shutdown_grace
            out.append(
                Note(
                    event="launcher.terminating",
                    fields={"runs": len(self.running), "grace_seconds": self._grace_seconds()},
                )
            )
            self._release_pending(out)
            self._heartbeat(now, out)
            if self.config.shutdown_grace <= timedelta(0):
                self._stop_all("shutdown_grace_ended", out)
        elif not self.stopping:
            self._stop_all("second_signal", out)

    def _grace_seconds(self) -> int:
        return int(self.config.shutdown_grace.total_seconds())

    def _maybe_exit(self, out: list[Action]) -> None:
        if (self.cycling or self.terminating) and not self.running and self.exited is None:
            self._release_pending(out)
            self.exited = Exit(code=0, reason="cycled" if self.cycling else "terminated")
            out.append(self.exited)


FAULT_MESSAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "audit_unavailable": "the launcher's audit log cannot be written",
        "disk_full": "the launcher's state directory is out of space",
        "state_unwritable": "the launcher's state directory cannot be written",
        "docker_unavailable": "the launcher cannot reach Docker",
        "clock_skewed": "the launcher's clock differs from the control plane's beyond "
        "HL_CLOCK_SKEW",
    }
)


def _mono(now: datetime, mono: float | None) -> float:
    return now.timestamp() if mono is None else mono


def run_ids(actions: Sequence[Action]) -> tuple[str, ...]:
    """The run ids of the :class:`LaunchRun` actions in ``actions`` (a test helper)."""
    return tuple(a.assign.run_id for a in actions if isinstance(a, LaunchRun))
