"""``controlplane serve``: the loop that ties the store, dispatch and the transport together.

:class:`Coordinator` is the core, with no clock of its own: ``handle`` takes one message the
transport delivered (parsed, deduplicated, already acked if critical), ``tick`` expires leases,
notices silent workers and plans assignments, and ``flush`` sends whatever the store's outbox
holds through the :class:`~hardened_launcher.transport.base.Transport`. Every handler is
idempotent: a redelivered message finds the run already moved and changes nothing.

Outgoing messages are built when they are sent, from the current state: an ``assign`` whose
lease has since lapsed is dropped, a ``start`` for a run that is no longer RUNNING on that
worker under that lease is dropped, and log URLs are presigned fresh.

The transport acks every critical message on receipt, so an ``ack`` never means "go": the
control plane answers an ``accept`` with ``start {run_id, lease_id}`` when it wins the lease (at
most once per run, ever) or ``cancel {run_id}`` when it is stale (docs/transport.md).
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hardened_launcher.controlplane import dispatch
from hardened_launcher.controlplane.dispatch import (
    DispatchPolicy,
    Notice,
    Rejection,
    RunState,
    Transition,
    Worker,
    WorkerState,
)
from hardened_launcher.controlplane.doorbell import Doorbell
from hardened_launcher.controlplane.store import OutboxMessage, Store
from hardened_launcher.controlplane.witness import WitnessExporter, witness_record
from hardened_launcher.envelope.ticket import PlanBinding, RunManifest, RunTicket, sign_ticket
from hardened_launcher.errors import LauncherError
from hardened_launcher.identity.token import DEFAULT_MQTT_NAMESPACE
from hardened_launcher.transport import messages as wire
from hardened_launcher.transport.base import Transport
from hardened_launcher.transport.inbox import Wakeable
from hardened_launcher.transport.session import Received
from hardened_launcher.transport.topics import WorkerAddress

log = logging.getLogger(__name__)

#: Highest chunk number a run may ask URLs for (a bound on what one run can write).
DEFAULT_MAX_LOG_CHUNKS: Final = 100_000
#: Messages handled per loop iteration at most before ticking and flushing again.
MAX_RECEIVE_BATCH: Final = 1000


class LogUrlSource(Protocol):
    def urls(
        self, run_id: str, *, from_chunk: int, count: int | None = None
    ) -> list[wire.LogUrl]: ...


class PlanUrlSource(Protocol):
    """Presigned URLs of planning runs' sealed plans (:class:`~.logs.LogStorage`)."""

    def plan_url(self, run_id: str, *, method: Literal["PUT", "GET"]) -> str: ...


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    namespace: str = DEFAULT_MQTT_NAMESPACE
    policy: DispatchPolicy = field(default_factory=DispatchPolicy)
    max_log_chunks: int = DEFAULT_MAX_LOG_CHUNKS
    tick_seconds: float = 1.0
    #: Event-driven dispatch: queued runs are assigned right after a message that can free a
    #: slot or add capacity (register, IDLE heartbeat, refuse, status, bye, gone), and a run
    #: another process just submitted is assigned when it rings serve's doorbell
    #: (:mod:`.doorbell`), or at the latest after ``wake_seconds`` (the fallback look at the
    #: store). False is the old behaviour (assign only on the tick), the benchmark's baseline.
    event_driven: bool = True
    wake_seconds: float = 0.05


def new_lease_id() -> str:
    """A fresh lease id (fits the protocol's run-id shape)."""
    return "lease-" + secrets.token_hex(16)


_WORKER_STATES: Final = {
    "IDLE": WorkerState.IDLE,
    "BUSY": WorkerState.BUSY,
    "DRAINED": WorkerState.DRAINED,
}


#: Messages after which a queued run may be assignable: a worker (re)appears or reports its
#: state, a slot frees (final status, refusal), or a worker's unaccepted runs are re-queued.
_FREES_OR_ADDS_CAPACITY: Final = (
    wire.Register,
    wire.Heartbeat,
    wire.Refuse,
    wire.Status,
    wire.Bye,
    wire.Gone,
)


class Coordinator:
    """Store + dispatch behind a transport. Single-threaded; ``clock`` is Unix seconds."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        config: ServeConfig | None = None,
        log_urls: LogUrlSource | None = None,
        clock: Callable[[], float] = time.time,
        lease_ids: Callable[[], str] = new_lease_id,
        signing_key: Ed25519PrivateKey | None = None,
        plan_urls: PlanUrlSource | None = None,
        witness_exporter: WitnessExporter | None = None,
    ) -> None:
        """``signing_key`` signs each assignment's run ticket (docs/envelope.md); without it
        assignments carry no ticket, and every launcher refuses them. ``plan_urls`` (object
        storage) carries confirmed runs' plans; without it a planning run FAILS
        (``plan_storage_unavailable``). ``witness_exporter`` copies audit witness records to
        object storage (docs/audit.md)."""
        self.store = store
        self.plan_urls = plan_urls
        self.signing_key = signing_key
        self.transport = transport
        self.config = config or ServeConfig()
        self.log_urls = log_urls
        self.clock = clock
        self.lease_ids = lease_ids
        #: run id -> when a heartbeat of its worker first failed to list it (RUNNING runs)
        self._missing_since: dict[str, float] = {}
        #: When this control plane last (re)gained the ability to hear workers: its start, its
        #: transport's reconnection, or the last moment it saw the transport disconnected.
        #: Silence before it is not held against a worker (docs/controlplane.md).
        self._heard_since = clock()
        self._reconnects_seen: int | None = None
        self._deaf = False
        #: A handled message may have freed a slot or added capacity: assign before waiting.
        self._dispatch_due = False
        self._refused_by: set[str] = set()
        self.witness_exporter = witness_exporter
        self._witness_export_due = 0.0

    # -- hearing ---------------------------------------------------------------------------

    @property
    def heard_since(self) -> float:
        """When the control plane last (re)gained the ability to hear (Unix seconds)."""
        return self._heard_since

    def _observe_transport(self, now: float) -> bool:
        """Look at the transport: while it is disconnected, and when it has reconnected since
        the last look (``stats().reconnects`` moved), ``heard_since`` becomes ``now``.
        Returns whether the control plane can hear now."""
        connected = self.transport.connected
        reconnects = self.transport.stats().reconnects
        changed = self._reconnects_seen is not None and reconnects != self._reconnects_seen
        self._reconnects_seen = reconnects
        if not connected or changed:
            self._heard_since = max(self._heard_since, now)
        if connected and (self._deaf or changed):
            log.warning("controlplane.hearing_restored", extra={"heard_since": now})
        elif not connected and not self._deaf:
            log.warning("controlplane.transport_disconnected")
        self._deaf = not connected
        return connected

    # -- inbound -------------------------------------------------------------------------

    def handle(self, received: Received) -> None:
        """Handle one message from ``<ns>/writeonly/<pool>/<worker>``.

        ``received.peer`` is the sender's identity (the broker's ACL lets a pool certificate
        write only its own pool's topics; the session already dropped a ``register`` or ``gone``
        whose ids differ from the topic).
        """
        peer = received.peer
        self.handle_message(
            pool_id=peer.pool_id, worker_id=peer.worker_id, message=received.message
        )

    def handle_message(self, *, pool_id: str, worker_id: str, message: wire.Message) -> None:
        now = self.clock()
        self._observe_transport(now)
        body = message.body
        if isinstance(body, _FREES_OR_ADDS_CAPACITY) and not (
            isinstance(body, wire.Heartbeat) and body.state != "IDLE"
        ):
            self._dispatch_due = True
            if isinstance(body, wire.Refuse):
                # Not straight back to the worker that refused (a busy one would bounce the
                # run at message speed): the others now, everyone again on the next tick.
                self._refused_by.add(worker_id)
        if isinstance(body, wire.Register):
            self._on_register(pool_id, worker_id, body, now)
            return
        if isinstance(body, wire.Ack):
            return  # acknowledgements of our messages are the transport's business
        worker = self._known_worker(pool_id, worker_id)
        if worker is None:
            log.info("message.unknown_worker", extra={"worker_id": worker_id})
            return
        if isinstance(body, wire.Heartbeat):
            self._on_heartbeat(worker, body, now)
        elif isinstance(body, wire.Accept):
            run = self.store.find_run(body.run_id)
            if run is None or run.pool_id != pool_id:
                self.store.enqueue([Notice(worker_id, "cancel", body.run_id)], now=now)
                return
            self._apply(
                dispatch.accept(run, worker_id=worker_id, lease_id=body.lease_id, now=now),
                now,
            )
        elif isinstance(body, wire.Refuse):
            run = self.store.find_run(body.run_id)
            if run is not None and run.pool_id == pool_id:
                self._apply(
                    dispatch.refuse(
                        run,
                        worker_id=worker_id,
                        lease_id=body.lease_id,
                        reason=body.reason,
                        message=body.message,
                        now=now,
                    ),
                    now,
                )
        elif isinstance(body, wire.Status):
            run = self.store.find_run(body.run_id)
            if run is not None and run.pool_id == pool_id:
                self._on_status(run, worker_id, body, now)
        elif isinstance(body, wire.PhaseStarted):
            run = self.store.find_run(body.run_id)
            if run is not None and run.pool_id == pool_id:
                self._on_phase(run, worker_id, body, now)
        elif isinstance(body, wire.LogUrlsRequest):
            self._on_log_urls_request(worker, body, now)
        elif isinstance(body, wire.Witness):
            self._on_witness(worker, body, now)
        elif isinstance(body, wire.Bye):
            self._worker_lost(worker, now, reason=f"bye_{body.reason}")
        elif isinstance(body, wire.Gone) and body.worker_id == worker_id:
            self._worker_gone(worker, now)

    def _known_worker(self, pool_id: str, worker_id: str) -> Worker | None:
        record = self.store.find_worker(worker_id)
        if record is None or record.worker.pool_id != pool_id:
            return None
        return record.worker

    def _on_register(self, pool_id: str, worker_id: str, body: wire.Register, now: float) -> None:
        if body.pool_id != pool_id or body.worker_id != worker_id:
            log.warning("register.identity_mismatch", extra={"worker_id": worker_id})
            return
        if not any(p.id == pool_id for p in self.store.list_pools()):
            log.warning("register.unknown_pool", extra={"pool_id": pool_id})
            return
        registered = self.store.register_worker(
            worker_id=worker_id,
            pool_id=pool_id,
            metadata=body.metadata,
            version=body.version,
            max_concurrent_runs=body.max_concurrent_runs,
            now=now,
        )
        if registered:
            record = self.store.get_worker(worker_id)
            if record.worker.drained:
                # The operator's drain outlives a launcher restart.
                self.store.enqueue([Notice(worker_id, "drain")], now=now)

    def _on_heartbeat(self, worker: Worker, body: wire.Heartbeat, now: float) -> None:
        self.store.record_heartbeat(worker.id, state=_WORKER_STATES[body.state], now=now)
        listed = set(body.running)
        # A run the worker says it runs but does not hold (it was marked crashed while the
        # worker was unreachable, or cancelled) is cancelled: never two copies of a run.
        stray = []
        for run_id in body.running:
            run = self.store.find_run(run_id)
            if (
                run is None
                or run.worker_id != worker.id
                or run.state not in dispatch.HELD_RUN_STATES
            ):
                stray.append(Notice(worker.id, "cancel", run_id))
        self.store.enqueue(stray, now=now)
        # The other way round: a RUNNING run the worker no longer lists, with no final status
        # within the grace period, was lost by the worker (it restarted, or never got `start`).
        grace = self.config.policy.lost_run_grace_seconds
        running = frozenset({RunState.RUNNING})
        for run in self.store.list_runs(worker_id=worker.id, states=running):
            if run.id in listed:
                self._missing_since.pop(run.id, None)
                continue
            since = max(self._missing_since.setdefault(run.id, now), self._heard_since)
            if now - since >= grace:
                self._missing_since.pop(run.id, None)
                transition = dispatch.run_lost(run, worker_id=worker.id, now=now)
                if transition is not None and self.store.apply(transition):
                    log.warning("run.lost", extra={"run_id": run.id, "worker_id": worker.id})

    def _on_status(self, run: dispatch.Run, worker_id: str, body: wire.Status, now: float) -> None:
        """A run's status; a final one brings its outputs (and a planning run's plan digest)."""
        plan = self.store.plan_of(run.id)
        holder = run.state is RunState.RUNNING and run.worker_id == worker_id
        if holder and plan is not None and body.plan_sha256 and body.state == "FINISHED":
            self.store.set_plan_artifact(run.id, body.plan_sha256)
        applied = self._apply(
            dispatch.report_status(
                run,
                worker_id=worker_id,
                state=RunState(body.state),
                exit_code=body.exit_code,
                reason=body.reason or "",
                message=body.message or "",
                now=now,
                planning=plan is not None,
                plan_sha256=body.plan_sha256,
            ),
            now,
        )
        if applied and (body.outputs or body.outputs_truncated):
            self.store.record_outputs(run.id, body.outputs, truncated=body.outputs_truncated)

    def _on_phase(
        self, run: dispatch.Run, worker_id: str, body: wire.PhaseStarted, now: float
    ) -> None:
        """Record a phase the run's signed manifest names, after the last one recorded; a
        duplicate (a retransmission), a late one or an unknown name changes nothing."""
        try:
            phases = [str(p["name"]) for p in json.loads(self.store.get_manifest(run.id))["phases"]]
        except (ValueError, KeyError, TypeError):
            phases = []
        outcome = dispatch.phase_index(
            phases,
            run=run,
            worker_id=worker_id,
            phase=body.phase,
            last=self.store.last_phase_index(run.id),
        )
        if isinstance(outcome, Rejection):
            log.info("phase.ignored", extra={"run_id": run.id, "reason": outcome.reason})
            return
        self.store.record_phase(
            run, index=outcome, name=body.phase, started_at=body.started_at.timestamp(), now=now
        )

    def _on_log_urls_request(self, worker: Worker, body: wire.LogUrlsRequest, now: float) -> None:
        run = self.store.find_run(body.run_id)
        if run is None or run.worker_id != worker.id or run.state is not RunState.RUNNING:
            return
        if body.from_chunk >= self.config.max_log_chunks:
            log.warning("log_urls.limit", extra={"run_id": run.id})
            return
        self.store.enqueue_message(
            worker.id,
            "log_urls",
            {"run_id": run.id, "from_chunk": body.from_chunk},
            now=now,
        )

    def _on_witness(self, worker: Worker, body: wire.Witness, now: float) -> None:
        """Keep an audit witness bound to the sender (docs/audit.md, "Outside witness")."""
        if body.pool_id != worker.pool_id or body.worker_id != worker.id:
            # A witness names the pool and worker it came from; another one's is refused.
            log.warning("witness.refused", extra={"worker_id": worker.id, "reason": "binding"})
            self.store.record_event(
                "audit.witness_refused",
                now=now,
                pool_id=worker.pool_id,
                worker_id=worker.id,
                fields={"reason": "witness_binding_mismatch"},
            )
            return
        record = witness_record(body).to_json().decode("ascii")
        outcome = self.store.record_witness(
            key_id=body.key_id,
            seq=body.seq,
            pool_id=body.pool_id,
            worker_id=body.worker_id,
            record=record,
            now=now,
        )
        if outcome == "conflict":
            log.warning("witness.conflict", extra={"worker_id": worker.id, "seq": body.seq})
        elif outcome == "new" and self.witness_exporter is not None:
            self.witness_exporter.submit(body.key_id, body.seq, record.encode("ascii"))

    def _export_witnesses(self, now: float) -> None:
        """Mark what object storage took; hand over what is still waiting (every 10 s)."""
        exporter = self.witness_exporter
        if exporter is None:
            return
        for key_id, seq in exporter.take_done():
            self.store.mark_witness_exported(key_id, seq, now=now)
        if now < self._witness_export_due:
            return
        self._witness_export_due = now + 10.0
        for key_id, seq, record in self.store.unexported_witnesses(limit=1000):
            if not exporter.submit(key_id, seq, record.encode("ascii")):
                break

    def _worker_gone(self, worker: Worker, now: float) -> None:
        """The worker's last will: suspect, not proof of death.

        mosquitto publishes the wills of every connected client when it shuts down (ignoring
        the will delay), so a broker restart delivers ``gone`` for workers that are alive and
        about to reconnect. The worker is marked GONE (no new leases) and its unaccepted runs
        go back to the queue (lease fencing answers a late accept with ``cancel``), but its
        RUNNING runs wait: if the worker registers or heartbeats again within
        ``lost_run_grace_seconds`` they go on (heartbeat reconciliation and its final status
        take over); otherwise :meth:`tick` CRASHES them (``worker_lost``) and discards what
        is pending for it. Nothing pending is discarded now: a live worker still needs its
        ``start``, ``cancel`` or ``log_urls``, and a later process reusing the id ignores a
        ``start`` it did not accept.
        """
        current = self.store.find_worker(worker.id)
        if current is None:
            return
        if current.worker.alive:
            self.store.mark_worker_gone(current.worker, now=now, reason="last_will")
        for run in self.store.list_runs(worker_id=worker.id, states=dispatch.HELD_RUN_STATES):
            transition = dispatch.worker_suspected(run, now=now)
            if transition is not None:
                self.store.apply(transition)
            elif run.state is RunState.RUNNING:
                self.store.record_event(
                    "run.awaiting_worker",
                    now=now,
                    pool_id=run.pool_id,
                    worker_id=worker.id,
                    run_id=run.id,
                    fields={"grace_seconds": self.config.policy.lost_run_grace_seconds},
                )

    def _worker_lost(self, worker: Worker, now: float, *, reason: str) -> None:
        current = self.store.find_worker(worker.id)
        if current is None:
            return
        if current.worker.alive:
            self.store.mark_worker_gone(current.worker, now=now, reason=reason)
        # Stop retransmitting to the dead process (an `assign` or `start` must not reach a
        # later process that reuses the worker id).
        self._discard_pending(worker)
        for run in self.store.list_runs(worker_id=worker.id, states=dispatch.HELD_RUN_STATES):
            transition = dispatch.worker_lost(run, now=now)
            if transition is not None:
                self.store.apply(transition)

    def _discard_pending(self, worker: Worker) -> None:
        dropped = self.transport.discard_pending(
            WorkerAddress(pool_id=worker.pool_id, worker_id=worker.id)
        )
        if dropped:
            log.info("worker.pending_discarded", extra={"worker_id": worker.id, "count": dropped})

    def _apply(self, outcome: Transition | Rejection, now: float) -> bool:
        if isinstance(outcome, Rejection):
            self.store.enqueue(list(outcome.notices), now=now)
            return False
        return self.store.apply(outcome)

    # -- time ----------------------------------------------------------------------------

    def tick(self) -> None:
        """Notice silent workers, expire leases, and assign queued runs."""
        now = self.clock()
        policy = self.config.policy
        held = self.store.held_counts()
        # While the transport is down nobody can be heard: no worker is judged (and when it is
        # back, the timeouts run from then: ``heard_since``).
        hearing = self._observe_transport(now)
        heard = self._heard_since
        for record in self.store.list_workers() if hearing else []:
            worker = record.worker
            if dispatch.worker_is_silent(
                worker, now=now, policy=policy, heard_since=heard
            ) and self.store.mark_worker_gone(worker, now=now, reason="heartbeat_timeout"):
                self._worker_lost(worker, now, reason="heartbeat_timeout")
            elif dispatch.worker_past_grace(worker, now=now, policy=policy, heard_since=heard):
                # GONE (last will) and not back within the grace: now it is lost.
                if held.get(worker.id):
                    self._worker_lost(worker, now, reason="last_will")
                else:
                    self._discard_pending(worker)
        for run in self.store.list_runs(states=frozenset({RunState.ASSIGNED})):
            transition = dispatch.expire_lease(run, now=now)
            if transition is not None:
                self.store.apply(transition)
        self._export_witnesses(now)
        self.assign_queued()

    def assign_queued(self, *, skip_workers: frozenset[str] = frozenset()) -> int:
        """Lease queued runs to workers with free slots now (none to ``skip_workers``);
        returns how many transitions (assignments, and queued runs failed as undispatchable)
        were applied."""
        self._dispatch_due = False
        queued = self.store.list_runs(states=frozenset({RunState.QUEUED}))
        if not queued:
            return 0
        now = self.clock()
        plan = dispatch.plan_assignments(
            queued=queued,
            workers=[
                r.worker for r in self.store.list_workers() if r.worker.id not in skip_workers
            ],
            held_counts=self.store.held_counts(),
            pool_key_ids={p.id: p.key_id for p in self.store.list_pools()},
            now=now,
            policy=self.config.policy,
            new_lease_id=self.lease_ids,
        )
        return sum(1 for transition in plan if self.store.apply(transition))

    # -- outbound ------------------------------------------------------------------------

    def _ticket(
        self,
        run_id: str,
        pool_id: str,
        worker_id: str,
        lease_id: str,
        envelope: bytes,
        plan: PlanBinding | None = None,
    ) -> RunTicket | None:
        """The signed ticket of one lease, or None (no key, or a run queued without one)."""
        manifest = self.store.get_manifest(run_id)
        if self.signing_key is None or not manifest:
            return None
        try:
            document = json.loads(manifest)
            return sign_ticket(
                RunManifest(document=document),
                pool_id=pool_id,
                worker_id=worker_id,
                lease_id=lease_id,
                envelope=envelope,
                signing_key=self.signing_key,
                plan=plan,
            )
        except (ValueError, LauncherError):
            log.warning("controlplane.ticket_unavailable run_id=%s", run_id)
            return None

    def _plan_for(self, run_id: str) -> tuple[str | None, PlanBinding | None]:
        """A planning run's PUT URL for its plan; an applying run's GET URL for the plan it
        applies and the binding its ticket signs (digest, planning run, commit)."""
        if self.plan_urls is None:
            return None, None
        if self.store.plan_of(run_id) is not None:
            return self.plan_urls.plan_url(run_id, method="PUT"), None
        plan = self.store.plan_applied_by(run_id)
        if plan is None or plan.artifact_sha256 is None:
            return None, None
        binding = PlanBinding(
            run_id=plan.run_id, sha256=plan.artifact_sha256, commit_sha=plan.commit_sha
        )
        return self.plan_urls.plan_url(plan.run_id, method="GET"), binding

    def _body(self, item: OutboxMessage) -> wire.Body | None:
        """The body to send for an outbox row now, or None when it no longer applies."""
        kind = item.type
        if kind == "assign":
            if item.run_id is None:
                return None
            run = self.store.find_run(item.run_id)
            if (
                run is None
                or run.state is not RunState.ASSIGNED
                or run.worker_id != item.worker_id
                or run.lease_id is None
                or run.lease_expires_at is None
                or run.lease_expires_at <= self.clock()
            ):
                return None
            urls = self.log_urls.urls(run.id, from_chunk=0) if self.log_urls else []
            if urls:
                self.store.reserve_log_chunks(run.id, up_to=urls[-1].chunk + 1)
            envelope = self.store.get_envelope(run.id)
            plan_url, binding = self._plan_for(run.id)
            ticket = self._ticket(
                run.id, run.pool_id, item.worker_id, run.lease_id, envelope, binding
            )
            return wire.Assign.with_envelope(
                plan_url=plan_url,
                run_id=run.id,
                lease_id=run.lease_id,
                lease_expires_at=datetime.fromtimestamp(run.lease_expires_at, UTC),
                envelope=envelope,
                ticket=b"" if ticket is None else ticket.encoded,
                ticket_signature=b"" if ticket is None else ticket.signature,
                log_urls=urls,
            )
        if kind == "start":
            lease_id = item.body.get("lease_id")
            if item.run_id is None or not isinstance(lease_id, str):
                return None
            run = self.store.find_run(item.run_id)
            if (
                run is None
                or run.state is not RunState.RUNNING
                or run.worker_id != item.worker_id
                or run.lease_id != lease_id
            ):
                return None  # crashed or lost meanwhile: the worker must not start it now
            return wire.Start(run_id=run.id, lease_id=lease_id)
        if kind == "log_urls":
            if self.log_urls is None or item.run_id is None:
                return None
            from_chunk = int(item.body.get("from_chunk", 0))
            remaining = self.config.max_log_chunks - from_chunk
            urls = self.log_urls.urls(item.run_id, from_chunk=from_chunk)[: max(remaining, 0)]
            if not urls:
                return None
            self.store.reserve_log_chunks(item.run_id, up_to=urls[-1].chunk + 1)
            return wire.LogUrls(run_id=item.run_id, urls=tuple(urls))
        if kind == "cancel" and item.run_id is not None:
            return wire.Cancel(run_id=item.run_id)
        simple: dict[str, type[wire.Body]] = {
            "drain": wire.Drain,
            "undrain": wire.Undrain,
            "cycle": wire.Cycle,
        }
        if kind in simple:
            return simple[kind]()
        return None

    def flush(self, *, limit: int = 100) -> int:
        """Hand pending outbox messages to the transport in order; returns how many were sent.

        Stops at the first failure (e.g. ``OutboxFullError``): the rest stays queued, in order.
        The transport retransmits critical messages until the worker acks them.
        """
        sent = 0
        for item in self.store.pending_messages(limit=limit):
            now = self.clock()
            body = self._body(item) if item.pool_id is not None else None
            if body is None or item.pool_id is None:
                self.store.mark_sent(item.id, now=now)
                continue
            peer = WorkerAddress(pool_id=item.pool_id, worker_id=item.worker_id)
            try:
                self.transport.send(body, peer=peer)
            except LauncherError as exc:
                log.warning("message.send_failed", extra={"reason": exc.reason})
                break
            self.store.mark_sent(item.id, now=now)
            sent += 1
        return sent

    # -- the loop --------------------------------------------------------------------------

    def receive_all(self, *, timeout_seconds: float) -> int:
        """Handle what the transport delivered (waiting at most ``timeout_seconds`` for the
        first message, then taking what is already there); returns how many were handled."""
        handled = 0
        received = self.transport.receive(timeout_seconds=timeout_seconds)
        while received is not None:
            try:
                self.handle(received)
            except LauncherError as exc:  # one bad message must not stop the control plane
                log.warning("message.handle_failed", extra={"reason": exc.reason})
            handled += 1
            if handled >= MAX_RECEIVE_BATCH:
                break
            received = self.transport.receive(timeout_seconds=0)
        if self._dispatch_due and self.config.event_driven:
            self.assign_queued(skip_workers=frozenset(self._refused_by))
        self._refused_by.clear()
        return handled

    def step(self, *, timeout_seconds: float = 0.0) -> None:
        """One loop iteration: receive, tick, flush (tests call this directly)."""
        self.receive_all(timeout_seconds=timeout_seconds)
        self.tick()
        self.flush(limit=10_000)


def serve(
    coordinator: Coordinator,
    *,
    stop: threading.Event,
    max_iterations: int | None = None,
    doorbell_dir: Path | None = None,
) -> None:
    """Receive, tick and flush until ``stop`` is set (or ``max_iterations`` loops ran).

    Event-driven (``ServeConfig.event_driven``): a message that frees a slot is followed by
    assignments at once (:meth:`Coordinator.receive_all`), and when another process commits
    to the store (``run submit``: :meth:`Store.change_counter`) the loop assigns at once: it
    rings the doorbell in ``doorbell_dir`` (the state directory), which ends the transport's
    wait; without a doorbell the loop looks every ``wake_seconds``. The tick (expiry,
    silence) stays once a second.
    """
    config = coordinator.config
    transport = coordinator.transport
    doorbell = (
        Doorbell.open(doorbell_dir, transport.wake)
        if doorbell_dir is not None and config.event_driven and isinstance(transport, Wakeable)
        else None
    )
    try:
        _loop(coordinator, stop=stop, max_iterations=max_iterations)
    finally:
        if doorbell is not None:
            doorbell.close()
    log.info("serve.stopped")


def _loop(coordinator: Coordinator, *, stop: threading.Event, max_iterations: int | None) -> None:
    config = coordinator.config
    tick_seconds = config.tick_seconds
    wait = min(tick_seconds, config.wake_seconds if config.event_driven else 0.2)
    next_tick = 0.0
    iterations = 0
    seen = coordinator.store.change_counter() if config.event_driven else 0
    while not stop.is_set():
        if coordinator.receive_all(timeout_seconds=wait):
            # What the messages just handled call for (a ``start`` answering an ``accept``,
            # an assignment to a freed slot) goes out before the tick's and the store's work.
            coordinator.flush()
        if time.monotonic() >= next_tick:
            coordinator.tick()
            next_tick = time.monotonic() + tick_seconds
        elif config.event_driven:
            counter = coordinator.store.change_counter()
            if counter != seen:
                seen = counter
                coordinator.assign_queued()
        coordinator.flush()
        iterations += 1
        if max_iterations is not None and iterations >= max_iterations:
            break


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT (main thread only)."""

    def _handler(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
