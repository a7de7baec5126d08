"""The dispatch state machine of the reference control plane: pure, no I/O, time passed in.

Every function takes the current record (and ``now``, Unix seconds) and returns a
:class:`Transition` (the record before and after, plus the messages workers must be sent) or a
:class:`Rejection` (why nothing changes). The store applies a transition only if the run is
still exactly in its ``before`` state (a compare-and-swap on state, worker and lease), so two
workers can never both hold a run, whatever the interleaving of messages and ticks.

Run states::

    QUEUED --plan_assignments--> ASSIGNED --accept--> RUNNING --status--> FINISHED|FAILED|
       ^                            |                    |                STOPPED|CRASHED
       +---- lease expired / -------+                    +--worker lost--> CRASHED
             worker lost / busy refusal                  (never re-queued: runs are not
                                                          idempotent)
    QUEUED|ASSIGNED --cancel--> CANCELLED;  ASSIGNED|RUNNING --refuse--> REFUSED
    QUEUED --envelope expired / pool key rotated / attempts exhausted--> FAILED

A planning run (the first stage of a spec with ``confirm_after``) that ends FINISHED with a plan
artifact stops UNCONFIRMED (its worker is free again); the operator confirms it (CONFIRMED, and
its applying run is queued in the same transaction) or discards it (DISCARDED); cancel discards
it too. A planning run that finishes without an artifact FAILS (``plan_missing``)::

    RUNNING --status FINISHED + plan--> UNCONFIRMED --confirm--> CONFIRMED (apply run QUEUED)
                                                    --discard / cancel--> DISCARDED

The transport acks every critical message on receipt, so an ``ack`` never means "go". A worker
starts a run only after the control plane answers its ``accept`` with ``start {run_id,
lease_id}``, sent at most once per run, ever (only the transition ASSIGNED -> RUNNING emits it,
and it happens once); a late ``accept`` (its lease expired or was replaced) is answered with
``cancel``. A RUNNING run that the worker's heartbeats stop listing for a grace period becomes
CRASHED (``worker_lost_run``). A last will only makes the worker suspect
(:func:`worker_suspected`): its RUNNING runs become CRASHED (``worker_lost``) only if it does
not come back within the same grace (:func:`worker_past_grace`), because a broker restart
publishes the wills of live workers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class RunState(StrEnum):
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    CRASHED = "CRASHED"
    REFUSED = "REFUSED"
    CANCELLED = "CANCELLED"
    UNCONFIRMED = "UNCONFIRMED"
    CONFIRMED = "CONFIRMED"
    DISCARDED = "DISCARDED"


TERMINAL_RUN_STATES: Final = frozenset(
    {
        RunState.FINISHED,
        RunState.FAILED,
        RunState.STOPPED,
        RunState.CRASHED,
        RunState.REFUSED,
        RunState.CANCELLED,
        RunState.CONFIRMED,
        RunState.DISCARDED,
    }
)
#: States in which a run counts against its worker's ``max_concurrent_runs``.
HELD_RUN_STATES: Final = frozenset({RunState.ASSIGNED, RunState.RUNNING})
#: Final states a worker may report in a ``status`` message.
#: REFUSED: a gate refused the run after ``start``, before anything executed.
REPORTABLE_FINAL_STATES: Final = frozenset(
    {RunState.FINISHED, RunState.FAILED, RunState.STOPPED, RunState.CRASHED, RunState.REFUSED}
)
#: Refusal reasons that mean "not now, not me": the run goes back to the queue. Besides busy
#: and draining, a launcher's local faults (it cannot run anything now: its audit log, disk,
#: state directory, Docker or clock is broken) send the run to another worker.
REQUEUE_REFUSAL_REASONS: Final = frozenset(
    {
        "worker_busy",
        "worker_draining",
        "audit_unavailable",
        "disk_full",
        "state_unwritable",
        "docker_unavailable",
        "clock_skewed",
    }
)
#: Re-queue reasons that do not consume one of the run's lease attempts: the worker was only
#: full (a race between its heartbeat and the lease), not unable to take the run.
FREE_REFUSAL_REASONS: Final = frozenset({"worker_busy"})


class WorkerState(StrEnum):
    IDLE = "IDLE"
    BUSY = "BUSY"
    DRAINED = "DRAINED"
    GONE = "GONE"


class RunTransitionError(ValueError):
    """A transition was applied to a record it does not fit: a programming error."""


@dataclass(frozen=True, kw_only=True)
class DispatchPolicy:
    """Timing limits of dispatch. All durations are in seconds."""

    lease_seconds: float = 30.0
    heartbeat_timeout_seconds: float = 90.0
    max_lease_attempts: int = 5
    #: How long a RUNNING run may be missing from its worker's heartbeats (with no final
    #: status) before it is CRASHED with ``worker_lost_run``; also how long a worker marked
    #: GONE by its last will has to come back before its RUNNING runs are CRASHED with
    #: ``worker_lost`` (a broker restart publishes the wills of workers that are still alive).
    lost_run_grace_seconds: float = 60.0

    def __post_init__(self) -> None:
        if (
            self.lease_seconds <= 0
            or self.heartbeat_timeout_seconds <= 0
            or self.lost_run_grace_seconds <= 0
        ):
            raise ValueError("lease, heartbeat timeout and lost-run grace must be positive")
        if self.max_lease_attempts < 1:
            raise ValueError("max_lease_attempts must be at least 1")


@dataclass(frozen=True, kw_only=True)
class Run:
    """One run as dispatch sees it (the sealed envelope itself stays in the store)."""

    id: str
    pool_id: str
    state: RunState
    key_id: str
    envelope_expires_at: float
    created_at: float
    updated_at: float
    worker_id: str | None = None
    lease_id: str | None = None
    lease_expires_at: float | None = None
    attempts: int = 0
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    cancel_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_RUN_STATES


@dataclass(frozen=True, kw_only=True)
class Worker:
    """One launcher process as dispatch sees it."""

    id: str
    pool_id: str
    state: WorkerState
    drained: bool
    max_concurrent_runs: int
    last_heartbeat_at: float
    #: When the worker was marked GONE (None while alive, or unknown).
    gone_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.state is not WorkerState.GONE

    def accepts_work(self) -> bool:
        """Alive, not drained by the operator and not draining itself."""
        return self.alive and not self.drained and self.state is not WorkerState.DRAINED


@dataclass(frozen=True)
class Notice:
    """A message the control plane must send to a worker because of a transition."""

    worker_id: str
    type: str
    run_id: str | None = None
    #: For ``start``: the lease whose accept won the run.
    lease_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Transition:
    """``before`` becomes ``after``; ``notices`` go out only if the store applied it."""

    before: Run
    after: Run
    event: str
    notices: tuple[Notice, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Rejection:
    """Nothing changes; ``reason`` says why; ``notices`` still go out (e.g. a fencing cancel)."""

    reason: str
    notices: tuple[Notice, ...] = field(default=())


def _moved(run: Run, now: float, **changes: object) -> Run:
    return dataclasses.replace(run, updated_at=now, **changes)  # type: ignore[arg-type]


def _back_to_queue(run: Run, now: float, *, reason: str) -> Run:
    return _moved(
        run,
        now,
        state=RunState.QUEUED,
        worker_id=None,
        lease_id=None,
        lease_expires_at=None,
        reason=reason,
    )


def _fail_queued(run: Run, now: float, *, reason: str, message: str) -> Transition:
    return Transition(
        before=run,
        after=_moved(
            run, now, state=RunState.FAILED, reason=reason, message=message, finished_at=now
        ),
        event="run.failed",
    )


#: ``heard_since`` when the control plane could always hear: only the worker's own time counts.
ALWAYS_HEARD: Final = float("-inf")


def worker_is_silent(
    worker: Worker, *, now: float, policy: DispatchPolicy, heard_since: float = ALWAYS_HEARD
) -> bool:
    """True when an alive worker has not been heard from within the heartbeat timeout.

    ``heard_since`` is when the control plane last (re)gained the ability to hear (its own
    start, its transport's reconnection): silence before it is not the worker's, so the timeout
    runs from the later of the two.
    """
    since = max(worker.last_heartbeat_at, heard_since)
    return worker.alive and now - since > policy.heartbeat_timeout_seconds


def plan_assignments(
    *,
    queued: Sequence[Run],
    workers: Iterable[Worker],
    held_counts: Mapping[str, int],
    pool_key_ids: Mapping[str, str],
    now: float,
    policy: DispatchPolicy,
    new_lease_id: Callable[[], str],
) -> list[Transition]:
    """Leases for queued runs (oldest first) on workers with free capacity, in their pool.

    Queued runs that can never be dispatched are failed instead: an expired envelope
    (``envelope_expired``), an envelope sealed to a pool key that has since been replaced
    (``pool_key_rotated``), or too many leases that lapsed unaccepted
    (``lease_attempts_exhausted``). Workers are filled least-loaded first.
    """
    free: dict[str, list[tuple[int, str]]] = {}
    for worker in workers:
        if not worker.accepts_work():
            continue
        capacity = worker.max_concurrent_runs - held_counts.get(worker.id, 0)
        if capacity > 0:
            free.setdefault(worker.pool_id, []).append((capacity, worker.id))
    transitions: list[Transition] = []
    for run in sorted(queued, key=lambda r: (r.created_at, r.id)):
        if run.state is not RunState.QUEUED:
            raise RunTransitionError(f"run {run.id} is {run.state}, not QUEUED")
        if run.envelope_expires_at <= now:
            transitions.append(
                _fail_queued(
                    run,
                    now,
                    reason="envelope_expired",
                    message="the sealed run state expired before a worker took the run",
                )
            )
            continue
        if pool_key_ids.get(run.pool_id) != run.key_id:
            transitions.append(
                _fail_queued(
                    run,
                    now,
                    reason="pool_key_rotated",
                    message="the run state was sealed to a pool key that has been replaced",
                )
            )
            continue
        if run.attempts >= policy.max_lease_attempts:
            transitions.append(
                _fail_queued(
                    run,
                    now,
                    reason="lease_attempts_exhausted",
                    message=f"no worker accepted the run in {run.attempts} leases",
                )
            )
            continue
        candidates = free.get(run.pool_id)
        if not candidates:
            continue
        candidates.sort(key=lambda c: (-c[0], c[1]))
        capacity, worker_id = candidates[0]
        if capacity == 1:
            candidates.pop(0)
        else:
            candidates[0] = (capacity - 1, worker_id)
        after = _moved(
            run,
            now,
            state=RunState.ASSIGNED,
            worker_id=worker_id,
            lease_id=new_lease_id(),
            lease_expires_at=min(now + policy.lease_seconds, run.envelope_expires_at),
            attempts=run.attempts + 1,
            reason="",
        )
        transitions.append(
            Transition(
                before=run,
                after=after,
                event="run.assigned",
                notices=(Notice(worker_id, "assign", run.id),),
            )
        )
    return transitions


def accept(run: Run, *, worker_id: str, lease_id: str, now: float) -> Transition | Rejection:
    """A worker accepts its lease. Only the current, unexpired lease of that worker counts.

    The answer is ``start {run_id, lease_id}`` when this accept wins the run (the only place a
    ``start`` is ever produced, on the one transition ASSIGNED -> RUNNING), ``cancel`` when it
    does not; the worker starts the run only on ``start``.
    """
    holder = run.worker_id == worker_id and run.lease_id == lease_id
    if run.state is RunState.RUNNING and holder:
        # A repeated accept of the winning lease: the start already went out (the transport
        # retransmits it until acked), so nothing is sent again: one start per run, ever.
        return Rejection(reason="duplicate")
    fence = (Notice(worker_id, "cancel", run.id),)
    if run.worker_id == worker_id and run.state in HELD_RUN_STATES and not holder:
        # An old lease of a run this worker holds again under a newer lease: a cancel would
        # name the run and void the new lease too, so the stale accept is only ignored.
        return Rejection(reason="lease_superseded")
    if run.state is not RunState.ASSIGNED or not holder:
        return Rejection(reason="lease_not_held", notices=fence)
    if run.lease_expires_at is None or now >= run.lease_expires_at:
        return Rejection(reason="lease_expired", notices=fence)
    return Transition(
        before=run,
        after=_moved(run, now, state=RunState.RUNNING, started_at=now, lease_expires_at=None),
        event="run.accepted",
        notices=(Notice(worker_id, "start", run.id, lease_id=lease_id),),
    )


def refuse(
    run: Run, *, worker_id: str, lease_id: str, reason: str, message: str, now: float
) -> Transition | Rejection:
    """A worker refuses a run it holds: back to the queue if it was only busy, else REFUSED."""
    if run.worker_id != worker_id or run.lease_id != lease_id or run.state not in HELD_RUN_STATES:
        return Rejection(reason="lease_not_held")
    if run.state is RunState.ASSIGNED and reason in REQUEUE_REFUSAL_REASONS:
        after = _back_to_queue(run, now, reason=reason)
        if reason in FREE_REFUSAL_REASONS:
            after = dataclasses.replace(after, attempts=max(0, run.attempts - 1))
        return Transition(before=run, after=after, event="run.requeued")
    return Transition(
        before=run,
        after=_moved(
            run, now, state=RunState.REFUSED, reason=reason, message=message, finished_at=now
        ),
        event="run.refused",
    )


def report_status(
    run: Run,
    *,
    worker_id: str,
    state: RunState,
    exit_code: int | None,
    reason: str,
    message: str,
    now: float,
    planning: bool = False,
    plan_sha256: str | None = None,
) -> Transition | Rejection:
    """A worker reports on a run. Only the holder of a RUNNING run can end it.

    ``planning``: the run is a planning stage; FINISHED with ``plan_sha256`` (the sealed
    artifact it uploaded) stops it UNCONFIRMED, FINISHED without one FAILS (``plan_missing``).
    """
    if state is not RunState.RUNNING and state not in REPORTABLE_FINAL_STATES:
        raise RunTransitionError(f"a worker cannot report {state}")
    if run.state is not RunState.RUNNING or run.worker_id != worker_id:
        if run.terminal or run.worker_id != worker_id:
            return Rejection(reason="not_holder")
        return Rejection(reason="not_running")
    if state is RunState.RUNNING:
        return Rejection(reason="no_change")
    if planning and state is RunState.FINISHED:
        if plan_sha256:
            return Transition(
                before=run,
                after=_moved(
                    run,
                    now,
                    state=RunState.UNCONFIRMED,
                    exit_code=exit_code,
                    reason="awaiting_confirmation",
                    message="planned; confirm to apply this plan, or discard it",
                ),
                event="run.unconfirmed",
            )
        return Transition(
            before=run,
            after=_moved(
                run,
                now,
                state=RunState.FAILED,
                exit_code=exit_code,
                reason="plan_missing",
                message="the planning phases wrote no plan artifact ($HL_PLAN_FILE)",
                finished_at=now,
            ),
            event="run.failed",
        )
    return Transition(
        before=run,
        after=_moved(
            run,
            now,
            state=state,
            exit_code=exit_code,
            reason=reason,
            message=message,
            finished_at=now,
        ),
        event=f"run.{state.lower()}",
    )


def expire_lease(run: Run, *, now: float) -> Transition | None:
    """An assignment that was not accepted in time goes back to the queue (or None)."""
    if run.state is not RunState.ASSIGNED or run.lease_expires_at is None:
        return None
    if now < run.lease_expires_at:
        return None
    notices = (Notice(run.worker_id, "cancel", run.id),) if run.worker_id else ()
    return Transition(
        before=run,
        after=_back_to_queue(run, now, reason="lease_expired"),
        event="run.lease_expired",
        notices=notices,
    )


def worker_past_grace(
    worker: Worker, *, now: float, policy: DispatchPolicy, heard_since: float = ALWAYS_HEARD
) -> bool:
    """True when a GONE worker has not come back within ``lost_run_grace_seconds``.

    Its RUNNING runs are then CRASHED (:func:`worker_lost`). Until then they wait: a last will
    alone is not proof of death (mosquitto publishes the wills of connected clients when it
    shuts down, ignoring the will delay), and a worker that registers or heartbeats again keeps
    its runs. Without a recorded ``gone_at`` the last heartbeat counts (earlier, never later).
    The grace runs from ``heard_since`` when that is later (:func:`worker_is_silent`): a will
    published as the broker went down is followed by an outage in which the worker could not
    come back, however alive it is.
    """
    if worker.alive:
        return False
    since = worker.gone_at if worker.gone_at is not None else worker.last_heartbeat_at
    return now - max(since, heard_since) >= policy.lost_run_grace_seconds


def worker_suspected(run: Run, *, now: float) -> Transition | None:
    """The run's worker sent its last will: an unaccepted run is re-queued (it never got
    ``start``), a started one is left RUNNING until the worker returns or the grace ends."""
    if run.state is RunState.ASSIGNED:
        return Transition(
            before=run, after=_back_to_queue(run, now, reason="worker_lost"), event="run.requeued"
        )
    return None


def worker_lost(run: Run, *, now: float) -> Transition | None:
    """The run's worker died: an unaccepted run is re-queued, a started one CRASHED."""
    if run.state is RunState.ASSIGNED:
        return Transition(
            before=run, after=_back_to_queue(run, now, reason="worker_lost"), event="run.requeued"
        )
    if run.state is RunState.RUNNING:
        return Transition(
            before=run,
            after=_moved(
                run,
                now,
                state=RunState.CRASHED,
                reason="worker_lost",
                message="the worker stopped responding while the run was in progress",
                finished_at=now,
            ),
            event="run.crashed",
        )
    return None


def run_lost(run: Run, *, worker_id: str, now: float) -> Transition | None:
    """A RUNNING run its (alive) worker no longer lists: CRASHED ``worker_lost_run``.

    The worker is told ``cancel`` in case it still holds the run in some form (e.g. it accepted
    but never got ``start``). Never re-queued: runs are not idempotent.
    """
    if run.state is not RunState.RUNNING or run.worker_id != worker_id:
        return None
    return Transition(
        before=run,
        after=_moved(
            run,
            now,
            state=RunState.CRASHED,
            reason="worker_lost_run",
            message="the worker stopped listing the run in its heartbeats without a final status",
            finished_at=now,
        ),
        event="run.crashed",
        notices=(Notice(worker_id, "cancel", run.id),),
    )


def confirm(run: Run, *, now: float) -> Transition | Rejection:
    """The operator confirms an UNCONFIRMED planning run: CONFIRMED (the store queues its
    applying run in the same transaction)."""
    if run.state is not RunState.UNCONFIRMED:
        return Rejection(reason="not_unconfirmed")
    return Transition(
        before=run,
        after=_moved(run, now, state=RunState.CONFIRMED, reason="confirmed", finished_at=now),
        event="run.confirmed",
    )


def discard(run: Run, *, now: float, reason: str = "discarded") -> Transition | Rejection:
    """The operator discards an UNCONFIRMED planning run: DISCARDED, nothing is applied."""
    if run.state is not RunState.UNCONFIRMED:
        return Rejection(reason="not_unconfirmed")
    return Transition(
        before=run,
        after=_moved(run, now, state=RunState.DISCARDED, reason=reason, finished_at=now),
        event="run.discarded",
    )


def phase_index(
    phases: Sequence[str], *, run: Run, worker_id: str, phase: str, last: int | None
) -> int | Rejection:
    """Where a reported phase goes: its index in the run's (signed) phase list, when the run is
    RUNNING on ``worker_id`` and the phase comes after ``last`` (the index recorded last);
    otherwise why it is ignored (a duplicate, a late one after a later phase, an unknown name,
    or a run no longer running there)."""
    if run.state is not RunState.RUNNING or run.worker_id != worker_id:
        return Rejection(reason="not_running")
    if phase not in phases:
        return Rejection(reason="unknown_phase")
    index = list(phases).index(phase)
    if last is not None and index <= last:
        return Rejection(reason="duplicate" if index == last else "out_of_order")
    return index


def cancel(run: Run, *, now: float) -> Transition | Rejection:
    """Cancel a run: at once when not started; a running one is asked to stop (STOPPED later)."""
    if run.terminal:
        return Rejection(reason="already_final")
    if run.state is RunState.UNCONFIRMED:
        return discard(run, now=now, reason="cancelled")
    if run.state is RunState.QUEUED:
        return Transition(
            before=run,
            after=_moved(run, now, state=RunState.CANCELLED, reason="cancelled", finished_at=now),
            event="run.cancelled",
        )
    worker = run.worker_id
    if worker is None:  # pragma: no cover - ASSIGNED and RUNNING always have a worker
        raise RunTransitionError(f"run {run.id} is {run.state} without a worker")
    if run.state is RunState.ASSIGNED:
        return Transition(
            before=run,
            after=_moved(
                run,
                now,
                state=RunState.CANCELLED,
                reason="cancelled",
                finished_at=now,
                lease_expires_at=None,
            ),
            event="run.cancelled",
            notices=(Notice(worker, "cancel", run.id),),
        )
    if run.cancel_requested:
        return Rejection(reason="cancel_pending", notices=(Notice(worker, "cancel", run.id),))
    return Transition(
        before=run,
        after=_moved(run, now, cancel_requested=True),
        event="run.cancel_requested",
        notices=(Notice(worker, "cancel", run.id),),
    )
